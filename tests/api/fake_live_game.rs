//! A fake live-game-api: a real HTTP server on a free local port that
//! answers CreateGame as scripted (delays, 5xx, 4xx, garbage, hangs) and
//! records every call. Idempotent by `Idempotency-Key`, like the real one.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// How the fake answers one call.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// 201 with the game (after a delay).
    Game { delay_ms: u64 },
    /// This status, with a small body.
    Status(u16),
    /// 200 with a body that is not the contract's.
    Garbage,
    /// Never answers (until the client gives up).
    Hang,
    /// Creates the game when the call arrives and answers 201 only once
    /// [`FakeLiveGame::release`] is called: a caller killed before then
    /// certainly died between "the game exists" and "its answer came".
    #[allow(dead_code)] // tests/processes.rs
    Held,
}

/// One call the fake received.
#[derive(Debug, Clone)]
pub struct Call {
    pub idempotency_key: Option<String>,
    pub request_id: Option<String>,
    pub authorization: Option<String>,
    pub traceparent: Option<String>,
    pub body: Value,
    /// The game it answered with, if any.
    pub game_id: Option<String>,
}

#[derive(Default)]
struct Fake {
    script: Mutex<VecDeque<Answer>>,
    default: Mutex<Option<Answer>>,
    calls: Mutex<Vec<Call>>,
    games: Mutex<HashMap<String, String>>,
    released: AtomicBool,
    release: Notify,
}

#[derive(Clone)]
pub struct FakeLiveGame {
    pub url: String,
    fake: Arc<Fake>,
}

impl FakeLiveGame {
    /// Starts the fake; it answers `default` unless a scripted answer waits.
    pub async fn start(default: Answer) -> Self {
        let fake = Arc::new(Fake::default());
        *fake.default.lock().unwrap() = Some(default);
        let app = Router::new()
            .route("/v1/games", post(create))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, fake }
    }

    /// The next calls get these answers, in order.
    pub fn script(&self, answers: &[Answer]) {
        self.fake
            .script
            .lock()
            .unwrap()
            .extend(answers.iter().copied());
    }

    /// From now on, calls without a scripted answer get this.
    pub fn set_default(&self, answer: Answer) {
        *self.fake.default.lock().unwrap() = Some(answer);
    }

    /// Every held answer (now and later) goes out.
    #[allow(dead_code)] // tests/processes.rs
    pub fn release(&self) {
        self.fake.released.store(true, Ordering::SeqCst);
        self.fake.release.notify_waiters();
    }

    pub fn calls(&self) -> Vec<Call> {
        self.fake.calls.lock().unwrap().clone()
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn create(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> Response {
    let answer = fake
        .script
        .lock()
        .unwrap()
        .pop_front()
        .or(*fake.default.lock().unwrap())
        .unwrap_or(Answer::Game { delay_ms: 0 });
    let key = header(&headers, "idempotency-key");
    let game_id = match answer {
        Answer::Game { .. } | Answer::Held => Some(
            fake.games
                .lock()
                .unwrap()
                .entry(key.clone().unwrap_or_default())
                .or_insert_with(|| format!("g_fake_{}", ulid::Ulid::new()))
                .clone(),
        ),
        _ => None,
    };
    fake.calls.lock().unwrap().push(Call {
        idempotency_key: key,
        request_id: header(&headers, "x-request-id"),
        authorization: header(&headers, "authorization"),
        traceparent: header(&headers, "traceparent"),
        body: body.0,
        game_id: game_id.clone(),
    });
    match answer {
        Answer::Game { delay_ms } => {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            (
                StatusCode::CREATED,
                axum::Json(json!({ "game_id": game_id })),
            )
                .into_response()
        }
        Answer::Held => {
            loop {
                // Registered before the flag is read, so a release between
                // the two still wakes it.
                let released = fake.release.notified();
                if fake.released.load(Ordering::SeqCst) {
                    break;
                }
                released.await;
            }
            (
                StatusCode::CREATED,
                axum::Json(json!({ "game_id": game_id })),
            )
                .into_response()
        }
        Answer::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap();
            (status, axum::Json(json!({ "error": "scripted failure" }))).into_response()
        }
        Answer::Garbage => (StatusCode::OK, "<html>not json</html>").into_response(),
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
    }
}
