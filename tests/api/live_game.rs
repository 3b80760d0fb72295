//! Game creation through a (fake) live-game-api: the contract, retries,
//! roll-backs, the circuit breaker and the finished callback.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fake_live_game::{Answer, FakeLiveGame};
use crate::helpers::{
    Backend, OnBackend, assert_all_matched_in_pairs, error_code, join_body, join_many, spawn_on,
};

const CALLBACK_TOKEN: &str = "callback-token-0123456789";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// An app on `backend` creating its games through `fake` (`None`: skip).
pub async fn app_with(
    backend: Backend,
    fake: &FakeLiveGame,
    customize: impl FnOnce(&mut matchmaking_api::settings::Settings),
) -> Option<OnBackend> {
    let url = fake.url.clone();
    spawn_on(backend, move |s| {
        s.live_game_api_url = Some(url);
        s.live_game_api_token = Some("service-token".into());
        s.live_game_api_callback_token = Some(CALLBACK_TOKEN.into());
        // Generous: a loaded machine must not turn a prompt answer into a
        // timeout (and a retry the test did not count on). The timeout
        // tests set their own.
        s.live_game_api_timeout_seconds = 5.0;
        customize(s);
    })
    .await
}

async fn create_game_follows_the_contract(backend: Backend) {
    let fake = FakeLiveGame::start(Answer::Game { delay_ms: 0 }).await;
    let Some(app) = app_with(backend, &fake, |_| {}).await else {
        return;
    };
    let (a, b) = (app.token("alice"), app.token("bob"));
    app.put_ratings(
        &app.admin_token(),
        "t1",
        "bob",
        &json!({ "rapid_atomic": 1580 }),
    )
    .await;
    let body =
        json!({ "time_control": "10+0", "mode": "casual", "variant": "atomic", "region": "EU" });
    let ia = app.join_ok(&a, &body).await;
    app.join_ok(&b, &body).await;
    let status = app.wait_for_result(&a, &ia).await;
    let calls = fake.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(
        status["game_id"].as_str(),
        call.game_id.as_deref(),
        "the service's game id is handed out"
    );
    assert!(call.idempotency_key.as_deref().unwrap().starts_with("m_"));
    assert_eq!(call.authorization.as_deref(), Some("Bearer service-token"));
    let b = &call.body;
    assert_eq!(b["tenant_id"], "t1");
    assert_eq!(
        (
            b["time_control"].as_str(),
            b["mode"].as_str(),
            b["variant"].as_str()
        ),
        (Some("10+0"), Some("casual"), Some("atomic"))
    );
    let mut players = [
        b["white_user_id"].as_str().unwrap(),
        b["black_user_id"].as_str().unwrap(),
    ];
    players.sort();
    assert_eq!(players, ["alice", "bob"]);
    let white_rating = if b["white_user_id"] == "bob" {
        1580
    } else {
        1500
    };
    assert_eq!(b["rating_snapshot"]["white"], white_rating);
    assert_eq!(b["metadata"]["matchmaking_source"], "auto");
    assert_eq!(b["metadata"]["region"], "EU");
    assert_eq!(
        b["metadata"]["match_id"].as_str(),
        call.idempotency_key.as_deref()
    );
}

async fn a_5xx_then_success_gives_one_game_under_one_idempotency_key(backend: Backend) {
    let fake = FakeLiveGame::start(Answer::Game { delay_ms: 0 }).await;
    fake.script(&[Answer::Status(503)]);
    let Some(app) = app_with(backend, &fake, |_| {}).await else {
        return;
    };
    let joined = join_many(&app, 2, "p", |_| join_body("5+0")).await;
    assert_all_matched_in_pairs(&app, &joined).await;
    let calls = fake.calls();
    assert_eq!(calls.len(), 2, "one retry");
    assert_eq!(calls[0].idempotency_key, calls[1].idempotency_key);
}

async fn a_4xx_is_not_retried_and_the_players_wait_on(backend: Backend) {
    let fake = FakeLiveGame::start(Answer::Game { delay_ms: 0 }).await;
    fake.script(&[Answer::Status(422)]);
    let Some(app) = app_with(backend, &fake, |_| {}).await else {
        return;
    };
    let joined = join_many(&app, 2, "p", |_| join_body("5+0")).await;
    assert_all_matched_in_pairs(&app, &joined).await;
    let calls = fake.calls();
    assert_eq!(calls.len(), 2, "the refusal, then a new match");
    assert_ne!(
        calls[0].idempotency_key, calls[1].idempotency_key,
        "a refused match is not retried"
    );
}

