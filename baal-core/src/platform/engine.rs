//! The engine: one [`Platform`] per bot process. It turns each [`Input`] into store updates,
//! deployer and proxy calls, and messages through the front-end's [`Messenger`].

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use secrecy::SecretString;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::messenger::{ChatId, MessageRef, Messenger, Text};
use super::metering::TurnLimits;
use super::state::{self, UserState};
use super::{Input, InputKind};
use crate::config::{ConfigError, Settings};
use crate::deploy::Deployer;
use crate::domain::{Agent, AgentId, User, UserId};
use crate::proxy::Proxy;
use crate::secrets::{SecretBox, SecretsError};
use crate::store::{PoolStore, SqlStore, Store, StoreError};

/// What the engine needs from the settings. Built with [`PlatformConfig::from_settings`] or
/// [`PlatformConfig::default`], then adjusted with the `with_*` setters:
///
/// ```
/// use std::time::Duration;
/// use baal_core::platform::PlatformConfig;
///
/// let config = PlatformConfig::default()
///     .with_max_agents_per_user(5)
///     .with_bot_username("my_baal_bot")
///     .with_edit_interval(Duration::ZERO);
/// assert_eq!(config.max_agents_per_user, 5);
/// assert_eq!(config.bot_username.as_deref(), Some("my_baal_bot"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PlatformConfig {
    /// Agents one user may have (any status but deleted).
    pub max_agents_per_user: u32,
    /// Messages per UTC day a user may send to agents paid by the operator.
    pub free_tier_daily_messages: u32,
    /// Model tokens per UTC day a user may spend on agents paid by the operator (their own turns
    /// and their agents' background work; a visitor's turns count against the visitor).
    pub free_tier_daily_tokens: u64,
    /// The tools owners may give their agents' visitors.
    pub visitor_tools_allowed: Vec<String>,
    /// Days of per-day usage figures kept.
    pub usage_retention_days: u32,
    /// Users allowed fleet-wide views (`/pool`, the fleet part of `/dashboard`).
    pub admin_user_ids: Vec<UserId>,
    /// The bot's username, for share links (`https://t.me/<bot>?start=agent_<slug>`). Without it
    /// links are shown as the `/start agent_<slug>` command.
    pub bot_username: Option<String>,
    /// The operator's LibertAI key, used by agents whose owner has not logged in.
    pub libertai_api_key: Option<SecretString>,
    /// LibertAI's base URL (agents call it; `/login` checks keys at `/credits/balance`).
    pub libertai_api_base_url: String,
    /// Whether the VM pool is on (only shown in `/pool`).
    pub pool_enabled: bool,
    /// A wizard or personality edit silent for this long is forgotten.
    pub flow_timeout: Duration,
    /// The least time between two edits of a streamed answer in one chat. What the agent writes
    /// meanwhile is shown once it has passed; the end of a message is shown at once.
    pub edit_interval: Duration,
    /// How often agents are asked for messages they queued for their owner (and unfinished
    /// deployments are looked for).
    pub pending_poll_interval: Duration,
    /// A deployment whose job has not shown a sign of life for this long is taken to be
    /// orphaned (its process died) and is resumed. Jobs refresh their lease four times as often,
    /// so several bot processes sharing one database never deploy the same agent twice.
    pub deploy_lease: Duration,
    /// How often every running (and down) agent's health is checked, and down agents repaired
    /// (`HEALTH_CHECK_INTERVAL`; zero: never). Two failed checks in a row make an agent `down`;
    /// repairs back off from one interval, doubling, and stop after five attempts.
    pub health_check_interval: Duration,
    /// A failed deployment untouched this long releases what it holds (`RELEASE_FAILED_AFTER`;
    /// zero: never).
    pub release_failed_after: Duration,
}

