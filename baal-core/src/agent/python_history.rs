//! Carrying a Python Baal agent's history into this agent's database ([`carry_over`]), once, when
//! an agent imported from the Python Baal is converted: the deployer copies the Python agent's
//! `agent.db` beside ours and starts the agent with `PYTHON_AGENT_DB` naming the copy.
//!
//! The Python database holds `messages` (a chat's history, ordered by `created_at` and then id,
//! since its compaction inserts the summary pair with times earlier than the rows it keeps) and
//! `pending_messages` (what it queued for the bot). Agents made before tool calling have no
//! `tool_calls` and `tool_call_id` columns, and those made before the heartbeat no
//! `pending_messages` table (its schema was only ever created, never migrated): both are read as
//! empty.
//!
//! Invariants:
//! - all or nothing: every row arrives in one transaction with the row that records the import
//!   (`python_import`: from which file, how many rows), so a restart never imports twice and a
//!   failed import leaves nothing behind;
//! - once recorded, the Python file is never opened again, present or not: a start costs one
//!   query;
//! - a Python database that cannot be read whole (missing, not SQLite, a table or column missing,
//!   a row whose role, tool calls or time cannot be understood) is an error naming the file (and
//!   the row): the agent does not start, and the deployer puts the Python agent back, which
//!   loses nothing; the file is opened read-only;
//! - history is inserted in the Python agent's order, so that ours (by id) is the same, and
//!   keeps its chat ids: ours are text too, and a chat's next turn sends the model what the
//!   Python agent would have sent;
//! - the history goes only into a database that holds no conversation or queued message yet,
//!   since the older Python rows could not come before them;
//! - a queued message goes where the platform delivers: to its chat when that is a user's,
//!   the intro's user for `intro_{chat}`, the owner's chat for any other (the Python bot ignored
//!   a queued message's chat and gave it to whoever wrote next, or the owner).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};
use rusqlite::OptionalExtension as _;
use rusqlite::types::ValueRef;

use super::history::{History, HistoryError, cap_pending, insert_message_at, timestamp};
use crate::inference::{ChatMessage, MessageRole, ToolCall};

/// What [`carry_over`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CarryOver {
    /// This start carried the history over.
    Imported {
        /// History rows.
        messages: u64,
        /// Queued messages.
        pending: u64,
        /// Chats with history.
        chats: u64,
    },
    /// An earlier start did; the file was not looked at.
    AlreadyDone {
        /// `PYTHON_AGENT_DB` as it was then.
        source: String,
        /// When (UTC, as the database writes times).
        imported_at: String,
    },
}

/// Why the history could not be carried over. Each names what to do; none shows a row's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PythonHistoryError {
    /// `PYTHON_AGENT_DB` names no file, and nothing was imported yet.
    #[error(
        "the Python agent's database {} (PYTHON_AGENT_DB) does not exist, and its history was never carried \
         over: copy the Python agent's agent.db there, or unset PYTHON_AGENT_DB to start without its history",
        path.display()
    )]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// `PYTHON_AGENT_DB` is the agent's own database.
    #[error(
        "PYTHON_AGENT_DB ({}) is the agent's own database (DB_PATH): point it at a copy of the Python agent's agent.db",
        path.display()
    )]
    OwnDatabase {
        /// The file.
        path: PathBuf,
    },
    /// The agent's database already has conversations or queued messages.
    #[error(
        "cannot carry over the history in {}: the agent's own database already holds conversations or queued \
         messages, which the older Python history cannot be put before; start the agent on a fresh DB_PATH",
        path.display()
    )]
    NotEmpty {
        /// The Python agent's database.
        path: PathBuf,
    },
    /// The file is not a Python agent's database that can be read.
    #[error("cannot read the Python agent's database {}: {reason}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// One row cannot be understood.
    #[error("cannot read the Python agent's database {}: {table} row {id}: {reason}", path.display())]
    BadRow {
        /// The file.
        path: PathBuf,
        /// `messages` or `pending_messages`.
        table: &'static str,
        /// The row's id.
        id: i64,
        /// What is wrong with it.
        reason: String,
    },
    /// The agent's own database failed (the details are in the log).
    #[error("the agent's own database failed while carrying over the Python agent's history (see the log)")]
    Store(#[from] HistoryError),
}

