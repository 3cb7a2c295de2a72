//! `cargo bench --workspace --bench store_ops`: what one `Store` call costs on a SQLite file,
//! one after another and with 50 callers at once. Printed, never asserted.
//!
//! On the 2-vCPU VMs here a call takes ~100–250 µs although SQLite itself needs ~10 µs: perf
//! shows ~70 % of it in the kernel, waking sqlx's connection thread and the tokio worker in
//! turn. That is why the platform reads a user with their state, and an agent with its payer,
//! in one statement each (three calls per chat message, not five).

use std::time::{Duration, Instant};

use baal_core::testing::db;

const CALLS: u32 = 5000;

fn per_call(total: Duration, calls: u32) -> String {
    format!("{:.1} µs", total.as_secs_f64() * 1e6 / f64::from(calls))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let test_db = db::sqlite().await;
    let store = test_db.shared();
    store.user_get_or_create(1, None).await.expect("user");
    store.kv_put("bench", "1", b"{}").await.expect("kv");
    let day = chrono::Utc::now().date_naive();

    println!("| Store call on a SQLite file | time per call |");
    println!("|---|---|");
    let started = Instant::now();
    for _ in 0..CALLS {
        store.user_get(1).await.expect("user_get");
    }
    println!("| user_get, one after another | {} |", per_call(started.elapsed(), CALLS));
    let started = Instant::now();
    for _ in 0..CALLS {
        store.kv_get("bench", "1").await.expect("kv_get");
    }
    println!("| kv_get, one after another | {} |", per_call(started.elapsed(), CALLS));
    let started = Instant::now();
    for _ in 0..CALLS {
        store.usage_consume(1, day, u32::MAX, chrono::Utc::now()).await.expect("usage_consume");
    }
    println!("| usage_consume (a write), one after another | {} |", per_call(started.elapsed(), CALLS));

    let started = Instant::now();
    let callers: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..CALLS / 50 {
                    store.kv_get("bench", "1").await.expect("kv_get");
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.expect("caller");
    }
    println!("| kv_get, 50 callers at once (wall time / calls) | {} |", per_call(started.elapsed(), CALLS));
}
