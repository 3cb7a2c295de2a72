//! `baal-cli`: the operator's tool. Lists and deletes agents, shows users and usage (messages,
//! and tokens with their estimated cost), generates keys, checks the setup, runs migrations,
//! signs Aleph messages for inspection, reconciles the wallet's Aleph instances with the database,
//! imports the Python Baal's databases, and runs `console`, a terminal front-end over the platform.

#![forbid(unsafe_code)]

mod agents;
mod aleph;
mod console;
mod doctor;
mod import;
mod usage;
mod users;

use std::process::ExitCode;

use baal_core::config::Settings;
use baal_core::ops::LogFormat;
use baal_core::store::SqlStore;
use clap::{Parser, Subcommand};

/// Operate a Baal platform.
#[derive(Debug, Parser)]
#[command(name = "baal-cli", version, about, long_about = None)]
struct Cli {
    /// Database URL (SQLite `sqlite://baal.db?mode=rwc` or `postgres://…`). Defaults to
    /// DATABASE_URL, then to ./baal.db.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List, show and delete agents.
    #[command(subcommand)]
    Agents(agents::AgentsCommand),
    /// List users.
    #[command(subcommand)]
    Users(users::UsersCommand),
    /// Tokens and estimated cost per agent and cause: today and the last days (a table; `--json`
    /// for scripts).
    Usage(usage::UsageArgs),
    /// Print a fresh BOT_ENCRYPTION_KEY.
    Keygen,
    /// Run database migrations (they also run whenever Baal opens the database).
    Migrate,
    /// Check the settings and the database and say what is missing and how to fix it.
    Doctor(doctor::DoctorArgs),
    /// Aleph Cloud: inspect signed messages and the operator's account; reconcile the instances the
    /// wallet pays for with the database.
    #[command(subcommand)]
    Aleph(aleph::AlephCommand),
    /// Run Baal in this terminal: one local user, commands with `/`, buttons with `!press`.
    Console(console::ConsoleArgs),
    /// Bring another Baal's data into this database: `import python` for the Python Baal's.
    #[command(subcommand)]
    Import(import::ImportCommand),
}

fn main() -> ExitCode {
    // A reader that stops early (`baal-cli doctor | head`) ends the process as it ends any Unix
    // tool, by SIGPIPE, where Rust's default (the signal ignored) makes `println!` panic. The
    // crate holds the one unsafe call (libc `signal`), so this crate keeps forbidding unsafe.
    sigpipe::reset();
    let cli = Cli::parse();
    // Before the settings, so `.env` can hold LOG_FORMAT and RUST_LOG too.
    let _ = dotenvy::dotenv();
    let format = match LogFormat::from_env() {
        Ok(format) => format,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    // Warnings by default (a teardown's trouble reaches the operator), and what the console's
    // platform does; on stderr, so tables and JSON on stdout stay clean. RUST_LOG overrides.
    let default_filter = match &cli.command {
        Command::Console(_) => "warn,baal_core::platform=info",
        _ => "warn",
    };
    baal_core::ops::init_logs(format, default_filter);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            baal_core::ops::exit_code(err.as_ref())
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let database_url = cli.database_url;
    let settings = || load_settings(database_url.clone());
    match cli.command {
        Command::Agents(command) => agents::run(&settings()?, command).await,
        Command::Users(command) => users::run(&settings()?, command).await,
        Command::Usage(args) => usage::run(&settings()?, args).await,
        // Needs no settings: a malformed .env must not stop the operator from making a key.
        Command::Keygen => {
            let key = baal_core::secrets::generate_key()?;
            // The one place a secret is printed on purpose: the operator asked for a new key.
            println!("{}", secrecy::ExposeSecret::expose_secret(&key));
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => doctor::migrate(&settings()?).await,
        // Doctor reports a settings error as one of its findings rather than stopping at it.
        Command::Doctor(args) => doctor::run(settings(), args).await,
        Command::Aleph(command) => aleph::run(&settings()?, command).await,
        Command::Console(args) => console::run(settings()?, args).await,
        Command::Import(command) => import::run(&settings()?, command).await,
    }
}

/// Settings from `.env` and the environment, with `--database-url` taking precedence.
fn load_settings(database_url: Option<String>) -> anyhow::Result<Settings> {
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    if let Some(url) = database_url {
        vars.push(("DATABASE_URL".into(), url));
    }
    Ok(Settings::from_vars(vars)?)
}

/// Opens (and migrates) the database the settings name. The error names the URL, password hidden.
pub(crate) async fn open_store(settings: &Settings) -> anyhow::Result<SqlStore> {
    Ok(SqlStore::open(&settings.database_url).await?)
}

/// Prints `items` as pretty JSON for scripts, or as a table of `row(item)` under `headers` for
/// people (`empty` when there is nothing to show).
pub(crate) fn print_listing<T: serde::Serialize>(
    json: bool,
    items: &[T],
    empty: &str,
    headers: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(items)?);
    } else if items.is_empty() {
        println!("{empty}");
    } else {
        print_table(headers, &items.iter().map(row).collect::<Vec<_>>());
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints rows under headers with every column padded to its widest cell. Hand-written because
/// a table crate would add build time for what is a dozen lines here.
pub(crate) fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell}{}", " ".repeat(width - cell.chars().count())))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