impl PlatformConfig {
    /// The engine's settings from Baal's [`Settings`].
    pub fn from_settings(settings: &Settings) -> Self {
        PlatformConfig {
            max_agents_per_user: settings.max_agents_per_user,
            free_tier_daily_messages: settings.free_tier_daily_messages,
            free_tier_daily_tokens: settings.free_tier_daily_tokens,
            visitor_tools_allowed: settings.visitor_tools_allowed.clone(),
            usage_retention_days: settings.usage_retention_days,
            admin_user_ids: settings.admin_user_ids.clone(),
            bot_username: settings.bot_username.clone(),
            libertai_api_key: settings.libertai_api_key.clone(),
            libertai_api_base_url: settings.libertai_api_base_url.clone(),
            pool_enabled: settings.pool_enabled,
            health_check_interval: settings.health_check_interval,
            release_failed_after: settings.release_failed_after,
            ..PlatformConfig::default()
        }
    }

    /// Whether `user` may see fleet-wide views.
    pub fn is_admin(&self, user: UserId) -> bool {
        self.admin_user_ids.contains(&user)
    }
}

/// One chainable setter per field, so embedders can adjust a `#[non_exhaustive]` config without
/// struct literals; a macro keeps the dozen setters from drifting apart.
macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident => $field:ident: $ty:ty $(as $conv:ident)?;)*) => {
        impl PlatformConfig {
            $(
                $(#[$doc])*
                pub fn $name(mut self, value: $ty) -> Self {
                    self.$field = setters!(@convert value $(, $conv)?);
                    self
                }
            )*
        }
    };
    (@convert $value:ident) => { $value };
    (@convert $value:ident, into) => { $value.into() };
    (@convert $value:ident, some) => { Some($value.into()) };
}

setters! {
    /// Sets [`PlatformConfig::max_agents_per_user`].
    with_max_agents_per_user => max_agents_per_user: u32;
    /// Sets [`PlatformConfig::free_tier_daily_messages`].
    with_free_tier_daily_messages => free_tier_daily_messages: u32;
    /// Sets [`PlatformConfig::free_tier_daily_tokens`].
    with_free_tier_daily_tokens => free_tier_daily_tokens: u64;
    /// Sets [`PlatformConfig::visitor_tools_allowed`].
    with_visitor_tools_allowed => visitor_tools_allowed: Vec<String>;
    /// Sets [`PlatformConfig::usage_retention_days`].
    with_usage_retention_days => usage_retention_days: u32;
    /// Sets [`PlatformConfig::admin_user_ids`].
    with_admin_user_ids => admin_user_ids: Vec<UserId>;
    /// Sets [`PlatformConfig::bot_username`].
    with_bot_username => bot_username: impl Into<String> as some;
    /// Sets [`PlatformConfig::libertai_api_key`].
    with_libertai_api_key => libertai_api_key: SecretString as some;
    /// Sets [`PlatformConfig::libertai_api_base_url`].
    with_libertai_api_base_url => libertai_api_base_url: impl Into<String> as into;
    /// Sets [`PlatformConfig::pool_enabled`].
    with_pool_enabled => pool_enabled: bool;
    /// Sets [`PlatformConfig::flow_timeout`].
    with_flow_timeout => flow_timeout: Duration;
    /// Sets [`PlatformConfig::edit_interval`].
    with_edit_interval => edit_interval: Duration;
    /// Sets [`PlatformConfig::pending_poll_interval`].
    with_pending_poll_interval => pending_poll_interval: Duration;
    /// Sets [`PlatformConfig::deploy_lease`].
    with_deploy_lease => deploy_lease: Duration;
    /// Sets [`PlatformConfig::health_check_interval`].
    with_health_check_interval => health_check_interval: Duration;
    /// Sets [`PlatformConfig::release_failed_after`].
    with_release_failed_after => release_failed_after: Duration;
}

impl Default for PlatformConfig {
    fn default() -> Self {
        PlatformConfig {
            max_agents_per_user: 3,
            free_tier_daily_messages: 50,
            free_tier_daily_tokens: crate::config::DEFAULT_FREE_TIER_DAILY_TOKENS,
            visitor_tools_allowed: crate::domain::DEFAULT_VISITOR_TOOLS.iter().map(|t| t.to_string()).collect(),
            usage_retention_days: crate::config::DEFAULT_USAGE_RETENTION_DAYS,
            admin_user_ids: Vec::new(),
            bot_username: None,
            libertai_api_key: None,
            libertai_api_base_url: crate::config::DEFAULT_LIBERTAI_API_BASE_URL.to_owned(),
            pool_enabled: false,
            flow_timeout: Duration::from_secs(15 * 60),
            edit_interval: Duration::from_secs(1),
            pending_poll_interval: Duration::from_secs(30),
            deploy_lease: Duration::from_secs(120),
            health_check_interval: crate::config::DEFAULT_HEALTH_CHECK_INTERVAL,
            release_failed_after: crate::config::DEFAULT_RELEASE_FAILED_AFTER,
        }
    }
}

