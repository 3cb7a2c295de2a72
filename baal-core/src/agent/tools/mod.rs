//! Tools the agent's model can call: `bash`, `read_file`, `write_file`, `edit_file`, `list_dir`,
//! `web_fetch`, `web_search`, `send_file`. (`spawn` belongs to the loop, which runs subagents.)
//!
//! Invariants:
//! - file tools (and the server's `/files`) never touch anything outside the workspace, after
//!   resolving `..` and symlinks;
//! - no tool can reach the agent's own secrets (LibertAI key, agent secret);
//! - a visitor only ever gets the tools in the agent's visitor list.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;

use crate::domain::Role;

/// Settings of the tool set, fixed at agent start.
#[derive(Clone)]
#[non_exhaustive]
pub struct ToolConfig {
    /// The workspace root; every file tool is confined to it.
    pub workspace: PathBuf,
    /// How long one `bash` command may run.
    pub bash_timeout: Duration,
    /// Longest tool output handed back to the model, in bytes.
    pub max_output_bytes: usize,
    /// When the agent runs as root, tool processes run as this user (`TOOLS_USER`, default `nobody`).
    pub tools_user: String,
    /// Hosts or CIDRs `web_fetch` may reach even though they are private (`WEB_FETCH_ALLOW`).
    pub web_fetch_allow: Vec<String>,
    /// `BRAVE_API_KEY`: enables `web_search`.
    pub brave_api_key: Option<SecretString>,
    /// Brave's API base URL (a setting so tests can point it at loopback).
    pub brave_api_url: String,
}

impl ToolConfig {
    /// Defaults for a workspace: 120 s bash timeout, 32 KiB of output, `nobody`, no allow-list,
    /// no web search.
    pub fn new(workspace: impl Into<PathBuf>) -> Self {
        ToolConfig {
            workspace: workspace.into(),
            bash_timeout: Duration::from_secs(120),
            max_output_bytes: 32 * 1024,
            tools_user: "nobody".into(),
            web_fetch_allow: Vec::new(),
            brave_api_key: None,
            brave_api_url: "https://api.search.brave.com/res/v1/web/search".into(),
        }
    }
}

/// Who is calling a tool, and for which conversation.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ToolContext {
    /// Owner or visitor.
    pub role: Role,
    /// The conversation.
    pub chat_id: String,
}

impl ToolContext {
    /// A context for `role` in `chat_id`.
    pub fn new(role: Role, chat_id: impl Into<String>) -> Self {
        ToolContext { role, chat_id: chat_id.into() }
    }
}

/// A file a tool asks to send to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentFile {
    /// Path relative to the workspace.
    pub path: String,
    /// Caption, possibly empty.
    pub caption: String,
}

/// What a tool returns to the model (errors are text too: the model reads them and adapts).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ToolOutput {
    /// The text the model sees.
    pub content: String,
    /// A file to deliver to the user (`send_file`).
    pub file: Option<SentFile>,
    /// Whether the tool failed.
    pub is_error: bool,
}

impl ToolOutput {
    /// A successful result.
    pub fn ok(content: impl Into<String>) -> Self {
        ToolOutput { content: content.into(), file: None, is_error: false }
    }

    /// A failure the model should read.
    pub fn error(content: impl Into<String>) -> Self {
        ToolOutput { content: content.into(), file: None, is_error: true }
    }
}

/// One tool.
#[async_trait]
pub trait Tool: Send + Sync {
    /// The name the model calls it by.
    fn name(&self) -> &'static str;
    /// What it does, for the model.
    fn description(&self) -> &'static str;
    /// JSON schema of its arguments.
    fn parameters(&self) -> serde_json::Value;
    /// Runs it. Dropping the future cancels the work (child processes are killed).
    async fn call(&self, args: serde_json::Value, ctx: &ToolContext) -> ToolOutput;
}

/// The tools of one agent.
#[derive(Clone)]
pub struct ToolSet {
    tools: Vec<Arc<dyn Tool>>,
}

impl ToolSet {
    /// A set of exactly these tools.
    pub fn from_tools(tools: Vec<Arc<dyn Tool>>) -> Self {
        ToolSet { tools }
    }

    /// Every tool.
    pub fn all(&self) -> &[Arc<dyn Tool>] {
        &self.tools
    }

    /// The tool called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.iter().find(|t| t.name() == name)
    }

    /// The tools `role` may use: all for the owner, only `visitor_tools` for a visitor.
    pub fn for_role<'a>(&'a self, role: Role, visitor_tools: &'a [String]) -> impl Iterator<Item = &'a Arc<dyn Tool>> {
        self.tools.iter().filter(move |t| role == Role::Owner || visitor_tools.iter().any(|v| v == t.name()))
    }
}
