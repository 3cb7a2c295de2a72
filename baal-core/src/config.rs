//! Settings from the environment and `.env`.
//!
//! Every name the Python Baal uses keeps its name. Reading never fails on a *missing* optional
//! setting: each front-end asks for what it needs ([`Settings::require_telegram`], …) and gets an
//! error that names the variable and says how to fix it. A *malformed* value (a port that is not a
//! number) fails at load time, naming the variable. Values are read with [`crate::env::Vars`], the
//! reader the agent's settings use too.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use crate::agent_env::{AgentDefaults, DEFAULT_HEARTBEAT_INTERVAL};
use crate::domain::UserId;
use crate::env::{SettingError, Vars};

/// A setting is missing or malformed: the one error type of every setting, the bot's and the
/// agent's.
pub type ConfigError = SettingError;

/// `variable` is required and missing; `fix` says where to get it, and the error where to put it.
fn missing(variable: &str, fix: &str) -> ConfigError {
    SettingError::missing(variable, format!("{fix} (set it in the environment or in .env; see .env.example)"))
}

/// How a finding about the settings bears on running Baal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Severity {
    /// In place.
    Ok,
    /// Baal runs, with a consequence the operator should know of.
    Note,
    /// Baal will not start until it is fixed.
    Problem,
}

/// One finding about the settings: which variable, and a line that names it and, unless it is
/// [`Severity::Ok`], says what follows or what to do. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Finding {
    /// How it bears on running Baal.
    pub severity: Severity,
    /// The variable it is about.
    pub variable: &'static str,
    /// The line to show, starting with the variable's name.
    pub text: String,
}

impl Finding {
    /// A setting in place.
    pub fn ok(variable: &'static str, text: impl Into<String>) -> Finding {
        Finding { severity: Severity::Ok, variable, text: text.into() }
    }

    /// A setting Baal runs without, with a consequence.
    pub fn note(variable: &'static str, text: impl Into<String>) -> Finding {
        Finding { severity: Severity::Note, variable, text: text.into() }
    }

