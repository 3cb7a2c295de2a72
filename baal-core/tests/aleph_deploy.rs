//! The Aleph deployer end to end against loopback fakes of the CCN, CRN list, CRNs and 2n6.me
//! gateway, and a real OpenSSH server whose "VM" is a directory tree with stand-ins for
//! `systemctl` and `apt-get`. Skipped (with a message) where `sshd` is missing or not root.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use baal_core::agent_env::{AgentDefaults, AgentEnv, var};
use baal_core::deploy::aleph::sign::EthAccount;
use baal_core::deploy::aleph::{AlephConfig, AlephDeployer};
use baal_core::deploy::local::LocalDeployer;
use baal_core::deploy::{AgentSpec, DeployError, Deployer};
use baal_core::domain::{AgentId, Deployment};
use baal_core::testing::aleph::{
    CrnBehaviour, FakeAleph, FakeCrn, MemoryPoolStore, RecordingReporter, RefusalShape, loopback_timeouts,
};
use baal_core::testing::ssh::{
    BROKEN_AGENT, RusshServer, STANDIN_AGENT, SshTarget, VmSandbox, free_port, write_ed25519_key, write_executable,
};
use secrecy::SecretString;

/// Public Anvil/Hardhat dev key #0; never funded.
const DEV_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

struct Harness {
    aleph: FakeAleph,
    crns: Vec<FakeCrn>,
    sshd: SshTarget,
    vm: VmSandbox,
    agent_bin: PathBuf,
    agent_port: u16,
    store: Arc<MemoryPoolStore>,
    _local: tempfile::TempDir,
}

impl Harness {
    /// CRNs are listed in the given order (the first is tried first); every healthy one hands
    /// out the loopback sshd (or `ssh_port` when given).
    async fn start(behaviours: &[CrnBehaviour], ssh_port: Option<u16>) -> Harness {
        Harness::start_on(SshTarget::start().await.unwrap(), behaviours, ssh_port).await
    }

    async fn start_on(sshd: SshTarget, behaviours: &[CrnBehaviour], ssh_port: Option<u16>) -> Harness {
        let nodes: Vec<(CrnBehaviour, Option<u16>)> = behaviours.iter().map(|b| (*b, ssh_port)).collect();
        Harness::start_nodes(sshd, &nodes).await
    }

    /// Like [`Harness::start`], each CRN handing out its own SSH port (`None`: the sshd's).
    async fn start_nodes(sshd: SshTarget, nodes: &[(CrnBehaviour, Option<u16>)]) -> Harness {
        let aleph = FakeAleph::start().await.unwrap();
        let mut crns = Vec::new();
        for (i, (behaviour, ssh_port)) in nodes.iter().enumerate() {
            let crn = FakeCrn::start(&aleph, *behaviour, "127.0.0.1", ssh_port.unwrap_or(sshd.port())).await.unwrap();
            aleph.add_crn(&crn, 0.1 * (i as f64 + 1.0));
            crns.push(crn);
        }
        let agent_port = free_port().unwrap();
        aleph.set_public_url(&format!("http://127.0.0.1:{agent_port}"));
        let local = tempfile::tempdir().unwrap();
        let agent_bin = local.path().join("baal-agent");
        write_executable(&agent_bin, STANDIN_AGENT).unwrap();
        Harness {
            aleph,
            crns,
            sshd,
            vm: VmSandbox::new().unwrap(),
            agent_bin,
            agent_port,
            store: Arc::new(MemoryPoolStore::new()),
            _local: local,
        }
    }

    fn config(&self) -> AlephConfig {
        let mut config = AlephConfig::new(
            &self.aleph.url,
            self.aleph.crn_list_url(),
            &self.aleph.url,
            self.sshd.client_pubkey(),
            self.sshd.client_key_path(),
            &self.agent_bin,
        );
        config.layout = self.vm.layout(self.agent_port);
        config.timeouts = loopback_timeouts();
        config
    }

    fn deployer(&self, config: AlephConfig) -> AlephDeployer {
        let account = EthAccount::from_hex(&SecretString::from(DEV_KEY)).unwrap();
        AlephDeployer::new(account, config, self.store.clone()).unwrap()
    }

