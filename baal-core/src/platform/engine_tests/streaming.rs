//! Answers shown as the agent writes them: pieces before the whole completion, edits spaced per
//! chat, a waiting piece shown when due, thinking notices, long answers, and old agents.
//!
//! These run in real time with short spacings: the store is a real SQLite file, so tokio's paused
//! clock would jump past its waits. Only the order of recorded instants is asserted, and spacings
//! the platform itself enforces; never how fast anything ran.

use std::time::Duration;

use tokio::time::Instant;

use super::doubles::{Mode, Timeline};
use super::{Harness, OWNER, config};
use crate::platform::render::{TELEGRAM_TEXT_LIMIT, markdown_to_html, split_message};
use crate::platform::{MessageRef, PlatformConfig};
use crate::proxy::AgentEvent;
use crate::testing::messenger::Call;

const NAME: &str = "Streamer";
const PREFIX: &str = "<b>Streamer</b>: ";
const NOTICE: &str = "<b>Streamer</b>: <i>thinking…</i>";

/// A platform spacing edits by `edit_interval`, with an agent in chat mode and nothing recorded.
async fn harness(edit_interval: Duration) -> Harness {
    let h = Harness::with(PlatformConfig { edit_interval, ..config() }, Mode::Succeed).await;
    h.create_agent(OWNER, NAME).await;
    h.messenger.clear();
    h.proxy.sent.lock().unwrap().clear();
    h
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn piece(content: &str) -> AgentEvent {
    AgentEvent::TextDelta { content: content.to_owned() }
}

fn text(content: &str) -> AgentEvent {
    AgentEvent::Text { content: content.to_owned() }
}

/// One send or edit of an answer message (not the chat controls, which carry buttons).
#[derive(Debug, Clone)]
struct Shown {
    at: Instant,
    message: MessageRef,
    body: String,
    edit: bool,
}

fn answer_calls(h: &Harness) -> Vec<Shown> {
    h.messenger
        .timed_calls()
        .into_iter()
        .filter_map(|(at, call)| match call {
            Call::Send { message, text } if text.buttons.is_empty() && text.html => {
                Some(Shown { at, message, body: text.body, edit: false })
            }
            Call::Edit { message, text } => Some(Shown { at, message, body: text.body, edit: true }),
            _ => None,
        })
        .collect()
}

/// The bodies of the answer's messages as they stand now (deleted ones left out).
fn answer_bodies(h: &Harness) -> Vec<String> {
    h.messenger
        .messages(OWNER)
        .into_iter()
        .filter(|m| !m.deleted && m.text.buttons.is_empty() && m.text.html)
        .map(|m| m.text.body)
        .collect()
}

/// When the agent sent its first event matching `wanted`.
fn sent_at(h: &Harness, wanted: impl Fn(&AgentEvent) -> bool) -> Instant {
    h.proxy.sent().into_iter().find(|(_, event)| wanted(event)).expect("the agent sent it").0
}

fn is_text(event: &AgentEvent) -> bool {
    matches!(event, AgentEvent::Text { .. })
}

/// Every two consecutive edits in the chat are at least `spacing` apart.
fn assert_spaced(calls: &[Shown], spacing: Duration) {
    let edits: Vec<&Shown> = calls.iter().filter(|c| c.edit).collect();
    for pair in edits.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= spacing, "two edits {gap:?} apart (spacing {spacing:?}): {:?} then {:?}", pair[0], pair[1]);
    }
}

#[tokio::test]
async fn the_first_piece_shows_long_before_the_completion_and_edits_keep_their_spacing() {
    let h = harness(ms(100)).await;
    let words: Vec<String> = (0..12).map(|i| format!("word{i} ")).collect();
    let whole = words.concat();
    let script_words = words.clone();
    h.proxy.set_timeline(move |_| {
        let mut timeline: Timeline = script_words.iter().map(|w| (ms(40), piece(w))).collect();
        timeline[0].0 = Duration::ZERO;
        timeline.push((ms(40), text(&script_words.concat())));
        // Quiet long enough for the last change to land by the spacing, not by the final flush.
        timeline.push((ms(250), AgentEvent::done()));
        timeline
    });
    h.send(OWNER, "count").await;

    let calls = answer_calls(&h);
    let completed = sent_at(&h, is_text);
    assert_eq!(calls[0].body, format!("{PREFIX}word0"), "{calls:?}");
    assert!(!calls[0].edit);
    assert!(calls[0].at < completed, "the first piece was shown before the completion ended");
    let before: Vec<&Shown> = calls.iter().filter(|c| c.at < completed).collect();
    assert!(before.len() >= 3, "the answer grew in the chat while it was written: {before:?}");
    for pair in before.windows(2) {
        assert!(pair[1].body.len() > pair[0].body.len(), "each edit shows more: {before:?}");
    }
    assert_spaced(&calls, ms(100));
    assert_eq!(calls.iter().filter(|c| !c.edit).count(), 1, "one message, edited");
    assert_eq!(answer_bodies(&h), [format!("{PREFIX}{}", whole.trim_end())]);
}

