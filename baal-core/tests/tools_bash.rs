//! The `bash` tool against real processes: it is bash, it runs in the workspace, its timeout and
//! cancellation kill everything it started, its output is bounded, and the agent's secrets are
//! out of its reach.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use baal_core::agent::tools::{ToolConfig, ToolContext, ToolOutput, ToolSet, sandbox};
use baal_core::domain::Role;
use serde_json::json;
use tempfile::TempDir;

/// The variable the secret probe plants in its own environment, and its value.
const SECRET_VAR: &str = "BAAL_TEST_AGENT_SECRET";
const SECRET_VALUE: &str = "sk-baal-test-0c7f3a9e5d21";

/// A workspace the tools user can reach (tempdirs are 0700; tests run as root, tools as nobody).
fn workspace() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ws = dir.path().join("workspace");
    (dir, ws)
}

async fn bash(set: &ToolSet, args: serde_json::Value) -> ToolOutput {
    set.get("bash").unwrap().call(args, &ToolContext::new(Role::Owner, "1")).await
}

fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `pid` is gone (or only a zombie waiting for a reaper that is not us).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn runs_bash_in_the_workspace() {
    let (_dir, ws) = workspace();
    let set = ToolSet::standard(ToolConfig::new(&ws));
    let out = bash(&set, json!({"command": "pwd; echo \"bash=${BASH_VERSION:+yes}\"; echo oops >&2; exit 3"})).await;
    assert!(!out.is_error, "{}", out.content);
    let root = std::fs::canonicalize(&ws).unwrap();
    assert_eq!(out.content, format!("{}\nbash=yes\n[stderr]\noops\n[exit code: 3]", root.display()));
    // Files written by bash are visible to the file tools and the reverse.
    let out = bash(&set, json!({"command": "echo from-bash > made.txt && mkdir -p d && echo x > d/y"})).await;
    assert!(out.content.ends_with("[exit code: 0]"), "{}", out.content);
    assert_eq!(std::fs::read_to_string(ws.join("made.txt")).unwrap(), "from-bash\n");
    let write = set.get("write_file").unwrap();
    write.call(json!({"path": "nested/by-tool.txt", "content": "v1"}), &ToolContext::new(Role::Owner, "1")).await;
    let out =
        bash(&set, json!({"command": "echo v2 > nested/by-tool.txt && touch nested/more && cat nested/by-tool.txt"}))
            .await;
    assert_eq!(out.content, "v2\n[exit code: 0]");
}

#[tokio::test]
async fn runs_tools_unprivileged_when_root() {
    if !is_root() {
        return;
    }
    let (_dir, ws) = workspace();
    let set = ToolSet::standard(ToolConfig::new(&ws));
    let out = bash(&set, json!({"command": "id -u; id -G; echo \"$HOME\" \"$USER\"; ulimit -u; ulimit -c"})).await;
    let lines: Vec<&str> = out.content.lines().collect();
    assert_ne!(lines[0], "0", "{}", out.content);
    assert!(!lines[1].split(' ').any(|g| g == "0"), "still in group root: {}", out.content);
    assert!(lines[2].ends_with(" nobody"), "{}", out.content);
    assert_eq!(lines[3], "1024", "process limit: {}", out.content);
    assert_eq!(lines[4], "0", "core limit: {}", out.content);

    let mut config = ToolConfig::new(&ws);
    config.tools_user = "no-such-user-baal".into();
    let out = bash(&ToolSet::standard(config), json!({"command": "id -u"})).await;
    assert!(out.is_error && out.content.contains("TOOLS_USER"), "{}", out.content);
    let mut config = ToolConfig::new(&ws);
    config.tools_user = "root".into();
    let out = bash(&ToolSet::standard(config), json!({"command": "id -u"})).await;
    assert!(out.is_error && out.content.contains("TOOLS_USER"), "{}", out.content);
}

/// A marker unique to this test process and `test`, for finding its processes in `/proc`.
fn marker(test: u32) -> String {
    format!("{test}.{}", std::process::id())
}

