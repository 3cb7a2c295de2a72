//! The bot's MTProto session, kept in the platform's `Store` rather than a file.
//!
//! grammers-session's own SQLite storage cannot link beside sqlx's SQLite, so this is our own
//! `Session`. What it keeps:
//! - the login (home data centre and the data-centre options, whose `auth_key` *is* the bot's
//!   login) and the update state: one value sealed with `SecretBox`, written whenever the login
//!   changes, every few seconds while the update state moves ([`StoreSession::keep_saved`]) and
//!   at shutdown. The update state is that of the updates the bot has handed to the platform
//!   ([`StoreSession::record_update`]), never further, so what a crash or a stop interrupts is
//!   asked for again at the next start (and a copy handed over before is dropped by the store's
//!   `update_seen`);
//! - the peers Telegram told us about (ids and access hashes, needed to message a user later),
//!   one small value per peer, read back on demand. They are not secrets (they only work together
//!   with the auth key), so they are stored as plain JSON and need no listing of the key-value
//!   area at start.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use baal_core::secrets::{SealContext, SecretBox, SecretsError};
use baal_core::store::{Store, StoreError};
use grammers_session::types::{ChannelState, DcOption, PeerId, PeerInfo, UpdateState, UpdatesState};
use grammers_session::updates::{MessageBox, State};
use grammers_session::{BoxFuture, Session, SessionData};
use serde::{Deserialize, Serialize};

/// Key-value namespace of the sealed login.
const LOGIN_NAMESPACE: &str = "telegram.session";
/// Key-value namespace of cached peers.
const PEER_NAMESPACE: &str = "telegram.peers";

/// The session could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The store failed.
    #[error("the Telegram session could not be read or saved: {0}")]
    Store(#[from] StoreError),
    /// The sealed login does not open.
    #[error(
        "the saved Telegram login cannot be opened ({0}). If BOT_ENCRYPTION_KEY changed, restore the old key, \
         or delete the saved login with `baal-cli` and start again to log in anew"
    )]
    Sealed(#[from] SecretsError),
    /// What was stored is not a session this program wrote.
    #[error("the saved Telegram session is unreadable ({0}); delete it and start again to log in anew")]
    Corrupt(String),
    /// A thread panicked while holding the session lock.
    #[error("the Telegram session lock is poisoned after a crash; restart the bot")]
    Poisoned,
}

/// The sealed part: the login and the update state.
#[derive(Serialize, Deserialize)]
struct Login {
    home_dc: i32,
    dc_options: Vec<DcOption>,
    updates: UpdatesState,
}

/// A grammers [`Session`] persisted through the [`Store`]'s key-value area.
pub struct StoreSession {
    data: Mutex<SessionData>,
    store: Arc<dyn Store>,
    sealer: Arc<SecretBox>,
    /// Key of the login: one per bot, so switching `TELEGRAM_BOT_TOKEN` to another bot never
    /// reuses the first bot's login.
    key: String,
    /// Bumped by every change of the update state; `saved` is the count the last save wrote.
    changes: AtomicU64,
    saved: AtomicU64,
    /// Saves one at a time, each writing a snapshot taken under this lock: a save that took its
    /// snapshot first can never land last and put back an older login.
    save_lock: tokio::sync::Mutex<()>,
}

