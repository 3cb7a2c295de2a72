//! Schema migrations. They run every time a store is opened, so an older database always gains
//! what a newer release added (the Python Baal had no migrations, so new columns never reached
//! old databases). Never edit a released migration: add a new one.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, Statement, Value};
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Every migration, oldest first.
pub(crate) struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(M0001Initial),
            Box::new(M0002PayerAndLease),
            Box::new(M0003MeteringAndPolicy),
            Box::new(M0004SeenUpdates),
            Box::new(M0005PythonImport),
        ]
    }
}

#[derive(DeriveMigrationName)]
struct M0001Initial;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Username,
    ApiKeySealed,
    ShowTools,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Agents {
    Table,
    Id,
    OwnerId,
    Name,
    SystemPrompt,
    Model,
    Status,
    Deleted,
    InstanceHash,
    CrnUrl,
    VmUrl,
    VmHost,
    SshPort,
    SshHostKey,
    TokenSealed,
    Slug,
    VisitorTools,
    CreatedAt,
    UpdatedAt,
    // Added by M0002.
    Payer,
    LeaseHolder,
    LeaseUntil,
    // Added by M0003.
    Sharing,
    DailyTokenBudget,
    VisitorDailyMessages,
    UsageCursor,
    BudgetNoticeDay,
    BudgetNoticeLevel,
    // Added by M0005.
    Runtime,
    PythonId,
}

#[derive(DeriveIden)]
enum DailyUsage {
    Table,
    UserId,
    Day,
    Messages,
}

#[derive(DeriveIden)]
enum DeploymentEvents {
    Table,
    Id,
    AgentId,
    Step,
    Outcome,
    Detail,
    CreatedAt,
}

#[derive(DeriveIden)]
enum PoolVms {
    Table,
    Id,
    InstanceHash,
    CrnUrl,
    VmUrl,
    VmHost,
    SshPort,
    SshHostKey,
    Status,
    AgentId,
    CreatedAt,
    ClaimedAt,
}

