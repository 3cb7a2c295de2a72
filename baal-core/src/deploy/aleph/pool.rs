//! The warm pool: VMs created and prepared (Caddy, user, directories, pinned host key) ahead of
//! time, so a deployment only ships the agent.
//!
//! Invariants (on top of the store's atomic claim, which hands a VM to one deployment only):
//! - once a claimed VM's facts are reported for an agent, the VM is that agent's: whatever the
//!   outcome, its row becomes `deployed` for the agent and never `warm` again (repair resumes on
//!   it, delete forgets it);
//! - a row leaves the table only when its VM serves an agent and the agent is destroyed, or once
//!   the network has forgotten its instance; a VM whose FORGET failed stays `failed` and is
//!   retried by the cleanup.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use futures_util::StreamExt as _;

use super::ship::Shipper;
use super::{AlephDeployer, at};
use crate::deploy::{DeployError, DeployReporter, DeployStep};
use crate::domain::{AgentId, Deployment, PoolStatus, PoolVm};

/// Provisioning rows older than this were abandoned by a crash.
const ABANDONED_PROVISIONING: Duration = Duration::from_secs(2 * 3600);
/// Claims older than this without an outcome were abandoned by a crash.
const ABANDONED_CLAIM: Duration = Duration::from_secs(10 * 60);

/// The agent id a retirement claim is made for (no agent has id 0).
const RETIREMENT: AgentId = AgentId(0);

/// Records a pool VM's facts on its row while it is being provisioned.
struct PoolRowReporter<'a> {
    deployer: &'a AlephDeployer,
    id: i64,
}

#[async_trait]
impl DeployReporter for PoolRowReporter<'_> {
    async fn step_started(&self, _step: DeployStep) {}
    async fn step_done(&self, _step: DeployStep) {}
    async fn facts(&self, deployment: &Deployment) -> Result<(), DeployError> {
        self.deployer
            .store
            .pool_update(self.id, deployment.instance_hash.as_deref(), deployment, PoolStatus::Provisioning)
            .await
            .map_err(|e| DeployError::new("pool", format!("cannot record the pool VM: {e}")))
    }
}

fn older_than(at: Option<chrono::DateTime<Utc>>, age: Duration) -> bool {
    let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
    at.is_some_and(|at| Utc::now() - at > age)
}

/// What one replenish round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolRound {
    /// VMs that became warm.
    pub created: usize,
    /// Provisions that failed (their VMs forgotten, or left `failed` for the next cleanup).
    pub failed: usize,
    /// VMs forgotten and removed by the cleanup.
    pub retired: usize,
}

impl AlephDeployer {
    /// Claims a warm VM for `agent` and reports it as the agent's; `None` when the pool is empty.
    pub(super) async fn pool_take(
        &self,
        agent: AgentId,
        reporter: &dyn DeployReporter,
        facts: &mut Deployment,
    ) -> Result<Option<i64>, DeployError> {
        let vm = match self.store.pool_claim(agent).await {
            Ok(Some(vm)) => vm,
            Ok(None) => return Ok(None),
            Err(err) => {
                tracing::warn!(error = %err, "cannot claim a pool VM; creating one");
                return Ok(None);
            }
        };
        let mut pooled = vm.deployment.clone();
        pooled.instance_hash = vm.instance_hash.clone();
        if pooled.instance_hash.is_none() || pooled.vm_host.is_none() || pooled.ssh_host_key.is_none() {
            let _ = self.store.pool_set_status(vm.id, PoolStatus::Failed, None).await;
            return Ok(None);
        }
        if let Err(err) = reporter.facts(&pooled).await {
            // Not recorded for the agent, so no agent points at it: it may serve another.
            let _ = self.store.pool_set_status(vm.id, PoolStatus::Warm, None).await;
            return Err(err);
        }
        *facts = pooled;
        Ok(Some(vm.id))
    }

    /// After a deployment on a pool VM, success or not: the VM is the agent's.
    pub(super) async fn pool_settle(&self, id: i64, agent: AgentId) {
        if let Err(err) = self.store.pool_set_status(id, PoolStatus::Deployed, Some(agent)).await {
            tracing::warn!(id, error = %err, "cannot mark the pool VM as deployed; the cleanup will");
        }
    }

    /// Drops the pool rows of a forgotten instance.
    pub(super) async fn pool_forget_rows(&self, hash: &str) {
        let Ok(rows) = self.store.pool_list().await else { return };
        for row in rows.into_iter().filter(|r| r.instance_hash.as_deref() == Some(hash)) {
            let _ = self.store.pool_remove(row.id).await;
        }
    }

    /// Forgets a pool VM (if it has an instance) and removes its row; on failure the row stays
    /// `failed` for the next cleanup.
    async fn pool_retire(&self, id: i64, hash: Option<&str>) -> bool {
        if let Some(hash) = hash
            && let Err(err) = self.op.forget(hash).await
        {
            tracing::warn!(id, error = %err, "cannot forget a pool VM; will retry");
            let _ = self.store.pool_set_status(id, PoolStatus::Failed, None).await;
            return false;
        }
        self.store.pool_remove(id).await.is_ok()
    }

