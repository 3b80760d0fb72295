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
//! With `--wait events` a player waits on its entry's event stream
//! (`GET /v1/matchmaking/queue/{id}/events`) instead of polling, and the
//! table adds the push delay: from the match (`matched_at`) to the event
//! at the player. With `--hold-streams` each player joins once, opens its
//! stream and holds it until the end (for measuring what open streams
//! cost a node; the server should run without a worker).
//!
//! The defaults stay within a default server's rate limits (1,000
//! requests/s per address, 20 per user): against `cargo run --release`,
//! `mm-load` at its defaults has no failed request.
//!
//! Usage: `mm-load [--url http://127.0.0.1:8080] [--players 200]
//! [--duration 20] [--cancel-share 0.1] [--wait poll|events]
//! [--poll-ms 500] [--game-ms 1000] [--hold-streams] [--secret S]`.

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
    /// Base URL of the server (and, with --events-url, one of the only two
    /// addresses this sends to).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Where players open their event streams (another node of the same
    /// cluster: the push then crosses nodes); default: --url.
    #[arg(long)]
    events_url: Option<String>,
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
    /// How a player waits for its result: polling its status, or on its
    /// event stream.
    #[arg(long, value_enum, default_value_t = Wait::Poll)]
    wait: Wait,
    /// Time between two status polls of a player.
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
    /// Each player joins once and holds its event stream open until the
    /// end, playing nothing.
    #[arg(long)]
    hold_streams: bool,
    /// How long a game lasts before its player reports it finished.
    #[arg(long, default_value_t = 1000)]
    game_ms: u64,
    #[arg(long, default_value = "5+0")]
    time_control: String,
    #[arg(long, default_value = "rated")]
    mode: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Wait {
    Poll,
    Events,
}

/// What the run measured.
#[derive(Default)]
struct Stats {
    /// Latencies (µs) per endpoint.
    latency: BTreeMap<&'static str, Vec<u64>>,
    /// Join answer to MATCHED seen (µs).
    time_to_match: Vec<u64>,
    /// The match (`matched_at`) to its event at the player (µs).
    push_delay: Vec<u64>,
    /// Event streams open now, and the most open at once.
    streams_open: u64,
    streams_most: u64,
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
    events_url: String,
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
        let game = match args.wait {
            Wait::Poll => poll(&client, &token, &id, &args, (joined_at, deadline)).await,
            Wait::Events => stream(&client, &token, &id, (joined_at, deadline)).await,
        };
        let Some(game) = game else {
            if Instant::now() > deadline {
                return;
            }
            continue;
        };
        // The game is played; the platform reports it finished.
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

/// Records a MATCHED answer seen `joined_at` after the join.
fn matched(client: &Client, joined_at: Instant, v: &Value) -> Option<Option<String>> {
    let mut stats = client.stats.lock().unwrap();
    stats
        .time_to_match
        .push(joined_at.elapsed().as_micros() as u64);
    stats.matched += 1;
    Some(v["game_id"].as_str().map(str::to_owned))
}

/// Polls until the entry leaves SEARCHING: answers its game (`None` when
/// it ended without one). Once the run is over a player still searching
/// leaves the queue (a cancel that comes too late finds the game, which
/// is then played).
async fn poll(
    client: &Client,
    token: &str,
    id: &str,
    args: &Args,
    (joined_at, deadline): (Instant, Instant),
) -> Option<String> {
    loop {
        let now = Instant::now();
        if now > deadline + Duration::from_secs(10) {
            return None;
        }
        if now > deadline && cancel(client, token, id).await {
            return None;
        }
        let status = client
            .http
            .get(format!("{}/v1/matchmaking/queue/{id}", client.url));
        match client
            .call("GET /v1/matchmaking/queue/{id}", status.bearer_auth(token))
            .await
        {
            Some((200, v)) if v["status"] == "MATCHED" => {
                return matched(client, joined_at, &v).flatten();
            }
            Some((200, v)) if v["status"] == "SEARCHING" => {}
            Some((200, v)) if v["status"] == "TIMED_OUT" => {
                client.stats.lock().unwrap().timed_out += 1;
                return None;
            }
            Some((200, _)) | Some((404, _)) => return None,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
    }
}

/// Waits on the entry's event stream until its final event: answers its
/// game (`None` when it ended without one, or the stream could not be
/// read). Past the deadline the player cancels, as a polling one does.
async fn stream(
    client: &Client,
    token: &str,
    id: &str,
    (joined_at, deadline): (Instant, Instant),
) -> Option<String> {
    let mut events = open_stream(client, token, id).await?;
    let cancel_at = tokio::time::Instant::from_std(deadline);
    let mut cancel_sent = false;
    // The first event is the status when the stream opened (a match made
    // before that is not a push); the ones after it are pushed changes.
    let mut first = true;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = tokio::time::sleep_until(cancel_at), if !cancel_sent => {
                // A cancel that finds the match (409) leaves the stream to
                // say MATCHED; one that took makes it say CANCELLED.
                cancel_sent = true;
                cancel(client, token, id).await;
                continue;
            }
        };
        let Some(v) = event else {
            return None; // the stream ended early (the node shuts down)
        };
        match v["status"].as_str() {
            Some("MATCHED") => {
                let at_player = matchmaking_api::domain::now_millis();
                if !std::mem::take(&mut first)
                    && let Some(matched_at) = v["matched_at"].as_str().and_then(epoch_millis)
                {
                    let delay = (at_player - matched_at).max(0) as u64 * 1000;
                    client.stats.lock().unwrap().push_delay.push(delay);
                }
                return matched(client, joined_at, &v).flatten();
            }
            Some("TIMED_OUT") => {
                client.stats.lock().unwrap().timed_out += 1;
                return None;
            }
            Some("SEARCHING") => first = false,
            _ => return None,
        }
    }
}

