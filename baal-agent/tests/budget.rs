//! The agent's own budget, end to end: real `baal-agent` processes against the scripted LLM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baal_core::testing::openai::ScriptedLlm;
use baal_core::wire::{AgentEvent, Budget, BudgetLimit, BudgetStatus, TurnUsage};
use common::*;
use serde_json::{Value, json};

impl AgentProcess {
    async fn get_budget(&self) -> BudgetStatus {
        let response = self.http.get(format!("{}/budget", self.base_url)).bearer_auth(SECRET).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// `PUT /budget` of a raw body: the status and the JSON answer.
    async fn put_budget(&self, body: &str, auth: bool) -> (u16, Value) {
        let mut request = self
            .http
            .put(format!("{}/budget", self.base_url))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if auth {
            request = request.bearer_auth(SECRET);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// Every event of a `/chat` of `body` (its pieces and thinking left out).
    async fn events(&self, body: Value) -> Vec<AgentEvent> {
        parse_sse(&self.chat_body(&body).await)
            .into_iter()
            .filter(|e| !matches!(e, AgentEvent::TextDelta { .. } | AgentEvent::Thinking))
            .collect()
    }
}

fn heartbeat_requests(llm: &ScriptedLlm) -> usize {
    llm.completion_requests()
        .iter()
        .filter(|r| r.messages()[1]["content"].as_str().unwrap_or("").contains("HEARTBEAT.md"))
        .count()
}

#[tokio::test]
async fn a_turn_that_spends_the_daily_budget_ends_after_its_paid_call() {
    let llm = ScriptedLlm::start().await;
    llm.push_tool_call("read_file", r#"{"path":"memory/MEMORY.md"}"#).push_text("Nothing there.");
    let agent = start_agent(&llm, &[]);
    let (status, body) = agent.put_budget(r#"{"daily_tokens": 1}"#, true).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_value::<BudgetStatus>(body).unwrap().budget, Budget::new(Some(1), None));

    let events = agent.events(json!({"message": "what do you remember?", "chat_id": OWNER})).await;
    assert_eq!(llm.completion_requests().len(), 1, "the second call was never started");
    assert_eq!(llm.queued(), 1);
    let first = llm.served(0..1);
    assert!(matches!(&events[0], AgentEvent::ToolUse { name, .. } if name == "read_file"), "{events:?}");
    assert!(matches!(&events[1], AgentEvent::ToolResult { .. }), "{events:?}");
    assert_eq!(
        events[2..],
        [
            AgentEvent::BudgetSpent { limit: BudgetLimit::AgentDaily, used: first.tokens(), allowed: 1 },
            AgentEvent::Error {
                content: "This agent has used its daily budget of 1 token; it starts again at 00:00 UTC.".into()
            },
            AgentEvent::Done { usage: Some(first) },
        ]
    );
    // An old bot reads the error text and the end of the turn.
    let body = agent.chat_raw("and now?", "555", Some("visitor")).await;
    assert!(body.contains(r#""type":"budget_spent""#) && body.contains(r#"{"type":"done"}"#), "{body}");
    assert_eq!(llm.completion_requests().len(), 1);

    let status = agent.get_budget().await;
    assert_eq!(status.today, first, "the day's totals are what the LLM served");
    assert_eq!(status.background_today, TurnUsage::default());
    assert_eq!(status.day, chrono::Utc::now().format("%Y-%m-%d").to_string());
}

#[tokio::test]
async fn the_senders_allowance_stops_a_turn_and_old_requests_behave_as_before() {
    let llm = ScriptedLlm::start().await;
    llm.push_tool_call("read_file", r#"{"path":"memory/MEMORY.md"}"#).push_text("Nothing there.");
    let agent = start_agent(&llm, &[]);
    let events = agent.events(json!({"message": "look", "chat_id": OWNER, "turn_tokens": 1})).await;
    let first = llm.served(0..1);
    assert!(
        matches!(
            &events[events.len() - 3..],
            [
                AgentEvent::BudgetSpent { limit: BudgetLimit::Turn, used, allowed: 1 },
                AgentEvent::Error { .. },
                AgentEvent::Done { usage: Some(usage) },
            ] if *used == first.tokens() && *usage == first
        ),
        "{events:?}"
    );
    assert_eq!(llm.completion_requests().len(), 1);

    // A request of the old format: no budget of its own and no allowance, so the turn runs as it
    // always did, and the stored budget is untouched.
    let (status, _) = agent.put_budget(r#"{"daily_tokens": 1000000, "background_tokens": null}"#, true).await;
    assert_eq!(status, 200);
    let events = agent.chat("look again", OWNER, None).await;
    assert_eq!(events, [AgentEvent::Text { content: "Nothing there.".into() }, AgentEvent::done()]);
    assert_eq!(agent.get_budget().await.budget, Budget::new(Some(1_000_000), None));
    // A request carrying a budget stores it.
    let body = json!({"message": "hi", "chat_id": OWNER, "budget": {"background_tokens": 5}});
    assert_eq!(texts(&agent.events(body).await), ["echo: hi"]);
    assert_eq!(agent.get_budget().await.budget, Budget::new(None, Some(5)));
}

#[tokio::test]
async fn budget_requests_are_checked_and_the_budget_survives_a_restart() {
    let llm = ScriptedLlm::start().await;
    let agent = start_agent(&llm, &[]);
    assert_eq!(agent.put_budget(r#"{"daily_tokens": 10}"#, false).await, (401, json!({"error": "unauthorized"})));
    for bad in ["{not json", r#"{"daily_tokens": -5}"#, r#"{"daily_tokens": "many"}"#, "[]", ""] {
        let (status, body) = agent.put_budget(bad, true).await;
        assert_eq!(status, 400, "{bad}");
        assert!(body["error"].as_str().unwrap().contains("daily_tokens"), "{bad}: {body}");
    }
    let unauthenticated = agent.http.get(format!("{}/budget", agent.base_url)).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    assert_eq!(agent.get_budget().await.budget, Budget::default(), "nothing bad was stored");

    let (status, _) = agent.put_budget(r#"{"daily_tokens": 1}"#, true).await;
    assert_eq!(status, 200);
    agent.chat("hi", OWNER, None).await;
    let spent = llm.served(0..1);
    let dir = agent.stop();
    let agent = start_agent_in(&llm, &[], dir);
    let status = agent.get_budget().await;
    assert_eq!((status.budget, status.today), (Budget::new(Some(1), None), spent));
    let events = agent.chat("hi again", OWNER, None).await;
    assert!(matches!(events[0], AgentEvent::BudgetSpent { limit: BudgetLimit::AgentDaily, .. }), "{events:?}");
    assert_eq!(llm.completion_requests().len(), 1, "the restarted agent called no model");
}

/// An agent whose log (at `info`) is collected line by line.
fn start_logged(llm: &ScriptedLlm, extra: &[(&str, &str)]) -> (AgentProcess, Arc<Mutex<Vec<String>>>) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = test_agent_command(llm, extra, dir.path());
    command.env("RUST_LOG", "info").stderr(Stdio::piped());
    let mut agent = spawn(command, dir);
    let stderr = agent.child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    (agent, lines)
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_spent_budget_skips_the_heartbeat_until_put_budget_raises_it() {
    let llm = ScriptedLlm::start().await;
    let (agent, log) = start_logged(&llm, &[("HEARTBEAT_INTERVAL", "1")]);
    let (status, _) = agent.put_budget(r#"{"background_tokens": 0}"#, true).await;
    assert_eq!(status, 200);
    std::fs::write(agent.workspace().join("HEARTBEAT.md"), "- check the feed and tell me what changed\n").unwrap();
    let skipped = |log: &Mutex<Vec<String>>| {
        log.lock().unwrap().iter().filter(|l| l.contains("the heartbeat waits until it allows a run")).count()
    };
    wait_until("a heartbeat check over budget", Duration::from_secs(30), || skipped(&log) > 0).await;
    // Later checks skip too (logged once a day, so the sign is that nothing reaches the model).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(skipped(&log), 1, "logged once, not at every check");
    assert_eq!(llm.completion_requests().len(), 0, "no heartbeat request reached the model");

    let (status, body) = agent.put_budget(r#"{"background_tokens": 1000000}"#, true).await;
    assert_eq!((status, &body["budget"]), (200, &json!({"background_tokens": 1_000_000})));
    wait_until("a heartbeat run", Duration::from_secs(30), || heartbeat_requests(&llm) > 0).await;
    // The model saw the request before it answered; the call is recorded once it has.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = agent.get_budget().await;
        if status.background_today.calls > 0 {
            break status;
        }
        assert!(Instant::now() < deadline, "the heartbeat's call was not recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.background_today, llm.served(0..1), "the run is counted as background");
}

#[tokio::test]
async fn get_budget_totals_every_cause_and_background_apart() {
    let llm = ScriptedLlm::start().await;
    llm.push_tool_call("spawn", r#"{"task":"count sheep","label":"sheep"}"#).push_text("Started.");
    llm.push_when("count sheep", baal_core::testing::openai::Reply::text("42 sheep"));
    let agent = start_agent(&llm, &[]);
    agent.chat("start a task", OWNER, None).await;
    agent.chat("hello", "777", Some("visitor")).await;
    // The subagent answers on its own; its call is recorded once it has the answer.
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.get_budget().await.today.calls < 4 {
        assert!(Instant::now() < deadline, "the subagent's call was not recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let subagent = llm.completion_requests().iter().position(|r| r.messages()[1]["content"] == "count sheep").unwrap();
    let status = agent.get_budget().await;
    assert_eq!(status.today, llm.served(0..4));
    assert_eq!(status.background_today, llm.served(subagent..subagent + 1));
}
