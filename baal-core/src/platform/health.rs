//! Healing: every [`PlatformConfig::health_check_interval`](super::PlatformConfig) the platform
//! checks that each running (and down) agent answers `/health`, brings back those that stopped
//! through [`Deployer::repair`](crate::deploy::Deployer::repair), and releases what failed
//! deployments left alone for [`PlatformConfig::release_failed_after`](super::PlatformConfig) still
//! hold.
//!
//! Invariants:
//! - an agent is marked `down` only after [`FAILURES_BEFORE_DOWN`] checks in a row failed, and
//!   only under its lease after one more check there, so its owner is told once, by one process;
//! - a repair runs only under the agent's deployment lease ([`super::lease`]) and this process's
//!   in-flight claim: two bot processes never repair one agent, and a repair never races a
//!   deployment or a deletion;
//! - an attempt is counted in the store's kv area (namespace [`NAMESPACE`]) before it is made,
//!   so a restart neither resets the count nor repeats an attempt early or a notice; at most
//!   [`MAX_REPAIR_ATTEMPTS`], the next one a check interval after the first, doubling (at most an
//!   hour); after the last the agent stays `down` and its owner is told once that `/repair` or a
//!   deletion is the way;
//! - every attempt is in the agent's history as `repair` `started`, the deployer's stages, then
//!   `succeeded` or `failed` (why);
//! - a released deployment keeps its agent (`failed`, its facts cleared so `/repair` deploys
//!   afresh), is in its history as `release`, and its owner is told once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::engine::{Background, Inner, PlatformError};
use super::lease;
use super::messenger::Text;
use super::render::escape_html;
use crate::deploy::{DeployError, DeployReporter, DeployStep, Repaired};
use crate::domain::{Agent, AgentId, AgentRuntime, AgentStatus, Deployment, EventOutcome, EventStep};
use crate::store::{AgentFilter, Store, StoreError};

/// Failed checks in a row that make a running agent `down`: one lost check (a restart, a network
/// blip) is not worth waking its owner.
pub(crate) const FAILURES_BEFORE_DOWN: u32 = 2;
/// Repairs tried before Baal gives up on an agent and leaves it to its owner.
pub(crate) const MAX_REPAIR_ATTEMPTS: u32 = 5;
/// Health checks in flight at once: enough for a large fleet within one interval, few enough for
/// a small machine.
const CONCURRENT_CHECKS: usize = 8;
/// How long one check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait between two repair attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Where each agent's healing state lives in the store's kv area (key: the agent id).
pub(crate) const NAMESPACE: &str = "platform.health";

/// What the scheduler remembers of one agent between rounds (and restarts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct HealthState {
    /// Checks failed in a row while it was running.
    #[serde(default)]
    failures: u32,
    /// Repair attempts made since it went down (counted before each is made).
    #[serde(default)]
    attempts: u32,
    /// No attempt before this.
    #[serde(default)]
    next_attempt: Option<DateTime<Utc>>,
    /// The owner was told Baal gave up; nothing more is tried until someone deploys it.
    #[serde(default)]
    gave_up: bool,
    /// A release failed; the next try is not before this.
    #[serde(default)]
    next_release: Option<DateTime<Utc>>,
}

impl HealthState {
    /// Whether this is what an agent without a stored state has.
    fn is_clear(&self) -> bool {
        *self == HealthState::default()
    }
}

/// The wait before attempt `made + 1`: one interval after the first, doubling, at most an hour.
fn backoff(interval: Duration, made: u32) -> Duration {
    let factor = 1u32.checked_shl(made.saturating_sub(1)).unwrap_or(u32::MAX);
    interval.saturating_mul(factor).min(MAX_BACKOFF.max(interval))
}