/// The engine could not start or could not finish an input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlatformError {
    /// The store failed (the user has been told something went wrong).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A setting is missing or malformed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The encryption key is unusable.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The platform cannot be assembled as configured.
    #[error("{0}")]
    Setup(String),
}

impl PlatformError {
    /// Whether the platform could not start because of how it is configured (a setting, the
    /// encryption key, the deployer's set-up), which restarting will not mend.
    pub fn is_settings(&self) -> bool {
        matches!(self, PlatformError::Config(_) | PlatformError::Secrets(_) | PlatformError::Setup(_))
    }
}

/// The bot's brain. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Platform {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: PlatformConfig,
    pub store: Arc<dyn Store>,
    pub deployer: Arc<dyn Deployer>,
    pub proxy: Arc<dyn Proxy>,
    pub messenger: Arc<dyn Messenger>,
    pub secrets: Arc<SecretBox>,
    pub http: reqwest::Client,
    tasks: watch::Sender<usize>,
    user_locks: Mutex<HashMap<UserId, Arc<tokio::sync::Mutex<()>>>>,
    chat_locks: Mutex<HashMap<ChatId, Arc<tokio::sync::Mutex<()>>>>,
    pub in_flight: Mutex<HashSet<AgentId>>,
    /// This process's name on the agents' leases: made once, unique among processes sharing
    /// the database.
    pub holder: String,
    poller: Mutex<Option<JoinHandle<()>>>,
    /// Work started by `start()` and stopped by `shutdown()` (the Aleph pool).
    background: Mutex<Vec<Background>>,
    background_running: Mutex<Vec<JoinHandle<()>>>,
    /// The UTC day old usage figures were last pruned.
    pub usage_pruned: Mutex<Option<chrono::NaiveDate>>,
    /// Each chat's running turn, to stop it.
    pub running_turns: Mutex<HashMap<ChatId, Arc<super::turns::StopSignal>>>,
}

/// A long-running piece of work owned by the platform.
pub(crate) type Background = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Who sent the input being handled.
pub(crate) struct Ctx {
    pub user: User,
    pub chat: ChatId,
    /// When the input arrived (the turn's added latency starts here).
    pub received: std::time::Instant,
}

impl Ctx {
    pub fn user_id(&self) -> UserId {
        self.user.id
    }

    /// A private chat with the bot (its id is the user's), not a group or channel.
    pub fn in_private_chat(&self) -> bool {
        self.chat == self.user.id
    }
}

/// Work left after the user's state is saved and its lock released (a chat turn can be long).
pub(crate) enum After {
    Nothing,
    Chat { agent: Box<Agent>, text: String, first_time: bool, limits: TurnLimits },
}

impl Platform {
    /// Assembles a platform from its parts.
    pub fn new(
        config: PlatformConfig,
        store: Arc<dyn Store>,
        deployer: Arc<dyn Deployer>,
        proxy: Arc<dyn Proxy>,
        messenger: Arc<dyn Messenger>,
        secrets: Arc<SecretBox>,
    ) -> Self {
        let http = crate::http_client_builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
        let (tasks, _) = watch::channel(0usize);
        Platform {
            inner: Arc::new(Inner {
                config,
                store,
                deployer,
                proxy,
                messenger,
                secrets,
                http,
                tasks,
                user_locks: Mutex::default(),
                chat_locks: Mutex::default(),
                in_flight: Mutex::default(),
                holder: super::lease::new_holder(),
                poller: Mutex::default(),
                background: Mutex::default(),
                background_running: Mutex::default(),
                usage_pruned: Mutex::default(),
                running_turns: Mutex::default(),
            }),
        }
    }

