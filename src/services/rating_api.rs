//! The platform's rating service (SPEC §8): `GET {RATING_API_URL}/v1/ratings/{user_id}`
//! answers a player's ratings in every pool (`{speed}_{variant}`).
//!
//! A join must never fail or hang because the rating service does. So:
//!
//! - each answer is cached per (tenant, user, pool) for
//!   `RATING_CACHE_TTL_SECONDS`; within it no call is made. Older entries
//!   are kept (up to `RATING_CACHE_MAX_ENTRIES`) as the fallback;
//! - a call has `RATING_API_TIMEOUT_SECONDS` in all, and at most
//!   `RATING_API_MAX_CONCURRENCY` are in flight on a node: a join past that
//!   falls back at once instead of queueing behind a slow service;
//! - its own circuit breaker (thresholds of `CIRCUIT_BREAKER_*`) stops the
//!   calls while the service fails, and lets one probe through after the
//!   cool-down;
//! - an answer that is not the contract's (not JSON, another user, a rating
//!   outside 0–4000, a deviation that is not a number) counts as a failure.
//!
//! What a failed read falls back to is the caller's choice
//! ([`super::ratings::RatingService`]): the stale cached value, else the
//! local table, else 1500.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::breaker::CircuitBreaker;
use crate::domain::{
    Clock, Deviation, MAX_DEVIATION, Millis, RATING_RANGE, Rating, RatingPool, RatingSnapshot,
    SystemClock, TenantId, UNKNOWN_DEVIATION, UserId,
};

/// Why a read did not come from a fresh answer (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The breaker is open: the service failed lately.
    BreakerOpen,
    /// `RATING_API_MAX_CONCURRENCY` calls are already in flight.
    Busy,
    Timeout,
    /// Transport error or a status other than 200/404.
    Failed,
    /// An answer that is not the contract's.
    Invalid,
}

impl Unavailable {
    pub fn as_str(self) -> &'static str {
        match self {
            Unavailable::BreakerOpen => "breaker_open",
            Unavailable::Busy => "busy",
            Unavailable::Timeout => "timeout",
            Unavailable::Failed => "failed",
            Unavailable::Invalid => "invalid",
        }
    }
}

/// What a read found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Read {
    /// From the service now, or from the cache within its TTL.
    Fresh(RatingSnapshot),
    /// The service could not be read; `stale` is the newest cached value.
    Unavailable {
        why: Unavailable,
        stale: Option<RatingSnapshot>,
    },
}

#[derive(Debug, Deserialize)]
struct Answer {
    user_id: String,
    ratings: Vec<PoolRating>,
}

#[derive(Debug, Deserialize)]
struct PoolRating {
    pool_id: String,
    rating: f64,
    #[serde(default)]
    rating_deviation: Option<f64>,
}

type Key = (TenantId, UserId, RatingPool);

#[derive(Clone, Copy)]
struct Cached {
    snapshot: RatingSnapshot,
    fetched_at: Millis,
}

pub struct RatingApi {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    timeout: Duration,
    ttl_ms: Millis,
    max_entries: usize,
    cache: Mutex<HashMap<Key, Cached>>,
    permits: Semaphore,
    breaker: CircuitBreaker,
    clock: Arc<dyn Clock>,
}

/// Settings of a [`RatingApi`].
#[derive(Debug, Clone)]
pub struct RatingApiConfig {
    pub url: String,
    pub token: Option<String>,
    pub timeout: Duration,
    pub max_concurrency: usize,
    pub ttl_ms: Millis,
    pub max_entries: usize,
    pub breaker_failures: u32,
    pub breaker_cooldown_ms: Millis,
}

/// Reports the breaker's probe as failed if the call is dropped before it
/// ends (the join's client went away), so a half-open breaker is never
/// left waiting for a probe that will not report.
struct Outcome<'a> {
    breaker: &'a CircuitBreaker,
    clock: &'a dyn Clock,
    reported: bool,
}

