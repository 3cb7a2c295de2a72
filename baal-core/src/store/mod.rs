//! Persistence. The [`Store`] trait holds every operation the platform needs; [`PoolStore`] holds
//! the Aleph deployer's warm pool, which is the deployer's business, not the platform's.
//! [`SqlStore`] implements both with SeaORM over SQLite (the embedded default) and PostgreSQL
//! (for several bot processes sharing one database). Migrations run when a store is opened.
//!
//! Invariants every implementation keeps:
//! - the daily message counters (per user, and per visitor of an agent) are consumed
//!   atomically: concurrent callers can never get more than `limit` messages through in one UTC
//!   day;
//! - a page of an agent's usage is stored once: [`Store::usage_ingest`] adds its rows and moves
//!   the agent's usage cursor in one transaction, and only from the cursor the caller read;
//! - a budget notice is claimed by one conditional write, so of several processes exactly one
//!   sends each level's notice per day;
//! - a replaced share-link slug is remembered ([`Store::agent_by_retired_slug`]) and never found
//!   by [`Store::agent_by_slug`] again;
//! - deleting an agent (softly) keeps its usage;
//! - an agent's lease is taken atomically ([`Store::agent_lease_take`] is one conditional
//!   write): two holders never hold one agent's lease at once, and a lease only changes hands
//!   once it has run out or its holder released it; taking, renewing or releasing a lease does
//!   not change the agent's `updated_at`;
//! - a pool VM is claimed atomically: no VM is ever handed to two deployments;
//! - soft-deleted agents are invisible to every per-owner query and never count against a slot;
//! - a stored word the store does not know (a status, payer or event outcome) is an error naming
//!   its row, never a guess;
//! - values in the key-value area are stored as given: callers seal what is secret;
//! - an update a front-end took is recorded once ([`Store::update_seen`] is one conditional
//!   insert): of several calls for one update, in one process or several, exactly one is told it
//!   is the first.

mod entities;
mod migrations;
mod sql;

pub use sql::SqlStore;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use std::sync::Arc;

use crate::domain::{
    Agent, AgentId, AgentPolicy, AgentRuntime, AgentStatus, AgentUsage, Deployment, DeploymentEvent, EventOutcome,
    EventStep, NewAgent, Payer, PoolStatus, PoolVm, UsageDecision, User, UserId,
};

/// What kind of update [`Store::update_seen`] records: ids of different kinds never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SeenKind {
    /// A message: its id within its chat.
    Message,
    /// A button press: the transport's id of the press.
    Press,
}

impl SeenKind {
    /// The word stored for it.
    pub fn as_str(self) -> &'static str {
        match self {
            SeenKind::Message => "message",
            SeenKind::Press => "press",
        }
    }
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be reached or opened. The text names the URL without its password.
    #[error("cannot open the database {url}: {reason}. Check DATABASE_URL (or --database-url)")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// Why.
        reason: String,
    },
    /// The URL is not one Baal can use.
    #[error("unsupported DATABASE_URL {0:?}: use sqlite://path/to/baal.db?mode=rwc or postgres://user@host/db")]
    UnsupportedUrl(String),
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migration(String),
    /// The row the operation needs does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(String),
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Which agents [`Store::list_agents`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AgentFilter {
    /// Only this owner's agents.
    pub owner: Option<UserId>,
    /// Only agents in this status.
    pub status: Option<AgentStatus>,
    /// Include soft-deleted agents.
    pub include_deleted: bool,
}

impl AgentFilter {
    /// Every agent that is not deleted.
    pub fn all() -> Self {
        AgentFilter::default()
    }

    /// Only `owner`'s agents.
    pub fn owner(mut self, owner: UserId) -> Self {
        self.owner = Some(owner);
        self
    }

    /// Only agents in `status`.
    pub fn status(mut self, status: AgentStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Deleted agents too.
    pub fn include_deleted(mut self) -> Self {
        self.include_deleted = true;
        self
    }
}

/// Usage of one user on one day, for account views and the admin CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UsageRow {
    /// The user.
    pub user_id: UserId,
    /// The UTC day.
    pub day: NaiveDate,
    /// Messages counted.
    pub messages: u32,
}

impl UsageRow {
    /// `messages` counted for `user_id` on the UTC `day`.
    pub fn new(user_id: UserId, day: NaiveDate, messages: u32) -> Self {
        UsageRow { user_id, day, messages }
    }
}

/// Which stored usage [`Store::usage_rows`] reads: the UTC days `from..=to`, optionally of one
/// agent, one owner's agents, one charged user or one payer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct UsageQuery {
    /// First day read.
    pub from: NaiveDate,
    /// Last day read (included).
    pub to: NaiveDate,
    /// Only this agent's usage.
    pub agent: Option<AgentId>,
    /// Only the usage of this owner's agents (deleted ones included).
    pub owner: Option<UserId>,
    /// Only what this user was charged.
    pub user: Option<UserId>,
    /// Only what this payer's key paid.
    pub payer: Option<Payer>,
}

