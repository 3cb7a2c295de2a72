//! Talking to the LLM: the [`Inference`] trait and [`OpenAiClient`], a thin OpenAI-compatible
//! streaming client (LibertAI by default) with tool calls.
//!
//! Invariants:
//! - chunks are parsed leniently: a missing `id`, `model` or `created` is fine, unknown fields are
//!   ignored; tool calls are assembled from their deltas by `index`;
//! - connection errors, HTTP 429 and 5xx are retried with exponential backoff before giving up;
//!   no retry happens once the stream has started (the answer may already be half used);
//! - the stream has connect and read (between bytes) timeouts, never an overall one;
//! - [`InferenceError`]'s `Display` is fit for an end user: no URL, body or internal detail.

mod account;
mod think;

pub use account::{KeyCheck, check_key};

use std::time::Duration;

use async_trait::async_trait;
use eventsource_stream::Eventsource;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Who wrote a [`ChatMessage`]. Deliberately exhaustive: these are the OpenAI chat roles, and
/// code that builds requests must handle each one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageRole {
    /// The system prompt.
    System,
    /// The person talking to the agent (or the heartbeat/subagent prompt).
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
}

impl MessageRole {
    /// The OpenAI name of the role.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageRole::System => "system",
            MessageRole::User => "user",
            MessageRole::Assistant => "assistant",
            MessageRole::Tool => "tool",
        }
    }

    /// Parses an OpenAI role name.
    pub fn parse(s: &str) -> Option<MessageRole> {
        [MessageRole::System, MessageRole::User, MessageRole::Assistant, MessageRole::Tool]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// The function part of a [`ToolCall`], as OpenAI sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FunctionCall {
    /// The tool's name.
    pub name: String,
    /// The arguments as a JSON string (exactly what the model produced; may be invalid JSON).
    #[serde(default)]
    pub arguments: String,
}

/// One tool call of an assistant message, in OpenAI's shape
/// (`{"id", "type": "function", "function": {"name", "arguments"}}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ToolCall {
    /// The call id the tool result refers to.
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    /// Name and arguments.
    pub function: FunctionCall,
}

fn function_kind() -> String {
    "function".into()
}

impl ToolCall {
    /// A function call.
    pub fn new(id: impl Into<String>, name: impl Into<String>, arguments: impl Into<String>) -> Self {
        ToolCall {
            id: id.into(),
            kind: function_kind(),
            function: FunctionCall { name: name.into(), arguments: arguments.into() },
        }
    }
}

/// One message of a conversation sent to the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: MessageRole,
    /// The text (absent on assistant messages that only call tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Tool calls of an assistant message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a tool result: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        ChatMessage {
            role: MessageRole::System,
            content: Some(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage {
            role: MessageRole::User,
            content: Some(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// An assistant message (empty text is stored as no text).
    pub fn assistant(content: Option<String>, tool_calls: Vec<ToolCall>) -> Self {
        ChatMessage {
            role: MessageRole::Assistant,
            content: content.filter(|c| !c.is_empty()),
            tool_calls,
            tool_call_id: None,
        }
    }

    /// A tool result.
    pub fn tool(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: MessageRole::Tool,
            content: Some(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: Some(tool_call_id.into()),
        }
    }
}

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ToolSpec {
    /// Name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON schema of its arguments.
    pub parameters: Value,
}

impl ToolSpec {
    /// A tool spec.
    pub fn new(name: impl Into<String>, description: impl Into<String>, parameters: Value) -> Self {
        ToolSpec { name: name.into(), description: description.into(), parameters }
    }

    fn to_openai(&self) -> Value {
        json!({"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters,
        }})
    }
}

/// One chat-completion request.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CompletionRequest {
    /// Model id.
    pub model: String,
    /// The conversation, system prompt first.
    pub messages: Vec<ChatMessage>,
    /// Tools offered (none: the model answers in text).
    pub tools: Vec<ToolSpec>,
}

impl CompletionRequest {
    /// A request.
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>, tools: Vec<ToolSpec>) -> Self {
        CompletionRequest { model: model.into(), messages, tools }
    }

    /// The OpenAI JSON body (streaming, asking for the token usage in a last chunk, which servers
    /// that do not know `stream_options` ignore).
    pub fn to_openai_body(&self) -> Value {
        let mut body = json!({
            "model": self.model, "messages": self.messages, "stream": true,
            "stream_options": {"include_usage": true},
        });
        if !self.tools.is_empty() {
            body["tools"] = self.tools.iter().map(ToolSpec::to_openai).collect();
        }
        body
    }
}

