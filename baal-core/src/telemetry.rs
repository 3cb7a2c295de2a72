//! Metrics and health: the names of what Baal measures, the Prometheus recorder that keeps the
//! figures (feature `prometheus`), and the bot's server of `/metrics`, `/healthz` and `/readyz`
//! (feature `telemetry`).
//!
//! Baal counts through the [`metrics`] facade: until a process installs a recorder (`install`,
//! feature `prometheus`) every count is a no-op, so an embedder that does not want metrics pays
//! nothing.
//! Labels carry only bounded, non-secret values (kinds, outcomes, command and tool names known to
//! this release, step keys): never a user, chat, agent id, URL or text.

/// Inputs handled, by `kind` (`command`, `text`, `button`).
pub const INPUTS: &str = "baal_inputs_total";
/// Commands handled, by `command` (a command this release knows, else `unknown`).
pub const COMMANDS: &str = "baal_commands_total";
/// Chat turns through the platform, by `role` (`owner`, `visitor`) and `outcome` (`answered`,
/// `error`, `budget`, `stopped`).
pub const CHAT_TURNS: &str = "baal_chat_turns_total";
/// Seconds from an input's arrival to its request leaving for the agent: what the platform adds.
pub const TURN_ADDED_LATENCY: &str = "baal_turn_added_latency_seconds";
/// Seconds from the request leaving for the agent to the first text of its answer.
pub const TURN_FIRST_TOKEN: &str = "baal_turn_first_token_seconds";
/// Seconds from the request leaving for the agent to the end of its answer.
pub const TURN_DURATION: &str = "baal_turn_duration_seconds";
/// Deployments finished, by `deployer` and `outcome` (`succeeded`, `failed`).
pub const DEPLOYMENTS: &str = "baal_deployments_total";
/// Seconds one deployment took, start to end, by `deployer` and `outcome`.
pub const DEPLOYMENT_DURATION: &str = "baal_deployment_duration_seconds";
/// Seconds one deployment step took, by `deployer` and `step` (the step's key).
pub const DEPLOY_STEP_DURATION: &str = "baal_deploy_step_duration_seconds";
/// Agents by `status` (deleted agents are not counted); refreshed when scraped.
pub const AGENTS: &str = "baal_agents";
/// VMs of the Aleph pool by `status`; refreshed when scraped.
pub const POOL_VMS: &str = "baal_pool_vms";
/// Failures talking to agents, by `kind` (`unreachable`, `timeout`, `lost`, `unauthorized`,
/// `http_<status>`, `bad_address`, `turn_error`, `budget`).
pub const AGENT_ERRORS: &str = "baal_agent_errors_total";
/// Flood waits the messaging service imposed on the bot.
pub const FLOOD_WAITS: &str = "baal_flood_waits_total";
/// Seconds the bot waited for flood waits, in all.
pub const FLOOD_WAIT_SECONDS: &str = "baal_flood_wait_seconds_total";
/// Model tokens the platform stored from agents' usage, by `cause` and `kind` (`prompt`,
/// `completion`).
pub const TOKENS: &str = "baal_tokens_total";

/// Turns an agent ran for chat requests, by `role` and `outcome` (`done`, `iteration_cap`,
/// `model_error`, `over_budget`, `error`, `timeout`, `stopped`).
pub const AGENT_TURNS: &str = "baal_agent_turns_total";
/// Tool calls an agent made, by `tool` (a tool it offered, else `unknown`) and `outcome` (`ok`,
/// `error`).
pub const AGENT_TOOL_CALLS: &str = "baal_agent_tool_calls_total";
/// Seconds one model call took (the whole completion), by `outcome` (`ok`, `error`).
pub const AGENT_MODEL_CALL_DURATION: &str = "baal_agent_model_call_duration_seconds";
/// Model tokens an agent recorded, by `cause` and `kind` (`prompt`, `completion`).
pub const AGENT_TOKENS: &str = "baal_agent_tokens_total";
/// Model calls that failed, by `kind` (`unreachable`, `timeout`, `rate_limited`,
/// `unauthorized`, `http_<status>`, `protocol`).
pub const AGENT_MODEL_ERRORS: &str = "baal_agent_model_errors_total";

