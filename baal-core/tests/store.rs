//! The Store and PoolStore contracts on a SQLite file and on PostgreSQL (its own schema per
//! test), plus the races that must never let a caller through: the daily and visitor counters,
//! storing a page of usage, a budget notice, an agent's lease, a seen update and the pool claim.

use baal_core::domain::{AgentId, NewAgent};
use baal_core::store::{SqlStore, Store, StoreError};
use baal_core::testing::db::{self, TestDb};
use sea_orm::{ConnectionTrait, Statement};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_keeps_the_contract() {
    let test_db = db::sqlite().await;
    db::check_store_contract(test_db.store()).await;
    db::check_pool_store_contract(test_db.store(), test_db.store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_keeps_the_contract() {
    let Some(test_db) = db::postgres().await else { return };
    db::check_store_contract(test_db.store()).await;
    db::check_pool_store_contract(test_db.store(), test_db.store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_lease_cannot_be_raced() {
    let test_db = db::sqlite().await;
    db::check_lease_race(test_db.shared(), 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_lease_cannot_be_raced() {
    let Some(test_db) = db::postgres().await else { return };
    db::check_lease_race(test_db.shared(), 50).await;
}

/// A word the store does not know is an error naming the row, on either backend.
async fn unknown_words_are_errors_naming_their_row(test_db: &TestDb) {
    let store = test_db.store();
    store.user_get_or_create(1, None).await.unwrap();
    let agent = store.agent_create(NewAgent::new(1, "Odd", "p", "glm-4.7")).await.unwrap();
    let conn = store.connection();
    let backend = conn.get_database_backend();
    let insert = Statement::from_sql_and_values(
        backend,
        "INSERT INTO deployment_events (agent_id, step, outcome, created_at) VALUES ($1, 'deploy', 'exploded', $2)",
        [agent.id.0.into(), chrono::Utc::now().into()],
    );
    conn.execute_raw(insert).await.unwrap();
    let err = store.events_for(agent.id).await.unwrap_err();
    assert!(err.to_string().contains("event ") && err.to_string().contains("exploded"), "{err}");

    let payer = Statement::from_sql_and_values(
        backend,
        "UPDATE agents SET payer = 'nobody' WHERE id = $1",
        [agent.id.0.into()],
    );
    conn.execute_raw(payer).await.unwrap();
    let err = store.agent_get(agent.id).await.unwrap_err();
    assert!(err.to_string().contains(&format!("agent {}", agent.id)) && err.to_string().contains("nobody"), "{err}");
    assert_eq!(store.agent_get(AgentId(agent.id.0 + 1)).await.unwrap(), None);
}

#[tokio::test]
async fn sqlite_unknown_words_are_errors_naming_their_row() {
    unknown_words_are_errors_naming_their_row(&db::sqlite().await).await;
}

#[tokio::test]
async fn postgres_unknown_words_are_errors_naming_their_row() {
    let Some(test_db) = db::postgres().await else { return };
    unknown_words_are_errors_naming_their_row(&test_db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_daily_counter_cannot_be_raced() {
    let test_db = db::sqlite().await;
    db::check_usage_race(test_db.shared(), 50, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_daily_counter_cannot_be_raced() {
    let Some(test_db) = db::postgres().await else { return };
    db::check_usage_race(test_db.shared(), 50, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_update_seen_cannot_be_raced() {
    let test_db = db::sqlite().await;
    db::check_update_seen_race(test_db.shared(), 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_update_seen_cannot_be_raced() {
    let Some(test_db) = db::postgres().await else { return };
    db::check_update_seen_race(test_db.shared(), 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_pool_claim_cannot_be_raced() {
    let test_db = db::sqlite().await;
    db::check_pool_claim_race(test_db.shared(), test_db.shared_pool(), 50, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_pool_claim_cannot_be_raced() {
    let Some(test_db) = db::postgres().await else { return };
    db::check_pool_claim_race(test_db.shared(), test_db.shared_pool(), 50, 3).await;
}

#[tokio::test]
async fn sqlite_file_uses_wal_busy_timeout_and_foreign_keys() {
    let test_db = db::sqlite().await;
    let conn = test_db.store().connection();
    let pragma = |name: &str| Statement::from_string(conn.get_database_backend(), format!("PRAGMA {name}"));
    let mode: String = conn.query_one_raw(pragma("journal_mode")).await.unwrap().unwrap().try_get_by_index(0).unwrap();
    assert_eq!(mode.to_lowercase(), "wal");
    let fk: i32 = conn.query_one_raw(pragma("foreign_keys")).await.unwrap().unwrap().try_get_by_index(0).unwrap();
    assert_eq!(fk, 1);
    let busy: i32 = conn.query_one_raw(pragma("busy_timeout")).await.unwrap().unwrap().try_get_by_index(0).unwrap();
    assert!(busy > 0);
}

#[tokio::test]
async fn reopening_keeps_data_and_migrations_are_idempotent() {
    let test_db = db::sqlite().await;
    test_db.store().kv_put("ns", "k", b"v").await.unwrap();
    let reopened = SqlStore::open(test_db.url()).await.unwrap();
    assert_eq!(reopened.kv_get("ns", "k").await.unwrap(), Some(b"v".to_vec()));
}

#[tokio::test]
async fn postgres_tests_use_their_own_schema() {
    let Some(first) = db::postgres().await else { return };
    let Some(second) = db::postgres().await else { return };
    first.store().user_get_or_create(1, Some("only-here")).await.unwrap();
    assert_eq!(second.store().user_get(1).await.unwrap(), None);
    assert_ne!(first.url(), second.url());
}

#[tokio::test]
async fn bad_urls_are_named_without_their_password() {
    let err = SqlStore::open("mysql://root:hunter2@localhost/baal").await.unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedUrl(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");

    // Port 1 on loopback: nothing listens, so the connection is refused at once.
    let err = SqlStore::open("postgres://baal:hunter2@127.0.0.1:1/baal").await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    assert!(text.contains("postgres://baal:***@127.0.0.1:1/baal"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}", dir.path().join("absent").join("baal.db").display());
    let err = SqlStore::open(&missing).await.unwrap_err();
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("mode=rwc"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_visitor_counter_cannot_be_raced() {
    let test_db = db::sqlite().await;
    db::check_visitor_race(test_db.shared(), 50, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_visitor_counter_cannot_be_raced() {
    let Some(test_db) = db::postgres().await else { return };
    db::check_visitor_race(test_db.shared(), 50, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_usage_page_is_stored_once() {
    let test_db = db::sqlite().await;
    db::check_usage_ingest_race(test_db.shared(), 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_usage_page_is_stored_once() {
    let Some(test_db) = db::postgres().await else { return };
    db::check_usage_ingest_race(test_db.shared(), 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_budget_notice_is_sent_once() {
    let test_db = db::sqlite().await;
    db::check_budget_notice_race(test_db.shared(), 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_budget_notice_is_sent_once() {
    let Some(test_db) = db::postgres().await else { return };
    db::check_budget_notice_race(test_db.shared(), 20).await;
}
