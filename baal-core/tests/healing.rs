//! Healing on loopback with real processes: the platform's health checks, a real `LocalDeployer`
//! running real `baal-agent` processes, the HTTP proxy and a `MemoryMessenger`, with intervals
//! shortened through `PlatformConfig`. An agent killed outright is marked `down`, its owner told,
//! repaired (on a fresh port when its own is taken) and announced back; a repair that keeps
//! failing gives up once; a failed deployment releases what it holds; a crashed agent whose port
//! was taken comes back on another; its log is rotated by size; `down` is stored on both backends.
//!
//! Needs a built `baal-agent` (`cargo build --workspace`): `BAAL_AGENT_BIN`, else next to the test
//! binary, else on `PATH`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baal_core::deploy::local::{LocalDeployer, RestartLimit, find_agent_binary};
use baal_core::domain::{Agent, AgentStatus, Deployment, EventOutcome, EventStep, NewAgent, UserId};
use baal_core::platform::{Input, Platform, PlatformConfig};
use baal_core::proxy::http::{HttpProxy, HttpProxyOptions};
use baal_core::secrets::SecretBox;
use baal_core::store::{AgentFilter, Store};
use baal_core::testing::db::{self, TestDb};
use baal_core::testing::messenger::MemoryMessenger;
use baal_core::testing::openai::ScriptedLlm;
use sea_orm::{ConnectionTrait, Statement};
use secrecy::SecretString;

const OWNER: UserId = 601;
/// Short enough for a test, long enough that a check of a live agent never times out.
const INTERVAL: Duration = Duration::from_millis(150);

fn agent_bin() -> PathBuf {
    let explicit = std::env::var_os("BAAL_AGENT_BIN").map(PathBuf::from);
    find_agent_binary(explicit.as_deref())
        .unwrap_or_else(|err| panic!("{err} (for this test: cargo build --workspace)"))
}

/// A copy of `baal-agent` the test can take away and put back, as a broken host would.
fn own_agent_bin(dir: &Path) -> PathBuf {
    let copy = dir.join("baal-agent");
    std::fs::copy(agent_bin(), &copy).unwrap();
    copy
}

async fn send(platform: &Platform, user: UserId, text: &str) {
    platform.handle(Input::from_text(user, user, text)).await.unwrap();
}

async fn press(platform: &Platform, messenger: &MemoryMessenger, user: UserId, needle: &str) {
    let (data, message) = messenger
        .find_button(user, needle)
        .unwrap_or_else(|| panic!("no button {needle:?} in {}", messenger.transcript(user)));
    platform.handle(Input::button(user, user, data, message, "press")).await.unwrap();
}

fn kill(pid: u32) {
    let status = std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status().unwrap();
    assert!(status.success());
}

