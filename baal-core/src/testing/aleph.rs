//! Fakes of Aleph Cloud on loopback, answering as the protocol spec documents: a CCN (message
//! API with signature, hash, payment and credit checks, refusing in pyaleph's or heph's shape
//! ([`RefusalShape`]); balance), the CRN list and the 2n6.me
//! gateway in one server ([`FakeAleph`]), and compute nodes ([`FakeCrn`]: notify, executions
//! list, erase with verified `X-Signed*` headers). Each is a real HTTP server on 127.0.0.1.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use poem::http::{Method, StatusCode};
use poem::{Request, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::deploy::aleph::sign::{recover_signer, verify_crn_auth};

/// Stops a server task when dropped.
#[derive(Debug)]
struct ServerTask(tokio::task::JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn serve<F, Fut>(handler: F) -> std::io::Result<(String, ServerTask)>
where
    // The path comes with its query string, if any.
    F: Fn(Method, String, poem::http::HeaderMap, Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let acceptor = poem::listener::TcpAcceptor::from_tokio(listener)?;
    let handler = Arc::new(handler);
    let endpoint = poem::endpoint::make(move |request: Request| {
        let handler = handler.clone();
        async move {
            let method = request.method().clone();
            let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
            let headers = request.headers().clone();
            let body = request.into_body().into_vec().await.unwrap_or_default();
            Ok::<_, poem::Error>(handler(method, path, headers, body).await)
        }
    });
    let task = tokio::spawn(async move {
        let _ = poem::Server::new_with_acceptor(acceptor).run(endpoint).await;
    });
    Ok((url, ServerTask(task)))
}

fn json_response(status: u16, body: Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .content_type("application/json")
        .body(body.to_string())
}

fn text_response(status: u16, body: &str) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .body(body.to_owned())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// How the fake CCN answers a message it refuses (both are real CCNs' shapes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalShape {
    /// pyaleph (the public CCNs): HTTP 422 `{"message_status": "rejected"}` with no reason; the
    /// reason is in the message's record (`error_code`, `details`).
    #[default]
    Pyaleph,
    /// heph (`crates/heph` of aleph-rs): HTTP 422 with `"error": {"code", "message"}`, and no record
    /// kept of the refused message (`GET /api/v0/messages/{hash}` is 404).
    Heph,
    /// HTTP 422 `{"message_status": "rejected"}` and no record either: a reason nowhere, as from a
    /// load-balanced CCN whose other nodes have not recorded the refusal.
    Silent,
}

/// A message the fake CCN has seen.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoredMessage {
    /// `INSTANCE`, `FORGET`, …
    pub message_type: String,
    /// Who signed it.
    pub sender: String,
    /// Its envelope's time (Unix seconds): the listing's order.
    pub time: f64,
    /// Its channel.
    pub channel: String,
    /// The parsed `item_content`.
    pub content: Value,
    /// `processed`, `rejected` or `forgotten`.
    pub status: String,
    /// The pyaleph error code of a rejection.
    pub error_code: Option<i64>,
    details: Value,
}

#[derive(Debug)]
struct AlephState {
    messages: HashMap<String, StoredMessage>,
    credits: i64,
    credits_per_instance: i64,
    crns: Vec<Value>,
    public_url: Option<String>,
    answer_pending_first: bool,
    pending_polls: HashMap<String, u32>,
    refusal_shape: RefusalShape,
    forbidden_key: Option<String>,
}

/// The fake CCN, CRN list and 2n6.me gateway.
#[derive(Debug)]
pub struct FakeAleph {
    /// Base URL (`http://127.0.0.1:port`): use it for `ALEPH_API_URL` and
    /// `ALEPH_DOMAIN_GATEWAY_URL`.
    pub url: String,
    state: Arc<Mutex<AlephState>>,
    _server: ServerTask,
}

