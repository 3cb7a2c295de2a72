//! [`LocalDeployer`]: agents as `baal-agent` child processes of this machine, the embedded default
//! when no Aleph key is set.
//!
//! Each agent lives in `<data dir>/agents/<id>/`:
//!
//! | file | what |
//! |---|---|
//! | `settings.json` | its settings (mode 0600), handed over with `--config`, never on the command line |
//! | `agent.db` | its history and pending messages |
//! | `workspace/` | its files, memory and skills |
//! | `agent.log` | what the process printed (moved to `agent.log.1` past [`LocalDeployer::with_log_max_bytes`]) |
//!
//! Invariants:
//! - every agent listens on 127.0.0.1 only and requires its own secret;
//! - a child never outlives the platform: it runs in its own process group, which is killed when
//!   the deployer is dropped, and gets SIGKILL from the kernel if the platform dies (Linux);
//! - the child's environment is cleared to a short allowlist, so the platform's own secrets
//!   (bot token, encryption key, Aleph key) never reach an agent;
//! - as root where the host has the cgroup controllers, an agent and everything its tools start
//!   share one memory, process and CPU limit ([`AgentLimits`]), set before it starts;
//! - a crashed agent is restarted on the same port (on a fresh one when another program took it),
//!   at most [`RestartLimit::max_restarts`] times per [`RestartLimit::window`]; beyond that it is
//!   left down and the failure is logged, for the platform's health checks to notice and
//!   [`Deployer::repair`] it, which reports the address it answers at now;
//! - what an agent prints goes to its `agent.log` through Baal (never a file the agent writes
//!   itself), so the log is rotated by size however much the agent prints.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::isolation::{AgentLimits, Isolation, KillScope, LimitMechanism, LimitScope};
use super::{AgentSpec, DeployError, DeployReporter, DeployStep, Deployer, Repaired, SilentReporter, Tenancy};
use crate::agent_env::{AgentDefaults, AgentEnv, ToolsNetwork};
use crate::config::Settings;
use crate::domain::{AgentId, Deployment};
use crate::proxy::http::{HttpProxy, HttpProxyOptions};
use crate::proxy::{AgentEndpoint, Proxy};

/// Create the agent's directory and settings file.
pub const PREPARE: DeployStep = DeployStep { key: "prepare", label: "Prepare the agent's files" };
/// Start the `baal-agent` process.
pub const START: DeployStep = DeployStep { key: "start", label: "Start the agent" };
/// Wait until the agent answers `/health`.
pub const HEALTH: DeployStep = DeployStep { key: "health", label: "Check that the agent answers" };
/// Stop the process (destroy).
pub const STOP: DeployStep = DeployStep { key: "stop", label: "Stop the agent" };
/// Remove the agent's files (destroy).
pub const REMOVE: DeployStep = DeployStep { key: "remove", label: "Remove the agent's files" };

const STEPS: &[DeployStep] = &[PREPARE, START, HEALTH];

const SETTINGS_FILE: &str = "settings.json";
const LOG_FILE: &str = "agent.log";
/// `agent.log` is moved to `agent.log.1` past this size unless set otherwise.
pub const DEFAULT_LOG_MAX_BYTES: u64 = crate::config::DEFAULT_LOCAL_AGENT_LOG_MAX_BYTES;
/// The running agent's pid, so another Baal process (`baal-cli agents delete`) can stop it.
const PID_FILE: &str = "agent.pid";
/// The settings that ran before a redeploy, kept until the new ones are healthy.
const PREVIOUS_SETTINGS_FILE: &str = "settings.previous.json";
const AGENT_BIN_NAME: &str = "baal-agent";
/// What the agent prints on stdout once it listens (`listening on 127.0.0.1:PORT`).
const LISTENING_PREFIX: &str = "listening on ";
/// Environment variables a child keeps: what a program needs to run and to reach LibertAI over
/// TLS. Everything else (the platform's tokens and keys above all) is withheld.
const INHERITED_ENV: &[&str] =
    &["PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "RUST_LOG", "RUST_BACKTRACE", "SSL_CERT_FILE", "SSL_CERT_DIR"];

/// How often a crashed agent is restarted before it is left down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestartLimit {
    /// Restarts allowed within one window.
    pub max_restarts: u32,
    /// The sliding window.
    pub window: Duration,
}

impl Default for RestartLimit {
    fn default() -> Self {
        RestartLimit { max_restarts: 5, window: Duration::from_secs(600) }
    }
}

impl RestartLimit {
    /// A limit of `max_restarts` within `window`.
    pub fn new(max_restarts: u32, window: Duration) -> Self {
        RestartLimit { max_restarts, window }
    }
}

/// Runs agents as `baal-agent` child processes on 127.0.0.1. Drop it (or call
/// [`LocalDeployer::shutdown`]) and its agents stop; [`Deployer::restore`] brings them back.
pub struct LocalDeployer {
    inner: Arc<Inner>,
}

struct Inner {
    data_dir: PathBuf,
    agent_bin: PathBuf,
    proxy: HttpProxy,
    restart_limit: RestartLimit,
    agent_defaults: AgentDefaults,
    /// What this host lets Baal enforce between tenants (probed once, at construction).
    isolation: Isolation,
    /// `LOCAL_AGENTS_OPEN_WITHOUT_ISOLATION`: everyone may create agents even where
    /// `isolation` falls short.
    open_without_isolation: bool,
    /// The cgroup that holds this deployer's agents' kill scopes, one per agent (as root, with
    /// `cgroup.kill`); named after the data directory, so every Baal process sharing it agrees.
    scopes: Option<PathBuf>,
    /// How agents' limits are applied here, if they can be ([`Isolation::limit_mechanism`]).
    limit_mechanism: Option<LimitMechanism>,
    limits: AgentLimits,
    /// `agent.log` is rotated past this size.
    log_max_bytes: u64,
    /// The name of this data directory's group, in the kill scopes' tree and the limits' trees.
    group_name: String,
    start_timeout: Duration,
    agents: Mutex<HashMap<AgentId, Supervised>>,
    spawner: Spawner,
}

