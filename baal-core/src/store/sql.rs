//! [`SqlStore`]: the [`Store`] over SeaORM, one code path for SQLite and PostgreSQL.
//!
//! The operations that must not be raced (the daily counters, an agent's lease, its budget
//! notices and the pool claim) are single SQL statements whose condition is checked by the
//! database while it writes, so no interleaving of callers or bot processes can break them. The
//! two that need several statements (storing a page of usage, replacing a share link) run in a
//! transaction whose first statement writes the agent's row: concurrent callers for one agent
//! queue there (PostgreSQL's row lock, SQLite's write lock), and a SQLite transaction never has
//! to turn from reading into writing, which a writer in another process could make fail.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::sea_query::{Expr, OnConflict, Query, SimpleExpr};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection,
    DatabaseTransaction, DbErr, EntityTrait, FromQueryResult, PaginatorTrait, QueryFilter, QueryOrder, Set, Statement,
    TransactionTrait, Value,
};
use sea_orm_migration::MigratorTrait;

use super::entities::{
    agent_usage, agents, daily_usage, deployment_events, kv, pool_vms, retired_slugs, seen_updates, users,
    visitor_messages,
};
use super::migrations::Migrator;
use super::{AgentFilter, PoolStore, SeenKind, Store, StoreError, StoreResult, UsageQuery, UsageRow};
use crate::config::redact_url_password;
use crate::domain::{
    Agent, AgentId, AgentPolicy, AgentRuntime, AgentStatus, AgentUsage, Deployment, DeploymentEvent, EventOutcome,
    EventStep, Lease, NewAgent, Payer, PoolStatus, PoolVm, UsageDecision, User, UserId,
};
use crate::wire::UsageCause;

