//! `import::python` on real SQLite files written with the Python Baal's schema
//! (`testing::python_baal`), into SQLite and PostgreSQL stores.

use baal_core::domain::{Agent, AgentRuntime, AgentStatus, NewAgent, Payer, PoolStatus, PoolVm, User};
use baal_core::import::python::{
    self, AgentAction, ImportError, Plan, Progress, PythonKey, Report, Snapshot, Source, check_apart,
};
use baal_core::secrets::{SealContext, SecretBox, generate_key};
use baal_core::store::{AgentFilter, PoolStore, SqlStore, Store};
use baal_core::testing::db;
use baal_core::testing::python_baal::{PyAgent, PyPoolVm, PyUser, PythonBaal, PythonFiles};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

const H1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const H2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const H5: &str = "5555555555555555555555555555555555555555555555555555555555555555";
const P1: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const P2: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
const P5: &str = "e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5";

/// The Fernet specification's test vector (github.com/fernet/spec, `verify.json`): a token the
/// reference implementation made, as Python's `cryptography` makes them.
const SPEC_SECRET: &str = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
const SPEC_TOKEN: &str =
    "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==";

/// Every case the import decides: users with and without keys (one missing from `users`), agents
/// in each status (one deleted), and pool rows in each status.
fn python_baal() -> PythonBaal {
    PythonBaal::new()
        .with_user(PyUser::new(100).with_api_key("sk-alice-libertai"))
        .with_user(PyUser::new(200).hiding_tools())
        .with_user(PyUser::new(300).with_api_key("sk-carol-python"))
        .with_agent(
            PyAgent::new(1, 100, "Helper")
                .running(H1, "192.0.2.1", "https://helper.2n6.me", "agent-1-secret")
                .created("2025-12-01T10:20:30.123456+00:00"),
        )
        .with_agent(
            PyAgent::new(2, 200, "Broken")
                .running(H2, "192.0.2.2", "https://broken.2n6.me", "agent-2-secret")
                .with_status("failed")
                .created("2026-01-05 08:00:00"),
        )
        .with_agent(PyAgent::new(3, 200, "Gone").running(H5, "192.0.2.3", "https://gone.2n6.me", "x").deleted())
        .with_agent(PyAgent::new(4, 100, "Halfway").with_status("deploying"))
        .with_agent(PyAgent::new(5, 400, "Legacy").running(
            "c".repeat(64),
            "192.0.2.5",
            "https://legacy.2n6.me",
            "agent-5-secret",
        ))
        .with_agent({
            let mut agent =
                PyAgent::new(6, 300, "Tokenless").running("d".repeat(64), "192.0.2.6", "https://t.2n6.me", "");
            agent.auth_token = None;
            agent.deployment_status = "deployed".into();
            agent
        })
        .with_pool_vm(PyPoolVm::new(1, "warm", P1))
        .with_pool_vm(PyPoolVm::new(2, "claimed", P2).for_agent(9))
        .with_pool_vm(PyPoolVm::new(3, "deployed", H1).for_agent(1))
        .with_pool_vm(PyPoolVm::new(4, "provisioning", "pending"))
        .with_pool_vm(PyPoolVm::new(5, "failed", P5))
        .with_pool_vm(PyPoolVm::new(6, "warm", H2))
}

fn secrets() -> SecretBox {
    SecretBox::from_secret(&generate_key().unwrap()).unwrap()
}

async fn run(files: &PythonFiles, store: &SqlStore, secrets: &SecretBox, dry_run: bool) -> Result<Report, ImportError> {
    let mut ticks = Vec::new();
    let report = python::import(&files.source(), &files.python_key(), store, secrets, dry_run, &mut |p: Progress| {
        ticks.push((p.done, p.total))
    })
    .await?;
    let expected: Vec<(usize, usize)> = (1..=ticks.len()).map(|done| (done, ticks.len())).collect();
    assert_eq!(ticks, expected, "one tick per write, counting to the total");
    assert!(!dry_run || ticks.is_empty(), "a dry run writes nothing");
    Ok(report)
}

