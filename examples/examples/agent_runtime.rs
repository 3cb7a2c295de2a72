//! The agent loop in your own process, without `baal-agent`'s HTTP server.
//!
//! An [`Agent`] is the loop every deployed Baal agent runs: it keeps each chat's history, asks an
//! [`Inference`] for the next step, runs the tools the model calls, and streams [`AgentEvent`]s.
//! `baal-agent` only wraps it in HTTP. Here we drive one turn directly and print its events.
//!
//! The parts are ours to choose:
//! - the `Inference`: Baal's OpenAI-compatible client, pointed at the scripted LLM (it stands in
//!   for LibertAI), wrapped in a small `Inference` of our own that logs each request. Any type
//!   implementing the trait will do: another provider, a local model, a cache;
//! - the tools: one tool of our own (`word_count`) instead of the standard set (`bash`, files,
//!   web), so the example touches nothing outside its temp dir.
//!
//! Run: `cargo run -p baal-examples --example agent_runtime`

#![forbid(unsafe_code)]

use std::sync::Arc;

use async_trait::async_trait;
use baal_core::agent::context::Workspace;
use baal_core::agent::history::History;
use baal_core::agent::tools::{Tool, ToolContext, ToolOutput, ToolSet};
use baal_core::agent::{Agent, AgentConfig, AgentSettings};
use baal_core::domain::Role;
use baal_core::inference::{ClientOptions, CompletionRequest, DeltaStream, Inference, InferenceError, OpenAiClient};
use baal_core::proxy::{AgentEvent, ChatRequest};
use baal_core::testing::openai::{Reply, ScriptedLlm};
use futures_util::StreamExt as _;
use secrecy::SecretString;
use serde_json::{Value, json};

/// A tool the model may call. Tools return text for the model to read, errors included.
struct WordCount;

#[async_trait]
impl Tool for WordCount {
    fn name(&self) -> &'static str {
        "word_count"
    }

    fn description(&self) -> &'static str {
        "Counts the words of a text."
    }

    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]})
    }

    async fn call(&self, args: Value, _ctx: &ToolContext) -> ToolOutput {
        match args.get("text").and_then(Value::as_str) {
            Some(text) => ToolOutput::ok(text.split_whitespace().count().to_string()),
            None => ToolOutput::error("give the text to count as {\"text\": \"...\"}"),
        }
    }
}

/// An `Inference` of our own: logs what the loop asks, then lets another `Inference` answer.
struct Logged<I>(I);

#[async_trait]
impl<I: Inference> Inference for Logged<I> {
    async fn stream(&self, request: &CompletionRequest) -> Result<DeltaStream, InferenceError> {
        let tools: Vec<&str> = request.tools.iter().map(|t| t.name.as_str()).collect();
        println!("  [inference] {} message(s) to {}, tools offered: {tools:?}", request.messages.len(), request.model);
        self.0.stream(request).await
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("baal-example-").tempdir()?;

    // The model's side of the turn: first it calls our tool, then it answers with the result.
    let llm = ScriptedLlm::try_start().await?;
    llm.push(Reply::tool_call("word_count", r#"{"text": "the quick brown fox"}"#));
    llm.push(Reply::text("Your sentence has 4 words."));

    // The agent's settings, by the names `baal-agent` reads from its environment. Keys are
    // required even here: the scripted LLM accepts any, LibertAI would check it.
    let settings = AgentSettings::from_vars([
        ("AGENT_NAME", "Counter".to_owned()),
        ("SYSTEM_PROMPT", "You count words.".to_owned()),
        ("LIBERTAI_API_KEY", "example-key".to_owned()),
        ("AGENT_SECRET", "unused-without-http".to_owned()),
        ("OWNER_CHAT_ID", "owner".to_owned()),
    ])?;
    let client = OpenAiClient::new(&llm.base_url(), SecretString::from("example-key"), ClientOptions::default())?;
    let agent = Agent::new(
        AgentConfig::from_settings(&settings),
        Arc::new(Logged(client)),
        ToolSet::from_tools(vec![Arc::new(WordCount)]),
        History::open(&dir.path().join("agent.db")).await?,
        Workspace::prepare(&dir.path().join("workspace"))?,
    );

    // One turn. The chat id keys the history; the role decides which tools the model is offered
    // (visitors get only the tools the owner allowed).
    let request = ChatRequest::new("How many words in 'the quick brown fox'?", "owner", Role::Owner);
    println!("> {}", request.message);
    let mut events = agent.chat(request);
    let mut answered = false;
    while let Some(event) = events.next().await {
        match &event {
            AgentEvent::Text { content } => {
                answered = true;
                println!("< text: {content}");
            }
            AgentEvent::ToolUse { name, input } => println!("< tool_use: {name} {input}"),
            AgentEvent::ToolResult { name, output } => println!("< tool_result: {name} -> {output}"),
            AgentEvent::Error { content } => anyhow::bail!("the turn failed: {content}"),
            AgentEvent::Done { .. } => println!("< done"),
            other => println!("< {other:?}"),
        }
    }
    anyhow::ensure!(answered, "the agent gave no answer");

    // The turn is in the agent's history, ready for the next message of this chat.
    println!("history of chat `owner`: {} message(s)", agent.history().count("owner").await?);
    Ok(())
}
