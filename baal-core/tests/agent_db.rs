//! The agent's database across releases, on real files: one that the SeaORM-migrated agent
//! (v0.1.0) made opens with every row kept, and a fresh one gets the same schema.

use std::path::{Path, PathBuf};
use std::time::Duration;

use baal_core::agent::history::{
    History, PENDING_DROPPED_SOURCE, PENDING_MAX_PER_CHAT, SCHEMA_VERSION, SUMMARY_ACK, SUMMARY_MARKER, StoredMessage,
};
use baal_core::inference::{ChatMessage, ToolCall};
use baal_core::proxy::PendingMessage;

/// Made by commit 2fc5a11 through the `History` API; `tests/fixtures/README.md` lists its rows.
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/agent-db-v0.1.0.db");
const HOUR: Duration = Duration::from_secs(3600);

/// A copy of the fixture in its own directory: the committed file is never opened for writing.
fn copy_of_fixture() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.db");
    std::fs::copy(FIXTURE, &path).unwrap();
    (dir, path)
}

fn user_version(path: &Path) -> i64 {
    rusqlite::Connection::open(path).unwrap().pragma_query_value(None, "user_version", |row| row.get(0)).unwrap()
}

/// Every object of the schema: type, name, table and its SQL text.
fn schema(path: &Path) -> Vec<String> {
    let connection = rusqlite::Connection::open(path).unwrap();
    let mut statement =
        connection.prepare("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").unwrap();
    statement
        .query_map([], |row| {
            Ok(format!(
                "{} {} on {}: {}",
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, Option<String>>(3)?.unwrap_or_default()
            ))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// Everything the file holds: its version, its schema and every row of every table.
fn dump(path: &Path) -> Vec<String> {
    let mut out = vec![format!("user_version {}", user_version(path))];
    out.extend(schema(path));
    let connection = rusqlite::Connection::open(path).unwrap();
    let tables: Vec<String> = connection
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    for table in tables {
        let mut statement = connection.prepare(&format!("SELECT * FROM \"{table}\" ORDER BY rowid")).unwrap();
        let columns = statement.column_count();
        let rows = statement
            .query_map([], |row| {
                let values: Vec<String> =
                    (0..columns).map(|i| row.get_ref(i).map(|v| format!("{v:?}"))).collect::<rusqlite::Result<_>>()?;
                Ok(format!("{table}: {}", values.join(" | ")))
            })
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap();
        out.extend(rows);
    }
    out
}

fn row(id: i64, message: ChatMessage) -> StoredMessage {
    StoredMessage::new(id, message)
}

fn assistant(text: &str) -> ChatMessage {
    ChatMessage::assistant(Some(text.into()), Vec::new())
}

/// The rows the fixture holds in chat 1001 after its compaction (rows 1 and 2 became the summary).
fn fixture_chat_1001() -> Vec<StoredMessage> {
    vec![
        row(3, ChatMessage::user("What is in my workspace?")),
        row(4, ChatMessage::assistant(None, vec![ToolCall::new("call_1", "list_dir", r#"{"path":"."}"#)])),
        row(5, ChatMessage::tool("call_1", "notes.md\nsoul.md")),
        row(6, assistant("You have notes.md and soul.md.")),
    ]
}

fn fixture_chat_2002() -> Vec<StoredMessage> {
    vec![row(7, ChatMessage::user("Bonjour ✓ — ünïcödé")), row(8, assistant("Salut !"))]
}

#[tokio::test]
async fn a_database_from_the_seaorm_release_keeps_every_row() {
    let (_dir, path) = copy_of_fixture();
    assert_eq!(user_version(&path), 0, "the fixture predates user_version");

    let history = History::open(&path).await.unwrap();
    assert_eq!(history.rows("1001").await.unwrap(), fixture_chat_1001());
    assert_eq!(history.rows("2002").await.unwrap(), fixture_chat_2002());
    assert_eq!(history.summary("1001").await.unwrap().as_deref(), Some("The user greeted the agent."));
    assert_eq!(history.summary("2002").await.unwrap(), None);
    let mut loaded = vec![
        row(0, ChatMessage::user(format!("{SUMMARY_MARKER}\n\nThe user greeted the agent."))),
        row(0, assistant(SUMMARY_ACK)),
    ];
    loaded.extend(fixture_chat_1001());
    assert_eq!(history.load("1001", 100).await.unwrap(), loaded);
    assert_eq!(history.count("1001").await.unwrap(), 4);
    assert_eq!(history.last("2002").await.unwrap(), fixture_chat_2002().pop());

    // Pending 1 is still under the 100-year lease the old agent gave it; 2 and 3 were never leased.
    let leased = history.lease_pending(None, HOUR).await.unwrap();
    assert_eq!(
        leased,
        [
            PendingMessage::new("1001", "Unleased reminder", "subagent", "2026-12-03T16:51:06.360874+00:00").with_id(2),
            PendingMessage::new(
                "2002",
                r#"{"type":"file","path":"report.pdf","caption":"Weekly report"}"#,
                "subagent_file",
                "2026-12-03T16:51:06.360935+00:00"
            )
            .with_id(3),
        ]
    );
    assert_eq!(history.ack_pending(&[1], Some("1001")).await.unwrap(), 1, "the old agent's lease is acknowledged");
    assert_eq!(history.ack_pending(&[2, 3], None).await.unwrap(), 2);

    // New rows continue the old ids (AUTOINCREMENT: deleted ids are never reused).
    assert_eq!(history.append("1001", &ChatMessage::user("After the upgrade")).await.unwrap(), 9);
    assert_eq!(history.append("2002", &assistant("Toujours là")).await.unwrap(), 10);
    history.push_pending("2002", "Acknowledged after the upgrade", "heartbeat").await.unwrap();
    history.push_pending("1001", "Still leased at the next open", "subagent").await.unwrap();
    let leased = history.lease_pending(None, HOUR).await.unwrap();
    let leased_ids: Vec<_> = leased.iter().map(|m| m.id).collect();
    assert_eq!(leased_ids, [Some(4), Some(5)]);
    assert_eq!(history.ack_pending(&[4], Some("2002")).await.unwrap(), 1);
    drop(history);
    assert_eq!(user_version(&path), SCHEMA_VERSION);

    // A second open changes nothing: no migration, no version, no row.
    let before = dump(&path);
    drop(History::open(&path).await.unwrap());
    assert_eq!(dump(&path), before);

    let history = History::open(&path).await.unwrap();
    let mut chat_1001 = fixture_chat_1001();
    chat_1001.push(row(9, ChatMessage::user("After the upgrade")));
    assert_eq!(history.rows("1001").await.unwrap(), chat_1001);
    let mut chat_2002 = fixture_chat_2002();
    chat_2002.push(row(10, assistant("Toujours là")));
    assert_eq!(history.rows("2002").await.unwrap(), chat_2002);
    assert!(history.lease_pending(None, HOUR).await.unwrap().is_empty(), "the lease outlived the reopen");
    assert_eq!(history.ack_pending(&[5], Some("1001")).await.unwrap(), 1);
    assert!(history.take_pending(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_fresh_database_is_current_and_has_the_schema_seaorm_made() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.db");
    drop(History::open(&path).await.unwrap());
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    let journal: String =
        rusqlite::Connection::open(&path).unwrap().pragma_query_value(None, "journal_mode", |row| row.get(0)).unwrap();
    assert_eq!(journal, "wal");

    // Same tables, columns, types and indexes, down to the SQL text SQLite kept, as the SeaORM
    // era made them; plus what later migrations added (the heartbeat's last run; the metering
    // table, whose index on day a later migration dropped again; the budget; the dropped count
    // of queued messages and the index on a chat's queue; the record of a Python history carried
    // over), and only that.
    let (_fixture_dir, fixture) = copy_of_fixture();
    let dropped_column = r#", "dropped" integer NULL"#;
    let fresh = schema(&path);
    assert!(fresh.iter().any(|entry| entry.starts_with("table pending_messages") && entry.contains(dropped_column)));
    let (later, seaorm_era): (Vec<String>, Vec<String>) =
        fresh.into_iter().map(|entry| entry.replace(dropped_column, "")).partition(|entry| {
            entry.starts_with("table heartbeat on heartbeat:")
                || entry.contains(" on usage: ")
                || entry.starts_with("table budget on budget:")
                || entry.starts_with("index idx_pending_chat on pending_messages:")
                || entry.starts_with("table python_import on python_import:")
        });
    assert_eq!(seaorm_era, schema(&fixture));
    assert_eq!(later.len(), 5, "{later:?}");
    assert!(!later.iter().any(|entry| entry.contains("idx_usage_day")), "{later:?}");

    let before = dump(&path);
    drop(History::open(&path).await.unwrap());
    assert_eq!(dump(&path), before, "a second open changes nothing");
}

fn contents(messages: &[PendingMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.content.as_str()).collect()
}

/// What a reader would be offered now, without hiding it from the next.
async fn offered(history: &History, chat: &str) -> Vec<PendingMessage> {
    history.lease_pending(Some(chat), Duration::ZERO).await.unwrap()
}

#[tokio::test]
async fn a_full_queue_drops_its_oldest_and_keeps_one_note_in_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.db");
    let history = History::open(&path).await.unwrap();
    for i in 0..PENDING_MAX_PER_CHAT {
        history.push_pending("7", &format!("m{i}"), "heartbeat").await.unwrap();
    }
    history.push_pending("8", "another chat", "subagent").await.unwrap();
    let full = offered(&history, "7").await;
    assert_eq!(full[0].content, "m0", "at the cap nothing is dropped");

    // One more: the oldest goes, and the note takes its place at the head of the queue.
    history.push_pending("7", &format!("m{PENDING_MAX_PER_CHAT}"), "heartbeat").await.unwrap();
    let queue = offered(&history, "7").await;
    assert_eq!(contents(&queue[..2]), ["1 older message was dropped because it was not picked up.", "m1"]);
    assert_eq!(queue[0].source, PENDING_DROPPED_SOURCE);

    // Again, three at once (a durable turn's answer): still one note, its count updated.
    let batch: Vec<(&str, String)> = (1..=3).map(|i| ("turn", format!("m{}", PENDING_MAX_PER_CHAT + i))).collect();
    history.push_pending_all("7", &batch).await.unwrap();
    let queue = offered(&history, "7").await;
    assert_eq!(contents(&queue[..2]), ["4 older messages were dropped because they were not picked up.", "m4"]);
    assert_eq!(queue.iter().filter(|m| m.source == PENDING_DROPPED_SOURCE).count(), 1);

    // A reader holds the first batch (the note among it): nothing it holds is dropped or changed
    // under it, so its acknowledgement deletes exactly what it delivered; the oldest message no
    // one holds goes instead, under a note of its own.
    let held = history.lease_pending(Some("7"), HOUR).await.unwrap();
    assert_eq!(held.len(), 100);
    history.push_pending("7", "newest", "heartbeat").await.unwrap();
    let held_ids: Vec<i64> = held.iter().map(|m| m.id.unwrap()).collect();
    assert_eq!(history.ack_pending(&held_ids, Some("7")).await.unwrap(), 100, "everything held was still there");
    let rest = offered(&history, "7").await;
    assert_eq!(contents(&rest[..2]), ["1 older message was dropped because it was not picked up.", "m104"]);
    assert_eq!(contents(&held[..2]), ["4 older messages were dropped because they were not picked up.", "m4"]);
    assert_eq!(held.last().unwrap().content, "m102");
    // Acknowledging a deleted id is harmless.
    assert_eq!(history.ack_pending(&held_ids, Some("7")).await.unwrap(), 0);
    drop(history);

    // The note and the cap hold across a restart; the other chat never lost anything.
    let history = History::open(&path).await.unwrap();
    let all = history.take_pending(Some("7")).await.unwrap();
    // The reader delivered a note and 99 messages; the new note came on top of the cap.
    assert_eq!(all.len(), PENDING_MAX_PER_CHAT - 99 + 1);
    assert_eq!(all.iter().filter(|m| m.source == PENDING_DROPPED_SOURCE).count(), 1);
    assert_eq!(all.last().unwrap().content, "newest");
    assert!(all.iter().all(|m| m.content != "m103"));
    assert_eq!(contents(&history.take_pending(Some("8")).await.unwrap()), ["another chat"]);
}
