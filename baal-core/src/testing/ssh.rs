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
    keygen_with(path, &["-t", "ed25519"]).await
}

/// Generates a key pair as the Python Baal's operators did: `ssh-keygen` with its defaults, an
/// RSA key (3072 bits) in OpenSSH format. Returns the public key line.
pub async fn keygen_rsa(path: &Path) -> std::io::Result<String> {
    keygen_with(path, &["-t", "rsa"]).await
}

/// `ssh-keygen -q -N "" -C baal-test -f path` with `args` before them.
pub async fn keygen_with(path: &Path, args: &[&str]) -> std::io::Result<String> {
    let status = Command::new("ssh-keygen")
        .args(args)
        .args(["-q", "-N", "", "-C", "baal-test", "-f"])
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

    /// Whether a test that needs OpenSSH (`what` it does) can run here; if not, says why and
    /// returns false so the test passes, except under `CI=true`, where a missing server fails it.
    pub fn available_or_skip(what: &str) -> bool {
        if Sshd::available() {
            return true;
        }
        let why = format!("skipped: {what} needs root and OpenSSH's {SSHD} (apt-get install openssh-server)");
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{why}");
        eprintln!("{why}");
        false
    }

    /// Starts a server with fresh host and client keys.
    pub async fn start() -> std::io::Result<Sshd> {
        let dir = tempfile::tempdir()?;
        let client_key_path = dir.path().join("client_key");
        let client_pubkey = keygen(&client_key_path).await?;
        let authorized_keys = dir.path().join("authorized_keys");
        Sshd::start_with(dir, client_key_path, client_pubkey, &authorized_keys).await
    }

    /// Starts a server for a VM the Python Baal created: the only key it lets in is a fresh
    /// "Python Baal" RSA key (`ssh-keygen -t rsa`, [`Sshd::client_key_path`]), listed in
    /// `authorized_keys` (a sandbox's `root/.ssh/authorized_keys`, created here), which the
    /// server reads at every login, so a key added there is let in from then on.
    pub async fn start_for_python_vm(authorized_keys: &Path) -> std::io::Result<Sshd> {
        let dir = tempfile::tempdir()?;
        let client_key_path = dir.path().join("python_baal_rsa");
        let client_pubkey = keygen_rsa(&client_key_path).await?;
        Sshd::start_with(dir, client_key_path, client_pubkey, authorized_keys).await
    }

    async fn start_with(
        dir: tempfile::TempDir,
        client_key_path: PathBuf,
        client_pubkey: String,
        authorized_keys: &Path,
    ) -> std::io::Result<Sshd> {
        let host_key_path = dir.path().join("host_key");
        let host_key = keygen(&host_key_path).await?;
        if let Some(parent) = authorized_keys.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(authorized_keys, format!("{client_pubkey}\n"))?;
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
                keys = authorized_keys.display(),
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
# Stand-in for systemctl: runs whatever unit is installed as baal-agent.service (Baal's, or a
# Python Baal's) as a background process of the sandbox, through run-unit.py beside it.
echo "$*" >> "$BAAL_ROOT/systemctl.log"
pidfile="$BAAL_ROOT/run/baal-agent.pid"
unit="$BAAL_ROOT/etc/systemd/system/baal-agent.service"
running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
stop_agent() {
    if [ -f "$pidfile" ]; then
        pid="$(cat "$pidfile")"
        kill "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
        rm -f "$pidfile"
    fi
}
start_agent() {
    [ -f "$unit" ] || { echo "Unit baal-agent.service not found." >&2; exit 5; }
    mkdir -p "$BAAL_ROOT/run"
    python3 "$(dirname "$0")/run-unit.py" "$unit" >>"$BAAL_ROOT/agent.log" 2>&1 </dev/null &
    echo $! > "$pidfile"
}
case "$1 ${2:-}" in
    "restart baal-agent") stop_agent; start_agent ;;
    # start leaves a running service alone, as systemd does.
    "start baal-agent") running || start_agent ;;
    "stop baal-agent") stop_agent ;;
    "is-active baal-agent") running || { echo inactive; exit 3; }; echo active ;;
esac
exit 0
"#;

