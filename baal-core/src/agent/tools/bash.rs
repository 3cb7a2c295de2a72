//! The `bash` tool: one `bash -c` in the workspace, in its own process group, with a cleared
//! environment, as the tools user when the agent is root, killed as a group on timeout or when the
//! call is dropped, its output kept to a head and a tail.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{Shared, Tool, ToolContext, ToolOutput, error_output, object_args, optional_u64, required_str};

/// The longest a model may ask a command to run, unless the configured default is longer.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// How long to wait for the output pipes once the command has ended or been killed.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// The search path when the agent has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Variables a tool process may inherit: none of them carries a secret.
const INHERITED_VARS: &[&str] = &["PATH", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ"];

pub(crate) struct Bash {
    shared: Arc<Shared>,
}

impl Bash {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Bash { shared }
    }
}

#[async_trait]
impl Tool for Bash {
    fn name(&self) -> &'static str {
        "bash"
    }

    fn description(&self) -> &'static str {
        "Run a bash command in the workspace directory and return its stdout, stderr and exit code. \
         Processes it leaves in the background are stopped when it ends."
    }

    fn parameters(&self) -> Value {
        let default = self.shared.config.bash_timeout;
        let timeout =
            format!("Timeout in seconds (default {}, max {})", default.as_secs(), MAX_TIMEOUT.max(default).as_secs());
        json!({
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The bash command to run"},
                "timeout": {"type": "integer", "description": timeout}
            },
            "required": ["command"]
        })
    }

    async fn call(&self, args: Value, _ctx: &ToolContext) -> ToolOutput {
        let args = match object_args(args) {
            Ok(a) => a,
            Err(e) => return error_output(e),
        };
        let command = match required_str(&args, "command") {
            Ok(c) => c,
            Err(e) => return error_output(e),
        };
        let config = &self.shared.config;
        let timeout = match optional_u64(&args, "timeout") {
            Ok(Some(secs)) => Duration::from_secs(secs.max(1)).min(MAX_TIMEOUT.max(config.bash_timeout)),
            Ok(None) => config.bash_timeout,
            Err(e) => return error_output(e),
        };
        let identity = match &self.shared.identity {
            Ok(identity) => *identity,
            Err(e) => return error_output(e),
        };
        let cwd = match self.shared.workspace.canonical_root() {
            Ok(cwd) => cwd,
            Err(e) => return error_output(e),
        };

        let shared = self.shared.clone();
        let sandbox = shared.sandbox();
        let tmpdir = if sandbox.jail.is_active() { Path::new("/tmp") } else { shared.scratch.as_path() };
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg("-c")
            .arg(command)
            .current_dir(&cwd)
            .env_clear()
            .envs(safe_env(&cwd, tmpdir, identity.is_some().then_some(config.tools_user.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own group, so a timeout or a dropped call can kill everything it started.
            .process_group(0);
        // RLIMIT_NPROC counts every process of a user: it is a per-agent limit only for a tools
        // user of the agent's own (root) or inside a user namespace of the call's own.
        let max_processes = (identity.is_some() || sandbox.jail.is_active()).then_some(config.max_processes);
        let (max_files, max_file_size) = (config.max_open_files, config.max_file_size_bytes);
        let max_memory = config.max_memory_bytes;
        let agent_pid = rustix::process::getpid();
        // SAFETY: the closure runs in the child between fork and exec; it only makes system calls
        // (setns, unshare, mount, fork, setgroups, setgid, setuid, setrlimit, prctl, getppid,
        // open/write/close, landlock_restrict_self) on data prepared before the fork, which
        // neither allocate nor lock, as std's own uid switch in the child does.
        unsafe {
            cmd.pre_exec(move || {
                use rustix::process::{Resource, Rlimit, Signal, set_parent_process_death_signal, setrlimit};
                // Descriptors the agent inherited or opened without close-on-exec (its listener,
                // whatever its parent left open) must not reach the tool; those the steps below
                // still use (the network namespace, the Landlock ruleset) stay usable until exec.
                // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only flags descriptors.
                if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Set up before the spawn (`Shared::sandbox`); reading it is one atomic load.
                let Some(sandbox) = shared.sandbox.get() else {
                    return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
                };
                // Namespaces first, with the agent's privileges: entering them needs those.
                sandbox.jail.enter()?;
                // An agent that is killed outright (SIGKILL, OOM) cannot run GroupGuard: the call
                // then dies with it instead of running on unwatched. The signal fires when the
                // forking *thread* exits; spawns happen on the runtime's worker threads, which
                // live as long as the agent. Entering a user namespace clears it, hence here.
                set_parent_process_death_signal(Some(Signal::KILL))?;
                if rustix::process::getppid() != Some(agent_pid) {
                    // The agent died before the signal was armed (an error value that does not allocate).
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                // From here on this is bash, the first process of the call's PID namespace.
                sandbox.jail.become_init()?;
                // The memory killer takes a tool before the agent that runs it.
                let _ = write_oom_score_adj();
                if let Some(id) = identity {
                    // Here rather than with `Command::uid`: std switches before it enters the
                    // working directory, and the tools user may not traverse the directories
                    // above the workspace (an agent under /root, or in its 0711 agent
                    // directory). Entered as root first, the workspace is then the tools' own.
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(id.gid) != 0
                        || libc::setuid(id.uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // Again: the uid switch clears it, and the parent is now the stand-in.
                set_parent_process_death_signal(Some(Signal::KILL))?;
                setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) })?;
                // Per process, whatever the host: cgroups limit neither descriptors nor file sizes.
                setrlimit(Resource::Nofile, Rlimit { current: Some(max_files), maximum: Some(max_files) })?;
                setrlimit(Resource::Fsize, Rlimit { current: Some(max_file_size), maximum: Some(max_file_size) })?;
                if let Some(max) = max_processes {
                    setrlimit(Resource::Nproc, Rlimit { current: Some(max), maximum: Some(max) })?;
                }
                if let Some(max) = max_memory {
                    setrlimit(Resource::As, Rlimit { current: Some(max), maximum: Some(max) })?;
                }
                if let Some(ruleset) = &sandbox.fs_ruleset {
                    super::sandbox::enter_fs_ruleset(ruleset.as_raw_fd())?;
                }
                Ok(())
            });
        }
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return error_output(format!(
                    "cannot start bash in the workspace as the tools user ({e}); the workspace and its parent \
                     directories must be traversable by that user"
                ));
            }
            Err(e) => return error_output(format!("cannot start bash: {e}")),
        };
        let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
            return error_output("bash exited before it could be watched");
        };
        let mut group = GroupGuard { pgid: pid, armed: true };

        let cap = config.max_output_bytes;
        let stdout = Arc::new(Mutex::new(HeadTail::new(cap)));
        let stderr = Arc::new(Mutex::new(HeadTail::new(cap)));
        let readers = [
            child.stdout.take().map(|s| tokio::spawn(drain(s, stdout.clone()))),
            child.stderr.take().map(|s| tokio::spawn(drain(s, stderr.clone()))),
        ];

        let status = tokio::time::timeout(timeout, child.wait()).await;
        // Whether bash ended or timed out, nothing it started may outlive it (and background jobs
        // would keep the pipes open).
        group.kill();
        if status.is_err() {
            let _ = child.wait().await;
        }
        for reader in readers.into_iter().flatten() {
            // A process that left the group (setsid) may hold a pipe: do not wait for it forever.
            let abort = reader.abort_handle();
            if tokio::time::timeout(DRAIN_GRACE, reader).await.is_err() {
                abort.abort();
            }
        }

        let mut text = take_text(&stdout);
        let err_text = take_text(&stderr);
        if !err_text.is_empty() {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str("[stderr]\n");
            text.push_str(&err_text);
        }
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        let failed = match status {
            Err(_) => {
                text.push_str(&format!(
                    "[timed out after {}s; the command and everything it started were killed]",
                    timeout.as_secs()
                ));
                true
            }
            Ok(Err(e)) => {
                text.push_str(&format!("[could not wait for bash: {e}]"));
                true
            }
            Ok(Ok(status)) => match status.code() {
                Some(code) => {
                    text.push_str(&format!("[exit code: {code}]"));
                    if code != 0
                        && let super::jail::Reach::Nothing(why) = &self.shared.sandbox().jail.reach
                    {
                        text.push_str(&format!("\n[note: {why}; web_fetch can still fetch public pages]"));
                    }
                    false
                }
                None => {
                    use std::os::unix::process::ExitStatusExt;
                    text.push_str(&format!("[killed by signal {}]", status.signal().unwrap_or(0)));
                    false
                }
            },
        };
        let text = super::truncate_middle(&text, config.max_output_bytes);
        if failed { ToolOutput::error(text) } else { ToolOutput::ok(text) }
    }
}

