//! `baal-cli users …`

use std::process::ExitCode;

use baal_core::config::Settings;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// List users with their agent counts and today's usage.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(_settings: &Settings, _command: UsersCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`users` is not built yet")
}
