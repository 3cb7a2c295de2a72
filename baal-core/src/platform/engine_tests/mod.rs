//! Scripted conversations through the engine with an in-memory messenger.

mod doubles;
mod imported;
mod metering;
mod streaming;

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use self::doubles::{FakeDeployer, Mode, RestoreOutcome, ScriptedProxy};
use super::{Input, InputKind, Platform, PlatformConfig};
use crate::domain::{AgentId, AgentStatus, UserId};
use crate::domain::{EventOutcome, EventStep, Role};
use crate::platform::MessengerError;
use crate::proxy::{AgentEvent, PendingMessage};
use crate::secrets::{SealContext, SecretBox};
use crate::store::{AgentFilter, Store};
use crate::testing::db::{self, TestDb};
use crate::testing::messenger::{Call, MemoryMessenger};

const OWNER: UserId = 11;
const VISITOR: UserId = 22;
const ADMIN: UserId = 99;
const GOOD_KEY: &str = "lib-key-good-9876";

struct Harness {
    platform: Platform,
    messenger: Arc<MemoryMessenger>,
    store: Arc<dyn Store>,
    db: Arc<TestDb>,
    deployer: Arc<FakeDeployer>,
    proxy: Arc<ScriptedProxy>,
    secrets: Arc<SecretBox>,
}

fn config() -> PlatformConfig {
    PlatformConfig {
        admin_user_ids: vec![ADMIN],
        bot_username: Some("baal_test_bot".into()),
        libertai_api_key: Some(SecretString::from("operator-key")),
        edit_interval: Duration::ZERO,
        ..PlatformConfig::default()
    }
}

impl Harness {
    async fn new() -> Self {
        Self::with(config(), Mode::Succeed).await
    }

    /// A platform over a fresh SQLite-file store.
    async fn with(config: PlatformConfig, mode: Mode) -> Self {
        Self::over(config, Arc::new(db::sqlite().await), mode)
    }

    fn over(config: PlatformConfig, db: Arc<TestDb>, mode: Mode) -> Self {
        let store = db.shared();
        let messenger = Arc::new(MemoryMessenger::new());
        let deployer = Arc::new(FakeDeployer::new(mode));
        let proxy = Arc::new(ScriptedProxy::new());
        let secrets = Arc::new(SecretBox::from_encoded_key(&"ab".repeat(32)).unwrap());
        let platform =
            Platform::new(config, store.clone(), deployer.clone(), proxy.clone(), messenger.clone(), secrets.clone());
        Harness { platform, messenger, store, db, deployer, proxy, secrets }
    }

    /// A second platform over the same store (a restart).
    fn restart(&self, config: PlatformConfig, mode: Mode) -> Self {
        Self::over(config, self.db.clone(), mode)
    }

    async fn send(&self, user: UserId, text: &str) {
        self.platform.handle(Input::from_text(user, user, text)).await.unwrap();
        self.platform.wait_idle().await;
    }

    async fn press(&self, user: UserId, needle: &str) {
        let (data, message) = self
            .messenger
            .find_button(user, needle)
            .unwrap_or_else(|| panic!("no button {needle:?} in {}", self.messenger.transcript(user)));
        self.press_data(user, &data, message).await;
    }

    async fn press_data(&self, user: UserId, data: &str, message: super::MessageRef) {
        let input = Input {
            user_id: user,
            username: None,
            chat_id: user,
            message: None,
            kind: InputKind::Button { data: data.into(), message, press_id: format!("press-{data}") },
        };
        self.platform.handle(input).await.unwrap();
        self.platform.wait_idle().await;
    }

    fn last(&self, user: UserId) -> String {
        self.messenger.last_text(user)
    }

    fn all(&self, user: UserId) -> String {
        self.messenger.transcript(user)
    }

    /// Creates and deploys an agent through the wizard; returns its id.
    async fn create_agent(&self, user: UserId, name: &str) -> AgentId {
        self.send(user, "/create").await;
        self.send(user, name).await;
        self.press(user, "create_model:qwen3-coder-next").await;
        self.press(user, "create_confirm").await;
        let agents = self.store.list_agents(&AgentFilter::all().owner(user)).await.unwrap();
        agents.last().unwrap().id
    }

    async fn agent(&self, id: AgentId) -> crate::domain::Agent {
        self.store.agent_get(id).await.unwrap().unwrap()
    }

    /// Whoever holds `id`'s lease died long ago: the lease has run out (its last renewal is
    /// rewritten into the past).
    async fn lease_runs_out(&self, id: AgentId) {
        let holder = self.agent(id).await.lease.expect("someone holds the lease").holder;
        let now = chrono::Utc::now();
        assert!(self.store.agent_lease_take(id, &holder, now - chrono::Duration::seconds(1), now).await.unwrap());
    }
}

#[tokio::test]
async fn start_shows_the_welcome_with_its_buttons() {
    let h = Harness::new().await;
    h.send(OWNER, "/start").await;
    assert!(h.last(OWNER).contains("Welcome to Baal"));
    let data: Vec<_> = h.messenger.last_buttons(OWNER).iter().map(|b| format!("{b:?}")).collect();
    for expected in ["quick_create", "quick_list", "quick_account", "quick_help"] {
        assert!(data.iter().any(|d| d.contains(expected)), "{expected} missing from {data:?}");
    }
    h.press(OWNER, "quick_help").await;
    assert!(h.last(OWNER).contains("/create"));
    assert!(!h.last(OWNER).contains("/pool"), "non-admins don't see /pool in help");
    h.send(ADMIN, "/help").await;
    assert!(h.last(ADMIN).contains("/pool"));
}

#[tokio::test]
async fn help_and_the_deploy_card_state_the_deployers_usual_duration() {
    let h = Harness::new().await;
    for (usual, said) in [
        (Some(Duration::from_secs(2)), Some("a few seconds")),
        (Some(Duration::from_secs(90)), Some("a minute or two")),
        (Some(Duration::from_secs(600)), Some("about 10 minutes")),
        (None, None),
    ] {
        *h.deployer.usual_duration.lock().unwrap() = usual;
        h.send(OWNER, "/help").await;
        let help = h.last(OWNER);
        h.send(OWNER, "/create").await;
        h.send(OWNER, "Timed").await;
        h.press(OWNER, "create_model:qwen").await;
        let card = h.last(OWNER);
        assert!(card.contains("Ready to deploy"), "{card}");
        match said {
            Some(said) => {
                assert!(help.contains(&format!("Wait {said} while Baal deploys it")), "{usual:?}: {help}");
                assert!(card.contains(&format!("; this usually takes {said}.")), "{usual:?}: {card}");
            }
            // An unknown duration is not guessed.
            None => {
                assert!(help.contains("Wait while Baal deploys it"), "{help}");
                assert!(card.contains("Baal deploys it on its own machine.\n"), "{card}");
            }
        }
        if usual != Some(Duration::from_secs(90)) {
            assert!(!help.contains("minute or two") && !card.contains("minute or two"), "{help}\n{card}");
        }
        h.send(OWNER, "/cancel").await;
    }
}

