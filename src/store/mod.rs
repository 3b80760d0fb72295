//! Storage behind traits (one trait per store, one contract suite per trait).
//!
//! - [`QueueStore`]: hot queue state — entries, per-pool waiting sets, the
//!   per-user index, the short "being matched" reservation, active-game
//!   guards. In memory ([`memory`]) or, in production, Redis, where each
//!   method is one atomic script. It is split along its callers' lines:
//!   [`EntryStore`] (a player's entry: the queue routes), [`PairingStore`]
//!   (the matching worker's reserve/commit/release protocol),
//!   [`GuardStore`] (active-game guards and holds), [`PoolStatsStore`]
//!   (figures) and [`LeaseStore`] (which worker has which pool); each
//!   service is given only the parts it uses.
//! - [`DurableStore`]: durable records — matches and the claims that keep a
//!   player in one unfinished match at most, match intents, ratings,
//!   challenges, idempotent answers, audit of decisions. SQLite ([`sqlite`])
//!   or, in production, PostgreSQL.
//!
//! Every method that changes more than one thing does it atomically: no
//! caller on any node can observe or create a half state.
//!
//! ## Who is the authority
//!
//! The durable store is the authority for "this player has an unfinished
//! game": a match is stored only together with a claim on both players,
//! refused when either already has an unfinished match ([`Claim::Busy`]).
//! The queue store's guards are a fast copy of those claims, rebuilt from
//! the durable store whenever the queue store may have lost them (a fresh
//! process, a Redis that restarted empty): until then it refuses to admit
//! anyone ([`StoreError::GuardsLost`]).

pub mod backend;
pub mod challenge_sql;
pub mod claims;
pub mod config_sql;
pub mod feed;
pub mod idempotency_sql;
pub mod instrumented;
pub mod memory;
pub mod postgres;
pub mod redis;
pub mod relations_sql;
pub mod rows;
pub mod sqlite;

use std::collections::HashMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::{
    ActiveGame, Challenge, ChallengeId, ChallengeStatus, ColorHistory, DEFAULT_RATING, Deviation,
    EndReason, GameId, MAX_DEVIATION, MatchId, MatchIntent, MatchRecord, Millis, PoolKey,
    PoolPolicy, PoolRef, QueueEntry, QueueEntryId, RATING_RANGE, Rating, RatingPool, RatingRange,
    RatingSnapshot, Speed, TenantId, UNKNOWN_DEVIATION, UserId, Username, Variant,
};

/// A store could not do what was asked; callers answer 503.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The queue store may have lost its active-game guards (it is new, or
    /// its server lost its data): nobody may be admitted until they are
    /// rebuilt from the durable store and marked intact.
    #[error("the queue store's active-game guards must be rebuilt from the durable store")]
    GuardsLost,
}

/// What became of a match the durable store was asked to claim or record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Stored (now or before), both players claimed by this match.
    Stored,
    /// Refused: these players have another unfinished match.
    Busy(Vec<UserId>),
    /// Refused: recovery rolled this match back before anything of it was
    /// stored ([`MatchStore::withdraw_match`]); its players are back in the
    /// queue, so nothing of it may be written or created now.
    Withdrawn,
}

impl Claim {
    pub fn is_stored(&self) -> bool {
        matches!(self, Claim::Stored)
    }
}

/// Why a durable store cannot write, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFailure {
    pub reason: String,
    pub since: Millis,
}

/// Whether a durable store can write, as its last writes and probes said.
/// A store marks it failed when a write fails because of the store (a full
/// disk, a lock it cannot get, a server that does not answer), and healthy
/// again when a write or a probe succeeds [`WriteHealth::SETTLE`] after the
/// last failure; callers read it with no I/O, so joins can answer 503 at
/// once instead of queueing behind a store that cannot take their matches.
///
/// The settle time is what keeps a nearly full disk unavailable: a probe
/// (one small row) may well fit where a batch of matches does not, and
/// without it the store would flap between the two every probe.
#[derive(Debug, Default)]
pub struct WriteHealth {
    failing: std::sync::atomic::AtomicBool,
    /// The current run of failures, and when its last failure was.
    failure: std::sync::Mutex<Option<(WriteFailure, std::time::Instant)>>,
}

impl WriteHealth {
    /// How long writes must have gone without a failure before a success
    /// counts: a few probes.
    pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

