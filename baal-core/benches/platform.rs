//! 200 concurrent chats through the engine, the HTTP proxy and local `baal-agent` processes
//! against the scripted LLM on loopback. Prints messages per second and latency percentiles for
//! three paths, so the difference shows what each layer adds:
//!
//! - `agent`: a raw HTTP `POST /chat` to the agent, read to the end (the agent and the LLM);
//! - `proxy`: the same through `HttpProxy`;
//! - `engine`: `Platform::handle` for a visitor's text (rate limit, state, routing, streaming into
//!   an edited message, pending delivery) over the proxy.
//!
//! Loads: one chat at a time with an instant model (each layer's own cost); 200 concurrent chats
//! whose model takes most of a second to stream each answer (chunks 125 ms apart), the figure
//! the target is about; and 200 concurrent chats with an instant model, which saturates the
//! machine: there the "added" latency is queueing behind every other process on the same cores
//! (the agents, the scripted LLM, the clients), and msg/s is the figure that counts.
//!
//! Every path sends texts of the same length: the scripted model streams its echo in 4-character
//! pieces, so a longer text would be a slower model, not a slower layer. In the paced load the
//! chats start spread over one answer's time, as real conversations are; started in the same
//! millisecond, the model's zero jitter keeps all 200 in lockstep and every message arrives in a
//! burst of 200 (that worst case is printed too).
//!
//! Needs a built `baal-agent`: `BAAL_AGENT_BIN`, else next to this binary, else `target/release`
//! or `target/debug`, else `PATH`.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baal_core::deploy::local::LocalDeployer;
use baal_core::domain::{Agent, Role, UserId};
use baal_core::platform::{Input, Platform, PlatformConfig};
use baal_core::proxy::http::HttpProxy;
use baal_core::proxy::{AgentEndpoint, ChatRequest, Proxy};
use baal_core::secrets::{SealContext, SecretBox};
use baal_core::store::AgentFilter;
use baal_core::testing::db;
use baal_core::testing::messenger::MemoryMessenger;
use baal_core::testing::openai::ScriptedLlm;
use futures_util::StreamExt;
use secrecy::{ExposeSecret, SecretString};

const CHATS: usize = 200;
const MESSAGES_PER_CHAT: usize = 5;
const AGENTS: usize = 4;
/// Delay between streamed chunks for the "model at work" load: ~1 s per answer, the short end of
/// what a hosted model takes.
const MODEL_CHUNK_DELAY: Duration = Duration::from_millis(125);

struct Figures {
    name: &'static str,
    wall: Duration,
    latencies: Vec<Duration>,
}

