//! The bot's life: log in, publish the command menu, read updates into the per-chat queues, and
//! stop cleanly on SIGTERM/SIGINT.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use baal_core::config::Settings;
use baal_core::platform::Input;
use baal_core::secrets::SecretBox;
use baal_core::store::{SeenKind, Store};
use chrono::Utc;
use grammers_client::client::UpdateStream;
use grammers_client::peer::{Peer, PeerMap};
use grammers_client::sender::{AutoSleep, ConnectionParams, SenderPool, UpdatesConfiguration};
use grammers_client::session::types::PeerId;
use grammers_client::session::updates::State;
use grammers_client::{Client, tl};
use secrecy::ExposeSecret;
use tokio::sync::mpsc;

use crate::dispatch::{ChatQueues, InputHandler};
use crate::mapping::{self, Incoming};
use crate::messenger::TelegramMessenger;
use crate::session::StoreSession;

/// How often the update state is saved while it moves: a crash loses at most this much of it,
/// and catch-up asks again for what it lost.
const STATE_SAVE_EVERY: Duration = Duration::from_secs(5);
/// How often the update state catches up with the inputs handed over since the last update
/// (in memory; the saver writes it).
const ADVANCE_EVERY: Duration = Duration::from_secs(1);
/// How long a taken update is remembered so that a second copy is dropped: longer than any
/// downtime catch-up bridges.
const SEEN_KEPT: chrono::TimeDelta = chrono::TimeDelta::days(7);
/// How often updates older than [`SEEN_KEPT`] are forgotten.
const SEEN_PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Updates read from Telegram but not yet taken by the update loop.
const READ_AHEAD: usize = 256;

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
    let session = Arc::new(StoreSession::load(Arc::clone(&store), sealer, &bot_id).await?);
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

    // Catch-up: what was sent while the bot was down is asked for from the saved state at the
    // first read, and comes before anything newer.
    let stream = client
        .stream_updates(updates, UpdatesConfiguration { catch_up: true })
        .await
        .map_err(|e| anyhow::anyhow!("cannot receive Telegram updates: {e}"))?;
    let (sender, mut read) = mpsc::channel(READ_AHEAD);
    let reader = tokio::spawn(read_updates(stream, sender));
    let saver = tokio::spawn(Arc::clone(&session).keep_saved(STATE_SAVE_EVERY));
    let pruner = tokio::spawn(prune_seen(Arc::clone(&store)));
    let turns = Turns { engine: Arc::clone(&engine), messenger: Arc::clone(&messenger) };
    let mut intake = Intake::new(ChatQueues::new(Arc::new(turns)), store, Arc::clone(&session), username);
    let stop = stop_signal();
    tokio::pin!(stop);
    // Inputs are handed over while no update arrives too; the state follows them for the saver.
    let mut advance = tokio::time::interval(ADVANCE_EVERY);
    tracing::info!("taking updates");
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = advance.tick() => intake.advance(),
            next = read.recv() => {
                // The reader ends only when the connection pool has stopped (it said why).
                let Some((update, state, peers)) = next else { break };
                if let Taken::Unanswered(query) = intake.take(&update, &state, |id| username_in(&peers, id)) {
                    acknowledge(&client, query);
                }
            }
        }
    }
    // Updates read but not handed over are not in the saved state: the next start asks for them
    // again.
    reader.abort();
    saver.abort();
    pruner.abort();

    // One bound for both the turns in flight and the engine's background work.
    let deadline = tokio::time::Instant::now() + options.drain;
    tracing::info!(busy_chats = intake.busy_chats(), "stopping: no new updates; letting turns finish");
    let unfinished = intake.drain(options.drain).await;
    if unfinished > 0 {
        tracing::warn!(unfinished, "turns still running after the shutdown bound were stopped");
    }
    if tokio::time::timeout_at(deadline, engine.shutdown()).await.is_err() {
        tracing::warn!("background work still running after the shutdown bound; it resumes at the next start");
    }
    session.save().await.context("could not save the Telegram session")?;
    handle.quit();
    let _ = pool.await;
    tracing::info!("stopped");
    Ok(())
}

