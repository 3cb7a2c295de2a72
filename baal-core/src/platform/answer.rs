//! An agent's answer shown while it is written.
//!
//! The agent sends each completion's text twice: as pieces while the model writes it
//! ([`AgentEvent::TextDelta`]), then whole once it is done ([`AgentEvent::Text`], reasoning
//! removed). Old agents send only the whole text. An [`Answer`] keeps the text of the completions
//! that ended plus the pieces of the one being written, and shows them in one message (continued in
//! more past Telegram's limit), edited no more often than the platform's `edit_interval`. A change
//! that comes while an edit is not yet due is shown when it falls due, even if the agent then falls
//! silent: [`Answer::next_event`] waits for the next event or for that moment, whichever is first.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::time::Instant;

use super::messenger::{Button, ChatId, MessageRef, Messenger, Text};
use super::render::{TELEGRAM_TEXT_LIMIT, markdown_to_html, split_message};
use crate::proxy::AgentEvent;

/// Shown where the answer will be while the model reasons; the reasoning itself never is.
const THINKING: &str = "<i>thinking…</i>";

/// The messages of one turn's answer and the text they should show.
pub(super) struct Answer<'a> {
    messenger: &'a dyn Messenger,
    chat: ChatId,
    interval: Duration,
    /// Opens the turn's first message (`<b>name</b>: `); the messages after a tool line, file or
    /// error continue without it.
    prefix: String,
    /// This message's markdown: the completions that ended, then the pieces of the current one.
    markdown: String,
    /// Where the current completion's text starts in `markdown`, while one is being written.
    current: Option<usize>,
    /// A hidden tool ran since the last text, so the next completion starts a new paragraph.
    gap: bool,
    /// The model is reasoning and has written nothing of its completion yet.
    thinking: bool,
    /// The messages showing this answer, each with the HTML it shows and whether it carries the
    /// controls.
    shown: Vec<(MessageRef, String, bool)>,
    /// Buttons under the answer's last message while the turn runs (a stop button), from
    /// `controls_from` on; a message that ends (the turn's end, or a tool line, file or error
    /// after it) loses them.
    controls: Vec<Vec<Button>>,
    controls_from: Instant,
    /// When a message of this answer was last sent or edited, for spacing edits.
    last_shown: Option<Instant>,
    /// What the messages show is older than the text.
    stale: bool,
    /// Some of the agent's text reached the chat during this turn.
    said_something: bool,
}

impl<'a> Answer<'a> {
    pub(super) fn new(messenger: &'a dyn Messenger, chat: ChatId, prefix: String, interval: Duration) -> Self {
        Answer {
            messenger,
            chat,
            interval,
            prefix,
            markdown: String::new(),
            current: None,
            gap: false,
            thinking: false,
            shown: Vec::new(),
            last_shown: None,
            stale: false,
            said_something: false,
            controls: Vec::new(),
            controls_from: Instant::now(),
        }
    }

    /// Shows `controls` under the answer's last message once the turn has run for `after`, while
    /// it runs. A turn over sooner never shows them, and costs no edit to take them away.
    pub(super) fn with_controls(mut self, controls: Vec<Vec<Button>>, after: Duration) -> Self {
        self.controls = controls;
        self.controls_from = Instant::now() + after;
        self
    }