impl FakeAleph {
    /// Starts the fake with a wallet holding plenty of credits and no CRN.
    pub async fn start() -> std::io::Result<FakeAleph> {
        let state = Arc::new(Mutex::new(AlephState {
            messages: HashMap::new(),
            credits: 1_000_000_000,
            credits_per_instance: 342_000,
            crns: Vec::new(),
            public_url: None,
            answer_pending_first: false,
            pending_polls: HashMap::new(),
            refusal_shape: RefusalShape::default(),
            forbidden_key: None,
        }));
        let shared = state.clone();
        let (url, server) = serve(move |method, path, _headers, body| {
            let state = shared.clone();
            async move { handle_aleph(&state, method, &path, &body) }
        })
        .await?;
        Ok(FakeAleph { url, state, _server: server })
    }

    /// The CRN list URL (`ALEPH_CRN_LIST_URL`).
    pub fn crn_list_url(&self) -> String {
        format!("{}/crns.json", self.url)
    }

    /// Sets the wallet's credit balance.
    pub fn set_credits(&self, credits: i64) {
        lock(&self.state).credits = credits;
    }

    /// Makes POSTs answer 202 and the first status poll `pending`, like a busy CCN.
    pub fn answer_pending_first(&self, pending: bool) {
        lock(&self.state).answer_pending_first = pending;
    }

    /// Answers refusals in `shape` (pyaleph's by default).
    pub fn refuse_like(&self, shape: RefusalShape) {
        lock(&self.state).refusal_shape = shape;
    }

    /// Makes the schema forbid `key` in INSTANCE content, as a network whose message model dropped
    /// a field would (`extra="forbid"`): such instances are refused as invalid (code 0).
    pub fn forbid_instance_key(&self, key: &str) {
        lock(&self.state).forbidden_key = Some(key.to_owned());
    }

    /// The URL the gateway returns for every instance (tests point it at the agent's port;
    /// by default `https://<words>.2n6.me`).
    pub fn set_public_url(&self, url: &str) {
        lock(&self.state).public_url = Some(url.to_owned());
    }

    /// Lists `crn` in the CRN list with `load5` as its load (lower is tried first).
    pub fn add_crn(&self, crn: &FakeCrn, load5: f64) {
        lock(&self.state).crns.push(json!({
            "hash": crn.hash, "name": format!("fake-{}", &crn.hash[..8]), "address": crn.url, "score": 0.9,
            "status": "linked", "type": "compute", "version": "1.10.0", "qemu_support": true,
            "payment_receiver_address": "0x0000000000000000000000000000000000000001",
            "ipv6_check": {"host": true, "vm": true},
            "system_usage": {"active": true, "cpu": {"count": 8, "load_average": {"load1": load5, "load5": load5, "load15": load5}},
                "mem": {"total_kB": 32_000_000u64, "available_kB": 24_000_000u64},
                "disk": {"total_kB": 1_000_000_000u64, "available_kB": 800_000_000u64}},
        }));
    }

    /// Records a processed INSTANCE that `sender` pays for, named `name`, as if it had been posted
    /// outside this database's knowledge (a crash before recording it, an earlier Baal); returns
    /// its hash. Each call plants a new instance, posted after every message before it.
    pub fn plant_instance(&self, sender: &str, name: &str) -> String {
        let mut state = lock(&self.state);
        let latest = state.messages.values().map(|m| m.time).fold(0.0, f64::max);
        let time = (chrono::Utc::now().timestamp_millis() as f64 / 1000.0).max(latest + 0.001);
        let content = json!({"address": sender, "time": time, "allow_amend": false,
            "metadata": {"name": name}, "payment": {"chain": "ETH", "type": "credit"},
            "resources": {"vcpus": 1, "memory": 2048, "seconds": 30}});
        let hash = hex::encode(Sha256::digest(content.to_string().as_bytes()));
        let stored = StoredMessage {
            message_type: "INSTANCE".into(),
            sender: sender.to_owned(),
            time,
            channel: "BAAL".into(),
            content,
            status: "processed".into(),
            error_code: None,
            details: Value::Null,
        };
        state.messages.insert(hash.clone(), stored);
        hash
    }

