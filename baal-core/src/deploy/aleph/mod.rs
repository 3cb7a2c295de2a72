//! The Aleph Cloud deployer: one VM per agent, paid with credits, the agent shipped over SSH,
//! HTTPS by Caddy on the agent's `*.2n6.me` name.
//!
//! A first deployment: pick a CRN (filters and scoring in `crn`), sign an INSTANCE pinned to it
//! and report its hash *before* posting, post and wait until it is processed (a refusal ends the
//! wait at once, with the network's reason told in the owner's words), tell the CRN to
//! start it and read its network from the CRN's executions list, then SSH in (pinning the host
//! key at first contact), run `vm-setup.sh` (Caddy, user, checked binary, settings, hardened
//! unit), restart, and check health on the VM and through HTTPS. A CRN that fails is blacklisted
//! for a while, its instance forgotten, and the next one tried.
//!
//! A repair (`repair`) restarts the agent's service over SSH; when the VM cannot be reached any
//! more, it forgets the instance and deploys the agent on a fresh one on another node. The
//! wallet's instances are compared with the database by [`reconcile`]. An agent imported from the
//! Python Baal is converted where it runs (`convert`): the Python agent is set aside, its files
//! copied into ours, and put back if ours does not become healthy.
//!
//! Invariants:
//! - the instance hash is reported through [`DeployReporter::facts`] before any step that could
//!   fail, and cleared only once the network has forgotten the instance or refused it (a refused
//!   instance never existed: nothing to forget, nothing billed);
//! - a VM's SSH host key is pinned at first contact and every later connection must match it;
//! - a redeploy that fails its health check rolls back to the previous binary and settings;
//! - teardown forgets the instance (billing stops even if the CRN is down), then erases it on
//!   the CRN as a best effort;
//! - pool VMs serve at most one agent, never return to the pool once an agent points at them,
//!   and leave the pool only to serve an agent or forgotten (`pool`).

pub(crate) mod api;
mod convert;
pub(crate) mod crn;
pub(crate) mod error;
pub mod message;
pub(crate) mod pool;
pub mod reconcile;
mod repair;
pub(crate) mod ship;
pub mod sign;
pub(crate) mod ssh;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use russh::keys::PrivateKey;

use self::api::{CcnClient, FinalStatus};
use self::crn::{Allocation, Blacklist, CrnClient};
use self::error::{AlephError, Rejection};
use self::message::{InstanceRequest, VmSize, instance_message, is_item_hash, now_seconds};
use self::ship::Shipper;
pub use self::ship::VmLayout;
use self::sign::EthAccount;
use super::{AgentSpec, DeployError, DeployReporter, DeployStep, Deployer, Repaired};
use crate::agent_env::AgentDefaults;
use crate::config::Settings;
use crate::domain::{AgentId, Deployment};
use crate::store::PoolStore;

/// Create the instance message and wait until the network has processed it.
pub const STEP_PROVISION: DeployStep = DeployStep { key: "provision", label: "Create the VM" };
/// Start the VM on its node and wait for its network.
pub const STEP_ALLOCATE: DeployStep = DeployStep { key: "allocate", label: "Start the VM" };
/// SSH in and install the agent, its settings, its service and Caddy.
pub const STEP_SHIP: DeployStep = DeployStep { key: "ship", label: "Install the agent" };
/// Restart the agent's service.
pub const STEP_START: DeployStep = DeployStep { key: "start", label: "Start the agent" };
/// The agent answers on the VM.
pub const STEP_HEALTH: DeployStep = DeployStep { key: "health", label: "Check the agent" };
/// The agent answers through its public HTTPS name.
pub const STEP_HTTPS: DeployStep = DeployStep { key: "https", label: "Check HTTPS" };
/// Conversion of an imported Python agent: find its VM (its SSH port from its node) and log in,
/// installing Baal's SSH key with the Python Baal's when the VM refuses Baal's.
pub const STEP_REACH: DeployStep = DeployStep { key: "reach", label: "Reach the VM" };
/// Conversion: stop the Python agent, keep its unit and Caddyfile aside, copy its workspace and
/// history into ours.
pub const STEP_HANDOVER: DeployStep = DeployStep { key: "handover", label: "Set the Python agent aside" };
/// Conversion: start our agent and check it on the VM and through HTTPS.
pub const STEP_CHECK: DeployStep = DeployStep { key: "check", label: "Check the agent" };
/// Teardown: the FORGET message.
pub const STEP_FORGET: DeployStep = DeployStep { key: "forget", label: "Release the VM" };
/// Teardown: erase the VM's disks on its node.
pub const STEP_ERASE: DeployStep = DeployStep { key: "erase", label: "Erase the VM" };

