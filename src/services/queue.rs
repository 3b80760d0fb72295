//! The public queue operations (SPEC §3.1): join, cancel, status, active,
//! and the game-finished report that releases players.

use std::sync::Arc;

use serde_json::Value;

use super::ServiceError;
use super::backlog::Backlog;
use super::breaker::CircuitBreaker;
use super::guards::Guards;
use super::ratings::RatingService;
use super::signal::{DueAnnouncer, PoolSignal};
use crate::auth::Identity;
use crate::domain::{
    ActiveGame, Clock, EndReason, EntryStatus, GameId, Millis, Opponent, ParseError, PoolKey,
    PoolRef, QueueEntry, QueueEntryId, Rating, RatingRange, TenantConfig, TenantId, TimeControl,
};
use crate::store::{
    AuditEvent, CancelOutcome, DurableStore, EntryStore, IdempotencyScope, JoinOutcome,
    PoolStatsStore, StoreError, StoredAnswer,
};

/// How long a pool's wait estimate is reused on one node.
const ESTIMATE_REFRESH_MS: Millis = 1_000;

/// What a client reads for an entry that is not there (or not theirs).
pub const NO_ENTRY: &str = "no such queue entry";

/// Deepest nesting accepted in `client_metadata`.
const METADATA_MAX_DEPTH: usize = 4;

/// Limits and timings the queue service applies.
#[derive(Debug, Clone)]
pub struct QueueLimits {
    pub guard_ms: Millis,
    pub idempotency_ms: Millis,
    pub metadata_max_bytes: usize,
    /// How long a player who did not show up for a game may not join.
    pub no_show_cooldown_ms: Millis,
}

/// What an aborted game did.
#[derive(Debug, Clone, PartialEq)]
pub struct Aborted {
    pub game_id: GameId,
    pub no_show_user_id: crate::domain::UserId,
    /// The player who showed up, and their entry, searching again (none
    /// when they came from a challenge, or were already elsewhere).
    pub requeued: Option<(crate::domain::UserId, QueueEntryId)>,
    /// Until when the one who did not show up may not join.
    pub cooldown_until: Millis,
}

/// A join, parsed.
#[derive(Debug, Clone)]
pub struct Join {
    pub pool: PoolKey,
    pub client_metadata: Option<Value>,
    pub request_id: Option<String>,
    /// The player's own rating range, if they give one.
    pub rating_range: Option<RatingRange>,
    /// Other time controls (of the same speed) the entry waits in too.
    pub also: Vec<TimeControl>,
}

/// A pool's wait figures, as one estimate reads them: the recent real
/// waits with their players' ratings, and the rating gaps of its latest
/// matches (sorted); before any match, the time its window takes to open.
#[derive(Debug, Clone)]
pub struct PoolEstimate {
    fallback: u64,
    waits: Arc<[(Millis, Option<Rating>)]>,
    gaps: Arc<[i32]>,
}

/// What a player can expect to wait, in whole seconds: the median, and the
/// wait four in five players like them did not exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub p50: u64,
    pub p80: u64,
}

/// The smallest share of partners a range is taken to leave: a range
/// that took none of the recent ones still meets someone in time.
const LEAST_SHARE: f64 = 0.05;

/// Players "like" one another for a wait estimate: rated within this of
/// each other...
pub const RATING_BAND: Rating = 150;

/// ...when the band has at least this many recent waits; otherwise the
/// whole pool's recent waits count.
pub const MIN_BAND_SAMPLES: usize = 16;

impl PoolEstimate {
    /// Figures as a pool's stats give them: the wait before any match, the
    /// recent waits with their players' ratings, the recent gaps (any order).
    pub fn new(fallback: u64, waits: Vec<(Millis, Option<Rating>)>, mut gaps: Vec<i32>) -> Self {
        gaps.sort_unstable();
        Self {
            fallback,
            waits: waits.into(),
            gaps: gaps.into(),
        }
    }

