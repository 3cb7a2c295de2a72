//! Deleting an agent: one procedure for every front-end (the bot's Delete button, `baal-cli
//! agents delete`, an embedder's admin tool).
//!
//! Invariants:
//! - nothing is deleted while anyone holds a live lease on the agent (a deployment in this or
//!   another process, or another deletion), and the deletion holds the lease itself until it is
//!   done, so no deployment starts halfway through;
//! - what the agent runs on is torn down before the agent is marked deleted: a failed teardown
//!   leaves it visible and deletable again, never a hidden VM that keeps running and costing;
//! - every deletion is in the agent's history: `delete` `started` (saying who asked), then
//!   `succeeded` or `failed` (saying why).

use std::sync::Arc;
use std::time::Duration;

use super::engine::{Inner, PlatformError};
use super::lease;
use super::messenger::Text;
use crate::deploy::{DeployReporter, Deployer, SilentReporter};
use crate::domain::{Agent, AgentId, Deployment, EventOutcome, EventStep};
use crate::store::{Store, StoreError};

/// How long a deletion's lease lasts between renewals. Only a deletion whose process died waits
/// this long; a live one renews it every quarter.
const DELETION_LEASE: Duration = Duration::from_secs(60);

/// What a deletion did besides marking the agent deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// Its deployer tore down what it ran on.
    TornDown,
    /// Nothing was ever recorded as deployed (no instance, no address), so no deployer was asked.
    NothingToTearDown,
}

/// Why an agent was not deleted. The texts are fit for the person who asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeleteError {
    /// No agent has this id.
    #[error("no agent has the id {0}")]
    NotFound(AgentId),
    /// It was deleted already (perhaps by someone else meanwhile).
    #[error("{name} is already deleted")]
    AlreadyDeleted {
        /// The agent's name.
        name: String,
    },
    /// Someone holds its lease: a deployment (in any process) or another deletion.
    #[error("{name} is being deployed right now; delete it when that finishes (in about a minute)")]
    Busy {
        /// The agent's name.
        name: String,
    },
    /// What it runs on could not be torn down (or no deployer could be set up to do it); nothing
    /// was marked deleted.
    #[error("couldn't release what {name} runs on: {reason}")]
    Teardown {
        /// The agent's name.
        name: String,
        /// Why, in words for the person who asked.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Deletes `agent` on behalf of `by` ("by the owner", "by baal-cli": recorded in its history):
/// takes its lease (refusing while anyone else holds one), tears down what it runs on, then marks
/// it deleted. `deployer` is asked for only when something was deployed, so a tool can delete an
/// agent that never ran without setting a deployer up; an `Err` from it (why none could be set
/// up) refuses the deletion. The teardown's steps go to `reporter`.
pub async fn delete_agent<F>(
    store: &dyn Store,
    agent: AgentId,
    by: &str,
    deployer: F,
    reporter: &dyn DeployReporter,
) -> Result<Deleted, DeleteError>
where
    F: FnOnce() -> Result<Arc<dyn Deployer>, String> + Send,
{
    let found = undeleted(store, agent).await?;
    // A holder of its own, so that even this process's deployment of the agent refuses it.
    let holder = lease::new_holder();
    if !lease::take(store, agent, &holder, DELETION_LEASE).await? {
        return Err(DeleteError::Busy { name: found.name });
    }
    let deletion =
        lease::while_held(store, agent, &holder, DELETION_LEASE, delete_held(store, agent, by, deployer, reporter));
    let outcome = deletion.await.unwrap_or_else(|| {
        Err(DeleteError::Teardown { name: found.name, reason: "another process took the agent over midway".into() })
    });
    lease::release(store, agent, &holder).await;
    outcome
}

/// The deletion proper, under the lease.
async fn delete_held<F>(
    store: &dyn Store,
    id: AgentId,
    by: &str,
    deployer: F,
    reporter: &dyn DeployReporter,
) -> Result<Deleted, DeleteError>
where
    F: FnOnce() -> Result<Arc<dyn Deployer>, String> + Send,
{
    // Read again under the lease: a deployment that just finished may have recorded new facts.
    let agent = undeleted(store, id).await?;
    store.event_record(id, &EventStep::Delete, EventOutcome::Started, Some(by)).await?;
    let deleted = match tear_down(&agent, deployer, reporter).await {
        Ok(deleted) => deleted,
        Err((reason, detail)) => {
            store.event_record(id, &EventStep::Delete, EventOutcome::Failed, Some(&detail)).await?;
            return Err(DeleteError::Teardown { name: agent.name, reason });
        }
    };
    if !store.agent_soft_delete(id).await? {
        return Err(DeleteError::AlreadyDeleted { name: agent.name });
    }
    store.event_record(id, &EventStep::Delete, EventOutcome::Succeeded, None).await?;
    Ok(deleted)
}

/// The agent with `id`, unless it is unknown or already deleted.
async fn undeleted(store: &dyn Store, id: AgentId) -> Result<Agent, DeleteError> {
    let agent = store.agent_get(id).await?.ok_or(DeleteError::NotFound(id))?;
    if agent.deleted {
        return Err(DeleteError::AlreadyDeleted { name: agent.name });
    }
    Ok(agent)
}

/// Tears down what `agent` runs on; on failure, why (for the person who asked) and the detail
/// for its history.
async fn tear_down<F>(agent: &Agent, deployer: F, reporter: &dyn DeployReporter) -> Result<Deleted, (String, String)>
where
    F: FnOnce() -> Result<Arc<dyn Deployer>, String>,
{
    if nothing_deployed(&agent.deployment) {
        return Ok(Deleted::NothingToTearDown);
    }
    let deployer = deployer().map_err(|reason| (reason.clone(), reason))?;
    match deployer.destroy(agent.id, &agent.deployment, reporter).await {
        Ok(()) => Ok(Deleted::TornDown),
        Err(err) => {
            let detail = err.detail.clone().unwrap_or_else(|| err.message.clone());
            Err((err.to_string(), detail))
        }
    }
}

/// Facts that point at nothing: the agent was never started anywhere.
fn nothing_deployed(deployment: &Deployment) -> bool {
    deployment.instance_hash.is_none() && deployment.vm_url.is_none()
}

impl Inner {
    /// The owner's deletion of `agent`, through [`delete_agent`]. `None` when it is deleted;
    /// otherwise what to tell the owner.
    pub(crate) async fn delete_for_owner(&self, agent: &Agent) -> Result<Option<Text>, PlatformError> {
        // This process may be about to deploy it, not having taken the lease yet.
        let outcome = if self.is_in_flight(agent.id) {
            Err(DeleteError::Busy { name: agent.name.clone() })
        } else {
            let deployer = self.deployer.clone();
            delete_agent(self.store.as_ref(), agent.id, "by the owner", move || Ok(deployer), &SilentReporter).await
        };
        let text = match outcome {
            Ok(_) => return Ok(None),
            Err(DeleteError::Store(err)) => return Err(err.into()),
            Err(DeleteError::NotFound(_) | DeleteError::AlreadyDeleted { .. }) => {
                "This agent is already gone.".to_owned()
            }
            Err(DeleteError::Teardown { name, reason }) => {
                format!("Couldn't release what {name} runs on: {reason}\nNothing was deleted; try again in a moment.")
            }
            Err(refusal) => format!("{refusal}."),
        };
        Ok(Some(Text::plain(text)))
    }
}
