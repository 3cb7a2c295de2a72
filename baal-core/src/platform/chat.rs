//! Chat routing: one turn with an agent, its answer shown as it is written (see
//! [`super::answer`]) between tool lines, files and errors, then the agent's queued messages for
//! this chat; plus the poller that brings owners the messages their agents queue on their own.
//!
//! Queued messages are leased, delivered in order and acknowledged once delivered: delivery
//! stops at the first message that does not reach the user, and that message and the ones after
//! it come back from the agent when the lease runs out. A long message shown in part resumes at
//! its first piece not shown; a chat that refuses the bot for good (the user blocked it) has its
//! messages dropped, and counted, after [`REFUSALS_BEFORE_DROPPING`] tries.

use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::action::Action;
use super::answer::Answer;
use super::engine::{Ctx, Inner, PlatformError};
use super::handlers::views::until;
use super::handlers::{chat_controls, settings_views};
use super::messenger::{Button, ChatId, MessageRef, MessengerError, OutgoingFile, Text};
use super::metering::TurnLimits;
use super::render::{TELEGRAM_TEXT_LIMIT, escape_html, markdown_to_html, split_message};
use crate::domain::{Agent, AgentStatus, Role, usage_day};
use crate::proxy::{AgentEndpoint, AgentEvent, ChatRequest, PendingMessage, ProxyError, TurnUsage};
use crate::store::AgentFilter;
use crate::wire::BudgetLimit;

/// A turn shows its stop button once it has run this long: a quick answer needs none, and
/// showing one and taking it away again costs two edits.
const STOP_BUTTON_AFTER: std::time::Duration = std::time::Duration::from_secs(3);
/// Images up to this size go out as photos; anything else as a document.
const PHOTO_MAX_BYTES: usize = 10 * 1024 * 1024;
const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "gif", "webp"];

/// How many deliveries in a row a chat may refuse for good ([`MessengerError::Gone`]) before its
/// queued messages are dropped: a few, since Telegram's answer for a chat it does not know
/// (`PEER_ID_INVALID`) can also mean it does not know it yet. Each try is one poll or one turn.
pub(crate) const REFUSALS_BEFORE_DROPPING: u32 = 5;

/// What became of one thing the platform tried to show a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// The user has it, or has been told why it cannot be shown, or it was deliberately skipped:
    /// trying again would not change anything.
    Done,
    /// It did not reach the user; a later try may succeed.
    Failed,
    /// The chat refuses the bot for good ([`MessengerError::Gone`]).
    Refused,
}

impl Delivery {
    fn of_send<T>(sent: &Result<T, MessengerError>) -> Delivery {
        match sent {
            Ok(_) => Delivery::Done,
            Err(MessengerError::Gone(_)) => Delivery::Refused,
            Err(_) => Delivery::Failed,
        }
    }
}

impl Inner {
    /// One turn with `agent`: streams its answer to the sender's chat, then collects what the
    /// turn cost and delivers anything the agent queued for this chat.
    #[tracing::instrument(name = "turn", skip_all, fields(agent = %agent.id, turn = %crate::ops::trace_id()))]
    pub(crate) async fn chat_turn(
        self: &Arc<Self>,
        ctx: &Ctx,
        agent: &Agent,
        text: &str,
        first_time: bool,
        limits: TurnLimits,
    ) -> Result<(), PlatformError> {
        let Some(endpoint) = self.endpoint(agent) else {
            let note = format!("{} can't be reached: it has no address or secret.", agent.name);
            self.say(ctx.chat, Text::plain(note)).await;
            return Ok(());
        };
        // One turn per chat at a time keeps the agent's history in order.
        let lock = self.chat_lock(ctx.chat);
        let _turn = lock.lock().await;
        let show_tools = ctx.user.show_tools;
        let _ = self.messenger.typing(ctx.chat).await;
        let role = agent.role_of(ctx.user_id());
        let mut request = ChatRequest::new(text, ctx.chat.to_string(), role)
            .with_user_id(ctx.user_id().to_string())
            .with_budget(limits.budget);
        if let Some(tokens) = limits.turn_tokens {
            request = request.with_turn_tokens(tokens);
        }
        if let Some(tools) = limits.visitor_tools {
            request = request.with_visitor_tools(tools);
        }
        // Durable: if this process goes away mid-turn, the agent finishes and queues the answer.
        let request = request.durable();
        let stop = self.turn_started(ctx.chat);
        let events = super::observe::turn(role, ctx.received, self.proxy.chat(&endpoint, request)).await;
        let events = events.take_until(Box::pin(stop.stopped())).boxed();
        let shown = self.show_turn(ctx.chat, agent, role, &endpoint, show_tools, events).await;
        self.turn_ended(ctx.chat);
        if !shown.said_something {
            self.say(ctx.chat, Text::plain(format!("{} sent no answer.", agent.name))).await;
        }
        if first_time {
            self.say(ctx.chat, chat_controls(show_tools)).await;
        }
        // An agent that reports no usage (a Python agent) still spent tokens on an answer.
        if shown.usage.is_none() && shown.answer_bytes > 0 {
            self.estimate_turn(agent, ctx.user_id(), text, shown.answer_bytes).await;
        }
        // What the turn cost, and what the agent queued for this chat, follow the answer; the
        // user need not wait for those round trips to see the answer itself.
        let (inner, agent, chat) = (self.clone(), agent.clone(), ctx.chat);
        self.spawn_tracked(async move {
            inner.collect_usage(agent.id, &endpoint).await;
            inner.deliver_pending(chat, &agent, &endpoint).await;
        });
        Ok(())
    }

