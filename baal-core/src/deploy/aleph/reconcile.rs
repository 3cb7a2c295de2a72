//! The wallet beside the database: every INSTANCE the operator's wallet pays for, with what the
//! database knows of it (an agent, a pool VM, or nothing), and forgetting the ones nothing uses.
//!
//! A crash between posting an INSTANCE and recording it, a FORGET that never went through, or a
//! VM an earlier (Python) Baal created leaves an instance billed that no agent points at and that
//! no delete will ever forget. `baal-cli aleph reconcile` lists and forgets them; the bot runs the
//! read-only part daily ([`watch_daily`]) and logs each leak as a warning.
//!
//! Invariants:
//! - the network is listed before the database is read: a deployment records an instance's hash
//!   before posting it, so an instance a deployment in progress created is known by the time the
//!   database is read, and is never called unknown for having been caught between post and record;
//! - only `processed` INSTANCE messages count: a forgotten or refused one bills nothing (pyaleph
//!   drops a forgotten message from the live list, and the status filter says so too);
//! - listing and classifying change nothing; forgetting is its own call, given the hashes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::AlephOperator;
use crate::domain::{AgentId, PoolStatus, UserId};
use crate::store::{AgentFilter, PoolStore, Store, StoreError};

/// Messages asked per page of the listing.
const PAGE_SIZE: u32 = 100;

/// How often the bot compares the wallet with the database.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// An INSTANCE the wallet pays for.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PaidInstance {
    /// The INSTANCE message's item hash (lowercase hex).
    pub hash: String,
    /// `metadata.name` (`baal-agent-…`, `baal-agent-pool-…` for Baal's).
    pub name: Option<String>,
    /// The channel it was posted on.
    pub channel: Option<String>,
    /// The CRN it is pinned to (`requirements.node.node_hash`).
    pub node_hash: Option<String>,
    /// When it was posted: since when it has been paid for.
    pub since: Option<DateTime<Utc>>,
}

impl PaidInstance {
    /// Reads one entry of `messages.json`; `None` when it has no item hash.
    fn from_message(message: &Value) -> Option<PaidInstance> {
        let hash = message.get("item_hash")?.as_str()?.to_ascii_lowercase();
        let content = message.get("content").unwrap_or(&Value::Null);
        let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_owned);
        // The envelope's time is the one pyaleph sorts by; the content's is the signer's own.
        let seconds = message.get("time").or_else(|| content.get("time")).and_then(Value::as_f64);
        Some(PaidInstance {
            hash,
            name: text(content.pointer("/metadata/name")),
            channel: text(message.get("channel")),
            node_hash: text(content.pointer("/requirements/node/node_hash")),
            since: seconds.and_then(|s| DateTime::from_timestamp_millis((s * 1000.0) as i64)),
        })
    }
}

/// What the database knows of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Holder {
    /// An agent records it as its VM.
    Agent {
        /// The agent.
        agent_id: AgentId,
        /// Its owner.
        owner_id: UserId,
        /// Its name.
        name: String,
        /// The agent was deleted: nothing uses the VM any more.
        deleted: bool,
    },
    /// A row of the warm pool.
    PoolVm {
        /// The pool row.
        pool_id: i64,
        /// Its state.
        status: PoolStatus,
    },
    /// Nothing in the database points at it.
    Unknown,
}

impl Holder {
    /// Whether the wallet pays for this VM while nothing uses it: unknown to the database, or
    /// still recorded by a deleted agent (whose FORGET did not go through).
    pub fn is_leak(&self) -> bool {
        matches!(self, Holder::Unknown | Holder::Agent { deleted: true, .. })
    }
}

/// The instance hashes the database knows, and who holds each.
#[derive(Debug, Clone, Default)]
pub struct Known {
    by_hash: HashMap<String, Holder>,
}

impl Known {
    /// Knows nothing.
    pub fn new() -> Known {
        Known::default()
    }

    /// Records that `holder` holds `hash`. A live agent wins over a deleted one or a pool row
    /// (a claimed pool VM is recorded on both).
    pub fn insert(&mut self, hash: &str, holder: Holder) {
        let rank = |holder: &Holder| match holder {
            Holder::Agent { deleted: false, .. } => 3,
            Holder::PoolVm { .. } => 2,
            Holder::Agent { deleted: true, .. } => 1,
            Holder::Unknown => 0,
        };
        let slot = self.by_hash.entry(hash.to_ascii_lowercase()).or_insert(Holder::Unknown);
        if rank(&holder) > rank(slot) {
            *slot = holder;
        }
    }

