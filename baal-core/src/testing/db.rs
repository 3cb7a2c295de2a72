#![cfg(feature = "store")]
//! Fresh, isolated databases for tests, and the contract every [`Store`] must keep.
//!
//! - [`sqlite`]: a [`SqlStore`] on a SQLite file in its own temporary directory.
//! - [`postgres`]: a [`SqlStore`] in its own PostgreSQL schema (dropped when the [`TestDb`] is
//!   dropped), or `None` after printing `SKIPPED: …` when the server does not answer. With
//!   `BAAL_REQUIRE_POSTGRES=1` or `CI=true` an unreachable server panics instead, so CI cannot
//!   pass by skipping. The server is `BAAL_TEST_PG_URL`, default
//!   `postgres://postgres@127.0.0.1:5432/test`.
//! - [`check_store_contract`], [`check_usage_race`], [`check_visitor_race`],
//!   [`check_usage_ingest_race`], [`check_budget_notice_race`], [`check_lease_race`],
//!   [`check_update_seen_race`], [`check_pool_store_contract`], [`check_pool_claim_race`]: the
//!   behaviour any [`Store`] and
//!   [`PoolStore`] implementation must show; embedders with their own store can run them too.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use sea_orm::sqlx::postgres::PgConnection;
use sea_orm::sqlx::{AssertSqlSafe, Connection as _, Executor as _};

use crate::config::redact_url_password;
use crate::domain::{
    Agent, AgentId, AgentPolicy, AgentRuntime, AgentStatus, AgentUsage, Deployment, EventOutcome, EventStep, Lease,
    NewAgent, Payer, PoolStatus, UsageDecision,
};
use crate::store::{AgentFilter, PoolStore, SeenKind, SqlStore, Store, StoreError, UsageQuery};
use crate::wire::UsageCause;

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
    check_policies(store).await;
    check_slug_replacement(store).await;
    check_python_imports(store).await;
    check_budget_notices(store).await;
    check_visitor_counters(store).await;
    check_metering(store).await;
    check_usage_pruning(store).await;
    check_seen_updates(store).await;
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

/// A fresh agent of `owner` (created first if need be).
async fn new_agent(store: &dyn Store, owner: i64, name: &str) -> Agent {
    store.user_get_or_create(owner, None).await.unwrap();
    store.agent_create(NewAgent::new(owner, name, "p", "glm-4.7")).await.unwrap()
}

async fn check_policies(store: &dyn Store) {
    let agent = new_agent(store, 120, "Policy").await;
    assert_eq!(agent.policy, AgentPolicy::default(), "a new agent is shared, with no budget and no visitor limit");
    assert!(agent.policy.sharing);

    let policy = AgentPolicy::new()
        .with_sharing(false)
        .with_daily_token_budget(Some(250_000))
        .with_visitor_daily_messages(Some(5));
    store.agent_set_policy(agent.id, &policy).await.unwrap();
    let read = store.agent_get(agent.id).await.unwrap().unwrap();
    assert_eq!(read.policy, policy);
    assert!(read.updated_at >= agent.updated_at, "a policy change is a change of the agent");
    store.agent_set_status(agent.id, AgentStatus::Running).await.unwrap();
    let listed = store.list_agents(&AgentFilter::all().owner(120)).await.unwrap();
    assert_eq!(listed.iter().map(|a| a.policy).collect::<Vec<_>>(), [policy], "listings carry the policy");

    // Larger than the columns hold: stored as their largest value, not refused or wrapped.
    let huge = AgentPolicy::new().with_daily_token_budget(Some(u64::MAX)).with_visitor_daily_messages(Some(u32::MAX));
    store.agent_set_policy(agent.id, &huge).await.unwrap();
    let read = store.agent_get(agent.id).await.unwrap().unwrap().policy;
    assert_eq!(read.daily_token_budget, Some(i64::MAX.unsigned_abs()));
    assert_eq!(read.visitor_daily_messages, Some(i32::MAX.unsigned_abs()));

    store.agent_set_policy(agent.id, &AgentPolicy::default()).await.unwrap();
    assert_eq!(store.agent_get(agent.id).await.unwrap().unwrap().policy, AgentPolicy::default(), "cleared");
    let unknown = store.agent_set_policy(AgentId(424242), &policy).await;
    assert!(matches!(unknown, Err(StoreError::NotFound(_))), "{unknown:?}");
}

