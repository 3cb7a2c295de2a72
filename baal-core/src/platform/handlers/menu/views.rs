//! Texts of the menu.

use std::time::Duration;

use crate::platform::action::Action;
use crate::platform::command::{Command, HelpSection};
use crate::platform::handlers::views::*;
use crate::platform::messenger::{Button, Text};

pub(crate) fn welcome() -> Text {
    html(
        "<b>Welcome to Baal</b>\nCreate your own AI agent in a minute, then share it with anyone.\n\n\
         What would you like to do?",
    )
    .row(vec![Button::action("🚀 Create an agent", Action::Create), Button::action("📋 My agents", Action::List)])
    .row(vec![Button::action("💳 Account", Action::Account), Button::action("ℹ️ Help", Action::Help)])
}

/// `/help`: the commands from the command table, in sections; operators also see theirs.
pub(crate) fn help(usual_deploy: Option<Duration>, admin: bool) -> Text {
    let wait = match usual_deploy {
        Some(usual) => format!("Wait {} while Baal deploys it", usually_takes(usual)),
        None => "Wait while Baal deploys it".to_owned(),
    };
    let section = |title: &str, section: HelpSection| {
        format!("<b>{title}</b>\n{}", Command::help_lines(section, admin).join("\n"))
    };
    let mut body = format!(
        "<b>Baal: your own AI agent, shared by link</b>\n\n\
         <b>Get started</b>\n1. /create: name your agent and pick a model\n\
         2. {wait}\n3. Chat with it, and share its link\n\n{}\n\n{}",
        section("Agents", HelpSection::Agents),
        section("Account", HelpSection::Account),
    );
    if admin {
        body.push_str(&format!(
            "\n\n{}\n/dashboard also shows the whole fleet",
            section("Operators", HelpSection::Operators)
        ));
    }
    html(body)
        .row(vec![
            Button::url("📚 Documentation", "https://github.com/Libertai/baal"),
            Button::url("💬 Support", "https://t.me/libertai"),
        ])
        .row(vec![Button::url("🐛 Report an issue", "https://github.com/Libertai/baal/issues")])
}
