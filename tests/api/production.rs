//! The API on the production backends, Redis (hot state) and PostgreSQL
//! (durable records), each test in a key prefix and schema of its own.
//! Skipped without the servers, failing in CI.

use std::collections::{HashMap, HashSet};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, assert_all_matched_in_pairs, error_code, join_body, join_many, spawn_app_with,
};
use crate::support::{PgSchema, RedisPrefix, redis_url};

/// The servers' spaces of one test; dropped (and cleaned) with it.
pub struct Backends {
    pub schema: PgSchema,
    pub redis: RedisPrefix,
}

impl Backends {
    pub async fn create() -> Option<Self> {
        Some(Self {
            schema: PgSchema::create().await?,
            redis: RedisPrefix::create().await?,
        })
    }

    pub fn apply(&self, s: &mut matchmaking_api::settings::Settings) {
        s.database_url = Some(self.schema.url());
        s.redis_url = Some(redis_url());
        s.redis_key_prefix = self.redis.prefix.clone();
    }

    pub async fn spawn(&self) -> TestApp {
        spawn_app_with(|s| self.apply(s)).await
    }

    /// An API node without a worker (another node's worker matches).
    pub async fn spawn_without_worker(&self) -> TestApp {
        spawn_app_with(|s| {
            self.apply(s);
            s.worker_enabled = false;
        })
        .await
    }

    /// Two nodes for a run-time change: A takes it (and joins) without a
    /// worker, B matches; answered once both hear configuration
    /// announcements.
    pub async fn spawn_config_pair(&self) -> (TestApp, TestApp) {
        let node_a = self.spawn_without_worker().await;
        let node_b = self.spawn().await;
        crate::support::subscribers(
            &crate::support::redis_url(),
            &format!("{}:config", self.redis.prefix),
            2,
        )
        .await;
        (node_a, node_b)
    }
}

#[tokio::test]
async fn two_hundred_players_on_redis_and_postgres_are_matched_exactly_once() {
    let Some(backends) = Backends::create().await else {
        return;
    };
    let app = backends.spawn().await;
    let joined = join_many(&app, 200, "p", |_| join_body("5+0")).await;
    assert_eq!(assert_all_matched_in_pairs(&app, &joined).await, 100);
}

#[tokio::test]
async fn the_queue_api_behaves_the_same_on_redis() {
    let Some(backends) = Backends::create().await else {
        return;
    };
    let app = backends.spawn().await;
    let (a, b) = (app.token("alice"), app.token("bob"));
    // Idempotent join, other parameters refused, isolation, cancel.
    let ia = app.join_ok(&a, &join_body("10+0")).await;
    assert_eq!(app.join_ok(&a, &join_body("10+0")).await, ia);
    assert_eq!(
        error_code(app.join(&a, &join_body("3+0")).await).await,
        "ALREADY_IN_QUEUE"
    );
    assert_eq!(app.status(&b, &ia).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        app.active(&a).await["queue_entry"]["queue_entry_id"],
        ia.as_str()
    );
    assert_eq!(app.cancel(&a, &ia).await.status(), StatusCode::OK);
    assert_eq!(app.status_json(&a, &ia).await["status"], "CANCELLED");
    // A match, its guard, and the release.
    let ia = app.join_ok(&a, &join_body("5+0")).await;
    app.join_ok(&b, &join_body("5+0")).await;
    let status = app.wait_for_result(&a, &ia).await;
    assert_eq!(status["status"], "MATCHED");
    assert_eq!(status["opponent"]["user_id"], "bob");
    assert_eq!(error_code(app.cancel(&a, &ia).await).await, "CANNOT_CANCEL");
    assert_eq!(
        error_code(app.join(&b, &join_body("5+0")).await).await,
        "ACTIVE_GAME_EXISTS"
    );
    let game = status["game_id"].as_str().unwrap();
    assert_eq!(
        app.game_finished(&app.admin_token(), game).await.status(),
        StatusCode::OK
    );
    app.join_ok(&b, &join_body("5+0")).await;
}