impl StoreSession {
    /// Loads the session of the bot whose token starts with `bot_id` (the part before `:`), or
    /// starts a fresh one when none was saved.
    pub async fn load(store: Arc<dyn Store>, sealer: Arc<SecretBox>, bot_id: &str) -> Result<Self, SessionError> {
        let key = format!("bot:{bot_id}");
        let mut data = SessionData::default();
        if let Some(sealed) = store.kv_get(LOGIN_NAMESPACE, &key).await? {
            let json = sealer.open_for(&SealContext::kv(LOGIN_NAMESPACE, &key), &sealed)?;
            let login: Login = serde_json::from_slice(&json).map_err(|e| SessionError::Corrupt(e.to_string()))?;
            data.home_dc = login.home_dc;
            data.dc_options.extend(login.dc_options.into_iter().map(|o| (o.id, o)));
            data.updates_state = login.updates;
        }
        Ok(StoreSession {
            data: Mutex::new(data),
            store,
            sealer,
            key,
            changes: AtomicU64::new(0),
            saved: AtomicU64::new(0),
            save_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether a login (an auth key for the home data centre) is present.
    pub fn has_login(&self) -> bool {
        self.lock().map(|d| d.dc_options.get(&d.home_dc).is_some_and(|o| o.auth_key.is_some())).unwrap_or(false)
    }

    /// Writes the login and the update state, sealed.
    pub async fn save(&self) -> Result<(), SessionError> {
        let _one_at_a_time = self.save_lock.lock().await;
        let changes = self.changes.load(Ordering::SeqCst);
        let login = {
            let data = self.lock()?;
            let mut dc_options: Vec<DcOption> = data.dc_options.values().cloned().collect();
            dc_options.sort_by_key(|o| o.id);
            Login { home_dc: data.home_dc, dc_options, updates: data.updates_state.clone() }
        };
        let json = serde_json::to_vec(&login).map_err(|e| SessionError::Corrupt(e.to_string()))?;
        let sealed = self.sealer.seal_for(&SealContext::kv(LOGIN_NAMESPACE, &self.key), &json)?;
        self.store.kv_put(LOGIN_NAMESPACE, &self.key, &sealed).await?;
        self.saved.fetch_max(changes, Ordering::SeqCst);
        Ok(())
    }

    /// Whether the update state moved since the last save that completed.
    #[cfg(test)]
    fn unsaved(&self) -> bool {
        self.changes.load(Ordering::SeqCst) != self.saved.load(Ordering::SeqCst)
    }

    /// Saves when the update state moved since the last save; whether it did.
    pub async fn save_if_changed(&self) -> Result<bool, SessionError> {
        if self.changes.load(Ordering::SeqCst) == self.saved.load(Ordering::SeqCst) {
            return Ok(false);
        }
        self.save().await.map(|()| true)
    }

    /// Saves every `every` while the update state moves, until the task is dropped: a crash then
    /// loses at most that much of the state, and catch-up asks again for what it lost.
    pub async fn keep_saved(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            if let Err(error) = self.save_if_changed().await {
                tracing::warn!(%error, "could not save the Telegram update state; trying again");
            }
        }
    }

    /// Moves the update state to `state`, the state of an update the bot is done taking (handed
    /// to the platform, or dropped on purpose), as are all before it. Only the entry the update belongs to moves; the common
    /// entry's date and seq move with its pts only, so the state never claims more than was taken.
    pub fn record_update(&self, state: &State) -> Result<(), SessionError> {
        let update = match state.message_box {
            Some(MessageBox::Common { pts }) => UpdateState::Primary { pts, date: state.date, seq: state.seq },
            Some(MessageBox::Secondary { qts }) => UpdateState::Secondary { qts },
            Some(MessageBox::Channel { channel_id, pts }) => UpdateState::Channel { id: channel_id, pts },
            // Updates without a pts (presses, for one) move nothing catch-up would ask from.
            None => return Ok(()),
        };
        self.apply(update)
    }

    fn apply(&self, update: UpdateState) -> Result<(), SessionError> {
        let mut data = self.lock()?;
        let state = &mut data.updates_state;
        match update {
            UpdateState::All(all) => *state = all,
            UpdateState::Primary { pts, date, seq } => {
                state.pts = pts;
                state.date = date;
                state.seq = seq;
            }
            UpdateState::Secondary { qts } => state.qts = qts,
            UpdateState::Channel { id, pts } => {
                state.channels.retain(|c| c.id != id);
                state.channels.push(ChannelState { id, pts });
            }
        }
        self.changes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn lock(&self) -> Result<MutexGuard<'_, SessionData>, SessionError> {
        self.data.lock().map_err(|_| SessionError::Poisoned)
    }
}

impl Session for StoreSession {
    type Error = SessionError;

    fn home_dc_id(&self) -> Result<i32, SessionError> {
        Ok(self.lock()?.home_dc)
    }

    fn set_home_dc_id(&self, dc_id: i32) -> BoxFuture<'_, Result<(), SessionError>> {
        Box::pin(async move {
            let changed = {
                let mut data = self.lock()?;
                std::mem::replace(&mut data.home_dc, dc_id) != dc_id
            };
            if changed { self.save().await } else { Ok(()) }
        })
    }

    fn dc_option(&self, dc_id: i32) -> Result<Option<DcOption>, SessionError> {
        Ok(self.lock()?.dc_options.get(&dc_id).cloned())
    }

    fn set_dc_option(&self, dc_option: &DcOption) -> BoxFuture<'_, Result<(), SessionError>> {
        let dc_option = dc_option.clone();
        Box::pin(async move {
            let changed = {
                let mut data = self.lock()?;
                data.dc_options.insert(dc_option.id, dc_option.clone()).as_ref() != Some(&dc_option)
            };
            if changed { self.save().await } else { Ok(()) }
        })
    }

