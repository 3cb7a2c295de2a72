//! Runs real `baal-agent` processes against the scripted LLM, on loopback.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use baal_core::testing::openai::ScriptedLlm;
use baal_core::wire::AgentEvent;

pub const SECRET: &str = "test-agent-secret";
pub const OWNER: &str = "1001";

/// A running agent process; killed when dropped.
pub struct AgentProcess {
    pub child: Child,
    pub base_url: String,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl AgentProcess {
    pub fn workspace(&self) -> PathBuf {
        self.dir.path().join("workspace")
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("agent.db")
    }

    /// `POST /chat` and the events an old bot acts on, until the stream ends: streamed pieces
    /// and the thinking status (which old bots ignore) are left out; `chat_raw` has everything.
    pub async fn chat(&self, message: &str, chat_id: &str, role: Option<&str>) -> Vec<AgentEvent> {
        let body = self.chat_raw(message, chat_id, role).await;
        parse_sse(&body)
            .into_iter()
            .filter(|e| !matches!(e, AgentEvent::TextDelta { .. } | AgentEvent::Thinking))
            // What a turn cost is checked where it is the point (`chat_raw` keeps it).
            .map(|e| if e.is_done() { AgentEvent::done() } else { e })
            .collect()
    }

    /// `POST /chat` and the whole SSE body.
    pub async fn chat_raw(&self, message: &str, chat_id: &str, role: Option<&str>) -> String {
        let mut body = serde_json::json!({"message": message, "chat_id": chat_id});
        if let Some(role) = role {
            body["role"] = role.into();
        }
        self.chat_body(&body).await
    }

    /// `POST /chat` of `body` and the whole SSE body.
    pub async fn chat_body(&self, body: &serde_json::Value) -> String {
        let response =
            self.http.post(format!("{}/chat", self.base_url)).bearer_auth(SECRET).json(body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        response.text().await.unwrap()
    }
}

/// Parses an SSE body of `data: {json}` events.
pub fn parse_sse(body: &str) -> Vec<AgentEvent> {
    body.split("\n\n")
        .filter_map(|block| block.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|data| serde_json::from_str(data).unwrap_or_else(|e| panic!("bad event {data}: {e}")))
        .collect()
}

impl AgentProcess {
    /// Kills the agent and hands back its directory (workspace and database), to start another.
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `baal-agent` against `llm` with the usual test settings plus `extra`.
pub fn start_agent(llm: &ScriptedLlm, extra: &[(&str, &str)]) -> AgentProcess {
    let dir = tempfile::tempdir().unwrap();
    start_agent_in(llm, extra, dir)
}

pub fn start_agent_in(llm: &ScriptedLlm, extra: &[(&str, &str)], dir: tempfile::TempDir) -> AgentProcess {
    let command = test_agent_command(llm, extra, dir.path());
    spawn(command, dir)
}

/// The command [`start_agent_in`] runs: the usual test settings plus `extra`.
pub fn test_agent_command(llm: &ScriptedLlm, extra: &[(&str, &str)], dir: &Path) -> Command {
    let mut command = agent_command(dir);
    command
        .env("LIBERTAI_API_BASE_URL", llm.base_url())
        .env("LIBERTAI_API_KEY", "test-llm-key")
        .env("AGENT_SECRET", SECRET)
        .env("AGENT_NAME", "Testy")
        .env("OWNER_CHAT_ID", OWNER)
        .env("HEARTBEAT_INTERVAL", "0")
        .env("LLM_RETRY_DELAY_MS", "10");
    for (k, v) in extra {
        command.env(k, v);
    }
    command
}

pub fn agent_command(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_baal-agent"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", "0")
        .env("BIND_ADDR", "127.0.0.1")
        .env("DB_PATH", dir.join("agent.db"))
        .env("WORKSPACE_PATH", dir.join("workspace"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

pub fn spawn(mut command: Command, dir: tempfile::TempDir) -> AgentProcess {
    let mut child = command.spawn().expect("start baal-agent");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    baal_core::install_crypto_provider();
    AgentProcess { child, base_url: format!("http://{addr}"), dir, http: reqwest::Client::new() }
}

pub fn texts(events: &[AgentEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Text { content } => Some(content.clone()),
            _ => None,
        })
        .collect()
}

/// The processes whose command line contains `needle`. A process that is exec'ing (bash turning
/// into `sleep`) can show an empty command line for an instant, so one scan may miss a process
/// that is running: callers follow pids once seen instead of re-scanning.
pub fn processes_matching(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|name| name.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " ").contains(needle))
        })
        .collect()
}

/// Whether `pid` is gone (or only a zombie waiting for its reaper).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// The pids of the processes whose command line contains `marker`, once there are any (empty
/// after 20 s: slow machines, a whole test suite in parallel, may take a while to fork).
pub async fn wait_for_processes(marker: &str) -> Vec<u32> {
    for _ in 0..800 {
        let found = processes_matching(marker);
        if !found.is_empty() {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    Vec::new()
}

/// Those of `pids` still alive after waiting up to 10 s for all of them to go.
pub async fn survivors(pids: &[u32]) -> Vec<u32> {
    for _ in 0..400 {
        if pids.iter().all(|&pid| process_gone(pid)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    pids.iter().copied().filter(|&pid| !process_gone(pid)).collect()
}

/// Sends `POST /chat` with `body` on a connection of its own and reads the answer until it
/// contains `needle`; returns the connection, whose drop really closes the socket (as a bot
/// that dies closes it), and what was read. Panics if the agent ends the answer first.
pub async fn chat_until(
    agent: &AgentProcess,
    body: &serde_json::Value,
    needle: &str,
) -> (tokio::net::TcpStream, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = agent.base_url.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = body.to_string();
    let head = format!(
        "POST /chat HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {SECRET}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(body.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "the agent closed the stream before {needle:?}: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    (socket, seen)
}
