//! One matching pass over a pool, and the commit protocol of SPEC §5:
//!
//! 1. reserve both entries atomically, only if both are still searching;
//! 2. create the game (idempotent by match id);
//! 3. persist the match record, then mark both entries `MATCHED`;
//! 4. if creation fails, put both back with their original `enqueued_at`;
//! 5. reservations left by a dead worker are finished or rolled back by
//!    [`MatchingService::recover_stale`].

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use futures::future::join_all;
use futures::stream::FuturesUnordered;
use rand::Rng;
use serde_json::json;

use super::breaker::{BreakerState, CircuitBreaker};
use super::games::{GameCreator, NewGame};
use crate::domain::{
    GameId, MatchRecord, MatchSide, MatchSource, Millis, PoolPolicy, PoolRef, UserId, now_millis,
};
use crate::matcher::{self, Seeker};
use crate::store::{AuditEvent, DurableStore, QueueStore, Reservation, StoreResult, Waiting};

/// Commit rounds of one pass in flight at the same time.
const ROUNDS_IN_FLIGHT: usize = 4;

/// Timings of the matching worker.
#[derive(Debug, Clone)]
pub struct MatchingLimits {
    pub pairs_per_batch: usize,
    pub reservation_ms: Millis,
    pub guard_ms: Millis,
    pub presence_ms: Option<Millis>,
    pub retention_ms: Millis,
}

/// What one pass over a pool did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    pub matched_pairs: usize,
    pub failed_pairs: usize,
    pub timed_out: usize,
}

pub struct MatchingService {
    store: Arc<dyn QueueStore>,
    durable: Arc<dyn DurableStore>,
    games: Arc<dyn GameCreator>,
    breaker: Arc<CircuitBreaker>,
    policy: PoolPolicy,
    limits: MatchingLimits,
}

/// A reserved pair on its way to a game.
struct Pending<'a> {
    reservation: Reservation,
    white: &'a Waiting,
    black: &'a Waiting,
}

impl MatchingService {
    pub fn new(
        store: Arc<dyn QueueStore>,
        durable: Arc<dyn DurableStore>,
        games: Arc<dyn GameCreator>,
        breaker: Arc<CircuitBreaker>,
        policy: PoolPolicy,
        limits: MatchingLimits,
    ) -> Self {
        Self {
            store,
            durable,
            games,
            breaker,
            policy,
            limits,
        }
    }

    pub fn store(&self) -> &Arc<dyn QueueStore> {
        &self.store
    }