impl Outcome<'_> {
    fn report(mut self, ok: bool) {
        self.reported = true;
        let now = self.clock.now();
        if ok {
            self.breaker.on_success(now);
        } else {
            self.breaker.on_failure(now);
        }
    }
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.on_failure(self.clock.now());
        }
    }
}

impl RatingApi {
    pub fn new(config: RatingApiConfig) -> Result<Self, String> {
        let base = crate::settings::http_base(&config.url, "RATING_API_URL")?;
        let http = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            .timeout(config.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| format!("cannot build the rating service client: {e}"))?;
        Ok(Self {
            http,
            base: base.to_owned(),
            token: config.token,
            timeout: config.timeout,
            ttl_ms: config.ttl_ms,
            max_entries: config.max_entries.max(1),
            cache: Mutex::default(),
            permits: Semaphore::new(config.max_concurrency.max(1)),
            breaker: CircuitBreaker::new(config.breaker_failures, config.breaker_cooldown_ms)
                .guarding("rating reads", "joins use cached or local ratings"),
            clock: Arc::new(SystemClock),
        })
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    fn cached(&self, key: &Key) -> Option<Cached> {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
    }

    /// Caches an answer: every pool it names, and `asked` as unrated when
    /// it names none for it.
    fn remember(
        &self,
        tenant: &TenantId,
        user: &UserId,
        asked: RatingPool,
        pools: &[(RatingPool, RatingSnapshot)],
        now: Millis,
    ) -> RatingSnapshot {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() + pools.len() + 1 > self.max_entries {
            // Full: drop what is past its TTL (kept only as a fallback),
            // then everything if that is not enough.
            let ttl = self.ttl_ms;
            cache.retain(|_, c| now - c.fetched_at < ttl);
            if cache.len() + pools.len() + 1 > self.max_entries {
                cache.clear();
            }
        }
        let mut put = |pool, snapshot| {
            cache.insert(
                (tenant.clone(), user.clone(), pool),
                Cached {
                    snapshot,
                    fetched_at: now,
                },
            );
        };
        for &(pool, snapshot) in pools {
            put(pool, snapshot);
        }
        let answer = pools
            .iter()
            .find(|(pool, _)| *pool == asked)
            .map_or(RatingSnapshot::UNRATED, |&(_, s)| s);
        put(asked, answer);
        answer
    }

    /// The player's rating in `pool`: from the cache within its TTL, else
    /// from the service (see the module docs for the bounds).
    pub async fn read(&self, tenant: &TenantId, user: &UserId, pool: RatingPool) -> Read {
        let key = (tenant.clone(), user.clone(), pool);
        let cached = self.cached(&key);
        let now = self.clock.now();
        if let Some(c) = cached
            && now - c.fetched_at < self.ttl_ms
        {
            return Read::Fresh(c.snapshot);
        }
        let stale = cached.map(|c| c.snapshot);
        let unavailable = |why| Read::Unavailable { why, stale };
        let Ok(_permit) = self.permits.try_acquire() else {
            return unavailable(Unavailable::Busy);
        };
        if !self.breaker.try_acquire(now) {
            return unavailable(Unavailable::BreakerOpen);
        }
        let outcome = Outcome {
            breaker: &self.breaker,
            clock: self.clock.as_ref(),
            reported: false,
        };
        let span = crate::traced_span!("rating_read", pool = %pool);
        let fetched = tokio::time::timeout(self.timeout, self.fetch(user).instrument(span)).await;
        let pools = match fetched {
            Ok(Ok(pools)) => {
                outcome.report(true);
                pools
            }
            Ok(Err(why)) => {
                outcome.report(false);
                return unavailable(why);
            }
            Err(_) => {
                outcome.report(false);
                return unavailable(Unavailable::Timeout);
            }
        };
        Read::Fresh(self.remember(tenant, user, pool, &pools, self.clock.now()))
    }

    /// One call: the player's ratings in every pool this service knows
    /// (a 404 is a player rated nowhere).
    async fn fetch(&self, user: &UserId) -> Result<Vec<(RatingPool, RatingSnapshot)>, Unavailable> {
        let mut request = self
            .http
            .get(format!("{}/v1/ratings/{}", self.base, user.as_str()));
        if let Some(id) = crate::http::request_id::with_current(str::to_owned) {
            request = request.header("X-Request-Id", id);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let request = crate::http::trace_context::propagate(request);
        let response = request.send().await.map_err(|e| {
            tracing::debug!(error = %e, "rating service unreachable");
            if e.is_timeout() {
                Unavailable::Timeout
            } else {
                Unavailable::Failed
            }
        })?;
        match response.status() {
            reqwest::StatusCode::OK => {}
            reqwest::StatusCode::NOT_FOUND => return Ok(Vec::new()),
            status => {
                tracing::debug!(%status, "rating service refused a read");
                return Err(Unavailable::Failed);
            }
        }
        let body = response.bytes().await.map_err(|_| Unavailable::Failed)?;
        parse(&body, user).map_err(|why| {
            tracing::warn!(user_id = %user, why, "rating service answered outside its contract");
            Unavailable::Invalid
        })
    }
}

/// Checks an answer against the contract; pools this service does not
/// play (another speed or variant) are left out.
fn parse(body: &[u8], user: &UserId) -> Result<Vec<(RatingPool, RatingSnapshot)>, &'static str> {
    let answer: Answer = serde_json::from_slice(body).map_err(|_| "not the contract's JSON")?;
    if answer.user_id != user.as_str() {
        return Err("another user's ratings");
    }
    let mut pools = Vec::with_capacity(answer.ratings.len());
    for r in answer.ratings {
        let rating = r.rating.round();
        if !(rating.is_finite()
            && (*RATING_RANGE.start() as f64..=*RATING_RANGE.end() as f64).contains(&rating))
        {
            return Err("a rating outside 0-4000");
        }
        let deviation = r
            .rating_deviation
            .map_or(f64::from(UNKNOWN_DEVIATION), f64::round);
        if !(deviation.is_finite() && (0.0..=f64::from(MAX_DEVIATION)).contains(&deviation)) {
            return Err("a rating deviation outside 0-1000");
        }
        if let Ok(pool) = r.pool_id.parse::<RatingPool>() {
            pools.push((
                pool,
                RatingSnapshot {
                    rating: rating as Rating,
                    deviation: deviation as Deviation,
                },
            ));
        }
    }
    Ok(pools)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Speed, Variant};