    /// A platform as Baal's settings describe it: the SQL store at `DATABASE_URL`, the local
    /// deployer (or Aleph's when `ALEPH_PRIVATE_KEY` is set), the HTTP proxy, and the sealing key
    /// from `BOT_ENCRYPTION_KEY` (generated into `<BAAL_DATA_DIR>/encryption.key` when unset).
    pub async fn from_settings(settings: Settings, messenger: Arc<dyn Messenger>) -> Result<Platform, PlatformError> {
        let secrets = Arc::new(super::setup::secret_box_from_settings(&settings)?);
        let store = Arc::new(SqlStore::open(&settings.database_url).await?);
        // One database behind both: the platform's store and the Aleph deployer's pool.
        let (deployer, background) = deployer_for(&settings, store.clone())?;
        // The bot compares the wallet's Aleph instances with the database daily.
        #[cfg(feature = "aleph")]
        let background: Vec<Background> = background
            .into_iter()
            .chain(crate::deploy::aleph::reconcile::daily_watch(&settings, store.clone()).map(|w| Box::pin(w) as _))
            .collect();
        let proxy = http_proxy()?;
        let platform =
            Platform::new(PlatformConfig::from_settings(&settings), store, deployer, proxy, messenger, secrets);
        platform.inner.lock_background().extend(background);
        Ok(platform)
    }

    /// Converts the agent `id`, imported from the Python Baal, where it runs (see
    /// [`Deployer::convert`](crate::deploy::Deployer::convert)), under its lease as the bot's
    /// `/update` does, and returns when it is done. Progress and the outcome go to `chat`
    /// through the messenger. The owner is not told.
    pub async fn convert_imported(&self, id: AgentId, chat: ChatId) -> Result<super::jobs::Converted, PlatformError> {
        self.inner.convert_imported(id, chat).await
    }

    /// The engine's settings.
    pub fn config(&self) -> &PlatformConfig {
        &self.inner.config
    }

    /// The store the engine uses.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Processes one input fully: replies are sent before this returns; deployments continue as
    /// tracked background tasks (see [`Platform::wait_idle`]). A store failure is reported to the
    /// user as a generic apology and returned.
    #[tracing::instrument(name = "input", skip_all, fields(user = input.user_id, chat = input.chat_id))]
    pub async fn handle(&self, input: Input) -> Result<(), PlatformError> {
        let chat = input.chat_id;
        let result = self.inner.clone().handle(input).await;
        if let Err(err) = &result {
            tracing::error!(error = %err, chat, "input failed");
            self.inner
                .say(chat, Text::plain("Something went wrong on Baal's side. Please try again in a moment."))
                .await;
        }
        result
    }

    /// Waits until no tracked background task (deployment, restart, introduction) remains.
    pub async fn wait_idle(&self) {
        let mut rx = self.inner.tasks.subscribe();
        let _ = rx.wait_for(|running| *running == 0).await;
    }

    /// Resumes deployments a previous run left unfinished (or fails them cleanly, owner told),
    /// brings back agents recorded as running, and starts the poller that delivers agents'
    /// queued messages to their owners.
    pub async fn start(&self) -> Result<(), PlatformError> {
        self.inner.mark_interrupted().await?;
        self.inner.clone().resume_unfinished().await?;
        self.inner.restore_running().await?;
        let inner = self.inner.clone();
        let handle = tokio::spawn(async move { inner.poll_pending_forever().await });
        if let Some(old) = self.inner.poller.lock().map(|mut p| p.replace(handle)).ok().flatten() {
            old.abort();
        }
        let mut work: Vec<Background> = self.inner.lock_background().drain(..).collect();
        work.extend(self.inner.clone().health_checks());
        let handles = work.into_iter().map(tokio::spawn);
        if let Ok(mut running) = self.inner.background_running.lock() {
            running.extend(handles);
        }
        Ok(())
    }

    /// Stops the poller and waits for background tasks to finish.
    pub async fn shutdown(&self) {
        if let Some(poller) = self.inner.poller.lock().ok().and_then(|mut p| p.take()) {
            poller.abort();
        }
        if let Ok(mut running) = self.inner.background_running.lock() {
            running.drain(..).for_each(|task| task.abort());
        }
        self.wait_idle().await;
    }
}