/// A creation that times out may have made the game: the pair is never
/// split and matched again elsewhere (that could leave the first game
/// orphaned, or put a player in two). It stays held, and the game is asked
/// for again with the same match id until the service answers.
async fn timeouts_keep_the_pair_and_ask_again_with_the_same_match(backend: Backend) {
    let fake = FakeLiveGame::start(Answer::Game { delay_ms: 0 }).await;
    fake.script(&[Answer::Hang, Answer::Hang, Answer::Hang]);
    let Some(app) = app_with(backend, &fake, |s| {
        s.live_game_api_max_retries = 0;
        s.live_game_api_timeout_seconds = 0.3;
    })
    .await
    else {
        return;
    };
    let (a, b) = (app.token("alice"), app.token("bob"));
    let ia = app.join_ok(&a, &join_body("5+0")).await;
    let ib = app.join_ok(&b, &join_body("5+0")).await;
    let status = app.wait_for_result(&a, &ia).await;
    assert_eq!(status["status"], "MATCHED");
    assert_eq!(
        app.wait_for_result(&b, &ib).await["game_id"],
        status["game_id"]
    );
    // Three hung; a later one created the game (on a loaded machine even a
    // prompt answer may come after the short timeout: then one more try).
    let calls = fake.calls();
    assert!(calls.len() >= 4, "{} calls", calls.len());
    let keys: HashSet<_> = calls.iter().map(|c| c.idempotency_key.clone()).collect();
    assert_eq!(keys.len(), 1, "every attempt is the same match");
    assert_eq!(
        status["game_id"].as_str(),
        calls.last().unwrap().game_id.as_deref()
    );
    // One record, of that game; no intent left.
    let durable = app.durable().await;
    let tenant = matchmaking_api::domain::TenantId::parse("t1").unwrap();
    let alice = matchmaking_api::domain::UserId::parse("alice").unwrap();
    let record = durable
        .active_match(&tenant, &alice, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Some(record.game_id.as_str()), status["game_id"].as_str());
    assert!(durable.intents().await.unwrap().is_empty());
}

async fn garbage_answers_are_errors_and_never_panics(backend: Backend) {
    let fake = FakeLiveGame::start(Answer::Game { delay_ms: 0 }).await;
    fake.script(&[Answer::Garbage, Answer::Garbage]);
    let Some(app) = app_with(backend, &fake, |_| {}).await else {
        return;
    };
    let joined = join_many(&app, 2, "p", |_| join_body("5+0")).await;
    assert_all_matched_in_pairs(&app, &joined).await;
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}

async fn an_outage_opens_the_breaker_and_recovery_closes_it(backend: Backend) {
    let fake = FakeLiveGame::start(Answer::Status(500)).await;
    let Some(app) = app_with(backend, &fake, |s| {
        s.live_game_api_max_retries = 0;
        s.circuit_breaker_failures = 2;
        s.circuit_breaker_cooldown_seconds = 0.4;
        s.max_queue_time_seconds = 0.8;
    })
    .await
    else {
        return;
    };
    let (a, b) = (app.token("alice"), app.token("bob"));
    let ia = app.join_ok(&a, &join_body("5+0")).await;
    app.join_ok(&b, &join_body("5+0")).await;
    // Two failed creations open the breaker.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ready: Value = app.get("/readyz").await.json().await.unwrap();
        if ready["checks"]["game_creation"] == "open" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "breaker never opened: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = app.join(&app.token("carol"), &join_body("5+0")).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(error_code(r).await, "MATCHMAKING_UNAVAILABLE");
    // The outage outlasts the queue time, but does not count toward it.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(app.status_json(&a, &ia).await["status"], "SEARCHING");
    // Recovery: the next probe succeeds, the pair is matched, joins work.
    fake.set_default(Answer::Game { delay_ms: 0 });
    let status = app.wait_for_result(&a, &ia).await;
    assert_eq!(status["status"], "MATCHED");
    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["checks"]["game_creation"], "closed");
    app.join_ok(&app.token("carol"), &join_body("5+0")).await;
}

