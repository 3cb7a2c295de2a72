//! From "VM allocated" to "agent healthy" against the loopback SSH target: SSH in (pinning the
//! host key), prepare, upload a binary of release size with its checksum verified, write
//! settings, unit and Caddyfile, restart, and check health on the VM and through the public URL.
//! Prints the figures; asserts nothing. Needs root and `/usr/sbin/sshd` (as the tests).
//!
//!     cargo bench --workspace --bench aleph_ship

use std::sync::Arc;
use std::time::{Duration, Instant};

use baal_core::deploy::aleph::sign::EthAccount;
use baal_core::deploy::aleph::{AlephConfig, AlephDeployer};
use baal_core::deploy::{AgentSpec, Deployer, SilentReporter};
use baal_core::domain::{AgentId, Deployment};
use baal_core::testing::aleph::MemoryPoolStore;
use baal_core::testing::ssh::{STANDIN_AGENT, Sshd, VmSandbox, free_port, write_executable};
use secrecy::SecretString;

/// About the size of a release `baal-agent`.
const BINARY_BYTES: usize = 20 * 1024 * 1024;
const RUNS: usize = 5;

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(bench());
}

async fn bench() {
    if !Sshd::available() {
        println!("aleph_ship: skipped (needs root and /usr/sbin/sshd)");
        return;
    }
    let sshd = Sshd::start().await.expect("sshd");
    let local = tempfile::tempdir().expect("tempdir");
    let agent_bin = local.path().join("baal-agent");
    // The stand-in agent execs python before the shell reads the padding.
    let mut binary = STANDIN_AGENT.to_owned();
    binary.push_str(&"#".repeat(BINARY_BYTES));
    write_executable(&agent_bin, &binary).expect("binary");

    let mut times = Vec::new();
    for run in 0..RUNS {
        // A fresh VM each run: nothing prepared, no host key pinned yet.
        let vm = VmSandbox::new().expect("sandbox");
        let port = free_port().expect("port");
        let mut config = AlephConfig::new(
            "http://127.0.0.1:9",
            "http://127.0.0.1:9/crns.json",
            "http://127.0.0.1:9",
            &sshd.client_pubkey,
            &sshd.client_key_path,
            &agent_bin,
        );
        config.layout = vm.layout(port);
        config.timeouts.poll = Duration::from_millis(50);
        let account = EthAccount::from_hex(&SecretString::from(
            "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
        ))
        .expect("key");
        let deployer = AlephDeployer::new(account, config, Arc::new(MemoryPoolStore::new())).expect("deployer");
        let mut spec = AgentSpec::new(
            AgentId(1),
            "bench",
            "You are a benchmark.",
            "qwen3-coder-next",
            SecretString::from("k"),
            "http://127.0.0.1:9/v1",
            SecretString::from("s"),
            "1",
        );
        let mut allocated = Deployment::default();
        allocated.instance_hash = Some("ab".repeat(32));
        allocated.crn_url = Some("http://127.0.0.1:9".into());
        allocated.vm_host = Some("127.0.0.1".into());
        allocated.ssh_port = Some(sshd.port);
        allocated.vm_url = Some(format!("http://127.0.0.1:{port}"));
        spec.existing = allocated;
        let started = Instant::now();
        deployer.deploy(&spec, &SilentReporter).await.expect("deploy");
        let elapsed = started.elapsed();
        println!("aleph_ship run {}: VM allocated -> agent healthy in {:.2} s", run + 1, elapsed.as_secs_f64());
        times.push(elapsed);
    }
    times.sort();
    println!(
        "aleph_ship: {} MiB binary over loopback SSH, {RUNS} fresh VMs: median {:.2} s, min {:.2} s, max {:.2} s",
        BINARY_BYTES / (1024 * 1024),
        times[RUNS / 2].as_secs_f64(),
        times[0].as_secs_f64(),
        times[RUNS - 1].as_secs_f64()
    );
}
