//! What an import does, decided against the store before anything is written, and the report
//! that tells it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::ImportError;
use super::read::{PyAgent, PyPoolStatus, PyPoolVm, PyStatus, PyUser, Snapshot};
use crate::domain::{Agent, AgentId, AgentRuntime, AgentStatus, Payer, User};
use crate::secrets::{SealContext, SecretBox};
use crate::store::{AgentFilter, PoolStore, Store};

/// What happens to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UserAction {
    /// Not in the store: created, with the Python key if any.
    Create,
    /// In the store without a key: given the Python one.
    AddKey,
    /// In the store with a key of their own that differs from the Python one: theirs stays.
    KeepTheirs,
    /// Already as the Python Baal has them (or nothing to bring).
    Unchanged,
}

#[derive(Debug, Clone)]
pub(crate) struct UserStep {
    pub(crate) user: PyUser,
    pub(crate) action: UserAction,
}

/// What happens to an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AgentAction {
    /// Not imported before: created.
    Create,
    /// Created by an import that was cut off before it finished (still `pending`): finished now.
    Resume,
    /// Imported before: left as it is.
    Unchanged,
}

#[derive(Debug, Clone)]
pub(crate) struct AgentStep {
    pub(crate) agent: PyAgent,
    pub(crate) action: AgentAction,
    /// The agent in the store, for `Resume` and `Unchanged`.
    pub(crate) existing: Option<AgentId>,
    pub(crate) status: AgentStatus,
    pub(crate) payer: Payer,
    pub(crate) note: Option<&'static str>,
}

/// What happens to a row of the Python pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolAction {
    /// Becomes a warm VM of the store's pool.
    Add,
    /// The store's pool has this instance already.
    Unchanged,
    /// Its instance serves an agent (a `deployed` row, or a hash an agent records).
    ServesAgent,
    /// Not imported: `provisioning` or `failed`, its instance possibly still paid for.
    PossibleLeak,
}

#[derive(Debug, Clone)]
pub(crate) struct PoolStep {
    pub(crate) vm: PyPoolVm,
    pub(crate) action: PoolAction,
}

/// Everything an import will write, decided against the store. Nothing is written until
/// [`Plan::apply`]; [`Plan::report`] tells what would be.
#[derive(Clone)]
pub struct Plan {
    pub(crate) users: Vec<UserStep>,
    pub(crate) agents: Vec<AgentStep>,
    pub(crate) pool: Option<Vec<PoolStep>>,
    pub(crate) inactive_agents: usize,
    /// The store's pool, when there is a VM to add to it.
    pub(crate) pool_store: Option<Arc<dyn PoolStore>>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("users", &self.users)
            .field("agents", &self.agents)
            .field("pool", &self.pool)
            .field("inactive_agents", &self.inactive_agents)
            .finish_non_exhaustive()
    }
}

impl Plan {
    /// Decides what importing `snapshot` into `store` does. `secrets` is this platform's key: it
    /// opens the keys users already have here, to tell the Python key apart from theirs.
    pub async fn new(snapshot: Snapshot, store: &dyn Store, secrets: &SecretBox) -> Result<Plan, ImportError> {
        let known: HashMap<i64, User> = store.users_list().await?.into_iter().map(|u| (u.id, u)).collect();
        let stored_agents = store.list_agents(&AgentFilter::all().include_deleted()).await?;
        let users = plan_users(&snapshot, &known, secrets);
        let has_key: HashSet<i64> = users
            .iter()
            .filter(|step| {
                step.user.api_key.is_some() || known.get(&step.user.id).is_some_and(|u| u.api_key_sealed.is_some())
            })
            .map(|step| step.user.id)
            .collect();
        let by_python_id: HashMap<i64, &Agent> =
            stored_agents.iter().filter_map(|a| a.python_id.map(|id| (id, a))).collect();
        let agents = snapshot.agents.iter().map(|agent| plan_agent(agent, &by_python_id, &has_key)).collect();

        let (pool, pool_store) = match snapshot.pool {
            None => (None, None),
            Some(rows) => {
                let mut serving: HashSet<String> =
                    stored_agents.iter().filter_map(|a| a.deployment.instance_hash.clone()).collect();
                serving.extend(snapshot.agents.iter().filter_map(|a| a.deployment.instance_hash.clone()));
                let (steps, pool_store) = plan_pool(rows, &serving, store).await?;
                (Some(steps), pool_store)
            }
        };
        Ok(Plan { users, agents, pool, inactive_agents: snapshot.inactive_agents.len(), pool_store })
    }

