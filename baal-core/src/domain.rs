//! Plain data shared by every part of Baal: users, agents, usage, deployment history, pool VMs and
//! the model catalog. Nothing here talks to the outside world.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// A Telegram user id (also the id of the console's local user).
pub type UserId = i64;

/// The platform's id of an agent. Sequential and therefore guessable: it is shown to owners and
/// operators, never used in share links (those use [`Agent::slug`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AgentId(pub i64);

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for AgentId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().trim_start_matches('#').parse().map(AgentId)
    }
}

/// Where an agent is in its life. Transitions are decided by the platform, never by front-ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AgentStatus {
    /// Created, no deployment started yet.
    Pending,
    /// A deployment job is running (or was running when the platform stopped).
    Deploying,
    /// Deployed and answering.
    Running,
    /// The last deployment failed; `/repair` can retry it.
    Failed,
    /// Stopped on purpose (deleted agents end here).
    Stopped,
    /// Was running, then stopped answering its health checks: Baal is repairing it (or gave up
    /// after its attempts, and `/repair` tries again).
    Down,
}

impl AgentStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [AgentStatus; 6] = [
        AgentStatus::Pending,
        AgentStatus::Deploying,
        AgentStatus::Running,
        AgentStatus::Down,
        AgentStatus::Failed,
        AgentStatus::Stopped,
    ];

    /// The stored and printed name (`pending`, `deploying`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Pending => "pending",
            AgentStatus::Deploying => "deploying",
            AgentStatus::Running => "running",
            AgentStatus::Failed => "failed",
            AgentStatus::Stopped => "stopped",
            AgentStatus::Down => "down",
        }
    }
}

impl fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is not one of [`AgentStatus::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown agent status {0:?}: use one of pending, deploying, running, down, failed, stopped")]
pub struct UnknownStatus(pub String);

impl FromStr for AgentStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AgentStatus::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// What program serves an agent. Every agent Baal deploys runs [`AgentRuntime::Baal`]; an agent
/// imported from the Python Baal keeps running the Python agent on its VM until it is converted
/// (`/update`, `baal-cli agents convert`). The Python agent runs its tools as root with the
/// owner's key in reach, so the platform lets only the owner talk to one.
///
/// Deliberately exhaustive: every place that lets visitors in must decide for each runtime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentRuntime {
    /// Baal's own `baal-agent`.
    #[default]
    Baal,
    /// The Python Baal's agent, as imported and not yet converted.
    Python,
}

impl AgentRuntime {
    /// The stored name (`baal`, `python`).
    pub fn as_str(self) -> &'static str {
        match self {
            AgentRuntime::Baal => "baal",
            AgentRuntime::Python => "python",
        }
    }
}

impl fmt::Display for AgentRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A runtime name that is neither `baal` nor `python`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown agent runtime {0:?}: use baal or python")]
pub struct UnknownRuntime(pub String);

impl FromStr for AgentRuntime {
    type Err = UnknownRuntime;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [AgentRuntime::Baal, AgentRuntime::Python]
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRuntime(s.to_owned()))
    }
}

/// Whether the person talking to an agent owns it. Owners get every tool and the proactive
/// (heartbeat, subagent) messages; visitors get only what the owner allows.
///
/// Deliberately exhaustive: it is part of the bot ↔ agent wire protocol, where a new role would
/// be a breaking protocol change, and every permission check must decide each role explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The user who created the agent.
    Owner,
    /// Anyone else who reached the agent through its share link.
    Visitor,
}

/// A person who talks to Baal.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct User {
    /// Telegram user id.
    pub id: UserId,
    /// Telegram username, when Telegram told us one.
    pub username: Option<String>,
    /// The user's own LibertAI key, sealed with [`crate::secrets::SecretBox`]. `None`: free tier.
    pub api_key_sealed: Option<Vec<u8>>,
    /// Whether tool calls are shown in chat (`/verbose`).
    pub show_tools: bool,
    /// When the user first talked to Baal.
    pub created_at: DateTime<Utc>,
}

/// Facts about where and how an agent is deployed. Every field is optional because a deployment
/// fills them in step by step, and each fact is stored as soon as it is known so that a crash
/// never forgets a paid VM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Deployment {
    /// Aleph INSTANCE message hash (64 hex), or the local deployer's process key.
    pub instance_hash: Option<String>,
    /// The CRN that runs the instance (`https://host`, no trailing slash).
    pub crn_url: Option<String>,
    /// The agent's base URL, as the bot reaches it (`https://x.2n6.me`, `http://127.0.0.1:port`).
    pub vm_url: Option<String>,
    /// The host the deployer reaches over SSH (IPv4 of the CRN host for Aleph).
    pub vm_host: Option<String>,
    /// The SSH port mapped to the VM's port 22.
    pub ssh_port: Option<u16>,
    /// The VM's SSH host key (OpenSSH public key line), pinned at first contact.
    pub ssh_host_key: Option<String>,
}

