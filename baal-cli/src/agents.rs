//! `baal-cli agents …`: list, show and delete agents. Nothing here prints a secret: sealed values
//! appear only as "set" or "unset".

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::process::ExitCode;

use std::sync::Arc;

use anyhow::Context as _;
use baal_core::config::Settings;
use baal_core::deploy::{DeployError, DeployReporter, DeployStep, Deployer};
use baal_core::domain::{Agent, AgentId, AgentRuntime, AgentStatus, Deployment};
use baal_core::platform::{Converted, DeleteError, Deleted, Platform, delete_agent, deployer_from_settings};
use baal_core::store::{AgentFilter, SqlStore, Store};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde::Serialize;

use crate::{open_store, print_listing, print_table};

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
    /// Convert agents imported from the Python Baal to this Baal's agent where they run: their
    /// workspace and history come along, and the Python agent is put back if ours does not start.
    Convert {
        /// Agent ids.
        #[arg(required_unless_present = "all")]
        ids: Vec<String>,
        /// Every imported agent not converted yet.
        #[arg(long, alias = "convert-all", conflicts_with = "ids")]
        all: bool,
    },
}

pub async fn run(settings: &Settings, command: AgentsCommand) -> anyhow::Result<ExitCode> {
    match command {
        AgentsCommand::List { owner, status, json } => list(settings, owner, status.as_deref(), json).await,
        AgentsCommand::Show { id } => show(settings, &id).await,
        AgentsCommand::Delete { id, yes } => delete(settings, &id, yes).await,
        AgentsCommand::Convert { ids, all } => convert(settings, &ids, all).await,
    }
}

async fn convert(settings: &Settings, raw_ids: &[String], all: bool) -> anyhow::Result<ExitCode> {
    let ids = match all {
        true => {
            let store = open_store(settings).await?;
            let agents = store.list_agents(&AgentFilter::all()).await?;
            agents.into_iter().filter(|a| a.runtime == AgentRuntime::Python).map(|a| a.id).collect()
        }
        false => raw_ids.iter().map(|raw| parse_id(raw)).collect::<anyhow::Result<Vec<_>>>()?,
    };
    if ids.is_empty() {
        println!("No imported agent is left to convert.");
        return Ok(ExitCode::SUCCESS);
    }
    let messenger = Arc::new(crate::console::ConsoleMessenger::default());
    let platform = Platform::from_settings(settings.clone(), messenger).await.context("cannot set up Baal")?;
    let mut failed = 0;
    for (done, id) in ids.iter().enumerate() {
        println!("[{}/{}] agent {id}", done + 1, ids.len());
        // The console's chat: what the job would tell the owner is printed here instead.
        let outcome = platform.convert_imported(*id, 0).await.context("the conversion stopped")?;
        match outcome {
            Converted::Converted => {}
            Converted::NotImported => println!("Agent {id} already runs this Baal's agent; nothing to do."),
            Converted::NoSuchAgent => {
                eprintln!("No agent {id} (or it is deleted). `baal-cli agents list` shows them.");
                failed += 1;
            }
            Converted::Busy => {
                eprintln!("Agent {id} is being deployed or deleted by someone else; try again in a minute.");
                failed += 1;
            }
            _ => {
                eprintln!("Agent {id} was not converted (above: why); `baal-cli agents show {id}` has its history.");
                failed += 1;
            }
        }
    }
    platform.shutdown().await;
    let converted = ids.len() - failed;
    println!("{converted} of {} converted.", ids.len());
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// What `agents list --json` prints per agent: every fact an operator needs, no secret.
#[derive(Debug, Serialize)]
struct AgentSummary<'a> {
    id: i64,
    owner_id: i64,
    name: &'a str,
    model: &'a str,
    status: AgentStatus,
    deleted: bool,
    runtime: AgentRuntime,
    python_id: Option<i64>,
    slug: &'a str,
    vm_url: Option<&'a str>,
    instance_hash: Option<&'a str>,
    crn_url: Option<&'a str>,
    token: &'static str,
    visitor_tools: &'a [String],
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl<'a> From<&'a Agent> for AgentSummary<'a> {
    fn from(agent: &'a Agent) -> Self {
        AgentSummary {
            id: agent.id.0,
            owner_id: agent.owner_id,
            name: &agent.name,
            model: &agent.model,
            status: agent.status,
            deleted: agent.deleted,
            runtime: agent.runtime,
            python_id: agent.python_id,
            slug: &agent.slug,
            vm_url: agent.deployment.vm_url.as_deref(),
            instance_hash: agent.deployment.instance_hash.as_deref(),
            crn_url: agent.deployment.crn_url.as_deref(),
            token: set_or_unset(agent.token_sealed.is_some()),
            visitor_tools: &agent.visitor_tools,
            created_at: agent.created_at,
            updated_at: agent.updated_at,
        }
    }
}

