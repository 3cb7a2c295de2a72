//! `HttpProxy` against a hand-scripted HTTP server on loopback: for the failures a well-behaved
//! agent never produces on demand (HTTP 500, a body cut off mid-stream, a stall, a connection
//! closed before any answer). Streaming against the real `baal-agent` is in `local_deployer.rs`;
//! `set_budget`, `stop` and `pending_chats` are also tried against a real one here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baal_core::domain::Role;
use baal_core::proxy::http::{HttpProxy, HttpProxyOptions};
use baal_core::proxy::{
    AgentEndpoint, AgentEvent, Budget, BudgetStatus, ChatRequest, PENDING_TURN, Proxy, ProxyError, TURN_STOPPED,
};
use futures_util::StreamExt;
use secrecy::SecretString;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted server does with a request.
#[derive(Clone)]
enum Reply {
    /// A complete response: status line, content type, body.
    Full(u16, &'static str, String),
    /// A chunked SSE response: these chunks, then the connection is closed without the final
    /// chunk, as when an agent dies mid-answer.
    CutAfter(Vec<String>),
    /// SSE headers and these chunks, then silence while the connection stays open.
    StallAfter(Vec<String>),
    /// Close the connection as soon as the request is read.
    Close,
}

/// One request the server received: its request line, its `authorization` header and its body.
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    authorization: Option<String>,
    body: String,
}

struct Server {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn serve(reply: Reply) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let reply = reply.clone();
            let log = log.clone();
            tokio::spawn(async move { handle(socket, reply, log).await });
        }
    });
    Server { url, seen }
}

