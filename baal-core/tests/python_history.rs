//! A Python Baal agent's `agent.db` carried over into ours at a converted agent's first start
//! (`PYTHON_AGENT_DB`), on real files made with the Python agent's schema.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use baal_core::agent::context::Workspace;
use baal_core::agent::history::{History, PENDING_DROPPED_SOURCE, PENDING_MAX_PER_CHAT};
use baal_core::agent::python_history::{CarryOver, PythonHistoryError, carry_over};
use baal_core::agent::tools::ToolSet;
use baal_core::agent::{Agent, AgentConfig, AgentSettings};
use baal_core::inference::{ClientOptions, OpenAiClient, RetryPolicy};
use baal_core::proxy::{AgentEvent, ChatRequest, PendingMessage};
use baal_core::testing::openai::ScriptedLlm;
use futures_util::StreamExt;
use secrecy::SecretString;
use serde_json::json;

const OWNER: &str = "1001";
const HOUR: Duration = Duration::from_secs(3600);

/// The Python agent's schema, as its `AgentDatabase.initialize` created it (WAL included).
const PYTHON_SCHEMA: &str = "
PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id TEXT NOT NULL,
    role TEXT NOT NULL,
    content TEXT,
    tool_calls TEXT,
    tool_call_id TEXT,
    created_at TEXT NOT NULL DEFAULT (datetime('now'))
);
CREATE INDEX IF NOT EXISTS idx_messages_chat ON messages (chat_id, created_at);
CREATE TABLE IF NOT EXISTS pending_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id TEXT NOT NULL,
    content TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'system',
    created_at TEXT NOT NULL DEFAULT (datetime('now'))
);
";

const LIST_DIR_CALLS: &str =
    r#"[{"id": "call_a", "type": "function", "function": {"name": "list_dir", "arguments": "{\"path\": \".\"}"}}]"#;

/// `(chat_id, role, content, tool_calls, tool_call_id, created_at)`, inserted in this order (ids
/// 1, 2, …).
type Row = (&'static str, &'static str, Option<&'static str>, Option<&'static str>, Option<&'static str>, &'static str);

/// What a Python agent that compacted chat 1001 once left: the summary pair came last (ids 7 and
/// 8) with times before the rows it kept; the intro ran in its own chat; a visitor's chat
/// interleaves in time.
const ROWS: &[Row] = &[
    ("intro_1001", "user", Some("Introduce yourself."), None, None, "2026-02-10T09:00:00.000001+00:00"),
    ("intro_1001", "assistant", Some("I am Testy."), None, None, "2026-02-10T09:00:02.500000+00:00"),
    ("1001", "user", Some("List my files."), None, None, "2026-02-10T10:00:00+00:00"),
    ("1001", "assistant", None, Some(LIST_DIR_CALLS), None, "2026-02-10T10:00:01.000100+00:00"),
    ("2002", "user", Some("Bonjour ✓"), None, None, "2026-02-10T10:00:01.500000+00:00"),
    ("1001", "tool", Some("notes.md\nsoul.md"), None, Some("call_a"), "2026-02-10T10:00:02.000000+00:00"),
    (
        "1001",
        "user",
        Some("[Earlier conversation summary]\n\nThe user likes tea."),
        None,
        None,
        "2026-02-10T09:59:58+00:00",
    ),
    (
        "1001",
        "assistant",
        Some("Understood, I have the context from our previous conversation."),
        None,
        None,
        "2026-02-10T09:59:59+00:00",
    ),
    ("2002", "assistant", Some("Salut !"), None, None, "2026-02-10T10:00:02.100000+00:00"),
    ("1001", "assistant", Some("You have notes.md and soul.md."), None, None, "2026-02-10T10:00:03.000000+00:00"),
];

/// `(chat_id, content, source, created_at)`.
const PENDING: &[(&str, &str, &str, &str)] = &[
    (OWNER, "[Heartbeat] Water the plants.", "heartbeat", "2026-02-10T11:00:00.000000+00:00"),
    ("intro_1001", "[Task: intro] done", "subagent", "2026-02-10T10:30:00.000000+00:00"),
    ("2002", "[Task: lookup] found it", "subagent", "2026-02-10T10:40:00.000000+00:00"),
    ("__heartbeat__", "[Task: from the heartbeat] done", "subagent", "2026-02-10T11:30:00.000000+00:00"),
    (
        OWNER,
        r#"{"type": "file", "path": "report.txt", "caption": ""}"#,
        "subagent_file",
        "2026-02-10T11:15:00.000000+00:00",
    ),
];