async fn check_slug_replacement(store: &dyn Store) {
    let agent = new_agent(store, 130, "Relinked").await;
    let neighbour = new_agent(store, 130, "Neighbour").await;
    let first = agent.slug.clone();

    let old = store.agent_replace_slug(agent.id, "secondslug0000000000").await.unwrap();
    assert_eq!(old, first, "the slug it had is returned");
    let read = store.agent_get(agent.id).await.unwrap().unwrap();
    assert_eq!(read.slug, "secondslug0000000000");
    assert!(read.updated_at >= agent.updated_at);
    assert_eq!(store.agent_by_slug(&first).await.unwrap(), None, "the old link no longer opens the agent");
    assert_eq!(store.agent_by_slug("secondslug0000000000").await.unwrap().map(|a| a.id), Some(agent.id));
    assert_eq!(store.agent_by_retired_slug(&first).await.unwrap(), Some(agent.id), "the old link is remembered");
    assert_eq!(
        store.agent_by_retired_slug("secondslug0000000000").await.unwrap(),
        None,
        "the current one is not retired"
    );
    assert_eq!(store.agent_by_retired_slug(&neighbour.slug).await.unwrap(), None);
    assert_eq!(store.agent_by_retired_slug("nope").await.unwrap(), None);

    assert_eq!(store.agent_replace_slug(agent.id, "thirdslug00000000000").await.unwrap(), "secondslug0000000000");
    for retired in [first.as_str(), "secondslug0000000000"] {
        assert_eq!(store.agent_by_retired_slug(retired).await.unwrap(), Some(agent.id), "{retired}");
    }

    // A slug that ever served a link, or serves one now, is never handed out (again).
    for taken in [first.as_str(), "thirdslug00000000000", neighbour.slug.as_str()] {
        let refused = store.agent_replace_slug(agent.id, taken).await;
        assert!(refused.is_err(), "{taken} was handed out again: {refused:?}");
        assert_eq!(store.agent_get(agent.id).await.unwrap().unwrap().slug, "thirdslug00000000000", "nothing changed");
        assert_eq!(store.agent_by_retired_slug("thirdslug00000000000").await.unwrap(), None, "nothing retired");
    }
    assert_eq!(store.agent_by_slug(&neighbour.slug).await.unwrap().map(|a| a.id), Some(neighbour.id));
    let unknown = store.agent_replace_slug(AgentId(424242), "fourthslug0000000000").await;
    assert!(matches!(unknown, Err(StoreError::NotFound(_))), "{unknown:?}");
    assert_eq!(store.agent_by_slug("fourthslug0000000000").await.unwrap(), None);
}

async fn check_python_imports(store: &dyn Store) {
    let fresh = new_agent(store, 135, "Native").await;
    assert_eq!((fresh.runtime, fresh.python_id), (AgentRuntime::Baal, None));
    assert!(fresh.created_at > Utc::now() - chrono::Duration::minutes(5));

    let then = "2025-03-04T05:06:07Z".parse::<DateTime<Utc>>().unwrap();
    let imported = store
        .agent_create(NewAgent::new(135, "Imported", "p", "glm-4.7").imported_from_python(17, then))
        .await
        .unwrap();
    assert_eq!((imported.runtime, imported.python_id), (AgentRuntime::Python, Some(17)));
    assert_eq!(imported.slug, "17", "the old numeric link is its slug");
    assert_eq!(imported.created_at, then, "its creation time carried over");
    assert_eq!(store.agent_by_python_id(17).await.unwrap().map(|a| a.id), Some(imported.id));
    assert_eq!(store.agent_by_slug("17").await.unwrap().map(|a| a.id), Some(imported.id));
    assert_eq!(store.agent_by_python_id(18).await.unwrap(), None);

    let twice = store.agent_create(NewAgent::new(135, "Again", "p", "glm-4.7").imported_from_python(17, then)).await;
    assert!(twice.is_err(), "one agent per Python id: {twice:?}");

    store.agent_set_runtime(imported.id, AgentRuntime::Baal).await.unwrap();
    let converted = store.agent_get(imported.id).await.unwrap().unwrap();
    assert_eq!((converted.runtime, converted.python_id), (AgentRuntime::Baal, Some(17)), "still known by its old id");
    let unknown = store.agent_set_runtime(AgentId(424242), AgentRuntime::Baal).await;
    assert!(matches!(unknown, Err(StoreError::NotFound(_))), "{unknown:?}");
}

