//! The rules that depend on time — the widening rating window, the maximum
//! gap, the queue time-out, presence, the active-game guard, region
//! fallback — run against the real services and stores (in memory and a
//! SQLite file; region fallback on Redis and PostgreSQL too) with a clock
//! moved by hand: each rule is checked just before and just after its
//! moment, and no test waits for time to pass.

mod support;

use std::sync::Arc;
use std::time::Duration;

use matchmaking_api::auth::Identity;
use matchmaking_api::domain::{
    Clock, EndReason, EntryStatus, GameId, ManualClock, MatchId, MatchRecord, MatchSide,
    MatchSource, Millis, PolicyPatch, PoolKey, PoolPolicy, PoolRef, QueueEntryId, RatingPool,
    RegionSet, Speed, TenantId, UserId,
};
use matchmaking_api::matcher::Hold;
use matchmaking_api::services::ServiceError;
use matchmaking_api::services::backlog::Backlog;
use matchmaking_api::services::breaker::CircuitBreaker;
use matchmaking_api::services::games::{GuardedGameCreator, LocalGameCreator};
use matchmaking_api::services::guards::Guards;
use matchmaking_api::services::live::{LiveConfig, LiveDefaults};
use matchmaking_api::services::matching::{MatchingLimits, MatchingService, PassReport};
use matchmaking_api::services::queue::{EntryView, Join, QueueLimits, QueueService};
use matchmaking_api::services::ratings::RatingService;
use matchmaking_api::services::relations::RelationService;
use matchmaking_api::services::signal::PoolSignal;
use matchmaking_api::store::memory::MemoryQueueStore;
use matchmaking_api::store::postgres::PgStore;
use matchmaking_api::store::redis::RedisQueueStore;
use matchmaking_api::store::sqlite::SqliteStore;
use matchmaking_api::store::{
    DurableStore, PoolStats, PoolStatsStore, QueueStore, RatingStore, Ratings, Reservation,
    StoreError, StoreResult,
};

const T0: Millis = 1_700_000_000_000;
const POOL: &str = "standard_5+0_rated_GLOBAL";
const GUARD_MS: Millis = 3_600_000;
const NO_SHOW_COOLDOWN_MS: Millis = 120_000;

/// The queue and matching services over fresh stores, on a manual clock.
struct Rig {
    clock: Arc<ManualClock>,
    queue: QueueService,
    matching: MatchingService,
    /// The policies both services read (changed at run time).
    live: Arc<LiveConfig>,
    /// The queue store, as a worker's pairing protocol sees it.
    store: Arc<dyn QueueStore>,
    durable: Arc<dyn DurableStore>,
    /// Where the durable store is (to break it on purpose).
    durable_url: String,
    /// Blocks and fair-play restrictions, as the admin API sets them.
    relations: RelationService,
    /// A matching service as a node starting afresh on the same stores
    /// would build it.
    restart: Box<dyn Fn() -> MatchingService>,
    /// What the stores need kept (a temp dir, a Redis prefix, a schema).
    _keep: Box<dyn std::any::Any>,
}

/// A rig's stores, what they need kept, and the durable store's URL.
type Stores = (
    Arc<dyn QueueStore>,
    Arc<dyn DurableStore>,
    Box<dyn std::any::Any>,
    String,
);

/// Where a rig keeps its state.
#[derive(Debug, Clone, Copy)]
enum Backend {
    /// In memory and a SQLite file.
    Embedded,
    /// Redis and PostgreSQL (the test's own key prefix and schema).
    Production,
}

impl Rig {
    /// `ratings`: blitz ratings set before the services start.
    async fn new(policy: PoolPolicy, presence_ms: Option<Millis>, ratings: &[(&str, i32)]) -> Self {
        Self::holding(Hold::default(), policy, presence_ms, ratings).await
    }

    /// The same, holding players for a closer partner by `hold`.
    async fn holding(
        hold: Hold,
        policy: PoolPolicy,
        presence_ms: Option<Millis>,
        ratings: &[(&str, i32)],
    ) -> Self {
        Self::build(Backend::Embedded, hold, policy, presence_ms, ratings)
            .await
            .expect("embedded stores")
    }

    /// A rig on `backend`, or `None` (skip) when its servers are not there
    /// (in CI, that fails instead).
    async fn on(backend: Backend, policy: PoolPolicy, ratings: &[(&str, i32)]) -> Option<Self> {
        Self::build(backend, Hold::default(), policy, None, ratings).await
    }

    async fn build(
        backend: Backend,
        hold: Hold,
        policy: PoolPolicy,
        presence_ms: Option<Millis>,
        ratings: &[(&str, i32)],
    ) -> Option<Self> {
        let clock = ManualClock::at(T0);
        let (store, durable, keep, durable_url): Stores = match backend {
            Backend::Embedded => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("rules.db").display());
                let sqlite = SqliteStore::connect(&url).await.unwrap();
                sqlite.migrate().await.unwrap();
                (
                    Arc::new(MemoryQueueStore::new()),
                    Arc::new(sqlite),
                    Box::new(dir),
                    url,
                )
            }
            Backend::Production => {
                let prefix = support::RedisPrefix::create().await?;
                let schema = support::PgSchema::create().await?;
                let redis = RedisQueueStore::connect(
                    &support::redis_url(),
                    false,
                    &prefix.prefix,
                    3_600_000,
                )
                .await
                .unwrap();
                let url = schema.url();
                let pg = PgStore::connect(&url).await.unwrap();
                pg.migrate().await.unwrap();
                (
                    Arc::new(redis),
                    Arc::new(pg),
                    Box::new((prefix, schema)),
                    url,
                )
            }
        };
        for (user, rating) in ratings {
            let update = Ratings::default().with(RatingPool::standard(Speed::Blitz), *rating);
            RatingStore::set_ratings(&*durable, &tenant(), &UserId::parse(user).unwrap(), &update)
                .await
                .unwrap();
        }
        store.mark_guards_intact().await.unwrap();
        let breaker = Arc::new(CircuitBreaker::new(5, 10_000));
        let games = Arc::new(GuardedGameCreator::new(
            Arc::new(LocalGameCreator),
            breaker.clone(),
            clock.clone(),
        ));
        let backlog = Arc::new(Backlog::new(Duration::ZERO));
        let live = Arc::new(
            LiveConfig::new(LiveDefaults::of_policy(policy), durable.clone())
                .with_clock(clock.clone()),
        );
        let guards = Guards::new(store.clone(), durable.clone(), GUARD_MS, clock.clone());
        let restart: Box<dyn Fn() -> MatchingService> = {
            let (store, durable, breaker, backlog, clock, live) = (
                store.clone(),
                durable.clone(),
                breaker.clone(),
                backlog.clone(),
                clock.clone(),
                live.clone(),
            );
            Box::new(move || {
                MatchingService::new(
                    (store.clone(), store.clone()),
                    durable.clone(),
                    games.clone(),
                    breaker.clone(),
                    live.clone(),
                    MatchingLimits {
                        pairs_per_batch: 100,
                        reservation_ms: 30_000,
                        guard_ms: GUARD_MS,
                        presence_ms,
                    },
                    backlog.clone(),
                )
                .with_clock(clock.clone())
                .with_hold(hold)
            })
        };
        let matching = restart();
        let queue = QueueService {
            store: store.clone(),
            stats: store.clone(),
            durable: durable.clone(),
            ratings: RatingService::preloaded(durable.clone()).await.unwrap(),
            live: live.clone(),
            signal: Arc::new(PoolSignal::new()),
            breaker,
            announcer: None,
            guards,
            backlog,
            estimates: Default::default(),
            limits: QueueLimits {
                guard_ms: GUARD_MS,
                idempotency_ms: 86_400_000,
                metadata_max_bytes: 4_096,
                no_show_cooldown_ms: NO_SHOW_COOLDOWN_MS,
            },
            clock: clock.clone(),
        };
        Some(Self {
            relations: RelationService::new(durable.clone(), live.clone(), clock.clone()),
            clock,
            queue,
            matching,
            live,
            store,
            durable,
            durable_url,
            restart,
            _keep: keep,
        })
    }

    async fn join(&self, user: &str) -> Result<QueueEntryId, ServiceError> {
        self.join_in(user, POOL).await
    }

    async fn join_in(&self, user: &str, pool: &str) -> Result<QueueEntryId, ServiceError> {
        self.join_with(user, pool, None).await
    }

    /// Joins `pool` with the player's own rating range, if given.
    async fn join_with(
        &self,
        user: &str,
        pool: &str,
        rating_range: Option<(i64, i64)>,
    ) -> Result<QueueEntryId, ServiceError> {
        let join = Join {
            pool: pool.parse::<PoolKey>().unwrap(),
            client_metadata: None,
            request_id: None,
            rating_range: rating_range
                .map(|(lo, hi)| matchmaking_api::domain::RatingRange::new(lo, hi).unwrap()),
            also: Vec::new(),
        };
        Ok(self.queue.join(&who(user), join).await?.entry.id)
    }

    /// Joins `pool` and, at once, the same pool in each of `also` (other
    /// time controls of its speed).
    async fn join_several(
        &self,
        user: &str,
        pool: &str,
        also: &[&str],
    ) -> Result<QueueEntryId, ServiceError> {
        let join = Join {
            pool: pool.parse::<PoolKey>().unwrap(),
            client_metadata: None,
            request_id: None,
            rating_range: None,
            also: also.iter().map(|tc| tc.parse().unwrap()).collect(),
        };
        Ok(self.queue.join(&who(user), join).await?.entry.id)
    }

    /// alice and bob join and are matched at once: alice's entry and
    /// their game.
    async fn alice_plays_bob(&self) -> (QueueEntryId, GameId) {
        let alice = self.join("alice").await.unwrap();
        self.join("bob").await.unwrap();
        assert_eq!(self.pass().await, matched(1));
        let game = self
            .queue
            .status(&who("alice"), &alice)
            .await
            .unwrap()
            .game_id
            .unwrap();
        (alice, game)
    }

    async fn status(&self, user: &str, id: &QueueEntryId) -> EntryStatus {
        self.queue.status(&who(user), id).await.unwrap().status
    }

    async fn pass(&self) -> PassReport {
        self.pass_of(POOL).await
    }

    async fn pass_of(&self, pool: &str) -> PassReport {
        self.matching.run_pool(&pool_ref(pool)).await.unwrap()
    }

    fn advance(&self, ms: Millis) {
        self.clock.advance(ms);
    }
}

