//! The wallet beside the database, against the loopback fake CCN (its `messages.json` answering
//! as pyaleph's page mode does) and a real SQLite store: what is listed, how each instance is
//! classified, and forgetting the ones nothing uses.

use std::collections::BTreeSet;
use std::sync::Arc;

use baal_core::deploy::aleph::reconcile::{Holder, check_once};
use baal_core::deploy::aleph::sign::EthAccount;
use baal_core::deploy::aleph::{AlephConfig, AlephOperator};
use baal_core::domain::{AgentStatus, Deployment, NewAgent, PoolStatus};
use baal_core::store::{PoolStore, Store};
use baal_core::testing::aleph::{FakeAleph, loopback_timeouts};
use baal_core::testing::db;
use secrecy::SecretString;

/// Public Anvil/Hardhat dev key #0; never funded.
const DEV_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// Anvil/Hardhat dev key #1: another wallet on the same CCN.
const OTHER_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

fn operator(aleph: &FakeAleph, key: &str) -> AlephOperator {
    let mut config = AlephConfig::new(&aleph.url, aleph.crn_list_url(), &aleph.url, "", "/nonexistent", "");
    config.timeouts = loopback_timeouts();
    AlephOperator::new(EthAccount::from_hex(&SecretString::from(key)).unwrap(), config).unwrap()
}

fn vm(hash: &str) -> Deployment {
    let mut deployment = Deployment::default();
    deployment.instance_hash = Some(hash.to_owned());
    deployment.crn_url = Some("https://crn.example.org".into());
    deployment
}

#[tokio::test]
async fn the_listing_reads_every_page_and_leaves_out_forgotten_and_other_wallets_instances() {
    let aleph = FakeAleph::start().await.unwrap();
    let op = operator(&aleph, DEV_KEY);
    let other = operator(&aleph, OTHER_KEY);
    // More than two pages of 100.
    let mut ours: BTreeSet<String> = (0..230).map(|i| aleph.plant_instance(op.address(), &format!("vm-{i}"))).collect();
    for i in 0..5 {
        aleph.plant_instance(other.address(), &format!("theirs-{i}"));
    }
    let forgotten: Vec<String> = ours.iter().take(3).cloned().collect();
    for outcome in op.forget_instances(&forgotten).await {
        assert_eq!(outcome.error, None, "{}", outcome.hash);
        ours.remove(&outcome.hash);
    }

    let listed = op.paid_instances().await.unwrap();
    let hashes: BTreeSet<String> = listed.iter().map(|i| i.hash.clone()).collect();
    assert_eq!(listed.len(), 227, "each instance once");
    assert_eq!(hashes, ours, "every page read; forgotten ones and other wallets' left out");
    // Oldest first, each with its name and since when it is paid for.
    assert!(listed.windows(2).all(|w| w[0].since <= w[1].since));
    assert!(listed.iter().all(|i| i.name.as_deref().is_some_and(|n| n.starts_with("vm-")) && i.since.is_some()));
    assert_eq!(other.paid_instances().await.unwrap().len(), 5);
}

