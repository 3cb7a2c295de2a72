//! # baal-core
//!
//! Baal lets anyone create an AI agent from a chat: the platform deploys it to its own machine
//! with LibertAI inference, and anyone holding the agent's share link chats with it through the
//! bot. This crate is every decision Baal makes; the binaries (`baal-telegram`, `baal-agent`,
//! `baal-cli`) only translate between it and the outside world.
//!
//! ## Architecture
//!
//! The bot's brain is the [`Platform`](platform::Platform). A front-end (Telegram, the terminal
//! console, or your own) turns what a user does into an [`Input`](platform::Input), hands it to
//! [`Platform::handle`](platform::Platform::handle), and renders whatever the platform asks
//! through its implementation of the [`Messenger`](platform::Messenger) trait. The platform owns
//! every command, wizard step, limit and state transition; front-ends never decide anything.
//!
//! The platform keeps users, agents, deployments and usage in a [`Store`](store::Store): the
//! shipped [`SqlStore`](store::SqlStore) speaks SQLite (the default, one file) and PostgreSQL.
//! Secrets at rest (API keys, agent tokens) are sealed with a [`SecretBox`](secrets::SecretBox).
//! Settings come from the environment as [`Settings`](config::Settings), with errors that name
//! the variable to fix.
//!
//! Agents run wherever a [`Deployer`](deploy::Deployer) puts them: the local deployer starts them
//! as child processes of this machine, the Aleph deployer on their own Aleph Cloud VM, and an
//! embedder may bring its own. The platform talks to a running agent over HTTP through a
//! [`Proxy`](proxy::Proxy) ([`HttpProxy`](proxy::http::HttpProxy) in production), streaming
//! [`AgentEvent`](proxy::AgentEvent)s back into the chat.
//!
//! Each agent is the runtime in [`agent`] (served by `baal-agent`): an agentic loop, tools,
//! per-chat history, memory, skills and a heartbeat, calling its model through the
//! [`Inference`](inference::Inference) trait ([`OpenAiClient`](inference::OpenAiClient) for
//! LibertAI or any OpenAI-compatible server).
//!
//! The modules, in dependency order:
//!
//! - [`domain`]: plain data (users, agents, the model catalog).
//! - [`metering`]: what stored usage adds up to (tokens and cost per agent, cause and user), the
//!   one computation every usage view shares.
//! - [`env`](mod@env): the one reader of settings from environment variables, and the settings-file
//!   formats.
//! - [`config`]: the operator's settings, from the environment and `.env`.
//! - [`secrets`]: sealing secrets at rest.
//! - [`store`]: persistence behind the [`Store`](store::Store) trait.
//! - [`inference`]: the LLM behind the [`Inference`](inference::Inference) trait.
//! - [`wire`]: the bot ↔ agent wire types.
//! - [`proxy`]: the bot's client of that protocol, behind the [`Proxy`](proxy::Proxy) trait.
//! - [`deploy`]: where agents run, behind the [`Deployer`](deploy::Deployer) trait;
//!   [`agent_env`]: the one description of a deployed agent's environment.
//! - [`agent`]: the agent runtime served by `baal-agent`.
//! - [`platform`]: the bot's brain; front-ends implement [`Messenger`](platform::Messenger).
//! - `import` (feature `import`): bringing the Python Baal's databases into the store.
//! - [`telemetry`]: the names of Baal's metrics, the Prometheus recorder (`prometheus`) and the
//!   bot's `/metrics`, `/healthz` and `/readyz` server (`telemetry`).
//! - `testing` (feature `testing`): loopback doubles for tests and examples (a scripted
//!   OpenAI-compatible server, an in-memory messenger, fake Aleph services).
//!
//! ## Cargo features
//!
//! Take only what you embed; each feature builds on its own.
//!
//! | Feature    | Default | What it adds |
//! |------------|---------|--------------|
//! | `client`   | via the others | [`config`] (the operator's settings) and [`proxy`] (the agent client) |
//! | `store`    | via `platform` | [`store`]: the SQL store (SeaORM over SQLite and PostgreSQL) |
//! | `platform` | yes     | [`platform`]: the bot's brain, its commands and chat routing (implies `store`) |
//! | `local`    | yes     | `deploy::local`: agents as child processes of this machine |
//! | `aleph`    | yes     | `deploy::aleph`: agents on Aleph Cloud VMs, with the VM pool (implies `store`) |
//! | `agent`    | yes     | [`agent`]: the agent runtime (loop, tools, history, heartbeat) |
//! | `prometheus` | no    | `telemetry::install`: the Prometheus recorder (what `baal-agent` needs) |
//! | `telemetry` | no     | `telemetry::serve`: `/metrics`, `/healthz`, `/readyz` for the bot (implies `prometheus`) |
//! | `import`   | no      | `import::python`: the Python Baal's `baal.db` and `pool.db` into the store (implies `store`) |
//! | `testing`  | no      | `testing`: loopback doubles for tests and examples |
//!
//! [`domain`], [`metering`], [`env`](mod@env), [`secrets`], [`inference`], [`wire`], [`agent_env`] and the [`deploy`]
//! traits are always present; `store`, `platform`, `local`, `aleph` and `import` bring `client`. For
//! example, an in-house agent runner takes `default-features = false, features = ["agent"]`,
//! without the platform, either deployer, or the bot's settings and client.
//!
//! ## Examples
//!
//! Sealing a secret for the row it is stored in and opening it again:
//!
//! ```
//! use baal_core::secrets::{self, SealContext, SecretBox};
//! use secrecy::ExposeSecret;
//!
//! let key = secrets::generate_key()?;
//! let sealer = SecretBox::from_secret(&key)?;
//! let alice = SealContext::user_api_key(1001);
//! let sealed = sealer.seal_str_for(&alice, "sk-user-key")?;
//! assert_eq!(sealer.open_str_for(&alice, &sealed)?.expose_secret(), "sk-user-key");
//!
//! // Another key cannot open it, nor can it be moved to another user's row: an error, never garbage.
//! let other = SecretBox::from_secret(&secrets::generate_key()?)?;
//! assert!(other.open_for(&alice, &sealed).is_err());
//! assert!(sealer.open_for(&SealContext::user_api_key(1002), &sealed).is_err());
//! # Ok::<(), baal_core::secrets::SecretsError>(())
//! ```
//!
//! Reading settings from explicit variables (as [`Settings::load`](config::Settings::load)
//! does from the environment), with a clear error for a malformed one:
//!
//! ```
//! use baal_core::config::{DeployerKind, Settings};
//!
//! let settings = Settings::from_vars([("MAX_AGENTS_PER_USER", "5"), ("BAAL_DATA_DIR", "/tmp/baal")])?;
//! assert_eq!(settings.max_agents_per_user, 5);
//! assert_eq!(settings.deployer_kind(), DeployerKind::Local); // no ALEPH_PRIVATE_KEY
//!
//! let err = Settings::from_vars([("MAX_AGENTS_PER_USER", "many")]).unwrap_err();
//! assert_eq!(err.variable, "MAX_AGENTS_PER_USER");
//! # Ok::<(), baal_core::config::ConfigError>(())
//! ```
//!
//! Turning a front-end's text into an input, and splitting a long answer into messages that
//! fit Telegram:
//!
//! ```
//! # #[cfg(feature = "platform")] {
//! use baal_core::platform::{Input, InputKind, parse_text, render};
//!
//! assert_eq!(
//!     parse_text("/start@baal_bot agent_x1"),
//!     InputKind::Command { name: "start".into(), args: "agent_x1".into() }
//! );
//! let input = Input::from_text(42, 42, "hello").with_username("ann");
//! assert_eq!(input.kind, InputKind::Text("hello".into()));
//!
//! let answer = render::markdown_to_html(&"A **long** answer. ".repeat(500));
//! let pieces = render::split_message(&answer, render::TELEGRAM_TEXT_LIMIT);
//! assert!(pieces.len() > 1);
//! assert!(pieces.iter().all(|piece| render::utf16_len(piece) <= render::TELEGRAM_TEXT_LIMIT));
//! # }
//! ```

#![warn(missing_docs)]

pub mod agent_env;
#[cfg(feature = "client")]
pub mod config;
pub mod deploy;
pub mod domain;
pub mod env;
#[cfg(feature = "import")]
pub mod import;
pub mod inference;
pub mod metering;
pub mod ops;
#[cfg(feature = "client")]
pub mod proxy;
pub mod secrets;
pub mod telemetry;
pub mod wire;

#[cfg(feature = "agent")]
pub mod agent;
#[cfg(feature = "platform")]
pub mod platform;
#[cfg(feature = "store")]
mod sqlite;
#[cfg(feature = "store")]
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

/// Makes rustls' `ring` provider the process-wide default, unless one is installed already.
///
/// baal-core calls it before it builds any HTTP client. Call it yourself only if you build a
/// `reqwest` client of your own before any of baal-core's, with the same reqwest features
/// (`rustls-no-provider`); otherwise reqwest panics for want of a provider. Idempotent.
pub fn install_crypto_provider() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // An error means the process chose a provider already; that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A reqwest client builder with the crypto provider in place.
pub(crate) fn http_client_builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
}

/// The version of this crate, reported by agents in `/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
