//! `web_fetch` and `web_search` against real HTTP servers on loopback: the SSRF guard refuses
//! internal addresses (also through redirects), the allow-list opens named ones, and search
//! speaks Brave's API.

use std::sync::{Arc, Mutex};

use baal_core::agent::tools::{ToolConfig, ToolContext, ToolOutput, ToolSet};
use baal_core::domain::Role;
use secrecy::SecretString;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A request the fake server saw: its request line and headers.
type Seen = Arc<Mutex<Vec<String>>>;

/// A small HTTP/1.1 server on 127.0.0.1 with fixed routes; returns its port and what it saw.
async fn serve() -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                log.lock().unwrap().push(head.clone());
                let target = head.split(' ').nth(1).unwrap_or("/").to_string();
                let path = target.split('?').next().unwrap_or("/");
                let (status, headers, body): (&str, Vec<String>, Vec<u8>) = match path {
                    "/page" => (
                        "200 OK",
                        vec!["Content-Type: text/html; charset=utf-8".into()],
                        b"<html><body><script>alert(1)</script><h1>Hello</h1><p>loopback &amp; friends</p></body></html>"
                            .to_vec(),
                    ),
                    "/data" => ("200 OK", vec!["Content-Type: application/json".into()], br#"{"b":[1,2]}"#.to_vec()),
                    "/big" => ("200 OK", vec!["Content-Type: text/plain".into()], vec![b'z'; 8 * 1024 * 1024]),
                    "/missing" => ("404 Not Found", vec![], b"nope".to_vec()),
                    "/to-page" => ("302 Found", vec!["Location: /page".into()], vec![]),
                    "/to-other-loopback" => {
                        ("302 Found", vec![format!("Location: http://127.0.0.2:{port}/page")], vec![])
                    }
                    "/to-metadata" => {
                        ("301 Moved Permanently", vec!["Location: http://169.254.169.254/latest/meta-data/".into()], vec![])
                    }
                    "/loop" => ("302 Found", vec!["Location: /loop".into()], vec![]),
                    "/res/v1/web/search" => {
                        let authorized = head.lines().any(|l| l.eq_ignore_ascii_case("x-subscription-token: brave-test-key"));
                        if !authorized {
                            ("401 Unauthorized", vec![], b"{}".to_vec())
                        } else if target.contains("q=nothing") {
                            ("200 OK", vec!["Content-Type: application/json".into()], br#"{"web":{"results":[]}}"#.to_vec())
                        } else {
                            let body = json!({"web": {"results": [
                                {"title": "Rust <strong>language</strong>", "url": "https://www.rust-lang.org/", "description": "A language &amp; more"},
                                {"title": "Baal", "url": "https://example.org/baal", "description": "Agents"}
                            ]}});
                            ("200 OK", vec!["Content-Type: application/json".into()], body.to_string().into_bytes())
                        }
                    }
                    _ => ("404 Not Found", vec![], vec![]),
                };
                let mut response =
                    format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
                for h in headers {
                    response.push_str(&h);
                    response.push_str("\r\n");
                }
                response.push_str("\r\n");
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.write_all(&body).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (port, seen)
}

fn tools(allow: &[&str]) -> (tempfile::TempDir, ToolSet) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ToolConfig::new(dir.path());
    config.web_fetch_allow = allow.iter().map(|s| s.to_string()).collect();
    (dir, ToolSet::standard(config))
}

async fn fetch(set: &ToolSet, url: &str) -> ToolOutput {
    set.get("web_fetch").unwrap().call(json!({ "url": url }), &ToolContext::new(Role::Visitor, "7")).await
}

#[tokio::test]
async fn refuses_internal_addresses() {
    let (port, seen) = serve().await;
    let (_dir, set) = tools(&[]);
    for url in [
        format!("http://127.0.0.1:{port}/page"),
        format!("http://localhost:{port}/page"),
        "http://10.0.0.1/".into(),
        "http://169.254.169.254/latest/meta-data/".into(),
        format!("http://[::1]:{port}/page"),
        "http://[::ffff:127.0.0.1]/".into(),
        "http://[fd00:ec2::254]/".into(),
        "http://2130706433/".into(),
        format!("http://0x7f.1:{port}/page"),
        "http://0177.0.0.1/".into(),
        "http://100.64.0.1/".into(),
        "http://192.168.0.1/".into(),
        "http://0.0.0.0/".into(),
    ] {
        let out = fetch(&set, &url).await;
        assert!(out.is_error, "{url}: {}", out.content);
        assert!(out.content.contains("refused"), "{url}: {}", out.content);
    }
    assert!(seen.lock().unwrap().is_empty(), "a refused fetch reached the server");
}

