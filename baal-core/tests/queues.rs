//! Bounded queues on one machine: the platform engine with the local deployer, a real
//! `baal-agent` process and the HTTP proxy. Messages the agent queued for its owner reach them
//! after each turn; a chat that refuses the bot for good has them dropped after a few tries,
//! transient failures drop nothing, and a long message that failed partway goes on from the
//! piece that did not go out.
//!
//! The agent's queue is written and its leases run out through its own database file, as a
//! heartbeat and five minutes would: delivery itself is the platform's, over HTTP.
//!
//! Needs a built `baal-agent` (`cargo build --workspace`): `BAAL_AGENT_BIN`, else next to the test
//! binary, else on `PATH`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use baal_core::agent::history::History;
use baal_core::deploy::local::{LocalDeployer, find_agent_binary};
use baal_core::domain::{Agent, AgentStatus, UserId};
use baal_core::platform::{MessengerError, Platform, PlatformConfig};
use baal_core::proxy::http::HttpProxy;
use baal_core::secrets::SecretBox;
use baal_core::store::{AgentFilter, Store};
use baal_core::testing::db;
use baal_core::testing::messenger::{MemoryMessenger, press_and_wait, send_and_wait};
use baal_core::testing::openai::ScriptedLlm;
use secrecy::SecretString;

const OWNER: UserId = 601;
/// `platform::chat::REFUSALS_BEFORE_DROPPING`.
const REFUSALS_BEFORE_DROPPING: usize = 5;

fn agent_bin() -> PathBuf {
    let explicit = std::env::var_os("BAAL_AGENT_BIN").map(PathBuf::from);
    find_agent_binary(explicit.as_deref())
        .unwrap_or_else(|err| panic!("{err} (for this test: cargo build --workspace)"))
}

struct Real {
    platform: Platform,
    messenger: Arc<MemoryMessenger>,
    store: Arc<dyn Store>,
    llm: ScriptedLlm,
    agent: Agent,
    /// The agent's database, as its process has it.
    db: PathBuf,
    _data: tempfile::TempDir,
    _db: db::TestDb,
}

impl Real {
    /// A platform whose poller stays out of the way (the test delivers with turns) and one
    /// running agent, named `name`, of `OWNER`'s.
    async fn start(name: &str) -> Real {
        let llm = ScriptedLlm::start().await;
        let test_db = db::sqlite().await;
        let data = tempfile::tempdir().unwrap();
        let deployer = Arc::new(LocalDeployer::new(data.path().join("agents"), agent_bin()).unwrap());
        let messenger = Arc::new(MemoryMessenger::new());
        let mut config = PlatformConfig::default();
        config.libertai_api_key = Some(SecretString::from("sk-operator-test"));
        config.libertai_api_base_url = llm.base_url();
        config.edit_interval = Duration::ZERO;
        config.admin_user_ids = vec![OWNER];
        config.pending_poll_interval = Duration::from_secs(24 * 3600);
        let store = test_db.shared();
        let platform = Platform::new(
            config,
            store.clone(),
            deployer.clone(),
            Arc::new(HttpProxy::new().unwrap()),
            messenger.clone(),
            Arc::new(SecretBox::from_encoded_key(&"ef".repeat(32)).unwrap()),
        );
        platform.start().await.unwrap();
        llm.push_text("Hello.");
        send_and_wait(&platform, OWNER, "/create").await;
        send_and_wait(&platform, OWNER, name).await;
        press_and_wait(&platform, &messenger, OWNER, "create_model:qwen3-coder-next").await;
        press_and_wait(&platform, &messenger, OWNER, "create_confirm").await;
        let agent = store.list_agents(&AgentFilter::all().owner(OWNER)).await.unwrap().pop().unwrap();
        assert_eq!(agent.status, AgentStatus::Running, "{}", messenger.transcript(OWNER));
        let db = deployer.agent_dir(agent.id).join("agent.db");
        assert!(db.exists());
        messenger.clear();
        Real { platform, messenger, store, llm, agent, db, _data: data, _db: test_db }
    }

