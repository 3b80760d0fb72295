//! A tenant's configuration and feature flags changed at run time through
//! the admin API: read, set, refused with the field named, dropped,
//! audited, in force at once for that tenant only — on one embedded node,
//! and across two nodes on Redis/PostgreSQL.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use matchmaking_api::domain::{Arm, Experiment, Strategy, TenantId, UserId};

use crate::helpers::{TestApp, error_of, join_body, spawn_app};
use crate::production::Backends;

async fn admin(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let r = app
        .admin_send(method, &format!("/internal/tenants/{path}"), body.as_ref())
        .await;
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Creates a challenge from `from` to `to` (tenant t1); answers the response.
async fn challenge(app: &TestApp, from: &str, to: &str, time_control: &str) -> reqwest::Response {
    app.challenge_as(&app.token(from), to, time_control).await
}

/// Refusals name their field; nothing is stored.
async fn assert_refused(app: &TestApp, path: &str, cases: &[(Value, &str)]) {
    for (body, field) in cases {
        let (status, v) = admin(app, Method::PUT, path, Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(v["error"]["code"], "INVALID_REQUEST");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
    }
}

#[tokio::test]
async fn a_tenants_configuration_is_set_refused_dropped_and_audited_live() {
    let app = spawn_app().await;
    let (status, read) = admin(&app, Method::GET, "t1/config", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["config"], Value::Null);
    assert_eq!(read["effective"]["default_region"], "GLOBAL");
    assert!(
        read["effective"]["time_controls"]
            .as_array()
            .unwrap()
            .contains(&json!("3+0"))
    );
    assert_refused(
        &app,
        "t1/config",
        &[
            (json!({ "time_controls": [] }), "time_controls"),
            (json!({ "time_controls": ["0+0"] }), "time_controls"),
            (json!({ "time_controls": "5+0" }), "time_controls"),
            (json!({ "time_controls": null }), "time_controls"),
            (json!({ "variants": ["chess"] }), "variants"),
            (json!({ "regions": ["EU"] }), "default_region"),
            (
                json!({ "regions": ["NA"], "default_region": "EU" }),
                "default_region",
            ),
            (json!({ "colour": "white" }), "colour"),
            (json!({}), "time_controls"),
        ],
    )
    .await;
    assert_eq!(
        admin(&app, Method::GET, "t1/config", None).await.1["config"],
        Value::Null
    );

    // Set: a new time control, two regions, EU by default.
    let set =
        json!({ "time_controls": ["5+0", "7+2"], "regions": ["EU", "NA"], "default_region": "EU" });
    let (status, answer) = admin(&app, Method::PUT, "t1/config", Some(set.clone())).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["config"], set);
    assert_eq!(answer["before"], Value::Null);
    assert_eq!(answer["effective"]["variants"].as_array().unwrap().len(), 9);
    // In force at once: 7+2 joins, to EU; 3+0 is refused naming what is allowed.
    let alice = app.token("alice");
    app.join_ok(&alice, &join_body("7+2")).await;
    let active = app.active(&alice).await;
    assert_eq!(active["queue_entry"]["region"], "EU", "{active}");
    let (code, message) = error_of(app.join(&app.token("bob"), &join_body("3+0")).await).await;
    assert_eq!(code, "INVALID_REQUEST");
    assert!(
        message.contains("time_control") && message.contains("7+2"),
        "{message}"
    );
    let (code, _) = error_of(challenge(&app, "bob", "carol", "3+0").await).await;
    assert_eq!(code, "INVALID_REQUEST");
    // Another tenant keeps the settings' configuration.
    let other = app.token_for("t2", "dave", &[]);
    app.join_ok(&other, &join_body("3+0")).await;

    // Dropped: 3+0 joins again; nothing left to drop.
    let (status, dropped) = admin(&app, Method::DELETE, "t1/config", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(dropped["before"], set);
    assert_eq!(dropped["effective"]["default_region"], "GLOBAL");
    app.join_ok(&app.token("bob"), &join_body("3+0")).await;
    assert_eq!(
        admin(&app, Method::DELETE, "t1/config", None).await.0,
        StatusCode::NOT_FOUND
    );

    // Players may not; each change is audited with who, before and after.
    let r = app
        .get_as(&app.token("alice"), "/internal/tenants/t1/config")
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let log: Value = app
        .get_as(
            &app.admin_token(),
            "/internal/audit?kind=tenant_config_changed",
        )
        .await
        .json()
        .await
        .unwrap();
    let events = log["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{log}");
    assert_eq!(events[0]["detail"]["before"], set);
    assert_eq!(events[0]["detail"]["after"], Value::Null);
    assert_eq!(events[1]["detail"]["after"], set);
    assert_eq!(events[1]["detail"]["actor"], "t1/ops");
}

#[tokio::test]
async fn challenges_are_switched_off_and_on_live_per_tenant() {
    let app = spawn_app().await;
    assert_eq!(
        challenge(&app, "alice", "bob", "5+0").await.status(),
        StatusCode::CREATED
    );
    assert_refused(
        &app,
        "t1/flags",
        &[
            (json!({ "challenges": "no" }), "challenges"),
            (
                json!({ "matcher_experiment": { "name": "a b", "control": "volume", "treatment": "window", "treatment_percent": 10 } }),
                "matcher_experiment.name",
            ),
            (
                json!({ "matcher_experiment": { "name": "ab", "control": "volume", "treatment": "greedy", "treatment_percent": 10 } }),
                "matcher_experiment",
            ),
            (
                json!({ "matcher_experiment": { "name": "ab", "control": "volume", "treatment": "window", "treatment_percent": 101 } }),
                "matcher_experiment",
            ),
            (json!({ "dark_mode": true }), "dark_mode"),
            (json!({}), "challenges"),
        ],
    )
    .await;

    let (status, answer) = admin(
        &app,
        Method::PUT,
        "t1/flags",
        Some(json!({ "challenges": false })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["effective"]["challenges"], false);
    let (code, _) = error_of(challenge(&app, "alice", "carol", "5+0").await).await;
    assert_eq!(code, "CHALLENGES_DISABLED");
    let r = app
        .get_as(&app.token("bob"), "/v1/matchmaking/challenges/incoming")
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Another tenant's challenges go on.
    let r = app
        .challenge_as(&app.token_for("t2", "erin", &[]), "frank", "5+0")
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    let (status, _) = admin(
        &app,
        Method::PUT,
        "t1/flags",
        Some(json!({ "challenges": true })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        challenge(&app, "alice", "carol", "5+0").await.status(),
        StatusCode::CREATED
    );
    let (status, dropped) = admin(&app, Method::DELETE, "t1/flags", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        dropped["before"],
        json!({ "challenges": true, "matcher_experiment": null })
    );
    let log: Value = app
        .get_as(&app.admin_token(), "/internal/audit?kind=flags_changed")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(log["events"].as_array().unwrap().len(), 3, "{log}");
}

#[tokio::test]
async fn configuration_and_flags_set_through_one_node_are_in_force_on_another_within_2_s() {
    let Some(backends) = Backends::create().await else {
        return;
    };
    let (node_a, node_b) = backends.spawn_config_pair().await;
    let (status, _) = admin(
        &node_a,
        Method::PUT,
        "t1/config",
        Some(json!({ "time_controls": ["7+2"] })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = admin(
        &node_a,
        Method::PUT,
        "t1/flags",
        Some(json!({ "challenges": false })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let started = Instant::now();
    let (mut joined, mut refused) = (false, false);
    while !(joined && refused) {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "node B: 7+2 join accepted {joined}, challenge refused {refused}"
        );
        if !joined {
            joined = node_b
                .join(&node_b.token("alice"), &join_body("7+2"))
                .await
                .status()
                .is_success();
        }
        if !refused {
            refused =
                challenge(&node_b, "bob", "carol", "7+2").await.status() == StatusCode::NOT_FOUND;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Users of tenant t1 on `arm` of `experiment`, by the service's own hash.
fn users_on(experiment: &Experiment, arm: Arm, n: usize) -> Vec<String> {
    let tenant = TenantId::parse("t1").unwrap();
    (0..)
        .map(|i| format!("ab_{i}"))
        .filter(|u| experiment.arm(&tenant, &UserId::parse(u).unwrap()) == arm)
        .take(n)
        .collect()
}

#[tokio::test]
async fn a_matcher_experiment_pairs_each_arm_among_itself_and_reports_figures_per_arm() {
    let app = spawn_app().await;
    let experiment = Experiment {
        name: "ab-split-1".into(),
        control: Strategy::Volume,
        treatment: Strategy::Window,
        treatment_percent: 50,
    };
    let body = json!({ "matcher_experiment": {
        "name": experiment.name, "control": "volume", "treatment": "window", "treatment_percent": 50
    } });
    let (status, answer) = admin(&app, Method::PUT, "t1/flags", Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["effective"]["matcher_experiment"]["treatment"],
        "window"
    );
    let treated = users_on(&experiment, Arm::Treatment, 2);
    let control = users_on(&experiment, Arm::Control, 2);
    // One of each side, same rating: they never meet.
    let first_t = app
        .join_ok(&app.token(&treated[0]), &join_body("5+0"))
        .await;
    let first_c = app
        .join_ok(&app.token(&control[0]), &join_body("5+0"))
        .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        app.status_json(&app.token(&treated[0]), &first_t).await["status"],
        "SEARCHING"
    );
    assert_eq!(
        app.status_json(&app.token(&control[0]), &first_c).await["status"],
        "SEARCHING"
    );
    // A partner on each side: each pair is of one side.
    app.join_ok(&app.token(&treated[1]), &join_body("5+0"))
        .await;
    app.join_ok(&app.token(&control[1]), &join_body("5+0"))
        .await;
    let t = app.wait_for_result(&app.token(&treated[0]), &first_t).await;
    let c = app.wait_for_result(&app.token(&control[0]), &first_c).await;
    assert_eq!(t["opponent"]["user_id"], treated[1].as_str(), "{t}");
    assert_eq!(c["opponent"]["user_id"], control[1].as_str(), "{c}");
    // The metrics split the figures by arm.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for arm in ["control", "treatment"] {
        let line = format!(
            "matchmaking_experiment_matches_total{{tenant=\"t1\",experiment=\"ab-split-1\",arm=\"{arm}\"}} 1"
        );
        assert!(metrics.contains(&line), "no {line} in the metrics");
        let waits = format!(
            "matchmaking_experiment_wait_seconds_count{{tenant=\"t1\",experiment=\"ab-split-1\",arm=\"{arm}\"}} 2"
        );
        assert!(metrics.contains(&waits), "no {waits} in the metrics");
    }
    // A treated player times out of a pool that keeps nobody past 1 s.
    let pool = "standard_10+0_rated_GLOBAL";
    let r = app
        .admin_send(
            Method::PUT,
            &format!("/internal/policies/t1/{pool}"),
            Some(&json!({ "max_queue_time_seconds": 1 })),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let late = users_on(&experiment, Arm::Treatment, 3).pop().unwrap();
    let gone = app.join_ok(&app.token(&late), &join_body("10+0")).await;
    let ended = app.wait_for_result(&app.token(&late), &gone).await;
    assert_eq!(ended["status"], "TIMED_OUT", "{ended}");
    // The summary splits them by arm too (from the audit log, which the
    // time-out reaches just after the entry's status).
    let started = std::time::Instant::now();
    let arms = loop {
        let summary: Value = app
            .get_as(&app.admin_token(), "/internal/queues/summary?tenant_id=t1")
            .await
            .json()
            .await
            .unwrap();
        let arms = summary["experiments"].as_array().unwrap().clone();
        let treated_timeouts = arms
            .iter()
            .find(|a| a["arm"] == "treatment")
            .map(|a| a["timeouts_last_5m"].clone());
        if treated_timeouts == Some(json!(1)) {
            break arms;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{summary}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(arms.len(), 2, "{arms:?}");
    for (arm, strategy, timeouts) in [("control", "volume", 0), ("treatment", "window", 1)] {
        let a = arms.iter().find(|a| a["arm"] == arm).unwrap();
        assert_eq!(a["experiment"], "ab-split-1");
        assert_eq!(a["strategy"], strategy);
        assert_eq!(a["matches_last_5m"], 1, "{a}");
        assert_eq!(a["timeouts_last_5m"], timeouts, "{a}");
        assert_eq!(a["median_rating_gap"], 0, "{a}");
        assert!(a["p50_wait_seconds"].as_f64().is_some(), "{a}");
    }
}
