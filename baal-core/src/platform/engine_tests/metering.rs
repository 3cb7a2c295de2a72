//! Metering, budgets and the owner's settings through the engine: what the agents report is
//! stored once and charged to who really talked, limits refuse with words true for who pays, and
//! only the owner changes an agent's settings.

use chrono::Utc;

use super::*;
use crate::domain::{AgentPolicy, AgentUsage, Payer, usage_day};
use crate::proxy::{TurnUsage, UsageCause};
use crate::store::UsageQuery;
use crate::wire::{Budget, BudgetLimit};

fn today() -> chrono::NaiveDate {
    usage_day(Utc::now()).0
}

async fn rows(h: &Harness, query: UsageQuery) -> Vec<AgentUsage> {
    h.store.usage_rows(&query).await.unwrap()
}

/// Presses the button whose data contains `needle` and returns its message as it stands after.
async fn press_and_read(h: &Harness, user: UserId, needle: &str) -> String {
    let (data, message) =
        h.messenger.find_button(user, needle).unwrap_or_else(|| panic!("no button {needle:?} in {}", h.all(user)));
    h.press_data(user, &data, message).await;
    h.messenger.message(message).map(|m| m.text.body).unwrap_or_default()
}

fn tokens(rows: &[AgentUsage]) -> u64 {
    rows.iter().map(AgentUsage::total_tokens).sum()
}

#[tokio::test]
async fn a_python_agents_turns_are_estimated_and_a_metering_agents_are_read_from_it() {
    let h = Harness::new().await;
    let id = h.create_agent(OWNER, "Old").await;
    // The default script answers like a Python agent: text, then `done` without usage. (The
    // introduction after the deployment was such a turn too.)
    let before = rows(&h, UsageQuery::days(today(), today()).agent(id)).await;
    let (calls, prompt) =
        (before.iter().map(|r| r.calls).sum::<u64>(), before.iter().map(|r| r.prompt_tokens).sum::<u64>());
    h.send(OWNER, "estimate me, please").await;
    let stored = rows(&h, UsageQuery::days(today(), today()).agent(id)).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let row = &stored[0];
    assert_eq!((row.cause, row.user_id, row.calls, row.estimated), (UsageCause::OwnerTurn, OWNER, calls + 1, true));
    let instructions = h.agent(id).await.system_prompt.len();
    assert_eq!(row.prompt_tokens - prompt, ((instructions + "estimate me, please".len()) / 4 + 1) as u64);

    // An agent that meters reports `done` with usage and its records: those are stored as sent.
    h.proxy.set_script(|_| {
        let usage = TurnUsage { prompt_tokens: 100, completion_tokens: 20, calls: 1, estimated: false };
        vec![AgentEvent::Text { content: "Metered.".into() }, AgentEvent::Done { usage: Some(usage) }]
    });
    h.proxy.record_usage(&OWNER.to_string(), UsageCause::OwnerTurn, 100, 20);
    let (tokens_before, calls_before) = (tokens(&stored), row.calls);
    h.send(OWNER, "and me").await;
    let stored = rows(&h, UsageQuery::days(today(), today()).agent(id)).await;
    assert_eq!(tokens(&stored), tokens_before + 120, "{stored:?}");
    assert_eq!(stored.iter().map(|r| r.calls).sum::<u64>(), calls_before + 1, "no estimate of this turn: {stored:?}");
}

