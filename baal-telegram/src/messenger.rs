//! The platform's [`Messenger`] over grammers: sends, edits, deletes, files, typing and press
//! answers, honouring Telegram's flood waits and spacing edits per chat.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use baal_core::platform::{ChatId, MessageRef, Messenger, MessengerError, OutgoingFile, Text};
use grammers_client::session::types::{PeerAuth, PeerRef};
use grammers_client::{Client, InvocationError, tl};
use grammers_session::Session;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::mapping::{self, flood_wait, messenger_error, telegram_message_id};
use crate::session::StoreSession;

/// The longest flood wait honoured inside one call; a longer one fails the call, so a turn is
/// never stuck for minutes behind one message.
const MAX_FLOOD_WAIT: Duration = Duration::from_secs(120);
/// Flood waits honoured per call before giving up.
const FLOOD_RETRIES: u32 = 3;
/// Space between two edits in one chat: Telegram allows about one message a second per chat.
pub const EDIT_INTERVAL: Duration = Duration::from_millis(1100);
/// "typing…" lasts about 5 s on Telegram's side; it is repeated this often while a turn runs.
const TYPING_REPEAT: Duration = Duration::from_secs(4);
/// A turn that never ends must not show "typing…" forever.
const TYPING_MAX: Duration = Duration::from_secs(300);

/// Spaces edits per chat and lets a newer edit of a message replace one still waiting, so a
/// streamed answer never trips Telegram's limits and its last text always lands.
#[derive(Default)]
pub struct EditThrottle {
    chats: Mutex<HashMap<ChatId, ChatEdits>>,
}

#[derive(Default)]
struct ChatEdits {
    next_slot: Option<Instant>,
    /// Newest edit number per message id.
    newest: HashMap<i64, u64>,
}

/// An edit's place in its chat's line.
pub struct EditTicket {
    message: MessageRef,
    number: u64,
    slot: Instant,
}

impl EditThrottle {
    /// Takes the next edit slot of the message's chat.
    pub fn ticket(&self, message: MessageRef, interval: Duration) -> EditTicket {
        let mut chats = self.chats.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        chats.retain(|_, c| !c.newest.is_empty() || c.next_slot.is_some_and(|s| s > now));
        let chat = chats.entry(message.chat_id).or_default();
        let number = chat.newest.entry(message.message_id).or_default();
        *number += 1;
        let slot = chat.next_slot.map_or(now, |s| s.max(now));
        chat.next_slot = Some(slot + interval);
        EditTicket { message, number: *number, slot }
    }

    /// Waits for the ticket's slot; false when a newer edit of the same message came meanwhile
    /// (this one then has nothing left to do).
    pub async fn wait(&self, ticket: &EditTicket) -> bool {
        tokio::time::sleep_until(ticket.slot).await;
        self.is_newest(ticket)
    }

    /// Whether no newer edit of the message was asked for.
    pub fn is_newest(&self, ticket: &EditTicket) -> bool {
        let chats = self.chats.lock().unwrap_or_else(|e| e.into_inner());
        chats
            .get(&ticket.message.chat_id)
            .and_then(|c| c.newest.get(&ticket.message.message_id))
            .is_none_or(|n| *n == ticket.number)
    }

    /// Forgets the ticket once its edit is done.
    pub fn done(&self, ticket: EditTicket) {
        let mut chats = self.chats.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(chat) = chats.get_mut(&ticket.message.chat_id)
            && chat.newest.get(&ticket.message.message_id) == Some(&ticket.number)
        {
            chat.newest.remove(&ticket.message.message_id);
        }
    }
}

/// Runs `call`, waiting out flood waits Telegram asks for (up to [`MAX_FLOOD_WAIT`] each,
/// [`FLOOD_RETRIES`] times) and retrying; `still_wanted` can cancel a retry that became useless.
async fn with_flood_retry<T, F, Fut>(
    what: &str,
    mut still_wanted: impl FnMut() -> bool,
    mut call: F,
) -> Result<Option<T>, InvocationError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, InvocationError>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Err(error) if attempt < FLOOD_RETRIES && flood_wait(&error).is_some_and(|w| w <= MAX_FLOOD_WAIT) => {
                let wait = flood_wait(&error).unwrap_or_default();
                tracing::warn!(what, seconds = wait.as_secs(), "Telegram asked to slow down; waiting");
                metrics::counter!(baal_core::telemetry::FLOOD_WAITS).increment(1);
                metrics::counter!(baal_core::telemetry::FLOOD_WAIT_SECONDS).increment(wait.as_secs());
                tokio::time::sleep(wait).await;
                attempt += 1;
                if !still_wanted() {
                    return Ok(None);
                }
            }
            result => return result.map(Some),
        }
    }
}

