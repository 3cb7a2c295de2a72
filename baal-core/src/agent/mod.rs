//! The agent runtime that `baal-agent` serves: the agentic loop, tools, per-chat history, memory,
//! skills, heartbeat, subagents and compaction.
//!
//! - [`settings`]: [`AgentSettings`] from the environment and the deployer's settings file;
//! - [`history`]: per-chat history, summaries and pending messages (SQLite, WAL);
//! - [`python_history`]: a Python Baal agent's history carried over once, at a converted agent's
//!   first start;
//! - [`context`]: the workspace and the day-stable system prompt;
//! - [`compaction`]: keeping a chat within the model's context;
//! - [`runtime`]: [`Agent`], the loop, subagents and the heartbeat;
//! - [`auth`]: the bearer check of the HTTP API;
//! - [`tools`]: the tools the model can call;
//! - [`usage`]: metering, every model call recorded with its tokens and cause;
//! - [`budget`]: the agent's daily token limits, checked before every model call.

pub mod auth;
pub mod budget;
pub mod compaction;
pub mod context;
pub mod history;
pub mod python_history;
pub mod runtime;
pub mod settings;
pub mod tools;
pub mod usage;

pub use runtime::{Agent, AgentConfig, ChatStream, HeartbeatOutcome, TurnOutcome};
pub use settings::AgentSettings;
