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

use crate::domain::PoolRef;
use crate::services::challenges::ChallengeService;
use crate::services::guards::Guards;
use crate::services::matching::MatchingService;
use crate::services::signal::PoolSignal;

/// Periodic passes between two purges of finished entries.
const PURGE_EVERY_TICKS: u32 = 30;

/// How long a tick waits for the guards to be rebuilt (the rebuild goes on).
const GUARDS_WAIT: Duration = Duration::from_millis(200);

/// A pass slower than this is logged as a warning.
const SLOW_PASS: Duration = Duration::from_millis(200);

pub struct Worker {
    matching: Arc<MatchingService>,
    challenges: Arc<ChallengeService>,
    guards: Arc<Guards>,
    signal: Arc<PoolSignal>,
    interval: Duration,
    concurrency: usize,
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
        matching: Arc<MatchingService>,
        challenges: Arc<ChallengeService>,
        guards: Arc<Guards>,
        signal: Arc<PoolSignal>,
        interval: Duration,
        concurrency: usize,
        lease_ttl: Duration,
    ) -> Self {
        let lease = Arc::new(Lease {
            holder: format!("worker-{}", ulid::Ulid::new()),
            ttl_ms: lease_ttl.as_millis() as i64,
            held: Default::default(),
        });
        Self {
            matching,
            challenges,
            guards,
            signal,
            interval,
            concurrency: concurrency.max(1),
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
                    self.maintain(ticks % PURGE_EVERY_TICKS == 0).await;
                    match self.matching.store().pools().await {
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
        if let Err(e) = self
            .matching
            .store()
            .release_leases(&held, &self.lease.holder)
            .await
        {
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
        let (matching, lease) = (self.matching.clone(), self.lease.clone());
        passes.running.spawn(async move {
            if lease.take(&matching, &pool).await {
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
            match self.matching.purge().await {
                Ok(n) if n > 0 => tracing::debug!(purged = n, "purged finished entries"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "purge failed"),
            }
        }
    }
}

impl Lease {
    /// Takes or renews the lease on `pool`; false if another worker has it.
    async fn take(&self, matching: &MatchingService, pool: &PoolRef) -> bool {
        let held = match matching
            .store()
            .lease_pool(pool, &self.holder, self.ttl_ms)
            .await
        {
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