    /// A setting Baal cannot start with.
    pub fn problem(variable: &'static str, text: impl Into<String>) -> Finding {
        Finding { severity: Severity::Problem, variable, text: text.into() }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Where to get each setting the Telegram front-end needs.
const TELEGRAM_BOT_TOKEN_FIX: &str = "create a bot with @BotFather and paste its token";
const TELEGRAM_API_FIX: &str = "get an api_id and api_hash at https://my.telegram.org → API development tools";

/// Where agents run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeployerKind {
    /// Child processes of this machine (no `ALEPH_PRIVATE_KEY`).
    Local,
    /// Aleph Cloud VMs.
    Aleph,
}

/// Every setting of the bot, the CLI and the deployers. `Debug` redacts secrets.
#[derive(Clone)]
#[non_exhaustive]
pub struct Settings {
    /// `TELEGRAM_BOT_TOKEN` (BotFather).
    pub telegram_bot_token: Option<SecretString>,
    /// `TELEGRAM_API_ID` (my.telegram.org).
    pub telegram_api_id: Option<i32>,
    /// `TELEGRAM_API_HASH` (my.telegram.org).
    pub telegram_api_hash: Option<SecretString>,
    /// `BOT_USERNAME`: the bot's @name for share links; the Telegram front-end learns it itself.
    pub bot_username: Option<String>,
    /// `LIBERTAI_API_KEY`: the operator's key, used for users who have not logged in.
    pub libertai_api_key: Option<SecretString>,
    /// `LIBERTAI_API_BASE_URL`.
    pub libertai_api_base_url: String,
    /// `ALEPH_PRIVATE_KEY`: hex secp256k1 key that pays for and signs VMs. Selects the Aleph deployer.
    pub aleph_private_key: Option<SecretString>,
    /// `ALEPH_SSH_PUBKEY`: public key put into every VM.
    pub aleph_ssh_pubkey: Option<String>,
    /// `ALEPH_SSH_PRIVKEY_PATH`: the matching private key file.
    pub aleph_ssh_privkey_path: PathBuf,
    /// `PYTHON_SSH_PRIVKEY_PATH`: the Python Baal's SSH private key (its `ALEPH_SSH_PRIVKEY_PATH`,
    /// RSA from `ssh-keygen` by default), tried when a VM imported from there refuses Baal's key
    /// while converting its agent; Baal's key is then installed on the VM. Unset: not tried.
    pub python_ssh_privkey_path: Option<PathBuf>,
    /// `ALEPH_API_URL`: message API, balance and status.
    pub aleph_api_url: String,
    /// `ALEPH_CRN_LIST_URL`.
    pub aleph_crn_list_url: String,
    /// `ALEPH_DOMAIN_GATEWAY_URL`: 2n6.me lookups.
    pub aleph_domain_gateway_url: String,
    /// `ALEPH_CHANNEL`.
    pub aleph_channel: String,
    /// `ALEPH_VM_VCPUS`: vCPUs of each agent VM (default 1).
    pub aleph_vm_vcpus: u32,
    /// `ALEPH_VM_MEMORY_MIB`: memory of each agent VM in MiB (default 2048).
    pub aleph_vm_memory_mib: u64,
    /// `ALEPH_VM_DISK_MIB`: root disk of each agent VM in MiB (default 20480, the image minimum).
    pub aleph_vm_disk_mib: u64,
    /// `ALEPH_ROOTFS`: item hash of the VM image (default: Ubuntu 24.04).
    pub aleph_rootfs: Option<String>,
    /// `BOT_ENCRYPTION_KEY`: 32 bytes (base64 or hex) sealing secrets at rest.
    pub bot_encryption_key: Option<SecretString>,
    /// `PYTHON_BOT_ENCRYPTION_KEY`: the Python Baal's Fernet key (its `BOT_ENCRYPTION_KEY`), read
    /// only by `baal-cli import python` to open the tokens in its `baal.db`.
    pub python_bot_encryption_key: Option<SecretString>,
    /// `DATABASE_URL`; SQLite `./baal.db` by default.
    pub database_url: String,
    /// `LOG_FORMAT`: `text` (default; coloured only on a terminal) or `json`.
    pub log_format: crate::ops::LogFormat,
    /// `METRICS_ADDR`: where the bot and the console serve `/metrics`, `/healthz` and `/readyz`
    /// (`127.0.0.1:9464`); off when unset. Unauthenticated: loopback or a private network only.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `FREE_TIER_DAILY_MESSAGES`.
    pub free_tier_daily_messages: u32,
    /// `FREE_TIER_DAILY_TOKENS`: model tokens (prompt and completion) one user may spend per UTC
    /// day on agents paid by the operator's key, beside the message limit (default 500000).
    pub free_tier_daily_tokens: u64,
    /// `VISITOR_TOOLS_ALLOWED`: the tools owners may give their agents' visitors (default
    /// `web_fetch,web_search`). Names from [`AGENT_TOOLS`].
    pub visitor_tools_allowed: Vec<String>,
    /// `USAGE_RETENTION_DAYS`: how long per-day usage figures are kept (default 400).
    pub usage_retention_days: u32,
    /// `MAX_AGENTS_PER_USER`.
    pub max_agents_per_user: u32,
    /// `ADMIN_USER_IDS`: comma-separated Telegram ids allowed fleet-wide views (`/pool`).
    pub admin_user_ids: Vec<UserId>,
    /// `POOL_ENABLED`.
    pub pool_enabled: bool,
    /// `POOL_MIN_SIZE`.
    pub pool_min_size: u32,
    /// `POOL_MAX_SIZE`.
    pub pool_max_size: u32,
    /// `POOL_REPLENISH_INTERVAL` (seconds).
    pub pool_replenish_interval_secs: u64,
    /// `POOL_MAX_AGE_HOURS`.
    pub pool_max_age_hours: u64,
    /// `BAAL_DATA_DIR`: local agents' workspaces and databases.
    pub data_dir: PathBuf,
    /// `BAAL_AGENT_BIN`: the `baal-agent` binary to run or ship.
    pub agent_bin: Option<PathBuf>,
    /// `BRAVE_API_KEY`: handed to agents so `web_search` works.
    pub brave_api_key: Option<SecretString>,
    /// `LOCAL_AGENTS_OPEN_WITHOUT_ISOLATION`: let everyone create local agents even where this
    /// host cannot keep them apart (default false: only `ADMIN_USER_IDS` may).
    pub local_agents_open_without_isolation: bool,
    /// `TOOLS_MAX_OPEN_FILES`: files one tool process may have open, handed to every agent
    /// (default 1024).
    pub tools_max_open_files: u64,
    /// `TOOLS_MAX_FILE_SIZE_MIB`: the largest file a tool process may write, handed to every agent
    /// (default 1024).
    pub tools_max_file_size_mib: u64,
    /// `AGENT_MAX_MEMORY_MIB`: memory of one local agent with everything its tools start, in MiB
    /// (default 1024), where the local deployer can limit it per agent.
    pub agent_max_memory_mib: u64,
    /// `AGENT_MAX_PROCESSES`: processes and threads of one local agent with its tools (default 512).
    pub agent_max_processes: u64,
    /// `AGENT_CPU_PERCENT`: CPU time of one local agent with its tools, in percent of one core
    /// (default 100; 200 is two cores).
    pub agent_cpu_percent: u32,
    /// `HEARTBEAT_INTERVAL`: how often an agent carries out a standing `HEARTBEAT.md` that sets
    /// no schedule of its own (default 1800 s; 0 disables), handed to every agent.
    pub agent_heartbeat_interval: Duration,
    /// `HEALTH_CHECK_INTERVAL`: how often the platform checks that every running (and down)
    /// agent answers, and repairs those that stopped (default 60 s; 0 turns checks and repairs off).
    pub health_check_interval: Duration,
    /// `RELEASE_FAILED_AFTER`: a failed deployment untouched this long gives back what it holds
    /// (its VM; a local agent's files), the agent staying for `/repair` (default 86400 s; 0 never).
    pub release_failed_after: Duration,
    /// `LOCAL_AGENT_LOG_MAX_BYTES`: a local agent's `agent.log` is moved to `agent.log.1` past
    /// this size (default 10 MiB).
    pub local_agent_log_max_bytes: u64,
}

/// `AGENT_MAX_MEMORY_MIB` when unset.
pub const DEFAULT_AGENT_MAX_MEMORY_MIB: u64 = 1024;
/// `AGENT_MAX_PROCESSES` when unset.
pub const DEFAULT_AGENT_MAX_PROCESSES: u64 = 512;
/// `AGENT_CPU_PERCENT` when unset: one core.
pub const DEFAULT_AGENT_CPU_PERCENT: u32 = 100;

/// `HEALTH_CHECK_INTERVAL` when unset.
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// `RELEASE_FAILED_AFTER` when unset: a day, time enough for the owner to see the failure.
pub const DEFAULT_RELEASE_FAILED_AFTER: Duration = Duration::from_secs(24 * 3600);
/// `LOCAL_AGENT_LOG_MAX_BYTES` when unset.
pub const DEFAULT_LOCAL_AGENT_LOG_MAX_BYTES: u64 = 10 * 1024 * 1024;

/// `FREE_TIER_DAILY_TOKENS` when unset: about fifty ordinary turns with a few tool calls each.
pub const DEFAULT_FREE_TIER_DAILY_TOKENS: u64 = 500_000;
/// `USAGE_RETENTION_DAYS` when unset: a year of history, and a little more.
pub const DEFAULT_USAGE_RETENTION_DAYS: u32 = 400;
/// Every tool an agent has, by the name its model calls it (`spawn` starts a subagent).
pub const AGENT_TOOLS: &[&str] =
    &["bash", "read_file", "write_file", "edit_file", "list_dir", "web_fetch", "web_search", "send_file", "spawn"];

/// The SQLite database used when `DATABASE_URL` is unset.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://baal.db?mode=rwc";
/// LibertAI's public API.
pub use crate::agent_env::DEFAULT_LIBERTAI_API_BASE_URL;

impl Settings {
    /// Loads `.env` (if present; it never overrides the real environment), then the environment.
    pub fn load() -> Result<Settings, ConfigError> {
        let _ = dotenvy::dotenv();
        Settings::from_vars(std::env::vars())
    }

