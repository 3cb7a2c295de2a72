//! Compaction: when a chat's history no longer fits the model's context, older turns are replaced
//! by a summary written by the model, and recent turns are kept verbatim.
//!
//! Invariants:
//! - the messages sent never start with, or contain, a tool result whose call is missing, and
//!   every tool call is followed by its result (an interrupted turn gets a placeholder result);
//! - a compaction never cuts between a tool call and its result;
//! - rows are deleted only once their summary is stored (in the same transaction);
//! - if the summary cannot be written, the uncompacted history is used; so it is when the
//!   agent's daily or background budget is spent, and then the model is not asked.

use crate::inference::{ChatMessage, CompletionRequest, Inference, MessageRole};

use super::history::{History, HistoryError, StoredMessage, safe_cut};
use super::usage::record_call;
use crate::wire::UsageCause;

/// The request that asks the model for a summary of older turns.
pub const SUMMARY_PROMPT: &str = "Summarise the conversation so far for your own later use. Keep the key facts, \
the decisions taken, the user's preferences and any task still in progress. Be concise; reply with the summary only.";

const INTERRUPTED: &str = "(no result: this tool call was interrupted)";

/// Budget settings of compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactionConfig {
    /// The model's context window in tokens.
    pub context_limit: u32,
    /// Tokens kept free for the answer.
    pub generation_reserve: u32,
    /// Recent rows kept verbatim.
    pub keep: usize,
    /// Rows of history loaded per turn.
    pub max_history: u64,
}

impl CompactionConfig {
    /// A configuration.
    pub fn new(context_limit: u32, generation_reserve: u32, keep: usize, max_history: u64) -> Self {
        CompactionConfig { context_limit, generation_reserve, keep, max_history }
    }

    /// Tokens the prompt may use.
    pub fn budget(&self) -> usize {
        self.context_limit.saturating_sub(self.generation_reserve) as usize
    }
}

/// Rough token count, as the Python agent computes it: characters of the content, of the tool
/// calls as Python's `json.dumps` prints them, and of the tool-call ids, divided by four, plus
/// four per message.
pub fn estimate_tokens(messages: &[ChatMessage]) -> usize {
    let chars: usize = messages
        .iter()
        .map(|m| {
            let content = m.content.as_deref().map_or(0, |c| c.chars().count());
            let calls = if m.tool_calls.is_empty() {
                0
            } else {
                python_json_len(&serde_json::to_value(&m.tool_calls).unwrap_or_default())
            };
            let id = m.tool_call_id.as_deref().map_or(0, |c| c.chars().count());
            content + calls + id
        })
        .sum();
    chars / 4 + 4 * messages.len()
}

/// Length of `json.dumps(value)` with Python's defaults (`", "`, `": "`, ASCII escapes). Written
/// out because the estimate must match the Python agent's, which no JSON crate prints.
fn python_json_len(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Null => 4,
        Value::Bool(b) => {
            if *b {
                4
            } else {
                5
            }
        }
        Value::Number(n) => n.to_string().len(),
        Value::String(s) => {
            2 + s
                .chars()
                .map(|c| match c {
                    '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
                    c if (c as u32) < 0x20 => 6,
                    c if c.is_ascii() => 1,
                    c if (c as u32) > 0xFFFF => 12,
                    _ => 6,
                })
                .sum::<usize>()
        }
        Value::Array(items) => 2 + items.iter().map(python_json_len).sum::<usize>() + 2 * items.len().saturating_sub(1),
        Value::Object(map) => {
            2 + map
                .iter()
                .map(|(k, v)| python_json_len(&Value::String(k.clone())) + 2 + python_json_len(v))
                .sum::<usize>()
                + 2 * map.len().saturating_sub(1)
        }
    }
}

/// Makes a history valid for strict OpenAI-compatible servers: drops tool results whose call is
/// not right before them (a window that starts mid-turn), and gives calls that never got a result
/// (an interrupted turn) a placeholder one.
pub fn repair_tool_pairs(messages: Vec<ChatMessage>) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len());
    let mut open_calls: Vec<String> = Vec::new();
    let close = |out: &mut Vec<ChatMessage>, open: &mut Vec<String>| {
        for id in open.drain(..) {
            out.push(ChatMessage::tool(id, INTERRUPTED));
        }
    };
    for message in messages {
        match message.role {
            MessageRole::Tool => {
                let id = message.tool_call_id.clone().unwrap_or_default();
                if let Some(pos) = open_calls.iter().position(|open| *open == id) {
                    open_calls.remove(pos);
                    out.push(message);
                }
            }
            _ => {
                close(&mut out, &mut open_calls);
                if message.role == MessageRole::Assistant {
                    open_calls = message.tool_calls.iter().map(|c| c.id.clone()).collect();
                }
                out.push(message);
            }
        }
    }
    close(&mut out, &mut open_calls);
    out
}

fn with_system(system: &ChatMessage, rows: &[StoredMessage]) -> Vec<ChatMessage> {
    let mut out = vec![system.clone()];
    out.extend(repair_tool_pairs(rows.iter().map(|r| r.message.clone()).collect()));
    out
}

/// The messages of a chat turn: `[system] + history`, compacted first when it is over budget.
pub async fn prepare_context(
    history: &History,
    inference: &dyn Inference,
    model: &str,
    chat_id: &str,
    system: ChatMessage,
    config: CompactionConfig,
) -> Result<Vec<ChatMessage>, HistoryError> {
    let loaded = history.load(chat_id, config.max_history).await?;
    prepare_loaded_context(history, inference, model, chat_id, system, config, loaded).await
}

