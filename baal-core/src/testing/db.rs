#![cfg(feature = "store")]
//! Fresh, isolated databases for tests, and the contract every [`Store`] must keep.
//!
//! - [`sqlite`]: a [`SqlStore`] on a SQLite file in its own temporary directory.
//! - [`postgres`]: a [`SqlStore`] in its own PostgreSQL schema (dropped when the [`TestDb`] is
//!   dropped), or `None` after printing `SKIPPED: …` when the server does not answer. With
//!   `BAAL_REQUIRE_POSTGRES=1` or `CI=true` an unreachable server panics instead, so CI cannot
//!   pass by skipping. The server is `BAAL_TEST_PG_URL`, default
//!   `postgres://postgres@127.0.0.1:5432/test`.
//! - [`check_store_contract`], [`check_usage_race`], [`check_lease_race`],
//!   [`check_pool_store_contract`], [`check_pool_claim_race`]: the behaviour any [`Store`] and
//!   [`PoolStore`] implementation must show; embedders with their own store can run them too.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use sea_orm::sqlx::postgres::PgConnection;
use sea_orm::sqlx::{AssertSqlSafe, Connection as _, Executor as _};

use crate::config::redact_url_password;
use crate::domain::{
    AgentId, AgentStatus, Deployment, EventOutcome, EventStep, Lease, NewAgent, Payer, PoolStatus, UsageDecision,
};
use crate::store::{AgentFilter, PoolStore, SqlStore, Store, StoreError};

/// The PostgreSQL server tests use when `BAAL_TEST_PG_URL` is unset.
pub const DEFAULT_TEST_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A store on a database that belongs to one test. Dropping it deletes the database
/// (temporary directory or PostgreSQL schema).
pub struct TestDb {
    store: SqlStore,
    url: String,
    _dir: Option<tempfile::TempDir>,
    _pg_schema: Option<PgSchema>,
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb").field("url", &redact_url_password(&self.url)).finish()
    }
}

impl TestDb {
    /// The store.
    pub fn store(&self) -> &SqlStore {
        &self.store
    }

    /// The store behind an `Arc`, for code and tasks that hold a `dyn Store`.
    pub fn shared(&self) -> Arc<dyn Store> {
        Arc::new(self.store.clone())
    }

    /// The same database as a [`PoolStore`], for the Aleph deployer's pool.
    pub fn shared_pool(&self) -> Arc<dyn PoolStore> {
        Arc::new(self.store.clone())
    }

    /// A URL that opens this same database (for `SqlStore::open`, or `--database-url` of a binary).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `sqlite` or `postgres`, for messages.
    pub fn backend_name(&self) -> &'static str {
        if self.store.is_postgres() { "postgres" } else { "sqlite" }
    }
}

/// A schema to drop when the test ends.
struct PgSchema {
    admin_url: String,
    name: String,
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be shutting down: clean up on a thread
        // with its own small runtime.
        let admin_url = self.admin_url.clone();
        // A generated name, never outside input.
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let mut conn = connect_admin(&admin_url).await.ok()?;
                let dropped = conn.execute(AssertSqlSafe(sql)).await.ok();
                let _ = conn.close().await;
                dropped
            })
        });
        if !matches!(cleanup.join(), Ok(Some(_))) {
            let _ = writeln!(std::io::stderr(), "warning: could not drop test schema {}", self.name);
        }
    }
}

/// A fresh SQLite-file store in a temporary directory, migrated.
///
/// # Panics
/// When the file cannot be created or migrated: the test cannot run.
pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("create a temporary directory for the test database");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("baal.db").display());
    let store = SqlStore::open(&url).await.unwrap_or_else(|err| panic!("open test SQLite store: {err}"));
    TestDb { store, url, _dir: Some(dir), _pg_schema: None }
}

