//! An agent's settings, for its owner: sharing, the daily token budget, the visitors' daily
//! messages and tools, and replacing the share link. Only the owner may change them; every value
//! a button carries is checked again here (a client can send any button data).

pub(crate) mod views;

use std::sync::Arc;

use self::views::{SettingsFacts, VisitorLine};
use super::account::USAGE_VIEW_DAYS;
use super::views::usage_section;
use crate::domain::{Agent, AgentId, AgentPolicy, new_slug, usage_day};
use crate::metering::UsageReport;
use crate::platform::action::Action;
use crate::platform::engine::Ctx;
use crate::platform::engine::{Inner, PlatformError};
use crate::platform::messenger::MessageRef;
use crate::platform::metering::tokens_of;
use crate::store::UsageQuery;

/// The largest daily budget a button may set: far above any real day, small enough for every
/// backend's integer.
const MAX_BUDGET: u64 = 1_000_000_000_000;

impl Inner {
    /// Runs one settings button of `agent`'s owner. Returns the press's notice.
    pub(super) async fn settings_button(
        self: &Arc<Self>,
        ctx: &Ctx,
        action: Action,
        id: AgentId,
        message: MessageRef,
    ) -> Result<Option<String>, PlatformError> {
        let Some(agent) = self.owned_agent(ctx.user_id(), id).await?.filter(|a| !a.deleted) else {
            self.edit_or_say(ctx.chat, Some(message), views::not_yours()).await;
            return Ok(None);
        };
        let mut policy = agent.policy;
        let (text, notice) = match action {
            Action::Settings(_) => (self.settings_card(&agent).await?, None),
            Action::SetSharing(_, on) => {
                policy.sharing = on;
                let agent = self.set_policy(agent, policy).await?;
                let notice = if on { "Sharing is on" } else { "Sharing is off: only you can chat with it" };
                (self.settings_card(&agent).await?, Some(notice))
            }
            Action::BudgetMenu(_) => (views::budget_menu(&agent), None),
            Action::SetBudget(_, budget) => {
                if budget.is_some_and(|b| b > MAX_BUDGET) {
                    return Ok(Some("That budget is not one Baal offers".into()));
                }
                policy.daily_token_budget = budget;
                let agent = self.set_policy(agent, policy).await?;
                self.send_budget(&agent);
                // A budget already reached today is said at once, not at the next usage stored.
                self.budget_notices(&agent).await;
                (self.settings_card(&agent).await?, Some("Budget saved"))
            }
            Action::VisitorLimitMenu(_) => (views::visitor_limit_menu(&agent), None),
            Action::SetVisitorLimit(_, limit) => {
                policy.visitor_daily_messages = limit;
                let agent = self.set_policy(agent, policy).await?;
                (self.settings_card(&agent).await?, Some("Visitor limit saved"))
            }
            Action::VisitorToolsMenu(_) => {
                (views::visitor_tools_menu(&agent, &self.config.visitor_tools_allowed), None)
            }
            Action::ToggleVisitorTool(_, tool) => {
                if !self.config.visitor_tools_allowed.contains(&tool) {
                    return Ok(Some("Baal's operator does not let visitors use that tool".into()));
                }
                let mut tools = agent.visitor_tools.clone();
                let given = !tools.contains(&tool);
                if given {
                    tools.push(tool.clone());
                } else {
                    tools.retain(|t| *t != tool);
                }
                self.store.agent_set_visitor_tools(agent.id, &tools).await?;
                let agent = self.store.agent_get(agent.id).await?.unwrap_or(agent);
                let notice = if given { "Visitors may now use it" } else { "Visitors no longer get it" };
                (views::visitor_tools_menu(&agent, &self.config.visitor_tools_allowed), Some(notice))
            }
            Action::ReplaceLinkAsk(_) => (views::replace_link_dialog(&agent), None),
            Action::ReplaceLink(_) => {
                self.store.agent_replace_slug(agent.id, &new_slug()).await?;
                let agent = self.store.agent_get(agent.id).await?.unwrap_or(agent);
                (views::link_replaced(&agent, &self.share_link(&agent)), Some("The old link no longer works"))
            }
            Action::AgentUsage(_) => (self.agent_usage_view(&agent).await?, None),
            _ => return Ok(None),
        };
        self.edit_or_say(ctx.chat, Some(message), text).await;
        Ok(notice.map(str::to_owned))
    }