/// How long opening a database waits for the server to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Another process (a second bot, `baal-cli`) holding SQLite's write lock is waited for this long
/// instead of failing with "database is locked".
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// PostgreSQL: enough for one bot process; several processes share the server's limit.
const POSTGRES_POOL_SIZE: u32 = 10;
/// How often a pool claim is retried when a racing claim held the row it wanted.
const POOL_CLAIM_ATTEMPTS: u32 = 20;
/// Usage groups added per statement: 10 values each, far below either backend's limit on bound
/// values, and a page of `GET /usage` (1000 calls) sums to far fewer groups.
const USAGE_GROUPS_PER_STATEMENT: usize = 100;

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

    /// Runs `increment`, an insert-or-add of one message that writes nothing once the counter
    /// holds `limit` and returns the new count as `messages`; reads the count with `current`
    /// when it refused.
    async fn consume(
        &self,
        increment: Statement,
        current: impl Future<Output = StoreResult<u32>>,
        limit: u32,
        resets_at: DateTime<Utc>,
    ) -> StoreResult<UsageDecision> {
        // The insert counts the first message unconditionally, so a zero limit never writes.
        if limit > 0 {
            // The database checks the limit while it holds the row for writing: concurrent callers
            // (tasks or bot processes) queue on that row and each sees the count the previous left.
            if let Some(row) = self.db.query_one_raw(increment).await? {
                let used = row.try_get::<i32>("", "messages")?;
                return Ok(UsageDecision::Allowed { used: u32::try_from(used).unwrap_or(0), limit });
            }
        }
        Ok(UsageDecision::Refused { used: current.await?, limit, resets_at })
    }

    /// Whether an agent with `id` exists, read inside `txn`.
    async fn agent_exists_in(&self, txn: &DatabaseTransaction, id: AgentId) -> StoreResult<bool> {
        let stmt = self.statement("SELECT id FROM agents WHERE id = $1", [id.0.into()]);
        Ok(txn.query_one_raw(stmt).await?.is_some())
    }

    /// One insert-or-add of `groups` (all of `agent`) into `agent_usage`. Sums saturate at
    /// `i64::MAX` rather than fail or wrap.
    fn usage_insert(&self, agent: AgentId, groups: &[AgentUsage]) -> Statement {
        const COLUMNS: usize = 10;
        let mut values: Vec<Value> = Vec::with_capacity(groups.len() * COLUMNS);
        let mut rows = Vec::with_capacity(groups.len());
        for (n, group) in groups.iter().enumerate() {
            let first = n * COLUMNS + 1;
            let placeholders: Vec<String> = (first..first + COLUMNS).map(|i| format!("${i}")).collect();
            rows.push(format!("({})", placeholders.join(", ")));
            values.extend([
                agent.0.into(),
                group.day.into(),
                group.user_id.into(),
                group.cause.as_str().into(),
                group.model.clone().into(),
                group.payer.as_str().into(),
                clamp_i64(group.prompt_tokens).into(),
                clamp_i64(group.completion_tokens).into(),
                clamp_i64(group.calls).into(),
                group.estimated.into(),
            ]);
        }
        let add = |column: &str| {
            format!(
                "{column} = CASE WHEN agent_usage.{column} > {max} - excluded.{column} THEN {max} \
                 ELSE agent_usage.{column} + excluded.{column} END",
                max = i64::MAX
            )
        };
        let sql = format!(
            "INSERT INTO agent_usage \
             (agent_id, day, user_id, cause, model, payer, prompt_tokens, completion_tokens, calls, estimated) \
             VALUES {} \
             ON CONFLICT (agent_id, day, user_id, cause, model, payer) DO UPDATE SET {}, {}, {}, \
             estimated = agent_usage.estimated OR excluded.estimated",
            rows.join(", "),
            add("prompt_tokens"),
            add("completion_tokens"),
            add("calls"),
        );
        self.statement(&sql, values)
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

/// A count for a BIGINT column: past `i64::MAX` it is stored as `i64::MAX`.
fn clamp_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `rows` summed per stored key (day, user, cause, model, payer): PostgreSQL refuses an
/// insert-or-add that meets one key twice, and one statement per key is fewer statements.
fn merge_usage(rows: &[AgentUsage]) -> Vec<AgentUsage> {
    let mut groups: BTreeMap<(NaiveDate, UserId, &str, &str, &str), AgentUsage> = BTreeMap::new();
    for row in rows {
        let key = (row.day, row.user_id, row.cause.as_str(), row.model.as_str(), row.payer.as_str());
        let group = groups.entry(key).or_insert_with(|| {
            AgentUsage::new(row.agent_id, row.day, row.user_id, row.cause, row.model.clone(), row.payer)
        });
        group.prompt_tokens = group.prompt_tokens.saturating_add(row.prompt_tokens);
        group.completion_tokens = group.completion_tokens.saturating_add(row.completion_tokens);
        group.calls = group.calls.saturating_add(row.calls);
        group.estimated |= row.estimated;
    }
    groups.into_values().collect()
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
    let budget = row.daily_token_budget.map(|tokens| {
        u64::try_from(tokens).map_err(|_| corrupt(format!("{owner} has a daily token budget of {tokens}")))
    });
    let visitor_limit = row.visitor_daily_messages.map(|messages| {
        u32::try_from(messages).map_err(|_| corrupt(format!("{owner} has a visitor limit of {messages}")))
    });
    let policy = AgentPolicy {
        sharing: row.sharing,
        daily_token_budget: budget.transpose()?,
        visitor_daily_messages: visitor_limit.transpose()?,
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
        policy,
        usage_cursor: row.usage_cursor,
        runtime: row.runtime.parse().map_err(|e| corrupt(format!("{owner}: {e}")))?,
        python_id: row.python_id,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// A message counter's row (`daily_usage`, `visitor_messages`) as the trait returns it.
fn usage_row(user_id: UserId, day: NaiveDate, messages: i32) -> UsageRow {
    UsageRow { user_id, day, messages: u32::try_from(messages).unwrap_or(0) }
}

fn usage_from_row(row: agent_usage::Model) -> StoreResult<AgentUsage> {
    let owner = format!("usage of agent {} on {}", row.agent_id, row.day);
    let cause = UsageCause::parse(&row.cause);
    // `parse` reads any word it does not know as `unknown`; a stored word must be exact.
    if cause.as_str() != row.cause {
        return Err(corrupt(format!("{owner} has cause {:?}", row.cause)));
    }
    let payer = row.payer.parse::<Payer>().map_err(|err| corrupt(format!("{owner}: {err}")))?;
    let count = |what: &str, n: i64| u64::try_from(n).map_err(|_| corrupt(format!("{owner} has {n} {what}")));
    Ok(AgentUsage {
        prompt_tokens: count("prompt tokens", row.prompt_tokens)?,
        completion_tokens: count("completion tokens", row.completion_tokens)?,
        calls: count("calls", row.calls)?,
        estimated: row.estimated,
        ..AgentUsage::new(AgentId(row.agent_id), row.day, row.user_id, cause, row.model, payer)
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
    async fn ping(&self) -> StoreResult<()> {
        Ok(self.db.ping().await?)
    }

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
        let created_at = agent.created_at.unwrap_or(now);
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
            created_at: Set(created_at),
            updated_at: Set(now),
            payer: Set(None),
            lease_holder: Set(None),
            lease_until: Set(None),
            sharing: Set(true),
            daily_token_budget: Set(None),
            visitor_daily_messages: Set(None),
            usage_cursor: Set(0),
            budget_notice_day: Set(None),
            budget_notice_level: Set(0),
            runtime: Set(agent.runtime.as_str().to_owned()),
            python_id: Set(agent.python_id),
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

    async fn agent_by_python_id(&self, python_id: i64) -> StoreResult<Option<Agent>> {
        agents::Entity::find()
            .filter(agents::Column::PythonId.eq(python_id))
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

    async fn agent_set_runtime(&self, id: AgentId, runtime: AgentRuntime) -> StoreResult<()> {
        self.update_agent(id, vec![(agents::Column::Runtime, Expr::value(runtime.as_str()))]).await
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

    async fn agent_set_policy(&self, id: AgentId, policy: &AgentPolicy) -> StoreResult<()> {
        let budget = policy.daily_token_budget.map(clamp_i64);
        let visitor_limit = policy.visitor_daily_messages.map(|n| i32::try_from(n).unwrap_or(i32::MAX));
        self.update_agent(
            id,
            vec![
                (agents::Column::Sharing, Expr::value(policy.sharing)),
                (agents::Column::DailyTokenBudget, Expr::value(budget)),
                (agents::Column::VisitorDailyMessages, Expr::value(visitor_limit)),
            ],
        )
        .await
    }

    async fn agent_replace_slug(&self, id: AgentId, new_slug: &str) -> StoreResult<String> {
        let now = Utc::now();
        let txn = self.db.begin().await?;
        // Written first: a concurrent replacement of the same agent waits here, then reads the
        // slug this one left.
        let touch = self.statement("UPDATE agents SET updated_at = $1 WHERE id = $2", [now.into(), id.0.into()]);
        if txn.execute_raw(touch).await?.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("agent {id}")));
        }
        let current = self.statement("SELECT slug FROM agents WHERE id = $1", [id.0.into()]);
        let row = txn.query_one_raw(current).await?.ok_or_else(|| StoreError::NotFound(format!("agent {id}")))?;
        let old: String = row.try_get("", "slug")?;
        let retired = self.statement("SELECT slug FROM retired_slugs WHERE slug = $1", [new_slug.into()]);
        if old == new_slug || txn.query_one_raw(retired).await?.is_some() {
            // An old link must never work again, so a slug that served one is never handed out.
            return Err(StoreError::Database(format!(
                "the share-link slug {new_slug:?} was used before: pick a new one"
            )));
        }
        let retire = self.statement(
            "INSERT INTO retired_slugs (slug, agent_id, retired_at) VALUES ($1, $2, $3)",
            [old.clone().into(), id.0.into(), now.into()],
        );
        txn.execute_raw(retire).await?;
        let replace = self.statement("UPDATE agents SET slug = $1 WHERE id = $2", [new_slug.into(), id.0.into()]);
        txn.execute_raw(replace).await?;
        txn.commit().await?;
        Ok(old)
    }

    async fn agent_by_retired_slug(&self, slug: &str) -> StoreResult<Option<AgentId>> {
        let row = retired_slugs::Entity::find_by_id(slug.to_owned()).one(&self.db).await?;
        Ok(row.map(|row| AgentId(row.agent_id)))
    }

    async fn agent_budget_notice(&self, id: AgentId, day: NaiveDate, level: u8) -> StoreResult<bool> {
        // (day, level) only ever rises, and the database compares while it holds the row for
        // writing: of several processes noticing one level at once, exactly one gets the row.
        // Dates compare as dates on PostgreSQL and as `YYYY-MM-DD` text on SQLite, whose order
        // is the same. `updated_at` is left alone: a notice is not a change of the agent.
        let stmt = self.statement(
            "UPDATE agents SET budget_notice_day = $1, budget_notice_level = $2 \
             WHERE id = $3 AND (budget_notice_day IS NULL OR budget_notice_day < $1 \
             OR (budget_notice_day = $1 AND budget_notice_level < $2))",
            [day.into(), i16::from(level).into(), id.0.into()],
        );
        if self.db.execute_raw(stmt).await?.rows_affected() > 0 {
            return Ok(true);
        }
        self.require_agent(id).await?;
        Ok(false)
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
        let increment = self.statement(
            "INSERT INTO daily_usage (user_id, day, messages) VALUES ($1, $2, 1) \
             ON CONFLICT (user_id, day) DO UPDATE SET messages = daily_usage.messages + 1 \
             WHERE daily_usage.messages < $3 \
             RETURNING messages",
            [user.into(), day.into(), i64::from(limit).into()],
        );
        self.consume(increment, self.usage_get(user, day), limit, resets_at).await
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
        Ok(rows.into_iter().map(|r| usage_row(r.user_id, r.day, r.messages)).collect())
    }

    async fn visitor_consume(
        &self,
        agent: AgentId,
        user: UserId,
        day: NaiveDate,
        limit: u32,
        resets_at: DateTime<Utc>,
    ) -> StoreResult<UsageDecision> {
        let increment = self.statement(
            "INSERT INTO visitor_messages (agent_id, user_id, day, messages) VALUES ($1, $2, $3, 1) \
             ON CONFLICT (agent_id, user_id, day) DO UPDATE SET messages = visitor_messages.messages + 1 \
             WHERE visitor_messages.messages < $4 \
             RETURNING messages",
            [agent.0.into(), user.into(), day.into(), i64::from(limit).into()],
        );
        let current = async {
            let row = visitor_messages::Entity::find_by_id((agent.0, user, day)).one(&self.db).await?;
            Ok(row.map_or(0, |r| u32::try_from(r.messages).unwrap_or(0)))
        };
        self.consume(increment, current, limit, resets_at).await
    }

    async fn visitor_counts(&self, agent: AgentId, from: NaiveDate, to: NaiveDate) -> StoreResult<Vec<UsageRow>> {
        let rows = visitor_messages::Entity::find()
            .filter(visitor_messages::Column::AgentId.eq(agent.0))
            .filter(visitor_messages::Column::Day.gte(from))
            .filter(visitor_messages::Column::Day.lte(to))
            .order_by_desc(visitor_messages::Column::Messages)
            .order_by_desc(visitor_messages::Column::Day)
            .order_by_asc(visitor_messages::Column::UserId)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(|r| usage_row(r.user_id, r.day, r.messages)).collect())
    }

    async fn usage_ingest(&self, agent: AgentId, cursor: Option<(i64, i64)>, rows: &[AgentUsage]) -> StoreResult<bool> {
        if let Some(stray) = rows.iter().find(|row| row.agent_id != agent) {
            return Err(StoreError::Database(format!(
                "usage of agent {} cannot be stored as agent {agent}'s: ingest each agent's usage on its own",
                stray.agent_id
            )));
        }
        let txn = self.db.begin().await?;
        // The agent's row is written first, also when there is no cursor to move: concurrent
        // ingests of one agent queue on it, so only one of two holding the same cursor moves it.
        let claim = match cursor {
            Some((expected, next)) => self.statement(
                "UPDATE agents SET usage_cursor = $1 WHERE id = $2 AND usage_cursor = $3",
                [next.into(), agent.0.into(), expected.into()],
            ),
            None => self.statement("UPDATE agents SET usage_cursor = usage_cursor WHERE id = $1", [agent.0.into()]),
        };
        if txn.execute_raw(claim).await?.rows_affected() == 0 {
            let exists = self.agent_exists_in(&txn, agent).await?;
            txn.rollback().await?;
            return if exists { Ok(false) } else { Err(StoreError::NotFound(format!("agent {agent}"))) };
        }
        for groups in merge_usage(rows).chunks(USAGE_GROUPS_PER_STATEMENT) {
            txn.execute_raw(self.usage_insert(agent, groups)).await?;
        }
        txn.commit().await?;
        Ok(true)
    }

    async fn usage_rows(&self, query: &UsageQuery) -> StoreResult<Vec<AgentUsage>> {
        use agent_usage::Column;
        let mut select =
            agent_usage::Entity::find().filter(Column::Day.gte(query.from)).filter(Column::Day.lte(query.to));
        if let Some(agent) = query.agent {
            select = select.filter(Column::AgentId.eq(agent.0));
        }
        if let Some(owner) = query.owner {
            let owned = Query::select()
                .column(agents::Column::Id)
                .from(agents::Entity)
                .and_where(agents::Column::OwnerId.eq(owner))
                .to_owned();
            select = select.filter(Column::AgentId.in_subquery(owned));
        }
        if let Some(user) = query.user {
            select = select.filter(Column::UserId.eq(user));
        }
        if let Some(payer) = query.payer {
            select = select.filter(Column::Payer.eq(payer.as_str()));
        }
        let rows = select
            .order_by_asc(Column::Day)
            .order_by_asc(Column::AgentId)
            .order_by_asc(Column::UserId)
            .order_by_asc(Column::Cause)
            .order_by_asc(Column::Model)
            .order_by_asc(Column::Payer)
            .all(&self.db)
            .await?;
        rows.into_iter().map(usage_from_row).collect()
    }

    async fn usage_prune(&self, before: NaiveDate) -> StoreResult<u64> {
        let usage =
            agent_usage::Entity::delete_many().filter(agent_usage::Column::Day.lt(before)).exec(&self.db).await?;
        let visitors = visitor_messages::Entity::delete_many()
            .filter(visitor_messages::Column::Day.lt(before))
            .exec(&self.db)
            .await?;
        Ok(usage.rows_affected + visitors.rows_affected)
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

    async fn update_seen(&self, chat: i64, kind: SeenKind, id: i64, at: DateTime<Utc>) -> StoreResult<bool> {
        let insert = self.statement(
            "INSERT INTO seen_updates (chat_id, kind, update_id, seen_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (chat_id, kind, update_id) DO NOTHING",
            [chat.into(), kind.as_str().into(), id.into(), at.into()],
        );
        Ok(self.db.execute_raw(insert).await?.rows_affected() == 1)
    }

    async fn updates_seen_prune(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let gone =
            seen_updates::Entity::delete_many().filter(seen_updates::Column::SeenAt.lt(before)).exec(&self.db).await?;
        Ok(gone.rows_affected)
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

    async fn kv_list(&self, namespace: &str) -> StoreResult<Vec<(String, Vec<u8>)>> {
        let rows = kv::Entity::find()
            .filter(kv::Column::Namespace.eq(namespace))
            .order_by_asc(kv::Column::Key)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(|row| (row.key, row.value)).collect())
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
