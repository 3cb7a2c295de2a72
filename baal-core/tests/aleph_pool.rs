//! The Aleph deployer's warm pool: provisioning, claiming, retirement, and its invariants under
//! 50 concurrent claims with failures.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use baal_core::deploy::aleph::sign::EthAccount;
use baal_core::deploy::aleph::{AlephConfig, AlephDeployer};
use baal_core::deploy::{AgentSpec, DeployError, DeployReporter, DeployStep, Deployer};
use baal_core::domain::{AgentId, Deployment, PoolStatus};
use baal_core::store::PoolStore;
use baal_core::testing::aleph::{CrnBehaviour, FakeAleph, FakeCrn, MemoryPoolStore, RefusalShape, loopback_timeouts};
use baal_core::testing::ssh::{STANDIN_AGENT, SshTarget, VmSandbox, free_port, write_ed25519_key, write_executable};
use secrecy::SecretString;

const DEV_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// Records the facts stored for one agent; optionally refuses them (a store failure).
#[derive(Default)]
struct Recorder {
    facts: Mutex<Vec<Deployment>>,
    refuse: bool,
}

#[async_trait]
impl DeployReporter for Recorder {
    async fn step_started(&self, _: DeployStep) {}
    async fn step_done(&self, _: DeployStep) {}
    async fn facts(&self, deployment: &Deployment) -> Result<(), DeployError> {
        if self.refuse {
            return Err(DeployError::new("deploy", "the store is down"));
        }
        self.facts.lock().unwrap().push(deployment.clone());
        Ok(())
    }
}

fn spec(agent: i64) -> AgentSpec {
    AgentSpec::new(
        AgentId(agent),
        format!("agent-{agent}"),
        "p",
        "qwen3-coder-next",
        SecretString::from("k"),
        "http://127.0.0.1:9/v1",
        SecretString::from("s"),
        "1",
    )
}

fn account() -> EthAccount {
    EthAccount::from_hex(&SecretString::from(DEV_KEY)).unwrap()
}

fn fast(config: &mut AlephConfig) {
    config.timeouts = loopback_timeouts();
    config.timeouts.ssh_ready = Duration::from_millis(300);
}

#[tokio::test]
async fn fifty_concurrent_claims_with_failures_keep_the_pool_invariants() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("id");
    let pubkey = write_ed25519_key(&key_path).unwrap();
    let aleph = FakeAleph::start().await.unwrap();
    let store = Arc::new(MemoryPoolStore::new());
    // Five warm VMs whose SSH port is closed: every deployment on them fails at `ship`.
    let closed = free_port().unwrap();
    let host_key = write_ed25519_key(&dir.path().join("host")).unwrap();
    for i in 0..5u8 {
        let row = store.pool_insert().await.unwrap();
        let mut deployment = Deployment::default();
        deployment.instance_hash = Some(hex::encode([i + 1; 32]));
        deployment.crn_url = Some("http://127.0.0.1:9".into());
        deployment.vm_host = Some("127.0.0.1".into());
        deployment.ssh_port = Some(closed);
        deployment.ssh_host_key = Some(host_key.clone());
        deployment.vm_url = Some("https://pool.2n6.me".into());
        store.pool_update(row.id, deployment.instance_hash.as_deref(), &deployment, PoolStatus::Warm).await.unwrap();
    }
    let mut config =
        AlephConfig::new(&aleph.url, aleph.crn_list_url(), &aleph.url, pubkey, &key_path, dir.path().join("bin"));
    config.pool.enabled = true;
    fast(&mut config);
    let deployer = Arc::new(AlephDeployer::new(account(), config, store.clone()).unwrap());

    let reporters: Vec<Arc<Recorder>> =
        (1..=50).map(|i| Arc::new(Recorder { refuse: i % 7 == 0, ..Recorder::default() })).collect();
    let tasks: Vec<_> = reporters
        .iter()
        .enumerate()
        .map(|(i, reporter)| {
            let (deployer, reporter) = (deployer.clone(), reporter.clone());
            tokio::spawn(async move { deployer.deploy(&spec(i as i64 + 1), reporter.as_ref()).await })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().is_err(), "no deployment can succeed here");
    }

    // Which agent points at which pool VM.
    let mut owner_of: HashMap<String, i64> = HashMap::new();
    for (i, reporter) in reporters.iter().enumerate() {
        let hashes: std::collections::HashSet<String> =
            reporter.facts.lock().unwrap().iter().filter_map(|f| f.instance_hash.clone()).collect();
        for hash in hashes {
            let previous = owner_of.insert(hash.clone(), i as i64 + 1);
            assert!(previous.is_none(), "VM {hash} was handed to two agents");
        }
    }
    let rows = store.pool_list().await.unwrap();
    assert_eq!(rows.len(), 5, "no pool row is lost");
    for row in rows {
        let hash = row.instance_hash.clone().unwrap();
        match owner_of.get(&hash) {
            Some(agent) => {
                assert_eq!(row.status, PoolStatus::Deployed, "a VM an agent points at never returns to the pool");
                assert_eq!(row.agent_id, Some(AgentId(*agent)));
            }
            None => {
                assert_eq!(row.status, PoolStatus::Warm, "a VM no agent points at stays available");
                assert_eq!(row.agent_id, None);
            }
        }
    }
    assert_eq!(owner_of.len(), 5, "every warm VM was used once the refusals were given back");
}

