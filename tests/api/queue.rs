use reqwest::StatusCode;
use serde_json::{Value, json};

use matchmaking_api::domain::Region;

use crate::helpers::{TestApp, error_code, join_body, spawn_app, spawn_app_with};

#[tokio::test]
async fn joining_answers_201_searching_with_an_estimate() {
    let app = spawn_app().await;
    let r = app.join(&app.token("alice"), &join_body("5+0")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    assert!(v["queue_entry_id"].as_str().unwrap().starts_with("q_"));
    assert_eq!(v["status"], "SEARCHING");
    assert!(v["estimated_wait_seconds"].is_u64());
}

#[tokio::test]
async fn joining_again_with_the_same_parameters_answers_the_same_entry() {
    let app = spawn_app().await;
    let t = app.token("alice");
    let first = app.join_ok(&t, &join_body("5+0")).await;
    let second = app.join_ok(&t, &join_body("5+0")).await;
    assert_eq!(first, second);
}

#[tokio::test]
async fn joining_with_other_parameters_while_searching_is_409_already_in_queue() {
    let app = spawn_app().await;
    let t = app.token("alice");
    app.join_ok(&t, &join_body("5+0")).await;
    let r = app.join(&t, &join_body("3+0")).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(r).await, "ALREADY_IN_QUEUE");
}

#[tokio::test]
async fn an_idempotency_key_repeats_the_first_answer_whatever_happened_since() {
    let app = spawn_app().await;
    let t = app.token("alice");
    let send = || {
        app.client
            .post(format!("{}/v1/matchmaking/queue", app.address))
            .bearer_auth(&t)
            .header("Idempotency-Key", "join-1")
            .json(&join_body("5+0"))
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let id = first["queue_entry_id"].as_str().unwrap();
    assert_eq!(app.cancel(&t, id).await.status(), StatusCode::OK);
    let again = send().await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    // Another user's identical key is another request.
    let other = app
        .client
        .post(format!("{}/v1/matchmaking/queue", app.address))
        .bearer_auth(app.token("bob"))
        .header("Idempotency-Key", "join-1")
        .json(&join_body("3+0"))
        .send()
        .await
        .unwrap();
    let other: Value = other.json().await.unwrap();
    assert_ne!(other["queue_entry_id"], first["queue_entry_id"]);
}

fn keyed_join<'a>(
    app: &'a TestApp,
    token: &'a str,
    key: &'a str,
    body: &'a Value,
) -> reqwest::RequestBuilder {
    app.client
        .post(format!("{}/v1/matchmaking/queue", app.address))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body)
}

