//! The /create wizard: a name, a model, then a deployment.

pub(crate) mod views;

use std::sync::Arc;

use self::views::model_menu;
use super::views::*;
use crate::deploy::Tenancy;
use crate::domain::{Model, NewAgent};
use crate::platform::Plan;
use crate::platform::action::Action;
use crate::platform::engine::{Ctx, Inner, PlatformError};
use crate::platform::jobs::JobKind;
use crate::platform::messenger::{MessageRef, Text};
use crate::platform::state::{Flow, UserState};

/// Longest agent name, in characters.
const MAX_NAME_CHARS: usize = 64;

impl Inner {
    /// The wizard's first answer: the agent's name.
    pub(super) async fn create_name(&self, ctx: &Ctx, state: &mut UserState, text: &str) {
        let now = self.now();
        match check_name(text) {
            Err(problem) => {
                state.set_flow(Flow::CreateName, now);
                self.say(ctx.chat, Text::plain(problem)).await;
            }
            Ok(name) => {
                state.set_flow(Flow::CreateModel { name: name.clone() }, now);
                self.say(ctx.chat, model_menu(&name)).await;
            }
        }
    }

    pub(super) async fn create(&self, ctx: &Ctx, state: &mut UserState) -> Result<(), PlatformError> {
        state.clear_flow();
        if let Some(refusal) = self.create_refusal(ctx).await? {
            self.say(ctx.chat, refusal).await;
            return Ok(());
        }
        // Creating an agent leaves this chat's mode: the next text is its name, not a message.
        state.leave_chat(ctx.chat);
        state.set_flow(Flow::CreateName, self.now());
        self.say(ctx.chat, views::ask_name()).await;
        Ok(())
    }

    /// Why this user may not create an agent now: the deployer hosts agents for the operator
    /// only (and the user is not one of the operator's admins), neither Baal nor the user has a
    /// model key (said before the first step, not after the last), or every slot is taken.
    async fn create_refusal(&self, ctx: &Ctx) -> Result<Option<Text>, PlatformError> {
        if self.deployer.tenancy() == Tenancy::OperatorOnly && !self.config.is_admin(ctx.user_id()) {
            return Ok(Some(views::operator_only()));
        }
        if Plan::of(&ctx.user, &self.config) == Plan::NoKey {
            return Ok(Some(views::no_model_key()));
        }
        let used = self.store.count_active_agents(ctx.user_id()).await?;
        let max = self.config.max_agents_per_user;
        Ok((used >= u64::from(max)).then(|| views::slots_full(used, max)))
    }

    pub(super) async fn wizard_button(
        self: &Arc<Self>,
        ctx: &Ctx,
        state: &mut UserState,
        flow: Option<Flow>,
        action: Action,
        message: MessageRef,
    ) -> Result<Option<String>, PlatformError> {
        let now = self.now();
        match (action, flow) {
            (Action::CreateModel(model), Some(Flow::CreateModel { name } | Flow::CreateConfirm { name, .. })) => {
                let Some(model) = Model::find(&model) else {
                    state.clear_flow();
                    self.edit_or_say(
                        ctx.chat,
                        Some(message),
                        Text::plain("That model isn't offered. Start again with /create."),
                    )
                    .await;
                    return Ok(Some("Unknown model".into()));
                };
                state.set_flow(Flow::CreateConfirm { name: name.clone(), model: model.id.to_owned() }, now);
                let text = views::ready_to_deploy(
                    &name,
                    model,
                    where_agents_run(self.deployer.name()),
                    self.deployer.usual_deploy_duration(),
                );
                self.edit_or_say(ctx.chat, Some(message), text).await;
                Ok(None)
            }
            (Action::CreateConfirm, Some(Flow::CreateConfirm { name, model })) => {
                self.create_confirm(ctx, state, &name, &model, Some(message)).await?;
                Ok(None)
            }
            (Action::CreateCancel, Some(Flow::CreateModel { .. } | Flow::CreateConfirm { .. } | Flow::CreateName)) => {
                state.clear_flow();
                self.edit_or_say(ctx.chat, Some(message), Text::plain("Agent creation cancelled.")).await;
                Ok(Some("Cancelled".into()))
            }
            _ => {
                self.edit_or_say(ctx.chat, Some(message), Text::plain("This step is over. /create starts again."))
                    .await;
                Ok(Some("This step has expired".into()))
            }
        }
    }

    pub(super) async fn create_confirm(
        self: &Arc<Self>,
        ctx: &Ctx,
        state: &mut UserState,
        name: &str,
        model: &str,
        message: Option<MessageRef>,
    ) -> Result<(), PlatformError> {
        state.clear_flow();
        if let Some(refusal) = self.create_refusal(ctx).await? {
            self.edit_or_say(ctx.chat, message, refusal).await;
            return Ok(());
        }
        let new = NewAgent::new(ctx.user_id(), name, default_prompt(name), model);
        let agent = self.store.agent_create(new).await?;
        // Sealed once the row exists, because the seal names the agent's id; an agent left
        // without one (a crash in between) gets its token from its deployment job.
        self.mint_token(agent.id).await?;
        let progress = self.edit_or_say(ctx.chat, message, views::created(&agent)).await;
        self.start_job(agent.id, ctx.chat, progress, JobKind::Deploy);
        Ok(())
    }
}

/// Why a name is refused, in words the user can act on.
pub(crate) fn check_name(raw: &str) -> Result<String, &'static str> {
    let name = raw.trim();
    if name.is_empty() {
        return Err("The name can't be empty. What should your agent be called?");
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err("That name is too long: 64 characters at most. Try a shorter one.");
    }
    if name.chars().any(char::is_control) {
        return Err("The name must fit on one line (no line breaks or control characters). Try again.");
    }
    Ok(name.to_owned())
}

pub(crate) fn default_prompt(name: &str) -> String {
    format!(
        "You are {name}, a capable AI assistant. You can run code, work with files and search the web. \
         Be helpful and concise, take initiative, and break larger tasks into clear steps."
    )
}
