//! What a button does, as a type: every button the platform draws carries an [`Action`] encoded
//! as its callback data, and every press is decoded back into one, so no verb string is built or
//! matched anywhere else. Spellings of earlier releases still decode: buttons on old messages keep
//! working.

use crate::domain::AgentId;

/// Telegram's limit for a button's callback data, in bytes.
pub const MAX_DATA_BYTES: usize = 64;

/// A button's action.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Start the `/create` wizard.
    Create,
    /// The user's agents.
    List,
    /// The account view.
    Account,
    /// `/help`.
    Help,
    /// The welcome message.
    Main,
    /// How to connect one's own key.
    Login,
    /// Forget one's key.
    Logout,
    /// Refresh the dashboard.
    DashboardRefresh,
    /// Leave the chat with an agent.
    ExitChat,
    /// Show or hide tool calls.
    ToggleTools,
    /// Chat with this agent.
    Chat(AgentId),
    /// Restart this agent with the latest settings.
    Update(AgentId),
    /// Retry this agent's deployment.
    Repair(AgentId),
    /// This agent's personality.
    Soul(AgentId),
    /// Change this agent's personality.
    SoulEdit(AgentId),
    /// This agent's status, as the press's notice.
    RefreshStatus(AgentId),
    /// Ask whether to delete this agent.
    DeleteAsk(AgentId),
    /// Delete this agent (the dialog's "yes").
    DeleteConfirmed(AgentId),
    /// The delete dialog's "cancel".
    DeleteCancelled,
    /// Ask whether to forget the caller's conversation with the agent they are talking to.
    ResetAsk,
    /// Forget the caller's conversation with this agent (the dialog's "yes").
    ResetConfirmed(AgentId),
    /// The reset dialog's "keep it".
    ResetCancelled,
    /// The wizard's model choice.
    CreateModel(String),
    /// The wizard's "deploy".
    CreateConfirm,
    /// The wizard's "cancel".
    CreateCancel,
}

impl Action {
    /// The callback data. Model ids are the only free text in it; a model id too long for
    /// Telegram's 64 bytes is a programming error caught by the tests of the model table.
    pub fn encode(&self) -> String {
        let with_id = |verb: &str, id: &AgentId| format!("{verb}:{id}");
        let data = match self {
            Action::Create => "quick_create".to_owned(),
            Action::List => "quick_list".to_owned(),
            Action::Account => "quick_account".to_owned(),
            Action::Help => "quick_help".to_owned(),
            Action::Main => "nav_main".to_owned(),
            Action::Login => "account_login".to_owned(),
            Action::Logout => "account_logout".to_owned(),
            Action::DashboardRefresh => "dashboard_refresh".to_owned(),
            Action::ExitChat => "exit_chat".to_owned(),
            Action::ToggleTools => "toggle_tools".to_owned(),
            Action::Chat(id) => with_id("chat_agent", id),
            Action::Update(id) => with_id("update_agent", id),
            Action::Repair(id) => with_id("repair_agent", id),
            Action::Soul(id) => with_id("soul_agent", id),
            Action::SoulEdit(id) => with_id("soul_edit", id),
            Action::RefreshStatus(id) => with_id("refresh_status", id),
            Action::DeleteAsk(id) => with_id("delete_confirm", id),
            Action::DeleteConfirmed(id) => with_id("delete_confirmed", id),
            Action::DeleteCancelled => "delete_cancelled".to_owned(),
            Action::ResetAsk => "reset_ask".to_owned(),
            Action::ResetConfirmed(id) => with_id("reset_confirmed", id),
            Action::ResetCancelled => "reset_cancelled".to_owned(),
            Action::CreateModel(model) => format!("create_model:{model}"),
            Action::CreateConfirm => "create_confirm".to_owned(),
            Action::CreateCancel => "create_cancel".to_owned(),
        };
        debug_assert!(data.len() <= MAX_DATA_BYTES, "callback data over {MAX_DATA_BYTES} bytes: {data}");
        data
    }