async fn check_budget_notices(store: &dyn Store) {
    let agent = new_agent(store, 140, "Budgeted").await;
    let other = new_agent(store, 140, "Other budget").await;
    let (monday, tuesday) = (day("2026-11-23"), day("2026-11-24"));

    assert!(store.agent_budget_notice(agent.id, monday, 80).await.unwrap(), "the first 80 % notice is sent");
    assert!(!store.agent_budget_notice(agent.id, monday, 80).await.unwrap(), "once");
    assert!(store.agent_budget_notice(agent.id, monday, 100).await.unwrap(), "100 % is a notice of its own");
    assert!(!store.agent_budget_notice(agent.id, monday, 100).await.unwrap());
    assert!(!store.agent_budget_notice(agent.id, monday, 80).await.unwrap(), "a lower level after a higher one is not");
    assert!(store.agent_budget_notice(other.id, monday, 80).await.unwrap(), "each agent has its own notices");

    assert!(store.agent_budget_notice(agent.id, tuesday, 80).await.unwrap(), "a new day starts again");
    assert!(!store.agent_budget_notice(agent.id, monday, 100).await.unwrap(), "an earlier day is over");
    assert!(!store.agent_budget_notice(agent.id, tuesday, 80).await.unwrap());
    assert!(store.agent_budget_notice(agent.id, tuesday, 100).await.unwrap());

    let read = store.agent_get(agent.id).await.unwrap().unwrap();
    assert_eq!(read.updated_at, agent.updated_at, "a notice is not a change of the agent");
    let unknown = store.agent_budget_notice(AgentId(424242), monday, 80).await;
    assert!(matches!(unknown, Err(StoreError::NotFound(_))), "{unknown:?}");
}

async fn check_visitor_counters(store: &dyn Store) {
    let agent = new_agent(store, 150, "Visited").await;
    let other = new_agent(store, 150, "Also visited").await;
    let (today, tomorrow) = (day("2026-11-25"), day("2026-11-26"));
    let resets_at = Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap();

    for used in 1..=2 {
        let decision = store.visitor_consume(agent.id, 151, today, 2, resets_at).await.unwrap();
        assert_eq!(decision, UsageDecision::Allowed { used, limit: 2 });
    }
    let refused = store.visitor_consume(agent.id, 151, today, 2, resets_at).await.unwrap();
    assert_eq!(refused, UsageDecision::Refused { used: 2, limit: 2, resets_at });
    let raised = store.visitor_consume(agent.id, 151, today, 3, resets_at).await.unwrap();
    assert_eq!(raised, UsageDecision::Allowed { used: 3, limit: 3 }, "a raised limit lets one more through");
    let elsewhere = store.visitor_consume(other.id, 151, today, 2, resets_at).await.unwrap();
    assert_eq!(elsewhere, UsageDecision::Allowed { used: 1, limit: 2 }, "each agent counts its own visitors");
    let next_day = store.visitor_consume(agent.id, 151, tomorrow, 2, resets_at).await.unwrap();
    assert_eq!(next_day, UsageDecision::Allowed { used: 1, limit: 2 }, "each day counts afresh");
    store.visitor_consume(agent.id, 152, today, 2, resets_at).await.unwrap();
    let zero = store.visitor_consume(agent.id, 153, today, 0, resets_at).await.unwrap();
    assert_eq!(zero, UsageDecision::Refused { used: 0, limit: 0, resets_at }, "a zero limit refuses");
    assert_eq!(store.usage_get(151, today).await.unwrap(), 0, "a visitor's counter is not their free-tier counter");

    let counts =
        |rows: Vec<crate::store::UsageRow>| rows.iter().map(|r| (r.user_id, r.day, r.messages)).collect::<Vec<_>>();
    assert_eq!(counts(store.visitor_counts(agent.id, today, today).await.unwrap()), [(151, today, 3), (152, today, 1)]);
    assert_eq!(
        counts(store.visitor_counts(agent.id, today, tomorrow).await.unwrap()),
        [(151, today, 3), (151, tomorrow, 1), (152, today, 1)],
        "busiest first, then the latest day"
    );
    assert_eq!(counts(store.visitor_counts(other.id, today, tomorrow).await.unwrap()), [(151, today, 1)]);
    assert!(store.visitor_counts(agent.id, day("2026-01-01"), day("2026-01-31")).await.unwrap().is_empty());
}

