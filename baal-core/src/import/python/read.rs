//! Reading the Python Baal's files into a [`Snapshot`]: every row turned into plain data, every
//! Fernet token opened.

use std::collections::HashMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use super::key::{PythonKey, TokenError};
use super::schema::{
    AGENT_COLUMNS, AGENTS, BAAL_DB, Cells, POOL_COLUMNS, POOL_DB, SqliteFile, USERS, VM_POOL, flag, integer,
    optional_text, text, timestamp, word,
};
use super::{ImportError, Place, Problem};
use crate::domain::Deployment;

/// The Python Baal's files: `baal.db` (its `DB_PATH`) and, when given, `pool.db`
/// (`POOL_DB_PATH`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Source {
    /// Users and agents.
    pub baal_db: PathBuf,
    /// The warm pool; `None`: no pool VM is imported.
    pub pool_db: Option<PathBuf>,
}

impl Source {
    /// `baal.db` alone.
    pub fn new(baal_db: impl Into<PathBuf>) -> Source {
        Source { baal_db: baal_db.into(), pool_db: None }
    }

    /// With `pool.db` too.
    pub fn with_pool_db(mut self, pool_db: impl Into<PathBuf>) -> Source {
        self.pool_db = Some(pool_db.into());
        self
    }
}

/// Refuses a `database_url` (the store's) that is one of `source`'s files: with the default
/// `sqlite://baal.db` and the Python Baal's `baal.db` in the same directory, the store would
/// otherwise migrate the file it imports from.
pub fn check_apart(source: &Source, database_url: &str) -> Result<(), ImportError> {
    let Some(rest) = database_url.strip_prefix("sqlite:") else { return Ok(()) };
    let path = rest.trim_start_matches("//").split('?').next().unwrap_or_default();
    if path.is_empty() || path.contains(":memory:") {
        return Ok(());
    }
    // A store file that does not exist yet is no file of the source, which must exist.
    let Ok(store) = std::fs::canonicalize(path) else { return Ok(()) };
    for file in std::iter::once(&source.baal_db).chain(&source.pool_db) {
        if std::fs::canonicalize(file).is_ok_and(|f| f == store) {
            return Err(ImportError::SameFile { file: file.display().to_string() });
        }
    }
    Ok(())
}

/// An agent's `deployment_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PyStatus {
    Pending,
    Deploying,
    Running,
    /// Accepted by the Python bot as running, never written by its last version.
    Deployed,
    Failed,
    Stopped,
}

impl PyStatus {
    const ALL: [PyStatus; 6] = [
        PyStatus::Pending,
        PyStatus::Deploying,
        PyStatus::Running,
        PyStatus::Deployed,
        PyStatus::Failed,
        PyStatus::Stopped,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PyStatus::Pending => "pending",
            PyStatus::Deploying => "deploying",
            PyStatus::Running => "running",
            PyStatus::Deployed => "deployed",
            PyStatus::Failed => "failed",
            PyStatus::Stopped => "stopped",
        }
    }
}

/// A `vm_pool` row's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PyPoolStatus {
    Provisioning,
    Warm,
    Claimed,
    Deployed,
    Failed,
}

impl PyPoolStatus {
    const ALL: [PyPoolStatus; 5] = [
        PyPoolStatus::Provisioning,
        PyPoolStatus::Warm,
        PyPoolStatus::Claimed,
        PyPoolStatus::Deployed,
        PyPoolStatus::Failed,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PyPoolStatus::Provisioning => "provisioning",
            PyPoolStatus::Warm => "warm",
            PyPoolStatus::Claimed => "claimed",
            PyPoolStatus::Deployed => "deployed",
            PyPoolStatus::Failed => "failed",
        }
    }
}

/// A user of the Python Baal.
#[derive(Debug, Clone)]
pub(crate) struct PyUser {
    pub(crate) id: i64,
    /// Their LibertAI key, opened.
    pub(crate) api_key: Option<SecretString>,
    pub(crate) show_tools: bool,
}

/// An active agent of the Python Baal.
#[derive(Debug, Clone)]
pub(crate) struct PyAgent {
    pub(crate) id: i64,
    pub(crate) owner_id: i64,
    pub(crate) name: String,
    pub(crate) system_prompt: String,
    pub(crate) model: String,
    pub(crate) status: PyStatus,
    /// Instance hash, CRN, URL and SSH host; no SSH port (the Python table has none).
    pub(crate) deployment: Deployment,
    /// Its bearer secret, opened.
    pub(crate) token: Option<SecretString>,
    pub(crate) created_at: DateTime<Utc>,
}

