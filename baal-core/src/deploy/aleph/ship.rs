//! Shipping the agent to a VM: the files Baal writes there and the steps of `vm-setup.sh`.

use std::path::Path;
use std::time::Duration;

use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use super::error::AlephError;
use super::ssh::{Session, shell_quote};
use crate::agent_env::{AgentDefaults, AgentEnv};
use crate::deploy::AgentSpec;

/// The agent's data directory on the VM (database and workspace), relative to the layout's root.
const DATA_DIR: &str = "var/lib/baal-agent";

/// The VM-side script; see its header for what only a real VM exercises.
pub(crate) const VM_SETUP_SCRIPT: &str = include_str!("vm-setup.sh");

/// Where things live on the VM, and how the script is run. The defaults are a real VM's.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VmLayout {
    /// Prefix of every path the script touches (empty on a VM; a temporary directory in tests).
    pub root: String,
    /// The unprivileged user the agent runs as.
    pub agent_user: String,
    /// The loopback port the agent listens on (Caddy proxies to it).
    pub agent_port: u16,
    /// Directories put first on the script's `PATH` (tests put stand-ins for `systemctl` there).
    pub path_prefix: Option<String>,
    /// Seconds the script waits for the agent's health check.
    pub health_seconds: u32,
}

impl Default for VmLayout {
    fn default() -> Self {
        VmLayout {
            root: String::new(),
            agent_user: "baal-agent".into(),
            agent_port: 8080,
            path_prefix: None,
            health_seconds: 60,
        }
    }
}

impl VmLayout {
    fn path(&self, relative: &str) -> String {
        format!("{}/{relative}", self.root)
    }

    fn script_command(&self, args: &str) -> String {
        let mut command = format!(
            "BAAL_ROOT={} BAAL_AGENT_USER={} BAAL_AGENT_PORT={} BAAL_HEALTH_SECONDS={} ",
            shell_quote(&self.root),
            shell_quote(&self.agent_user),
            self.agent_port,
            self.health_seconds
        );
        if let Some(prefix) = &self.path_prefix {
            command.push_str(&format!("PATH={}:\"$PATH\" ", shell_quote(prefix)));
        }
        command.push_str(&format!("sh {} {args}", shell_quote(&self.path("opt/baal/vm-setup.sh"))));
        command
    }
}

/// The agent's environment on a VM, written to `/etc/baal/agent.env` (root-only) for systemd.
pub(crate) fn agent_env(spec: &AgentSpec, defaults: &AgentDefaults, layout: &VmLayout) -> AgentEnv {
    AgentEnv::new(spec, defaults, layout.agent_port, Path::new(&layout.path(DATA_DIR)))
}

/// The systemd unit: the agent as an unprivileged user, only its data directory writable.
pub(crate) fn systemd_unit(layout: &VmLayout) -> String {
    let data = layout.path(DATA_DIR);
    format!(
        "[Unit]
Description=Baal agent
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User={user}
Group={user}
EnvironmentFile={env}
WorkingDirectory={data}
ExecStart={bin}
Restart=always
RestartSec=3
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={data}
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes
UMask=0077

[Install]
WantedBy=multi-user.target
",
        user = layout.agent_user,
        env = layout.path("etc/baal/agent.env"),
        bin = layout.path("opt/baal/baal-agent"),
    )
}

/// The Caddyfile: TLS for the agent's public name, proxied to the agent on loopback.
pub(crate) fn caddyfile(host: &str, layout: &VmLayout) -> String {
    format!("{host} {{\n\treverse_proxy 127.0.0.1:{}\n}}\n", layout.agent_port)
}

/// SHA-256 of the binary to ship, hex.
pub(crate) async fn file_sha256(path: &Path) -> Result<String, AlephError> {
    let bytes = tokio::fs::read(path).await.map_err(|e| {
        AlephError::Config(format!(
            "cannot read the agent binary {} ({e}); set BAAL_AGENT_BIN to a built baal-agent",
            path.display()
        ))
    })?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Runs the VM steps over one SSH session.
pub(crate) struct Shipper<'a> {
    pub(crate) session: &'a Session,
    pub(crate) layout: &'a VmLayout,
    pub(crate) command_timeout: Duration,
}