/// The stand-in `systemctl`'s service manager (see the file).
const RUN_UNIT: &str = include_str!("run-unit.py");

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
/// its `stand-ins` directory (put it first on the script's `PATH`). The `systemctl` stand-in runs
/// the service `etc/systemd/system/baal-agent.service` describes (its `ExecStart=`,
/// `EnvironmentFile=`, `Environment=` and `WorkingDirectory=`), whichever agent that is.
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
        write_executable(&bin.join("run-unit.py"), RUN_UNIT)?;
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

    /// The user this process runs as: the agent user to configure, since the stand-ins run
    /// the agent as whoever logs in.
    pub fn user() -> String {
        std::process::Command::new("id")
            .arg("-un")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|_| "root".into())
    }

    /// The deployer's VM layout for this sandbox, the agent listening on `agent_port`.
    pub fn layout(&self, agent_port: u16) -> crate::deploy::aleph::VmLayout {
        crate::deploy::aleph::VmLayout {
            root: self.root().display().to_string(),
            agent_user: VmSandbox::user(),
            agent_port,
            path_prefix: Some(self.stand_ins().display().to_string()),
            health_seconds: 10,
        }
    }

    /// What the stand-in `systemctl` was asked, one call per line.
    pub fn systemctl_calls(&self) -> String {
        std::fs::read_to_string(self.file("systemctl.log")).unwrap_or_default()
    }

    /// Runs the stand-in `systemctl` with `args` (`["start", "baal-agent"]`), as the VM's root
    /// would.
    pub fn systemctl(&self, args: &[&str]) -> std::io::Result<()> {
        let status = std::process::Command::new(self.stand_ins().join("systemctl"))
            .args(args)
            .env("BAAL_ROOT", self.root())
            .status()?;
        if !status.success() {
            return Err(io_error(format!("systemctl {} failed: {status}", args.join(" "))));
        }
        Ok(())
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

/// Writes a fresh ed25519 private key (OpenSSH format, no passphrase) at `path` and returns the
/// public key line. Made in-process: works where OpenSSH's tools are absent.
pub fn write_ed25519_key(path: &Path) -> std::io::Result<String> {
    ed25519_key(path).map(|(_, public)| public)
}

fn ed25519_key(path: &Path) -> std::io::Result<(russh::keys::PrivateKey, String)> {
    use russh::keys::ssh_key::{LineEnding, private::Ed25519Keypair};
    let key = russh::keys::PrivateKey::from(Ed25519Keypair::from_seed(&rand::random::<[u8; 32]>()));
    let private = key.to_openssh(LineEnding::LF).map_err(|e| io_error(e.to_string()))?;
    std::fs::write(path, private.as_bytes())?;
    let public = key.public_key().to_openssh().map_err(|e| io_error(e.to_string()))?;
    Ok((key, public))
}

/// An in-process russh server on 127.0.0.1 that runs each exec request with `sh -c` on this
/// machine, streaming stdin, stdout, stderr and the exit status: the stand-in for `sshd` where
/// OpenSSH is not installed. It accepts one client key; the user name is ignored (commands run as
/// the test's user).
pub struct RusshServer {
    /// The port it listens on.
    pub port: u16,
    /// Its host key (OpenSSH public key line).
    pub host_key: String,
    /// The client's private key file.
    pub client_key_path: PathBuf,
    /// The client's public key line.
    pub client_pubkey: String,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for RusshServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RusshServer").field("port", &self.port).finish_non_exhaustive()
    }
}

impl Drop for RusshServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where each channel's stdin goes: `None` is end of input.
type Stdins = std::sync::Arc<
    std::sync::Mutex<std::collections::HashMap<russh::ChannelId, tokio::sync::mpsc::UnboundedSender<Option<Vec<u8>>>>>,
>;

#[derive(Clone)]
struct ShellServer {
    allowed: russh::keys::PublicKey,
    stdins: Stdins,
}

impl russh::server::Server for ShellServer {
    type Handler = ShellServer;
    fn new_client(&mut self, _: Option<std::net::SocketAddr>) -> ShellServer {
        ShellServer { allowed: self.allowed.clone(), stdins: Default::default() }
    }
}

impl russh::server::Handler for ShellServer {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<russh::server::Auth, Self::Error> {
        Ok(if key.public_key.key_data() == self.allowed.key_data() {
            russh::server::Auth::Accept
        } else {
            russh::server::Auth::reject()
        })
    }

