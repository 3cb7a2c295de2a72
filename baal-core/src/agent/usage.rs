//! Metering: every model call the agent makes is recorded in its database with what it cost
//! (prompt and completion tokens), for whom (the chat, or the label of background work), why
//! ([`UsageCause`]), on which UTC day and with which model.
//!
//! Invariants:
//! - one row per model call that answered, written on the turn's task right after the answer
//!   (one small `INSERT` on the agent's connection; nothing per chunk);
//! - the server's figures are used when it reported them; otherwise the call is estimated with
//!   [`estimate`] and marked `estimated`;
//! - rows are only ever appended, with increasing ids, so `GET /usage?since=<id>` pages through
//!   them without missing or repeating one.
//!
//! A failed recording is logged and does not fail the turn: the answer was already paid for.

use crate::inference::{Completion, CompletionRequest, Usage};
use crate::wire::{TurnUsage, UsageCause, UsageRecord};

use super::history::{History, HistoryError};

/// Bytes per token of the estimate: the usual rule of thumb for English text and JSON with
/// OpenAI-style tokenizers. Only used when the model's server reports no usage.
pub const ESTIMATE_BYTES_PER_TOKEN: u64 = 4;

/// What one model call cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metered {
    /// Tokens sent.
    pub prompt_tokens: u64,
    /// Tokens written.
    pub completion_tokens: u64,
    /// Whether the figures are [`estimate`]s.
    pub estimated: bool,
}

impl Metered {
    /// A cost of `prompt_tokens` in and `completion_tokens` out.
    pub fn new(prompt_tokens: u64, completion_tokens: u64, estimated: bool) -> Self {
        Metered { prompt_tokens, completion_tokens, estimated }
    }

    /// What `completion` (the answer to `request`) cost: the server's usage, else the estimate.
    pub fn of(request: &CompletionRequest, completion: &Completion) -> Self {
        match completion.usage {
            Some(Usage { prompt_tokens, completion_tokens, .. }) => {
                Metered::new(prompt_tokens, completion_tokens, false)
            }
            None => {
                let (prompt, written) = estimate(request, completion);
                Metered::new(prompt, written, true)
            }
        }
    }
}

/// The estimate of a call the server did not count: [`ESTIMATE_BYTES_PER_TOKEN`] bytes per token
/// over the request's messages and tools as JSON (the prompt), and over the answer's text and
/// tool calls' names and arguments (the completion); at least 1 each. Reasoning the model wrote
/// is not kept, so it is not counted: estimates err low for thinking models.
pub fn estimate(request: &CompletionRequest, completion: &Completion) -> (u64, u64) {
    let mut prompt = ByteCount(0);
    // Writing into a counter cannot fail, and allocates nothing.
    let _ = serde_json::to_writer(&mut prompt, &request.messages);
    for tool in &request.tools {
        prompt.0 += (tool.name.len() + tool.description.len()) as u64;
        let _ = serde_json::to_writer(&mut prompt, &tool.parameters);
    }
    let written = completion.content.len()
        + completion.tool_calls.iter().map(|c| c.function.name.len() + c.function.arguments.len()).sum::<usize>();
    let tokens = |bytes: u64| (bytes / ESTIMATE_BYTES_PER_TOKEN).max(1);
    (tokens(prompt.0), tokens(written as u64))
}

/// An `io::Write` that only counts.
struct ByteCount(u64);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Records the call that answered `request` with `completion` and returns what it cost. A
/// database error is logged, not returned (see the module docs).
pub(crate) fn record_call(
    history: &History,
    chat_id: &str,
    cause: UsageCause,
    request: &CompletionRequest,
    completion: &Completion,
) -> Metered {
    let metered = Metered::of(request, completion);
    if let Err(error) = history.record_usage(chat_id, cause, &request.model, metered) {
        tracing::warn!(%error, cause = cause.as_str(), "a model call could not be metered");
    }
    metered
}

/// One model call to record: whose chat (or background label), why, which model, how much.
#[derive(Debug, Clone, Copy)]
pub struct MeteredCall<'a> {
    /// The chat id, or the background work's label (`__heartbeat__`, `__subagent__`).
    pub chat_id: &'a str,
    /// Why the call was made.
    pub cause: UsageCause,
    /// The model asked.
    pub model: &'a str,
    /// Its tokens.
    pub metered: Metered,
}

/// Inserts the row of `call`, dated `at`. Its caller counts it for the budget once committed.
pub(crate) fn insert_usage(
    c: &rusqlite::Connection,
    call: &MeteredCall<'_>,
    at: chrono::DateTime<chrono::Utc>,
) -> rusqlite::Result<i64> {
    let clamp = |tokens: u64| i64::try_from(tokens).unwrap_or(i64::MAX);
    c.prepare_cached(
        "INSERT INTO usage (chat_id, cause, day, model, prompt_tokens, completion_tokens, estimated, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .insert(rusqlite::params![
        call.chat_id,
        call.cause.as_str(),
        day_of(at),
        call.model,
        clamp(call.metered.prompt_tokens),
        clamp(call.metered.completion_tokens),
        call.metered.estimated,
        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, false),
    ])
}