    /// Shows a turn's events as they come: the answer as it is written, with tool lines (when the
    /// user wants them), files and errors between its messages.
    async fn show_turn(
        &self,
        chat: ChatId,
        agent: &Agent,
        role: Role,
        endpoint: &AgentEndpoint,
        show_tools: bool,
        mut events: BoxStream<'static, AgentEvent>,
    ) -> ShownTurn {
        let prefix = format!("<b>{}</b>: ", escape_html(&agent.name));
        let stop = vec![vec![Button::action("⏹ Stop", Action::Stop(agent.id))]];
        let mut answer = Answer::new(&*self.messenger, chat, prefix, self.config.edit_interval)
            .with_controls(stop, STOP_BUTTON_AFTER);
        let mut shown = ShownTurn::default();
        // The messages of the answer being written, as recorded for a restart to find.
        let mut recorded: Vec<MessageRef> = Vec::new();
        // The agent's error after a `budget_spent` is said in the platform's words instead.
        let mut budget_said = false;
        while let Some(event) = answer.next_event(&mut events).await {
            // Compared without a copy: this runs for every piece of the answer.
            if !answer.open_messages().eq(recorded.iter().copied()) {
                recorded = answer.open_messages().collect();
                self.record_answering(chat, agent.id, &recorded).await;
            }
            match event {
                AgentEvent::TextDelta { content } => answer.piece(&content),
                AgentEvent::Text { content } => {
                    shown.answer_bytes += content.len();
                    answer.completion(&content);
                }
                AgentEvent::Thinking => answer.thinking(),
                AgentEvent::ToolUse { name, .. } if show_tools => {
                    answer.close().await;
                    self.say(chat, Text::html(format!("⚙️ <i>{}</i>", escape_html(&name)))).await;
                    shown.said_something = true;
                    let _ = self.messenger.typing(chat).await;
                }
                AgentEvent::ToolUse { .. } => answer.hidden_tool(),
                AgentEvent::File { path, caption } => {
                    answer.close().await;
                    self.send_agent_file(chat, agent, endpoint, &path, &caption).await;
                    shown.said_something = true;
                }
                AgentEvent::BudgetSpent { limit, .. } => {
                    if let Some(text) = self.budget_spent_text(agent, role, limit) {
                        answer.close().await;
                        self.say(chat, text).await;
                        shown.said_something = true;
                        budget_said = true;
                    }
                }
                AgentEvent::Error { .. } if budget_said => budget_said = false,
                AgentEvent::Error { content } => {
                    answer.close().await;
                    let note = format!("⚠️ {}: {}", escape_html(&agent.name), escape_html(&content));
                    self.say(chat, Text::html(note)).await;
                    shown.said_something = true;
                }
                AgentEvent::Done { usage } => {
                    shown.usage = usage;
                    break;
                }
                _ => {}
            }
        }
        answer.finish().await;
        if !recorded.is_empty() {
            self.record_answering(chat, agent.id, &[]).await;
        }
        shown.said_something |= answer.said_something();
        shown
    }