    /// The wait of a player rated `rating` whose own range is `range`:
    /// the median and p80 of the recent waits of players within
    /// [`RATING_BAND`] of them (of the whole pool when the band has fewer
    /// than [`MIN_BAND_SAMPLES`]), divided by the share of the pool's
    /// recent pairings' gaps the range would have allowed (each gap taken
    /// as a partner above or below alike, at least [`LEAST_SHARE`]): waits
    /// grow as the partners one accepts thin out.
    pub fn for_player(&self, rating: Rating, range: Option<RatingRange>) -> Wait {
        let band: Vec<Millis> = self
            .waits
            .iter()
            .filter(|(_, r)| r.is_none_or(|r| (r - rating).abs() <= RATING_BAND))
            .map(|&(w, _)| w)
            .collect();
        let mut sample = if band.len() >= MIN_BAND_SAMPLES {
            band
        } else {
            self.waits.iter().map(|&(w, _)| w).collect()
        };
        let (Some(p50), Some(p80)) = (
            super::summary::quantile(&mut sample, 0.5),
            super::summary::quantile(&mut sample, 0.8),
        ) else {
            return Wait {
                p50: self.fallback,
                p80: self.fallback,
            };
        };
        let share = self.share(range);
        let scaled = |ms: Millis| whole_seconds((ms as f64 / share).ceil() as Millis);
        Wait {
            p50: scaled(p50),
            p80: scaled(p80),
        }
    }

    /// The share of recent pairings `range` would have allowed (1 without
    /// a range, or before any match).
    fn share(&self, range: Option<RatingRange>) -> f64 {
        let Some(range) = range.filter(|_| !self.gaps.is_empty()) else {
            return 1.0;
        };
        let within = |reach: i32| self.gaps.partition_point(|&g| g <= reach) as f64;
        let share =
            (within(range.max_delta) + within(-range.min_delta)) / (2.0 * self.gaps.len() as f64);
        share.max(LEAST_SHARE)
    }
}

/// Each pool's wait figures as this node last read them (at most one read
/// per pool per `ESTIMATE_REFRESH_MS`), shared by the joins, which tell
/// players their wait, and the matching worker, which checks what they
/// were told against what they waited
/// (`matchmaking_wait_estimate_checks_total`).
#[derive(Default)]
pub struct EstimateCache {
    /// A std lock: held to look or swap, never across an await.
    pools: std::sync::Mutex<std::collections::HashMap<PoolRef, (Millis, PoolEstimate)>>,
}

impl EstimateCache {
    fn fresh(&self, pool: &PoolRef, now: Millis) -> Option<PoolEstimate> {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools
            .get(pool)
            .filter(|(at, _)| now - at < ESTIMATE_REFRESH_MS)
            .map(|(_, known)| known.clone())
    }

    fn put(&self, pool: &PoolRef, now: Millis, known: PoolEstimate) {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if pools.len() > 100_000 {
            pools.clear();
        }
        pools.insert(pool.clone(), (now, known));
    }

    /// The figures last read for `pool`, however old.
    pub fn last(&self, pool: &PoolRef) -> Option<PoolEstimate> {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.get(pool).map(|(_, known)| known.clone())
    }
}

/// An aborted game as its audit event keeps it (a report again runs the
/// steps left with the same cooldown).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct AbortedDetail {
    game_id: GameId,
    no_show_user_id: crate::domain::UserId,
    cooldown_until: Millis,
}

/// The entry a join answers with.
#[derive(Debug, Clone)]
pub struct Joined {
    pub entry: QueueEntry,
    pub estimated_wait_seconds: u64,
    /// Four in five players like this one waited at most this long.
    pub estimated_wait_p80_seconds: u64,
}

/// What a status read shows.
#[derive(Debug, Clone)]
pub struct EntryView {
    pub id: QueueEntryId,
    pub status: EntryStatus,
    pub pool: PoolKey,
    pub game_id: Option<GameId>,
    pub opponent: Option<Opponent>,
    pub estimated_wait_seconds: Option<u64>,
    pub estimated_wait_p80_seconds: Option<u64>,
    /// Why it ended without a match.
    pub reason: Option<EndReason>,
    /// When it joined; `None` when read from a match record.
    pub enqueued_at: Option<Millis>,
    /// When it last changed status; for `MATCHED`, when the match was
    /// made (its record's `created_at`: the same read from the record).
    pub updated_at: Millis,
    /// The player's own rating range; `None` when read from a match record.
    pub rating_range: Option<RatingRange>,
}