fn pool_ref(pool: &str) -> PoolRef {
    PoolRef {
        tenant_id: tenant(),
        key: pool.parse().unwrap(),
    }
}

fn tenant() -> TenantId {
    TenantId::parse("t1").unwrap()
}

fn who(user: &str) -> Identity {
    Identity {
        tenant_id: tenant(),
        user_id: UserId::parse(user).unwrap(),
        username: None,
        roles: Vec::new(),
    }
}

fn matched(pairs: usize) -> PassReport {
    PassReport {
        matched_pairs: pairs,
        ..PassReport::default()
    }
}

#[tokio::test]
async fn a_200_point_gap_matches_at_the_fourth_widening_step_not_before() {
    // Window 100, +25 every 10 s: both windows reach 200 after 40 s.
    let rig = Rig::new(PoolPolicy::default(), None, &[("bob", 1700)]).await;
    let alice = rig.join("alice").await.unwrap();
    rig.join("bob").await.unwrap();
    assert_eq!(rig.pass().await, matched(0));
    rig.advance(39_999);
    assert_eq!(rig.pass().await, matched(0));
    assert_eq!(rig.status("alice", &alice).await, EntryStatus::Searching);
    rig.advance(1);
    assert_eq!(rig.pass().await, matched(1));
    assert_eq!(rig.status("alice", &alice).await, EntryStatus::Matched);
}

/// Forty players a second apart (ten a second), in pairs of equal rating
/// spread over 1200..1800, each pair matched as it arrives: the pool's
/// flow is busy. Then alice (1500) and bob (1560) wait, 60 points apart.
async fn busy_pool_then_two_60_points_apart(hold: Hold) -> (Rig, QueueEntryId, QueueEntryId) {
    let mut ratings: Vec<(String, i32)> = (0..40)
        .map(|k| (format!("warm{k}"), 1200 + (k / 2) * 30))
        .collect();
    ratings.push(("bob".into(), 1560));
    ratings.push(("carol".into(), 1503));
    let ratings: Vec<(&str, i32)> = ratings.iter().map(|(u, r)| (u.as_str(), *r)).collect();
    let rig = Rig::holding(hold, PoolPolicy::default(), None, &ratings).await;
    for (user, _) in &ratings[..40] {
        rig.join(user).await.unwrap();
        rig.pass().await;
        rig.advance(100);
    }
    let alice = rig.join("alice").await.unwrap();
    rig.advance(100);
    let bob = rig.join("bob").await.unwrap();
    (rig, alice, bob)
}

#[tokio::test]
async fn a_busy_pool_holds_a_wide_pair_for_a_closer_partner_who_then_gets_the_match() {
    let (rig, alice, bob) = busy_pool_then_two_60_points_apart(Hold::default()).await;
    // 60 points is inside both windows, but at ten arrivals a second a
    // closer partner is likely within the hold: nobody is matched.
    assert_eq!(rig.pass().await, matched(0));
    rig.advance(1_000);
    assert_eq!(rig.pass().await, matched(0));
    // The explain says why: bob is compatible, but alice is held to a
    // narrower gap than 60 for now.
    let why = rig
        .matching
        .explain(&*rig.store, &pool_ref(POOL), alice)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((why.source, why.outcome), ("last_pass", "unmatched"));
    let held = why.hold_gap.expect("alice is held");
    assert!(held < 60 && held < why.window, "{held} {}", why.window);
    let bob_verdict = why.candidates.iter().find(|c| c.user_id.as_str() == "bob");
    assert_eq!(
        bob_verdict.map(|c| (c.gap, c.verdict)),
        Some((60, "compatible"))
    );
    // carol (1503) arrives: alice gets the closer partner, bob waits on.
    rig.join("carol").await.unwrap();
    assert_eq!(rig.pass().await, matched(1));
    assert_eq!(rig.status("alice", &alice).await, EntryStatus::Matched);
    assert_eq!(rig.status("bob", &bob).await, EntryStatus::Searching);
}

#[tokio::test]
async fn a_hold_never_outlasts_its_maximum() {
    let hold = Hold::default();
    let (rig, alice, _) = busy_pool_then_two_60_points_apart(hold).await;
    assert_eq!(rig.pass().await, matched(0));
    // alice arrived 100 ms before bob: once bob's hold lapses too, the
    // window alone decides.
    rig.advance(hold.max_ms - 1);
    assert_eq!(rig.pass().await, matched(0));
    rig.advance(1);
    assert_eq!(rig.pass().await, matched(1));
    assert_eq!(rig.status("alice", &alice).await, EntryStatus::Matched);
}

#[tokio::test]
async fn a_restarted_node_forgets_the_flow_holds_nobody_and_matches_nobody_twice() {
    let (mut rig, alice, bob) = busy_pool_then_two_60_points_apart(Hold::default()).await;
    assert_eq!(rig.pass().await, matched(0));
    // The node dies; another starts on the same stores. The flow lived in
    // memory only: it holds nobody until it has seen enough arrivals, so
    // the waiting pair is made at once, and only once.
    rig.matching = (rig.restart)();
    assert_eq!(rig.pass().await, matched(1));
    assert_eq!(rig.status("alice", &alice).await, EntryStatus::Matched);
    assert_eq!(rig.status("bob", &bob).await, EntryStatus::Matched);
    assert_eq!(rig.pass().await, matched(0));
    rig.join("carol").await.unwrap();
    assert_eq!(rig.pass().await, matched(0));
}

#[tokio::test]
async fn with_no_hold_a_compatible_pair_is_matched_at_once() {
    let hold = Hold {
        cost_per_second: 0.0,
        ..Hold::default()
    };
    let (rig, alice, _) = busy_pool_then_two_60_points_apart(hold).await;
    assert_eq!(rig.pass().await, matched(1));
    assert_eq!(rig.status("alice", &alice).await, EntryStatus::Matched);
}

#[tokio::test]
async fn a_gap_beyond_the_max_never_matches_however_long_they_wait() {
    let policy = PoolPolicy {
        max_gap: 150,
        ..PoolPolicy::default()
    };
    let rig = Rig::new(policy, None, &[("bob", 1700)]).await;
    let alice = rig.join("alice").await.unwrap();
    rig.join("bob").await.unwrap();
    // Just short of the time-out (10 minutes).
    rig.advance(599_000);
    assert_eq!(rig.pass().await, matched(0));
    assert_eq!(rig.status("alice", &alice).await, EntryStatus::Searching);
}

#[tokio::test]
async fn an_entry_times_out_once_it_has_waited_the_max_queue_time_and_may_join_again() {
    let rig = Rig::new(PoolPolicy::default(), None, &[]).await;
    let alice = rig.join("alice").await.unwrap();
    rig.advance(599_999);
    assert_eq!(rig.pass().await, matched(0));
    assert_eq!(rig.status("alice", &alice).await, EntryStatus::Searching);
    rig.advance(1);
    assert_eq!(
        rig.pass().await,
        PassReport {
            timed_out: 1,
            ..PassReport::default()
        }
    );
    assert_eq!(rig.status("alice", &alice).await, EntryStatus::TimedOut);
    rig.join("alice").await.unwrap();
}

#[tokio::test]
async fn an_entry_not_heard_from_within_the_presence_time_is_dropped() {
    let rig = Rig::new(PoolPolicy::default(), Some(30_000), &[("bob", 2500)]).await;
    let alice = rig.join("alice").await.unwrap();
    let bob = rig.join("bob").await.unwrap();
    // bob polls every 20 s; alice never does.
    for _ in 0..3 {
        rig.advance(20_000);
        assert_eq!(rig.status("bob", &bob).await, EntryStatus::Searching);
        rig.pass().await;
    }
    // (Reading alice's status now would count as hearing from her: the
    // pass above already ended her entry at 40 s.) She is cancelled as
    // absent, not timed out.
    assert_eq!(rig.status("alice", &alice).await, EntryStatus::Cancelled);
    let view = rig.queue.status(&who("alice"), &alice).await.unwrap();
    assert_eq!(view.reason, Some(EndReason::Absent));
    assert_eq!(rig.status("bob", &bob).await, EntryStatus::Searching);
}

#[tokio::test]
async fn the_active_game_guard_holds_until_its_time_then_lapses() {
    let rig = Rig::new(PoolPolicy::default(), None, &[]).await;
    rig.join("alice").await.unwrap();
    rig.join("bob").await.unwrap();
    assert_eq!(rig.pass().await, matched(1));
    rig.advance(GUARD_MS - 1);
    assert!(matches!(
        rig.join("alice").await,
        Err(ServiceError::ActiveGameExists)
    ));
    rig.advance(2);
    rig.join("alice").await.unwrap();
}

#[tokio::test]
async fn a_game_reported_finished_frees_its_players_at_once() {
    let rig = Rig::new(PoolPolicy::default(), None, &[]).await;
    let alice = rig.join("alice").await.unwrap();
    rig.join("bob").await.unwrap();
    rig.pass().await;
    let game = rig
        .queue
        .status(&who("alice"), &alice)
        .await
        .unwrap()
        .game_id
        .unwrap();
    rig.advance(1_000);
    let released = rig.queue.finish_game(&tenant(), &game).await.unwrap();
    assert_eq!(released.len(), 2);
    rig.join("alice").await.unwrap();
    rig.join("bob").await.unwrap();
}

fn patch(window: i32, gap: i32) -> PolicyPatch {
    PolicyPatch {
        initial_rating_window: Some(window),
        max_rating_gap: Some(gap),
        ..PolicyPatch::default()
    }
}

#[tokio::test]
async fn a_policy_set_at_run_time_is_used_by_the_next_pass_pool_over_tenant() {
    let rig = Rig::new(PoolPolicy::default(), None, &[("bob", 1700)]).await;
    let alice = rig.join("alice").await.unwrap();
    rig.join("bob").await.unwrap();
    // 200 points apart, a window of 100: no match.
    assert_eq!(rig.pass().await.matched_pairs, 0);
    // The tenant's policy opens the window to 150: still none.
    rig.live
        .change("ops", &tenant(), None, Some(patch(150, 500)))
        .await
        .unwrap();
    assert_eq!(rig.pass().await.matched_pairs, 0);
    // The pool's own policy opens it to 250: matched at once, no time
    // passed.
    let pool: PoolKey = POOL.parse().unwrap();
    let before = rig
        .live
        .change("ops", &tenant(), Some(pool), Some(patch(250, 500)))
        .await
        .unwrap();
    assert_eq!(before, None);
    assert_eq!(rig.pass().await.matched_pairs, 1);
    assert_eq!(rig.status("alice", &alice).await, EntryStatus::Matched);
    // Every change is in the audit log with who made it, before and after.
    let log = rig
        .queue
        .durable
        .events_about(&format!("policy:t1/{POOL}"), 10)
        .await
        .unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].kind, "policy_changed");
    assert_eq!(log[0].detail["actor"], "ops");
    assert_eq!(log[0].detail["before"], serde_json::Value::Null);
    assert_eq!(log[0].detail["after"]["initial_rating_window"], 250);
}