    /// The platform's words for a limit the agent met mid-turn, true for who pays; `None` for a
    /// limit this release does not know (the agent's own error text is shown then).
    fn budget_spent_text(&self, agent: &Agent, role: Role, limit: BudgetLimit) -> Option<Text> {
        let now = self.now();
        let resets_in = until(usage_day(now).1, now);
        Some(match limit {
            BudgetLimit::AgentDaily => {
                let budget = agent.policy.daily_token_budget.unwrap_or_default();
                settings_views::agent_budget_spent(agent, role, budget, &resets_in)
            }
            BudgetLimit::Turn => {
                settings_views::free_tokens_spent(agent, role, self.config.free_tier_daily_tokens, &resets_in)
            }
            BudgetLimit::Background => settings_views::background_spent(agent, &resets_in),
            _ => return None,
        })
    }

    /// Fetches a workspace file from the agent and sends it; when that fails, the user gets a note.
    async fn send_agent_file(
        &self,
        chat: ChatId,
        agent: &Agent,
        endpoint: &AgentEndpoint,
        path: &str,
        caption: &str,
    ) -> Delivery {
        match self.proxy.file(endpoint, path).await {
            Ok(file) => {
                let extension = file.file_name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
                let as_photo = IMAGE_EXTENSIONS.contains(&extension.as_str()) && file.bytes.len() <= PHOTO_MAX_BYTES;
                let caption = if caption.is_empty() {
                    format!("<b>{}</b>", escape_html(&agent.name))
                } else {
                    format!("<b>{}</b>: {}", escape_html(&agent.name), escape_html(caption))
                };
                let outgoing = OutgoingFile { file_name: file.file_name, bytes: file.bytes, as_photo, caption };
                match self.messenger.send_file(chat, outgoing).await {
                    Ok(_) => Delivery::Done,
                    Err(MessengerError::Gone(reason)) => {
                        tracing::info!(agent = %agent.id, %reason, "the chat refuses an agent's file");
                        Delivery::Refused
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "could not send an agent's file");
                        let told = self.tell(chat, Text::plain(format!("(Couldn't send the file {path}.)"))).await;
                        // A file the front-end refuses is refused on every try: once the user
                        // knows, trying again would only repeat the note.
                        match told {
                            Delivery::Done if !matches!(err, MessengerError::Rejected(_)) => Delivery::Failed,
                            told => told,
                        }
                    }
                }
            }
            Err(err) => {
                let note = format!("(Couldn't fetch the file {path} from {}: {err}.)", agent.name);
                match self.tell(chat, Text::plain(note)).await {
                    Delivery::Done if !lasting(&err) => Delivery::Failed,
                    told => told,
                }
            }
        }
    }

    /// Sends a note of the platform's own, saying whether it reached the chat.
    async fn tell(&self, chat: ChatId, text: Text) -> Delivery {
        let sent = self.messenger.send(chat, text).await;
        if let Err(err) = &sent {
            tracing::warn!(error = %err, chat, "could not send a message");
        }
        Delivery::of_send(&sent)
    }

    /// Delivers queued messages, all meant for `chat`, in order, then acknowledges the ones
    /// delivered. It stops at the first message that does not reach the user, so the user never
    /// sees a later message before an earlier one; the agent offers the rest again when their
    /// lease runs out. A message delivered before (its acknowledgement was lost) is recognised by
    /// its id against the chat's watermark and only acknowledged again; a text shown in part
    /// goes on from its first piece not shown. Once the chat has refused the bot for good
    /// [`REFUSALS_BEFORE_DROPPING`] times in a row, what it refuses is acknowledged unshown
    /// (dropped) and counted; transient failures never drop anything.
    async fn deliver(&self, chat: ChatId, agent: &Agent, endpoint: &AgentEndpoint, messages: Vec<PendingMessage>) {
        let mut delivered = Vec::new();
        let stored = self.chat_queue(agent, chat).await;
        let mut queue = stored.clone();
        let mut messages = messages.into_iter();
        while let Some(message) = messages.next() {
            if let Some(id) = message.id
                && queue.covers(id, &message.created_at)
            {
                tracing::info!(agent = %agent.id, id, "a queued message delivered before came again; not shown twice");
                delivered.push(id);
                continue;
            }
            let shown = queue.pieces_shown(&message);
            let (delivery, pieces) = self.deliver_one(chat, agent, endpoint, &message, shown).await;
            match delivery {
                Delivery::Done => {
                    queue.refusals = 0;
                    queue.partial = None;
                    // Messages without an id (agents that predate leases) were deleted when read.
                    if let Some(id) = message.id {
                        delivered.push(id);
                        queue.mark(id, &message.created_at);
                    }
                }
                Delivery::Failed | Delivery::Refused => {
                    if let Some(id) = message.id
                        && pieces > shown
                    {
                        queue.partial = Some(Partial { id, created_at: message.created_at.clone(), pieces });
                    }
                    if delivery == Delivery::Refused {
                        queue.refusals = queue.refusals.saturating_add(1);
                        if queue.refusals >= REFUSALS_BEFORE_DROPPING {
                            drop_refused(chat, agent, &mut queue, &mut delivered, message, messages);
                            break;
                        }
                    }
                    tracing::info!(agent = %agent.id, "a queued message was not delivered; the agent will offer it again");
                    break;
                }
            }
        }
        // Recorded before the acknowledgement: if that is lost, the next offer is recognised.
        if queue != stored {
            self.set_chat_queue(agent, chat, &queue).await;
        }
        if delivered.is_empty() {
            return;
        }
        // Not retried here: unacknowledged messages come back when their lease runs out, and the
        // watermark keeps them from being shown twice.
        if let Err(err) = self.proxy.ack_pending(endpoint, &chat.to_string(), &delivered).await {
            tracing::debug!(agent = %agent.id, error = %err, "acknowledging delivered messages failed");
        }
    }

    /// What was recorded of `agent`'s queue for `chat` (nothing when the store cannot say).
    async fn chat_queue(&self, agent: &Agent, chat: ChatId) -> ChatQueue {
        match self.store.kv_get(DELIVERED_NAMESPACE, &format!("{}:{chat}", agent.id)).await {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Ok(None) => ChatQueue::default(),
            Err(err) => {
                tracing::warn!(agent = %agent.id, error = %err, "cannot read what was delivered; a lost acknowledgement may repeat a message");
                ChatQueue::default()
            }
        }
    }

    async fn set_chat_queue(&self, agent: &Agent, chat: ChatId, queue: &ChatQueue) {
        let Ok(bytes) = serde_json::to_vec(queue) else { return };
        if let Err(err) = self.store.kv_put(DELIVERED_NAMESPACE, &format!("{}:{chat}", agent.id), &bytes).await {
            tracing::warn!(agent = %agent.id, error = %err, "cannot record what was delivered; a lost acknowledgement may repeat a message");
        }
    }

    /// Delivers what `agent` queued for `chat`, under the chat's turn lock.
    pub(crate) async fn deliver_pending(&self, chat: ChatId, agent: &Agent, endpoint: &AgentEndpoint) {
        let lock = self.chat_lock(chat);
        let _turn = lock.lock().await;
        match self.proxy.pending(endpoint, Some(&chat.to_string())).await {
            Ok(messages) => self.deliver(chat, agent, endpoint, messages).await,
            Err(err) => tracing::debug!(agent = %agent.id, error = %err, "no pending messages"),
        }
    }

    /// The chats `agent` has queued something for that it may write to: its owner's, and those of
    /// visitors the platform counted a message from within the usage retention (an agent is
    /// hostile: it must not reach a stranger it was never shared with). Agents that cannot say
    /// (Python ones) queue for their owner only.
    async fn chats_with_pending(&self, agent: &Agent, endpoint: &AgentEndpoint) -> Vec<ChatId> {
        let chats = match self.proxy.pending_chats(endpoint).await {
            Ok(Some(chats)) => chats,
            Ok(None) => return vec![agent.owner_id],
            Err(err) => {
                tracing::debug!(agent = %agent.id, error = %err, "pending chats unknown");
                return Vec::new();
            }
        };
        let mut wanted: Vec<ChatId> = Vec::new();
        let mut strangers: Vec<ChatId> = Vec::new();
        for chat in chats {
            match chat.parse::<ChatId>() {
                Ok(chat) if chat == agent.owner_id => wanted.push(chat),
                Ok(chat) => strangers.push(chat),
                Err(_) => {
                    tracing::warn!(agent = %agent.id, "an agent queued messages for a chat that is not a user; ignored")
                }
            }
        }
        if strangers.is_empty() {
            return wanted;
        }
        let today = self.now().date_naive();
        let from = today - chrono::Days::new(u64::from(self.config.usage_retention_days));
        match self.store.visitor_counts(agent.id, from, today).await {
            Ok(rows) => {
                for chat in strangers {
                    if rows.iter().any(|row| row.user_id == chat) {
                        wanted.push(chat);
                    } else {
                        tracing::warn!(agent = %agent.id, chat, "an agent queued messages for someone who never talked to it; not delivered");
                    }
                }
            }
            Err(err) => tracing::warn!(agent = %agent.id, error = %err, "cannot tell who talked to an agent"),
        }
        wanted
    }

    /// Shows one queued message in `chat`, a text from its piece `shown` on (the earlier ones
    /// reached the user before); returns what became of it and how many of its pieces the user
    /// has now.
    async fn deliver_one(
        &self,
        chat: ChatId,
        agent: &Agent,
        endpoint: &AgentEndpoint,
        message: &PendingMessage,
        shown: usize,
    ) -> (Delivery, usize) {
        if message.chat_id != chat.to_string() {
            // The agent answered for another chat; never show it here. (The acknowledgement
            // names this chat, so the agent does not delete it either.)
            tracing::warn!(agent = %agent.id, "pending message for another chat skipped");
            return (Delivery::Done, 0);
        }
        if message.source.ends_with("_file") {
            let parsed: serde_json::Value = serde_json::from_str(&message.content).unwrap_or_default();
            let path = parsed.get("path").and_then(|v| v.as_str()).unwrap_or_default();
            let caption = parsed.get("caption").and_then(|v| v.as_str()).unwrap_or_default();
            if path.is_empty() {
                return (Delivery::Done, 0);
            }
            return (self.send_agent_file(chat, agent, endpoint, path, caption).await, 0);
        }
        if message.content.trim().is_empty() {
            return (Delivery::Done, 0);
        }
        // Split the same way on every try (same name, same text), so piece `shown` is the one
        // that did not go out last time.
        let html = format!("<b>{}</b>: {}", escape_html(&agent.name), markdown_to_html(&message.content));
        let pieces = split_message(&html, TELEGRAM_TEXT_LIMIT);
        if shown > 0 {
            tracing::info!(agent = %agent.id, shown, of = pieces.len(), "a queued message goes on where it stopped");
        }
        for (at, piece) in pieces.into_iter().enumerate().skip(shown) {
            let sent = self.messenger.send(chat, Text::html(piece)).await;
            match sent {
                Ok(_) => {}
                // Refused content is refused on every try, and stopping here would hold back
                // every later message of the chat for good: that piece is dropped instead.
                Err(MessengerError::Rejected(reason)) => {
                    tracing::warn!(agent = %agent.id, %reason, "the front-end refused part of a queued message");
                }
                Err(ref err) => {
                    tracing::warn!(error = %err, chat, "could not send a queued message");
                    return (Delivery::of_send(&sent), at);
                }
            }
        }
        (Delivery::Done, 0)
    }

    /// Every `pending_poll_interval`, asks each running agent for what it queued for its owner and
    /// what it spent.
    pub(crate) async fn poll_pending_forever(self: Arc<Self>) {
        let mut interval = tokio::time::interval(self.config.pending_poll_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            // Deployments whose job died in another process (or before a restart whose lease
            // had not yet run out) are picked up here.
            if let Err(err) = self.clone().resume_unfinished().await {
                tracing::warn!(error = %err, "looking for unfinished deployments failed");
            }
            if let Err(err) = self.poll_pending_once().await {
                tracing::warn!(error = %err, "pending poll failed");
            }
            self.prune_usage().await;
        }
    }

    /// One round of the poller: each running agent's usage stored and what it queued delivered,
    /// chat by chat.
    pub(crate) async fn poll_pending_once(&self) -> Result<(), PlatformError> {
        let running = self.store.list_agents(&AgentFilter::all().status(AgentStatus::Running)).await?;
        futures_util::stream::iter(running)
            .for_each_concurrent(16, |agent| async move {
                let Some(endpoint) = self.endpoint(&agent) else { return };
                self.collect_usage(agent.id, &endpoint).await;
                for chat in self.chats_with_pending(&agent, &endpoint).await {
                    self.deliver_pending(chat, &agent, &endpoint).await;
                }
            })
            .await;
        Ok(())
    }
}

