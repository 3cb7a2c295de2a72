//! `baal-cli console` driven by a piped script, on the embedded defaults: local agents (a real
//! `baal-agent` process), SQLite in a temporary directory, and the scripted LLM on loopback.
//!
//! Needs a built `baal-agent` next to `baal-cli` (`cargo build --workspace`), or `BAAL_AGENT_BIN`.

use std::path::PathBuf;
use std::process::Stdio;

use baal_core::testing::openai::ScriptedLlm;
use tokio::io::AsyncWriteExt;

fn agent_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("BAAL_AGENT_BIN") {
        return PathBuf::from(path);
    }
    let cli = PathBuf::from(env!("CARGO_BIN_EXE_baal-cli"));
    let beside = cli.with_file_name("baal-agent");
    assert!(beside.is_file(), "build baal-agent first: cargo build --workspace ({} is missing)", beside.display());
    beside
}

/// `baal-cli console` in `dir` on its embedded defaults there (data in `data/`, SQLite in
/// `baal.db`, the built `baal-agent`), every pipe taken, killed if the test drops it.
fn console(dir: &std::path::Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_baal-cli"));
    command
        .arg("console")
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BAAL_DATA_DIR", dir.join("data"))
        .env("DATABASE_URL", format!("sqlite://{}?mode=rwc", dir.join("baal.db").display()))
        .env("BAAL_AGENT_BIN", agent_bin())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piped_script_creates_chats_with_and_deletes_an_agent() {
    let llm = ScriptedLlm::start().await;
    llm.push_text("Hi, I am Echo.");
    llm.push_text("The answer is forty-two.");
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let script =
        "/create\nEcho\n!press qwen\n!press deploy\nWhat is the answer?\n/list\n/delete 1\n!press yes, delete\n";
    let mut child = console(dir.path())
        .env("LIBERTAI_API_BASE_URL", llm.base_url())
        .env("LIBERTAI_API_KEY", "sk-console-test")
        .spawn()
        .expect("run baal-cli console");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(script.as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "console failed: {stderr}\n{stdout}");
    assert!(stdout.contains("[✅ Deploy → create_confirm]"), "buttons print with their data:\n{stdout}");
    assert!(stdout.contains("Echo is ready!"), "{stdout}");
    assert!(stdout.contains("Echo: The answer is forty-two."), "HTML shown readably:\n{stdout}");
    assert!(stdout.contains("Echo is deleted"), "{stdout}");
    assert!(!stdout.contains("<b>"), "tags are stripped:\n{stdout}");
    assert!(data_dir.join("encryption.key").is_file(), "a key is generated on first run");
    assert!(stderr.contains("encryption.key"), "and the log says so: {stderr}");
    assert!(!data_dir.join("agents").join("1").exists(), "the deleted agent's files are gone");
    assert!(!stderr.contains("sk-console-test"), "no key in logs");
}

/// `GET url` on loopback, retried until `wanted` holds for the answer's status and body (a hang
/// guard while the console starts and handles its input, not a timing assertion).
async fn until(http: &reqwest::Client, url: &str, wanted: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(response) = http.get(url).send().await {
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            if wanted(status, &body) {
                return (status, body);
            }
            assert!(std::time::Instant::now() < deadline, "gave up on {url}: {status} {body}");
        }
        assert!(std::time::Instant::now() < deadline, "gave up on {url}: no answer");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_metrics_addr_the_console_serves_metrics_and_health() {
    let dir = tempfile::tempdir().unwrap();
    // A port that was free a moment ago.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut child = console(dir.path()).env("METRICS_ADDR", addr.to_string()).spawn().expect("run baal-cli console");
    let mut stdin = child.stdin.take().unwrap();
    baal_core::install_crypto_provider();
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    assert_eq!(until(&http, &format!("{base}/healthz"), |status, _| status == 200).await.1, "ok");
    let (_, ready) = until(&http, &format!("{base}/readyz"), |status, _| status == 200).await;
    assert_eq!(ready, r#"{"status":"ready"}"#);

    stdin.write_all(b"/help\n/list\n").await.unwrap();
    let (_, metrics) =
        until(&http, &format!("{base}/metrics"), |_, body| body.contains(r#"baal_commands_total{command="list"} 1"#))
            .await;
    assert!(metrics.contains(r#"baal_commands_total{command="help"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"baal_inputs_total{kind="command"} 2"#), "{metrics}");
    assert!(metrics.contains("# TYPE baal_agents gauge"), "gauges are set at each scrape: {metrics}");
    assert!(metrics.contains(r#"baal_agents{status="running"} 0"#), "{metrics}");
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}
