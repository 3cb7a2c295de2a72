//! The local deployer with real `baal-agent` processes on loopback: deploy → health → chat through
//! `HttpProxy` → redeploy → destroy, crash restarts, and restore after a platform restart.
//!
//! Needs a built `baal-agent` (`cargo build --workspace`): `BAAL_AGENT_BIN`, else next to the test
//! binary (`target/debug/baal-agent`), else on `PATH`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use baal_core::agent::history::History;
use baal_core::config::Settings;
use baal_core::deploy::isolation::{AgentLimits, Isolation, LimitMechanism};
use baal_core::deploy::local::{LocalDeployer, RestartLimit, find_agent_binary};
use baal_core::deploy::{AgentSpec, DeployError, DeployReporter, DeployStep, Deployer, SilentReporter, Tenancy};
use baal_core::domain::{AgentId, Deployment, Role};
use baal_core::proxy::http::HttpProxy;
use baal_core::proxy::{AgentEndpoint, AgentEvent, ChatRequest, Proxy, ProxyError};
use baal_core::testing::openai::{Reply, ScriptedLlm};
use futures_util::StreamExt;
use secrecy::SecretString;

fn agent_bin() -> PathBuf {
    let explicit = std::env::var_os("BAAL_AGENT_BIN").map(PathBuf::from);
    find_agent_binary(explicit.as_deref())
        .unwrap_or_else(|err| panic!("{err} (for these tests: cargo build --workspace)"))
}

fn deployer(data: &Path) -> LocalDeployer {
    LocalDeployer::new(data, agent_bin()).unwrap()
}

/// The scripted LLM the agents talk to; without one (`None`), an address where nothing listens.
fn spec_for(llm: Option<&ScriptedLlm>, id: i64, name: &str, secret: &str) -> AgentSpec {
    AgentSpec::new(
        AgentId(id),
        name,
        "You are terse.\nAnswer in one line.",
        "qwen3-coder-next",
        SecretString::from("sk-test-key"),
        llm.map_or_else(|| "http://127.0.0.1:9/v1".to_owned(), ScriptedLlm::base_url),
        SecretString::from(secret.to_owned()),
        "1000",
    )
}

fn endpoint(deployment: &Deployment, secret: &str) -> AgentEndpoint {
    AgentEndpoint::new(deployment.vm_url.clone().unwrap(), SecretString::from(secret.to_owned()))
}

/// Records what a deployer reports.
#[derive(Default)]
struct Recorder {
    steps: Mutex<Vec<String>>,
    facts: Mutex<Vec<Deployment>>,
}

#[async_trait]
impl DeployReporter for Recorder {
    async fn step_started(&self, step: DeployStep) {
        self.steps.lock().unwrap().push(format!("{}:start", step.key));
    }
    async fn step_done(&self, step: DeployStep) {
        self.steps.lock().unwrap().push(format!("{}:done", step.key));
    }
    async fn facts(&self, deployment: &Deployment) -> Result<(), DeployError> {
        self.facts.lock().unwrap().push(deployment.clone());
        Ok(())
    }
}

/// Polls `check` until it holds; panics with `what` after a generous deadline (a hang guard, not a
/// timing assertion).
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

async fn chat_text(proxy: &HttpProxy, agent: &AgentEndpoint, message: &str) -> Vec<AgentEvent> {
    proxy.chat(agent, ChatRequest::new(message, "1000", Role::Owner)).await.collect().await
}

