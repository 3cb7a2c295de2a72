//! [`History`]: the agent's own database (SQLite, WAL; SeaORM migrates it, rusqlite runs its
//! statements): per-chat message history,
//! the rolling summary compaction leaves behind, and pending messages for the bot to collect.
//!
//! Invariants:
//! - history is ordered by row id (insertion order), never by timestamps;
//! - a chat only ever reads its own rows;
//! - pending messages carry the chat they are for, and a chat only collects its own;
//! - a leased pending message is offered to no one else until its lease runs out, and is deleted
//!   only when acknowledged (or by the old destructive read), so a failed delivery is retried.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::OptionalExtension as _;
use sea_orm::{ConnectOptions, Database, DbErr};
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

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

/// The agent's database failed. The text is fit for a user; details go to the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("The agent's memory store failed. Please try again; if it keeps failing, the agent needs a repair.")]
#[non_exhaustive]
pub struct HistoryError;

fn db_error(e: DbErr) -> HistoryError {
    tracing::error!(error = %e, "agent database error");
    HistoryError
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
    ChatId,
    Role,
    Content,
    ToolCalls,
    ToolCallId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum PendingMessages {
    Table,
    Id,
    ChatId,
    Content,
    Source,
    CreatedAt,
    LeasedUntil,
}

#[derive(DeriveIden)]
enum Summaries {
    Table,
    ChatId,
    Content,
    UpdatedAt,
}

struct M0001AgentTables;

impl MigrationName for M0001AgentTables {
    // The name `DeriveMigrationName` gave it (the file stem): existing databases record the
    // migration under it, so it must never change.
    fn name(&self) -> &str {
        "history"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0001AgentTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Messages::Table)
                .if_not_exists()
                .col(pk_auto(Messages::Id))
                .col(string(Messages::ChatId))
                .col(string(Messages::Role))
                .col(text_null(Messages::Content))
                .col(text_null(Messages::ToolCalls))
                .col(string_null(Messages::ToolCallId))
                .col(string(Messages::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("idx_messages_chat")
                .table(Messages::Table)
                .col(Messages::ChatId)
                .col(Messages::Id)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(PendingMessages::Table)
                .if_not_exists()
                .col(pk_auto(PendingMessages::Id))
                .col(string(PendingMessages::ChatId))
                .col(text(PendingMessages::Content))
                .col(string(PendingMessages::Source))
                .col(string(PendingMessages::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Summaries::Table)
                .if_not_exists()
                .col(string(Summaries::ChatId).primary_key())
                .col(text(Summaries::Content))
                .col(string(Summaries::UpdatedAt))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(Summaries::Table).to_owned()).await?;
        m.drop_table(Table::drop().table(PendingMessages::Table).to_owned()).await?;
        m.drop_table(Table::drop().table(Messages::Table).to_owned()).await
    }
}

/// Pending messages can be leased (`GET /pending?lease=`) instead of deleted on read.
struct M0002PendingLease;

impl MigrationName for M0002PendingLease {
    fn name(&self) -> &str {
        "m0002_pending_lease"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0002PendingLease {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // Nullable, so the rows an older agent queued are simply not leased.
        m.alter_table(
            Table::alter()
                .table(PendingMessages::Table)
                .add_column(big_integer_null(PendingMessages::LeasedUntil))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table(PendingMessages::Table).drop_column(PendingMessages::LeasedUntil).to_owned())
            .await
    }
}

struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(M0001AgentTables), Box::new(M0002PendingLease)]
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
/// statements take tens of microseconds, while sqlx's SQLite driver (SeaORM) runs each on its own
/// thread, and the two thread hand-offs per statement, queued behind every other turn's, were
/// most of the latency the agent added to a turn at 100 concurrent chats. SeaORM still creates
/// and migrates the schema at open, so the migrations stay versioned like the platform's.
#[derive(Debug, Clone)]
pub struct History {
    connection: Arc<Mutex<rusqlite::Connection>>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
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
    /// Opens (creating if needed) the SQLite file at `path` in WAL mode and creates the tables.
    pub async fn open(path: &Path) -> Result<History, HistoryError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                tracing::error!(error = %e, path = %parent.display(), "cannot create the database directory");
                HistoryError
            })?;
        }
        let connection = rusqlite::Connection::open(path).map_err(sql_error)?;
        History::migrate_and_wrap(connection, &format!("sqlite://{}?mode=rwc", path.display()), false).await
    }

    /// A private in-memory database (tests, embedders that keep nothing).
    pub async fn in_memory() -> Result<History, HistoryError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // A named, shared-cache database, so the migrating SeaORM connection and ours see the
        // same one; it lives as long as our connection.
        let name = format!("baal-history-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let connection =
            rusqlite::Connection::open(format!("file:{name}?mode=memory&cache=shared")).map_err(sql_error)?;
        // sqlx needs the `file:` form too: a plain name is a different database to SQLite.
        History::migrate_and_wrap(connection, &format!("sqlite:file:{name}?mode=memory&cache=shared"), true).await
    }

    async fn migrate_and_wrap(
        connection: rusqlite::Connection,
        url: &str,
        in_memory: bool,
    ) -> Result<History, HistoryError> {
        let busy_timeout = Duration::from_secs(5);
        let mut options = ConnectOptions::new(url.to_owned());
        options.sqlx_logging(false).connect_timeout(busy_timeout);
        crate::sqlite::configure(&mut options, in_memory, busy_timeout);
        let db = Database::connect(options).await.map_err(db_error)?;
        Migrator::up(&db, None).await.map_err(db_error)?;
        drop(db);

        connection.busy_timeout(busy_timeout).map_err(sql_error)?;
        if !in_memory {
            // WAL is a property of the file (SeaORM's connection set it); `synchronous` is not.
            connection.pragma_update(None, "journal_mode", "WAL").map_err(sql_error)?;
            connection.pragma_update(None, "synchronous", "NORMAL").map_err(sql_error)?;
        }
        // See `crate::sqlite::stable_query_plans`: `LIMIT ?` would recompile `load` every turn.
        connection.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map_err(sql_error)?;
        Ok(History { connection: Arc::new(Mutex::new(connection)) })
    }

    /// Runs `work` on the connection. Never held across an await.
    fn with<T>(&self, work: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T>) -> Result<T, HistoryError> {
        // A panic while the lock was held cannot have left a transaction open (rusqlite rolls
        // back on drop), so a poisoned lock still guards a usable connection.
        let mut connection = self.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        work(&mut connection).map_err(sql_error)
    }

    /// Appends a message to a chat's history; returns its row id.
    pub async fn append(&self, chat_id: &str, message: &ChatMessage) -> Result<i64, HistoryError> {
        let tool_calls = if message.tool_calls.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&message.tool_calls).unwrap_or_else(|_| "[]".into()))
        };
        self.with(|c| {
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
                now()
            ])
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

    /// Number of history rows of a chat.
    pub async fn count(&self, chat_id: &str) -> Result<u64, HistoryError> {
        let count: i64 = self.with(|c| {
            c.prepare_cached("SELECT COUNT(*) FROM messages WHERE chat_id = ?1")?.query_row([chat_id], |row| row.get(0))
        })?;
        Ok(count.unsigned_abs())
    }

    /// Queues a message for the bot to deliver to `chat_id`.
    pub async fn push_pending(&self, chat_id: &str, content: &str, source: &str) -> Result<(), HistoryError> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO pending_messages (chat_id, content, source, created_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(rusqlite::params![chat_id, content, source, now()])
            .map(drop)
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
    use sea_orm::ConnectionTrait;

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
        for i in 0..250 {
            history.push_pending("7", &format!("m{i}"), "subagent").await.unwrap();
        }
        let mut all = Vec::new();
        let mut sizes = Vec::new();
        loop {
            let batch = history.lease_pending(Some("7"), HOUR).await.unwrap();
            if batch.is_empty() {
                break;
            }
            sizes.push(batch.len());
            all.extend(batch);
        }
        assert_eq!(sizes, [LEASE_BATCH, LEASE_BATCH, 50]);
        let expected: Vec<String> = (0..250).map(|i| format!("m{i}")).collect();
        assert_eq!(contents(&all), expected.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(history.ack_pending(&ids(&all), Some("7")).await.unwrap(), 250);
        assert!(history.take_pending(None).await.unwrap().is_empty());
    }

    #[test]
    fn the_first_migration_keeps_the_name_databases_recorded() {
        // Agents before M0002 derived the name, which is the file stem.
        #[derive(DeriveMigrationName)]
        struct Derived;
        assert_eq!(M0001AgentTables.name(), Derived.name());
    }

    #[tokio::test]
    async fn a_database_from_before_leases_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        {
            // What an agent built before M0002 left on disk: the first migration only, and a
            // message it queued.
            let db = Database::connect(format!("sqlite://{}?mode=rwc", path.display())).await.unwrap();
            Migrator::up(&db, Some(1)).await.unwrap();
            db.execute_unprepared(
                "INSERT INTO pending_messages (chat_id, content, source, created_at) \
                 VALUES ('7', 'queued by the old agent', 'heartbeat', '2025-01-01T00:00:00.000000+00:00')",
            )
            .await
            .unwrap();
            assert!(db.execute_unprepared("SELECT leased_until FROM pending_messages").await.is_err());
            db.close().await.unwrap();
        }
        let history = History::open(&path).await.unwrap();
        let leased = history.lease_pending(Some("7"), HOUR).await.unwrap();
        assert_eq!(contents(&leased), ["queued by the old agent"]);
        assert!(history.lease_pending(Some("7"), HOUR).await.unwrap().is_empty());
        history.push_pending("7", "queued by the new agent", "subagent").await.unwrap();
        assert_eq!(history.ack_pending(&ids(&leased), Some("7")).await.unwrap(), 1);
        drop(history);

        // Opening again applies nothing twice.
        let history = History::open(&path).await.unwrap();
        assert_eq!(contents(&history.take_pending(None).await.unwrap()), ["queued by the new agent"]);
        let db = Database::connect(format!("sqlite://{}", path.display())).await.unwrap();
        assert!(Migrator::get_pending_migrations(&db).await.unwrap().is_empty());
    }
}
