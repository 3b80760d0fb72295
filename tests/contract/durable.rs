//! The `DurableStore` contract.

use matchmaking_api::domain::{
    GameId, MatchId, MatchRecord, MatchSide, MatchSource, QueueEntryId, Speed,
};
use matchmaking_api::store::{AuditEvent, DurableStore, Ratings};

use super::{T0, pool, tenant, user};

fn record(white: &str, black: &str, at: i64) -> MatchRecord {
    let m = MatchId::generate();
    let side = |u: &str, r| MatchSide {
        user_id: user(u),
        username: matchmaking_api::domain::Username::sanitize(&format!("{u} name")),
        rating: r,
        entry_id: Some(QueueEntryId::generate()),
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
        .insert_matches(std::slice::from_ref(&r), &[event(&r.match_id.to_string())])
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
    store
        .insert_matches(std::slice::from_ref(&r), &[])
        .await
        .unwrap();
    store
        .insert_matches(std::slice::from_ref(&r), &[])
        .await
        .unwrap();
    let r2 = record("alice", "carol", T0 + 1);
    store
        .insert_matches(std::slice::from_ref(&r2), &[])
        .await
        .unwrap();
    let b = store
        .color_balances(
            &tenant("t1"),
            &[user("alice"), user("bob"), user("carol"), user("zed")],
        )
        .await
        .unwrap();
    assert_eq!(b.get(&user("alice")), Some(&2));
    assert_eq!(b.get(&user("bob")), Some(&-1));
    assert_eq!(b.get(&user("carol")), Some(&-1));
    assert_eq!(b.get(&user("zed")), None);

    // One batch: a record already stored (no move), alice twice (white
    // then black: no net move), and the audit of the batch.
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
    store
        .insert_matches(&[r.clone(), r3.clone(), r4.clone()], &audit)
        .await
        .unwrap();
    let b = store
        .color_balances(
            &tenant("t1"),
            &[user("alice"), user("bob"), user("dave"), user("erin")],
        )
        .await
        .unwrap();
    assert_eq!(b.get(&user("alice")), Some(&2));
    assert_eq!(b.get(&user("bob")), Some(&-1));
    assert_eq!(b.get(&user("dave")), Some(&-1));
    assert_eq!(b.get(&user("erin")), Some(&1));
    let got = store
        .events_about(&r4.match_id.to_string(), 10)
        .await
        .unwrap();
    assert_eq!(got, vec![audit[1].clone()]);
    assert!(store.match_by_id(&r3.match_id).await.unwrap().is_some());
}

pub async fn finishing_a_game_ends_its_match_once(store: &dyn DurableStore) {
    let r = record("alice", "bob", T0);
    store
        .insert_matches(std::slice::from_ref(&r), &[])
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

pub async fn ratings_default_to_1500_and_merge_by_speed(store: &dyn DurableStore) {
    let r = store.ratings(&tenant("t1"), &user("alice")).await.unwrap();
    assert_eq!(r, Ratings::default());
    assert_eq!(r.get(Speed::Blitz), 1500);
    let set = Ratings {
        blitz: Some(1620),
        bullet: Some(1700),
        ..Ratings::default()
    };
    store
        .set_ratings(&tenant("t1"), &user("alice"), &set)
        .await
        .unwrap();
    let more = Ratings {
        blitz: Some(1650),
        ..Ratings::default()
    };
    let now = store
        .set_ratings(&tenant("t1"), &user("alice"), &more)
        .await
        .unwrap();
    assert_eq!(
        now,
        Ratings {
            bullet: Some(1700),
            blitz: Some(1650),
            ..Ratings::default()
        }
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

pub async fn ratings_changed_since_lists_exactly_the_players_with_a_rating(
    store: &dyn DurableStore,
) {
    let set = Ratings {
        rapid: Some(1800),
        ..Ratings::default()
    };
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
        .insert_matches(&[record("bob", "carol", T0)], &[])
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
    let set = |blitz| Ratings {
        blitz: Some(blitz),
        ..Ratings::default()
    };
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
            &Ratings {
                bullet: Some(1400),
                ..Ratings::default()
            },
        )
        .await
        .unwrap();
    let mut later = store.ratings_changed_since(Some(newest)).await.unwrap();
    later.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    assert_eq!(later.len(), 2, "{later:?}");
    assert_eq!(later[0].user_id, user("alice"));
    assert_eq!(
        later[0].ratings,
        Ratings {
            bullet: Some(1400),
            blitz: Some(1600),
            ..Ratings::default()
        },
        "a change answers the whole row"
    );
    assert_eq!(later[1].user_id, user("bob"));
    assert!(later.iter().all(|c| c.changed_at > newest));
}

pub async fn many_matches_insert_in_one_batch(store: &dyn DurableStore) {
    let records: Vec<_> = (0..1_200)
        .map(|i| record(&format!("w{i}"), &format!("b{i}"), T0 + i))
        .collect();
    store.insert_matches(&records, &[]).await.unwrap();
    assert_eq!(store.unfinished_matches(T0).await.unwrap().len(), 1_200);
}