impl UsageQuery {
    /// Every agent's usage of the days `from..=to`.
    pub fn days(from: NaiveDate, to: NaiveDate) -> Self {
        UsageQuery { from, to, agent: None, owner: None, user: None, payer: None }
    }

    /// Only `agent`'s usage.
    pub fn agent(mut self, agent: AgentId) -> Self {
        self.agent = Some(agent);
        self
    }

    /// Only the usage of `owner`'s agents.
    pub fn owner(mut self, owner: UserId) -> Self {
        self.owner = Some(owner);
        self
    }

    /// Only what `user` was charged.
    pub fn user(mut self, user: UserId) -> Self {
        self.user = Some(user);
        self
    }

    /// Only what `payer`'s key paid.
    pub fn payer(mut self, payer: Payer) -> Self {
        self.payer = Some(payer);
        self
    }
}

/// Everything the platform persists.
#[async_trait]
pub trait Store: Send + Sync {
    /// Whether the database answers (readiness checks). This default reads a key that is never
    /// written; the SQL store sends `SELECT 1`.
    async fn ping(&self) -> StoreResult<()> {
        self.kv_get("baal.ping", "").await.map(|_| ())
    }

    // ---- users ----

    /// The user with `id`, created on first sight. A known username is refreshed.
    async fn user_get_or_create(&self, id: UserId, username: Option<&str>) -> StoreResult<User>;
    /// The user with `id`, if any.
    async fn user_get(&self, id: UserId) -> StoreResult<Option<User>>;
    /// A user together with the key-value entry `namespace`/`key` (`None` when the user does not
    /// exist). The platform reads a user and their conversation state on every message: the SQL
    /// store does it in one statement; this default makes two calls.
    async fn user_get_with_kv(
        &self,
        id: UserId,
        namespace: &str,
        key: &str,
    ) -> StoreResult<Option<(User, Option<Vec<u8>>)>> {
        let Some(user) = self.user_get(id).await? else { return Ok(None) };
        Ok(Some((user, self.kv_get(namespace, key).await?)))
    }
    /// Every user, oldest first.
    async fn users_list(&self) -> StoreResult<Vec<User>>;
    /// Stores the user's sealed LibertAI key, or clears it with `None`.
    async fn user_set_api_key(&self, id: UserId, sealed: Option<Vec<u8>>) -> StoreResult<()>;
    /// Flips tool visibility and returns the new value.
    async fn user_toggle_show_tools(&self, id: UserId) -> StoreResult<bool>;

    // ---- agents ----