#[tokio::test]
async fn a_matched_entry_survives_the_loss_of_the_hot_state() {
    let Some(backends) = Backends::create().await else {
        return;
    };
    let app = backends.spawn().await;
    let (a, b) = (app.token("alice"), app.token("bob"));
    let ia = app.join_ok(&a, &join_body("5+0")).await;
    app.join_ok(&b, &join_body("5+0")).await;
    let before = app.wait_for_result(&a, &ia).await;
    assert_eq!(before["status"], "MATCHED");
    // Wipe every Redis key of this test.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", backends.redis.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    // The durable match record answers.
    assert_eq!(app.status_json(&a, &ia).await, before);
    assert_eq!(app.active(&a).await["match"]["game_id"], before["game_id"]);
}

#[tokio::test]
async fn two_nodes_on_the_same_stores_never_put_a_player_in_two_games() {
    let Some(backends) = Backends::create().await else {
        return;
    };
    let node_a = backends.spawn().await;
    let node_b = backends.spawn().await;
    let nodes = [&node_a, &node_b];
    // 100 players join through alternating nodes at once; each node's
    // worker races the other's over the same pool.
    let joins = (0..100).map(|i| {
        let node = nodes[i % 2];
        let token = node.token(&format!("p{i}"));
        async move { (token.clone(), node.join_ok(&token, &join_body("5+0")).await) }
    });
    let joined = futures::future::join_all(joins).await;
    let mut games: HashMap<String, HashSet<String>> = HashMap::new();
    for (i, (token, id)) in joined.iter().enumerate() {
        // Read through the other node: the state is shared.
        let v = nodes[(i + 1) % 2].wait_for_result(token, id).await;
        assert_eq!(v["status"], "MATCHED", "{v}");
        games
            .entry(v["game_id"].as_str().unwrap().to_owned())
            .or_default()
            .insert(format!("p{i}"));
    }
    assert_eq!(games.len(), 50);
    assert!(games.values().all(|players| players.len() == 2));
}

