//! The agent runtime against the scripted LLM, with small test tools.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use baal_core::agent::context::Workspace;
use baal_core::agent::history::History;
use baal_core::agent::tools::{Tool, ToolContext, ToolOutput, ToolSet};
use baal_core::agent::{Agent, AgentConfig, AgentSettings, HeartbeatOutcome};
use baal_core::domain::Role;
use baal_core::inference::{ChatMessage, ClientOptions, OpenAiClient, RetryPolicy};
use baal_core::proxy::{AgentEvent, ChatRequest, TurnUsage, UsageCause, UsageRecord};
use baal_core::testing::openai::{Reply, ScriptedLlm};
use baal_core::wire::{Budget, BudgetLimit};
use futures_util::StreamExt;
use secrecy::SecretString;
use serde_json::{Value, json};

mod common;
use common::SendReport;
const OWNER: &str = "42";
const HOUR: Duration = Duration::from_secs(3600);

#[derive(Default)]
struct Notes(Mutex<HashMap<String, String>>);

struct WriteNote(Arc<Notes>);
struct ReadNote(Arc<Notes>);
struct Forever(Arc<AtomicBool>);

#[async_trait]
impl Tool for WriteNote {
    fn name(&self) -> &'static str {
        "write_note"
    }
    fn description(&self) -> &'static str {
        "Write a note."
    }
    fn parameters(&self) -> Value {
        json!({"type":"object","properties":{"name":{"type":"string"},"text":{"type":"string"}},"required":["name","text"]})
    }
    async fn call(&self, args: Value, _ctx: &ToolContext) -> ToolOutput {
        let name = args["name"].as_str().unwrap_or_default().to_owned();
        let text = args["text"].as_str().unwrap_or_default().to_owned();
        self.0.0.lock().unwrap().insert(name.clone(), text);
        ToolOutput::ok(format!("wrote {name}"))
    }
}

#[async_trait]
impl Tool for ReadNote {
    fn name(&self) -> &'static str {
        "read_note"
    }
    fn description(&self) -> &'static str {
        "Read a note."
    }
    fn parameters(&self) -> Value {
        json!({"type":"object","properties":{"name":{"type":"string"}},"required":["name"]})
    }
    async fn call(&self, args: Value, ctx: &ToolContext) -> ToolOutput {
        assert_eq!(ctx.chat_id, OWNER);
        match self.0.0.lock().unwrap().get(args["name"].as_str().unwrap_or_default()) {
            Some(t) => ToolOutput::ok(t.clone()),
            None => ToolOutput::error("[error: no such note]"),
        }
    }
}

struct SetOnDrop(Arc<AtomicBool>);
impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[async_trait]
impl Tool for Forever {
    fn name(&self) -> &'static str {
        "forever"
    }
    fn description(&self) -> &'static str {
        "Never ends."
    }
    fn parameters(&self) -> Value {
        json!({"type":"object","properties":{}})
    }
    async fn call(&self, _args: Value, _ctx: &ToolContext) -> ToolOutput {
        let _guard = SetOnDrop(self.0.clone());
        std::future::pending::<()>().await;
        ToolOutput::ok("unreachable")
    }
}

struct Harness {
    agent: Agent,
    llm: ScriptedLlm,
    notes: Arc<Notes>,
    cancelled: Arc<AtomicBool>,
    settings: AgentSettings,
    _dir: tempfile::TempDir,
}

async fn harness(extra: &[(&str, &str)]) -> Harness {
    let llm = ScriptedLlm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut vars = vec![
        ("LIBERTAI_API_KEY".to_owned(), "k".to_owned()),
        ("AGENT_SECRET".to_owned(), "s".to_owned()),
        ("AGENT_NAME".to_owned(), "Loop".to_owned()),
        ("OWNER_CHAT_ID".to_owned(), OWNER.to_owned()),
        ("VISITOR_TOOLS".to_owned(), "read_note".to_owned()),
    ];
    vars.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let settings = AgentSettings::from_vars(vars).unwrap();
    let mut options = ClientOptions::default();
    options.retry = RetryPolicy::new(0, Duration::from_millis(1));
    let inference = OpenAiClient::new(&llm.base_url(), SecretString::from("k"), options).unwrap();
    let notes = Arc::new(Notes::default());
    let cancelled = Arc::new(AtomicBool::new(false));
    let tools = ToolSet::from_tools(vec![
        Arc::new(WriteNote(notes.clone())),
        Arc::new(ReadNote(notes.clone())),
        Arc::new(SendReport),
        Arc::new(Forever(cancelled.clone())),
    ]);
    let workspace = Workspace::prepare(&dir.path().join("ws")).unwrap();
    let history = History::open(&dir.path().join("agent.db")).await.unwrap();
    let agent = Agent::new(AgentConfig::from_settings(&settings), Arc::new(inference), tools, history, workspace);
    Harness { agent, llm, notes, cancelled, settings, _dir: dir }
}

