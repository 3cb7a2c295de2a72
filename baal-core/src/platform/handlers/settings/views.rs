//! An owner's control of cost and access: the settings card and its choices, the words of every
//! limit a user meets, and the budget notices.

use super::super::views::*;
use crate::domain::{Agent, AgentId, Role};
use crate::platform::action::Action;
use crate::platform::messenger::{Button, Text};

/// The daily budgets offered, in tokens.
pub(crate) const BUDGET_CHOICES: [u64; 4] = [100_000, 500_000, 2_000_000, 10_000_000];
/// The daily message limits per visitor offered.
pub(crate) const VISITOR_LIMIT_CHOICES: [u32; 4] = [10, 30, 100, 300];

/// "950", "12.3k", "500k", "2.5M": token counts as people read them.
pub(crate) fn tokens(n: u64) -> String {
    match n {
        0..=999 => n.to_string(),
        1_000..=99_999 => trim_zero(format!("{:.1}k", n as f64 / 1e3)),
        100_000..=999_999 => format!("{}k", n / 1000),
        _ => trim_zero(format!("{:.1}M", n as f64 / 1e6)),
    }
}

fn trim_zero(text: String) -> String {
    text.replace(".0k", "k").replace(".0M", "M")
}

/// What the settings card shows besides the agent itself.
pub(crate) struct SettingsFacts<'a> {
    pub share_link: &'a str,
    /// Tokens the agent spent today.
    pub today_tokens: u64,
    /// Visitors who wrote today, and their messages.
    pub visitors_today: (usize, u32),
    /// The tools visitors get now (`Inner::visitor_tools_of`).
    pub visitor_tools: &'a [String],
}

pub(crate) fn settings_card(agent: &Agent, facts: &SettingsFacts<'_>) -> Text {
    let policy = agent.policy;
    let id = agent.id;
    let sharing =
        if policy.sharing { "on: anyone with the link can chat with it" } else { "off: only you can chat with it" };
    let budget = match policy.daily_token_budget {
        Some(b) => format!("{} tokens a day (today: {})", tokens(b), tokens(facts.today_tokens)),
        None => format!("none (today: {} tokens)", tokens(facts.today_tokens)),
    };
    let visitor_limit = match policy.visitor_daily_messages {
        Some(n) => format!("{n} messages a day each"),
        None => "no limit".to_owned(),
    };
    let tools = if facts.visitor_tools.is_empty() { "none".to_owned() } else { facts.visitor_tools.join(", ") };
    let (visitors, messages) = facts.visitors_today;
    let body = format!(
        "⚙️ <b>{}</b> settings\n\n<b>Sharing</b>: {sharing}\n<b>Daily token budget</b>: {budget}\n<b>Visitor messages</b>: \
         {visitor_limit}\n<b>Visitor tools</b>: {}\n<b>Visitors today</b>: {visitors} ({messages} message{})\n\n🔗 {}",
        e(&agent.name),
        e(&tools),
        if messages == 1 { "" } else { "s" },
        e(facts.share_link),
    );
    let sharing_button = if policy.sharing {
        Button::action("🔒 Stop sharing", Action::SetSharing(id, false))
    } else {
        Button::action("🔓 Share again", Action::SetSharing(id, true))
    };
    with_rows(
        html(body),
        vec![
            vec![sharing_button, Button::action("📊 Usage", Action::AgentUsage(id))],
            vec![
                Button::action("💰 Budget", Action::BudgetMenu(id)),
                Button::action("✉️ Visitor limit", Action::VisitorLimitMenu(id)),
            ],
            vec![
                Button::action("🧰 Visitor tools", Action::VisitorToolsMenu(id)),
                Button::action("🔁 New link", Action::ReplaceLinkAsk(id)),
            ],
            vec![Button::action("⬅️ My agents", Action::List)],
        ],
    )
}

fn back(id: AgentId) -> Button {
    Button::action("⬅️ Back", Action::Settings(id))
}

pub(crate) fn budget_menu(agent: &Agent) -> Text {
    let id = agent.id;
    let now = agent.policy.daily_token_budget.map_or_else(|| "none".to_owned(), |b| format!("{} tokens", tokens(b)));
    let body = format!(
        "💰 Daily token budget of <b>{}</b>: what the whole agent may spend per UTC day (your chats, visitors, \
         heartbeat and subagents). When it is spent, the agent stops until midnight UTC; you are told at 80 % \
         and at 100 %.\n\nNow: {now}",
        e(&agent.name)
    );
    let mut choices: Vec<Button> = BUDGET_CHOICES
        .iter()
        .map(|b| {
            Button::action(
                mark(Some(*b) == agent.policy.daily_token_budget, &tokens(*b)),
                Action::SetBudget(id, Some(*b)),
            )
        })
        .collect();
    let rest = choices.split_off(2);
    let none =
        Button::action(mark(agent.policy.daily_token_budget.is_none(), "No budget"), Action::SetBudget(id, None));
    with_rows(html(body), vec![choices, rest, vec![none, back(id)]])
}

