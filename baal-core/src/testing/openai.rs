//! [`ScriptedLlm`]: a scripted OpenAI-compatible server on loopback.
//!
//! It is a real HTTP server on `127.0.0.1:<ephemeral>` that answers
//! `POST /v1/chat/completions` the way the OpenAI API does: with `stream: true` it sends
//! `chat.completion.chunk` server-sent events (a role chunk, text split into several deltas,
//! tool calls whose arguments are split across chunks, a `finish_reason` chunk, then
//! `data: [DONE]`); without it, one `chat.completion` JSON object. It also answers
//! `GET /v1/credits/balance` (LibertAI's API-key check) and records every request it saw.
//!
//! Usage: a streamed request that asks for it (`stream_options.include_usage`) gets a last chunk
//! with no choices and a `usage` object, and a whole answer always carries one, unless
//! [`ScriptedLlm::omit_usage`] makes it behave like servers that report none. The numbers are
//! deterministic, so tests can check what the agent counted: the prompt is the bytes of the
//! request's `messages` JSON (as serde_json prints it) / 4, the completion the characters of the
//! reply (text, reasoning, tool names and arguments) / 4, each at least 1; what was served is
//! kept in [`RecordedRequest::usage`].
//!
//! Each completion request takes the next scripted [`Reply`] from a queue; when the queue is empty
//! the [`Fallback`] answers (by default it echoes the last user message), so long-running
//! benchmarks and end-to-end tests need not script every turn.
//!
//! ```no_run
//! # async fn demo() {
//! use baal_core::testing::openai::{Reply, ScriptedLlm};
//!
//! let llm = ScriptedLlm::start().await;
//! llm.push(Reply::tool_call("bash", r#"{"command":"ls"}"#));
//! llm.push(Reply::text("Done."));
//! llm.push(Reply::status(500)); // the next request gets HTTP 500
//! // Point the client (or `LIBERTAI_API_BASE_URL`) at `llm.base_url()` ("http://127.0.0.1:PORT/v1").
//! let seen = llm.requests(); // every request, with its JSON body
//! # }
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use poem::http::StatusCode;
use poem::listener::TcpAcceptor;
use poem::web::{Data, Json};
use poem::{Body, EndpointExt, Request, Response, Route, Server, get, handler, post};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// One scripted answer to a chat-completion request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply {
    /// An assistant message: optional text and zero or more tool calls.
    Message {
        /// Assistant text (streamed as several deltas).
        content: Option<String>,
        /// Tool calls as `(name, arguments JSON string)`; ids are generated (`call_N`).
        tool_calls: Vec<(String, String)>,
    },
    /// A thinking model's answer: `reasoning` streamed as `reasoning_content` deltas first, then
    /// `content` (which may itself hold inline `<think>…</think>`).
    Reasoned {
        /// The reasoning, never meant for the user.
        reasoning: String,
        /// The answer.
        content: String,
    },
    /// An HTTP error status with an OpenAI-style error body (500, 429, 401, …).
    Status(u16),
    /// Send the response head and the first chunk, then nothing: the client's read timeout fires.
    Stall,
    /// Accept the request and never answer at all (not even headers).
    Hang,
}

impl Reply {
    /// A plain text answer.
    pub fn text(content: impl Into<String>) -> Self {
        Reply::Message { content: Some(content.into()), tool_calls: Vec::new() }
    }

    /// A thinking model's answer: reasoning in its own field, then `content`.
    pub fn reasoned(reasoning: impl Into<String>, content: impl Into<String>) -> Self {
        Reply::Reasoned { reasoning: reasoning.into(), content: content.into() }
    }

    /// One tool call, without text.
    pub fn tool_call(name: impl Into<String>, arguments: impl Into<String>) -> Self {
        Reply::Message { content: None, tool_calls: vec![(name.into(), arguments.into())] }
    }

    /// Several tool calls in one message, with optional narration text.
    pub fn tool_calls(content: Option<&str>, calls: &[(&str, &str)]) -> Self {
        Reply::Message {
            content: content.map(str::to_owned),
            tool_calls: calls.iter().map(|(n, a)| ((*n).to_owned(), (*a).to_owned())).collect(),
        }
    }