/// The whole environment of a tool process: nothing of the agent's own except the variables in
/// [`INHERITED_VARS`], so no secret the agent was started with is reachable from it.
fn safe_env(workspace: &Path, tmpdir: &Path, tools_user: Option<&str>) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> =
        INHERITED_VARS.iter().filter_map(|name| std::env::var_os(name).map(|v| (OsString::from(name), v))).collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    if !env.iter().any(|(k, _)| k == "LANG") {
        env.push(("LANG".into(), "C.UTF-8".into()));
    }
    env.push(("HOME".into(), workspace.as_os_str().to_owned()));
    env.push(("TERM".into(), "dumb".into()));
    env.push(("TMPDIR".into(), tmpdir.as_os_str().to_owned()));
    if let Some(user) = tools_user {
        env.push(("USER".into(), user.into()));
        env.push(("LOGNAME".into(), user.into()));
    }
    env
}

/// Raises the calling process's `oom_score_adj` to the maximum (open, write, close only).
fn write_oom_score_adj() -> std::io::Result<()> {
    // SAFETY: a NUL-terminated path and a static buffer.
    unsafe {
        let fd = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let written = libc::write(fd, b"1000".as_ptr().cast(), 4);
        libc::close(fd);
        if written != 4 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Kills a process group when told to or when dropped (a cancelled tool call): tokio's
/// `kill_on_drop` only reaches bash itself, not what bash started.
struct GroupGuard {
    pgid: i32,
    armed: bool,
}

impl GroupGuard {
    fn kill(&mut self) {
        if self.armed {
            if let Some(pgid) = rustix::process::Pid::from_raw(self.pgid) {
                // ESRCH (the group is already gone) is the common, harmless case.
                let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            }
            self.armed = false;
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a pipe to its end, keeping only a bounded head and tail so a command that prints
/// gigabytes costs a fixed amount of memory.
async fn drain(mut pipe: impl AsyncRead + Unpin, into: Arc<Mutex<HeadTail>>) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        if let Ok(mut keep) = into.lock() {
            keep.push(&buf[..n]);
        }
    }
}

fn take_text(buffer: &Mutex<HeadTail>) -> String {
    buffer.lock().map(|b| b.to_text()).unwrap_or_default()
}

/// The first and last `cap / 2` bytes of a stream, and how long it was.
struct HeadTail {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: usize,
    half: usize,
}

impl HeadTail {
    fn new(cap: usize) -> Self {
        HeadTail { head: Vec::new(), tail: VecDeque::new(), total: 0, half: cap / 2 }
    }

    fn push(&mut self, mut data: &[u8]) {
        self.total += data.len();
        let room = self.half.saturating_sub(self.head.len());
        let (to_head, rest) = data.split_at(room.min(data.len()));
        self.head.extend_from_slice(to_head);
        data = rest;
        if data.len() >= self.half {
            self.tail.clear();
            self.tail.extend(&data[data.len() - self.half..]);
        } else {
            let overflow = (self.tail.len() + data.len()).saturating_sub(self.half);
            self.tail.drain(..overflow);
            self.tail.extend(data);
        }
    }

    fn to_text(&self) -> String {
        let head = String::from_utf8_lossy(&self.head);
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        let tail = String::from_utf8_lossy(&tail);
        let omitted = self.total - self.head.len() - self.tail.len();
        if omitted == 0 {
            format!("{head}{tail}")
        } else {
            format!("{head}\n\n... truncated ({omitted} of {} bytes omitted) ...\n\n{tail}", self.total)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HeadTail;

    #[test]
    fn head_tail_keeps_both_ends() {
        let mut keep = HeadTail::new(10);
        keep.push(b"abc");
        assert_eq!(keep.to_text(), "abc");
        keep.push(b"defghijklmnopqrstuvwxyz");
        let text = keep.to_text();
        assert!(text.starts_with("abcde") && text.ends_with("vwxyz"), "{text}");
        assert!(text.contains("16 of 26 bytes omitted"), "{text}");
        let mut keep = HeadTail::new(10);
        for b in b"0123456789abcdef" {
            keep.push(&[*b]);
        }
        let text = keep.to_text();
        assert!(text.starts_with("01234") && text.ends_with("bcdef"), "{text}");
    }
}
