//! The bot's life: log in, publish the command menu, read updates into the per-chat queues, and
//! stop cleanly on SIGTERM/SIGINT.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use baal_core::config::Settings;
use baal_core::platform::Input;
use baal_core::secrets::SecretBox;
use baal_core::store::Store;
use grammers_client::Client;
use grammers_client::peer::Peer;
use grammers_client::sender::{AutoSleep, ConnectionParams, SenderPool, UpdatesConfiguration};
use grammers_client::tl;
use grammers_client::update::Update;
use secrecy::ExposeSecret;

use crate::dispatch::{ChatQueues, InputHandler};
use crate::mapping::{self, IncomingMessage, IncomingPress};
use crate::messenger::TelegramMessenger;
use crate::session::StoreSession;

/// The engine the bot drives: the platform, or whatever an embedder puts in its place.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// Resumes background work (deployments, pollers) before updates flow.
    async fn start(&self) -> anyhow::Result<()>;
    /// Handles one input to completion, telling the user about any failure.
    async fn handle(&self, input: Input);
    /// Stops background work.
    async fn shutdown(&self);
}

/// How the bot runs.
pub struct BotOptions {
    /// How long in-flight turns and the engine's background work may take to finish at shutdown,
    /// in all.
    pub drain: Duration,
}

/// One turn: the engine handles the input, then "typing…" stops in that chat.
struct Turns {
    engine: Arc<dyn Engine>,
    messenger: Arc<TelegramMessenger>,
}

#[async_trait]
impl InputHandler for Turns {
    async fn handle(&self, input: Input) {
        let chat = input.chat_id;
        self.engine.handle(input).await;
        self.messenger.turn_finished(chat);
    }
}

