//! Match-found push and presence (SPEC §3.1): a client waits on an event
//! stream for its entry's result instead of polling, and an open stream
//! counts as the client being present.
//!
//! A stream subscribes to its entry in the queue store's [`EntryFeed`]
//! *before* it first reads the entry, so a change between the two is not
//! missed; every wake-up (a change announced on any node, the next widening
//! of the rating window, a slow re-check) reads the entry again through the
//! queue service, the same read as a status poll, so what a stream shows is
//! always what the store holds.
//!
//! ## Event ids
//!
//! Ids grow with the search and are the same on every node: a `SEARCHING`
//! event's id is 1 + the number of times the window has widened (1 at the
//! join, 2 after the first widening, ...), and the final event (`MATCHED`,
//! `TIMED_OUT`, `CANCELLED`) is [`FINAL_EVENT_ID`]. A client reconnecting
//! with `Last-Event-ID` gets only events with greater ids; one that already
//! has the final event is answered 204 (which tells an `EventSource` to
//! stop reconnecting).
//!
//! ## Presence
//!
//! The entries of open streams are marked heard-from every
//! [`StreamLimits::touch_every`] in one store call per pool; when an
//! entry's last stream closes, it is marked once more at the closing time,
//! so closing a stream starts the presence clock rather than cancelling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use tokio::sync::watch;

use super::ServiceError;
use super::live::LiveConfig;
use super::queue::{EntryView, QueueService};
use crate::auth::Identity;
use crate::domain::{Clock, Millis, PoolPolicy, PoolRef, QueueEntryId, TenantId, UserId};
use crate::shutdown::Stop;
use crate::store::EntryStore;
use crate::store::feed::{EntryFeed, EntryWatch};

/// The id of a stream's final event (`MATCHED`, `TIMED_OUT`,
/// `CANCELLED`): above every `SEARCHING` event's.
pub const FINAL_EVENT_ID: u64 = 1_000_000;

/// Bounds and timings of the event streams.
#[derive(Debug, Clone)]
pub struct StreamLimits {
    /// Streams one user may have open on this node.
    pub per_user: usize,
    /// Streams this node keeps open.
    pub per_node: usize,
    /// How often open streams mark their entries heard from; `None` when
    /// presence is off.
    pub touch_every: Option<Duration>,
    /// How often a stream reads its entry again with no wake-up (a safety
    /// net: announcements are not expected to be lost).
    pub recheck: Duration,
    /// How often an idle stream sends a keep-alive comment.
    pub keep_alive: Duration,
}

impl StreamLimits {
    /// Open streams mark their entries three times per presence timeout
    /// (at least every 10 s, at most every 100 ms).
    pub fn touch_every(presence_ms: Option<Millis>) -> Option<Duration> {
        presence_ms.map(|ms| Duration::from_millis((ms / 3).clamp(100, 10_000) as u64))
    }
}

/// One event of a stream: its id, and the entry as a status read shows it.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    pub id: u64,
    pub view: EntryView,
}

impl StreamEvent {
    pub fn is_final(&self) -> bool {
        self.id == FINAL_EVENT_ID
    }
}

/// What opening a stream gives.
pub enum Opened {
    /// The events from the current status on.
    Stream(std::pin::Pin<Box<dyn Stream<Item = StreamEvent> + Send>>),
    /// The client has the final event already (`Last-Event-ID`).
    Finished,
}

pub struct EventStreams {
    queue: Arc<QueueService>,
    store: Arc<dyn EntryStore>,
    feed: Arc<EntryFeed>,
    /// Each pool's policy: when its window widens.
    live: Arc<LiveConfig>,
    limits: StreamLimits,
    /// A std lock: held for a few map operations, never across an await.
    open: Mutex<Open>,
    /// `true` once the node shuts down: every stream ends.
    closing: watch::Sender<bool>,
    clock: Arc<dyn Clock>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_user: HashMap<(TenantId, UserId), usize>,
    /// Entries with open streams: their pool and how many streams.
    entries: HashMap<QueueEntryId, (PoolRef, usize)>,
    /// Entries whose last stream closed, and when.
    closed: Vec<(PoolRef, QueueEntryId, Millis)>,
}