const STEPS: &[DeployStep] = &[STEP_PROVISION, STEP_ALLOCATE, STEP_SHIP, STEP_START, STEP_HEALTH, STEP_HTTPS];
const CONVERT_STEPS: &[DeployStep] = &[STEP_REACH, STEP_HANDOVER, STEP_SHIP, STEP_CHECK];

/// How long each phase may take. The defaults fit real Aleph nodes; tests shrink them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeouts {
    /// One HTTP request to the CCN, the CRN list or the gateway.
    pub http: Duration,
    /// A posted message reaching its final status.
    pub message: Duration,
    /// Between two status or allocation polls.
    pub poll: Duration,
    /// The CRN's answer to the start notification (it may download the rootfs first).
    pub notify: Duration,
    /// The VM's network appearing in the CRN's executions list.
    pub allocation: Duration,
    /// SSH becoming reachable after allocation (VMs boot in 1–5 min).
    pub ssh_ready: Duration,
    /// One SSH connection attempt.
    pub ssh_connect: Duration,
    /// One remote command (installing Caddy can take minutes).
    pub command: Duration,
    /// The agent answering through HTTPS (Caddy obtains its certificate first).
    pub https: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            http: Duration::from_secs(30),
            message: Duration::from_secs(120),
            poll: Duration::from_secs(5),
            notify: Duration::from_secs(60),
            allocation: Duration::from_secs(300),
            ssh_ready: Duration::from_secs(600),
            ssh_connect: Duration::from_secs(20),
            command: Duration::from_secs(600),
            https: Duration::from_secs(300),
        }
    }
}

/// Pool settings (`POOL_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolConfig {
    /// Whether deployments take warm VMs and the replenisher runs.
    pub enabled: bool,
    /// Warm (or provisioning) VMs to keep.
    pub min_size: u32,
    /// Never more warm plus provisioning VMs than this.
    pub max_size: u32,
    /// Between two replenish rounds.
    pub interval: Duration,
    /// Warm VMs older than this are forgotten.
    pub max_age: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            enabled: false,
            min_size: 5,
            max_size: 10,
            interval: Duration::from_secs(30),
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// Everything the Aleph deployer needs besides the wallet and the store.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AlephConfig {
    /// The CCN (`ALEPH_API_URL`).
    pub api_url: String,
    /// `ALEPH_CRN_LIST_URL`.
    pub crn_list_url: String,
    /// `ALEPH_DOMAIN_GATEWAY_URL`.
    pub gateway_url: String,
    /// `ALEPH_CHANNEL`.
    pub channel: String,
    /// `ALEPH_SSH_PUBKEY`, put on every VM.
    pub ssh_pubkey: String,
    /// `ALEPH_SSH_PRIVKEY_PATH` (OpenSSH format, no passphrase).
    pub ssh_key_path: PathBuf,
    /// `PYTHON_SSH_PRIVKEY_PATH`: the Python Baal's key, offered after Baal's own when converting
    /// a VM imported from there (`None`: not offered).
    pub python_ssh_key_path: Option<PathBuf>,
    /// `BAAL_AGENT_BIN`: the release `baal-agent` shipped to VMs (a Linux x86_64 build).
    pub agent_bin: PathBuf,
    /// VM size (1 vCPU, 2 GiB, 20 GiB by default).
    pub size: VmSize,
    /// Rootfs image hash (Ubuntu 24.04 by default).
    pub rootfs: String,
    /// Paths and user on the VM.
    pub layout: VmLayout,
    /// Phase time limits.
    pub timeouts: Timeouts,
    /// CRNs tried per deployment.
    pub max_crn_attempts: usize,
    /// How long a failing CRN is skipped.
    pub blacklist_ttl: Duration,
    /// The warm pool.
    pub pool: PoolConfig,
    /// What every agent is given besides its own spec (heartbeat interval, Brave key).
    pub agent_defaults: AgentDefaults,
}

