use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    assert_all_matched_in_pairs, error_code, join_body, join_many, spawn_app, spawn_app_with,
};

#[tokio::test]
async fn two_compatible_players_get_the_same_game_and_see_each_other() {
    let app = spawn_app().await;
    let (a, b) = (app.token("alice"), app.token("bob"));
    let ia = app.join_ok(&a, &join_body("5+0")).await;
    let ib = app.join_ok(&b, &join_body("5+0")).await;
    let sa = app.wait_for_result(&a, &ia).await;
    let sb = app.wait_for_result(&b, &ib).await;
    assert_eq!(sa["status"], "MATCHED");
    assert_eq!(sb["status"], "MATCHED");
    assert!(sa["game_id"].as_str().unwrap().starts_with("g_"));
    assert_eq!(sa["game_id"], sb["game_id"]);
    assert_eq!(sa["opponent"]["user_id"], "bob");
    assert_eq!(sb["opponent"]["user_id"], "alice");
    assert_eq!(
        sa["opponent"]["rating_snapshot"],
        json!({ "time_control": "5+0", "mode": "rated", "rating": 1500 })
    );
}

#[tokio::test]
async fn players_of_different_pools_or_tenants_never_meet() {
    let app = spawn_app().await;
    let ia = app.join_ok(&app.token("alice"), &join_body("5+0")).await;
    let ib = app.join_ok(&app.token("bob"), &join_body("3+0")).await;
    let ic = app
        .join_ok(&app.token_for("t2", "carol", &[]), &join_body("5+0"))
        .await;
    let id = app
        .join_ok(
            &app.token("dave"),
            &json!({ "time_control": "5+0", "mode": "casual" }),
        )
        .await;
    let ie = app
        .join_ok(
            &app.token("erin"),
            &json!({ "time_control": "5+0", "mode": "rated", "region": "EU" }),
        )
        .await;
    // A compatible pair joining after them is matched: the worker has been
    // passing over the pools. Nobody of the five met anybody.
    let (x, y) = (app.token("xavier"), app.token("yves"));
    let ix = app.join_ok(&x, &join_body("10+0")).await;
    app.join_ok(&y, &join_body("10+0")).await;
    assert_eq!(app.wait_for_result(&x, &ix).await["status"], "MATCHED");
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (user, tenant, id) in [
        ("alice", "t1", &ia),
        ("bob", "t1", &ib),
        ("carol", "t2", &ic),
        ("dave", "t1", &id),
        ("erin", "t1", &ie),
    ] {
        let token = app.token_for(tenant, user, &[]);
        assert_eq!(
            app.status_json(&token, id).await["status"],
            "SEARCHING",
            "{user}"
        );
    }
}

