//! Fault injection with real processes on loopback: the platform runs in a process of its own
//! (this test binary started again as `platform_process`), talks to a real `baal-agent` started by
//! the test (so the agent outlives the platform, as every Aleph agent does), and is killed with
//! SIGKILL mid-turn. Each case prints what it killed and what it observed.
//!
//! The agent runs either as a process the test starts, or on the loopback Aleph set-up: shipped
//! by the Aleph deployer over SSH to a "VM" (a directory tree whose `systemctl` stand-in runs it),
//! its INSTANCE posted to a fake CCN, with the platform process using that deployer too.
//!
//! Needs a built `baal-agent` (`cargo build --workspace`): `BAAL_AGENT_BIN`, else next to the test
//! binary, else on `PATH`.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use baal_core::deploy::aleph::sign::EthAccount;
use baal_core::deploy::aleph::{AlephConfig, AlephDeployer, VmLayout};
use baal_core::deploy::local::find_agent_binary;
use baal_core::deploy::{AgentSpec, DeployError, DeployReporter, DeployStep, Deployer, SilentReporter};
use baal_core::domain::{AgentId, AgentStatus, Deployment, NewAgent, Payer, UserId};
use baal_core::platform::{
    Button, ChatId, Input, InputKind, MessageRef, Messenger, MessengerError, OutgoingFile, Platform, PlatformConfig,
    Text,
};
use baal_core::proxy::http::HttpProxy;
use baal_core::secrets::{SealContext, SecretBox};
use baal_core::store::{PoolStore, SqlStore, Store};
use baal_core::testing::aleph::{CrnBehaviour, FakeAleph, FakeCrn, loopback_timeouts};
use baal_core::testing::openai::{Reply, ScriptedLlm};
use baal_core::testing::ssh::{SshTarget, VmSandbox, free_port};
use secrecy::SecretString;
use serde_json::{Value, json};

const OWNER: UserId = 701;
const VISITOR: UserId = 702;
const KEY: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";
const AGENT_SECRET: &str = "faults-agent-secret";
/// Public Anvil/Hardhat dev key #0; never funded.
const DEV_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

// ---- the platform process ----

/// A deployer for agents that run elsewhere and outlive the platform (as Aleph VMs do): it
/// deploys nothing, and after a restart finds them where they were.
struct Adopted;

#[async_trait]
impl Deployer for Adopted {
    fn name(&self) -> &'static str {
        "adopted"
    }
    fn steps(&self) -> &'static [DeployStep] {
        &[]
    }
    async fn deploy(&self, _: &AgentSpec, _: &dyn DeployReporter) -> Result<Deployment, DeployError> {
        Err(DeployError::new("deploy", "this test's agents are started by the test"))
    }
    async fn redeploy(&self, _: &AgentSpec, _: &dyn DeployReporter) -> Result<Deployment, DeployError> {
        Err(DeployError::new("deploy", "this test's agents are started by the test"))
    }
    async fn destroy(&self, _: AgentId, _: &Deployment, _: &dyn DeployReporter) -> Result<(), DeployError> {
        Ok(())
    }
}

/// Prints every messenger call as one `MSG {json}` line, for the test to read.
struct LineMessenger {
    next_id: AtomicI64,
}

