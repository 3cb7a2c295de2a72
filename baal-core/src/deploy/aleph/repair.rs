//! Bringing back an agent that stopped answering: restart its service over SSH, and when its VM
//! cannot be reached any more, move the agent to a fresh instance on another node.
//!
//! Invariants:
//! - a VM presenting another host key is never taken for lost: that may be someone else on its
//!   address; the repair fails and says so, and nothing is forgotten;
//! - the old instance is forgotten before a new one is created, and its hash stays recorded until
//!   the network has forgotten it, so at every point the database knows every instance the wallet
//!   pays for (the new hash is recorded before it is posted, as for any deployment);
//! - the new instance is never pinned to the lost node (left out of this attempt, and blacklisted
//!   like any node that failed).

use super::ship::Shipper;
use super::{AlephDeployer, STEP_FORGET, STEP_HEALTH, STEP_HTTPS, STEP_START, at, error::AlephError, ssh};
use crate::deploy::{AgentSpec, DeployError, DeployReporter, Deployer, Repaired};
use crate::domain::Deployment;

/// SSH attempts before a VM counts as unreachable (a poll interval apart): one refused connection
/// may be a VM restarting its SSH server.
const REACH_ATTEMPTS: u32 = 3;

impl AlephDeployer {
    /// See [`Deployer::repair`]: restart, re-ship if the restart does not help, move if the VM is
    /// gone.
    pub(super) async fn repair_agent(
        &self,
        spec: &AgentSpec,
        reporter: &dyn DeployReporter,
    ) -> Result<Repaired, DeployError> {
        let mut facts = spec.existing.clone();
        if facts.instance_hash.is_none()
            || facts.vm_host.is_none()
            || facts.ssh_port.is_none()
            || facts.vm_url.is_none()
        {
            // Never got as far as a running agent: finish the deployment instead.
            return self.deploy(spec, reporter).await.map(|deployment| Repaired::new(deployment, false));
        }
        let Some(session) = self.reach(reporter, &mut facts).await? else {
            return self.move_agent(spec, reporter, facts).await;
        };
        let restarted = self.restart(&session, reporter).await;
        session.close().await;
        match restarted {
            Ok(()) => {
                let url = facts.vm_url.clone().unwrap_or_default();
                reporter.step_started(STEP_HTTPS).await;
                self.check_https(&url).await.map_err(at(STEP_HTTPS.key))?;
                reporter.step_done(STEP_HTTPS).await;
            }
            Err(err) => {
                // The VM answers but the agent does not come back: install it again (binary,
                // settings, unit), rolling back if that fails too.
                tracing::warn!(agent = %spec.agent_id, error = %err, detail = ?err.detail, "restarting the agent did not bring it back; shipping it again");
                self.ship_and_check(spec, reporter, &mut facts, true).await?;
            }
        }
        Ok(Repaired::new(facts, false))
    }

    /// An SSH session with the agent's VM, or `None` when the VM cannot be reached: SSH refused or
    /// timing out and the node not showing it at another address. A VM whose node moved its SSH
    /// port (it restarted it) is followed there, and its new address reported.
    async fn reach(
        &self,
        reporter: &dyn DeployReporter,
        facts: &mut Deployment,
    ) -> Result<Option<ssh::Session>, DeployError> {
        if let Some(session) = self.try_ssh(facts).await? {
            return Ok(Some(session));
        }
        let (Some(crn), Some(hash)) = (facts.crn_url.clone(), facts.instance_hash.clone()) else { return Ok(None) };
        match self.op.crns.allocation(&crn, &hash).await {
            Ok(Some(allocation))
                if Some(&allocation.host) != facts.vm_host.as_ref() || Some(allocation.ssh_port) != facts.ssh_port =>
            {
                facts.vm_host = Some(allocation.host);
                facts.ssh_port = Some(allocation.ssh_port);
                reporter.facts(facts).await?;
                self.try_ssh(facts).await
            }
            Ok(Some(_)) => Ok(None),
            Ok(None) => {
                tracing::warn!(%crn, %hash, "the node no longer runs the agent's VM");
                Ok(None)
            }
            Err(err) => {
                tracing::warn!(%crn, error = %err, "the agent's node does not answer");
                Ok(None)
            }
        }
    }

    /// A few connection attempts at the recorded address, pinned to the recorded host key.
    async fn try_ssh(&self, facts: &Deployment) -> Result<Option<ssh::Session>, DeployError> {
        let (Some(host), Some(port)) = (facts.vm_host.as_deref(), facts.ssh_port) else { return Ok(None) };
        let timeouts = self.op.config.timeouts;
        for attempt in 1..=REACH_ATTEMPTS {
            let pinned = facts.ssh_host_key.as_deref();
            match ssh::connect(host, port, self.ssh_key.clone(), pinned, timeouts.ssh_connect).await {
                Ok(session) => return Ok(Some(session)),
                Err(err @ AlephError::HostKeyChanged { .. }) => return Err(at(STEP_START.key)(err)),
                Err(err) => tracing::debug!(attempt, error = %err, "the agent's VM does not answer SSH"),
            }
            if attempt < REACH_ATTEMPTS {
                tokio::time::sleep(timeouts.poll).await;
            }
        }
        Ok(None)
    }

    /// `systemctl restart baal-agent` (through `vm-setup.sh start`), then the health check on
    /// the VM.
    async fn restart(&self, session: &ssh::Session, reporter: &dyn DeployReporter) -> Result<(), DeployError> {
        let shipper =
            Shipper { session, layout: &self.op.config.layout, command_timeout: self.op.config.timeouts.command };
        reporter.step_started(STEP_START).await;
        shipper.run("start").await.map_err(at(STEP_START.key))?;
        reporter.step_done(STEP_START).await;
        reporter.step_started(STEP_HEALTH).await;
        shipper.run("health").await.map_err(at(STEP_HEALTH.key))?;
        reporter.step_done(STEP_HEALTH).await;
        Ok(())
    }

    /// The VM is lost: forget it, then deploy the agent on a fresh instance on another node.
    async fn move_agent(
        &self,
        spec: &AgentSpec,
        reporter: &dyn DeployReporter,
        facts: Deployment,
    ) -> Result<Repaired, DeployError> {
        let hash = facts.instance_hash.clone().unwrap_or_default();
        let lost = facts.crn_url.clone();
        tracing::warn!(agent = %spec.agent_id, %hash, crn = ?lost, "the agent's VM cannot be reached; moving the agent to another node");
        if let Some(crn) = &lost {
            self.blacklist.add(crn, self.op.config.blacklist_ttl);
        }
        reporter.step_started(STEP_FORGET).await;
        self.op.forget(&hash).await.map_err(|err| {
            let err = at(STEP_FORGET.key)(err);
            let message =
                format!("the agent's VM is unreachable and releasing it failed ({}); retry later", err.message);
            DeployError { message, ..err }
        })?;
        reporter.step_done(STEP_FORGET).await;
        // Not erased on its node: the node is unreachable, and cleans up forgotten VMs itself.
        self.pool_forget_rows(&hash).await;
        let mut fresh = Deployment::default();
        reporter.facts(&fresh).await?;
        self.provision(&spec.name, reporter, &mut fresh, lost.as_deref()).await?;
        // On failure the new VM stays recorded where it stopped: the next repair resumes on it.
        self.ship_and_check(spec, reporter, &mut fresh, false).await?;
        Ok(Repaired::new(fresh, true))
    }
}
