//! A VM as the Python Baal left it (behaviour spec §3.6), planted into a [`VmSandbox`]: the
//! venv's `uvicorn` replaced by a stand-in of the Python agent ([`PYTHON_AGENT`], python3 and its
//! standard library only) that speaks the Python agent's HTTP API and keeps its history in
//! `app/agent.db` in the Python schema; its unit `baal-agent.service` (root, `EnvironmentFile=` the
//! unquoted `app/.env`), its Caddyfile, its workspace. Every path hangs off the sandbox's root, as
//! `vm-setup.sh` sees it through `BAAL_ROOT`.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::ssh::{VmSandbox, write_executable};

/// The Python agent stand-in (see the script's header for what it answers).
pub const PYTHON_AGENT: &str = include_str!("python-agent.py");

/// Where the Python Baal put things on its VMs, relative to the root.
pub mod paths {
    /// The agent's unit (the name Baal's unit has too).
    pub const UNIT: &str = "etc/systemd/system/baal-agent.service";
    /// Caddy's configuration: `{FQDN} { reverse_proxy localhost:8080 }`.
    pub const CADDYFILE: &str = "etc/caddy/Caddyfile";
    /// The venv (`bin/python3`, `bin/uvicorn`), with the code and settings in `app/`.
    pub const VENV: &str = "opt/baal-agent";
    /// The program the unit runs; here the stand-in.
    pub const UVICORN: &str = "opt/baal-agent/bin/uvicorn";
    /// The agent's settings, unquoted `KEY=value` lines.
    pub const ENV: &str = "opt/baal-agent/app/.env";
    /// The agent's database.
    pub const DB: &str = "opt/baal-agent/app/agent.db";
    /// The agent's workspace.
    pub const WORKSPACE: &str = "opt/baal-agent/workspace";
}

fn io_error(message: impl Into<String>) -> std::io::Error {
    std::io::Error::other(message.into())
}

/// One row of a Python agent's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PythonMessage {
    /// The chat (a Telegram chat id as text).
    pub chat_id: String,
    /// `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl PythonMessage {
    /// A row of `chat_id`'s history.
    pub fn new(chat_id: impl Into<String>, role: impl Into<String>, content: impl Into<String>) -> Self {
        PythonMessage { chat_id: chat_id.into(), role: role.into(), content: content.into() }
    }
}

/// A message the Python agent queued for a chat (`GET /pending`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PythonPending {
    /// The chat it is for.
    pub chat_id: String,
    /// The text.
    pub content: String,
    /// `heartbeat`, `subagent`, …
    pub source: String,
}

/// A Python Baal agent to plant: its settings, the public name its Caddyfile serves, its history,
/// queued messages and workspace files.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PythonAgent {
    /// `AGENT_NAME` (one line: the Python Baal wrote it unquoted).
    pub name: String,
    /// `SYSTEM_PROMPT` (one line, likewise).
    pub system_prompt: String,
    /// `MODEL`.
    pub model: String,
    /// `LIBERTAI_API_KEY`.
    pub libertai_api_key: String,
    /// `AGENT_SECRET`: the bearer secret.
    pub agent_secret: String,
    /// `OWNER_CHAT_ID`.
    pub owner_chat_id: String,
    /// The host the Caddyfile serves (`{sub}.2n6.me` on a real VM).
    pub public_host: String,
    /// Rows of `messages`, oldest first.
    pub history: Vec<PythonMessage>,
    /// Rows of `pending_messages`, oldest first.
    pub pending: Vec<PythonPending>,
    /// Workspace files: path relative to the workspace, content.
    pub files: Vec<(String, String)>,
}

impl PythonAgent {
    /// An agent named `name` with bearer secret `agent_secret`, owned by `owner_chat_id`, served
    /// as `public_host`, with the Python Baal's defaults, the memory file its template had and no
    /// history.
    pub fn new(
        name: impl Into<String>,
        agent_secret: impl Into<String>,
        owner_chat_id: impl Into<String>,
        public_host: impl Into<String>,
    ) -> Self {
        PythonAgent {
            name: name.into(),
            system_prompt: "You are a helpful assistant.".into(),
            model: "hermes-3-8b-tee".into(),
            libertai_api_key: "sk-python-baal-test".into(),
            agent_secret: agent_secret.into(),
            owner_chat_id: owner_chat_id.into(),
            public_host: public_host.into(),
            history: Vec::new(),
            pending: Vec::new(),
            files: vec![("memory/MEMORY.md".into(), "# Memory\n\n(Nothing saved yet.)\n".into())],
        }
    }

