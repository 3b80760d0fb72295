//! Traces across service boundaries (SPEC §8), with the real binary: the
//! W3C `traceparent` a client sends reaches the rating service and
//! live-game-api, and with `OTEL_EXPORTER_OTLP_ENDPOINT` set the spans
//! (request, rating read, matching pass, commit, CreateGame) arrive at an
//! OTLP/HTTP receiver written here.

#[path = "api/fake_live_game.rs"]
#[allow(dead_code)]
mod fake_live_game;
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::{Value, json};

use fake_live_game::{Answer, FakeLiveGame};
use support::procs::{Procs, tokens};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Serves `router` on a free port; answers its base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

type Seen = Arc<Mutex<Vec<String>>>;

/// A rating service that rates nobody (404) and keeps each call's
/// `traceparent`.
async fn rating_service() -> (String, Seen) {
    let seen = Seen::default();
    let router = Router::new()
        .route(
            "/v1/ratings/{user}",
            get(|State(seen): State<Seen>, headers: HeaderMap| async move {
                if let Some(t) = headers.get("traceparent") {
                    seen.lock().unwrap().push(t.to_str().unwrap().to_owned());
                }
                StatusCode::NOT_FOUND
            }),
        )
        .with_state(seen.clone());
    (serve(router).await, seen)
}

type Exports = Arc<Mutex<Vec<Value>>>;

/// An OTLP/HTTP receiver (JSON encoding): keeps every export request.
async fn otlp_receiver() -> (String, Exports) {
    let exports = Exports::default();
    let router = Router::new()
        .route(
            "/v1/traces",
            post(
                |State(exports): State<Exports>, body: axum::body::Bytes| async move {
                    let v: Value = serde_json::from_slice(&body).expect("OTLP JSON");
                    exports.lock().unwrap().push(v);
                    axum::Json(json!({}))
                },
            ),
        )
        .with_state(exports.clone());
    (serve(router).await, exports)
}

#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
}

fn spans(exports: &Exports) -> Vec<Span> {
    let mut out = Vec::new();
    for export in exports.lock().unwrap().iter() {
        for rs in export["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    let text = |k: &str| s[k].as_str().unwrap_or("").to_ascii_lowercase();
                    out.push(Span {
                        name: text("name"),
                        trace_id: text("traceId"),
                        span_id: text("spanId"),
                        parent: text("parentSpanId"),
                    });
                }
            }
        }
    }
    out
}

/// Joins two players (the first with the client's `traceparent`) and waits
/// for their match.
async fn match_two(url: &str, prefix: &str) {
    let client = support::http_client();
    let players = tokens(2, prefix);
    let mut ids = Vec::new();
    for (i, token) in players.iter().enumerate() {
        let mut request = client
            .post(format!("{url}/v1/matchmaking/queue"))
            .bearer_auth(token)
            .json(&json!({ "time_control": "5+0", "mode": "rated" }));
        if i == 0 {
            request = request.header("traceparent", PARENT);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        ids.push(v["queue_entry_id"].as_str().unwrap().to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v: Value = client
            .get(format!("{url}/v1/matchmaking/queue/{}", ids[0]))
            .bearer_auth(&players[0])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["status"] == "MATCHED" {
            return;
        }
        assert!(Instant::now() < deadline, "not matched: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_exporter_the_clients_trace_context_is_passed_on_unchanged() {
    let (ratings_url, ratings_seen) = rating_service().await;
    let games = FakeLiveGame::start(Answer::Game { delay_ms: 0 }).await;
    let mut procs = Procs::new(&[
        ("RATING_API_URL", ratings_url),
        ("LIVE_GAME_API_URL", games.url.clone()),
    ]);
    let (_, url) = procs.serve(&[]);
    match_two(&url, "plain").await;
    // The first player's rating read was made while serving her join.
    assert_eq!(
        ratings_seen.lock().unwrap().as_slice(),
        &[PARENT.to_owned()]
    );
    // The game is created by the worker, outside any request: no context.
    assert!(games.calls().iter().all(|c| c.traceparent.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_receiver_and_calls_carry_their_context() {
    let (ratings_url, ratings_seen) = rating_service().await;
    let games = FakeLiveGame::start(Answer::Game { delay_ms: 0 }).await;
    let (otlp_url, exports) = otlp_receiver().await;
    let mut procs = Procs::new(&[
        ("RATING_API_URL", ratings_url),
        ("LIVE_GAME_API_URL", games.url.clone()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_url),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
    ]);
    let (_, url) = procs.serve(&[]);
    match_two(&url, "traced").await;

    let wanted = [
        "request",
        "rating_read",
        "matching_pass",
        "commit",
        "create_game",
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans = spans(&exports);
        if wanted.iter().all(|w| spans.iter().any(|s| s.name == *w)) {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "spans seen: {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The join continued the client's trace, and its rating read is a
    // child of it; the rating service was called with that child's id.
    let join = spans
        .iter()
        .find(|s| s.name == "request" && s.trace_id == TRACE_ID)
        .expect("the join's span continues the client's trace");
    assert_eq!(join.parent, "00f067aa0ba902b7");
    let read = spans
        .iter()
        .find(|s| s.name == "rating_read" && s.trace_id == TRACE_ID)
        .expect("the rating read is in the client's trace");
    assert_eq!(read.parent, join.span_id);
    let sent = ratings_seen.lock().unwrap().clone();
    assert!(
        sent.contains(&format!("00-{TRACE_ID}-{}-01", read.span_id)),
        "{sent:?} vs {read:?}"
    );
    // live-game-api got the CreateGame span's context.
    let create = spans.iter().find(|s| s.name == "create_game").unwrap();
    let calls = games.calls();
    assert_eq!(
        calls[0].traceparent.as_deref(),
        Some(format!("00-{}-{}-01", create.trace_id, create.span_id).as_str())
    );
    let commit = spans.iter().find(|s| s.name == "commit").unwrap();
    assert_eq!(
        create.parent, commit.span_id,
        "CreateGame inside the commit"
    );
}
