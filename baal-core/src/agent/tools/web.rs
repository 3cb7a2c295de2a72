//! `web_fetch` (with its SSRF guard) and `web_search` (Brave).
//!
//! The guard decides on addresses, not on names: the URL is parsed (which turns odd numeric hosts
//! such as `2130706433` or `0x7f.1` into the address they mean), a name is resolved, and every
//! address must be public or on the allow-list. The connection then goes only to the vetted
//! addresses (pinned in the client), so a second DNS answer cannot switch it to an internal host,
//! and redirects are followed by hand so each hop goes through the same check.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use ipnet::IpNet;
use regex::Regex;
use reqwest::Url;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::{Shared, Tool, ToolContext, ToolOutput, error_output, object_args, optional_u64, required_str};

/// The most redirects one fetch follows.
const MAX_REDIRECTS: usize = 5;
/// The whole fetch, every hop included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Connecting to one address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a response body read; the model sees far less, this bounds memory and time.
const MAX_BODY_BYTES: usize = 5 * 1024 * 1024;
/// One web search.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(15);
/// How web requests introduce themselves.
const USER_AGENT: &str = concat!("BaalAgent/", env!("CARGO_PKG_VERSION"));

pub(crate) struct WebFetch {
    shared: Arc<Shared>,
    allow: AllowList,
}

impl WebFetch {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let allow = AllowList::parse(&shared.config.web_fetch_allow);
        WebFetch { shared, allow }
    }
}

#[async_trait]
impl Tool for WebFetch {
    fn name(&self) -> &'static str {
        "web_fetch"
    }

    fn description(&self) -> &'static str {
        "Fetch a public web page or API over http(s) and return it as readable text (HTML is reduced to text, JSON is pretty-printed)."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {"url": {"type": "string", "description": "The http:// or https:// URL"}},
            "required": ["url"]
        })
    }

    async fn call(&self, args: Value, _ctx: &ToolContext) -> ToolOutput {
        let args = match object_args(args) {
            Ok(a) => a,
            Err(e) => return error_output(e),
        };
        let url = match required_str(&args, "url") {
            Ok(u) => u,
            Err(e) => return error_output(e),
        };
        match tokio::time::timeout(FETCH_TIMEOUT, fetch(url, &self.allow)).await {
            Err(_) => error_output(format!("the fetch took longer than {}s and was stopped", FETCH_TIMEOUT.as_secs())),
            Ok(Err(e)) => error_output(e),
            Ok(Ok(page)) => ToolOutput::ok(render(page, self.shared.config.max_output_bytes)),
        }
    }
}

/// A fetched response body and what it is.
struct Page {
    content_type: String,
    body: Vec<u8>,
    cut: bool,
}

async fn fetch(url: &str, allow: &AllowList) -> Result<Page, String> {
    let mut url =
        Url::parse(url.trim()).map_err(|e| format!("not a valid URL ({e}); give a full http:// or https:// URL"))?;
    for _hop in 0..=MAX_REDIRECTS {
        let client = vetted_client(&url, allow).await?;
        let mut response = client.get(url.clone()).send().await.map_err(describe_request_error)?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| format!("HTTP {} without a usable Location header", status.as_u16()))?;
            url = url.join(location).map_err(|e| format!("the server redirected to an invalid URL ({e})"))?;
            continue;
        }
        if !status.is_success() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mut body = Vec::new();
        let mut cut = false;
        while let Some(chunk) = response.chunk().await.map_err(describe_request_error)? {
            let room = MAX_BODY_BYTES - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                cut = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        return Ok(Page { content_type, body, cut });
    }
    Err(format!("more than {MAX_REDIRECTS} redirects; giving up"))
}

/// A client that can reach only `url`'s host, at addresses that passed the guard.
async fn vetted_client(url: &Url, allow: &AllowList) -> Result<reqwest::Client, String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("only http and https URLs can be fetched, not {}:", url.scheme()));
    }
    let port = url.port_or_known_default().ok_or("the URL has no port")?;
    let builder = crate::http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(USER_AGENT);
    let builder = match url.host() {
        None => return Err("the URL has no host".into()),
        Some(url::Host::Ipv4(ip)) => {
            check_address(&ip.to_string(), IpAddr::V4(ip), allow, false)?;
            builder
        }
        Some(url::Host::Ipv6(ip)) => {
            check_address(&ip.to_string(), IpAddr::V6(ip), allow, false)?;
            builder
        }
        Some(url::Host::Domain(name)) => {
            let name_allowed = allow.allows_host(name);
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
                .await
                .map_err(|e| format!("cannot resolve {name}: {e}"))?
                .collect();
            if addrs.is_empty() {
                return Err(format!("{name} has no address"));
            }
            for addr in &addrs {
                check_address(name, addr.ip(), allow, name_allowed)?;
            }
            builder.resolve_to_addrs(name, &addrs)
        }
    };
    builder.build().map_err(|e| format!("cannot prepare the request: {e}"))
}