/// One piece of a streamed completion.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delta {
    /// A piece of assistant text.
    Text(String),
    /// A piece of a tool call; `id` and `name` usually come only in the first piece of an index.
    ToolCall {
        /// Which call of the message this piece belongs to.
        index: u32,
        /// Call id, when this piece carries it.
        id: Option<String>,
        /// Tool name, when this piece carries it.
        name: Option<String>,
        /// A fragment of the arguments JSON string.
        arguments: String,
    },
    /// The model finished (`stop`, `tool_calls`, `length`, …).
    Finish(String),
    /// A piece of the model's reasoning (`reasoning` / `reasoning_content`), sent by thinking
    /// models before their answer. Never part of the answer.
    Reasoning(String),
    /// The tokens the call used, as the server counted them (usually in a last chunk without
    /// choices). Servers that report usage on every chunk report running totals: the last wins.
    Usage {
        /// Tokens of the request.
        prompt_tokens: u64,
        /// Tokens the model wrote (reasoning included).
        completion_tokens: u64,
    },
}

/// The tokens one model call used, as the server reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Usage {
    /// Tokens of the request.
    pub prompt_tokens: u64,
    /// Tokens the model wrote.
    pub completion_tokens: u64,
}

impl Usage {
    /// A usage of `prompt_tokens` in and `completion_tokens` out.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage { prompt_tokens, completion_tokens }
    }
}

/// A whole assistant answer, assembled from deltas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Completion {
    /// Text (possibly empty).
    pub content: String,
    /// Tool calls, in index order.
    pub tool_calls: Vec<ToolCall>,
    /// Why the model stopped, if it said.
    pub finish_reason: Option<String>,
    /// The tokens the server says the call used (`None` when it did not say).
    pub usage: Option<Usage>,
}

/// Assembles a [`Completion`] from [`Delta`]s: text is concatenated, tool-call pieces are joined
/// by index (the first non-empty id and name win, argument fragments are appended).
/// Reasoning, in either shape a model sends it, is left out of the content.
#[derive(Debug, Default)]
pub struct CompletionBuilder {
    content: String,
    calls: std::collections::BTreeMap<u32, (String, String, String)>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    think: think::ThinkFilter,
}

/// What one delta added that a person may be shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Answer text this delta added (reasoning removed; possibly empty).
    pub text: String,
    /// Whether this delta was the model's reasoning.
    pub thinking: bool,
}

impl CompletionBuilder {
    /// Adds one delta and says what it added to the visible answer.
    pub fn push(&mut self, delta: Delta) -> Progress {
        match delta {
            Delta::Text(text) => {
                let filtered = self.think.push(&text);
                self.content.push_str(&filtered.visible);
                return Progress { text: filtered.visible, thinking: filtered.reasoning };
            }
            Delta::Reasoning(_) => return Progress { text: String::new(), thinking: true },
            Delta::ToolCall { index, id, name, arguments } => {
                let entry = self.calls.entry(index).or_default();
                if let Some(id) = id.filter(|id| !id.is_empty())
                    && entry.0.is_empty()
                {
                    entry.0 = id;
                }
                if let Some(name) = name.filter(|n| !n.is_empty())
                    && entry.1.is_empty()
                {
                    entry.1 = name;
                }
                entry.2.push_str(&arguments);
            }
            Delta::Finish(reason) => self.finish_reason = Some(reason),
            Delta::Usage { prompt_tokens, completion_tokens } => {
                self.usage = Some(Usage { prompt_tokens, completion_tokens });
            }
        }
        Progress::default()
    }

    /// The assembled completion. Calls without an id get one (some servers omit it); calls
    /// without a name are dropped (nothing could run them).
    pub fn finish(mut self) -> Completion {
        let tail = self.think.finish();
        self.content.push_str(&tail.visible);
        let tool_calls = self
            .calls
            .into_iter()
            .filter(|(_, (_, name, _))| !name.is_empty())
            .map(|(index, (id, name, args))| {
                let id = if id.is_empty() { format!("call_{index}_{}", uuid::Uuid::new_v4().simple()) } else { id };
                ToolCall::new(id, name, args)
            })
            .collect();
        Completion { content: self.content, tool_calls, finish_reason: self.finish_reason, usage: self.usage }
    }
}