    /// The current failure, if the store is failing.
    pub fn failure(&self) -> Option<WriteFailure> {
        if !self.failing.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(f, _)| f.clone())
    }

    pub fn is_failing(&self) -> bool {
        self.failing.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A write failed for `reason`; keeps the first time of a run of failures.
    pub fn failed(&self, reason: &str) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if failure.is_none() {
            tracing::error!(
                reason,
                "the durable store cannot write: joins and matching pause until it can"
            );
        }
        let since = failure
            .as_ref()
            .map(|(f, _)| f.since)
            .unwrap_or_else(crate::domain::now_millis);
        *failure = Some((
            WriteFailure {
                reason: reason.to_owned(),
                since,
            },
            std::time::Instant::now(),
        ));
        self.failing
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// A write succeeded: healthy again if the last failure is
    /// [`Self::SETTLE`] old.
    pub fn succeeded(&self) {
        if !self.is_failing() {
            return;
        }
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if failure
            .as_ref()
            .is_some_and(|(_, last)| last.elapsed() < Self::SETTLE)
        {
            return;
        }
        if let Some((f, _)) = failure.take() {
            tracing::info!(
                down_ms = crate::domain::now_millis() - f.since,
                "the durable store writes again"
            );
        }
        self.failing
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// Notes the outcome of a write: only failures of the store itself
    /// (`Unavailable`) count, not refusals or corrupt rows.
    pub fn note<T>(&self, result: &StoreResult<T>) {
        match result {
            Ok(_) => self.succeeded(),
            Err(StoreError::Unavailable(reason)) => self.failed(reason),
            Err(_) => {}
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What became of a join.
#[derive(Debug, Clone, PartialEq)]
pub enum JoinOutcome {
    /// The entry was added to its pool.
    Created(QueueEntry),
    /// The user is already searching with the same parameters: that entry.
    Existing(QueueEntry),
    /// The user is already searching with other parameters.
    AlreadyInQueue(QueueEntry),
    /// The user is in a game that has not finished.
    ActiveGame(ActiveGame),
}

/// What became of a cancel.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    Cancelled(Box<QueueEntry>),
    /// Unknown, not this user's, or no longer waiting (timed out, cancelled).
    NotFound,
    /// Matched, or being matched right now.
    CannotCancel,
}

/// A waiting entry as the matching worker needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    pub id: QueueEntryId,
    pub user_id: UserId,
    pub username: Option<Username>,
    pub rating: Rating,
    pub enqueued_at: Millis,
    pub last_seen_at: Millis,
    pub request_id: Option<String>,
    /// The player's own rating range, if they gave one.
    pub rating_range: Option<RatingRange>,
    /// The rating's deviation (350 when unknown).
    pub rating_deviation: Deviation,
    /// The pool the entry lives in, when it is not the one read: an entry
    /// waiting in several time controls at once, listed here too. A match
    /// reserves and commits it in its own pool.
    pub home: Option<PoolKey>,
}

impl Waiting {
    /// The entry's window at `now` under `policy` (its deviation's).
    pub fn window(&self, policy: &PoolPolicy, now: Millis) -> i32 {
        policy.window_for(now - self.enqueued_at, self.rating_deviation)
    }
}

/// Length of one outcome-counting bucket of [`PoolStats`].
pub const STATS_BUCKET_MS: Millis = 10_000;
/// How long outcome counts are kept: summaries look back at most this far.
pub const STATS_KEPT_MS: Millis = 600_000;
/// How many recent rating gaps a pool remembers.
pub const RECENT_GAPS: usize = 128;
/// How many recent waits (with their players' ratings) a pool remembers:
/// the wait estimates per rating band read them.
pub const RECENT_WAITS: usize = 128;

/// A pool's figures as the store keeps them, read without scanning its
/// entries: the count and oldest of its searching entries, bounded samples
/// of recent waits and rating gaps, and outcome counts in 10-second buckets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolStats {
    pub waiting: u64,
    pub oldest_enqueued_at: Option<Millis>,
    /// Waits (ms) of the latest matched players, newest first.
    pub recent_waits: Vec<Millis>,
    /// The rating of each of `recent_waits`' players, in the same order
    /// (`None`: kept before ratings were; the wait counts for every band).
    pub recent_wait_ratings: Vec<Option<Rating>>,
    /// Rating gaps of the latest matches, newest first.
    pub recent_gaps: Vec<i32>,
    /// Matches committed since the asked time (to the bucket).
    pub matches: u64,
    /// Entries timed out since the asked time (to the bucket).
    pub timeouts: u64,
}

/// The bucket `at` falls in.
pub fn stats_bucket(at: Millis) -> Millis {
    at.div_euclid(STATS_BUCKET_MS)
}

/// Two entries held for one match while its game is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub match_id: MatchId,
    pub a: QueueEntryId,
    pub b: QueueEntryId,
}

impl Reservation {
    /// A reservation of `a` and `b` for a new match.
    pub fn new(a: QueueEntryId, b: QueueEntryId) -> Self {
        Self {
            match_id: MatchId::generate(),
            a,
            b,
        }
    }
}

/// A reservation whose deadline passed (its worker died or stalled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleReservation {
    pub pool: PoolRef,
    pub reservation: Reservation,
}

impl StaleReservation {
    /// Pairs reserved entries found past their deadline by pool and match,
    /// in any order. A match met with one entry only in a pool (its
    /// partner is gone, or waited in another region's pool: a region
    /// fallback match reserves one entry in each) holds that entry on both
    /// sides: releasing it releases the one there is.
    pub fn pair_up(found: impl IntoIterator<Item = (PoolRef, MatchId, QueueEntryId)>) -> Vec<Self> {
        let mut by_match: HashMap<(PoolRef, MatchId), Self> = HashMap::new();
        for (pool, match_id, id) in found {
            by_match
                .entry((pool.clone(), match_id))
                .and_modify(|s| s.reservation.b = id)
                .or_insert_with(|| Self {
                    pool,
                    reservation: Reservation {
                        match_id,
                        a: id,
                        b: id,
                    },
                });
        }
        by_match.into_values().collect()
    }
}

/// Scope of an `Idempotency-Key`: per tenant and user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyScope {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub key: String,
}

/// The first answer given to an idempotent request, or the mark of one
/// still being worked out (status 0, see [`StoredAnswer::in_flight`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAnswer {
    pub status: u16,
    pub body: String,
    /// What the key is bound to: a digest of the request it first came with
    /// (empty for answers kept before keys were bound).
    pub fingerprint: String,
}

