//! Store decorators that time every operation and count its failures
//! (`matchmaking_store_operation_duration_seconds`,
//! `matchmaking_store_errors_total`), whatever the backend. The wrapped
//! store does the work; these only watch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{
    AuditEvent, AuditStore, CancelOutcome, ChallengeStore, Claim, Direction, DurableStore,
    IdempotencyScope, IdempotencyStore, JoinOutcome, MatchStore, PoolStats, QueueStore,
    RatingChange, RatingStore, Ratings, Reservation, StaleReservation, StoreResult, StoredAnswer,
    Transition, Waiting, WriteFailure,
};
use crate::domain::{
    ActiveGame, Challenge, ChallengeId, GameId, MatchId, MatchIntent, MatchRecord, Millis, PoolRef,
    QueueEntry, QueueEntryId, TenantId, UserId,
};
use crate::observe;

/// Awaits `$call`, recording its latency and whether it failed.
macro_rules! timed {
    ($self:ident, $op:literal, $call:expr) => {{
        let started = Instant::now();
        let result = $call.await;
        observe::store_operation($self.name, $op, started.elapsed(), result.is_err());
        result
    }};
}

/// A queue store whose operations are measured.
pub struct InstrumentedQueueStore {
    inner: Arc<dyn QueueStore>,
    name: &'static str,
}

impl InstrumentedQueueStore {
    /// `name` labels the series: `memory`, `redis`.
    pub fn wrap(inner: Arc<dyn QueueStore>, name: &'static str) -> Arc<dyn QueueStore> {
        Arc::new(Self { inner, name })
    }
}

#[async_trait]
impl QueueStore for InstrumentedQueueStore {
    async fn join(&self, entry: QueueEntry, now: Millis) -> StoreResult<JoinOutcome> {
        timed!(self, "join", self.inner.join(entry, now))
    }

    async fn status(
        &self,
        tenant: &TenantId,
        user: &UserId,
        id: &QueueEntryId,
        now: Millis,
    ) -> StoreResult<Option<QueueEntry>> {
        timed!(self, "status", self.inner.status(tenant, user, id, now))
    }

    async fn user_entry(
        &self,
        tenant: &TenantId,
        user: &UserId,
    ) -> StoreResult<Option<QueueEntry>> {
        timed!(self, "user_entry", self.inner.user_entry(tenant, user))
    }

    async fn active_game(
        &self,
        tenant: &TenantId,
        user: &UserId,
        now: Millis,
    ) -> StoreResult<Option<ActiveGame>> {
        timed!(
            self,
            "active_game",
            self.inner.active_game(tenant, user, now)
        )
    }

    async fn cancel(
        &self,
        tenant: &TenantId,
        user: &UserId,
        id: &QueueEntryId,
        now: Millis,
    ) -> StoreResult<CancelOutcome> {
        timed!(self, "cancel", self.inner.cancel(tenant, user, id, now))
    }

    async fn pools(&self) -> StoreResult<Vec<PoolRef>> {
        timed!(self, "pools", self.inner.pools())
    }

    async fn waiting(&self, pool: &PoolRef) -> StoreResult<Vec<Waiting>> {
        timed!(self, "waiting", self.inner.waiting(pool))
    }

    async fn reserve(
        &self,
        pool: &PoolRef,
        reservations: &[Reservation],
        until: Millis,
        now: Millis,
    ) -> StoreResult<Vec<bool>> {
        timed!(
            self,
            "reserve",
            self.inner.reserve(pool, reservations, until, now)
        )
    }

    async fn commit(
        &self,
        records: &[MatchRecord],
        guard_until: Millis,
        now: Millis,
    ) -> StoreResult<()> {
        timed!(self, "commit", self.inner.commit(records, guard_until, now))
    }

    async fn release(
        &self,
        pool: &PoolRef,
        reservations: &[Reservation],
        now: Millis,
    ) -> StoreResult<()> {
        timed!(self, "release", self.inner.release(pool, reservations, now))
    }

    async fn time_out(
        &self,
        pool: &PoolRef,
        ids: &[QueueEntryId],
        now: Millis,
    ) -> StoreResult<Vec<QueueEntry>> {
        timed!(self, "time_out", self.inner.time_out(pool, ids, now))
    }

    async fn cancel_entries(
        &self,
        pool: &PoolRef,
        ids: &[QueueEntryId],
        now: Millis,
    ) -> StoreResult<Vec<QueueEntry>> {
        timed!(
            self,
            "cancel_entries",
            self.inner.cancel_entries(pool, ids, now)
        )
    }

    async fn stale_reservations(&self, now: Millis) -> StoreResult<Vec<StaleReservation>> {
        timed!(
            self,
            "stale_reservations",
            self.inner.stale_reservations(now)
        )
    }

    async fn finish_game(&self, tenant: &TenantId, game: &GameId) -> StoreResult<bool> {
        timed!(self, "finish_game", self.inner.finish_game(tenant, game))
    }