#[tokio::test]
async fn a_policy_that_cannot_run_is_refused_naming_its_field_and_pool() {
    let rig = Rig::new(PoolPolicy::default(), None, &[]).await;
    let pool: PoolKey = POOL.parse().unwrap();
    let refused = |r: Result<Option<PolicyPatch>, ServiceError>| match r {
        Err(ServiceError::InvalidRequest(why)) => why,
        other => panic!("{other:?}"),
    };
    let why = refused(
        rig.live
            .change("ops", &tenant(), Some(pool), Some(patch(300, 200)))
            .await,
    );
    assert!(why.starts_with("max_rating_gap"), "{why}");
    // The pool narrows its gap to 300; the tenant may then not raise its
    // window past it: the pool that would break is named.
    let narrow = PolicyPatch {
        max_rating_gap: Some(300),
        ..PolicyPatch::default()
    };
    rig.live
        .change("ops", &tenant(), Some(pool), Some(narrow))
        .await
        .unwrap();
    let why = refused(
        rig.live
            .change("ops", &tenant(), None, Some(patch(400, 500)))
            .await,
    );
    assert!(
        why.contains("max_rating_gap") && why.contains(POOL),
        "{why}"
    );
    let bad_interval = PolicyPatch {
        rating_window_widening_interval: Some(0.0),
        ..PolicyPatch::default()
    };
    let why = refused(
        rig.live
            .change("ops", &tenant(), None, Some(bad_interval))
            .await,
    );
    assert!(why.starts_with("rating_window_widening_interval"), "{why}");
    // Nothing refused was stored.
    assert_eq!(rig.live.tenant_policy(&tenant()), PoolPolicy::default());
}

const EU: &str = "standard_5+0_rated_EU";
const NA: &str = "standard_5+0_rated_NA";
const GLOBAL: &str = "standard_5+0_rated_GLOBAL";

/// Region fallback after `seconds` to `regions` (comma-separated).
fn fallback(seconds: f64, regions: &str) -> PolicyPatch {
    PolicyPatch {
        region_fallback_seconds: Some(seconds),
        region_fallback_regions: Some(regions.parse().unwrap()),
        ..PolicyPatch::default()
    }
}

impl Rig {
    /// The tenant's policy: fallback after `seconds` to `regions`.
    async fn fall_back(&self, seconds: f64, regions: &str) {
        self.live
            .change("ops", &tenant(), None, Some(fallback(seconds, regions)))
            .await
            .unwrap();
    }

    async fn entry(&self, user: &str, id: &QueueEntryId) -> EntryView {
        self.queue.status(&who(user), id).await.unwrap()
    }

    /// Both entries matched to each other in one game, on record, and both
    /// players kept out of the queue by it.
    async fn assert_matched_together(&self, a: (&str, &QueueEntryId), b: (&str, &QueueEntryId)) {
        let (ea, eb) = (self.entry(a.0, a.1).await, self.entry(b.0, b.1).await);
        assert_eq!(ea.status, EntryStatus::Matched, "{}", a.0);
        assert_eq!(eb.status, EntryStatus::Matched, "{}", b.0);
        assert_eq!(ea.game_id, eb.game_id);
        assert_eq!(ea.opponent.unwrap().user_id.as_str(), b.0);
        let record = self
            .queue
            .durable
            .match_by_entry(&tenant(), a.1)
            .await
            .unwrap()
            .expect("a match on record");
        assert_eq!(Some(record.game_id), ea.game_id);
        for user in [a.0, b.0] {
            let again = self.join_in(user, POOL).await;
            assert!(
                matches!(again, Err(ServiceError::ActiveGameExists)),
                "{user}: {again:?}"
            );
        }
    }
}

async fn region_fallback_pairs_across_regions_only_after_its_wait(backend: Backend) {
    let Some(rig) = Rig::on(backend, PoolPolicy::default(), &[("bob", 1520)]).await else {
        return;
    };
    rig.fall_back(20.0, "EU,NA").await;
    // bob waits in NA from 0 s, alice in EU from 15 s: each pass checks
    // its own entry's wait and the other region's entry's.
    let bob = rig.join_in("bob", NA).await.unwrap();
    rig.advance(15_000);
    let alice = rig.join_in("alice", EU).await.unwrap();
    for pool in [EU, NA] {
        assert_eq!(rig.pass_of(pool).await, matched(0), "{pool}");
    }
    // bob is past his 20 s, alice is not.
    rig.advance(19_999);
    for pool in [EU, NA] {
        assert_eq!(rig.pass_of(pool).await, matched(0), "{pool}");
    }
    rig.advance(1);
    assert_eq!(rig.pass_of(EU).await, matched(1));
    assert_eq!(rig.pass_of(NA).await, matched(0), "matched once");
    rig.assert_matched_together(("alice", &alice), ("bob", &bob))
        .await;
    // The match is the EU pool's (the pass that made it); the record says
    // bob waited in NA.
    let record = rig
        .queue
        .durable
        .match_by_entry(&tenant(), &bob)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.pool.to_string(), EU);
    let bob_side = [&record.white, &record.black]
        .into_iter()
        .find(|s| s.user_id.as_str() == "bob")
        .unwrap();
    assert_eq!(bob_side.pool_in(record.pool).to_string(), NA);
}

async fn a_fallback_entry_takes_a_partner_of_its_own_region_first(backend: Backend) {
    let Some(rig) = Rig::on(
        backend,
        PoolPolicy::default(),
        &[
            ("bob", 1505),
            ("carol", 1540),
            ("dave", 1510),
            ("erin", 1500),
        ],
    )
    .await
    else {
        return;
    };
    rig.fall_back(10.0, "EU,NA").await;
    let alice = rig.join_in("alice", EU).await.unwrap();
    let bob = rig.join_in("bob", NA).await.unwrap();
    rig.advance(30_000);
    // carol (EU, 40 points off) arrives: alice takes her over bob (NA, 5
    // points off), though both have waited past the fallback.
    let carol = rig.join_in("carol", EU).await.unwrap();
    assert_eq!(rig.pass_of(EU).await, matched(1));
    rig.assert_matched_together(("alice", &alice), ("carol", &carol))
        .await;
    assert_eq!(rig.entry("bob", &bob).await.status, EntryStatus::Searching);
    // Nor is a visitor taken from a partner of its own region: erin (EU)
    // waits past the fallback; dave joins bob in NA.
    let erin = rig.join_in("erin", EU).await.unwrap();
    rig.advance(30_000);
    let dave = rig.join_in("dave", NA).await.unwrap();
    assert_eq!(rig.pass_of(EU).await, matched(0));
    assert_eq!(rig.pass_of(NA).await, matched(1));
    rig.assert_matched_together(("bob", &bob), ("dave", &dave))
        .await;
    assert_eq!(
        rig.entry("erin", &erin).await.status,
        EntryStatus::Searching
    );
}

async fn fallback_needs_both_regions_to_accept_and_global_accepts_every_region(backend: Backend) {
    let Some(rig) = Rig::on(backend, PoolPolicy::default(), &[]).await else {
        return;
    };
    rig.fall_back(10.0, "NA,GLOBAL").await;
    // NA's own policy falls back nowhere.
    rig.live
        .change(
            "ops",
            &tenant(),
            Some(NA.parse().unwrap()),
            Some(PolicyPatch {
                region_fallback_regions: Some(RegionSet::default()),
                ..PolicyPatch::default()
            }),
        )
        .await
        .unwrap();
    let alice = rig.join_in("alice", EU).await.unwrap();
    let bob = rig.join_in("bob", NA).await.unwrap();
    rig.advance(60_000);
    for pool in [EU, NA] {
        assert_eq!(rig.pass_of(pool).await, matched(0), "{pool}");
    }
    // A GLOBAL player plays anywhere, from the moment they join.
    let carol = rig.join_in("carol", GLOBAL).await.unwrap();
    assert_eq!(rig.pass_of(EU).await, matched(1));
    rig.assert_matched_together(("alice", &alice), ("carol", &carol))
        .await;
    assert_eq!(rig.entry("bob", &bob).await.status, EntryStatus::Searching);
}

/// Of the willing players of other regions, the closest within both
/// windows.
async fn a_lonely_entry_takes_the_closest_willing_partner(backend: Backend) {
    // Windows that never widen: 100 points.
    let policy = PoolPolicy {
        widening_amount: 0,
        ..PoolPolicy::default()
    };
    let ratings = [("bob", 1410), ("carol", 1560), ("dave", 1700)];
    let Some(rig) = Rig::on(backend, policy, &ratings).await else {
        return;
    };
    rig.fall_back(10.0, "EU,NA").await;
    let alice = rig.join_in("alice", EU).await.unwrap();
    let mut na = Vec::new();
    for (user, _) in ratings {
        na.push((user, rig.join_in(user, NA).await.unwrap()));
    }
    rig.advance(10_000);
    assert_eq!(rig.pass_of(EU).await, matched(1));
    // carol, 60 points off; bob is 90 off, dave out of reach.
    rig.assert_matched_together(("alice", &alice), ("carol", &na[1].1))
        .await;
    for (user, id) in [na[0], na[2]] {
        assert_eq!(rig.entry(user, &id).await.status, EntryStatus::Searching);
    }
}