impl StoredAnswer {
    /// The mark a request leaves on its key while it runs: `claim` (unique
    /// per request) tells its owner from a concurrent duplicate.
    pub fn in_flight(fingerprint: &str, claim: &str) -> Self {
        StoredAnswer {
            status: 0,
            body: claim.to_owned(),
            fingerprint: fingerprint.to_owned(),
        }
    }

    pub fn is_in_flight(&self) -> bool {
        self.status == 0
    }
}

/// A player's own entry: what the queue routes use (join, status,
/// cancel, "what am I in").
#[async_trait]
pub trait EntryStore: Send + Sync + 'static {
    /// Adds `entry` to its pool unless the user is already waiting or in an
    /// active game; one atomic step with the per-user guard.
    /// [`StoreError::GuardsLost`] while the guards are not known intact.
    async fn join(&self, entry: QueueEntry, now: Millis) -> StoreResult<JoinOutcome>;

    /// The entry, if it exists and belongs to this tenant and user. When it
    /// is still waiting, this also records that its client was heard from.
    async fn status(
        &self,
        tenant: &TenantId,
        user: &UserId,
        id: &QueueEntryId,
        now: Millis,
    ) -> StoreResult<Option<QueueEntry>>;

    /// The user's waiting entry, if any.
    async fn user_entry(&self, tenant: &TenantId, user: &UserId)
    -> StoreResult<Option<QueueEntry>>;

    /// The user's active-game guard, if one is in force at `now`.
    async fn active_game(
        &self,
        tenant: &TenantId,
        user: &UserId,
        now: Millis,
    ) -> StoreResult<Option<ActiveGame>>;

    /// Cancels the user's own entry if it is still searching.
    async fn cancel(
        &self,
        tenant: &TenantId,
        user: &UserId,
        id: &QueueEntryId,
        now: Millis,
    ) -> StoreResult<CancelOutcome>;

    /// Puts entry `id` of `pool`, matched for `game`, back to searching
    /// with its original `enqueued_at` (the game was aborted; its player
    /// showed up): only while it is `MATCHED` for that game and its player
    /// waits nowhere else and has no active-game guard. Answers the entry
    /// searching again, `None` when it was not put back.
    /// [`StoreError::GuardsLost`] while the guards are not known intact.
    async fn requeue(
        &self,
        pool: &PoolRef,
        id: &QueueEntryId,
        game: &GameId,
        now: Millis,
    ) -> StoreResult<Option<QueueEntry>>;

    /// Records that the clients of these entries of `pool` were heard
    /// from at the times given (open event streams, and streams that
    /// closed then); entries no longer waiting are left alone, and a time
    /// older than the one recorded changes nothing.
    async fn touch(&self, pool: &PoolRef, seen: &[(QueueEntryId, Millis)]) -> StoreResult<()>;

    /// Where this node hears of entries that changed (see [`feed`]): every
    /// entry the store moves to `MATCHED`, `TIMED_OUT` or `CANCELLED`, on
    /// any node, is announced there.
    fn feed(&self) -> std::sync::Arc<feed::EntryFeed>;
}

/// The pairing protocol the matching worker drives: read a pool's
/// searching entries, reserve pairs, then commit or release them; end
/// entries that time out; find reservations whose worker died.
#[async_trait]
pub trait PairingStore: Send + Sync + 'static {
    /// Pools that have waiting entries.
    async fn pools(&self) -> StoreResult<Vec<PoolRef>>;

    /// The pool's searching entries (not the reserved ones), oldest first.
    async fn waiting(&self, pool: &PoolRef) -> StoreResult<Vec<Waiting>>;

    /// Reserves each pair only if both entries are still searching; answers
    /// one flag per reservation. Reserved entries cannot be cancelled,
    /// timed out or reserved again until committed or released. A
    /// reservation whose `a` and `b` are one entry reserves that entry
    /// alone (one side of a match across two pools).
    async fn reserve(
        &self,
        pool: &PoolRef,
        reservations: &[Reservation],
        until: Millis,
        now: Millis,
    ) -> StoreResult<Vec<bool>>;

    /// Marks the reserved entries of each record `MATCHED` with its game and
    /// opponent, each in the pool it waited in ([`MatchSide::pool_in`]), and
    /// sets both players' active-game guard until `guard_until`. Players of
    /// records without entries (challenges) get the guard only.
    ///
    /// [`MatchSide::pool_in`]: crate::domain::MatchSide::pool_in
    async fn commit(
        &self,
        records: &[MatchRecord],
        guard_until: Millis,
        now: Millis,
    ) -> StoreResult<()>;

    /// Puts reserved entries back to searching with their original
    /// `enqueued_at`.
    async fn release(
        &self,
        pool: &PoolRef,
        reservations: &[Reservation],
        now: Millis,
    ) -> StoreResult<()>;

    /// Marks these entries `TIMED_OUT` if they are still searching; answers
    /// the entries it changed.
    async fn time_out(
        &self,
        pool: &PoolRef,
        ids: &[QueueEntryId],
        now: Millis,
    ) -> StoreResult<Vec<QueueEntry>>;

    /// Marks these entries `CANCELLED` for `reason` if they are still
    /// searching (their players turned out to be in a game already, or
    /// their clients went away); answers the entries it changed.
    async fn cancel_entries(
        &self,
        pool: &PoolRef,
        ids: &[QueueEntryId],
        reason: EndReason,
        now: Millis,
    ) -> StoreResult<Vec<QueueEntry>>;

    /// Reservations whose deadline is before `now`.
    async fn stale_reservations(&self, now: Millis) -> StoreResult<Vec<StaleReservation>>;
}