    /// Queues `texts` for the owner in the agent's database, as its heartbeat would.
    async fn queue(&self, texts: &[&str]) {
        let history = History::open(&self.db).await.unwrap();
        for text in texts {
            history.push_pending(&OWNER.to_string(), text, "heartbeat").await.unwrap();
        }
    }

    /// One turn with the agent, after which the platform delivers what it queued. Every lease is
    /// run out first, so what was not delivered last time is offered again now.
    async fn turn(&self) {
        let connection = rusqlite::Connection::open(&self.db).unwrap();
        connection.busy_timeout(Duration::from_secs(5)).unwrap();
        connection.execute("UPDATE pending_messages SET leased_until = 0", []).unwrap();
        drop(connection);
        self.turn_within_the_lease().await;
    }

    /// One turn, the leases of earlier deliveries still running.
    async fn turn_within_the_lease(&self) {
        self.llm.push_text("Noted.");
        send_and_wait(&self.platform, OWNER, "anything new?").await;
    }

    /// What the agent still has queued.
    fn queued(&self) -> Vec<String> {
        let connection = rusqlite::Connection::open(&self.db).unwrap();
        let mut statement = connection.prepare("SELECT content FROM pending_messages ORDER BY id").unwrap();
        statement.query_map([], |row| row.get(0)).unwrap().collect::<rusqlite::Result<_>>().unwrap()
    }

    /// What the platform recorded of the agent's queue for the owner's chat.
    async fn recorded(&self) -> serde_json::Value {
        let key = format!("{}:{OWNER}", self.agent.id);
        let bytes = self.store.kv_get("platform.delivered", &key).await.unwrap().unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or_default()
    }

    /// The owner's messages that contain `needle`.
    fn shown(&self, needle: &str) -> Vec<String> {
        self.messenger.bodies(OWNER).into_iter().filter(|body| body.contains(needle)).collect()
    }
}

