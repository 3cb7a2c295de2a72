//! Talking to an agent: share links, opening and leaving a chat, the gate before each turn.

pub(crate) mod views;

use super::menu::views::welcome;
use super::settings_views;
use crate::domain::{Agent, AgentId, AgentRuntime, AgentStatus, Role};
use crate::platform::engine::{After, Ctx, Inner, PlatformError};
use crate::platform::messenger::{MessageRef, Text};
use crate::platform::state::UserState;

impl Inner {
    pub(super) async fn route_chat(
        &self,
        ctx: &Ctx,
        state: &mut UserState,
        text: String,
    ) -> Result<After, PlatformError> {
        if !ctx.in_private_chat() {
            self.say(ctx.chat, self.private_only()).await;
            return Ok(After::Nothing);
        }
        let Some(agent_id) = state.chat_agent(ctx.chat) else {
            self.say(ctx.chat, views::not_in_a_chat()).await;
            return Ok(After::Nothing);
        };
        let agent = match self.store.agent_get(agent_id).await? {
            Some(agent) if !agent.deleted => agent,
            _ => {
                state.leave_chat(ctx.chat);
                self.say(ctx.chat, Text::plain("That agent no longer exists. You're back in Baal's menu.")).await;
                return Ok(After::Nothing);
            }
        };
        if agent.status != AgentStatus::Running || agent.deployment.vm_url.is_none() || agent.token_sealed.is_none() {
            let repairable =
                agent.owner_id == ctx.user_id() && matches!(agent.status, AgentStatus::Failed | AgentStatus::Down);
            self.say(ctx.chat, views::unavailable(&agent, repairable)).await;
            return Ok(After::Nothing);
        }
        if agent.role_of(ctx.user_id()) == Role::Visitor && agent.runtime == AgentRuntime::Python {
            // The Python agent runs its tools as root with its owner's key in reach: only its
            // owner talks to it until it is converted.
            state.leave_chat(ctx.chat);
            self.say(ctx.chat, views::being_upgraded(&agent)).await;
            return Ok(After::Nothing);
        }
        if agent.role_of(ctx.user_id()) == Role::Visitor {
            match state.chat_slug(ctx.chat) {
                Some(slug) if slug != agent.slug => {
                    state.leave_chat(ctx.chat);
                    self.say(ctx.chat, settings_views::link_retired()).await;
                    return Ok(After::Nothing);
                }
                Some(_) => {}
                None => state.set_chat_slug(ctx.chat, agent.slug.clone()),
            }
        }
        let limits = match self.gate_turn(ctx.user_id(), &agent).await? {
            Ok(limits) => limits,
            Err(refusal) => {
                self.say(ctx.chat, refusal).await;
                return Ok(After::Nothing);
            }
        };
        let first_time = !state.greeted.contains(&agent.id);
        if first_time {
            state.greeted.push(agent.id);
        }
        Ok(After::Chat { agent: Box::new(agent), text, first_time, limits })
    }

    pub(super) async fn start_command(
        &self,
        ctx: &Ctx,
        state: &mut UserState,
        args: &str,
    ) -> Result<(), PlatformError> {
        let payload = args.split_whitespace().next().unwrap_or("");
        if payload.is_empty() {
            self.say(ctx.chat, welcome()).await;
            return Ok(());
        }
        let key = payload.strip_prefix("agent_").unwrap_or(payload);
        let gone = "This agent doesn't exist or has been removed.";
        let agent = if key.bytes().all(|b| b.is_ascii_digit()) {
            // An agent imported from the Python Baal keeps the numeric link its owner handed out
            // (its slug is that number; no fresh agent's slug is numeric).
            if let Some(agent) = self.store.agent_by_slug(key).await? {
                return match agent.deleted {
                    false => self.open_chat_with(ctx, state, agent).await,
                    true => {
                        self.say(ctx.chat, Text::plain(gone)).await;
                        Ok(())
                    }
                };
            }
            // Other numeric ids are guessable: they open only the caller's own agents.
            let own = match key.parse::<AgentId>() {
                Ok(id) => self.store.agent_get(id).await?,
                Err(_) => None,
            };
            match own {
                Some(agent) if agent.owner_id == ctx.user_id() => Some(agent),
                // An imported agent's old numeric link, replaced by its owner.
                _ if self.store.agent_by_retired_slug(key).await?.is_some() => {
                    self.say(ctx.chat, settings_views::link_retired()).await;
                    return Ok(());
                }
                Some(_) => {
                    self.say(
                        ctx.chat,
                        Text::plain("Agents are opened with their share link. Ask the agent's owner for it."),
                    )
                    .await;
                    return Ok(());
                }
                None => None,
            }
        } else {
            match self.store.agent_by_slug(key).await? {
                Some(agent) => Some(agent),
                None if self.store.agent_by_retired_slug(key).await?.is_some() => {
                    self.say(ctx.chat, settings_views::link_retired()).await;
                    return Ok(());
                }
                None => None,
            }
        };
        match agent {
            Some(agent) if !agent.deleted => self.open_chat_with(ctx, state, agent).await,
            _ => {
                self.say(ctx.chat, Text::plain(gone)).await;
                Ok(())
            }
        }
    }

    pub(super) async fn open_chat(&self, ctx: &Ctx, state: &mut UserState, id: AgentId) -> Result<(), PlatformError> {
        match self.owned_agent(ctx.user_id(), id).await? {
            Some(agent) => self.open_chat_with(ctx, state, agent).await,
            None => {
                self.say(ctx.chat, Text::plain("Agent not found.")).await;
                Ok(())
            }
        }
    }