    /// An HTTP error.
    pub fn status(code: u16) -> Self {
        Reply::Status(code)
    }
}

/// What answers when no scripted reply is queued.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fallback {
    /// `echo: <last user message>` (the default).
    Echo,
    /// Always this text.
    Text(String),
    /// Always this HTTP status.
    Status(u16),
}

/// One request the server received.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The bearer token sent, if any (test keys only; never a real secret).
    pub bearer: Option<String>,
    /// The JSON body (`Null` when there was none).
    pub body: Value,
    /// When it arrived (benchmarks time the model from here).
    pub at: std::time::Instant,
    /// The `(prompt_tokens, completion_tokens)` the answer reported, if it reported usage.
    pub usage: Option<(u64, u64)>,
}

impl RecordedRequest {
    /// The `messages` array of a chat-completion request.
    pub fn messages(&self) -> Vec<Value> {
        self.body.get("messages").and_then(Value::as_array).cloned().unwrap_or_default()
    }

    /// Names of the tools offered in a chat-completion request.
    pub fn tool_names(&self) -> Vec<String> {
        self.body
            .get("tools")
            .and_then(Value::as_array)
            .map(|tools| {
                tools
                    .iter()
                    .filter_map(|t| t.pointer("/function/name").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Debug)]
struct Script {
    replies: VecDeque<Reply>,
    keyed: Vec<(String, VecDeque<Reply>)>,
    fallback: Fallback,
    requests: Vec<RecordedRequest>,
    chunk_delay: Duration,
    omit_ids: bool,
    omit_usage: bool,
    accepted_keys: Option<Vec<String>>,
    balance: f64,
    next_call: u64,
}

type Shared = Arc<Mutex<Script>>;

/// A running scripted OpenAI-compatible server. Dropping it stops the server.
pub struct ScriptedLlm {
    addr: SocketAddr,
    script: Shared,
    stop: Option<oneshot::Sender<()>>,
}

impl ScriptedLlm {
    /// Starts a server on `127.0.0.1:0` with an empty script and the echo fallback.
    ///
    /// # Panics
    /// If no loopback port can be bound (a broken test machine); programs that would rather
    /// report that use [`ScriptedLlm::try_start`].
    pub async fn start() -> ScriptedLlm {
        match ScriptedLlm::try_start().await {
            Ok(llm) => llm,
            Err(err) => panic!("cannot start the scripted LLM on 127.0.0.1: {err}"),
        }
    }

    /// Starts a server on `127.0.0.1:0` with an empty script and the echo fallback, or says why
    /// no loopback port could be bound.
    pub async fn try_start() -> std::io::Result<ScriptedLlm> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acceptor = TcpAcceptor::from_tokio(listener)?;
        let script: Shared = Arc::new(Mutex::new(Script {
            replies: VecDeque::new(),
            keyed: Vec::new(),
            fallback: Fallback::Echo,
            requests: Vec::new(),
            chunk_delay: Duration::ZERO,
            omit_ids: false,
            omit_usage: false,
            accepted_keys: None,
            balance: 100.0,
            next_call: 0,
        }));
        let app = Route::new()
            .at("/v1/chat/completions", post(completions))
            .at("/v1/credits/balance", get(credits_balance))
            .data(script.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(
                    app,
                    async {
                        let _ = stopped.await;
                    },
                    Some(Duration::from_millis(100)),
                )
                .await;
        });
        Ok(ScriptedLlm { addr, script, stop: Some(stop) })
    }

    /// The OpenAI base URL to configure clients with: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The socket address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues a reply for the next chat-completion request.
    pub fn push(&self, reply: Reply) -> &Self {
        self.lock().replies.push_back(reply);
        self
    }

    /// Queues a reply for the next request whose last user message contains `needle`; such
    /// replies are used before the general queue. For concurrent conversations (subagents,
    /// several chats) whose order of requests is not fixed.
    pub fn push_when(&self, needle: impl Into<String>, reply: Reply) -> &Self {
        let needle = needle.into();
        let mut script = self.lock();
        match script.keyed.iter_mut().find(|(n, _)| *n == needle) {
            Some((_, queue)) => queue.push_back(reply),
            None => script.keyed.push((needle, VecDeque::from([reply]))),
        }
        self
    }

    /// Queues a plain text reply.
    pub fn push_text(&self, content: impl Into<String>) -> &Self {
        self.push(Reply::text(content))
    }

    /// Queues a reply with one tool call.
    pub fn push_tool_call(&self, name: impl Into<String>, arguments: impl Into<String>) -> &Self {
        self.push(Reply::tool_call(name, arguments))
    }

    /// Sets what answers when the queue is empty.
    pub fn set_fallback(&self, fallback: Fallback) -> &Self {
        self.lock().fallback = fallback;
        self
    }

    /// Waits this long before each streamed chunk (simulates the model's own time).
    pub fn set_chunk_delay(&self, delay: Duration) -> &Self {
        self.lock().chunk_delay = delay;
        self
    }

    /// Sends chunks without `id`, `created` and `model`, as some OpenAI-compatible servers do.
    pub fn omit_chunk_ids(&self, omit: bool) -> &Self {
        self.lock().omit_ids = omit;
        self
    }

    /// Reports no token usage, even when asked, as some OpenAI-compatible servers do.
    pub fn omit_usage(&self, omit: bool) -> &Self {
        self.lock().omit_usage = omit;
        self
    }

    /// Accepts only these API keys (401 otherwise). By default any non-empty key is accepted.
    pub fn accept_keys(&self, keys: &[&str]) -> &Self {
        self.lock().accepted_keys = Some(keys.iter().map(|k| (*k).to_owned()).collect());
        self
    }

    /// The balance `GET /v1/credits/balance` reports.
    pub fn set_balance(&self, balance: f64) -> &Self {
        self.lock().balance = balance;
        self
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// The chat-completion requests received so far, oldest first.
    pub fn completion_requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.iter().filter(|r| r.path.ends_with("/chat/completions")).cloned().collect()
    }

    /// What the server reported for its chat-completion requests `range` (by their order of
    /// arrival), as one total. Panics if one of them reported none (an error, or usage omitted).
    pub fn served(&self, range: impl std::ops::RangeBounds<usize>) -> crate::wire::TurnUsage {
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        let mut total = crate::wire::TurnUsage::default();
        for request in &self.completion_requests()[bounds] {
            let (prompt, completion) = request.usage.expect("the scripted LLM reported usage");
            total.add(prompt, completion, false);
        }
        total
    }

    /// How many scripted replies are still queued.
    pub fn queued(&self) -> usize {
        let script = self.lock();
        script.replies.len() + script.keyed.iter().map(|(_, q)| q.len()).sum::<usize>()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for ScriptedLlm {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl std::fmt::Debug for ScriptedLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedLlm").field("addr", &self.addr).finish_non_exhaustive()
    }
}

fn bearer_of(req: &Request) -> Option<String> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    Some(value.strip_prefix("Bearer ").unwrap_or(value).trim().to_owned())
}

fn key_ok(script: &Script, bearer: Option<&str>) -> bool {
    match (bearer, &script.accepted_keys) {
        (None, _) => false,
        (Some(key), None) => !key.is_empty(),
        (Some(key), Some(keys)) => keys.iter().any(|k| k == key),
    }
}

fn error_response(code: u16) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (kind, message) = match code {
        401 => ("invalid_request_error", "Incorrect API key provided."),
        429 => ("rate_limit_exceeded", "Rate limit reached, please retry later."),
        _ => ("server_error", "The server had an error while processing your request."),
    };
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(json!({"error": {"message": message, "type": kind, "code": code}}).to_string())
}

