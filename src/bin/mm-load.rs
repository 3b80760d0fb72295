//! `mm-load`: a load generator that behaves like players (issue 6). Mints
//! its own tokens with the server's secret; each virtual player joins,
//! waits for its result by polling, reports the game finished (as an
//! admin), and joins again; a share of players cancel instead. It sends
//! traffic only to the `--url` it is given, shows progress while it runs,
//! and ends with a table: requests/s and latency per endpoint,
//! time to match, errors by code.
//!
//! Usage: `mm-load --secret S [--url http://127.0.0.1:8080] [--players 200]
//! [--duration 20] [--cancel-share 0.1] [--poll-ms 100]`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use matchmaking_api::auth::JwtAuth;
use matchmaking_api::services::summary::quantile;
use matchmaking_api::settings::{Settings, TokenArgs};
use rand::Rng;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(name = "mm-load", about = "Players against a running matchmaking-api")]
struct Args {
    /// Base URL of the server (and the only address this sends to).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The server's JWT_SECRET (tokens are minted with it).
    #[arg(long, env = "JWT_SECRET")]
    secret: String,
    /// Tenant of the virtual players.
    #[arg(long, default_value = "load")]
    tenant: String,
    /// Virtual players playing at once.
    #[arg(long, default_value_t = 200)]
    players: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Share of joins cancelled (after up to a second) instead of played.
    #[arg(long, default_value_t = 0.1)]
    cancel_share: f64,
    /// Time between two status polls of a player.
    #[arg(long, default_value_t = 100)]
    poll_ms: u64,
    #[arg(long, default_value = "5+0")]
    time_control: String,
    #[arg(long, default_value = "rated")]
    mode: String,
}

/// What the run measured.
#[derive(Default)]
struct Stats {
    /// Latencies (µs) per endpoint.
    latency: BTreeMap<&'static str, Vec<u64>>,
    /// Join answer to MATCHED seen (µs).
    time_to_match: Vec<u64>,
    /// Error responses by endpoint and code.
    errors: BTreeMap<(&'static str, String), u64>,
    matched: u64,
    cancelled: u64,
    timed_out: u64,
}

struct Client {
    http: reqwest::Client,
    url: String,
    stats: Mutex<Stats>,
    admin: String,
}

impl Client {
    /// Sends a request, records its latency (and its error code if any),
    /// answers the status and body.
    async fn call(
        &self,
        endpoint: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Option<(u16, Value)> {
        let started = Instant::now();
        let result = request.send().await;
        let (status, body) = match result {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap_or(Value::Null))
            }
            Err(e) => {
                let mut stats = self.stats.lock().unwrap();
                let kind = if e.is_timeout() {
                    "timeout"
                } else {
                    "connection"
                };
                *stats.errors.entry((endpoint, kind.into())).or_default() += 1;
                return None;
            }
        };
        let micros = started.elapsed().as_micros() as u64;
        let mut stats = self.stats.lock().unwrap();
        stats.latency.entry(endpoint).or_default().push(micros);
        if status >= 400 {
            let code = body["error"]["code"].as_str().unwrap_or("?").to_owned();
            *stats
                .errors
                .entry((endpoint, format!("{status} {code}")))
                .or_default() += 1;
        }
        Some((status, body))
    }
}