#[tokio::test]
async fn usage_is_stored_once_charged_to_who_talked_and_the_owner_is_told_at_80_and_100_percent() {
    let h = Harness::new().await;
    let id = h.create_agent(OWNER, "Meter").await;
    let slug = h.agent(id).await.slug;
    let policy = AgentPolicy::new().with_daily_token_budget(Some(1000));
    h.store.agent_set_policy(id, &policy).await.unwrap();
    // A metering agent: `done` carries usage, and `GET /usage` has the records.
    h.proxy.set_script(|_| {
        let usage = TurnUsage { prompt_tokens: 300, completion_tokens: 50, calls: 1, estimated: false };
        vec![AgentEvent::Text { content: "Hi.".into() }, AgentEvent::Done { usage: Some(usage) }]
    });
    h.send(VISITOR, &format!("/start agent_{slug}")).await;
    h.send(VISITOR, "hello").await;
    // The visitor's turn, a turn "for" a stranger who never wrote to the agent (a hostile agent
    // cannot spend a stranger's free tier: it is charged to the owner), and background work.
    h.proxy.record_usage(&VISITOR.to_string(), UsageCause::VisitorTurn, 300, 50);
    h.proxy.record_usage("777", UsageCause::VisitorTurn, 200, 10);
    h.proxy.record_usage("__heartbeat__", UsageCause::Heartbeat, 250, 40);
    h.messenger.clear();
    h.platform.inner.poll_pending_once().await.unwrap();
    h.platform.inner.poll_pending_once().await.unwrap();
    let day = UsageQuery::days(today(), today()).agent(id);
    assert_eq!(tokens(&rows(&h, day.user(VISITOR)).await), 350, "the visitor's own turn only");
    // The introduction after the deployment was an estimated owner turn.
    let intro = tokens(&rows(&h, day.user(OWNER)).await.into_iter().filter(|r| r.estimated).collect::<Vec<_>>());
    assert_eq!(tokens(&rows(&h, day.user(OWNER)).await) - intro, 500, "the stranger's and the heartbeat's");
    assert!(rows(&h, day.user(777)).await.is_empty());
    let notices = h.messenger.bodies(OWNER);
    assert_eq!(notices.iter().filter(|b| b.contains("80 %")).count(), 1, "{notices:?}");
    assert!(!notices.iter().any(|b| b.contains("whole daily budget")));

    h.proxy.record_usage("__heartbeat__", UsageCause::Heartbeat, 200, 0);
    h.platform.inner.poll_pending_once().await.unwrap();
    h.platform.inner.poll_pending_once().await.unwrap();
    let notices = h.messenger.bodies(OWNER);
    assert_eq!(notices.iter().filter(|b| b.contains("80 %")).count(), 1, "{notices:?}");
    assert_eq!(notices.iter().filter(|b| b.contains("whole daily budget")).count(), 1, "{notices:?}");
    assert_eq!(tokens(&rows(&h, day).await) - intro, 1050, "each record counted once");

    // Over budget: the next message is refused before it reaches the agent, in the owner's words.
    let before = h.proxy.requests.lock().unwrap().len();
    h.send(OWNER, &format!("/start {id}")).await;
    h.send(OWNER, "more?").await;
    assert!(h.last(OWNER).contains("daily budget of 1k tokens") && h.last(OWNER).contains("Settings"));
    h.send(VISITOR, "more?").await;
    let refusal = h.last(VISITOR);
    assert!(refusal.contains("all the tokens its owner allows") && !refusal.contains("Settings"), "{refusal}");
    assert_eq!(h.proxy.requests.lock().unwrap().len(), before, "nothing reached the agent");
}

