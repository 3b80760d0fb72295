//! The real binary, as an operator runs it: `serve` with a dev-mode secret,
//! `token` minting with the same secret, `migrate`, SIGTERM.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_matchmaking-api");

/// The binary with a clean environment, run in `dir` (so no stray `.env`).
fn command(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .current_dir(dir)
        .env("DATA_DIR", dir.join("data"))
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info");
    c
}

/// Spawns `serve` on a free port, its log lines piped.
fn spawn_serve(dir: &Path) -> Child {
    command(dir)
        .args(["serve", "--bind-addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts")
}

/// Starts `serve` on a free port; answers the child and its base URL.
fn serve(dir: &Path) -> (Child, String) {
    let mut child = spawn_serve(dir);
    let url = support::listening_url(&mut child);
    (child, url)
}

/// Fails the test with the command's stderr unless it exited with 0.
fn assert_succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn token(dir: &Path, user: &str) -> String {
    let out = command(dir)
        .args(["token", "--user", user, "--username", user])
        .output()
        .unwrap();
    assert_succeeded(&out);
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn a_new_user_mints_tokens_and_two_players_are_matched() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = serve(dir.path());
    let client = support::http_client();
    let mut ids = Vec::new();
    let tokens = [token(dir.path(), "alice"), token(dir.path(), "bob")];
    for t in &tokens {
        let r = client
            .post(format!("{base}/v1/matchmaking/queue"))
            .bearer_auth(t)
            .json(&json!({ "time_control": "5+0", "mode": "rated" }))
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
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = support::settle(&client, &base, &tokens[0], &ids[0], deadline).await;
    assert_eq!(status["status"], "MATCHED");
    assert_eq!(status["opponent"]["user_id"], "bob");

    // SIGTERM: a graceful stop with a success exit code.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(code.success(), "exit {code:?}");
}

#[test]
fn migrate_creates_the_database_in_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path()).arg("migrate").output().unwrap();
    assert_succeeded(&out);
    assert!(dir.path().join("data/matchmaking.db").exists());
}

#[test]
fn impossible_settings_stop_the_binary_with_the_variable_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .env("RATING_WINDOW_WIDENING_INTERVAL", "0")
        .args(["serve", "--bind-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("RATING_WINDOW_WIDENING_INTERVAL"));
}

#[test]
fn backends_this_build_lacks_are_refused_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .env("JWT_JWKS_URL", "https://id.example/.well-known/jwks.json")
        .args(["serve", "--bind-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("JWT_JWKS_URL"));
}

#[test]
fn a_bad_value_from_the_environment_is_named_by_its_variable_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .env("WORKER_INTERVAL_SECONDS", "abc")
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WORKER_INTERVAL_SECONDS=\"abc\"") && !stderr.contains("--worker"),
        "{stderr}"
    );
    // A refused setting: one line on stderr, none on the log.
    let out = command(dir.path())
        .env("RATING_WINDOW_WIDENING_INTERVAL", "0")
        .args(["serve", "--bind-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: ") && stderr.contains("RATING_WINDOW_WIDENING_INTERVAL"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("error"));
}