/// Inference failed. The `Display` text is meant for the person chatting with the agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InferenceError {
    /// No connection could be made to the AI service.
    #[error("The AI service could not be reached. Please try again in a moment.")]
    Unreachable,
    /// The model stopped sending anything for too long.
    #[error("The AI model took too long to respond. Please try again.")]
    Timeout,
    /// Still rate limited after the retries.
    #[error("The AI service is busy right now. Please try again in a moment.")]
    RateLimited,
    /// The service refused the API key.
    #[error("The AI service refused this agent's API key. The agent's owner should check the key.")]
    Unauthorized,
    /// Any other HTTP error (5xx after the retries, 4xx at once).
    #[error("The AI service failed to answer (HTTP {0}). Please try again later.")]
    Status(u16),
    /// The answer could not be read.
    #[error("The AI service sent an answer this agent cannot read. Please try again.")]
    Protocol,
}

/// A streamed completion.
pub type DeltaStream = BoxStream<'static, Result<Delta, InferenceError>>;

/// Something that answers chat completions with tools. Implemented by [`OpenAiClient`];
/// embedders may plug in their own.
#[async_trait]
pub trait Inference: Send + Sync {
    /// Starts a streamed completion. Errors before the first byte (connection, HTTP status) come
    /// back here, after any retries; errors mid-stream come as items of the stream.
    async fn stream(&self, request: &CompletionRequest) -> Result<DeltaStream, InferenceError>;

    /// Runs a completion to its end and assembles it.
    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, InferenceError> {
        let mut stream = self.stream(request).await?;
        let mut builder = CompletionBuilder::default();
        while let Some(delta) = stream.next().await {
            builder.push(delta?);
        }
        Ok(builder.finish())
    }
}

/// How often and how patiently [`OpenAiClient`] retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    /// Wait before the first retry; doubled before each next one.
    pub base_delay: Duration,
}

impl Default for RetryPolicy {
    /// Two retries, waiting 1 s then 2 s.
    fn default() -> Self {
        RetryPolicy { retries: 2, base_delay: Duration::from_secs(1) }
    }
}

impl RetryPolicy {
    /// A policy.
    pub fn new(retries: u32, base_delay: Duration) -> Self {
        RetryPolicy { retries, base_delay }
    }
}

/// Options of [`OpenAiClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Time to establish a connection.
    pub connect_timeout: Duration,
    /// Longest silence between two reads (including the wait for the response head).
    pub read_timeout: Duration,
    /// Retries of connection errors, 429 and 5xx.
    pub retry: RetryPolicy,
}

impl Default for ClientOptions {
    /// Connect 10 s, read 120 s, two retries.
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(120),
            retry: RetryPolicy::default(),
        }
    }
}

/// A thin OpenAI-compatible client (`POST {base}/chat/completions`, streamed).
pub struct OpenAiClient {
    http: reqwest::Client,
    endpoint: String,
    api_key: SecretString,
    retry: RetryPolicy,
}

impl std::fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiClient").field("endpoint", &self.endpoint).field("api_key", &"[REDACTED]").finish()
    }
}

impl OpenAiClient {
    /// A client for `base_url` (e.g. `https://api.libertai.io/v1`) with `api_key`.
    pub fn new(base_url: &str, api_key: SecretString, options: ClientOptions) -> Result<Self, InferenceError> {
        let http = crate::http_client_builder()
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .user_agent(concat!("baal-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                tracing::error!(error = %e, "could not build the HTTP client");
                InferenceError::Unreachable
            })?;
        Ok(OpenAiClient {
            http,
            endpoint: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            api_key,
            retry: options.retry,
        })
    }