    /// Inserts a new agent in status `pending`.
    async fn agent_create(&self, agent: NewAgent) -> StoreResult<Agent>;
    /// The agent with `id`, deleted or not.
    async fn agent_get(&self, id: AgentId) -> StoreResult<Option<Agent>>;
    /// The agent whose current share-link slug is `slug`, deleted or not (a replaced slug is
    /// not found here: see [`Store::agent_by_retired_slug`]).
    async fn agent_by_slug(&self, slug: &str) -> StoreResult<Option<Agent>>;
    /// The agent imported from the Python Baal's agent `python_id`, deleted or not.
    async fn agent_by_python_id(&self, python_id: i64) -> StoreResult<Option<Agent>>;
    /// Agents matching `filter`, oldest first.
    async fn list_agents(&self, filter: &AgentFilter) -> StoreResult<Vec<Agent>>;
    /// How many agents `owner` has that are not deleted (any status): the slot count.
    async fn count_active_agents(&self, owner: UserId) -> StoreResult<u64>;
    /// Sets the status (and bumps `updated_at`).
    async fn agent_set_status(&self, id: AgentId, status: AgentStatus) -> StoreResult<()>;
    /// Replaces the deployment facts.
    async fn agent_set_deployment(&self, id: AgentId, deployment: &Deployment) -> StoreResult<()>;
    /// Replaces the system prompt.
    async fn agent_set_prompt(&self, id: AgentId, system_prompt: &str) -> StoreResult<()>;
    /// Replaces the sealed bearer secret.
    async fn agent_set_token(&self, id: AgentId, token_sealed: &[u8]) -> StoreResult<()>;
    /// Replaces the tools visitors may use.
    async fn agent_set_visitor_tools(&self, id: AgentId, tools: &[String]) -> StoreResult<()>;
    /// Records whose key the agent now runs on.
    async fn agent_set_payer(&self, id: AgentId, payer: Payer) -> StoreResult<()>;
    /// Records what program serves the agent (after converting an imported one).
    async fn agent_set_runtime(&self, id: AgentId, runtime: AgentRuntime) -> StoreResult<()>;
    /// Marks the agent deleted and `stopped`. Returns false if it was unknown or already deleted.
    /// Its usage stays.
    async fn agent_soft_delete(&self, id: AgentId) -> StoreResult<bool>;
    /// Replaces what the owner decided about sharing and budgets (and bumps `updated_at`).
    async fn agent_set_policy(&self, id: AgentId, policy: &AgentPolicy) -> StoreResult<()>;
    /// Gives the agent the share-link slug `new_slug` and returns the one it had, which is
    /// retired in the same transaction: from then on [`Store::agent_by_slug`] no longer finds
    /// it and [`Store::agent_by_retired_slug`] does. `new_slug` must be neither the current slug
    /// nor a retired one (an error, nothing changed). Bumps `updated_at`.
    async fn agent_replace_slug(&self, id: AgentId, new_slug: &str) -> StoreResult<String>;
    /// The agent a replaced share-link slug belonged to, so that whoever opens an old link can
    /// be told it was replaced.
    async fn agent_by_retired_slug(&self, slug: &str) -> StoreResult<Option<AgentId>>;
    /// Claims the notice that the agent reached `level` % of its daily token budget on `day`.
    /// True when the caller should send it: the stored (day, level) was below (`day`, `level`)
    /// and is now (`day`, `level`), in one conditional write; false when this level or a higher
    /// one was already claimed that day (or a later day was). Each day starts again from 0.
    /// Does not change `updated_at`.
    async fn agent_budget_notice(&self, id: AgentId, day: NaiveDate, level: u8) -> StoreResult<bool>;

    // ---- leases: who deploys or deletes an agent ----