/// A running agent and the task that watches it.
struct Supervised {
    port: u16,
    /// The current process id (0 while down); also the id of its process group.
    pid: Arc<std::sync::atomic::AtomicU32>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for LocalDeployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDeployer")
            .field("data_dir", &self.inner.data_dir)
            .field("agent_bin", &self.inner.agent_bin)
            .finish_non_exhaustive()
    }
}

/// Finds the `baal-agent` program: `explicit` (the `BAAL_AGENT_BIN` setting) if given, else next to
/// the current executable (or one level up, where `cargo test` puts test binaries), else on `PATH`.
pub fn find_agent_binary(explicit: Option<&Path>) -> Result<PathBuf, DeployError> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_owned())
        } else {
            Err(DeployError::new(
                PREPARE.key,
                format!(
                    "BAAL_AGENT_BIN is {}, which is not a file. Point it at a built `baal-agent` \
                     (cargo build --release -p baal-agent), or unset it to look next to Baal and on PATH.",
                    path.display()
                ),
            )
            .permanent())
        };
    }
    let beside_exe =
        std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_owned)).into_iter().flat_map(|dir| {
            let parent = (dir.file_name() == Some("deps".as_ref())).then(|| dir.parent().map(Path::to_owned)).flatten();
            std::iter::once(dir).chain(parent)
        });
    beside_exe
        .map(|dir| dir.join(AGENT_BIN_NAME))
        .find(|candidate| candidate.is_file())
        .or_else(|| super::isolation::on_path(AGENT_BIN_NAME))
        .ok_or_else(|| {
            DeployError::new(
                PREPARE.key,
                "Baal cannot find the `baal-agent` program. Build it with `cargo build --release -p baal-agent`, \
             then put it next to Baal, on PATH, or set BAAL_AGENT_BIN to its path.",
            )
            .permanent()
        })
}

impl LocalDeployer {
    /// A deployer keeping agents under `data_dir/agents/` and running `agent_bin`.
    pub fn new(data_dir: impl Into<PathBuf>, agent_bin: impl Into<PathBuf>) -> Result<Self, DeployError> {
        // Agents run in their own directory, so every path they are given must be absolute.
        let absolute = |path: PathBuf| {
            std::path::absolute(&path).map_err(|err| {
                DeployError::new("deploy", format!("Baal cannot resolve the path {}.", path.display())).with_detail(err)
            })
        };
        let data_dir = absolute(data_dir.into())?;
        let agent_bin = agent_bin.into();
        // A bare name ("baal-agent") is looked up on PATH by the OS; anything else is a path.
        let agent_bin = if agent_bin.components().count() > 1 { absolute(agent_bin)? } else { agent_bin };
        let isolation = probe_and_log();
        let group_name = scope_group_name(&data_dir);
        let scopes = isolation.kill_scope_base().map(|base| base.join(&group_name));
        let limit_mechanism = isolation.limit_mechanism();
        let proxy = HttpProxy::with_options(HttpProxyOptions {
            connect_attempts: 1,
            short_timeout: Duration::from_secs(5),
            ..HttpProxyOptions::default()
        })
        .map_err(|err| DeployError::new("deploy", "Baal could not set up its HTTP client.").with_detail(err))?;
        Ok(LocalDeployer {
            inner: Arc::new(Inner {
                data_dir,
                agent_bin,
                proxy,
                restart_limit: RestartLimit::default(),
                agent_defaults: AgentDefaults::default(),
                scopes,
                limit_mechanism,
                limits: AgentLimits::default(),
                log_max_bytes: DEFAULT_LOG_MAX_BYTES,
                group_name,
                isolation,
                open_without_isolation: false,
                start_timeout: Duration::from_secs(30),
                agents: Mutex::new(HashMap::new()),
                spawner: Spawner::start()
                    .map_err(|err| DeployError::new("deploy", "Baal could not start a thread.").with_detail(err))?,
            }),
        })
    }

    /// A deployer from the settings: `BAAL_DATA_DIR` and `BAAL_AGENT_BIN` (see
    /// [`find_agent_binary`]), handing agents [`Settings::agent_defaults`].
    pub fn from_settings(settings: &Settings) -> Result<Self, DeployError> {
        Ok(Self::new(&settings.data_dir, find_agent_binary(settings.agent_bin.as_deref())?)?
            .with_agent_defaults(settings.agent_defaults())
            .with_limits(AgentLimits::new(
                settings.agent_max_memory_mib,
                settings.agent_max_processes,
                settings.agent_cpu_percent,
            ))
            .open_without_isolation(settings.local_agents_open_without_isolation)
            .with_log_max_bytes(settings.local_agent_log_max_bytes))
    }

