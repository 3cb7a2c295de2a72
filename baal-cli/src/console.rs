//! `baal-cli console`: Baal in a terminal, for one local user who is also an admin.

use std::process::ExitCode;

use baal_core::config::Settings;
use clap::Args;

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// The local user's id (also their chat id).
    #[arg(long, default_value_t = 1)]
    pub user_id: i64,
}

pub async fn run(_settings: Settings, _args: ConsoleArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the console needs the platform, which is not built yet (issue #4)")
}