/// The text of an answer, pieces joined.
fn answer(events: &[AgentEvent]) -> String {
    events
        .iter()
        .filter_map(|event| match event {
            AgentEvent::Text { content } => Some(content.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn deploy_chat_redeploy_destroy() {
    let data = tempfile::tempdir().unwrap();
    let local = deployer(data.path());
    let llm = ScriptedLlm::start().await;
    let spec = |id, name, secret| spec_for(Some(&llm), id, name, secret);
    let proxy = HttpProxy::new().unwrap();
    let id = AgentId(1);

    let reporter = Recorder::default();
    let deployment = local.deploy(&spec(1, "Ada", "secret-one"), &reporter).await.unwrap();
    assert_eq!(
        *reporter.steps.lock().unwrap(),
        ["prepare:start", "prepare:done", "start:start", "start:done", "health:start", "health:done"]
    );
    let facts = reporter.facts.lock().unwrap().clone();
    assert_eq!(facts[0].instance_hash.as_deref(), Some("local-1"), "the key is reported before anything can fail");
    assert_eq!(facts.last(), Some(&deployment));
    let url = deployment.vm_url.clone().unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let agent = endpoint(&deployment, "secret-one");
    assert_eq!(proxy.health(&agent).await.unwrap().agent_name, "Ada");
    let events = chat_text(&proxy, &agent, "hello").await;
    assert_eq!(answer(&events), "echo: hello", "{events:?}");
    assert!(events.last().is_some_and(AgentEvent::is_done));
    let wrong = endpoint(&deployment, "not-the-secret");
    assert_eq!(proxy.pending(&wrong, None).await.unwrap_err(), ProxyError::Unauthorized);
    let refused = chat_text(&proxy, &wrong, "hello").await;
    assert!(
        matches!(&refused[..], [AgentEvent::Error { content }, AgentEvent::Done { .. }] if content.contains("credentials"))
    );

    // The other endpoints, on the real agent.
    assert_eq!(proxy.pending(&agent, Some("1000")).await.unwrap(), vec![]);
    // Pending messages are leased and stay with the agent until acknowledged. They are queued
    // straight into its database, as its heartbeat would.
    let queue = History::open(&local.agent_dir(id).join("agent.db")).await.unwrap();
    queue.push_pending("1000", "one", "heartbeat").await.unwrap();
    queue.push_pending("1000", "two", "heartbeat").await.unwrap();
    let got = proxy.pending(&agent, Some("1000")).await.unwrap();
    assert_eq!(got.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(), ["one", "two"]);
    assert!(proxy.pending(&agent, Some("1000")).await.unwrap().is_empty(), "leased, so not offered twice");
    proxy.ack_pending(&agent, "1000", &[got[0].id.unwrap()]).await.unwrap();
    assert_eq!(proxy.ack_pending(&wrong, "1000", &[1]).await.unwrap_err(), ProxyError::Unauthorized);
    let left = queue.take_pending(None).await.unwrap();
    assert_eq!(left.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(), ["two"], "only the acknowledged one went");
    drop(queue);
    let notes = local.agent_dir(id).join("workspace").join("my notes");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join("plan #1.txt"), "step one").unwrap();
    let file = proxy.file(&agent, "my notes/plan #1.txt").await.unwrap();
    assert_eq!((file.file_name.as_str(), file.bytes.as_slice()), ("plan #1.txt", &b"step one"[..]));
    assert!(proxy.reset(&agent, "1000").await.unwrap() >= 2, "the turn's user and assistant rows are deleted");

    // Files: settings readable by this user only; secrets on neither the command line nor the
    // environment of the process.
    let dir = local.agent_dir(id);
    let settings = dir.join("settings.json");
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&settings).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let pid = local.pid(id).unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&cmdline).contains("secret-one"));
    if let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) {
        let environ = String::from_utf8_lossy(&environ);
        for var in environ.split('\0').filter(|v| !v.is_empty()) {
            let name = var.split('=').next().unwrap();
            assert!(
                [
                    "PATH",
                    "LANG",
                    "LC_ALL",
                    "TZ",
                    "TMPDIR",
                    "RUST_LOG",
                    "RUST_BACKTRACE",
                    "SSL_CERT_FILE",
                    "SSL_CERT_DIR",
                    "HOME"
                ]
                .contains(&name),
                "the agent inherited {name}"
            );
        }
    }

    // Redeploy: new settings, same address, a new process.
    let mut renamed = spec(1, "Ada Lovelace", "secret-one");
    renamed.existing = deployment.clone();
    let redeployed = local.redeploy(&renamed, &SilentReporter).await.unwrap();
    assert_eq!(redeployed.vm_url, deployment.vm_url);
    assert_eq!(proxy.health(&agent).await.unwrap().agent_name, "Ada Lovelace");
    let new_pid = local.pid(id).unwrap();
    assert_ne!(new_pid, pid);
    assert!(!process_exists(pid), "the old process is gone");

    // Destroy: process and files gone.
    let reporter = Recorder::default();
    local.destroy(id, &redeployed, &reporter).await.unwrap();
    assert_eq!(*reporter.steps.lock().unwrap(), ["stop:start", "stop:done", "remove:start", "remove:done"]);
    assert!(!process_exists(new_pid), "the agent process is gone");
    assert!(!dir.exists(), "the agent's files are gone");
    assert_eq!(local.pid(id), None);
    assert_eq!(proxy.health(&agent).await.unwrap_err(), ProxyError::Unreachable);
    // Destroying again (e.g. a retried delete) is fine.
    local.destroy(id, &redeployed, &SilentReporter).await.unwrap();
}