/// Serves one connection: complete replies keep it open for the next request (as agents do),
/// the failure scripts end it.
async fn handle(mut socket: TcpStream, reply: Reply, log: Arc<Mutex<Vec<Seen>>>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let head_end = loop {
            if let Some(pos) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            let n = socket.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        while buffer.len() < head_end + length {
            let n = socket.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8_lossy(&buffer[head_end..head_end + length]).to_string();
        buffer.drain(..head_end + length);
        log.lock().unwrap().push(Seen {
            line: head.lines().next().unwrap_or_default().to_owned(),
            authorization: header("authorization"),
            body,
        });
        let sse_head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        let chunked = |data: &str| format!("{:x}\r\n{data}\r\n", data.len());
        match &reply {
            Reply::Full(status, content_type, body) => {
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if socket.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
            }
            Reply::CutAfter(chunks) | Reply::StallAfter(chunks) => {
                let _ = socket.write_all(sse_head.as_bytes()).await;
                for data in chunks {
                    let _ = socket.write_all(chunked(data).as_bytes()).await;
                }
                let _ = socket.flush().await;
                if matches!(reply, Reply::StallAfter(_)) {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                return;
            }
            Reply::Close => return,
        }
    }
}

fn endpoint(url: &str) -> AgentEndpoint {
    AgentEndpoint::new(url, SecretString::from("s3cret-token"))
}

fn quick_proxy() -> HttpProxy {
    let mut options = HttpProxyOptions::default();
    options.read_timeout = Duration::from_millis(500);
    options.retry_delay = Duration::from_millis(20);
    HttpProxy::with_options(options).unwrap()
}

async fn chat(proxy: &HttpProxy, url: &str) -> Vec<AgentEvent> {
    proxy.chat(&endpoint(url), ChatRequest::new("hello", "42", Role::Owner)).await.collect().await
}

fn error_text(events: &[AgentEvent]) -> &str {
    assert!(events.last().is_some_and(AgentEvent::is_done), "{events:?}");
    match &events[events.len() - 2] {
        AgentEvent::Error { content } => content,
        other => panic!("expected an error before done, got {other:?}"),
    }
}

#[tokio::test]
async fn streams_events_and_drops_keepalives() {
    let body = [
        r#"{"type":"keepalive"}"#,
        r#"{"type":"text","content":"Hel"}"#,
        r#"{"type":"tool_use","name":"bash","input":"{}"}"#,
        r#"{"type":"brand_new"}"#,
        r#"{"type":"text","content":"lo"}"#,
        r#"{"type":"done"}"#,
    ]
    .map(|e| format!("data: {e}\n\n"))
    .concat();
    let server = serve(Reply::Full(200, "text/event-stream", body)).await;
    let events = chat(&quick_proxy(), &server.url).await;
    assert_eq!(
        events,
        vec![
            AgentEvent::Text { content: "Hel".into() },
            AgentEvent::ToolUse { name: "bash".into(), input: "{}".into() },
            AgentEvent::Text { content: "lo".into() },
            AgentEvent::done(),
        ]
    );
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen[0].line, "POST /chat HTTP/1.1");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer s3cret-token"));
}

#[tokio::test]
async fn http_errors_become_one_error_and_done() {
    let unauthorized = serve(Reply::Full(401, "application/json", r#"{"error":"unauthorized"}"#.into())).await;
    let events = chat(&quick_proxy(), &unauthorized.url).await;
    assert!(error_text(&events).contains("credentials"), "{events:?}");
    assert_eq!(events.len(), 2);

    let failing = serve(Reply::Full(500, "text/plain", "boom".into())).await;
    let events = chat(&quick_proxy(), &failing.url).await;
    assert!(error_text(&events).contains("HTTP 500"), "{events:?}");
    assert_eq!(failing.seen.lock().unwrap().len(), 1, "an HTTP error is never retried");
}

#[tokio::test]
async fn a_stream_cut_mid_answer_keeps_what_arrived() {
    let server = serve(Reply::CutAfter(vec!["data: {\"type\":\"text\",\"content\":\"partial\"}\n\n".into()])).await;
    let events = chat(&quick_proxy(), &server.url).await;
    assert_eq!(events[0], AgentEvent::Text { content: "partial".into() });
    assert!(error_text(&events).contains("broke"), "{events:?}");
    assert_eq!(events.len(), 3);
}

#[tokio::test]
async fn a_silent_agent_is_reported_as_stopped() {
    let server = serve(Reply::StallAfter(vec!["data: {\"type\":\"text\",\"content\":\"thinking\"}\n\n".into()])).await;
    let events = chat(&quick_proxy(), &server.url).await;
    assert_eq!(events[0], AgentEvent::Text { content: "thinking".into() });
    assert!(error_text(&events).contains("stopped responding"), "{events:?}");
}

#[tokio::test]
async fn a_request_that_may_have_arrived_is_never_sent_twice() {
    let server = serve(Reply::Close).await;
    let events = chat(&quick_proxy(), &server.url).await;
    error_text(&events);
    assert_eq!(server.seen.lock().unwrap().len(), 1, "the message must not be posted again");
}

#[tokio::test]
async fn an_agent_that_is_down_is_unreachable() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let proxy = quick_proxy();
    let events = chat(&proxy, &url).await;
    assert!(error_text(&events).contains("could not reach"), "{events:?}");
    assert_eq!(proxy.health(&endpoint(&url)).await.unwrap_err(), ProxyError::Unreachable);
    assert_eq!(proxy.pending(&endpoint(&url), None).await.unwrap_err(), ProxyError::Unreachable);
}

#[tokio::test]
async fn pending_files_and_reset_use_the_documented_requests() {
    let pending = serve(Reply::Full(
        200,
        "application/json",
        r#"{"messages":[{"chat_id":"7","content":"tick","source":"heartbeat","created_at":"x"}]}"#.into(),
    ))
    .await;
    let proxy = quick_proxy();
    let messages = proxy.pending(&endpoint(&pending.url), Some("7 &x")).await.unwrap();
    assert_eq!(messages[0].content, "tick");
    assert_eq!(messages[0].id, None, "an agent that predates leases sends no ids");
    assert_eq!(pending.seen.lock().unwrap()[0].line, "GET /pending?chat_id=7+%26x&lease=300 HTTP/1.1");

    let file = serve(Reply::Full(200, "application/octet-stream", "bytes!".into())).await;
    let got = proxy.file(&endpoint(&file.url), "out/my report#1.txt").await.unwrap();
    assert_eq!((got.file_name.as_str(), got.bytes.as_slice()), ("my report#1.txt", &b"bytes!"[..]));
    assert_eq!(file.seen.lock().unwrap()[0].line, "GET /files/out/my%20report%231.txt HTTP/1.1");

    let mut small = HttpProxyOptions::default();
    small.max_file_bytes = 3;
    let small = HttpProxy::with_options(small).unwrap();
    assert_eq!(small.file(&endpoint(&file.url), "a").await.unwrap_err(), ProxyError::TooLarge { limit_bytes: 3 });

    let refused = serve(Reply::Full(403, "application/json", r#"{"error":"denied"}"#.into())).await;
    assert_eq!(proxy.file(&endpoint(&refused.url), "../x").await.unwrap_err(), ProxyError::Status(403));

    let reset = serve(Reply::Full(200, "application/json", r#"{"status":"ok","deleted":4}"#.into())).await;
    assert_eq!(proxy.reset(&endpoint(&reset.url), "a/b").await.unwrap(), 4);
    assert_eq!(reset.seen.lock().unwrap()[0].line, "DELETE /chat/a%2Fb HTTP/1.1");

    let ack = serve(Reply::Full(200, "application/json", r#"{"status":"ok","deleted":2}"#.into())).await;
    proxy.ack_pending(&endpoint(&ack.url), "7", &[3, 5]).await.unwrap();
    proxy.ack_pending(&endpoint(&ack.url), "7", &[]).await.unwrap();
    let seen = ack.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "nothing to acknowledge, no request");
    assert_eq!(seen[0].line, "POST /pending/ack HTTP/1.1");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer s3cret-token"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&seen[0].body).unwrap(),
        json!({"ids": [3, 5], "chat_id": "7"})
    );
    // More ids than one request may carry go in several requests, in order.
    let many = serve(Reply::Full(200, "application/json", r#"{"status":"ok","deleted":0}"#.into())).await;
    let ids: Vec<i64> = (1..=2500).collect();
    proxy.ack_pending(&endpoint(&many.url), "7", &ids).await.unwrap();
    let sent: Vec<Vec<i64>> = many
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|request| serde_json::from_str::<baal_core::proxy::PendingAck>(&request.body).unwrap().ids)
        .collect();
    assert_eq!(sent.iter().map(Vec::len).collect::<Vec<_>>(), [1000, 1000, 500]);
    assert_eq!(sent.concat(), ids);
    let old_agent = serve(Reply::Full(404, "text/plain", "Not Found".into())).await;
    assert_eq!(proxy.ack_pending(&endpoint(&old_agent.url), "7", &[1]).await.unwrap_err(), ProxyError::Status(404));
    // A Python agent meters nothing: no records, the same cursor, not an error.
    let python = proxy.usage(&endpoint(&old_agent.url), 12).await.unwrap();
    assert_eq!((python.records.len(), python.next), (0, 12));

    let page = r#"{"records":[{"id":13,"chat_id":"7","cause":"heartbeat","day":"2025-01-02","model":"m","prompt_tokens":5,"completion_tokens":1,"estimated":false}],"next":13}"#;
    let usage = serve(Reply::Full(200, "application/json", page.into())).await;
    let read = proxy.usage(&endpoint(&usage.url), 12).await.unwrap();
    assert_eq!((read.records[0].cause, read.next), (baal_core::proxy::UsageCause::Heartbeat, 13));
    let seen = usage.seen.lock().unwrap().clone();
    assert_eq!(seen[0].line, "GET /usage?since=12 HTTP/1.1");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer s3cret-token"));
    let refused = serve(Reply::Full(401, "application/json", r#"{"error":"unauthorized"}"#.into())).await;
    assert_eq!(proxy.usage(&endpoint(&refused.url), 0).await.unwrap_err(), ProxyError::Unauthorized);

    let bad_json = serve(Reply::Full(200, "application/json", "{".into())).await;
    assert_eq!(proxy.health(&endpoint(&bad_json.url)).await.unwrap_err(), ProxyError::Protocol);
    assert_eq!(bad_json.seen.lock().unwrap()[0].authorization, None, "/health is sent without the secret");
}

#[tokio::test]
async fn set_budget_puts_it_and_an_agent_without_budgets_is_not_an_error() {
    let proxy = quick_proxy();
    let budget = Budget::new(Some(100_000), None);
    let agent = serve(Reply::Full(200, "application/json", "{}".into())).await;
    assert!(proxy.set_budget(&endpoint(&agent.url), &budget).await.unwrap());
    let seen = agent.seen.lock().unwrap().clone();
    assert_eq!(seen[0].line, "PUT /budget HTTP/1.1");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer s3cret-token"));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&seen[0].body).unwrap(), json!({"daily_tokens": 100_000}));
    // A Python agent has no `/budget` (404), or not for PUT (405): it keeps no budget.
    for status in [404, 405] {
        let python = serve(Reply::Full(status, "text/plain", "no".into())).await;
        assert!(!proxy.set_budget(&endpoint(&python.url), &budget).await.unwrap(), "{status}");
    }
    let refused = serve(Reply::Full(401, "application/json", r#"{"error":"unauthorized"}"#.into())).await;
    assert_eq!(proxy.set_budget(&endpoint(&refused.url), &budget).await.unwrap_err(), ProxyError::Unauthorized);
    let broken = serve(Reply::Full(500, "application/json", r#"{"error":"x"}"#.into())).await;
    assert_eq!(proxy.set_budget(&endpoint(&broken.url), &budget).await.unwrap_err(), ProxyError::Status(500));
    let down = endpoint("http://127.0.0.1:9");
    assert_eq!(proxy.set_budget(&down, &budget).await.unwrap_err(), ProxyError::Unreachable);
}

#[tokio::test]
async fn stop_and_pending_chats_use_the_documented_requests_and_old_agents_are_not_an_error() {
    let proxy = quick_proxy();
    let stopped = serve(Reply::Full(200, "application/json", r#"{"stopped":true}"#.into())).await;
    assert_eq!(proxy.stop(&endpoint(&stopped.url), "4/2").await.unwrap(), Some(true));
    let seen = stopped.seen.lock().unwrap().clone();
    assert_eq!(seen[0].line, "POST /chat/4%2F2/stop HTTP/1.1");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer s3cret-token"));
    let idle = serve(Reply::Full(200, "application/json", r#"{"stopped":false}"#.into())).await;
    assert_eq!(proxy.stop(&endpoint(&idle.url), "42").await.unwrap(), Some(false));

    let chats = serve(Reply::Full(200, "application/json", r#"{"chats":["7","1001"]}"#.into())).await;
    assert_eq!(proxy.pending_chats(&endpoint(&chats.url)).await.unwrap(), Some(vec!["7".into(), "1001".into()]));
    let seen = chats.seen.lock().unwrap().clone();
    assert_eq!(seen[0].line, "GET /pending/chats HTTP/1.1");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer s3cret-token"));

    // An agent from before these routes (404), or one with the path for another method (405):
    // the caller drops the stream instead of stopping, and falls back to the owner's chat.
    for status in [404, 405] {
        let old = serve(Reply::Full(status, "text/plain", "no".into())).await;
        assert_eq!(proxy.stop(&endpoint(&old.url), "42").await.unwrap(), None, "{status}");
        assert_eq!(proxy.pending_chats(&endpoint(&old.url)).await.unwrap(), None, "{status}");
    }
    let refused = serve(Reply::Full(401, "application/json", r#"{"error":"unauthorized"}"#.into())).await;
    assert_eq!(proxy.stop(&endpoint(&refused.url), "42").await.unwrap_err(), ProxyError::Unauthorized);
    assert_eq!(proxy.pending_chats(&endpoint(&refused.url)).await.unwrap_err(), ProxyError::Unauthorized);
    let broken = serve(Reply::Full(500, "application/json", r#"{"error":"x"}"#.into())).await;
    assert_eq!(proxy.stop(&endpoint(&broken.url), "42").await.unwrap_err(), ProxyError::Status(500));
    assert_eq!(proxy.pending_chats(&endpoint(&broken.url)).await.unwrap_err(), ProxyError::Status(500));
    let garbled = serve(Reply::Full(200, "application/json", r#"{"chats":"7"}"#.into())).await;
    assert_eq!(proxy.stop(&endpoint(&garbled.url), "42").await.unwrap_err(), ProxyError::Protocol);
    assert_eq!(proxy.pending_chats(&endpoint(&garbled.url)).await.unwrap_err(), ProxyError::Protocol);
    let down = endpoint("http://127.0.0.1:9");
    assert_eq!(proxy.stop(&down, "42").await.unwrap_err(), ProxyError::Unreachable);
    assert_eq!(proxy.pending_chats(&down).await.unwrap_err(), ProxyError::Unreachable);
}

#[tokio::test]
async fn a_real_agent_stops_a_turn_and_lists_the_chat_a_durable_turn_queued_for() {
    use baal_core::testing::openai::{Reply as LlmReply, ScriptedLlm};
    let llm = ScriptedLlm::start().await;
    // The first turn's model never answers: it runs until it is stopped.
    llm.push(LlmReply::Hang);
    let real = start_real_agent_with("s3cret-token", &llm.base_url());
    let agent = endpoint(&real.url);
    let proxy = HttpProxy::new().unwrap();
    let stream = proxy.chat(&agent, ChatRequest::new("hi", "42", Role::Owner).durable()).await;
    for _ in 0..2000 {
        if !llm.completion_requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(proxy.stop(&agent, "42").await.unwrap(), Some(true));
    let events: Vec<AgentEvent> = stream.collect().await;
    assert_eq!(events, [AgentEvent::Error { content: TURN_STOPPED.into() }, AgentEvent::done()]);
    assert_eq!(proxy.stop(&agent, "42").await.unwrap(), Some(false));
    assert_eq!(proxy.pending_chats(&agent).await.unwrap(), Some(Vec::new()));

    // A durable visitor's turn whose stream is dropped at once: its answer is queued for that
    // visitor's chat, which the agent then lists.
    drop(proxy.chat(&agent, ChatRequest::new("hello", "777", Role::Visitor).durable()).await);
    let mut listed = None;
    for _ in 0..2000 {
        listed = proxy.pending_chats(&agent).await.unwrap();
        if listed.as_ref().is_some_and(|chats| !chats.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(listed, Some(vec!["777".to_owned()]));
    let queued = proxy.pending(&agent, Some("777")).await.unwrap();
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!((queued[0].source.as_str(), queued[0].content.as_str()), (PENDING_TURN, "echo: hello"));
}

/// A real `baal-agent` (built by `cargo build --workspace`, or `BAAL_AGENT_BIN`) on loopback,
/// killed when dropped.
struct RealAgent {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for RealAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_real_agent(secret: &str) -> RealAgent {
    start_real_agent_with(secret, "http://127.0.0.1:9/v1")
}

/// A real agent whose model is at `llm_url`.
fn start_real_agent_with(secret: &str, llm_url: &str) -> RealAgent {
    use std::io::BufRead as _;
    let explicit = std::env::var_os("BAAL_AGENT_BIN").map(std::path::PathBuf::from);
    let binary = baal_core::deploy::local::find_agent_binary(explicit.as_deref())
        .unwrap_or_else(|err| panic!("{err} (for this test: cargo build --workspace)"));
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(binary)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", "0")
        .env("BIND_ADDR", "127.0.0.1")
        .env("DB_PATH", dir.path().join("agent.db"))
        .env("WORKSPACE_PATH", dir.path().join("workspace"))
        .env("LIBERTAI_API_BASE_URL", llm_url)
        .env("LIBERTAI_API_KEY", "k")
        .env("AGENT_SECRET", secret)
        .env("HEARTBEAT_INTERVAL", "0")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start baal-agent");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    RealAgent { url: format!("http://{addr}"), child, _dir: dir }
}

#[tokio::test]
async fn set_budget_is_kept_by_a_real_agent() {
    let agent = start_real_agent("s3cret-token");
    let proxy = quick_proxy();
    let budget = Budget::new(Some(50_000), Some(5_000));
    assert!(proxy.set_budget(&endpoint(&agent.url), &budget).await.unwrap());
    let status: BudgetStatus = reqwest::Client::new()
        .get(format!("{}/budget", agent.url))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status.budget, budget);
    let wrong = AgentEndpoint::new(&agent.url, SecretString::from("wrong"));
    assert_eq!(proxy.set_budget(&wrong, &budget).await.unwrap_err(), ProxyError::Unauthorized);
}

/// Prints what `HttpProxy` costs per chat: 200 concurrent chats, each a full `/chat` exchange
/// with a loopback SSE server that answers at once (so the time is the proxy's, plus loopback
/// HTTP). Run: `cargo test --workspace --test proxy_http -- --ignored --nocapture proxy_overhead`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints figures, asserts nothing about time"]
async fn proxy_overhead() {
    let body = [r#"{"type":"text","content":"Hello"}"#, r#"{"type":"text","content":" there"}"#, r#"{"type":"done"}"#]
        .map(|e| format!("data: {e}\n\n"))
        .concat();
    let server = serve(Reply::Full(200, "text/event-stream", body)).await;
    let proxy = HttpProxy::new().unwrap();
    let agent = endpoint(&server.url);
    for (concurrency, rounds) in [(1, 200), (200, 10)] {
        let started = std::time::Instant::now();
        let mut latencies = Vec::new();
        for _ in 0..rounds {
            let chats = (0..concurrency).map(|i| {
                let (proxy, agent) = (proxy.clone(), agent.clone());
                tokio::spawn(async move {
                    let start = std::time::Instant::now();
                    let events: Vec<_> =
                        proxy.chat(&agent, ChatRequest::new("hi", i.to_string(), Role::Owner)).await.collect().await;
                    assert!(events.last().is_some_and(AgentEvent::is_done));
                    start.elapsed()
                })
            });
            for chat in futures_util::future::join_all(chats).await {
                latencies.push(chat.unwrap());
            }
        }
        let total = started.elapsed();
        latencies.sort();
        let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        println!(
            "proxy_overhead: {} chats ({concurrency} concurrent) in {total:.2?}: {:.0} chats/s, p50 {:.2?}, p99 {:.2?}",
            latencies.len(),
            latencies.len() as f64 / total.as_secs_f64(),
            pick(0.5),
            pick(0.99)
        );
    }
}
