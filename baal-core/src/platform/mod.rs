//! The bot's brain, front-end neutral: every command, button, text, limit and state transition.
//! Front-ends (Telegram, the terminal console, an embedder's own) turn what users do into an
//! [`Input`] and render what the platform asks through their [`Messenger`].

mod chat;
mod commands;
mod engine;
mod jobs;
pub mod messenger;
pub mod render;
mod state;

pub use engine::{Platform, PlatformConfig, PlatformError, secret_box_from_settings};
pub use messenger::{Button, ChatId, MessageRef, Messenger, MessengerError, OutgoingFile, Text};

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
        Input { user_id, username: None, chat_id, message: None, kind: parse_text(text) }
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
}

#[cfg(test)]
mod engine_tests;
