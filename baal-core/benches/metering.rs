//! `cargo bench -p baal-core --bench metering`: what metering adds to one model call, i.e.
//! recording its usage row in the agent's database (a WAL file, as deployed), with the server's
//! figures and with the estimate a server that reports none needs, and the budget check that
//! precedes every call. Printed, never asserted; the target is under 10 µs per call.

use std::time::{Duration, Instant};

use baal_core::agent::history::History;
use baal_core::agent::usage::{Metered, MeteredCall, estimate};
use baal_core::inference::{ChatMessage, Completion, CompletionBuilder, CompletionRequest, Delta, ToolSpec};
use baal_core::wire::{Budget, UsageCause};

const CALLS: u32 = 20_000;

fn per_call(total: Duration) -> String {
    format!("{:.2} µs", total.as_secs_f64() * 1e6 / f64::from(CALLS))
}

/// A turn as the agent sends it: an 8 KB system prompt, 40 messages of history, 10 tools.
fn request() -> CompletionRequest {
    let mut messages = vec![ChatMessage::system("You are a helpful agent. ".repeat(330))];
    for i in 0..40 {
        messages.push(ChatMessage::user(format!("message {i}: {}", "words ".repeat(30))));
    }
    let tools = (0..10)
        .map(|i| {
            let parameters = serde_json::json!({"type": "object", "properties": {"path": {"type": "string"}}});
            ToolSpec::new(format!("tool_{i}"), "Does one thing with a file in the workspace.", parameters)
        })
        .collect();
    CompletionRequest::new("hermes-3-8b-tee", messages, tools)
}

fn completion(usage: bool) -> Completion {
    let mut builder = CompletionBuilder::default();
    builder.push(Delta::Text("An answer of a few sentences, as a model writes one. ".repeat(4)));
    if usage {
        builder.push(Delta::Usage { prompt_tokens: 3000, completion_tokens: 60 });
    }
    builder.finish()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let history = History::open(&dir.path().join("agent.db")).await.expect("database");
    let request = request();
    let (reported, unreported) = (completion(true), completion(false));

    println!("| Metering one model call | time per call |");
    println!("|---|---|");
    let started = Instant::now();
    for _ in 0..CALLS {
        let metered = Metered::of(&request, &reported);
        history.record_usage("42", UsageCause::OwnerTurn, &request.model, metered).expect("record");
    }
    println!("| usage reported by the server: one row recorded | {} |", per_call(started.elapsed()));
    let started = Instant::now();
    for _ in 0..CALLS {
        std::hint::black_box(estimate(&request, &unreported));
    }
    println!(
        "| no usage reported: the estimate alone (8 KB prompt, 40 messages, 10 tools) | {} |",
        per_call(started.elapsed())
    );
    let started = Instant::now();
    for _ in 0..CALLS {
        let metered = Metered::of(&request, &unreported);
        history.record_usage("42", UsageCause::OwnerTurn, &request.model, metered).expect("record");
    }
    println!("| no usage reported: estimate and row | {} |", per_call(started.elapsed()));
    // A chat turn: the call's row rides on the commit of the message the model wrote, so what
    // metering adds is the difference between these two.
    let answer = ChatMessage::assistant(Some("An answer of a few words.".into()), Vec::new());
    let started = Instant::now();
    for _ in 0..CALLS {
        history.append("43", &answer).await.expect("append");
    }
    let alone = started.elapsed();
    println!("| a chat turn's message appended, unmetered (for comparison) | {} |", per_call(alone));
    let started = Instant::now();
    for _ in 0..CALLS {
        let metered = Metered::of(&request, &reported);
        let call = MeteredCall { chat_id: "43", cause: UsageCause::OwnerTurn, model: &request.model, metered };
        history.append_metered("43", &answer, &call).await.expect("append");
    }
    let metered = started.elapsed();
    println!("| the same message with its call's row, one transaction | {} |", per_call(metered));
    println!("| what metering adds to a chat turn's model call | {} |", per_call(metered.saturating_sub(alone)));
    // Budgets: the check before every model call, and a row counted into the day's totals.
    std::hint::black_box(history.budget_spent(UsageCause::OwnerTurn).expect("check"));
    let started = Instant::now();
    for _ in 0..CALLS {
        std::hint::black_box(history.budget_spent(UsageCause::Heartbeat).expect("check"));
    }
    println!("| the budget check before a call, no budget set | {} |", per_call(started.elapsed()));
    history.set_budget(Budget::new(Some(u64::MAX), Some(u64::MAX))).expect("budget");
    std::hint::black_box(history.budget_spent(UsageCause::Heartbeat).expect("check"));
    let started = Instant::now();
    for _ in 0..CALLS {
        std::hint::black_box(history.budget_spent(UsageCause::Heartbeat).expect("check"));
    }
    println!(
        "| the budget check before a call, both limits set (the day's totals in memory) | {} |",
        per_call(started.elapsed())
    );
    let started = Instant::now();
    for _ in 0..CALLS {
        let metered = Metered::of(&request, &reported);
        history.record_usage("42", UsageCause::Heartbeat, &request.model, metered).expect("record");
    }
    println!(
        "| a background call's row with a budget set (counted into the totals) | {} |",
        per_call(started.elapsed())
    );
    let day = baal_core::agent::usage::day_of(chrono::Utc::now());
    let started = Instant::now();
    let totals = history.usage_on(&day, None).expect("totals");
    println!(
        "| the day's totals over {} rows (read once, not per call) | {:.2} ms |",
        totals.calls,
        started.elapsed().as_secs_f64() * 1e3
    );
}