    async fn set_policy(&self, agent: Agent, policy: AgentPolicy) -> Result<Agent, PlatformError> {
        self.store.agent_set_policy(agent.id, &policy).await?;
        Ok(self.store.agent_get(agent.id).await?.unwrap_or(agent))
    }

    /// Hands the agent its new budget now, so its background work obeys it before the next
    /// turn (which carries it too). An agent that keeps no budget (a Python agent) is left alone.
    fn send_budget(self: &Arc<Self>, agent: &Agent) {
        let Some(endpoint) = self.endpoint(agent) else { return };
        let (inner, budget, id) = (self.clone(), self.budget_of(agent), agent.id);
        self.spawn_tracked(async move {
            if let Err(err) = inner.proxy.set_budget(&endpoint, &budget).await {
                tracing::info!(agent = %id, error = %err, "the agent did not take its new budget; the next turn brings it");
            }
        });
    }

    /// What `agent` spent over the last days, by cause, and each visitor's messages and tokens
    /// (counts only: the platform never keeps what visitors wrote).
    async fn agent_usage_view(&self, agent: &Agent) -> Result<crate::platform::messenger::Text, PlatformError> {
        let today = usage_day(self.now()).0;
        let from = today - chrono::Days::new(u64::from(USAGE_VIEW_DAYS - 1));
        let rows = self.store.usage_rows(&UsageQuery::days(from, today).agent(agent.id)).await?;
        let report = UsageReport::new(&rows, today, USAGE_VIEW_DAYS);
        let counts = self.store.visitor_counts(agent.id, from, today).await?;
        let mut visitors: Vec<VisitorLine> = Vec::new();
        for row in &counts {
            let line = match visitors.iter_mut().find(|v| v.user == row.user_id) {
                Some(line) => line,
                None => {
                    visitors.push(VisitorLine { user: row.user_id, ..VisitorLine::default() });
                    visitors.last_mut().expect("just pushed")
                }
            };
            line.messages_period += row.messages;
            if row.day == today {
                line.messages_today += row.messages;
            }
        }
        for user in report.users().iter().filter(|u| u.user_id() != agent.owner_id) {
            if !visitors.iter().any(|v| v.user == user.user_id()) {
                visitors.push(VisitorLine { user: user.user_id(), ..VisitorLine::default() });
            }
        }
        for line in &mut visitors {
            if let Some(user) = report.user(line.user) {
                line.tokens_today = user.totals().today().total_tokens();
                line.tokens_period = user.totals().period().total_tokens();
            }
        }
        visitors.sort_by(|a, b| b.tokens_period.cmp(&a.tokens_period).then(b.messages_period.cmp(&a.messages_period)));
        let shown = visitors.len().min(views::MAX_VISITORS_SHOWN);
        for line in &mut visitors[..shown] {
            line.name = match self.store.user_get(line.user).await? {
                Some(user) => user.username.map_or_else(|| format!("user {}", line.user), |name| format!("@{name}")),
                None => format!("user {}", line.user),
            };
        }
        let section = usage_section(&report, |_| agent.name.clone());
        Ok(views::agent_usage(agent, &section, &visitors, USAGE_VIEW_DAYS))
    }

    pub(super) async fn settings_card(&self, agent: &Agent) -> Result<crate::platform::messenger::Text, PlatformError> {
        let (day, _) = usage_day(self.now());
        let today = self.store.usage_rows(&UsageQuery::days(day, day).agent(agent.id)).await?;
        let visitors = self.store.visitor_counts(agent.id, day, day).await?;
        let facts = SettingsFacts {
            share_link: &self.share_link(agent),
            today_tokens: tokens_of(&today),
            visitors_today: (visitors.len(), visitors.iter().map(|v| v.messages).sum()),
            visitor_tools: &self.visitor_tools_of(agent),
        };
        Ok(views::settings_card(agent, &facts))
    }
}