    async fn hold_players(
        &self,
        intent: &MatchIntent,
        until: Millis,
        now: Millis,
    ) -> StoreResult<bool> {
        timed!(
            self,
            "hold_players",
            self.inner.hold_players(intent, until, now)
        )
    }

    async fn drop_hold(&self, intent: &MatchIntent) -> StoreResult<()> {
        timed!(self, "drop_hold", self.inner.drop_hold(intent))
    }

    async fn guards_intact(&self) -> StoreResult<bool> {
        timed!(self, "guards_intact", self.inner.guards_intact())
    }

    async fn mark_guards_intact(&self) -> StoreResult<()> {
        timed!(self, "mark_guards_intact", self.inner.mark_guards_intact())
    }

    async fn restore_active_games(
        &self,
        games: &[(TenantId, UserId, ActiveGame)],
    ) -> StoreResult<()> {
        timed!(
            self,
            "restore_active_games",
            self.inner.restore_active_games(games)
        )
    }

    async fn recent_waits(&self, pool: &PoolRef) -> StoreResult<Vec<Millis>> {
        timed!(self, "recent_waits", self.inner.recent_waits(pool))
    }

    async fn pool_stats(&self, pool: &PoolRef, since: Millis) -> StoreResult<PoolStats> {
        timed!(self, "pool_stats", self.inner.pool_stats(pool, since))
    }

    async fn known_pools(&self) -> StoreResult<Vec<PoolRef>> {
        timed!(self, "known_pools", self.inner.known_pools())
    }

    async fn purge(&self, before: Millis, now: Millis) -> StoreResult<usize> {
        timed!(self, "purge", self.inner.purge(before, now))
    }

    async fn lease_pool(&self, pool: &PoolRef, holder: &str, ttl_ms: Millis) -> StoreResult<bool> {
        timed!(
            self,
            "lease_pool",
            self.inner.lease_pool(pool, holder, ttl_ms)
        )
    }

    async fn release_leases(&self, pools: &[PoolRef], holder: &str) -> StoreResult<()> {
        timed!(
            self,
            "release_leases",
            self.inner.release_leases(pools, holder)
        )
    }

    async fn ping(&self) -> StoreResult<()> {
        timed!(self, "ping", self.inner.ping())
    }
}

/// A durable store whose operations are measured.
pub struct InstrumentedDurableStore {
    inner: Arc<dyn DurableStore>,
    name: &'static str,
}

impl InstrumentedDurableStore {
    /// `name` labels the series: `sqlite`, `postgres`.
    pub fn wrap(inner: Arc<dyn DurableStore>, name: &'static str) -> Arc<dyn DurableStore> {
        Arc::new(Self { inner, name })
    }
}

#[async_trait]
impl MatchStore for InstrumentedDurableStore {
    async fn claim_matches(
        &self,
        intents: &[MatchIntent],
        owner: &str,
        attempt_ms: Millis,
        live_since: Millis,
    ) -> StoreResult<Vec<Claim>> {
        timed!(
            self,
            "claim_matches",
            self.inner
                .claim_matches(intents, owner, attempt_ms, live_since)
        )
    }

    async fn insert_matches(
        &self,
        records: &[MatchRecord],
        audit: &[AuditEvent],
        live_since: Millis,
    ) -> StoreResult<Vec<Claim>> {
        timed!(
            self,
            "insert_matches",
            self.inner.insert_matches(records, audit, live_since)
        )
    }

    async fn withdraw_match(&self, tenant: &TenantId, match_id: &MatchId) -> StoreResult<bool> {
        timed!(
            self,
            "withdraw_match",
            self.inner.withdraw_match(tenant, match_id)
        )
    }

    async fn drop_intent(&self, match_id: &MatchId, owner: &str) -> StoreResult<bool> {
        timed!(self, "drop_intent", self.inner.drop_intent(match_id, owner))
    }

    async fn yield_intent(&self, match_id: &MatchId, owner: &str) -> StoreResult<()> {
        timed!(
            self,
            "yield_intent",
            self.inner.yield_intent(match_id, owner)
        )
    }

    async fn take_stale_intents(
        &self,
        owner: &str,
        attempt_ms: Millis,
        limit: u32,
    ) -> StoreResult<Vec<MatchIntent>> {
        timed!(
            self,
            "take_stale_intents",
            self.inner.take_stale_intents(owner, attempt_ms, limit)
        )
    }

    async fn intent(&self, match_id: &MatchId) -> StoreResult<Option<MatchIntent>> {
        timed!(self, "intent", self.inner.intent(match_id))
    }

    async fn intents(&self) -> StoreResult<Vec<MatchIntent>> {
        timed!(self, "intents", self.inner.intents())
    }

    async fn match_by_id(&self, id: &MatchId) -> StoreResult<Option<MatchRecord>> {
        timed!(self, "match_by_id", self.inner.match_by_id(id))
    }

    async fn match_by_entry(
        &self,
        tenant: &TenantId,
        entry: &QueueEntryId,
    ) -> StoreResult<Option<MatchRecord>> {
        timed!(
            self,
            "match_by_entry",
            self.inner.match_by_entry(tenant, entry)
        )
    }