fn python_db(dir: &Path, rows: &[Row], pending: &[(&str, &str, &str, &str)]) -> PathBuf {
    let path = dir.join("python-agent.db");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(PYTHON_SCHEMA).unwrap();
    for row in rows {
        c.execute(
            "INSERT INTO messages (chat_id, role, content, tool_calls, tool_call_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![row.0, row.1, row.2, row.3, row.4, row.5],
        )
        .unwrap();
    }
    for p in pending {
        c.execute(
            "INSERT INTO pending_messages (chat_id, content, source, created_at) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![p.0, p.1, p.2, p.3],
        )
        .unwrap();
    }
    path
}

/// The settings of an agent converted from the Python agent at `python`, living in `dir`.
fn settings(dir: &Path, python: &Path, llm: &ScriptedLlm) -> AgentSettings {
    AgentSettings::from_vars([
        ("LIBERTAI_API_KEY", "k".to_owned()),
        ("AGENT_SECRET", "s".to_owned()),
        ("LIBERTAI_API_BASE_URL", llm.base_url()),
        ("OWNER_CHAT_ID", OWNER.to_owned()),
        ("DB_PATH", dir.join("agent.db").to_string_lossy().into_owned()),
        ("WORKSPACE_PATH", dir.join("ws").to_string_lossy().into_owned()),
        ("PYTHON_AGENT_DB", python.to_string_lossy().into_owned()),
    ])
    .unwrap()
}

/// What `baal-agent` does at start: open its database, carry the Python history over, build the
/// agent.
async fn start(settings: &AgentSettings, llm: &ScriptedLlm) -> Result<(Agent, CarryOver), PythonHistoryError> {
    let history = History::open(&settings.db_path).await.unwrap();
    let python = settings.python_agent_db.as_deref().expect("PYTHON_AGENT_DB is read");
    let outcome = carry_over(&history, python, settings.owner_chat_id.as_deref()).await?;
    let mut options = ClientOptions::default();
    options.retry = RetryPolicy::new(0, Duration::from_millis(1));
    let inference = OpenAiClient::new(&llm.base_url(), SecretString::from("k"), options).unwrap();
    let workspace = Workspace::prepare(&settings.workspace_path).unwrap();
    let config = AgentConfig::from_settings(settings);
    Ok((Agent::new(config, Arc::new(inference), ToolSet::from_tools(Vec::new()), history, workspace), outcome))
}

async fn turn(agent: &Agent, message: &str, chat: &str) -> Vec<AgentEvent> {
    let request: ChatRequest = serde_json::from_value(json!({"message": message, "chat_id": chat})).unwrap();
    agent.chat(request).filter(|e| std::future::ready(*e != AgentEvent::Keepalive)).collect().await
}

fn contents(messages: &[PendingMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.content.as_str()).collect()
}

/// Row counts of our database: history, queue, and the record of an import.
fn counts(path: &Path) -> (i64, i64, i64) {
    let c = rusqlite::Connection::open(path).unwrap();
    let count = |table: &str| c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| row.get(0)).unwrap();
    (count("messages"), count("pending_messages"), count("python_import"))
}

