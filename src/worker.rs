//! The matching worker: event-driven passes over pools a join made due,
//! plus a periodic pass over every pool for widening and time-outs.
//!
//! Each pool's pass runs as its own task, at most `concurrency` at a time,
//! and a pool is never passed over twice at once: one that becomes due while
//! its pass runs is passed over again right after. So a pool flooded with
//! players never delays matching in the others.
//!
//! Across workers, a pool is passed over by the holder of its lease only
//! (taken or renewed at each pass; a dead worker's lease lapses, and another
//! takes the pool over). Correctness never depends on the lease: reserving
//! a pair is atomic. Leases only spread the work.
//!
//! On shutdown it stops starting passes and waits for the running ones
//! (never mid-commit).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::domain::{Clock, Millis, PoolRef};
use crate::services::challenges::ChallengeService;
use crate::services::guards::Guards;
use crate::services::matching::MatchingService;
use crate::services::signal::PoolSignal;
use crate::store::{DurableStore, QueueStore, StoreResult};

/// Periodic passes between two purges of finished entries.
const PURGE_EVERY_TICKS: u32 = 30;

/// How long a tick waits for the guards to be rebuilt (the rebuild goes on).
const GUARDS_WAIT: Duration = Duration::from_millis(200);

/// A pass slower than this is logged as a warning.
const SLOW_PASS: Duration = Duration::from_millis(200);

/// How the worker paces itself and what it keeps.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Between two periodic passes over every pool.
    pub interval: Duration,
    /// Pool passes running at once.
    pub concurrency: usize,
    /// How long a pool lease lasts unless renewed.
    pub lease_ttl: Duration,
    /// How long finished entries are kept.
    pub retention_ms: Millis,
    /// How long a claim or guard lives (purged after).
    pub guard_ms: Millis,
    pub clock: Arc<dyn Clock>,
}

pub struct Worker {
    /// The queue store whole: the worker lists its pools, holds their
    /// leases and purges it.
    store: Arc<dyn QueueStore>,
    durable: Arc<dyn DurableStore>,
    matching: Arc<MatchingService>,
    challenges: Arc<ChallengeService>,
    guards: Arc<Guards>,
    signal: Arc<PoolSignal>,
    interval: Duration,
    concurrency: usize,
    retention_ms: Millis,
    guard_ms: Millis,
    clock: Arc<dyn Clock>,
    lease: Arc<Lease>,
}

/// This worker's name on pool leases, and the pools it holds.
struct Lease {
    holder: String,
    ttl_ms: i64,
    /// A std lock: held for one set operation, never across an await.
    held: std::sync::Mutex<HashSet<PoolRef>>,
}

/// Which pools are being passed over, and which wait for a turn.
#[derive(Default)]
struct Passes {
    running: JoinSet<PoolRef>,
    in_flight: HashSet<PoolRef>,
    /// Due again while running, or waiting for a free slot; each once.
    queued: VecDeque<PoolRef>,
    queued_set: HashSet<PoolRef>,
}

impl Worker {
    pub fn new(
        (store, durable): (Arc<dyn QueueStore>, Arc<dyn DurableStore>),
        matching: Arc<MatchingService>,
        challenges: Arc<ChallengeService>,
        guards: Arc<Guards>,
        signal: Arc<PoolSignal>,
        settings: WorkerSettings,
    ) -> Self {
        let lease = Arc::new(Lease {
            holder: format!("worker-{}", ulid::Ulid::new()),
            ttl_ms: settings.lease_ttl.as_millis() as i64,
            held: Default::default(),
        });
        Self {
            store,
            durable,
            matching,
            challenges,
            guards,
            signal,
            interval: settings.interval,
            concurrency: settings.concurrency.max(1),
            retention_ms: settings.retention_ms,
            guard_ms: settings.guard_ms,
            clock: settings.clock,
            lease,
        }
    }

