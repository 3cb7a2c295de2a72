//! Turns while they run: where each answer is being written (recorded in the store, so that after
//! a restart the half-written answer says it was interrupted while the agent's durable turn
//! brings the whole answer as a queued message), and stopping a turn (`/stop`, the button on a
//! running answer).
//!
//! Invariants:
//! - a chat's record names the messages of the answer being written now, and only while it is
//!   being written: a message that a tool line, file or error closed is whole, and the record goes
//!   when the turn ends however it ends;
//! - at start, every record a previous process left is turned into an "interrupted" note and
//!   removed, before the poller delivers the queued answers;
//! - a stop goes to the agent (`POST /chat/{chat}/stop`, which kills the turn's tools); only an
//!   agent without that endpoint has its stream dropped instead, which cancels its turn.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::engine::{Inner, PlatformError};
use super::messenger::{ChatId, MessageRef, Text};
use crate::domain::AgentId;

/// Where each chat's answer in progress is recorded (`<chat>` → [`Answering`]).
const ANSWERING_NAMESPACE: &str = "platform.answering";

/// What replaces an answer a restart cut short; the agent's queued answer follows it.
pub(crate) const INTERRUPTED: &str = "<i>⏸ This answer was cut short when Baal restarted. The whole answer follows as a new message once the agent has it.</i>";

/// A chat's answer being written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Answering {
    agent: AgentId,
    /// `(chat, message id)` of each message showing it.
    messages: Vec<(ChatId, i64)>,
}

/// A running turn's stop signal, for agents that cannot be asked to stop.
#[derive(Debug, Default)]
pub(crate) struct StopSignal(Notify);

impl StopSignal {
    /// Resolves once the turn is to be dropped.
    pub(crate) async fn stopped(self: Arc<Self>) {
        self.0.notified().await;
    }
}

impl Inner {
    /// Records `messages` as `chat`'s answer in progress for `agent`, or clears the record when
    /// there are none. A store that fails is logged: the answer still shows.
    pub(crate) async fn record_answering(&self, chat: ChatId, agent: AgentId, messages: &[MessageRef]) {
        let key = chat.to_string();
        let result = if messages.is_empty() {
            self.store.kv_delete(ANSWERING_NAMESPACE, &key).await
        } else {
            let record = Answering { agent, messages: messages.iter().map(|m| (m.chat_id, m.message_id)).collect() };
            match serde_json::to_vec(&record) {
                Ok(bytes) => self.store.kv_put(ANSWERING_NAMESPACE, &key, &bytes).await,
                Err(_) => return,
            }
        };
        if let Err(err) = result {
            tracing::warn!(chat, error = %err, "cannot record the answer in progress");
        }
    }

    /// Says "interrupted" in every answer a previous process was writing when it stopped.
    pub(crate) async fn mark_interrupted(&self) -> Result<(), PlatformError> {
        for (key, value) in self.store.kv_list(ANSWERING_NAMESPACE).await? {
            match serde_json::from_slice::<Answering>(&value) {
                Ok(record) => {
                    for (chat_id, message_id) in record.messages {
                        let message = MessageRef { chat_id, message_id };
                        if let Err(err) = self.messenger.edit(message, Text::html(INTERRUPTED)).await {
                            tracing::debug!(error = %err, "could not mark an interrupted answer");
                        }
                    }
                    tracing::info!(agent = %record.agent, chat = %key, "an answer cut short by a restart was marked");
                }
                Err(err) => tracing::warn!(chat = %key, error = %err, "an unreadable answer record was dropped"),
            }
            self.store.kv_delete(ANSWERING_NAMESPACE, &key).await?;
        }
        Ok(())
    }

    /// Registers `chat`'s running turn; its signal drops the turn's stream when stopped.
    pub(crate) fn turn_started(&self, chat: ChatId) -> Arc<StopSignal> {
        let signal = Arc::new(StopSignal::default());
        self.running_turns.lock().unwrap_or_else(|p| p.into_inner()).insert(chat, signal.clone());
        signal
    }

    /// Forgets `chat`'s running turn.
    pub(crate) fn turn_ended(&self, chat: ChatId) {
        self.running_turns.lock().unwrap_or_else(|p| p.into_inner()).remove(&chat);
    }

    /// Stops the turn running in `chat` with `agent`: the agent is asked (its tools die with the
    /// turn); an agent that cannot be asked has the turn's stream dropped. What to tell the user.
    pub(crate) async fn stop_turn(&self, chat: ChatId, agent: &crate::domain::Agent) -> &'static str {
        let signal = self.running_turns.lock().unwrap_or_else(|p| p.into_inner()).get(&chat).cloned();
        let Some(signal) = signal else { return "Nothing is being answered right now." };
        let asked = match self.endpoint(agent) {
            Some(endpoint) => self.proxy.stop(&endpoint, &chat.to_string()).await,
            None => Ok(None),
        };
        match asked {
            Ok(Some(true)) => "Stopping…",
            Ok(Some(false)) => "Nothing is being answered right now.",
            Ok(None) | Err(_) => {
                // Dropping the stream cancels the turn of an agent without the endpoint.
                signal.0.notify_one();
                "Stopped."
            }
        }
    }
}