async fn list(settings: &Settings, owner: Option<i64>, status: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let mut filter = AgentFilter::all();
    if let Some(owner) = owner {
        filter = filter.owner(owner);
    }
    if let Some(status) = status {
        filter = filter.status(status.parse::<AgentStatus>()?);
    }
    let store = open_store(settings).await?;
    let agents = store.list_agents(&filter).await?;
    let summaries: Vec<AgentSummary<'_>> = agents.iter().map(AgentSummary::from).collect();
    print_listing(json, &summaries, "No agents.", &["ID", "OWNER", "STATUS", "MODEL", "NAME", "URL", "CREATED"], |a| {
        vec![
            a.id.to_string(),
            a.owner_id.to_string(),
            match a.runtime {
                AgentRuntime::Baal => a.status.to_string(),
                AgentRuntime::Python => format!("{} (python)", a.status),
            },
            a.model.to_owned(),
            a.name.to_owned(),
            a.vm_url.unwrap_or("-").to_owned(),
            a.created_at.format("%Y-%m-%d %H:%M").to_string(),
        ]
    })
}

fn set_or_unset(set: bool) -> &'static str {
    if set { "set" } else { "unset" }
}

fn parse_id(raw: &str) -> anyhow::Result<AgentId> {
    raw.parse::<AgentId>()
        .with_context(|| format!("{raw:?} is not an agent id: pass the number shown by `agents list`"))
}

/// The agent with `raw` id, or `None` after saying that no such agent exists.
async fn find_agent(store: &SqlStore, raw: &str) -> anyhow::Result<Option<Agent>> {
    let id = parse_id(raw)?;
    let agent = store.agent_get(id).await?;
    if agent.is_none() {
        eprintln!("No agent with id {id}. See `baal-cli agents list`.");
    }
    Ok(agent)
}