fn usage(agent: &Agent, on: NaiveDate, user: i64, cause: UsageCause, model: &str, payer: Payer) -> AgentUsage {
    AgentUsage::new(agent.id, on, user, cause, model, payer)
}

async fn check_metering(store: &dyn Store) {
    let agent = new_agent(store, 160, "Metered").await;
    let other = new_agent(store, 162, "Metered too").await;
    let (monday, tuesday) = (day("2026-10-05"), day("2026-10-06"));
    let owner_turn = |tokens: (u64, u64), estimated| {
        usage(&agent, monday, 160, UsageCause::OwnerTurn, "glm-4.7", Payer::Operator)
            .with_tokens(tokens.0, tokens.1, 1, estimated)
    };
    let visitor_turn = usage(&agent, tuesday, 161, UsageCause::VisitorTurn, "glm-4.7", Payer::Operator);
    assert_eq!(agent.usage_cursor, 0, "nothing stored yet");

    // One page holding one group twice: added up, estimated once either call was.
    let page =
        [owner_turn((100, 10), false), owner_turn((50, 5), true), visitor_turn.clone().with_tokens(7, 3, 1, false)];
    assert!(store.usage_ingest(agent.id, Some((0, 5)), &page).await.unwrap());
    assert_eq!(store.agent_get(agent.id).await.unwrap().unwrap().usage_cursor, 5);
    let stale = [owner_turn((1_000_000, 1_000_000), false)];
    assert!(!store.usage_ingest(agent.id, Some((0, 5)), &stale).await.unwrap(), "a page stored already is refused");
    let heartbeat = usage(&agent, tuesday, 160, UsageCause::Heartbeat, "qwen3-coder-next", Payer::Owner);
    let next_page = [owner_turn((1, 1), false), heartbeat.clone().with_tokens(20, 2, 1, false)];
    assert!(store.usage_ingest(agent.id, Some((5, 9)), &next_page).await.unwrap());
    // The platform's own estimates (a Python agent): no cursor, added to the same groups.
    assert!(store.usage_ingest(agent.id, None, &[visitor_turn.clone().with_tokens(3, 3, 1, true)]).await.unwrap());
    let theirs = usage(&other, tuesday, 162, UsageCause::OwnerTurn, "glm-4.7", Payer::Operator);
    assert!(store.usage_ingest(other.id, None, &[theirs.clone().with_tokens(1, 1, 1, false)]).await.unwrap());
    let read = store.agent_get(agent.id).await.unwrap().unwrap();
    assert_eq!(read.usage_cursor, 9, "estimates leave the cursor alone");
    assert_eq!(read.updated_at, agent.updated_at, "storing usage is not a change of the agent");

    let both_days = UsageQuery::days(monday, tuesday);
    let everything = vec![
        owner_turn((151, 16), true).with_tokens(151, 16, 3, true),
        heartbeat.clone().with_tokens(20, 2, 1, false),
        visitor_turn.clone().with_tokens(10, 6, 2, true),
        theirs.clone().with_tokens(1, 1, 1, false),
    ];
    assert_eq!(store.usage_rows(&both_days).await.unwrap(), everything, "summed per key; by day, agent, user");
    let read = |query: UsageQuery| async move { store.usage_rows(&query).await.unwrap() };
    assert_eq!(read(both_days.agent(other.id)).await, everything[3..]);
    assert_eq!(read(both_days.owner(160)).await, everything[..3], "the owner's agents only");
    assert_eq!(read(both_days.user(161)).await, everything[2..3], "what one visitor was charged");
    assert_eq!(read(both_days.payer(Payer::Owner)).await, everything[1..2]);
    assert_eq!(read(both_days.agent(agent.id).user(160).payer(Payer::Operator)).await, everything[..1]);
    assert_eq!(read(UsageQuery::days(tuesday, tuesday)).await, everything[1..]);
    assert!(read(UsageQuery::days(tuesday, monday)).await.is_empty(), "an empty range");
    assert!(read(both_days.owner(424242)).await.is_empty());

    // Rows of another agent, or for an agent that does not exist, are refused whole.
    let mixed = [visitor_turn.clone().with_tokens(1, 1, 1, false), theirs.clone().with_tokens(1, 1, 1, false)];
    assert!(store.usage_ingest(agent.id, None, &mixed).await.is_err());
    for cursor in [None, Some((0, 1))] {
        let unknown = store.usage_ingest(AgentId(424242), cursor, &[]).await;
        assert!(matches!(unknown, Err(StoreError::NotFound(_))), "{unknown:?}");
    }
    assert_eq!(store.usage_rows(&both_days).await.unwrap(), everything, "nothing was written");

    assert!(store.usage_ingest(agent.id, Some((9, 12)), &[]).await.unwrap(), "an empty page moves the cursor");
    assert_eq!(store.agent_get(agent.id).await.unwrap().unwrap().usage_cursor, 12);

    // Beyond what BIGINT holds: stored as its largest value, and sums stay there.
    let huge =
        usage(&agent, monday, 160, UsageCause::Subagent, "glm-4.7", Payer::Operator).with_tokens(u64::MAX, 1, 1, false);
    for _ in 0..2 {
        assert!(store.usage_ingest(agent.id, None, std::slice::from_ref(&huge)).await.unwrap());
    }
    let subagent = read(both_days.agent(agent.id)).await.into_iter().find(|r| r.cause == UsageCause::Subagent).unwrap();
    let max = i64::MAX.unsigned_abs();
    assert_eq!((subagent.prompt_tokens, subagent.completion_tokens, subagent.calls), (max, 2, 2));

    assert!(store.agent_soft_delete(agent.id).await.unwrap());
    assert_eq!(read(both_days.agent(agent.id)).await.len(), 4, "a deleted agent's usage stays");
    assert!(store.usage_ingest(agent.id, Some((12, 13)), &[]).await.unwrap(), "and its last pages are still stored");
}

