//! End-to-end: real `baal-agent` processes against the scripted LLM, on loopback.

mod common;

use baal_core::agent::history::History;
use baal_core::testing::openai::{Reply, ScriptedLlm};
use baal_core::wire::{AgentEvent, PendingMessage, PendingResponse, UsageCause, UsageResponse};
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn health_needs_no_auth_and_everything_else_does() {
    let llm = ScriptedLlm::start().await;
    let agent = start_agent(&llm, &[]);
    let health: Value =
        agent.http.get(format!("{}/health", agent.base_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["agent_name"], "Testy");
    assert_eq!(health["version"], baal_core::VERSION);

    let body = json!({"message": "hi", "chat_id": "5"});
    for auth in [None, Some("Bearer wrong"), Some("Bearer "), Some("test-agent-secre")] {
        let mut req = agent.http.post(format!("{}/chat", agent.base_url)).json(&body);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{auth:?}");
        assert_eq!(resp.json::<Value>().await.unwrap(), json!({"error": "unauthorized"}));
    }
    for path in ["/pending", "/pending/chats", "/usage", "/budget", "/files/memory/MEMORY.md"] {
        assert_eq!(agent.http.get(format!("{}{path}", agent.base_url)).send().await.unwrap().status(), 401);
    }
    let stop = agent.http.post(format!("{}/chat/5/stop", agent.base_url)).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(stop.status(), 401);
    assert!(llm.completion_requests().is_empty());
}

#[tokio::test]
async fn a_plain_answer_streams_text_then_done() {
    let llm = ScriptedLlm::start().await;
    llm.push_text("Hello! How can I help?");
    let agent = start_agent(&llm, &[]);
    let events = agent.chat("hi there", OWNER, None).await;
    assert_eq!(events, vec![AgentEvent::Text { content: "Hello! How can I help?".into() }, AgentEvent::done()]);

    let seen = llm.completion_requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].bearer.as_deref(), Some("test-llm-key"));
    let messages = seen[0].messages();
    assert_eq!(messages[0]["role"], "system");
    let system = messages[0]["content"].as_str().unwrap();
    assert!(system.starts_with("You are Testy, a personal AI agent."));
    assert!(system.contains("## Available Skills"));
    assert_eq!(messages[1], json!({"role": "user", "content": "hi there"}));
    // The owner is offered spawn; the history now holds the turn.
    assert!(seen[0].tool_names().contains(&"spawn".to_owned()));
    let events = agent.chat("again", OWNER, None).await;
    assert_eq!(texts(&events), vec!["echo: again"]);
    let messages = llm.completion_requests()[1].messages();
    assert_eq!(messages.len(), 4);
    assert_eq!(messages[2], json!({"role": "assistant", "content": "Hello! How can I help?"}));
}

/// The Python bot's client (spec §4.2): `data:` lines only, keepalives dropped, and its handler
/// acts on `text`, `error`, `file`, `tool_use` and `done`, ignoring any other type.
fn as_the_python_bot_reads(body: &str) -> Vec<(String, String)> {
    body.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .map(|event| (event["type"].as_str().unwrap_or_default().to_owned(), event))
        .filter(|(kind, _)| ["text", "error", "file", "tool_use", "done"].contains(&kind.as_str()))
        .map(|(kind, event)| {
            (kind, event["content"].as_str().or(event["name"].as_str()).unwrap_or_default().to_owned())
        })
        .collect()
}

