//! [`MemoryMessenger`]: a [`Messenger`] that keeps every message in memory and records every
//! call with the instant it was made, so tests (and embedders' tests) can drive the platform and
//! read what users would see, and when.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use tokio::time::Instant;

use crate::platform::{Button, ChatId, MessageRef, Messenger, MessengerError, OutgoingFile, Text};

/// One call the platform made.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Call {
    /// `send`.
    Send {
        /// The new message.
        message: MessageRef,
        /// Its text.
        text: Text,
    },
    /// `edit`.
    Edit {
        /// The message edited.
        message: MessageRef,
        /// Its new text.
        text: Text,
    },
    /// `delete`.
    Delete {
        /// The message deleted.
        message: MessageRef,
    },
    /// `typing`.
    Typing {
        /// The chat.
        chat: ChatId,
    },
    /// `send_file`.
    File {
        /// The new message.
        message: MessageRef,
        /// The file.
        file: OutgoingFile,
    },
    /// `answer_press`.
    Press {
        /// The press answered.
        press_id: String,
        /// The notice shown.
        notice: String,
    },
}

/// One message as it stands now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Shown {
    /// The message.
    pub message: MessageRef,
    /// Its current text (after edits).
    pub text: Text,
    /// How many times it was edited.
    pub edits: usize,
    /// Whether it was deleted.
    pub deleted: bool,
}

#[derive(Default)]
struct Log {
    calls: Vec<Call>,
    /// When each of `calls` was made (tokio's clock, so a test with paused time reads it too).
    made_at: Vec<Instant>,
    messages: Vec<Shown>,
    index: HashMap<MessageRef, usize>,
    /// Sends whose text (or file caption) contains this fail with this error.
    failing: Option<(String, MessengerError)>,
    /// How many sends failed that way.
    refused: usize,
}

impl Log {
    fn record(&mut self, call: Call) {
        self.calls.push(call);
        self.made_at.push(Instant::now());
    }

    fn refuse(&mut self, body: &str) -> Result<(), MessengerError> {
        match &self.failing {
            Some((needle, error)) if body.contains(needle.as_str()) => {
                let error = error.clone();
                self.refused += 1;
                Err(error)
            }
            _ => Ok(()),
        }
    }
}

/// An in-memory [`Messenger`]. Message ids count up from 1000 across chats; messages the test
/// itself "sends" as the user can be registered with [`MemoryMessenger::user_message`] so the
/// platform can delete them.
#[derive(Default)]
pub struct MemoryMessenger {
    log: Mutex<Log>,
    next_id: AtomicI64,
}

impl MemoryMessenger {
    /// An empty messenger.
    pub fn new() -> Self {
        MemoryMessenger { log: Mutex::default(), next_id: AtomicI64::new(1000) }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn next(&self, chat: ChatId) -> MessageRef {
        MessageRef { chat_id: chat, message_id: self.next_id.fetch_add(1, Ordering::Relaxed) }
    }

    /// Registers a message the user sent (for example a `/login` message), to put in
    /// [`crate::platform::Input::message`].
    pub fn user_message(&self, chat: ChatId, body: &str) -> MessageRef {
        let message = self.next(chat);
        let mut log = self.log();
        let at = log.messages.len();
        log.messages.push(Shown { message, text: Text::plain(body), edits: 0, deleted: false });
        log.index.insert(message, at);
        message
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.log().calls.clone()
    }

    /// Every call so far, in order, with the instant it was made (tokio's clock).
    pub fn timed_calls(&self) -> Vec<(Instant, Call)> {
        let log = self.log();
        log.made_at.iter().copied().zip(log.calls.iter().cloned()).collect()
    }

    /// Every message of `chat` the platform sent (not the user's), oldest first, as they stand now.
    pub fn messages(&self, chat: ChatId) -> Vec<Shown> {
        let log = self.log();
        let sent: std::collections::HashSet<MessageRef> = log
            .calls
            .iter()
            .filter_map(|call| match call {
                Call::Send { message, .. } | Call::File { message, .. } => Some(*message),
                _ => None,
            })
            .collect();
        log.messages.iter().filter(|m| m.message.chat_id == chat && sent.contains(&m.message)).cloned().collect()
    }

    /// The message `message` as it stands now.
    pub fn message(&self, message: MessageRef) -> Option<Shown> {
        let log = self.log();
        log.index.get(&message).map(|at| log.messages[*at].clone())
    }

    /// The bodies of `chat`'s messages, oldest first.
    pub fn bodies(&self, chat: ChatId) -> Vec<String> {
        self.messages(chat).into_iter().map(|m| m.text.body).collect()
    }

    /// The body of the latest message of `chat` (empty when none).
    pub fn last_text(&self, chat: ChatId) -> String {
        self.messages(chat).last().map(|m| m.text.body.clone()).unwrap_or_default()
    }

    /// Every body of `chat` joined by newlines, for `contains` checks.
    pub fn transcript(&self, chat: ChatId) -> String {
        self.bodies(chat).join("\n")
    }

    /// The latest message of `chat` that has buttons.
    pub fn last_with_buttons(&self, chat: ChatId) -> Option<Shown> {
        self.messages(chat).into_iter().rev().find(|m| !m.text.buttons.is_empty() && !m.deleted)
    }

    /// The buttons of the latest message of `chat` that has any.
    pub fn last_buttons(&self, chat: ChatId) -> Vec<Button> {
        self.last_with_buttons(chat).map(|m| m.text.buttons.into_iter().flatten().collect()).unwrap_or_default()
    }

    /// The callback data of the newest button in `chat` whose data or label contains `needle`,
    /// with the message holding it.
    pub fn find_button(&self, chat: ChatId, needle: &str) -> Option<(String, MessageRef)> {
        let needle = needle.to_lowercase();
        for shown in self.messages(chat).into_iter().rev().filter(|m| !m.deleted) {
            for button in shown.text.buttons.iter().flatten() {
                if let Button::Callback { label, data } = button
                    && (data.to_lowercase().contains(&needle) || label.to_lowercase().contains(&needle))
                {
                    return Some((data.clone(), shown.message));
                }
            }
        }
        None
    }

    /// Files sent to `chat`.
    pub fn files(&self, chat: ChatId) -> Vec<OutgoingFile> {
        self.log()
            .calls
            .iter()
            .filter_map(|call| match call {
                Call::File { message, file } if message.chat_id == chat => Some(file.clone()),
                _ => None,
            })
            .collect()
    }

    /// Notices shown on button presses, in order.
    pub fn press_notices(&self) -> Vec<String> {
        self.log()
            .calls
            .iter()
            .filter_map(|call| match call {
                Call::Press { notice, .. } => Some(notice.clone()),
                _ => None,
            })
            .collect()
    }

    /// From now on, `send` and `send_file` of a text (or caption) containing `needle` fail with
    /// `error` and record nothing, as when the network is down ([`MessengerError::Failed`]) or
    /// the front-end refuses the content ([`MessengerError::Rejected`]). An empty `needle` fails
    /// every send. Replaces any earlier setting; [`MemoryMessenger::stop_failing`] ends it.
    pub fn fail_sends_containing(&self, needle: impl Into<String>, error: MessengerError) {
        self.log().failing = Some((needle.into(), error));
    }

    /// How many sends [`MemoryMessenger::fail_sends_containing`] made fail so far (each try
    /// counts; [`MemoryMessenger::clear`] does not reset it).
    pub fn failed_sends(&self) -> usize {
        self.log().refused
    }

    /// Sends succeed again.
    pub fn stop_failing(&self) {
        self.log().failing = None;
    }

    /// Forgets everything recorded (message ids keep counting; a failure setting stays).
    pub fn clear(&self) {
        let mut log = self.log();
        let (failing, refused) = (log.failing.take(), log.refused);
        *log = Log { failing, refused, ..Log::default() };
    }
}

#[async_trait]
impl Messenger for MemoryMessenger {
    async fn send(&self, chat: ChatId, text: Text) -> Result<MessageRef, MessengerError> {
        let mut log = self.log();
        log.refuse(&text.body)?;
        let message = self.next(chat);
        let at = log.messages.len();
        log.messages.push(Shown { message, text: text.clone(), edits: 0, deleted: false });
        log.index.insert(message, at);
        log.record(Call::Send { message, text });
        Ok(message)
    }