/// A stream's place in the bounds (and its entry's in presence); dropping
/// it (the stream ended or the client went away) frees both.
struct Slot {
    streams: Arc<EventStreams>,
    user: (TenantId, UserId),
    entry: Option<QueueEntryId>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let now = self.streams.clock.now();
        let mut open = self.streams.lock();
        open.total -= 1;
        if let Some(n) = open.per_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.per_user.remove(&self.user);
            }
        }
        if let Some(id) = self.entry
            && let Some((pool, n)) = open.entries.get_mut(&id)
        {
            *n -= 1;
            if *n == 0 {
                let pool = pool.clone();
                open.entries.remove(&id);
                open.closed.push((pool, id, now));
            }
        }
        crate::observe::event_streams(open.total);
    }
}

/// A stream between two events.
struct Live {
    streams: Arc<EventStreams>,
    who: Identity,
    id: QueueEntryId,
    watch: EntryWatch,
    _slot: Slot,
    closing: watch::Receiver<bool>,
    /// Of the last event sent (or the client's `Last-Event-ID`).
    last_sent: u64,
    enqueued_at: Option<Millis>,
    /// Its pool's widening schedule, as of its last read.
    schedule: Schedule,
    pending: Option<StreamEvent>,
    done: bool,
}

impl EventStreams {
    pub fn new(
        queue: Arc<QueueService>,
        store: Arc<dyn EntryStore>,
        live: Arc<LiveConfig>,
        limits: StreamLimits,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        Arc::new(Self {
            feed: store.feed(),
            queue,
            store,
            live,
            limits,
            open: Mutex::new(Open::default()),
            closing: watch::channel(false).0,
            clock,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn limits(&self) -> &StreamLimits {
        &self.limits
    }

    /// Ends every stream (graceful shutdown): clients reconnect elsewhere.
    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }

    /// Opens the event stream of the caller's entry `id` (404 as a status
    /// read when it is not theirs); `last_event_id` is the client's
    /// `Last-Event-ID` on a reconnect.
    pub async fn open(
        self: &Arc<Self>,
        who: &Identity,
        id: QueueEntryId,
        last_event_id: Option<u64>,
    ) -> Result<Opened, ServiceError> {
        if *self.closing.borrow() {
            return Err(ServiceError::Unavailable(
                "the node is shutting down".into(),
            ));
        }
        let mut slot = self.take_slot(who)?;
        // Subscribed before the first read: a change in between wakes it.
        let watch = self.feed.watch(id);
        let view = self.queue.status(who, &id).await?;
        let last_sent = last_event_id.unwrap_or(0);
        let first = self.event(&who.tenant_id, view, self.clock.now());
        if first.is_final() && last_sent >= FINAL_EVENT_ID {
            return Ok(Opened::Finished);
        }
        if first.view.status.is_waiting() && self.limits.touch_every.is_some() {
            self.present(&mut slot, who, &first.view);
        }
        let live = Live {
            streams: Arc::clone(self),
            who: who.clone(),
            id,
            watch,
            _slot: slot,
            closing: self.closing.subscribe(),
            last_sent,
            enqueued_at: first.view.enqueued_at,
            schedule: self.schedule(&who.tenant_id, &first.view),
            pending: (first.id > last_sent).then_some(first),
            done: false,
        };
        Ok(Opened::Stream(Box::pin(futures::stream::unfold(
            live,
            Live::next,
        ))))
    }

    /// A place for one more stream of `who`, or 429.
    fn take_slot(self: &Arc<Self>, who: &Identity) -> Result<Slot, ServiceError> {
        let user = (who.tenant_id.clone(), who.user_id.clone());
        let mut open = self.lock();
        let mine = open.per_user.get(&user).copied().unwrap_or(0);
        if open.total >= self.limits.per_node || mine >= self.limits.per_user {
            crate::observe::event_stream_refused();
            return Err(ServiceError::TooManyStreams {
                retry_after_seconds: 5,
            });
        }
        open.total += 1;
        *open.per_user.entry(user.clone()).or_default() += 1;
        crate::observe::event_streams(open.total);
        Ok(Slot {
            streams: Arc::clone(self),
            user,
            entry: None,
        })
    }

    /// Counts the stream's entry as present while the stream is open.
    fn present(&self, slot: &mut Slot, who: &Identity, view: &EntryView) {
        let pool = PoolRef {
            tenant_id: who.tenant_id.clone(),
            key: view.pool,
        };
        self.lock().entries.entry(view.id).or_insert((pool, 0)).1 += 1;
        slot.entry = Some(view.id);
    }

    /// When `tenant`'s `view` widens its window, by its pool's policy now.
    fn schedule(&self, tenant: &TenantId, view: &EntryView) -> Schedule {
        Schedule(self.live.policy(&PoolRef {
            tenant_id: tenant.clone(),
            key: view.pool,
        }))
    }

    /// The event `tenant`'s `view` makes at `now`.
    fn event(&self, tenant: &TenantId, view: EntryView, now: Millis) -> StreamEvent {
        let id = if view.status.is_waiting() {
            self.schedule(tenant, &view)
                .searching_id(view.enqueued_at, now)
        } else {
            FINAL_EVENT_ID
        };
        StreamEvent { id, view }
    }

    /// Marks the entries of open streams heard from, and those whose last
    /// stream closed at their closing time, until `stop`.
    pub async fn keep_present(self: Arc<Self>, mut stop: Stop) {
        let Some(every) = self.limits.touch_every else {
            return;
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = crate::shutdown::begun(&mut stop) => return,
            }
            self.touch_open().await;
        }
    }

    /// One round of [`Self::keep_present`].
    pub async fn touch_open(&self) {
        let now = self.clock.now();
        let mut by_pool: HashMap<PoolRef, Vec<(QueueEntryId, Millis)>> = HashMap::new();
        {
            let mut open = self.lock();
            for (id, (pool, _)) in &open.entries {
                by_pool.entry(pool.clone()).or_default().push((*id, now));
            }
            for (pool, id, at) in std::mem::take(&mut open.closed) {
                by_pool.entry(pool).or_default().push((id, at));
            }
        }
        for (pool, seen) in by_pool {
            if let Err(e) = self.store.touch(&pool, &seen).await {
                tracing::warn!(error = %e, pool = %pool, entries = seen.len(), "marking streamed entries present failed; the next round tries again");
            }
        }
    }
}

/// When the rating window widens, and the ids of `SEARCHING` events.
struct Schedule(PoolPolicy);

impl Schedule {
    /// The window's last widening step (ids stay below the final one).
    fn last_step(&self) -> i64 {
        let interval = self.0.widening_interval_ms.max(1);
        self.0
            .wait_until_window(self.0.max_gap)
            .map_or(0, |ms| ms / interval)
            .min(FINAL_EVENT_ID as i64 - 2)
    }

