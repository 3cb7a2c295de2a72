//! [`AgentSettings`]: the agent's settings, from the environment (the Python agent's names, in
//! [`crate::agent_env::var`]) and an optional settings file written by the deployer (`KEY=value`
//! lines or a JSON object, read by [`crate::env::read_file`]), through the reader the bot's
//! settings use too.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

use crate::agent_env::{
    DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_LIBERTAI_API_BASE_URL, DEFAULT_TOOLS_MAX_FILE_SIZE_MIB,
    DEFAULT_TOOLS_MAX_OPEN_FILES, DEFAULT_TOOLS_MAX_PROCESSES, ToolsNetwork, var,
};
use crate::domain::{DEFAULT_VISITOR_TOOLS, Model};
use crate::env::{SettingError, Vars};

/// Every setting of one agent. `Debug` redacts secrets.
#[derive(Clone)]
#[non_exhaustive]
pub struct AgentSettings {
    /// `AGENT_NAME` (default `Agent`).
    pub agent_name: String,
    /// `SYSTEM_PROMPT`: the owner's instructions.
    pub system_prompt: String,
    /// `MODEL` (default: the catalog's default model).
    pub model: String,
    /// `LIBERTAI_API_KEY` (required).
    pub libertai_api_key: SecretString,
    /// `LIBERTAI_API_BASE_URL` (default `https://api.libertai.io/v1`).
    pub libertai_api_base_url: String,
    /// `AGENT_SECRET` (required): the bearer secret of the HTTP API.
    pub agent_secret: SecretString,
    /// `BIND_ADDR` (default `127.0.0.1`).
    pub bind_addr: IpAddr,
    /// `LOG_FORMAT`: `text` (default; coloured only on a terminal) or `json`.
    pub log_format: crate::ops::LogFormat,
    /// `PORT` (default 8080; 0 picks a free port).
    pub port: u16,
    /// `DB_PATH` (default `agent.db`).
    pub db_path: PathBuf,
    /// `PYTHON_AGENT_DB`: a copy of a Python Baal agent's `agent.db` whose history the agent
    /// carries over at its first start ([`super::python_history`]).
    pub python_agent_db: Option<PathBuf>,
    /// `MAX_HISTORY`: rows of history loaded per turn (default 100).
    pub max_history: u32,
    /// `MAX_TOOL_ITERATIONS`: model calls per turn (default 50).
    pub max_tool_iterations: u32,
    /// `WORKSPACE_PATH` (default `/opt/baal-agent/workspace`).
    pub workspace_path: PathBuf,
    /// `OWNER_CHAT_ID`: the owner's chat; heartbeat and subagent output go there only.
    pub owner_chat_id: Option<String>,
    /// `HEARTBEAT_INTERVAL` in seconds (default 1800; 0 disables): how often a standing
    /// `HEARTBEAT.md` without a schedule of its own runs.
    pub heartbeat_interval: Duration,
    /// `MAX_CONTEXT_TOKENS` (0: from the model catalog).
    pub max_context_tokens: u32,
    /// `GENERATION_RESERVE`: tokens kept free for the answer (default 4096).
    pub generation_reserve: u32,
    /// `COMPACTION_KEEP_MESSAGES`: recent rows kept verbatim (default 20).
    pub compaction_keep_messages: u32,
    /// `BRAVE_API_KEY`: enables `web_search`.
    pub brave_api_key: Option<SecretString>,
    /// `BRAVE_API_URL`: Brave's search endpoint (default: Brave's public API).
    pub brave_api_url: Option<String>,
    /// `VISITOR_TOOLS`: tools visitors may use (default `web_fetch,web_search`).
    pub visitor_tools: Vec<String>,
    /// `TOOLS_USER`: the user tool processes run as when the agent runs as root (default `nobody`).
    pub tools_user: String,
    /// `TOOLS_MAX_OPEN_FILES`: files one tool process may have open (default 1024).
    pub tools_max_open_files: u64,
    /// `TOOLS_MAX_FILE_SIZE_MIB`: the largest file a tool process may write (default 1024 MiB).
    pub tools_max_file_size_mib: u64,
    /// `TOOLS_MAX_PROCESSES`: processes the tools may have at once (default 1024).
    pub tools_max_processes: u64,
    /// `TOOLS_MAX_MEMORY_MIB`: address space of one tool process (default: no such limit).
    pub tools_max_memory_mib: Option<u64>,
    /// `TOOLS_NETWORK`: how tool processes reach the network (default `host`).
    pub tools_network: ToolsNetwork,
    /// `WEB_FETCH_ALLOW`: private hosts or CIDRs `web_fetch` may reach (default none).
    pub web_fetch_allow: Vec<String>,
    /// `MAX_SUBAGENTS`: subagents running at once (default 3).
    pub max_subagents: u32,
    /// `LLM_READ_TIMEOUT`: seconds of silence from the model before giving up (default 120).
    pub llm_read_timeout: Duration,
    /// `KEEPALIVE_INTERVAL`: seconds between keepalive events on a quiet stream (default 15).
    pub keepalive_interval: Duration,
    /// `LLM_RETRY_DELAY_MS`: wait before the first retry of a failed LLM call, doubled after each
    /// (default 1000; two retries).
    pub llm_retry_delay: Duration,
    /// `MAX_CONNECTIONS`: connections the HTTP server holds at once, before any authentication
    /// (default 512); more are closed as they arrive.
    pub max_connections: u32,
    /// `HEADER_READ_TIMEOUT`: seconds a client has to send a request's headers, on a new or an idle
    /// kept-alive connection, before it is dropped (default 10).
    pub header_read_timeout: Duration,
    /// `MAX_CHAT_BODY_BYTES`: the largest `POST /chat` body (default 1 MiB).
    pub max_chat_body_bytes: u64,
    /// `TURN_TIMEOUT`: seconds one turn may run before it is stopped, its tools with it
    /// (default 900).
    pub turn_timeout: Duration,
}