    /// Sets the size past which an agent's `agent.log` is moved to `agent.log.1` (the one
    /// older log kept; 0 counts as 1). Call before deploying anything.
    pub fn with_log_max_bytes(mut self, max_bytes: u64) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.log_max_bytes = max_bytes.max(1);
        }
        self
    }

    /// With `open`, everyone may create agents here even where this host cannot keep tenants
    /// apart ([`Isolation::tenancy`]); the protections the host allows still apply. Call before
    /// deploying anything.
    pub fn open_without_isolation(mut self, open: bool) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.open_without_isolation = open;
        }
        self
    }

    /// What this host lets Baal enforce between the agents' tools.
    pub fn isolation(&self) -> &Isolation {
        &self.inner.isolation
    }

    /// Sets what every agent is given besides its own spec (heartbeat interval, Brave key). Call
    /// before deploying anything.
    pub fn with_agent_defaults(mut self, defaults: AgentDefaults) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.agent_defaults = defaults;
        }
        self
    }

    /// Sets what each agent, with everything its tools start, may use; applied where the host
    /// allows ([`Isolation::limit_mechanism`]). Call before deploying anything.
    pub fn with_limits(mut self, limits: AgentLimits) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.limits = limits;
        }
        self
    }

    /// Sets how often a crashed agent is restarted. Call before deploying anything.
    pub fn with_restart_limit(mut self, limit: RestartLimit) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.restart_limit = limit;
        }
        self
    }

    /// The directory that holds one agent's files.
    pub fn agent_dir(&self, agent_id: AgentId) -> PathBuf {
        self.inner.agent_dir(agent_id)
    }

    /// The process id of the agent, if it is running under this deployer.
    pub fn pid(&self, agent_id: AgentId) -> Option<u32> {
        let agents = self.inner.agents();
        let pid = agents.get(&agent_id)?.pid.load(std::sync::atomic::Ordering::SeqCst);
        (pid != 0).then_some(pid)
    }

    /// Stops every agent gracefully and waits for them to exit.
    pub async fn shutdown(&self) {
        let ids: Vec<AgentId> = self.inner.agents().keys().copied().collect();
        for id in ids {
            self.inner.stop(id).await;
        }
    }

    /// Starts (or restarts) one agent and waits for its health check. `reporter` hears about
    /// every step and fact. When a running agent fails to come back with its new settings, it is
    /// started again with the settings it had, and the error is returned.
    async fn run(&self, spec: &AgentSpec, reporter: &dyn DeployReporter) -> Result<Deployment, DeployError> {
        let inner = &self.inner;
        let id = spec.agent_id;
        let dir = inner.agent_dir(id);
        let mut deployment = spec.existing.clone();
        deployment.instance_hash = Some(local_key(id));
        reporter.facts(&deployment).await?;

        reporter.step_started(PREPARE).await;
        let was_running = self.pid(id).is_some();
        let preferred_port = inner.running_port(id).or_else(|| port_of(spec.existing.vm_url.as_deref()));
        inner.stop(id).await;
        let port = preferred_port.filter(|port| port_is_free(*port)).unwrap_or(0);
        let backup = dir.join(PREVIOUS_SETTINGS_FILE);
        let has_backup = was_running && std::fs::copy(dir.join(SETTINGS_FILE), &backup).is_ok();
        let prepared = prepare_dir(&dir, inner.isolation.root)
            .map_err(|err| DeployError::new(PREPARE.key, "Baal could not create the agent's files.").with_detail(err))
            .and_then(|()| {
                write_settings(&dir, &inner.env(spec, port)).map_err(|err| {
                    DeployError::new(PREPARE.key, "Baal could not write the agent's settings.").with_detail(err)
                })
            });
        let outcome = match prepared {
            Ok(()) => {
                reporter.step_done(PREPARE).await;
                self.start(spec, reporter, deployment).await
            }
            Err(err) => Err(err),
        };
        match outcome {
            Ok(deployment) => {
                let _ = std::fs::remove_file(&backup);
                Ok(deployment)
            }
            Err(err) => {
                if has_backup {
                    self.roll_back(id).await;
                }
                Err(err)
            }
        }
    }

    /// The `start` and `health` steps of [`LocalDeployer::run`].
    async fn start(
        &self,
        spec: &AgentSpec,
        reporter: &dyn DeployReporter,
        mut deployment: Deployment,
    ) -> Result<Deployment, DeployError> {
        let inner = &self.inner;
        let id = spec.agent_id;
        let dir = inner.agent_dir(id);
        reporter.step_started(START).await;
        let (mut child, port) = inner.spawn(id).await?;
        // Restarts after a crash must come back on the same address the platform stored.
        if let Err(err) = write_settings(&dir, &inner.env(spec, port)) {
            inner.abandon(id, &child);
            return Err(DeployError::new(START.key, "Baal could not write the agent's settings.").with_detail(err));
        }
        deployment.vm_url = Some(local_url(port));
        if let Err(err) = reporter.facts(&deployment).await {
            inner.abandon(id, &child);
            return Err(err);
        }
        reporter.step_done(START).await;

        reporter.step_started(HEALTH).await;
        if let Err(err) = inner.wait_healthy(port, &mut child).await {
            inner.abandon(id, &child);
            return Err(err);
        }
        reporter.step_done(HEALTH).await;

        inner.supervise(id, child, port);
        tracing::info!(agent = %id, port, "local agent running");
        Ok(deployment)
    }

    /// Brings back the settings that ran before a failed redeploy, and the agent with them.
    async fn roll_back(&self, agent_id: AgentId) {
        let inner = &self.inner;
        let dir = inner.agent_dir(agent_id);
        if let Err(err) = std::fs::rename(dir.join(PREVIOUS_SETTINGS_FILE), dir.join(SETTINGS_FILE)) {
            tracing::error!(agent = %agent_id, error = %err, "could not restore the previous settings");
            return;
        }
        let restarted = match inner.spawn(agent_id).await {
            Ok((mut child, port)) => match inner.wait_healthy(port, &mut child).await {
                Ok(()) => {
                    inner.supervise(agent_id, child, port);
                    Ok(())
                }
                Err(err) => {
                    inner.abandon(agent_id, &child);
                    Err(err)
                }
            },
            Err(err) => Err(err),
        };
        match restarted {
            Ok(()) => tracing::warn!(agent = %agent_id, "redeploy failed; the agent runs with its previous settings"),
            Err(err) => {
                tracing::error!(agent = %agent_id, error = %err, detail = ?err.detail, "redeploy failed and the previous settings did not start either")
            }
        }
    }
}

impl Drop for LocalDeployer {
    fn drop(&mut self) {
        // Synchronous and immediate: the runtime may be shutting down, so the supervisors might
        // never run again to stop their children.
        let mut ids = Vec::new();
        for (id, agent) in self.inner.agents().drain() {
            ids.push(id);
            let pid = agent.pid.load(std::sync::atomic::Ordering::SeqCst);
            if pid != 0 {
                signal_group(pid, Signal::Kill);
            }
            agent.task.abort();
        }
        // Outside the lock: what the agents started out of their process groups.
        for id in ids {
            self.inner.kill_leftovers(id);
        }
    }
}