/// A planted unknown instance is found beside an agent's, a deleted agent's and a pool VM's;
/// the daily check reports the leaks and changes nothing; forgetting them leaves the others
/// billed, and the next check finds nothing.
#[tokio::test]
async fn a_planted_unknown_instance_is_found_and_forgotten_and_known_ones_are_kept() {
    let aleph = FakeAleph::start().await.unwrap();
    let op = operator(&aleph, DEV_KEY);
    let test_db = db::sqlite().await;
    let (store, pool): (Arc<dyn Store>, Arc<dyn PoolStore>) = (test_db.shared(), test_db.shared_pool());

    let agent_vm = aleph.plant_instance(op.address(), "baal-agent-Helper");
    let deleted_vm = aleph.plant_instance(op.address(), "baal-agent-Gone");
    let pool_vm = aleph.plant_instance(op.address(), "baal-agent-pool-1");
    let unknown = aleph.plant_instance(op.address(), "baal-agent-crashed-before-recording");
    store.user_get_or_create(100, Some("alice")).await.unwrap();
    let helper = store.agent_create(NewAgent::new(100, "Helper", "p", "glm-4.7")).await.unwrap();
    // Recorded in upper case by some earlier release: hashes compare without case.
    store.agent_set_deployment(helper.id, &vm(&agent_vm.to_ascii_uppercase())).await.unwrap();
    store.agent_set_status(helper.id, AgentStatus::Running).await.unwrap();
    let gone = store.agent_create(NewAgent::new(100, "Gone", "p", "glm-4.7")).await.unwrap();
    store.agent_set_deployment(gone.id, &vm(&deleted_vm)).await.unwrap();
    assert!(store.agent_soft_delete(gone.id).await.unwrap());
    let row = pool.pool_insert().await.unwrap();
    pool.pool_update(row.id, Some(&pool_vm), &vm(&pool_vm), PoolStatus::Warm).await.unwrap();

    let reconciled = op.reconcile(store.as_ref(), pool.as_ref()).await.unwrap();
    let holder = |hash: &str| reconciled.iter().find(|r| r.instance.hash == hash).map(|r| r.holder.clone()).unwrap();
    assert_eq!(reconciled.len(), 4);
    assert!(
        matches!(holder(&agent_vm), Holder::Agent { agent_id, owner_id: 100, deleted: false, .. } if agent_id == helper.id)
    );
    assert!(matches!(holder(&deleted_vm), Holder::Agent { deleted: true, .. }));
    assert!(matches!(holder(&pool_vm), Holder::PoolVm { pool_id, status: PoolStatus::Warm } if pool_id == row.id));
    assert_eq!(holder(&unknown), Holder::Unknown);

    // The bot's daily round: the leaks, and nothing forgotten.
    let leaks = check_once(&op, store.as_ref(), pool.as_ref()).await.unwrap();
    let mut leaked: Vec<&str> = leaks.iter().map(|r| r.instance.hash.as_str()).collect();
    leaked.sort_unstable();
    let mut expected = vec![deleted_vm.as_str(), unknown.as_str()];
    expected.sort_unstable();
    assert_eq!(leaked, expected);
    assert_eq!(aleph.live_instances().len(), 4, "the check only reads");

    let hashes: Vec<String> = leaks.iter().map(|r| r.instance.hash.clone()).collect();
    let outcomes = op.forget_instances(&hashes).await;
    assert!(outcomes.iter().all(|o| o.error.is_none()), "{outcomes:?}");
    for hash in &hashes {
        let message = &aleph.messages()[hash];
        assert_eq!(message.status, "forgotten");
    }
    let forgets: Vec<_> = aleph.messages().into_values().filter(|m| m.message_type == "FORGET").collect();
    assert_eq!(forgets.len(), 2, "one signed FORGET each, as teardown posts");
    assert!(forgets.iter().all(|m| m.sender == op.address() && m.content["reason"] == "Baal agent deletion"));
    let mut live = aleph.live_instances();
    live.sort();
    let mut kept = vec![agent_vm.clone(), pool_vm.clone()];
    kept.sort();
    assert_eq!(live, kept, "what the database knows is still billed and running");
    assert!(check_once(&op, store.as_ref(), pool.as_ref()).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unreachable_ccn_is_an_error_not_an_empty_wallet() {
    let aleph = FakeAleph::start().await.unwrap();
    let mut config = AlephConfig::new("http://127.0.0.1:9", aleph.crn_list_url(), &aleph.url, "", "/nonexistent", "");
    config.timeouts = loopback_timeouts();
    let op = AlephOperator::new(EthAccount::from_hex(&SecretString::from(DEV_KEY)).unwrap(), config).unwrap();
    let err = op.paid_instances().await.unwrap_err().to_string();
    assert!(err.contains("listing the INSTANCE messages") && err.contains("127.0.0.1:9"), "{err}");
}
