//! The bot ↔ agent wire protocol, and the [`Proxy`] trait the platform uses to talk to agents.
//!
//! The protocol stays compatible with the Python Baal agent (`POST /chat` as server-sent events of
//! `data: {json}` lines; `GET /pending`, `GET /files/{path}`, `GET /health`, `DELETE /chat/{id}`;
//! bearer auth on all but `/health`). New information travels only in new optional fields and new
//! event types, which old clients ignore. Leasing pending messages follows the same rule:
//! `GET /pending?lease=` returns ids for `POST /pending/ack`; without `lease` the read stays
//! destructive, old agents ignore the parameter and return no ids, and a message without an id
//! needs no acknowledgement.

use std::fmt;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::domain::Role;

pub mod http;

/// Body of `POST /chat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChatRequest {
    /// The user's message.
    pub message: String,
    /// The conversation: each chat has its own history on the agent.
    pub chat_id: String,
    /// Who is talking. Absent (old bots): the chat equal to `OWNER_CHAT_ID` is the owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The sender's user id, for the agent's own records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

impl ChatRequest {
    /// A request with an explicit role.
    pub fn new(message: impl Into<String>, chat_id: impl Into<String>, role: Role) -> Self {
        ChatRequest { message: message.into(), chat_id: chat_id.into(), role: Some(role), user_id: None }
    }

    /// Sets the sender's user id.
    pub fn with_user_id(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }
}

/// One server-sent event of `POST /chat`: `data: {"type": …, …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AgentEvent {
    /// Sent every 15 s while the agent waits, so proxies keep the stream open.
    Keepalive,
    /// Assistant text (a whole completion, or a streamed piece of one).
    Text {
        /// The text.
        content: String,
    },
    /// A tool is about to run.
    ToolUse {
        /// Tool name.
        name: String,
        /// The raw JSON string of its arguments.
        #[serde(default)]
        input: String,
    },
    /// A tool finished (added by Baal in Rust; old clients ignore it).
    ToolResult {
        /// Tool name.
        name: String,
        /// A short excerpt of its output.
        #[serde(default)]
        output: String,
    },
    /// The agent sends a workspace file to the user.
    File {
        /// Path relative to the workspace.
        path: String,
        /// Caption, possibly empty.
        #[serde(default)]
        caption: String,
    },
    /// Something went wrong; the text is fit for the user.
    Error {
        /// The message.
        content: String,
    },
    /// End of the turn; always the last event.
    Done,
    /// An event type this version does not know (from a newer agent).
    #[serde(other)]
    Unknown,
}

/// A message the agent produced on its own (heartbeat, subagent) for one chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PendingMessage {
    /// The chat it is for.
    pub chat_id: String,
    /// Text, or for `*_file` sources a JSON `{"type":"file","path":…,"caption":…}`.
    pub content: String,
    /// `heartbeat`, `heartbeat_file`, `subagent`, `subagent_file`.
    pub source: String,
    /// When it was queued.
    #[serde(default)]
    pub created_at: String,
    /// Present only when the message was leased (`GET /pending?lease=…`): the agent keeps it until
    /// this id is acknowledged (`POST /pending/ack`) and offers it again once the lease runs out.
    /// Absent on destructive reads and from agents that predate leases (nothing to acknowledge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
}

/// Body of `GET /pending`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PendingResponse {
    /// Queued messages, oldest first.
    pub messages: Vec<PendingMessage>,
}

impl PendingResponse {
    /// A response carrying `messages` (oldest first).
    pub fn new(messages: Vec<PendingMessage>) -> Self {
        PendingResponse { messages }
    }
}

/// The most ids one `POST /pending/ack` may carry; a client with more sends several. The agent
/// deletes them while the request waits, so one request stays a bounded amount of work.
pub const MAX_ACK_IDS: usize = 1000;

/// Body of `POST /pending/ack`: the leased messages that were delivered, for the agent to delete.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PendingAck {
    /// The [`PendingMessage::id`]s delivered.
    pub ids: Vec<i64>,
    /// When present, only messages of this chat are deleted, so a wrong id cannot remove another
    /// chat's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<String>,
}