    /// Every hash recorded by an agent (deleted ones included) or a pool row.
    pub async fn from_store(agents: &dyn Store, pool: &dyn PoolStore) -> Result<Known, StoreError> {
        let mut known = Known::new();
        for agent in agents.list_agents(&AgentFilter::all().include_deleted()).await? {
            if let Some(hash) = agent.deployment.instance_hash.as_deref() {
                let holder = Holder::Agent {
                    agent_id: agent.id,
                    owner_id: agent.owner_id,
                    name: agent.name.clone(),
                    deleted: agent.deleted,
                };
                known.insert(hash, holder);
            }
        }
        for row in pool.pool_list().await? {
            if let Some(hash) = row.instance_hash.as_deref() {
                known.insert(hash, Holder::PoolVm { pool_id: row.id, status: row.status });
            }
        }
        Ok(known)
    }

    /// Who holds `hash`.
    pub fn holder(&self, hash: &str) -> Holder {
        self.by_hash.get(&hash.to_ascii_lowercase()).cloned().unwrap_or(Holder::Unknown)
    }
}

/// One paid instance and who holds it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Reconciled {
    /// The instance.
    pub instance: PaidInstance,
    /// Who holds it.
    pub holder: Holder,
}

/// Pairs each instance with its holder, in the order given.
pub fn classify(instances: Vec<PaidInstance>, known: &Known) -> Vec<Reconciled> {
    instances.into_iter().map(|instance| Reconciled { holder: known.holder(&instance.hash), instance }).collect()
}

/// Listing the wallet's instances or reading the database failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// The CCN could not be read.
    #[error("{0}")]
    Network(String),
    /// The database could not be read.
    #[error("reading the database failed: {0}")]
    Store(#[from] StoreError),
}

/// What came of forgetting one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ForgetOutcome {
    /// The instance.
    pub hash: String,
    /// Why it could not be forgotten; `None` once the network forgot it (or had already).
    pub error: Option<String>,
}

impl AlephOperator {
    /// Every INSTANCE this wallet sent that the network has processed and not forgotten.
    pub async fn paid_instances(&self) -> Result<Vec<PaidInstance>, ReconcileError> {
        let messages = self
            .ccn
            .messages_of(self.address(), "INSTANCE", "processed", PAGE_SIZE)
            .await
            .map_err(|e| ReconcileError::Network(e.to_string()))?;
        Ok(messages.iter().filter_map(PaidInstance::from_message).collect())
    }

    /// The wallet's instances, each with what the database knows of it. The network is read
    /// first (see the module's invariants).
    pub async fn reconcile(&self, agents: &dyn Store, pool: &dyn PoolStore) -> Result<Vec<Reconciled>, ReconcileError> {
        let instances = self.paid_instances().await?;
        let known = Known::from_store(agents, pool).await?;
        Ok(classify(instances, &known))
    }

    /// Posts a signed FORGET for each hash, as a delete does, one at a time; a target already
    /// gone counts as forgotten.
    pub async fn forget_instances(&self, hashes: &[String]) -> Vec<ForgetOutcome> {
        let mut outcomes = Vec::with_capacity(hashes.len());
        for hash in hashes {
            let error = self.forget(hash).await.err().map(|e| e.to_string());
            outcomes.push(ForgetOutcome { hash: hash.clone(), error });
        }
        outcomes
    }
}

/// One round of the bot's check: lists the wallet's instances and logs every leak as a warning
/// with its hash and since when it has been paid for. Returns the leaks.
pub async fn check_once(
    op: &AlephOperator,
    agents: &dyn Store,
    pool: &dyn PoolStore,
) -> Result<Vec<Reconciled>, ReconcileError> {
    let leaks: Vec<Reconciled> = op.reconcile(agents, pool).await?.into_iter().filter(|r| r.holder.is_leak()).collect();
    for leak in &leaks {
        let since = leak.instance.since.map(|t| t.to_rfc3339()).unwrap_or_else(|| "an unknown time".into());
        let held_by = match &leak.holder {
            Holder::Agent { agent_id, .. } => format!("deleted agent {agent_id}"),
            _ => "nothing in the database".into(),
        };
        tracing::warn!(
            hash = %leak.instance.hash,
            since = %since,
            name = leak.instance.name.as_deref().unwrap_or("-"),
            held_by = %held_by,
            "the wallet pays for an Aleph instance nothing uses; `baal-cli aleph reconcile --forget-unknown` forgets it"
        );
    }
    Ok(leaks)
}

