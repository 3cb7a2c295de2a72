//! Moving a running Python Baal to this one, end to end on loopback: the Python Baal's databases
//! (`testing::python_baal`, tokens under its Fernet key) are imported into a SQLite store, and
//! the platform then drives the imported agents. One's "VM" is a directory tree behind a real
//! OpenSSH server that lets in only the Python Baal's RSA key, running the Python agent's
//! stand-in (`testing::python_vm`) from its unit. The owner chats with it and gets what it
//! queued, and deletes the other (its instance forgotten); a visitor on the old numeric link is
//! told the agent is being upgraded; `/update` converts the VM (the real `baal-agent` shipped
//! over SSH, the model a `ScriptedLlm`), after which the visitor gets in on the same link and the
//! owner's next turn still carries the Python agent's history. The wallet's instance is the
//! imported agent's for `aleph reconcile`.
//!
//! Needs root and `/usr/sbin/sshd`; without them the test says so and passes, except under
//! `CI=true`, where it fails.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use baal_core::deploy::aleph::reconcile::Holder;
use baal_core::deploy::aleph::sign::EthAccount;
use baal_core::deploy::aleph::{AlephConfig, AlephDeployer, AlephOperator};
use baal_core::domain::{AgentRuntime, AgentStatus, Payer, UserId};
use baal_core::import::python;
use baal_core::platform::{Platform, PlatformConfig};
use baal_core::proxy::http::HttpProxy;
use baal_core::secrets::{SecretBox, generate_key};
use baal_core::testing::aleph::{CrnBehaviour, FakeAleph, FakeCrn, loopback_timeouts};
use baal_core::testing::db;
use baal_core::testing::messenger::{MemoryMessenger, press_and_wait, send_and_wait};
use baal_core::testing::openai::{Reply, ScriptedLlm};
use baal_core::testing::python_baal::{PyAgent, PyUser, PythonBaal};
use baal_core::testing::python_vm::PythonAgent;
use baal_core::testing::ssh::{Sshd, VmSandbox, free_port, write_ed25519_key};
use secrecy::{ExposeSecret as _, SecretString};

/// Public Anvil/Hardhat dev key #0; never funded.
const DEV_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const OWNER: UserId = 4242;
const VISITOR: UserId = 777;
const PYTHON_ID: i64 = 17;
const NAME: &str = "Ada Python";
const SECRET: &str = "python-agent-bearer-secret";
const OWNER_KEY: &str = "sk-owner-libertai-key";

/// Polls until `check` holds; a hang guard, not a timing assertion.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..400 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

