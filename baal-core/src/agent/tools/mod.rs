//! Tools the agent's model can call: `bash`, `read_file`, `write_file`, `edit_file`, `list_dir`,
//! `web_fetch`, `web_search`, `send_file`. (`spawn` belongs to the loop, which runs subagents.)
//!
//! Invariants:
//! - file tools (and the server's `/files`) never touch anything outside the workspace, after
//!   resolving `..` and symlinks;
//! - no tool can reach the agent's own secrets (LibertAI key, agent secret);
//! - a visitor only ever gets the tools in the agent's visitor list.

mod bash;
pub(crate) mod confined;
mod files;
pub(crate) mod jail;
pub mod sandbox;
mod web;
pub mod workspace;

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
    /// Files one tool process may have open (`TOOLS_MAX_OPEN_FILES`, `RLIMIT_NOFILE`).
    pub max_open_files: u64,
    /// The largest file a tool process may write, in bytes (`TOOLS_MAX_FILE_SIZE_MIB`,
    /// `RLIMIT_FSIZE`).
    pub max_file_size_bytes: u64,
    /// Hosts or CIDRs `web_fetch` may reach even though they are private (`WEB_FETCH_ALLOW`).
    pub web_fetch_allow: Vec<String>,
    /// `BRAVE_API_KEY`: enables `web_search`.
    pub brave_api_key: Option<SecretString>,
    /// Brave's API base URL (a setting so tests can point it at loopback).
    pub brave_api_url: String,
    /// File names no file tool may read, write or send, wherever they are: the agent's settings
    /// and database (defaults: [`workspace::DEFAULT_SENSITIVE_NAMES`]). Add the settings file's
    /// name when it differs.
    pub sensitive_names: Vec<String>,
    /// Directories outside the system ones that tool processes may read and execute from (for
    /// example a toolchain under a home directory). Tool processes are confined with Landlock to
    /// the system directories, the workspace and `/tmp`; the agent's settings and database stay
    /// out of reach even when tools run as the agent's own user.
    pub extra_read_paths: Vec<PathBuf>,
    /// How tool processes reach the network (`TOOLS_NETWORK`, default the agent's own).
    pub network: jail::ToolsNetwork,
    /// The tools' own `/tmp`, created if missing (default: `scratch` beside the workspace).
    /// Where the host allows namespaces it is mounted on `/tmp` for each call; elsewhere it is
    /// only `TMPDIR`.
    pub scratch_dir: PathBuf,
    /// Processes the tools may have at once (`TOOLS_MAX_PROCESSES`, `RLIMIT_NPROC`): per call in
    /// a user namespace, per tools user as root.
    pub max_processes: u64,
    /// Give each tool call namespaces of its own where the host allows (default). Off, calls run
    /// in the agent's own, as before namespaces existed (for measuring what they cost).
    pub per_call_namespaces: bool,
    /// Address space of one tool process, in bytes (`TOOLS_MAX_MEMORY_MIB`, `RLIMIT_AS`); `None`
    /// where the deployer limits the agent's memory as a whole (cgroups).
    pub max_memory_bytes: Option<u64>,
}

impl ToolConfig {
    /// Defaults for a workspace: 120 s bash timeout, 32 KiB of output, `nobody`, no allow-list,
    /// no web search.
    pub fn new(workspace: impl Into<PathBuf>) -> Self {
        let workspace: PathBuf = workspace.into();
        ToolConfig {
            scratch_dir: workspace.with_file_name("scratch"),
            workspace,
            bash_timeout: Duration::from_secs(120),
            max_output_bytes: 32 * 1024,
            tools_user: "nobody".into(),
            max_open_files: crate::agent_env::DEFAULT_TOOLS_MAX_OPEN_FILES,
            max_file_size_bytes: crate::agent_env::DEFAULT_TOOLS_MAX_FILE_SIZE_MIB * 1024 * 1024,
            web_fetch_allow: Vec::new(),
            brave_api_key: None,
            brave_api_url: "https://api.search.brave.com/res/v1/web/search".into(),
            sensitive_names: workspace::DEFAULT_SENSITIVE_NAMES.iter().map(|s| s.to_string()).collect(),
            extra_read_paths: Vec::new(),
            network: jail::ToolsNetwork::Host,
            max_processes: crate::agent_env::DEFAULT_TOOLS_MAX_PROCESSES,
            max_memory_bytes: None,
            per_call_namespaces: true,
        }
    }
}