/// Active-game guards and holds: the fast copy of the durable claims that
/// keeps a player in one game (see "Who is the authority" above).
#[async_trait]
pub trait GuardStore: Send + Sync + 'static {
    /// Lifts the active-game guard of both players of a game; `false` when
    /// no guard was held for it.
    async fn finish_game(&self, tenant: &TenantId, game: &GameId) -> StoreResult<bool>;

    /// Guards both players of `intent` until `until`, only if neither is
    /// waiting in a queue nor has an active game at `now`; atomic. For games
    /// made outside the queue (an accepted challenge): afterwards a join of
    /// either answers ACTIVE_GAME_EXISTS. `commit` of the match's record
    /// then makes the guards final; `drop_hold` undoes them.
    /// [`StoreError::GuardsLost`] while the guards are not known intact.
    async fn hold_players(
        &self,
        intent: &MatchIntent,
        until: Millis,
        now: Millis,
    ) -> StoreResult<bool>;

    /// Lifts the guards of this match's players, if they are still for it
    /// (a hold, or a guard rebuilt from an intent that was then dropped).
    async fn drop_hold(&self, intent: &MatchIntent) -> StoreResult<()>;

    /// Sets active-game guards that are not set (rebuilt from the durable
    /// store); a guard already there is newer and stays.
    async fn restore_active_games(
        &self,
        games: &[(TenantId, UserId, ActiveGame)],
        now: Millis,
    ) -> StoreResult<()>;

    /// Whether the guards are known intact: false on a fresh store and
    /// after its server lost its data, until [`Self::mark_guards_intact`].
    async fn guards_intact(&self) -> StoreResult<bool>;

    /// Declares the guards intact (after they were rebuilt): joins and
    /// holds are admitted again.
    async fn mark_guards_intact(&self) -> StoreResult<()>;
}

/// Pool figures kept as entries come and go (admin, metrics, estimates).
#[async_trait]
pub trait PoolStatsStore: Send + Sync + 'static {
    /// The pool's figures; outcome counts from the bucket of `since` on
    /// (at most [`STATS_KEPT_MS`] back).
    async fn pool_stats(&self, pool: &PoolRef, since: Millis) -> StoreResult<PoolStats>;

    /// Every pool with searching entries or recent outcomes.
    async fn known_pools(&self) -> StoreResult<Vec<PoolRef>>;
}

/// Which worker passes over which pool.
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Takes or renews the lease on `pool` for `holder` (a worker) for
    /// `ttl_ms`: only the holder passes over the pool. False while another
    /// holder's lease runs; a dead holder's lease lapses by itself.
    async fn lease_pool(&self, pool: &PoolRef, holder: &str, ttl_ms: Millis) -> StoreResult<bool>;

    /// Gives up these leases, if `holder` still has them (on shutdown).
    async fn release_leases(&self, pools: &[PoolRef], holder: &str) -> StoreResult<()>;
}

/// Hot queue state, whole: every part above plus its upkeep. Startup builds
/// one and hands each service the parts it uses (an `Arc<dyn QueueStore>`
/// coerces to any of them).
#[async_trait]
pub trait QueueStore: EntryStore + PairingStore + GuardStore + PoolStatsStore + LeaseStore {
    /// Drops finished entries older than `before`, and expired guards.
    /// Answers how many items went.
    async fn purge(&self, before: Millis, now: Millis) -> StoreResult<usize>;

    /// Whether the store answers.
    async fn ping(&self) -> StoreResult<()>;
}

/// A player's ratings per speed and variant (SPEC §8: `blitz_standard`,
/// `blitz_chess960`, …); unset ones are [`DEFAULT_RATING`]. Fixed-size and
/// `Copy`: every node keeps one per rated player in memory, 144 bytes of
/// ratings and deviations (ratings fit in 0–4000, so an `i16` each, `-1` =
/// unset; deviations in 0–1000, a `u16` each, `u16::MAX` = unset: read as
/// [`UNKNOWN_DEVIATION`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ratings {
    slots: [i16; RATING_POOLS],
    deviations: [Deviation; RATING_POOLS],
}

/// Speeds × variants.
const RATING_POOLS: usize = Speed::ALL.len() * Variant::ALL.len();
const UNSET: i16 = -1;
const UNSET_DEVIATION: Deviation = Deviation::MAX;

impl Default for Ratings {
    fn default() -> Self {
        Self {
            slots: [UNSET; RATING_POOLS],
            deviations: [UNSET_DEVIATION; RATING_POOLS],
        }
    }
}

impl std::fmt::Debug for Ratings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.iter()
                    .map(|(pool, r)| (pool.to_string(), (r, self.deviation(pool)))),
            )
            .finish()
    }
}

impl Ratings {
    fn index(pool: RatingPool) -> usize {
        let speed = Speed::ALL
            .iter()
            .position(|s| *s == pool.speed)
            .unwrap_or(0);
        let variant = Variant::ALL
            .iter()
            .position(|v| *v == pool.variant)
            .unwrap_or(0);
        speed * Variant::ALL.len() + variant
    }