async fn check_usage_pruning(store: &dyn Store) {
    let agent = new_agent(store, 170, "Old").await;
    let (old, kept) = (day("2020-01-01"), day("2020-01-02"));
    let resets_at = Utc.with_ymd_and_hms(2020, 1, 3, 0, 0, 0).unwrap();
    for on in [old, kept] {
        let row = usage(&agent, on, 170, UsageCause::OwnerTurn, "glm-4.7", Payer::Operator).with_tokens(1, 1, 1, false);
        store.usage_ingest(agent.id, None, &[row]).await.unwrap();
        store.visitor_consume(agent.id, 171, on, 10, resets_at).await.unwrap();
    }
    let other_agent = day("2026-10-05");
    let before = store.usage_rows(&UsageQuery::days(other_agent, other_agent)).await.unwrap();
    assert_eq!(store.usage_prune(kept).await.unwrap(), 2, "one usage row and one visitor counter");
    let left: Vec<NaiveDate> =
        store.usage_rows(&UsageQuery::days(old, kept).agent(agent.id)).await.unwrap().iter().map(|r| r.day).collect();
    assert_eq!(left, [kept]);
    let counters: Vec<NaiveDate> =
        store.visitor_counts(agent.id, old, kept).await.unwrap().iter().map(|r| r.day).collect();
    assert_eq!(counters, [kept]);
    assert_eq!(store.usage_rows(&UsageQuery::days(other_agent, other_agent)).await.unwrap(), before, "later days stay");
    assert_eq!(store.usage_prune(kept).await.unwrap(), 0, "nothing left to prune");
}