/// An agent as the platform knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Agent {
    /// Sequential id (owner- and operator-facing).
    pub id: AgentId,
    /// The user who created it.
    pub owner_id: UserId,
    /// Display name, 1–64 characters.
    pub name: String,
    /// The owner's instructions ("personality").
    pub system_prompt: String,
    /// Model id from [`MODELS`].
    pub model: String,
    /// Lifecycle status.
    pub status: AgentStatus,
    /// Soft-deleted agents stay in the table for history but are invisible to users.
    pub deleted: bool,
    /// Where it runs.
    pub deployment: Deployment,
    /// The agent's bearer secret, sealed.
    pub token_sealed: Option<Vec<u8>>,
    /// Unguessable share-link slug: links are `t.me/<bot>?start=agent_<slug>`.
    pub slug: String,
    /// Tools a visitor may use (the owner always gets every tool).
    pub visitor_tools: Vec<String>,
    /// Whose LibertAI key its inference runs on, as of its last deployment.
    pub payer: Payer,
    /// Who is deploying or deleting it right now, if anyone.
    pub lease: Option<Lease>,
    /// What its owner decided about sharing and budgets.
    pub policy: AgentPolicy,
    /// The cursor of the agent's `GET /usage` up to which its usage is stored (0: none yet).
    pub usage_cursor: i64,
    /// What program serves it.
    pub runtime: AgentRuntime,
    /// Its id in the Python Baal's database, for an agent imported from there: imports match
    /// on it, so a second import changes nothing.
    pub python_id: Option<i64>,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Last change of any field (taking or renewing a lease is not a change).
    pub updated_at: DateTime<Utc>,
}

/// Whose LibertAI key an agent runs on. Decides whether its messages count against the free
/// tier's daily limit.
///
/// Deliberately exhaustive: every place that charges someone must decide for each payer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Payer {
    /// The owner's own key: no daily limit.
    Owner,
    /// The operator's key (the free tier). Agents deployed before the payer was recorded are
    /// taken to be here, the conservative reading: they count against the limit.
    #[default]
    Operator,
}

impl Payer {
    /// The stored name (`owner`, `operator`).
    pub fn as_str(self) -> &'static str {
        match self {
            Payer::Owner => "owner",
            Payer::Operator => "operator",
        }
    }
}

impl fmt::Display for Payer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A payer name that is neither `owner` nor `operator`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown payer {0:?}: use owner or operator")]
pub struct UnknownPayer(pub String);

impl FromStr for Payer {
    type Err = UnknownPayer;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Payer::Owner, Payer::Operator].into_iter().find(|p| p.as_str() == s).ok_or_else(|| UnknownPayer(s.to_owned()))
    }
}

/// The right to deploy or delete one agent, held by one process at a time until `until`. The
/// holder renews it while it works and releases it when done; a holder that dies simply lets it
/// run out, after which another may take it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Lease {
    /// Who holds it: an id a process (or a deletion) makes for itself, unique among processes.
    pub holder: String,
    /// When it runs out unless renewed.
    pub until: DateTime<Utc>,
}