/// Carries the history and queued messages of the Python agent's database at `python_db` into
/// `history`, unless an earlier start did; `owner_chat_id` (`OWNER_CHAT_ID`) receives the queued
/// messages whose chat is no user's.
pub async fn carry_over(
    history: &History,
    python_db: &Path,
    owner_chat_id: Option<&str>,
) -> Result<CarryOver, PythonHistoryError> {
    if let Some(done) = history.with(|c| recorded(c))? {
        if let CarryOver::AlreadyDone { source, .. } = &done
            && Path::new(source) != python_db
        {
            tracing::warn!(
                %source,
                given = %python_db.display(),
                "PYTHON_AGENT_DB names another file than the one imported; ignored (the history is carried over once)"
            );
        }
        return Ok(done);
    }
    let (history, path, owner) = (history.clone(), python_db.to_owned(), owner_chat_id.map(str::to_owned));
    // Off the runtime: a large history takes a while to read and write, before the agent serves.
    tokio::task::spawn_blocking(move || import(&history, &path, owner.as_deref())).await.map_err(|e| {
        tracing::error!(error = %e, "carrying over the Python history panicked");
        PythonHistoryError::Store(HistoryError)
    })?
}

fn recorded(c: &rusqlite::Connection) -> rusqlite::Result<Option<CarryOver>> {
    c.prepare_cached("SELECT source, imported_at FROM python_import WHERE id = 1")?
        .query_row([], |row| Ok(CarryOver::AlreadyDone { source: row.get(0)?, imported_at: row.get(1)? }))
        .optional()
}

fn import(history: &History, path: &Path, owner: Option<&str>) -> Result<CarryOver, PythonHistoryError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PythonHistoryError::Missing { path: path.to_owned() });
        }
        Err(e) => return Err(PythonHistoryError::Unreadable { path: path.to_owned(), reason: e.to_string() }),
        Ok(_) => {}
    }
    let own: Option<PathBuf> = history.with(|c| Ok(c.path().filter(|p| !p.is_empty()).map(PathBuf::from)))?;
    if own.is_some_and(|own| same_file(&own, path)) {
        return Err(PythonHistoryError::OwnDatabase { path: path.to_owned() });
    }
    let source = PythonDb::read(path, owner)?;
    let source_text = path.to_string_lossy();
    let outcome = history.with(|c| source.write(c, &source_text))?;
    match outcome {
        Some(done) => Ok(done),
        None => Err(PythonHistoryError::NotEmpty { path: path.to_owned() }),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// One history row, read and understood.
struct Message {
    id: i64,
    at: Option<DateTime<Utc>>,
    chat_id: String,
    message: ChatMessage,
}

/// One queued message, for the chat it will be delivered to.
struct Pending {
    id: i64,
    at: Option<DateTime<Utc>>,
    chat_id: String,
    content: String,
    source: String,
}

/// Everything the Python database holds, in the order the Python agent read it.
struct PythonDb {
    messages: Vec<Message>,
    pending: Vec<Pending>,
}

impl PythonDb {
    fn read(path: &Path, owner: Option<&str>) -> Result<PythonDb, PythonHistoryError> {
        let unreadable = |reason: String| PythonHistoryError::Unreadable { path: path.to_owned(), reason };
        let sql = |e: rusqlite::Error| unreadable(e.to_string());
        let bad = |table: &'static str| {
            move |(id, reason): (i64, String)| PythonHistoryError::BadRow { path: path.to_owned(), table, id, reason }
        };
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let c = rusqlite::Connection::open_with_flags(path, flags).map_err(sql)?;

        let columns = Columns::of(&c, "messages").map_err(sql)?;
        if columns.names.is_empty() {
            return Err(unreadable("it has no messages table; is it a Python Baal agent's agent.db?".into()));
        }
        let select = columns
            .select("messages", &["chat_id", "role", "content"], &["tool_calls", "tool_call_id", "created_at"])
            .map_err(unreadable)?;
        let timed = columns.has("created_at");
        let mut messages =
            read_rows(&c, &select, |id, row| message_of(id, row, timed)).map_err(sql)?.map_err(bad("messages"))?;
        messages.sort_by_key(|m| (m.at, m.id));

        let columns = Columns::of(&c, "pending_messages").map_err(sql)?;
        let mut pending = if columns.names.is_empty() {
            Vec::new()
        } else {
            let select = columns
                .select("pending_messages", &["chat_id", "content"], &["source", "created_at"])
                .map_err(unreadable)?;
            let timed = columns.has("created_at");
            read_rows(&c, &select, |id, row| pending_of(id, row, timed, owner))
                .map_err(sql)?
                .map_err(bad("pending_messages"))?
        };
        pending.sort_by_key(|p| (p.at, p.id));
        Ok(PythonDb { messages, pending })
    }

    /// Writes every row and the record of the import in one transaction. `None` when the database
    /// already holds conversations or queued messages (nothing is written).
    fn write(&self, c: &mut rusqlite::Connection, source: &str) -> rusqlite::Result<Option<CarryOver>> {
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Again under the write lock: another process may have imported since the first look.
        if let Some(done) = recorded(&tx)? {
            return Ok(Some(done));
        }
        let used: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM messages) OR EXISTS (SELECT 1 FROM pending_messages) \
             OR EXISTS (SELECT 1 FROM summaries)",
            [],
            |row| row.get(0),
        )?;
        if used {
            return Ok(None);
        }
        let now = Utc::now();
        let at = |time: Option<DateTime<Utc>>| timestamp(time.unwrap_or(now));
        let mut chats: HashSet<&str> = HashSet::new();
        for m in &self.messages {
            insert_message_at(&tx, &m.chat_id, &m.message, &at(m.at))?;
            chats.insert(&m.chat_id);
        }
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO pending_messages (chat_id, content, source, created_at) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for p in &self.pending {
                insert.execute(rusqlite::params![p.chat_id, p.content, p.source, at(p.at)])?;
            }
        }
        let queues: HashSet<&str> = self.pending.iter().map(|p| p.chat_id.as_str()).collect();
        let dropped: usize =
            queues.iter().map(|chat| cap_pending(&tx, chat, &timestamp(now))).sum::<rusqlite::Result<usize>>()?;
        if dropped > 0 {
            tracing::warn!(dropped, "the Python agent's queue was longer than a chat keeps: its oldest were dropped");
        }
        let (messages, pending) = (self.messages.len() as u64, self.pending.len() as u64);
        tx.execute(
            "INSERT INTO python_import (id, source, messages, pending, imported_at) VALUES (1, ?1, ?2, ?3, ?4)",
            rusqlite::params![source, messages as i64, pending as i64, timestamp(now)],
        )?;
        tx.commit()?;
        Ok(Some(CarryOver::Imported { messages, pending, chats: chats.len() as u64 }))
    }
}

