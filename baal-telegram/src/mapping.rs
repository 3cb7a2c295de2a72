//! Pure translation between Telegram and the platform, in both directions, so it can be tested
//! without a connection: what a user sent becomes a [`platform::Input`]; a platform [`Text`]
//! becomes the text, formatting entities and keyboard grammers sends.

use std::time::Duration;

use baal_core::platform::render::{TELEGRAM_TEXT_LIMIT, utf16_len};
use baal_core::platform::{self, Button, ChatId, Input, MessageRef, MessengerError, Text};
use grammers_client::InvocationError;
use grammers_client::message::{self as tg, InputMessage, ReplyMarkup};
use grammers_client::tl;

/// Telegram's limit on a button's callback data, in bytes.
pub const CALLBACK_DATA_LIMIT: usize = 64;
/// Telegram's limit on a media caption, in UTF-16 code units.
pub const CAPTION_LIMIT: usize = 1024;

/// A text message as the update loop read it from Telegram.
#[derive(Debug, Clone)]
pub struct IncomingMessage {
    /// Sender.
    pub user_id: i64,
    /// Sender's @username, if any.
    pub username: Option<String>,
    /// The chat (Bot API form: users positive, groups negative).
    pub chat_id: ChatId,
    /// The message id in that chat.
    pub message_id: i32,
    /// The text.
    pub text: String,
}

/// A button press as the update loop read it from Telegram.
#[derive(Debug, Clone)]
pub struct IncomingPress {
    /// Who pressed.
    pub user_id: i64,
    /// Their @username, if any.
    pub username: Option<String>,
    /// The chat of the message with the button.
    pub chat_id: ChatId,
    /// The message with the button.
    pub message_id: i32,
    /// Telegram's query id, needed to answer the press.
    pub query_id: i64,
    /// The button's data.
    pub data: Vec<u8>,
}

/// The platform input for a text message, or `None` when there is nothing to handle: empty text,
/// or a command addressed to another bot (`/help@other_bot` in a group).
pub fn message_input(message: IncomingMessage, bot_username: Option<&str>) -> Option<Input> {
    if message.text.trim().is_empty() || addressed_elsewhere(&message.text, bot_username) {
        return None;
    }
    let mut input = Input::from_text(message.user_id, message.chat_id, &message.text);
    input.username = message.username;
    input.message = Some(MessageRef { chat_id: message.chat_id, message_id: i64::from(message.message_id) });
    Some(input)
}

/// The platform input for a button press, or `None` when its data is not text (Baal's buttons
/// always carry text, so such a press comes from something else and is only acknowledged).
pub fn press_input(press: IncomingPress) -> Option<Input> {
    let data = String::from_utf8(press.data).ok()?;
    let message = MessageRef { chat_id: press.chat_id, message_id: i64::from(press.message_id) };
    let mut input = Input::button(press.user_id, press.chat_id, data, message, press.query_id.to_string());
    input.username = press.username;
    Some(input)
}

/// What the update loop takes from one of Telegram's updates.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// A text message from a user.
    Message(IncomingMessage),
    /// A press of one of the bot's buttons.
    Press(IncomingPress),
    /// A press the bot has nothing for (an inline message's button): only acknowledged, by its
    /// query id, so its button stops spinning.
    Unhandled(i64),
}

/// What `update` brings the bot, `None` when nothing: the bot's own messages, messages with no
/// user behind them (channel posts, anonymous admins), and every other kind of update.
/// `username` gives a user's @username from the peers that came with the update.
pub fn incoming(update: &tl::enums::Update, username: impl Fn(i64) -> Option<String>) -> Option<Incoming> {
    use grammers_client::session::types::{PeerId, PeerKind};
    match update {
        tl::enums::Update::NewMessage(tl::types::UpdateNewMessage { message, .. })
        | tl::enums::Update::NewChannelMessage(tl::types::UpdateNewChannelMessage { message, .. }) => {
            let tl::enums::Message::Message(message) = message else { return None };
            if message.out {
                return None;
            }
            let chat = PeerId::from(message.peer_id.clone());
            // Private chats carry no sender since layer 119: the sender is the chat.
            let sender = message.from_id.clone().map(PeerId::from).unwrap_or(chat);
            if sender.kind() != PeerKind::User {
                return None;
            }
            let user_id = sender.bot_api_dialog_id()?;
            Some(Incoming::Message(IncomingMessage {
                user_id,
                username: username(user_id),
                chat_id: chat.bot_api_dialog_id()?,
                message_id: message.id,
                text: message.message.clone(),
            }))
        }
        tl::enums::Update::BotCallbackQuery(press) => Some(Incoming::Press(IncomingPress {
            user_id: press.user_id,
            username: username(press.user_id),
            chat_id: PeerId::from(press.peer.clone()).bot_api_dialog_id()?,
            message_id: press.msg_id,
            query_id: press.query_id,
            data: press.data.clone().unwrap_or_default(),
        })),
        tl::enums::Update::InlineBotCallbackQuery(press) => Some(Incoming::Unhandled(press.query_id)),
        _ => None,
    }
}

