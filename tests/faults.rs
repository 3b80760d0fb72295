//! The invariant under faults, on the binary's own processes with real
//! servers: nobody is ever in two games, and `MATCHED` means a game on
//! record — while Redis restarts empty, the disk fills, PostgreSQL is cut
//! mid-commit, and the node is overloaded. Each test drives players as
//! clients do (join, poll, join again after their match), breaks a store
//! on purpose, lets it come back, and then checks what really happened:
//! the games the game service created, the match records in the durable
//! store, and every `MATCHED` a client read. Each prints its figures
//! (players, games, 503s and their latency, time to ready again).

#[path = "api/fake_live_game.rs"]
#[allow(dead_code)]
mod fake_live_game;
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_live_game::{Answer, FakeLiveGame};
use futures::StreamExt;
use serde_json::{Value, json};

use support::procs::{self, Game, Procs, tokens};
use support::{OwnRedis, PgSchema, Proxy, RedisPrefix, postgres_url, redis_url};

/// One fault at a time: each test loads the machine's two cores on
/// purpose, and a full-disk run next to an overload run would measure the
/// overload, not the disk (and make its timings depend on the neighbour).
static ONE_FAULT_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the players saw, shared by their tasks.
#[derive(Default)]
struct Seen {
    /// Game ids read as `MATCHED`.
    matched: Vec<String>,
    /// Joins answered 201 for a player who had already read `MATCHED`
    /// (no game is reported finished here, so each is a violation).
    admitted_in_game: Vec<String>,
    /// Latencies of the 503 answers.
    unavailable: Vec<Duration>,
    /// Joins answered 201.
    joins: usize,
}