    async fn send_once(&self, body: &Value) -> Result<reqwest::Response, (InferenceError, bool)> {
        let response = self
            .http
            .post(&self.endpoint)
            .bearer_auth(self.api_key.expose_secret())
            .header("accept", "text/event-stream")
            .json(body)
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = %without_url(&e), "inference request failed");
                if e.is_timeout() { (InferenceError::Timeout, true) } else { (InferenceError::Unreachable, true) }
            })?;
        let status = response.status().as_u16();
        match status {
            200..=299 => Ok(response),
            401 | 403 => Err((InferenceError::Unauthorized, false)),
            429 => Err((InferenceError::RateLimited, true)),
            500..=599 => Err((InferenceError::Status(status), true)),
            _ => Err((InferenceError::Status(status), false)),
        }
    }
}

/// reqwest errors print the URL; the base URL is not secret but keeps logs short and uniform.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<llm>");
    }
    text
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    /// Present (often with no choices) when the request asked for `include_usage`; `null` on the
    /// other chunks of some servers.
    #[serde(default)]
    usage: Option<ChunkUsage>,
}

#[derive(Deserialize)]
struct ChunkUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<ChunkDelta>,
    /// Some servers answer a streamed request with whole messages.
    #[serde(default)]
    message: Option<ChunkDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct ChunkDelta {
    #[serde(default)]
    content: Option<String>,
    /// Reasoning of thinking models, under either name servers use (some send both: two fields,
    /// not a serde alias, which would refuse such a chunk as a duplicate).
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallPiece>>,
}

#[derive(Deserialize)]
struct ToolCallPiece {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionPiece>,
}

#[derive(Deserialize)]
struct FunctionPiece {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// Parses one `data:` payload into deltas.
fn parse_chunk(data: &str) -> Result<Vec<Delta>, InferenceError> {
    let chunk: Chunk = serde_json::from_str(data).map_err(|e| {
        tracing::warn!(error = %e, "unreadable chunk from the LLM");
        InferenceError::Protocol
    })?;
    let mut out = Vec::new();
    for choice in chunk.choices {
        if let Some(delta) = choice.delta.or(choice.message) {
            // `reasoning` is a string on most servers; an object elsewhere: either way, reasoning.
            let reasoning = delta.reasoning_content.filter(|t| !t.is_empty()).or_else(|| match delta.reasoning {
                Some(Value::String(text)) if !text.is_empty() => Some(text),
                Some(Value::Null) | None => None,
                Some(Value::String(_)) => None,
                Some(other) => Some(other.to_string()),
            });
            if let Some(reasoning) = reasoning {
                out.push(Delta::Reasoning(reasoning));
            }
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                out.push(Delta::Text(text));
            }
            for (position, piece) in delta.tool_calls.unwrap_or_default().into_iter().enumerate() {
                let function = piece.function.unwrap_or(FunctionPiece { name: None, arguments: None });
                out.push(Delta::ToolCall {
                    index: piece.index.unwrap_or(position as u32),
                    id: piece.id,
                    name: function.name,
                    arguments: function.arguments.unwrap_or_default(),
                });
            }
        }
        if let Some(reason) = choice.finish_reason {
            out.push(Delta::Finish(reason));
        }
    }
    if let Some(usage) = chunk.usage {
        out.push(Delta::Usage { prompt_tokens: usage.prompt_tokens, completion_tokens: usage.completion_tokens });
    }
    Ok(out)
}

