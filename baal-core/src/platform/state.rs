//! Per-user conversation state (chat mode, wizard, personality edit), persisted in the store's
//! key-value area so a restart keeps it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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

/// What Baal remembers about one user between messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UserState {
    /// The agent plain text goes to (chat mode).
    #[serde(default)]
    pub chat_agent: Option<AgentId>,
    /// The flow in progress, if any.
    #[serde(default)]
    pub flow: Option<Flow>,
    /// When the flow last heard from the user (flows expire after silence).
    #[serde(default)]
    pub flow_touched: Option<DateTime<Utc>>,
    /// Agents this user has already been shown the chat keyboard for.
    #[serde(default)]
    pub greeted: Vec<AgentId>,
    /// The share link a visitor came in by, so that replacing it ends their conversation too.
    /// `None` for owners, and for visitors of releases before links could be replaced (their
    /// next message records the agent's current link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_slug: Option<String>,
}

impl UserState {
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
    Ok(parse(store.kv_get(NAMESPACE, &user.to_string()).await?))
}

/// The state stored as `raw` (a user without one starts from the default).
pub(crate) fn parse(raw: Option<Vec<u8>>) -> UserState {
    // A state written by another version that no longer parses is dropped rather than blocking
    // the user: it only holds conversational position, never data.
    raw.and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default()
}

pub(crate) async fn save(store: &dyn Store, user: UserId, state: &UserState) -> StoreResult<()> {
    if *state == UserState::default() {
        return store.kv_delete(NAMESPACE, &user.to_string()).await;
    }
    let bytes = serde_json::to_vec(state).unwrap_or_default();
    store.kv_put(NAMESPACE, &user.to_string(), &bytes).await
}
