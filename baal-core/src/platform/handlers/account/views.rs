//! Texts of the account: what a user reads about their key and their plan.

use crate::platform::action::Action;
use crate::platform::handlers::settings_views::tokens;
use crate::platform::handlers::views::*;
use crate::platform::messenger::{Button, Text};

pub(crate) fn login_hint() -> Text {
    html(
        "<b>Use your own LibertAI key</b>\nSend <code>/login YOUR_API_KEY</code>. Your agents then run on \
         your credits, with no daily limit for you or your visitors.\nBaal deletes the message with \
         your key as soon as it arrives.\nGet a key at https://libertai.io",
    )
}

pub(crate) fn login_usage() -> Text {
    Text::plain(
        "Usage: /login <your LibertAI API key>\nGet a key at https://libertai.io. Baal deletes the message with \
         your key as soon as it arrives.",
    )
}

pub(crate) fn key_refused() -> Text {
    Text::plain("LibertAI doesn't accept this key. Check it and try /login again.")
}

pub(crate) fn key_unchecked() -> Text {
    Text::plain("Baal couldn't reach LibertAI to check the key. Nothing was saved; try again in a moment.")
}

pub(crate) fn key_connected(hint: &str, balance: f64, restarted: usize) -> Text {
    let mut text = format!("🔑 Key {hint} connected. Balance: {balance:.2} credits.");
    if restarted > 0 {
        text.push_str(&format!("\nRestarting {restarted} running agent(s) so they use it."));
    }
    Text::plain(text)
}

/// After `/logout`: `restarted` is `None` when Baal has no key of its own to move agents to.
pub(crate) fn logged_out(restarted: Option<usize>) -> Text {
    let mut text = String::from("Your LibertAI key is removed; you're on the free tier again.");
    match restarted {
        Some(0) => {}
        Some(n) => text.push_str(&format!("\nRestarting {n} running agent(s) so they stop using your key.")),
        None => text.push_str("\nYour running agents keep the key they were deployed with until you /update them."),
    }
    Text::plain(text)
}

/// What the account card says about who pays.
pub(crate) enum PlanView {
    /// The user's own key: its hint and balance (`None` when LibertAI could not be asked).
    OwnKey { hint: String, balance: Option<f64> },
    /// Neither the user nor Baal has a key.
    NoKey,
    /// Baal's key, with today's messages and tokens.
    FreeTier { used: u32, limit: u32, tokens_used: u64, tokens_limit: u64, resets_in: String },
}

/// How many of the user's agents are in each state, for the card's summary line.
#[derive(Default)]
pub(crate) struct AgentCounts {
    pub(crate) total: usize,
    pub(crate) slots: u32,
    pub(crate) running: usize,
    pub(crate) deploying: usize,
    pub(crate) failed: usize,
    /// Stopped answering; Baal repairs them.
    pub(crate) down: usize,
}

/// The account card; `usage` is the tokens section of the user's agents ([`usage_section`]).
pub(crate) fn account_card(plan: PlanView, agents: AgentCounts, usage: &str) -> Text {
    let down = if agents.down > 0 { format!(" · 🟠 {} down", agents.down) } else { String::new() };
    let summary = format!(
        "<b>Your agents</b>\n{}/{} slots · 🟢 {} running · 🟡 {} deploying · 🔴 {} failed{down}\n\n{usage}",
        agents.total, agents.slots, agents.running, agents.deploying, agents.failed
    );
    match plan {
        PlanView::OwnKey { hint, balance } => {
            let balance = balance.map_or_else(|| "unavailable right now".to_owned(), |b| format!("{b:.2} credits"));
            let body = format!(
                "<b>Your account</b>\n✨ Your own LibertAI key ({hint}) · balance: {balance}\nNo daily message limit \
                 on your agents.\n\n{summary}"
            );
            html(body)
                .row(vec![Button::action("🚪 Log out", Action::Logout), Button::action("📋 My agents", Action::List)])
                .row(vec![Button::action("🔄 Refresh", Action::Account)])
        }
        PlanView::NoKey => {
            let body = format!(
                "<b>Your account</b>\n🔑 No free tier here: connect your own LibertAI key and your agents run on \
                 your credits.\n\n{summary}"
            );
            html(body).row(vec![
                Button::action("🔑 Connect a key", Action::Login),
                Button::action("📋 My agents", Action::List),
            ])
        }
        PlanView::FreeTier { used, limit, tokens_used, tokens_limit, resets_in } => {
            let body = format!(
                "<b>Your account</b>\n🆓 Free tier · {used}/{limit} messages and {}/{} tokens today · resets in \
                 {resets_in} (00:00 UTC)\n\n{summary}\n\n<b>No limits</b>\nConnect your own LibertAI key and your agents run on your \
                 credits.",
                tokens(tokens_used),
                tokens(tokens_limit)
            );
            html(body).row(vec![
                Button::action("🔑 Connect a key", Action::Login),
                Button::action("📋 My agents", Action::List),
            ])
        }
    }
}