#[derive(DeriveIden)]
enum Kv {
    Table,
    Namespace,
    Key,
    Value,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for M0001Initial {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Users::Table)
                .if_not_exists()
                .col(big_integer(Users::Id).primary_key())
                .col(string_null(Users::Username))
                .col(blob_null(Users::ApiKeySealed))
                .col(boolean(Users::ShowTools).default(true))
                .col(timestamp_with_time_zone(Users::CreatedAt))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Agents::Table)
                .if_not_exists()
                .col(big_pk_auto(Agents::Id))
                .col(big_integer(Agents::OwnerId))
                .col(string(Agents::Name))
                .col(text(Agents::SystemPrompt))
                .col(string(Agents::Model))
                .col(string(Agents::Status).default("pending"))
                .col(boolean(Agents::Deleted).default(false))
                .col(string_null(Agents::InstanceHash))
                .col(string_null(Agents::CrnUrl))
                .col(string_null(Agents::VmUrl))
                .col(string_null(Agents::VmHost))
                .col(integer_null(Agents::SshPort))
                .col(text_null(Agents::SshHostKey))
                .col(blob_null(Agents::TokenSealed))
                .col(string_uniq(Agents::Slug))
                .col(text(Agents::VisitorTools).default("[]"))
                .col(timestamp_with_time_zone(Agents::CreatedAt))
                .col(timestamp_with_time_zone(Agents::UpdatedAt))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_agents_owner")
                        .from(Agents::Table, Agents::OwnerId)
                        .to(Users::Table, Users::Id),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("idx_agents_owner")
                .table(Agents::Table)
                .col(Agents::OwnerId)
                .to_owned(),
        )
        .await?;

        // No foreign key to users: counting a message must never fail because the user row is
        // written by another step; an orphan counter row is harmless.
        m.create_table(
            Table::create()
                .table(DailyUsage::Table)
                .if_not_exists()
                .col(big_integer(DailyUsage::UserId))
                .col(date(DailyUsage::Day))
                .col(integer(DailyUsage::Messages).default(0))
                .primary_key(Index::create().col(DailyUsage::UserId).col(DailyUsage::Day))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(DeploymentEvents::Table)
                .if_not_exists()
                .col(big_pk_auto(DeploymentEvents::Id))
                .col(big_integer(DeploymentEvents::AgentId))
                .col(string(DeploymentEvents::Step))
                .col(string(DeploymentEvents::Outcome))
                .col(text_null(DeploymentEvents::Detail))
                .col(timestamp_with_time_zone(DeploymentEvents::CreatedAt))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_deployment_events_agent")
                        .from(DeploymentEvents::Table, DeploymentEvents::AgentId)
                        .to(Agents::Table, Agents::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("idx_deployment_events_agent")
                .table(DeploymentEvents::Table)
                .col(DeploymentEvents::AgentId)
                .col(DeploymentEvents::Id)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(PoolVms::Table)
                .if_not_exists()
                .col(big_pk_auto(PoolVms::Id))
                .col(string_null(PoolVms::InstanceHash))
                .col(string_null(PoolVms::CrnUrl))
                .col(string_null(PoolVms::VmUrl))
                .col(string_null(PoolVms::VmHost))
                .col(integer_null(PoolVms::SshPort))
                .col(text_null(PoolVms::SshHostKey))
                .col(string(PoolVms::Status).default("provisioning"))
                .col(big_integer_null(PoolVms::AgentId))
                .col(timestamp_with_time_zone(PoolVms::CreatedAt))
                .col(timestamp_with_time_zone_null(PoolVms::ClaimedAt))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_pool_vms_agent")
                        .from(PoolVms::Table, PoolVms::AgentId)
                        .to(Agents::Table, Agents::Id)
                        .on_delete(ForeignKeyAction::SetNull),
                )
                .to_owned(),
        )
        .await?;
        // Unique, yet many rows may have no hash yet: both backends let NULLs repeat in a unique index.
        m.create_index(
            Index::create()
                .if_not_exists()
                .unique()
                .name("idx_pool_vms_instance_hash")
                .table(PoolVms::Table)
                .col(PoolVms::InstanceHash)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("idx_pool_vms_status")
                .table(PoolVms::Table)
                .col(PoolVms::Status)
                .col(PoolVms::Id)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Kv::Table)
                .if_not_exists()
                .col(string(Kv::Namespace))
                .col(string(Kv::Key))
                .col(blob(Kv::Value))
                .col(timestamp_with_time_zone(Kv::UpdatedAt))
                .primary_key(Index::create().col(Kv::Namespace).col(Kv::Key))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Kv::Table.into_iden(),
            PoolVms::Table.into_iden(),
            DeploymentEvents::Table.into_iden(),
            DailyUsage::Table.into_iden(),
            Agents::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}

/// Who pays for an agent and who deploys it become columns of `agents`; until now they were rows
/// of the key-value area (`platform.payer`: agent id → `owner`/`operator`;
/// `platform.deploy_lease`: agent id → RFC 3339 time of the job's last sign of life).
struct M0002PayerAndLease;

/// The key-value namespaces M0002 empties.
const PAYER_NAMESPACE: &str = "platform.payer";
const LEASE_NAMESPACE: &str = "platform.deploy_lease";
/// Holder of a lease carried over from the key-value area, which named no holder: an id no
/// process takes, so the lease holds until it runs out.
const CARRIED_LEASE_HOLDER: &str = "baal-before-m0002";
/// How long a carried-over lease lasts after its last sign of life: the platform's default
/// `deploy_lease`, which is how long earlier releases waited before resuming a deployment.
const CARRIED_LEASE: chrono::Duration = chrono::Duration::seconds(120);