/// Polls until `check` holds; a hang guard, not a timing assertion.
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(90);
    while !check().await {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

struct Healing {
    platform: Platform,
    deployer: Arc<LocalDeployer>,
    messenger: Arc<MemoryMessenger>,
    store: Arc<dyn Store>,
    llm: ScriptedLlm,
    _data: tempfile::TempDir,
    _db: TestDb,
}

impl Healing {
    /// The platform with health checks every [`INTERVAL`], `deployer` as built by `make` in a
    /// fresh data directory, and a proxy that tries each connection once (a dead agent is told
    /// at once, not after retries).
    async fn start(config: PlatformConfig, make: impl FnOnce(&Path) -> LocalDeployer) -> Healing {
        let llm = ScriptedLlm::start().await;
        let test_db = db::sqlite().await;
        let data = tempfile::tempdir().unwrap();
        let deployer = Arc::new(make(data.path()));
        let messenger = Arc::new(MemoryMessenger::new());
        let config = config
            .with_libertai_api_key(SecretString::from("sk-operator-test"))
            .with_libertai_api_base_url(llm.base_url())
            .with_edit_interval(Duration::ZERO)
            .with_admin_user_ids(vec![OWNER])
            .with_health_check_interval(INTERVAL)
            .with_deploy_lease(Duration::from_secs(5));
        let mut options = HttpProxyOptions::default();
        options.connect_attempts = 1;
        options.short_timeout = Duration::from_secs(3);
        let proxy = HttpProxy::with_options(options).unwrap();
        let store = test_db.shared();
        let platform = Platform::new(
            config,
            store.clone(),
            deployer.clone(),
            Arc::new(proxy),
            messenger.clone(),
            Arc::new(SecretBox::from_encoded_key(&"ef".repeat(32)).unwrap()),
        );
        platform.start().await.unwrap();
        Healing { platform, deployer, messenger, store, llm, _data: data, _db: test_db }
    }

    /// Creates an agent through the wizard and waits for its deployment to end.
    async fn create(&self, name: &str) -> Agent {
        self.llm.push_text(format!("Hello, I am {name}."));
        send(&self.platform, OWNER, "/create").await;
        send(&self.platform, OWNER, name).await;
        press(&self.platform, &self.messenger, OWNER, "create_model:qwen3-coder-next").await;
        press(&self.platform, &self.messenger, OWNER, "create_confirm").await;
        let agent = self.store.list_agents(&AgentFilter::all().owner(OWNER)).await.unwrap().pop().unwrap();
        eventually("the deployment ends", || async {
            let status = self.agent(&agent).await.status;
            status == AgentStatus::Running || status == AgentStatus::Failed
        })
        .await;
        // The introduction turn follows the deployment: done before the test breaks anything.
        self.platform.wait_idle().await;
        self.agent(&agent).await
    }

    async fn agent(&self, agent: &Agent) -> Agent {
        self.store.agent_get(agent.id).await.unwrap().unwrap()
    }

    /// How many of the owner's messages contain `needle`.
    fn told(&self, needle: &str) -> usize {
        self.messenger.bodies(OWNER).iter().filter(|body| body.contains(needle)).count()
    }

    async fn events(&self, agent: &Agent, step: EventStep, outcome: EventOutcome) -> usize {
        let events = self.store.events_for(agent.id).await.unwrap();
        events.iter().filter(|e| e.step == step && e.outcome == outcome).count()
    }
}

fn port_of(deployment: &Deployment) -> u16 {
    let url = deployment.vm_url.as_deref().expect("a local agent has an address");
    url.rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap()
}

/// Another program on `port`: it listens (so nobody else can bind it, even past the dead agent's
/// connections in TIME_WAIT) and closes every connection at once, so the platform's check of the
/// old address fails fast, as it would for a dead process.
struct Squatter(tokio::task::JoinHandle<()>);

impl Drop for Squatter {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn occupy(port: u16) -> std::io::Result<Squatter> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    Ok(Squatter(tokio::spawn(async move {
        while let Ok((connection, _)) = listener.accept().await {
            drop(connection);
        }
    })))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_goes_down_is_repaired_on_a_fresh_port_and_comes_back() {
    // No crash restarts: the agent stays dead until the platform notices and repairs it.
    let heal = Healing::start(PlatformConfig::default(), |data| {
        LocalDeployer::new(data.join("data"), agent_bin())
            .unwrap()
            .with_restart_limit(RestartLimit::new(0, Duration::from_secs(600)))
    })
    .await;
    let agent = heal.create("Phoenix").await;
    assert_eq!(agent.status, AgentStatus::Running, "{}", heal.messenger.transcript(OWNER));
    let old_port = port_of(&agent.deployment);
    let old_pid = heal.deployer.pid(agent.id).unwrap();

    kill(old_pid);
    // Once the process is gone its port is free; taking it forces the repair onto another.
    let deadline = Instant::now() + Duration::from_secs(30);
    let _held = loop {
        match occupy(old_port) {
            Ok(socket) => break socket,
            Err(err) => assert!(Instant::now() < deadline, "the dead agent's port stays busy: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };

    eventually("the owner hears it is back", || async { heal.told("is back") == 1 }).await;
    assert_eq!(heal.told("stopped answering; Baal is bringing it back"), 1, "{}", heal.messenger.transcript(OWNER));
    let back = heal.agent(&agent).await;
    assert_eq!(back.status, AgentStatus::Running);
    assert_ne!(port_of(&back.deployment), old_port, "the repair moved it off the taken port");
    let new_pid = heal.deployer.pid(agent.id).expect("the repaired agent runs");
    assert_ne!(new_pid, old_pid);
    assert_eq!(heal.events(&agent, EventStep::Repair, EventOutcome::Started).await, 1);
    assert_eq!(heal.events(&agent, EventStep::Repair, EventOutcome::Succeeded).await, 1);
    assert!(!heal.messenger.transcript(OWNER).contains("could not be carried over"), "a local repair never moves");

    // It answers at its new address, and later rounds find nothing to tell.
    heal.llm.push_text("Still here.");
    send(&heal.platform, OWNER, "Are you there?").await;
    eventually("the repaired agent answers", || async { heal.told("Still here.") == 1 }).await;
    tokio::time::sleep(INTERVAL * 4).await;
    assert_eq!(heal.told("stopped answering"), 1, "{}", heal.messenger.transcript(OWNER));
    assert_eq!(heal.told("is back"), 1);
    heal.platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repairs_that_keep_failing_give_up_once_and_repair_brings_it_back() {
    let bin_dir = tempfile::tempdir().unwrap();
    let bin = own_agent_bin(bin_dir.path());
    let heal = Healing::start(PlatformConfig::default(), |data| {
        LocalDeployer::new(data.join("data"), &bin)
            .unwrap()
            .with_restart_limit(RestartLimit::new(0, Duration::from_secs(600)))
    })
    .await;
    let agent = heal.create("Icarus").await;
    assert_eq!(agent.status, AgentStatus::Running, "{}", heal.messenger.transcript(OWNER));

    // The program is gone: every repair fails to start it.
    let hidden = bin_dir.path().join("hidden");
    std::fs::rename(&bin, &hidden).unwrap();
    kill(heal.deployer.pid(agent.id).unwrap());
    eventually("Baal gives up", || async { heal.told("could not bring") == 1 }).await;
    let down = heal.agent(&agent).await;
    assert_eq!(down.status, AgentStatus::Down);
    assert_eq!(heal.told("stopped answering; Baal is bringing it back"), 1);
    assert!(heal.messenger.transcript(OWNER).contains(&format!("/repair {}", agent.id)));
    assert_eq!(heal.events(&agent, EventStep::Repair, EventOutcome::Failed).await, 5, "the cap");

    // Down says so: in /list, /dashboard and /account, and to someone opening it.
    for command in ["/list", "/dashboard"] {
        heal.messenger.clear();
        send(&heal.platform, OWNER, command).await;
        let transcript = heal.messenger.transcript(OWNER);
        assert!(transcript.contains("Icarus") && transcript.contains("down — Baal is repairing it"), "{transcript}");
    }
    send(&heal.platform, OWNER, "/account").await;
    assert!(heal.messenger.transcript(OWNER).contains("🟠 1 down"), "{}", heal.messenger.transcript(OWNER));
    send(&heal.platform, OWNER, &format!("/start {}", agent.id)).await;
    assert!(heal.messenger.transcript(OWNER).contains("isn't ready yet"), "{}", heal.messenger.transcript(OWNER));

    // Later rounds neither try again nor tell again.
    tokio::time::sleep(INTERVAL * 6).await;
    assert_eq!(heal.events(&agent, EventStep::Repair, EventOutcome::Started).await, 5);
    assert_eq!(heal.told("could not bring"), 0, "told once, before the clear");

    // The owner's /repair deploys it again; health checks then see it running.
    std::fs::rename(&hidden, &bin).unwrap();
    heal.llm.push_text("Hello again.");
    send(&heal.platform, OWNER, &format!("/repair {}", agent.id)).await;
    heal.platform.wait_idle().await;
    eventually("the repaired agent runs", || async { heal.agent(&agent).await.status == AgentStatus::Running }).await;
    assert!(heal.deployer.pid(agent.id).is_some());
    heal.platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatting_with_a_down_agent_says_it_is_being_repaired() {
    let bin_dir = tempfile::tempdir().unwrap();
    let bin = own_agent_bin(bin_dir.path());
    // Checks every interval, but repairs back off: the agent stays down while the test chats.
    let heal = Healing::start(PlatformConfig::default(), |data| {
        LocalDeployer::new(data.join("data"), &bin)
            .unwrap()
            .with_restart_limit(RestartLimit::new(0, Duration::from_secs(600)))
    })
    .await;
    let agent = heal.create("Echo").await;
    std::fs::remove_file(&bin).unwrap();
    kill(heal.deployer.pid(agent.id).unwrap());
    eventually("it is marked down", || async { heal.agent(&agent).await.status == AgentStatus::Down }).await;
    heal.messenger.clear();
    send(&heal.platform, OWNER, "Hello?").await;
    let transcript = heal.messenger.transcript(OWNER);
    assert!(transcript.contains("Echo stopped answering; Baal is repairing it."), "{transcript}");
    assert!(!transcript.to_lowercase().contains("connect"), "no raw connection error: {transcript}");
    heal.platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_deployment_releases_what_it_holds_after_the_setting() {
    // A program that exits at once: every deployment fails after its files were made.
    let config = PlatformConfig::default().with_release_failed_after(Duration::from_secs(1));
    let heal = Healing::start(config, |data| LocalDeployer::new(data.join("data"), "/bin/false").unwrap()).await;
    let agent = heal.create("Broken").await;
    assert_eq!(agent.status, AgentStatus::Failed, "{}", heal.messenger.transcript(OWNER));
    assert!(agent.deployment.instance_hash.is_some(), "the failed deployment holds something");
    let dir = heal.deployer.agent_dir(agent.id);
    assert!(dir.exists());

    eventually("the owner hears of the release", || async { heal.told("released what it was deployed on") == 1 }).await;
    let released = heal.agent(&agent).await;
    assert_eq!(released.status, AgentStatus::Failed, "the agent stays, for /repair");
    assert_eq!(released.deployment, Deployment::default(), "facts cleared: /repair deploys afresh");
    assert!(!dir.exists(), "the deployer tore it down");
    assert_eq!(heal.events(&agent, EventStep::Release, EventOutcome::Succeeded).await, 1);
    assert!(heal.messenger.transcript(OWNER).contains(&format!("/repair {}", agent.id)));
    tokio::time::sleep(INTERVAL * 6).await;
    assert_eq!(heal.told("released what it was deployed on"), 1, "told once");
    assert_eq!(heal.events(&agent, EventStep::Release, EventOutcome::Started).await, 1);
    heal.platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_agent_whose_port_was_taken_restarts_on_another_and_the_platform_follows() {
    // Crash restarts on (the default), and a log small enough to rotate at every start.
    let heal = Healing::start(PlatformConfig::default(), |data| {
        LocalDeployer::new(data.join("data"), agent_bin()).unwrap().with_log_max_bytes(64)
    })
    .await;
    let agent = heal.create("Hydra").await;
    assert_eq!(agent.status, AgentStatus::Running, "{}", heal.messenger.transcript(OWNER));
    let old_port = port_of(&agent.deployment);
    let first_pid = heal.deployer.pid(agent.id).unwrap();

    // Kill it and take its port before the supervisor restarts it (it waits half a second); if
    // the restart wins anyway, it came back on the old port, and the test kills it again.
    let mut held = None;
    for _ in 0..4 {
        let mut pid = None;
        eventually("the agent runs", || async { heal.deployer.pid(agent.id).is_some() }).await;
        if let Some(running) = heal.deployer.pid(agent.id) {
            kill(running);
            pid = Some(running);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while held.is_none() && Instant::now() < deadline {
            held = occupy(old_port).ok();
            let restarted = heal.deployer.pid(agent.id).is_some_and(|now| Some(now) != pid);
            if held.is_some() || restarted {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if held.is_some() {
            break;
        }
    }
    let _held = held.expect("the port could be taken while the agent was down");
    eventually("the supervisor restarts it", || async {
        heal.deployer.pid(agent.id).is_some_and(|pid| pid != first_pid)
    })
    .await;

    eventually("the platform follows it to its new port", || async {
        let now = heal.agent(&agent).await;
        now.status == AgentStatus::Running && port_of(&now.deployment) != old_port
    })
    .await;
    heal.llm.push_text("New address, same me.");
    send(&heal.platform, OWNER, "Still there?").await;
    heal.platform.wait_idle().await;
    assert_eq!(heal.told("New address, same me."), 1, "{}", heal.messenger.transcript(OWNER));

    // Its output went through Baal into a rotated log: one older file kept, none beyond.
    let dir = heal.deployer.agent_dir(agent.id);
    assert!(dir.join("agent.log.1").exists(), "rotated");
    assert!(!dir.join("agent.log.2").exists(), "one older log kept");
    for file in ["agent.log", "agent.log.1"] {
        let meta = std::fs::metadata(dir.join(file)).unwrap();
        assert!(meta.len() <= 64 + 8192, "{file} is {} bytes", meta.len());
        #[cfg(unix)]
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o600, "{file}");
    }
    heal.platform.shutdown().await;
}

/// `down` is a stored status like the others: written, read back and filtered on.
async fn down_round_trips(test_db: &TestDb) {
    let store = test_db.store();
    store.user_get_or_create(1, None).await.unwrap();
    let agent = store.agent_create(NewAgent::new(1, "Lazarus", "p", "glm-4.7")).await.unwrap();
    store.agent_set_status(agent.id, AgentStatus::Down).await.unwrap();
    assert_eq!(store.agent_get(agent.id).await.unwrap().unwrap().status, AgentStatus::Down);
    let down = store.list_agents(&AgentFilter::all().status(AgentStatus::Down)).await.unwrap();
    assert_eq!(down.iter().map(|a| a.id).collect::<Vec<_>>(), [agent.id]);
    let conn = store.connection();
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            conn.get_database_backend(),
            "SELECT status FROM agents WHERE id = $1",
            [agent.id.0.into()],
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<String>("", "status").unwrap(), "down", "stored as its word");
    assert_eq!("down".parse::<AgentStatus>().unwrap(), AgentStatus::Down);
}

#[tokio::test]
async fn sqlite_stores_down() {
    down_round_trips(&db::sqlite().await).await;
}

#[tokio::test]
async fn postgres_stores_down() {
    let Some(test_db) = db::postgres().await else { return };
    down_round_trips(&test_db).await;
}