    fn seen_env(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.vm.file("var/lib/baal-agent/seen-env.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

fn spec(name: &str, prompt: &str) -> AgentSpec {
    AgentSpec::new(
        AgentId(1),
        name,
        prompt,
        "qwen3-coder-next",
        SecretString::from("sk-libertai-test"),
        "http://127.0.0.1:9/v1",
        SecretString::from("agent-bearer-secret"),
        "4242",
    )
}

async fn agent_healthy(port: u16) -> bool {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/health")).await;
    response.is_ok_and(|r| r.status().is_success())
}

fn same_key(a: &str, b: &str) -> bool {
    let key = |line: &str| line.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    key(a) == key(b)
}

#[tokio::test]
async fn whole_path_deploy_redeploy_destroy() {
    whole_path(Harness::start(&[CrnBehaviour::Healthy], None).await).await;
}

/// The same path against the in-process russh server (what runs where OpenSSH is absent).
#[tokio::test]
async fn whole_path_against_the_in_process_russh_server() {
    let target = SshTarget::Russh(RusshServer::start().await.unwrap());
    whole_path(Harness::start_on(target, &[CrnBehaviour::Healthy], None).await).await;
}

async fn whole_path(h: Harness) {
    h.aleph.answer_pending_first(true);
    let deployer = h.deployer(h.config());
    let name = "Ada \"the\" $(reboot) `id`\nagent";
    let prompt = "Be helpful.\nNever run $(rm -rf /) or `id`; quote \"this\" and 'that' \\ too.";
    let reporter = RecordingReporter::default();
    let facts = deployer.deploy(&spec(name, prompt), &reporter).await.unwrap();

    // The hash was stored before anything was posted.
    let log = reporter.log();
    assert_eq!(log[..2], ["start provision".to_string(), "facts".to_string()], "{log:?}");
    assert!(reporter.facts()[0].instance_hash.is_some());
    for step in ["provision", "allocate", "ship", "start", "health", "https"] {
        assert!(log.contains(&format!("done {step}")), "{step} not done: {log:?}");
    }
    let hash = facts.instance_hash.clone().unwrap();
    assert_eq!(h.aleph.live_instances(), vec![hash.clone()]);
    let instance = &h.aleph.messages()[&hash];
    assert_eq!(instance.content["requirements"]["node"]["node_hash"], h.crns[0].hash.as_str());
    assert_eq!(instance.content["metadata"]["name"], format!("baal-agent-{name}"));
    assert_eq!(h.crns[0].notified(), vec![hash.clone()]);
    assert_eq!(facts.crn_url.as_deref(), Some(h.crns[0].url.as_str()));
    assert_eq!(facts.ssh_port, Some(h.sshd.port()));
    assert!(same_key(facts.ssh_host_key.as_deref().unwrap(), h.sshd.host_key()));
    assert_eq!(facts.vm_url, Some(format!("http://127.0.0.1:{}", h.agent_port)));
    assert_eq!(reporter.stored(), facts);

    // What the agent received is exactly what the user typed; nothing was executed.
    let seen = h.seen_env();
    assert_eq!(seen["AGENT_NAME"], name);
    assert_eq!(seen["SYSTEM_PROMPT"], prompt);
    assert_eq!(seen["OWNER_CHAT_ID"], "4242");
    use std::os::unix::fs::PermissionsExt as _;
    let env_mode = std::fs::metadata(h.vm.file("etc/baal/agent.env")).unwrap().permissions().mode();
    assert_eq!(env_mode & 0o777, 0o600);
    let unit = std::fs::read_to_string(h.vm.file("etc/systemd/system/baal-agent.service")).unwrap();
    assert!(unit.contains("NoNewPrivileges=yes") && unit.contains("ProtectSystem=strict"));
    let caddyfile = std::fs::read_to_string(h.vm.file("etc/caddy/Caddyfile")).unwrap();
    assert!(caddyfile.contains(&format!("reverse_proxy 127.0.0.1:{}", h.agent_port)));
    assert!(std::fs::read_to_string(h.vm.file("apt-get.log")).unwrap().contains("install -y -qq caddy"));
    assert!(h.vm.systemctl_calls().contains("restart baal-agent"));
    assert!(agent_healthy(h.agent_port).await);

    // Redeploy: new settings, restarted (not merely started), healthy.
    let mut update = spec(name, "A new personality.");
    update.existing = facts.clone();
    let reporter = RecordingReporter::default();
    let again = deployer.redeploy(&update, &reporter).await.unwrap();
    assert_eq!(again, facts);
    assert_eq!(h.seen_env()["SYSTEM_PROMPT"], "A new personality.");
    assert_eq!(h.vm.systemctl_calls().matches("restart baal-agent").count(), 2);
    assert_eq!(h.aleph.live_instances(), vec![hash.clone()], "a redeploy creates no VM");

    // Teardown: FORGET, then an authenticated erase on the node.
    let reporter = RecordingReporter::default();
    deployer.destroy(AgentId(1), &facts, &reporter).await.unwrap();
    assert!(h.aleph.live_instances().is_empty());
    assert_eq!(h.aleph.messages()[&hash].status, "forgotten");
    assert_eq!(h.crns[0].erased(), vec![hash]);
    assert_eq!(reporter.log(), ["start forget", "done forget", "start erase", "done erase"]);
}

#[tokio::test]
async fn a_node_that_times_out_is_blacklisted_and_the_next_one_used() {
    let h = Harness::start(&[CrnBehaviour::Hang, CrnBehaviour::Healthy], None).await;
    let deployer = h.deployer(h.config());
    let facts = deployer.deploy(&spec("a", "p"), &RecordingReporter::default()).await.unwrap();
    let hash = facts.instance_hash.unwrap();
    assert_eq!(facts.crn_url.as_deref(), Some(h.crns[1].url.as_str()));
    // The instance pinned to the hanging node was forgotten; only the running one is billed.
    assert_eq!(h.aleph.live_instances(), vec![hash]);
    let pinned_to = |crn: &FakeCrn| {
        h.aleph
            .messages()
            .values()
            .filter(|m| {
                m.message_type == "INSTANCE" && m.content["requirements"]["node"]["node_hash"] == crn.hash.as_str()
            })
            .count()
    };
    assert_eq!(pinned_to(&h.crns[0]), 1);

    // Blacklisted: the next deployment goes straight to the healthy node.
    let mut second = spec("b", "p");
    second.agent_id = AgentId(2);
    let reporter = RecordingReporter::default();
    let _ = deployer.deploy(&second, &reporter).await;
    assert_eq!(pinned_to(&h.crns[0]), 1);
    assert_eq!(pinned_to(&h.crns[1]), 2);
}

/// How long a deployer facing a refusal is configured to wait for its message; the refusal must
/// end the wait well before (see [`HANG_GUARD`]).
const REFUSAL_WAIT: Duration = Duration::from_secs(60);
/// A hang guard, not a timing assertion: a deployer that waited the refused message out would
/// still be waiting when this runs out.
const HANG_GUARD: Duration = Duration::from_secs(30);

/// A deployer whose CCN refuses in `shape` (answering `202 pending` first when `pending_first`,
/// as a busy public CCN does), with one healthy CRN. Nothing a refusal leads to reaches SSH.
struct Refusing {
    aleph: FakeAleph,
    crn: FakeCrn,
    deployer: AlephDeployer,
    _keys: tempfile::TempDir,
}

impl Refusing {
    async fn start(shape: RefusalShape, pending_first: bool) -> Refusing {
        let keys = tempfile::tempdir().unwrap();
        let key_path = keys.path().join("id");
        let pubkey = write_ed25519_key(&key_path).unwrap();
        let aleph = FakeAleph::start().await.unwrap();
        aleph.refuse_like(shape);
        aleph.answer_pending_first(pending_first);
        let crn = FakeCrn::start(&aleph, CrnBehaviour::Healthy, "127.0.0.1", 1).await.unwrap();
        aleph.add_crn(&crn, 0.1);
        let mut config =
            AlephConfig::new(&aleph.url, aleph.crn_list_url(), &aleph.url, pubkey, &key_path, keys.path().join("bin"));
        config.timeouts = loopback_timeouts();
        config.timeouts.message = REFUSAL_WAIT;
        let account = EthAccount::from_hex(&SecretString::from(DEV_KEY)).unwrap();
        let deployer = AlephDeployer::new(account, config, Arc::new(MemoryPoolStore::new())).unwrap();
        Refusing { aleph, crn, deployer, _keys: keys }
    }

    /// Deploys, expecting a refusal before the hang guard; checks that nothing is left behind.
    async fn refused(&self) -> DeployError {
        let reporter = RecordingReporter::default();
        let agent = spec("a", "p");
        let err = tokio::time::timeout(HANG_GUARD, self.deployer.deploy(&agent, &reporter))
            .await
            .expect("the refusal was waited out instead of reported")
            .unwrap_err();
        assert_eq!(err.step, "provision", "{err}");
        // The hash was recorded before posting, then cleared: no VM to remember, none billed.
        let facts = reporter.facts();
        let hash = facts[0].instance_hash.clone().expect("the hash is stored before posting");
        assert_eq!(reporter.stored(), Deployment::default(), "no VM to remember");
        assert_eq!(self.aleph.messages()[&hash].status, "rejected");
        assert!(self.aleph.live_instances().is_empty());
        assert!(self.crn.notified().is_empty(), "nothing was started");
        assert!(!self.aleph.messages().values().any(|m| m.message_type == "FORGET"), "nothing to forget");
        err
    }
}

fn assert_credit_text(err: &DeployError, need: &str, have: &str) {
    let owner = &err.message;
    assert!(owner.contains("short of credits"), "{owner}");
    assert!(owner.contains(&format!("costs {need} credits")), "{owner}");
    assert!(owner.contains(&format!("holds {have}")), "{owner}");
    assert!(owner.contains("on Baal's side, not yours") && owner.contains("top up the wallet"), "{owner}");
    assert!(!err.retryable, "retrying before the top-up cannot help");
    let operator = err.detail.as_deref().unwrap_or_default();
    assert!(operator.contains("too few Aleph credits") && operator.contains("ALEPH_PRIVATE_KEY"), "{operator}");
}

fn assert_malformed_text(err: &DeployError) {
    assert!(err.message.contains("refused Baal's request for a VM as malformed"), "{err}");
    assert!(err.message.contains("on Baal's side, not yours"), "{err}");
    assert!(!err.retryable);
    // The network's own reason reaches the operator, whichever shape carried it.
    let operator = err.detail.as_deref().unwrap_or_default();
    assert!(operator.contains("schema") && operator.contains("metadata"), "{operator}");
}

/// heph: 422 with the reason in the answer, and no record to poll afterwards.
#[tokio::test]
async fn a_credit_refusal_in_heph_shape_is_reported_at_once_with_the_amounts() {
    let r = Refusing::start(RefusalShape::Heph, false).await;
    r.aleph.set_credits(1234);
    let err = r.refused().await;
    assert_credit_text(&err, "342000.00", "1234");
    let hash = r.aleph.messages().into_keys().next().unwrap();
    let record = reqwest::get(format!("{}/api/v0/messages/{hash}", r.aleph.url)).await.unwrap();
    assert_eq!(record.status(), 404, "heph keeps no record of a refusal");
}

/// pyaleph answering a waiting POST: 422 `rejected`, the reason only in the record.
#[tokio::test]
async fn a_credit_refusal_answered_by_pyaleph_is_reported_from_its_record() {
    let r = Refusing::start(RefusalShape::Pyaleph, false).await;
    r.aleph.set_credits(1234);
    assert_credit_text(&r.refused().await, "342000", "1234");
}

/// A busy public CCN: 202 pending, the record pending at first, then rejected.
#[tokio::test]
async fn a_credit_refusal_found_while_polling_a_public_ccn_is_reported() {
    let r = Refusing::start(RefusalShape::Pyaleph, true).await;
    r.aleph.set_credits(0);
    assert_credit_text(&r.refused().await, "342000", "0");
}

#[tokio::test]
async fn an_invalid_message_in_heph_shape_is_reported_at_once() {
    let r = Refusing::start(RefusalShape::Heph, false).await;
    r.aleph.forbid_instance_key("metadata");
    let err = r.refused().await;
    assert_malformed_text(&err);
    assert!(err.detail.unwrap().contains("unknown field `metadata`"), "heph's words reach the operator");
}

#[tokio::test]
async fn an_invalid_message_found_while_polling_a_public_ccn_is_reported() {
    let r = Refusing::start(RefusalShape::Pyaleph, true).await;
    r.aleph.forbid_instance_key("metadata");
    let err = r.refused().await;
    assert_malformed_text(&err);
    assert!(err.detail.unwrap().contains("extra_forbidden"), "pyaleph's details reach the operator");
}

#[tokio::test]
async fn ssh_refused_fails_the_ship_step_and_delete_still_finds_the_vm() {
    let closed = free_port().unwrap();
    let h = Harness::start(&[CrnBehaviour::Healthy], Some(closed)).await;
    let deployer = h.deployer(h.config());
    let reporter = RecordingReporter::default();
    let err = deployer.deploy(&spec("a", "p"), &reporter).await.unwrap_err();
    assert_eq!(err.step, "ship");
    assert!(err.message.contains("SSH"), "{err}");
    let stored = reporter.stored();
    assert!(stored.instance_hash.is_some() && stored.vm_host.is_some());
    deployer.destroy(AgentId(1), &stored, &RecordingReporter::default()).await.unwrap();
    assert!(h.aleph.live_instances().is_empty());
}

#[tokio::test]
async fn a_changed_host_key_is_refused() {
    let h = Harness::start(&[CrnBehaviour::Healthy], None).await;
    let deployer = h.deployer(h.config());
    let facts = deployer.deploy(&spec("a", "p"), &RecordingReporter::default()).await.unwrap();
    let impostor = RusshServer::start().await.unwrap();
    let mut update = spec("a", "p2");
    update.existing = facts;
    update.existing.ssh_host_key = Some(impostor.host_key.clone());
    let err = deployer.redeploy(&update, &RecordingReporter::default()).await.unwrap_err();
    assert!(err.message.contains("different SSH host key"), "{err}");
    assert!(!err.retryable);
    assert_eq!(h.seen_env()["SYSTEM_PROMPT"], "p", "nothing was shipped");
}

#[tokio::test]
async fn a_release_failing_its_health_check_is_rolled_back() {
    let h = Harness::start(&[CrnBehaviour::Healthy], None).await;
    let deployer = h.deployer(h.config());
    let facts = deployer.deploy(&spec("a", "first"), &RecordingReporter::default()).await.unwrap();
    write_executable(&h.agent_bin, BROKEN_AGENT).unwrap();
    let mut update = spec("a", "second");
    update.existing = facts;
    let err = deployer.redeploy(&update, &RecordingReporter::default()).await.unwrap_err();
    assert_eq!(err.step, "health");
    assert!(err.message.contains("previous version is running again"), "{err}");
    assert!(agent_healthy(h.agent_port).await);
    assert_eq!(h.seen_env()["SYSTEM_PROMPT"], "first", "the previous settings came back too");
    let running = std::fs::read_to_string(h.vm.file("opt/baal/baal-agent")).unwrap();
    assert_eq!(running, STANDIN_AGENT);
}

#[tokio::test]
async fn a_crash_between_steps_leaves_a_vm_that_delete_finds_and_repair_resumes() {
    let h = Harness::start(&[CrnBehaviour::Healthy], None).await;
    let deployer = h.deployer(h.config());
    // The platform stops after storing the instance hash (the second facts call fails).
    let crashed = RecordingReporter::failing_from(2);
    deployer.deploy(&spec("a", "p"), &crashed).await.unwrap_err();
    let stored = crashed.stored();
    let hash = stored.instance_hash.clone().unwrap();
    assert!(stored.vm_host.is_none());
    assert_eq!(h.aleph.live_instances(), vec![hash.clone()]);

    // Repair resumes from the stored facts on the same VM.
    let mut repair = spec("a", "p");
    repair.existing = stored.clone();
    let facts = deployer.deploy(&repair, &RecordingReporter::default()).await.unwrap();
    assert_eq!(facts.instance_hash.as_deref(), Some(hash.as_str()));
    assert_eq!(h.aleph.live_instances(), vec![hash.clone()]);

    // Delete from the facts stored before the crash alone.
    deployer.destroy(AgentId(1), &stored, &RecordingReporter::default()).await.unwrap();
    assert!(h.aleph.live_instances().is_empty());
    assert_eq!(h.crns[0].erased(), vec![hash]);
}

/// The real `baal-agent` (built by `cargo build --workspace`), shipped and started like on a VM,
/// and the same spec deployed by the local deployer: both write the one environment `AgentEnv`
/// builds (only where the agent lives differs), and both agents read it.
#[tokio::test]
async fn both_deployers_write_one_environment_and_real_agents_read_it() {
    let explicit = std::env::var_os("BAAL_AGENT_BIN").map(PathBuf::from);
    let real = baal_core::deploy::local::find_agent_binary(explicit.as_deref())
        .unwrap_or_else(|err| panic!("{err} (for these tests: cargo build --workspace)"));
    let defaults = AgentDefaults::default()
        .with_heartbeat_interval(std::time::Duration::from_secs(7))
        .with_brave_api_key(Some(SecretString::from("brave-key")));
    let name = "Real \"agent\" $(id)\nsecond line";
    let agent_spec = spec(name, "Be brief.\nReally. `id` \\n $HOME");

    let h = Harness::start(&[CrnBehaviour::Healthy], None).await;
    std::fs::copy(&real, &h.agent_bin).unwrap();
    let mut config = h.config();
    config.agent_defaults = defaults.clone();
    let aleph = h.deployer(config);
    let facts = aleph.deploy(&agent_spec, &RecordingReporter::default()).await.unwrap();

    let data = tempfile::tempdir().unwrap();
    let local = LocalDeployer::new(data.path(), &real).unwrap().with_agent_defaults(defaults.clone());
    let local_facts = local.deploy(&agent_spec, &RecordingReporter::default()).await.unwrap();

    for url in [facts.vm_url.clone().unwrap(), local_facts.vm_url.clone().unwrap()] {
        let health: serde_json::Value = reqwest::get(format!("{url}/health")).await.unwrap().json().await.unwrap();
        assert_eq!(health["status"], "ok", "{url}");
        assert_eq!(health["agent_name"], name, "{url}");
    }

    let on_vm = baal_core::env::read_file(&h.vm.file("etc/baal/agent.env")).unwrap();
    let local_dir = local.agent_dir(AgentId(1));
    let on_host = baal_core::env::read_file(&local_dir.join("settings.json")).unwrap();
    let vm_data = h.vm.file("var/lib/baal-agent");
    let port: u16 = url_port(facts.vm_url.as_deref().unwrap());
    let local_port: u16 = url_port(local_facts.vm_url.as_deref().unwrap());
    let on_vm_expected = AgentEnv::new(&agent_spec, &defaults, port, &vm_data);
    // A local agent's tools never share the host's network; without cgroup limits they get rlimits.
    let mut on_host_expected = AgentEnv::new(&agent_spec, &defaults, local_port, &local_dir)
        .with_tools_network(baal_core::agent_env::ToolsNetwork::Isolated);
    if local.isolation().limit_mechanism().is_none() {
        let limits = baal_core::deploy::isolation::AgentLimits::default();
        on_host_expected = on_host_expected.with_tools_rlimits(limits.memory_mib, limits.processes);
    }
    // Baal as root gives a local agent's tools a uid of their own; a VM's agent is unprivileged.
    // SAFETY: geteuid has no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        let uid = baal_core::deploy::local::tools_uid(AgentId(1)).unwrap();
        on_host_expected = on_host_expected.with_tools_user(uid.to_string());
    }
    for (written, expected) in [(&on_vm, on_vm_expected), (&on_host, on_host_expected)] {
        let mut names: Vec<&str> = written.keys().map(String::as_str).collect();
        let mut built: Vec<&str> = expected.names().collect();
        names.sort_unstable();
        built.sort_unstable();
        assert_eq!(names, built);
        for name in built {
            assert_eq!(written.get(name).map(String::as_str), expected.get(name), "{name}");
        }
    }
    for placed in [var::PORT, var::DB_PATH, var::WORKSPACE_PATH] {
        assert_ne!(on_vm[placed], on_host[placed], "{placed}");
    }
    let differing: Vec<&String> = on_vm.keys().filter(|name| on_vm[*name] != on_host[*name]).collect();
    assert_eq!(differing.len(), 3, "only where the agent lives differs: {differing:?}");
    let mut only_local: Vec<&str> =
        on_host.keys().filter(|name| !on_vm.contains_key(*name)).map(String::as_str).collect();
    only_local.sort_unstable();
    let mut expected_only_local = vec![var::TOOLS_NETWORK];
    if root {
        expected_only_local.push(var::TOOLS_USER);
    }
    if local.isolation().limit_mechanism().is_none() {
        expected_only_local.extend([var::TOOLS_MAX_MEMORY_MIB, var::TOOLS_MAX_PROCESSES]);
    }
    expected_only_local.sort_unstable();
    assert_eq!(only_local, expected_only_local);
    assert_eq!(on_vm[var::HEARTBEAT_INTERVAL], "7");
    assert_eq!(on_vm[var::BRAVE_API_KEY], "brave-key");

    aleph.destroy(AgentId(1), &facts, &RecordingReporter::default()).await.unwrap();
    local.destroy(AgentId(1), &local_facts, &RecordingReporter::default()).await.unwrap();
    assert!(h.aleph.live_instances().is_empty());
}

fn url_port(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap()
}

/// A refusal whose reason is nowhere (not in the answer, no record) still ends the wait.
#[tokio::test]
async fn a_refusal_without_a_reason_anywhere_is_still_reported_at_once() {
    let r = Refusing::start(RefusalShape::Silent, false).await;
    r.aleph.set_credits(0);
    let err = r.refused().await;
    assert!(err.message.contains("The Aleph network refused Baal's request for a VM"), "{err}");
    assert!(err.message.contains("without saying why"), "{err}");
    assert!(err.retryable, "with no reason given, a later try may go through");
}

/// A recorded instance the network never saw (the platform stopped between recording its hash and
/// posting it): heph refuses its FORGET at once (target not found), and the delete is done.
#[tokio::test]
async fn deleting_an_instance_the_network_never_saw_is_done_at_once() {
    let r = Refusing::start(RefusalShape::Heph, false).await;
    let mut never_posted = Deployment::default();
    never_posted.instance_hash = Some(hex::encode([7u8; 32]));
    never_posted.crn_url = Some(r.crn.url.clone());
    let reporter = RecordingReporter::default();
    let destroy = r.deployer.destroy(AgentId(1), &never_posted, &reporter);
    tokio::time::timeout(HANG_GUARD, destroy).await.expect("the refusal was waited out").unwrap();
    let forget = r.aleph.messages().into_values().find(|m| m.message_type == "FORGET").unwrap();
    assert_eq!((forget.status.as_str(), forget.error_code), ("rejected", Some(501)));
}

/// The whole platform over the Aleph deployer, its CCN refusing like heph for want of credits:
/// the owner's deployment fails at once, they are told why in their words, and the agent row
/// keeps no trace of a VM that never existed.
#[tokio::test]
async fn the_platform_fails_a_refused_deployment_at_once_and_tells_the_owner() {
    use baal_core::domain::{AgentStatus, EventOutcome, EventStep};
    use baal_core::platform::{Input, Platform, PlatformConfig};
    use baal_core::store::AgentFilter;
    use baal_core::testing::{db, messenger::MemoryMessenger};
    const OWNER: i64 = 601;

    let r = Refusing::start(RefusalShape::Heph, false).await;
    r.aleph.set_credits(0);
    let Refusing { aleph, crn, deployer, _keys } = r;
    let test_db = db::sqlite().await;
    let store = test_db.shared();
    let messenger = Arc::new(MemoryMessenger::new());
    let mut config = PlatformConfig::default();
    config.libertai_api_key = Some(SecretString::from("sk-operator-test"));
    config.edit_interval = Duration::ZERO;
    let platform = Platform::new(
        config,
        store.clone(),
        Arc::new(deployer),
        Arc::new(baal_core::proxy::http::HttpProxy::new().unwrap()),
        messenger.clone(),
        Arc::new(baal_core::secrets::SecretBox::from_encoded_key(&"ef".repeat(32)).unwrap()),
    );
    platform.start().await.unwrap();
    let flow = async {
        for text in ["/create", "Penny"] {
            platform.handle(Input::from_text(OWNER, OWNER, text)).await.unwrap();
            platform.wait_idle().await;
        }
        for needle in ["create_model:qwen3-coder-next", "create_confirm"] {
            let (data, message) = messenger
                .find_button(OWNER, needle)
                .unwrap_or_else(|| panic!("no button {needle:?} in {}", messenger.transcript(OWNER)));
            platform.handle(Input::button(OWNER, OWNER, data, message, "press")).await.unwrap();
            platform.wait_idle().await;
        }
    };
    tokio::time::timeout(HANG_GUARD, flow).await.expect("the refusal was waited out instead of reported");

    let agent = store.list_agents(&AgentFilter::all().owner(OWNER)).await.unwrap().pop().unwrap();
    assert_eq!(agent.status, AgentStatus::Failed);
    assert_eq!(agent.deployment, Deployment::default(), "a retry starts afresh, not on a VM that never existed");
    let said = messenger.last_text(OWNER);
    assert!(said.contains("short of credits") && said.contains("costs 342000.00 credits"), "{said}");
    assert!(said.contains("holds 0") && said.contains("top up the wallet"), "{said}");
    assert!(said.contains("on Baal's side, not yours") && said.contains("Retrying won't help until"), "{said}");
    let events = store.events_for(agent.id).await.unwrap();
    let failed = events.iter().find(|e| e.step == EventStep::Deploy && e.outcome == EventOutcome::Failed).unwrap();
    assert!(failed.detail.as_deref().unwrap().contains("ALEPH_PRIVATE_KEY"), "the operator's words are recorded");
    assert!(aleph.live_instances().is_empty() && crn.notified().is_empty());
    let refused: Vec<String> = aleph.messages().into_keys().collect();

    // Once the operator has topped up, Retry creates a new instance (the loopback VM has no SSH,
    // so this attempt stops later, at `ship`).
    aleph.set_credits(1_000_000_000);
    let (data, message) = messenger.find_button(OWNER, "Retry").expect("a Retry button");
    platform.handle(Input::button(OWNER, OWNER, data, message, "press")).await.unwrap();
    tokio::time::timeout(HANG_GUARD, platform.wait_idle()).await.expect("the retry finished");
    let live = aleph.live_instances();
    assert_eq!(live.len(), 1, "{:?}", aleph.messages());
    assert!(!refused.contains(&live[0]), "a new instance, not the refused one");
    assert_eq!(crn.notified(), live);
    platform.shutdown().await;
}

/// A TCP forwarder on loopback to `target`, closed (listener and every connection) when dropped:
/// the SSH address of a VM whose node can vanish.
struct Forwarder {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    async fn start(target: u16) -> Forwarder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Forwarder { port, task }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        // Aborting the task drops the listener and the JoinSet, which aborts every connection.
        self.task.abort();
    }
}

fn agent_pid(h: &Harness) -> i32 {
    std::fs::read_to_string(h.vm.file("run/baal-agent.pid")).unwrap().trim().parse().unwrap()
}

/// The agent's service died on a VM that still answers: repair restarts it there, same instance,
/// nothing re-shipped.
#[tokio::test]
async fn repair_restarts_a_killed_service_on_the_same_vm() {
    let h = Harness::start(&[CrnBehaviour::Healthy, CrnBehaviour::Healthy], None).await;
    let deployer = h.deployer(h.config());
    let facts = deployer.deploy(&spec("a", "p"), &RecordingReporter::default()).await.unwrap();
    let hash = facts.instance_hash.clone().unwrap();
    // SAFETY: kill has no memory effects; the pid is the stand-in agent this test started.
    assert_eq!(unsafe { libc::kill(agent_pid(&h), libc::SIGKILL) }, 0);
    let mut down = false;
    for _ in 0..100 {
        if !agent_healthy(h.agent_port).await {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(down, "the killed agent still answers");
    let restarts = h.vm.systemctl_calls().matches("restart baal-agent").count();

    let mut broken = spec("a", "p");
    broken.existing = facts.clone();
    let reporter = RecordingReporter::default();
    let repaired = deployer.repair(&broken, &reporter).await.unwrap();
    assert!(!repaired.moved);
    assert_eq!(repaired.deployment, facts, "the same VM, the same facts");
    assert!(agent_healthy(h.agent_port).await);
    assert_eq!(h.vm.systemctl_calls().matches("restart baal-agent").count(), restarts + 1);
    assert_eq!(
        reporter.log(),
        ["start start", "done start", "start health", "done health", "start https", "done https"],
        "a restart, nothing shipped or created"
    );
    assert_eq!(h.aleph.live_instances(), vec![hash]);
    assert_eq!(h.crns[1].notified(), Vec::<String>::new());
}

/// The VM's node is gone (its SSH address closed, the node no longer answering): repair forgets
/// the lost instance, deploys a fresh one on the other node, and reports the new facts as they
/// become known.
#[tokio::test]
async fn repair_moves_an_agent_whose_node_is_gone_to_another_node() {
    let sshd = SshTarget::start().await.unwrap();
    let lost_ssh = Forwarder::start(sshd.port()).await;
    let mut h =
        Harness::start_nodes(sshd, &[(CrnBehaviour::Healthy, Some(lost_ssh.port)), (CrnBehaviour::Healthy, None)])
            .await;
    let deployer = h.deployer(h.config());
    let facts = deployer.deploy(&spec("a", "p"), &RecordingReporter::default()).await.unwrap();
    let old = facts.instance_hash.clone().unwrap();
    assert_eq!(facts.crn_url.as_deref(), Some(h.crns[0].url.as_str()));
    assert_eq!(facts.ssh_port, Some(lost_ssh.port));

    drop(lost_ssh);
    let lost = h.crns.remove(0);
    let lost_url = lost.url.clone();
    drop(lost);
    let survivor = &h.crns[0];

    let mut broken = spec("a", "p");
    broken.existing = facts.clone();
    let reporter = RecordingReporter::default();
    let repaired = deployer.repair(&broken, &reporter).await.unwrap();
    assert!(repaired.moved);
    let moved = repaired.deployment;
    let new = moved.instance_hash.clone().unwrap();
    assert_ne!(new, old);
    assert_eq!(moved.crn_url.as_deref(), Some(survivor.url.as_str()), "not on the lost node {lost_url}");
    assert_eq!(moved.ssh_port, Some(h.sshd.port()));
    assert!(agent_healthy(h.agent_port).await);

    // Nothing left billing: the lost instance forgotten, only the new one paid for.
    assert_eq!(h.aleph.messages()[&old].status, "forgotten");
    assert_eq!(h.aleph.live_instances(), vec![new.clone()]);
    assert_eq!(survivor.notified(), vec![new.clone()]);
    let instance = &h.aleph.messages()[&new];
    assert_eq!(instance.content["requirements"]["node"]["node_hash"], survivor.hash.as_str());

    // Reported in order: the old facts cleared once forgotten, the new hash before anything
    // was posted, then the rest as it became known.
    let stored = reporter.facts();
    assert_eq!(stored[0], Deployment::default(), "{stored:?}");
    assert_eq!(stored[1].instance_hash.as_deref(), Some(new.as_str()));
    assert!(stored[1].vm_host.is_none());
    assert_eq!(reporter.stored(), moved);
    let log = reporter.log();
    assert_eq!(log[..3], ["start forget", "done forget", "facts"], "{log:?}");
    assert!(log.contains(&"done https".to_string()), "{log:?}");
}

/// A VM presenting another host key is not taken for lost: nothing is forgotten or created.
#[tokio::test]
async fn repair_refuses_a_vm_with_another_host_key_and_moves_nothing() {
    let h = Harness::start(&[CrnBehaviour::Healthy, CrnBehaviour::Healthy], None).await;
    let deployer = h.deployer(h.config());
    let facts = deployer.deploy(&spec("a", "p"), &RecordingReporter::default()).await.unwrap();
    let impostor = RusshServer::start().await.unwrap();
    let mut broken = spec("a", "p");
    broken.existing = facts.clone();
    broken.existing.ssh_host_key = Some(impostor.host_key.clone());
    let err = deployer.repair(&broken, &RecordingReporter::default()).await.unwrap_err();
    assert!(err.message.contains("different SSH host key"), "{err}");
    assert!(!err.retryable);
    assert_eq!(h.aleph.live_instances(), vec![facts.instance_hash.unwrap()]);
    assert!(!h.aleph.messages().values().any(|m| m.message_type == "FORGET"));
}