fn check_address(host: &str, ip: IpAddr, allow: &AllowList, name_allowed: bool) -> Result<(), String> {
    if name_allowed || allow.allows_ip(ip) || is_public(ip) {
        Ok(())
    } else {
        Err(format!(
            "refused to fetch {host}: {ip} is a private, local or reserved address (only public hosts can be fetched)"
        ))
    }
}

fn describe_request_error(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "the server did not answer in time".into()
    } else if e.is_connect() {
        "could not connect to the server".into()
    } else {
        format!("the request failed: {}", e.without_url())
    }
}

/// Turns a fetched body into what the model reads.
fn render(page: Page, max: usize) -> String {
    let ct = page.content_type.as_str();
    let binary =
        ["image/", "audio/", "video/", "font/", "application/octet-stream", "application/pdf", "application/zip"];
    if binary.iter().any(|b| ct.starts_with(b)) {
        return format!("(binary content of type {ct}, {} bytes; not shown)", page.body.len());
    }
    let raw = String::from_utf8_lossy(&page.body);
    let mut text = if ct.contains("json") {
        serde_json::from_str::<Value>(&raw)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| raw.into_owned())
    } else if ct.contains("html") || (ct.is_empty() && looks_like_html(&raw)) {
        html_to_text(&raw)
    } else {
        raw.into_owned()
    };
    if page.cut {
        text.push_str(&format!("\n\n(download stopped at {MAX_BODY_BYTES} bytes)"));
    }
    if text.trim().is_empty() {
        return "(empty response)".into();
    }
    if text.len() > max {
        // The start of a page is what matters; the tail is usually navigation and footers.
        let end = text.floor_char_boundary(max);
        let total = text.len();
        text.truncate(end);
        text.push_str(&format!("\n\n... truncated ({total} bytes total)"));
    }
    text
}

fn looks_like_html(text: &str) -> bool {
    let start = text.trim_start().get(..15).unwrap_or("").to_ascii_lowercase();
    start.starts_with("<!doctype html") || start.starts_with("<html")
}

/// Reduces HTML to readable text. Hand-written on purpose: the steps are the ones the Python
/// agent's users know (drop scripts and styles, block ends become line breaks, tags go, entities
/// are decoded, blank runs collapse), the reader is a model that tolerates imperfect text, and a
/// full HTML parser (html5ever through html2text) would add a DOM and about a megabyte to an
/// agent meant to stay small. The regex crate runs in linear time, so hostile pages cannot stall it.
pub(crate) fn html_to_text(html: &str) -> String {
    static DROP: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?is)<script\b.*?</script\s*>|<style\b.*?</style\s*>|<noscript\b.*?</noscript\s*>|<!--.*?-->|<head\b.*?</head\s*>")
            .expect("valid regex")
    });
    static BREAK: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"(?i)<br\s*/?>|</(p|div|h[1-6]|li|tr|table|ul|ol|section|article|header|footer|blockquote|pre|title)\s*>",
        )
        .expect("valid regex")
    });
    static TAG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?s)<[^>]*>").expect("valid regex"));
    static BLANKS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[ \t\u{a0}]+").expect("valid regex"));
    static EMPTY_LINES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\n{3,}").expect("valid regex"));

    let text = DROP.replace_all(html, "");
    let text = BREAK.replace_all(&text, "\n");
    let text = TAG.replace_all(&text, "");
    let text = html_escape::decode_html_entities(&text);
    let text = BLANKS.replace_all(&text, " ");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let text = lines.join("\n");
    EMPTY_LINES.replace_all(&text, "\n\n").trim().to_string()
}

/// `WEB_FETCH_ALLOW`: host names and address ranges reachable even though they are private.
#[derive(Debug, Default)]
pub(crate) struct AllowList {
    hosts: Vec<String>,
    nets: Vec<IpNet>,
}

