//! `baal-cli console`: Baal in a terminal, for one local user who is also an admin.
//!
//! Lines starting with `/` are commands, `!press <text>` presses a button of the latest message
//! that has buttons, anything else is chat text. Each line is processed to completion
//! (deployments and streamed answers included) before the next is read, so a script can be
//! piped in; the console exits at the end of its input.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use anyhow::Context;
use async_trait::async_trait;
use baal_core::config::Settings;
use baal_core::platform::{Button, ChatId, Input, MessageRef, Messenger, MessengerError, OutgoingFile, Platform, Text};
use baal_core::telemetry::{self, Readiness};
use clap::Args;

/// Options of `baal-cli console`.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// The local user's id (also their chat id).
    #[arg(long, default_value_t = 1)]
    pub user_id: i64,
}

pub async fn run(mut settings: Settings, args: ConsoleArgs) -> anyhow::Result<ExitCode> {
    if !settings.admin_user_ids.contains(&args.user_id) {
        settings.admin_user_ids.push(args.user_id);
    }
    let messenger = Arc::new(ConsoleMessenger::default());
    let metrics_addr = settings.metrics_addr;
    let platform = Platform::from_settings(settings, messenger.clone()).await.context("cannot start Baal")?;
    if let Some(addr) = metrics_addr {
        serve_metrics(addr, &platform).await?;
    }
    platform.start().await.context("cannot resume unfinished work")?;
    println!("Baal console. You are user {}. /help lists commands; !press <text> presses a button.", args.user_id);
    drive(&platform, &messenger, args.user_id, stdin_lines()).await?;
    platform.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` (`METRICS_ADDR`) while the console runs;
/// ready while the database answers (the platform, deployer included, is built already).
async fn serve_metrics(addr: std::net::SocketAddr, platform: &Platform) -> anyhow::Result<()> {
    let handle = telemetry::install()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve metrics on {addr} (METRICS_ADDR)"))?;
    let readiness = Readiness::new().with_store(platform.store().clone());
    let gauges = platform.clone();
    let refresh: telemetry::Refresh = Arc::new(move || {
        let platform = gauges.clone();
        Box::pin(async move { platform.record_gauges().await })
    });
    tokio::spawn(async move {
        if let Err(error) = telemetry::serve(listener, handle, readiness, Some(refresh)).await {
            eprintln!("baal-cli: the metrics server stopped: {error}");
        }
    });
    Ok(())
}

/// Hands each line to the platform as `user` and waits for all it started (a deployment, a
/// streamed answer) before reading the next, so the transcript follows the script.
async fn drive(
    platform: &Platform,
    messenger: &ConsoleMessenger,
    user: i64,
    mut lines: tokio::sync::mpsc::Receiver<std::io::Result<String>>,
) -> anyhow::Result<()> {
    while let Some(line) = lines.recv().await {
        let line = line.context("cannot read the input")?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some(input) = messenger.input_for(user, line) else { continue };
        if let Err(err) = platform.handle(input).await {
            eprintln!("error: {err}");
        }
        platform.wait_idle().await;
    }
    Ok(())
}

/// Lines of standard input, read on a thread of their own (blocking reads must not hold up the
/// runtime, and tokio's `io-std` feature is not worth a workspace-wide rebuild).
fn stdin_lines() -> tokio::sync::mpsc::Receiver<std::io::Result<String>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Prints what the platform says (each send, and each edit of a message again, as a streamed
/// answer grows); remembers the latest buttons for `!press`.
pub(crate) struct ConsoleMessenger {
    next_id: AtomicI64,
    buttons: Mutex<Option<(MessageRef, Vec<Button>)>>,
    presses: AtomicI64,
    /// Standard output, or a buffer in tests.
    out: Mutex<Box<dyn Write + Send>>,
}

impl Default for ConsoleMessenger {
    fn default() -> Self {
        ConsoleMessenger::writing_to(Box::new(std::io::stdout()))
    }
}

impl ConsoleMessenger {
    fn writing_to(out: Box<dyn Write + Send>) -> Self {
        ConsoleMessenger {
            next_id: AtomicI64::default(),
            buttons: Mutex::default(),
            presses: AtomicI64::default(),
            out: Mutex::new(out),
        }
    }

    /// Writes `text` as a line and flushes it: a transcript is read as it comes.
    fn write(&self, text: &str) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    fn next(&self, chat: ChatId) -> MessageRef {
        MessageRef { chat_id: chat, message_id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1 }
    }

    /// Turns a line into an input, or prints why it is not one.
    fn input_for(&self, user: i64, line: &str) -> Option<Input> {
        if let Some(needle) = line.strip_prefix("!press") {
            let (data, message) = self.find_button(needle.trim())?;
            let press_id = self.presses.fetch_add(1, Ordering::Relaxed).to_string();
            return Some(Input::button(user, user, data, message, press_id));
        }
        let mut input = Input::from_text(user, user, line);
        // The user's own line counts as a message, so `/login` can delete it.
        input.message = Some(self.next(user));
        Some(input)
    }

    /// The button whose data equals `needle`, else whose label or data contains it.
    fn find_button(&self, needle: &str) -> Option<(String, MessageRef)> {
        let guard = self.buttons.lock().unwrap_or_else(|p| p.into_inner());
        let Some((message, buttons)) = guard.as_ref() else {
            self.write("(no message with buttons yet)");
            return None;
        };
        let callbacks: Vec<(&str, &str)> = buttons
            .iter()
            .filter_map(|b| match b {
                Button::Callback { label, data } => Some((label.as_str(), data.as_str())),
                _ => None,
            })
            .collect();
        let lower = needle.to_lowercase();
        let found = callbacks.iter().find(|(_, data)| *data == needle).or_else(|| {
            callbacks
                .iter()
                .find(|(label, data)| label.to_lowercase().contains(&lower) || data.to_lowercase().contains(&lower))
        });
        match found {
            Some((_, data)) if !needle.is_empty() => Some((data.to_string(), *message)),
            _ => {
                let mut list = format!("(no button matches {needle:?}; the buttons are:)");
                for (label, data) in callbacks {
                    list.push_str(&format!("\n  [{label} → {data}]"));
                }
                self.write(&list);
                None
            }
        }
    }

    fn print(&self, prefix: &str, message: MessageRef, text: &Text) {
        let body = if text.html { readable(&text.body) } else { text.body.clone() };
        let mut shown = format!("{prefix}#{}\n{body}\n", message.message_id);
        for row in &text.buttons {
            let cells: Vec<String> = row
                .iter()
                .map(|b| match b {
                    Button::Callback { label, data } => format!("[{label} → {data}]"),
                    Button::Url { label, url } => format!("[{label} → {url}]"),
                    _ => format!("[{}]", b.label()),
                })
                .collect();
            shown.push_str(&format!("  {}\n", cells.join(" ")));
        }
        self.write(&shown);
        if !text.buttons.is_empty() {
            let buttons = text.buttons.iter().flatten().cloned().collect();
            *self.buttons.lock().unwrap_or_else(|p| p.into_inner()) = Some((message, buttons));
        }
    }
}

#[async_trait]
impl Messenger for ConsoleMessenger {
    async fn send(&self, chat: ChatId, text: Text) -> Result<MessageRef, MessengerError> {
        let message = self.next(chat);
        self.print("── baal ", message, &text);
        Ok(message)
    }

    async fn edit(&self, message: MessageRef, text: Text) -> Result<(), MessengerError> {
        self.print("── baal (edited) ", message, &text);
        Ok(())
    }

    async fn delete(&self, message: MessageRef) -> Result<(), MessengerError> {
        self.write(&format!("(message #{} deleted)\n", message.message_id));
        Ok(())
    }

    async fn typing(&self, _chat: ChatId) -> Result<(), MessengerError> {
        Ok(())
    }

    async fn send_file(&self, chat: ChatId, file: OutgoingFile) -> Result<MessageRef, MessengerError> {
        let message = self.next(chat);
        let kind = if file.as_photo { "photo" } else { "file" };
        self.write(&format!(
            "── baal #{}\n📎 {kind} {} ({} bytes) {}\n",
            message.message_id,
            file.file_name,
            file.bytes.len(),
            readable(&file.caption)
        ));
        Ok(message)
    }

    async fn answer_press(&self, _press_id: &str, notice: &str) -> Result<(), MessengerError> {
        if !notice.is_empty() {
            self.write(&format!("({notice})\n"));
        }
        Ok(())
    }
}

/// Telegram HTML as terminal text: tags dropped (links keep their target), entities decoded.
/// Hand-written because the subset is tiny and fixed; an HTML parser would be a heavy dependency
/// for stripping a dozen tag names.
fn readable(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    let mut link: Option<String> = None;
    while let Some(start) = rest.find(['<', '&']) {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        if rest.starts_with('<') {
            let Some(end) = rest.find('>') else { break };
            let tag = &rest[1..end];
            if let Some(href) = tag.strip_prefix("a href=\"").and_then(|t| t.split('"').next()) {
                link = Some(decode_entities(href));
            } else if tag == "/a"
                && let Some(href) = link.take()
            {
                out.push_str(&format!(" ({href})"));
            }
            rest = &rest[end + 1..];
        } else {
            let end = rest.find(';').filter(|end| *end <= 8);
            match end {
                Some(end) => {
                    out.push_str(&decode_entities(&rest[..=end]));
                    rest = &rest[end + 1..];
                }
                None => {
                    out.push('&');
                    rest = &rest[1..];
                }
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_entities(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use baal_core::deploy::{AgentSpec, DeployError, DeployReporter, DeployStep, Deployer};
    use baal_core::domain::{AgentId, Deployment};
    use baal_core::platform::PlatformConfig;
    use baal_core::proxy::{
        AgentEndpoint, AgentEvent, AgentFile, ChatRequest, HealthResponse, PendingMessage, Proxy, ProxyError,
    };
    use baal_core::secrets::SecretBox;
    use futures_util::stream::{self, BoxStream, StreamExt};
    use secrecy::SecretString;

    use super::*;

    #[test]
    fn html_is_shown_readably() {
        assert_eq!(readable("<b>Hi</b> &lt;b&gt;x&lt;/b&gt; &amp; co"), "Hi <b>x</b> & co");
        assert_eq!(readable("<a href=\"https://x.y/?a=1&amp;b=2\">docs</a>"), "docs (https://x.y/?a=1&b=2)");
        assert_eq!(readable("a & b"), "a & b");
    }

    /// What a test console printed.
    #[derive(Clone, Default)]
    struct Transcript(Arc<Mutex<Vec<u8>>>);

    impl Write for Transcript {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Transcript {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// Deploys at once, at an address only [`StreamingAgent`] answers for.
    struct InstantDeployer;

    const STEPS: &[DeployStep] = &[DeployStep::new("start", "Start the agent")];

    #[async_trait]
    impl Deployer for InstantDeployer {
        fn name(&self) -> &'static str {
            "instant"
        }
        fn steps(&self) -> &'static [DeployStep] {
            STEPS
        }
        async fn deploy(&self, spec: &AgentSpec, _: &dyn DeployReporter) -> Result<Deployment, DeployError> {
            let mut deployment = spec.existing.clone();
            deployment.vm_url = Some(format!("http://agent-{}.test", spec.agent_id));
            Ok(deployment)
        }
        async fn redeploy(&self, spec: &AgentSpec, reporter: &dyn DeployReporter) -> Result<Deployment, DeployError> {
            self.deploy(spec, reporter).await
        }
        async fn destroy(&self, _: AgentId, _: &Deployment, _: &dyn DeployReporter) -> Result<(), DeployError> {
            Ok(())
        }
    }

    /// An agent that writes its answers in pieces after a thinking notice, as streaming agents
    /// do, then sends each completion whole.
    struct StreamingAgent;

    #[async_trait]
    impl Proxy for StreamingAgent {
        async fn chat(&self, _: &AgentEndpoint, request: ChatRequest) -> BoxStream<'static, AgentEvent> {
            let step = Duration::from_millis(100);
            let timeline = if request.message.contains("answer") {
                vec![
                    (Duration::ZERO, AgentEvent::Thinking),
                    (step, AgentEvent::TextDelta { content: "The answer".into() }),
                    (step, AgentEvent::TextDelta { content: " is".into() }),
                    (step, AgentEvent::TextDelta { content: " forty-two.".into() }),
                    (Duration::ZERO, AgentEvent::Text { content: "The answer is forty-two.".into() }),
                    (Duration::ZERO, AgentEvent::done()),
                ]
            } else {
                vec![
                    (Duration::ZERO, AgentEvent::Text { content: "Hi, I am Echo.".into() }),
                    (Duration::ZERO, AgentEvent::done()),
                ]
            };
            stream::iter(timeline)
                .then(|(delay, event)| async move {
                    tokio::time::sleep(delay).await;
                    event
                })
                .boxed()
        }
        async fn pending(&self, _: &AgentEndpoint, _: Option<&str>) -> Result<Vec<PendingMessage>, ProxyError> {
            Ok(Vec::new())
        }
        async fn file(&self, _: &AgentEndpoint, _: &str) -> Result<AgentFile, ProxyError> {
            Err(ProxyError::Status(404))
        }
        async fn health(&self, _: &AgentEndpoint) -> Result<HealthResponse, ProxyError> {
            Ok(HealthResponse::new("Echo"))
        }
        async fn reset(&self, _: &AgentEndpoint, _: &str) -> Result<u64, ProxyError> {
            Ok(0)
        }
    }

    /// Each of `expected` occurs in `text`, in this order.
    fn in_order(text: &str, expected: &[String]) {
        let mut from = 0;
        for wanted in expected {
            let Some(at) = text[from..].find(wanted.as_str()) else {
                panic!("{wanted:?} does not follow in order in:\n{text}");
            };
            from += at + wanted.len();
        }
    }

    #[tokio::test]
    async fn a_streamed_answer_prints_as_it_grows() {
        let db = baal_core::testing::db::sqlite().await;
        let transcript = Transcript::default();
        let messenger = Arc::new(ConsoleMessenger::writing_to(Box::new(transcript.clone())));
        let config = PlatformConfig::default()
            .with_admin_user_ids(vec![1])
            .with_libertai_api_key(SecretString::from("sk-operator"))
            .with_edit_interval(Duration::from_millis(50));
        let secrets = Arc::new(SecretBox::from_encoded_key(&"ab".repeat(32)).unwrap());
        let platform = Platform::new(
            config,
            db.shared(),
            Arc::new(InstantDeployer),
            Arc::new(StreamingAgent),
            messenger.clone(),
            secrets,
        );
        let script = ["/create", "Echo", "!press qwen", "!press deploy", "What is the answer?"];
        let (tx, lines) = tokio::sync::mpsc::channel(script.len());
        for line in script {
            tx.send(Ok(line.to_owned())).await.unwrap();
        }
        drop(tx);
        drive(&platform, &messenger, 1, lines).await.unwrap();

        let text = transcript.text();
        assert!(text.contains("Echo: Hi, I am Echo."), "the introduction:\n{text}");
        let notice = text.find("\nEcho: thinking…\n").unwrap_or_else(|| panic!("no thinking notice:\n{text}"));
        let header = text[..notice].rsplit("── baal ").next().unwrap();
        let id = header.trim_start_matches('#');
        in_order(
            &text,
            &[
                format!("── baal #{id}\nEcho: thinking…\n"),
                format!("── baal (edited) #{id}\nEcho: The answer\n"),
                format!("── baal (edited) #{id}\nEcho: The answer is\n"),
                format!("── baal (edited) #{id}\nEcho: The answer is forty-two.\n"),
            ],
        );
        assert!(!text.contains("deleted"), "the notice was replaced, not left or removed:\n{text}");
        platform.shutdown().await;
    }

    #[test]
    fn press_finds_exact_data_then_label_then_lists() {
        let messenger = ConsoleMessenger::default();
        let message = MessageRef { chat_id: 1, message_id: 5 };
        let text = Text::plain("x")
            .row(vec![Button::callback("✅ Deploy", "create_confirm"), Button::callback("❌ Cancel", "create_cancel")]);
        messenger.print("", message, &text);
        assert_eq!(messenger.find_button("create_cancel").unwrap().0, "create_cancel");
        assert_eq!(messenger.find_button("deploy").unwrap().0, "create_confirm");
        assert!(messenger.find_button("nothing").is_none());
    }
}
