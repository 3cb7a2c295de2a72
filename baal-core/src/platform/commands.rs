//! Commands, buttons and the text of flows (the `/create` wizard, the `/soul` edit).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;

use super::Plan;
use super::action::Action;
use super::command::{Command, HelpSection};
use super::engine::{After, Ctx, Inner, PlatformError};
use super::jobs::JobKind;
use super::messenger::{Button, MessageRef, Text};
use super::render::escape_html;
use super::state::{Flow, UserState};
use crate::deploy::Tenancy;
use crate::domain::{Agent, AgentId, AgentStatus, MODELS, Model, NewAgent, Payer, UsageDecision, usage_day};
use crate::secrets::{SealContext, secret_hint};
use crate::store::AgentFilter;

/// Longest agent name, in characters.
const MAX_NAME_CHARS: usize = 64;
/// Shortest and longest personality, in characters.
const MIN_PROMPT_CHARS: usize = 10;
const MAX_PROMPT_CHARS: usize = 8000;

fn html(body: impl Into<String>) -> Text {
    Text::html(body)
}

fn e(text: &str) -> String {
    escape_html(text)
}

fn status_emoji(status: AgentStatus) -> &'static str {
    match status {
        AgentStatus::Running => "🟢",
        AgentStatus::Deploying => "🟡",
        AgentStatus::Pending => "⏳",
        AgentStatus::Failed => "🔴",
        AgentStatus::Stopped => "⚫",
    }
}