fn later(now: DateTime<Utc>, wait: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(wait)
        .ok()
        .and_then(|wait| now.checked_add_signed(wait))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Facts that point at something a deployer may still hold.
fn holds_something(deployment: &Deployment) -> bool {
    deployment.instance_hash.is_some() || deployment.vm_url.is_some()
}

impl Inner {
    /// The health scheduler, to run beside the poller; `None` when checks are turned off.
    pub(crate) fn health_checks(self: Arc<Self>) -> Option<Background> {
        let every = self.config.health_check_interval;
        if every.is_zero() {
            return None;
        }
        Some(Box::pin(async move {
            loop {
                // After an interval, not at once: `start()` has just restored every agent.
                tokio::time::sleep(every).await;
                if let Err(err) = self.health_round().await {
                    tracing::warn!(error = %err, "health round failed; trying again next interval");
                }
            }
        }))
    }

    /// One round: checks every running and down agent, starts the repairs that are due, and
    /// releases old failed deployments.
    async fn health_round(self: &Arc<Self>) -> Result<(), StoreError> {
        let mut states = self.health_states().await?;
        let mut agents = self.store.list_agents(&AgentFilter::all().status(AgentStatus::Running)).await?;
        agents.extend(self.store.list_agents(&AgentFilter::all().status(AgentStatus::Down)).await?);
        let failed = self.store.list_agents(&AgentFilter::all().status(AgentStatus::Failed)).await?;
        let now = Utc::now();
        let work: Vec<(Agent, HealthState)> = agents
            .into_iter()
            .map(|agent| {
                let state = states.remove(&agent.id).unwrap_or_default();
                (agent, state)
            })
            .collect();
        futures_util::stream::iter(work)
            .map(|(agent, state)| async move {
                if let Err(err) = self.check(&agent, state, now).await {
                    tracing::warn!(agent = %agent.id, error = %err, "health check could not be recorded");
                }
            })
            .buffer_unordered(CONCURRENT_CHECKS)
            .collect::<Vec<()>>()
            .await;
        for agent in failed {
            let state = states.remove(&agent.id).unwrap_or_default();
            self.maybe_release(&agent, &state, now);
        }
        // What is left belongs to agents deleted, stopped or being deployed: a new episode starts
        // from nothing.
        for id in states.into_keys() {
            self.store.kv_delete(NAMESPACE, &id.to_string()).await?;
        }
        Ok(())
    }

    /// Every stored healing state, by agent; an unreadable one is dropped (it only delays).
    async fn health_states(&self) -> Result<HashMap<AgentId, HealthState>, StoreError> {
        Ok(self
            .store
            .kv_list(NAMESPACE)
            .await?
            .into_iter()
            .filter_map(|(key, value)| Some((key.parse().ok()?, serde_json::from_slice(&value).ok()?)))
            .collect())
    }

    async fn health_state(&self, agent: AgentId) -> Result<HealthState, StoreError> {
        let raw = self.store.kv_get(NAMESPACE, &agent.to_string()).await?;
        Ok(raw.and_then(|raw| serde_json::from_slice(&raw).ok()).unwrap_or_default())
    }

    async fn save_health(&self, agent: AgentId, state: &HealthState) -> Result<(), StoreError> {
        if state.is_clear() {
            return self.store.kv_delete(NAMESPACE, &agent.to_string()).await;
        }
        let raw = serde_json::to_vec(state).unwrap_or_default();
        self.store.kv_put(NAMESPACE, &agent.to_string(), &raw).await
    }

    /// Whether someone works on `agent` right now (a job or repair here, or any lease holder).
    fn busy(&self, agent: &Agent, now: DateTime<Utc>) -> bool {
        self.is_in_flight(agent.id) || agent.lease.as_ref().is_some_and(|lease| lease.is_live(now))
    }

    /// Whether `agent` answers `/health` at its stored address within [`CHECK_TIMEOUT`].
    pub(crate) async fn answers(&self, agent: &Agent) -> bool {
        self.health_of(agent).await.is_some()
    }

    /// Whether a `down` agent answers again as itself: `/health` takes no secret, and the port a
    /// dead local agent had may serve another agent by now.
    async fn answers_as_itself(&self, agent: &Agent) -> bool {
        self.health_of(agent).await.is_some_and(|health| health.agent_name == agent.name)
    }

    async fn health_of(&self, agent: &Agent) -> Option<crate::proxy::HealthResponse> {
        let endpoint = self.endpoint(agent)?;
        tokio::time::timeout(CHECK_TIMEOUT, self.proxy.health(&endpoint)).await.ok()?.ok()
    }

    /// One agent's check in a round.
    async fn check(
        self: &Arc<Self>,
        agent: &Agent,
        mut state: HealthState,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if self.busy(agent, now) {
            return Ok(());
        }
        match agent.status {
            AgentStatus::Running => {
                if self.answers(agent).await {
                    if !state.is_clear() {
                        self.save_health(agent.id, &HealthState::default()).await?;
                    }
                    return Ok(());
                }
                // Attempts and give-ups of an earlier episode no longer count: it ran since.
                state = HealthState { failures: state.failures + 1, ..HealthState::default() };
                tracing::info!(agent = %agent.id, failures = state.failures, "agent did not answer its health check");
                self.save_health(agent.id, &state).await?;
                if state.failures >= FAILURES_BEFORE_DOWN {
                    self.start_repair(agent.id);
                }
            }
            AgentStatus::Down => {
                // One that came back by itself (a VM that rebooted) is announced even after Baal
                // gave up on it.
                let due = !state.gave_up && state.next_attempt.is_none_or(|at| now >= at);
                if due || self.answers_as_itself(agent).await {
                    self.start_repair(agent.id);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Repairs `agent` in the background, unless this process already works on it.
    fn start_repair(self: &Arc<Self>, agent: AgentId) {
        self.start_leased(agent, "repair", move |inner| async move { inner.heal(agent).await });
    }

    /// Runs `work` in the background under `agent`'s deployment lease and this process's claim,
    /// unless this process already works on it; while another process holds the lease, that one
    /// carries on and `work` does not run.
    fn start_leased<Work, Done>(self: &Arc<Self>, agent: AgentId, what: &'static str, work: Work)
    where
        Work: FnOnce(Arc<Inner>) -> Done + Send + 'static,
        Done: std::future::Future<Output = Result<(), PlatformError>> + Send,
    {
        if !self.claim_in_flight(agent) {
            return;
        }
        let inner = self.clone();
        self.spawn_tracked(async move {
            let (store, holder, length) = (inner.store.as_ref(), inner.holder.as_str(), inner.config.deploy_lease);
            let outcome = match lease::take(store, agent, holder, length).await {
                Ok(true) => {
                    let outcome = lease::while_held(store, agent, holder, length, work(inner.clone())).await;
                    lease::release(store, agent, holder).await;
                    outcome.unwrap_or(Ok(()))
                }
                Ok(false) => Ok(()),
                Err(err) => Err(err.into()),
            };
            inner.release_in_flight(agent);
            if let Err(err) = outcome {
                tracing::error!(agent = %agent, error = %err, "{what} failed");
            }
        });
    }

    /// Under the lease: marks a running agent that still does not answer `down` (telling its
    /// owner), then makes one repair attempt if one is due.
    async fn heal(&self, id: AgentId) -> Result<(), PlatformError> {
        // Read again under the lease: another process may have repaired or deleted it meanwhile.
        let Some(mut agent) = self.store.agent_get(id).await?.filter(|a| !a.deleted) else { return Ok(()) };
        let mut state = self.health_state(id).await?;
        let now = Utc::now();
        match agent.status {
            AgentStatus::Running => {
                if self.answers(&agent).await {
                    self.save_health(id, &HealthState::default()).await?;
                    return Ok(());
                }
                self.store.agent_set_status(id, AgentStatus::Down).await?;
                agent.status = AgentStatus::Down;
                state = HealthState { failures: state.failures, ..HealthState::default() };
                self.save_health(id, &state).await?;
                tracing::warn!(agent = %id, "agent stopped answering; repairing it");
                let text =
                    format!("⚠️ <b>{}</b> stopped answering; Baal is bringing it back.", escape_html(&agent.name));
                self.say(agent.owner_id, Text::html(text)).await;
            }
            AgentStatus::Down if self.answers_as_itself(&agent).await => {
                let back = Repaired::new(agent.deployment.clone(), false);
                return self.repaired(&agent, back, Some("answers again")).await;
            }
            AgentStatus::Down if !state.gave_up && state.next_attempt.is_none_or(|at| now >= at) => {}
            _ => return Ok(()),
        }
        state.attempts += 1;
        state.next_attempt = Some(later(now, backoff(self.config.health_check_interval, state.attempts)));
        self.save_health(id, &state).await?;
        let attempt = format!("attempt {} of {MAX_REPAIR_ATTEMPTS}", state.attempts);
        self.store.event_record(id, &EventStep::Repair, EventOutcome::Started, Some(&attempt)).await?;
        match self.repair_once(&mut agent).await {
            Ok(repaired) => self.repaired(&agent, repaired, None).await,
            Err(err) => self.repair_failed(&agent, state, err).await,
        }
    }

    /// One attempt through the deployer; `Ok` once the agent answers where it now runs.
    async fn repair_once(&self, agent: &mut Agent) -> Result<Repaired, DeployError> {
        let (mut spec, payer) =
            self.spec(agent).await.map_err(|problem| DeployError::new("repair", problem).permanent())?;
        let reporter =
            RepairReporter { store: self.store.clone(), agent: agent.id, facts: Mutex::new(agent.deployment.clone()) };
        // The Python Baal's agent cannot be restarted with our key or our unit: bringing an
        // imported agent back converts it where it runs, and never moves it to a new machine.
        let converting = agent.runtime == AgentRuntime::Python;
        let repaired = if converting {
            // A fresh secret, as for every conversion (see `jobs`), stored once ours answers.
            spec.agent_secret = crate::secrets::generate_token();
            Repaired::new(self.deployer.convert(&spec, &reporter).await?, false)
        } else {
            self.deployer.repair(&spec, &reporter).await?
        };
        let store_failed =
            |err: StoreError| DeployError::new("repair", "Baal could not record the repair").with_detail(err);
        self.store.agent_set_deployment(agent.id, &repaired.deployment).await.map_err(store_failed)?;
        agent.deployment = repaired.deployment.clone();
        if converting {
            let sealed = self.store_token(agent.id, &spec.agent_secret).await.map_err(|err| {
                DeployError::new("repair", "Baal could not record the agent's new secret").with_detail(err)
            })?;
            agent.token_sealed = Some(sealed);
        }
        if !self.answers(agent).await {
            return Err(DeployError::new("health", "the agent does not answer after the repair"));
        }
        if converting {
            self.store.agent_set_runtime(agent.id, AgentRuntime::Baal).await.map_err(store_failed)?;
            agent.runtime = AgentRuntime::Baal;
        }
        self.store.agent_set_payer(agent.id, payer).await.map_err(store_failed)?;
        Ok(repaired)
    }

    /// Back: running, its history and owner told (`detail` for the history, if any).
    async fn repaired(&self, agent: &Agent, repaired: Repaired, detail: Option<&str>) -> Result<(), PlatformError> {
        self.store.agent_set_status(agent.id, AgentStatus::Running).await?;
        let detail = detail.or(repaired.moved.then_some("moved: runs elsewhere with a fresh workspace"));
        self.store.event_record(agent.id, &EventStep::Repair, EventOutcome::Succeeded, detail).await?;
        self.save_health(agent.id, &HealthState::default()).await?;
        tracing::info!(agent = %agent.id, moved = repaired.moved, "agent repaired");
        let mut text = format!("✅ <b>{}</b> is back.", escape_html(&agent.name));
        if repaired.moved {
            text.push_str(
                " Its machine was lost, so it now runs on a new one: the workspace and history it had there \
                 could not be carried over.",
            );
        }
        self.say(agent.owner_id, Text::html(text)).await;
        Ok(())
    }

    async fn repair_failed(
        &self,
        agent: &Agent,
        mut state: HealthState,
        err: DeployError,
    ) -> Result<(), PlatformError> {
        let detail = err.detail.clone().unwrap_or_else(|| err.message.clone());
        self.store.event_record(agent.id, &EventStep::Repair, EventOutcome::Failed, Some(&detail)).await?;
        tracing::warn!(agent = %agent.id, attempt = state.attempts, detail = %detail, "repair attempt failed");
        if state.attempts < MAX_REPAIR_ATTEMPTS && err.retryable {
            return Ok(());
        }
        state.gave_up = true;
        state.next_attempt = None;
        self.save_health(agent.id, &state).await?;
        let text = format!(
            "❌ Baal could not bring <b>{name}</b> back ({attempts} attempt{s}; last: {why}).\n\
             Send <code>/repair {id}</code> to try again, or delete it.",
            name = escape_html(&agent.name),
            attempts = state.attempts,
            s = if state.attempts == 1 { "" } else { "s" },
            why = escape_html(&err.message.chars().take(300).collect::<String>()),
            id = agent.id,
        );
        self.say(agent.owner_id, Text::html(text)).await;
        Ok(())
    }

    /// Starts releasing `agent`'s failed deployment when it has been left alone long enough.
    fn maybe_release(self: &Arc<Self>, agent: &Agent, state: &HealthState, now: DateTime<Utc>) {
        let after = self.config.release_failed_after;
        let quiet = (now - agent.updated_at).to_std().unwrap_or_default();
        if after.is_zero()
            || quiet < after
            || !holds_something(&agent.deployment)
            || state.next_release.is_some_and(|at| now < at)
            || self.busy(agent, now)
        {
            return;
        }
        let id = agent.id;
        self.start_leased(id, "releasing a failed deployment", move |inner| async move { inner.release(id).await });
    }

    /// Under the lease: tears down what a failed deployment holds, from its stored facts.
    async fn release(&self, id: AgentId) -> Result<(), PlatformError> {
        let Some(agent) = self.store.agent_get(id).await?.filter(|a| !a.deleted) else { return Ok(()) };
        if agent.status != AgentStatus::Failed || !holds_something(&agent.deployment) {
            return Ok(());
        }
        let detail = format!("failed for over {}", describe(self.config.release_failed_after));
        self.store.event_record(id, &EventStep::Release, EventOutcome::Started, Some(&detail)).await?;
        let reporter =
            RepairReporter { store: self.store.clone(), agent: id, facts: Mutex::new(agent.deployment.clone()) };
        if let Err(err) = self.deployer.destroy(id, &agent.deployment, &reporter).await {
            let detail = err.detail.clone().unwrap_or_else(|| err.message.clone());
            self.store.event_record(id, &EventStep::Release, EventOutcome::Failed, Some(&detail)).await?;
            tracing::warn!(agent = %id, detail = %detail, "could not release a failed deployment; trying again later");
            let mut state = self.health_state(id).await?;
            state.next_release = Some(later(Utc::now(), self.config.release_failed_after));
            self.save_health(id, &state).await?;
            return Ok(());
        }
        self.store.agent_set_deployment(id, &Deployment::default()).await?;
        self.store.event_record(id, &EventStep::Release, EventOutcome::Succeeded, None).await?;
        self.save_health(id, &HealthState::default()).await?;
        let text = format!(
            "<b>{name}</b> failed to deploy more than {ago} ago, so Baal released what it was deployed on; what was there is \
             gone.\nSend <code>/repair {id}</code> to deploy it afresh, or delete it.",
            name = escape_html(&agent.name),
            ago = describe(self.config.release_failed_after),
        );
        self.say(agent.owner_id, Text::html(text)).await;
        Ok(())
    }
}

/// "1 day", "3 hours", "10 minutes", "5 seconds": the largest whole unit.
fn describe(wait: Duration) -> String {
    let seconds = wait.as_secs();
    let (n, unit) = match seconds {
        86_400.. => (seconds / 86_400, "day"),
        3600.. => (seconds / 3600, "hour"),
        60.. => (seconds / 60, "minute"),
        _ => (seconds, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Records a repair's (or release's) stages as events and stores facts as the deployer reports
/// them, as a deployment job's reporter does, without a progress message: the owner hears only
/// the outcome.
struct RepairReporter {
    store: Arc<dyn Store>,
    agent: AgentId,
    facts: Mutex<Deployment>,
}

#[async_trait]
impl DeployReporter for RepairReporter {
    async fn step_started(&self, step: DeployStep) {
        if let Err(err) = self.store.event_record(self.agent, &step.key.into(), EventOutcome::Started, None).await {
            tracing::warn!(error = %err, "could not record a repair step");
        }
    }

    async fn step_done(&self, step: DeployStep) {
        if let Err(err) = self.store.event_record(self.agent, &step.key.into(), EventOutcome::Succeeded, None).await {
            tracing::warn!(error = %err, "could not record a repair step");
        }
    }

    async fn facts(&self, deployment: &Deployment) -> Result<(), DeployError> {
        let merged = {
            let mut facts = self.facts.lock().map_err(|_| DeployError::new("repair", "internal error"))?;
            if *deployment == Deployment::default() {
                *facts = Deployment::default();
            } else {
                super::jobs::merge(&mut facts, deployment);
            }
            facts.clone()
        };
        self.store
            .agent_set_deployment(self.agent, &merged)
            .await
            .map_err(|err| DeployError::new("repair", "Baal could not record the repair").with_detail(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_back_off_doubling_up_to_an_hour() {
        let minute = Duration::from_secs(60);
        let waits: Vec<u64> = (1..=8).map(|made| backoff(minute, made).as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(backoff(minute, 200), MAX_BACKOFF, "no overflow");
        assert_eq!(backoff(Duration::from_secs(7200), 1), Duration::from_secs(7200), "never shorter than a check");
    }

    #[test]
    fn a_state_from_an_earlier_release_reads_back_and_old_fields_default() {
        let state: HealthState = serde_json::from_str(r#"{"failures":1}"#).unwrap();
        assert_eq!(state, HealthState { failures: 1, ..HealthState::default() });
        assert!(HealthState::default().is_clear());
        assert_eq!(describe(Duration::from_secs(86_400)), "1 day");
        assert_eq!(describe(Duration::from_secs(2)), "2 seconds");
    }
}
