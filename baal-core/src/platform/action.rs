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
    /// This agent's settings card (sharing, budget, visitor limits and tools, link).
    Settings(AgentId),
    /// Turn sharing of this agent on or off.
    SetSharing(AgentId, bool),
    /// The choices of this agent's daily token budget.
    BudgetMenu(AgentId),
    /// Set this agent's daily token budget (`None`: no budget).
    SetBudget(AgentId, Option<u64>),
    /// The choices of the daily message limit per visitor.
    VisitorLimitMenu(AgentId),
    /// Set the daily message limit per visitor (`None`: no limit).
    SetVisitorLimit(AgentId, Option<u32>),
    /// The tools visitors of this agent get.
    VisitorToolsMenu(AgentId),
    /// Give visitors this tool, or take it away.
    ToggleVisitorTool(AgentId, String),
    /// Ask whether to replace this agent's share link.
    ReplaceLinkAsk(AgentId),
    /// Replace this agent's share link (the dialog's "yes").
    ReplaceLink(AgentId),
    /// What this agent spent, by cause and by visitor.
    AgentUsage(AgentId),
    /// Stop the answer this agent is writing in the chat.
    Stop(AgentId),
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
            Action::Settings(id) => with_id("agent_settings", id),
            Action::SetSharing(id, on) => format!("set_sharing:{id}:{}", if *on { "on" } else { "off" }),
            Action::BudgetMenu(id) => with_id("budget_menu", id),
            Action::SetBudget(id, tokens) => format!("set_budget:{id}:{}", or_none(*tokens)),
            Action::VisitorLimitMenu(id) => with_id("visitor_limit_menu", id),
            Action::SetVisitorLimit(id, messages) => {
                format!("set_visitor_limit:{id}:{}", or_none(messages.map(u64::from)))
            }
            Action::VisitorToolsMenu(id) => with_id("visitor_tools", id),
            Action::ToggleVisitorTool(id, tool) => format!("visitor_tool:{id}:{tool}"),
            Action::ReplaceLinkAsk(id) => with_id("replace_link_ask", id),
            Action::ReplaceLink(id) => with_id("replace_link", id),
            Action::AgentUsage(id) => with_id("agent_usage", id),
            Action::Stop(id) => with_id("stop_turn", id),
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
        // `<id>:<value>` of the settings buttons.
        let (first, second) = rest.split_once(':').unwrap_or((rest, ""));
        let id_and = || first.parse::<AgentId>().ok();
        let amount = |raw: &str| match raw {
            "none" => Some(None),
            n => n.parse::<u64>().ok().filter(|n| *n > 0).map(Some),
        };
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
            "agent_settings" => Action::Settings(id()?),
            "set_sharing" => Action::SetSharing(
                id_and()?,
                match second {
                    "on" => true,
                    "off" => false,
                    _ => return None,
                },
            ),
            "budget_menu" => Action::BudgetMenu(id()?),
            "set_budget" => Action::SetBudget(id_and()?, amount(second)?),
            "visitor_limit_menu" => Action::VisitorLimitMenu(id()?),
            "set_visitor_limit" => {
                let limit = match amount(second)? {
                    Some(n) => Some(u32::try_from(n).ok()?),
                    None => None,
                };
                Action::SetVisitorLimit(id_and()?, limit)
            }
            "visitor_tools" => Action::VisitorToolsMenu(id()?),
            "visitor_tool" if !second.is_empty() => Action::ToggleVisitorTool(id_and()?, second.to_owned()),
            "replace_link_ask" => Action::ReplaceLinkAsk(id()?),
            "replace_link" => Action::ReplaceLink(id()?),
            "agent_usage" => Action::AgentUsage(id()?),
            "stop_turn" => Action::Stop(id()?),
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

/// A settings amount as its button writes it.
fn or_none(amount: Option<u64>) -> String {
    amount.map_or_else(|| "none".to_owned(), |n| n.to_string())
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
            Action::Settings(id),
            Action::SetSharing(id, false),
            Action::SetSharing(id, true),
            Action::BudgetMenu(id),
            Action::SetBudget(id, Some(u64::MAX)),
            Action::SetBudget(id, None),
            Action::VisitorLimitMenu(id),
            Action::SetVisitorLimit(id, Some(u32::MAX)),
            Action::SetVisitorLimit(id, None),
            Action::VisitorToolsMenu(id),
            Action::ToggleVisitorTool(id, "web_search".into()),
            Action::ReplaceLinkAsk(id),
            Action::ReplaceLink(id),
            Action::AgentUsage(id),
            Action::Stop(id),
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
        assert_eq!(Action::decode("set_budget:4:0"), None, "a budget of nothing is no budget: none");
        assert_eq!(Action::decode("set_budget:4:lots"), None);
        assert_eq!(Action::decode("set_visitor_limit:4:99999999999"), None);
        assert_eq!(Action::decode("set_sharing:4:maybe"), None);
        assert_eq!(Action::decode("visitor_tool:4:"), None);
    }
}
