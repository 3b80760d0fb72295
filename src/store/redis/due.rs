//! "Pool due" announcements over Redis pub/sub: a join on any node wakes
//! the worker of every process at once, instead of waiting for its tick.
//! Delivery is best effort (the periodic tick is the safety net), so a lost
//! message only costs latency, never correctness.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::watch;

use super::{Conn, RedisQueueStore};
use crate::domain::PoolRef;
use crate::services::signal::{DueAnnouncer, PoolSignal};

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

impl RedisDueChannel {
    /// Marks every announced pool due in `signal` until `shutdown`;
    /// reconnects by itself. `url` is a Redis (any cluster node: PUBLISH
    /// reaches every node).
    pub async fn listen(
        self,
        url: String,
        signal: Arc<PoolSignal>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let run = async {
                let client = redis::Client::open(url.as_str())?;
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&self.inner.channel).await?;
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    let Ok(member) = msg.get_payload::<String>() else {
                        continue;
                    };
                    if let Some(pool) = RedisQueueStore::pool_of(&member) {
                        signal.mark_due(pool);
                    }
                }
                Ok::<_, redis::RedisError>(())
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                result = run => {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "due-pool subscription lost; reconnecting");
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