impl ToolConfig {
    /// The path resolver the file tools use, for the server's `/files` route: same root, same
    /// refused names.
    pub fn workspace_resolver(&self) -> workspace::Workspace {
        workspace::Workspace::new(self.workspace.clone()).with_sensitive_names(self.sensitive_names.clone())
    }
}

/// Largest file `send_file` hands over (and a sensible cap for the server's `/files` route).
pub const MAX_SEND_FILE_BYTES: u64 = 50 * 1024 * 1024;

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
    /// The agent's own tools, in the order the model sees them: `bash`, `read_file`,
    /// `write_file`, `edit_file`, `list_dir`, `web_fetch`, `send_file`, and `web_search` when a
    /// Brave key is set. (`spawn` is added by the loop.)
    ///
    /// When the agent runs as root, the workspace is created and handed to `config.tools_user`
    /// here, so tool processes running as that user can write it.
    pub fn standard(config: ToolConfig) -> ToolSet {
        let shared = Arc::new(Shared::new(config));
        let mut tools: Vec<Arc<dyn Tool>> = vec![
            Arc::new(bash::Bash::new(shared.clone())),
            Arc::new(files::ReadFile::new(shared.clone())),
            Arc::new(files::WriteFile::new(shared.clone())),
            Arc::new(files::EditFile::new(shared.clone())),
            Arc::new(files::ListDir::new(shared.clone())),
            Arc::new(web::WebFetch::new(shared.clone())),
            Arc::new(files::SendFile::new(shared.clone())),
        ];
        if shared.config.brave_api_key.is_some() {
            tools.push(Arc::new(web::WebSearch::new(shared.clone())));
        }
        ToolSet { tools }
    }

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

/// What every standard tool shares: the settings, the path resolver and who tool processes run as.
pub(crate) struct Shared {
    pub(crate) config: ToolConfig,
    pub(crate) workspace: workspace::Workspace,
    /// `Ok(None)`: not root, tools run as the agent's user; `Err`: root, and the tools user is
    /// unusable, so `bash` refuses to run.
    pub(crate) identity: Result<Option<sandbox::ToolIdentity>, String>,
    /// The scratch directory, resolved (the tools' `TMPDIR`).
    pub(crate) scratch: PathBuf,
    /// Where tool processes run, set up by the first call that starts one ([`Shared::sandbox`]).
    pub(crate) sandbox: std::sync::OnceLock<ProcessSandbox>,
}

/// What confines tool processes: their namespaces and their Landlock ruleset.
pub(crate) struct ProcessSandbox {
    /// The namespaces each tool process gets.
    pub(crate) jail: jail::Jail,
    /// The Landlock ruleset tool processes enter; `None` when the kernel has no Landlock.
    pub(crate) fs_ruleset: Option<std::os::fd::OwnedFd>,
}

impl Shared {
    fn new(config: ToolConfig) -> Self {
        let workspace = config.workspace_resolver();
        let identity = sandbox::tool_identity(&config.tools_user);
        let owner = identity.clone().ok().flatten();
        for dir in [&config.workspace, &config.scratch_dir] {
            if let Err(e) = std::fs::create_dir_all(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot create a directory of the tools");
            }
        }
        if let Some(id) = owner
            && let Err(e) = std::fs::canonicalize(&config.workspace)
                .and_then(|root| confined::open_dir(&root))
                .and_then(|root| confined::chown_tree(&root, id.uid, id.gid, 0))
        {
            tracing::warn!(workspace = %config.workspace.display(), error = %e, "cannot hand the workspace to the tools user");
        }
        let scratch = std::fs::canonicalize(&config.scratch_dir).unwrap_or_else(|_| config.scratch_dir.clone());
        if let Err(e) = own_scratch(&scratch, owner) {
            tracing::warn!(scratch = %scratch.display(), error = %e, "cannot hand the scratch directory to the tools");
        }
        Shared { config, workspace, identity, scratch, sandbox: std::sync::OnceLock::new() }
    }

