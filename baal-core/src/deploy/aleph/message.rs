//! Aleph messages: INSTANCE and FORGET contents, serialized once, hashed and signed.
//!
//! The content is serialized to one string and never rebuilt: the CCN hashes the exact bytes it
//! receives, so the struct field order below only matters for byte-parity with the spec's vectors.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::sign::EthAccount;

/// The Ubuntu 24.04 "Noble" rootfs (cloud-init enabled, 20 GiB minimum disk). The Python Baal
/// calls this hash "debian12"; every official source says it is Ubuntu 24.04 (spec §4.5). Baal
/// picks it deliberately: Caddy is in its archive and it is what the Python Baal's VMs really ran.
pub const UBUNTU_24_ROOTFS: &str = "5330dcefe1857bcd97b7b7f24d1420a7d46232d53f27be280c8a7071d88bd84e";
/// The Debian 12 "Bookworm" rootfs (an alternative for `ALEPH_ROOTFS`).
pub const DEBIAN_12_ROOTFS: &str = "b6ff5c3a8205d1ca4c7c3369300eeafff498b558f71b851aa2114afd0a532717";

/// The CCN refuses metadata string values longer than this (aleph-message 1.7).
const MAX_METADATA_VALUE: usize = 512;

/// The size of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct VmSize {
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Root disk in MiB (at least the image's 20 480).
    pub disk_mib: u64,
}

impl Default for VmSize {
    /// 1 vCPU, 2 GiB of memory, 20 GiB of disk: one Aleph compute unit.
    fn default() -> Self {
        VmSize { vcpus: 1, memory_mib: 2048, disk_mib: 20480 }
    }
}

/// What an INSTANCE message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InstanceRequest {
    /// `metadata.name` (cut to what the CCN accepts).
    pub name: String,
    /// The operator's OpenSSH public key, put in root's `authorized_keys`.
    pub ssh_pubkey: String,
    /// Size of the VM.
    pub size: VmSize,
    /// Item hash of the rootfs image.
    pub rootfs: String,
    /// The CRN the instance is pinned to (`requirements.node.node_hash`).
    pub node_hash: Option<String>,
}

impl InstanceRequest {
    /// A request for the default size and rootfs, unpinned.
    pub fn new(name: impl Into<String>, ssh_pubkey: impl Into<String>) -> Self {
        InstanceRequest {
            name: name.into(),
            ssh_pubkey: ssh_pubkey.into(),
            size: VmSize::default(),
            rootfs: UBUNTU_24_ROOTFS.into(),
            node_hash: None,
        }
    }
}

#[derive(Serialize)]
struct InstanceContent<'a> {
    address: &'a str,
    time: f64,
    allow_amend: bool,
    metadata: Metadata,
    authorized_keys: [&'a str; 1],
    environment: Environment,
    resources: Resources,
    payment: Payment,
    #[serde(skip_serializing_if = "Option::is_none")]
    requirements: Option<Requirements<'a>>,
    volumes: [(); 0],
    rootfs: Rootfs<'a>,
}

#[derive(Serialize)]
struct Metadata {
    name: String,
}

#[derive(Serialize)]
struct Environment {
    internet: bool,
    aleph_api: bool,
    hypervisor: &'static str,
    reproducible: bool,
    shared_cache: bool,
}

#[derive(Serialize)]
struct Resources {
    vcpus: u32,
    memory: u64,
    seconds: u32,
}

#[derive(Serialize)]
struct Payment {
    chain: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct Requirements<'a> {
    node: NodeRequirement<'a>,
}

#[derive(Serialize)]
struct NodeRequirement<'a> {
    node_hash: &'a str,
}

#[derive(Serialize)]
struct Rootfs<'a> {
    parent: RootfsParent<'a>,
    persistence: &'static str,
    size_mib: u64,
}

#[derive(Serialize)]
struct RootfsParent<'a> {
    #[serde(rename = "ref")]
    reference: &'a str,
    use_latest: bool,
}

#[derive(Serialize)]
struct ForgetContent<'a> {
    address: &'a str,
    time: f64,
    hashes: &'a [String],
    reason: &'a str,
}