pub(crate) fn visitor_limit_menu(agent: &Agent) -> Text {
    let id = agent.id;
    let current = agent.policy.visitor_daily_messages;
    let now = current.map_or_else(|| "no limit".to_owned(), |n| format!("{n} messages a day"));
    let body = format!(
        "✉️ Messages each visitor may send <b>{}</b> per UTC day (you are never limited here).\n\nNow: {now}",
        e(&agent.name)
    );
    let mut choices: Vec<Button> = VISITOR_LIMIT_CHOICES
        .iter()
        .map(|n| Button::action(mark(Some(*n) == current, &n.to_string()), Action::SetVisitorLimit(id, Some(*n))))
        .collect();
    let rest = choices.split_off(2);
    let none = Button::action(mark(current.is_none(), "No limit"), Action::SetVisitorLimit(id, None));
    with_rows(html(body), vec![choices, rest, vec![none, back(id)]])
}

fn mark(chosen: bool, label: &str) -> String {
    if chosen { format!("✅ {label}") } else { label.to_owned() }
}

pub(crate) fn visitor_tools_menu(agent: &Agent, allowed: &[String]) -> Text {
    let id = agent.id;
    let body = if allowed.is_empty() {
        format!("🧰 Baal's operator lets visitors use no tools, so visitors of <b>{}</b> only chat.", e(&agent.name))
    } else {
        format!(
            "🧰 Tools visitors of <b>{}</b> may use (you always have every tool). Tap one to give or take it away; \
             the next visitor message uses the new set.",
            e(&agent.name)
        )
    };
    let mut rows: Vec<Vec<Button>> = allowed
        .chunks(2)
        .map(|pair| {
            pair.iter()
                .map(|tool| {
                    let on = agent.visitor_tools.contains(tool);
                    let label = format!("{} {tool}", if on { "✅" } else { "▫️" });
                    Button::action(label, Action::ToggleVisitorTool(id, tool.clone()))
                })
                .collect()
        })
        .collect();
    rows.push(vec![back(id)]);
    with_rows(html(body), rows)
}

pub(crate) fn replace_link_dialog(agent: &Agent) -> Text {
    let body = format!(
        "🔁 Give <b>{}</b> a new share link? The current link stops working at once, and whoever opens it is told \
         it was replaced, as is every visitor still chatting through it: they need the new link to come back.",
        e(&agent.name)
    );
    with_rows(html(body), vec![vec![Button::action("🔁 New link", Action::ReplaceLink(agent.id)), back(agent.id)]])
}

pub(crate) fn link_replaced(agent: &Agent, link: &str) -> Text {
    let body = format!("🔗 New link for <b>{}</b>:\n{}\n\nThe old link no longer opens it.", e(&agent.name), e(link));
    with_rows(html(body), vec![vec![back(agent.id)]])
}

pub(crate) fn link_retired() -> Text {
    Text::plain("This link was replaced by the agent's owner and no longer works. Ask them for the new one.")
}

pub(crate) fn sharing_paused(agent: &Agent) -> Text {
    html(format!(
        "⏸ The owner of <b>{}</b> has paused sharing: it isn't taking messages from visitors right now. Try again \
         later, or ask its owner.",
        e(&agent.name)
    ))
}

pub(crate) fn agent_budget_spent(agent: &Agent, role: Role, budget: u64, resets_in: &str) -> Text {
    let name = e(&agent.name);
    html(match role {
        Role::Owner => format!(
            "⏸ <b>{name}</b> has used its daily budget of {} tokens. It starts again at 00:00 UTC (in {resets_in}). \
             To go on now, raise its budget: /list → ⚙️ Settings → 💰 Budget.",
            tokens(budget)
        ),
        Role::Visitor => format!(
            "⏸ <b>{name}</b> has used all the tokens its owner allows it per day. It starts again at 00:00 UTC (in \
             {resets_in})."
        ),
    })
}