    /// Every message received, by item hash.
    pub fn messages(&self) -> HashMap<String, StoredMessage> {
        lock(&self.state).messages.clone()
    }

    /// Hashes of INSTANCE messages processed and not forgotten: the VMs being billed.
    pub fn live_instances(&self) -> Vec<String> {
        let state = lock(&self.state);
        let mut live: Vec<_> = state
            .messages
            .iter()
            .filter(|(_, m)| m.message_type == "INSTANCE" && m.status == "processed")
            .map(|(hash, _)| hash.clone())
            .collect();
        live.sort();
        live
    }
}

fn handle_aleph(state: &Mutex<AlephState>, method: Method, path_and_query: &str, body: &[u8]) -> Response {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (Method::POST, ["api", "v0", "messages"]) => post_message(state, body),
        (Method::GET, ["api", "v0", "messages.json"]) => list_messages(state, query),
        (Method::GET, ["api", "v0", "messages", hash]) => {
            let mut state = lock(state);
            let pending = state.answer_pending_first && {
                let polls = state.pending_polls.entry((*hash).to_owned()).or_insert(0);
                *polls += 1;
                *polls == 1
            };
            let unrecorded = state.refusal_shape != RefusalShape::Pyaleph;
            match state.messages.get(*hash) {
                None => json_response(404, json!({"error": "Message not found"})),
                Some(m) if unrecorded && m.status == "rejected" => {
                    json_response(404, json!({"error": "Message not found"}))
                }
                Some(_) if pending => {
                    json_response(200, json!({"status": "pending", "item_hash": hash, "messages": []}))
                }
                Some(m) => json_response(
                    200,
                    json!({"status": m.status, "item_hash": hash, "error_code": m.error_code, "details": m.details}),
                ),
            }
        }
        (Method::GET, ["api", "v0", "addresses", address, "balance"]) => {
            let credits = lock(state).credits;
            json_response(
                200,
                json!({"address": address, "balance": 0.0, "locked_amount": 0.0, "credit_balance": credits}),
            )
        }
        (Method::GET, ["api", "v0", "aggregates", _owner_json]) => {
            json_response(200, json!({"data": {"settings": {"last_crn_version": "1.10.0"}}}))
        }
        (Method::GET, ["crns.json"]) => json_response(200, json!({"last_refresh": "now", "crns": lock(state).crns})),
        (Method::GET, ["api", "hash", hash]) => {
            let state = lock(state);
            match state.messages.get(*hash).filter(|m| m.message_type == "INSTANCE" && m.status == "processed") {
                None => json_response(404, json!({"error": "unknown instance"})),
                Some(_) => {
                    let words = ["motion", "course", "adapt", "wear", "river", "stone", "amber", "pilot"];
                    let bytes = hex::decode(hash).unwrap_or_default();
                    let subdomain: Vec<&str> =
                        bytes.iter().take(4).map(|b| words[usize::from(*b) % words.len()]).collect();
                    let subdomain = subdomain.join("-");
                    let url = state.public_url.clone().unwrap_or_else(|| format!("https://{subdomain}.2n6.me"));
                    json_response(200, json!({"subdomain": subdomain, "url": url, "active": true}))
                }
            }
        }
        _ => text_response(404, "not found"),
    }
}