    /// Times out entries past their time, then matches the rest.
    pub async fn run_pool(&self, pool: &PoolRef) -> StoreResult<PassReport> {
        let now = now_millis();
        let started = std::time::Instant::now();
        let waiting = self.store.waiting(pool).await?;
        let searching = waiting.len();
        let (expired, live): (Vec<Waiting>, Vec<Waiting>) =
            waiting.into_iter().partition(|w| self.expired(w, now));
        let mut report = PassReport::default();
        if !expired.is_empty() {
            report.timed_out = self.time_out(pool, &expired, now).await?;
        }
        // Game creation is down: everyone keeps waiting (and the outage
        // does not count toward their queue time) until a probe may go.
        if self.breaker.state(now) == BreakerState::Open {
            return Ok(report);
        }
        let seekers: Vec<Seeker<'_>> = live
            .iter()
            .map(|w| Seeker {
                user: w.user_id.as_str(),
                rating: w.rating,
                enqueued_at: w.enqueued_at,
            })
            .collect();
        let pairs = matcher::find_pairs(&seekers, now, &self.policy);
        // A few rounds in flight at once: their persistence can share one
        // group commit, and one slow game creation does not hold up the rest.
        let rounds: Vec<Vec<(&Waiting, &Waiting)>> = pairs
            .chunks(self.limits.pairs_per_batch)
            .map(|chunk| chunk.iter().map(|p| (&live[p.a], &live[p.b])).collect())
            .collect();
        let mut pending = rounds.iter();
        let mut in_flight: FuturesUnordered<_> = pending
            .by_ref()
            .take(ROUNDS_IN_FLIGHT)
            .map(|round| self.commit_round(pool, round, now))
            .collect();
        let mut first_error = None;
        while let Some(result) = in_flight.next().await {
            if let Some(round) = pending.next() {
                in_flight.push(self.commit_round(pool, round, now));
            }
            match result {
                Ok((ok, failed)) => {
                    report.matched_pairs += ok;
                    report.failed_pairs += failed;
                }
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        crate::observe::pass(pool, searching, started.elapsed());
        if let Some(e) = first_error {
            return Err(e);
        }
        Ok(report)
    }

    /// Past the pool's queue time, or unheard of for the presence timeout;
    /// time spent in a game-creation outage counts for neither.
    fn expired(&self, w: &Waiting, now: Millis) -> bool {
        let waited = now - w.enqueued_at - self.breaker.outage_overlap(w.enqueued_at, now);
        let unseen = now - w.last_seen_at - self.breaker.outage_overlap(w.last_seen_at, now);
        waited >= self.policy.max_queue_time_ms
            || self.limits.presence_ms.is_some_and(|p| unseen >= p)
    }

    async fn time_out(
        &self,
        pool: &PoolRef,
        expired: &[Waiting],
        now: Millis,
    ) -> StoreResult<usize> {
        let ids: Vec<_> = expired.iter().map(|w| w.id).collect();
        let changed = self.store.time_out(pool, &ids, now).await?;
        let mut events = Vec::with_capacity(changed.len());
        for e in &changed {
            let waited_ms = now - e.enqueued_at;
            let absent = now - e.last_seen_at;
            let reason = if waited_ms >= self.policy.max_queue_time_ms {
                "max_queue_time"
            } else {
                "absent"
            };
            crate::observe::timed_out(pool, reason, waited_ms);
            tracing::info!(
                event = "timeout",
                queue_entry_id = %e.id,
                tenant_id = %e.tenant_id,
                user_id = %e.user_id,
                pool = %e.pool,
                waited_ms,
                unseen_ms = absent,
                reason,
                request_id = e.request_id.as_deref().unwrap_or(""),
                "entry timed out"
            );
            events.push(AuditEvent {
                at: now,
                tenant_id: e.tenant_id.clone(),
                kind: "timeout".into(),
                subject: e.id.to_string(),
                detail: json!({ "pool": e.pool, "waited_ms": waited_ms, "reason": reason }),
            });
        }
        self.durable.record(&events).await?;
        Ok(changed.len())
    }

    /// Reserves, creates, persists and commits one batch of pairs.
    /// Answers (pairs matched, pairs put back).
    async fn commit_round(
        &self,
        pool: &PoolRef,
        pairs: &[(&Waiting, &Waiting)],
        now: Millis,
    ) -> StoreResult<(usize, usize)> {
        let reservations: Vec<Reservation> = pairs
            .iter()
            .map(|(a, b)| Reservation::new(a.id, b.id))
            .collect();
        let granted = self
            .store
            .reserve(pool, &reservations, now + self.limits.reservation_ms, now)
            .await?;
        let reserved: Vec<(Reservation, &Waiting, &Waiting)> = reservations
            .into_iter()
            .zip(pairs)
            .zip(granted)
            .filter(|(_, ok)| *ok)
            .map(|((r, (a, b)), _)| (r, *a, *b))
            .collect();
        if reserved.is_empty() {
            return Ok((0, 0));
        }
        let pending = match self.assign_colors(pool, reserved).await {
            Ok(p) => p,
            Err((e, reservations)) => {
                self.store
                    .release(pool, &reservations, now_millis())
                    .await?;
                return Err(e);
            }
        };
        let created = join_all(pending.iter().map(|p| self.create(pool, p))).await;
        let mut records = Vec::with_capacity(pending.len());
        let mut made = Vec::with_capacity(pending.len());
        let mut failed = Vec::new();
        for (p, game) in pending.iter().zip(created) {
            match game {
                Some(game_id) => {
                    records.push(self.record(pool, p, game_id, now));
                    made.push(p);
                }
                None => failed.push(p.reservation.clone()),
            }
        }
        if !failed.is_empty() {
            self.store.release(pool, &failed, now_millis()).await?;
        }
        // `made` and `records` line up: the pairs whose game exists.
        let audit: Vec<AuditEvent> = made
            .iter()
            .zip(&records)
            .map(|(p, r)| self.decision(p, r, now))
            .collect();
        if let Err(e) = self.durable.insert_matches(&records, &audit).await {
            tracing::error!(error = %e, pool = %pool, "persisting matches failed; putting the players back");
            let all: Vec<_> = pending.iter().map(|p| p.reservation.clone()).collect();
            self.store.release(pool, &all, now_millis()).await?;
            return Err(e);
        }
        let committed_at = now_millis();
        self.store
            .commit(&records, committed_at + self.limits.guard_ms, committed_at)
            .await?;
        for p in made {
            crate::observe::matched(
                pool,
                p.white.rating - p.black.rating,
                [now - p.white.enqueued_at, now - p.black.enqueued_at],
            );
        }
        Ok((records.len(), failed.len()))
    }

    /// White goes to the player who has had black more often; on a tie, to
    /// a coin toss. Over time everyone gets about half whites.
    #[allow(clippy::type_complexity)]
    async fn assign_colors<'a>(
        &self,
        pool: &PoolRef,
        reserved: Vec<(Reservation, &'a Waiting, &'a Waiting)>,
    ) -> Result<Vec<Pending<'a>>, (crate::store::StoreError, Vec<Reservation>)> {
        let users: Vec<UserId> = reserved
            .iter()
            .flat_map(|(_, a, b)| [a.user_id.clone(), b.user_id.clone()])
            .collect();
        let balances: HashMap<UserId, i32> =
            match self.durable.color_balances(&pool.tenant_id, &users).await {
                Ok(b) => b,
                Err(e) => return Err((e, reserved.into_iter().map(|(r, _, _)| r).collect())),
            };
        let mut rng = rand::rng();
        Ok(reserved
            .into_iter()
            .map(|(reservation, a, b)| {
                let ba = balances.get(&a.user_id).copied().unwrap_or(0);
                let bb = balances.get(&b.user_id).copied().unwrap_or(0);
                let a_white = ba < bb || (ba == bb && rng.random_bool(0.5));
                let (white, black) = if a_white { (a, b) } else { (b, a) };
                Pending {
                    reservation,
                    white,
                    black,
                }
            })
            .collect())
    }