/// The PostgreSQL server URL for tests (`BAAL_TEST_PG_URL`, else [`DEFAULT_TEST_PG_URL`]).
pub fn postgres_url() -> String {
    std::env::var("BAAL_TEST_PG_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_TEST_PG_URL.into())
}

/// Whether an unreachable PostgreSQL must fail the test (`BAAL_REQUIRE_POSTGRES=1` or `CI=true`).
pub fn postgres_required() -> bool {
    let set = |name: &str, values: &[&str]| {
        std::env::var(name).is_ok_and(|v| values.iter().any(|want| v.trim().eq_ignore_ascii_case(want)))
    };
    set("BAAL_REQUIRE_POSTGRES", &["1", "true", "yes"]) || set("CI", &["1", "true"])
}

/// A fresh store in its own schema on the test PostgreSQL server, migrated; `None` (after printing
/// `SKIPPED: PostgreSQL not reachable at …`) when the server does not answer and it is not
/// required.
///
/// # Panics
/// When the server does not answer and [`postgres_required`], or when the schema cannot be
/// created or migrated.
pub async fn postgres() -> Option<TestDb> {
    let admin_url = postgres_url();
    let mut admin = match connect_admin(&admin_url).await {
        Ok(conn) => conn,
        Err(reason) => {
            let shown = redact_url_password(&admin_url);
            if postgres_required() {
                panic!(
                    "PostgreSQL not reachable at {shown} ({reason}), and it is required here \
                     (BAAL_REQUIRE_POSTGRES=1 or CI=true): start the server or fix BAAL_TEST_PG_URL"
                );
            }
            // Straight to the stream: libtest captures `eprintln!`, and a skip must be seen.
            let _ = writeln!(std::io::stderr(), "SKIPPED: PostgreSQL not reachable at {shown} ({reason})");
            return None;
        }
    };
    let name = format!("baal_test_{}", uuid::Uuid::new_v4().simple());
    admin
        // The schema name is generated above from a UUID: nothing outside reaches this SQL.
        .execute(AssertSqlSafe(format!("CREATE SCHEMA \"{name}\"")))
        .await
        .unwrap_or_else(|err| panic!("create test schema {name}: {err}"));
    let _ = admin.close().await;
    let pg_schema = PgSchema { admin_url: admin_url.clone(), name: name.clone() };

    // The search path travels in the URL, so every pooled connection (and any process given
    // this URL) lands in the test's schema.
    let separator = if admin_url.contains('?') { '&' } else { '?' };
    let url = format!("{admin_url}{separator}options=-c%20search_path%3D{name}");
    let store = SqlStore::open(&url).await.unwrap_or_else(|err| panic!("open test PostgreSQL store: {err}"));
    Some(TestDb { store, url, _dir: None, _pg_schema: Some(pg_schema) })
}

/// A single direct connection for schema work: it fails fast with the server's own reason, where
/// a pool would retry until its timeout and report only that.
async fn connect_admin(url: &str) -> Result<PgConnection, String> {
    match tokio::time::timeout(Duration::from_secs(3), PgConnection::connect(url)).await {
        Err(_) => Err("no answer within 3 s".into()),
        Ok(result) => result.map_err(|err| err.to_string()),
    }
}

fn day(text: &str) -> NaiveDate {
    text.parse().expect("a valid test date")
}

/// Exercises every [`Store`] method on an empty store and checks the documented behaviour.
///
/// # Panics
/// On the first behaviour that does not match, naming it.
pub async fn check_store_contract(store: &dyn Store) {
    check_users(store).await;
    check_agents(store).await;
    check_payers(store).await;
    check_leases(store).await;
    check_usage(store).await;
    check_events(store).await;
    check_kv(store).await;
    check_reads_with_kv(store).await;
}

async fn check_users(store: &dyn Store) {
    assert_eq!(store.user_get(10).await.unwrap(), None, "unknown user");
    assert!(store.users_list().await.unwrap().is_empty(), "fresh store has no users");

    let alice = store.user_get_or_create(10, Some("alice")).await.unwrap();
    assert_eq!((alice.id, alice.username.as_deref()), (10, Some("alice")));
    assert_eq!(alice.api_key_sealed, None, "new users are on the free tier");
    assert!(alice.show_tools, "tool notices are shown by default");

    let again = store.user_get_or_create(10, None).await.unwrap();
    assert_eq!(again, alice, "get-or-create without a username keeps the row as it was");
    let renamed = store.user_get_or_create(10, Some("alice2")).await.unwrap();
    assert_eq!(renamed.username.as_deref(), Some("alice2"), "a known username is refreshed");
    assert_eq!(renamed.created_at, alice.created_at, "refreshing keeps created_at");

    store.user_get_or_create(11, None).await.unwrap();
    let ids: Vec<_> = store.users_list().await.unwrap().iter().map(|u| u.id).collect();
    assert_eq!(ids, [10, 11], "users are listed oldest first");

    store.user_set_api_key(10, Some(vec![1, 2, 3])).await.unwrap();
    assert_eq!(store.user_get(10).await.unwrap().unwrap().api_key_sealed, Some(vec![1, 2, 3]));
    store.user_set_api_key(10, None).await.unwrap();
    assert_eq!(store.user_get(10).await.unwrap().unwrap().api_key_sealed, None, "the key is cleared");
    assert!(matches!(store.user_set_api_key(999, None).await, Err(StoreError::NotFound(_))));

    assert!(!store.user_toggle_show_tools(10).await.unwrap());
    assert!(!store.user_get(10).await.unwrap().unwrap().show_tools);
    assert!(store.user_toggle_show_tools(10).await.unwrap());
    assert!(matches!(store.user_toggle_show_tools(999).await, Err(StoreError::NotFound(_))));
}

async fn check_agents(store: &dyn Store) {
    store.user_get_or_create(20, Some("owner")).await.unwrap();
    store.user_get_or_create(21, None).await.unwrap();

    let orphan = store.agent_create(NewAgent::new(777, "x", "y", "glm-4.7")).await;
    assert!(matches!(orphan, Err(StoreError::NotFound(_))), "an agent needs an existing owner: {orphan:?}");

    let new = NewAgent::new(20, "Helper", "Be kind.", "qwen3-coder-next").with_token_sealed(vec![9, 9]);
    let helper = store.agent_create(new.clone()).await.unwrap();
    assert_eq!(helper.owner_id, 20);
    assert_eq!(helper.name, "Helper");
    assert_eq!(helper.system_prompt, "Be kind.");
    assert_eq!(helper.model, "qwen3-coder-next");
    assert_eq!(helper.status, AgentStatus::Pending);
    assert!(!helper.deleted);
    assert_eq!(helper.deployment, Deployment::default());
    assert_eq!(helper.token_sealed, Some(vec![9, 9]));
    assert_eq!(helper.slug, new.slug);
    assert_eq!(helper.visitor_tools, new.visitor_tools);
    assert_eq!((helper.payer, &helper.lease), (Payer::Operator, &None), "no payer recorded yet, no lease");

    let second = store.agent_create(NewAgent::new(20, "Second", "p", "glm-4.7")).await.unwrap();
    let other = store.agent_create(NewAgent::new(21, "Other", "p", "glm-4.7")).await.unwrap();
    assert!(helper.id < second.id && second.id < other.id, "ids grow");

    let mut duplicate = NewAgent::new(21, "Dup", "p", "glm-4.7");
    duplicate.slug = helper.slug.clone();
    assert!(store.agent_create(duplicate).await.is_err(), "slugs are unique");

    assert_eq!(store.agent_get(helper.id).await.unwrap().as_ref(), Some(&helper));
    assert_eq!(store.agent_get(crate::domain::AgentId(424242)).await.unwrap(), None);
    assert_eq!(store.agent_by_slug(&helper.slug).await.unwrap().map(|a| a.id), Some(helper.id));
    assert_eq!(store.agent_by_slug("nope").await.unwrap(), None);

    store.agent_set_status(second.id, AgentStatus::Running).await.unwrap();
    let ids = |agents: Vec<crate::domain::Agent>| agents.iter().map(|a| a.id).collect::<Vec<_>>();
    assert_eq!(ids(store.list_agents(&AgentFilter::all()).await.unwrap()), [helper.id, second.id, other.id]);
    assert_eq!(ids(store.list_agents(&AgentFilter::all().owner(20)).await.unwrap()), [helper.id, second.id]);
    assert_eq!(ids(store.list_agents(&AgentFilter::all().status(AgentStatus::Running)).await.unwrap()), [second.id]);
    assert_eq!(ids(store.list_agents(&AgentFilter::all().owner(21).status(AgentStatus::Running)).await.unwrap()), [],);
    assert_eq!(store.count_active_agents(20).await.unwrap(), 2);

    let before = store.agent_get(helper.id).await.unwrap().unwrap();
    let deployment = Deployment {
        instance_hash: Some("ab".repeat(32)),
        crn_url: Some("https://crn.example".into()),
        vm_url: Some("https://x.2n6.me".into()),
        vm_host: Some("192.0.2.7".into()),
        ssh_port: Some(24_005),
        ssh_host_key: Some("ssh-ed25519 AAAAC3Nz host".into()),
    };
    store.agent_set_deployment(helper.id, &deployment).await.unwrap();
    store.agent_set_prompt(helper.id, "Be brief.").await.unwrap();
    store.agent_set_token(helper.id, &[7, 7, 7]).await.unwrap();
    store.agent_set_visitor_tools(helper.id, &["web_fetch".to_owned()]).await.unwrap();
    store.agent_set_status(helper.id, AgentStatus::Failed).await.unwrap();
    let after = store.agent_get(helper.id).await.unwrap().unwrap();
    assert_eq!(after.deployment, deployment);
    assert_eq!(after.system_prompt, "Be brief.");
    assert_eq!(after.token_sealed, Some(vec![7, 7, 7]));
    assert_eq!(after.visitor_tools, ["web_fetch"]);
    assert_eq!(after.status, AgentStatus::Failed);
    assert!(after.updated_at >= before.updated_at, "updates bump updated_at");
    assert_eq!(after.created_at, before.created_at);
    store.agent_set_deployment(helper.id, &Deployment::default()).await.unwrap();
    assert_eq!(store.agent_get(helper.id).await.unwrap().unwrap().deployment, Deployment::default());
    store.agent_set_visitor_tools(helper.id, &[]).await.unwrap();
    assert!(store.agent_get(helper.id).await.unwrap().unwrap().visitor_tools.is_empty());

    let unknown = crate::domain::AgentId(424242);
    assert!(matches!(store.agent_set_status(unknown, AgentStatus::Running).await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.agent_set_deployment(unknown, &deployment).await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.agent_set_prompt(unknown, "p").await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.agent_set_token(unknown, &[1]).await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.agent_set_visitor_tools(unknown, &[]).await, Err(StoreError::NotFound(_))));

    assert!(store.agent_soft_delete(helper.id).await.unwrap());
    assert!(!store.agent_soft_delete(helper.id).await.unwrap(), "deleting twice reports false");
    assert!(!store.agent_soft_delete(unknown).await.unwrap(), "deleting an unknown agent reports false");
    let deleted = store.agent_get(helper.id).await.unwrap().unwrap();
    assert!(deleted.deleted, "a deleted agent can still be read by id");
    assert_eq!(deleted.status, AgentStatus::Stopped);
    assert_eq!(store.count_active_agents(20).await.unwrap(), 1, "deleted agents free their slot");
    assert_eq!(ids(store.list_agents(&AgentFilter::all().owner(20)).await.unwrap()), [second.id]);
    assert_eq!(
        ids(store.list_agents(&AgentFilter::all().owner(20).include_deleted()).await.unwrap()),
        [helper.id, second.id]
    );
    assert_eq!(
        ids(store.list_agents(&AgentFilter::all().status(AgentStatus::Stopped)).await.unwrap()),
        [],
        "deleted agents stay hidden under a status filter"
    );
}

async fn check_usage(store: &dyn Store) {
    let today = day("2026-11-25");
    let resets_at = Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap();
    assert_eq!(store.usage_get(30, today).await.unwrap(), 0);
    for expected in 1..=3 {
        let decision = store.usage_consume(30, today, 3, resets_at).await.unwrap();
        assert_eq!(decision, UsageDecision::Allowed { used: expected, limit: 3 });
    }
    let refused = store.usage_consume(30, today, 3, resets_at).await.unwrap();
    assert_eq!(refused, UsageDecision::Refused { used: 3, limit: 3, resets_at });
    assert_eq!(store.usage_get(30, today).await.unwrap(), 3, "a refusal counts nothing");

    let zero = store.usage_consume(31, today, 0, resets_at).await.unwrap();
    assert_eq!(zero, UsageDecision::Refused { used: 0, limit: 0, resets_at }, "a zero limit refuses");
    assert_eq!(store.usage_get(31, today).await.unwrap(), 0);

    let tomorrow = day("2026-11-26");
    assert!(matches!(
        store.usage_consume(30, tomorrow, 3, resets_at).await.unwrap(),
        UsageDecision::Allowed { used: 1, .. }
    ));
    store.usage_consume(32, today, 10, resets_at).await.unwrap();

    let rows = store.usage_on(today).await.unwrap();
    let summary: Vec<_> = rows.iter().map(|r| (r.user_id, r.day, r.messages)).collect();
    assert_eq!(summary, [(30, today, 3), (32, today, 1)], "busiest first, one day only");
    assert!(store.usage_on(day("2026-01-01")).await.unwrap().is_empty());
}

async fn check_events(store: &dyn Store) {
    store.user_get_or_create(40, None).await.unwrap();
    let agent = store.agent_create(NewAgent::new(40, "Ev", "p", "glm-4.7")).await.unwrap();
    assert!(store.events_for(agent.id).await.unwrap().is_empty());
    let provision = EventStep::from("provision");
    let first = store.event_record(agent.id, &provision, EventOutcome::Started, None).await.unwrap();
    let second = store.event_record(agent.id, &provision, EventOutcome::Failed, Some("no CRN answered")).await.unwrap();
    assert_eq!((first.agent_id, &first.step, first.outcome), (agent.id, &provision, EventOutcome::Started));
    assert_eq!(second.detail.as_deref(), Some("no CRN answered"));
    let mut recorded = vec![first, second];
    for step in EventStep::JOBS {
        for outcome in EventOutcome::ALL {
            recorded.push(store.event_record(agent.id, &step, outcome, None).await.unwrap());
        }
    }
    let read = store.events_for(agent.id).await.unwrap();
    assert_eq!(read, recorded, "events oldest first, each step and outcome read back as recorded");
    let unknown =
        store.event_record(crate::domain::AgentId(424242), &EventStep::Deploy, EventOutcome::Started, None).await;
    assert!(matches!(unknown, Err(StoreError::NotFound(_))), "events need an agent: {unknown:?}");
}

/// Exercises every [`PoolStore`] method on an empty pool. `store` is the same database's
/// [`Store`], which creates the agents VMs are claimed for.
///
/// # Panics
/// On the first behaviour that does not match, naming it.
pub async fn check_pool_store_contract(store: &dyn Store, pool: &dyn PoolStore) {
    store.user_get_or_create(50, None).await.unwrap();
    let agent = store.agent_create(NewAgent::new(50, "Pool", "p", "glm-4.7")).await.unwrap();
    let store = pool;

    let first = store.pool_insert().await.unwrap();
    assert_eq!(first.status, PoolStatus::Provisioning);
    assert_eq!((first.instance_hash.as_deref(), first.agent_id, first.claimed_at), (None, None, None));
    assert_eq!(store.pool_claim(agent.id).await.unwrap(), None, "a provisioning VM cannot be claimed");

    let second = store.pool_insert().await.unwrap();
    let facts = |n: u16| Deployment {
        crn_url: Some("https://crn.example".into()),
        vm_url: Some(format!("https://vm{n}.2n6.me")),
        vm_host: Some("192.0.2.9".into()),
        ssh_port: Some(24_000 + n),
        ..Deployment::default()
    };
    store.pool_update(second.id, Some(&"22".repeat(32)), &facts(2), PoolStatus::Warm).await.unwrap();
    store.pool_update(first.id, Some(&"11".repeat(32)), &facts(1), PoolStatus::Warm).await.unwrap();
    assert!(matches!(store.pool_update(424242, None, &facts(3), PoolStatus::Warm).await, Err(StoreError::NotFound(_))));

    let claimed = store.pool_claim(agent.id).await.unwrap().expect("a warm VM is claimed");
    assert_eq!(claimed.id, first.id, "the oldest warm VM goes first");
    assert_eq!(claimed.status, PoolStatus::Claimed);
    assert_eq!(claimed.agent_id, Some(agent.id));
    assert!(claimed.claimed_at.is_some());
    assert_eq!(claimed.instance_hash.as_deref(), Some("11".repeat(32).as_str()));
    assert_eq!(claimed.deployment.vm_url.as_deref(), Some("https://vm1.2n6.me"));
    assert_eq!(claimed.deployment.ssh_port, Some(24_001));

    let next = store.pool_claim(agent.id).await.unwrap().expect("the second warm VM");
    assert_eq!(next.id, second.id);
    assert_eq!(store.pool_claim(agent.id).await.unwrap(), None, "no warm VM left");

    // A failed deployment releases its VM.
    store.pool_set_status(second.id, PoolStatus::Warm, None).await.unwrap();
    let listed = store.pool_list().await.unwrap();
    assert_eq!(listed.iter().map(|vm| vm.id).collect::<Vec<_>>(), [first.id, second.id], "oldest first");
    let released = &listed[1];
    assert_eq!((released.status, released.agent_id, released.claimed_at), (PoolStatus::Warm, None, None));
    store.pool_set_status(first.id, PoolStatus::Deployed, Some(agent.id)).await.unwrap();
    let deployed = store.pool_list().await.unwrap().remove(0);
    assert_eq!((deployed.status, deployed.agent_id), (PoolStatus::Deployed, Some(agent.id)));
    assert!(deployed.claimed_at.is_some(), "deploying keeps the claim time");
    assert!(matches!(store.pool_set_status(424242, PoolStatus::Failed, None).await, Err(StoreError::NotFound(_))));

    store.pool_remove(first.id).await.unwrap();
    store.pool_remove(first.id).await.unwrap();
    assert_eq!(store.pool_list().await.unwrap().iter().map(|vm| vm.id).collect::<Vec<_>>(), [second.id]);

    assert_eq!(store.agent_instance_hash(agent.id).await.unwrap(), None, "an agent with no instance yet");
    assert_eq!(store.agent_instance_hash(AgentId(424242)).await.unwrap(), None, "an unknown agent");
}

async fn check_kv(store: &dyn Store) {
    assert_eq!(store.kv_get("telegram", "session").await.unwrap(), None);
    store.kv_put("telegram", "session", &[0, 1, 2, 255]).await.unwrap();
    assert_eq!(store.kv_get("telegram", "session").await.unwrap(), Some(vec![0, 1, 2, 255]));
    store.kv_put("telegram", "session", b"replaced").await.unwrap();
    assert_eq!(store.kv_get("telegram", "session").await.unwrap(), Some(b"replaced".to_vec()));
    store.kv_put("other", "session", b"").await.unwrap();
    assert_eq!(store.kv_get("other", "session").await.unwrap(), Some(Vec::new()), "namespaces are separate");
    store.kv_delete("telegram", "session").await.unwrap();
    store.kv_delete("telegram", "session").await.unwrap();
    assert_eq!(store.kv_get("telegram", "session").await.unwrap(), None);
    assert_eq!(store.kv_get("other", "session").await.unwrap(), Some(Vec::new()));
}

async fn check_reads_with_kv(store: &dyn Store) {
    assert_eq!(store.user_get_with_kv(90, "state", "90").await.unwrap(), None, "unknown user");
    let user = store.user_get_or_create(90, Some("kv")).await.unwrap();
    assert_eq!(store.user_get_with_kv(90, "state", "90").await.unwrap(), Some((user.clone(), None)));
    store.kv_put("state", "90", b"{\"chat\":1}").await.unwrap();
    store.kv_put("state", "91", b"someone else").await.unwrap();
    store.kv_put("other", "90", b"another namespace").await.unwrap();
    assert_eq!(
        store.user_get_with_kv(90, "state", "90").await.unwrap(),
        Some((user.clone(), Some(b"{\"chat\":1}".to_vec()))),
        "the user's entry, not a neighbour's or another namespace's"
    );
    assert_eq!(store.user_get(90).await.unwrap(), Some(user), "the joined read gives the same user");
}

async fn check_payers(store: &dyn Store) {
    store.user_get_or_create(80, None).await.unwrap();
    let agent = store.agent_create(NewAgent::new(80, "Payer", "p", "glm-4.7")).await.unwrap();
    store.agent_set_payer(agent.id, Payer::Owner).await.unwrap();
    let read = store.agent_get(agent.id).await.unwrap().unwrap();
    assert_eq!(read.payer, Payer::Owner);
    assert!(read.updated_at >= agent.updated_at);
    store.agent_set_status(agent.id, AgentStatus::Running).await.unwrap();
    assert_eq!(store.agent_get(agent.id).await.unwrap().unwrap().payer, Payer::Owner, "kept by other updates");
    store.agent_set_payer(agent.id, Payer::Operator).await.unwrap();
    let listed = store.list_agents(&AgentFilter::all().owner(80)).await.unwrap();
    assert_eq!(listed.iter().map(|a| a.payer).collect::<Vec<_>>(), [Payer::Operator], "listings carry the payer");
    let unknown = store.agent_set_payer(AgentId(424242), Payer::Owner).await;
    assert!(matches!(unknown, Err(StoreError::NotFound(_))), "{unknown:?}");
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().expect("a valid test time")
}

/// Leases with times of the test's choosing: the store judges expiry by the `now` it is given.
async fn check_leases(store: &dyn Store) {
    store.user_get_or_create(85, None).await.unwrap();
    let agent = store.agent_create(NewAgent::new(85, "Leased", "p", "glm-4.7")).await.unwrap();
    let other = store.agent_create(NewAgent::new(85, "Other", "p", "glm-4.7")).await.unwrap();
    let (t0, t1, t2, t3) = (
        at("2030-01-01T00:00:00Z"),
        at("2030-01-01T00:01:00Z"),
        at("2030-01-01T00:02:00Z"),
        at("2030-01-01T00:03:00Z"),
    );
    let lease_of = |id| async move { store.agent_get(id).await.unwrap().unwrap().lease };

    assert!(store.agent_lease_take(agent.id, "one", t1, t0).await.unwrap(), "a free lease is taken");
    assert_eq!(lease_of(agent.id).await, Some(Lease::new("one", t1)));
    assert!(!store.agent_lease_take(agent.id, "two", t2, t0).await.unwrap(), "a live lease is refused");
    assert!(
        !store.agent_lease_take(agent.id, "two", t2, t1 - chrono::Duration::microseconds(1)).await.unwrap(),
        "still live a moment before it runs out"
    );
    assert!(store.agent_lease_take(agent.id, "one", t2, t1 - chrono::Duration::seconds(30)).await.unwrap(), "renewed");
    assert_eq!(lease_of(agent.id).await, Some(Lease::new("one", t2)));
    assert_eq!(lease_of(other.id).await, None, "one agent's lease is not another's");
    assert!(store.agent_lease_take(other.id, "two", t1, t0).await.unwrap(), "each agent has its own lease");

    assert!(store.agent_lease_take(agent.id, "two", t3, t2).await.unwrap(), "a lease that ran out is taken over");
    assert_eq!(lease_of(agent.id).await, Some(Lease::new("two", t3)));
    store.agent_lease_release(agent.id, "one").await.unwrap();
    assert_eq!(lease_of(agent.id).await, Some(Lease::new("two", t3)), "a former holder cannot release it");
    store.agent_lease_release(agent.id, "two").await.unwrap();
    assert_eq!(lease_of(agent.id).await, None, "released by its holder");
    assert!(store.agent_lease_take(agent.id, "three", t1, t0).await.unwrap(), "a released lease is free");

    let read = store.agent_get(agent.id).await.unwrap().unwrap();
    assert_eq!(read.updated_at, agent.updated_at, "leases do not change the agent");
    assert!(!store.agent_lease_take(AgentId(424242), "one", t1, t0).await.unwrap(), "no agent, no lease");
    store.agent_lease_release(AgentId(424242), "one").await.unwrap();
}

/// `callers` concurrent tasks consume one message each under `limit`: exactly `limit` are
/// allowed, the rest refused, and the counter ends at `limit`.
///
/// # Panics
/// When more or fewer than `limit` get through.
pub async fn check_usage_race(store: Arc<dyn Store>, callers: u32, limit: u32) {
    let today = day("2026-11-25");
    let resets_at = Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.usage_consume(60, today, limit, resets_at).await })
        })
        .collect();
    let mut allowed = Vec::new();
    let mut refused = 0;
    for task in tasks {
        match task.await.expect("consume task").expect("consume") {
            UsageDecision::Allowed { used, .. } => allowed.push(used),
            UsageDecision::Refused { used, .. } => {
                assert_eq!(used, limit, "a refusal reports the full count");
                refused += 1;
            }
        }
    }
    allowed.sort_unstable();
    assert_eq!(allowed, (1..=limit).collect::<Vec<_>>(), "each allowed call saw its own count");
    assert_eq!(refused, callers - limit);
    assert_eq!(store.usage_get(60, today).await.unwrap(), limit);
}

