//! Deployments as durable jobs: each step is recorded before it is taken, facts are stored as
//! the deployer reports them, progress is shown in one edited message, and unfinished jobs are
//! resumed when the platform starts again. A job runs only under the agent's lease
//! ([`super::lease`]), so no two processes ever deploy (or delete) one agent at once.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::Plan;
use super::action::Action;
use super::engine::{Inner, PlatformError};
use super::lease;
use super::messenger::{Button, ChatId, MessageRef, Text};
use super::render::escape_html;
use crate::deploy::{AgentSpec, DeployError, DeployReporter, DeployStep};
use crate::domain::{Agent, AgentId, AgentRuntime, AgentStatus, Deployment, EventOutcome, EventStep, Payer};
use crate::proxy::AgentEndpoint;
use crate::secrets::{SealContext, SecretBox, generate_token};
use crate::store::{AgentFilter, Store};

/// What a job does.
#[derive(Debug, Clone)]
pub(crate) enum JobKind {
    /// A first deployment or a repair (with the stored facts).
    Deploy,
    /// A deployment a job that died left unfinished, deployed again from the stored facts; the
    /// owner is told once this process holds the lease.
    Resume,
    /// New settings for a running agent; `done` is shown when it succeeds.
    Redeploy { done: String },
}

impl JobKind {
    /// The step the job's events are recorded under.
    fn step(&self) -> EventStep {
        match self {
            JobKind::Deploy | JobKind::Resume => EventStep::Deploy,
            JobKind::Redeploy { .. } => EventStep::Redeploy,
        }
    }
}

/// What [`crate::platform::Platform::convert_imported`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Converted {
    /// The agent runs Baal's agent now.
    Converted,
    /// It was not converted; what went wrong was told (the Python agent runs as before, or the
    /// agent is `failed` when it had no agent answering before either).
    Failed,
    /// Another job or process is deploying or deleting it: try again later.
    Busy,
    /// It already runs Baal's agent: nothing to do.
    NotImported,
    /// No agent (or a deleted one) has that id.
    NoSuchAgent,
}

/// Introduces a freshly deployed agent in its owner's conversation, so it remembers doing so.
const INTRO_PROMPT: &str =
    "Introduce yourself briefly and warmly (2-3 sentences): say your name and what you can help with.";

impl Inner {
    /// How the platform reaches `agent`, if it is deployed and its secret opens.
    pub(crate) fn endpoint(&self, agent: &Agent) -> Option<AgentEndpoint> {
        let base_url = agent.deployment.vm_url.as_deref()?;
        let token =
            self.secrets.open_str_for(&SealContext::agent_token(agent.id), agent.token_sealed.as_deref()?).ok()?;
        Some(AgentEndpoint::new(base_url, token))
    }

    /// A fresh bearer secret for `agent`, sealed for its row and stored: right after the row is
    /// created, and by the agent's deployment when a crash in between left it without one.
    pub(crate) async fn mint_token(&self, agent: AgentId) -> Result<(SecretString, Vec<u8>), PlatformError> {
        let token = generate_token();
        let sealed = self.store_token(agent, &token).await?;
        Ok((token, sealed))
    }

    /// Seals `token` for `agent`'s row and stores it as its bearer secret; returns it sealed.
    pub(crate) async fn store_token(&self, agent: AgentId, token: &SecretString) -> Result<Vec<u8>, PlatformError> {
        let sealed = self.secrets.seal_str_for(&SealContext::agent_token(agent), token.expose_secret())?;
        self.store.agent_set_token(agent, &sealed).await?;
        Ok(sealed)
    }

    /// `agent`'s bearer secret: opened, or minted when a crash right after its creation left it
    /// without one. A token sealed before seals named their row is sealed again for its own here,
    /// since nothing else ever rewrites a token. `agent` is kept in step with what is stored.
    async fn agent_token(&self, agent: &mut Agent) -> Result<SecretString, String> {
        let Some(sealed) = agent.token_sealed.clone() else {
            let (token, sealed) = self.mint_token(agent.id).await.map_err(|err| err.to_string())?;
            agent.token_sealed = Some(sealed);
            return Ok(token);
        };
        let context = SealContext::agent_token(agent.id);
        let token = self.secrets.open_str_for(&context, &sealed).map_err(|_| {
            "the agent's secret can't be opened (was BOT_ENCRYPTION_KEY changed, or was it copied from another agent?)"
                .to_owned()
        })?;
        if SecretBox::needs_resealing(&sealed) {
            match self.secrets.seal_str_for(&context, token.expose_secret()) {
                Ok(resealed) => match self.store.agent_set_token(agent.id, &resealed).await {
                    Ok(()) => agent.token_sealed = Some(resealed),
                    // The old seal still opens; the next deployment tries again.
                    Err(err) => {
                        tracing::warn!(agent = %agent.id, error = %err, "could not seal the agent's token for its row")
                    }
                },
                Err(err) => {
                    tracing::warn!(agent = %agent.id, error = %err, "could not seal the agent's token for its row")
                }
            }
        }
        Ok(token)
    }