/// One entry of a cross-region pair reserved by a worker that then died
/// (the second reservation never happened): after the deadline recovery
/// puts it back, and the pair is made once.
async fn a_worker_dying_between_the_two_reservations_of_a_cross_region_pair_holds_nobody(
    backend: Backend,
) {
    let Some(rig) = Rig::on(backend, PoolPolicy::default(), &[]).await else {
        return;
    };
    rig.fall_back(10.0, "EU,NA").await;
    let alice = rig.join_in("alice", EU).await.unwrap();
    let bob = rig.join_in("bob", NA).await.unwrap();
    rig.advance(10_000);
    let half = Reservation {
        match_id: MatchId::generate(),
        a: alice,
        b: alice,
    };
    let now = T0 + 10_000;
    let ok = rig
        .store
        .reserve(&pool_ref(EU), &[half], now + 30_000, now)
        .await
        .unwrap();
    assert_eq!(ok, vec![true]);
    // alice is held by the dead worker: nobody is matched meanwhile.
    for pool in [EU, NA] {
        assert_eq!(rig.pass_of(pool).await, matched(0), "{pool}");
    }
    assert_eq!(rig.matching.recover_stale().await.unwrap(), 0);
    rig.advance(30_001);
    assert_eq!(rig.matching.recover_stale().await.unwrap(), 1);
    assert_eq!(rig.pass_of(NA).await, matched(1));
    assert_eq!(rig.pass_of(EU).await, matched(0));
    rig.assert_matched_together(("bob", &bob), ("alice", &alice))
        .await;
}

/// A worker that recorded a cross-region match and died before marking
/// the entries: recovery marks each in its own pool, once.
async fn a_cross_region_match_recorded_but_not_committed_is_finished_in_both_pools(
    backend: Backend,
) {
    let Some(rig) = Rig::on(backend, PoolPolicy::default(), &[]).await else {
        return;
    };
    let alice = rig.join_in("alice", EU).await.unwrap();
    let bob = rig.join_in("bob", NA).await.unwrap();
    let now = T0 + 1_000;
    rig.advance(1_000);
    let match_id = MatchId::generate();
    for (pool, id) in [(EU, alice), (NA, bob)] {
        let r = Reservation {
            match_id,
            a: id,
            b: id,
        };
        let ok = rig
            .store
            .reserve(&pool_ref(pool), &[r], now + 30_000, now)
            .await
            .unwrap();
        assert_eq!(ok, vec![true]);
    }
    let side = |user: &str, id, region: Option<&str>| MatchSide {
        user_id: UserId::parse(user).unwrap(),
        username: None,
        rating: 1500,
        entry_id: Some(id),
        region: region.map(|r| r.parse().unwrap()),
        time_control: None,
    };
    let record = MatchRecord {
        match_id,
        tenant_id: tenant(),
        game_id: GameId::for_match(&match_id),
        white: side("alice", alice, None),
        black: side("bob", bob, Some("NA")),
        pool: EU.parse().unwrap(),
        created_at: now,
        source: MatchSource::Queue,
        finished_at: None,
    };
    let claims = rig
        .queue
        .durable
        .insert_matches(std::slice::from_ref(&record), &[], now - GUARD_MS)
        .await
        .unwrap();
    assert!(claims[0].is_stored());
    rig.advance(30_001);
    assert!(rig.matching.recover_stale().await.unwrap() >= 1);
    assert_eq!(rig.matching.recover_stale().await.unwrap(), 0);
    rig.assert_matched_together(("alice", &alice), ("bob", &bob))
        .await;
    assert_eq!(rig.entry("bob", &bob).await.game_id, Some(record.game_id));
    for pool in [EU, NA] {
        assert_eq!(rig.pass_of(pool).await, matched(0), "{pool}");
    }
}

