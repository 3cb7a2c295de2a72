//! [`History`]: the agent's own database (SQLite, WAL, one rusqlite connection): per-chat message
//! history, the rolling summary compaction leaves behind, pending messages for the bot to
//! collect, the metering of model calls (whose methods live in [`super::usage`]), the budget
//! they are checked against ([`super::budget`]) and the record of a Python agent's history
//! carried over ([`super::python_history`]). Its schema is created and upgraded at open by a
//! list of migrations in this file, counted in `PRAGMA user_version`.
//!
//! Invariants:
//! - history is ordered by row id (insertion order), never by timestamps;
//! - a chat only ever reads its own rows;
//! - pending messages carry the chat they are for, and a chat only collects its own;
//! - a leased pending message is offered to no one else until its lease runs out, and is deleted
//!   only when acknowledged (or by the old destructive read), so a failed delivery is retried;
//! - a database any earlier release made opens with every row kept: migrations are only ever
//!   appended to `MIGRATIONS`, never edited.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::OptionalExtension as _;

use super::budget::Meter;
use crate::inference::{ChatMessage, MessageRole, ToolCall};
use crate::wire::PendingMessage;

/// The first line of the summary message compaction leaves at the start of a chat.
pub const SUMMARY_MARKER: &str = "[Earlier conversation summary]";
/// The assistant's acknowledgement that follows the summary.
pub const SUMMARY_ACK: &str = "Thanks, I have the context from our previous conversation and will carry on from there.";

/// The most messages one [`History::lease_pending`] call leases: a backlog (a user who blocked
/// the bot, an agent that talked while the bot was down) is handed out a batch per poll instead
/// of in one response of unbounded size.
pub const LEASE_BATCH: usize = 100;

/// The most queued messages a chat keeps (the note that counts the dropped ones aside): when a
/// new one would exceed it, the oldest go, and one note in their place says how many. A bot that
/// never collects (the user blocked it, the agent outlived its platform) cannot fill the disk.
pub const PENDING_MAX_PER_CHAT: usize = 200;

/// The `source` of the note that stands for dropped queued messages. The platform shows it as
/// any text (only `*_file` sources are files).
pub const PENDING_DROPPED_SOURCE: &str = "dropped";

/// The schema version this build creates and upgrades to: its `PRAGMA user_version` after
/// [`History::open`].
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The agent's database failed. The text is fit for a user; details go to the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("The agent's memory store failed. Please try again; if it keeps failing, the agent needs a repair.")]
#[non_exhaustive]
pub struct HistoryError;

/// One step of the schema.
struct Migration {
    /// The name releases that migrated with SeaORM recorded it under in `seaql_migrations`
    /// (`None` for migrations that came after them).
    seaorm_name: Option<&'static str>,
    /// Statements run in one transaction.
    sql: &'static str,
}