/// `GET /api/v0/messages.json` as pyaleph answers it in page mode: the `addresses`, `msgTypes`
/// and `msgStatuses` filters (comma-separated; statuses default to `processed`, as Baal's wallet
/// has nothing `removing`), `sortOrder` (-1 newest first, the default, or 1), `pagination` (20 by
/// default, 0 for all) and `page` (from 1).
fn list_messages(state: &Mutex<AlephState>, query: &str) -> Response {
    let params: HashMap<String, String> = reqwest::Url::parse(&format!("http://fake/?{query}"))
        .map(|url| url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default();
    let list = |key: &str| params.get(key).map(|v| v.split(',').map(str::to_owned).collect::<Vec<_>>());
    let number = |key: &str, default: i64| params.get(key).map_or(Ok(default), |v| v.parse::<i64>());
    let (Ok(per_page), Ok(page), Ok(order)) = (number("pagination", 20), number("page", 1), number("sortOrder", -1))
    else {
        return text_response(422, "pagination, page and sortOrder must be integers");
    };
    if per_page < 0 || page < 1 || !matches!(order, -1 | 1) {
        return text_response(422, "invalid pagination, page or sortOrder");
    }
    let statuses = list("msgStatuses").unwrap_or_else(|| vec!["processed".into()]);
    let (addresses, types) = (list("addresses"), list("msgTypes"));
    let state = lock(state);
    let mut matching: Vec<(&String, &StoredMessage)> = state
        .messages
        .iter()
        .filter(|(_, m)| addresses.as_ref().is_none_or(|a| a.contains(&m.sender)))
        .filter(|(_, m)| types.as_ref().is_none_or(|t| t.contains(&m.message_type)))
        .filter(|(_, m)| statuses.contains(&m.status))
        .collect();
    matching.sort_by(|a, b| a.1.time.total_cmp(&b.1.time).then_with(|| a.0.cmp(b.0)));
    if order == -1 {
        matching.reverse();
    }
    let total = matching.len();
    let page_items: Vec<Value> = matching
        .into_iter()
        .skip(if per_page == 0 { 0 } else { ((page - 1) * per_page) as usize })
        .take(if per_page == 0 { usize::MAX } else { per_page as usize })
        .map(|(hash, m)| {
            json!({"sender": m.sender, "chain": "ETH", "type": m.message_type, "channel": m.channel,
                   "item_hash": hash, "item_type": "inline", "time": m.time, "content": m.content,
                   "confirmed": false, "confirmations": []})
        })
        .collect();
    json_response(
        200,
        json!({"messages": page_items, "pagination_per_page": per_page, "pagination_page": page,
               "pagination_total": total, "pagination_item": "messages"}),
    )
}

fn post_message(state: &Mutex<AlephState>, body: &[u8]) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(body) else { return text_response(422, "body is not JSON") };
    let message = &request["message"];
    let allowed = ["sender", "chain", "signature", "type", "item_type", "item_content", "item_hash", "time", "channel"];
    if let Some(extra) = message.as_object().and_then(|m| m.keys().find(|k| !allowed.contains(&k.as_str()))) {
        return text_response(422, &format!("extra field {extra}"));
    }
    let text = |key: &str| message[key].as_str().unwrap_or_default().to_owned();
    let (sender, kind, item_hash, item_content) =
        (text("sender"), text("type"), text("item_hash"), text("item_content"));
    if text("chain") != "ETH" || text("item_type") != "inline" || !message["time"].is_number() {
        return text_response(422, "invalid envelope");
    }
    if hex::encode(Sha256::digest(item_content.as_bytes())) != item_hash {
        return text_response(422, "item_hash does not match item_content");
    }
    let Ok(content) = serde_json::from_str::<Value>(&item_content) else {
        return text_response(422, "item_content is not JSON");
    };
    let buffer = format!("ETH\n{sender}\n{kind}\n{item_hash}");
    let signer = recover_signer(buffer.as_bytes(), &text("signature"));
    let mut state = lock(state);
    let verdict = if signer.as_deref() != Some(sender.as_str()) {
        Err(Refusal::new(1, "signature does not match the sender"))
    } else if content["address"].as_str().is_none_or(|a| !a.eq_ignore_ascii_case(&sender)) {
        Err(Refusal::new(2, "sender is not authorized to act for the address"))
    } else if kind == "INSTANCE" {
        judge_instance(&state, &content)
    } else if kind == "FORGET" {
        forget(&mut state, &content)
    } else {
        Ok(())
    };
    let (status, code, details, said) = match verdict {
        Ok(()) => ("processed", None, Value::Null, String::new()),
        Err(refusal) => ("rejected", Some(refusal.code), refusal.details, refusal.said),
    };
    let time = message["time"].as_f64().unwrap_or_default();
    let stored = StoredMessage {
        message_type: kind,
        sender,
        time,
        channel: text("channel"),
        content,
        status: status.into(),
        error_code: code,
        details,
    };
    state.messages.insert(item_hash, stored);
    let publication = json!({"status": "success", "failed": []});
    match state.refusal_shape {
        // heph refuses at once whether or not the client asked to wait.
        RefusalShape::Heph if status == "rejected" => {
            let error = json!({"code": code, "message": said});
            return json_response(
                422,
                json!({"publication_status": publication, "message_status": "rejected", "error": error}),
            );
        }
        RefusalShape::Silent if status == "rejected" => {
            return json_response(422, json!({"publication_status": publication, "message_status": "rejected"}));
        }
        _ => {}
    }
    if state.answer_pending_first {
        return json_response(202, json!({"publication_status": publication, "message_status": "pending"}));
    }
    let http = if status == "rejected" { 422 } else { 200 };
    json_response(http, json!({"publication_status": publication, "message_status": status}))
}

