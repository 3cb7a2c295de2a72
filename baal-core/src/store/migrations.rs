//! Schema migrations. They run every time a store is opened, so an older database always gains
//! what a newer release added (the Python Baal had no migrations, so new columns never reached
//! old databases). Never edit a released migration: add a new one.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Every migration, oldest first.
pub(crate) struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(M0001Initial)]
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