impl AlephConfig {
    /// A configuration with the given endpoints and keys and every other value at its default.
    pub fn new(
        api_url: impl Into<String>,
        crn_list_url: impl Into<String>,
        gateway_url: impl Into<String>,
        ssh_pubkey: impl Into<String>,
        ssh_key_path: impl Into<PathBuf>,
        agent_bin: impl Into<PathBuf>,
    ) -> AlephConfig {
        AlephConfig {
            api_url: api_url.into(),
            crn_list_url: crn_list_url.into(),
            gateway_url: gateway_url.into(),
            channel: "BAAL".into(),
            ssh_pubkey: ssh_pubkey.into(),
            ssh_key_path: ssh_key_path.into(),
            python_ssh_key_path: None,
            agent_bin: agent_bin.into(),
            size: VmSize::default(),
            rootfs: message::UBUNTU_24_ROOTFS.into(),
            layout: VmLayout::default(),
            timeouts: Timeouts::default(),
            max_crn_attempts: 5,
            blacklist_ttl: Duration::from_secs(600),
            pool: PoolConfig::default(),
            agent_defaults: AgentDefaults::default(),
        }
    }
}

/// The operator's side of Aleph Cloud without SSH or a store: signs messages, reads the balance
/// and the CRN list. The deployer is built on it; `baal-cli aleph` uses it alone.
pub struct AlephOperator {
    account: EthAccount,
    config: AlephConfig,
    ccn: CcnClient,
    crns: CrnClient,
}

impl std::fmt::Debug for AlephOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlephOperator")
            .field("address", &self.account.address())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Deploys agents to Aleph Cloud VMs.
pub struct AlephDeployer {
    op: AlephOperator,
    blacklist: Blacklist,
    ssh_key: Arc<PrivateKey>,
    /// The Python Baal's key (`PYTHON_SSH_PRIVKEY_PATH`), for converting its VMs only.
    python_ssh_key: Option<Arc<PrivateKey>>,
    /// The warm pool's rows: all the deployer keeps in a database.
    store: Arc<dyn PoolStore>,
}

impl std::fmt::Debug for AlephDeployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlephDeployer").field("operator", &self.op).finish_non_exhaustive()
    }
}

fn config_error(message: impl Into<String>) -> DeployError {
    DeployError::new("deploy", message).permanent()
}

/// Turns a deployer error into what the platform records and shows. A refusal is told in the
/// owner's words (whose side it is on, what happens next); the operator's words go to the detail.
fn at(step: &'static str) -> impl Fn(AlephError) -> DeployError {
    move |err| {
        let retryable = err.retryable();
        let error = match &err {
            AlephError::Rejected { kind, reason, .. } => {
                DeployError::new(step, reason.for_owner(kind)).with_detail(format!("{err} ({err:?})"))
            }
            _ => DeployError::new(step, err.to_string()).with_detail(format!("{err:?}")),
        };
        if retryable { error } else { error.permanent() }
    }
}