impl AllowList {
    pub(crate) fn parse(entries: &[String]) -> Self {
        let mut allow = AllowList::default();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            if let Ok(net) = entry.parse::<IpNet>() {
                allow.nets.push(net);
            } else if let Ok(ip) = entry.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
                allow.nets.push(IpNet::from(ip));
            } else {
                allow.hosts.push(entry.trim_end_matches('.').to_ascii_lowercase());
            }
        }
        allow
    }

    fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// An IPv4 address written in IPv6 form (mapped `::ffff:a.b.c.d`) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

static BLOCKED_V4: LazyLock<Vec<ipnet::Ipv4Net>> = LazyLock::new(|| {
    [
        "0.0.0.0/8",       // "this network", unspecified
        "10.0.0.0/8",      // private
        "100.64.0.0/10",   // carrier-grade NAT
        "127.0.0.0/8",     // loopback
        "169.254.0.0/16",  // link-local, cloud metadata (169.254.169.254)
        "172.16.0.0/12",   // private
        "192.0.0.0/24",    // IETF protocol assignments
        "192.0.2.0/24",    // documentation
        "192.88.99.0/24",  // 6to4 relay anycast
        "192.168.0.0/16",  // private
        "198.18.0.0/15",   // benchmarking
        "198.51.100.0/24", // documentation
        "203.0.113.0/24",  // documentation
        "224.0.0.0/4",     // multicast
        "240.0.0.0/4",     // reserved, broadcast
    ]
    .iter()
    .map(|n| n.parse().expect("valid network"))
    .collect()
});

static BLOCKED_V6: LazyLock<Vec<ipnet::Ipv6Net>> = LazyLock::new(|| {
    [
        "::/128",        // unspecified
        "::1/128",       // loopback
        "100::/64",      // discard
        "2001::/32",     // Teredo: tunnels to an address we cannot vet
        "2001:db8::/32", // documentation
        "fc00::/7",      // unique local (fd00:ec2::254, the AWS metadata service, is here)
        "fe80::/10",     // link-local
        "fec0::/10",     // site-local (deprecated, still routed by some stacks)
        "ff00::/8",      // multicast
    ]
    .iter()
    .map(|n| n.parse().expect("valid network"))
    .collect()
});

/// Whether `ip` is an ordinary public address. Forms that carry an IPv4 address inside an IPv6
/// one (mapped, compatible, NAT64, 6to4) are judged by the IPv4 address they lead to.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if BLOCKED_V6.iter().any(|n| n.contains(&v6)) {
                return false;
            }
            match embedded_v4(v6) {
                Some(v4) => is_public_v4(v4),
                None => true,
            }
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    !BLOCKED_V4.iter().any(|n| n.contains(&ip))
}

/// The IPv4 address an IPv6 address leads to, for the transition forms that embed one.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let last32 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4); // ::ffff:a.b.c.d
    }
    if s[..6] == [0; 6] {
        return Some(last32); // ::a.b.c.d (deprecated IPv4-compatible)
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) {
        return Some(last32); // NAT64 (64:ff9b::/96, 64:ff9b:1::/48)
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])); // 6to4
    }
    None
}

pub(crate) struct WebSearch {
    shared: Arc<Shared>,
}

impl WebSearch {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        WebSearch { shared }
    }
}

#[async_trait]
impl Tool for WebSearch {
    fn name(&self) -> &'static str {
        "web_search"
    }

    fn description(&self) -> &'static str {
        "Search the web (Brave Search) and return the results' titles, URLs and descriptions."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "The search query"},
                "count": {"type": "integer", "description": "Number of results, 1-10 (default 5)"}
            },
            "required": ["query"]
        })
    }

    async fn call(&self, args: Value, _ctx: &ToolContext) -> ToolOutput {
        let args = match object_args(args) {
            Ok(a) => a,
            Err(e) => return error_output(e),
        };
        let (query, count) = match (required_str(&args, "query"), optional_u64(&args, "count")) {
            (Ok(q), Ok(c)) => (q, c.unwrap_or(5).clamp(1, 10)),
            (Err(e), _) | (_, Err(e)) => return error_output(e),
        };
        let Some(key) = &self.shared.config.brave_api_key else {
            return error_output("web search is not configured (no BRAVE_API_KEY)");
        };
        match search(&self.shared.config.brave_api_url, key.expose_secret(), query, count).await {
            Ok(text) => ToolOutput::ok(super::truncate_middle(&text, self.shared.config.max_output_bytes)),
            Err(e) => error_output(e),
        }
    }
}