    /// Creates the game of a pending pair; `None` when it failed (logged).
    async fn create(&self, pool: &PoolRef, p: &Pending<'_>) -> Option<GameId> {
        let request_id = [p.white, p.black]
            .into_iter()
            .max_by_key(|w| w.enqueued_at)
            .and_then(|w| w.request_id.clone());
        let game = NewGame {
            match_id: p.reservation.match_id,
            tenant_id: pool.tenant_id.clone(),
            white_user_id: p.white.user_id.clone(),
            black_user_id: p.black.user_id.clone(),
            time_control: pool.key.time_control,
            mode: pool.key.mode,
            variant: pool.key.variant,
            region: pool.key.region,
            white_rating: p.white.rating,
            black_rating: p.black.rating,
            source: MatchSource::Queue,
            request_id,
        };
        let started = std::time::Instant::now();
        match self.games.create_game(&game).await {
            Ok(game_id) => {
                tracing::info!(
                    event = "game_created",
                    match_id = %game.match_id,
                    game_id = %game_id,
                    latency_ms = started.elapsed().as_secs_f64() * 1000.0,
                    request_id = game.request_id.as_deref().unwrap_or(""),
                    "game created"
                );
                Some(game_id)
            }
            Err(e) => {
                tracing::warn!(
                    event = "game_creation_failed",
                    match_id = %game.match_id,
                    error = %e,
                    request_id = game.request_id.as_deref().unwrap_or(""),
                    "game creation failed; both players go back to searching"
                );
                None
            }
        }
    }

