//! The HTTP API of one agent (wire-compatible with the Python agent): `POST /chat` (SSE),
//! `GET /pending`, `GET /files/{path}`, `DELETE /chat/{chat_id}`, `GET /health`; and, new in
//! Baal in Rust, leased pending messages (`GET /pending?lease=` then `POST /pending/ack`) and the
//! chats that have some (`GET /pending/chats`), stopping a chat's turn
//! (`POST /chat/{chat_id}/stop`), the metering of model calls (`GET /usage?since=&limit=`) and
//! the agent's budget (`GET /budget`, `PUT /budget`), and its metrics (`GET /metrics`, Prometheus
//! text).
//! Bearer auth on all but `/health`. Errors are JSON (`{"error": "…"}`), never a bare 500.

use std::sync::Arc;
use std::time::Duration;

use baal_core::agent::Agent;
use baal_core::agent::auth::BearerCheck;
use baal_core::agent::tools::MAX_SEND_FILE_BYTES;
use baal_core::agent::tools::workspace::Workspace as PathGate;
use baal_core::telemetry::PrometheusHandle;
use baal_core::wire::{
    Budget, ChatRequest, HealthResponse, MAX_ACK_IDS, MAX_USAGE_RECORDS, PendingAck, PendingChats, PendingResponse,
    StopResponse, UsageResponse,
};
use futures_util::StreamExt;
use poem::http::StatusCode;
use poem::web::sse::{Event, SSE};
use poem::web::{Data, Json, Path as UrlPath, Query};
use poem::{Body, Endpoint, EndpointExt, IntoResponse, Request, Response, Route, delete, get, handler, post};
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncReadExt as _;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub agent: Agent,
    pub name: String,
    /// The same confinement the file tools use.
    pub files: PathGate,
    /// The largest `POST /chat` body (`MAX_CHAT_BODY_BYTES`).
    pub max_chat_body_bytes: usize,
    /// The process's metrics recorder, rendered by `GET /metrics`.
    pub metrics: PrometheusHandle,
}

fn json_error(status: StatusCode, message: &str) -> Response {
    Response::builder().status(status).content_type("application/json").body(json!({"error": message}).to_string())
}

/// The whole app: routes, auth, state.
pub fn app(state: AppState, auth: BearerCheck) -> impl Endpoint + use<> {
    let auth = Arc::new(auth);
    let protected = Route::new()
        .at("/chat", post(chat))
        .at("/chat/:chat_id", delete(reset))
        .at("/chat/:chat_id/stop", post(stop))
        .at("/pending", get(pending))
        .at("/pending/chats", get(pending_chats))
        .at("/pending/ack", post(ack_pending))
        .at("/usage", get(usage))
        .at("/budget", get(get_budget).put(put_budget))
        .at("/files/*path", get(files))
        .at("/metrics", get(metrics))
        .around(move |ep, req: Request| {
            let auth = auth.clone();
            async move {
                let header = req.headers().get("authorization").and_then(|v| v.to_str().ok());
                if !auth.allows(header) {
                    return Ok(json_error(StatusCode::UNAUTHORIZED, "unauthorized"));
                }
                ep.call(req).await.map(IntoResponse::into_response)
            }
        });
    Route::new().at("/health", get(health)).nest("/", protected).data(state)
}

/// The agent's counters in Prometheus' text format. Behind the bearer secret like the rest: the
/// figures (tool use, tokens) are the owner's business.
#[handler]
fn metrics(Data(state): Data<&AppState>) -> Response {
    Response::builder().content_type("text/plain; version=0.0.4; charset=utf-8").body(state.metrics.render())
}

#[handler]
fn health(Data(state): Data<&AppState>) -> Json<HealthResponse> {
    let body: HealthResponse = serde_json::from_value(json!({
        "status": "ok", "agent_name": state.name, "version": baal_core::VERSION,
    }))
    .expect("a health body always has every field");
    Json(body)
}

