//! The OpenAI-compatible client against the scripted LLM on loopback.

use std::time::Duration;

use baal_core::inference::{
    ChatMessage, ClientOptions, CompletionRequest, Inference, InferenceError, OpenAiClient, RetryPolicy, ToolCall,
    ToolSpec,
};
use baal_core::testing::openai::{Reply, ScriptedLlm};
use secrecy::SecretString;
use serde_json::json;

fn client(llm: &ScriptedLlm, read_timeout: Duration) -> OpenAiClient {
    let mut options = ClientOptions::default();
    options.read_timeout = read_timeout;
    options.retry = RetryPolicy::new(2, Duration::from_millis(20));
    OpenAiClient::new(&llm.base_url(), SecretString::from("test-key"), options).unwrap()
}

fn request() -> CompletionRequest {
    CompletionRequest::new(
        "qwen3-coder-next",
        vec![ChatMessage::system("sys"), ChatMessage::user("hello there")],
        vec![ToolSpec::new("bash", "run", json!({"type":"object"}))],
    )
}

#[tokio::test]
async fn streams_text_and_split_tool_calls() {
    let llm = ScriptedLlm::start().await;
    llm.push(Reply::tool_calls(
        Some("Let me look."),
        &[("bash", r#"{"command":"ls -la /tmp"}"#), ("read_file", r#"{"path":"a.txt"}"#)],
    ));
    let c = client(&llm, Duration::from_secs(10));
    let done = c.complete(&request()).await.unwrap();
    assert_eq!(done.content, "Let me look.");
    assert_eq!(
        done.tool_calls,
        vec![
            ToolCall::new("call_0", "bash", r#"{"command":"ls -la /tmp"}"#),
            ToolCall::new("call_1", "read_file", r#"{"path":"a.txt"}"#)
        ]
    );
    // The fallback echoes the last user message.
    assert_eq!(c.complete(&request()).await.unwrap().content, "echo: hello there");
    let seen = llm.completion_requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].bearer.as_deref(), Some("test-key"));
    assert_eq!(seen[0].tool_names(), vec!["bash"]);
    assert_eq!(seen[0].body["stream"], json!(true));
}

#[tokio::test]
async fn chunks_without_ids_are_accepted() {
    let llm = ScriptedLlm::start().await;
    llm.omit_chunk_ids(true).push_text("fine");
    let done = client(&llm, Duration::from_secs(10)).complete(&request()).await.unwrap();
    assert_eq!(done.content, "fine");
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_retried() {
    let llm = ScriptedLlm::start().await;
    llm.push(Reply::status(500)).push(Reply::status(429)).push_text("third time lucky");
    let done = client(&llm, Duration::from_secs(10)).complete(&request()).await.unwrap();
    assert_eq!(done.content, "third time lucky");
    assert_eq!(llm.completion_requests().len(), 3);
}

#[tokio::test]
async fn gives_up_after_the_retries() {
    let llm = ScriptedLlm::start().await;
    for _ in 0..3 {
        llm.push(Reply::status(503));
    }
    let err = client(&llm, Duration::from_secs(10)).complete(&request()).await.unwrap_err();
    assert_eq!(err, InferenceError::Status(503));
    assert!(err.to_string().contains("503"));
}

#[tokio::test]
async fn a_refused_key_is_not_retried() {
    let llm = ScriptedLlm::start().await;
    llm.accept_keys(&["another-key"]);
    let err = client(&llm, Duration::from_secs(10)).complete(&request()).await.unwrap_err();
    assert_eq!(err, InferenceError::Unauthorized);
    assert_eq!(llm.completion_requests().len(), 1);
}

#[tokio::test]
async fn a_stalled_stream_times_out() {
    let llm = ScriptedLlm::start().await;
    llm.push(Reply::Stall);
    let err = client(&llm, Duration::from_millis(300)).complete(&request()).await.unwrap_err();
    assert_eq!(err, InferenceError::Timeout);
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let llm = ScriptedLlm::start().await;
    for _ in 0..3 {
        llm.push(Reply::Hang);
    }
    let err = client(&llm, Duration::from_millis(300)).complete(&request()).await.unwrap_err();
    assert_eq!(err, InferenceError::Timeout);
}

#[tokio::test]
async fn an_unreachable_server_is_reported_as_such() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut options = ClientOptions::default();
    options.retry = RetryPolicy::new(1, Duration::from_millis(10));
    let c = OpenAiClient::new(&format!("http://{addr}/v1"), SecretString::from("k"), options).unwrap();
    assert_eq!(c.complete(&request()).await.unwrap_err(), InferenceError::Unreachable);
}

#[tokio::test]
async fn credits_balance_checks_the_key() {
    let llm = ScriptedLlm::start().await;
    llm.accept_keys(&["good"]).set_balance(42.5);
    baal_core::install_crypto_provider();
    let http = reqwest::Client::new();
    let url = format!("{}/credits/balance", llm.base_url());
    let ok = http.get(&url).bearer_auth("good").send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.json::<serde_json::Value>().await.unwrap()["balance"], json!(42.5));
    let bad = http.get(&url).bearer_auth("bad").send().await.unwrap();
    assert_eq!(bad.status(), 401);
}