#[tokio::test]
async fn each_turn_hands_the_agent_its_limits_and_a_spent_budget_is_said_for_who_pays() {
    let config = PlatformConfig { free_tier_daily_tokens: 5000, ..config() };
    let h = Harness::with(config, Mode::Succeed).await;
    let id = h.create_agent(OWNER, "Frugal").await;
    let slug = h.agent(id).await.slug;
    let policy = AgentPolicy::new().with_daily_token_budget(Some(90_000));
    h.store.agent_set_policy(id, &policy).await.unwrap();
    h.store.agent_set_visitor_tools(id, &["web_search".into(), "bash".into()]).await.unwrap();
    let spent = AgentUsage::new(id, today(), VISITOR, UsageCause::VisitorTurn, "qwen3-coder-next", Payer::Operator)
        .with_tokens(1000, 200, 2, false);
    h.store.usage_ingest(id, None, &[spent]).await.unwrap();
    h.send(VISITOR, &format!("/start agent_{slug}")).await;
    h.send(VISITOR, "hi").await;
    let (_, request, _) = h.proxy.requests.lock().unwrap().last().cloned().unwrap();
    assert_eq!(request.budget, Some(Budget::new(Some(90_000), Some(5000))));
    assert_eq!(request.turn_tokens, Some(3800), "the visitor's free tokens left today");
    assert_eq!(request.visitor_tools, Some(vec!["web_search".to_owned()]), "bash is not the operator's to give");

    // The agent stops mid-turn: the platform says why, in words for who pays, not the agent's.
    h.proxy.set_script(|_| {
        vec![
            AgentEvent::Text { content: "Part one.".into() },
            AgentEvent::BudgetSpent { limit: BudgetLimit::Turn, used: 3900, allowed: 3800 },
            AgentEvent::Error { content: "the agent's own words".into() },
            AgentEvent::done(),
        ]
    });
    h.send(VISITOR, "go on").await;
    let all = h.all(VISITOR);
    assert!(all.contains("Part one.") && all.contains("today's 5k free tokens"), "{all}");
    assert!(all.contains("only its owner can change") && !all.contains("/login"), "{all}");
    assert!(!all.contains("the agent's own words"), "{all}");
    h.send(OWNER, &format!("/start {id}")).await;
    h.send(OWNER, "me too").await;
    assert!(h.all(OWNER).contains("/login"), "the owner's key would change who pays");

    // Out of free tokens: refused before the agent is asked.
    let spent = AgentUsage::new(id, today(), VISITOR, UsageCause::VisitorTurn, "qwen3-coder-next", Payer::Operator)
        .with_tokens(3800, 0, 1, false);
    h.store.usage_ingest(id, None, &[spent]).await.unwrap();
    let before = h.proxy.requests.lock().unwrap().len();
    h.send(VISITOR, "again").await;
    assert!(h.last(VISITOR).contains("today's 5k free tokens"), "{}", h.last(VISITOR));
    assert_eq!(h.proxy.requests.lock().unwrap().len(), before);
}

#[tokio::test]
async fn the_owner_limits_visitors_pauses_sharing_and_replaces_the_link() {
    let h = Harness::new().await;
    let id = h.create_agent(OWNER, "Host").await;
    let old_slug = h.agent(id).await.slug;
    h.send(OWNER, "/list").await;
    let card = press_and_read(&h, OWNER, &format!("agent_settings:{id}")).await;
    assert!(card.contains("Visitor messages</b>: no limit"), "{card}");
    press_and_read(&h, OWNER, &format!("visitor_limit_menu:{id}")).await;
    let card = press_and_read(&h, OWNER, &format!("set_visitor_limit:{id}:10")).await;
    assert!(card.contains("10 messages a day each"), "{card}");

    h.send(VISITOR, &format!("/start agent_{old_slug}")).await;
    for i in 0..10 {
        h.send(VISITOR, &format!("visit {i}")).await;
        assert!(h.all(VISITOR).contains(&format!("You said: visit {i}")), "{}", h.all(VISITOR));
    }
    let before = h.proxy.requests.lock().unwrap().len();
    h.send(VISITOR, "the eleventh").await;
    assert!(h.last(VISITOR).contains("the 10 messages a day its owner allows each visitor"), "{}", h.last(VISITOR));
    assert_eq!(h.proxy.requests.lock().unwrap().len(), before, "refused before the agent");
    // The owner is never limited by it, and sees the visitor's count.
    h.send(OWNER, &format!("/start {id}")).await;
    for i in 0..11 {
        h.send(OWNER, &format!("own {i}")).await;
    }
    assert!(h.all(OWNER).contains("You said: own 10"), "{}", h.all(OWNER));
    h.send(OWNER, "/list").await;
    let card = press_and_read(&h, OWNER, &format!("agent_settings:{id}")).await;
    assert!(card.contains("Visitors today</b>: 1 (10 messages)"), "{card}");
    let usage = press_and_read(&h, OWNER, &format!("agent_usage:{id}")).await;
    assert!(usage.contains("user 22: 10 · 10 messages"), "{usage}");

    // Sharing off: visitors are turned away, at the link and mid-conversation.
    h.send(OWNER, "/list").await;
    press_and_read(&h, OWNER, &format!("agent_settings:{id}")).await;
    press_and_read(&h, OWNER, &format!("set_sharing:{id}:off")).await;
    h.send(VISITOR, "still there?").await;
    assert!(h.last(VISITOR).contains("paused sharing"), "{}", h.last(VISITOR));
    h.send(VISITOR, &format!("/start agent_{old_slug}")).await;
    assert!(h.last(VISITOR).contains("paused sharing"));
    press_and_read(&h, OWNER, &format!("set_sharing:{id}:on")).await;

    // A new link: the old one says it was replaced, the new one opens the agent.
    press_and_read(&h, OWNER, &format!("replace_link_ask:{id}")).await;
    let shown = press_and_read(&h, OWNER, &format!("replace_link:{id}")).await;
    let new_slug = h.agent(id).await.slug;
    assert_ne!(new_slug, old_slug);
    assert!(shown.contains(&new_slug), "{shown}");
    // The visitor still in the conversation the old link opened is let go, and the link too.
    h.send(VISITOR, "are you there?").await;
    assert!(h.last(VISITOR).contains("replaced by the agent's owner"), "{}", h.last(VISITOR));
    h.send(VISITOR, "hello?").await;
    assert!(h.last(VISITOR).contains("not talking to an agent"), "{}", h.last(VISITOR));
    h.send(VISITOR, &format!("/start agent_{old_slug}")).await;
    assert!(h.last(VISITOR).contains("replaced by the agent's owner"), "{}", h.last(VISITOR));
    h.send(VISITOR, &format!("/start agent_{new_slug}")).await;
    assert!(h.last(VISITOR).contains("You're now chatting with <b>Host</b>"));
}

