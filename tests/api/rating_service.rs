//! Ratings from the platform's rating service (SPEC §8), against a fake one:
//! fresh reads per variant, the cache, and a slow, failing or garbled
//! service that never fails a join.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app_with, spawn_app_with_clock};

/// How the fake answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// 200 with the player's pools (404 for a player it does not know).
    Serve,
    /// Answers after this long.
    Slow(Duration),
    Status(u16),
    /// 200 with a body that is not the contract's.
    Garbage(&'static str),
}

/// A player's rows: (pool_id, rating, deviation).
type Pools = Vec<(&'static str, i32, f64)>;

struct Fake {
    mode: Mutex<Mode>,
    players: Mutex<HashMap<String, Pools>>,
    hits: AtomicUsize,
    headers: Mutex<Vec<HeaderMap>>,
}

#[derive(Clone)]
struct FakeRatings {
    url: String,
    fake: Arc<Fake>,
}

impl FakeRatings {
    async fn start() -> Self {
        let fake = Arc::new(Fake {
            mode: Mutex::new(Mode::Serve),
            players: Mutex::default(),
            hits: AtomicUsize::new(0),
            headers: Mutex::default(),
        });
        let app = Router::new()
            .route("/v1/ratings/{user_id}", get(answer))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, fake }
    }

    fn rate(&self, user: &str, pools: &[(&'static str, i32, f64)]) {
        self.fake
            .players
            .lock()
            .unwrap()
            .insert(user.to_owned(), pools.to_vec());
    }

    fn set(&self, mode: Mode) {
        *self.fake.mode.lock().unwrap() = mode;
    }

    fn hits(&self) -> usize {
        self.fake.hits.load(Ordering::SeqCst)
    }
}

async fn answer(
    State(fake): State<Arc<Fake>>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Response {
    fake.hits.fetch_add(1, Ordering::SeqCst);
    fake.headers.lock().unwrap().push(headers);
    let mode = *fake.mode.lock().unwrap();
    match mode {
        Mode::Slow(delay) => tokio::time::sleep(delay).await,
        Mode::Status(code) => {
            return (StatusCode::from_u16(code).unwrap(), "down").into_response();
        }
        Mode::Garbage(body) => return (StatusCode::OK, body).into_response(),
        Mode::Serve => {}
    }
    let Some(pools) = fake.players.lock().unwrap().get(&user).cloned() else {
        return (StatusCode::NOT_FOUND, "no such player").into_response();
    };
    let ratings: Vec<Value> = pools
        .iter()
        .map(|(pool, rating, rd)| {
            json!({ "pool_id": pool, "rating": rating, "rating_deviation": rd,
                    "volatility": 0.06, "games_played": 40, "provisional": false,
                    "last_updated_at": "2026-11-30T10:00:00Z" })
        })
        .collect();
    axum::Json(json!({ "user_id": user, "ratings": ratings })).into_response()
}

async fn app_reading(fake: &FakeRatings) -> TestApp {
    let url = fake.url.clone();
    spawn_app_with(move |s| {
        s.rating_api_url = Some(url);
        s.rating_api_token = Some("rating-token".into());
        // The fake answers at once; a short timeout would turn a slow
        // moment of the machine into a fallback the test did not expect.
        s.rating_api_timeout_seconds = 5.0;
        s.circuit_breaker_failures = 3;
        s.circuit_breaker_cooldown_seconds = 60.0;
    })
    .await
}

/// Pairs `a` and `b` in `body`'s pool and answers the ratings each was
/// matched with (a's, b's), as the other player is shown them.
async fn paired(app: &TestApp, a: &str, b: &str, body: Value) -> (i64, i64) {
    let (ta, tb) = (app.token(a), app.token(b));
    let ia = app.join_ok(&ta, &body).await;
    let ib = app.join_ok(&tb, &body).await;
    app.wait_for_result(&ta, &ia).await;
    app.wait_for_result(&tb, &ib).await;
    let seen = |v: Value| {
        v["match"]["opponent"]["rating_snapshot"]["rating"]
            .as_i64()
            .unwrap()
    };
    (seen(app.active(&tb).await), seen(app.active(&ta).await))
}

fn blitz(variant: &str) -> Value {
    json!({ "time_control": "5+0", "mode": "rated", "variant": variant })
}

async fn fallbacks(app: &TestApp, why: &str, used: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("matchmaking_rating_fallbacks_total{")
                && l.contains(&format!("why=\"{why}\""))
                && l.contains(&format!("used=\"{used}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_join_reads_the_rating_of_its_speed_and_variant_from_the_service() {
    let fake = FakeRatings::start().await;
    fake.rate(
        "alice",
        &[
            ("blitz_standard", 1620, 80.5),
            ("blitz_chess960", 2100, 120.0),
        ],
    );
    fake.rate(
        "bob",
        &[
            ("blitz_standard", 1640, 70.0),
            ("blitz_chess960", 2080, 90.0),
        ],
    );
    fake.rate(
        "carol",
        &[
            ("blitz_standard", 1500, 60.0),
            ("blitz_chess960", 2110, 90.0),
        ],
    );
    fake.rate("dave", &[("blitz_chess960", 2090, 90.0)]);
    let app = app_reading(&fake).await;
    assert_eq!(
        paired(&app, "alice", "bob", blitz("standard")).await,
        (1620, 1640)
    );
    assert_eq!(
        paired(&app, "carol", "dave", blitz("chess960")).await,
        (2110, 2090)
    );
    // The service was called as the contract says.
    let headers = fake.fake.headers.lock().unwrap().clone();
    assert_eq!(headers.len(), 4);
    for h in headers {
        assert_eq!(h["authorization"], "Bearer rating-token");
        assert!(!h["x-request-id"].to_str().unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_player_the_service_does_not_rate_is_1500() {
    let fake = FakeRatings::start().await;
    fake.rate("erin", &[("bullet_standard", 1900, 50.0)]);
    let app = app_reading(&fake).await;
    // erin has no blitz row; frank is unknown to the service (404).
    assert_eq!(
        paired(&app, "erin", "frank", blitz("standard")).await,
        (1500, 1500)
    );
    assert_eq!(fake.hits(), 2, "both read from the service");
}

#[tokio::test]
async fn answers_are_cached_per_player_and_pool_for_the_ttl() {
    let fake = FakeRatings::start().await;
    fake.rate(
        "alice",
        &[
            ("blitz_standard", 1620, 80.0),
            ("blitz_chess960", 2100, 80.0),
        ],
    );
    let url = fake.url.clone();
    let (app, clock) = spawn_app_with_clock(move |s| {
        s.rating_api_url = Some(url);
        s.rating_cache_ttl_seconds = 60.0;
        s.worker_enabled = false;
    })
    .await;
    let token = app.token("alice");
    let join_and_cancel = |variant: &'static str| {
        let (app, token) = (&app, &token);
        async move {
            let id = app.join_ok(token, &blitz(variant)).await;
            assert!(app.cancel(token, &id).await.status().is_success());
        }
    };
    join_and_cancel("standard").await;
    assert_eq!(fake.hits(), 1);
    join_and_cancel("standard").await;
    join_and_cancel("chess960").await;
    assert_eq!(
        fake.hits(),
        1,
        "within the TTL, every pool of the answer is cached"
    );
    clock.advance(61_000);
    join_and_cancel("standard").await;
    assert_eq!(fake.hits(), 2, "past the TTL the service is asked again");
}

#[tokio::test]
async fn a_slow_service_falls_back_to_the_cache_then_the_local_table_then_1500() {
    let fake = FakeRatings::start().await;
    fake.rate("alice", &[("blitz_standard", 1800, 80.0)]);
    fake.rate("bob", &[("blitz_standard", 1810, 80.0)]);
    let url = fake.url.clone();
    let (app, clock) = spawn_app_with_clock(move |s| {
        s.rating_api_url = Some(url);
        s.rating_api_timeout_seconds = 1.0;
        s.rating_cache_ttl_seconds = 60.0;
        s.circuit_breaker_failures = 100;
    })
    .await;
    // Read once while the service is well; then it slows past the timeout.
    for user in ["alice", "bob"] {
        let token = app.token(user);
        let id = app.join_ok(&token, &blitz("chess960")).await;
        app.cancel(&token, &id).await;
    }
    clock.advance(61_000);
    fake.set(Mode::Slow(Duration::from_secs(30)));
    let started = Instant::now();
    assert_eq!(
        paired(&app, "alice", "bob", blitz("standard")).await,
        (1800, 1810)
    );
    // Two joins, each giving up after the 1 s timeout, not the 30 s the
    // service takes.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(fallbacks(&app, "timeout", "cache").await >= 2.0);
    // Never read from the service: the local table, else 1500.
    let admin = app.admin_token();
    for user in ["carol", "dave"] {
        let r = app
            .put_ratings(&admin, "t1", user, &json!({ "blitz": 1700 }))
            .await;
        assert!(r.status().is_success());
    }
    assert_eq!(
        paired(&app, "carol", "dave", blitz("standard")).await,
        (1700, 1700)
    );
    assert!(fallbacks(&app, "timeout", "local").await >= 2.0);
    assert_eq!(
        paired(&app, "erin", "frank", blitz("standard")).await,
        (1500, 1500)
    );
    assert!(fallbacks(&app, "timeout", "default").await >= 2.0);
}

#[tokio::test]
async fn a_failing_service_opens_its_breaker_and_joins_go_on() {
    let fake = FakeRatings::start().await;
    fake.set(Mode::Status(503));
    let app = app_reading(&fake).await;
    for i in 0..3 {
        assert_eq!(
            paired(&app, &format!("a{i}"), &format!("b{i}"), blitz("standard")).await,
            (1500, 1500)
        );
    }
    // Three failures opened the breaker: the next joins do not call.
    assert_eq!(fake.hits(), 3);
    assert_eq!(
        paired(&app, "c", "d", blitz("standard")).await,
        (1500, 1500)
    );
    assert_eq!(fake.hits(), 3);
    assert!(fallbacks(&app, "breaker_open", "default").await >= 2.0);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("matchmaking_circuit_breaker_state{breaker=\"rating_api\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_service_that_is_not_there_never_fails_a_join() {
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let app = spawn_app_with(move |s| s.rating_api_url = Some(format!("http://{closed}"))).await;
    assert_eq!(
        paired(&app, "a", "b", blitz("standard")).await,
        (1500, 1500)
    );
    assert!(fallbacks(&app, "failed", "default").await >= 2.0);
}

#[tokio::test]
async fn answers_outside_the_contract_are_not_believed() {
    for garbage in [
        "not json",
        r#"{"user_id": "someone-else", "ratings": [{"pool_id": "blitz_standard", "rating": 2500}]}"#,
        r#"{"user_id": "USER", "ratings": [{"pool_id": "blitz_standard", "rating": 99999}]}"#,
        r#"{"user_id": "USER", "ratings": [{"pool_id": "blitz_standard", "rating": "2500"}]}"#,
    ] {
        let fake = FakeRatings::start().await;
        let app = app_reading(&fake).await;
        let admin = app.admin_token();
        for user in ["USER", "other"] {
            app.put_ratings(&admin, "t1", user, &json!({ "blitz": 1650 }))
                .await;
        }
        fake.set(Mode::Garbage(garbage));
        assert_eq!(
            paired(&app, "USER", "other", blitz("standard")).await,
            (1650, 1650),
            "{garbage}"
        );
        assert!(
            fallbacks(&app, "invalid", "local").await >= 1.0,
            "{garbage}"
        );
    }
}