#[tokio::test]
async fn a_piece_right_after_an_edit_shows_when_the_spacing_passes_though_the_agent_falls_silent() {
    let h = harness(ms(200)).await;
    h.proxy.set_timeline(|_| {
        vec![
            (Duration::ZERO, piece("first")),
            (ms(20), piece(" second")),
            (Duration::from_secs(2), text("first second")),
            (Duration::ZERO, AgentEvent::done()),
        ]
    });
    h.send(OWNER, "wait for it").await;

    let calls = answer_calls(&h);
    let completed = sent_at(&h, is_text);
    let first = &calls[0];
    assert_eq!(first.body, format!("{PREFIX}first"));
    let shown = calls.iter().find(|c| c.body == format!("{PREFIX}first second")).expect("the second piece was shown");
    assert!(shown.edit && shown.message == first.message);
    assert!(shown.at < completed, "shown during the silence, not when the next event came: {calls:?}");
    assert!(shown.at - first.at >= ms(200), "and not before the spacing: {calls:?}");
    assert_eq!(calls.len(), 2, "the whole completion changed nothing: {calls:?}");
}

/// Code fences, entities, emoji, and more than one message's worth of UTF-16 units.
fn long_tricky_answer() -> String {
    let mut answer = String::from("# Report 😀\n\nCompare `a<b && c>d` with <tag> & \"quotes\".\n\n");
    for i in 0..30 {
        answer.push_str(&format!(
            "## Part {i} 🦀\n\nSome **bold <b>** and *em & dash* text, \u{1F600} again, x < y > z.\n\n\
             - item & one\n- item <two>\n\n```rust\nfn f{i}<T: Ord>(a: &T, b: &T) -> bool {{ a < b && b > a }}\n```\n\n"
        ));
    }
    answer.push_str("```text\n");
    for i in 0..40 {
        answer.push_str(&format!("line {i}: <&> 😀\n"));
    }
    answer.push_str("```\n\nThe end & 🦀.");
    assert!(crate::platform::render::utf16_len(&answer) > TELEGRAM_TEXT_LIMIT);
    answer
}

/// `text` in pieces of about `size` bytes, cut at character boundaries.
fn pieces_of(text: &str, size: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = size.min(rest.len());
        while !rest.is_char_boundary(end) {
            end += 1;
        }
        pieces.push(rest[..end].to_owned());
        rest = &rest[end..];
    }
    pieces
}

#[tokio::test]
async fn a_long_streamed_answer_lands_exact_and_finished_messages_are_not_touched_again() {
    let h = harness(ms(50)).await;
    let answer = long_tricky_answer();
    let expected = split_message(&format!("{PREFIX}{}", markdown_to_html(&answer)), TELEGRAM_TEXT_LIMIT);
    assert!(expected.len() >= 2);

    // An old agent: the whole completion at once.
    let whole = answer.clone();
    h.proxy.set_script(move |_| vec![text(&whole), AgentEvent::done()]);
    h.send(OWNER, "report").await;
    let old_bodies = answer_bodies(&h);
    assert_eq!(old_bodies, expected);

    // A streaming agent: pieces every few milliseconds, then the whole completion.
    h.messenger.clear();
    let streamed = answer.clone();
    h.proxy.set_timeline(move |_| {
        let mut timeline: Timeline = pieces_of(&streamed, 300).iter().map(|p| (ms(10), piece(p))).collect();
        timeline.push((ms(10), text(&streamed)));
        timeline.push((Duration::ZERO, AgentEvent::done()));
        timeline
    });
    h.send(OWNER, "report").await;
    assert_eq!(answer_bodies(&h), old_bodies, "the final text is exactly what the old protocol showed");

    let calls = answer_calls(&h);
    let sends = calls.iter().filter(|c| !c.edit).count();
    assert_eq!(sends, expected.len(), "each message is sent once: {calls:#?}");
    assert!(calls.iter().filter(|c| c.edit).count() >= 2, "the answer was edited as it grew");
    assert!(!h.messenger.calls().iter().any(|c| matches!(c, Call::Delete { .. })));
    for (i, body) in expected.iter().enumerate() {
        let message = calls.iter().filter(|c| !c.edit).nth(i).unwrap().message;
        let touches: Vec<&Shown> = calls.iter().filter(|c| c.message == message).collect();
        let first_final = touches.iter().position(|c| c.body == *body).expect("the message ends on its piece");
        assert_eq!(first_final, touches.len() - 1, "message {i} was touched after it showed its final piece");
    }
    // The last change may be forced out by the end of the turn; every edit before it is spaced.
    assert_spaced(&calls[..calls.len() - 1], ms(50));
}