    /// What applying the plan does, written as if done (a dry run).
    pub fn report(&self) -> Report {
        let lines = self.agents.iter().map(|step| AgentLine::of(step, step.existing)).collect();
        self.report_with(lines, true)
    }

    pub(crate) fn report_with(&self, agent_lines: Vec<AgentLine>, dry_run: bool) -> Report {
        let users = |action| self.users.iter().filter(|s| s.action == action).count();
        let agents = |action| self.agents.iter().filter(|s| s.action == action).count();
        let pool = self.pool.as_ref().map(|steps| {
            let count = |action| steps.iter().filter(|s| s.action == action).count();
            PoolCounts {
                added: count(PoolAction::Add),
                unchanged: count(PoolAction::Unchanged),
                serving_agents: count(PoolAction::ServesAgent),
                possible_leaks: steps
                    .iter()
                    .filter(|s| s.action == PoolAction::PossibleLeak)
                    .map(|s| PoolLeak {
                        python_row: s.vm.id,
                        status: s.vm.status.as_str(),
                        instance_hash: s.vm.instance_hash.clone(),
                    })
                    .collect(),
            }
        });
        Report {
            dry_run,
            users: UserCounts {
                created: users(UserAction::Create),
                key_added: users(UserAction::AddKey),
                unchanged: users(UserAction::Unchanged),
                kept_keys: self
                    .users
                    .iter()
                    .filter(|s| s.action == UserAction::KeepTheirs)
                    .map(|s| s.user.id)
                    .collect(),
            },
            agents: AgentCounts {
                created: agents(AgentAction::Create),
                resumed: agents(AgentAction::Resume),
                unchanged: agents(AgentAction::Unchanged),
                inactive_skipped: self.inactive_agents,
            },
            agent_lines,
            pool,
        }
    }

    /// How many writes applying it makes (what [`Progress::total`](super::Progress::total) counts).
    pub fn writes(&self) -> usize {
        let users = self.users.iter().filter(|s| matches!(s.action, UserAction::Create | UserAction::AddKey)).count();
        let agents = self.agents.iter().filter(|s| s.action != AgentAction::Unchanged).count();
        let pool = self.pool.iter().flatten().filter(|s| s.action == PoolAction::Add).count();
        users + agents + pool
    }
}

/// Every user of the Python Baal, then owners of its agents that its `users` table lacks (its
/// foreign keys were never enforced).
fn plan_users(snapshot: &Snapshot, known: &HashMap<i64, User>, secrets: &SecretBox) -> Vec<UserStep> {
    let listed: HashSet<i64> = snapshot.users.iter().map(|u| u.id).collect();
    let mut owners: Vec<i64> = snapshot.agents.iter().map(|a| a.owner_id).filter(|id| !listed.contains(id)).collect();
    owners.sort_unstable();
    owners.dedup();
    let unlisted = owners.into_iter().map(|id| PyUser { id, api_key: None, show_tools: true });
    snapshot
        .users
        .iter()
        .cloned()
        .chain(unlisted)
        .map(|user| {
            let action = user_action(&user, known.get(&user.id), secrets);
            UserStep { user, action }
        })
        .collect()
}