/// One virtual player, until `deadline`.
async fn player(client: Arc<Client>, token: String, args: Arc<Args>, deadline: Instant) {
    let body = json!({ "time_control": args.time_control, "mode": args.mode });
    while Instant::now() < deadline {
        let join = client
            .http
            .post(format!("{}/v1/matchmaking/queue", client.url));
        let Some((201, answer)) = client
            .call(
                "POST /v1/matchmaking/queue",
                join.bearer_auth(&token).json(&body),
            )
            .await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let joined_at = Instant::now();
        let Some(id) = answer["queue_entry_id"].as_str().map(str::to_owned) else {
            continue;
        };
        if rand::rng().random_bool(args.cancel_share) {
            let wait = rand::rng().random_range(0..1000);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let cancel = client
                .http
                .delete(format!("{}/v1/matchmaking/queue/{id}", client.url));
            if let Some((200, _)) = client
                .call(
                    "DELETE /v1/matchmaking/queue/{id}",
                    cancel.bearer_auth(&token),
                )
                .await
            {
                client.stats.lock().unwrap().cancelled += 1;
                continue;
            }
        }
        // Poll until the entry leaves SEARCHING (or the run ends).
        let game = loop {
            if Instant::now() > deadline + Duration::from_secs(5) {
                return;
            }
            let status = client
                .http
                .get(format!("{}/v1/matchmaking/queue/{id}", client.url));
            match client
                .call("GET /v1/matchmaking/queue/{id}", status.bearer_auth(&token))
                .await
            {
                Some((200, v)) if v["status"] == "MATCHED" => {
                    let mut stats = client.stats.lock().unwrap();
                    stats
                        .time_to_match
                        .push(joined_at.elapsed().as_micros() as u64);
                    stats.matched += 1;
                    break v["game_id"].as_str().map(str::to_owned);
                }
                Some((200, v)) if v["status"] == "SEARCHING" => {}
                Some((200, v)) if v["status"] == "TIMED_OUT" => {
                    client.stats.lock().unwrap().timed_out += 1;
                    break None;
                }
                Some((200, _)) | Some((404, _)) => break None,
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
        };
        // The game "is played" at once; the platform reports it finished.
        if let Some(game) = game {
            let finished = client
                .http
                .post(format!("{}/internal/games/{game}/finished", client.url))
                .bearer_auth(&client.admin)
                .json(&json!({ "tenant_id": args.tenant }));
            client
                .call("POST /internal/games/{game_id}/finished", finished)
                .await;
        }
    }
}

/// The `q` quantile of microsecond samples, in milliseconds (0 when none).
fn percentile(samples: &mut [u64], q: f64) -> f64 {
    quantile(samples, q).map_or(0.0, |us| us as f64 / 1000.0)
}

fn mint(auth: &JwtAuth, tenant: &str, user: &str, roles: Vec<String>) -> String {
    auth.mint(&TokenArgs {
        user: user.into(),
        tenant: Some(tenant.into()),
        username: Some(user.into()),
        roles,
        ttl: 24 * 3600,
    })
    .expect("an HS256 secret mints tokens")
}

#[tokio::main]
async fn main() {
    let args = Arc::new(Args::parse());
    let mut settings = Settings::from_env();
    settings.jwt_secret = Some(args.secret.clone());
    settings.jwt_public_key_pem = None;
    let auth = match JwtAuth::from_settings(&settings) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mm-load: {e}");
            std::process::exit(2);
        }
    };
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let tokens: Vec<String> = (0..args.players)
        .map(|i| {
            mint(
                &auth,
                &args.tenant,
                &format!("load-{}-{i}", &run[20..]),
                vec![],
            )
        })
        .collect();
    let client = Arc::new(Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(args.players)
            .build()
            .expect("an HTTP client"),
        url: args.url.trim_end_matches('/').to_owned(),
        stats: Mutex::new(Stats::default()),
        admin: mint(&auth, &args.tenant, "load-admin", vec!["admin".into()]),
    });
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let progress = ProgressBar::new_spinner();
    progress.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("a valid template"),
    );
    let tasks: Vec<_> = tokens
        .into_iter()
        .map(|t| tokio::spawn(player(client.clone(), t, args.clone(), deadline)))
        .collect();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let stats = client.stats.lock().unwrap();
        let requests: usize = stats.latency.values().map(Vec::len).sum();
        let errors: u64 = stats.errors.values().sum();
        progress.set_message(format!(
            "{requests} requests ({:.0}/s), {} matched, {} cancelled, {errors} errors",
            requests as f64 / started.elapsed().as_secs_f64(),
            stats.matched,
            stats.cancelled,
        ));
        progress.tick();
    }
    for t in tasks {
        let _ = t.await;
    }
    progress.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let mut stats = client.stats.lock().unwrap();
    println!(
        "mm-load: {} players for {:.0} s against {} ({} matched, {} cancelled, {} timed out)",
        args.players, elapsed, client.url, stats.matched, stats.cancelled, stats.timed_out
    );
    println!();
    println!("| endpoint | requests | requests/s | p50 ms | p95 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|---|");
    for (endpoint, samples) in stats.latency.iter_mut() {
        println!(
            "| {endpoint} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
            samples.len(),
            samples.len() as f64 / elapsed,
            percentile(samples, 0.5),
            percentile(samples, 0.95),
            percentile(samples, 0.99),
            samples.iter().max().copied().unwrap_or(0) as f64 / 1000.0,
        );
    }
    let ttm = &mut stats.time_to_match;
    println!();
    println!(
        "time to match (join answered → MATCHED seen, polling every {} ms): p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms over {} players",
        args.poll_ms,
        percentile(ttm, 0.5),
        percentile(ttm, 0.95),
        percentile(ttm, 0.99),
        ttm.len()
    );
    if stats.errors.is_empty() {
        println!("errors: none");
    } else {
        println!("errors:");
        for ((endpoint, code), n) in &stats.errors {
            println!("  {endpoint}: {code} × {n}");
        }
    }
}
