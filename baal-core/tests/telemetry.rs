//! Metrics and health over real HTTP: the platform (local deployer, a real `baal-agent`, the HTTP
//! proxy, the scripted LLM) deploys an agent and holds a scripted conversation, then the
//! platform's `/metrics` and the agent's (behind its bearer secret) show the counters moved by
//! what happened; `/healthz` and `/readyz` follow the database and the readiness flags.
//!
//! One recorder per process: every test here shares it, so figures are compared before and after.
//! Needs a built `baal-agent` (`cargo build --workspace`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use baal_core::deploy::Deployer;
use baal_core::deploy::local::{LocalDeployer, find_agent_binary};
use baal_core::domain::{AgentStatus, UserId};
use baal_core::platform::{Platform, PlatformConfig};
use baal_core::proxy::http::HttpProxy;
use baal_core::secrets::{SealContext, SecretBox};
use baal_core::store::{AgentFilter, SqlStore};
use baal_core::telemetry::{self, PrometheusHandle, Readiness};
use baal_core::testing::db;
use baal_core::testing::messenger::{MemoryMessenger, press_and_wait, send_and_wait};
use baal_core::testing::openai::ScriptedLlm;
use secrecy::{ExposeSecret, SecretString};

const OWNER: UserId = 701;
const KEY_HEX: &str = "ef";
/// Scripted turns after the agent's introduction.
const TURNS: usize = 3;

fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| telemetry::install().expect("the first recorder of this process")).clone()
}

fn http() -> reqwest::Client {
    baal_core::install_crypto_provider();
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// Starts the metrics server on a free loopback port.
async fn serve(readiness: Readiness, refresh: Option<telemetry::Refresh>) -> SocketAddr {
    let handle = recorder();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(telemetry::serve(listener, handle, readiness, refresh));
    addr
}

/// One scrape: each series (name and sorted labels) with its value.
#[derive(Debug)]
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut series = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("a sample line: {line:?}"));
            series.insert(normalise(key), value.parse::<f64>().unwrap_or_else(|_| panic!("a number: {line:?}")));
        }
        Scrape(series)
    }

    /// The value of `name{labels}` (0 when absent: a counter not yet moved).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0.get(&key(name, labels)).copied().unwrap_or(0.0)
    }
}

fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    labels.sort();
    if labels.is_empty() { name.to_owned() } else { format!("{name}{{{}}}", labels.join(",")) }
}

/// `name{b="1",a="2"}` → `name{a="2",b="1"}` (label values here never hold commas).
fn normalise(series: &str) -> String {
    match series.split_once('{') {
        None => series.to_owned(),
        Some((name, rest)) => {
            let mut labels: Vec<&str> = rest.trim_end_matches('}').split(',').filter(|l| !l.is_empty()).collect();
            labels.sort();
            format!("{name}{{{}}}", labels.join(","))
        }
    }
}

async fn scrape(http: &reqwest::Client, url: &str, bearer: Option<&str>) -> Scrape {
    let mut request = http.get(url);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    Scrape::parse(&response.text().await.unwrap())
}