/// The UTC day of `at` as stored and sent: `YYYY-MM-DD`.
pub fn day_of(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

fn usage_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UsageRecord> {
    let cause: String = row.get(2)?;
    Ok(UsageRecord {
        id: row.get(0)?,
        chat_id: row.get(1)?,
        cause: UsageCause::parse(&cause),
        day: row.get(3)?,
        model: row.get(4)?,
        prompt_tokens: row.get::<_, i64>(5)?.try_into().unwrap_or(0),
        completion_tokens: row.get::<_, i64>(6)?.try_into().unwrap_or(0),
        estimated: row.get(7)?,
    })
}

impl History {
    /// Records one model call, dated now; returns its id. Its own `INSERT` and WAL commit (~30 µs
    /// on a 2-vCPU machine): for background work; a chat turn's calls ride on the commit of the
    /// message they wrote ([`History::append_metered`]).
    pub fn record_usage(
        &self,
        chat_id: &str,
        cause: UsageCause,
        model: &str,
        metered: Metered,
    ) -> Result<i64, HistoryError> {
        let at = chrono::Utc::now();
        self.with(|c| {
            let id = insert_usage(c, &MeteredCall { chat_id, cause, model, metered }, at)?;
            self.count_usage(at.date_naive(), cause, metered);
            Ok(id)
        })
    }

    /// The recorded calls with an id above `since`, oldest first, at most `limit`.
    pub fn usage_since(&self, since: i64, limit: usize) -> Result<Vec<UsageRecord>, HistoryError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT id, chat_id, cause, day, model, prompt_tokens, completion_tokens, estimated \
                 FROM usage WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?
            .query_map(rusqlite::params![since, i64::try_from(limit).unwrap_or(i64::MAX)], usage_row)?
            .collect()
        })
    }

    /// The totals of UTC `day` (`YYYY-MM-DD`), of one chat (or background label) or of the whole
    /// agent when `chat_id` is `None`. Budgets keep their own totals in memory (`agent::budget`).
    pub fn usage_on(&self, day: &str, chat_id: Option<&str>) -> Result<TurnUsage, HistoryError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), COUNT(*), \
                 COALESCE(MAX(estimated), 0) FROM usage WHERE day = ?1 AND (?2 IS NULL OR chat_id = ?2)",
            )?
            .query_row(rusqlite::params![day, chat_id], |row| {
                let count = |i: usize| row.get::<_, i64>(i).map(|n| u64::try_from(n).unwrap_or(0));
                Ok(TurnUsage {
                    prompt_tokens: count(0)?,
                    completion_tokens: count(1)?,
                    calls: count(2)?,
                    estimated: row.get(3)?,
                })
            })
        })
    }
}

/// Adds `metered` to a turn's totals.
pub(crate) fn tally(totals: &mut TurnUsage, metered: Metered) {
    totals.add(metered.prompt_tokens, metered.completion_tokens, metered.estimated);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::{ChatMessage, ToolCall, ToolSpec};

    #[test]
    fn the_estimate_counts_bytes_of_what_was_sent_and_written() {
        let messages = vec![ChatMessage::system("s".repeat(40)), ChatMessage::user("hello")];
        let request =
            CompletionRequest::new("m", messages.clone(), vec![ToolSpec::new("t", "d", serde_json::json!({}))]);
        let completion = Completion {
            content: "12345678".into(),
            tool_calls: vec![ToolCall::new("c", "bash", "{}")],
            ..Completion::default()
        };
        let sent = serde_json::to_vec(&messages).unwrap().len() as u64 + 2 + 2;
        assert_eq!(estimate(&request, &completion), (sent / 4, 3));
        let metered = Metered::of(&request, &completion);
        assert!(metered.estimated);
        let reported = Completion { usage: Some(Usage::new(7, 1)), ..completion };
        assert_eq!(Metered::of(&request, &reported), Metered::new(7, 1, false));
        let empty = CompletionRequest::new("m", Vec::new(), Vec::new());
        assert_eq!(estimate(&empty, &Completion::default()), (1, 1), "at least one token each");
    }

    #[tokio::test]
    async fn calls_are_recorded_paged_and_totalled() {
        let history = History::in_memory().await.unwrap();
        assert!(history.usage_since(0, 10).unwrap().is_empty());
        let a = history.record_usage("7", UsageCause::OwnerTurn, "m", Metered::new(100, 10, false)).unwrap();
        history.record_usage("__heartbeat__", UsageCause::Heartbeat, "m", Metered::new(50, 5, true)).unwrap();
        let c = history.record_usage("7", UsageCause::Compaction, "m", Metered::new(30, 3, false)).unwrap();
        let first = history.usage_since(0, 2).unwrap();
        assert_eq!(first.iter().map(|r| r.cause).collect::<Vec<_>>(), [UsageCause::OwnerTurn, UsageCause::Heartbeat]);
        assert_eq!(first[0].id, a);
        assert!(first[1].estimated && !first[0].estimated);
        let rest = history.usage_since(first[1].id, 2).unwrap();
        assert_eq!(rest.iter().map(|r| r.id).collect::<Vec<_>>(), [c]);
        assert!(history.usage_since(c, 10).unwrap().is_empty(), "a cursor at the end returns none");
        let today = day_of(chrono::Utc::now());
        assert_eq!(rest[0].day, today);
        let all = history.usage_on(&today, None).unwrap();
        assert_eq!(all, TurnUsage { prompt_tokens: 180, completion_tokens: 18, calls: 3, estimated: true });
        let chat = history.usage_on(&today, Some("7")).unwrap();
        assert_eq!(chat, TurnUsage { prompt_tokens: 130, completion_tokens: 13, calls: 2, estimated: false });
        assert_eq!(history.usage_on("2000-01-01", None).unwrap(), TurnUsage::default());
    }
}