/// Everything the store holds, to compare before and after.
async fn contents(store: &SqlStore) -> (Vec<User>, Vec<Agent>, Vec<PoolVm>) {
    let agents = store.list_agents(&AgentFilter::all().include_deleted()).await.unwrap();
    (store.users_list().await.unwrap(), agents, store.pool_list().await.unwrap())
}

fn key_of(user: &User, secrets: &SecretBox) -> Option<String> {
    let sealed = user.api_key_sealed.as_deref()?;
    Some(secrets.open_str_for(&SealContext::user_api_key(user.id), sealed).unwrap().expose_secret().to_owned())
}

fn token_of(agent: &Agent, secrets: &SecretBox) -> Option<String> {
    let sealed = agent.token_sealed.as_deref()?;
    Some(secrets.open_str_for(&SealContext::agent_token(agent.id), sealed).unwrap().expose_secret().to_owned())
}

async fn imported(store: &SqlStore, python_id: i64) -> Agent {
    store.agent_by_python_id(python_id).await.unwrap().unwrap_or_else(|| panic!("agent {python_id} imported"))
}

/// Imports [`python_baal`] into `store` and checks every user, agent and pool VM.
async fn check_full_import(store: &SqlStore) {
    let dir = tempfile::tempdir().unwrap();
    let files = python_baal().write(dir.path());
    let secrets = secrets();
    let report = run(&files, store, &secrets, false).await.unwrap();
    assert!(report.changed() && !report.dry_run);
    assert_eq!((report.users.created, report.users.key_added, report.users.kept_keys.len()), (4, 0, 0));
    assert_eq!((report.agents.created, report.agents.inactive_skipped), (5, 1));

    let users = store.users_list().await.unwrap();
    let ids: Vec<i64> = users.iter().map(|u| u.id).collect();
    assert_eq!(ids, [100, 200, 300, 400], "400 owns an agent without a users row");
    let user = |id| users.iter().find(|u| u.id == id).unwrap();
    assert_eq!(key_of(user(100), &secrets).as_deref(), Some("sk-alice-libertai"), "re-sealed under ours");
    assert_eq!(key_of(user(200), &secrets), None);
    assert_eq!((user(100).show_tools, user(200).show_tools), (true, false));
    let moved = secrets.open_for(&SealContext::user_api_key(300), user(100).api_key_sealed.as_ref().unwrap());
    assert!(moved.is_err(), "sealed for its own row");

    let helper = imported(store, 1).await;
    assert_eq!((helper.runtime, helper.python_id, helper.slug.as_str()), (AgentRuntime::Python, Some(1), "1"));
    assert_eq!((helper.owner_id, helper.name.as_str(), helper.model.as_str()), (100, "Helper", "qwen3-coder-next"));
    assert_eq!(helper.system_prompt, "You are Helper, a helpful assistant.");
    assert_eq!((helper.status, helper.payer), (AgentStatus::Running, Payer::Owner));
    assert_eq!(helper.created_at, "2025-12-01T10:20:30.123456Z".parse::<DateTime<Utc>>().unwrap());
    assert_eq!(helper.deployment.instance_hash.as_deref(), Some(H1));
    assert_eq!(helper.deployment.vm_host.as_deref(), Some("192.0.2.1"), "vm_ipv6 holds the SSH host");
    assert_eq!(helper.deployment.vm_url.as_deref(), Some("https://helper.2n6.me"));
    assert_eq!(helper.deployment.crn_url.as_deref(), Some("https://crn.example"));
    assert_eq!(helper.deployment.ssh_port, None, "the Python table has none");
    assert_eq!(token_of(&helper, &secrets).as_deref(), Some("agent-1-secret"));

    let broken = imported(store, 2).await;
    assert_eq!((broken.status, broken.payer), (AgentStatus::Failed, Payer::Operator));
    assert_eq!(broken.created_at, "2026-01-05T08:00:00Z".parse::<DateTime<Utc>>().unwrap(), "SQLite's own format");
    assert_eq!(token_of(&broken, &secrets).as_deref(), Some("agent-2-secret"));
    assert_eq!(store.agent_by_python_id(3).await.unwrap(), None, "deleted in Python: not imported");
    let halfway = imported(store, 4).await;
    assert_eq!((halfway.status, token_of(&halfway, &secrets)), (AgentStatus::Failed, None));
    let legacy = imported(store, 5).await;
    assert_eq!((legacy.status, legacy.payer, legacy.owner_id), (AgentStatus::Running, Payer::Operator, 400));
    let tokenless = imported(store, 6).await;
    assert_eq!((tokenless.status, tokenless.payer), (AgentStatus::Failed, Payer::Owner), "nothing to reach it by");
    let line = report.agent_lines.iter().find(|l| l.python_id == 6).unwrap();
    assert!(line.note.is_some_and(|n| n.contains("secret")), "{line:?}");
    assert_eq!(line.agent_id, Some(tokenless.id));

    let pool = store.pool_list().await.unwrap();
    let hashes: Vec<(&str, PoolStatus)> =
        pool.iter().map(|vm| (vm.instance_hash.as_deref().unwrap(), vm.status)).collect();
    assert_eq!(hashes, [(P1, PoolStatus::Warm), (P2, PoolStatus::Warm)], "warm and claimed rows, nothing else");
    assert_eq!(pool[0].deployment.vm_host.as_deref(), Some("192.0.2.50"));
    assert_eq!(pool[0].deployment.ssh_port, Some(24_001));
    assert_eq!(pool[0].deployment.crn_url.as_deref(), Some("https://crn.example"));
    assert_eq!(pool[1].agent_id, None, "a dead claim is released");
    let counts = report.pool.as_ref().unwrap();
    assert_eq!((counts.added, counts.unchanged, counts.serving_agents), (2, 0, 2), "{counts:?}");
    let leaks: Vec<(i64, Option<&str>)> =
        counts.possible_leaks.iter().map(|l| (l.python_row, l.instance_hash.as_deref())).collect();
    assert_eq!(leaks, [(4, None), (5, Some(P5))]);

    // A second import of the same files changes nothing, and says so.
    let before = contents(store).await;
    let again = run(&files, store, &secrets, false).await.unwrap();
    assert!(!again.changed(), "{again:?}");
    assert_eq!((again.users.unchanged, again.agents.unchanged, again.pool.as_ref().unwrap().unchanged), (4, 5, 2));
    assert!(again.agent_lines.iter().all(|l| l.action == AgentAction::Unchanged));
    assert_eq!(contents(store).await, before);
}