fn agent_bin() -> PathBuf {
    let explicit = std::env::var_os("BAAL_AGENT_BIN").map(PathBuf::from);
    find_agent_binary(explicit.as_deref())
        .unwrap_or_else(|err| panic!("{err} (for this test: cargo build --workspace)"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_and_a_conversation_move_the_platform_and_agent_metrics() {
    let http = http();
    let llm = ScriptedLlm::start().await;
    let test_db = db::sqlite().await;
    let store = test_db.shared();
    let data = tempfile::tempdir().unwrap();
    let deployer = Arc::new(LocalDeployer::new(data.path().join("agents"), agent_bin()).unwrap());
    let messenger = Arc::new(MemoryMessenger::new());
    let mut config = PlatformConfig::default();
    config.libertai_api_key = Some(SecretString::from("sk-operator-test"));
    config.libertai_api_base_url = llm.base_url();
    config.edit_interval = Duration::ZERO;
    config.admin_user_ids = vec![OWNER];
    let secrets = Arc::new(SecretBox::from_encoded_key(&KEY_HEX.repeat(32)).unwrap());
    let platform = Platform::new(
        config,
        store.clone(),
        deployer.clone(),
        Arc::new(HttpProxy::new().unwrap()),
        messenger.clone(),
        secrets.clone(),
    );
    platform.start().await.unwrap();
    let gauges = platform.clone();
    let refresh: telemetry::Refresh = Arc::new(move || {
        let platform = gauges.clone();
        Box::pin(async move { platform.record_gauges().await })
    });
    let addr = serve(Readiness::new().with_store(store.clone()), Some(refresh)).await;
    let metrics_url = format!("http://{addr}/metrics");
    let before = scrape(&http, &metrics_url, None).await;

    // The wizard: /create, a name, two presses; a local deployment; the agent's introduction.
    llm.push_text("Hello, I am Meter.");
    send_and_wait(&platform, OWNER, "/create").await;
    send_and_wait(&platform, OWNER, "Meter").await;
    press_and_wait(&platform, &messenger, OWNER, "create_model:qwen3-coder-next").await;
    press_and_wait(&platform, &messenger, OWNER, "create_confirm").await;
    let agent = store.list_agents(&AgentFilter::all().owner(OWNER)).await.unwrap().pop().unwrap();
    assert_eq!(agent.status, AgentStatus::Running, "{}", messenger.transcript(OWNER));
    let deployed = scrape(&http, &metrics_url, None).await;

    let moved = |after: &Scrape, from: &Scrape, name: &str, labels: &[(&str, &str)]| {
        after.get(name, labels) - from.get(name, labels)
    };
    assert_eq!(moved(&deployed, &before, "baal_inputs_total", &[("kind", "command")]), 1.0);
    assert_eq!(moved(&deployed, &before, "baal_inputs_total", &[("kind", "text")]), 1.0);
    assert_eq!(moved(&deployed, &before, "baal_inputs_total", &[("kind", "button")]), 2.0);
    assert_eq!(moved(&deployed, &before, "baal_commands_total", &[("command", "create")]), 1.0);
    let local_ok = [("deployer", "local"), ("outcome", "succeeded")];
    assert_eq!(moved(&deployed, &before, "baal_deployments_total", &local_ok), 1.0, "{deployed:?}");
    assert_eq!(moved(&deployed, &before, "baal_deployment_duration_seconds_count", &local_ok), 1.0);
    for step in deployer.steps() {
        let labels = [("deployer", "local"), ("step", step.key)];
        assert_eq!(moved(&deployed, &before, "baal_deploy_step_duration_seconds_count", &labels), 1.0, "{}", step.key);
    }
    assert_eq!(deployed.get("baal_agents", &[("status", "running")]), 1.0);
    assert_eq!(deployed.get("baal_agents", &[("status", "deploying")]), 0.0);

    // A conversation of TURNS turns; the first uses a tool.
    let served_from = llm.completion_requests().len();
    llm.push_tool_call("write_file", r#"{"path": "notes.txt", "content": "counted"}"#);
    llm.push_text("Written.");
    for i in 1..TURNS {
        llm.push_text(format!("Answer number {i}."));
    }
    for i in 0..TURNS {
        send_and_wait(&platform, OWNER, &format!("Question {i}")).await;
    }
    let after = scrape(&http, &metrics_url, None).await;
    let turns = TURNS as f64;
    assert_eq!(moved(&after, &deployed, "baal_inputs_total", &[("kind", "text")]), turns);
    let answered = [("role", "owner"), ("outcome", "answered")];
    assert_eq!(moved(&after, &deployed, "baal_chat_turns_total", &answered), turns, "{after:?}");
    assert_eq!(moved(&after, &deployed, "baal_turn_added_latency_seconds_count", &[]), turns);
    assert_eq!(moved(&after, &deployed, "baal_turn_first_token_seconds_count", &[]), turns);
    assert_eq!(moved(&after, &deployed, "baal_turn_duration_seconds_count", &[]), turns);
    // Tokens as the model served them: the introduction and the conversation, all owner turns.
    let served = llm.served(..);
    let conversation = llm.served(served_from..);
    let owner_prompt = [("cause", "owner_turn"), ("kind", "prompt")];
    let owner_completion = [("cause", "owner_turn"), ("kind", "completion")];
    assert_eq!(moved(&after, &deployed, "baal_tokens_total", &owner_prompt), conversation.prompt_tokens as f64);
    assert_eq!(moved(&after, &deployed, "baal_tokens_total", &owner_completion), conversation.completion_tokens as f64);
    assert_eq!(moved(&after, &before, "baal_tokens_total", &owner_prompt), served.prompt_tokens as f64);

    // The agent's own metrics: its bearer secret or nothing.
    let agent = store.agent_get(agent.id).await.unwrap().unwrap();
    let base = agent.deployment.vm_url.clone().expect("a deployed agent has an address");
    let agent_url = format!("{}/metrics", base.trim_end_matches('/'));
    let refused = http.get(&agent_url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let wrong = http.get(&agent_url).bearer_auth("not-the-secret").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let token =
        secrets.open_str_for(&SealContext::agent_token(agent.id), agent.token_sealed.as_deref().unwrap()).unwrap();
    let figures = scrape(&http, &agent_url, Some(token.expose_secret())).await;
    // A process of its own, started for this test: its figures are since its start.
    let done = [("role", "owner"), ("outcome", "done")];
    assert_eq!(figures.get("baal_agent_turns_total", &done), turns + 1.0, "{figures:?}");
    let tool = [("tool", "write_file"), ("outcome", "ok")];
    assert_eq!(figures.get("baal_agent_tool_calls_total", &tool), 1.0);
    assert_eq!(figures.get("baal_agent_tokens_total", &owner_prompt), served.prompt_tokens as f64);
    assert_eq!(figures.get("baal_agent_tokens_total", &owner_completion), served.completion_tokens as f64);
    let calls = llm.completion_requests().len() as f64;
    assert_eq!(figures.get("baal_agent_model_call_duration_seconds_count", &[("outcome", "ok")]), calls);
    // Nothing secret in either: not the agent's bearer secret, not the operator's key.
    let texts = [format!("{figures:?}"), format!("{after:?}")];
    for text in texts {
        assert!(!text.contains(token.expose_secret()) && !text.contains("sk-operator-test"));
    }

    platform.shutdown().await;
    deployer.shutdown().await;
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, String) {
    let response = http.get(url).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_while_readiness_follows_the_database_and_the_flags() {
    let http = http();
    let test_db = db::sqlite().await;
    let store = SqlStore::open(test_db.url()).await.unwrap();
    let readiness = Readiness::new().with_store(Arc::new(store.clone())).require("telegram");
    let addr = serve(readiness.clone(), None).await;
    let (healthz, readyz) = (format!("http://{addr}/healthz"), format!("http://{addr}/readyz"));

    assert_eq!(get(&http, &healthz).await, (200, "ok".to_owned()));
    let (status, body) = get(&http, &readyz).await;
    assert_eq!(status, 503, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["failing"], serde_json::json!(["telegram"]));

    readiness.set("telegram", true);
    let (status, body) = get(&http, &readyz).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#));

    // The database goes away: not ready, naming it; still alive.
    store.close().await.unwrap();
    let (status, body) = get(&http, &readyz).await;
    assert_eq!(status, 503, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["failing"], serde_json::json!(["database"]));
    readiness.set("telegram", false);
    let (_, body) = get(&http, &readyz).await;
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["failing"], serde_json::json!(["database", "telegram"]));
    assert_eq!(get(&http, &healthz).await, (200, "ok".to_owned()));
}
