//! Compute Resource Nodes: the list and its filters, a temporary blacklist, starting an
//! instance, finding its network, erasing it; and the 2n6.me gateway lookup.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use super::api::cut;
use super::error::AlephError;
use super::message::VmSize;
use super::sign::{CrnAuthKey, EthAccount};

/// A CRN that passed the filters.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Crn {
    /// Node hash (`requirements.node.node_hash`).
    pub hash: String,
    /// Display name.
    pub name: String,
    /// Base URL, `https://host`, no trailing slash.
    pub url: String,
    /// The list's reliability score (higher is better).
    pub score: f64,
    /// 0.6 × CPU load per core + 0.4 × memory in use (lower is better).
    pub load: f64,
}

fn truthy(value: Option<&Value>) -> bool {
    value.and_then(Value::as_bool).unwrap_or(false)
}

fn number(value: Option<&Value>) -> Option<f64> {
    value.and_then(|v| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
}

/// `https://` when no scheme is given, no trailing slash.
pub(crate) fn normalize_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.contains("://") { url.to_owned() } else { format!("https://{url}") }
}

/// The CRNs of a `crns.json` document that can host a VM of `size`, best first.
///
/// Kept: IPv6 working on host and VM (the 2n6.me gateway routes over IPv6), QEMU support, active
/// usage reporting, room for `size` (vCPUs, available memory and disk), and a version at least
/// `min_version` (the network's `last_crn_version`) when known. Order: lowest load, then highest
/// score. Entries are parsed permissively: unknown or missing keys drop the node, never the list.
pub fn select_crns(list: &Value, size: VmSize, min_version: Option<&str>) -> Vec<Crn> {
    let mut crns: Vec<Crn> = list
        .get("crns")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|node| {
            let ipv6 = node.get("ipv6_check")?;
            if !(truthy(ipv6.get("host")) && truthy(ipv6.get("vm")) && truthy(node.get("qemu_support"))) {
                return None;
            }
            if let Some(min) = min_version {
                let version = node.get("version").and_then(Value::as_str).unwrap_or_default();
                if version_key(version) < version_key(min) {
                    return None;
                }
            }
            let usage = node.get("system_usage")?;
            if !truthy(usage.get("active")) {
                return None;
            }
            let cpus = number(usage.pointer("/cpu/count")).unwrap_or(0.0);
            let mem_total = number(usage.pointer("/mem/total_kB")).unwrap_or(0.0);
            let mem_free = number(usage.pointer("/mem/available_kB")).unwrap_or(0.0);
            let disk_free = number(usage.pointer("/disk/available_kB")).unwrap_or(0.0);
            if cpus < f64::from(size.vcpus)
                || mem_free < (size.memory_mib * 1024) as f64
                || disk_free < (size.disk_mib * 1024) as f64
            {
                return None;
            }
            let load5 = number(usage.pointer("/cpu/load_average/load5")).unwrap_or(0.0);
            let load = 0.6 * (load5 / cpus.max(1.0)) + 0.4 * (1.0 - mem_free / mem_total.max(1.0));
            let hash = node.get("hash")?.as_str()?.to_owned();
            let url = node.get("address")?.as_str().filter(|a| !a.trim().is_empty())?;
            Some(Crn {
                hash,
                name: node.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                url: normalize_url(url),
                score: number(node.get("score")).unwrap_or(0.0),
                load,
            })
        })
        .collect();
    crns.sort_by(|a, b| a.load.total_cmp(&b.load).then(b.score.total_cmp(&a.score)));
    crns
}

/// `1.10.0-rc1` → `[1, 10, 0]`: numeric comparison of the release part (a pre-release counts as
/// its release; nodes report plain versions).
fn version_key(version: &str) -> Vec<u64> {
    let release = version.trim().trim_start_matches('v').split(['-', '+']).next().unwrap_or_default();
    release.split('.').map(|part| part.parse().unwrap_or(0)).collect()
}

/// CRNs that failed recently, skipped until their entry expires. Shared by every deployment of
/// the process.
#[derive(Debug, Default)]
pub(crate) struct Blacklist {
    until: Mutex<HashMap<String, tokio::time::Instant>>,
}

impl Blacklist {
    pub(crate) fn add(&self, url: &str, ttl: Duration) {
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        until.insert(url.to_owned(), tokio::time::Instant::now() + ttl);
    }

    pub(crate) fn contains(&self, url: &str) -> bool {
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        let now = tokio::time::Instant::now();
        until.retain(|_, expiry| *expiry > now);
        until.contains_key(url)
    }
}