async fn show(settings: &Settings, raw_id: &str) -> anyhow::Result<ExitCode> {
    let store = open_store(settings).await?;
    let Some(agent) = find_agent(&store, raw_id).await? else {
        return Ok(ExitCode::FAILURE);
    };
    let owner = store.user_get(agent.owner_id).await?;
    let owner_text = match owner.and_then(|u| u.username) {
        Some(name) => format!("{} (@{name})", agent.owner_id),
        None => agent.owner_id.to_string(),
    };
    let or_dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
    let deployment = &agent.deployment;
    let tools = if agent.visitor_tools.is_empty() { "none".to_owned() } else { agent.visitor_tools.join(", ") };
    let fields = [
        ("Agent", format!("{} \"{}\"", agent.id, agent.name)),
        ("Owner", owner_text),
        ("Model", agent.model.clone()),
        ("Status", format!("{}{}", agent.status, if agent.deleted { " (deleted)" } else { "" })),
        ("Share slug", agent.slug.clone()),
        (
            "Runtime",
            match (agent.runtime, agent.python_id) {
                (AgentRuntime::Python, _) => "python (imported; `agents convert` upgrades it)".to_owned(),
                (AgentRuntime::Baal, Some(old)) => format!("baal (imported from the Python Baal's agent {old})"),
                (AgentRuntime::Baal, None) => "baal".to_owned(),
            },
        ),
        ("Visitor tools", tools),
        ("Token", set_or_unset(agent.token_sealed.is_some()).to_owned()),
        ("VM URL", or_dash(&deployment.vm_url)),
        ("Instance", or_dash(&deployment.instance_hash)),
        ("CRN", or_dash(&deployment.crn_url)),
        (
            "SSH",
            match (&deployment.vm_host, deployment.ssh_port) {
                (Some(host), Some(port)) => format!("{host}:{port}"),
                (Some(host), None) => host.clone(),
                _ => "-".into(),
            },
        ),
        ("SSH host key", if deployment.ssh_host_key.is_some() { "pinned" } else { "not pinned" }.to_owned()),
        ("Created", agent.created_at.to_rfc3339()),
        ("Updated", agent.updated_at.to_rfc3339()),
    ];
    let label_width = fields.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    for (label, value) in &fields {
        println!("{label:<label_width$}  {value}");
    }
    println!("Prompt:");
    for line in agent.system_prompt.lines() {
        println!("  {line}");
    }

    let events = store.events_for(agent.id).await?;
    println!();
    if events.is_empty() {
        println!("Deployment history: none");
    } else {
        println!("Deployment history:");
        let rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                vec![
                    e.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    e.step.to_string(),
                    e.outcome.to_string(),
                    e.detail.clone().unwrap_or_default(),
                ]
            })
            .collect();
        print_table(&["WHEN (UTC)", "STEP", "OUTCOME", "DETAIL"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}

async fn delete(settings: &Settings, raw_id: &str, yes: bool) -> anyhow::Result<ExitCode> {
    let store = open_store(settings).await?;
    let Some(agent) = find_agent(&store, raw_id).await? else {
        return Ok(ExitCode::FAILURE);
    };
    if agent.deleted {
        eprintln!("Agent {} \"{}\" is already deleted.", agent.id, agent.name);
        return Ok(ExitCode::FAILURE);
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            eprintln!(
                "Not deleting agent {} \"{}\": there is no terminal to confirm on. Pass --yes to delete without asking.",
                agent.id, agent.name
            );
            return Ok(ExitCode::FAILURE);
        }
        if !confirm(&format!("Delete agent {} \"{}\"? [y/N] ", agent.id, agent.name))? {
            println!("Nothing deleted.");
            return Ok(ExitCode::FAILURE);
        }
    }

    let store = Arc::new(store);
    let deployer = || set_up_deployer(settings, store.clone(), agent.id);
    let (id, name) = (agent.id, &agent.name);
    match delete_agent(store.as_ref(), id, "by baal-cli", deployer, &PrintedSteps).await {
        Ok(Deleted::TornDown) => {}
        Ok(Deleted::NothingToTearDown) => println!("Agent {id} has no recorded deployment; nothing to tear down."),
        Err(DeleteError::Teardown { reason, .. }) => {
            // The agent stays visible (and deletable again) rather than hiding something still running.
            eprintln!("Agent {id} \"{name}\" was NOT deleted: {reason}");
            eprintln!("Fix the cause and run the command again; nothing was marked deleted.");
            return Ok(ExitCode::FAILURE);
        }
        Err(DeleteError::AlreadyDeleted { .. }) => {
            eprintln!("Agent {id} was deleted by someone else meanwhile.");
            return Ok(ExitCode::FAILURE);
        }
        Err(DeleteError::Store(err)) => return Err(err.into()),
        Err(refusal) => {
            eprintln!("Agent {id} \"{name}\" was NOT deleted: {refusal}.");
            return Ok(ExitCode::FAILURE);
        }
    }
    println!("Agent {id} \"{name}\" is deleted.");
    Ok(ExitCode::SUCCESS)
}

/// The deployer the settings select, set up only when there is something to tear down (setting
/// up the local one probes the host).
fn set_up_deployer(settings: &Settings, store: Arc<SqlStore>, agent: AgentId) -> Result<Arc<dyn Deployer>, String> {
    let deployer =
        deployer_from_settings(settings, store).map_err(|err| format!("cannot set up the deployer: {err}"))?;
    println!("Tearing down agent {agent} with the {} deployer:", deployer.name());
    Ok(deployer)
}

/// Prints each teardown step as it starts and ends, so an operator sees where a slow or failed
/// teardown is.
struct PrintedSteps;

#[async_trait::async_trait]
impl DeployReporter for PrintedSteps {
    async fn step_started(&self, step: DeployStep) {
        println!("  … {}", step.label);
    }

    async fn step_done(&self, step: DeployStep) {
        println!("  ✓ {}", step.label);
    }

    async fn facts(&self, _deployment: &Deployment) -> Result<(), DeployError> {
        Ok(())
    }
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    let mut stdout = std::io::stdout();
    write!(stdout, "{question}")?;
    stdout.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}
