//! Test doubles for the engine's peers: a deployer that records what it is asked, and a proxy
//! that answers from a script, on a schedule when the script gives one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::{self, BoxStream, StreamExt};
use secrecy::ExposeSecret;
use tokio::time::Instant;

use crate::deploy::{AgentSpec, DeployError, DeployReporter, DeployStep, Deployer, Tenancy};
use crate::domain::{AgentId, Deployment};
use crate::proxy::{
    AgentEndpoint, AgentEvent, AgentFile, ChatRequest, HealthResponse, PendingMessage, Proxy, ProxyError, UsageCause,
    UsageRecord, UsageResponse,
};
use crate::wire::{Budget, MAX_USAGE_RECORDS};

pub(crate) const STEPS: &[DeployStep] = &[
    DeployStep { key: "provision", label: "Create the machine" },
    DeployStep { key: "ship", label: "Install the agent" },
    DeployStep { key: "health", label: "Check it answers" },
];

/// How the fake deployer behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Succeed,
    Fail,
    /// Reports facts and the first step, then never returns (a crash mid-deployment).
    Hang,
}

pub(crate) struct FakeDeployer {
    pub mode: Mutex<Mode>,
    pub deployed: Mutex<Vec<AgentSpec>>,
    pub redeployed: Mutex<Vec<AgentSpec>>,
    pub converted: Mutex<Vec<AgentSpec>>,
    /// Runs when `convert` succeeds (a test's agent coming back with it).
    pub on_convert: Mutex<Option<Box<dyn Fn() + Send>>>,
    pub destroyed: Mutex<Vec<(AgentId, Deployment)>>,
    pub restored: Mutex<Vec<AgentId>>,
    /// What `restore_with_facts` answers: unchanged facts by default.
    pub restore_outcome: Mutex<RestoreOutcome>,
    /// What `usual_deploy_duration` answers: unknown by default, like the trait's default.
    pub usual_duration: Mutex<Option<Duration>>,
    /// What `tenancy` answers: everyone by default, like the trait's default.
    pub tenancy: Mutex<Tenancy>,
}

/// How the fake deployer brings agents back after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RestoreOutcome {
    Unchanged,
    /// Back, but at a new address (a local agent whose port was taken).
    Moved,
    Fails,
}

impl FakeDeployer {
    pub fn new(mode: Mode) -> Self {
        FakeDeployer {
            mode: Mutex::new(mode),
            deployed: Mutex::default(),
            redeployed: Mutex::default(),
            converted: Mutex::default(),
            on_convert: Mutex::default(),
            destroyed: Mutex::default(),
            restored: Mutex::default(),
            restore_outcome: Mutex::new(RestoreOutcome::Unchanged),
            usual_duration: Mutex::default(),
            tenancy: Mutex::new(Tenancy::Everyone),
        }
    }

    async fn run(&self, spec: &AgentSpec, reporter: &dyn DeployReporter) -> Result<Deployment, DeployError> {
        let mode = *self.mode.lock().unwrap();
        let mut facts = spec.existing.clone();
        reporter.step_started(STEPS[0]).await;
        if facts.instance_hash.is_none() {
            facts.instance_hash = Some(format!("instance-{}", spec.agent_id));
            reporter.facts(&facts).await?;
        }
        if mode == Mode::Hang {
            std::future::pending::<()>().await;
        }
        reporter.step_done(STEPS[0]).await;
        reporter.step_started(STEPS[1]).await;
        if mode == Mode::Fail {
            return Err(
                DeployError::new("ship", "the machine refused the agent").with_detail("ssh: connection refused")
            );
        }
        facts.vm_url = Some(format!("http://agent-{}.test", spec.agent_id));
        reporter.facts(&facts).await?;
        reporter.step_done(STEPS[1]).await;
        reporter.step_started(STEPS[2]).await;
        reporter.step_done(STEPS[2]).await;
        Ok(facts)
    }
}

