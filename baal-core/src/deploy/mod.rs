//! Where agents run. A [`Deployer`] turns an [`AgentSpec`] into a running `baal-agent` and tears
//! it down again; the platform drives it and persists everything it reports.
//!
//! Implementations: `local` (child processes of this machine; the embedded default) and `aleph`
//! (Aleph Cloud VMs). Embedders can bring their own.
//!
//! Invariants:
//! - a deployer reports every fact through [`DeployReporter::facts`] as soon as it is known (the
//!   instance hash before any step that could fail), and the platform stores it before the
//!   deployer goes on, so a crash never forgets a VM;
//! - [`Deployer::destroy`] works from the stored facts alone, for an agent in any state;
//! - a redeploy restarts the agent and leaves it healthy, or reports failure (and, where the
//!   deployer can, rolls back to what ran before).

#[cfg(feature = "aleph")]
pub mod aleph;

use std::fmt;

use async_trait::async_trait;
use secrecy::SecretString;

use crate::domain::{AgentId, Deployment};

#[cfg(feature = "local")]
pub mod isolation;
#[cfg(feature = "local")]
pub mod local;

/// One visible step of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct DeployStep {
    /// Stable key stored in the deployment history (`provision`, `ship`, …).
    pub key: &'static str,
    /// What the user sees ("Create the VM").
    pub label: &'static str,
}

impl DeployStep {
    /// A step with a stable `key` (stored in the deployment history) and the `label` users see;
    /// `const` so deployers can declare their steps as constants.
    pub const fn new(key: &'static str, label: &'static str) -> Self {
        DeployStep { key, label }
    }
}

/// Everything a deployer needs to run one agent. Secrets stay wrapped.
#[derive(Clone)]
#[non_exhaustive]
pub struct AgentSpec {
    /// The agent.
    pub agent_id: AgentId,
    /// Display name.
    pub name: String,
    /// Instructions.
    pub system_prompt: String,
    /// Model id.
    pub model: String,
    /// The LibertAI key the agent will spend (the owner's, or the operator's for free tier).
    pub libertai_api_key: SecretString,
    /// The LibertAI base URL the agent calls.
    pub libertai_api_base_url: String,
    /// The bearer secret the agent will require.
    pub agent_secret: SecretString,
    /// The owner's chat id: heartbeat and subagent output go there only.
    pub owner_chat_id: String,
    /// Tools visitors may use.
    pub visitor_tools: Vec<String>,
    /// What is already known about this agent's deployment (empty for a first deployment).
    pub existing: Deployment,
}

impl AgentSpec {
    /// A spec with the default visitor tools and no previous deployment. What every agent gets
    /// from the operator (heartbeat interval, Brave key) is the deployer's
    /// ([`AgentDefaults`](crate::agent_env::AgentDefaults)), not the spec's.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        agent_id: AgentId,
        name: impl Into<String>,
        system_prompt: impl Into<String>,
        model: impl Into<String>,
        libertai_api_key: SecretString,
        libertai_api_base_url: impl Into<String>,
        agent_secret: SecretString,
        owner_chat_id: impl Into<String>,
    ) -> Self {
        AgentSpec {
            agent_id,
            name: name.into(),
            system_prompt: system_prompt.into(),
            model: model.into(),
            libertai_api_key,
            libertai_api_base_url: libertai_api_base_url.into(),
            agent_secret,
            owner_chat_id: owner_chat_id.into(),
            visitor_tools: crate::domain::DEFAULT_VISITOR_TOOLS.iter().map(|t| t.to_string()).collect(),
            existing: Deployment::default(),
        }
    }
}

impl fmt::Debug for AgentSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentSpec")
            .field("agent_id", &self.agent_id)
            .field("name", &self.name)
            .field("model", &self.model)
            .field("owner_chat_id", &self.owner_chat_id)
            .field("visitor_tools", &self.visitor_tools)
            .field("existing", &self.existing)
            .finish_non_exhaustive()
    }
}

/// A deployment failed. `Display` is fit for the user; `detail` is for logs and history (never a
/// secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct DeployError {
    /// The step that failed (a [`DeployStep::key`]), or `deploy`.
    pub step: &'static str,
    /// What the user is told.
    pub message: String,
    /// What went wrong underneath.
    pub detail: Option<String>,
    /// Whether retrying later (`/repair`) may help.
    pub retryable: bool,
}

impl DeployError {
    /// An error at `step`.
    pub fn new(step: &'static str, message: impl Into<String>) -> Self {
        DeployError { step, message: message.into(), detail: None, retryable: true }
    }

    /// Adds the underlying cause.
    pub fn with_detail(mut self, detail: impl fmt::Display) -> Self {
        self.detail = Some(detail.to_string());
        self
    }

    /// Marks the error as one that retrying will not fix.
    pub fn permanent(mut self) -> Self {
        self.retryable = false;
        self
    }
}

/// How a deployer tells the platform what is happening. The platform records each call in the
/// `Store` before returning, and shows progress to the user.
#[async_trait]
pub trait DeployReporter: Send + Sync {
    /// `step` is about to be taken.
    async fn step_started(&self, step: DeployStep);
    /// `step` completed.
    async fn step_done(&self, step: DeployStep);
    /// New facts are known; they are persisted before this returns. An empty [`Deployment`] says
    /// the deployer holds nothing any more, and clears what was stored. An error means they could
    /// not be stored, and the deployer must stop (and clean up what it can).
    async fn facts(&self, deployment: &Deployment) -> Result<(), DeployError>;
}

