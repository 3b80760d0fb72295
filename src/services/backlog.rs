//! Backpressure from the matching worker to joins: a pool whose last pass
//! took longer than a bound (`POOL_BUSY_PASS_SECONDS`), or whose pass in
//! progress has run longer than it, is *busy*, and new joins to it answer
//! 503 `MATCHMAKING_UNAVAILABLE` with `Retry-After` until a pass over it is
//! quick again — or, at the latest, until the `Retry-After` it gave has
//! passed: a pool the slow pass emptied sees no further pass (nothing waits
//! in it, and a refused join makes nothing due), so a mark that only a
//! quick pass could clear would refuse its joins for good.
//!
//! Joins are cheap and matches are not (each is a durable write): a node
//! flooded with joins admits them faster than it can match them, and the
//! pool it cannot keep up with grows without bound — memory, the time of
//! every pass, and the latency of every request that waits behind one. The
//! in-flight bound does not see it (each join is quick); the pass time does.
//! Entries already waiting are matched as fast as the worker can; only new
//! arrivals wait outside. A node without a worker (`WORKER_ENABLED=false`)
//! sees no passes and never marks a pool busy.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::domain::PoolRef;

/// How the matching passes of this process went, per pool.
#[derive(Debug)]
pub struct Backlog {
    /// Passes longer than this mark their pool busy; `None`: never.
    bound: Option<Duration>,
    /// Pools with a pass running or a slow last pass. A std lock: one map
    /// operation, never across an await.
    pools: Mutex<HashMap<PoolRef, PoolPasses>>,
    /// How many pools had a slow last pass, and when (ms after `origin`)
    /// the oldest pass still running started (`u64::MAX`: none). A join
    /// takes the lock only when one of them says a pool may be busy: a
    /// running pass is the normal state of a loaded node, and every join
    /// meeting the worker at the lock would cost them both.
    slow: AtomicUsize,
    oldest_running: AtomicU64,
    origin: Instant,
}

#[derive(Debug, Default, Clone, Copy)]
struct PoolPasses {
    /// When the pass in progress started.
    running_since: Option<Instant>,
    /// How long the last pass took, if longer than the bound, and when it
    /// ended.
    slow: Option<(Duration, Instant)>,
}

/// The `Retry-After` (whole seconds, 1 to 10) for a pass that took `took`.
fn retry_seconds(took: Duration) -> u64 {
    took.as_secs().clamp(1, 10)
}

impl Backlog {
    /// `bound` of zero turns the backpressure off.
    pub fn new(bound: Duration) -> Self {
        Self {
            bound: (!bound.is_zero()).then_some(bound),
            pools: Mutex::default(),
            slow: AtomicUsize::new(0),
            oldest_running: AtomicU64::new(u64::MAX),
            origin: Instant::now(),
        }
    }

    fn since_origin(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_millis() as u64
    }

    /// Refreshes the join path's summary of `pools` (under its lock).
    fn summarize(&self, pools: &HashMap<PoolRef, PoolPasses>) {
        let slow = pools.values().filter(|p| p.slow.is_some()).count();
        let oldest = pools
            .values()
            .filter_map(|p| p.running_since)
            .min()
            .map_or(u64::MAX, |at| self.since_origin(at));
        self.slow.store(slow, Ordering::Release);
        self.oldest_running.store(oldest, Ordering::Release);
    }

    /// A pass over `pool` starts.
    pub fn started(&self, pool: &PoolRef) {
        if self.bound.is_none() {
            return;
        }
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.entry(pool.clone()).or_default().running_since = Some(Instant::now());
        self.summarize(&pools);
    }

    /// A pass over `pool` took `took`: marks the pool busy or clears it.
    pub fn passed(&self, pool: &PoolRef, took: Duration) {
        let Some(bound) = self.bound else {
            return;
        };
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let was = pools.remove(pool).unwrap_or_default();
        if took > bound {
            if was.slow.is_none() {
                tracing::warn!(pool = %pool, took_ms = took.as_millis() as u64, "matching is behind on this pool: new joins to it wait outside");
            }
            pools.insert(
                pool.clone(),
                PoolPasses {
                    running_since: None,
                    slow: Some((took, Instant::now())),
                },
            );
        } else if was.slow.is_some() {
            tracing::info!(pool = %pool, "matching caught up with this pool: joins to it are admitted again");
        }
        self.summarize(&pools);
    }

