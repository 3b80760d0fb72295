use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, error_code, join_body, spawn_on};

fn body(opponent: &str) -> Value {
    json!({ "opponent_user_id": opponent, "time_control": "5+0", "mode": "rated" })
}

async fn post(app: &TestApp, token: &str, path: &str, body: Option<&Value>) -> Response {
    let mut req = app
        .client
        .post(format!("{}/v1/matchmaking/challenges{path}", app.address))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(b);
    }
    req.send().await.unwrap()
}

async fn get(app: &TestApp, token: &str, path: &str) -> Response {
    app.client
        .get(format!("{}/v1/matchmaking/challenges{path}", app.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn cancel(app: &TestApp, token: &str, id: &str) -> Response {
    app.client
        .delete(format!("{}/v1/matchmaking/challenges/{id}", app.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Alice challenges `opponent`; answers the challenge id.
async fn challenge(app: &TestApp, opponent: &str, extra: Value) -> String {
    let mut b = body(opponent);
    b.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let r = post(app, &app.token("alice"), "", Some(&b)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    v["challenge_id"].as_str().unwrap().to_owned()
}

async fn creating_a_challenge_answers_201_pending_with_defaults(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let r = post(&app, &app.token("alice"), "", Some(&body("bob"))).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    assert!(v["challenge_id"].as_str().unwrap().starts_with("c_"));
    assert_eq!(v["status"], "PENDING");
    assert_eq!(v["variant"], "standard");
    assert_eq!(v["preferred_color"], "random");
    assert_eq!(v["challenger_user_id"], "alice");
    assert!(v["expires_at"].as_str().unwrap().ends_with('Z'));
}

async fn bad_challenges_are_400_naming_the_field(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let t = app.token("alice");
    for (b, field) in [
        (body("alice"), "opponent_user_id"),
        (
            json!({ "opponent_user_id": "bob", "time_control": "4+0", "mode": "rated" }),
            "time_control",
        ),
        (
            json!({ "opponent_user_id": "bob", "time_control": "5+0", "mode": "ranked" }),
            "mode",
        ),
        (
            json!({ "opponent_user_id": "bob", "time_control": "5+0", "mode": "rated", "variant": "go" }),
            "variant",
        ),
        (
            json!({ "opponent_user_id": "bob", "time_control": "5+0", "mode": "rated", "preferred_color": "red" }),
            "preferred_color",
        ),
        (
            json!({ "time_control": "5+0", "mode": "rated" }),
            "opponent_user_id",
        ),
    ] {
        let r = post(&app, &t, "", Some(&b)).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{b}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "INVALID_REQUEST");
        assert!(
            v["error"]["message"].as_str().unwrap().starts_with(field),
            "{v}"
        );
    }
}

async fn accepting_creates_one_game_with_the_preferred_colors_and_guards_both(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    let id = challenge(
        &app,
        "bob",
        json!({ "preferred_color": "black", "variant": "chess960" }),
    )
    .await;
    let r = post(&app, &bob, &format!("/{id}/accept"), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "ACCEPTED");
    let game = v["game_id"].as_str().unwrap().to_owned();
    assert!(game.starts_with("g_"));
    // Both see it, and both are in that game.
    let seen: Value = get(&app, &alice, &format!("/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen["status"], "ACCEPTED");
    assert_eq!(seen["game_id"], game.as_str());
    for (t, other, color) in [(&alice, "bob", "black"), (&bob, "alice", "white")] {
        let active = app.active(t).await;
        assert_eq!(active["match"]["game_id"], game.as_str());
        assert_eq!(
            active["match"]["color"], color,
            "the challenger asked for black"
        );
        assert_eq!(active["match"]["variant"], "chess960");
        assert_eq!(active["match"]["opponent"]["user_id"], other);
        let r = app.join(t, &join_body("5+0")).await;
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(error_code(r).await, "ACTIVE_GAME_EXISTS");
    }
    // The match is recorded as coming from a challenge.
    let tenant = matchmaking_api::domain::TenantId::parse("t1").unwrap();
    let alice_id = matchmaking_api::domain::UserId::parse("alice").unwrap();
    let record = app
        .durable()
        .await
        .active_match(&tenant, &alice_id, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        record.source,
        matchmaking_api::domain::MatchSource::Challenge
    );
    assert_eq!(record.game_id.as_str(), game);
    assert_eq!(record.black.user_id, alice_id);
    // Reporting the game finished releases both, like a queue match.
    assert_eq!(
        app.game_finished(&app.admin_token(), &game).await.status(),
        StatusCode::OK
    );
    app.join_ok(&alice, &join_body("5+0")).await;
}

async fn only_the_challenged_player_can_accept(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let id = challenge(&app, "bob", json!({})).await;
    let r = post(&app, &app.token("alice"), &format!("/{id}/accept"), None).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(r).await, "CANNOT_ACCEPT");
    for stranger in [app.token("carol"), app.token_for("t2", "bob", &[])] {
        let r = post(&app, &stranger, &format!("/{id}/accept"), None).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            crate::helpers::error_of(r).await,
            ("NOT_FOUND".into(), "no such challenge".into())
        );
        assert_eq!(
            get(&app, &stranger, &format!("/{id}")).await.status(),
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(
        get(&app, &app.token("bob"), "/c_garbage").await.status(),
        StatusCode::NOT_FOUND
    );
}

async fn a_player_searching_in_a_queue_cannot_be_in_an_accepted_challenge(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let id = challenge(&app, "bob", json!({})).await;
    app.join_ok(&app.token("alice"), &join_body("30+0")).await;
    let r = post(&app, &app.token("bob"), &format!("/{id}/accept"), None).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(r).await, "CANNOT_ACCEPT");
    // The challenge is still pending, and bob may queue.
    let v: Value = get(&app, &app.token("bob"), &format!("/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "PENDING");
    app.join_ok(&app.token("bob"), &join_body("10+0")).await;
}

async fn declined_and_cancelled_challenges_accept_no_further_transition(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    let declined = challenge(&app, "bob", json!({})).await;
    let r = post(&app, &alice, &format!("/{declined}/decline"), None).await;
    assert_eq!(error_code(r).await, "INVALID_STATE",);
    let r = post(&app, &bob, &format!("/{declined}/decline"), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "DECLINED");
    let cancelled = challenge(&app, "bob", json!({})).await;
    assert_eq!(
        error_code(cancel(&app, &bob, &cancelled).await).await,
        "INVALID_STATE"
    );
    let r = cancel(&app, &alice, &cancelled).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "CANCELLED");
    for id in [&declined, &cancelled] {
        for r in [
            post(&app, &bob, &format!("/{id}/accept"), None).await,
            post(&app, &bob, &format!("/{id}/decline"), None).await,
            cancel(&app, &alice, id).await,
        ] {
            assert_eq!(r.status(), StatusCode::CONFLICT);
            assert_eq!(error_code(r).await, "INVALID_STATE");
        }
    }
}

async fn incoming_and_outgoing_list_pending_challenges_only(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    let first = challenge(&app, "bob", json!({})).await;
    let second = challenge(&app, "bob", json!({ "time_control": "3+0" })).await;
    challenge(&app, "carol", json!({})).await;
    cancel(&app, &alice, &first).await;
    let incoming: Value = get(&app, &bob, "/incoming").await.json().await.unwrap();
    let ids: Vec<&str> = incoming["challenges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["challenge_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str()]);
    let outgoing: Value = get(&app, &alice, "/outgoing").await.json().await.unwrap();
    assert_eq!(outgoing["challenges"].as_array().unwrap().len(), 2);
    let none: Value = get(&app, &alice, "/incoming").await.json().await.unwrap();
    assert_eq!(none["challenges"], json!([]));
}

async fn pending_challenges_expire_and_read_expired_at_once(backend: Backend) {
    // The worker is off: reads alone must show the expiry.
    let Some((app, clock)) = crate::helpers::spawn_on_with_clock(backend, |s| {
        s.challenge_ttl_seconds = 0.3;
        s.worker_enabled = false;
    })
    .await
    else {
        return;
    };
    let id = challenge(&app, "bob", json!({})).await;
    let status = || async {
        let v: Value = get(&app, &app.token("bob"), &format!("/{id}"))
            .await
            .json()
            .await
            .unwrap();
        v["status"].clone()
    };
    clock.advance(299);
    assert_eq!(status().await, "PENDING");
    clock.advance(1);
    assert_eq!(status().await, "EXPIRED");
    let r = post(&app, &app.token("bob"), &format!("/{id}/accept"), None).await;
    assert_eq!(error_code(r).await, "INVALID_STATE");
    let incoming: Value = get(&app, &app.token("bob"), "/incoming")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(incoming["challenges"], json!([]));
}

async fn the_number_of_pending_outgoing_challenges_is_bounded(backend: Backend) {
    let Some(app) = spawn_on(backend, |s| s.max_pending_challenges = 2).await else {
        return;
    };
    challenge(&app, "bob", json!({})).await;
    let second = challenge(&app, "carol", json!({})).await;
    let r = post(&app, &app.token("alice"), "", Some(&body("dave"))).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(r).await, "TOO_MANY_CHALLENGES");
    cancel(&app, &app.token("alice"), &second).await;
    challenge(&app, "dave", json!({})).await;
}

async fn turned_off_challenges_answer_404_challenges_disabled(backend: Backend) {
    let Some(app) = spawn_on(backend, |s| s.challenges_enabled = false).await else {
        return;
    };
    let r = post(&app, &app.token("alice"), "", Some(&body("bob"))).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "CHALLENGES_DISABLED");
    let r = get(&app, &app.token("alice"), "/incoming").await;
    assert_eq!(error_code(r).await, "CHALLENGES_DISABLED");
}

async fn many_parallel_accepts_create_exactly_one_game(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let bob = app.token("bob");
    for _ in 0..5 {
        let id = challenge(&app, "bob", json!({})).await;
        let path = format!("/{id}/accept");
        let answers =
            futures::future::join_all((0..20).map(|_| post(&app, &bob, &path, None))).await;
        let ok: Vec<&Response> = answers
            .iter()
            .filter(|r| r.status() == StatusCode::OK)
            .collect();
        assert_eq!(ok.len(), 1, "exactly one accept wins");
        for r in answers.iter().filter(|r| r.status() != StatusCode::OK) {
            assert_eq!(r.status(), StatusCode::CONFLICT);
        }
        let v: Value = get(&app, &bob, &format!("/{id}"))
            .await
            .json()
            .await
            .unwrap();
        let game = v["game_id"].as_str().unwrap().to_owned();
        assert_eq!(app.active(&bob).await["match"]["game_id"], game.as_str());
        app.game_finished(&app.admin_token(), &game).await;
    }
}

async fn accept_racing_cancel_or_decline_has_exactly_one_winner(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    for round in 0..10 {
        let id = challenge(&app, "bob", json!({})).await;
        let accept_path = format!("/{id}/accept");
        let decline_path = format!("/{id}/decline");
        let accept = post(&app, &bob, &accept_path, None);
        let (accepted, other) = if round % 2 == 0 {
            let (a, c) = tokio::join!(accept, cancel(&app, &alice, &id));
            (a, c)
        } else {
            tokio::join!(accept, post(&app, &bob, &decline_path, None))
        };
        let winners = [&accepted, &other]
            .iter()
            .filter(|r| r.status() == StatusCode::OK)
            .count();
        assert_eq!(
            winners, 1,
            "round {round}: one of accept and its rival wins"
        );
        let v: Value = get(&app, &bob, &format!("/{id}"))
            .await
            .json()
            .await
            .unwrap();
        let active = app.active(&bob).await;
        if accepted.status() == StatusCode::OK {
            assert_eq!(v["status"], "ACCEPTED");
            let game = v["game_id"].as_str().unwrap();
            assert_eq!(active["match"]["game_id"], game);
            app.game_finished(&app.admin_token(), game).await;
        } else {
            assert!(
                v["status"] == "CANCELLED" || v["status"] == "DECLINED",
                "{v}"
            );
            assert!(v.get("game_id").is_none());
            assert_eq!(
                active["match"],
                Value::Null,
                "no game for a refused challenge"
            );
        }
    }
}

async fn accept_racing_expiry_either_wins_cleanly(backend: Backend) {
    // A 150 ms lifetime, accepted around its end: whichever wins, the
    // challenge and the players agree.
    let Some(app) = spawn_on(backend, |s| s.challenge_ttl_seconds = 0.15).await else {
        return;
    };
    let bob = app.token("bob");
    let mut outcomes = std::collections::HashSet::new();
    for delay_ms in [100u64, 130, 145, 150, 155, 170, 200] {
        let id = challenge(&app, "bob", json!({})).await;
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let r = post(&app, &bob, &format!("/{id}/accept"), None).await;
        let accepted = r.status() == StatusCode::OK;
        let v: Value = get(&app, &bob, &format!("/{id}"))
            .await
            .json()
            .await
            .unwrap();
        let active = app.active(&bob).await;
        if accepted {
            assert_eq!(v["status"], "ACCEPTED");
            let game = v["game_id"].as_str().unwrap();
            assert_eq!(active["match"]["game_id"], game);
            app.game_finished(&app.admin_token(), game).await;
        } else {
            assert_eq!(error_code(r).await, "INVALID_STATE");
            assert_eq!(v["status"], "EXPIRED");
            assert_eq!(active["match"], Value::Null);
        }
        outcomes.insert(accepted);
    }
    assert!(
        outcomes.contains(&false),
        "the later accepts met an expired challenge"
    );
}

crate::on_every_backend!(
    creating_a_challenge_answers_201_pending_with_defaults,
    bad_challenges_are_400_naming_the_field,
    accepting_creates_one_game_with_the_preferred_colors_and_guards_both,
    only_the_challenged_player_can_accept,
    a_player_searching_in_a_queue_cannot_be_in_an_accepted_challenge,
    declined_and_cancelled_challenges_accept_no_further_transition,
    incoming_and_outgoing_list_pending_challenges_only,
    pending_challenges_expire_and_read_expired_at_once,
    the_number_of_pending_outgoing_challenges_is_bounded,
    turned_off_challenges_answer_404_challenges_disabled,
    many_parallel_accepts_create_exactly_one_game,
    accept_racing_cancel_or_decline_has_exactly_one_winner,
    accept_racing_expiry_either_wins_cleanly,
);
