//! The `DurableStore` contract.

use matchmaking_api::domain::{
    GameId, MatchId, MatchRecord, MatchSide, MatchSource, QueueEntryId, RatingPool, Speed,
};
use matchmaking_api::store::{
    AuditEvent, AuditQuery, Claim, DurableStore, IdempotencyScope, Ratings, StoredAnswer,
};

use super::{T0, pool, tenant, user};

fn record(white: &str, black: &str, at: i64) -> MatchRecord {
    let m = MatchId::generate();
    let side = |u: &str, r| MatchSide {
        user_id: user(u),
        username: matchmaking_api::domain::Username::sanitize(&format!("{u} name")),
        rating: r,
        entry_id: Some(QueueEntryId::generate()),
        region: None,
        time_control: None,
    };
    MatchRecord {
        game_id: GameId::for_match(&m),
        match_id: m,
        tenant_id: tenant("t1"),
        white: side(white, 1520),
        black: side(black, 1480),
        pool: pool("standard_5+0_rated_GLOBAL"),
        created_at: at,
        source: MatchSource::Queue,
        finished_at: None,
    }
}

/// Claims made at or after this are live (every record here is made at
/// `T0` or later): the guard time has not passed.
const LIVE: i64 = T0;

async fn finish(store: &dyn DurableStore, r: &MatchRecord) {
    store
        .finish_match(&r.tenant_id, &r.game_id, r.created_at + 1)
        .await
        .unwrap()
        .unwrap();
}

fn event(subject: &str) -> AuditEvent {
    AuditEvent {
        at: T0,
        tenant_id: tenant("t1"),
        kind: "match".into(),
        subject: subject.into(),
        detail: serde_json::json!({"gap": 40}),
    }
}

pub async fn a_match_is_found_by_id_entry_and_user(store: &dyn DurableStore) {
    let r = record("alice", "bob", T0);
    store
        .insert_matches(
            std::slice::from_ref(&r),
            &[event(&r.match_id.to_string())],
            LIVE,
        )
        .await
        .unwrap();
    assert_eq!(
        store.match_by_id(&r.match_id).await.unwrap().as_ref(),
        Some(&r)
    );
    let black_entry = r.black.entry_id.unwrap();
    assert_eq!(
        store
            .match_by_entry(&tenant("t1"), &black_entry)
            .await
            .unwrap()
            .as_ref(),
        Some(&r)
    );
    assert!(
        store
            .match_by_entry(&tenant("t2"), &black_entry)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .active_match(&tenant("t1"), &user("bob"), T0)
            .await
            .unwrap()
            .as_ref(),
        Some(&r)
    );
    assert!(
        store
            .active_match(&tenant("t1"), &user("bob"), T0 + 1)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .active_match(&tenant("t1"), &user("carol"), 0)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .events_about(&r.match_id.to_string(), 10)
            .await
            .unwrap(),
        vec![event(&r.match_id.to_string())]
    );
}

