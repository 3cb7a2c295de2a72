//! [`Agent`]: the agentic loop (inference, tool calls, events), per-chat serialisation,
//! subagents (`spawn`) and the heartbeat.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::Stream;
use serde_json::{Value, json};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::AbortHandle;

use crate::domain::Role;
use crate::inference::{
    ChatMessage, Completion, CompletionBuilder, CompletionRequest, Inference, InferenceError, ToolSpec,
};
use crate::wire::{
    AgentEvent, BudgetLimit, ChatRequest, PENDING_TURN, PENDING_TURN_FILE, TURN_STOPPED, TurnUsage, UsageCause,
};

use super::budget::Spent;
use super::compaction::{CompactionConfig, prepare_loaded_context};
use super::context::{Audience, Workspace};
use super::history::{History, HistoryError, StoredMessage};
use super::settings::AgentSettings;
use super::tools::{SentFile, ToolContext, ToolOutput, ToolSet};
use super::usage::{Metered, MeteredCall, record_call, tally};

/// Model calls per subagent turn.
pub const SUBAGENT_MAX_ITERATIONS: u32 = 15;
/// The prompt of a heartbeat run.
pub const HEARTBEAT_PROMPT: &str = "Read HEARTBEAT.md in your workspace and carry out the instructions or tasks it lists. \
If nothing needs attention right now, reply with exactly: HEARTBEAT_OK";
/// The answer that means "nothing to report"; it is never delivered.
pub const HEARTBEAT_OK: &str = "HEARTBEAT_OK";

const SPAWN: &str = "spawn";
/// How often the heartbeat looks at `HEARTBEAT.md` at most (reading a small file; a model is
/// asked only when a run is due).
const HEARTBEAT_CHECK: Duration = Duration::from_secs(60);
const TOOL_RESULT_EXCERPT_CHARS: usize = 300;
/// Shortest gap between two streamed pieces of an answer: a client that edits a message per
/// piece (Telegram allows about one edit a second per chat) gets a handful per second, never one
/// per token.
const PIECE_INTERVAL: Duration = Duration::from_millis(250);
/// A cached system prompt is rebuilt at least this often, so that a workspace file changed behind
/// the agent's back (a background process started by `bash`) shows up without a tool call.
const PROMPT_CACHE_TTL: Duration = Duration::from_secs(60);

/// Settings of the loop, taken from [`AgentSettings`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AgentConfig {
    /// The agent's name.
    pub name: String,
    /// The owner's instructions.
    pub instructions: String,
    /// Model id.
    pub model: String,
    /// The owner's chat.
    pub owner_chat_id: Option<String>,
    /// Tools visitors may use.
    pub visitor_tools: Vec<String>,
    /// Model calls per chat turn.
    pub max_tool_iterations: u32,
    /// Compaction budget.
    pub compaction: CompactionConfig,
    /// Subagents running at once.
    pub max_subagents: u32,
    /// Keepalive period of a quiet stream.
    pub keepalive_interval: Duration,
    /// How long one turn may run; then it is stopped, its running tool with it.
    pub turn_timeout: Duration,
}

impl AgentConfig {
    /// The loop settings of `settings`.
    pub fn from_settings(settings: &AgentSettings) -> Self {
        AgentConfig {
            name: settings.agent_name.clone(),
            instructions: settings.system_prompt.clone(),
            model: settings.model.clone(),
            owner_chat_id: settings.owner_chat_id.clone(),
            visitor_tools: settings.visitor_tools.clone(),
            max_tool_iterations: settings.max_tool_iterations,
            compaction: CompactionConfig::new(
                settings.context_limit(),
                settings.generation_reserve,
                settings.compaction_keep_messages as usize,
                u64::from(settings.max_history),
            ),
            max_subagents: settings.max_subagents,
            keepalive_interval: settings.keepalive_interval,
            turn_timeout: settings.turn_timeout,
        }
    }
}

/// What a turn without a client (heartbeat, subagent) produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TurnOutcome {
    /// The last non-empty assistant text.
    pub text: String,
    /// Files the agent sent.
    pub files: Vec<SentFile>,
    /// The user-fit error that ended the turn, if any.
    pub error: Option<String>,
}

/// What one heartbeat tick did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeartbeatOutcome {
    /// No `HEARTBEAT.md`, or nothing actionable in it.
    Idle,
    /// The file has not changed since the last run and is not due by its schedule.
    NotDue,
    /// It ran; `delivered` tells whether a message was queued for the owner.
    Ran {
        /// Whether the owner gets a message.
        delivered: bool,
    },
    /// A run was due, but the agent's daily or background budget is spent: nothing was asked
    /// and no run recorded, so it runs once the budget allows (a new UTC day, a higher limit).
    OverBudget,
}

/// System prompts already built, per tool list. Reading the memory files and skills on every turn
/// cost six file opens on the worker thread per turn; the workspace changes only through tools,
/// so any tool call empties the cache, as do a new day and [`PROMPT_CACHE_TTL`].
#[derive(Default)]
struct PromptCache {
    day: Option<chrono::NaiveDate>,
    built_at: Option<Instant>,
    prompts: HashMap<(Audience, Vec<&'static str>), String>,
}

impl PromptCache {
    fn get_or_build(
        &mut self,
        today: chrono::NaiveDate,
        audience: Audience,
        tool_names: &[&'static str],
        build: impl FnOnce() -> String,
    ) -> String {
        let fresh = self.day == Some(today) && self.built_at.is_some_and(|at| at.elapsed() < PROMPT_CACHE_TTL);
        if !fresh {
            self.clear();
            self.day = Some(today);
            self.built_at = Some(Instant::now());
        }
        self.prompts.entry((audience, tool_names.to_vec())).or_insert_with(build).clone()
    }

    fn clear(&mut self) {
        self.prompts.clear();
        self.built_at = None;
    }
}

struct Inner {
    config: AgentConfig,
    inference: Arc<dyn Inference>,
    tools: ToolSet,
    history: History,
    workspace: Workspace,
    chat_locks: ChatLocks,
    subagents: Arc<Semaphore>,
    prompts: Mutex<PromptCache>,
    /// The last day the heartbeat logged that the budget stopped it: once a day, not every check.
    heartbeat_over_budget_logged: Mutex<Option<chrono::NaiveDate>>,
}

/// One agent: its loop, history, workspace and tools. Cheap to clone.
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("name", &self.inner.config.name).finish_non_exhaustive()
    }
}