/// Histogram buckets, in seconds: 1 ms to 120 s (a quick store call to a slow deployment step;
/// longer observations land in `+Inf`).
pub const SECONDS_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// Help text and units for every metric above, for the installed recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(INPUTS, Unit::Count, "Inputs handled, by kind");
    describe_counter!(COMMANDS, Unit::Count, "Commands handled, by command");
    describe_counter!(CHAT_TURNS, Unit::Count, "Chat turns through the platform, by role and outcome");
    describe_histogram!(TURN_ADDED_LATENCY, Unit::Seconds, "Input received to request sent to the agent");
    describe_histogram!(TURN_FIRST_TOKEN, Unit::Seconds, "Request sent to the agent's first text");
    describe_histogram!(TURN_DURATION, Unit::Seconds, "Request sent to the end of the agent's answer");
    describe_counter!(DEPLOYMENTS, Unit::Count, "Deployments finished, by deployer and outcome");
    describe_histogram!(DEPLOYMENT_DURATION, Unit::Seconds, "Duration of whole deployments");
    describe_histogram!(DEPLOY_STEP_DURATION, Unit::Seconds, "Duration of deployment steps, by step");
    describe_gauge!(AGENTS, Unit::Count, "Agents by status");
    describe_gauge!(POOL_VMS, Unit::Count, "VMs of the Aleph pool by status");
    describe_counter!(AGENT_ERRORS, Unit::Count, "Failures talking to agents, by kind");
    describe_counter!(FLOOD_WAITS, Unit::Count, "Flood waits imposed on the bot");
    describe_counter!(FLOOD_WAIT_SECONDS, Unit::Seconds, "Seconds spent in flood waits");
    describe_counter!(TOKENS, Unit::Count, "Model tokens stored from agents' usage, by cause and kind");
    describe_counter!(AGENT_TURNS, Unit::Count, "Chat turns the agent ran, by role and outcome");
    describe_counter!(AGENT_TOOL_CALLS, Unit::Count, "Tool calls, by tool and outcome");
    describe_histogram!(AGENT_MODEL_CALL_DURATION, Unit::Seconds, "Duration of model calls");
    describe_counter!(AGENT_TOKENS, Unit::Count, "Model tokens recorded, by cause and kind");
    describe_counter!(AGENT_MODEL_ERRORS, Unit::Count, "Failed model calls, by kind");
}

/// The label of a failed model call.
#[cfg(feature = "agent")]
pub(crate) fn model_error_kind(err: &crate::inference::InferenceError) -> std::borrow::Cow<'static, str> {
    use crate::inference::InferenceError;
    match err {
        InferenceError::Unreachable => "unreachable".into(),
        InferenceError::Timeout => "timeout".into(),
        InferenceError::RateLimited => "rate_limited".into(),
        InferenceError::Unauthorized => "unauthorized".into(),
        InferenceError::Status(code) => format!("http_{code}").into(),
        InferenceError::Protocol => "protocol".into(),
    }
}

/// The label of a role.
#[cfg(any(feature = "agent", feature = "platform"))]
pub(crate) fn role_label(role: crate::domain::Role) -> &'static str {
    match role {
        crate::domain::Role::Owner => "owner",
        crate::domain::Role::Visitor => "visitor",
    }
}

/// Counts `prompt` and `completion` tokens under `name` for `cause`.
#[cfg(any(feature = "agent", feature = "platform"))]
pub(crate) fn count_tokens(name: &'static str, cause: &'static str, prompt: u64, completion: u64) {
    metrics::counter!(name, "cause" => cause, "kind" => "prompt").increment(prompt);
    metrics::counter!(name, "cause" => cause, "kind" => "completion").increment(completion);
}

#[cfg(feature = "prometheus")]
pub use metrics_exporter_prometheus::PrometheusHandle;
#[cfg(feature = "prometheus")]
pub use prometheus::{TelemetryError, install};

#[cfg(feature = "prometheus")]
mod prometheus {
    use std::time::Duration;

    use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

    /// How often recorded histogram values are folded into their buckets when nobody scrapes:
    /// until then each value is held on its own.
    const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

    /// The recorder could not be installed.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum TelemetryError {
        /// A recorder is installed already (one per process), or the buckets were refused.
        #[error("cannot install the metrics recorder: {0}")]
        Install(String),
    }

    /// Installs the Prometheus recorder for this process and describes Baal's metrics; render
    /// them with [`PrometheusHandle::render`]. Inside a Tokio runtime it also starts the task that
    /// keeps unscraped histograms small. One recorder per process: a second call fails.
    pub fn install() -> Result<PrometheusHandle, TelemetryError> {
        let handle = PrometheusBuilder::new()
            .set_buckets(super::SECONDS_BUCKETS)
            .and_then(PrometheusBuilder::install_recorder)
            .map_err(|err| TelemetryError::Install(err.to_string()))?;
        super::describe();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let upkeep = handle.clone();
            runtime.spawn(async move {
                let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    upkeep.run_upkeep();
                }
            });
        }
        Ok(handle)
    }
}

#[cfg(feature = "telemetry")]
pub use server::{Readiness, Refresh, serve};

