//! The matching worker: event-driven passes over pools a join made due,
//! plus a periodic pass over every pool for widening and time-outs.
//!
//! It stops when the shutdown channel says so, after finishing the pass in
//! progress (never mid-commit).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::domain::PoolRef;
use crate::services::matching::MatchingService;
use crate::services::signal::PoolSignal;

/// Periodic passes between two purges of finished entries.
const PURGE_EVERY_TICKS: u32 = 30;

pub struct Worker {
    matching: Arc<MatchingService>,
    signal: Arc<PoolSignal>,
    interval: Duration,
    concurrency: usize,
}

impl Worker {
    pub fn new(
        matching: Arc<MatchingService>,
        signal: Arc<PoolSignal>,
        interval: Duration,
        concurrency: usize,
    ) -> Self {
        Self {
            matching,
            signal,
            interval,
            concurrency: concurrency.max(1),
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
                _ = self.signal.notified() => {
                    let due = self.signal.take_due();
                    self.run_pools(due).await;
                }
                _ = tick.tick() => {
                    ticks = ticks.wrapping_add(1);
                    self.periodic(ticks % PURGE_EVERY_TICKS == 0).await;
                }
            }
        }
        tracing::info!("matching worker stopped");
    }

    /// One periodic pass: recover stale reservations, match every pool,
    /// and now and then purge.
    pub async fn periodic(&self, purge: bool) {
        if let Err(e) = self.matching.recover_stale().await {
            tracing::warn!(error = %e, "recovering stale reservations failed");
        }
        match self.matching.store().pools().await {
            Ok(pools) => self.run_pools(pools).await,
            Err(e) => tracing::warn!(error = %e, "listing pools failed"),
        }
        if purge {
            match self.matching.purge().await {
                Ok(n) if n > 0 => tracing::debug!(purged = n, "purged finished entries"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "purge failed"),
            }
        }
    }

    /// Runs a pass over each pool, a bounded number at a time.
    pub async fn run_pools(&self, pools: Vec<PoolRef>) {
        futures::stream::iter(pools)
            .for_each_concurrent(self.concurrency, |pool| async move {
                match self.matching.run_pool(&pool).await {
                    Ok(report) if report != Default::default() => {
                        tracing::debug!(pool = %pool, ?report, "matching pass");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(pool = %pool, error = %e, "matching pass failed"),
                }
            })
            .await;
    }
}