impl Harness {
    /// Another agent on the same workspace and database, as after a restart of the process.
    async fn restart(&self) -> Agent {
        let inference =
            OpenAiClient::new(&self.llm.base_url(), SecretString::from("k"), ClientOptions::default()).unwrap();
        let dir = self._dir.path();
        let workspace = Workspace::prepare(&dir.join("ws")).unwrap();
        let history = History::open(&dir.join("agent.db")).await.unwrap();
        let config = AgentConfig::from_settings(&self.settings);
        Agent::new(config, Arc::new(inference), ToolSet::from_tools(Vec::new()), history, workspace)
    }
}

/// The events an old client acts on: streamed pieces and the thinking status left out (they
/// have tests of their own below), as the Python bot, which ignores unknown types, sees them.
async fn run(agent: &Agent, message: &str, chat: &str, role: Option<Role>) -> Vec<AgentEvent> {
    timed(agent, message, chat, role)
        .await
        .into_iter()
        .map(|(_, event)| event)
        .filter(|e| !matches!(e, AgentEvent::TextDelta { .. } | AgentEvent::Thinking))
        // What a turn cost has tests of its own (`metering`); here the events are the point.
        .map(|e| if e.is_done() { AgentEvent::done() } else { e })
        .collect()
}

/// Every event but keepalives, with when it arrived.
async fn timed(agent: &Agent, message: &str, chat: &str, role: Option<Role>) -> Vec<(Instant, AgentEvent)> {
    let mut request: ChatRequest = serde_json::from_value(json!({"message": message, "chat_id": chat})).unwrap();
    request.role = role;
    agent
        .chat(request)
        .filter(|e| std::future::ready(*e != AgentEvent::Keepalive))
        .map(|e| (Instant::now(), e))
        .collect()
        .await
}