async fn search(api_url: &str, key: &str, query: &str, count: u64) -> Result<String, String> {
    let client = crate::http_client_builder()
        .timeout(SEARCH_TIMEOUT)
        .user_agent(USER_AGENT)
        .build()
        .map_err(|e| format!("cannot prepare the search: {e}"))?;
    let response = client
        .get(api_url)
        .query(&[("q", query), ("count", &count.to_string())])
        .header("X-Subscription-Token", key)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("the search failed: {}", describe_request_error(e)))?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(format!("the search service refused the key (HTTP {}); check BRAVE_API_KEY", status.as_u16()));
    }
    if !status.is_success() {
        return Err(format!("the search failed: HTTP {}", status.as_u16()));
    }
    let body: Value =
        response.json().await.map_err(|e| format!("the search answer was unreadable: {}", e.without_url()))?;
    let results = body["web"]["results"].as_array().map(Vec::as_slice).unwrap_or_default();
    if results.is_empty() {
        return Ok("(no results found)".into());
    }
    let field = |r: &Value, name: &str| html_to_text(r[name].as_str().unwrap_or(""));
    let entries: Vec<String> = results
        .iter()
        .map(|r| {
            format!("**{}**\n{}\n{}\n", field(r, "title"), r["url"].as_str().unwrap_or(""), field(r, "description"))
        })
        .collect();
    Ok(entries.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for s in [
            "127.0.0.1",
            "127.8.9.10",
            "10.0.0.1",
            "172.16.5.4",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::a00:1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::a00:1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "2001:db8::1",
            "2001:0:4136:e378::1",
        ] {
            assert!(!is_public(ip(s)), "{s} passed as public");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "2002:0808:0808::1",
            "64:ff9b::808:808",
        ] {
            assert!(is_public(ip(s)), "{s} refused");
        }
    }

    #[test]
    fn odd_numeric_hosts_parse_to_the_address_they_mean() {
        for url in ["http://2130706433/", "http://0x7f.1/", "http://0177.0.0.1/", "http://127.1/", "http://0x7f000001/"]
        {
            let parsed = Url::parse(url).unwrap();
            assert_eq!(parsed.host(), Some(url::Host::Ipv4(Ipv4Addr::LOCALHOST)), "{url}");
        }
    }

    #[test]
    fn allow_list_takes_hosts_addresses_and_ranges() {
        let allow = AllowList::parse(&[
            "10.1.0.0/16".into(),
            "127.0.0.1".into(),
            "[::1]".into(),
            "Internal.Example.".into(),
            " ".into(),
        ]);
        assert!(allow.allows_ip(ip("10.1.2.3")));
        assert!(!allow.allows_ip(ip("10.2.0.1")));
        assert!(allow.allows_ip(ip("127.0.0.1")));
        assert!(allow.allows_ip(ip("::ffff:127.0.0.1")));
        assert!(!allow.allows_ip(ip("127.0.0.2")));
        assert!(allow.allows_ip(ip("::1")));
        assert!(allow.allows_host("internal.example"));
        assert!(!allow.allows_host("other.example"));
    }

    #[test]
    fn html_becomes_readable_text() {
        let html = "<html><head><title>T</title><style>p{color:red}</style></head><body>\
            <script>var secret = 1;</script><h1>Title</h1><p>Caf&eacute; &amp; tea&nbsp;&lt;3</p>\
            <!-- hidden --><div>one<br>two</div>\n\n\n\n<ul><li>a</li><li>b</li></ul>   spaced\t\tout</body></html>";
        assert_eq!(html_to_text(html), "Title\nCafé & tea <3\none\ntwo\n\na\nb\n\nspaced out");
    }

    #[test]
    fn render_cuts_and_labels() {
        let page = |ct: &str, body: &str| Page { content_type: ct.into(), body: body.as_bytes().to_vec(), cut: false };
        assert_eq!(render(page("application/json", "{\"a\":1}"), 1000), "{\n  \"a\": 1\n}");
        assert_eq!(render(page("text/plain", "  "), 1000), "(empty response)");
        assert!(render(page("image/png", "xx"), 1000).contains("binary"));
        let long = render(page("text/plain", &"é".repeat(1000)), 101);
        assert!(long.starts_with(&"é".repeat(50)) && long.contains("truncated (2000 bytes total)"), "{long}");
    }
}