impl Lease {
    /// A lease `holder` has until `until`.
    pub fn new(holder: impl Into<String>, until: DateTime<Utc>) -> Self {
        Lease { holder: holder.into(), until }
    }

    /// Whether it still holds at `now` (a lease that runs out at `now` no longer does).
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.until > now
    }
}

impl User {
    /// A user as first seen: no username, free tier, tool calls hidden. For [`Store`]
    /// implementations, which cannot use a struct literal on this growing type.
    ///
    /// [`Store`]: crate::store::Store
    pub fn new(id: UserId, created_at: DateTime<Utc>) -> Self {
        User { id, username: None, api_key_sealed: None, show_tools: false, created_at }
    }

    /// Sets the username.
    pub fn with_username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }
}

impl Agent {
    /// The row a store creates from `new`: pending, not deleted, not deployed yet (so no payer
    /// recorded: the operator), no lease, last changed when created.
    pub fn from_new(id: AgentId, new: NewAgent, created_at: DateTime<Utc>) -> Self {
        Agent {
            id,
            owner_id: new.owner_id,
            name: new.name,
            system_prompt: new.system_prompt,
            model: new.model,
            status: AgentStatus::Pending,
            deleted: false,
            deployment: Deployment::default(),
            token_sealed: new.token_sealed,
            slug: new.slug,
            visitor_tools: new.visitor_tools,
            payer: Payer::Operator,
            lease: None,
            policy: AgentPolicy::default(),
            usage_cursor: 0,
            runtime: new.runtime,
            python_id: new.python_id,
            created_at: new.created_at.unwrap_or(created_at),
            updated_at: created_at,
        }
    }

    /// Whether the agent counts against its owner's slot limit.
    pub fn occupies_slot(&self) -> bool {
        !self.deleted
    }

    /// The role `user` has when talking to this agent.
    pub fn role_of(&self, user: UserId) -> Role {
        if user == self.owner_id { Role::Owner } else { Role::Visitor }
    }
}

/// What an owner decides about who may use their agent and how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AgentPolicy {
    /// Whether the share link works. Off, visitors are turned away; the owner still chats.
    pub sharing: bool,
    /// Tokens the whole agent may use per UTC day (every chat and background work); `None`: no
    /// budget of the owner's own.
    pub daily_token_budget: Option<u64>,
    /// Messages each visitor may send per UTC day; `None`: no limit of the owner's own.
    pub visitor_daily_messages: Option<u32>,
}

impl Default for AgentPolicy {
    /// Shared, with neither a token budget nor a visitor limit: how agents behaved before owners
    /// could decide.
    fn default() -> Self {
        AgentPolicy { sharing: true, daily_token_budget: None, visitor_daily_messages: None }
    }
}

impl AgentPolicy {
    /// The default policy: shared, no budget, no visitor limit.
    pub fn new() -> Self {
        AgentPolicy::default()
    }

    /// Turns the share link on or off.
    pub fn with_sharing(mut self, sharing: bool) -> Self {
        self.sharing = sharing;
        self
    }

    /// Sets (or with `None` removes) the agent's daily token budget.
    pub fn with_daily_token_budget(mut self, tokens: Option<u64>) -> Self {
        self.daily_token_budget = tokens;
        self
    }

    /// Sets (or with `None` removes) the daily message limit per visitor.
    pub fn with_visitor_daily_messages(mut self, messages: Option<u32>) -> Self {
        self.visitor_daily_messages = messages;
        self
    }
}

