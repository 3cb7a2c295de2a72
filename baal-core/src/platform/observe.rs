//! What the platform counts and times, under the names of [`crate::telemetry`]: inputs and
//! commands, chat turns (added latency, time to first token, duration), deployments and their
//! steps, tokens stored, and the gauges refreshed when scraped. Kept here so the engine, chat and
//! job code each carry one call per measurement.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Instant;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use metrics::{counter, gauge, histogram};

use super::InputKind;
use super::command::Command;
use super::engine::{Inner, Platform};
use crate::domain::{AgentStatus, PoolStatus, Role};
use crate::proxy::AgentEvent;
use crate::store::AgentFilter;
use crate::telemetry::{self as names, role_label};
use crate::wire::UsageRecord;

/// Counts one input by kind, and a command by its name (`unknown` for any other word, so what
/// users type cannot make new series).
pub(crate) fn input(kind: &InputKind) {
    let label = match kind {
        InputKind::Command { name, .. } => {
            let command = Command::parse(name).map_or("unknown", Command::name);
            counter!(names::COMMANDS, "command" => command).increment(1);
            "command"
        }
        InputKind::Text(_) => "text",
        InputKind::Button { .. } => "button",
    };
    counter!(names::INPUTS, "kind" => label).increment(1);
}

/// Sends a chat request (`chat`, the proxy's call) for an input that arrived at `received`, and
/// watches its events: the added latency is recorded now, the time to first text when it comes,
/// and the turn's outcome and duration when the stream is dropped (stopped turns included).
pub(crate) async fn turn(
    role: Role,
    received: Instant,
    chat: impl Future<Output = BoxStream<'static, AgentEvent>>,
) -> BoxStream<'static, AgentEvent> {
    let sent = Instant::now();
    histogram!(names::TURN_ADDED_LATENCY).record(sent.duration_since(received).as_secs_f64());
    let events = chat.await;
    let mut watch = TurnWatch { role, sent, first_text: false, done: false, error: false, budget: false };
    events
        .map(move |event| {
            watch.see(&event);
            event
        })
        .boxed()
}

struct TurnWatch {
    role: Role,
    sent: Instant,
    first_text: bool,
    done: bool,
    error: bool,
    budget: bool,
}

impl TurnWatch {
    fn see(&mut self, event: &AgentEvent) {
        match event {
            AgentEvent::TextDelta { .. } | AgentEvent::Text { .. } if !self.first_text => {
                self.first_text = true;
                histogram!(names::TURN_FIRST_TOKEN).record(self.sent.elapsed().as_secs_f64());
            }
            AgentEvent::Error { .. } => self.error = true,
            AgentEvent::BudgetSpent { .. } => self.budget = true,
            AgentEvent::Done { .. } => self.done = true,
            _ => {}
        }
    }
}

impl Drop for TurnWatch {
    fn drop(&mut self) {
        let outcome = match (self.done, self.budget, self.error) {
            (false, _, _) => "stopped",
            (true, true, _) => "budget",
            (true, false, true) => "error",
            (true, false, false) => "answered",
        };
        counter!(names::CHAT_TURNS, "role" => role_label(self.role), "outcome" => outcome).increment(1);
        histogram!(names::TURN_DURATION).record(self.sent.elapsed().as_secs_f64());
    }
}

/// Times the steps of one deployment as its reporter sees them start and finish.
pub(crate) struct StepClock {
    deployer: &'static str,
    started: Mutex<HashMap<&'static str, Instant>>,
}

impl StepClock {
    pub fn new(deployer: &'static str) -> StepClock {
        StepClock { deployer, started: Mutex::default() }
    }

    pub fn started(&self, step: &'static str) {
        if let Ok(mut started) = self.started.lock() {
            started.insert(step, Instant::now());
        }
    }

    pub fn done(&self, step: &'static str) {
        let Some(at) = self.started.lock().ok().and_then(|mut started| started.remove(step)) else { return };
        histogram!(names::DEPLOY_STEP_DURATION, "deployer" => self.deployer, "step" => step)
            .record(at.elapsed().as_secs_f64());
    }
}

/// Counts and times one deployment (first, resumed or redeployment) that began at `started`.
pub(crate) fn deployment(deployer: &'static str, started: Instant, succeeded: bool) {
    let outcome = if succeeded { "succeeded" } else { "failed" };
    counter!(names::DEPLOYMENTS, "deployer" => deployer, "outcome" => outcome).increment(1);
    histogram!(names::DEPLOYMENT_DURATION, "deployer" => deployer, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
}

/// Counts the tokens of a usage page this process stored.
pub(crate) fn tokens_stored(records: &[UsageRecord]) {
    for record in records {
        names::count_tokens(names::TOKENS, record.cause.as_str(), record.prompt_tokens, record.completion_tokens);
    }
}

impl Platform {
    /// Sets the gauges that are read rather than counted: agents by status (deleted ones left
    /// out) and the VM pool by status. A metrics server calls it before each render; a store
    /// failure leaves the last figures and is logged.
    pub async fn record_gauges(&self) {
        self.inner.record_gauges().await;
    }
}

impl Inner {
    async fn record_gauges(&self) {
        match self.store.list_agents(&AgentFilter::all()).await {
            Ok(agents) => {
                for status in AgentStatus::ALL {
                    let count = agents.iter().filter(|a| !a.deleted && a.status == status).count();
                    gauge!(names::AGENTS, "status" => status.as_str()).set(count as f64);
                }
            }
            Err(err) => tracing::warn!(error = %err, "metrics: cannot count agents"),
        }
        let Some(pool) = self.store.pool_store() else { return };
        match pool.pool_list().await {
            Ok(vms) => {
                for status in PoolStatus::ALL {
                    let count = vms.iter().filter(|vm| vm.status == status).count();
                    gauge!(names::POOL_VMS, "status" => status.as_str()).set(count as f64);
                }
            }
            Err(err) => tracing::warn!(error = %err, "metrics: cannot count the pool's VMs"),
        }
    }
}
