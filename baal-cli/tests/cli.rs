//! The real `baal-cli` binary against temporary SQLite files (and PostgreSQL when it answers).
//! Every run gets a cleared environment and an empty working directory, so neither the host's
//! settings nor a `.env` leak in.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use baal_core::domain::{AgentId, AgentStatus, Deployment, EventOutcome, NewAgent};
use baal_core::secrets::{SealContext, SecretBox};
use baal_core::store::{SqlStore, Store};
use baal_core::testing::python_baal::{PyAgent, PyPoolVm, PyUser, PythonBaal, PythonFiles};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn baal_cli(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    let output: Output = Command::new(env!("CARGO_BIN_EXE_baal-cli"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run baal-cli");
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert!(!run.stderr.contains("panicked"), "baal-cli panicked: {}", run.stderr);
    assert!(!run.stderr.contains("backtrace"), "baal-cli printed a backtrace: {}", run.stderr);
    run
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("baal.db").display())
}

/// Seeds two users and three agents (one deployed with history, one running, one of another
/// owner) and returns the ids.
async fn seed(url: &str) -> [i64; 3] {
    let store = SqlStore::open(url).await.unwrap();
    store.user_get_or_create(100, Some("alice")).await.unwrap();
    store.user_get_or_create(200, None).await.unwrap();
    store.user_set_api_key(100, Some(b"SEALED-USER-KEY".to_vec())).await.unwrap();
    let helper = store
        .agent_create(
            NewAgent::new(100, "Helper", "Be kind.\nBe brief.", "qwen3-coder-next")
                .with_token_sealed(b"SEALED-AGENT-TOKEN".to_vec()),
        )
        .await
        .unwrap();
    let mut deployment = Deployment::default();
    deployment.instance_hash = Some("ab".repeat(32));
    deployment.vm_url = Some("https://helper.2n6.me".into());
    deployment.vm_host = Some("192.0.2.7".into());
    deployment.ssh_port = Some(24_005);
    store.agent_set_deployment(helper.id, &deployment).await.unwrap();
    store.agent_set_status(helper.id, AgentStatus::Running).await.unwrap();
    store.event_record(helper.id, &"provision".into(), EventOutcome::Succeeded, None).await.unwrap();
    store.event_record(helper.id, &"ship".into(), EventOutcome::Failed, Some("ssh refused")).await.unwrap();
    let second = store.agent_create(NewAgent::new(100, "Second", "p", "glm-4.7")).await.unwrap();
    let other = store.agent_create(NewAgent::new(200, "Other one", "p", "glm-4.7")).await.unwrap();
    store.close().await.unwrap();
    [helper.id.0, second.id.0, other.id.0]
}

#[test]
fn fresh_database_lists_no_agents_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let run = baal_cli(dir.path(), &[], &["--database-url", &url, "agents", "list", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.trim(), "[]");
    let run = baal_cli(dir.path(), &[], &["--database-url", &url, "users", "list", "--json"]);
    assert_eq!((run.code, run.stdout.trim()), (0, "[]"));
}

#[test]
fn bad_database_urls_exit_non_zero_and_name_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let run = baal_cli(dir.path(), &[], &["--database-url", "mysql://root@localhost/baal", "agents", "list"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("mysql://root@localhost/baal"), "{}", run.stderr);

    let run = baal_cli(dir.path(), &[], &["--database-url", "postgres://baal:hunter2@127.0.0.1:1/baal", "migrate"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("postgres://baal:***@127.0.0.1:1/baal"), "{}", run.stderr);
    assert!(!run.stderr.contains("hunter2"), "the password leaked: {}", run.stderr);

    let missing = format!("sqlite://{}", dir.path().join("no").join("such").join("baal.db").display());
    let run = baal_cli(dir.path(), &[], &["--database-url", &missing, "users", "list"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains(&missing), "{}", run.stderr);
}

#[test]
fn database_url_flag_wins_over_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let env = [("DATABASE_URL", "mysql://not-this-one")];
    let run = baal_cli(dir.path(), &env, &["--database-url", &url, "agents", "list", "--json"]);
    assert_eq!((run.code, run.stdout.trim()), (0, "[]"), "{}", run.stderr);
    let run = baal_cli(dir.path(), &env, &["agents", "list", "--json"]);
    assert_ne!(run.code, 0, "DATABASE_URL is used without the flag");
    assert!(run.stderr.contains("mysql://not-this-one"), "{}", run.stderr);
}

#[tokio::test]
async fn agents_list_show_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let [helper, second, other] = seed(&url).await;
    let db = [("DATABASE_URL", url.as_str())];

    let table = baal_cli(dir.path(), &db, &["agents", "list"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", table.stdout);
    assert!(lines[0].starts_with("ID"));
    // Columns line up: every row puts its status where the header says STATUS.
    let status_column = lines[0].find("STATUS").unwrap();
    assert_eq!(&lines[1][status_column..status_column + 7], "running");
    assert_eq!(&lines[2][status_column..status_column + 7], "pending");
    assert!(lines[3].contains("Other one"));

    let json = baal_cli(dir.path(), &db, &["agents", "list", "--json", "--owner", "100"]);
    let agents: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let ids: Vec<i64> = agents.as_array().unwrap().iter().map(|a| a["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [helper, second]);
    assert_eq!(agents[0]["status"], "running");
    assert_eq!(agents[0]["token"], "set");
    assert_eq!(agents[0]["vm_url"], "https://helper.2n6.me");
    assert!(!json.stdout.contains("SEALED"), "a sealed value leaked: {}", json.stdout);

    let running = baal_cli(dir.path(), &db, &["agents", "list", "--json", "--status", "pending"]);
    let agents: serde_json::Value = serde_json::from_str(&running.stdout).unwrap();
    let ids: Vec<i64> = agents.as_array().unwrap().iter().map(|a| a["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [second, other]);

    let bad_status = baal_cli(dir.path(), &db, &["agents", "list", "--status", "deployed"]);
    assert_ne!(bad_status.code, 0);
    assert!(bad_status.stderr.contains("pending, deploying, running, down, failed, stopped"), "{}", bad_status.stderr);

    let show = baal_cli(dir.path(), &db, &["agents", "show", &helper.to_string()]);
    assert_eq!(show.code, 0, "{}", show.stderr);
    for expected in
        ["\"Helper\"", "100 (@alice)", "qwen3-coder-next", "running", "https://helper.2n6.me", "192.0.2.7:24005"]
    {
        assert!(show.stdout.contains(expected), "missing {expected:?} in:\n{}", show.stdout);
    }
    assert!(show.stdout.lines().any(|l| l.starts_with("Token") && l.ends_with("set")), "{}", show.stdout);
    assert!(show.stdout.contains("  Be brief."), "the prompt is shown: {}", show.stdout);
    assert!(show.stdout.contains("provision") && show.stdout.contains("ssh refused"), "{}", show.stdout);
    assert!(!show.stdout.contains("SEALED"), "a sealed value leaked: {}", show.stdout);

    let users = baal_cli(dir.path(), &db, &["users", "list", "--json"]);
    let users: serde_json::Value = serde_json::from_str(&users.stdout).unwrap();
    assert_eq!(users[0]["id"], 100);
    assert_eq!(users[0]["api_key"], "set");
    assert_eq!(users[0]["agents"], 2);
    assert_eq!(users[1]["api_key"], "unset");
    assert_eq!((&users[0]["plan"], &users[1]["plan"]), (&"own key".into(), &"no key (must /login)".into()));
    let with_free_tier = [db[0], ("LIBERTAI_API_KEY", "operator-key"), ("FREE_TIER_DAILY_MESSAGES", "20")];
    let users_table = baal_cli(dir.path(), &with_free_tier, &["users", "list"]);
    assert!(
        users_table.stdout.contains("@alice") && users_table.stdout.contains("free tier (20/day)"),
        "{}",
        users_table.stdout
    );
    assert!(!users_table.stdout.contains("SEALED") && !users_table.stdout.contains("operator-key"));
}

#[tokio::test]
async fn delete_asks_refuses_without_a_terminal_and_soft_deletes_with_yes() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let [helper, ..] = seed(&url).await;
    let db = [("DATABASE_URL", url.as_str())];
    let id = helper.to_string();

    let refused = baal_cli(dir.path(), &db, &["agents", "delete", &id]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    let still = baal_cli(dir.path(), &db, &["agents", "list", "--json"]);
    assert!(still.stdout.contains("\"Helper\""), "nothing was deleted without confirmation");

    // Its facts say Aleph Cloud, but no Aleph key is set: the VM cannot be torn down from here,
    // so nothing is marked deleted (a hidden VM would keep running and costing).
    let refused = baal_cli(dir.path(), &db, &["agents", "delete", &id, "--yes"]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("ALEPH_PRIVATE_KEY"), "{}", refused.stderr);
    assert!(refused.stderr.contains("NOT deleted"), "{}", refused.stderr);
    let still = baal_cli(dir.path(), &db, &["agents", "list", "--json"]);
    assert!(still.stdout.contains("\"Helper\""), "{}", still.stdout);

    // Once the facts no longer point at a VM (say, the operator forgot it by hand), delete works.
    let store = SqlStore::open(&url).await.unwrap();
    store.agent_set_deployment(baal_core::domain::AgentId(helper), &Deployment::default()).await.unwrap();
    store.close().await.unwrap();
    let deleted = baal_cli(dir.path(), &db, &["agents", "delete", &id, "--yes"]);
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    assert!(deleted.stdout.contains("nothing to tear down"), "{}", deleted.stdout);
    let after = baal_cli(dir.path(), &db, &["agents", "list", "--json"]);
    assert!(!after.stdout.contains("\"Helper\""), "{}", after.stdout);
    let show = baal_cli(dir.path(), &db, &["agents", "show", &id]);
    assert!(show.stdout.contains("stopped (deleted)"), "{}", show.stdout);
    assert!(show.stdout.contains("delete"), "the deletion is in the history: {}", show.stdout);

    let again = baal_cli(dir.path(), &db, &["agents", "delete", &id, "--yes"]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("already deleted"), "{}", again.stderr);
}

/// While the bot (another process) holds an agent's lease, `agents delete` refuses and says why;
/// once that lease has run out, it deletes.
#[tokio::test]
async fn delete_waits_for_whoever_holds_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let [_, second, _] = seed(&url).await;
    let db = [("DATABASE_URL", url.as_str())];
    let id = second.to_string();
    let store = SqlStore::open(&url).await.unwrap();
    let now = chrono::Utc::now();
    let until = now + chrono::Duration::minutes(10);
    assert!(store.agent_lease_take(AgentId(second), "bot-process", until, now).await.unwrap());

    let refused = baal_cli(dir.path(), &db, &["agents", "delete", &id, "--yes"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("Second is being deployed right now; delete it when that finishes"),
        "{}",
        refused.stderr
    );
    let still = baal_cli(dir.path(), &db, &["agents", "list", "--json"]);
    assert!(still.stdout.contains("\"Second\""), "{}", still.stdout);

    // The bot process died long ago: its last renewal is in the past.
    let now = chrono::Utc::now();
    let past = now - chrono::Duration::seconds(1);
    assert!(store.agent_lease_take(AgentId(second), "bot-process", past, now).await.unwrap());
    let deleted = baal_cli(dir.path(), &db, &["agents", "delete", &id, "--yes"]);
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    let agent = store.agent_get(AgentId(second)).await.unwrap().unwrap();
    assert!(agent.deleted);
    assert_eq!(agent.lease, None, "the deletion released the lease it took");
    let show = baal_cli(dir.path(), &db, &["agents", "show", &id]);
    assert!(show.stdout.contains("by baal-cli"), "who deleted it is in the history: {}", show.stdout);
}

#[test]
fn unknown_agent_ids_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let db = [("DATABASE_URL", url.as_str())];
    for args in [["agents", "show", "999"].as_slice(), ["agents", "delete", "999", "--yes"].as_slice()] {
        let run = baal_cli(dir.path(), &db, args);
        assert_ne!(run.code, 0);
        assert!(run.stderr.contains("No agent with id 999"), "{}", run.stderr);
    }
    let run = baal_cli(dir.path(), &db, &["agents", "show", "twelve"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("\"twelve\" is not an agent id"), "{}", run.stderr);
}

/// Output into a pipe nobody reads any more (`baal-cli doctor | head -1`) ends the process by
/// SIGPIPE, as for any Unix tool, never with a panic and its backtrace.
#[test]
fn a_closed_pipe_ends_baal_cli_quietly() {
    use std::os::unix::process::ExitStatusExt as _;
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = Command::new(env!("CARGO_BIN_EXE_baal-cli"))
        .arg("doctor")
        .env_clear()
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run baal-cli");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.signal(), Some(13), "ended by SIGPIPE: {:?} {stderr}", output.status);
}

#[test]
fn migrate_creates_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let run = baal_cli(dir.path(), &[], &["--database-url", &url, "migrate"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("up to date"));
    assert!(dir.path().join("baal.db").is_file());
}

#[test]
fn aleph_sign_forget_needs_only_the_wallet_key() {
    // A well-known development key (Hardhat's first account), never a real wallet.
    const KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    let dir = tempfile::tempdir().unwrap();
    let hash = "ab".repeat(32);
    let wallet_only = [("ALEPH_PRIVATE_KEY", KEY)];

    let run = baal_cli(dir.path(), &wallet_only, &["aleph", "sign", "forget", &hash]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let message: serde_json::Value = serde_json::from_str(&run.stdout).expect("the signed message as JSON");
    assert_eq!(message["type"], "FORGET");
    assert_eq!(message["sender"], "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
    let content: serde_json::Value = serde_json::from_str(message["item_content"].as_str().unwrap()).unwrap();
    assert_eq!(content["hashes"], serde_json::json!([hash]));
    assert!(!run.stdout.contains(KEY), "the private key was printed");

    // An INSTANCE puts the SSH public key into the VM, so it still needs it, and says which.
    let run = baal_cli(dir.path(), &wallet_only, &["aleph", "sign", "instance", "--name", "demo"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("ALEPH_SSH_PUBKEY"), "{}", run.stderr);

    let run = baal_cli(dir.path(), &[], &["aleph", "sign", "forget", &hash]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("ALEPH_PRIVATE_KEY: not set"), "{}", run.stderr);
}

#[test]
fn doctor_names_what_is_missing_and_passes_when_complete() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let bare = baal_cli(dir.path(), &[("DATABASE_URL", &url)], &["doctor"]);
    assert_ne!(bare.code, 0);
    for name in ["TELEGRAM_BOT_TOKEN", "TELEGRAM_API_ID", "TELEGRAM_API_HASH"] {
        assert!(
            bare.stdout.lines().any(|l| l.contains('✗') && l.contains(name)),
            "{name} not flagged:\n{}",
            bare.stdout
        );
    }
    assert!(bare.stdout.contains("✓ database"), "{}", bare.stdout);
    assert!(bare.stdout.contains("local deployer"), "{}", bare.stdout);

    let key = baal_cli(dir.path(), &[], &["keygen"]).stdout.trim().to_owned();
    let complete = [
        ("DATABASE_URL", url.as_str()),
        ("BOT_ENCRYPTION_KEY", key.as_str()),
        ("LIBERTAI_API_KEY", "sk-operator-secret"),
        ("TELEGRAM_BOT_TOKEN", "123:telegram-secret"),
        ("TELEGRAM_API_ID", "12345"),
        ("TELEGRAM_API_HASH", "hash-secret"),
    ];
    let ok = baal_cli(dir.path(), &complete, &["doctor"]);
    assert_eq!(ok.code, 0, "{}", ok.stdout);
    assert!(!ok.stdout.contains('✗'), "{}", ok.stdout);
    for secret in [key.as_str(), "sk-operator-secret", "telegram-secret", "hash-secret"] {
        assert!(!ok.stdout.contains(secret), "doctor printed a secret");
    }

    // What the platform would generate or go without is a note, not a failure.
    let empty = baal_cli(dir.path(), &[], &["doctor", "--console"]);
    assert_eq!(empty.code, 0, "{}", empty.stdout);
    let note = |name: &str| empty.stdout.lines().find(|l| l.contains("! ") && l.contains(name)).map(str::to_owned);
    let key_note = note("BOT_ENCRYPTION_KEY").unwrap_or_else(|| panic!("no key note:\n{}", empty.stdout));
    assert!(key_note.contains("generated into baal-data/encryption.key"), "{key_note}");
    assert!(!dir.path().join("baal-data").exists(), "doctor generates nothing");
    let libertai_note = note("LIBERTAI_API_KEY").unwrap_or_else(|| panic!("no LibertAI note:\n{}", empty.stdout));
    assert!(libertai_note.contains("/login") && libertai_note.contains("nobody gets the free tier"), "{libertai_note}");

    let console = [("DATABASE_URL", url.as_str()), ("BOT_ENCRYPTION_KEY", key.as_str()), ("LIBERTAI_API_KEY", "k")];
    assert_eq!(baal_cli(dir.path(), &console, &["doctor", "--console"]).code, 0);

    let bad_key = [("DATABASE_URL", url.as_str()), ("BOT_ENCRYPTION_KEY", "too-short")];
    let run = baal_cli(dir.path(), &bad_key, &["doctor", "--console"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.contains('✗') && l.contains("BOT_ENCRYPTION_KEY") && l.contains("baal-cli keygen")),
        "{}",
        run.stdout
    );

    let missing_file = dir.path().join("absent_key");
    let aleph = [
        ("DATABASE_URL", url.as_str()),
        ("BOT_ENCRYPTION_KEY", key.as_str()),
        ("LIBERTAI_API_KEY", "k"),
        ("ALEPH_PRIVATE_KEY", "aleph-secret"),
        ("ALEPH_SSH_PUBKEY", "ssh-ed25519 AAAA test"),
        ("ALEPH_SSH_PRIVKEY_PATH", missing_file.to_str().unwrap()),
    ];
    let run = baal_cli(dir.path(), &aleph, &["doctor", "--console"]);
    assert_ne!(run.code, 0);
    assert!(run.stdout.contains("Aleph Cloud selected"), "{}", run.stdout);
    assert!(run.stdout.contains("✗ ALEPH_SSH_PRIVKEY_PATH: no file at"), "{}", run.stdout);
    assert!(!run.stdout.contains("aleph-secret"));

    let malformed = baal_cli(dir.path(), &[("DATABASE_URL", &url), ("MAX_AGENTS_PER_USER", "three")], &["doctor"]);
    assert_ne!(malformed.code, 0);
    assert!(malformed.stdout.contains("✗ MAX_AGENTS_PER_USER"), "{}", malformed.stdout);

    let bad_db = baal_cli(dir.path(), &[("DATABASE_URL", "postgres://u:pw@127.0.0.1:1/x")], &["doctor"]);
    assert_ne!(bad_db.code, 0);
    assert!(bad_db.stdout.contains("✗ cannot open the database postgres://u:***@127.0.0.1:1/x"), "{}", bad_db.stdout);
}

#[tokio::test]
async fn works_on_postgres_too() {
    let Some(test_db) = baal_core::testing::db::postgres().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let run = baal_cli(dir.path(), &[], &["--database-url", test_db.url(), "agents", "list", "--json"]);
    assert_eq!((run.code, run.stdout.trim()), (0, "[]"), "{}", run.stderr);
    test_db.store().user_get_or_create(5, Some("pg")).await.unwrap();
    let run = baal_cli(dir.path(), &[], &["--database-url", test_db.url(), "users", "list"]);
    assert!(run.stdout.contains("@pg"), "{}", run.stdout);

    let agent = test_db.store().agent_create(NewAgent::new(5, "Pg agent", "p", "glm-4.7")).await.unwrap();
    let (today, _) = baal_core::domain::usage_day(chrono::Utc::now());
    let row = baal_core::domain::AgentUsage::new(
        agent.id,
        today,
        5,
        baal_core::wire::UsageCause::OwnerTurn,
        "glm-4.7",
        baal_core::domain::Payer::Owner,
    )
    .with_tokens(30, 12, 2, false);
    assert!(test_db.store().usage_ingest(agent.id, Some((0, 2)), &[row]).await.unwrap());
    let run = baal_cli(dir.path(), &[], &["--database-url", test_db.url(), "usage", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_else(|_| panic!("{}", run.stderr));
    assert_eq!(report["agents"][0]["name"], "Pg agent");
    assert_eq!(report["total"]["today"]["completion_tokens"], 12);
}

/// A local agent started by another process (here the test, standing in for the bot or the
/// console) is stopped and its files removed by `baal-cli agents delete`, and its supervisor does
/// not bring it back.
#[tokio::test]
async fn delete_stops_a_local_agent_started_by_another_process() {
    use baal_core::deploy::local::{LocalDeployer, find_agent_binary};
    use baal_core::deploy::{AgentSpec, Deployer, SilentReporter};
    use secrecy::SecretString;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("baal-data");
    let url = sqlite_url(dir.path());
    let store = SqlStore::open(&url).await.unwrap();
    store.user_get_or_create(100, None).await.unwrap();
    let agent = store.agent_create(NewAgent::new(100, "Local one", "p", "qwen3-coder-next")).await.unwrap();

    let bin = find_agent_binary(None).expect("baal-agent is built beside the test binaries (cargo build --workspace)");
    let local = LocalDeployer::new(&data, &bin).unwrap();
    let spec = AgentSpec::new(
        agent.id,
        "Local one",
        "p",
        "qwen3-coder-next",
        SecretString::from("sk-test"),
        "http://127.0.0.1:9/v1",
        SecretString::from("agent-secret"),
        "100",
    );
    let deployment = local.deploy(&spec, &SilentReporter).await.unwrap();
    store.agent_set_deployment(agent.id, &deployment).await.unwrap();
    store.agent_set_status(agent.id, AgentStatus::Running).await.unwrap();
    store.close().await.unwrap();
    let pid = local.pid(agent.id).expect("the agent runs");
    let agent_dir = data.join("agents").join(agent.id.to_string());
    assert!(agent_dir.exists());

    let data_dir = data.display().to_string();
    let env = [("DATABASE_URL", url.as_str()), ("BAAL_DATA_DIR", data_dir.as_str())];
    let deleted = tokio::task::spawn_blocking({
        let cwd = dir.path().to_owned();
        let id = agent.id.to_string();
        let env = env.map(|(k, v)| (k.to_owned(), v.to_owned()));
        move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            baal_cli(&cwd, &env, &["agents", "delete", &id, "--yes"])
        }
    })
    .await
    .unwrap();
    assert_eq!(deleted.code, 0, "{}\n{}", deleted.stdout, deleted.stderr);
    assert!(deleted.stdout.contains("Stop the agent"), "each step is reported: {}", deleted.stdout);
    assert!(!agent_dir.exists(), "the agent's files are gone");

    // The supervisor reaps the process and, seeing its files gone, does not restart it.
    let mut gone = false;
    for _ in 0..100 {
        if local.pid(agent.id).is_none() && !Path::new(&format!("/proc/{pid}")).exists() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "agent process {pid} is still running");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(local.pid(agent.id).is_none(), "the supervisor restarted a deleted agent");
}

/// Stores usage for the seeded agents: today, three days ago and ten days ago (UTC). Returns today.
async fn seed_usage(url: &str, [helper, _, other]: [i64; 3]) -> chrono::NaiveDate {
    use baal_core::domain::{AgentUsage, Payer};
    use baal_core::wire::UsageCause;

    let store = SqlStore::open(url).await.unwrap();
    let (today, _) = baal_core::domain::usage_day(chrono::Utc::now());
    let days_ago = |n| today - chrono::Days::new(n);
    let usage = |agent, day, user, cause| AgentUsage::new(AgentId(agent), day, user, cause, "glm-4.7", Payer::Operator);
    let helper_rows = [
        usage(helper, today, 100, UsageCause::OwnerTurn).with_tokens(1_000, 200, 3, false),
        usage(helper, today, 300, UsageCause::VisitorTurn).with_tokens(50, 50, 1, true),
        usage(helper, days_ago(3), 100, UsageCause::Heartbeat).with_tokens(400, 0, 1, false),
        usage(helper, days_ago(10), 100, UsageCause::OwnerTurn).with_tokens(9_000, 999, 5, false),
    ];
    assert!(store.usage_ingest(AgentId(helper), Some((0, 10)), &helper_rows).await.unwrap());
    let other_rows = [usage(other, today, 200, UsageCause::OwnerTurn).with_tokens(10, 10, 1, false)];
    assert!(store.usage_ingest(AgentId(other), None, &other_rows).await.unwrap());
    store.close().await.unwrap();
    today
}

#[tokio::test]
async fn usage_prints_tokens_per_agent_and_cause() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let ids = seed(&url).await;
    let [helper, second, other] = ids;
    let today = seed_usage(&url, ids).await;
    let db = [("DATABASE_URL", url.as_str())];

    let json = baal_cli(dir.path(), &db, &["usage", "--json"]);
    assert_eq!(json.code, 0, "{}", json.stderr);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["today"], today.to_string());
    assert_eq!(report["days"], 7);
    assert_eq!(report["total"]["today"]["prompt_tokens"], 1_060);
    assert_eq!(report["total"]["period"]["prompt_tokens"], 1_460, "ten days ago is outside 7 days");
    assert_eq!(report["total"]["period"]["calls"], 6);
    assert_eq!(report["total"]["period"]["cost"], serde_json::Value::Null, "the catalog knows no prices yet");
    let agents = report["agents"].as_array().unwrap();
    let ids: Vec<i64> = agents.iter().map(|a| a["agent_id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [helper, other], "only agents that used something, by id");
    assert_eq!((&agents[0]["name"], &agents[1]["name"]), (&"Helper".into(), &"Other one".into()));
    let causes: Vec<&str> =
        agents[0]["causes"].as_array().unwrap().iter().map(|c| c["cause"].as_str().unwrap()).collect();
    assert_eq!(causes, ["owner_turn", "heartbeat", "visitor_turn"], "the most tokens first");
    assert_eq!(agents[0]["causes"][2]["today"]["estimated"], true);
    let users: Vec<(i64, u64)> = report["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["user_id"].as_i64().unwrap(), u["period"]["completion_tokens"].as_u64().unwrap()))
        .collect();
    assert_eq!(users, [(100, 200), (300, 50), (200, 10)], "what each charged user used");

    let month = baal_cli(dir.path(), &db, &["usage", "--json", "--days", "30"]);
    let month: serde_json::Value = serde_json::from_str(&month.stdout).unwrap();
    assert_eq!(month["total"]["period"]["prompt_tokens"], 10_460);

    let table = baal_cli(dir.path(), &db, &["usage"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].contains("~ marks estimated") && lines[0].contains(&today.to_string()), "{}", table.stdout);
    assert!(lines[1].starts_with("AGENT") && lines[1].contains("LAST 7 DAYS"), "{}", table.stdout);
    let line = |agent: &str, cause: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(agent) && l.split_whitespace().any(|w| w == cause))
            .unwrap_or_else(|| panic!("no {agent} {cause} line in:\n{}", table.stdout))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    let helper_label = format!("{helper} Helper");
    // Words: the id, the name, the cause, then the figures.
    assert_eq!(line(&helper_label, "owner_turn")[3..8], ["1200", "1200", "1000", "200", "3"]);
    assert_eq!(line(&helper_label, "visitor_turn")[3..6], ["~100", "~100", "~50"], "estimates are marked");
    assert_eq!(line(&helper_label, "all")[3..8], ["~1300", "~1700", "~1450", "~250", "5"]);
    assert_eq!(line("TOTAL", "all")[2..7], ["~1320", "~1720", "~1460", "~260", "6"]);
    assert!(table.stdout.lines().skip(2).all(|l| l.ends_with("price unknown")), "{}", table.stdout);
    assert!(!table.stdout.contains("Second"), "an agent without usage has no line");

    let one = baal_cli(dir.path(), &db, &["usage", "--agent", &other.to_string(), "--json"]);
    let one: serde_json::Value = serde_json::from_str(&one.stdout).unwrap();
    let ids: Vec<i64> = one["agents"].as_array().unwrap().iter().map(|a| a["agent_id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [other]);
    assert_eq!(one["total"]["period"]["calls"], 1);
    let quiet = baal_cli(dir.path(), &db, &["usage", "--agent", &second.to_string()]);
    assert_eq!(quiet.code, 0, "{}", quiet.stderr);
    assert!(quiet.stdout.starts_with("No usage from"), "{}", quiet.stdout);

    // A deleted agent's usage is still reported, marked as such.
    let store = SqlStore::open(&url).await.unwrap();
    assert!(store.agent_soft_delete(AgentId(other)).await.unwrap());
    store.close().await.unwrap();
    let after = baal_cli(dir.path(), &db, &["usage"]);
    assert!(after.stdout.contains(&format!("{other} Other one (deleted)")), "{}", after.stdout);
}

#[test]
fn usage_refuses_bad_arguments_and_unknown_agents() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let db = [("DATABASE_URL", url.as_str())];
    for days in ["0", "367", "week"] {
        let run = baal_cli(dir.path(), &db, &["usage", "--days", days]);
        assert_eq!(run.code, 2, "--days {days} is a usage error: {}", run.stderr);
        assert!(run.stderr.contains("from 1 to 366"), "{}", run.stderr);
    }
    let run = baal_cli(dir.path(), &db, &["usage", "--agent", "twelve"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("not an agent id"), "{}", run.stderr);
    assert!(!dir.path().join("baal.db").exists(), "bad arguments open no database");

    let run = baal_cli(dir.path(), &db, &["usage", "--agent", "999"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("No agent with id 999"), "{}", run.stderr);

    let empty = baal_cli(dir.path(), &db, &["usage", "--json"]);
    assert_eq!(empty.code, 0, "{}", empty.stderr);
    let report: serde_json::Value = serde_json::from_str(&empty.stdout).unwrap();
    assert_eq!(report["agents"], serde_json::json!([]));
    assert_eq!(report["total"]["period"]["cost"], 0.0, "nothing used costs nothing");
    let table = baal_cli(dir.path(), &db, &["usage"]);
    assert!(table.stdout.starts_with("No usage from"), "{}", table.stdout);
}

/// Exit codes a supervisor can act on: 2 for a bad setting or usage (restarting cannot mend it),
/// 1 for a failure at run time, 0 when done; `doctor` exits 1 when it finds a problem.
#[test]
fn bad_settings_and_usage_exit_2_and_runtime_failures_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let db = ("DATABASE_URL", url.as_str());
    let bad_number = baal_cli(dir.path(), &[db, ("FREE_TIER_DAILY_MESSAGES", "many")], &["agents", "list"]);
    assert_eq!(bad_number.code, 2, "{}", bad_number.stderr);
    assert!(bad_number.stderr.contains("FREE_TIER_DAILY_MESSAGES"), "{}", bad_number.stderr);
    let bad_format = baal_cli(dir.path(), &[db, ("LOG_FORMAT", "xml")], &["users", "list"]);
    assert_eq!(bad_format.code, 2, "{}", bad_format.stderr);
    assert!(bad_format.stderr.contains("LOG_FORMAT"), "{}", bad_format.stderr);
    let bad_usage = baal_cli(dir.path(), &[db], &["agents", "frobnicate"]);
    assert_eq!(bad_usage.code, 2, "{}", bad_usage.stderr);

    let unreachable =
        baal_cli(dir.path(), &[("DATABASE_URL", "postgres://postgres@127.0.0.1:1/baal")], &["users", "list"]);
    assert_eq!(unreachable.code, 1, "{}", unreachable.stderr);
    let doctor = baal_cli(dir.path(), &[db], &["doctor"]);
    assert_eq!(doctor.code, 1, "{}", doctor.stdout);
    let fine = baal_cli(dir.path(), &[db, ("LOG_FORMAT", "json")], &["users", "list"]);
    assert_eq!(fine.code, 0, "{}", fine.stderr);
}

/// Runs `baal-cli` off the async runtime, so loopback servers of the test keep answering it.
async fn baal_cli_async(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    let dir = dir.to_owned();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        baal_cli(&dir, &env, &args)
    })
    .await
    .unwrap()
}

/// `aleph reconcile` against the fake CCN on loopback: the wallet's instances beside the
/// database (an agent's, a pool VM's, one planted that nothing knows), a refusal to forget without
/// a terminal or `--yes`, then the unknown one forgotten with `--yes`.
#[tokio::test(flavor = "multi_thread")]
async fn aleph_reconcile_lists_the_wallet_and_forgets_the_unknown_with_yes() {
    use baal_core::domain::PoolStatus;
    use baal_core::store::PoolStore;
    use baal_core::testing::aleph::FakeAleph;
    // A well-known development key (Hardhat's first account), never a real wallet.
    const KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    const WALLET: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

    let aleph = FakeAleph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let [helper, ..] = seed(&url).await;
    let agent_vm = aleph.plant_instance(WALLET, "baal-agent-Helper");
    let pool_vm = aleph.plant_instance(WALLET, "baal-agent-pool-1");
    let unknown = aleph.plant_instance(WALLET, "baal-agent-crashed");
    let store = SqlStore::open(&url).await.unwrap();
    let mut deployment = Deployment::default();
    deployment.instance_hash = Some(agent_vm.clone());
    store.agent_set_deployment(AgentId(helper), &deployment).await.unwrap();
    let row = store.pool_insert().await.unwrap();
    deployment.instance_hash = Some(pool_vm.clone());
    store.pool_update(row.id, Some(&pool_vm), &deployment, PoolStatus::Warm).await.unwrap();
    store.close().await.unwrap();
    let env = [("DATABASE_URL", url.as_str()), ("ALEPH_PRIVATE_KEY", KEY), ("ALEPH_API_URL", aleph.url.as_str())];

    let listed = baal_cli_async(dir.path(), &env, &["aleph", "reconcile", "--json"]).await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let report: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(report["wallet"], WALLET);
    let instances = report["instances"].as_array().unwrap();
    let held = |hash: &str| instances.iter().find(|i| i["hash"] == hash).unwrap_or_else(|| panic!("{hash} not listed"));
    assert_eq!(instances.len(), 3, "{}", listed.stdout);
    assert_eq!(
        held(&agent_vm)["held_by"],
        serde_json::json!({"kind": "agent", "agent_id": helper, "owner_id": 100, "name": "Helper", "deleted": false})
    );
    assert_eq!(held(&pool_vm)["held_by"], serde_json::json!({"kind": "pool_vm", "pool_id": row.id, "status": "warm"}));
    assert_eq!(held(&unknown)["held_by"]["kind"], "unknown");
    let leaks: Vec<&str> =
        instances.iter().filter(|i| i["leak"] == true).map(|i| i["hash"].as_str().unwrap()).collect();
    assert_eq!(leaks, [unknown.as_str()]);
    assert_eq!(report["forgotten"], serde_json::json!([]));

    let table = baal_cli_async(dir.path(), &env, &["aleph", "reconcile"]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    let line =
        |hash: &str| table.stdout.lines().find(|l| l.starts_with(hash)).unwrap_or_else(|| panic!("{}", table.stdout));
    assert!(line(&agent_vm).ends_with(&format!("agent {helper} \"Helper\" of user 100")), "{}", table.stdout);
    assert!(line(&pool_vm).ends_with(&format!("pool VM {} (warm)", row.id)), "{}", table.stdout);
    assert!(line(&unknown).ends_with("UNKNOWN"), "{}", table.stdout);
    assert!(table.stdout.contains("3 instance(s); 1 used by nothing"), "{}", table.stdout);
    assert!(table.stdout.contains("--forget-unknown` forgets the 1 UNKNOWN one(s)"), "{}", table.stdout);

    // No terminal to confirm on and no --yes: refused, nothing posted.
    let refused = baal_cli_async(dir.path(), &env, &["aleph", "reconcile", "--forget-unknown"]).await;
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("no terminal to confirm on") && refused.stderr.contains("--yes"),
        "{}",
        refused.stderr
    );
    assert_eq!(aleph.live_instances().len(), 3);
    assert!(!aleph.messages().values().any(|m| m.message_type == "FORGET"));

    let forgot = baal_cli_async(dir.path(), &env, &["aleph", "reconcile", "--forget-unknown", "--yes", "--json"]).await;
    assert_eq!(forgot.code, 0, "{}", forgot.stderr);
    let report: serde_json::Value = serde_json::from_str(&forgot.stdout).unwrap();
    assert_eq!(report["forgotten"], serde_json::json!([unknown]));
    assert_eq!(aleph.messages()[&unknown].status, "forgotten");
    let mut live = aleph.live_instances();
    live.sort();
    let mut kept = vec![agent_vm, pool_vm];
    kept.sort();
    assert_eq!(live, kept, "the known ones keep running");
    assert!(!forgot.stdout.contains(KEY) && !forgot.stderr.contains(KEY), "the private key was printed");

    let after = baal_cli_async(dir.path(), &env, &["aleph", "reconcile", "--json"]).await;
    let report: serde_json::Value = serde_json::from_str(&after.stdout).unwrap();
    assert_eq!(report["instances"].as_array().unwrap().len(), 2, "a forgotten instance is no longer listed");
}

/// This platform's sealing key in the import tests.
const OUR_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A Python Baal with a user who has a key, a running agent, a deleted one, and a warm and a
/// provisioning pool VM, written into `dir`.
fn python_baal(dir: &Path) -> PythonFiles {
    PythonBaal::new()
        .with_user(PyUser::new(100).with_api_key("sk-python-user-key"))
        .with_agent(PyAgent::new(7, 100, "Helper").running("ab".repeat(32), "192.0.2.7", "https://h.2n6.me", "tok-7"))
        .with_agent(PyAgent::new(8, 100, "Gone").deleted())
        .with_pool_vm(PyPoolVm::new(1, "warm", "cd".repeat(32)))
        .with_pool_vm(PyPoolVm::new(2, "provisioning", "ef".repeat(32)))
        .write(dir)
}

fn assert_no_secret(run: &Run, files: &PythonFiles) {
    let shown = format!("{}\n{}", run.stdout, run.stderr);
    for secret in [files.key_text(), OUR_KEY, "sk-python-user-key", "tok-7"] {
        assert!(!shown.contains(secret), "a secret was printed: {shown}");
    }
}

/// `import python`: a dry run that writes nothing, the import with its progress, then a second
/// import that changes nothing and says so; the JSON report for scripts.
#[tokio::test]
async fn import_python_dry_run_then_import_then_nothing_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let python = tempfile::tempdir().unwrap();
    let files = python_baal(python.path());
    let url = sqlite_url(dir.path());
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("BOT_ENCRYPTION_KEY", OUR_KEY),
        ("PYTHON_BOT_ENCRYPTION_KEY", files.key_text()),
    ];
    let (db, pool) = (files.baal_db.to_str().unwrap(), files.pool_db.to_str().unwrap());
    let import = ["import", "python", "--db", db, "--pool-db", pool];

    let dry = baal_cli(dir.path(), &env, &[&import[..], &["--dry-run"]].concat());
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(dry.stdout.starts_with("Dry run: nothing was written."), "{}", dry.stdout);
    let line = format!(
        "agent 7 → create: \"Helper\", owner 100, running (Python: running), paid by owner, VM {}",
        "ab".repeat(32)
    );
    assert!(dry.stdout.contains(&line), "{}", dry.stdout);
    assert!(dry.stdout.contains("1 deleted in Python (skipped)"), "{}", dry.stdout);
    assert!(dry.stdout.contains(&format!("pool.db row 2 (provisioning): {}", "ef".repeat(32))), "{}", dry.stdout);
    assert!(dry.stdout.contains("without --dry-run"), "{}", dry.stdout);
    assert_no_secret(&dry, &files);
    let store = SqlStore::open(&url).await.unwrap();
    assert!(store.users_list().await.unwrap().is_empty(), "a dry run writes nothing");

    let real = baal_cli(dir.path(), &env, &import);
    assert_eq!(real.code, 0, "{}", real.stderr);
    assert!(real.stdout.contains("agent 7 → created as agent 1"), "{}", real.stdout);
    assert!(real.stdout.contains("Users: 1 created"), "{}", real.stdout);
    assert!(real.stdout.contains("Pool: 1 warm VM(s) added"), "{}", real.stdout);
    assert!(real.stderr.contains("import: 3/3 written (100%)"), "progress on stderr: {}", real.stderr);
    assert_no_secret(&real, &files);
    let agent = store.agent_by_python_id(7).await.unwrap().unwrap();
    assert_eq!((agent.slug.as_str(), agent.status), ("7", AgentStatus::Running));
    let sealed = store.user_get(100).await.unwrap().unwrap().api_key_sealed.unwrap();
    let ours = SecretBox::from_encoded_key(OUR_KEY).unwrap();
    let key = ours.open_str_for(&SealContext::user_api_key(100), &sealed).unwrap();
    assert_eq!(secrecy::ExposeSecret::expose_secret(&key), "sk-python-user-key");

    let again = baal_cli(dir.path(), &env, &import);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stdout.contains("Nothing to change: everything was imported before."), "{}", again.stdout);
    assert!(again.stdout.contains("agent 7 → already agent 1, unchanged"), "{}", again.stdout);
    let json = baal_cli(dir.path(), &env, &[&import[..], &["--json"]].concat());
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!((report["dry_run"].as_bool(), report["agents"]["unchanged"].as_u64()), (Some(false), Some(1)));
    assert_eq!(report["agent_lines"][0]["action"], "unchanged");
    assert_no_secret(&json, &files);
}

/// `agents list` marks imported agents; `agents convert` says what it cannot do (no Aleph
/// deployer here, an unknown id) with exit 1 and leaves the agent as it was; `--all` (or
/// `--convert-all`) takes every imported agent. The conversion itself: `baal-core`'s
/// `python_move.rs` and `aleph_convert.rs`.
#[tokio::test]
async fn agents_convert_refuses_without_the_aleph_deployer_and_names_unknown_ids() {
    let dir = tempfile::tempdir().unwrap();
    let python = tempfile::tempdir().unwrap();
    let files = python_baal(python.path());
    let url = sqlite_url(dir.path());
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("BOT_ENCRYPTION_KEY", OUR_KEY),
        ("PYTHON_BOT_ENCRYPTION_KEY", files.key_text()),
    ];
    let (db, pool) = (files.baal_db.to_str().unwrap(), files.pool_db.to_str().unwrap());
    let imported = baal_cli_async(dir.path(), &env, &["import", "python", "--db", db, "--pool-db", pool]).await;
    assert_eq!(imported.code, 0, "{}", imported.stderr);
    let list = baal_cli_async(dir.path(), &env, &["agents", "list"]).await;
    assert!(list.stdout.contains("running (python)"), "{}", list.stdout);
    let show = baal_cli_async(dir.path(), &env, &["agents", "show", "1"]).await;
    assert!(show.stdout.contains("python (imported; `agents convert` upgrades it)"), "{}", show.stdout);

    for args in
        [&["agents", "convert", "1"][..], &["agents", "convert", "--all"], &["agents", "convert", "--convert-all"]]
    {
        let run = baal_cli_async(dir.path(), &env, args).await;
        assert_eq!(run.code, 1, "{args:?}: {}\n{}", run.stdout, run.stderr);
        let shown = format!("{}{}", run.stdout, run.stderr);
        assert!(shown.contains("cannot convert agents imported from the Python Baal"), "{args:?}: {shown}");
        assert!(shown.contains("0 of 1 converted"), "{args:?}: {shown}");
        assert_no_secret(&run, &files);
    }
    let store = SqlStore::open(&url).await.unwrap();
    let agent = store.agent_by_python_id(7).await.unwrap().unwrap();
    assert_eq!(agent.runtime, baal_core::domain::AgentRuntime::Python, "still the Python agent");

    let unknown = baal_cli_async(dir.path(), &env, &["agents", "convert", "99"]).await;
    assert_eq!(unknown.code, 1);
    assert!(unknown.stderr.contains("No agent 99"), "{}", unknown.stderr);
    let usage = baal_cli_async(dir.path(), &env, &["agents", "convert"]).await;
    assert_eq!(usage.code, 2, "an id or --all is required: {}", usage.stderr);
}

/// A missing, malformed or wrong Python key, a file that is not there, or a flag that would put
/// the key on the command line: exit 2, the setting named, the key never printed.
#[test]
fn import_python_refuses_bad_keys_with_exit_2_and_never_prints_them() {
    let dir = tempfile::tempdir().unwrap();
    let files = python_baal(dir.path());
    let url = sqlite_url(&dir.path().join("ours"));
    std::fs::create_dir(dir.path().join("ours")).unwrap();
    let env = |python: &'static str| {
        [
            ("DATABASE_URL", url.clone()),
            ("BOT_ENCRYPTION_KEY", OUR_KEY.into()),
            ("PYTHON_BOT_ENCRYPTION_KEY", python.into()),
        ]
    };
    let import = ["import", "python", "--db", "baal.db", "--pool-db", "pool.db", "--dry-run"];
    let run = |env: &[(&str, String)], args: &[&str]| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        baal_cli(dir.path(), &env, args)
    };

    // Empty counts as unset.
    let missing = run(&env(""), &import);
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(missing.stderr.contains("PYTHON_BOT_ENCRYPTION_KEY: not set"), "{}", missing.stderr);

    let malformed = run(&env("not-a-fernet-key-but-secret"), &import);
    assert_eq!(malformed.code, 2, "{}", malformed.stderr);
    assert!(malformed.stderr.contains("PYTHON_BOT_ENCRYPTION_KEY: not a Fernet key"), "{}", malformed.stderr);
    assert!(!malformed.stderr.contains("not-a-fernet-key-but-secret"), "{}", malformed.stderr);

    // The Fernet specification's key: a real key, but not this Python Baal's.
    let wrong = run(&env("cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4="), &import);
    assert_eq!(wrong.code, 2, "{}", wrong.stderr);
    assert!(wrong.stderr.contains("does not open the tokens in baal.db"), "{}", wrong.stderr);
    assert!(!wrong.stderr.contains("cw_0x689RpI"), "{}", wrong.stderr);
    assert_no_secret(&wrong, &files);

    let on_command_line = run(&env(""), &[&import[..], &["--python-key", files.key_text()]].concat());
    assert_eq!(on_command_line.code, 2, "no such flag: {}", on_command_line.stderr);
    assert!(on_command_line.stderr.contains("--python-key"), "{}", on_command_line.stderr);

    std::fs::write(dir.path().join("python.key"), format!("{}\n", files.key_text())).unwrap();
    let from_file = run(
        &env("cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4="),
        &[&import[..], &["--python-key-file", "python.key"]].concat(),
    );
    assert_eq!(from_file.code, 0, "the file wins over the variable: {}", from_file.stderr);
    assert_no_secret(&from_file, &files);
    let no_file = run(&env(""), &[&import[..], &["--python-key-file", "nope.key"]].concat());
    assert_eq!(no_file.code, 2, "{}", no_file.stderr);
    assert!(no_file.stderr.contains("--python-key-file nope.key"), "{}", no_file.stderr);

    let no_db = run(&env(""), &["import", "python", "--db", "elsewhere.db", "--python-key-file", "python.key"]);
    assert_eq!(no_db.code, 2, "{}", no_db.stderr);
    assert!(no_db.stderr.contains("cannot read elsewhere.db"), "{}", no_db.stderr);
    assert!(!dir.path().join("elsewhere.db").exists(), "read-only: nothing created");
}

/// Run beside the Python Baal's files without DATABASE_URL, the default `sqlite://baal.db` is the
/// Python Baal's own file: refused, the file untouched.
#[test]
fn import_python_never_writes_into_the_file_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let files = python_baal(dir.path());
    let before = std::fs::read(&files.baal_db).unwrap();
    let env = [("BOT_ENCRYPTION_KEY", OUR_KEY), ("PYTHON_BOT_ENCRYPTION_KEY", files.key_text())];
    let run = baal_cli(dir.path(), &env, &["import", "python", "--db", "baal.db"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("the Python Baal's own file"), "{}", run.stderr);
    assert!(run.stderr.contains("DATABASE_URL"), "says what to set: {}", run.stderr);
    assert_eq!(std::fs::read(&files.baal_db).unwrap(), before);
}