#[tokio::test]
async fn an_old_agent_that_sends_only_whole_completions_gives_the_answer_as_before() {
    let h = harness(ms(100)).await;
    h.proxy.set_timeline(|_| {
        vec![
            (Duration::ZERO, text("Let me **check**.")),
            (ms(10), text(" Still here & <fine>.")),
            (ms(300), text(" Done 😀.")),
            (Duration::ZERO, AgentEvent::done()),
        ]
    });
    h.send(OWNER, "old").await;
    assert_eq!(answer_bodies(&h), [format!("{PREFIX}Let me <b>check</b>. Still here &amp; &lt;fine&gt;. Done 😀.")]);
    let calls = answer_calls(&h);
    let third = sent_at(&h, |e| matches!(e, AgentEvent::Text { content } if content.contains("Done")));
    assert!(
        calls.iter().any(|c| c.body.ends_with("&lt;fine&gt;.") && c.at < third),
        "the second completion was shown when due, not held back until the third: {calls:?}"
    );
    assert_spaced(&calls, ms(100));
}

#[tokio::test]
async fn thinking_shows_a_notice_the_answer_replaces_and_never_the_reasoning() {
    let h = harness(ms(50)).await;
    h.proxy.set_timeline(|_| {
        vec![
            (Duration::ZERO, AgentEvent::Thinking),
            (ms(150), piece("The answer")),
            (ms(150), piece(" is 42.")),
            (Duration::ZERO, text("The answer is 42.")),
            (Duration::ZERO, AgentEvent::done()),
        ]
    });
    h.send(OWNER, "think").await;
    let calls = answer_calls(&h);
    assert_eq!(calls[0].body, NOTICE, "{calls:?}");
    assert!(calls[0].at < sent_at(&h, |e| matches!(e, AgentEvent::TextDelta { .. })));
    assert!(calls.iter().all(|c| c.message == calls[0].message), "the answer took the notice's message: {calls:?}");
    let answer = format!("{PREFIX}The answer is 42.");
    for call in &calls[1..] {
        assert!(answer.starts_with(&call.body), "only the notice and the answer's own words: {call:?}");
    }
    assert_eq!(answer_bodies(&h), [answer]);
}

#[tokio::test]
async fn a_notice_before_a_shown_tool_line_does_not_stay_behind() {
    let h = harness(ms(50)).await;
    h.send(OWNER, "/verbose").await;
    if !h.last(OWNER).contains("shown") {
        h.send(OWNER, "/verbose").await;
    }
    assert!(h.last(OWNER).contains("shown"));
    h.messenger.clear();
    h.proxy.set_timeline(|_| {
        vec![
            (Duration::ZERO, AgentEvent::Thinking),
            (ms(100), AgentEvent::ToolUse { name: "bash".into(), input: "{}".into() }),
            (Duration::ZERO, AgentEvent::Thinking),
            (ms(100), piece("Listed")),
            (ms(100), text("Listed.")),
            (Duration::ZERO, AgentEvent::done()),
        ]
    });
    h.send(OWNER, "list files").await;
    assert_eq!(answer_bodies(&h), ["⚙️ <i>bash</i>", "Listed."], "{:?}", h.messenger.calls());
    let deleted = h.messenger.messages(OWNER).into_iter().filter(|m| m.deleted).count();
    assert_eq!(deleted, 1, "the notice shown before the tool ran was removed");
}

#[tokio::test]
async fn the_introduction_after_a_deployment_streams_too() {
    let h = Harness::with(PlatformConfig { edit_interval: ms(50), ..config() }, Mode::Succeed).await;
    h.proxy.set_timeline(|_| {
        vec![
            (Duration::ZERO, piece("Hi, I am")),
            (ms(150), piece(" Streamer,")),
            (ms(150), piece(" at your service.")),
            (Duration::ZERO, text("Hi, I am Streamer, at your service.")),
            (Duration::ZERO, AgentEvent::done()),
        ]
    });
    h.create_agent(OWNER, NAME).await;
    let calls: Vec<Shown> = answer_calls(&h).into_iter().filter(|c| c.body.starts_with(PREFIX)).collect();
    let completed = sent_at(&h, is_text);
    assert_eq!(calls[0].body, format!("{PREFIX}Hi, I am"));
    assert!(calls.iter().filter(|c| c.at < completed).count() >= 2, "{calls:?}");
    assert_eq!(calls.last().unwrap().body, format!("{PREFIX}Hi, I am Streamer, at your service."));
}