/// Tokens of one group of model calls, as the platform stores them: summed per
/// (agent, UTC day, charged user, cause, model, payer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AgentUsage {
    /// The agent that made the calls.
    pub agent_id: AgentId,
    /// The UTC day of the calls.
    pub day: NaiveDate,
    /// Who is charged: the visitor for a visitor's turn, the owner for everything else.
    pub user_id: UserId,
    /// Why the model was called.
    pub cause: crate::wire::UsageCause,
    /// The model id.
    pub model: String,
    /// Whose key paid.
    pub payer: Payer,
    /// Tokens sent.
    pub prompt_tokens: u64,
    /// Tokens written.
    pub completion_tokens: u64,
    /// Model calls.
    pub calls: u64,
    /// Whether any call's figures are an estimate (the model's server, or the agent, reported none).
    pub estimated: bool,
}

impl AgentUsage {
    /// A group with no tokens and no calls yet.
    pub fn new(
        agent_id: AgentId,
        day: NaiveDate,
        user_id: UserId,
        cause: crate::wire::UsageCause,
        model: impl Into<String>,
        payer: Payer,
    ) -> Self {
        AgentUsage {
            agent_id,
            day,
            user_id,
            cause,
            model: model.into(),
            payer,
            prompt_tokens: 0,
            completion_tokens: 0,
            calls: 0,
            estimated: false,
        }
    }

    /// Sets the figures.
    pub fn with_tokens(mut self, prompt_tokens: u64, completion_tokens: u64, calls: u64, estimated: bool) -> Self {
        self.prompt_tokens = prompt_tokens;
        self.completion_tokens = completion_tokens;
        self.calls = calls;
        self.estimated = estimated;
        self
    }

    /// Tokens sent and written (saturating: a sum never wraps to a small number).
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// What it takes to create an agent row.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewAgent {
    /// Owner's user id (the user row must exist).
    pub owner_id: UserId,
    /// Display name.
    pub name: String,
    /// Instructions.
    pub system_prompt: String,
    /// Model id.
    pub model: String,
    /// Sealed bearer secret.
    pub token_sealed: Option<Vec<u8>>,
    /// Share-link slug: 20 random characters of `[a-z0-9]`, so links cannot be guessed.
    pub slug: String,
    /// Tools visitors may use.
    pub visitor_tools: Vec<String>,
    /// What program serves it ([`AgentRuntime::Baal`] unless imported).
    pub runtime: AgentRuntime,
    /// Its id in the Python Baal's database, for an imported agent.
    pub python_id: Option<i64>,
    /// When it was created, when that is older than the row (an imported agent); `None`: now.
    pub created_at: Option<DateTime<Utc>>,
}

impl NewAgent {
    /// A pending agent with a fresh slug and the default visitor tools.
    pub fn new(
        owner_id: UserId,
        name: impl Into<String>,
        system_prompt: impl Into<String>,
        model: impl Into<String>,
    ) -> Self {
        NewAgent {
            owner_id,
            name: name.into(),
            system_prompt: system_prompt.into(),
            model: model.into(),
            token_sealed: None,
            slug: new_slug(),
            visitor_tools: DEFAULT_VISITOR_TOOLS.iter().map(|t| t.to_string()).collect(),
            runtime: AgentRuntime::Baal,
            python_id: None,
            created_at: None,
        }
    }

    /// The row for an agent imported from the Python Baal, where its id was `python_id`: it runs
    /// the Python agent until converted, and its share-link slug is that id, so the links its
    /// owner handed out (`?start=agent_<id>`) keep opening it. Numeric slugs exist only for
    /// imported agents (fresh ones are 20 characters of letters and digits).
    pub fn imported_from_python(mut self, python_id: i64, created_at: DateTime<Utc>) -> Self {
        self.slug = python_id.to_string();
        self.runtime = AgentRuntime::Python;
        self.python_id = Some(python_id);
        self.created_at = Some(created_at);
        self
    }

    /// Sets the sealed bearer secret.
    pub fn with_token_sealed(mut self, sealed: Vec<u8>) -> Self {
        self.token_sealed = Some(sealed);
        self
    }
}

/// Tools a visitor gets unless the owner says otherwise: none that touch the shell or files.
pub const DEFAULT_VISITOR_TOOLS: &[&str] = &["web_fetch", "web_search"];