/// Why the fake refused a message: the pyaleph code with its `details`, and heph's words.
struct Refusal {
    code: i64,
    details: Value,
    said: String,
}

impl Refusal {
    fn new(code: i64, said: &str) -> Refusal {
        Refusal { code, details: Value::Null, said: said.to_owned() }
    }
}

/// An INSTANCE's schema (with any key the test forbade), payment type and credit checks.
fn judge_instance(state: &AlephState, content: &Value) -> Result<(), Refusal> {
    if let Some(key) = state.forbidden_key.as_deref().filter(|k| content.get(*k).is_some()) {
        return Err(Refusal {
            code: 0,
            details: json!({"errors": [{"loc": ["content", key], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}]}),
            said: format!("content does not match declared type Instance: unknown field `{key}`"),
        });
    }
    if content["payment"]["type"] != "credit" {
        return Err(Refusal::new(202, "instances must be paid with credits"));
    }
    let live = state.messages.values().filter(|m| m.message_type == "INSTANCE" && m.status == "processed").count();
    let required = (live as i64 + 1) * state.credits_per_instance;
    if state.credits < required {
        // Both CCNs charge a day of all the account's VMs; heph words it with per-second costs.
        let (existing, new) = ((live as i64 * state.credits_per_instance) as f64, state.credits_per_instance as f64);
        return Err(Refusal {
            code: 6,
            details: json!({"errors": [{"required_credits": required.to_string(), "account_credits": state.credits.to_string(), "min_runtime_days": 1}]}),
            said: format!(
                "credit balance insufficient: have {} credits, need {:.2} (existing_cost={:.6}/s + new={:.6}/s * 86400s)",
                state.credits,
                required as f64,
                existing / 86400.0,
                new / 86400.0
            ),
        });
    }
    Ok(())
}

/// A FORGET: every target must be known; they become `forgotten`.
fn forget(state: &mut AlephState, content: &Value) -> Result<(), Refusal> {
    let targets: Vec<String> =
        content["hashes"].as_array().into_iter().flatten().filter_map(|h| h.as_str().map(str::to_owned)).collect();
    if targets.iter().any(|t| !state.messages.contains_key(t)) {
        return Err(Refusal::new(501, "forget target not found"));
    }
    for target in targets {
        if let Some(m) = state.messages.get_mut(&target) {
            m.status = "forgotten".into();
        }
    }
    Ok(())
}

/// How a fake CRN answers the start notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CrnBehaviour {
    /// Starts the VM: its network points at the SSH target.
    Healthy,
    /// Never answers (the client's timeout fires).
    Hang,
    /// 503 "Insufficient capacity".
    NoCapacity,
}

