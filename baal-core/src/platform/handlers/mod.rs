//! Commands, buttons and free text, routed to the feature that handles them.
//!
//! One file per feature (creating, an agent's own actions, personality, the account, the
//! conversation, the menu, admin). A feature's file decides: it reads the store, checks who may
//! do what and starts jobs; its `views` module only words what was decided (texts, cards,
//! keyboards), so wording changes never touch a rule and a rule is never hidden in a text.
//! Which command or button reaches which handler is decided here and nowhere else.

mod account;
mod admin;
mod agents;
mod conversation;
mod create;
mod menu;
mod settings;
mod soul;
pub(crate) mod views;

use std::sync::Arc;

pub(crate) use conversation::views::{chat_controls, daily_limit};
pub(crate) use settings::views as settings_views;

use self::account::views::login_hint;
use self::agents::views::delete_dialog;
use self::conversation::views::{chat_keyboard, message_body_placeholder};
use self::menu::views::welcome;
use super::action::Action;
use super::command::Command;
use super::engine::{After, Ctx, Inner, PlatformError};
use super::messenger::{MessageRef, Text};
use super::state::{Flow, UserState};

impl Inner {
    pub(crate) async fn command(
        self: &Arc<Self>,
        ctx: &Ctx,
        state: &mut UserState,
        name: &str,
        args: &str,
        message: Option<MessageRef>,
    ) -> Result<(), PlatformError> {
        let command = Command::parse(name);
        let login = command == Some(Command::Login);
        // The key must leave the chat before anything else happens, whatever state the user is in.
        let mut key_left_the_chat = true;
        if login
            && !args.is_empty()
            && let Some(message) = message
            && let Err(err) = self.messenger.delete(message).await
        {
            tracing::warn!(error = %err, "could not delete a /login message");
            key_left_the_chat = false;
        }
        if login && !ctx.in_private_chat() {
            // Everyone in a group has seen the key (and bots there may not delete messages).
            let mut note = "/login works only in a private chat with me: here everyone can read your key.".to_owned();
            if !args.is_empty() {
                note.push_str(if key_left_the_chat {
                    " I deleted your message and did not use the key; revoke it at libertai.io if anyone may have \
                     seen it."
                } else {
                    " I could not delete your message: delete it yourself and revoke the key at libertai.io."
                });
            }
            self.say(ctx.chat, Text::plain(note)).await;
            return Ok(());
        }
        let now = self.now();
        let flow = state.live_flow(now, self.config.flow_timeout).cloned();
        match (command, &flow) {
            (Some(Command::Cancel), _) => return self.cancel(ctx, state, flow).await,
            (Some(Command::Confirm), Some(Flow::CreateConfirm { name, model })) => {
                let (name, model) = (name.clone(), model.clone());
                return self.create_confirm(ctx, state, &name, &model, None).await;
            }
            (_, Some(flow)) => {
                state.clear_flow();
                let note = match flow {
                    Flow::SoulEdit { .. } => "Personality edit stopped; nothing was changed.",
                    _ => "Agent creation stopped.",
                };
                self.say(ctx.chat, Text::plain(note)).await;
            }
            _ => {
                if state.flow.is_some() {
                    state.clear_flow();
                }
            }
        }
        let Some(command) = command else {
            let text = format!("I don't know /{name}. /help lists what I can do.");
            self.say(ctx.chat, Text::plain(text)).await;
            return Ok(());
        };
        match command {
            Command::Start => self.start_command(ctx, state, args).await,
            Command::Help => self.help(ctx).await,
            Command::Create => self.create(ctx, state).await,
            Command::List => self.list(ctx).await,
            Command::Delete => self.delete_command(ctx, args).await,
            Command::Repair => self.repair(ctx, args).await,
            Command::Update => self.update(ctx, args).await,
            Command::Soul => self.soul(ctx, state, args).await,
            Command::Manage => self.leave_chat(ctx, state, false).await,
            Command::Reset => self.reset_ask(ctx, state).await,
            Command::Stop => {
                let note = self.stop_command(ctx, state, None).await?;
                self.say(ctx.chat, Text::plain(note)).await;
                Ok(())
            }
            Command::Login => self.login(ctx, args).await,
            Command::Logout => self.logout(ctx).await,
            Command::Account => self.account(ctx).await,
            Command::Verbose => self.verbose(ctx).await,
            Command::Dashboard => self.dashboard(ctx).await,
            Command::Pool => self.pool(ctx).await,
            Command::Confirm => {
                self.say(ctx.chat, Text::plain("There is nothing to confirm. /create starts a new agent.")).await;
                Ok(())
            }
            // Handled above, before any flow is touched.
            Command::Cancel => Ok(()),
        }
    }

