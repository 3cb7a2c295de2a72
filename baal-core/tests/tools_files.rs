//! The workspace resolver and the file tools, against real directories (ports the cases of the
//! Python Baal's `tests/test_send_file.py` that concern the agent).

use std::os::unix::fs::symlink;
use std::path::Path;

use baal_core::agent::tools::workspace::{PathError, Workspace};
use baal_core::agent::tools::{SentFile, ToolConfig, ToolContext, ToolOutput, ToolSet};
use baal_core::domain::Role;
use secrecy::SecretString;
use serde_json::json;
use tempfile::TempDir;

struct Fixture {
    _dir: TempDir,
    ws: std::path::PathBuf,
    outside: std::path::PathBuf,
}

/// A workspace with a file, a subdirectory, and a symlink to `/etc`, beside an outside directory.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("workspace");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(ws.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(ws.join("hello.txt"), "line one\nline two\nline three\n").unwrap();
    std::fs::write(ws.join("sub/inner.txt"), "inner\n").unwrap();
    std::fs::write(outside.join("secret.txt"), "outside secret\n").unwrap();
    symlink("/etc", ws.join("etc_link")).unwrap();
    symlink(&outside, ws.join("outside_link")).unwrap();
    Fixture { _dir: dir, ws, outside }
}

fn tools(ws: &Path) -> ToolSet {
    ToolSet::standard(ToolConfig::new(ws))
}

async fn call(set: &ToolSet, name: &str, args: serde_json::Value) -> ToolOutput {
    set.get(name)
        .unwrap_or_else(|| panic!("tool {name} missing"))
        .call(args, &ToolContext::new(Role::Owner, "42"))
        .await
}

#[test]
fn resolver_accepts_paths_inside() {
    let f = fixture();
    let w = Workspace::new(&f.ws);
    let root = std::fs::canonicalize(&f.ws).unwrap();
    assert_eq!(w.resolve("hello.txt").unwrap(), root.join("hello.txt"));
    assert_eq!(w.resolve(root.join("sub/inner.txt").to_str().unwrap()).unwrap(), root.join("sub/inner.txt"));
    assert_eq!(w.resolve(".").unwrap(), root);
    assert_eq!(w.resolve("").unwrap(), root);
    assert_eq!(w.resolve("sub/../hello.txt").unwrap(), root.join("hello.txt"));
    // Not existing yet is fine unless existence is required.
    assert_eq!(w.resolve("new/dir/file.txt").unwrap(), root.join("new/dir/file.txt"));
    assert_eq!(w.resolve("missing/../hello.txt").unwrap(), root.join("hello.txt"));
    assert_eq!(w.relative(&root.join("sub/inner.txt")), "sub/inner.txt");
    assert_eq!(w.relative(&root), ".");
}

#[test]
fn resolver_refuses_escapes() {
    let f = fixture();
    let w = Workspace::new(&f.ws);
    let outside_abs = f.outside.join("secret.txt");
    for path in [
        "../outside/secret.txt",
        "..",
        "sub/../../outside",
        "/etc/passwd",
        outside_abs.to_str().unwrap(),
        "etc_link",
        "etc_link/passwd",
        "etc_link/new_file",
        "outside_link/secret.txt",
        "missing/../../outside/secret.txt",
        "missing/../etc_link/passwd",
        "missing/deeper/../../../x",
        "../../../../../../../../etc/passwd",
    ] {
        let err = w.resolve(path).expect_err(path);
        assert!(matches!(err, PathError::Escapes { .. }), "{path}: {err}");
        assert!(err.to_string().contains("escapes workspace"), "{err}");
    }
}

#[test]
fn resolver_follows_dangling_symlinks() {
    let f = fixture();
    symlink(f.outside.join("planted.txt"), f.ws.join("dangling")).unwrap();
    symlink("inside-not-yet.txt", f.ws.join("dangling_inside")).unwrap();
    let w = Workspace::new(&f.ws);
    assert!(matches!(w.resolve("dangling"), Err(PathError::Escapes { .. })));
    let root = std::fs::canonicalize(&f.ws).unwrap();
    assert_eq!(w.resolve("dangling_inside").unwrap(), root.join("inside-not-yet.txt"));
}

