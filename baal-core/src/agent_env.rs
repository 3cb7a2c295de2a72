//! One description of an agent's environment: every variable `baal-agent` reads, built once from
//! an [`AgentSpec`] and the operator's [`AgentDefaults`] by [`AgentEnv::new`]. The local deployer
//! writes it as the agent's settings file, the Aleph deployer as the VM's `EnvironmentFile`, and
//! `agent::settings` parses it from the same names in [`var`].
//!
//! Adding a setting that deployers hand to agents means: a name in [`var`], its value in
//! [`AgentEnv::new`] (from the spec or [`AgentDefaults`]), and its parsing in `agent::settings`.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::deploy::AgentSpec;

/// The names of the agent's settings (the Python agent's, where it had them).
pub mod var {
    /// Display name.
    pub const AGENT_NAME: &str = "AGENT_NAME";
    /// The owner's instructions.
    pub const SYSTEM_PROMPT: &str = "SYSTEM_PROMPT";
    /// Model id.
    pub const MODEL: &str = "MODEL";
    /// The LibertAI key the agent pays inference with (secret).
    pub const LIBERTAI_API_KEY: &str = "LIBERTAI_API_KEY";
    /// The OpenAI-compatible API the agent calls.
    pub const LIBERTAI_API_BASE_URL: &str = "LIBERTAI_API_BASE_URL";
    /// The bearer secret of the agent's HTTP API (secret).
    pub const AGENT_SECRET: &str = "AGENT_SECRET";
    /// The address the agent listens on.
    pub const BIND_ADDR: &str = "BIND_ADDR";
    /// The port the agent listens on (0: any free port).
    pub const PORT: &str = "PORT";
    /// The agent's database file.
    pub const DB_PATH: &str = "DB_PATH";
    /// The agent's workspace directory.
    pub const WORKSPACE_PATH: &str = "WORKSPACE_PATH";
    /// A Python Baal agent's `agent.db` whose history the agent carries over into its own
    /// database at its first start (set when an imported agent is converted).
    pub const PYTHON_AGENT_DB: &str = "PYTHON_AGENT_DB";
    /// The owner's chat: heartbeat and subagent output go there only.
    pub const OWNER_CHAT_ID: &str = "OWNER_CHAT_ID";
    /// Seconds between heartbeat checks (0 disables).
    pub const HEARTBEAT_INTERVAL: &str = "HEARTBEAT_INTERVAL";
    /// Tools visitors may use, comma-separated.
    pub const VISITOR_TOOLS: &str = "VISITOR_TOOLS";
    /// The Brave Search key that enables `web_search` (secret).
    pub const BRAVE_API_KEY: &str = "BRAVE_API_KEY";
    /// Brave's search endpoint.
    pub const BRAVE_API_URL: &str = "BRAVE_API_URL";
    /// Rows of history loaded per turn.
    pub const MAX_HISTORY: &str = "MAX_HISTORY";
    /// Model calls per turn.
    pub const MAX_TOOL_ITERATIONS: &str = "MAX_TOOL_ITERATIONS";
    /// The context window compaction works with (0: the model's).
    pub const MAX_CONTEXT_TOKENS: &str = "MAX_CONTEXT_TOKENS";
    /// Tokens kept free for the answer.
    pub const GENERATION_RESERVE: &str = "GENERATION_RESERVE";
    /// Recent rows compaction keeps verbatim.
    pub const COMPACTION_KEEP_MESSAGES: &str = "COMPACTION_KEEP_MESSAGES";
    /// The user tool processes run as when the agent runs as root.
    pub const TOOLS_USER: &str = "TOOLS_USER";
    /// Files one tool process may have open at once.
    pub const TOOLS_MAX_OPEN_FILES: &str = "TOOLS_MAX_OPEN_FILES";
    /// The largest file a tool process may write, in MiB.
    pub const TOOLS_MAX_FILE_SIZE_MIB: &str = "TOOLS_MAX_FILE_SIZE_MIB";
    /// Processes the tools may have at once (per call in a user namespace, per tools user as root).
    pub const TOOLS_MAX_PROCESSES: &str = "TOOLS_MAX_PROCESSES";
    /// Address space of one tool process, in MiB (unset: no such limit).
    pub const TOOLS_MAX_MEMORY_MIB: &str = "TOOLS_MAX_MEMORY_MIB";
    /// How tool processes reach the network: `host`, `isolated` or `none`.
    pub const TOOLS_NETWORK: &str = "TOOLS_NETWORK";
    /// Private hosts or CIDRs `web_fetch` may reach.
    pub const WEB_FETCH_ALLOW: &str = "WEB_FETCH_ALLOW";
    /// Subagents running at once.
    pub const MAX_SUBAGENTS: &str = "MAX_SUBAGENTS";
    /// Seconds of silence from the model before giving up.
    pub const LLM_READ_TIMEOUT: &str = "LLM_READ_TIMEOUT";
    /// Seconds between keepalive events on a quiet stream.
    pub const KEEPALIVE_INTERVAL: &str = "KEEPALIVE_INTERVAL";
    /// Milliseconds before the first retry of a failed model call.
    pub const LLM_RETRY_DELAY_MS: &str = "LLM_RETRY_DELAY_MS";
    /// Connections the agent's HTTP server holds at once; more are closed as they arrive.
    pub const MAX_CONNECTIONS: &str = "MAX_CONNECTIONS";
    /// Seconds a client has to send a request's headers.
    pub const HEADER_READ_TIMEOUT: &str = "HEADER_READ_TIMEOUT";
    /// The largest `POST /chat` body, in bytes.
    pub const MAX_CHAT_BODY_BYTES: &str = "MAX_CHAT_BODY_BYTES";
    /// Seconds one chat turn may run before it is stopped.
    pub const TURN_TIMEOUT: &str = "TURN_TIMEOUT";
}

