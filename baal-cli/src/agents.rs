//! `baal-cli agents …`

use std::process::ExitCode;

use baal_core::config::Settings;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// List agents (a table; `--json` for scripts).
    List {
        /// Only this owner's agents (Telegram user id).
        #[arg(long)]
        owner: Option<i64>,
        /// Only agents in this status (pending, deploying, running, failed, stopped).
        #[arg(long)]
        status: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one agent with its deployment history.
    Show {
        /// Agent id.
        id: String,
    },
    /// Delete an agent: destroy where it runs, then mark it deleted.
    Delete {
        /// Agent id.
        id: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

pub async fn run(_settings: &Settings, _command: AgentsCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`agents` is not built yet")
}