    /// Reads settings from explicit variables (tests, embedders). Empty values count as unset.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Settings, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let env: Vars = vars.into_iter().collect();
        let settings = Settings {
            telegram_bot_token: env.secret("TELEGRAM_BOT_TOKEN"),
            telegram_api_id: env.number("TELEGRAM_API_ID", "a number from my.telegram.org")?,
            telegram_api_hash: env.secret("TELEGRAM_API_HASH"),
            bot_username: env.text("BOT_USERNAME").map(|u| u.trim_start_matches('@').to_owned()),
            libertai_api_key: env.secret("LIBERTAI_API_KEY"),
            libertai_api_base_url: env.url("LIBERTAI_API_BASE_URL", DEFAULT_LIBERTAI_API_BASE_URL)?,
            aleph_private_key: env.secret("ALEPH_PRIVATE_KEY"),
            aleph_ssh_pubkey: env.text("ALEPH_SSH_PUBKEY"),
            aleph_ssh_privkey_path: env
                .text("ALEPH_SSH_PRIVKEY_PATH")
                .map(|p| expand_home(&p))
                .unwrap_or_else(|| expand_home("~/.ssh/id_ed25519")),
            python_ssh_privkey_path: env.text("PYTHON_SSH_PRIVKEY_PATH").map(|p| expand_home(&p)),
            aleph_api_url: env.url("ALEPH_API_URL", "https://api2.aleph.im")?,
            aleph_crn_list_url: env.url("ALEPH_CRN_LIST_URL", "https://crns-list.aleph.sh/crns.json")?,
            aleph_domain_gateway_url: env.url("ALEPH_DOMAIN_GATEWAY_URL", "https://api.2n6.me")?,
            aleph_channel: env.text("ALEPH_CHANNEL").unwrap_or_else(|| "BAAL".into()),
            aleph_vm_vcpus: env.number("ALEPH_VM_VCPUS", "a whole number of vCPUs")?.unwrap_or(1),
            aleph_vm_memory_mib: env.number("ALEPH_VM_MEMORY_MIB", "a whole number of MiB")?.unwrap_or(2048),
            aleph_vm_disk_mib: env.number("ALEPH_VM_DISK_MIB", "a whole number of MiB")?.unwrap_or(20480),
            aleph_rootfs: env.text("ALEPH_ROOTFS"),
            bot_encryption_key: env.secret("BOT_ENCRYPTION_KEY"),
            python_bot_encryption_key: env.secret("PYTHON_BOT_ENCRYPTION_KEY"),
            database_url: env.text("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.into()),
            log_format: crate::ops::LogFormat::parse(env.text(crate::ops::LOG_FORMAT).as_deref())?,
            metrics_addr: env.number("METRICS_ADDR", "an address and port such as 127.0.0.1:9464")?,
            free_tier_daily_messages: env
                .number("FREE_TIER_DAILY_MESSAGES", "a whole number of messages")?
                .unwrap_or(50),
            free_tier_daily_tokens: env
                .number("FREE_TIER_DAILY_TOKENS", "a whole number of tokens")?
                .unwrap_or(DEFAULT_FREE_TIER_DAILY_TOKENS),
            visitor_tools_allowed: visitor_tools_allowed(&env)?,
            usage_retention_days: positive(&env, "USAGE_RETENTION_DAYS", "days", DEFAULT_USAGE_RETENTION_DAYS)?,
            max_agents_per_user: env.number("MAX_AGENTS_PER_USER", "a whole number of agents")?.unwrap_or(3),
            admin_user_ids: parse_ids(&env, "ADMIN_USER_IDS")?,
            pool_enabled: env.flag("POOL_ENABLED")?.unwrap_or(true),
            pool_min_size: env.number("POOL_MIN_SIZE", "a whole number of VMs")?.unwrap_or(5),
            pool_max_size: env.number("POOL_MAX_SIZE", "a whole number of VMs")?.unwrap_or(10),
            pool_replenish_interval_secs: env.number("POOL_REPLENISH_INTERVAL", "a number of seconds")?.unwrap_or(30),
            pool_max_age_hours: env.number("POOL_MAX_AGE_HOURS", "a number of hours")?.unwrap_or(24),
            data_dir: env.text("BAAL_DATA_DIR").map_or_else(|| PathBuf::from("baal-data"), |p| expand_home(&p)),
            agent_bin: env.text("BAAL_AGENT_BIN").map(|p| expand_home(&p)),
            brave_api_key: env.secret("BRAVE_API_KEY"),
            local_agents_open_without_isolation: env.flag("LOCAL_AGENTS_OPEN_WITHOUT_ISOLATION")?.unwrap_or(false),
            tools_max_open_files: env
                .number("TOOLS_MAX_OPEN_FILES", "a whole number of files")?
                .unwrap_or(crate::agent_env::DEFAULT_TOOLS_MAX_OPEN_FILES),
            tools_max_file_size_mib: env
                .number("TOOLS_MAX_FILE_SIZE_MIB", "a whole number of MiB")?
                .unwrap_or(crate::agent_env::DEFAULT_TOOLS_MAX_FILE_SIZE_MIB),
            agent_max_memory_mib: positive(&env, "AGENT_MAX_MEMORY_MIB", "MiB", DEFAULT_AGENT_MAX_MEMORY_MIB)?,
            agent_max_processes: positive(&env, "AGENT_MAX_PROCESSES", "processes", DEFAULT_AGENT_MAX_PROCESSES)?,
            agent_cpu_percent: positive(&env, "AGENT_CPU_PERCENT", "percent of one core", DEFAULT_AGENT_CPU_PERCENT)?,
            agent_heartbeat_interval: env
                .seconds(crate::agent_env::var::HEARTBEAT_INTERVAL, DEFAULT_HEARTBEAT_INTERVAL)?,
            health_check_interval: env.seconds("HEALTH_CHECK_INTERVAL", DEFAULT_HEALTH_CHECK_INTERVAL)?,
            release_failed_after: env.seconds("RELEASE_FAILED_AFTER", DEFAULT_RELEASE_FAILED_AFTER)?,
            local_agent_log_max_bytes: log_max_bytes(&env)?,
        };
        if settings.pool_min_size > settings.pool_max_size {
            return Err(SettingError::new(
                "POOL_MIN_SIZE",
                format!("{} is larger than POOL_MAX_SIZE ({})", settings.pool_min_size, settings.pool_max_size),
                "lower POOL_MIN_SIZE or raise POOL_MAX_SIZE",
            ));
        }
        Ok(settings)
    }