    /// The spec a deployer needs, with the key of whoever pays.
    pub(super) async fn spec(&self, agent: &mut Agent) -> Result<(AgentSpec, Payer), String> {
        let owner = self.store.user_get(agent.owner_id).await.map_err(|err| err.to_string())?;
        let sealed = owner.and_then(|user| user.api_key_sealed);
        let plan = Plan::decide(sealed.is_some(), &self.config);
        let (key, payer) = match (plan, sealed, &self.config.libertai_api_key) {
            (Plan::OwnKey, Some(sealed), _) => {
                let key = self
                    .secrets
                    .open_str_for(&SealContext::user_api_key(agent.owner_id), &sealed)
                    .map_err(|_| "the owner's LibertAI key can't be opened; /login again".to_owned())?;
                (key, Payer::Owner)
            }
            (Plan::FreeTier { .. }, _, Some(key)) => (key.clone(), Payer::Operator),
            _ => return Err("no LibertAI key to run it with: connect yours with /login <key>".into()),
        };
        let secret = self.agent_token(agent).await?;
        let mut spec = AgentSpec::new(
            agent.id,
            agent.name.clone(),
            agent.system_prompt.clone(),
            agent.model.clone(),
            key,
            self.config.libertai_api_base_url.clone(),
            secret,
            agent.owner_id.to_string(),
        );
        // Within what the operator allows now, as each visitor turn is.
        spec.visitor_tools = self.visitor_tools_of(agent);
        spec.existing = agent.deployment.clone();
        Ok((spec, payer))
    }

    /// Converts the imported agent `id` now, in this task (`baal-cli agents convert`), telling
    /// `chat` how it goes as the bot's job would tell its owner.
    pub(crate) async fn convert_imported(
        self: &Arc<Self>,
        id: AgentId,
        chat: ChatId,
    ) -> Result<Converted, PlatformError> {
        let Some(agent) = self.store.agent_get(id).await?.filter(|a| !a.deleted) else {
            return Ok(Converted::NoSuchAgent);
        };
        if agent.runtime != AgentRuntime::Python {
            return Ok(Converted::NotImported);
        }
        if !self.claim_in_flight(id) {
            return Ok(Converted::Busy);
        }
        let done = format!("✅ {} runs Baal's agent now, with its workspace and history.", agent.name);
        let job = self.clone().leased_job(id, chat, None, JobKind::Redeploy { done }).await;
        self.release_in_flight(id);
        job?;
        let now = self.store.agent_get(id).await?;
        Ok(match now {
            Some(agent) if agent.runtime == AgentRuntime::Baal => Converted::Converted,
            Some(agent) if agent.lease.as_ref().is_some_and(|lease| lease.holder != self.holder) => Converted::Busy,
            _ => Converted::Failed,
        })
    }

    /// Starts a deployment job in the background unless one already runs for this agent.
    pub(crate) fn start_job(
        self: &Arc<Self>,
        agent: AgentId,
        chat: ChatId,
        progress: Option<MessageRef>,
        kind: JobKind,
    ) {
        if !self.claim_in_flight(agent) {
            return;
        }
        let inner = self.clone();
        self.spawn_tracked(async move {
            let job = inner.clone().leased_job(agent, chat, progress, kind).await;
            inner.release_in_flight(agent);
            if let Err(err) = job {
                tracing::error!(error = %err, agent = %agent, "deployment job failed");
            }
        });
    }