impl Inner {
    fn agents(&self) -> MutexGuard<'_, HashMap<AgentId, Supervised>> {
        // A panic while holding this lock leaves the map itself consistent; keep going.
        self.agents.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn agent_dir(&self, agent_id: AgentId) -> PathBuf {
        self.data_dir.join("agents").join(agent_id.to_string())
    }

    /// The environment `spec`'s agent runs with, listening on `port`; as root, with a tools
    /// identity of its own ([`tools_uid`]).
    fn env(&self, spec: &AgentSpec, port: u16) -> AgentEnv {
        // Tools never share the host's network: the host's loopback services are the operator's.
        let mut env = AgentEnv::new(spec, &self.agent_defaults, port, &self.agent_dir(spec.agent_id))
            .with_tools_network(ToolsNetwork::Isolated);
        if self.limit_mechanism.is_none() {
            // No cgroups to count the agent as a whole: each tool process gets the memory limit
            // as its address space, and each call (a user namespace of its own) the process limit.
            env = env.with_tools_rlimits(self.limits.memory_mib, self.limits.processes);
        }
        match tools_uid(spec.agent_id) {
            Some(uid) if self.isolation.root => env.with_tools_user(uid.to_string()),
            _ => env,
        }
    }

    /// The agent's kill scope, when this host has them (see [`Isolation::kill_scope_base`]).
    fn scope(&self, agent_id: AgentId) -> Option<KillScope> {
        let base = self.scopes.as_deref()?;
        KillScope::new(base, &format!("agent-{agent_id}"))
            .inspect_err(|err| tracing::warn!(agent = %agent_id, error = %err, "no kill scope for this agent"))
            .ok()
    }

    /// The agent's limits, when this host has the controllers for them.
    fn limit_scope(&self, agent_id: AgentId) -> Option<LimitScope> {
        let mechanism = self.limit_mechanism.as_ref()?;
        LimitScope::new(mechanism, &self.group_name, &format!("agent-{agent_id}"), self.limits)
            .inspect_err(|err| tracing::warn!(agent = %agent_id, error = %err, "no limits for this agent"))
            .ok()
    }

    /// Kills everything the agent's processes left behind (`setsid` ones included) and removes
    /// its scope and limit groups, and this data directory's groups once no agent has one (a
    /// restart makes them again), so stopped agents leave no cgroups behind.
    fn kill_leftovers(&self, agent_id: AgentId) {
        if let Some(scope) = self.scope(agent_id) {
            scope.remove();
        }
        if let Some(group) = &self.scopes {
            let _ = std::fs::remove_dir(group);
        }
        // After the kill: a group is removed only once its processes are gone.
        if let Some(limits) = self.limit_scope(agent_id) {
            limits.remove();
        }
    }

    /// Gives up on a child that started but will not serve: its group, and everything it left
    /// in its scope, are killed.
    fn abandon(&self, agent_id: AgentId, child: &Child) {
        kill_group(child);
        self.kill_leftovers(agent_id);
    }

    fn running_port(&self, agent_id: AgentId) -> Option<u16> {
        self.agents().get(&agent_id).map(|agent| agent.port)
    }

    /// Stops the agent's process, if this deployer runs one, and waits until it has exited.
    async fn stop(&self, agent_id: AgentId) {
        let Some(agent) = self.agents().remove(&agent_id) else { return };
        let _ = agent.stop.send(());
        let _ = agent.task.await;
    }

