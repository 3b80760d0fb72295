//! The `QueueStore` contract.

use matchmaking_api::domain::{
    EndReason, EntryStatus, GameId, MatchId, MatchRecord, MatchSide, MatchSource, Millis, PoolRef,
    QueueEntry,
};
use matchmaking_api::store::{
    CancelOutcome, JoinOutcome, LeaseStore, PoolStats, QueueStore, RECENT_GAPS, Reservation,
    StoreError,
};

use super::{T0, entry, tenant, user};

const POOL: &str = "standard_5+0_rated_GLOBAL";

fn pool_ref(t: &str) -> PoolRef {
    PoolRef {
        tenant_id: tenant(t),
        key: super::pool(POOL),
    }
}

/// A store whose guards are intact, as every node's are once rebuilt.
async fn open(store: &dyn QueueStore) {
    store.mark_guards_intact().await.unwrap();
}

async fn joined(
    store: &dyn QueueStore,
    u: &str,
    rating: i32,
    at: i64,
) -> matchmaking_api::domain::QueueEntry {
    let e = entry("t1", u, POOL, rating, at);
    assert_eq!(
        store.join(e.clone(), at).await.unwrap(),
        JoinOutcome::Created(e.clone())
    );
    e
}

fn record(
    a: &matchmaking_api::domain::QueueEntry,
    b: &matchmaking_api::domain::QueueEntry,
    m: &MatchId,
) -> MatchRecord {
    let side = |e: &matchmaking_api::domain::QueueEntry| MatchSide {
        user_id: e.user_id.clone(),
        username: None,
        rating: e.rating,
        entry_id: Some(e.id),
        region: None,
        time_control: None,
    };
    MatchRecord {
        match_id: *m,
        tenant_id: a.tenant_id.clone(),
        game_id: GameId::for_match(m),
        white: side(a),
        black: side(b),
        pool: a.pool,
        created_at: T0 + 5_000,
        source: MatchSource::Queue,
        finished_at: None,
    }
}

async fn reserve(
    store: &dyn QueueStore,
    a: &matchmaking_api::domain::QueueEntry,
    b: &matchmaking_api::domain::QueueEntry,
) -> Reservation {
    let r = Reservation::new(a.id, b.id);
    let ok = store
        .reserve(
            &pool_ref(a.tenant_id.as_str()),
            std::slice::from_ref(&r),
            T0 + 30_000,
            T0 + 1_000,
        )
        .await
        .unwrap();
    assert_eq!(ok, vec![true]);
    r
}