/// Opens an entry's event stream (its latency is the time to the answer's
/// head); `None` when it is refused.
async fn open_stream<'a>(client: &'a Client, token: &str, id: &str) -> Option<Events<'a>> {
    let started = Instant::now();
    let endpoint = "GET /v1/matchmaking/queue/{id}/events";
    let sent = client
        .http
        .get(format!(
            "{}/v1/matchmaking/queue/{id}/events",
            client.events_url
        ))
        .bearer_auth(token)
        // A stream lasts as long as the search; the client's request
        // timeout is for answers.
        .timeout(Duration::from_secs(24 * 3600))
        .send()
        .await;
    let mut stats = client.stats.lock().unwrap();
    let response = match sent {
        Ok(r) if r.status() == 200 => r,
        Ok(r) => {
            let code = format!("{}", r.status().as_u16());
            *stats.errors.entry((endpoint, code)).or_default() += 1;
            return None;
        }
        Err(_) => {
            *stats
                .errors
                .entry((endpoint, "connection".into()))
                .or_default() += 1;
            return None;
        }
    };
    stats
        .latency
        .entry(endpoint)
        .or_default()
        .push(started.elapsed().as_micros() as u64);
    stats.streams_open += 1;
    stats.streams_most = stats.streams_most.max(stats.streams_open);
    drop(stats);
    Some(Events {
        response,
        buffer: String::new(),
        stats: &client.stats,
    })
}

/// An open event stream, read event by event (comments skipped).
struct Events<'a> {
    response: reqwest::Response,
    buffer: String,
    stats: &'a Mutex<Stats>,
}

impl Events<'_> {
    /// The next event's data, `None` once the stream ends.
    async fn next(&mut self) -> Option<Value> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let data: String = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if !data.is_empty() {
                    return serde_json::from_str(&data).ok();
                }
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }
}

impl Drop for Events<'_> {
    fn drop(&mut self) {
        self.stats.lock().unwrap().streams_open -= 1;
    }
}