    /// Why agents do not talk here: in a group the agent's history would be the group's, so
    /// visitors would see (and steer) the owner's turns. One line on where to talk instead.
    pub(super) fn private_only(&self) -> Text {
        let me = self.config.bot_username.as_deref().map_or_else(|| "me".to_owned(), |name| format!("@{name}"));
        views::private_only(&me)
    }

    pub(super) async fn open_chat_with(
        &self,
        ctx: &Ctx,
        state: &mut UserState,
        agent: Agent,
    ) -> Result<(), PlatformError> {
        if !ctx.in_private_chat() {
            self.say(ctx.chat, self.private_only()).await;
            return Ok(());
        }
        if agent.status != AgentStatus::Running {
            self.say(ctx.chat, views::not_ready(&agent)).await;
            return Ok(());
        }
        if agent.role_of(ctx.user_id()) == Role::Visitor && !agent.policy.sharing {
            self.say(ctx.chat, settings_views::sharing_paused(&agent)).await;
            return Ok(());
        }
        if agent.role_of(ctx.user_id()) == Role::Visitor && agent.runtime == AgentRuntime::Python {
            self.say(ctx.chat, views::being_upgraded(&agent)).await;
            return Ok(());
        }
        let slug = (agent.role_of(ctx.user_id()) == Role::Visitor).then(|| agent.slug.clone());
        state.enter_chat(ctx.chat, agent.id, slug);
        self.say(ctx.chat, views::chatting_with(&agent)).await;
        Ok(())
    }

    pub(super) async fn leave_chat(
        &self,
        ctx: &Ctx,
        state: &mut UserState,
        show_menu: bool,
    ) -> Result<(), PlatformError> {
        let left = state.leave_chat(ctx.chat);
        let name = match left {
            Some(id) => Some(self.store.agent_get(id).await?.map_or_else(|| "the agent".to_owned(), |a| a.name)),
            None => None,
        };
        let text = views::left_chat(name.as_deref(), show_menu);
        self.say(ctx.chat, text).await;
        Ok(())
    }

    pub(super) async fn verbose(&self, ctx: &Ctx) -> Result<(), PlatformError> {
        let visible = self.store.user_toggle_show_tools(ctx.user_id()).await?;
        let text = if visible { "Tool calls are now shown in chat." } else { "Tool calls are now hidden." };
        self.say(ctx.chat, Text::plain(text)).await;
        Ok(())
    }

    /// `/reset` and the chat keyboard's button: asks before forgetting the caller's conversation
    /// with the agent they are talking to.
    pub(super) async fn reset_ask(&self, ctx: &Ctx, state: &UserState) -> Result<(), PlatformError> {
        if !ctx.in_private_chat() {
            self.say(ctx.chat, self.private_only()).await;
            return Ok(());
        }
        let agent = match state.chat_agent(ctx.chat) {
            Some(id) => self.store.agent_get(id).await?.filter(|a| !a.deleted),
            None => None,
        };
        let text = match agent {
            Some(agent) => views::reset_dialog(&agent),
            None => views::nothing_to_reset(),
        };
        // A new message even when pressed under an answer: the chat keyboard stays where it is.
        self.say(ctx.chat, text).await;
        Ok(())
    }

    /// Forgets the caller's own conversation with agent `id` (its other chats and its memory
    /// files are untouched). Only the agent the caller talks to, or one they own, can be reset.
    pub(super) async fn reset(
        &self,
        ctx: &Ctx,
        state: &mut UserState,
        id: AgentId,
        message: MessageRef,
    ) -> Result<(), PlatformError> {
        let agent = self.store.agent_get(id).await?.filter(|a| !a.deleted);
        let Some(agent) = agent.filter(|a| a.owner_id == ctx.user_id() || state.chat_agent(ctx.chat) == Some(a.id))
        else {
            self.edit_or_say(ctx.chat, Some(message), Text::plain("That agent is not one you are talking to.")).await;
            return Ok(());
        };
        let Some(endpoint) = self.endpoint(&agent).filter(|_| agent.status == AgentStatus::Running) else {
            self.edit_or_say(ctx.chat, Some(message), views::unavailable(&agent, false)).await;
            return Ok(());
        };
        // Not in the middle of one of this chat's turns: that turn would write its answer back.
        let lock = self.chat_lock(ctx.chat);
        let _turn = lock.lock().await;
        let text = match self.proxy.reset(&endpoint, &ctx.chat.to_string()).await {
            Ok(_) => {
                // The chat controls come again with the next answer, as in a first conversation.
                state.greeted.retain(|greeted| *greeted != agent.id);
                views::reset_done(&agent)
            }
            Err(err) => {
                tracing::warn!(agent = %agent.id, error = %err, "could not reset a conversation");
                views::reset_failed(&agent)
            }
        };
        self.edit_or_say(ctx.chat, Some(message), text).await;
        Ok(())
    }

    /// `/stop` and the button on a running answer: stops the turn running in this chat, with the
    /// agent the button names or the one the user talks to. Returns what to tell the user.
    pub(super) async fn stop_command(
        &self,
        ctx: &Ctx,
        state: &UserState,
        agent: Option<AgentId>,
    ) -> Result<String, PlatformError> {
        let id = agent.or(state.chat_agent(ctx.chat));
        let agent = match id {
            Some(id) => self.store.agent_get(id).await?.filter(|a| !a.deleted),
            None => None,
        };
        let note = match agent.filter(|a| a.owner_id == ctx.user_id() || state.chat_agent(ctx.chat) == Some(a.id)) {
            Some(agent) => self.stop_turn(ctx.chat, &agent).await,
            None => "Nothing is being answered right now.",
        };
        Ok(note.to_owned())
    }
}
