//! Writing a [`Plan`] into the store: users first (agents need their owner), then agents, then
//! pool VMs. Each agent's status is its last write, so one left `pending` marks an import that
//! was cut off, which the next import finishes.

use secrecy::ExposeSecret;

use super::ImportError;
use super::plan::{AgentAction, AgentLine, AgentStep, Plan, PoolAction, PoolStep, Report, UserAction, UserStep};
use crate::domain::{AgentId, NewAgent, PoolStatus};
use crate::secrets::{SealContext, SecretBox};
use crate::store::{PoolStore, Store};

/// How far [`Plan::apply`] got: `done` of `total` writes (a user, an agent or a pool VM each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Written so far.
    pub done: usize,
    /// To write in all ([`Plan::writes`]).
    pub total: usize,
}

impl Plan {
    /// Writes the plan into `store`, sealing every secret with `secrets`, and calls `progress`
    /// after each write. A store failure stops it; what was written stays, and importing the
    /// same files again finishes the job.
    pub async fn apply(
        self,
        store: &dyn Store,
        secrets: &SecretBox,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<Report, ImportError> {
        let mut progress = Counter { done: 0, total: self.writes(), report: progress };
        for step in &self.users {
            if write_user(store, secrets, step).await? {
                progress.tick();
            }
        }
        let mut lines = Vec::with_capacity(self.agents.len());
        for step in &self.agents {
            let id = write_agent(store, secrets, step).await?;
            if step.action != AgentAction::Unchanged {
                progress.tick();
            }
            lines.push(AgentLine::of(step, Some(id)));
        }
        if let Some(pool) = &self.pool_store {
            for step in self.pool.iter().flatten() {
                if write_pool_vm(pool.as_ref(), step).await? {
                    progress.tick();
                }
            }
        }
        Ok(self.report_with(lines, false))
    }
}

struct Counter<'p> {
    done: usize,
    total: usize,
    report: &'p mut (dyn FnMut(Progress) + Send),
}

impl Counter<'_> {
    fn tick(&mut self) {
        self.done += 1;
        (self.report)(Progress { done: self.done, total: self.total });
    }
}

/// Whether anything was written.
async fn write_user(store: &dyn Store, secrets: &SecretBox, step: &UserStep) -> Result<bool, ImportError> {
    let user = &step.user;
    match step.action {
        UserAction::Unchanged | UserAction::KeepTheirs => return Ok(false),
        UserAction::Create => {
            let created = store.user_get_or_create(user.id, None).await?;
            if created.show_tools != user.show_tools {
                store.user_toggle_show_tools(user.id).await?;
            }
        }
        UserAction::AddKey => {}
    }
    if let Some(key) = &user.api_key {
        let sealed = secrets.seal_str_for(&SealContext::user_api_key(user.id), key.expose_secret())?;
        store.user_set_api_key(user.id, Some(sealed)).await?;
    }
    Ok(true)
}

/// The agent's id here.
async fn write_agent(store: &dyn Store, secrets: &SecretBox, step: &AgentStep) -> Result<AgentId, ImportError> {
    let agent = &step.agent;
    let id = match (step.action, step.existing) {
        (AgentAction::Unchanged, Some(id)) | (AgentAction::Resume, Some(id)) => id,
        _ => {
            let new = NewAgent::new(agent.owner_id, &agent.name, &agent.system_prompt, &agent.model)
                .imported_from_python(agent.id, agent.created_at);
            store.agent_create(new).await?.id
        }
    };
    if step.action == AgentAction::Unchanged {
        return Ok(id);
    }
    // Sealed for its row, which only now has an id.
    if let Some(token) = &agent.token {
        let sealed = secrets.seal_str_for(&SealContext::agent_token(id), token.expose_secret())?;
        store.agent_set_token(id, &sealed).await?;
    }
    store.agent_set_deployment(id, &agent.deployment).await?;
    store.agent_set_payer(id, step.payer).await?;
    store.agent_set_status(id, step.status).await?;
    Ok(id)
}

/// Whether a VM was added.
async fn write_pool_vm(pool: &dyn PoolStore, step: &PoolStep) -> Result<bool, ImportError> {
    if step.action != PoolAction::Add {
        return Ok(false);
    }
    let row = pool.pool_insert().await?;
    pool.pool_update(row.id, step.vm.instance_hash.as_deref(), &step.vm.deployment, PoolStatus::Warm).await?;
    Ok(true)
}