#[tokio::test]
async fn the_wizard_creates_deploys_and_opens_a_chat_with_a_share_link() {
    let h = Harness::new().await;
    let id = h.create_agent(OWNER, "  Helper  ").await;
    let agent = h.agent(id).await;
    assert_eq!(agent.name, "Helper");
    assert_eq!(agent.status, AgentStatus::Running);
    assert_eq!(agent.deployment.vm_url.as_deref(), Some(&*format!("http://agent-{id}.test")));
    let all = h.all(OWNER);
    let link = format!("https://t.me/baal_test_bot?start=agent_{}", agent.slug);
    assert!(all.contains(&link), "share link after deployment: {all}");
    assert!(all.contains("is deployed and answering"));
    // Every step was recorded before it was taken.
    let events: Vec<_> =
        h.store.events_for(id).await.unwrap().iter().map(|e| format!("{}:{}", e.step, e.outcome)).collect();
    assert_eq!(
        events,
        [
            "deploy:started",
            "provision:started",
            "provision:succeeded",
            "ship:started",
            "ship:succeeded",
            "health:started",
            "health:succeeded",
            "deploy:succeeded"
        ]
    );
    // The introduction ran in the owner's own conversation.
    let requests = h.proxy.requests.lock().unwrap().clone();
    assert_eq!(requests[0].1.chat_id, OWNER.to_string());
    assert_eq!(requests[0].1.role, Some(Role::Owner));
    // The spec carried the operator's key (owner not logged in) and the agent's own secret.
    let spec = h.deployer.deployed.lock().unwrap()[0].clone();
    assert_eq!(secrecy::ExposeSecret::expose_secret(&spec.libertai_api_key), "operator-key");
    assert_eq!(spec.owner_chat_id, OWNER.to_string());

    // Chat mode is on: text goes to the agent.
    h.send(OWNER, "hello there").await;
    assert!(h.all(OWNER).contains("You said: hello there"));

    // The card in /list shows the share link.
    h.send(OWNER, "/list").await;
    assert!(h.all(OWNER).contains(&link));
}

#[tokio::test]
async fn bad_names_are_refused_and_html_is_escaped() {
    let h = Harness::new().await;
    h.send(OWNER, "/create").await;
    h.send(OWNER, "   ").await;
    assert!(h.last(OWNER).contains("can't be empty"));
    h.send(OWNER, &"x".repeat(65)).await;
    assert!(h.last(OWNER).contains("too long"));
    h.send(OWNER, "two\nlines").await;
    assert!(h.last(OWNER).contains("one line"));
    h.send(OWNER, "<b>x</b>").await;
    let menu = h.messenger.last_with_buttons(OWNER).unwrap();
    assert!(menu.text.body.contains("&lt;b&gt;x&lt;/b&gt;"), "{}", menu.text.body);
    assert!(!menu.text.body.contains("<b>x</b>"));
    h.press(OWNER, "create_model:glm-4.7").await;
    h.press(OWNER, "create_confirm").await;
    let agents = h.store.list_agents(&AgentFilter::all().owner(OWNER)).await.unwrap();
    assert_eq!(agents[0].name, "<b>x</b>");
    assert_eq!(agents[0].model, "glm-4.7");
    assert!(!h.all(OWNER).contains("<b><b>x</b>"));
    // 64 characters is fine.
    h.send(OWNER, "/create").await;
    h.send(OWNER, &"y".repeat(64)).await;
    assert!(h.last(OWNER).contains("Step 2 of 2"));
}