#[tokio::test]
async fn refuses_bad_urls() {
    let (_dir, set) = tools(&[]);
    for url in ["file:///etc/passwd", "ftp://example.org/", "not a url", "gopher://127.0.0.1/"] {
        let out = fetch(&set, url).await;
        assert!(out.is_error, "{url}: {}", out.content);
    }
    let out = set.get("web_fetch").unwrap().call(json!({}), &ToolContext::new(Role::Owner, "1")).await;
    assert!(out.is_error && out.content.contains("'url'"), "{}", out.content);
}

#[tokio::test]
async fn fetches_an_allowed_loopback_server() {
    let (port, seen) = serve().await;
    let (_dir, set) = tools(&["127.0.0.1"]);
    let out = fetch(&set, &format!("http://127.0.0.1:{port}/page")).await;
    assert!(!out.is_error, "{}", out.content);
    assert_eq!(out.content, "Hello\nloopback & friends");
    assert!(seen.lock().unwrap()[0].to_ascii_lowercase().contains("user-agent: baalagent/"));

    let out = fetch(&set, &format!("http://127.0.0.1:{port}/data")).await;
    assert_eq!(out.content, "{\n  \"b\": [\n    1,\n    2\n  ]\n}");

    let out = fetch(&set, &format!("http://127.0.0.1:{port}/to-page")).await;
    assert_eq!(out.content, "Hello\nloopback & friends");

    let out = fetch(&set, &format!("http://127.0.0.1:{port}/missing")).await;
    assert!(out.is_error && out.content.contains("HTTP 404"), "{}", out.content);

    let out = fetch(&set, &format!("http://127.0.0.1:{port}/loop")).await;
    assert!(out.is_error && out.content.contains("redirects"), "{}", out.content);

    let out = fetch(&set, &format!("http://127.0.0.1:{port}/big")).await;
    assert!(!out.is_error);
    assert!(out.content.len() < 40 * 1024, "{}", out.content.len());
    assert!(out.content.contains("truncated"), "{}", &out.content[out.content.len() - 100..]);
}

#[tokio::test]
async fn rechecks_every_redirect() {
    let (port, seen) = serve().await;
    let (_dir, set) = tools(&["127.0.0.1"]);
    for path in ["/to-other-loopback", "/to-metadata"] {
        let before = seen.lock().unwrap().len();
        let out = fetch(&set, &format!("http://127.0.0.1:{port}{path}")).await;
        assert!(out.is_error && out.content.contains("refused"), "{path}: {}", out.content);
        // Only the first hop reached the server.
        assert_eq!(seen.lock().unwrap().len(), before + 1, "{path}");
    }
}

#[tokio::test]
async fn allow_list_accepts_names_and_ranges() {
    let (port, _seen) = serve().await;
    let (_dir, set) = tools(&["localhost"]);
    let out = fetch(&set, &format!("http://localhost:{port}/page")).await;
    assert!(!out.is_error, "{}", out.content);
    // Allowing a name does not allow its addresses under another name.
    let out = fetch(&set, &format!("http://127.0.0.1:{port}/page")).await;
    assert!(out.is_error, "{}", out.content);

    let (_dir, set) = tools(&["127.0.0.0/30"]);
    let out = fetch(&set, &format!("http://127.0.0.1:{port}/page")).await;
    assert!(!out.is_error, "{}", out.content);
}

#[tokio::test]
async fn web_search_speaks_brave() {
    let (port, seen) = serve().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = ToolConfig::new(dir.path());
    config.brave_api_key = Some(SecretString::from("brave-test-key"));
    config.brave_api_url = format!("http://127.0.0.1:{port}/res/v1/web/search");
    let set = ToolSet::standard(config.clone());
    let search = set.get("web_search").expect("web_search with a key");
    let ctx = ToolContext::new(Role::Owner, "1");

    let out = search.call(json!({"query": "rust lang", "count": 50}), &ctx).await;
    assert!(!out.is_error, "{}", out.content);
    assert_eq!(
        out.content,
        "**Rust language**\nhttps://www.rust-lang.org/\nA language & more\n\n**Baal**\nhttps://example.org/baal\nAgents\n"
    );
    let request = seen.lock().unwrap()[0].clone();
    assert!(request.starts_with("GET /res/v1/web/search?q=rust+lang&count=10 "), "{request}");
    assert!(request.to_ascii_lowercase().contains("accept: application/json"), "{request}");

    let out = search.call(json!({"query": "nothing"}), &ctx).await;
    assert_eq!(out.content, "(no results found)");

    config.brave_api_key = Some(SecretString::from("wrong-key"));
    let set = ToolSet::standard(config);
    let out = set.get("web_search").unwrap().call(json!({"query": "x"}), &ctx).await;
    assert!(out.is_error && out.content.contains("BRAVE_API_KEY"), "{}", out.content);
    assert!(!out.content.contains("wrong-key"));
}
