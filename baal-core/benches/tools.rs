//! What one tool call costs, printed (not asserted): `cargo bench --workspace --bench tools`.
//!
//! `bash` pays for fork/exec, the uid switch and entering Landlock, and, where the host allows, the
//! call's own namespaces (PID, mount, and a user namespace when not root; with an isolated
//! network, entering the agent's network namespace), measured with and without them; the file
//! tools for the
//! resolver and `openat2`; `web_fetch` for the guard, a fresh pinned client and a loopback HTTP
//! round trip.

use std::time::{Duration, Instant};

use baal_core::agent::tools::{ToolConfig, ToolContext, ToolSet};
use baal_core::agent_env::ToolsNetwork;
use baal_core::domain::Role;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RUNS: usize = 200;
/// Fresh tool sets whose first `bash` call is timed.
const FIRST_CALLS: usize = 9;

async fn measure(set: &ToolSet, name: &str, args: Value) -> (Duration, Duration) {
    let ctx = ToolContext::new(Role::Owner, "bench");
    let tool = set.get(name).expect("tool");
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        let out = tool.call(args.clone(), &ctx).await;
        times.push(start.elapsed());
        assert!(!out.is_error, "{name}: {}", out.content);
    }
    times.sort();
    (times[RUNS / 2], times[RUNS * 99 / 100])
}

async fn loopback_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let body = "<html><body><p>hello</p></body></html>";
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    // Tool processes may run as `nobody` (when root): let it reach the workspace.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let ws = dir.path().join("ws");
    let mut config = ToolConfig::new(&ws);
    config.web_fetch_allow = vec!["127.0.0.1".into()];
    let set = ToolSet::standard(config);
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("notes.md"), "line\n".repeat(100)).unwrap();
    let port = loopback_server().await;

    println!("tool call latency over {RUNS} runs (p50 / p99):");
    for (label, namespaces, network) in [
        ("bash, no namespaces (as before)", false, ToolsNetwork::Host),
        ("bash, own PID+mount namespaces", true, ToolsNetwork::Host),
        ("bash, + isolated network", true, ToolsNetwork::Isolated),
    ] {
        let config = |n: usize| {
            let mut config = ToolConfig::new(dir.path().join(format!("{}-{n}", label.len())).join("ws"));
            config.per_call_namespaces = namespaces;
            config.network = network;
            config
        };
        // The first call of an agent also sets its sandbox up (namespaces tried out, and for an
        // isolated network as root the agent's namespace, deny list and slirp4netns).
        let mut firsts = Vec::new();
        for n in 0..FIRST_CALLS {
            let set = ToolSet::standard(config(n));
            let start = Instant::now();
            let out =
                set.get("bash").unwrap().call(json!({"command": "true"}), &ToolContext::new(Role::Owner, "b")).await;
            firsts.push(start.elapsed());
            assert!(!out.is_error, "{label}: {}", out.content);
        }
        firsts.sort();
        let set = ToolSet::standard(config(FIRST_CALLS));
        let (p50, p99) = measure(&set, "bash", json!({"command": "true"})).await;
        println!(
            "  {label:<34} {:>9.3} ms / {:>9.3} ms   (an agent's first call: {:.3} ms median of {FIRST_CALLS})",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            firsts[FIRST_CALLS / 2].as_secs_f64() * 1e3
        );
    }
    for (name, args) in [
        ("read_file", json!({"path": "notes.md"})),
        ("write_file", json!({"path": "out/new.md", "content": "x"})),
        ("list_dir", json!({})),
        ("web_fetch", json!({"url": format!("http://127.0.0.1:{port}/")})),
    ] {
        let (p50, p99) = measure(&set, name, args).await;
        println!("  {name:<34} {:>9.3} ms / {:>9.3} ms", p50.as_secs_f64() * 1e3, p99.as_secs_f64() * 1e3);
    }
}
