//! Python-Baal databases for tests (feature `import`): a `baal.db` and a `pool.db` written with
//! the schema the Python Baal creates (its current one, or its first, before `show_tools` and
//! `deployment_history`), every secret a Fernet token under a fresh key, as the Python Baal
//! writes them.
//!
//! ```no_run
//! # use baal_core::testing::python_baal::{PythonBaal, PyUser, PyAgent, PyPoolVm};
//! let dir = tempfile::tempdir().unwrap();
//! let files = PythonBaal::new()
//!     .with_user(PyUser::new(100).with_api_key("sk-alice"))
//!     .with_agent(PyAgent::new(7, 100, "Helper").running("ab".repeat(32), "192.0.2.7", "https://x.2n6.me", "tok"))
//!     .with_pool_vm(PyPoolVm::new(1, "warm", "cd".repeat(32)))
//!     .write(dir.path());
//! // files.source(), files.python_key(), files.key (for PYTHON_BOT_ENCRYPTION_KEY)
//! ```

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};
use secrecy::{ExposeSecret, SecretString};

use crate::import::python::{PythonKey, Source};

/// Which version of the Python Baal wrote the files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Schema {
    /// Its last version (`users.show_tools`, `deployment_history`).
    #[default]
    Current,
    /// Its first version: neither of those.
    First,
}

/// The Python Baal's `baal.db` at its last version (`src/baal/database/db.py`).
const BAAL_DB_CURRENT: &str = "
    CREATE TABLE IF NOT EXISTS users (
        telegram_id INTEGER PRIMARY KEY,
        api_key TEXT,
        show_tools BOOLEAN DEFAULT 1,
        created_at TEXT NOT NULL DEFAULT (datetime('now'))
    );
    CREATE TABLE IF NOT EXISTS agents (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner_id INTEGER NOT NULL REFERENCES users(telegram_id),
        name TEXT NOT NULL,
        system_prompt TEXT NOT NULL,
        model TEXT DEFAULT 'hermes-3-8b-tee',
        is_active BOOLEAN DEFAULT 1,
        instance_hash TEXT,
        vm_ipv6 TEXT,
        vm_url TEXT,
        crn_url TEXT,
        auth_token TEXT,
        deployment_status TEXT DEFAULT 'pending',
        created_at TEXT NOT NULL DEFAULT (datetime('now')),
        updated_at TEXT NOT NULL DEFAULT (datetime('now'))
    );
    CREATE INDEX IF NOT EXISTS idx_agents_owner ON agents (owner_id);
    CREATE TABLE IF NOT EXISTS daily_usage (
        telegram_id INTEGER NOT NULL,
        date TEXT NOT NULL,
        message_count INTEGER DEFAULT 0,
        PRIMARY KEY (telegram_id, date)
    );
    CREATE TABLE IF NOT EXISTS deployment_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        agent_id INTEGER NOT NULL REFERENCES agents(id),
        status TEXT NOT NULL,
        step TEXT,
        error_message TEXT,
        duration_seconds INTEGER,
        created_at TEXT NOT NULL DEFAULT (datetime('now'))
    );
    CREATE INDEX IF NOT EXISTS idx_deployment_history_agent ON deployment_history (agent_id, created_at DESC);
";

/// The Python Baal's `baal.db` at its first version.
const BAAL_DB_FIRST: &str = "
    CREATE TABLE IF NOT EXISTS users (
        telegram_id INTEGER PRIMARY KEY,
        api_key TEXT,
        created_at TEXT NOT NULL DEFAULT (datetime('now'))
    );
    CREATE TABLE IF NOT EXISTS agents (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner_id INTEGER NOT NULL REFERENCES users(telegram_id),
        name TEXT NOT NULL,
        system_prompt TEXT NOT NULL,
        model TEXT DEFAULT 'hermes-3-8b-tee',
        is_active BOOLEAN DEFAULT 1,
        instance_hash TEXT,
        vm_ipv6 TEXT,
        vm_url TEXT,
        crn_url TEXT,
        auth_token TEXT,
        deployment_status TEXT DEFAULT 'pending',
        created_at TEXT NOT NULL DEFAULT (datetime('now')),
        updated_at TEXT NOT NULL DEFAULT (datetime('now'))
    );
    CREATE INDEX IF NOT EXISTS idx_agents_owner ON agents (owner_id);
    CREATE TABLE IF NOT EXISTS daily_usage (
        telegram_id INTEGER NOT NULL,
        date TEXT NOT NULL,
        message_count INTEGER DEFAULT 0,
        PRIMARY KEY (telegram_id, date)
    );
