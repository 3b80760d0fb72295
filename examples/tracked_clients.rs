//! Tracked clients beside a flood: a few clients that join in a loop (a
//! new user each time) and time every answer themselves, so the latency of
//! the requests a node *admitted* can be told from the fast 503s it shed —
//! which a flood tool like wrk lumps together. Prints, for 201 and for 503,
//! the count and p50/p99/max in milliseconds, and any other status.
//!
//! Usage: cargo run --release --example tracked_clients -- \
//!   http://127.0.0.1:8080 <JWT_SECRET> [clients=16] [seconds=30]
//! Talks only to the address it is given.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use matchmaking_api::auth::JwtAuth;
use matchmaking_api::settings::{Settings, TokenArgs};
use serde_json::json;

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
    let clients: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(16);
    let seconds: f64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(30.0);

    let mut settings = Settings::from_env();
    settings.jwt_secret = Some(secret);
    let auth = std::sync::Arc::new(JwtAuth::from_settings(&settings).expect("keys"));
    let run = ulid::Ulid::new().to_string();
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (auth, base, run) = (auth.clone(), base.clone(), run.clone());
            tokio::spawn(async move {
                // One connection per client, as a real client keeps.
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()
                    .expect("client");
                let mut seen: BTreeMap<u16, Vec<f64>> = BTreeMap::new();
                let mut i = 0;
                while Instant::now() < until {
                    i += 1;
                    let token = auth
                        .mint(&TokenArgs {
                            user: format!("{run}-{c}-{i}"),
                            tenant: Some("tracked".into()),
                            username: None,
                            roles: vec![],
                            ttl: 3600,
                        })
                        .expect("mint");
                    let started = Instant::now();
                    let status = match client
                        .post(format!("{base}/v1/matchmaking/queue"))
                        .bearer_auth(&token)
                        .json(&json!({ "time_control": "5+0", "mode": "rated" }))
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await
                    {
                        Ok(r) => r.status().as_u16(),
                        Err(_) => 0,
                    };
                    seen.entry(status)
                        .or_default()
                        .push(started.elapsed().as_secs_f64() * 1000.0);
                    if status == 503 {
                        // As a client honouring Retry-After would, briefly.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                seen
            })
        })
        .collect();
    let mut all: BTreeMap<u16, Vec<f64>> = BTreeMap::new();
    for t in tasks {
        for (status, mut ms) in t.await.expect("client") {
            all.entry(status).or_default().append(&mut ms);
        }
    }
    for (status, ms) in &mut all {
        ms.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| ms[((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len()) - 1];
        let name = match status {
            0 => "no answer".to_owned(),
            s => s.to_string(),
        };
        println!(
            "tracked {name}: {} answers, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms.len(),
            q(0.5),
            q(0.99),
            ms.last().copied().unwrap_or_default()
        );
    }
}
