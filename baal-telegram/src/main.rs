//! `baal-telegram`: the Baal bot on Telegram. A thin adapter: Telegram updates become
//! `baal_core::platform` inputs, and the platform's `Messenger` calls become Telegram messages.

use std::process::ExitCode;

use clap::Parser;

/// Run the Baal Telegram bot.
#[derive(Debug, Parser)]
#[command(name = "baal-telegram", version, about, long_about = None)]
struct Cli {}

fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let _cli = Cli::parse();
    eprintln!("baal-telegram: the Telegram front-end is not built yet (issue #6); nothing was started.");
    ExitCode::from(2)
}
