//! `baal-cli aleph …`: inspect what Baal would post to Aleph Cloud, and the operator's account.

use std::process::ExitCode;

use anyhow::Context as _;
use baal_core::config::Settings;
use baal_core::deploy::aleph::AlephOperator;
use baal_core::deploy::aleph::message::{SignedMessage, agent_forget_message, is_item_hash};
use baal_core::deploy::aleph::sign::EthAccount;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum AlephCommand {
    /// Print the signed message a deployment or delete would post, without posting it.
    #[command(subcommand)]
    Sign(SignCommand),
    /// Show the operator's address, credit balance and the CRNs that pass the filters.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum SignCommand {
    /// An INSTANCE message for a new agent VM.
    Instance {
        /// The agent's name (the VM's metadata name is `baal-agent-NAME`).
        #[arg(long)]
        name: String,
        /// Pin the VM to this CRN (node hash), as a deployment does for the CRN it picked.
        #[arg(long)]
        node: Option<String>,
    },
    /// A FORGET message for instance hashes.
    Forget {
        /// Item hashes to forget.
        #[arg(required = true)]
        hashes: Vec<String>,
    },
}

/// The message `command` describes, signed now (not posted).
///
/// Only an INSTANCE carries `ALEPH_SSH_PUBKEY` (it becomes the VM's authorized key), so only
/// `sign instance` builds the full operator, which requires it; a FORGET is signed with the
/// wallet key alone, so an operator can forget VMs without an SSH key at hand.
fn sign(settings: &Settings, command: &SignCommand) -> anyhow::Result<SignedMessage> {
    match command {
        SignCommand::Instance { name, node } => {
            let operator = AlephOperator::from_settings(settings)?;
            if let Some(node) = node
                && !is_item_hash(node)
            {
                anyhow::bail!("--node {node:?} is not a node hash (64 hex digits); see `baal-cli aleph status`");
            }
            Ok(operator.sign_instance(&format!("baal-agent-{name}"), node.as_deref()))
        }
        SignCommand::Forget { hashes } => {
            let account = wallet(settings)?;
            if let Some(bad) = hashes.iter().find(|h| !is_item_hash(h)) {
                anyhow::bail!("{bad:?} is not an instance hash (64 hex digits)");
            }
            Ok(agent_forget_message(&account, hashes, &settings.aleph_channel))
        }
    }
}

/// The operator's wallet from `ALEPH_PRIVATE_KEY`, the one setting every signed message needs.
fn wallet(settings: &Settings) -> anyhow::Result<EthAccount> {
    let key = settings.aleph_private_key.as_ref().context(
        "ALEPH_PRIVATE_KEY: not set. Set the hex private key of the wallet that signs Aleph messages \
         (in the environment or in .env; see .env.example)",
    )?;
    Ok(EthAccount::from_hex(key)?)
}

