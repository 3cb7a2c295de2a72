//! # baal-core
//!
//! Baal lets anyone create an AI agent from a chat: the platform deploys it to its own machine
//! with LibertAI inference, and anyone holding the agent's share link chats with it through the
//! bot. This crate is every decision Baal makes; the binaries (`baal-telegram`, `baal-agent`,
//! `baal-cli`) only translate.
//!
//! The pieces, and the traits embedders can swap:
//!
//! - [`domain`]: plain data (users, agents, the model catalog).
//! - [`config`]: settings from the environment and `.env`, validated with errors that name the
//!   variable.
//! - [`secrets`]: sealing secrets at rest.
//! - [`store`]: persistence behind the [`store::Store`] trait (SQLite or PostgreSQL).
//! - [`inference`]: the LLM behind the `Inference` trait.
//! - [`proxy`]: the bot ↔ agent wire protocol behind the [`proxy::Proxy`] trait.
//! - [`deploy`]: where agents run, behind the [`deploy::Deployer`] trait.
//! - [`agent`]: the agent runtime served by `baal-agent`.
//! - [`platform`]: the bot's brain; front-ends implement [`platform::Messenger`].
//! - `testing` (feature `testing`): loopback doubles for tests.

#![warn(missing_docs)]

pub mod config;
pub mod deploy;
pub mod domain;
pub mod inference;
pub mod proxy;
pub mod secrets;

#[cfg(feature = "agent")]
pub mod agent;
#[cfg(feature = "platform")]
pub mod platform;
#[cfg(feature = "store")]
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

/// The version of this crate, reported by agents in `/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
