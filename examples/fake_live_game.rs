//! A stand-in live-game-api for benchmarks: answers POST /v1/games after a
//! fixed delay, failing a given share of calls with 503. Idempotent by
//! `Idempotency-Key`. Listens on loopback only.
//!
//! Usage: cargo run --release --example fake_live_game -- [port=19090] [delay-ms=5] [failure-share=0.0]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use rand::Rng;
use serde_json::json;

struct Fake {
    delay: Duration,
    failure_share: f64,
    games: Mutex<HashMap<String, String>>,
}

async fn create(State(fake): State<Arc<Fake>>, headers: HeaderMap) -> Response {
    tokio::time::sleep(fake.delay).await;
    if rand::rng().random_bool(fake.failure_share) {
        return (StatusCode::SERVICE_UNAVAILABLE, "scripted failure").into_response();
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let game = fake
        .games
        .lock()
        .unwrap()
        .entry(key)
        .or_insert_with(|| format!("g_fake_{}", ulid::Ulid::new()))
        .clone();
    (StatusCode::CREATED, axum::Json(json!({ "game_id": game }))).into_response()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(19090);
    let delay_ms: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let failure_share: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let fake = Arc::new(Fake {
        delay: Duration::from_millis(delay_ms),
        failure_share: failure_share.clamp(0.0, 1.0),
        games: Mutex::new(HashMap::new()),
    });
    let app = Router::new()
        .route("/v1/games", post(create))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    println!("fake live-game-api on 127.0.0.1:{port}: {delay_ms} ms, {failure_share} failing");
    axum::serve(listener, app).await.expect("serve");
}