/// Epoch milliseconds of an RFC 3339 time.
fn epoch_millis(text: &str) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// `--hold-streams`: joins once; once every player has joined (and a
/// pause, for a measurement of the node without streams), opens the
/// entry's stream and holds it until `deadline`.
async fn hold(
    client: Arc<Client>,
    token: String,
    args: Arc<Args>,
    (joined, deadline): (Arc<tokio::sync::Barrier>, Instant),
) {
    let body = json!({ "time_control": args.time_control, "mode": args.mode });
    let join = client
        .http
        .post(format!("{}/v1/matchmaking/queue", client.url))
        .bearer_auth(&token)
        .json(&body);
    let id = match client.call("POST /v1/matchmaking/queue", join).await {
        Some((201, answer)) => answer["queue_entry_id"].as_str().map(str::to_owned),
        _ => None,
    };
    if joined.wait().await.is_leader() {
        eprintln!("mm-load: every player joined; streams open in {HOLD_PAUSE:?}");
    }
    tokio::time::sleep(HOLD_PAUSE).await;
    let Some(id) = id else {
        return;
    };
    let Some(mut events) = open_stream(&client, &token, &id).await else {
        return;
    };
    let _ = tokio::time::timeout_at(deadline.into(), async {
        while events.next().await.is_some() {}
    })
    .await;
}

/// `--hold-streams`: the pause between the last join and the first stream.
const HOLD_PAUSE: Duration = Duration::from_secs(5);

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
    // One connection per open stream: thousands with --hold-streams.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
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
            // Let go of idle connections before the server does
            // (HTTP_HEADER_READ_TIMEOUT_SECONDS, 10 s by default): a request
            // sent as the server closes one is lost.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client"),
        url: args.url.trim_end_matches('/').to_owned(),
        events_url: args
            .events_url
            .as_deref()
            .unwrap_or(&args.url)
            .trim_end_matches('/')
            .to_owned(),
        stats: Mutex::new(Stats::default()),
    });
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let progress = ProgressBar::new_spinner();
    progress.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("a valid template"),
    );
    let joined = Arc::new(tokio::sync::Barrier::new(tokens.len()));
    let tasks: Vec<_> = tokens
        .into_iter()
        .map(|t| {
            if args.hold_streams {
                let phases = (joined.clone(), deadline);
                tokio::spawn(hold(client.clone(), t.0, args.clone(), phases))
            } else {
                tokio::spawn(player(client.clone(), t, args.clone(), deadline))
            }
        })
        .collect();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let stats = client.stats.lock().unwrap();
        let requests: usize = stats.latency.values().map(Vec::len).sum();
        let errors: u64 = stats.errors.values().sum();
        progress.set_message(format!(
            "{requests} requests ({:.0}/s), {} matched, {} cancelled, {} streams open, {errors} errors",
            requests as f64 / started.elapsed().as_secs_f64(),
            stats.matched,
            stats.cancelled,
            stats.streams_open,
        ));
        if args.hold_streams && progress.is_hidden() {
            // No terminal: a line per tick for a script to follow.
            eprintln!("mm-load: {} streams open", stats.streams_open);
        }
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
    let waiting = match args.wait {
        Wait::Poll => format!("poll every {} ms", args.poll_ms),
        Wait::Events => "wait on their event streams".to_owned(),
    };
    println!(
        "players {waiting}, a game lasts {} ms, {:.0}% of joins are cancelled; at most {} streams open at once",
        args.game_ms,
        args.cancel_share * 100.0,
        stats.streams_most,
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
        "time to match (join answered → MATCHED seen, players {waiting}): p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms over {} players",
        percentile(ttm, 0.5),
        percentile(ttm, 0.95),
        percentile(ttm, 0.99),
        ttm.len()
    );
    let push = &mut stats.push_delay;
    if !push.is_empty() {
        println!(
            "push delay (the match's matched_at → its event at the player, on a stream open before the match; ms clock): p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} events",
            percentile(push, 0.5),
            percentile(push, 0.95),
            percentile(push, 0.99),
            push.iter().max().copied().unwrap_or(0) as f64 / 1000.0,
            push.len()
        );
    }
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
