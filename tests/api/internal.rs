use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{error_code, spawn_app};

#[tokio::test]
async fn unknown_players_are_rated_1500_at_every_speed() {
    let app = spawn_app().await;
    let r = app.get_ratings(&app.admin_token(), "t1", "nobody").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({ "tenant_id": "t1", "user_id": "nobody", "bullet": 1500, "blitz": 1500, "rapid": 1500, "classical": 1500 })
    );
}

#[tokio::test]
async fn ratings_are_set_per_speed_and_merge() {
    let app = spawn_app().await;
    let admin = app.admin_token();
    let r = app
        .put_ratings(
            &admin,
            "t1",
            "alice",
            &json!({ "bullet": 1700, "blitz": 1620 }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    app.put_ratings(&admin, "t1", "alice", &json!({ "blitz": 1650 }))
        .await;
    let v: Value = app
        .get_ratings(&admin, "t1", "alice")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            v["bullet"].as_i64(),
            v["blitz"].as_i64(),
            v["rapid"].as_i64()
        ),
        (Some(1700), Some(1650), Some(1500))
    );
    // Tenants do not share players.
    let v: Value = app
        .get_ratings(&admin, "t2", "alice")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["blitz"], 1500);
}

#[tokio::test]
async fn a_rating_may_come_with_its_deviation_and_a_bare_one_keeps_it() {
    let app = spawn_app().await;
    let admin = app.admin_token();
    let r = app
        .put_ratings(
            &admin,
            "t1",
            "alice",
            &json!({ "blitz": { "rating": 1620, "rd": 80 }, "blitz_chess960": { "rating": 2100, "rd": 119.6 }, "rapid": 1400 }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["blitz"], 1620);
    assert_eq!(v["blitz_chess960"], 2100);
    assert_eq!(
        v["rating_deviations"],
        json!({ "blitz": 80, "blitz_chess960": 120 })
    );
    // A bare rating keeps the deviation; `{"rating"}` alone too.
    app.put_ratings(
        &admin,
        "t1",
        "alice",
        &json!({ "blitz": 1650, "blitz_chess960": { "rating": 2050 } }),
    )
    .await;
    let v: Value = app
        .get_ratings(&admin, "t1", "alice")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (v["blitz"].as_i64(), v["blitz_chess960"].as_i64()),
        (Some(1650), Some(2050))
    );
    assert_eq!(
        v["rating_deviations"],
        json!({ "blitz": 80, "blitz_chess960": 120 })
    );
}

#[tokio::test]
async fn bad_rating_updates_are_400_and_change_nothing() {
    let app = spawn_app().await;
    let admin = app.admin_token();
    app.put_ratings(&admin, "t1", "alice", &json!({ "blitz": 1600 }))
        .await;
    for body in [
        json!({}),
        json!({ "blitz": "high" }),
        json!({ "blitz": 1700.5 }),
        json!({ "blitz": 99999 }),
        json!({ "blitz": 1700, "hyperbullet": 1 }),
        json!({ "blitz_go": 1700 }),
        json!({ "blitz_chess960": 5000 }),
        json!({ "blitz": 1700, "blitz_chess960": "x" }),
        json!({ "blitz": { "rd": 80 } }),
        json!({ "blitz": { "rating": 1700, "rd": -1 } }),
        json!({ "blitz": { "rating": 1700, "rd": 1001 } }),
        json!({ "blitz": { "rating": 1700, "rd": "low" } }),
        json!({ "blitz": { "rating": 1700, "rd": 80, "volatility": 0.06 } }),
        json!({ "blitz": { "rating": 99999, "rd": 80 } }),
        json!({ "blitz": {} }),
        json!([1, 2]),
    ] {
        let r = app.put_ratings(&admin, "t1", "alice", &body).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(r).await, "INVALID_REQUEST");
    }
    let v: Value = app
        .get_ratings(&admin, "t1", "alice")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["blitz"], 1600);
}

#[tokio::test]
async fn finishing_an_unknown_game_is_404_and_finishing_twice_is_harmless() {
    let app = spawn_app().await;
    let admin = app.admin_token();
    let r = app.game_finished(&admin, "g_unknown").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "NOT_FOUND");
    // The service says what was not found (a well-formed id, no such game).
    let r = app.game_finished(&admin, "g_unknown").await;
    assert_eq!(
        crate::helpers::error_of(r).await,
        ("NOT_FOUND".into(), "no such game".into())
    );

    let (a, b) = (app.token("alice"), app.token("bob"));
    let ia = app.join_ok(&a, &crate::helpers::join_body("5+0")).await;
    app.join_ok(&b, &crate::helpers::join_body("5+0")).await;
    let game = app.wait_for_result(&a, &ia).await["game_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..2 {
        let r = app.game_finished(&admin, &game).await;
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.unwrap();
        let mut released: Vec<&str> = v["released_user_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap())
            .collect();
        released.sort();
        assert_eq!(released, ["alice", "bob"]);
    }
    // An admin of another tenant does not see the game.
    let other = app.token_for("t2", "ops", &["admin"]);
    assert_eq!(
        app.game_finished(&other, &game).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn health_and_readiness_need_no_token() {
    let app = spawn_app().await;
    for path in ["/healthz", "/health"] {
        let r = app.get(path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], "ok", "{path}");
    }
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "ready");
}