    /// Returns the notice shown on the pressed button.
    pub(crate) async fn button(
        self: &Arc<Self>,
        ctx: &Ctx,
        state: &mut UserState,
        data: &str,
        message: MessageRef,
    ) -> Option<String> {
        match self.button_inner(ctx, state, data, message).await {
            Ok(notice) => notice,
            Err(err) => {
                tracing::error!(error = %err, "button failed");
                Some("Something went wrong; try again.".into())
            }
        }
    }

    pub(crate) async fn button_inner(
        self: &Arc<Self>,
        ctx: &Ctx,
        state: &mut UserState,
        data: &str,
        message: MessageRef,
    ) -> Result<Option<String>, PlatformError> {
        let now = self.now();
        let flow = state.live_flow(now, self.config.flow_timeout).cloned();
        let Some(action) = Action::decode(data) else {
            return Ok(Some("This button no longer does anything".into()));
        };
        // Wizard buttons belong to the flow; they do nothing once it is over.
        if action.is_wizard() {
            return self.wizard_button(ctx, state, flow, action, message).await;
        }
        let leaves_flow_alone = matches!(
            action,
            Action::RefreshStatus(_)
                | Action::ToggleTools
                | Action::DeleteCancelled
                | Action::ResetCancelled
                | Action::Stop(_)
        );
        if !leaves_flow_alone && flow.is_some() {
            state.clear_flow();
        }
        match action {
            Action::Create => self.create(ctx, state).await?,
            Action::List => self.list(ctx).await?,
            Action::Account => self.account(ctx).await?,
            Action::Help => self.help(ctx).await?,
            Action::Main => {
                self.say(ctx.chat, welcome()).await;
            }
            Action::ExitChat => self.leave_chat(ctx, state, true).await?,
            Action::Login => {
                self.say(ctx.chat, login_hint()).await;
            }
            Action::Logout => self.logout(ctx).await?,
            Action::DashboardRefresh => self.dashboard(ctx).await?,
            Action::ToggleTools => {
                let visible = self.store.user_toggle_show_tools(ctx.user_id()).await?;
                let mut text = Text::html(message_body_placeholder());
                text.buttons = chat_keyboard(visible);
                let _ = self.messenger.edit(message, text).await;
                return Ok(Some(if visible { "Tool calls are now shown" } else { "Tool calls are now hidden" }.into()));
            }
            Action::Chat(id) => self.open_chat(ctx, state, id).await?,
            Action::Update(id) => self.update(ctx, &id.to_string()).await?,
            Action::Repair(id) => self.repair(ctx, &id.to_string()).await?,
            Action::Soul(id) => self.soul(ctx, state, &id.to_string()).await?,
            Action::SoulEdit(id) => self.soul_edit(ctx, state, id, message).await?,
            Action::RefreshStatus(id) => {
                let status = match self.owned_agent(ctx.user_id(), id).await? {
                    Some(agent) => format!("Status: {}", views::status_word(agent.status)),
                    None => "This agent is gone".to_owned(),
                };
                return Ok(Some(status));
            }
            Action::DeleteAsk(id) => match self.owned_agent(ctx.user_id(), id).await? {
                Some(agent) => {
                    self.edit_or_say(ctx.chat, Some(message), delete_dialog(&agent)).await;
                }
                None => return Ok(Some("Agent not found".into())),
            },
            Action::DeleteConfirmed(id) => {
                let text = self.delete_agent(ctx, state, id).await?;
                self.edit_or_say(ctx.chat, Some(message), text).await;
            }
            Action::DeleteCancelled => {
                self.edit_or_say(ctx.chat, Some(message), Text::plain("Nothing was deleted.")).await;
                return Ok(Some("Cancelled".into()));
            }
            Action::ResetAsk => self.reset_ask(ctx, state).await?,
            Action::ResetConfirmed(id) => self.reset(ctx, state, id, message).await?,
            Action::ResetCancelled => {
                self.edit_or_say(ctx.chat, Some(message), Text::plain("Nothing was forgotten.")).await;
                return Ok(Some("Cancelled".into()));
            }
            Action::Stop(id) => return self.stop_command(ctx, state, Some(id)).await.map(Some),
            Action::Settings(id)
            | Action::SetSharing(id, _)
            | Action::BudgetMenu(id)
            | Action::SetBudget(id, _)
            | Action::VisitorLimitMenu(id)
            | Action::SetVisitorLimit(id, _)
            | Action::VisitorToolsMenu(id)
            | Action::ToggleVisitorTool(id, _)
            | Action::ReplaceLinkAsk(id)
            | Action::ReplaceLink(id)
            | Action::AgentUsage(id) => return self.settings_button(ctx, action.clone(), id, message).await,
            // Handled above, with the wizard.
            Action::CreateModel(_) | Action::CreateConfirm | Action::CreateCancel => {}
        }
        Ok(None)
    }