/// [`Messenger`] on a logged-in grammers [`Client`].
pub struct TelegramMessenger {
    client: Client,
    session: Arc<StoreSession>,
    edits: EditThrottle,
    typing: Mutex<HashMap<ChatId, AbortHandle>>,
}

impl TelegramMessenger {
    /// A messenger over `client`, resolving chats through `session`'s peer cache.
    pub fn new(client: Client, session: Arc<StoreSession>) -> Self {
        TelegramMessenger { client, session, edits: EditThrottle::default(), typing: Mutex::new(HashMap::new()) }
    }

    /// Stops "typing…" in `chat`; called when a turn in that chat ends.
    pub fn turn_finished(&self, chat: ChatId) {
        if let Some(task) = self.typing.lock().unwrap_or_else(|e| e.into_inner()).remove(&chat) {
            task.abort();
        }
    }

    async fn peer(&self, chat: ChatId) -> Result<PeerRef, MessengerError> {
        let id = mapping::peer_id(chat).ok_or(MessengerError::NotFound)?;
        match self.session.peer_ref(id).await {
            Ok(Some(peer)) => Ok(peer),
            // Bots may address a peer they have not cached with the ambient (zero) access hash;
            // Telegram answers PEER_ID_INVALID if it does not accept it, which maps to Gone.
            Ok(None) => Ok(PeerRef { id, auth: PeerAuth::default() }),
            Err(error) => Err(MessengerError::Failed(error.to_string())),
        }
    }

    fn message_ref(chat: ChatId, message: &grammers_client::message::Message) -> MessageRef {
        MessageRef { chat_id: chat, message_id: i64::from(message.id()) }
    }
}

fn failed(error: InvocationError) -> MessengerError {
    messenger_error(&error)
}

#[async_trait]
impl Messenger for TelegramMessenger {
    async fn send(&self, chat: ChatId, text: Text) -> Result<MessageRef, MessengerError> {
        let peer = self.peer(chat).await?;
        let message = mapping::outgoing(&text)?.into_input_message();
        let sent = with_flood_retry("send", || true, || self.client.send_message(peer, message.clone()))
            .await
            .map_err(failed)?
            .ok_or_else(|| MessengerError::Failed("send was cancelled".into()))?;
        Ok(Self::message_ref(chat, &sent))
    }

    async fn edit(&self, message: MessageRef, text: Text) -> Result<(), MessengerError> {
        let peer = self.peer(message.chat_id).await?;
        let id = telegram_message_id(message)?;
        let new_message = mapping::outgoing(&text)?.into_input_message();
        let ticket = self.edits.ticket(message, EDIT_INTERVAL);
        if !self.edits.wait(&ticket).await {
            return Ok(());
        }
        let result = with_flood_retry(
            "edit",
            || self.edits.is_newest(&ticket),
            || self.client.edit_message(peer, id, new_message.clone()),
        )
        .await;
        self.edits.done(ticket);
        match result {
            Ok(_) => Ok(()),
            Err(error) if error.is("MESSAGE_NOT_MODIFIED") => Ok(()),
            Err(error) => Err(failed(error)),
        }
    }

    async fn delete(&self, message: MessageRef) -> Result<(), MessengerError> {
        let peer = self.peer(message.chat_id).await?;
        let id = telegram_message_id(message)?;
        let ids = [id];
        let deleted =
            with_flood_retry("delete", || true, || self.client.delete_messages(peer, &ids)).await.map_err(failed)?;
        if deleted == Some(0) { Err(MessengerError::NotFound) } else { Ok(()) }
    }