/// "3 days ago", "2 hours ago", "5 minutes ago".
pub(crate) fn age(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - then).num_seconds().max(0);
    let (n, unit) = if seconds >= 86_400 {
        (seconds / 86_400, "day")
    } else if seconds >= 3600 {
        (seconds / 3600, "hour")
    } else {
        (seconds / 60, "minute")
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// "5h 12m" until `at`.
fn until(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let minutes = (at - now).num_minutes().max(0);
    format!("{}h {}m", minutes / 60, minutes % 60)
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

fn default_prompt(name: &str) -> String {
    format!(
        "You are {name}, a capable AI assistant. You can run code, work with files and search the web. \
         Be helpful and concise, take initiative, and break larger tasks into clear steps."
    )
}

fn welcome() -> Text {
    html(
        "<b>Welcome to Baal</b>\nCreate your own AI agent in a minute, then share it with anyone.\n\n\
         What would you like to do?",
    )
    .row(vec![Button::action("🚀 Create an agent", Action::Create), Button::action("📋 My agents", Action::List)])
    .row(vec![Button::action("💳 Account", Action::Account), Button::action("ℹ️ Help", Action::Help)])
}

fn login_hint() -> Text {
    html(
        "<b>Use your own LibertAI key</b>\nSend <code>/login YOUR_API_KEY</code>. Your agents then run on \
         your credits, with no daily limit for you or your visitors.\nBaal deletes the message with \
         your key as soon as it arrives.\nGet a key at https://libertai.io",
    )
}

fn chat_keyboard(show_tools: bool) -> Vec<Vec<Button>> {
    vec![
        vec![Button::action("🚪 Exit chat", Action::ExitChat), Button::action("📋 My agents", Action::List)],
        vec![
            Button::action("💳 Account", Action::Account),
            Button::action(if show_tools { "👁️ Hide tools" } else { "🙈 Show tools" }, Action::ToggleTools),
        ],
    ]
}

pub(crate) fn with_rows(mut text: Text, rows: Vec<Vec<Button>>) -> Text {
    text.buttons.extend(rows);
    text
}

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

    async fn button_inner(
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
        if !matches!(action, Action::RefreshStatus(_) | Action::ToggleTools | Action::DeleteCancelled) && flow.is_some()
        {
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
                    Some(agent) => format!("Status: {}", agent.status),
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
                match check_name(&text) {
                    Err(problem) => {
                        state.set_flow(Flow::CreateName, now);
                        self.say(ctx.chat, Text::plain(problem)).await;
                    }
                    Ok(name) => {
                        state.set_flow(Flow::CreateModel { name: name.clone() }, now);
                        self.say(ctx.chat, model_menu(&name)).await;
                    }
                }
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

    async fn route_chat(&self, ctx: &Ctx, state: &mut UserState, text: String) -> Result<After, PlatformError> {
        if !ctx.in_private_chat() {
            self.say(ctx.chat, self.private_only()).await;
            return Ok(After::Nothing);
        }
        let Some(agent_id) = state.chat_agent else {
            self.say(
                ctx.chat,
                Text::plain(
                    "You're not talking to an agent yet. Open an agent's share link, pick one of yours \
                     in /list, or create one with /create.",
                ),
            )
            .await;
            return Ok(After::Nothing);
        };
        // The agent and who pays for it, in one read.
        let (payer, agent) = match self.store.agent_get(agent_id).await? {
            Some(agent) if !agent.deleted => (agent.payer, agent),
            _ => {
                state.chat_agent = None;
                self.say(ctx.chat, Text::plain("That agent no longer exists. You're back in Baal's menu.")).await;
                return Ok(After::Nothing);
            }
        };
        if agent.status != AgentStatus::Running || agent.deployment.vm_url.is_none() || agent.token_sealed.is_none() {
            let mut note = format!("{} isn't available right now (status: {}).", e(&agent.name), agent.status);
            if agent.owner_id == ctx.user_id() && agent.status == AgentStatus::Failed {
                note.push_str(&format!(" /repair {} tries again.", agent.id));
            }
            self.say(ctx.chat, html(note)).await;
            return Ok(After::Nothing);
        }
        if payer == Payer::Operator {
            let (day, resets_at) = usage_day(self.now());
            let limit = self.config.free_tier_daily_messages;
            let decision = self.store.usage_consume(ctx.user_id(), day, limit, resets_at).await?;
            if let UsageDecision::Refused { used, limit, resets_at } = decision {
                let body = format!(
                    "<b>Daily limit reached</b>\nYou've sent {used}/{limit} free messages today. The counter \
                     starts again in {} (00:00 UTC).\nConnect your own LibertAI key to chat without a limit.",
                    until(resets_at, self.now())
                );
                let text = html(body).row(vec![
                    Button::action("🔑 Connect a key", Action::Login),
                    Button::action("💳 Account", Action::Account),
                ]);
                self.say(ctx.chat, text).await;
                return Ok(After::Nothing);
            }
        }
        let first_time = !state.greeted.contains(&agent.id);
        if first_time {
            state.greeted.push(agent.id);
        }
        Ok(After::Chat { agent: Box::new(agent), text, first_time })
    }

    async fn cancel(&self, ctx: &Ctx, state: &mut UserState, flow: Option<Flow>) -> Result<(), PlatformError> {
        state.clear_flow();
        let text = match flow {
            Some(Flow::SoulEdit { .. }) => "Personality edit cancelled; nothing was changed.",
            Some(_) => "Agent creation cancelled.",
            None => "There is nothing to cancel.",
        };
        self.say(ctx.chat, Text::plain(text)).await;
        Ok(())
    }

    async fn start_command(&self, ctx: &Ctx, state: &mut UserState, args: &str) -> Result<(), PlatformError> {
        let payload = args.split_whitespace().next().unwrap_or("");
        if payload.is_empty() {
            self.say(ctx.chat, welcome()).await;
            return Ok(());
        }
        let key = payload.strip_prefix("agent_").unwrap_or(payload);
        let gone = "This agent doesn't exist or has been removed.";
        let agent = if key.bytes().all(|b| b.is_ascii_digit()) {
            // Numeric ids are guessable: they open only the caller's own agents.
            let Ok(id) = key.parse::<AgentId>() else {
                self.say(ctx.chat, Text::plain(gone)).await;
                return Ok(());
            };
            match self.store.agent_get(id).await? {
                Some(agent) if agent.owner_id == ctx.user_id() => Some(agent),
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
            self.store.agent_by_slug(key).await?
        };
        match agent {
            Some(agent) if !agent.deleted => self.open_chat_with(ctx, state, agent).await,
            _ => {
                self.say(ctx.chat, Text::plain(gone)).await;
                Ok(())
            }
        }
    }

    async fn open_chat(&self, ctx: &Ctx, state: &mut UserState, id: AgentId) -> Result<(), PlatformError> {
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
    fn private_only(&self) -> Text {
        let me = self.config.bot_username.as_deref().map_or_else(|| "me".to_owned(), |name| format!("@{name}"));
        Text::plain(format!(
            "Agents talk only in private chats. Open a private chat with {me} and send your message (or the \
             agent's share link) there."
        ))
    }

    async fn open_chat_with(&self, ctx: &Ctx, state: &mut UserState, agent: Agent) -> Result<(), PlatformError> {
        if !ctx.in_private_chat() {
            self.say(ctx.chat, self.private_only()).await;
            return Ok(());
        }
        if agent.status != AgentStatus::Running {
            let text = format!(
                "<b>{}</b> isn't ready yet (status: {}). Try again in a few minutes.",
                e(&agent.name),
                agent.status
            );
            self.say(ctx.chat, html(text)).await;
            return Ok(());
        }
        state.chat_agent = Some(agent.id);
        let text = format!(
            "You're now chatting with <b>{}</b>. Just type a message.\n/manage or the button below ends the chat.",
            e(&agent.name)
        );
        self.say(ctx.chat, html(text).row(vec![Button::action("🚪 Exit chat", Action::ExitChat)])).await;
        Ok(())
    }

    async fn leave_chat(&self, ctx: &Ctx, state: &mut UserState, show_menu: bool) -> Result<(), PlatformError> {
        let left = state.chat_agent.take();
        let text = match left {
            Some(id) => {
                let name = self.store.agent_get(id).await?.map(|a| a.name).unwrap_or_else(|| "the agent".into());
                format!("You left the chat with <b>{}</b>. You're back in Baal's menu.", e(&name))
            }
            None => "You're not chatting with an agent; this is Baal's menu.".into(),
        };
        let text = if show_menu { with_rows(html(text), welcome().buttons) } else { html(text) };
        self.say(ctx.chat, text).await;
        Ok(())
    }

    async fn help(&self, ctx: &Ctx) -> Result<(), PlatformError> {
        let wait = match self.deployer.usual_deploy_duration() {
            Some(usual) => format!("Wait {} while Baal deploys it", usually_takes(usual)),
            None => "Wait while Baal deploys it".to_owned(),
        };
        let admin = self.config.is_admin(ctx.user_id());
        let section = |title: &str, section: HelpSection| {
            format!("<b>{title}</b>\n{}", Command::help_lines(section, admin).join("\n"))
        };
        let mut body = format!(
            "<b>Baal: your own AI agent, shared by link</b>\n\n\
             <b>Get started</b>\n1. /create: name your agent and pick a model\n\
             2. {wait}\n3. Chat with it, and share its link\n\n{}\n\n{}",
            section("Agents", HelpSection::Agents),
            section("Account", HelpSection::Account),
        );
        if admin {
            body.push_str(&format!(
                "\n\n{}\n/dashboard also shows the whole fleet",
                section("Operators", HelpSection::Operators)
            ));
        }
        let text = html(body)
            .row(vec![
                Button::url("📚 Documentation", "https://github.com/Libertai/baal"),
                Button::url("💬 Support", "https://t.me/libertai"),
            ])
            .row(vec![Button::url("🐛 Report an issue", "https://github.com/Libertai/baal/issues")]);
        self.say(ctx.chat, text).await;
        Ok(())
    }

    async fn create(&self, ctx: &Ctx, state: &mut UserState) -> Result<(), PlatformError> {
        state.clear_flow();
        if let Some(refusal) = self.hosting_refusal(ctx) {
            self.say(ctx.chat, refusal).await;
            return Ok(());
        }
        let used = self.store.count_active_agents(ctx.user_id()).await?;
        let max = self.config.max_agents_per_user;
        if used >= u64::from(max) {
            let text = format!(
                "You already have {used} agents, the most one person can have ({max}). Delete one with /list first."
            );
            self.say(ctx.chat, Text::plain(text)).await;
            return Ok(());
        }
        // Creating an agent leaves chat mode: the next text is its name, not a message.
        state.chat_agent = None;
        state.set_flow(Flow::CreateName, self.now());
        self.say(
            ctx.chat,
            html(
                "<b>Let's create your agent.</b>\n<b>Step 1 of 2:</b> what should it be called? \
                 (one line, up to 64 characters)\n/cancel stops.",
            ),
        )
        .await;
        Ok(())
    }

    /// Why this user may not create an agent here, when the deployer hosts agents for the
    /// operator only and the user is not one of the operator's admins.
    fn hosting_refusal(&self, ctx: &Ctx) -> Option<Text> {
        let operator_only = self.deployer.tenancy() == Tenancy::OperatorOnly;
        (operator_only && !self.config.is_admin(ctx.user_id())).then(|| {
            Text::plain(
                "This Baal runs agents only for its operator: on this machine an agent's tools could \
                 reach what belongs to others, so it does not host agents for the public. You can still \
                 chat with agents others share with you.",
            )
        })
    }

    async fn wizard_button(
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
                let how_long = match self.deployer.usual_deploy_duration() {
                    Some(usual) => format!("; this usually takes {}", usually_takes(usual)),
                    None => String::new(),
                };
                let body = format!(
                    "<b>Ready to deploy</b>\nName: <b>{}</b>\nModel: {} {}\n\nBaal deploys it on {}{how_long}.\n\
                     <i>Tip: /soul changes its personality at any time.</i>",
                    e(&name),
                    model.emoji,
                    e(model.display_name),
                    where_agents_run(self.deployer.name()),
                );
                let text = html(body).row(vec![
                    Button::action("✅ Deploy", Action::CreateConfirm),
                    Button::action("❌ Cancel", Action::CreateCancel),
                ]);
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

    async fn create_confirm(
        self: &Arc<Self>,
        ctx: &Ctx,
        state: &mut UserState,
        name: &str,
        model: &str,
        message: Option<MessageRef>,
    ) -> Result<(), PlatformError> {
        state.clear_flow();
        if let Some(refusal) = self.hosting_refusal(ctx) {
            self.edit_or_say(ctx.chat, message, refusal).await;
            return Ok(());
        }
        let used = self.store.count_active_agents(ctx.user_id()).await?;
        let max = self.config.max_agents_per_user;
        if used >= u64::from(max) {
            let text = format!(
                "You already have {used} agents, the most one person can have ({max}). Delete one with /list first."
            );
            self.edit_or_say(ctx.chat, message, Text::plain(text)).await;
            return Ok(());
        }
        if ctx.user.api_key_sealed.is_none() && self.config.libertai_api_key.is_none() {
            let text =
                "Baal has no LibertAI key to run agents with. Connect your own with /login <key>, then /create again.";
            self.edit_or_say(ctx.chat, message, Text::plain(text)).await;
            return Ok(());
        }
        let new = NewAgent::new(ctx.user_id(), name, default_prompt(name), model);
        let agent = self.store.agent_create(new).await?;
        // Sealed once the row exists, because the seal names the agent's id; an agent left
        // without one (a crash in between) gets its token from its deployment job.
        self.mint_token(agent.id).await?;
        let body = format!("<b>{}</b> (#{}) is created. Deploying it now…", e(&agent.name), agent.id);
        let progress = self.edit_or_say(ctx.chat, message, html(body)).await;
        self.start_job(agent.id, ctx.chat, progress, JobKind::Deploy);
        Ok(())
    }

    async fn list(&self, ctx: &Ctx) -> Result<(), PlatformError> {
        let agents = self.store.list_agents(&AgentFilter::all().owner(ctx.user_id())).await?;
        if agents.is_empty() {
            let text = html("<b>Your agents</b>\nYou have no agents yet.")
                .row(vec![Button::action("➕ Create your first agent", Action::Create)]);
            self.say(ctx.chat, text).await;
            return Ok(());
        }
        let max = self.config.max_agents_per_user as usize;
        let header = format!("<b>Your agents</b> ({}/{} slots used)", agents.len(), max);
        self.say(ctx.chat, html(header)).await;
        let now = self.now();
        for agent in &agents {
            self.say(ctx.chat, self.card(agent, now)).await;
        }
        if agents.len() < max {
            let left = max - agents.len();
            let label = format!("➕ Create an agent ({left} slot{} left)", if left == 1 { "" } else { "s" });
            self.say(ctx.chat, Text::plain("Want another agent?").row(vec![Button::action(label, Action::Create)]))
                .await;
        }
        Ok(())
    }

    fn card(&self, agent: &Agent, now: DateTime<Utc>) -> Text {
        let mut body = format!(
            "{} <b>{}</b> #{}\n<code>{}</code> · {} · created {}",
            status_emoji(agent.status),
            e(&agent.name),
            agent.id,
            e(&agent.model),
            agent.status,
            age(agent.created_at, now)
        );
        let id = agent.id;
        let delete = Button::action("🗑️ Delete", Action::DeleteAsk(id));
        let rows = match agent.status {
            AgentStatus::Running => {
                body.push_str(&format!("\n🔗 Share: {}", e(&self.share_link(agent))));
                vec![
                    vec![
                        Button::action("💬 Chat", Action::Chat(id)),
                        Button::action("📝 Personality", Action::Soul(id)),
                    ],
                    vec![Button::action("🔄 Update", Action::Update(id)), delete],
                ]
            }
            AgentStatus::Deploying => {
                vec![vec![Button::action("🔄 Refresh", Action::RefreshStatus(id)), delete]]
            }
            AgentStatus::Failed => vec![vec![Button::action("🔧 Repair", Action::Repair(id)), delete]],
            AgentStatus::Pending | AgentStatus::Stopped => vec![vec![delete]],
        };
        with_rows(html(body), rows)
    }

    async fn delete_command(&self, ctx: &Ctx, args: &str) -> Result<(), PlatformError> {
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
    async fn agent_arg(&self, ctx: &Ctx, args: &str, usage: &str) -> Option<AgentId> {
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
    async fn delete_agent(&self, ctx: &Ctx, state: &mut UserState, id: AgentId) -> Result<Text, PlatformError> {
        let Some(agent) = self.owned_agent(ctx.user_id(), id).await? else {
            return Ok(Text::plain("This agent is already gone."));
        };
        if let Some(refusal) = self.delete_for_owner(&agent).await? {
            return Ok(refusal);
        }
        if state.chat_agent == Some(agent.id) {
            state.chat_agent = None;
        }
        state.greeted.retain(|greeted| *greeted != agent.id);
        let text = format!("✅ <b>{}</b> is deleted: it no longer runs and its slot is free.", e(&agent.name));
        Ok(html(text))
    }

    async fn repair(self: &Arc<Self>, ctx: &Ctx, args: &str) -> Result<(), PlatformError> {
        if args.is_empty() {
            let agents = self.store.list_agents(&AgentFilter::all().owner(ctx.user_id())).await?;
            let broken: Vec<_> = agents
                .iter()
                .filter(|a| matches!(a.status, AgentStatus::Failed | AgentStatus::Deploying | AgentStatus::Pending))
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
        if agent.status == AgentStatus::Running {
            let text = format!("{} is running; nothing to repair. /update {} restarts it.", agent.name, agent.id);
            self.say(ctx.chat, Text::plain(text)).await;
            return Ok(());
        }
        let progress = self.say(ctx.chat, html(format!("Repairing <b>{}</b>…", e(&agent.name)))).await;
        self.start_job(agent.id, ctx.chat, progress, JobKind::Deploy);
        Ok(())
    }

    async fn update(self: &Arc<Self>, ctx: &Ctx, args: &str) -> Result<(), PlatformError> {
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
        let progress = self.say(ctx.chat, html(format!("Updating <b>{}</b>…", e(&agent.name)))).await;
        self.start_job(
            agent.id,
            ctx.chat,
            progress,
            JobKind::Redeploy { done: format!("✅ {} is updated and running.", agent.name) },
        );
        Ok(())
    }

    async fn soul(&self, ctx: &Ctx, state: &mut UserState, args: &str) -> Result<(), PlatformError> {
        let id = if args.is_empty() {
            match state.chat_agent {
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
            let mut text = Text::plain("Whose personality would you like to see or change?");
            for agent in agents {
                text = text.row(vec![Button::action(format!("📝 {}", agent.name), Action::Soul(agent.id))]);
            }
            self.say(ctx.chat, text).await;
            return Ok(());
        };
        let Some(agent) = self.owned_agent(ctx.user_id(), id).await? else {
            self.say(ctx.chat, Text::plain("You have no agent with that id. /list shows yours.")).await;
            return Ok(());
        };
        let body = format!(
            "<b>{}'s personality</b>\n<code>{}</code>\n\nThese are the instructions the agent follows in every conversation.",
            e(&agent.name),
            e(&truncate_chars(&agent.system_prompt, 800))
        );
        let text = html(body).row(vec![
            Button::action("✏️ Change it", Action::SoulEdit(agent.id)),
            Button::action("« My agents", Action::List),
        ]);
        self.say(ctx.chat, text).await;
        Ok(())
    }

    async fn soul_edit(
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
        let body = format!(
            "<b>New personality for {}</b>\nNow:\n<code>{}</code>\n\nSend the new instructions as your next message, \
             or /cancel to keep these.",
            e(&agent.name),
            e(&truncate_chars(&agent.system_prompt, 500))
        );
        self.edit_or_say(ctx.chat, Some(message), html(body)).await;
        Ok(())
    }

    async fn soul_text(
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

    async fn login(self: &Arc<Self>, ctx: &Ctx, args: &str) -> Result<(), PlatformError> {
        let Some(key) = args.split_whitespace().next() else {
            self.say(
                ctx.chat,
                Text::plain(
                    "Usage: /login <your LibertAI API key>\nGet a key at https://libertai.io. Baal deletes the \
                     message with your key as soon as it arrives.",
                ),
            )
            .await;
            return Ok(());
        };
        let key = secrecy::SecretString::from(key.to_owned());
        let hint = secret_hint(&key, 4);
        let balance = match self.check_key(&key).await {
            KeyCheck::Valid(balance) => balance,
            KeyCheck::Invalid => {
                self.say(ctx.chat, Text::plain("LibertAI doesn't accept this key. Check it and try /login again."))
                    .await;
                return Ok(());
            }
            KeyCheck::Unavailable => {
                self.say(
                    ctx.chat,
                    Text::plain(
                        "Baal couldn't reach LibertAI to check the key. Nothing was saved; try again in a moment.",
                    ),
                )
                .await;
                return Ok(());
            }
        };
        let sealed = self.secrets.seal_str_for(&SealContext::user_api_key(ctx.user_id()), key.expose_secret())?;
        self.store.user_set_api_key(ctx.user_id(), Some(sealed)).await?;
        let mut text = format!("🔑 Key {hint} connected. Balance: {balance:.2} credits.");
        let restarted = self.rekey_running_agents(ctx, "your key").await?;
        if restarted > 0 {
            text.push_str(&format!("\nRestarting {restarted} running agent(s) so they use it."));
        }
        self.say(ctx.chat, Text::plain(text)).await;
        Ok(())
    }

    async fn logout(self: &Arc<Self>, ctx: &Ctx) -> Result<(), PlatformError> {
        self.store.user_set_api_key(ctx.user_id(), None).await?;
        let mut text = String::from("Your LibertAI key is removed; you're on the free tier again.");
        if self.config.libertai_api_key.is_some() {
            let restarted = self.rekey_running_agents(ctx, "Baal's key").await?;
            if restarted > 0 {
                text.push_str(&format!("\nRestarting {restarted} running agent(s) so they stop using your key."));
            }
        } else {
            text.push_str("\nYour running agents keep the key they were deployed with until you /update them.");
        }
        self.say(ctx.chat, Text::plain(text)).await;
        Ok(())
    }

    /// Redeploys the caller's running agents so they pick up the key now in effect.
    async fn rekey_running_agents(self: &Arc<Self>, ctx: &Ctx, whose: &str) -> Result<usize, PlatformError> {
        let running =
            self.store.list_agents(&AgentFilter::all().owner(ctx.user_id()).status(AgentStatus::Running)).await?;
        let mut count = 0;
        for agent in running.into_iter().filter(|a| !self.is_in_flight(a.id)) {
            let done = format!("✅ {} now runs on {whose}.", agent.name);
            self.start_job(agent.id, ctx.chat, None, JobKind::Redeploy { done });
            count += 1;
        }
        Ok(count)
    }

    async fn check_key(&self, key: &secrecy::SecretString) -> KeyCheck {
        let url = format!("{}/credits/balance", self.config.libertai_api_base_url.trim_end_matches('/'));
        let response = match self.http.get(url).bearer_auth(key.expose_secret()).send().await {
            Ok(response) => response,
            Err(err) => {
                tracing::warn!(error = %err.without_url(), "LibertAI balance check failed");
                return KeyCheck::Unavailable;
            }
        };
        match response.status().as_u16() {
            200 => match response.json::<serde_json::Value>().await {
                Ok(body) => KeyCheck::Valid(body.get("balance").and_then(serde_json::Value::as_f64).unwrap_or(0.0)),
                Err(_) => KeyCheck::Unavailable,
            },
            400..=499 => KeyCheck::Invalid,
            _ => KeyCheck::Unavailable,
        }
    }

    async fn account(&self, ctx: &Ctx) -> Result<(), PlatformError> {
        let user = self.store.user_get(ctx.user_id()).await?.unwrap_or_else(|| ctx.user.clone());
        let agents = self.store.list_agents(&AgentFilter::all().owner(ctx.user_id())).await?;
        let count = |status| agents.iter().filter(|a| a.status == status).count();
        let summary = format!(
            "<b>Your agents</b>\n{}/{} slots · 🟢 {} running · 🟡 {} deploying · 🔴 {} failed",
            agents.len(),
            self.config.max_agents_per_user,
            count(AgentStatus::Running),
            count(AgentStatus::Deploying) + count(AgentStatus::Pending),
            count(AgentStatus::Failed)
        );
        let now = self.now();
        let context = SealContext::user_api_key(user.id);
        let own_key =
            user.api_key_sealed.as_deref().and_then(|sealed| self.secrets.open_str_for(&context, sealed).ok());
        let text = match (Plan::of(&user, &self.config), own_key) {
            (Plan::OwnKey, Some(key)) => {
                let balance = match self.check_key(&key).await {
                    KeyCheck::Valid(balance) => format!("{balance:.2} credits"),
                    _ => "unavailable right now".into(),
                };
                let body = format!(
                    "<b>Your account</b>\n✨ Your own LibertAI key ({}) · balance: {balance}\nNo daily message limit on your agents.\n\n{summary}",
                    secret_hint(&key, 4)
                );
                html(body)
                    .row(vec![
                        Button::action("🚪 Log out", Action::Logout),
                        Button::action("📋 My agents", Action::List),
                    ])
                    .row(vec![Button::action("🔄 Refresh", Action::Account)])
            }
            (Plan::NoKey, _) => {
                let body = format!(
                    "<b>Your account</b>\n🔑 No free tier here: connect your own LibertAI key and your agents \
                     run on your credits.\n\n{summary}"
                );
                html(body).row(vec![
                    Button::callback("🔑 Connect a key", "account_login"),
                    Button::callback("📋 My agents", "quick_list"),
                ])
            }
            // Also a stored key that no longer opens: its deployments ask for `/login` again.
            _ => {
                let (day, resets_at) = usage_day(now);
                let used = self.store.usage_get(ctx.user_id(), day).await?;
                let body = format!(
                    "<b>Your account</b>\n🆓 Free tier · {used}/{} messages today · resets in {} (00:00 UTC)\n\n{summary}\n\n\
                     <b>No limits</b>\nConnect your own LibertAI key and your agents run on your credits.",
                    self.config.free_tier_daily_messages,
                    until(resets_at, now)
                );
                html(body).row(vec![
                    Button::action("🔑 Connect a key", Action::Login),
                    Button::action("📋 My agents", Action::List),
                ])
            }
        };
        self.say(ctx.chat, text).await;
        Ok(())
    }

    async fn verbose(&self, ctx: &Ctx) -> Result<(), PlatformError> {
        let visible = self.store.user_toggle_show_tools(ctx.user_id()).await?;
        let text = if visible { "Tool calls are now shown in chat." } else { "Tool calls are now hidden." };
        self.say(ctx.chat, Text::plain(text)).await;
        Ok(())
    }

    async fn dashboard(&self, ctx: &Ctx) -> Result<(), PlatformError> {
        let agents = self.store.list_agents(&AgentFilter::all().owner(ctx.user_id())).await?;
        let checks = agents.iter().map(|agent| async move {
            if agent.status != AgentStatus::Running {
                return false;
            }
            let Some(endpoint) = self.endpoint(agent) else { return false };
            matches!(
                tokio::time::timeout(std::time::Duration::from_secs(5), self.proxy.health(&endpoint)).await,
                Ok(Ok(_))
            )
        });
        let healthy = futures_util::future::join_all(checks).await;
        let now = self.now();
        let up = healthy.iter().filter(|h| **h).count();
        let down = agents.iter().zip(&healthy).filter(|(a, h)| a.status == AgentStatus::Running && !**h).count();
        let mut body = format!(
            "<b>Dashboard</b>\nAgents: {}/{} slots · {up} answering · {down} not answering\n",
            agents.len(),
            self.config.max_agents_per_user
        );
        for (agent, healthy) in agents.iter().zip(&healthy) {
            let emoji = if *healthy {
                "🟢"
            } else if agent.status == AgentStatus::Running {
                "🔴"
            } else {
                status_emoji(agent.status)
            };
            let state = if agent.status == AgentStatus::Running && !healthy {
                "not answering".to_owned()
            } else {
                agent.status.to_string()
            };
            body.push_str(&format!(
                "\n{emoji} <b>{}</b> #{}: {state}, created {}",
                e(&agent.name),
                agent.id,
                age(agent.created_at, now)
            ));
        }
        let user = self.store.user_get(ctx.user_id()).await?.unwrap_or_else(|| ctx.user.clone());
        match Plan::of(&user, &self.config) {
            Plan::OwnKey => body.push_str("\n\nPlan: your own LibertAI key"),
            Plan::FreeTier { daily_messages } => {
                let used = self.store.usage_get(ctx.user_id(), usage_day(now).0).await?;
                body.push_str(&format!("\n\nPlan: free tier, {used}/{daily_messages} messages today"));
            }
            _ => body.push_str("\n\nPlan: none; /login with your own LibertAI key"),
        }
        if self.config.is_admin(ctx.user_id()) {
            let fleet = self.store.list_agents(&AgentFilter::all()).await?;
            let users = self.store.users_list().await?;
            body.push_str(&format!(
                "\n\n<b>Fleet</b> ({} deployer)\nUsers: {}\nAgents: {}",
                self.deployer.name(),
                users.len(),
                fleet.len()
            ));
            for status in AgentStatus::ALL {
                let n = fleet.iter().filter(|a| a.status == status).count();
                if n > 0 {
                    body.push_str(&format!(" · {} {n} {status}", status_emoji(status)));
                }
            }
            let (day, _) = usage_day(now);
            let messages: u32 = self.store.usage_on(day).await?.iter().map(|row| row.messages).sum();
            body.push_str(&format!("\nFree-tier messages today: {messages}"));
        }
        let text = html(body).row(vec![
            Button::action("🔄 Refresh", Action::DashboardRefresh),
            Button::action("📋 My agents", Action::List),
        ]);
        self.say(ctx.chat, text).await;
        Ok(())
    }

    async fn pool(&self, ctx: &Ctx) -> Result<(), PlatformError> {
        if !self.config.is_admin(ctx.user_id()) {
            self.say(ctx.chat, Text::plain("/pool is for Baal's operators only.")).await;
            return Ok(());
        }
        if !self.config.pool_enabled {
            self.say(ctx.chat, Text::plain("The VM pool is off (POOL_ENABLED=false).")).await;
            return Ok(());
        }
        let vms = match self.store.pool_store() {
            Some(pool) => pool.pool_list().await?,
            None => Vec::new(),
        };
        let mut body = String::from("<b>VM pool</b>");
        for status in crate::domain::PoolStatus::ALL {
            let n = vms.iter().filter(|vm| vm.status == status).count();
            body.push_str(&format!("\n{status}: {n}"));
        }
        body.push_str(&format!("\n─────────────\nTotal: {}", vms.len()));
        self.say(ctx.chat, html(body)).await;
        Ok(())
    }
}

enum KeyCheck {
    Valid(f64),
    Invalid,
    Unavailable,
}

/// A deployer's usual duration as users are told it: rough on purpose, since it is a typical
/// figure, not a promise.
fn usually_takes(usual: std::time::Duration) -> String {
    match usual.as_secs() {
        0..=10 => "a few seconds".to_owned(),
        11..=59 => "less than a minute".to_owned(),
        60..=150 => "a minute or two".to_owned(),
        secs => format!("about {} minutes", secs.div_ceil(60)),
    }
}

fn where_agents_run(deployer: &str) -> &'static str {
    match deployer {
        "aleph" => "its own Aleph Cloud VM",
        "local" => "this machine",
        _ => "its own machine",
    }
}

fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The `toggle_tools` button edits only the keyboard; the text it carries is the chat banner's.
fn message_body_placeholder() -> &'static str {
    "Chat controls:"
}

fn model_menu(name: &str) -> Text {
    let mut body = format!("Your agent will be called <b>{}</b>.\n\n<b>Step 2 of 2:</b> pick a model.\n", e(name));
    let mut text = Text::html(String::new());
    for model in MODELS {
        body.push_str(&format!(
            "\n<b>{} {}</b>\n{}\n• Best for {}\n",
            model.emoji,
            e(model.display_name),
            e(model.description),
            e(model.best_for)
        ));
        text = text.row(vec![Button::action(
            format!("{} {}", model.emoji, model.display_name),
            Action::CreateModel(model.id.to_owned()),
        )]);
    }
    text.body = body;
    text
}

fn delete_dialog(agent: &Agent) -> Text {
    let body = format!(
        "<b>Delete this agent?</b>\nAgent: <b>{}</b> #{}\nModel: <code>{}</code>\nStatus: {}\n\n\
         • it stops for good, with everything it runs on\n• its conversations and files are deleted\n\
         • its share link stops working\n• one slot is freed\n\n<b>This can't be undone.</b>",
        e(&agent.name),
        agent.id,
        e(&agent.model),
        agent.status
    );
    html(body).row(vec![
        Button::action("⚠️ Yes, delete", Action::DeleteConfirmed(agent.id)),
        Button::action("❌ Cancel", Action::DeleteCancelled),
    ])
}

/// The keyboard shown under the first answer of an agent in a chat.
pub(crate) fn chat_controls(show_tools: bool) -> Text {
    let mut text = Text::plain(message_body_placeholder());
    text.buttons = chat_keyboard(show_tools);
    text
}

/// A question with one button per agent, each performing `action` on its agent.
fn agent_picker<'a>(
    question: &str,
    agents: impl IntoIterator<Item = &'a Agent>,
    action: impl Fn(AgentId) -> Action,
) -> Text {
    agents.into_iter().fold(Text::plain(question), |text, agent| {
        text.row(vec![Button::action(format!("{} (#{})", agent.name, agent.id), action(agent.id))])
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::usually_takes;

    #[test]
    fn usual_durations_read_as_people_say_them() {
        for (secs, said) in [
            (0, "a few seconds"),
            (10, "a few seconds"),
            (11, "less than a minute"),
            (60, "a minute or two"),
            (150, "a minute or two"),
            (151, "about 3 minutes"),
        ] {
            assert_eq!(usually_takes(Duration::from_secs(secs)), said, "{secs} s");
        }
    }

    #[cfg(feature = "local")]
    #[test]
    fn the_local_deployer_says_a_few_seconds() {
        use crate::deploy::Deployer as _;
        let dir = tempfile::tempdir().unwrap();
        let local = crate::deploy::local::LocalDeployer::new(dir.path(), "baal-agent").unwrap();
        assert_eq!(usually_takes(local.usual_deploy_duration().unwrap()), "a few seconds");
    }
}
