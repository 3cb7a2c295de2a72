//! Texts of /soul.

use crate::domain::Agent;
use crate::platform::action::Action;
use crate::platform::handlers::views::*;
use crate::platform::messenger::{Button, Text};

pub(crate) fn picker(agents: &[Agent]) -> Text {
    agents.iter().fold(Text::plain("Whose personality would you like to see or change?"), |text, agent| {
        text.row(vec![Button::action(format!("📝 {}", agent.name), Action::Soul(agent.id))])
    })
}

pub(crate) fn card(agent: &Agent) -> Text {
    let body = format!(
        "<b>{}'s personality</b>\n<code>{}</code>\n\nThese are the instructions the agent follows in every conversation.",
        e(&agent.name),
        e(&truncate_chars(&agent.system_prompt, 800))
    );
    html(body).row(vec![
        Button::action("✏️ Change it", Action::SoulEdit(agent.id)),
        Button::action("« My agents", Action::List),
    ])
}

pub(crate) fn edit_prompt(agent: &Agent) -> Text {
    html(format!(
        "<b>New personality for {}</b>\nNow:\n<code>{}</code>\n\nSend the new instructions as your next message, \
         or /cancel to keep these.",
        e(&agent.name),
        e(&truncate_chars(&agent.system_prompt, 500))
    ))
}
