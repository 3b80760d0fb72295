//! Store decorators that time every operation and count its failures
//! (`matchmaking_store_operation_duration_seconds`,
//! `matchmaking_store_errors_total`), whatever the backend. The wrapped
//! store does the work; these only watch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::feed::EntryFeed;
use super::{
    AuditEvent, AuditQuery, AuditStore, BlockChange, CancelOutcome, ChallengeStore, Claim,
    ConfigRows, ConfigScope, ConfigStore, Cooldown, Direction, DurableStore, EntryStore,
    GuardStore, IdempotencyScope, IdempotencyStore, JoinOutcome, LeaseStore, MatchStore,
    PairingStore, PoolStats, PoolStatsStore, QueueStore, RatingChange, RatingStore, Ratings,
    RelationStore, Relations, Reservation, StaleReservation, StoreResult, StoredAnswer, Transition,
    Waiting, WriteFailure,
};
use crate::domain::{
    ActiveGame, Challenge, ChallengeId, ColorHistory, EndReason, GameId, MatchId, MatchIntent,
    MatchRecord, Millis, PoolRef, QueueEntry, QueueEntryId, TenantId, UserId,
};
use crate::observe;

/// Implements each listed store trait for a wrapper by forwarding every
/// method to `self.inner`, recording its latency and whether it failed
/// under the method's name. The traits' methods are listed once here; a
/// method added to a trait and not here fails to compile. Methods that do
/// no I/O are written out after `unmeasured`.
macro_rules! measured {
    ($wrapper:ty: $($store:ident {
        $(fn $op:ident($($arg:ident: $ty:ty),*) -> $out:ty;)*
        $(unmeasured { $($plain:tt)* })?
    })*) => {
        $(
            #[async_trait]
            impl $store for $wrapper {
                $(
                    async fn $op(&self, $($arg: $ty),*) -> StoreResult<$out> {
                        let started = Instant::now();
                        let result = $store::$op(&*self.inner, $($arg),*).await;
                        observe::store_operation(
                            self.name,
                            stringify!($op),
                            started.elapsed(),
                            result.is_err(),
                        );
                        result
                    }
                )*
                $($($plain)*)?
            }
        )*
    };
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

measured! { InstrumentedQueueStore:
    EntryStore {
        fn requeue(pool: &PoolRef, id: &QueueEntryId, game: &GameId, now: Millis) -> Option<QueueEntry>;
        fn join(entry: QueueEntry, now: Millis) -> JoinOutcome;
        fn status(tenant: &TenantId, user: &UserId, id: &QueueEntryId, now: Millis) -> Option<QueueEntry>;
        fn user_entry(tenant: &TenantId, user: &UserId) -> Option<QueueEntry>;
        fn active_game(tenant: &TenantId, user: &UserId, now: Millis) -> Option<ActiveGame>;
        fn cancel(tenant: &TenantId, user: &UserId, id: &QueueEntryId, now: Millis) -> CancelOutcome;
        fn touch(pool: &PoolRef, seen: &[(QueueEntryId, Millis)]) -> ();
        unmeasured {
            fn feed(&self) -> Arc<EntryFeed> {
                self.inner.feed()
            }
        }
    }
    PairingStore {
        fn pools() -> Vec<PoolRef>;
        fn waiting(pool: &PoolRef) -> Vec<Waiting>;
        fn reserve(pool: &PoolRef, reservations: &[Reservation], until: Millis, now: Millis) -> Vec<bool>;
        fn commit(records: &[MatchRecord], guard_until: Millis, now: Millis) -> ();
        fn release(pool: &PoolRef, reservations: &[Reservation], now: Millis) -> ();
        fn time_out(pool: &PoolRef, ids: &[QueueEntryId], now: Millis) -> Vec<QueueEntry>;
        fn cancel_entries(pool: &PoolRef, ids: &[QueueEntryId], reason: EndReason, now: Millis) -> Vec<QueueEntry>;
        fn stale_reservations(now: Millis) -> Vec<StaleReservation>;
    }
    GuardStore {
        fn finish_game(tenant: &TenantId, game: &GameId) -> bool;
        fn hold_players(intent: &MatchIntent, until: Millis, now: Millis) -> bool;
        fn drop_hold(intent: &MatchIntent) -> ();
        fn restore_active_games(games: &[(TenantId, UserId, ActiveGame)], now: Millis) -> ();
        fn guards_intact() -> bool;
        fn mark_guards_intact() -> ();
    }
    PoolStatsStore {
        fn pool_stats(pool: &PoolRef, since: Millis) -> PoolStats;
        fn known_pools() -> Vec<PoolRef>;
    }
    LeaseStore {
        fn lease_pool(pool: &PoolRef, holder: &str, ttl_ms: Millis) -> bool;
        fn release_leases(pools: &[PoolRef], holder: &str) -> ();
    }
    QueueStore {
        fn purge(before: Millis, now: Millis) -> usize;
        fn ping() -> ();
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

measured! { InstrumentedDurableStore:
    MatchStore {
        fn claim_matches(intents: &[MatchIntent], owner: &str, attempt_ms: Millis, live_since: Millis) -> Vec<Claim>;
        fn insert_matches(records: &[MatchRecord], audit: &[AuditEvent], live_since: Millis) -> Vec<Claim>;
        fn withdraw_match(tenant: &TenantId, match_id: &MatchId) -> bool;
        fn drop_intent(match_id: &MatchId, owner: &str) -> bool;
        fn yield_intent(match_id: &MatchId, owner: &str) -> ();
        fn take_stale_intents(owner: &str, attempt_ms: Millis, limit: u32) -> Vec<MatchIntent>;
        fn intent(match_id: &MatchId) -> Option<MatchIntent>;
        fn intents() -> Vec<MatchIntent>;
        fn match_by_id(id: &MatchId) -> Option<MatchRecord>;
        fn match_by_game(tenant: &TenantId, game: &GameId) -> Option<MatchRecord>;
        fn match_by_entry(tenant: &TenantId, entry: &QueueEntryId) -> Option<MatchRecord>;
        fn active_match(tenant: &TenantId, user: &UserId, since: Millis) -> Option<MatchRecord>;
        fn unfinished_matches(since: Millis) -> Vec<MatchRecord>;
        fn finish_match(tenant: &TenantId, game: &GameId, at: Millis) -> Option<MatchRecord>;
        fn record_no_show(tenant: &TenantId, game: &GameId, user: &UserId, until: Millis) -> bool;
        fn cooldowns(now: Millis) -> Vec<Cooldown>;
        fn color_histories(tenant: &TenantId, users: &[UserId]) -> HashMap<UserId, ColorHistory>;
        fn recent_opponents(tenant: &TenantId, users: &[UserId], since: Millis, per_user: u32) -> HashMap<UserId, Vec<(UserId, Millis)>>;
    }
    RatingStore {
        fn ratings(tenant: &TenantId, user: &UserId) -> Ratings;
        fn set_ratings(tenant: &TenantId, user: &UserId, update: &Ratings) -> Ratings;
        fn ratings_changed_since(since: Option<Millis>) -> Vec<RatingChange>;
    }
    AuditStore {
        fn record(events: &[AuditEvent]) -> ();
        fn events_about(subject: &str, limit: u32) -> Vec<AuditEvent>;
        fn audit_events(query: &AuditQuery) -> Vec<(i64, AuditEvent)>;
    }
    ChallengeStore {
        fn create_challenge(challenge: &Challenge, max_pending: u32, now: Millis) -> bool;
        fn challenge(tenant: &TenantId, id: &ChallengeId) -> Option<Challenge>;
        fn pending_challenges(tenant: &TenantId, user: &UserId, direction: Direction, now: Millis) -> Vec<Challenge>;
        fn transition_challenge(tenant: &TenantId, id: &ChallengeId, change: Transition<'_>, now: Millis) -> bool;
        fn expire_challenges(now: Millis) -> u64;
        fn stale_accepting(before: Millis) -> Vec<Challenge>;
    }
    IdempotencyStore {
        fn idempotent_answer(scope: &IdempotencyScope, now: Millis) -> Option<StoredAnswer>;
        fn save_idempotent_answer(scope: &IdempotencyScope, answer: StoredAnswer, expires_at: Millis, now: Millis) -> StoredAnswer;
        fn settle_idempotent_answer(scope: &IdempotencyScope, claim: &str, answer: Option<StoredAnswer>, expires_at: Millis) -> ();
    }
    RelationStore {
        fn set_block(tenant: &TenantId, users: (&UserId, &UserId), on: bool, audit: AuditEvent) -> BlockChange;
        fn blocks_of(tenant: &TenantId, user: &UserId) -> Vec<UserId>;
        fn relations_among(tenant: &TenantId, users: &[UserId]) -> Relations;
    }
    ConfigStore {
        fn config() -> ConfigRows;
        fn config_version() -> i64;
        fn change_config(tenant: &TenantId, scope: ConfigScope, body: Option<serde_json::Value>, audit: AuditEvent) -> Option<serde_json::Value>;
    }
}

measured! { InstrumentedDurableStore:
    DurableStore {
        fn ping() -> ();
        fn purge_expired(now: Millis, live_since: Millis) -> u64;
        unmeasured {
            fn write_failure(&self) -> Option<WriteFailure> {
                self.inner.write_failure()
            }
        }
    }
}