/// `takers` concurrent tasks, each its own holder, try to take one agent's free lease: exactly one
/// gets it.
///
/// # Panics
/// When more or fewer than one holder gets the lease.
pub async fn check_lease_race(store: Arc<dyn Store>, takers: usize) {
    store.user_get_or_create(75, None).await.unwrap();
    let agent = store.agent_create(NewAgent::new(75, "Contested", "p", "glm-4.7")).await.unwrap();
    let now = Utc::now();
    let until = now + chrono::Duration::minutes(1);
    let tasks: Vec<_> = (0..takers)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { (n, store.agent_lease_take(agent.id, &format!("holder-{n}"), until, now).await) })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (n, taken) = task.await.expect("take task");
        if taken.expect("take") {
            winners.push(n);
        }
    }
    assert_eq!(winners.len(), 1, "one holder at a time: {winners:?}");
    let lease = store.agent_get(agent.id).await.unwrap().unwrap().lease.expect("a lease");
    assert_eq!(lease.holder, format!("holder-{}", winners[0]), "the winner holds it");
}

/// `claimers` concurrent tasks claim from a pool of `warm` VMs: each VM goes to exactly one
/// claimer and the others get `None`. `store` is the same database's [`Store`].
///
/// # Panics
/// When a VM is handed out twice or a warm VM is left unclaimed.
pub async fn check_pool_claim_race(store: Arc<dyn Store>, pool: Arc<dyn PoolStore>, claimers: usize, warm: usize) {
    store.user_get_or_create(70, None).await.unwrap();
    let agent = store.agent_create(NewAgent::new(70, "Racer", "p", "glm-4.7")).await.unwrap();
    let store = pool;
    for n in 0..warm {
        let vm = store.pool_insert().await.unwrap();
        store.pool_update(vm.id, Some(&format!("{n:064x}")), &Deployment::default(), PoolStatus::Warm).await.unwrap();
    }
    let tasks: Vec<_> = (0..claimers)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.pool_claim(agent.id).await })
        })
        .collect();
    let mut claimed = Vec::new();
    let mut none_left = 0;
    for task in tasks {
        match task.await.expect("claim task").expect("claim") {
            Some(vm) => claimed.push(vm.id),
            None => none_left += 1,
        }
    }
    let distinct: std::collections::BTreeSet<_> = claimed.iter().copied().collect();
    assert_eq!(distinct.len(), claimed.len(), "a VM was claimed twice: {claimed:?}");
    assert_eq!(claimed.len(), warm, "every warm VM is claimed once");
    assert_eq!(none_left, claimers - warm);
    let statuses: Vec<_> = store.pool_list().await.unwrap().iter().map(|vm| vm.status).collect();
    assert!(statuses.iter().all(|s| *s == PoolStatus::Claimed), "{statuses:?}");
}
