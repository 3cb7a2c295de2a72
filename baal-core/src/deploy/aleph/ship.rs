//! Shipping the agent to a VM: the files Baal writes there and the steps of `vm-setup.sh`.

use std::path::Path;
use std::time::Duration;

use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use super::error::AlephError;
use super::ssh::{Output, Session, shell_quote};
use crate::agent_env::{AgentDefaults, AgentEnv, DEFAULT_TOOLS_MAX_OPEN_FILES, var};
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

/// Where a converted agent finds the Python agent's database, copied into its data directory
/// by `vm-setup.sh convert` (`PYTHON_AGENT_DB`).
pub(crate) fn python_agent_db(layout: &VmLayout) -> String {
    layout.path(&format!("{DATA_DIR}/python-agent.db"))
}

/// Memory of the agent with everything its tools start: three quarters of the VM (1.5 GiB of
/// one Aleph compute unit), so a runaway tool is killed inside the unit while the kernel, sshd,
/// Caddy and journald keep the rest and the VM stays reachable.
const AGENT_MEMORY_MAX: &str = "75%";
/// Processes and threads of the agent with its tools. One `bash` call may hold
/// `TOOLS_MAX_PROCESSES` (1024 by default, counted per call in its own user namespace) and the
/// agent's runtime a few hundred threads at most; more than that is a fork bomb.
const AGENT_TASKS_MAX: u64 = 2048;
/// Descriptors of the agent: its clients and SSE streams, the model's API, its database and the
/// pipes of running tools, with room to spare.
const AGENT_OPEN_FILES: u64 = 8192;