    /// Widening steps taken by an entry enqueued at `enqueued_at`, at `now`.
    fn step(&self, enqueued_at: Option<Millis>, now: Millis) -> i64 {
        enqueued_at.map_or(0, |at| {
            self.0.widening_steps(now - at).min(self.last_step())
        })
    }

    /// The id of a `SEARCHING` event at `now`.
    fn searching_id(&self, enqueued_at: Option<Millis>, now: Millis) -> u64 {
        1 + self.step(enqueued_at, now) as u64
    }

    /// When an entry enqueued at `enqueued_at` next widens after `now`.
    fn next_widening(&self, enqueued_at: Option<Millis>, now: Millis) -> Option<Millis> {
        let at = enqueued_at?;
        let step = self.step(Some(at), now);
        (step < self.last_step()).then(|| at + (step + 1) * self.0.widening_interval_ms.max(1))
    }
}

impl Live {
    /// The next event, or `None` once the stream ends: after the final
    /// event, on shutdown, or when the entry can no longer be read (the
    /// client reconnects, here or elsewhere).
    async fn next(mut self) -> Option<(StreamEvent, Self)> {
        loop {
            if let Some(event) = self.pending.take() {
                self.last_sent = event.id;
                self.done = event.is_final();
                return Some((event, self));
            }
            if self.done || *self.closing.borrow() {
                return None;
            }
            let streams = Arc::clone(&self.streams);
            let now = streams.clock.now();
            let recheck = now + streams.limits.recheck.as_millis() as Millis;
            let wake_at = self
                .schedule
                .next_widening(self.enqueued_at, now)
                .map_or(recheck, |at| at.min(recheck));
            let wait = Duration::from_millis((wake_at - now).max(0) as u64);
            tokio::select! {
                () = self.watch.changed() => {}
                () = tokio::time::sleep(wait) => {}
                _ = self.closing.changed() => return None,
            }
            let view = match streams.queue.status(&self.who, &self.id).await {
                Ok(view) => view,
                Err(e) => {
                    tracing::debug!(error = %e, queue_entry_id = %self.id, "an event stream ends: its entry cannot be read");
                    return None;
                }
            };
            let now = streams.clock.now();
            self.schedule = streams.schedule(&self.who.tenant_id, &view);
            let event = streams.event(&self.who.tenant_id, view, now);
            if event.id > self.last_sent {
                // A change announced by the store: how long from its
                // commit to its event, handed to the connection now.
                if let Some(at) = self.watch.take_changed_at() {
                    crate::observe::event_pushed(now - at);
                }
                self.pending = Some(event);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searching_ids_grow_with_the_window_and_stop_below_the_final_one() {
        // 100 → 500 by 25 every 10 s: sixteen widenings.
        let s = Schedule(PoolPolicy::default());
        let enq = Some(1_000_000);
        let at = |ms: Millis| 1_000_000 + ms;
        assert_eq!(s.searching_id(enq, at(0)), 1);
        assert_eq!(s.searching_id(enq, at(9_999)), 1);
        assert_eq!(s.searching_id(enq, at(10_000)), 2);
        assert_eq!(s.next_widening(enq, at(10_000)), Some(at(20_000)));
        assert_eq!(s.searching_id(enq, at(160_000)), 17);
        assert_eq!(s.next_widening(enq, at(160_000)), None);
        assert_eq!(s.searching_id(enq, at(590_000)), 17);
        // A matched entry read from its record has no enqueue time.
        assert_eq!(s.searching_id(None, at(5)), 1);
        let ids: Vec<u64> = (0..700)
            .map(|t| s.searching_id(enq, at(t * 1_000)))
            .collect();
        assert!(ids.windows(2).all(|w| w[0] <= w[1]));
        assert!(ids.iter().all(|id| *id < FINAL_EVENT_ID));
        // A window that never widens: one searching id.
        let fixed = Schedule(PoolPolicy {
            widening_amount: 0,
            ..PoolPolicy::default()
        });
        assert_eq!(fixed.searching_id(enq, at(100_000)), 1);
        assert_eq!(fixed.next_widening(enq, at(0)), None);
    }

    #[test]
    fn open_streams_touch_three_times_per_presence_timeout() {
        assert_eq!(StreamLimits::touch_every(None), None);
        assert_eq!(
            StreamLimits::touch_every(Some(30_000)),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            StreamLimits::touch_every(Some(600)),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            StreamLimits::touch_every(Some(90_000)),
            Some(Duration::from_secs(10))
        );
    }
}
