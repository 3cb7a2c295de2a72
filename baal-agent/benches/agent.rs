//! `cargo bench -p baal-agent --bench agent`: figures of the release `baal-agent` against the
//! scripted LLM on loopback. Printed, never asserted (timings depend on the machine). `-p`, so the
//! binary measured is built as the one shipped: a workspace-wide build unifies features and
//! links the platform's database drivers into it.
//!
//! - process start → first `/health` 200 (median of several starts);
//! - resident memory idle, and after 100 chats;
//! - latency a `/chat` turn adds over the LLM's own time (p50, p99), at 1 and 100 concurrent
//!   streams: the same scripted answer (8 chunks, 20 ms apart) is timed once straight from the
//!   LLM and once through the agent, with the same number of clients each making requests back
//!   to back, the two paths alternating in blocks so that both see the same host. The clients
//!   start spread over one answer's time, as real conversations do; the
//!   scripted model has no jitter, so clients started in the same millisecond stay in lockstep
//!   and all 100 turns reach the agent at once, every time (that worst case is printed too);
//! - release binary size.
//!
//! With `BAAL_AGENT_COMPARE_BIN=<another baal-agent>` (an earlier release, say), that binary's
//! start time, idle RSS and size are measured in the same run, starts interleaved with this one's,
//! and printed beside them. `BAAL_AGENT_BENCH_BIN=<another baal-agent>` measures that binary
//! instead of the one just built, for whole-table A/B runs. `BAAL_AGENT_BENCH_BUDGET=1` sends every
//! turn as the platform does once it keeps budgets: with the agent's budget and the sender's
//! allowance (limits far above what the run spends, so every check passes); agents that keep no
//! budget ignore both.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baal_core::testing::openai::ScriptedLlm;
use serde_json::json;

const SECRET: &str = "bench-secret";
const PYTHON_STARTUP: &str = "2.27 s";
const PYTHON_IDLE_RSS: &str = "78 MB";
const CHUNK_DELAY: Duration = Duration::from_millis(20);