    /// Stops an agent that another Baal process started (the bot, when `baal-cli` deletes one),
    /// from the pid it recorded. The pid is trusted only while that process still runs with this
    /// agent's settings file on its command line, so a recycled pid is never signalled. The
    /// settings go first, so the other process's supervisor sees a deletion, not a crash.
    async fn stop_started_elsewhere(&self, agent_id: AgentId) {
        let dir = self.agent_dir(agent_id);
        let settings = dir.join(SETTINGS_FILE);
        let Ok(recorded) = tokio::fs::read_to_string(dir.join(PID_FILE)).await else { return };
        let Ok(pid) = recorded.trim().parse::<u32>() else { return };
        if !runs_with_settings(pid, &settings) {
            return;
        }
        let _ = tokio::fs::remove_file(&settings).await;
        signal_group(pid, Signal::Term);
        for _ in 0..50 {
            if !runs_with_settings(pid, &settings) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The group outlives its leader while tools still run; its id stays reserved meanwhile.
        signal_group(pid, Signal::Kill);
    }

    /// Starts `baal-agent --config <dir>/settings.json` and waits until it says where it listens.
    async fn spawn(&self, agent_id: AgentId) -> Result<(Child, u16), DeployError> {
        let dir = self.agent_dir(agent_id);
        let failed = |detail: String| {
            DeployError::new(START.key, "The agent process did not start. Its log has the details.").with_detail(detail)
        };
        let log = open_log(&dir, self.log_max_bytes).map_err(|err| failed(format!("opening {LOG_FILE}: {err}")))?;
        let mut command = Command::new(&self.agent_bin);
        command
            .arg("--config")
            .arg(dir.join(SETTINGS_FILE))
            .current_dir(&dir)
            .env_clear()
            .envs(INHERITED_ENV.iter().filter_map(|name| Some((*name, std::env::var_os(name)?))))
            .env("HOME", &dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        confine_to_platform_lifetime(&mut command);
        if let Some(scope) = self.scope(agent_id) {
            scope.prepare().map_err(|err| failed(format!("preparing its kill scope: {err}")))?;
            // SAFETY: `enter` only makes the system calls open, write and close, on a path
            // allocated before the fork.
            unsafe { command.pre_exec(move || scope.enter()) };
        }
        if let Some(limits) = self.limit_scope(agent_id) {
            // After the kill scope's `prepare`, which has emptied the group the v2 limits sit on.
            limits.prepare().map_err(|err| failed(format!("setting its limits ({}): {err}", self.limits)))?;
            // SAFETY: as for the kill scope: open, write and close on paths allocated before the fork.
            unsafe { command.pre_exec(move || limits.enter()) };
        }
        let mut child = self.spawner.spawn(command).await.map_err(|err| {
            DeployError::new(START.key, "Baal could not run the `baal-agent` program.")
                .with_detail(format!("{}: {err}", self.agent_bin.display()))
        })?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            self.abandon(agent_id, &child);
            return Err(failed("no stdout or stderr pipe".into()));
        };
        // From the start: a child whose stderr pipe fills up would block.
        let stderr_copied = tokio::spawn(copy_to_log(stderr, log.clone()));
        let mut stdout = BufReader::new(stdout);
        let port = tokio::time::timeout(self.start_timeout, async {
            let mut line = String::new();
            loop {
                line.clear();
                match stdout.read_line(&mut line).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {
                        write_log(&log, line.as_bytes());
                        if let Some(addr) = line.trim().strip_prefix(LISTENING_PREFIX) {
                            return addr.parse::<std::net::SocketAddr>().ok().map(|addr| addr.port());
                        }
                    }
                }
            }
        })
        .await;
        let port = match port {
            Ok(Some(port)) => port,
            Ok(None) => {
                // Usually it has exited already; if it closed stdout or printed an address Baal
                // cannot read, it must not linger.
                self.abandon(agent_id, &child);
                let status = child.wait().await.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                // Its last words on stderr are copied by another task: wait for them (the pipe
                // closes as it exits), but not for a grandchild that keeps the pipe open.
                let _ = tokio::time::timeout(Duration::from_secs(1), stderr_copied).await;
                return Err(failed(format!("exited before listening ({status}): {}", log_tail(&dir))));
            }
            Err(_) => {
                self.abandon(agent_id, &child);
                return Err(failed(format!("did not listen within {:?}: {}", self.start_timeout, log_tail(&dir))));
            }
        };
        if let Some(pid) = child.id() {
            // Best effort: without it only this process can stop the agent, as before.
            let _ =
                std::fs::write(dir.join(PID_FILE), pid.to_string()).and_then(|()| restrict(&dir.join(PID_FILE), 0o600));
        }
        // Keep draining stdout into the log, or the child would block once the pipe fills.
        tokio::spawn(copy_to_log(stdout, log));
        Ok((child, port))
    }

    /// Starts a crashed agent again with its settings: on its port, or on a fresh one when
    /// another program took it meanwhile (then its settings and [`Supervised::port`] follow, and
    /// the platform learns the new address from [`Deployer::repair`]).
    async fn respawn(&self, agent_id: AgentId) -> Result<Child, DeployError> {
        let dir = self.agent_dir(agent_id);
        let old_port = self.running_port(agent_id);
        if let Some(port) = old_port.filter(|port| !port_is_free(*port)) {
            tracing::warn!(agent = %agent_id, port, "the agent's port is taken; restarting it on a fresh one");
            set_settings_port(&dir, 0).map_err(|err| {
                DeployError::new(START.key, "Baal could not write the agent's settings.").with_detail(err)
            })?;
        }
        let (child, port) = self.spawn(agent_id).await?;
        if old_port != Some(port) {
            // The next restart comes back here.
            if let Err(err) = set_settings_port(&dir, port) {
                tracing::warn!(agent = %agent_id, error = %err, "could not record the agent's new port");
            }
            if let Some(agent) = self.agents().get_mut(&agent_id) {
                agent.port = port;
            }
            tracing::info!(agent = %agent_id, port, "local agent now listens on a new port");
        }
        Ok(child)
    }

    /// Whether an agent answers `/health` on `port` now.
    async fn answers(&self, port: u16) -> bool {
        // `/health` takes no secret.
        let endpoint = AgentEndpoint { base_url: local_url(port), token: SecretString::from(String::new()) };
        matches!(self.proxy.health(&endpoint).await, Ok(health) if health.status == "ok")
    }