fn addressed_elsewhere(text: &str, bot_username: Option<&str>) -> bool {
    let (Some(me), platform::InputKind::Command { .. }) = (bot_username, platform::parse_text(text)) else {
        return false;
    };
    let head = text.trim_start().split(char::is_whitespace).next().unwrap_or_default();
    match head.split_once('@') {
        Some((_, target)) => !target.eq_ignore_ascii_case(me.trim_start_matches('@')),
        None => false,
    }
}

/// A message ready for grammers: text with its formatting entities, and an optional keyboard.
pub struct Outgoing {
    /// The visible text.
    pub text: String,
    /// Bold, code, links… as offsets into `text`.
    pub entities: Vec<tl::enums::MessageEntity>,
    /// Inline buttons.
    pub markup: Option<ReplyMarkup>,
}

impl Outgoing {
    /// The grammers message.
    pub fn into_input_message(self) -> InputMessage {
        let message = InputMessage::new().text(self.text).fmt_entities(self.entities).link_preview(false);
        match self.markup {
            Some(markup) => message.reply_markup(markup),
            None => message,
        }
    }
}

/// Translates a platform [`Text`]. Refuses, with a message that says what to change, what
/// Telegram would refuse: an empty text, a text over 4096 UTF-16 code units once its markup is
/// parsed, or a button whose data is over 64 bytes.
pub fn outgoing(text: &Text) -> Result<Outgoing, MessengerError> {
    let (body, entities) = parse_body(&text.body, text.html);
    if body.trim().is_empty() {
        return Err(MessengerError::Rejected("Telegram cannot send an empty message".into()));
    }
    let length = utf16_len(&body);
    if length > TELEGRAM_TEXT_LIMIT {
        return Err(MessengerError::Rejected(format!(
            "the text is {length} UTF-16 code units and Telegram takes at most {TELEGRAM_TEXT_LIMIT}: \
             split it with platform::render::split_message"
        )));
    }
    let markup = keyboard(&text.buttons)?;
    Ok(Outgoing { text: body, entities, markup })
}

/// Translates a file caption (HTML); an empty caption stays empty.
pub fn caption(html: &str) -> Result<(String, Vec<tl::enums::MessageEntity>), MessengerError> {
    let (text, entities) = parse_body(html, true);
    let length = utf16_len(&text);
    if length > CAPTION_LIMIT {
        return Err(MessengerError::Rejected(format!(
            "the caption is {length} UTF-16 code units and Telegram takes at most {CAPTION_LIMIT}"
        )));
    }
    Ok((text, entities))
}

fn parse_body(body: &str, html: bool) -> (String, Vec<tl::enums::MessageEntity>) {
    if html { grammers_client::parsers::parse_html_message(body) } else { (body.to_owned(), Vec::new()) }
}

/// The inline keyboard for `rows`, `None` when there are no buttons.
pub fn keyboard(rows: &[Vec<Button>]) -> Result<Option<ReplyMarkup>, MessengerError> {
    let rows: Vec<Vec<tg::Button>> = rows
        .iter()
        .filter(|row| !row.is_empty())
        .map(|row| row.iter().map(button).collect::<Result<Vec<_>, _>>())
        .collect::<Result<_, _>>()?;
    Ok((!rows.is_empty()).then(|| ReplyMarkup::from_buttons(&rows)))
}