/// Logs in, serves updates until SIGTERM/SIGINT, then shuts down in order. `build_engine` gets
/// the settings (with `bot_username` filled in from Telegram) and the messenger.
pub async fn run<F, Fut>(
    mut settings: Settings,
    store: Arc<dyn Store>,
    sealer: Arc<SecretBox>,
    options: BotOptions,
    build_engine: F,
) -> anyhow::Result<()>
where
    F: FnOnce(Settings, Arc<TelegramMessenger>) -> Fut,
    Fut: Future<Output = anyhow::Result<Arc<dyn Engine>>>,
{
    let (api_id, api_hash, token) = settings.require_telegram()?;
    let (api_hash, token) = (api_hash.clone(), token.clone());
    let bot_id = token.expose_secret().split(':').next().unwrap_or_default().to_owned();
    let session = Arc::new(StoreSession::load(store, sealer, &bot_id).await?);
    if session.has_login() {
        tracing::info!("found a saved Telegram login");
    }

    // Flood waits are left to the messenger, which honours them per request; the pool only
    // rides over dropped connections.
    let params = ConnectionParams {
        retry_policy: Box::new(AutoSleep {
            tries: NonZeroU32::new(3).expect("3 is not zero"),
            threshold: Duration::ZERO,
            io_errors_as_flood_of: Some(Duration::from_secs(1)),
        }),
        ..Default::default()
    };
    let SenderPool { runner, handle, updates } = SenderPool::with_configuration(Arc::clone(&session), api_id, params);
    let client = Client::new(handle.clone());
    let pool = tokio::spawn(runner.run());

    let authorized = client.is_authorized().await.map_err(|e| anyhow::anyhow!(mapping::login_error(&e)))?;
    if !authorized {
        tracing::info!("logging in to Telegram as a bot");
        client
            .bot_sign_in(token.expose_secret(), api_hash.expose_secret())
            .await
            .map_err(|e| anyhow::anyhow!(mapping::login_error(&e)))?;
        session.save().await?;
    }
    let me = client.get_me().await.map_err(|e| anyhow::anyhow!(mapping::login_error(&e)))?;
    let username = me.username().map(str::to_owned);
    tracing::info!(bot = username.as_deref().unwrap_or("?"), "logged in to Telegram");
    if settings.bot_username.is_none() {
        settings.bot_username = username.clone();
    }
    if let Err(error) = client.invoke(&mapping::command_menu_request()).await {
        tracing::warn!(%error, "could not publish the command menu; the bot still works");
    }

    let messenger = Arc::new(TelegramMessenger::new(client.clone(), Arc::clone(&session)));
    let engine = build_engine(settings, Arc::clone(&messenger)).await?;
    engine.start().await.context("the platform could not start")?;

    let mut stream = client
        .stream_updates(updates, UpdatesConfiguration { catch_up: false })
        .await
        .map_err(|e| anyhow::anyhow!("cannot receive Telegram updates: {e}"))?;
    let mut queues =
        ChatQueues::new(Arc::new(Turns { engine: Arc::clone(&engine), messenger: Arc::clone(&messenger) }));
    let stop = stop_signal();
    tokio::pin!(stop);
    tracing::info!("taking updates");
    loop {
        tokio::select! {
            () = &mut stop => break,
            update = stream.next() => match update {
                Ok(update) => {
                    if let Some(input) = to_input(update, username.as_deref()) {
                        queues.push(input);
                    }
                }
                Err(grammers_client::InvocationError::Dropped(reason)) => {
                    tracing::error!(reason, "the Telegram connection pool stopped");
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "could not read an update");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    // One bound for both the turns in flight and the engine's background work.
    let deadline = tokio::time::Instant::now() + options.drain;
    tracing::info!(busy_chats = queues.busy_chats(), "stopping: no new updates; letting turns finish");
    let unfinished = queues.drain(options.drain).await;
    if unfinished > 0 {
        tracing::warn!(unfinished, "turns still running after the shutdown bound were stopped");
    }
    if tokio::time::timeout_at(deadline, engine.shutdown()).await.is_err() {
        tracing::warn!("background work still running after the shutdown bound; it resumes at the next start");
    }
    if let Err(error) = stream.sync_update_state().await {
        tracing::warn!(%error, "could not record the update state");
    }
    session.save().await.context("could not save the Telegram session")?;
    handle.quit();
    let _ = pool.await;
    tracing::info!("stopped");
    Ok(())
}

/// The platform input for an update, if it carries one. Presses that carry no input are
/// acknowledged here, so the user's button stops spinning.
fn to_input(update: Update, bot_username: Option<&str>) -> Option<Input> {
    match update {
        Update::NewMessage(message) if !message.outgoing() => {
            let chat_id = message.peer_id().bot_api_dialog_id()?;
            let user_id = message.sender_id()?;
            // Channel posts and anonymous admins have no user behind them.
            if user_id.kind() != grammers_client::session::types::PeerKind::User {
                return None;
            }
            let username = match message.sender() {
                Some(Peer::User(user)) => user.username().map(str::to_owned),
                _ => None,
            };
            mapping::message_input(
                IncomingMessage {
                    user_id: user_id.bot_api_dialog_id()?,
                    username,
                    chat_id,
                    message_id: message.id(),
                    text: message.text().to_owned(),
                },
                bot_username,
            )
        }
        Update::CallbackQuery(query) => {
            let tl::enums::Update::BotCallbackQuery(raw) = &query.raw else {
                acknowledge(query);
                return None;
            };
            let username = match query.sender() {
                Some(Peer::User(user)) => user.username().map(str::to_owned),
                _ => None,
            };
            let chat_id = grammers_client::session::types::PeerId::from(raw.peer.clone()).bot_api_dialog_id()?;
            let input = mapping::press_input(IncomingPress {
                user_id: raw.user_id,
                username,
                chat_id,
                message_id: raw.msg_id,
                query_id: raw.query_id,
                data: raw.data.clone().unwrap_or_default(),
            });
            if input.is_none() {
                acknowledge(query);
            }
            input
        }
        _ => None,
    }
}

/// Answers a press nobody handles, off the update loop, so its button stops spinning.
fn acknowledge(query: grammers_client::update::CallbackQuery) {
    tokio::spawn(async move {
        if let Err(error) = query.answer().send().await {
            tracing::debug!(%error, "could not acknowledge a button press");
        }
    });
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the bot");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
