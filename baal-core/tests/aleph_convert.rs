//! Converting an agent imported from the Python Baal on its VM (`AlephDeployer::convert`): a
//! planted Python Baal VM (`testing::python_vm`: the Python agent's stand-in running from its
//! unit, its `.env`, history, workspace and Caddyfile) in a directory-tree "VM" behind a real
//! OpenSSH server that lets in only a "Python Baal" RSA key, found through a fake node's
//! executions list, and the real `baal-agent` shipped.
//!
//! Needs root and `/usr/sbin/sshd` (OpenSSH is what reads `authorized_keys`); without them each
//! test says so and passes, except under `CI=true`, where it fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use baal_core::agent_env::var;
use baal_core::deploy::aleph::sign::EthAccount;
use baal_core::deploy::aleph::{AlephConfig, AlephDeployer};
use baal_core::deploy::{AgentSpec, Deployer};
use baal_core::domain::Role;
use baal_core::domain::{AgentId, Deployment};
use baal_core::proxy::http::HttpProxy;
use baal_core::proxy::{AgentEndpoint, AgentEvent, ChatRequest, Proxy};
use baal_core::testing::aleph::{
    CrnBehaviour, FakeAleph, FakeCrn, MemoryPoolStore, RecordingReporter, loopback_timeouts,
};
use baal_core::testing::python_vm::{PythonAgent, PythonMessage, paths, python_history};
use baal_core::testing::ssh::{BROKEN_AGENT, Sshd, VmSandbox, free_port, write_ed25519_key, write_executable};
use futures_util::StreamExt as _;
use secrecy::SecretString;

/// Public Anvil/Hardhat dev key #0; never funded.
const DEV_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const SECRET: &str = "python-agent-bearer-secret";
const OWNER: &str = "4242";
const NAME: &str = "Ada Python";

/// A Python Baal VM on loopback: its instance known to the fake network and running on a fake
/// node whose executions list hands out the sshd's port, the sshd letting in the Python Baal's
/// RSA key only, the Python agent running from its unit.
struct PythonVm {
    aleph: FakeAleph,
    crn: FakeCrn,
    vm: VmSandbox,
    sshd: Sshd,
    hash: String,
    agent_port: u16,
    /// Baal's own key (ed25519), which the VM does not know yet.
    our_key: PathBuf,
    our_pubkey: String,
    agent_bin: PathBuf,
    _local: tempfile::TempDir,
}

impl PythonVm {
    async fn start() -> PythonVm {
        baal_core::install_crypto_provider();
        let vm = VmSandbox::new().unwrap();
        let sshd = Sshd::start_for_python_vm(&vm.file("root/.ssh/authorized_keys")).await.unwrap();
        let aleph = FakeAleph::start().await.unwrap();
        let crn = FakeCrn::start(&aleph, CrnBehaviour::Healthy, "127.0.0.1", sshd.port).await.unwrap();
        aleph.add_crn(&crn, 0.1);
        let account = EthAccount::from_hex(&SecretString::from(DEV_KEY)).unwrap();
        let hash = aleph.plant_instance(account.address(), "baal-agent-ada");
        crn.run_instance(&hash);
        let agent_port = free_port().unwrap();
        aleph.set_public_url(&format!("http://127.0.0.1:{agent_port}"));
        let python = PythonAgent::new(NAME, SECRET, OWNER, "127.0.0.1")
            .with_message(OWNER, "user", "Remember that my cat is called Miso.")
            .with_message(OWNER, "assistant", "Noted: your cat is Miso.")
            .with_message("777", "user", "Hello from a visitor")
            .with_file("memory/MEMORY.md", "# Memory\n\n- The owner's cat is Miso.\n")
            .with_file("memory/2026-12-01.md", "Talked about cats.\n")
            .with_file("skills/weather/SKILL.md", "# Weather\nUse wttr.in through bash.\n")
            .with_file("HEARTBEAT.md", "every 1h: check the weather\n");
        vm.plant_python_agent(&python, agent_port).unwrap();
        vm.systemctl(&["start", "baal-agent"]).unwrap();
        let local = tempfile::tempdir().unwrap();
        let our_key = local.path().join("baal_ed25519");
        let our_pubkey = write_ed25519_key(&our_key).unwrap();
        let explicit = std::env::var_os("BAAL_AGENT_BIN").map(PathBuf::from);
        let real = baal_core::deploy::local::find_agent_binary(explicit.as_deref())
            .unwrap_or_else(|err| panic!("{err} (for these tests: cargo build --workspace)"));
        let agent_bin = local.path().join("baal-agent");
        std::fs::copy(&real, &agent_bin).unwrap();
        let h = PythonVm { aleph, crn, vm, sshd, hash, agent_port, our_key, our_pubkey, agent_bin, _local: local };
        assert!(h.wait_healthy().await, "the planted Python agent did not start: {}", h.agent_log());
        h
    }

