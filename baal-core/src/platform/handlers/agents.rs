//! An owner's own agents: the list, delete, repair and update.

pub(crate) mod views;

use std::sync::Arc;

use self::views::delete_dialog;
use super::views::*;
use crate::domain::{AgentId, AgentRuntime, AgentStatus};
use crate::platform::action::Action;
use crate::platform::engine::{Ctx, Inner, PlatformError};
use crate::platform::jobs::JobKind;
use crate::platform::messenger::Text;
use crate::platform::state::UserState;
use crate::store::AgentFilter;

impl Inner {
    pub(super) async fn list(&self, ctx: &Ctx) -> Result<(), PlatformError> {
        let agents = self.store.list_agents(&AgentFilter::all().owner(ctx.user_id())).await?;
        if agents.is_empty() {
            self.say(ctx.chat, views::no_agents()).await;
            return Ok(());
        }
        let max = self.config.max_agents_per_user as usize;
        self.say(ctx.chat, views::list_header(agents.len(), max)).await;
        let now = self.now();
        for agent in &agents {
            self.say(ctx.chat, views::card(agent, &self.share_link(agent), now)).await;
        }
        if agents.len() < max {
            self.say(ctx.chat, views::another_agent(max - agents.len())).await;
        }
        Ok(())
    }

    pub(super) async fn delete_command(&self, ctx: &Ctx, args: &str) -> Result<(), PlatformError> {
        let Some(id) = self.agent_arg(ctx, args, "/delete <agent id> (the id is on each card in /list)").await else {
            return Ok(());
        };
        match self.owned_agent(ctx.user_id(), id).await? {
            Some(agent) => {
                self.say(ctx.chat, delete_dialog(&agent)).await;
            }
            None => {
                self.say(ctx.chat, Text::plain("You have no agent with that id. /list shows yours.")).await;
            }
        }
        Ok(())
    }

    /// Parses a required agent id argument, telling the user what to send when it is wrong.
    pub(super) async fn agent_arg(&self, ctx: &Ctx, args: &str, usage: &str) -> Option<AgentId> {
        if args.is_empty() {
            self.say(ctx.chat, Text::plain(format!("Usage: {usage}"))).await;
            return None;
        }
        match args.split_whitespace().next().unwrap_or("").parse::<AgentId>() {
            Ok(id) => Some(id),
            Err(_) => {
                self.say(ctx.chat, Text::plain(format!("The agent id is a number. Usage: {usage}"))).await;
                None
            }
        }
    }

    /// Destroys and soft-deletes an agent; returns what to show.
    pub(super) async fn delete_agent(
        &self,
        ctx: &Ctx,
        state: &mut UserState,
        id: AgentId,
    ) -> Result<Text, PlatformError> {
        let Some(agent) = self.owned_agent(ctx.user_id(), id).await? else {
            return Ok(Text::plain("This agent is already gone."));
        };
        if let Some(refusal) = self.delete_for_owner(&agent).await? {
            return Ok(refusal);
        }
        state.forget_agent(agent.id);
        state.greeted.retain(|greeted| *greeted != agent.id);
        let text = format!("✅ <b>{}</b> is deleted: it no longer runs and its slot is free.", e(&agent.name));
        Ok(html(text))
    }

    pub(super) async fn repair(self: &Arc<Self>, ctx: &Ctx, args: &str) -> Result<(), PlatformError> {
        if args.is_empty() {
            let agents = self.store.list_agents(&AgentFilter::all().owner(ctx.user_id())).await?;
            let broken: Vec<_> = agents
                .iter()
                .filter(|a| {
                    matches!(
                        a.status,
                        AgentStatus::Failed | AgentStatus::Down | AgentStatus::Deploying | AgentStatus::Pending
                    )
                })
                .filter(|a| !self.is_in_flight(a.id))
                .collect();
            if broken.is_empty() {
                self.say(ctx.chat, Text::plain("None of your agents needs repair.")).await;
                return Ok(());
            }
            self.say(ctx.chat, agent_picker("Which agent should Baal repair?", broken, Action::Repair)).await;
            return Ok(());
        }
        let Some(id) = self.agent_arg(ctx, args, "/repair <agent id>").await else { return Ok(()) };
        let Some(agent) = self.owned_agent(ctx.user_id(), id).await? else {
            self.say(ctx.chat, Text::plain("You have no agent with that id. /list shows yours.")).await;
            return Ok(());
        };
        if self.is_in_flight(agent.id) {
            self.say(ctx.chat, Text::plain(format!("{} is being deployed right now.", agent.name))).await;
            return Ok(());
        }
        if agent.status == AgentStatus::Running && agent.runtime == AgentRuntime::Python {
            // Repairing an imported agent is converting it: its VM then runs Baal's agent.
            return self.update(ctx, &agent.id.to_string()).await;
        }
        if agent.status == AgentStatus::Running {
            let text = format!("{} is running; nothing to repair. /update {} restarts it.", agent.name, agent.id);
            self.say(ctx.chat, Text::plain(text)).await;
            return Ok(());
        }
        let progress = self.say(ctx.chat, html(format!("Repairing <b>{}</b>…", e(&agent.name)))).await;
        self.start_job(agent.id, ctx.chat, progress, JobKind::Deploy);
        Ok(())
    }

    pub(super) async fn update(self: &Arc<Self>, ctx: &Ctx, args: &str) -> Result<(), PlatformError> {
        if args.is_empty() {
            let running =
                self.store.list_agents(&AgentFilter::all().owner(ctx.user_id()).status(AgentStatus::Running)).await?;
            if running.is_empty() {
                self.say(ctx.chat, Text::plain("You have no running agents to update.")).await;
                return Ok(());
            }
            let text = agent_picker("Which agent should Baal update and restart?", &running, Action::Update);
            self.say(ctx.chat, text).await;
            return Ok(());
        }
        let Some(id) = self.agent_arg(ctx, args, "/update <agent id>").await else { return Ok(()) };
        let Some(agent) = self.owned_agent(ctx.user_id(), id).await? else {
            self.say(ctx.chat, Text::plain("You have no agent with that id. /list shows yours.")).await;
            return Ok(());
        };
        if agent.status != AgentStatus::Running || self.is_in_flight(agent.id) {
            let text = format!(
                "{} is not running (status: {}). /repair {} deploys it again.",
                agent.name, agent.status, agent.id
            );
            self.say(ctx.chat, Text::plain(text)).await;
            return Ok(());
        }
        let (doing, done) = match agent.runtime {
            AgentRuntime::Baal => {
                (format!("Updating <b>{}</b>…", e(&agent.name)), format!("✅ {} is updated and running.", agent.name))
            }
            AgentRuntime::Python => (
                format!(
                    "Upgrading <b>{}</b> from the Python Baal to this one. Its workspace and history come \
                     along; if the new agent does not start, the old one is put back.",
                    e(&agent.name)
                ),
                format!(
                    "✅ {} runs the new Baal now, with its workspace and history. Its share link works for \
                     visitors again.",
                    agent.name
                ),
            ),
        };
        let progress = self.say(ctx.chat, html(doing)).await;
        self.start_job(agent.id, ctx.chat, progress, JobKind::Redeploy { done });
        Ok(())
    }
}