    /// Runs until `shutdown` turns true (or its sender is dropped).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(
            interval_ms = self.interval.as_millis() as u64,
            "matching worker started"
        );
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut ticks: u32 = 0;
        let mut passes = Passes::default();
        loop {
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                Some(done) = passes.running.join_next() => {
                    match done {
                        Ok(pool) => { passes.in_flight.remove(&pool); }
                        Err(e) => tracing::error!(error = %e, "a matching pass panicked"),
                    }
                    self.launch_queued(&mut passes);
                }
                _ = self.signal.notified() => {
                    for pool in self.signal.take_due() {
                        self.launch(&mut passes, pool);
                    }
                }
                _ = tick.tick() => {
                    ticks = ticks.wrapping_add(1);
                    self.maintain(ticks.is_multiple_of(PURGE_EVERY_TICKS)).await;
                    match self.store.pools().await {
                        Ok(pools) => pools.into_iter().for_each(|p| self.launch(&mut passes, p)),
                        Err(e) => tracing::warn!(error = %e, "listing pools failed"),
                    }
                }
            }
        }
        // Finish the passes in progress; start no new ones; hand the pools on.
        while passes.running.join_next().await.is_some() {}
        let held: Vec<PoolRef> = self
            .lease
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        if let Err(e) = self.store.release_leases(&held, &self.lease.holder).await {
            tracing::warn!(error = %e, "releasing pool leases failed; they will lapse");
        }
        tracing::info!("matching worker stopped");
    }

    /// Starts a pass over `pool` now, or queues it if it is running or
    /// every slot is taken.
    fn launch(&self, passes: &mut Passes, pool: PoolRef) {
        if passes.in_flight.contains(&pool) || passes.running.len() >= self.concurrency {
            if passes.queued_set.insert(pool.clone()) {
                passes.queued.push_back(pool);
            }
            return;
        }
        passes.in_flight.insert(pool.clone());
        let (store, matching, lease) = (
            self.store.clone(),
            self.matching.clone(),
            self.lease.clone(),
        );
        passes.running.spawn(async move {
            if lease.take(&*store, &pool).await {
                run_pass(&matching, &pool).await;
            }
            pool
        });
    }

    /// Starts queued pools that are not running, while slots are free.
    fn launch_queued(&self, passes: &mut Passes) {
        let mut blocked = VecDeque::new();
        while passes.running.len() < self.concurrency {
            let Some(pool) = passes.queued.pop_front() else {
                break;
            };
            if passes.in_flight.contains(&pool) {
                blocked.push_back(pool);
                continue;
            }
            passes.queued_set.remove(&pool);
            self.launch(passes, pool);
        }
        blocked.extend(passes.queued.drain(..));
        passes.queued = blocked;
    }

    /// Periodic upkeep: rebuild the queue store's guards if it lost them
    /// (before a join has to), recover stale reservations and intents,
    /// expire challenges, and now and then purge.
    async fn maintain(&self, purge: bool) {
        if let Err(e) = self.guards.ensure_intact(GUARDS_WAIT).await {
            tracing::warn!(error = %e, "rebuilding the active-game guards failed");
        }
        if let Err(e) = self.matching.recover_stale().await {
            tracing::warn!(error = %e, "recovering stale reservations failed");
        }
        match self.challenges.sweep().await {
            Ok((expired, recovered)) if expired + recovered as u64 > 0 => {
                tracing::info!(expired, recovered, "challenges swept");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweeping challenges failed"),
        }
        if purge {
            match self.purge().await {
                Ok(n) if n > 0 => tracing::debug!(purged = n, "purged finished entries"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "purge failed"),
            }
        }
    }

    /// Drops finished entries past their retention and expired guards
    /// from the queue store, and expired answers and claims from the
    /// durable one; answers how many items went.
    async fn purge(&self) -> StoreResult<usize> {
        let now = self.clock.now();
        let hot = self.store.purge(now - self.retention_ms, now).await?;
        let durable = self.durable.purge_expired(now, now - self.guard_ms).await?;
        Ok(hot + durable as usize)
    }
}

impl Lease {
    /// Takes or renews the lease on `pool`; false if another worker has it.
    async fn take(&self, store: &dyn QueueStore, pool: &PoolRef) -> bool {
        let held = match store.lease_pool(pool, &self.holder, self.ttl_ms).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(pool = %pool, error = %e, "taking the pool lease failed");
                false
            }
        };
        let mut mine = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held {
            mine.insert(pool.clone());
        } else {
            mine.remove(pool);
        }
        held
    }
}

async fn run_pass(matching: &MatchingService, pool: &PoolRef) {
    let started = Instant::now();
    let result = matching.run_pool(pool).await;
    let took_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(report) if started.elapsed() > SLOW_PASS => {
            tracing::warn!(pool = %pool, ?report, took_ms, "slow matching pass");
        }
        Ok(report) if report != Default::default() => {
            tracing::debug!(pool = %pool, ?report, took_ms, "matching pass");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(pool = %pool, error = %e, took_ms, "matching pass failed"),
    }
}