    async fn wait_healthy(&self, port: u16, child: &mut Child) -> Result<(), DeployError> {
        // `/health` takes no secret.
        let endpoint = AgentEndpoint { base_url: local_url(port), token: SecretString::from(String::new()) };
        let deadline = Instant::now() + self.start_timeout;
        loop {
            let last = match self.proxy.health(&endpoint).await {
                Ok(health) if health.status == "ok" => return Ok(()),
                Ok(health) => format!("status {:?}", health.status),
                Err(err) => err.to_string(),
            };
            if let Ok(Some(status)) = child.try_wait() {
                return Err(DeployError::new(
                    HEALTH.key,
                    "The agent stopped right after starting. Its log has the details.",
                )
                .with_detail(format!("exited ({status}); last health check: {last}")));
            }
            if Instant::now() >= deadline {
                return Err(DeployError::new(HEALTH.key, "The agent started but does not answer its health check.")
                    .with_detail(last));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Hands a healthy child to a task that restarts it when it crashes and stops it on request.
    fn supervise(self: &Arc<Self>, agent_id: AgentId, child: Child, port: u16) {
        let pid = Arc::new(std::sync::atomic::AtomicU32::new(child.id().unwrap_or(0)));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(Arc::clone(self).watch(agent_id, child, pid.clone(), stopped));
        let previous = self.agents().insert(agent_id, Supervised { port, pid, stop, task });
        if let Some(previous) = previous {
            // `run` stops the previous process first; this only guards against a concurrent deploy.
            previous.task.abort();
        }
    }

    async fn watch(
        self: Arc<Self>,
        agent_id: AgentId,
        mut child: Child,
        pid: Arc<std::sync::atomic::AtomicU32>,
        mut stopped: oneshot::Receiver<()>,
    ) {
        let mut restarts: VecDeque<Instant> = VecDeque::new();
        loop {
            tokio::select! {
                _ = &mut stopped => {
                    terminate(&mut child).await;
                    self.kill_leftovers(agent_id);
                    pid.store(0, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
                status = child.wait() => {
                    pid.store(0, std::sync::atomic::Ordering::SeqCst);
                    // Tools it started may still run in its process group, or out of it.
                    self.abandon(agent_id, &child);
                    if !self.agent_dir(agent_id).join(SETTINGS_FILE).exists() {
                        // Destroyed by another Baal process (`baal-cli agents delete`): not a crash.
                        tracing::info!(agent = %agent_id, "local agent was deleted elsewhere; not restarting it");
                        self.agents().remove(&agent_id);
                        return;
                    }
                    tracing::warn!(agent = %agent_id, status = ?status.ok(), "local agent exited; restarting it");
                }
            }
            loop {
                let now = Instant::now();
                while restarts.front().is_some_and(|at| now.duration_since(*at) > self.restart_limit.window) {
                    restarts.pop_front();
                }
                if restarts.len() >= self.restart_limit.max_restarts as usize {
                    tracing::error!(
                        agent = %agent_id,
                        restarts = restarts.len(),
                        window = ?self.restart_limit.window,
                        "local agent keeps crashing; leaving it down (redeploy it to try again)"
                    );
                    self.kill_leftovers(agent_id);
                    return;
                }
                restarts.push_back(now);
                let backoff = Duration::from_millis(500) * restarts.len() as u32;
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                match self.respawn(agent_id).await {
                    Ok(new_child) => {
                        child = new_child;
                        pid.store(child.id().unwrap_or(0), std::sync::atomic::Ordering::SeqCst);
                        tracing::info!(agent = %agent_id, "local agent restarted");
                        break;
                    }
                    Err(err) => tracing::warn!(agent = %agent_id, error = %err, detail = ?err.detail, "restart failed"),
                }
            }
        }
    }
}

#[async_trait]
impl Deployer for LocalDeployer {
    fn name(&self) -> &'static str {
        "local"
    }

    fn steps(&self) -> &'static [DeployStep] {
        STEPS
    }

    async fn deploy(&self, spec: &AgentSpec, reporter: &dyn DeployReporter) -> Result<Deployment, DeployError> {
        self.run(spec, reporter).await
    }

    async fn redeploy(&self, spec: &AgentSpec, reporter: &dyn DeployReporter) -> Result<Deployment, DeployError> {
        self.run(spec, reporter).await
    }

    /// An agent its supervisor brought back on a new port (the old one was taken) only needs its
    /// new address reported; any other is started again (on a fresh port if its own is taken),
    /// as a redeploy does. It runs on this machine either way, so it never `moved`.
    async fn repair(&self, spec: &AgentSpec, reporter: &dyn DeployReporter) -> Result<Repaired, DeployError> {
        let id = spec.agent_id;
        let supervised = self.inner.running_port(id).filter(|_| self.pid(id).is_some());
        if let Some(port) = supervised
            && self.inner.answers(port).await
        {
            let mut deployment = spec.existing.clone();
            deployment.instance_hash = Some(local_key(id));
            deployment.vm_url = Some(local_url(port));
            reporter.facts(&deployment).await?;
            return Ok(Repaired::new(deployment, false));
        }
        self.run(spec, reporter).await.map(|deployment| Repaired::new(deployment, false))
    }

    async fn destroy(
        &self,
        agent_id: AgentId,
        deployment: &Deployment,
        reporter: &dyn DeployReporter,
    ) -> Result<(), DeployError> {
        if let Some(hash) = deployment.instance_hash.as_deref().filter(|hash| *hash != local_key(agent_id)) {
            // Reporting success here would hide a VM that keeps running (and costing) elsewhere.
            return Err(DeployError::new(
                STOP.key,
                "This agent does not run on this machine but on Aleph Cloud; set ALEPH_PRIVATE_KEY so Baal can tear its VM down.",
            )
            .with_detail(format!("instance {hash}"))
            .permanent());
        }
        reporter.step_started(STOP).await;
        self.inner.stop(agent_id).await;
        self.inner.stop_started_elsewhere(agent_id).await;
        self.inner.kill_leftovers(agent_id);
        reporter.step_done(STOP).await;
        reporter.step_started(REMOVE).await;
        let dir = self.inner.agent_dir(agent_id);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(DeployError::new(REMOVE.key, "Baal could not remove the agent's files.")
                    .with_detail(format!("{}: {err}", dir.display())));
            }
        }
        reporter.step_done(REMOVE).await;
        Ok(())
    }

    async fn restore(&self, running: &[AgentSpec]) -> Result<(), DeployError> {
        for (agent_id, outcome) in self.restore_with_facts(running).await {
            if let Err(err) = outcome {
                tracing::error!(agent = %agent_id, error = %err, detail = ?err.detail, "could not restore local agent");
            }
        }
        Ok(())
    }

    async fn restore_with_facts(&self, running: &[AgentSpec]) -> Vec<(AgentId, Result<Deployment, DeployError>)> {
        // A few at a time: each start waits for a health check, and the machine is shared.
        let permits = tokio::sync::Semaphore::new(4);
        let restores = running.iter().map(|spec| {
            let permits = &permits;
            async move {
                let _permit = permits.acquire().await;
                (spec.agent_id, self.run(spec, &SilentReporter).await)
            }
        });
        futures_util::future::join_all(restores).await
    }

    // Starting a process and waiting for its health check takes about a second.
    fn usual_deploy_duration(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(2))
    }

    fn tenancy(&self) -> Tenancy {
        self.inner.isolation.tenancy(self.inner.open_without_isolation)
    }
}

/// The local deployer's instance key for an agent.
fn local_key(agent_id: AgentId) -> String {
    format!("local-{agent_id}")
}

fn local_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// The port of a stored `http://127.0.0.1:PORT` URL.
fn port_of(url: Option<&str>) -> Option<u16> {
    let rest = url?.strip_prefix("http://127.0.0.1:")?;
    rest.trim_end_matches('/').parse().ok().filter(|port| *port != 0)
}