#[tokio::test]
async fn a_crashed_agent_is_restarted_until_the_limit() {
    let data = tempfile::tempdir().unwrap();
    let local = deployer(data.path()).with_restart_limit(RestartLimit::new(1, Duration::from_secs(600)));
    let llm = ScriptedLlm::start().await;
    let spec = |id, name, secret| spec_for(Some(&llm), id, name, secret);
    let proxy = HttpProxy::new().unwrap();
    let id = AgentId(2);
    let deployment = local.deploy(&spec(2, "Bob", "secret-two"), &SilentReporter).await.unwrap();
    let agent = endpoint(&deployment, "secret-two");

    let first = local.pid(id).unwrap();
    kill(first);
    eventually("the agent restarted", async || local.pid(id).is_some_and(|pid| pid != first)).await;
    eventually("the restarted agent answers", async || proxy.health(&agent).await.is_ok()).await;
    let events = chat_text(&proxy, &agent, "still there?").await;
    assert_eq!(answer(&events), "echo: still there?", "{events:?}");

    // The second crash within the window exceeds the limit of one restart: left down.
    let second = local.pid(id).unwrap();
    kill(second);
    eventually("the agent is left down", async || local.pid(id).is_none() && !process_exists(second)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(local.pid(id), None, "no restart beyond the limit");
    assert_eq!(proxy.health(&agent).await.unwrap_err(), ProxyError::Unreachable);

    // A redeploy brings it back.
    let mut again = spec(2, "Bob", "secret-two");
    again.existing = deployment;
    local.redeploy(&again, &SilentReporter).await.unwrap();
    assert!(proxy.health(&agent).await.is_ok());
    local.shutdown().await;
}

fn kill(pid: u32) {
    let status = std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status().unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn agents_come_back_after_a_platform_restart() {
    let data = tempfile::tempdir().unwrap();
    let llm = ScriptedLlm::start().await;
    let spec = |id, name, secret| spec_for(Some(&llm), id, name, secret);
    let proxy = HttpProxy::new().unwrap();
    let mut specs = vec![spec(3, "Cleo", "secret-three"), spec(4, "Dan", "secret-four")];
    let mut pids = Vec::new();
    {
        let before = deployer(data.path());
        for spec in &mut specs {
            spec.existing = before.deploy(spec, &SilentReporter).await.unwrap();
            pids.push(before.pid(spec.agent_id).unwrap());
        }
        // Dropping the deployer is the platform going away: its agents go with it.
    }
    for (spec, pid) in specs.iter().zip(&pids) {
        let agent = endpoint(&spec.existing, "x");
        eventually("the old agent stopped", async || !process_exists(*pid) && proxy.health(&agent).await.is_err())
            .await;
    }

    // Someone took agent 4's port while the platform was down: it comes back on another one.
    let taken = std::net::TcpListener::bind(specs[1].existing.vm_url.as_deref().unwrap().trim_start_matches("http://"))
        .unwrap();

    let after = deployer(data.path());
    let mut restored = after.restore_with_facts(&specs).await;
    restored.sort_by_key(|(id, _)| *id);
    let cleo = restored[0].1.as_ref().unwrap();
    assert_eq!(cleo.vm_url, specs[0].existing.vm_url, "a free port is kept");
    let dan = restored[1].1.as_ref().unwrap();
    assert_ne!(dan.vm_url, specs[1].existing.vm_url, "a taken port is replaced and reported");
    drop(taken);

    assert_eq!(proxy.health(&endpoint(cleo, "secret-three")).await.unwrap().agent_name, "Cleo");
    assert_eq!(proxy.health(&endpoint(dan, "secret-four")).await.unwrap().agent_name, "Dan");
    let events = chat_text(&proxy, &endpoint(dan, "secret-four"), "back?").await;
    assert_eq!(answer(&events), "echo: back?", "{events:?}");
    after.shutdown().await;
    assert_eq!(after.pid(AgentId(3)), None);
}

#[tokio::test]
async fn an_agent_that_cannot_start_is_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let local = LocalDeployer::new(data.path(), "/bin/false").unwrap();
    let err = local.deploy(&spec_for(None, 5, "Eve", "s"), &SilentReporter).await.unwrap_err();
    assert_eq!(err.step, "start");
    assert!(err.detail.unwrap().contains("exited before listening"));
}

/// Logs written to a file carry no colour codes (the agent colours only a terminal), and deploy
/// errors, which quote the log's tail to users, carry none even from an agent that wrote them.
#[tokio::test]
async fn agent_logs_and_deploy_errors_carry_no_escape_codes() {
    let data = tempfile::tempdir().unwrap();
    let local = deployer(data.path());
    // No model server: the turn fails and the agent logs why.
    let deployment = local.deploy(&spec_for(None, 8, "Plain", "s8"), &SilentReporter).await.unwrap();
    let proxy = HttpProxy::new().unwrap();
    let _ = chat_text(&proxy, &endpoint(&deployment, "s8"), "hello?").await;
    let log_file = local.agent_dir(AgentId(8)).join("agent.log");
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(log.contains("WARN") || log.contains("ERROR"), "the failed turn was logged: {log}");
    assert!(!log.contains('\u{1b}'), "agent.log holds escape codes: {log:?}");
    local.shutdown().await;

    let coloured = data.path().join("coloured-agent");
    std::fs::write(&coloured, "#!/bin/sh\nprintf '\\033[31mERROR\\033[0m cannot start: port taken\\n' >&2\nexit 1\n")
        .unwrap();
    std::fs::set_permissions(&coloured, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let broken = LocalDeployer::new(data.path().join("broken"), &coloured).unwrap();
    let err = broken.deploy(&spec_for(None, 9, "Coloured", "s9"), &SilentReporter).await.unwrap_err();
    let detail = err.detail.unwrap_or_default();
    assert!(detail.contains("ERROR cannot start: port taken"), "{detail}");
    assert!(!detail.contains('\u{1b}'), "{detail:?}");
}

/// Set in the child process of `agents_die_when_the_platform_is_killed`: it plays the platform.
const PLATFORM_DATA_VAR: &str = "BAAL_TEST_PLATFORM_DATA";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_die_when_the_platform_is_killed() {
    if let Some(data) = std::env::var_os(PLATFORM_DATA_VAR) {
        let local = deployer(Path::new(&data));
        local.deploy(&spec_for(None, 6, "Fay", "secret-six"), &SilentReporter).await.unwrap();
        println!("agent pid {}", local.pid(AgentId(6)).unwrap());
        // Deploy from a blocking-pool thread too: that thread exits while the agent must live on.
        let handle = tokio::runtime::Handle::current();
        let data = PathBuf::from(data);
        let (local, pid) = tokio::task::spawn_blocking(move || {
            handle.block_on(async {
                local.deploy(&spec_for(None, 7, "Gus", "secret-seven"), &SilentReporter).await.unwrap();
                let pid = local.pid(AgentId(7)).unwrap();
                (local, pid)
            })
        })
        .await
        .unwrap();
        println!("agent pid {pid}");
        println!("ready {}", data.display());
        std::future::pending::<()>().await;
        drop(local);
        return;
    }

    let data = tempfile::tempdir().unwrap();
    let mut platform = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "agents_die_when_the_platform_is_killed", "--nocapture"])
        .env(PLATFORM_DATA_VAR, data.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(platform.stdout.take().unwrap()));
    let mut pids = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(pid) = line.strip_prefix("agent pid ") {
            pids.push(pid.parse::<u32>().unwrap());
        }
        if line.starts_with("ready") {
            break;
        }
    }
    assert_eq!(pids.len(), 2, "the platform process did not deploy its agents");
    // Past the blocking pool's idle timeout, the agent forked there must still be alive.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(pids.iter().all(|pid| process_exists(*pid)), "an agent died while the platform was alive");

    kill(platform.id().unwrap());
    let _ = platform.wait().await;
    for pid in pids {
        eventually("the agent died with its platform", async || !process_exists(pid)).await;
    }
    // What a platform killed outright leaves (the agents' files and kill scopes) goes with delete.
    let local = deployer(data.path());
    for id in [6, 7] {
        local.destroy(AgentId(id), &Deployment::default(), &SilentReporter).await.unwrap();
    }
}