#[tokio::test]
async fn imports_users_agents_and_warm_vms_into_sqlite() {
    let db = db::sqlite().await;
    check_full_import(db.store()).await;
}

#[tokio::test]
async fn imports_users_agents_and_warm_vms_into_postgres() {
    let Some(db) = db::postgres().await else { return };
    check_full_import(db.store()).await;
}

#[tokio::test]
async fn a_dry_run_says_what_it_would_do_and_writes_nothing() {
    let db = db::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let files = python_baal().write(dir.path());
    let secrets = secrets();
    let dry = run(&files, db.store(), &secrets, true).await.unwrap();
    assert!(dry.dry_run && dry.changed());
    assert_eq!(contents(db.store()).await, (vec![], vec![], vec![]), "nothing written");
    let real = run(&files, db.store(), &secrets, false).await.unwrap();
    assert_eq!(
        (&dry.users, &dry.agents, &dry.pool),
        (&real.users, &real.agents, &real.pool),
        "it said what it then did"
    );
    let ids = |r: &Report| r.agent_lines.iter().map(|l| (l.python_id, l.status, l.payer)).collect::<Vec<_>>();
    assert_eq!(ids(&dry), ids(&real));
    assert!(dry.agent_lines.iter().all(|l| l.agent_id.is_none() && l.action == AgentAction::Create));
}