    /// These ratings with `pool` set (clamped to [`RATING_RANGE`]).
    pub fn with(mut self, pool: RatingPool, rating: Rating) -> Self {
        self.set(pool, rating);
        self
    }

    /// Sets `pool` (clamped to [`RATING_RANGE`]).
    pub fn set(&mut self, pool: RatingPool, rating: Rating) {
        let rating = rating.clamp(*RATING_RANGE.start(), *RATING_RANGE.end());
        self.slots[Self::index(pool)] = rating as i16;
    }

    /// The rating in `pool`, 1500 when never set.
    pub fn get(self, pool: RatingPool) -> Rating {
        self.rated(pool).unwrap_or(DEFAULT_RATING)
    }

    /// The rating in `pool`, if one was set.
    pub fn rated(self, pool: RatingPool) -> Option<Rating> {
        let slot = self.slots[Self::index(pool)];
        (slot != UNSET).then_some(slot as Rating)
    }

    /// Sets the deviation in `pool` (clamped to [`MAX_DEVIATION`]).
    pub fn set_deviation(&mut self, pool: RatingPool, deviation: Deviation) {
        self.deviations[Self::index(pool)] = deviation.min(MAX_DEVIATION);
    }

    /// The deviation in `pool`, if one was set.
    pub fn deviation(self, pool: RatingPool) -> Option<Deviation> {
        let slot = self.deviations[Self::index(pool)];
        (slot != UNSET_DEVIATION).then_some(slot)
    }

    /// The rating in `pool` with its deviation ([`UNKNOWN_DEVIATION`]
    /// when none was given), if a rating was set.
    pub fn snapshot(self, pool: RatingPool) -> Option<RatingSnapshot> {
        self.rated(pool).map(|rating| RatingSnapshot {
            rating,
            deviation: self.deviation(pool).unwrap_or(UNKNOWN_DEVIATION),
        })
    }

    /// The pools with a deviation set, with their deviations.
    pub fn deviations(&self) -> impl Iterator<Item = (RatingPool, Deviation)> + '_ {
        RatingPool::all().filter_map(move |pool| self.deviation(pool).map(|d| (pool, d)))
    }

    /// The deviations set as a JSON object by pool (`{"blitz_standard":
    /// 80}`), as stored in `players.rating_deviations`; `None` when none.
    pub fn deviations_json(&self) -> Option<String> {
        let map: serde_json::Map<String, serde_json::Value> = self
            .deviations()
            .map(|(pool, d)| (pool.to_string(), d.into()))
            .collect();
        (!map.is_empty()).then(|| serde_json::Value::Object(map).to_string())
    }

    /// The pools set, with their ratings.
    pub fn iter(&self) -> impl Iterator<Item = (RatingPool, Rating)> + '_ {
        RatingPool::all().filter_map(move |pool| self.rated(pool).map(|r| (pool, r)))
    }

    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(|s| *s == UNSET)
    }

    /// These ratings with every pool (and deviation) set in `update`
    /// replaced.
    pub fn merged(mut self, update: &Ratings) -> Ratings {
        for (pool, r) in update.iter() {
            self.set(pool, r);
        }
        for (pool, d) in update.deviations() {
            self.set_deviation(pool, d);
        }
        self
    }

    /// The standard variant's rating per speed, as stored in the
    /// `players` columns.
    pub fn standard(&self, speed: Speed) -> Option<Rating> {
        self.rated(RatingPool::standard(speed))
    }

    /// The pools set outside the standard variant.
    pub fn variants(&self) -> impl Iterator<Item = (RatingPool, Rating)> + '_ {
        self.iter()
            .filter(|(pool, _)| pool.variant != Variant::Standard)
    }

    /// The other variants' ratings as a JSON object (`{"blitz_chess960":
    /// 2100}`), as stored in `players.variant_ratings`; `None` when none.
    pub fn variants_json(&self) -> Option<String> {
        let map: serde_json::Map<String, serde_json::Value> = self
            .variants()
            .map(|(pool, r)| (pool.to_string(), r.into()))
            .collect();
        (!map.is_empty()).then(|| serde_json::Value::Object(map).to_string())
    }

    /// Reads the four standard columns, `variant_ratings` and
    /// `rating_deviations` back.
    pub fn from_columns(
        standard: [Option<Rating>; 4],
        variants: Option<&str>,
        deviations: Option<&str>,
    ) -> StoreResult<Self> {
        let mut ratings = Ratings::default();
        for (speed, r) in Speed::ALL.into_iter().zip(standard) {
            if let Some(r) = r {
                ratings.set(RatingPool::standard(speed), r);
            }
        }
        for (pool, r) in pool_map(variants, "players.variant_ratings", |v| {
            Rating::try_from(v)
                .ok()
                .filter(|v| RATING_RANGE.contains(v))
        })? {
            ratings.set(pool, r);
        }
        for (pool, d) in pool_map(deviations, "players.rating_deviations", |v| {
            Deviation::try_from(v).ok().filter(|d| *d <= MAX_DEVIATION)
        })? {
            ratings.set_deviation(pool, d);
        }
        Ok(ratings)
    }
}

