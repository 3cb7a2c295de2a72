//! [`History`]: the agent's own database (SQLite, WAL, through SeaORM): per-chat message history,
//! the rolling summary compaction leaves behind, and pending messages for the bot to collect.
//!
//! Invariants:
//! - history is ordered by row id (insertion order), never by timestamps;
//! - a chat only ever reads its own rows;
//! - pending messages carry the chat they are for, and a chat only collects its own;
//! - a leased pending message is offered to no one else until its lease runs out, and is deleted
//!   only when acknowledged (or by the old destructive read), so a failed delivery is retried.

use std::path::Path;
use std::time::Duration;

use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectOptions, Database, DatabaseConnection, DbErr, EntityTrait,
    FromQueryResult, PaginatorTrait, QueryFilter, QueryOrder, Set, TransactionTrait,
};
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::inference::{ChatMessage, MessageRole, ToolCall};
use crate::proxy::PendingMessage;

/// The first line of the summary message compaction leaves at the start of a chat.
pub const SUMMARY_MARKER: &str = "[Earlier conversation summary]";
/// The assistant's acknowledgement that follows the summary.
pub const SUMMARY_ACK: &str = "Thanks, I have the context from our previous conversation and will carry on from there.";

/// The agent's database failed. The text is fit for a user; details go to the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("The agent's memory store failed. Please try again; if it keeps failing, the agent needs a repair.")]
#[non_exhaustive]
pub struct HistoryError;

fn db_error(e: DbErr) -> HistoryError {
    tracing::error!(error = %e, "agent database error");
    HistoryError
}

mod message {
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "messages")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub chat_id: String,
        pub role: String,
        pub content: Option<String>,
        pub tool_calls: Option<String>,
        pub tool_call_id: Option<String>,
        pub created_at: String,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

mod pending {
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "pending_messages")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub chat_id: String,
        pub content: String,
        pub source: String,
        pub created_at: String,
        /// Unix time in milliseconds until which the message is leased to a bot; `None` when it
        /// is not leased (or was queued before leases existed).
        pub leased_until: Option<i64>,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