/// Decrements the running-task count even if the task panics.
struct TaskGuard(watch::Sender<usize>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.send_modify(|running| *running = running.saturating_sub(1));
    }
}

fn lock_for<K: std::hash::Hash + Eq + Copy>(
    map: &Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
    key: K,
) -> Arc<tokio::sync::Mutex<()>> {
    let mut map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    map.entry(key).or_default().clone()
}

impl Inner {
    /// Runs `work` in the background, counted by `wait_idle`.
    pub fn spawn_tracked(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.tasks.send_modify(|running| *running += 1);
        let guard = TaskGuard(self.tasks.clone());
        tokio::spawn(async move {
            let _guard = guard;
            work.await;
        });
    }

    fn lock_background(&self) -> std::sync::MutexGuard<'_, Vec<Background>> {
        self.background.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn user_lock(&self, user: UserId) -> Arc<tokio::sync::Mutex<()>> {
        lock_for(&self.user_locks, user)
    }

    pub fn chat_lock(&self, chat: ChatId) -> Arc<tokio::sync::Mutex<()>> {
        lock_for(&self.chat_locks, chat)
    }

    pub fn is_in_flight(&self, agent: AgentId) -> bool {
        self.in_flight.lock().map(|set| set.contains(&agent)).unwrap_or(false)
    }

    /// Claims `agent` for one job of this process (a deployment, repair or release); false when
    /// one already runs here.
    pub(crate) fn claim_in_flight(&self, agent: AgentId) -> bool {
        self.in_flight.lock().map(|mut set| set.insert(agent)).unwrap_or(false)
    }

    /// Ends a claim [`Inner::claim_in_flight`] made.
    pub(crate) fn release_in_flight(&self, agent: AgentId) {
        if let Ok(mut set) = self.in_flight.lock() {
            set.remove(&agent);
        }
    }

    /// Sends a message; a front-end failure is logged, not fatal.
    pub async fn say(&self, chat: ChatId, text: Text) -> Option<MessageRef> {
        match self.messenger.send(chat, text).await {
            Ok(message) => Some(message),
            Err(err) => {
                tracing::warn!(error = %err, chat, "could not send a message");
                None
            }
        }
    }

    /// Edits `message`, or sends a new message when there is none or the edit fails.
    pub async fn edit_or_say(&self, chat: ChatId, message: Option<MessageRef>, text: Text) -> Option<MessageRef> {
        if let Some(message) = message {
            match self.messenger.edit(message, text.clone()).await {
                Ok(()) => return Some(message),
                Err(err) => tracing::debug!(error = %err, "edit failed; sending instead"),
            }
        }
        self.say(chat, text).await
    }

    async fn handle(self: Arc<Self>, input: Input) -> Result<(), PlatformError> {
        let received = std::time::Instant::now();
        super::observe::input(&input.kind);
        let lock = self.user_lock(input.user_id);
        let guard = lock.lock().await;
        // One read for the user and their state: each store call costs thread hand-offs
        // (`cargo bench --workspace --bench store_ops`). Creating or refreshing a user is a
        // write, and most inputs need neither.
        let state_key = input.user_id.to_string();
        let (user, raw_state) = match self.store.user_get_with_kv(input.user_id, state::NAMESPACE, &state_key).await? {
            Some((user, raw_state)) if input.username.is_none() || user.username == input.username => (user, raw_state),
            found => {
                let user = self.store.user_get_or_create(input.user_id, input.username.as_deref()).await?;
                (user, found.and_then(|(_, raw_state)| raw_state))
            }
        };
        let ctx = Ctx { user, chat: input.chat_id, received };
        let mut state = state::parse(input.user_id, raw_state);
        let before = state.clone();
        let after = match input.kind {
            InputKind::Command { name, args } => {
                self.command(&ctx, &mut state, &name, &args, input.message).await?;
                After::Nothing
            }
            InputKind::Text(text) => self.text(&ctx, &mut state, text).await?,
            InputKind::Button { data, message, press_id } => {
                let notice = self.button(&ctx, &mut state, &data, message).await;
                if let Err(err) = self.messenger.answer_press(&press_id, notice.as_deref().unwrap_or("")).await {
                    tracing::debug!(error = %err, "could not answer a button press");
                }
                After::Nothing
            }
        };
        if state != before {
            state::save(self.store.as_ref(), ctx.user_id(), &state).await?;
        }
        drop(guard);
        if let After::Chat { agent, text, first_time, limits } = after {
            self.chat_turn(&ctx, &agent, &text, first_time, limits).await?;
        }
        Ok(())
    }