/// The 413 of a `/chat` body over `limit` bytes. It says `Connection: close`: the rest of the
/// body stays unread, so the connection cannot carry another request, and a client that pooled
/// it would see its next request fail.
fn chat_body_too_large(limit: usize) -> Response {
    let mut response = json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!(
            "the request is larger than {limit} bytes, the most /chat accepts (MAX_CHAT_BODY_BYTES); send a shorter message"
        ),
    );
    response.headers_mut().insert(poem::http::header::CONNECTION, poem::http::HeaderValue::from_static("close"));
    response
}

/// How much of a refused body beyond the limit is still read (and dropped) before the answer.
/// A client that is still sending when the server closes gets a reset, not the 413; reading on
/// lets one that sent a little too much read why, while a far larger body is cut off unread.
const REFUSED_BODY_DRAIN_BYTES: u64 = 4 * 1024 * 1024;
/// The longest that draining a refused body may take.
const REFUSED_BODY_DRAIN_TIME: Duration = Duration::from_secs(5);

/// Reads a `/chat` body of at most `limit` bytes, never holding more than that in memory.
async fn read_chat_body(request: &Request, body: Body, limit: usize) -> Result<Vec<u8>, Response> {
    let limit_u64 = limit as u64;
    let declared = request.headers().get("content-length").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let mut reader = body.into_async_read();
    let mut bytes = Vec::new();
    // A declared length over the limit is refused before a byte is kept.
    if declared.is_none_or(|length| length <= limit_u64) {
        if (&mut reader).take(limit_u64 + 1).read_to_end(&mut bytes).await.is_err() {
            return Err(json_error(StatusCode::BAD_REQUEST, "the request body could not be read"));
        }
        if bytes.len() <= limit {
            return Ok(bytes);
        }
    }
    let left = declared.map_or(u64::MAX, |length| length.saturating_sub(bytes.len() as u64));
    if left <= REFUSED_BODY_DRAIN_BYTES {
        let (mut rest, mut sink) = (reader.take(REFUSED_BODY_DRAIN_BYTES), tokio::io::sink());
        let _ = tokio::time::timeout(REFUSED_BODY_DRAIN_TIME, tokio::io::copy(&mut rest, &mut sink)).await;
    }
    Err(chat_body_too_large(limit))
}