/// The free tier's tokens are spent; only the owner's key would change who pays.
pub(crate) fn free_tokens_spent(agent: &Agent, role: Role, limit: u64, resets_in: &str) -> Text {
    html(match role {
        Role::Owner => format!(
            "⏸ You've used today's {} free tokens on agents Baal pays for. They come back at 00:00 UTC (in \
             {resets_in}).\n\nTo go on now, connect your own LibertAI key with /login: your agents then run on your \
             credits, with no daily limit from Baal.",
            tokens(limit)
        ),
        Role::Visitor => format!(
            "⏸ You've used today's {} free tokens. They come back at 00:00 UTC (in {resets_in}).\n\n<b>{}</b> runs on \
             Baal's free tier, which only its owner can change: your own key would not lift this limit.",
            tokens(limit),
            e(&agent.name)
        ),
    })
}

pub(crate) fn visitor_limit(agent: &Agent, limit: u32, resets_in: &str) -> Text {
    html(format!(
        "⏸ You've sent <b>{}</b> the {limit} messages a day its owner allows each visitor. You can write again at \
         00:00 UTC (in {resets_in}).",
        e(&agent.name)
    ))
}

/// What the agent's own budget left unsaid: its background work's allowance is spent.
pub(crate) fn background_spent(agent: &Agent, resets_in: &str) -> Text {
    html(format!(
        "⏸ <b>{}</b> has used today's tokens for its background work. It starts again at 00:00 UTC (in {resets_in}).",
        e(&agent.name)
    ))
}

pub(crate) fn budget_notice(agent: &Agent, level: u8, used: u64, budget: u64, resets_in: &str) -> Text {
    let name = e(&agent.name);
    html(if level >= 100 {
        format!(
            "⏸ <b>{name}</b> has used its whole daily budget ({} of {} tokens). It starts no model calls until 00:00 \
             UTC (in {resets_in}): no answers, heartbeat or subagents. Raise the budget: /list → ⚙️ Settings → 💰 \
             Budget.",
            tokens(used),
            tokens(budget)
        )
    } else {
        format!(
            "📊 <b>{name}</b> has used {level} % of its daily budget ({} of {} tokens). At 100 % it stops until 00:00 \
             UTC (in {resets_in}). Raise the budget: /list → ⚙️ Settings → 💰 Budget.",
            tokens(used),
            tokens(budget)
        )
    })
}

/// Visitors listed by name in an agent's usage; the rest are counted.
pub(crate) const MAX_VISITORS_SHOWN: usize = 15;

/// One visitor's counts in an agent's usage view.
#[derive(Debug, Default)]
pub(crate) struct VisitorLine {
    pub user: crate::domain::UserId,
    /// "@name", or "user <id>"; empty for visitors past [`MAX_VISITORS_SHOWN`].
    pub name: String,
    pub messages_today: u32,
    pub messages_period: u32,
    pub tokens_today: u64,
    pub tokens_period: u64,
}

/// What an agent spent (`section`: its tokens by cause) and each visitor's counts, busiest first.
pub(crate) fn agent_usage(agent: &Agent, section: &str, visitors: &[VisitorLine], days: u32) -> Text {
    let mut body = format!("📊 <b>{}</b>\n\n{section}\n\n<b>Visitors</b> (today · last {days} days)", e(&agent.name));
    if visitors.is_empty() {
        body.push_str("\nNone yet.");
    }
    for visitor in visitors.iter().take(MAX_VISITORS_SHOWN) {
        body.push_str(&format!(
            "\n{}: {} · {} messages, {} · {} tokens",
            e(&visitor.name),
            visitor.messages_today,
            visitor.messages_period,
            tokens(visitor.tokens_today),
            tokens(visitor.tokens_period)
        ));
    }
    if visitors.len() > MAX_VISITORS_SHOWN {
        body.push_str(&format!("\n…and {} more", visitors.len() - MAX_VISITORS_SHOWN));
    }
    body.push_str("\n\nCounts only: Baal never shows you what visitors wrote.");
    with_rows(html(body), vec![vec![back(agent.id)]])
}

pub(crate) fn not_yours() -> Text {
    Text::plain("Only an agent's owner can change its settings.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_counts_read_as_people_say_them() {
        let cases = [(0, "0"), (950, "950"), (1_000, "1k"), (12_345, "12.3k"), (500_000, "500k"), (2_000_000, "2M")];
        for (n, text) in cases {
            assert_eq!(tokens(n), text);
        }
        assert_eq!(tokens(2_500_000), "2.5M");
    }
}