#[derive(Debug)]
struct CrnState {
    behaviour: CrnBehaviour,
    ssh: (String, u16),
    executions: serde_json::Map<String, Value>,
    notified: Vec<String>,
    erased: Vec<String>,
}

impl CrnState {
    /// Lists `hash` as running here, its SSH port mapped to the SSH target.
    fn run(&mut self, hash: &str) {
        let (host, port) = self.ssh.clone();
        self.executions.insert(
            hash.to_owned(),
            json!({"networking": {"ipv4_network": "172.16.5.0/24", "host_ipv4": host, "ipv6_ip": "fd00::1",
                    "mapped_ports": {"22": {"host": port, "tcp": true, "udp": false}}},
                   "running": true, "vm_type": "instance"}),
        );
    }
}

/// A fake compute node.
#[derive(Debug)]
pub struct FakeCrn {
    /// Base URL (`http://127.0.0.1:port`), as listed.
    pub url: String,
    /// Its node hash.
    pub hash: String,
    state: Arc<Mutex<CrnState>>,
    _server: ServerTask,
}

impl FakeCrn {
    /// Starts a node that consults `aleph` for messages and hands out `ssh_host:ssh_port` as the
    /// VM's SSH address.
    pub async fn start(
        aleph: &FakeAleph,
        behaviour: CrnBehaviour,
        ssh_host: &str,
        ssh_port: u16,
    ) -> std::io::Result<FakeCrn> {
        let hash = hex::encode(rand::random::<[u8; 32]>());
        let state = Arc::new(Mutex::new(CrnState {
            behaviour,
            ssh: (ssh_host.to_owned(), ssh_port),
            executions: serde_json::Map::new(),
            notified: Vec::new(),
            erased: Vec::new(),
        }));
        let (shared, aleph_state, own_hash) = (state.clone(), aleph.state.clone(), hash.clone());
        let (url, server) = serve(move |method, path, headers, body| {
            let (state, aleph, hash) = (shared.clone(), aleph_state.clone(), own_hash.clone());
            async move { handle_crn(&state, &aleph, &hash, method, &path, &headers, &body).await }
        })
        .await?;
        Ok(FakeCrn { url, hash, state, _server: server })
    }

    /// Lists `hash` as running here (with the SSH address the node hands out) without a start
    /// notification: a VM started long ago, by an earlier Baal for instance.
    pub fn run_instance(&self, hash: &str) {
        lock(&self.state).run(hash);
    }

    /// Instances this node was told to start.
    pub fn notified(&self) -> Vec<String> {
        lock(&self.state).notified.clone()
    }

    /// Instances erased through the authenticated control API.
    pub fn erased(&self) -> Vec<String> {
        lock(&self.state).erased.clone()
    }

    /// Instances currently running here.
    pub fn running(&self) -> Vec<String> {
        lock(&self.state).executions.keys().cloned().collect()
    }
}