#[handler]
async fn chat(request: &Request, body: Body, Data(state): Data<&AppState>) -> Response {
    let bytes = match read_chat_body(request, body, state.max_chat_body_bytes).await {
        Ok(bytes) => bytes,
        Err(refusal) => return refusal,
    };
    let request: ChatRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            return json_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("invalid chat request ({e}); send {{\"message\": string, \"chat_id\": string}}"),
            );
        }
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("the body is not valid JSON ({e})")),
    };
    if request.chat_id.trim().is_empty() {
        return json_error(StatusCode::UNPROCESSABLE_ENTITY, "chat_id must not be empty");
    }
    let events = state
        .agent
        .chat(request)
        .map(|event| Event::message(serde_json::to_string(&event).unwrap_or_else(|_| r#"{"type":"done"}"#.to_owned())));
    SSE::new(events).into_response()
}

#[derive(Deserialize)]
struct PendingQuery {
    chat_id: Option<String>,
    /// Seconds; a string so that a bad value gets our own explanation.
    lease: Option<String>,
}

/// The longest lease a bot may ask for: a bot that dies holding a lease delays those messages
/// by at most this much.
const MAX_LEASE_SECS: u64 = 3600;

const BAD_LEASE: &str = concat!(
    "lease must be a whole number of seconds from 1 to 3600 (for example ?lease=300); ",
    "leave it out to take the messages and delete them at once"
);

/// `GET /pending[?chat_id=][&lease=]`: with a lease, the messages are leased and carry the ids
/// to acknowledge; without one, they are deleted as they are returned (the Python agent's read).
#[handler]
async fn pending(query: poem::Result<Query<PendingQuery>>, Data(state): Data<&AppState>) -> Response {
    let Ok(Query(query)) = query else {
        return json_error(StatusCode::BAD_REQUEST, "the query could not be read; send ?chat_id=…&lease=seconds");
    };
    let chat_filter = query.chat_id.filter(|c| !c.trim().is_empty());
    let history = state.agent.history();
    let messages = match query.lease.as_deref() {
        None => history.take_pending(chat_filter.as_deref()).await,
        Some(raw) => match raw.trim().parse::<u64>() {
            Ok(secs @ 1..=MAX_LEASE_SECS) => {
                history.lease_pending(chat_filter.as_deref(), Duration::from_secs(secs)).await
            }
            _ => return json_error(StatusCode::UNPROCESSABLE_ENTITY, BAD_LEASE),
        },
    };
    match messages {
        Ok(messages) => Json(PendingResponse::new(messages)).into_response(),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// `GET /pending/chats`: the chats with a message `GET /pending?chat_id=&lease=` would hand out
/// now, the chat of the oldest such message first.
#[handler]
async fn pending_chats(Data(state): Data<&AppState>) -> Response {
    match state.agent.history().pending_chats().await {
        Ok(chats) => Json(PendingChats::new(chats)).into_response(),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// `POST /chat/{chat_id}/stop` (no body): stops the chat's turns, durable or not, and says
/// whether there was one.
#[handler]
fn stop(UrlPath(chat_id): UrlPath<String>, Data(state): Data<&AppState>) -> Json<StopResponse> {
    Json(StopResponse::new(state.agent.stop(&chat_id)))
}

/// `POST /pending/ack {"ids": [...], "chat_id": optional}`: deletes delivered leased messages.
#[handler]
async fn ack_pending(body: Body, Data(state): Data<&AppState>) -> Response {
    let bytes = match body.into_bytes().await {
        Ok(b) => b,
        Err(_) => return json_error(StatusCode::BAD_REQUEST, "the request body could not be read"),
    };
    let ack: PendingAck = match serde_json::from_slice(&bytes) {
        Ok(a) => a,
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            return json_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!(
                    "invalid acknowledgement ({e}); send {{\"ids\": [number, …], \"chat_id\": string (optional)}}"
                ),
            );
        }
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("the body is not valid JSON ({e})")),
    };
    if ack.ids.len() > MAX_ACK_IDS {
        return json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("{} ids in one acknowledgement; send at most {MAX_ACK_IDS} per request", ack.ids.len()),
        );
    }
    let chat_filter = ack.chat_id.filter(|c| !c.trim().is_empty());
    match state.agent.history().ack_pending(&ack.ids, chat_filter.as_deref()).await {
        Ok(deleted) => Json(json!({"status": "ok", "deleted": deleted})).into_response(),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

#[derive(Deserialize)]
struct UsageQuery {
    /// Strings, so that a bad value gets our own explanation.
    since: Option<String>,
    limit: Option<String>,
}

const BAD_USAGE_QUERY: &str = concat!(
    "since must be a record id of 0 or more (the previous answer's \"next\"; 0 or absent for the first page) ",
    "and limit a whole number from 1 to 1000 (for example ?since=0&limit=500)"
);

/// `GET /usage[?since=<cursor>][&limit=<n>]`: the model calls recorded after `since`, oldest
/// first, and the cursor of the next page. Reading does not delete: the caller keeps its cursor.
#[handler]
async fn usage(query: poem::Result<Query<UsageQuery>>, Data(state): Data<&AppState>) -> Response {
    let Ok(Query(query)) = query else {
        return json_error(StatusCode::BAD_REQUEST, BAD_USAGE_QUERY);
    };
    let since = match query.since.as_deref().map(|s| s.trim().parse::<i64>()) {
        None => 0,
        Some(Ok(since)) if since >= 0 => since,
        Some(_) => return json_error(StatusCode::BAD_REQUEST, BAD_USAGE_QUERY),
    };
    let limit = match query.limit.as_deref().map(|l| l.trim().parse::<usize>()) {
        None => MAX_USAGE_RECORDS,
        Some(Ok(limit @ 1..=MAX_USAGE_RECORDS)) => limit,
        Some(_) => return json_error(StatusCode::BAD_REQUEST, BAD_USAGE_QUERY),
    };
    match state.agent.history().usage_since(since, limit) {
        Ok(records) => Json(UsageResponse::new(records, since)).into_response(),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// The largest `PUT /budget` body: a budget is two numbers.
const MAX_BUDGET_BODY_BYTES: usize = 4096;

const BAD_BUDGET: &str = concat!(
    "send a JSON object such as {\"daily_tokens\": 100000, \"background_tokens\": 20000}: ",
    "whole numbers of tokens per UTC day, each left out (or null) for no limit"
);

/// `GET /budget`: the stored budget and today's totals.
#[handler]
fn get_budget(Data(state): Data<&AppState>) -> Response {
    match state.agent.history().budget_status() {
        Ok(status) => Json(status).into_response(),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// `PUT /budget {"daily_tokens": n, "background_tokens": n}`: stores the budget (limits left out
/// do not apply) and answers as `GET /budget` does.
#[handler]
async fn put_budget(body: Body, Data(state): Data<&AppState>) -> Response {
    let Ok(bytes) = body.into_bytes_limit(MAX_BUDGET_BODY_BYTES).await else {
        return json_error(
            StatusCode::BAD_REQUEST,
            &format!("the body could not be read or is over {MAX_BUDGET_BODY_BYTES} bytes; {BAD_BUDGET}"),
        );
    };
    // An object only: serde would also read a struct from an array, and `[]` is no budget.
    let budget = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(value @ serde_json::Value::Object(_)) => serde_json::from_value::<Budget>(value),
        Ok(_) => return json_error(StatusCode::BAD_REQUEST, &format!("the budget is not an object; {BAD_BUDGET}")),
        Err(e) => Err(e),
    };
    let budget = match budget {
        Ok(budget) => budget,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("invalid budget ({e}); {BAD_BUDGET}")),
    };
    let history = state.agent.history();
    match history.set_budget(budget).and_then(|_| history.budget_status()) {
        Ok(status) => Json(status).into_response(),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

#[handler]
async fn reset(UrlPath(chat_id): UrlPath<String>, Data(state): Data<&AppState>) -> Response {
    match state.agent.history().clear(&chat_id).await {
        Ok(deleted) => Json(json!({"status": "ok", "deleted": deleted})).into_response(),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

#[handler]
async fn files(UrlPath(path): UrlPath<String>, Data(state): Data<&AppState>) -> Response {
    // Opened by the kernel beneath the workspace root, so a tool that swaps a directory for a
    // symlink between the check and the read cannot make this serve a file outside it.
    let file = match state.files.open_existing(&path) {
        Ok(file) => file,
        Err(reason) => return json_error(StatusCode::FORBIDDEN, &reason.to_string()),
    };
    let file = tokio::fs::File::from_std(file);
    let size = match file.metadata().await {
        Ok(meta) if meta.is_file() => meta.len(),
        Ok(_) => return json_error(StatusCode::FORBIDDEN, &format!("Not a file: {path}")),
        Err(_) => return json_error(StatusCode::FORBIDDEN, &format!("File cannot be read: {path}")),
    };
    // The same limit as the file tools' `send_file`: what the bot can deliver.
    if size > MAX_SEND_FILE_BYTES {
        return json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "{path} is {size} bytes; files are served up to {MAX_SEND_FILE_BYTES} bytes ({} MiB)",
                MAX_SEND_FILE_BYTES >> 20
            ),
        );
    }
    let resolved = std::path::Path::new(&path);
    let name: String = resolved
        .file_name()
        .map(|n| n.to_string_lossy().chars().filter(|c| !matches!(c, '"' | '\\' | '\r' | '\n')).collect())
        .unwrap_or_else(|| "file".into());
    // Streamed, never held whole in memory; cut at the size announced, so a file that grows
    // while it is sent cannot break the response's framing (one that shrinks ends it early, and
    // the client sees a short body).
    Response::builder()
        .content_type("application/octet-stream")
        .header("content-disposition", format!("attachment; filename=\"{name}\""))
        .header("content-length", size)
        .body(Body::from_async_read(file.take(size)))
}