/// The variables that hold secrets: `baal-agent` removes them from its own environment once read,
/// so no child process inherits them, and [`AgentEnv`]'s `Debug` never shows them.
pub const SECRET_VARIABLES: &[&str] = &[var::LIBERTAI_API_KEY, var::AGENT_SECRET, var::BRAVE_API_KEY];

/// LibertAI's public API, the default of `LIBERTAI_API_BASE_URL` for the bot and the agent.
pub const DEFAULT_LIBERTAI_API_BASE_URL: &str = "https://api.libertai.io/v1";

/// The heartbeat interval when the operator sets none: the Python Baal's 30 minutes.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1800);

/// Files one tool process may have open when the operator sets no `TOOLS_MAX_OPEN_FILES`.
pub const DEFAULT_TOOLS_MAX_OPEN_FILES: u64 = 1024;

/// The largest file a tool process may write when the operator sets no
/// `TOOLS_MAX_FILE_SIZE_MIB`: a workspace holds notes and artefacts, not disk images.
pub const DEFAULT_TOOLS_MAX_FILE_SIZE_MIB: u64 = 1024;

/// Processes an agent's tools may have at once when nothing else is said: a fork bomb fails fast
/// instead of starving the agent until the timeout.
pub const DEFAULT_TOOLS_MAX_PROCESSES: u64 = 1024;

/// How tool processes reach the network (`TOOLS_NETWORK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ToolsNetwork {
    /// The agent's own network (on an Aleph VM, the VM's).
    #[default]
    Host,
    /// A namespace of their own: outbound to public addresses where the host allows it (root,
    /// slirp4netns, nft), else no network.
    Isolated,
    /// No IP network.
    None,
}

impl ToolsNetwork {
    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolsNetwork::Host => "host",
            ToolsNetwork::Isolated => "isolated",
            ToolsNetwork::None => "none",
        }
    }
}

impl FromStr for ToolsNetwork {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "host" => Ok(ToolsNetwork::Host),
            "isolated" => Ok(ToolsNetwork::Isolated),
            "none" => Ok(ToolsNetwork::None),
            _ => Err(format!("`{text}` is not a tools network; use host, isolated or none")),
        }
    }
}

/// The address every deployed agent listens on: a deployer puts a proxy (Caddy) or the platform
/// itself in front of it, never the open network.
pub const AGENT_BIND_ADDR: &str = "127.0.0.1";

/// What the operator sets once for every agent (`HEARTBEAT_INTERVAL`, `BRAVE_API_KEY` in the
/// operator's settings); deployers hand it to each agent they start. `Debug` redacts the key.
#[derive(Clone)]
#[non_exhaustive]
pub struct AgentDefaults {
    /// How often agents check their `HEARTBEAT.md` (zero disables the heartbeat).
    pub heartbeat_interval: Duration,
    /// The Brave Search key that gives agents `web_search`.
    pub brave_api_key: Option<SecretString>,
    /// Files one tool process may have open at once (`RLIMIT_NOFILE`).
    pub tools_max_open_files: u64,
    /// The largest file a tool process may write, in MiB (`RLIMIT_FSIZE`).
    pub tools_max_file_size_mib: u64,
}