#[tokio::test]
async fn a_failed_redeploy_rolls_back_to_the_running_settings() {
    let data = tempfile::tempdir().unwrap();
    // A wrapper that refuses one agent name, whatever `baal-agent` itself accepts.
    let wrapper = data.path().join("picky-agent");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ngrep -q '\"AGENT_NAME\":\"Broken\"' \"$2\" && exit 3\nexec '{}' \"$@\"\n",
            agent_bin().display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let local = LocalDeployer::new(data.path(), &wrapper).unwrap();
    let proxy = HttpProxy::new().unwrap();
    let mut hal = spec_for(None, 8, "Hal", "secret-eight");
    hal.existing = local.deploy(&hal, &SilentReporter).await.unwrap();

    let mut broken = spec_for(None, 8, "Broken", "secret-eight");
    broken.existing = hal.existing.clone();
    let err = local.redeploy(&broken, &SilentReporter).await.unwrap_err();
    assert_eq!(err.step, "start", "{err:?}");
    let agent = endpoint(&hal.existing, "secret-eight");
    assert_eq!(proxy.health(&agent).await.unwrap().agent_name, "Hal", "the previous settings run again");
    assert!(local.pid(AgentId(8)).is_some());
    local.shutdown().await;
}

/// `HEARTBEAT_INTERVAL` is an operator setting: the deployer built from Baal's settings hands it
/// to the agent, whose heartbeat then runs within seconds instead of the default half hour.
#[tokio::test]
async fn the_operators_heartbeat_interval_reaches_a_local_agent() {
    let data = tempfile::tempdir().unwrap();
    let settings = Settings::from_vars([
        ("HEARTBEAT_INTERVAL", "1".to_owned()),
        ("BAAL_DATA_DIR", data.path().display().to_string()),
        ("BAAL_AGENT_BIN", agent_bin().display().to_string()),
    ])
    .unwrap();
    let local = LocalDeployer::from_settings(&settings).unwrap();
    let llm = ScriptedLlm::start().await;
    llm.push_when("HEARTBEAT", Reply::text("The feed changed: two new posts."));
    let deployment = local.deploy(&spec_for(Some(&llm), 1, "Ada", "secret-hb"), &SilentReporter).await.unwrap();
    let settings_file = std::fs::read_to_string(local.agent_dir(AgentId(1)).join("settings.json")).unwrap();
    assert!(settings_file.contains(r#""HEARTBEAT_INTERVAL":"1""#), "{settings_file}");
    std::fs::write(local.agent_dir(AgentId(1)).join("workspace/HEARTBEAT.md"), "Check the feed and tell me.\n")
        .unwrap();

    let proxy = HttpProxy::new().unwrap();
    let agent = endpoint(&deployment, "secret-hb");
    let mut delivered = Vec::new();
    eventually("a heartbeat message for the owner", async || {
        delivered.extend(proxy.pending(&agent, Some("1000")).await.unwrap_or_default());
        !delivered.is_empty()
    })
    .await;
    assert_eq!(delivered[0].source, "heartbeat");
    assert!(delivered[0].content.ends_with("The feed changed: two new posts."), "{:?}", delivered[0]);
    local.shutdown().await;
}

fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// What each `bash` call of a turn printed.
fn tool_outputs(events: &[AgentEvent]) -> String {
    events
        .iter()
        .filter_map(|event| match event {
            AgentEvent::ToolResult { output, .. } => Some(output.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Baal as root on a typical VPS keeps its data under /root (0700): an owner's `bash` still runs
/// (pipes, python3), as a uid of the agent's own, and another agent's tools cannot read it.
#[tokio::test]
async fn as_root_bash_runs_as_the_agents_own_identity() {
    if !is_root() {
        eprintln!("SKIPPED: as_root_bash_runs_as_the_agents_own_identity needs root");
        return;
    }
    // A private data directory, as /root/baal-data is: the tools' identity cannot traverse it.
    // Not under /tmp, which each tool call replaces with its agent's scratch directory.
    let data = tempfile::tempdir_in("/var/tmp").unwrap();
    let local = deployer(data.path());
    let llm = ScriptedLlm::start().await;
    let proxy = HttpProxy::new().unwrap();
    let first = local.deploy(&spec_for(Some(&llm), 1, "One", "secret-1"), &SilentReporter).await.unwrap();
    let second = local.deploy(&spec_for(Some(&llm), 2, "Two", "secret-2"), &SilentReporter).await.unwrap();

    llm.push_tool_call(
        "bash",
        r#"{"command":"id -u; echo piped | tr a-z A-Z; python3 -c 'print(6*7)'; echo mine > note.txt; ls -l note.txt"}"#,
    )
    .push_text("done");
    let events = chat_text(&proxy, &endpoint(&first, "secret-1"), "run it").await;
    let out = tool_outputs(&events);
    let uid = baal_core::deploy::local::tools_uid(AgentId(1)).unwrap();
    assert!(out.contains(&format!("{uid}\nPIPED\n42\n")), "{out}");
    assert!(out.contains("-rw-------"), "files are the agent's alone: {out}");

    let theirs = local.agent_dir(AgentId(1));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&theirs), 0o711);
    for file in ["settings.json", "agent.db", "agent.log", "agent.pid"] {
        assert_eq!(mode(&theirs.join(file)), 0o600, "{file}");
    }
    llm.push_tool_call(
        "bash",
        serde_json::json!({"command": format!(
            "id -u; cat {ws}/note.txt; ls {dir}; cat {dir}/settings.json; echo end",
            ws = theirs.join("workspace").display(),
            dir = theirs.display()
        )})
        .to_string(),
    )
    .push_text("done");
    let events = chat_text(&proxy, &endpoint(&second, "secret-2"), "look around").await;
    let out = tool_outputs(&events);
    assert!(out.starts_with(&format!("{}\n", baal_core::deploy::local::tools_uid(AgentId(2)).unwrap())), "{out}");
    assert!(!out.contains("mine") && !out.contains("secret-1"), "{out}");
    assert_eq!(out.matches("Permission denied").count(), 3, "{out}");
    local.shutdown().await;
}

/// Pids of processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " ").contains(needle))
        })
        .collect()
}

/// A tool that leaves its process group (`setsid`) dies when its agent is killed outright in the
/// middle of the call: the call's PID namespace dies with bash, which dies with the agent, and the
/// agent's kill scope (a cgroup with `cgroup.kill`, as root) holds everything it started.
#[tokio::test]
async fn a_setsid_process_dies_when_its_agent_is_killed() {
    let data = tempfile::tempdir().unwrap();
    let local = deployer(data.path());
    let llm = ScriptedLlm::start().await;
    let deployment = local.deploy(&spec_for(Some(&llm), 1, "Ada", "secret-k"), &SilentReporter).await.unwrap();
    setsid_dies_with_its_agent(&local, &llm, &endpoint(&deployment, "secret-k"), AgentId(1)).await;
    local.shutdown().await;
}

/// Starts a call that leaves a `setsid` process behind and keeps running, kills the agent with
/// SIGKILL meanwhile, and waits until the `setsid` process is gone.
async fn setsid_dies_with_its_agent(local: &LocalDeployer, llm: &ScriptedLlm, agent: &AgentEndpoint, id: AgentId) {
    let marker = format!("987.{}{}", std::process::id(), id.0);
    llm.push_tool_call(
        "bash",
        serde_json::json!({"command": format!("setsid sleep {marker} </dev/null >/dev/null 2>&1 & sleep 120")})
            .to_string(),
    )
    .push_text("done");
    let turn = tokio::spawn({
        let agent = agent.clone();
        async move { chat_text(&HttpProxy::new().unwrap(), &agent, "start it").await }
    });
    let mut escaped = Vec::new();
    eventually("the setsid process", async || {
        escaped = processes_with(&format!("sleep {marker}"));
        !escaped.is_empty()
    })
    .await;
    kill(local.pid(id).unwrap());
    eventually("the setsid process dies with its agent", async || escaped.iter().all(|pid| !process_exists(*pid)))
        .await;
    turn.abort();
}

/// What a tenant's `bash` may and may not reach, with the real local deployer and real agents, as
/// whoever runs it (root, or the unprivileged user `the_boundaries_hold_for_an_unprivileged_operator`
/// creates): pipes and python3 work; a secret in the operator's directory and a service on the
/// host's loopback are out of reach; the tools' limits stop a tool that tries to exceed them; a
/// `setsid` process dies with its agent. As root, a server standing for the internet is reached.
async fn tenant_boundaries_hold() {
    const SECRET: &str = "sk-operator-8d1f0c";
    let root = is_root();
    let data = tempfile::tempdir().unwrap();
    // The operator's own files, readable by the operator's uid: only the sandbox keeps them away.
    // Not under /tmp, which each tool call replaces with its agent's scratch directory.
    let operator = tempfile::tempdir_in(if root { "/opt" } else { "/var/tmp" }).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(operator.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let env_file = operator.path().join(".env");
    std::fs::write(&env_file, format!("TELEGRAM_BOT_TOKEN={SECRET}\n")).unwrap();
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let host_service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host_service.local_addr().unwrap().port();
    let internet = outbound_expected().then(|| baal_core::testing::internet::InternetStandIn::start().unwrap());

    let local = deployer(data.path()).with_limits(AgentLimits::new(256, 64, 100));
    let isolation = local.isolation().clone();
    let llm = ScriptedLlm::start().await;
    let deployment = local.deploy(&spec_for(Some(&llm), 1, "Ada", "secret-t"), &SilentReporter).await.unwrap();
    let agent = endpoint(&deployment, "secret-t");
    let proxy = HttpProxy::new().unwrap();
    let reach = |what: &str, host: &str, port: u16| {
        format!("(exec 3<>/dev/tcp/{host}/{port}) 2>/dev/null && echo {what}-reached || echo {what}-refused")
    };
    let internet_probe = internet.as_ref().map_or_else(String::new, |net| {
        format!("; {}; curl -sS -m 5 http://{}/", reach("internet", &net.addr.ip().to_string(), 80), net.addr)
    });
    let command = format!(
        "echo piped | tr a-z A-Z; python3 -c 'print(6*7)'; cat {env}; {loopback}; {gateway}{internet_probe}",
        env = env_file.display(),
        loopback = reach("loopback", "127.0.0.1", port),
        gateway = reach("gateway", "10.0.2.2", port),
    );
    llm.push_tool_call("bash", serde_json::json!({ "command": command }).to_string()).push_text("done");
    let out = tool_outputs(&chat_text(&proxy, &agent, "look around").await);
    assert!(out.starts_with("PIPED\n42\n"), "{out}");
    assert!(!out.contains(SECRET) && out.contains("Permission denied"), "{out}");
    assert!(out.contains("loopback-refused") && out.contains("gateway-refused"), "{out}");
    if internet.is_some() {
        assert!(out.contains("internet-reached"), "{out}");
        assert!(out.contains(baal_core::testing::internet::GREETING), "{out}");
    }

    // Limits: cgroups as root, else rlimits per tool process and per call.
    llm.push_tool_call(
        "bash",
        r#"{"command":"python3 -c 'b = bytearray(600 * 1024 * 1024)' 2>&1 | tail -1; echo status=${PIPESTATUS[0]}"}"#,
    )
    .push_text("done");
    let out = tool_outputs(&chat_text(&proxy, &agent, "fill memory").await);
    assert!(out.contains("MemoryError") || out.contains("status=137"), "{out}");
    assert!(!out.contains("status=0"), "{out}");
    let script = "import os\nn = 0\ntry:\n    for _ in range(200):\n        if os.fork() == 0:\n                              import time; time.sleep(30); os._exit(0)\n        n += 1\nexcept OSError as e:\n                      print('refused after', n, e.strerror)";
    llm.push_tool_call("bash", serde_json::json!({"command": format!("python3 -c \"{script}\"")}).to_string())
        .push_text("done");
    let out = tool_outputs(&chat_text(&proxy, &agent, "fork").await);
    assert!(out.contains("refused after") && out.contains("Resource temporarily unavailable"), "{out}");

    assert_eq!(
        local.tenancy() == Tenancy::Everyone,
        isolation.missing().is_empty(),
        "the gate opens exactly when every boundary holds: {isolation}"
    );
    setsid_dies_with_its_agent(&local, &llm, &agent, AgentId(1)).await;
    local.shutdown().await;
    drop(host_service);
}

/// Whether tools should reach the internet stand-in: as root with slirp4netns and nft installed.
/// `.ci/run` installs both and sets `BAAL_REQUIRE_ISOLATION`, which turns their absence into a
/// failure instead of a skipped half.
fn outbound_expected() -> bool {
    let isolation = Isolation::probe();
    let possible = isolation.root && isolation.slirp4netns.is_some() && isolation.nft.is_some();
    if isolation.root && !possible {
        assert!(
            std::env::var_os("BAAL_REQUIRE_ISOLATION").is_none(),
            "slirp4netns and nft are required here (apt-get install slirp4netns nftables): {isolation}"
        );
        eprintln!("SKIPPED the outbound half: slirp4netns or nft is not installed ({isolation})");
    }
    possible
}

#[tokio::test]
async fn the_boundaries_hold_for_a_root_operator() {
    if !is_root() {
        eprintln!("SKIPPED: the_boundaries_hold_for_a_root_operator needs root");
        return;
    }
    tenant_boundaries_hold().await;
}

/// The same boundaries for an operator who runs Baal as an ordinary user: the test (as root)
/// creates one, copies this test binary and `baal-agent` where it can run them, and runs
/// [`tenant_boundaries_hold`] as that user.
#[test]
fn the_boundaries_hold_for_an_unprivileged_operator() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::CommandExt as _;
    if !is_root() {
        eprintln!("SKIPPED: the_boundaries_hold_for_an_unprivileged_operator creates a user, which needs root");
        return;
    }
    const USER: &str = "baal-test-operator";
    let _ = std::process::Command::new("useradd")
        .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER])
        .status();
    let id = |flag: &str| -> u32 {
        let out = std::process::Command::new("id").args([flag, USER]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or_else(|_| panic!("no user {USER}"))
    };
    let (uid, gid) = (id("-u"), id("-g"));
    let bin = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = |from: &Path, name: &str| {
        let to = bin.path().join(name);
        std::fs::copy(from, &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
        to
    };
    let test_bin = copy(&std::env::current_exe().unwrap(), "local_deployer");
    let agent = copy(&agent_bin(), "baal-agent");
    let out = std::process::Command::new(test_bin)
        .args(["unprivileged_tenant_probe", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("BAAL_AGENT_BIN", agent)
        .env("TMPDIR", "/tmp")
        .current_dir("/")
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap();
    let _ = std::process::Command::new("userdel").arg(USER).status();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "as {USER}:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("1 passed"), "the probe did not run:\n{stdout}");
}

#[tokio::test]
#[ignore = "run by the_boundaries_hold_for_an_unprivileged_operator as a user it creates"]
async fn unprivileged_tenant_probe() {
    assert!(!is_root(), "run through the_boundaries_hold_for_an_unprivileged_operator");
    tenant_boundaries_hold().await;
}

/// A deployer whose agents get `limits`, where this host can apply them per agent (root, and
/// cgroup v2 controllers or writable v1 hierarchies); `None`, with the reason printed, elsewhere.
fn limited_deployer(test: &str, data: &Path, limits: AgentLimits) -> Option<LocalDeployer> {
    let isolation = Isolation::probe();
    if isolation.limit_mechanism().is_none() {
        eprintln!("SKIPPED: {test} needs root and cgroup limits ({isolation})");
        return None;
    }
    Some(deployer(data).with_limits(limits))
}

/// The cgroup directories process `pid` is in for `controller`: its v1 group for that controller
/// where the limits use v1, else its v2 group.
fn group_of(pid: u32, controller: &str) -> PathBuf {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path_in = |hierarchy: &str| {
        cgroups.lines().find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, names, path) = (fields.next()?, fields.next()?, fields.next()?);
            (names.split(',').any(|name| name == hierarchy)).then(|| path.trim_start_matches('/').to_owned())
        })
    };
    match Isolation::probe().limit_mechanism().unwrap() {
        LimitMechanism::CgroupV1(root) => root.join(controller).join(path_in(controller).unwrap()),
        _ => {
            let v2 = cgroups.lines().find_map(|line| line.strip_prefix("0::")).unwrap().trim_start_matches('/');
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            let mount = mounts
                .lines()
                .find_map(|line| {
                    let (fields, fs) = line.split_once(" - ")?;
                    fs.starts_with("cgroup2 ").then(|| fields.split(' ').nth(4).map(PathBuf::from)).flatten()
                })
                .unwrap();
            mount.join(v2)
        }
    }
}