/// A row of the Python Baal's warm pool.
#[derive(Debug, Clone)]
pub(crate) struct PyPoolVm {
    pub(crate) id: i64,
    pub(crate) status: PyPoolStatus,
    /// `None` for the placeholder `'pending'` of a VM still provisioning.
    pub(crate) instance_hash: Option<String>,
    /// Host, port, CRN and URL; filled only for the rows imported (warm and claimed).
    pub(crate) deployment: Deployment,
}

/// Everything read from the Python Baal's files, every secret opened. Nothing written yet;
/// `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub(crate) users: Vec<PyUser>,
    pub(crate) agents: Vec<PyAgent>,
    pub(crate) inactive_agents: Vec<i64>,
    /// `None` when no `pool.db` was given.
    pub(crate) pool: Option<Vec<PyPoolVm>>,
}

impl Snapshot {
    /// Reads `source` with `key`: the schema checked, every row read, every token opened. Any
    /// problem is an error that names where it is.
    pub fn read(source: &Source, key: &PythonKey) -> Result<Snapshot, ImportError> {
        let baal = SqliteFile::open(&source.baal_db)?;
        let columns = baal.check_schema(&BAAL_DB)?;
        let mut problems = Vec::new();
        let users = read_users(&baal, &columns, &mut problems)?;
        let (agents, inactive_agents) = read_agents(&baal, &mut problems)?;
        baal.corrupt_unless_empty(problems)?;
        let (users, agents) = open_tokens(&baal, key, users, agents)?;

        let pool = match &source.pool_db {
            None => None,
            Some(path) => {
                let pool = SqliteFile::open(path)?;
                pool.check_schema(&POOL_DB)?;
                let mut problems = Vec::new();
                let rows = read_pool(&pool, &mut problems)?;
                pool.corrupt_unless_empty(problems)?;
                Some(rows)
            }
        };
        Ok(Snapshot { users, agents, inactive_agents, pool })
    }
}

/// A user as read: the key still a token.
struct RawUser {
    id: i64,
    api_key: Option<String>,
    show_tools: bool,
}

fn read_users(
    file: &SqliteFile,
    columns: &HashMap<&'static str, Vec<String>>,
    problems: &mut Vec<Problem>,
) -> Result<Vec<RawUser>, ImportError> {
    let has_show_tools = columns.get(USERS).is_some_and(|c| c.iter().any(|c| c == "show_tools"));
    let wanted: &[&str] =
        if has_show_tools { &["telegram_id", "api_key", "show_tools"] } else { &["telegram_id", "api_key"] };
    let mut users = Vec::new();
    file.each_row(USERS, wanted, |cells| {
        let api_key = cells.get("api_key", problems, optional_text);
        // Added later: older databases have no such column, and every user saw tool notices.
        let show_tools = if has_show_tools { cells.get("show_tools", problems, |v| flag(v, true)) } else { Some(true) };
        if let (Some(api_key), Some(show_tools)) = (api_key, show_tools) {
            users.push(RawUser { id: cells.id, api_key, show_tools });
        }
    })?;
    Ok(users)
}

/// An agent as read: the secret still a token.
struct RawAgent {
    agent: PyAgent,
    token: Option<String>,
}

fn read_agents(file: &SqliteFile, problems: &mut Vec<Problem>) -> Result<(Vec<RawAgent>, Vec<i64>), ImportError> {
    let (mut agents, mut inactive) = (Vec::new(), Vec::new());
    file.each_row(AGENTS, AGENT_COLUMNS, |cells| {
        // Only `is_active = 1` is an agent the Python Baal shows (its queries ask exactly that);
        // the rest of a deleted agent's row is not read, so its leftovers block nothing.
        match cells.get("is_active", problems, |v| flag(v, false)) {
            Some(true) => {}
            Some(false) => return inactive.push(cells.id),
            None => return,
        }
        if let Some(agent) = read_agent(cells, problems) {
            agents.push(agent);
        }
    })?;
    Ok((agents, inactive))
}

