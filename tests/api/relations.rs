//! Blocks and fair-play restrictions through the admin API, as the
//! platform's services call it: who may call, what each answer says, and
//! that a block keeps two waiting players apart until it is lifted.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_of, join_body, spawn_app};

async fn send(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app
        .client
        .request(method, format!("{}{path}", app.address))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.expect("request");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn blocks_are_set_listed_and_lifted_by_the_platform_only() {
    let app = spawn_app().await;
    let service = app.token_for("t1", "accounts", &["service"]);
    let player = app.token("alice");
    let path = "/internal/blocks/t1/alice/bob";

    let (status, body) = send(&app, &player, Method::PUT, path, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("FORBIDDEN"))
    );
    let (status, body) = send(&app, &service, Method::PUT, path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({ "tenant_id": "t1", "user_id": "alice", "blocked_user_id": "bob", "blocked": true, "changed": true })
    );
    let (_, body) = send(&app, &app.admin_token(), Method::PUT, path, None).await;
    assert_eq!(body["changed"], false);
    send(
        &app,
        &service,
        Method::PUT,
        "/internal/blocks/t1/alice/carol",
        None,
    )
    .await;
    let (status, body) = send(
        &app,
        &service,
        Method::GET,
        "/internal/blocks/t1/alice",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["blocked_user_ids"], json!(["bob", "carol"]));

    let r = app
        .client
        .put(format!("{}/internal/blocks/t1/alice/alice", app.address))
        .bearer_auth(&service)
        .send()
        .await
        .unwrap();
    let (code, message) = error_of(r).await;
    assert_eq!(code, "INVALID_REQUEST");
    assert!(message.contains("blocked_user_id"), "{message}");
    // Lifting a block of oneself: there is none, nothing changes.
    let (status, body) = send(
        &app,
        &service,
        Method::DELETE,
        "/internal/blocks/t1/alice/alice",
        None,
    )
    .await;
    assert_eq!(
        (status, body["changed"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    let (status, _) = send(
        &app,
        &service,
        Method::PUT,
        "/internal/blocks/t1/alice/b%20b",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, body) = send(&app, &service, Method::DELETE, path, None).await;
    assert_eq!(
        (status, body["blocked"].as_bool(), body["changed"].as_bool()),
        (StatusCode::OK, Some(false), Some(true))
    );
    let (_, body) = send(&app, &service, Method::DELETE, path, None).await;
    assert_eq!(body["changed"], false);
    let (_, body) = send(
        &app,
        &service,
        Method::GET,
        "/internal/blocks/t1/alice",
        None,
    )
    .await;
    assert_eq!(body["blocked_user_ids"], json!(["carol"]));
    // Each change is in the audit log, with who made it.
    let (_, log) = send(
        &app,
        &app.admin_token(),
        Method::GET,
        "/internal/audit?tenant_id=t1&kind=block_added",
        None,
    )
    .await;
    let events = log["events"].as_array().expect("events");
    assert_eq!(events.len(), 2, "{log}");
    assert_eq!(events[0]["detail"]["actor"], "accounts");
    app.shutdown().await;
}

#[tokio::test]
async fn a_restriction_is_set_with_its_reason_read_and_lifted() {
    let app = spawn_app().await;
    let service = app.token_for("t1", "fairplay", &["service"]);
    let path = "/internal/restricted/t1/mallory";
    let (status, _) = send(&app, &app.token("mallory"), Method::PUT, path, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, body) = send(&app, &service, Method::GET, path, None).await;
    assert_eq!(body["restricted"], false);
    for (bad, field) in [
        (json!({ "reason": 7 }), "reason"),
        (json!({ "reason": "x".repeat(201) }), "reason"),
        (json!({ "why": "engine" }), "why"),
        (json!([1]), "object"),
    ] {
        let (status, body) = send(&app, &service, Method::PUT, path, Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body["error"]["message"].as_str().unwrap().contains(field),
            "{body}"
        );
    }
    let (status, body) = send(
        &app,
        &service,
        Method::PUT,
        path,
        Some(json!({ "reason": "engine use" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({ "tenant_id": "t1", "user_id": "mallory", "restricted": true, "changed": true })
    );
    // No body at all is a restriction without a reason.
    let (_, body) = send(&app, &service, Method::PUT, path, None).await;
    assert_eq!(body["changed"], false);
    let (_, body) = send(&app, &service, Method::GET, path, None).await;
    assert_eq!(body["restricted"], true);
    let (_, log) = send(
        &app,
        &app.admin_token(),
        Method::GET,
        "/internal/audit?tenant_id=t1&kind=restricted_changed",
        None,
    )
    .await;
    assert_eq!(
        log["events"][1]["detail"]["after"]["reason"], "engine use",
        "{log}"
    );
    let (_, body) = send(&app, &service, Method::DELETE, path, None).await;
    assert_eq!(
        (body["restricted"].as_bool(), body["changed"].as_bool()),
        (Some(false), Some(true))
    );
    let (_, body) = send(&app, &service, Method::GET, path, None).await;
    assert_eq!(body["restricted"], false);
    app.shutdown().await;
}

#[tokio::test]
async fn two_players_who_block_each_other_wait_until_the_block_is_lifted() {
    let app = spawn_app().await;
    let service = app.token_for("t1", "accounts", &["service"]);
    let (status, _) = send(
        &app,
        &service,
        Method::PUT,
        "/internal/blocks/t1/bob/alice",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (a, b) = (app.token("alice"), app.token("bob"));
    let ia = app.join_ok(&a, &join_body("5+0")).await;
    app.join_ok(&b, &join_body("5+0")).await;
    // Equal ratings, many passes: never paired while the block stands.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(app.status_json(&a, &ia).await["status"], "SEARCHING");
    send(
        &app,
        &service,
        Method::DELETE,
        "/internal/blocks/t1/bob/alice",
        None,
    )
    .await;
    let done = app.wait_for_result(&a, &ia).await;
    assert_eq!(done["status"], "MATCHED");
    assert_eq!(done["opponent"]["user_id"], "bob");
    app.shutdown().await;
}

#[tokio::test]
async fn a_join_with_its_own_rating_range_is_checked_and_kept() {
    let app = spawn_app().await;
    let a = app.token("alice");
    for (range, field) in [
        (json!(150), "rating_range"),
        (json!({ "min_delta": -100 }), "rating_range.max_delta"),
        (
            json!({ "min_delta": 10, "max_delta": 100 }),
            "rating_range.min_delta",
        ),
        (
            json!({ "min_delta": -100, "max_delta": 2001 }),
            "rating_range.max_delta",
        ),
        (
            json!({ "min_delta": -100, "max_delta": 1.5 }),
            "rating_range.max_delta",
        ),
        (
            json!({ "min_delta": -100, "max_delta": 100, "x": 1 }),
            "rating_range",
        ),
    ] {
        let mut body = join_body("5+0");
        body["rating_range"] = range;
        let (code, message) = error_of(app.join(&a, &body).await).await;
        assert_eq!(code, "INVALID_REQUEST", "{body}");
        assert!(message.contains(field), "{message}");
    }
    let mut body = join_body("5+0");
    body["rating_range"] = json!({ "min_delta": -200, "max_delta": 150 });
    let first = app.join_ok(&a, &body).await;
    let shown = app.status_json(&a, &first).await;
    assert_eq!(shown["status"], "SEARCHING");
    assert_eq!(
        shown["rating_range"],
        json!({ "min_delta": -200, "max_delta": 150 })
    );
    // The same search again answers the same entry; another range is
    // another search.
    assert_eq!(app.join_ok(&a, &body).await, first);
    body["rating_range"] = json!({ "min_delta": -100, "max_delta": 150 });
    let r = app.join(&a, &body).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(error_of(r).await.0, "ALREADY_IN_QUEUE");
    app.shutdown().await;
}

#[tokio::test]
async fn a_no_show_is_reported_and_the_other_player_searches_again() {
    let app = spawn_app().await;
    let (a, b) = (app.token("alice"), app.token("bob"));
    let (ia, game) = app.matched_pair(&a, &b, "5+0").await;
    let path = format!("/internal/games/{game}/aborted");
    // Who may report, and what the body must say.
    let (status, _) = send(
        &app,
        &a,
        Method::POST,
        &path,
        Some(json!({ "no_show_user_id": "bob" })),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let admin = app.admin_token();
    let (status, body) = send(&app, &admin, Method::POST, &path, Some(json!({}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no_show_user_id"),
        "{body}"
    );
    let (status, body) = send(
        &app,
        &admin,
        Method::POST,
        &path,
        Some(json!({ "no_show_user_id": "bob" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ABORTED");
    assert_eq!(body["requeued_user_id"], "alice");
    assert_eq!(body["requeued_queue_entry_id"], ia.as_str());
    // Within a second alice searches again, her entry the same.
    assert_eq!(app.status_json(&a, &ia).await["status"], "SEARCHING");
    // bob cools down: 409 COOLDOWN with Retry-After.
    let r = app.join(&b, &join_body("5+0")).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((110..=120).contains(&wait), "{wait}");
    assert_eq!(error_of(r).await.0, "COOLDOWN");
    // Nor can bob play a challenge meanwhile.
    let r = app.challenge_as(&app.token("dora"), "bob", "5+0").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let challenge: Value = r.json().await.unwrap();
    let r = app
        .client
        .post(format!(
            "{}/v1/matchmaking/challenges/{}/accept",
            app.address,
            challenge["challenge_id"].as_str().unwrap()
        ))
        .bearer_auth(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let (code, message) = error_of(r).await;
    assert_eq!(code, "CANNOT_ACCEPT");
    assert!(message.contains("cooling down"), "{message}");
    // Carol comes: alice plays her.
    let c = app.token("carol");
    let ic = app.join_ok(&c, &join_body("5+0")).await;
    let done = app.wait_for_result(&a, &ia).await;
    assert_eq!(done["status"], "MATCHED");
    assert_eq!(done["opponent"]["user_id"], "carol");
    assert_eq!(app.wait_for_result(&c, &ic).await["status"], "MATCHED");
    app.shutdown().await;
}

#[tokio::test]
async fn the_wait_estimates_have_a_p80_and_are_checked_against_real_waits() {
    let app = spawn_app().await;
    let (a, b) = (app.token("alice"), app.token("bob"));
    let r = app.join(&a, &join_body("5+0")).await;
    let joined: Value = r.json().await.unwrap();
    let (p50, p80) = (
        joined["estimated_wait_seconds"].as_u64().unwrap(),
        joined["estimated_wait_p80_seconds"].as_u64().unwrap(),
    );
    assert!(p50 <= p80, "{joined}");
    let ia = joined["queue_entry_id"].as_str().unwrap().to_owned();
    let shown = app.status_json(&a, &ia).await;
    assert_eq!(shown["estimated_wait_p80_seconds"].as_u64(), Some(p80));
    app.join_ok(&b, &join_body("5+0")).await;
    assert_eq!(app.wait_for_result(&a, &ia).await["status"], "MATCHED");
    // Both players' waits were checked against what they were told.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let checked: f64 = ["within_p80", "over_p80"]
        .iter()
        .map(|o| {
            crate::support::sample(
                &metrics,
                "matchmaking_wait_estimate_checks_total",
                &[("tenant", "t1"), ("outcome", o)],
            )
        })
        .sum();
    assert!(checked >= 2.0, "{checked}");
    app.shutdown().await;
}

#[tokio::test]
async fn repeat_pairings_are_counted_and_their_rate_shown() {
    let app = spawn_app().await;
    let (a, b) = (app.token("alice"), app.token("bob"));
    let (_, game) = app.matched_pair(&a, &b, "5+0").await;
    assert!(
        app.game_finished(&app.admin_token(), &game)
            .await
            .status()
            .is_success()
    );
    // Nobody else: they meet again (the penalty is soft), a repeat.
    let (ia, _) = app.matched_pair(&a, &b, "5+0").await;
    assert_eq!(app.status_json(&a, &ia).await["status"], "MATCHED");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let tenant = [("tenant", "t1")];
    let sample = |name| crate::support::sample(&metrics, name, &tenant);
    assert!(sample("matchmaking_pairings_total") >= 2.0, "{metrics}");
    assert!(sample("matchmaking_repeat_pairings_total") >= 1.0);
    let rate = sample("repeat_pairing_rate");
    assert!(rate > 0.0 && rate <= 1.0, "{rate}");
    app.shutdown().await;
}

#[tokio::test]
async fn the_explain_of_a_waiting_entry_says_who_is_kept_from_it_and_why() {
    let app = spawn_app().await;
    let admin = app.admin_token();
    app.put_ratings(&admin, "t1", "bob", &json!({ "blitz": 1900 }))
        .await;
    let alice = app.join_ok(&app.token("alice"), &join_body("5+0")).await;
    app.join_ok(&app.token("bob"), &join_body("5+0")).await;
    let path = |pool: &str, id: &str| format!("/internal/pools/t1/{pool}/entries/{id}/explain");
    let pool = "standard_5+0_rated_GLOBAL";
    // The answer is the view of the worker's last pass over the pool (or
    // of the pool now, before any): a pass may have run between the joins.
    let mut body = Value::Null;
    for _ in 0..100 {
        let (status, answer) = send(&app, &admin, Method::GET, &path(pool, &alice), None).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        body = answer;
        if body["others"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(body["queue_entry_id"], alice.as_str());
    assert_eq!(body["user_id"], "alice");
    assert_eq!(body["window"], 100);
    assert_eq!(
        (body["others"].as_u64(), body["compatible"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(body["excluded"], json!({ "window": 1 }));
    assert_eq!(body["candidates"][0]["user_id"], "bob");
    assert_eq!(body["candidates"][0]["gap"], 400);
    assert_eq!(body["candidates"][0]["verdict"], "window");
    // Whether the worker has passed over the pool yet or not, the answer
    // says which view it is.
    assert!(
        matches!(
            (body["source"].as_str(), body["outcome"].as_str()),
            (Some("last_pass"), Some("unmatched")) | (Some("now"), Some("not_passed"))
        ),
        "{body}"
    );
    // Admins only; a bad pool is 400; an entry not searching there is 404.
    let (status, _) = send(
        &app,
        &app.token("alice"),
        Method::GET,
        &path(pool, &alice),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = send(&app, &admin, Method::GET, &path("nonsense", &alice), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST"))
    );
    for (pool, id) in [
        ("standard_3+0_rated_GLOBAL", alice.as_str()),
        (pool, "qe_01JZZZZZZZZZZZZZZZZZZZZZZZ"),
        (pool, "not-an-id"),
    ] {
        let (status, body) = send(&app, &admin, Method::GET, &path(pool, id), None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("NOT_FOUND")),
            "{pool} {id}"
        );
    }
    // A cancelled entry is no longer explained.
    let r = app
        .client
        .delete(format!("{}/v1/matchmaking/queue/{alice}", app.address))
        .bearer_auth(app.token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (status, _) = send(&app, &admin, Method::GET, &path(pool, &alice), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