/// Where to SSH into a started instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Allocation {
    pub(crate) host: String,
    pub(crate) ssh_port: u16,
}

/// Reads the allocation of `hash` from an executions list (`/v2/about/executions/list`).
pub(crate) fn allocation_from_executions(list: &Value, hash: &str) -> Option<Allocation> {
    let networking = list.get(hash)?.get("networking")?;
    let host = networking.get("host_ipv4")?.as_str().filter(|h| !h.is_empty())?;
    let port = networking.pointer("/mapped_ports/22/host").and_then(Value::as_u64)?;
    Some(Allocation { host: host.to_owned(), ssh_port: u16::try_from(port).ok()? })
}

/// The hostname of a CRN URL, the `domain` its control API expects in signatures.
pub(crate) fn crn_domain(url: &str) -> String {
    reqwest::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_else(|| url.to_owned())
}

/// Talks to CRNs, the CRN list and the 2n6.me gateway.
#[derive(Debug, Clone)]
pub(crate) struct CrnClient {
    pub(crate) http: reqwest::Client,
}

impl CrnClient {
    pub(crate) async fn list(
        &self,
        list_url: &str,
        size: VmSize,
        min_version: Option<&str>,
    ) -> Result<Vec<Crn>, AlephError> {
        let what = format!("reading the CRN list {list_url}");
        let response = self
            .http
            .get(list_url)
            .query(&[("filter_inactive", "true")])
            .send()
            .await
            .map_err(|e| AlephError::peer(&what, e))?;
        if !response.status().is_success() {
            return Err(AlephError::peer(&what, format!("HTTP {}", response.status())));
        }
        let body: Value = response.json().await.map_err(|e| AlephError::peer(&what, e))?;
        Ok(select_crns(&body, size, min_version))
    }

