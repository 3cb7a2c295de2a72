//! `baal-agent`: one Baal agent. An HTTP server (poem) over `baal_core::agent`, configured from
//! the environment (or a settings file written by the deployer), talking to LibertAI.

use std::process::ExitCode;

use clap::Parser;

/// Run one Baal agent: `POST /chat` (SSE), `GET /pending`, `GET /files/{path}`, `GET /health`.
#[derive(Debug, Parser)]
#[command(name = "baal-agent", version, about, long_about = None)]
struct Cli {}

fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let _cli = Cli::parse();
    eprintln!("baal-agent: the agent server is not built yet (issue #3); nothing was started.");
    ExitCode::from(2)
}