pub async fn inserting_a_match_twice_keeps_one_and_moves_colors_once(store: &dyn DurableStore) {
    let r = record("alice", "bob", T0);
    for _ in 0..2 {
        assert_eq!(
            store
                .insert_matches(std::slice::from_ref(&r), &[], LIVE)
                .await
                .unwrap(),
            vec![Claim::Stored]
        );
    }
    finish(store, &r).await;
    let r2 = record("alice", "carol", T0 + 1);
    store
        .insert_matches(std::slice::from_ref(&r2), &[], LIVE)
        .await
        .unwrap();
    let b = store
        .color_histories(
            &tenant("t1"),
            &[user("alice"), user("bob"), user("carol"), user("zed")],
        )
        .await
        .unwrap();
    assert_eq!(b.get(&user("alice")).map(|h| h.balance), Some(2));
    assert_eq!(b.get(&user("bob")).map(|h| h.balance), Some(-1));
    assert_eq!(b.get(&user("carol")).map(|h| h.balance), Some(-1));
    assert_eq!(b.get(&user("zed")), None);
    finish(store, &r2).await;

    // One batch: a record already stored (no move), alice white, then
    // alice black in a second match of the same batch (refused: she is
    // in the first), and the audit of the batch (the refused match's is
    // dropped with it).
    let r3 = record("alice", "dave", T0 + 2);
    let r4 = record("erin", "alice", T0 + 3);
    let audit: Vec<AuditEvent> = [&r3, &r4]
        .iter()
        .map(|r| AuditEvent {
            at: r.created_at,
            tenant_id: r.tenant_id.clone(),
            kind: "match".into(),
            subject: r.match_id.to_string(),
            detail: serde_json::json!({ "game_id": r.game_id }),
        })
        .collect();
    let claims = store
        .insert_matches(&[r.clone(), r3.clone(), r4.clone()], &audit, LIVE)
        .await
        .unwrap();
    assert_eq!(
        claims,
        vec![
            Claim::Stored,
            Claim::Stored,
            Claim::Busy(vec![user("alice")])
        ]
    );
    let b = store
        .color_histories(
            &tenant("t1"),
            &[user("alice"), user("bob"), user("dave"), user("erin")],
        )
        .await
        .unwrap();
    assert_eq!(b.get(&user("alice")).map(|h| h.balance), Some(3));
    assert_eq!(b.get(&user("bob")).map(|h| h.balance), Some(-1));
    assert_eq!(b.get(&user("dave")).map(|h| h.balance), Some(-1));
    assert_eq!(b.get(&user("erin")), None, "a refused match moves nothing");
    // alice was white three times running; bob and dave black once.
    assert_eq!(b.get(&user("alice")).map(|h| h.streak), Some(3));
    assert_eq!(b.get(&user("dave")).map(|h| h.streak), Some(-1));
    assert_eq!(
        store
            .events_about(&r3.match_id.to_string(), 10)
            .await
            .unwrap(),
        vec![audit[0].clone()]
    );
    assert!(
        store
            .events_about(&r4.match_id.to_string(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.match_by_id(&r3.match_id).await.unwrap().is_some());
    assert!(store.match_by_id(&r4.match_id).await.unwrap().is_none());

    // The same new match twice in one batch, and twice at once from two
    // callers (a retry meeting its first try): stored once, colors moved once.
    let r5 = record("frank", "gina", T0 + 4);
    let r6 = record("hal", "ivy", T0 + 5);
    let both = [r5.clone(), r5.clone()];
    let (twice, a, b) = tokio::join!(
        store.insert_matches(&both, &[], LIVE),
        store.insert_matches(std::slice::from_ref(&r6), &[], LIVE),
        store.insert_matches(std::slice::from_ref(&r6), &[], LIVE),
    );
    assert_eq!(twice.unwrap(), vec![Claim::Stored, Claim::Stored]);
    assert_eq!(
        (a.unwrap(), b.unwrap()),
        (vec![Claim::Stored], vec![Claim::Stored])
    );
    let b = store
        .color_histories(
            &tenant("t1"),
            &[user("frank"), user("gina"), user("hal"), user("ivy")],
        )
        .await
        .unwrap();
    let moved = |u: &str| b.get(&user(u)).map(|h| (h.balance, h.streak));
    assert_eq!(
        [moved("frank"), moved("gina"), moved("hal"), moved("ivy")],
        [Some((1, 1)), Some((-1, -1)), Some((1, 1)), Some((-1, -1))]
    );
}

pub async fn finishing_a_game_ends_its_match_once(store: &dyn DurableStore) {
    let r = record("alice", "bob", T0);
    store
        .insert_matches(std::slice::from_ref(&r), &[], LIVE)
        .await
        .unwrap();
    assert_eq!(store.unfinished_matches(T0).await.unwrap().len(), 1);
    let done = store
        .finish_match(&tenant("t1"), &r.game_id, T0 + 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.finished_at, Some(T0 + 100));
    let again = store
        .finish_match(&tenant("t1"), &r.game_id, T0 + 200)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.finished_at, Some(T0 + 100));
    assert!(
        store
            .finish_match(&tenant("t2"), &r.game_id, T0)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.unfinished_matches(T0).await.unwrap().is_empty());
    assert!(
        store
            .active_match(&tenant("t1"), &user("alice"), 0)
            .await
            .unwrap()
            .is_none()
    );
}

fn std(speed: Speed) -> RatingPool {
    RatingPool::standard(speed)
}

fn pool_of(name: &str) -> RatingPool {
    name.parse().unwrap()
}

pub async fn ratings_default_to_1500_and_merge_by_speed(store: &dyn DurableStore) {
    let r = store.ratings(&tenant("t1"), &user("alice")).await.unwrap();
    assert_eq!(r, Ratings::default());
    assert_eq!(r.get(std(Speed::Blitz)), 1500);
    let set = Ratings::default()
        .with(std(Speed::Blitz), 1620)
        .with(std(Speed::Bullet), 1700);
    store
        .set_ratings(&tenant("t1"), &user("alice"), &set)
        .await
        .unwrap();
    let more = Ratings::default().with(std(Speed::Blitz), 1650);
    let now = store
        .set_ratings(&tenant("t1"), &user("alice"), &more)
        .await
        .unwrap();
    assert_eq!(
        now,
        Ratings::default()
            .with(std(Speed::Bullet), 1700)
            .with(std(Speed::Blitz), 1650)
    );
    assert_eq!(
        store.ratings(&tenant("t1"), &user("alice")).await.unwrap(),
        now
    );
    assert_eq!(
        store.ratings(&tenant("t2"), &user("alice")).await.unwrap(),
        Ratings::default()
    );
}

pub async fn ratings_are_kept_per_variant_and_merge_by_pool(store: &dyn DurableStore) {
    let (t, alice) = (tenant("t1"), user("alice"));
    let first = Ratings::default()
        .with(std(Speed::Blitz), 1620)
        .with(pool_of("blitz_chess960"), 2100)
        .with(pool_of("bullet_crazyhouse"), 1900);
    store.set_ratings(&t, &alice, &first).await.unwrap();
    // A later update of one variant keeps the others, and one of the
    // standard speeds only keeps every variant.
    store
        .set_ratings(
            &t,
            &alice,
            &Ratings::default().with(pool_of("blitz_chess960"), 2150),
        )
        .await
        .unwrap();
    let now = store
        .set_ratings(
            &t,
            &alice,
            &Ratings::default().with(std(Speed::Rapid), 1450),
        )
        .await
        .unwrap();
    let expected = Ratings::default()
        .with(std(Speed::Blitz), 1620)
        .with(std(Speed::Rapid), 1450)
        .with(pool_of("blitz_chess960"), 2150)
        .with(pool_of("bullet_crazyhouse"), 1900);
    assert_eq!(now, expected);
    assert_eq!(store.ratings(&t, &alice).await.unwrap(), expected);
    assert_eq!(expected.get(pool_of("blitz_atomic")), 1500);
    let changed = store.ratings_changed_since(None).await.unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].ratings, expected);
}