/// Waits until no process of the host has `needle` on its command line (the calls' pids are those
/// of their own namespaces, so tests look processes up by what they run).
async fn wait_none_with(needle: &str) -> bool {
    for _ in 0..200 {
        if processes_with(needle).iter().all(|pid| process_gone(*pid)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let (_dir, ws) = workspace();
    let set = ToolSet::standard(ToolConfig::new(&ws));
    let marker = marker(300);
    let command = format!("sleep {marker} & setsid sleep {marker} & sleep 301");
    let out = bash(&set, json!({"command": command, "timeout": 1})).await;
    assert!(out.is_error, "{}", out.content);
    assert!(out.content.contains("timed out after 1s"), "{}", out.content);
    assert!(wait_none_with(&format!("sleep {marker}")).await, "a sleep survived the timeout");
}

#[tokio::test]
async fn background_jobs_do_not_outlive_the_command() {
    let (_dir, ws) = workspace();
    let set = ToolSet::standard(ToolConfig::new(&ws));
    let marker = marker(301);
    let out = bash(&set, json!({"command": format!("sleep {marker} & echo started")})).await;
    assert!(!out.is_error, "{}", out.content);
    assert!(wait_none_with(&format!("sleep {marker}")).await, "the background sleep survived");
}

#[tokio::test]
async fn dropping_the_call_kills_the_child() {
    let (_dir, ws) = workspace();
    let set = ToolSet::standard(ToolConfig::new(&ws));
    let call_set = set.clone();
    let marker = marker(302);
    let command = format!("sleep {marker} & setsid sleep {marker} & wait");
    let task = tokio::spawn(async move { bash(&call_set, json!({ "command": command })).await });
    let needle = format!("sleep {marker}");
    for _ in 0..200 {
        if processes_with(&needle).len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(processes_with(&needle).len() >= 2, "bash never started its sleeps");
    task.abort();
    let _ = task.await;
    assert!(wait_none_with(&needle).await, "a sleep survived the dropped call");
}

#[tokio::test]
async fn output_is_bounded_head_and_tail() {
    let (_dir, ws) = workspace();
    let mut config = ToolConfig::new(&ws);
    config.max_output_bytes = 2000;
    let set = ToolSet::standard(config);
    let out =
        bash(&set, json!({"command": "echo FIRST; head -c 5000000 /dev/zero | tr '\\0' x; echo; echo LAST"})).await;
    assert!(out.content.len() <= 2200, "{}", out.content.len());
    assert!(out.content.starts_with("FIRST"), "{}", &out.content[..50]);
    assert!(out.content.contains("truncated"));
    assert!(out.content.ends_with("LAST\n[exit code: 0]"), "{}", &out.content[out.content.len() - 50..]);
}

#[tokio::test]
async fn bad_arguments_are_explained() {
    let (_dir, ws) = workspace();
    let set = ToolSet::standard(ToolConfig::new(&ws));
    let out = bash(&set, json!({})).await;
    assert!(out.is_error && out.content.contains("missing required parameter 'command'"), "{}", out.content);
    let out = bash(&set, json!({"command": "true", "timeout": "soon"})).await;
    assert!(out.is_error && out.content.contains("timeout"), "{}", out.content);
}

/// Runs [`secret_probe`] in a child test process whose environment holds a secret, as the
/// agent's would; the child asserts, so its success is the verdict. As root, it also runs the
/// probe as an unprivileged user: then the agent and its tools share a uid, and only
/// `harden_process` keeps `/proc/<agent>/environ` closed (the probe checks that it was open first).
#[test]
fn secrets_are_unreachable_from_bash() {
    run_probe(None);
    if is_root() {
        run_probe(Some(65534));
    }
}

fn run_probe(uid: Option<u32>) {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().unwrap();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["secret_probe", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(SECRET_VAR, SECRET_VALUE)
        .current_dir("/");
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid).env("BAAL_PROBE_SAME_USER", "1");
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "probe (uid {uid:?}) failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("1 passed"), "the probe did not run:\n{stdout}");
}

#[tokio::test]
#[ignore = "run by secrets_are_unreachable_from_bash in a child process holding a secret"]
async fn secret_probe() {
    assert_eq!(std::env::var(SECRET_VAR).as_deref(), Ok(SECRET_VALUE), "run through secrets_are_unreachable_from_bash");
    // An agent directory as the local deployer lays it out: the settings file (holding the
    // secret) beside the workspace, owned by the agent's user. Not under /tmp, which tools may read.
    let agent_dir = tempfile::tempdir_in("/var/tmp").unwrap();
    std::fs::set_permissions(agent_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let settings = agent_dir.path().join("settings.json");
    std::fs::write(&settings, format!("{{\"AGENT_SECRET\": \"{SECRET_VALUE}\"}}")).unwrap();
    std::fs::set_permissions(&settings, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ws = agent_dir.path().join("workspace");
    let set = ToolSet::standard(ToolConfig::new(&ws));
    let agent_pid = std::process::id();
    if std::env::var_os("BAAL_PROBE_SAME_USER").is_some() {
        // Control: without the sandbox, a same-user process reads both.
        let environ = std::process::Command::new("cat").arg(format!("/proc/{agent_pid}/environ")).output().unwrap();
        assert!(String::from_utf8_lossy(&environ.stdout).contains(SECRET_VALUE), "control read of environ failed");
        let file = std::process::Command::new("cat").arg(&settings).output().unwrap();
        assert!(String::from_utf8_lossy(&file.stdout).contains(SECRET_VALUE), "control read of settings failed");
    }
    sandbox::harden_process().unwrap();
    assert!(sandbox::is_hardened());
    let settings_abs = settings.display().to_string();
    for command in [
        "env".to_string(),
        "printenv".to_string(),
        "set".to_string(),
        "export -p".to_string(),
        "cat /proc/self/environ | tr '\\0' '\\n'".to_string(),
        "cat /proc/$$/environ | tr '\\0' '\\n'".to_string(),
        "cat /proc/$PPID/environ | tr '\\0' '\\n'".to_string(),
        format!("cat /proc/{agent_pid}/environ"),
        format!("head -c 100000 /proc/{agent_pid}/mem"),
        format!("grep -a {SECRET_VALUE} /proc/{agent_pid}/cmdline /proc/{agent_pid}/environ"),
        "for f in /proc/[0-9]*/environ; do cat \"$f\" 2>/dev/null; done | tr '\\0' '\\n'".to_string(),
        "cat ../settings.json".to_string(),
        "cat \"$HOME/../settings.json\"".to_string(),
        format!("cat {settings_abs}"),
        "cp ../settings.json copy.json; cat copy.json".to_string(),
        format!("python3 -c 'print(open(\"{settings_abs}\").read())'"),
    ] {
        let out = bash(&set, json!({ "command": command })).await;
        assert!(!out.content.contains(SECRET_VALUE), "`{command}` leaked the secret:\n{}", out.content);
    }
    // The probe itself works: a variable set by the command is visible, the workspace is writable.
    let out = bash(&set, json!({"command": "X=visible env | grep ^X=; echo ok > w.txt && cat w.txt"})).await;
    assert!(out.content.starts_with("X=visible\nok\n"), "{}", out.content);
    if landlock_abi() >= 6 {
        // Landlock scoping: tools cannot signal the agent, even as its own user.
        let out = bash(&set, json!({ "command": format!("kill -0 {agent_pid} && echo reached") })).await;
        assert!(!out.content.contains("reached"), "a tool process could signal the agent: {}", out.content);
    }
}

/// The kernel's Landlock ABI version (0 without Landlock).
fn landlock_abi() -> i64 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with the VERSION flag the call reads no memory and only returns the ABI version.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    abi.max(0)
}

#[tokio::test]
async fn tool_processes_write_only_the_workspace_and_scratch() {
    if landlock_abi() == 0 {
        return;
    }
    let (_dir, ws) = workspace();
    let set = ToolSet::standard(ToolConfig::new(&ws));
    let outside = tempfile::tempdir_in("/var/tmp").unwrap();
    std::fs::set_permissions(outside.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let target = outside.path().join("escaped.txt");
    let out = bash(&set, json!({ "command": format!("echo x > {}", target.display()) })).await;
    assert!(!target.exists(), "wrote outside the workspace: {}", out.content);
    let out = bash(&set, json!({"command": "t=$(mktemp) && echo scratch > \"$t\" && cat \"$t\" && rm \"$t\"; ls /usr > /dev/null && echo listed"})).await;
    assert!(out.content.starts_with("scratch\nlisted\n"), "{}", out.content);
}

/// An operator who installs Baal under `/opt` (the README's systemd layout) keeps its `.env`
/// there: tools cannot read it, even where Unix permissions would let them.
#[tokio::test]
async fn tools_cannot_read_the_operators_files_under_opt() {
    if landlock_abi() == 0 || !is_root() {
        return;
    }
    let (_dir, ws) = workspace();
    let set = ToolSet::standard(ToolConfig::new(&ws));
    let operator = tempfile::tempdir_in("/opt").unwrap();
    std::fs::set_permissions(operator.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let env_file = operator.path().join(".env");
    std::fs::write(&env_file, format!("TELEGRAM_BOT_TOKEN={SECRET_VALUE}\n")).unwrap();
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out =
        bash(&set, json!({ "command": format!("cat {}; ls {}", env_file.display(), operator.path().display()) })).await;
    assert!(!out.content.contains(SECRET_VALUE), "{}", out.content);
    assert!(out.content.contains("Permission denied"), "{}", out.content);
}

/// Each tool process may hold only so many files open and write only files so large
/// (`TOOLS_MAX_OPEN_FILES`, `TOOLS_MAX_FILE_SIZE_MIB`); a tool that tries more is told so.
#[tokio::test]
async fn tools_hit_their_open_file_and_file_size_limits() {
    let (_dir, ws) = workspace();
    let mut config = ToolConfig::new(&ws);
    config.max_open_files = 64;
    config.max_file_size_bytes = 1024 * 1024;
    let set = ToolSet::standard(config);
    let out = bash(
        &set,
        json!({"command": "ulimit -n; for i in $(seq 200); do exec {fd}</dev/null || { echo \"refused at $i\"; break; }; done"}),
    )
    .await;
    assert!(out.content.starts_with("64\n"), "{}", out.content);
    assert!(out.content.contains("refused at"), "{}", out.content);
    let out =
        bash(&set, json!({"command": "head -c 3M /dev/zero > big.bin; echo status=$?; stat -c %s big.bin"})).await;
    assert!(out.content.contains("File size limit exceeded") || out.content.contains("status=153"), "{}", out.content);
    assert!(out.content.contains("\n1048576\n"), "written only up to the limit: {}", out.content);
}

/// Whether this host lets a tool call have namespaces of its own: always as root, and for an
/// unprivileged user where user namespaces are allowed.
fn namespaces_available() -> bool {
    is_root() || std::process::Command::new("unshare").args(["-Ur", "true"]).status().is_ok_and(|s| s.success())
}

fn processes_with(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).replace('\0', " ").contains(needle) {
            found.push(pid);
        }
    }
    found
}

/// Each call is the first process of a PID namespace of its own, with the agent's scratch
/// directory as `/tmp`: what it starts (`setsid` included) ends with it.
#[tokio::test]
async fn each_call_has_a_pid_namespace_and_a_tmp_of_its_own() {
    if !namespaces_available() {
        eprintln!("SKIPPED: this host gives tool calls no namespaces");
        return;
    }
    let (_dir, ws) = workspace();
    let set = ToolSet::standard(ToolConfig::new(&ws));
    let marker = format!("4242.{}", std::process::id());
    let command = format!(
        "echo pid=$$; echo note > /tmp/note; echo tmpdir=$TMPDIR; \
         setsid sleep {marker} </dev/null >/dev/null 2>&1 & sleep 0.3; echo started"
    );
    let out = bash(&set, json!({ "command": command })).await;
    assert!(out.content.starts_with("pid=1\n"), "{}", out.content);
    assert!(out.content.contains("tmpdir=/tmp\nstarted"), "{}", out.content);
    assert_eq!(std::fs::read_to_string(ws.with_file_name("scratch").join("note")).unwrap(), "note\n");
    assert!(processes_with(&format!("sleep {marker}")).is_empty(), "the setsid process outlived its call");
    let out = bash(&set, json!({"command": "cat /tmp/note; echo hi | tr a-z A-Z; python3 -c 'print(6*7)'"})).await;
    assert_eq!(out.content, "note\nHI\n42\n[exit code: 0]", "{}", out.content);
}

/// As root with `TOOLS_NETWORK=isolated`, tools reach a server standing for the internet (in a
/// namespace of its own behind a veth pair) through slirp4netns, and nothing of the host: not its
/// loopback (directly or through slirp4netns's gateway), not its own addresses, not the metadata
/// range. Without root the same setting gives an empty network, and a failing command says so.
#[tokio::test]
async fn isolated_tools_reach_the_internet_but_not_the_host() {
    let (_dir, ws) = workspace();
    let mut config = ToolConfig::new(&ws);
    config.network = baal_core::agent_env::ToolsNetwork::Isolated;
    let host_service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host_service.local_addr().unwrap().port();
    let own_address = host_address();
    let set = ToolSet::standard(config);
    let probe = |target: String| format!("curl -sS -m 5 -o /dev/null -w '%{{http_code}}' {target} && echo reached");
    for target in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://10.0.2.2:{port}/"),
        "http://169.254.169.254/".to_owned(),
        format!("http://[::1]:{port}/"),
    ]
    .into_iter()
    .chain(own_address.map(|addr| format!("http://{addr}:{port}/")))
    {
        let out = bash(&set, json!({ "command": probe(target.clone()) })).await;
        assert!(!out.content.contains("reached"), "{target} was reachable: {}", out.content);
    }
    if !is_root() {
        let out = bash(&set, json!({ "command": probe("http://198.51.100.2/".into()) })).await;
        assert!(out.content.contains("[note: this agent's tools have no"), "{}", out.content);
        return;
    }
    if which("slirp4netns").is_none() || which("nft").is_none() {
        // `.ci/run` installs both and sets BAAL_REQUIRE_ISOLATION: there a missing one fails.
        assert!(std::env::var_os("BAAL_REQUIRE_ISOLATION").is_none(), "slirp4netns and nft are required here");
        eprintln!("SKIPPED the outbound half: slirp4netns and nftables are not installed (.ci/run installs them)");
        return;
    }
    let internet = match baal_core::testing::internet::InternetStandIn::start() {
        Ok(internet) => internet,
        Err(why) => panic!("the internet stand-in did not start: {why}"),
    };

    let out = bash(&set, json!({ "command": format!("curl -sS -m 5 http://{}/", internet.addr) })).await;
    assert!(out.content.contains(baal_core::testing::internet::GREETING), "{}", out.content);
    let out = bash(&set, json!({"command": "nft flush ruleset; echo rc=$?"})).await;
    assert!(!out.content.contains("rc=0"), "tools changed their deny list: {}", out.content);
}

fn which(program: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().map(|dir| PathBuf::from(dir).join(program)).find(|p| p.is_file())
}

/// One of the host's own non-loopback IPv4 addresses, if it has one.
fn host_address() -> Option<String> {
    let output = std::process::Command::new("hostname").arg("-I").output().ok()?;
    String::from_utf8_lossy(&output.stdout).split_whitespace().find(|a| a.contains('.')).map(str::to_owned)
}

/// A descriptor the agent holds without close-on-exec (inherited from its parent, say) never
/// reaches a tool.
#[tokio::test]
async fn tools_inherit_no_descriptor_but_stdio() {
    use std::os::fd::AsRawFd;
    let (_dir, ws) = workspace();
    let set = ToolSet::standard(ToolConfig::new(&ws));
    let file = std::fs::File::open("/etc/hostname").unwrap();
    // dup2 clears close-on-exec on the copy, as an inherited descriptor would be.
    // SAFETY: both descriptors are valid; 77 is closed again below.
    assert_eq!(unsafe { libc::dup2(file.as_raw_fd(), 77) }, 77);
    // `ls` lists its own descriptors: what bash had, plus the directory it reads (3).
    let out = bash(&set, json!({"command": "ls /proc/self/fd | tr '\\n' ' '"})).await;
    // SAFETY: 77 was made above.
    unsafe { libc::close(77) };
    assert!(out.content.starts_with("0 1 2 3 \n"), "{}", out.content);
}
