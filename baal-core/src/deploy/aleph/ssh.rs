//! SSH to the VM with russh: the operator's key (and, to convert an agent imported from the Python
//! Baal, that Baal's key as a fallback), the VM's host key pinned at first contact.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect, client};
use tokio::io::AsyncRead;

use super::error::AlephError;

/// What the handler learnt about the server's key.
#[derive(Debug, Default)]
struct Seen {
    key: Option<String>,
    mismatch: bool,
}

struct PinnedHost {
    expected: Option<PublicKey>,
    seen: Arc<Mutex<Seen>>,
}

impl client::Handler for PinnedHost {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let key = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            // A certificate is pinned by the key it certifies.
            PublicKeyOrCertificate::Certificate(cert) => PublicKey::from(cert.public_key().clone()),
        };
        let matches = self.expected.as_ref().is_none_or(|expected| expected.key_data() == key.key_data());
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.key = key.to_openssh().ok();
        seen.mismatch = !matches;
        Ok(matches)
    }
}

/// Output of one remote command.
#[derive(Debug, Default)]
pub(crate) struct Output {
    pub(crate) status: Option<u32>,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
}

impl Output {
    pub(crate) fn stderr_text(&self) -> String {
        let text = String::from_utf8_lossy(&self.stderr);
        let chars: Vec<char> = text.trim().chars().collect();
        // The last lines say what failed.
        let tail: String = chars[chars.len().saturating_sub(300)..].iter().collect();
        if tail.is_empty() { "no error output".into() } else { tail }
    }
}

/// An authenticated SSH session with a VM.
pub(crate) struct Session {
    handle: client::Handle<PinnedHost>,
    target: String,
    /// The host key (OpenSSH line) the server presented.
    pub(crate) host_key: String,
}

/// Connects and authenticates as `root` with the operator's `key`. `pinned` is the OpenSSH line
/// recorded at first contact; a server presenting another key is refused with
/// [`AlephError::HostKeyChanged`].
pub(crate) async fn connect(
    host: &str,
    port: u16,
    key: Arc<PrivateKey>,
    pinned: Option<&str>,
    timeout: Duration,
) -> Result<Session, AlephError> {
    let keys = [Login { key, name: OPERATORS_KEY }];
    connect_with(host, port, &keys, pinned, timeout).await.map(|(session, _)| session)
}

/// What the operator is told when the operator's key is refused.
const OPERATORS_KEY: &str = "the operator's key (check that ALEPH_SSH_PRIVKEY_PATH matches ALEPH_SSH_PUBKEY)";

/// A key to log in with, and how the operator knows it (for the refusal's words).
#[derive(Clone)]
pub(crate) struct Login {
    pub(crate) key: Arc<PrivateKey>,
    pub(crate) name: &'static str,
}

/// Like [`connect`], offering `keys` in order on one connection (each refusal is one of sshd's
/// `MaxAuthTries`, 6 by default); returns the session and the index of the key accepted. Every
/// key refused is [`AlephError::KeyRefused`].
pub(crate) async fn connect_with(
    host: &str,
    port: u16,
    keys: &[Login],
    pinned: Option<&str>,
    timeout: Duration,
) -> Result<(Session, usize), AlephError> {
    let target = format!("{host}:{port}");
    let ssh_error = |detail: String| AlephError::Ssh { target: target.clone(), detail };
    let expected = match pinned {
        Some(line) => Some(
            PublicKey::from_openssh(line)
                .map_err(|e| ssh_error(format!("the recorded host key is unreadable ({e}); clear it to re-pin")))?,
        ),
        None => None,
    };
    let seen = Arc::new(Mutex::new(Seen::default()));
    let handler = PinnedHost { expected, seen: seen.clone() };
    let config = Arc::new(client::Config {
        inactivity_timeout: Some(Duration::from_secs(300)),
        keepalive_interval: Some(Duration::from_secs(15)),
        ..Default::default()
    });
    let connected = tokio::time::timeout(timeout, client::connect(config, (host, port), handler)).await;
    let mut handle = match connected {
        Err(_) => return Err(ssh_error(format!("no answer within {} s", timeout.as_secs()))),
        Ok(Err(err)) => {
            if seen.lock().unwrap_or_else(|e| e.into_inner()).mismatch {
                return Err(AlephError::HostKeyChanged { target });
            }
            return Err(ssh_error(err.to_string()));
        }
        Ok(Ok(handle)) => handle,
    };
    let mut accepted = None;
    for (index, login) in keys.iter().enumerate() {
        let key = with_hash_alg(&handle, login.key.clone()).await;
        let auth = tokio::time::timeout(timeout, handle.authenticate_publickey("root", key))
            .await
            .map_err(|_| ssh_error("authentication timed out".into()))?
            .map_err(|e| ssh_error(e.to_string()))?;
        if auth.success() {
            accepted = Some(index);
            break;
        }
    }
    let Some(index) = accepted else {
        let _ = handle.disconnect(Disconnect::ByApplication, "", "en").await;
        let keys = keys.iter().map(|login| login.name).collect::<Vec<_>>().join(" and ");
        return Err(AlephError::KeyRefused { target, keys });
    };
    let host_key = seen.lock().unwrap_or_else(|e| e.into_inner()).key.clone().unwrap_or_default();
    Ok((Session { handle, target, host_key }, index))
}

/// `key` with the signature hash the server takes: for RSA keys the best `rsa-sha2-*` it
/// announces (OpenSSH 8.8 and later refuse SHA-1 `ssh-rsa` signatures), `rsa-sha2-256` when it
/// announces nothing; other keys have a single algorithm.
async fn with_hash_alg(handle: &client::Handle<PinnedHost>, key: Arc<PrivateKey>) -> PrivateKeyWithHashAlg {
    if !key.algorithm().is_rsa() {
        return PrivateKeyWithHashAlg::new(key, None);
    }
    let hash = match handle.best_supported_rsa_hash().await {
        Ok(Some(announced)) => announced,
        Ok(None) | Err(_) => Some(HashAlg::Sha256),
    };
    PrivateKeyWithHashAlg::new(key, hash)
}

impl Session {
    /// Runs `command`, streaming `stdin` into it when given, within `timeout`.
    pub(crate) async fn exec<R: AsyncRead + Unpin>(
        &self,
        command: &str,
        stdin: Option<R>,
        timeout: Duration,
    ) -> Result<Output, AlephError> {
        let target = self.target.clone();
        let run = async {
            let mut channel = self.handle.channel_open_session().await?;
            channel.exec(true, command).await?;
            if let Some(reader) = stdin {
                channel.data(reader).await?;
            }
            channel.eof().await?;
            let mut out = Output::default();
            // Read until the channel closes: the exit status can come before the last data.
            while let Some(message) = channel.wait().await {
                match message {
                    ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                    ChannelMsg::ExtendedData { data, ext: 1 } => out.stderr.extend_from_slice(&data),
                    ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
                    _ => {}
                }
            }
            Ok::<_, russh::Error>(out)
        };
        match tokio::time::timeout(timeout, run).await {
            Err(_) => Err(AlephError::Ssh {
                target,
                detail: format!("a remote command did not finish within {} s", timeout.as_secs()),
            }),
            Ok(Err(err)) => Err(AlephError::Ssh { target, detail: err.to_string() }),
            Ok(Ok(out)) => Ok(out),
        }
    }

    pub(crate) async fn close(self) {
        let _ = self.handle.disconnect(Disconnect::ByApplication, "", "en").await;
    }
}

/// Quotes `text` for a POSIX shell: the SSH protocol carries one command string, no argv.
pub(crate) fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