/// A signed message, exactly the nine fields POSTed to the CCN (and printed by
/// `baal-cli aleph sign`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct SignedMessage {
    /// Always `ETH`.
    pub chain: String,
    /// The checksummed address.
    pub sender: String,
    /// `INSTANCE` or `FORGET`.
    #[serde(rename = "type")]
    pub message_type: String,
    /// The channel (`BAAL`).
    pub channel: String,
    /// Unix seconds (not signed).
    pub time: f64,
    /// Always `inline`.
    pub item_type: String,
    /// The content, as the exact JSON text that was hashed.
    pub item_content: String,
    /// Lowercase hex SHA-256 of `item_content`.
    pub item_hash: String,
    /// EIP-191 signature of `chain\nsender\ntype\nitem_hash`.
    pub signature: String,
}

/// The seconds since the epoch, as Aleph messages carry them.
pub(crate) fn now_seconds() -> f64 {
    let now = chrono::Utc::now();
    // Millisecond precision, like the SDKs; an f64 holds it exactly enough for the CCN.
    now.timestamp_millis() as f64 / 1000.0
}

fn sign(account: &EthAccount, message_type: &str, channel: &str, time: f64, item_content: String) -> SignedMessage {
    let item_hash = hex::encode(Sha256::digest(item_content.as_bytes()));
    let buffer = format!("ETH\n{}\n{message_type}\n{item_hash}", account.address());
    SignedMessage {
        chain: "ETH".into(),
        sender: account.address().into(),
        message_type: message_type.into(),
        channel: channel.into(),
        time,
        item_type: "inline".into(),
        item_content,
        item_hash,
        signature: account.personal_sign(buffer.as_bytes()),
    }
}