    fn record(&self, pool: &PoolRef, p: &Pending<'_>, game_id: GameId, now: Millis) -> MatchRecord {
        let side = |w: &Waiting| MatchSide {
            user_id: w.user_id.clone(),
            username: w.username.clone(),
            rating: w.rating,
            entry_id: Some(w.id),
        };
        MatchRecord {
            match_id: p.reservation.match_id,
            tenant_id: pool.tenant_id.clone(),
            game_id,
            white: side(p.white),
            black: side(p.black),
            pool: pool.key,
            created_at: now,
            source: MatchSource::Queue,
            finished_at: None,
        }
    }

    /// The audit event (and log line) of a match decision.
    fn decision(&self, p: &Pending<'_>, r: &MatchRecord, now: Millis) -> AuditEvent {
        let view = |w: &Waiting| {
            json!({
                "entry": w.id,
                "user": w.user_id,
                "rating": w.rating,
                "window": self.policy.window(now - w.enqueued_at),
                "waited_ms": now - w.enqueued_at,
            })
        };
        let gap = (p.white.rating - p.black.rating).abs();
        tracing::info!(
            event = "match",
            match_id = %r.match_id,
            game_id = %r.game_id,
            pool = %r.pool,
            tenant_id = %r.tenant_id,
            white_entry = %p.white.id,
            black_entry = %p.black.id,
            white_rating = p.white.rating,
            black_rating = p.black.rating,
            gap,
            white_window = self.policy.window(now - p.white.enqueued_at),
            black_window = self.policy.window(now - p.black.enqueued_at),
            white_waited_ms = now - p.white.enqueued_at,
            black_waited_ms = now - p.black.enqueued_at,
            white_request_id = p.white.request_id.as_deref().unwrap_or(""),
            black_request_id = p.black.request_id.as_deref().unwrap_or(""),
            "players matched"
        );
        AuditEvent {
            at: now,
            tenant_id: r.tenant_id.clone(),
            kind: "match".into(),
            subject: r.match_id.to_string(),
            detail: json!({ "pool": r.pool, "game_id": r.game_id, "gap": gap, "white": view(p.white), "black": view(p.black) }),
        }
    }

    /// Finishes or rolls back reservations whose worker died: a match whose
    /// record was persisted is committed, any other is released.
    pub async fn recover_stale(&self) -> StoreResult<usize> {
        let now = now_millis();
        let stale = self.store.stale_reservations(now).await?;
        for s in &stale {
            match self.durable.match_by_id(&s.match_id).await? {
                Some(record) => {
                    tracing::warn!(match_id = %s.match_id, "finishing a match left half-committed");
                    self.store
                        .commit(&[record], now + self.limits.guard_ms, now)
                        .await?;
                }
                None => {
                    tracing::warn!(match_id = %s.match_id, "rolling back a stale reservation");
                    let a = s.entries[0];
                    let b = s.entries.get(1).cloned().unwrap_or(a);
                    self.store
                        .release(
                            &s.pool,
                            &[Reservation {
                                match_id: s.match_id,
                                a,
                                b,
                            }],
                            now,
                        )
                        .await?;
                }
            }
        }
        Ok(stale.len())
    }

    /// Forgets finished entries past their retention and lapsed guards.
    pub async fn purge(&self) -> StoreResult<usize> {
        let now = now_millis();
        self.store.purge(now - self.limits.retention_ms, now).await
    }

    /// Restores active-game guards of unfinished matches from the durable
    /// store (after a restart of an in-memory hot store).
    pub async fn restore_guards(&self) -> StoreResult<usize> {
        let now = now_millis();
        let records = self
            .durable
            .unfinished_matches(now - self.limits.guard_ms)
            .await?;
        let guards: Vec<_> = records
            .iter()
            .flat_map(|r| {
                [&r.white, &r.black].map(|me| {
                    let until = r.created_at + self.limits.guard_ms;
                    let guard = r
                        .guard_for(&me.user_id, until)
                        .expect("a side of its own record");
                    (r.tenant_id.clone(), me.user_id.clone(), guard)
                })
            })
            .collect();
        self.store.restore_active_games(&guards).await?;
        Ok(records.len())
    }
}