#[tokio::test]
async fn the_first_schema_imports_without_its_later_columns() {
    let db = db::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let files = PythonBaal::new()
        .first_version()
        .with_user(PyUser::new(100).with_api_key("sk-old").hiding_tools())
        .with_agent(PyAgent::new(1, 100, "Old").running(H1, "192.0.2.1", "https://old.2n6.me", "old-secret"))
        .write(dir.path());
    let secrets = secrets();
    run(&files, db.store(), &secrets, false).await.unwrap();
    let user = db.store().user_get(100).await.unwrap().unwrap();
    assert!(user.show_tools, "no show_tools column: every user saw tool notices");
    assert_eq!(key_of(&user, &secrets).as_deref(), Some("sk-old"));
    assert_eq!(token_of(&imported(db.store(), 1).await, &secrets).as_deref(), Some("old-secret"));
}

#[tokio::test]
async fn opens_a_token_from_the_fernet_specification() {
    let db = db::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let files =
        PythonBaal::new().with_user(PyUser::new(100)).write_with_key(dir.path(), &SecretString::from(SPEC_SECRET));
    files.execute_baal(&format!("UPDATE users SET api_key = '{SPEC_TOKEN}' WHERE telegram_id = 100"));
    let secrets = secrets();
    run(&files, db.store(), &secrets, false).await.unwrap();
    let user = db.store().user_get(100).await.unwrap().unwrap();
    assert_eq!(key_of(&user, &secrets).as_deref(), Some("hello"));
}

/// Runs an import expected to fail on bad input, checks nothing was written, returns the error.
async fn refused(files: &PythonFiles, key: &PythonKey, store: &SqlStore) -> ImportError {
    let before = contents(store).await;
    let err = python::import(&files.source(), key, store, &secrets(), false, &mut |_| {}).await.unwrap_err();
    assert!(err.is_bad_input(), "{err}");
    assert_eq!(contents(store).await, before, "nothing written");
    let shown = format!("{err}\n{err:?}");
    for secret in [files.key_text(), "sk-alice-libertai", "agent-1-secret", "sk-new"] {
        assert!(!shown.contains(secret), "a secret leaked: {shown}");
    }
    err
}