#[async_trait]
impl Inference for OpenAiClient {
    async fn stream(&self, request: &CompletionRequest) -> Result<DeltaStream, InferenceError> {
        let body = request.to_openai_body();
        let mut attempt = 0;
        let response = loop {
            match self.send_once(&body).await {
                Ok(response) => break response,
                Err((error, retryable)) => {
                    if !retryable || attempt >= self.retry.retries {
                        return Err(error);
                    }
                    let wait = self.retry.base_delay.saturating_mul(2u32.saturating_pow(attempt));
                    tracing::info!(attempt = attempt + 1, ?wait, %error, "retrying inference");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        };
        let deltas = response
            .bytes_stream()
            .eventsource()
            .map_err(|e| match e {
                eventsource_stream::EventStreamError::Transport(e) if e.is_timeout() => InferenceError::Timeout,
                eventsource_stream::EventStreamError::Transport(e) => {
                    tracing::warn!(error = %without_url(&e), "inference stream broke");
                    InferenceError::Unreachable
                }
                other => {
                    tracing::warn!(error = %other, "unreadable stream from the LLM");
                    InferenceError::Protocol
                }
            })
            .try_take_while(|event| std::future::ready(Ok(event.data.trim() != "[DONE]")))
            .map(|event| {
                event.and_then(|e| if e.data.trim().is_empty() { Ok(Vec::new()) } else { parse_chunk(&e.data) })
            })
            .map_ok(|deltas| futures_util::stream::iter(deltas.into_iter().map(Ok)))
            .try_flatten();
        Ok(deltas.boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_without_ids_and_split_tool_calls_assemble() {
        let mut builder = CompletionBuilder::default();
        let chunks = [
            r#"{"choices":[{"delta":{"role":"assistant","content":"Hel"}}]}"#,
            r#"{"choices":[{"delta":{"content":"lo"},"finish_reason":null}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"bash","arguments":"{\"com"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"c2","function":{"name":"read_file","arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"mand\":\"ls\"}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"{"choices":[]}"#,
        ];
        for c in chunks {
            for d in parse_chunk(c).unwrap() {
                builder.push(d);
            }
        }
        let done = builder.finish();
        assert_eq!(done.content, "Hello");
        assert_eq!(
            done.tool_calls,
            vec![ToolCall::new("c1", "bash", r#"{"command":"ls"}"#), ToolCall::new("c2", "read_file", "{}")]
        );
        assert_eq!(done.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(done.usage, None, "no usage chunk, no usage");
        assert_eq!(parse_chunk("not json"), Err(InferenceError::Protocol));
    }

    #[test]
    fn the_usage_chunk_is_read_and_the_body_asks_for_it() {
        let body = CompletionRequest::new("m", vec![ChatMessage::user("hi")], Vec::new()).to_openai_body();
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        let mut builder = CompletionBuilder::default();
        let chunks = [
            r#"{"choices":[{"delta":{"content":"Hi"},"finish_reason":"stop"}],"usage":null}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#,
        ];
        for c in chunks {
            for d in parse_chunk(c).unwrap() {
                builder.push(d);
            }
        }
        let done = builder.finish();
        assert_eq!((done.content.as_str(), done.usage), ("Hi", Some(Usage::new(12, 3))));
    }

    #[test]
    fn reasoning_in_either_shape_stays_out_of_the_answer() {
        let chunks = [
            r#"{"choices":[{"delta":{"role":"assistant","reasoning_content":"SECRET-1"}}]}"#,
            r#"{"choices":[{"delta":{"reasoning":"SECRET-2","reasoning_content":"SECRET-2"}}]}"#,
            r#"{"choices":[{"delta":{"reasoning":{"summary":"SECRET-3"}}}]}"#,
            r#"{"choices":[{"delta":{"content":"<thi"}}]}"#,
            r#"{"choices":[{"delta":{"content":"nk>SECRET-4</th"}}]}"#,
            r#"{"choices":[{"delta":{"content":"ink>\n\nFinal "}}]}"#,
            r#"{"choices":[{"delta":{"content":"answer."},"finish_reason":"stop"}]}"#,
        ];
        let mut builder = CompletionBuilder::default();
        let mut shown = String::new();
        let mut thinking = 0;
        for c in chunks {
            for d in parse_chunk(c).unwrap() {
                let progress = builder.push(d);
                shown.push_str(&progress.text);
                thinking += usize::from(progress.thinking);
            }
        }
        let done = builder.finish();
        assert_eq!(done.content, "Final answer.");
        assert_eq!(shown, "Final answer.");
        assert!(thinking >= 5, "every reasoning chunk is reported as thinking ({thinking})");
    }

    #[test]
    fn messages_serialise_as_openai_expects() {
        let m = ChatMessage::assistant(Some(String::new()), vec![ToolCall::new("c", "bash", "{}")]);
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"bash","arguments":"{}"}}]})
        );
        let t = ChatMessage::tool("c", "out");
        assert_eq!(serde_json::to_value(&t).unwrap(), json!({"role":"tool","content":"out","tool_call_id":"c"}));
    }

    #[test]
    fn error_texts_show_no_internals() {
        for e in [
            InferenceError::Unreachable,
            InferenceError::Timeout,
            InferenceError::RateLimited,
            InferenceError::Unauthorized,
            InferenceError::Status(502),
            InferenceError::Protocol,
        ] {
            let text = e.to_string();
            assert!(!text.contains("http://") && !text.contains("reqwest"), "{text}");
        }
    }
}