    pub(crate) async fn text(
        self: &Arc<Self>,
        ctx: &Ctx,
        state: &mut UserState,
        text: String,
    ) -> Result<After, PlatformError> {
        let now = self.now();
        match state.live_flow(now, self.config.flow_timeout).cloned() {
            Some(Flow::CreateName) => {
                self.create_name(ctx, state, &text).await;
                return Ok(After::Nothing);
            }
            Some(flow @ (Flow::CreateModel { .. } | Flow::CreateConfirm { .. })) => {
                state.set_flow(flow, now);
                self.say(ctx.chat, Text::plain("Use the buttons above to continue, or /cancel to stop.")).await;
                return Ok(After::Nothing);
            }
            Some(Flow::SoulEdit { agent }) => {
                return self.soul_text(ctx, state, agent, &text).await.map(|()| After::Nothing);
            }
            None => {
                if state.flow.is_some() {
                    state.clear_flow();
                }
            }
        }
        self.route_chat(ctx, state, text).await
    }

    pub(crate) async fn cancel(
        &self,
        ctx: &Ctx,
        state: &mut UserState,
        flow: Option<Flow>,
    ) -> Result<(), PlatformError> {
        state.clear_flow();
        let text = match flow {
            Some(Flow::SoulEdit { .. }) => "Personality edit cancelled; nothing was changed.",
            Some(_) => "Agent creation cancelled.",
            None => "There is nothing to cancel.",
        };
        self.say(ctx.chat, Text::plain(text)).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::{account, admin, agents, conversation, create, menu, settings, soul};
    use crate::domain::{Agent, AgentId, AgentStatus, Deployment, MODELS, Role};
    use crate::platform::action::Action;
    use crate::platform::messenger::{Button, Text};

    fn agent(status: AgentStatus) -> Agent {
        let now = Utc::now();
        Agent {
            id: AgentId(7),
            owner_id: 1,
            name: "Ada <script>".into(),
            system_prompt: "Be kind & brief.".into(),
            model: MODELS[0].id.into(),
            status,
            deleted: false,
            deployment: Deployment::default(),
            token_sealed: None,
            slug: "s1ug".into(),
            visitor_tools: Vec::new(),
            payer: Default::default(),
            lease: None,
            policy: Default::default(),
            usage_cursor: 0,
            runtime: Default::default(),
            python_id: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// Every view a feature draws, with agents in every status.
    fn every_view() -> Vec<Text> {
        let now = Utc::now();
        let agents: Vec<Agent> = AgentStatus::ALL.into_iter().map(agent).collect();
        let mut views = vec![
            menu::views::welcome(),
            menu::views::help(None, true),
            account::views::login_hint(),
            account::views::account_card(
                account::views::PlanView::NoKey,
                account::views::AgentCounts::default(),
                "<b>Tokens</b>",
            ),
            account::views::account_card(
                account::views::PlanView::OwnKey { hint: "sk-…abcd".into(), balance: Some(1.5) },
                account::views::AgentCounts::default(),
                "",
            ),
            account::views::account_card(
                account::views::PlanView::FreeTier {
                    used: 3,
                    limit: 50,
                    tokens_used: 1200,
                    tokens_limit: 500_000,
                    resets_in: "1h 2m".into(),
                },
                account::views::AgentCounts::default(),
                "",
            ),
            admin::views::dashboard(
                &agents,
                &[true, false, false, false, false],
                3,
                admin::views::PlanLine::NoKey,
                "",
                None,
                now,
            ),
            agents::views::no_agents(),
            agents::views::another_agent(1),
            conversation::views::chat_controls(true),
            conversation::views::daily_limit(50, 50, "3h 0m", true),
            conversation::views::daily_limit(50, 50, "3h 0m", false),
            conversation::views::chatting_with(&agents[0]),
            conversation::views::left_chat(Some("Ada"), true),
            conversation::views::reset_dialog(&agents[0]),
            conversation::views::reset_done(&agents[0]),
            create::views::model_menu("Ada"),
            create::views::ready_to_deploy("Ada", &MODELS[0], "this machine", None),
            soul::views::picker(&agents),
        ];
        for agent in &agents {
            views.push(agents::views::card(agent, "https://t.me/baal_bot?start=s1ug", now));
            views.push(agents::views::delete_dialog(agent));
            views.push(soul::views::card(agent));
            let allowed = ["web_fetch".to_owned(), "bash".to_owned()];
            let facts = settings::views::SettingsFacts {
                share_link: "https://t.me/baal_bot?start=s1ug",
                today_tokens: 1234,
                visitors_today: (2, 5),
                visitor_tools: &allowed,
            };
            views.push(settings::views::settings_card(agent, &facts));
            views.push(settings::views::budget_menu(agent));
            views.push(settings::views::visitor_limit_menu(agent));
            views.push(settings::views::visitor_tools_menu(agent, &allowed));
            views.push(settings::views::replace_link_dialog(agent));
            views.push(settings::views::link_replaced(agent, "https://t.me/baal_bot?start=n3w"));
            views.push(settings::views::sharing_paused(agent));
            for role in [Role::Owner, Role::Visitor] {
                views.push(settings::views::agent_budget_spent(agent, role, 1000, "1h 0m"));
                views.push(settings::views::free_tokens_spent(agent, role, 1000, "1h 0m"));
            }
            views.push(settings::views::visitor_limit(agent, 10, "1h 0m"));
            views.push(settings::views::background_spent(agent, "1h 0m"));
            views.push(settings::views::budget_notice(agent, 80, 800, 1000, "1h 0m"));
            let visitor = settings::views::VisitorLine { name: "@<script>".into(), ..Default::default() };
            views.push(settings::views::agent_usage(agent, "", &[visitor], 7));
        }
        views
    }

    #[test]
    fn every_button_a_view_draws_is_an_action_the_router_knows() {
        for text in every_view() {
            for button in text.buttons.iter().flatten() {
                if let Button::Callback { label, data } = button {
                    assert!(Action::decode(data).is_some(), "{label:?} sends {data:?}, which no handler decodes");
                }
            }
        }
    }

    #[test]
    fn names_users_chose_are_escaped_in_every_html_view() {
        for text in every_view() {
            assert!(!text.body.contains("<script>"), "unescaped name in {:?}", text.body);
        }
    }
}
