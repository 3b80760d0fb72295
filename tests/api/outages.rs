//! Outages: with Redis or PostgreSQL gone, requests that need it answer 503
//! MATCHMAKING_UNAVAILABLE within about a second (never a hang), /readyz
//! answers 503, and the service recovers by itself when the server returns.
//! The servers here are the tests' own (or behind a proxy the test cuts),
//! never the machine's shared ones.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::{TestApp, error_code, join_body, spawn_app_with};
use crate::support::{OwnRedis, PgSchema, Proxy, postgres_url};

/// Joins as `user` and answers the status and how long it took.
async fn timed_join(app: &TestApp, user: &str) -> (StatusCode, Duration, reqwest::Response) {
    let started = Instant::now();
    let r = app.join(&app.token(user), &join_body("5+0")).await;
    (r.status(), started.elapsed(), r)
}

/// Retries until the service answers joins again (it must recover alone).
async fn recovers(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut i = 0;
    loop {
        i += 1;
        let (status, _, _) = timed_join(app, &format!("after{i}")).await;
        if status == StatusCode::CREATED {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: still {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn redis_down_answers_503_fast_and_recovers_by_itself() {
    let Some(mut redis) = OwnRedis::start(&[]) else {
        return;
    };
    let url = redis.url();
    let app = spawn_app_with(|s| s.redis_url = Some(url)).await;
    assert_eq!(timed_join(&app, "before").await.0, StatusCode::CREATED);

    redis.kill();
    let (status, took, r) = timed_join(&app, "during").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(r).await, "MATCHMAKING_UNAVAILABLE");
    // Bounded by the 1 s connect and response timeouts (a TCP retry would
    // take minutes); the margin is for a loaded machine.
    assert!(took < Duration::from_secs(4), "answered after {took:?}");
    let started = Instant::now();
    assert_eq!(
        app.get("/readyz").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(started.elapsed() < Duration::from_secs(4));

    redis.restart();
    recovers(&app).await;
}

#[tokio::test]
async fn postgres_down_answers_503_fast_and_recovers_by_itself() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let upstream: std::net::SocketAddr = {
        let url = postgres_url();
        let host_port = url
            .split('@')
            .nth(1)
            .and_then(|h| h.split('/').next())
            .unwrap_or("127.0.0.1:5432");
        tokio::net::lookup_host(host_port)
            .await
            .unwrap()
            .next()
            .unwrap()
    };
    let proxy = Proxy::start(upstream).await;
    let url = schema
        .url()
        .replacen(&upstream.port().to_string(), &proxy.port.to_string(), 1);
    let app = spawn_app_with(|s| s.database_url = Some(url)).await;
    let admin = app.admin_token();
    let ratings = |user: &'static str| {
        let app = &app;
        let admin = admin.clone();
        async move {
            let started = Instant::now();
            let r = app.get_ratings(&admin, "t1", user).await;
            (r.status(), started.elapsed())
        }
    };
    assert_eq!(ratings("alice").await.0, StatusCode::OK);

    proxy.cut();
    let (status, took) = ratings("alice").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        took < Duration::from_millis(1_500),
        "answered after {took:?}"
    );
    assert_eq!(
        app.get("/readyz").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(15);
    while ratings("alice").await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "no recovery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    recovers(&app).await;
}

/// Redis restarts empty (no persistence, a failover to a replica that
/// missed writes, a FLUSHALL): the active-game guards lived there. The
/// invariant "nobody in two games" must hold from the first request after
/// Redis answers again: the durable store's claims are rebuilt into it
/// before anyone is admitted. A matched entry still reads MATCHED (from
/// its record); an entry that was searching reads 404, never a stale
/// SEARCHING.
#[tokio::test]
async fn after_redis_loses_its_data_a_matched_player_cannot_join_a_second_game() {
    let Some(mut redis) = OwnRedis::start(&[]) else {
        return;
    };
    let url = redis.url();
    // No periodic tick (joins still make their pool due at once): the
    // rebuild must come from the join path itself, not from a worker that
    // happened to notice first.
    let app = spawn_app_with(|s| {
        s.redis_url = Some(url);
        s.worker_interval_seconds = 3_600.0;
    })
    .await;
    let (alice, bob, carol) = (app.token("alice"), app.token("bob"), app.token("carol"));
    let ia = app.join_ok(&alice, &join_body("5+0")).await;
    app.join_ok(&bob, &join_body("5+0")).await;
    let matched = app.wait_for_result(&alice, &ia).await;
    assert_eq!(matched["status"], "MATCHED");
    let ic = app.join_ok(&carol, &join_body("30+0")).await;

    redis.restart();
    // The first answer after Redis is back (connection errors aside) is
    // the guard's.
    let deadline = Instant::now() + Duration::from_secs(15);
    let first = loop {
        let r = app.join(&alice, &join_body("5+0")).await;
        if r.status() != StatusCode::SERVICE_UNAVAILABLE {
            break r;
        }
        assert!(Instant::now() < deadline, "Redis never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(first.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(first).await, "ACTIVE_GAME_EXISTS");
    let r = app.join(&bob, &join_body("3+0")).await;
    assert_eq!(r.status(), StatusCode::CONFLICT, "bob too, in any pool");
    // Matched players keep their game.
    let status = app.status_json(&alice, &ia).await;
    assert_eq!(status["status"], "MATCHED");
    assert_eq!(status["game_id"], matched["game_id"]);
    assert_eq!(
        app.active(&bob).await["match"]["game_id"],
        matched["game_id"]
    );
    // Carol's search was lost with Redis: she can tell, and join again.
    assert_eq!(
        app.status(&carol, &ic).await.status(),
        StatusCode::NOT_FOUND
    );
    app.join_ok(&carol, &join_body("30+0")).await;
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    // The game finishes: both may play again.
    let game = matched["game_id"].as_str().unwrap();
    assert_eq!(
        app.game_finished(&app.admin_token(), game).await.status(),
        StatusCode::OK
    );
    app.join_ok(&alice, &join_body("5+0")).await;
}