struct Turn {
    role: Role,
    /// What the turn's model calls are recorded as.
    cause: UsageCause,
    /// The chat, or the label of background work: what the turn's model calls are recorded for.
    chat_id: String,
    store_chat: Option<String>,
    max_iterations: u32,
    /// The most the turn's own model calls may spend (`ChatRequest::turn_tokens`).
    max_tokens: Option<u64>,
    /// A visitor's tools in this turn when the platform chose them (`ChatRequest::visitor_tools`);
    /// `VISITOR_TOOLS` otherwise.
    visitor_tools: Option<Arc<[String]>>,
}

enum TurnEnd {
    Done,
    IterationCap,
    Failed(InferenceError),
    /// A limit forbade the next model call.
    OverBudget(Spent),
}

type Events = mpsc::UnboundedSender<AgentEvent>;

impl Agent {
    /// An agent over these parts.
    pub fn new(
        config: AgentConfig,
        inference: Arc<dyn Inference>,
        tools: ToolSet,
        history: History,
        workspace: Workspace,
    ) -> Agent {
        let subagents = Arc::new(Semaphore::new(config.max_subagents as usize));
        Agent {
            inner: Arc::new(Inner {
                config,
                inference,
                tools,
                history,
                workspace,
                chat_locks: ChatLocks::default(),
                subagents,
                prompts: Mutex::new(PromptCache::default()),
                heartbeat_over_budget_logged: Mutex::new(None),
            }),
        }
    }

    /// The agent's database.
    pub fn history(&self) -> &History {
        &self.inner.history
    }

    /// The agent's workspace.
    pub fn workspace(&self) -> &Workspace {
        &self.inner.workspace
    }

    /// The loop settings.
    pub fn config(&self) -> &AgentConfig {
        &self.inner.config
    }

    /// Who is talking: the request's role, else owner when the chat is `OWNER_CHAT_ID`, else visitor.
    pub fn role_of(&self, request: &ChatRequest) -> Role {
        request.role.unwrap_or_else(|| {
            if self.inner.config.owner_chat_id.as_deref() == Some(request.chat_id.as_str()) {
                Role::Owner
            } else {
                Role::Visitor
            }
        })
    }

    /// Runs one chat turn and streams its events: `keepalive` while quiet, `text`, `tool_use`,
    /// `tool_result`, `file`, `error`, and always `done` last. `turn_timeout` ends the turn (its
    /// running tool dies with it) and the stream with an `error`; so does [`Agent::stop`], with
    /// the `error` "Stopped.". Dropping the stream cancels the turn the same way, unless the
    /// request is [durable](ChatRequest::durable): the turn then runs to its end, and what the
    /// stream had not handed out (each whole `text`, each `file`, the `error` it ended with) is
    /// queued for the chat as pending messages ([`PENDING_TURN`], [`PENDING_TURN_FILE`]), the
    /// texts it did hand out opening the first queued text, so the answer arrives whole.
    pub fn chat(&self, request: ChatRequest) -> ChatStream {
        let (tx, rx) = mpsc::unbounded_channel();
        let agent = self.clone();
        let limit = self.inner.config.turn_timeout;
        // Claimed here rather than when the task first runs, so that a stop sent as soon as the
        // request was accepted finds the turn.
        let (slot, stop) = self.inner.chat_locks.claim(&request.chat_id);
        let detach = request.is_durable().then(|| Detach {
            agent: self.clone(),
            chat_id: request.chat_id.clone(),
            stopped: Arc::new(AtomicBool::new(false)),
        });
        let stopped = detach.as_ref().map(|d| d.stopped.clone());
        let role = crate::telemetry::role_label(self.role_of(&request));
        let span = tracing::info_span!(
            "turn",
            chat = %request.chat_id,
            turn = %crate::ops::trace_id(),
            durable = request.is_durable()
        );
        let task = tokio::spawn(tracing::Instrument::instrument(
            async move {
                let mut usage = TurnUsage::default();
                let end = tokio::select! {
                    biased;
                    () = stop => None,
                    end = tokio::time::timeout(limit, agent.chat_turn(request, slot, &tx, &mut usage)) => Some(end),
                };
                let (outcome, error) = match end {
                    Some(Ok(Ok(outcome))) => (outcome, None),
                    Some(Ok(Err(e))) => ("error", Some(e.to_string())),
                    Some(Err(_)) => ("timeout", Some(turn_timeout_message(limit))),
                    None => {
                        // Before the error is sent: whoever reads it for a client that left must
                        // know that nothing is to be queued.
                        if let Some(stopped) = &stopped {
                            stopped.store(true, Ordering::Release);
                        }
                        ("stopped", Some(TURN_STOPPED.to_owned()))
                    }
                };
                metrics::counter!(crate::telemetry::AGENT_TURNS, "role" => role, "outcome" => outcome).increment(1);
                if let Some(content) = error {
                    let _ = tx.send(AgentEvent::Error { content });
                }
                // Counted even when the turn failed, ran out of time or was stopped: the calls were made.
                let _ = tx.send(AgentEvent::Done { usage: (usage.calls > 0).then_some(usage) });
            },
            span,
        ));
        ChatStream::new(rx, task.abort_handle(), self.inner.config.keepalive_interval, detach)
    }

    /// Stops the turns of `chat_id`, the running one and any waiting behind it, as a dropped
    /// stream stops a turn that is not durable: the running tool dies with it, and nothing is
    /// queued for a durable one. Its stream, if still read, ends with an `error` ("Stopped.")
    /// and `done`. Returns whether the chat had a turn.
    pub fn stop(&self, chat_id: &str) -> bool {
        self.inner.chat_locks.stop(chat_id)
    }