impl Seen {
    fn report(&self, name: &str) -> String {
        let mut lat = self.unavailable.clone();
        lat.sort();
        let p = |q: f64| {
            lat.get(((lat.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        format!(
            "{name}: {} joins, {} games read MATCHED, {} answers 503 (p50 {:?}, p99 {:?}, max {:?}), {} admitted while in a game",
            self.joins,
            self.matched.len(),
            lat.len(),
            p(0.5),
            p(0.99),
            lat.last().copied().unwrap_or_default(),
            self.admitted_in_game.len()
        )
    }
}

/// One player until `until`: joins (through `base`), polls its entry until
/// it ends, and after a match keeps asking to join again — which must
/// answer 409 every time. An entry that vanished (404) is joined again.
async fn play(
    client: reqwest::Client,
    base: String,
    user: String,
    token: String,
    until: Instant,
    seen: Arc<Mutex<Seen>>,
) {
    let mut in_game = false;
    while Instant::now() < until {
        let started = Instant::now();
        let r = client
            .post(format!("{base}/v1/matchmaking/queue"))
            .bearer_auth(&token)
            .json(&json!({ "time_control": "5+0", "mode": "rated" }))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let Ok(r) = r else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        match r.status().as_u16() {
            201 => {
                let id = r.json::<Value>().await.unwrap()["queue_entry_id"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                {
                    let mut seen = seen.lock().unwrap();
                    seen.joins += 1;
                    if in_game {
                        seen.admitted_in_game.push(user.clone());
                    }
                }
                if let Some(game) = wait_for_result(&client, &base, &token, &id, until).await {
                    seen.lock().unwrap().matched.push(game);
                    in_game = true;
                }
            }
            503 => {
                seen.lock().unwrap().unavailable.push(started.elapsed());
                // As a well-behaved client: again after `Retry-After`.
                tokio::time::sleep(support::retry_after(&r, Duration::from_millis(100))).await;
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Polls an entry until it ends; answers its game if it was matched.
async fn wait_for_result(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    id: &str,
    until: Instant,
) -> Option<String> {
    while Instant::now() < until + Duration::from_secs(30) {
        let r = client
            .get(format!("{base}/v1/matchmaking/queue/{id}"))
            .bearer_auth(token)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        if let Ok(r) = r {
            match r.status().as_u16() {
                200 => {
                    let v: Value = r.json().await.unwrap();
                    match v["status"].as_str() {
                        Some("MATCHED") => return v["game_id"].as_str().map(str::to_owned),
                        Some("SEARCHING") => {}
                        _ => return None,
                    }
                }
                404 => return None,
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Starts `n` players, a new one every `every`, spread over `bases`.
fn start_players(
    n: usize,
    every: Duration,
    bases: &[String],
    until: Instant,
    seen: &Arc<Mutex<Seen>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let client = support::http_client();
    tokens(n, "p")
        .into_iter()
        .enumerate()
        .map(|(i, token)| {
            let (client, seen) = (client.clone(), seen.clone());
            let base = bases[i % bases.len()].clone();
            tokio::spawn(async move {
                tokio::time::sleep(every * i as u32).await;
                play(client, base, format!("p{i}"), token, until, seen).await;
            })
        })
        .collect()
}

/// Holds one request in flight: its head is sent, its body never is.
async fn hold_a_request(base: &str, token: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/matchmaking/queue HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Polls `base`'s `/readyz` until it answers 200; answers how long it took.
async fn time_to_ready(base: &str) -> Duration {
    let client = support::http_client();
    let started = Instant::now();
    loop {
        let ok = client
            .get(format!("{base}/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{base} never became ready again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The games the fake game service created (answered with an id).
fn created(fake: &FakeLiveGame) -> Vec<Game> {
    fake.calls()
        .iter()
        .filter_map(|c| {
            Some(Game {
                game_id: c.game_id.clone()?,
                players: [
                    c.body["white_user_id"].as_str()?.to_owned(),
                    c.body["black_user_id"].as_str()?.to_owned(),
                ],
            })
        })
        .collect()
}

/// Waits until recovery settled every intent (all games recorded).
async fn intents_settled(database_url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while procs::open_intents(database_url).await > 0 {
        assert!(Instant::now() < deadline, "intents left unsettled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Invariant: nobody in two games, no MATCHED without a record, no game
/// without a record — after Redis (the hot store, which held the
/// active-game guards) is killed under load and restarted empty, with two
/// API nodes and a worker on it. Fails without the guard rebuild (players
/// whose game began before the loss join and are matched again) and
/// without the durable claims (players reserved at the loss).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_under_load_puts_nobody_in_a_second_game() {
    let _one = ONE_FAULT_AT_A_TIME.lock().await;
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let Some(mut redis) = OwnRedis::start(&[]) else {
        return;
    };
    let fake = FakeLiveGame::start(Answer::Game { delay_ms: 20 }).await;
    let mut procs = Procs::new(&[
        ("DATABASE_URL", schema.url()),
        ("REDIS_URL", redis.url()),
        ("LIVE_GAME_API_URL", fake.url.clone()),
        ("RESERVATION_TIMEOUT_SECONDS", "2".into()),
        ("POOL_LEASE_SECONDS", "1".into()),
    ]);
    let no_worker = [("WORKER_ENABLED", "false".to_string())];
    let nodes = [procs.serve(&no_worker).1, procs.serve(&no_worker).1];
    procs.worker(&[]);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let until = Instant::now() + Duration::from_secs(9);
    let players = start_players(500, Duration::from_millis(12), &nodes, until, &seen);

    tokio::time::sleep(Duration::from_secs(3)).await;
    let games_before = created(&fake).len();
    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    let ready = time_to_ready(&nodes[0]).await;
    futures::future::join_all(players).await;
    intents_settled(&schema.url()).await;

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let created = created(&fake);
    let recorded = procs::recorded_games(&schema.url()).await;
    eprintln!(
        "{}; {} games created ({games_before} before the loss), {} recorded; ready {ready:?} after Redis came back",
        seen.report("redis loss"),
        created.len(),
        recorded.len()
    );
    assert!(
        games_before > 0 && created.len() > games_before,
        "load on both sides of the loss"
    );
    let violations = procs::violations(&created, &recorded, &seen.matched);
    assert!(violations.is_empty(), "{violations:?}");
    assert!(
        seen.admitted_in_game.is_empty(),
        "players in a game admitted again: {:?}",
        seen.admitted_in_game
    );
}

/// Unmounts a tmpfs the test mounted.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A small tmpfs of the test's own (root only): `None` (a skip, or a
/// failure under CI) where mounting is impossible.
fn small_disk(dir: &std::path::Path, size: &str) -> Option<Mounted> {
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output();
    match mounted {
        Ok(out) if out.status.success() => Some(Mounted(dir.to_path_buf())),
        Ok(out) => {
            support::unreachable(
                "a tmpfs mount (needs root)",
                String::from_utf8_lossy(&out.stderr).trim(),
            );
            None
        }
        Err(e) => {
            support::unreachable("the mount command", &e.to_string());
            None
        }
    }
}

/// Fills the disk at `dir`, then frees `keep` bytes: answers the filler.
fn fill(dir: &std::path::Path, keep: u64) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.flush();
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(keep)).unwrap();
    path
}

/// Invariant: no MATCHED without a record, nobody in two games, when the
/// embedded default's disk fills. While it is full, joins answer 503 fast
/// and /readyz says the durable store cannot write; once space is freed
/// the service recovers by itself. Fails without the single SQLite writer
/// (players read MATCHED for matches whose transaction was never
/// committed: sqlx's pooled transactions drift after SQLite's automatic
/// rollback on a full disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_never_shows_matched_without_a_record_and_recovers_when_freed() {
    let _one = ONE_FAULT_AT_A_TIME.lock().await;
    let data = tempfile::tempdir().unwrap();
    let Some(_mounted) = small_disk(data.path(), "6m") else {
        return;
    };
    let db = format!("sqlite://{}", data.path().join("matchmaking.db").display());
    let mut procs = Procs::new(&[("DATA_DIR", data.path().display().to_string())]);
    let (server, base) = procs.serve(&[]);
    // Leave the database a little room, so the disk fills under the load:
    // a few hundred matches (each grows the database by about 1 KiB with
    // its audit rows and their indexes; the WAL is checkpointed back every
    // 250 ms, so it does not grow much). 256 KiB left some runs with fewer
    // than ten matches before the disk filled.
    let filler = fill(data.path(), 384 * 1024);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let until = Instant::now() + Duration::from_secs(30);
    let mut players = start_players(
        1_500,
        Duration::from_millis(2),
        std::slice::from_ref(&base),
        until,
        &seen,
    );

    // The disk fills: /readyz says so, and joins answer 503 fast. While
    // writes are still stuck on the filling disk (not failed yet), the
    // probe may first find the store's connections all taken and answer
    // 503 "unreachable": true then, and not yet the state this waits for.
    let client = support::http_client();
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut last = Value::Null;
    let why = loop {
        let r = client.get(format!("{base}/readyz")).send().await.unwrap();
        if r.status() == 503 {
            let why: Value = r.json().await.unwrap();
            let reason = why["checks"]["durable_store"].as_str().unwrap_or_default();
            if reason.contains("cannot write") {
                break why;
            }
            last = why;
        }
        assert!(
            Instant::now() < deadline,
            "the disk never filled: {}; last /readyz 503: {last}; the server's last lines:\n{}",
            seen.lock().unwrap().report("players"),
            procs.tail(server, 20)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let reason = why["checks"]["durable_store"].as_str().unwrap().to_owned();
    assert!(reason.contains("cannot write"), "{why}");
    let started = Instant::now();
    let r = client
        .post(format!("{base}/v1/matchmaking/queue"))
        .bearer_auth(&tokens(1, "while-full")[0])
        .json(&json!({ "time_control": "5+0", "mode": "rated" }))
        .send()
        .await
        .unwrap();
    let refused_in = started.elapsed();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "MATCHMAKING_UNAVAILABLE"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    for p in players.drain(..) {
        p.abort();
    }

    // Space comes back: the service recovers by itself and matches again
    // (two new players, in a pool of their own so they meet each other).
    std::fs::remove_file(&filler).unwrap();
    let ready = time_to_ready(&base).await;
    let after = tokens(2, "after");
    let mut ids = Vec::new();
    for t in &after {
        let r = client
            .post(format!("{base}/v1/matchmaking/queue"))
            .bearer_auth(t)
            .json(&json!({ "time_control": "3+0", "mode": "rated" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        ids.push(
            r.json::<Value>().await.unwrap()["queue_entry_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let mut games = Vec::new();
    for (t, id) in after.iter().zip(&ids) {
        let Some(game) = wait_for_result(&client, &base, t, id, Instant::now()).await else {
            let r = client
                .get(format!("{base}/v1/matchmaking/queue/{id}"))
                .bearer_auth(t)
                .send()
                .await
                .unwrap();
            let ready = client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            panic!(
                "not matched after the disk has room again: {} {}; {ready}\n{}",
                r.status(),
                r.text().await.unwrap(),
                procs.tail(server, 30)
            );
        };
        games.push(game.clone());
        seen.lock().unwrap().matched.push(game);
    }

    // Every MATCHED a client read is on record, also after a restart.
    procs.sigkill(server);
    let recorded = procs::recorded_games(&db).await;
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    eprintln!(
        "disk full: {}; {} recorded; /readyz said {reason:?}; a join refused in {refused_in:?} while full; ready {ready:?} after space was freed",
        seen.report("disk full"),
        recorded.len()
    );
    let violations = procs::violations(&recorded, &recorded, &seen.matched);
    assert!(violations.is_empty(), "{violations:?}");
    assert!(
        seen.matched.len() > 10,
        "the disk filled before matching began"
    );
    let (_, base) = procs.serve(&[]);
    for ((t, id), game) in after.iter().zip(&ids).zip(&games) {
        let r = client
            .get(format!("{base}/v1/matchmaking/queue/{id}"))
            .bearer_auth(t)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            v["status"], "MATCHED",
            "a matched entry outlives a restart: {v}"
        );
        assert_eq!(v["game_id"].as_str(), Some(game.as_str()));
    }
}

/// Invariant: no game without a record, no MATCHED without a record,
/// nobody in two games, when PostgreSQL is cut mid-commit under load (its
/// connections dropped while matches are being claimed and recorded) and
/// restored. Joins answer 503 fast meanwhile; the service recovers alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cut_mid_commit_leaves_no_half_match() {
    let _one = ONE_FAULT_AT_A_TIME.lock().await;
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let Some(prefix) = RedisPrefix::create().await else {
        return;
    };
    let upstream: std::net::SocketAddr = {
        let url = postgres_url();
        let host_port = url
            .split('@')
            .nth(1)
            .and_then(|h| h.split('/').next())
            .unwrap_or("127.0.0.1:5432")
            .to_owned();
        tokio::net::lookup_host(host_port)
            .await
            .unwrap()
            .next()
            .unwrap()
    };
    let proxy = Proxy::start(upstream).await;
    let through_proxy =
        schema
            .url()
            .replacen(&upstream.port().to_string(), &proxy.port.to_string(), 1);
    let fake = FakeLiveGame::start(Answer::Game { delay_ms: 30 }).await;
    let mut procs = Procs::new(&[
        ("DATABASE_URL", through_proxy),
        ("REDIS_URL", redis_url()),
        ("REDIS_KEY_PREFIX", prefix.prefix.clone()),
        ("LIVE_GAME_API_URL", fake.url.clone()),
        ("RESERVATION_TIMEOUT_SECONDS", "2".into()),
    ]);
    let (_, base) = procs.serve(&[]);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let until = Instant::now() + Duration::from_secs(8);
    let players = start_players(
        400,
        Duration::from_millis(12),
        std::slice::from_ref(&base),
        until,
        &seen,
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    let games_before = created(&fake).len();
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.restore();
    let ready = time_to_ready(&base).await;
    futures::future::join_all(players).await;
    intents_settled(&schema.url()).await;

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let created = created(&fake);
    let recorded = procs::recorded_games(&schema.url()).await;
    eprintln!(
        "postgres cut: {}; {} games created ({games_before} before the cut), {} recorded; ready {ready:?} after the cut ended",
        seen.report("postgres cut"),
        created.len(),
        recorded.len()
    );
    assert!(
        games_before > 0 && created.len() > games_before,
        "load on both sides of the cut"
    );
    let violations = procs::violations(&created, &recorded, &seen.matched);
    assert!(violations.is_empty(), "{violations:?}");
    assert!(
        seen.admitted_in_game.is_empty(),
        "{:?}",
        seen.admitted_in_game
    );
}

/// Invariant under overload: with far more clients than the node's bound
/// of requests in flight, the extra requests are shed at once (503 with
/// Retry-After) instead of queueing, the health routes always answer, and
/// every player who read MATCHED has a record (nobody in two games).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_node_sheds_fast_and_keeps_the_invariant() {
    let _one = ONE_FAULT_AT_A_TIME.lock().await;
    let data = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", data.path().join("matchmaking.db").display());
    let mut procs = Procs::new(&[
        ("DATA_DIR", data.path().display().to_string()),
        ("MAX_IN_FLIGHT_REQUESTS", "6".into()),
    ]);
    let (_, base) = procs.serve(&[]);
    let client = support::http_client();
    // Every place taken by requests whose bodies never come, for the
    // first second of the flood: everything else is shed (the client here
    // cannot outrun a server on the same two cores for sure; wrk does, in
    // bench/overload.sh). Then they go, and the flood gets in.
    let mut held = Vec::new();
    for i in 0..6 {
        held.push(hold_a_request(&base, &tokens(1, &format!("slow{i}"))[0]).await);
    }
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(held);
    });
    let health_until = Instant::now() + Duration::from_secs(4);
    let health = {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move {
            let mut checked = 0;
            while Instant::now() < health_until {
                for path in ["/healthz", "/readyz"] {
                    let r = client.get(format!("{base}{path}")).send().await.unwrap();
                    assert_eq!(r.status(), 200, "{path} is never shed");
                    checked += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            checked
        })
    };
    let shed = Arc::new(Mutex::new(0usize));
    let seen = Arc::new(Mutex::new(Vec::new()));
    // A bound on the retries: a node that refuses joins for good (a pool
    // left marked busy once emptied did, before its mark lapsed with its
    // Retry-After) fails the test instead of hanging it.
    let deadline = Instant::now() + Duration::from_secs(180);
    futures::stream::iter(tokens(2_000, "o"))
        .map(|token| {
            let (client, base, shed, seen) =
                (client.clone(), base.clone(), shed.clone(), seen.clone());
            async move {
                let id = loop {
                    let r = client
                        .post(format!("{base}/v1/matchmaking/queue"))
                        .bearer_auth(&token)
                        .json(&json!({ "time_control": "5+0", "mode": "rated" }))
                        .send()
                        .await
                        .unwrap();
                    if r.status() == 503 {
                        assert!(Instant::now() < deadline, "joins refused for 3 minutes");
                        assert!(r.headers().contains_key("retry-after"));
                        *shed.lock().unwrap() += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    assert_eq!(r.status(), 201);
                    break r.json::<Value>().await.unwrap()["queue_entry_id"]
                        .as_str()
                        .unwrap()
                        .to_owned();
                };
                if let Some(game) =
                    wait_for_result(&client, &base, &token, &id, Instant::now()).await
                {
                    seen.lock().unwrap().push(game);
                }
            }
        })
        .buffer_unordered(400)
        .collect::<Vec<()>>()
        .await;
    release.await.unwrap();
    let checked = health.await.unwrap();
    let shed = *shed.lock().unwrap();
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let recorded = procs::recorded_games(&db).await;
    eprintln!(
        "overload: 2000 players, 400 at once, no free place for a second: {shed} requests shed, {} read MATCHED, {} recorded, {checked} health checks all 200",
        seen.len(),
        recorded.len()
    );
    assert!(shed > 0, "the bound was never reached");
    let violations = procs::violations(&recorded, &recorded, &seen);
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(seen.len(), 2_000, "everyone was matched in the end");
}