fn pieces(events: &[(Instant, AgentEvent)]) -> Vec<(Instant, String)> {
    events
        .iter()
        .filter_map(|(at, e)| match e {
            AgentEvent::TextDelta { content } => Some((*at, content.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn an_answer_streams_in_coalesced_pieces_before_the_whole_text() {
    let h = harness(&[]).await;
    // 60 words, 4 characters per chunk, 10 ms apart: about 1 s of writing.
    let answer = (1..=60).map(|i| format!("word{i}")).collect::<Vec<_>>().join(" ");
    h.llm.set_chunk_delay(Duration::from_millis(10)).push_text(answer.clone());
    let started = Instant::now();
    let events = timed(&h.agent, "write", OWNER, None).await;
    let span = started.elapsed();
    let pieces = pieces(&events);
    let whole_at = events
        .iter()
        .find_map(|(at, e)| matches!(e, AgentEvent::Text { content } if *content == answer).then_some(*at))
        .expect("the whole answer still comes as one text event");
    assert!(pieces.len() >= 2, "the answer arrives in pieces: {pieces:?}");
    assert!(pieces[0].0 < whole_at, "the first piece comes before the whole text");
    let streamed: String = pieces.iter().map(|(_, p)| p.as_str()).collect();
    assert!(answer.starts_with(&streamed), "pieces are the answer's beginning, in order: {streamed:?}");
    // Coalesced: the first at once, then at most one per 250 ms, however many chunks came.
    let most = 1 + (span.as_millis() / 250) as usize;
    assert!(pieces.len() <= most, "{} pieces in {span:?}", pieces.len());
    let chunks = answer.chars().count().div_ceil(4);
    assert!(pieces.len() * 4 < chunks, "never a piece per token: {} pieces for {chunks} chunks", pieces.len());
}

#[tokio::test]
async fn reasoning_is_never_shown_streamed_or_stored_in_either_shape() {
    let h = harness(&[]).await;
    h.llm.push(Reply::reasoned("SECRET-REASONING in its own field", "Final answer."));
    h.llm.push_text("<think>SECRET-REASONING inline, split across chunks</think>\n\nSecond answer.");
    h.llm.push_text("ok");
    for (question, answer) in [("one", "Final answer."), ("two", "Second answer.")] {
        let events = timed(&h.agent, question, OWNER, None).await;
        let shown: Vec<&AgentEvent> = events.iter().map(|(_, e)| e).collect();
        assert_eq!(shown.iter().filter(|e| ***e == AgentEvent::Thinking).count(), 1, "{shown:?}");
        assert!(!format!("{shown:?}").contains("SECRET"), "reasoning leaked: {shown:?}");
        assert!(shown.contains(&&AgentEvent::Text { content: answer.into() }), "{shown:?}");
        let streamed: String = pieces(&events).into_iter().map(|(_, p)| p).collect();
        assert!(answer.starts_with(&streamed), "{streamed:?}");
    }
    // What the model is sent back next turn is the history: no reasoning in it.
    run(&h.agent, "three", OWNER, None).await;
    let last = h.llm.completion_requests().pop().unwrap().messages();
    assert!(!serde_json::to_string(&last).unwrap().contains("SECRET"), "{last:?}");
    assert!(last.iter().any(|m| m["content"] == "Second answer."));
}

#[tokio::test]
async fn a_multi_step_tool_turn() {
    let h = harness(&[]).await;
    h.llm
        .push(Reply::tool_calls(Some("Saving it."), &[("write_note", r#"{"name":"a","text":"buy milk"}"#)]))
        .push_tool_call("read_note", r#"{"name":"a"}"#)
        .push_tool_call("send_report", "{}")
        .push_text("Your note says: buy milk");
    let events = run(&h.agent, "note and read back", OWNER, None).await;
    assert_eq!(
        events,
        vec![
            AgentEvent::Text { content: "Saving it.".into() },
            AgentEvent::ToolUse { name: "write_note".into(), input: r#"{"name":"a","text":"buy milk"}"#.into() },
            AgentEvent::ToolResult { name: "write_note".into(), output: "wrote a".into() },
            AgentEvent::ToolUse { name: "read_note".into(), input: r#"{"name":"a"}"#.into() },
            AgentEvent::ToolResult { name: "read_note".into(), output: "buy milk".into() },
            AgentEvent::ToolUse { name: "send_report".into(), input: "{}".into() },
            AgentEvent::File { path: "report.txt".into(), caption: "the report".into() },
            AgentEvent::ToolResult { name: "send_report".into(), output: "File sent to user: report.txt".into() },
            AgentEvent::Text { content: "Your note says: buy milk".into() },
            AgentEvent::done(),
        ]
    );
    assert_eq!(h.notes.0.lock().unwrap()["a"], "buy milk");
    // The last request carries the whole tool exchange, paired.
    let last = h.llm.completion_requests().pop().unwrap().messages();
    let roles: Vec<&str> = last.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, vec!["system", "user", "assistant", "tool", "assistant", "tool", "assistant", "tool"]);
    assert_eq!(last[3]["tool_call_id"], last[2]["tool_calls"][0]["id"]);
    // And the history has it too, ready for the next turn.
    assert_eq!(h.agent.history().count(OWNER).await.unwrap(), 8);
}

#[tokio::test]
async fn bad_arguments_and_unknown_tools_are_reported_to_the_model() {
    let h = harness(&[]).await;
    h.llm.push(Reply::tool_calls(None, &[("write_note", "{oops"), ("rm_rf", "{}")])).push_text("ok");
    let events = run(&h.agent, "x", OWNER, None).await;
    let outputs: Vec<String> = events
        .iter()
        .filter_map(|e| if let AgentEvent::ToolResult { output, .. } = e { Some(output.clone()) } else { None })
        .collect();
    assert!(outputs[0].contains("not valid JSON"), "{outputs:?}");
    assert!(outputs[1].contains("unknown tool 'rm_rf'"), "{outputs:?}");
    assert!(events.last().is_some_and(AgentEvent::is_done));
}

#[tokio::test]
async fn the_iteration_cap_ends_the_turn() {
    let h = harness(&[("MAX_TOOL_ITERATIONS", "3")]).await;
    for _ in 0..5 {
        h.llm.push_tool_call("read_note", r#"{"name":"none"}"#);
    }
    let events = run(&h.agent, "loop forever", OWNER, None).await;
    assert_eq!(h.llm.completion_requests().len(), 3);
    assert_eq!(events.iter().filter(|e| matches!(e, AgentEvent::ToolUse { .. })).count(), 3);
    let n = events.len();
    assert!(matches!(&events[n - 2], AgentEvent::Text { content } if content.contains("3 steps")), "{events:?}");
    assert!(events[n - 1].is_done());
}

#[tokio::test]
async fn visitors_get_only_visitor_tools() {
    let h = harness(&[]).await;
    h.llm.push_tool_call("write_note", r#"{"name":"x","text":"pwned"}"#).push_text("no");
    let events = run(&h.agent, "write", "visitor-chat", Some(Role::Visitor)).await;
    assert_eq!(h.llm.completion_requests()[0].tool_names(), vec!["read_note"]);
    assert!(
        events.iter().any(|e| matches!(e, AgentEvent::ToolResult { output, .. } if output.contains("not available")))
    );
    assert!(h.notes.0.lock().unwrap().is_empty());
    // Without an explicit role, only OWNER_CHAT_ID is the owner.
    run(&h.agent, "hi", "someone", None).await;
    assert_eq!(h.llm.completion_requests()[2].tool_names(), vec!["read_note"]);
    run(&h.agent, "hi", OWNER, None).await;
    assert_eq!(h.llm.completion_requests()[3].tool_names().len(), 5);
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_running_tool() {
    let h = harness(&[]).await;
    h.llm.push_tool_call("forever", "{}");
    let request = ChatRequest::new("go", OWNER, Role::Owner);
    let mut stream = h.agent.chat(request);
    loop {
        match stream.next().await.unwrap() {
            AgentEvent::ToolUse { .. } => break,
            _ => continue,
        }
    }
    assert!(!h.cancelled.load(Ordering::SeqCst));
    drop(stream);
    for _ in 0..100 {
        if h.cancelled.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(h.cancelled.load(Ordering::SeqCst), "the tool kept running after the client left");
    // The interrupted call gets a placeholder result next turn, so the history stays valid.
    h.llm.push_text("back");
    run(&h.agent, "again", OWNER, None).await;
    let messages = h.llm.completion_requests().pop().unwrap().messages();
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, vec!["system", "user", "assistant", "tool", "user"]);
    assert!(messages[3]["content"].as_str().unwrap().contains("interrupted"));
}

#[tokio::test]
async fn keepalives_flow_while_the_model_is_slow() {
    let h = harness(&[("KEEPALIVE_INTERVAL", "1")]).await;
    h.llm.set_chunk_delay(Duration::from_millis(700));
    h.llm.push_text("slow");
    let request = ChatRequest::new("hi", OWNER, Role::Owner);
    let events: Vec<AgentEvent> = h.agent.chat(request).collect().await;
    assert!(events.contains(&AgentEvent::Keepalive), "{events:?}");
    assert!(events.last().is_some_and(AgentEvent::is_done));
}

#[tokio::test]
async fn turns_of_one_chat_never_interleave() {
    let h = harness(&[]).await;
    h.llm.set_chunk_delay(Duration::from_millis(5));
    let turns: Vec<_> = (0..4)
        .map(|i| {
            let agent = h.agent.clone();
            tokio::spawn(async move { run(&agent, &format!("message {i}"), OWNER, None).await })
        })
        .collect();
    for t in turns {
        t.await.unwrap();
    }
    let rows = h.agent.history().rows(OWNER).await.unwrap();
    assert_eq!(rows.len(), 8);
    for pair in rows.chunks(2) {
        let question = pair[0].message.content.clone().unwrap();
        assert_eq!(pair[1].message.content.clone().unwrap(), format!("echo: {question}"));
    }
}

#[tokio::test]
async fn heartbeat_runs_only_when_there_is_something_new_and_reaches_only_the_owner() {
    let h = harness(&[]).await;
    let file = h.agent.workspace().heartbeat_file();
    assert_eq!(h.agent.heartbeat_tick(HOUR).await, HeartbeatOutcome::Idle);
    std::fs::write(&file, "# Heartbeat\n<!-- add tasks below -->\n\n").unwrap();
    assert_eq!(h.agent.heartbeat_tick(HOUR).await, HeartbeatOutcome::Idle);
    assert!(h.llm.completion_requests().is_empty(), "an idle agent must spend no tokens");

    std::fs::write(&file, "# Heartbeat\n- remind me to water the plants\n").unwrap();
    h.llm.push_text("Time to water the plants!");
    assert_eq!(h.agent.heartbeat_tick(HOUR).await, HeartbeatOutcome::Ran { delivered: true });
    assert_eq!(h.agent.heartbeat_tick(HOUR).await, HeartbeatOutcome::NotDue);
    assert_eq!(h.llm.completion_requests().len(), 1);
    let prompt = h.llm.completion_requests()[0].messages();
    assert!(prompt[1]["content"].as_str().unwrap().contains("HEARTBEAT.md"));

    assert!(h.agent.history().take_pending(Some("visitor")).await.unwrap().is_empty());
    let owner = h.agent.history().take_pending(Some(OWNER)).await.unwrap();
    assert_eq!(owner.len(), 1);
    assert_eq!(owner[0].source, "heartbeat");
    assert_eq!(owner[0].content, "[Heartbeat] Time to water the plants!");

    // Changed content runs again; HEARTBEAT_OK is not delivered.
    std::fs::write(&file, "# Heartbeat\n- check the mail\n").unwrap();
    h.llm.push_text("HEARTBEAT_OK");
    assert_eq!(h.agent.heartbeat_tick(HOUR).await, HeartbeatOutcome::Ran { delivered: false });
    assert!(h.agent.history().take_pending(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_standing_heartbeat_recurs_every_period_and_its_last_run_survives_a_restart() {
    let h = harness(&[]).await;
    let period = Duration::from_secs(2);
    std::fs::write(h.agent.workspace().heartbeat_file(), "- check the feed and tell me what changed\n").unwrap();
    assert_eq!(h.agent.heartbeat_tick(period).await, HeartbeatOutcome::Ran { delivered: true });
    assert_eq!(h.agent.heartbeat_tick(period).await, HeartbeatOutcome::NotDue, "not again at once");
    tokio::time::sleep(period + Duration::from_millis(100)).await;
    assert_eq!(h.agent.heartbeat_tick(period).await, HeartbeatOutcome::Ran { delivered: true }, "unchanged, yet due");

    // A new process on the same database: the run that just happened is not repeated…
    let restarted = h.restart().await;
    assert_eq!(restarted.heartbeat_tick(period).await, HeartbeatOutcome::NotDue);
    // …and one that is due is not postponed.
    tokio::time::sleep(period + Duration::from_millis(100)).await;
    assert_eq!(restarted.heartbeat_tick(period).await, HeartbeatOutcome::Ran { delivered: true });
    // Its own schedule wins over the period.
    std::fs::write(h.agent.workspace().heartbeat_file(), "- every 1h: check the feed\n").unwrap();
    assert_eq!(restarted.heartbeat_tick(period).await, HeartbeatOutcome::Ran { delivered: true }, "changed");
    tokio::time::sleep(period + Duration::from_millis(100)).await;
    assert_eq!(restarted.heartbeat_tick(period).await, HeartbeatOutcome::NotDue, "every 1h");
    assert_eq!(h.llm.completion_requests().len(), 4);
}

#[tokio::test]
async fn heartbeat_without_an_owner_delivers_nothing() {
    let h = harness(&[("OWNER_CHAT_ID", "")]).await;
    std::fs::write(h.agent.workspace().heartbeat_file(), "- say hi\n").unwrap();
    assert_eq!(h.agent.heartbeat_tick(HOUR).await, HeartbeatOutcome::Ran { delivered: false });
    assert!(h.agent.history().take_pending(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_retried_message_whose_first_attempt_got_no_answer_is_stored_once() {
    let h = harness(&[]).await;
    h.llm.push(Reply::status(500));
    let events = run(&h.agent, "hello?", OWNER, None).await;
    assert!(matches!(events[0], AgentEvent::Error { .. }));
    h.llm.push_text("hi!");
    run(&h.agent, "hello?", OWNER, None).await;
    let rows = h.agent.history().rows(OWNER).await.unwrap();
    let contents: Vec<_> = rows.iter().map(|r| r.message.content.clone().unwrap_or_default()).collect();
    assert_eq!(contents, vec!["hello?", "hi!"]);
    // Once answered, the same words are a new message.
    run(&h.agent, "hello?", OWNER, None).await;
    assert_eq!(h.agent.history().count(OWNER).await.unwrap(), 4);
}

#[tokio::test]
async fn keepalives_flow_while_a_tool_runs() {
    let h = harness(&[("KEEPALIVE_INTERVAL", "1")]).await;
    h.llm.push_tool_call("forever", "{}");
    let mut stream = h.agent.chat(ChatRequest::new("go", OWNER, Role::Owner));
    let mut keepalives = 0;
    while keepalives < 2 {
        let event = stream.next().await.unwrap();
        if event == AgentEvent::Keepalive {
            keepalives += 1;
        }
    }
}

/// Writes the agent's long-term memory file, as `write_file` would.
struct Remember(std::path::PathBuf);

#[async_trait]
impl Tool for Remember {
    fn name(&self) -> &'static str {
        "remember"
    }
    fn description(&self) -> &'static str {
        "Remember a fact."
    }
    fn parameters(&self) -> Value {
        json!({"type":"object","properties":{"fact":{"type":"string"}},"required":["fact"]})
    }
    async fn call(&self, args: Value, _ctx: &ToolContext) -> ToolOutput {
        std::fs::write(&self.0, args["fact"].as_str().unwrap_or_default()).unwrap();
        ToolOutput::ok("remembered")
    }
}

#[tokio::test]
async fn memory_written_by_a_tool_is_in_the_next_turns_system_prompt() {
    let llm = ScriptedLlm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = AgentSettings::from_vars([
        ("LIBERTAI_API_KEY", "k"),
        ("AGENT_SECRET", "s"),
        ("AGENT_NAME", "Mem"),
        ("OWNER_CHAT_ID", OWNER),
    ])
    .unwrap();
    let mut options = ClientOptions::default();
    options.retry = RetryPolicy::new(0, Duration::from_millis(1));
    let inference = OpenAiClient::new(&llm.base_url(), SecretString::from("k"), options).unwrap();
    let workspace = Workspace::prepare(&dir.path().join("ws")).unwrap();
    let memory_file = dir.path().join("ws/memory/MEMORY.md");
    let tools = ToolSet::from_tools(vec![Arc::new(Remember(memory_file))]);
    let history = History::open(&dir.path().join("agent.db")).await.unwrap();
    let agent = Agent::new(AgentConfig::from_settings(&settings), Arc::new(inference), tools, history, workspace);
    let system_prompt = |llm: &ScriptedLlm| -> String {
        let last = llm.completion_requests().pop().unwrap().messages();
        last[0]["content"].as_str().unwrap().to_owned()
    };

    llm.push_text("hello");
    run(&agent, "hi", OWNER, None).await;
    let before = system_prompt(&llm);
    assert!(!before.contains("likes green tea"));
    llm.push_tool_call("remember", r#"{"fact":"The owner likes green tea."}"#).push_text("noted");
    run(&agent, "remember: green tea", OWNER, None).await;
    llm.push_text("you like green tea");
    run(&agent, "what do I like?", OWNER, None).await;
    assert!(system_prompt(&llm).contains("The owner likes green tea."), "{}", system_prompt(&llm));
}

/// The `done` of a turn, with what it cost.
async fn turn_usage(agent: &Agent, message: &str, chat: &str, role: Option<Role>) -> Option<TurnUsage> {
    match timed(agent, message, chat, role).await.pop() {
        Some((_, AgentEvent::Done { usage })) => usage,
        other => panic!("a turn ends with done, not {other:?}"),
    }
}

fn causes(records: &[UsageRecord]) -> Vec<(UsageCause, &str)> {
    records.iter().map(|r| (r.cause, r.chat_id.as_str())).collect()
}

#[tokio::test]
async fn every_model_call_is_metered_with_its_cause_and_done_carries_the_turns_totals() {
    let h = harness(&[]).await;
    let history = h.agent.history();
    // An owner turn of two tool steps: three model calls.
    h.llm
        .push_tool_call("write_note", r#"{"name":"a","text":"milk"}"#)
        .push_tool_call("read_note", r#"{"name":"a"}"#)
        .push_text("It says milk.");
    let owner = turn_usage(&h.agent, "note it", OWNER, None).await.expect("the turn made calls");
    assert_eq!(owner.calls, 3);
    assert_eq!(owner, h.llm.served(0..3), "done carries exactly what the LLM reported");
    let records = history.usage_since(0, 100).unwrap();
    assert_eq!(causes(&records), [(UsageCause::OwnerTurn, OWNER); 3]);
    assert!(records.iter().all(|r| !r.estimated && r.model == h.settings.model));

    // A visitor's turn.
    h.llm.push_text("Hello, visitor.");
    let visitor = turn_usage(&h.agent, "hi", "777", None).await.unwrap();
    assert_eq!(visitor, h.llm.served(3..4));

    // A heartbeat run.
    std::fs::write(h.agent.workspace().heartbeat_file(), "- check the mail\n").unwrap();
    h.llm.push_text("HEARTBEAT_OK");
    assert_eq!(h.agent.heartbeat_tick(HOUR).await, HeartbeatOutcome::Ran { delivered: false });

    // A subagent, spawned by an owner turn of two calls; it answers on its own.
    h.llm.push_tool_call("spawn", r#"{"task":"count sheep","label":"sheep"}"#).push_text("Started.");
    h.llm.push_when("count sheep", Reply::text("42 sheep"));
    assert_eq!(turn_usage(&h.agent, "start a task", OWNER, None).await.unwrap().calls, 2);
    for _ in 0..500 {
        if history.usage_since(0, 100).unwrap().len() == 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let records = history.usage_since(0, 100).unwrap();
    let mut counted: Vec<(UsageCause, &str)> = causes(&records);
    counted.sort_by_key(|(cause, chat)| (cause.as_str(), *chat));
    assert_eq!(
        counted,
        [
            (UsageCause::Heartbeat, "__heartbeat__"),
            (UsageCause::OwnerTurn, OWNER),
            (UsageCause::OwnerTurn, OWNER),
            (UsageCause::OwnerTurn, OWNER),
            (UsageCause::OwnerTurn, OWNER),
            (UsageCause::OwnerTurn, OWNER),
            (UsageCause::Subagent, "__subagent__"),
            (UsageCause::VisitorTurn, "777"),
        ],
        "one record per call the LLM served ({} requests)",
        h.llm.completion_requests().len()
    );
    // Totals of the day add up to what the LLM reported, and pages follow the cursor.
    let today = baal_core::agent::usage::day_of(chrono::Utc::now());
    assert_eq!(history.usage_on(&today, None).unwrap(), h.llm.served(0..8));
    let first = history.usage_since(0, 5).unwrap();
    let rest = history.usage_since(first[4].id, 5).unwrap();
    assert_eq!((first.len(), rest.len()), (5, 3));
    assert!(history.usage_since(rest[2].id, 5).unwrap().is_empty());
}

#[tokio::test]
async fn a_model_that_reports_no_usage_is_estimated() {
    let h = harness(&[]).await;
    h.llm.omit_usage(true).push_tool_call("read_note", r#"{"name":"a"}"#).push_text("No such note.");
    let usage = turn_usage(&h.agent, "read a", OWNER, None).await.unwrap();
    assert!(h.llm.completion_requests().iter().all(|r| r.usage.is_none()));
    assert!(usage.estimated && usage.calls == 2, "{usage:?}");
    // Roughly a token per four bytes of what was sent: the system prompt alone is hundreds.
    assert!(usage.prompt_tokens > 100 && usage.completion_tokens >= 2, "{usage:?}");
    let records = h.agent.history().usage_since(0, 10).unwrap();
    assert!(records.len() == 2 && records.iter().all(|r| r.estimated), "{records:?}");
}

/// Every event of a turn but keepalives and streamed pieces, `done` with its usage.
async fn events_of(agent: &Agent, request: ChatRequest) -> Vec<AgentEvent> {
    agent
        .chat(request)
        .filter(|e| std::future::ready(!matches!(e, AgentEvent::Keepalive | AgentEvent::TextDelta { .. })))
        .collect()
        .await
}

/// The `budget_spent`, `error` and `done` a turn a limit stopped ends with.
fn stopped_by(events: &[AgentEvent]) -> (BudgetLimit, u64, u64, String, Option<TurnUsage>) {
    match events {
        [
            ..,
            AgentEvent::BudgetSpent { limit, used, allowed },
            AgentEvent::Error { content },
            AgentEvent::Done { usage },
        ] => (*limit, *used, *allowed, content.clone(), *usage),
        other => panic!("not stopped by a budget: {other:?}"),
    }
}

#[tokio::test]
async fn a_turn_that_spends_the_daily_budget_starts_no_further_model_call() {
    let h = harness(&[]).await;
    h.llm.push_tool_call("write_note", r#"{"name":"a","text":"milk"}"#).push_text("Noted.");
    let request = ChatRequest::new("note milk", OWNER, Role::Owner).with_budget(Budget::new(Some(1), None));
    let events = events_of(&h.agent, request).await;
    assert_eq!(h.llm.completion_requests().len(), 1, "the second call was never started");
    assert_eq!(h.llm.queued(), 1);
    let first = h.llm.served(0..1);
    let (limit, used, allowed, text, usage) = stopped_by(&events);
    assert_eq!((limit, used, allowed), (BudgetLimit::AgentDaily, first.tokens(), 1));
    assert_eq!(text, "This agent has used its daily budget of 1 token; it starts again at 00:00 UTC.");
    assert_eq!(usage, Some(first), "the call already paid is counted");
    assert!(matches!(&events[0], AgentEvent::ToolUse { name, .. } if name == "write_note"), "{events:?}");
    assert_eq!(h.notes.0.lock().unwrap()["a"], "milk", "the answered call's tool ran");
    assert_eq!(h.agent.history().budget(), Budget::new(Some(1), None), "the request's budget is stored");

    // A request without a budget keeps the stored one: the next turn, a visitor's too, calls no
    // model and leaves no unanswered message behind.
    let rows = h.agent.history().count("777").await.unwrap();
    let events = events_of(&h.agent, ChatRequest::new("hi", "777", Role::Visitor)).await;
    let (limit, used, _, _, usage) = stopped_by(&events);
    assert_eq!((limit, used, usage, events.len()), (BudgetLimit::AgentDaily, first.tokens(), None, 3));
    assert_eq!(h.agent.history().count("777").await.unwrap(), rows);
    assert_eq!(h.llm.completion_requests().len(), 1);

    // A higher limit lets the agent go on.
    let request = ChatRequest::new("and now?", OWNER, Role::Owner).with_budget(Budget::new(Some(1_000_000), None));
    let events = run(&h.agent, "ignored", OWNER, None).await;
    assert!(matches!(events[0], AgentEvent::BudgetSpent { .. }), "still spent before the raise: {events:?}");
    assert_eq!(texts(&events_of(&h.agent, request).await), ["Noted."]);
}

fn texts(events: &[AgentEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Text { content } => Some(content.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_turn_stops_at_its_senders_allowance_and_counts_only_its_own_calls() {
    let h = harness(&[]).await;
    // The day already has a call of another turn, far over the allowance below: it does not
    // count, so the turn makes its first call and is stopped before its second.
    h.llm.push_text("Hello.");
    run(&h.agent, "hi", "777", Some(Role::Visitor)).await;
    assert!(h.llm.served(0..1).tokens() > 1);
    h.llm.push_tool_call("read_note", r#"{"name":"a"}"#).push_text("No such note.");
    let events = events_of(&h.agent, ChatRequest::new("read a", OWNER, Role::Owner).with_turn_tokens(1)).await;
    assert_eq!(h.llm.completion_requests().len(), 2, "the turn's first call ran, its second did not");
    let own = h.llm.served(1..2);
    let (limit, used, allowed, text, usage) = stopped_by(&events);
    assert_eq!((limit, used, allowed, usage), (BudgetLimit::Turn, own.tokens(), 1, Some(own)));
    assert_eq!(text, "This message has used the 1 token its sender had left, so the agent stopped here.");

    // An allowance of nothing calls no model; a large one lets the turn finish.
    let events = events_of(&h.agent, ChatRequest::new("again", OWNER, Role::Owner).with_turn_tokens(0)).await;
    assert_eq!(stopped_by(&events).4, None);
    assert_eq!(h.llm.completion_requests().len(), 2);
    let request = ChatRequest::new("once more", OWNER, Role::Owner).with_turn_tokens(1_000_000);
    assert_eq!(texts(&events_of(&h.agent, request).await), ["No such note."]);
}

#[tokio::test]
async fn a_spent_budget_skips_the_heartbeat_until_it_is_raised() {
    let h = harness(&[]).await;
    let history = h.agent.history();
    std::fs::write(h.agent.workspace().heartbeat_file(), "- check the mail\n").unwrap();
    history.set_budget(Budget::new(None, Some(0))).unwrap();
    assert_eq!(h.agent.heartbeat_tick(HOUR).await, HeartbeatOutcome::OverBudget);
    assert_eq!(h.agent.heartbeat_tick(HOUR).await, HeartbeatOutcome::OverBudget, "no run was recorded");
    assert!(h.llm.completion_requests().is_empty());
    // The background limit leaves the owner's own turns alone.
    assert_eq!(texts(&run(&h.agent, "hi", OWNER, None).await), ["echo: hi"]);

    history.set_budget(Budget::new(None, Some(1_000_000))).unwrap();
    h.llm.push_text("HEARTBEAT_OK");
    assert_eq!(h.agent.heartbeat_tick(HOUR).await, HeartbeatOutcome::Ran { delivered: false });
    assert_eq!(h.agent.heartbeat_tick(HOUR).await, HeartbeatOutcome::NotDue);
    // The daily limit stops it too.
    std::fs::write(h.agent.workspace().heartbeat_file(), "- check the mail twice\n").unwrap();
    let spent = history.budget_status().unwrap().today.tokens();
    history.set_budget(Budget::new(Some(spent), None)).unwrap();
    assert_eq!(h.agent.heartbeat_tick(HOUR).await, HeartbeatOutcome::OverBudget);
    assert_eq!(h.llm.completion_requests().len(), 2);
}

#[tokio::test]
async fn a_subagent_over_the_background_budget_reports_it_to_the_owner() {
    let h = harness(&[]).await;
    h.llm.push_tool_call("spawn", r#"{"task":"count sheep","label":"sheep"}"#).push_text("Started.");
    h.llm.push_when("count sheep", Reply::text("42 sheep"));
    let request = ChatRequest::new("start a task", OWNER, Role::Owner).with_budget(Budget::new(None, Some(0)));
    assert_eq!(texts(&events_of(&h.agent, request).await), ["Started."], "an owner's turn is not background");
    let mut delivered = Vec::new();
    for _ in 0..500 {
        delivered = h.agent.history().take_pending(Some(OWNER)).await.unwrap();
        if !delivered.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        delivered.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
        ["[Task: sheep] Error: This agent has used its daily budget of 0 tokens for background work \
          (heartbeat, subagents, summaries of long chats); it starts again at 00:00 UTC."]
    );
    assert_eq!(h.llm.completion_requests().len(), 2, "the subagent asked the model nothing");
    assert_eq!(h.llm.queued(), 1);
}

#[tokio::test]
async fn compaction_over_the_background_budget_keeps_the_history_and_the_turn_runs() {
    let h =
        harness(&[("MAX_CONTEXT_TOKENS", "8000"), ("GENERATION_RESERVE", "100"), ("COMPACTION_KEEP_MESSAGES", "2")])
            .await;
    let history = h.agent.history();
    for i in 0..20 {
        let text = format!("message {i} {}", "x".repeat(2000));
        let message = if i % 2 == 0 { ChatMessage::user(text) } else { ChatMessage::assistant(Some(text), Vec::new()) };
        history.append(OWNER, &message).await.unwrap();
    }
    history.set_budget(Budget::new(None, Some(0))).unwrap();
    assert_eq!(texts(&run(&h.agent, "go on", OWNER, None).await), ["echo: go on"]);
    let asked = h.llm.completion_requests();
    assert_eq!(asked.len(), 1, "no summary was asked for");
    assert_eq!(asked[0].messages().len(), 1 + 21, "the whole history was sent");
    assert_eq!(history.summary(OWNER).await.unwrap(), None);

    // With room in the budget, the same history is compacted first.
    history.set_budget(Budget::new(None, Some(1_000_000))).unwrap();
    h.llm.push_text("They wrote long messages.").push_text("Done.");
    assert_eq!(texts(&run(&h.agent, "and now", OWNER, None).await), ["Done."]);
    assert_eq!(h.llm.completion_requests().len(), 3);
    assert!(history.summary(OWNER).await.unwrap().is_some());
    let causes: Vec<UsageCause> = history.usage_since(0, 10).unwrap().iter().map(|r| r.cause).collect();
    assert_eq!(causes, [UsageCause::OwnerTurn, UsageCause::Compaction, UsageCause::OwnerTurn]);
}

#[tokio::test]
async fn a_visitors_tools_can_be_chosen_per_turn_and_their_subagent_keeps_them() {
    let h = harness(&[]).await;
    h.llm
        .push_tool_call("write_note", r#"{"name":"x","text":"hello"}"#)
        .push_tool_call("spawn", r#"{"task":"count sheep","label":"sheep"}"#);
    h.llm.push_text("Done.").push_when("count sheep", Reply::text("42 sheep"));
    let chosen = ["write_note", "spawn", "no_such_tool"].map(str::to_owned).to_vec();
    let request = ChatRequest::new("write", "visitor-chat", Role::Visitor).with_visitor_tools(chosen.clone());
    assert_eq!(texts(&events_of(&h.agent, request).await), ["Done."]);
    assert_eq!(h.llm.completion_requests()[0].tool_names(), ["write_note", "spawn"], "unknown names are ignored");
    assert_eq!(h.notes.0.lock().unwrap()["x"], "hello", "the chosen tool runs");
    for _ in 0..500 {
        if h.llm.completion_requests().len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let subagent = h.llm.completion_requests().into_iter().find(|r| r.messages()[1]["content"] == "count sheep");
    assert_eq!(subagent.expect("the subagent ran").tool_names(), ["write_note"], "its parent's tools, no spawn");

    // Without the field, VISITOR_TOOLS again; on an owner's turn the field is ignored.
    run(&h.agent, "hi", "visitor-chat", Some(Role::Visitor)).await;
    let request = ChatRequest::new("hi", OWNER, Role::Owner).with_visitor_tools(vec!["read_note".into()]);
    events_of(&h.agent, request).await;
    let seen = h.llm.completion_requests();
    assert_eq!(seen[seen.len() - 2].tool_names(), ["read_note"]);
    assert_eq!(seen[seen.len() - 1].tool_names().len(), 5);
}