/// Runs [`check_once`] now and then every [`CHECK_INTERVAL`], until the task is dropped. Only
/// reads: forgetting stays the operator's decision.
pub async fn watch_daily(op: AlephOperator, agents: Arc<dyn Store>, pool: Arc<dyn PoolStore>) {
    let mut ticks = tokio::time::interval(CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match check_once(&op, agents.as_ref(), pool.as_ref()).await {
            Ok(leaks) if leaks.is_empty() => tracing::info!("every Aleph instance the wallet pays for is in use"),
            Ok(leaks) => tracing::warn!(count = leaks.len(), "the wallet pays for Aleph instances nothing uses"),
            Err(err) => tracing::warn!(error = %err, "could not compare the wallet's instances with the database"),
        }
    }
}

/// The daily check the settings call for: `Some` where the Aleph deployer is configured.
#[cfg(feature = "platform")]
pub(crate) fn daily_watch(
    settings: &crate::config::Settings,
    store: Arc<crate::store::SqlStore>,
) -> Option<impl Future<Output = ()> + Send + 'static> {
    if settings.deployer_kind() != crate::config::DeployerKind::Aleph {
        return None;
    }
    match AlephOperator::from_settings(settings) {
        Ok(op) => Some(watch_daily(op, store.clone(), store)),
        Err(err) => {
            tracing::warn!(error = %err, "the daily check of the wallet's instances cannot start");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bot starts the daily check exactly where the Aleph deployer is configured.
    #[cfg(feature = "platform")]
    #[tokio::test]
    async fn the_daily_check_runs_where_the_aleph_deployer_is_configured() {
        let store = Arc::new(crate::store::SqlStore::open("sqlite::memory:").await.unwrap());
        let settings = |vars: &[(&str, &str)]| crate::config::Settings::from_vars(vars.iter().copied()).unwrap();
        let aleph = settings(&[
            ("ALEPH_PRIVATE_KEY", "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"),
            ("ALEPH_SSH_PUBKEY", "ssh-ed25519 AAAA op"),
        ]);
        assert!(daily_watch(&aleph, store.clone()).is_some());
        assert!(daily_watch(&settings(&[]), store).is_none(), "local agents: no wallet to check");
    }

    #[test]
    fn an_entry_of_the_listing_reads_as_a_paid_instance() {
        let entry = serde_json::json!({
            "item_hash": "AB".repeat(32), "time": 1_700_000_000.5, "channel": "BAAL",
            "content": {"metadata": {"name": "baal-agent-x"}, "requirements": {"node": {"node_hash": "cd"}}},
        });
        let paid = PaidInstance::from_message(&entry).unwrap();
        assert_eq!(paid.hash, "ab".repeat(32));
        assert_eq!(paid.name.as_deref(), Some("baal-agent-x"));
        assert_eq!(paid.node_hash.as_deref(), Some("cd"));
        assert_eq!(paid.since.unwrap().to_rfc3339(), "2023-11-14T22:13:20.500+00:00");
        assert_eq!(PaidInstance::from_message(&serde_json::json!({"time": 1})), None);
    }

    #[test]
    fn a_live_agent_wins_and_deleted_agents_count_as_leaks() {
        let hash = "ef".repeat(32);
        let mut known = Known::new();
        let deleted = Holder::Agent { agent_id: AgentId(1), owner_id: 5, name: "old".into(), deleted: true };
        known.insert(&hash, deleted.clone());
        assert!(known.holder(&hash).is_leak());
        known.insert(&hash.to_ascii_uppercase(), Holder::PoolVm { pool_id: 3, status: PoolStatus::Claimed });
        let live = Holder::Agent { agent_id: AgentId(2), owner_id: 5, name: "new".into(), deleted: false };
        known.insert(&hash, live.clone());
        known.insert(&hash, deleted);
        assert_eq!(known.holder(&hash), live);
        assert!(!live.is_leak());
        assert!(known.holder(&"00".repeat(32)).is_leak());
    }
}