    /// The action `data` encodes, this release's spelling or an earlier one's; `None` for data no
    /// release wrote.
    pub fn decode(data: &str) -> Option<Action> {
        let (verb, rest) = data.split_once(':').unwrap_or((data, ""));
        let id = || rest.parse::<AgentId>().ok();
        Some(match verb {
            "quick_create" => Action::Create,
            "quick_list" | "nav_list" => Action::List,
            "quick_account" | "nav_account" | "account_refresh" => Action::Account,
            "quick_help" => Action::Help,
            "nav_main" => Action::Main,
            "quick_login" | "account_login" => Action::Login,
            "account_logout" => Action::Logout,
            "dashboard_refresh" => Action::DashboardRefresh,
            "exit_chat" => Action::ExitChat,
            "toggle_tools" => Action::ToggleTools,
            "chat_agent" => Action::Chat(id()?),
            "update_agent" => Action::Update(id()?),
            "repair_agent" | "retry_deploy" => Action::Repair(id()?),
            "soul_agent" => Action::Soul(id()?),
            "soul_edit" => Action::SoulEdit(id()?),
            "refresh_status" => Action::RefreshStatus(id()?),
            "delete_confirm" => Action::DeleteAsk(id()?),
            "delete_confirmed" => Action::DeleteConfirmed(id()?),
            "delete_cancelled" => Action::DeleteCancelled,
            "reset_ask" => Action::ResetAsk,
            "reset_confirmed" => Action::ResetConfirmed(id()?),
            "reset_cancelled" => Action::ResetCancelled,
            "create_model" if !rest.is_empty() => Action::CreateModel(rest.to_owned()),
            "create_confirm" => Action::CreateConfirm,
            "create_cancel" => Action::CreateCancel,
            _ => return None,
        })
    }

    /// Whether the press belongs to the `/create` wizard (it does nothing once the wizard is over).
    pub fn is_wizard(&self) -> bool {
        matches!(self, Action::CreateModel(_) | Action::CreateConfirm | Action::CreateCancel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every() -> Vec<Action> {
        let id = AgentId(9_007_199_254_740_993);
        vec![
            Action::Create,
            Action::List,
            Action::Account,
            Action::Help,
            Action::Main,
            Action::Login,
            Action::Logout,
            Action::DashboardRefresh,
            Action::ExitChat,
            Action::ToggleTools,
            Action::Chat(id),
            Action::Update(id),
            Action::Repair(id),
            Action::Soul(id),
            Action::SoulEdit(id),
            Action::RefreshStatus(id),
            Action::DeleteAsk(id),
            Action::DeleteConfirmed(id),
            Action::DeleteCancelled,
            Action::CreateModel("qwen3-coder-next".into()),
            Action::CreateConfirm,
            Action::CreateCancel,
            Action::ResetAsk,
            Action::ResetConfirmed(AgentId(9)),
            Action::ResetCancelled,
        ]
    }

    #[test]
    fn every_action_round_trips_within_telegrams_limit() {
        for action in every() {
            let data = action.encode();
            assert!(data.len() <= MAX_DATA_BYTES, "{data}");
            assert_eq!(Action::decode(&data), Some(action), "{data}");
        }
    }

    #[test]
    fn spellings_of_earlier_releases_still_decode() {
        assert_eq!(Action::decode("nav_list"), Some(Action::List));
        assert_eq!(Action::decode("nav_account"), Some(Action::Account));
        assert_eq!(Action::decode("account_refresh"), Some(Action::Account));
        assert_eq!(Action::decode("quick_login"), Some(Action::Login));
        assert_eq!(Action::decode("retry_deploy:4"), Some(Action::Repair(AgentId(4))));
        assert_eq!(Action::decode("chat_agent:x"), None);
        assert_eq!(Action::decode("create_model:"), None);
        assert_eq!(Action::decode("mine_bitcoin"), None);
    }
}
