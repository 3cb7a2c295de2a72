//! A chat front-end of your own over Baal's platform: lines on stdin, messages on stdout.
//!
//! A front-end does two things and decides nothing:
//! 1. it turns what the user does into an [`Input`] and hands it to [`Platform::handle`]
//!    (a line starting with `/` is a command, a number presses a button, anything else is text);
//! 2. it implements [`Messenger`], rendering what the platform asks: send, edit, delete a
//!    message, show "typing", send a file, answer a button press.
//!
//! Every text, limit and state change comes from the platform, so this front-end offers the same
//! bot as Baal's Telegram one. Agents run on this machine ([`LocalDeployer`]) and the scripted LLM
//! stands in for LibertAI (unscripted, it echoes what it is told).
//!
//! Interactive: `cargo run -p baal-examples --example own_front_end` (Ctrl-D quits).
//! Scripted, as CI does: `printf '/start\n/help\n' | cargo run -p baal-examples --example own_front_end`

#![forbid(unsafe_code)]

use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use baal_core::deploy::local::LocalDeployer;
use baal_core::domain::UserId;
use baal_core::platform::{Button, ChatId, Input, MessageRef, Messenger, MessengerError, OutgoingFile, Platform, Text};
use baal_core::proxy::http::HttpProxy;
use baal_examples::{Scratch, agent_binary};

/// The one local user; in a private chat the chat id is the user id.
const USER: UserId = 1;

/// Renders the platform's requests as lines on stdout and remembers the latest buttons so the
/// user can press them by number.
#[derive(Default)]
struct StdoutMessenger {
    next_id: AtomicI64,
    buttons: Mutex<Vec<(String, MessageRef)>>,
}

impl StdoutMessenger {
    fn print(&self, what: &str, message: MessageRef, text: &Text) {
        // Bodies are Telegram's HTML subset (`<b>`, `<code>`, links…) when `text.html` is set, already
        // escaped and split to fit a message. A richer front-end would render the tags.
        println!("bot #{} {what}: {}", message.message_id, text.body);
        let mut pressable = Vec::new();
        for button in text.buttons.iter().flatten() {
            match button {
                Button::Callback { label, data } => {
                    pressable.push((data.clone(), message));
                    println!("   [{}] {label}", pressable.len());
                }
                Button::Url { label, url } => println!("   [link] {label}: {url}"),
                other => println!("   [?] {}", other.label()),
            }
        }
        if !pressable.is_empty() {
            *self.buttons.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = pressable;
        }
    }

    /// The button numbered `n` (from 1) of the latest message that had buttons.
    fn button(&self, n: usize) -> Option<(String, MessageRef)> {
        let buttons = self.buttons.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        n.checked_sub(1).and_then(|i| buttons.get(i).cloned())
    }
}

#[async_trait]
impl Messenger for StdoutMessenger {
    async fn send(&self, chat: ChatId, text: Text) -> Result<MessageRef, MessengerError> {
        let message = MessageRef { chat_id: chat, message_id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1 };
        self.print("new", message, &text);
        Ok(message)
    }

    /// Streamed answers arrive as one message edited as tokens come in.
    async fn edit(&self, message: MessageRef, text: Text) -> Result<(), MessengerError> {
        self.print("edited", message, &text);
        Ok(())
    }

    async fn delete(&self, message: MessageRef) -> Result<(), MessengerError> {
        println!("bot #{} deleted", message.message_id);
        Ok(())
    }

    async fn typing(&self, _chat: ChatId) -> Result<(), MessengerError> {
        Ok(()) // a terminal has no "typing…" indicator
    }

    async fn send_file(&self, chat: ChatId, file: OutgoingFile) -> Result<MessageRef, MessengerError> {
        let message = MessageRef { chat_id: chat, message_id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1 };
        println!("bot #{} file {} ({} bytes): {}", message.message_id, file.file_name, file.bytes.len(), file.caption);
        Ok(message)
    }

    async fn answer_press(&self, _press_id: &str, notice: &str) -> Result<(), MessengerError> {
        if !notice.is_empty() {
            println!("bot (notice): {notice}");
        }
        Ok(())
    }
}

/// The user's line as an [`Input`]: a number presses that button, anything else is parsed by
/// the platform's own rules (`/cmd@bot args` → command, else text).
fn input_for(line: &str, messenger: &StdoutMessenger) -> Option<Input> {
    let input = match line.parse::<usize>() {
        Ok(n) => {
            let Some((data, message)) = messenger.button(n) else {
                println!("(no button {n})");
                return None;
            };
            // `press_id` lets a front-end acknowledge the press (Telegram needs one per press).
            Input::button(USER, USER, data, message, "")
        }
        Err(_) => Input::from_text(USER, USER, line),
    };
    Some(input.with_username("local"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let scratch = Scratch::new().await?;
    // `/start` and `/help` need no agent; `/create` needs `baal-agent` to deploy one.
    let agent_bin = agent_binary().unwrap_or_else(|err| {
        eprintln!("note: {err:#}; /create will fail to deploy");
        "baal-agent".into()
    });
    let messenger = Arc::new(StdoutMessenger::default());
    let platform = Platform::new(
        // The one user of this front-end is the operator: where this host cannot keep tenants
        // apart, the local deployer creates agents for the operator's admins only.
        scratch.config.clone().with_admin_user_ids(vec![USER]),
        scratch.store.clone(),
        Arc::new(LocalDeployer::new(scratch.path().join("agents-data"), agent_bin)?),
        Arc::new(HttpProxy::new()?),
        messenger.clone(),
        scratch.secrets.clone(),
    );
    platform.start().await?;

    let interactive = std::io::stdin().is_terminal();
    if interactive {
        println!("Your own Baal front-end. Try /start; type a button's number to press it; Ctrl-D quits.");
    }
    loop {
        if interactive {
            print!("> ");
            std::io::stdout().flush()?;
        }
        let Some(line) = next_line().await? else { break };
        let line = line.trim();
        if !interactive {
            println!("> {line}"); // a piped script shows up in the transcript
        }
        if line.is_empty() {
            continue;
        }
        if let Some(input) = input_for(line, &messenger) {
            // Errors were already told to the user as a message; here they are only logged.
            if let Err(err) = platform.handle(input).await {
                eprintln!("error: {err}");
            }
            // Deployments run in the background; waiting keeps a piped script in order.
            platform.wait_idle().await;
        }
    }
    platform.shutdown().await;
    Ok(())
}

/// The next line of stdin, `None` at its end. The blocking read runs on tokio's blocking pool so
/// the platform's background work (deployments, agents' queued messages) goes on meanwhile.
async fn next_line() -> anyhow::Result<Option<String>> {
    let read = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|n| (n > 0).then_some(line))
    });
    Ok(read.await??)
}
