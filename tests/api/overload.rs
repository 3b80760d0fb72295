//! Load shedding: past `MAX_IN_FLIGHT_REQUESTS` a request is answered 503
//! at once with `Retry-After` (never queued), the health routes are never
//! shed, and places free up as requests finish.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;

use crate::helpers::{error_code, join_body, spawn_app_with};

/// Holds one request in flight: its head is sent, its body never is, so
/// the handler waits on it until the connection goes.
async fn hold_a_request(address: &str, token: &str) -> tokio::net::TcpStream {
    let addr = address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/matchmaking/queue HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

#[tokio::test]
async fn past_the_in_flight_bound_requests_are_shed_at_once_but_health_never_is() {
    let app = spawn_app_with(|s| s.max_in_flight_requests = 2).await;
    let held = [
        hold_a_request(&app.address, &app.token("slow1")).await,
        hold_a_request(&app.address, &app.token("slow2")).await,
    ];
    // Both held requests are in flight once the server has read their heads.
    let deadline = Instant::now() + Duration::from_secs(10);
    let shed = loop {
        let r = app.join(&app.token("alice"), &join_body("5+0")).await;
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            break r;
        }
        assert!(Instant::now() < deadline, "never shed: {}", r.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(shed.headers()["retry-after"], "1");
    assert!(shed.headers().contains_key("x-request-id"));
    assert_eq!(error_code(shed).await, "MATCHMAKING_UNAVAILABLE");
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(app.get(path).await.status(), StatusCode::OK, "{path}");
    }
    // The held requests leave: their places are free again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = app.join(&app.token("bob"), &join_body("5+0")).await;
        if r.status() == StatusCode::CREATED {
            break;
        }
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(Instant::now() < deadline, "places never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Backpressure from matching: while a pass over a pool has run past
/// `POOL_BUSY_PASS_SECONDS` (here held up by a slow game service), new
/// joins to that pool answer 503 with Retry-After and close their
/// connection; other pools, and the players already waiting, go on.
#[tokio::test]
async fn joins_to_a_pool_matching_is_behind_on_wait_outside_until_it_catches_up() {
    use crate::fake_live_game::{Answer, FakeLiveGame};
    let fake = FakeLiveGame::start(Answer::Game { delay_ms: 0 }).await;
    fake.script(&[Answer::Game { delay_ms: 2_000 }]);
    let url = fake.url.clone();
    let app = spawn_app_with(move |s| {
        s.live_game_api_url = Some(url);
        s.live_game_api_timeout_seconds = 10.0;
        s.pool_busy_pass_seconds = 0.3;
    })
    .await;
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    let ia = app.join_ok(&alice, &join_body("5+0")).await;
    app.join_ok(&bob, &join_body("5+0")).await;
    // The pass creating their game is held up: the pool turns busy.
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.calls().is_empty() {
        assert!(Instant::now() < deadline, "the pair was never matched");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = loop {
        let r = app.join(&app.token("carol"), &join_body("5+0")).await;
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            break r;
        }
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "carol waits in the pool meanwhile"
        );
        // She was admitted before the pass ran long: try as someone new.
        app.cancel(
            &app.token("carol"),
            r.json::<serde_json::Value>().await.unwrap()["queue_entry_id"]
                .as_str()
                .unwrap(),
        )
        .await;
        assert!(Instant::now() < deadline, "the pool never turned busy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(refused.headers()["connection"], "close");
    assert_eq!(error_code(refused).await, "MATCHMAKING_UNAVAILABLE");
    app.join_ok(&app.token("dave"), &join_body("3+0")).await;
    // The pass ends, the pair is matched, the pool takes joins again.
    assert_eq!(app.wait_for_result(&alice, &ia).await["status"], "MATCHED");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = app.join(&app.token("erin"), &join_body("5+0")).await;
        if r.status() == StatusCode::CREATED {
            break;
        }
        assert!(Instant::now() < deadline, "the pool stayed busy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