    async fn active_match(
        &self,
        tenant: &TenantId,
        user: &UserId,
        since: Millis,
    ) -> StoreResult<Option<MatchRecord>> {
        timed!(
            self,
            "active_match",
            self.inner.active_match(tenant, user, since)
        )
    }

    async fn unfinished_matches(&self, since: Millis) -> StoreResult<Vec<MatchRecord>> {
        timed!(
            self,
            "unfinished_matches",
            self.inner.unfinished_matches(since)
        )
    }

    async fn finish_match(
        &self,
        tenant: &TenantId,
        game: &GameId,
        at: Millis,
    ) -> StoreResult<Option<MatchRecord>> {
        timed!(
            self,
            "finish_match",
            self.inner.finish_match(tenant, game, at)
        )
    }

    async fn color_balances(
        &self,
        tenant: &TenantId,
        users: &[UserId],
    ) -> StoreResult<HashMap<UserId, i32>> {
        timed!(
            self,
            "color_balances",
            self.inner.color_balances(tenant, users)
        )
    }
}

#[async_trait]
impl RatingStore for InstrumentedDurableStore {
    async fn ratings(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Ratings> {
        timed!(self, "ratings", self.inner.ratings(tenant, user))
    }

    async fn set_ratings(
        &self,
        tenant: &TenantId,
        user: &UserId,
        update: &Ratings,
    ) -> StoreResult<Ratings> {
        timed!(
            self,
            "set_ratings",
            self.inner.set_ratings(tenant, user, update)
        )
    }

    async fn ratings_changed_since(&self, since: Option<Millis>) -> StoreResult<Vec<RatingChange>> {
        timed!(
            self,
            "ratings_changed_since",
            self.inner.ratings_changed_since(since)
        )
    }
}

#[async_trait]
impl AuditStore for InstrumentedDurableStore {
    async fn record(&self, events: &[AuditEvent]) -> StoreResult<()> {
        timed!(self, "record", self.inner.record(events))
    }

    async fn events_about(&self, subject: &str, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        timed!(
            self,
            "events_about",
            self.inner.events_about(subject, limit)
        )
    }
}

#[async_trait]
impl ChallengeStore for InstrumentedDurableStore {
    async fn create_challenge(
        &self,
        challenge: &Challenge,
        max_pending: u32,
        now: Millis,
    ) -> StoreResult<bool> {
        timed!(
            self,
            "create_challenge",
            self.inner.create_challenge(challenge, max_pending, now)
        )
    }

    async fn challenge(
        &self,
        tenant: &TenantId,
        id: &ChallengeId,
    ) -> StoreResult<Option<Challenge>> {
        timed!(self, "challenge", self.inner.challenge(tenant, id))
    }

    async fn pending_challenges(
        &self,
        tenant: &TenantId,
        user: &UserId,
        direction: Direction,
        now: Millis,
    ) -> StoreResult<Vec<Challenge>> {
        timed!(
            self,
            "pending_challenges",
            self.inner.pending_challenges(tenant, user, direction, now)
        )
    }

    async fn transition_challenge(
        &self,
        tenant: &TenantId,
        id: &ChallengeId,
        change: Transition<'_>,
        now: Millis,
    ) -> StoreResult<bool> {
        timed!(
            self,
            "transition_challenge",
            self.inner.transition_challenge(tenant, id, change, now)
        )
    }

    async fn expire_challenges(&self, now: Millis) -> StoreResult<u64> {
        timed!(self, "expire_challenges", self.inner.expire_challenges(now))
    }

    async fn stale_accepting(&self, before: Millis) -> StoreResult<Vec<Challenge>> {
        timed!(self, "stale_accepting", self.inner.stale_accepting(before))
    }
}

#[async_trait]
impl IdempotencyStore for InstrumentedDurableStore {
    async fn idempotent_answer(
        &self,
        scope: &IdempotencyScope,
        now: Millis,
    ) -> StoreResult<Option<StoredAnswer>> {
        timed!(
            self,
            "idempotent_answer",
            self.inner.idempotent_answer(scope, now)
        )
    }

    async fn save_idempotent_answer(
        &self,
        scope: &IdempotencyScope,
        answer: StoredAnswer,
        expires_at: Millis,
        now: Millis,
    ) -> StoreResult<StoredAnswer> {
        timed!(
            self,
            "save_idempotent_answer",
            self.inner
                .save_idempotent_answer(scope, answer, expires_at, now)
        )
    }
}

#[async_trait]
impl DurableStore for InstrumentedDurableStore {
    async fn ping(&self) -> StoreResult<()> {
        timed!(self, "ping", DurableStore::ping(&*self.inner))
    }

    fn write_failure(&self) -> Option<WriteFailure> {
        self.inner.write_failure()
    }

    async fn purge_expired(&self, now: Millis, live_since: Millis) -> StoreResult<u64> {
        timed!(
            self,
            "purge_expired",
            self.inner.purge_expired(now, live_since)
        )
    }
}
