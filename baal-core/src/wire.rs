//! The bot ↔ agent wire types: what `POST /chat`, `GET /pending`, `POST /pending/ack`,
//! `GET /usage` and `GET /health` carry. `baal-agent` serves them and the platform's `Proxy` sends
//! them; this module holds nothing else, so the agent builds without the bot's client.
//!
//! The protocol stays compatible with the Python Baal agent (`POST /chat` as server-sent events of
//! `data: {json}` lines; `GET /pending`, `GET /files/{path}`, `GET /health`, `DELETE /chat/{id}`;
//! bearer auth on all but `/health`). New information travels only in new optional fields and new
//! event types, which old clients ignore. Leasing pending messages follows the same rule:
//! `GET /pending?lease=` returns ids for `POST /pending/ack`; without `lease` the read stays
//! destructive, old agents ignore the parameter and return no ids, and a message without an id
//! needs no acknowledgement. Metering too: `done` may carry the turn's [`TurnUsage`], and
//! `GET /usage?since=` pages through every model call the agent recorded; Python agents send
//! neither (no field, HTTP 404), which clients read as "no usage reported".

use serde::{Deserialize, Serialize};

use crate::domain::Role;

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
    /// Assistant text: one whole completion (what the model wrote, reasoning removed). Sent even
    /// when its pieces came first as [`AgentEvent::TextDelta`], so a client that ignores pieces
    /// sees exactly what it always saw, and one that shows pieces replaces them with this.
    Text {
        /// The text.
        content: String,
    },
    /// The next piece of the completion being written (added by Baal in Rust; old clients ignore
    /// it). Pieces are coalesced by the agent: the first at once, then at most one every 250 ms.
    /// The [`AgentEvent::Text`] that ends the completion supersedes them.
    TextDelta {
        /// Text to append to what this completion's pieces showed so far.
        content: String,
    },
    /// The model is reasoning before it answers (added by Baal in Rust; old clients ignore it).
    /// Sent at most once per completion; the reasoning itself is never sent.
    Thinking,
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
    /// End of the turn; always the last event. Build the plain one with [`AgentEvent::done`].
    Done {
        /// The model calls of this turn (added by Baal in Rust; absent when it made none, and
        /// from Python agents). Compaction of the chat before the turn is not in it: it is
        /// charged to the owner and reported by `GET /usage`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<TurnUsage>,
    },
    /// An event type this version does not know (from a newer agent).
    #[serde(other)]
    Unknown,
}

impl AgentEvent {
    /// `done` without usage: `{"type":"done"}`, as every agent sent it before metering.
    pub fn done() -> Self {
        AgentEvent::Done { usage: None }
    }

    /// Whether this is `done`, with or without usage.
    pub fn is_done(&self) -> bool {
        matches!(self, AgentEvent::Done { .. })
    }
}

/// Tokens counted over several model calls (one turn's, or a day's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TurnUsage {
    /// Tokens sent to the model, summed over the calls.
    pub prompt_tokens: u64,
    /// Tokens the model wrote, summed over the calls.
    pub completion_tokens: u64,
    /// Model calls counted.
    pub calls: u64,
    /// Whether any call's figures are the agent's estimate (the model's server reported none).
    #[serde(default)]
    pub estimated: bool,
}

impl TurnUsage {
    /// Adds one model call.
    pub fn add(&mut self, prompt_tokens: u64, completion_tokens: u64, estimated: bool) {
        self.prompt_tokens += prompt_tokens;
        self.completion_tokens += completion_tokens;
        self.calls += 1;
        self.estimated |= estimated;
    }
}

/// Why the agent called the model; whom a call is charged to follows from it (a visitor's turn
/// to the visitor, everything else to the owner).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UsageCause {
    /// A turn of the owner's chat.
    OwnerTurn,
    /// A turn of a visitor's chat.
    VisitorTurn,
    /// A heartbeat run.
    Heartbeat,
    /// A subagent started with `spawn`.
    Subagent,
    /// Summarising a chat's older turns to fit the model's context.
    Compaction,
    /// A cause this version does not know (from a newer agent).
    #[serde(other)]
    Unknown,
}