#[tokio::test]
async fn pool_rounds_provision_claim_and_retire() {
    let aleph = FakeAleph::start().await.unwrap();
    let sshd = SshTarget::start().await.unwrap();
    let crn = FakeCrn::start(&aleph, CrnBehaviour::Healthy, "127.0.0.1", sshd.port()).await.unwrap();
    aleph.add_crn(&crn, 0.1);
    let vm = VmSandbox::new().unwrap();
    let local = tempfile::tempdir().unwrap();
    let agent_bin = local.path().join("baal-agent");
    write_executable(&agent_bin, STANDIN_AGENT).unwrap();
    let agent_port = free_port().unwrap();
    aleph.set_public_url(&format!("http://127.0.0.1:{agent_port}"));
    let store = Arc::new(MemoryPoolStore::new());
    let mut config = AlephConfig::new(
        &aleph.url,
        aleph.crn_list_url(),
        &aleph.url,
        sshd.client_pubkey(),
        sshd.client_key_path(),
        &agent_bin,
    );
    config.layout = vm.layout(agent_port);
    config.pool.enabled = true;
    config.pool.min_size = 2;
    config.pool.max_size = 3;
    config.pool.max_age = Duration::from_secs(3600);
    fast(&mut config);
    config.timeouts.ssh_ready = Duration::from_secs(2);
    let deployer = AlephDeployer::new(account(), config, store.clone()).unwrap();

    let round = deployer.pool_round().await.unwrap();
    assert_eq!(round.created, 2);
    let rows = store.pool_list().await.unwrap();
    assert!(rows.iter().all(|r| r.status == PoolStatus::Warm && r.deployment.ssh_host_key.is_some()));
    assert_eq!(aleph.live_instances().len(), 2);
    assert!(std::fs::read_to_string(vm.file("apt-get.log")).unwrap().contains("caddy"));

    // A deployment takes the oldest warm VM and creates no instance.
    let oldest = rows[0].instance_hash.clone().unwrap();
    let facts = deployer.deploy(&spec(7), &Recorder::default()).await.unwrap();
    assert_eq!(facts.instance_hash.as_deref(), Some(oldest.as_str()));
    assert_eq!(aleph.live_instances().len(), 2);
    let row =
        store.pool_list().await.unwrap().into_iter().find(|r| r.instance_hash.as_deref() == Some(&oldest)).unwrap();
    assert_eq!((row.status, row.agent_id), (PoolStatus::Deployed, Some(AgentId(7))));

    // Replenish back to the minimum of warm VMs; retire one past its age.
    let round = deployer.pool_round().await.unwrap();
    assert_eq!(round.created, 1);
    let warm: Vec<_> = store.pool_list().await.unwrap().into_iter().filter(|r| r.status == PoolStatus::Warm).collect();
    assert_eq!(warm.len(), 2);
    store.age_row(warm[0].id, chrono::Duration::hours(2));
    let retired_hash = warm[0].instance_hash.clone().unwrap();
    let round = deployer.pool_round().await.unwrap();
    assert_eq!((round.retired, round.created), (1, 1));
    assert_eq!(aleph.messages()[&retired_hash].status, "forgotten");

    // Destroying the agent forgets its VM and drops its pool row.
    deployer.destroy(AgentId(7), &facts, &Recorder::default()).await.unwrap();
    assert!(store.pool_list().await.unwrap().iter().all(|r| r.instance_hash.as_deref() != Some(&oldest)));
    assert_eq!(aleph.live_instances().len(), 2, "only the two warm VMs are billed");
}