#[handler]
fn credits_balance(req: &Request, Data(script): Data<&Shared>) -> Response {
    let mut script = script.lock().unwrap_or_else(|p| p.into_inner());
    let bearer = bearer_of(req);
    script.requests.push(RecordedRequest {
        method: "GET".into(),
        path: req.uri().path().to_owned(),
        bearer: bearer.clone(),
        body: Value::Null,
        at: std::time::Instant::now(),
        usage: None,
    });
    if !key_ok(&script, bearer.as_deref()) {
        return error_response(401);
    }
    Response::builder().content_type("application/json").body(json!({"balance": script.balance}).to_string())
}

#[handler]
async fn completions(req: &Request, body: Json<Value>, Data(script): Data<&Shared>) -> Response {
    let Json(body) = body;
    let bearer = bearer_of(req);
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let usage_asked = !stream || body.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true);
    let (reply, delay, omit_ids, call_base, usage) = {
        let mut script = script.lock().unwrap_or_else(|p| p.into_inner());
        script.requests.push(RecordedRequest {
            method: "POST".into(),
            path: req.uri().path().to_owned(),
            bearer: bearer.clone(),
            body: body.clone(),
            at: std::time::Instant::now(),
            usage: None,
        });
        if !key_ok(&script, bearer.as_deref()) {
            return error_response(401);
        }
        let last_user = last_user_message(&body);
        let keyed = script
            .keyed
            .iter_mut()
            .find(|(needle, queue)| !queue.is_empty() && last_user.contains(needle.as_str()))
            .and_then(|(_, queue)| queue.pop_front());
        let reply = keyed.or_else(|| script.replies.pop_front()).unwrap_or_else(|| match &script.fallback {
            Fallback::Echo => Reply::text(format!("echo: {last_user}")),
            Fallback::Text(t) => Reply::text(t.clone()),
            Fallback::Status(code) => Reply::Status(*code),
        });
        let call_base = script.next_call;
        if let Reply::Message { tool_calls, .. } = &reply {
            script.next_call += tool_calls.len() as u64;
        }
        let usage = (usage_asked && !script.omit_usage).then(|| served_usage(&body, &reply)).flatten();
        if let Some(recorded) = script.requests.last_mut() {
            recorded.usage = usage;
        }
        (reply, script.chunk_delay, script.omit_ids, call_base, usage)
    };
    let model = body.get("model").and_then(Value::as_str).unwrap_or("scripted").to_owned();
    match reply {
        Reply::Status(code) => error_response(code),
        Reply::Hang => std::future::pending::<Response>().await,
        Reply::Stall => {
            let head = chunk(&model, omit_ids, json!({"role": "assistant", "content": ""}), None);
            let events = futures_util::stream::once(async move { sse(&head) }).chain(futures_util::stream::pending());
            sse_response(events.boxed())
        }
        Reply::Reasoned { reasoning, content } => {
            if stream {
                let chunks = streamed_chunks(&model, omit_ids, Some(&reasoning), Some(&content), &[], usage);
                sse_response(delayed(chunks, delay))
            } else {
                whole_completion(&model, Some(&content), &[], usage)
            }
        }
        Reply::Message { content, tool_calls } => {
            let calls: Vec<(String, String, String)> = tool_calls
                .into_iter()
                .enumerate()
                .map(|(i, (name, args))| (format!("call_{}", call_base + i as u64), name, args))
                .collect();
            if stream {
                let chunks = streamed_chunks(&model, omit_ids, None, content.as_deref(), &calls, usage);
                sse_response(delayed(chunks, delay))
            } else {
                whole_completion(&model, content.as_deref(), &calls, usage)
            }
        }
    }
}