    async fn channel_open_session(
        &mut self,
        _channel: russh::Channel<russh::server::Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: russh::ChannelId,
        data: &[u8],
        session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        session.channel_success(channel)?;
        let handle = session.handle();
        let command = String::from_utf8_lossy(data).into_owned();
        let (stdin_tx, mut stdin_rx) = tokio::sync::mpsc::unbounded_channel::<Option<Vec<u8>>>();
        self.stdins.lock().unwrap_or_else(|e| e.into_inner()).insert(channel, stdin_tx);
        tokio::spawn(async move {
            let child = Command::new("sh")
                .arg("-c")
                .arg(&command)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            let mut child = match child {
                Ok(child) => child,
                Err(err) => {
                    let _ = handle.extended_data(channel, 1, err.to_string().into_bytes()).await;
                    let _ = handle.exit_status_request(channel, 127).await;
                    let _ = handle.close(channel).await;
                    return;
                }
            };
            let mut stdin = child.stdin.take();
            let feed = async {
                while let Some(Some(bytes)) = stdin_rx.recv().await {
                    if let Some(pipe) = stdin.as_mut()
                        && pipe.write_all(&bytes).await.is_err()
                    {
                        break;
                    }
                }
                drop(stdin.take());
            };
            let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
            let pump = |ext: Option<u32>, pipe: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>| {
                let handle = handle.clone();
                async move {
                    let Some(mut pipe) = pipe else { return };
                    let mut buffer = vec![0u8; 32 * 1024];
                    while let Ok(n) = pipe.read(&mut buffer).await {
                        if n == 0 {
                            break;
                        }
                        let chunk = buffer[..n].to_vec();
                        let sent = match ext {
                            None => handle.data(channel, chunk).await,
                            Some(ext) => handle.extended_data(channel, ext, chunk).await,
                        };
                        if sent.is_err() {
                            break;
                        }
                    }
                }
            };
            let out_pipe = out.take().map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>);
            let err_pipe = err.take().map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>);
            tokio::join!(feed, pump(None, out_pipe), pump(Some(1), err_pipe));
            let status = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(255);
            let _ = handle.exit_status_request(channel, status as u32).await;
            let _ = handle.eof(channel).await;
            let _ = handle.close(channel).await;
        });
        Ok(())
    }

    async fn data(
        &mut self,
        channel: russh::ChannelId,
        data: &[u8],
        _session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        if let Some(tx) = self.stdins.lock().unwrap_or_else(|e| e.into_inner()).get(&channel) {
            let _ = tx.send(Some(data.to_vec()));
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: russh::ChannelId,
        _session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        if let Some(tx) = self.stdins.lock().unwrap_or_else(|e| e.into_inner()).remove(&channel) {
            let _ = tx.send(None);
        }
        Ok(())
    }
}

impl RusshServer {
    /// Starts the server with fresh host and client keys.
    pub async fn start() -> std::io::Result<RusshServer> {
        use russh::server::Server as _;
        let dir = tempfile::tempdir()?;
        let (host, host_key) = ed25519_key(&dir.path().join("host_key"))?;
        let client_key_path = dir.path().join("client_key");
        let (client, client_pubkey) = ed25519_key(&client_key_path)?;
        let config = std::sync::Arc::new(russh::server::Config {
            keys: vec![host],
            auth_rejection_time: Duration::from_millis(10),
            auth_rejection_time_initial: Some(Duration::ZERO),
            ..Default::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let mut server = ShellServer { allowed: client.public_key().clone(), stdins: Default::default() };
        let task = tokio::spawn(async move {
            let _ = server.run_on_socket(config, &listener).await;
        });
        Ok(RusshServer { port, host_key, client_key_path, client_pubkey, task, _dir: dir })
    }
}

/// A loopback SSH target: OpenSSH's `sshd` where it can run, else the in-process russh server.
#[derive(Debug)]
pub enum SshTarget {
    /// OpenSSH.
    OpenSsh(Sshd),
    /// The in-process russh server.
    Russh(RusshServer),
}

impl SshTarget {
    /// Starts `sshd` if available (root and `/usr/sbin/sshd`), else the russh server.
    pub async fn start() -> std::io::Result<SshTarget> {
        if Sshd::available() {
            Ok(SshTarget::OpenSsh(Sshd::start().await?))
        } else {
            Ok(SshTarget::Russh(RusshServer::start().await?))
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            SshTarget::OpenSsh(s) => s.port,
            SshTarget::Russh(s) => s.port,
        }
    }

    /// The host key line.
    pub fn host_key(&self) -> &str {
        match self {
            SshTarget::OpenSsh(s) => &s.host_key,
            SshTarget::Russh(s) => &s.host_key,
        }
    }

    /// The client's private key file.
    pub fn client_key_path(&self) -> &Path {
        match self {
            SshTarget::OpenSsh(s) => &s.client_key_path,
            SshTarget::Russh(s) => &s.client_key_path,
        }
    }

    /// The client's public key line.
    pub fn client_pubkey(&self) -> &str {
        match self {
            SshTarget::OpenSsh(s) => &s.client_pubkey,
            SshTarget::Russh(s) => &s.client_pubkey,
        }
    }
}