impl Default for AgentDefaults {
    fn default() -> Self {
        AgentDefaults {
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            brave_api_key: None,
            tools_max_open_files: DEFAULT_TOOLS_MAX_OPEN_FILES,
            tools_max_file_size_mib: DEFAULT_TOOLS_MAX_FILE_SIZE_MIB,
        }
    }
}

impl AgentDefaults {
    /// Sets how often agents check their `HEARTBEAT.md`.
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// Sets the per-process limits of agents' tools: open files, and the largest file in MiB.
    pub fn with_tool_limits(mut self, max_open_files: u64, max_file_size_mib: u64) -> Self {
        self.tools_max_open_files = max_open_files;
        self.tools_max_file_size_mib = max_file_size_mib;
        self
    }

    /// Sets the Brave Search key handed to agents.
    pub fn with_brave_api_key(mut self, key: Option<SecretString>) -> Self {
        self.brave_api_key = key;
        self
    }
}

impl fmt::Debug for AgentDefaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentDefaults")
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("brave_api_key", &self.brave_api_key.as_ref().map(|_| "[REDACTED]"))
            .field("tools_max_open_files", &self.tools_max_open_files)
            .field("tools_max_file_size_mib", &self.tools_max_file_size_mib)
            .finish()
    }
}

/// The environment of one deployed agent: names, values, and which are secret. `Debug` shows the
/// names and the values that are not secret.
pub struct AgentEnv {
    entries: Vec<(&'static str, SecretString)>,
}

impl AgentEnv {
    /// The environment of the agent `spec` describes, with the operator's `defaults`, listening on
    /// `port` of [`AGENT_BIND_ADDR`] and keeping its database and workspace in `data_dir`.
    pub fn new(spec: &AgentSpec, defaults: &AgentDefaults, port: u16, data_dir: &Path) -> AgentEnv {
        let path = |name: &str| data_dir.join(name).to_string_lossy().into_owned();
        let mut entries = vec![
            (var::AGENT_NAME, spec.name.clone()),
            (var::SYSTEM_PROMPT, spec.system_prompt.clone()),
            (var::MODEL, spec.model.clone()),
            (var::LIBERTAI_API_KEY, spec.libertai_api_key.expose_secret().to_owned()),
            (var::LIBERTAI_API_BASE_URL, spec.libertai_api_base_url.clone()),
            (var::AGENT_SECRET, spec.agent_secret.expose_secret().to_owned()),
            (var::OWNER_CHAT_ID, spec.owner_chat_id.clone()),
            (var::VISITOR_TOOLS, spec.visitor_tools.join(",")),
            (var::BIND_ADDR, AGENT_BIND_ADDR.to_owned()),
            (var::PORT, port.to_string()),
            (var::DB_PATH, path("agent.db")),
            (var::WORKSPACE_PATH, path("workspace")),
            (var::HEARTBEAT_INTERVAL, defaults.heartbeat_interval.as_secs().to_string()),
            (var::TOOLS_MAX_OPEN_FILES, defaults.tools_max_open_files.to_string()),
            (var::TOOLS_MAX_FILE_SIZE_MIB, defaults.tools_max_file_size_mib.to_string()),
        ];
        if let Some(key) = &defaults.brave_api_key {
            entries.push((var::BRAVE_API_KEY, key.expose_secret().to_owned()));
        }
        AgentEnv { entries: entries.into_iter().map(|(name, value)| (name, SecretString::from(value))).collect() }
    }

    /// Runs the agent's tools as `user` (a name, or a numeric `uid[:gid]`) when the agent runs as
    /// root: the local deployer's identity of their own for each agent.
    pub fn with_tools_user(self, user: impl Into<String>) -> AgentEnv {
        self.with(var::TOOLS_USER, &user.into())
    }

    /// Sets how the agent's tools reach the network (the local deployer: `isolated`).
    pub fn with_tools_network(self, network: ToolsNetwork) -> AgentEnv {
        self.with(var::TOOLS_NETWORK, network.as_str())
    }

    /// Limits the agent's tools per process and per call: address space in MiB and processes.
    /// For hosts where the deployer cannot limit the agent as a whole (no writable cgroups).
    pub fn with_tools_rlimits(self, max_memory_mib: u64, max_processes: u64) -> AgentEnv {
        self.with(var::TOOLS_MAX_MEMORY_MIB, &max_memory_mib.to_string())
            .with(var::TOOLS_MAX_PROCESSES, &max_processes.to_string())
    }