pub async fn join_then_status_is_visible_to_its_owner_only(store: &dyn QueueStore) {
    open(store).await;
    let e = joined(store, "alice", 1500, T0).await;
    let got = store
        .status(&tenant("t1"), &user("alice"), &e.id, T0 + 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.status, EntryStatus::Searching);
    assert_eq!(got.last_seen_at, T0 + 10, "a status read is a heartbeat");
    assert!(
        store
            .status(&tenant("t1"), &user("bob"), &e.id, T0)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .status(&tenant("t2"), &user("alice"), &e.id, T0)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .user_entry(&tenant("t1"), &user("alice"))
            .await
            .unwrap()
            .unwrap()
            .id,
        e.id
    );
    assert!(
        store
            .user_entry(&tenant("t2"), &user("alice"))
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn joining_again_answers_the_waiting_entry(store: &dyn QueueStore) {
    open(store).await;
    let e = joined(store, "alice", 1500, T0).await;
    let again = entry("t1", "alice", POOL, 1500, T0 + 1);
    assert_eq!(
        store.join(again, T0 + 1).await.unwrap(),
        JoinOutcome::Existing(e.clone())
    );
    let other = entry("t1", "alice", "standard_3+0_rated_GLOBAL", 1500, T0 + 2);
    assert!(
        matches!(store.join(other, T0 + 2).await.unwrap(), JoinOutcome::AlreadyInQueue(x) if x.id == e.id)
    );
    // Another tenant's user of the same name is another player.
    let elsewhere = entry("t2", "alice", POOL, 1500, T0 + 3);
    assert!(matches!(
        store.join(elsewhere, T0 + 3).await.unwrap(),
        JoinOutcome::Created(_)
    ));
}

/// A player's own rating range is kept with the entry and shown to the
/// matcher; the same pool with another range is another search.
pub async fn an_entry_of_several_time_controls_is_listed_in_each_while_it_searches(
    store: &dyn QueueStore,
) {
    open(store).await;
    let other = PoolRef {
        tenant_id: tenant("t1"),
        key: super::pool("standard_5+3_rated_GLOBAL"),
    };
    let listed = |pool: PoolRef| async move {
        let waiting = store.waiting(&pool).await.unwrap();
        waiting
            .into_iter()
            .map(|w| (w.user_id.to_string(), w.home.map(|h| h.to_string())))
            .collect::<Vec<_>>()
    };
    let several = QueueEntry {
        also: vec!["5+3".parse().unwrap()],
        ..entry("t1", "alice", POOL, 1500, T0)
    };
    let JoinOutcome::Created(e) = store.join(several.clone(), T0).await.unwrap() else {
        panic!("expected a new entry");
    };
    assert_eq!(e.also, several.also);
    let bob = joined(store, "bob", 1510, T0 + 1).await;
    assert_eq!(
        listed(pool_ref("t1")).await,
        vec![("alice".into(), None), ("bob".into(), None)]
    );
    assert_eq!(
        listed(other.clone()).await,
        vec![("alice".into(), Some(POOL.into()))]
    );
    assert!(store.pools().await.unwrap().contains(&other));
    let shown = store
        .status(&tenant("t1"), &user("alice"), &e.id, T0 + 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shown.also, several.also);
    // Reserved (in its own pool): listed nowhere; put back: in both again.
    let r = reserve(store, &e, &bob).await;
    assert!(listed(pool_ref("t1")).await.is_empty());
    assert!(listed(other.clone()).await.is_empty());
    store.release(&pool_ref("t1"), &[r], T0 + 3).await.unwrap();
    assert_eq!(listed(other.clone()).await.len(), 1);
    // Cancelled: listed nowhere.
    let cancelled = store
        .cancel(&tenant("t1"), &user("alice"), &e.id, T0 + 4)
        .await
        .unwrap();
    assert!(matches!(cancelled, CancelOutcome::Cancelled(_)));
    assert!(listed(other).await.is_empty());
    assert_eq!(listed(pool_ref("t1")).await, vec![("bob".into(), None)]);
}

pub async fn an_entry_keeps_its_rating_deviation(store: &dyn QueueStore) {
    use matchmaking_api::domain::UNKNOWN_DEVIATION;
    open(store).await;
    let established = QueueEntry {
        rating_deviation: 60,
        ..entry("t1", "alice", POOL, 1500, T0)
    };
    let JoinOutcome::Created(e) = store.join(established, T0).await.unwrap() else {
        panic!("expected a new entry");
    };
    joined(store, "bob", 1600, T0 + 1).await;
    let shown = store
        .status(&tenant("t1"), &user("alice"), &e.id, T0 + 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shown.rating_deviation, 60);
    let waiting = store.waiting(&pool_ref("t1")).await.unwrap();
    let deviations: Vec<_> = waiting
        .iter()
        .map(|w| (w.user_id.as_str(), w.rating_deviation))
        .collect();
    assert_eq!(deviations, vec![("alice", 60), ("bob", UNKNOWN_DEVIATION)]);
}

pub async fn an_entry_keeps_its_own_rating_range(store: &dyn QueueStore) {
    use matchmaking_api::domain::RatingRange;
    open(store).await;
    let range = RatingRange::new(-200, 150).unwrap();
    let ranged = QueueEntry {
        rating_range: Some(range),
        ..entry("t1", "alice", POOL, 1500, T0)
    };
    let JoinOutcome::Created(e) = store.join(ranged.clone(), T0).await.unwrap() else {
        panic!("expected a new entry");
    };
    joined(store, "bob", 1600, T0 + 1).await;
    let shown = store
        .status(&tenant("t1"), &user("alice"), &e.id, T0 + 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shown.rating_range, Some(range));
    let waiting = store.waiting(&pool_ref("t1")).await.unwrap();
    let ranges: Vec<_> = waiting
        .iter()
        .map(|w| (w.user_id.as_str(), w.rating_range))
        .collect();
    assert_eq!(ranges, vec![("alice", Some(range)), ("bob", None)]);
    // The same range again: that entry; another, or none: another search.
    let again = QueueEntry {
        rating_range: Some(range),
        ..entry("t1", "alice", POOL, 1500, T0 + 3)
    };
    assert!(
        matches!(store.join(again, T0 + 3).await.unwrap(), JoinOutcome::Existing(x) if x.id == e.id)
    );
    let wider = QueueEntry {
        rating_range: Some(RatingRange::new(-300, 150).unwrap()),
        ..entry("t1", "alice", POOL, 1500, T0 + 4)
    };
    assert!(
        matches!(store.join(wider, T0 + 4).await.unwrap(), JoinOutcome::AlreadyInQueue(x) if x.id == e.id)
    );
    let none = entry("t1", "alice", POOL, 1500, T0 + 5);
    assert!(matches!(
        store.join(none, T0 + 5).await.unwrap(),
        JoinOutcome::AlreadyInQueue(_)
    ));
}

pub async fn cancel_is_for_the_owner_of_a_searching_entry(store: &dyn QueueStore) {
    open(store).await;
    let e = joined(store, "alice", 1500, T0).await;
    assert_eq!(
        store
            .cancel(&tenant("t1"), &user("bob"), &e.id, T0)
            .await
            .unwrap(),
        CancelOutcome::NotFound
    );
    let CancelOutcome::Cancelled(c) = store
        .cancel(&tenant("t1"), &user("alice"), &e.id, T0 + 5)
        .await
        .unwrap()
    else {
        panic!("expected a cancel");
    };
    assert_eq!(c.status, EntryStatus::Cancelled);
    assert_eq!(
        store
            .cancel(&tenant("t1"), &user("alice"), &e.id, T0 + 6)
            .await
            .unwrap(),
        CancelOutcome::NotFound
    );
    assert!(store.waiting(&pool_ref("t1")).await.unwrap().is_empty());
    assert!(
        store
            .user_entry(&tenant("t1"), &user("alice"))
            .await
            .unwrap()
            .is_none()
    );
    // The user may join again.
    joined(store, "alice", 1500, T0 + 7).await;
}

pub async fn waiting_lists_searching_entries_oldest_first(store: &dyn QueueStore) {
    open(store).await;
    let b = joined(store, "bob", 1600, T0 + 10).await;
    let a = joined(store, "alice", 1500, T0).await;
    let w = store.waiting(&pool_ref("t1")).await.unwrap();
    assert_eq!(
        w.iter().map(|x| &x.id).collect::<Vec<_>>(),
        vec![&a.id, &b.id]
    );
    assert_eq!(w[0].rating, 1500);
    assert!(store.waiting(&pool_ref("t2")).await.unwrap().is_empty());
    assert_eq!(store.pools().await.unwrap(), vec![pool_ref("t1")]);
}

pub async fn a_reserved_pair_cannot_be_cancelled_reserved_or_timed_out(store: &dyn QueueStore) {
    open(store).await;
    let a = joined(store, "alice", 1500, T0).await;
    let b = joined(store, "bob", 1510, T0).await;
    let c = joined(store, "carol", 1520, T0).await;
    reserve(store, &a, &b).await;
    assert!(
        store
            .waiting(&pool_ref("t1"))
            .await
            .unwrap()
            .iter()
            .all(|w| w.id == c.id)
    );
    assert_eq!(
        store
            .cancel(&tenant("t1"), &user("alice"), &a.id, T0)
            .await
            .unwrap(),
        CancelOutcome::CannotCancel
    );
    let again = Reservation::new(b.id, c.id);
    assert_eq!(
        store
            .reserve(&pool_ref("t1"), &[again], T0 + 30_000, T0)
            .await
            .unwrap(),
        vec![false]
    );
    assert!(
        store
            .time_out(&pool_ref("t1"), std::slice::from_ref(&a.id), T0)
            .await
            .unwrap()
            .is_empty()
    );
    let seen = store
        .status(&tenant("t1"), &user("alice"), &a.id, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.status.public(), "SEARCHING");
    // carol is still free to be reserved with someone else.
    let d = joined(store, "dave", 1530, T0).await;
    reserve(store, &c, &d).await;
}

pub async fn commit_matches_both_and_guards_them_until_the_game_finishes(store: &dyn QueueStore) {
    open(store).await;
    let a = joined(store, "alice", 1500, T0).await;
    let b = joined(store, "bob", 1540, T0 + 1_000).await;
    let r = reserve(store, &a, &b).await;
    let rec = record(&a, &b, &r.match_id);
    store
        .commit(std::slice::from_ref(&rec), T0 + 3_600_000, T0 + 5_000)
        .await
        .unwrap();
    let got = store
        .status(&tenant("t1"), &user("alice"), &a.id, T0 + 6_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.status, EntryStatus::Matched);
    assert_eq!(got.game_id.as_ref(), Some(&rec.game_id));
    assert_eq!(got.opponent.as_ref().unwrap().user_id, user("bob"));
    assert_eq!(got.opponent.as_ref().unwrap().rating, 1540);
    let game = store
        .active_game(&tenant("t1"), &user("bob"), T0 + 6_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(game.game_id.as_ref(), Some(&rec.game_id));
    assert_eq!(game.opponent.user_id, user("alice"));
    // Each player's wait, with their rating (for estimates per band).
    let stats = store.pool_stats(&pool_ref("t1"), T0).await.unwrap();
    let mut waits: Vec<(Millis, Option<i32>)> = stats
        .recent_waits
        .iter()
        .copied()
        .zip(stats.recent_wait_ratings.iter().copied())
        .collect();
    waits.sort();
    assert_eq!(waits, vec![(4_000, Some(1540)), (5_000, Some(1500))]);
    assert_eq!(
        store
            .cancel(&tenant("t1"), &user("alice"), &a.id, T0)
            .await
            .unwrap(),
        CancelOutcome::CannotCancel
    );
    let rejoin = entry("t1", "alice", POOL, 1500, T0 + 7_000);
    assert!(matches!(
        store.join(rejoin.clone(), T0 + 7_000).await.unwrap(),
        JoinOutcome::ActiveGame(_)
    ));
    assert!(
        store
            .finish_game(&tenant("t1"), &rec.game_id)
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_game(&tenant("t1"), &rec.game_id)
            .await
            .unwrap(),
        "finishing twice is a no-op"
    );
    assert!(matches!(
        store.join(rejoin, T0 + 8_000).await.unwrap(),
        JoinOutcome::Created(_)
    ));
}

/// More pairs than one Redis script call takes (the Redis store reserves
/// and commits them in chunks: Lua's `unpack` is bounded), two tenants'
/// pools and a record that no longer owns its reservation, all in one
/// reserve call and one commit call.
pub async fn a_commit_of_many_matches_changes_each_entry_once(store: &dyn QueueStore) {
    open(store).await;
    const PAIRS: usize = 450;
    let mut pairs = Vec::new();
    for i in 0..PAIRS {
        let a = joined(store, &format!("a{i}"), 1500, T0).await;
        let b = joined(store, &format!("b{i}"), 1500 + (i % 7) as i32, T0 + 1_000).await;
        pairs.push((a, b));
    }
    let reservations: Vec<Reservation> = pairs
        .iter()
        .map(|(a, b)| Reservation::new(a.id, b.id))
        .collect();
    let ok = store
        .reserve(&pool_ref("t1"), &reservations, T0 + 30_000, T0 + 2_000)
        .await
        .unwrap();
    assert_eq!(ok, vec![true; PAIRS]);
    let other: Vec<_> = ["x", "y"]
        .iter()
        .map(|u| entry("t2", u, POOL, 1500, T0))
        .collect();
    for e in &other {
        store.join(e.clone(), T0).await.unwrap();
    }
    let other_r = reserve(store, &other[0], &other[1]).await;

    // The last pair's record names another match: it must change nothing.
    let mut records: Vec<MatchRecord> = pairs
        .iter()
        .zip(&reservations)
        .map(|((a, b), r)| record(a, b, &r.match_id))
        .collect();
    let (sa, sb) = &pairs[PAIRS - 1];
    records[PAIRS - 1] = record(sa, sb, &MatchId::generate());
    let mut sent = records.clone();
    sent.insert(PAIRS / 2, record(&other[0], &other[1], &other_r.match_id));
    store
        .commit(&sent, T0 + 3_600_000, T0 + 5_000)
        .await
        .unwrap();
    // The guards' keys live as long as the commit's `now` says (an hour),
    // however slowly this test runs.
    for i in [0, 7, PAIRS - 2] {
        let game = store
            .active_game(&tenant("t1"), &pairs[i].1.user_id, T0 + 6_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(game.game_id.as_ref(), Some(&records[i].game_id));
    }

    for ((a, b), rec) in pairs[..PAIRS - 1].iter().zip(&records) {
        for (me, them) in [(a, b), (b, a)] {
            let got = store
                .status(&tenant("t1"), &me.user_id, &me.id, T0 + 6_000)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got.status, EntryStatus::Matched);
            assert_eq!(got.game_id.as_ref(), Some(&rec.game_id));
            assert_eq!(got.opponent.as_ref().unwrap().user_id, them.user_id);
            assert_eq!(got.reserved_until, None);
        }
    }
    let stale = store
        .status(&tenant("t1"), &sa.user_id, &sa.id, T0 + 6_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stale.status, EntryStatus::Reserved);
    assert_eq!(stale.reserved_until, Some(T0 + 30_000));
    let x = store
        .status(&tenant("t2"), &other[0].user_id, &other[0].id, T0 + 6_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(x.status, EntryStatus::Matched);

    let stats = store.pool_stats(&pool_ref("t1"), T0).await.unwrap();
    assert_eq!((stats.waiting, stats.matches), (0, PAIRS as u64 - 1));
    assert_eq!(stats.recent_gaps.len(), (PAIRS - 1).min(RECENT_GAPS));
    let stats = store.pool_stats(&pool_ref("t2"), T0).await.unwrap();
    assert_eq!((stats.matches, stats.recent_gaps.len()), (1, 1));
    assert!(store.waiting(&pool_ref("t1")).await.unwrap().is_empty());
}

pub async fn the_guard_lapses_at_its_deadline(store: &dyn QueueStore) {
    open(store).await;
    let a = joined(store, "alice", 1500, T0).await;
    let b = joined(store, "bob", 1500, T0).await;
    let r = reserve(store, &a, &b).await;
    store
        .commit(&[record(&a, &b, &r.match_id)], T0 + 10_000, T0 + 1_000)
        .await
        .unwrap();
    assert!(
        store
            .active_game(&tenant("t1"), &user("alice"), T0 + 9_999)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .active_game(&tenant("t1"), &user("alice"), T0 + 10_000)
            .await
            .unwrap()
            .is_none()
    );
    let rejoin = entry("t1", "alice", POOL, 1500, T0 + 10_001);
    assert!(matches!(
        store.join(rejoin, T0 + 10_001).await.unwrap(),
        JoinOutcome::Created(_)
    ));
}

pub async fn release_puts_both_back_with_their_priority(store: &dyn QueueStore) {
    open(store).await;
    let a = joined(store, "alice", 1500, T0).await;
    let b = joined(store, "bob", 1500, T0 + 500).await;
    let r = reserve(store, &a, &b).await;
    store
        .release(&pool_ref("t1"), std::slice::from_ref(&r), T0 + 2_000)
        .await
        .unwrap();
    let w = store.waiting(&pool_ref("t1")).await.unwrap();
    assert_eq!(w.len(), 2);
    assert_eq!(w[0].id, a.id);
    assert_eq!(w[0].enqueued_at, T0);
    assert_eq!(w[1].enqueued_at, T0 + 500);
    // A late commit of the released match changes nothing.
    store
        .commit(&[record(&a, &b, &r.match_id)], T0 + 60_000, T0 + 3_000)
        .await
        .unwrap();
    let got = store
        .status(&tenant("t1"), &user("alice"), &a.id, T0 + 3_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.status, EntryStatus::Searching);
}

pub async fn time_out_changes_only_searching_entries(store: &dyn QueueStore) {
    open(store).await;
    let a = joined(store, "alice", 1500, T0).await;
    let b = joined(store, "bob", 1500, T0).await;
    let c = joined(store, "carol", 1500, T0).await;
    let d = joined(store, "dave", 1500, T0).await;
    reserve(store, &c, &d).await;
    store
        .cancel(&tenant("t1"), &user("bob"), &b.id, T0)
        .await
        .unwrap();
    let ids = [a.id, b.id, c.id];
    let changed = store
        .time_out(&pool_ref("t1"), &ids, T0 + 600_000)
        .await
        .unwrap();
    assert_eq!(
        changed.iter().map(|e| &e.id).collect::<Vec<_>>(),
        vec![&a.id]
    );
    assert_eq!(changed[0].status, EntryStatus::TimedOut);
    assert!(
        store
            .user_entry(&tenant("t1"), &user("alice"))
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn stale_reservations_are_found_after_their_deadline(store: &dyn QueueStore) {
    open(store).await;
    let a = joined(store, "alice", 1500, T0).await;
    let b = joined(store, "bob", 1500, T0).await;
    let r = reserve(store, &a, &b).await;
    assert!(
        store
            .stale_reservations(T0 + 29_999)
            .await
            .unwrap()
            .is_empty()
    );
    let stale = store.stale_reservations(T0 + 30_001).await.unwrap();
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].reservation.match_id, r.match_id);
    let mut ids = vec![stale[0].reservation.a, stale[0].reservation.b];
    ids.sort();
    let mut want = vec![a.id, b.id];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(stale[0].pool, pool_ref("t1"));
}

/// A match across two regions (region fallback): one entry reserved alone
/// in each pool, committed each in its own pool by one commit, found stale
/// per pool, and released per pool.
pub async fn a_match_across_two_pools_is_reserved_committed_and_released_in_each(
    store: &dyn QueueStore,
) {
    open(store).await;
    const EU: &str = "standard_5+0_rated_EU";
    const NA: &str = "standard_5+0_rated_NA";
    let in_pool = |key: &str| PoolRef {
        tenant_id: tenant("t1"),
        key: super::pool(key),
    };
    let join = |u: &str, key: &str, rating: i32| {
        let e = entry("t1", u, key, rating, T0);
        async move {
            assert_eq!(
                store.join(e.clone(), T0).await.unwrap(),
                JoinOutcome::Created(e.clone())
            );
            e
        }
    };
    let a = join("alice", EU, 1500).await;
    let b = join("bob", NA, 1520).await;
    let one = |e: &matchmaking_api::domain::QueueEntry, m: MatchId| Reservation {
        match_id: m,
        a: e.id,
        b: e.id,
    };
    // An entry is reserved only in its own pool.
    let m = MatchId::generate();
    let wrong = store
        .reserve(&in_pool(NA), &[one(&a, m)], T0 + 30_000, T0 + 1_000)
        .await
        .unwrap();
    assert_eq!(wrong, vec![false]);
    for (key, e) in [(EU, &a), (NA, &b)] {
        let ok = store
            .reserve(&in_pool(key), &[one(e, m)], T0 + 30_000, T0 + 1_000)
            .await
            .unwrap();
        assert_eq!(ok, vec![true], "{key}");
    }
    // Reserved alone, each is reserved all the same: not cancellable, not
    // reservable again.
    assert_eq!(
        store
            .cancel(&tenant("t1"), &user("bob"), &b.id, T0 + 2_000)
            .await
            .unwrap(),
        CancelOutcome::CannotCancel
    );
    let again = store
        .reserve(
            &in_pool(NA),
            &[one(&b, MatchId::generate())],
            T0 + 30_000,
            T0 + 2_000,
        )
        .await
        .unwrap();
    assert_eq!(again, vec![false]);
    // Found stale once per pool, each holding its one entry.
    let mut stale: Vec<(String, _, _)> = store
        .stale_reservations(T0 + 30_001)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.pool.key.to_string(), s.reservation.a, s.reservation.b))
        .collect();
    stale.sort();
    assert_eq!(
        stale,
        vec![(EU.to_owned(), a.id, a.id), (NA.to_owned(), b.id, b.id)]
    );
    // Committed by one record of the EU pool whose black side waited in NA.
    let mut rec = record(&a, &b, &m);
    rec.black.region = Some("NA".parse().unwrap());
    store
        .commit(std::slice::from_ref(&rec), T0 + 3_600_000, T0 + 5_000)
        .await
        .unwrap();
    for (u, e, other) in [("alice", &a, "bob"), ("bob", &b, "alice")] {
        let got = store
            .status(&tenant("t1"), &user(u), &e.id, T0 + 6_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.status, EntryStatus::Matched, "{u}");
        assert_eq!(got.game_id.as_ref(), Some(&rec.game_id), "{u}");
        assert_eq!(got.opponent.unwrap().user_id, user(other));
        assert!(
            store
                .user_entry(&tenant("t1"), &user(u))
                .await
                .unwrap()
                .is_none()
        );
        let rejoin = entry("t1", u, EU, 1500, T0 + 7_000);
        assert!(matches!(
            store.join(rejoin, T0 + 7_000).await.unwrap(),
            JoinOutcome::ActiveGame(_)
        ));
    }
    for key in [EU, NA] {
        let stats = store.pool_stats(&in_pool(key), T0).await.unwrap();
        assert_eq!(stats.recent_waits.len(), 1, "{key}: its own player");
        assert_eq!(stats.matches, 1, "{key}");
    }
    assert!(
        store
            .stale_reservations(T0 + 60_000)
            .await
            .unwrap()
            .is_empty()
    );

    // A second pair, released per pool (a refusal, or recovery): both
    // search again in their own pools.
    let c = join("carol", EU, 1500).await;
    let d = join("dave", NA, 1500).await;
    let m = MatchId::generate();
    for (key, e) in [(EU, &c), (NA, &d)] {
        let ok = store
            .reserve(&in_pool(key), &[one(e, m)], T0 + 30_000, T0 + 1_000)
            .await
            .unwrap();
        assert_eq!(ok, vec![true]);
    }
    for (key, e) in [(EU, &c), (NA, &d)] {
        store
            .release(&in_pool(key), &[one(e, m)], T0 + 2_000)
            .await
            .unwrap();
        let waiting = store.waiting(&in_pool(key)).await.unwrap();
        assert_eq!(waiting.len(), 1, "{key}");
        assert_eq!(waiting[0].id, e.id);
    }
}

pub async fn purge_forgets_old_finished_entries_only(store: &dyn QueueStore) {
    open(store).await;
    let a = joined(store, "alice", 1500, T0).await;
    let b = joined(store, "bob", 1500, T0).await;
    store
        .cancel(&tenant("t1"), &user("alice"), &a.id, T0 + 1_000)
        .await
        .unwrap();
    store.purge(T0 + 2_000, T0 + 2_000).await.unwrap();
    assert!(
        store
            .status(&tenant("t1"), &user("alice"), &a.id, T0)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .status(&tenant("t1"), &user("bob"), &b.id, T0)
            .await
            .unwrap()
            .is_some()
    );
}

pub async fn holding_players_is_all_or_nothing(store: &dyn QueueStore) {
    open(store).await;
    // bob is searching: a hold of alice and bob fails and holds nobody.
    let b = joined(store, "bob", 1500, T0).await;
    let alice = entry("t1", "alice", POOL, 1500, T0);
    let m = MatchId::generate();
    let rec = record(&alice, &b, &m).intent();
    assert!(!store.hold_players(&rec, T0 + 60_000, T0).await.unwrap());
    assert!(
        store
            .active_game(&tenant("t1"), &user("alice"), T0)
            .await
            .unwrap()
            .is_none()
    );
    store
        .cancel(&tenant("t1"), &user("bob"), &b.id, T0)
        .await
        .unwrap();
    // Now both are free: both are held, and neither may join.
    assert!(store.hold_players(&rec, T0 + 60_000, T0).await.unwrap());
    let again = entry("t1", "bob", POOL, 1500, T0 + 1);
    assert!(matches!(
        store.join(again.clone(), T0 + 1).await.unwrap(),
        JoinOutcome::ActiveGame(_)
    ));
    assert!(
        !store.hold_players(&rec, T0 + 60_000, T0).await.unwrap(),
        "held players are busy"
    );
    // Dropping the hold frees both.
    store.drop_hold(&rec).await.unwrap();
    assert!(matches!(
        store.join(again, T0 + 2).await.unwrap(),
        JoinOutcome::Created(_)
    ));
    assert!(
        store
            .active_game(&tenant("t1"), &user("alice"), T0)
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn a_pool_lease_has_one_holder_until_released_or_lapsed(store: &dyn LeaseStore) {
    let pool = pool_ref("t1");
    assert!(store.lease_pool(&pool, "w1", 60_000).await.unwrap());
    assert!(
        store.lease_pool(&pool, "w1", 60_000).await.unwrap(),
        "renewed by its holder"
    );
    assert!(
        !store.lease_pool(&pool, "w2", 60_000).await.unwrap(),
        "held by another"
    );
    // Another pool is free.
    assert!(
        store
            .lease_pool(&pool_ref("t2"), "w2", 60_000)
            .await
            .unwrap()
    );
    store
        .release_leases(std::slice::from_ref(&pool), "w2")
        .await
        .unwrap();
    assert!(
        !store.lease_pool(&pool, "w2", 60_000).await.unwrap(),
        "only the holder releases"
    );
    store
        .release_leases(std::slice::from_ref(&pool), "w1")
        .await
        .unwrap();
    assert!(
        store.lease_pool(&pool, "w2", 50).await.unwrap(),
        "released: taken over"
    );
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    assert!(
        store.lease_pool(&pool, "w3", 60_000).await.unwrap(),
        "lapsed: taken over"
    );
}

pub async fn pool_stats_count_waiting_matches_and_time_outs(store: &dyn QueueStore) {
    open(store).await;
    let pool = pool_ref("t1");
    assert_eq!(
        store.pool_stats(&pool, T0).await.unwrap(),
        PoolStats::default()
    );
    let a = joined(store, "alice", 1500, T0).await;
    let b = joined(store, "bob", 1580, T0 + 1_000).await;
    let c = joined(store, "carol", 1600, T0 + 2_000).await;
    let stats = store.pool_stats(&pool, T0).await.unwrap();
    assert_eq!((stats.waiting, stats.oldest_enqueued_at), (3, Some(T0)));
    assert_eq!((stats.matches, stats.timeouts), (0, 0));
    assert!(store.known_pools().await.unwrap().contains(&pool));

    let r = reserve(store, &a, &b).await;
    store
        .commit(&[record(&a, &b, &r.match_id)], T0 + 60_000, T0 + 5_000)
        .await
        .unwrap();
    let stats = store.pool_stats(&pool, T0).await.unwrap();
    assert_eq!(
        (stats.waiting, stats.oldest_enqueued_at),
        (1, Some(c.enqueued_at))
    );
    assert_eq!((stats.matches, stats.timeouts), (1, 0));
    assert_eq!(stats.recent_gaps, vec![80]);
    let mut waits = stats.recent_waits.clone();
    waits.sort_unstable();
    assert_eq!(waits, vec![4_000, 5_000]);

    let at = T0 + 20_000;
    assert_eq!(store.time_out(&pool, &[c.id], at).await.unwrap().len(), 1);
    let stats = store.pool_stats(&pool, T0).await.unwrap();
    assert_eq!((stats.waiting, stats.oldest_enqueued_at), (0, None));
    assert_eq!((stats.matches, stats.timeouts), (1, 1));
    // Counted by bucket: looking back from the time-out's bucket only, the
    // match 15 s earlier is out of the window.
    let recent = store.pool_stats(&pool, at).await.unwrap();
    assert_eq!((recent.matches, recent.timeouts), (0, 1));
    // The pool stays known while it has recent outcomes.
    assert!(store.known_pools().await.unwrap().contains(&pool));
    assert_eq!(
        store.pool_stats(&pool_ref("t2"), T0).await.unwrap(),
        PoolStats::default()
    );
}

pub async fn nobody_is_admitted_until_the_guards_are_intact(store: &dyn QueueStore) {
    // A fresh store (a new process, a Redis that lost its data) does not
    // know who is in a game: it admits nobody.
    assert!(!store.guards_intact().await.unwrap());
    let alice = entry("t1", "alice", POOL, 1500, T0);
    assert!(matches!(
        store.join(alice.clone(), T0).await,
        Err(StoreError::GuardsLost)
    ));
    let bob = entry("t1", "bob", POOL, 1500, T0);
    let carol = entry("t1", "carol", POOL, 1500, T0);
    let held = record(&bob, &carol, &MatchId::generate()).intent();
    assert!(matches!(
        store.hold_players(&held, T0 + 60_000, T0).await,
        Err(StoreError::GuardsLost)
    ));
    // The guards come back from the durable store; then it admits.
    let dave = entry("t1", "dave", POOL, 1500, T0);
    let game = record(&alice, &dave, &MatchId::generate());
    // For an hour from the contract's now: a store keeps the key that long
    // by the caller's clock, not its own (the contract's times are fixed).
    let until = T0 + 3_600_000;
    let guard = game.guard_for(&user("alice"), until).unwrap();
    store
        .restore_active_games(&[(tenant("t1"), user("alice"), guard.clone())], T0)
        .await
        .unwrap();
    store.mark_guards_intact().await.unwrap();
    assert!(store.guards_intact().await.unwrap());
    assert!(matches!(
        store.join(alice, T0 + 1).await.unwrap(),
        JoinOutcome::ActiveGame(g) if g.match_id == game.match_id
    ));
    assert!(matches!(
        store.join(bob, T0 + 1).await.unwrap(),
        JoinOutcome::Created(_)
    ));
    // A restore never replaces a guard already there (it is newer).
    assert!(
        store
            .hold_players(
                &record(&carol, &dave, &MatchId::generate()).intent(),
                until,
                T0
            )
            .await
            .unwrap()
    );
    let newer = store
        .active_game(&tenant("t1"), &user("carol"), T0)
        .await
        .unwrap()
        .unwrap();
    let older = held.guard_for(&user("carol"), until).unwrap();
    store
        .restore_active_games(&[(tenant("t1"), user("carol"), older)], T0)
        .await
        .unwrap();
    assert_eq!(
        store
            .active_game(&tenant("t1"), &user("carol"), T0)
            .await
            .unwrap(),
        Some(newer)
    );
    // A guard rebuilt from an intent has no game yet.
    assert!(
        store
            .active_game(&tenant("t1"), &user("carol"), T0)
            .await
            .unwrap()
            .unwrap()
            .game_id
            .is_none()
    );
}

pub async fn cancel_entries_ends_only_searching_entries(store: &dyn QueueStore) {
    open(store).await;
    let a = joined(store, "alice", 1500, T0).await;
    let b = joined(store, "bob", 1500, T0).await;
    let c = joined(store, "carol", 1500, T0).await;
    reserve(store, &a, &b).await;
    let cancelled = store
        .cancel_entries(
            &pool_ref("t1"),
            &[a.id, c.id],
            EndReason::ActiveGame,
            T0 + 2_000,
        )
        .await
        .unwrap();
    assert_eq!(cancelled.len(), 1, "a reserved entry is not cancelled");
    assert_eq!(cancelled[0].id, c.id);
    assert_eq!(cancelled[0].status, EntryStatus::Cancelled);
    let read = store
        .status(&tenant("t1"), &user("carol"), &c.id, T0 + 3_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.status, EntryStatus::Cancelled);
    assert_eq!(read.reason, Some(EndReason::ActiveGame));
    let stats = store.pool_stats(&pool_ref("t1"), T0).await.unwrap();
    assert_eq!(stats.timeouts, 0, "a cancel is not a time-out");
    // Carol may join again.
    let again = entry("t1", "carol", POOL, 1500, T0 + 4_000);
    assert!(matches!(
        store.join(again, T0 + 4_000).await.unwrap(),
        JoinOutcome::Created(_)
    ));
}

/// Waits (a few seconds at most) for a change of `watch`'s entry to be
/// announced; on Redis it comes back through the node's subscription.
async fn announced(watch: &matchmaking_api::store::feed::EntryWatch, what: &str) {
    tokio::time::timeout(std::time::Duration::from_secs(5), watch.changed())
        .await
        .unwrap_or_else(|_| panic!("{what} was not announced"));
}

pub async fn every_way_an_entry_ends_is_announced_with_its_reason(store: &dyn QueueStore) {
    open(store).await;
    let feed = store.feed();
    let cancelled = joined(store, "alice", 1500, T0).await;
    let timed_out = joined(store, "bob", 1500, T0).await;
    let absent = joined(store, "carol", 1500, T0).await;
    let white = joined(store, "dave", 1500, T0).await;
    let black = joined(store, "erin", 1500, T0).await;
    let watches: Vec<_> = [&cancelled, &timed_out, &absent, &white, &black]
        .iter()
        .map(|e| feed.watch(e.id))
        .collect();
    let pool = pool_ref("t1");
    store
        .cancel(&tenant("t1"), &user("alice"), &cancelled.id, T0 + 1_000)
        .await
        .unwrap();
    announced(&watches[0], "a cancel").await;
    store
        .time_out(&pool, &[timed_out.id], T0 + 1_000)
        .await
        .unwrap();
    announced(&watches[1], "a time-out").await;
    store
        .cancel_entries(&pool, &[absent.id], EndReason::Absent, T0 + 1_000)
        .await
        .unwrap();
    announced(&watches[2], "a cancel for absence").await;
    let r = reserve(store, &white, &black).await;
    store
        .commit(
            &[record(&white, &black, &r.match_id)],
            T0 + 60_000,
            T0 + 2_000,
        )
        .await
        .unwrap();
    announced(&watches[3], "a match (white)").await;
    announced(&watches[4], "a match (black)").await;
    for (e, status, reason) in [
        (&cancelled, EntryStatus::Cancelled, Some(EndReason::Player)),
        (
            &timed_out,
            EntryStatus::TimedOut,
            Some(EndReason::MaxQueueTime),
        ),
        (&absent, EntryStatus::Cancelled, Some(EndReason::Absent)),
        (&white, EntryStatus::Matched, None),
    ] {
        let read = store
            .status(&e.tenant_id, &e.user_id, &e.id, T0 + 3_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (read.status, read.reason),
            (status, reason),
            "{}",
            e.user_id
        );
    }
}

pub async fn touch_moves_up_the_last_seen_time_of_waiting_entries_only(store: &dyn QueueStore) {
    open(store).await;
    let a = joined(store, "alice", 1500, T0).await;
    let b = joined(store, "bob", 1500, T0).await;
    let pool = pool_ref("t1");
    store
        .cancel(&tenant("t1"), &user("bob"), &b.id, T0 + 1_000)
        .await
        .unwrap();
    store
        .touch(&pool, &[(a.id, T0 + 5_000), (b.id, T0 + 5_000)])
        .await
        .unwrap();
    // An older time changes nothing.
    store.touch(&pool, &[(a.id, T0 + 2_000)]).await.unwrap();
    let waiting = store.waiting(&pool).await.unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].last_seen_at, T0 + 5_000);
    // Touching in another pool's name reaches nothing.
    let other = PoolRef {
        tenant_id: tenant("t1"),
        key: super::pool("standard_3+2_rated_GLOBAL"),
    };
    store.touch(&other, &[(a.id, T0 + 9_000)]).await.unwrap();
    assert_eq!(
        store.waiting(&pool).await.unwrap()[0].last_seen_at,
        T0 + 5_000
    );
    let read = store
        .status(&tenant("t1"), &user("bob"), &b.id, T0 + 6_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.last_seen_at, T0, "a cancelled entry is not touched");
}

/// A matched entry whose game was aborted goes back to searching with its
/// place (its original enqueued_at), once, and only for its own game, and
/// only while its player waits nowhere else and has no guard in force.
pub async fn an_aborted_games_entry_goes_back_to_searching_with_its_place(store: &dyn QueueStore) {
    open(store).await;
    let a = joined(store, "alice", 1500, T0).await;
    let b = joined(store, "bob", 1540, T0 + 1_000).await;
    let r = reserve(store, &a, &b).await;
    let rec = record(&a, &b, &r.match_id);
    store
        .commit(std::slice::from_ref(&rec), T0 + 3_600_000, T0 + 5_000)
        .await
        .unwrap();
    let pool = pool_ref("t1");
    // Guards in force (the game not reported over): not put back.
    assert_eq!(
        store
            .requeue(&pool, &a.id, &rec.game_id, T0 + 6_000)
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .finish_game(&tenant("t1"), &rec.game_id)
            .await
            .unwrap()
    );
    // Another game's id: not this entry's.
    let other = GameId::for_match(&MatchId::generate());
    assert_eq!(
        store
            .requeue(&pool, &a.id, &other, T0 + 6_000)
            .await
            .unwrap(),
        None
    );
    let back = store
        .requeue(&pool, &a.id, &rec.game_id, T0 + 7_000)
        .await
        .unwrap()
        .expect("put back");
    assert_eq!(back.status, EntryStatus::Searching);
    assert_eq!(back.enqueued_at, a.enqueued_at);
    assert_eq!((back.game_id, back.opponent), (None, None));
    let waiting = store.waiting(&pool).await.unwrap();
    assert_eq!(waiting.iter().map(|w| w.id).collect::<Vec<_>>(), vec![a.id]);
    assert_eq!(waiting[0].enqueued_at, T0);
    assert_eq!(
        store
            .user_entry(&tenant("t1"), &user("alice"))
            .await
            .unwrap()
            .map(|e| e.id),
        Some(a.id)
    );
    // Once only: it is searching now.
    assert_eq!(
        store
            .requeue(&pool, &a.id, &rec.game_id, T0 + 8_000)
            .await
            .unwrap(),
        None
    );
    // bob joined again already: his old entry is not put back beside it.
    let b2 = joined(store, "bob", 1540, T0 + 8_000).await;
    assert_eq!(
        store
            .requeue(&pool, &b.id, &rec.game_id, T0 + 9_000)
            .await
            .unwrap(),
        None
    );
    let ids: Vec<_> = store
        .waiting(&pool)
        .await
        .unwrap()
        .iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(ids, vec![a.id, b2.id]);
}