#[tokio::test]
async fn the_next_turn_sends_the_model_the_history_the_python_agent_would_have() {
    let dir = tempfile::tempdir().unwrap();
    let llm = ScriptedLlm::start().await;
    let python = python_db(dir.path(), ROWS, PENDING);
    let settings = settings(dir.path(), &python, &llm);
    let (agent, outcome) = start(&settings, &llm).await.unwrap();
    assert_eq!(outcome, CarryOver::Imported { messages: 10, pending: 5, chats: 3 });

    llm.push_text("Welcome back.");
    let events = turn(&agent, "What do I have?", OWNER).await;
    assert!(events.contains(&AgentEvent::Text { content: "Welcome back.".into() }), "{events:?}");
    let requests = llm.completion_requests();
    let sent = requests[0].messages();
    assert_eq!(sent[0]["role"], "system");
    // By time, not by id: the summary pair first, then the call, its result and the answer.
    let expected = [
        json!({"role": "user", "content": "[Earlier conversation summary]\n\nThe user likes tea."}),
        json!({"role": "assistant", "content": "Understood, I have the context from our previous conversation."}),
        json!({"role": "user", "content": "List my files."}),
        json!({"role": "assistant", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "list_dir", "arguments": "{\"path\": \".\"}"}}
        ]}),
        json!({"role": "tool", "tool_call_id": "call_a", "content": "notes.md\nsoul.md"}),
        json!({"role": "assistant", "content": "You have notes.md and soul.md."}),
        json!({"role": "user", "content": "What do I have?"}),
    ];
    assert_eq!(sent[1..], expected[..], "{}", serde_json::to_string_pretty(&sent).unwrap());

    // The visitor's chat and the intro's keep their own ids and rows.
    let history = agent.history();
    let visitor: Vec<Option<String>> =
        history.rows("2002").await.unwrap().into_iter().map(|r| r.message.content).collect();
    assert_eq!(visitor, [Some("Bonjour ✓".to_owned()), Some("Salut !".to_owned())]);
    assert_eq!(history.count("intro_1001").await.unwrap(), 2);

    // Queued messages: the owner's in time order, the intro's and the heartbeat subagent's among
    // them; the visitor's for the visitor.
    assert_eq!(history.pending_chats().await.unwrap(), [OWNER, "2002"]);
    let owner = history.lease_pending(Some(OWNER), HOUR).await.unwrap();
    assert_eq!(
        contents(&owner),
        [
            "[Task: intro] done",
            "[Heartbeat] Water the plants.",
            r#"{"type": "file", "path": "report.txt", "caption": ""}"#,
            "[Task: from the heartbeat] done",
        ]
    );
    let sources: Vec<&str> = owner.iter().map(|m| m.source.as_str()).collect();
    assert_eq!(sources, ["subagent", "heartbeat", "subagent_file", "subagent"]);
    assert_eq!(owner[0].created_at, "2026-02-10T10:30:00.000000+00:00");
    assert_eq!(contents(&history.lease_pending(Some("2002"), HOUR).await.unwrap()), ["[Task: lookup] found it"]);
}

#[tokio::test]
async fn a_restart_imports_nothing_twice_and_no_longer_needs_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let llm = ScriptedLlm::start().await;
    let python = python_db(dir.path(), ROWS, PENDING);
    let settings = settings(dir.path(), &python, &llm);
    let (agent, _) = start(&settings, &llm).await.unwrap();
    // The agent lives on: a turn, and the owner's queue delivered.
    turn(&agent, "Hello again.", OWNER).await;
    let delivered = agent.history().lease_pending(Some(OWNER), HOUR).await.unwrap();
    let ids: Vec<i64> = delivered.iter().filter_map(|m| m.id).collect();
    agent.history().ack_pending(&ids, Some(OWNER)).await.unwrap();
    drop(agent);
    let before = counts(&settings.db_path);
    assert_eq!(before, (12, 1, 1));

    let (_, outcome) = start(&settings, &llm).await.unwrap();
    let CarryOver::AlreadyDone { source, .. } = outcome else { panic!("imported twice: {outcome:?}") };
    assert_eq!(Path::new(&source), python);
    assert_eq!(counts(&settings.db_path), before);

    // Once carried over, the file is not looked at: gone, or unreadable, it changes nothing.
    std::fs::write(&python, b"not a database any more").unwrap();
    assert!(matches!(start(&settings, &llm).await.unwrap().1, CarryOver::AlreadyDone { .. }));
    std::fs::remove_file(&python).unwrap();
    assert!(matches!(start(&settings, &llm).await.unwrap().1, CarryOver::AlreadyDone { .. }));
    assert_eq!(counts(&settings.db_path), before);
}

/// A Python database with `rows`, and `sql` run on it afterwards.
fn broken(dir: &Path, rows: &[Row], sql: &str) -> PathBuf {
    let path = python_db(dir, rows, PENDING);
    rusqlite::Connection::open(&path).unwrap().execute_batch(sql).unwrap();
    path
}