#[test]
fn resolver_requires_existence_and_refuses_sensitive_names() {
    let f = fixture();
    std::fs::write(f.ws.join(".env"), "LIBERTAI_API_KEY=x\n").unwrap();
    std::fs::write(f.ws.join("agent.db"), "").unwrap();
    symlink(f.ws.join(".env"), f.ws.join("innocent.txt")).unwrap();
    let w = Workspace::new(&f.ws);
    let err = w.resolve_existing("nope.txt").unwrap_err();
    assert!(matches!(err, PathError::NotFound { .. }) && err.to_string().contains("does not exist"), "{err}");
    for path in [".env", "agent.db", "agent.db-wal", "agent.db-shm", "sub/.env", "innocent.txt"] {
        let err = w.resolve(path).expect_err(path);
        assert!(matches!(err, PathError::Sensitive { .. }) && err.to_string().contains("sensitive"), "{path}: {err}");
    }
    let custom = Workspace::new(&f.ws).with_sensitive_names(["settings.json"]);
    assert!(matches!(custom.resolve("settings.json"), Err(PathError::Sensitive { .. })));
}

#[tokio::test]
async fn standard_tools_come_in_order() {
    let f = fixture();
    let names: Vec<_> = tools(&f.ws).all().iter().map(|t| t.name()).collect();
    assert_eq!(names, ["bash", "read_file", "write_file", "edit_file", "list_dir", "web_fetch", "send_file"]);
    let mut config = ToolConfig::new(&f.ws);
    config.brave_api_key = Some(SecretString::from("brave-key"));
    let names: Vec<_> = ToolSet::standard(config).all().iter().map(|t| t.name()).collect();
    assert_eq!(names.last(), Some(&"web_search"));
    for tool in tools(&f.ws).all() {
        let schema = tool.parameters();
        assert_eq!(schema["type"], "object", "{}", tool.name());
        assert!(!tool.description().is_empty());
    }
}

#[tokio::test]
async fn file_tools_work_inside_the_workspace() {
    let f = fixture();
    let set = tools(&f.ws);

    let out = call(&set, "read_file", json!({"path": "hello.txt"})).await;
    assert!(!out.is_error, "{}", out.content);
    assert_eq!(out.content, "1\tline one\n2\tline two\n3\tline three\n");
    let out = call(&set, "read_file", json!({"path": "hello.txt", "offset": 2, "limit": 1})).await;
    assert_eq!(out.content, "2\tline two\n");
    // Arguments sent as a JSON string, numbers as strings.
    let out = call(&set, "read_file", json!("{\"path\": \"hello.txt\", \"offset\": \"3\"}")).await;
    assert_eq!(out.content, "3\tline three\n");

    let out = call(&set, "write_file", json!({"path": "new/deep/file.md", "content": "héllo"})).await;
    assert!(!out.is_error, "{}", out.content);
    assert!(out.content.contains("new/deep/file.md"));
    assert_eq!(std::fs::read_to_string(f.ws.join("new/deep/file.md")).unwrap(), "héllo");

    let out =
        call(&set, "edit_file", json!({"path": "hello.txt", "old_string": "line two", "new_string": "LINE 2"})).await;
    assert!(!out.is_error, "{}", out.content);
    assert_eq!(std::fs::read_to_string(f.ws.join("hello.txt")).unwrap(), "line one\nLINE 2\nline three\n");

    let out = call(&set, "list_dir", json!({})).await;
    assert!(!out.is_error, "{}", out.content);
    let lines: Vec<&str> = out.content.lines().collect();
    assert_eq!(lines[0], "[dir]  new");
    assert_eq!(lines[1], "[dir]  sub");
    assert!(lines.contains(&"[file]  hello.txt"));
    let out = call(&set, "list_dir", json!({"path": "sub"})).await;
    assert_eq!(out.content, "[file]  inner.txt");
    std::fs::create_dir(f.ws.join("empty")).unwrap();
    assert_eq!(call(&set, "list_dir", json!({"path": "empty"})).await.content, "(empty directory)");
    std::fs::write(f.ws.join("blank.txt"), "").unwrap();
    assert_eq!(call(&set, "read_file", json!({"path": "blank.txt"})).await.content, "(empty file)");
}