#[tokio::test]
async fn the_rating_of_the_pools_speed_is_used() {
    let app = spawn_app().await;
    let admin = app.admin_token();
    let r = app
        .put_ratings(
            &admin,
            "t1",
            "alice",
            &json!({ "blitz": 1580, "bullet": 1900 }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (a, b) = (app.token("alice"), app.token("bob"));
    app.join_ok(&a, &join_body("5+0")).await;
    let ib = app.join_ok(&b, &join_body("5+0")).await;
    let sb = app.wait_for_result(&b, &ib).await;
    assert_eq!(sb["status"], "MATCHED");
    assert_eq!(sb["opponent"]["rating_snapshot"]["rating"], 1580);
}

#[tokio::test]
async fn a_200_point_gap_matches_only_after_both_windows_widen() {
    // Window 100, +25 every 0.2 s: a 200-point gap needs 4 steps (0.8 s),
    // on a clock the test moves (however slowly the machine runs).
    let (app, clock) =
        crate::helpers::spawn_app_with_clock(|s| s.rating_window_widening_interval = 0.2).await;
    app.put_ratings(&app.admin_token(), "t1", "bob", &json!({ "blitz": 1700 }))
        .await;
    let (a, b) = (app.token("alice"), app.token("bob"));
    let ia = app.join_ok(&a, &join_body("5+0")).await;
    app.join_ok(&b, &join_body("5+0")).await;
    // 0.7 s in: window 175, the worker passes and passes, nothing happens.
    clock.advance(700);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.status_json(&a, &ia).await["status"], "SEARCHING");
    clock.advance(100);
    let sa = app.wait_for_result(&a, &ia).await;
    assert_eq!(sa["status"], "MATCHED");
    assert_eq!(sa["opponent"]["rating_snapshot"]["rating"], 1700);
}

#[tokio::test]
async fn a_gap_beyond_the_max_never_matches() {
    let app = spawn_app_with(|s| {
        s.rating_window_widening_interval = 0.05;
        s.max_rating_gap = 150;
    })
    .await;
    app.put_ratings(&app.admin_token(), "t1", "bob", &json!({ "blitz": 1700 }))
        .await;
    let (a, b) = (app.token("alice"), app.token("bob"));
    let ia = app.join_ok(&a, &join_body("5+0")).await;
    app.join_ok(&b, &join_body("5+0")).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(app.status_json(&a, &ia).await["status"], "SEARCHING");
}

#[tokio::test]
async fn an_entry_waiting_past_the_max_queue_time_times_out() {
    let app = spawn_app_with(|s| s.max_queue_time_seconds = 0.3).await;
    let a = app.token("alice");
    let ia = app.join_ok(&a, &join_body("5+0")).await;
    let v = app.wait_for_result(&a, &ia).await;
    assert_eq!(v["status"], "TIMED_OUT");
    assert!(v.get("game_id").is_none());
    // A timed-out entry cannot be cancelled, and the player may join again.
    assert_eq!(app.cancel(&a, &ia).await.status(), StatusCode::NOT_FOUND);
    app.join_ok(&a, &join_body("5+0")).await;
}

#[tokio::test]
async fn an_entry_whose_client_is_never_heard_from_is_dropped() {
    let (app, clock) =
        crate::helpers::spawn_app_with_clock(|s| s.presence_timeout_seconds = 0.3).await;
    let (a, b) = (app.token("alice"), app.token("bob"));
    let ia = app.join_ok(&a, &join_body("5+0")).await;
    let ib = app.join_ok(&b, &join_body("30+0")).await;
    // bob polls every 0.2 s of the clock, alice never does.
    for _ in 0..4 {
        clock.advance(200);
        assert_eq!(app.status_json(&b, &ib).await["status"], "SEARCHING");
    }
    // The clock stands still now: bob was just heard from, alice 0.8 s ago.
    // `/active` reads without counting as a poll: alice's entry goes once
    // a pass sees her absent.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !app.active(&a).await["queue_entry"].is_null() {
        assert!(Instant::now() < deadline, "alice was never dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dropped = app.status_json(&a, &ia).await;
    assert_eq!(dropped["status"], "CANCELLED");
    assert_eq!(dropped["reason"], "ABSENT");
    assert_eq!(app.status_json(&b, &ib).await["status"], "SEARCHING");
}

#[tokio::test]
async fn a_matched_player_cannot_queue_until_the_game_is_reported_finished() {
    let app = spawn_app().await;
    let (a, b) = (app.token("alice"), app.token("bob"));
    let (_, game) = app.matched_pair(&a, &b, "5+0").await;
    for t in [&a, &b] {
        let r = app.join(t, &join_body("3+0")).await;
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(error_code(r).await, "ACTIVE_GAME_EXISTS");
    }
    let r = app.game_finished(&app.admin_token(), &game).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "FINISHED");
    app.join_ok(&a, &join_body("3+0")).await;
    app.join_ok(&b, &join_body("3+0")).await;
}

#[tokio::test]
async fn the_active_game_guard_lapses_after_its_time_without_a_report() {
    let (app, clock) =
        crate::helpers::spawn_app_with_clock(|s| s.active_game_guard_seconds = 0.4).await;
    let (a, b) = (app.token("alice"), app.token("bob"));
    let ia = app.join_ok(&a, &join_body("5+0")).await;
    app.join_ok(&b, &join_body("5+0")).await;
    app.wait_for_result(&a, &ia).await;
    assert_eq!(
        app.join(&a, &join_body("5+0")).await.status(),
        StatusCode::CONFLICT
    );
    clock.advance(500);
    app.join_ok(&a, &join_body("5+0")).await;
}

#[tokio::test]
async fn two_hundred_players_joining_at_once_are_each_matched_exactly_once() {
    let app = spawn_app().await;
    let joined = join_many(&app, 200, "p", |_| join_body("5+0")).await;
    assert_eq!(assert_all_matched_in_pairs(&app, &joined).await, 100);
}

#[tokio::test]
async fn colors_alternate_over_rematches() {
    let app = spawn_app().await;
    let (a, b) = (app.token("alice"), app.token("bob"));
    let mut alice_whites = 0;
    for _ in 0..6 {
        let ia = app.join_ok(&a, &join_body("5+0")).await;
        app.join_ok(&b, &join_body("5+0")).await;
        let game = app.wait_for_result(&a, &ia).await["game_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (ma, mb) = (
            app.active(&a).await["match"].clone(),
            app.active(&b).await["match"].clone(),
        );
        assert_ne!(ma["color"], mb["color"], "one white, one black");
        alice_whites += usize::from(ma["color"] == "white");
        app.game_finished(&app.admin_token(), &game).await;
    }
    assert_eq!(
        alice_whites, 3,
        "fair colors: each gets white every other game"
    );
}

#[tokio::test]
async fn a_restart_keeps_matched_results_and_active_game_guards() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let app = spawn_app_with(|s| s.data_dir = path.clone()).await;
    let (a, b) = (app.token("alice"), app.token("bob"));
    let ia = app.join_ok(&a, &join_body("5+0")).await;
    app.join_ok(&b, &join_body("5+0")).await;
    let before = app.wait_for_result(&a, &ia).await;
    assert_eq!(before["status"], "MATCHED");
    app.shutdown().await;

    // The in-memory hot state is gone; the durable records are not.
    let app = spawn_app_with(|s| s.data_dir = path.clone()).await;
    let after = app.status_json(&a, &ia).await;
    assert_eq!(after, before);
    assert_eq!(app.active(&a).await["match"]["game_id"], before["game_id"]);
    let r = app.join(&a, &join_body("5+0")).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(r).await, "ACTIVE_GAME_EXISTS");
    // Nobody else can read it.
    let r = app.status(&b, &ia).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        crate::helpers::error_of(r).await,
        ("NOT_FOUND".into(), "no such queue entry".into())
    );
    app.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_and_stops_the_worker() {
    let app = spawn_app().await;
    app.join_ok(&app.token("alice"), &join_body("5+0")).await;
    tokio::time::timeout(Duration::from_secs(5), app.shutdown())
        .await
        .expect("graceful shutdown finishes");
}