";

/// The Python Baal's `pool.db` (`src/baal/services/pool_manager.py`).
const POOL_DB: &str = "
    CREATE TABLE IF NOT EXISTS vm_pool (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        instance_hash TEXT NOT NULL,
        vm_ip TEXT NOT NULL,
        vm_url TEXT NOT NULL,
        crn_url TEXT NOT NULL,
        ssh_port INTEGER NOT NULL DEFAULT 22,
        created_at TEXT NOT NULL,
        claimed_at TEXT,
        agent_id INTEGER,
        status TEXT NOT NULL DEFAULT 'warm'
    );
    CREATE UNIQUE INDEX IF NOT EXISTS idx_pool_hash ON vm_pool(instance_hash) WHERE instance_hash != 'pending';
";

/// A time as the Python Baal writes them (`datetime.now(timezone.utc).isoformat()`).
pub const PYTHON_TIME: &str = "2026-02-10T00:17:05.123456+00:00";

/// A user row.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PyUser {
    /// Telegram id.
    pub telegram_id: i64,
    /// Their LibertAI key in plain text; written as a Fernet token.
    pub api_key: Option<String>,
    /// Tool notices on (not written by [`Schema::First`]).
    pub show_tools: bool,
    /// As written.
    pub created_at: String,
}

impl PyUser {
    /// A free-tier user who sees tool notices.
    pub fn new(telegram_id: i64) -> PyUser {
        PyUser { telegram_id, api_key: None, show_tools: true, created_at: PYTHON_TIME.into() }
    }

    /// With their own LibertAI key.
    pub fn with_api_key(mut self, key: &str) -> PyUser {
        self.api_key = Some(key.into());
        self
    }

    /// With tool notices off (`/verbose`).
    pub fn hiding_tools(mut self) -> PyUser {
        self.show_tools = false;
        self
    }
}

/// An agent row.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PyAgent {
    /// Its id (the public one of its deep links).
    pub id: i64,
    /// Its owner's Telegram id.
    pub owner_id: i64,
    /// Name.
    pub name: String,
    /// Prompt.
    pub system_prompt: String,
    /// Model.
    pub model: String,
    /// `is_active` (false: deleted).
    pub is_active: bool,
    /// Aleph instance.
    pub instance_hash: Option<String>,
    /// The CRN host's IPv4 (the Python column is misnamed `vm_ipv6`).
    pub vm_ipv6: Option<String>,
    /// `https://sub.2n6.me`.
    pub vm_url: Option<String>,
    /// The CRN.
    pub crn_url: Option<String>,
    /// Its bearer secret in plain text; written as a Fernet token.
    pub auth_token: Option<String>,
    /// `pending`, `deploying`, `running`, `failed`, `stopped` (or the legacy `deployed`).
    pub deployment_status: String,
    /// As written.
    pub created_at: String,
}

impl PyAgent {
    /// A `pending` agent on `qwen3-coder-next`.
    pub fn new(id: i64, owner_id: i64, name: &str) -> PyAgent {
        PyAgent {
            id,
            owner_id,
            name: name.into(),
            system_prompt: format!("You are {name}, a helpful assistant."),
            model: "qwen3-coder-next".into(),
            is_active: true,
            instance_hash: None,
            vm_ipv6: None,
            vm_url: None,
            crn_url: None,
            auth_token: None,
            deployment_status: "pending".into(),
            created_at: PYTHON_TIME.into(),
        }
    }

    /// `running` on an Aleph VM reached at `host` over SSH and at `url` over HTTPS, with its
    /// bearer secret `token` (its CRN: `https://crn.example`).
    pub fn running(mut self, instance_hash: impl Into<String>, host: &str, url: &str, token: &str) -> PyAgent {
        self.instance_hash = Some(instance_hash.into());
        self.vm_ipv6 = Some(host.into());
        self.vm_url = Some(url.into());
        self.crn_url = Some("https://crn.example".into());
        self.auth_token = Some(token.into());
        self.deployment_status = "running".into();
        self
    }