/// Every migration, in order; migration `i` brings `user_version` from `i` to `i + 1`.
///
/// The version is `PRAGMA user_version` rather than a table: it lives in the file header, is
/// written in the same transaction as the migration, and is read without a query plan, so an
/// open that has nothing to migrate costs one header read and takes no write lock.
///
/// The statements are, byte for byte, those SeaORM generated for the same migrations (SQLite
/// keeps that text in `sqlite_master`), so a fresh database has exactly the schema of one an
/// earlier release made. `IF NOT EXISTS` stays: SeaORM ran a SQLite migration outside a
/// transaction, so an older agent that died mid-migration may have left some tables behind.
const MIGRATIONS: &[Migration] = &[
    Migration {
        seaorm_name: Some("history"),
        sql: r#"
CREATE TABLE IF NOT EXISTS "messages" ( "id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "chat_id" varchar NOT NULL, "role" varchar NOT NULL, "content" text NULL, "tool_calls" text NULL, "tool_call_id" varchar NULL, "created_at" varchar NOT NULL );
CREATE INDEX IF NOT EXISTS "idx_messages_chat" ON "messages" ("chat_id", "id");
CREATE TABLE IF NOT EXISTS "pending_messages" ( "id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "chat_id" varchar NOT NULL, "content" text NOT NULL, "source" varchar NOT NULL, "created_at" varchar NOT NULL );
CREATE TABLE IF NOT EXISTS "summaries" ( "chat_id" varchar NOT NULL PRIMARY KEY, "content" text NOT NULL, "updated_at" varchar NOT NULL );
"#,
    },
    // Pending messages can be leased (`GET /pending?lease=`) instead of deleted on read. Nullable,
    // so the rows an older agent queued are simply not leased.
    Migration {
        seaorm_name: Some("m0002_pending_lease"),
        sql: r#"ALTER TABLE "pending_messages" ADD COLUMN "leased_until" integer NULL;"#,
    },
    // The heartbeat's last run (one row), so a restart neither repeats a run that just happened
    // nor postpones one that is due.
    Migration {
        seaorm_name: None,
        sql: r#"CREATE TABLE IF NOT EXISTS "heartbeat" ( "id" integer NOT NULL PRIMARY KEY CHECK ("id" = 1), "content_hash" blob NOT NULL, "ran_at" integer NOT NULL );"#,
    },
    // Metering (`agent::usage`): one row per model call. AUTOINCREMENT so that an id is never
    // reused once rows are pruned: ids are the cursor of `GET /usage?since=`. (Its index on day
    // is dropped by a later migration.)
    Migration {
        seaorm_name: None,
        sql: r#"
CREATE TABLE IF NOT EXISTS "usage" ( "id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "chat_id" varchar NOT NULL, "cause" varchar NOT NULL, "day" varchar NOT NULL, "model" varchar NOT NULL, "prompt_tokens" integer NOT NULL, "completion_tokens" integer NOT NULL, "estimated" integer NOT NULL, "created_at" varchar NOT NULL );
CREATE INDEX IF NOT EXISTS "idx_usage_day" ON "usage" ("day", "chat_id");
"#,
    },
    // The agent's budget (`agent::budget`): one row, absent until the platform sets one; a NULL
    // limit does not apply.
    Migration {
        seaorm_name: None,
        sql: r#"CREATE TABLE IF NOT EXISTS "budget" ( "id" integer NOT NULL PRIMARY KEY CHECK ("id" = 1), "daily_tokens" integer NULL, "background_tokens" integer NULL, "updated_at" varchar NOT NULL );"#,
    },
    // The index on `usage.day` cost every model call a second b-tree page in the WAL (about half
    // of what metering added to a call), while the day's totals are read once a day: they are
    // found by walking back from the newest row instead (`agent::budget`).
    Migration { seaorm_name: None, sql: r#"DROP INDEX IF EXISTS "idx_usage_day";"# },
    // The cap on a chat's queue (`PENDING_MAX_PER_CHAT`): the note that stands for dropped
    // messages carries their count (NULL on every other row), and a chat's rows are counted and
    // found oldest first by an index rather than a scan of every chat's queue.
    Migration {
        seaorm_name: None,
        sql: r#"
ALTER TABLE "pending_messages" ADD COLUMN "dropped" integer NULL;
CREATE INDEX IF NOT EXISTS "idx_pending_chat" ON "pending_messages" ("chat_id", "id");
"#,
    },
    // A Python Baal agent's history carried over (`agent::python_history`): one row, written in
    // the transaction that brought the rows, so that a restart finds it and imports nothing twice.
    Migration {
        seaorm_name: None,
        sql: r#"CREATE TABLE IF NOT EXISTS "python_import" ( "id" integer NOT NULL PRIMARY KEY CHECK ("id" = 1), "source" varchar NOT NULL, "messages" integer NOT NULL, "pending" integer NOT NULL, "imported_at" varchar NOT NULL );"#,
    },
];

/// SeaORM's bookkeeping table, as it created it. Migrations that SeaORM-era releases know are
/// still recorded there, so an agent rolled back to such a release finds nothing to re-apply
/// (re-adding `leased_until` would fail and stop it from starting).
const SEAORM_TABLE: &str = r#"CREATE TABLE IF NOT EXISTS "seaql_migrations" ( "version" varchar NOT NULL PRIMARY KEY, "applied_at" integer NOT NULL )"#;

fn user_version(c: &rusqlite::Connection) -> rusqlite::Result<i64> {
    c.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// The version a database that SeaORM migrated is at: the number of leading [`MIGRATIONS`] its
/// `seaql_migrations` records (0 when it has no such table). `None` when it records a migration
/// this build does not know, or skips one: a database from some other build, which is not
/// guessed at.
fn seaorm_version(c: &rusqlite::Connection) -> rusqlite::Result<Option<i64>> {
    let has_table: bool = c.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'seaql_migrations')",
        [],
        |row| row.get(0),
    )?;
    if !has_table {
        return Ok(Some(0));
    }
    let recorded = c
        .prepare("SELECT version FROM seaql_migrations")?
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let known = MIGRATIONS.iter().map_while(|m| m.seaorm_name).take_while(|name| recorded.iter().any(|r| r == name));
    let version = known.count();
    Ok((version == recorded.len()).then_some(version as i64))
}

/// Brings the database to [`SCHEMA_VERSION`]; returns how many migrations it applied.
///
/// Each migration is one `IMMEDIATE` transaction that reads the version again once it holds the
/// write lock, so two processes opening the same file at once apply each migration once. A
/// database at version 0 that SeaORM migrated is first given the version its `seaql_migrations`
/// records.
fn migrate(c: &mut rusqlite::Connection) -> Result<usize, HistoryError> {
    if user_version(c).map_err(sql_error)? == SCHEMA_VERSION {
        return Ok(0);
    }
    let mut applied = 0;
    loop {
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql_error)?;
        let stored = user_version(&tx).map_err(sql_error)?;
        let version = if stored == 0 {
            seaorm_version(&tx).map_err(sql_error)?.ok_or_else(|| {
                tracing::error!(
                    "the agent database records SeaORM migrations this agent does not know; not opening it"
                );
                HistoryError
            })?
        } else {
            stored
        };
        if version == SCHEMA_VERSION {
            if stored != version {
                // A SeaORM-migrated database that was already current: only the version is new.
                tx.pragma_update(None, "user_version", version).map_err(sql_error)?;
                tx.commit().map_err(sql_error)?;
            }
            return Ok(applied);
        }
        let Some(migration) = usize::try_from(version).ok().and_then(|v| MIGRATIONS.get(v)) else {
            tracing::error!(
                version,
                known = SCHEMA_VERSION,
                "the agent database has a schema this agent does not know; not opening it"
            );
            return Err(HistoryError);
        };
        tx.execute_batch(migration.sql).map_err(sql_error)?;
        if let Some(name) = migration.seaorm_name {
            tx.execute(SEAORM_TABLE, []).map_err(sql_error)?;
            tx.execute(
                "INSERT OR IGNORE INTO seaql_migrations (version, applied_at) VALUES (?1, ?2)",
                rusqlite::params![name, chrono::Utc::now().timestamp()],
            )
            .map_err(sql_error)?;
        }
        tx.pragma_update(None, "user_version", version + 1).map_err(sql_error)?;
        tx.commit().map_err(sql_error)?;
        applied += 1;
        tracing::info!(version = version + 1, "agent database migrated");
    }
}

/// One stored history row.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredMessage {
    /// Row id (0 for the synthetic summary pair).
    pub id: i64,
    /// The message.
    pub message: ChatMessage,
}

impl StoredMessage {
    /// A row of history (id 0 for messages that are not stored rows).
    pub fn new(id: i64, message: ChatMessage) -> Self {
        StoredMessage { id, message }
    }
}

/// The agent's database.
///
/// Statements run on the calling task, under a mutex, on one rusqlite connection: an agent's
/// statements take tens of microseconds, while sqlx's SQLite driver (SeaORM, which the agent used
/// before) ran each on its own thread, and the two thread hand-offs per statement, queued behind
/// every other turn's, were most of the latency the agent added to a turn at 100 concurrent
/// chats.
#[derive(Debug, Clone)]
pub struct History {
    connection: Arc<Mutex<rusqlite::Connection>>,
    /// The budget and the day's totals (`agent::budget`). Its lock is taken after the
    /// connection's, never before, and is never held across a statement.
    meter: Arc<Mutex<Meter>>,
}

fn now() -> String {
    timestamp(chrono::Utc::now())
}

/// How the database writes a time: UTC with microseconds and `+00:00`, as the Python agent did.
pub(super) fn timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
}

