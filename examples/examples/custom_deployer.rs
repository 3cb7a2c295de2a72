//! A `Deployer` of your own, plugged into the platform.
//!
//! Baal decides *what* happens to an agent (create, deploy, chat, delete); a [`Deployer`] decides
//! *where* it runs. Here ours records every call and hands the work to Baal's
//! [`LocalDeployer`], which runs each agent as a `baal-agent` child process on 127.0.0.1. A real
//! one might start a container or call your cloud's API instead.
//!
//! The example then plays a user through an in-memory chat ([`MemoryMessenger`]): `/create` an
//! agent, talk to it, delete it. The scripted LLM stands in for LibertAI, so nothing leaves this
//! machine.
//!
//! Run: `cargo build --workspace && cargo run -p baal-examples --example custom_deployer`

#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use async_trait::async_trait;
use baal_core::deploy::local::LocalDeployer;
use baal_core::deploy::{AgentSpec, DeployError, DeployReporter, DeployStep, Deployer};
use baal_core::domain::{AgentId, Deployment, UserId};
use baal_core::platform::{Input, Platform};
use baal_core::proxy::http::HttpProxy;
use baal_core::store::AgentFilter;
use baal_core::testing::messenger::MemoryMessenger;
use baal_core::testing::openai::Reply;
use baal_examples::{Scratch, agent_binary};

/// Our deployer: writes down what the platform asks, then lets the local deployer do it.
struct RecordingDeployer {
    inner: LocalDeployer,
    calls: Mutex<Vec<String>>,
}

impl RecordingDeployer {
    fn record(&self, call: String) {
        println!("  [deployer] {call}");
        self.calls.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(call);
    }
}

#[async_trait]
impl Deployer for RecordingDeployer {
    fn name(&self) -> &'static str {
        "recording-local"
    }

    /// The steps shown as a progress list while an agent deploys.
    fn steps(&self) -> &'static [DeployStep] {
        self.inner.steps()
    }

    /// The platform passes a `reporter`: every step and fact we report is stored before we go
    /// on, so a crash mid-deployment never forgets what was started.
    async fn deploy(&self, spec: &AgentSpec, reporter: &dyn DeployReporter) -> Result<Deployment, DeployError> {
        // `spec` holds secrets (the LibertAI key, the agent's bearer secret); its Debug output
        // leaves them out, and so must we.
        self.record(format!("deploy agent {} ({:?}, model {})", spec.agent_id, spec.name, spec.model));
        let deployment = self.inner.deploy(spec, reporter).await?;
        println!("  [deployer] agent {} runs at {}", spec.agent_id, deployment.vm_url.as_deref().unwrap_or("?"));
        Ok(deployment)
    }

    async fn redeploy(&self, spec: &AgentSpec, reporter: &dyn DeployReporter) -> Result<Deployment, DeployError> {
        self.record(format!("redeploy agent {}", spec.agent_id));
        self.inner.redeploy(spec, reporter).await
    }

    /// Destroy works from the stored facts alone: the platform may call it after a restart.
    async fn destroy(
        &self,
        agent_id: AgentId,
        deployment: &Deployment,
        reporter: &dyn DeployReporter,
    ) -> Result<(), DeployError> {
        self.record(format!("destroy agent {agent_id}"));
        self.inner.destroy(agent_id, deployment, reporter).await
    }

    /// Local processes die with the platform; this brings them back at the next start.
    async fn restore_with_facts(&self, running: &[AgentSpec]) -> Vec<(AgentId, Result<Deployment, DeployError>)> {
        self.record(format!("restore {} agent(s)", running.len()));
        self.inner.restore_with_facts(running).await
    }

    /// What the platform tells users to expect ("this usually takes a few seconds"); without it
    /// the platform names no duration.
    fn usual_deploy_duration(&self) -> Option<std::time::Duration> {
        self.inner.usual_deploy_duration()
    }

    /// Who may have agents here: a wrapper must pass this on, or it would open a deployer that
    /// hosts agents for the operator only to everyone.
    fn tenancy(&self) -> baal_core::deploy::Tenancy {
        self.inner.tenancy()
    }
}