#[tokio::test]
async fn a_wrong_key_is_refused_and_named_before_anything_is_written() {
    let db = db::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let files = python_baal().write(dir.path());
    let other = PythonKey::from_secret(&SecretString::from(SPEC_SECRET), "PYTHON_BOT_ENCRYPTION_KEY").unwrap();
    let err = refused(&files, &other, db.store()).await;
    assert!(matches!(err, ImportError::WrongKey { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("does not open the tokens") && text.contains("baal.db"), "{text}");
    assert!(text.contains("table users, row 100, column api_key"), "{text}");
    assert!(text.contains("PYTHON_BOT_ENCRYPTION_KEY"), "says what to set: {text}");
}

#[tokio::test]
async fn corrupt_rows_are_named_and_nothing_is_written() {
    let db = db::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let files = python_baal().write(dir.path());
    run(&files, db.store(), &secrets(), false).await.unwrap();
    // New rows arrive in Python beside damaged ones: none of them may be written.
    let fresh = files.token("sk-new");
    let elsewhere = tempfile::tempdir().unwrap();
    let foreign = PythonBaal::new().write(elsewhere.path()).token("written-with-another-key");
    files.execute_baal(&format!(
        "INSERT INTO users (telegram_id, api_key, created_at) VALUES (500, '{fresh}', '2026-02-01');
         UPDATE users SET api_key = 'sk-plain-text-key' WHERE telegram_id = 200;
         UPDATE agents SET created_at = 'yesterday' WHERE id = 1;
         UPDATE agents SET owner_id = 'alice' WHERE id = 2;
         UPDATE agents SET deployment_status = 'exploded' WHERE id = 4;
         UPDATE agents SET auth_token = '{foreign}' WHERE id = 5;
         UPDATE agents SET created_at = 'not read: deleted' WHERE id = 3;"
    ));
    let err = refused(&files, &files.python_key(), db.store()).await;
    let ImportError::Corrupt { problems, .. } = &err else { panic!("{err:?}") };
    let places: Vec<String> = problems.iter().map(|p| p.place.to_string()).collect();
    assert_eq!(
        places,
        [
            "table agents, row 1, column created_at",
            "table agents, row 2, column owner_id",
            "table agents, row 4, column deployment_status",
        ],
        "{err}"
    );
    // Once the rows read, the tokens: garbage, and one another key wrote.
    files.execute_baal(
        "UPDATE agents SET created_at = '2026-01-01T00:00:00+00:00', owner_id = 200, deployment_status = 'failed'",
    );
    let err = refused(&files, &files.python_key(), db.store()).await;
    let text = err.to_string();
    assert!(text.contains("table users, row 200, column api_key: not a Fernet token"), "{text}");
    assert!(text.contains("table agents, row 5, column auth_token: this token does not open"), "{text}");
    assert!(!text.contains("row 3"), "a deleted agent's row is not read: {text}");
}

#[tokio::test]
async fn unknown_tables_and_columns_are_named() {
    let db = db::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let files = python_baal().write(dir.path());
    files.execute_baal(
        "ALTER TABLE agents ADD COLUMN secret_sauce TEXT; CREATE TABLE extras (x); CREATE VIEW v AS SELECT 1;",
    );
    let text = refused(&files, &files.python_key(), db.store()).await.to_string();
    for named in ["baal.db", "unknown column agents.secret_sauce", "unknown table extras", "unknown view v"] {
        assert!(text.contains(named), "{named}: {text}");
    }

    let dropped = tempfile::tempdir().unwrap();
    let files = python_baal().write(dropped.path());
    files.execute_baal("ALTER TABLE agents DROP COLUMN vm_url");
    let text = refused(&files, &files.python_key(), db.store()).await.to_string();
    assert!(text.contains("table agents has no column vm_url"), "{text}");

    let pool_dir = tempfile::tempdir().unwrap();
    let files = python_baal().write(pool_dir.path());
    files.execute_pool("ALTER TABLE vm_pool ADD COLUMN region TEXT");
    let text = refused(&files, &files.python_key(), db.store()).await.to_string();
    assert!(text.contains("pool.db") && text.contains("unknown column vm_pool.region"), "{text}");

    // pool.db given as baal.db.
    let source = Source::new(&files.pool_db);
    let err = Snapshot::read(&source, &files.python_key()).unwrap_err();
    assert!(err.to_string().contains("no table users"), "{err}");
    let missing = Source::new(dir.path().join("no-such.db"));
    let err = Snapshot::read(&missing, &files.python_key()).unwrap_err();
    assert!(matches!(err, ImportError::Open { .. }) && err.is_bad_input(), "{err:?}");
    assert!(!dir.path().join("no-such.db").exists(), "opened read-only: nothing created");
}

#[tokio::test]
async fn users_known_here_keep_their_own_key() {
    let db = db::sqlite().await;
    let store = db.store();
    let secrets = secrets();
    store.user_get_or_create(300, Some("carol")).await.unwrap();
    let theirs = secrets.seal_str_for(&SealContext::user_api_key(300), "sk-carol-baal").unwrap();
    store.user_set_api_key(300, Some(theirs)).await.unwrap();
    store.user_get_or_create(100, None).await.unwrap();
    store.user_toggle_show_tools(100).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let files = python_baal().write(dir.path());
    let report = run(&files, store, &secrets, false).await.unwrap();
    assert_eq!(report.users.kept_keys, [300], "named in the report");
    assert_eq!((report.users.created, report.users.key_added), (2, 1));
    let carol = store.user_get(300).await.unwrap().unwrap();
    assert_eq!(
        (key_of(&carol, &secrets).as_deref(), carol.username.as_deref()),
        (Some("sk-carol-baal"), Some("carol"))
    );
    let alice = store.user_get(100).await.unwrap().unwrap();
    assert_eq!(key_of(&alice, &secrets).as_deref(), Some("sk-alice-libertai"), "a user without a key gets theirs");
    assert!(!alice.show_tools, "what they chose here stays");
    assert_eq!(imported(store, 6).await.payer, Payer::Owner);

    let again = run(&files, store, &secrets, false).await.unwrap();
    assert!(!again.changed());
    assert_eq!(again.users.kept_keys, [300], "still told: their key differs");
}

#[tokio::test]
async fn an_import_cut_off_half_way_is_finished_by_the_next() {
    let db = db::sqlite().await;
    let store = db.store();
    let secrets = secrets();
    store.user_get_or_create(100, None).await.unwrap();
    let then = "2025-12-01T10:20:30.123456Z".parse().unwrap();
    let half =
        store.agent_create(NewAgent::new(100, "Helper", "p", "qwen3-coder-next").imported_from_python(1, then)).await;
    let half = half.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let files = python_baal().write(dir.path());
    let report = run(&files, store, &secrets, false).await.unwrap();
    let line = report.agent_lines.iter().find(|l| l.python_id == 1).unwrap();
    assert_eq!((line.action, line.agent_id), (AgentAction::Resume, Some(half.id)));
    let helper = imported(store, 1).await;
    assert_eq!((helper.id, helper.status), (half.id, AgentStatus::Running));
    assert_eq!(token_of(&helper, &secrets).as_deref(), Some("agent-1-secret"));
    assert_eq!(helper.deployment.instance_hash.as_deref(), Some(H1));
}

#[tokio::test]
async fn without_pool_db_no_vm_is_imported() {
    let db = db::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let files = python_baal().write(dir.path());
    let source = Source::new(&files.baal_db);
    let snapshot = Snapshot::read(&source, &files.python_key()).unwrap();
    let plan = Plan::new(snapshot, db.store(), &secrets()).await.unwrap();
    assert!(!format!("{plan:?}").contains("agent-1-secret"), "Debug shows no secret");
    let report = plan.apply(db.store(), &secrets(), &mut |_| {}).await.unwrap();
    assert_eq!(report.pool, None);
    assert!(db.store().pool_list().await.unwrap().is_empty());
    let shown = format!("{report:?}{}", serde_json::to_string(&report).unwrap());
    for secret in [files.key_text(), "sk-alice-libertai", "agent-1-secret"] {
        assert!(!shown.contains(secret), "{shown}");
    }
}

#[test]
fn the_store_is_never_one_of_the_files_imported() {
    let dir = tempfile::tempdir().unwrap();
    let files = python_baal().write(dir.path());
    let source = files.source();
    let (baal, pool) = (files.baal_db.display().to_string(), files.pool_db.display().to_string());
    for url in [format!("sqlite://{baal}?mode=rwc"), format!("sqlite:{baal}"), format!("sqlite://{pool}")] {
        let err = check_apart(&source, &url).unwrap_err();
        assert!(matches!(err, ImportError::SameFile { .. }) && err.is_bad_input(), "{url}: {err:?}");
    }
    let elsewhere = dir.path().join("ours.db").display().to_string();
    for url in [format!("sqlite://{elsewhere}?mode=rwc"), "sqlite::memory:".into(), db::postgres_url()] {
        check_apart(&source, &url).unwrap_or_else(|err| panic!("{url}: {err}"));
    }
}