#[tokio::test]
async fn challenges_on_redis_and_postgres_create_one_game() {
    let Some(backends) = Backends::create().await else {
        return;
    };
    let app = backends.spawn().await;
    let (a, c) = (app.token("alice"), app.token("carol"));
    let created: Value = app
        .client
        .post(format!("{}/v1/matchmaking/challenges", app.address))
        .bearer_auth(&c)
        .json(&json!({ "opponent_user_id": "alice", "time_control": "3+0", "mode": "casual" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["challenge_id"].as_str().unwrap().to_owned();
    let accepts = (0..10).map(|_| {
        app.client
            .post(format!(
                "{}/v1/matchmaking/challenges/{id}/accept",
                app.address
            ))
            .bearer_auth(&a)
            .send()
    });
    let answers = futures::future::join_all(accepts).await;
    let ok = answers
        .iter()
        .filter(|r| r.as_ref().unwrap().status() == StatusCode::OK)
        .count();
    assert_eq!(ok, 1);
    assert_eq!(
        app.active(&c).await["match"]["opponent"]["user_id"],
        "alice"
    );
    assert_eq!(
        error_code(app.join(&a, &join_body("5+0")).await).await,
        "ACTIVE_GAME_EXISTS"
    );
}

#[tokio::test]
async fn a_service_on_redis_cluster_matches_everyone_exactly_once() {
    let Some(cluster) = tokio::task::spawn_blocking(crate::support::OwnRedisCluster::start)
        .await
        .unwrap()
    else {
        return;
    };
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let (redis, db) = (cluster.url(), schema.url());
    let app = spawn_app_with(|s| {
        s.redis_url = Some(redis);
        s.redis_cluster = true;
        s.database_url = Some(db);
    })
    .await;
    // Three pools, so keys spread over the cluster's slots.
    let joined = join_many(&app, 60, "p", |i| join_body(["5+0", "3+0", "10+0"][i % 3])).await;
    assert_eq!(assert_all_matched_in_pairs(&app, &joined).await, 30);
}

#[tokio::test]
async fn a_join_on_one_node_wakes_the_worker_of_another_at_once() {
    let Some(backends) = Backends::create().await else {
        return;
    };
    // Node A serves without a worker; node B's worker ticks only every 30 s.
    let node_a = backends.spawn_without_worker().await;
    let _node_b = spawn_app_with(|s| {
        backends.apply(s);
        s.worker_interval_seconds = 30.0;
    })
    .await;
    // Wait until both nodes listen on the channel (each node has one
    // subscription: B's marks pools due for its worker).
    crate::support::subscribers(&redis_url(), &format!("{}:due", backends.redis.prefix), 2).await;
    let (a, b) = (node_a.token("alice"), node_a.token("bob"));
    let started = std::time::Instant::now();
    let ia = node_a.join_ok(&a, &join_body("5+0")).await;
    node_a.join_ok(&b, &join_body("5+0")).await;
    let v = node_a.wait_for_result(&a, &ia).await;
    assert_eq!(v["status"], "MATCHED");
    // Node B's tick is 30 s away: a match within 10 s came from the wake
    // (milliseconds when the machine is idle; the margin is for a loaded one).
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "matched only after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_worker_that_stops_hands_its_pools_to_another_at_once() {
    let Some(backends) = Backends::create().await else {
        return;
    };
    // Leases of 30 s: a takeover in less proves the lease was released.
    let first = spawn_app_with(|s| {
        backends.apply(s);
        s.pool_lease_seconds = 30.0;
    })
    .await;
    let (a, b) = (first.token("alice"), first.token("bob"));
    let ia = first.join_ok(&a, &join_body("5+0")).await;
    first.join_ok(&b, &join_body("5+0")).await;
    assert_eq!(
        first.wait_for_result(&a, &ia).await["status"],
        "MATCHED",
        "the first worker holds the pool"
    );
    first.shutdown().await;

    let second = spawn_app_with(|s| {
        backends.apply(s);
        s.pool_lease_seconds = 30.0;
    })
    .await;
    let (c, d) = (second.token("carol"), second.token("dave"));
    let started = std::time::Instant::now();
    let ic = second.join_ok(&c, &join_body("5+0")).await;
    second.join_ok(&d, &join_body("5+0")).await;
    assert_eq!(second.wait_for_result(&c, &ic).await["status"], "MATCHED");
    // The lease had 30 s left: a takeover within 10 s means it was released.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took over after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_rating_set_through_one_node_is_used_by_the_joins_of_another() {
    let Some(backends) = Backends::create().await else {
        return;
    };
    let node_a = backends.spawn().await;
    let node_b = backends.spawn().await;
    // Let node B load its copy of the ratings first: the change below must
    // reach it through a refresh.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let admin = node_a.admin_token();
    for (user, blitz) in [("r1", 1900), ("r2", 1910)] {
        let r = node_a
            .put_ratings(&admin, "t1", user, &json!({ "blitz": blitz }))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    // Node B refreshes every second.
    tokio::time::sleep(std::time::Duration::from_millis(3_000)).await;
    let (t1, t2) = (node_b.token("r1"), node_b.token("r2"));
    let e1 = node_b.join_ok(&t1, &join_body("5+0")).await;
    let e2 = node_b.join_ok(&t2, &join_body("5+0")).await;
    let v1 = node_b.wait_for_result(&t1, &e1).await;
    let v2 = node_b.wait_for_result(&t2, &e2).await;
    assert_eq!(v1["opponent"]["rating_snapshot"]["rating"], 1910, "{v1}");
    assert_eq!(v2["opponent"]["rating_snapshot"]["rating"], 1900, "{v2}");
}