/// The systemd unit: the agent as an unprivileged user, only its data directory (database,
/// workspace, and the tools' scratch directory beside it) writable.
///
/// Namespaces and system calls are allowed for exactly what the tools' jail
/// (`agent::tools::jail`) does per `bash` call as an unprivileged user: `unshare` of a user, mount
/// and PID namespace (tools on a VM keep the agent's network, `TOOLS_NETWORK=host`, so no network
/// namespace), `mount` for its private `/`, the scratch `/tmp` and a fresh `/dev/shm`, `prctl`, and
/// the three Landlock calls that confine every tool process. `@system-service` has `unshare`,
/// `setns` and `prctl` but neither `mount` nor Landlock's calls. `mount` alone is added, not
/// `@mount` (no `umount2`, `pivot_root`, `chroot` or the new mount API): with no capability
/// outside the tools' own user namespace it mounts nothing the VM sees. A refused call fails with
/// `EPERM` instead of killing the agent (the default), so a kernel or systemd that refuses one of
/// these fails the jail's try-out and tools run without that layer (logged), as on any host
/// without namespaces.
///
/// `LimitNOFILE` is never below `TOOLS_MAX_OPEN_FILES`: each tool process sets both of its limits
/// to that value, and raising a hard limit above the agent's is refused, which would fail every
/// `bash` call. `OOMPolicy=continue` keeps the agent running when the memory limit kills a tool
/// (tools volunteer first: `oom_score_adj` 1000). `IPAddressDeny` closes the link-local metadata
/// address, which nothing the agent or its tools need is at (the model's API and web pages are
/// public, Caddy comes in on loopback, DNS goes to the VM's resolver: systemd-resolved on loopback
/// on Ubuntu).
pub(crate) fn systemd_unit(layout: &VmLayout, env: &AgentEnv) -> String {
    let data = layout.path(DATA_DIR);
    let tools_open_files = env
        .get(var::TOOLS_MAX_OPEN_FILES)
        .and_then(|value| value.parse::<u64>().ok())
        .unwrap_or(DEFAULT_TOOLS_MAX_OPEN_FILES);
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
CapabilityBoundingSet=
ProtectProc=invisible
ProtectKernelLogs=yes
ProtectClock=yes
RestrictRealtime=yes
RestrictNamespaces=user mnt pid
SystemCallFilter=@system-service mount landlock_create_ruleset landlock_add_rule landlock_restrict_self
SystemCallErrorNumber=EPERM
IPAddressDeny=169.254.169.254
MemoryMax={memory}
OOMPolicy=continue
TasksMax={tasks}
LimitNOFILE={files}

[Install]
WantedBy=multi-user.target
",
        user = layout.agent_user,
        env = layout.path("etc/baal/agent.env"),
        bin = layout.path("opt/baal/baal-agent"),
        memory = AGENT_MEMORY_MAX,
        tasks = AGENT_TASKS_MAX,
        files = AGENT_OPEN_FILES.max(tools_open_files),
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
        self.run_with(args, None).await.map(|_| ())
    }

    /// Runs `vm-setup.sh args`, streaming `input` into it; what it printed, when it succeeded.
    pub(crate) async fn run_with(&self, args: &str, input: Option<&[u8]>) -> Result<Output, AlephError> {
        let out = self.session.exec(&self.layout.script_command(args), input, self.command_timeout).await?;
        if out.status != Some(0) {
            let step = args.split(' ').next().unwrap_or(args).to_owned();
            return Err(AlephError::Remote { step, detail: out.stderr_text() });
        }
        Ok(out)
    }

    /// Ships the script (this release's, whatever the VM had).
    pub(crate) async fn upload_script(&self) -> Result<(), AlephError> {
        self.upload("opt/baal/vm-setup.sh", VM_SETUP_SCRIPT.as_bytes()).await
    }

    /// Ships the script and runs `prepare` (Caddy, user, directories).
    pub(crate) async fn prepare(&self) -> Result<(), AlephError> {
        self.upload_script().await?;
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
        let unit = systemd_unit(self.layout, env);
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
    use std::collections::BTreeSet;
    use std::path::PathBuf;

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

    fn unit_for(layout: &VmLayout, defaults: &AgentDefaults) -> String {
        systemd_unit(layout, &agent_env(&spec("Scribe", "Be brief."), defaults, layout))
    }

    /// The values of `key=` lines in `unit`.
    fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
        unit.lines().filter_map(|line| line.strip_prefix(key)?.strip_prefix('=')).collect()
    }

    #[test]
    fn unit_is_hardened_and_runs_unprivileged() {
        let unit = unit_for(&VmLayout::default(), &AgentDefaults::default());
        for line in [
            "User=baal-agent",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ReadWritePaths=/var/lib/baal-agent",
            "PrivateTmp=yes",
            "EnvironmentFile=/etc/baal/agent.env",
            "CapabilityBoundingSet=",
            "ProtectProc=invisible",
            "ProtectKernelLogs=yes",
            "ProtectClock=yes",
            "RestrictNamespaces=user mnt pid",
            "SystemCallErrorNumber=EPERM",
            "IPAddressDeny=169.254.169.254",
            "MemoryMax=75%",
            "OOMPolicy=continue",
            "TasksMax=2048",
            "LimitNOFILE=8192",
        ] {
            assert!(unit.lines().any(|l| l == line), "missing {line}");
        }
    }

    /// Everything the agent writes is under `ReadWritePaths`: database, workspace and the tools'
    /// scratch directory, which the agent keeps beside the workspace (`ToolsConfig`'s default).
    #[test]
    fn the_agents_files_and_scratch_directory_are_writable() {
        let layout = VmLayout::default();
        let env = agent_env(&spec("Scribe", "Be brief."), &AgentDefaults::default(), &layout);
        let unit = systemd_unit(&layout, &env);
        let writable: Vec<&Path> = values(&unit, "ReadWritePaths").into_iter().map(Path::new).collect();
        let workspace = Path::new(env.get(var::WORKSPACE_PATH).unwrap());
        let scratch = workspace.with_file_name("scratch");
        for path in [workspace, scratch.as_path(), Path::new(env.get(var::DB_PATH).unwrap())] {
            assert!(writable.iter().any(|dir| path.starts_with(dir)), "{} is read-only", path.display());
        }
    }

    /// Tools set their descriptor limit to `TOOLS_MAX_OPEN_FILES` and cannot raise it above the
    /// agent's, so the unit follows an operator who raises it.
    #[test]
    fn the_agents_descriptor_limit_covers_its_tools() {
        let defaults = AgentDefaults::default().with_tool_limits(65536, 1024);
        assert_eq!(values(&unit_for(&VmLayout::default(), &defaults), "LimitNOFILE"), ["65536"]);
    }

    const SYSTEMD_ANALYZE: &str = "systemd-analyze";

    fn systemd_analyze_missing() -> bool {
        let missing = std::process::Command::new(SYSTEMD_ANALYZE).arg("--version").output().is_err();
        if missing {
            eprintln!("skipped: {SYSTEMD_ANALYZE} is not installed (apt-get install systemd)");
        }
        missing
    }

    /// systemd itself reads the unit and finds nothing it ignores or refuses: an unknown key, a
    /// value it cannot parse or a system call it does not know is a warning systemd would skip
    /// silently on the VM.
    #[test]
    fn the_unit_passes_systemd_analyze_verify() {
        if systemd_analyze_missing() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let layout = VmLayout { root: dir.path().to_string_lossy().into_owned(), ..VmLayout::default() };
        // verify checks that ExecStart is executable; the user and the other paths exist only on a VM.
        let bin = PathBuf::from(layout.path("opt/baal/baal-agent"));
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::write(&bin, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let path = dir.path().join("baal-agent.service");
        std::fs::write(&path, unit_for(&layout, &AgentDefaults::default())).unwrap();
        let out = std::process::Command::new(SYSTEMD_ANALYZE).args(["verify", "--man=no"]).arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
    }

    /// The system calls named in `SystemCallFilter=` lines, with every `@set` expanded as this
    /// host's systemd defines it.
    fn allowed_syscalls(unit: &str) -> BTreeSet<String> {
        fn expand(set: &str, seen: &mut BTreeSet<String>, calls: &mut BTreeSet<String>) {
            if !seen.insert(set.to_owned()) {
                return;
            }
            let out = std::process::Command::new(SYSTEMD_ANALYZE)
                .args(["syscall-filter", "--no-pager", set])
                .output()
                .unwrap();
            assert!(out.status.success(), "{set}: {}", String::from_utf8_lossy(&out.stderr));
            // The first line names the set; `#` lines describe it.
            for item in String::from_utf8_lossy(&out.stdout).lines().skip(1).map(str::trim) {
                match item {
                    "" => {}
                    _ if item.starts_with('#') => {}
                    _ if item.starts_with('@') => expand(item, seen, calls),
                    _ => {
                        calls.insert(item.to_owned());
                    }
                }
            }
        }
        let (mut seen, mut calls) = (BTreeSet::new(), BTreeSet::new());
        for item in values(unit, "SystemCallFilter").into_iter().flat_map(str::split_whitespace) {
            assert!(!item.starts_with('~'), "the filter is an allow list");
            if item.starts_with('@') {
                expand(item, &mut seen, &mut calls);
            } else {
                calls.insert(item.to_owned());
            }
        }
        calls
    }

    /// What the agent calls when it sets up a tool process (`agent::tools::{jail, sandbox}` and
    /// `bash`) is allowed; the rest of `@mount` is not.
    #[test]
    fn the_units_system_call_filter_allows_what_the_agents_tools_need() {
        if systemd_analyze_missing() {
            return;
        }
        let allowed = allowed_syscalls(&unit_for(&VmLayout::default(), &AgentDefaults::default()));
        let needed = [
            "landlock_create_ruleset",
            "landlock_add_rule",
            "landlock_restrict_self",
            "unshare",
            "setns",
            "mount",
            "prctl",
            "clone",
            "clone3",
            "fork",
            "execve",
            "wait4",
            "close_range",
            "openat2",
            "prlimit64",
            "setrlimit",
            "ioctl",
        ];
        let missing: Vec<&str> = needed.into_iter().filter(|call| !allowed.contains(*call)).collect();
        assert!(missing.is_empty(), "the unit's filter refuses {missing:?}");
        let extra: Vec<&str> = ["umount2", "pivot_root", "chroot", "move_mount", "fsopen"]
            .into_iter()
            .filter(|call| allowed.contains(*call))
            .collect();
        assert!(extra.is_empty(), "the unit's filter allows {extra:?}, which the agent never calls");
    }

    #[test]
    fn script_command_quotes_its_variables() {
        let layout = VmLayout { root: "/tmp/it's".into(), ..VmLayout::default() };
        assert!(layout.script_command("start").starts_with(r"BAAL_ROOT='/tmp/it'\''s' "));
    }
}