struct Agent {
    child: Child,
    base_url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(binary: &Path, llm_url: &str) -> (Agent, Instant) {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = Command::new(binary)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LIBERTAI_API_BASE_URL", llm_url)
        .env("LIBERTAI_API_KEY", "bench-key")
        .env("AGENT_SECRET", SECRET)
        .env("PORT", "0")
        .env("HEARTBEAT_INTERVAL", "0")
        .env("OWNER_CHAT_ID", "1")
        .env("DB_PATH", dir.path().join("agent.db"))
        .env("WORKSPACE_PATH", dir.path().join("workspace"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start baal-agent");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").expect("listening line").to_owned();
    (Agent { child, base_url: format!("http://{addr}"), _dir: dir }, started)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn signed_ms(a: Duration, b: Duration) -> String {
    format!("{:.2} ms", (a.as_secs_f64() - b.as_secs_f64()) * 1000.0)
}

async fn chat_once(http: &reqwest::Client, base: &str, chat: String) -> Duration {
    let mut request = json!({"message": "hello agent", "chat_id": chat});
    if std::env::var_os("BAAL_AGENT_BENCH_BUDGET").is_some_and(|v| v == "1") {
        request["budget"] = json!({"daily_tokens": 1_000_000_000_000u64, "background_tokens": 1_000_000_000u64});
        request["turn_tokens"] = json!(1_000_000_000u64);
    }
    let t = Instant::now();
    let body = http
        .post(format!("{base}/chat"))
        .bearer_auth(SECRET)
        .json(&request)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains(r#""type":"done""#), "{body}");
    t.elapsed()
}

async fn llm_once(http: &reqwest::Client, llm: &str) -> Duration {
    let t = Instant::now();
    let body = http
        .post(format!("{llm}/chat/completions"))
        .bearer_auth("bench-key")
        .json(&json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hello agent"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("[DONE]"));
    t.elapsed()
}

/// Runs `concurrency` clients side by side, each making `per_client` requests one after the
/// other (so that `concurrency` streams are open at all times), client `i` starting after
/// `spread * i / concurrency`; returns the sorted durations.
async fn measure<F, Fut>(concurrency: usize, per_client: usize, spread: Duration, f: F) -> Vec<Duration>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Duration> + Send + 'static,
{
    let f = std::sync::Arc::new(f);
    let clients: Vec<_> = (0..concurrency)
        .map(|client| {
            let f = f.clone();
            tokio::spawn(async move {
                tokio::time::sleep(spread.mul_f64(client as f64 / concurrency as f64)).await;
                let mut times = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    times.push(f(client * per_client + i).await);
                }
                times
            })
        })
        .collect();
    let mut all = Vec::with_capacity(concurrency * per_client);
    for c in clients {
        all.extend(c.await.unwrap());
    }
    all.sort();
    all
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let llm = ScriptedLlm::start().await;
    let llm_url = llm.base_url();
    let chosen = std::env::var_os("BAAL_AGENT_BENCH_BIN").map(std::path::PathBuf::from);
    let binary = chosen.as_deref().unwrap_or(Path::new(env!("CARGO_BIN_EXE_baal-agent")));
    baal_core::install_crypto_provider();
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();

    let compare = std::env::var_os("BAAL_AGENT_COMPARE_BIN").map(std::path::PathBuf::from);
    let mut binaries = vec![binary];
    binaries.extend(compare.as_deref());
    let starts = start_figures(&http, &binaries, &llm_url).await;
    let startups = &starts[0].0;

    let (agent, _) = start(binary, &llm_url);
    let pid = agent.child.id();
    let _ = http.get(format!("{}/health", agent.base_url)).send().await.unwrap();
    let idle = idle_rss(pid).await;

    let base = agent.base_url.clone();
    for i in 0..100 {
        chat_once(&http, &base, format!("warm-{i}")).await;
    }
    let after_100 = rss_kib(pid);

    // The model's own time: a streamed answer of 8 chunks, 20 ms apart (~160 ms).
    llm.set_chunk_delay(CHUNK_DELAY);
    let mut latency = Vec::new();
    let answer_time = CHUNK_DELAY * 8;
    for (label, concurrency, blocks, rounds_per_block, spread) in [
        ("1 concurrent", 1usize, 10usize, 10usize, Duration::ZERO),
        ("100 concurrent", 100, 5, 2, answer_time),
        ("100 concurrent, all started at once (lockstep bursts)", 100, 5, 1, Duration::ZERO),
    ] {
        // Both paths are measured in alternating blocks (direct, agent, agent, direct, …), so a
        // change in the host's load over the minutes this takes falls on both alike.
        let mut direct = Vec::new();
        let mut through = Vec::new();
        for block in 0..blocks {
            for agent_path in if block % 2 == 0 { [false, true] } else { [true, false] } {
                let h = http.clone();
                if agent_path {
                    let b = base.clone();
                    let tag = format!("{}-{block}", latency.len());
                    through.extend(
                        measure(concurrency, rounds_per_block, spread, move |i| {
                            let h = h.clone();
                            let b = b.clone();
                            let chat = format!("r{tag}-{i}");
                            async move { chat_once(&h, &b, chat).await }
                        })
                        .await,
                    );
                } else {
                    let u = llm_url.clone();
                    direct.extend(
                        measure(concurrency, rounds_per_block, spread, move |_| {
                            let h = h.clone();
                            let u = u.clone();
                            async move { llm_once(&h, &u).await }
                        })
                        .await,
                    );
                }
            }
        }
        direct.sort();
        through.sort();
        latency.push((label, direct, through));
    }
    let after_all = rss_kib(pid);

    println!();
    println!("baal-agent benchmark ({})", binary.display());
    println!("| figure | baal-agent (Rust) | Python agent |");
    println!("|---|---|---|");
    println!(
        "| start → /health 200 (median of 7) | {} (min {}, max {}) | {PYTHON_STARTUP} |",
        ms(percentile(startups, 0.5)),
        ms(startups[0]),
        ms(*startups.last().unwrap())
    );
    println!("| idle RSS | {:.1} MB | {PYTHON_IDLE_RSS} |", idle as f64 / 1024.0);
    println!("| RSS after 100 chats | {:.1} MB | — |", after_100 as f64 / 1024.0);
    println!("| RSS after the latency runs (1,600 more chats) | {:.1} MB | — |", after_all as f64 / 1024.0);
    for (label, direct, through) in &latency {
        let (d50, d99) = (percentile(direct, 0.5), percentile(direct, 0.99));
        let (t50, t99) = (percentile(through, 0.5), percentile(through, 0.99));
        println!(
            "| added /chat latency, {label}: p50 / p99 | {} / {} (LLM alone {} / {}; via agent {} / {}) | — |",
            signed_ms(t50, d50),
            signed_ms(t99, d99),
            ms(d50),
            ms(d99),
            ms(t50),
            ms(t99)
        );
    }
    println!("| release binary size | {:.1} MB | — |", size_mb(binary));
    if binaries.len() > 1 {
        println!();
        println!("| figure, same run | {} | {} |", binary.display(), binaries[1].display());
        println!("|---|---|---|");
        let median = |i: usize| ms(percentile(&starts[i].0, 0.5));
        println!("| start → /health 200 (median of 7, interleaved) | {} | {} |", median(0), median(1));
        let rss = |i: usize| format!("{:.1} MB", starts[i].1 as f64 / 1024.0);
        println!("| idle RSS | {} | {} |", rss(0), rss(1));
        println!("| binary size | {:.1} MB | {:.1} MB |", size_mb(binaries[0]), size_mb(binaries[1]));
    }
}

fn size_mb(binary: &Path) -> f64 {
    std::fs::metadata(binary).map(|m| m.len()).unwrap_or(0) as f64 / (1024.0 * 1024.0)
}

/// Resident memory once the agent has settled after its first request.
async fn idle_rss(pid: u32) -> u64 {
    tokio::time::sleep(Duration::from_millis(500)).await;
    rss_kib(pid)
}

/// For each binary: start → first `/health` 200 over 7 starts (sorted), the starts of all
/// binaries interleaved so they share the host's conditions; and the idle RSS of the last start.
async fn start_figures(http: &reqwest::Client, binaries: &[&Path], llm_url: &str) -> Vec<(Vec<Duration>, u64)> {
    let mut figures = vec![(Vec::new(), 0); binaries.len()];
    for round in 0..7 {
        for (i, binary) in binaries.iter().enumerate() {
            let (agent, started) = start(binary, llm_url);
            loop {
                if let Ok(r) = http.get(format!("{}/health", agent.base_url)).send().await
                    && r.status() == 200
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            figures[i].0.push(started.elapsed());
            if round == 6 {
                figures[i].1 = idle_rss(agent.child.id()).await;
            }
        }
    }
    for (startups, _) in &mut figures {
        startups.sort();
    }
    figures
}
