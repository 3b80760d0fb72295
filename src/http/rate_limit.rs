//! Rate limits (SPEC §7.4), with `governor`'s keyed GCRA limiters: one per
//! client address (`RATE_LIMIT_PER_IP`) and one per authenticated user
//! (`RATE_LIMIT_PER_USER`), each with a burst of twice its rate. Over a
//! limit a request answers 429 `RATE_LIMITED` with `Retry-After`.
//!
//! The address is the TCP peer: behind a proxy, every client shares the
//! proxy's address, so set the per-IP limit on the proxy instead (or 0).

use std::hash::{BuildHasher, Hash};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::AppState;
use super::error::ServiceError;
use crate::domain::{TenantId, UserId};

/// Both limiters; a limit of 0 is no limiter.
pub struct RateLimits {
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Keyed by a 64-bit hash of (tenant, user) under a per-process random
    /// seed: no copy of either string per request. Two users sharing a key
    /// would take 2^32 active users to be likely, and would only share a
    /// budget.
    per_user: Option<DefaultKeyedRateLimiter<u64>>,
    user_key: foldhash::quality::RandomState,
}

fn limiter<K: Hash + Eq + Clone>(per_second: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = rate.saturating_mul(NonZeroU32::new(2).expect("2 is not 0"));
    Some(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

fn check<K: Hash + Eq + Clone>(
    limiter: &Option<DefaultKeyedRateLimiter<K>>,
    key: &K,
) -> Result<(), ServiceError> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        ServiceError::RateLimited {
            retry_after_seconds: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        }
    })
}

impl RateLimits {
    pub fn new(per_ip: u32, per_user: u32) -> Self {
        Self {
            per_ip: limiter(per_ip),
            per_user: limiter(per_user),
            user_key: foldhash::quality::RandomState::default(),
        }
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<(), ServiceError> {
        check(&self.per_ip, &ip)
    }

    pub fn check_user(&self, tenant: &TenantId, user: &UserId) -> Result<(), ServiceError> {
        if self.per_user.is_none() {
            return Ok(());
        }
        let key = self.user_key.hash_one((tenant.as_str(), user.as_str()));
        check(&self.per_user, &key)
    }

    /// Forgets keys whose budget is full again, so memory follows the
    /// clients active now, not every client ever seen.
    pub fn forget_idle(&self) {
        for limiter in self.per_ip.iter() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        for limiter in self.per_user.iter() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Runs [`forget_idle`](Self::forget_idle) every minute.
    pub async fn housekeeping(self: std::sync::Arc<Self>, mut stop: crate::shutdown::Stop) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tick.tick() => self.forget_idle(),
                _ = crate::shutdown::begun(&mut stop) => return,
            }
        }
    }
}

/// The per-address limit, before anything else is done for the request.
pub async fn per_ip(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(ip) = peer
        && !super::OPERATIONS_PATHS.contains(&request.uri().path())
        && let Err(e) = state.rate_limits.check_ip(ip)
    {
        return e.into_response();
    }
    next.run(request).await
}
