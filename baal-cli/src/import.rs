//! `baal-cli import python`: the Python Baal's users, agents and warm VMs into this platform's
//! database, through `baal_core::import::python`. The Python Baal's key is read from
//! `PYTHON_BOT_ENCRYPTION_KEY` (environment or `.env`) or a file, never from the command line,
//! where `ps` and shell history would keep it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use baal_core::config::Settings;
use baal_core::env::SettingError;
use baal_core::import::python::{
    self, AgentAction, AgentLine, Plan, PoolCounts, Progress, PythonKey, Report, Snapshot,
};
use baal_core::platform::{ENCRYPTION_KEY_FILE, secret_box_from_settings};
use baal_core::secrets::SecretBox;
use clap::Subcommand;
use secrecy::SecretString;

use crate::open_store;

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// The Python Baal's baal.db (and pool.db): its users, active agents and warm VMs, every
    /// secret sealed again under BOT_ENCRYPTION_KEY. Its own key comes from
    /// PYTHON_BOT_ENCRYPTION_KEY (environment or .env) or --python-key-file. Stop both bots first.
    Python(PythonArgs),
}

#[derive(Debug, clap::Args)]
pub struct PythonArgs {
    /// The Python Baal's baal.db (its DB_PATH), opened read-only.
    #[arg(long, value_name = "PATH")]
    db: PathBuf,
    /// Its pool.db (POOL_DB_PATH), opened read-only: warm VMs join this platform's pool.
    #[arg(long, value_name = "PATH")]
    pool_db: Option<PathBuf>,
    /// Say what the import would do; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// A file holding the Python Baal's key (its BOT_ENCRYPTION_KEY), instead of
    /// PYTHON_BOT_ENCRYPTION_KEY.
    #[arg(long, value_name = "PATH")]
    python_key_file: Option<PathBuf>,
    /// Print the report as JSON (progress still goes to standard error).
    #[arg(long)]
    json: bool,
}

pub async fn run(settings: &Settings, command: ImportCommand) -> anyhow::Result<ExitCode> {
    match command {
        ImportCommand::Python(args) => import_python(settings, &args).await,
    }
}

async fn import_python(settings: &Settings, args: &PythonArgs) -> anyhow::Result<ExitCode> {
    let mut source = python::Source::new(&args.db);
    if let Some(pool_db) = &args.pool_db {
        source = source.with_pool_db(pool_db);
    }
    python::check_apart(&source, &settings.database_url)?;
    let key = python_key(settings, args.python_key_file.as_deref())?;
    // Everything read and opened before this platform's key or database is touched.
    let snapshot = Snapshot::read(&source, &key)?;
    let secrets = sealing_key(settings, args.dry_run)?;
    let store = open_store(settings).await?;
    let plan = Plan::new(snapshot, &store, &secrets).await?;
    let report = if args.dry_run {
        plan.report()
    } else {
        let mut progress = progress_lines(plan.writes());
        plan.apply(&store, &secrets, &mut progress).await?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, args.pool_db.is_some());
    }
    Ok(ExitCode::SUCCESS)
}

/// The Python Baal's key: `--python-key-file`, else `PYTHON_BOT_ENCRYPTION_KEY`.
fn python_key(settings: &Settings, file: Option<&Path>) -> anyhow::Result<PythonKey> {
    if let Some(path) = file {
        let origin = format!("--python-key-file {}", path.display());
        let text = std::fs::read_to_string(path).map_err(|err| {
            SettingError::new(
                &origin,
                format!("cannot be read ({err})"),
                "give the file that holds the Python Baal's key",
            )
        })?;
        return Ok(PythonKey::from_secret(&SecretString::from(text), &origin)?);
    }
    let key = settings.python_bot_encryption_key.as_ref().ok_or_else(|| {
        SettingError::missing(
            "PYTHON_BOT_ENCRYPTION_KEY",
            "give it the Python Baal's BOT_ENCRYPTION_KEY (in the environment or in .env), or give \
             --python-key-file",
        )
    })?;
    Ok(PythonKey::from_secret(key, "PYTHON_BOT_ENCRYPTION_KEY")?)
}

