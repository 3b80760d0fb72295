//! Time to match, measured as a client sees it: pairs of players join the
//! same pool; from the moment the second join is answered, both poll their
//! entry until it reads MATCHED. Prints p50/p95/p99/max in milliseconds.
//!
//! Usage: cargo run --release --example match_latency -- \
//!   http://127.0.0.1:8080 <JWT_SECRET> [pairs=2000] [concurrency=32]
//! Talks only to the address it is given.

use std::time::{Duration, Instant};

use futures::StreamExt;
use matchmaking_api::auth::JwtAuth;
use matchmaking_api::settings::{Settings, TokenArgs};
use serde_json::{Value, json};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let secret = args
        .get(2)
        .expect("JWT secret as the second argument")
        .clone();
    let pairs: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let concurrency: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(32);

    let mut settings = Settings::from_env();
    settings.jwt_secret = Some(secret);
    let auth = JwtAuth::from_settings(&settings).expect("keys");
    let run = ulid::Ulid::new().to_string();
    let token = |user: String| {
        auth.mint(&TokenArgs {
            user,
            tenant: Some("latency".into()),
            username: None,
            roles: vec![],
            ttl: 3600,
        })
        .expect("mint")
    };
    let client = reqwest::Client::new();
    let client = &client;
    let base = &base;

    let started = Instant::now();
    let mut players_per_game: std::collections::HashMap<String, usize> = Default::default();
    let mut samples: Vec<f64> = futures::stream::iter(0..pairs)
        .map(|i| {
            let a = token(format!("{run}-a{i}"));
            let b = token(format!("{run}-b{i}"));
            async move {
                let join = |t: String| async move {
                    let r = client
                        .post(format!("{base}/v1/matchmaking/queue"))
                        .bearer_auth(&t)
                        .json(&json!({ "time_control": "3+0", "mode": "casual" }))
                        .send()
                        .await
                        .expect("join");
                    assert_eq!(r.status(), 201, "join refused");
                    let v: Value = r.json().await.expect("json");
                    (t, v["queue_entry_id"].as_str().expect("id").to_owned())
                };
                let first = join(a).await;
                let second = join(b).await;
                let t0 = Instant::now();
                let mut games = Vec::new();
                for (t, id) in [first, second] {
                    loop {
                        let v: Value = client
                            .get(format!("{base}/v1/matchmaking/queue/{id}"))
                            .bearer_auth(&t)
                            .send()
                            .await
                            .expect("status")
                            .json()
                            .await
                            .expect("json");
                        if v["status"] == "MATCHED" {
                            games.push(v["game_id"].as_str().expect("game id").to_owned());
                            break;
                        }
                        assert_eq!(v["status"], "SEARCHING", "unexpected {v}");
                        tokio::time::sleep(Duration::from_micros(500)).await;
                    }
                }
                (t0.elapsed().as_secs_f64() * 1000.0, games)
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(|(ms, games)| {
            for g in games {
                *players_per_game.entry(g).or_insert(0usize) += 1;
            }
            ms
        })
        .collect();
    let elapsed = started.elapsed();
    let two_each = players_per_game.values().all(|&n| n == 2);
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "time to match over {} pairs ({} at a time, {:.1} s): p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        concurrency,
        elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.95),
        pct(0.99),
        samples[samples.len() - 1]
    );
    println!(
        "{} players matched into {} games; every game has exactly two players: {}",
        samples.len() * 2,
        players_per_game.len(),
        if two_each { "yes" } else { "NO" }
    );
    if !two_each {
        std::process::exit(1);
    }
}