    fn config(&self, python_key: bool) -> AlephConfig {
        let mut config = AlephConfig::new(
            &self.aleph.url,
            self.aleph.crn_list_url(),
            &self.aleph.url,
            &self.our_pubkey,
            &self.our_key,
            &self.agent_bin,
        );
        config.python_ssh_key_path = python_key.then(|| self.sshd.client_key_path.clone());
        config.layout = self.vm.layout(self.agent_port);
        config.timeouts = loopback_timeouts();
        config
    }

    fn deployer(&self, python_key: bool) -> AlephDeployer {
        let account = EthAccount::from_hex(&SecretString::from(DEV_KEY)).unwrap();
        AlephDeployer::new(account, self.config(python_key), std::sync::Arc::new(MemoryPoolStore::new())).unwrap()
    }

    /// The imported agent as the platform hands it over: the Python Baal's facts, no SSH port.
    fn spec(&self) -> AgentSpec {
        let mut spec = AgentSpec::new(
            AgentId(12),
            NAME,
            "You are a helpful assistant.",
            "qwen3-coder-next",
            SecretString::from("sk-libertai-test"),
            "http://127.0.0.1:9/v1",
            SecretString::from(SECRET),
            OWNER,
        );
        let mut existing = Deployment::default();
        existing.instance_hash = Some(self.hash.clone());
        existing.crn_url = Some(self.crn.url.clone());
        existing.vm_url = Some(self.url());
        existing.vm_host = Some("127.0.0.1".into());
        spec.existing = existing;
        spec
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.agent_port)
    }

    async fn health(&self) -> Option<serde_json::Value> {
        let response = reqwest::get(format!("{}/health", self.url())).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    async fn wait_healthy(&self) -> bool {
        for _ in 0..100 {
            if self.health().await.is_some() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        false
    }

    /// One turn through the platform's own client; the text it answered.
    async fn chat(&self, chat_id: &str, message: &str) -> String {
        let proxy = HttpProxy::new().unwrap();
        let agent = AgentEndpoint::new(self.url(), SecretString::from(SECRET));
        let events: Vec<AgentEvent> =
            proxy.chat(&agent, ChatRequest::new(message, chat_id, Role::Owner)).await.collect().await;
        assert!(matches!(events.last(), Some(AgentEvent::Done { .. })), "{events:?}");
        events
            .iter()
            .filter_map(|e| match e {
                AgentEvent::Text { content } => Some(content.clone()),
                _ => None,
            })
            .collect()
    }

    fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.vm.file(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.vm.file("agent.log")).unwrap_or_default()
    }

    /// Every file under `dir`, by path relative to it, with its bytes.
    fn tree(&self, dir: &str) -> BTreeMap<String, Vec<u8>> {
        fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(base, &path, out);
                } else {
                    let relative = path.strip_prefix(base).unwrap().display().to_string();
                    out.insert(relative, std::fs::read(&path).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        let base = self.vm.file(dir);
        walk(&base, &base, &mut out);
        out
    }

    /// The Python agent's database files (`agent.db`, `-wal`), byte for byte.
    fn python_db_files(&self) -> BTreeMap<String, Vec<u8>> {
        ["", "-wal"]
            .iter()
            .filter_map(|suffix| {
                let name = format!("{}{suffix}", paths::DB);
                std::fs::read(self.vm.file(&name)).ok().map(|bytes| (name, bytes))
            })
            .collect()
    }
}

fn same_key(a: &str, b: &str) -> bool {
    let key = |line: &str| line.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    key(a) == key(b)
}

#[tokio::test]
async fn a_python_vm_is_converted_with_its_workspace_history_and_name_and_baals_key_installed() {
    if !Sshd::available_or_skip("converting") {
        return;
    }
    let h = PythonVm::start().await;
    // A turn through the platform's client before the conversion: the Python agent stores it.
    assert_eq!(h.chat(OWNER, "What is my cat called?").await, format!("{NAME} heard: What is my cat called?"));
    let history = python_history(&h.vm.file(paths::DB)).unwrap();
    assert_eq!(history.len(), 5);
    assert_eq!(history[4], PythonMessage::new(OWNER, "assistant", format!("{NAME} heard: What is my cat called?")));
    let python_unit = h.read(paths::UNIT);
    let python_caddyfile = h.read(paths::CADDYFILE);
    let python_workspace = h.tree(paths::WORKSPACE);

    let reporter = RecordingReporter::default();
    let facts = h.deployer(true).convert(&h.spec(), &reporter).await.unwrap_or_else(|e| {
        panic!("{e} ({:?})\n{}", e.detail, h.agent_log());
    });

    // The facts: the SSH port looked up on the node, the host key pinned, the same URL.
    assert_eq!(facts.ssh_port, Some(h.sshd.port));
    assert_eq!(facts.vm_host.as_deref(), Some("127.0.0.1"));
    assert_eq!(facts.instance_hash.as_deref(), Some(h.hash.as_str()));
    assert_eq!(facts.vm_url, Some(h.url()));
    assert!(same_key(facts.ssh_host_key.as_deref().unwrap(), &h.sshd.host_key));
    assert_eq!(reporter.stored(), facts);
    let log = reporter.log();
    assert_eq!(log[..2], ["start reach".to_string(), "facts".to_string()], "the port is stored first: {log:?}");
    assert_eq!(reporter.facts()[0].ssh_port, Some(h.sshd.port));
    for step in ["reach", "handover", "ship", "check"] {
        assert!(log.contains(&format!("done {step}")), "{step} not done: {log:?}");
    }

    // Our real agent answers under the same name; the Caddyfile serves the Python agent's host.
    let health = h.health().await.expect("our agent answers");
    assert_eq!(health["agent_name"], NAME);
    assert_eq!(
        h.read("etc/caddy/Caddyfile"),
        format!("127.0.0.1 {{\n\treverse_proxy 127.0.0.1:{}\n}}\n", h.agent_port)
    );
    assert!(h.read(paths::UNIT).contains("User="), "our hardened unit runs the agent");

    // Baal's key is in root's authorized_keys, once.
    let authorized = h.read("root/.ssh/authorized_keys");
    let ours = h.our_pubkey.split_whitespace().nth(1).unwrap();
    assert_eq!(authorized.matches(ours).count(), 1, "{authorized}");

    // The workspace, copied (and still in place), and the history with the last turn.
    let ours_workspace = h.tree("var/lib/baal-agent/workspace");
    for (path, bytes) in &python_workspace {
        assert_eq!(ours_workspace.get(path), Some(bytes), "{path}");
    }
    assert_eq!(h.tree(paths::WORKSPACE), python_workspace);
    let copied = h.vm.file("var/lib/baal-agent/python-agent.db");
    assert_eq!(python_history(&copied).unwrap(), history);
    let settings = baal_core::env::read_file(&h.vm.file("etc/baal/agent.env")).unwrap();
    assert_eq!(settings[var::PYTHON_AGENT_DB], copied.display().to_string());

    // The Python agent's files are kept: its unit and Caddyfile beside ours, its database.
    assert_eq!(h.read("etc/systemd/system/baal-agent.service.python"), python_unit);
    assert_eq!(h.read("etc/caddy/Caddyfile.python"), python_caddyfile);
    assert_eq!(python_history(&h.vm.file(paths::DB)).unwrap(), history);
    assert!(h.vm.systemctl_calls().contains("stop baal-agent"));

    // From now on Baal's key alone logs in: a repair by a deployer without the Python key.
    let mut spec = h.spec();
    spec.existing = facts.clone();
    let repaired = h.deployer(false).repair(&spec, &RecordingReporter::default()).await.unwrap();
    assert_eq!(repaired.deployment, facts);
    assert_eq!(h.health().await.unwrap()["agent_name"], NAME);

    // Converting again changes nothing of what the agent has become.
    let again = h.deployer(false).convert(&spec, &RecordingReporter::default()).await.unwrap();
    assert_eq!(again, facts);
    assert_eq!(h.read("etc/systemd/system/baal-agent.service.python"), python_unit);

    // A later attempt that fails (a broken release) never puts the Python agent back over ours:
    // the history since the conversion is our agent's alone.
    write_executable(&h.agent_bin, BROKEN_AGENT).unwrap();
    let err = h.deployer(false).convert(&spec, &RecordingReporter::default()).await.unwrap_err();
    assert!(err.message.contains("converted before, so its previous version runs again"), "{err}");
    assert!(h.read(paths::UNIT).contains("User="), "our unit stays");
    assert_eq!(h.health().await.expect("our previous version answers")["agent_name"], NAME);
    assert_eq!(h.read("etc/systemd/system/baal-agent.service.python"), python_unit);
}

#[tokio::test]
async fn a_conversion_whose_agent_fails_its_health_check_puts_the_python_agent_back() {
    if !Sshd::available_or_skip("converting") {
        return;
    }
    let h = PythonVm::start().await;
    h.chat(OWNER, "Before the conversion").await;
    write_executable(&h.agent_bin, BROKEN_AGENT).unwrap();
    let python_unit = h.read(paths::UNIT);
    let python_caddyfile = h.read(paths::CADDYFILE);
    let python_workspace = h.tree(paths::WORKSPACE);
    let python_db = h.python_db_files();
    assert!(python_db.contains_key(&format!("{}-wal", paths::DB)), "the last turns are in the -wal");
    let history = python_history(&h.vm.file(paths::DB)).unwrap();

    let reporter = RecordingReporter::default();
    let err = h.deployer(true).convert(&h.spec(), &reporter).await.unwrap_err();
    assert_eq!(err.step, "check", "{err}");
    assert!(err.message.contains("did not answer its health check"), "the cause: {err}");
    assert!(err.message.contains("left as it was: the Python agent runs again"), "{err}");

    // The Python agent answers again, from its own unit, with every file as it was.
    assert_eq!(h.health().await.expect("the Python agent answers")["agent_name"], NAME);
    assert_eq!(h.read(paths::UNIT), python_unit);
    assert_eq!(h.read(paths::CADDYFILE), python_caddyfile);
    assert!(!h.vm.file("etc/systemd/system/baal-agent.service.python").exists());
    assert_eq!(h.tree(paths::WORKSPACE), python_workspace);
    assert_eq!(h.python_db_files(), python_db, "not a byte of its database changed");
    assert_eq!(python_history(&h.vm.file(paths::DB)).unwrap(), history);
    assert_eq!(h.chat(OWNER, "After the rollback").await, format!("{NAME} heard: After the rollback"));
    // The facts learnt on the way are kept: the next try goes straight to the VM.
    assert_eq!(reporter.stored().ssh_port, Some(h.sshd.port));
}

#[tokio::test]
async fn without_the_python_baals_key_a_refused_login_says_which_setting_to_set() {
    if !Sshd::available_or_skip("converting") {
        return;
    }
    let h = PythonVm::start().await;
    let reporter = RecordingReporter::default();
    let err = h.deployer(false).convert(&h.spec(), &reporter).await.unwrap_err();
    assert_eq!(err.step, "reach");
    assert!(err.message.contains("PYTHON_SSH_PRIVKEY_PATH"), "{err}");
    assert!(!err.retryable);
    // Nothing changed on the VM; the port found on the node is stored.
    assert_eq!(reporter.stored().ssh_port, Some(h.sshd.port));
    assert!(!h.vm.systemctl_calls().contains("stop"));
    assert!(!h.read("root/.ssh/authorized_keys").contains(h.our_pubkey.split_whitespace().nth(1).unwrap()));
    assert_eq!(h.health().await.unwrap()["agent_name"], NAME);
}

/// A VM where no Python agent is left (its directory gone): the conversion stops before it
/// changes anything, touches no unit, and says so rather than claiming to have put it back.
#[tokio::test]
async fn a_vm_without_a_python_agent_is_left_untouched_and_the_error_says_so() {
    if !Sshd::available_or_skip("converting") {
        return;
    }
    let h = PythonVm::start().await;
    h.vm.systemctl(&["stop", "baal-agent"]).unwrap();
    std::fs::remove_dir_all(h.vm.file(paths::VENV)).unwrap();
    let unit = h.read(paths::UNIT);
    let calls_before = h.vm.systemctl_calls();
    let err = h.deployer(true).convert(&h.spec(), &RecordingReporter::default()).await.unwrap_err();
    assert!(err.message.contains("no Python Baal agent on this VM"), "{err}");
    assert!(err.message.contains("nothing on the VM was changed"), "{err}");
    assert!(!err.message.contains("runs again"), "{err}");
    assert_eq!(h.read(paths::UNIT), unit, "the unit is as it was");
    let calls = h.vm.systemctl_calls();
    let since = &calls[calls_before.len()..];
    assert!(!since.contains("restart") && !since.contains("start"), "nothing was (re)started: {since}");
}

/// Older `ssh-keygen` wrote RSA keys in PEM (`BEGIN RSA PRIVATE KEY`): the Python Baal's key
/// loads in that format too, and a key that is not one says which setting is wrong.
#[tokio::test]
async fn the_python_baals_key_loads_in_pem_format_and_a_bad_one_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("id_rsa");
    if baal_core::testing::ssh::keygen_with(&pem, &["-t", "rsa", "-b", "2048", "-m", "PEM"]).await.is_err() {
        eprintln!("skipped: ssh-keygen is not installed");
        return;
    }
    assert!(std::fs::read_to_string(&pem).unwrap().starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let ours = dir.path().join("ours");
    let our_pubkey = write_ed25519_key(&ours).unwrap();
    let account = || EthAccount::from_hex(&SecretString::from(DEV_KEY)).unwrap();
    let store = || std::sync::Arc::new(MemoryPoolStore::new());
    let mut config =
        AlephConfig::new("http://127.0.0.1:9", "http://127.0.0.1:9", "http://127.0.0.1:9", our_pubkey, &ours, "x");
    config.python_ssh_key_path = Some(pem);
    AlephDeployer::new(account(), config.clone(), store()).unwrap();
    let garbage = dir.path().join("not-a-key");
    std::fs::write(&garbage, "hello").unwrap();
    config.python_ssh_key_path = Some(garbage);
    let err = AlephDeployer::new(account(), config, store()).unwrap_err();
    assert!(err.message.starts_with("PYTHON_SSH_PRIVKEY_PATH"), "{err}");
}