/// A stored JSON object of integers by pool (`{"blitz_chess960": 2100}`),
/// each value checked by `value`; nothing for `NULL`.
fn pool_map<T>(
    text: Option<&str>,
    column: &str,
    value: impl Fn(i64) -> Option<T>,
) -> StoreResult<Vec<(RatingPool, T)>> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    let corrupt = || StoreError::Corrupt(column.into());
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|_| corrupt())?;
    map.into_iter()
        .map(|(key, v)| {
            let pool: RatingPool = key.parse().map_err(|_| corrupt())?;
            let v = v.as_i64().and_then(&value).ok_or_else(corrupt)?;
            Ok((pool, v))
        })
        .collect()
}

/// A player kept out of matchmaking for not showing up to `record`'s game.
#[derive(Debug, Clone, PartialEq)]
pub struct Cooldown {
    pub record: MatchRecord,
    pub user_id: UserId,
    pub until: Millis,
}

/// One recorded decision (a match, a time-out, a finished game...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub at: Millis,
    pub tenant_id: TenantId,
    pub kind: String,
    pub subject: String,
    pub detail: serde_json::Value,
}

/// Durable match records, intents, and the claims on players.
///
/// A claim ties a player to their one unfinished match: it is written with
/// the match's intent or record, lifted when the game finishes, and lapses
/// when it is older than the `live_since` the caller passes (the active-game
/// guard time). Claims on a batch are decided in order, so two matches of
/// one player in the same call cannot both be stored either.
#[async_trait]
pub trait MatchStore: Send + Sync + 'static {
    /// Stores each intent with claims on both players, unless a player has
    /// a live claim of another match ([`Claim::Busy`]); an intent or record
    /// already stored for the match answers [`Claim::Stored`]. `owner` is
    /// the caller's attempt, which owns the intent for `attempt_ms` (on the
    /// store's clock). One transaction.
    async fn claim_matches(
        &self,
        intents: &[MatchIntent],
        owner: &str,
        attempt_ms: Millis,
        live_since: Millis,
    ) -> StoreResult<Vec<Claim>>;

    /// Inserts the records (games that exist) with their audit events in
    /// one transaction, claims both players of each, drops the records'
    /// intents, and moves each player's color balance (+1 white, -1 black)
    /// for the records inserted now. A record whose player has a live claim
    /// of another match is refused ([`Claim::Busy`]), and audit events whose
    /// subject is a refused record's match id are dropped with it; a record
    /// already stored answers [`Claim::Stored`] and is left as it is.
    async fn insert_matches(
        &self,
        records: &[MatchRecord],
        audit: &[AuditEvent],
        live_since: Millis,
    ) -> StoreResult<Vec<Claim>>;

    /// Rolls back a match of which nothing is stored (no intent, no
    /// record), for good: a later claim or record of it answers
    /// [`Claim::Withdrawn`]. Answers false, writing nothing, if an intent
    /// or record exists. Decided under the same lock as claims, so of a
    /// worker late to store its match and a recoverer giving up on it,
    /// exactly one wins.
    async fn withdraw_match(&self, tenant: &TenantId, match_id: &MatchId) -> StoreResult<bool>;

    /// Drops an intent whose game was refused, with its claims, if `owner`
    /// still owns it (a recoverer may have taken it over). Answers whether
    /// it did.
    async fn drop_intent(&self, match_id: &MatchId, owner: &str) -> StoreResult<bool>;

    /// Gives up an intent `owner` still owns without dropping it (its game
    /// may exist): the next recovery takes it over at once.
    async fn yield_intent(&self, match_id: &MatchId, owner: &str) -> StoreResult<()>;

    /// Takes over up to `limit` intents whose owner's time ran out (a
    /// worker that died or stalled mid-creation): each now belongs to
    /// `owner` for `attempt_ms` more, so one recoverer works on it at a time.
    async fn take_stale_intents(
        &self,
        owner: &str,
        attempt_ms: Millis,
        limit: u32,
    ) -> StoreResult<Vec<MatchIntent>>;

    /// The intent of this match, while its game is being created.
    async fn intent(&self, match_id: &MatchId) -> StoreResult<Option<MatchIntent>>;

    /// Every intent (players whose game is being created).
    async fn intents(&self) -> StoreResult<Vec<MatchIntent>>;

    async fn match_by_id(&self, id: &MatchId) -> StoreResult<Option<MatchRecord>>;

    /// The match whose game is `game`, in this tenant.
    async fn match_by_game(
        &self,
        tenant: &TenantId,
        game: &GameId,
    ) -> StoreResult<Option<MatchRecord>>;

    /// The match a queue entry of this tenant ended in.
    async fn match_by_entry(
        &self,
        tenant: &TenantId,
        entry: &QueueEntryId,
    ) -> StoreResult<Option<MatchRecord>>;

    /// The user's newest unfinished match created at or after `since`.
    async fn active_match(
        &self,
        tenant: &TenantId,
        user: &UserId,
        since: Millis,
    ) -> StoreResult<Option<MatchRecord>>;

    /// Every unfinished match created at or after `since`.
    async fn unfinished_matches(&self, since: Millis) -> StoreResult<Vec<MatchRecord>>;

    /// Records that a game finished and lifts its players' claims; answers
    /// its match, `None` when unknown. Finishing twice keeps the first time.
    async fn finish_match(
        &self,
        tenant: &TenantId,
        game: &GameId,
        at: Millis,
    ) -> StoreResult<Option<MatchRecord>>;

    /// Records that the game of `game` was aborted because `user` never
    /// moved, who may not join until `until`; a second call keeps the
    /// first. Answers whether the match is known.
    async fn record_no_show(
        &self,
        tenant: &TenantId,
        game: &GameId,
        user: &UserId,
        until: Millis,
    ) -> StoreResult<bool>;

    /// Every no-show cooldown still running at `now`.
    async fn cooldowns(&self, now: Millis) -> StoreResult<Vec<Cooldown>>;

    /// Each listed user's latest opponents, newest first: at most
    /// `per_user` games each, none created before `since` (absent: none).
    async fn recent_opponents(
        &self,
        tenant: &TenantId,
        users: &[UserId],
        since: Millis,
        per_user: u32,
    ) -> StoreResult<HashMap<UserId, Vec<(UserId, Millis)>>>;

    /// Each listed user's colours so far (absent: never played).
    async fn color_histories(
        &self,
        tenant: &TenantId,
        users: &[UserId],
    ) -> StoreResult<HashMap<UserId, ColorHistory>>;
}