/// Every group (and data-directory group) agent `pid` is limited by, for `no_groups_are_left`.
fn limit_groups(pid: u32) -> Vec<PathBuf> {
    let groups: Vec<PathBuf> = ["memory", "pids", "cpu"].iter().map(|c| group_of(pid, c)).collect();
    for group in &groups {
        let name = group.file_name().unwrap().to_string_lossy();
        assert!(name.starts_with("agent-"), "the agent is not in a group of its own: {}", group.display());
    }
    let parents: Vec<PathBuf> = groups.iter().map(|g| g.parent().unwrap().to_owned()).collect();
    groups.into_iter().chain(parents).collect()
}

fn no_groups_are_left(groups: &[PathBuf]) {
    let left: Vec<&PathBuf> = groups.iter().filter(|g| g.exists()).collect();
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
}

/// A tool that allocates far beyond its agent's memory limit is killed by the kernel; the agent
/// lives on and answers the next turn. Deleting the agent removes its groups.
#[tokio::test]
async fn a_tool_beyond_the_agents_memory_limit_is_killed_and_the_agent_lives_on() {
    let data = tempfile::tempdir().unwrap();
    let test = "a_tool_beyond_the_agents_memory_limit_is_killed_and_the_agent_lives_on";
    let Some(local) = limited_deployer(test, data.path(), AgentLimits::new(64, 512, 100)) else { return };
    let llm = ScriptedLlm::start().await;
    let deployment = local.deploy(&spec_for(Some(&llm), 1, "Ada", "secret-m"), &SilentReporter).await.unwrap();
    let pid = local.pid(AgentId(1)).unwrap();
    let groups = limit_groups(pid);
    let memory = group_of(pid, "memory");
    let limit = ["memory.max", "memory.limit_in_bytes"]
        .iter()
        .find_map(|file| std::fs::read_to_string(memory.join(file)).ok())
        .unwrap();
    assert_eq!(limit.trim(), (64u64 << 20).to_string());

    // The OOM killer takes the group's process with the highest score, here the tool by its
    // size alone. (A tool cannot raise its own `oom_score_adj`: having changed uid, it is not
    // dumpable, so its /proc files are root's.)
    llm.push_tool_call(
        "bash",
        r#"{"command":"python3 -c 'b = b\"x\" * (300 << 20); print(\"allocated\")'; echo exit=$?"}"#,
    )
    .push_text("done");
    let proxy = HttpProxy::new().unwrap();
    let agent = endpoint(&deployment, "secret-m");
    let out = tool_outputs(&chat_text(&proxy, &agent, "allocate").await);
    assert!(out.contains("exit=137") && !out.lines().any(|line| line == "allocated"), "{out}");
    assert_eq!(local.pid(AgentId(1)), Some(pid), "the agent itself was not killed");
    let events = chat_text(&proxy, &agent, "still there?").await;
    assert_eq!(answer(&events), "echo: still there?", "{events:?}");

    local.destroy(AgentId(1), &deployment, &SilentReporter).await.unwrap();
    no_groups_are_left(&groups);
}

