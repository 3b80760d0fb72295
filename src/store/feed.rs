//! Changes of queue entries, fanned out in-process to whoever waits on one
//! (the event streams of SPEC §3.1, "Match-found push").
//!
//! The queue store announces every entry it moves to `MATCHED`,
//! `TIMED_OUT` or `CANCELLED`: the in-memory store calls
//! [`EntryFeed::changed`] under its lock; the Redis store publishes the ids
//! from the very script that changes the entries, and each node's one
//! subscription hands them to its feed (`store::redis::events`). A change
//! only wakes a waiter: it reads the entry again from the store, so a
//! message that says less than the store knows, or comes twice, is
//! harmless, and a lost subscription is made good by waking everyone
//! ([`EntryFeed::all_changed`]).
//!
//! A waiter subscribes *before* it first reads the entry, and a wake-up
//! sent before it waits is kept ([`Notify`]'s permit): nothing that
//! happens between the first read and the wait is missed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::domain::{Millis, QueueEntryId};

/// Independent locks, so wake-ups of a big commit and streams opening or
/// closing seldom wait for each other.
const SHARDS: usize = 16;

type Waiters = HashMap<QueueEntryId, Vec<(u64, Arc<Waiter>)>, foldhash::fast::RandomState>;

/// One waiter: its wake-up, and when the latest change it was told of
/// happened (epoch ms on the changing store's clock; 0 when unknown).
#[derive(Default)]
struct Waiter {
    notify: Notify,
    changed_at: AtomicI64,
}

#[derive(Default)]
pub struct EntryFeed {
    /// Why std Mutexes: each is held for one map operation, never across
    /// an await.
    shards: [Mutex<Waiters>; SHARDS],
    next_token: AtomicU64,
}

/// One waiter's subscription to one entry; dropping it unsubscribes.
pub struct EntryWatch {
    feed: Arc<EntryFeed>,
    id: QueueEntryId,
    token: u64,
    waiter: Arc<Waiter>,
}

impl EntryFeed {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn shard(&self, id: &QueueEntryId) -> std::sync::MutexGuard<'_, Waiters> {
        let index = (id.ulid().0 % SHARDS as u128) as usize; // random low bits
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes to changes of `id`.
    pub fn watch(self: &Arc<Self>, id: QueueEntryId) -> EntryWatch {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let waiter = Arc::new(Waiter::default());
        self.shard(&id)
            .entry(id)
            .or_default()
            .push((token, Arc::clone(&waiter)));
        EntryWatch {
            feed: Arc::clone(self),
            id,
            token,
            waiter,
        }
    }

    /// `id` changed at `at` (the store's commit time): wakes its waiters
    /// on this node.
    pub fn changed(&self, id: &QueueEntryId, at: Millis) {
        if let Some(waiters) = self.shard(id).get(id) {
            for (_, waiter) in waiters {
                waiter.changed_at.fetch_max(at, Ordering::AcqRel);
                waiter.notify.notify_one();
            }
        }
    }

    /// Changes may have been missed (a subscription was lost): wakes every
    /// waiter, each reads its entry again.
    pub fn all_changed(&self) {
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (_, waiter) in shard.values().flatten() {
                waiter.notify.notify_one();
            }
        }
    }

    /// Entries waited on, on this node.
    pub fn watched(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

impl EntryWatch {
    /// Waits for the next change of the entry (at once if one came since
    /// the last wait, or since the subscription).
    pub async fn changed(&self) {
        self.waiter.notify.notified().await
    }

    /// When the latest change announced since the last call happened
    /// (`None` when none was, or its time is unknown).
    pub fn take_changed_at(&self) -> Option<Millis> {
        Some(self.waiter.changed_at.swap(0, Ordering::AcqRel)).filter(|at| *at > 0)
    }
}

impl Drop for EntryWatch {
    fn drop(&mut self) {
        let mut shard = self.feed.shard(&self.id);
        if let Some(waiters) = shard.get_mut(&self.id) {
            waiters.retain(|(token, _)| *token != self.token);
            if waiters.is_empty() {
                shard.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn woken(watch: &EntryWatch) -> bool {
        use futures::FutureExt as _;
        watch.changed().now_or_never().is_some()
    }

    #[test]
    fn a_change_before_the_wait_is_kept_and_only_its_entry_wakes() {
        let feed = EntryFeed::new();
        let (a, b) = (QueueEntryId::generate(), QueueEntryId::generate());
        let watch_a = feed.watch(a);
        let watch_b = feed.watch(b);
        feed.changed(&a, 1_000);
        assert!(woken(&watch_a));
        assert!(!woken(&watch_a), "one change, one wake-up");
        assert_eq!(watch_a.take_changed_at(), Some(1_000));
        assert_eq!(watch_a.take_changed_at(), None);
        assert!(!woken(&watch_b));
        feed.all_changed();
        assert!(woken(&watch_a) && woken(&watch_b));
    }

    #[test]
    fn every_watcher_of_an_entry_wakes_and_dropped_ones_leave() {
        let feed = EntryFeed::new();
        let id = QueueEntryId::generate();
        let first = feed.watch(id);
        let second = feed.watch(id);
        feed.changed(&id, 5);
        assert!(woken(&first) && woken(&second));
        drop(first);
        assert_eq!(feed.watched(), 1);
        drop(second);
        assert_eq!(feed.watched(), 0);
    }

    #[tokio::test]
    async fn a_waiter_wakes_when_its_entry_changes_later() {
        let feed = EntryFeed::new();
        let id = QueueEntryId::generate();
        let watch = feed.watch(id);
        let waker = {
            let feed = Arc::clone(&feed);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                feed.changed(&id, 7);
            })
        };
        tokio::time::timeout(Duration::from_secs(10), watch.changed())
            .await
            .expect("woken");
        waker.await.unwrap();
    }
}
