//! The whole product on one machine: the platform engine with the local deployer, a real
//! `baal-agent` process, the HTTP proxy and the scripted LLM. Create an agent, chat with it, see
//! the streamed answer, delete it, and its process and files are gone; what it spends is stored
//! as the model served it, and its budget stops it.
//!
//! Needs a built `baal-agent` (`cargo build --workspace`): `BAAL_AGENT_BIN`, else next to the test
//! binary, else on `PATH`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baal_core::deploy::local::{LocalDeployer, find_agent_binary};
use baal_core::domain::{Agent, AgentPolicy, AgentStatus, AgentUsage, UserId, usage_day};
use baal_core::platform::{Platform, PlatformConfig};
use baal_core::proxy::UsageCause;
use baal_core::proxy::http::HttpProxy;
use baal_core::secrets::SecretBox;
use baal_core::store::{AgentFilter, UsageQuery};
use baal_core::testing::db;
use baal_core::testing::messenger::{Call, MemoryMessenger, press_and_wait, send_and_wait};
use baal_core::testing::openai::ScriptedLlm;
use secrecy::SecretString;

const OWNER: UserId = 501;
const VISITOR: UserId = 502;

fn agent_bin() -> PathBuf {
    let explicit = std::env::var_os("BAAL_AGENT_BIN").map(PathBuf::from);
    find_agent_binary(explicit.as_deref())
        .unwrap_or_else(|err| panic!("{err} (for this test: cargo build --workspace)"))
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Polls until `check` holds; a hang guard, not a timing assertion.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The engine with the local deployer, the HTTP proxy and `llm` as LibertAI, with Baal's own key
/// (the free tier); `OWNER` is an admin, so the local deployer lets them create agents on any
/// host, and the visitor stays a visitor.
struct RealPlatform {
    platform: Platform,
    deployer: Arc<LocalDeployer>,
    messenger: Arc<MemoryMessenger>,
    store: Arc<dyn baal_core::store::Store>,
    _data: tempfile::TempDir,
    _db: db::TestDb,
}

async fn real_platform(llm: &ScriptedLlm) -> RealPlatform {
    let test_db = db::sqlite().await;
    let data = tempfile::tempdir().unwrap();
    let deployer = Arc::new(LocalDeployer::new(data.path().join("agents"), agent_bin()).unwrap());
    let messenger = Arc::new(MemoryMessenger::new());
    let mut config = PlatformConfig::default();
    config.bot_username = Some("baal_e2e_bot".into());
    config.libertai_api_key = Some(SecretString::from("sk-operator-test"));
    config.libertai_api_base_url = llm.base_url();
    config.edit_interval = Duration::ZERO;
    config.admin_user_ids = vec![OWNER];
    let store = test_db.shared();
    let platform = Platform::new(
        config,
        store.clone(),
        deployer.clone(),
        Arc::new(HttpProxy::new().unwrap()),
        messenger.clone(),
        Arc::new(SecretBox::from_encoded_key(&"cd".repeat(32)).unwrap()),
    );
    platform.start().await.unwrap();
    RealPlatform { platform, deployer, messenger, store, _data: data, _db: test_db }
}

/// Creates an agent through the wizard, its introduction being `intro`.
async fn create(real: &RealPlatform, llm: &ScriptedLlm, name: &str, intro: &str) -> Agent {
    llm.push_text(intro);
    send_and_wait(&real.platform, OWNER, "/create").await;
    send_and_wait(&real.platform, OWNER, name).await;
    press_and_wait(&real.platform, &real.messenger, OWNER, "create_model:qwen3-coder-next").await;
    press_and_wait(&real.platform, &real.messenger, OWNER, "create_confirm").await;
    real.store.list_agents(&AgentFilter::all().owner(OWNER)).await.unwrap().pop().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_chat_and_delete_a_real_local_agent() {
    let llm = ScriptedLlm::start().await;
    let real = real_platform(&llm).await;
    let RealPlatform { platform, deployer, messenger, store, .. } = &real;
    let agent = create(&real, &llm, "Echo", "Hello! I am Echo, here to help.").await;
    assert_eq!(agent.status, AgentStatus::Running, "{}", messenger.transcript(OWNER));
    let transcript = messenger.transcript(OWNER);
    assert!(transcript.contains(&format!("https://t.me/baal_e2e_bot?start=agent_{}", agent.slug)));
    assert!(transcript.contains("Hello! I am Echo, here to help."), "{transcript}");
    let pid = deployer.pid(agent.id).expect("the agent runs as a process");
    let dir = deployer.agent_dir(agent.id);
    assert!(process_exists(pid) && dir.exists());

    // A streamed answer: one message, edited as text arrives, ending with the whole text.
    llm.set_chunk_delay(Duration::from_millis(30));
    llm.push_text("The answer is forty-two, as everyone knows.");
    messenger.clear();
    send_and_wait(platform, OWNER, "What is the answer?").await;
    let answers: Vec<_> = messenger.messages(OWNER).into_iter().filter(|m| m.text.body.contains("forty")).collect();
    assert_eq!(answers.len(), 1, "{:?}", messenger.bodies(OWNER));
    assert!(answers[0].text.body.contains("The answer is forty-two, as everyone knows."));
    assert!(answers[0].text.body.starts_with("<b>Echo</b>"));
    // It grew in place: first shown partly written (the real agent's pieces), then edited.
    let answer_id = answers[0].message;
    let versions: Vec<String> = messenger
        .timed_calls()
        .into_iter()
        .filter_map(|(_, call)| match call {
            Call::Send { message, text } | Call::Edit { message, text } if message == answer_id => Some(text.body),
            _ => None,
        })
        .collect();
    assert!(versions.len() >= 2, "shown as it was written: {versions:?}");
    assert!(!versions[0].contains("as everyone knows."), "the first version is a beginning: {versions:?}");
    let asked = llm.requests().iter().any(|r| {
        r.messages().iter().any(|m| m.to_string().contains("What is the answer?"))
            && r.bearer.as_deref() == Some("sk-operator-test")
    });
    assert!(asked, "the agent asked the LLM with the operator's key");

    // A visitor through the share link.
    llm.set_chunk_delay(Duration::ZERO);
    llm.push_text("Hi visitor.");
    send_and_wait(platform, VISITOR, &format!("/start agent_{}", agent.slug)).await;
    send_and_wait(platform, VISITOR, "hello").await;
    assert!(messenger.transcript(VISITOR).contains("Hi visitor."), "{}", messenger.transcript(VISITOR));

    // The visitor starts over: their history goes, the owner's stays, memory files too.
    let memory_before = std::fs::read_to_string(dir.join("workspace/memory/MEMORY.md")).unwrap();
    send_and_wait(platform, VISITOR, "/reset").await;
    press_and_wait(platform, messenger, VISITOR, &format!("reset_confirmed:{}", agent.id)).await;
    assert!(
        messenger.last_text(VISITOR).contains("has forgotten your conversation"),
        "{}",
        messenger.transcript(VISITOR)
    );
    send_and_wait(platform, VISITOR, "do you remember me?").await;
    send_and_wait(platform, OWNER, "and you?").await;
    let last_request_with = |needle: &str| {
        llm.completion_requests()
            .into_iter()
            .rev()
            .find(|r| r.messages().iter().any(|m| m.to_string().contains(needle)))
            .unwrap()
    };
    let visitor_next = last_request_with("do you remember me?").messages();
    assert!(
        !visitor_next.iter().any(|m| m.to_string().contains("hello")),
        "the visitor's old turns are gone: {visitor_next:?}"
    );
    let owner_next = last_request_with("and you?").messages();
    assert!(owner_next.iter().any(|m| m.to_string().contains("What is the answer?")), "the owner's history stays");
    let memory = std::fs::read_to_string(dir.join("workspace/memory/MEMORY.md")).unwrap();
    assert_eq!(memory, memory_before, "memory files are untouched");

    // Delete: the process and its files are gone.
    send_and_wait(platform, OWNER, &format!("/delete {}", agent.id)).await;
    press_and_wait(platform, messenger, OWNER, &format!("delete_confirmed:{}", agent.id)).await;
    assert!(messenger.last_text(OWNER).contains("is deleted"), "{}", messenger.last_text(OWNER));
    assert!(store.agent_get(agent.id).await.unwrap().unwrap().deleted);
    eventually("the agent process exits", || !process_exists(pid)).await;
    assert!(!dir.exists(), "the agent's files are removed");
    platform.shutdown().await;
    deployer.shutdown().await;
}

fn of(rows: &[AgentUsage], cause: UsageCause) -> u64 {
    rows.iter().filter(|r| r.cause == cause).map(AgentUsage::total_tokens).sum()
}

/// Metering and budgets through the whole product: what the platform stores per cause is what
/// the model served (reporting usage when asked, or not); an agent over its daily budget ends a
/// turn mid-loop, and the owner is told in the platform's words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_usage_matches_what_the_model_served_and_a_budget_ends_a_turn_mid_loop() {
    let llm = ScriptedLlm::start().await;
    let real = real_platform(&llm).await;
    let RealPlatform { platform, deployer, messenger, store, .. } = &real;
    let agent = create(&real, &llm, "Tally", "Hello! I am Tally.").await;
    let today = usage_day(chrono::Utc::now()).0;
    let stored = || async { store.usage_rows(&UsageQuery::days(today, today).agent(agent.id)).await.unwrap() };

    // The owner's turns (the introduction after deployment included) and a visitor's.
    llm.push_text("Owner answer.");
    send_and_wait(platform, OWNER, "hi").await;
    let owner_served = llm.served(..).tokens();
    let visitor_from = llm.completion_requests().len();
    llm.push_text("Visitor answer.");
    send_and_wait(platform, VISITOR, &format!("/start agent_{}", agent.slug)).await;
    send_and_wait(platform, VISITOR, "hello").await;
    assert!(messenger.transcript(VISITOR).contains("Visitor answer."), "{}", messenger.transcript(VISITOR));
    let rows = stored().await;
    assert!(owner_served > 0);
    assert_eq!(of(&rows, UsageCause::OwnerTurn), owner_served, "{rows:?}");
    assert_eq!(of(&rows, UsageCause::VisitorTurn), llm.served(visitor_from..).tokens(), "{rows:?}");
    let visitor_rows: Vec<_> = rows.iter().filter(|r| r.cause == UsageCause::VisitorTurn).collect();
    assert!(visitor_rows.iter().all(|r| r.user_id == VISITOR && !r.estimated), "{rows:?}");

    // A budget the next model call will cross: the tool call runs, the call after it never starts.
    let spent: u64 = rows.iter().map(AgentUsage::total_tokens).sum();
    let policy = AgentPolicy::new().with_daily_token_budget(Some(spent + 1));
    store.agent_set_policy(agent.id, &policy).await.unwrap();
    llm.push_tool_call("bash", r#"{"command":"echo tool ran"}"#);
    llm.push_text("This answer is never asked for.");
    let before = llm.completion_requests().len();
    send_and_wait(platform, OWNER, "run the tool, then answer").await;
    assert_eq!(llm.completion_requests().len(), before + 1, "one model call, then the budget stopped the loop");
    assert_eq!(llm.queued(), 1, "the answer after the tool was never asked for");
    let transcript = messenger.transcript(OWNER);
    assert!(transcript.contains("has used its daily budget"), "{transcript}");
    assert!(transcript.contains("Settings"), "the owner is told what to do: {transcript}");
    let rows = stored().await;
    assert_eq!(rows.iter().map(AgentUsage::total_tokens).sum::<u64>(), spent + llm.served(before..).tokens());
    // Refused before the agent is asked once the budget is spent.
    send_and_wait(platform, OWNER, "anything?").await;
    assert_eq!(llm.completion_requests().len(), before + 1);

    // A model server that reports no usage: the agent estimates, and says so.
    let policy = AgentPolicy::new();
    store.agent_set_policy(agent.id, &policy).await.unwrap();
    llm.omit_usage(true);
    llm.push_text("Uncounted by the server.");
    send_and_wait(platform, OWNER, "estimate this").await;
    let rows = stored().await;
    assert!(rows.iter().any(|r| r.cause == UsageCause::OwnerTurn && r.estimated), "{rows:?}");

    platform.shutdown().await;
    deployer.shutdown().await;
}