#[cfg(feature = "telemetry")]
mod server {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use futures_util::future::BoxFuture;
    use metrics_exporter_prometheus::PrometheusHandle;
    use poem::http::StatusCode;
    use poem::listener::TcpAcceptor;
    use poem::{EndpointExt, Response, Route, Server, get, handler, web::Data};

    /// How long `/readyz` waits for the database.
    #[cfg(feature = "store")]
    const DATABASE_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

    /// Work run before each `/metrics` render, to refresh gauges that are read rather than
    /// counted (agents by status: [`Platform::record_gauges`](crate::platform::Platform::record_gauges)).
    pub type Refresh = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

    /// What `/readyz` checks: the database (when given a store) and named flags the front-end
    /// and the set-up raise (`telegram` once the session is logged in, `deployer` once the
    /// platform is built). Cheap to clone; clones share the checks.
    #[derive(Clone, Default)]
    pub struct Readiness {
        inner: Arc<Checks>,
    }

    #[derive(Default)]
    struct Checks {
        #[cfg(feature = "store")]
        store: Mutex<Option<Arc<dyn crate::store::Store>>>,
        flags: Mutex<BTreeMap<String, bool>>,
    }

    impl Readiness {
        /// No checks yet: ready.
        pub fn new() -> Readiness {
            Readiness::default()
        }

        /// Checks the database behind `store` (a `SELECT 1` within two seconds) on each `/readyz`.
        #[cfg(feature = "store")]
        pub fn with_store(self, store: Arc<dyn crate::store::Store>) -> Readiness {
            *self.inner.store.lock().unwrap_or_else(|p| p.into_inner()) = Some(store);
            self
        }

        /// Adds the flag `name`, not raised: not ready until [`Readiness::set`] raises it.
        pub fn require(self, name: &str) -> Readiness {
            self.flags().entry(name.to_owned()).or_insert(false);
            self
        }

        /// Raises (or lowers) the flag `name`.
        pub fn set(&self, name: &str, ready: bool) {
            self.flags().insert(name.to_owned(), ready);
        }

        fn flags(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, bool>> {
            self.inner.flags.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// The names of the checks that fail now (empty when ready): `database`, then the
        /// flags not raised, in name order.
        pub async fn failing(&self) -> Vec<String> {
            let mut failing = Vec::new();
            #[cfg(feature = "store")]
            {
                let store = self.inner.store.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if let Some(store) = store {
                    match tokio::time::timeout(DATABASE_CHECK_TIMEOUT, store.ping()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(err)) => {
                            tracing::warn!(error = %err, "readiness: the database does not answer");
                            failing.push("database".to_owned());
                        }
                        Err(_) => {
                            tracing::warn!("readiness: the database did not answer in time");
                            failing.push("database".to_owned());
                        }
                    }
                }
            }
            failing.extend(self.flags().iter().filter(|(_, ready)| !**ready).map(|(name, _)| name.clone()));
            failing
        }
    }

    #[derive(Clone)]
    struct State {
        handle: PrometheusHandle,
        readiness: Readiness,
        refresh: Option<Refresh>,
    }

    /// Serves `GET /metrics` (Prometheus text), `GET /healthz` (200 `ok` while the process runs)
    /// and `GET /readyz` (200 when every check of `readiness` passes, else 503 with a JSON body
    /// naming the failing ones) on `listener` until the task is dropped. No authentication:
    /// bind it to loopback or a private network.
    pub async fn serve(
        listener: tokio::net::TcpListener,
        handle: PrometheusHandle,
        readiness: Readiness,
        refresh: Option<Refresh>,
    ) -> std::io::Result<()> {
        let app = Route::new()
            .at("/metrics", get(metrics))
            .at("/healthz", get(healthz))
            .at("/readyz", get(readyz))
            .data(State { handle, readiness, refresh });
        Server::new_with_acceptor(TcpAcceptor::from_tokio(listener)?).run(app).await
    }

    #[handler]
    async fn metrics(Data(state): Data<&State>) -> Response {
        if let Some(refresh) = &state.refresh {
            refresh().await;
        }
        Response::builder().content_type("text/plain; version=0.0.4; charset=utf-8").body(state.handle.render())
    }

    #[handler]
    fn healthz() -> &'static str {
        "ok"
    }

    #[handler]
    async fn readyz(Data(state): Data<&State>) -> Response {
        let failing = state.readiness.failing().await;
        let (status, body) = if failing.is_empty() {
            (StatusCode::OK, serde_json::json!({"status": "ready"}))
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"status": "not ready", "failing": failing}))
        };
        Response::builder().status(status).content_type("application/json").body(body.to_string())
    }
}