impl Shipper<'_> {
    async fn upload<R: tokio::io::AsyncRead + Unpin>(&self, relative: &str, data: R) -> Result<(), AlephError> {
        let target = self.layout.path(relative);
        let dir = target.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("/");
        let command = format!("umask 077 && mkdir -p {} && cat > {}", shell_quote(dir), shell_quote(&target));
        let out = self.session.exec(&command, Some(data), self.command_timeout).await?;
        if out.status != Some(0) {
            return Err(AlephError::Remote { step: format!("upload {relative}"), detail: out.stderr_text() });
        }
        Ok(())
    }

    pub(crate) async fn run(&self, args: &str) -> Result<(), AlephError> {
        let out = self.session.exec(&self.layout.script_command(args), None::<&[u8]>, self.command_timeout).await?;
        if out.status != Some(0) {
            let step = args.split(' ').next().unwrap_or(args).to_owned();
            return Err(AlephError::Remote { step, detail: out.stderr_text() });
        }
        Ok(())
    }

    /// Ships the script and runs `prepare` (Caddy, user, directories).
    pub(crate) async fn prepare(&self) -> Result<(), AlephError> {
        self.upload("opt/baal/vm-setup.sh", VM_SETUP_SCRIPT.as_bytes()).await?;
        self.run("prepare").await
    }

    /// Runs `prepare` and, at the same time, uploads the binary, settings, unit and Caddyfile;
    /// then installs them (checksum first). Everything goes over one connection, on parallel
    /// channels: the upload of the binary dominates, the rest hides behind it.
    pub(crate) async fn ship(
        &self,
        env: &AgentEnv,
        binary: &Path,
        public_host: Option<&str>,
    ) -> Result<(), AlephError> {
        let sha256 = file_sha256(binary).await?;
        let file = tokio::fs::File::open(binary)
            .await
            .map_err(|e| AlephError::Config(format!("cannot open the agent binary {}: {e}", binary.display())))?;
        let settings = env.to_environment_file();
        let unit = systemd_unit(self.layout);
        let caddy = public_host.map(|host| caddyfile(host, self.layout));
        let caddy_upload = async {
            match &caddy {
                Some(text) => self.upload("opt/baal/incoming/Caddyfile", text.as_bytes()).await,
                None => Ok(()),
            }
        };
        futures_util::try_join!(
            self.prepare(),
            self.upload("opt/baal/incoming/baal-agent", file),
            self.upload("opt/baal/incoming/agent.env", settings.expose_secret().as_bytes()),
            self.upload("opt/baal/incoming/baal-agent.service", unit.as_bytes()),
            caddy_upload,
        )?;
        self.run(&format!("install {sha256}")).await
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;
    use crate::domain::AgentId;

    fn spec(name: &str, prompt: &str) -> AgentSpec {
        AgentSpec::new(
            AgentId(7),
            name,
            prompt,
            "qwen3-coder-next",
            SecretString::from("sk-test"),
            "http://127.0.0.1:1/v1",
            SecretString::from("agent-secret"),
            "42",
        )
    }

    /// A POSIX shell reading the settings file sees exactly what the user typed, and runs nothing.
    #[test]
    fn settings_survive_quotes_newlines_and_substitutions() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("pwned");
        let nasty_name = format!("a\"b'c $(touch {m}) `touch {m}` ${{HOME}} \\", m = marker.display());
        let nasty_prompt = format!("line one\nline \"two\"\n\\n $(touch {})\r\nend\\", marker.display());
        let env = agent_env(&spec(&nasty_name, &nasty_prompt), &AgentDefaults::default(), &VmLayout::default());
        let path = dir.path().join("agent.env");
        std::fs::write(&path, env.to_environment_file().expose_secret()).unwrap();
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg("set -a; . \"$1\"; printf '%s\\0%s' \"$AGENT_NAME\" \"$SYSTEM_PROMPT\"")
            .arg("sh")
            .arg(&path)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let text = String::from_utf8(output.stdout).unwrap();
        let (name, prompt) = text.split_once('\0').unwrap();
        assert_eq!(name, nasty_name);
        assert_eq!(prompt, nasty_prompt);
        assert!(!marker.exists());
    }

    #[test]
    fn unit_is_hardened_and_runs_unprivileged() {
        let unit = systemd_unit(&VmLayout::default());
        for line in [
            "User=baal-agent",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ReadWritePaths=/var/lib/baal-agent",
            "PrivateTmp=yes",
            "EnvironmentFile=/etc/baal/agent.env",
        ] {
            assert!(unit.lines().any(|l| l == line), "missing {line}");
        }
    }

    #[test]
    fn script_command_quotes_its_variables() {
        let layout = VmLayout { root: "/tmp/it's".into(), ..VmLayout::default() };
        assert!(layout.script_command("start").starts_with(r"BAAL_ROOT='/tmp/it'\''s' "));
    }
}
