//! `baal-cli doctor` and `baal-cli migrate`.
//!
//! Doctor prints one line per check: ✓ in place, ! a note (Baal runs, with the consequence
//! named), ✗ a problem with how to fix it; it exits non-zero only on problems. The settings
//! findings are the core's (`platform::settings_report`, `Settings::telegram_checks`), the same
//! answers the platform acts on when it starts. It never prints a secret, only whether it is set
//! and usable.

use std::process::ExitCode;

use baal_core::config::{DeployerKind, Finding, Settings, Severity, redact_url_password};
use baal_core::deploy::Tenancy;
use baal_core::deploy::isolation::Isolation;
use baal_core::platform;
use baal_core::store::SqlStore;
use clap::Args;

use crate::open_store;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Check for the terminal console (`baal-cli console`) only: no Telegram settings needed.
    #[arg(long)]
    pub console: bool,
}

/// Counts what failed while printing each finding as it is made.
#[derive(Default)]
struct Report {
    problems: usize,
    notes: usize,
}

impl Report {
    fn section(&self, title: &str) {
        println!("\n{title}");
    }

    fn pass(&mut self, text: &str) {
        println!("  ✓ {text}");
    }

    /// A finding that limits what Baal offers without stopping it from running.
    fn note(&mut self, text: &str) {
        self.notes += 1;
        println!("  ! {text}");
    }

    fn fail(&mut self, text: &str) {
        self.problems += 1;
        println!("  ✗ {text}");
    }

    /// The core's findings, each as it is.
    fn findings(&mut self, findings: &[Finding]) {
        for finding in findings {
            match finding.severity {
                Severity::Ok => self.pass(&finding.text),
                Severity::Note => self.note(&finding.text),
                _ => self.fail(&finding.text),
            }
        }
    }

    /// The file a setting names exists.
    fn file(&mut self, variable: &str, path: &std::path::Path, fix: &str) {
        if path.is_file() {
            self.pass(&format!("{variable} points at {}", path.display()));
        } else {
            self.fail(&format!("{variable}: no file at {}; {fix}", path.display()));
        }
    }

    fn finish(self) -> ExitCode {
        println!();
        if self.problems == 0 && self.notes > 0 {
            println!("Baal can run as configured; the ! lines above say what follows from the settings.");
            ExitCode::SUCCESS
        } else if self.problems == 0 {
            println!("Everything Baal needs is in place.");
            ExitCode::SUCCESS
        } else {
            println!("{} problem(s) to fix before Baal can run; see the ✗ lines above.", self.problems);
            ExitCode::FAILURE
        }
    }
}

pub async fn run(settings: anyhow::Result<Settings>, args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut report = Report::default();
    report.section("Settings");
    let settings = match settings {
        Ok(settings) => {
            report.pass("settings read from the environment and .env");
            settings
        }
        Err(err) => {
            report.fail(&format!("{err:#}"));
            return Ok(report.finish());
        }
    };

    report.section("Core");
    report.findings(&platform::settings_report(&settings));
    let shown_url = redact_url_password(&settings.database_url);
    match SqlStore::open(&settings.database_url).await {
        Ok(store) => {
            let backend = if store.is_postgres() { "PostgreSQL" } else { "SQLite" };
            report.pass(&format!("database {shown_url} opens and is migrated ({backend})"));
            let _ = store.close().await;
        }
        Err(err) => report.fail(&err.to_string()),
    }

    if args.console {
        report.section("Front-end: console");
        report.pass("the console needs nothing beyond the core");
    } else {
        check_telegram(&settings, &mut report);
    }
    check_deployer(&settings, &mut report);
    Ok(report.finish())
}

fn check_telegram(settings: &Settings, report: &mut Report) {
    report.section("Front-end: Telegram (baal-telegram; use --console to check for the console instead)");
    report.findings(&settings.telegram_checks());
}

fn check_deployer(settings: &Settings, report: &mut Report) {
    report.section("Deployer");
    match settings.deployer_kind() {
        DeployerKind::Aleph => match settings.require_aleph() {
            Err(err) => report.fail(&err.to_string()),
            Ok(_) => {
                report.pass("Aleph Cloud selected (ALEPH_PRIVATE_KEY and ALEPH_SSH_PUBKEY are set)");
                report.file(
                    "ALEPH_SSH_PRIVKEY_PATH",
                    &settings.aleph_ssh_privkey_path,
                    "point it at the private key matching ALEPH_SSH_PUBKEY",
                );
            }
        },
        DeployerKind::Local => {
            report.pass(&format!(
                "local deployer selected: agents run as processes on this machine, data in {} \
                 (set ALEPH_PRIVATE_KEY to deploy on Aleph Cloud)",
                settings.data_dir.display()
            ));
            check_isolation(settings, report);
        }
        // A kind added later is reported until doctor learns its checks.
        _ => report.pass("a deployer is selected"),
    }
    if let Some(bin) = &settings.agent_bin {
        report.file("BAAL_AGENT_BIN", bin, "build it with `cargo build --release -p baal-agent`, or unset it");
    }
}

/// What this host lets the local deployer enforce between tenants, and who may create agents.
fn check_isolation(settings: &Settings, report: &mut Report) {
    let isolation = Isolation::probe();
    report.section("Isolation of local agents");
    println!("  host: {isolation}");
    for boundary in isolation.enforced() {
        report.pass(&format!("holds: {}", boundary.describe()));
    }
    for (boundary, why) in isolation.missing() {
        report.note(&format!("does not hold: {} ({why})", boundary.describe()));
    }
    println!("  tools reach: {}", isolation.tools_network());
    match isolation.limit_mechanism() {
        Some(mechanism) => println!("  limits per agent: {mechanism}"),
        None => println!("  limits per agent: none; each tool process gets rlimits (address space, processes)"),
    }
    match isolation.tenancy(settings.local_agents_open_without_isolation) {
        Tenancy::Everyone if isolation.missing().is_empty() => {
            report.pass("level: multi-tenant; anyone may create local agents")
        }
        Tenancy::Everyone => report.note(
            "level: open without full isolation (LOCAL_AGENTS_OPEN_WITHOUT_ISOLATION=true): anyone may create \
             local agents, and their tools may reach what does not hold above",
        ),
        _ => report.note(
            "level: single-tenant; only ADMIN_USER_IDS (and the console's user) may create local agents \
             (LOCAL_AGENTS_OPEN_WITHOUT_ISOLATION=true opens them to everyone anyway)",
        ),
    }
}

pub async fn migrate(settings: &Settings) -> anyhow::Result<ExitCode> {
    let store = open_store(settings).await?;
    let _ = store.close().await;
    println!("Database {} is migrated and up to date.", redact_url_password(&settings.database_url));
    Ok(ExitCode::SUCCESS)
}
