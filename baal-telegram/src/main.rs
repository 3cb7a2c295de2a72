//! `baal-telegram`: the Baal bot on Telegram. A thin adapter: Telegram updates become
//! `baal_core::platform` inputs, and the platform's `Messenger` calls become Telegram messages.
//!
//! Run one bot process per bot token: the MTProto session (the bot's login) lives in the store,
//! and two processes using it at once would fight over it. Other processes sharing a PostgreSQL
//! store serve the CLI.

#![forbid(unsafe_code)]

mod bot;
mod dispatch;
mod mapping;
mod messenger;
#[cfg(test)]
mod recorded;
mod session;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;

use async_trait::async_trait;
use baal_core::config::Settings;
use baal_core::platform::{self, Input, Platform};
use baal_core::store::{SqlStore, Store};
use baal_core::telemetry::{self, Readiness};
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
    // Before parsing, so `.env` can hold this binary's own options too.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    // Settings first: a bad one exits 2 (systemd's `RestartPreventExitStatus=2` then stops
    // restarting), before the database or the network is touched.
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("baal-telegram: {error}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = settings.require_telegram() {
        eprintln!("baal-telegram: {error}");
        return ExitCode::from(2);
    }
    baal_core::ops::init_logs(settings.log_format, "info");
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("baal-telegram: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("baal-telegram: {error:#}");
            baal_core::ops::exit_code(error.as_ref())
        }
    }
}

async fn run(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    let sealer = Arc::new(platform::secret_box_from_settings(&settings)?);
    let store: Arc<dyn Store> = Arc::new(SqlStore::open(&settings.database_url).await?);
    let options = BotOptions { drain: Duration::from_secs(cli.shutdown_grace_secs) };
    let observed = match settings.metrics_addr {
        Some(addr) => Some(serve_metrics(addr, store.clone()).await?),
        None => None,
    };
    bot::run(settings, store, sealer, options, move |settings, messenger| wire_platform(settings, messenger, observed))
        .await
}

/// What the metrics server needs once the platform is built: the readiness flags to raise and the
/// slot its gauges are refreshed from.
struct Observed {
    readiness: Readiness,
    platform: Arc<OnceLock<Platform>>,
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` from now on (so a supervisor sees the
/// process alive while it logs in); ready once the database answers, Telegram is logged in and the
/// platform (with its deployer) is built.
async fn serve_metrics(addr: SocketAddr, store: Arc<dyn Store>) -> anyhow::Result<Observed> {
    let handle = telemetry::install()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve metrics on {addr} (METRICS_ADDR)"))?;
    let readiness = Readiness::new().with_store(store).require(READY_TELEGRAM).require(READY_DEPLOYER);
    let platform: Arc<OnceLock<Platform>> = Arc::default();
    let slot = platform.clone();
    let refresh: telemetry::Refresh = Arc::new(move || {
        let platform = slot.get().cloned();
        Box::pin(async move {
            if let Some(platform) = platform {
                platform.record_gauges().await;
            }
        })
    });
    let server = readiness.clone();
    tokio::spawn(async move {
        if let Err(error) = telemetry::serve(listener, handle, server, Some(refresh)).await {
            tracing::error!(%error, "the metrics server stopped");
        }
    });
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    Ok(Observed { readiness, platform })
}

/// Readiness flags: the Telegram session is logged in; the platform and its deployer are built.
const READY_TELEGRAM: &str = "telegram";
const READY_DEPLOYER: &str = "deployer";

/// Builds the platform engine over the Telegram messenger. This is the only place that knows
/// which engine runs. The bot calls it once logged in.
async fn wire_platform(
    settings: Settings,
    messenger: Arc<TelegramMessenger>,
    observed: Option<Observed>,
) -> anyhow::Result<Arc<dyn Engine>> {
    if let Some(observed) = &observed {
        observed.readiness.set(READY_TELEGRAM, true);
    }
    let platform = Platform::from_settings(settings, messenger).await?;
    if let Some(observed) = observed {
        let _ = observed.platform.set(platform.clone());
        observed.readiness.set(READY_DEPLOYER, true);
    }
    Ok(Arc::new(PlatformEngine(platform)))
}

/// The platform as the bot's [`Engine`].
struct PlatformEngine(Platform);

#[async_trait]
impl Engine for PlatformEngine {
    async fn start(&self) -> anyhow::Result<()> {
        Ok(self.0.start().await?)
    }

    async fn handle(&self, input: Input) {
        // The platform has already told the user and logged the failure.
        let _ = self.0.handle(input).await;
    }

    async fn shutdown(&self) {
        self.0.shutdown().await;
    }
}
