//! `baal-agent`: one Baal agent. An HTTP server (poem) over `baal_core::agent`, configured from
//! the environment (or a settings file written by the deployer), talking to LibertAI.
//!
//! Prints `listening on ADDR` on stdout once it accepts connections (the local deployer reads
//! it). Exit codes: 0 after a clean shutdown (SIGTERM, Ctrl-C), 2 for bad settings, 1 when it
//! cannot start (database, a Python agent's history it cannot carry over, workspace, port).

mod listen;
mod server;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use baal_core::agent::auth::BearerCheck;
use baal_core::agent::context::Workspace;
use baal_core::agent::history::History;
use baal_core::agent::python_history::{self, CarryOver};
use baal_core::agent::settings::AgentSettings;
use baal_core::agent::tools::sandbox::harden_process;
use baal_core::agent::tools::workspace::Workspace as PathGate;
use baal_core::agent::tools::{ToolConfig, ToolSet};
use baal_core::agent::{Agent, AgentConfig};
use baal_core::agent_env::SECRET_VARIABLES;
use baal_core::inference::{ClientOptions, OpenAiClient, RetryPolicy};
use clap::Parser;

/// Run one Baal agent: `POST /chat` (SSE), `GET /pending`, `GET /files/{path}`, `GET /health`.
#[derive(Debug, Parser)]
#[command(name = "baal-agent", version, about, long_about = None)]
struct Cli {
    /// Settings file (`KEY=value` lines or a JSON object) with the same names as the environment;
    /// the environment wins where both set a value.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match AgentSettings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("baal-agent: {e}");
            return ExitCode::from(2);
        }
    };
    // Still single-threaded here: the only moment removing variables is sound. Children (tool
    // processes) then cannot inherit the secrets.
    for name in SECRET_VARIABLES {
        // SAFETY: no other thread exists yet (the runtime is built below).
        unsafe { std::env::remove_var(name) };
    }
    // The initial environment in /proc/<pid>/environ still holds the secrets: close it (and
    // /proc/<pid>/mem) to same-user tool processes.
    let hardened = harden_process();
    baal_core::ops::init_logs(settings.log_format, "info");
    if let Err(e) = hardened {
        tracing::warn!(error = %e, "could not make the agent non-dumpable; tool processes may read its memory");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("baal-agent: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(settings, cli.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baal-agent: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(settings: AgentSettings, config_file: Option<PathBuf>) -> anyhow::Result<()> {
    // First, so that nothing the agent does goes uncounted.
    let metrics = baal_core::telemetry::install().context("cannot start the metrics recorder")?;
    let workspace = Workspace::prepare(&settings.workspace_path)
        .with_context(|| format!("cannot prepare the workspace {}", settings.workspace_path.display()))?;
    let history = History::open(&settings.db_path)
        .await
        .with_context(|| format!("cannot open the database {}", settings.db_path.display()))?;
    if let Some(python_db) = &settings.python_agent_db {
        carry_over_python_history(&history, python_db, settings.owner_chat_id.as_deref()).await?;
    }
    let mut options = ClientOptions::default();
    options.read_timeout = settings.llm_read_timeout;
    options.retry = RetryPolicy::new(2, settings.llm_retry_delay);
    let inference = OpenAiClient::new(&settings.libertai_api_base_url, settings.libertai_api_key.clone(), options)
        .context("cannot build the inference client")?;
    let auth = BearerCheck::new(&settings.agent_secret);
    let tool_config = tool_config(&settings, workspace.root(), config_file.as_deref());
    let files = PathGate::new(workspace.root()).with_sensitive_names(tool_config.sensitive_names.clone());
    let tools = ToolSet::standard(tool_config);
    let agent = Agent::new(AgentConfig::from_settings(&settings), Arc::new(inference), tools, history, workspace);
    if !settings.heartbeat_interval.is_zero() {
        agent.spawn_heartbeat(settings.heartbeat_interval);
    }
    let state = server::AppState {
        agent,
        name: settings.agent_name.clone(),
        files,
        max_chat_body_bytes: usize::try_from(settings.max_chat_body_bytes).unwrap_or(usize::MAX),
        metrics,
    };
    let limits = listen::Limits {
        max_connections: settings.max_connections as usize,
        header_read_timeout: settings.header_read_timeout,
    };
    let bind = SocketAddr::new(settings.bind_addr, settings.port);
    // The settings (and the secrets they hold) are not needed past this point.
    drop(settings);

    let listener = tokio::net::TcpListener::bind(bind).await.with_context(|| format!("cannot listen on {bind}"))?;
    let local = listener.local_addr().context("cannot read the bound address")?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {local}").context("cannot write to stdout")?;
        stdout.flush().context("cannot write to stdout")?;
    }
    tracing::info!(%local, "agent ready");
    listen::serve(listener, server::app(state, auth), limits, shutdown_signal())
        .await
        .context("the HTTP server failed")?;
    tracing::info!("agent stopped");
    Ok(())
}

/// Fails the start when the history cannot be carried over: the deployer converting the agent
/// then puts the Python agent back, which still has it all.
async fn carry_over_python_history(history: &History, python_db: &Path, owner: Option<&str>) -> anyhow::Result<()> {
    match python_history::carry_over(history, python_db, owner).await? {
        CarryOver::Imported { messages, pending, chats } => {
            let from = python_db.display();
            tracing::info!(messages, pending, chats, %from, "the Python agent's history was carried over");
        }
        CarryOver::AlreadyDone { source, imported_at } => {
            tracing::debug!(%source, %imported_at, "the Python agent's history was carried over before");
        }
        _ => {}
    }
    Ok(())
}

fn tool_config(settings: &AgentSettings, workspace: &Path, config_file: Option<&Path>) -> ToolConfig {
    let mut config = ToolConfig::new(workspace);
    config.tools_user = settings.tools_user.clone();
    config.max_open_files = settings.tools_max_open_files;
    config.max_file_size_bytes = settings.tools_max_file_size_mib.saturating_mul(1024 * 1024);
    config.max_processes = settings.tools_max_processes;
    config.max_memory_bytes = settings.tools_max_memory_mib.map(|mib| mib.saturating_mul(1024 * 1024));
    config.network = settings.tools_network;
    config.web_fetch_allow = settings.web_fetch_allow.clone();
    config.brave_api_key = settings.brave_api_key.clone();
    if let Some(url) = &settings.brave_api_url {
        config.brave_api_url = url.clone();
    }
    // The settings file holds the secrets: no tool may read it, whatever its name.
    if let Some(name) = config_file.and_then(Path::file_name).and_then(|n| n.to_str()) {
        config.sensitive_names.push(name.to_owned());
    }
    // The Python agent's database holds every conversation as much as ours does.
    let databases = [Some(&settings.db_path), settings.python_agent_db.as_ref()];
    for name in databases.into_iter().flatten().filter_map(|p| p.file_name()).filter_map(|n| n.to_str()) {
        for suffix in ["", "-wal", "-shm"] {
            let name = format!("{name}{suffix}");
            if !config.sensitive_names.contains(&name) {
                config.sensitive_names.push(name);
            }
        }
    }
    config
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