/// The local ratings table.
#[async_trait]
pub trait RatingStore: Send + Sync + 'static {
    async fn ratings(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Ratings>;

    /// Sets the speeds present in `update`, keeps the others; answers the result.
    async fn set_ratings(
        &self,
        tenant: &TenantId,
        user: &UserId,
        update: &Ratings,
    ) -> StoreResult<Ratings>;

    /// The players whose ratings changed after `since` (epoch milliseconds
    /// on the store's own clock), or with `None` every player with a rating;
    /// each with when it last changed.
    async fn ratings_changed_since(&self, since: Option<Millis>) -> StoreResult<Vec<RatingChange>>;
}

/// A player's ratings as stored, and when they last changed (epoch
/// milliseconds on the store's clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatingChange {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub ratings: Ratings,
    pub changed_at: Millis,
}

/// Which audit events to read: a tenant's, optionally of one kind or
/// about one subject, older than an event id (paging), at most `limit`.
#[derive(Debug, Clone)]
pub struct AuditQuery {
    pub tenant_id: TenantId,
    pub kind: Option<String>,
    pub subject: Option<String>,
    /// Only events with a smaller id (the `id` of the last one read).
    pub before: Option<i64>,
    pub limit: u32,
}

/// The audit log of decisions.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    async fn record(&self, events: &[AuditEvent]) -> StoreResult<()>;

    /// The newest events about `subject`, newest first.
    async fn events_about(&self, subject: &str, limit: u32) -> StoreResult<Vec<AuditEvent>>;

    /// The events `query` asks for, newest first, each with its id.
    async fn audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<(i64, AuditEvent)>>;
}

/// What one row of run-time configuration configures, for its tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConfigScope {
    /// The matching policy of the tenant (`None`) or of one of its pools:
    /// the fields set (a `PolicyPatch`).
    Policy(Option<PoolKey>),
    /// The tenant's choices: time controls, variants, regions, default
    /// region (the fields set).
    Tenant,
    /// The tenant's feature flags (the flags set).
    Flags,
    /// A player restricted for fair play: paired only with other
    /// restricted players (the body: the optional reason).
    Restricted(UserId),
}

/// One row of run-time configuration: a JSON object of the fields set.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigRow {
    pub tenant_id: TenantId,
    pub scope: ConfigScope,
    pub body: serde_json::Value,
}

/// Every row of run-time configuration, at one version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigRows {
    pub version: i64,
    pub rows: Vec<ConfigRow>,
}

/// Configuration changed at run time (matching policies, tenant
/// configuration, feature flags). Every change moves one version counter,
/// in the same transaction, so nodes know when to reload.
#[async_trait]
pub trait ConfigStore: Send + Sync + 'static {
    /// Every row, and the version they are at (read together).
    async fn config(&self) -> StoreResult<ConfigRows>;

    /// The version the configuration is at.
    async fn config_version(&self) -> StoreResult<i64>;

    /// Sets (`Some`) or drops (`None`) the row of `tenant`/`scope`, with
    /// `audit` (its detail may name `before`; the store fills it in) in the
    /// same transaction; answers the row there was before.
    async fn change_config(
        &self,
        tenant: &TenantId,
        scope: ConfigScope,
        body: Option<serde_json::Value>,
        audit: AuditEvent,
    ) -> StoreResult<Option<serde_json::Value>>;
}

/// Which of a user's challenges to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Challenges the user received.
    Incoming,
    /// Challenges the user sent.
    Outgoing,
}

/// A conditional change of a challenge's status.
#[derive(Debug, Clone, Copy)]
pub struct Transition<'a> {
    pub from: ChallengeStatus,
    pub to: ChallengeStatus,
    pub match_id: Option<&'a MatchId>,
    pub game_id: Option<&'a GameId>,
}