    /// Runs a job under the agent's lease, or not at all while another holder has it.
    async fn leased_job(
        self: Arc<Self>,
        agent_id: AgentId,
        chat: ChatId,
        progress: Option<MessageRef>,
        kind: JobKind,
    ) -> Result<(), PlatformError> {
        let Some(agent) = self.store.agent_get(agent_id).await?.filter(|a| !a.deleted) else { return Ok(()) };
        let (store, holder, length) = (self.store.as_ref(), self.holder.as_str(), self.config.deploy_lease);
        if !lease::take(store, agent_id, holder, length).await? {
            self.lease_refused(&agent, chat, progress, &kind).await;
            return Ok(());
        }
        let job = self.clone().run_job(agent_id, chat, progress, kind);
        let outcome = lease::while_held(store, agent_id, holder, length, job).await;
        lease::release(store, agent_id, holder).await;
        outcome.unwrap_or(Ok(()))
    }

    /// Another holder (a bot process sharing the database, or a deletion) is at the agent.
    async fn lease_refused(&self, agent: &Agent, chat: ChatId, progress: Option<MessageRef>, kind: &JobKind) {
        tracing::info!(agent = %agent.id, "another holder has the agent's lease; not deploying it here");
        // A resume is this process's own idea; whoever holds the lease keeps the owner informed.
        if matches!(kind, JobKind::Resume) {
            return;
        }
        let text = format!("{} is being deployed by another Baal process; try again in a minute.", agent.name);
        self.edit_or_say(chat, progress, Text::plain(text)).await;
    }

