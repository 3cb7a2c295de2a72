//! Each party in its place inside one agent, against real `baal-agent` processes and the scripted
//! LLM (which records every request): links a tool plants in the workspace are never followed into
//! the model's prompt nor brick the next start, and a visitor's prompt holds none of the owner's
//! memory.

mod common;

use baal_core::testing::openai::ScriptedLlm;
use common::{OWNER, start_agent, start_agent_in};

const OPERATOR_SECRET: &str = "TELEGRAM_BOT_TOKEN=sk-operator-5e2b9a";

/// The system message of every request the model has seen so far.
fn system_prompts(llm: &ScriptedLlm) -> Vec<String> {
    llm.completion_requests()
        .iter()
        .map(|request| request.messages()[0]["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn planted_links_never_reach_the_model_and_never_brick_a_restart() {
    let llm = ScriptedLlm::start().await;
    let mut agent = start_agent(&llm, &[]);
    // The operator's secrets, somewhere the agent's own user could read them.
    let operator = tempfile::tempdir().unwrap();
    let env_file = operator.path().join(".env");
    std::fs::write(&env_file, format!("{OPERATOR_SECRET}\n")).unwrap();
    let today = chrono::Utc::now().date_naive();
    let command = format!(
        "ln -sf {env} memory/MEMORY.md && ln -s {env} memory/{today}.md && ln -s {env} HEARTBEAT.md \
         && mkdir -p skills/planted && ln -s {env} skills/planted/SKILL.md && echo planted",
        env = env_file.display()
    );
    llm.push_tool_call("bash", serde_json::json!({ "command": command }).to_string()).push_text("done").push_text("ok");
    let events = agent.chat("plant them", OWNER, None).await;
    assert!(format!("{events:?}").contains("planted"), "{events:?}");
    agent.chat("what do you remember?", OWNER, None).await;
    let prompts = system_prompts(&llm);
    assert!(prompts.iter().all(|p| !p.contains("sk-operator")), "a planted link reached the model: {prompts:?}");

    // Dangling links where the start creates files, and a link where it creates a directory.
    let ws = agent.workspace();
    std::fs::remove_file(ws.join("memory/MEMORY.md")).unwrap();
    std::os::unix::fs::symlink(operator.path().join("written-by-the-agent"), ws.join("memory/MEMORY.md")).unwrap();
    std::fs::remove_dir_all(ws.join("skills")).unwrap();
    std::os::unix::fs::symlink(operator.path(), ws.join("skills")).unwrap();
    let dir = std::mem::replace(&mut agent.dir, tempfile::tempdir().unwrap());
    drop(agent);
    let agent = start_agent_in(&llm, &[], dir);
    llm.push_text("still here");
    let events = agent.chat("hello again", OWNER, None).await;
    assert_eq!(common::texts(&events), vec!["still here".to_owned()]);
    let names: Vec<String> =
        std::fs::read_dir(operator.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert_eq!(names, vec![".env".to_owned()], "the start wrote through a planted link");
    assert!(system_prompts(&llm).iter().all(|p| !p.contains("sk-operator")));
}

#[tokio::test]
async fn a_visitors_request_holds_none_of_the_owners_memory() {
    let llm = ScriptedLlm::start().await;
    let agent = start_agent(&llm, &[]);
    let today = chrono::Utc::now().date_naive();
    std::fs::write(agent.workspace().join("memory/MEMORY.md"), "# Memory\nThe owner banks with Acme.\n").unwrap();
    std::fs::write(agent.workspace().join(format!("memory/{today}.md")), "Owner's errand list.\n").unwrap();
    llm.push_text("Hi visitor").push_text("Hi owner");
    agent.chat("what do you know about your owner?", "4242", Some("visitor")).await;
    agent.chat("what do you know about me?", OWNER, None).await;
    let prompts = system_prompts(&llm);
    assert_eq!(prompts.len(), 2);
    assert!(!prompts[0].contains("Acme") && !prompts[0].contains("errand"), "{}", prompts[0]);
    assert!(prompts[0].contains("You are Testy") && prompts[0].contains("- **weather**"), "{}", prompts[0]);
    assert!(prompts[1].contains("Acme") && prompts[1].contains("errand"), "{}", prompts[1]);
}
