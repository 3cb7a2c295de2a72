//! `baal-telegram`: the Baal bot on Telegram. A thin adapter: Telegram updates become
//! `baal_core::platform` inputs, and the platform's `Messenger` calls become Telegram messages.
//!
//! Run one bot process per bot token: the MTProto session (the bot's login) lives in the store,
//! and two processes using it at once would fight over it. Other processes sharing a PostgreSQL
//! store serve the CLI.

mod bot;
mod dispatch;
mod mapping;
mod messenger;
mod session;
#[cfg(test)]
mod testing;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use baal_core::config::Settings;
use baal_core::store::Store;
use clap::Parser;

use crate::bot::{BotOptions, Engine};
use crate::messenger::TelegramMessenger;

/// Run the Baal Telegram bot. Settings come from the environment and `.env` (see `.env.example`).
#[derive(Debug, Parser)]
#[command(name = "baal-telegram", version, about, long_about = None)]
struct Cli {
    /// Seconds that in-flight answers get to finish when the bot is asked to stop.
    #[arg(long, default_value_t = 30, env = "TELEGRAM_SHUTDOWN_GRACE_SECS")]
    shutdown_grace_secs: u64,
}

fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("baal-telegram: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("baal-telegram: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load()?;
    // Fail on missing settings before touching the database or the network.
    settings.require_telegram()?;
    settings.require_encryption_key()?;
    let store = open_store(&settings).await?;
    let options = BotOptions { drain: Duration::from_secs(cli.shutdown_grace_secs) };
    bot::run(settings, store, options, wire_platform).await
}

/// Opens the store named by `DATABASE_URL`.
async fn open_store(_settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    anyhow::bail!(
        "this build has no SQL store yet (baal_core::store::SqlStore is not merged); the bot cannot keep its session"
    )
}

/// Builds the platform engine over the Telegram messenger. This is the only place that knows
/// which engine runs.
async fn wire_platform(_settings: Settings, _messenger: Arc<TelegramMessenger>) -> anyhow::Result<Arc<dyn Engine>> {
    anyhow::bail!("this build has no platform engine yet (baal_core::platform::Platform is not merged)")
}
