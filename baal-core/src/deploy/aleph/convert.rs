//! Converting an agent imported from the Python Baal where it runs: its VM is reached (its SSH
//! port looked up on its node, since the Python Baal's records lack it), logged into with Baal's
//! key or, refused, with the Python Baal's (`PYTHON_SSH_PRIVKEY_PATH`), which then installs
//! Baal's; the Python agent is stopped and set aside, its workspace and database copied into
//! ours, and our agent installed, started and checked under the same public name.
//!
//! Invariants:
//! - nothing of the Python agent's is changed or lost: its unit and Caddyfile are copied aside
//!   (`*.python`) before ours replace them, its workspace and `agent.db` (with `-wal`/`-shm`) are
//!   copied, never moved; after a conversion they stay where they were, so a manual rollback
//!   remains possible;
//! - the Python Baal's key serves once, to add Baal's key to root's `authorized_keys`, and Baal's
//!   key is checked to work before anything changes on the VM: every later login (repair,
//!   redeploy) uses Baal's own key;
//! - once the Python agent was stopped, any failure puts it back (`vm-setup.sh unconvert`,
//!   then its health check), and the error says the agent was left as it was, with the reason;
//! - the VM's SSH host key is pinned at first contact, as on every path.

use super::crn::is_hostname_label_list;
use super::error::AlephError;
use super::message::is_item_hash;
use super::ship::{self, Shipper};
use super::ssh::{self, Login};
use super::{AlephDeployer, STEP_CHECK, STEP_HANDOVER, STEP_REACH, STEP_SHIP, at};
use crate::deploy::{AgentSpec, DeployError, DeployReporter};
use crate::domain::Deployment;

/// Attempts at the node's executions list and at SSH, a poll interval apart, before giving up:
/// the VM runs (the Python agent is on it), so a failure is a hiccup or a real outage.
const REACH_ATTEMPTS: u32 = 3;

/// How the operator knows each key (the refusal names them).
const BAALS_KEY: &str = "Baal's key (ALEPH_SSH_PRIVKEY_PATH)";
const PYTHONS_KEY: &str = "the Python Baal's key (PYTHON_SSH_PRIVKEY_PATH)";

/// What `vm-setup.sh convert` prints when the Python agent's database was copied.
const DB_COPIED: &str = "python-agent.db";
/// What `vm-setup.sh unconvert` prints on a VM converted before: our agent's previous version
/// was put back, not the Python agent.
const CONVERTED_BEFORE: &str = "converted-before";
/// What `vm-setup.sh unconvert` prints when nothing had been set aside: the VM was not changed.
const NOTHING_SET_ASIDE: &str = "nothing-set-aside";

impl AlephDeployer {
    /// See [`Deployer::convert`](crate::deploy::Deployer::convert).
    pub(super) async fn convert_agent(
        &self,
        spec: &AgentSpec,
        reporter: &dyn DeployReporter,
    ) -> Result<Deployment, DeployError> {
        let mut facts = spec.existing.clone();
        reporter.step_started(STEP_REACH).await;
        self.locate(reporter, &mut facts).await?;
        let (vm_url, host) = self.import_url(reporter, &mut facts).await?;
        let session = self.log_in(reporter, &mut facts).await?;
        reporter.step_done(STEP_REACH).await;
        let shipper = Shipper {
            session: &session,
            layout: &self.op.config.layout,
            command_timeout: self.op.config.timeouts.command,
        };
        let result = self.take_over(spec, reporter, &shipper, &vm_url, &host).await;
        session.close().await;
        result.map(|()| facts)
    }

    /// Fills in the VM's SSH address from its node's executions list when it is not recorded
    /// (imported agents have no SSH port), and reports it.
    async fn locate(&self, reporter: &dyn DeployReporter, facts: &mut Deployment) -> Result<(), DeployError> {
        let (Some(hash), Some(crn)) = (facts.instance_hash.clone(), facts.crn_url.clone()) else {
            return Err(DeployError::new(
                STEP_REACH.key,
                "the imported agent's VM is unknown (no instance hash or node recorded), so it cannot be converted",
            )
            .permanent());
        };
        if !is_item_hash(&hash) {
            return Err(DeployError::new(
                STEP_REACH.key,
                format!("the recorded instance hash {hash:?} is not an Aleph item hash"),
            )
            .permanent());
        }
        if facts.vm_host.is_some() && facts.ssh_port.is_some() {
            return Ok(());
        }
        let mut attempt = 1;
        let allocation = loop {
            match self.op.crns.allocation(&crn, &hash).await {
                Ok(Some(allocation)) => break allocation,
                Ok(None) => {
                    return Err(DeployError::new(
                        STEP_REACH.key,
                        format!(
                            "the node {crn} does not run the agent's VM {hash} (any more); it cannot be converted there"
                        ),
                    ));
                }
                Err(err) if attempt >= REACH_ATTEMPTS => return Err(at(STEP_REACH.key)(err)),
                Err(err) => tracing::debug!(attempt, error = %err, "the VM's node does not answer yet"),
            }
            attempt += 1;
            tokio::time::sleep(self.op.config.timeouts.poll).await;
        };
        facts.vm_host = Some(allocation.host);
        facts.ssh_port = Some(allocation.ssh_port);
        reporter.facts(facts).await
    }