    /// Tells `crn` to start the instance pinned to it.
    pub(crate) async fn notify(&self, crn: &str, hash: &str, timeout: Duration) -> Result<(), AlephError> {
        let what = format!("starting the VM on {crn}");
        let request = self
            .http
            .post(format!("{crn}/control/allocation/notify"))
            .json(&serde_json::json!({"instance": hash}))
            .timeout(timeout)
            .send();
        let response = request.await.map_err(|e| {
            if e.is_timeout() {
                AlephError::Timeout { what: what.clone(), seconds: timeout.as_secs() }
            } else {
                AlephError::peer(&what, e)
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let detail = match status.as_u16() {
            402 => format!("the node says the account has too few credits for an hour of this VM: {}", cut(&text)),
            503 => format!("the node has no capacity right now: {}", cut(&text)),
            code => format!("HTTP {code}: {}", cut(&text)),
        };
        Err(AlephError::peer(what, detail))
    }

    /// The allocation of `hash` on `crn`, if it has networking yet.
    pub(crate) async fn allocation(&self, crn: &str, hash: &str) -> Result<Option<Allocation>, AlephError> {
        let what = format!("reading the executions of {crn}");
        let response = self
            .http
            .get(format!("{crn}/v2/about/executions/list"))
            .send()
            .await
            .map_err(|e| AlephError::peer(&what, e))?;
        if !response.status().is_success() {
            return Err(AlephError::peer(&what, format!("HTTP {}", response.status())));
        }
        let body: Value = response.json().await.map_err(|e| AlephError::peer(&what, e))?;
        Ok(allocation_from_executions(&body, hash))
    }

    /// Stops the VM and deletes its disks on `crn`. A VM the node does not know is already gone.
    pub(crate) async fn erase(&self, account: &EthAccount, crn: &str, hash: &str) -> Result<(), AlephError> {
        let domain = crn_domain(crn);
        let now = chrono::Utc::now();
        let expires = (now + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let key = CrnAuthKey::generate(account, &domain, &expires);
        let path = format!("/control/machine/{hash}/erase");
        let headers = key.headers("POST", &path, &now.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string());
        let what = format!("erasing the VM on {crn}");
        let response = self
            .http
            .post(format!("{crn}{path}"))
            .header("X-SignedPubKey", headers.signed_pubkey)
            .header("X-SignedOperation", headers.signed_operation)
            .send()
            .await
            .map_err(|e| AlephError::peer(&what, e))?;
        match response.status().as_u16() {
            200..=299 | 404 => Ok(()),
            code => {
                Err(AlephError::peer(what, format!("HTTP {code}: {}", cut(&response.text().await.unwrap_or_default()))))
            }
        }
    }

    /// The agent's public URL from the 2n6.me gateway (`https://word-word-word-word.2n6.me`).
    /// Never derived locally: the gateway's algorithm is not published.
    pub(crate) async fn gateway_url(&self, gateway: &str, hash: &str) -> Result<Option<String>, AlephError> {
        let what = format!("looking up the 2n6.me name at {gateway}");
        let response = self
            .http
            .get(format!("{}/api/hash/{hash}", gateway.trim_end_matches('/')))
            .send()
            .await
            .map_err(|e| AlephError::peer(&what, e))?;
        if !response.status().is_success() {
            return Ok(None);
        }
        let body: Value = response.json().await.map_err(|e| AlephError::peer(&what, e))?;
        let Some(subdomain) = body.get("subdomain").and_then(Value::as_str) else { return Ok(None) };
        if !is_hostname_label_list(subdomain) {
            return Err(AlephError::peer(what, format!("the gateway returned an invalid name {subdomain:?}")));
        }
        let url = body.get("url").and_then(Value::as_str).map(str::to_owned);
        Ok(Some(url.unwrap_or_else(|| format!("https://{subdomain}.2n6.me"))))
    }
}

/// Letters, digits, `-` and `.` only: the name goes into the Caddyfile.
pub(crate) fn is_hostname_label_list(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(hash: &str, load5: f64, mem_free: u64, ipv6_vm: Value) -> Value {
        serde_json::json!({
            "hash": hash, "name": hash, "address": format!("crn-{hash}.example.org/"), "score": 0.9,
            "qemu_support": true, "ipv6_check": {"host": true, "vm": ipv6_vm},
            "system_usage": {"active": true, "cpu": {"count": 4, "load_average": {"load5": load5}},
                "mem": {"total_kB": 16_000_000u64, "available_kB": mem_free},
                "disk": {"total_kB": 900_000_000u64, "available_kB": 500_000_000u64}},
        })
    }

    #[test]
    fn filters_and_orders_by_load() {
        let list = serde_json::json!({"crns": [
            node("busy", 3.0, 8_000_000, true.into()),
            node("idle", 0.1, 12_000_000, true.into()),
            node("no-ipv6", 0.0, 12_000_000, false.into()),
            node("null-ipv6", 0.0, 12_000_000, Value::Null),
            node("full", 0.0, 1_000, true.into()),
            {"hash": "broken"},
        ]});
        let crns = select_crns(&list, VmSize::default(), None);
        let hashes: Vec<_> = crns.iter().map(|c| c.hash.as_str()).collect();
        assert_eq!(hashes, ["idle", "busy"]);
        assert_eq!(crns[0].url, "https://crn-idle.example.org");
    }

    #[test]
    fn old_nodes_are_left_out_when_the_network_says_so() {
        let mut old = node("old", 0.0, 12_000_000, true.into());
        old["version"] = "1.9.4".into();
        let mut new = node("new", 0.5, 12_000_000, true.into());
        new["version"] = "1.10.0".into();
        let list = serde_json::json!({"crns": [old, new]});
        assert_eq!(select_crns(&list, VmSize::default(), Some("1.10.0")).len(), 1);
        assert_eq!(select_crns(&list, VmSize::default(), None).len(), 2);
        assert!(version_key("1.10.0") > version_key("1.9.9"));
        assert_eq!(version_key("v2.1.0-rc1"), vec![2, 1, 0]);
    }

    #[test]
    fn allocation_needs_host_and_mapped_ssh_port() {
        let list = serde_json::json!({
            "a": {"networking": {"host_ipv4": "203.0.113.7", "mapped_ports": {"22": {"host": 24005, "tcp": true}}}},
            "b": {"networking": {}},
        });
        assert_eq!(
            allocation_from_executions(&list, "a"),
            Some(Allocation { host: "203.0.113.7".into(), ssh_port: 24005 })
        );
        assert_eq!(allocation_from_executions(&list, "b"), None);
        assert_eq!(allocation_from_executions(&list, "c"), None);
    }

    #[test]
    fn blacklist_expires() {
        let blacklist = Blacklist::default();
        blacklist.add("https://a", Duration::from_secs(600));
        blacklist.add("https://b", Duration::ZERO);
        assert!(blacklist.contains("https://a"));
        assert!(!blacklist.contains("https://b"));
    }

    #[test]
    fn gateway_names_cannot_inject_into_the_caddyfile() {
        assert!(is_hostname_label_list("motion-course-adapt-wear"));
        assert!(!is_hostname_label_list("a { }"));
        assert!(!is_hostname_label_list("a\nb"));
        assert_eq!(crn_domain("https://crn.example.org:4443"), "crn.example.org");
    }
}
