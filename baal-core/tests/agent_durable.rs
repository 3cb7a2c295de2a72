//! Durable turns and stopping, in process: the agent runtime against the scripted LLM, with a
//! tool the test opens when it wants the turn to go on. (`baal-agent/tests/durable.rs` has the
//! same through real agent processes, with `bash`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use baal_core::agent::tools::{Tool, ToolContext, ToolOutput};
use baal_core::agent::{Agent, ChatStream};
use baal_core::domain::Role;
use baal_core::testing::openai::{Reply, ScriptedLlm};
use baal_core::wire::{AgentEvent, ChatRequest, PendingMessage, TURN_STOPPED};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

mod common;
use common::SendReport;
const OWNER: &str = "42";
const VISITOR: &str = "777";
const HOUR: Duration = Duration::from_secs(3600);

/// A tool that waits until the test opens the gate; it counts the calls dropped before the gate
/// opened (cancelled).
#[derive(Clone)]
struct Gate {
    open: Arc<Semaphore>,
    cancelled: Arc<AtomicUsize>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate { open: Arc::new(Semaphore::new(0)), cancelled: Arc::default() }
    }
}

/// Counts a cancellation unless disarmed.
struct Armed(Option<Arc<AtomicUsize>>);
impl Drop for Armed {
    fn drop(&mut self) {
        if let Some(count) = self.0.take() {
            count.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl Tool for Gate {
    fn name(&self) -> &'static str {
        "gate"
    }
    fn description(&self) -> &'static str {
        "Waits."
    }
    fn parameters(&self) -> Value {
        json!({"type":"object","properties":{}})
    }
    async fn call(&self, _args: Value, _ctx: &ToolContext) -> ToolOutput {
        let mut armed = Armed(Some(self.cancelled.clone()));
        let permit = self.open.acquire().await.expect("the gate is never closed");
        permit.forget();
        armed.0 = None;
        ToolOutput::ok("the gate opened")
    }
}

struct Harness {
    agent: Agent,
    llm: ScriptedLlm,
    gate: Gate,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    harness_with(&[]).await
}

/// The harness with these settings as well.
async fn harness_with(extra: &[(&str, &str)]) -> Harness {
    let llm = ScriptedLlm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut vars = vec![
        ("LIBERTAI_API_KEY", "k"),
        ("AGENT_SECRET", "s"),
        ("OWNER_CHAT_ID", OWNER),
        ("VISITOR_TOOLS", "gate,send_report"),
    ];
    vars.extend_from_slice(extra);
    let vars = vars.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    let gate = Gate::default();
    let agent = common::agent(&llm, dir.path(), vars, vec![Arc::new(gate.clone()), Arc::new(SendReport)]).await;
    Harness { agent, llm, gate, _dir: dir }
}

/// Waits (up to 20 s) until `done` says so.
async fn eventually(mut done: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..2000 {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done().await
}

impl Harness {
    /// Reads `stream` up to the first event `until` accepts (panics if the stream ends first);
    /// returns what it read.
    async fn read_until(stream: &mut ChatStream, until: impl Fn(&AgentEvent) -> bool) -> Vec<AgentEvent> {
        let mut seen = Vec::new();
        loop {
            let event = stream.next().await.unwrap_or_else(|| panic!("the stream ended early: {seen:?}"));
            let last = until(&event);
            seen.push(event);
            if last {
                return seen;
            }
        }
    }

    /// Waits until `chat` has something to collect, then leases it all.
    async fn queued_for(&self, chat: &str) -> Vec<PendingMessage> {
        let history = self.agent.history();
        assert!(
            eventually(async || history.pending_chats().await.unwrap().iter().any(|c| c == chat)).await,
            "nothing was queued for {chat}"
        );
        history.lease_pending(Some(chat), HOUR).await.unwrap()
    }

    /// Whether the gate's call was cancelled, waiting up to 20 s for it.
    async fn gate_cancelled(&self) -> bool {
        eventually(async || self.gate.cancelled.load(Ordering::SeqCst) == 1).await
    }
}

fn sources_and_contents(messages: &[PendingMessage]) -> Vec<(&str, &str)> {
    messages.iter().map(|m| (m.source.as_str(), m.content.as_str())).collect()
}

fn is_tool_use(event: &AgentEvent) -> bool {
    matches!(event, AgentEvent::ToolUse { .. })
}

#[tokio::test]
async fn a_durable_turn_whose_client_leaves_finishes_and_queues_its_answer_whole() {
    let h = harness().await;
    h.llm.push(Reply::tool_calls(Some("Looking."), &[("gate", "{}")]));
    h.llm.push(Reply::tool_calls(Some("Here it is."), &[("send_report", "{}")]));
    h.llm.push(Reply::text("All done."));
    let mut stream = h.agent.chat(ChatRequest::new("go", OWNER, Role::Owner).durable());
    let seen = Harness::read_until(&mut stream, is_tool_use).await;
    assert!(seen.contains(&AgentEvent::Text { content: "Looking.".into() }), "{seen:?}");
    drop(stream);
    // The client is gone while the tool runs: the tool goes on.
    h.gate.open.add_permits(1);
    let queued = h.queued_for(OWNER).await;
    let file = serde_json::from_str::<Value>(&queued[1].content).unwrap();
    assert_eq!(file, json!({"type": "file", "path": "report.txt", "caption": "the report"}));
    assert_eq!(
        sources_and_contents(&queued),
        [("turn", "Looking.\n\nHere it is."), ("turn_file", queued[1].content.as_str()), ("turn", "All done.")],
        "what the client got (\"Looking.\") opens the queued answer, which the client that left may have shown in part"
    );
    let ids: Vec<i64> = queued.iter().map(|m| m.id.unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(h.gate.cancelled.load(Ordering::SeqCst), 0, "the tool was not cancelled");
    // Queued once: nothing else arrives, even once the lease runs out.
    assert_eq!(h.agent.history().ack_pending(&ids, Some(OWNER)).await.unwrap(), 3);
    assert!(h.agent.history().lease_pending(None, Duration::ZERO).await.unwrap().is_empty());
    // The history holds the turn as for any other.
    let rows = h.agent.history().rows(OWNER).await.unwrap();
    let contents: Vec<Option<&str>> = rows.iter().map(|r| r.message.content.as_deref()).collect();
    assert_eq!(
        contents,
        [
            Some("go"),
            Some("Looking."),
            Some("the gate opened"),
            Some("Here it is."),
            Some("File sent to user: report.txt"),
            Some("All done.")
        ]
    );
}

#[tokio::test]
async fn a_completion_half_streamed_when_the_client_left_is_queued_whole() {
    let h = harness().await;
    h.llm.set_chunk_delay(Duration::from_millis(100));
    h.llm.push_text("A long answer that arrives in several pieces over a few seconds.");
    let mut stream = h.agent.chat(ChatRequest::new("tell me", OWNER, Role::Owner).durable());
    let seen = Harness::read_until(&mut stream, |e| matches!(e, AgentEvent::TextDelta { .. })).await;
    drop(stream);
    let piece = match seen.last() {
        Some(AgentEvent::TextDelta { content }) => content.clone(),
        other => panic!("{other:?}"),
    };
    let queued = h.queued_for(OWNER).await;
    assert_eq!(
        sources_and_contents(&queued),
        [("turn", "A long answer that arrives in several pieces over a few seconds.")]
    );
    assert!(queued[0].content.len() > piece.len(), "the client had only seen {piece:?}");
}

#[tokio::test]
async fn a_durable_turn_that_fails_after_its_client_left_queues_the_error_for_the_user() {
    let h = harness().await;
    h.llm.push_tool_call("gate", "{}");
    h.llm.push(Reply::status(500));
    let mut stream = h.agent.chat(ChatRequest::new("go", VISITOR, Role::Visitor).durable());
    Harness::read_until(&mut stream, is_tool_use).await;
    drop(stream);
    h.gate.open.add_permits(1);
    // A visitor's turn: queued for the visitor's chat, never the owner's.
    let queued = h.queued_for(VISITOR).await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].source, "turn");
    assert!(
        queued[0].content.starts_with("(The answer to your last message could not be finished: ")
            && queued[0].content.ends_with(")"),
        "{}",
        queued[0].content
    );
    assert!(h.agent.history().lease_pending(Some(OWNER), HOUR).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_durable_turn_read_to_its_end_queues_nothing() {
    let h = harness().await;
    h.llm.push(Reply::tool_calls(Some("Here it is."), &[("send_report", "{}")]));
    let events: Vec<AgentEvent> = h.agent.chat(ChatRequest::new("go", OWNER, Role::Owner).durable()).collect().await;
    assert!(events.last().is_some_and(AgentEvent::is_done), "{events:?}");
    // A later durable turn whose client leaves at once: its answer is queued, and is all there is.
    let stream = h.agent.chat(ChatRequest::new("and now?", OWNER, Role::Owner).durable());
    drop(stream);
    assert_eq!(sources_and_contents(&h.queued_for(OWNER).await), [("turn", "echo: and now?")]);
}

#[tokio::test]
async fn stop_ends_a_running_turn_kills_its_tool_and_queues_nothing_durable_or_not() {
    for durable in [false, true] {
        let h = harness().await;
        h.llm.push_tool_call("gate", "{}");
        let request = ChatRequest::new("go", OWNER, Role::Owner);
        let mut stream = h.agent.chat(if durable { request.durable() } else { request });
        Harness::read_until(&mut stream, is_tool_use).await;
        assert!(h.agent.stop(OWNER), "durable: {durable}");
        let rest: Vec<AgentEvent> = stream.filter(|e| std::future::ready(*e != AgentEvent::Keepalive)).collect().await;
        match &rest[..] {
            [AgentEvent::Error { content }, AgentEvent::Done { usage: Some(usage) }] => {
                assert_eq!(content, TURN_STOPPED);
                assert_eq!(usage.calls, 1, "the usage so far");
            }
            other => panic!("durable: {durable}: {other:?}"),
        }
        // The turn's future, its tool's with it, was dropped before the error was sent.
        assert_eq!(h.gate.cancelled.load(Ordering::SeqCst), 1, "durable: {durable}: the tool was not cancelled");
        assert!(!h.agent.stop(OWNER), "nothing runs any more");
        assert!(h.agent.history().pending_chats().await.unwrap().is_empty(), "durable: {durable}");
        // The chat goes on.
        let events: Vec<AgentEvent> = h.agent.chat(ChatRequest::new("again", OWNER, Role::Owner)).collect().await;
        assert!(events.contains(&AgentEvent::Text { content: "echo: again".into() }), "{events:?}");
    }
}

#[tokio::test]
async fn stopping_a_durable_turn_whose_client_left_queues_nothing() {
    let h = harness().await;
    h.llm.push(Reply::tool_calls(Some("Looking."), &[("gate", "{}")]));
    let mut stream = h.agent.chat(ChatRequest::new("go", OWNER, Role::Owner).durable());
    Harness::read_until(&mut stream, is_tool_use).await;
    drop(stream);
    assert!(h.agent.stop(OWNER));
    assert!(h.gate_cancelled().await, "the tool of a detached turn was not killed by stop");
    // A later turn whose client leaves at once gives a message to wait for: the only one, no
    // notice of the stopped turn before it.
    drop(h.agent.chat(ChatRequest::new("next", OWNER, Role::Owner).durable()));
    let queued = h.queued_for(OWNER).await;
    assert_eq!(sources_and_contents(&queued), [("turn", "echo: next")]);
    assert_eq!(h.llm.completion_requests().len(), 2, "the stopped turn asked the model nothing more");
}

#[tokio::test]
async fn stop_reaches_every_turn_of_the_chat_and_none_that_comes_after() {
    let h = harness().await;
    h.llm.push_tool_call("gate", "{}");
    let mut running = h.agent.chat(ChatRequest::new("first", OWNER, Role::Owner));
    Harness::read_until(&mut running, is_tool_use).await;
    // Waits for the chat's lock behind the first.
    let waiting = h.agent.chat(ChatRequest::new("second", OWNER, Role::Owner).durable());
    // Another chat is not touched.
    let other = h.agent.chat(ChatRequest::new("elsewhere", VISITOR, Role::Visitor));
    assert!(h.agent.stop(OWNER));
    let after = h.agent.chat(ChatRequest::new("third", OWNER, Role::Owner));
    for stream in [running, waiting] {
        let events: Vec<AgentEvent> =
            stream.filter(|e| std::future::ready(*e != AgentEvent::Keepalive)).collect().await;
        assert!(
            matches!(&events[events.len() - 2..], [AgentEvent::Error { content }, AgentEvent::Done { .. }] if content == TURN_STOPPED),
            "{events:?}"
        );
    }
    let other: Vec<AgentEvent> = other.collect().await;
    assert!(other.contains(&AgentEvent::Text { content: "echo: elsewhere".into() }), "{other:?}");
    let after: Vec<AgentEvent> = after.collect().await;
    assert!(after.contains(&AgentEvent::Text { content: "echo: third".into() }), "{after:?}");
    // The waiting turn never stored its message; the stopped one keeps what it had.
    let rows = h.agent.history().rows(OWNER).await.unwrap();
    let users: Vec<&str> = rows
        .iter()
        .filter(|r| r.message.role == baal_core::inference::MessageRole::User)
        .filter_map(|r| r.message.content.as_deref())
        .collect();
    assert_eq!(users, ["first", "third"]);
    assert!(h.agent.history().pending_chats().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_stop_right_after_the_request_stops_the_turn_before_it_starts() {
    let h = harness().await;
    assert!(!h.agent.stop(OWNER), "no turn: nothing to stop");
    let stream = h.agent.chat(ChatRequest::new("hi", OWNER, Role::Owner).durable());
    assert!(h.agent.stop(OWNER));
    let events: Vec<AgentEvent> = stream.collect().await;
    assert_eq!(events, [AgentEvent::Error { content: TURN_STOPPED.into() }, AgentEvent::done()]);
    assert!(h.llm.completion_requests().is_empty());
    assert!(h.agent.history().rows(OWNER).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_detached_durable_turn_still_ends_at_its_deadline_and_its_tool_dies() {
    let h = harness_with(&[("TURN_TIMEOUT", "1")]).await;
    h.llm.push_tool_call("gate", "{}");
    let mut stream = h.agent.chat(ChatRequest::new("go", OWNER, Role::Owner).durable());
    Harness::read_until(&mut stream, is_tool_use).await;
    drop(stream);
    // The gate never opens: only the deadline ends the turn.
    let queued = h.queued_for(OWNER).await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert!(
        queued[0].content.starts_with(
            "(The answer to your last message could not be finished: This message took longer than 1 second,"
        ),
        "{}",
        queued[0].content
    );
    assert_eq!(h.gate.cancelled.load(Ordering::SeqCst), 1, "the tool outlived the deadline");
}
