//! `baal-cli doctor` and `baal-cli migrate`.

use std::process::ExitCode;

use baal_core::config::Settings;

pub async fn run(_settings: &Settings) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`doctor` is not built yet")
}

pub async fn migrate(_settings: &Settings) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`migrate` is not built yet")
}