    /// The messages showing the part of the answer still being written (none once a message
    /// ended: those are whole).
    pub(super) fn open_messages(&self) -> impl Iterator<Item = MessageRef> + '_ {
        self.shown.iter().map(|(message, _, _)| *message)
    }

    /// Whether any of the agent's text was shown (a thinking notice does not count).
    pub(super) fn said_something(&self) -> bool {
        self.said_something
    }

    /// The next piece of the completion being written.
    pub(super) fn piece(&mut self, text: &str) {
        self.open_completion();
        self.markdown.push_str(text);
        self.written();
    }

    /// A completion's whole text, which replaces whatever its pieces showed and ends it.
    pub(super) fn completion(&mut self, text: &str) {
        let start = self.open_completion();
        self.markdown.truncate(start);
        self.markdown.push_str(text);
        self.current = None;
        self.written();
    }

    /// The model is reasoning: a notice holds the answer's place until its first words.
    pub(super) fn thinking(&mut self) {
        let written = self.current.is_some_and(|start| self.markdown.len() > start);
        if !written && !self.thinking {
            self.thinking = true;
            self.stale = true;
        }
    }

    /// A tool the user does not see ran: the current completion ended, and what comes next is a
    /// new paragraph of the same message. A thinking notice stays: the agent is still at work, and
    /// removing it only to show it again for the next completion would make the chat flicker.
    pub(super) fn hidden_tool(&mut self) {
        self.current = None;
        self.gap = true;
    }

    /// Shows everything now, spacing or not, and ends the message: a tool line, file or error
    /// comes next, and the answer continues below it in a new message.
    pub(super) async fn close(&mut self) {
        self.finish().await;
        self.markdown.clear();
        self.shown.clear();
        self.prefix.clear();
    }

    /// Shows everything now, spacing or not: the turn is over (or something else is about to be
    /// said in the chat), so the text must land and no notice may stay behind.
    pub(super) async fn finish(&mut self) {
        self.end_completion();
        self.render(false).await;
    }

    /// The next event of the turn. Text not yet shown is shown as soon as its edit is due: now if
    /// it is, otherwise when the spacing has passed, even if no event comes meanwhile.
    pub(super) async fn next_event<S>(&mut self, events: &mut S) -> Option<AgentEvent>
    where
        S: Stream<Item = AgentEvent> + Unpin,
    {
        loop {
            match self.due_at() {
                None => return events.next().await,
                Some(due) if due <= Instant::now() => self.show(false).await,
                Some(due) => tokio::select! {
                    event = events.next() => return event,
                    () = tokio::time::sleep_until(due) => self.show(false).await,
                },
            }
        }
    }

    /// The index in `markdown` where the current completion's text starts, opening one (after a
    /// paragraph break when a hidden tool ran) if none is being written.
    fn open_completion(&mut self) -> usize {
        if let Some(start) = self.current {
            return start;
        }
        if self.gap && !self.markdown.is_empty() {
            self.markdown.push_str("\n\n");
        }
        self.gap = false;
        let start = self.markdown.len();
        self.current = Some(start);
        start
    }

    fn end_completion(&mut self) {
        self.current = None;
        if self.thinking {
            self.thinking = false;
            self.stale = true;
        }
    }

    fn written(&mut self) {
        self.thinking = false;
        self.stale = true;
    }

    /// When the text not yet shown may be: right after the last edit's spacing. `None` when
    /// everything is shown, so an idle turn sets no timer.
    fn due_at(&self) -> Option<Instant> {
        let spaced = || self.last_shown.map_or_else(Instant::now, |at| at + self.interval);
        let text = self.stale.then(spaced);
        let controls = self.controls_wanted().then(|| spaced().max(self.controls_from));
        match (text, controls) {
            (Some(text), Some(controls)) => Some(text.min(controls)),
            (text, controls) => text.or(controls),
        }
    }

    /// Whether the last message still lacks the controls it is to carry.
    fn controls_wanted(&self) -> bool {
        !self.controls.is_empty() && self.shown.last().is_some_and(|(_, _, with)| !with)
    }

    fn due_now(&self) -> bool {
        self.due_at().is_some_and(|due| due <= Instant::now())
    }

    /// What the messages should show, whole (before splitting); `None` when there is nothing.
    fn view(&self) -> Option<String> {
        let text = !self.markdown.trim().is_empty();
        if !text && !self.thinking {
            return None;
        }
        let mut html = self.prefix.clone();
        if text {
            html.push_str(&markdown_to_html(&self.markdown));
        }
        if self.thinking {
            if text {
                html.push_str("\n\n");
            }
            html.push_str(THINKING);
        }
        Some(html)
    }

    /// Brings the messages in line with the text when an edit is due (always when `force`): a
    /// message whose piece did not change is left alone, a new piece is a new message, and
    /// messages the text no longer reaches (a notice alone, pieces the whole text dropped) go.
    async fn show(&mut self, force: bool) {
        if !force && !self.due_now() {
            return;
        }
        self.render(true).await;
    }

    /// Brings the messages in line with the text now; the last one carries the controls when
    /// `controls` (the turn goes on).
    async fn render(&mut self, controls: bool) {
        // Cleared even when the messenger fails: the next change or the final `finish` tries again,
        // rather than a timer retrying a message that may be gone.
        self.stale = false;
        let pieces = self.view().map(|html| split_message(&html, TELEGRAM_TEXT_LIMIT)).unwrap_or_default();
        let mut touched = false;
        for (i, piece) in pieces.iter().enumerate() {
            let buttons =
                controls && i + 1 == pieces.len() && !self.controls.is_empty() && Instant::now() >= self.controls_from;
            let text = || {
                let mut text = Text::html(piece.clone());
                if buttons {
                    text.buttons = self.controls.clone();
                }
                text
            };
            match self.shown.get(i) {
                Some((_, shown, with)) if *shown == *piece && *with == buttons => {}
                Some((message, _, _)) => {
                    touched = true;
                    let message = *message;
                    match self.messenger.edit(message, text()).await {
                        Ok(()) => self.shown[i] = (message, piece.clone(), buttons),
                        Err(err) => tracing::debug!(error = %err, "could not edit an answer"),
                    }
                }
                None => {
                    touched = true;
                    match self.messenger.send(self.chat, text()).await {
                        Ok(message) => self.shown.push((message, piece.clone(), buttons)),
                        Err(err) => {
                            tracing::warn!(error = %err, chat = self.chat, "could not send an answer");
                            break;
                        }
                    }
                }
            }
        }
        for (message, _, _) in self.shown.drain(pieces.len().min(self.shown.len())..) {
            if let Err(err) = self.messenger.delete(message).await {
                tracing::debug!(error = %err, "could not delete a message the answer no longer needs");
            }
        }
        if touched {
            self.last_shown = Some(Instant::now());
        }
        if !self.markdown.trim().is_empty() {
            self.said_something = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::stream;
    use tokio::sync::mpsc;
    use tokio::time::Instant;

    use super::*;
    use crate::testing::messenger::{Call, MemoryMessenger};

    const CHAT: ChatId = 5;
    const PREFIX: &str = "<b>Bot</b>: ";

    fn new_answer(messenger: &MemoryMessenger, interval: Duration) -> Answer<'_> {
        Answer::new(messenger, CHAT, PREFIX.to_owned(), interval)
    }

    /// What `chat_turn` does with the events an answer handles itself (tools hidden).
    async fn apply(answer: &mut Answer<'_>, events: &mut (impl Stream<Item = AgentEvent> + Unpin)) {
        while let Some(event) = answer.next_event(events).await {
            match event {
                AgentEvent::TextDelta { content } => answer.piece(&content),
                AgentEvent::Text { content } => answer.completion(&content),
                AgentEvent::Thinking => answer.thinking(),
                AgentEvent::ToolUse { .. } => answer.hidden_tool(),
                AgentEvent::Done { .. } => break,
                _ => {}
            }
        }
        answer.finish().await;
    }

    async fn bodies_after(events: Vec<AgentEvent>) -> (Vec<String>, MemoryMessenger) {
        let messenger = MemoryMessenger::new();
        let mut answer = new_answer(&messenger, Duration::ZERO);
        apply(&mut answer, &mut stream::iter(events)).await;
        let bodies = messenger.messages(CHAT).into_iter().filter(|m| !m.deleted).map(|m| m.text.body).collect();
        (bodies, messenger)
    }

    fn text(content: &str) -> AgentEvent {
        AgentEvent::Text { content: content.to_owned() }
    }

    fn piece(content: &str) -> AgentEvent {
        AgentEvent::TextDelta { content: content.to_owned() }
    }

    fn tool() -> AgentEvent {
        AgentEvent::ToolUse { name: "bash".into(), input: String::new() }
    }

    #[tokio::test]
    async fn the_whole_completion_replaces_its_pieces_and_ends_as_the_old_protocol_did() {
        let old = vec![text("Let me look."), tool(), text("Found **it**."), text(" Done."), AgentEvent::done()];
        let new = vec![
            piece("Let"),
            piece(" me lo"),
            text("Let me look."),
            tool(),
            AgentEvent::Thinking,
            piece("Found **i"),
            // The pieces may differ from the completion (a reasoning tag the agent removes later).
            piece("t**. <think>"),
            text("Found **it**."),
            piece(" Do"),
            text(" Done."),
            AgentEvent::done(),
        ];
        let (old_bodies, _) = bodies_after(old).await;
        let (new_bodies, messenger) = bodies_after(new).await;
        assert_eq!(old_bodies, ["<b>Bot</b>: Let me look.\n\nFound <b>it</b>. Done."]);
        assert_eq!(new_bodies, old_bodies);
        let sends = messenger.calls().iter().filter(|c| matches!(c, Call::Send { .. })).count();
        assert_eq!(sends, 1, "one message, edited as the answer grows");
    }

    #[tokio::test]
    async fn a_thinking_notice_holds_the_place_the_answer_then_takes() {
        let (bodies, messenger) = bodies_after(vec![
            AgentEvent::Thinking,
            piece("Hi"),
            text("Hi there"),
            tool(),
            AgentEvent::Thinking,
            text("More."),
            AgentEvent::done(),
        ])
        .await;
        assert_eq!(bodies, ["<b>Bot</b>: Hi there\n\nMore."]);
        let shown: Vec<String> = messenger
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Send { text, .. } | Call::Edit { text, .. } => Some(text.body),
                _ => None,
            })
            .collect();
        assert_eq!(
            shown,
            [
                "<b>Bot</b>: <i>thinking…</i>",
                "<b>Bot</b>: Hi",
                "<b>Bot</b>: Hi there",
                "<b>Bot</b>: Hi there\n\n<i>thinking…</i>",
                "<b>Bot</b>: Hi there\n\nMore."
            ]
        );
    }

    #[tokio::test]
    async fn a_notice_stays_while_hidden_tools_run() {
        let (bodies, messenger) =
            bodies_after(vec![AgentEvent::Thinking, tool(), AgentEvent::Thinking, text("Found."), AgentEvent::done()])
                .await;
        assert_eq!(bodies, ["<b>Bot</b>: Found."]);
        let calls = messenger.calls();
        assert_eq!(calls.len(), 2, "the notice, then the answer in its place: {calls:?}");
        assert!(matches!(&calls[0], Call::Send { text, .. } if text.body == "<b>Bot</b>: <i>thinking…</i>"));
    }

    #[tokio::test]
    async fn a_notice_with_no_answer_after_it_is_removed() {
        let messenger = MemoryMessenger::new();
        let mut answer = new_answer(&messenger, Duration::ZERO);
        apply(&mut answer, &mut stream::iter([AgentEvent::Thinking, tool(), AgentEvent::done()])).await;
        assert!(!answer.said_something(), "a notice is not an answer");
        let messages = messenger.messages(CHAT);
        assert_eq!(messages.len(), 1);
        assert!(messages[0].deleted, "no stray notice: {messages:?}");

        // Before a tool line the notice goes too, and the answer continues in a new message.
        let messenger = MemoryMessenger::new();
        let mut answer = new_answer(&messenger, Duration::ZERO);
        answer.thinking();
        answer.show(false).await;
        assert_eq!(messenger.last_text(CHAT), "<b>Bot</b>: <i>thinking…</i>");
        answer.close().await;
        assert!(messenger.messages(CHAT)[0].deleted);
        answer.piece("after");
        answer.finish().await;
        let live: Vec<_> = messenger.messages(CHAT).into_iter().filter(|m| !m.deleted).map(|m| m.text.body).collect();
        assert_eq!(live, ["after"]);
    }

    #[tokio::test]
    async fn past_the_limit_the_answer_continues_and_finished_messages_are_left_alone() {
        let long = "word ".repeat(2500);
        let mut events: Vec<AgentEvent> =
            long.as_bytes().chunks(500).map(|c| piece(std::str::from_utf8(c).unwrap())).collect();
        events.extend([text(&long), AgentEvent::done()]);
        let (bodies, messenger) = bodies_after(events).await;
        let expected = split_message(&format!("{PREFIX}{}", markdown_to_html(&long)), TELEGRAM_TEXT_LIMIT);
        assert_eq!(bodies, expected);
        assert_eq!(bodies.len(), 4);
        let calls = messenger.calls();
        let sends = calls.iter().filter(|c| matches!(c, Call::Send { .. })).count();
        assert_eq!(sends, bodies.len(), "each message is sent once");
        for shown in messenger.messages(CHAT) {
            // Once a message shows its final piece it is not touched again.
            let touches: Vec<&String> = calls
                .iter()
                .filter_map(|c| match c {
                    Call::Send { message, text } | Call::Edit { message, text } if *message == shown.message => {
                        Some(&text.body)
                    }
                    _ => None,
                })
                .collect();
            let first_final = touches.iter().position(|body| **body == shown.text.body).unwrap();
            assert_eq!(first_final, touches.len() - 1, "edited after its final piece: {:?}", shown.message);
        }
    }

    #[tokio::test]
    async fn a_shorter_completion_removes_the_messages_its_pieces_needed() {
        let long = "x ".repeat(3000);
        let (bodies, messenger) = bodies_after(vec![piece(&long), text("short"), AgentEvent::done()]).await;
        assert_eq!(bodies, ["<b>Bot</b>: short"]);
        assert_eq!(messenger.calls().iter().filter(|c| matches!(c, Call::Delete { .. })).count(), 1);
    }

    /// Events sent on a schedule, as an agent writes them: `(delay after the previous, event)`.
    fn scheduled(script: Vec<(u64, AgentEvent)>) -> impl Stream<Item = AgentEvent> + Unpin {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            for (delay, event) in script {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        Box::pin(stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|event| (event, rx)) }))
    }

    #[tokio::test(start_paused = true)]
    async fn edits_are_spaced_and_a_waiting_piece_lands_when_due_without_another_event() {
        let messenger = MemoryMessenger::new();
        let mut answer = new_answer(&messenger, Duration::from_secs(1));
        let start = Instant::now();
        let mut events = scheduled(vec![
            (0, piece("one")),
            (100, piece(" two")),
            (100, piece(" three")),
            // A long silence: what came meanwhile must not wait for the next event.
            (5000, text("one two three four")),
            (0, AgentEvent::done()),
        ]);
        apply(&mut answer, &mut events).await;
        let shown: Vec<(Duration, String)> = messenger
            .timed_calls()
            .into_iter()
            .filter_map(|(at, call)| match call {
                Call::Send { text, .. } | Call::Edit { text, .. } => Some((at - start, text.body)),
                _ => None,
            })
            .collect();
        assert_eq!(
            shown,
            [
                (Duration::ZERO, "<b>Bot</b>: one".to_owned()),
                (Duration::from_secs(1), "<b>Bot</b>: one two three".to_owned()),
                (Duration::from_millis(5200), "<b>Bot</b>: one two three four".to_owned()),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_waits_when_everything_is_shown_and_the_end_lands_at_once() {
        let messenger = MemoryMessenger::new();
        let mut answer = new_answer(&messenger, Duration::from_secs(1));
        let start = Instant::now();
        let mut events = scheduled(vec![(0, piece("a")), (10, piece("b")), (10, text("ab")), (0, AgentEvent::done())]);
        apply(&mut answer, &mut events).await;
        assert_eq!(start.elapsed(), Duration::from_millis(20), "the forced final edit did not wait for the spacing");
        assert_eq!(messenger.last_text(CHAT), "<b>Bot</b>: ab");
        assert!(answer.due_at().is_none(), "no timer once everything is shown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_turn_shows_its_controls_while_it_runs_and_a_quick_one_never_does() {
        let controls = || vec![vec![Button::callback("Stop", "stop_turn:1")]];
        let buttons_of = |messenger: &MemoryMessenger| -> Vec<(Duration, bool)> {
            messenger
                .timed_calls()
                .into_iter()
                .filter_map(|(at, call)| match call {
                    Call::Send { text, .. } | Call::Edit { text, .. } => Some((at, !text.buttons.is_empty())),
                    _ => None,
                })
                .map(|(at, with)| (at.elapsed(), with))
                .collect()
        };
        // A long silent tool run: the button comes on its own after three seconds, stays while the
        // answer is written, and goes with the turn's end.
        let messenger = MemoryMessenger::new();
        let start = Instant::now();
        let mut answer =
            new_answer(&messenger, Duration::from_secs(1)).with_controls(controls(), Duration::from_secs(3));
        let mut events =
            scheduled(vec![(0, text("Working on it")), (0, tool()), (10_000, text("Done.")), (0, AgentEvent::done())]);
        apply(&mut answer, &mut events).await;
        let calls: Vec<(Duration, bool)> = messenger
            .timed_calls()
            .into_iter()
            .filter_map(|(at, call)| match call {
                Call::Send { text, .. } | Call::Edit { text, .. } => Some((at - start, !text.buttons.is_empty())),
                _ => None,
            })
            .collect();
        assert_eq!(
            calls,
            [
                (Duration::ZERO, false),
                (Duration::from_secs(3), true),
                (Duration::from_secs(10), true),
                (Duration::from_secs(10), false)
            ],
            "{:?}",
            messenger.calls()
        );
        // A quick answer: one message, no button, nothing to take away.
        let quick = MemoryMessenger::new();
        let mut answer = new_answer(&quick, Duration::from_secs(1)).with_controls(controls(), Duration::from_secs(3));
        apply(&mut answer, &mut scheduled(vec![(0, text("Hi.")), (500, AgentEvent::done())])).await;
        assert_eq!(buttons_of(&quick).len(), 1);
        assert!(buttons_of(&quick).iter().all(|(_, with)| !with));
    }
}