    /// Gives `holder` the agent's lease until `until`, in one atomic step, if nobody holds it,
    /// `holder` already does (a renewal), or the current lease ran out by `now`. True when
    /// `holder` now holds it; false when another holder's lease is live at `now` (or no agent
    /// has this id). `now` is the caller's clock, so every holder judges expiry alike.
    async fn agent_lease_take(
        &self,
        id: AgentId,
        holder: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Clears the agent's lease if `holder` still holds it (a lease another holder took over is
    /// left alone).
    async fn agent_lease_release(&self, id: AgentId, holder: &str) -> StoreResult<()>;

    // ---- daily usage ----

    /// Counts one message for `user` on `day` if fewer than `limit` were counted, atomically.
    /// `resets_at` is echoed in a refusal.
    async fn usage_consume(
        &self,
        user: UserId,
        day: NaiveDate,
        limit: u32,
        resets_at: DateTime<Utc>,
    ) -> StoreResult<UsageDecision>;
    /// Messages counted for `user` on `day`.
    async fn usage_get(&self, user: UserId, day: NaiveDate) -> StoreResult<u32>;
    /// Every counter of `day`, busiest first.
    async fn usage_on(&self, day: NaiveDate) -> StoreResult<Vec<UsageRow>>;
    /// Counts one message of `user` to `agent` on `day` if fewer than `limit` were counted,
    /// atomically: the owner's per-visitor limit. `resets_at` is echoed in a refusal.
    async fn visitor_consume(
        &self,
        agent: AgentId,
        user: UserId,
        day: NaiveDate,
        limit: u32,
        resets_at: DateTime<Utc>,
    ) -> StoreResult<UsageDecision>;
    /// Messages counted per visitor of `agent` per day of `from..=to`, busiest first.
    async fn visitor_counts(&self, agent: AgentId, from: NaiveDate, to: NaiveDate) -> StoreResult<Vec<UsageRow>>;

    // ---- metering: tokens per agent, day, charged user, cause, model and payer ----

    /// Adds `rows` to the stored usage of `agent`, in one transaction: each row's tokens and
    /// calls are added to the stored row with the same (agent, day, user, cause, model, payer),
    /// and `estimated` is kept once any call was estimated.
    ///
    /// With `cursor` `Some((expected, next))` (a page of the agent's `GET /usage`), the agent's
    /// [`usage_cursor`](Agent::usage_cursor) moves from `expected` to `next` in the same
    /// transaction; when it is not `expected` (another process stored that page) nothing is
    /// written and the answer is false. With `None` (the platform's own estimates) the rows are
    /// added and the answer is true. Every row must be `agent`'s; an unknown agent is `NotFound`.
    async fn usage_ingest(&self, agent: AgentId, cursor: Option<(i64, i64)>, rows: &[AgentUsage]) -> StoreResult<bool>;
    /// The stored usage `query` selects, ordered by day, agent, user, cause, model and payer.
    async fn usage_rows(&self, query: &UsageQuery) -> StoreResult<Vec<AgentUsage>>;
    /// Deletes the stored usage and visitor counters of days before `before`; how many rows went.
    async fn usage_prune(&self, before: NaiveDate) -> StoreResult<u64>;

    // ---- deployment history ----

    /// Appends a deployment event.
    async fn event_record(
        &self,
        agent: AgentId,
        step: &EventStep,
        outcome: EventOutcome,
        detail: Option<&str>,
    ) -> StoreResult<DeploymentEvent>;
    /// The agent's events, oldest first.
    async fn events_for(&self, agent: AgentId) -> StoreResult<Vec<DeploymentEvent>>;

    // ---- updates a front-end took ----

    /// Records that the front-end took update `id` of `kind` in `chat` at `at`. True the first
    /// time, false for every later call with the same chat, kind and id, atomically (one
    /// conditional insert): of two processes taking the same update, one handles it.
    async fn update_seen(&self, chat: i64, kind: SeenKind, id: i64, at: DateTime<Utc>) -> StoreResult<bool>;
    /// Forgets the updates taken before `before`; how many went.
    async fn updates_seen_prune(&self, before: DateTime<Utc>) -> StoreResult<u64>;

    // ---- key-value area for front-end state ----

    /// The value under `namespace`/`key`.
    async fn kv_get(&self, namespace: &str, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Inserts or replaces a value.
    async fn kv_put(&self, namespace: &str, key: &str, value: &[u8]) -> StoreResult<()>;
    /// Removes a value (no error if absent).
    async fn kv_delete(&self, namespace: &str, key: &str) -> StoreResult<()>;
    /// Every `(key, value)` of `namespace`, by key.
    async fn kv_list(&self, namespace: &str) -> StoreResult<Vec<(String, Vec<u8>)>>;

    // ---- the deployer's side ----

    /// The same database's [`PoolStore`], for views of the pool (`/pool`); `None` (the default)
    /// for a store that keeps no pool.
    fn pool_store(&self) -> Option<Arc<dyn PoolStore>> {
        None
    }
}

/// The Aleph deployer's warm pool of VMs. A trait of its own so that the deployer depends on
/// what it uses, not on everything the platform persists; [`SqlStore`] implements it beside
/// [`Store`], on the same database.
#[async_trait]
pub trait PoolStore: Send + Sync {
    /// Adds a VM in status `provisioning` (no instance hash yet).
    async fn pool_insert(&self) -> StoreResult<PoolVm>;
    /// Records what is known about a pool VM and its new status.
    async fn pool_update(
        &self,
        id: i64,
        instance_hash: Option<&str>,
        deployment: &Deployment,
        status: PoolStatus,
    ) -> StoreResult<()>;
    /// Atomically takes one `warm` VM (oldest first) for `agent`, or `None` when none is left.
    async fn pool_claim(&self, agent: AgentId) -> StoreResult<Option<PoolVm>>;
    /// Sets a VM's status and agent.
    async fn pool_set_status(&self, id: i64, status: PoolStatus, agent: Option<AgentId>) -> StoreResult<()>;
    /// Every pool VM, oldest first.
    async fn pool_list(&self) -> StoreResult<Vec<PoolVm>>;
    /// Deletes a pool row (only after its VM is forgotten on the network or serves an agent).
    async fn pool_remove(&self, id: i64) -> StoreResult<()>;
    /// The instance hash `agent` records (deleted or not); `None` when it records none or no
    /// agent has this id. How the pool tells whether a claimed VM went on to serve its agent.
    async fn agent_instance_hash(&self, agent: AgentId) -> StoreResult<Option<String>>;
}
