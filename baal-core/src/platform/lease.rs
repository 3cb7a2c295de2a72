//! Working on an agent under its lease ([`Store::agent_lease_take`]): deployment jobs and
//! deletions take it before they touch the agent, renew it every quarter of its length while
//! they work, and release it when done. Bot processes sharing a database (and `baal-cli`) thereby
//! never deploy or delete one agent at the same time, and a holder that dies only lets its lease
//! run out.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::AgentId;
use crate::store::{Store, StoreResult};

/// Renewals never come closer together than this, whatever the lease (a zero lease in tests).
const MIN_RENEWAL_INTERVAL: Duration = Duration::from_millis(10);

/// A holder id no other process (or call) has: the host, the process id and 32 random bits, so a
/// lease read from the database also says who holds it.
pub(crate) fn new_holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "baal".to_owned());
    format!("{host}-{}-{:08x}", std::process::id(), rand::random::<u32>())
}

/// When a lease of length `lease` taken at `now` runs out.
fn until(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(lease)
        .ok()
        .and_then(|lease| now.checked_add_signed(lease))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Takes (or renews) `agent`'s lease for `holder`; false while another holder's lease is live.
pub(crate) async fn take(store: &dyn Store, agent: AgentId, holder: &str, lease: Duration) -> StoreResult<bool> {
    let now = Utc::now();
    store.agent_lease_take(agent, holder, until(now, lease), now).await
}

/// Releases `holder`'s lease on `agent`; a failure only delays others until it runs out.
pub(crate) async fn release(store: &dyn Store, agent: AgentId, holder: &str) {
    if let Err(err) = store.agent_lease_release(agent, holder).await {
        tracing::warn!(agent = %agent, error = %err, "could not release a lease; others wait until it runs out");
    }
}

/// Runs `work` while renewing the lease `holder` took on `agent`. `None` when the lease was lost
/// (another holder took it once it ran out, or renewing failed for a whole lease): `work` is then
/// dropped, as a crash would stop it, because someone else may already be at the agent; whoever
/// holds the lease now carries on from the stored facts.
pub(crate) async fn while_held<T>(
    store: &dyn Store,
    agent: AgentId,
    holder: &str,
    lease: Duration,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        done = work => Some(done),
        () = keep(store, agent, holder, lease) => None,
    }
}

/// Renews the lease every quarter of its length; returns once it is lost.
async fn keep(store: &dyn Store, agent: AgentId, holder: &str, lease: Duration) {
    let every = (lease / 4).max(MIN_RENEWAL_INTERVAL);
    let mut held_until = until(Utc::now(), lease);
    loop {
        tokio::time::sleep(every).await;
        let now = Utc::now();
        match store.agent_lease_take(agent, holder, until(now, lease), now).await {
            Ok(true) => held_until = until(now, lease),
            Ok(false) => {
                tracing::warn!(agent = %agent, holder, "another holder took over the lease; stopping");
                return;
            }
            Err(err) if now >= held_until => {
                tracing::warn!(agent = %agent, error = %err, "could not renew the lease before it ran out; stopping");
                return;
            }
            Err(err) => tracing::warn!(agent = %agent, error = %err, "could not renew the lease; trying again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_differ_and_leases_never_overflow() {
        assert_ne!(new_holder(), new_holder());
        assert!(new_holder().contains(&format!("-{}-", std::process::id())));
        let now = Utc::now();
        assert_eq!(until(now, Duration::from_secs(90)) - now, chrono::Duration::seconds(90));
        assert_eq!(until(now, Duration::MAX), DateTime::<Utc>::MAX_UTC);
    }
}