/// The agent's row in the Python Baal's `agents` table, on the planted VM's node.
fn python_agent_row(hash: &str, url: &str, crn_url: &str) -> PyAgent {
    let mut row = PyAgent::new(PYTHON_ID, OWNER, NAME).running(hash, "127.0.0.1", url, SECRET);
    row.crn_url = Some(crn_url.to_owned());
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_baal_is_imported_its_agent_served_then_converted_with_its_history_and_link() {
    if !Sshd::available_or_skip("the move") {
        return;
    }
    baal_core::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();

    // The Python Baal's VM: its agent answers on loopback, found through a fake node.
    let vm = VmSandbox::new().unwrap();
    let sshd = Sshd::start_for_python_vm(&vm.file("root/.ssh/authorized_keys")).await.unwrap();
    let aleph = FakeAleph::start().await.unwrap();
    let crn = FakeCrn::start(&aleph, CrnBehaviour::Healthy, "127.0.0.1", sshd.port).await.unwrap();
    aleph.add_crn(&crn, 0.1);
    let account = EthAccount::from_hex(&SecretString::from(DEV_KEY)).unwrap();
    let hash = aleph.plant_instance(account.address(), "baal-agent-ada");
    // A second agent of the same owner, whose VM only the network knows of: deleted below.
    let other_hash = aleph.plant_instance(account.address(), "baal-agent-bob");
    crn.run_instance(&hash);
    let port = free_port().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    aleph.set_public_url(&url);
    let owner = OWNER.to_string();
    let python_agent = PythonAgent::new(NAME, SECRET, &owner, "127.0.0.1")
        .with_message(&owner, "user", "Remember that my cat is called Miso.")
        .with_message(&owner, "assistant", "Noted: your cat is Miso.")
        .with_pending(&owner, "Reminder: Miso's vet visit is tomorrow.", "heartbeat")
        .with_file("memory/MEMORY.md", "# Memory\n\n- The owner's cat is Miso.\n");
    vm.plant_python_agent(&python_agent, port).unwrap();
    vm.systemctl(&["start", "baal-agent"]).unwrap();

    // The Python Baal's databases, imported.
    let files = PythonBaal::new()
        .with_user(PyUser::new(OWNER).with_api_key(OWNER_KEY))
        .with_agent(python_agent_row(&hash, &url, &crn.url))
        .with_agent(PyAgent::new(PYTHON_ID + 1, OWNER, "Bob Python").running(
            &other_hash,
            "127.0.0.1",
            "https://bob.2n6.me",
            "bob-secret",
        ))
        .write(dir.path());
    let test_db = db::sqlite().await;
    let store = test_db.shared();
    let secrets = Arc::new(SecretBox::from_secret(&generate_key().unwrap()).unwrap());
    let report = python::import(&files.source(), &files.python_key(), store.as_ref(), &secrets, false, &mut |_| {})
        .await
        .unwrap();
    println!("imported: {report:?}");
    let agent = store.agent_by_python_id(PYTHON_ID).await.unwrap().expect("the agent was imported");
    assert_eq!((agent.runtime, agent.status, agent.payer), (AgentRuntime::Python, AgentStatus::Running, Payer::Owner));

    // The platform, with the Aleph deployer holding Baal's key and the Python Baal's.
    let llm = ScriptedLlm::start().await;
    let our_key = dir.path().join("baal_ed25519");
    let our_pubkey = write_ed25519_key(&our_key).unwrap();
    let explicit = std::env::var_os("BAAL_AGENT_BIN").map(PathBuf::from);
    let agent_bin = baal_core::deploy::local::find_agent_binary(explicit.as_deref())
        .unwrap_or_else(|err| panic!("{err} (for this test: cargo build --workspace)"));
    let mut aleph_config =
        AlephConfig::new(&aleph.url, aleph.crn_list_url(), &aleph.url, &our_pubkey, &our_key, &agent_bin);
    aleph_config.python_ssh_key_path = Some(sshd.client_key_path.clone());
    aleph_config.layout = vm.layout(port);
    aleph_config.timeouts = loopback_timeouts();

    // `baal-cli aleph reconcile` knows the wallet's instance: the imported agent's VM.
    let operator =
        AlephOperator::new(EthAccount::from_hex(&SecretString::from(DEV_KEY)).unwrap(), aleph_config.clone()).unwrap();
    let reconciled = operator.reconcile(store.as_ref(), test_db.store()).await.unwrap();
    let held = reconciled.iter().find(|r| r.instance.hash == hash).expect("the wallet pays for the agent's VM");
    assert!(
        matches!(held.holder, Holder::Agent { agent_id, deleted: false, .. } if agent_id == agent.id),
        "{:?}",
        held.holder
    );
    assert!(reconciled.iter().all(|r| !r.holder.is_leak()), "{reconciled:?}");

    let pool = Arc::new(baal_core::testing::aleph::MemoryPoolStore::new());
    let deployer = Arc::new(AlephDeployer::new(account, aleph_config, pool).unwrap());
    let config = PlatformConfig::default()
        .with_bot_username("baal_test_bot")
        .with_libertai_api_base_url(llm.base_url())
        .with_edit_interval(Duration::ZERO)
        .with_pending_poll_interval(Duration::from_millis(200));
    let messenger = Arc::new(MemoryMessenger::new());
    let proxy = Arc::new(HttpProxy::new().unwrap());
    let platform = Platform::new(config, store.clone(), deployer, proxy, messenger.clone(), secrets.clone());
    platform.start().await.unwrap();
    let link = format!("/start agent_{PYTHON_ID}");

    // The owner chats with the Python agent as before, and gets what it queued.
    send_and_wait(&platform, OWNER, &link).await;
    assert!(
        messenger.last_text(OWNER).contains(&format!("chatting with <b>{NAME}</b>")),
        "{}",
        messenger.transcript(OWNER)
    );
    send_and_wait(&platform, OWNER, "Are you still there?").await;
    let transcript = messenger.transcript(OWNER);
    assert!(transcript.contains(&format!("{NAME} heard: Are you still there?")), "{transcript}");
    eventually("the Python agent's queued message reaches its owner", || {
        messenger.transcript(OWNER).contains("Reminder: Miso's vet visit is tomorrow.")
    })
    .await;
    println!("the owner talked to the Python agent and got its queued message");

    // The owner deletes the other imported agent through the usual buttons: its VM is forgotten.
    let bob = store.agent_by_python_id(PYTHON_ID + 1).await.unwrap().unwrap();
    send_and_wait(&platform, OWNER, "/list").await;
    press_and_wait(&platform, &messenger, OWNER, &format!("delete_confirm:{}", bob.id)).await;
    press_and_wait(&platform, &messenger, OWNER, &format!("delete_confirmed:{}", bob.id)).await;
    assert!(store.agent_get(bob.id).await.unwrap().unwrap().deleted, "{}", messenger.transcript(OWNER));
    assert!(!aleph.live_instances().contains(&other_hash), "the deleted agent's VM was forgotten");
    assert!(aleph.live_instances().contains(&hash), "the other agent's VM stays");
    println!("the owner deleted an imported agent; its instance was forgotten");

    // A visitor on the old numeric link waits: the Python agent's tools run as root.
    send_and_wait(&platform, VISITOR, &link).await;
    assert!(messenger.last_text(VISITOR).contains("is being upgraded"), "{}", messenger.transcript(VISITOR));
    send_and_wait(&platform, VISITOR, "hello?").await;
    assert!(!messenger.transcript(VISITOR).contains("heard"), "{}", messenger.transcript(VISITOR));
    println!("the visitor was told the agent is being upgraded");

    // /update converts the VM where it runs.
    send_and_wait(&platform, OWNER, &format!("/update {}", agent.id)).await;
    let converted = store.agent_get(agent.id).await.unwrap().unwrap();
    assert_eq!(
        (converted.runtime, converted.status),
        (AgentRuntime::Baal, AgentStatus::Running),
        "{}\n{}",
        messenger.transcript(OWNER),
        std::fs::read_to_string(vm.file("agent.log")).unwrap_or_default()
    );
    let transcript = messenger.transcript(OWNER);
    assert!(transcript.contains("runs the new Baal now"), "{transcript}");
    let steps: Vec<String> =
        store.events_for(agent.id).await.unwrap().iter().map(|e| format!("{}:{}", e.step, e.outcome)).collect();
    for step in ["reach", "handover", "ship", "check"] {
        assert!(steps.contains(&format!("{step}:succeeded")), "{step} not done: {steps:?}");
    }
    assert_eq!(converted.deployment.ssh_port, Some(sshd.port), "the SSH port was looked up and stored");
    assert!(converted.deployment.ssh_host_key.is_some(), "the host key is pinned");
    let context = baal_core::secrets::SealContext::agent_token(agent.id);
    let rotated = secrets.open_str_for(&context, converted.token_sealed.as_deref().unwrap()).unwrap();
    assert_ne!(rotated.expose_secret(), SECRET, "a fresh bearer secret, in the agent's settings and the store");
    println!("converted: {:?}", converted.deployment);

    // The visitor gets in on the same link, answered by Baal's agent.
    llm.push_when("Hi from a visitor", Reply::text("Hello, visitor!"));
    send_and_wait(&platform, VISITOR, &link).await;
    assert!(
        messenger.last_text(VISITOR).contains(&format!("chatting with <b>{NAME}</b>")),
        "{}",
        messenger.transcript(VISITOR)
    );
    send_and_wait(&platform, VISITOR, "Hi from a visitor").await;
    assert!(messenger.transcript(VISITOR).contains("Hello, visitor!"), "{}", messenger.transcript(VISITOR));

    // The owner's next turn carries the Python agent's history.
    llm.push_when("What is my cat called?", Reply::text("Your cat is Miso."));
    send_and_wait(&platform, OWNER, "What is my cat called?").await;
    assert!(messenger.transcript(OWNER).contains("Your cat is Miso."), "{}", messenger.transcript(OWNER));
    let asked = llm
        .completion_requests()
        .into_iter()
        .find(|request| format!("{:?}", request.messages()).contains("What is my cat called?"))
        .expect("the owner's turn reached the model");
    let sent = serde_json::to_string(&asked.messages()).unwrap();
    for earlier in ["Remember that my cat is called Miso.", "Noted: your cat is Miso.", "Are you still there?"] {
        assert!(sent.contains(earlier), "{earlier:?} missing from what the model got: {sent}");
    }
    assert!(!sent.contains("Hi from a visitor"), "the visitor's chat stays apart: {sent}");
    println!("the owner's history came along: {} messages sent to the model", asked.messages().len());
    platform.shutdown().await;
}