    /// The URL the agent keeps, and its host for the Caddyfile: the Python agent's when the
    /// gateway still gives that name for the instance (it does, as long as the 2n6.me scheme
    /// stands), else the gateway's (the name that now reaches the VM); the Python agent's when
    /// the gateway does not answer, since that name served until now.
    async fn import_url(
        &self,
        reporter: &dyn DeployReporter,
        facts: &mut Deployment,
    ) -> Result<(String, String), DeployError> {
        let hash = facts.instance_hash.clone().unwrap_or_default();
        let url = match facts.vm_url.clone() {
            None => self.public_url(&hash).await.map_err(at(STEP_REACH.key))?,
            Some(old) => match self.op.crns.gateway_url(&self.op.config.gateway_url, &hash).await {
                Ok(Some(new)) if url_host(&new) == url_host(&old) => old,
                Ok(Some(new)) => {
                    tracing::warn!(old = %old, new = %new, "the gateway names the VM differently from the Python Baal; the agent takes the gateway's name");
                    new
                }
                Ok(None) | Err(_) => {
                    tracing::warn!(url = %old, "the 2n6.me gateway does not answer for the VM; keeping the Python agent's name");
                    old
                }
            },
        };
        let Some(host) = url_host(&url).filter(|host| is_hostname_label_list(host)) else {
            return Err(DeployError::new(
                STEP_REACH.key,
                format!("the agent's address {url:?} has no host name Caddy could serve"),
            )
            .permanent());
        };
        if facts.vm_url.as_deref() != Some(url.as_str()) {
            facts.vm_url = Some(url.clone());
            reporter.facts(facts).await?;
        }
        Ok((url, host))
    }

    /// An SSH session with Baal's key. Refused, with the Python Baal's key (when configured):
    /// Baal's public key is added to root's `authorized_keys` and the session made again with
    /// Baal's key alone, so nothing goes on until Baal's own key is known to work. Pins the host
    /// key at first contact.
    async fn log_in(&self, reporter: &dyn DeployReporter, facts: &mut Deployment) -> Result<ssh::Session, DeployError> {
        let mut keys = vec![Login { key: self.ssh_key.clone(), name: BAALS_KEY }];
        if let Some(python) = &self.python_ssh_key {
            keys.push(Login { key: python.clone(), name: PYTHONS_KEY });
        }
        let (session, used) = match self.connect_with_retries(facts, &keys).await {
            Ok(logged_in) => logged_in,
            Err(AlephError::KeyRefused { .. }) if self.python_ssh_key.is_none() => {
                return Err(DeployError::new(
                    STEP_REACH.key,
                    "the VM refused Baal's SSH key, as VMs the Python Baal created do: set PYTHON_SSH_PRIVKEY_PATH to the \
                     Python Baal's private key (its ALEPH_SSH_PRIVKEY_PATH, ~/.ssh/id_rsa by default) and convert again",
                )
                .permanent());
            }
            Err(err) => return Err(at(STEP_REACH.key)(err)),
        };
        if facts.ssh_host_key.is_none() {
            facts.ssh_host_key = Some(session.host_key.clone());
            reporter.facts(facts).await?;
        }
        if used == 0 {
            return Ok(session);
        }
        tracing::info!(host = ?facts.vm_host, "logged in with the Python Baal's key; installing Baal's");
        let authorized = async {
            let shipper = Shipper {
                session: &session,
                layout: &self.op.config.layout,
                command_timeout: self.op.config.timeouts.command,
            };
            shipper.upload_script().await?;
            shipper.run_with("authorize", Some(self.op.config.ssh_pubkey.trim().as_bytes())).await
        }
        .await;
        session.close().await;
        authorized.map_err(at(STEP_REACH.key))?;
        let ours = [Login { key: self.ssh_key.clone(), name: BAALS_KEY }];
        match self.connect_with_retries(facts, &ours).await {
            Ok((session, _)) => Ok(session),
            Err(err) => Err(DeployError::new(
                STEP_REACH.key,
                format!(
                    "Baal's key (ALEPH_SSH_PUBKEY) was added to root's authorized_keys on the VM, yet logging in with it \
                     failed ({err}); check that ALEPH_SSH_PRIVKEY_PATH matches ALEPH_SSH_PUBKEY"
                ),
            )
            .with_detail(format!("{err:?}"))),
        }
    }