/// What `/active` shows.
#[derive(Debug, Clone)]
pub struct Active {
    pub entry: Option<QueueEntry>,
    pub game: Option<ActiveGame>,
}

/// What the queue service works with.
pub struct QueueService {
    /// Players' entries in the queue store.
    pub store: Arc<dyn EntryStore>,
    /// Pool figures (the wait estimate).
    pub stats: Arc<dyn PoolStatsStore>,
    pub durable: Arc<dyn DurableStore>,
    pub ratings: RatingService,
    /// What each tenant offers and each pool's matching policy (the wait
    /// estimate before any match), as set at run time.
    pub live: Arc<super::live::LiveConfig>,
    /// Wakes the worker when a join makes a pool due.
    pub signal: Arc<PoolSignal>,
    /// Joins are refused while it is open.
    pub breaker: Arc<CircuitBreaker>,
    /// Wakes the workers of other processes, when there are any.
    pub announcer: Option<Arc<dyn DueAnnouncer>>,
    /// Rebuilds the queue store's guards when it lost them.
    pub guards: Arc<Guards>,
    /// Pools matching is behind on take no new joins.
    pub backlog: Arc<Backlog>,
    /// Each pool's last estimate and when it was made. A std lock: held for
    /// one map operation, never across an await.
    pub estimates: Arc<EstimateCache>,
    pub limits: QueueLimits,
    pub clock: Arc<dyn Clock>,
}

impl QueueService {
    /// What `tenant` offers its players now.
    pub fn tenant_config(&self, tenant: &TenantId) -> Arc<TenantConfig> {
        self.live.tenant_config(tenant)
    }

    /// Checks `client_metadata`: an object, small and shallow.
    pub fn check_metadata(&self, value: &Value) -> Result<String, ParseError> {
        if !value.is_object() {
            return Err(ParseError::new("client_metadata", "must be a JSON object"));
        }
        if depth(value) > METADATA_MAX_DEPTH {
            return Err(ParseError::new(
                "client_metadata",
                format!("must not nest deeper than {METADATA_MAX_DEPTH} levels"),
            ));
        }
        let text = value.to_string();
        if text.len() > self.limits.metadata_max_bytes {
            return Err(ParseError::new(
                "client_metadata",
                format!(
                    "must be at most {} bytes of JSON",
                    self.limits.metadata_max_bytes
                ),
            ));
        }
        Ok(text)
    }

    /// Refuses at once while the durable store cannot write: no match of
    /// a new entry could be recorded.
    fn durable_writable(&self) -> Result<(), ServiceError> {
        match self.durable.write_failure() {
            Some(f) => Err(StoreError::Unavailable(format!(
                "the durable store cannot write: {}",
                f.reason
            ))
            .into()),
            None => Ok(()),
        }
    }