    async fn chat_turn(
        &self,
        request: ChatRequest,
        slot: ChatSlot,
        out: &Events,
        usage: &mut TurnUsage,
    ) -> Result<&'static str, HistoryError> {
        let history = &self.inner.history;
        if let Some(budget) = request.budget {
            history.set_budget(budget)?;
        }
        let turn = self.turn_of(&request);
        // The slot goes with this future however the turn ends (done, failed, stopped, client
        // gone, deadline).
        let _serialised = slot.lock.lock().await;
        // Checked before the message is stored: a turn that cannot call the model leaves no
        // unanswered message behind.
        if let Some(spent) = self.over_budget(&turn, usage)? {
            send_spent(out, spent);
            return Ok("over_budget");
        }
        let compaction = self.inner.config.compaction;
        let loaded = self.load_with_message(&request.chat_id, ChatMessage::user(request.message)).await?;
        let (specs, names) = self.tool_specs(turn.role, true, self.visitor_tools(&turn));
        let system = ChatMessage::system(self.system_prompt(turn.role, &names));
        let messages = prepare_loaded_context(
            history,
            self.inner.inference.as_ref(),
            &self.inner.config.model,
            &request.chat_id,
            system,
            compaction,
            loaded,
        )
        .await?;
        // The outcome's label for the agent's metrics.
        Ok(match self.run_loop(messages, specs, &turn, out, usage).await? {
            TurnEnd::Done => "done",
            TurnEnd::IterationCap => {
                let _ = out.send(AgentEvent::Text {
                    content: format!(
                        "(I stopped after {} steps, the most one message may take. Send another message to let me continue.)",
                        turn.max_iterations
                    ),
                });
                "iteration_cap"
            }
            TurnEnd::Failed(e) => {
                let _ = out.send(AgentEvent::Error { content: e.to_string() });
                "model_error"
            }
            TurnEnd::OverBudget(spent) => {
                send_spent(out, spent);
                "over_budget"
            }
        })
    }

    /// The turn a chat request asks for.
    fn turn_of(&self, request: &ChatRequest) -> Turn {
        let role = self.role_of(request);
        Turn {
            role,
            cause: UsageCause::of_turn(role),
            chat_id: request.chat_id.clone(),
            store_chat: Some(request.chat_id.clone()),
            max_iterations: self.inner.config.max_tool_iterations,
            max_tokens: request.turn_tokens,
            // Only the platform sets it (it holds the bearer secret); a visitor sends text alone.
            visitor_tools: match role {
                Role::Visitor => request.visitor_tools.as_deref().map(Arc::from),
                Role::Owner => None,
            },
        }
    }

    /// The chat's history as the model will see it, with the user's `message` stored last.
    async fn load_with_message(&self, chat_id: &str, user: ChatMessage) -> Result<Vec<StoredMessage>, HistoryError> {
        let history = &self.inner.history;
        let max_history = self.inner.config.compaction.max_history;
        let mut loaded = history.load(chat_id, max_history).await?;
        // A bot that retries a request whose first attempt got no answer re-sends the same
        // message: store it once, so the model does not see it twice.
        let unanswered_duplicate = loaded.last().is_some_and(|last| last.id != 0 && last.message == user);
        if !unanswered_duplicate {
            let id = history.append(chat_id, &user).await?;
            loaded.push(StoredMessage::new(id, user));
            let stored_rows = loaded.iter().filter(|r| r.id != 0).count() as u64;
            if stored_rows > max_history
                && let Some(oldest) = loaded.iter().position(|r| r.id != 0)
            {
                loaded.remove(oldest);
            }
        }
        Ok(loaded)
    }

    /// Runs a turn without a client and without history (heartbeat, subagents); its model calls
    /// are metered as `cause`, for `label`, and stop when the budget is spent.
    pub async fn background_turn(
        &self,
        prompt: &str,
        role: Role,
        max_iterations: u32,
        allow_spawn: bool,
        label: &str,
        cause: UsageCause,
    ) -> TurnOutcome {
        let turn = Turn {
            role,
            cause,
            chat_id: label.to_owned(),
            store_chat: None,
            max_iterations,
            max_tokens: None,
            visitor_tools: None,
        };
        self.run_background(prompt, &turn, allow_spawn).await
    }

    async fn run_background(&self, prompt: &str, turn: &Turn, allow_spawn: bool) -> TurnOutcome {
        let (specs, names) = self.tool_specs(turn.role, allow_spawn, self.visitor_tools(turn));
        let messages = vec![ChatMessage::system(self.system_prompt(turn.role, &names)), ChatMessage::user(prompt)];
        let (tx, mut rx) = mpsc::unbounded_channel();
        let limit = self.inner.config.turn_timeout;
        let mut usage = TurnUsage::default();
        let end = tokio::time::timeout(limit, self.run_loop(messages, specs, turn, &tx, &mut usage)).await;
        drop(tx);
        let mut outcome = TurnOutcome::default();
        while let Some(event) = rx.recv().await {
            match event {
                AgentEvent::Text { content } if !content.trim().is_empty() => outcome.text = content,
                AgentEvent::File { path, caption } => outcome.files.push(SentFile { path, caption }),
                _ => {}
            }
        }
        match end {
            Ok(Ok(TurnEnd::Failed(e))) => outcome.error = Some(e.to_string()),
            Ok(Ok(TurnEnd::OverBudget(spent))) => outcome.error = Some(spent.message()),
            Ok(Err(e)) => outcome.error = Some(e.to_string()),
            Err(_) => outcome.error = Some(turn_timeout_message(limit)),
            Ok(Ok(_)) => {}
        }
        outcome
    }

    /// The limit that forbids `turn` its next model call, if one does: the agent's (daily, and
    /// for background work its background limit), then the turn's own after `usage`.
    fn over_budget(&self, turn: &Turn, usage: &TurnUsage) -> Result<Option<Spent>, HistoryError> {
        if let Some(spent) = self.inner.history.budget_spent(turn.cause)? {
            return Ok(Some(spent));
        }
        Ok(Spent::check(BudgetLimit::Turn, usage.tokens(), turn.max_tokens))
    }

    /// The system prompt for `role`: a visitor's has none of the owner's memory or notes.
    fn system_prompt(&self, role: Role, tool_names: &[&'static str]) -> String {
        let today = chrono::Utc::now().date_naive();
        let inner = &self.inner;
        let audience = if role == Role::Owner { Audience::Owner } else { Audience::Visitor };
        let mut cache = inner.prompts.lock().unwrap_or_else(|p| p.into_inner());
        cache.get_or_build(today, audience, tool_names, || {
            inner.workspace.system_prompt(&inner.config.name, &inner.config.instructions, tool_names, today, audience)
        })
    }

    /// Forgets the cached system prompts: a tool may have changed the memory files or skills.
    fn workspace_may_have_changed(&self) {
        self.inner.prompts.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The tools a visitor gets in `turn`: the platform's choice for it, else `VISITOR_TOOLS`.
    fn visitor_tools<'a>(&'a self, turn: &'a Turn) -> &'a [String] {
        turn.visitor_tools.as_deref().unwrap_or(&self.inner.config.visitor_tools)
    }

    fn tool_specs(
        &self,
        role: Role,
        allow_spawn: bool,
        visitor_tools: &[String],
    ) -> (Vec<ToolSpec>, Vec<&'static str>) {
        let mut specs = Vec::new();
        let mut names = Vec::new();
        for tool in self.inner.tools.for_role(role, visitor_tools) {
            specs.push(ToolSpec::new(tool.name(), tool.description(), tool.parameters()));
            names.push(tool.name());
        }
        if allow_spawn && (role == Role::Owner || visitor_tools.iter().any(|t| t == SPAWN)) {
            specs.push(spawn_spec());
            names.push(SPAWN);
        }
        (specs, names)
    }

    async fn run_loop(
        &self,
        mut messages: Vec<ChatMessage>,
        specs: Vec<ToolSpec>,
        turn: &Turn,
        out: &Events,
        usage: &mut TurnUsage,
    ) -> Result<TurnEnd, HistoryError> {
        let offered: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        let mut request = CompletionRequest::new(self.inner.config.model.clone(), Vec::new(), specs);
        for _ in 0..turn.max_iterations {
            if let Some(spent) = self.over_budget(turn, usage)? {
                return Ok(TurnEnd::OverBudget(spent));
            }
            request.messages = messages.clone();
            let called = std::time::Instant::now();
            // Only a client reading along gets pieces; background turns want the whole answer.
            let completion = match turn.store_chat {
                Some(_) => stream_completion(self.inner.inference.as_ref(), &request, out).await,
                None => self.inner.inference.complete(&request).await,
            };
            let seconds = called.elapsed().as_secs_f64();
            let completion = match completion {
                Ok(c) => {
                    metrics::histogram!(crate::telemetry::AGENT_MODEL_CALL_DURATION, "outcome" => "ok").record(seconds);
                    c
                }
                Err(e) => {
                    metrics::histogram!(crate::telemetry::AGENT_MODEL_CALL_DURATION, "outcome" => "error")
                        .record(seconds);
                    let kind = crate::telemetry::model_error_kind(&e);
                    metrics::counter!(crate::telemetry::AGENT_MODEL_ERRORS, "kind" => kind).increment(1);
                    return Ok(TurnEnd::Failed(e));
                }
            };
            let assistant = ChatMessage::assistant(Some(completion.content.clone()), completion.tool_calls.clone());
            let metered = match &turn.store_chat {
                Some(chat) => {
                    let metered = Metered::of(&request, &completion);
                    let call =
                        MeteredCall { chat_id: &turn.chat_id, cause: turn.cause, model: &request.model, metered };
                    self.inner.history.append_metered(chat, &assistant, &call).await?;
                    metered
                }
                None => record_call(&self.inner.history, &turn.chat_id, turn.cause, &request, &completion),
            };
            tally(usage, metered);
            messages.push(assistant);
            if !completion.content.trim().is_empty() {
                let _ = out.send(AgentEvent::Text { content: completion.content.clone() });
            }
            if completion.tool_calls.is_empty() {
                return Ok(TurnEnd::Done);
            }
            for call in &completion.tool_calls {
                let name = call.function.name.clone();
                let _ = out.send(AgentEvent::ToolUse { name: name.clone(), input: call.function.arguments.clone() });
                let result = self.run_tool(&name, &call.function.arguments, &offered, turn).await;
                count_tool_call(&name, &offered, result.is_error);
                self.workspace_may_have_changed();
                if let Some(file) = &result.file {
                    let _ = out.send(AgentEvent::File { path: file.path.clone(), caption: file.caption.clone() });
                }
                let _ = out.send(AgentEvent::ToolResult { name: name.clone(), output: excerpt(&result.content) });
                let message = ChatMessage::tool(call.id.clone(), result.content);
                if let Some(chat) = &turn.store_chat {
                    self.inner.history.append(chat, &message).await?;
                }
                messages.push(message);
            }
        }
        Ok(TurnEnd::IterationCap)
    }

    async fn run_tool(&self, name: &str, arguments: &str, offered: &[String], turn: &Turn) -> ToolOutput {
        if !offered.iter().any(|o| o == name) {
            let known = name == SPAWN || self.inner.tools.get(name).is_some();
            return ToolOutput::error(if known {
                format!("[error: the tool '{name}' is not available in this conversation]")
            } else {
                format!("[error: unknown tool '{name}']")
            });
        }
        let args: Value = if arguments.trim().is_empty() {
            json!({})
        } else {
            match serde_json::from_str(arguments) {
                Ok(v) => v,
                Err(e) => {
                    return ToolOutput::error(format!(
                        "[error: the arguments of {name} are not valid JSON ({e}); send a JSON object]"
                    ));
                }
            }
        };
        if name == SPAWN {
            return self.spawn_subagent(&args, turn);
        }
        match self.inner.tools.get(name) {
            Some(tool) => tool.call(args, &ToolContext::new(turn.role, turn.chat_id.clone())).await,
            None => ToolOutput::error(format!("[error: unknown tool '{name}']")),
        }
    }

    fn spawn_subagent(&self, args: &Value, parent: &Turn) -> ToolOutput {
        let Some(task) = args.get("task").and_then(Value::as_str).map(str::trim).filter(|t| !t.is_empty()) else {
            return ToolOutput::error("[error: spawn needs a non-empty 'task']");
        };
        let label = args
            .get("label")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map_or_else(|| task.chars().take(50).collect(), str::to_owned);
        let Ok(permit) = self.inner.subagents.clone().try_acquire_owned() else {
            return ToolOutput::error(format!(
                "[error: {} subagents are already running; wait for one to finish or do the task yourself]",
                self.inner.config.max_subagents
            ));
        };
        let agent = self.clone();
        let task = task.to_owned();
        let reply_label = label.clone();
        // The subagent works with its parent's tools, a visitor's choice for that turn included.
        let turn = Turn {
            role: parent.role,
            cause: UsageCause::Subagent,
            chat_id: "__subagent__".to_owned(),
            store_chat: None,
            max_iterations: SUBAGENT_MAX_ITERATIONS,
            max_tokens: None,
            visitor_tools: parent.visitor_tools.clone(),
        };
        tokio::spawn(async move {
            let _permit = permit;
            let outcome = agent.run_background(&task, &turn, false).await;
            let text = match (&outcome.error, outcome.text.is_empty()) {
                (Some(e), _) => format!("[Task: {label}] Error: {e}"),
                (None, true) => format!("[Task: {label}] (no output)"),
                (None, false) => format!("[Task: {label}] {}", outcome.text),
            };
            agent.deliver_to_owner(&text, "subagent", &outcome.files, "subagent_file").await;
        });
        ToolOutput::ok(format!(
            "Subagent started for: {reply_label}. Its result will be sent to the owner when it finishes."
        ))
    }

    async fn deliver_to_owner(&self, text: &str, source: &str, files: &[SentFile], file_source: &str) {
        let Some(owner) = self.inner.config.owner_chat_id.as_deref() else {
            tracing::info!(source, "no OWNER_CHAT_ID: a proactive message was dropped");
            return;
        };
        let history = &self.inner.history;
        if !text.is_empty()
            && let Err(e) = history.push_pending(owner, text, source).await
        {
            tracing::warn!(%e, "could not queue a message for the owner");
        }
        for file in files {
            if let Err(e) = history.push_pending(owner, &file_message(&file.path, &file.caption), file_source).await {
                tracing::warn!(%e, "could not queue a file for the owner");
            }
        }
    }

    /// One heartbeat check: runs a turn when `HEARTBEAT.md` has actionable content and either
    /// changed since the last run or was last run `period` ago: its own `every <N><m|h|d>`
    /// schedule, else `period` (the agent's `HEARTBEAT_INTERVAL`). The last run is kept in the
    /// agent's database, so a restart neither repeats nor postpones a run. The answer goes to the
    /// owner's chat, unless it is `HEARTBEAT_OK`.
    pub async fn heartbeat_tick(&self, period: Duration) -> HeartbeatOutcome {
        // Confined like the file tools: a planted link must not feed another file to the model.
        let workspace = self.inner.workspace.clone();
        let Ok(Some(content)) = tokio::task::spawn_blocking(move || workspace.read_heartbeat()).await else {
            return HeartbeatOutcome::Idle;
        };
        if !is_actionable(&content) {
            return HeartbeatOutcome::Idle;
        }
        let hash: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(content.as_bytes()).into();
        let history = &self.inner.history;
        let last = match history.heartbeat_last().await {
            Ok(last) => last,
            Err(error) => {
                // Unknown when it last ran: waiting is cheaper than running on every check.
                tracing::warn!(%error, "cannot read the heartbeat's last run; not running it now");
                return HeartbeatOutcome::NotDue;
            }
        };
        let now = chrono::Utc::now().timestamp();
        let period = schedule_of(&content).unwrap_or(period);
        let waited = |at: i64| u64::try_from(now - at).unwrap_or(0);
        if let Some((last_hash, at)) = last
            && last_hash == hash
            && waited(at) < period.as_secs()
        {
            return HeartbeatOutcome::NotDue;
        }
        match history.budget_spent(UsageCause::Heartbeat) {
            Ok(None) => {}
            Ok(Some(spent)) => {
                self.log_heartbeat_over_budget(spent);
                return HeartbeatOutcome::OverBudget;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the budget; not running the heartbeat now");
                return HeartbeatOutcome::NotDue;
            }
        }
        // Recorded before the run, so a run that crashes the agent is not repeated at every start.
        if let Err(error) = history.heartbeat_record(hash, now).await {
            tracing::warn!(%error, "cannot record the heartbeat's run; not running it now");
            return HeartbeatOutcome::NotDue;
        }
        let outcome = self
            .background_turn(
                HEARTBEAT_PROMPT,
                Role::Owner,
                self.inner.config.max_tool_iterations,
                true,
                "__heartbeat__",
                UsageCause::Heartbeat,
            )
            .await;
        if let Some(error) = &outcome.error {
            tracing::warn!(%error, "heartbeat turn failed");
            return HeartbeatOutcome::Ran { delivered: false };
        }
        let quiet = is_heartbeat_ok(&outcome.text) || outcome.text.trim().is_empty();
        if quiet && outcome.files.is_empty() {
            return HeartbeatOutcome::Ran { delivered: false };
        }
        let text = if quiet { String::new() } else { format!("[Heartbeat] {}", outcome.text.trim()) };
        if self.inner.config.owner_chat_id.is_none() {
            tracing::info!("no OWNER_CHAT_ID: heartbeat output dropped");
            return HeartbeatOutcome::Ran { delivered: false };
        }
        self.deliver_to_owner(&text, "heartbeat", &outcome.files, "heartbeat_file").await;
        HeartbeatOutcome::Ran { delivered: true }
    }

    fn log_heartbeat_over_budget(&self, spent: Spent) {
        let today = chrono::Utc::now().date_naive();
        let mut logged = self.inner.heartbeat_over_budget_logged.lock().unwrap_or_else(|p| p.into_inner());
        if *logged != Some(today) {
            *logged = Some(today);
            tracing::info!(
                limit = ?spent.limit,
                used = spent.used,
                allowed = spent.allowed,
                "the budget is spent: the heartbeat waits until it allows a run"
            );
        }
    }

    /// Checks the heartbeat (see [`Agent::heartbeat_tick`]) with `interval` as its period, every
    /// minute or every `interval` when shorter (the first check one such step after the start),
    /// so a run falls due at most a minute late, whatever the restarts.
    pub fn spawn_heartbeat(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let agent = self.clone();
        let step = interval.min(HEARTBEAT_CHECK);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + step, step);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let outcome = agent.heartbeat_tick(interval).await;
                tracing::debug!(?outcome, "heartbeat");
            }
        })
    }
}