#[async_trait]
impl Deployer for FakeDeployer {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn steps(&self) -> &'static [DeployStep] {
        STEPS
    }
    async fn deploy(&self, spec: &AgentSpec, reporter: &dyn DeployReporter) -> Result<Deployment, DeployError> {
        self.deployed.lock().unwrap().push(spec.clone());
        self.run(spec, reporter).await
    }
    async fn redeploy(&self, spec: &AgentSpec, reporter: &dyn DeployReporter) -> Result<Deployment, DeployError> {
        self.redeployed.lock().unwrap().push(spec.clone());
        self.run(spec, reporter).await
    }
    async fn convert(&self, spec: &AgentSpec, reporter: &dyn DeployReporter) -> Result<Deployment, DeployError> {
        self.converted.lock().unwrap().push(spec.clone());
        let facts = self.run(spec, reporter).await?;
        if let Some(hook) = self.on_convert.lock().unwrap().as_ref() {
            hook();
        }
        Ok(facts)
    }
    async fn destroy(
        &self,
        agent_id: AgentId,
        deployment: &Deployment,
        _reporter: &dyn DeployReporter,
    ) -> Result<(), DeployError> {
        self.destroyed.lock().unwrap().push((agent_id, deployment.clone()));
        Ok(())
    }
    async fn restore(&self, running: &[AgentSpec]) -> Result<(), DeployError> {
        self.restored.lock().unwrap().extend(running.iter().map(|s| s.agent_id));
        Ok(())
    }
    async fn restore_with_facts(&self, running: &[AgentSpec]) -> Vec<(AgentId, Result<Deployment, DeployError>)> {
        self.restored.lock().unwrap().extend(running.iter().map(|s| s.agent_id));
        let outcome = *self.restore_outcome.lock().unwrap();
        running
            .iter()
            .map(|spec| {
                let mut facts = spec.existing.clone();
                let result = match outcome {
                    RestoreOutcome::Unchanged => Ok(facts),
                    RestoreOutcome::Moved => {
                        facts.vm_url = Some(format!("http://agent-{}.moved", spec.agent_id));
                        Ok(facts)
                    }
                    RestoreOutcome::Fails => Err(DeployError::new("start", "the agent would not start again")),
                };
                (spec.agent_id, result)
            })
            .collect()
    }
    fn usual_deploy_duration(&self) -> Option<Duration> {
        *self.usual_duration.lock().unwrap()
    }

    fn tenancy(&self) -> Tenancy {
        *self.tenancy.lock().unwrap()
    }
}

/// A chat's events, each after a delay from the one before (as an agent writes them).
pub(crate) type Timeline = Vec<(Duration, AgentEvent)>;

type Script = Box<dyn Fn(&ChatRequest) -> Timeline + Send + Sync>;

/// Answers chats from a script; `down` agents are unreachable.
///
/// `pending` is the agent's queue. Messages without an id are taken as they are read (an agent
/// that predates leases); messages with one stay queued until acknowledged, as under a lease that
/// runs out at once, so the next read offers again whatever was not acknowledged.
pub(crate) struct ScriptedProxy {
    pub script: Mutex<Script>,
    pub requests: Mutex<Vec<(String, ChatRequest, String)>>,
    /// Every chat event as the agent sent it, with when (a scheduled script sends on its own
    /// clock, whether or not the platform is reading yet).
    pub sent: Arc<Mutex<Vec<(Instant, AgentEvent)>>>,
    pub pending: Mutex<Vec<PendingMessage>>,
    /// Every `ack_pending` call: the chat and the ids.
    pub acks: Mutex<Vec<(String, Vec<i64>)>>,
    pub files: Mutex<HashMap<String, Vec<u8>>>,
    pub down: Mutex<bool>,
    /// Every `reset` call: the chat whose conversation was forgotten.
    pub resets: Mutex<Vec<String>>,
    /// The model calls the agent recorded, served by `usage` from the cursor on.
    pub usage: Mutex<Vec<UsageRecord>>,
    /// Every budget `set_budget` handed over.
    pub budgets: Mutex<Vec<Budget>>,
}

impl ScriptedProxy {
    pub fn resets(&self) -> Vec<String> {
        self.resets.lock().unwrap().clone()
    }

    pub fn new() -> Self {
        let proxy = ScriptedProxy {
            script: Mutex::new(Box::new(|_: &ChatRequest| Vec::new())),
            requests: Mutex::default(),
            sent: Arc::default(),
            pending: Mutex::default(),
            acks: Mutex::default(),
            resets: Mutex::default(),
            files: Mutex::default(),
            down: Mutex::new(false),
            usage: Mutex::default(),
            budgets: Mutex::default(),
        };
        proxy.set_script(|request| {
            vec![
                AgentEvent::Text { content: "You said: ".into() },
                AgentEvent::Text { content: request.message.clone() },
                AgentEvent::done(),
            ]
        });
        proxy
    }

    /// Every chat answers with these events, all at once.
    pub fn set_script(&self, script: impl Fn(&ChatRequest) -> Vec<AgentEvent> + Send + Sync + 'static) {
        self.set_timeline(move |request| script(request).into_iter().map(|event| (Duration::ZERO, event)).collect());
    }