fn blocked() -> MessengerError {
    MessengerError::Gone("USER_IS_BLOCKED".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_chats_queue_is_dropped_after_the_bound_and_counted() {
    let real = Real::start("Blocked").await;
    real.queue(&["queued news 1", "queued news 2", "queued news 3"]).await;
    real.messenger.fail_sends_containing("queued news", blocked());

    // Each turn tries once (delivery stops at the first refusal); until the bound, nothing goes.
    for attempt in 1..REFUSALS_BEFORE_DROPPING {
        real.turn().await;
        assert_eq!(real.messenger.failed_sends(), attempt);
        assert_eq!(real.queued().len(), 3, "attempt {attempt}: everything stays queued");
        assert_eq!(real.recorded().await["refusals"], attempt);
    }
    real.turn().await;
    assert_eq!(real.messenger.failed_sends(), REFUSALS_BEFORE_DROPPING);
    assert!(real.queued().is_empty(), "dropped at the bound: {:?}", real.queued());
    assert_eq!(real.recorded().await["dropped"], 3);

    // Nothing is left to try: no further attempt.
    real.turn().await;
    assert_eq!(real.messenger.failed_sends(), REFUSALS_BEFORE_DROPPING);

    // The chat still refuses: a new message goes at its first refusal, and is counted.
    real.queue(&["queued news 4"]).await;
    real.turn().await;
    assert_eq!(real.messenger.failed_sends(), REFUSALS_BEFORE_DROPPING + 1);
    assert!(real.queued().is_empty());
    assert_eq!(real.recorded().await["dropped"], 4);
    assert!(real.shown("queued news").is_empty());

    // Unblocked: messages arrive again, and refusals are counted from zero.
    real.messenger.stop_failing();
    real.queue(&["queued news 5"]).await;
    real.turn().await;
    assert_eq!(real.shown("queued news"), ["<b>Blocked</b>: queued news 5"]);
    assert!(real.queued().is_empty());
    let recorded = real.recorded().await;
    assert_eq!((recorded["refusals"].as_u64(), recorded["dropped"].as_u64()), (None, Some(4)), "{recorded}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_never_drop_anything() {
    let real = Real::start("Patient").await;
    real.queue(&["queued news 1", "queued news 2", "queued news 3"]).await;
    real.messenger.fail_sends_containing("queued news", MessengerError::Failed("flood wait outlasted retries".into()));
    for attempt in 1..=2 * REFUSALS_BEFORE_DROPPING {
        real.turn().await;
        assert_eq!(real.messenger.failed_sends(), attempt);
        assert_eq!(real.queued().len(), 3, "attempt {attempt}");
    }
    real.messenger.stop_failing();
    real.turn().await;
    assert_eq!(
        real.shown("queued news"),
        ["<b>Patient</b>: queued news 1", "<b>Patient</b>: queued news 2", "<b>Patient</b>: queued news 3"]
    );
    assert!(real.queued().is_empty());
    assert_eq!(real.recorded().await.get("dropped"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_message_that_failed_partway_resumes_at_the_piece_that_did_not_go_out() {
    let real = Real::start("Long").await;
    // Three paragraphs, each under Telegram's limit and any two over it: three pieces.
    let paragraph = |word: &str| format!("{word} ").repeat(500).trim_end().to_owned();
    let long = format!("{}\n\n{}\n\n{}", paragraph("alpha"), paragraph("bravo"), paragraph("charlie"));
    real.queue(&[&long, "queued after it"]).await;
    real.messenger.fail_sends_containing("bravo", MessengerError::Failed("timeout".into()));

    real.turn().await;
    assert_eq!(real.messenger.failed_sends(), 1);
    assert_eq!(real.shown("alpha").len(), 1);
    assert!(real.shown("bravo").is_empty() && real.shown("queued after it").is_empty());
    assert_eq!(real.queued().len(), 2, "nothing acknowledged");
    assert_eq!(real.recorded().await["partial"]["pieces"], 1);

    // The piece fails again: the first is still not repeated.
    real.turn().await;
    assert_eq!(real.messenger.failed_sends(), 2);
    assert_eq!(real.shown("alpha").len(), 1);

    real.messenger.stop_failing();
    real.turn().await;
    let pieces: Vec<String> = real
        .messenger
        .bodies(OWNER)
        .into_iter()
        .filter(|body| ["alpha", "bravo", "charlie", "queued after it"].iter().any(|word| body.contains(word)))
        .collect();
    assert_eq!(pieces.len(), 4, "{pieces:?}");
    assert!(pieces[0].starts_with("<b>Long</b>: alpha") && !pieces[0].contains("bravo"));
    assert!(pieces[1].starts_with("bravo") && !pieces[1].contains("charlie"), "{}", pieces[1]);
    assert!(pieces[2].starts_with("charlie"), "{}", pieces[2]);
    assert_eq!(pieces[3], "<b>Long</b>: queued after it");
    assert!(real.queued().is_empty());
    assert_eq!(real.recorded().await.get("partial"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_behind_one_that_failed_wait_for_it_even_past_a_batch() {
    let real = Real::start("Ordered").await;
    // More than one lease batch (100), so the second batch is there to be taken.
    let texts: Vec<String> = (1..=150).map(|i| format!("queued news {i};")).collect();
    real.queue(&texts.iter().map(String::as_str).collect::<Vec<_>>()).await;
    real.messenger.fail_sends_containing("queued news 5;", MessengerError::Failed("timeout".into()));
    real.turn().await;
    assert_eq!(real.shown("queued news").len(), 4);

    // The network is back before the lease of the failed batch runs out: nothing after the
    // held message may overtake it.
    real.messenger.stop_failing();
    real.turn_within_the_lease().await;
    assert_eq!(real.shown("queued news").len(), 4, "{:?}", real.shown("queued news").last());

    // Once the lease runs out, everything arrives, in order, each once.
    real.turn().await;
    real.turn().await;
    let expected: Vec<String> = texts.iter().map(|text| format!("<b>Ordered</b>: {text}")).collect();
    assert_eq!(real.shown("queued news"), expected);
    assert!(real.queued().is_empty());
}