/// A fresh share-link slug: 20 characters of `[a-z0-9]` (about 103 bits), so links cannot be
/// guessed or enumerated. Fits Telegram's 64-character `start` payload with the `agent_` prefix.
pub(crate) fn new_slug() -> String {
    use rand::RngExt as _;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..20).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// The answer of the atomic daily-message counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsageDecision {
    /// One message was counted; `used` includes it.
    Allowed {
        /// Messages used today, this one included.
        used: u32,
        /// The daily limit.
        limit: u32,
    },
    /// The limit was already reached; nothing was counted.
    Refused {
        /// Messages used today.
        used: u32,
        /// The daily limit.
        limit: u32,
        /// When the counter starts again (next UTC midnight).
        resets_at: DateTime<Utc>,
    },
}

/// The UTC day a usage counter belongs to, and when it ends.
pub fn usage_day(now: DateTime<Utc>) -> (NaiveDate, DateTime<Utc>) {
    let day = now.date_naive();
    let next = day.succ_opt().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|dt| dt.and_utc()).unwrap_or(now);
    (day, next)
}

/// One row of an agent's deployment history. Steps are recorded before they are taken, so the
/// history of an interrupted deployment shows where it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DeploymentEvent {
    /// Row id.
    pub id: i64,
    /// The agent deployed.
    pub agent_id: AgentId,
    /// What was done: a whole job, or one stage of a deployer.
    pub step: EventStep,
    /// How it went.
    pub outcome: EventOutcome,
    /// Error text or other detail; never a secret.
    pub detail: Option<String>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

/// What a [`DeploymentEvent`] is about. Stored as its word ([`EventStep::as_str`]), read back with
/// [`EventStep::parse`], so rows written by earlier releases read the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventStep {
    /// A first deployment, a repair or a resumed deployment (`deploy`).
    Deploy,
    /// New settings for a running agent (`redeploy`).
    Redeploy,
    /// A deployment picked up after the process running it died (`resume`).
    Resume,
    /// Bringing a running agent back when the platform starts (`restore`).
    Restore,
    /// A teardown, as earlier releases recorded the bot's deletions (`destroy`); read, no longer
    /// written.
    Destroy,
    /// A deletion: teardown, then the agent is marked deleted (`delete`).
    Delete,
    /// Bringing back an agent that stopped answering its health checks (`repair`).
    Repair,
    /// Releasing what a deployment that failed long ago still holds (`release`).
    Release,
    /// One stage of a deployer's work, by its key (`provision`, `ship`, …: a
    /// [`DeployStep::key`](crate::deploy::DeployStep)).
    Stage(String),
}

impl EventStep {
    /// Every step but a stage: a stored word that names none of these is a deployer's stage.
    pub const JOBS: [EventStep; 8] = [
        EventStep::Deploy,
        EventStep::Redeploy,
        EventStep::Resume,
        EventStep::Restore,
        EventStep::Destroy,
        EventStep::Delete,
        EventStep::Repair,
        EventStep::Release,
    ];

    /// The stored word.
    pub fn as_str(&self) -> &str {
        match self {
            EventStep::Deploy => "deploy",
            EventStep::Redeploy => "redeploy",
            EventStep::Resume => "resume",
            EventStep::Restore => "restore",
            EventStep::Destroy => "destroy",
            EventStep::Delete => "delete",
            EventStep::Repair => "repair",
            EventStep::Release => "release",
            EventStep::Stage(key) => key,
        }
    }

    /// The step a stored word names. Every word is a step (one that names no job is a
    /// deployer's stage), and a stage whose key is a job's word reads as that job, so a word
    /// always reads back as the same step.
    pub fn parse(word: &str) -> EventStep {
        EventStep::JOBS
            .into_iter()
            .find(|job| job.as_str() == word)
            .unwrap_or_else(|| EventStep::Stage(word.to_owned()))
    }
}

impl From<&str> for EventStep {
    fn from(word: &str) -> Self {
        EventStep::parse(word)
    }
}