// Named by hand: `DeriveMigrationName` names a migration after its file, and M0001 already has
// this file's name (`migrations`) in every database.
impl MigrationName for M0002PayerAndLease {
    fn name(&self) -> &str {
        "m0002_payer_and_lease"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0002PayerAndLease {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one thing at a time.
        for column in [
            string_null(Agents::Payer),
            string_null(Agents::LeaseHolder),
            timestamp_with_time_zone_null(Agents::LeaseUntil),
        ] {
            m.alter_table(Table::alter().table(Agents::Table).add_column(column).to_owned()).await?;
        }
        let db = m.get_connection();
        for (key, value) in kv_rows(db, PAYER_NAMESPACE).await? {
            let moved = match payer_row(&key, &value) {
                Ok((agent, payer)) => set_agent(db, agent, "payer = $1", [payer.into()]).await?,
                Err(problem) => Err(problem),
            };
            settle_kv_row(db, PAYER_NAMESPACE, &key, moved).await?;
        }
        for (key, value) in kv_rows(db, LEASE_NAMESPACE).await? {
            let moved = match lease_row(&key, &value) {
                Ok((agent, until)) => {
                    set_agent(
                        db,
                        agent,
                        "lease_holder = $1, lease_until = $2",
                        [CARRIED_LEASE_HOLDER.into(), until.into()],
                    )
                    .await?
                }
                Err(problem) => Err(problem),
            };
            settle_kv_row(db, LEASE_NAMESPACE, &key, moved).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        // Payers go back where earlier releases look for them; leases are only ever current, and
        // a rolled-back platform resumes what no lease covers.
        let rows = db.query_all_raw(statement(db, "SELECT id, payer FROM agents WHERE payer IS NOT NULL", [])).await?;
        for row in rows {
            let id: i64 = row.try_get("", "id")?;
            let payer: String = row.try_get("", "payer")?;
            let key = id.to_string();
            db.execute_raw(statement(
                db,
                r#"DELETE FROM kv WHERE namespace = $1 AND "key" = $2"#,
                [PAYER_NAMESPACE.into(), key.clone().into()],
            ))
            .await?;
            db.execute_raw(statement(
                db,
                r#"INSERT INTO kv (namespace, "key", value, updated_at) VALUES ($1, $2, $3, $4)"#,
                [PAYER_NAMESPACE.into(), key.into(), payer.into_bytes().into(), Utc::now().into()],
            ))
            .await?;
        }
        for column in [Agents::Payer, Agents::LeaseHolder, Agents::LeaseUntil] {
            m.alter_table(Table::alter().table(Agents::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }

    // The columns, the moved rows and the record of this migration land together or not at all
    // (SQLite, too, changes its schema inside a transaction).
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

/// Metering and the owner's say: the tokens every agent used (`agent_usage`), messages per
/// visitor per agent (`visitor_messages`), replaced share-link slugs (`retired_slugs`), and per
/// agent its policy, its usage cursor and the last budget notice sent.
struct M0003MeteringAndPolicy;

#[derive(DeriveIden)]
enum AgentUsage {
    Table,
    AgentId,
    Day,
    UserId,
    Cause,
    Model,
    Payer,
    PromptTokens,
    CompletionTokens,
    Calls,
    Estimated,
}

#[derive(DeriveIden)]
enum VisitorMessages {
    Table,
    AgentId,
    UserId,
    Day,
    Messages,
}

#[derive(DeriveIden)]
enum RetiredSlugs {
    Table,
    Slug,
    AgentId,
    RetiredAt,
}

impl MigrationName for M0003MeteringAndPolicy {
    fn name(&self) -> &str {
        "m0003_metering_and_policy"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0003MeteringAndPolicy {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // Every existing agent gets the behaviour it had before owners could choose: shared, no
        // budget, no visitor limit, no usage stored yet, no notice sent.
        for column in [
            boolean(Agents::Sharing).default(true).to_owned(),
            big_integer_null(Agents::DailyTokenBudget),
            integer_null(Agents::VisitorDailyMessages),
            big_integer(Agents::UsageCursor).default(0).to_owned(),
            date_null(Agents::BudgetNoticeDay),
            small_integer(Agents::BudgetNoticeLevel).default(0).to_owned(),
        ] {
            m.alter_table(Table::alter().table(Agents::Table).add_column(column).to_owned()).await?;
        }

        // The key is the whole row's identity, so adding a page is one insert-or-add per group.
        m.create_table(
            Table::create()
                .table(AgentUsage::Table)
                .if_not_exists()
                .col(big_integer(AgentUsage::AgentId))
                .col(date(AgentUsage::Day))
                .col(big_integer(AgentUsage::UserId))
                .col(string(AgentUsage::Cause))
                .col(string(AgentUsage::Model))
                .col(string(AgentUsage::Payer))
                .col(big_integer(AgentUsage::PromptTokens).default(0))
                .col(big_integer(AgentUsage::CompletionTokens).default(0))
                .col(big_integer(AgentUsage::Calls).default(0))
                .col(boolean(AgentUsage::Estimated).default(false))
                .primary_key(
                    Index::create()
                        .col(AgentUsage::AgentId)
                        .col(AgentUsage::Day)
                        .col(AgentUsage::UserId)
                        .col(AgentUsage::Cause)
                        .col(AgentUsage::Model)
                        .col(AgentUsage::Payer),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_agent_usage_agent")
                        .from(AgentUsage::Table, AgentUsage::AgentId)
                        .to(Agents::Table, Agents::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        // Views of every agent read a range of days, and pruning deletes the oldest ones.
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("idx_agent_usage_day")
                .table(AgentUsage::Table)
                .col(AgentUsage::Day)
                .to_owned(),
        )
        .await?;

        // No foreign key, as for `daily_usage`: counting a visitor's message must never fail on
        // another table's row; an orphan counter is harmless.
        m.create_table(
            Table::create()
                .table(VisitorMessages::Table)
                .if_not_exists()
                .col(big_integer(VisitorMessages::AgentId))
                .col(big_integer(VisitorMessages::UserId))
                .col(date(VisitorMessages::Day))
                .col(integer(VisitorMessages::Messages).default(0))
                .primary_key(
                    Index::create()
                        .col(VisitorMessages::AgentId)
                        .col(VisitorMessages::UserId)
                        .col(VisitorMessages::Day),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("idx_visitor_messages_day")
                .table(VisitorMessages::Table)
                .col(VisitorMessages::Day)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(RetiredSlugs::Table)
                .if_not_exists()
                .col(string(RetiredSlugs::Slug).primary_key())
                .col(big_integer(RetiredSlugs::AgentId))
                .col(timestamp_with_time_zone(RetiredSlugs::RetiredAt))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_retired_slugs_agent")
                        .from(RetiredSlugs::Table, RetiredSlugs::AgentId)
                        .to(Agents::Table, Agents::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // Earlier releases know nothing of these; what an owner chose and the usage stored are
        // lost, and every agent is shared again, as it was then.
        for table in
            [RetiredSlugs::Table.into_iden(), VisitorMessages::Table.into_iden(), AgentUsage::Table.into_iden()]
        {
            m.drop_table(Table::drop().table(table).if_exists().to_owned()).await?;
        }
        for column in [
            Agents::Sharing,
            Agents::DailyTokenBudget,
            Agents::VisitorDailyMessages,
            Agents::UsageCursor,
            Agents::BudgetNoticeDay,
            Agents::BudgetNoticeLevel,
        ] {
            m.alter_table(Table::alter().table(Agents::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

/// The updates a front-end took from its transport (`seen_updates`: chat, kind, id, when), so a
/// second copy (the same message again after a crash, by catch-up) is dropped.
struct M0004SeenUpdates;

#[derive(DeriveIden)]
enum SeenUpdates {
    Table,
    ChatId,
    Kind,
    UpdateId,
    SeenAt,
}

impl MigrationName for M0004SeenUpdates {
    fn name(&self) -> &str {
        "m0004_seen_updates"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0004SeenUpdates {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // The key is the update's identity, so "first time?" is one insert that does nothing on
        // a conflict; no foreign key: a chat is not a row of ours.
        m.create_table(
            Table::create()
                .table(SeenUpdates::Table)
                .if_not_exists()
                .col(big_integer(SeenUpdates::ChatId))
                .col(string(SeenUpdates::Kind))
                .col(big_integer(SeenUpdates::UpdateId))
                .col(timestamp_with_time_zone(SeenUpdates::SeenAt))
                .primary_key(Index::create().col(SeenUpdates::ChatId).col(SeenUpdates::Kind).col(SeenUpdates::UpdateId))
                .to_owned(),
        )
        .await?;
        // Pruning deletes the oldest rows.
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("idx_seen_updates_seen_at")
                .table(SeenUpdates::Table)
                .col(SeenUpdates::SeenAt)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(SeenUpdates::Table).if_exists().to_owned()).await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

/// Agents imported from the Python Baal: what program serves each (`runtime`, `baal` for every
/// agent before), and its id in the Python Baal's database (`python_id`, unique: an import
/// matches on it, so a second one changes nothing).
struct M0005PythonImport;

impl MigrationName for M0005PythonImport {
    fn name(&self) -> &str {
        "m0005_python_import"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0005PythonImport {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for column in [string(Agents::Runtime).default("baal").to_owned(), big_integer_null(Agents::PythonId)] {
            m.alter_table(Table::alter().table(Agents::Table).add_column(column).to_owned()).await?;
        }
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("idx_agents_python_id")
                .table(Agents::Table)
                .col(Agents::PythonId)
                .unique()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(Index::drop().name("idx_agents_python_id").table(Agents::Table).to_owned()).await?;
        for column in [Agents::Runtime, Agents::PythonId] {
            m.alter_table(Table::alter().table(Agents::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

fn statement(db: &SchemaManagerConnection<'_>, sql: &str, values: impl IntoIterator<Item = Value>) -> Statement {
    Statement::from_sql_and_values(db.get_database_backend(), sql, values)
}

/// Every `(key, value)` of `namespace`.
async fn kv_rows(db: &SchemaManagerConnection<'_>, namespace: &str) -> Result<Vec<(String, Vec<u8>)>, DbErr> {
    let rows = db
        .query_all_raw(statement(db, r#"SELECT "key", value FROM kv WHERE namespace = $1"#, [namespace.into()]))
        .await?;
    rows.into_iter().map(|row| Ok((row.try_get("", "key")?, row.try_get("", "value")?))).collect()
}

/// Sets `assignments` (`$1`, `$2`, … bound to `values`) on agent `id`; `Err` with the reason when
/// no such agent exists.
async fn set_agent<const N: usize>(
    db: &SchemaManagerConnection<'_>,
    id: i64,
    assignments: &str,
    values: [Value; N],
) -> Result<Result<(), String>, DbErr> {
    let sql = format!("UPDATE agents SET {assignments} WHERE id = ${}", N + 1);
    let values = values.into_iter().chain([id.into()]);
    let updated = db.execute_raw(statement(db, &sql, values)).await?;
    Ok(if updated.rows_affected() == 0 { Err(format!("no agent {id}")) } else { Ok(()) })
}

/// Deletes a key-value row that was moved; one that could not be understood stays, logged, so
/// that nothing is lost and an operator can look at it.
async fn settle_kv_row(
    db: &SchemaManagerConnection<'_>,
    namespace: &str,
    key: &str,
    moved: Result<(), String>,
) -> Result<(), DbErr> {
    match moved {
        Ok(()) => {
            db.execute_raw(statement(
                db,
                r#"DELETE FROM kv WHERE namespace = $1 AND "key" = $2"#,
                [namespace.into(), key.into()],
            ))
            .await?;
        }
        Err(problem) => {
            tracing::warn!(namespace, key = %key.escape_debug(), problem, "left a key-value row the migration to columns could not understand");
        }
    }
    Ok(())
}

/// The agent id a key names.
fn agent_key(key: &str) -> Result<i64, String> {
    key.parse().map_err(|_| format!("the key {:?} is not an agent id", short(key)))
}

fn utf8(value: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(value).map_err(|_| "the value is not UTF-8".to_owned())
}

/// At most 40 characters of a value, for a log line.
fn short(text: &str) -> String {
    text.chars().take(40).collect()
}

fn payer_row(key: &str, value: &[u8]) -> Result<(i64, String), String> {
    let agent = agent_key(key)?;
    match utf8(value)? {
        word @ ("owner" | "operator") => Ok((agent, word.to_owned())),
        other => Err(format!("the payer {:?} is neither owner nor operator", short(other))),
    }
}

fn lease_row(key: &str, value: &[u8]) -> Result<(i64, DateTime<Utc>), String> {
    let agent = agent_key(key)?;
    let raw = utf8(value)?;
    let refreshed = DateTime::parse_from_rfc3339(raw.trim())
        .map_err(|err| format!("the lease time {:?} is not RFC 3339: {err}", short(raw)))?;
    let until = refreshed.with_timezone(&Utc).checked_add_signed(CARRIED_LEASE).unwrap_or(DateTime::<Utc>::MAX_UTC);
    Ok((agent, until))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AgentId, AgentPolicy, AgentUsage, Lease, NewAgent, Payer};
    use crate::store::{AgentFilter, SqlStore, Store, UsageQuery};
    use crate::testing::db::{self, TestDb};
    use crate::wire::UsageCause;

    /// A database as M0001 left it, with payer and lease rows in the key-value area, good and
    /// bad. Opened by the store, the good rows become columns and leave the area; the bad ones
    /// stay, and the migration still succeeds.
    async fn moves_key_value_rows_into_columns(test_db: TestDb) {
        let store = test_db.store();
        store.user_get_or_create(1, None).await.unwrap();
        let mut ids = Vec::new();
        for name in ["Owner-paid", "Operator-paid", "Leased", "Odd"] {
            ids.push(store.agent_create(NewAgent::new(1, name, "p", "glm-4.7")).await.unwrap().id);
        }
        let [owner_paid, operator_paid, leased, odd] = ids[..] else { unreachable!() };
        store.agent_set_payer(owner_paid, Payer::Owner).await.unwrap();
        // Back to before M0002: every later migration first, then M0002 itself.
        Migrator::down(store.connection(), Some(after(1))).await.unwrap();
        assert_eq!(
            store.kv_get(PAYER_NAMESPACE, &owner_paid.to_string()).await.unwrap(),
            Some(b"owner".to_vec()),
            "rolling back puts payers back where earlier releases read them"
        );
        let key = |id: AgentId| id.to_string();
        let bad_payers: [(String, &[u8]); 4] = [
            ("seven".into(), b"owner"),
            (key(leased), b"boss"),
            (key(odd), &[0xff, 0xfe]),
            ("424242".into(), b"owner"),
        ];
        let bad_leases: [(String, &[u8]); 3] =
            [("nope".into(), b"2030-01-01T00:00:00Z"), (key(odd), b"soon"), ("424242".into(), b"2030-01-01T00:00:00Z")];
        store.kv_put(PAYER_NAMESPACE, &key(operator_paid), b"operator").await.unwrap();
        store.kv_put(LEASE_NAMESPACE, &key(leased), b"2030-01-01T00:00:00+00:00").await.unwrap();
        for (key, value) in &bad_payers {
            store.kv_put(PAYER_NAMESPACE, key, value).await.unwrap();
        }
        for (key, value) in &bad_leases {
            store.kv_put(LEASE_NAMESPACE, key, value).await.unwrap();
        }

        let store = SqlStore::open(test_db.url()).await.expect("the migration succeeds beside rows it cannot read");
        let agent = |id| {
            let store = store.clone();
            async move { store.agent_get(id).await.unwrap().unwrap() }
        };
        assert_eq!(agent(owner_paid).await.payer, Payer::Owner);
        assert_eq!(agent(operator_paid).await.payer, Payer::Operator);
        assert_eq!((agent(leased).await.payer, agent(odd).await.payer), (Payer::Operator, Payer::Operator));
        let until = "2030-01-01T00:02:00Z".parse().unwrap();
        assert_eq!(agent(leased).await.lease, Some(Lease::new(CARRIED_LEASE_HOLDER, until)));
        assert_eq!(agent(odd).await.lease, None);
        for (namespace, moved) in
            [(PAYER_NAMESPACE, owner_paid), (PAYER_NAMESPACE, operator_paid), (LEASE_NAMESPACE, leased)]
        {
            assert_eq!(store.kv_get(namespace, &key(moved)).await.unwrap(), None, "{namespace} {moved} moved");
        }
        for (namespace, rows) in [(PAYER_NAMESPACE, &bad_payers[..]), (LEASE_NAMESPACE, &bad_leases[..])] {
            for (key, value) in rows {
                let kept = store.kv_get(namespace, key).await.unwrap();
                assert_eq!(kept.as_deref(), Some(*value), "{namespace} {key:?} stays");
            }
        }
    }

    #[tokio::test]
    async fn sqlite_moves_key_value_rows_into_columns() {
        moves_key_value_rows_into_columns(db::sqlite().await).await;
    }

    #[tokio::test]
    async fn postgres_moves_key_value_rows_into_columns() {
        let Some(test_db) = db::postgres().await else { return };
        moves_key_value_rows_into_columns(test_db).await;
    }

    /// A database as M0002 left it, with agents: opened by the store, every agent gets the
    /// behaviour it had before owners could choose, and the new tables work.
    async fn gives_agents_at_m0002_the_defaults(test_db: TestDb) {
        let store = test_db.store();
        store.user_get_or_create(1, None).await.unwrap();
        let old = store.agent_create(NewAgent::new(1, "Before", "p", "glm-4.7")).await.unwrap();
        store.agent_set_policy(old.id, &AgentPolicy::new().with_sharing(false)).await.unwrap();
        store.agent_budget_notice(old.id, "2026-11-25".parse().unwrap(), 80).await.unwrap();
        Migrator::down(store.connection(), Some(after(2))).await.unwrap();
        let db = store.connection();
        let gone = db.query_one_raw(statement_for(db, "SELECT sharing FROM agents", [])).await;
        assert!(gone.is_err(), "rolled back to M0002, agents have no policy columns");
        // Written as M0002's platform wrote agents: only the columns it knew.
        db.execute_raw(statement_for(
            db,
            "INSERT INTO agents (owner_id, name, system_prompt, model, status, deleted, slug, visitor_tools, \
             created_at, updated_at, payer) VALUES (1, 'Older', 'p', 'glm-4.7', 'running', false, 'oldslug', '[]', $1, $1, 'owner')",
            [chrono::Utc::now().into()],
        ))
        .await
        .unwrap();

        let store = SqlStore::open(test_db.url()).await.expect("M0003 applies to a database at M0002");
        let agents = store.list_agents(&AgentFilter::all()).await.unwrap();
        assert_eq!(agents.len(), 2);
        for agent in &agents {
            assert_eq!((agent.policy, agent.usage_cursor), (AgentPolicy::default(), 0), "{}", agent.name);
        }
        assert_eq!(agents[1].payer, Payer::Owner, "what M0002 stored stays");
        let today = "2026-11-25".parse().unwrap();
        for agent in &agents {
            assert!(store.agent_budget_notice(agent.id, today, 80).await.unwrap(), "no notice was sent yet");
        }
        let row = AgentUsage::new(agents[1].id, today, 1, UsageCause::OwnerTurn, "glm-4.7", Payer::Owner)
            .with_tokens(5, 5, 1, false);
        assert!(store.usage_ingest(agents[1].id, Some((0, 1)), std::slice::from_ref(&row)).await.unwrap());
        assert_eq!(store.usage_rows(&UsageQuery::days(today, today)).await.unwrap(), [row]);
        assert_eq!(store.agent_replace_slug(agents[1].id, "newslug").await.unwrap(), "oldslug");
        assert_eq!(store.agent_by_retired_slug("oldslug").await.unwrap(), Some(agents[1].id));
    }

    /// How many migrations came after the first `kept`, so a rollback to them stays right when
    /// migrations are added.
    fn after(kept: u32) -> u32 {
        <u32 as TryFrom<usize>>::try_from(Migrator::migrations().len()).unwrap() - kept
    }

    fn statement_for(
        db: &sea_orm::DatabaseConnection,
        sql: &str,
        values: impl IntoIterator<Item = Value>,
    ) -> Statement {
        Statement::from_sql_and_values(db.get_database_backend(), sql, values)
    }

    #[tokio::test]
    async fn sqlite_gives_agents_at_m0002_the_defaults() {
        gives_agents_at_m0002_the_defaults(db::sqlite().await).await;
    }

    #[tokio::test]
    async fn postgres_gives_agents_at_m0002_the_defaults() {
        let Some(test_db) = db::postgres().await else { return };
        gives_agents_at_m0002_the_defaults(test_db).await;
    }

    #[test]
    fn key_value_rows_are_understood_or_explained() {
        assert_eq!(payer_row("7", b"owner"), Ok((7, "owner".to_owned())));
        assert_eq!(payer_row("7", b"operator"), Ok((7, "operator".to_owned())));
        assert!(payer_row("7", b"Owner").unwrap_err().contains("neither owner nor operator"));
        assert!(payer_row("seven", b"owner").unwrap_err().contains("not an agent id"));
        assert!(payer_row("7", &[0xff, 0xfe]).unwrap_err().contains("UTF-8"));
        let (agent, until) = lease_row("8", b"2026-01-01T10:00:00+02:00").unwrap();
        assert_eq!((agent, until.to_rfc3339()), (8, "2026-01-01T08:02:00+00:00".to_owned()));
        assert!(lease_row("8", b"yesterday").unwrap_err().contains("RFC 3339"));
    }
}