impl Figures {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
    }

    fn print(&self) {
        println!(
            "{:<7} {:>6} msgs in {:>6.2}s = {:>7.1} msg/s   p50 {:>7.2} ms   p99 {:>7.2} ms",
            self.name,
            self.latencies.len(),
            self.wall.as_secs_f64(),
            self.latencies.len() as f64 / self.wall.as_secs_f64(),
            ms(self.percentile(0.5)),
            ms(self.percentile(0.99)),
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `chats` concurrent chats of `per_chat` sequential messages each; chat `i` starts after
/// `spread * i / chats`.
async fn run<F, Fut>(name: &'static str, chats: usize, per_chat: usize, spread: Duration, one: F) -> Figures
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..chats)
        .map(|chat| {
            let one = one.clone();
            tokio::spawn(async move {
                tokio::time::sleep(spread.mul_f64(chat as f64 / chats as f64)).await;
                let mut latencies = Vec::with_capacity(per_chat);
                for message in 0..per_chat {
                    let began = Instant::now();
                    one(chat, message).await;
                    latencies.push(began.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("chat task"));
    }
    Figures { name, wall: start.elapsed(), latencies }
}

fn main() {
    let Some(agent_bin) = common::agent_bin() else {
        println!("platform bench skipped: build baal-agent first (cargo build --workspace) or set BAAL_AGENT_BIN");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(bench(agent_bin));
}

async fn bench(agent_bin: PathBuf) {
    let llm = ScriptedLlm::start().await;
    let test_db = db::sqlite().await;
    let data = tempfile::tempdir().expect("tempdir");
    let deployer = Arc::new(LocalDeployer::new(data.path().join("agents"), agent_bin).expect("local deployer"));
    let messenger = Arc::new(MemoryMessenger::new());
    let secrets = Arc::new(SecretBox::from_encoded_key(&"ef".repeat(32)).expect("key"));
    let proxy = Arc::new(HttpProxy::new().expect("proxy"));
    let mut config = PlatformConfig::default();
    config.libertai_api_key = Some(SecretString::from("sk-bench"));
    config.libertai_api_base_url = llm.base_url();
    config.free_tier_daily_messages = u32::MAX;
    config.max_agents_per_user = AGENTS as u32;
    const OWNER: UserId = 1;
    // The local deployer creates agents for the operator's admins only on a host that cannot keep
    // tenants apart; the bench's visitors only chat.
    config.admin_user_ids = vec![OWNER];
    let store = test_db.shared();
    let platform =
        Platform::new(config, store.clone(), deployer.clone(), proxy.clone(), messenger.clone(), secrets.clone());

    for n in 0..AGENTS {
        for line in ["/create", &format!("Bench {n}")] {
            platform.handle(Input::from_text(OWNER, OWNER, line)).await.expect("create");
        }
        for data in ["create_model:qwen3-coder-next", "create_confirm"] {
            let (_, message) = messenger.find_button(OWNER, data).expect("wizard button");
            platform.handle(Input::button(OWNER, OWNER, data, message, "bench")).await.expect("press");
        }
        platform.wait_idle().await;
    }
    let agents: Vec<Agent> = store.list_agents(&AgentFilter::all().owner(OWNER)).await.expect("agents");
    let endpoints: Vec<AgentEndpoint> = agents
        .iter()
        .map(|agent| {
            AgentEndpoint::new(
                agent.deployment.vm_url.clone().expect("deployed"),
                secrets
                    .open_str_for(&SealContext::agent_token(agent.id), agent.token_sealed.as_deref().expect("token"))
                    .expect("open"),
            )
        })
        .collect();
    println!("platform bench: {CHATS} concurrent chats over {} local agents, scripted LLM (echo)", endpoints.len());

    // Visitors open the share links once, then chat.
    for chat in 0..CHATS {
        let slug = &agents[chat % agents.len()].slug;
        let user = visitor(chat);
        platform.handle(Input::from_text(user, user, &format!("/start agent_{slug}"))).await.expect("open link");
    }
    // Alone, each layer's own cost shows; with 200 chats at once, throughput and queueing do.
    // The paced model's answer time: a role chunk, the text's pieces, a finish chunk.
    let answer_time = MODEL_CHUNK_DELAY * 6;
    let loads = [
        ("1 chat at a time, instant model", 1, 200, Duration::ZERO, Duration::ZERO),
        ("200 concurrent chats, paced model, chats spread over one answer", CHATS, 4, MODEL_CHUNK_DELAY, answer_time),
        (
            "200 concurrent chats, paced model, all started at once (lockstep bursts)",
            CHATS,
            4,
            MODEL_CHUNK_DELAY,
            Duration::ZERO,
        ),
        (
            "200 concurrent chats, instant model (saturation: msg/s is the figure)",
            CHATS,
            MESSAGES_PER_CHAT,
            Duration::ZERO,
            Duration::ZERO,
        ),
    ];
    for (label, chats, per_chat, chunk_delay, spread) in loads {
        llm.set_chunk_delay(chunk_delay);
        println!("-- {label}, {per_chat} messages each");
        let [raw, through_proxy, engine] = three_paths(&platform, &proxy, &endpoints, chats, per_chat, spread).await;
        for figures in [&raw, &through_proxy, &engine] {
            figures.print();
        }
        let added = |a: &Figures, b: &Figures, p: f64| ms(a.percentile(p)) - ms(b.percentile(p));
        println!(
            "added by HttpProxy over a raw request: p50 {:+.2} ms, p99 {:+.2} ms",
            added(&through_proxy, &raw, 0.5),
            added(&through_proxy, &raw, 0.99)
        );
        println!(
            "added by the engine over HttpProxy:    p50 {:+.2} ms, p99 {:+.2} ms",
            added(&engine, &through_proxy, 0.5),
            added(&engine, &through_proxy, 0.99)
        );
    }
    platform.shutdown().await;
    deployer.shutdown().await;
}

/// The text of a chat's `message`-th message; the same length on every path (see the top).
fn same_length_text(message: usize) -> String {
    format!("hello {message:04}")
}

fn visitor(chat: usize) -> UserId {
    10_000 + chat as UserId
}

/// The same load over the raw agent, the proxy and the engine.
async fn three_paths(
    platform: &Platform,
    proxy: &Arc<HttpProxy>,
    endpoints: &[AgentEndpoint],
    chats: usize,
    per_chat: usize,
    spread: Duration,
) -> [Figures; 3] {
    let endpoints = endpoints.to_vec();
    baal_core::install_crypto_provider();
    let http = reqwest::Client::new();
    let raw = {
        let endpoints = endpoints.clone();
        run("agent", chats, per_chat, spread, move |chat, message| {
            let endpoint = endpoints[chat % endpoints.len()].clone();
            let http = http.clone();
            async move {
                let body = ChatRequest::new(same_length_text(message), format!("raw-{chat}"), Role::Visitor);
                let response = http
                    .post(format!("{}/chat", endpoint.base_url))
                    .bearer_auth(endpoint.token.expose_secret())
                    .json(&body)
                    .send()
                    .await
                    .expect("agent answers");
                let mut bytes = response.bytes_stream();
                while let Some(chunk) = bytes.next().await {
                    chunk.expect("stream");
                }
            }
        })
        .await
    };
    let through_proxy = {
        let endpoints = endpoints.clone();
        let proxy = proxy.clone();
        run("proxy", chats, per_chat, spread, move |chat, message| {
            let endpoint = endpoints[chat % endpoints.len()].clone();
            let proxy = proxy.clone();
            async move {
                let request = ChatRequest::new(same_length_text(message), format!("proxy-{chat}"), Role::Visitor);
                let mut events = proxy.chat(&endpoint, request).await;
                while events.next().await.is_some() {}
            }
        })
        .await
    };
    let engine = {
        let platform = platform.clone();
        run("engine", chats, per_chat, spread, move |chat, message| {
            let platform = platform.clone();
            async move {
                let user = visitor(chat);
                platform.handle(Input::from_text(user, user, &same_length_text(message))).await.expect("chat");
            }
        })
        .await
    };
    [raw, through_proxy, engine]
}
