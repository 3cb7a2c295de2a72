//! Runs inputs concurrently across chats while keeping each chat's inputs in the order they
//! arrived: a chat's next input starts only when its previous one is done.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use baal_core::platform::{ChatId, Input};
use tokio::task::JoinHandle;

/// Whatever handles one input to completion (the platform engine, in the bot).
#[async_trait]
pub trait InputHandler: Send + Sync + 'static {
    /// Handles `input`; errors are the handler's to report to the user.
    async fn handle(&self, input: Input);
}

/// How many inputs are queued between two sweeps of finished chats.
const SWEEP_EVERY: usize = 1024;

/// Per-chat queues. Each input becomes a task that first waits for the chat's previous task, so
/// order holds per chat with no worker to keep alive and nothing lost when a chat goes quiet.
pub struct ChatQueues<H: InputHandler> {
    handler: Arc<H>,
    last: HashMap<ChatId, JoinHandle<()>>,
    since_sweep: usize,
    /// Set when [`ChatQueues::drain`]'s bound runs out: an input that has not started by then
    /// never starts (aborting a chat's last task leaves the earlier ones it waited for running).
    stopped: Arc<AtomicBool>,
}

impl<H: InputHandler> ChatQueues<H> {
    /// Queues over `handler`.
    pub fn new(handler: Arc<H>) -> Self {
        ChatQueues { handler, last: HashMap::new(), since_sweep: 0, stopped: Arc::new(AtomicBool::new(false)) }
    }

    /// Queues `input` behind its chat's earlier inputs, with no gate (the bot gates every input).
    #[cfg(test)]
    pub fn push(&mut self, input: Input) {
        self.enqueue(input, None);
    }

    /// Queues `input` behind its chat's earlier inputs; when its turn comes, `gate` runs first and
    /// the input is handled only if it says so.
    pub fn push_gated(&mut self, input: Input, gate: impl Future<Output = bool> + Send + 'static) {
        self.enqueue(input, Some(Box::pin(gate)));
    }

    fn enqueue(&mut self, input: Input, gate: Option<Pin<Box<dyn Future<Output = bool> + Send>>>) {
        let previous = self.last.remove(&input.chat_id);
        let chat = input.chat_id;
        let handler = Arc::clone(&self.handler);
        let stopped = Arc::clone(&self.stopped);
        let task = tokio::spawn(async move {
            if let Some(previous) = previous {
                // A panic in the previous turn is already logged by the runtime; the chat goes on.
                let _ = previous.await;
            }
            if stopped.load(Ordering::SeqCst) {
                return;
            }
            if let Some(gate) = gate
                && !gate.await
            {
                return;
            }
            handler.handle(input).await;
        });
        self.last.insert(chat, task);
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.since_sweep = 0;
            self.last.retain(|_, task| !task.is_finished());
        }
    }

    /// Inputs still queued or running.
    pub fn busy_chats(&self) -> usize {
        self.last.values().filter(|task| !task.is_finished()).count()
    }

    /// Waits up to `bound` for every queued input to finish, then abandons the rest: inputs not
    /// started never start. Returns how many chats were still busy when the bound ran out.
    pub async fn drain(&mut self, bound: Duration) -> usize {
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut self.last).into_values().collect();
        let deadline = tokio::time::Instant::now() + bound;
        let mut unfinished = 0;
        for mut task in tasks {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(_) => {}
                Err(_) => {
                    self.stopped.store(true, Ordering::SeqCst);
                    task.abort();
                    unfinished += 1;
                }
            }
        }
        unfinished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::sync::Notify;

    /// Records inputs; chat 1's first input blocks until released.
    #[derive(Default)]
    struct Recorder {
        seen: Mutex<Vec<(ChatId, String)>>,
        release: Notify,
    }

    #[async_trait]
    impl InputHandler for Recorder {
        async fn handle(&self, input: Input) {
            let text = match &input.kind {
                baal_core::platform::InputKind::Text(t) => t.clone(),
                other => format!("{other:?}"),
            };
            if text == "block" {
                self.release.notified().await;
            }
            // Yield so that a wrong implementation would interleave.
            tokio::task::yield_now().await;
            self.seen.lock().unwrap().push((input.chat_id, text));
        }
    }

    fn text(chat: ChatId, text: &str) -> Input {
        Input::from_text(chat, chat, text)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chats_run_concurrently_and_each_keeps_its_order() {
        let recorder = Arc::new(Recorder::default());
        let mut queues = ChatQueues::new(Arc::clone(&recorder));
        queues.push(text(1, "block"));
        for i in 0..50 {
            queues.push(text(1, &format!("a{i}")));
            queues.push(text(2, &format!("b{i}")));
        }
        // Chat 2 finishes while chat 1 is still blocked on its first input.
        while recorder.seen.lock().unwrap().iter().filter(|(c, _)| *c == 2).count() < 50 {
            tokio::task::yield_now().await;
        }
        assert!(recorder.seen.lock().unwrap().iter().all(|(c, _)| *c == 2));
        recorder.release.notify_one();
        assert_eq!(queues.drain(Duration::from_secs(30)).await, 0);

        let seen = recorder.seen.lock().unwrap();
        let chat = |c: ChatId| seen.iter().filter(|(x, _)| *x == c).map(|(_, t)| t.clone()).collect::<Vec<_>>();
        let mut expected_1 = vec!["block".to_owned()];
        expected_1.extend((0..50).map(|i| format!("a{i}")));
        assert_eq!(chat(1), expected_1);
        assert_eq!(chat(2), (0..50).map(|i| format!("b{i}")).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gate_runs_in_its_chats_turn_and_can_drop_its_input() {
        let recorder = Arc::new(Recorder::default());
        let mut queues = ChatQueues::new(Arc::clone(&recorder));
        let gates = Arc::new(Mutex::new(Vec::new()));
        queues.push(text(1, "block"));
        for (name, pass) in [("kept", true), ("dropped", false), ("last", true)] {
            let gates = Arc::clone(&gates);
            queues.push_gated(text(1, name), async move {
                gates.lock().unwrap().push(name);
                pass
            });
        }
        tokio::task::yield_now().await;
        assert!(gates.lock().unwrap().is_empty(), "no gate runs before the chat's earlier input is done");
        recorder.release.notify_one();
        assert_eq!(queues.drain(Duration::from_secs(30)).await, 0);
        assert_eq!(*gates.lock().unwrap(), ["kept", "dropped", "last"]);
        let seen: Vec<String> = recorder.seen.lock().unwrap().iter().map(|(_, t)| t.clone()).collect();
        assert_eq!(seen, ["block", "kept", "last"]);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_gives_up_after_its_bound() {
        let recorder = Arc::new(Recorder::default());
        let mut queues = ChatQueues::new(Arc::clone(&recorder));
        queues.push(text(1, "block"));
        queues.push(text(2, "quick"));
        queues.push(text(1, "after"));
        assert_eq!(queues.drain(Duration::from_secs(5)).await, 1);
        assert_eq!(*recorder.seen.lock().unwrap(), vec![(2, "quick".to_owned())]);
        // The input that was running goes on; the one queued behind it never starts.
        recorder.release.notify_one();
        while recorder.seen.lock().unwrap().len() < 2 {
            tokio::task::yield_now().await;
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(*recorder.seen.lock().unwrap(), vec![(2, "quick".to_owned()), (1, "block".to_owned())]);
    }
}