/// This platform's sealing key. A dry run never creates the key file: with none yet, nothing in
/// the database was sealed with it, and any throwaway key plans the same.
fn sealing_key(settings: &Settings, dry_run: bool) -> anyhow::Result<SecretBox> {
    let no_key_yet = settings.bot_encryption_key.is_none() && !settings.data_dir.join(ENCRYPTION_KEY_FILE).exists();
    if dry_run && no_key_yet {
        return Ok(SecretBox::from_secret(&baal_core::secrets::generate_key()?)?);
    }
    Ok(secret_box_from_settings(settings)?)
}

/// A line on standard error every 5 % (at most every 100 writes), and at the end.
fn progress_lines(total: usize) -> impl FnMut(Progress) + Send {
    let every = (total / 20).max(100);
    move |p: Progress| {
        if p.done.is_multiple_of(every) || p.done == p.total {
            eprintln!("import: {}/{} written ({}%)", p.done, p.total, p.done * 100 / p.total.max(1));
        }
    }
}

fn print_report(report: &Report, pool_read: bool) {
    if report.dry_run {
        println!("Dry run: nothing was written. The import would do this:");
    }
    for line in &report.agent_lines {
        println!("{}", agent_line(line));
    }
    let users = &report.users;
    println!(
        "Users: {} created, {} given their Python key, {} already here.",
        users.created, users.key_added, users.unchanged
    );
    if !users.kept_keys.is_empty() {
        let ids: Vec<String> = users.kept_keys.iter().map(i64::to_string).collect();
        println!("  Kept their own key here (it differs from their Python one): {}", ids.join(", "));
    }
    let agents = &report.agents;
    println!(
        "Agents: {} created, {} finished (an earlier import was cut off), {} already here, {} deleted in Python \
         (skipped).",
        agents.created, agents.resumed, agents.unchanged, agents.inactive_skipped
    );
    match &report.pool {
        Some(pool) => print_pool(pool),
        None if pool_read => {}
        None => println!("Pool: not read (no --pool-db): the Python Baal's warm VMs are not imported."),
    }
    if !report.changed() {
        println!("Nothing to change: everything was imported before.");
    } else if report.dry_run {
        println!("Run again without --dry-run to import.");
    }
}

fn agent_line(line: &AgentLine) -> String {
    let action = match (line.action, line.agent_id) {
        (AgentAction::Create, Some(id)) => format!("created as agent {id}"),
        (AgentAction::Create, None) => "create".to_owned(),
        (AgentAction::Resume, id) => format!("finish agent {}", id.map_or_else(|| "?".into(), |id| id.to_string())),
        (AgentAction::Unchanged, id) => {
            format!("already agent {}, unchanged", id.map_or_else(|| "?".into(), |id| id.to_string()))
        }
        (_, _) => "?".to_owned(),
    };
    let note = line.note.map(|note| format!(" ({note})")).unwrap_or_default();
    format!(
        "agent {} → {action}: {:?}, owner {}, {} (Python: {}{note}), paid by {}, VM {}",
        line.python_id,
        line.name,
        line.owner,
        line.status,
        line.python_status,
        line.payer,
        line.instance_hash.as_deref().unwrap_or("none"),
    )
}

fn print_pool(pool: &PoolCounts) {
    println!(
        "Pool: {} warm VM(s) added, {} already here, {} serving agents.",
        pool.added, pool.unchanged, pool.serving_agents
    );
    if !pool.possible_leaks.is_empty() {
        println!(
            "  Not imported, possibly still paid for (check with `baal-cli aleph reconcile`, forget with \
             --forget-unknown):"
        );
        for leak in &pool.possible_leaks {
            let hash = leak.instance_hash.as_deref().unwrap_or("no instance hash recorded");
            println!("  - pool.db row {} ({}): {hash}", leak.python_row, leak.status);
        }
    }
}
