//! Per-user conversation state, persisted in the store's key-value area so a restart keeps it:
//! the chat mode of each of the user's chats (which agent plain text there goes to), and the
//! flow in progress (wizard, personality edit), which stays per user: a flow is a short exchange
//! the user starts and ends, wherever they type its next answer.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ChatId;
use crate::domain::{AgentId, UserId};
use crate::store::{Store, StoreResult};

pub(crate) const NAMESPACE: &str = "platform.state";

/// A multi-step exchange the next text message belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub(crate) enum Flow {
    /// `/create`: waiting for the name.
    CreateName,
    /// `/create`: waiting for a model button.
    CreateModel { name: String },
    /// `/create`: waiting for confirm or cancel.
    CreateConfirm { name: String, model: String },
    /// `/soul`: waiting for the new prompt of this agent.
    SoulEdit { agent: AgentId },
}

/// One chat's mode: talking to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChatMode {
    /// The agent plain text in this chat goes to.
    pub agent: AgentId,
    /// The share link a visitor came in by, so that replacing it ends their conversation too.
    /// `None` for owners, and for visitors of releases before links could be replaced (their
    /// next message records the agent's current link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
}

/// What Baal remembers about one user between messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UserState {
    /// The mode of each chat that talks to an agent; a chat not here is in Baal's menu.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    chats: BTreeMap<ChatId, ChatMode>,
    /// Releases before modes were per chat kept one mode per user, used in the private chat
    /// (the only one agents talk in): read as that chat's mode by [`parse`], never written.
    #[serde(default, skip_serializing)]
    chat_agent: Option<AgentId>,
    #[serde(default, skip_serializing)]
    chat_slug: Option<String>,
    /// The flow in progress, if any.
    #[serde(default)]
    pub flow: Option<Flow>,
    /// When the flow last heard from the user (flows expire after silence).
    #[serde(default)]
    pub flow_touched: Option<DateTime<Utc>>,
    /// Agents this user has already been shown the chat keyboard for.
    #[serde(default)]
    pub greeted: Vec<AgentId>,
}

impl UserState {
    /// The agent `chat` talks to, if it is in chat mode.
    pub fn chat_agent(&self, chat: ChatId) -> Option<AgentId> {
        self.chats.get(&chat).map(|mode| mode.agent)
    }

    /// The share link the user came to `chat`'s agent by, if recorded.
    pub fn chat_slug(&self, chat: ChatId) -> Option<&str> {
        self.chats.get(&chat).and_then(|mode| mode.slug.as_deref())
    }

    /// Puts `chat` in chat mode with `agent` (a visitor with the `slug` they came by).
    pub fn enter_chat(&mut self, chat: ChatId, agent: AgentId, slug: Option<String>) {
        self.chats.insert(chat, ChatMode { agent, slug });
    }

    /// Records the share link of `chat`'s conversation (a visitor from an older release).
    pub fn set_chat_slug(&mut self, chat: ChatId, slug: String) {
        if let Some(mode) = self.chats.get_mut(&chat) {
            mode.slug = Some(slug);
        }
    }

    /// Takes `chat` back to Baal's menu; the agent it talked to, if any.
    pub fn leave_chat(&mut self, chat: ChatId) -> Option<AgentId> {
        self.chats.remove(&chat).map(|mode| mode.agent)
    }

    /// Takes every chat that talks to `agent` back to the menu (the agent is gone).
    pub fn forget_agent(&mut self, agent: AgentId) {
        self.chats.retain(|_, mode| mode.agent != agent);
    }

    /// The flow, unless it has been silent for longer than `timeout`.
    pub fn live_flow(&self, now: DateTime<Utc>, timeout: std::time::Duration) -> Option<&Flow> {
        let touched = self.flow_touched?;
        let silent = (now - touched).to_std().unwrap_or_default();
        if silent >= timeout { None } else { self.flow.as_ref() }
    }

    /// Starts or continues a flow.
    pub fn set_flow(&mut self, flow: Flow, now: DateTime<Utc>) {
        self.flow = Some(flow);
        self.flow_touched = Some(now);
    }

    /// Ends any flow.
    pub fn clear_flow(&mut self) {
        self.flow = None;
        self.flow_touched = None;
    }
}

pub(crate) async fn load(store: &dyn Store, user: UserId) -> StoreResult<UserState> {
    Ok(parse(user, store.kv_get(NAMESPACE, &user.to_string()).await?))
}

/// The state of `user` stored as `raw` (a user without one starts from the default). A state of
/// a release before modes were per chat has its one mode read as the private chat's, whose id
/// is the user's.
pub(crate) fn parse(user: UserId, raw: Option<Vec<u8>>) -> UserState {
    // A state written by another version that no longer parses is dropped rather than blocking
    // the user: it only holds conversational position, never data.
    let mut state: UserState = raw.and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default();
    let slug = state.chat_slug.take();
    if let Some(agent) = state.chat_agent.take() {
        state.chats.entry(user).or_insert(ChatMode { agent, slug });
    }
    state
}

pub(crate) async fn save(store: &dyn Store, user: UserId, state: &UserState) -> StoreResult<()> {
    if *state == UserState::default() {
        return store.kv_delete(NAMESPACE, &user.to_string()).await;
    }
    let bytes = serde_json::to_vec(state).unwrap_or_default();
    store.kv_put(NAMESPACE, &user.to_string(), &bytes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_of_one_mode_per_user_is_read_as_the_private_chats() {
        let old = br#"{"chat_agent":7,"flow":null,"flow_touched":null,"greeted":[7],"chat_slug":"s1ug"}"#;
        let state = parse(42, Some(old.to_vec()));
        assert_eq!(state.chat_agent(42), Some(AgentId(7)), "the private chat's id is the user's");
        assert_eq!(state.chat_slug(42), Some("s1ug"));
        assert_eq!(state.chat_agent(-100), None, "other chats are in the menu");
        assert_eq!(state.greeted, [AgentId(7)]);
        let written = serde_json::to_string(&state).unwrap();
        assert_eq!(
            written,
            r#"{"chats":{"42":{"agent":7,"slug":"s1ug"}},"flow":null,"flow_touched":null,"greeted":[7]}"#
        );
        assert_eq!(parse(42, Some(written.into_bytes())), state, "the new form reads back the same");
    }

    #[test]
    fn each_chat_keeps_its_own_mode() {
        let mut state = parse(42, None);
        state.enter_chat(42, AgentId(1), None);
        state.enter_chat(-100, AgentId(2), Some("link".into()));
        assert_eq!((state.chat_agent(42), state.chat_agent(-100)), (Some(AgentId(1)), Some(AgentId(2))));
        assert_eq!(state.leave_chat(-100), Some(AgentId(2)));
        assert_eq!((state.chat_agent(42), state.chat_agent(-100)), (Some(AgentId(1)), None));
        state.enter_chat(-200, AgentId(1), None);
        state.forget_agent(AgentId(1));
        assert_eq!(state, UserState::default(), "a deleted agent leaves every chat it talked in");
    }
}
