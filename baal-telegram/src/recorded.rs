//! Telegram's raw updates as a test writes them down: the tl values grammers reads off the wire,
//! with only the fields a user's message or press sets.

use grammers_client::tl;

/// A private chat with user `id`, or the user `id` as a sender.
pub(crate) fn user(id: i64) -> tl::enums::Peer {
    tl::types::PeerUser { user_id: id }.into()
}

/// A basic group (Bot API id `-id`).
pub(crate) fn group(id: i64) -> tl::enums::Peer {
    tl::types::PeerChat { chat_id: id }.into()
}

/// A channel or supergroup.
pub(crate) fn channel(id: i64) -> tl::enums::Peer {
    tl::types::PeerChannel { channel_id: id }.into()
}

/// Message `id` of `chat` saying `text`, from `from` (`None` in private chats, where the sender
/// is the chat, and in channel posts); `out` for the bot's own.
pub(crate) fn message(chat: tl::enums::Peer, from: Option<tl::enums::Peer>, id: i32, text: &str) -> tl::enums::Message {
    tl::types::Message {
        out: false,
        mentioned: false,
        media_unread: false,
        silent: false,
        post: false,
        from_scheduled: false,
        legacy: false,
        edit_hide: false,
        pinned: false,
        noforwards: false,
        invert_media: false,
        offline: false,
        video_processing_pending: false,
        paid_suggested_post_stars: false,
        paid_suggested_post_ton: false,
        id,
        from_id: from,
        from_boosts_applied: None,
        from_rank: None,
        peer_id: chat,
        saved_peer_id: None,
        fwd_from: None,
        via_bot_id: None,
        via_business_bot_id: None,
        guestchat_via_from: None,
        reply_to: None,
        date: 1_764_900_000 + id,
        message: text.to_owned(),
        media: None,
        reply_markup: None,
        entities: None,
        views: None,
        forwards: None,
        replies: None,
        edit_date: None,
        post_author: None,
        grouped_id: None,
        reactions: None,
        restriction_reason: None,
        ttl_period: None,
        quick_reply_shortcut_id: None,
        effect: None,
        factcheck: None,
        report_delivery_until_date: None,
        paid_message_stars: None,
        suggested_post: None,
        schedule_repeat_period: None,
        summary_from_language: None,
        rich_message: None,
    }
    .into()
}

/// The bot's own message.
pub(crate) fn outgoing(chat: tl::enums::Peer, id: i32, text: &str) -> tl::enums::Message {
    let tl::enums::Message::Message(mut message) = message(chat, None, id, text) else { unreachable!() };
    message.out = true;
    message.into()
}

/// `message` as a new-message update at `pts` (one of the common box).
pub(crate) fn new_message(message: tl::enums::Message, pts: i32) -> tl::enums::Update {
    tl::types::UpdateNewMessage { message, pts, pts_count: 1 }.into()
}

/// A press by `user` of a button with `data` under message `msg_id` of `chat`.
pub(crate) fn press(query_id: i64, user: i64, chat: tl::enums::Peer, msg_id: i32, data: &[u8]) -> tl::enums::Update {
    tl::types::UpdateBotCallbackQuery {
        query_id,
        user_id: user,
        peer: chat,
        msg_id,
        chat_instance: 1,
        data: Some(data.to_vec()),
        game_short_name: None,
    }
    .into()
}
