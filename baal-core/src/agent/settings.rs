//! [`AgentSettings`]: the agent's settings, from the environment (the Python agent's names) and an
//! optional settings file written by the deployer (`KEY=value` lines or a JSON object).
//!
//! Written by hand for the same reason as [`crate::config`]: per-variable rules and errors that
//! name the exact variable.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

use crate::domain::{DEFAULT_VISITOR_TOOLS, Model};

/// Environment variables holding secrets; `baal-agent` removes them from its own environment once
/// read, so no child process inherits them.
pub const SECRET_VARIABLES: &[&str] = &["LIBERTAI_API_KEY", "AGENT_SECRET", "BRAVE_API_KEY"];

/// A setting of the agent is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}. {fix}")]
#[non_exhaustive]
pub struct SettingsError {
    /// The variable at fault (or the settings file).
    pub variable: String,
    /// What is wrong.
    pub problem: String,
    /// What to do.
    pub fix: String,
}

impl SettingsError {
    fn new(variable: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        SettingsError { variable: variable.into(), problem: problem.into(), fix: fix.into() }
    }
}

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
    /// `PORT` (default 8080; 0 picks a free port).
    pub port: u16,
    /// `DB_PATH` (default `agent.db`).
    pub db_path: PathBuf,
    /// `MAX_HISTORY`: rows of history loaded per turn (default 100).
    pub max_history: u32,
    /// `MAX_TOOL_ITERATIONS`: model calls per turn (default 50).
    pub max_tool_iterations: u32,
    /// `WORKSPACE_PATH` (default `/opt/baal-agent/workspace`).
    pub workspace_path: PathBuf,
    /// `OWNER_CHAT_ID`: the owner's chat; heartbeat and subagent output go there only.
    pub owner_chat_id: Option<String>,
    /// `HEARTBEAT_INTERVAL` in seconds (default 1800; 0 disables).
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
}

impl fmt::Debug for AgentSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentSettings")
            .field("agent_name", &self.agent_name)
            .field("model", &self.model)
            .field("libertai_api_key", &"[REDACTED]")
            .field("libertai_api_base_url", &self.libertai_api_base_url)
            .field("agent_secret", &"[REDACTED]")
            .field("bind_addr", &self.bind_addr)
            .field("port", &self.port)
            .field("db_path", &self.db_path)
            .field("workspace_path", &self.workspace_path)
            .field("owner_chat_id", &self.owner_chat_id)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("brave_api_key", &self.brave_api_key.as_ref().map(|_| "[REDACTED]"))
            .field("visitor_tools", &self.visitor_tools)
            .finish_non_exhaustive()
    }
}

impl AgentSettings {
    /// Reads the settings file (if any), then the environment; a variable set in the environment
    /// wins over the file.
    pub fn load(config_file: Option<&Path>) -> Result<AgentSettings, SettingsError> {
        let mut vars = match config_file {
            Some(path) => read_settings_file(path)?,
            None => HashMap::new(),
        };
        vars.extend(std::env::vars());
        AgentSettings::from_vars(vars)
    }

    /// Reads settings from explicit variables (tests, embedders). Empty values count as unset.
    pub fn from_vars<I, K, V>(vars: I) -> Result<AgentSettings, SettingsError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let env: HashMap<String, String> =
            vars.into_iter().map(|(k, v)| (k.into(), v.into())).filter(|(_, v)| !v.trim().is_empty()).collect();
        let text = |name: &str| env.get(name).map(|v| v.trim().to_owned());
        let required = |name: &str, fix: &str| {
            env.get(name)
                .map(|v| SecretString::from(v.trim().to_owned()))
                .ok_or_else(|| SettingsError::new(name, "not set", fix))
        };
        let number = |name: &str, default: u64| -> Result<u64, SettingsError> {
            match env.get(name) {
                None => Ok(default),
                Some(v) => v.trim().parse::<u64>().map_err(|_| {
                    SettingsError::new(name, format!("`{}` is not a whole number", v.trim()), "give a whole number")
                }),
            }
        };
        let list = |name: &str| -> Option<Vec<String>> {
            env.get(name).map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
        };
        let small = |name: &str, default: u32| -> Result<u32, SettingsError> {
            u32::try_from(number(name, u64::from(default))?)
                .map_err(|_| SettingsError::new(name, "is too large", "give a smaller number"))
        };

