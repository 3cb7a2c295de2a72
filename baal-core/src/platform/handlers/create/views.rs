//! Texts of the /create wizard.

use std::time::Duration;

use crate::domain::{Agent, MODELS, Model};
use crate::platform::action::Action;
use crate::platform::handlers::views::*;
use crate::platform::messenger::{Button, Text};

pub(crate) fn model_menu(name: &str) -> Text {
    let mut body = format!("Your agent will be called <b>{}</b>.\n\n<b>Step 2 of 2:</b> pick a model.\n", e(name));
    let mut text = Text::html(String::new());
    for model in MODELS {
        body.push_str(&format!(
            "\n<b>{} {}</b>\n{}\n• Best for {}\n",
            model.emoji,
            e(model.display_name),
            e(model.description),
            e(model.best_for)
        ));
        text = text.row(vec![Button::action(
            format!("{} {}", model.emoji, model.display_name),
            Action::CreateModel(model.id.to_owned()),
        )]);
    }
    text.body = body;
    text
}

pub(crate) fn ask_name() -> Text {
    html(
        "<b>Let's create your agent.</b>\n<b>Step 1 of 2:</b> what should it be called? \
         (one line, up to 64 characters)\n/cancel stops.",
    )
}

pub(crate) fn operator_only() -> Text {
    Text::plain(
        "This Baal runs agents only for its operator: on this machine an agent's tools could \
         reach what belongs to others, so it does not host agents for the public. You can still \
         chat with agents others share with you.",
    )
}

pub(crate) fn slots_full(used: u64, max: u32) -> Text {
    Text::plain(format!(
        "You already have {used} agents, the most one person can have ({max}). Delete one with /list first."
    ))
}

pub(crate) fn ready_to_deploy(name: &str, model: &Model, place: &str, usual: Option<Duration>) -> Text {
    let how_long = usual.map(|usual| format!("; this usually takes {}", usually_takes(usual))).unwrap_or_default();
    let body = format!(
        "<b>Ready to deploy</b>\nName: <b>{}</b>\nModel: {} {}\n\nBaal deploys it on {place}{how_long}.\n\
         <i>Tip: /soul changes its personality at any time.</i>",
        e(name),
        model.emoji,
        e(model.display_name),
    );
    html(body).row(vec![
        Button::action("✅ Deploy", Action::CreateConfirm),
        Button::action("❌ Cancel", Action::CreateCancel),
    ])
}

pub(crate) fn no_model_key() -> Text {
    html(
        "<b>An agent needs a model key first</b>\nThis Baal has no LibertAI key of its own to run agents \
         with, so yours is needed: get one at https://libertai.io, send <code>/login YOUR_KEY</code>, then \
         /create again.",
    )
    .row(vec![Button::action("🔑 How to connect a key", Action::Login)])
}

pub(crate) fn created(agent: &Agent) -> Text {
    html(format!("<b>{}</b> (#{}) is created. Deploying it now…", e(&agent.name), agent.id))
}