    async fn edit(&self, message: MessageRef, text: Text) -> Result<(), MessengerError> {
        let mut log = self.log();
        let Some(at) = log.index.get(&message).copied() else { return Err(MessengerError::NotFound) };
        let shown = &mut log.messages[at];
        if shown.deleted {
            return Err(MessengerError::NotFound);
        }
        shown.text = text.clone();
        shown.edits += 1;
        log.record(Call::Edit { message, text });
        Ok(())
    }

    async fn delete(&self, message: MessageRef) -> Result<(), MessengerError> {
        let mut log = self.log();
        let Some(at) = log.index.get(&message).copied() else { return Err(MessengerError::NotFound) };
        log.messages[at].deleted = true;
        log.record(Call::Delete { message });
        Ok(())
    }

    async fn typing(&self, chat: ChatId) -> Result<(), MessengerError> {
        self.log().record(Call::Typing { chat });
        Ok(())
    }

    async fn send_file(&self, chat: ChatId, file: OutgoingFile) -> Result<MessageRef, MessengerError> {
        let mut log = self.log();
        log.refuse(&file.caption)?;
        let message = self.next(chat);
        let at = log.messages.len();
        log.messages.push(Shown { message, text: Text::html(file.caption.clone()), edits: 0, deleted: false });
        log.index.insert(message, at);
        log.record(Call::File { message, file });
        Ok(message)
    }

    async fn answer_press(&self, press_id: &str, notice: &str) -> Result<(), MessengerError> {
        self.log().record(Call::Press { press_id: press_id.to_owned(), notice: notice.to_owned() });
        Ok(())
    }
}

/// Hands `platform` a text from `user` in their private chat, then waits until the platform is
/// idle (deployments and turns it started included), so what the user sees can be read.
pub async fn send_and_wait(platform: &crate::platform::Platform, user: crate::domain::UserId, text: &str) {
    platform.handle(crate::platform::Input::from_text(user, user, text)).await.expect("the platform handles the text");
    platform.wait_idle().await;
}

/// Presses the newest button in `user`'s private chat whose data contains `needle` (panicking
/// with the transcript when there is none), then waits until the platform is idle.
pub async fn press_and_wait(
    platform: &crate::platform::Platform,
    messenger: &MemoryMessenger,
    user: crate::domain::UserId,
    needle: &str,
) {
    let (data, message) = messenger
        .find_button(user, needle)
        .unwrap_or_else(|| panic!("no button {needle:?} in {}", messenger.transcript(user)));
    let press = crate::platform::Input::button(user, user, data, message, "press");
    platform.handle(press).await.expect("the platform handles the press");
    platform.wait_idle().await;
}