/// The EU and NA passes run at once (two workers), each finding the same
/// cross-region pairs: every player ends in exactly one game, on record.
async fn two_regions_passing_at_once_match_everyone_once(backend: Backend) {
    // Seven per region, 501 points apart (no pair within a region); each
    // EU player has an NA partner 5 points away.
    let ratings: Vec<(String, i32)> = (0..7)
        .flat_map(|k| {
            let r = 100 + 501 * k;
            [(format!("eu{k}"), r), (format!("na{k}"), r + 5)]
        })
        .collect();
    let ratings: Vec<(&str, i32)> = ratings.iter().map(|(u, r)| (u.as_str(), *r)).collect();
    let Some(rig) = Rig::on(backend, PoolPolicy::default(), &ratings).await else {
        return;
    };
    rig.fall_back(5.0, "EU,NA").await;
    let mut ids = Vec::new();
    for (user, _) in &ratings {
        let pool = if user.starts_with("eu") { EU } else { NA };
        ids.push((*user, rig.join_in(user, pool).await.unwrap()));
    }
    rig.advance(5_000);
    let other = (rig.restart)();
    let (eu_pool, na_pool) = (pool_ref(EU), pool_ref(NA));
    let mut made = Vec::new();
    for _ in 0..3 {
        let (eu, na) = tokio::join!(rig.matching.run_pool(&eu_pool), other.run_pool(&na_pool));
        made.push((eu.unwrap().matched_pairs, na.unwrap().matched_pairs));
    }
    let total: usize = made.iter().map(|(a, b)| a + b).sum();
    assert_eq!(total, 7, "each pair made once: {made:?}");
    let mut games = std::collections::HashMap::new();
    for (user, id) in &ids {
        let e = rig.entry(user, id).await;
        assert_eq!(e.status, EntryStatus::Matched, "{user}");
        let game = e.game_id.unwrap();
        games.entry(game).or_insert_with(Vec::new).push(*user);
    }
    assert_eq!(games.len(), 7);
    for (game, players) in &games {
        assert_eq!(players.len(), 2, "{game}: {players:?}");
        let (a, b) = (players[0], players[1]);
        assert_eq!(a[2..], b[2..], "partners of one rating: {players:?}");
    }
    for (user, id) in &ids {
        let record = rig
            .queue
            .durable
            .match_by_entry(&tenant(), id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{user}: no record"));
        assert!(games.contains_key(&record.game_id));
    }
}

/// The opponent of `user`'s entry `id`, once matched.
async fn opponent_of(rig: &Rig, user: &str, id: &QueueEntryId) -> Option<String> {
    let view = rig.queue.status(&who(user), id).await.unwrap();
    view.opponent.map(|o| o.user_id.to_string())
}

fn uid(user: &str) -> UserId {
    UserId::parse(user).unwrap()
}

impl Rig {
    async fn block(&self, user: &str, blocked: &str, on: bool) {
        self.relations
            .set_block("ops", &tenant(), (&uid(user), &uid(blocked)), on)
            .await
            .unwrap();
    }

    async fn restrict(&self, user: &str, on: bool) {
        self.relations
            .set_restricted("ops", &tenant(), &uid(user), on.then_some(None))
            .await
            .unwrap();
    }
}

/// A block set while both wait, in either direction, keeps the two apart
/// however wide their windows grow, until it is lifted.
async fn a_block_either_way_keeps_two_players_apart_until_lifted(backend: Backend) {
    let Some(rig) = Rig::on(backend, PoolPolicy::default(), &[("bob", 1600)]).await else {
        return;
    };
    let alice = rig.join("alice").await.unwrap();
    rig.join("bob").await.unwrap();
    rig.block("alice", "bob", true).await;
    rig.advance(60_000);
    assert_eq!(rig.pass().await, matched(0));
    // bob's own block of alice still stands when alice lifts hers.
    rig.block("bob", "alice", true).await;
    rig.block("alice", "bob", false).await;
    rig.advance(10_000);
    assert_eq!(rig.pass().await, matched(0));
    assert_eq!(rig.status("alice", &alice).await, EntryStatus::Searching);
    rig.block("bob", "alice", false).await;
    assert_eq!(rig.pass().await, matched(1));
    assert_eq!(
        opponent_of(&rig, "alice", &alice).await.as_deref(),
        Some("bob")
    );
}

/// The closest pairs are barred: the same pass pairs everyone otherwise.
async fn a_blocked_closest_pair_is_paired_otherwise_in_the_same_pass(backend: Backend) {
    let ratings = [
        ("alice", 1500),
        ("bob", 1505),
        ("carol", 1560),
        ("dave", 1565),
    ];
    let Some(rig) = Rig::on(backend, PoolPolicy::default(), &ratings).await else {
        return;
    };
    rig.block("alice", "bob", true).await;
    rig.block("dave", "carol", true).await;
    let mut ids = Vec::new();
    for (user, _) in ratings {
        ids.push(rig.join(user).await.unwrap());
    }
    assert_eq!(rig.pass().await, matched(2));
    let alice_met = opponent_of(&rig, "alice", &ids[0]).await.unwrap();
    let bob_met = opponent_of(&rig, "bob", &ids[1]).await.unwrap();
    assert!(
        alice_met != "bob" && bob_met != "alice",
        "{alice_met} {bob_met}"
    );
    assert_ne!(
        opponent_of(&rig, "carol", &ids[2]).await.as_deref(),
        Some("dave")
    );
}

/// Restricted players meet only each other, even when a player who is not
/// restricted is closer; one alone waits without holding anyone else up.
async fn restricted_players_meet_only_each_other(backend: Backend) {
    let ratings = [
        ("r1", 1500),
        ("n1", 1502),
        ("r2", 1540),
        ("n2", 1545),
        ("r3", 1520),
    ];
    let Some(rig) = Rig::on(backend, PoolPolicy::default(), &ratings).await else {
        return;
    };
    for user in ["r1", "r2", "r3"] {
        rig.restrict(user, true).await;
    }
    let mut ids = Vec::new();
    for (user, _) in &ratings[..4] {
        ids.push(rig.join(user).await.unwrap());
    }
    assert_eq!(rig.pass().await, matched(2));
    assert_eq!(
        opponent_of(&rig, "r1", &ids[0]).await.as_deref(),
        Some("r2")
    );
    assert_eq!(
        opponent_of(&rig, "n1", &ids[1]).await.as_deref(),
        Some("n2")
    );
    // r3 alone among players who are not restricted: n3 and n4 are paired
    // at once, r3 waits; lifted, r3 is paired like anyone.
    let r3 = rig.join("r3").await.unwrap();
    let n3 = rig.join("n3").await.unwrap();
    rig.join("n4").await.unwrap();
    assert_eq!(rig.pass().await, matched(1));
    assert_eq!(opponent_of(&rig, "n3", &n3).await.as_deref(), Some("n4"));
    rig.advance(60_000);
    assert_eq!(rig.pass().await, matched(0));
    rig.join("n5").await.unwrap();
    assert_eq!(rig.pass().await, matched(0));
    rig.restrict("r3", false).await;
    assert_eq!(rig.pass().await, matched(1));
    assert_eq!(opponent_of(&rig, "r3", &r3).await.as_deref(), Some("n5"));
}

/// A restriction another node wrote, which this node has not read yet:
/// the pass asks the durable store about the players it paired, so the
/// pair is barred all the same.
async fn a_restriction_this_node_has_not_read_yet_still_bars_the_pair(backend: Backend) {
    let Some(rig) = Rig::on(backend, PoolPolicy::default(), &[]).await else {
        return;
    };
    let r1 = rig.join("r1").await.unwrap();
    rig.join("n1").await.unwrap();
    let audit = matchmaking_api::store::AuditEvent {
        at: T0,
        tenant_id: tenant(),
        kind: "restricted_changed".into(),
        subject: "restricted:t1/r1".into(),
        detail: serde_json::json!({}),
    };
    rig.durable
        .change_config(
            &tenant(),
            matchmaking_api::store::ConfigScope::Restricted(uid("r1")),
            Some(serde_json::json!({})),
            audit,
        )
        .await
        .unwrap();
    assert!(!rig.live.restricted(&tenant()).contains(&uid("r1")));
    assert_eq!(rig.pass().await, matched(0));
    assert_eq!(rig.status("r1", &r1).await, EntryStatus::Searching);
    rig.live.load().await.unwrap();
    rig.join("r2").await.unwrap();
    rig.restrict("r2", true).await;
    assert_eq!(rig.pass().await, matched(1));
    assert_eq!(opponent_of(&rig, "r1", &r1).await.as_deref(), Some("r2"));
}

/// The pass cannot read the blocks (the table cut from under it): it
/// matches nobody, everyone keeps waiting, and once the blocks can be read
/// again the pass matches as before.
async fn a_pass_that_cannot_read_the_blocks_matches_nobody(backend: Backend) {
    let Some(rig) = Rig::on(backend, PoolPolicy::default(), &[]).await else {
        return;
    };
    let alice = rig.join("alice").await.unwrap();
    let bob = rig.join("bob").await.unwrap();
    cut_table(&rig.durable_url, "player_blocks", "player_blocks_cut").await;
    assert!(rig.matching.run_pool(&pool_ref(POOL)).await.is_err());
    assert_eq!(rig.status("alice", &alice).await, EntryStatus::Searching);
    assert_eq!(rig.status("bob", &bob).await, EntryStatus::Searching);
    cut_table(&rig.durable_url, "player_blocks_cut", "player_blocks").await;
    assert_eq!(rig.pass().await, matched(1));
    assert_eq!(
        opponent_of(&rig, "alice", &alice).await.as_deref(),
        Some("bob")
    );
}

/// A player's own range holds however wide the windows grow, and only
/// narrows: a partner within it is taken as the window allows.
async fn a_players_own_range_holds_however_wide_the_window_grows(backend: Backend) {
    let ratings = [("bob", 1580), ("carol", 1540), ("dave", 1600)];
    let Some(rig) = Rig::on(backend, PoolPolicy::default(), &ratings).await else {
        return;
    };
    let alice = rig.join_with("alice", POOL, Some((-30, 50))).await.unwrap();
    rig.join("bob").await.unwrap();
    // 80 apart: inside both windows from the start, outside alice's range.
    assert_eq!(rig.pass().await, matched(0));
    rig.advance(500_000);
    assert_eq!(rig.pass().await, matched(0));
    // dave is 100 above: outside her range, 20 from bob: bob takes him.
    rig.join("dave").await.unwrap();
    assert_eq!(rig.pass().await, matched(1));
    assert_eq!(rig.status("alice", &alice).await, EntryStatus::Searching);
    // carol is 40 above: inside.
    rig.join("carol").await.unwrap();
    assert_eq!(rig.pass().await, matched(1));
    assert_eq!(
        opponent_of(&rig, "alice", &alice).await.as_deref(),
        Some("carol")
    );
}

/// With deviation-aware windows, an established player's window stays
/// tighter (half the plain one here) and a provisional player's starts
/// wider (twice); the deviation comes from the ratings table.
async fn an_established_window_stays_tighter_and_a_provisional_one_starts_wider(backend: Backend) {
    let policy = PoolPolicy {
        deviation_reference: 150,
        deviation_min_percent: 50,
        deviation_max_percent: 200,
        ..PoolPolicy::default()
    };
    let Some(rig) = Rig::on(backend, policy, &[]).await else {
        return;
    };
    for (user, rating, rd) in [
        ("ana", 1500, Some(60)),
        ("ben", 1580, Some(60)),
        ("cal", 1500, None),
        ("dan", 1660, Some(350)),
    ] {
        let pool = RatingPool::standard(Speed::Blitz);
        let mut update = Ratings::default().with(pool, rating);
        if let Some(rd) = rd {
            update.set_deviation(pool, rd);
        }
        rig.queue
            .ratings
            .set(&tenant(), &uid(user), &update)
            .await
            .unwrap();
    }
    // 80 apart: inside the plain window (100), outside theirs (50) until it
    // has widened three times (175 · 0.5 ≥ 80).
    let ana = rig.join("ana").await.unwrap();
    rig.join("ben").await.unwrap();
    assert_eq!(rig.pass().await, matched(0));
    rig.advance(29_999);
    assert_eq!(rig.pass().await, matched(0));
    rig.advance(1);
    assert_eq!(rig.pass().await, matched(1));
    assert_eq!(opponent_of(&rig, "ana", &ana).await.as_deref(), Some("ben"));
    // 160 apart, both provisional (cal has no deviation: 350): twice the
    // plain window at once.
    let cal = rig.join("cal").await.unwrap();
    rig.join("dan").await.unwrap();
    assert_eq!(rig.pass().await, matched(1));
    assert_eq!(opponent_of(&rig, "cal", &cal).await.as_deref(), Some("dan"));
}

/// The explain of an entry: before any pass, each other entry with the
/// reason it is kept away (window, restricted, block, own range); after a
/// pass that paired its one compatible partner elsewhere, whom it lost to
/// and by how much score; and the partner's side, matched.
async fn the_explain_says_who_is_kept_away_and_whom_the_pass_preferred(backend: Backend) {
    let ratings = [
        ("ana", 1500),
        ("ben", 1540),
        ("dan", 1900),
        ("eve", 1520),
        ("fay", 1510),
        ("gus", 1530),
    ];
    let Some(rig) = Rig::on(backend, PoolPolicy::default(), &ratings).await else {
        return;
    };
    rig.restrict("eve", true).await;
    rig.block("ana", "fay", true).await;
    let ana = rig.join("ana").await.unwrap();
    for user in ["ben", "dan", "eve", "fay"] {
        rig.join(user).await.unwrap();
    }
    // gus takes only 1520-1540: ana (30 below) is outside.
    let gus = rig.join_with("gus", POOL, Some((-10, 10))).await.unwrap();
    let explain = |id: QueueEntryId| {
        let rig = &rig;
        async move {
            rig.matching
                .explain(&*rig.store, &pool_ref(POOL), id)
                .await
                .unwrap()
                .expect("waiting")
        }
    };
    let verdicts = |e: &matchmaking_api::services::explain::Explanation| {
        let mut v: Vec<(String, &str)> = e
            .candidates
            .iter()
            .map(|c| (c.user_id.to_string(), c.verdict))
            .collect();
        v.sort();
        v
    };
    let before = explain(ana).await;
    assert_eq!((before.source, before.outcome), ("now", "not_passed"));
    assert_eq!(
        (before.window, before.others, before.compatible),
        (100, 5, 1)
    );
    assert_eq!(
        verdicts(&before),
        vec![
            ("ben".into(), "compatible"),
            ("dan".into(), "window"),
            ("eve".into(), "restricted"),
            ("fay".into(), "block"),
            ("gus".into(), "range"),
        ]
    );
    assert_eq!(
        before.excluded.into_iter().collect::<Vec<_>>(),
        vec![("block", 1), ("range", 1), ("restricted", 1), ("window", 1)]
    );
    // Only ben can be paired: with gus (10 apart) rather than ana (40).
    assert_eq!(rig.pass().await, matched(1));
    assert_eq!(opponent_of(&rig, "gus", &gus).await.as_deref(), Some("ben"));
    let after = explain(ana).await;
    assert_eq!((after.source, after.outcome), ("last_pass", "unmatched"));
    let lost: Vec<_> = after
        .lost_to
        .iter()
        .map(|l| (l.user_id.as_str(), l.paired_with.as_str(), l.by))
        .collect();
    assert_eq!(lost, vec![("ben", "gus", 30)]);
    assert_eq!(
        after.lost_to[0].score_with_you + 30,
        after.lost_to[0].their_score
    );
    let won = explain(gus).await;
    assert_eq!(won.outcome, "matched");
    assert_eq!(
        won.matched_with.map(|p| p.user_id.to_string()).as_deref(),
        Some("ben")
    );
    // Nobody by that id waits there.
    let unknown = matchmaking_api::domain::QueueEntryId::generate();
    assert!(
        rig.matching
            .explain(&*rig.store, &pool_ref(POOL), unknown)
            .await
            .unwrap()
            .is_none()
    );
}

/// The wait a join is told reflects its range: a range that would have
/// taken half the pool's recent partners is told twice the pool's wait.
async fn the_wait_estimate_reflects_the_players_own_range(backend: Backend) {
    let ratings = [("p2", 1500), ("p4", 1580)];
    let Some(rig) = Rig::on(backend, PoolPolicy::default(), &ratings).await else {
        return;
    };
    // Two matches, each after 10 s: gaps 0 and 80.
    for (a, b) in [("p1", "p2"), ("p3", "p4")] {
        rig.join(a).await.unwrap();
        rig.join(b).await.unwrap();
        rig.advance(10_000);
        assert_eq!(rig.pass().await, matched(1));
    }
    let plain = told(&rig, "y", None).await;
    assert_eq!(plain, 10);
    let narrow = matchmaking_api::domain::RatingRange::new(-50, 50).unwrap();
    assert_eq!(told(&rig, "x", Some(narrow)).await, 20);
}

/// The wait a join of `user` with `range` is told.
async fn told(rig: &Rig, user: &str, range: Option<matchmaking_api::domain::RatingRange>) -> u64 {
    let join = Join {
        pool: POOL.parse::<PoolKey>().unwrap(),
        client_metadata: None,
        request_id: None,
        rating_range: range,
        also: Vec::new(),
    };
    rig.queue
        .join(&who(user), join)
        .await
        .unwrap()
        .estimated_wait_seconds
}

/// A finished game of `white` against `black`, recorded as the service
/// records one (colours move, the claims are lifted).
async fn played(rig: &Rig, white: &str, black: &str) {
    let at = matchmaking_api::domain::Clock::now(&*rig.clock);
    let match_id = MatchId::generate();
    let side = |user: &str| MatchSide {
        user_id: uid(user),
        username: None,
        rating: 1500,
        entry_id: None,
        region: None,
        time_control: None,
    };
    let record = MatchRecord {
        match_id,
        tenant_id: tenant(),
        game_id: GameId::for_match(&match_id),
        white: side(white),
        black: side(black),
        pool: POOL.parse().unwrap(),
        created_at: at,
        source: MatchSource::Queue,
        finished_at: None,
    };
    let stored = rig
        .durable
        .insert_matches(std::slice::from_ref(&record), &[], at - GUARD_MS)
        .await
        .unwrap();
    assert!(stored[0].is_stored());
    rig.durable
        .finish_match(&tenant(), &record.game_id, at)
        .await
        .unwrap();
}

/// The colour `user` has in their game.
async fn color_of(rig: &Rig, user: &str) -> matchmaking_api::domain::Color {
    rig.queue
        .active(&who(user))
        .await
        .unwrap()
        .game
        .expect("in a game")
        .color
}

/// Two players who both had black twice must both have white next: they
/// are never paired, however long they wait; a partner who can take
/// black is, and white goes to whoever needs it.
async fn two_players_who_both_must_have_white_are_never_paired(backend: Backend) {
    let Some(rig) = Rig::on(backend, PoolPolicy::default(), &[]).await else {
        return;
    };
    for (white, black) in [
        ("x1", "alice"),
        ("x2", "alice"),
        ("y1", "bob"),
        ("y2", "bob"),
    ] {
        played(&rig, white, black).await;
    }
    played(&rig, "carol", "z1").await;
    let alice = rig.join("alice").await.unwrap();
    let bob = rig.join("bob").await.unwrap();
    assert_eq!(rig.pass().await, matched(0));
    rig.advance(120_000);
    assert_eq!(rig.pass().await, matched(0));
    // carol had white: she takes black, and one of them white.
    rig.join("carol").await.unwrap();
    assert_eq!(rig.pass().await, matched(1));
    assert_eq!(
        color_of(&rig, "carol").await,
        matchmaking_api::domain::Color::Black
    );
    let (alice_in, bob_in) = (
        rig.status("alice", &alice).await == EntryStatus::Matched,
        rig.status("bob", &bob).await == EntryStatus::Matched,
    );
    assert!(alice_in != bob_in, "exactly one of them plays carol");
    let paired = if alice_in { "alice" } else { "bob" };
    assert_eq!(
        color_of(&rig, paired).await,
        matchmaking_api::domain::Color::White
    );
}

/// Two who just played each other are paired again only for want of
/// anyone else: a third player within reach is preferred; once the
/// shorter of their waits reaches the waiver, the pair is as any other.
async fn a_repeat_pairing_gives_way_to_another_partner_until_waived(backend: Backend) {
    let policy = PoolPolicy {
        repeat_penalty: 300,
        ..PoolPolicy::default()
    };
    let ratings = [("carol", 1550), ("gina", 1550)];
    let Some(rig) = Rig::on(backend, policy, &ratings).await else {
        return;
    };
    played(&rig, "alice", "bob").await;
    played(&rig, "erin", "frank").await;
    let alice = rig.join("alice").await.unwrap();
    let bob = rig.join("bob").await.unwrap();
    let carol = rig.join("carol").await.unwrap();
    assert_eq!(rig.pass().await, matched(1));
    let met = opponent_of(&rig, "carol", &carol).await.unwrap();
    assert!(met == "alice" || met == "bob", "{met}");
    let (left, id) = if met == "alice" {
        ("bob", bob)
    } else {
        ("alice", alice)
    };
    assert_eq!(rig.status(left, &id).await, EntryStatus::Searching);
    rig.queue.cancel(&who(left), &id).await.unwrap();
    // Waived: erin and frank (0 apart) meet again rather than gina (50).
    let erin = rig.join("erin").await.unwrap();
    rig.join("frank").await.unwrap();
    let gina = rig.join("gina").await.unwrap();
    rig.advance(policy.repeat_waive_ms);
    assert_eq!(rig.pass().await, matched(1));
    assert_eq!(
        opponent_of(&rig, "erin", &erin).await.as_deref(),
        Some("frank")
    );
    assert_eq!(rig.status("gina", &gina).await, EntryStatus::Searching);
}

/// A game nobody started (bob never moved): alice goes back to searching
/// with her place before carol's, is matched again at once with a game on
/// record; bob may not join until his cooldown ends, whatever is reported
/// about the old game meanwhile; the report again answers the same.
async fn an_aborted_game_puts_the_one_who_showed_up_back_first_in_line(backend: Backend) {
    let ratings = [("carol", 1700), ("dave", 1500)];
    let Some(rig) = Rig::on(backend, PoolPolicy::default(), &ratings).await else {
        return;
    };
    let (alice, game) = rig.alice_plays_bob().await;
    rig.advance(5_000);
    // carol waits, 200 points away from everyone: alone for now.
    let carol = rig.join("carol").await.unwrap();
    rig.advance(5_000);
    // A player not of the game: refused, nothing changes.
    let refused = rig.queue.abort_game(&tenant(), &game, &uid("carol")).await;
    assert!(
        matches!(refused, Err(ServiceError::InvalidRequest(m)) if m.contains("no_show_user_id"))
    );
    assert_eq!(rig.status("alice", &alice).await, EntryStatus::Matched);

    let aborted = rig
        .queue
        .abort_game(&tenant(), &game, &uid("bob"))
        .await
        .unwrap();
    assert_eq!(aborted.requeued, Some((uid("alice"), alice)));
    let back = rig.queue.status(&who("alice"), &alice).await.unwrap();
    assert_eq!(back.status, EntryStatus::Searching);
    assert_eq!(back.enqueued_at, Some(T0), "her place is kept");
    assert!(
        back.enqueued_at
            < rig
                .queue
                .status(&who("carol"), &carol)
                .await
                .unwrap()
                .enqueued_at
    );
    // The same report again: the same answer, nothing more.
    assert_eq!(
        rig.queue
            .abort_game(&tenant(), &game, &uid("bob"))
            .await
            .unwrap(),
        aborted
    );
    // bob cools down; a "finished" report of the old game lifts nothing.
    rig.queue.finish_game(&tenant(), &game).await.unwrap();
    match rig.join("bob").await {
        Err(ServiceError::Cooldown {
            retry_after_seconds,
        }) => {
            assert_eq!(retry_after_seconds, (NO_SHOW_COOLDOWN_MS / 1000) as u64)
        }
        other => panic!("expected COOLDOWN, got {other:?}"),
    }
    // dave arrives: alice (first in line) gets him, with a game on record.
    rig.join("dave").await.unwrap();
    assert_eq!(rig.pass().await, matched(1));
    assert_eq!(
        opponent_of(&rig, "alice", &alice).await.as_deref(),
        Some("dave")
    );
    let again = rig
        .queue
        .status(&who("alice"), &alice)
        .await
        .unwrap()
        .game_id
        .unwrap();
    assert_ne!(again, game);
    assert!(
        rig.durable
            .match_by_game(&tenant(), &again)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(rig.status("carol", &carol).await, EntryStatus::Searching);
    rig.advance(NO_SHOW_COOLDOWN_MS);
    rig.join("bob").await.unwrap();
}

const BLITZ_3: &str = "standard_3+0_rated_GLOBAL";
const BLITZ_3_2: &str = "standard_3+2_rated_GLOBAL";
const BLITZ_5: &str = "standard_5+0_rated_GLOBAL";

/// The user ids of `pool`'s waiting entries, and whether each lives there.
async fn waiting_in(rig: &Rig, pool: &str) -> Vec<(String, bool)> {
    let mut all: Vec<(String, bool)> = rig
        .store
        .waiting(&pool_ref(pool))
        .await
        .unwrap()
        .into_iter()
        .map(|w| (w.user_id.to_string(), w.home.is_none()))
        .collect();
    all.sort();
    all
}

/// One join waiting in two time controls is listed in both; the pass of
/// the second pool pairs it there, with a game on record, and it leaves
/// both pools at once; the status names the match's time control.
async fn an_entry_in_two_time_controls_is_matched_in_whichever_pairs_it(backend: Backend) {
    let ratings = [("alice", 1500), ("bob", 1520), ("carol", 1510)];
    let Some(rig) = Rig::on(backend, PoolPolicy::default(), &ratings).await else {
        return;
    };
    let alice = rig.join_several("alice", BLITZ_3, &["3+2"]).await.unwrap();
    assert_eq!(
        waiting_in(&rig, BLITZ_3).await,
        vec![("alice".into(), true)]
    );
    assert_eq!(
        waiting_in(&rig, BLITZ_3_2).await,
        vec![("alice".into(), false)]
    );
    // The same search again: the same entry; one time control fewer is
    // another search.
    assert_eq!(
        rig.join_several("alice", BLITZ_3, &["3+2"]).await.unwrap(),
        alice
    );
    assert!(matches!(
        rig.join("alice").await,
        Err(ServiceError::AlreadyInQueue)
    ));
    let bob = rig.join_in("bob", BLITZ_3_2).await.unwrap();
    assert_eq!(rig.pass_of(BLITZ_3).await, matched(0));
    assert_eq!(rig.pass_of(BLITZ_3_2).await, matched(1));
    let view = rig.queue.status(&who("alice"), &alice).await.unwrap();
    assert_eq!(view.status, EntryStatus::Matched);
    let opponent = view.opponent.unwrap();
    assert_eq!(opponent.user_id, uid("bob"));
    assert_eq!(opponent.time_control, Some("3+2".parse().unwrap()));
    let game = view.game_id.unwrap();
    assert_eq!(
        rig.queue.status(&who("bob"), &bob).await.unwrap().game_id,
        Some(game.clone())
    );
    let record = rig
        .durable
        .match_by_game(&tenant(), &game)
        .await
        .unwrap()
        .expect("a game on record");
    assert_eq!(record.pool, BLITZ_3_2.parse().unwrap());
    let side = record.sides_of(&uid("alice")).unwrap().0;
    assert_eq!(side.pool_in(record.pool), BLITZ_3.parse().unwrap());
    // Gone from both pools: carol in 3+0 finds nobody.
    assert!(waiting_in(&rig, BLITZ_3).await.is_empty());
    assert!(waiting_in(&rig, BLITZ_3_2).await.is_empty());
    rig.join_in("carol", BLITZ_3).await.unwrap();
    assert_eq!(rig.pass_of(BLITZ_3).await, matched(0));
    // The game aborted for bob: alice is back, in both pools, first in
    // line.
    rig.queue
        .abort_game(&tenant(), &game, &uid("bob"))
        .await
        .unwrap();
    assert_eq!(rig.status("alice", &alice).await, EntryStatus::Searching);
    assert_eq!(
        waiting_in(&rig, BLITZ_3_2).await,
        vec![("alice".into(), false)]
    );
    assert_eq!(rig.pass_of(BLITZ_3).await, matched(1));
    assert_eq!(
        opponent_of(&rig, "alice", &alice).await.as_deref(),
        Some("carol")
    );
}

/// A worker that died holding an entry that waits in several time controls
/// holds it in none of them; once recovery releases it, it is listed in
/// every one again and paired.
async fn a_worker_dying_with_an_entry_of_several_pools_reserved_holds_it_nowhere(backend: Backend) {
    let Some(rig) = Rig::on(backend, PoolPolicy::default(), &[]).await else {
        return;
    };
    let alice = rig.join_several("alice", BLITZ_3, &["3+2"]).await.unwrap();
    let bob = rig.join_in("bob", BLITZ_3_2).await.unwrap();
    let half = Reservation {
        match_id: MatchId::generate(),
        a: alice,
        b: alice,
    };
    let ok = rig
        .store
        .reserve(&pool_ref(BLITZ_3), &[half], T0 + 30_000, T0)
        .await
        .unwrap();
    assert_eq!(ok, vec![true]);
    for pool in [BLITZ_3, BLITZ_3_2] {
        assert_eq!(rig.pass_of(pool).await, matched(0), "{pool}");
    }
    rig.advance(30_001);
    assert_eq!(rig.matching.recover_stale().await.unwrap(), 1);
    assert_eq!(rig.pass_of(BLITZ_3_2).await, matched(1));
    assert_eq!(
        opponent_of(&rig, "alice", &alice).await.as_deref(),
        Some("bob")
    );
    assert_eq!(
        opponent_of(&rig, "bob", &bob).await.as_deref(),
        Some("alice")
    );
}

/// Cancelling an entry that waits in several time controls takes it out
/// of every one of them.
async fn a_cancelled_entry_leaves_every_pool_it_waited_in(backend: Backend) {
    let ratings = [("alice", 1500), ("bob", 1520)];
    let Some(rig) = Rig::on(backend, PoolPolicy::default(), &ratings).await else {
        return;
    };
    let alice = rig
        .join_several("alice", BLITZ_3_2, &["3+0"])
        .await
        .unwrap();
    rig.queue.cancel(&who("alice"), &alice).await.unwrap();
    rig.join_in("bob", BLITZ_3).await.unwrap();
    assert_eq!(rig.pass_of(BLITZ_3).await, matched(0));
    assert_eq!(rig.pass_of(BLITZ_3_2).await, matched(0));
    assert_eq!(waiting_in(&rig, BLITZ_3).await, vec![("bob".into(), true)]);
    assert!(waiting_in(&rig, BLITZ_3_2).await.is_empty());
}

/// Passes of every pool at once, on two nodes, over players each waiting
/// in two or three time controls with partners in each: everyone is in
/// one game at most, each game is on record, and every entry that shows
/// `MATCHED` shows that one game.
async fn pools_passing_at_once_never_match_an_entry_twice(backend: Backend) {
    let pools = [BLITZ_3, BLITZ_3_2, BLITZ_5];
    let Some(rig) = Rig::on(backend, PoolPolicy::default(), &[]).await else {
        return;
    };
    let other = (rig.restart)();
    let mut joined = Vec::new();
    for round in 0..6 {
        // Per round: one player in all three pools, one in two, and one
        // single-pool player in each: all within one window.
        let many = format!("many{round}");
        let two = format!("two{round}");
        joined.push((
            many.clone(),
            rig.join_several(&many, BLITZ_3, &["3+2", "5+0"])
                .await
                .unwrap(),
        ));
        joined.push((
            two.clone(),
            rig.join_several(&two, BLITZ_5, &["3+2"]).await.unwrap(),
        ));
        for (k, pool) in pools.iter().enumerate() {
            let single = format!("one{round}_{k}");
            joined.push((single.clone(), rig.join_in(&single, pool).await.unwrap()));
        }
        let at = |k: usize| pool_ref(pools[(round + k) % 3]);
        let (p0, p1, p2) = (at(0), at(1), at(2));
        for _ in 0..2 {
            let (a, b, c, d) = tokio::join!(
                rig.matching.run_pool(&p0),
                other.run_pool(&p1),
                rig.matching.run_pool(&p2),
                other.run_pool(&p0),
            );
            for pass in [a, b, c, d] {
                pass.unwrap();
            }
        }
    }
    let mut games: std::collections::HashMap<GameId, Vec<String>> = Default::default();
    for (user, id) in &joined {
        let view = rig.queue.status(&who(user), id).await.unwrap();
        if view.status == EntryStatus::Matched {
            games
                .entry(view.game_id.unwrap())
                .or_default()
                .push(user.clone());
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (game, players) in &games {
        assert_eq!(players.len(), 2, "{game}: {players:?}");
        for p in players {
            assert!(seen.insert(p.clone()), "{p} in two games");
        }
        let record = rig.durable.match_by_game(&tenant(), game).await.unwrap();
        assert!(record.is_some(), "{game} on record");
    }
    // 30 players, every one of them compatible with every other: a pass
    // leaves at most one of a pool's waiting players unpaired, and the
    // players of several pools fill the gaps.
    assert!(seen.len() >= 24, "{} matched", seen.len());
    for (user, _) in &joined {
        let active = rig
            .durable
            .active_match(&tenant(), &uid(user), 0)
            .await
            .unwrap();
        assert_eq!(active.is_some(), seen.contains(user), "{user}");
    }
}

/// An empty queue store, as one that lost its data (a Redis restarted
/// without persistence): its guards are not known intact.
async fn lost_queue_store(backend: Backend) -> (Arc<dyn QueueStore>, Box<dyn std::any::Any>) {
    match backend {
        Backend::Embedded => (Arc::new(MemoryQueueStore::new()), Box::new(())),
        Backend::Production => {
            let prefix = support::RedisPrefix::create().await.expect("redis");
            let redis =
                RedisQueueStore::connect(&support::redis_url(), false, &prefix.prefix, 3_600_000)
                    .await
                    .unwrap();
            (Arc::new(redis), Box::new(prefix))
        }
    }
}

/// A no-show's cooldown is kept with the aborted match, so a queue store
/// that lost its data gets it back with the guards: the absent player is
/// still refused until it ends, the other is free.
async fn a_no_show_cooldown_outlives_a_queue_store_that_lost_its_data(backend: Backend) {
    use matchmaking_api::domain::QueueEntry;
    use matchmaking_api::store::JoinOutcome;
    let Some(rig) = Rig::on(backend, PoolPolicy::default(), &[]).await else {
        return;
    };
    let (_, game) = rig.alice_plays_bob().await;
    rig.advance(1_000);
    rig.queue
        .abort_game(&tenant(), &game, &uid("bob"))
        .await
        .unwrap();
    let until = T0 + 1_000 + NO_SHOW_COOLDOWN_MS;
    let (lost, _keep) = lost_queue_store(backend).await;
    let guards = Guards::new(
        lost.clone(),
        rig.durable.clone(),
        GUARD_MS,
        rig.clock.clone(),
    );
    guards.ensure_intact(Duration::from_secs(5)).await.unwrap();
    let now = rig.clock.now();
    let bob = lost
        .active_game(&tenant(), &uid("bob"), now)
        .await
        .unwrap()
        .expect("bob is cooling down");
    assert!(bob.cooldown && bob.until == until, "{bob:?}");
    assert!(
        lost.active_game(&tenant(), &uid("alice"), now)
            .await
            .unwrap()
            .is_none()
    );
    let join = |at| QueueEntry::searching(tenant(), uid("bob"), POOL.parse().unwrap(), 1500, at);
    assert!(matches!(
        lost.join(join(now), now).await.unwrap(),
        JoinOutcome::ActiveGame(g) if g.cooldown
    ));
    // Once it is over, a store rebuilt again lets him in.
    rig.advance(until - now);
    let (later, _keep) = lost_queue_store(backend).await;
    let guards = Guards::new(
        later.clone(),
        rig.durable.clone(),
        GUARD_MS,
        rig.clock.clone(),
    );
    guards.ensure_intact(Duration::from_secs(5)).await.unwrap();
    let now = rig.clock.now();
    assert!(matches!(
        later.join(join(now), now).await.unwrap(),
        JoinOutcome::Created(_)
    ));
}

/// A game reported finished is not aborted afterwards, and a game of a
/// challenge (no entries) puts nobody back.
async fn only_a_game_not_reported_over_is_aborted(backend: Backend) {
    let Some(rig) = Rig::on(backend, PoolPolicy::default(), &[]).await else {
        return;
    };
    let (_, game) = rig.alice_plays_bob().await;
    rig.queue.finish_game(&tenant(), &game).await.unwrap();
    let late = rig.queue.abort_game(&tenant(), &game, &uid("bob")).await;
    assert!(
        matches!(late, Err(ServiceError::InvalidState(_))),
        "{late:?}"
    );
    rig.join("bob").await.unwrap();
    let unknown = GameId::for_match(&MatchId::generate());
    let missing = rig.queue.abort_game(&tenant(), &unknown, &uid("bob")).await;
    assert!(
        matches!(missing, Err(ServiceError::NotFound(_))),
        "{missing:?}"
    );
}

/// A node that died part way through an abort (the abort on record and the
/// match finished, nobody put back yet): the report again finishes it —
/// alice searches with her place, bob cools down from the first report —
/// and at no point is anyone in two games.
async fn an_abort_cut_short_is_finished_by_the_report_again(backend: Backend) {
    let Some(rig) = Rig::on(backend, PoolPolicy::default(), &[]).await else {
        return;
    };
    let (alice, game) = rig.alice_plays_bob().await;
    let record = rig
        .durable
        .match_by_game(&tenant(), &game)
        .await
        .unwrap()
        .unwrap();
    // What the dead node did: the abort on record, then the match finished.
    let first = matchmaking_api::domain::Clock::now(&*rig.clock);
    rig.durable
        .record(&[matchmaking_api::store::AuditEvent {
            at: first,
            tenant_id: tenant(),
            kind: "game_aborted".into(),
            subject: record.match_id.to_string(),
            detail: serde_json::json!({
                "game_id": game, "no_show_user_id": "bob",
                "cooldown_until": first + NO_SHOW_COOLDOWN_MS,
            }),
        }])
        .await
        .unwrap();
    rig.durable
        .finish_match(&tenant(), &game, first)
        .await
        .unwrap();
    // Meanwhile alice is held by her guard: no second entry, no second game.
    assert!(matches!(
        rig.join("alice").await,
        Err(ServiceError::ActiveGameExists)
    ));
    rig.advance(30_000);
    let aborted = rig
        .queue
        .abort_game(&tenant(), &game, &uid("bob"))
        .await
        .unwrap();
    assert_eq!(aborted.requeued, Some((uid("alice"), alice)));
    assert_eq!(aborted.cooldown_until, first + NO_SHOW_COOLDOWN_MS);
    assert_eq!(rig.status("alice", &alice).await, EntryStatus::Searching);
    match rig.join("bob").await {
        Err(ServiceError::Cooldown {
            retry_after_seconds,
        }) => {
            assert_eq!(
                retry_after_seconds,
                ((NO_SHOW_COOLDOWN_MS - 30_000) / 1000) as u64
            )
        }
        other => panic!("expected COOLDOWN, got {other:?}"),
    }
    // And once more: nothing changes.
    assert_eq!(
        rig.queue
            .abort_game(&tenant(), &game, &uid("bob"))
            .await
            .unwrap(),
        aborted
    );
    assert_eq!(rig.store.waiting(&pool_ref(POOL)).await.unwrap().len(), 1);
}

/// Renames `from` to `to` in the durable store at `url`, behind its back.
async fn cut_table(url: &str, from: &str, to: &str) {
    let sql = format!("ALTER TABLE {from} RENAME TO {to}");
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query(&sql).execute(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query(&sql).execute(&pool).await.unwrap();
        pool.close().await;
    }
}

/// Each region fallback case as one test per backend: embedded (memory and
/// SQLite) and production (Redis and PostgreSQL).
macro_rules! on_both_backends {
    ($($case:ident),+ $(,)?) => {
        mod embedded {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::Backend::Embedded).await
            })+
        }
        mod production {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::Backend::Production).await
            })+
        }
    };
}