/// The columns of one table of the Python database (none when it has no such table).
struct Columns {
    names: Vec<String>,
}

impl Columns {
    fn of(c: &rusqlite::Connection, table: &str) -> rusqlite::Result<Columns> {
        let names = c
            .prepare("SELECT name FROM pragma_table_info(?1)")?
            .query_map([table], |row| row.get::<_, String>(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Columns { names })
    }

    fn has(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// `SELECT rowid, <required…>, <optional…> FROM table`, an optional column the table lacks
    /// read as NULL; an error naming the first required column it lacks.
    fn select(&self, table: &str, required: &[&str], optional: &[&str]) -> Result<String, String> {
        let mut select = vec!["rowid".to_owned()];
        for name in required {
            if !self.has(name) {
                return Err(format!("its {table} table has no {name} column; is it a Python Baal agent's agent.db?"));
            }
            select.push(format!("\"{name}\""));
        }
        for name in optional {
            select.push(if self.has(name) { format!("\"{name}\"") } else { "NULL".into() });
        }
        Ok(format!("SELECT {} FROM \"{table}\"", select.join(", ")))
    }
}

type RowResult<T> = Result<T, String>;

/// Every row of `select` through `understand` (given the row's id); the inner error is the first
/// row it could not understand, with its id.
fn read_rows<T>(
    c: &rusqlite::Connection,
    select: &str,
    understand: impl Fn(i64, &rusqlite::Row<'_>) -> RowResult<T>,
) -> rusqlite::Result<Result<Vec<T>, (i64, String)>> {
    let mut statement = c.prepare(select)?;
    let mut rows = statement.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        match understand(id, row) {
            Ok(value) => out.push(value),
            Err(reason) => return Ok(Err((id, reason))),
        }
    }
    Ok(Ok(out))
}

/// Columns 1… of a `messages` row: chat_id, role, content, tool_calls, tool_call_id, created_at.
fn message_of(id: i64, row: &rusqlite::Row<'_>, timed: bool) -> RowResult<Message> {
    let chat_id = required_text(row, 1, "chat_id")?;
    let role_name = required_text(row, 2, "role")?;
    let role = MessageRole::parse(&role_name)
        .ok_or_else(|| format!("role {:?} is none of user, assistant and tool", excerpt(&role_name)))?;
    let content = text(row, 3, "content")?;
    let tool_calls: Vec<ToolCall> = match text(row, 4, "tool_calls")?.filter(|t| !t.is_empty()) {
        None => Vec::new(),
        Some(json) => {
            serde_json::from_str(&json).map_err(|e| format!("tool_calls is not a JSON list of tool calls ({e})"))?
        }
    };
    let tool_call_id = text(row, 5, "tool_call_id")?;
    let at = time(row, 6, timed)?;
    let message = ChatMessage { role, content, tool_calls, tool_call_id };
    Ok(Message { id, at, chat_id, message })
}

/// Columns 1… of a `pending_messages` row: chat_id, content, source, created_at.
fn pending_of(id: i64, row: &rusqlite::Row<'_>, timed: bool, owner: Option<&str>) -> RowResult<Pending> {
    let chat_id = delivery_chat(&required_text(row, 1, "chat_id")?, owner);
    let content = required_text(row, 2, "content")?;
    let source = text(row, 3, "source")?.filter(|s| !s.is_empty()).unwrap_or_else(|| "system".into());
    let at = time(row, 4, timed)?;
    Ok(Pending { id, at, chat_id, content, source })
}

/// The chat the platform delivers a queued message of `chat` to (see the module's invariants).
fn delivery_chat(chat: &str, owner: Option<&str>) -> String {
    let is_user = |c: &str| c.parse::<i64>().is_ok();
    if is_user(chat) {
        return chat.to_owned();
    }
    if let Some(user) = chat.strip_prefix("intro_").filter(|c| is_user(c)) {
        return user.to_owned();
    }
    owner.unwrap_or(chat).to_owned()
}

fn text(row: &rusqlite::Row<'_>, index: usize, column: &str) -> RowResult<Option<String>> {
    match row.get_ref(index).map_err(|e| format!("{column}: {e}"))? {
        ValueRef::Null => Ok(None),
        ValueRef::Text(bytes) => {
            String::from_utf8(bytes.to_vec()).map(Some).map_err(|_| format!("{column} is not UTF-8 text"))
        }
        ValueRef::Integer(i) => Ok(Some(i.to_string())),
        ValueRef::Real(_) | ValueRef::Blob(_) => Err(format!("{column} is not text")),
    }
}

fn required_text(row: &rusqlite::Row<'_>, index: usize, column: &str) -> RowResult<String> {
    text(row, index, column)?.ok_or_else(|| format!("{column} is empty (NULL)"))
}

/// The row's `created_at`; `None` only when its table has no such column (`timed` false). A NULL
/// there is an error: the row's place in its chat would be a guess.
fn time(row: &rusqlite::Row<'_>, index: usize, timed: bool) -> RowResult<Option<DateTime<Utc>>> {
    match text(row, index, "created_at")? {
        None if timed => Err("created_at is empty (NULL)".into()),
        None => Ok(None),
        Some(t) => parse_time(&t).map(Some).ok_or_else(|| {
            format!("created_at {:?} is not a time such as 2026-02-10T12:00:00.000000+00:00", excerpt(&t))
        }),
    }
}

/// A time as the Python agent wrote it (`datetime.isoformat()`: microseconds only when not zero,
/// an offset), or as SQLite's `datetime('now')` default did (UTC, no offset).
fn parse_time(t: &str) -> Option<DateTime<Utc>> {
    let t = t.trim();
    let with_offset =
        DateTime::parse_from_rfc3339(t).or_else(|_| DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%:z"));
    if let Ok(at) = with_offset {
        return Some(at.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(t, format).ok())
        .map(|naive| naive.and_utc())
}

/// At most 40 characters of a value shown in an error (a role or a time, never a message).
fn excerpt(value: &str) -> String {
    value.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_the_python_agent_and_sqlite_wrote_them() {
        let at = |t: &str| parse_time(t).map(timestamp);
        assert_eq!(at("2026-02-10T12:00:00.123456+00:00").as_deref(), Some("2026-02-10T12:00:00.123456+00:00"));
        // isoformat() leaves out a zero microsecond.
        assert_eq!(at("2026-02-10T12:00:00+00:00").as_deref(), Some("2026-02-10T12:00:00.000000+00:00"));
        assert_eq!(at("2026-02-10 12:00:00").as_deref(), Some("2026-02-10T12:00:00.000000+00:00"));
        assert_eq!(at("2026-02-10T12:00:00.5").as_deref(), Some("2026-02-10T12:00:00.500000+00:00"));
        assert_eq!(at("2026-02-10T14:00:00+02:00").as_deref(), Some("2026-02-10T12:00:00.000000+00:00"));
        for bad in ["", "yesterday", "2026-02-30T12:00:00+00:00", "1739188800"] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }

    #[test]
    fn queued_messages_go_to_a_user_the_intros_user_or_the_owner() {
        assert_eq!(delivery_chat("1001", Some("7")), "1001");
        assert_eq!(delivery_chat("-1001234", Some("7")), "-1001234");
        assert_eq!(delivery_chat("intro_1001", Some("7")), "1001");
        assert_eq!(delivery_chat("__heartbeat__", Some("7")), "7");
        assert_eq!(delivery_chat("intro_x", Some("7")), "7");
        assert_eq!(delivery_chat("__subagent__", None), "__subagent__");
    }
}