/// Connections the HTTP server holds when `MAX_CONNECTIONS` is unset: far above what the bot and a
/// proxy open, far below the 1024 descriptors a default `ulimit -n` leaves the agent.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 512;
/// Time to send a request's headers when `HEADER_READ_TIMEOUT` is unset.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest `POST /chat` body when `MAX_CHAT_BODY_BYTES` is unset: a message far longer than any
/// model's context, yet small enough that a request never costs the agent real memory.
pub const DEFAULT_MAX_CHAT_BODY_BYTES: u64 = 1024 * 1024;
/// How long one turn may run when `TURN_TIMEOUT` is unset: a turn that needs longer should be a
/// subagent.
pub const DEFAULT_TURN_TIMEOUT: Duration = Duration::from_secs(15 * 60);

impl fmt::Debug for AgentSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentSettings")
            .field("agent_name", &self.agent_name)
            .field("model", &self.model)
            .field("libertai_api_key", &"[REDACTED]")
            .field("libertai_api_base_url", &self.libertai_api_base_url)
            .field("agent_secret", &"[REDACTED]")
            .field("bind_addr", &self.bind_addr)
            .field("log_format", &self.log_format)
            .field("port", &self.port)
            .field("db_path", &self.db_path)
            .field("python_agent_db", &self.python_agent_db)
            .field("workspace_path", &self.workspace_path)
            .field("owner_chat_id", &self.owner_chat_id)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("brave_api_key", &self.brave_api_key.as_ref().map(|_| "[REDACTED]"))
            .field("visitor_tools", &self.visitor_tools)
            .field("max_connections", &self.max_connections)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_chat_body_bytes", &self.max_chat_body_bytes)
            .field("turn_timeout", &self.turn_timeout)
            .finish_non_exhaustive()
    }
}

impl AgentSettings {
    /// Reads the settings file (if any), then the environment; a variable set in the environment
    /// wins over the file.
    pub fn load(config_file: Option<&Path>) -> Result<AgentSettings, SettingError> {
        let mut vars = match config_file {
            Some(path) => crate::env::read_file(path)?,
            None => HashMap::new(),
        };
        vars.extend(std::env::vars());
        AgentSettings::from_vars(vars)
    }

