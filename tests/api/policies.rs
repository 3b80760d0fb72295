//! Matching policies changed at run time through the admin API: read,
//! set, refused with the field named, dropped, audited, and in force at
//! once — on one embedded node, and across two nodes on Redis/PostgreSQL.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_code, join_body, spawn_app};
use crate::production::Backends;

const POOL: &str = "standard_5+0_rated_GLOBAL";

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    app.admin_send(method, &format!("/internal/policies/{path}"), body.as_ref())
        .await
}

/// Alice (1500) and Bob (1700) wait in one pool, joined through `joins`:
/// 200 points apart, too far for the default window of 100. Answers
/// Alice's token and entry.
async fn two_apart(joins: &TestApp) -> (String, String) {
    let r = joins
        .put_ratings(&joins.admin_token(), "t1", "bob", &json!({ "blitz": 1700 }))
        .await;
    assert!(r.status().is_success());
    let (a, b) = (joins.token("alice"), joins.token("bob"));
    let ia = joins.join_ok(&a, &join_body("5+0")).await;
    joins.join_ok(&b, &join_body("5+0")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(joins.status_json(&a, &ia).await["status"], "SEARCHING");
    (a, ia)
}

/// Waits until Alice is matched; answers how long it took.
async fn matched_within(app: &TestApp, a: &str, ia: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if app.status_json(a, ia).await["status"] == "MATCHED" {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "not matched within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_pool_policy_is_read_set_refused_dropped_and_audited() {
    let app = spawn_app().await;
    let r = send(&app, reqwest::Method::GET, "t1", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let all: Value = r.json().await.unwrap();
    assert_eq!(all["defaults"]["initial_rating_window"], 100);
    assert_eq!(all["defaults"]["max_queue_time_seconds"], 600.0);
    assert_eq!(all["tenant"]["policy"], Value::Null);
    assert_eq!(all["pools"], json!([]));
    // Refused, each naming its field; nothing stored.
    for (body, field) in [
        (json!({ "initial_rating_window": 600 }), "max_rating_gap"),
        (json!({ "max_rating_gap": "wide" }), "max_rating_gap"),
        (
            json!({ "rating_window_widening_interval": 0 }),
            "rating_window_widening_interval",
        ),
        (
            json!({ "max_queue_time_seconds": -1 }),
            "max_queue_time_seconds",
        ),
        (json!({ "window": 5 }), "window"),
        (json!({}), "initial_rating_window"),
    ] {
        let r = send(
            &app,
            reqwest::Method::PUT,
            &format!("t1/{POOL}"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "INVALID_REQUEST");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
    }
    let r = send(
        &app,
        reqwest::Method::PUT,
        "t1/not_a_pool",
        Some(json!({ "max_rating_gap": 400 })),
    )
    .await;
    assert_eq!(error_code(r).await, "INVALID_REQUEST");
    // Set: the answer shows what is set and what is in force.
    let r = send(
        &app,
        reqwest::Method::PUT,
        &format!("t1/{POOL}"),
        Some(json!({ "initial_rating_window": 250 })),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let set: Value = r.json().await.unwrap();
    assert_eq!(set["pool_key"], POOL);
    assert_eq!(set["policy"], json!({ "initial_rating_window": 250 }));
    assert_eq!(set["effective"]["initial_rating_window"], 250);
    assert_eq!(set["effective"]["max_rating_gap"], 500);
    assert_eq!(set["before"], Value::Null);
    let all: Value = send(&app, reqwest::Method::GET, "t1", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["pools"][0]["pool_key"], POOL);
    // Dropped, then nothing left to drop.
    let r = send(&app, reqwest::Method::DELETE, &format!("t1/{POOL}"), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let dropped: Value = r.json().await.unwrap();
    assert_eq!(dropped["before"], json!({ "initial_rating_window": 250 }));
    assert_eq!(dropped["effective"]["initial_rating_window"], 100);
    let r = send(&app, reqwest::Method::DELETE, &format!("t1/{POOL}"), None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Players may not; every change is in the audit log.
    let r = app
        .get_as(&app.token("alice"), "/internal/policies/t1")
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let log: Value = app
        .get_as(&app.admin_token(), "/internal/audit?kind=policy_changed")
        .await
        .json()
        .await
        .unwrap();
    let events = log["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{log}");
    assert_eq!(events[0]["detail"]["before"]["initial_rating_window"], 250);
    assert_eq!(events[0]["detail"]["after"], Value::Null);
    assert_eq!(events[1]["detail"]["actor"], "t1/ops");
}

#[tokio::test]
async fn a_wider_window_set_at_run_time_matches_a_waiting_pair_at_once() {
    let app = spawn_app().await;
    let (a, ia) = two_apart(&app).await;
    let r = send(
        &app,
        reqwest::Method::PUT,
        "t1",
        Some(json!({ "initial_rating_window": 250 })),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    matched_within(&app, &a, &ia, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_policy_set_through_one_node_is_in_force_on_another_within_2_s() {
    let Some(backends) = Backends::create().await else {
        return;
    };
    // Node A takes the change and the joins (no worker); node B's worker
    // matches, by the policy it learns of from A.
    let (node_a, node_b) = backends.spawn_config_pair().await;
    let (a, ia) = two_apart(&node_a).await;
    let r = send(
        &node_a,
        reqwest::Method::PUT,
        &format!("t1/{POOL}"),
        Some(json!({ "initial_rating_window": 250 })),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    matched_within(&node_a, &a, &ia, Duration::from_secs(2)).await;
    // Node B reads the same policy.
    let seen: Value = send(&node_b, reqwest::Method::GET, &format!("t1/{POOL}"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen["effective"]["initial_rating_window"], 250);
}

/// Region fallback set through the admin API of `node`: alice (EU) and
/// bob (NA) are matched to each other once both have waited its 2 s, not
/// before; `joins` takes the joins.
async fn regions_fall_back(node: &TestApp, joins: &TestApp) {
    for (body, field) in [
        (
            json!({ "region_fallback_regions": ["EU", "MARS"] }),
            "region_fallback_regions",
        ),
        (
            json!({ "region_fallback_regions": "EU" }),
            "region_fallback_regions",
        ),
        (
            json!({ "region_fallback_seconds": -1 }),
            "region_fallback_seconds",
        ),
    ] {
        let r = send(node, reqwest::Method::PUT, "t1", Some(body.clone())).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        let v: Value = r.json().await.unwrap();
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
    }
    let r = send(
        node,
        reqwest::Method::PUT,
        "t1",
        Some(json!({ "region_fallback_seconds": 2, "region_fallback_regions": ["NA", "EU"] })),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let set: Value = r.json().await.unwrap();
    assert_eq!(set["effective"]["region_fallback_seconds"], 2.0);
    assert_eq!(
        set["effective"]["region_fallback_regions"],
        json!(["NA", "EU"])
    );
    // Let the change reach every node (within 2 s) before anyone joins.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let (a, b) = (joins.token("alice"), joins.token("bob"));
    let in_region =
        |region: &str| json!({ "time_control": "5+0", "mode": "rated", "region": region });
    let joined = Instant::now();
    let ia = joins.join_ok(&a, &in_region("EU")).await;
    let ib = joins.join_ok(&b, &in_region("NA")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(joins.status_json(&a, &ia).await["status"], "SEARCHING");
    assert_eq!(joins.status_json(&b, &ib).await["status"], "SEARCHING");
    matched_within(joins, &a, &ia, Duration::from_secs(10)).await;
    assert!(joined.elapsed() >= Duration::from_secs(2));
    let (sa, sb) = (
        joins.status_json(&a, &ia).await,
        joins.status_json(&b, &ib).await,
    );
    assert_eq!(sb["status"], "MATCHED");
    assert_eq!(sa["game_id"], sb["game_id"]);
    assert_eq!(sa["opponent"]["user_id"], "bob");
    // Each is in that one game: a new join is refused.
    let again = joins.join(&b, &in_region("NA")).await;
    assert_eq!(error_code(again).await, "ACTIVE_GAME_EXISTS");
}

#[tokio::test]
async fn region_fallback_set_through_the_api_matches_across_regions_after_its_wait() {
    let app = spawn_app().await;
    regions_fall_back(&app, &app).await;
}

#[tokio::test]
async fn region_fallback_matches_across_regions_on_redis_and_postgres() {
    let Some(backends) = Backends::create().await else {
        return;
    };
    let (node_a, node_b) = backends.spawn_config_pair().await;
    regions_fall_back(&node_a, &node_b).await;
}