fn button(button: &Button) -> Result<tg::Button, MessengerError> {
    if button.label().trim().is_empty() {
        return Err(MessengerError::Rejected("a button needs a label".into()));
    }
    match button {
        Button::Callback { label, data } => {
            if data.len() > CALLBACK_DATA_LIMIT {
                return Err(MessengerError::Rejected(format!(
                    "button {label:?} carries {} bytes of data and Telegram takes at most {CALLBACK_DATA_LIMIT}",
                    data.len()
                )));
            }
            Ok(tg::Button::data(label.clone(), data.as_bytes().to_vec()))
        }
        Button::Url { label, url } => Ok(tg::Button::url(label.clone(), url.clone())),
        other => Err(MessengerError::Rejected(format!("this front-end cannot show the button {:?}", other.label()))),
    }
}

/// How long Telegram asks us to wait, when `error` is a flood wait (RPC 420).
pub fn flood_wait(error: &InvocationError) -> Option<Duration> {
    match error {
        InvocationError::Rpc(rpc) if rpc.code == 420 => Some(Duration::from_secs(u64::from(rpc.value.unwrap_or(1)))),
        _ => None,
    }
}

/// The platform's view of a Telegram error.
pub fn messenger_error(error: &InvocationError) -> MessengerError {
    const NOT_FOUND: &[&str] =
        &["MESSAGE_ID_INVALID", "MESSAGE_DELETE_FORBIDDEN", "MESSAGE_EDIT_TIME_EXPIRED", "QUERY_ID_INVALID"];
    // The chat itself refuses the bot for good: the platform stops retrying its queue.
    const CHAT_GONE: &[&str] =
        &["PEER_ID_INVALID", "USER_IS_BLOCKED", "USER_DEACTIVATED*", "CHAT_WRITE_FORBIDDEN", "INPUT_USER_DEACTIVATED"];
    const REFUSED: &[&str] = &[
        "ENTITY_*",
        "ENTITIES_TOO_LONG",
        "MESSAGE_TOO_LONG",
        "MESSAGE_EMPTY",
        "BUTTON_*",
        "MEDIA_CAPTION_TOO_LONG",
        "REPLY_MARKUP_*",
        "PHOTO_*",
        "FILE_PARTS_INVALID",
    ];
    if NOT_FOUND.iter().any(|name| error.is(name)) {
        MessengerError::NotFound
    } else if CHAT_GONE.iter().any(|name| error.is(name)) {
        MessengerError::Gone(error.to_string())
    } else if REFUSED.iter().any(|name| error.is(name)) {
        MessengerError::Rejected(error.to_string())
    } else {
        MessengerError::Failed(error.to_string())
    }
}

/// What to tell the operator when logging in fails.
pub fn login_error(error: &InvocationError) -> String {
    if error.is("ACCESS_TOKEN_INVALID") || error.is("ACCESS_TOKEN_EXPIRED") || error.is("BOT_*") {
        format!(
            "Telegram refused TELEGRAM_BOT_TOKEN ({error}): copy the token again from @BotFather (/mybots → API Token)"
        )
    } else if error.is("API_ID_INVALID") || error.is("API_ID_PUBLISHED_FLOOD") {
        format!(
            "Telegram refused TELEGRAM_API_ID / TELEGRAM_API_HASH ({error}): copy both from https://my.telegram.org → API development tools"
        )
    } else if let Some(wait) = flood_wait(error) {
        format!("Telegram asks to wait {} s before logging in again; start the bot after that", wait.as_secs())
    } else {
        format!("could not log in to Telegram: {error}. Check the network and the TELEGRAM_* settings")
    }
}

/// Telegram's id for a platform chat id (Bot API form), if it is a valid one.
pub fn peer_id(chat: ChatId) -> Option<grammers_client::session::types::PeerId> {
    grammers_client::session::types::PeerId::from_bot_api_dialog_id(chat)
}

/// A platform message id as Telegram's.
pub fn telegram_message_id(message: MessageRef) -> Result<i32, MessengerError> {
    i32::try_from(message.message_id).map_err(|_| MessengerError::NotFound)
}

