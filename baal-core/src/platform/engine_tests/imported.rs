//! Agents imported from the Python Baal: only their owner talks to them until they are converted,
//! every job on one converts it, and their old numeric links keep working.

use super::doubles::Mode;
use super::{ADMIN, Harness, OWNER, VISITOR, config};
use crate::domain::{AgentId, AgentRuntime, AgentStatus, Deployment, NewAgent};
use secrecy::ExposeSecret as _;

use crate::secrets::SealContext;

const PYTHON_ID: i64 = 17;

/// An agent as `baal-cli import python` leaves it: the Python agent's numeric id as its slug,
/// running on its VM (which the fake deployer's scripted proxy answers for).
async fn imported(h: &Harness) -> AgentId {
    h.store.user_get_or_create(OWNER, None).await.unwrap();
    let then = "2025-06-01T10:00:00Z".parse().unwrap();
    let new = NewAgent::new(OWNER, "Oldie", "Be old.", "qwen3-coder-next").imported_from_python(PYTHON_ID, then);
    let agent = h.store.agent_create(new).await.unwrap();
    let sealed = h.secrets.seal_str_for(&SealContext::agent_token(agent.id), "python-secret").unwrap();
    h.store.agent_set_token(agent.id, &sealed).await.unwrap();
    let facts = Deployment {
        instance_hash: Some("a".repeat(64)),
        vm_url: Some("https://oldie.2n6.me".into()),
        ..Deployment::default()
    };
    h.store.agent_set_deployment(agent.id, &facts).await.unwrap();
    h.store.agent_set_status(agent.id, AgentStatus::Running).await.unwrap();
    agent.id
}

async fn token(h: &Harness, id: AgentId) -> String {
    let sealed = h.agent(id).await.token_sealed.unwrap();
    h.secrets.open_str_for(&SealContext::agent_token(id), &sealed).unwrap().expose_secret().to_owned()
}

#[tokio::test]
async fn visitors_wait_until_update_converts_the_agent_and_the_old_link_then_lets_them_in() {
    let h = Harness::new().await;
    let id = imported(&h).await;
    let link = format!("/start agent_{PYTHON_ID}");

    h.send(VISITOR, &link).await;
    assert!(h.last(VISITOR).contains("is being upgraded"), "{}", h.all(VISITOR));
    h.send(VISITOR, "hello?").await;
    assert!(h.proxy.requests.lock().unwrap().is_empty(), "no visitor turn reached the Python agent");

    // Its owner talks to it as before, on the same link.
    h.send(OWNER, &link).await;
    assert!(h.last(OWNER).contains("You're now chatting with <b>Oldie</b>"), "{}", h.all(OWNER));
    h.send(OWNER, "still there?").await;
    assert!(h.all(OWNER).contains("<b>Oldie</b>: You said: still there?"), "{}", h.all(OWNER));
    h.send(OWNER, "/list").await;
    assert!(h.all(OWNER).contains("Still runs the Python Baal's agent"), "{}", h.all(OWNER));

    h.send(OWNER, &format!("/update {id}")).await;
    let converted = h.deployer.converted.lock().unwrap().clone();
    assert_eq!(converted.len(), 1, "{}", h.all(OWNER));
    assert_eq!(converted[0].existing.instance_hash.as_deref(), Some(&*"a".repeat(64)), "converted where it runs");
    assert!(h.deployer.redeployed.lock().unwrap().is_empty(), "never redeployed as if it were ours");
    let agent = h.agent(id).await;
    assert_eq!((agent.runtime, agent.status), (AgentRuntime::Baal, AgentStatus::Running));
    assert_eq!(agent.slug, PYTHON_ID.to_string(), "the link stays");
    assert!(h.all(OWNER).contains("runs the new Baal now"), "{}", h.all(OWNER));
    // A fresh bearer secret: the old one sat where the Python agent's root tools could read it.
    let secret = token(&h, id).await;
    assert_ne!(secret, "python-secret");
    assert_eq!(converted[0].agent_secret.expose_secret(), secret, "the agent was given the stored secret");

    h.send(VISITOR, &link).await;
    assert!(h.last(VISITOR).contains("You're now chatting with <b>Oldie</b>"), "{}", h.all(VISITOR));
    h.send(VISITOR, "hi!").await;
    assert!(h.all(VISITOR).contains("<b>Oldie</b>: You said: hi!"), "{}", h.all(VISITOR));

    // The owner replaces the link: the number no longer opens it, and says why.
    h.send(OWNER, "/list").await;
    h.press(OWNER, &format!("agent_settings:{id}")).await;
    h.press(OWNER, &format!("replace_link_ask:{id}")).await;
    h.press(OWNER, &format!("replace_link:{id}")).await;
    assert_ne!(h.agent(id).await.slug, PYTHON_ID.to_string(), "{}", h.all(OWNER));
    h.send(VISITOR, &link).await;
    assert!(h.last(VISITOR).contains("replaced by the agent's owner"), "{}", h.last(VISITOR));
}

