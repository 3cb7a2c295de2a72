//! The message API of a Core Channel Node: post a signed message and wait for its final status,
//! read the credit balance.

use std::time::Duration;

use serde_json::Value;

use super::error::{AlephError, Rejection};
use super::message::SignedMessage;

/// The address that publishes the network-wide `settings` and `pricing` aggregates.
const SETTINGS_AGGREGATE_OWNER: &str = "0xFba561a84A537fCaa567bb7A2257e7142701ae2A";

/// Times the reason for a refusal is asked of the CCN when its answer did not carry one.
const REASON_LOOKUPS: u32 = 3;

/// Pages of a message listing read at most: a CCN that keeps answering full pages (a bug, or
/// more instances than any operator holds) cannot keep a caller reading forever.
const MAX_LIST_PAGES: u32 = 1000;

/// Where a message ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FinalStatus {
    Processed,
    /// A FORGET target already gone counts as done for teardown.
    Forgotten,
    /// Still pending when the wait ran out (only returned when the caller accepts it).
    Pending,
}

/// A client of one CCN (`ALEPH_API_URL`).
#[derive(Debug, Clone)]
pub(crate) struct CcnClient {
    http: reqwest::Client,
    base: String,
    poll_interval: Duration,
}

impl CcnClient {
    pub(crate) fn new(http: reqwest::Client, base: &str, poll_interval: Duration) -> CcnClient {
        CcnClient { http, base: base.trim_end_matches('/').to_owned(), poll_interval }
    }

    /// Posts `message` (`sync: true`) and waits up to `wait` for it to be processed. A rejection
    /// becomes [`AlephError::Rejected`] with the CCN's reason, at once when the answer to the POST
    /// already says so. With `accept_pending`, a message still pending at the deadline is
    /// [`FinalStatus::Pending`] instead of a timeout.
    pub(crate) async fn post_and_wait(
        &self,
        message: &SignedMessage,
        wait: Duration,
        accept_pending: bool,
    ) -> Result<FinalStatus, AlephError> {
        let url = format!("{}/api/v0/messages", self.base);
        let body = serde_json::json!({"sync": true, "message": message});
        let what = format!("posting the {} message to {}", message.message_type, self.base);
        let mut attempt = 0;
        let response = loop {
            attempt += 1;
            match self.http.post(&url).json(&body).send().await {
                // 500 = publication failed on every protocol; the CCN says to retry.
                Ok(r) if r.status().as_u16() == 500 && attempt < 3 => {}
                Ok(r) => break r,
                Err(err) if attempt < 3 && (err.is_connect() || err.is_timeout()) => {}
                Err(err) => return Err(AlephError::peer(what, err)),
            }
            tokio::time::sleep(self.poll_interval).await;
        };
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let message_status = parsed.get("message_status").and_then(Value::as_str);
        match (status, message_status) {
            (200, Some("processed")) => return Ok(FinalStatus::Processed),
            // Final: waiting would only run out the clock (heph keeps no record to poll).
            (200 | 202 | 422, Some("rejected")) => return Err(self.refusal(message, &parsed).await),
            (200 | 202 | 422, Some("pending" | "processed")) => {}
            (422, _) => {
                return Err(AlephError::Rejected {
                    kind: message.message_type.clone(),
                    hash: message.item_hash.clone(),
                    reason: Rejection::InvalidFormat(cut(&text)),
                });
            }
            _ => return Err(AlephError::peer(what, format!("HTTP {status}: {}", cut(&text)))),
        }
        self.wait_final(message, wait, accept_pending).await
    }

    /// The refusal an answer to the POST announced, with its reason: from the answer's `error`
    /// (heph), else from the message's record (pyaleph records the reason and answers without it).
    async fn refusal(&self, message: &SignedMessage, answer: &Value) -> AlephError {
        let reason = match answer.get("error").filter(|e| e.is_object()) {
            Some(error) => {
                let code = error.get("code").and_then(Value::as_i64);
                let said = error.get("message").and_then(Value::as_str).unwrap_or_default();
                Rejection::from_answer(code, &cut(said))
            }
            None => self.recorded_reason(&message.item_hash).await,
        };
        AlephError::Rejected { kind: message.message_type.clone(), hash: message.item_hash.clone(), reason }
    }

    /// Why the CCN says it rejected `hash`, asked a few times (a load-balanced CCN may answer
    /// from a node that has not recorded it yet), then given up on: the refusal stands either way.
    async fn recorded_reason(&self, hash: &str) -> Rejection {
        for lookup in 1..=REASON_LOOKUPS {
            if let Some(record) = self.record(hash).await
                && record.get("status").and_then(Value::as_str) == Some("rejected")
            {
                return recorded_rejection(&record);
            }
            if lookup < REASON_LOOKUPS {
                tokio::time::sleep(self.poll_interval).await;
            }
        }
        Rejection::Other { code: None, detail: "the CCN refused it without saying why".into() }
    }

    /// The CCN's record of `hash`, if it has one and answers.
    async fn record(&self, hash: &str) -> Option<Value> {
        let url = format!("{}/api/v0/messages/{hash}", self.base);
        let response = self.http.get(&url).send().await.ok()?;
        response.error_for_status().ok()?.json::<Value>().await.ok()
    }