async fn the_game_service_sees_the_request_id_of_the_join_that_completed_the_pair(
    backend: Backend,
) {
    let fake = FakeLiveGame::start(Answer::Game { delay_ms: 0 }).await;
    let Some(app) = app_with(backend, &fake, |_| {}).await else {
        return;
    };
    let (a, b) = (app.token("alice"), app.token("bob"));
    let ia = app.join_ok(&a, &join_body("5+0")).await;
    let r = app
        .client
        .post(format!("{}/v1/matchmaking/queue", app.address))
        .bearer_auth(&b)
        .header("x-request-id", "join-of-bob-42")
        .json(&join_body("5+0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    app.wait_for_result(&a, &ia).await;
    assert_eq!(
        fake.calls()[0].request_id.as_deref(),
        Some("join-of-bob-42")
    );
}

async fn the_game_service_reports_games_finished_with_its_token(backend: Backend) {
    let fake = FakeLiveGame::start(Answer::Game { delay_ms: 0 }).await;
    let Some(app) = app_with(backend, &fake, |_| {}).await else {
        return;
    };
    let joined = join_many(&app, 2, "p", |_| join_body("5+0")).await;
    assert_all_matched_in_pairs(&app, &joined).await;
    let game = app.status_json(&joined[0].token, &joined[0].id).await["game_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let finish = |token: &str, body: Value| {
        app.client
            .post(format!("{}/internal/games/{game}/finished", app.address))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let r = finish("not-the-token", json!({ "tenant_id": "t1" }))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = finish(CALLBACK_TOKEN, json!({})).await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "the service names the tenant"
    );
    for _ in 0..2 {
        let r = finish(CALLBACK_TOKEN, json!({ "tenant_id": "t1" }))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    app.join_ok(&app.token("p0"), &join_body("5+0")).await;
}

async fn a_challenge_game_goes_through_the_game_service_too(backend: Backend) {
    let fake = FakeLiveGame::start(Answer::Game { delay_ms: 0 }).await;
    fake.script(&[Answer::Status(502)]);
    let Some(app) = app_with(backend, &fake, |_| {}).await else {
        return;
    };
    let created: Value = app
        .client
        .post(format!("{}/v1/matchmaking/challenges", app.address))
        .bearer_auth(app.token("alice"))
        .json(&json!({ "opponent_user_id": "bob", "time_control": "3+0", "mode": "rated", "preferred_color": "white" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["challenge_id"].as_str().unwrap();
    let accepted: Value = app
        .client
        .post(format!(
            "{}/v1/matchmaking/challenges/{id}/accept",
            app.address
        ))
        .bearer_auth(app.token("bob"))
        .header("traceparent", TRACEPARENT)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(accepted["status"], "ACCEPTED");
    let calls = fake.calls();
    assert_eq!(calls.len(), 2, "the 502 was retried");
    // Created while serving the accept: its trace context is passed on
    // (no exporter here, so unchanged), to every attempt.
    assert!(
        calls
            .iter()
            .all(|c| c.traceparent.as_deref() == Some(TRACEPARENT))
    );
    assert_eq!(calls[1].body["metadata"]["matchmaking_source"], "challenge");
    assert_eq!(calls[1].body["white_user_id"], "alice");
    assert_eq!(accepted["game_id"].as_str(), calls[1].game_id.as_deref());
}

async fn half_the_calls_failing_still_matches_everyone_exactly_once(backend: Backend) {
    let fake = FakeLiveGame::start(Answer::Game { delay_ms: 1 }).await;
    let script: Vec<Answer> = (0..200)
        .map(|i| {
            if i % 2 == 0 {
                Answer::Status(500)
            } else {
                Answer::Game { delay_ms: 1 }
            }
        })
        .collect();
    fake.script(&script);
    let Some(app) = app_with(backend, &fake, |s| s.circuit_breaker_failures = 1_000).await else {
        return;
    };
    let joined = join_many(&app, 100, "p", |_| join_body("5+0")).await;
    assert_all_matched_in_pairs(&app, &joined).await;
}

crate::on_every_backend!(
    create_game_follows_the_contract,
    a_5xx_then_success_gives_one_game_under_one_idempotency_key,
    a_4xx_is_not_retried_and_the_players_wait_on,
    timeouts_keep_the_pair_and_ask_again_with_the_same_match,
    garbage_answers_are_errors_and_never_panics,
    an_outage_opens_the_breaker_and_recovery_closes_it,
    the_game_service_sees_the_request_id_of_the_join_that_completed_the_pair,
    the_game_service_reports_games_finished_with_its_token,
    a_challenge_game_goes_through_the_game_service_too,
    half_the_calls_failing_still_matches_everyone_exactly_once,
);