fn sql_error(e: rusqlite::Error) -> HistoryError {
    tracing::error!(error = %e, "agent database error");
    HistoryError
}

/// A query for a chat's rows (`?1`), selecting the columns `message_row` reads, followed by
/// `$rest`. A macro so that each query is one constant string: no formatting per turn.
macro_rules! select_messages {
    ($rest:literal) => {
        concat!("SELECT id, role, content, tool_calls, tool_call_id FROM messages WHERE chat_id = ?1 ", $rest)
    };
}

fn insert_message(c: &rusqlite::Connection, chat_id: &str, message: &ChatMessage) -> rusqlite::Result<i64> {
    insert_message_at(c, chat_id, message, &now())
}

/// Appends `message` to a chat's history as written at `created_at` (see [`timestamp`]).
pub(super) fn insert_message_at(
    c: &rusqlite::Connection,
    chat_id: &str,
    message: &ChatMessage,
    created_at: &str,
) -> rusqlite::Result<i64> {
    let tool_calls = if message.tool_calls.is_empty() {
        None
    } else {
        Some(serde_json::to_string(&message.tool_calls).unwrap_or_else(|_| "[]".into()))
    };
    c.prepare_cached(
        "INSERT INTO messages (chat_id, role, content, tool_calls, tool_call_id, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .insert(rusqlite::params![
        chat_id,
        message.role.as_str(),
        message.content,
        tool_calls,
        message.tool_call_id,
        created_at
    ])
}

fn summary_of(c: &rusqlite::Connection, chat_id: &str) -> rusqlite::Result<Option<String>> {
    c.prepare_cached("SELECT content FROM summaries WHERE chat_id = ?1")?
        .query_row([chat_id], |row| row.get(0))
        .optional()
}

fn message_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    let role: String = row.get(1)?;
    let tool_calls: Option<String> = row.get(3)?;
    Ok(stored_message(row.get(0)?, &role, row.get(2)?, tool_calls.as_deref(), row.get(4)?))
}

fn pending_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, PendingMessage)> {
    Ok((
        row.get(0)?,
        PendingMessage::new(
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, String>(4)?,
        ),
    ))
}