pub async fn ratings_keep_their_deviations_and_a_bare_rating_keeps_one(store: &dyn DurableStore) {
    use matchmaking_api::domain::{RatingSnapshot, UNKNOWN_DEVIATION};
    let (t, alice) = (tenant("t1"), user("alice"));
    let mut first = Ratings::default()
        .with(std(Speed::Blitz), 1620)
        .with(pool_of("blitz_chess960"), 2100)
        .with(std(Speed::Rapid), 1400);
    first.set_deviation(std(Speed::Blitz), 80);
    first.set_deviation(pool_of("blitz_chess960"), 120);
    store.set_ratings(&t, &alice, &first).await.unwrap();
    // A bare rating keeps the deviation; a new deviation replaces only its
    // own pool's.
    let mut later = Ratings::default()
        .with(std(Speed::Blitz), 1650)
        .with(pool_of("blitz_chess960"), 2080);
    later.set_deviation(pool_of("blitz_chess960"), 95);
    let now = store.set_ratings(&t, &alice, &later).await.unwrap();
    let snapshot = |r: Ratings, pool| r.snapshot(pool).unwrap();
    for r in [now, store.ratings(&t, &alice).await.unwrap()] {
        assert_eq!(
            snapshot(r, std(Speed::Blitz)),
            RatingSnapshot {
                rating: 1650,
                deviation: 80
            }
        );
        assert_eq!(
            snapshot(r, pool_of("blitz_chess960")),
            RatingSnapshot {
                rating: 2080,
                deviation: 95
            }
        );
        // A rating never given a deviation reads as provisional.
        assert_eq!(
            snapshot(r, std(Speed::Rapid)),
            RatingSnapshot {
                rating: 1400,
                deviation: UNKNOWN_DEVIATION
            }
        );
        assert_eq!(r.deviation(std(Speed::Rapid)), None);
    }
    let changed = store.ratings_changed_since(None).await.unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].ratings, now);
}

pub async fn ratings_changed_since_lists_exactly_the_players_with_a_rating(
    store: &dyn DurableStore,
) {
    let set = Ratings::default().with(std(Speed::Rapid), 1800);
    store
        .set_ratings(&tenant("t1"), &user("alice"), &set)
        .await
        .unwrap();
    store
        .set_ratings(&tenant("t2"), &user("alice"), &set)
        .await
        .unwrap();
    // A player who only played (a color balance) has no rating.
    store
        .insert_matches(&[record("bob", "carol", T0)], &[], LIVE)
        .await
        .unwrap();
    let mut all = store.ratings_changed_since(None).await.unwrap();
    all.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
    let players: Vec<_> = all
        .iter()
        .map(|c| (c.tenant_id.clone(), c.user_id.clone(), c.ratings))
        .collect();
    assert_eq!(
        players,
        vec![
            (tenant("t1"), user("alice"), set),
            (tenant("t2"), user("alice"), set)
        ]
    );
}

pub async fn ratings_changed_since_lists_only_later_changes(store: &dyn DurableStore) {
    let set = |blitz| Ratings::default().with(std(Speed::Blitz), blitz);
    store
        .set_ratings(&tenant("t1"), &user("alice"), &set(1600))
        .await
        .unwrap();
    let first = store.ratings_changed_since(None).await.unwrap();
    let newest = first.iter().map(|c| c.changed_at).max().unwrap();
    assert!(
        store
            .ratings_changed_since(Some(newest))
            .await
            .unwrap()
            .is_empty(),
        "nothing changed after the newest change"
    );
    // Clocks tick in milliseconds: make sure the next change is later.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store
        .set_ratings(&tenant("t1"), &user("bob"), &set(1700))
        .await
        .unwrap();
    store
        .set_ratings(
            &tenant("t1"),
            &user("alice"),
            &Ratings::default().with(std(Speed::Bullet), 1400),
        )
        .await
        .unwrap();
    let mut later = store.ratings_changed_since(Some(newest)).await.unwrap();
    later.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    assert_eq!(later.len(), 2, "{later:?}");
    assert_eq!(later[0].user_id, user("alice"));
    assert_eq!(
        later[0].ratings,
        Ratings::default()
            .with(std(Speed::Bullet), 1400)
            .with(std(Speed::Blitz), 1600),
        "a change answers the whole row"
    );
    assert_eq!(later[1].user_id, user("bob"));
    assert!(later.iter().all(|c| c.changed_at > newest));
}

pub async fn many_matches_insert_in_one_batch(store: &dyn DurableStore) {
    let records: Vec<_> = (0..1_200)
        .map(|i| record(&format!("w{i}"), &format!("b{i}"), T0 + i))
        .collect();
    store.insert_matches(&records, &[], LIVE).await.unwrap();
    assert_eq!(store.unfinished_matches(T0).await.unwrap().len(), 1_200);
}

pub async fn a_player_in_an_unfinished_match_is_not_claimed_again(store: &dyn DurableStore) {
    let first = record("alice", "bob", T0);
    store
        .insert_matches(std::slice::from_ref(&first), &[], LIVE)
        .await
        .unwrap();
    // A second match of alice, from a queue or a challenge, with a game
    // that exists or not: refused, naming her; carol stays free.
    let second = record("carol", "alice", T0 + 10);
    assert_eq!(
        store
            .insert_matches(std::slice::from_ref(&second), &[], LIVE)
            .await
            .unwrap(),
        vec![Claim::Busy(vec![user("alice")])]
    );
    assert_eq!(
        store
            .claim_matches(&[second.intent()], "w1", 60_000, LIVE)
            .await
            .unwrap(),
        vec![Claim::Busy(vec![user("alice")])]
    );
    assert!(store.match_by_id(&second.match_id).await.unwrap().is_none());
    assert!(store.intent(&second.match_id).await.unwrap().is_none());
    let carol = record("carol", "dave", T0 + 20);
    assert_eq!(
        store
            .insert_matches(std::slice::from_ref(&carol), &[], LIVE)
            .await
            .unwrap(),
        vec![Claim::Stored]
    );
    // Once alice's game finishes, she may be claimed again.
    finish(store, &first).await;
    let third = record("erin", "alice", T0 + 30);
    assert_eq!(
        store
            .insert_matches(std::slice::from_ref(&third), &[], LIVE)
            .await
            .unwrap(),
        vec![Claim::Stored]
    );
}