on_both_backends!(
    a_lonely_entry_takes_the_closest_willing_partner,
    region_fallback_pairs_across_regions_only_after_its_wait,
    a_fallback_entry_takes_a_partner_of_its_own_region_first,
    fallback_needs_both_regions_to_accept_and_global_accepts_every_region,
    a_worker_dying_between_the_two_reservations_of_a_cross_region_pair_holds_nobody,
    a_cross_region_match_recorded_but_not_committed_is_finished_in_both_pools,
    two_regions_passing_at_once_match_everyone_once,
    a_block_either_way_keeps_two_players_apart_until_lifted,
    a_blocked_closest_pair_is_paired_otherwise_in_the_same_pass,
    restricted_players_meet_only_each_other,
    a_restriction_this_node_has_not_read_yet_still_bars_the_pair,
    a_pass_that_cannot_read_the_blocks_matches_nobody,
    a_players_own_range_holds_however_wide_the_window_grows,
    the_wait_estimate_reflects_the_players_own_range,
    an_established_window_stays_tighter_and_a_provisional_one_starts_wider,
    the_explain_says_who_is_kept_away_and_whom_the_pass_preferred,
    two_players_who_both_must_have_white_are_never_paired,
    a_repeat_pairing_gives_way_to_another_partner_until_waived,
    an_aborted_game_puts_the_one_who_showed_up_back_first_in_line,
    only_a_game_not_reported_over_is_aborted,
    an_abort_cut_short_is_finished_by_the_report_again,
    a_no_show_cooldown_outlives_a_queue_store_that_lost_its_data,
    an_entry_in_two_time_controls_is_matched_in_whichever_pairs_it,
    a_cancelled_entry_leaves_every_pool_it_waited_in,
    a_worker_dying_with_an_entry_of_several_pools_reserved_holds_it_nowhere,
    pools_passing_at_once_never_match_an_entry_twice,
);

