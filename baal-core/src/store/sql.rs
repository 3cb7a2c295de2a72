//! [`SqlStore`]: the [`Store`] over SeaORM, one code path for SQLite and PostgreSQL.
//!
//! The operations that must not be raced (the daily counter, an agent's lease and the pool claim)
//! are single SQL statements whose condition is checked by the database while it writes, so no
//! interleaving of callers or bot processes can break them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::sea_query::{Expr, OnConflict, SimpleExpr};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection,
    DbErr, EntityTrait, FromQueryResult, PaginatorTrait, QueryFilter, QueryOrder, Set, Statement, Value,
};
use sea_orm_migration::MigratorTrait;

use super::entities::{agents, daily_usage, deployment_events, kv, pool_vms, users};
use super::migrations::Migrator;
use super::{AgentFilter, PoolStore, Store, StoreError, StoreResult, UsageRow};
use crate::config::redact_url_password;
use crate::domain::{
    Agent, AgentId, AgentStatus, Deployment, DeploymentEvent, EventOutcome, EventStep, Lease, NewAgent, Payer,
    PoolStatus, PoolVm, UsageDecision, User, UserId,
};

/// How long opening a database waits for the server to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Another process (a second bot, `baal-cli`) holding SQLite's write lock is waited for this long
/// instead of failing with "database is locked".
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// PostgreSQL: enough for one bot process; several processes share the server's limit.
const POSTGRES_POOL_SIZE: u32 = 10;
/// How often a pool claim is retried when a racing claim held the row it wanted.
const POOL_CLAIM_ATTEMPTS: u32 = 20;

/// The SQL [`Store`]: SQLite (embedded default) or PostgreSQL, chosen by the URL.
///
/// Cloning is cheap and shares the connection pool.
#[derive(Clone)]
pub struct SqlStore {
    db: DatabaseConnection,
}

impl fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore").field("backend", &self.db.get_database_backend()).finish()
    }
}

impl SqlStore {
    /// Opens the database at `url` and runs every pending migration.
    ///
    /// `url` is `sqlite://path/baal.db?mode=rwc` (file, created if missing, WAL),
    /// `sqlite::memory:` (one connection, for experiments) or `postgres://user@host/db`.
    pub async fn open(url: &str) -> StoreResult<SqlStore> {
        let url = url.trim();
        let mut options = ConnectOptions::new(url.to_owned());
        options.sqlx_logging(false).connect_timeout(CONNECT_TIMEOUT).acquire_timeout(Duration::from_secs(30));
        if url.starts_with("sqlite:") {
            // An in-memory database has no WAL (and a second connection would be another, empty one).
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            crate::sqlite::configure(&mut options, in_memory, SQLITE_BUSY_TIMEOUT);
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            options.max_connections(POSTGRES_POOL_SIZE);
        } else {
            return Err(StoreError::UnsupportedUrl(redact_url_password(url)));
        }

        if url.starts_with("postgres") {
            probe_postgres(url).await?;
        }
        let db = Database::connect(options).await.map_err(|err| connect_error(url, &err))?;
        // Pools may connect lazily: make sure the server really answers before blaming migrations.
        db.ping().await.map_err(|err| connect_error(url, &err))?;
        Migrator::up(&db, None).await.map_err(|err| StoreError::Migration(err.to_string()))?;
        Ok(SqlStore { db })
    }

    /// Whether this store runs on PostgreSQL (else SQLite).
    pub fn is_postgres(&self) -> bool {
        self.db.get_database_backend() == DatabaseBackend::Postgres
    }

