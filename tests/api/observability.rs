//! Operability: the queue summary, rate limits, metrics turned off. The
//! values of metrics are checked in `tests/cli.rs`, on the real binary: the
//! recorder is process-wide, and there no other test moves a series.

use reqwest::StatusCode;

use crate::helpers::{
    Backend, TestApp, error_code, join_body, join_many, spawn_app_with, spawn_on,
};

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let app = spawn_app_with(|s| s.metrics_enabled = false).await;
    assert_eq!(app.get("/metrics").await.status(), StatusCode::NOT_FOUND);
    app.shutdown().await;
}

/// Fires `n` requests at once with `token` at GET /active; answers the
/// statuses and the first 429's Retry-After.
async fn burst(app: &TestApp, token: &str, n: usize) -> (Vec<StatusCode>, Option<String>) {
    let answers = futures::future::join_all((0..n).map(|_| {
        app.client
            .get(format!("{}/v1/matchmaking/active", app.address))
            .bearer_auth(token)
            .send()
    }))
    .await;
    let mut retry_after = None;
    let mut statuses = Vec::new();
    for r in answers {
        let r = r.expect("request");
        if r.status() == StatusCode::TOO_MANY_REQUESTS && retry_after.is_none() {
            retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            statuses.push(r.status());
            assert_eq!(error_code(r).await, "RATE_LIMITED");
        } else {
            statuses.push(r.status());
        }
    }
    (statuses, retry_after)
}

#[tokio::test]
async fn a_user_over_the_limit_gets_429_with_retry_after_and_others_do_not() {
    let app = spawn_app_with(|s| s.rate_limit_per_user = 2).await;
    let (statuses, retry_after) = burst(&app, &app.token("hasty"), 10).await;
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    // A burst of twice the rate passes, the rest is refused.
    // (One more may pass if the burst straddles a refill.)
    assert!((4..=5).contains(&ok) && ok + limited == 10, "{statuses:?}");
    let secs: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&secs), "{secs}");
    // Another user is not held back by the first.
    let (statuses, _) = burst(&app, &app.token("calm"), 2).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    // The budget refills at the configured rate.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let (statuses, _) = burst(&app, &app.token("hasty"), 1).await;
    assert_eq!(statuses, vec![StatusCode::OK]);
    app.shutdown().await;
}

#[tokio::test]
async fn an_address_over_its_limit_gets_429_but_health_checks_pass() {
    let app = spawn_app_with(|s| s.rate_limit_per_ip = 5).await;
    let tokens: Vec<String> = (0..30).map(|i| app.token(&format!("nat{i}"))).collect();
    let answers = futures::future::join_all(tokens.iter().map(|t| {
        app.client
            .get(format!("{}/v1/matchmaking/active", app.address))
            .bearer_auth(t)
            .send()
    }))
    .await;
    let limited = answers
        .into_iter()
        .filter(|r| r.as_ref().unwrap().status() == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!((15..=20).contains(&limited), "{limited} of 30 refused");
    for _ in 0..20 {
        assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn two_hundred_players_behind_one_address_join_at_once_under_the_default_limits() {
    let app = spawn_app_with(|s| {
        let defaults = matchmaking_api::settings::Settings::from_env();
        s.rate_limit_per_ip = defaults.rate_limit_per_ip;
        s.rate_limit_per_user = defaults.rate_limit_per_user;
        assert_eq!((s.rate_limit_per_ip, s.rate_limit_per_user), (1000, 20));
    })
    .await;
    let joined = join_many(&app, 200, "nat", |_| join_body("5+0")).await;
    assert_eq!(joined.len(), 200);
    app.shutdown().await;
}

async fn summary(app: &TestApp, token: &str, query: &str) -> reqwest::Response {
    app.client
        .get(format!("{}/internal/queues/summary{query}", app.address))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

/// The summary line of `pool` (a pool key) for tenant `sum`.
async fn line(app: &TestApp, pool_prefix: &str) -> Option<serde_json::Value> {
    let r = summary(app, &app.admin_token(), "?tenant_id=sum").await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["timestamp"].is_string());
    v["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["pool_key"].as_str().unwrap().starts_with(pool_prefix))
        .cloned()
}

async fn queue_summary_follows_joins_matches_and_time_outs(backend: Backend) {
    let Some(app) = spawn_on(backend, |s| s.max_queue_time_seconds = 1.5).await else {
        return;
    };
    let player = |u: &str| app.token_for("sum", u, &[]);
    assert_eq!(
        summary(&app, &player("p"), "").await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get("/internal/queues/summary").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(line(&app, "standard_5+0").await.is_none());

    let a = app.join_ok(&player("a"), &join_body("5+0")).await;
    let _b = app.join_ok(&player("b"), &join_body("10+0")).await;
    let five = line(&app, "standard_5+0").await.expect("the 5+0 pool");
    assert_eq!(five["tenant_id"], "sum");
    assert_eq!(five["time_control"], "5+0");
    assert_eq!(five["waiting_count"], 1);
    assert!(five["oldest_wait_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(five["matches_last_5m"], 0);
    assert!(five["avg_wait_seconds"].is_null() && five["median_rating_gap"].is_null());
    assert_eq!(
        line(&app, "standard_10+0").await.unwrap()["waiting_count"],
        1
    );

    let c = app.join_ok(&player("c"), &join_body("5+0")).await;
    assert_eq!(
        app.wait_for_result(&player("a"), &a).await["status"],
        "MATCHED"
    );
    assert_eq!(
        app.wait_for_result(&player("c"), &c).await["status"],
        "MATCHED"
    );
    let five = line(&app, "standard_5+0").await.unwrap();
    assert_eq!(five["waiting_count"], 0);
    assert!(five["oldest_wait_seconds"].is_null());
    assert_eq!(five["matches_last_5m"], 1);
    assert!(five["matches_per_minute"].as_f64().unwrap() > 0.0);
    assert!(five["avg_wait_seconds"].as_f64().unwrap() >= 0.0);
    assert!(
        five["p95_wait_seconds"].as_f64().unwrap() >= five["avg_wait_seconds"].as_f64().unwrap()
    );
    assert_eq!(five["median_rating_gap"], 0);

    // b has nobody in its pool and times out.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let ten = loop {
        let ten = line(&app, "standard_10+0").await.unwrap();
        if ten["timeouts_last_5m"] == 1 || tokio::time::Instant::now() > deadline {
            break ten;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(ten["timeouts_last_5m"], 1, "{ten}");
    assert_eq!(ten["waiting_count"], 0);
    assert_eq!(ten["matches_last_5m"], 0);

    // Another tenant's admin view filters; a bad filter is a 400.
    let r = summary(&app, &app.admin_token(), "?tenant_id=nobody").await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["queues"], serde_json::json!([]));
    let r = summary(&app, &app.admin_token(), "?tenant_id=bad%20tenant").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "INVALID_REQUEST");
}

crate::on_every_backend!(queue_summary_follows_joins_matches_and_time_outs);