/// A tool that forks beyond its agent's process limit is refused (EAGAIN); the agent lives on.
#[tokio::test]
async fn a_tool_beyond_the_agents_process_limit_cannot_fork_and_the_agent_lives_on() {
    let data = tempfile::tempdir().unwrap();
    let test = "a_tool_beyond_the_agents_process_limit_cannot_fork_and_the_agent_lives_on";
    let Some(local) = limited_deployer(test, data.path(), AgentLimits::new(1024, 64, 100)) else { return };
    let llm = ScriptedLlm::start().await;
    let deployment = local.deploy(&spec_for(Some(&llm), 1, "Ada", "secret-p"), &SilentReporter).await.unwrap();
    let pid = local.pid(AgentId(1)).unwrap();
    let groups = limit_groups(pid);

    // Python rather than `sleep &` in a loop: bash retries a refused fork for half a minute.
    let script = "import os, time\n\
                  kids, refused, why = [], 0, ''\n\
                  for _ in range(200):\n\
                  \x20   try:\n\
                  \x20       pid = os.fork()\n\
                  \x20   except OSError as err:\n\
                  \x20       refused, why = refused + 1, err.strerror\n\
                  \x20       continue\n\
                  \x20   if pid == 0:\n\
                  \x20       time.sleep(60)\n\
                  \x20       os._exit(0)\n\
                  \x20   kids.append(pid)\n\
                  for pid in kids:\n\
                  \x20   os.kill(pid, 9)\n\
                  \x20   os.waitpid(pid, 0)\n\
                  print(f'forked={len(kids)} refused={refused}: {why}')\n";
    llm.push_tool_call("bash", serde_json::json!({"command": format!("python3 -c \"{script}\"")}).to_string())
        .push_text("done");
    let proxy = HttpProxy::new().unwrap();
    let agent = endpoint(&deployment, "secret-p");
    let out = tool_outputs(&chat_text(&proxy, &agent, "fork").await);
    let forked: usize = out
        .split("forked=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(forked < 64 && out.contains("Resource temporarily unavailable"), "{out}");
    assert_eq!(local.pid(AgentId(1)), Some(pid), "the agent itself was not killed");
    let events = chat_text(&proxy, &agent, "still there?").await;
    assert_eq!(answer(&events), "echo: still there?", "{events:?}");

    local.shutdown().await;
    no_groups_are_left(&groups);
}

/// Tools get no more CPU than their agent's share. Proven by the kernel's own accounting, not by
/// timing: two busy loops under a 20% quota are throttled (`nr_throttled` in the group's cpu.stat).
#[tokio::test]
async fn tools_are_throttled_to_the_agents_cpu_share() {
    let data = tempfile::tempdir().unwrap();
    let test = "tools_are_throttled_to_the_agents_cpu_share";
    let Some(local) = limited_deployer(test, data.path(), AgentLimits::new(1024, 512, 20)) else { return };
    let llm = ScriptedLlm::start().await;
    let deployment = local.deploy(&spec_for(Some(&llm), 1, "Ada", "secret-c"), &SilentReporter).await.unwrap();
    let pid = local.pid(AgentId(1)).unwrap();
    let groups = limit_groups(pid);
    let cpu = group_of(pid, "cpu");
    let throttled = || {
        let stat = std::fs::read_to_string(cpu.join("cpu.stat")).unwrap();
        stat.lines()
            .find_map(|line| line.strip_prefix("nr_throttled ")?.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no nr_throttled in {stat}"))
    };
    let before = throttled();

    llm.push_tool_call(
        "bash",
        r#"{"command":"for i in 1 2; do timeout 1 sh -c 'while :; do :; done' & done; wait; echo spun"}"#,
    )
    .push_text("done");
    let proxy = HttpProxy::new().unwrap();
    let out = tool_outputs(&chat_text(&proxy, &endpoint(&deployment, "secret-c"), "spin").await);
    assert!(out.contains("spun"), "{out}");
    assert!(throttled() > before, "the busy loops were never throttled");

    local.shutdown().await;
    no_groups_are_left(&groups);
}
