//! The bot ↔ agent wire types: what `POST /chat`, `POST /chat/{chat_id}/stop`, `GET /pending`,
//! `GET /pending/chats`, `POST /pending/ack`, `GET /usage`, `GET`/`PUT /budget` and `GET /health`
//! carry. `baal-agent` serves them and the platform's `Proxy` sends them; this module holds
//! nothing else, so the agent builds without the bot's client.
//!
//! The protocol stays compatible with the Python Baal agent (`POST /chat` as server-sent events of
//! `data: {json}` lines; `GET /pending`, `GET /files/{path}`, `GET /health`, `DELETE /chat/{id}`;
//! bearer auth on all but `/health`). New information travels only in new optional fields and new
//! event types, which old clients ignore. Leasing pending messages follows the same rule:
//! `GET /pending?lease=` returns ids for `POST /pending/ack`; without `lease` the read stays
//! destructive, old agents ignore the parameter and return no ids, and a message without an id
//! needs no acknowledgement. Metering too: `done` may carry the turn's [`TurnUsage`], and
//! `GET /usage?since=` pages through every model call the agent recorded; Python agents send
//! neither (no field, HTTP 404), which clients read as "no usage reported". Budgets likewise: a
//! request may carry the agent's [`Budget`] and the sender's remaining allowance, `PUT /budget`
//! and `GET /budget` set and read it, and a turn a limit stops sends [`AgentEvent::BudgetSpent`]
//! before its `error`; Python agents answer `/budget` with 404 and ignore the fields. Durable
//! turns too: a request marked [`ChatRequest::durable`] survives its stream, and what its client
//! did not get is queued as pending messages for its chat; `POST /chat/{chat_id}/stop` ends a
//! chat's turn and `GET /pending/chats` says which chats have something to collect. Old agents
//! ignore the field and answer both routes with 404.

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
    /// When present, replaces the agent's stored budget (as `PUT /budget` would) before the turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// The most this turn's own model calls may spend, in tokens (the sender's remaining
    /// allowance). Compaction before the turn is not counted: it is charged to the owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_tokens: Option<u64>,
    /// For a visitor's turn: the tools the visitor gets, in place of the agent's `VISITOR_TOOLS`
    /// for this turn only (names the agent does not know are ignored; `spawn` allows subagents).
    /// Ignored on the owner's turns. Set by the platform, never by what a visitor writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visitor_tools: Option<Vec<String>>,
    /// `true`: the turn outlives its stream. Dropping the stream then neither cancels the turn nor
    /// kills its tools: it runs to its end (still within the agent's `TURN_TIMEOUT`), and what
    /// the client did not get is queued as [`PendingMessage`]s for [`ChatRequest::chat_id`]
    /// (sources [`PENDING_TURN`] and [`PENDING_TURN_FILE`]). Absent or `false` (old bots):
    /// dropping the stream cancels the turn, as it always did. Only `POST /chat/{chat_id}/stop`
    /// ends a durable turn early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable: Option<bool>,
}

impl ChatRequest {
    /// A request with an explicit role.
    pub fn new(message: impl Into<String>, chat_id: impl Into<String>, role: Role) -> Self {
        ChatRequest {
            message: message.into(),
            chat_id: chat_id.into(),
            role: Some(role),
            user_id: None,
            budget: None,
            turn_tokens: None,
            visitor_tools: None,
            durable: None,
        }
    }

    /// Makes the turn durable (see [`ChatRequest::durable`]): it goes on when the stream is
    /// dropped, and its undelivered answer is queued for the chat.
    pub fn durable(mut self) -> Self {
        self.durable = Some(true);
        self
    }

    /// Whether the turn outlives its stream.
    pub fn is_durable(&self) -> bool {
        self.durable == Some(true)
    }