fn read_agent(cells: &Cells<'_, '_>, problems: &mut Vec<Problem>) -> Option<RawAgent> {
    let owner_id = cells.get("owner_id", problems, integer);
    let name = cells.get("name", problems, text);
    let system_prompt = cells.get("system_prompt", problems, text);
    let model = cells.get("model", problems, text);
    let status = cells.get("deployment_status", problems, |v| word(&PyStatus::ALL, PyStatus::as_str, v));
    let instance_hash = cells.get("instance_hash", problems, optional_text);
    // Misnamed in the Python Baal: the CRN host's IPv4 it reaches over SSH.
    let vm_host = cells.get("vm_ipv6", problems, optional_text);
    let vm_url = cells.get("vm_url", problems, optional_text);
    let crn_url = cells.get("crn_url", problems, optional_text);
    let token = cells.get("auth_token", problems, optional_text);
    let created_at = cells.get("created_at", problems, timestamp);
    let deployment = Deployment {
        instance_hash: instance_hash?,
        vm_host: vm_host?,
        vm_url: vm_url?,
        crn_url: crn_url?,
        ..Deployment::default()
    };
    let agent = PyAgent {
        id: cells.id,
        owner_id: owner_id?,
        name: name?,
        system_prompt: system_prompt?,
        model: model?,
        status: status?,
        deployment,
        token: None,
        created_at: created_at?,
    };
    Some(RawAgent { agent, token: token? })
}

fn read_pool(file: &SqliteFile, problems: &mut Vec<Problem>) -> Result<Vec<PyPoolVm>, ImportError> {
    let mut vms = Vec::new();
    file.each_row(VM_POOL, POOL_COLUMNS, |cells| {
        let Some(status) = cells.get("status", problems, |v| word(&PyPoolStatus::ALL, PyPoolStatus::as_str, v)) else {
            return;
        };
        // `'pending'` is the placeholder of a row whose instance was not created (or not known) yet.
        let Some(instance_hash) = cells.get("instance_hash", problems, optional_text) else { return };
        let instance_hash = instance_hash.filter(|h| h != "pending");
        let mut vm = PyPoolVm { id: cells.id, status, instance_hash, deployment: Deployment::default() };
        if matches!(status, PyPoolStatus::Warm | PyPoolStatus::Claimed) {
            if vm.instance_hash.is_none() {
                problems.push(Problem {
                    place: cells.place("instance_hash"),
                    reason: format!("a {} VM without an instance hash", status.as_str()),
                });
            }
            let host = cells.get("vm_ip", problems, text);
            let crn = cells.get("crn_url", problems, text);
            let url = cells.get("vm_url", problems, optional_text);
            let port = cells.get("ssh_port", problems, |v| {
                integer(v).and_then(|n| u16::try_from(n).ok().filter(|p| *p > 0).ok_or(format!("{n} is not a port")))
            });
            let (Some(host), Some(crn), Some(url), Some(port)) = (host, crn, url, port) else { return };
            vm.deployment.vm_host = Some(host);
            vm.deployment.crn_url = Some(crn);
            vm.deployment.vm_url = url;
            vm.deployment.ssh_port = Some(port);
        }
        vms.push(vm);
    })?;
    Ok(vms)
}

/// Opens every token with `key`. A key that opens none of them is the wrong key; a token that
/// does not open when others do was altered (or written with another key), and is named.
fn open_tokens(
    file: &SqliteFile,
    key: &PythonKey,
    users: Vec<RawUser>,
    agents: Vec<RawAgent>,
) -> Result<(Vec<PyUser>, Vec<PyAgent>), ImportError> {
    let mut opener = Opener { key, opened: 0, rejected: Vec::new(), problems: Vec::new() };
    let users: Vec<PyUser> = users
        .into_iter()
        .map(|u| PyUser {
            id: u.id,
            api_key: opener.open(Place { table: USERS, row: u.id, column: "api_key" }, u.api_key),
            show_tools: u.show_tools,
        })
        .collect();
    let agents: Vec<PyAgent> = agents
        .into_iter()
        .map(|raw| {
            let place = Place { table: AGENTS, row: raw.agent.id, column: "auth_token" };
            PyAgent { token: opener.open(place, raw.token), ..raw.agent }
        })
        .collect();
    if opener.opened == 0
        && let Some(first) = opener.rejected.first()
    {
        return Err(ImportError::WrongKey { file: file.name.clone(), first: first.clone() });
    }
    let mut problems = opener.problems;
    problems.extend(opener.rejected.into_iter().map(|place| Problem {
        place,
        reason:
            "this token does not open with the key that opens the others (altered, or written with another key)".into(),
    }));
    file.corrupt_unless_empty(problems)?;
    Ok((users, agents))
}

struct Opener<'k> {
    key: &'k PythonKey,
    opened: usize,
    rejected: Vec<Place>,
    problems: Vec<Problem>,
}

impl Opener<'_> {
    fn open(&mut self, place: Place, token: Option<String>) -> Option<SecretString> {
        match self.key.open(&token?) {
            Ok(plain) => {
                self.opened += 1;
                Some(plain)
            }
            Err(TokenError::Rejected) => {
                self.rejected.push(place);
                None
            }
            Err(TokenError::Malformed(reason)) => {
                self.problems.push(Problem { place, reason });
                None
            }
        }
    }
}