/// Reads updates in order into `sender`, off the update loop: a read is never dropped halfway
/// (grammers' `next_raw` is not cancel-safe), whatever the loop is doing.
async fn read_updates(mut stream: UpdateStream, sender: mpsc::Sender<(tl::enums::Update, State, PeerMap)>) {
    loop {
        match stream.next_raw().await {
            Ok(update) => {
                if sender.send(update).await.is_err() {
                    return;
                }
            }
            Err(grammers_client::InvocationError::Dropped(reason)) => {
                tracing::error!(reason, "the Telegram connection pool stopped");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "could not read an update");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// What the update loop did with one update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Queued behind its chat's earlier inputs; when its turn comes, it is handled unless it is a
    /// copy of an update handed to the platform before (caught up again after a crash).
    Queued,
    /// Nothing for the platform.
    Ignored,
    /// A press nothing handles; the caller acknowledges it by this query id.
    Unanswered(i64),
}

/// The update loop's handling of one update, apart from reading it: mapping, queueing per chat
/// behind a check for copies, and moving the update state the session saves.
pub(crate) struct Intake<H: InputHandler> {
    queues: ChatQueues<H>,
    store: Arc<dyn Store>,
    session: Arc<StoreSession>,
    bot_username: Option<String>,
    /// Updates taken, oldest first, with whether they have been handed over (or dropped): the
    /// update state moves past an update only once it and every update before it have been.
    pending: VecDeque<(State, Arc<AtomicBool>)>,
}

impl<H: InputHandler> Intake<H> {
    pub(crate) fn new(
        queues: ChatQueues<H>,
        store: Arc<dyn Store>,
        session: Arc<StoreSession>,
        bot_username: Option<String>,
    ) -> Self {
        Intake { queues, store, session, bot_username, pending: VecDeque::new() }
    }

    /// Takes one update in the order Telegram's stream gave it; `username` names the users that
    /// came with it.
    pub(crate) fn take(
        &mut self,
        update: &tl::enums::Update,
        state: &State,
        username: impl Fn(i64) -> Option<String>,
    ) -> Taken {
        let handed_over = Arc::new(AtomicBool::new(true));
        let taken = self.queue(update, username, &handed_over);
        self.pending.push_back((state.clone(), handed_over));
        self.advance();
        taken
    }

    fn queue(
        &mut self,
        update: &tl::enums::Update,
        username: impl Fn(i64) -> Option<String>,
        handed_over: &Arc<AtomicBool>,
    ) -> Taken {
        let (input, (chat, kind, id)) = match mapping::incoming(update, username) {
            None => return Taken::Ignored,
            Some(Incoming::Unhandled(query)) => return Taken::Unanswered(query),
            Some(Incoming::Message(message)) => {
                let seen = (message.chat_id, SeenKind::Message, i64::from(message.message_id));
                match mapping::message_input(message, self.bot_username.as_deref()) {
                    Some(input) => (input, seen),
                    None => return Taken::Ignored,
                }
            }
            Some(Incoming::Press(press)) => {
                let (query, seen) = (press.query_id, (press.chat_id, SeenKind::Press, press.query_id));
                match mapping::press_input(press) {
                    Some(input) => (input, seen),
                    None => return Taken::Unanswered(query),
                }
            }
        };
        handed_over.store(false, Ordering::SeqCst);
        let (store, handed_over) = (Arc::clone(&self.store), Arc::clone(handed_over));
        // Checked when the input's turn comes, not now: an input still queued when the bot stops
        // is neither marked seen nor inside the saved state, so the next start handles it.
        self.queues.push_gated(input, async move {
            let first = match store.update_seen(chat, kind, id, Utc::now()).await {
                Ok(first) => first,
                // A store that cannot answer is no reason to lose a message; the platform
                // reports its own store errors to the user.
                Err(error) => {
                    tracing::warn!(%error, "could not check whether an update was seen; handling it");
                    true
                }
            };
            if !first {
                tracing::debug!(chat, id, kind = kind.as_str(), "dropped an update handed over before");
            }
            handed_over.store(true, Ordering::SeqCst);
            first
        });
        Taken::Queued
    }

    /// Moves the update state past every update handed over with all those before it.
    pub(crate) fn advance(&mut self) {
        while let Some((state, handed_over)) = self.pending.front() {
            if !handed_over.load(Ordering::SeqCst) {
                break;
            }
            if let Err(error) = self.session.record_update(state) {
                tracing::warn!(%error, "could not record the update state");
            }
            self.pending.pop_front();
        }
    }

    /// Chats with inputs queued or running.
    pub(crate) fn busy_chats(&self) -> usize {
        self.queues.busy_chats()
    }

    /// Waits up to `bound` for queued inputs (see [`ChatQueues::drain`]), then moves the update
    /// state past what was handed over; how many chats were still busy.
    pub(crate) async fn drain(&mut self, bound: Duration) -> usize {
        let unfinished = self.queues.drain(bound).await;
        self.advance();
        unfinished
    }
}

/// The @username of user `id` among the peers that came with an update.
fn username_in(peers: &PeerMap, id: i64) -> Option<String> {
    match peers.get(PeerId::user(id)?)? {
        Peer::User(user) => user.username().map(str::to_owned),
        _ => None,
    }
}

/// Forgets the updates taken more than [`SEEN_KEPT`] ago, now and every [`SEEN_PRUNE_EVERY`].
async fn prune_seen(store: Arc<dyn Store>) {
    loop {
        match store.updates_seen_prune(Utc::now() - SEEN_KEPT).await {
            Ok(pruned) => tracing::debug!(pruned, "forgot old seen updates"),
            Err(error) => tracing::warn!(%error, "could not forget old seen updates"),
        }
        tokio::time::sleep(SEEN_PRUNE_EVERY).await;
    }
}

/// Answers a press nobody handles, off the update loop, so its button stops spinning.
fn acknowledge(client: &Client, query_id: i64) {
    let client = client.clone();
    tokio::spawn(async move {
        let answer = tl::functions::messages::SetBotCallbackAnswer {
            alert: false,
            query_id,
            message: None,
            url: None,
            cache_time: 0,
        };
        if let Err(error) = client.invoke(&answer).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PlatformEngine;
    use crate::recorded::{self, group, user};
    use baal_core::deploy::local::LocalDeployer;
    use baal_core::platform::{Platform, PlatformConfig};
    use baal_core::proxy::http::HttpProxy;
    use baal_core::testing::{db, messenger::MemoryMessenger};
    use grammers_client::session::types::{UpdateState, UpdatesState};
    use grammers_client::session::updates::{MessageBoxes, UpdatesLike};
    use grammers_session::Session as _;

    /// The engine the binary runs (`PlatformEngine` over a real platform), as the queues' handler.
    struct Engined(Arc<dyn Engine>);

    #[async_trait]
    impl InputHandler for Engined {
        async fn handle(&self, input: Input) {
            self.0.handle(input).await;
        }
    }

    /// One life of the bot: its session read from the store, a platform over a messenger that
    /// records what it shows, and the update loop's intake.
    struct Life {
        session: Arc<StoreSession>,
        messenger: Arc<MemoryMessenger>,
        intake: Intake<Engined>,
    }

    impl Life {
        async fn start(store: &Arc<dyn Store>, sealer: &Arc<SecretBox>, dir: &std::path::Path) -> Life {
            let session = Arc::new(StoreSession::load(store.clone(), sealer.clone(), "1").await.unwrap());
            let messenger = Arc::new(MemoryMessenger::new());
            let platform = Platform::new(
                PlatformConfig::default(),
                store.clone(),
                Arc::new(LocalDeployer::new(dir.join("agents"), "baal-agent").unwrap()),
                Arc::new(HttpProxy::new().unwrap()),
                messenger.clone(),
                sealer.clone(),
            );
            let engine: Arc<dyn Engine> = Arc::new(PlatformEngine(platform));
            let queues = ChatQueues::new(Arc::new(Engined(engine)));
            let intake = Intake::new(queues, store.clone(), Arc::clone(&session), Some("baal_bot".into()));
            Life { session, messenger, intake }
        }

        /// Takes each update as the live loop does, in the order given.
        fn take(&mut self, updates: Vec<(tl::enums::Update, State)>) -> Vec<Taken> {
            let names = |id: i64| (id == 7).then(|| "ann".to_owned());
            updates.into_iter().map(|(update, state)| self.intake.take(&update, &state, names)).collect()
        }

        /// Lets every queued input finish and saves, as a clean stop does; what each chat was shown.
        async fn finish(mut self) -> Arc<MemoryMessenger> {
            assert_eq!(self.intake.drain(Duration::from_secs(60)).await, 0);
            self.session.save().await.unwrap();
            self.messenger
        }
    }

    /// Socket updates as Telegram pushes them: an `updates` container.
    fn pushed(updates: Vec<tl::enums::Update>) -> UpdatesLike {
        UpdatesLike::Updates(
            tl::types::Updates { updates, users: Vec::new(), chats: Vec::new(), date: 0, seq: 0 }.into(),
        )
    }

    fn unknown(command: &str) -> String {
        format!("I don't know /{command}. /help lists what I can do.")
    }

    const PRIVATE: i64 = 7;
    const GROUP: i64 = 123;

    async fn catch_up_after_a_crash(store: Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Arc::new(SecretBox::from_secret(&baal_core::secrets::generate_key().unwrap()).unwrap());

        // First life: logged in at pts 9 (grammers' `updates.getState`), takes message 5 live,
        // saves as the periodic save does, and dies before anything else is saved.
        let mut first = Life::start(&store, &sealer, dir.path()).await;
        let start = UpdatesState { pts: 9, qts: 0, date: 1000, seq: 1, channels: Vec::new() };
        first.session.set_update_state(UpdateState::All(start)).await.unwrap();
        let mut boxes = MessageBoxes::new();
        boxes.set_state(tl::types::updates::State { pts: 9, qts: 0, date: 1000, seq: 1, unread_count: 0 });
        let one = recorded::message(user(PRIVATE), None, 5, "/one");
        let (live, _, _) = boxes.process_updates(pushed(vec![recorded::new_message(one.clone(), 10)])).unwrap();
        assert_eq!(first.take(live), [Taken::Queued]);
        while first.messenger.bodies(PRIVATE).is_empty() {
            tokio::task::yield_now().await;
        }
        first.intake.advance();
        assert!(first.session.save_if_changed().await.unwrap(), "what the periodic save does");
        drop(first);

        // While the bot was down: messages 6 and 7 in the private chat and 3 in a group. The
        // next life catches up from the saved state; Telegram's difference repeats message 5
        // (the state saved with it may lag), and a new message 8 arrives after it.
        let mut second = Life::start(&store, &sealer, dir.path()).await;
        let saved = second.session.updates_state().await.unwrap();
        let mut boxes = MessageBoxes::load(saved);
        let request = boxes.get_difference().expect("catch-up asks for what was missed");
        assert_eq!((request.pts, request.date), (10, 1000), "from the state of the last update taken");
        let missed = vec![
            one,
            recorded::message(user(PRIVATE), None, 6, "/two"),
            recorded::message(group(GROUP), Some(user(8)), 3, "/three"),
            recorded::message(user(PRIVATE), None, 7, "/four"),
        ];
        let difference = tl::types::updates::Difference {
            new_messages: missed,
            new_encrypted_messages: Vec::new(),
            other_updates: Vec::new(),
            chats: Vec::new(),
            users: Vec::new(),
            state: tl::types::updates::State { pts: 14, qts: 0, date: 1100, seq: 2, unread_count: 0 }.into(),
        };
        let (caught_up, _, _) = boxes.apply_difference(difference.into());
        let eight = recorded::message(user(PRIVATE), None, 8, "/five");
        let (live, _, _) = boxes.process_updates(pushed(vec![recorded::new_message(eight, 15)])).unwrap();
        let taken = second.take(caught_up.into_iter().chain(live).collect());
        assert_eq!(taken, [Taken::Queued; 5]);

        // A press taken twice (a copy) is handled once.
        let press = recorded::press(-42, PRIVATE, user(PRIVATE), 99, b"nav_main");
        let presses = vec![(press.clone(), State { date: 1200, seq: 2, message_box: None }); 2];
        assert_eq!(second.take(presses), [Taken::Queued; 2]);

        let session = Arc::clone(&second.session);
        let shown = second.finish().await;
        let state = session.updates_state().await.unwrap();
        assert_eq!((state.pts, state.date), (15, 1100), "the state of the last update handed over");
        let private = shown.bodies(PRIVATE);
        assert_eq!(private[..3], [unknown("two"), unknown("four"), unknown("five")], "in order, without /one");
        assert_eq!(private.len(), 4, "and the one press's menu: {private:?}");
        assert_eq!(shown.bodies(-GROUP), [unknown("three")]);
        assert_eq!(shown.press_notices().len(), 1, "the press was answered once");
    }

    /// The bot stops (its drain bound ran out, or it crashed) with inputs taken but still queued:
    /// they are neither marked seen nor inside the saved state, so the next start handles them.
    async fn queued_inputs_survive_a_stop(store: Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Arc::new(SecretBox::from_secret(&baal_core::secrets::generate_key().unwrap()).unwrap());
        let mut first = Life::start(&store, &sealer, dir.path()).await;
        let start = UpdatesState { pts: 9, qts: 0, date: 1000, seq: 1, channels: Vec::new() };
        first.session.set_update_state(UpdateState::All(start)).await.unwrap();
        let mut boxes = MessageBoxes::new();
        boxes.set_state(tl::types::updates::State { pts: 9, qts: 0, date: 1000, seq: 1, unread_count: 0 });
        let six = recorded::message(user(PRIVATE), None, 6, "/six");
        let seven = recorded::message(user(PRIVATE), None, 7, "/seven");
        let pushed_now = pushed(vec![recorded::new_message(six.clone(), 10), recorded::new_message(seven.clone(), 11)]);
        let (live, _, _) = boxes.process_updates(pushed_now).unwrap();
        // A turn of the chat that outlasts the shutdown bound: the two messages queue behind it.
        let turn = Input::from_text(PRIVATE, PRIVATE, "a long turn");
        first.intake.queues.push_gated(turn, std::future::pending());
        assert_eq!(first.take(live), [Taken::Queued; 2]);
        assert_eq!(first.intake.drain(Duration::from_millis(200)).await, 1, "the bound ran out");
        first.session.save().await.unwrap();
        assert!(first.messenger.bodies(PRIVATE).is_empty());

        let mut second = Life::start(&store, &sealer, dir.path()).await;
        let mut boxes = MessageBoxes::load(second.session.updates_state().await.unwrap());
        let request = boxes.get_difference().expect("catch-up");
        assert_eq!(request.pts, 9, "the state stayed before what was not handed over");
        let difference = tl::types::updates::Difference {
            new_messages: vec![six, seven],
            new_encrypted_messages: Vec::new(),
            other_updates: Vec::new(),
            chats: Vec::new(),
            users: Vec::new(),
            state: tl::types::updates::State { pts: 11, qts: 0, date: 1100, seq: 2, unread_count: 0 }.into(),
        };
        let (caught_up, _, _) = boxes.apply_difference(difference.into());
        assert_eq!(second.take(caught_up), [Taken::Queued; 2]);
        let shown = second.finish().await;
        assert_eq!(shown.bodies(PRIVATE), [unknown("six"), unknown("seven")]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_inputs_survive_a_stop_in_sqlite() {
        let db = db::sqlite().await;
        queued_inputs_survive_a_stop(db.shared()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_inputs_survive_a_stop_in_postgres() {
        let Some(db) = db::postgres().await else { return };
        queued_inputs_survive_a_stop(db.shared()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn catch_up_after_a_crash_keeps_each_chats_order_and_drops_copies_in_sqlite() {
        let db = db::sqlite().await;
        catch_up_after_a_crash(db.shared()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn catch_up_after_a_crash_keeps_each_chats_order_and_drops_copies_in_postgres() {
        let Some(db) = db::postgres().await else { return };
        catch_up_after_a_crash(db.shared()).await;
    }
}