impl UsageCause {
    /// The wire (and stored) name.
    pub fn as_str(self) -> &'static str {
        match self {
            UsageCause::OwnerTurn => "owner_turn",
            UsageCause::VisitorTurn => "visitor_turn",
            UsageCause::Heartbeat => "heartbeat",
            UsageCause::Subagent => "subagent",
            UsageCause::Compaction => "compaction",
            UsageCause::Unknown => "unknown",
        }
    }

    /// Parses a wire name; unknown names are [`UsageCause::Unknown`].
    pub fn parse(name: &str) -> UsageCause {
        [
            UsageCause::OwnerTurn,
            UsageCause::VisitorTurn,
            UsageCause::Heartbeat,
            UsageCause::Subagent,
            UsageCause::Compaction,
        ]
        .into_iter()
        .find(|c| c.as_str() == name)
        .unwrap_or(UsageCause::Unknown)
    }

    /// The cause of a chat turn by `role`.
    pub fn of_turn(role: Role) -> UsageCause {
        match role {
            Role::Owner => UsageCause::OwnerTurn,
            Role::Visitor => UsageCause::VisitorTurn,
        }
    }
}

/// One model call an agent recorded (`GET /usage`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UsageRecord {
    /// Increasing id: the cursor of `GET /usage?since=`.
    pub id: i64,
    /// The chat the call served, or for background work its label (`__heartbeat__`,
    /// `__subagent__`).
    pub chat_id: String,
    /// Why the model was called.
    pub cause: UsageCause,
    /// The UTC day of the call, `YYYY-MM-DD`.
    pub day: String,
    /// The model id.
    pub model: String,
    /// Tokens sent.
    pub prompt_tokens: u64,
    /// Tokens written.
    pub completion_tokens: u64,
    /// Whether the figures are the agent's estimate (the model's server reported none).
    #[serde(default)]
    pub estimated: bool,
}

/// The most records one `GET /usage` returns; `limit` defaults to it.
pub const MAX_USAGE_RECORDS: usize = 1000;

/// Body of `GET /usage?since=<cursor>&limit=<n>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UsageResponse {
    /// Records with an id above the cursor, oldest first.
    pub records: Vec<UsageRecord>,
    /// The cursor for the next call: the last record's id, or the one sent when there were none.
    pub next: i64,
}

impl UsageResponse {
    /// `records` read after `since`.
    pub fn new(records: Vec<UsageRecord>, since: i64) -> Self {
        let next = records.last().map_or(since, |r| r.id);
        UsageResponse { records, next }
    }
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
            (AgentEvent::done(), r#"{"type":"done"}"#),
            (
                AgentEvent::Done {
                    usage: Some(TurnUsage { prompt_tokens: 10, completion_tokens: 2, calls: 1, estimated: false }),
                },
                r#"{"type":"done","usage":{"prompt_tokens":10,"completion_tokens":2,"calls":1,"estimated":false}}"#,
            ),
            (AgentEvent::TextDelta { content: "He".into() }, r#"{"type":"text_delta","content":"He"}"#),
            (AgentEvent::Thinking, r#"{"type":"thinking"}"#),
        ];
        for (event, json) in cases {
            assert_eq!(serde_json::to_string(&event).unwrap(), json);
            assert_eq!(serde_json::from_str::<AgentEvent>(json).unwrap(), event);
        }
        let future: AgentEvent = serde_json::from_str(r#"{"type":"plan","content":"…"}"#).unwrap();
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
    fn usage_records_page_and_unknown_causes_parse() {
        let json = r#"{"records":[{"id":4,"chat_id":"7","cause":"visitor_turn","day":"2025-01-02","model":"m","prompt_tokens":9,"completion_tokens":1,"estimated":true}],"next":4}"#;
        let page: UsageResponse = serde_json::from_str(json).unwrap();
        assert_eq!(page.records[0].cause, UsageCause::VisitorTurn);
        assert_eq!(serde_json::to_string(&page).unwrap(), json);
        assert_eq!(UsageResponse::new(Vec::new(), 9).next, 9, "no records: the cursor stays");
        let newer: UsageCause = serde_json::from_str(r#""tool_call""#).unwrap();
        assert_eq!(
            (newer, UsageCause::parse("nope"), UsageCause::parse("heartbeat")),
            (UsageCause::Unknown, UsageCause::Unknown, UsageCause::Heartbeat)
        );
    }

    #[test]
    fn old_bots_requests_still_parse() {
        let req: ChatRequest = serde_json::from_str(r#"{"message":"hi","chat_id":"42"}"#).unwrap();
        assert_eq!(req.role, None);
        let json = serde_json::to_string(&ChatRequest::new("hi", "42", Role::Visitor)).unwrap();
        assert_eq!(json, r#"{"message":"hi","chat_id":"42","role":"visitor"}"#);
    }
}
