//! `mm-load`: a load generator that behaves like players. Mints its own
//! tokens with the server's key, found as `token` finds it (`--secret`,
//! else `JWT_SECRET`, else the dev secret in `DATA_DIR`, `./data`); each
//! virtual player joins, polls its entry until it is matched, plays a game
//! of `--game-ms`, reports it finished (as an admin of its own, so no one
//! token meets the per-user rate limit), and joins again; a share of
//! players cancel instead. It sends traffic only to the `--url` it is
//! given, shows progress while it runs, and ends with a table: requests/s
//! and latency per endpoint, time to match, failed requests by code.
//!
//! The defaults stay within a default server's rate limits (1,000
//! requests/s per address, 20 per user): against `cargo run --release`,
//! `mm-load` at its defaults has no failed request.
//!
//! Usage: `mm-load [--url http://127.0.0.1:8080] [--players 200]
//! [--duration 20] [--cancel-share 0.1] [--poll-ms 500] [--game-ms 1000]
//! [--secret S]`.

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
    /// The server's JWT_SECRET (tokens are minted with it); default: the
    /// JWT_SECRET variable, else the dev secret the server made in DATA_DIR.
    #[arg(long)]
    secret: Option<String>,
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
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
    /// How long a game lasts before its player reports it finished.
    #[arg(long, default_value_t = 1000)]
    game_ms: u64,
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
    /// Cancels answered 409: the player had been matched first.
    late_cancels: u64,
    timed_out: u64,
}

struct Client {
    http: reqwest::Client,
    url: String,
    stats: Mutex<Stats>,
}

impl Client {
    /// Sends a request, records its latency (and its error code if any),
    /// answers the status and body.
    async fn call(
        &self,
        endpoint: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Option<(u16, Value)> {
        self.call_expecting(endpoint, request, &[]).await
    }

    /// As [`Self::call`]; a status in `outcomes` is an answer the player
    /// expects (a cancel that came after the match: 409), not a failure.
    async fn call_expecting(
        &self,
        endpoint: &'static str,
        request: reqwest::RequestBuilder,
        outcomes: &[u16],
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
        if status >= 400 && !outcomes.contains(&status) {
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
async fn player(
    client: Arc<Client>,
    (token, admin): (String, String),
    args: Arc<Args>,
    deadline: Instant,
) {
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
            // 409: matched before the cancel came; then the game is played.
            if cancel(&client, &token, &id).await {
                continue;
            }
        }
        // Poll until the entry leaves SEARCHING. Once the run is over a
        // player still searching leaves the queue (a cancel that comes too
        // late finds the game, which is then played).
        let game = loop {
            let now = Instant::now();
            if now > deadline + Duration::from_secs(10) {
                return;
            }
            if now > deadline && cancel(&client, &token, &id).await {
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
        // The game is played; the platform reports it finished.
        if let Some(game) = game {
            tokio::time::sleep(Duration::from_millis(args.game_ms)).await;
            let finished = client
                .http
                .post(format!("{}/internal/games/{game}/finished", client.url))
                .bearer_auth(&admin)
                .json(&json!({ "tenant_id": args.tenant }));
            client
                .call("POST /internal/games/{game_id}/finished", finished)
                .await;
        }
    }
}

/// Cancels the player's entry; answers whether it was (409: it had been
/// matched first, an answer a player expects).
async fn cancel(client: &Client, token: &str, id: &str) -> bool {
    let request = client
        .http
        .delete(format!("{}/v1/matchmaking/queue/{id}", client.url))
        .bearer_auth(token);
    let answer = client
        .call_expecting("DELETE /v1/matchmaking/queue/{id}", request, &[409])
        .await;
    let mut stats = client.stats.lock().unwrap();
    match answer {
        Some((200, _)) => stats.cancelled += 1,
        Some((409, _)) => stats.late_cancels += 1,
        _ => {}
    }
    matches!(answer, Some((200, _)))
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
    // As the server and `token` read them: .env, then the environment.
    let _ = dotenvy::dotenv();
    let args = Arc::new(Args::parse());
    let mut settings = Settings::from_env();
    if let Some(secret) = &args.secret {
        settings.jwt_secret = Some(secret.clone());
        settings.jwt_secret_key = None;
    }
    settings.jwt_public_key_pem = None;
    settings.jwt_jwks_url = None;
    let auth = match JwtAuth::for_minting(&settings) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mm-load: {e}");
            std::process::exit(2);
        }
    };
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let tokens: Vec<(String, String)> = (0..args.players)
        .map(|i| {
            let user = format!("load-{}-{i}", &run[20..]);
            (
                mint(&auth, &args.tenant, &user, vec![]),
                mint(
                    &auth,
                    &args.tenant,
                    &format!("{user}-admin"),
                    vec!["admin".into()],
                ),
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
    // Rates are over the whole run: the duration asked, and the moments
    // after it in which players finished what they had begun.
    let elapsed = started.elapsed().as_secs_f64();
    let mut stats = client.stats.lock().unwrap();
    println!(
        "mm-load: {} players for {} s (+{:.1} s finishing the games in play) against {} ({} matched, {} cancelled, {} cancels after the match, {} timed out)",
        args.players,
        args.duration,
        (elapsed - args.duration).max(0.0),
        client.url,
        stats.matched,
        stats.cancelled,
        stats.late_cancels,
        stats.timed_out
    );
    println!(
        "players poll every {} ms, a game lasts {} ms, {:.0}% of joins are cancelled",
        args.poll_ms,
        args.game_ms,
        args.cancel_share * 100.0
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
    let requests: usize = stats.latency.values().map(Vec::len).sum();
    let failed: u64 = stats.errors.values().sum();
    println!("failed requests: {failed} of {requests}");
    if !stats.errors.is_empty() {
        println!("errors:");
        for ((endpoint, code), n) in &stats.errors {
            println!("  {endpoint}: {code} × {n}");
        }
    }
}