/// The `bots.setBotCommands` request for the platform's menu ([`baal_core::platform::Command::menu`]):
/// the front-end holds no list of its own.
pub fn command_menu_request() -> tl::functions::bots::SetBotCommands {
    tl::functions::bots::SetBotCommands {
        scope: tl::enums::BotCommandScope::Default,
        lang_code: String::new(),
        commands: baal_core::platform::Command::menu()
            .map(|(command, description)| {
                tl::types::BotCommand {
                    ephemeral: false,
                    command: command.to_owned(),
                    description: description.to_owned(),
                }
                .into()
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baal_core::platform::InputKind;
    use grammers_client::sender::RpcError;
    use tl::enums::MessageEntity as E;

    fn message(text: &str) -> IncomingMessage {
        IncomingMessage { user_id: 7, username: Some("ann".into()), chat_id: 7, message_id: 31, text: text.into() }
    }

    #[test]
    fn commands_with_a_bot_suffix_and_start_payloads_become_commands() {
        let input = message_input(message("/start@baal_bot agent_AbC-123"), Some("baal_bot")).unwrap();
        assert_eq!(input.kind, InputKind::Command { name: "start".into(), args: "agent_AbC-123".into() });
        assert_eq!(input.user_id, 7);
        assert_eq!(input.username.as_deref(), Some("ann"));
        assert_eq!(input.message, Some(MessageRef { chat_id: 7, message_id: 31 }));
        let input = message_input(message("/start agent_x"), Some("baal_bot")).unwrap();
        assert_eq!(input.kind, InputKind::Command { name: "start".into(), args: "agent_x".into() });
        let input = message_input(message("/HELP@Baal_Bot"), Some("@baal_bot")).unwrap();
        assert_eq!(input.kind, InputKind::Command { name: "help".into(), args: String::new() });
    }

    #[test]
    fn commands_for_other_bots_and_empty_texts_are_ignored() {
        assert!(message_input(message("/help@other_bot"), Some("baal_bot")).is_none());
        assert!(message_input(message("   "), Some("baal_bot")).is_none());
        let text = message_input(message("hello @other_bot"), Some("baal_bot")).unwrap();
        assert_eq!(text.kind, InputKind::Text("hello @other_bot".into()));
    }

    #[test]
    fn presses_carry_their_query_id_and_message() {
        let press = IncomingPress {
            user_id: 7,
            username: None,
            chat_id: 7,
            message_id: 99,
            query_id: -5_123_456_789,
            data: b"del:abc".to_vec(),
        };
        let input = press_input(press.clone()).unwrap();
        assert_eq!(
            input.kind,
            InputKind::Button {
                data: "del:abc".into(),
                message: MessageRef { chat_id: 7, message_id: 99 },
                press_id: "-5123456789".into()
            }
        );
        assert!(press_input(IncomingPress { data: vec![0xff, 0xfe], ..press }).is_none());
    }

    #[test]
    fn raw_updates_become_messages_and_presses_from_users_only() {
        use crate::recorded::{self, channel, group, user};
        let names = |id: i64| (id == 7).then(|| "ann".to_owned());
        let private = recorded::new_message(recorded::message(user(7), None, 31, "/help"), 1);
        let Some(Incoming::Message(m)) = incoming(&private, names) else { panic!("a private message") };
        assert_eq!((m.user_id, m.chat_id, m.message_id, m.text.as_str()), (7, 7, 31, "/help"));
        assert_eq!(m.username.as_deref(), Some("ann"));

        let in_group = recorded::new_message(recorded::message(group(123), Some(user(8)), 4, "hi"), 2);
        let Some(Incoming::Message(m)) = incoming(&in_group, names) else { panic!("a group message") };
        assert_eq!((m.user_id, m.chat_id, m.username), (8, -123, None));

        let own = recorded::new_message(recorded::outgoing(user(7), 32, "answer"), 3);
        assert!(incoming(&own, names).is_none(), "the bot's own message");
        let post = recorded::new_message(recorded::message(channel(55), None, 9, "news"), 4);
        assert!(incoming(&post, names).is_none(), "a channel post has no user behind it");
        let as_channel = recorded::new_message(recorded::message(channel(55), Some(channel(55)), 10, "hi"), 5);
        assert!(incoming(&as_channel, names).is_none(), "an anonymous admin is no user");

        let press = recorded::press(-9, 7, user(7), 40, b"nav_main");
        let Some(Incoming::Press(p)) = incoming(&press, names) else { panic!("a press") };
        assert_eq!((p.user_id, p.chat_id, p.message_id, p.query_id), (7, 7, 40, -9));
        assert_eq!((p.data.as_slice(), p.username.as_deref()), (&b"nav_main"[..], Some("ann")));
        let inline = tl::types::UpdateInlineBotCallbackQuery {
            query_id: 77,
            user_id: 7,
            msg_id: tl::types::InputBotInlineMessageId { dc_id: 1, id: 2, access_hash: 3 }.into(),
            chat_instance: 1,
            data: Some(b"x".to_vec()),
            game_short_name: None,
        };
        assert!(matches!(incoming(&inline.into(), names), Some(Incoming::Unhandled(77))));
        let other: tl::enums::Update = tl::types::UpdateUserName {
            user_id: 7,
            first_name: "A".into(),
            last_name: String::new(),
            usernames: Vec::new(),
        }
        .into();
        assert!(incoming(&other, names).is_none());
    }

    #[test]
    fn html_becomes_entities_with_utf16_offsets() {
        let text = Text::html(
            "😀 <b>bold</b> <i>it</i> <code>x&lt;y</code> <a href=\"https://e.org/?a=1&amp;b=2\">link</a>\n\
             <pre><code class=\"language-rust\">fn main() {}</code></pre><blockquote>q</blockquote>",
        );
        let out = outgoing(&text).unwrap();
        assert_eq!(out.text, "😀 bold it x<y link\nfn main() {}q");
        let bold = out.entities.iter().find_map(|e| match e {
            E::Bold(b) => Some((b.offset, b.length)),
            _ => None,
        });
        // The emoji counts as two UTF-16 units, so "bold" starts at 3.
        assert_eq!(bold, Some((3, 4)));
        assert!(out.entities.iter().any(|e| matches!(e, E::Italic(_))));
        assert!(out.entities.iter().any(|e| matches!(e, E::Code(c) if c.length == 3)));
        assert!(out.entities.iter().any(|e| matches!(e, E::TextUrl(u) if u.url == "https://e.org/?a=1&b=2")));
        assert!(out.entities.iter().any(|e| matches!(e, E::Pre(p) if p.language == "rust" && p.length == 12)));
        assert!(out.entities.iter().any(|e| matches!(e, E::Blockquote(_))));
        assert!(out.markup.is_none());
    }

    #[test]
    fn rendered_agent_markdown_parses_into_entities() {
        let html = baal_core::platform::render::markdown_to_html("# Title\n\n**b** and `c`\n\n```py\nprint(1)\n```");
        let out = outgoing(&Text::html(html)).unwrap();
        assert_eq!(out.text, "Title\n\nb and c\n\nprint(1)");
        assert!(out.entities.iter().any(|e| matches!(e, E::Pre(p) if p.language == "py")));
    }

    fn span(entity: &E) -> Option<(i32, i32)> {
        match entity {
            E::Bold(e) => Some((e.offset, e.length)),
            E::Italic(e) => Some((e.offset, e.length)),
            E::Code(e) => Some((e.offset, e.length)),
            E::Pre(e) => Some((e.offset, e.length)),
            E::TextUrl(e) => Some((e.offset, e.length)),
            E::Blockquote(e) => Some((e.offset, e.length)),
            _ => None,
        }
    }

    #[test]
    fn split_pieces_of_a_long_answer_each_make_a_valid_message() {
        let code: String = (0..600).map(|i| format!("let value_{i} = \"日本語 😀 {i}\";\n")).collect();
        let markdown = format!("# Report\n\n**Summary** with `code`.\n\n```rust\n{code}```\n\n> closing words 🎉");
        let html = baal_core::platform::render::markdown_to_html(&markdown);
        let pieces = baal_core::platform::render::split_message(&html, TELEGRAM_TEXT_LIMIT);
        assert!(pieces.len() > 3, "{} pieces", pieces.len());
        for piece in &pieces {
            let out = outgoing(&Text::html(piece.clone())).unwrap();
            let visible = i32::try_from(utf16_len(out.text.trim_end())).unwrap();
            for entity in &out.entities {
                let (offset, length) = span(entity).expect("only the tags Baal writes");
                assert!(length > 0 && offset + length <= visible, "{entity:?} outside {visible} units");
            }
        }
    }

    #[test]
    fn plain_text_is_sent_as_is() {
        let out = outgoing(&Text::plain("<b>not bold</b>")).unwrap();
        assert_eq!(out.text, "<b>not bold</b>");
        assert!(out.entities.is_empty());
    }

    #[test]
    fn text_at_the_limit_passes_and_beyond_is_refused() {
        let at_limit = "😀".repeat(TELEGRAM_TEXT_LIMIT / 2);
        assert!(outgoing(&Text::plain(at_limit.clone())).is_ok());
        // Markup does not count: only the visible text does.
        assert!(outgoing(&Text::html(format!("<b>{at_limit}</b>"))).is_ok());
        let err = outgoing(&Text::plain(format!("{at_limit}x"))).err().unwrap();
        assert!(matches!(&err, MessengerError::Rejected(m) if m.contains("split_message")), "{err}");
        assert!(outgoing(&Text::html("<b> </b>")).is_err());
    }

    #[test]
    fn buttons_at_the_64_byte_limit_pass_and_beyond_are_refused() {
        let data = "é".repeat(32); // 64 bytes in UTF-8
        let text =
            Text::html("pick").row(vec![Button::callback("Yes", data.clone()), Button::url("Docs", "https://e.org")]);
        let out = outgoing(&text).unwrap();
        let tl::enums::ReplyMarkup::ReplyInlineMarkup(markup) = out.markup.unwrap().raw else {
            panic!("inline keyboard")
        };
        let tl::enums::KeyboardInlineButtonRow::Row(row) = &markup.rows[0];
        assert_eq!(row.buttons.len(), 2);
        let tl::enums::KeyboardInlineButton::Button(first) = &row.buttons[0];
        assert_eq!(first.text, "Yes");
        assert!(matches!(&first.r#type, tl::enums::InlineButtonType::Callback(c) if c.data == data.as_bytes()));

        let too_long = Text::html("pick").row(vec![Button::callback("No", format!("{data}x"))]);
        let err = outgoing(&too_long).err().unwrap();
        assert!(matches!(&err, MessengerError::Rejected(m) if m.contains("65 bytes")), "{err}");
    }

    #[test]
    fn captions_are_limited() {
        assert_eq!(caption("").unwrap().0, "");
        assert!(caption(&"a".repeat(CAPTION_LIMIT)).is_ok());
        assert!(caption(&"a".repeat(CAPTION_LIMIT + 1)).is_err());
    }

    fn rpc(code: i32, name: &str, value: Option<u32>) -> InvocationError {
        InvocationError::Rpc(RpcError { code, name: name.into(), value, caused_by: None })
    }

    #[test]
    fn errors_are_classified() {
        assert_eq!(flood_wait(&rpc(420, "FLOOD_WAIT", Some(17))), Some(Duration::from_secs(17)));
        assert_eq!(flood_wait(&rpc(400, "MESSAGE_NOT_MODIFIED", None)), None);
        assert_eq!(messenger_error(&rpc(400, "MESSAGE_ID_INVALID", None)), MessengerError::NotFound);
        for gone in ["USER_IS_BLOCKED", "PEER_ID_INVALID", "CHAT_WRITE_FORBIDDEN", "INPUT_USER_DEACTIVATED"] {
            assert!(matches!(messenger_error(&rpc(403, gone, None)), MessengerError::Gone(_)), "{gone}");
        }
        assert!(matches!(messenger_error(&rpc(420, "FLOOD_WAIT", Some(3))), MessengerError::Failed(_)));
        assert!(matches!(messenger_error(&rpc(400, "ENTITY_BOUNDS_INVALID", None)), MessengerError::Rejected(_)));
        assert!(matches!(messenger_error(&rpc(500, "INTERNAL", None)), MessengerError::Failed(_)));
        assert!(login_error(&rpc(401, "ACCESS_TOKEN_INVALID", None)).contains("@BotFather"));
        assert!(login_error(&rpc(400, "API_ID_INVALID", None)).contains("my.telegram.org"));
    }

    #[test]
    fn the_command_menu_is_valid_for_telegram() {
        let request = command_menu_request();
        assert_eq!(request.commands.len(), baal_core::platform::Command::menu().count());
        for (command, description) in baal_core::platform::Command::menu() {
            assert!(command.len() <= 32 && command.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            assert!((3..=256).contains(&description.len()));
            assert!(matches!(platform::parse_text(&format!("/{command}")), InputKind::Command { .. }));
        }
    }
}