    /// Reads settings from explicit variables (tests, embedders). Empty values count as unset.
    pub fn from_vars<I, K, V>(vars: I) -> Result<AgentSettings, SettingError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let env: Vars = vars.into_iter().collect();
        let small = |name: &str, default: u32| -> Result<u32, SettingError> {
            Ok(env.number(name, "a whole number up to 4294967295")?.unwrap_or(default))
        };
        let bind_addr = env.number(var::BIND_ADDR, "an IP address such as 127.0.0.1")?;
        let settings = AgentSettings {
            agent_name: env.text(var::AGENT_NAME).unwrap_or_else(|| "Agent".into()),
            system_prompt: env.text(var::SYSTEM_PROMPT).unwrap_or_else(|| "You are a helpful assistant.".into()),
            model: env.text(var::MODEL).unwrap_or_else(|| Model::default_model().id.into()),
            libertai_api_key: env
                .required_secret(var::LIBERTAI_API_KEY, "set the LibertAI API key the agent pays inference with")?,
            libertai_api_base_url: env.url(var::LIBERTAI_API_BASE_URL, DEFAULT_LIBERTAI_API_BASE_URL)?,
            agent_secret: env
                .required_secret(var::AGENT_SECRET, "set the bearer secret Baal uses to talk to this agent")?,
            bind_addr: bind_addr.unwrap_or(IpAddr::from([127, 0, 0, 1])),
            log_format: crate::ops::LogFormat::parse(env.text(crate::ops::LOG_FORMAT).as_deref())?,
            port: env.number(var::PORT, "a TCP port from 0 to 65535")?.unwrap_or(8080),
            db_path: env.text(var::DB_PATH).map_or_else(|| PathBuf::from("agent.db"), PathBuf::from),
            python_agent_db: env.text(var::PYTHON_AGENT_DB).map(PathBuf::from),
            max_history: small(var::MAX_HISTORY, 100)?.max(1),
            max_tool_iterations: small(var::MAX_TOOL_ITERATIONS, 50)?.max(1),
            workspace_path: env
                .text(var::WORKSPACE_PATH)
                .map_or_else(|| PathBuf::from("/opt/baal-agent/workspace"), PathBuf::from),
            owner_chat_id: env.text(var::OWNER_CHAT_ID),
            heartbeat_interval: env.seconds(var::HEARTBEAT_INTERVAL, DEFAULT_HEARTBEAT_INTERVAL)?,
            max_context_tokens: small(var::MAX_CONTEXT_TOKENS, 0)?,
            generation_reserve: small(var::GENERATION_RESERVE, 4096)?,
            compaction_keep_messages: small(var::COMPACTION_KEEP_MESSAGES, 20)?,
            brave_api_key: env.secret(var::BRAVE_API_KEY),
            brave_api_url: env.text(var::BRAVE_API_URL),
            visitor_tools: env
                .list(var::VISITOR_TOOLS)
                .unwrap_or_else(|| DEFAULT_VISITOR_TOOLS.iter().map(|t| (*t).to_owned()).collect()),
            tools_user: env.text(var::TOOLS_USER).unwrap_or_else(|| "nobody".into()),
            tools_max_open_files: env
                .number(var::TOOLS_MAX_OPEN_FILES, "a whole number of files")?
                .unwrap_or(DEFAULT_TOOLS_MAX_OPEN_FILES)
                .max(16),
            tools_max_file_size_mib: env
                .number(var::TOOLS_MAX_FILE_SIZE_MIB, "a whole number of MiB")?
                .unwrap_or(DEFAULT_TOOLS_MAX_FILE_SIZE_MIB)
                .max(1),
            tools_max_processes: env
                .number(var::TOOLS_MAX_PROCESSES, "a whole number of processes")?
                .unwrap_or(DEFAULT_TOOLS_MAX_PROCESSES)
                .max(8),
            tools_max_memory_mib: env
                .number(var::TOOLS_MAX_MEMORY_MIB, "a whole number of MiB")?
                .map(|m: u64| m.max(16)),
            tools_network: env.number(var::TOOLS_NETWORK, "host, isolated or none")?.unwrap_or_default(),
            web_fetch_allow: env.list(var::WEB_FETCH_ALLOW).unwrap_or_default(),
            max_subagents: small(var::MAX_SUBAGENTS, 3)?,
            llm_read_timeout: env.seconds(var::LLM_READ_TIMEOUT, Duration::from_secs(120))?.max(Duration::from_secs(1)),
            keepalive_interval: env
                .seconds(var::KEEPALIVE_INTERVAL, Duration::from_secs(15))?
                .max(Duration::from_secs(1)),
            llm_retry_delay: Duration::from_millis(
                env.number(var::LLM_RETRY_DELAY_MS, "a whole number of milliseconds")?.unwrap_or(1000),
            ),
            max_connections: env
                .number(var::MAX_CONNECTIONS, "a whole number of connections")?
                .unwrap_or(DEFAULT_MAX_CONNECTIONS)
                .max(1),
            header_read_timeout: env
                .seconds(var::HEADER_READ_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT)?
                .max(Duration::from_secs(1)),
            // Below 1 KiB not even a short message with its chat id fits.
            max_chat_body_bytes: env
                .number(var::MAX_CHAT_BODY_BYTES, "a whole number of bytes")?
                .unwrap_or(DEFAULT_MAX_CHAT_BODY_BYTES)
                .max(1024),
            turn_timeout: env.seconds(var::TURN_TIMEOUT, DEFAULT_TURN_TIMEOUT)?.max(Duration::from_secs(1)),
        };
        Ok(settings)
    }

    /// The context window compaction works with: `MAX_CONTEXT_TOKENS`, else the model's.
    pub fn context_limit(&self) -> u32 {
        context_limit(self.max_context_tokens, &self.model)
    }
}