    /// With `deployment_status` `status`.
    pub fn with_status(mut self, status: &str) -> PyAgent {
        self.deployment_status = status.into();
        self
    }

    /// Deleted (`is_active = 0`, `stopped`), as the Python Baal's delete leaves it.
    pub fn deleted(mut self) -> PyAgent {
        self.is_active = false;
        self.deployment_status = "stopped".into();
        self
    }

    /// Created at `created_at`, written as given.
    pub fn created(mut self, created_at: &str) -> PyAgent {
        self.created_at = created_at.into();
        self
    }
}

/// A `vm_pool` row.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PyPoolVm {
    /// Row id.
    pub id: i64,
    /// `provisioning`, `warm`, `claimed`, `deployed` or `failed`.
    pub status: String,
    /// The instance, or `pending` while provisioning.
    pub instance_hash: String,
    /// The CRN host's IPv4.
    pub vm_ip: String,
    /// `https://sub.2n6.me`.
    pub vm_url: String,
    /// The CRN.
    pub crn_url: String,
    /// The SSH port mapped to the VM's 22.
    pub ssh_port: i64,
    /// The agent it was claimed for or serves.
    pub agent_id: Option<i64>,
}

impl PyPoolVm {
    /// A VM in `status` with instance `instance_hash`, on host 192.0.2.50, SSH port 24000 + `id`.
    pub fn new(id: i64, status: &str, instance_hash: impl Into<String>) -> PyPoolVm {
        PyPoolVm {
            id,
            status: status.into(),
            instance_hash: instance_hash.into(),
            vm_ip: "192.0.2.50".into(),
            vm_url: format!("https://pool{id}.2n6.me"),
            crn_url: "https://crn.example".into(),
            ssh_port: 24_000 + id,
            agent_id: None,
        }
    }

    /// Claimed for, or serving, Python agent `agent_id`.
    pub fn for_agent(mut self, agent_id: i64) -> PyPoolVm {
        self.agent_id = Some(agent_id);
        self
    }
}

/// What to write: users, agents and pool rows, in a schema version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PythonBaal {
    /// The schema version.
    pub schema: Schema,
    /// `users` rows.
    pub users: Vec<PyUser>,
    /// `agents` rows.
    pub agents: Vec<PyAgent>,
    /// `vm_pool` rows.
    pub pool: Vec<PyPoolVm>,
}

/// The files written, and the Fernet key of their tokens.
#[derive(Debug)]
pub struct PythonFiles {
    /// `baal.db`.
    pub baal_db: PathBuf,
    /// `pool.db`.
    pub pool_db: PathBuf,
    /// The Fernet key (what the Python Baal's `BOT_ENCRYPTION_KEY` held).
    pub key: SecretString,
}

impl PythonBaal {
    /// Nothing yet, current schema.
    pub fn new() -> PythonBaal {
        PythonBaal::default()
    }

    /// Written by the Python Baal's first version.
    pub fn first_version(mut self) -> PythonBaal {
        self.schema = Schema::First;
        self
    }

    /// With a user.
    pub fn with_user(mut self, user: PyUser) -> PythonBaal {
        self.users.push(user);
        self
    }

    /// With an agent.
    pub fn with_agent(mut self, agent: PyAgent) -> PythonBaal {
        self.agents.push(agent);
        self
    }

    /// With a pool row.
    pub fn with_pool_vm(mut self, vm: PyPoolVm) -> PythonBaal {
        self.pool.push(vm);
        self
    }

    /// Writes `baal.db` and `pool.db` into `dir`, tokens under a fresh Fernet key.
    ///
    /// # Panics
    /// When the files cannot be written: the test cannot run.
    pub fn write(&self, dir: &Path) -> PythonFiles {
        self.write_with_key(dir, &SecretString::from(fernet::Fernet::generate_key()))
    }

