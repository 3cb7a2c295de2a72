//! Metering and budgets through the whole product: the platform engine with the local deployer,
//! a real `baal-agent` process, the HTTP proxy and the scripted LLM (which reports usage when
//! asked, or not). What the platform stores per cause is what the model served; an agent over
//! its daily budget ends a turn mid-loop, and the owner is told in the platform's words.
//!
//! Needs a built `baal-agent` (`cargo build --workspace`): `BAAL_AGENT_BIN`, else next to the test
//! binary, else on `PATH`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use baal_core::deploy::local::{LocalDeployer, find_agent_binary};
use baal_core::domain::{AgentPolicy, AgentUsage, UserId, usage_day};
use baal_core::platform::{Input, Platform, PlatformConfig};
use baal_core::proxy::UsageCause;
use baal_core::proxy::http::HttpProxy;
use baal_core::secrets::SecretBox;
use baal_core::store::{AgentFilter, UsageQuery};
use baal_core::testing::db;
use baal_core::testing::messenger::MemoryMessenger;
use baal_core::testing::openai::ScriptedLlm;
use secrecy::SecretString;

const OWNER: UserId = 601;
const VISITOR: UserId = 602;

fn agent_bin() -> PathBuf {
    let explicit = std::env::var_os("BAAL_AGENT_BIN").map(PathBuf::from);
    find_agent_binary(explicit.as_deref())
        .unwrap_or_else(|err| panic!("{err} (for this test: cargo build --workspace)"))
}

async fn send(platform: &Platform, user: UserId, text: &str) {
    platform.handle(Input::from_text(user, user, text)).await.unwrap();
    platform.wait_idle().await;
}

/// Tokens the scripted model reported for the requests `from..` it has served.
fn served(llm: &ScriptedLlm, from: usize) -> u64 {
    llm.completion_requests()[from..].iter().filter_map(|r| r.usage).map(|(p, c)| p + c).sum()
}

fn of(rows: &[AgentUsage], cause: UsageCause) -> u64 {
    rows.iter().filter(|r| r.cause == cause).map(AgentUsage::total_tokens).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_usage_matches_what_the_model_served_and_a_budget_ends_a_turn_mid_loop() {
    let llm = ScriptedLlm::start().await;
    let test_db = db::sqlite().await;
    let data = tempfile::tempdir().unwrap();
    let deployer = Arc::new(LocalDeployer::new(data.path().join("agents"), agent_bin()).unwrap());
    let messenger = Arc::new(MemoryMessenger::new());
    let mut config = PlatformConfig::default();
    config.bot_username = Some("baal_metering_bot".into());
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
        Arc::new(SecretBox::from_encoded_key(&"ef".repeat(32)).unwrap()),
    );
    platform.start().await.unwrap();

    llm.push_text("Hello! I am Tally.");
    send(&platform, OWNER, "/create").await;
    send(&platform, OWNER, "Tally").await;
    for button in ["create_model:qwen3-coder-next", "create_confirm"] {
        let (data, message) = messenger
            .find_button(OWNER, button)
            .unwrap_or_else(|| panic!("no button {button:?} in {}", messenger.transcript(OWNER)));
        platform.handle(Input::button(OWNER, OWNER, data, message, "press")).await.unwrap();
        platform.wait_idle().await;
    }
    let agent = store.list_agents(&AgentFilter::all().owner(OWNER)).await.unwrap().pop().unwrap();
    let today = usage_day(chrono::Utc::now()).0;
    let stored = || {
        let store = store.clone();
        async move { store.usage_rows(&UsageQuery::days(today, today).agent(agent.id)).await.unwrap() }
    };

    // The owner's turns (the introduction after deployment included) and a visitor's.
    llm.push_text("Owner answer.");
    send(&platform, OWNER, "hi").await;
    let owner_served = served(&llm, 0);
    let visitor_from = llm.completion_requests().len();
    llm.push_text("Visitor answer.");
    send(&platform, VISITOR, &format!("/start agent_{}", agent.slug)).await;
    send(&platform, VISITOR, "hello").await;
    assert!(messenger.transcript(VISITOR).contains("Visitor answer."), "{}", messenger.transcript(VISITOR));
    let rows = stored().await;
    assert!(owner_served > 0);
    assert_eq!(of(&rows, UsageCause::OwnerTurn), owner_served, "{rows:?}");
    assert_eq!(of(&rows, UsageCause::VisitorTurn), served(&llm, visitor_from), "{rows:?}");
    let visitor_rows: Vec<_> = rows.iter().filter(|r| r.cause == UsageCause::VisitorTurn).collect();
    assert!(visitor_rows.iter().all(|r| r.user_id == VISITOR && !r.estimated), "{rows:?}");

    // A budget the next model call will cross: the tool call runs, the call after it never starts.
    let spent: u64 = rows.iter().map(AgentUsage::total_tokens).sum();
    let policy = AgentPolicy::new().with_daily_token_budget(Some(spent + 1));
    store.agent_set_policy(agent.id, &policy).await.unwrap();
    llm.push_tool_call("bash", r#"{"command":"echo tool ran"}"#);
    llm.push_text("This answer is never asked for.");
    let before = llm.completion_requests().len();
    send(&platform, OWNER, "run the tool, then answer").await;
    assert_eq!(llm.completion_requests().len(), before + 1, "one model call, then the budget stopped the loop");
    assert_eq!(llm.queued(), 1, "the answer after the tool was never asked for");
    let transcript = messenger.transcript(OWNER);
    assert!(transcript.contains("has used its daily budget"), "{transcript}");
    assert!(transcript.contains("Settings"), "the owner is told what to do: {transcript}");
    let rows = stored().await;
    assert_eq!(rows.iter().map(AgentUsage::total_tokens).sum::<u64>(), spent + served(&llm, before));
    // Refused before the agent is asked once the budget is spent.
    send(&platform, OWNER, "anything?").await;
    assert_eq!(llm.completion_requests().len(), before + 1);

    // A model server that reports no usage: the agent estimates, and says so.
    let policy = AgentPolicy::new();
    store.agent_set_policy(agent.id, &policy).await.unwrap();
    llm.omit_usage(true);
    llm.push_text("Uncounted by the server.");
    send(&platform, OWNER, "estimate this").await;
    let rows = stored().await;
    assert!(rows.iter().any(|r| r.cause == UsageCause::OwnerTurn && r.estimated), "{rows:?}");

    platform.shutdown().await;
    deployer.shutdown().await;
}
