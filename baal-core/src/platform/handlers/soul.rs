//! /soul: an agent's personality, shown and changed.

pub(crate) mod views;

use std::sync::Arc;

use super::views::*;
use crate::domain::{AgentId, AgentStatus};
use crate::platform::engine::{Ctx, Inner, PlatformError};
use crate::platform::jobs::JobKind;
use crate::platform::messenger::{MessageRef, Text};
use crate::platform::state::{Flow, UserState};
use crate::store::AgentFilter;

/// Shortest and longest personality, in characters.
const MIN_PROMPT_CHARS: usize = 10;
const MAX_PROMPT_CHARS: usize = 8000;

impl Inner {
    pub(super) async fn soul(&self, ctx: &Ctx, state: &mut UserState, args: &str) -> Result<(), PlatformError> {
        let id = if args.is_empty() {
            match state.chat_agent(ctx.chat) {
                Some(id) if self.owned_agent(ctx.user_id(), id).await?.is_some() => Some(id),
                _ => None,
            }
        } else {
            match args.split_whitespace().next().unwrap_or("").parse::<AgentId>() {
                Ok(id) => Some(id),
                Err(_) => {
                    self.say(ctx.chat, Text::plain("Usage: /soul, or /soul <agent id>")).await;
                    return Ok(());
                }
            }
        };
        let Some(id) = id else {
            let agents = self.store.list_agents(&AgentFilter::all().owner(ctx.user_id())).await?;
            if agents.is_empty() {
                self.say(ctx.chat, Text::plain("You have no agents yet. /create makes one.")).await;
                return Ok(());
            }
            self.say(ctx.chat, views::picker(&agents)).await;
            return Ok(());
        };
        let Some(agent) = self.owned_agent(ctx.user_id(), id).await? else {
            self.say(ctx.chat, Text::plain("You have no agent with that id. /list shows yours.")).await;
            return Ok(());
        };
        let text = views::card(&agent);
        self.say(ctx.chat, text).await;
        Ok(())
    }

    pub(super) async fn soul_edit(
        &self,
        ctx: &Ctx,
        state: &mut UserState,
        id: AgentId,
        message: MessageRef,
    ) -> Result<(), PlatformError> {
        let Some(agent) = self.owned_agent(ctx.user_id(), id).await? else {
            self.edit_or_say(ctx.chat, Some(message), Text::plain("Agent not found.")).await;
            return Ok(());
        };
        state.set_flow(Flow::SoulEdit { agent: agent.id }, self.now());
        self.edit_or_say(ctx.chat, Some(message), views::edit_prompt(&agent)).await;
        Ok(())
    }

    pub(super) async fn soul_text(
        self: &Arc<Self>,
        ctx: &Ctx,
        state: &mut UserState,
        id: AgentId,
        text: &str,
    ) -> Result<(), PlatformError> {
        let prompt = text.trim();
        let count = prompt.chars().count();
        if !(MIN_PROMPT_CHARS..=MAX_PROMPT_CHARS).contains(&count) {
            state.set_flow(Flow::SoulEdit { agent: id }, self.now());
            let problem = format!(
                "A personality is {MIN_PROMPT_CHARS} to {MAX_PROMPT_CHARS} characters (this one has {count}). Send it again, or /cancel."
            );
            self.say(ctx.chat, Text::plain(problem)).await;
            return Ok(());
        }
        state.clear_flow();
        let Some(agent) = self.owned_agent(ctx.user_id(), id).await? else {
            self.say(ctx.chat, Text::plain("That agent no longer exists.")).await;
            return Ok(());
        };
        self.store.agent_set_prompt(agent.id, prompt).await?;
        if agent.status == AgentStatus::Running && !self.is_in_flight(agent.id) {
            let progress = self
                .say(ctx.chat, html(format!("Saved. Restarting <b>{}</b> with its new personality…", e(&agent.name))))
                .await;
            let done = format!("✅ {} now follows its new personality.", agent.name);
            self.start_job(agent.id, ctx.chat, progress, JobKind::Redeploy { done });
        } else {
            let text = format!("Saved. {} will follow it from its next deployment.", agent.name);
            self.say(ctx.chat, Text::plain(text)).await;
        }
        Ok(())
    }
}