    /// Creates one warm VM: instance, network, SSH (host key pinned), `prepare`, public name.
    async fn pool_provision_one(&self) -> Result<(), DeployError> {
        let row = self.store.pool_insert().await.map_err(|e| DeployError::new("pool", e.to_string()))?;
        let reporter = PoolRowReporter { deployer: self, id: row.id };
        let mut facts = Deployment::default();
        let result = async {
            self.provision(&format!("pool-{}", row.id), &reporter, &mut facts, None).await?;
            let session = self.connect_vm(&reporter, &mut facts).await?;
            let shipper = Shipper {
                session: &session,
                layout: &self.op.config.layout,
                command_timeout: self.op.config.timeouts.command,
            };
            let prepared = shipper.prepare().await.map_err(at("prepare"));
            session.close().await;
            prepared?;
            let hash = facts.instance_hash.clone().unwrap_or_default();
            facts.vm_url = Some(self.public_url(&hash).await.map_err(at("prepare"))?);
            Ok::<_, DeployError>(())
        }
        .await;
        match result {
            Ok(()) => self
                .store
                .pool_update(row.id, facts.instance_hash.as_deref(), &facts, PoolStatus::Warm)
                .await
                .map_err(|e| DeployError::new("pool", e.to_string())),
            Err(err) => {
                self.pool_retire(row.id, facts.instance_hash.as_deref()).await;
                Err(err)
            }
        }
    }

    /// One cleanup and replenish round: retries forgetting failed VMs, resolves abandoned claims
    /// and provisions, retires warm VMs past the maximum age, then provisions up to the minimum
    /// (two at a time, never above the maximum).
    pub async fn pool_round(&self) -> Result<PoolRound, DeployError> {
        let mut round = PoolRound::default();
        let pool = self.op.config.pool;
        let store_error = |e: crate::store::StoreError| DeployError::new("pool", e.to_string());
        for row in self.store.pool_list().await.map_err(store_error)? {
            match row.status {
                PoolStatus::Failed => {
                    round.retired += usize::from(self.pool_retire(row.id, row.instance_hash.as_deref()).await)
                }
                PoolStatus::Provisioning if older_than(Some(row.created_at), ABANDONED_PROVISIONING) => {
                    round.retired += usize::from(self.pool_retire(row.id, row.instance_hash.as_deref()).await);
                }
                PoolStatus::Claimed if older_than(row.claimed_at.or(Some(row.created_at)), ABANDONED_CLAIM) => {
                    self.resolve_claim(&row).await;
                }
                _ => {}
            }
        }
        round.retired += self.retire_old_warm(pool.max_age).await;
        let rows = self.store.pool_list().await.map_err(store_error)?;
        let have = rows.iter().filter(|r| matches!(r.status, PoolStatus::Warm | PoolStatus::Provisioning)).count();
        let wanted = (pool.min_size as usize).saturating_sub(have).min((pool.max_size as usize).saturating_sub(have));
        let results: Vec<_> = futures_util::stream::iter(0..wanted)
            .map(|_| self.pool_provision_one())
            .buffer_unordered(2)
            .collect()
            .await;
        for result in results {
            match result {
                Ok(()) => round.created += 1,
                Err(err) => {
                    tracing::warn!(error = %err, detail = ?err.detail, "provisioning a pool VM failed");
                    round.failed += 1;
                }
            }
        }
        Ok(round)
    }

    /// A claim whose deployment vanished: the VM is the agent's if the agent points at it, else
    /// it was never used and goes back to `warm`.
    async fn resolve_claim(&self, row: &PoolVm) {
        let points_at_it = match row.agent_id {
            Some(agent) if agent != RETIREMENT => match self.store.agent_instance_hash(agent).await {
                Ok(hash) => hash.is_some() && hash == row.instance_hash,
                Err(_) => return,
            },
            _ => false,
        };
        let status = if points_at_it { PoolStatus::Deployed } else { PoolStatus::Warm };
        let agent = if points_at_it { row.agent_id } else { None };
        let _ = self.store.pool_set_status(row.id, status, agent).await;
    }

    /// Retires warm VMs older than `max_age`, taking each through an atomic claim so that a
    /// deployment can never get a VM that is being forgotten.
    async fn retire_old_warm(&self, max_age: Duration) -> usize {
        let mut retired = 0;
        loop {
            let Ok(rows) = self.store.pool_list().await else { return retired };
            if !rows.iter().any(|r| r.status == PoolStatus::Warm && older_than(Some(r.created_at), max_age)) {
                return retired;
            }
            let Ok(Some(vm)) = self.store.pool_claim(RETIREMENT).await else { return retired };
            if !older_than(Some(vm.created_at), max_age) {
                // Someone claimed the old one first; this one is young, give it back.
                let _ = self.store.pool_set_status(vm.id, PoolStatus::Warm, None).await;
                return retired;
            }
            if self.pool_retire(vm.id, vm.instance_hash.as_deref()).await {
                retired += 1;
            }
        }
    }

    /// Runs [`AlephDeployer::pool_round`] every `POOL_REPLENISH_INTERVAL` until the task is
    /// dropped. Does nothing when the pool is disabled.
    pub async fn run_pool(&self) {
        if !self.op.config.pool.enabled {
            return;
        }
        loop {
            match self.pool_round().await {
                Ok(round) => tracing::info!(?round, "pool round"),
                Err(err) => tracing::warn!(error = %err, "pool round failed"),
            }
            tokio::time::sleep(self.op.config.pool.interval).await;
        }
    }
}