/// One lock per chat with a turn running or waiting, so that a chat's turns run one at a time,
/// and the signal that stops them ([`Agent::stop`]). An entry counts the [`ChatSlot`]s that use
/// it and goes when the last one is dropped: a turn that ends, fails or is aborted (client gone,
/// deadline, stop) leaves nothing behind, so the map stays as small as the number of busy chats.
#[derive(Clone, Default)]
struct ChatLocks(Arc<Mutex<HashMap<String, ChatLockEntry>>>);

#[derive(Default)]
struct ChatLockEntry {
    lock: Arc<tokio::sync::Mutex<()>>,
    stop: Arc<Notify>,
    users: usize,
}

/// A turn's claim on its chat's lock; see [`ChatLocks`].
struct ChatSlot {
    locks: ChatLocks,
    chat_id: String,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl ChatLocks {
    /// A new turn's slot in `chat_id`, and the future that completes when the chat's turns are
    /// stopped. Both are taken under the map's lock, as [`ChatLocks::stop`] signals under it: a
    /// stop reaches every turn that holds a slot, and none that claims one after it.
    fn claim(&self, chat_id: &str) -> (ChatSlot, OwnedNotified) {
        let mut map = self.map();
        let entry = map.entry(chat_id.to_owned()).or_default();
        entry.users += 1;
        let stop = entry.stop.clone().notified_owned();
        (ChatSlot { locks: self.clone(), chat_id: chat_id.to_owned(), lock: entry.lock.clone() }, stop)
    }

    /// Stops every turn holding a slot in `chat_id`; whether there was one.
    fn stop(&self, chat_id: &str) -> bool {
        let map = self.map();
        let Some(entry) = map.get(chat_id) else { return false };
        // Reaches every `OwnedNotified` made before it, polled yet or not.
        entry.stop.notify_waiters();
        true
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, ChatLockEntry>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for ChatSlot {
    fn drop(&mut self) {
        let mut map = self.locks.map();
        if let Some(entry) = map.get_mut(&self.chat_id) {
            entry.users = entry.users.saturating_sub(1);
            if entry.users == 0 {
                map.remove(&self.chat_id);
            }
        }
    }
}

/// Runs one completion, sending its text as it is written: `text_delta` pieces (the first at
/// once, then at most one per [`PIECE_INTERVAL`]) and one `thinking` when the model reasons first.
/// The caller still sends the whole completion as `text`, which supersedes the pieces; so what
/// is left unsent when the completion ends needs no piece of its own.
async fn stream_completion(
    inference: &dyn Inference,
    request: &CompletionRequest,
    out: &Events,
) -> Result<Completion, InferenceError> {
    use futures_util::StreamExt;

    let mut deltas = inference.stream(request).await?;
    let mut builder = CompletionBuilder::default();
    let mut unsent = String::new();
    let mut last_piece: Option<tokio::time::Instant> = None;
    let mut told_thinking = false;
    loop {
        let due = last_piece.map(|at| at + PIECE_INTERVAL);
        let delta = tokio::select! {
            biased;
            delta = deltas.next() => delta,
            () = sleep_until_due(due), if !unsent.is_empty() => {
                let _ = out.send(AgentEvent::TextDelta { content: std::mem::take(&mut unsent) });
                last_piece = Some(tokio::time::Instant::now());
                continue;
            }
        };
        let Some(delta) = delta else { break };
        let progress = builder.push(delta?);
        if progress.thinking && !told_thinking {
            told_thinking = true;
            let _ = out.send(AgentEvent::Thinking);
        }
        unsent.push_str(&progress.text);
        if !unsent.is_empty() && last_piece.is_none() {
            let _ = out.send(AgentEvent::TextDelta { content: std::mem::take(&mut unsent) });
            last_piece = Some(tokio::time::Instant::now());
        }
    }
    Ok(builder.finish())
}

/// Counts a tool call; a name the agent did not offer is `unknown` (the model may write anything).
fn count_tool_call(name: &str, offered: &[String], failed: bool) {
    let tool = if offered.iter().any(|o| o == name) { name.to_owned() } else { "unknown".to_owned() };
    let outcome = if failed { "error" } else { "ok" };
    metrics::counter!(crate::telemetry::AGENT_TOOL_CALLS, "tool" => tool, "outcome" => outcome).increment(1);
}

async fn sleep_until_due(due: Option<tokio::time::Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Ends a chat turn that a limit stopped: `budget_spent` for clients that word it themselves,
/// then the `error` old clients show.
fn send_spent(out: &Events, spent: Spent) {
    let _ = out.send(spent.event());
    let _ = out.send(AgentEvent::Error { content: spent.message() });
}

/// What the user reads when a turn ran out of time.
fn turn_timeout_message(limit: Duration) -> String {
    let secs = limit.as_secs();
    let (n, unit) = if secs >= 60 && secs.is_multiple_of(60) { (secs / 60, "minute") } else { (secs, "second") };
    let length = format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    format!(
        "This message took longer than {length}, the most one message may take, so I stopped working on it. \
         Send another message to continue, or ask for the task in smaller steps."
    )
}

fn spawn_spec() -> ToolSpec {
    ToolSpec::new(
        SPAWN,
        "Start a background subagent for a self-contained task that takes a while. It works on its own \
         (without this conversation's history) and its result is sent to the owner when it finishes. \
         Returns at once.",
        json!({
            "type": "object",
            "properties": {
                "task": {"type": "string", "description": "The full task, with every detail the subagent needs."},
                "label": {"type": "string", "description": "A short label for the task (default: its first 50 characters)."}
            },
            "required": ["task"]
        }),
    )
}

fn excerpt(text: &str) -> String {
    let mut out: String = text.chars().take(TOOL_RESULT_EXCERPT_CHARS).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// Whether `HEARTBEAT.md` asks for anything: a line that is not blank, not a `#` heading and not a
/// one-line `<!-- comment -->`.
pub fn is_actionable(content: &str) -> bool {
    content
        .lines()
        .map(str::trim)
        .any(|line| !(line.is_empty() || line.starts_with('#') || (line.starts_with("<!--") && line.ends_with("-->"))))
}

/// Whether a heartbeat answer means "nothing to report" (`HEARTBEAT_OK`, perhaps with
/// markdown emphasis or a final full stop).
pub fn is_heartbeat_ok(text: &str) -> bool {
    text.trim().trim_matches(|c: char| c == '*' || c == '`' || c == '_' || c == '.' || c.is_whitespace())
        == HEARTBEAT_OK
}

/// The repeat period a `HEARTBEAT.md` states with `every <N><unit>` (`every 6h`, `every 30 minutes`).
pub fn schedule_of(content: &str) -> Option<Duration> {
    let lower = content.to_lowercase();
    let mut words =
        lower.split(|c: char| c.is_whitespace() || c == ':' || c == ',').filter(|w| !w.is_empty()).peekable();
    while let Some(word) = words.next() {
        if word != "every" {
            continue;
        }
        let Some(next) = words.next() else { break };
        let digits: String = next.chars().take_while(char::is_ascii_digit).collect();
        let (n, unit_inline) = if digits.is_empty() {
            (1, next)
        } else {
            let Ok(n) = digits.parse::<u64>() else { continue };
            (n, &next[digits.len()..])
        };
        let unit = if unit_inline.is_empty() { words.peek().copied().unwrap_or("") } else { unit_inline };
        let seconds = match unit.trim_end_matches('s') {
            "" => continue,
            "m" | "min" | "minute" => 60,
            "h" | "hour" | "hr" => 3600,
            "d" | "day" => 86_400,
            _ => continue,
        };
        return Some(Duration::from_secs(n.saturating_mul(seconds).max(60)));
    }
    None
}

/// The events of one chat turn (see [`Agent::chat`]). Sends `keepalive` after every quiet
/// `keepalive_interval`; ends after `done`; cancels the turn when dropped, unless it is durable.
pub struct ChatStream {
    rx: mpsc::UnboundedReceiver<AgentEvent>,
    task: AbortHandle,
    keepalive: Pin<Box<tokio::time::Sleep>>,
    interval: Duration,
    queued: VecDeque<AgentEvent>,
    finished: bool,
    /// Set for a durable turn: who takes over the events this stream did not hand out.
    detach: Option<Detach>,
    /// A durable turn's whole texts this stream handed out.
    handed: Vec<String>,
}

/// What a durable turn's stream needs to queue what its client did not get.
struct Detach {
    agent: Agent,
    chat_id: String,
    /// Set by the turn when [`Agent::stop`] ended it: then nothing is queued.
    stopped: Arc<AtomicBool>,
}

impl Detach {
    /// Reads the rest of the turn's events, up to `done`, and queues what a user would have
    /// seen: each whole text, each file, and the error the turn ended with; nothing when the
    /// turn was stopped. The texts the stream did hand out (`handed`) open the first queued text:
    /// the client that left may have shown them only in part, so the answer comes whole.
    async fn queue_the_rest(self, mut rx: mpsc::UnboundedReceiver<AgentEvent>, handed: Vec<String>) {
        let mut undelivered = Vec::new();
        let mut ended = false;
        while !ended {
            match rx.recv().await {
                Some(event) => ended = undelivered_message(event, &mut undelivered),
                None => break,
            }
        }
        if !ended {
            // The turn's task died without `done` (it panicked): the user is still told.
            undelivered.push((PENDING_TURN, unfinished_notice(INTERNAL_ERROR)));
        }
        if self.stopped.load(Ordering::Acquire) || undelivered.is_empty() {
            return;
        }
        if !handed.is_empty() {
            let before = handed.join("\n\n");
            match undelivered.first_mut() {
                Some((PENDING_TURN, text)) if !text.starts_with(UNFINISHED_PREFIX) => {
                    *text = format!("{before}\n\n{text}")
                }
                _ => undelivered.insert(0, (PENDING_TURN, before)),
            }
        }
        let count = undelivered.len();
        match self.agent.history().push_pending_all(&self.chat_id, &undelivered).await {
            Ok(()) => tracing::info!(count, "a durable turn's client had left: its answer is queued"),
            Err(error) => tracing::warn!(%error, count, "could not queue a durable turn's answer"),
        }
    }
}

/// Adds what `event` showed a user to `undelivered` (`(source, content)`); whether it was `done`.
fn undelivered_message(event: AgentEvent, undelivered: &mut Vec<(&'static str, String)>) -> bool {
    match event {
        AgentEvent::Text { content } if !content.trim().is_empty() => undelivered.push((PENDING_TURN, content)),
        AgentEvent::File { path, caption } => undelivered.push((PENDING_TURN_FILE, file_message(&path, &caption))),
        AgentEvent::Error { content } => undelivered.push((PENDING_TURN, unfinished_notice(&content))),
        AgentEvent::Done { .. } => return true,
        _ => {}
    }
    false
}

/// The content of a pending message (`*_file` sources) that sends the workspace file `path`.
fn file_message(path: &str, caption: &str) -> String {
    json!({"type": "file", "path": path, "caption": caption}).to_string()
}

/// The queued form of the error a durable turn ended with: it arrives on its own, perhaps after
/// a restart of the bot, so it says what it is about.
fn unfinished_notice(error: &str) -> String {
    format!("{UNFINISHED_PREFIX}{error})")
}

/// How [`unfinished_notice`] starts, to tell it from the answer's text.
const UNFINISHED_PREFIX: &str = "(The answer to your last message could not be finished: ";

/// What a client reads when a turn ended without finishing its stream.
const INTERNAL_ERROR: &str = "The agent hit an internal error. Please try again.";

impl ChatStream {
    fn new(
        rx: mpsc::UnboundedReceiver<AgentEvent>,
        task: AbortHandle,
        interval: Duration,
        detach: Option<Detach>,
    ) -> Self {
        ChatStream {
            rx,
            task,
            keepalive: Box::pin(tokio::time::sleep(interval)),
            interval,
            queued: VecDeque::new(),
            finished: false,
            detach,
            handed: Vec::new(),
        }
    }
}

impl Stream for ChatStream {
    type Item = AgentEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<AgentEvent>> {
        let this = &mut *self;
        if let Some(event) = this.queued.pop_front() {
            return Poll::Ready(Some(event));
        }
        if this.finished {
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(event)) => {
                let deadline = tokio::time::Instant::now() + this.interval;
                this.keepalive.as_mut().reset(deadline);
                if this.detach.is_some()
                    && let AgentEvent::Text { content } = &event
                {
                    this.handed.push(content.clone());
                }
                if event.is_done() {
                    this.finished = true;
                }
                Poll::Ready(Some(event))
            }
            Poll::Ready(None) => {
                // The turn ended without `done` (it panicked): still end the stream properly.
                this.finished = true;
                tracing::error!("a chat turn ended without finishing its stream");
                this.queued.push_back(AgentEvent::done());
                Poll::Ready(Some(AgentEvent::Error { content: INTERNAL_ERROR.into() }))
            }
            Poll::Pending => {
                if this.keepalive.as_mut().poll(cx).is_ready() {
                    let deadline = tokio::time::Instant::now() + this.interval;
                    this.keepalive.as_mut().reset(deadline);
                    // Register the timer again so the next keepalive wakes this task.
                    let _ = this.keepalive.as_mut().poll(cx);
                    return Poll::Ready(Some(AgentEvent::Keepalive));
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for ChatStream {
    fn drop(&mut self) {
        // A durable turn goes on without its client; what it writes from here is queued.
        if let Some(detach) = self.detach.take()
            && !self.finished
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            // Not finished, so nothing is queued on this side: every event left is in the channel.
            let (_, closed) = mpsc::unbounded_channel();
            let rx = std::mem::replace(&mut self.rx, closed);
            runtime.spawn(detach.queue_the_rest(rx, std::mem::take(&mut self.handed)));
            return;
        }
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_files_are_read_like_the_python_agent() {
        assert!(!is_actionable("# Tasks\n\n<!-- nothing yet -->\n   \n"));
        assert!(is_actionable("# Tasks\n- [ ] water the plants\n"));
        assert!(is_actionable("<!-- a comment\nover two lines -->"));
        assert!(is_heartbeat_ok("HEARTBEAT_OK"));
        assert!(is_heartbeat_ok("**HEARTBEAT_OK**."));
        assert!(!is_heartbeat_ok("HEARTBEAT_OK but the server is down"));
    }

    #[test]
    fn schedules() {
        assert_eq!(schedule_of("- check mail every 2h"), Some(Duration::from_secs(7200)));
        assert_eq!(schedule_of("Every 30 minutes: ping"), Some(Duration::from_secs(1800)));
        assert_eq!(schedule_of("every day, summarise"), Some(Duration::from_secs(86_400)));
        assert_eq!(schedule_of("every time"), None);
        assert_eq!(schedule_of("every 1 day"), Some(Duration::from_secs(86_400)));
        assert_eq!(schedule_of("check the news"), None);
    }

    fn chats_with_locks(locks: &ChatLocks) -> usize {
        locks.map().len()
    }

    /// Waits (up to 5 s) until `done` says so.
    async fn eventually(mut done: impl FnMut() -> bool) -> bool {
        for _ in 0..500 {
            if done() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        done()
    }

    #[tokio::test]
    async fn turns_aborted_while_waiting_or_holding_leave_no_chat_lock_behind() {
        let locks = ChatLocks::default();
        let hold = |locks: &ChatLocks| {
            let (slot, _) = locks.claim("7");
            tokio::spawn(async move {
                let _held = slot.lock.lock().await;
                std::future::pending::<()>().await;
            })
        };
        let holder = hold(&locks);
        assert!(eventually(|| locks.0.lock().unwrap()["7"].lock.try_lock().is_err()).await);
        let waiter = hold(&locks);
        assert_eq!(locks.map()["7"].users, 2);
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(locks.map()["7"].users, 1);
        holder.abort();
        let _ = holder.await;
        assert_eq!(chats_with_locks(&locks), 0);
        // A turn that ends normally leaves nothing either.
        drop(locks.claim("8"));
        assert_eq!(chats_with_locks(&locks), 0);
    }

    /// A model that never answers.
    struct Silent;

    #[async_trait::async_trait]
    impl Inference for Silent {
        async fn stream(&self, _: &CompletionRequest) -> Result<crate::inference::DeltaStream, InferenceError> {
            std::future::pending().await
        }
    }

    async fn silent_agent(dir: &std::path::Path, turn_timeout: &str) -> Agent {
        let settings = AgentSettings::from_vars([
            ("LIBERTAI_API_KEY", "k"),
            ("AGENT_SECRET", "s"),
            ("TURN_TIMEOUT", turn_timeout),
            ("KEEPALIVE_INTERVAL", "3600"),
        ])
        .unwrap();
        let workspace = Workspace::prepare(&dir.join("ws")).unwrap();
        let history = History::open(&dir.join("agent.db")).await.unwrap();
        Agent::new(
            AgentConfig::from_settings(&settings),
            Arc::new(Silent),
            ToolSet::from_tools(Vec::new()),
            history,
            workspace,
        )
    }

    #[tokio::test]
    async fn a_turn_past_its_deadline_ends_with_an_error_and_frees_its_chat() {
        use futures_util::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let agent = silent_agent(dir.path(), "1").await;
        let events: Vec<AgentEvent> = agent.chat(ChatRequest::new("hi", "5", Role::Owner)).collect().await;
        assert!(
            matches!(&events[..], [AgentEvent::Error { content }, AgentEvent::Done { .. }] if content.contains("longer than 1 second,")),
            "{events:?}"
        );
        assert_eq!(chats_with_locks(&agent.inner.chat_locks), 0);
        let outcome = agent.background_turn("hi", Role::Owner, 5, false, "__test__", UsageCause::Heartbeat).await;
        assert!(outcome.error.is_some_and(|e| e.contains("longer than 1 second")));
    }

    #[tokio::test]
    async fn a_client_that_leaves_frees_its_chat() {
        let dir = tempfile::tempdir().unwrap();
        let agent = silent_agent(dir.path(), "900").await;
        let stream = agent.chat(ChatRequest::new("hi", "5", Role::Owner));
        assert!(eventually(|| chats_with_locks(&agent.inner.chat_locks) == 1).await, "the turn never started");
        drop(stream);
        assert!(eventually(|| chats_with_locks(&agent.inner.chat_locks) == 0).await, "the aborted turn kept its lock");
    }

    #[test]
    fn the_deadline_reads_naturally() {
        assert!(turn_timeout_message(Duration::from_secs(900)).contains("longer than 15 minutes,"));
        assert!(turn_timeout_message(Duration::from_secs(60)).contains("longer than 1 minute,"));
        assert!(turn_timeout_message(Duration::from_secs(90)).contains("longer than 90 seconds,"));
    }
}