impl PendingAck {
    /// Acknowledges `ids`, all of them messages for `chat_id`.
    pub fn new(ids: Vec<i64>, chat_id: impl Into<String>) -> Self {
        PendingAck { ids, chat_id: Some(chat_id.into()) }
    }
}

/// Body of `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HealthResponse {
    /// `ok`.
    pub status: String,
    /// The agent's name.
    pub agent_name: String,
    /// The agent's version (absent on Python agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// How to reach one agent.
#[derive(Clone)]
#[non_exhaustive]
pub struct AgentEndpoint {
    /// Base URL without a trailing slash (`https://x.2n6.me`, `http://127.0.0.1:port`).
    pub base_url: String,
    /// The bearer secret.
    pub token: SecretString,
}

impl AgentEndpoint {
    /// The agent at `base_url` (a trailing slash is dropped), reached with the bearer `token`.
    pub fn new(base_url: impl Into<String>, token: SecretString) -> Self {
        let base_url: String = base_url.into();
        AgentEndpoint { base_url: base_url.trim_end_matches('/').to_owned(), token }
    }
}

impl fmt::Debug for AgentEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentEndpoint").field("base_url", &self.base_url).field("token", &"[REDACTED]").finish()
    }
}

/// A file downloaded from an agent's workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AgentFile {
    /// The last path segment.
    pub file_name: String,
    /// The bytes.
    pub bytes: Vec<u8>,
}

impl AgentFile {
    /// The file `file_name` (its last path segment) with its contents.
    pub fn new(file_name: impl Into<String>, bytes: Vec<u8>) -> Self {
        AgentFile { file_name: file_name.into(), bytes }
    }
}

impl PendingMessage {
    /// A message queued for `chat_id` by `source` (`heartbeat`, `subagent`, …) at `created_at`.
    pub fn new(
        chat_id: impl Into<String>,
        content: impl Into<String>,
        source: impl Into<String>,
        created_at: impl Into<String>,
    ) -> Self {
        PendingMessage {
            chat_id: chat_id.into(),
            content: content.into(),
            source: source.into(),
            created_at: created_at.into(),
            id: None,
        }
    }

    /// Sets the lease id the agent expects back in `POST /pending/ack`.
    pub fn with_id(mut self, id: i64) -> Self {
        self.id = Some(id);
        self
    }
}

impl HealthResponse {
    /// A healthy agent named `agent_name`, with no version (see [`HealthResponse::with_version`]).
    pub fn new(agent_name: impl Into<String>) -> Self {
        HealthResponse { status: "ok".to_owned(), agent_name: agent_name.into(), version: None }
    }

    /// Sets the version the agent reports.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }
}

/// Talking to an agent failed. Texts are fit for users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// No connection could be made.
    #[error("could not connect to the agent")]
    Unreachable,
    /// The agent answered with an HTTP error.
    #[error("the agent answered with HTTP {0}")]
    Status(u16),
    /// The agent refused the bearer secret.
    #[error("the agent refused Baal's credentials")]
    Unauthorized,
    /// The answer was not what the protocol says.
    #[error("the agent sent an answer Baal cannot read")]
    Protocol,
    /// The agent took too long.
    #[error("the agent stopped responding")]
    Timeout,
    /// The connection broke before the answer was complete.
    #[error("the connection to the agent broke off")]
    Lost,
    /// The agent's address is not an `http(s)://` URL.
    #[error("the agent's address is not a valid http(s) URL")]
    InvalidUrl,
    /// A file is larger than Baal accepts.
    #[error("the file is larger than {limit_bytes} bytes")]
    TooLarge {
        /// The limit that was exceeded.
        limit_bytes: u64,
    },
}