    #[tracing::instrument(name = "deployment", skip_all, fields(agent = %agent_id, deployment = %crate::ops::trace_id()))]
    async fn run_job(
        self: Arc<Self>,
        agent_id: AgentId,
        chat: ChatId,
        progress: Option<MessageRef>,
        kind: JobKind,
    ) -> Result<(), PlatformError> {
        // Read again under the lease: a deletion or another process's job may have just finished.
        let Some(mut agent) = self.store.agent_get(agent_id).await?.filter(|a| !a.deleted) else { return Ok(()) };
        if matches!(kind, JobKind::Resume) {
            let detail = Some("platform restarted mid-deployment");
            self.store.event_record(agent.id, &EventStep::Resume, EventOutcome::Started, detail).await?;
            let text = format!(
                "Baal restarted while <b>{}</b> was being deployed. Picking up where it left off…",
                escape_html(&agent.name)
            );
            self.say(chat, Text::html(text)).await;
        }
        let job = kind.step();
        let started = std::time::Instant::now();
        // Whatever the job, an agent still running the Python Baal's agent on its VM is converted
        // there (its workspace and history come along); one that never got a VM is deployed
        // afresh. Nothing else can update it: its settings are the Python agent's.
        let converting = agent.runtime == AgentRuntime::Python && agent.deployment.instance_hash.is_some();
        let note = converting.then_some("converting from the Python Baal");
        self.store.event_record(agent.id, &job, EventOutcome::Started, note).await?;
        if !matches!(kind, JobKind::Redeploy { .. }) {
            self.store.agent_set_status(agent.id, AgentStatus::Deploying).await?;
        }
        let reporter = JobReporter {
            store: self.store.clone(),
            inner: self.clone(),
            agent: agent.clone(),
            chat,
            steps: if converting { self.deployer.convert_steps() } else { self.deployer.steps() },
            doing: if converting { "Upgrading" } else { "Deploying" },
            progress: tokio::sync::Mutex::new(progress),
            done: Mutex::new(Vec::new()),
            current: Mutex::new(None),
            facts: Mutex::new(agent.deployment.clone()),
            clock: super::observe::StepClock::new(self.deployer.name()),
        };
        reporter.render(false).await;
        let mut rotated: Option<SecretString> = None;
        let outcome = match self.spec(&mut agent).await {
            Err(problem) => Err((DeployError::new("deploy", problem).permanent(), Payer::Operator)),
            Ok((mut spec, payer)) => {
                let result = if converting {
                    // A fresh bearer secret: the old one sat in a root-readable file of a VM whose
                    // tools ran as root. Stored only once ours answers: a conversion that fails
                    // leaves the Python agent, with its old secret, running.
                    spec.agent_secret = generate_token();
                    let converted = self.deployer.convert(&spec, &reporter).await;
                    if converted.is_ok() {
                        rotated = Some(spec.agent_secret.clone());
                    }
                    converted
                } else {
                    match kind {
                        JobKind::Deploy | JobKind::Resume => self.deployer.deploy(&spec, &reporter).await,
                        JobKind::Redeploy { .. } => self.deployer.redeploy(&spec, &reporter).await,
                    }
                };
                match result {
                    Ok(facts) => Ok((facts, payer)),
                    Err(err) => Err((err, payer)),
                }
            }
        };
        let outcome = match outcome {
            Ok((facts, payer)) => {
                self.store.agent_set_deployment(agent.id, &facts).await?;
                let mut deployed = agent.clone();
                deployed.deployment = facts;
                if let Some(secret) = rotated {
                    deployed.token_sealed = Some(self.store_token(agent.id, &secret).await?);
                }
                // The deployer says the agent is healthy; checking through the same path chats
                // will take catches a URL the platform cannot reach.
                match self.endpoint(&deployed) {
                    Some(endpoint) => match self.proxy.health(&endpoint).await {
                        Ok(_) => Ok((deployed, payer)),
                        Err(err) => Err(DeployError::new("health", format!("the agent does not answer: {err}"))),
                    },
                    None => Err(DeployError::new("health", "the deployer reported no address for the agent")),
                }
            }
            Err((err, _)) => Err(err),
        };
        super::observe::deployment(self.deployer.name(), started, outcome.is_ok());
        match outcome {
            Ok((deployed, payer)) => {
                if deployed.runtime == AgentRuntime::Python {
                    self.store.agent_set_runtime(deployed.id, AgentRuntime::Baal).await?;
                    tracing::info!(agent = %deployed.id, "imported agent now runs Baal's agent");
                }
                self.store.agent_set_payer(deployed.id, payer).await?;
                self.store.agent_set_status(deployed.id, AgentStatus::Running).await?;
                self.store.event_record(deployed.id, &job, EventOutcome::Succeeded, None).await?;
                match kind {
                    JobKind::Deploy | JobKind::Resume => self.deployed(&reporter, &deployed, chat).await?,
                    JobKind::Redeploy { done } => {
                        let progress = *reporter.progress.lock().await;
                        self.edit_or_say(chat, progress, Text::plain(done)).await;
                    }
                }
            }
            Err(err) => {
                let detail = err.detail.clone().unwrap_or_else(|| err.message.clone());
                self.store.event_record(agent.id, &job, EventOutcome::Failed, Some(&detail)).await?;
                tracing::warn!(agent = %agent.id, step = err.step, detail = %detail, "deployment failed");
                reporter.fail(err.step);
                reporter.render(true).await;
                let still_answering = match (&kind, self.endpoint(&agent)) {
                    (JobKind::Redeploy { .. }, Some(endpoint)) => self.proxy.health(&endpoint).await.is_ok(),
                    _ => false,
                };
                if still_answering {
                    let text = format!(
                        "Couldn't update {}: {}\nIt keeps running as before; /update {} tries again.",
                        agent.name, err.message, agent.id
                    );
                    self.say(chat, Text::plain(text)).await;
                } else {
                    self.store.agent_set_status(agent.id, AgentStatus::Failed).await?;
                    self.say(chat, error_card(&agent, &err, reporter.label_of(err.step))).await;
                }
            }
        }
        Ok(())
    }

    /// After a first deployment: chat mode for the owner, the share link, and an introduction.
    async fn deployed(
        self: &Arc<Self>,
        reporter: &JobReporter,
        agent: &Agent,
        chat: ChatId,
    ) -> Result<(), PlatformError> {
        let progress = *reporter.progress.lock().await;
        let done = format!("✅ <b>{}</b> is deployed and answering.", escape_html(&agent.name));
        self.edit_or_say(chat, progress, Text::html(done)).await;
        // Agents talk only in private chats, so the new agent's chat opens in the owner's, wherever
        // /create ran (a private chat's id is its user's).
        self.update_state(agent.owner_id, |state| {
            if state.flow.is_none() {
                state.enter_chat(agent.owner_id, agent.id, None);
            }
        })
        .await?;
        let body = format!(
            "<b>{name} is ready!</b>\nYou're now chatting with it: just type a message.\n\n\
             🔗 Share it with anyone: {link}\n\n• /soul changes its personality\n• /manage ends the chat",
            name = escape_html(&agent.name),
            link = escape_html(&self.share_link(agent)),
        );
        let text = Text::html(body).row(vec![
            Button::action("📝 Personality", Action::Soul(agent.id)),
            Button::action("🚪 Exit chat", Action::ExitChat),
        ]);
        self.say(chat, text).await;
        let owner = self.store.user_get(agent.owner_id).await?;
        if let Some(owner) = owner {
            let ctx = super::engine::Ctx { user: owner, chat, received: std::time::Instant::now() };
            if let Err(err) = self.chat_turn(&ctx, agent, INTRO_PROMPT, false, self.owner_limits(agent)).await {
                tracing::debug!(error = %err, "introduction failed");
            }
        }
        Ok(())
    }