impl AlephOperator {
    /// An operator view for `account` (the wallet that signs and pays) with `config`.
    pub fn new(account: EthAccount, config: AlephConfig) -> Result<AlephOperator, DeployError> {
        let http = crate::http_client_builder()
            .timeout(config.timeouts.http)
            .connect_timeout(config.timeouts.http)
            .user_agent(concat!("baal/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| config_error(format!("cannot build the HTTP client: {e}")))?;
        Ok(AlephOperator {
            ccn: CcnClient::new(http.clone(), &config.api_url, config.timeouts.poll),
            crns: CrnClient { http },
            account,
            config,
        })
    }

    /// The operator the settings describe (`ALEPH_*`, `POOL_*`, `BAAL_AGENT_BIN` if set).
    pub fn from_settings(settings: &Settings) -> Result<AlephOperator, DeployError> {
        let (key, ssh_pubkey) = settings.require_aleph().map_err(|e| config_error(e.to_string()))?;
        let account = EthAccount::from_hex(key).map_err(|e| config_error(e.to_string()))?;
        let mut config = AlephConfig::new(
            &settings.aleph_api_url,
            &settings.aleph_crn_list_url,
            &settings.aleph_domain_gateway_url,
            ssh_pubkey,
            &settings.aleph_ssh_privkey_path,
            settings.agent_bin.clone().unwrap_or_default(),
        );
        config.channel = settings.aleph_channel.clone();
        config.python_ssh_key_path = settings.python_ssh_privkey_path.clone();
        config.agent_defaults = settings.agent_defaults();
        config.size = VmSize {
            vcpus: settings.aleph_vm_vcpus,
            memory_mib: settings.aleph_vm_memory_mib,
            disk_mib: settings.aleph_vm_disk_mib,
        };
        if !(1..=256).contains(&config.size.vcpus) {
            return Err(config_error("ALEPH_VM_VCPUS: must be between 1 and 256"));
        }
        if !(128..=1_048_576).contains(&config.size.memory_mib) {
            return Err(config_error("ALEPH_VM_MEMORY_MIB: must be between 128 and 1048576"));
        }
        // Smaller than the image is rejected by the network (error 304).
        if !(20_480..=1_953_125).contains(&config.size.disk_mib) {
            return Err(config_error("ALEPH_VM_DISK_MIB: must be between 20480 (the image's size) and 1953125"));
        }
        if let Some(rootfs) = &settings.aleph_rootfs {
            if !is_item_hash(rootfs) {
                return Err(config_error("ALEPH_ROOTFS: must be the 64-hex item hash of a VM image"));
            }
            config.rootfs = rootfs.to_lowercase();
        }
        config.pool = PoolConfig {
            enabled: settings.pool_enabled,
            min_size: settings.pool_min_size,
            max_size: settings.pool_max_size,
            interval: Duration::from_secs(settings.pool_replenish_interval_secs.max(1)),
            max_age: Duration::from_secs(settings.pool_max_age_hours.saturating_mul(3600)),
        };
        AlephOperator::new(account, config)
    }

    /// The wallet's checksummed address.
    pub fn address(&self) -> &str {
        self.account.address()
    }

    /// The configuration in use.
    pub fn config(&self) -> &AlephConfig {
        &self.config
    }

    /// The INSTANCE message a deployment named `name` would post now (signed, not posted).
    pub fn sign_instance(&self, name: &str, node_hash: Option<&str>) -> message::SignedMessage {
        let mut request = InstanceRequest::new(name, self.config.ssh_pubkey.clone());
        request.size = self.config.size;
        request.rootfs = self.config.rootfs.clone();
        request.node_hash = node_hash.map(str::to_owned);
        instance_message(&self.account, &request, &self.config.channel, now_seconds())
    }

    /// The FORGET message a delete would post now (signed, not posted).
    pub fn sign_forget(&self, hashes: &[String]) -> message::SignedMessage {
        message::agent_forget_message(&self.account, hashes, &self.config.channel)
    }

    /// The operator's credit balance.
    pub async fn credit_balance(&self) -> Result<i64, AlephError> {
        self.ccn.credit_balance(self.account.address()).await
    }

    /// The CRNs that pass the filters for the configured VM size, best first.
    pub async fn candidate_crns(&self) -> Result<Vec<crn::Crn>, AlephError> {
        let min_version = self.ccn.last_crn_version().await;
        self.crns.list(&self.config.crn_list_url, self.config.size, min_version.as_deref()).await
    }

    /// Posts a FORGET for `hash`; a target already gone counts as done.
    pub(crate) async fn forget(&self, hash: &str) -> Result<(), AlephError> {
        let message = self.sign_forget(&[hash.to_owned()]);
        match self.ccn.post_and_wait(&message, self.config.timeouts.message, true).await {
            Ok(FinalStatus::Processed | FinalStatus::Forgotten | FinalStatus::Pending) => Ok(()),
            // 500 no target, 504 already forgotten; 501 target not found is final only where the
            // CCN refuses at once (heph; pyaleph keeps it pending): the instance is not there to bill.
            Err(AlephError::Rejected { reason: Rejection::Other { code: Some(500 | 501 | 504), .. }, .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }
}

impl AlephDeployer {
    /// A deployer for `account` (the wallet that signs and pays) with `config`, keeping its warm
    /// pool in `store`.
    pub fn new(
        account: EthAccount,
        config: AlephConfig,
        store: Arc<dyn PoolStore>,
    ) -> Result<AlephDeployer, DeployError> {
        AlephDeployer::with_operator(AlephOperator::new(account, config)?, store)
    }

    /// A deployer over `op`; loads the SSH key.
    pub fn with_operator(op: AlephOperator, store: Arc<dyn PoolStore>) -> Result<AlephDeployer, DeployError> {
        let path = &op.config.ssh_key_path;
        let ssh_key = russh::keys::load_secret_key(path, None).map_err(|e| {
            config_error(format!(
                "cannot load the SSH key {} ({e}); set ALEPH_SSH_PRIVKEY_PATH to the private key (OpenSSH format, no passphrase) matching ALEPH_SSH_PUBKEY",
                path.display()
            ))
        })?;
        let python_ssh_key = match &op.config.python_ssh_key_path {
            None => None,
            Some(path) => Some(Arc::new(russh::keys::load_secret_key(path, None).map_err(|e| {
                config_error(format!(
                    "PYTHON_SSH_PRIVKEY_PATH: cannot load the SSH key {} ({e}); set it to the Python Baal's private key (OpenSSH or PEM format, no passphrase), or unset it",
                    path.display()
                ))
            })?)),
        };
        Ok(AlephDeployer { op, blacklist: Blacklist::default(), ssh_key: Arc::new(ssh_key), python_ssh_key, store })
    }

    /// The deployer the settings describe (`ALEPH_*`, `POOL_*`, `BAAL_AGENT_BIN`).
    pub fn from_settings(settings: &Settings, store: Arc<dyn PoolStore>) -> Result<AlephDeployer, DeployError> {
        if settings.agent_bin.is_none() {
            return Err(config_error(
                "BAAL_AGENT_BIN: not set. Build the agent (cargo build --release -p baal-agent) and set BAAL_AGENT_BIN to target/release/baal-agent",
            ));
        }
        AlephDeployer::with_operator(AlephOperator::from_settings(settings)?, store)
    }

    /// The operator view (signing, balance, CRN list).
    pub fn operator(&self) -> &AlephOperator {
        &self.op
    }

    /// Creates an instance on the best CRN that works, and waits for its network. `facts` gets
    /// the instance hash (reported) before anything is posted.
    /// `avoid` is a node left out of this attempt (the one a repair moves away from).
    async fn provision(
        &self,
        name: &str,
        reporter: &dyn DeployReporter,
        facts: &mut Deployment,
        avoid: Option<&str>,
    ) -> Result<(), DeployError> {
        reporter.step_started(STEP_PROVISION).await;
        let candidates: Vec<_> = self
            .op
            .candidate_crns()
            .await
            .map_err(at(STEP_PROVISION.key))?
            .into_iter()
            .filter(|c| !self.blacklist.contains(&c.url) && Some(c.url.as_str()) != avoid)
            .take(self.op.config.max_crn_attempts)
            .collect();
        if candidates.is_empty() {
            let reason = "none passes the filters, or all failed in the last minutes".to_owned();
            return Err(at(STEP_PROVISION.key)(AlephError::NoNode(reason)));
        }
        let mut last_error = None;
        for node in candidates {
            let message = self.op.sign_instance(&format!("baal-agent-{name}"), Some(&node.hash));
            let hash = message.item_hash.clone();
            *facts = Deployment {
                instance_hash: Some(hash.clone()),
                crn_url: Some(node.url.clone()),
                ..Deployment::default()
            };
            reporter.facts(facts).await?;
            match self.op.ccn.post_and_wait(&message, self.op.config.timeouts.message, false).await {
                Ok(_) => {}
                Err(err @ AlephError::Rejected { .. }) => {
                    // Rejected: no instance exists, nothing to forget.
                    *facts = Deployment::default();
                    reporter.facts(facts).await?;
                    return Err(at(STEP_PROVISION.key)(err));
                }
                // The message may still be processed later: keep its hash so delete finds it.
                Err(err) => return Err(at(STEP_PROVISION.key)(err)),
            }
            reporter.step_done(STEP_PROVISION).await;
            reporter.step_started(STEP_ALLOCATE).await;
            match self.start_and_allocate(&node.url, &hash).await {
                Ok(allocation) => {
                    facts.vm_host = Some(allocation.host);
                    facts.ssh_port = Some(allocation.ssh_port);
                    reporter.facts(facts).await?;
                    reporter.step_done(STEP_ALLOCATE).await;
                    return Ok(());
                }
                Err(err) => {
                    tracing::warn!(crn = %node.url, error = %err, "CRN failed; blacklisting it and trying the next");
                    self.blacklist.add(&node.url, self.op.config.blacklist_ttl);
                    if let Err(forget) = self.op.forget(&hash).await {
                        // Keep the hash recorded: delete and repair must still find this VM.
                        return Err(at(STEP_ALLOCATE.key)(err)
                            .with_detail(format!("and forgetting the instance failed: {forget}")));
                    }
                    *facts = Deployment::default();
                    reporter.facts(facts).await?;
                    last_error = Some(err);
                    reporter.step_started(STEP_PROVISION).await;
                }
            }
        }
        let last = last_error.map(|e| e.to_string()).unwrap_or_default();
        Err(DeployError::new(
            STEP_ALLOCATE.key,
            format!("no Aleph node could start the VM; retry in a few minutes (last error: {last})"),
        ))
    }

    /// Notifies `crn` and polls its executions list until the VM has a network.
    async fn start_and_allocate(&self, crn: &str, hash: &str) -> Result<Allocation, AlephError> {
        self.op.crns.notify(crn, hash, self.op.config.timeouts.notify).await?;
        let deadline = tokio::time::Instant::now() + self.op.config.timeouts.allocation;
        let mut polls = 0u32;
        loop {
            match self.op.crns.allocation(crn, hash).await {
                Ok(Some(allocation)) => return Ok(allocation),
                Ok(None) => {}
                Err(err) => tracing::debug!(error = %err, "executions list not readable yet"),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(AlephError::Timeout {
                    what: format!("the VM getting a network on {crn}"),
                    seconds: self.op.config.timeouts.allocation.as_secs(),
                });
            }
            polls += 1;
            // A cold node can drop the start while it downloads the image; notify is idempotent.
            if polls.is_multiple_of(4) {
                let _ = self.op.crns.notify(crn, hash, self.op.config.timeouts.notify).await;
            }
            tokio::time::sleep(self.op.config.timeouts.poll).await;
        }
    }

    /// Waits for SSH on the VM and connects, pinning its host key at first contact.
    async fn connect_vm(
        &self,
        reporter: &dyn DeployReporter,
        facts: &mut Deployment,
    ) -> Result<ssh::Session, DeployError> {
        let (Some(host), Some(port)) = (facts.vm_host.clone(), facts.ssh_port) else {
            return Err(DeployError::new(
                STEP_SHIP.key,
                "the VM's address is unknown; repair the agent to start it again",
            ));
        };
        let timeouts = self.op.config.timeouts;
        let deadline = tokio::time::Instant::now() + timeouts.ssh_ready;
        let session = loop {
            let attempt =
                ssh::connect(&host, port, self.ssh_key.clone(), facts.ssh_host_key.as_deref(), timeouts.ssh_connect)
                    .await;
            match attempt {
                Ok(session) => break session,
                Err(err @ AlephError::HostKeyChanged { .. }) => return Err(at(STEP_SHIP.key)(err)),
                Err(err) if tokio::time::Instant::now() >= deadline => {
                    return Err(at(STEP_SHIP.key)(AlephError::Ssh {
                        target: format!("{host}:{port}"),
                        detail: format!("not reachable within {} s ({err})", timeouts.ssh_ready.as_secs()),
                    }));
                }
                Err(err) => tracing::debug!(error = %err, "SSH not ready yet"),
            }
            tokio::time::sleep(timeouts.poll).await;
        };
        if facts.ssh_host_key.is_none() {
            facts.ssh_host_key = Some(session.host_key.clone());
            reporter.facts(facts).await?;
        }
        Ok(session)
    }

    /// The agent's public URL, asked from the gateway until it knows the instance.
    async fn public_url(&self, hash: &str) -> Result<String, AlephError> {
        let deadline = tokio::time::Instant::now() + self.op.config.timeouts.allocation;
        loop {
            match self.op.crns.gateway_url(&self.op.config.gateway_url, hash).await {
                Ok(Some(url)) => return Ok(url),
                Ok(None) => {}
                Err(err @ AlephError::Peer { .. }) if tokio::time::Instant::now() >= deadline => return Err(err),
                Err(err) => tracing::debug!(error = %err, "2n6.me gateway not answering yet"),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(AlephError::Timeout {
                    what: "the 2n6.me gateway knowing the VM's name".into(),
                    seconds: self.op.config.timeouts.allocation.as_secs(),
                });
            }
            tokio::time::sleep(self.op.config.timeouts.poll).await;
        }
    }

    /// Polls `{url}/health` until it answers 200.
    async fn check_https(&self, url: &str) -> Result<(), AlephError> {
        let deadline = tokio::time::Instant::now() + self.op.config.timeouts.https;
        let health = format!("{}/health", url.trim_end_matches('/'));
        loop {
            let last = match self.op.crns.http.get(&health).send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => format!("HTTP {}", response.status()),
                Err(err) => err.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(AlephError::peer(format!("the health check through {health}"), last));
            }
            tokio::time::sleep(self.op.config.timeouts.poll).await;
        }
    }

    /// SSH in, install, restart, check health on the VM and through HTTPS. With `rollback`, a
    /// failed start or health check puts the previous version back.
    async fn ship_and_check(
        &self,
        spec: &AgentSpec,
        reporter: &dyn DeployReporter,
        facts: &mut Deployment,
        rollback: bool,
    ) -> Result<(), DeployError> {
        reporter.step_started(STEP_SHIP).await;
        let hash = facts.instance_hash.clone().unwrap_or_default();
        if facts.vm_url.is_none() {
            facts.vm_url = Some(self.public_url(&hash).await.map_err(at(STEP_SHIP.key))?);
            reporter.facts(facts).await?;
        }
        let vm_url = facts.vm_url.clone().unwrap_or_default();
        let public_host = reqwest::Url::parse(&vm_url).ok().and_then(|u| u.host_str().map(str::to_owned));
        let public_host = public_host.filter(|h| crn::is_hostname_label_list(h));
        let session = self.connect_vm(reporter, facts).await?;
        let shipper = Shipper {
            session: &session,
            layout: &self.op.config.layout,
            command_timeout: self.op.config.timeouts.command,
        };
        let result = async {
            let env = ship::agent_env(spec, &self.op.config.agent_defaults, &self.op.config.layout);
            shipper.ship(&env, &self.op.config.agent_bin, public_host.as_deref()).await.map_err(at(STEP_SHIP.key))?;
            reporter.step_done(STEP_SHIP).await;
            reporter.step_started(STEP_START).await;
            let started = async {
                shipper.run("start").await.map_err(at(STEP_START.key))?;
                reporter.step_done(STEP_START).await;
                reporter.step_started(STEP_HEALTH).await;
                shipper.run("health").await.map_err(at(STEP_HEALTH.key))
            }
            .await;
            if let Err(err) = started {
                if !rollback {
                    return Err(err);
                }
                let restored = async {
                    shipper.run("rollback").await?;
                    shipper.run("health").await
                }
                .await;
                let message = match restored {
                    Ok(()) => {
                        format!("the new version failed ({}); the previous version is running again", err.message)
                    }
                    Err(again) => {
                        format!("the new version failed ({}) and rolling back failed too: {again}", err.message)
                    }
                };
                return Err(DeployError::new(err.step, message).with_detail(err.detail.unwrap_or_default()));
            }
            reporter.step_done(STEP_HEALTH).await;
            Ok(())
        }
        .await;
        session.close().await;
        result?;
        reporter.step_started(STEP_HTTPS).await;
        self.check_https(&vm_url).await.map_err(at(STEP_HTTPS.key))?;
        reporter.step_done(STEP_HTTPS).await;
        Ok(())
    }

    async fn deploy_facts(
        &self,
        spec: &AgentSpec,
        reporter: &dyn DeployReporter,
        facts: &mut Deployment,
    ) -> Result<(), DeployError> {
        if facts.instance_hash.is_none() {
            self.provision(&spec.name, reporter, facts, None).await?;
        } else if facts.vm_host.is_none() || facts.ssh_port.is_none() {
            // Resuming (repair, or a crash after the instance was created).
            let (Some(hash), Some(crn)) = (facts.instance_hash.clone(), facts.crn_url.clone()) else {
                return Err(DeployError::new(
                    STEP_ALLOCATE.key,
                    "the VM's node is unknown; delete the agent and create it again",
                )
                .permanent());
            };
            reporter.step_started(STEP_ALLOCATE).await;
            let allocation = self.start_and_allocate(&crn, &hash).await.map_err(at(STEP_ALLOCATE.key))?;
            facts.vm_host = Some(allocation.host);
            facts.ssh_port = Some(allocation.ssh_port);
            reporter.facts(facts).await?;
            reporter.step_done(STEP_ALLOCATE).await;
        }
        self.ship_and_check(spec, reporter, facts, false).await
    }
}

#[async_trait]
impl Deployer for AlephDeployer {
    fn name(&self) -> &'static str {
        "aleph"
    }

    fn steps(&self) -> &'static [DeployStep] {
        STEPS
    }

    fn convert_steps(&self) -> &'static [DeployStep] {
        CONVERT_STEPS
    }

    async fn deploy(&self, spec: &AgentSpec, reporter: &dyn DeployReporter) -> Result<Deployment, DeployError> {
        let mut facts = spec.existing.clone();
        let mut claimed = None;
        if facts.instance_hash.is_none() && self.op.config.pool.enabled {
            claimed = self.pool_take(spec.agent_id, reporter, &mut facts).await?;
        }
        let result = self.deploy_facts(spec, reporter, &mut facts).await;
        if let Some(id) = claimed {
            self.pool_settle(id, spec.agent_id).await;
        }
        result.map(|()| facts)
    }

    async fn redeploy(&self, spec: &AgentSpec, reporter: &dyn DeployReporter) -> Result<Deployment, DeployError> {
        let mut facts = spec.existing.clone();
        if facts.vm_host.is_none() || facts.ssh_port.is_none() || facts.vm_url.is_none() {
            // Never got as far as a running agent: finish the deployment instead.
            return self.deploy(spec, reporter).await;
        }
        self.ship_and_check(spec, reporter, &mut facts, true).await?;
        Ok(facts)
    }

    /// Restarts the agent's service over SSH (re-shipping it if that is not enough); when the VM
    /// cannot be reached, forgets it and deploys the agent on a fresh instance on another node
    /// (`moved`: the workspace and history on the lost VM are gone).
    async fn repair(&self, spec: &AgentSpec, reporter: &dyn DeployReporter) -> Result<Repaired, DeployError> {
        self.repair_agent(spec, reporter).await
    }

    /// Takes the imported agent's VM over from the Python agent (`convert`): Baal's key installed
    /// with the Python Baal's if need be, the Python agent set aside and its workspace and history
    /// copied into ours, the Python agent put back if ours does not become healthy.
    async fn convert(&self, spec: &AgentSpec, reporter: &dyn DeployReporter) -> Result<Deployment, DeployError> {
        self.convert_agent(spec, reporter).await
    }

    async fn destroy(
        &self,
        _agent_id: AgentId,
        deployment: &Deployment,
        reporter: &dyn DeployReporter,
    ) -> Result<(), DeployError> {
        let Some(hash) = deployment.instance_hash.as_deref() else { return Ok(()) };
        if !is_item_hash(hash) {
            return Err(DeployError::new(
                STEP_FORGET.key,
                format!("the recorded instance hash {hash:?} is not an Aleph item hash"),
            )
            .permanent());
        }
        reporter.step_started(STEP_FORGET).await;
        self.op.forget(hash).await.map_err(at(STEP_FORGET.key))?;
        reporter.step_done(STEP_FORGET).await;
        if let Some(crn) = deployment.crn_url.as_deref() {
            reporter.step_started(STEP_ERASE).await;
            // Best effort: billing already stopped, and the node cleans up forgotten VMs itself.
            if let Err(err) = self.op.crns.erase(&self.op.account, crn, hash).await {
                tracing::warn!(crn, error = %err, "erasing the VM on its node failed; the node will clean it up");
            }
            reporter.step_done(STEP_ERASE).await;
        }
        self.pool_forget_rows(hash).await;
        Ok(())
    }

    // Allocating a VM, waiting for its network, then shipping and starting the agent (SSH, apt,
    // Caddy's certificate) takes a minute or two.
    fn usual_deploy_duration(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(90))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &[(&str, &str)]) -> Settings {
        let mut vars = vec![
            ("ALEPH_PRIVATE_KEY", "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"),
            ("ALEPH_SSH_PUBKEY", "ssh-ed25519 AAAA op"),
        ];
        vars.extend_from_slice(extra);
        Settings::from_vars(vars).unwrap()
    }