fn user_action(user: &PyUser, stored: Option<&User>, secrets: &SecretBox) -> UserAction {
    let Some(stored) = stored else { return UserAction::Create };
    match (&user.api_key, &stored.api_key_sealed) {
        (None, _) => UserAction::Unchanged,
        (Some(_), None) => UserAction::AddKey,
        (Some(python), Some(sealed)) if same_secret(python, secrets, stored.id, sealed) => UserAction::Unchanged,
        (Some(_), Some(_)) => UserAction::KeepTheirs,
    }
}

/// Whether `sealed` (a user's key in the store) opens to `python`. One that does not open at all
/// is not the same: theirs is kept either way.
fn same_secret(python: &SecretString, secrets: &SecretBox, user: i64, sealed: &[u8]) -> bool {
    secrets
        .open_str_for(&SealContext::user_api_key(user), sealed)
        .is_ok_and(|ours| ours.expose_secret() == python.expose_secret())
}

fn plan_agent(agent: &PyAgent, by_python_id: &HashMap<i64, &Agent>, has_key: &HashSet<i64>) -> AgentStep {
    let payer = if has_key.contains(&agent.owner_id) { Payer::Owner } else { Payer::Operator };
    let (status, note) = status_for(agent);
    let step = |action, existing: Option<AgentId>, status, payer, note| AgentStep {
        agent: agent.clone(),
        action,
        existing,
        status,
        payer,
        note,
    };
    match by_python_id.get(&agent.id) {
        None => step(AgentAction::Create, None, status, payer, note),
        // The status is written last, so `pending` means an import stopped half way.
        Some(stored)
            if stored.status == AgentStatus::Pending && stored.runtime == AgentRuntime::Python && !stored.deleted =>
        {
            step(AgentAction::Resume, Some(stored.id), status, payer, note)
        }
        Some(stored) => step(AgentAction::Unchanged, Some(stored.id), stored.status, stored.payer, None),
    }
}

/// The status an imported agent starts in, and why when it is not what the Python Baal said.
fn status_for(agent: &PyAgent) -> (AgentStatus, Option<&'static str>) {
    let reachable = agent.deployment.vm_url.is_some() && agent.token.is_some();
    match agent.status {
        PyStatus::Running | PyStatus::Deployed if reachable => (AgentStatus::Running, None),
        PyStatus::Running | PyStatus::Deployed => {
            (AgentStatus::Failed, Some("running in the Python Baal, but without a URL or secret to reach it by"))
        }
        PyStatus::Pending | PyStatus::Deploying => {
            (AgentStatus::Failed, Some("its deployment never finished: the owner's /repair takes it on"))
        }
        PyStatus::Failed => (AgentStatus::Failed, None),
        PyStatus::Stopped => (AgentStatus::Failed, Some("stopped, yet not deleted, in the Python Baal")),
    }
}

async fn plan_pool(
    rows: Vec<PyPoolVm>,
    serving: &HashSet<String>,
    store: &dyn Store,
) -> Result<(Vec<PoolStep>, Option<Arc<dyn PoolStore>>), ImportError> {
    let wanted = |vm: &PyPoolVm| {
        matches!(vm.status, PyPoolStatus::Warm | PyPoolStatus::Claimed)
            && vm.instance_hash.as_ref().is_some_and(|h| !serving.contains(h))
    };
    let candidates = rows.iter().filter(|vm| wanted(vm)).count();
    let pool_store = if candidates == 0 { None } else { store.pool_store() };
    let pooled: HashSet<String> = match &pool_store {
        Some(pool) => pool.pool_list().await?.into_iter().filter_map(|vm| vm.instance_hash).collect(),
        None if candidates > 0 => return Err(ImportError::NoPool { vms: candidates }),
        None => HashSet::new(),
    };
    let steps = rows
        .into_iter()
        .map(|vm| {
            let action = match vm.status {
                PyPoolStatus::Provisioning | PyPoolStatus::Failed => PoolAction::PossibleLeak,
                PyPoolStatus::Deployed => PoolAction::ServesAgent,
                PyPoolStatus::Warm | PyPoolStatus::Claimed => match &vm.instance_hash {
                    Some(hash) if serving.contains(hash) => PoolAction::ServesAgent,
                    Some(hash) if pooled.contains(hash) => PoolAction::Unchanged,
                    _ => PoolAction::Add,
                },
            };
            PoolStep { vm, action }
        })
        .collect();
    Ok((steps, pool_store))
}