    /// [`ssh::connect_with`] at the recorded address and host key, a few times over when the
    /// connection itself fails; a refused key or another host key ends it at once.
    async fn connect_with_retries(
        &self,
        facts: &Deployment,
        keys: &[Login],
    ) -> Result<(ssh::Session, usize), AlephError> {
        let host = facts.vm_host.clone().unwrap_or_default();
        let port = facts.ssh_port.unwrap_or(22);
        let timeouts = self.op.config.timeouts;
        let mut attempt = 1;
        loop {
            let pinned = facts.ssh_host_key.as_deref();
            match ssh::connect_with(&host, port, keys, pinned, timeouts.ssh_connect).await {
                Ok(logged_in) => return Ok(logged_in),
                Err(err @ (AlephError::KeyRefused { .. } | AlephError::HostKeyChanged { .. })) => return Err(err),
                Err(err) if attempt >= REACH_ATTEMPTS => return Err(err),
                Err(err) => tracing::debug!(attempt, error = %err, "the VM does not answer SSH yet"),
            }
            attempt += 1;
            tokio::time::sleep(timeouts.poll).await;
        }
    }

    /// Hands the VM over to our agent; once the Python agent was stopped, any failure puts it
    /// back and says so.
    async fn take_over(
        &self,
        spec: &AgentSpec,
        reporter: &dyn DeployReporter,
        shipper: &Shipper<'_>,
        vm_url: &str,
        host: &str,
    ) -> Result<(), DeployError> {
        reporter.step_started(STEP_HANDOVER).await;
        // Nothing has changed on the VM if this fails.
        shipper.upload_script().await.map_err(at(STEP_HANDOVER.key))?;
        let Err(err) = self.hand_over_and_check(spec, reporter, shipper, vm_url, host).await else { return Ok(()) };
        tracing::warn!(agent = %spec.agent_id, error = %err, detail = ?err.detail, "converting the agent failed; putting the Python agent back");
        let restored = async {
            let out = shipper.run_with("unconvert", None).await?;
            let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if said != NOTHING_SET_ASIDE {
                shipper.run("health").await?;
            }
            Ok::<_, AlephError>(said)
        }
        .await;
        let message = match restored {
            Ok(said) if said == CONVERTED_BEFORE => format!(
                "updating the converted agent failed ({}); it had been converted before, so its previous version \
                 runs again (the Python agent was not put back: the history since then is Baal's agent's alone)",
                err.message
            ),
            Ok(said) if said == NOTHING_SET_ASIDE => {
                format!("converting the agent failed ({}); nothing on the VM was changed", err.message)
            }
            Ok(_) => format!(
                "converting the agent failed ({}); it was left as it was: the Python agent runs again, with all its files",
                err.message
            ),
            Err(again) => format!(
                "converting the agent failed ({}), and putting the Python agent back failed too ({again}); its files are \
                 untouched under /opt/baal-agent, its unit and Caddyfile kept beside ours as *.python",
                err.message
            ),
        };
        let retryable = err.retryable;
        let error = DeployError::new(err.step, message).with_detail(err.detail.unwrap_or_default());
        Err(if retryable { error } else { error.permanent() })
    }

    /// `convert` (the Python agent stopped, set aside and copied), then our agent shipped with
    /// `PYTHON_AGENT_DB` when there was a database to copy, started, and checked on the VM and
    /// through its public name; the VM is marked converted only then.
    async fn hand_over_and_check(
        &self,
        spec: &AgentSpec,
        reporter: &dyn DeployReporter,
        shipper: &Shipper<'_>,
        vm_url: &str,
        host: &str,
    ) -> Result<(), DeployError> {
        let out = shipper.run_with("convert", None).await.map_err(at(STEP_HANDOVER.key))?;
        let db_copied = String::from_utf8_lossy(&out.stdout).lines().any(|line| line.trim() == DB_COPIED);
        reporter.step_done(STEP_HANDOVER).await;
        reporter.step_started(STEP_SHIP).await;
        let layout = &self.op.config.layout;
        let mut env = ship::agent_env(spec, &self.op.config.agent_defaults, layout);
        if db_copied {
            env = env.with_python_agent_db(ship::python_agent_db(layout));
        }
        shipper.ship(&env, &self.op.config.agent_bin, Some(host)).await.map_err(at(STEP_SHIP.key))?;
        reporter.step_done(STEP_SHIP).await;
        reporter.step_started(STEP_CHECK).await;
        shipper.run("start").await.map_err(at(STEP_CHECK.key))?;
        shipper.run("health").await.map_err(at(STEP_CHECK.key))?;
        self.check_https(vm_url).await.map_err(at(STEP_CHECK.key))?;
        shipper.run("converted").await.map_err(at(STEP_CHECK.key))?;
        reporter.step_done(STEP_CHECK).await;
        Ok(())
    }
}

/// The host of `url`, if it has one.
fn url_host(url: &str) -> Option<String> {
    reqwest::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_owned))
}