    /// Writes `baal.db` and `pool.db` into `dir`, tokens under `key` (URL-safe base64 of 32 bytes).
    ///
    /// # Panics
    /// When `key` is not a Fernet key or the files cannot be written.
    pub fn write_with_key(&self, dir: &Path, key: &SecretString) -> PythonFiles {
        let files = PythonFiles { baal_db: dir.join("baal.db"), pool_db: dir.join("pool.db"), key: key.clone() };
        let fernet = files.python_key();
        let baal = Connection::open(&files.baal_db).expect("create baal.db");
        baal.pragma_update(None, "journal_mode", "WAL").expect("baal.db in WAL mode, as the Python Baal opens it");
        // Declared, never enforced by the Python Baal (Python's SQLite leaves them off; the
        // bundled one here turns them on).
        baal.pragma_update(None, "foreign_keys", false).expect("foreign keys off, as in the Python Baal");
        baal.execute_batch(if self.schema == Schema::Current { BAAL_DB_CURRENT } else { BAAL_DB_FIRST })
            .expect("create the Python Baal's tables");
        for user in &self.users {
            let token = user.api_key.as_deref().map(|k| fernet.encrypt(k));
            let inserted = match self.schema {
                Schema::Current => baal.execute(
                    "INSERT INTO users (telegram_id, api_key, show_tools, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![user.telegram_id, token, user.show_tools, user.created_at],
                ),
                Schema::First => baal.execute(
                    "INSERT INTO users (telegram_id, api_key, created_at) VALUES (?1, ?2, ?3)",
                    params![user.telegram_id, token, user.created_at],
                ),
            };
            inserted.expect("insert a user");
        }
        for agent in &self.agents {
            let token = agent.auth_token.as_deref().map(|t| fernet.encrypt(t));
            baal.execute(
                "INSERT INTO agents (id, owner_id, name, system_prompt, model, is_active, instance_hash, vm_ipv6, \
                 vm_url, crn_url, auth_token, deployment_status, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13)",
                params![
                    agent.id,
                    agent.owner_id,
                    agent.name,
                    agent.system_prompt,
                    agent.model,
                    agent.is_active,
                    agent.instance_hash,
                    agent.vm_ipv6,
                    agent.vm_url,
                    agent.crn_url,
                    token,
                    agent.deployment_status,
                    agent.created_at
                ],
            )
            .expect("insert an agent");
        }
        drop(baal);

        let pool = Connection::open(&files.pool_db).expect("create pool.db");
        pool.execute_batch(POOL_DB).expect("create the Python pool's table");
        for vm in &self.pool {
            pool.execute(
                "INSERT INTO vm_pool (id, instance_hash, vm_ip, vm_url, crn_url, ssh_port, created_at, claimed_at, \
                 agent_id, status) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8, ?9)",
                params![
                    vm.id,
                    vm.instance_hash,
                    vm.vm_ip,
                    vm.vm_url,
                    vm.crn_url,
                    vm.ssh_port,
                    PYTHON_TIME,
                    vm.agent_id,
                    vm.status
                ],
            )
            .expect("insert a pool VM");
        }
        files
    }
}

impl PythonFiles {
    /// Both files, for [`Snapshot::read`](crate::import::python::Snapshot::read).
    pub fn source(&self) -> Source {
        Source::new(&self.baal_db).with_pool_db(&self.pool_db)
    }

    /// The key that opens the tokens.
    ///
    /// # Panics
    /// When the key is not a Fernet key.
    pub fn python_key(&self) -> PythonKey {
        PythonKey::from_secret(&self.key, "test Fernet key").expect("a Fernet key")
    }

    /// A Fernet token of `plaintext` under the files' key.
    pub fn token(&self, plaintext: &str) -> String {
        self.python_key().encrypt(plaintext)
    }

    /// Runs `sql` on `baal.db` (to damage it on purpose).
    ///
    /// # Panics
    /// When the statement fails.
    pub fn execute_baal(&self, sql: &str) {
        execute(&self.baal_db, sql);
    }

    /// Runs `sql` on `pool.db`.
    ///
    /// # Panics
    /// When the statement fails.
    pub fn execute_pool(&self, sql: &str) {
        execute(&self.pool_db, sql);
    }

    /// The key as text, for `PYTHON_BOT_ENCRYPTION_KEY` or a key file.
    pub fn key_text(&self) -> &str {
        self.key.expose_secret()
    }
}

fn execute(path: &Path, sql: &str) {
    Connection::open(path)
        .and_then(|conn| {
            conn.pragma_update(None, "foreign_keys", false)?;
            conn.execute_batch(sql)
        })
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
}
