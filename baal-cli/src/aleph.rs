//! `baal-cli aleph …`: inspect what Baal would post to Aleph Cloud, the operator's account, and
//! the instances the wallet pays for beside what the database knows of them.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::process::ExitCode;

use anyhow::Context as _;
use baal_core::config::Settings;
use baal_core::deploy::aleph::message::{SignedMessage, agent_forget_message, is_item_hash};
use baal_core::deploy::aleph::reconcile::{ForgetOutcome, Holder, Reconciled};
use baal_core::deploy::aleph::sign::EthAccount;
use baal_core::deploy::aleph::{AlephConfig, AlephOperator};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum AlephCommand {
    /// Print the signed message a deployment or delete would post, without posting it.
    #[command(subcommand)]
    Sign(SignCommand),
    /// Show the operator's address, credit balance and the CRNs that pass the filters.
    Status,
    /// List every instance the wallet pays for beside what the database knows of it (agent, pool
    /// VM, or unknown); with `--forget-unknown`, forget the ones nothing uses.
    Reconcile(ReconcileArgs),
}

#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {
    /// Forget (signed FORGET, as a delete does) every instance unknown to the database or still
    /// held by a deleted agent, after a confirmation.
    #[arg(long)]
    forget_unknown: bool,
    /// Do not ask for confirmation (for scripts).
    #[arg(long)]
    yes: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
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
        AlephCommand::Reconcile(args) => return reconcile(settings, &args).await,
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

/// An operator view with the wallet alone: listing and forgetting need neither the SSH key nor
/// the agent binary.
fn wallet_operator(settings: &Settings) -> anyhow::Result<AlephOperator> {
    let mut config = AlephConfig::new(
        &settings.aleph_api_url,
        &settings.aleph_crn_list_url,
        &settings.aleph_domain_gateway_url,
        "",
        &settings.aleph_ssh_privkey_path,
        "",
    );
    config.channel = settings.aleph_channel.clone();
    Ok(AlephOperator::new(wallet(settings)?, config)?)
}

/// One line of `aleph reconcile --json`.
#[derive(Debug, serde::Serialize)]
struct InstanceRow<'a> {
    hash: &'a str,
    since: Option<String>,
    name: Option<&'a str>,
    channel: Option<&'a str>,
    node_hash: Option<&'a str>,
    held_by: HeldBy<'a>,
    leak: bool,
}

#[derive(Debug, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum HeldBy<'a> {
    Agent { agent_id: i64, owner_id: i64, name: &'a str, deleted: bool },
    PoolVm { pool_id: i64, status: String },
    Unknown,
}

impl<'a> From<&'a Reconciled> for InstanceRow<'a> {
    fn from(r: &'a Reconciled) -> Self {
        let held_by = match &r.holder {
            Holder::Agent { agent_id, owner_id, name, deleted } => {
                HeldBy::Agent { agent_id: agent_id.0, owner_id: *owner_id, name, deleted: *deleted }
            }
            Holder::PoolVm { pool_id, status } => HeldBy::PoolVm { pool_id: *pool_id, status: status.to_string() },
            _ => HeldBy::Unknown,
        };
        InstanceRow {
            hash: &r.instance.hash,
            since: r.instance.since.map(|t| t.format("%Y-%m-%d %H:%M").to_string()),
            name: r.instance.name.as_deref(),
            channel: r.instance.channel.as_deref(),
            node_hash: r.instance.node_hash.as_deref(),
            held_by,
            leak: r.holder.is_leak(),
        }
    }
}

fn held_by_text(held_by: &HeldBy<'_>) -> String {
    match held_by {
        HeldBy::Agent { agent_id, owner_id, name, deleted: false } => {
            format!("agent {agent_id} {name:?} of user {owner_id}")
        }
        HeldBy::Agent { agent_id, owner_id, name, deleted: true } => {
            format!("UNKNOWN: deleted agent {agent_id} {name:?} of user {owner_id}")
        }
        HeldBy::PoolVm { pool_id, status } => format!("pool VM {pool_id} ({status})"),
        HeldBy::Unknown => "UNKNOWN".into(),
    }
}

/// What `aleph reconcile --json` prints.
#[derive(Debug, serde::Serialize)]
struct Report<'a> {
    wallet: &'a str,
    instances: Vec<InstanceRow<'a>>,
    forgotten: Vec<&'a str>,
    not_forgotten: Vec<NotForgotten<'a>>,
}

#[derive(Debug, serde::Serialize)]
struct NotForgotten<'a> {
    hash: &'a str,
    error: &'a str,
}

async fn reconcile(settings: &Settings, args: &ReconcileArgs) -> anyhow::Result<ExitCode> {
    let operator = wallet_operator(settings)?;
    let store = crate::open_store(settings).await?;
    let reconciled = operator.reconcile(&store, &store).await?;
    let leaks: Vec<String> =
        reconciled.iter().filter(|r| r.holder.is_leak()).map(|r| r.instance.hash.clone()).collect();
    let rows: Vec<InstanceRow<'_>> = reconciled.iter().map(InstanceRow::from).collect();
    if !args.json {
        print_rows(operator.address(), &rows, leaks.len(), args.forget_unknown);
    }
    let mut outcomes: Vec<ForgetOutcome> = Vec::new();
    if args.forget_unknown && !leaks.is_empty() {
        if !args.yes && !confirm_forget(leaks.len())? {
            eprintln!("Nothing forgotten.");
            return Ok(ExitCode::FAILURE);
        }
        outcomes = operator.forget_instances(&leaks).await;
    }
    let forgotten: Vec<&str> = outcomes.iter().filter(|o| o.error.is_none()).map(|o| o.hash.as_str()).collect();
    let not_forgotten: Vec<NotForgotten<'_>> =
        outcomes.iter().filter_map(|o| o.error.as_deref().map(|error| NotForgotten { hash: &o.hash, error })).collect();
    if args.json {
        let report = Report { wallet: operator.address(), instances: rows, forgotten, not_forgotten };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for hash in &forgotten {
            println!("Forgotten: {hash}");
        }
        for failed in &not_forgotten {
            eprintln!("NOT forgotten: {} ({})", failed.hash, failed.error);
        }
    }
    let failed = outcomes.iter().any(|o| o.error.is_some());
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn print_rows(wallet: &str, rows: &[InstanceRow<'_>], leaks: usize, forgetting: bool) {
    println!("Wallet {wallet} pays for {} instance(s); {leaks} used by nothing in the database.", rows.len());
    if rows.is_empty() {
        return;
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.hash.to_owned(),
                r.since.clone().unwrap_or_else(|| "-".into()),
                r.name.unwrap_or("-").to_owned(),
                held_by_text(&r.held_by),
            ]
        })
        .collect();
    crate::print_table(&["INSTANCE", "SINCE (UTC)", "NAME", "HELD BY"], &cells);
    if leaks > 0 && !forgetting {
        println!("`baal-cli aleph reconcile --forget-unknown` forgets the {leaks} UNKNOWN one(s).");
    }
}

/// Asks on the terminal; refuses outright where there is none to ask on.
fn confirm_forget(count: usize) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "not forgetting {count} instance(s): there is no terminal to confirm on. Pass --yes to forget without asking."
        );
    }
    // The question goes to stderr, so `--json` output stays parseable.
    let mut stderr = std::io::stderr();
    write!(stderr, "Forget {count} instance(s) nothing in the database uses? Their VMs stop for good. [y/N] ")?;
    stderr.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}
