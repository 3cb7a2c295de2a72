//! Texts of /dashboard and /pool.

use chrono::{DateTime, Utc};

use crate::domain::{Agent, AgentStatus, PoolStatus, PoolVm};
use crate::platform::action::Action;
use crate::platform::handlers::views::*;
use crate::platform::messenger::{Button, Text};

/// The plan line of the dashboard.
pub(crate) enum PlanLine {
    OwnKey,
    FreeTier { used: u32, limit: u32 },
    NoKey,
}

/// What only operators see: the whole fleet.
pub(crate) struct Fleet<'a> {
    pub(crate) deployer: &'a str,
    pub(crate) users: usize,
    pub(crate) agents: &'a [Agent],
    pub(crate) free_messages_today: u32,
    /// The tokens section of every agent.
    pub(crate) usage: &'a str,
}

/// The dashboard: each of the owner's agents with whether it answered (`healthy`, in the same
/// order), their tokens (`usage`), their plan, and the fleet for operators.
pub(crate) fn dashboard(
    agents: &[Agent],
    healthy: &[bool],
    slots: u32,
    plan: PlanLine,
    usage: &str,
    fleet: Option<Fleet<'_>>,
    now: DateTime<Utc>,
) -> Text {
    let up = healthy.iter().filter(|h| **h).count();
    let down = agents.iter().zip(healthy).filter(|(a, h)| a.status == AgentStatus::Running && !**h).count();
    let mut body =
        format!("<b>Dashboard</b>\nAgents: {}/{slots} slots · {up} answering · {down} not answering\n", agents.len());
    for (agent, healthy) in agents.iter().zip(healthy) {
        let running = agent.status == AgentStatus::Running;
        let emoji = match (healthy, running) {
            (true, _) => "🟢",
            (false, true) => "🔴",
            (false, false) => status_emoji(agent.status),
        };
        let state = if running && !healthy { "not answering" } else { status_word(agent.status) };
        body.push_str(&format!(
            "\n{emoji} <b>{}</b> #{}: {state}, created {}",
            e(&agent.name),
            agent.id,
            age(agent.created_at, now)
        ));
    }
    body.push_str(&format!("\n\n{usage}"));
    body.push_str(&match plan {
        PlanLine::OwnKey => "\n\nPlan: your own LibertAI key".to_owned(),
        PlanLine::FreeTier { used, limit } => format!("\n\nPlan: free tier, {used}/{limit} messages today"),
        PlanLine::NoKey => "\n\nPlan: none; /login with your own LibertAI key".to_owned(),
    });
    if let Some(fleet) = fleet {
        body.push_str(&format!(
            "\n\n<b>Fleet</b> ({} deployer)\nUsers: {}\nAgents: {}",
            fleet.deployer,
            fleet.users,
            fleet.agents.len()
        ));
        for status in AgentStatus::ALL {
            let n = fleet.agents.iter().filter(|a| a.status == status).count();
            if n > 0 {
                body.push_str(&format!(" · {} {n} {status}", status_emoji(status)));
            }
        }
        body.push_str(&format!("\nFree-tier messages today: {}\n\n{}", fleet.free_messages_today, fleet.usage));
    }
    html(body)
        .row(vec![Button::action("🔄 Refresh", Action::DashboardRefresh), Button::action("📋 My agents", Action::List)])
}

pub(crate) fn pool(vms: &[PoolVm]) -> Text {
    let mut body = String::from("<b>VM pool</b>");
    for status in PoolStatus::ALL {
        let n = vms.iter().filter(|vm| vm.status == status).count();
        body.push_str(&format!("\n{status}: {n}"));
    }
    body.push_str(&format!("\n─────────────\nTotal: {}", vms.len()));
    html(body)
}
