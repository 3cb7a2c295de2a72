//! Cards and dialogs of an owner's agents.

use chrono::{DateTime, Utc};

use crate::domain::{Agent, AgentRuntime, AgentStatus};
use crate::platform::action::Action;
use crate::platform::handlers::views::*;
use crate::platform::messenger::{Button, Text};

pub(crate) fn delete_dialog(agent: &Agent) -> Text {
    let body = format!(
        "<b>Delete this agent?</b>\nAgent: <b>{}</b> #{}\nModel: <code>{}</code>\nStatus: {}\n\n\
         • it stops for good, with everything it runs on\n• its conversations and files are deleted\n\
         • its share link stops working\n• one slot is freed\n\n<b>This can't be undone.</b>",
        e(&agent.name),
        agent.id,
        e(&agent.model),
        status_word(agent.status)
    );
    html(body).row(vec![
        Button::action("⚠️ Yes, delete", Action::DeleteConfirmed(agent.id)),
        Button::action("❌ Cancel", Action::DeleteCancelled),
    ])
}

pub(crate) fn no_agents() -> Text {
    html("<b>Your agents</b>\nYou have no agents yet.")
        .row(vec![Button::action("➕ Create your first agent", Action::Create)])
}

pub(crate) fn list_header(count: usize, slots: usize) -> Text {
    html(format!("<b>Your agents</b> ({count}/{slots} slots used)"))
}

pub(crate) fn another_agent(left: usize) -> Text {
    let label = format!("➕ Create an agent ({left} slot{} left)", if left == 1 { "" } else { "s" });
    Text::plain("Want another agent?").row(vec![Button::action(label, Action::Create)])
}

/// One agent in `/list`, with the buttons its status allows.
pub(crate) fn card(agent: &Agent, share_link: &str, now: DateTime<Utc>) -> Text {
    let mut body = format!(
        "{} <b>{}</b> #{}\n<code>{}</code> · {} · created {}",
        status_emoji(agent.status),
        e(&agent.name),
        agent.id,
        e(&agent.model),
        status_word(agent.status),
        age(agent.created_at, now)
    );
    if agent.runtime == AgentRuntime::Python {
        body.push_str(&format!(
            "\n⬆️ Still runs the Python Baal's agent: visitors wait until /update {} upgrades it.",
            agent.id
        ));
    }
    let id = agent.id;
    let delete = Button::action("🗑️ Delete", Action::DeleteAsk(id));
    let rows = match agent.status {
        AgentStatus::Running => {
            body.push_str(&format!("\n🔗 Share: {}", e(share_link)));
            vec![
                vec![Button::action("💬 Chat", Action::Chat(id)), Button::action("📝 Personality", Action::Soul(id))],
                vec![
                    Button::action("⚙️ Settings", Action::Settings(id)),
                    Button::action("🔄 Update", Action::Update(id)),
                ],
                vec![delete],
            ]
        }
        AgentStatus::Deploying => vec![vec![Button::action("🔄 Refresh", Action::RefreshStatus(id)), delete]],
        AgentStatus::Failed | AgentStatus::Down => vec![vec![Button::action("🔧 Repair", Action::Repair(id)), delete]],
        AgentStatus::Pending | AgentStatus::Stopped => vec![vec![delete]],
    };
    with_rows(html(body), rows)
}