/// The usage reported for `reply` to `body` (see the module docs); `None` for replies that are
/// not answers (errors, stalls).
fn served_usage(body: &Value, reply: &Reply) -> Option<(u64, u64)> {
    let chars = |text: &str| text.chars().count() as u64;
    let written = match reply {
        Reply::Message { content, tool_calls } => {
            content.as_deref().map_or(0, chars)
                + tool_calls.iter().map(|(name, args)| chars(name) + chars(args)).sum::<u64>()
        }
        Reply::Reasoned { reasoning, content } => chars(reasoning) + chars(content),
        Reply::Status(_) | Reply::Stall | Reply::Hang => return None,
    };
    let prompt = body.get("messages").map_or(0, |m| m.to_string().len() as u64);
    Some(((prompt / 4).max(1), (written / 4).max(1)))
}

fn usage_json((prompt, completion): (u64, u64)) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

fn last_user_message(body: &Value) -> String {
    body.get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user")))
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

fn sse(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

fn sse_response(events: BoxStream<'static, Bytes>) -> Response {
    let body = events.map(Ok::<_, std::io::Error>).chain(futures_util::stream::empty());
    Response::builder()
        .content_type("text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_bytes_stream(body))
}

fn chunk(model: &str, omit_ids: bool, delta: Value, finish_reason: Option<&str>) -> Value {
    let choice = json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason});
    if omit_ids {
        json!({"object": "chat.completion.chunk", "choices": [choice]})
    } else {
        json!({
            "id": "chatcmpl-scripted",
            "object": "chat.completion.chunk",
            "created": chrono::Utc::now().timestamp(),
            "model": model,
            "system_fingerprint": null,
            "choices": [choice],
        })
    }
}

/// Splits text into pieces of a few characters, on char boundaries, as a tokenizer would.
fn pieces(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(size.max(1)).map(|c| c.iter().collect()).collect()
}

/// The chunks, each sent `delay` after the one before.
fn delayed(chunks: Vec<Bytes>, delay: Duration) -> BoxStream<'static, Bytes> {
    futures_util::stream::iter(chunks)
        .then(move |c| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            c
        })
        .boxed()
}

