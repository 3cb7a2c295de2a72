//! Texts and keyboards of a conversation.

use super::super::menu::views::welcome;
use crate::domain::{Agent, AgentStatus};
use crate::platform::action::Action;
use crate::platform::handlers::views::*;
use crate::platform::messenger::{Button, Text};

pub(crate) fn chat_keyboard(show_tools: bool) -> Vec<Vec<Button>> {
    vec![
        vec![Button::action("🚪 Exit chat", Action::ExitChat), Button::action("📋 My agents", Action::List)],
        vec![
            Button::action("💳 Account", Action::Account),
            Button::action(if show_tools { "👁️ Hide tools" } else { "🙈 Show tools" }, Action::ToggleTools),
        ],
        vec![Button::action("🧹 Start over", Action::ResetAsk)],
    ]
}

/// The `toggle_tools` button edits only the keyboard; the text it carries is the chat banner's.
pub(crate) fn message_body_placeholder() -> &'static str {
    "Chat controls:"
}

/// The keyboard shown under the first answer of an agent in a chat.
pub(crate) fn chat_controls(show_tools: bool) -> Text {
    let mut text = Text::plain(message_body_placeholder());
    text.buttons = chat_keyboard(show_tools);
    text
}

pub(crate) fn not_in_a_chat() -> Text {
    Text::plain(
        "You're not talking to an agent yet. Open an agent's share link, pick one of yours in /list, or create \
         one with /create.",
    )
}

/// An agent that cannot take a message; its owner is told how to repair a failed one.
pub(crate) fn unavailable(agent: &Agent, repairable: bool) -> Text {
    let mut note = if agent.status == AgentStatus::Down {
        format!("{} stopped answering; Baal is repairing it. Try again in a few minutes.", e(&agent.name))
    } else {
        format!("{} isn't available right now (status: {}).", e(&agent.name), agent.status)
    };
    if repairable {
        note.push_str(&format!(" /repair {} tries again.", agent.id));
    }
    html(note)
}

/// The free tier's daily limit, in words true for who asks: the owner can lift it with their own
/// key (their agents then run on it); a visitor cannot, since the agent's owner decides who pays.
pub(crate) fn daily_limit(used: u32, limit: u32, resets_in: &str, owner: bool) -> Text {
    if owner {
        let body = format!(
            "<b>Daily limit reached</b>\nYou've sent {used}/{limit} free messages today. The counter starts again \
             in {resets_in} (00:00 UTC).\nConnect your own LibertAI key and your agents run on it, with no limit."
        );
        return html(body).row(vec![
            Button::action("🔑 Connect a key", Action::Login),
            Button::action("💳 Account", Action::Account),
        ]);
    }
    Text::plain(format!(
        "Daily limit reached: you've sent {used}/{limit} messages today to agents on Baal's free tier. The counter \
         starts again in {resets_in} (00:00 UTC). This agent's owner can lift the limit by running it on their own \
         LibertAI key."
    ))
}

/// `me` is how the bot is named to users (`@name`, or "me").
pub(crate) fn private_only(me: &str) -> Text {
    Text::plain(format!(
        "Agents talk only in private chats. Open a private chat with {me} and send your message (or the agent's \
         share link) there."
    ))
}

pub(crate) fn not_ready(agent: &Agent) -> Text {
    html(format!(
        "<b>{}</b> isn't ready yet (status: {}). Try again in a few minutes.",
        e(&agent.name),
        status_word(agent.status)
    ))
}

/// A visitor at an agent imported from the Python Baal and not converted yet.
pub(crate) fn being_upgraded(agent: &Agent) -> Text {
    html(format!(
        "<b>{}</b> is being upgraded to the new Baal and can't take visitors until then. \
         Try this link again later.",
        e(&agent.name)
    ))
}

pub(crate) fn chatting_with(agent: &Agent) -> Text {
    html(format!(
        "You're now chatting with <b>{}</b>. Just type a message.\n/manage or the button below ends the chat.",
        e(&agent.name)
    ))
    .row(vec![Button::action("🚪 Exit chat", Action::ExitChat)])
}

/// After leaving the chat with the agent `name` (`None`: there was none), with Baal's menu
/// under it when asked by a button.
pub(crate) fn left_chat(name: Option<&str>, show_menu: bool) -> Text {
    let text = match name {
        Some(name) => html(format!("You left the chat with <b>{}</b>. You're back in Baal's menu.", e(name))),
        None => html("You're not chatting with an agent; this is Baal's menu."),
    };
    if show_menu { with_rows(text, welcome().buttons) } else { text }
}

pub(crate) fn nothing_to_reset() -> Text {
    Text::plain("You're not talking to an agent, so there is no conversation to start over. Open one first.")
}

pub(crate) fn reset_dialog(agent: &Agent) -> Text {
    let body = format!(
        "<b>Start over with {}?</b>\nIt forgets this conversation: what you said and what it answered. \
         Its memory files and other people's conversations stay as they are.",
        e(&agent.name)
    );
    html(body).row(vec![
        Button::action("🧹 Yes, start over", Action::ResetConfirmed(agent.id)),
        Button::action("❌ Keep it", Action::ResetCancelled),
    ])
}

pub(crate) fn reset_done(agent: &Agent) -> Text {
    html(format!("🧹 <b>{}</b> has forgotten your conversation. Your next message starts a new one.", e(&agent.name)))
}

pub(crate) fn reset_failed(agent: &Agent) -> Text {
    html(format!(
        "Couldn't reach <b>{}</b> to start over; nothing was forgotten. Try again in a moment.",
        e(&agent.name)
    ))
}