#[tokio::test]
async fn edit_needs_exactly_one_match() {
    let f = fixture();
    let set = tools(&f.ws);
    let out = call(&set, "edit_file", json!({"path": "hello.txt", "old_string": "absent", "new_string": "x"})).await;
    assert!(out.is_error && out.content.contains("not found"), "{}", out.content);
    let out = call(&set, "edit_file", json!({"path": "hello.txt", "old_string": "line", "new_string": "x"})).await;
    assert!(out.is_error && out.content.contains("3 times"), "{}", out.content);
    let out = call(&set, "edit_file", json!({"path": "hello.txt", "old_string": "", "new_string": "x"})).await;
    assert!(out.is_error, "{}", out.content);
    assert_eq!(std::fs::read_to_string(f.ws.join("hello.txt")).unwrap(), "line one\nline two\nline three\n");
    let out = call(&set, "edit_file", json!({"path": "hello.txt"})).await;
    assert!(out.is_error && out.content.contains("old_string"), "{}", out.content);
}

#[tokio::test]
async fn every_file_tool_refuses_escapes() {
    let f = fixture();
    let set = tools(&f.ws);
    let outside_abs = f.outside.join("secret.txt").display().to_string();
    for path in
        ["../outside/secret.txt", outside_abs.as_str(), "/etc/passwd", "etc_link/passwd", "outside_link/secret.txt"]
    {
        for (tool, args) in [
            ("read_file", json!({"path": path})),
            ("write_file", json!({"path": path, "content": "pwned"})),
            ("edit_file", json!({"path": path, "old_string": "outside", "new_string": "pwned"})),
            ("list_dir", json!({"path": path})),
            ("send_file", json!({"path": path})),
        ] {
            let out = call(&set, tool, args).await;
            assert!(out.is_error, "{tool} {path}: {}", out.content);
            assert!(out.content.contains("escapes workspace"), "{tool} {path}: {}", out.content);
            assert!(out.file.is_none());
        }
    }
    for tool in ["list_dir", "read_file"] {
        let out = call(&set, tool, json!({"path": "etc_link"})).await;
        assert!(out.content.contains("escapes workspace"), "{tool}: {}", out.content);
    }
    // Nothing was written or changed outside.
    assert_eq!(std::fs::read_to_string(f.outside.join("secret.txt")).unwrap(), "outside secret\n");
    assert!(!f.ws.parent().unwrap().join("pwned").exists());
    let out = call(&set, "write_file", json!({"path": "../escaped.txt", "content": "x"})).await;
    assert!(out.is_error);
    assert!(!f.ws.parent().unwrap().join("escaped.txt").exists());
}

#[tokio::test]
async fn send_file_returns_the_file_and_its_caption() {
    let f = fixture();
    let set = tools(&f.ws);
    let out = call(&set, "send_file", json!({"path": "hello.txt", "caption": "here it is"})).await;
    assert!(!out.is_error, "{}", out.content);
    assert_eq!(out.file, Some(SentFile { path: "hello.txt".into(), caption: "here it is".into() }));

    let abs = f.ws.join("sub/inner.txt").display().to_string();
    let out = call(&set, "send_file", json!({"path": abs})).await;
    assert_eq!(out.file, Some(SentFile { path: "sub/inner.txt".into(), caption: String::new() }));

    // Colons in the path and the caption survive: there is no marker string to split (§9.27).
    std::fs::write(f.ws.join("report:2026.txt"), "r").unwrap();
    let out = call(&set, "send_file", json!({"path": "report:2026.txt", "caption": "Note: see 10:30"})).await;
    assert_eq!(out.file, Some(SentFile { path: "report:2026.txt".into(), caption: "Note: see 10:30".into() }));
}