    /// Whether nobody is deploying `agent`: no live lease, and no change for longer than a lease
    /// (a just-created agent has no lease for a moment; its recent update covers that gap).
    fn orphaned(&self, agent: &Agent, now: DateTime<Utc>) -> bool {
        let quiet = (now - agent.updated_at).to_std().unwrap_or_default() >= self.config.deploy_lease;
        agent.lease.as_ref().is_none_or(|lease| !lease.is_live(now)) && quiet
    }

    /// Agents left `pending` or `deploying` by a job that died (a restart, a crashed process)
    /// are deployed again from their stored facts; the job fails cleanly (owner told) when that
    /// is impossible. Jobs alive in another process sharing the database hold a live lease and are
    /// left alone; of several processes resuming at once, the one that takes the lease resumes.
    pub(crate) async fn resume_unfinished(self: Arc<Self>) -> Result<(), PlatformError> {
        for status in [AgentStatus::Deploying, AgentStatus::Pending] {
            for agent in self.store.list_agents(&AgentFilter::all().status(status)).await? {
                if self.is_in_flight(agent.id) || !self.orphaned(&agent, Utc::now()) {
                    continue;
                }
                self.start_job(agent.id, agent.owner_id, None, JobKind::Resume);
            }
        }
        Ok(())
    }

    /// Tells the deployer which agents should be running (local processes do not survive us).
    pub(crate) async fn restore_running(&self) -> Result<(), PlatformError> {
        let mut running = self.store.list_agents(&AgentFilter::all().status(AgentStatus::Running)).await?;
        let mut specs = Vec::new();
        for agent in &mut running {
            match self.spec(agent).await {
                Ok((spec, _)) => specs.push(spec),
                Err(problem) => tracing::warn!(agent = %agent.id, problem, "cannot restore agent"),
            }
        }
        for (agent_id, outcome) in self.deployer.restore_with_facts(&specs).await {
            let Some(agent) = running.iter().find(|agent| agent.id == agent_id) else { continue };
            match outcome {
                Ok(deployment) if deployment != agent.deployment => {
                    // A local agent that had to take a new port: without this the bot would keep
                    // calling the old address.
                    self.store.agent_set_deployment(agent_id, &deployment).await?;
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(agent = %agent_id, error = %err, detail = ?err.detail, "cannot restore agent");
                    let detail = err.to_string();
                    self.store.event_record(agent_id, &EventStep::Restore, EventOutcome::Failed, Some(&detail)).await?;
                    self.store.agent_set_status(agent_id, AgentStatus::Failed).await?;
                    let text = format!(
                        "Baal restarted and could not bring <b>{}</b> back: {}\nSend <code>/repair {}</code> to try again.",
                        escape_html(&agent.name),
                        escape_html(&err.message),
                        agent_id
                    );
                    self.say(agent.owner_id, Text::html(text)).await;
                }
            }
        }
        Ok(())
    }
}

fn error_card(agent: &Agent, err: &DeployError, step_label: &str) -> Text {
    let message: String = err.message.chars().take(300).collect();
    let advice = if err.retryable {
        format!("Retrying often helps: press Retry, or send <code>/repair {}</code>.", agent.id)
    } else {
        "Retrying won't help until the cause above is fixed: then press Retry, or delete the agent.".to_owned()
    };
    let body = format!(
        "<b>Deploying {} failed</b>\nStep: {}\n<code>{}</code>\n\n{advice}",
        escape_html(&agent.name),
        escape_html(step_label),
        escape_html(&message)
    );
    Text::html(body).row(vec![
        Button::action("🔄 Retry", Action::Repair(agent.id)),
        Button::action("🗑️ Delete", Action::DeleteAsk(agent.id)),
    ])
}