mod summary {
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "summaries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub chat_id: String,
        pub content: String,
        pub updated_at: String,
    }

    impl ActiveModelBehavior for ActiveModel {}
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
#[derive(Debug, Clone)]
pub struct History {
    db: DatabaseConnection,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
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
        History::connect(&format!("sqlite://{}?mode=rwc", path.display())).await
    }

    /// A private in-memory database (tests, embedders that keep nothing).
    pub async fn in_memory() -> Result<History, HistoryError> {
        History::connect("sqlite::memory:").await
    }

    async fn connect(url: &str) -> Result<History, HistoryError> {
        let in_memory = url.contains(":memory:");
        let mut options = ConnectOptions::new(url.to_owned());
        options.sqlx_logging(false).connect_timeout(Duration::from_secs(5));
        // One connection (see `crate::sqlite`): concurrent turns queue for it in the pool instead
        // of sleeping in SQLite's busy handler, which cost ~10 ms per turn at 100 streams; it also
        // keeps `take_pending`'s read-then-delete from losing a race to a writer. In memory, a
        // second connection would be a separate empty database anyway.
        crate::sqlite::configure(&mut options, in_memory, Duration::from_secs(5));
        let db = Database::connect(options).await.map_err(db_error)?;
        Migrator::up(&db, None).await.map_err(db_error)?;
        Ok(History { db })
    }

    /// Appends a message to a chat's history; returns its row id.
    pub async fn append(&self, chat_id: &str, message: &ChatMessage) -> Result<i64, HistoryError> {
        let tool_calls = if message.tool_calls.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&message.tool_calls).unwrap_or_else(|_| "[]".into()))
        };
        let row = message::ActiveModel {
            chat_id: Set(chat_id.to_owned()),
            role: Set(message.role.as_str().to_owned()),
            content: Set(message.content.clone()),
            tool_calls: Set(tool_calls),
            tool_call_id: Set(message.tool_call_id.clone()),
            created_at: Set(now()),
            ..Default::default()
        }
        .insert(&self.db)
        .await
        .map_err(db_error)?;
        Ok(row.id)
    }

    /// The newest `limit` rows of a chat in insertion order, preceded by the summary pair when
    /// an earlier compaction left one.
    pub async fn load(&self, chat_id: &str, limit: u64) -> Result<Vec<StoredMessage>, HistoryError> {
        // One statement for the rows and the summary: every turn starts here, and each statement
        // costs two thread hand-offs to sqlx's connection thread. The summary comes back as a
        // row with id 0 (stored rows start at 1) and role `summary`.
        let statement = sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Sqlite,
            "SELECT * FROM (SELECT id, chat_id, role, content, tool_calls, tool_call_id, created_at \
               FROM messages WHERE chat_id = $1 ORDER BY id DESC LIMIT $2) \
             UNION ALL \
             SELECT 0, chat_id, 'summary', content, NULL, NULL, updated_at FROM summaries WHERE chat_id = $1",
            [chat_id.into(), <i64 as TryFrom<u64>>::try_from(limit).unwrap_or(i64::MAX).into()],
        );
        let rows = message::Model::find_by_statement(statement).all(&self.db).await.map_err(db_error)?;
        let (summary, mut rows): (Vec<_>, Vec<_>) = rows.into_iter().partition(|row| row.id == 0);
        rows.sort_by_key(|row| row.id);
        let mut out = match summary.into_iter().next().and_then(|row| row.content) {
            Some(text) => summary_pair(text),
            None => Vec::new(),
        };
        out.extend(rows.into_iter().map(to_stored));
        Ok(out)
    }

    /// The newest row of a chat.
    pub async fn last(&self, chat_id: &str) -> Result<Option<StoredMessage>, HistoryError> {
        let row = message::Entity::find()
            .filter(message::Column::ChatId.eq(chat_id))
            .order_by_desc(message::Column::Id)
            .one(&self.db)
            .await
            .map_err(db_error)?;
        Ok(row.map(to_stored))
    }

    /// Every row of a chat (no summary), in insertion order.
    pub async fn rows(&self, chat_id: &str) -> Result<Vec<StoredMessage>, HistoryError> {
        let rows = message::Entity::find()
            .filter(message::Column::ChatId.eq(chat_id))
            .order_by_asc(message::Column::Id)
            .all(&self.db)
            .await
            .map_err(db_error)?;
        Ok(rows.into_iter().map(to_stored).collect())
    }

    /// The summary compaction left for a chat, if any.
    pub async fn summary(&self, chat_id: &str) -> Result<Option<String>, HistoryError> {
        let row = summary::Entity::find_by_id(chat_id.to_owned()).one(&self.db).await.map_err(db_error)?;
        Ok(row.map(|r| r.content))
    }

    /// Replaces every row of the chat older than row `first_kept` with `summary` (atomically).
    pub async fn replace_with_summary(
        &self,
        chat_id: &str,
        first_kept: i64,
        summary: &str,
    ) -> Result<(), HistoryError> {
        let tx = self.db.begin().await.map_err(db_error)?;
        message::Entity::delete_many()
            .filter(message::Column::ChatId.eq(chat_id))
            .filter(message::Column::Id.lt(first_kept))
            .exec(&tx)
            .await
            .map_err(db_error)?;
        summary::Entity::delete_by_id(chat_id.to_owned()).exec(&tx).await.map_err(db_error)?;
        summary::ActiveModel {
            chat_id: Set(chat_id.to_owned()),
            content: Set(summary.to_owned()),
            updated_at: Set(now()),
        }
        .insert(&tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
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
        let deleted = message::Entity::delete_many()
            .filter(message::Column::ChatId.eq(chat_id))
            .exec(&self.db)
            .await
            .map_err(db_error)?
            .rows_affected;
        summary::Entity::delete_by_id(chat_id.to_owned()).exec(&self.db).await.map_err(db_error)?;
        Ok(deleted)
    }

    /// Number of history rows of a chat.
    pub async fn count(&self, chat_id: &str) -> Result<u64, HistoryError> {
        message::Entity::find().filter(message::Column::ChatId.eq(chat_id)).count(&self.db).await.map_err(db_error)
    }

    /// Queues a message for the bot to deliver to `chat_id`.
    pub async fn push_pending(&self, chat_id: &str, content: &str, source: &str) -> Result<(), HistoryError> {
        pending::ActiveModel {
            chat_id: Set(chat_id.to_owned()),
            content: Set(content.to_owned()),
            source: Set(source.to_owned()),
            created_at: Set(now()),
            ..Default::default()
        }
        .insert(&self.db)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Takes (returns and deletes) the queued messages of `chat_id`, or of every chat when `None`,
    /// oldest first, leased or not: the destructive read of clients that predate leases. The
    /// messages carry no id, since there is nothing left to acknowledge.
    pub async fn take_pending(&self, chat_id: Option<&str>) -> Result<Vec<PendingMessage>, HistoryError> {
        let tx = self.db.begin().await.map_err(db_error)?;
        let mut query = pending::Entity::find().order_by_asc(pending::Column::Id);
        if let Some(chat) = chat_id {
            query = query.filter(pending::Column::ChatId.eq(chat));
        }
        let rows = query.all(&tx).await.map_err(db_error)?;
        if let Some(last) = rows.last() {
            let mut delete = pending::Entity::delete_many().filter(pending::Column::Id.lte(last.id));
            if let Some(chat) = chat_id {
                delete = delete.filter(pending::Column::ChatId.eq(chat));
            }
            delete.exec(&tx).await.map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(rows.into_iter().map(|r| PendingMessage::new(r.chat_id, r.content, r.source, r.created_at)).collect())
    }

    /// Leases the queued messages of `chat_id` (every chat when `None`) that are not leased or
    /// whose lease ran out: they are returned oldest first, with their ids, and not offered again
    /// until `lease` has passed. They stay queued until [`History::ack_pending`] deletes them, so
    /// a bot that fails to deliver them gets them again after the lease.
    pub async fn lease_pending(
        &self,
        chat_id: Option<&str>,
        lease: Duration,
    ) -> Result<Vec<PendingMessage>, HistoryError> {
        let now = chrono::Utc::now().timestamp_millis();
        let until = now.saturating_add(<i64 as TryFrom<u128>>::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        let free =
            Condition::any().add(pending::Column::LeasedUntil.is_null()).add(pending::Column::LeasedUntil.lte(now));
        let mut update =
            pending::Entity::update_many().col_expr(pending::Column::LeasedUntil, Expr::value(until)).filter(free);
        if let Some(chat) = chat_id {
            update = update.filter(pending::Column::ChatId.eq(chat));
        }
        // One conditional `UPDATE … RETURNING`: choosing the free rows and leasing them cannot be
        // split by another request, so two bots never lease the same message at once.
        let mut rows = update.exec_with_returning(&self.db).await.map_err(db_error)?;
        rows.sort_by_key(|r| r.id);
        Ok(rows
            .into_iter()
            .map(|r| PendingMessage::new(r.chat_id, r.content, r.source, r.created_at).with_id(r.id))
            .collect())
    }

    /// Deletes the queued messages `ids` (only those of `chat_id` when given), whether or not
    /// their lease ran out; returns how many were deleted. Unknown ids are ignored, so
    /// acknowledging twice is harmless.
    pub async fn ack_pending(&self, ids: &[i64], chat_id: Option<&str>) -> Result<u64, HistoryError> {
        let mut deleted = 0;
        // Chunks keep each statement well under SQLite's limit on bound parameters. They need
        // no transaction: a partial failure leaves messages that are simply delivered again.
        for chunk in ids.chunks(500) {
            let mut delete = pending::Entity::delete_many().filter(pending::Column::Id.is_in(chunk.iter().copied()));
            if let Some(chat) = chat_id {
                delete = delete.filter(pending::Column::ChatId.eq(chat));
            }
            deleted += delete.exec(&self.db).await.map_err(db_error)?.rows_affected;
        }
        Ok(deleted)
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

fn to_stored(row: message::Model) -> StoredMessage {
    let role = MessageRole::parse(&row.role).unwrap_or(MessageRole::User);
    let tool_calls: Vec<ToolCall> =
        row.tool_calls.as_deref().and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default();
    let mut message = match role {
        MessageRole::Tool => ChatMessage::tool(row.tool_call_id.clone().unwrap_or_default(), ""),
        MessageRole::Assistant => ChatMessage::assistant(None, tool_calls),
        MessageRole::System => ChatMessage::system(""),
        MessageRole::User => ChatMessage::user(""),
    };
    message.content = row.content;
    StoredMessage { id: row.id, message }
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
    async fn many_acknowledgements_at_once_are_fine() {
        let history = History::in_memory().await.unwrap();
        for i in 0..1200 {
            history.push_pending("7", &format!("m{i}"), "subagent").await.unwrap();
        }
        let leased = history.lease_pending(Some("7"), HOUR).await.unwrap();
        assert_eq!(leased.len(), 1200);
        assert_eq!(history.ack_pending(&ids(&leased), Some("7")).await.unwrap(), 1200);
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
