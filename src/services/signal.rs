//! Pools due for matching: a join marks its pool due and wakes the worker,
//! so two compatible players are matched without waiting for the tick.

use std::collections::HashSet;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::domain::PoolRef;

#[derive(Default)]
pub struct PoolSignal {
    /// Why a std Mutex: it is held only to insert or drain, never across an await.
    due: Mutex<HashSet<PoolRef>>,
    notify: Notify,
}

impl PoolSignal {
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks `pool` due and wakes the worker (or leaves it a permit, so a
    /// wake-up sent while it is busy is never lost).
    pub fn mark_due(&self, pool: PoolRef) {
        let inserted = self
            .due
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pool);
        if inserted {
            self.notify.notify_one();
        }
    }

    /// Takes every pool marked due since the last call.
    pub fn take_due(&self) -> Vec<PoolRef> {
        self.due
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect()
    }

    /// Waits until a pool is marked due.
    pub async fn notified(&self) {
        self.notify.notified().await
    }
}

/// Tells the other processes a pool is due (Redis pub/sub in production),
/// so a join on one node wakes the workers of all. Best effort: the
/// periodic tick remains the safety net.
#[async_trait::async_trait]
pub trait DueAnnouncer: Send + Sync + 'static {
    async fn announce(&self, pool: &PoolRef);
}