        let base_url =
            text("LIBERTAI_API_BASE_URL").unwrap_or_else(|| crate::config::DEFAULT_LIBERTAI_API_BASE_URL.into());
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(SettingsError::new(
                "LIBERTAI_API_BASE_URL",
                format!("`{base_url}` is not an http(s) URL"),
                "give a URL such as https://api.libertai.io/v1",
            ));
        }
        let bind_addr = match text("BIND_ADDR") {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(v) => v.parse().map_err(|_| {
                SettingsError::new(
                    "BIND_ADDR",
                    format!("`{v}` is not an IP address"),
                    "give an address such as 127.0.0.1",
                )
            })?,
        };
        let port = u16::try_from(number("PORT", 8080)?)
            .map_err(|_| SettingsError::new("PORT", "is not a TCP port", "give a port from 0 to 65535"))?;
        let settings = AgentSettings {
            agent_name: text("AGENT_NAME").unwrap_or_else(|| "Agent".into()),
            system_prompt: text("SYSTEM_PROMPT").unwrap_or_else(|| "You are a helpful assistant.".into()),
            model: text("MODEL").unwrap_or_else(|| Model::default_model().id.into()),
            libertai_api_key: required("LIBERTAI_API_KEY", "set the LibertAI API key the agent pays inference with")?,
            libertai_api_base_url: base_url,
            agent_secret: required("AGENT_SECRET", "set the bearer secret Baal uses to talk to this agent")?,
            bind_addr,
            port,
            db_path: text("DB_PATH").map_or_else(|| PathBuf::from("agent.db"), PathBuf::from),
            max_history: small("MAX_HISTORY", 100)?.max(1),
            max_tool_iterations: small("MAX_TOOL_ITERATIONS", 50)?.max(1),
            workspace_path: text("WORKSPACE_PATH")
                .map_or_else(|| PathBuf::from("/opt/baal-agent/workspace"), PathBuf::from),
            owner_chat_id: text("OWNER_CHAT_ID"),
            heartbeat_interval: Duration::from_secs(number("HEARTBEAT_INTERVAL", 1800)?),
            max_context_tokens: small("MAX_CONTEXT_TOKENS", 0)?,
            generation_reserve: small("GENERATION_RESERVE", 4096)?,
            compaction_keep_messages: small("COMPACTION_KEEP_MESSAGES", 20)?,
            brave_api_key: env.get("BRAVE_API_KEY").map(|v| SecretString::from(v.trim().to_owned())),
            brave_api_url: text("BRAVE_API_URL"),
            visitor_tools: list("VISITOR_TOOLS")
                .unwrap_or_else(|| DEFAULT_VISITOR_TOOLS.iter().map(|t| (*t).to_owned()).collect()),
            tools_user: text("TOOLS_USER").unwrap_or_else(|| "nobody".into()),
            web_fetch_allow: list("WEB_FETCH_ALLOW").unwrap_or_default(),
            max_subagents: small("MAX_SUBAGENTS", 3)?,
            llm_read_timeout: Duration::from_secs(number("LLM_READ_TIMEOUT", 120)?.max(1)),
            keepalive_interval: Duration::from_secs(number("KEEPALIVE_INTERVAL", 15)?.max(1)),
            llm_retry_delay: Duration::from_millis(number("LLM_RETRY_DELAY_MS", 1000)?),
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

/// Reads a settings file: a JSON object (`{"KEY": "value", …}`, numbers and booleans allowed) or
/// `KEY=value` lines (`#` comments; values may be double-quoted with `\n`, `\"`, `\\` escapes, as
/// systemd's `EnvironmentFile=` reads them, or single-quoted verbatim).
pub fn read_settings_file(path: &Path) -> Result<HashMap<String, String>, SettingsError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| SettingsError::new(&shown, format!("cannot be read ({e})"), "check the path given to --config"))?;
    parse_settings(&text).map_err(|problem| SettingsError::new(&shown, problem, "fix the settings file"))
}