    /// Puts the caller in the pool of `join` (SPEC §3.1 POST /queue).
    pub async fn join(&self, who: &Identity, join: Join) -> Result<Joined, ServiceError> {
        if let Some(retry_after_seconds) = self.breaker.retry_after(self.clock.now()) {
            return Err(ServiceError::Paused {
                retry_after_seconds,
            });
        }
        self.durable_writable()?;
        if let Some(retry_after_seconds) = self.backlog.retry_after(&PoolRef {
            tenant_id: who.tenant_id.clone(),
            key: join.pool,
        }) {
            return Err(ServiceError::Busy {
                retry_after_seconds,
            });
        }
        let metadata = join
            .client_metadata
            .as_ref()
            .map(|m| self.check_metadata(m))
            .transpose()?;
        let rated = self
            .ratings
            .snapshot(&who.tenant_id, &who.user_id, join.pool.rating_pool())
            .await?;
        let now = self.clock.now();
        let entry = QueueEntry {
            username: who.username.clone(),
            request_id: join.request_id,
            client_metadata: metadata,
            rating_range: join.rating_range,
            rating_deviation: rated.deviation,
            also: {
                let mut also = join.also;
                also.sort();
                also.dedup();
                also.retain(|&tc| tc != join.pool.time_control);
                also
            },
            ..QueueEntry::searching(
                who.tenant_id.clone(),
                who.user_id.clone(),
                join.pool,
                rated.rating,
                now,
            )
        };
        let joined = self
            .guards
            .admitting(|| self.store.join(entry.clone(), now))
            .await?;
        let entry = match joined {
            JoinOutcome::Created(entry) => {
                crate::observe::joined(&entry.pool_ref());
                tracing::info!(
                    event = "enqueue",
                    queue_entry_id = %entry.id,
                    tenant_id = %entry.tenant_id,
                    user_id = %entry.user_id,
                    pool = %entry.pool,
                    rating = entry.rating,
                    "player joined the queue"
                );
                for pool in entry.pools() {
                    self.signal.mark_due(pool.clone());
                    if let Some(announcer) = &self.announcer {
                        announcer.announce(&pool).await;
                    }
                }
                entry
            }
            JoinOutcome::Existing(entry) => entry,
            JoinOutcome::AlreadyInQueue(_) => return Err(ServiceError::AlreadyInQueue),
            JoinOutcome::ActiveGame(g) if g.cooldown => {
                return Err(ServiceError::Cooldown {
                    retry_after_seconds: whole_seconds(g.until - now),
                });
            }
            JoinOutcome::ActiveGame(_) => return Err(ServiceError::ActiveGameExists),
        };
        // The entry is in: figures that cannot be read now must not turn
        // the join into a 503, which a client retries as if nothing had
        // happened (and a retry after a match answers ACTIVE_GAME_EXISTS).
        let estimate = match self.estimate(&entry).await {
            Ok(wait) => wait,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    pool = %entry.pool,
                    "the wait estimate cannot be read; the join answers the last one known"
                );
                self.last_estimate(&entry)
            }
        };
        Ok(Joined {
            entry,
            estimated_wait_seconds: estimate.p50,
            estimated_wait_p80_seconds: estimate.p80,
        })
    }

    /// What the player of `entry` can expect to wait
    /// ([`PoolEstimate::for_player`]), at most the pool's queue time. The
    /// pool's figures are read at most once per `ESTIMATE_REFRESH_MS` on
    /// this node: one store read per second, not one per join.
    pub async fn estimate(&self, entry: &QueueEntry) -> Result<Wait, ServiceError> {
        let pool = entry.pool_ref();
        let now = self.clock.now();
        let known = match self.estimates.fresh(&pool, now) {
            Some(known) => known,
            None => {
                let fresh = self.fresh_estimate(&pool).await?;
                self.estimates.put(&pool, now, fresh.clone());
                fresh
            }
        };
        Ok(self.for_entry(&known, entry))
    }

    /// The wait of `known` for `entry`'s player, at most the pool's queue
    /// time.
    fn for_entry(&self, known: &PoolEstimate, entry: &QueueEntry) -> Wait {
        let cap = whole_seconds(self.live.policy(&entry.pool_ref()).max_queue_time_ms);
        let wait = known.for_player(entry.rating, entry.rating_range);
        Wait {
            p50: wait.p50.min(cap),
            p80: wait.p80.min(cap),
        }
    }

    async fn fresh_estimate(&self, pool: &PoolRef) -> Result<PoolEstimate, ServiceError> {
        let stats = self.stats.pool_stats(pool, self.clock.now()).await?;
        let ratings = stats
            .recent_wait_ratings
            .into_iter()
            .chain(std::iter::repeat(None));
        Ok(PoolEstimate::new(
            self.window_estimate(pool),
            stats.recent_waits.into_iter().zip(ratings).collect(),
            stats.recent_gaps,
        ))
    }

    /// The estimate this node last worked out for `entry`'s pool, however
    /// old; without one, [`Self::window_estimate`]. Reads no store.
    fn last_estimate(&self, entry: &QueueEntry) -> Wait {
        let pool = entry.pool_ref();
        let known = self.estimates.last(&pool).unwrap_or_else(|| PoolEstimate {
            fallback: self.window_estimate(&pool),
            waits: Arc::from([]),
            gaps: Arc::from([]),
        });
        self.for_entry(&known, entry)
    }

    /// Before any match: the time the pool's window takes to open fully.
    fn window_estimate(&self, pool: &PoolRef) -> u64 {
        let policy = self.live.policy(pool);
        whole_seconds(
            policy
                .wait_until_window(policy.max_gap)
                .unwrap_or(policy.max_queue_time_ms),
        )
    }

    /// Cancels the caller's own searching entry (SPEC §3.1 DELETE).
    pub async fn cancel(
        &self,
        who: &Identity,
        id: &QueueEntryId,
    ) -> Result<QueueEntry, ServiceError> {
        match self
            .store
            .cancel(&who.tenant_id, &who.user_id, id, self.clock.now())
            .await?
        {
            CancelOutcome::Cancelled(entry) => {
                crate::observe::cancelled(&entry.pool_ref(), entry.updated_at - entry.enqueued_at);
                tracing::info!(
                    event = "cancel",
                    queue_entry_id = %entry.id,
                    tenant_id = %entry.tenant_id,
                    user_id = %entry.user_id,
                    pool = %entry.pool,
                    waited_ms = entry.updated_at - entry.enqueued_at,
                    "player left the queue"
                );
                Ok(*entry)
            }
            CancelOutcome::NotFound => Err(ServiceError::NotFound(NO_ENTRY)),
            CancelOutcome::CannotCancel => Err(ServiceError::CannotCancel),
        }
    }

    /// The caller's entry (SPEC §3.1 GET /queue/{id}); a read is also the
    /// client's heartbeat. A matched entry the hot store no longer holds is
    /// read from the durable match record.
    pub async fn status(
        &self,
        who: &Identity,
        id: &QueueEntryId,
    ) -> Result<EntryView, ServiceError> {
        if let Some(entry) = self
            .store
            .status(&who.tenant_id, &who.user_id, id, self.clock.now())
            .await?
        {
            let estimate = if entry.status.is_waiting() {
                Some(self.estimate(&entry).await?)
            } else {
                None
            };
            return Ok(EntryView {
                id: entry.id,
                status: entry.status,
                pool: entry.pool,
                game_id: entry.game_id,
                opponent: entry.opponent,
                estimated_wait_seconds: estimate.map(|e| e.p50),
                estimated_wait_p80_seconds: estimate.map(|e| e.p80),
                reason: entry.reason,
                enqueued_at: Some(entry.enqueued_at),
                updated_at: entry.updated_at,
                rating_range: entry.rating_range,
            });
        }
        let record = self
            .durable
            .match_by_entry(&who.tenant_id, id)
            .await?
            .ok_or(ServiceError::NotFound(NO_ENTRY))?;
        let (mine, theirs) = record
            .sides_of(&who.user_id)
            .ok_or(ServiceError::NotFound(NO_ENTRY))?;
        if mine.entry_id.as_ref() != Some(id) {
            return Err(ServiceError::NotFound(NO_ENTRY));
        }
        Ok(EntryView {
            id: *id,
            status: EntryStatus::Matched,
            pool: record.pool,
            game_id: Some(record.game_id.clone()),
            opponent: Some(theirs.as_opponent_of(mine, record.pool)),
            estimated_wait_seconds: None,
            estimated_wait_p80_seconds: None,
            reason: None,
            enqueued_at: None,
            updated_at: record.created_at,
            rating_range: None,
        })
    }

    /// The caller's waiting entry and unfinished game (SPEC §3.1 /active).
    pub async fn active(&self, who: &Identity) -> Result<Active, ServiceError> {
        let now = self.clock.now();
        let entry = self.store.user_entry(&who.tenant_id, &who.user_id).await?;
        // A guard without a game (one rebuilt while the game is being
        // created) holds the player, but there is no game to show yet.
        let mut game = self
            .store
            .active_game(&who.tenant_id, &who.user_id, now)
            .await?
            .filter(|g| g.game_id.is_some());
        if game.is_none() && entry.is_none() {
            let since = now - self.limits.guard_ms;
            game = self
                .durable
                .active_match(&who.tenant_id, &who.user_id, since)
                .await?
                .and_then(|record| {
                    record.guard_for(&who.user_id, record.created_at + self.limits.guard_ms)
                });
        }
        Ok(Active { entry, game })
    }

    /// live-game-api reports a game over: both players may queue again.
    /// Idempotent; `NotFound` for a game this tenant never had.
    pub async fn finish_game(
        &self,
        tenant: &crate::domain::TenantId,
        game: &GameId,
    ) -> Result<Vec<crate::domain::UserId>, ServiceError> {
        self.durable_writable()?;
        let now = self.clock.now();
        let record = self
            .durable
            .finish_match(tenant, game, now)
            .await?
            .ok_or(ServiceError::NotFound("no such game"))?;
        let released = self.guards.finish_game(tenant, game).await?;
        if released {
            self.durable
                .record(&[AuditEvent {
                    at: now,
                    tenant_id: tenant.clone(),
                    kind: "game_finished".into(),
                    subject: record.match_id.to_string(),
                    detail: serde_json::json!({ "game_id": game }),
                }])
                .await?;
            tracing::info!(event = "game_finished", game_id = %game, match_id = %record.match_id, "game finished; players released");
        }
        Ok(vec![record.white.user_id, record.black.user_id])
    }

    /// A game that never started because `no_show` did not show up, as the
    /// game service or an admin reports it: the match is finished (both
    /// claims lifted), the one who showed up is put back searching with
    /// their entry's original `enqueued_at` (a player who came from a
    /// challenge, or who already waits again, is not), and `no_show` may
    /// not join until the cooldown ends (409 `COOLDOWN`). A player not of
    /// the game is 400; a game reported finished is 409.
    ///
    /// The abort is written to the audit log first, then each step runs,
    /// each one idempotent: a report again (a retry, or after a crash part
    /// way) runs the steps left and answers the same.
    pub async fn abort_game(
        &self,
        tenant: &crate::domain::TenantId,
        game: &GameId,
        no_show: &crate::domain::UserId,
    ) -> Result<Aborted, ServiceError> {
        self.durable_writable()?;
        let now = self.clock.now();
        let record = self
            .durable
            .match_by_game(tenant, game)
            .await?
            .ok_or(ServiceError::NotFound("no such game"))?;
        if record.sides_of(no_show).is_none() {
            return Err(ParseError::new("no_show_user_id", "is not a player of this game").into());
        }
        let subject = record.match_id.to_string();
        let before = self
            .durable
            .events_about(&subject, 20)
            .await?
            .into_iter()
            .find(|e| e.kind == "game_aborted")
            .and_then(|e| serde_json::from_value::<AbortedDetail>(e.detail).ok());
        let cooldown_until = match before {
            Some(d) if &d.no_show_user_id == no_show => d.cooldown_until,
            Some(_) => {
                return Err(ServiceError::InvalidState(
                    "the game was aborted for the other player already",
                ));
            }
            None if record.finished_at.is_some() => {
                return Err(ServiceError::InvalidState(
                    "the game was reported finished already",
                ));
            }
            None => {
                let until = now + self.limits.no_show_cooldown_ms;
                self.durable
                    .record(&[AuditEvent {
                        at: now,
                        tenant_id: tenant.clone(),
                        kind: "game_aborted".into(),
                        subject,
                        detail: serde_json::to_value(AbortedDetail {
                            game_id: game.clone(),
                            no_show_user_id: no_show.clone(),
                            cooldown_until: until,
                        })
                        .unwrap_or_default(),
                    }])
                    .await?;
                tracing::info!(
                    event = "game_aborted",
                    game_id = %game,
                    match_id = %record.match_id,
                    no_show_user_id = %no_show,
                    "a game aborted for a player who did not show up"
                );
                until
            }
        };
        // The cooldown is kept with the match first (a queue store that
        // loses its data gets it back with the guards); then the claims go,
        // so the one who showed up can be matched again (a crash after
        // this leaves them free to join).
        self.durable
            .record_no_show(tenant, game, no_show, cooldown_until)
            .await?;
        self.durable.finish_match(tenant, game, now).await?;
        self.guards.finish_game(tenant, game).await?;
        if cooldown_until > now
            && let Some(cooldown) = record.cooldown_for(no_show, cooldown_until)
        {
            self.guards.cool_down(tenant, no_show, cooldown).await?;
        }
        let requeued = match record.sides_of(no_show).map(|(_, present)| present) {
            Some(present) => self.requeue(tenant, &record, present, now).await?,
            None => None,
        };
        Ok(Aborted {
            game_id: game.clone(),
            no_show_user_id: no_show.clone(),
            requeued,
            cooldown_until,
        })
    }

    /// Puts the entry of `present` (a player of `record`'s aborted game)
    /// back to searching; answers it if it searches now (put back now, or
    /// by an earlier report of the abort).
    async fn requeue(
        &self,
        tenant: &crate::domain::TenantId,
        record: &crate::domain::MatchRecord,
        present: &crate::domain::MatchSide,
        now: Millis,
    ) -> Result<Option<(crate::domain::UserId, QueueEntryId)>, ServiceError> {
        let Some(entry) = present.entry_id else {
            return Ok(None);
        };
        let pool = PoolRef {
            tenant_id: tenant.clone(),
            key: present.pool_in(record.pool),
        };
        let back = self
            .guards
            .admitting(|| self.store.requeue(&pool, &entry, &record.game_id, now))
            .await?;
        if back.is_some() {
            self.signal.mark_due(pool.clone());
            if let Some(announcer) = &self.announcer {
                announcer.announce(&pool).await;
            }
        }
        let searching = match back {
            Some(e) => Some(e),
            None => self
                .store
                .status(tenant, &present.user_id, &entry, now)
                .await?
                .filter(|e| e.status.is_waiting()),
        };
        Ok(searching.map(|e| (e.user_id, e.id)))
    }

    /// Takes `scope`'s key for a request whose body digests to
    /// `fingerprint`: the first answer to repeat, or the key marked in
    /// flight for this request to run and settle. 422
    /// `IDEMPOTENCY_KEY_REUSED` when the key came first with another body,
    /// 409 `IDEMPOTENCY_IN_PROGRESS` while its first request still runs.
    pub async fn take_key(
        &self,
        scope: IdempotencyScope,
        fingerprint: &str,
    ) -> Result<KeyTaken, ServiceError> {
        let claim = ulid::Ulid::new().to_string();
        let now = self.clock.now();
        let kept = self
            .durable
            .save_idempotent_answer(
                &scope,
                StoredAnswer::in_flight(fingerprint, &claim),
                now + IN_FLIGHT_LEASE_MS,
                now,
            )
            .await?;
        // Answers kept before keys were bound have no fingerprint.
        if !kept.fingerprint.is_empty() && kept.fingerprint != fingerprint {
            return Err(ServiceError::IdempotencyKeyReused);
        }
        if !kept.is_in_flight() {
            return Ok(KeyTaken::Answered(kept));
        }
        if kept.body != claim {
            return Err(ServiceError::IdempotencyInProgress);
        }
        Ok(KeyTaken::Run(KeyClaim {
            durable: Arc::clone(&self.durable),
            scope,
            claim,
            expires_at: now + self.limits.idempotency_ms,
            settled: false,
        }))
    }
}