fn streamed_chunks(
    model: &str,
    omit_ids: bool,
    reasoning: Option<&str>,
    content: Option<&str>,
    calls: &[(String, String, String)],
    usage: Option<(u64, u64)>,
) -> Vec<Bytes> {
    let mut out = vec![sse(&chunk(model, omit_ids, json!({"role": "assistant", "content": ""}), None))];
    for piece in pieces(reasoning.unwrap_or_default(), 4) {
        out.push(sse(&chunk(model, omit_ids, json!({"reasoning_content": piece}), None)));
    }
    if let Some(text) = content {
        for piece in pieces(text, 4) {
            out.push(sse(&chunk(model, omit_ids, json!({"content": piece}), None)));
        }
    }
    for (index, (id, name, args)) in calls.iter().enumerate() {
        let head = json!({"tool_calls": [{
            "index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}
        }]});
        out.push(sse(&chunk(model, omit_ids, head, None)));
        for piece in pieces(args, 7) {
            let delta = json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]});
            out.push(sse(&chunk(model, omit_ids, delta, None)));
        }
    }
    let finish = if calls.is_empty() { "stop" } else { "tool_calls" };
    let finish = sse(&chunk(model, omit_ids, json!({}), Some(finish)));
    match usage {
        // As OpenAI sends it: a chunk of its own, with no choices, right after the finish; in
        // the same write, so that asking for usage does not make the scripted model slower by a
        // chunk delay (the agent benchmark compares against the model alone).
        Some(usage) => {
            let mut last = chunk(model, omit_ids, json!({}), None);
            last["choices"] = json!([]);
            last["usage"] = usage_json(usage);
            out.push([finish, sse(&last)].concat().into());
        }
        None => out.push(finish),
    }
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

fn whole_completion(
    model: &str,
    content: Option<&str>,
    calls: &[(String, String, String)],
    usage: Option<(u64, u64)>,
) -> Response {
    let mut message = json!({"role": "assistant", "content": content});
    if !calls.is_empty() {
        message["tool_calls"] = calls
            .iter()
            .map(
                |(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}),
            )
            .collect();
    }
    let finish = if calls.is_empty() { "stop" } else { "tool_calls" };
    let mut body = json!({
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": chrono::Utc::now().timestamp(),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    });
    if let Some(usage) = usage {
        body["usage"] = usage_json(usage);
    }
    Response::builder().content_type("application/json").body(body.to_string())
}