impl LineMessenger {
    fn print(&self, op: &str, message: MessageRef, text: Option<&Text>) {
        let buttons: Vec<String> = text
            .map(|t| {
                t.buttons
                    .iter()
                    .flatten()
                    .filter_map(|b| match b {
                        Button::Callback { data, .. } => Some(data.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let line = json!({
            "op": op, "chat": message.chat_id, "id": message.message_id,
            "body": text.map(|t| t.body.clone()), "buttons": buttons,
        });
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "MSG {line}");
        let _ = out.flush();
    }
}

#[async_trait]
impl Messenger for LineMessenger {
    async fn send(&self, chat: ChatId, text: Text) -> Result<MessageRef, MessengerError> {
        let message = MessageRef { chat_id: chat, message_id: self.next_id.fetch_add(1, Ordering::Relaxed) };
        self.print("send", message, Some(&text));
        Ok(message)
    }
    async fn edit(&self, message: MessageRef, text: Text) -> Result<(), MessengerError> {
        self.print("edit", message, Some(&text));
        Ok(())
    }
    async fn delete(&self, message: MessageRef) -> Result<(), MessengerError> {
        self.print("delete", message, None);
        Ok(())
    }
    async fn typing(&self, _: ChatId) -> Result<(), MessengerError> {
        Ok(())
    }
    async fn send_file(&self, chat: ChatId, file: OutgoingFile) -> Result<MessageRef, MessengerError> {
        let message = MessageRef { chat_id: chat, message_id: self.next_id.fetch_add(1, Ordering::Relaxed) };
        self.print("file", message, Some(&Text::plain(file.file_name)));
        Ok(message)
    }
    async fn answer_press(&self, _: &str, notice: &str) -> Result<(), MessengerError> {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "MSG {}", json!({"op": "notice", "body": notice}));
        Ok(())
    }
}

/// The platform process: started by the cases below with `FAULTS_DATABASE_URL` set; reads
/// `text <user> <words>` and `press <user> <message id> <data>` lines on stdin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the platform process the fault suite starts and kills, not a test of its own"]
async fn platform_process() {
    let Ok(url) = std::env::var("FAULTS_DATABASE_URL") else { return };
    baal_core::install_crypto_provider();
    let store = Arc::new(SqlStore::open(&url).await.unwrap());
    // Message ids stay unique across the processes of one case, as Telegram's are.
    let first_id = (chrono::Utc::now().timestamp_micros() % 1_000_000_000_000) * 10;
    let messenger = Arc::new(LineMessenger { next_id: AtomicI64::new(first_id) });
    let config = PlatformConfig::default()
        .with_edit_interval(Duration::ZERO)
        .with_pending_poll_interval(Duration::from_millis(200))
        .with_bot_username("baal_faults_bot")
        .with_visitor_tools_allowed(vec!["bash".into()]);
    // The loopback Aleph set-up's deployer when the case runs its agent there.
    let deployer: Arc<dyn Deployer> = match std::env::var("FAULTS_ALEPH") {
        Ok(json) => {
            let set_up: AlephSetUp = serde_json::from_str(&json).unwrap();
            Arc::new(set_up.deployer(store.clone()))
        }
        Err(_) => Arc::new(Adopted),
    };
    let platform = Arc::new(Platform::new(
        config,
        store,
        deployer,
        Arc::new(HttpProxy::new().unwrap()),
        messenger,
        Arc::new(SecretBox::from_encoded_key(KEY).unwrap()),
    ));
    platform.start().await.unwrap();
    println!("READY");
    // Read on a thread of its own: the runtime's workers stay free for the platform.
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    while let Some(line) = lines.recv().await {
        let mut words = line.splitn(4, ' ');
        let (verb, user) = (words.next().unwrap_or(""), words.next().and_then(|u| u.parse::<UserId>().ok()));
        let Some(user) = user else { continue };
        let input = match verb {
            "text" => Input::from_text(user, user, &words.collect::<Vec<_>>().join(" ")),
            "press" => {
                let id: i64 = words.next().and_then(|i| i.parse().ok()).unwrap_or(0);
                let data = words.next().unwrap_or("").to_owned();
                let message = MessageRef { chat_id: user, message_id: id };
                Input::new(user, user, InputKind::Button { data, message, press_id: "press".into() })
            }
            _ => continue,
        };
        // Each input on its own task, as a front-end does: `/stop` must not wait for the turn.
        let platform = platform.clone();
        tokio::spawn(async move { platform.handle(input).await });
    }
}

/// How the platform process reaches the loopback Aleph set-up the case made (the CCN, the CRN
/// list, the SSH key and the "VM"'s layout), so it deploys, repairs and deletes as a real bot would.
#[derive(serde::Serialize, serde::Deserialize)]
struct AlephSetUp {
    api_url: String,
    crn_list_url: String,
    ssh_pubkey: String,
    ssh_key_path: PathBuf,
    agent_bin: PathBuf,
    root: String,
    agent_user: String,
    agent_port: u16,
    stand_ins: String,
}

impl AlephSetUp {
    fn deployer(&self, pool: Arc<dyn PoolStore>) -> AlephDeployer {
        let mut config = AlephConfig::new(
            &self.api_url,
            &self.crn_list_url,
            &self.api_url,
            &self.ssh_pubkey,
            &self.ssh_key_path,
            &self.agent_bin,
        );
        let mut layout = VmLayout::default();
        layout.root = self.root.clone();
        layout.agent_user = self.agent_user.clone();
        layout.agent_port = self.agent_port;
        layout.path_prefix = Some(self.stand_ins.clone());
        layout.health_seconds = 10;
        config.layout = layout;
        config.timeouts = loopback_timeouts();
        let account = EthAccount::from_hex(&SecretString::from(DEV_KEY)).unwrap();
        AlephDeployer::new(account, config, pool).unwrap()
    }
}

// ---- the cases' side ----

/// The platform process, with what it printed.
struct PlatformProcess {
    child: Child,
    stdin: ChildStdin,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl PlatformProcess {
    fn start(database_url: &str, aleph: Option<&AlephSetUp>, seen: Arc<Mutex<Vec<Value>>>) -> PlatformProcess {
        let mut command = Command::new(std::env::current_exe().unwrap());
        if let Some(aleph) = aleph {
            command.env("FAULTS_ALEPH", serde_json::to_string(aleph).unwrap());
        }
        let mut child = command
            .args(["--exact", "platform_process", "--ignored", "--nocapture", "--test-threads=1"])
            .env("FAULTS_DATABASE_URL", database_url)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the platform process");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sink = seen.clone();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                // libtest starts the output with "test platform_process ... " and no newline, so
                // the first line may carry that before what the process printed.
                if line.ends_with("READY") {
                    let _ = ready_tx.send(());
                } else if let Some(at) = line.find("MSG ")
                    && let Ok(value) = serde_json::from_str(&line[at + 4..])
                {
                    sink.lock().unwrap().push(value);
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(60)).expect("the platform process started");
        PlatformProcess { child, stdin, seen }
    }

    fn say(&mut self, user: UserId, text: &str) {
        writeln!(self.stdin, "text {user} {text}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn press(&mut self, user: UserId, message: i64, data: &str) {
        writeln!(self.stdin, "press {user} {message} {data}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// SIGKILL: no shutdown, no cleanup; the agent sees its connection drop.
    fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits until one of the messages seen so far satisfies `check`; returns it.
    fn wait_for(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(found) = self.seen.lock().unwrap().iter().find(|v| check(v)).cloned() {
                return found;
            }
            assert!(Instant::now() < deadline, "gave up waiting: {what}; seen: {:#?}", self.seen.lock().unwrap());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PlatformProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn body(v: &Value) -> &str {
    v["body"].as_str().unwrap_or("")
}

/// A `baal-agent` the test starts (so the platform's death does not take it along).
struct AgentProcess {
    child: Child,
    url: String,
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent_binary() -> PathBuf {
    let explicit = std::env::var_os("BAAL_AGENT_BIN").map(PathBuf::from);
    find_agent_binary(explicit.as_deref()).unwrap_or_else(|err| panic!("{err} (cargo build --workspace)"))
}

fn start_agent(llm: &ScriptedLlm, dir: &Path, extra: &[(&str, &str)]) -> AgentProcess {
    let mut child = Command::new(agent_binary())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", "0")
        .env("BIND_ADDR", "127.0.0.1")
        .env("DB_PATH", dir.join("agent.db"))
        .env("WORKSPACE_PATH", dir.join("workspace"))
        .env("LIBERTAI_API_BASE_URL", llm.base_url())
        .env("LIBERTAI_API_KEY", "faults-llm-key")
        .env("AGENT_SECRET", AGENT_SECRET)
        .env("AGENT_NAME", "Durable")
        .env("OWNER_CHAT_ID", OWNER.to_string())
        .env("VISITOR_TOOLS", "bash")
        .env("HEARTBEAT_INTERVAL", "0")
        .env("RUST_LOG", "warn")
        .envs(extra.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start baal-agent");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected {line:?}")).to_owned();
    AgentProcess { child, url: format!("http://{addr}") }
}

/// A database with the owner, a visitor who has talked to the agent, and the agent, not yet
/// deployed (the owner's key pays, so no free tier is in the way).
async fn database(dir: &Path) -> (String, SqlStore, AgentId, String) {
    let database_url = format!("sqlite://{}?mode=rwc", dir.join("baal.db").display());
    let store = SqlStore::open(&database_url).await.unwrap();
    store.user_get_or_create(OWNER, Some("owner")).await.unwrap();
    store.user_get_or_create(VISITOR, Some("visitor")).await.unwrap();
    let agent = store.agent_create(NewAgent::new(OWNER, "Durable", "Be brief.", "qwen3-coder-next")).await.unwrap();
    let secrets = SecretBox::from_encoded_key(KEY).unwrap();
    let sealed = secrets.seal_str_for(&SealContext::agent_token(agent.id), AGENT_SECRET).unwrap();
    store.agent_set_token(agent.id, &sealed).await.unwrap();
    store.agent_set_payer(agent.id, Payer::Owner).await.unwrap();
    // The visitor's long job needs `bash`, which the platform process lets owners give.
    store.agent_set_visitor_tools(agent.id, &["bash".to_owned()]).await.unwrap();
    (database_url, store, agent.id, agent.slug)
}

/// Records the agent as deployed with `deployment` and running, as a finished deployment does.
async fn record_running(store: &SqlStore, id: AgentId, deployment: &Deployment) {
    store.agent_set_deployment(id, deployment).await.unwrap();
    store.agent_set_status(id, AgentStatus::Running).await.unwrap();
}

/// The facts of an agent the test started itself at `url`.
fn adopted(url: &str) -> Deployment {
    let mut deployment = Deployment::default();
    deployment.instance_hash = Some("adopted".into());
    deployment.vm_url = Some(url.to_owned());
    deployment
}

/// A tool turn that takes a few seconds: a first completion with text and a `sleep` (which
/// writes its pid to `tool.pid` in the agent's workspace, the one place its tools may write),
/// then the answer.
fn script_long_turn(llm: &ScriptedLlm) {
    let command = "echo started > tool.pid; sleep 4; echo done > tool.done; echo slept";
    let arguments = json!({ "command": command }).to_string();
    llm.push(Reply::tool_calls(Some("Working on it…"), &[("bash", arguments.as_str())]));
    llm.push_text("All done: the long job finished.");
}

/// Waits for the tool to have written `file` (it has started).
fn wait_for_file(file: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !file.exists() {
        assert!(Instant::now() < deadline, "the tool never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where a case's agent runs; dropping it stops the agent.
enum Host {
    /// A `baal-agent` process the test started (held so that it lives as long as the case).
    Process(#[allow(dead_code)] AgentProcess),
    /// The loopback Aleph set-up, its "VM" running the real agent.
    Aleph(Box<AlephVm>),
}

/// A fake CCN with one healthy CRN, whose VM is a directory tree reached over a real SSH server.
struct AlephVm {
    aleph: FakeAleph,
    set_up: AlephSetUp,
    _crn: FakeCrn,
    _sshd: SshTarget,
    _vm: VmSandbox,
}

/// One case's world: the scripted model, a real agent, and the platform's database.
struct Case {
    llm: ScriptedLlm,
    _dir: tempfile::TempDir,
    host: Host,
    /// The agent's workspace, where the long job's tool writes its files.
    workspace: PathBuf,
    database_url: String,
    id: AgentId,
    slug: String,
    seen: Arc<Mutex<Vec<Value>>>,
}

/// An agent process the test started, adopted by the platform.
async fn case() -> Case {
    let llm = ScriptedLlm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(&llm, &dir.path().join("agent"), &[]);
    let (database_url, store, id, slug) = database(dir.path()).await;
    record_running(&store, id, &adopted(&agent.url)).await;
    let workspace = dir.path().join("agent/workspace");
    Case { llm, _dir: dir, host: Host::Process(agent), workspace, database_url, id, slug, seen: Arc::default() }
}

/// An agent deployed by the Aleph deployer on the loopback Aleph set-up: INSTANCE posted and
/// allocated, the real `baal-agent` shipped over SSH and started by the VM's `systemctl`.
async fn aleph_case() -> Case {
    let llm = ScriptedLlm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (database_url, store, id, slug) = database(dir.path()).await;
    let sshd = SshTarget::start().await.unwrap();
    let aleph = FakeAleph::start().await.unwrap();
    let crn = FakeCrn::start(&aleph, CrnBehaviour::Healthy, "127.0.0.1", sshd.port()).await.unwrap();
    aleph.add_crn(&crn, 0.1);
    let agent_port = free_port().unwrap();
    aleph.set_public_url(&format!("http://127.0.0.1:{agent_port}"));
    let vm = VmSandbox::new().unwrap();
    let layout = vm.layout(agent_port);
    let set_up = AlephSetUp {
        api_url: aleph.url.clone(),
        crn_list_url: aleph.crn_list_url(),
        ssh_pubkey: sshd.client_pubkey().to_owned(),
        ssh_key_path: sshd.client_key_path().to_owned(),
        agent_bin: agent_binary(),
        root: layout.root.clone(),
        agent_user: layout.agent_user.clone(),
        agent_port,
        stand_ins: layout.path_prefix.clone().unwrap_or_default(),
    };
    let spec = AgentSpec::new(
        id,
        "Durable",
        "Be brief.",
        "qwen3-coder-next",
        SecretString::from("faults-llm-key"),
        llm.base_url(),
        SecretString::from(AGENT_SECRET),
        OWNER.to_string(),
    );
    let deployer = set_up.deployer(Arc::new(baal_core::testing::aleph::MemoryPoolStore::new()));
    let deployment = deployer.deploy(&spec, &SilentReporter).await.expect("deployed on the loopback Aleph set-up");
    println!("deployed instance {:?} at {:?}", deployment.instance_hash, deployment.vm_url);
    record_running(&store, id, &deployment).await;
    let env = baal_core::env::read_file(&vm.file("etc/baal/agent.env")).unwrap();
    let workspace = PathBuf::from(&env[baal_core::agent_env::var::WORKSPACE_PATH]);
    let vm = AlephVm { aleph, set_up, _crn: crn, _sshd: sshd, _vm: vm };
    Case { llm, _dir: dir, host: Host::Aleph(Box::new(vm)), workspace, database_url, id, slug, seen: Arc::default() }
}

impl Case {
    fn platform(&self) -> PlatformProcess {
        let aleph = match &self.host {
            Host::Aleph(vm) => Some(&vm.set_up),
            Host::Process(_) => None,
        };
        PlatformProcess::start(&self.database_url, aleph, self.seen.clone())
    }

    /// `user` opens the agent (the owner by id, a visitor by its link) and hides tool calls, so
    /// the answer's first words stay in a message still being written while a tool runs (a tool
    /// line would close it, whole).
    fn open_chat(&self, platform: &mut PlatformProcess, user: UserId) {
        let open = if user == OWNER { format!("/start {}", self.id) } else { format!("/start agent_{}", self.slug) };
        platform.say(user, &open);
        platform.wait_for("chat mode", |v| v["chat"] == json!(user) && body(v).contains("You're now chatting with"));
        platform.say(user, "/verbose");
        platform.wait_for("tool calls hidden", |v| v["chat"] == json!(user) && body(v).contains("now hidden"));
    }

    /// `user` asks for the long job; the platform is killed while its tool runs and started
    /// again; the answer arrives once, whole, and the half-shown message says it was cut short.
    fn kill_mid_turn_and_restart(&self, user: UserId) {
        let (seen, label) = (&self.seen, self.label());
        let mut platform = self.platform();
        self.open_chat(&mut platform, user);
        let pid_file = self.workspace.join("tool.pid");
        let done_file = self.workspace.join("tool.done");
        script_long_turn(&self.llm);
        platform.say(user, "run the long job");
        let half = platform.wait_for("the answer's first words", |v| body(v).contains("Working on it"));
        wait_for_file(&pid_file);
        println!("[{label}, user {user}] killing the platform (SIGKILL) while the agent's tool runs");
        platform.kill_9();

        let platform = self.platform();
        let interrupted = platform.wait_for("the cut-short answer marked", |v| {
            v["op"] == "edit" && v["id"] == half["id"] && body(v).contains("cut short")
        });
        println!("[{label}, user {user}] after the restart, message {} now says: {}", half["id"], body(&interrupted));
        let answer = platform.wait_for("the whole answer", |v| body(v).contains("All done: the long job finished."));
        assert!(done_file.exists(), "the agent's tool went on without the platform and finished");
        assert_eq!(answer["chat"], json!(user), "the answer goes to the chat that asked");
        assert!(body(&answer).contains("Working on it"), "the whole answer, its first words too: {answer}");
        // A few polls later it has still arrived once.
        std::thread::sleep(Duration::from_millis(1500));
        let copies = seen.lock().unwrap().iter().filter(|v| body(v).contains("All done")).count();
        assert_eq!(copies, 1, "{:#?}", seen.lock().unwrap());
        println!("[{label}, user {user}] observed: the answer arrived once, in the asker's chat");
    }

    fn label(&self) -> &'static str {
        match self.host {
            Host::Process(_) => "agent process",
            Host::Aleph(_) => "loopback Aleph VM",
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_killed_mid_turn_delivers_the_answer_once_after_its_restart() {
    for user in [OWNER, VISITOR] {
        case().await.kill_mid_turn_and_restart(user);
    }
}

/// The same on an agent the Aleph deployer shipped to a (loopback) VM, the platform process
/// using that deployer, as a bot on Aleph does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_loopback_aleph_set_up_a_platform_killed_mid_turn_delivers_the_answer_once() {
    let case = aleph_case().await;
    case.kill_mid_turn_and_restart(OWNER);
    let Host::Aleph(vm) = &case.host else { unreachable!() };
    assert_eq!(vm.aleph.live_instances().len(), 1, "the VM kept running (and billing) through the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_a_running_tool() {
    case().await.stop_the_long_job();
    aleph_case().await.stop_the_long_job();
}

impl Case {
    /// The owner presses ⏹ Stop while the long job's tool runs: the tool dies, nothing is queued.
    fn stop_the_long_job(&self) {
        let (seen, label) = (&self.seen, self.label());
        let mut platform = self.platform();
        self.open_chat(&mut platform, OWNER);
        script_long_turn(&self.llm);
        platform.say(OWNER, "run the long job");
        let half = platform.wait_for("the answer with its stop button", |v| {
            body(v).contains("Working on it") && v["buttons"].to_string().contains("stop_turn")
        });
        wait_for_file(&self.workspace.join("tool.pid"));
        println!("[{label}] pressing ⏹ Stop while the agent's tool runs");
        platform.press(OWNER, half["id"].as_i64().unwrap(), &format!("stop_turn:{}", self.id));
        platform.wait_for("the turn's end said", |v| body(v).contains("Stopped"));
        // The tool would have written its file four seconds after it started.
        std::thread::sleep(Duration::from_secs(6));
        assert!(!self.workspace.join("tool.done").exists(), "the stopped tool never finished");
        println!("[{label}] observed: the tool was killed before it could finish, and the chat says it was stopped");
        assert!(!seen.lock().unwrap().iter().any(|v| body(v).contains("All done")), "a stopped turn queues nothing");
    }
}

/// A loopback HTTP proxy in front of an agent that loses the next `POST /pending/ack` (answers
/// it without passing it on, as a connection that broke after the agent's reply would look to
/// the agent: never acknowledged) and shortens pending leases to a second, so the agent offers
/// the message again soon.
struct AckLosingProxy {
    url: String,
    acks: Arc<Mutex<Vec<String>>>,
    _server: tokio::task::JoinHandle<()>,
}

async fn ack_losing_proxy(agent_url: String) -> AckLosingProxy {
    baal_core::install_crypto_provider();
    use poem::{Body, EndpointExt as _, Request, Response, Route, Server, handler, listener::TcpAcceptor, web::Data};

    #[derive(Clone)]
    struct State {
        agent: String,
        http: reqwest::Client,
        acks: Arc<Mutex<Vec<String>>>,
        lose_next: Arc<std::sync::atomic::AtomicBool>,
    }

    #[handler]
    async fn forward(req: &Request, body: Body, Data(state): Data<&State>) -> Response {
        let path = req.uri().path().to_owned();
        state.acks.lock().unwrap().push(format!("{} {}", req.method(), req.uri()));
        let query: Vec<String> = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .map(|pair| if pair.starts_with("lease=") { "lease=1".to_owned() } else { pair.to_owned() })
            .collect();
        let query = query.join("&");
        let body = body.into_vec().await.unwrap_or_default();
        if path == "/pending/ack" {
            let text = String::from_utf8_lossy(&body).into_owned();
            state.acks.lock().unwrap().push(format!("ack {text}"));
            if state.lose_next.swap(false, Ordering::SeqCst) {
                return Response::builder().content_type("application/json").body(r#"{"status":"ok","deleted":0}"#);
            }
        }
        let url = format!("{}{path}?{query}", state.agent);
        let mut out = state.http.request(req.method().clone(), url).body(body);
        if let Some(auth) = req.headers().get("authorization") {
            out = out.header("authorization", auth.clone());
        }
        if let Some(kind) = req.headers().get("content-type") {
            out = out.header("content-type", kind.clone());
        }
        match out.send().await {
            Ok(answer) => {
                let mut response = Response::builder().status(answer.status());
                if let Some(kind) = answer.headers().get("content-type") {
                    response = response.content_type(kind.to_str().unwrap_or("application/octet-stream"));
                }
                let stream =
                    futures_util::StreamExt::map(answer.bytes_stream(), |chunk| chunk.map_err(std::io::Error::other));
                response.body(Body::from_bytes_stream(stream))
            }
            Err(_) => Response::builder().status(poem::http::StatusCode::BAD_GATEWAY).finish(),
        }
    }

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TcpAcceptor::from_std(listener).unwrap();
    let acks = Arc::new(Mutex::new(Vec::new()));
    let state = State {
        agent: agent_url,
        http: reqwest::Client::new(),
        acks: acks.clone(),
        lose_next: Arc::new(std::sync::atomic::AtomicBool::new(true)),
    };
    let app = Route::new().at("/*path", forward).data(state);
    let server = tokio::spawn(async move {
        let _ = Server::new_with_acceptor(acceptor).run(app).await;
    });
    AckLosingProxy { url: format!("http://{addr}"), acks, _server: server }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_acknowledgement_does_not_show_a_message_twice() {
    let llm = ScriptedLlm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent_dir = dir.path().join("agent");
    std::fs::create_dir_all(agent_dir.join("workspace")).unwrap();
    std::fs::write(agent_dir.join("workspace/HEARTBEAT.md"), "- count the sheep\n").unwrap();
    // The heartbeat's report is queued for the owner; the poller brings it.
    llm.push_text("42 sheep");
    let agent = start_agent(&llm, &agent_dir, &[("HEARTBEAT_INTERVAL", "1")]);
    let proxy = ack_losing_proxy(agent.url.clone()).await;
    let (database_url, store, id, _) = database(dir.path()).await;
    record_running(&store, id, &adopted(&proxy.url)).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let platform = PlatformProcess::start(&database_url, None, seen.clone());
    platform.wait_for("the heartbeat's report", |v| body(v).contains("42 sheep"));
    println!("the first acknowledgement of the delivered report was lost on its way to the agent");
    // The agent offers it again once its lease (a second here) runs out; the platform knows it.
    let acks = || proxy.acks.lock().unwrap().iter().filter(|r| r.starts_with("ack ")).count();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acks() < 2 {
        assert!(Instant::now() < deadline, "the message was never offered again: {:?}", proxy.acks.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let copies = seen.lock().unwrap().iter().filter(|v| body(v).contains("42 sheep")).count();
    assert_eq!(copies, 1, "{:#?}", seen.lock().unwrap());
    let acknowledged: Vec<String> =
        proxy.acks.lock().unwrap().iter().filter(|r| r.starts_with("ack ")).cloned().collect();
    println!("observed: offered again, acknowledged again, shown once ({acknowledged:?})");
    drop(platform);
}