async fn handle_crn(
    state: &Mutex<CrnState>,
    aleph: &Mutex<AlephState>,
    own_hash: &str,
    method: Method,
    path: &str,
    headers: &poem::http::HeaderMap,
    body: &[u8],
) -> Response {
    let path = path.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (Method::POST, ["control", "allocation", "notify"]) => {
            let behaviour = lock(state).behaviour;
            match behaviour {
                CrnBehaviour::Hang => {
                    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                    return text_response(504, "gave up");
                }
                CrnBehaviour::NoCapacity => {
                    return text_response(503, "This CRN cannot host the requested instance at this time.");
                }
                CrnBehaviour::Healthy => {}
            }
            let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let Some(hash) = request["instance"].as_str() else { return text_response(400, "Missing instance") };
            let pinned = {
                let aleph = lock(aleph);
                match aleph.messages.get(hash) {
                    Some(m) if m.message_type == "INSTANCE" && m.status == "processed" => {
                        m.content.pointer("/requirements/node/node_hash").and_then(Value::as_str).map(str::to_owned)
                    }
                    _ => return text_response(404, "Hash not found"),
                }
            };
            if pinned.as_deref().is_some_and(|p| p != own_hash) {
                return text_response(400, "Instance is allocated to a different node");
            }
            let mut state = lock(state);
            state.notified.push(hash.to_owned());
            state.run(hash);
            json_response(200, json!({"success": true, "successful": true, "failing": [], "errors": {}}))
        }
        (Method::GET, ["v2", "about", "executions", "list"]) => {
            json_response(200, Value::Object(lock(state).executions.clone()))
        }
        (Method::POST, ["control", "machine", hash, "erase"]) => {
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            let signer = match verify_crn_auth(
                &header("X-SignedPubKey"),
                &header("X-SignedOperation"),
                "POST",
                path,
                "127.0.0.1",
            ) {
                Ok(signer) => signer,
                Err(error) => return json_response(401, json!({"error": error})),
            };
            let owner = lock(aleph)
                .messages
                .get(*hash)
                .and_then(|m| m.content["address"].as_str().map(str::to_owned))
                .unwrap_or_default();
            if !owner.eq_ignore_ascii_case(&signer) {
                return text_response(403, "Unauthorized sender");
            }
            let mut state = lock(state);
            if state.executions.remove(*hash).is_none() {
                return text_response(404, &format!("No virtual machine with ref {hash}"));
            }
            state.erased.push((*hash).to_owned());
            text_response(200, &format!("Erased VM with ref {hash}"))
        }
        _ => text_response(404, "not found"),
    }
}

/// Time limits for loopback peers: every wait of the deployer shrunk to what a fake needs.
pub fn loopback_timeouts() -> crate::deploy::aleph::Timeouts {
    use std::time::Duration;
    crate::deploy::aleph::Timeouts {
        http: Duration::from_secs(5),
        message: Duration::from_secs(10),
        poll: Duration::from_millis(50),
        notify: Duration::from_millis(700),
        allocation: Duration::from_secs(5),
        ssh_ready: Duration::from_secs(2),
        ssh_connect: Duration::from_secs(5),
        command: Duration::from_secs(60),
        https: Duration::from_secs(10),
    }
}

/// A [`PoolStore`](crate::store::PoolStore) in memory, with the same atomic claim as the SQL
/// store, for testing the Aleph deployer's pool without a database. It keeps no agents: every
/// agent reads as recording no instance.
#[derive(Debug, Default)]
pub struct MemoryPoolStore {
    rows: Mutex<(i64, Vec<crate::domain::PoolVm>)>,
}

impl MemoryPoolStore {
    /// An empty pool.
    pub fn new() -> MemoryPoolStore {
        MemoryPoolStore::default()
    }

    /// Moves a row's creation time back by `age` (to test retirement).
    pub fn age_row(&self, id: i64, age: chrono::Duration) {
        let _ = self.with_row(id, |row| row.created_at -= age);
    }

    fn with_row(&self, id: i64, change: impl FnOnce(&mut crate::domain::PoolVm)) -> crate::store::StoreResult<()> {
        let mut rows = lock(&self.rows);
        let row = rows
            .1
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or_else(|| crate::store::StoreError::NotFound(format!("pool VM {id}")))?;
        change(row);
        Ok(())
    }
}

