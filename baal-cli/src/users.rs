//! `baal-cli users …`: who uses the platform, how many agents each has and today's usage.

use std::collections::HashMap;
use std::process::ExitCode;

use baal_core::config::Settings;
use baal_core::domain::usage_day;
use baal_core::platform::{Plan, PlatformConfig};
use baal_core::store::{AgentFilter, Store};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde::Serialize;

use crate::{open_store, print_listing};

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// List users with their agent counts and today's usage.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(settings: &Settings, command: UsersCommand) -> anyhow::Result<ExitCode> {
    match command {
        UsersCommand::List { json } => list(settings, json).await,
    }
}

/// What `users list --json` prints per user. The LibertAI key shows only whether one is set.
#[derive(Debug, Serialize)]
struct UserSummary {
    id: i64,
    username: Option<String>,
    api_key: &'static str,
    /// What the user's agents run on, as the platform decides it.
    plan: String,
    show_tools: bool,
    agents: u64,
    messages_today: u32,
    created_at: DateTime<Utc>,
}

async fn list(settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    let store = open_store(settings).await?;
    let users = store.users_list().await?;
    // Two queries for the whole table instead of two per user.
    let mut agents_by_owner: HashMap<i64, u64> = HashMap::new();
    for agent in store.list_agents(&AgentFilter::all()).await? {
        *agents_by_owner.entry(agent.owner_id).or_default() += 1;
    }
    let config = PlatformConfig::from_settings(settings);
    let (today, _) = usage_day(Utc::now());
    let usage: HashMap<i64, u32> =
        store.usage_on(today).await?.into_iter().map(|row| (row.user_id, row.messages)).collect();

    let summaries: Vec<UserSummary> = users
        .into_iter()
        .map(|user| UserSummary {
            id: user.id,
            agents: agents_by_owner.get(&user.id).copied().unwrap_or(0),
            messages_today: usage.get(&user.id).copied().unwrap_or(0),
            plan: Plan::of(&user, &config).to_string(),
            username: user.username,
            api_key: if user.api_key_sealed.is_some() { "set" } else { "unset" },
            show_tools: user.show_tools,
            created_at: user.created_at,
        })
        .collect();
    print_listing(json, &summaries, "No users.", &["ID", "USERNAME", "PLAN", "AGENTS", "TODAY", "SINCE"], |u| {
        vec![
            u.id.to_string(),
            u.username.as_deref().map_or_else(|| "-".to_owned(), |name| format!("@{name}")),
            u.plan.clone(),
            u.agents.to_string(),
            u.messages_today.to_string(),
            u.created_at.format("%Y-%m-%d %H:%M").to_string(),
        ]
    })
}