#[tokio::test]
async fn send_file_refuses_what_it_must() {
    let f = fixture();
    let set = tools(&f.ws);
    std::fs::write(f.ws.join(".env"), "AGENT_SECRET=s\n").unwrap();
    let cases = [
        (json!({"path": "../outside/secret.txt"}), "escapes workspace"),
        (json!({"path": ".env"}), "sensitive"),
        (json!({"path": "agent.db"}), "sensitive"),
        (json!({"path": "missing.pdf"}), "does not exist"),
        (json!({"path": "sub"}), "not a regular file"),
        (json!({}), "missing required parameter 'path'"),
    ];
    for (args, expected) in cases {
        let out = call(&set, "send_file", args.clone()).await;
        assert!(out.is_error && out.content.contains(expected), "{args}: {}", out.content);
        assert!(out.file.is_none());
    }
    // Over 50 MiB (a sparse file: no disk used).
    let big = std::fs::File::create(f.ws.join("big.bin")).unwrap();
    big.set_len(50 * 1024 * 1024 + 1).unwrap();
    let out = call(&set, "send_file", json!({"path": "big.bin"})).await;
    assert!(out.is_error && out.content.contains("too large"), "{}", out.content);
    big.set_len(50 * 1024 * 1024).unwrap();
    let out = call(&set, "send_file", json!({"path": "big.bin"})).await;
    assert!(!out.is_error, "{}", out.content);
}

#[tokio::test]
async fn read_file_caps_its_output() {
    let f = fixture();
    let mut config = ToolConfig::new(&f.ws);
    config.max_output_bytes = 1000;
    let set = ToolSet::standard(config);
    let text: String = (1..=500).map(|i| format!("line number {i}\n")).collect();
    std::fs::write(f.ws.join("long.txt"), text).unwrap();
    let out = call(&set, "read_file", json!({"path": "long.txt"})).await;
    assert!(out.content.len() < 1200, "{}", out.content.len());
    assert!(out.content.contains("offset="), "{}", out.content);
}

/// What the server's `/files` route relies on (the Python tests' `/files` cases, minus HTTP).
#[test]
fn open_existing_serves_only_workspace_files() {
    use std::io::Read;
    let f = fixture();
    std::fs::write(f.ws.join(".env"), "AGENT_SECRET=s\n").unwrap();
    let mut config = ToolConfig::new(&f.ws);
    config.sensitive_names.push("settings.json".into());
    std::fs::write(f.ws.join("settings.json"), "{}").unwrap();
    let w = config.workspace_resolver();
    let mut text = String::new();
    w.open_existing("sub/inner.txt").unwrap().read_to_string(&mut text).unwrap();
    assert_eq!(text, "inner\n");
    assert!(w.open_existing("sub").unwrap().metadata().unwrap().is_dir());
    assert!(matches!(w.open_existing(".env"), Err(PathError::Sensitive { .. })));
    assert!(matches!(w.open_existing("settings.json"), Err(PathError::Sensitive { .. })));
    assert!(matches!(w.open_existing("../outside/secret.txt"), Err(PathError::Escapes { .. })));
    assert!(matches!(w.open_existing("etc_link/passwd"), Err(PathError::Escapes { .. })));
    assert!(matches!(w.open_existing("nope.png"), Err(PathError::NotFound { .. })));
}

#[tokio::test]
async fn hard_linked_files_are_not_written() {
    let f = fixture();
    let set = tools(&f.ws);
    std::fs::write(f.ws.join("original.txt"), "keep me\n").unwrap();
    std::fs::hard_link(f.ws.join("original.txt"), f.ws.join("alias.txt")).unwrap();
    for (tool, args) in [
        ("write_file", json!({"path": "alias.txt", "content": "changed"})),
        ("edit_file", json!({"path": "alias.txt", "old_string": "keep", "new_string": "lose"})),
    ] {
        let out = call(&set, tool, args).await;
        assert!(out.is_error && out.content.contains("hard links"), "{tool}: {}", out.content);
    }
    assert_eq!(std::fs::read_to_string(f.ws.join("original.txt")).unwrap(), "keep me\n");
    // Overwriting a file with one name still replaces its content whole.
    std::fs::write(f.ws.join("single.txt"), "a much longer original content\n").unwrap();
    let out = call(&set, "write_file", json!({"path": "single.txt", "content": "short"})).await;
    assert!(!out.is_error, "{}", out.content);
    assert_eq!(std::fs::read_to_string(f.ws.join("single.txt")).unwrap(), "short");
}