/// Talks to agents. The platform calls it; `baal-agent` (or a Python agent) answers.
#[async_trait]
pub trait Proxy: Send + Sync {
    /// Sends a chat message and streams the agent's events. Keepalives are dropped; the stream
    /// always ends with [`AgentEvent::Done`] (an [`AgentEvent::Error`] precedes it on failure).
    async fn chat(&self, agent: &AgentEndpoint, request: ChatRequest) -> BoxStream<'static, AgentEvent>;
    /// Collects the agent's queued messages for `chat_id` (all chats when `None`), oldest first.
    /// Messages that carry an [`id`](PendingMessage::id) are only leased: the agent offers them
    /// again after the lease unless they are acknowledged with [`Proxy::ack_pending`]. Messages
    /// without one were deleted as they were read.
    async fn pending(&self, agent: &AgentEndpoint, chat_id: Option<&str>) -> Result<Vec<PendingMessage>, ProxyError>;
    /// Acknowledges delivered messages of `chat_id` by their [`id`](PendingMessage::id)s, so the
    /// agent deletes them. The default does nothing, which suits a proxy whose `pending` never
    /// returns ids; one that leases must implement it, or every message comes back after its lease.
    async fn ack_pending(&self, agent: &AgentEndpoint, chat_id: &str, ids: &[i64]) -> Result<(), ProxyError> {
        let _ = (agent, chat_id, ids);
        Ok(())
    }
    /// Downloads a workspace file.
    async fn file(&self, agent: &AgentEndpoint, path: &str) -> Result<AgentFile, ProxyError>;
    /// Checks `/health`.
    async fn health(&self, agent: &AgentEndpoint) -> Result<HealthResponse, ProxyError>;
    /// Deletes a chat's history on the agent; returns the rows deleted.
    async fn reset(&self, agent: &AgentEndpoint, chat_id: &str) -> Result<u64, ProxyError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_use_the_python_wire_format() {
        let cases = [
            (AgentEvent::Keepalive, r#"{"type":"keepalive"}"#),
            (AgentEvent::Text { content: "hi".into() }, r#"{"type":"text","content":"hi"}"#),
            (
                AgentEvent::ToolUse { name: "bash".into(), input: "{\"command\":\"ls\"}".into() },
                r#"{"type":"tool_use","name":"bash","input":"{\"command\":\"ls\"}"}"#,
            ),
            (
                AgentEvent::File { path: "a.png".into(), caption: "".into() },
                r#"{"type":"file","path":"a.png","caption":""}"#,
            ),
            (AgentEvent::Error { content: "x".into() }, r#"{"type":"error","content":"x"}"#),
            (AgentEvent::Done, r#"{"type":"done"}"#),
        ];
        for (event, json) in cases {
            assert_eq!(serde_json::to_string(&event).unwrap(), json);
            assert_eq!(serde_json::from_str::<AgentEvent>(json).unwrap(), event);
        }
        let future: AgentEvent = serde_json::from_str(r#"{"type":"thinking","content":"…"}"#).unwrap();
        assert_eq!(future, AgentEvent::Unknown);
    }

    #[test]
    fn pending_ids_are_optional_on_the_wire() {
        let python = r#"{"chat_id":"7","content":"tick","source":"heartbeat","created_at":"t"}"#;
        let old: PendingMessage = serde_json::from_str(python).unwrap();
        assert_eq!(old, PendingMessage::new("7", "tick", "heartbeat", "t"));
        assert_eq!(serde_json::to_string(&old).unwrap(), python, "no id field unless leased");
        let leased = old.with_id(12);
        let json = serde_json::to_string(&PendingResponse::new(vec![leased.clone()])).unwrap();
        assert!(json.contains(r#""id":12"#), "{json}");
        assert_eq!(serde_json::from_str::<PendingResponse>(&json).unwrap().messages, vec![leased]);
        let ack = serde_json::to_string(&PendingAck::new(vec![1, 2], "7")).unwrap();
        assert_eq!(ack, r#"{"ids":[1,2],"chat_id":"7"}"#);
    }

    #[test]
    fn old_bots_requests_still_parse() {
        let req: ChatRequest = serde_json::from_str(r#"{"message":"hi","chat_id":"42"}"#).unwrap();
        assert_eq!(req.role, None);
        let json = serde_json::to_string(&ChatRequest::new("hi", "42", Role::Visitor)).unwrap();
        assert_eq!(json, r#"{"message":"hi","chat_id":"42","role":"visitor"}"#);
    }
}