    async fn typing(&self, chat: ChatId) -> Result<(), MessengerError> {
        let peer = self.peer(chat).await?;
        let mut typing = self.typing.lock().unwrap_or_else(|e| e.into_inner());
        if typing.get(&chat).is_some_and(|task| !task.is_finished()) {
            return Ok(());
        }
        let client = self.client.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            while started.elapsed() < TYPING_MAX {
                let request = tl::functions::messages::SetTyping {
                    peer: peer.into(),
                    top_msg_id: None,
                    action: tl::enums::SendMessageAction::SendMessageTypingAction,
                };
                // Typing is a courtesy: a failure (even a flood wait) just skips one refresh.
                if let Err(error) = client.invoke(&request).await {
                    tracing::debug!(%error, "typing action failed");
                }
                tokio::time::sleep(TYPING_REPEAT).await;
            }
        });
        typing.insert(chat, task.abort_handle());
        Ok(())
    }

    async fn send_file(&self, chat: ChatId, file: OutgoingFile) -> Result<MessageRef, MessengerError> {
        let peer = self.peer(chat).await?;
        let (caption, entities) = mapping::caption(&file.caption)?;
        if file.bytes.is_empty() {
            return Err(MessengerError::Rejected(format!(
                "{} is empty; Telegram cannot send an empty file",
                file.file_name
            )));
        }
        let mut reader = std::io::Cursor::new(&file.bytes);
        let uploaded = self
            .client
            .upload_stream(&mut reader, file.bytes.len(), file.file_name.clone())
            .await
            .map_err(|e| MessengerError::Failed(format!("uploading {} failed: {e}", file.file_name)))?;
        let sent = with_flood_retry(
            "send file",
            || true,
            || {
                let message =
                    grammers_client::message::InputMessage::new().text(caption.clone()).fmt_entities(entities.clone());
                let message =
                    if file.as_photo { message.photo(uploaded.clone()) } else { message.document(uploaded.clone()) };
                self.client.send_message(peer, message)
            },
        )
        .await
        .map_err(failed)?
        .ok_or_else(|| MessengerError::Failed("send was cancelled".into()))?;
        Ok(Self::message_ref(chat, &sent))
    }

    async fn answer_press(&self, press_id: &str, notice: &str) -> Result<(), MessengerError> {
        let query_id: i64 = press_id
            .parse()
            .map_err(|_| MessengerError::Rejected(format!("{press_id:?} is not a Telegram callback query id")))?;
        let request = tl::functions::messages::SetBotCallbackAnswer {
            alert: false,
            query_id,
            message: (!notice.is_empty()).then(|| notice.to_owned()),
            url: None,
            cache_time: 0,
        };
        with_flood_retry("answer press", || true, || self.client.invoke(&request)).await.map_err(failed)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(chat: ChatId, id: i64) -> MessageRef {
        MessageRef { chat_id: chat, message_id: id }
    }

    #[tokio::test(start_paused = true)]
    async fn edits_in_one_chat_are_spaced_and_only_the_newest_waiting_one_is_sent() {
        let throttle = EditThrottle::default();
        let start = Instant::now();
        let first = throttle.ticket(message(1, 10), EDIT_INTERVAL);
        assert!(throttle.wait(&first).await, "the first edit goes at once");
        assert_eq!(Instant::now(), start);
        throttle.done(first);

        // Three quick edits of one message: the first two are overtaken and skipped.
        let a = throttle.ticket(message(1, 10), EDIT_INTERVAL);
        let b = throttle.ticket(message(1, 10), EDIT_INTERVAL);
        let c = throttle.ticket(message(1, 10), EDIT_INTERVAL);
        assert!(!throttle.wait(&a).await);
        assert!(!throttle.wait(&b).await);
        assert!(throttle.wait(&c).await, "the newest text always lands");
        assert!(Instant::now() >= start + EDIT_INTERVAL * 3);
        throttle.done(c);

        // Another chat is not held back by this one.
        let other_start = Instant::now();
        let other = throttle.ticket(message(2, 5), EDIT_INTERVAL);
        assert!(throttle.wait(&other).await);
        assert_eq!(Instant::now(), other_start);
    }

    #[tokio::test(start_paused = true)]
    async fn flood_waits_are_waited_out_then_retried() {
        use grammers_client::sender::RpcError;
        let calls = std::sync::atomic::AtomicU32::new(0);
        let start = Instant::now();
        let result = with_flood_retry(
            "test",
            || true,
            || async {
                if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    Err(InvocationError::Rpc(RpcError {
                        code: 420,
                        name: "FLOOD_WAIT".into(),
                        value: Some(7),
                        caused_by: None,
                    }))
                } else {
                    Ok(5)
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(result, Some(5));
        assert_eq!(Instant::now() - start, Duration::from_secs(7));

        // A wait far beyond the bound fails instead of blocking the turn.
        let long = with_flood_retry(
            "test",
            || true,
            || async {
                Err::<(), _>(InvocationError::Rpc(RpcError {
                    code: 420,
                    name: "FLOOD_WAIT".into(),
                    value: Some(3600),
                    caused_by: None,
                }))
            },
        )
        .await;
        assert!(long.is_err());
    }
}
