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
use clap::Args;

/// Options of `baal-cli console`.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// The local user's id (also their chat id).
    #[arg(long, default_value_t = 1)]
    pub user_id: i64,
}

pub async fn run(mut settings: Settings, args: ConsoleArgs) -> anyhow::Result<ExitCode> {
    // Logs go to stderr so a piped transcript on stdout stays clean; RUST_LOG overrides.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,baal_core::platform=info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    if !settings.admin_user_ids.contains(&args.user_id) {
        settings.admin_user_ids.push(args.user_id);
    }
    let messenger = Arc::new(ConsoleMessenger::default());
    let platform = Platform::from_settings(settings, messenger.clone()).await.context("cannot start Baal")?;
    platform.start().await.context("cannot resume unfinished work")?;
    println!("Baal console. You are user {}. /help lists commands; !press <text> presses a button.", args.user_id);
    let mut lines = stdin_lines();
    while let Some(line) = lines.recv().await {
        let line = line.context("cannot read the input")?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some(input) = messenger.input_for(args.user_id, line) else { continue };
        if let Err(err) = platform.handle(input).await {
            eprintln!("error: {err}");
        }
        platform.wait_idle().await;
    }
    platform.shutdown().await;
    Ok(ExitCode::SUCCESS)
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

/// Prints what the platform says; remembers the latest buttons for `!press`.
#[derive(Default)]
struct ConsoleMessenger {
    next_id: AtomicI64,
    buttons: Mutex<Option<(MessageRef, Vec<Button>)>>,
    presses: AtomicI64,
}

impl ConsoleMessenger {
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
            println!("(no message with buttons yet)");
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
                println!("(no button matches {needle:?}; the buttons are:)");
                for (label, data) in callbacks {
                    println!("  [{label} → {data}]");
                }
                None
            }
        }
    }

    fn print(&self, prefix: &str, message: MessageRef, text: &Text) {
        let body = if text.html { readable(&text.body) } else { text.body.clone() };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{prefix}#{}\n{body}", message.message_id);
        for row in &text.buttons {
            let cells: Vec<String> = row
                .iter()
                .map(|b| match b {
                    Button::Callback { label, data } => format!("[{label} → {data}]"),
                    Button::Url { label, url } => format!("[{label} → {url}]"),
                    _ => format!("[{}]", b.label()),
                })
                .collect();
            let _ = writeln!(out, "  {}", cells.join(" "));
        }
        let _ = writeln!(out);
        let _ = out.flush();
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
        println!("(message #{} deleted)\n", message.message_id);
        Ok(())
    }

    async fn typing(&self, _chat: ChatId) -> Result<(), MessengerError> {
        Ok(())
    }

    async fn send_file(&self, chat: ChatId, file: OutgoingFile) -> Result<MessageRef, MessengerError> {
        let message = self.next(chat);
        let kind = if file.as_photo { "photo" } else { "file" };
        println!(
            "── baal #{}\n📎 {kind} {} ({} bytes) {}\n",
            message.message_id,
            file.file_name,
            file.bytes.len(),
            readable(&file.caption)
        );
        Ok(message)
    }

    async fn answer_press(&self, _press_id: &str, notice: &str) -> Result<(), MessengerError> {
        if !notice.is_empty() {
            println!("({notice})\n");
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
    use super::*;

    #[test]
    fn html_is_shown_readably() {
        assert_eq!(readable("<b>Hi</b> &lt;b&gt;x&lt;/b&gt; &amp; co"), "Hi <b>x</b> & co");
        assert_eq!(readable("<a href=\"https://x.y/?a=1&amp;b=2\">docs</a>"), "docs (https://x.y/?a=1&b=2)");
        assert_eq!(readable("a & b"), "a & b");
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
