//! The real binary as a cluster: `serve` and `worker` processes sharing one
//! Redis and one PostgreSQL, players joining through both nodes and
//! cancelling at random, and a worker killed with SIGKILL mid-commit.
//! Afterwards: nobody is matched twice, every game has two players,
//! cancelled players are never matched, no entry is left reserved, and
//! (read from the game service's calls and the durable records) nobody is
//! in two games and every game created is recorded.

#[path = "api/fake_live_game.rs"]
#[allow(dead_code)]
mod fake_live_game;
mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::Rng;
use serde_json::{Value, json};

use support::procs::{self, Game, Procs, tokens};
use support::{PgSchema, RedisPrefix, redis_url, send_through_503, settle};

/// The binary on the machine's Redis (a key prefix of its own) and
/// PostgreSQL (a schema of its own).
struct Cluster {
    schema: PgSchema,
    redis: RedisPrefix,
    procs: Procs,
}

impl Cluster {
    async fn create() -> Option<Self> {
        let schema = PgSchema::create().await?;
        let redis = RedisPrefix::create().await?;
        let procs = Procs::new(&[
            ("DATABASE_URL", schema.url()),
            ("REDIS_URL", redis_url()),
            ("REDIS_KEY_PREFIX", redis.prefix.clone()),
            ("RESERVATION_TIMEOUT_SECONDS", "1".into()),
            // A dead worker's pools pass to another after a second.
            ("POOL_LEASE_SECONDS", "1".into()),
        ]);
        Some(Self {
            schema,
            redis,
            procs,
        })
    }

    /// Starts an API node without a worker; answers its base URL.
    fn serve(&mut self, extra_env: &[(&str, String)]) -> String {
        let mut env = extra_env.to_vec();
        env.push(("WORKER_ENABLED", "false".into()));
        self.procs.serve(&env).1
    }

    fn worker(&mut self, extra_env: &[(&str, String)]) -> (usize, String) {
        self.procs.worker(extra_env)
    }