    /// Has the agent carry over the history in the Python Baal agent's database at `path` at
    /// its first start (converting an imported agent).
    pub fn with_python_agent_db(self, path: impl AsRef<Path>) -> AgentEnv {
        self.with(var::PYTHON_AGENT_DB, &path.as_ref().to_string_lossy())
    }

    fn with(mut self, name: &'static str, value: &str) -> AgentEnv {
        self.entries.retain(|(n, _)| *n != name);
        self.entries.push((name, SecretString::from(value.to_owned())));
        self
    }

    /// The value of `name`, if the environment has it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries.iter().find(|(n, _)| *n == name).map(|(_, v)| v.expose_secret())
    }

    /// The names, in the order they are written.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.iter().map(|(name, _)| *name)
    }

    /// As a JSON object (the local deployer's settings file).
    pub fn to_json(&self) -> SecretString {
        SecretString::from(crate::env::json(self.exposed()))
    }

    /// As `KEY="value"` lines for systemd's `EnvironmentFile=` (a VM's `agent.env`).
    pub fn to_environment_file(&self) -> SecretString {
        SecretString::from(crate::env::environment_file("Written by Baal; replaced on every deploy.", self.exposed()))
    }

    fn exposed(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(name, value)| (*name, value.expose_secret()))
    }
}

impl fmt::Debug for AgentEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in self.exposed() {
            map.entry(&name, &if SECRET_VARIABLES.contains(&name) { "[REDACTED]" } else { value });
        }
        map.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_reads_its_three_values_and_refuses_others() {
        assert_eq!("host".parse(), Ok(ToolsNetwork::Host));
        assert_eq!(" Isolated ".parse(), Ok(ToolsNetwork::Isolated));
        assert_eq!("none".parse(), Ok(ToolsNetwork::None));
        let err = "open".parse::<ToolsNetwork>().unwrap_err();
        assert!(err.contains("host, isolated or none"), "{err}");
    }

    use crate::domain::AgentId;

    pub(crate) fn spec() -> AgentSpec {
        AgentSpec::new(
            AgentId(7),
            "Ada \"the\" $HOME agent",
            "Line one\nline two with \\n, 'quotes', $PATH and ${X}\n\ttabbed — 漢字 🎉",
            "qwen3-coder-next",
            SecretString::from("sk-key"),
            "http://127.0.0.1:1/v1",
            SecretString::from("agent-secret"),
            "42",
        )
    }

    #[test]
    fn the_environment_carries_spec_defaults_and_placement() {
        let defaults = AgentDefaults::default()
            .with_heartbeat_interval(Duration::from_secs(5))
            .with_brave_api_key(Some(SecretString::from("brave")));
        let env = AgentEnv::new(&spec(), &defaults, 4242, Path::new("/data/agents/7"));
        assert_eq!(env.get(var::AGENT_NAME), Some(spec().name.as_str()));
        assert_eq!(env.get(var::PORT), Some("4242"));
        assert_eq!(env.get(var::DB_PATH), Some("/data/agents/7/agent.db"));
        assert_eq!(env.get(var::WORKSPACE_PATH), Some("/data/agents/7/workspace"));
        assert_eq!(env.get(var::HEARTBEAT_INTERVAL), Some("5"));
        assert_eq!(env.get(var::BRAVE_API_KEY), Some("brave"));
        assert_eq!(env.get(var::VISITOR_TOOLS), Some("web_fetch,web_search"));
        let shown = format!("{env:?} {defaults:?}");
        for secret in ["sk-key", "agent-secret", "brave\""] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        let without = AgentEnv::new(&spec(), &AgentDefaults::default(), 1, Path::new("/d"));
        assert_eq!(without.get(var::BRAVE_API_KEY), None);
        assert_eq!(without.get(var::HEARTBEAT_INTERVAL), Some("1800"));
    }

    #[test]
    fn both_file_formats_read_back_as_the_environment() {
        let env = AgentEnv::new(&spec(), &AgentDefaults::default(), 8080, Path::new("/var/lib/baal-agent"));
        for text in [env.to_json(), env.to_environment_file()] {
            let back = crate::env::parse(text.expose_secret()).unwrap();
            assert_eq!(back.len(), env.names().count());
            for name in env.names() {
                assert_eq!(back.get(name).map(String::as_str), env.get(name), "{name}");
            }
        }
    }
}
