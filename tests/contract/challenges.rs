//! The `ChallengeStore` contract.

use matchmaking_api::domain::{
    Challenge, ChallengeId, ChallengeStatus, GameId, MatchId, Mode, PreferredColor, Variant,
};
use matchmaking_api::store::{Direction, DurableStore, Transition};

use super::{T0, tenant, user};

fn pending(from: &str, to: &str, at: i64) -> Challenge {
    Challenge {
        id: ChallengeId::generate(),
        tenant_id: tenant("t1"),
        challenger: user(from),
        opponent: user(to),
        time_control: "5+0".parse().unwrap(),
        mode: Mode::Rated,
        variant: Variant::Atomic,
        preferred_color: PreferredColor::White,
        status: ChallengeStatus::Pending,
        created_at: at,
        expires_at: at + 300_000,
        match_id: None,
        game_id: None,
    }
}

fn change(from: ChallengeStatus, to: ChallengeStatus) -> Transition<'static> {
    Transition {
        from,
        to,
        match_id: None,
        game_id: None,
    }
}

pub async fn a_challenge_round_trips_within_its_tenant(store: &dyn DurableStore) {
    let c = pending("alice", "bob", T0);
    assert!(store.create_challenge(&c, 20, T0).await.unwrap());
    assert_eq!(
        store.challenge(&tenant("t1"), &c.id).await.unwrap(),
        Some(c.clone())
    );
    assert!(
        store
            .challenge(&tenant("t2"), &c.id)
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn pending_outgoing_challenges_are_bounded(store: &dyn DurableStore) {
    for i in 0..3 {
        assert!(
            store
                .create_challenge(&pending("alice", &format!("p{i}"), T0), 3, T0)
                .await
                .unwrap()
        );
    }
    assert!(
        !store
            .create_challenge(&pending("alice", "p9", T0), 3, T0)
            .await
            .unwrap()
    );
    // Expired ones no longer count.
    assert!(
        store
            .create_challenge(&pending("alice", "p9", T0), 3, T0 + 300_000)
            .await
            .unwrap()
    );
}

pub async fn transitions_apply_once_and_only_from_their_status(store: &dyn DurableStore) {
    let c = pending("alice", "bob", T0);
    store.create_challenge(&c, 20, T0).await.unwrap();
    let m = MatchId::generate();
    let claim = Transition {
        match_id: Some(&m),
        ..change(ChallengeStatus::Pending, ChallengeStatus::Accepting)
    };
    assert!(
        store
            .transition_challenge(&tenant("t1"), &c.id, claim, T0 + 1)
            .await
            .unwrap()
    );
    assert!(
        !store
            .transition_challenge(&tenant("t1"), &c.id, claim, T0 + 2)
            .await
            .unwrap(),
        "once"
    );
    let cancel = change(ChallengeStatus::Pending, ChallengeStatus::Cancelled);
    assert!(
        !store
            .transition_challenge(&tenant("t1"), &c.id, cancel, T0 + 3)
            .await
            .unwrap()
    );
    let g = GameId::for_match(&m);
    let done = Transition {
        game_id: Some(&g),
        ..change(ChallengeStatus::Accepting, ChallengeStatus::Accepted)
    };
    assert!(
        store
            .transition_challenge(&tenant("t1"), &c.id, done, T0 + 4)
            .await
            .unwrap()
    );
    let got = store
        .challenge(&tenant("t1"), &c.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.status, got.match_id, got.game_id),
        (ChallengeStatus::Accepted, Some(m), Some(g))
    );
    // Another tenant cannot touch it.
    let other = pending("x", "y", T0);
    store.create_challenge(&other, 20, T0).await.unwrap();
    assert!(
        !store
            .transition_challenge(&tenant("t2"), &other.id, cancel, T0)
            .await
            .unwrap()
    );
}

pub async fn an_expired_challenge_cannot_leave_pending_and_is_swept(store: &dyn DurableStore) {
    let c = pending("alice", "bob", T0);
    store.create_challenge(&c, 20, T0).await.unwrap();
    let later = c.expires_at;
    let decline = change(ChallengeStatus::Pending, ChallengeStatus::Declined);
    assert!(
        !store
            .transition_challenge(&tenant("t1"), &c.id, decline, later)
            .await
            .unwrap()
    );
    assert_eq!(store.expire_challenges(later).await.unwrap(), 1);
    assert_eq!(
        store
            .challenge(&tenant("t1"), &c.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        ChallengeStatus::Expired
    );
    assert_eq!(store.expire_challenges(later).await.unwrap(), 0);
}

pub async fn pending_lists_split_incoming_from_outgoing(store: &dyn DurableStore) {
    let a = pending("alice", "bob", T0);
    let b = pending("carol", "alice", T0 + 1);
    store.create_challenge(&a, 20, T0).await.unwrap();
    store.create_challenge(&b, 20, T0).await.unwrap();
    let out = store
        .pending_challenges(&tenant("t1"), &user("alice"), Direction::Outgoing, T0)
        .await
        .unwrap();
    let inc = store
        .pending_challenges(&tenant("t1"), &user("alice"), Direction::Incoming, T0)
        .await
        .unwrap();
    assert_eq!(out.iter().map(|c| c.id).collect::<Vec<_>>(), vec![a.id]);
    assert_eq!(inc.iter().map(|c| c.id).collect::<Vec<_>>(), vec![b.id]);
    assert!(
        store
            .pending_challenges(
                &tenant("t1"),
                &user("alice"),
                Direction::Outgoing,
                a.expires_at
            )
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn stale_accepts_are_found_by_age(store: &dyn DurableStore) {
    let c = pending("alice", "bob", T0);
    store.create_challenge(&c, 20, T0).await.unwrap();
    let claim = change(ChallengeStatus::Pending, ChallengeStatus::Accepting);
    store
        .transition_challenge(&tenant("t1"), &c.id, claim, T0 + 10)
        .await
        .unwrap();
    assert!(store.stale_accepting(T0 + 10).await.unwrap().is_empty());
    assert_eq!(store.stale_accepting(T0 + 11).await.unwrap()[0].id, c.id);
}