#[async_trait::async_trait]
impl crate::store::PoolStore for MemoryPoolStore {
    async fn pool_insert(&self) -> crate::store::StoreResult<crate::domain::PoolVm> {
        let mut rows = lock(&self.rows);
        rows.0 += 1;
        let row = crate::domain::PoolVm {
            id: rows.0,
            instance_hash: None,
            deployment: crate::domain::Deployment::default(),
            status: crate::domain::PoolStatus::Provisioning,
            agent_id: None,
            created_at: chrono::Utc::now(),
            claimed_at: None,
        };
        rows.1.push(row.clone());
        Ok(row)
    }
    async fn pool_update(
        &self,
        id: i64,
        instance_hash: Option<&str>,
        deployment: &crate::domain::Deployment,
        status: crate::domain::PoolStatus,
    ) -> crate::store::StoreResult<()> {
        self.with_row(id, |row| {
            row.instance_hash = instance_hash.map(str::to_owned);
            row.deployment = deployment.clone();
            row.status = status;
        })
    }
    async fn pool_claim(
        &self,
        agent: crate::domain::AgentId,
    ) -> crate::store::StoreResult<Option<crate::domain::PoolVm>> {
        let mut rows = lock(&self.rows);
        let oldest = rows
            .1
            .iter_mut()
            .filter(|r| r.status == crate::domain::PoolStatus::Warm)
            .min_by_key(|r| (r.created_at, r.id));
        Ok(oldest.map(|row| {
            row.status = crate::domain::PoolStatus::Claimed;
            row.agent_id = Some(agent);
            row.claimed_at = Some(chrono::Utc::now());
            row.clone()
        }))
    }
    async fn pool_set_status(
        &self,
        id: i64,
        status: crate::domain::PoolStatus,
        agent: Option<crate::domain::AgentId>,
    ) -> crate::store::StoreResult<()> {
        self.with_row(id, |row| {
            row.status = status;
            row.agent_id = agent;
        })
    }
    async fn pool_list(&self) -> crate::store::StoreResult<Vec<crate::domain::PoolVm>> {
        let mut rows = lock(&self.rows).1.clone();
        rows.sort_by_key(|r| (r.created_at, r.id));
        Ok(rows)
    }
    async fn pool_remove(&self, id: i64) -> crate::store::StoreResult<()> {
        lock(&self.rows).1.retain(|r| r.id != id);
        Ok(())
    }
    async fn agent_instance_hash(&self, _: crate::domain::AgentId) -> crate::store::StoreResult<Option<String>> {
        Ok(None)
    }
}

/// A [`DeployReporter`](crate::deploy::DeployReporter) that records what a deployer reports:
/// each step as `start <key>` / `done <key>` and each report of facts as `facts`, in order, with
/// the facts themselves. It can refuse facts from the `fail_from`-th report on, as a platform
/// whose store went away (or that crashed) would.
#[derive(Debug, Default)]
pub struct RecordingReporter {
    steps: Mutex<Vec<String>>,
    facts: Mutex<Vec<crate::domain::Deployment>>,
    fail_from: Option<usize>,
}

impl RecordingReporter {
    /// A reporter that refuses the `call`-th report of facts and every later one.
    pub fn failing_from(call: usize) -> RecordingReporter {
        RecordingReporter { fail_from: Some(call), ..RecordingReporter::default() }
    }

    /// The steps and reports, in order.
    pub fn log(&self) -> Vec<String> {
        lock(&self.steps).clone()
    }

    /// Every set of facts accepted, in order.
    pub fn facts(&self) -> Vec<crate::domain::Deployment> {
        lock(&self.facts).clone()
    }

    /// The last facts accepted (what a platform would have stored), or none.
    pub fn stored(&self) -> crate::domain::Deployment {
        lock(&self.facts).last().cloned().unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl crate::deploy::DeployReporter for RecordingReporter {
    async fn step_started(&self, step: crate::deploy::DeployStep) {
        lock(&self.steps).push(format!("start {}", step.key));
    }
    async fn step_done(&self, step: crate::deploy::DeployStep) {
        lock(&self.steps).push(format!("done {}", step.key));
    }
    async fn facts(&self, deployment: &crate::domain::Deployment) -> Result<(), crate::deploy::DeployError> {
        let mut facts = lock(&self.facts);
        if self.fail_from.is_some_and(|n| facts.len() + 1 >= n) {
            return Err(crate::deploy::DeployError::new("deploy", "the platform stopped"));
        }
        lock(&self.steps).push("facts".into());
        facts.push(deployment.clone());
        Ok(())
    }
}