/// Durable challenges. Every change is conditional on the current status,
/// so of racing changes exactly one wins.
#[async_trait]
pub trait ChallengeStore: Send + Sync + 'static {
    /// Stores a new pending challenge unless its challenger already has
    /// `max_pending` pending ones (not expired at `now`); atomic. Answers
    /// whether it was stored.
    async fn create_challenge(
        &self,
        challenge: &Challenge,
        max_pending: u32,
        now: Millis,
    ) -> StoreResult<bool>;

    async fn challenge(
        &self,
        tenant: &TenantId,
        id: &ChallengeId,
    ) -> StoreResult<Option<Challenge>>;

    /// The user's pending challenges (not expired at `now`), newest first.
    async fn pending_challenges(
        &self,
        tenant: &TenantId,
        user: &UserId,
        direction: Direction,
        now: Millis,
    ) -> StoreResult<Vec<Challenge>>;

    /// Applies `change` if the challenge is in `change.from` (and, from
    /// `PENDING`, not expired at `now`). Answers whether it applied.
    async fn transition_challenge(
        &self,
        tenant: &TenantId,
        id: &ChallengeId,
        change: Transition<'_>,
        now: Millis,
    ) -> StoreResult<bool>;

    /// Marks pending challenges past their time `EXPIRED`; answers how many.
    async fn expire_challenges(&self, now: Millis) -> StoreResult<u64>;

    /// Challenges left `ACCEPTING` since before `before` (their accepter died).
    async fn stale_accepting(&self, before: Millis) -> StoreResult<Vec<Challenge>>;
}

/// Idempotent answers (`Idempotency-Key`), kept durably so a retry after a
/// restart still gets the first answer.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// The answer first stored under this scope, if not expired at `now`.
    async fn idempotent_answer(
        &self,
        scope: &IdempotencyScope,
        now: Millis,
    ) -> StoreResult<Option<StoredAnswer>>;

    /// Stores `answer` unless one is stored already and not expired at
    /// `now`; answers the one that is stored now (so racing requests return
    /// the same answer, and of two requests marking a key in flight, one
    /// finds its own mark).
    async fn save_idempotent_answer(
        &self,
        scope: &IdempotencyScope,
        answer: StoredAnswer,
        expires_at: Millis,
        now: Millis,
    ) -> StoreResult<StoredAnswer>;

    /// Replaces the in-flight mark `claim` left under `scope` with `answer`
    /// (kept until `expires_at`), or drops the mark when `answer` is `None`.
    /// Does nothing when the mark is no longer there.
    async fn settle_idempotent_answer(
        &self,
        scope: &IdempotencyScope,
        claim: &str,
        answer: Option<StoredAnswer>,
        expires_at: Millis,
    ) -> StoreResult<()>;
}

/// The most players one player may block.
pub const MAX_BLOCKS_PER_USER: usize = 1_000;

/// What stands between the players a matching pass paired, as the durable
/// store says at the time of the pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relations {
    /// (blocker, blocked), both among the players asked about.
    pub blocks: Vec<(UserId, UserId)>,
    /// The players asked about who are restricted for fair play.
    pub restricted: std::collections::HashSet<UserId>,
}

impl Relations {
    /// Whether `a` and `b` may not meet: either blocks the other, or only
    /// one of them is restricted.
    pub fn bars(&self, a: &UserId, b: &UserId) -> bool {
        self.restricted.contains(a) != self.restricted.contains(b) || self.blocked(a, b)
    }

    /// Whether either of `a` and `b` blocks the other.
    pub fn blocked(&self, a: &UserId, b: &UserId) -> bool {
        self.blocks
            .iter()
            .any(|(x, y)| (x == a && y == b) || (x == b && y == a))
    }
}

/// What a change of a block did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockChange {
    Changed,
    /// It was so already.
    Unchanged,
    /// Refused: the player blocks [`MAX_BLOCKS_PER_USER`] players already.
    Full,
}

/// Who blocks whom (restricted players are run-time configuration,
/// [`ConfigScope::Restricted`]).
#[async_trait]
pub trait RelationStore: Send + Sync + 'static {
    /// Adds (`true`) or lifts (`false`) `user`'s block of `blocked`, with
    /// `audit` in the same transaction when something changed.
    async fn set_block(
        &self,
        tenant: &TenantId,
        (user, blocked): (&UserId, &UserId),
        on: bool,
        audit: AuditEvent,
    ) -> StoreResult<BlockChange>;

    /// The players `user` blocks, oldest block first.
    async fn blocks_of(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Vec<UserId>>;

    /// The blocks among `users`, and which of them are restricted.
    async fn relations_among(&self, tenant: &TenantId, users: &[UserId]) -> StoreResult<Relations>;
}

/// All durable stores, as one backend provides them.
#[async_trait]
pub trait DurableStore:
    MatchStore
    + RatingStore
    + AuditStore
    + ChallengeStore
    + IdempotencyStore
    + ConfigStore
    + RelationStore
{
    async fn ping(&self) -> StoreResult<()>;

    /// Why the store cannot write right now, if it cannot (no I/O).
    fn write_failure(&self) -> Option<WriteFailure>;

    /// Drops idempotent answers expired at `now` and claims older than
    /// `live_since`; answers how many rows went.
    async fn purge_expired(&self, now: Millis, live_since: Millis) -> StoreResult<u64>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_success_right_after_a_failure_does_not_make_the_store_healthy() {
        let health = WriteHealth::default();
        health.note(&Ok(()));
        assert!(!health.is_failing());
        health.note::<()>(&Err(StoreError::Unavailable("disk full".into())));
        assert!(health.is_failing());
        // A probe's one row fits where the batch did not: still failing.
        health.note(&Ok(()));
        assert!(health.is_failing());
        assert_eq!(health.failure().unwrap().reason, "disk full");
        // Refusals and corrupt rows say nothing about the store's health.
        health.note::<()>(&Err(StoreError::Corrupt("bad row".into())));
        assert_eq!(health.failure().unwrap().reason, "disk full");
    }
}