/// What an import did (or, for a dry run, would do). No secret in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// Nothing was written.
    pub dry_run: bool,
    /// Users.
    pub users: UserCounts,
    /// Agents.
    pub agents: AgentCounts,
    /// One line per active agent of the Python Baal, by Python id.
    pub agent_lines: Vec<AgentLine>,
    /// Pool VMs; `None` when no `pool.db` was read.
    pub pool: Option<PoolCounts>,
}

impl Report {
    /// Whether the import writes (or wrote) anything: false for a second import of the same files.
    pub fn changed(&self) -> bool {
        self.users.created + self.users.key_added + self.agents.created + self.agents.resumed > 0
            || self.pool.as_ref().is_some_and(|p| p.added > 0)
    }
}

/// What happens to users.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct UserCounts {
    /// Created (with their key, when they had one).
    pub created: usize,
    /// Known here without a key: given their Python key.
    pub key_added: usize,
    /// Known here already, nothing to change.
    pub unchanged: usize,
    /// Known here with a key of their own that differs from their Python key: theirs is kept.
    pub kept_keys: Vec<i64>,
}

/// What happens to agents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AgentCounts {
    /// Created.
    pub created: usize,
    /// Finished (a previous import was cut off).
    pub resumed: usize,
    /// Imported before.
    pub unchanged: usize,
    /// Deleted in the Python Baal (`is_active = 0`): not imported.
    pub inactive_skipped: usize,
}

/// One agent of the Python Baal and what becomes of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AgentLine {
    /// Its id in the Python Baal (its slug here).
    pub python_id: i64,
    /// What happens to it.
    pub action: AgentAction,
    /// Its id here; `None` in a dry run for one not yet created.
    pub agent_id: Option<AgentId>,
    /// Its owner's Telegram id.
    pub owner: i64,
    /// Its name.
    pub name: String,
    /// Its `deployment_status` in the Python Baal.
    pub python_status: &'static str,
    /// Its status here.
    pub status: AgentStatus,
    /// Whose key it runs on here.
    pub payer: Payer,
    /// Its Aleph instance.
    pub instance_hash: Option<String>,
    /// Why its status differs from the Python one, when it does.
    pub note: Option<&'static str>,
}

impl AgentLine {
    pub(crate) fn of(step: &AgentStep, agent_id: Option<AgentId>) -> AgentLine {
        AgentLine {
            python_id: step.agent.id,
            action: step.action,
            agent_id,
            owner: step.agent.owner_id,
            name: step.agent.name.clone(),
            python_status: step.agent.status.as_str(),
            status: step.status,
            payer: step.payer,
            instance_hash: step.agent.deployment.instance_hash.clone(),
            note: step.note,
        }
    }
}

/// What happens to the Python pool's VMs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PoolCounts {
    /// Added to the store's pool as warm VMs (`warm` and `claimed` rows).
    pub added: usize,
    /// In the store's pool already.
    pub unchanged: usize,
    /// Serving an agent (`deployed` rows, or an instance an agent records): not pool VMs.
    pub serving_agents: usize,
    /// `provisioning` and `failed` rows, not imported: their instances may still be paid for.
    pub possible_leaks: Vec<PoolLeak>,
}

/// A Python pool row that was not imported and may hold an instance the wallet pays for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PoolLeak {
    /// Its row id in `pool.db`.
    pub python_row: i64,
    /// `provisioning` or `failed`.
    pub status: &'static str,
    /// Its instance, when one was recorded.
    pub instance_hash: Option<String>,
}
