//! One shutdown signal every background task follows (the mini-redis
//! pattern): a broadcast that shutdown has begun, which each task watches,
//! and a completion guard each task holds until it has finished; shutdown
//! waits until the last guard is dropped. No task is aborted mid-step: the
//! worker finishes its pass, the listeners close, the tickers stop.

use std::future::Future;

use tokio::sync::{mpsc, watch};

/// What a task watches: `true` once shutdown has begun.
pub type Stop = watch::Receiver<bool>;

pub struct Shutdown {
    begun: watch::Sender<bool>,
    /// Cloned into every task; the channel closes when the last one ends.
    guard: mpsc::Sender<()>,
    all_done: mpsc::Receiver<()>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let (begun, _) = watch::channel(false);
        let (guard, all_done) = mpsc::channel(1);
        Self {
            begun,
            guard,
            all_done,
        }
    }

    /// A receiver of the signal, for a task to watch.
    pub fn stop(&self) -> Stop {
        self.begun.subscribe()
    }

    /// Spawns `task` (made with a receiver of the signal); shutdown waits for
    /// it to end.
    pub fn spawn<F>(&self, task: impl FnOnce(Stop) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let guard = self.guard.clone();
        let task = task(self.stop());
        tokio::spawn(async move {
            task.await;
            drop(guard);
        });
    }

    /// A handle that begins shutdown (for a server's graceful-shutdown
    /// future); beginning twice is harmless.
    pub fn trigger(&self) -> impl Fn() + Send + 'static {
        let begun = self.begun.clone();
        move || {
            begun.send_replace(true);
        }
    }

    /// Begins shutdown (if not begun) and waits for every spawned task.
    pub async fn finish(self) {
        self.begun.send_replace(true);
        let Self {
            guard,
            mut all_done,
            ..
        } = self;
        drop(guard);
        // `None` once every task's guard is dropped.
        let _ = all_done.recv().await;
    }
}

/// Waits until shutdown has begun (or its sender is gone).
pub async fn begun(stop: &mut Stop) {
    let _ = stop.wait_for(|begun| *begun).await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn finish_waits_for_every_task_to_see_the_signal_and_end() {
        let shutdown = Shutdown::new();
        let ended = Arc::new(AtomicUsize::new(0));
        for i in 0..3 {
            let ended = ended.clone();
            shutdown.spawn(move |mut stop| async move {
                begun(&mut stop).await;
                // Some tasks take a while to wind down.
                tokio::time::sleep(Duration::from_millis(20 * i)).await;
                ended.fetch_add(1, Ordering::SeqCst);
            });
        }
        tokio::task::yield_now().await;
        assert_eq!(
            ended.load(Ordering::SeqCst),
            0,
            "nothing ends before the signal"
        );
        shutdown.finish().await;
        assert_eq!(ended.load(Ordering::SeqCst), 3);
    }
}
