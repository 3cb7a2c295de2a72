//! [`HttpProxy`]: the [`Proxy`] over HTTP and server-sent events, as the bot reaches an agent.
//!
//! One `reqwest` client is shared by every call, so connections to an agent are reused (§9.32).
//! Retry rule (§9.25): a request is sent again only when the connection could not be made at all;
//! once the agent may have received a `/chat` body, it is never posted again, so a message is never
//! stored twice.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::stream::{self, BoxStream};
use futures_util::{Stream, StreamExt};
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode, Url};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::{AgentEndpoint, AgentEvent, AgentFile, ChatRequest, HealthResponse, PendingMessage, PendingResponse};
use super::{Budget, PendingAck, PendingChats, Proxy, ProxyError, StopResponse, UsageResponse};

/// Seconds a `GET /pending` leases the messages it returns for. Long enough to deliver a batch
/// through Telegram's flood waits and file uploads before the lease runs out (which would let
/// the next poll deliver them a second time), short enough that messages a failed delivery or
/// a crashed bot left unacknowledged reach the user within minutes (the poll runs every 30 s).
const PENDING_LEASE_SECS: u64 = 300;

/// Texts of the `error` events the proxy adds itself; each is shown to the user as is.
mod texts {
    pub(super) const UNREACHABLE: &str =
        "Baal could not reach the agent. It may be starting or restarting; please try again in a minute.";
    pub(super) const UNAUTHORIZED: &str =
        "The agent did not accept Baal's credentials. Its owner can redeploy it with /repair.";
    pub(super) const LOST: &str = "The connection to the agent broke before its answer was complete. Please try again.";
    pub(super) const STOPPED: &str = "The agent stopped responding in the middle of its answer. Please try again.";
    pub(super) const NO_ANSWER: &str = "The agent did not answer. Please try again in a minute.";
    pub(super) const BAD_ADDRESS: &str = "The agent's address is not valid. Its owner can redeploy it with /repair.";

    pub(super) fn status(code: u16) -> String {
        format!("The agent answered with an error (HTTP {code}). Please try again in a minute.")
    }
}

/// Timeouts and retries of an [`HttpProxy`]. The defaults follow the Python bot's client (§4.2).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpProxyOptions {
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Longest silence between two chunks of a `/chat` stream (the agent sends a keepalive every
    /// 15 s, so silence this long means it is gone).
    pub read_timeout: Duration,
    /// Whole-request limit for `/health`, `/pending`, `/pending/ack`, `/usage`, `/budget` and
    /// `DELETE /chat`.
    pub short_timeout: Duration,
    /// Whole-request limit for `/files`.
    pub file_timeout: Duration,
    /// How many times a connection is attempted before giving up (retries happen only when no
    /// connection could be made).
    pub connect_attempts: u32,
    /// Pause before the first retry; it doubles for each further one.
    pub retry_delay: Duration,
    /// Largest file `/files` may return; larger downloads stop with [`ProxyError::TooLarge`].
    pub max_file_bytes: u64,
}

impl Default for HttpProxyOptions {
    fn default() -> Self {
        HttpProxyOptions {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(180),
            short_timeout: Duration::from_secs(10),
            file_timeout: Duration::from_secs(60),
            connect_attempts: 3,
            retry_delay: Duration::from_secs(1),
            // Telegram bots cannot upload more than 50 MB; anything larger is useless and could
            // exhaust the platform's memory.
            max_file_bytes: 50 * 1024 * 1024,
        }
    }
}