fn cut(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

/// Signs an INSTANCE message paid with credits.
pub fn instance_message(account: &EthAccount, request: &InstanceRequest, channel: &str, time: f64) -> SignedMessage {
    let content = InstanceContent {
        address: account.address(),
        time,
        allow_amend: false,
        metadata: Metadata { name: cut(&request.name, MAX_METADATA_VALUE) },
        authorized_keys: [request.ssh_pubkey.trim()],
        environment: Environment {
            internet: true,
            aleph_api: true,
            hypervisor: "qemu",
            reproducible: false,
            shared_cache: false,
        },
        // `seconds` is a legacy program timeout that instances ignore; 30 like the SDK.
        resources: Resources { vcpus: request.size.vcpus, memory: request.size.memory_mib, seconds: 30 },
        payment: Payment { chain: "ETH", kind: "credit" },
        requirements: request
            .node_hash
            .as_deref()
            .map(|node_hash| Requirements { node: NodeRequirement { node_hash } }),
        volumes: [],
        rootfs: Rootfs {
            parent: RootfsParent { reference: &request.rootfs, use_latest: true },
            persistence: "host",
            size_mib: request.size.disk_mib,
        },
    };
    let item_content = serde_json::to_string(&content).expect("instance content always serializes");
    sign(account, "INSTANCE", channel, time, item_content)
}

/// Signs a FORGET message for `hashes`.
pub fn forget_message(
    account: &EthAccount,
    hashes: &[String],
    reason: &str,
    channel: &str,
    time: f64,
) -> SignedMessage {
    let content = ForgetContent { address: account.address(), time, hashes, reason: &cut(reason, 1000) };
    let item_content = serde_json::to_string(&content).expect("forget content always serializes");
    sign(account, "FORGET", channel, time, item_content)
}

/// The reason Baal gives in the FORGET it posts when an agent is deleted.
pub const AGENT_FORGET_REASON: &str = "Baal agent deletion";

/// Signs, now, the FORGET Baal posts for deleted agents' VMs: what the deployer posts and
/// `baal-cli aleph sign forget` prints, from the wallet alone.
pub fn agent_forget_message(account: &EthAccount, hashes: &[String], channel: &str) -> SignedMessage {
    forget_message(account, hashes, AGENT_FORGET_REASON, channel, now_seconds())
}

/// Whether `text` looks like an item hash (64 lowercase or uppercase hex digits).
pub fn is_item_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    const DEV_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    const VECTOR_INSTANCE: &str = r#"{"address":"0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266","time":1700000000.0,"allow_amend":false,"metadata":{"name":"vector-test"},"authorized_keys":["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC068SD08xlTtMxTdmCe3rPVM/uA7SvgDUiQwP0FrIGS test"],"environment":{"internet":true,"aleph_api":true,"hypervisor":"qemu","reproducible":false,"shared_cache":false},"resources":{"vcpus":1,"memory":2048,"seconds":30},"payment":{"chain":"ETH","type":"credit"},"requirements":{"node":{"node_hash":"dc3d1d194a990b5c54380c3c0439562fefa42f5a46807cba1c500ec3affecf04"}},"volumes":[],"rootfs":{"parent":{"ref":"b6ff5c3a8205d1ca4c7c3369300eeafff498b558f71b851aa2114afd0a532717","use_latest":true},"persistence":"host","size_mib":20480}}"#;

    fn account() -> EthAccount {
        EthAccount::from_hex(&SecretString::from(DEV_KEY)).unwrap()
    }

    #[test]
    fn instance_vector_a2() {
        let mut request = InstanceRequest::new(
            "vector-test",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC068SD08xlTtMxTdmCe3rPVM/uA7SvgDUiQwP0FrIGS test",
        );
        request.rootfs = DEBIAN_12_ROOTFS.into();
        request.node_hash = Some("dc3d1d194a990b5c54380c3c0439562fefa42f5a46807cba1c500ec3affecf04".into());
        let message = instance_message(&account(), &request, "BAAL", 1700000000.0);
        assert_eq!(message.item_content, VECTOR_INSTANCE);
        assert_eq!(message.item_content.len(), 711);
        assert_eq!(message.item_hash, "b9663e878db4de1c5ba45a65426ff9ca8f4877476b1f85b091d2038205eeba57");
        assert_eq!(
            hex::encode(super::super::sign::eip191_digest(
                format!("ETH\n{}\nINSTANCE\n{}", message.sender, message.item_hash).as_bytes()
            )),
            "2d9bf484f4c11a13fa28364d834ab883bc6eef9e2b98ce49c438a78d0aebf10d"
        );
        assert_eq!(
            message.signature,
            "0x020925a18927b394e1c3fb45363b8ce2c64f9c29d22c15f2b1eaf6afe3b6d5c47047e357716a1853b7e39da5639d4e3d4cf5b247056d3dd1e29fba84316a8f261b"
        );
        assert_eq!(message.sender, "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
        assert_eq!((message.chain.as_str(), message.message_type.as_str()), ("ETH", "INSTANCE"));
        assert_eq!(message.item_type, "inline");
    }

    #[test]
    fn forget_vector_a3() {
        let hashes = vec!["b9663e878db4de1c5ba45a65426ff9ca8f4877476b1f85b091d2038205eeba57".to_owned()];
        let message = forget_message(&account(), &hashes, "teardown", "BAAL", 1700000100.0);
        assert_eq!(
            message.item_content,
            r#"{"address":"0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266","time":1700000100.0,"hashes":["b9663e878db4de1c5ba45a65426ff9ca8f4877476b1f85b091d2038205eeba57"],"reason":"teardown"}"#
        );
        assert_eq!(message.item_hash, "620516fbcae03812ca97017066bbeee3262227f54b13b8b87295063773e062eb");
        assert_eq!(
            message.signature,
            "0x6e52969a2ecc3811e3734ded5377411fdb98100f07af091c5b1bac5d323028cf26f887b66f322d906a446b6832aa3b6b89cd567c7bc14fb29712298cd090e4a91b"
        );
    }

    #[test]
    fn defaults_are_one_compute_unit_on_ubuntu_unpinned_when_asked() {
        let request = InstanceRequest::new("baal-agent-x", "ssh-ed25519 AAAA k");
        let message = instance_message(&account(), &request, "BAAL", 1.5);
        let content: serde_json::Value = serde_json::from_str(&message.item_content).unwrap();
        assert_eq!(content["resources"]["vcpus"], 1);
        assert_eq!(content["resources"]["memory"], 2048);
        assert_eq!(content["rootfs"]["size_mib"], 20480);
        assert_eq!(content["rootfs"]["parent"]["ref"], UBUNTU_24_ROOTFS);
        assert_eq!(content["payment"]["type"], "credit");
        assert!(content.get("requirements").is_none());
        assert_eq!(message.channel, "BAAL");
    }

    #[test]
    fn long_or_odd_names_stay_inside_the_schema() {
        let name = "x\"\n$(reboot)".repeat(200);
        let request = InstanceRequest::new(name, "k");
        let message = instance_message(&account(), &request, "BAAL", 1.0);
        let content: serde_json::Value = serde_json::from_str(&message.item_content).unwrap();
        assert_eq!(content["metadata"]["name"].as_str().unwrap().chars().count(), MAX_METADATA_VALUE);
    }
}
