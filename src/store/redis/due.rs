//! Announcements over Redis pub/sub, and each node's one subscription.
//!
//! - "Pool due": a join on any node wakes the worker of every process at
//!   once, instead of waiting for its tick. Delivery is best effort (the
//!   periodic tick is the safety net), so a lost message only costs
//!   latency, never correctness.
//! - "Entries changed": published by the scripts that end entries (see
//!   `scripts.rs`), fanned out here to the node's [`EntryFeed`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::{Notify, watch};

use super::{Conn, RedisQueueStore};
use crate::domain::{PoolRef, QueueEntryId};
use crate::services::signal::{DueAnnouncer, PoolSignal};
use crate::store::feed::EntryFeed;

/// At most one message per pool per window: under load one message wakes
/// the workers for many joins. The last join of a burst is always followed
/// by a message (a trailing one at the window's end), so none is missed.
const DEBOUNCE: Duration = Duration::from_millis(5);

#[derive(Clone)]
pub struct RedisDueChannel {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    channel: String,
    config_channel: String,
    /// Per pool: when it was last announced, and whether a trailing
    /// announcement is scheduled. A std lock: never held across an await.
    recent: Mutex<HashMap<PoolRef, (Instant, bool)>>,
}

impl RedisQueueStore {
    /// The channel joins announce due pools on.
    pub fn due_channel(&self) -> RedisDueChannel {
        RedisDueChannel {
            inner: Arc::new(Inner {
                conn: self.conn.clone(),
                channel: self.keys.due_channel(),
                config_channel: self.keys.config_channel(),
                recent: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl Inner {
    async fn publish(&self, pool: &PoolRef) {
        let mut conn = self.conn.clone();
        let member = super::keys::pool_member(pool);
        let sent = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(member)
            .query_async::<i64>(&mut conn)
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "announcing a due pool failed; the tick will find it");
        }
    }
}

#[async_trait]
impl crate::services::live::ConfigAnnouncer for RedisDueChannel {
    async fn announce_config(&self) {
        let mut conn = self.inner.conn.clone();
        let sent = redis::cmd("PUBLISH")
            .arg(&self.inner.config_channel)
            .arg("policies")
            .query_async::<i64>(&mut conn)
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "announcing a configuration change failed; other nodes see it at their next version check");
        }
    }
}

#[async_trait]
impl DueAnnouncer for RedisDueChannel {
    async fn announce(&self, pool: &PoolRef) {
        let now = Instant::now();
        let trailing_at = {
            let mut recent = self.inner.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() > 10_000 {
                recent
                    .retain(|_, (at, scheduled)| *scheduled || now.duration_since(*at) < DEBOUNCE);
            }
            match recent.get_mut(pool) {
                Some((at, scheduled)) if now.duration_since(*at) < DEBOUNCE => {
                    if *scheduled {
                        return; // the trailing message will cover this join
                    }
                    *scheduled = true;
                    Some(*at + DEBOUNCE)
                }
                _ => {
                    recent.insert(pool.clone(), (now, false));
                    None
                }
            }
        };
        match trailing_at {
            None => self.inner.publish(pool).await,
            Some(at) => {
                let (inner, pool) = (self.inner.clone(), pool.clone());
                tokio::spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    inner
                        .recent
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(pool.clone(), (Instant::now(), false));
                    inner.publish(&pool).await;
                });
            }
        }
    }
}

/// This node's one Redis subscription, to both channels: pools announced
/// due are marked in the worker's signal (when this process runs a
/// worker), entries announced changed wake their waiters in the store's
/// feed. Reconnects by itself; after a lost subscription every waiter
/// reads its entry again (announcements may have been missed meanwhile).
#[derive(Clone)]
pub struct Subscription {
    /// A Redis node (any node of a Cluster: PUBLISH reaches every node).
    url: String,
    due_channel: String,
    entry_channel: String,
    config_channel: String,
    feed: Arc<EntryFeed>,
    /// Poked when run-time configuration changed somewhere.
    config_changed: Arc<Notify>,
}

impl RedisQueueStore {
    /// The subscription of a node that reaches this store through `url`
    /// (a node's address; the first seed node of a Cluster).
    pub fn subscription(&self, url: &str) -> Subscription {
        Subscription {
            url: url.to_owned(),
            due_channel: self.keys.due_channel(),
            entry_channel: self.keys.entry_channel(),
            config_channel: self.keys.config_channel(),
            feed: self.feed.clone(),
            config_changed: Arc::new(Notify::new()),
        }
    }
}

impl Subscription {
    /// Poked on every announcement of a configuration change (and after a
    /// lost subscription, when one may have been missed).
    pub fn config_changed(&self) -> Arc<Notify> {
        self.config_changed.clone()
    }

    /// Listens until `shutdown`; `signal` is the worker's, if this process
    /// runs one.
    pub async fn run(self, signal: Option<Arc<PoolSignal>>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let run = async {
                let client = redis::Client::open(self.url.as_str())?;
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub
                    .subscribe(&[&self.due_channel, &self.entry_channel, &self.config_channel])
                    .await?;
                // Announcements made while there was no subscription are
                // lost: every waiter reads its entry again, and the
                // configuration is checked.
                self.feed.all_changed();
                self.config_changed.notify_one();
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    let Ok(payload) = msg.get_payload::<String>() else {
                        continue;
                    };
                    if msg.get_channel_name() == self.config_channel {
                        self.config_changed.notify_one();
                    } else if msg.get_channel_name() == self.entry_channel {
                        let mut words = payload.split(' ');
                        let at = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                        for id in words {
                            if let Ok(id) = QueueEntryId::parse(id) {
                                self.feed.changed(&id, at);
                            }
                        }
                    } else if let Some(signal) = &signal
                        && let Some(pool) = RedisQueueStore::pool_of(&payload)
                    {
                        signal.mark_due(pool);
                    }
                }
                Ok::<_, redis::RedisError>(())
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                result = run => {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "the Redis subscription was lost; reconnecting");
                    }
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}
