//! The agent runtime that `baal-agent` serves: the agentic loop, tools, per-chat history, memory,
//! skills, heartbeat, subagents and compaction. (Built in issue #3.)

pub mod tools;