    fn user() -> UserId {
        UserId::parse("u1").unwrap()
    }

    #[test]
    fn answers_outside_the_contract_are_refused() {
        for bad in [
            &b"not json"[..],
            br#"{"user_id": "u2", "ratings": []}"#,
            br#"{"user_id": "u1", "ratings": [{"pool_id": "blitz_standard", "rating": "x"}]}"#,
            br#"{"user_id": "u1", "ratings": [{"pool_id": "blitz_standard", "rating": 99999}]}"#,
            br#"{"user_id": "u1", "ratings": [{"pool_id": "blitz_standard", "rating": 1500, "rating_deviation": -1}]}"#,
            br#"{"user_id": "u1"}"#,
        ] {
            assert!(parse(bad, &user()).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn pools_are_read_by_speed_and_variant_and_unknown_ones_skipped() {
        let body = br#"{"user_id": "u1", "ratings": [
            {"pool_id": "blitz_standard", "rating": 1620, "rating_deviation": 80.5, "volatility": 0.06, "games_played": 40, "provisional": false},
            {"pool_id": "blitz_chess960", "rating": 2100.4},
            {"pool_id": "correspondence_standard", "rating": 1900, "rating_deviation": 60}
        ]}"#;
        let pools = parse(body, &user()).unwrap();
        assert_eq!(
            pools,
            vec![
                (
                    RatingPool::standard(Speed::Blitz),
                    RatingSnapshot {
                        rating: 1620,
                        deviation: 81
                    }
                ),
                (
                    RatingPool {
                        speed: Speed::Blitz,
                        variant: Variant::Chess960
                    },
                    RatingSnapshot {
                        rating: 2100,
                        deviation: UNKNOWN_DEVIATION
                    }
                ),
            ]
        );
    }
}