/// An update is first seen once per chat, kind and id; pruning forgets only older ones.
async fn check_seen_updates(store: &dyn Store) {
    let (monday, tuesday) =
        (Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap(), Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap());
    assert!(store.update_seen(190, SeenKind::Message, 5, monday).await.unwrap(), "first time");
    assert!(!store.update_seen(190, SeenKind::Message, 5, tuesday).await.unwrap(), "a second copy");
    assert!(store.update_seen(-100_190, SeenKind::Message, 5, monday).await.unwrap(), "the same id in another chat");
    assert!(store.update_seen(190, SeenKind::Press, 5, monday).await.unwrap(), "a press with the id of a message");
    assert!(store.update_seen(190, SeenKind::Press, i64::MIN, tuesday).await.unwrap(), "press ids span i64");
    assert!(!store.update_seen(190, SeenKind::Press, i64::MIN, tuesday).await.unwrap());
    assert_eq!(store.updates_seen_prune(tuesday).await.unwrap(), 3, "the three seen on Monday");
    assert!(!store.update_seen(190, SeenKind::Press, i64::MIN, tuesday).await.unwrap(), "Tuesday's stays");
    assert!(store.update_seen(190, SeenKind::Message, 5, tuesday).await.unwrap(), "a pruned update is new again");
    assert_eq!(store.updates_seen_prune(tuesday).await.unwrap(), 0, "nothing before Tuesday left");
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
    store.kv_put("listed", "b", b"2").await.unwrap();
    store.kv_put("listed", "a", b"1").await.unwrap();
    let listed = store.kv_list("listed").await.unwrap();
    assert_eq!(listed, [("a".to_owned(), b"1".to_vec()), ("b".to_owned(), b"2".to_vec())]);
    assert!(store.kv_list("empty").await.unwrap().is_empty());
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

/// `callers` concurrent tasks count one message each of one visitor to one agent under `limit`:
/// exactly `limit` are allowed, the rest refused.
///
/// # Panics
/// When more or fewer than `limit` get through.
pub async fn check_visitor_race(store: Arc<dyn Store>, callers: u32, limit: u32) {
    let agent = new_agent(store.as_ref(), 180, "Crowded").await;
    let today = day("2026-11-25");
    let resets_at = Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.visitor_consume(agent.id, 181, today, limit, resets_at).await })
        })
        .collect();
    let mut allowed = Vec::new();
    for task in tasks {
        if let UsageDecision::Allowed { used, .. } = task.await.expect("consume task").expect("consume") {
            allowed.push(used);
        }
    }
    allowed.sort_unstable();
    assert_eq!(allowed, (1..=limit).collect::<Vec<_>>(), "each allowed call saw its own count");
    let counts = store.visitor_counts(agent.id, today, today).await.unwrap();
    assert_eq!(counts.iter().map(|r| r.messages).collect::<Vec<_>>(), [limit]);
}

/// `ingesters` concurrent tasks store the same page of one agent's usage, all read at the same
/// cursor (as bot processes polling one agent would): exactly one stores it, and its tokens are
/// counted once.
///
/// # Panics
/// When more or fewer than one stores the page.
pub async fn check_usage_ingest_race(store: Arc<dyn Store>, ingesters: usize) {
    let agent = new_agent(store.as_ref(), 185, "Polled").await;
    let today = day("2026-11-25");
    let page = [AgentUsage::new(agent.id, today, 185, UsageCause::OwnerTurn, "glm-4.7", Payer::Operator)
        .with_tokens(100, 10, 1, false)];
    let tasks: Vec<_> = (0..ingesters)
        .map(|_| {
            let (store, page) = (store.clone(), page.clone());
            tokio::spawn(async move { store.usage_ingest(agent.id, Some((0, 7)), &page).await })
        })
        .collect();
    let mut stored = 0;
    for task in tasks {
        if task.await.expect("ingest task").expect("ingest") {
            stored += 1;
        }
    }
    assert_eq!(stored, 1, "one process stores a page");
    let rows = store.usage_rows(&UsageQuery::days(today, today).agent(agent.id)).await.unwrap();
    assert_eq!(rows, page, "its tokens are counted once");
    assert_eq!(store.agent_get(agent.id).await.unwrap().unwrap().usage_cursor, 7);
}

/// `callers` concurrent tasks claim the 80 % and then the 100 % budget notice of one agent, on
/// two days: exactly one gets each level each day.
///
/// # Panics
/// When a notice would be sent more or fewer than once.
pub async fn check_budget_notice_race(store: Arc<dyn Store>, callers: usize) {
    let agent = new_agent(store.as_ref(), 190, "Noticed").await;
    for on in [day("2026-11-25"), day("2026-11-26")] {
        for level in [80, 100] {
            let tasks: Vec<_> = (0..callers)
                .map(|_| {
                    let store = store.clone();
                    tokio::spawn(async move { store.agent_budget_notice(agent.id, on, level).await })
                })
                .collect();
            let mut sent = 0;
            for task in tasks {
                if task.await.expect("notice task").expect("notice") {
                    sent += 1;
                }
            }
            assert_eq!(sent, 1, "the {level} % notice of {on} is sent once");
        }
    }
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

/// `callers` concurrent tasks record one update (as bot processes sharing a database would after
/// a crash, catching up on the same message): exactly one is told it is the first.
///
/// # Panics
/// When more or fewer than one caller sees the update first.
pub async fn check_update_seen_race(store: Arc<dyn Store>, callers: usize) {
    let now = Utc::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.update_seen(195, SeenKind::Message, 42, now).await })
        })
        .collect();
    let mut first = 0;
    for task in tasks {
        if task.await.expect("seen task").expect("update_seen") {
            first += 1;
        }
    }
    assert_eq!(first, 1, "one caller handles the update");
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