    /// The deployer these settings select: Aleph when `ALEPH_PRIVATE_KEY` is set, else local.
    pub fn deployer_kind(&self) -> DeployerKind {
        if self.aleph_private_key.is_some() { DeployerKind::Aleph } else { DeployerKind::Local }
    }

    /// Whether `user` may see fleet-wide views.
    pub fn is_admin(&self, user: UserId) -> bool {
        self.admin_user_ids.contains(&user)
    }

    /// What every agent is given from these settings (`HEARTBEAT_INTERVAL`, `BRAVE_API_KEY`, the
    /// tools' limits).
    pub fn agent_defaults(&self) -> AgentDefaults {
        AgentDefaults::default()
            .with_heartbeat_interval(self.agent_heartbeat_interval)
            .with_brave_api_key(self.brave_api_key.clone())
            .with_tool_limits(self.tools_max_open_files, self.tools_max_file_size_mib)
    }

    /// The three settings the Telegram front-end cannot start without.
    pub fn require_telegram(&self) -> Result<(i32, &SecretString, &SecretString), ConfigError> {
        let token =
            self.telegram_bot_token.as_ref().ok_or_else(|| missing("TELEGRAM_BOT_TOKEN", TELEGRAM_BOT_TOKEN_FIX))?;
        let api_id = self.telegram_api_id.ok_or_else(|| missing("TELEGRAM_API_ID", TELEGRAM_API_FIX))?;
        let api_hash = self.telegram_api_hash.as_ref().ok_or_else(|| missing("TELEGRAM_API_HASH", TELEGRAM_API_FIX))?;
        Ok((api_id, api_hash, token))
    }