pub async fn a_claim_lapses_after_the_guard_time(store: &dyn DurableStore) {
    let old = record("alice", "bob", T0);
    store
        .insert_matches(std::slice::from_ref(&old), &[], LIVE)
        .await
        .unwrap();
    let later = record("alice", "carol", T0 + 3_600_000);
    // With the guard time counted from the second match, the first claim
    // is past it (never reported finished): it no longer holds alice.
    assert_eq!(
        store
            .insert_matches(std::slice::from_ref(&later), &[], T0 + 1)
            .await
            .unwrap(),
        vec![Claim::Stored]
    );
    let bob = record("bob", "dave", T0 + 3_600_001);
    assert_eq!(
        store
            .insert_matches(std::slice::from_ref(&bob), &[], T0 + 1)
            .await
            .unwrap(),
        vec![Claim::Stored]
    );
}

pub async fn an_intent_claims_its_players_until_its_record_replaces_it(store: &dyn DurableStore) {
    // bob waited in another region's pool (a region fallback match): the
    // intent and the record keep where, for recovery to find his entry.
    let mut r = record("alice", "bob", T0);
    r.black.region = Some("EU".parse().unwrap());
    let intent = r.intent();
    assert_eq!(
        store
            .claim_matches(std::slice::from_ref(&intent), "w1", 60_000, LIVE)
            .await
            .unwrap(),
        vec![Claim::Stored]
    );
    assert_eq!(
        store
            .claim_matches(std::slice::from_ref(&intent), "w1", 60_000, LIVE)
            .await
            .unwrap(),
        vec![Claim::Stored],
        "claiming again is a no-op"
    );
    assert_eq!(
        store.intent(&r.match_id).await.unwrap().as_ref(),
        Some(&intent)
    );
    assert_eq!(store.intents().await.unwrap(), vec![intent.clone()]);
    assert!(store.match_by_id(&r.match_id).await.unwrap().is_none());
    // While its game is being created, both players are claimed.
    assert_eq!(
        store
            .insert_matches(&[record("bob", "carol", T0 + 1)], &[], LIVE)
            .await
            .unwrap(),
        vec![Claim::Busy(vec![user("bob")])]
    );
    // The game exists: the record replaces the intent, keeping the claims.
    assert_eq!(
        store
            .insert_matches(std::slice::from_ref(&r), &[], LIVE)
            .await
            .unwrap(),
        vec![Claim::Stored]
    );
    assert!(store.intent(&r.match_id).await.unwrap().is_none());
    assert!(store.intents().await.unwrap().is_empty());
    assert_eq!(
        store.match_by_id(&r.match_id).await.unwrap().as_ref(),
        Some(&r)
    );
    assert_eq!(
        store
            .claim_matches(
                &[record("carol", "alice", T0 + 2).intent()],
                "w1",
                60_000,
                LIVE
            )
            .await
            .unwrap(),
        vec![Claim::Busy(vec![user("alice")])]
    );
    // A record stored already is not an intent to claim again.
    assert_eq!(
        store
            .claim_matches(std::slice::from_ref(&intent), "w1", 60_000, LIVE)
            .await
            .unwrap(),
        vec![Claim::Stored]
    );
    assert!(store.intents().await.unwrap().is_empty());
}