/// How long a key stays marked in flight when its request never settles
/// it (its process died): longer than any request may run.
pub const IN_FLIGHT_LEASE_MS: Millis = 60_000;

/// What an `Idempotency-Key` holds for a request.
pub enum KeyTaken {
    /// The first request's answer, to repeat.
    Answered(StoredAnswer),
    /// The key is this request's: run it, then settle the claim.
    Run(KeyClaim),
}

/// A key marked in flight for one request. Dropped unsettled (the request
/// failed or was cancelled), it frees the key for a retry.
pub struct KeyClaim {
    durable: Arc<dyn DurableStore>,
    scope: IdempotencyScope,
    claim: String,
    expires_at: Millis,
    settled: bool,
}

impl KeyClaim {
    /// Keeps `status` and `body` as the answer every retry with this key
    /// gets.
    pub async fn keep(mut self, status: u16, body: String) -> Result<(), ServiceError> {
        self.settled = true;
        let answer = StoredAnswer {
            status,
            body,
            fingerprint: String::new(), // the key's stays as it was taken
        };
        self.durable
            .settle_idempotent_answer(&self.scope, &self.claim, Some(answer), self.expires_at)
            .await?;
        Ok(())
    }
}

impl Drop for KeyClaim {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let durable = Arc::clone(&self.durable);
        let scope = self.scope.clone();
        let claim = std::mem::take(&mut self.claim);
        let expires_at = self.expires_at;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // the lease frees the key
        };
        runtime.spawn(async move {
            if let Err(e) = durable
                .settle_idempotent_answer(&scope, &claim, None, expires_at)
                .await
            {
                tracing::warn!(error = %e, "an idempotency key stays in flight until its lease ends");
            }
        });
    }
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Milliseconds as whole seconds, rounded up.
fn whole_seconds(ms: Millis) -> u64 {
    ((ms.max(0) + 999) / 1000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(waits: &[(Millis, Option<Rating>)], gaps: &[i32]) -> PoolEstimate {
        PoolEstimate {
            fallback: 42,
            waits: waits.into(),
            gaps: gaps.into(),
        }
    }

    #[test]
    fn a_narrower_range_waits_longer_by_the_partners_it_leaves_out() {
        let gaps: Vec<i32> = (1..=10).map(|k| k * 10).collect();
        let ten_seconds = known(&[(10_000, Some(1500))], &gaps);
        let range = |lo, hi| Some(RatingRange::new(lo, hi).unwrap());
        let p50 = |r| ten_seconds.for_player(1500, r).p50;
        assert_eq!(p50(None), 10);
        // Every recent gap within reach either way: the pool's figure.
        assert_eq!(p50(range(-100, 100)), 10);
        // Half the gaps either way: twice the wait.
        assert_eq!(p50(range(-50, 50)), 20);
        // All below, half above: 3/4 of the partners.
        assert_eq!(p50(range(-100, 50)), 14);
        // None of the recent partners: the least share, 20 times.
        assert_eq!(p50(range(0, 0)), 200);
        // Before any match there is nothing to go by but the window.
        let fresh = known(&[], &[]);
        assert_eq!(
            fresh.for_player(1500, range(-10, 10)),
            Wait { p50: 42, p80: 42 }
        );
    }

    #[test]
    fn a_players_band_is_read_when_it_has_enough_waits() {
        // 20 strong players who waited 60 s, 20 average ones 1 to 20 s.
        let mut waits: Vec<(Millis, Option<Rating>)> =
            (0..20).map(|_| (60_000, Some(2400))).collect();
        waits.extend((1..=20).map(|k| (k * 1_000, Some(1500))));
        let pool = known(&waits, &[]);
        assert_eq!(pool.for_player(2350, None), Wait { p50: 60, p80: 60 });
        // Ranks floor(q·n) of the 20: the 11th and the 17th.
        assert_eq!(pool.for_player(1500, None), Wait { p50: 11, p80: 17 });
        // A rating nobody near: the whole pool (half of it waited 60 s).
        assert_eq!(pool.for_player(1900, None), Wait { p50: 60, p80: 60 });
        // Too few in the band: the whole pool too.
        let few = known(&waits[..30], &[]);
        assert_eq!(few.for_player(1500, None), few.for_player(1900, None));
    }
}