    fn peer(&self, peer: PeerId) -> BoxFuture<'_, Result<Option<PeerInfo>, SessionError>> {
        Box::pin(async move {
            if let Some(info) = self.lock()?.peer_infos.get(&peer) {
                return Ok(Some(info.clone()));
            }
            let Some(json) = self.store.kv_get(PEER_NAMESPACE, &peer_key(peer)).await? else {
                return Ok(None);
            };
            let info: PeerInfo = serde_json::from_slice(&json).map_err(|e| SessionError::Corrupt(e.to_string()))?;
            self.lock()?.peer_infos.entry(peer).or_insert_with(|| info.clone());
            Ok(Some(info))
        })
    }

    fn cache_peer(&self, peer: PeerInfo) -> BoxFuture<'_, Result<(), SessionError>> {
        Box::pin(async move {
            let id = peer.id();
            let merged = {
                let mut data = self.lock()?;
                let mut merged = data.peer_infos.get(&id).cloned().unwrap_or_else(|| peer.clone());
                merged.extend_info(&peer);
                let changed = data.peer_infos.get(&id) != Some(&merged);
                data.peer_infos.insert(id, merged.clone());
                changed.then_some(merged)
            };
            // Written only when something new was learnt: most updates repeat known peers.
            if let Some(merged) = merged {
                let json = serde_json::to_vec(&merged).map_err(|e| SessionError::Corrupt(e.to_string()))?;
                self.store.kv_put(PEER_NAMESPACE, &peer_key(id), &json).await?;
            }
            Ok(())
        })
    }

    fn updates_state(&self) -> BoxFuture<'_, Result<UpdatesState, SessionError>> {
        Box::pin(async move { Ok(self.lock()?.updates_state.clone()) })
    }

    fn set_update_state(&self, update: UpdateState) -> BoxFuture<'_, Result<(), SessionError>> {
        // Kept in memory and written by `keep_saved` and at shutdown: writing on every update
        // would put one database write behind each message.
        Box::pin(async move { self.apply(update) })
    }
}