/// A reporter that records nothing (for tools that deploy outside the platform).
#[derive(Debug, Clone, Copy, Default)]
pub struct SilentReporter;

#[async_trait]
impl DeployReporter for SilentReporter {
    async fn step_started(&self, _step: DeployStep) {}
    async fn step_done(&self, _step: DeployStep) {}
    async fn facts(&self, _deployment: &Deployment) -> Result<(), DeployError> {
        Ok(())
    }
}

/// Where agents run.
#[async_trait]
pub trait Deployer: Send + Sync {
    /// A short name for logs and `doctor` (`local`, `aleph`).
    fn name(&self) -> &'static str;

    /// The steps a first deployment reports, in order (for progress bars).
    fn steps(&self) -> &'static [DeployStep];

    /// The steps [`Deployer::convert`] reports, in order (for progress bars). The default: those
    /// of a first deployment.
    fn convert_steps(&self) -> &'static [DeployStep] {
        self.steps()
    }

    /// Deploys (or, with facts in `spec.existing`, resumes deploying) an agent, and returns the
    /// final facts once the agent answers its health check.
    async fn deploy(&self, spec: &AgentSpec, reporter: &dyn DeployReporter) -> Result<Deployment, DeployError>;

    /// Pushes new settings or code to a deployed agent, restarts it and checks its health.
    async fn redeploy(&self, spec: &AgentSpec, reporter: &dyn DeployReporter) -> Result<Deployment, DeployError>;

    /// Brings back an agent that stopped answering, from its stored facts. The default redeploys.
    async fn repair(&self, spec: &AgentSpec, reporter: &dyn DeployReporter) -> Result<Repaired, DeployError> {
        self.redeploy(spec, reporter).await.map(|deployment| Repaired { deployment, moved: false })
    }

    /// Turns an agent imported from the Python Baal into one of ours where it runs (its VM, from
    /// `spec.existing`): our agent, settings and front door in place of the Python ones, its
    /// workspace and conversation history kept, and the Python agent put back if ours does not
    /// become healthy. Returns the facts it runs with now. The default refuses: only a deployer
    /// that runs such machines can convert them.
    async fn convert(&self, spec: &AgentSpec, reporter: &dyn DeployReporter) -> Result<Deployment, DeployError> {
        let _ = (spec, reporter);
        Err(DeployError::new(
            "convert",
            format!(
                "the {} deployer cannot convert agents imported from the Python Baal: they run on Aleph VMs, so \
                 configure the Aleph deployer (ALEPH_PRIVATE_KEY)",
                self.name()
            ),
        )
        .permanent())
    }

    /// Stops the agent and releases everything it holds, from the stored facts alone.
    async fn destroy(
        &self,
        agent_id: AgentId,
        deployment: &Deployment,
        reporter: &dyn DeployReporter,
    ) -> Result<(), DeployError>;

    /// Called once at platform start with the agents recorded as running, so a deployer whose
    /// agents do not survive a restart (local processes) can bring them back.
    async fn restore(&self, _running: &[AgentSpec]) -> Result<(), DeployError> {
        Ok(())
    }

    /// Like [`Deployer::restore`], and says per agent what came of it: the facts it runs with now
    /// (which may differ from the stored ones, e.g. a local agent that had to take a new port) or
    /// why it could not be brought back. The platform stores the facts it gets. The default calls
    /// `restore` and reports the stored facts unchanged.
    async fn restore_with_facts(&self, running: &[AgentSpec]) -> Vec<(AgentId, Result<Deployment, DeployError>)> {
        let outcome = self.restore(running).await;
        running.iter().map(|spec| (spec.agent_id, outcome.clone().map(|()| spec.existing.clone()))).collect()
    }

    /// How long a first deployment usually takes here, so the platform can tell users what to
    /// expect ("this usually takes a few seconds"). `None`, the default, means unknown: the
    /// platform then promises no duration rather than guess one.
    fn usual_deploy_duration(&self) -> Option<std::time::Duration> {
        None
    }

    /// Who may have agents deployed here. The default, [`Tenancy::Everyone`], suits a deployer
    /// whose agents cannot reach each other or the operator (a VM each); the local deployer
    /// answers [`Tenancy::OperatorOnly`] where this host cannot keep tenants apart.
    fn tenancy(&self) -> Tenancy {
        Tenancy::Everyone
    }
}

/// What a repair came to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Repaired {
    /// The facts the agent runs with now (the platform stores them).
    pub deployment: Deployment,
    /// true when the agent now runs elsewhere with a fresh workspace
    pub moved: bool,
}

impl Repaired {
    /// A repair that left the agent running with `deployment`; `moved` when it now runs elsewhere
    /// with a fresh workspace (what was on the lost machine is gone).
    pub fn new(deployment: Deployment, moved: bool) -> Self {
        Repaired { deployment, moved }
    }
}

/// Who a deployer may run agents for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tenancy {
    /// Anyone may create agents: each is kept apart from the others and from the operator.
    Everyone,
    /// Only the operator's admins (`ADMIN_USER_IDS`, the console's user) may create agents: an
    /// agent's tools could reach what belongs to the operator or to other agents.
    OperatorOnly,
}