/// The cgroup of one Baal data directory's agents: `baal-` and a digest of the directory.
fn scope_group_name(data_dir: &Path) -> String {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(data_dir.as_os_str().as_encoded_bytes());
    format!("baal-{}", &hex::encode(digest)[..12])
}

/// Probes the host and logs what holds and what does not, once per deployer.
fn probe_and_log() -> Isolation {
    let isolation = Isolation::probe();
    let missing = isolation.missing();
    if missing.is_empty() {
        tracing::info!(host = %isolation, "local agents are isolated from each other and from the operator");
    } else {
        let gaps: Vec<String> =
            missing.iter().map(|(boundary, why)| format!("{}: {why}", boundary.describe())).collect();
        tracing::info!(
            host = %isolation,
            missing = %gaps.join("; "),
            "local agents are not fully isolated: only the operator's admins may create them \
             (LOCAL_AGENTS_OPEN_WITHOUT_ISOLATION opens them to everyone)"
        );
    }
    tracing::info!(reach = %isolation.tools_network(), "what local agents' tools can reach on the network");
    match isolation.limit_mechanism() {
        Some(mechanism) => tracing::info!(%mechanism, "local agents' memory, processes and CPU are limited per agent"),
        None => tracing::info!(
            "local agents have no memory, process or CPU limit of their own: only the rlimits each \
             tool process gets apply"
        ),
    }
    isolation
}

/// Whether nothing listens on the port now. A check, not a reservation: if another program takes
/// it before the agent binds, the agent fails to start and the deployment reports it.
fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The first uid of the identities local agents' tools run as when Baal is root: agent `n`'s
/// tools are `TOOLS_UID_BASE + n`, an identity no account has (far above the usual account and
/// subordinate-id ranges), so tools of two agents are strangers to each other and to everyone.
pub const TOOLS_UID_BASE: u32 = 1_900_000_000;

/// The uid agent `id`'s tools run as when Baal is root (`None` for an id beyond the range, whose
/// tools then run as `TOOLS_USER`, the agent's default).
pub fn tools_uid(id: AgentId) -> Option<u32> {
    u32::try_from(id.0).ok().and_then(|n| TOOLS_UID_BASE.checked_add(n)).filter(|uid| *uid < u32::MAX - 1)
}

/// Creates the agent's directory: 0700, or 0711 when Baal is root, so the tools' own identity
/// may pass through to its workspace (the agent hands that over) without listing or reading the
/// settings and database beside it. Files an earlier release left readable there (the log, a
/// 0644 database) become 0600 first, since a directory others may pass through no longer hides
/// them.
fn prepare_dir(dir: &Path, root: bool) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("workspace"))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            restrict(&entry.path(), 0o600)?;
        }
    }
    restrict(dir, if root { 0o711 } else { 0o700 })
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn restrict(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

/// Writes the agent's environment as its settings file (JSON: it carries any name or prompt
/// without an escaping scheme), readable by this user only, replacing the file atomically.
fn write_settings(dir: &Path, env: &AgentEnv) -> std::io::Result<()> {
    write_settings_text(dir, &env.to_json())
}

/// Changes only the port in the agent's settings file (a crash restart has no spec to write the
/// whole file from).
fn set_settings_port(dir: &Path, port: u16) -> std::io::Result<()> {
    let text = SecretString::from(std::fs::read_to_string(dir.join(SETTINGS_FILE))?);
    let mut settings: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text.expose_secret()).map_err(std::io::Error::other)?;
    settings.insert(crate::agent_env::var::PORT.to_owned(), serde_json::Value::String(port.to_string()));
    let text = SecretString::from(serde_json::Value::Object(settings).to_string());
    write_settings_text(dir, &text)
}

/// Writes the settings file's text (0600), replacing the file atomically.
fn write_settings_text(dir: &Path, text: &SecretString) -> std::io::Result<()> {
    let path = dir.join(SETTINGS_FILE);
    let temp = dir.join(format!(".{SETTINGS_FILE}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temp)?;
    restrict(&temp, 0o600)?;
    file.write_all(text.expose_secret().as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temp, &path)
}

/// An agent's `agent.log`, shared by the tasks copying its stdout and stderr.
type AgentLog = Arc<Mutex<FileRotate<AppendCount>>>;

/// Opens `dir`'s `agent.log` (0600) for appending, moved to `agent.log.1` once it passes
/// `max_bytes` (a write is never split, so a line stays whole). file-rotate fits because Baal
/// copies the child's output itself; a child writing to the file directly could not be rotated
/// without losing what it writes to the moved file.
fn open_log(dir: &Path, max_bytes: u64) -> std::io::Result<AgentLog> {
    // file-rotate creates a missing directory, and panics where it cannot: an agent whose
    // directory is gone (deleted meanwhile) must not get one back.
    if !dir.is_dir() {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("{} is gone", dir.display())));
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true).create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    // file-rotate drops writes silently when it cannot open the file: find out here instead.
    drop(options.open(dir.join(LOG_FILE))?);
    let limit = ContentLimit::BytesSurpassed(usize::try_from(max_bytes.max(1)).unwrap_or(usize::MAX));
    let log = FileRotate::new(dir.join(LOG_FILE), AppendCount::new(1), limit, Compression::None, Some(options));
    Ok(Arc::new(Mutex::new(log)))
}

/// Appends to the log; a failed write loses that output only (the agent keeps running).
fn write_log(log: &AgentLog, bytes: &[u8]) {
    let mut log = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let _ = log.write_all(bytes).and_then(|()| log.flush());
}

/// Copies what the child prints into its log until the pipe closes.
async fn copy_to_log(mut from: impl AsyncRead + Unpin, log: AgentLog) {
    let mut buffer = vec![0u8; 8192];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => write_log(&log, &buffer[..read]),
        }
    }
}

