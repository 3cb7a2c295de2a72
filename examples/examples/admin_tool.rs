//! An in-house admin tool over Baal's `Store`: list agents and today's usage, open a sealed
//! secret, and delete an agent the way the bot and `baal-cli` do.
//!
//! Everything the platform knows lives behind the [`Store`] trait ([`baal_core::store::SqlStore`]: SQLite by
//! default, PostgreSQL to scale out). Secrets in it (users' LibertAI keys, agents' bearer
//! secrets) are sealed with a [`SecretBox`]; only a holder of the key can open them, and an
//! admin tool should still never print them.
//!
//! So that it runs anywhere, this example fills a fresh SQLite file with a few rows first. Against
//! a real deployment you would open the operator's database and key instead:
//!
//! ```ignore
//! let settings = baal_core::config::Settings::load()?;   // DATABASE_URL, BOT_ENCRYPTION_KEY, …
//! let store = SqlStore::open(&settings.database_url).await?;
//! let secrets = SecretBox::from_secret(settings.require_encryption_key()?)?;
//! ```
//!
//! Run: `cargo run -p baal-examples --example admin_tool`

#![forbid(unsafe_code)]

use anyhow::Context as _;
use baal_core::deploy::SilentReporter;
use baal_core::domain::{AgentStatus, NewAgent, UsageDecision};
use baal_core::platform::delete_agent;
use baal_core::secrets::{self, SealContext, SecretBox};
use baal_core::store::{AgentFilter, Store};
use chrono::{Days, Utc};
use secrecy::ExposeSecret as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("baal-example-").tempdir()?;
    let store = baal_examples::open_sqlite(dir.path()).await?;
    let secrets = SecretBox::from_secret(&secrets::generate_key()?)?;
    fill(store.as_ref(), &secrets).await?;

    println!("== agents");
    println!("{:>4}  {:<10} {:>6}  {:<10} {:<16} token", "id", "name", "owner", "status", "model");
    let agents = store.list_agents(&AgentFilter::all()).await?;
    for agent in &agents {
        // Sealed values are shown as "set"/"unset", never as bytes or text.
        let token = if agent.token_sealed.is_some() { "set" } else { "unset" };
        println!(
            "{:>4}  {:<10} {:>6}  {:<10} {:<16} {token}",
            agent.id.to_string(),
            agent.name,
            agent.owner_id,
            agent.status.as_str(),
            agent.model
        );
    }

    let today = Utc::now().date_naive();
    println!("== usage on {today} (UTC)");
    for row in store.usage_on(today).await? {
        println!("user {:>6}: {} message(s)", row.user_id, row.messages);
    }

    println!("== secrets");
    let agent = agents.first().context("no agent to check")?;
    let sealed = agent.token_sealed.as_deref().context("the first agent has no token")?;
    // `open_str_for` gives a `SecretString`: its Debug output is redacted, and the text is reached
    // only through `expose_secret`, which makes every use easy to find in review. The context
    // names the row: this token opens as this agent's only.
    let context = SealContext::agent_token(agent.id);
    let token = secrets.open_str_for(&context, sealed).context("the encryption key does not open this token")?;
    println!("agent {}'s token opened ({} characters; not shown)", agent.id, token.expose_secret().chars().count());
    // A different key cannot open it: the store alone leaks nothing.
    let other = SecretBox::from_secret(&secrets::generate_key()?)?;
    println!(
        "with another key: {}",
        other.open_str_for(&context, sealed).err().map_or("opened?!".into(), |e| e.to_string())
    );
    Ok(())
}

/// Two users, three agents (one deleted, hidden from listings), some messages counted today.
async fn fill(store: &dyn Store, secrets: &SecretBox) -> anyhow::Result<()> {
    store.user_get_or_create(1001, Some("alice")).await?;
    store.user_get_or_create(1002, Some("bob")).await?;
    store
        .user_set_api_key(1002, Some(secrets.seal_str_for(&SealContext::user_api_key(1002), "bob-libertai-key")?))
        .await?;

    for (owner, name, status) in [
        (1001, "Scribe", AgentStatus::Running),
        (1001, "Old", AgentStatus::Stopped),
        (1002, "Researcher", AgentStatus::Failed),
    ] {
        let agent = store.agent_create(NewAgent::new(owner, name, "You help.", "qwen3-coder-next")).await?;
        // Sealed once the row exists: the seal names the agent's id.
        let token =
            secrets.seal_str_for(&SealContext::agent_token(agent.id), secrets::generate_token().expose_secret())?;
        store.agent_set_token(agent.id, &token).await?;
        store.agent_set_status(agent.id, status).await?;
        if name == "Old" {
            // The one deletion procedure: it refuses while a bot is deploying the agent, tears
            // down what it runs on, records who deleted it, then hides it. "Old" never ran, so no
            // deployer is needed (a tool that deletes deployed agents returns the operator's,
            // as `baal_core::platform::deployer_from_settings` builds it).
            let no_deployer = || Err("this example sets no deployer up".to_owned());
            delete_agent(store, agent.id, "by admin_tool", no_deployer, &SilentReporter).await?;
        }
    }

    // The platform counts each message to an operator-paid agent like this, atomically.
    let today = Utc::now().date_naive();
    let resets_at =
        today.checked_add_days(Days::new(1)).context("date overflow")?.and_time(Default::default()).and_utc();
    for (user, messages) in [(1001, 3), (1002, 1)] {
        for _ in 0..messages {
            let decision = store.usage_consume(user, today, 50, resets_at).await?;
            anyhow::ensure!(matches!(decision, UsageDecision::Allowed { .. }), "unexpected refusal: {decision:?}");
        }
    }
    Ok(())
}