/// `configured` when it is set (> 0), else the catalog's context for `model`.
pub fn context_limit(configured: u32, model: &str) -> u32 {
    if configured > 0 { configured } else { Model::context_tokens_of(model) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![("LIBERTAI_API_KEY", "k"), ("AGENT_SECRET", "s")]
    }

    #[test]
    fn defaults_follow_the_python_agent() {
        let s = AgentSettings::from_vars(base()).unwrap();
        assert_eq!(s.port, 8080);
        assert_eq!(s.max_history, 100);
        assert_eq!(s.max_tool_iterations, 50);
        assert_eq!(s.heartbeat_interval, Duration::from_secs(1800));
        assert_eq!(s.tools_network, ToolsNetwork::Host, "an Aleph VM is the agent's own");
        assert_eq!((s.tools_max_processes, s.tools_max_memory_mib), (1024, None));
        assert_eq!(s.compaction_keep_messages, 20);
        assert_eq!(s.visitor_tools, vec!["web_fetch", "web_search"]);
        assert_eq!(s.libertai_api_base_url, "https://api.libertai.io/v1");
        assert_eq!(s.python_agent_db, None, "only a converted agent carries a Python history over");
        assert_eq!(s.context_limit(), 98_304);
        assert_eq!((s.max_connections, s.max_chat_body_bytes), (512, 1024 * 1024));
        assert_eq!((s.header_read_timeout, s.turn_timeout), (Duration::from_secs(10), Duration::from_secs(900)));
        assert!(!format!("{s:?}").contains("\"k\""));
    }

    #[test]
    fn missing_and_malformed_settings_name_the_variable() {
        let e = AgentSettings::from_vars([("AGENT_SECRET", "s")]).err().unwrap();
        assert_eq!(e.variable, "LIBERTAI_API_KEY");
        let mut vars = base();
        vars.push(("PORT", "eighty"));
        assert_eq!(AgentSettings::from_vars(vars).err().unwrap().variable, "PORT");
        let mut vars = base();
        vars.push(("TOOLS_NETWORK", "open"));
        let e = AgentSettings::from_vars(vars).err().unwrap();
        assert_eq!(e.variable, "TOOLS_NETWORK");
        assert!(e.fix.contains("host, isolated or none"), "{}", e.fix);
        for name in ["MAX_CONNECTIONS", "HEADER_READ_TIMEOUT", "MAX_CHAT_BODY_BYTES", "TURN_TIMEOUT"] {
            let mut vars = base();
            vars.push((name, "-1"));
            assert_eq!(AgentSettings::from_vars(vars).err().unwrap().variable, name);
        }
    }

    #[test]
    fn context_limit_follows_the_python_table() {
        assert_eq!(context_limit(10_000, "qwen3-coder-next"), 10_000);
        assert_eq!(context_limit(0, "qwen3-coder-next"), 98_304);
        assert_eq!(context_limit(0, "glm-4.7"), 131_072);
        assert_eq!(context_limit(0, "unknown"), 32_768);
    }
}
