//! The bot's side of the agent protocol: the [`Proxy`] trait the platform uses to talk to agents,
//! and [`http::HttpProxy`], its HTTP client. The wire types themselves live in [`crate::wire`]
//! (re-exported here), which the agent builds without any of this.

use std::fmt;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use secrecy::SecretString;

pub use crate::wire::{
    AgentEvent, Budget, BudgetLimit, BudgetStatus, ChatRequest, HealthResponse, MAX_ACK_IDS, PENDING_TURN,
    PENDING_TURN_FILE, PendingAck, PendingChats, PendingMessage, PendingResponse, StopResponse, TURN_STOPPED,
    TurnUsage, UsageCause, UsageRecord, UsageResponse,
};

pub mod http;

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
    /// The model calls the agent recorded after the cursor `since` (0 for the first page), oldest
    /// first, with the cursor to send next time. An agent that meters nothing (a Python agent, or
    /// a proxy that does not implement this: the default) reports no records and the same
    /// cursor; its usage is for the platform to estimate.
    async fn usage(&self, agent: &AgentEndpoint, since: i64) -> Result<UsageResponse, ProxyError> {
        let _ = agent;
        Ok(UsageResponse::new(Vec::new(), since))
    }
    /// Stores `budget` as the agent's own (`PUT /budget`), which it then enforces on every model
    /// call. `Ok(false)` when the agent keeps no budget (a Python agent, or a proxy that does not
    /// implement this: the default); the platform then has only its own counting to go by.
    async fn set_budget(&self, agent: &AgentEndpoint, budget: &Budget) -> Result<bool, ProxyError> {
        let _ = (agent, budget);
        Ok(false)
    }
    /// Stops the turns of `chat_id` on the agent (`POST /chat/{chat_id}/stop`), durable or not:
    /// their tools die, nothing is queued for them, and a stream still open ends with the
    /// `error` [`TURN_STOPPED`] and `done`. `Some(stopped)`: whether a turn was running or
    /// waiting. `None` when the agent cannot stop turns (a Python or older agent, or a proxy that
    /// does not implement this: the default); the caller then drops the stream instead, which
    /// stops a turn that is not durable.
    async fn stop(&self, agent: &AgentEndpoint, chat_id: &str) -> Result<Option<bool>, ProxyError> {
        let _ = (agent, chat_id);
        Ok(None)
    }
    /// The chats that have a message to collect now (`GET /pending/chats`), the chat of the
    /// oldest one first. `None` when the agent cannot say (a Python or older agent, or a proxy
    /// that does not implement this: the default); its messages are then for the owner's chat.
    async fn pending_chats(&self, agent: &AgentEndpoint) -> Result<Option<Vec<String>>, ProxyError> {
        let _ = agent;
        Ok(None)
    }
    /// Downloads a workspace file.
    async fn file(&self, agent: &AgentEndpoint, path: &str) -> Result<AgentFile, ProxyError>;
    /// Checks `/health`.
    async fn health(&self, agent: &AgentEndpoint) -> Result<HealthResponse, ProxyError>;
    /// Deletes a chat's history on the agent; returns the rows deleted.
    async fn reset(&self, agent: &AgentEndpoint, chat_id: &str) -> Result<u64, ProxyError>;
}