#[tokio::test]
async fn soul_repair_and_a_new_key_convert_an_imported_agent_and_a_failed_conversion_keeps_it_python() {
    // /soul: the new personality arrives with the conversion.
    let h = Harness::new().await;
    let id = imported(&h).await;
    h.send(OWNER, &format!("/soul {id}")).await;
    h.press(OWNER, "soul_edit").await;
    h.send(OWNER, "You are the upgraded one, kind and brief.").await;
    let converted = h.deployer.converted.lock().unwrap().clone();
    assert_eq!(converted.len(), 1, "{}", h.all(OWNER));
    assert_eq!(converted[0].system_prompt, "You are the upgraded one, kind and brief.");
    assert_eq!(h.agent(id).await.runtime, AgentRuntime::Baal);

    // /repair on a running imported agent converts it.
    let h = Harness::new().await;
    let id = imported(&h).await;
    h.send(OWNER, &format!("/repair {id}")).await;
    assert_eq!(h.deployer.converted.lock().unwrap().len(), 1, "{}", h.all(OWNER));
    assert_eq!(h.agent(id).await.runtime, AgentRuntime::Baal);

    // A conversion that fails leaves it running the Python agent, and says so.
    let h = Harness::with(config(), Mode::Fail).await;
    let id = imported(&h).await;
    h.send(OWNER, &format!("/update {id}")).await;
    let agent = h.agent(id).await;
    assert_eq!((agent.runtime, agent.status), (AgentRuntime::Python, AgentStatus::Running), "{}", h.all(OWNER));
    assert!(h.all(OWNER).contains("It keeps running as before"), "{}", h.all(OWNER));
    assert_eq!(token(&h, id).await, "python-secret", "the Python agent keeps its secret");
    h.send(VISITOR, &format!("/start agent_{PYTHON_ID}")).await;
    assert!(h.last(VISITOR).contains("is being upgraded"));

    // The operator converts from the command line's entry point.
    let h = Harness::new().await;
    let id = imported(&h).await;
    let outcome = h.platform.convert_imported(id, ADMIN).await.unwrap();
    assert_eq!(outcome, crate::platform::Converted::Converted, "{}", h.all(ADMIN));
    assert_eq!(h.platform.convert_imported(id, ADMIN).await.unwrap(), crate::platform::Converted::NotImported);
    assert_eq!(
        h.platform.convert_imported(AgentId(999), ADMIN).await.unwrap(),
        crate::platform::Converted::NoSuchAgent
    );
}

/// The health checks find an imported agent down: bringing it back converts it where it runs
/// (with a fresh secret), never a repair that could move it to a new VM without its workspace.
#[tokio::test]
async fn the_health_checks_bring_an_imported_agent_back_by_converting_it() {
    let config = config().with_health_check_interval(std::time::Duration::from_millis(100));
    let h = Harness::with(config, Mode::Succeed).await;
    let id = imported(&h).await;
    let proxy = h.proxy.clone();
    *h.deployer.on_convert.lock().unwrap() = Some(Box::new(move || *proxy.down.lock().unwrap() = false));
    *h.proxy.down.lock().unwrap() = true;
    h.platform.start().await.unwrap();
    for _ in 0..200 {
        if h.agent(id).await.runtime == AgentRuntime::Baal {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let agent = h.agent(id).await;
    assert_eq!((agent.runtime, agent.status), (AgentRuntime::Baal, AgentStatus::Running), "{}", h.all(OWNER));
    assert_eq!(h.deployer.converted.lock().unwrap().len(), 1);
    assert!(h.deployer.redeployed.lock().unwrap().is_empty() && h.deployer.deployed.lock().unwrap().is_empty());
    assert_ne!(token(&h, id).await, "python-secret");
    h.platform.shutdown().await;
}