    /// Loads, changes and saves one user's state under that user's lock (for background jobs).
    pub async fn update_state(&self, user: UserId, change: impl FnOnce(&mut UserState)) -> Result<(), StoreError> {
        let lock = self.user_lock(user);
        let _guard = lock.lock().await;
        let mut state = state::load(self.store.as_ref(), user).await?;
        change(&mut state);
        state::save(self.store.as_ref(), user, &state).await
    }

    /// The agent `id` if `user` owns it and it is not deleted.
    pub async fn owned_agent(&self, user: UserId, id: AgentId) -> Result<Option<Agent>, StoreError> {
        Ok(self.store.agent_get(id).await?.filter(|agent| agent.owner_id == user && !agent.deleted))
    }

    /// The agent's share link.
    pub fn share_link(&self, agent: &Agent) -> String {
        match &self.config.bot_username {
            Some(bot) => format!("https://t.me/{}?start=agent_{}", bot.trim_start_matches('@'), agent.slug),
            None => format!("/start agent_{}", agent.slug),
        }
    }

    pub fn now(&self) -> chrono::DateTime<Utc> {
        Utc::now()
    }
}

/// The deployer Baal's settings select (local without `ALEPH_PRIVATE_KEY`, else Aleph Cloud), for
/// tools that act on agents outside a running platform, such as `baal-cli agents delete`; the
/// Aleph deployer keeps its warm pool in `pool` (a [`SqlStore`] is one). Background work (the
/// Aleph VM pool) is not started: that stays with the platform.
pub fn deployer_from_settings(
    settings: &Settings,
    pool: Arc<dyn PoolStore>,
) -> Result<Arc<dyn Deployer>, PlatformError> {
    deployer_for(settings, pool).map(|(deployer, _background)| deployer)
}

/// The deployer the settings select, and any background work it needs (the Aleph VM pool).
fn deployer_for(
    settings: &Settings,
    store: Arc<dyn PoolStore>,
) -> Result<(Arc<dyn Deployer>, Vec<Background>), PlatformError> {
    match settings.deployer_kind() {
        #[cfg(feature = "aleph")]
        crate::config::DeployerKind::Aleph => {
            let aleph = Arc::new(
                crate::deploy::aleph::AlephDeployer::from_settings(settings, store)
                    .map_err(|err| PlatformError::Setup(format!("cannot set up the Aleph deployer: {err}")))?,
            );
            let pool = aleph.clone();
            let background: Vec<Background> = vec![Box::pin(async move { pool.run_pool().await })];
            Ok((aleph, background))
        }
        #[cfg(not(feature = "aleph"))]
        crate::config::DeployerKind::Aleph => {
            let _ = store;
            Err(PlatformError::Setup(
                "Aleph deployer not built into this binary (feature `aleph`): unset ALEPH_PRIVATE_KEY to run agents on this machine".into(),
            ))
        }
        #[cfg(feature = "local")]
        crate::config::DeployerKind::Local => {
            let _ = store;
            let local = crate::deploy::local::LocalDeployer::from_settings(settings)
                .map_err(|err| PlatformError::Setup(format!("cannot set up the local deployer: {err}")))?;
            Ok((Arc::new(local), Vec::new()))
        }
        #[cfg(not(feature = "local"))]
        crate::config::DeployerKind::Local => Err(PlatformError::Setup(
            "the local deployer is not built into this binary (feature `local`): set ALEPH_PRIVATE_KEY".into(),
        )),
    }
}

fn http_proxy() -> Result<Arc<dyn Proxy>, PlatformError> {
    let proxy = crate::proxy::http::HttpProxy::new()
        .map_err(|err| PlatformError::Setup(format!("cannot set up the HTTP client for agents: {err}")))?;
    Ok(Arc::new(proxy))
}