impl History {
    /// Opens (creating if needed) the SQLite file at `path` in WAL mode and brings its schema to
    /// [`SCHEMA_VERSION`], keeping every row of a database an earlier release made.
    pub async fn open(path: &Path) -> Result<History, HistoryError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                tracing::error!(error = %e, path = %parent.display(), "cannot create the database directory");
                HistoryError
            })?;
        }
        let path = path.to_owned();
        // Off the runtime: another process may hold the write lock for up to the busy timeout.
        tokio::task::spawn_blocking(move || {
            History::configure_and_migrate(rusqlite::Connection::open(path).map_err(sql_error)?, false)
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "opening the agent database panicked");
            HistoryError
        })?
    }

    /// A private in-memory database (tests, embedders that keep nothing).
    pub async fn in_memory() -> Result<History, HistoryError> {
        History::configure_and_migrate(rusqlite::Connection::open_in_memory().map_err(sql_error)?, true)
    }

    fn configure_and_migrate(mut connection: rusqlite::Connection, in_memory: bool) -> Result<History, HistoryError> {
        // Another process (a bot's local deployer reading the queue, an old agent still stopping)
        // may hold the write lock: wait for it rather than fail.
        connection.busy_timeout(Duration::from_secs(5)).map_err(sql_error)?;
        if !in_memory {
            // WAL: readers never wait for the writer. It is a property of the file, `synchronous`
            // is not; NORMAL is durable across a crash of the agent, which is what WAL needs.
            connection.pragma_update(None, "journal_mode", "WAL").map_err(sql_error)?;
            connection.pragma_update(None, "synchronous", "NORMAL").map_err(sql_error)?;
        }
        // As SeaORM's connection had it: no table refers to another yet, but a later migration's
        // reference must be enforced from its first row.
        connection.pragma_update(None, "foreign_keys", true).map_err(sql_error)?;
        // The bundled SQLite is built with SQLITE_ENABLE_STAT4, so without the planner stability
        // guarantee a statement with a bound `LIMIT ?` (`load`, every turn) is compiled again each
        // time it runs.
        connection.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map_err(sql_error)?;
        migrate(&mut connection)?;
        let budget = super::budget::stored_budget(&connection).map_err(sql_error)?;
        Ok(History { connection: Arc::new(Mutex::new(connection)), meter: Arc::new(Mutex::new(Meter::new(budget))) })
    }

    pub(super) fn meter(&self) -> std::sync::MutexGuard<'_, Meter> {
        self.meter.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `work` on the connection. Never held across an await.
    pub(super) fn with<T>(
        &self,
        work: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, HistoryError> {
        // A panic while the lock was held cannot have left a transaction open (rusqlite rolls
        // back on drop), so a poisoned lock still guards a usable connection.
        let mut connection = self.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        work(&mut connection).map_err(sql_error)
    }

    /// Appends a message to a chat's history; returns its row id.
    pub async fn append(&self, chat_id: &str, message: &ChatMessage) -> Result<i64, HistoryError> {
        self.with(|c| insert_message(c, chat_id, message))
    }

    /// Appends the model's `message` to a chat's history and records the call that wrote it, in
    /// one transaction: metering then costs a turn no commit of its own.
    pub async fn append_metered(
        &self,
        chat_id: &str,
        message: &ChatMessage,
        call: &super::usage::MeteredCall<'_>,
    ) -> Result<i64, HistoryError> {
        let at = chrono::Utc::now();
        self.with(|c| {
            let tx = c.transaction()?;
            super::usage::insert_usage(&tx, call, at)?;
            let id = insert_message(&tx, chat_id, message)?;
            tx.commit()?;
            self.count_usage(at.date_naive(), call.cause, call.metered);
            Ok(id)
        })
    }

    /// The newest `limit` rows of a chat in insertion order, preceded by the summary pair when
    /// an earlier compaction left one.
    pub async fn load(&self, chat_id: &str, limit: u64) -> Result<Vec<StoredMessage>, HistoryError> {
        let limit = <i64 as TryFrom<u64>>::try_from(limit).unwrap_or(i64::MAX);
        let (summary, mut rows) = self.with(|c| {
            let summary = summary_of(c, chat_id)?;
            let rows = c
                .prepare_cached(select_messages!("ORDER BY id DESC LIMIT ?2"))?
                .query_map(rusqlite::params![chat_id, limit], message_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((summary, rows))
        })?;
        rows.reverse();
        let mut out = summary.map(summary_pair).unwrap_or_default();
        out.extend(rows);
        Ok(out)
    }

    /// The newest row of a chat.
    pub async fn last(&self, chat_id: &str) -> Result<Option<StoredMessage>, HistoryError> {
        self.with(|c| {
            c.prepare_cached(select_messages!("ORDER BY id DESC LIMIT 1"))?.query_row([chat_id], message_row).optional()
        })
    }

    /// Every row of a chat (no summary), in insertion order.
    pub async fn rows(&self, chat_id: &str) -> Result<Vec<StoredMessage>, HistoryError> {
        self.with(|c| c.prepare_cached(select_messages!("ORDER BY id"))?.query_map([chat_id], message_row)?.collect())
    }

    /// The summary compaction left for a chat, if any.
    pub async fn summary(&self, chat_id: &str) -> Result<Option<String>, HistoryError> {
        self.with(|c| summary_of(c, chat_id))
    }

    /// Replaces every row of the chat older than row `first_kept` with `summary` (atomically).
    pub async fn replace_with_summary(
        &self,
        chat_id: &str,
        first_kept: i64,
        summary: &str,
    ) -> Result<(), HistoryError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM messages WHERE chat_id = ?1 AND id < ?2", rusqlite::params![chat_id, first_kept])?;
            tx.execute(
                "INSERT INTO summaries (chat_id, content, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (chat_id) DO UPDATE SET content = excluded.content, updated_at = excluded.updated_at",
                rusqlite::params![chat_id, summary, now()],
            )?;
            tx.commit()
        })
    }

    /// Keeps the newest `keep` rows of a chat and replaces the older ones with `summary`
    /// (nothing happens when the chat has `keep` rows or fewer). The cut moves earlier so that a
    /// tool result is never separated from the call that asked for it.
    pub async fn compact_history(&self, chat_id: &str, keep: usize, summary: &str) -> Result<bool, HistoryError> {
        let rows = self.rows(chat_id).await?;
        match safe_cut(&rows, rows.len().saturating_sub(keep)) {
            Some(cut) if rows.len() > keep => {
                self.replace_with_summary(chat_id, rows[cut].id, summary).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Deletes a chat's history and summary; returns the rows deleted.
    pub async fn clear(&self, chat_id: &str) -> Result<u64, HistoryError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let deleted = tx.execute("DELETE FROM messages WHERE chat_id = ?1", [chat_id])?;
            tx.execute("DELETE FROM summaries WHERE chat_id = ?1", [chat_id])?;
            tx.commit()?;
            Ok(deleted as u64)
        })
    }

    /// The heartbeat's last run: the hash of the `HEARTBEAT.md` it ran and when (Unix seconds).
    pub async fn heartbeat_last(&self) -> Result<Option<([u8; 32], i64)>, HistoryError> {
        let row: Option<(Vec<u8>, i64)> = self.with(|c| {
            c.prepare_cached("SELECT content_hash, ran_at FROM heartbeat WHERE id = 1")?
                .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })?;
        // A hash of another length cannot come from this code: treated as no run, so the next
        // check runs and writes a good row.
        Ok(row.and_then(|(hash, at)| Some((<[u8; 32]>::try_from(hash.as_slice()).ok()?, at))))
    }

    /// Records a heartbeat run of the content hashed `content_hash` at `ran_at` (Unix seconds).
    pub async fn heartbeat_record(&self, content_hash: [u8; 32], ran_at: i64) -> Result<(), HistoryError> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO heartbeat (id, content_hash, ran_at) VALUES (1, ?1, ?2) \
                 ON CONFLICT (id) DO UPDATE SET content_hash = excluded.content_hash, ran_at = excluded.ran_at",
            )?
            .execute(rusqlite::params![content_hash.as_slice(), ran_at])
            .map(drop)
        })
    }

    /// Number of history rows of a chat.
    pub async fn count(&self, chat_id: &str) -> Result<u64, HistoryError> {
        let count: i64 = self.with(|c| {
            c.prepare_cached("SELECT COUNT(*) FROM messages WHERE chat_id = ?1")?.query_row([chat_id], |row| row.get(0))
        })?;
        Ok(count.unsigned_abs())
    }

    /// Queues a message for the bot to deliver to `chat_id` (see [`History::push_pending_all`]
    /// for the cap).
    pub async fn push_pending(&self, chat_id: &str, content: &str, source: &str) -> Result<(), HistoryError> {
        self.push_pending_all(chat_id, &[(source, content.to_owned())]).await
    }

    /// Queues `messages` (`(source, content)`, in order) for the bot to deliver to `chat_id`, in one
    /// transaction: all of them or none, with increasing ids in the order given. Past
    /// [`PENDING_MAX_PER_CHAT`], the chat's oldest messages are dropped in the same transaction
    /// and counted by one note queued in their place.
    pub async fn push_pending_all(&self, chat_id: &str, messages: &[(&str, String)]) -> Result<(), HistoryError> {
        if messages.is_empty() {
            return Ok(());
        }
        let at = now();
        let dropped = self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO pending_messages (chat_id, content, source, created_at) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for (source, content) in messages {
                    insert.execute(rusqlite::params![chat_id, content, source, at])?;
                }
            }
            let dropped = cap_pending(&tx, chat_id, &at)?;
            tx.commit()?;
            Ok(dropped)
        })?;
        if dropped > 0 {
            // Counts only, never what was queued.
            tracing::warn!(chat_id, dropped, "a chat's queue was full: its oldest messages were dropped");
        }
        Ok(())
    }

    /// The chats that have a queued message which is not leased (or whose lease ran out) and is
    /// older than any of the chat's messages still leased, the chat of the oldest such message
    /// first: those a `GET /pending?chat_id=&lease=` would get something from now.
    pub async fn pending_chats(&self) -> Result<Vec<String>, HistoryError> {
        let now = chrono::Utc::now().timestamp_millis();
        self.with(|c| {
            c.prepare_cached(
                "SELECT chat_id FROM pending_messages AS p WHERE leased_until IS NULL OR leased_until <= ?1 \
                 GROUP BY chat_id \
                 HAVING MIN(id) < IFNULL((SELECT MIN(id) FROM pending_messages AS held \
                                          WHERE held.chat_id = p.chat_id AND held.leased_until > ?1), \
                                         9223372036854775807) \
                 ORDER BY MIN(id)",
            )?
            .query_map([now], |row| row.get(0))?
            .collect()
        })
    }

    /// Takes (returns and deletes) the queued messages of `chat_id`, or of every chat when `None`,
    /// oldest first, leased or not: the destructive read of clients that predate leases. The
    /// messages carry no id, since there is nothing left to acknowledge.
    pub async fn take_pending(&self, chat_id: Option<&str>) -> Result<Vec<PendingMessage>, HistoryError> {
        // One statement: choosing and deleting cannot be split by another request.
        let mut rows = self.with(|c| {
            c.prepare_cached(
                "DELETE FROM pending_messages WHERE ?1 IS NULL OR chat_id = ?1 \
                 RETURNING id, chat_id, content, source, created_at",
            )?
            .query_map([chat_id], pending_row)?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        // RETURNING gives no order.
        rows.sort_by_key(|(id, _)| *id);
        Ok(rows.into_iter().map(|(_, message)| message).collect())
    }

    /// Leases the oldest [`LEASE_BATCH`] queued messages of `chat_id` (every chat when `None`)
    /// that are not leased or whose lease ran out: they are returned oldest first, with their
    /// ids, and not offered again until `lease` has passed; the next call gets the next batch. They stay queued until [`History::ack_pending`] deletes them, so
    /// a bot that fails to deliver them gets them again after the lease.
    ///
    /// For one chat, nothing newer than a message still leased is handed out: a bot whose
    /// delivery stopped at a message (which stays leased) would otherwise be given the next batch
    /// and show it first, and then, its watermark past them, take the held ones for delivered.
    pub async fn lease_pending(
        &self,
        chat_id: Option<&str>,
        lease: Duration,
    ) -> Result<Vec<PendingMessage>, HistoryError> {
        let now = chrono::Utc::now().timestamp_millis();
        let until = now.saturating_add(<i64 as TryFrom<u128>>::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        // One conditional `UPDATE … RETURNING`: choosing the free rows and leasing them cannot be
        // split by another request, so two bots never lease the same message at once.
        let mut rows = self.with(|c| {
            c.prepare_cached(
                "UPDATE pending_messages SET leased_until = ?1 WHERE id IN (\
                   SELECT id FROM pending_messages \
                   WHERE (leased_until IS NULL OR leased_until <= ?2) AND (?3 IS NULL OR chat_id = ?3) \
                   AND id < IFNULL((SELECT MIN(id) FROM pending_messages WHERE chat_id = ?3 AND leased_until > ?2), \
                                   9223372036854775807) \
                   ORDER BY id LIMIT ?4) \
                 RETURNING id, chat_id, content, source, created_at",
            )?
            .query_map(rusqlite::params![until, now, chat_id, LEASE_BATCH as i64], pending_row)?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.sort_by_key(|(id, _)| *id);
        Ok(rows.into_iter().map(|(id, message)| message.with_id(id)).collect())
    }

    /// Deletes the queued messages `ids` (only those of `chat_id` when given), whether or not
    /// their lease ran out; returns how many were deleted. Unknown ids are ignored, so
    /// acknowledging twice is harmless.
    pub async fn ack_pending(&self, ids: &[i64], chat_id: Option<&str>) -> Result<u64, HistoryError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut deleted = 0;
            {
                let mut delete =
                    tx.prepare_cached("DELETE FROM pending_messages WHERE id = ?1 AND (?2 IS NULL OR chat_id = ?2)")?;
                for id in ids {
                    deleted += delete.execute(rusqlite::params![id, chat_id])? as u64;
                }
            }
            tx.commit()?;
            Ok(deleted)
        })
    }
}

/// The note that stands for `count` dropped queued messages.
pub fn dropped_note(count: i64) -> String {
    if count == 1 {
        "1 older message was dropped because it was not picked up.".to_owned()
    } else {
        format!("{count} older messages were dropped because they were not picked up.")
    }
}

/// Keeps `chat_id`'s queue within [`PENDING_MAX_PER_CHAT`] messages (the note aside); returns
/// how many it dropped.
///
/// The oldest messages no reader holds go (a leased one is being delivered: it is acknowledged,
/// or offered again, as usual). Their count is added to the chat's note when one waits unleased
/// (a note being delivered is not changed under its reader); otherwise the newest dropped row
/// becomes the note, keeping its id, so the note comes before every message that was kept and the
/// bot delivers it in order. The id was never handed out with a live lease, so no
/// acknowledgement in flight names it.
pub(super) fn cap_pending(tx: &rusqlite::Transaction<'_>, chat_id: &str, at: &str) -> rusqlite::Result<usize> {
    let queued: i64 = tx
        .prepare_cached("SELECT COUNT(*) FROM pending_messages WHERE chat_id = ?1 AND dropped IS NULL")?
        .query_row([chat_id], |row| row.get(0))?;
    let over = queued.saturating_sub(PENDING_MAX_PER_CHAT as i64);
    if over <= 0 {
        return Ok(0);
    }
    let now = chrono::Utc::now().timestamp_millis();
    let oldest: Vec<i64> = tx
        .prepare_cached(
            "SELECT id FROM pending_messages WHERE chat_id = ?1 AND dropped IS NULL \
             AND (leased_until IS NULL OR leased_until <= ?2) ORDER BY id LIMIT ?3",
        )?
        .query_map(rusqlite::params![chat_id, now, over], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let Some((&newest, older)) = oldest.split_last() else { return Ok(0) };
    let note: Option<(i64, i64)> = tx
        .prepare_cached(
            "SELECT id, dropped FROM pending_messages WHERE chat_id = ?1 AND dropped IS NOT NULL \
             AND (leased_until IS NULL OR leased_until <= ?2) ORDER BY id LIMIT 1",
        )?
        .query_row(rusqlite::params![chat_id, now], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let count = oldest.len() as i64;
    let (note_id, total, delete) = match note {
        Some((id, before)) => (id, before.saturating_add(count), &oldest[..]),
        None => (newest, count, older),
    };
    {
        let mut remove = tx.prepare_cached("DELETE FROM pending_messages WHERE id = ?1")?;
        for id in delete {
            remove.execute([id])?;
        }
    }
    tx.prepare_cached(
        "UPDATE pending_messages SET content = ?2, source = ?3, created_at = ?4, dropped = ?5, leased_until = NULL \
         WHERE id = ?1",
    )?
    .execute(rusqlite::params![note_id, dropped_note(total), PENDING_DROPPED_SOURCE, at, total])?;
    Ok(oldest.len())
}

/// The synthetic pair that stands for the summarised start of a chat.
fn summary_pair(text: String) -> Vec<StoredMessage> {
    vec![
        StoredMessage { id: 0, message: ChatMessage::user(format!("{SUMMARY_MARKER}\n\n{text}")) },
        StoredMessage { id: 0, message: ChatMessage::assistant(Some(SUMMARY_ACK.into()), Vec::new()) },
    ]
}

/// The first index `>= wanted` (moving earlier if needed) at which a history may start without
/// orphaning a tool result: the row there is not a `tool` row. `None` when no such cut exists
/// above index 0.
pub(crate) fn safe_cut(rows: &[StoredMessage], wanted: usize) -> Option<usize> {
    let mut cut = wanted.min(rows.len());
    while cut > 0 && rows.get(cut).is_some_and(|r| r.message.role == MessageRole::Tool) {
        cut -= 1;
    }
    (cut > 0).then_some(cut)
}

fn stored_message(
    id: i64,
    role: &str,
    content: Option<String>,
    tool_calls: Option<&str>,
    tool_call_id: Option<String>,
) -> StoredMessage {
    let role = MessageRole::parse(role).unwrap_or(MessageRole::User);
    let tool_calls: Vec<ToolCall> = tool_calls.and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default();
    let mut message = match role {
        MessageRole::Tool => ChatMessage::tool(tool_call_id.unwrap_or_default(), ""),
        MessageRole::Assistant => ChatMessage::assistant(None, tool_calls),
        MessageRole::System => ChatMessage::system(""),
        MessageRole::User => ChatMessage::user(""),
    };
    message.content = content;
    StoredMessage { id, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn contents(messages: &[PendingMessage]) -> Vec<&str> {
        messages.iter().map(|m| m.content.as_str()).collect()
    }

    fn ids(messages: &[PendingMessage]) -> Vec<i64> {
        messages.iter().map(|m| m.id.expect("leased messages carry their id")).collect()
    }

    #[tokio::test]
    async fn a_lease_hides_messages_until_it_runs_out() {
        let history = History::in_memory().await.unwrap();
        history.push_pending("7", "first", "heartbeat").await.unwrap();
        history.push_pending("8", "other chat", "subagent").await.unwrap();
        history.push_pending("7", "second", "subagent").await.unwrap();

        let leased = history.lease_pending(Some("7"), Duration::from_secs(1)).await.unwrap();
        assert_eq!(contents(&leased), ["first", "second"], "oldest first, this chat only");
        assert_eq!(leased[0].chat_id, "7");
        assert_eq!(leased[0].source, "heartbeat");
        assert!(history.lease_pending(Some("7"), HOUR).await.unwrap().is_empty(), "leased to the first caller");
        // The other chat was not leased by the filtered call.
        let everything = history.lease_pending(None, HOUR).await.unwrap();
        assert_eq!(contents(&everything), ["other chat"]);

        tokio::time::sleep(Duration::from_millis(1200)).await;
        let again = history.lease_pending(None, HOUR).await.unwrap();
        assert_eq!(ids(&again), ids(&leased), "an expired lease offers the same messages again");
        assert!(history.lease_pending(None, HOUR).await.unwrap().is_empty());

        // A zero lease runs out at once: nothing is hidden.
        history.push_pending("9", "fleeting", "heartbeat").await.unwrap();
        assert_eq!(contents(&history.lease_pending(Some("9"), Duration::ZERO).await.unwrap()), ["fleeting"]);
        assert_eq!(contents(&history.lease_pending(Some("9"), Duration::ZERO).await.unwrap()), ["fleeting"]);
    }

    #[tokio::test]
    async fn ack_deletes_only_the_given_ids_of_the_given_chat() {
        let history = History::in_memory().await.unwrap();
        for (chat, text) in [("7", "a"), ("7", "b"), ("8", "c"), ("7", "d")] {
            history.push_pending(chat, text, "heartbeat").await.unwrap();
        }
        let leased = history.lease_pending(None, Duration::ZERO).await.unwrap();
        let id = |text: &str| leased.iter().find(|m| m.content == text).and_then(|m| m.id).unwrap();

        // `c` belongs to chat 8: an acknowledgement for chat 7 cannot delete it.
        assert_eq!(history.ack_pending(&[id("a"), id("c")], Some("7")).await.unwrap(), 1);
        assert_eq!(contents(&history.lease_pending(None, Duration::ZERO).await.unwrap()), ["b", "c", "d"]);
        assert_eq!(history.ack_pending(&[id("a"), 999_999], None).await.unwrap(), 0, "unknown ids are ignored");
        assert_eq!(history.ack_pending(&[], Some("7")).await.unwrap(), 0);
        // Without a chat, any chat's message; a live lease does not protect it from its ack.
        history.lease_pending(None, HOUR).await.unwrap();
        assert_eq!(history.ack_pending(&[id("c"), id("d")], None).await.unwrap(), 2);
        assert_eq!(contents(&history.take_pending(None).await.unwrap()), ["b"]);
    }

    #[tokio::test]
    async fn pending_chats_are_those_with_a_readable_message_oldest_first() {
        let history = History::in_memory().await.unwrap();
        assert!(history.pending_chats().await.unwrap().is_empty());
        history.push_pending("8", "eight", "heartbeat").await.unwrap();
        history
            .push_pending_all("7", &[("turn", "a".into()), ("turn_file", "f".into()), ("turn", "b".into())])
            .await
            .unwrap();
        history.push_pending("9", "nine", "subagent").await.unwrap();
        history.push_pending("8", "eight again", "heartbeat").await.unwrap();
        assert_eq!(history.pending_chats().await.unwrap(), ["8", "7", "9"]);

        // Chat 8's messages are all leased: it has nothing to read now.
        history.lease_pending(Some("8"), HOUR).await.unwrap();
        assert_eq!(history.pending_chats().await.unwrap(), ["7", "9"]);
        // A batch keeps its order, with increasing ids, and one of its messages still leased
        // leaves the chat listed for the others only once that lease runs out.
        let sevens = history.lease_pending(Some("7"), Duration::ZERO).await.unwrap();
        assert_eq!(contents(&sevens), ["a", "f", "b"]);
        assert_eq!(sevens.iter().map(|m| m.source.as_str()).collect::<Vec<_>>(), ["turn", "turn_file", "turn"]);
        assert!(ids(&sevens).windows(2).all(|w| w[0] < w[1]), "{:?}", ids(&sevens));
        history.lease_pending(Some("7"), HOUR).await.unwrap();
        assert_eq!(history.pending_chats().await.unwrap(), ["9"]);
        // A new message behind held ones waits for them, and is not offered either.
        history.push_pending("8", "new for eight", "heartbeat").await.unwrap();
        assert_eq!(history.pending_chats().await.unwrap(), ["9"]);
        assert!(history.lease_pending(Some("8"), HOUR).await.unwrap().is_empty());
        // Once the held ones are acknowledged, it is.
        let held: Vec<i64> =
            history.lease_pending(Some("7"), Duration::ZERO).await.unwrap().iter().map(|m| m.id.unwrap()).collect();
        assert!(held.is_empty(), "chat 7 is still held");
        history.push_pending("10", "ten", "heartbeat").await.unwrap();
        let eights = rusqlite_ids(&history, "8");
        history.ack_pending(&eights[..2], Some("8")).await.unwrap();
        assert_eq!(history.pending_chats().await.unwrap(), ["9", "8", "10"], "ordered by the oldest readable message");
        assert_eq!(contents(&history.lease_pending(Some("8"), HOUR).await.unwrap()), ["new for eight"]);
        history.take_pending(None).await.unwrap();
        assert!(history.pending_chats().await.unwrap().is_empty());
        history.push_pending_all("7", &[]).await.unwrap();
        assert!(history.pending_chats().await.unwrap().is_empty(), "an empty batch queues nothing");
    }

    /// The ids of a chat's queued messages, oldest first, leased or not.
    fn rusqlite_ids(history: &History, chat: &str) -> Vec<i64> {
        history
            .with(|c| {
                c.prepare("SELECT id FROM pending_messages WHERE chat_id = ?1 ORDER BY id")?
                    .query_map([chat], |row| row.get(0))?
                    .collect()
            })
            .unwrap()
    }

    #[tokio::test]
    async fn take_pending_still_deletes_what_it_returns() {
        let history = History::in_memory().await.unwrap();
        history.push_pending("7", "one", "heartbeat").await.unwrap();
        history.push_pending("8", "two", "heartbeat").await.unwrap();
        history.push_pending("7", "three", "heartbeat").await.unwrap();
        // A leased message is still taken: old clients see everything, as before leases.
        history.lease_pending(Some("7"), HOUR).await.unwrap();
        let taken = history.take_pending(Some("7")).await.unwrap();
        assert_eq!(contents(&taken), ["one", "three"]);
        assert!(taken.iter().all(|m| m.id.is_none()), "nothing to acknowledge after a destructive read");
        assert!(history.take_pending(Some("7")).await.unwrap().is_empty());
        assert_eq!(contents(&history.take_pending(None).await.unwrap()), ["two"]);
        assert!(history.lease_pending(None, Duration::ZERO).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_backlog_is_leased_in_batches_oldest_first() {
        let history = History::in_memory().await.unwrap();
        // Two chats, each within its cap (`PENDING_MAX_PER_CHAT`).
        for i in 0..250 {
            let chat = if i % 2 == 0 { "7" } else { "8" };
            history.push_pending(chat, &format!("m{i}"), "subagent").await.unwrap();
        }
        let mut all = Vec::new();
        let mut sizes = Vec::new();
        loop {
            let batch = history.lease_pending(None, HOUR).await.unwrap();
            if batch.is_empty() {
                break;
            }
            sizes.push(batch.len());
            all.extend(batch);
        }
        assert_eq!(sizes, [LEASE_BATCH, LEASE_BATCH, 50]);
        let expected: Vec<String> = (0..250).map(|i| format!("m{i}")).collect();
        assert_eq!(contents(&all), expected.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(history.ack_pending(&ids(&all), None).await.unwrap(), 250);
        assert!(history.take_pending(None).await.unwrap().is_empty());
    }

    /// A file that an agent left on disk, made with `setup` on a bare connection.
    fn old_database(setup: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        rusqlite::Connection::open(&path).unwrap().execute_batch(setup).unwrap();
        (dir, path)
    }

    fn version_of(path: &Path) -> i64 {
        user_version(&rusqlite::Connection::open(path).unwrap()).unwrap()
    }

    #[test]
    fn migrating_twice_applies_nothing() {
        let mut connection = rusqlite::Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut connection).unwrap(), MIGRATIONS.len());
        assert_eq!(user_version(&connection).unwrap(), SCHEMA_VERSION);
        assert_eq!(migrate(&mut connection).unwrap(), 0);
    }

    #[tokio::test]
    async fn a_database_from_before_leases_is_upgraded() {
        // What an agent built before M0002 left on disk: SeaORM's record of the first migration
        // only, and a message it queued.
        let (_dir, path) = old_database(&format!(
            "{SEAORM_TABLE}; INSERT INTO seaql_migrations VALUES ('history', 1735689600); {} \
             INSERT INTO pending_messages (chat_id, content, source, created_at) \
             VALUES ('7', 'queued by the old agent', 'heartbeat', '2025-01-01T00:00:00.000000+00:00');",
            MIGRATIONS[0].sql
        ));
        let history = History::open(&path).await.unwrap();
        let leased = history.lease_pending(Some("7"), HOUR).await.unwrap();
        assert_eq!(contents(&leased), ["queued by the old agent"]);
        assert!(history.lease_pending(Some("7"), HOUR).await.unwrap().is_empty());
        history.push_pending("7", "queued by the new agent", "subagent").await.unwrap();
        assert_eq!(history.ack_pending(&ids(&leased), Some("7")).await.unwrap(), 1);
        drop(history);
        assert_eq!(version_of(&path), SCHEMA_VERSION);

        // Opening again applies nothing twice.
        let history = History::open(&path).await.unwrap();
        assert_eq!(contents(&history.take_pending(None).await.unwrap()), ["queued by the new agent"]);
        let recorded: Vec<String> = rusqlite::Connection::open(&path)
            .unwrap()
            .prepare("SELECT version FROM seaql_migrations ORDER BY version")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(recorded, ["history", "m0002_pending_lease"], "a rolled-back agent finds nothing to apply");
    }

    #[tokio::test]
    async fn a_database_from_a_newer_agent_is_not_opened() {
        let (_dir, path) = old_database(&format!("PRAGMA user_version = {};", SCHEMA_VERSION + 1));
        assert_eq!(History::open(&path).await.unwrap_err(), HistoryError);
        assert_eq!(version_of(&path), SCHEMA_VERSION + 1);
    }

    #[tokio::test]
    async fn unknown_seaorm_migrations_are_not_guessed_at() {
        // A migration of some other build, and the second migration without the first.
        for recorded in [&["history", "m0099_from_elsewhere"][..], &["m0002_pending_lease"]] {
            let rows: Vec<String> = recorded.iter().map(|name| format!("('{name}', 0)")).collect();
            let (_dir, path) = old_database(&format!(
                "{SEAORM_TABLE}; INSERT INTO seaql_migrations (version, applied_at) VALUES {};",
                rows.join(", ")
            ));
            assert_eq!(History::open(&path).await.unwrap_err(), HistoryError, "{recorded:?}");
            let tables: i64 = rusqlite::Connection::open(&path)
                .unwrap()
                .query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'messages'", [], |row| row.get(0))
                .unwrap();
            assert_eq!((tables, version_of(&path)), (0, 0), "{recorded:?}: nothing was changed");
        }
    }
}
