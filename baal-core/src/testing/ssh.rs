//! A real SSH target on loopback for the Aleph deployer's tests: OpenSSH's `sshd` started on a
//! free port with a temporary host key ([`Sshd`]), and a "VM" that is a directory tree on this
//! machine ([`VmSandbox`]) with stand-ins for `systemctl` and `apt-get` first on `PATH`, so
//! `vm-setup.sh` runs for real up to what only a real VM has (systemd, apt, Caddy).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// Where OpenSSH's server lives on Debian and Ubuntu.
pub const SSHD: &str = "/usr/sbin/sshd";

fn io_error(message: impl Into<String>) -> std::io::Error {
    std::io::Error::other(message.into())
}

/// A free TCP port on 127.0.0.1 (bound then released; good enough for tests).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Generates an ed25519 key pair at `path` (and `path.pub`) with `ssh-keygen`; returns the public
/// key line.
pub async fn keygen(path: &Path) -> std::io::Result<String> {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "baal-test", "-f"])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await?;
    if !status.success() {
        return Err(io_error("ssh-keygen failed"));
    }
    Ok(std::fs::read_to_string(path.with_extension("pub"))?.trim().to_owned())
}

/// An OpenSSH server on 127.0.0.1 accepting one client key for any user (run the tests as the
/// user that logs in; the deployer logs in as `root`, so these tests need root, as in CI).
#[derive(Debug)]
pub struct Sshd {
    /// The port it listens on.
    pub port: u16,
    /// Its host key (OpenSSH public key line).
    pub host_key: String,
    /// The client's private key file (OpenSSH format, no passphrase).
    pub client_key_path: PathBuf,
    /// The client's public key line.
    pub client_pubkey: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Sshd {
    /// Whether `sshd` is installed and this process can start it for root logins.
    pub fn available() -> bool {
        Path::new(SSHD).exists() && std::env::var("USER").map_or(true, |u| u == "root") && is_root()
    }

    /// Starts a server with fresh host and client keys.
    pub async fn start() -> std::io::Result<Sshd> {
        let dir = tempfile::tempdir()?;
        let host_key_path = dir.path().join("host_key");
        let host_key = keygen(&host_key_path).await?;
        let client_key_path = dir.path().join("client_key");
        let client_pubkey = keygen(&client_key_path).await?;
        std::fs::write(dir.path().join("authorized_keys"), format!("{client_pubkey}\n"))?;
        let port = free_port()?;
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {keys}\n\
                 PermitRootLogin prohibit-password\nPubkeyAuthentication yes\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\nMaxStartups 100\n\
                 MaxSessions 100\nLogLevel ERROR\n",
                host = host_key_path.display(),
                keys = dir.path().join("authorized_keys").display(),
            ),
        )?;
        std::fs::create_dir_all("/run/sshd")?;
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(Sshd { port, host_key, client_key_path, client_pubkey, child, _dir: dir });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(io_error("sshd did not start listening"))
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

const SYSTEMCTL_STANDIN: &str = r#"#!/bin/sh
# Stand-in for systemctl: runs the agent as a background process of the sandbox.
echo "$*" >> "$BAAL_ROOT/systemctl.log"
pidfile="$BAAL_ROOT/run/baal-agent.pid"
stop_agent() {
    if [ -f "$pidfile" ]; then
        pid="$(cat "$pidfile")"
        kill "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
        rm -f "$pidfile"
    fi
}
case "$1 ${2:-}" in
    "restart baal-agent"|"start baal-agent")
        stop_agent
        mkdir -p "$BAAL_ROOT/run"
        (set -a; . "$BAAL_ROOT/etc/baal/agent.env"; set +a; exec "$BAAL_ROOT/opt/baal/baal-agent") \
            >>"$BAAL_ROOT/agent.log" 2>&1 </dev/null &
        echo $! > "$pidfile"
        ;;
    "stop baal-agent") stop_agent ;;
esac
exit 0
"#;

const APT_GET_STANDIN: &str = r#"#!/bin/sh
# Stand-in for apt-get: "installs" Caddy as a no-op command next to this script.
echo "$*" >> "$BAAL_ROOT/apt-get.log"
case "$*" in
    *install*caddy*) printf '#!/bin/sh\nexit 0\n' > "$(dirname "$0")/caddy"; chmod 755 "$(dirname "$0")/caddy" ;;
esac
exit 0
"#;

/// A stand-in `baal-agent`: answers `GET /health` on `$PORT` and writes the settings it was
/// given to `$WORKSPACE_PATH/../seen-env.json`, so tests can check what arrived.
pub const STANDIN_AGENT: &str = r#"#!/bin/sh
exec python3 -c '
import http.server, json, os
seen = {k: os.environ.get(k) for k in ("AGENT_NAME", "SYSTEM_PROMPT", "MODEL", "OWNER_CHAT_ID", "PORT")}
with open(os.path.join(os.environ["WORKSPACE_PATH"], "..", "seen-env.json"), "w") as f:
    json.dump(seen, f)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/health"
        self.send_response(200 if ok else 404)
        self.end_headers()
        if ok:
            self.wfile.write(b"{\"status\":\"ok\"}")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
'
"#;

/// A stand-in `baal-agent` that exits at once (a broken release).
pub const BROKEN_AGENT: &str = "#!/bin/sh\necho 'broken release' >&2\nexit 1\n";

/// A "VM": a directory tree used as `BAAL_ROOT`, with `systemctl` and `apt-get` stand-ins in
/// its `stand-ins` directory (put it first on the script's `PATH`).
#[derive(Debug)]
pub struct VmSandbox {
    dir: tempfile::TempDir,
}

impl VmSandbox {
    /// Creates the tree and the stand-ins.
    pub fn new() -> std::io::Result<VmSandbox> {
        let dir = tempfile::tempdir()?;
        let bin = dir.path().join("stand-ins");
        std::fs::create_dir_all(&bin)?;
        write_executable(&bin.join("systemctl"), SYSTEMCTL_STANDIN)?;
        write_executable(&bin.join("apt-get"), APT_GET_STANDIN)?;
        Ok(VmSandbox { dir })
    }

    /// The root (`BAAL_ROOT`).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The stand-ins directory.
    pub fn stand_ins(&self) -> PathBuf {
        self.dir.path().join("stand-ins")
    }

    /// A file under the root, e.g. `etc/baal/agent.env`.
    pub fn file(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// What the stand-in `systemctl` was asked, one call per line.
    pub fn systemctl_calls(&self) -> String {
        std::fs::read_to_string(self.file("systemctl.log")).unwrap_or_default()
    }
}

impl Drop for VmSandbox {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.file("run/baal-agent.pid")) {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// Writes `text` to `path` with mode 755.
pub fn write_executable(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}