#[tokio::test]
async fn a_failed_pool_provision_is_forgotten_and_leaves_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("id");
    let pubkey = write_ed25519_key(&key_path).unwrap();
    let aleph = FakeAleph::start().await.unwrap();
    let crn = FakeCrn::start(&aleph, CrnBehaviour::NoCapacity, "127.0.0.1", 1).await.unwrap();
    aleph.add_crn(&crn, 0.1);
    let store = Arc::new(MemoryPoolStore::new());
    let mut config =
        AlephConfig::new(&aleph.url, aleph.crn_list_url(), &aleph.url, pubkey, &key_path, dir.path().join("bin"));
    config.pool.enabled = true;
    config.pool.min_size = 2;
    fast(&mut config);
    let deployer = AlephDeployer::new(account(), config, store.clone()).unwrap();
    let round = deployer.pool_round().await.unwrap();
    assert_eq!((round.created, round.failed), (0, 2));
    assert!(store.pool_list().await.unwrap().is_empty());
    assert!(aleph.live_instances().is_empty());
    assert!(aleph.messages().values().any(|m| m.message_type == "FORGET"));
}

/// A pool VM the network refuses (no credits) ends its round at once, in either answer shape:
/// no row, no instance, nothing to forget.
#[tokio::test]
async fn a_refused_pool_provision_ends_at_once_and_leaves_no_row() {
    for (shape, pending_first) in [(RefusalShape::Heph, false), (RefusalShape::Pyaleph, true)] {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("id");
        let pubkey = write_ed25519_key(&key_path).unwrap();
        let aleph = FakeAleph::start().await.unwrap();
        aleph.refuse_like(shape);
        aleph.answer_pending_first(pending_first);
        aleph.set_credits(0);
        let crn = FakeCrn::start(&aleph, CrnBehaviour::Healthy, "127.0.0.1", 1).await.unwrap();
        aleph.add_crn(&crn, 0.1);
        let store = Arc::new(MemoryPoolStore::new());
        let mut config =
            AlephConfig::new(&aleph.url, aleph.crn_list_url(), &aleph.url, pubkey, &key_path, dir.path().join("bin"));
        config.pool.enabled = true;
        config.pool.min_size = 2;
        fast(&mut config);
        // Waited out, this would outlast the hang guard below.
        config.timeouts.message = Duration::from_secs(60);
        let deployer = AlephDeployer::new(account(), config, store.clone()).unwrap();
        let round = tokio::time::timeout(Duration::from_secs(30), deployer.pool_round())
            .await
            .unwrap_or_else(|_| panic!("{shape:?}: the refusal was waited out instead of reported"))
            .unwrap();
        assert_eq!((round.created, round.failed), (0, 2), "{shape:?}");
        assert!(store.pool_list().await.unwrap().is_empty(), "{shape:?}: a refused VM leaves no row");
        let messages = aleph.messages();
        assert_eq!(messages.values().filter(|m| m.status == "rejected").count(), 2, "{shape:?}");
        assert!(!messages.values().any(|m| m.message_type == "FORGET"), "{shape:?}: nothing to forget");
        assert!(aleph.live_instances().is_empty() && crn.notified().is_empty(), "{shape:?}");
    }
}