    /// Seconds a join to `pool` should wait before trying again, if the
    /// pool is busy: its last pass was slow, or the one running is.
    /// A slow last pass holds joins for the `Retry-After` it gave, no
    /// longer.
    pub fn retry_after(&self, pool: &PoolRef) -> Option<u64> {
        self.retry_after_at(pool, Instant::now())
    }

    fn retry_after_at(&self, pool: &PoolRef, now: Instant) -> Option<u64> {
        let bound = self.bound?;
        let oldest = self.oldest_running.load(Ordering::Acquire);
        let running_long = oldest != u64::MAX
            && self.since_origin(now).saturating_sub(oldest) > bound.as_millis() as u64;
        if self.slow.load(Ordering::Acquire) == 0 && !running_long {
            return None;
        }
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let p = pools.get(pool)?;
        let running = p
            .running_since
            .map(|since| now.saturating_duration_since(since));
        let slow = p.slow.and_then(|(took, ended)| {
            let held = Duration::from_secs(retry_seconds(took));
            (now.saturating_duration_since(ended) < held).then_some(took)
        });
        [slow, running]
            .into_iter()
            .flatten()
            .filter(|took| *took > bound)
            .max()
            .map(retry_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(key: &str) -> PoolRef {
        PoolRef {
            tenant_id: crate::domain::TenantId::parse("t").unwrap(),
            key: key.parse().unwrap(),
        }
    }

    #[test]
    fn a_slow_pass_makes_its_pool_busy_until_a_quick_one() {
        let backlog = Backlog::new(Duration::from_secs(1));
        let (a, b) = (
            pool("standard_5+0_rated_GLOBAL"),
            pool("standard_3+0_rated_GLOBAL"),
        );
        backlog.passed(&a, Duration::from_millis(2_500));
        assert_eq!(backlog.retry_after(&a), Some(2));
        assert_eq!(backlog.retry_after(&b), None, "other pools are not held up");
        backlog.passed(&a, Duration::from_millis(300));
        assert_eq!(backlog.retry_after(&a), None);
    }

    /// The pool a slow pass emptied sees no pass again until a join comes:
    /// the mark lapses with its Retry-After, so that join is let in.
    #[test]
    fn a_slow_mark_lapses_when_its_retry_after_has_passed() {
        let backlog = Backlog::new(Duration::from_secs(1));
        let a = pool("standard_5+0_rated_GLOBAL");
        backlog.passed(&a, Duration::from_millis(2_500));
        let now = Instant::now();
        assert_eq!(backlog.retry_after_at(&a, now), Some(2));
        assert_eq!(
            backlog.retry_after_at(&a, now + Duration::from_millis(1_900)),
            Some(2)
        );
        assert_eq!(
            backlog.retry_after_at(&a, now + Duration::from_millis(2_100)),
            None
        );
        // A pass running past the bound still holds them, however old the
        // mark.
        backlog.started(&a);
        assert_eq!(
            backlog.retry_after_at(&a, Instant::now() + Duration::from_secs(60)),
            Some(10)
        );
    }

    #[test]
    fn a_pass_running_past_the_bound_holds_joins_before_it_ends() {
        let backlog = Backlog::new(Duration::from_millis(20));
        let a = pool("standard_5+0_rated_GLOBAL");
        backlog.started(&a);
        assert_eq!(backlog.retry_after(&a), None, "a pass just begun");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(
            backlog.retry_after(&a),
            Some(1),
            "still running past the bound"
        );
        backlog.passed(&a, Duration::from_millis(5));
        assert_eq!(backlog.retry_after(&a), None);
    }

    #[test]
    fn a_bound_of_zero_never_holds_joins() {
        let backlog = Backlog::new(Duration::ZERO);
        let a = pool("standard_5+0_rated_GLOBAL");
        backlog.passed(&a, Duration::from_secs(60));
        assert_eq!(backlog.retry_after(&a), None);
    }
}