/// Pool figures that cannot be read (a store answering too slowly).
struct CutStats;

#[async_trait::async_trait]
impl PoolStatsStore for CutStats {
    async fn pool_stats(&self, _: &PoolRef, _: Millis) -> StoreResult<PoolStats> {
        Err(StoreError::Unavailable("cut on purpose".into()))
    }

    async fn known_pools(&self) -> StoreResult<Vec<PoolRef>> {
        Err(StoreError::Unavailable("cut on purpose".into()))
    }
}

/// A join that took answers its entry even when the wait figures cannot be
/// read: a 503 would make the client try again as if nothing had happened,
/// and once the entry is matched that retry answers ACTIVE_GAME_EXISTS.
#[tokio::test]
async fn a_join_that_took_is_answered_even_when_the_wait_figures_cannot_be_read() {
    let mut rig = Rig::new(PoolPolicy::default(), None, &[]).await;
    rig.queue.stats = Arc::new(CutStats);
    let alice = rig.join("alice").await.unwrap();
    let bob = rig.join("bob").await.unwrap();
    assert_eq!(rig.pass().await, matched(1));
    // The entries are in the store and matched; the figures are still cut
    // (a status read needs them), so the store says so.
    for (user, id) in [("alice", alice), ("bob", bob)] {
        let entry = rig
            .store
            .status(&tenant(), &UserId::parse(user).unwrap(), &id, T0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(entry.status, EntryStatus::Matched, "{user}");
    }
}

/// One step of a random history over three pools of one speed.
#[derive(Debug, Clone)]
enum Step {
    /// `user` joins the pools of `mask` (bit k: pool k), rated 1500 + `at`.
    Join {
        user: usize,
        mask: u8,
    },
    Pass {
        pool: usize,
    },
    Cancel {
        user: usize,
    },
    /// The game of `user`, if any, is reported finished.
    Finish {
        user: usize,
    },
    Advance {
        ms: Millis,
    },
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        3 => (0..8usize, 1..8u8).prop_map(|(user, mask)| Step::Join { user, mask }),
        3 => (0..3usize).prop_map(|pool| Step::Pass { pool }),
        1 => (0..8usize).prop_map(|user| Step::Cancel { user }),
        1 => (0..8usize).prop_map(|user| Step::Finish { user }),
        1 => (1..20_000i64).prop_map(|ms| Step::Advance { ms }),
    ]
}