/// The HTTP client could not be set up (no usable TLS backend).
#[derive(Debug, thiserror::Error)]
#[error("could not set up the HTTP client that talks to agents: {0}")]
pub struct HttpProxyInitError(#[source] reqwest::Error);

/// Talks to agents over HTTP: `POST /chat` as server-sent events, `GET /pending` (leased, then
/// `POST /pending/ack`), `GET /usage`, `PUT /budget`, `GET /files`, `GET /health`,
/// `DELETE /chat/{id}`. Cheap to clone;
/// clones share connections.
#[derive(Debug, Clone)]
pub struct HttpProxy {
    client: Client,
    options: HttpProxyOptions,
}

/// How long an idle connection to an agent is kept for the next request: below the agents'
/// default `HEADER_READ_TIMEOUT`.
const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl HttpProxy {
    /// A proxy with the default timeouts.
    pub fn new() -> Result<Self, HttpProxyInitError> {
        Self::with_options(HttpProxyOptions::default())
    }

    /// A proxy with the given timeouts and retries.
    pub fn with_options(options: HttpProxyOptions) -> Result<Self, HttpProxyInitError> {
        let client = crate::http_client_builder()
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            // Our agents close a connection that sits idle for their HEADER_READ_TIMEOUT (10 s
            // by default): letting go sooner means a request never goes out on a connection the
            // agent is closing at that moment.
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .user_agent(concat!("baal/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(HttpProxyInitError)?;
        Ok(HttpProxy { client, options })
    }

    /// `base_url` + the given path segments, each percent-encoded (§9.27). `.` and `..` segments
    /// are dropped, so a path can never climb out of the endpoint it names.
    fn url<'a>(agent: &AgentEndpoint, segments: impl IntoIterator<Item = &'a str>) -> Result<Url, ProxyError> {
        let mut url = Url::parse(agent.base_url.trim_end_matches('/')).map_err(|_| ProxyError::InvalidUrl)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ProxyError::InvalidUrl);
        }
        url.path_segments_mut()
            .map_err(|_| ProxyError::InvalidUrl)?
            .pop_if_empty()
            .extend(segments.into_iter().filter(|s| !s.is_empty()));
        Ok(url)
    }

    /// Sends a request, trying again only while no connection could be made at all: then
    /// nothing reached the agent and sending again cannot duplicate anything.
    async fn send(&self, build: impl Fn() -> RequestBuilder) -> Result<Response, reqwest::Error> {
        let mut delay = self.options.retry_delay;
        let mut attempt = 1;
        loop {
            match build().send().await {
                Err(err) if err.is_connect() && attempt < self.options.connect_attempts => {
                    tracing::debug!(attempt, error = %err, "agent connection failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// A short authenticated call (with a JSON body when given): sends it, maps transport errors
    /// and HTTP statuses.
    async fn call(
        &self,
        agent: &AgentEndpoint,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
    ) -> Result<Response, ProxyError> {
        let response = self
            .send(|| {
                let request = self
                    .client
                    .request(method.clone(), url.clone())
                    .bearer_auth(agent.token.expose_secret())
                    .timeout(self.options.short_timeout);
                match body {
                    Some(body) => request.json(body),
                    None => request,
                }
            })
            .await
            .map_err(transport_error)?;
        check_status(response)
    }
}

/// Maps a failure of reqwest to what the platform needs to know.
fn transport_error(err: reqwest::Error) -> ProxyError {
    if err.is_connect() {
        ProxyError::Unreachable
    } else if err.is_timeout() {
        ProxyError::Timeout
    } else if err.is_decode() {
        ProxyError::Protocol
    } else {
        ProxyError::Lost
    }
}

fn check_status(response: Response) -> Result<Response, ProxyError> {
    match response.status() {
        status if status.is_success() => Ok(response),
        StatusCode::UNAUTHORIZED => Err(ProxyError::Unauthorized),
        status => Err(ProxyError::Status(status.as_u16())),
    }
}

async fn json_body<T: for<'de> Deserialize<'de>>(response: Response) -> Result<T, ProxyError> {
    let bytes = response.bytes().await.map_err(transport_error)?;
    serde_json::from_slice(&bytes).map_err(|err| {
        tracing::debug!(error = %err, "agent sent JSON Baal cannot read");
        ProxyError::Protocol
    })
}

#[async_trait]
impl Proxy for HttpProxy {
    async fn chat(&self, agent: &AgentEndpoint, request: ChatRequest) -> BoxStream<'static, AgentEvent> {
        let url = match Self::url(agent, ["chat"]) {
            Ok(url) => url,
            Err(_) => return finished_with_error("bad_address", texts::BAD_ADDRESS.to_owned()),
        };
        let response =
            self.send(|| self.client.post(url.clone()).bearer_auth(agent.token.expose_secret()).json(&request)).await;
        let response = match response {
            Ok(response) => response,
            Err(err) => {
                tracing::info!(agent = %agent.base_url, error = %err, "chat request to agent failed");
                let (kind, text) = if err.is_connect() {
                    ("unreachable", texts::UNREACHABLE)
                } else if err.is_timeout() {
                    ("timeout", texts::NO_ANSWER)
                } else {
                    ("lost", texts::LOST)
                };
                return finished_with_error(kind, text.to_owned());
            }
        };
        match response.status() {
            status if status.is_success() => {}
            StatusCode::UNAUTHORIZED => return finished_with_error("unauthorized", texts::UNAUTHORIZED.to_owned()),
            status => {
                tracing::info!(agent = %agent.base_url, %status, "agent refused a chat request");
                return finished_with_error(&format!("http_{}", status.as_u16()), texts::status(status.as_u16()));
            }
        }
        agent_events(response.bytes_stream()).boxed()
    }

    async fn pending(&self, agent: &AgentEndpoint, chat_id: Option<&str>) -> Result<Vec<PendingMessage>, ProxyError> {
        let mut url = Self::url(agent, ["pending"])?;
        if let Some(chat_id) = chat_id {
            url.query_pairs_mut().append_pair("chat_id", chat_id);
        }
        // Agents that predate leases ignore the parameter and delete what they return; their
        // messages carry no id, so nothing is acknowledged.
        url.query_pairs_mut().append_pair("lease", &PENDING_LEASE_SECS.to_string());
        let response = self.call(agent, Method::GET, url, None).await?;
        Ok(json_body::<PendingResponse>(response).await?.messages)
    }

    async fn ack_pending(&self, agent: &AgentEndpoint, chat_id: &str, ids: &[i64]) -> Result<(), ProxyError> {
        if ids.is_empty() {
            return Ok(());
        }
        let url = Self::url(agent, ["pending", "ack"])?;
        for chunk in ids.chunks(super::MAX_ACK_IDS) {
            let body =
                serde_json::to_value(PendingAck::new(chunk.to_vec(), chat_id)).map_err(|_| ProxyError::Protocol)?;
            self.call(agent, Method::POST, url.clone(), Some(&body)).await?;
        }
        Ok(())
    }

    async fn usage(&self, agent: &AgentEndpoint, since: i64) -> Result<UsageResponse, ProxyError> {
        let mut url = Self::url(agent, ["usage"])?;
        url.query_pairs_mut().append_pair("since", &since.to_string());
        match self.call(agent, Method::GET, url, None).await {
            Ok(response) => json_body::<UsageResponse>(response).await,
            // A Python agent has no such route: it meters nothing, which is not an error.
            Err(ProxyError::Status(404)) => Ok(UsageResponse::new(Vec::new(), since)),
            Err(e) => Err(e),
        }
    }

    async fn set_budget(&self, agent: &AgentEndpoint, budget: &Budget) -> Result<bool, ProxyError> {
        let url = Self::url(agent, ["budget"])?;
        let body = serde_json::to_value(budget).map_err(|_| ProxyError::Protocol)?;
        match self.call(agent, Method::PUT, url, Some(&body)).await {
            Ok(_) => Ok(true),
            // A Python agent has no such route (404), or none for this method (405): it keeps no
            // budget, which is not an error.
            Err(ProxyError::Status(404 | 405)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn stop(&self, agent: &AgentEndpoint, chat_id: &str) -> Result<Option<bool>, ProxyError> {
        let url = Self::url(agent, ["chat", chat_id, "stop"])?;
        match self.call(agent, Method::POST, url, None).await {
            Ok(response) => Ok(Some(json_body::<StopResponse>(response).await?.stopped)),
            // An agent from before stopping has no such route (404), or the path answers to
            // another method only (405): the caller drops the stream instead.
            Err(ProxyError::Status(404 | 405)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn pending_chats(&self, agent: &AgentEndpoint) -> Result<Option<Vec<String>>, ProxyError> {
        let url = Self::url(agent, ["pending", "chats"])?;
        match self.call(agent, Method::GET, url, None).await {
            Ok(response) => Ok(Some(json_body::<PendingChats>(response).await?.chats)),
            // A Python or older agent (404, or 405): its messages are all for the owner's chat.
            Err(ProxyError::Status(404 | 405)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn file(&self, agent: &AgentEndpoint, path: &str) -> Result<AgentFile, ProxyError> {
        let file_name = path.rsplit('/').find(|s| !s.is_empty()).unwrap_or_default().to_owned();
        let url = Self::url(agent, std::iter::once("files").chain(workspace_segments(path)))?;
        let response = self
            .send(|| {
                self.client.get(url.clone()).bearer_auth(agent.token.expose_secret()).timeout(self.options.file_timeout)
            })
            .await
            .map_err(transport_error)?;
        let response = check_status(response)?;
        let limit = self.options.max_file_bytes;
        let too_large = ProxyError::TooLarge { limit_bytes: limit };
        if response.content_length().is_some_and(|len| len > limit) {
            return Err(too_large);
        }
        let mut bytes = Vec::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(transport_error)?;
            if bytes.len() as u64 + chunk.len() as u64 > limit {
                return Err(too_large);
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(AgentFile { file_name, bytes })
    }

    async fn health(&self, agent: &AgentEndpoint) -> Result<HealthResponse, ProxyError> {
        let url = Self::url(agent, ["health"])?;
        // `/health` needs no secret, and not sending one keeps it off any logging proxy in between.
        let response = self
            .send(|| self.client.get(url.clone()).timeout(self.options.short_timeout))
            .await
            .map_err(transport_error)?;
        json_body(check_status(response)?).await
    }

    async fn reset(&self, agent: &AgentEndpoint, chat_id: &str) -> Result<u64, ProxyError> {
        #[derive(Deserialize)]
        struct Deleted {
            #[serde(default)]
            deleted: u64,
        }
        let url = Self::url(agent, ["chat", chat_id])?;
        let response = self.call(agent, Method::DELETE, url, None).await?;
        Ok(json_body::<Deleted>(response).await?.deleted)
    }
}

/// The segments of a workspace path with `.` and `..` resolved the way the agent resolves them
/// (`a/../b` is `b`), never climbing above the workspace root.
fn workspace_segments(path: &str) -> Vec<&str> {
    let mut segments = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    segments
}

/// A stream of one `error` event followed by `done`, counted as an agent error of `kind`.
fn finished_with_error(kind: &str, content: String) -> BoxStream<'static, AgentEvent> {
    agent_error(kind);
    stream::iter([AgentEvent::Error { content }, AgentEvent::done()]).boxed()
}

/// Where the parsing of one `/chat` body is.
enum ChatState<S> {
    /// Reading events from the body.
    Reading(S),
    /// Emitting these last events, then stopping.
    Closing(VecDeque<AgentEvent>),
}

/// Turns the raw body of a `/chat` answer into the events the platform sees: keepalives and
/// unknown or unreadable events are dropped, and the stream always ends with exactly one `done`
/// (after an `error` when the body broke off).
fn agent_events<S>(body: S) -> impl Stream<Item = AgentEvent> + Send + 'static
where
    S: Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send + Unpin + 'static,
{
    let closing = |events: Vec<AgentEvent>| Some(ChatState::Closing(events.into()));
    stream::unfold(Some(ChatState::Reading(body.eventsource())), move |state| async move {
        match state? {
            ChatState::Closing(mut rest) => {
                let event = rest.pop_front()?;
                Some((event, Some(ChatState::Closing(rest))))
            }
            ChatState::Reading(mut events) => loop {
                match events.next().await {
                    Some(Ok(raw)) => match parse_event(&raw.data) {
                        Some(done @ AgentEvent::Done { .. }) => return Some((done, None)),
                        Some(event @ AgentEvent::Error { .. }) => {
                            agent_error("turn_error");
                            return Some((event, Some(ChatState::Reading(events))));
                        }
                        Some(event @ AgentEvent::BudgetSpent { .. }) => {
                            agent_error("budget");
                            return Some((event, Some(ChatState::Reading(events))));
                        }
                        Some(event) => return Some((event, Some(ChatState::Reading(events)))),
                        None => continue,
                    },
                    Some(Err(err)) => {
                        let (kind, text) = match &err {
                            EventStreamError::Transport(err) if err.is_timeout() => ("timeout", texts::STOPPED),
                            _ => ("lost", texts::LOST),
                        };
                        agent_error(kind);
                        tracing::info!(error = %err, "agent's chat stream broke off");
                        return Some((
                            AgentEvent::Error { content: text.to_owned() },
                            closing(vec![AgentEvent::done()]),
                        ));
                    }
                    // A body that ends without `done` was cut short somewhere (agents always
                    // finish with `done`), so the answer may be incomplete.
                    None => {
                        agent_error("lost");
                        return Some((
                            AgentEvent::Error { content: texts::LOST.to_owned() },
                            closing(vec![AgentEvent::done()]),
                        ));
                    }
                }
            },
        }
    })
}

/// Counts a failure talking to an agent (`crate::telemetry::AGENT_ERRORS`).
fn agent_error(kind: &str) {
    metrics::counter!(crate::telemetry::AGENT_ERRORS, "kind" => kind.to_owned()).increment(1);
}

/// One `data:` payload as an event the platform wants, or `None` for what it skips.
fn parse_event(data: &str) -> Option<AgentEvent> {
    if data.trim().is_empty() {
        return None;
    }
    match serde_json::from_str::<AgentEvent>(data) {
        Ok(AgentEvent::Keepalive | AgentEvent::Unknown) => None,
        Ok(event) => Some(event),
        Err(err) => {
            tracing::debug!(error = %err, "skipping an agent event Baal cannot read");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn endpoint(base: &str) -> AgentEndpoint {
        AgentEndpoint { base_url: base.to_owned(), token: SecretString::from("t") }
    }

    #[test]
    fn file_paths_are_encoded_segment_by_segment() {
        let agent = endpoint("http://127.0.0.1:9/");
        let url = HttpProxy::url(&agent, std::iter::once("files").chain("dir/a b?#%.txt".split('/'))).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:9/files/dir/a%20b%3F%23%25.txt");
        let url = HttpProxy::url(&agent, std::iter::once("files").chain(workspace_segments("/../x//y:z"))).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:9/files/x/y:z");
        assert_eq!(workspace_segments("./a/../b/./c/"), ["b", "c"]);
        let prefixed = endpoint("https://host.example/agent");
        assert_eq!(HttpProxy::url(&prefixed, ["health"]).unwrap().as_str(), "https://host.example/agent/health");
    }

    #[test]
    fn bad_base_urls_are_an_error() {
        for base in ["", "not a url", "ftp://x", "mailto:a@b"] {
            assert_eq!(HttpProxy::url(&endpoint(base), ["health"]), Err(ProxyError::InvalidUrl), "{base}");
        }
    }

    #[tokio::test]
    async fn events_end_with_one_done() {
        let body = "data: {\"type\":\"keepalive\"}\n\ndata: {\"type\":\"thinking\"}\n\n\
                    data: {\"type\":\"text_delta\",\"content\":\"h\"}\n\n\
                    data: {\"type\":\"text\",\"content\":\"hi\"}\n\n\
                    data: not json\n\ndata: {\"type\":\"plan\"}\n\n: comment\n\n\
                    data: {\"type\":\"done\"}\n\ndata: {\"type\":\"text\",\"content\":\"late\"}\n\n";
        let chunks = stream::iter(vec![Ok(bytes::Bytes::from(body))]);
        let events: Vec<_> = agent_events(chunks).collect().await;
        // Streamed pieces and the thinking notice reach the platform; types this build does not
        // know (`plan`) do not.
        assert_eq!(
            events,
            vec![
                AgentEvent::Thinking,
                AgentEvent::TextDelta { content: "h".into() },
                AgentEvent::Text { content: "hi".into() },
                AgentEvent::done()
            ]
        );

        let cut = stream::iter(vec![Ok(bytes::Bytes::from("data: {\"type\":\"text\",\"content\":\"a\"}\n\n"))]);
        let events: Vec<_> = agent_events(cut).collect().await;
        assert_eq!(
            events,
            vec![
                AgentEvent::Text { content: "a".into() },
                AgentEvent::Error { content: texts::LOST.into() },
                AgentEvent::done()
            ]
        );
    }
}