    /// Adds a row to the history.
    pub fn with_message(mut self, chat_id: &str, role: &str, content: &str) -> Self {
        self.history.push(PythonMessage::new(chat_id, role, content));
        self
    }

    /// Queues a message for `chat_id`.
    pub fn with_pending(mut self, chat_id: &str, content: &str, source: &str) -> Self {
        self.pending.push(PythonPending { chat_id: chat_id.into(), content: content.into(), source: source.into() });
        self
    }

    /// Adds (or replaces) a workspace file.
    pub fn with_file(mut self, path: &str, content: &str) -> Self {
        self.files.retain(|(p, _)| p != path);
        self.files.push((path.into(), content.into()));
        self
    }
}

/// The unit the Python Baal wrote (§3.6), its paths under `root`, uvicorn on `port`.
pub fn python_unit(root: &Path, name: &str, port: u16) -> String {
    let venv = root.join(paths::VENV);
    format!(
        "[Unit]\nDescription=Baal Agent - {name}\nAfter=network.target\n\n[Service]\nType=simple\n\
         WorkingDirectory={app}\nEnvironmentFile={app}/.env\nEnvironment=PYTHONPATH={app}\n\
         ExecStart={venv}/bin/uvicorn baal_agent.main:app --host 127.0.0.1 --port {port}\n\
         Restart=always\nRestartSec=5\n\n[Install]\nWantedBy=multi-user.target\n",
        app = venv.join("app").display(),
        venv = venv.display(),
    )
}

impl VmSandbox {
    /// Plants a whole Python Baal VM: the stand-in as the venv's `uvicorn`, the unit running it
    /// on `port` (the sandbox's agent port), `app/.env`, `app/agent.db` with the agent's history
    /// and queued messages, its workspace files and the Caddyfile. Start it with
    /// `systemctl(&["start", "baal-agent"])`.
    pub fn plant_python_agent(&self, agent: &PythonAgent, port: u16) -> std::io::Result<()> {
        for dir in [paths::WORKSPACE, "opt/baal-agent/app", "opt/baal-agent/bin", "etc/systemd/system", "etc/caddy"] {
            std::fs::create_dir_all(self.file(dir))?;
        }
        for dir in ["memory", "skills"] {
            std::fs::create_dir_all(self.file(paths::WORKSPACE).join(dir))?;
        }
        write_executable(&self.file(paths::UVICORN), PYTHON_AGENT)?;
        let root = self.root();
        let env = format!(
            "AGENT_NAME={}\nSYSTEM_PROMPT={}\nMODEL={}\nLIBERTAI_API_KEY={}\nAGENT_SECRET={}\nPORT=8080\nDB_PATH={}\n\
             WORKSPACE_PATH={}\nOWNER_CHAT_ID={}\nHEARTBEAT_INTERVAL=1800\n",
            agent.name,
            agent.system_prompt,
            agent.model,
            agent.libertai_api_key,
            agent.agent_secret,
            root.join(paths::DB).display(),
            root.join(paths::WORKSPACE).display(),
            agent.owner_chat_id,
        );
        std::fs::write(self.file(paths::ENV), env)?;
        std::fs::write(self.file(paths::UNIT), python_unit(root, &agent.name, port))?;
        std::fs::write(
            self.file(paths::CADDYFILE),
            format!("{} {{ reverse_proxy localhost:{port} }}\n", agent.public_host),
        )?;
        for (path, content) in &agent.files {
            let target = self.file(paths::WORKSPACE).join(path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(target, content)?;
        }
        let rows = serde_json::json!({"history": agent.history, "pending": agent.pending});
        run_stand_in(&self.file(paths::UVICORN), &self.file(paths::DB), "--seed", Some(rows.to_string()))?;
        Ok(())
    }
}

/// The history in a Python agent's database at `db` (its `-wal` included), oldest first. Opens it
/// read-only: nothing of it changes.
pub fn python_history(db: &Path) -> std::io::Result<Vec<PythonMessage>> {
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("python-agent.py");
    write_executable(&script, PYTHON_AGENT)?;
    let out = run_stand_in(&script, db, "--history", None)?;
    serde_json::from_slice(&out).map_err(|e| io_error(format!("the history of {} is unreadable: {e}", db.display())))
}

/// Runs the stand-in in one of its test modes on the database `db`; its standard output.
fn run_stand_in(script: &Path, db: &Path, mode: &str, input: Option<String>) -> std::io::Result<Vec<u8>> {
    let mut child = Command::new("python3")
        .arg(script)
        .arg(mode)
        .env("DB_PATH", db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io_error(format!(
            "python-agent.py {mode} on {}: {}",
            db.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}