/// What a turn showed, and what the platform learns from it.
#[derive(Debug, Default)]
struct ShownTurn {
    /// Whether anything reached the chat.
    said_something: bool,
    /// The usage `done` carried (none from agents that do not meter).
    usage: Option<TurnUsage>,
    /// Bytes of the answer's completed text.
    answer_bytes: usize,
}

/// Where what the platform knows of each agent's queue for each chat is recorded
/// (`<agent>:<chat>` → [`ChatQueue`] as JSON).
const DELIVERED_NAMESPACE: &str = "platform.delivered";

/// What the platform keeps of an agent's queue for one chat. Its JSON started as the watermark
/// alone (`id`, `created_at`), which still reads back; every later field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct ChatQueue {
    /// The watermark: the newest queued message delivered (or dropped), its id and time. Ids
    /// grow with every message an agent queues; a new database (an agent redeployed from
    /// scratch) starts them again, which its messages' later times tell apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
    /// Deliveries in a row the chat refused for good.
    #[serde(default, skip_serializing_if = "is_zero")]
    refusals: u32,
    /// Messages dropped, in all, because the chat refused them.
    #[serde(default, skip_serializing_if = "is_zero")]
    dropped: u64,
    /// A text shown in part, recorded before the messages ahead of it are acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partial: Option<Partial>,
}

