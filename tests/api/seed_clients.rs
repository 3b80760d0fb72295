//! The seed's clients, unchanged (SPEC §8): a deployment configured with
//! the seed's names (`JWT_SECRET_KEY`), tokens as the seed's account
//! service issues them (`user_id`, no `sub`, no `tenant_id`), and the calls
//! of the seed's request collection: join without and with `region:
//! "DEFAULT"`, status, cancel, active, challenges create / incoming /
//! accept / decline, `/health`. What differs on purpose is in the README's
//! "Coming from the Python service".

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{SECRET, TestApp, spawn_app_with};

fn seed_token(user: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "user_id": user, "exp": exp }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app
        .client
        .request(method.parse().unwrap(), format!("{}{path}", app.address))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_seeds_request_collection_runs_unchanged() {
    let app = spawn_app_with(|s| {
        s.jwt_secret = None;
        s.jwt_secret_key = Some(SECRET.into());
    })
    .await;
    let (alice, bob, carol) = (
        seed_token("u_alice"),
        seed_token("u_bob"),
        seed_token("u_carol"),
    );

    let (status, v) = call(&app, "GET", "/health", "", None).await;
    assert_eq!((status, &v["status"]), (StatusCode::OK, &json!("ok")));

    // Join without a region, look, cancel.
    let join = json!({ "time_control": "5+0", "mode": "rated" });
    let (status, v) = call(&app, "POST", "/v1/matchmaking/queue", &alice, Some(join)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["status"], "SEARCHING");
    let id = v["queue_entry_id"].as_str().unwrap().to_owned();
    let (status, v) = call(
        &app,
        "GET",
        &format!("/v1/matchmaking/queue/{id}"),
        &alice,
        None,
    )
    .await;
    assert_eq!(
        (status, &v["status"]),
        (StatusCode::OK, &json!("SEARCHING"))
    );
    let (status, v) = call(&app, "GET", "/v1/matchmaking/active", &alice, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["queue_entry"]["queue_entry_id"], id.as_str());
    let (status, v) = call(
        &app,
        "DELETE",
        &format!("/v1/matchmaking/queue/{id}"),
        &alice,
        None,
    )
    .await;
    assert_eq!(
        (status, &v["status"]),
        (StatusCode::OK, &json!("CANCELLED"))
    );

    // Join with the seed's region value: both land in one pool and meet.
    let join = json!({ "time_control": "5+0", "mode": "rated", "region": "DEFAULT" });
    let (_, a) = call(
        &app,
        "POST",
        "/v1/matchmaking/queue",
        &alice,
        Some(join.clone()),
    )
    .await;
    let (_, b) = call(&app, "POST", "/v1/matchmaking/queue", &bob, Some(join)).await;
    let a = a["queue_entry_id"].as_str().unwrap().to_owned();
    let matched = app.wait_for_result(&alice, &a).await;
    assert_eq!(matched["status"], "MATCHED");
    let (_, v) = call(&app, "GET", "/v1/matchmaking/active", &bob, None).await;
    assert_eq!(v["match"]["opponent"]["user_id"], "u_alice");
    assert_eq!(v["match"]["game_id"], matched["game_id"]);
    assert!(b["queue_entry_id"].is_string());

    // Challenges: carol challenges dave, who sees it and declines; then
    // dave challenges carol, who accepts.
    let dave = seed_token("u_dave");
    let challenge =
        |to: &str| json!({ "opponent_user_id": to, "time_control": "10+0", "mode": "casual" });
    let (status, c) = call(
        &app,
        "POST",
        "/v1/matchmaking/challenges",
        &carol,
        Some(challenge("u_dave")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    let c = c["challenge_id"].as_str().unwrap().to_owned();
    let (status, v) = call(
        &app,
        "GET",
        "/v1/matchmaking/challenges/incoming",
        &dave,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["challenges"][0]["challenge_id"], c.as_str());
    let (status, v) = call(
        &app,
        "POST",
        &format!("/v1/matchmaking/challenges/{c}/decline"),
        &dave,
        None,
    )
    .await;
    assert_eq!((status, &v["status"]), (StatusCode::OK, &json!("DECLINED")));
    let (_, c) = call(
        &app,
        "POST",
        "/v1/matchmaking/challenges",
        &dave,
        Some(challenge("u_carol")),
    )
    .await;
    let c = c["challenge_id"].as_str().unwrap().to_owned();
    let (status, v) = call(
        &app,
        "POST",
        &format!("/v1/matchmaking/challenges/{c}/accept"),
        &carol,
        None,
    )
    .await;
    assert_eq!(
        (status, &v["status"]),
        (StatusCode::OK, &json!("ACCEPTED")),
        "{v}"
    );
    assert!(v["game_id"].is_string());

    // They were all in the seed's default tenant.
    let same = app.token_for("t_default", "u_alice", &[]);
    let (status, _) = call(
        &app,
        "GET",
        &format!("/v1/matchmaking/queue/{a}"),
        &same,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}