pub async fn run(settings: &Settings, command: AlephCommand) -> anyhow::Result<ExitCode> {
    match command {
        AlephCommand::Sign(command) => {
            let message = sign(settings, &command)?;
            println!("{}", serde_json::to_string_pretty(&message)?);
        }
        AlephCommand::Status => {
            let operator = AlephOperator::from_settings(settings)?;
            println!("address:  {}", operator.address());
            println!("channel:  {}", operator.config().channel);
            match operator.credit_balance().await {
                Ok(credits) => println!("credits:  {credits} (1 USD = 1,000,000 credits)"),
                Err(err) => println!("credits:  unavailable ({err})"),
            }
            match operator.candidate_crns().await {
                Ok(crns) if crns.is_empty() => println!("CRNs:     none passes the filters"),
                Ok(crns) => {
                    println!("CRNs passing the filters, best first ({}):", crns.len());
                    println!("  {:<6} {:<6} {:<64} {:<30} url", "load", "score", "hash", "name");
                    for crn in crns {
                        println!(
                            "  {:<6.3} {:<6.3} {:<64} {:<30} {}",
                            crn.load, crn.score, crn.hash, crn.name, crn.url
                        );
                    }
                }
                Err(err) => println!("CRNs:     unavailable ({err})"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    const SSH: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC068SD08xlTtMxTdmCe3rPVM/uA7SvgDUiQwP0FrIGS op";

    fn settings(vars: &[(&str, &str)]) -> Settings {
        Settings::from_vars(vars.iter().copied()).unwrap()
    }

    fn forget(hashes: &[&str]) -> SignCommand {
        SignCommand::Forget { hashes: hashes.iter().map(|h| h.to_string()).collect() }
    }

    #[test]
    fn sign_instance_prints_every_posted_field() {
        let command = SignCommand::Instance { name: "demo".into(), node: None };
        let full = settings(&[("ALEPH_PRIVATE_KEY", KEY), ("ALEPH_SSH_PUBKEY", SSH)]);
        let json = serde_json::to_value(sign(&full, &command).unwrap()).unwrap();
        for field in
            ["chain", "sender", "type", "channel", "time", "item_type", "item_content", "item_hash", "signature"]
        {
            assert!(json.get(field).is_some(), "missing {field}");
        }
        assert_eq!(json["type"], "INSTANCE");
        assert_eq!(json["channel"], "BAAL");
        assert_eq!(json["sender"], "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
        let content: serde_json::Value = serde_json::from_str(json["item_content"].as_str().unwrap()).unwrap();
        assert_eq!(content["metadata"]["name"], "baal-agent-demo");
        assert_eq!(content["authorized_keys"][0], SSH);
    }

    #[test]
    fn sign_instance_names_the_missing_ssh_key() {
        let command = SignCommand::Instance { name: "demo".into(), node: None };
        let err = sign(&settings(&[("ALEPH_PRIVATE_KEY", KEY)]), &command).unwrap_err().to_string();
        assert!(err.contains("ALEPH_SSH_PUBKEY"), "{err}");
    }

    #[test]
    fn sign_forget_needs_only_the_wallet_key() {
        let wallet_only = settings(&[("ALEPH_PRIVATE_KEY", KEY)]);
        let message = sign(&wallet_only, &forget(&[&"ab".repeat(32)])).unwrap();
        assert_eq!(message.message_type, "FORGET");
        let err = sign(&settings(&[]), &forget(&[&"ab".repeat(32)])).unwrap_err().to_string();
        assert!(err.starts_with("ALEPH_PRIVATE_KEY: not set."), "{err}");
        let err = sign(&settings(&[("ALEPH_PRIVATE_KEY", "0x12")]), &forget(&[&"ab".repeat(32)])).unwrap_err();
        assert!(err.to_string().contains("ALEPH_PRIVATE_KEY"), "{err}");
    }

    #[test]
    fn sign_forget_is_what_a_delete_posts() {
        // The wallet-only FORGET must stay byte-for-byte the deployer's, but for the time.
        let hashes = ["ab".repeat(32), "cd".repeat(32)];
        let full = settings(&[("ALEPH_PRIVATE_KEY", KEY), ("ALEPH_SSH_PUBKEY", SSH), ("ALEPH_CHANNEL", "TEST")]);
        let deployer = AlephOperator::from_settings(&full).unwrap().sign_forget(&hashes);
        let wallet_only = settings(&[("ALEPH_PRIVATE_KEY", KEY), ("ALEPH_CHANNEL", "TEST")]);
        let cli = sign(&wallet_only, &forget(&[&hashes[0], &hashes[1]])).unwrap();
        let without_time = |message: &SignedMessage| {
            let mut json = serde_json::to_value(message).unwrap();
            let mut content: serde_json::Value = serde_json::from_str(json["item_content"].as_str().unwrap()).unwrap();
            content.as_object_mut().unwrap().remove("time");
            let object = json.as_object_mut().unwrap();
            for varying in ["time", "item_content", "item_hash", "signature"] {
                object.remove(varying);
            }
            (json, content)
        };
        assert_eq!(without_time(&cli), without_time(&deployer));
        assert_eq!(without_time(&cli).1["reason"], baal_core::deploy::aleph::message::AGENT_FORGET_REASON);
    }

    #[test]
    fn sign_forget_refuses_what_is_not_a_hash() {
        let wallet_only = settings(&[("ALEPH_PRIVATE_KEY", KEY)]);
        assert!(sign(&wallet_only, &forget(&["nope"])).unwrap_err().to_string().contains("64 hex digits"));
    }
}