/// A queued text some of whose pieces reached the user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Partial {
    id: i64,
    created_at: String,
    /// The pieces shown, from the first.
    pieces: usize,
}

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

impl ChatQueue {
    /// Whether the message `id`, queued at `created_at`, was delivered (or dropped) already.
    fn covers(&self, id: i64, created_at: &str) -> bool {
        match (self.id, &self.created_at) {
            (Some(mark), Some(at)) => id <= mark && created_at <= at.as_str(),
            _ => false,
        }
    }

    fn mark(&mut self, id: i64, created_at: &str) {
        self.id = Some(id);
        self.created_at = Some(created_at.to_owned());
    }

    /// How many pieces of `message` the user already has.
    fn pieces_shown(&self, message: &PendingMessage) -> usize {
        match (&self.partial, message.id) {
            (Some(partial), Some(id)) if partial.id == id && partial.created_at == message.created_at => partial.pieces,
            _ => 0,
        }
    }
}

/// Drops `refused` and the `rest` of a batch for a chat that keeps refusing the bot: they are
/// acknowledged unshown (the watermark moves past them, so a lost acknowledgement drops them
/// again without counting them twice) and counted. A chat that accepts a message again starts
/// counting its refusals anew.
fn drop_refused(
    chat: ChatId,
    agent: &Agent,
    queue: &mut ChatQueue,
    delivered: &mut Vec<i64>,
    refused: PendingMessage,
    rest: impl Iterator<Item = PendingMessage>,
) {
    let mut dropped = 0u64;
    for message in std::iter::once(refused).chain(rest) {
        dropped += 1;
        if let Some(id) = message.id {
            delivered.push(id);
            queue.mark(id, &message.created_at);
        }
    }
    queue.partial = None;
    queue.dropped = queue.dropped.saturating_add(dropped);
    // Counts only: what the agent wrote is the user's business.
    tracing::warn!(
        agent = %agent.id,
        chat,
        dropped,
        dropped_in_all = queue.dropped,
        refusals = queue.refusals,
        "the chat refuses the bot for good: its queued messages were dropped"
    );
}

/// Whether fetching a file from the agent failed for good (the agent refused it: gone, outside
/// the workspace, too large), rather than for a reason that may pass (network, restart, overload).
fn lasting(err: &ProxyError) -> bool {
    match err {
        ProxyError::Status(code) => (400..500).contains(code) && !matches!(code, 408 | 429),
        ProxyError::TooLarge { .. } | ProxyError::InvalidUrl => true,
        _ => false,
    }
}
