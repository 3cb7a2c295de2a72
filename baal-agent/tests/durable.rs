//! Durable turns, `POST /chat/{chat_id}/stop` and `GET /pending/chats`, end to end: real
//! `baal-agent` processes running `bash` against the scripted LLM, on loopback.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use baal_core::agent::history::History;
use baal_core::testing::openai::{Reply, ScriptedLlm};
use baal_core::wire::{AgentEvent, PendingChats, PendingMessage, PendingResponse, TURN_STOPPED};
use common::*;
use serde_json::{Value, json};

/// An agent whose tools may run as an unprivileged user (when the tests run as root).
fn agent_for_tools(llm: &ScriptedLlm) -> AgentProcess {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    start_agent_in(llm, &[], dir)
}

impl AgentProcess {
    async fn get_json(&self, path: &str) -> (u16, Value) {
        let resp = self.http.get(format!("{}{path}", self.base_url)).bearer_auth(SECRET).send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    async fn pending_chats(&self) -> Vec<String> {
        let (status, body) = self.get_json("/pending/chats").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_value::<PendingChats>(body).unwrap().chats
    }

    /// Leases every message of `chat` for 300 s.
    async fn lease(&self, chat: &str) -> Vec<PendingMessage> {
        let (status, body) = self.get_json(&format!("/pending?chat_id={chat}&lease=300")).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_value::<PendingResponse>(body).unwrap().messages
    }

    /// `POST /chat/{chat}/stop`: the status and the body.
    async fn stop_chat(&self, chat: &str) -> (u16, Value) {
        let resp =
            self.http.post(format!("{}/chat/{chat}/stop", self.base_url)).bearer_auth(SECRET).send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    /// Waits (up to 60 s: a whole suite may share two cores) until `chat` has something to collect.
    async fn wait_until_queued(&self, chat: &str) {
        for _ in 0..600 {
            if self.pending_chats().await.iter().any(|c| c == chat) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("nothing was queued for {chat}");
    }
}

fn sources_and_contents(messages: &[PendingMessage]) -> Vec<(&str, &str)> {
    messages.iter().map(|m| (m.source.as_str(), m.content.as_str())).collect()
}

#[tokio::test]
async fn a_durable_turn_whose_client_leaves_mid_tool_finishes_and_its_answer_is_queued_once() {
    let llm = ScriptedLlm::start().await;
    // A duration unique to this run, so processes of other runs cannot be mistaken for ours.
    let marker = format!("sleep 2.{}", std::process::id());
    let command = format!("{marker} && echo finished > finished.txt");
    llm.push(Reply::tool_calls(Some("Starting."), &[("bash", &json!({ "command": command }).to_string())]));
    llm.push(Reply::tool_calls(
        Some("Here is the report."),
        &[("send_file", r#"{"path":"report.txt","caption":"the report"}"#)],
    ));
    llm.push_text("All done.");
    let agent = agent_for_tools(&llm);
    std::fs::write(agent.workspace().join("report.txt"), "the report").unwrap();

    let body = json!({"message": "work", "chat_id": OWNER, "durable": true});
    let (socket, seen) = chat_until(&agent, &body, "tool_use").await;
    assert!(seen.contains("Starting."), "{seen}");
    assert!(!wait_for_processes(&marker).await.is_empty(), "the tool never started");
    drop(socket);

    agent.wait_until_queued(OWNER).await;
    let queued = agent.lease(OWNER).await;
    let file: Value = serde_json::from_str(&queued[1].content).unwrap();
    assert_eq!(file, json!({"type": "file", "path": "report.txt", "caption": "the report"}));
    assert_eq!(
        sources_and_contents(&queued),
        [
            ("turn", "Starting.\n\nHere is the report."),
            ("turn_file", queued[1].content.as_str()),
            ("turn", "All done.")
        ],
        "in the order the turn wrote them, what the client read (\"Starting.\") opening the first text"
    );
    assert_eq!(std::fs::read_to_string(agent.workspace().join("finished.txt")).unwrap(), "finished\n");
    // Once: acknowledged, nothing comes back, not even after a lease.
    let ids: Vec<i64> = queued.iter().map(|m| m.id.unwrap()).collect();
    let ack = agent
        .http
        .post(format!("{}/pending/ack", agent.base_url))
        .bearer_auth(SECRET)
        .json(&json!({"ids": ids, "chat_id": OWNER}))
        .send()
        .await
        .unwrap();
    assert_eq!(ack.json::<Value>().await.unwrap()["deleted"], 3);
    assert!(agent.pending_chats().await.is_empty());
    assert!(agent.lease(OWNER).await.is_empty());
    // The history holds the whole turn: the next request to the model has it.
    agent.chat("thanks", OWNER, None).await;
    let messages = llm.completion_requests().pop().unwrap().messages();
    let said: Vec<&str> =
        messages.iter().filter(|m| m["role"] == "assistant").filter_map(|m| m["content"].as_str()).collect();
    assert_eq!(said, ["Starting.", "Here is the report.", "All done."]);
}

/// Starts a turn in `OWNER`'s chat that runs `sleep` under `marker`, durable or not, read by a
/// streaming client until the tool runs; returns the client's response, what it read, and the
/// tool's pids.
async fn turn_with_a_running_tool(
    agent: &AgentProcess,
    marker: &str,
    durable: bool,
) -> (reqwest::Response, String, Vec<u32>) {
    let mut body = json!({"message": "sleep", "chat_id": OWNER});
    if durable {
        body["durable"] = true.into();
    }
    let mut response =
        agent.http.post(format!("{}/chat", agent.base_url)).bearer_auth(SECRET).json(&body).send().await.unwrap();
    let mut read = String::new();
    while !read.contains("tool_use") {
        let chunk = response.chunk().await.unwrap().unwrap_or_else(|| panic!("the stream ended early: {read}"));
        read.push_str(&String::from_utf8_lossy(&chunk));
    }
    let tool = wait_for_processes(marker).await;
    assert!(!tool.is_empty(), "the tool never started");
    (response, read, tool)
}

#[tokio::test]
async fn stop_kills_the_running_tool_of_a_plain_and_of_a_durable_turn_and_queues_nothing() {
    for durable in [false, true] {
        let llm = ScriptedLlm::start().await;
        let marker = format!("sleep 4245.{}{}", std::process::id(), u8::from(durable));
        llm.push_tool_call("bash", json!({ "command": marker }).to_string());
        let agent = agent_for_tools(&llm);
        let (mut response, mut read, tool) = turn_with_a_running_tool(&agent, &marker, durable).await;

        assert_eq!(agent.stop_chat(OWNER).await, (200, json!({"stopped": true})), "durable: {durable}");
        while let Some(chunk) = response.chunk().await.unwrap() {
            read.push_str(&String::from_utf8_lossy(&chunk));
        }
        let events: Vec<AgentEvent> = parse_sse(&read).into_iter().filter(|e| *e != AgentEvent::Keepalive).collect();
        match &events[events.len() - 2..] {
            [AgentEvent::Error { content }, AgentEvent::Done { usage: Some(usage) }] => {
                assert_eq!(content, TURN_STOPPED);
                assert_eq!(usage.calls, 1, "the usage so far");
            }
            other => panic!("durable: {durable}: {other:?}"),
        }
        let left = survivors(&tool).await;
        assert!(left.is_empty(), "durable: {durable}: the tool outlived the stop: {left:?}");
        assert_eq!(processes_matching(&marker), Vec::<u32>::new(), "a process of the tool outlived it");
        assert_eq!(agent.stop_chat(OWNER).await, (200, json!({"stopped": false})), "nothing runs any more");
        assert!(agent.pending_chats().await.is_empty(), "durable: {durable}");
        assert_eq!(texts(&agent.chat("again", OWNER, None).await), ["echo: again"]);
    }
}

#[tokio::test]
async fn stopping_a_durable_turn_whose_client_left_kills_its_tool_and_queues_nothing() {
    let llm = ScriptedLlm::start().await;
    let marker = format!("sleep 4246.{}", std::process::id());
    llm.push(Reply::tool_calls(Some("Starting."), &[("bash", &json!({ "command": marker }).to_string())]));
    let agent = agent_for_tools(&llm);
    let (socket, _) =
        chat_until(&agent, &json!({"message": "sleep", "chat_id": OWNER, "durable": true}), "tool_use").await;
    let tool = wait_for_processes(&marker).await;
    assert!(!tool.is_empty(), "the tool never started");
    drop(socket);
    // The turn outlives its client...
    assert_eq!(agent.stop_chat(OWNER).await, (200, json!({"stopped": true})), "the detached turn was still running");
    // ...until it is stopped.
    let left = survivors(&tool).await;
    assert!(left.is_empty(), "the tool outlived the stop: {left:?}");
    // A later durable turn whose client leaves as soon as the answer starts: its answer is queued,
    // and it is all there is (no notice of the stopped turn before it).
    let (socket, _) =
        chat_until(&agent, &json!({"message": "next", "chat_id": OWNER, "durable": true}), "text/event-stream").await;
    drop(socket);
    agent.wait_until_queued(OWNER).await;
    assert_eq!(sources_and_contents(&agent.lease(OWNER).await), [("turn", "echo: next")]);
    assert_eq!(llm.completion_requests().len(), 2, "the stopped turn asked the model nothing more");
}

#[tokio::test]
async fn a_client_that_leaves_a_plain_turn_still_cancels_it_and_nothing_is_queued() {
    let llm = ScriptedLlm::start().await;
    let marker = format!("sleep 4247.{}", std::process::id());
    llm.push_tool_call("bash", json!({ "command": marker }).to_string());
    let agent = agent_for_tools(&llm);
    // As old bots send it: no `durable`.
    let (socket, _) = chat_until(&agent, &json!({"message": "sleep", "chat_id": OWNER}), "tool_use").await;
    let tool = wait_for_processes(&marker).await;
    assert!(!tool.is_empty(), "the tool never started");
    drop(socket);
    let left = survivors(&tool).await;
    assert!(left.is_empty(), "the tool kept running after the client left: {left:?}");
    // The chat is free again (the cancelled turn holds no lock), and nothing of it was queued.
    assert_eq!(texts(&agent.chat("again", OWNER, None).await), ["echo: again"]);
    assert!(agent.pending_chats().await.is_empty());
    assert_eq!(agent.stop_chat(OWNER).await, (200, json!({"stopped": false})));
}

#[tokio::test]
async fn pending_chats_lists_exactly_the_chats_with_messages_to_read_now() {
    let llm = ScriptedLlm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let history = History::open(&dir.path().join("agent.db")).await.unwrap();
    for (chat, content, source) in [
        ("777", "visitor's answer", "turn"),
        (OWNER, "tick", "heartbeat"),
        ("888", "another", "turn"),
        ("777", "more", "turn"),
    ] {
        history.push_pending(chat, content, source).await.unwrap();
    }
    drop(history);
    let agent = start_agent_in(&llm, &[], dir);
    assert_eq!(agent.pending_chats().await, ["777", OWNER, "888"], "the chat of the oldest message first");
    // A leased chat has nothing to read until its lease runs out or the messages come back.
    assert_eq!(agent.lease(OWNER).await.len(), 1);
    assert_eq!(agent.pending_chats().await, ["777", "888"]);
    let visitor = agent.lease("777").await;
    assert_eq!(sources_and_contents(&visitor), [("turn", "visitor's answer"), ("turn", "more")]);
    assert_eq!(agent.pending_chats().await, ["888"]);
    // Reading the list changes nothing.
    assert_eq!(agent.pending_chats().await, ["888"]);
    assert_eq!(agent.lease("888").await.len(), 1);
    assert!(agent.pending_chats().await.is_empty());
}
