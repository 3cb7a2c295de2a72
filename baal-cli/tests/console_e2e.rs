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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piped_script_creates_chats_with_and_deletes_an_agent() {
    let llm = ScriptedLlm::start().await;
    llm.push_text("Hi, I am Echo.");
    llm.push_text("The answer is forty-two.");
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let script =
        "/create\nEcho\n!press qwen\n!press deploy\nWhat is the answer?\n/list\n/delete 1\n!press yes, delete\n";
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_baal-cli"))
        .arg("console")
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LIBERTAI_API_BASE_URL", llm.base_url())
        .env("LIBERTAI_API_KEY", "sk-console-test")
        .env("BAAL_DATA_DIR", &data_dir)
        .env("DATABASE_URL", format!("sqlite://{}?mode=rwc", dir.path().join("baal.db").display()))
        .env("BAAL_AGENT_BIN", agent_bin())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
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