    /// The underlying SeaORM connection, for diagnostics (`doctor`) and tests.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(self) -> StoreResult<()> {
        Ok(self.db.close().await?)
    }

    fn statement(&self, sql: &str, values: impl IntoIterator<Item = Value>) -> Statement {
        // `$n` placeholders work on both backends (sqlx binds SQLite's `$n` by position too).
        Statement::from_sql_and_values(self.db.get_database_backend(), sql, values)
    }

    /// The row of `E` with this `id`, and the key-value entry `namespace`/`key` beside it, in one
    /// statement (each statement costs thread hand-offs; see the `store_ops` bench).
    async fn row_with_kv<E: EntityTrait + Default>(
        &self,
        id: Value,
        namespace: &str,
        key: &str,
    ) -> StoreResult<Option<(E::Model, Option<Vec<u8>>)>>
    where
        E::Model: FromQueryResult,
    {
        // The table name is the entity's own constant, never input.
        let table = E::default().table_name().to_owned();
        let stmt = self.statement(
            &format!(
                r#"SELECT {table}.*, kv.value AS kv_value FROM {table}
                   LEFT JOIN kv ON kv.namespace = $2 AND kv."key" = $3 WHERE {table}.id = $1"#
            ),
            [id, namespace.into(), key.into()],
        );
        let Some(row) = self.db.query_one_raw(stmt).await? else { return Ok(None) };
        Ok(Some((E::Model::from_query_result(&row, "")?, row.try_get::<Option<Vec<u8>>>("", "kv_value")?)))
    }

    async fn update_agent(&self, id: AgentId, columns: Vec<(agents::Column, SimpleExpr)>) -> StoreResult<()> {
        let mut update = agents::Entity::update_many()
            .col_expr(agents::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(agents::Column::Id.eq(id.0));
        for (column, value) in columns {
            update = update.col_expr(column, value);
        }
        let result = update.exec(&self.db).await?;
        if result.rows_affected == 0 {
            return Err(StoreError::NotFound(format!("agent {id}")));
        }
        Ok(())
    }

    async fn require_agent(&self, id: AgentId) -> StoreResult<()> {
        let found = agents::Entity::find_by_id(id.0).count(&self.db).await?;
        if found == 0 {
            return Err(StoreError::NotFound(format!("agent {id}")));
        }
        Ok(())
    }
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        StoreError::Database(err.to_string())
    }
}

/// One direct connection before the pool: the pool retries a refused or misconfigured server
/// until its acquire timeout and then reports only "pool timed out", which tells the operator
/// nothing. A single attempt fails fast with the server's own reason.
async fn probe_postgres(url: &str) -> StoreResult<()> {
    use sea_orm::sqlx::Connection as _;
    use sea_orm::sqlx::postgres::PgConnection;
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(url)).await {
        Err(_) => Err(connect_error(url, &format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()))),
        Ok(Err(err)) => Err(connect_error(url, &err)),
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
    }
}

fn connect_error(url: &str, err: &dyn fmt::Display) -> StoreError {
    let redacted = redact_url_password(url);
    let mut reason = err.to_string();
    // Drivers sometimes echo the URL they were given; never let its password through.
    if redacted != url {
        reason = reason.replace(url, &redacted);
    }
    if url.starts_with("sqlite:") && !url.contains("mode=") && !url.contains(":memory:") {
        reason.push_str(" (add ?mode=rwc to the URL to create the file if it does not exist)");
    }
    StoreError::Connect { url: redacted, reason }
}

fn corrupt(what: String) -> StoreError {
    StoreError::Database(format!("stored data is not valid: {what}"))
}

fn port_to_db(port: Option<u16>) -> Option<i32> {
    port.map(i32::from)
}

fn port_from_db(port: Option<i32>, owner: &str) -> StoreResult<Option<u16>> {
    port.map(|p| u16::try_from(p).map_err(|_| corrupt(format!("{owner} has SSH port {p}")))).transpose()
}

/// Sealed bytes and other values bound into statements; `None` becomes SQL NULL of the right type.
fn bytes_value(bytes: Option<Vec<u8>>) -> SimpleExpr {
    Expr::value(Value::Bytes(bytes))
}

fn user_from_row(row: users::Model) -> User {
    User {
        id: row.id,
        username: row.username,
        api_key_sealed: row.api_key_sealed,
        show_tools: row.show_tools,
        created_at: row.created_at,
    }
}