#[tokio::test]
async fn a_python_database_that_cannot_be_read_fails_the_start_and_leaves_nothing_behind() {
    let llm = ScriptedLlm::start().await;
    type Case = (&'static str, fn(&Path) -> PathBuf, &'static [&'static str]);
    let cases: &[Case] = &[
        (
            "not SQLite",
            |dir| {
                let path = dir.join("python-agent.db");
                std::fs::write(&path, "SQLite format 2? no: a text file, perhaps the .env by mistake\n".repeat(50))
                    .unwrap();
                path
            },
            &["not a database"],
        ),
        ("no messages table", |dir| broken(dir, &[], "DROP TABLE messages;"), &["no messages table"]),
        (
            "no role column",
            |dir| broken(dir, &[], "ALTER TABLE messages DROP COLUMN role;"),
            &["messages table has no role column"],
        ),
        (
            "bad tool calls",
            |dir| broken(dir, ROWS, "UPDATE messages SET tool_calls = '[{\"id\": \"call_a\", ' WHERE id = 4;"),
            &["messages row 4", "tool_calls"],
        ),
        (
            "tool calls of another shape",
            |dir| broken(dir, ROWS, "UPDATE messages SET tool_calls = '{\"name\": \"list_dir\"}' WHERE id = 4;"),
            &["messages row 4", "tool_calls"],
        ),
        (
            "bad time",
            |dir| broken(dir, ROWS, "UPDATE messages SET created_at = 'yesterday' WHERE id = 9;"),
            &["messages row 9", "created_at \"yesterday\""],
        ),
        (
            "unknown role",
            |dir| broken(dir, ROWS, "UPDATE messages SET role = 'narrator' WHERE id = 2;"),
            &["messages row 2", "narrator"],
        ),
        (
            "bad time in the queue",
            |dir| broken(dir, ROWS, "UPDATE pending_messages SET created_at = '10/02/2026' WHERE id = 3;"),
            &["pending_messages row 3", "created_at"],
        ),
    ];
    for (case, make, needles) in cases {
        let dir = tempfile::tempdir().unwrap();
        let python = make(dir.path());
        let settings = settings(dir.path(), &python, &llm);
        let error = start(&settings, &llm).await.err().unwrap_or_else(|| panic!("{case}: the start succeeded"));
        let text = error.to_string();
        assert!(text.contains(&python.display().to_string()), "{case}: the file is not named: {text}");
        for needle in *needles {
            assert!(text.contains(needle), "{case}: {needle:?} not in {text}");
        }
        assert_eq!(counts(&settings.db_path), (0, 0, 0), "{case}: nothing arrives");
        // Repaired, the next start carries everything over.
        std::fs::remove_file(&python).unwrap();
        python_db(dir.path(), ROWS, PENDING);
        let (_, outcome) = start(&settings, &llm).await.unwrap();
        assert_eq!(outcome, CarryOver::Imported { messages: 10, pending: 5, chats: 3 }, "{case}");
    }
}

#[tokio::test]
async fn a_missing_file_or_our_own_database_fails_the_start_until_imported() {
    let dir = tempfile::tempdir().unwrap();
    let llm = ScriptedLlm::start().await;
    let missing = dir.path().join("not-copied.db");
    let error = start(&settings(dir.path(), &missing, &llm), &llm).await.err().unwrap();
    assert!(matches!(error, PythonHistoryError::Missing { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains(&missing.display().to_string()) && text.contains("does not exist"), "{text}");
    assert!(text.contains("PYTHON_AGENT_DB"), "{text}");

    let ours = dir.path().join("agent.db");
    let error = start(&settings(dir.path(), &ours, &llm), &llm).await.err().unwrap();
    assert!(matches!(error, PythonHistoryError::OwnDatabase { .. }), "{error:?}");
    assert_eq!(counts(&ours), (0, 0, 0));
}

#[tokio::test]
async fn a_database_that_already_holds_conversations_is_not_imported_into() {
    let dir = tempfile::tempdir().unwrap();
    let llm = ScriptedLlm::start().await;
    let python = python_db(dir.path(), ROWS, PENDING);
    let settings = settings(dir.path(), &python, &llm);
    let history = History::open(&settings.db_path).await.unwrap();
    history.push_pending(OWNER, "queued before the import", "heartbeat").await.unwrap();
    drop(history);
    let error = start(&settings, &llm).await.err().unwrap();
    assert!(matches!(error, PythonHistoryError::NotEmpty { .. }), "{error:?}");
    assert!(error.to_string().contains("fresh DB_PATH"), "{error}");
    assert_eq!(counts(&settings.db_path), (0, 1, 0));
}

#[tokio::test]
async fn an_older_python_database_without_tool_columns_or_queue_is_accepted() {
    // As the first Python agent made it: no tool calls, no queue, SQLite's own times.
    let dir = tempfile::tempdir().unwrap();
    let llm = ScriptedLlm::start().await;
    let python = dir.path().join("python-agent.db");
    rusqlite::Connection::open(&python)
        .unwrap()
        .execute_batch(
            "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, chat_id TEXT NOT NULL, role TEXT NOT NULL, \
               content TEXT, created_at TEXT NOT NULL DEFAULT (datetime('now')));
             INSERT INTO messages (chat_id, role, content, created_at) VALUES
               ('1001', 'user', 'second question', '2026-02-10 10:05:00'),
               ('1001', 'user', 'first question', '2026-02-10 10:00:00'),
               ('1001', 'assistant', 'first answer', '2026-02-10 10:00:01');",
        )
        .unwrap();
    let settings = settings(dir.path(), &python, &llm);
    let (agent, outcome) = start(&settings, &llm).await.unwrap();
    assert_eq!(outcome, CarryOver::Imported { messages: 3, pending: 0, chats: 1 });
    let rows: Vec<Option<String>> =
        agent.history().rows(OWNER).await.unwrap().into_iter().map(|r| r.message.content).collect();
    assert_eq!(rows, [Some("first question".into()), Some("first answer".into()), Some("second question".into())]);
}

#[tokio::test]
async fn a_copy_taken_with_its_write_ahead_log_is_read_whole_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let llm = ScriptedLlm::start().await;
    // The Python agent still running: its last rows are only in `agent.db-wal`, copied with it.
    let live = tempfile::tempdir().unwrap();
    let writer = rusqlite::Connection::open(live.path().join("agent.db")).unwrap();
    writer.execute_batch(PYTHON_SCHEMA).unwrap();
    writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    writer
        .execute(
            "INSERT INTO messages (chat_id, role, content, created_at) VALUES ('1001', 'user', 'only in the WAL', \
             '2026-02-10T10:00:00.000000+00:00')",
            [],
        )
        .unwrap();
    let python = dir.path().join("python-agent.db");
    std::fs::copy(live.path().join("agent.db"), &python).unwrap();
    std::fs::copy(live.path().join("agent.db-wal"), dir.path().join("python-agent.db-wal")).unwrap();
    drop(writer);
    let bytes = |path: &Path| std::fs::read(path).unwrap();
    let before = (bytes(&python), bytes(&dir.path().join("python-agent.db-wal")));

    let settings = settings(dir.path(), &python, &llm);
    let (agent, outcome) = start(&settings, &llm).await.unwrap();
    assert_eq!(outcome, CarryOver::Imported { messages: 1, pending: 0, chats: 1 });
    assert_eq!(agent.history().rows(OWNER).await.unwrap()[0].message.content.as_deref(), Some("only in the WAL"));
    assert_eq!((bytes(&python), bytes(&dir.path().join("python-agent.db-wal"))), before, "read-only");
}

#[tokio::test]
async fn a_queue_longer_than_a_chat_keeps_arrives_capped_with_its_note_first() {
    let dir = tempfile::tempdir().unwrap();
    let llm = ScriptedLlm::start().await;
    let texts: Vec<String> = (0..PENDING_MAX_PER_CHAT + 5).map(|i| format!("[Heartbeat] {i}")).collect();
    let times: Vec<String> =
        (0..texts.len()).map(|i| format!("2026-02-10T{:02}:{:02}:00+00:00", i / 60, i % 60)).collect();
    let pending: Vec<(&str, &str, &str, &str)> =
        texts.iter().zip(&times).map(|(text, at)| (OWNER, text.as_str(), "heartbeat", at.as_str())).collect();
    let python = python_db(dir.path(), &[], &pending);
    let (agent, outcome) = start(&settings(dir.path(), &python, &llm), &llm).await.unwrap();
    assert_eq!(outcome, CarryOver::Imported { messages: 0, pending: texts.len() as u64, chats: 0 });
    let queued = agent.history().take_pending(Some(OWNER)).await.unwrap();
    assert_eq!(queued.len(), PENDING_MAX_PER_CHAT + 1);
    assert_eq!(queued[0].source, PENDING_DROPPED_SOURCE);
    assert_eq!(queued[1].content, "[Heartbeat] 5");
    assert_eq!(queued.last().unwrap().content, texts.last().unwrap().as_str());
}