impl fmt::Display for EventStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventStep {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// How a step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum EventOutcome {
    /// About to be taken (recorded first, so an interrupted step shows).
    Started,
    /// Done.
    Succeeded,
    /// Failed; the detail says why.
    Failed,
}

impl EventOutcome {
    /// Every outcome.
    pub const ALL: [EventOutcome; 3] = [EventOutcome::Started, EventOutcome::Succeeded, EventOutcome::Failed];

    /// The stored word (`started`, `succeeded`, `failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Started => "started",
            EventOutcome::Succeeded => "succeeded",
            EventOutcome::Failed => "failed",
        }
    }
}

impl fmt::Display for EventOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An outcome word that is not one of [`EventOutcome::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event outcome {0:?}: use started, succeeded or failed")]
pub struct UnknownOutcome(pub String);

impl FromStr for EventOutcome {
    type Err = UnknownOutcome;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventOutcome::ALL.into_iter().find(|o| o.as_str() == s).ok_or_else(|| UnknownOutcome(s.to_owned()))
    }
}

/// The state of a pre-provisioned VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum PoolStatus {
    /// Being created; not claimable.
    Provisioning,
    /// Ready and unclaimed.
    Warm,
    /// Taken by a deployment that has not finished.
    Claimed,
    /// Serving an agent.
    Deployed,
    /// Provisioning failed; must be forgotten on the network before the row goes.
    Failed,
}

impl DeploymentEvent {
    /// A history row; `detail` never holds a secret.
    pub fn new(
        id: i64,
        agent_id: AgentId,
        step: EventStep,
        outcome: EventOutcome,
        detail: Option<String>,
        created_at: DateTime<Utc>,
    ) -> Self {
        DeploymentEvent { id, agent_id, step, outcome, detail, created_at }
    }
}

impl PoolVm {
    /// A VM whose provisioning just started: no instance hash yet, unclaimed.
    pub fn new(id: i64, created_at: DateTime<Utc>) -> Self {
        PoolVm {
            id,
            instance_hash: None,
            deployment: Deployment::default(),
            status: PoolStatus::Provisioning,
            agent_id: None,
            created_at,
            claimed_at: None,
        }
    }
}

impl PoolStatus {
    /// Every status.
    pub const ALL: [PoolStatus; 5] =
        [PoolStatus::Provisioning, PoolStatus::Warm, PoolStatus::Claimed, PoolStatus::Deployed, PoolStatus::Failed];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolStatus::Provisioning => "provisioning",
            PoolStatus::Warm => "warm",
            PoolStatus::Claimed => "claimed",
            PoolStatus::Deployed => "deployed",
            PoolStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for PoolStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PoolStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PoolStatus::ALL.into_iter().find(|status| status.as_str() == s).ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// A VM prepared in advance so that a deployment can skip provisioning.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolVm {
    /// Row id.
    pub id: i64,
    /// Aleph INSTANCE hash; `None` while the message is being posted.
    pub instance_hash: Option<String>,
    /// Where it runs and how to reach it.
    pub deployment: Deployment,
    /// Pool state.
    pub status: PoolStatus,
    /// The agent it serves or was claimed for.
    pub agent_id: Option<AgentId>,
    /// When provisioning started.
    pub created_at: DateTime<Utc>,
    /// When it was claimed.
    pub claimed_at: Option<DateTime<Utc>>,
}

/// A model Baal offers.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Model {
    /// The id sent to LibertAI.
    pub id: &'static str,
    /// Shown in menus.
    pub display_name: &'static str,
    /// Shown before the name.
    pub emoji: &'static str,
    /// One line on what it is.
    pub description: &'static str,
    /// What it is best at.
    pub best_for: &'static str,
    /// Context window in tokens (drives compaction).
    pub context_tokens: u32,
    /// What LibertAI charges for it; `None` while Baal does not know (costs show as unknown).
    pub price: Option<Price>,
}

/// LibertAI's price of a model, in credits per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// Credits per million tokens sent.
    pub prompt_per_million: f64,
    /// Credits per million tokens written.
    pub completion_per_million: f64,
}

impl Price {
    /// A price in credits per million tokens sent and written.
    pub const fn new(prompt_per_million: f64, completion_per_million: f64) -> Self {
        Price { prompt_per_million, completion_per_million }
    }

    /// What `prompt_tokens` sent and `completion_tokens` written cost, in credits.
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        // u64 → f64 rounds beyond 2^53 tokens, far past any real count.
        (prompt_tokens as f64 * self.prompt_per_million + completion_tokens as f64 * self.completion_per_million)
            / 1_000_000.0
    }
}

/// Every model offered, default first. Gemma is never offered.
///
/// Prices: LibertAI publishes them in an Aleph aggregate (`TEST_LTAI_PRICING` of
/// `0xe1F7220D201C64871Cefb25320a8a588393eE508`, per the libertai-docs repository), which Baal
/// cannot read offline. Until the figures are known they are `None` and every cost shows as
/// unknown; put them here, the one place prices live, when they are.
pub const MODELS: &[Model] = &[
    Model {
        id: "qwen3-coder-next",
        display_name: "Qwen 3 Coder Next",
        emoji: "✨",
        description: "Fast and current; strong at code",
        best_for: "code, debugging and technical work",
        context_tokens: 98_304,
        price: None,
    },
    Model {
        id: "glm-4.7",
        display_name: "GLM 4.7",
        emoji: "💬",
        description: "General-purpose conversation with a long context",
        best_for: "conversation, research, writing and long documents",
        context_tokens: 131_072,
        price: None,
    },
];

/// Context assumed for a model that is not in the catalog.
pub const FALLBACK_CONTEXT_TOKENS: u32 = 32_768;

impl Model {
    /// The default model (`qwen3-coder-next`).
    pub fn default_model() -> &'static Model {
        &MODELS[0]
    }

    /// The catalog entry for `id`, if Baal offers it.
    pub fn find(id: &str) -> Option<&'static Model> {
        MODELS.iter().find(|m| m.id == id)
    }

    /// Context window for any model id, with a safe fallback for unknown ones.
    pub fn context_tokens_of(id: &str) -> u32 {
        Model::find(id).map_or(FALLBACK_CONTEXT_TOKENS, |m| m.context_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_agent_row_is_pending_undeployed_and_keeps_what_was_asked() {
        let now = Utc::now();
        let new = NewAgent::new(7, "Scribe", "Be brief.", "glm-4.7").with_token_sealed(vec![1, 2]);
        let agent = Agent::from_new(AgentId(3), new.clone(), now);
        assert_eq!((agent.id, agent.owner_id, agent.status), (AgentId(3), 7, AgentStatus::Pending));
        assert_eq!((agent.name.as_str(), agent.slug.as_str()), ("Scribe", new.slug.as_str()));
        assert_eq!(agent.token_sealed, Some(vec![1, 2]));
        assert_eq!(agent.deployment, Deployment::default());
        assert!(!agent.deleted && agent.updated_at == now);
        let user = User::new(7, now).with_username("ann");
        assert_eq!((user.username.as_deref(), user.show_tools), (Some("ann"), false));
    }

    #[test]
    fn policies_default_to_how_agents_behaved_before_owners_chose() {
        let policy = AgentPolicy::new();
        assert_eq!(policy, AgentPolicy::default());
        assert_eq!((policy.sharing, policy.daily_token_budget, policy.visitor_daily_messages), (true, None, None));
        let set = policy.with_sharing(false).with_daily_token_budget(Some(50_000)).with_visitor_daily_messages(Some(5));
        assert_eq!((set.sharing, set.daily_token_budget, set.visitor_daily_messages), (false, Some(50_000), Some(5)));
        assert_eq!(set.with_daily_token_budget(None).daily_token_budget, None);
        let agent = Agent::from_new(AgentId(1), NewAgent::new(7, "A", "p", "glm-4.7"), Utc::now());
        assert_eq!((agent.policy, agent.usage_cursor), (AgentPolicy::default(), 0));
    }

    #[test]
    fn usage_groups_and_prices() {
        let day = "2026-11-25".parse().unwrap();
        let group = AgentUsage::new(AgentId(1), day, 7, crate::wire::UsageCause::Heartbeat, "glm-4.7", Payer::Owner);
        assert_eq!((group.total_tokens(), group.calls, group.estimated), (0, 0, false));
        let group = group.with_tokens(300, 200, 2, true);
        assert_eq!((group.prompt_tokens, group.completion_tokens, group.total_tokens()), (300, 200, 500));
        assert_eq!(group.clone().with_tokens(u64::MAX, 1, 1, false).total_tokens(), u64::MAX, "saturates");
        let price = Price::new(2.0, 10.0);
        assert!((price.cost(1_000_000, 500_000) - 7.0).abs() < 1e-9);
        assert_eq!(price.cost(0, 0), 0.0);
    }

    #[test]
    fn status_round_trips_through_its_name() {
        for status in AgentStatus::ALL {
            assert_eq!(status.as_str().parse::<AgentStatus>().unwrap(), status);
        }
        assert!("deployed".parse::<AgentStatus>().is_err());
    }

    #[test]
    fn event_words_read_back_as_they_were_stored() {
        for word in ["deploy", "redeploy", "resume", "restore", "destroy", "delete", "provision", "ship", ""] {
            assert_eq!(EventStep::parse(word).as_str(), word);
        }
        assert_eq!(EventStep::parse("delete"), EventStep::Delete);
        assert_eq!(EventStep::from("ship"), EventStep::Stage("ship".into()));
        assert_eq!(EventStep::Resume.to_string(), "resume");
        for outcome in EventOutcome::ALL {
            assert_eq!(outcome.as_str().parse::<EventOutcome>().unwrap(), outcome);
        }
        assert!("exploded".parse::<EventOutcome>().is_err());
        assert!("Started".parse::<EventOutcome>().is_err(), "stored words are exact");
        let json = serde_json::to_string(&(EventStep::Stage("ship".into()), EventOutcome::Failed)).unwrap();
        assert_eq!(json, r#"["ship","failed"]"#);
    }

    #[test]
    fn payers_and_leases() {
        assert_eq!(Payer::default(), Payer::Operator, "rows without a payer are the operator's");
        for payer in [Payer::Owner, Payer::Operator] {
            assert_eq!(payer.as_str().parse::<Payer>().unwrap(), payer);
        }
        assert!("nobody".parse::<Payer>().is_err());
        let now = Utc::now();
        let lease = Lease::new("a", now);
        assert!(!lease.is_live(now), "a lease that runs out now is over");
        assert!(lease.is_live(now - chrono::Duration::seconds(1)));
    }

    #[test]
    fn catalog_offers_exactly_the_two_models_and_never_gemma() {
        let ids: Vec<_> = MODELS.iter().map(|m| m.id).collect();
        assert_eq!(ids, ["qwen3-coder-next", "glm-4.7"]);
        assert_eq!(Model::default_model().context_tokens, 98_304);
        assert_eq!(Model::context_tokens_of("glm-4.7"), 131_072);
        assert_eq!(Model::context_tokens_of("gemma-3-27b"), FALLBACK_CONTEXT_TOKENS);
        assert!(MODELS.iter().all(|m| !m.id.contains("gemma")));
    }

    #[test]
    fn slugs_are_long_random_and_link_safe() {
        let a = new_slug();
        let b = new_slug();
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    }

    #[test]
    fn usage_resets_at_next_utc_midnight() {
        let now = "2026-11-25T23:59:30Z".parse::<DateTime<Utc>>().unwrap();
        let (day, resets) = usage_day(now);
        assert_eq!(day.to_string(), "2026-11-25");
        assert_eq!(resets.to_rfc3339(), "2026-11-26T00:00:00+00:00");
    }
}