fn agent_from_row(row: agents::Model) -> StoreResult<Agent> {
    let owner = format!("agent {}", row.id);
    let status = row.status.parse::<AgentStatus>().map_err(|err| corrupt(format!("{owner}: {err}")))?;
    let visitor_tools: Vec<String> = serde_json::from_str(&row.visitor_tools)
        .map_err(|err| corrupt(format!("{owner} has visitor tools {:?}: {err}", row.visitor_tools)))?;
    // No payer recorded: deployed before payers were, and such agents ran on the operator's key.
    let payer = row.payer.as_deref().map(str::parse::<Payer>).transpose();
    let payer = payer.map_err(|err| corrupt(format!("{owner}: {err}")))?.unwrap_or_default();
    let lease = match (row.lease_holder, row.lease_until) {
        (Some(holder), Some(until)) => Some(Lease::new(holder, until)),
        _ => None,
    };
    Ok(Agent {
        id: AgentId(row.id),
        owner_id: row.owner_id,
        name: row.name,
        system_prompt: row.system_prompt,
        model: row.model,
        status,
        deleted: row.deleted,
        deployment: Deployment {
            instance_hash: row.instance_hash,
            crn_url: row.crn_url,
            vm_url: row.vm_url,
            vm_host: row.vm_host,
            ssh_port: port_from_db(row.ssh_port, &owner)?,
            ssh_host_key: row.ssh_host_key,
        },
        token_sealed: row.token_sealed,
        slug: row.slug,
        visitor_tools,
        payer,
        lease,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn event_from_row(row: deployment_events::Model) -> StoreResult<DeploymentEvent> {
    let outcome = row.outcome.parse::<EventOutcome>().map_err(|err| corrupt(format!("event {}: {err}", row.id)))?;
    Ok(DeploymentEvent {
        id: row.id,
        agent_id: AgentId(row.agent_id),
        step: EventStep::parse(&row.step),
        outcome,
        detail: row.detail,
        created_at: row.created_at,
    })
}

fn pool_vm_from_row(row: pool_vms::Model) -> StoreResult<PoolVm> {
    let owner = format!("pool VM {}", row.id);
    let status = row.status.parse::<PoolStatus>().map_err(|err| corrupt(format!("{owner}: {err}")))?;
    Ok(PoolVm {
        id: row.id,
        deployment: Deployment {
            instance_hash: row.instance_hash.clone(),
            crn_url: row.crn_url,
            vm_url: row.vm_url,
            vm_host: row.vm_host,
            ssh_port: port_from_db(row.ssh_port, &owner)?,
            ssh_host_key: row.ssh_host_key,
        },
        instance_hash: row.instance_hash,
        status,
        agent_id: row.agent_id.map(AgentId),
        created_at: row.created_at,
        claimed_at: row.claimed_at,
    })
}

fn tools_json(tools: &[String]) -> StoreResult<String> {
    serde_json::to_string(tools).map_err(|err| StoreError::Database(format!("cannot encode visitor tools: {err}")))
}

#[async_trait]
impl Store for SqlStore {
    async fn user_get_or_create(&self, id: UserId, username: Option<&str>) -> StoreResult<User> {
        let row = users::ActiveModel {
            id: Set(id),
            username: Set(username.map(str::to_owned)),
            api_key_sealed: Set(None),
            show_tools: Set(true),
            created_at: Set(Utc::now()),
        };
        users::Entity::insert(row)
            .on_conflict_do_nothing_on([users::Column::Id])
            .exec_without_returning(&self.db)
            .await?;
        if let Some(name) = username {
            users::Entity::update_many()
                .col_expr(users::Column::Username, Expr::value(name))
                .filter(users::Column::Id.eq(id))
                .exec(&self.db)
                .await?;
        }
        self.user_get(id).await?.ok_or_else(|| StoreError::NotFound(format!("user {id}")))
    }

    async fn user_get(&self, id: UserId) -> StoreResult<Option<User>> {
        Ok(users::Entity::find_by_id(id).one(&self.db).await?.map(user_from_row))
    }

    async fn user_get_with_kv(
        &self,
        id: UserId,
        namespace: &str,
        key: &str,
    ) -> StoreResult<Option<(User, Option<Vec<u8>>)>> {
        let found = self.row_with_kv::<users::Entity>(id.into(), namespace, key).await?;
        Ok(found.map(|(user, value)| (user_from_row(user), value)))
    }

    async fn users_list(&self) -> StoreResult<Vec<User>> {
        let rows = users::Entity::find()
            .order_by_asc(users::Column::CreatedAt)
            .order_by_asc(users::Column::Id)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(user_from_row).collect())
    }

    async fn user_set_api_key(&self, id: UserId, sealed: Option<Vec<u8>>) -> StoreResult<()> {
        let result = users::Entity::update_many()
            .col_expr(users::Column::ApiKeySealed, bytes_value(sealed))
            .filter(users::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        if result.rows_affected == 0 {
            return Err(StoreError::NotFound(format!("user {id}")));
        }
        Ok(())
    }

    async fn user_toggle_show_tools(&self, id: UserId) -> StoreResult<bool> {
        // One statement, so two quick toggles can never both read the old value.
        let stmt = self
            .statement("UPDATE users SET show_tools = NOT show_tools WHERE id = $1 RETURNING show_tools", [id.into()]);
        let row = self.db.query_one_raw(stmt).await?.ok_or_else(|| StoreError::NotFound(format!("user {id}")))?;
        Ok(row.try_get::<bool>("", "show_tools")?)
    }

    async fn agent_create(&self, agent: NewAgent) -> StoreResult<Agent> {
        if self.user_get(agent.owner_id).await?.is_none() {
            return Err(StoreError::NotFound(format!("user {} (create the owner before the agent)", agent.owner_id)));
        }
        let now = Utc::now();
        let row = agents::ActiveModel {
            owner_id: Set(agent.owner_id),
            name: Set(agent.name),
            system_prompt: Set(agent.system_prompt),
            model: Set(agent.model),
            status: Set(AgentStatus::Pending.as_str().to_owned()),
            deleted: Set(false),
            instance_hash: Set(None),
            crn_url: Set(None),
            vm_url: Set(None),
            vm_host: Set(None),
            ssh_port: Set(None),
            ssh_host_key: Set(None),
            token_sealed: Set(agent.token_sealed),
            slug: Set(agent.slug),
            visitor_tools: Set(tools_json(&agent.visitor_tools)?),
            created_at: Set(now),
            updated_at: Set(now),
            payer: Set(None),
            lease_holder: Set(None),
            lease_until: Set(None),
            ..Default::default()
        };
        agent_from_row(row.insert(&self.db).await?)
    }

    async fn agent_get(&self, id: AgentId) -> StoreResult<Option<Agent>> {
        agents::Entity::find_by_id(id.0).one(&self.db).await?.map(agent_from_row).transpose()
    }

    async fn agent_by_slug(&self, slug: &str) -> StoreResult<Option<Agent>> {
        agents::Entity::find()
            .filter(agents::Column::Slug.eq(slug))
            .one(&self.db)
            .await?
            .map(agent_from_row)
            .transpose()
    }

    async fn list_agents(&self, filter: &AgentFilter) -> StoreResult<Vec<Agent>> {
        let mut query = agents::Entity::find().order_by_asc(agents::Column::Id);
        if let Some(owner) = filter.owner {
            query = query.filter(agents::Column::OwnerId.eq(owner));
        }
        if let Some(status) = filter.status {
            query = query.filter(agents::Column::Status.eq(status.as_str()));
        }
        if !filter.include_deleted {
            query = query.filter(agents::Column::Deleted.eq(false));
        }
        query.all(&self.db).await?.into_iter().map(agent_from_row).collect()
    }

    async fn count_active_agents(&self, owner: UserId) -> StoreResult<u64> {
        Ok(agents::Entity::find()
            .filter(agents::Column::OwnerId.eq(owner))
            .filter(agents::Column::Deleted.eq(false))
            .count(&self.db)
            .await?)
    }

    async fn agent_set_status(&self, id: AgentId, status: AgentStatus) -> StoreResult<()> {
        self.update_agent(id, vec![(agents::Column::Status, Expr::value(status.as_str()))]).await
    }

    async fn agent_set_deployment(&self, id: AgentId, deployment: &Deployment) -> StoreResult<()> {
        self.update_agent(
            id,
            vec![
                (agents::Column::InstanceHash, Expr::value(deployment.instance_hash.clone())),
                (agents::Column::CrnUrl, Expr::value(deployment.crn_url.clone())),
                (agents::Column::VmUrl, Expr::value(deployment.vm_url.clone())),
                (agents::Column::VmHost, Expr::value(deployment.vm_host.clone())),
                (agents::Column::SshPort, Expr::value(port_to_db(deployment.ssh_port))),
                (agents::Column::SshHostKey, Expr::value(deployment.ssh_host_key.clone())),
            ],
        )
        .await
    }

    async fn agent_set_prompt(&self, id: AgentId, system_prompt: &str) -> StoreResult<()> {
        self.update_agent(id, vec![(agents::Column::SystemPrompt, Expr::value(system_prompt))]).await
    }

    async fn agent_set_token(&self, id: AgentId, token_sealed: &[u8]) -> StoreResult<()> {
        self.update_agent(id, vec![(agents::Column::TokenSealed, bytes_value(Some(token_sealed.to_vec())))]).await
    }

    async fn agent_set_visitor_tools(&self, id: AgentId, tools: &[String]) -> StoreResult<()> {
        self.update_agent(id, vec![(agents::Column::VisitorTools, Expr::value(tools_json(tools)?))]).await
    }

    async fn agent_set_payer(&self, id: AgentId, payer: Payer) -> StoreResult<()> {
        self.update_agent(id, vec![(agents::Column::Payer, Expr::value(payer.as_str()))]).await
    }

    async fn agent_soft_delete(&self, id: AgentId) -> StoreResult<bool> {
        let result = agents::Entity::update_many()
            .col_expr(agents::Column::Deleted, Expr::value(true))
            .col_expr(agents::Column::Status, Expr::value(AgentStatus::Stopped.as_str()))
            .col_expr(agents::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(agents::Column::Id.eq(id.0))
            .filter(agents::Column::Deleted.eq(false))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected > 0)
    }

    async fn agent_lease_take(
        &self,
        id: AgentId,
        holder: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        // The database checks who holds the lease while it holds the row for writing, so of two
        // racing takers only one finds it free. Times compare as timestamps on PostgreSQL and as
        // the text sqlx writes on SQLite (RFC 3339 in UTC, whose order is the time order).
        // `updated_at` is left alone: a lease is not a change of the agent.
        let stmt = self.statement(
            "UPDATE agents SET lease_holder = $1, lease_until = $2 \
             WHERE id = $3 AND (lease_holder IS NULL OR lease_until IS NULL OR lease_holder = $1 OR lease_until <= $4)",
            [holder.into(), until.into(), id.0.into(), now.into()],
        );
        Ok(self.db.execute_raw(stmt).await?.rows_affected() > 0)
    }

    async fn agent_lease_release(&self, id: AgentId, holder: &str) -> StoreResult<()> {
        agents::Entity::update_many()
            .col_expr(agents::Column::LeaseHolder, Expr::value(Option::<String>::None))
            .col_expr(agents::Column::LeaseUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .filter(agents::Column::Id.eq(id.0))
            .filter(agents::Column::LeaseHolder.eq(holder))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    async fn usage_consume(
        &self,
        user: UserId,
        day: NaiveDate,
        limit: u32,
        resets_at: DateTime<Utc>,
    ) -> StoreResult<UsageDecision> {
        // The insert below counts the first message unconditionally, so a zero limit never writes.
        if limit > 0 {
            // The database checks the limit while it holds the row for writing: concurrent callers
            // (tasks or bot processes) queue on that row and each sees the count the previous left.
            let stmt = self.statement(
                "INSERT INTO daily_usage (user_id, day, messages) VALUES ($1, $2, 1) \
                 ON CONFLICT (user_id, day) DO UPDATE SET messages = daily_usage.messages + 1 \
                 WHERE daily_usage.messages < $3 \
                 RETURNING messages",
                [user.into(), day.into(), i64::from(limit).into()],
            );
            if let Some(row) = self.db.query_one_raw(stmt).await? {
                let used = row.try_get::<i32>("", "messages")?;
                return Ok(UsageDecision::Allowed { used: u32::try_from(used).unwrap_or(0), limit });
            }
        }
        let used = self.usage_get(user, day).await?;
        Ok(UsageDecision::Refused { used, limit, resets_at })
    }

    async fn usage_get(&self, user: UserId, day: NaiveDate) -> StoreResult<u32> {
        let row = daily_usage::Entity::find_by_id((user, day)).one(&self.db).await?;
        Ok(row.map_or(0, |r| u32::try_from(r.messages).unwrap_or(0)))
    }

    async fn usage_on(&self, day: NaiveDate) -> StoreResult<Vec<UsageRow>> {
        let rows = daily_usage::Entity::find()
            .filter(daily_usage::Column::Day.eq(day))
            .order_by_desc(daily_usage::Column::Messages)
            .order_by_asc(daily_usage::Column::UserId)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| UsageRow { user_id: r.user_id, day: r.day, messages: u32::try_from(r.messages).unwrap_or(0) })
            .collect())
    }

    async fn event_record(
        &self,
        agent: AgentId,
        step: &EventStep,
        outcome: EventOutcome,
        detail: Option<&str>,
    ) -> StoreResult<DeploymentEvent> {
        self.require_agent(agent).await?;
        let row = deployment_events::ActiveModel {
            agent_id: Set(agent.0),
            step: Set(step.as_str().to_owned()),
            outcome: Set(outcome.as_str().to_owned()),
            detail: Set(detail.map(str::to_owned)),
            created_at: Set(Utc::now()),
            ..Default::default()
        };
        event_from_row(row.insert(&self.db).await?)
    }

    async fn events_for(&self, agent: AgentId) -> StoreResult<Vec<DeploymentEvent>> {
        let rows = deployment_events::Entity::find()
            .filter(deployment_events::Column::AgentId.eq(agent.0))
            .order_by_asc(deployment_events::Column::Id)
            .all(&self.db)
            .await?;
        rows.into_iter().map(event_from_row).collect()
    }

    async fn kv_get(&self, namespace: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let row = kv::Entity::find_by_id((namespace.to_owned(), key.to_owned())).one(&self.db).await?;
        Ok(row.map(|r| r.value))
    }

    async fn kv_put(&self, namespace: &str, key: &str, value: &[u8]) -> StoreResult<()> {
        let row = kv::ActiveModel {
            namespace: Set(namespace.to_owned()),
            key: Set(key.to_owned()),
            value: Set(value.to_vec()),
            updated_at: Set(Utc::now()),
        };
        kv::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([kv::Column::Namespace, kv::Column::Key])
                    .update_columns([kv::Column::Value, kv::Column::UpdatedAt])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> StoreResult<()> {
        kv::Entity::delete_by_id((namespace.to_owned(), key.to_owned())).exec(&self.db).await?;
        Ok(())
    }

    fn pool_store(&self) -> Option<Arc<dyn PoolStore>> {
        // Clones share the connection pool: this is the same database, not a second one.
        Some(Arc::new(self.clone()))
    }
}

#[async_trait]
impl PoolStore for SqlStore {
    async fn pool_insert(&self) -> StoreResult<PoolVm> {
        let row = pool_vms::ActiveModel {
            instance_hash: Set(None),
            crn_url: Set(None),
            vm_url: Set(None),
            vm_host: Set(None),
            ssh_port: Set(None),
            ssh_host_key: Set(None),
            status: Set(PoolStatus::Provisioning.as_str().to_owned()),
            agent_id: Set(None),
            created_at: Set(Utc::now()),
            claimed_at: Set(None),
            ..Default::default()
        };
        pool_vm_from_row(row.insert(&self.db).await?)
    }

    async fn pool_update(
        &self,
        id: i64,
        instance_hash: Option<&str>,
        deployment: &Deployment,
        status: PoolStatus,
    ) -> StoreResult<()> {
        let result = pool_vms::Entity::update_many()
            .col_expr(pool_vms::Column::InstanceHash, Expr::value(instance_hash.map(str::to_owned)))
            .col_expr(pool_vms::Column::CrnUrl, Expr::value(deployment.crn_url.clone()))
            .col_expr(pool_vms::Column::VmUrl, Expr::value(deployment.vm_url.clone()))
            .col_expr(pool_vms::Column::VmHost, Expr::value(deployment.vm_host.clone()))
            .col_expr(pool_vms::Column::SshPort, Expr::value(port_to_db(deployment.ssh_port)))
            .col_expr(pool_vms::Column::SshHostKey, Expr::value(deployment.ssh_host_key.clone()))
            .col_expr(pool_vms::Column::Status, Expr::value(status.as_str()))
            .filter(pool_vms::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        if result.rows_affected == 0 {
            return Err(StoreError::NotFound(format!("pool VM {id}")));
        }
        Ok(())
    }

    async fn pool_claim(&self, agent: AgentId) -> StoreResult<Option<PoolVm>> {
        // PostgreSQL: SKIP LOCKED lets concurrent claimers pass over a row another claim holds
        // instead of queueing behind it; the outer `status = 'warm'` re-check (done on the
        // latest row version) guarantees a row is never claimed twice. SQLite serialises writes,
        // so the plain subselect already sees the final state.
        let lock = if self.is_postgres() { " FOR UPDATE SKIP LOCKED" } else { "" };
        let sql = format!(
            "UPDATE pool_vms SET status = 'claimed', agent_id = $1, claimed_at = $2 \
             WHERE id = (SELECT id FROM pool_vms WHERE status = 'warm' ORDER BY id LIMIT 1{lock}) \
             AND status = 'warm' \
             RETURNING *"
        );
        for _ in 0..POOL_CLAIM_ATTEMPTS {
            let stmt = self.statement(&sql, [agent.0.into(), Utc::now().into()]);
            if let Some(row) = pool_vms::Entity::find().from_raw_sql(stmt).one(&self.db).await? {
                return pool_vm_from_row(row).map(Some);
            }
            // Nothing claimed: either the pool is empty, or every warm row was held by racing
            // claims that have not committed yet. Only the first case is a final answer.
            let warm = pool_vms::Entity::find()
                .filter(pool_vms::Column::Status.eq(PoolStatus::Warm.as_str()))
                .count(&self.db)
                .await?;
            if warm == 0 {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(None)
    }

    async fn pool_set_status(&self, id: i64, status: PoolStatus, agent: Option<AgentId>) -> StoreResult<()> {
        let mut update = pool_vms::Entity::update_many()
            .col_expr(pool_vms::Column::Status, Expr::value(status.as_str()))
            .col_expr(pool_vms::Column::AgentId, Expr::value(agent.map(|a| a.0)))
            .filter(pool_vms::Column::Id.eq(id));
        match status {
            PoolStatus::Claimed => {
                update = update.col_expr(pool_vms::Column::ClaimedAt, Expr::value(Some(Utc::now())));
            }
            PoolStatus::Warm => {
                update = update.col_expr(pool_vms::Column::ClaimedAt, Expr::value(Option::<DateTime<Utc>>::None));
            }
            PoolStatus::Provisioning | PoolStatus::Deployed | PoolStatus::Failed => {}
        }
        let result = update.exec(&self.db).await?;
        if result.rows_affected == 0 {
            return Err(StoreError::NotFound(format!("pool VM {id}")));
        }
        Ok(())
    }

    async fn pool_list(&self) -> StoreResult<Vec<PoolVm>> {
        let rows = pool_vms::Entity::find().order_by_asc(pool_vms::Column::Id).all(&self.db).await?;
        rows.into_iter().map(pool_vm_from_row).collect()
    }

    async fn pool_remove(&self, id: i64) -> StoreResult<()> {
        pool_vms::Entity::delete_by_id(id).exec(&self.db).await?;
        Ok(())
    }

    async fn agent_instance_hash(&self, agent: AgentId) -> StoreResult<Option<String>> {
        let row = agents::Entity::find_by_id(agent.0).one(&self.db).await?;
        Ok(row.and_then(|row| row.instance_hash))
    }
}