    /// What [`Settings::require_telegram`] would say of each of its settings, all at once.
    pub fn telegram_checks(&self) -> Vec<Finding> {
        let check = |variable: &'static str, set: Option<String>, fix: &str| match set {
            Some(text) => Finding::ok(variable, text),
            None => Finding::problem(variable, missing(variable, fix).to_string()),
        };
        vec![
            check(
                "TELEGRAM_BOT_TOKEN",
                self.telegram_bot_token.as_ref().map(|_| "TELEGRAM_BOT_TOKEN is set".into()),
                TELEGRAM_BOT_TOKEN_FIX,
            ),
            check(
                "TELEGRAM_API_ID",
                self.telegram_api_id.map(|id| format!("TELEGRAM_API_ID is {id}")),
                TELEGRAM_API_FIX,
            ),
            check(
                "TELEGRAM_API_HASH",
                self.telegram_api_hash.as_ref().map(|_| "TELEGRAM_API_HASH is set".into()),
                TELEGRAM_API_FIX,
            ),
        ]
    }

    /// The key that seals secrets at rest.
    pub fn require_encryption_key(&self) -> Result<&SecretString, ConfigError> {
        self.bot_encryption_key
            .as_ref()
            .ok_or_else(|| missing("BOT_ENCRYPTION_KEY", "generate one with `baal-cli keygen`"))
    }