#[tokio::test]
async fn a_command_mid_wizard_ends_it_and_runs() {
    let h = Harness::new().await;
    h.send(OWNER, "/create").await;
    h.send(OWNER, "/list").await;
    let all = h.all(OWNER);
    assert!(all.contains("Agent creation stopped"));
    assert!(all.contains("You have no agents yet"));
    h.send(OWNER, "Not a name").await;
    assert!(h.last(OWNER).contains("not talking to an agent"));
    // /cancel in the wizard, and with nothing to cancel.
    h.send(OWNER, "/create").await;
    h.send(OWNER, "/cancel").await;
    assert!(h.last(OWNER).contains("creation cancelled"));
    h.send(OWNER, "/cancel").await;
    assert!(h.last(OWNER).contains("nothing to cancel"));
    // The cancel button, and a stale wizard button afterwards.
    h.send(OWNER, "/create").await;
    h.send(OWNER, "Bob").await;
    let (data, message) = h.messenger.find_button(OWNER, "create_model:qwen").unwrap();
    h.press(OWNER, "create_model:qwen").await;
    h.press(OWNER, "create_cancel").await;
    assert!(h.last(OWNER).contains("creation cancelled"));
    h.press_data(OWNER, &data, message).await;
    assert!(h.messenger.press_notices().iter().any(|n| n.contains("expired")));
    assert!(h.store.list_agents(&AgentFilter::all()).await.unwrap().is_empty());
    // /confirm works in the confirm step.
    h.send(OWNER, "/create").await;
    h.send(OWNER, "Carl").await;
    h.press(OWNER, "create_model:qwen").await;
    h.send(OWNER, "/confirm").await;
    assert_eq!(h.store.list_agents(&AgentFilter::all()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn flows_survive_a_restart_and_expire_after_silence() {
    let h = Harness::new().await;
    h.send(OWNER, "/create").await;
    // Restarted: the wizard is still there.
    let h2 = h.restart(config(), Mode::Succeed);
    h2.send(OWNER, "Persisted").await;
    assert!(h2.last(OWNER).contains("Step 2 of 2"));
    // A platform whose flows expire at once treats the next text as chat.
    let h3 = h.restart(PlatformConfig { flow_timeout: Duration::ZERO, ..config() }, Mode::Succeed);
    h3.send(OWNER, "Late text").await;
    assert!(h3.last(OWNER).contains("not talking to an agent"));
}

#[tokio::test]
async fn deep_links_for_owner_visitor_unknown_and_deleted_agents() {
    let h = Harness::new().await;
    let id = h.create_agent(OWNER, "Linky").await;
    let slug = h.agent(id).await.slug;
    h.send(VISITOR, &format!("/start agent_{slug}")).await;
    assert!(h.last(VISITOR).contains("You're now chatting with <b>Linky</b>"));
    h.send(VISITOR, "hi from a visitor").await;
    let requests = h.proxy.requests.lock().unwrap().clone();
    let (_, request, _) = requests.last().unwrap();
    assert_eq!(request.role, Some(Role::Visitor));
    assert_eq!(request.chat_id, VISITOR.to_string());
    // Numeric ids: the owner only.
    h.send(VISITOR, &format!("/start agent_{id}")).await;
    assert!(h.last(VISITOR).contains("share link"));
    h.send(OWNER, &format!("/start {id}")).await;
    assert!(h.last(OWNER).contains("You're now chatting with"));
    h.send(VISITOR, "/start agent_doesnotexist").await;
    assert!(h.last(VISITOR).contains("doesn't exist"));
    // Deleted.
    h.send(OWNER, &format!("/delete {id}")).await;
    h.press(OWNER, &format!("delete_confirmed:{id}")).await;
    assert!(h.last(OWNER).contains("is deleted"));
    assert_eq!(h.deployer.destroyed.lock().unwrap().len(), 1);
    h.send(VISITOR, &format!("/start agent_{slug}")).await;
    assert!(h.last(VISITOR).contains("doesn't exist"));
    // The visitor who was in chat mode is told the agent is gone.
    h.send(VISITOR, "still there?").await;
    assert!(h.last(VISITOR).contains("no longer exists"));
}

#[tokio::test]
async fn the_51st_free_message_of_the_day_is_refused() {
    let h = Harness::new().await;
    let id = h.create_agent(OWNER, "Counter").await;
    let slug = h.agent(id).await.slug;
    h.send(VISITOR, &format!("/start agent_{slug}")).await;
    for i in 0..50 {
        h.send(VISITOR, &format!("message {i}")).await;
        assert!(
            h.last(VISITOR).contains(&format!("You said: message {i}"))
                || h.all(VISITOR).contains(&format!("message {i}"))
        );
    }
    h.send(VISITOR, "one too many").await;
    let all = h.all(VISITOR);
    assert!(all.contains("Daily limit reached"), "{}", h.last(VISITOR));
    assert!(!all.contains("You said: one too many"));
    // A visitor's own key would not change who pays for this agent: they are not told to get one.
    let refusal = h.last(VISITOR);
    assert!(refusal.contains("owner can lift the limit") && !refusal.contains("Connect"), "{refusal}");
    // The owner, whose key would pay for their agents, is offered it.
    for i in 0..51 {
        h.send(OWNER, &format!("mine {i}")).await;
    }
    assert!(h.last(OWNER).contains("Connect your own LibertAI key"), "{}", h.last(OWNER));
    assert!(h.messenger.last_buttons(OWNER).iter().any(|b| format!("{b:?}").contains("account_login")));
}

/// A loopback LibertAI `/credits/balance` endpoint accepting only [`GOOD_KEY`].
async fn balance_server() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_lowercase();
                let ok = request.starts_with("get /v1/credits/balance")
                    && request.contains(&format!("authorization: bearer {}", GOOD_KEY.to_lowercase()));
                let (status, body) = if ok { ("200 OK", r#"{"balance": 12.5}"#) } else { ("401 Unauthorized", "{}") };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn login_deletes_the_key_message_first_and_never_echoes_the_key() {
    let base = balance_server().await;
    let h = Harness::with(PlatformConfig { libertai_api_base_url: base, ..config() }, Mode::Succeed).await;
    // Mid-wizard, too: the key message goes first.
    h.send(OWNER, "/create").await;
    for (key, expect) in [("wrong-key-0000", "doesn't accept"), (GOOD_KEY, "9876 connected")] {
        h.messenger.clear();
        let message = h.messenger.user_message(OWNER, &format!("/login {key}"));
        let mut input = Input::from_text(OWNER, OWNER, &format!("/login {key}"));
        input.message = Some(message);
        h.platform.handle(input).await.unwrap();
        h.platform.wait_idle().await;
        assert_eq!(h.messenger.calls()[0], Call::Delete { message }, "the key message is deleted first");
        assert!(h.messenger.message(message).unwrap().deleted);
        assert!(h.all(OWNER).contains(expect), "{}", h.all(OWNER));
        let shown = format!("{:?}", h.messenger.calls());
        assert!(!shown.contains(&key[..key.len() - 4]), "key echoed: {shown}");
    }
    let user = h.store.user_get(OWNER).await.unwrap().unwrap();
    let sealed = user.api_key_sealed.unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains(GOOD_KEY));
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(
            &h.secrets.open_str_for(&SealContext::user_api_key(OWNER), &sealed).unwrap()
        ),
        GOOD_KEY
    );
    assert!(h.secrets.open_for(&SealContext::user_api_key(ADMIN), &sealed).is_err(), "sealed for its owner's row only");
    h.send(OWNER, "/account").await;
    assert!(h.last(OWNER).contains("12.50 credits"));
    assert!(h.last(OWNER).contains("…9876") || h.last(OWNER).contains("9876"));
    // An agent made now runs on the owner's key, so a visitor isn't counted against the free tier.
    let id = h.create_agent(OWNER, "Paid").await;
    let spec = h.deployer.deployed.lock().unwrap().last().cloned().unwrap();
    assert_eq!(secrecy::ExposeSecret::expose_secret(&spec.libertai_api_key), GOOD_KEY);
    let slug = h.agent(id).await.slug;
    h.send(VISITOR, &format!("/start agent_{slug}")).await;
    h.send(VISITOR, "free?").await;
    let (day, _) = crate::domain::usage_day(chrono::Utc::now());
    assert_eq!(h.store.usage_get(VISITOR, day).await.unwrap(), 0);
    // Logging out puts running agents back on the operator's key.
    h.send(OWNER, "/logout").await;
    assert!(h.all(OWNER).contains("free tier again"));
    let spec = h.deployer.redeployed.lock().unwrap().last().cloned().unwrap();
    assert_eq!(secrecy::ExposeSecret::expose_secret(&spec.libertai_api_key), "operator-key");
    h.send(OWNER, "/login").await;
    assert!(h.last(OWNER).contains("Usage: /login"));
}

#[tokio::test]
async fn streaming_edits_one_message_and_the_final_text_lands() {
    let h = Harness::new().await;
    h.create_agent(OWNER, "Streamer").await;
    h.proxy.set_script(|_| {
        vec![
            AgentEvent::Text { content: "one ".into() },
            AgentEvent::Text { content: "two ".into() },
            AgentEvent::Text { content: "three".into() },
            AgentEvent::done(),
        ]
    });
    h.messenger.clear();
    h.send(OWNER, "count").await;
    let answers: Vec<_> = h.messenger.messages(OWNER).into_iter().filter(|m| m.text.body.contains("one")).collect();
    assert_eq!(answers.len(), 1, "one message for the whole answer");
    assert_eq!(answers[0].text.body, "<b>Streamer</b>: one two three");
    assert_eq!(answers[0].edits, 2);
    // A long answer continues in new messages, each within the limit.
    h.proxy.set_script(|_| vec![AgentEvent::Text { content: "word ".repeat(2000) }, AgentEvent::done()]);
    h.messenger.clear();
    h.send(OWNER, "long").await;
    let pieces: Vec<_> = h.messenger.messages(OWNER).into_iter().filter(|m| m.text.body.contains("word")).collect();
    assert!(pieces.len() >= 3);
    assert!(pieces.iter().all(|m| m.text.body.encode_utf16().count() <= 4096));
}

#[tokio::test]
async fn tools_files_errors_and_pending_messages() {
    let h = Harness::new().await;
    let id = h.create_agent(OWNER, "Toolie").await;
    h.proxy.files.lock().unwrap().insert("chart.png".into(), vec![1, 2, 3]);
    h.proxy.files.lock().unwrap().insert("report.pdf".into(), vec![4, 5]);
    h.proxy.set_script(|_| {
        vec![
            AgentEvent::ToolUse { name: "bash".into(), input: "{}".into() },
            AgentEvent::Text { content: "made it".into() },
            AgentEvent::File { path: "chart.png".into(), caption: "a chart".into() },
            AgentEvent::File { path: "report.pdf".into(), caption: String::new() },
            AgentEvent::File { path: "missing.txt".into(), caption: String::new() },
            AgentEvent::Error { content: "tool timed out".into() },
            AgentEvent::done(),
        ]
    });
    h.proxy.pending.lock().unwrap().extend([
        PendingMessage::new(OWNER.to_string(), "for the owner", "subagent", ""),
        PendingMessage::new(VISITOR.to_string(), "for the visitor", "subagent", ""),
    ]);
    h.send(OWNER, "work").await;
    let all = h.all(OWNER);
    assert!(all.contains("⚙️ <i>bash</i>"), "{all}");
    assert!(all.contains("made it"));
    assert!(all.contains("Couldn't fetch the file missing.txt"));
    assert!(all.contains("tool timed out"));
    assert!(all.contains("for the owner"));
    assert!(!all.contains("for the visitor"), "pending messages go only to their chat");
    let files = h.messenger.files(OWNER);
    assert_eq!(files.len(), 2);
    assert!(files[0].as_photo && files[0].caption.contains("a chart"));
    assert!(!files[1].as_photo);
    // /verbose off hides tool lines.
    h.send(OWNER, "/verbose").await;
    assert!(h.last(OWNER).contains("hidden"));
    h.messenger.clear();
    h.send(OWNER, "work").await;
    assert!(!h.all(OWNER).contains("⚙️"));
    // Nor does the poller, which asks only for the owner's chat: agents queue proactive output
    // for their owner alone, so a visitor's queue is never collected (visitor turns skip it too).
    h.platform.inner.poll_pending_once().await.unwrap();
    assert!(!h.all(OWNER).contains("for the visitor"));
    assert!(h.proxy.pending.lock().unwrap().iter().any(|m| m.content == "for the visitor"));
    // Agent down.
    *h.proxy.down.lock().unwrap() = true;
    h.send(OWNER, "anyone?").await;
    assert!(h.last(OWNER).contains("could not connect to the agent"), "{}", h.last(OWNER));
    h.send(OWNER, "/dashboard").await;
    assert!(h.last(OWNER).contains("not answering"));
    let _ = id;
}

#[tokio::test]
async fn the_poller_brings_owners_their_agents_messages() {
    let h = Harness::new().await;
    h.create_agent(OWNER, "Beat").await;
    h.proxy.pending.lock().unwrap().push(PendingMessage::new(OWNER.to_string(), "heartbeat news", "heartbeat", ""));
    h.platform.inner.poll_pending_once().await.unwrap();
    assert!(h.last(OWNER).contains("<b>Beat</b>: heartbeat news"));
    assert!(h.proxy.acks.lock().unwrap().is_empty(), "a message without an id (an old agent) needs no ack");
}

fn leased(id: i64, content: &str) -> PendingMessage {
    PendingMessage::new(OWNER.to_string(), content, "heartbeat", "").with_id(id)
}

#[tokio::test]
async fn undelivered_pending_messages_come_back_and_delivered_ones_are_acked_once() {
    let h = Harness::new().await;
    h.create_agent(OWNER, "Beat").await;
    h.messenger.clear();
    h.proxy.pending.lock().unwrap().extend([
        leased(1, "first news"),
        leased(2, "second news"),
        leased(3, "third news"),
    ]);

    // The messenger is down: nothing is shown, nothing acknowledged, the queue is intact.
    h.messenger.fail_sends_containing("", MessengerError::Failed("network is unreachable".into()));
    h.platform.inner.poll_pending_once().await.unwrap();
    assert!(h.proxy.acks.lock().unwrap().is_empty());
    assert_eq!(h.proxy.pending.lock().unwrap().len(), 3);

    // Only the second fails: the first is delivered and acknowledged, the third waits behind
    // the second so the user sees them in order.
    h.messenger.fail_sends_containing("second news", MessengerError::Failed("flood wait outlasted retries".into()));
    h.platform.inner.poll_pending_once().await.unwrap();
    assert!(h.all(OWNER).contains("first news"));
    assert!(!h.all(OWNER).contains("third news"), "{}", h.all(OWNER));
    assert_eq!(*h.proxy.acks.lock().unwrap(), [(OWNER.to_string(), vec![1])]);

    // The next poll delivers the rest, in order, and acknowledges each message once.
    h.messenger.stop_failing();
    h.platform.inner.poll_pending_once().await.unwrap();
    let bodies = h.messenger.bodies(OWNER);
    assert_eq!(bodies, ["<b>Beat</b>: first news", "<b>Beat</b>: second news", "<b>Beat</b>: third news"]);
    assert_eq!(*h.proxy.acks.lock().unwrap(), [(OWNER.to_string(), vec![1]), (OWNER.to_string(), vec![2, 3])]);
    assert!(h.proxy.pending.lock().unwrap().is_empty());
    h.platform.inner.poll_pending_once().await.unwrap();
    assert_eq!(h.proxy.acks.lock().unwrap().len(), 2, "nothing delivered, nothing to acknowledge");
    assert_eq!(h.messenger.bodies(OWNER).len(), 3);
}

#[tokio::test]
async fn after_a_chat_turn_pending_messages_are_delivered_then_acked() {
    let h = Harness::new().await;
    h.create_agent(OWNER, "Beat").await;
    h.proxy.pending.lock().unwrap().push(leased(7, "queued while you were away"));
    h.messenger.fail_sends_containing("queued while", MessengerError::Failed("timeout".into()));
    h.send(OWNER, "hello").await;
    assert!(h.all(OWNER).contains("You said: hello"));
    assert!(h.proxy.acks.lock().unwrap().is_empty());
    h.messenger.stop_failing();
    h.send(OWNER, "again").await;
    assert!(h.all(OWNER).contains("queued while you were away"));
    assert_eq!(*h.proxy.acks.lock().unwrap(), [(OWNER.to_string(), vec![7])]);
}

#[tokio::test]
async fn messages_that_can_never_be_shown_do_not_block_the_queue() {
    let h = Harness::new().await;
    h.create_agent(OWNER, "Beat").await;
    h.messenger.clear();
    let gone_file = r#"{"type":"file","path":"deleted.png","caption":""}"#;
    h.proxy.pending.lock().unwrap().extend([
        PendingMessage::new(OWNER.to_string(), gone_file, "heartbeat_file", "").with_id(1),
        leased(2, "refused text"),
        leased(3, "   "),
        PendingMessage::new(VISITOR.to_string(), "not for the owner", "heartbeat", "").with_id(4),
        leased(5, "after them"),
    ]);
    h.messenger.fail_sends_containing("refused text", MessengerError::Rejected("ENTITY_BOUNDS_INVALID".into()));
    h.platform.inner.poll_pending_once().await.unwrap();
    let all = h.all(OWNER);
    assert!(all.contains("Couldn't fetch the file deleted.png"), "the user is told about the missing file: {all}");
    assert!(all.contains("after them"));
    assert!(!all.contains("not for the owner"));
    assert_eq!(*h.proxy.acks.lock().unwrap(), [(OWNER.to_string(), vec![1, 2, 3, 5])]);
    assert_eq!(h.proxy.pending.lock().unwrap().len(), 1, "the visitor's message stays with the agent");

    // A file the agent cannot serve right now (it is restarting) is retried, not dropped.
    h.proxy.pending.lock().unwrap().push(
        PendingMessage::new(OWNER.to_string(), r#"{"type":"file","path":"later.png"}"#, "subagent_file", "").with_id(6),
    );
    *h.proxy.down.lock().unwrap() = true;
    h.platform.inner.poll_pending_once().await.unwrap();
    assert_eq!(h.proxy.acks.lock().unwrap().len(), 1);
    assert!(h.proxy.pending.lock().unwrap().iter().any(|m| m.id == Some(6)));
}

#[tokio::test]
async fn exit_chat_and_manage_leave_chat_mode() {
    let h = Harness::new().await;
    h.create_agent(OWNER, "Exitable").await;
    h.press(OWNER, "exit_chat").await;
    assert!(h.all(OWNER).contains("You left the chat"));
    h.send(OWNER, "hello?").await;
    assert!(h.last(OWNER).contains("not talking to an agent"));
    h.send(OWNER, "/manage").await;
    assert!(h.last(OWNER).contains("not chatting"));
    h.send(OWNER, "/list").await;
    h.press(OWNER, "chat_agent:").await;
    assert!(h.last(OWNER).contains("You're now chatting with"));
    h.send(OWNER, "/manage").await;
    assert!(h.last(OWNER).contains("You left the chat"));
}

#[tokio::test]
async fn a_restart_mid_deployment_resumes_it_from_the_stored_facts() {
    let h = Harness::with(config(), Mode::Hang).await;
    h.send(OWNER, "/create").await;
    h.send(OWNER, "Phoenix").await;
    h.press(OWNER, "create_model:qwen").await;
    // The deployment hangs (the process "dies"): do not wait for it.
    let (data, message) = h.messenger.find_button(OWNER, "create_confirm").unwrap();
    let input = Input {
        user_id: OWNER,
        username: None,
        chat_id: OWNER,
        message: None,
        kind: InputKind::Button { data, message, press_id: "p".into() },
    };
    h.platform.handle(input).await.unwrap();
    let id = loop {
        let agents = h.store.list_agents(&AgentFilter::all()).await.unwrap();
        if let Some(agent) = agents.first().filter(|a| a.deployment.instance_hash.is_some()) {
            break agent.id;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(h.agent(id).await.status, AgentStatus::Deploying);

    // Another process sharing the database leaves a job that is alive alone.
    let sibling = h.restart(config(), Mode::Succeed);
    sibling.platform.start().await.unwrap();
    sibling.platform.wait_idle().await;
    sibling.platform.shutdown().await;
    assert!(sibling.deployer.deployed.lock().unwrap().is_empty(), "a live job is not deployed twice");
    assert_eq!(h.agent(id).await.status, AgentStatus::Deploying);

    // The first process dies.
    h.lease_runs_out(id).await;
    let h2 = h.restart(PlatformConfig { deploy_lease: Duration::ZERO, ..config() }, Mode::Succeed);
    h2.platform.start().await.unwrap();
    h2.platform.wait_idle().await;
    let agent = h2.agent(id).await;
    assert_eq!(agent.status, AgentStatus::Running);
    let spec = h2.deployer.deployed.lock().unwrap()[0].clone();
    assert_eq!(spec.existing.instance_hash.as_deref(), Some(&*format!("instance-{id}")), "resumed with its facts");
    assert!(h2.all(OWNER).contains("Baal restarted while <b>Phoenix</b>"));
    assert!(h2.all(OWNER).contains("Phoenix is ready"));
    h2.platform.shutdown().await;

    // A restart whose deployment fails leaves the agent failed, with the owner told.
    let h3 = Harness::with(config(), Mode::Hang).await;
    h3.send(OWNER, "/create").await;
    h3.send(OWNER, "Icarus").await;
    h3.press(OWNER, "create_model:qwen").await;
    let (data, message) = h3.messenger.find_button(OWNER, "create_confirm").unwrap();
    let input = Input {
        user_id: OWNER,
        username: None,
        chat_id: OWNER,
        message: None,
        kind: InputKind::Button { data, message, press_id: "p".into() },
    };
    h3.platform.handle(input).await.unwrap();
    let id = loop {
        if let Some(agent) = h3.store.list_agents(&AgentFilter::all()).await.unwrap().first().cloned()
            && agent.deployment.instance_hash.is_some()
        {
            break agent.id;
        }
        tokio::task::yield_now().await;
    };
    h3.lease_runs_out(id).await;
    let h4 = h3.restart(PlatformConfig { deploy_lease: Duration::ZERO, ..config() }, Mode::Fail);
    h4.platform.start().await.unwrap();
    h4.platform.wait_idle().await;
    assert_eq!(h4.agent(id).await.status, AgentStatus::Failed);
    assert!(h4.all(OWNER).contains("Deploying Icarus failed"));
    h4.platform.shutdown().await;
}

/// A token sealed for one agent does not serve another; one sealed before seals named their row is
/// sealed again for its own by the next deployment; an agent left without one gets one.
#[tokio::test]
async fn agent_tokens_are_sealed_for_their_own_row() {
    use secrecy::ExposeSecret as _;
    let h = Harness::with(config(), Mode::Fail).await;
    let a = h.create_agent(OWNER, "Alpha").await;
    let b = h.create_agent(OWNER, "Beta").await;
    let sealed_a = h.agent(a).await.token_sealed.unwrap();
    let token_a = h.secrets.open_str_for(&SealContext::agent_token(a), &sealed_a).unwrap();
    let shipped = h.deployer.deployed.lock().unwrap()[0].agent_secret.expose_secret().to_owned();
    assert_eq!(shipped, token_a.expose_secret(), "the deployment shipped the sealed token");
    *h.deployer.mode.lock().unwrap() = Mode::Succeed;

    // Alpha's sealed token copied into Beta's row does not open there.
    h.store.agent_set_token(b, &sealed_a).await.unwrap();
    h.send(OWNER, &format!("/repair {b}")).await;
    assert_eq!(h.agent(b).await.status, AgentStatus::Failed);
    let shipped_to_b = |secret: &str| {
        h.deployer
            .deployed
            .lock()
            .unwrap()
            .iter()
            .any(|spec| spec.agent_id == b && spec.agent_secret.expose_secret() == secret)
    };
    assert!(!shipped_to_b(token_a.expose_secret()));

    // A version 1 token opens and the repair seals it for its row.
    let old = h.secrets.seal_version_1(b"token-from-before");
    h.store.agent_set_token(b, &old).await.unwrap();
    h.send(OWNER, &format!("/repair {b}")).await;
    assert_eq!(h.agent(b).await.status, AgentStatus::Running);
    let resealed = h.agent(b).await.token_sealed.unwrap();
    assert!(!SecretBox::needs_resealing(&resealed));
    let token_b = h.secrets.open_str_for(&SealContext::agent_token(b), &resealed).unwrap();
    assert_eq!(token_b.expose_secret(), "token-from-before");
    assert!(h.secrets.open_for(&SealContext::agent_token(a), &resealed).is_err());

    // An agent created without a token (the bot stopped in between) gets one when deployed.
    let c = h.store.agent_create(crate::domain::NewAgent::new(OWNER, "Gamma", "p", "glm-4.7")).await.unwrap().id;
    h.store.agent_set_status(c, AgentStatus::Failed).await.unwrap();
    h.send(OWNER, &format!("/repair {c}")).await;
    assert_eq!(h.agent(c).await.status, AgentStatus::Running, "{}", h.all(OWNER));
    let sealed_c = h.agent(c).await.token_sealed.expect("a token was minted");
    h.secrets.open_str_for(&SealContext::agent_token(c), &sealed_c).unwrap();
}

#[tokio::test]
async fn failed_deployments_show_a_card_and_repair_retries() {
    let h = Harness::with(config(), Mode::Fail).await;
    let id = h.create_agent(OWNER, "Fragile").await;
    assert_eq!(h.agent(id).await.status, AgentStatus::Failed);
    assert!(h.all(OWNER).contains("the machine refused the agent"));
    assert!(!h.all(OWNER).contains("connection refused"), "details stay in the history");
    let events = h.store.events_for(id).await.unwrap();
    assert!(events.iter().any(|e| e.step == EventStep::Deploy && e.outcome == EventOutcome::Failed));
    h.send(OWNER, "/list").await;
    assert!(
        h.all(OWNER).contains(&format!("repair_agent:{id}"))
            || h.messenger.find_button(OWNER, "repair_agent").is_some()
    );
    *h.deployer.mode.lock().unwrap() = Mode::Succeed;
    h.send(OWNER, "/repair").await;
    h.press(OWNER, &format!("repair_agent:{id}")).await;
    assert_eq!(h.agent(id).await.status, AgentStatus::Running);
    h.send(OWNER, &format!("/repair {id}")).await;
    assert!(h.last(OWNER).contains("nothing to repair"));
    h.send(OWNER, "/repair x").await;
    assert!(h.last(OWNER).contains("is a number"));
    h.send(OWNER, "/repair").await;
    assert!(h.last(OWNER).contains("None of your agents"));
}

#[tokio::test]
async fn update_soul_and_slot_limits() {
    let h = Harness::with(PlatformConfig { max_agents_per_user: 1, ..config() }, Mode::Succeed).await;
    let id = h.create_agent(OWNER, "Soulful").await;
    // Slot limit at the start of the wizard.
    h.send(OWNER, "/create").await;
    assert!(h.last(OWNER).contains("the most one person can have"));
    // /update
    h.send(OWNER, "/update").await;
    h.press(OWNER, &format!("update_agent:{id}")).await;
    assert!(h.all(OWNER).contains("is updated and running"));
    assert_eq!(h.deployer.redeployed.lock().unwrap().len(), 1);
    h.send(OWNER, "/update 999").await;
    assert!(h.last(OWNER).contains("no agent with that id"));
    // /soul in chat mode shows the current agent's personality.
    h.send(OWNER, "/soul").await;
    assert!(h.last(OWNER).contains("Soulful's personality"));
    h.press(OWNER, &format!("soul_edit:{id}")).await;
    h.send(OWNER, "short").await;
    assert!(h.last(OWNER).contains("10 to 8000"));
    // A command mid-edit ends the edit and runs.
    h.send(OWNER, "/verbose").await;
    assert!(h.all(OWNER).contains("Personality edit stopped"));
    h.send(OWNER, "/soul").await;
    h.press(OWNER, &format!("soul_edit:{id}")).await;
    h.send(OWNER, "You are a pirate who answers in rhymes.").await;
    assert_eq!(h.agent(id).await.system_prompt, "You are a pirate who answers in rhymes.");
    assert!(h.all(OWNER).contains("now follows its new personality"));
    assert_eq!(
        h.deployer.redeployed.lock().unwrap().last().unwrap().system_prompt,
        "You are a pirate who answers in rhymes."
    );
    h.send(OWNER, "/soul abc").await;
    assert!(h.last(OWNER).contains("Usage: /soul"));
    h.send(VISITOR, &format!("/soul {id}")).await;
    assert!(h.last(VISITOR).contains("no agent with that id"));
}

#[tokio::test]
async fn the_slot_limit_is_rechecked_at_confirm() {
    let h = Harness::with(PlatformConfig { max_agents_per_user: 1, ..config() }, Mode::Succeed).await;
    h.send(OWNER, "/create").await;
    h.send(OWNER, "First").await;
    h.press(OWNER, "create_model:qwen").await;
    // Meanwhile another agent took the slot.
    h.store.agent_create(crate::domain::NewAgent::new(OWNER, "Other", "p", "glm-4.7")).await.unwrap();
    h.press(OWNER, "create_confirm").await;
    assert!(h.last(OWNER).contains("the most one person can have"));
    assert_eq!(h.store.count_active_agents(OWNER).await.unwrap(), 1);
}

#[tokio::test]
async fn delete_dialog_cancel_and_admin_views() {
    let h = Harness::new().await;
    let id = h.create_agent(OWNER, "Keeper").await;
    h.send(OWNER, "/delete").await;
    assert!(h.last(OWNER).contains("Usage: /delete"));
    h.send(OWNER, "/delete nope").await;
    assert!(h.last(OWNER).contains("is a number"));
    h.send(VISITOR, &format!("/delete {id}")).await;
    assert!(h.last(VISITOR).contains("no agent with that id"));
    h.send(OWNER, "/list").await;
    h.press(OWNER, &format!("delete_confirm:{id}")).await;
    assert!(h.all(OWNER).contains("Delete this agent?"));
    h.press(OWNER, "delete_cancelled").await;
    assert!(h.all(OWNER).contains("Nothing was deleted"));
    assert!(!h.agent(id).await.deleted);
    h.press_data(OWNER, &format!("refresh_status:{id}"), super::MessageRef { chat_id: OWNER, message_id: 1 }).await;
    assert!(h.messenger.press_notices().iter().any(|n| n == "Status: running"));
    // Admin-only views.
    h.send(OWNER, "/pool").await;
    assert!(h.last(OWNER).contains("operators only"));
    h.send(ADMIN, "/pool").await;
    assert!(h.last(ADMIN).contains("pool is off"));
    let h2 = h.restart(PlatformConfig { pool_enabled: true, ..config() }, Mode::Succeed);
    h2.send(ADMIN, "/pool").await;
    assert!(h2.last(ADMIN).contains("Total: 0"));
    h.send(OWNER, "/dashboard").await;
    assert!(!h.last(OWNER).contains("Fleet"));
    assert!(h.last(OWNER).contains("Keeper"));
    h.send(ADMIN, "/dashboard").await;
    assert!(h.last(ADMIN).contains("Fleet"));
    h.press(ADMIN, "dashboard_refresh").await;
    assert!(h.last(ADMIN).contains("Fleet"));
}

/// A second bot process sharing the database holds an agent's lease (it is deploying it): the
/// owner's delete is refused with a clear reason, nothing is torn down, and this process does not
/// deploy it either; once that lease runs out, the delete goes through.
#[tokio::test]
async fn deleting_waits_for_whoever_holds_the_lease() {
    let h = Harness::new().await;
    let id = h.create_agent(OWNER, "Busy").await;
    assert_eq!(h.agent(id).await.lease, None, "a finished job releases its lease");
    let now = chrono::Utc::now();
    let until = now + chrono::Duration::minutes(1);
    assert!(h.store.agent_lease_take(id, "other-bot-process", until, now).await.unwrap());

    h.send(OWNER, &format!("/delete {id}")).await;
    h.press(OWNER, &format!("delete_confirmed:{id}")).await;
    let refusal = "Busy is being deployed right now; delete it when that finishes (in about a minute).";
    assert!(h.last(OWNER).contains(refusal), "{}", h.all(OWNER));
    assert!(!h.agent(id).await.deleted);
    assert!(h.deployer.destroyed.lock().unwrap().is_empty(), "nothing was torn down");
    h.send(OWNER, &format!("/update {id}")).await;
    assert!(h.all(OWNER).contains("Busy is being deployed by another Baal process; try again in a minute."));
    assert!(h.deployer.redeployed.lock().unwrap().is_empty(), "not deployed twice");
    assert_eq!(h.agent(id).await.lease.map(|l| l.holder).as_deref(), Some("other-bot-process"));

    h.lease_runs_out(id).await;
    h.send(OWNER, &format!("/delete {id}")).await;
    h.press(OWNER, &format!("delete_confirmed:{id}")).await;
    assert!(h.last(OWNER).contains("is deleted"), "{}", h.all(OWNER));
    let agent = h.agent(id).await;
    assert!(agent.deleted);
    assert_eq!(agent.lease, None, "the deletion released its lease");
    assert_eq!(h.deployer.destroyed.lock().unwrap().len(), 1);
    let events = h.store.events_for(id).await.unwrap();
    let deletion: Vec<_> =
        events.iter().filter(|e| e.step == EventStep::Delete).map(|e| (e.outcome, e.detail.as_deref())).collect();
    assert_eq!(deletion, [(EventOutcome::Started, Some("by the owner")), (EventOutcome::Succeeded, None)]);
}

#[tokio::test]
async fn without_the_operators_key_nobody_is_shown_a_free_tier() {
    let h = Harness::with(PlatformConfig { libertai_api_key: None, ..config() }, Mode::Succeed).await;
    h.send(OWNER, "/account").await;
    let account = h.last(OWNER);
    assert!(account.contains("No free tier here") && !account.contains("Free tier ·"), "{account}");
    h.send(OWNER, "/dashboard").await;
    assert!(h.last(OWNER).contains("Plan: none; /login"), "{}", h.last(OWNER));
}

#[tokio::test]
async fn without_any_model_key_create_says_so_before_the_first_step() {
    let h = Harness::with(PlatformConfig { libertai_api_key: None, ..config() }, Mode::Succeed).await;
    h.send(OWNER, "/create").await;
    let said = h.last(OWNER);
    assert!(said.contains("needs a model key") && said.contains("/login"), "{said}");
    assert!(!h.all(OWNER).contains("Step 1 of 2"), "no name is asked for: {}", h.all(OWNER));
    // The next text is not taken as a name: there is no wizard running.
    h.send(OWNER, "Ada").await;
    assert!(h.store.list_agents(&AgentFilter::all().owner(OWNER)).await.unwrap().is_empty());
    assert!(!h.last(OWNER).contains("Step 2 of 2"), "{}", h.last(OWNER));
}

#[tokio::test]
async fn reset_asks_then_forgets_only_the_callers_conversation() {
    let h = Harness::new().await;
    let id = h.create_agent(OWNER, "Ada").await;
    h.send(OWNER, "/reset").await;
    assert!(h.last(OWNER).contains("Start over with Ada?"), "{}", h.last(OWNER));
    h.press(OWNER, "reset_cancelled").await;
    assert!(h.proxy.resets().is_empty(), "cancelled: nothing forgotten");
    h.send(OWNER, "/reset").await;
    h.press(OWNER, &format!("reset_confirmed:{id}")).await;
    assert!(h.last(OWNER).contains("has forgotten your conversation"), "{}", h.last(OWNER));
    assert_eq!(h.proxy.resets(), vec![OWNER.to_string()], "the caller's own chat, nobody else's");
    // A visitor who never opened the agent cannot reset anyone's conversation with it.
    h.press_data(VISITOR, &format!("reset_confirmed:{id}"), super::MessageRef { chat_id: VISITOR, message_id: 1 })
        .await;
    assert_eq!(h.proxy.resets().len(), 1);
    // Outside a chat with an agent there is nothing to reset.
    h.send(OWNER, "/manage").await;
    h.send(OWNER, "/reset").await;
    assert!(h.last(OWNER).contains("no conversation to start over"), "{}", h.last(OWNER));
}

#[tokio::test]
async fn account_verbose_navigation_and_unknown_input() {
    let h = Harness::new().await;
    h.send(OWNER, "/account").await;
    assert!(h.last(OWNER).contains("Free tier"));
    assert!(h.last(OWNER).contains("0/50"));
    h.press(OWNER, "account_login").await;
    assert!(h.last(OWNER).contains("/login YOUR_API_KEY"));
    h.send(OWNER, "/start").await;
    h.press(OWNER, "quick_account").await;
    assert!(h.last(OWNER).contains("Your account"));
    h.send(OWNER, "/start").await;
    h.press(OWNER, "quick_list").await;
    assert!(h.last(OWNER).contains("no agents yet"));
    h.press(OWNER, "quick_create").await;
    assert!(h.last(OWNER).contains("Step 1 of 2"));
    h.send(OWNER, "/cancel").await;
    h.send(OWNER, "/verbose").await;
    assert!(h.last(OWNER).contains("hidden"));
    h.send(OWNER, "/verbose").await;
    assert!(h.last(OWNER).contains("shown"));
    h.send(OWNER, "/frobnicate").await;
    assert!(h.last(OWNER).contains("I don't know /frobnicate"));
    h.send(OWNER, "/confirm").await;
    assert!(h.last(OWNER).contains("nothing to confirm"));
    // Chat navigation keyboard after the first answer.
    h.create_agent(OWNER, "Nav").await;
    let controls = h.messenger.find_button(OWNER, "toggle_tools");
    assert!(controls.is_none(), "controls come with the first answer");
    h.send(OWNER, "hi").await;
    h.press(OWNER, "toggle_tools").await;
    assert!(h.messenger.press_notices().last().unwrap().contains("hidden"));
    for nav in ["nav_list", "nav_account", "nav_main", "quick_login"] {
        h.press_data(OWNER, nav, super::MessageRef { chat_id: OWNER, message_id: 1 }).await;
    }
    assert!(h.last(OWNER).contains("/login"));
    h.press_data(OWNER, "bogus:1", super::MessageRef { chat_id: OWNER, message_id: 1 }).await;
    assert!(h.messenger.press_notices().last().unwrap().contains("no longer"));
    // Every press is answered exactly once.
    let presses = h.messenger.calls().iter().filter(|c| matches!(c, Call::Press { .. })).count();
    assert!(presses >= 7);
}

#[tokio::test]
async fn after_a_restart_running_agents_are_restored_with_their_new_facts_or_marked_failed() {
    let h = Harness::new().await;
    let moved = h.create_agent(OWNER, "Mover").await;
    let broken = h.create_agent(VISITOR, "Broken").await;
    assert_eq!(h.agent(moved).await.status, AgentStatus::Running);

    // Restart: the deployer brings agents back at a new address; the platform stores it.
    let h2 = h.restart(config(), Mode::Succeed);
    *h2.deployer.restore_outcome.lock().unwrap() = RestoreOutcome::Moved;
    h2.platform.start().await.unwrap();
    h2.platform.wait_idle().await;
    let url = format!("http://agent-{moved}.moved");
    assert_eq!(h2.agent(moved).await.deployment.vm_url.as_deref(), Some(url.as_str()));
    assert_eq!(h2.agent(moved).await.status, AgentStatus::Running);
    h2.platform.shutdown().await;

    // Restart again: this time nothing comes back; the owners are told and can repair.
    let h3 = h.restart(config(), Mode::Succeed);
    *h3.deployer.restore_outcome.lock().unwrap() = RestoreOutcome::Fails;
    h3.platform.start().await.unwrap();
    h3.platform.wait_idle().await;
    assert_eq!(h3.agent(broken).await.status, AgentStatus::Failed);
    assert!(h3.last(VISITOR).contains("could not bring"), "{}", h3.all(VISITOR));
    assert!(h3.last(VISITOR).contains(&format!("/repair {broken}")), "{}", h3.all(VISITOR));
    let events = h3.store.events_for(broken).await.unwrap();
    assert!(events.iter().any(|e| e.step == EventStep::Restore && e.outcome == EventOutcome::Failed), "{events:?}");
    h3.platform.shutdown().await;
}

/// Where the deployer hosts agents for the operator only, a non-admin is told so in plain words
/// at `/create` and at the confirm button (a wizard started before the switch); the operator's
/// admins still create agents, and everyone still chats with shared ones.
#[tokio::test]
async fn an_operator_only_deployer_refuses_non_admins_plainly() {
    let h = Harness::new().await;
    let shared = h.create_agent(OWNER, "Shared").await;
    h.send(OWNER, "/create").await;
    h.send(OWNER, "Half way").await;
    h.press(OWNER, "create_model:qwen3-coder-next").await;
    *h.deployer.tenancy.lock().unwrap() = crate::deploy::Tenancy::OperatorOnly;

    h.press(OWNER, "create_confirm").await;
    assert!(h.last(OWNER).contains("runs agents only for its operator"), "{}", h.last(OWNER));
    h.send(VISITOR, "/create").await;
    assert!(h.last(VISITOR).contains("runs agents only for its operator"), "{}", h.last(VISITOR));
    assert!(!h.last(VISITOR).contains("Step 1"), "no wizard for a refused user");
    let owned = async |user| h.store.list_agents(&AgentFilter::all().owner(user)).await.unwrap().len();
    assert_eq!(owned(OWNER).await, 1, "only the agent made before the switch");
    assert_eq!(owned(VISITOR).await, 0);

    let admins = h.create_agent(ADMIN, "Admin's").await;
    assert_eq!(h.agent(admins).await.owner_id, ADMIN);
    let slug = h.agent(shared).await.slug;
    h.send(VISITOR, &format!("/start agent_{slug}")).await;
    h.send(VISITOR, "hello from a visitor").await;
    let requests = h.proxy.requests.lock().unwrap().clone();
    let (_, request, _) = requests.last().unwrap();
    assert_eq!((request.role, request.message.as_str()), (Some(Role::Visitor), "hello from a visitor"));
}

/// In a group the agent's history would be the group's: owner and visitors would share it. So
/// agents are refused there with one line on where to talk, `/login` is refused (and its key
/// deleted and not used), and commands that make sense anywhere keep working.
#[tokio::test]
async fn agents_and_login_are_refused_in_group_chats() {
    const GROUP: i64 = -100_123;
    let h = Harness::new().await;
    let shared = h.create_agent(OWNER, "Shared").await;
    let slug = h.agent(shared).await.slug;
    let asked = || h.proxy.requests.lock().unwrap().len();
    let before = asked();
    let in_group = async |user: UserId, text: &str| {
        h.platform.handle(Input::from_text(user, GROUP, text)).await.unwrap();
        h.platform.wait_idle().await;
        h.messenger.last_text(GROUP)
    };
    let said = in_group(VISITOR, &format!("/start agent_{slug}")).await;
    assert!(said.contains("Agents talk only in private chats"), "{said}");
    let said = in_group(VISITOR, "hello agent").await;
    assert!(said.contains("Agents talk only in private chats"), "{said}");
    let said = in_group(OWNER, "/login sk-group-key-1234567890").await;
    assert!(said.contains("/login works only in a private chat") && said.contains("revoke it"), "{said}");
    assert!(h.store.user_get(OWNER).await.unwrap().unwrap().api_key_sealed.is_none(), "the key was not used");
    let said = in_group(OWNER, "/help").await;
    assert!(said.contains("/create"), "help still works in a group: {said}");
    assert_eq!(asked(), before, "no agent was asked anything");
    // The same visitor in a private chat reaches the agent.
    h.send(VISITOR, &format!("/start agent_{slug}")).await;
    h.send(VISITOR, "hello agent").await;
    assert_eq!(asked(), before + 1);
}

/// A user's chat mode is kept per chat: what they do in a group (leaving "the" chat, a share
/// link refused there) leaves their private chat talking to its agent, owner and visitor alike;
/// a state stored before modes were per chat is read as the private chat's mode.
#[tokio::test]
async fn chat_mode_is_kept_per_chat_and_old_states_read_as_the_private_chats() {
    const GROUP: i64 = -100_456;
    let h = Harness::new().await;
    let first = h.create_agent(OWNER, "First").await;
    let second = h.create_agent(OWNER, "Second").await;
    let url = async |id| h.agent(id).await.deployment.vm_url.unwrap();
    let (first_url, second_url) = (url(first).await, url(second).await);
    let last_asked = || h.proxy.requests.lock().unwrap().last().map(|(url, ..)| url.clone());
    let in_group = async |user: UserId, text: &str| {
        h.platform.handle(Input::from_text(user, GROUP, text)).await.unwrap();
        h.platform.wait_idle().await;
        h.messenger.last_text(GROUP)
    };
    let slug = h.agent(second).await.slug;

    h.send(OWNER, &format!("/start {first}")).await;
    h.send(VISITOR, &format!("/start agent_{slug}")).await;
    for user in [OWNER, VISITOR] {
        let said = in_group(user, "/manage").await;
        assert!(said.contains("You're not chatting with an agent"), "the group had no agent to leave: {said}");
        let said = in_group(user, &format!("/start agent_{slug}")).await;
        assert!(said.contains("Agents talk only in private chats"), "{said}");
        let said = in_group(user, "hello").await;
        assert!(said.contains("Agents talk only in private chats"), "the group has no agent: {said}");
    }
    h.send(OWNER, "hello first").await;
    assert_eq!(last_asked(), Some(first_url.clone()), "the owner's private chat still talks to First");
    h.send(VISITOR, "hello second").await;
    assert_eq!(last_asked(), Some(second_url.clone()), "the visitor's still talks to Second");
    // Leaving in the private chat leaves only that chat.
    h.send(OWNER, "/manage").await;
    let asked = h.proxy.requests.lock().unwrap().len();
    h.send(OWNER, "anyone?").await;
    assert_eq!(h.proxy.requests.lock().unwrap().len(), asked, "{}", h.last(OWNER));

    // A state written before modes were per chat: one mode (and a visitor's link) per user.
    let old =
        format!(r#"{{"chat_agent":{},"flow":null,"flow_touched":null,"greeted":[],"chat_slug":"{slug}"}}"#, second.0);
    h.store.kv_put(super::state::NAMESPACE, &OWNER.to_string(), old.as_bytes()).await.unwrap();
    h.send(OWNER, "hello again").await;
    assert_eq!(last_asked(), Some(second_url), "the old mode is the private chat's");
    let said = in_group(OWNER, "hello").await;
    assert!(said.contains("Agents talk only in private chats"), "and only the private chat's: {said}");
}

/// `/help` is derived from the one command table: every command a user may run is listed, the
/// admins' only for admins.
#[tokio::test]
async fn help_lists_what_the_command_table_holds() {
    use crate::platform::command::{Audience, Command, HelpSection};
    let h = Harness::new().await;
    h.send(VISITOR, "/help").await;
    let help = h.last(VISITOR);
    for spec in Command::ALL.iter().filter(|s| s.section != HelpSection::Hidden) {
        let listed = help.contains(&format!("/{}", spec.name));
        assert_eq!(listed, spec.audience == Audience::Everyone, "/{} in {help}", spec.name);
    }
    h.send(ADMIN, "/help").await;
    assert!(h.last(ADMIN).contains("/pool: the VM pool"), "{}", h.last(ADMIN));
}