    /// Every chat answers with these events, each sent after its delay.
    pub fn set_timeline(&self, script: impl Fn(&ChatRequest) -> Timeline + Send + Sync + 'static) {
        *self.script.lock().unwrap() = Box::new(script);
    }

    /// Records a model call on the agent, as `GET /usage` will report it.
    pub fn record_usage(&self, chat_id: &str, cause: UsageCause, prompt_tokens: u64, completion_tokens: u64) {
        let mut usage = self.usage.lock().unwrap();
        let id = usage.len() as i64 + 1;
        let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let record: UsageRecord = serde_json::from_value(serde_json::json!({
            "id": id, "chat_id": chat_id, "cause": cause, "day": day, "model": "qwen3-coder-next",
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "estimated": false,
        }))
        .unwrap();
        usage.push(record);
    }

    /// The events sent so far, in order, with when each was sent.
    pub fn sent(&self) -> Vec<(Instant, AgentEvent)> {
        self.sent.lock().unwrap().clone()
    }
}

/// Sends `timeline` on its own schedule, as a remote agent does; the returned stream reads it.
fn play(timeline: Timeline, sent: Arc<Mutex<Vec<(Instant, AgentEvent)>>>) -> BoxStream<'static, AgentEvent> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        for (delay, event) in timeline {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            sent.lock().unwrap().push((Instant::now(), event.clone()));
            if tx.send(event).is_err() {
                return;
            }
        }
    });
    stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|event| (event, rx)) }).boxed()
}

#[async_trait]
impl Proxy for ScriptedProxy {
    async fn chat(&self, agent: &AgentEndpoint, request: ChatRequest) -> BoxStream<'static, AgentEvent> {
        self.requests.lock().unwrap().push((
            agent.base_url.clone(),
            request.clone(),
            agent.token.expose_secret().to_owned(),
        ));
        let timeline = if *self.down.lock().unwrap() {
            vec![AgentEvent::Error { content: ProxyError::Unreachable.to_string() }, AgentEvent::done()]
                .into_iter()
                .map(|event| (Duration::ZERO, event))
                .collect()
        } else {
            (self.script.lock().unwrap())(&request)
        };
        play(timeline, self.sent.clone())
    }
    async fn pending(&self, _agent: &AgentEndpoint, chat_id: Option<&str>) -> Result<Vec<PendingMessage>, ProxyError> {
        let mut queue = self.pending.lock().unwrap();
        let mine: Vec<PendingMessage> =
            queue.iter().filter(|m| chat_id.is_none_or(|chat| m.chat_id == chat)).cloned().collect();
        queue.retain(|m| m.id.is_some() || chat_id.is_some_and(|chat| m.chat_id != chat));
        Ok(mine)
    }
    async fn ack_pending(&self, _agent: &AgentEndpoint, chat_id: &str, ids: &[i64]) -> Result<(), ProxyError> {
        self.acks.lock().unwrap().push((chat_id.to_owned(), ids.to_vec()));
        self.pending.lock().unwrap().retain(|m| m.chat_id != chat_id || m.id.is_none_or(|id| !ids.contains(&id)));
        Ok(())
    }
    async fn file(&self, _agent: &AgentEndpoint, path: &str) -> Result<AgentFile, ProxyError> {
        if *self.down.lock().unwrap() {
            return Err(ProxyError::Unreachable);
        }
        let bytes = self.files.lock().unwrap().get(path).cloned().ok_or(ProxyError::Status(404))?;
        Ok(AgentFile { file_name: path.rsplit('/').next().unwrap_or(path).to_owned(), bytes })
    }
    async fn health(&self, _agent: &AgentEndpoint) -> Result<HealthResponse, ProxyError> {
        if *self.down.lock().unwrap() {
            return Err(ProxyError::Unreachable);
        }
        Ok(HealthResponse { status: "ok".into(), agent_name: "x".into(), version: None })
    }
    async fn usage(&self, _agent: &AgentEndpoint, since: i64) -> Result<UsageResponse, ProxyError> {
        let records: Vec<UsageRecord> =
            self.usage.lock().unwrap().iter().filter(|r| r.id > since).take(MAX_USAGE_RECORDS).cloned().collect();
        Ok(UsageResponse::new(records, since))
    }
    async fn set_budget(&self, _agent: &AgentEndpoint, budget: &Budget) -> Result<bool, ProxyError> {
        self.budgets.lock().unwrap().push(*budget);
        Ok(true)
    }
    async fn reset(&self, _agent: &AgentEndpoint, chat_id: &str) -> Result<u64, ProxyError> {
        self.resets.lock().unwrap().push(chat_id.to_owned());
        Ok(2)
    }
}