/// The user we play. In a private Telegram chat the chat id equals the user id.
const USER: UserId = 42;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Baal's binaries do this first too: one TLS crypto provider for every HTTP client.

    let scratch = Scratch::new().await?;
    let agent_bin = agent_binary()?;
    let deployer = Arc::new(RecordingDeployer {
        inner: LocalDeployer::new(scratch.path().join("agents-data"), agent_bin)?,
        calls: Mutex::default(),
    });
    let messenger = Arc::new(MemoryMessenger::new());
    let platform = Platform::new(
        // The example's user is the operator: where this host cannot keep tenants apart, the
        // local deployer creates agents for the operator's admins only.
        scratch.config.clone().with_admin_user_ids(vec![USER]),
        scratch.store.clone(),
        deployer.clone(),
        Arc::new(HttpProxy::new()?),
        messenger.clone(),
        scratch.secrets.clone(),
    );
    // Resumes unfinished deployments and starts delivering agents' queued messages.
    platform.start().await?;

    // What the LLM will answer, in order: the agent's introduction after its first deployment,
    // then our question. (Unscripted requests get an echo of the last user message.)
    scratch.llm.push(Reply::text("Hello! I am Scribe. I keep notes for you."));
    scratch.llm.push(Reply::text("Noted: buy oat milk."));

    println!("== create");
    say(&platform, "/create").await?;
    say(&platform, "Scribe").await?; // the wizard asks for a name first
    press(&platform, &messenger, "create_model:qwen3-coder-next").await?;
    press(&platform, &messenger, "create_confirm").await?;
    let agents = scratch.store.list_agents(&AgentFilter::all().owner(USER)).await?;
    let agent = agents.last().context("the wizard created no agent")?;
    println!("agent {} is {}", agent.id, agent.status.as_str());
    print_new(&messenger);

    println!("== chat");
    // After a deployment the owner's chat talks to the new agent: plain text goes to it.
    say(&platform, "Remember: buy oat milk").await?;
    print_new(&messenger);

    println!("== delete");
    say(&platform, &format!("/delete {}", agent.id)).await?;
    press(&platform, &messenger, &format!("delete_confirmed:{}", agent.id)).await?;
    print_new(&messenger);

    platform.shutdown().await;
    let calls = deployer.calls.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
    println!("== our deployer was called {} times", calls.len());
    if !calls.iter().any(|c| c.starts_with("deploy")) || !calls.iter().any(|c| c.starts_with("destroy")) {
        bail!("expected a deploy and a destroy, got {calls:?}");
    }
    Ok(())
}

/// The user types `text` in their chat. `wait_idle` lets background work (the deployment, the
/// agent's introduction) finish, so the example reads top to bottom.
async fn say(platform: &Platform, text: &str) -> anyhow::Result<()> {
    println!("> {text}");
    platform.handle(Input::from_text(USER, USER, text)).await?;
    platform.wait_idle().await;
    Ok(())
}

/// The user presses the newest button whose data or label contains `needle`.
async fn press(platform: &Platform, messenger: &MemoryMessenger, needle: &str) -> anyhow::Result<()> {
    let (data, message) = messenger
        .find_button(USER, needle)
        .with_context(|| format!("no button {needle:?}; the chat so far:\n{}", messenger.transcript(USER)))?;
    println!("> [press {data}]");
    let press_id = format!("press-{}", message.message_id);
    platform.handle(Input::button(USER, USER, data, message, press_id)).await?;
    platform.wait_idle().await;
    Ok(())
}

/// Prints the messages the bot sent since the last call, as they stand after edits.
fn print_new(messenger: &MemoryMessenger) {
    for shown in messenger.messages(USER) {
        if !shown.deleted {
            println!("< {}", shown.text.body.replace('\n', "\n  "));
        }
    }
    messenger.clear();
}