#[tokio::test]
async fn an_idempotency_key_is_bound_to_its_first_body() {
    let app = spawn_app().await;
    let t = app.token("alice");
    let first = keyed_join(&app, &t, "k", &join_body("5+0"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    // The same body spelled otherwise is the same request.
    let respelled = app
        .client
        .post(format!("{}/v1/matchmaking/queue", app.address))
        .bearer_auth(&t)
        .header("Idempotency-Key", "k")
        .header("content-type", "application/json")
        .body(r#"{ "mode": "rated",   "time_control": "5+0" }"#)
        .send()
        .await
        .unwrap();
    assert_eq!(respelled.status(), StatusCode::CREATED);
    assert_eq!(
        respelled.headers()["idempotent-replayed"],
        "true",
        "a replay says so"
    );
    assert_eq!(respelled.json::<Value>().await.unwrap(), first);
    // Another body under the same key is refused, and changes nothing.
    let reused = keyed_join(&app, &t, "k", &join_body("3+0"))
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(reused).await, "IDEMPOTENCY_KEY_REUSED");
    let active = app.active(&t).await;
    assert_eq!(
        active["queue_entry"]["queue_entry_id"],
        first["queue_entry_id"]
    );
    assert_eq!(active["queue_entry"]["time_control"], "5+0");
}

#[tokio::test]
async fn a_refused_request_does_not_keep_its_key() {
    let app = spawn_app().await;
    let t = app.token("alice");
    // Unreadable, then invalid: neither answer is kept.
    let unreadable = app
        .client
        .post(format!("{}/v1/matchmaking/queue", app.address))
        .bearer_auth(&t)
        .header("Idempotency-Key", "k")
        .header("content-type", "application/json")
        .body("{\"time_control\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(unreadable.status(), StatusCode::BAD_REQUEST);
    let invalid = keyed_join(&app, &t, "k", &join_body("7+7"))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(invalid).await, "INVALID_REQUEST");
    // The corrected retry with the same key is served.
    let corrected = keyed_join(&app, &t, "k", &join_body("5+0"))
        .send()
        .await
        .unwrap();
    assert_eq!(corrected.status(), StatusCode::CREATED);
    assert!(!corrected.headers().contains_key("idempotent-replayed"));
}

#[tokio::test]
async fn a_replayed_refusal_carries_the_retrys_request_id() {
    let app = spawn_app().await;
    let t = app.token("alice");
    app.join_ok(&t, &join_body("5+0")).await;
    let first = keyed_join(&app, &t, "k", &join_body("3+0"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CONFLICT);
    let first_id = first.headers()["x-request-id"].to_str().unwrap().to_owned();
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["error"]["code"], "ALREADY_IN_QUEUE");
    assert_eq!(first["error"]["request_id"], first_id.as_str());
    // The refusal is the answer to this key, even once it no longer holds.
    let active = app.active(&t).await;
    let id = active["queue_entry"]["queue_entry_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.cancel(&t, &id).await.status(), StatusCode::OK);
    let again = keyed_join(&app, &t, "k", &join_body("3+0"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let again_id = again.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(again_id, first_id);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["error"]["code"], "ALREADY_IN_QUEUE");
    assert_eq!(again["error"]["request_id"], again_id.as_str());
}

#[tokio::test]
async fn concurrent_duplicates_make_one_entry() {
    let app = spawn_app().await;
    let t = app.token("alice");
    let body = join_body("5+0");
    let answers =
        futures::future::join_all((0..16).map(|_| keyed_join(&app, &t, "k", &body).send())).await;
    let mut ids = std::collections::BTreeSet::new();
    for answer in answers {
        let answer = answer.unwrap();
        match answer.status() {
            StatusCode::CREATED => {
                let v: Value = answer.json().await.unwrap();
                ids.insert(v["queue_entry_id"].as_str().unwrap().to_owned());
            }
            StatusCode::CONFLICT => {
                assert_eq!(error_code(answer).await, "IDEMPOTENCY_IN_PROGRESS")
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ids.len(), 1, "one entry, whatever the race: {ids:?}");
    // Once the first has answered, every retry gets its answer.
    let settled: Value = keyed_join(&app, &t, "k", &body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(ids.contains(settled["queue_entry_id"].as_str().unwrap()));
}

#[tokio::test]
async fn status_shows_a_searching_entry_to_its_owner() {
    let app = spawn_app().await;
    let t = app.token("alice");
    let id = app.join_ok(&t, &join_body("10+0")).await;
    let v = app.status_json(&t, &id).await;
    assert_eq!(v["queue_entry_id"], id.as_str());
    assert_eq!(v["status"], "SEARCHING");
    assert!(v["estimated_wait_seconds"].is_u64());
    assert!(v.get("game_id").is_none());
}

#[tokio::test]
async fn another_users_or_tenants_entry_is_indistinguishable_from_a_missing_one() {
    let app = spawn_app().await;
    let id = app.join_ok(&app.token("alice"), &join_body("5+0")).await;
    for token in [app.token("bob"), app.token_for("t2", "alice", &[])] {
        let r = app.status(&token, &id).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(error_code(r).await, "NOT_FOUND");
        let r = app.cancel(&token, &id).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    let missing = "q_01ARZ3NDEKTSV4RRFFQ69G5FAV";
    assert_eq!(
        app.status(&app.token("alice"), missing).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.status(&app.token("alice"), "garbage").await.status(),
        StatusCode::NOT_FOUND
    );
    // Alice's entry is untouched by all of that.
    assert_eq!(
        app.status_json(&app.token("alice"), &id).await["status"],
        "SEARCHING"
    );
}

#[tokio::test]
async fn cancelling_a_searching_entry_answers_cancelled_then_404() {
    let app = spawn_app().await;
    let t = app.token("alice");
    let id = app.join_ok(&t, &join_body("5+0")).await;
    let r = app.cancel(&t, &id).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({ "queue_entry_id": id, "status": "CANCELLED" })
    );
    assert_eq!(app.status_json(&t, &id).await["status"], "CANCELLED");
    let again = app.cancel(&t, &id).await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    // And the player can join again at once.
    app.join_ok(&t, &join_body("5+0")).await;
}

#[tokio::test]
async fn a_matched_entry_cannot_be_cancelled() {
    let app = spawn_app().await;
    let (a, b) = (app.token("alice"), app.token("bob"));
    let ia = app.join_ok(&a, &join_body("5+0")).await;
    app.join_ok(&b, &join_body("5+0")).await;
    assert_eq!(app.wait_for_result(&a, &ia).await["status"], "MATCHED");
    let r = app.cancel(&a, &ia).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(r).await, "CANNOT_CANCEL");
}

#[tokio::test]
async fn active_shows_nothing_then_the_entry_then_the_match() {
    let app = spawn_app().await;
    let (a, b) = (app.token("alice"), app.token("bob"));
    assert_eq!(
        app.active(&a).await,
        json!({ "queue_entry": null, "match": null })
    );
    let ia = app
        .join_ok(&a, &json!({ "time_control": "3+2", "mode": "casual", "variant": "chess960", "region": "EU" }))
        .await;
    let v = app.active(&a).await;
    assert_eq!(v["match"], Value::Null);
    let e = &v["queue_entry"];
    assert_eq!(e["queue_entry_id"], ia.as_str());
    assert_eq!(e["status"], "SEARCHING");
    assert_eq!(e["time_control"], "3+2");
    assert_eq!(e["mode"], "casual");
    assert_eq!(e["variant"], "chess960");
    assert_eq!(e["region"], "EU");
    assert!(e["enqueued_at"].as_str().unwrap().ends_with('Z'));
    app.join_ok(
        &b,
        &json!({ "time_control": "3+2", "mode": "casual", "variant": "chess960", "region": "EU" }),
    )
    .await;
    let status = app.wait_for_result(&a, &ia).await;
    let v = app.active(&a).await;
    assert_eq!(v["queue_entry"], Value::Null);
    let m = &v["match"];
    assert_eq!(m["game_id"], status["game_id"]);
    assert_eq!(m["variant"], "chess960");
    assert_eq!(m["opponent"]["user_id"], "bob");
    assert_eq!(m["opponent"]["username"], "bob name");
    assert_eq!(m["opponent"]["rating_snapshot"]["rating"], 1500);
}

#[tokio::test]
async fn the_seeds_default_region_queues_in_the_tenants_default_region() {
    let app = spawn_app_with(|s| s.default_region = Region::Eu).await;
    let (a, b) = (app.token("alice"), app.token("bob"));
    let ia = app
        .join_ok(
            &a,
            &json!({ "time_control": "5+0", "mode": "rated", "region": "DEFAULT" }),
        )
        .await;
    assert_eq!(app.active(&a).await["queue_entry"]["region"], "EU");
    // One who names no region lands in the same pool and is paired with her.
    let ib = app
        .join_ok(&b, &json!({ "time_control": "5+0", "mode": "rated" }))
        .await;
    let (sa, sb) = (
        app.wait_for_result(&a, &ia).await,
        app.wait_for_result(&b, &ib).await,
    );
    assert_eq!(sa["status"], "MATCHED");
    assert_eq!(sa["game_id"], sb["game_id"]);
}

#[tokio::test]
async fn one_join_waits_in_several_time_controls_and_the_match_names_its_own() {
    let app = spawn_app().await;
    let (a, b) = (app.token("alice"), app.token("bob"));
    let several = json!({ "time_controls": ["3+0", "3+2"], "mode": "rated" });
    let ia = app.join_ok(&a, &several).await;
    // The same again: the same entry.
    let r = app.join(&a, &several).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["queue_entry_id"], ia.as_str());
    assert_eq!(app.status_json(&a, &ia).await["status"], "SEARCHING");
    // bob waits in 3+2 only: they meet there.
    let ib = app.join_ok(&b, &join_body("3+2")).await;
    let done = app.wait_for_result(&a, &ia).await;
    assert_eq!(done["status"], "MATCHED", "{done}");
    assert_eq!(done["time_control"], "3+2");
    assert_eq!(done["opponent"]["user_id"], "bob");
    assert_eq!(done["opponent"]["rating_snapshot"]["time_control"], "3+2");
    let theirs = app.wait_for_result(&b, &ib).await;
    assert_eq!(theirs["game_id"], done["game_id"]);
    assert_eq!(theirs["time_control"], "3+2");
    // Matched once: a second join is refused while the game runs.
    let r = app.join(&a, &several).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    app.shutdown().await;
}

#[tokio::test]
async fn a_join_in_several_time_controls_is_checked_field_by_field() {
    let app = spawn_app().await;
    let a = app.token("alice");
    for (body, why) in [
        (
            json!({ "time_controls": ["3+0"], "time_control": "3+0", "mode": "rated" }),
            "not both",
        ),
        (json!({ "time_controls": [], "mode": "rated" }), "1 to 4"),
        (
            json!({ "time_controls": ["1+0", "2+1", "3+0", "3+2", "5+0"], "mode": "rated" }),
            "1 to 4",
        ),
        (json!({ "time_controls": "3+0", "mode": "rated" }), "1 to 4"),
        (
            json!({ "time_controls": ["3+0", 5], "mode": "rated" }),
            "time control",
        ),
        (
            json!({ "time_controls": ["3+0", "4+0"], "mode": "rated" }),
            "allowed values",
        ),
        (
            json!({ "time_controls": ["1+0", "5+0"], "mode": "rated" }),
            "one speed",
        ),
        (
            json!({ "time_controls": ["3+0", "3+2", "3+0"], "mode": "rated" }),
            "repeat",
        ),
    ] {
        let r = app.join(&a, &body).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "INVALID_REQUEST", "{body}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("time_controls"), "{body}: {message}");
        assert!(message.contains(why), "{body}: {message}");
    }
    // A bad mode is named as the mode, not as the time controls.
    let r = app
        .join(
            &a,
            &json!({ "time_controls": ["3+0", "3+2"], "mode": "ranked" }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("mode"), "{message}");
    app.shutdown().await;
}