#[tokio::test]
async fn an_old_bot_sees_the_whole_answer_once_while_new_bots_get_pieces() {
    let llm = ScriptedLlm::start().await;
    let answer = "A longer answer, written a few characters at a time, so that it streams in pieces.";
    llm.set_chunk_delay(std::time::Duration::from_millis(5)).push_text(answer);
    let agent = start_agent(&llm, &[]);
    let body = agent.chat_raw("hi", OWNER, None).await;
    assert!(body.contains(r#""type":"text_delta""#), "new bots get pieces: {body}");
    assert_eq!(
        as_the_python_bot_reads(&body),
        vec![("text".to_owned(), answer.to_owned()), ("done".to_owned(), String::new())],
        "an old bot sees one whole text, as before pieces existed"
    );
}

#[tokio::test]
async fn done_carries_the_turns_usage_and_get_usage_pages_through_every_call() {
    let llm = ScriptedLlm::start().await;
    llm.push_tool_call("read_file", r#"{"path":"memory/MEMORY.md"}"#).push_text("Nothing there.");
    let agent = start_agent(&llm, &[]);
    let events = parse_sse(&agent.chat_raw("what do you remember?", OWNER, None).await);
    let Some(AgentEvent::Done { usage: Some(usage) }) = events.last() else { panic!("{events:?}") };
    let served = llm.completion_requests().iter().map(|r| r.usage.unwrap()).collect::<Vec<_>>();
    assert_eq!(usage.calls, 2);
    assert_eq!(usage.prompt_tokens, served.iter().map(|u| u.0).sum::<u64>());
    assert_eq!(usage.completion_tokens, served.iter().map(|u| u.1).sum::<u64>());
    assert!(!usage.estimated);
    llm.push_text("Hi.");
    agent.chat("hello", "777", Some("visitor")).await;

    let get = |query: &'static str, auth: bool| {
        let mut req = agent.http.get(format!("{}/usage{query}", agent.base_url));
        if auth {
            req = req.bearer_auth(SECRET);
        }
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let (status, first) = get("?since=0&limit=2", true).await;
    assert_eq!(status, 200, "{first}");
    let page: UsageResponse = serde_json::from_value(first.clone()).unwrap();
    assert_eq!(page.records.iter().map(|r| r.cause).collect::<Vec<_>>(), [UsageCause::OwnerTurn; 2]);
    assert_eq!(page.next, page.records[1].id);
    assert_eq!(page.records[0].chat_id, OWNER);
    let (_, rest) = get("?since=2&limit=2", true).await;
    let rest: UsageResponse = serde_json::from_value(rest).unwrap();
    assert_eq!(
        (rest.records.len(), rest.records[0].cause, rest.records[0].chat_id.as_str()),
        (1, UsageCause::VisitorTurn, "777")
    );
    let (_, end) = get("?since=3", true).await;
    assert_eq!(end, json!({"records": [], "next": 3}), "a cursor at the end returns none and stays");
    let (_, all) = get("", true).await;
    assert_eq!(all["records"].as_array().unwrap().len(), 3);
    for bad in ["?since=-1", "?since=x", "?limit=0", "?limit=1001", "?limit=many"] {
        let (status, body) = get(bad, true).await;
        assert_eq!(status, 400, "{bad}");
        assert!(body["error"].as_str().unwrap().contains("since must be"), "{body}");
    }
    assert_eq!(get("", false).await, (401, json!({"error": "unauthorized"})));
}

#[tokio::test]
async fn llm_errors_and_timeouts_end_with_error_then_done() {
    let llm = ScriptedLlm::start().await;
    for _ in 0..3 {
        llm.push(Reply::status(500));
    }
    let agent = start_agent(&llm, &[("LLM_READ_TIMEOUT", "1")]);
    let events = agent.chat("hi", OWNER, None).await;
    assert_eq!(events.len(), 2, "{events:?}");
    let AgentEvent::Error { content } = &events[0] else { panic!("{events:?}") };
    assert!(content.contains("HTTP 500") && !content.contains("127.0.0.1"), "{content}");
    assert!(events[1].is_done());
    assert_eq!(llm.completion_requests().len(), 3);

    llm.push(Reply::Stall);
    let events = agent.chat("hi", OWNER, None).await;
    assert!(
        matches!(&events[..], [AgentEvent::Error { content }, AgentEvent::Done { .. }] if content.contains("too long")),
        "{events:?}"
    );
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let llm = ScriptedLlm::start().await;
    let agent = start_agent(&llm, &[]);
    let url = format!("{}/chat", agent.base_url);
    let cases = [
        ("{not json", 400),
        (r#"{"message":"hi"}"#, 422),
        (r#"{"message":1,"chat_id":"2"}"#, 422),
        (r#"{"message":"x","chat_id":""}"#, 422),
    ];
    for (body, status) in cases {
        let resp = agent
            .http
            .post(&url)
            .bearer_auth(SECRET)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{body}");
        assert!(resp.json::<Value>().await.unwrap()["error"].is_string());
    }
}

#[tokio::test]
async fn two_chats_never_see_each_others_history() {
    let llm = ScriptedLlm::start().await;
    let agent = start_agent(&llm, &[]);
    agent.chat("my password hint is tulip", "111", None).await;
    agent.chat("what do you know?", "222", None).await;
    agent.chat("and now?", "111", None).await;
    let seen = llm.completion_requests();
    let dump = |i: usize| serde_json::to_string(&seen[i].messages()).unwrap();
    assert!(!dump(1).contains("tulip"));
    assert!(dump(2).contains("tulip") && !dump(2).contains("what do you know"));

    // Reset one chat: the other keeps its history.
    let resp: Value = agent
        .http
        .delete(format!("{}/chat/111", agent.base_url))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp, json!({"status": "ok", "deleted": 4}));
    agent.chat("hello?", "111", None).await;
    assert!(!serde_json::to_string(&llm.completion_requests()[3].messages()).unwrap().contains("tulip"));
}

#[tokio::test]
async fn a_visitor_is_refused_tools_outside_the_visitor_list() {
    let llm = ScriptedLlm::start().await;
    llm.push(Reply::tool_calls(
        None,
        &[("spawn", r#"{"task":"mine bitcoin"}"#), ("bash", r#"{"command":"touch pwned"}"#)],
    ))
    .push_text("Sorry, I cannot.");
    let agent = start_agent(&llm, &[]);
    let events = agent.chat("spawn a task", "777", Some("visitor")).await;
    let seen = llm.completion_requests();
    let offered = seen[0].tool_names();
    assert!(!offered.contains(&"spawn".to_owned()) && !offered.contains(&"bash".to_owned()), "{offered:?}");
    assert!(offered.contains(&"web_fetch".to_owned()));
    assert!(matches!(&events[0], AgentEvent::ToolUse { name, .. } if name == "spawn"));
    let outputs: Vec<&String> = events
        .iter()
        .filter_map(|e| if let AgentEvent::ToolResult { output, .. } = e { Some(output) } else { None })
        .collect();
    assert_eq!(outputs.len(), 2);
    assert!(outputs.iter().all(|o| o.contains("not available")), "{outputs:?}");
    assert!(events.last().is_some_and(AgentEvent::is_done));
    assert!(!agent.workspace().join("pwned").exists());
    let tool_messages: Vec<Value> = seen[1].messages().into_iter().filter(|m| m["role"] == "tool").collect();
    assert!(tool_messages.iter().all(|m| m["content"].as_str().unwrap().contains("not available")));
    // And nothing was queued for anyone.
    let pending: PendingResponse = agent
        .http
        .get(format!("{}/pending", agent.base_url))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(pending.messages.is_empty());
}

#[tokio::test]
async fn the_owner_spawns_a_subagent_whose_result_reaches_the_owner_only() {
    let llm = ScriptedLlm::start().await;
    llm.push_tool_call("spawn", r#"{"task":"count to three","label":"counting"}"#)
        .push_text("Started it.")
        .push_when("count to three", Reply::text("one two three"));
    let agent = start_agent(&llm, &[]);
    let events = agent.chat("count in the background", OWNER, None).await;
    assert_eq!(texts(&events), vec!["Started it."]);
    let url = format!("{}/pending", agent.base_url);
    let mut got = Vec::new();
    for _ in 0..200 {
        let visitor: PendingResponse = agent
            .http
            .get(&url)
            .query(&[("chat_id", "777")])
            .bearer_auth(SECRET)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(visitor.messages.is_empty());
        let owner: PendingResponse = agent
            .http
            .get(&url)
            .query(&[("chat_id", OWNER)])
            .bearer_auth(SECRET)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        got.extend(owner.messages);
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].chat_id, OWNER);
    assert_eq!(got[0].source, "subagent");
    assert_eq!(got[0].content, "[Task: counting] one two three");
    // The subagent ran without history and without spawn.
    let sub = llm
        .completion_requests()
        .into_iter()
        .find(|r| r.messages().len() == 2 && r.messages()[1]["content"] == "count to three")
        .unwrap();
    assert!(!sub.tool_names().contains(&"spawn".to_owned()));
}

/// An agent whose database already holds these queued messages (chat, content), oldest first.
async fn agent_with_pending(llm: &ScriptedLlm, queued: &[(&str, &str)]) -> AgentProcess {
    let dir = tempfile::tempdir().unwrap();
    let history = History::open(&dir.path().join("agent.db")).await.unwrap();
    for (chat, content) in queued {
        history.push_pending(chat, content, "heartbeat").await.unwrap();
    }
    drop(history);
    start_agent_in(llm, &[], dir)
}

impl AgentProcess {
    /// `GET /pending` with these query parameters: the status and the JSON body.
    async fn get_pending(&self, query: &[(&str, &str)]) -> (u16, Value) {
        let resp =
            self.http.get(format!("{}/pending", self.base_url)).query(query).bearer_auth(SECRET).send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    /// `POST /pending/ack` with a raw body, authenticated or not.
    async fn post_ack(&self, body: &str, auth: bool) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/pending/ack", self.base_url))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if auth {
            req = req.bearer_auth(SECRET);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }
}

fn messages(body: &Value) -> Vec<PendingMessage> {
    serde_json::from_value::<PendingResponse>(body.clone()).unwrap().messages
}

#[tokio::test]
async fn leased_pending_messages_stay_until_acknowledged() {
    let llm = ScriptedLlm::start().await;
    let agent = agent_with_pending(&llm, &[(OWNER, "first"), ("777", "visitor's"), (OWNER, "second")]).await;

    let (status, body) = agent.get_pending(&[("chat_id", OWNER), ("lease", "300")]).await;
    assert_eq!(status, 200);
    let leased = messages(&body);
    assert_eq!(leased.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(), ["first", "second"]);
    let ids: Vec<i64> = leased.iter().map(|m| m.id.expect("a leased message has an id")).collect();
    let (_, again) = agent.get_pending(&[("chat_id", OWNER), ("lease", "300")]).await;
    assert!(messages(&again).is_empty(), "leased messages are not offered twice: {again}");

    // Acknowledging the first deletes it; the chat filter protects other chats' messages.
    let ack = json!({"ids": [ids[0]], "chat_id": OWNER}).to_string();
    assert_eq!(agent.post_ack(&ack, true).await, (200, json!({"status": "ok", "deleted": 1})));
    assert_eq!(agent.post_ack(&ack, true).await, (200, json!({"status": "ok", "deleted": 0})));
    // The old destructive read still takes everything left, leased or not, without ids.
    let (status, body) = agent.get_pending(&[]).await;
    assert_eq!(status, 200);
    let rest = messages(&body);
    assert_eq!(rest.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(), ["visitor's", "second"]);
    assert!(body["messages"].as_array().unwrap().iter().all(|m| m.get("id").is_none()), "{body}");
    assert!(messages(&agent.get_pending(&[]).await.1).is_empty());
    assert!(messages(&agent.get_pending(&[("lease", "1")]).await.1).is_empty());
}

#[tokio::test]
async fn bad_lease_and_ack_requests_are_refused_with_json() {
    let llm = ScriptedLlm::start().await;
    let agent = agent_with_pending(&llm, &[(OWNER, "kept")]).await;
    for lease in ["0", "3601", "-5", "1.5", "soon", ""] {
        let (status, body) = agent.get_pending(&[("chat_id", OWNER), ("lease", lease)]).await;
        assert_eq!(status, 422, "lease={lease:?}");
        assert!(body["error"].as_str().unwrap().contains("1 to 3600"), "{body}");
    }
    let cases = [("{not json", 400), ("", 400), (r#"{"chat_id":"1"}"#, 422), (r#"{"ids":["x"]}"#, 422), ("null", 422)];
    for (body, status) in cases {
        let (got, answer) = agent.post_ack(body, true).await;
        assert_eq!(got, status, "{body}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    let too_many = json!({ "ids": (1..=1001).collect::<Vec<i64>>() }).to_string();
    let (status, body) = agent.post_ack(&too_many, true).await;
    assert_eq!(status, 413);
    assert!(body["error"].as_str().unwrap().contains("at most 1000"), "{body}");
    let (status, body) = agent.post_ack(r#"{"ids":[1]}"#, false).await;
    assert_eq!((status, body), (401, json!({"error": "unauthorized"})));
    // Nothing above touched the queue.
    assert_eq!(messages(&agent.get_pending(&[("lease", "3600")]).await.1).len(), 1);
}

#[tokio::test]
async fn files_are_served_from_the_workspace_only() {
    let llm = ScriptedLlm::start().await;
    let agent = start_agent(&llm, &[]);
    let ws = agent.workspace();
    std::fs::create_dir_all(ws.join("out")).unwrap();
    std::fs::write(ws.join("out/report.txt"), "the report").unwrap();
    std::fs::write(ws.join(".env"), "SECRET=1").unwrap();
    std::os::unix::fs::symlink("/etc", ws.join("etc-link")).unwrap();
    let get = |path: &str| agent.http.get(format!("{}/files/{path}", agent.base_url)).bearer_auth(SECRET).send();
    let ok = get("out/report.txt").await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.headers()["content-disposition"].to_str().unwrap().contains("report.txt"));
    assert_eq!(ok.text().await.unwrap(), "the report");
    for (path, reason) in [
        ("etc-link/passwd", "escapes"),
        ("%2E%2E/agent.db", ""),
        ("..%2Fagent.db", ""),
        (".env", "sensitive"),
        ("missing.txt", "does not exist"),
    ] {
        let resp = get(path).await.unwrap();
        assert!(resp.status() == 403 || resp.status() == 404, "{path}: {}", resp.status());
        let body = resp.text().await.unwrap();
        assert!(body.contains(reason), "{path}: {body}");
    }
}

#[tokio::test]
async fn missing_settings_exit_with_code_2_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let output = agent_command(dir.path())
        .env("AGENT_SECRET", "x")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("LIBERTAI_API_KEY"));

    let llm = ScriptedLlm::start().await;
    let mut agent = start_agent(&llm, &[]);
    let pid = agent.child.id().to_string();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let exit = agent.child.wait().unwrap();
    assert_eq!(exit.code(), Some(0));
}

#[tokio::test]
async fn a_python_history_that_cannot_be_carried_over_stops_the_start_naming_its_file() {
    let llm = ScriptedLlm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let not_sqlite = dir.path().join("python-agent.db");
    std::fs::write(&not_sqlite, "an env file copied by mistake\n".repeat(100)).unwrap();
    let missing = dir.path().join("never-copied.db");
    for (file, says) in [(&not_sqlite, "not a database"), (&missing, "does not exist")] {
        let output = test_agent_command(&llm, &[("PYTHON_AGENT_DB", file.to_str().unwrap())], dir.path())
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(&file.display().to_string()), "the file is not named: {stderr}");
        assert!(stderr.contains(says), "{says:?} not in {stderr}");
        assert!(output.stdout.is_empty(), "it never listened");
    }
}

#[tokio::test]
async fn settings_come_from_a_config_file() {
    let llm = ScriptedLlm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.env");
    std::fs::write(
        &file,
        format!(
            "AGENT_NAME=\"File \\\"Agent\\\"\"\nLIBERTAI_API_BASE_URL={}\nLIBERTAI_API_KEY=k\nAGENT_SECRET={SECRET}\nHEARTBEAT_INTERVAL=0\n",
            llm.base_url()
        ),
    )
    .unwrap();
    let mut command = agent_command(dir.path());
    command.arg("--config").arg(&file);
    let agent = spawn(command, dir);
    let health: Value =
        agent.http.get(format!("{}/health", agent.base_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["agent_name"], "File \"Agent\"");
    let events = agent.chat("yo", "1", None).await;
    assert_eq!(texts(&events), vec!["echo: yo"]);
}

/// Both files the deployers write from one `AgentEnv` (the local deployer's JSON, a VM's
/// `EnvironmentFile`) start the agent with exactly the spec's name and prompt.
#[tokio::test]
async fn the_deployers_settings_files_start_the_agent() {
    use baal_core::agent_env::{AgentDefaults, AgentEnv};
    use baal_core::deploy::AgentSpec;
    use baal_core::domain::AgentId;
    use secrecy::{ExposeSecret, SecretString};

    let llm = ScriptedLlm::start().await;
    let name = "Ada \"the\" $(id) `id`\nsecond line \\n";
    let prompt = "Be brief.\n\tReally: $HOME, ${X}, 'quoted', \\ and \"double\" — 漢字";
    let spec = AgentSpec::new(
        AgentId(3),
        name,
        prompt,
        "qwen3-coder-next",
        SecretString::from("test-llm-key"),
        llm.base_url(),
        SecretString::from(SECRET),
        OWNER,
    );
    let dir = tempfile::tempdir().unwrap();
    let env = AgentEnv::new(&spec, &AgentDefaults::default(), 8080, dir.path());
    for (file_name, text) in [("settings.json", env.to_json()), ("agent.env", env.to_environment_file())] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(file_name);
        std::fs::write(&file, text.expose_secret()).unwrap();
        // PORT=0 (and the paths) from the environment win over the file's, as documented.
        let mut command = agent_command(dir.path());
        command.arg("--config").arg(&file);
        let agent = spawn(command, dir);
        let health: Value =
            agent.http.get(format!("{}/health", agent.base_url)).send().await.unwrap().json().await.unwrap();
        assert_eq!(health["agent_name"], name, "{file_name}");
        let before = llm.completion_requests().len();
        assert_eq!(texts(&agent.chat("yo", OWNER, None).await), vec!["echo: yo"], "{file_name}");
        let request = &llm.completion_requests()[before];
        let system = request.messages()[0]["content"].as_str().unwrap().to_owned();
        assert!(system.contains(prompt), "{file_name}: {system}");
    }
}

#[tokio::test]
async fn a_tool_turn_with_the_real_tools_keeps_the_secrets_out_of_reach() {
    use std::os::unix::fs::PermissionsExt;
    let llm = ScriptedLlm::start().await;
    llm.push(Reply::tool_calls(
        Some("Writing the file."),
        &[("write_file", r#"{"path":"notes/todo.txt","content":"buy milk\n"}"#)],
    ))
    .push_tool_call("read_file", r#"{"path":"notes/todo.txt"}"#)
    .push_tool_call(
        "bash",
        r#"{"command":"cat notes/todo.txt; env; cat /proc/self/environ; cat /proc/$PPID/environ; echo end"}"#,
    )
    .push_text("All done.");
    let dir = tempfile::tempdir().unwrap();
    // Tools may run as an unprivileged user (when the tests run as root): let it reach the workspace.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let agent = start_agent_in(&llm, &[], dir);
    let events = agent.chat("make a todo list", OWNER, None).await;
    let names: Vec<&str> = events
        .iter()
        .filter_map(|e| if let AgentEvent::ToolUse { name, .. } = e { Some(name.as_str()) } else { None })
        .collect();
    assert_eq!(names, vec!["write_file", "read_file", "bash"]);
    assert_eq!(texts(&events), vec!["Writing the file.", "All done."]);
    assert!(events.last().is_some_and(AgentEvent::is_done));
    assert_eq!(std::fs::read_to_string(agent.workspace().join("notes/todo.txt")).unwrap(), "buy milk\n");

    let seen = llm.completion_requests();
    let tool_results: Vec<String> = seen
        .last()
        .unwrap()
        .messages()
        .into_iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(tool_results.len(), 3);
    assert!(tool_results[1].contains("buy milk"), "{}", tool_results[1]);
    let bash = &tool_results[2];
    assert!(bash.contains("buy milk") && bash.contains("end"), "{bash}");
    for secret in ["test-llm-key", SECRET] {
        assert!(!bash.contains(secret), "a secret leaked into bash output: {bash}");
    }
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_the_running_tool() {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let llm = ScriptedLlm::start().await;
    // A duration unique to this run, so processes of other runs cannot be mistaken for ours.
    let marker = format!("sleep 4242.{}", std::process::id());
    llm.push_tool_call("bash", json!({ "command": marker }).to_string());
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The server learns that the client left when its next write fails: a keepalive at the latest.
    let agent = start_agent_in(&llm, &[("KEEPALIVE_INTERVAL", "1")], dir);
    // A raw connection, so that closing it really closes the socket.
    let addr = agent.base_url.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = json!({"message": "sleep", "chat_id": OWNER}).to_string();
    let head = format!(
        "POST /chat HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {SECRET}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(body.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("tool_use") {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "the agent closed the stream early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let tool = wait_for_processes(&marker).await;
    if tool.is_empty() {
        let mut rest = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, socket.read_buf(&mut rest)).await {
            if n == 0 {
                break;
            }
        }
        panic!("the tool never started; the stream said: {seen}{}", String::from_utf8_lossy(&rest));
    }
    drop(socket);
    let left = survivors(&tool).await;
    assert!(left.is_empty(), "the tool kept running after the client left: {left:?}");
    // Nothing the tool started under another pid survives either (its whole group was killed).
    assert_eq!(processes_matching(&marker), Vec::<u32>::new(), "a process of the tool outlived it");
}

#[tokio::test]
async fn a_killed_agent_takes_its_running_tool_with_it() {
    use std::os::unix::fs::PermissionsExt;
    let llm = ScriptedLlm::start().await;
    let marker = format!("sleep 4243.{}", std::process::id());
    llm.push_tool_call("bash", json!({ "command": marker }).to_string());
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut agent = start_agent_in(&llm, &[], dir);
    let request = {
        let http = agent.http.clone();
        let url = format!("{}/chat", agent.base_url);
        tokio::spawn(async move {
            let body = json!({"message": "sleep", "chat_id": OWNER});
            // Read the stream, so the agent sees a client until it is killed; the stream then
            // breaks, and only the kill matters here.
            if let Ok(response) = http.post(url).bearer_auth(SECRET).json(&body).send().await {
                let _ = response.bytes().await;
            }
        })
    };
    let tool = wait_for_processes(&marker).await;
    assert!(!tool.is_empty(), "the tool never started");
    // SIGKILL: the agent gets no chance to clean up.
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    let left = survivors(&tool).await;
    assert!(left.is_empty(), "the tool outlived the killed agent: {left:?}");
    request.abort();
}

#[tokio::test]
async fn keepalives_reach_the_client_while_the_model_thinks() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let llm = ScriptedLlm::start().await;
    llm.push_tool_call("bash", r#"{"command":"sleep 3"}"#);
    let dir = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let agent = start_agent_in(&llm, &[("KEEPALIVE_INTERVAL", "1")], dir);
    let addr = agent.base_url.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = json!({"message": "think", "chat_id": OWNER}).to_string();
    let head = format!(
        "POST /chat HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {SECRET}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(body.as_bytes()).await.unwrap();
    let mut all = String::new();
    socket.read_to_string(&mut all).await.unwrap();
    assert!(all.contains(r#"{"type":"keepalive"}"#), "{all}");
    assert!(all.contains(r#"{"type":"done""#), "{all}");
}

/// Reads `socket` until the agent closes it (end of stream or reset), for at most `guard`.
async fn closed_by_the_agent(socket: &mut tokio::net::TcpStream, guard: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let read_to_end = async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(guard, read_to_end).await.is_ok()
}

/// `GET /health` from fresh connections until one answers, for at most `guard`.
async fn health_answers_within(agent: &AgentProcess, guard: std::time::Duration) -> bool {
    let url = format!("{}/health", agent.base_url);
    let attempts = async {
        loop {
            // A new client each time: a refused connection must not be retried from a pool.
            let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
            if let Ok(response) = client.get(&url).send().await
                && response.status() == 200
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(guard, attempts).await.is_ok()
}

async fn connect(agent: &AgentProcess) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(agent.base_url.trim_start_matches("http://")).await.unwrap()
}

#[tokio::test]
async fn connections_beyond_max_connections_are_closed_at_once() {
    let llm = ScriptedLlm::start().await;
    let agent = start_agent(&llm, &[("MAX_CONNECTIONS", "8"), ("HEADER_READ_TIMEOUT", "600")]);
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(connect(&agent).await);
    }
    // The kernel hands connections over in order: by now the first eight hold every slot.
    let mut extra = connect(&agent).await;
    assert!(closed_by_the_agent(&mut extra, std::time::Duration::from_secs(20)).await, "a ninth connection was kept");
    assert!(
        !health_answers_within(&agent, std::time::Duration::from_secs(1)).await,
        "the cap did not hold while eight idle connections were open"
    );
    // One slot frees: a fresh client gets in.
    held.pop();
    assert!(health_answers_within(&agent, std::time::Duration::from_secs(20)).await, "a freed slot was not reused");
}

#[tokio::test]
async fn idle_and_dribbling_clients_are_dropped_so_health_still_answers() {
    use tokio::io::AsyncWriteExt;
    let llm = ScriptedLlm::start().await;
    let agent = start_agent(&llm, &[("MAX_CONNECTIONS", "16"), ("HEADER_READ_TIMEOUT", "2")]);
    // A client that sends its headers one byte at a time, each well within any idle timeout.
    let (mut dribble_read, mut dribble_write) = connect(&agent).await.into_split();
    let dribbler = tokio::spawn(async move {
        if dribble_write.write_all(b"GET /health HTTP/1.1\r\nx-slow: ").await.is_err() {
            return;
        }
        while dribble_write.write_all(b"a").await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    // More idle sockets than the cap, all held open.
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(connect(&agent).await);
    }
    // Hang guards only: the idle ones go after HEADER_READ_TIMEOUT (2 s), whatever the machine.
    assert!(health_answers_within(&agent, std::time::Duration::from_secs(30)).await, "idle sockets starved /health");
    for (i, socket) in idle.iter_mut().enumerate() {
        assert!(closed_by_the_agent(socket, std::time::Duration::from_secs(30)).await, "idle socket {i} was kept");
    }
    let dribble_closed = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 1024];
        while matches!(dribble_read.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    assert!(dribble_closed.is_ok(), "a client dribbling its headers was kept");
    dribbler.abort();
}

#[tokio::test]
async fn an_oversized_chat_is_refused_and_never_stored_or_sent() {
    let llm = ScriptedLlm::start().await;
    let agent = start_agent(&llm, &[]);
    let url = format!("{}/chat", agent.base_url);
    let huge = "x".repeat(2 * 1024 * 1024);
    let body = json!({"message": huge, "chat_id": OWNER}).to_string();
    // Declared length, then chunked (no length: the read itself stops at the limit).
    let declared = agent.http.post(&url).bearer_auth(SECRET).header("content-type", "application/json");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.as_bytes().chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let chunked = agent
        .http
        .post(&url)
        .bearer_auth(SECRET)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)));
    for request in [declared.body(body.clone()), chunked] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 413);
        let answer: Value = response.json().await.unwrap();
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains("1048576 bytes") && error.contains("MAX_CHAT_BODY_BYTES"), "{answer}");
    }
    // 100 MB announced: refused at once, without waiting for (or reading) the body.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut socket = connect(&agent).await;
        let head = format!(
            "POST /chat HTTP/1.1\r\nhost: agent\r\nauthorization: Bearer {SECRET}\r\ncontent-type: application/json\r\ncontent-length: 100000000\r\n\r\n{{\"message\": \"xxxx"
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(20), socket.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "the agent waited for a body it will refuse");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413") && answer.contains("MAX_CHAT_BODY_BYTES"), "{answer}");
    }
    assert!(llm.completion_requests().is_empty(), "the model saw an oversized message");
    // Nothing was stored: the chat's next turn starts from an empty history.
    agent.chat("short", OWNER, None).await;
    let messages = llm.completion_requests()[0].messages();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[1], json!({"role": "user", "content": "short"}));
}

#[tokio::test]
async fn a_turn_past_turn_timeout_ends_with_an_error_and_its_tool_dies() {
    use std::os::unix::fs::PermissionsExt;
    let llm = ScriptedLlm::start().await;
    let marker = format!("sleep 4244.{}", std::process::id());
    llm.push_tool_call("bash", json!({ "command": marker }).to_string());
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A header deadline shorter than the turn: a stream under way is not a client being slow.
    let agent = start_agent_in(&llm, &[("TURN_TIMEOUT", "2"), ("HEADER_READ_TIMEOUT", "1")], dir);
    let agent = std::sync::Arc::new(agent);
    let turn = {
        let agent = agent.clone();
        tokio::spawn(async move { agent.chat("sleep for a minute", OWNER, None).await })
    };
    let tool = wait_for_processes(&marker).await;
    assert!(!tool.is_empty(), "the tool never started");
    let events = tokio::time::timeout(std::time::Duration::from_secs(60), turn).await.expect("the turn hung").unwrap();
    let events: Vec<&AgentEvent> = events.iter().filter(|e| **e != AgentEvent::Keepalive).collect();
    assert!(matches!(events[0], AgentEvent::ToolUse { name, .. } if name == "bash"), "{events:?}");
    assert!(
        matches!(&events[1..], [AgentEvent::Error { content }, AgentEvent::Done { .. }] if content.contains("longer than 2 seconds")),
        "{events:?}"
    );
    let left = survivors(&tool).await;
    assert!(left.is_empty(), "the tool outlived its turn: {left:?}");
    assert_eq!(processes_matching(&marker), Vec::<u32>::new(), "a process of the tool outlived it");
    // The chat is free again.
    assert_eq!(texts(&agent.chat("again", OWNER, None).await), vec!["echo: again"]);
}

#[tokio::test]
async fn files_are_streamed_and_refused_over_the_send_limit() {
    use baal_core::agent::tools::MAX_SEND_FILE_BYTES;
    let llm = ScriptedLlm::start().await;
    let agent = start_agent(&llm, &[]);
    let ws = agent.workspace();
    // Sparse: a gibibyte that costs no disk.
    std::fs::File::create(ws.join("huge.img")).unwrap().set_len(1 << 30).unwrap();
    let content: Vec<u8> = (0..2u32 * 1024 * 1024).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(ws.join("two-mib.bin"), &content).unwrap();
    let get = |path: &str| agent.http.get(format!("{}/files/{path}", agent.base_url)).bearer_auth(SECRET).send();

    let refused = tokio::time::timeout(std::time::Duration::from_secs(20), get("huge.img"))
        .await
        .expect("a huge file hung the agent")
        .unwrap();
    assert_eq!(refused.status(), 413);
    let answer: Value = refused.json().await.unwrap();
    assert!(answer["error"].as_str().unwrap().contains(&MAX_SEND_FILE_BYTES.to_string()), "{answer}");

    let served = get("two-mib.bin").await.unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.content_length(), Some(content.len() as u64));
    assert!(served.bytes().await.unwrap() == content, "the file was not served intact");
}

/// When each heartbeat run asked the model (its prompt names HEARTBEAT.md), as seen so far.
fn heartbeat_runs(llm: &ScriptedLlm) -> usize {
    llm.completion_requests()
        .iter()
        .filter(|r| r.messages()[1]["content"].as_str().unwrap_or("").contains("HEARTBEAT.md"))
        .count()
}

async fn wait_for_runs(llm: &ScriptedLlm, at_least: usize, limit: std::time::Duration) -> std::time::Instant {
    let deadline = std::time::Instant::now() + limit;
    while heartbeat_runs(llm) < at_least {
        assert!(std::time::Instant::now() < deadline, "only {} heartbeat runs after {limit:?}", heartbeat_runs(llm));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    std::time::Instant::now()
}

#[tokio::test]
async fn the_heartbeat_recurs_is_silent_when_idle_and_keeps_its_schedule_across_a_restart() {
    use std::time::Duration;
    let llm = ScriptedLlm::start().await;
    llm.set_fallback(baal_core::testing::openai::Fallback::Text("The feed has 3 new posts.".into()));
    let agent = start_agent(&llm, &[("HEARTBEAT_INTERVAL", "1")]);
    // The prepared HEARTBEAT.md is comments only: checks come and go, the model is never asked.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(llm.completion_requests().len(), 0, "an idle heartbeat spends nothing");

    std::fs::write(agent.workspace().join("HEARTBEAT.md"), "- check the feed and tell me what changed\n").unwrap();
    wait_for_runs(&llm, 3, Duration::from_secs(15)).await;
    let (status, pending) = agent.get_pending(&[("chat_id", OWNER)]).await;
    assert_eq!(status, 200);
    assert!(pending.to_string().contains("[Heartbeat] The feed has 3 new posts."), "{pending}");

    // Restarted with a 2 s period right after a run: the next run comes on schedule, measured
    // from the last run before the restart: not at once, and not a whole period late.
    let before = heartbeat_runs(&llm);
    let last_run = wait_for_runs(&llm, before + 1, Duration::from_secs(5)).await;
    let runs = heartbeat_runs(&llm);
    let dir = agent.stop();
    let _agent = start_agent_in(&llm, &[("HEARTBEAT_INTERVAL", "2")], dir);
    let next = wait_for_runs(&llm, runs + 1, Duration::from_secs(15)).await;
    let gap = next - last_run;
    assert!(gap >= Duration::from_millis(1900), "ran {gap:?} after the last run: the restart repeated it");
    assert!(gap <= Duration::from_secs(8), "ran {gap:?} after the last run: postponed by the restart");
}

/// `LOG_FORMAT=json`: every line the agent logs is one JSON object, and a turn's lines carry the
/// turn's span (its chat and id); a log format the agent does not know is a bad setting (exit 2).
#[tokio::test]
async fn json_logs_carry_the_turns_span_and_an_unknown_format_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let output = agent_command(dir.path())
        .env("AGENT_SECRET", "x")
        .env("LIBERTAI_API_KEY", "k")
        .env("LOG_FORMAT", "xml")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("LOG_FORMAT") && said.contains("text or json"), "{said}");

    let llm = ScriptedLlm::start().await;
    // The model server fails every try: the turn logs why.
    for _ in 0..8 {
        llm.push(Reply::status(500));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut command = test_agent_command(&llm, &[("LOG_FORMAT", "json"), ("RUST_LOG", "info")], dir.path());
    command.stderr(std::process::Stdio::piped());
    let mut agent = spawn(command, dir);
    let events = agent.chat("hello", "4242", None).await;
    assert!(events.iter().any(|e| matches!(e, AgentEvent::Error { .. })), "{events:?}");
    let _ = agent.child.kill();
    let _ = agent.child.wait();
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut agent.child.stderr.take().unwrap(), &mut logs).unwrap();
    assert!(!logs.trim().is_empty(), "the agent logged something");
    assert!(!logs.contains('\u{1b}'), "{logs:?}");
    let lines: Vec<Value> = logs
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}")))
        .collect();
    let in_turn = lines.iter().find(|line| line["span"]["name"] == "turn").unwrap_or_else(|| panic!("{logs}"));
    assert_eq!(in_turn["span"]["chat"], "4242", "{in_turn}");
    assert!(in_turn["span"]["turn"].as_str().is_some_and(|id| id.len() == 8), "{in_turn}");
    assert!(in_turn["level"].is_string() && in_turn["fields"]["message"].is_string(), "{in_turn}");
}