#[tokio::test]
async fn settings_are_the_owners_alone_and_forged_values_are_refused() {
    let h = Harness::new().await;
    let id = h.create_agent(OWNER, "Mine").await;
    h.send(OWNER, "/list").await;
    let (_, message) = h.messenger.find_button(OWNER, &format!("agent_settings:{id}")).unwrap();
    // A visitor sending the owner's button data (from a message of their own chat) changes nothing.
    h.send(VISITOR, "/start").await;
    let visitors_message = h.messenger.messages(VISITOR).last().unwrap().message;
    for data in [format!("set_budget:{id}:1000"), format!("set_sharing:{id}:off"), format!("replace_link:{id}")] {
        h.press_data(VISITOR, &data, visitors_message).await;
    }
    let agent = h.agent(id).await;
    assert_eq!(agent.policy, AgentPolicy::default());
    let shown = h.messenger.message(visitors_message).unwrap().text.body;
    assert!(shown.contains("Only an agent's owner"), "{shown}");
    // The owner's own forged values: a tool the operator does not allow, an absurd budget.
    h.press_data(OWNER, &format!("visitor_tool:{id}:bash"), message).await;
    h.press_data(OWNER, &format!("set_budget:{id}:99999999999999999"), message).await;
    let agent = h.agent(id).await;
    assert!(!agent.visitor_tools.contains(&"bash".to_owned()));
    assert_eq!(agent.policy.daily_token_budget, None);
    let notices = h.messenger.press_notices();
    assert!(notices.iter().any(|n| n.contains("does not let visitors use that tool")), "{notices:?}");
    // A real budget is saved and handed to the agent at once.
    h.press_data(OWNER, &format!("set_budget:{id}:500000"), message).await;
    assert_eq!(h.agent(id).await.policy.daily_token_budget, Some(500_000));
    assert_eq!(h.proxy.budgets.lock().unwrap().last(), Some(&Budget::new(Some(500_000), Some(500_000))));
    // Taking a tool away and giving it back.
    h.press_data(OWNER, &format!("visitor_tool:{id}:web_search"), message).await;
    assert_eq!(h.agent(id).await.visitor_tools, ["web_fetch"]);
    h.press_data(OWNER, &format!("visitor_tool:{id}:web_search"), message).await;
    assert_eq!(h.agent(id).await.visitor_tools, ["web_fetch", "web_search"]);
}