    /// What the Aleph deployer needs.
    pub fn require_aleph(&self) -> Result<(&SecretString, &str), ConfigError> {
        let key = self
            .aleph_private_key
            .as_ref()
            .ok_or_else(|| missing("ALEPH_PRIVATE_KEY", "set the hex private key of the wallet that pays for VMs"))?;
        let ssh = self.aleph_ssh_pubkey.as_deref().ok_or_else(|| {
            missing("ALEPH_SSH_PUBKEY", "set the OpenSSH public key (ssh-ed25519 AAAA…) put on every VM")
        })?;
        Ok((key, ssh))
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn set(secret: &Option<SecretString>) -> &'static str {
            if secret.is_some() { "[REDACTED]" } else { "unset" }
        }
        f.debug_struct("Settings")
            .field("telegram_bot_token", &set(&self.telegram_bot_token))
            .field("telegram_api_id", &self.telegram_api_id)
            .field("telegram_api_hash", &set(&self.telegram_api_hash))
            .field("bot_username", &self.bot_username)
            .field("libertai_api_key", &set(&self.libertai_api_key))
            .field("libertai_api_base_url", &self.libertai_api_base_url)
            .field("aleph_private_key", &set(&self.aleph_private_key))
            .field("aleph_ssh_pubkey", &self.aleph_ssh_pubkey)
            .field("aleph_ssh_privkey_path", &self.aleph_ssh_privkey_path)
            .field("python_ssh_privkey_path", &self.python_ssh_privkey_path)
            .field("aleph_api_url", &self.aleph_api_url)
            .field("aleph_crn_list_url", &self.aleph_crn_list_url)
            .field("aleph_domain_gateway_url", &self.aleph_domain_gateway_url)
            .field("aleph_channel", &self.aleph_channel)
            .field("bot_encryption_key", &set(&self.bot_encryption_key))
            .field("python_bot_encryption_key", &set(&self.python_bot_encryption_key))
            .field("database_url", &redact_url_password(&self.database_url))
            .field("log_format", &self.log_format)
            .field("metrics_addr", &self.metrics_addr)
            .field("free_tier_daily_messages", &self.free_tier_daily_messages)
            .field("free_tier_daily_tokens", &self.free_tier_daily_tokens)
            .field("visitor_tools_allowed", &self.visitor_tools_allowed)
            .field("usage_retention_days", &self.usage_retention_days)
            .field("max_agents_per_user", &self.max_agents_per_user)
            .field("admin_user_ids", &self.admin_user_ids)
            .field("pool_enabled", &self.pool_enabled)
            .field("pool_min_size", &self.pool_min_size)
            .field("pool_max_size", &self.pool_max_size)
            .field("pool_replenish_interval_secs", &self.pool_replenish_interval_secs)
            .field("pool_max_age_hours", &self.pool_max_age_hours)
            .field("data_dir", &self.data_dir)
            .field("agent_bin", &self.agent_bin)
            .field("brave_api_key", &set(&self.brave_api_key))
            .field("local_agents_open_without_isolation", &self.local_agents_open_without_isolation)
            .field("agent_heartbeat_interval", &self.agent_heartbeat_interval)
            .field("tools_max_open_files", &self.tools_max_open_files)
            .field("tools_max_file_size_mib", &self.tools_max_file_size_mib)
            .field("agent_max_memory_mib", &self.agent_max_memory_mib)
            .field("agent_max_processes", &self.agent_max_processes)
            .field("agent_cpu_percent", &self.agent_cpu_percent)
            .finish()
    }
}

impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:#?}")
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`, for logs and `doctor`.
pub fn redact_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!("{}://{}:***{}", &url[..scheme_end], &authority[..colon], &rest[at..])
        }
        _ => url.to_owned(),
    }
}

/// `VISITOR_TOOLS_ALLOWED`, each name checked against [`AGENT_TOOLS`].
fn visitor_tools_allowed(env: &Vars) -> Result<Vec<String>, SettingError> {
    let Some(tools) = env.list("VISITOR_TOOLS_ALLOWED") else {
        return Ok(crate::domain::DEFAULT_VISITOR_TOOLS.iter().map(|t| t.to_string()).collect());
    };
    if let Some(unknown) = tools.iter().find(|t| !AGENT_TOOLS.contains(&t.as_str())) {
        return Err(SettingError::new(
            "VISITOR_TOOLS_ALLOWED",
            format!("{unknown:?} is not a tool agents have"),
            format!("use names from: {}", AGENT_TOOLS.join(", ")),
        ));
    }
    Ok(tools)
}

fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// `name` as a whole number of `unit` above zero, `default` when unset: a limit of zero would
/// stop every agent from starting, which is never what an operator means.
fn positive<T>(env: &Vars, name: &str, unit: &str, default: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + Default + PartialEq + fmt::Display,
{
    let expected = format!("a whole number of {unit} above 0 (default {default})");
    match env.number::<T>(name, &expected)? {
        None => Ok(default),
        Some(zero) if zero == T::default() => {
            Err(SettingError::new(name, "0 would keep every agent from running", format!("set {name} to {expected}")))
        }
        Some(value) => Ok(value),
    }
}

/// `LOCAL_AGENT_LOG_MAX_BYTES`: a log cannot be rotated at every byte, so 0 is refused.
fn log_max_bytes(env: &Vars) -> Result<u64, ConfigError> {
    const NAME: &str = "LOCAL_AGENT_LOG_MAX_BYTES";
    let expected = format!("a whole number of bytes above 0 (default {DEFAULT_LOCAL_AGENT_LOG_MAX_BYTES})");
    match env.number::<u64>(NAME, &expected)? {
        Some(0) => {
            Err(SettingError::new(NAME, "0 would rotate the log at every write", format!("set {NAME} to {expected}")))
        }
        found => Ok(found.unwrap_or(DEFAULT_LOCAL_AGENT_LOG_MAX_BYTES)),
    }
}

fn parse_ids(env: &Vars, name: &str) -> Result<Vec<UserId>, ConfigError> {
    let Some(ids) = env.list(name) else {
        return Ok(Vec::new());
    };
    ids.iter()
        .map(|s| {
            s.parse::<UserId>().map_err(|_| {
                SettingError::new(
                    name,
                    format!("{s:?} is not a Telegram user id"),
                    "list numeric Telegram user ids separated by commas, e.g. 12345,67890",
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_need_nothing() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(s.free_tier_daily_messages, 50);
        assert_eq!(s.free_tier_daily_tokens, DEFAULT_FREE_TIER_DAILY_TOKENS);
        assert_eq!(s.visitor_tools_allowed, ["web_fetch", "web_search"]);
        assert_eq!(s.max_agents_per_user, 3);
        assert_eq!(s.libertai_api_base_url, DEFAULT_LIBERTAI_API_BASE_URL);
        assert_eq!(s.aleph_channel, "BAAL");
        assert_eq!(s.deployer_kind(), DeployerKind::Local);
        assert!(s.admin_user_ids.is_empty());
    }

    #[test]
    fn missing_required_settings_name_the_variable() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.require_telegram().unwrap_err().variable, "TELEGRAM_BOT_TOKEN");
        let s = settings(&[("TELEGRAM_BOT_TOKEN", "1:AA")]).unwrap();
        assert_eq!(s.require_telegram().unwrap_err().variable, "TELEGRAM_API_ID");
        let s = settings(&[("TELEGRAM_BOT_TOKEN", "1:AA"), ("TELEGRAM_API_ID", "5")]).unwrap();
        let err = s.require_telegram().unwrap_err();
        assert_eq!(err.variable, "TELEGRAM_API_HASH");
        assert!(err.to_string().starts_with("TELEGRAM_API_HASH: not set."));
        assert_eq!(s.require_encryption_key().unwrap_err().variable, "BOT_ENCRYPTION_KEY");
        assert_eq!(s.require_aleph().unwrap_err().variable, "ALEPH_PRIVATE_KEY");
    }

    #[test]
    fn malformed_settings_name_the_variable() {
        for (name, value) in [
            ("TELEGRAM_API_ID", "abc"),
            ("FREE_TIER_DAILY_MESSAGES", "-1"),
            ("MAX_AGENTS_PER_USER", "three"),
            ("ADMIN_USER_IDS", "12,bob"),
            ("POOL_ENABLED", "maybe"),
            ("LIBERTAI_API_BASE_URL", "api.libertai.io"),
            ("POOL_REPLENISH_INTERVAL", "1.5"),
            ("HEARTBEAT_INTERVAL", "soon"),
            ("FREE_TIER_DAILY_TOKENS", "lots"),
            ("VISITOR_TOOLS_ALLOWED", "web_fetch,rm_rf"),
            ("USAGE_RETENTION_DAYS", "0"),
        ] {
            let err = settings(&[(name, value)]).unwrap_err();
            assert_eq!(err.variable, name, "{err}");
            assert!(err.to_string().starts_with(name));
        }
        let err = settings(&[("POOL_MIN_SIZE", "11")]).unwrap_err();
        assert_eq!(err.variable, "POOL_MIN_SIZE");
    }

    #[test]
    fn agent_limits_must_be_whole_numbers_above_zero() {
        let s = settings(&[]).unwrap();
        assert_eq!((s.agent_max_memory_mib, s.agent_max_processes, s.agent_cpu_percent), (1024, 512, 100));
        let s = settings(&[("AGENT_CPU_PERCENT", "250"), ("AGENT_MAX_MEMORY_MIB", "64")]).unwrap();
        assert_eq!((s.agent_max_memory_mib, s.agent_cpu_percent), (64, 250), "several cores are allowed");
        for name in ["AGENT_MAX_MEMORY_MIB", "AGENT_MAX_PROCESSES", "AGENT_CPU_PERCENT"] {
            for bad in ["0", "-5", "1.5", "lots", "1e3"] {
                let err = settings(&[(name, bad)]).unwrap_err();
                assert_eq!(err.variable, name, "{err}");
                let text = err.to_string();
                assert!(text.starts_with(name) && text.contains("above 0"), "{text}");
            }
        }
        let err = settings(&[("AGENT_CPU_PERCENT", "0")]).unwrap_err().to_string();
        assert_eq!(
            err,
            "AGENT_CPU_PERCENT: 0 would keep every agent from running. \
             set AGENT_CPU_PERCENT to a whole number of percent of one core above 0 (default 100)"
        );
    }

    #[test]
    fn values_are_parsed() {
        let s = settings(&[
            ("ADMIN_USER_IDS", " 1, 2 ,3"),
            ("DATABASE_URL", "postgres://u:p@127.0.0.1/test"),
            ("ALEPH_PRIVATE_KEY", "0xabc"),
            ("LIBERTAI_API_BASE_URL", "http://127.0.0.1:9/v1/"),
            ("BOT_USERNAME", "@baal_bot"),
            ("POOL_ENABLED", "no"),
            ("HEARTBEAT_INTERVAL", "60"),
        ])
        .unwrap();
        assert_eq!(s.agent_defaults().heartbeat_interval, Duration::from_secs(60));
        assert_eq!(settings(&[]).unwrap().agent_defaults().heartbeat_interval, DEFAULT_HEARTBEAT_INTERVAL);
        let healing = settings(&[
            ("HEALTH_CHECK_INTERVAL", "5"),
            ("RELEASE_FAILED_AFTER", "0"),
            ("LOCAL_AGENT_LOG_MAX_BYTES", "4096"),
        ])
        .unwrap();
        assert_eq!(healing.health_check_interval, Duration::from_secs(5));
        assert_eq!(healing.release_failed_after, Duration::ZERO);
        assert_eq!(healing.local_agent_log_max_bytes, 4096);
        let defaults = settings(&[]).unwrap();
        assert_eq!(defaults.health_check_interval, DEFAULT_HEALTH_CHECK_INTERVAL);
        assert_eq!(defaults.release_failed_after, DEFAULT_RELEASE_FAILED_AFTER);
        assert_eq!(defaults.local_agent_log_max_bytes, DEFAULT_LOCAL_AGENT_LOG_MAX_BYTES);
        let err = settings(&[("LOCAL_AGENT_LOG_MAX_BYTES", "0")]).unwrap_err();
        assert_eq!(err.variable, "LOCAL_AGENT_LOG_MAX_BYTES", "{err}");
        assert_eq!(s.admin_user_ids, vec![1, 2, 3]);
        assert!(s.is_admin(2) && !s.is_admin(4));
        assert_eq!(s.deployer_kind(), DeployerKind::Aleph);
        assert_eq!(s.libertai_api_base_url, "http://127.0.0.1:9/v1");
        assert_eq!(s.bot_username.as_deref(), Some("baal_bot"));
        assert!(!s.pool_enabled);
    }

    #[test]
    fn no_secret_appears_in_debug_or_display() {
        let secrets = [
            ("TELEGRAM_BOT_TOKEN", "123456:SECRET-bot-token"),
            ("TELEGRAM_API_HASH", "SECRET-api-hash"),
            ("LIBERTAI_API_KEY", "SECRET-libertai"),
            ("ALEPH_PRIVATE_KEY", "SECRET-aleph-key"),
            ("BOT_ENCRYPTION_KEY", "SECRET-encryption"),
            ("PYTHON_BOT_ENCRYPTION_KEY", "SECRET-python-fernet"),
            ("BRAVE_API_KEY", "SECRET-brave"),
            ("DATABASE_URL", "postgres://baal:SECRET-db-password@127.0.0.1/baal"),
        ];
        let s = settings(&secrets).unwrap();
        let shown = format!("{s:?}\n{s}\n{s:#?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("postgres://baal:***@127.0.0.1/baal"));
        assert_eq!(s.libertai_api_key.unwrap().expose_secret(), "SECRET-libertai");
        assert_eq!(s.python_bot_encryption_key.unwrap().expose_secret(), "SECRET-python-fernet");
    }

    #[test]
    fn redacts_only_passwords() {
        assert_eq!(redact_url_password("sqlite://baal.db?mode=rwc"), "sqlite://baal.db?mode=rwc");
        assert_eq!(redact_url_password("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(redact_url_password("postgres://u:p@h:5432/d"), "postgres://u:***@h:5432/d");
    }
}