/// After every step: nobody holds two unfinished matches, every entry that
/// reads `MATCHED` has its game on record and is the only entry of its
/// player in that game, and no pool lists an entry that is not searching.
async fn check_history(steps: Vec<Step>) {
    const POOLS: [&str; 3] = [BLITZ_3, BLITZ_3_2, BLITZ_5];
    let tcs = ["3+0", "3+2", "5+0"];
    let ratings: Vec<(String, i32)> = (0..8).map(|u| (format!("p{u}"), 1500 + 37 * u)).collect();
    let ratings: Vec<(&str, i32)> = ratings.iter().map(|(u, r)| (u.as_str(), *r)).collect();
    let rig = Rig::new(PoolPolicy::default(), None, &ratings).await;
    let mut entries: Vec<(String, QueueEntryId)> = Vec::new();
    for step in steps {
        match step {
            Step::Join { user, mask } => {
                let chosen: Vec<usize> = (0..3).filter(|k| mask & (1 << k) != 0).collect();
                let also: Vec<&str> = chosen[1..].iter().map(|&k| tcs[k]).collect();
                let name = format!("p{user}");
                // The same search again answers the same entry.
                if let Ok(id) = rig.join_several(&name, POOLS[chosen[0]], &also).await
                    && !entries.iter().any(|(_, e)| *e == id)
                {
                    entries.push((name, id));
                }
            }
            Step::Pass { pool } => {
                rig.pass_of(POOLS[pool]).await;
            }
            Step::Cancel { user } => {
                let name = format!("p{user}");
                if let Some((_, id)) = entries.iter().rev().find(|(u, _)| *u == name) {
                    let _ = rig.queue.cancel(&who(&name), id).await;
                }
            }
            Step::Finish { user } => {
                let name = format!("p{user}");
                if let Some(m) = rig
                    .durable
                    .active_match(&tenant(), &uid(&name), 0)
                    .await
                    .unwrap()
                {
                    rig.queue.finish_game(&tenant(), &m.game_id).await.unwrap();
                }
            }
            Step::Advance { ms } => rig.advance(ms),
        }
        let unfinished = rig.durable.unfinished_matches(0).await.unwrap();
        let mut playing = std::collections::HashSet::new();
        for m in &unfinished {
            for side in [&m.white, &m.black] {
                assert!(
                    playing.insert(side.user_id.clone()),
                    "{} in two games",
                    side.user_id
                );
            }
        }
        let mut in_game = std::collections::HashSet::new();
        for (user, id) in &entries {
            let view = rig.queue.status(&who(user), id).await.unwrap();
            if view.status == EntryStatus::Matched {
                let game = view.game_id.unwrap();
                assert!(
                    rig.durable
                        .match_by_game(&tenant(), &game)
                        .await
                        .unwrap()
                        .is_some(),
                    "{user}: {game} not on record"
                );
                assert!(
                    in_game.insert((user.clone(), game)),
                    "{user}: two entries, one game"
                );
            }
        }
        for pool in POOLS {
            for w in rig.store.waiting(&pool_ref(pool)).await.unwrap() {
                let view = rig
                    .queue
                    .status(&who(w.user_id.as_str()), &w.id)
                    .await
                    .unwrap();
                assert_eq!(
                    view.status,
                    EntryStatus::Searching,
                    "{} listed in {pool}",
                    w.user_id
                );
            }
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..Default::default()
    })]

    /// Random joins in one to three time controls, passes, cancels, games
    /// finished and time going by: the invariant holds after every step.
    #[test]
    fn random_histories_over_several_time_controls_keep_the_invariant(
        steps in proptest::collection::vec(step(), 1..60)
    ) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(check_history(steps));
    }
}