    /// Sets the sender's user id.
    pub fn with_user_id(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// Sends the agent's budget with the turn: the agent stores it before the turn.
    pub fn with_budget(mut self, budget: Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Caps what this turn's own model calls may spend, in tokens.
    pub fn with_turn_tokens(mut self, tokens: u64) -> Self {
        self.turn_tokens = Some(tokens);
        self
    }

    /// The tools a visitor gets in this turn, in place of the agent's `VISITOR_TOOLS`.
    pub fn with_visitor_tools(mut self, tools: Vec<String>) -> Self {
        self.visitor_tools = Some(tools);
        self
    }
}

/// An agent's spending limits per UTC day, in tokens (prompt and completion tokens together):
/// the body of `PUT /budget`, and [`ChatRequest::budget`]. A limit that is absent does not apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Budget {
    /// The whole agent's calls, whatever their cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_tokens: Option<u64>,
    /// Heartbeat, subagent and compaction calls together (see [`UsageCause::is_background`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background_tokens: Option<u64>,
}

impl Budget {
    /// Limits of `daily_tokens` for the whole agent and `background_tokens` for its background
    /// work, per UTC day; `None` for no limit.
    pub fn new(daily_tokens: Option<u64>, background_tokens: Option<u64>) -> Self {
        Budget { daily_tokens, background_tokens }
    }
}

/// Which limit stopped the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BudgetLimit {
    /// [`Budget::daily_tokens`]: the agent's own limit for the day.
    AgentDaily,
    /// [`Budget::background_tokens`]: the limit of heartbeat, subagent and compaction calls.
    Background,
    /// [`ChatRequest::turn_tokens`]: what the sender of the turn may still spend.
    Turn,
    /// A limit this version does not know (from a newer agent).
    #[serde(other)]
    Unknown,
}

/// Body of `GET /budget` (and of the answer to `PUT /budget`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BudgetStatus {
    /// The stored limits.
    pub budget: Budget,
    /// The UTC day the totals are of, `YYYY-MM-DD`.
    pub day: String,
    /// Every model call of the day, whatever its cause.
    pub today: TurnUsage,
    /// The day's heartbeat, subagent and compaction calls.
    pub background_today: TurnUsage,
}