fn parse_settings(text: &str) -> Result<HashMap<String, String>, String> {
    if text.trim_start().starts_with('{') {
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| format!("is not a JSON object of settings ({e})"))?;
        return object
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => Ok((k, s)),
                serde_json::Value::Number(n) => Ok((k, n.to_string())),
                serde_json::Value::Bool(b) => Ok((k, b.to_string())),
                serde_json::Value::Null => Ok((k, String::new())),
                _ => Err(format!("{k} must be a string, a number or a boolean")),
            })
            .collect();
    }
    let mut out = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (key, raw) = line.split_once('=').ok_or_else(|| format!("line {} is not KEY=value", number + 1))?;
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("line {} has an invalid name `{key}`", number + 1));
        }
        out.insert(key.to_owned(), unquote(raw.trim()).map_err(|p| format!("line {}: {p}", number + 1))?);
    }
    Ok(out)
}

fn unquote(raw: &str) -> Result<String, String> {
    if let Some(inner) = raw.strip_prefix('\'') {
        return inner.strip_suffix('\'').map(str::to_owned).ok_or_else(|| "unterminated single quote".to_owned());
    }
    let Some(inner) = raw.strip_prefix('"') else { return Ok(raw.to_owned()) };
    let inner = inner.strip_suffix('"').ok_or_else(|| "unterminated double quote".to_owned())?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => return Err("a value ends with a lone backslash".into()),
        }
    }
    Ok(out)
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
        assert_eq!(s.compaction_keep_messages, 20);
        assert_eq!(s.visitor_tools, vec!["web_fetch", "web_search"]);
        assert_eq!(s.libertai_api_base_url, "https://api.libertai.io/v1");
        assert_eq!(s.context_limit(), 98_304);
        assert!(!format!("{s:?}").contains("\"k\""));
    }

    #[test]
    fn missing_and_malformed_settings_name_the_variable() {
        let e = AgentSettings::from_vars([("AGENT_SECRET", "s")]).err().unwrap();
        assert_eq!(e.variable, "LIBERTAI_API_KEY");
        let mut vars = base();
        vars.push(("PORT", "eighty"));
        assert_eq!(AgentSettings::from_vars(vars).err().unwrap().variable, "PORT");
    }

    #[test]
    fn settings_files_in_both_formats() {
        let env = parse_settings(
            "# c\nAGENT_NAME=\"Bob \\\"the\\\" bot\"\nSYSTEM_PROMPT=\"line1\\nline2\"\nexport PORT=0\nX='a\\b'\n",
        )
        .unwrap();
        assert_eq!(env["AGENT_NAME"], "Bob \"the\" bot");
        assert_eq!(env["SYSTEM_PROMPT"], "line1\nline2");
        assert_eq!(env["PORT"], "0");
        assert_eq!(env["X"], "a\\b");
        let env = parse_settings(r#"{"AGENT_NAME":"J","PORT":0,"X":true}"#).unwrap();
        assert_eq!(env["PORT"], "0");
        assert!(parse_settings("NOEQUALS").is_err());
        assert!(parse_settings("A=\"open").is_err());
    }

    #[test]
    fn context_limit_follows_the_python_table() {
        assert_eq!(context_limit(10_000, "qwen3-coder-next"), 10_000);
        assert_eq!(context_limit(0, "qwen3-coder-next"), 98_304);
        assert_eq!(context_limit(0, "glm-4.7"), 131_072);
        assert_eq!(context_limit(0, "unknown"), 32_768);
    }
}
