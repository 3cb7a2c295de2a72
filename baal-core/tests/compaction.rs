//! Compaction, black-box: the cases of the Python agent's `tests/test_compaction.py`, plus the
//! tool-pair guarantees it lacked.

use std::time::Duration;

use baal_core::agent::compaction::{CompactionConfig, estimate_tokens, prepare_context};
use baal_core::agent::history::{History, SUMMARY_MARKER};
use baal_core::agent::settings::context_limit;
use baal_core::inference::{ChatMessage, ClientOptions, MessageRole, OpenAiClient, RetryPolicy, ToolCall};
use baal_core::testing::openai::{Reply, ScriptedLlm};
use baal_core::wire::UsageCause;
use secrecy::SecretString;

fn client(llm: &ScriptedLlm) -> OpenAiClient {
    let mut options = ClientOptions::default();
    options.retry = RetryPolicy::new(0, Duration::from_millis(1));
    OpenAiClient::new(&llm.base_url(), SecretString::from("k"), options).unwrap()
}

async fn seed(history: &History, chat: &str, n: usize, len: usize) {
    for i in 0..n {
        let text = format!("msg {i} {}", "x".repeat(len));
        let message = if i % 2 == 0 { ChatMessage::user(text) } else { ChatMessage::assistant(Some(text), Vec::new()) };
        history.append(chat, &message).await.unwrap();
    }
}

#[test]
fn context_limits() {
    assert_eq!(context_limit(10_000, "qwen3-coder-next"), 10_000);
    assert_eq!(context_limit(0, "qwen3-coder-next"), 98_304);
    assert_eq!(context_limit(0, "glm-4.7"), 131_072);
    assert_eq!(context_limit(0, "some-other-model"), 32_768);
}