    /// Entries still held by a reservation, read from Redis itself.
    async fn reserved_entries(&self) -> usize {
        let client = redis::Client::open(redis_url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*:r", self.redis.prefix))
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut total = 0;
        for k in keys {
            total += redis::cmd("ZCARD")
                .arg(k)
                .query_async::<usize>(&mut conn)
                .await
                .unwrap();
        }
        total
    }
}

/// What became of one player.
#[derive(Debug)]
struct Outcome {
    user: String,
    /// A cancel was sent (perhaps retried through 503s).
    tried_cancel: bool,
    /// A cancel was answered 200.
    cancelled: bool,
    status: String,
    game: Option<String>,
}

/// Checks what clients read against what was recorded (`recorded`, the
/// durable store's match records): nobody in two records, every game a
/// client read `MATCHED` recorded with that client as a player, every
/// record of exactly the two players who read it, no cancelled player in
/// any record. Answers (matched, cancelled, searching).
fn check(outcomes: &[Outcome], recorded: &[Game]) -> (usize, usize, usize) {
    let seen: Vec<String> = outcomes.iter().filter_map(|o| o.game.clone()).collect();
    let violations = procs::violations(recorded, recorded, &seen);
    assert!(violations.is_empty(), "{violations:?}");
    let players_of: HashMap<&str, &[String; 2]> = recorded
        .iter()
        .map(|g| (g.game_id.as_str(), &g.players))
        .collect();
    let in_a_record: HashSet<&str> = recorded
        .iter()
        .flat_map(|g| g.players.iter().map(String::as_str))
        .collect();
    let mut read: HashMap<&str, HashSet<&str>> = HashMap::new();
    let (mut matched, mut cancelled, mut searching) = (0, 0, 0);
    for o in outcomes {
        match o.status.as_str() {
            "MATCHED" => {
                assert!(!o.cancelled, "{} was cancelled yet matched", o.user);
                let game = o.game.as_deref().expect("a matched entry has a game");
                let players = players_of.get(game).expect("checked: recorded");
                assert!(
                    players.contains(&o.user),
                    "{} read {game}, recorded for {players:?}",
                    o.user
                );
                read.entry(game).or_default().insert(&o.user);
                matched += 1;
            }
            "CANCELLED" => {
                assert!(
                    o.tried_cancel,
                    "{} reads cancelled without cancelling",
                    o.user
                );
                assert!(
                    !in_a_record.contains(o.user.as_str()),
                    "{} cancelled, yet in a game",
                    o.user
                );
                cancelled += 1;
            }
            "SEARCHING" => {
                assert!(
                    !in_a_record.contains(o.user.as_str()),
                    "{} reads SEARCHING, yet in a game",
                    o.user
                );
                searching += 1;
            }
            other => panic!("{}: unexpected {other}", o.user),
        }
    }
    let odd: Vec<_> = read
        .iter()
        .filter(|(_, players)| players.len() != 2)
        .collect();
    assert!(
        odd.is_empty(),
        "games not read by exactly two players: {odd:?}"
    );
    assert_eq!(
        recorded.len(),
        read.len(),
        "every record was read by its players"
    );
    (matched, cancelled, searching)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_and_two_workers_match_2000_players_each_at_most_once() {
    let Some(mut cluster) = Cluster::create().await else {
        return;
    };
    let nodes = [cluster.serve(&[]), cluster.serve(&[])];
    let workers = [cluster.worker(&[]).1, cluster.worker(&[]).1];
    let client = support::http_client();
    let tokens = tokens(2_000, "p");
    let (client, nodes) = (&client, &nodes);
    let outcomes: Vec<Outcome> = futures::stream::iter(tokens.iter().enumerate())
        .map(|(i, token)| {
            let base = &nodes[i % 2];
            async move {
                let r = send_through_503(|| {
                    client
                        .post(format!("{base}/v1/matchmaking/queue"))
                        .bearer_auth(token)
                        .json(&json!({ "time_control": "5+0", "mode": "rated" }))
                })
                .await;
                let status = r.status();
                let body = r.json::<Value>().await.unwrap();
                // A 503 is retried. If the store ran a try whose answer came
                // too late (its command timed out), the retry finds that
                // entry (201) or, once it is matched, the game (409
                // ACTIVE_GAME_EXISTS: each player joins once here); the
                // client then reads its game, as a real one would.
                if status == 409 && body["error"]["code"] == "ACTIVE_GAME_EXISTS" {
                    let active: Value = client
                        .get(format!("{base}/v1/matchmaking/active"))
                        .bearer_auth(token)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    let game = active["match"]["game_id"].as_str().map(str::to_owned);
                    assert!(game.is_some(), "409 with no game: {active}");
                    return Outcome {
                        user: format!("p{i}"),
                        tried_cancel: false,
                        cancelled: false,
                        status: "MATCHED".to_owned(),
                        game,
                    };
                }
                assert_eq!(status, 201, "join: {body}");
                let id = body["queue_entry_id"].as_str().unwrap().to_owned();
                // One in five cancels, at a random moment, through the other
                // node. A 503 is retried; if an earlier try went through
                // unseen, the retry answers 409, so whether the cancel took
                // is read from the final state (never MATCHED after a 200).
                let (mut tried_cancel, mut cancelled) = (false, false);
                if rand::rng().random_bool(0.2) {
                    let wait = rand::rng().random_range(0..200);
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    let other = &nodes[(i + 1) % 2];
                    let r = send_through_503(|| {
                        client
                            .delete(format!("{other}/v1/matchmaking/queue/{id}"))
                            .bearer_auth(token)
                    })
                    .await;
                    tried_cancel = true;
                    cancelled = r.status() == 200;
                    assert!(
                        cancelled || r.status() == 409,
                        "cancel answered {}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    );
                }
                // 10 s: matches take milliseconds; only a player left without a
                // partner (an odd count after cancels) waits it out.
                let v = settle(
                    client,
                    base,
                    token,
                    &id,
                    Instant::now() + Duration::from_secs(10),
                )
                .await;
                Outcome {
                    user: format!("p{i}"),
                    tried_cancel,
                    cancelled,
                    status: v["status"].as_str().expect("a status was read").to_owned(),
                    game: v["game_id"].as_str().map(str::to_owned),
                }
            }
        })
        .buffer_unordered(200)
        .collect()
        .await;
    let recorded = procs::recorded_games(&cluster.schema.url()).await;
    let (matched, cancelled, searching) = check(&outcomes, &recorded);
    assert!(
        searching <= 1,
        "{searching} players still searching (at most one can be left without a partner)"
    );
    assert!(
        matched >= 1_400,
        "only {matched} matched ({cancelled} cancelled)"
    );
    // Each worker serves its own metrics: together they counted every match.
    let mut counted = 0.0;
    for base in &workers {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        counted += text
            .lines()
            .filter(|l| l.starts_with("matchmaking_matches_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>();
        assert_eq!(
            client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert_eq!(
        counted as usize,
        matched / 2,
        "matches counted by the workers"
    );
    assert_eq!(
        cluster.reserved_entries().await,
        0,
        "no entry left reserved"
    );
}

/// The invariant under a crash: a worker SIGKILLed while it is creating
/// games (after CreateGame, before the record, or anywhere else) leaves
/// nobody in two games and no game without a record. Checked on what
/// really happened: the game service's calls and PostgreSQL's records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_commit_leaves_nobody_stuck_or_in_two_games() {
    let Some(mut cluster) = Cluster::create().await else {
        return;
    };
    // A game service that creates each game when the call arrives and
    // holds its answer until the test releases it: the kill lands, for
    // certain, between "the game exists" and "the record is written".
    let fake = fake_live_game::FakeLiveGame::start(fake_live_game::Answer::Held).await;
    let env = [("LIVE_GAME_API_URL", fake.url.clone())];
    let node = cluster.serve(&env);
    let client = support::http_client();
    let tokens = tokens(600, "k");
    let mut ids = Vec::new();
    for token in &tokens {
        let r = client
            .post(format!("{node}/v1/matchmaking/queue"))
            .bearer_auth(token)
            .json(&json!({ "time_control": "5+0", "mode": "rated" }))
            .send()
            .await
            .unwrap();
        ids.push(
            r.json::<Value>().await.unwrap()["queue_entry_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // The worker starts once everyone waits, so its first pass pairs them
    // all and the kill, as soon as the first game exists, finds games
    // created and not yet recorded (however slow the joins were).
    let (doomed, _) = cluster.worker(&env);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.calls().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the worker never started matching"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.procs.sigkill(doomed);
    let created_before = fake.calls().iter().filter(|c| c.game_id.is_some()).count();
    let recorded_before = procs::recorded_games(&cluster.schema.url()).await.len();
    assert_eq!(
        recorded_before, 0,
        "no answer went out, so no game can be recorded yet"
    );
    assert!(created_before > 0, "the worker died with games created");
    fake.release();
    // A new worker takes over: what the dead one left is finished with the
    // same match ids, or rolled back.
    cluster.worker(&env);
    let mut outcomes = Vec::new();
    for (i, (token, id)) in tokens.iter().zip(&ids).enumerate() {
        let v = settle(
            &client,
            &node,
            token,
            id,
            Instant::now() + Duration::from_secs(30),
        )
        .await;
        outcomes.push(Outcome {
            user: format!("k{i}"),
            tried_cancel: false,
            cancelled: false,
            status: v["status"].as_str().unwrap().to_owned(),
            game: v["game_id"].as_str().map(str::to_owned),
        });
    }
    let recorded = procs::recorded_games(&cluster.schema.url()).await;
    let (matched, _, searching) = check(&outcomes, &recorded);
    assert_eq!(
        (matched, searching),
        (600, 0),
        "everyone matched once the new worker took over"
    );
    assert_eq!(
        cluster.reserved_entries().await,
        0,
        "no entry left reserved"
    );
    assert_eq!(procs::open_intents(&cluster.schema.url()).await, 0);
    let created: Vec<Game> = fake
        .calls()
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
        .collect();
    let seen: Vec<String> = outcomes.iter().filter_map(|o| o.game.clone()).collect();
    let violations = procs::violations(&created, &recorded, &seen);
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(recorded.len(), 300, "300 games, each recorded once");
}

/// Match-found push across nodes: players join through node A and wait on
/// event streams opened through node B; each stream says MATCHED, with the
/// game the durable record holds, as soon as the worker commits. Then a
/// node with open streams is killed: its clients reconnect to the other
/// node with `Last-Event-ID` and lose nothing, and their entries, no longer
/// heard from through the dead node, are kept by the new streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_match_committed_anywhere_reaches_a_stream_on_any_node() {
    use support::sse::{EventStream, open};
    let Some(mut cluster) = Cluster::create().await else {
        return;
    };
    let presence = [("PRESENCE_TIMEOUT_SECONDS", "3".to_owned())];
    let node_a = cluster.serve(&presence);
    let (b_index, node_b) = {
        let mut env = presence.to_vec();
        env.push(("WORKER_ENABLED", "false".into()));
        cluster.procs.serve(&env)
    };
    cluster.worker(&presence);
    let client = support::http_client();
    let wait = Duration::from_secs(20);
    // Each waiting player is alone in a pool of their own until their
    // partner joins it.
    let pools: Vec<(&str, &str)> = [
        "1+0", "2+1", "3+0", "3+2", "5+0", "5+3", "10+0", "10+5", "15+10", "30+0",
    ]
    .into_iter()
    .flat_map(|tc| [(tc, "rated"), (tc, "casual")])
    .collect();
    let join_in =
        |base: String, token: String, (time_control, mode): (&'static str, &'static str)| {
            let client = client.clone();
            async move {
                let r = send_through_503(|| {
                    client
                        .post(format!("{base}/v1/matchmaking/queue"))
                        .bearer_auth(&token)
                        .json(&json!({ "time_control": time_control, "mode": mode }))
                })
                .await;
                assert_eq!(r.status(), 201);
                r.json::<Value>().await.unwrap()["queue_entry_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            }
        };
    // Twenty players wait on node B, each then joined by a partner on A.
    let waiting = tokens(20, "s");
    let partners = tokens(20, "t");
    let mut streams = Vec::new();
    for (token, pool) in waiting.iter().zip(&pools) {
        let id = join_in(node_a.clone(), token.clone(), *pool).await;
        let mut stream = EventStream::new(open(&client, &node_b, token, &id, None).await);
        let first = stream.next(wait).await.unwrap();
        assert_eq!((first.id(), first.status()), (1, "SEARCHING"));
        streams.push(stream);
    }
    for (token, pool) in partners.iter().zip(&pools) {
        join_in(node_a.clone(), token.clone(), *pool).await;
    }
    let mut seen = Vec::new();
    for stream in &mut streams {
        let matched = stream.next(wait).await.expect("the match");
        assert_eq!((matched.id(), matched.status()), (1_000_000, "MATCHED"));
        seen.push(matched.data["game_id"].as_str().unwrap().to_owned());
        assert!(stream.next(wait).await.is_none());
    }
    let recorded = procs::recorded_games(&cluster.schema.url()).await;
    let violations = procs::violations(&recorded, &recorded, &seen);
    assert!(violations.is_empty(), "{violations:?}");
    // Each stream's game is recorded with its player and their partner.
    for (i, game) in seen.iter().enumerate() {
        let record = recorded.iter().find(|g| &g.game_id == game).unwrap();
        let mut players = record.players.clone();
        players.sort();
        assert_eq!(players, [format!("s{i}"), format!("t{i}")]);
    }

    // Node B dies with streams open. Its clients, each alone in a pool,
    // reconnect to A.
    let pools = &pools[..4];
    let lonely = tokens(4, "u");
    let mut resumed = Vec::new();
    for (token, pool) in lonely.iter().zip(pools) {
        let id = join_in(node_a.clone(), token.clone(), *pool).await;
        let mut stream = EventStream::new(open(&client, &node_b, token, &id, None).await);
        let first = stream.next(wait).await.unwrap();
        resumed.push((token, id, first.id.unwrap(), stream));
    }
    cluster.procs.sigkill(b_index);
    let mut on_a = Vec::new();
    for (token, id, last, mut stream) in resumed {
        assert!(
            stream.next(wait).await.is_none(),
            "the dead node's stream ended"
        );
        let mut stream = EventStream::new(open(&client, &node_a, token, &id, Some(&last)).await);
        assert!(
            stream.poll(Duration::from_millis(200)).await.is_none(),
            "nothing the client has is sent again"
        );
        on_a.push(stream);
    }
    // Past the presence time, the streams on A keep everyone searching.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (token, pool) in tokens(4, "v").into_iter().zip(pools) {
        join_in(node_a.clone(), token, *pool).await;
    }
    for stream in &mut on_a {
        let matched = stream.next(wait).await.expect("the match, through node A");
        assert_eq!(matched.status(), "MATCHED");
    }
}