    #[test]
    fn settings_pick_size_rootfs_and_channel() {
        let op = AlephOperator::from_settings(&settings(&[
            ("ALEPH_VM_VCPUS", "2"),
            ("ALEPH_VM_MEMORY_MIB", "4096"),
            ("ALEPH_VM_DISK_MIB", "40960"),
            ("ALEPH_ROOTFS", message::DEBIAN_12_ROOTFS),
            ("ALEPH_CHANNEL", "TEST"),
        ]))
        .unwrap();
        let message = op.sign_instance("x", None);
        let content: serde_json::Value = serde_json::from_str(&message.item_content).unwrap();
        assert_eq!(content["resources"]["vcpus"], 2);
        assert_eq!(content["resources"]["memory"], 4096);
        assert_eq!(content["rootfs"]["size_mib"], 40960);
        assert_eq!(content["rootfs"]["parent"]["ref"], message::DEBIAN_12_ROOTFS);
        assert_eq!(message.channel, "TEST");
    }

    #[test]
    fn bad_settings_name_the_variable() {
        for (variable, value) in [
            ("ALEPH_VM_DISK_MIB", "1024"),
            ("ALEPH_VM_VCPUS", "0"),
            ("ALEPH_ROOTFS", "debian"),
            ("ALEPH_VM_MEMORY_MIB", "1"),
        ] {
            let err = AlephOperator::from_settings(&settings(&[(variable, value)])).unwrap_err();
            assert!(err.message.contains(variable), "{err}");
            assert!(!err.retryable);
        }
        let store: Arc<dyn PoolStore> = Arc::new(crate::testing::aleph::MemoryPoolStore::new());
        let err = AlephDeployer::from_settings(&settings(&[]), store).unwrap_err();
        assert!(err.message.contains("BAAL_AGENT_BIN"), "{err}");
    }
}