pub async fn an_intent_is_dropped_by_its_owner_only_and_taken_over_when_stale(
    store: &dyn DurableStore,
) {
    let fresh = record("alice", "bob", T0).intent();
    let stale = record("carol", "dave", T0).intent();
    store
        .claim_matches(std::slice::from_ref(&fresh), "w1", 60_000, LIVE)
        .await
        .unwrap();
    // Its owner's time is already over (the store's clock decides).
    store
        .claim_matches(std::slice::from_ref(&stale), "w1", -1_000, LIVE)
        .await
        .unwrap();
    let taken = store.take_stale_intents("w2", 60_000, 10).await.unwrap();
    assert_eq!(taken, vec![stale.clone()], "only the stale one, once");
    assert!(
        store
            .take_stale_intents("w3", 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // w1 lost it to w2: its drop does nothing, w2's drops it and its claims.
    assert!(!store.drop_intent(&stale.match_id, "w1").await.unwrap());
    assert!(store.intent(&stale.match_id).await.unwrap().is_some());
    assert!(store.drop_intent(&stale.match_id, "w2").await.unwrap());
    assert!(store.intent(&stale.match_id).await.unwrap().is_none());
    assert_eq!(
        store
            .insert_matches(&[record("carol", "erin", T0 + 1)], &[], LIVE)
            .await
            .unwrap(),
        vec![Claim::Stored],
        "a dropped intent frees its players"
    );
    // An owner that gives up without dropping hands it to the next taker.
    store.yield_intent(&fresh.match_id, "nobody").await.unwrap();
    assert!(
        store
            .take_stale_intents("w2", 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    store.yield_intent(&fresh.match_id, "w1").await.unwrap();
    assert_eq!(
        store.take_stale_intents("w2", 60_000, 10).await.unwrap(),
        vec![fresh.clone()]
    );
    assert!(
        store.intent(&fresh.match_id).await.unwrap().is_some(),
        "yielding keeps it"
    );
}

/// Recovery gives up on a stale pair: of "withdrawn" and "stored" exactly
/// one wins, whichever comes first, and a withdrawn match claims nobody.
pub async fn a_withdrawn_match_is_never_stored_and_a_stored_one_never_withdrawn(
    store: &dyn DurableStore,
) {
    let t1 = tenant("t1");
    let late = record("alice", "bob", T0);
    assert!(store.withdraw_match(&t1, &late.match_id).await.unwrap());
    assert!(
        store.withdraw_match(&t1, &late.match_id).await.unwrap(),
        "withdrawing again says so again"
    );
    assert_eq!(
        store
            .claim_matches(&[late.intent()], "w1", 60_000, LIVE)
            .await
            .unwrap(),
        vec![Claim::Withdrawn],
        "the slow worker's intent is refused"
    );
    assert_eq!(
        store
            .insert_matches(
                std::slice::from_ref(&late),
                &[event(&late.match_id.to_string())],
                LIVE
            )
            .await
            .unwrap(),
        vec![Claim::Withdrawn],
        "so is its record"
    );
    assert!(store.intent(&late.match_id).await.unwrap().is_none());
    assert!(store.match_by_id(&late.match_id).await.unwrap().is_none());
    assert!(
        store
            .events_about(&late.match_id.to_string(), 10)
            .await
            .unwrap()
            .is_empty(),
        "nor is its audit written"
    );
    // Its players are free.
    assert_eq!(
        store
            .insert_matches(&[record("alice", "bob", T0 + 1)], &[], LIVE)
            .await
            .unwrap(),
        vec![Claim::Stored]
    );
    // Something stored first cannot be withdrawn.
    let intended = record("carol", "dave", T0).intent();
    store
        .claim_matches(std::slice::from_ref(&intended), "w1", 60_000, LIVE)
        .await
        .unwrap();
    assert!(!store.withdraw_match(&t1, &intended.match_id).await.unwrap());
    let recorded = record("erin", "frank", T0);
    store
        .insert_matches(std::slice::from_ref(&recorded), &[], LIVE)
        .await
        .unwrap();
    assert!(!store.withdraw_match(&t1, &recorded.match_id).await.unwrap());
    assert_eq!(
        store
            .insert_matches(std::slice::from_ref(&recorded), &[], LIVE)
            .await
            .unwrap(),
        vec![Claim::Stored]
    );
}

pub async fn the_first_idempotent_answer_wins(store: &dyn DurableStore) {
    let scope = IdempotencyScope {
        tenant_id: tenant("t1"),
        user_id: user("alice"),
        key: "k1".into(),
    };
    assert!(store.idempotent_answer(&scope, T0).await.unwrap().is_none());
    let first = StoredAnswer {
        status: 201,
        body: "{\"a\":1}".into(),
        fingerprint: "f1".into(),
    };
    let second = StoredAnswer {
        status: 409,
        body: "{}".into(),
        fingerprint: "f2".into(),
    };
    let expires = T0 + 60_000;
    assert_eq!(
        store
            .save_idempotent_answer(&scope, first.clone(), expires, T0)
            .await
            .unwrap(),
        first
    );
    assert_eq!(
        store
            .save_idempotent_answer(&scope, second.clone(), expires, T0 + 1)
            .await
            .unwrap(),
        first
    );
    assert_eq!(
        store.idempotent_answer(&scope, T0 + 2).await.unwrap(),
        Some(first)
    );
    let other = IdempotencyScope {
        user_id: user("bob"),
        ..scope.clone()
    };
    assert!(store.idempotent_answer(&other, T0).await.unwrap().is_none());
    // Past its time the answer is gone, and a new first answer is kept.
    assert!(
        store
            .idempotent_answer(&scope, expires)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .save_idempotent_answer(&scope, second.clone(), expires + 60_000, expires)
            .await
            .unwrap(),
        second
    );
}

pub async fn a_key_in_flight_belongs_to_one_request_until_settled(store: &dyn DurableStore) {
    let scope = IdempotencyScope {
        tenant_id: tenant("t1"),
        user_id: user("alice"),
        key: "k1".into(),
    };
    let lease = T0 + 60_000;
    let mine = StoredAnswer::in_flight("f1", "claim-a");
    let theirs = StoredAnswer::in_flight("f1", "claim-b");
    assert_eq!(
        store
            .save_idempotent_answer(&scope, mine.clone(), lease, T0)
            .await
            .unwrap(),
        mine
    );
    // A concurrent duplicate finds the first request's mark, not its own.
    let found = store
        .save_idempotent_answer(&scope, theirs.clone(), lease, T0 + 1)
        .await
        .unwrap();
    assert!(found.is_in_flight());
    assert_eq!(found.body, "claim-a");
    // Another request's claim settles nothing.
    let answer = StoredAnswer {
        status: 201,
        body: "{\"id\":1}".into(),
        fingerprint: String::new(),
    };
    store
        .settle_idempotent_answer(&scope, "claim-b", Some(answer.clone()), T0 + 86_400_000)
        .await
        .unwrap();
    assert_eq!(
        store.idempotent_answer(&scope, T0 + 2).await.unwrap(),
        Some(mine.clone())
    );
    // The owner's does; the answer keeps the key's fingerprint and the
    // answer's own lifetime (past the lease).
    store
        .settle_idempotent_answer(&scope, "claim-a", Some(answer.clone()), T0 + 86_400_000)
        .await
        .unwrap();
    let kept = StoredAnswer {
        fingerprint: "f1".into(),
        ..answer
    };
    assert_eq!(
        store.idempotent_answer(&scope, lease + 1).await.unwrap(),
        Some(kept.clone())
    );
    // Settling again (a late duplicate) changes nothing.
    store
        .settle_idempotent_answer(&scope, "claim-a", None, T0)
        .await
        .unwrap();
    assert_eq!(
        store.idempotent_answer(&scope, T0 + 3).await.unwrap(),
        Some(kept)
    );

    // A mark dropped by its owner frees the key at once.
    let other = IdempotencyScope {
        key: "k2".into(),
        ..scope.clone()
    };
    store
        .save_idempotent_answer(&other, mine.clone(), lease, T0)
        .await
        .unwrap();
    store
        .settle_idempotent_answer(&other, "claim-a", None, T0)
        .await
        .unwrap();
    assert!(
        store
            .idempotent_answer(&other, T0 + 1)
            .await
            .unwrap()
            .is_none()
    );
    // A mark whose owner died frees the key when its lease ends.
    let third = IdempotencyScope {
        key: "k3".into(),
        ..scope.clone()
    };
    store
        .save_idempotent_answer(&third, mine.clone(), lease, T0)
        .await
        .unwrap();
    assert_eq!(
        store
            .save_idempotent_answer(&third, theirs.clone(), lease + 60_000, lease)
            .await
            .unwrap(),
        theirs
    );
}

pub async fn purge_expired_drops_expired_answers_and_lapsed_claims(store: &dyn DurableStore) {
    let scope = |key: &str| IdempotencyScope {
        tenant_id: tenant("t1"),
        user_id: user("alice"),
        key: key.into(),
    };
    let answer = StoredAnswer {
        status: 201,
        body: "{}".into(),
        fingerprint: "f".into(),
    };
    store
        .save_idempotent_answer(&scope("old"), answer.clone(), T0 + 10, T0)
        .await
        .unwrap();
    store
        .save_idempotent_answer(&scope("new"), answer.clone(), T0 + 1_000, T0)
        .await
        .unwrap();
    store
        .insert_matches(&[record("alice", "bob", T0)], &[], LIVE)
        .await
        .unwrap();
    store
        .insert_matches(&[record("carol", "dave", T0 + 500)], &[], LIVE)
        .await
        .unwrap();
    // Answers expired at T0 + 100 and claims from before T0 + 100 go.
    assert_eq!(store.purge_expired(T0 + 100, T0 + 100).await.unwrap(), 3);
    assert!(
        store
            .idempotent_answer(&scope("new"), T0 + 100)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store
            .insert_matches(&[record("alice", "erin", T0 + 600)], &[], LIVE)
            .await
            .unwrap(),
        vec![Claim::Stored],
        "alice's lapsed claim was purged"
    );
    assert_eq!(
        store
            .insert_matches(&[record("carol", "frank", T0 + 700)], &[], LIVE)
            .await
            .unwrap(),
        vec![Claim::Busy(vec![user("carol")])],
        "carol's live claim stays"
    );
}

pub async fn the_audit_log_is_read_per_tenant_newest_first_filtered_and_paged(
    store: &dyn DurableStore,
) {
    let event = |t: &str, kind: &str, subject: &str, at: i64| AuditEvent {
        at,
        tenant_id: tenant(t),
        kind: kind.into(),
        subject: subject.into(),
        detail: serde_json::json!({ "n": at }),
    };
    store
        .record(&[
            event("t1", "match", "m1", T0),
            event("t2", "match", "m2", T0 + 1),
            event("t1", "timeout", "q1", T0 + 2),
            event("t1", "match", "m3", T0 + 3),
        ])
        .await
        .unwrap();
    let read = |kind: Option<&str>, subject: Option<&str>, before, limit| AuditQuery {
        tenant_id: tenant("t1"),
        kind: kind.map(Into::into),
        subject: subject.map(Into::into),
        before,
        limit,
    };
    let ats = |events: &[(i64, AuditEvent)]| events.iter().map(|(_, e)| e.at).collect::<Vec<_>>();
    let all = store
        .audit_events(&read(None, None, None, 10))
        .await
        .unwrap();
    assert_eq!(ats(&all), [T0 + 3, T0 + 2, T0], "t1's, newest first");
    assert!(all.windows(2).all(|w| w[0].0 > w[1].0));
    assert_eq!(all[0].1.detail, serde_json::json!({ "n": T0 + 3 }));
    let matches = store
        .audit_events(&read(Some("match"), None, None, 10))
        .await
        .unwrap();
    assert_eq!(ats(&matches), [T0 + 3, T0]);
    let about = store
        .audit_events(&read(None, Some("q1"), None, 10))
        .await
        .unwrap();
    assert_eq!(ats(&about), [T0 + 2]);
    // A page, then the next one from its last id.
    let first = store
        .audit_events(&read(None, None, None, 2))
        .await
        .unwrap();
    assert_eq!(ats(&first), [T0 + 3, T0 + 2]);
    let next = store
        .audit_events(&read(None, None, Some(first[1].0), 2))
        .await
        .unwrap();
    assert_eq!(ats(&next), [T0]);
}

pub async fn configuration_changes_with_its_version_and_audit(store: &dyn DurableStore) {
    use matchmaking_api::store::ConfigScope;
    use serde_json::{Value, json};
    let read = store.config().await.unwrap();
    assert!(read.rows.is_empty());
    let v0 = read.version;
    let window = |w: i32| json!({ "initial_rating_window": w });
    let audit = |subject: &str, after: Option<Value>| AuditEvent {
        at: T0,
        tenant_id: tenant("t1"),
        kind: "policy_changed".into(),
        subject: subject.into(),
        detail: json!({ "actor": "t1/ops", "after": after }),
    };
    let p5 = pool("standard_5+0_rated_GLOBAL");
    let t1 = tenant("t1");
    let tenant_policy = ConfigScope::Policy(None);
    let before = store
        .change_config(
            &t1,
            tenant_policy.clone(),
            Some(window(150)),
            audit("policy:t1", Some(window(150))),
        )
        .await
        .unwrap();
    assert_eq!(before, None);
    let before = store
        .change_config(
            &t1,
            tenant_policy.clone(),
            Some(window(200)),
            audit("policy:t1", Some(window(200))),
        )
        .await
        .unwrap();
    assert_eq!(before, Some(window(150)));
    store
        .change_config(
            &t1,
            ConfigScope::Policy(Some(p5)),
            Some(window(300)),
            audit("policy:t1", Some(window(300))),
        )
        .await
        .unwrap();
    // The tenant's configuration and flags: other rows of the same tenant.
    let config = json!({ "time_controls": ["5+0"], "default_region": "EU", "regions": ["EU"] });
    let flags = json!({ "challenges": false });
    store
        .change_config(
            &t1,
            ConfigScope::Tenant,
            Some(config.clone()),
            audit("tenant:t1", None),
        )
        .await
        .unwrap();
    store
        .change_config(
            &t1,
            ConfigScope::Flags,
            Some(flags.clone()),
            audit("flags:t1", None),
        )
        .await
        .unwrap();
    let read = store.config().await.unwrap();
    assert_eq!(read.version, v0 + 5);
    assert_eq!(store.config_version().await.unwrap(), read.version);
    let body = |scope: ConfigScope| {
        let found: Vec<&Value> = read
            .rows
            .iter()
            .filter(|r| r.tenant_id == t1 && r.scope == scope)
            .map(|r| &r.body)
            .collect();
        assert!(found.len() <= 1, "{scope:?} twice");
        found.first().map(|b| (*b).clone())
    };
    assert_eq!(read.rows.len(), 4);
    assert_eq!(body(tenant_policy), Some(window(200)));
    assert_eq!(body(ConfigScope::Policy(Some(p5))), Some(window(300)));
    assert_eq!(body(ConfigScope::Tenant), Some(config.clone()));
    assert_eq!(body(ConfigScope::Flags), Some(flags));
    let before = store
        .change_config(
            &t1,
            ConfigScope::Policy(Some(p5)),
            None,
            audit("policy:t1", None),
        )
        .await
        .unwrap();
    assert_eq!(before, Some(window(300)));
    let before = store
        .change_config(&t1, ConfigScope::Tenant, None, audit("tenant:t1", None))
        .await
        .unwrap();
    assert_eq!(before, Some(config));
    let read = store.config().await.unwrap();
    assert_eq!(read.rows.len(), 2);
    assert_eq!(read.version, v0 + 7);
    // Each change in the audit log, with what was there before.
    let log = store.events_about("policy:t1", 10).await.unwrap();
    assert_eq!(log.len(), 4);
    assert_eq!(log[0].detail["before"]["initial_rating_window"], 300);
    assert_eq!(log[0].detail["after"], Value::Null);
    assert_eq!(log[3].detail["before"], Value::Null);
    assert_eq!(log[3].detail["actor"], "t1/ops");
    let log = store.events_about("tenant:t1", 10).await.unwrap();
    assert_eq!(log[0].detail["before"]["default_region"], "EU");
}

/// Blocks: set and lifted once each (the audit log says so once), listed
/// oldest first, bounded per blocker, and read among the players of a
/// pass in both directions; restricted players are configuration rows.
pub async fn blocks_and_restrictions_are_kept_and_read_among_players(store: &dyn DurableStore) {
    use matchmaking_api::domain::{Millis, UserId};
    use matchmaking_api::store::{BlockChange, ConfigScope, MAX_BLOCKS_PER_USER};
    use serde_json::json;
    let t1 = tenant("t1");
    let (a, b, c, d) = (user("a"), user("b"), user("c"), user("d"));
    let audit = |at: Millis| AuditEvent {
        at,
        tenant_id: t1.clone(),
        kind: "block_added".into(),
        subject: "blocks:t1/a".into(),
        detail: json!({}),
    };
    let set = |u: &UserId, v: &UserId, on: bool, at: Millis| {
        let (u, v, audit) = (u.clone(), v.clone(), audit(at));
        let t1 = t1.clone();
        async move { store.set_block(&t1, (&u, &v), on, audit).await.unwrap() }
    };
    assert_eq!(set(&a, &b, true, T0).await, BlockChange::Changed);
    assert_eq!(set(&a, &b, true, T0 + 1).await, BlockChange::Unchanged);
    assert_eq!(set(&c, &a, true, T0 + 2).await, BlockChange::Changed);
    assert_eq!(set(&a, &d, true, T0 + 3).await, BlockChange::Changed);
    assert_eq!(
        store.blocks_of(&t1, &a).await.unwrap(),
        vec![b.clone(), d.clone()]
    );
    assert_eq!(
        store.events_about("blocks:t1/a", 10).await.unwrap().len(),
        3
    );
    // Another tenant's players of the same names are strangers.
    let t2 = tenant("t2");
    assert!(store.blocks_of(&t2, &a).await.unwrap().is_empty());

    // Among a, b, c: a blocks b, c blocks a (a's block of d is outside).
    let among = store
        .relations_among(&t1, &[a.clone(), b.clone(), c.clone()])
        .await
        .unwrap();
    let mut blocks = among.blocks.clone();
    blocks.sort();
    assert_eq!(blocks, vec![(a.clone(), b.clone()), (c.clone(), a.clone())]);
    assert!(among.bars(&b, &a) && among.bars(&a, &c));
    assert!(!among.bars(&b, &c));
    assert!(among.restricted.is_empty());
    assert!(
        store
            .relations_among(&t2, &[a.clone(), b.clone()])
            .await
            .unwrap()
            .blocks
            .is_empty()
    );

    assert_eq!(set(&a, &b, false, T0 + 4).await, BlockChange::Changed);
    assert_eq!(set(&a, &b, false, T0 + 5).await, BlockChange::Unchanged);
    assert_eq!(store.blocks_of(&t1, &a).await.unwrap(), vec![d.clone()]);
    let among = store
        .relations_among(&t1, &[a.clone(), b.clone()])
        .await
        .unwrap();
    assert!(!among.bars(&a, &b));

    // A restriction is a configuration row; only one side restricted bars.
    let v0 = store.config_version().await.unwrap();
    let restrict = AuditEvent {
        subject: "restricted:t1/b".into(),
        kind: "restricted_changed".into(),
        ..audit(T0 + 6)
    };
    store
        .change_config(
            &t1,
            ConfigScope::Restricted(b.clone()),
            Some(json!({ "reason": "engine" })),
            restrict,
        )
        .await
        .unwrap();
    assert_eq!(store.config_version().await.unwrap(), v0 + 1);
    let read = store.config().await.unwrap();
    assert!(read.rows.iter().any(|r| r.tenant_id == t1
        && r.scope == ConfigScope::Restricted(b.clone())
        && r.body["reason"] == "engine"));
    let among = store
        .relations_among(&t1, &[a.clone(), b.clone(), c.clone()])
        .await
        .unwrap();
    assert_eq!(among.restricted, [b.clone()].into_iter().collect());
    assert!(among.bars(&a, &b) && among.bars(&c, &b));

    // The most blocks one player keeps: the next is refused, a block
    // already there is still answered as such.
    let many: Vec<UserId> = (0..MAX_BLOCKS_PER_USER)
        .map(|i| user(&format!("m{i}")))
        .collect();
    for (i, m) in many.iter().enumerate().skip(1) {
        assert_eq!(
            set(&d, m, true, T0 + 10 + i as Millis).await,
            BlockChange::Changed
        );
    }
    assert_eq!(
        set(&d, &many[0], true, T0 + 5_000).await,
        BlockChange::Changed
    );
    assert_eq!(set(&d, &a, true, T0 + 5_001).await, BlockChange::Full);
    assert_eq!(
        set(&d, &many[0], true, T0 + 5_002).await,
        BlockChange::Unchanged
    );
    assert_eq!(
        store.blocks_of(&t1, &d).await.unwrap().len(),
        MAX_BLOCKS_PER_USER
    );
}

/// A player's latest opponents, newest first, bounded in number and age,
/// whichever colour they had.
pub async fn a_no_show_cooldown_is_kept_with_its_match_while_it_runs(store: &dyn DurableStore) {
    let (a, b) = (record("alice", "bob", T0), record("carol", "dave", T0 + 10));
    store
        .insert_matches(&[a.clone(), b.clone()], &[], LIVE)
        .await
        .unwrap();
    assert!(store.cooldowns(T0).await.unwrap().is_empty());
    assert!(
        store
            .record_no_show(&a.tenant_id, &a.game_id, &user("bob"), T0 + 120_000)
            .await
            .unwrap()
    );
    // Again (a retried report), later: the first is kept.
    assert!(
        store
            .record_no_show(&a.tenant_id, &a.game_id, &user("bob"), T0 + 500_000)
            .await
            .unwrap()
    );
    store
        .record_no_show(&b.tenant_id, &b.game_id, &user("carol"), T0 + 60_000)
        .await
        .unwrap();
    finish(store, &a).await;
    let running = store.cooldowns(T0 + 1_000).await.unwrap();
    let seen: Vec<_> = running
        .iter()
        .map(|c| (c.record.match_id, c.user_id.as_str(), c.until))
        .collect();
    assert_eq!(
        seen,
        vec![
            (b.match_id, "carol", T0 + 60_000),
            (a.match_id, "bob", T0 + 120_000)
        ]
    );
    assert_eq!(running[1].record.black.user_id, user("bob"));
    // Over once its time is up; an unknown game is not recorded.
    let later = store.cooldowns(T0 + 60_000).await.unwrap();
    assert_eq!(later.len(), 1);
    assert!(store.cooldowns(T0 + 120_000).await.unwrap().is_empty());
    let unknown = GameId::parse("g_unknown").unwrap();
    assert!(
        !store
            .record_no_show(&tenant("t1"), &unknown, &user("bob"), T0 + 1)
            .await
            .unwrap()
    );
    assert!(store.cooldowns(T0).await.unwrap().len() == 2);
}

pub async fn recent_opponents_are_read_newest_first_within_bounds(store: &dyn DurableStore) {
    const LIVE: i64 = T0 - 3_600_000;
    for (white, black, at) in [
        ("alice", "bob", T0),
        ("carol", "alice", T0 + 10),
        ("alice", "dave", T0 + 20),
    ] {
        let r = record(white, black, at);
        store
            .insert_matches(std::slice::from_ref(&r), &[], LIVE)
            .await
            .unwrap();
        finish(store, &r).await;
    }
    let t1 = tenant("t1");
    let users = [user("alice"), user("bob"), user("zed")];
    let all = store.recent_opponents(&t1, &users, T0, 10).await.unwrap();
    assert_eq!(
        all.get(&user("alice")).cloned().unwrap(),
        vec![
            (user("dave"), T0 + 20),
            (user("carol"), T0 + 10),
            (user("bob"), T0)
        ]
    );
    assert_eq!(
        all.get(&user("bob")).cloned().unwrap(),
        vec![(user("alice"), T0)]
    );
    assert!(!all.contains_key(&user("zed")));
    let two = store.recent_opponents(&t1, &users, T0, 2).await.unwrap();
    assert_eq!(two[&user("alice")].len(), 2);
    let late = store
        .recent_opponents(&t1, &users, T0 + 15, 10)
        .await
        .unwrap();
    assert_eq!(late[&user("alice")], vec![(user("dave"), T0 + 20)]);
    assert!(!late.contains_key(&user("bob")));
    assert!(
        store
            .recent_opponents(&tenant("t2"), &users, T0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}