fn peer_key(peer: PeerId) -> String {
    peer.bot_api_dialog_id_unchecked().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use baal_core::testing::db;
    use grammers_session::types::PeerAuth;

    fn sealer() -> Arc<SecretBox> {
        Arc::new(SecretBox::from_secret(&baal_core::secrets::generate_key().unwrap()).unwrap())
    }

    fn dc_options_of(session: &StoreSession) -> std::collections::HashMap<i32, DcOption> {
        session.lock().map(|d| d.dc_options.clone()).unwrap_or_default()
    }

    async fn round_trip(store: Arc<dyn Store>) {
        let sealer = sealer();
        let session = StoreSession::load(store.clone(), sealer.clone(), "123").await.unwrap();
        assert!(!session.has_login());

        let mut home = session.dc_option(2).unwrap().expect("known data centres are preset");
        home.auth_key = Some([7u8; 256]);
        session.set_dc_option(&home).await.unwrap();
        session.set_home_dc_id(2).await.unwrap();
        session
            .cache_peer(PeerInfo::User { id: 42, auth: Some(PeerAuth::from_hash(99)), bot: Some(false), is_self: None })
            .await
            .unwrap();
        session.set_update_state(UpdateState::Primary { pts: 5, date: 6, seq: 7 }).await.unwrap();
        session.save().await.unwrap();

        let sealed = store.kv_get(LOGIN_NAMESPACE, "bot:123").await.unwrap().unwrap();
        assert!(!sealed.windows(8).any(|w| w == [7u8; 8]), "the auth key must not be stored in clear");

        let restored = StoreSession::load(store.clone(), sealer.clone(), "123").await.unwrap();
        assert!(restored.has_login());
        assert_eq!(restored.home_dc_id().unwrap(), 2);
        assert_eq!(dc_options_of(&restored).get(&2).unwrap().auth_key, Some([7u8; 256]));
        assert_eq!(restored.updates_state().await.unwrap().pts, 5);
        let peer = restored.peer_ref(PeerId::user(42).unwrap()).await.unwrap().unwrap();
        assert_eq!(peer.auth.hash(), 99);

        // Another bot's token never sees this login.
        let other = StoreSession::load(store.clone(), sealer.clone(), "456").await.unwrap();
        assert!(!other.has_login());
        // A different encryption key gets a clear error, not a fresh login over the old one.
        let err = StoreSession::load(store.clone(), self::sealer(), "123").await.err().unwrap();
        assert!(err.to_string().contains("BOT_ENCRYPTION_KEY"), "{err}");
        // Nor does this login open when copied to another bot's key.
        store.kv_put(LOGIN_NAMESPACE, "bot:456", &sealed).await.unwrap();
        let err = StoreSession::load(store, sealer, "456").await.err().unwrap();
        assert!(matches!(err, SessionError::Sealed(SecretsError::Rejected)), "{err}");
    }

    /// What a restart would read: the update state as stored now.
    async fn stored_state(store: &Arc<dyn Store>, sealer: &Arc<SecretBox>) -> UpdatesState {
        let restored = StoreSession::load(store.clone(), sealer.clone(), "123").await.unwrap();
        restored.updates_state().await.unwrap()
    }

    /// The update state of taken updates reaches the store while the bot runs, with no shutdown.
    async fn saved_while_running(store: Arc<dyn Store>) {
        let sealer = sealer();
        let session = Arc::new(StoreSession::load(store.clone(), sealer.clone(), "123").await.unwrap());
        // As grammers' `updates.getState` at the first start.
        let start = UpdatesState { pts: 9, qts: 3, date: 1000, seq: 1, channels: Vec::new() };
        session.set_update_state(UpdateState::All(start)).await.unwrap();
        let saver = tokio::spawn(Arc::clone(&session).keep_saved(Duration::from_millis(20)));
        let taken = |date, message_box| State { date, seq: 2, message_box };
        session.record_update(&taken(1001, Some(MessageBox::Common { pts: 10 }))).unwrap();
        session.record_update(&taken(1002, Some(MessageBox::Secondary { qts: 4 }))).unwrap();
        session.record_update(&taken(1003, Some(MessageBox::Channel { channel_id: 55, pts: 70 }))).unwrap();
        // A press carries no pts: the date and seq of the common box stay those of its last pts.
        session.record_update(&taken(1004, None)).unwrap();
        let expected =
            UpdatesState { pts: 10, qts: 4, date: 1001, seq: 2, channels: vec![ChannelState { id: 55, pts: 70 }] };
        tokio::time::timeout(Duration::from_secs(60), async {
            // Until the saver has also recorded its save: the store shows the write (on
            // PostgreSQL, once committed) before the saver's own call returns.
            while stored_state(&store, &sealer).await != expected || session.unsaved() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the periodic save writes the update state");
        saver.abort();
        assert!(!session.save_if_changed().await.unwrap(), "nothing moved since the periodic save");
        session.record_update(&taken(1005, Some(MessageBox::Common { pts: 11 }))).unwrap();
        assert!(session.save_if_changed().await.unwrap(), "a moved state is saved");
        assert_eq!(stored_state(&store, &sealer).await.pts, 11);
    }

    #[tokio::test]
    async fn the_update_state_is_saved_while_running_in_sqlite() {
        let db = db::sqlite().await;
        saved_while_running(db.shared()).await;
    }

    #[tokio::test]
    async fn the_update_state_is_saved_while_running_in_postgres() {
        let Some(db) = db::postgres().await else { return };
        saved_while_running(db.shared()).await;
    }

    #[tokio::test]
    async fn login_and_peers_survive_a_restart_sealed_in_sqlite() {
        let db = db::sqlite().await;
        round_trip(db.shared()).await;
    }

    #[tokio::test]
    async fn login_and_peers_survive_a_restart_sealed_in_postgres() {
        let Some(db) = db::postgres().await else { return };
        round_trip(db.shared()).await;
    }
}
