//! How soon an answer shows. The platform with the local deployer, a real `baal-agent` and the
//! scripted LLM writing a long answer slowly (4 characters per chunk, 40 ms apart: about 5 s);
//! `MemoryMessenger` records when each message was sent or edited. Prints, per turn, the model's
//! first token (from the request's arrival: the role chunk and the first text chunk each come one
//! delay apart), when the first words became visible, when the answer was whole, and how many
//! sends and edits it took.
//!
//! With `BAAL_AGENT_COMPARE_BIN=<an agent without pieces>` (a release from before streamed answers,
//! say) the same turns run against it too, printed below: there the first words appear only once
//! the whole completion is written.
//!
//! Needs a built `baal-agent`: `BAAL_AGENT_BIN`, else next to this binary, else `target/release`
//! or `target/debug`, else `PATH`.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baal_core::deploy::local::LocalDeployer;
use baal_core::domain::UserId;
use baal_core::platform::{Input, Platform, PlatformConfig};
use baal_core::proxy::http::HttpProxy;
use baal_core::secrets::SecretBox;
use baal_core::testing::db;
use baal_core::testing::messenger::{Call, MemoryMessenger};
use baal_core::testing::openai::ScriptedLlm;
use secrecy::SecretString;

const OWNER: UserId = 701;
const CHUNK_DELAY: Duration = Duration::from_millis(40);
const TURNS: usize = 3;

fn answer(turn: usize) -> String {
    let words: Vec<String> = (1..=100).map(|i| format!("w{turn}x{i}")).collect();
    format!("Turn {turn} answer: {}.", words.join(" "))
}

struct Turn {
    first_token: Duration,
    first_visible: Duration,
    whole: Duration,
    sends: usize,
    edits: usize,
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

async fn run(bin: PathBuf) -> Vec<Turn> {
    let llm = ScriptedLlm::start().await;
    let test_db = db::sqlite().await;
    let data = tempfile::tempdir().unwrap();
    let deployer = Arc::new(LocalDeployer::new(data.path().join("agents"), bin).unwrap());
    let messenger = Arc::new(MemoryMessenger::new());
    let mut config = PlatformConfig::default();
    config.libertai_api_key = Some(SecretString::from("sk-bench"));
    config.libertai_api_base_url = llm.base_url();
    config.admin_user_ids = vec![OWNER];
    let platform = Platform::new(
        config,
        test_db.shared(),
        deployer.clone(),
        Arc::new(HttpProxy::new().unwrap()),
        messenger.clone(),
        Arc::new(SecretBox::from_encoded_key(&"ef".repeat(32)).unwrap()),
    );
    platform.start().await.unwrap();
    let send = |text: &str| {
        let platform = &platform;
        let input = Input::from_text(OWNER, OWNER, text);
        async move {
            platform.handle(input).await.unwrap();
            platform.wait_idle().await;
        }
    };
    llm.push_text("Hello.");
    send("/create").await;
    send("Bench").await;
    for needle in ["create_model:", "create_confirm"] {
        let (data, message) = messenger.find_button(OWNER, needle).expect("the wizard's buttons");
        platform.handle(Input::button(OWNER, OWNER, data, message, "press")).await.unwrap();
        platform.wait_idle().await;
    }
    llm.set_chunk_delay(CHUNK_DELAY);
    let mut turns = Vec::new();
    for turn in 0..TURNS {
        let text = answer(turn);
        // What the model's first text chunk carries (4 characters): shown means the answer started.
        let first_words = format!("</b>: {}", &text[..4]);
        llm.push_text(text.clone());
        messenger.clear();
        let asked = Instant::now();
        send(&format!("question {turn}")).await;
        let request = llm.completion_requests().pop().expect("the agent asked the model");
        let calls = messenger.timed_calls();
        let shown = |call: &Call, needle: &str| match call {
            Call::Send { text, .. } | Call::Edit { text, .. } => text.body.contains(needle),
            _ => false,
        };
        let at = |needle: &str| {
            calls
                .iter()
                .find(|(_, call)| shown(call, needle))
                .map(|(at, _)| at.into_std().saturating_duration_since(asked))
                .expect("the answer was shown")
        };
        let last_word = text.trim_end_matches('.').rsplit(' ').next().unwrap().to_owned();
        turns.push(Turn {
            first_token: request.at.saturating_duration_since(asked) + 2 * CHUNK_DELAY,
            first_visible: at(&first_words),
            whole: at(&format!("{last_word}.")),
            sends: calls.iter().filter(|(_, c)| matches!(c, Call::Send { .. })).count(),
            edits: calls.iter().filter(|(_, c)| matches!(c, Call::Edit { .. })).count(),
        });
    }
    platform.shutdown().await;
    deployer.shutdown().await;
    turns
}

fn print(label: &str, turns: &[Turn]) {
    println!("{label}");
    println!(
        "| turn | model's first token | first words shown | shown − first token | whole answer shown | sends | edits |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (i, t) in turns.iter().enumerate() {
        println!(
            "| {i} | {} | {} | {} | {} | {} | {} |",
            ms(t.first_token),
            ms(t.first_visible),
            ms(t.first_visible.saturating_sub(t.first_token)),
            ms(t.whole),
            t.sends,
            t.edits
        );
    }
}

fn main() {
    let Some(bin) = common::agent_bin() else {
        eprintln!("no baal-agent found: build it (cargo build --release -p baal-agent) or set BAAL_AGENT_BIN");
        std::process::exit(2);
    };
    baal_core::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!(
        "A {}-character answer written 4 characters per chunk, {} ms apart; edits at most 1 per second per chat.\n",
        answer(0).len(),
        CHUNK_DELAY.as_millis()
    );
    print(&format!("agent {}", bin.display()), &runtime.block_on(run(bin)));
    if let Some(old) = std::env::var_os("BAAL_AGENT_COMPARE_BIN").map(PathBuf::from) {
        println!();
        print(&format!("agent {} (compare)", old.display()), &runtime.block_on(run(old)));
    }
}