#[test]
fn token_refuses_a_data_dir_without_the_servers_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .args(["token", "--user", "alice"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no dev secret at"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "nothing was created");
}

/// The start-up line names the stores, the game creator, the ratings and
/// the docs; a DATA_DIR that did not exist is created with a line saying
/// so; `/readyz` names each backend's kind; SIGTERM on an idle server
/// stops it at once.
#[tokio::test]
async fn start_up_says_what_the_server_runs_on_and_sigterm_stops_it_at_once() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_serve(dir.path());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut before = Vec::new();
    let listening: Value = loop {
        let line = lines.next().expect("the server logs").unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["message"] == "listening" {
            break v;
        }
        before.push(v);
    };
    let data = std::fs::canonicalize(dir.path().join("data")).unwrap();
    assert!(
        before.iter().any(|v| v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("DATA_DIR did not exist"))
            && v["data_dir"] == data.display().to_string()),
        "{before:?}"
    );
    let addr = listening["addr"].as_str().unwrap();
    assert_eq!(listening["docs"], format!("http://{addr}/docs"));
    assert_eq!(listening["queue_store"], "memory");
    assert_eq!(
        listening["durable_store"],
        format!("sqlite {}", data.join("matchmaking.db").display())
    );
    assert_eq!(listening["game_creator"], "built-in");
    assert_eq!(listening["ratings"], "local");
    assert_eq!(listening["worker"], "embedded");
    let ready: Value = reqwest::get(format!("http://{addr}/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<_> = ["queue_store", "durable_store", "game_creator", "ratings"]
        .iter()
        .map(|b| ready["backends"][b]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["memory", "sqlite", "built-in", "local"], "{ready}");
    assert_eq!(ready["backends"]["durable_store"]["state"], "ok");
    std::thread::spawn(move || lines.for_each(drop));

    let asked = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Idle, it stops within milliseconds; the deadline only keeps a loaded
    // machine from failing it (before, it lingered for seconds).
    let code = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "an idle server still runs 3 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(code.success(), "exit {code:?}");
}

/// Metrics as they move, read from the real binary: its recorder is its
/// own, so every series here moves only by this test's requests, and the
/// counts are exact.
#[tokio::test]
async fn metrics_count_exactly_what_players_did() {
    use support::sample;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = serve(dir.path());
    let client = support::http_client();
    let scrape = || async {
        let r = client.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        r.text().await.unwrap()
    };
    let before = scrape().await;
    assert_eq!(sample(&before, "matchmaking_joins_total", &[]), 0.0);
    let tokens: Vec<String> = ["m1", "m2", "m3"]
        .iter()
        .map(|u| token(dir.path(), u))
        .collect();
    let join = |t: &str, tc: &str| {
        client
            .post(format!("{base}/v1/matchmaking/queue"))
            .bearer_auth(t)
            .json(&json!({ "time_control": tc, "mode": "rated" }))
            .send()
    };
    let mut ids = Vec::new();
    for (t, tc) in tokens.iter().zip(["5+0", "5+0", "10+0"]) {
        let r = join(t, tc).await.unwrap();
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        ids.push(v["queue_entry_id"].as_str().unwrap().to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..2 {
        let v = support::settle(&client, &base, &tokens[i], &ids[i], deadline).await;
        assert_eq!(v["status"], "MATCHED");
    }
    let r = client
        .delete(format!("{base}/v1/matchmaking/queue/{}", ids[2]))
        .bearer_auth(&tokens[2])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for i in 0..3 {
        let r = client
            .get(format!("{base}/no/such/path/{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }

    let after = scrape().await;
    assert_eq!(sample(&after, "matchmaking_joins_total", &[]), 3.0);
    assert_eq!(sample(&after, "matchmaking_matches_total", &[]), 1.0);
    assert_eq!(sample(&after, "matchmaking_cancels_total", &[]), 1.0);
    assert_eq!(
        sample(&after, "matchmaking_match_rating_gap_count", &[]),
        1.0
    );
    let waited = |outcome| {
        sample(
            &after,
            "matchmaking_wait_seconds_count",
            &[("outcome", outcome)],
        )
    };
    assert_eq!((waited("matched"), waited("cancelled")), (2.0, 1.0));
    // HTTP series are by route template, never by raw path.
    let joins = [
        ("route", "/v1/matchmaking/queue"),
        ("method", "POST"),
        ("status", "201"),
    ];
    assert_eq!(sample(&after, "http_requests_total", &joins), 3.0);
    assert_eq!(
        sample(&after, "http_request_duration_seconds_count", &joins[..2]),
        3.0
    );
    assert_eq!(
        sample(&after, "http_requests_total", &[("route", "unmatched")]),
        3.0
    );
    assert!(!after.contains("/no/such/path"));
    assert!(after.contains("route=\"/v1/matchmaking/queue/{queue_entry_id}\""));
    assert!(!after.contains(&ids[0]), "an entry id leaked into a label");
    assert!(!after.contains("m1"), "a user id leaked into a label");
    // The built-in creator makes no call to time (the game id is minted
    // and written with the claim): its creation series stays empty (in the
    // shared recorder of tests/api, other tests' calls to a fake game
    // service filled it). The breaker and the durable store are there
    // (the in-memory queue store's operations take microseconds and are not
    // timed).
    assert_eq!(
        sample(
            &after,
            "matchmaking_game_creation_duration_seconds_count",
            &[]
        ),
        0.0
    );
    assert!(after.contains("matchmaking_circuit_breaker_state{breaker=\"game_creation\"} 0"));
    let inserts = [("store", "sqlite"), ("operation", "insert_matches")];
    assert!(
        sample(
            &after,
            "matchmaking_store_operation_duration_seconds_count",
            &inserts
        ) >= 1.0
    );
    assert!(!after.contains("store=\"memory\""));
    assert!(after.contains("# HELP matchmaking_matches_total"));
    let _ = child.kill();
    let _ = child.wait();
}

/// One request id finds a player's story: the id each client sends comes
/// back, and is on the log lines of its join, of the match decision and of
/// the game creation.
#[tokio::test]
async fn the_request_id_a_client_sends_is_on_every_log_line_of_its_story() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_serve(dir.path());
    let (base, logs) = support::listening_url_capturing(&mut child);
    let client = support::http_client();
    let tokens = [token(dir.path(), "alice"), token(dir.path(), "bob")];
    let request_ids = ["story-alice-1", "story-bob-2"];
    let mut ids = Vec::new();
    for (t, rid) in tokens.iter().zip(request_ids) {
        let r = client
            .post(format!("{base}/v1/matchmaking/queue"))
            .bearer_auth(t)
            .header("x-request-id", rid)
            .json(&json!({ "time_control": "3+2", "mode": "casual" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["x-request-id"], rid);
        ids.push(
            r.json::<Value>().await.unwrap()["queue_entry_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = support::settle(&client, &base, &tokens[0], &ids[0], deadline).await;
    assert_eq!(status["status"], "MATCHED");
    // The match's lines are written before either player can see MATCHED;
    // give the log pipe a moment.
    let events_with = |rid: &str| -> Vec<String> {
        logs.lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(rid))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["event"].as_str().map(str::to_owned))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !events_with("story-bob-2").contains(&"game_created".to_owned())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for rid in request_ids {
        let events = events_with(rid);
        assert!(events.contains(&"enqueue".to_owned()), "{rid}: {events:?}");
        assert!(events.contains(&"match".to_owned()), "{rid}: {events:?}");
    }
    // The game is created for the join that completed the pair; the same id
    // goes to live-game-api (tests/api/live_game.rs checks the header).
    assert!(events_with("story-bob-2").contains(&"game_created".to_owned()));
    let lines = logs.lock().unwrap().clone();
    let enqueue: Value = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "enqueue" && v["user_id"] == "alice")
        .expect("alice's enqueue line");
    assert_eq!(enqueue["request_id"], "story-alice-1", "{enqueue}");
    let _ = child.kill();
}

/// A trace the simulator wrote replays to the same results; a bad trace is
/// refused with the line that is wrong.
#[test]
fn mm_sim_replays_a_trace_it_wrote_to_the_same_results() {
    let dir = tempfile::tempdir().unwrap();
    let sim = |args: &[&str], out: &str| {
        Command::new(env!("CARGO_BIN_EXE_mm-sim"))
            .args([
                "--hours",
                "0.1",
                "--snapshots",
                "10",
                "--large-snapshots",
                "0",
            ])
            .arg("--out")
            .arg(dir.path().join(out))
            .args(args)
            .output()
            .unwrap()
    };
    let trace = dir.path().join("trace.csv");
    let trace = trace.to_str().unwrap();
    assert_succeeded(&sim(&["--rates", "50", "--trace-out", trace], "made"));
    let text = std::fs::read_to_string(trace).unwrap();
    assert_eq!(text.lines().next(), Some("rating,arrive_ms,cancel_at_ms"));
    assert!(text.lines().count() > 100, "{text}");
    assert_succeeded(&sim(&["--trace", trace], "replayed"));
    // Every column but the rate (the replay works it out from the trace).
    let results = |out: &str| -> Vec<String> {
        std::fs::read_to_string(dir.path().join(out).join("sim.csv"))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split_once(',').unwrap().1.to_owned())
            .collect()
    };
    assert_eq!(results("made"), results("replayed"));

    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "rating,arrive_ms,cancel_at_ms\n1500,0,\n1600,soon,\n").unwrap();
    let out = sim(&["--trace", bad.to_str().unwrap()], "bad");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 3") && stderr.contains("arrive_ms"),
        "{stderr}"
    );
}

/// The simulator replays a short trace through every algorithm and writes
/// its CSV and chart.
#[test]
fn mm_sim_writes_a_row_per_algorithm_and_rate_and_a_chart() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mm-sim"))
        .args([
            "--hours",
            "0.1",
            "--rates",
            "5,50",
            "--snapshots",
            "50",
            "--large-snapshots",
            "2",
            "--snapshot-sizes",
            "10,40",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_succeeded(&out);
    let csv = std::fs::read_to_string(dir.path().join("sim.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 6, "{csv}");
    for algo in ["ours", "greedy", "lila"] {
        assert_eq!(
            rows.iter()
                .filter(|r| r.split(',').nth(1) == Some(algo))
                .count(),
            2
        );
    }
    // Every algorithm matched players at 50/min: matches per minute > 0;
    // with no preferences switched on, nobody barred or outside a range.
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).expect(name);
    let (per_minute, barred, outside) = (
        column("matches_per_minute"),
        column("barred_matches"),
        column("outside_own_range"),
    );
    for r in rows.iter().filter(|r| r.starts_with("50,")) {
        let f: Vec<&str> = r.split(',').collect();
        assert!(f[per_minute].parse::<f64>().unwrap() > 0.0, "{r}");
        assert_eq!((f[barred], f[outside]), ("0", "0"), "{r}");
    }
    let svg = std::fs::read_to_string(dir.path().join("gap_vs_wait.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("lila"));
    // Snapshots of 10 players are solved exactly: no pair lost.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("| 10 | 2 | 0 | 0 | +0.0% |"), "{stdout}");
    assert!(stdout.contains("| 40 | 2 |"), "{stdout}");
    // Verdicts say how much worse still counts as no worse.
    assert!(stdout.contains("vs lila: no worse (within 5%)"), "{stdout}");
    // The chart of a CSV is drawn again on its own, elsewhere.
    let again = dir.path().join("again");
    let out = Command::new(env!("CARGO_BIN_EXE_mm-sim"))
        .arg("--redraw")
        .arg(dir.path().join("sim.csv"))
        .arg("--out")
        .arg(&again)
        .output()
        .unwrap();
    assert_succeeded(&out);
    let redrawn = std::fs::read_to_string(again.join("gap_vs_wait.svg")).unwrap();
    assert!(redrawn.contains("5 players/min") && redrawn.contains("50 players/min"));
}

/// The load generator plays against a real server and prints its table.
#[test]
fn mm_load_plays_against_a_server_and_reports_per_endpoint() {
    // A default server (rate limits on, dev secret in ./data), and mm-load
    // finding that secret as `token` does: no request fails.
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = serve(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_mm-load"))
        .env_clear()
        .env("DATA_DIR", dir.path().join("data"))
        .current_dir(dir.path())
        .args(["--url", &url, "--players", "20", "--duration", "2"])
        .output()
        .unwrap();
    let _ = child.kill();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("players for 2 s"), "{text}");
    assert!(text.contains("failed requests: 0 of"), "{text}");
    for endpoint in [
        "| POST /v1/matchmaking/queue |",
        "| GET /v1/matchmaking/queue/{id} |",
        "| POST /internal/games/{game_id}/finished |",
    ] {
        assert!(text.contains(endpoint), "{text}");
    }
    let matched: u64 = text
        .split(" matched")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(matched >= 20, "{text}");
    assert!(text.contains("time to match"), "{text}");
}