/// The last lines of an agent's log, for error details.
fn log_tail(dir: &Path) -> String {
    // Shown to users in deploy errors: an agent of an older release may have coloured its log.
    let log = crate::ops::strip_escapes(&std::fs::read_to_string(dir.join(LOG_FILE)).unwrap_or_default());
    let lines: Vec<&str> = log.lines().rev().take(5).collect();
    let tail = lines.into_iter().rev().collect::<Vec<_>>().join(" | ");
    tail.chars().rev().take(600).collect::<Vec<_>>().into_iter().rev().collect()
}

#[derive(Clone, Copy)]
enum Signal {
    Term,
    Kill,
}

/// Starts child processes from one long-lived thread. Linux delivers the parent-death signal
/// when the *thread* that forked the child exits, not the process; forking from whichever runtime
/// thread runs a deployment (possibly a blocking-pool thread that exits after a few idle seconds)
/// would kill healthy agents at random.
struct Spawner {
    requests: Option<std::sync::mpsc::Sender<SpawnRequest>>,
}

type SpawnRequest = (Command, oneshot::Sender<std::io::Result<Child>>);

impl Spawner {
    /// Starts the thread inside the current Tokio runtime (children are reaped by its driver).
    /// Outside a runtime, children are forked by the caller instead.
    fn start() -> std::io::Result<Spawner> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Ok(Spawner { requests: None });
        };
        let (requests, incoming) = std::sync::mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new().name("baal-local-agents".into()).spawn(move || {
            let _runtime = runtime.enter();
            for (mut command, reply) in incoming {
                let _ = reply.send(command.spawn());
            }
        })?;
        Ok(Spawner { requests: Some(requests) })
    }

    async fn spawn(&self, mut command: Command) -> std::io::Result<Child> {
        let Some(requests) = &self.requests else { return command.spawn() };
        let (reply, child) = oneshot::channel();
        requests.send((command, reply)).map_err(|_| std::io::Error::other("the agent spawner thread is gone"))?;
        child.await.map_err(|_| std::io::Error::other("the agent spawner thread is gone"))?
    }
}

/// Puts the child in its own process group (so the agent and the tools it runs can be stopped
/// together) with a private umask and, on Linux, asks the kernel to kill it if the platform
/// dies, so no agent is orphaned even when the platform is killed outright.
fn confine_to_platform_lifetime(command: &mut Command) {
    #[cfg(unix)]
    command.process_group(0);
    #[cfg(target_os = "linux")]
    // SAFETY: the closure runs in the forked child before exec and only calls umask, prctl and
    // getppid, which are async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        let parent = libc::getpid();
        command.pre_exec(move || {
            // What the agent and its tools create is theirs alone: its database, and files in
            // the shared /tmp that another agent's tools could otherwise read.
            libc::umask(0o077);
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The platform may have died between fork and prctl; then nobody would kill us.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the platform exited while the agent was starting"));
            }
            Ok(())
        });
    }
    #[cfg(not(unix))]
    let _ = command;
}

fn signal_group(pgid: u32, signal: Signal) {
    #[cfg(unix)]
    {
        use rustix::process::{Pid, Signal as Sig, kill_process_group};
        let Some(pgid) = i32::try_from(pgid).ok().filter(|&pgid| pgid > 1).and_then(Pid::from_raw) else { return };
        let signal = match signal {
            Signal::Term => Sig::TERM,
            Signal::Kill => Sig::KILL,
        };
        // A group that no longer exists (ESRCH) is what stopping it wanted.
        let _ = kill_process_group(pgid, signal);
    }
    #[cfg(not(unix))]
    let _ = (pgid, signal);
}

/// Whether process `pid` is alive and was started with `settings` as an argument (a zombie has an
/// empty command line, so it counts as gone).
fn runs_with_settings(pid: u32, settings: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt as _;
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|cmdline| cmdline.split(|b| *b == 0).any(|arg| arg == settings.as_os_str().as_bytes()))
            .unwrap_or(false)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (pid, settings);
        false
    }
}

/// Signals the child's process group (the child's pid is its group id). Does nothing once the
/// child has been reaped, so a recycled pid is never hit.
fn signal_group_of(child: &Child, signal: Signal) {
    if let Some(pid) = child.id() {
        signal_group(pid, signal);
    }
}

fn kill_group(child: &Child) {
    signal_group_of(child, Signal::Kill);
}

/// Asks the agent to stop, waits a few seconds, then kills what is left of its group.
async fn terminate(child: &mut Child) {
    let Some(pid) = child.id() else { return };
    signal_group(pid, Signal::Term);
    if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
        tracing::warn!(pid, "local agent ignored SIGTERM; killing it");
    }
    // The group outlives its leader if tools are still running; the pgid stays reserved while
    // any member is alive, so this cannot hit an unrelated process.
    signal_group(pid, Signal::Kill);
    let _ = child.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_urls_give_back_their_port() {
        assert_eq!(port_of(Some("http://127.0.0.1:8123")), Some(8123));
        assert_eq!(port_of(Some("http://127.0.0.1:8123/")), Some(8123));
        assert_eq!(port_of(Some("https://x.2n6.me")), None);
        assert_eq!(port_of(None), None);
    }

    #[test]
    fn relative_paths_are_made_absolute() {
        let local = LocalDeployer::new("baal-data", "target/baal-agent").unwrap();
        assert!(local.agent_dir(AgentId(1)).is_absolute());
        assert!(local.inner.agent_bin.is_absolute());
        let bare = LocalDeployer::new("baal-data", "baal-agent").unwrap();
        assert_eq!(bare.inner.agent_bin, Path::new("baal-agent"));
    }

    #[test]
    fn a_missing_binary_says_how_to_build_it() {
        let err = find_agent_binary(Some(Path::new("/nonexistent/baal-agent"))).unwrap_err();
        assert!(err.message.contains("cargo build --release -p baal-agent"), "{err}");
    }
}