    /// The tool processes' sandbox, set up on first use rather than at start: trying the
    /// namespaces out (and, for an isolated network, starting slirp4netns) costs milliseconds the
    /// agent's start should not wait for, and many agents never run a command.
    pub(crate) fn sandbox(&self) -> &ProcessSandbox {
        self.sandbox.get_or_init(|| {
            let config = &self.config;
            let runtime_dir = self.scratch.parent().map_or_else(|| PathBuf::from("."), std::path::Path::to_path_buf);
            let jail = if config.per_call_namespaces {
                jail::Jail::prepare(config.network, Some(&self.scratch), &runtime_dir)
            } else {
                jail::Jail::off(config.network)
            };
            let deny_tcp = !jail.is_active() && config.network != jail::ToolsNetwork::Host;
            let fs_ruleset = match std::fs::canonicalize(&config.workspace)
                .map_err(|e| format!("cannot resolve the workspace: {e}"))
                .and_then(|root| {
                    sandbox::prepare_fs_ruleset(&sandbox::Reachable {
                        workspace: &root,
                        scratch: &self.scratch,
                        extra_read: &config.extra_read_paths,
                        private_shm: jail.is_active(),
                        deny_tcp,
                    })
                }) {
                Ok(Some(fd)) => Some(fd),
                Ok(None) => {
                    tracing::warn!("this kernel has no Landlock: tool processes are not confined to the workspace");
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "tool processes are not confined to the workspace");
                    None
                }
            };
            ProcessSandbox { jail, fs_ruleset }
        })
    }

    /// Hands a file or directory the agent created to the tools user (when tools run as one),
    /// so `bash` can change what the file tools wrote.
    pub(crate) fn give_to_tools_user(&self, fd: &std::os::fd::OwnedFd) {
        if let Ok(Some(id)) = self.identity
            && let Err(e) =
                rustix::fs::fchown(fd, Some(rustix::fs::Uid::from_raw(id.uid)), Some(rustix::fs::Gid::from_raw(id.gid)))
        {
            tracing::warn!(error = %e, "cannot hand a file to the tools user");
        }
    }
}

/// Makes the scratch directory the tools' alone: mode 0700, owned by the tools user when the
/// agent is root. Its contents are theirs already.
fn own_scratch(dir: &std::path::Path, owner: Option<sandbox::ToolIdentity>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(id) = owner {
        rustix::fs::chown(dir, Some(rustix::fs::Uid::from_raw(id.uid)), Some(rustix::fs::Gid::from_raw(id.gid)))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// The arguments as a JSON object: models sometimes send them as a JSON-encoded string.
pub(crate) fn object_args(args: serde_json::Value) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let args = match args {
        serde_json::Value::String(text) => serde_json::from_str(&text)
            .map_err(|e| format!("the arguments are not valid JSON ({e}); send a JSON object"))?,
        other => other,
    };
    match args {
        serde_json::Value::Object(map) => Ok(map),
        serde_json::Value::Null => Ok(serde_json::Map::new()),
        _ => Err("the arguments must be a JSON object".to_string()),
    }
}

/// A required string argument.
pub(crate) fn required_str<'a>(
    args: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Result<&'a str, String> {
    match args.get(name) {
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(_) => Err(format!("parameter '{name}' must be a string")),
        None => Err(format!("missing required parameter '{name}'")),
    }
}

/// An optional string argument.
pub(crate) fn optional_str<'a>(
    args: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Result<Option<&'a str>, String> {
    match args.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("parameter '{name}' must be a string")),
    }
}

/// An optional non-negative integer argument (models sometimes quote numbers).
pub(crate) fn optional_u64(
    args: &serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Result<Option<u64>, String> {
    match args.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(Some).ok_or_else(|| format!("parameter '{name}' must be a non-negative integer"))
        }
        Some(serde_json::Value::String(s)) => {
            s.trim().parse().map(Some).map_err(|_| format!("parameter '{name}' must be a non-negative integer"))
        }
        Some(_) => Err(format!("parameter '{name}' must be a non-negative integer")),
    }
}

/// A tool error in the form the model reads: `[error: …]`.
pub(crate) fn error_output(message: impl std::fmt::Display) -> ToolOutput {
    ToolOutput::error(format!("[error: {message}]"))
}

/// Keeps the head and the tail of `text` when it is longer than `max` bytes, with a note of the
/// full length between them; the end of a command's output is often what matters.
pub(crate) fn truncate_middle(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let half = max / 2;
    let head_end = text.floor_char_boundary(half);
    let tail_start = text.ceil_char_boundary(text.len() - half);
    format!("{}\n\n... truncated ({} bytes total) ...\n\n{}", &text[..head_end], text.len(), &text[tail_start..])
}
