//! The circuit breaker in front of game creation (SPEC §5 step 4).
//!
//! `failures` consecutive failed creations open it: matching pauses and
//! joins answer 503 with `Retry-After`. After `cooldown` one probe is let
//! through (half-open); its success closes the breaker, its failure opens it
//! again. The breaker also remembers its recent outages, so time spent in an
//! outage never counts toward an entry's queue time.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::domain::Millis;

/// Outages remembered for queue-time accounting.
const OUTAGES_KEPT: usize = 64;

/// What the breaker says, as `/readyz` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Millis },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// (start, end) of outages; `None` end = ongoing. Oldest first.
    outages: VecDeque<(Millis, Option<Millis>)>,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    /// A std lock: held for a few field updates, never across an await.
    inner: Mutex<Inner>,
    failures_to_open: u32,
    cooldown_ms: Millis,
    /// What it guards, and what an open breaker means, for the logs.
    guards: &'static str,
    when_open: &'static str,
}

impl CircuitBreaker {
    pub fn new(failures_to_open: u32, cooldown_ms: Millis) -> Self {
        Self {
            inner: Mutex::new(Inner {
                state: State::Closed { failures: 0 },
                outages: VecDeque::new(),
            }),
            failures_to_open: failures_to_open.max(1),
            cooldown_ms,
            guards: "game creation",
            when_open: "matching paused, joins refused",
        }
    }

    /// The same breaker guarding something else: `guards` names it and
    /// `when_open` says what happens meanwhile, in the logs.
    pub fn guarding(mut self, guards: &'static str, when_open: &'static str) -> Self {
        self.guards = guards;
        self.when_open = when_open;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May a game be created now? In half-open, only one probe at a time.
    pub fn try_acquire(&self, now: Millis) -> bool {
        let mut inner = self.lock();
        match inner.state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                inner.state = State::HalfOpen { probing: true };
                tracing::info!(
                    guards = self.guards,
                    "circuit breaker half-open: letting one call through"
                );
                true
            }
            State::Open { .. } | State::HalfOpen { probing: true } => false,
            State::HalfOpen { probing: false } => {
                inner.state = State::HalfOpen { probing: true };
                true
            }
        }
    }

    /// The game service answered: close, ending any outage.
    pub fn on_success(&self, now: Millis) {
        let mut inner = self.lock();
        if !matches!(inner.state, State::Closed { .. }) {
            tracing::info!(
                guards = self.guards,
                "circuit breaker closed: calls work again"
            );
            if let Some((_, end @ None)) = inner.outages.back_mut() {
                *end = Some(now);
            }
        }
        inner.state = State::Closed { failures: 0 };
    }

    /// A creation failed for good: count it, and open at the threshold.
    pub fn on_failure(&self, now: Millis) {
        let mut inner = self.lock();
        let open = match inner.state {
            State::Closed { failures } if failures + 1 >= self.failures_to_open => true,
            State::Closed { failures } => {
                inner.state = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            State::HalfOpen { .. } | State::Open { .. } => true,
        };
        if open {
            let was_closed = matches!(inner.state, State::Closed { .. });
            inner.state = State::Open {
                until: now + self.cooldown_ms,
            };
            if was_closed {
                tracing::warn!(
                    guards = self.guards,
                    cooldown_ms = self.cooldown_ms,
                    "circuit breaker open: {}",
                    self.when_open
                );
                inner.outages.push_back((now, None));
                if inner.outages.len() > OUTAGES_KEPT {
                    inner.outages.pop_front();
                }
            }
        }
    }

    pub fn state(&self, now: Millis) -> BreakerState {
        match self.lock().state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Seconds until a probe may go through, while open.
    pub fn retry_after(&self, now: Millis) -> Option<u64> {
        match self.lock().state {
            State::Open { until } if now < until => Some(((until - now + 999) / 1000) as u64),
            _ => None,
        }
    }

    /// Milliseconds of `[from, to]` spent in outages.
    pub fn outage_overlap(&self, from: Millis, to: Millis) -> Millis {
        self.lock()
            .outages
            .iter()
            .map(|&(start, end)| {
                let end = end.unwrap_or(to);
                (end.min(to) - start.max(from)).max(0)
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_probes_after_the_cooldown() {
        let b = CircuitBreaker::new(3, 1_000);
        b.on_failure(0);
        b.on_failure(1);
        assert_eq!(b.state(1), BreakerState::Closed);
        b.on_failure(2);
        assert_eq!(b.state(2), BreakerState::Open);
        assert!(!b.try_acquire(500));
        assert_eq!(b.retry_after(500), Some(1));
        assert!(b.try_acquire(1_002), "the probe");
        assert!(!b.try_acquire(1_003), "one probe at a time");
        b.on_failure(1_010);
        assert_eq!(
            b.state(1_010),
            BreakerState::Open,
            "a failed probe opens again"
        );
        assert!(b.try_acquire(2_011));
        b.on_success(2_020);
        assert_eq!(b.state(2_020), BreakerState::Closed);
        assert!(b.try_acquire(2_021));
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = CircuitBreaker::new(2, 1_000);
        b.on_failure(0);
        b.on_success(1);
        b.on_failure(2);
        assert_eq!(b.state(2), BreakerState::Closed);
    }

    #[test]
    fn outage_time_is_measured_against_any_window() {
        let b = CircuitBreaker::new(1, 100);
        b.on_failure(1_000); // outage from 1000...
        assert_eq!(b.outage_overlap(0, 1_500), 500, "ongoing: counts up to now");
        assert!(b.try_acquire(1_200));
        b.on_success(2_000); // ...to 2000
        assert_eq!(b.outage_overlap(0, 5_000), 1_000);
        assert_eq!(b.outage_overlap(1_500, 5_000), 500);
        assert_eq!(b.outage_overlap(2_500, 5_000), 0);
    }
}
