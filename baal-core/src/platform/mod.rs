//! The bot's brain, front-end neutral: every command, button, text, limit and state transition.
//! Front-ends (Telegram, the terminal console, an embedder's own) turn what users do into an
//! [`Input`] and render what the platform asks through their [`Messenger`].

pub mod action;
mod answer;
mod chat;
pub mod command;
mod delete;
mod engine;
mod handlers;
mod health;
mod jobs;
mod lease;
pub mod messenger;
mod metering;
mod observe;
mod plan;
pub mod render;
mod setup;
mod state;
mod turns;

pub use action::Action;
pub use command::Command;
pub use delete::{DeleteError, Deleted, delete_agent};
pub use engine::{Platform, PlatformConfig, PlatformError, deployer_from_settings};
pub use jobs::Converted;
pub use messenger::{Button, ChatId, MessageRef, Messenger, MessengerError, OutgoingFile, Text};
pub use plan::Plan;
pub use setup::{ENCRYPTION_KEY_FILE, secret_box_from_settings, settings_report};

use crate::domain::UserId;

/// Something a user did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputKind {
    /// A command: `/name args…` (name without the slash and without any `@botname` suffix).
    Command {
        /// Lower-case command name.
        name: String,
        /// Everything after the command, trimmed.
        args: String,
    },
    /// Plain text.
    Text(String),
    /// A button press.
    Button {
        /// The button's callback data.
        data: String,
        /// The message that holds the button.
        message: MessageRef,
        /// An id the front-end needs to answer the press (Telegram's query id).
        press_id: String,
    },
}

/// One input from a front-end.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Input {
    /// Who.
    pub user_id: UserId,
    /// Their username, if known.
    pub username: Option<String>,
    /// Where (a private chat's id equals the user's id).
    pub chat_id: ChatId,
    /// The message that carried a command or text, so the platform can delete it (`/login`).
    pub message: Option<MessageRef>,
    /// What.
    pub kind: InputKind,
}

impl Input {
    /// Parses a text message: `/cmd@bot args` becomes a command, anything else text.
    pub fn from_text(user_id: UserId, chat_id: ChatId, text: &str) -> Input {
        Input::new(user_id, chat_id, parse_text(text))
    }

    /// An input of any kind, with no username and no carrying message (see
    /// [`Input::with_username`] and [`Input::with_message`]).
    pub fn new(user_id: UserId, chat_id: ChatId, kind: InputKind) -> Input {
        Input { user_id, username: None, chat_id, message: None, kind }
    }

    /// Plain text taken as it is, even when it starts with `/` (use [`Input::from_text`] to
    /// recognise commands).
    pub fn text(user_id: UserId, chat_id: ChatId, text: impl Into<String>) -> Input {
        Input::new(user_id, chat_id, InputKind::Text(text.into()))
    }

    /// The command `/name args`; `name` is given without the slash and is lower-cased.
    pub fn command(user_id: UserId, chat_id: ChatId, name: &str, args: impl Into<String>) -> Input {
        let args = args.into();
        let kind = InputKind::Command {
            name: name.trim_start_matches('/').to_ascii_lowercase(),
            args: args.trim().to_owned(),
        };
        Input::new(user_id, chat_id, kind)
    }

    /// A press of the button carrying `data` on `message`; `press_id` is what the front-end
    /// needs to answer the press ([`Messenger::answer_press`]).
    pub fn button(
        user_id: UserId,
        chat_id: ChatId,
        data: impl Into<String>,
        message: MessageRef,
        press_id: impl Into<String>,
    ) -> Input {
        Input::new(user_id, chat_id, InputKind::Button { data: data.into(), message, press_id: press_id.into() })
    }

    /// The sender's username (shown to owners, kept on the user's record).
    pub fn with_username(mut self, username: impl Into<String>) -> Input {
        self.username = Some(username.into());
        self
    }

    /// The message that carried a command or text, so the platform may delete it (`/login`
    /// removes the message holding a key).
    pub fn with_message(mut self, message: MessageRef) -> Input {
        self.message = Some(message);
        self
    }
}

/// `/start@baal_bot agent_x` → `Command { name: "start", args: "agent_x" }`; anything not starting
/// with `/` is text.
pub fn parse_text(text: &str) -> InputKind {
    let trimmed = text.trim_start();
    let Some(rest) = trimmed.strip_prefix('/') else {
        return InputKind::Text(text.to_owned());
    };
    let (head, args) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], rest[i..].trim()),
        None => (rest, ""),
    };
    let name = head.split('@').next().unwrap_or_default();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return InputKind::Text(text.to_owned());
    }
    InputKind::Command { name: name.to_ascii_lowercase(), args: args.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_split_from_their_bot_suffix_and_args() {
        assert_eq!(
            parse_text("/start@baal_bot agent_abc"),
            InputKind::Command { name: "start".into(), args: "agent_abc".into() }
        );
        assert_eq!(parse_text("/Help"), InputKind::Command { name: "help".into(), args: "".into() });
        assert_eq!(parse_text("hello /start"), InputKind::Text("hello /start".into()));
        assert_eq!(parse_text("/"), InputKind::Text("/".into()));
        assert_eq!(parse_text("/usr/bin/env"), InputKind::Text("/usr/bin/env".into()));
    }

    #[test]
    fn constructors_build_the_kinds_front_ends_send() {
        let message = MessageRef { chat_id: 7, message_id: 9 };
        assert_eq!(
            Input::command(1, 7, "/Start", " agent_x ").kind,
            InputKind::Command { name: "start".into(), args: "agent_x".into() }
        );
        assert_eq!(Input::text(1, 7, "/not a command").kind, InputKind::Text("/not a command".into()));
        let press = Input::button(1, 7, "menu", message, "q1").with_username("ann");
        assert_eq!(press.kind, InputKind::Button { data: "menu".into(), message, press_id: "q1".into() });
        assert_eq!(press.username.as_deref(), Some("ann"));
        assert_eq!(Input::from_text(1, 7, "hi").with_message(message).message, Some(message));
    }
}

#[cfg(test)]
mod engine_tests;