    async fn wait_final(
        &self,
        message: &SignedMessage,
        wait: Duration,
        accept_pending: bool,
    ) -> Result<FinalStatus, AlephError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // 404: this CCN has not seen it yet; a transient error: keep polling until the deadline.
            if let Some(record) = self.record(&message.item_hash).await {
                match record.get("status").and_then(Value::as_str) {
                    Some("processed") => return Ok(FinalStatus::Processed),
                    Some("forgotten" | "removed" | "removing") => return Ok(FinalStatus::Forgotten),
                    Some("rejected") => {
                        return Err(AlephError::Rejected {
                            kind: message.message_type.clone(),
                            hash: message.item_hash.clone(),
                            reason: recorded_rejection(&record),
                        });
                    }
                    _ => {}
                }
            }
            if tokio::time::Instant::now() >= deadline {
                if accept_pending {
                    return Ok(FinalStatus::Pending);
                }
                return Err(AlephError::Timeout {
                    what: format!("processing of the {} message {}", message.message_type, message.item_hash),
                    seconds: wait.as_secs(),
                });
            }
            tokio::time::sleep(self.poll_interval).await;
        }
    }

    /// The minimum CRN version the network asks for (`last_crn_version` of the `settings`
    /// aggregate), or `None` when it cannot be read: the filter then does without it.
    pub(crate) async fn last_crn_version(&self) -> Option<String> {
        let url = format!("{}/api/v0/aggregates/{SETTINGS_AGGREGATE_OWNER}.json", self.base);
        let response = self.http.get(&url).query(&[("keys", "settings")]).send().await.ok()?;
        let body: Value = response.error_for_status().ok()?.json().await.ok()?;
        body.pointer("/data/settings/last_crn_version").and_then(Value::as_str).map(str::to_owned)
    }

    /// Every message of type `kind` that `address` sent and that is in `status`, oldest first,
    /// read `per_page` at a time (`GET /api/v0/messages.json`, pyaleph's page mode: `pagination`
    /// and `page`, with `pagination_total`). Oldest first so that a message posted while the
    /// pages are read lands on a later page instead of pushing one already read onto the next;
    /// a message seen twice anyway is kept once.
    pub(crate) async fn messages_of(
        &self,
        address: &str,
        kind: &str,
        status: &str,
        per_page: u32,
    ) -> Result<Vec<Value>, AlephError> {
        let url = format!("{}/api/v0/messages.json", self.base);
        let what = format!("listing the {kind} messages of {address} on {}", self.base);
        let per_page = per_page.max(1);
        let mut seen = std::collections::HashSet::new();
        let mut messages = Vec::new();
        for page in 1..=MAX_LIST_PAGES {
            let query = [
                ("addresses", address.to_owned()),
                ("msgTypes", kind.to_owned()),
                ("msgStatuses", status.to_owned()),
                ("sortOrder", "1".to_owned()),
                ("pagination", per_page.to_string()),
                ("page", page.to_string()),
            ];
            let response = self.http.get(&url).query(&query).send().await.map_err(|e| AlephError::peer(&what, e))?;
            let code = response.status();
            let text = response.text().await.map_err(|e| AlephError::peer(&what, e))?;
            if !code.is_success() {
                return Err(AlephError::peer(&what, format!("HTTP {code}: {}", cut(&text))));
            }
            let body: Value = serde_json::from_str(&text)
                .map_err(|e| AlephError::peer(&what, format!("the answer is not JSON ({e}): {}", cut(&text))))?;
            let Some(items) = body.get("messages").and_then(Value::as_array) else {
                return Err(AlephError::peer(&what, format!("the answer has no `messages` list: {}", cut(&text))));
            };
            let count = items.len();
            for item in items {
                let hash = item.get("item_hash").and_then(Value::as_str).unwrap_or_default();
                if seen.insert(hash.to_owned()) {
                    messages.push(item.clone());
                }
            }
            let total = body.get("pagination_total").and_then(Value::as_u64);
            let read = u64::from(page) * u64::from(per_page);
            if count < per_page as usize || total.is_some_and(|total| read >= total) {
                return Ok(messages);
            }
        }
        Err(AlephError::peer(what, format!("more than {} pages of {per_page}; refusing to read on", MAX_LIST_PAGES)))
    }

    /// The account's credit balance.
    pub(crate) async fn credit_balance(&self, address: &str) -> Result<i64, AlephError> {
        let url = format!("{}/api/v0/addresses/{address}/balance", self.base);
        let what = format!("reading the balance from {}", self.base);
        let response = self.http.get(&url).send().await.map_err(|e| AlephError::peer(&what, e))?;
        if response.status().as_u16() == 404 {
            return Ok(0);
        }
        if !response.status().is_success() {
            return Err(AlephError::peer(&what, format!("HTTP {}", response.status())));
        }
        let body: Value = response.json().await.map_err(|e| AlephError::peer(&what, e))?;
        Ok(body.get("credit_balance").and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))).unwrap_or(0))
    }
}

/// A rejected message's record: `error_code` and `details` (spec §3.4).
fn recorded_rejection(record: &Value) -> Rejection {
    let code = record.get("error_code").and_then(Value::as_i64);
    Rejection::from_code(code, record.get("details").unwrap_or(&Value::Null))
}

/// Peer error bodies can be pages of HTML; keep the start.
pub(crate) fn cut(text: &str) -> String {
    let mut out: String = text.chars().take(300).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}