#[test]
fn token_estimates() {
    assert_eq!(estimate_tokens(&[]), 0);
    let pair = [ChatMessage::user("Hello"), ChatMessage::assistant(Some("Hi there".into()), Vec::new())];
    assert_eq!(estimate_tokens(&pair), 13 / 4 + 8);
    let call = ChatMessage::assistant(None, vec![ToolCall::new("call_abc", "bash", r#"{"command": "ls"}"#)]);
    let dumped = r#"[{"id": "call_abc", "type": "function", "function": {"name": "bash", "arguments": "{\"command\": \"ls\"}"}}]"#;
    assert_eq!(estimate_tokens(&[call]), dumped.len() / 4 + 4);
    let result = ChatMessage::tool("call_abc", "file1\nfile2");
    assert_eq!(estimate_tokens(&[result]), ("file1\nfile2".len() + "call_abc".len()) / 4 + 4);
    let no_content = ChatMessage::assistant(None, Vec::new());
    assert_eq!(estimate_tokens(&[no_content]), 4);
}

#[tokio::test]
async fn compact_history_keeps_the_newest_rows_behind_a_summary() {
    let history = History::in_memory().await.unwrap();
    for i in 0..10 {
        history.append("c1", &ChatMessage::user(format!("msg {i}"))).await.unwrap();
    }
    history.append("other", &ChatMessage::user("untouched")).await.unwrap();
    assert!(history.compact_history("c1", 4, "They talked about numbers.").await.unwrap());
    let rows = history.load("c1", 100).await.unwrap();
    assert_eq!(rows.len(), 6);
    let first = rows[0].message.content.clone().unwrap();
    assert!(first.contains(SUMMARY_MARKER) && first.contains("They talked about numbers."));
    assert_eq!(rows[0].message.role, MessageRole::User);
    assert_eq!(rows[1].message.role, MessageRole::Assistant);
    assert!(rows[1].message.content.clone().unwrap().contains("context from our previous conversation"));
    let rest: Vec<String> = rows[2..].iter().map(|r| r.message.content.clone().unwrap()).collect();
    assert_eq!(rest, vec!["msg 6", "msg 7", "msg 8", "msg 9"]);
    assert_eq!(history.load("other", 100).await.unwrap().len(), 1);
    // A limit keeps the newest rows, still oldest first, behind the summary.
    let newest = history.load("c1", 2).await.unwrap();
    let contents: Vec<String> = newest.iter().map(|r| r.message.content.clone().unwrap()).collect();
    assert_eq!(contents.len(), 4);
    assert!(contents[0].contains(SUMMARY_MARKER));
    assert_eq!(contents[2..], ["msg 8", "msg 9"]);

    // No-op when there are no more rows than `keep`.
    let small = History::in_memory().await.unwrap();
    for i in 0..3 {
        small.append("c", &ChatMessage::user(format!("m{i}"))).await.unwrap();
    }
    assert!(!small.compact_history("c", 4, "s").await.unwrap());
    assert_eq!(small.load("c", 100).await.unwrap().len(), 3);
}

#[tokio::test]
async fn under_budget_nothing_is_summarised() {
    let llm = ScriptedLlm::start().await;
    let history = History::in_memory().await.unwrap();
    seed(&history, "c", 6, 10).await;
    let config = CompactionConfig::new(100_000, 4096, 4, 100);
    let out = prepare_context(&history, &client(&llm), "m", "c", ChatMessage::system("sys"), config).await.unwrap();
    assert_eq!(out.len(), 7);
    assert_eq!(out[0].role, MessageRole::System);
    assert!(llm.requests().is_empty());

    let empty =
        prepare_context(&history, &client(&llm), "m", "nobody", ChatMessage::system("sys"), config).await.unwrap();
    assert_eq!(empty, vec![ChatMessage::system("sys")]);
}

#[tokio::test]
async fn over_budget_older_turns_become_one_summary() {
    let llm = ScriptedLlm::start().await;
    llm.push_text("The user sent twenty long messages.");
    let history = History::in_memory().await.unwrap();
    seed(&history, "c", 20, 200).await;
    let config = CompactionConfig::new(500, 100, 4, 100);
    let out = prepare_context(&history, &client(&llm), "m", "c", ChatMessage::system("sys"), config).await.unwrap();
    let calls = llm.completion_requests();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].body.get("tools").is_none(), "the summary call offers no tools");
    let asked = calls[0].messages();
    assert_eq!(asked[0]["content"], "sys", "the summary request reuses the system prefix");
    assert_eq!(asked.last().unwrap()["role"], "user");
    let joined = serde_json::to_string(&out).unwrap();
    assert!(joined.contains(SUMMARY_MARKER) && joined.contains("twenty long messages"));
    assert_eq!(out.len(), 1 + 2 + 4);
    assert!(estimate_tokens(&out) <= config.budget());
    assert_eq!(history.count("c").await.unwrap(), 4);
    // The summary call is metered: charged as compaction, for the chat it compacted.
    let metered = history.usage_since(0, 10).unwrap();
    assert_eq!(metered.len(), 1, "{metered:?}");
    assert_eq!(
        (metered[0].chat_id.as_str(), metered[0].cause, metered[0].model.as_str()),
        ("c", UsageCause::Compaction, "m")
    );
    assert_eq!(Some((metered[0].prompt_tokens, metered[0].completion_tokens)), calls[0].usage);
    assert!(!metered[0].estimated);
}

#[tokio::test]
async fn a_failed_summary_keeps_the_full_history() {
    let llm = ScriptedLlm::start().await;
    llm.push(Reply::status(500));
    let history = History::in_memory().await.unwrap();
    seed(&history, "c", 20, 200).await;
    let config = CompactionConfig::new(500, 100, 4, 100);
    let out = prepare_context(&history, &client(&llm), "m", "c", ChatMessage::system("sys"), config).await.unwrap();
    assert_eq!(out.len(), 21);
    assert_eq!(history.count("c").await.unwrap(), 20);
}

#[tokio::test]
async fn short_histories_are_sent_as_they_are_even_over_budget() {
    let llm = ScriptedLlm::start().await;
    let history = History::in_memory().await.unwrap();
    seed(&history, "c", 3, 500).await;
    let config = CompactionConfig::new(50, 10, 4, 100);
    let out = prepare_context(&history, &client(&llm), "m", "c", ChatMessage::system("sys"), config).await.unwrap();
    assert_eq!(out.len(), 4);
    assert!(llm.requests().is_empty());
}

#[tokio::test]
async fn compaction_never_splits_a_tool_call_from_its_result() {
    let llm = ScriptedLlm::start().await;
    llm.push_text("summary");
    let history = History::in_memory().await.unwrap();
    let big = "y".repeat(300);
    for turn in 0..4 {
        history.append("c", &ChatMessage::user(format!("turn {turn} {big}"))).await.unwrap();
        let calls =
            vec![ToolCall::new(format!("a{turn}"), "bash", "{}"), ToolCall::new(format!("b{turn}"), "bash", "{}")];
        history.append("c", &ChatMessage::assistant(None, calls)).await.unwrap();
        history.append("c", &ChatMessage::tool(format!("a{turn}"), big.clone())).await.unwrap();
        history.append("c", &ChatMessage::tool(format!("b{turn}"), big.clone())).await.unwrap();
        history.append("c", &ChatMessage::assistant(Some(format!("done {turn}")), Vec::new())).await.unwrap();
    }
    // keep = 7 would start the recent part on a tool row (turn 2's second result).
    let config = CompactionConfig::new(800, 100, 7, 100);
    let out = prepare_context(&history, &client(&llm), "m", "c", ChatMessage::system("sys"), config).await.unwrap();
    assert_valid_pairs(&out);
    let summary_request: Vec<ChatMessage> =
        serde_json::from_value(serde_json::Value::Array(llm.completion_requests()[0].messages())).unwrap();
    assert_valid_pairs(&summary_request);
    let rows = history.rows("c").await.unwrap();
    assert_ne!(rows[0].message.role, MessageRole::Tool, "the stored history starts on a whole turn");

    // A window that starts mid-turn is repaired too.
    let windowed = History::in_memory().await.unwrap();
    windowed.append("w", &ChatMessage::assistant(None, vec![ToolCall::new("z", "bash", "{}")])).await.unwrap();
    windowed.append("w", &ChatMessage::tool("z", "out")).await.unwrap();
    windowed.append("w", &ChatMessage::user("next")).await.unwrap();
    let config = CompactionConfig::new(100_000, 100, 20, 2);
    let out = prepare_context(&windowed, &client(&llm), "m", "w", ChatMessage::system("s"), config).await.unwrap();
    assert_eq!(out, vec![ChatMessage::system("s"), ChatMessage::user("next")]);
}

fn assert_valid_pairs(messages: &[ChatMessage]) {
    let mut open: Vec<String> = Vec::new();
    for m in messages {
        match m.role {
            MessageRole::Tool => {
                let id = m.tool_call_id.clone().unwrap();
                let pos = open.iter().position(|o| *o == id).unwrap_or_else(|| panic!("orphan tool result {id}"));
                open.remove(pos);
            }
            _ => {
                assert!(open.is_empty(), "calls without results: {open:?}");
                open = m.tool_calls.iter().map(|c| c.id.clone()).collect();
            }
        }
    }
    assert!(open.is_empty(), "calls without results: {open:?}");
}