#[tokio::test]
async fn ratings_are_kept_per_variant_and_a_join_uses_its_pools() {
    let app = spawn_app().await;
    let admin = app.admin_token();
    for (user, body) in [
        ("alice", json!({ "blitz": 1500, "blitz_chess960": 2100 })),
        ("bob", json!({ "blitz_chess960": 2120 })),
    ] {
        let r = app.put_ratings(&admin, "t1", user, &body).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    let v: Value = app
        .get_ratings(&admin, "t1", "alice")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        v,
        json!({ "tenant_id": "t1", "user_id": "alice", "bullet": 1500, "blitz": 1500,
                "rapid": 1500, "classical": 1500, "blitz_chess960": 2100 })
    );
    // A chess960 blitz pool pairs them by their chess960 ratings.
    let (a, b) = (app.token("alice"), app.token("bob"));
    let body = json!({ "time_control": "5+0", "mode": "rated", "variant": "chess960" });
    let ia = app.join_ok(&a, &body).await;
    app.join_ok(&b, &body).await;
    app.wait_for_result(&a, &ia).await;
    let seen = app.active(&b).await;
    assert_eq!(seen["match"]["opponent"]["rating_snapshot"]["rating"], 2100);
    let seen = app.active(&a).await;
    assert_eq!(seen["match"]["opponent"]["rating_snapshot"]["rating"], 2120);
}

// Found by schemathesis: a body of `null` (no body) and integral floats
// (1620.0, an integer to JSON Schema and JavaScript) were refused.
#[tokio::test]
async fn a_null_finished_body_and_integral_float_ratings_are_accepted() {
    let app = spawn_app().await;
    let admin = app.admin_token();
    let r = app
        .put_ratings(&admin, "t1", "alice", &json!({ "blitz": 1620.0 }))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = app
        .get_ratings(&admin, "t1", "alice")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["blitz"], json!(1620));
    let r = app
        .put_ratings(&admin, "t1", "alice", &json!({ "blitz": 1620.5 }))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = app
        .client
        .post(format!("{}/internal/games/g_unknown/finished", app.address))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("null")
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_audit_log_shows_a_tenants_decisions_newest_first_to_admins() {
    let app = spawn_app().await;
    let a = app.token("alice");
    let (_, game) = app.matched_pair(&a, &app.token("bob"), "5+0").await;
    let admin = app.admin_token();
    assert_eq!(
        app.game_finished(&admin, &game).await.status(),
        StatusCode::OK
    );
    let r = app.get_as(&admin, "/internal/audit").await;
    assert_eq!(r.status(), StatusCode::OK);
    let log: Value = r.json().await.unwrap();
    let events = log["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["game_finished", "match"], "newest first: {log}");
    let matched = &events[1];
    assert_eq!(matched["tenant_id"], "t1");
    assert!(matched["at"].as_str().unwrap().ends_with('Z'));
    assert!(matched["detail"].is_object());
    assert!(log.get("next_before").is_none(), "one page: {log}");
    // Filtered by kind and subject; paged.
    let r: Value = app
        .get_as(&admin, "/internal/audit?kind=match")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["events"].as_array().unwrap().len(), 1);
    let subject = matched["subject"].as_str().unwrap();
    let r: Value = app
        .get_as(&admin, &format!("/internal/audit?subject={subject}"))
        .await
        .json()
        .await
        .unwrap();
    // The match's story: made, then its game finished.
    assert_eq!(r["events"][0]["kind"], "game_finished");
    assert_eq!(r["events"][1]["kind"], "match");
    let page: Value = app
        .get_as(&admin, "/internal/audit?limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["events"][0]["kind"], "game_finished");
    let before = page["next_before"].as_i64().expect("a next page");
    let next: Value = app
        .get_as(&admin, &format!("/internal/audit?limit=1&before={before}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(next["events"][0]["kind"], "match");
    // Another tenant's log is another log; players may not read it; bad
    // parameters are named.
    let other: Value = app
        .get_as(&admin, "/internal/audit?tenant_id=t2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(other["events"], json!([]));
    assert_eq!(
        app.get_as(&a, "/internal/audit").await.status(),
        StatusCode::FORBIDDEN
    );
    for bad in ["?limit=0", "?limit=501", "?before=soon", "?kind="] {
        let r = app.get_as(&admin, &format!("/internal/audit{bad}")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(error_code(r).await, "INVALID_REQUEST");
    }
}
