//! What the in-process agent tests share: an agent over the scripted LLM with tools of the test's
//! own, and a tool that sends a report file.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use baal_core::agent::context::Workspace;
use baal_core::agent::history::History;
use baal_core::agent::tools::{SentFile, Tool, ToolContext, ToolOutput, ToolSet};
use baal_core::agent::{Agent, AgentConfig, AgentSettings};
use baal_core::inference::{ClientOptions, OpenAiClient, RetryPolicy};
use baal_core::testing::openai::ScriptedLlm;
use secrecy::SecretString;
use serde_json::{Value, json};

/// Sends `report.txt` to the user, as `send_file` would.
pub struct SendReport;

#[async_trait]
impl Tool for SendReport {
    fn name(&self) -> &'static str {
        "send_report"
    }
    fn description(&self) -> &'static str {
        "Send the report file."
    }
    fn parameters(&self) -> Value {
        json!({"type":"object","properties":{}})
    }
    async fn call(&self, _args: Value, _ctx: &ToolContext) -> ToolOutput {
        let mut out = ToolOutput::ok("File sent to user: report.txt");
        out.file = Some(SentFile { path: "report.txt".into(), caption: "the report".into() });
        out
    }
}

/// An agent with these settings and `tools`, its workspace and database under `dir`, calling
/// `llm` without retries.
pub async fn agent(llm: &ScriptedLlm, dir: &Path, vars: Vec<(String, String)>, tools: Vec<Arc<dyn Tool>>) -> Agent {
    let settings = AgentSettings::from_vars(vars).unwrap();
    let mut options = ClientOptions::default();
    options.retry = RetryPolicy::new(0, Duration::from_millis(1));
    let inference = OpenAiClient::new(&llm.base_url(), SecretString::from("k"), options).unwrap();
    let workspace = Workspace::prepare(&dir.join("ws")).unwrap();
    let history = History::open(&dir.join("agent.db")).await.unwrap();
    Agent::new(
        AgentConfig::from_settings(&settings),
        Arc::new(inference),
        ToolSet::from_tools(tools),
        history,
        workspace,
    )
}