/// [`prepare_context`] for a history the caller already loaded with
/// `History::load(chat_id, config.max_history)` (saves a query per turn).
pub async fn prepare_loaded_context(
    history: &History,
    inference: &dyn Inference,
    model: &str,
    chat_id: &str,
    system: ChatMessage,
    config: CompactionConfig,
    loaded: Vec<StoredMessage>,
) -> Result<Vec<ChatMessage>, HistoryError> {
    let messages = with_system(&system, &loaded);
    let budget = config.budget();
    if estimate_tokens(&messages) <= budget {
        return Ok(messages);
    }
    if let Some(spent) = history.budget_spent(UsageCause::Compaction)? {
        tracing::info!(chat_id, limit = ?spent.limit, "compaction: the budget is spent; history kept as is");
        return Ok(messages);
    }
    let rows = history.rows(chat_id).await?;
    if rows.len() <= config.keep {
        return Ok(messages);
    }
    let Some(cut) = safe_cut(&rows, rows.len() - config.keep) else { return Ok(messages) };

    // Older turns to summarise: the previous summary, then the rows before the cut, trimmed from
    // the oldest side so that the summary request itself fits.
    let previous = history.load(chat_id, 0).await?;
    let mut old: Vec<ChatMessage> = previous.into_iter().map(|r| r.message).collect();
    old.extend(rows[..cut].iter().map(|r| r.message.clone()));
    let mut request = summary_request(&system, &old);
    while estimate_tokens(&request) > budget && old.len() > 1 {
        old.remove(0);
        request = summary_request(&system, &old);
    }
    let request = CompletionRequest::new(model, request, Vec::new());
    let answer = inference.complete(&request).await;
    if let Ok(done) = &answer {
        // Charged to the owner whoever's turn it precedes; `done` of that turn leaves it out.
        record_call(history, chat_id, UsageCause::Compaction, &request, done);
    }
    let summary = match answer {
        Ok(done) if !done.content.trim().is_empty() => done.content.trim().to_owned(),
        Ok(_) => {
            tracing::warn!(chat_id, "compaction: the model returned an empty summary; history kept as is");
            return Ok(messages);
        }
        Err(error) => {
            tracing::warn!(chat_id, %error, "compaction: summary failed; history kept as is");
            return Ok(messages);
        }
    };
    history.replace_with_summary(chat_id, rows[cut].id, &summary).await?;
    let loaded = history.load(chat_id, config.max_history).await?;
    Ok(fit_to_budget(with_system(&system, &loaded), budget))
}

fn summary_request(system: &ChatMessage, old: &[ChatMessage]) -> Vec<ChatMessage> {
    let mut request = vec![system.clone()];
    request.extend(repair_tool_pairs(old.to_vec()));
    request.push(ChatMessage::user(SUMMARY_PROMPT));
    request
}

/// Drops the oldest turns after the system prompt (and the summary pair, if any) until the
/// messages fit, never below the last user message.
fn fit_to_budget(mut messages: Vec<ChatMessage>, budget: usize) -> Vec<ChatMessage> {
    let keep_head = if messages
        .get(1)
        .and_then(|m| m.content.as_deref())
        .is_some_and(|c| c.starts_with(super::history::SUMMARY_MARKER))
    {
        3
    } else {
        1
    };
    while estimate_tokens(&messages) > budget {
        let last_user = messages.iter().rposition(|m| m.role == MessageRole::User).unwrap_or(0);
        if last_user <= keep_head {
            break;
        }
        messages.remove(keep_head);
        while messages.get(keep_head).is_some_and(|m| m.role == MessageRole::Tool) {
            messages.remove(keep_head);
        }
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::ToolCall;

    #[test]
    fn python_estimates() {
        assert_eq!(estimate_tokens(&[]), 0);
        assert_eq!(
            estimate_tokens(&[ChatMessage::user("Hello"), ChatMessage::assistant(Some("Hi there".into()), vec![])]),
            11
        );
        let call = ChatMessage::assistant(None, vec![ToolCall::new("call_1", "bash", "{\"command\": \"ls\"}")]);
        // json.dumps([{"id": "call_1", "type": "function", "function": {"name": "bash", "arguments": "{\"command\": \"ls\"}"}}])
        let python = r#"[{"id": "call_1", "type": "function", "function": {"name": "bash", "arguments": "{\"command\": \"ls\"}"}}]"#;
        assert_eq!(estimate_tokens(&[call]), python.len() / 4 + 4);
        let result = ChatMessage::tool("call_1", "");
        assert_eq!(estimate_tokens(&[result]), 6 / 4 + 4);
        assert_eq!(python_json_len(&serde_json::json!("é")), 8);
    }

    #[test]
    fn orphans_are_dropped_and_interrupted_calls_closed() {
        let msgs = vec![
            ChatMessage::tool("old", "orphan"),
            ChatMessage::user("hi"),
            ChatMessage::assistant(None, vec![ToolCall::new("a", "bash", "{}"), ToolCall::new("b", "bash", "{}")]),
            ChatMessage::tool("a", "ok"),
            ChatMessage::user("again"),
        ];
        let fixed = repair_tool_pairs(msgs);
        let roles: Vec<_> = fixed.iter().map(|m| (m.role, m.tool_call_id.clone())).collect();
        assert_eq!(
            roles,
            vec![
                (MessageRole::User, None),
                (MessageRole::Assistant, None),
                (MessageRole::Tool, Some("a".into())),
                (MessageRole::Tool, Some("b".into())),
                (MessageRole::User, None),
            ]
        );
    }
}
