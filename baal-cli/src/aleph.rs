//! `baal-cli aleph …`: inspect what Baal would post to Aleph Cloud, and the operator's account.

use std::process::ExitCode;

use baal_core::config::Settings;
use baal_core::deploy::aleph::AlephOperator;
use baal_core::deploy::aleph::message::{SignedMessage, is_item_hash};
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

/// The signed message as pretty JSON (the nine fields that would be POSTed).
fn sign(operator: &AlephOperator, command: &SignCommand) -> anyhow::Result<SignedMessage> {
    match command {
        SignCommand::Instance { name, node } => {
            if let Some(node) = node
                && !is_item_hash(node)
            {
                anyhow::bail!("--node {node:?} is not a node hash (64 hex digits); see `baal-cli aleph status`");
            }
            Ok(operator.sign_instance(&format!("baal-agent-{name}"), node.as_deref()))
        }
        SignCommand::Forget { hashes } => {
            if let Some(bad) = hashes.iter().find(|h| !is_item_hash(h)) {
                anyhow::bail!("{bad:?} is not an instance hash (64 hex digits)");
            }
            Ok(operator.sign_forget(hashes))
        }
    }
}

pub async fn run(settings: &Settings, command: AlephCommand) -> anyhow::Result<ExitCode> {
    let operator = AlephOperator::from_settings(settings)?;
    match command {
        AlephCommand::Sign(command) => {
            let message = sign(&operator, &command)?;
            println!("{}", serde_json::to_string_pretty(&message)?);
        }
        AlephCommand::Status => {
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

    fn operator() -> AlephOperator {
        let settings = Settings::from_vars([
            ("ALEPH_PRIVATE_KEY", "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"),
            ("ALEPH_SSH_PUBKEY", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC068SD08xlTtMxTdmCe3rPVM/uA7SvgDUiQwP0FrIGS op"),
        ])
        .unwrap();
        AlephOperator::from_settings(&settings).unwrap()
    }

    #[test]
    fn sign_instance_prints_every_posted_field() {
        let command = SignCommand::Instance { name: "demo".into(), node: None };
        let json = serde_json::to_value(sign(&operator(), &command).unwrap()).unwrap();
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
    }

    #[test]
    fn sign_forget_refuses_what_is_not_a_hash() {
        let bad = SignCommand::Forget { hashes: vec!["nope".into()] };
        assert!(sign(&operator(), &bad).unwrap_err().to_string().contains("64 hex digits"));
        let good = SignCommand::Forget { hashes: vec!["ab".repeat(32)] };
        assert_eq!(sign(&operator(), &good).unwrap().message_type, "FORGET");
    }
}