impl BudgetStatus {
    /// `budget`, and the totals of UTC `day` (`YYYY-MM-DD`).
    pub fn new(budget: Budget, day: impl Into<String>, today: TurnUsage, background_today: TurnUsage) -> Self {
        BudgetStatus { budget, day: day.into(), today, background_today }
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
    /// A limit stopped the turn (added by Baal in Rust; old clients ignore it and show the
    /// [`AgentEvent::Error`] that always follows it). No model call was started after it.
    BudgetSpent {
        /// Which limit.
        limit: BudgetLimit,
        /// Tokens counted against it.
        used: u64,
        /// The limit, in tokens.
        allowed: u64,
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
    /// Prompt and completion tokens together: what budgets count.
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    /// Adds one model call.
    pub fn add(&mut self, prompt_tokens: u64, completion_tokens: u64, estimated: bool) {
        self.prompt_tokens = self.prompt_tokens.saturating_add(prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(completion_tokens);
        self.calls = self.calls.saturating_add(1);
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

    /// Whether the call is the agent's own background work (heartbeat, subagent, compaction),
    /// which [`Budget::background_tokens`] limits and the owner pays for.
    pub fn is_background(self) -> bool {
        matches!(self, UsageCause::Heartbeat | UsageCause::Subagent | UsageCause::Compaction)
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
    /// `heartbeat`, `heartbeat_file`, `subagent`, `subagent_file`, or for what a durable turn's
    /// client did not get, [`PENDING_TURN`] and [`PENDING_TURN_FILE`].
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

/// The source of a pending message holding text a durable turn wrote (or the error it ended
/// with) that its client did not get (see [`ChatRequest::durable`]).
pub const PENDING_TURN: &str = "turn";
/// The source of a pending message holding a file a durable turn sent that its client did not
/// get; its content is the JSON of the `heartbeat_file` messages.
pub const PENDING_TURN_FILE: &str = "turn_file";

/// The `error` a turn's stream ends with when `POST /chat/{chat_id}/stop` stopped it.
pub const TURN_STOPPED: &str = "Stopped.";

/// Body of `GET /pending/chats`: the chats that have a message to collect now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PendingChats {
    /// Every chat with a queued message that is not leased, the chat of the oldest such message
    /// first.
    pub chats: Vec<String>,
}

impl PendingChats {
    /// The chats `chats`, in the order they should be served.
    pub fn new(chats: Vec<String>) -> Self {
        PendingChats { chats }
    }
}

/// Body of the answer to `POST /chat/{chat_id}/stop`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StopResponse {
    /// Whether a turn of the chat was running or waiting, and is now stopped.
    pub stopped: bool,
}

impl StopResponse {
    /// The answer when a turn was (`true`) or was not (`false`) stopped.
    pub fn new(stopped: bool) -> Self {
        StopResponse { stopped }
    }
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
            (
                AgentEvent::BudgetSpent { limit: BudgetLimit::AgentDaily, used: 1200, allowed: 1000 },
                r#"{"type":"budget_spent","limit":"agent_daily","used":1200,"allowed":1000}"#,
            ),
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

    #[test]
    fn durability_stop_and_pending_chats_travel_in_optional_fields_and_new_bodies() {
        let old = r#"{"message":"hi","chat_id":"42","role":"owner"}"#;
        let parsed: ChatRequest = serde_json::from_str(old).unwrap();
        assert!(!parsed.is_durable());
        assert_eq!(serde_json::to_string(&parsed).unwrap(), old, "no durable field unless set");
        let durable = ChatRequest::new("hi", "42", Role::Owner).durable();
        let json = serde_json::to_string(&durable).unwrap();
        assert_eq!(json, r#"{"message":"hi","chat_id":"42","role":"owner","durable":true}"#);
        assert_eq!(serde_json::from_str::<ChatRequest>(&json).unwrap(), durable);
        assert!(durable.is_durable());
        let not: ChatRequest = serde_json::from_str(r#"{"message":"hi","chat_id":"42","durable":false}"#).unwrap();
        assert!(!not.is_durable(), "false is today's behaviour");

        let chats = PendingChats::new(vec!["7".into(), "1001".into()]);
        let json = serde_json::to_string(&chats).unwrap();
        assert_eq!(json, r#"{"chats":["7","1001"]}"#);
        assert_eq!(serde_json::from_str::<PendingChats>(&json).unwrap(), chats);
        for stopped in [true, false] {
            let json = serde_json::to_string(&StopResponse::new(stopped)).unwrap();
            assert_eq!(json, format!(r#"{{"stopped":{stopped}}}"#));
            assert_eq!(serde_json::from_str::<StopResponse>(&json).unwrap().stopped, stopped);
        }
        let turn = PendingMessage::new("7", "the answer", PENDING_TURN, "t");
        let json = serde_json::to_string(&turn).unwrap();
        assert_eq!(json, r#"{"chat_id":"7","content":"the answer","source":"turn","created_at":"t"}"#);
        assert_eq!(serde_json::from_str::<PendingMessage>(&json).unwrap(), turn);
        assert!(PENDING_TURN_FILE.ends_with("_file"), "platforms read `*_file` sources as files");
    }

    #[test]
    fn budgets_travel_in_optional_fields() {
        let old = r#"{"message":"hi","chat_id":"42","role":"visitor"}"#;
        let parsed: ChatRequest = serde_json::from_str(old).unwrap();
        assert_eq!((parsed.budget, parsed.turn_tokens, parsed.visitor_tools.as_ref()), (None, None, None));
        assert_eq!(serde_json::to_string(&parsed).unwrap(), old, "no new field unless set");

        let full = ChatRequest::new("hi", "42", Role::Visitor)
            .with_budget(Budget::new(Some(100_000), None))
            .with_turn_tokens(5000)
            .with_visitor_tools(vec!["web_search".into()]);
        let json = serde_json::to_string(&full).unwrap();
        assert_eq!(
            json,
            r#"{"message":"hi","chat_id":"42","role":"visitor","budget":{"daily_tokens":100000},"turn_tokens":5000,"visitor_tools":["web_search"]}"#
        );
        assert_eq!(serde_json::from_str::<ChatRequest>(&json).unwrap(), full);

        let limits: Vec<BudgetLimit> =
            serde_json::from_str(r#"["agent_daily","background","turn","monthly"]"#).unwrap();
        assert_eq!(limits, [BudgetLimit::AgentDaily, BudgetLimit::Background, BudgetLimit::Turn, BudgetLimit::Unknown]);
        assert_eq!(serde_json::from_str::<Budget>("{}").unwrap(), Budget::default(), "no limits");

        let status = BudgetStatus::new(
            Budget::new(None, Some(300)),
            "2025-01-02",
            TurnUsage { prompt_tokens: 90, completion_tokens: 10, calls: 2, estimated: false },
            TurnUsage { prompt_tokens: 40, completion_tokens: 5, calls: 1, estimated: true },
        );
        let json = serde_json::to_string(&status).unwrap();
        assert_eq!(
            json,
            r#"{"budget":{"background_tokens":300},"day":"2025-01-02","today":{"prompt_tokens":90,"completion_tokens":10,"calls":2,"estimated":false},"background_today":{"prompt_tokens":40,"completion_tokens":5,"calls":1,"estimated":true}}"#
        );
        assert_eq!(serde_json::from_str::<BudgetStatus>(&json).unwrap(), status);
        assert_eq!(status.today.tokens(), 100);
        assert!(UsageCause::Compaction.is_background() && !UsageCause::VisitorTurn.is_background());
    }
}