/// Records each step and fact before the deployer goes on, and keeps the progress message current.
struct JobReporter {
    /// What the progress card says is happening ("Deploying", "Upgrading").
    doing: &'static str,
    store: Arc<dyn Store>,
    inner: Arc<Inner>,
    agent: Agent,
    chat: ChatId,
    steps: &'static [DeployStep],
    progress: tokio::sync::Mutex<Option<MessageRef>>,
    done: Mutex<Vec<&'static str>>,
    current: Mutex<Option<(&'static str, bool)>>,
    facts: Mutex<Deployment>,
    clock: super::observe::StepClock,
}

impl JobReporter {
    fn fail(&self, step: &'static str) {
        if let Ok(mut current) = self.current.lock() {
            *current = Some((current.map_or(step, |(key, _)| key), true));
        }
    }

    fn label_of(&self, key: &str) -> &'static str {
        self.steps.iter().find(|s| s.key == key).map_or("deployment", |s| s.label)
    }

    async fn render(&self, failed: bool) {
        let done = self.done.lock().map(|d| d.clone()).unwrap_or_default();
        let current = self.current.lock().ok().and_then(|c| *c);
        let total = self.steps.len().max(1);
        let finished = self.steps.iter().filter(|s| done.contains(&s.key)).count();
        let pct = finished * 100 / total;
        let filled = finished * 16 / total;
        let mut body = format!(
            "<b>{} {}</b>\n{}{} {pct}%\n",
            self.doing,
            escape_html(&self.agent.name),
            "█".repeat(filled),
            "░".repeat(16 - filled)
        );
        for step in self.steps {
            let line = if done.contains(&step.key) {
                format!("✅ {}", step.label)
            } else if current.is_some_and(|(key, f)| key == step.key && (f || failed)) {
                format!("❌ {}", step.label)
            } else if current.is_some_and(|(key, _)| key == step.key) {
                format!("⏳ {}…", step.label)
            } else {
                format!("▫️ {}", step.label)
            };
            body.push('\n');
            body.push_str(&line);
        }
        let mut progress = self.progress.lock().await;
        *progress = self.inner.edit_or_say(self.chat, *progress, Text::html(body)).await;
    }
}

#[async_trait]
impl DeployReporter for JobReporter {
    async fn step_started(&self, step: DeployStep) {
        self.clock.started(step.key);
        let recorded = self.store.event_record(self.agent.id, &step.key.into(), EventOutcome::Started, None).await;
        if let Err(err) = recorded {
            tracing::warn!(error = %err, "could not record a deployment step");
        }
        if let Ok(mut current) = self.current.lock() {
            *current = Some((step.key, false));
        }
        self.render(false).await;
    }

    async fn step_done(&self, step: DeployStep) {
        self.clock.done(step.key);
        let recorded = self.store.event_record(self.agent.id, &step.key.into(), EventOutcome::Succeeded, None).await;
        if let Err(err) = recorded {
            tracing::warn!(error = %err, "could not record a deployment step");
        }
        if let Ok(mut done) = self.done.lock() {
            done.push(step.key);
        }
        self.render(false).await;
    }

    async fn facts(&self, deployment: &Deployment) -> Result<(), DeployError> {
        let merged = {
            let mut facts = self.facts.lock().map_err(|_| DeployError::new("deploy", "internal error"))?;
            if *deployment == Deployment::default() {
                // The deployer holds nothing any more (a refused instance, a forgotten VM): a retry
                // must start afresh, not resume on a VM that does not exist.
                *facts = Deployment::default();
            } else {
                merge(&mut facts, deployment);
            }
            facts.clone()
        };
        self.store
            .agent_set_deployment(self.agent.id, &merged)
            .await
            .map_err(|err| DeployError::new("deploy", "Baal could not record the deployment").with_detail(err))
    }
}

/// Newer facts win; a fact the deployer does not repeat is kept.
pub(super) fn merge(into: &mut Deployment, new: &Deployment) {
    fn take<T: Clone>(slot: &mut Option<T>, new: &Option<T>) {
        if new.is_some() {
            slot.clone_from(new);
        }
    }
    take(&mut into.instance_hash, &new.instance_hash);
    take(&mut into.crn_url, &new.crn_url);
    take(&mut into.vm_url, &new.vm_url);
    take(&mut into.vm_host, &new.vm_host);
    take(&mut into.ssh_port, &new.ssh_port);
    take(&mut into.ssh_host_key, &new.ssh_host_key);
}
