//! `baal-cli aleph …`: inspect what Baal would post to Aleph Cloud, and the operator's account.

use std::process::ExitCode;

use baal_core::config::Settings;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum AlephCommand {
    /// Print the signed message a deployment or delete would post, without posting it.
    #[command(subcommand)]
    Sign(SignCommand),
    /// Show the operator's address, credit balance and the CRNs that pass the filters.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum SignCommand {
    /// An INSTANCE message for a new agent VM.
    Instance {
        /// The VM's metadata name.
        #[arg(long)]
        name: String,
    },
    /// A FORGET message for instance hashes.
    Forget {
        /// Item hashes to forget.
        #[arg(required = true)]
        hashes: Vec<String>,
    },
}

pub async fn run(_settings: &Settings, _command: AlephCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the Aleph Cloud deployer is not built yet (issue #5); nothing was signed or posted")
}
