//! Hostile connections over real sockets (SPEC §7.4): slow heads, slow and
//! stalled bodies, idle keep-alive connections, a flood of idle
//! connections past the bound, oversized targets and headers. In each, a
//! normal request on a new connection is still answered within a second.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, spawn_app_with};

/// A normal request, on a connection of its own, must be answered within
/// this long while the node is under attack.
const SERVED_WITHIN: Duration = Duration::from_secs(1);

fn socket_addr(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// `/healthz` on a fresh client (a new connection); answers how long it took.
async fn normal_request(app: &TestApp) -> Duration {
    let client = reqwest::Client::builder()
        .timeout(SERVED_WITHIN)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let started = Instant::now();
    let answer = client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .expect("a normal request is answered within a second");
    assert_eq!(answer.status(), StatusCode::OK);
    started.elapsed()
}

/// Reads until the server closes the connection (or `limit` passes);
/// answers what was read and when the close came.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&got).into_owned(),
                    Some(started.elapsed()),
                );
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), None),
        }
    }
}

/// The JSON body of a raw HTTP answer.
fn json_body(answer: &str) -> Value {
    let body = answer.split("\r\n\r\n").nth(1).expect("a body");
    serde_json::from_str(body).expect("a JSON body")
}

#[tokio::test]
async fn a_slowloris_head_is_cut_and_others_are_served() {
    let app = spawn_app_with(|s| s.http_header_read_timeout_seconds = 0.5).await;
    let addr = socket_addr(&app);
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    // They trickle a header byte now and then, never finishing the head.
    let trickle = tokio::spawn(async move {
        let started = Instant::now();
        let mut closed = vec![None; slow.len()];
        while started.elapsed() < Duration::from_secs(3) {
            for (i, stream) in slow.iter_mut().enumerate() {
                if closed[i].is_none() && stream.write_all(b"X-A: b\r\n").await.is_err() {
                    closed[i] = Some(started.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A write may still land in the socket's buffer after the server
        // closed; a read tells for sure.
        for (i, stream) in slow.iter_mut().enumerate() {
            if closed[i].is_none() {
                let (_, at) = read_until_closed(stream, Duration::from_millis(100)).await;
                closed[i] = at.map(|_| started.elapsed());
            }
        }
        closed
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    normal_request(&app).await;
    let closed = trickle.await.unwrap();
    let cut = closed.iter().flatten().count();
    assert_eq!(cut, 100, "every slow head was cut: {closed:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let app = spawn_app_with(|s| s.http_header_read_timeout_seconds = 0.5).await;
    let mut stream = TcpStream::connect(socket_addr(&app)).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let closed = closed.expect("the idle connection was closed");
    assert!(closed >= Duration::from_millis(400), "{closed:?}");
}

#[tokio::test]
async fn a_slow_body_gets_408_in_the_error_shape() {
    // 1 s: short for the test, long enough that the normal request beside
    // the slow one is never cut on a loaded machine.
    let app = spawn_app_with(|s| s.http_request_timeout_seconds = 1.0).await;
    let token = app.token("alice");
    let mut stream = TcpStream::connect(socket_addr(&app)).await.unwrap();
    let head = format!(
        "POST /v1/matchmaking/queue HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"time_"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let slow_body = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if stream.write_all(b" ").await.is_err() {
                break;
            }
        }
    };
    let normal = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        normal_request(&app).await
    };
    tokio::select! {
        _ = slow_body => {}
        _ = tokio::time::sleep(Duration::from_secs(3)) => {}
    }
    normal.await;
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("x-request-id:"));
    assert_eq!(json_body(&answer)["error"]["code"], "REQUEST_TIMEOUT");
    assert!(closed.is_some(), "the connection closes after a 408");
    // Nothing was joined.
    assert!(app.active(&token).await["queue_entry"].is_null());
}

#[tokio::test]
async fn a_stalled_connection_is_closed_after_the_idle_timeout() {
    // A request deadline far away: the idle timeout alone closes it.
    let app = spawn_app_with(|s| {
        s.http_request_timeout_seconds = 60.0;
        s.http_idle_timeout_seconds = 0.5;
    })
    .await;
    let token = app.token("alice");
    let mut stream = TcpStream::connect(socket_addr(&app)).await.unwrap();
    let head = format!(
        "POST /v1/matchmaking/queue HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let closed = closed.expect("the stalled connection was closed");
    assert!(closed >= Duration::from_millis(400), "{closed:?}");
    normal_request(&app).await;
}

#[tokio::test]
async fn twice_the_connection_bound_held_idle_keeps_no_one_out() {
    const BOUND: usize = 50;
    let app = spawn_app_with(|s| s.http_max_connections = BOUND).await;
    let addr = socket_addr(&app);
    let mut idle = Vec::new();
    for _ in 0..2 * BOUND {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    // Some send half a head, the others nothing.
    for stream in idle.iter_mut().step_by(2) {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        normal_request(&app).await;
    }
    // The node gave older idle connections up for the newcomers: of the
    // 2×BOUND held, at least BOUND were closed by the server (read from the
    // sockets themselves: the connection gauge is process-wide, and other
    // tests' servers move it).
    let closed = futures::future::join_all(
        idle.iter_mut()
            .map(|s| read_until_closed(s, Duration::from_secs(2))),
    )
    .await
    .into_iter()
    .filter(|(_, closed)| closed.is_some())
    .count();
    assert!(closed >= BOUND, "only {closed} idle connections closed");
}

#[tokio::test]
async fn past_the_bound_with_every_connection_busy_a_newcomer_gets_503_at_once() {
    const BOUND: usize = 4;
    let app = spawn_app_with(|s| {
        s.http_max_connections = BOUND;
        s.http_request_timeout_seconds = 5.0;
    })
    .await;
    let addr = socket_addr(&app);
    let token = app.token("alice");
    // Every place busy: a request whose body is still coming.
    let mut busy = Vec::new();
    for _ in 0..BOUND {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /v1/matchmaking/queue HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        busy.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut newcomer = TcpStream::connect(&addr).await.unwrap();
    let (answer, closed) = read_until_closed(&mut newcomer, Duration::from_secs(1)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"));
    assert_eq!(
        json_body(&answer)["error"]["code"],
        "MATCHMAKING_UNAVAILABLE"
    );
    assert!(closed.is_some());
    // Once they finish (here: give up), places free up again.
    drop(busy);
    tokio::time::sleep(Duration::from_millis(200)).await;
    normal_request(&app).await;
}

#[tokio::test]
async fn oversized_targets_and_headers_are_refused_in_the_error_shape() {
    let app = spawn_app_with(|_| {}).await;
    let long = format!("{}/healthz?q={}", app.address, "a".repeat(9 * 1024));
    let answer = app.client.get(long).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::URI_TOO_LONG);
    assert!(answer.headers().contains_key("x-request-id"));
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["code"], "URI_TOO_LONG");

    let mut request = app.client.get(format!("{}/healthz", app.address));
    for i in 0..20 {
        request = request.header(format!("x-filler-{i}"), "v".repeat(1024));
    }
    let answer = request.send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(answer.headers().contains_key("x-request-id"));
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["code"], "HEADERS_TOO_LARGE");
}
