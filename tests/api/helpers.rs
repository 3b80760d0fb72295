//! `spawn_app()`: the real application on port 0 with its own data dir, and
//! a `TestApp` with one typed method per endpoint.

use std::sync::Arc;
use std::time::Duration;

use matchmaking_api::auth::JwtAuth;
use matchmaking_api::domain::{Clock, ManualClock, SystemClock, now_millis};
use matchmaking_api::settings::{Settings, TokenArgs};
use matchmaking_api::startup::Application;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    auth: JwtAuth,
    /// The app's DATABASE_URL, when not the SQLite file in its data dir.
    database_url: Option<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _data_dir: tempfile::TempDir,
}

/// Settings for a test: embedded stores in a temp dir, a known secret, a
/// fast worker; `customize` changes the rest.
pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_on_clock(customize, Arc::new(SystemClock)).await
}

/// As [`spawn_app_with`], every service reading the time from a clock the
/// test moves by hand (it starts at the wall clock's now).
pub async fn spawn_app_with_clock(
    customize: impl FnOnce(&mut Settings),
) -> (TestApp, Arc<ManualClock>) {
    let clock = ManualClock::at(now_millis());
    (spawn_app_on_clock(customize, clock.clone()).await, clock)
}

async fn spawn_app_on_clock(
    customize: impl FnOnce(&mut Settings),
    clock: Arc<dyn Clock>,
) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings::from_env();
    settings.bind_addr = "127.0.0.1:0".parse().unwrap();
    settings.data_dir = dir.path().to_path_buf();
    settings.database_url = None;
    settings.redis_url = None;
    settings.jwt_secret = Some(SECRET.into());
    settings.jwt_secret_key = None;
    settings.jwt_public_key_pem = None;
    settings.jwt_jwks_url = None;
    settings.jwt_issuer = None;
    settings.jwt_audience = None;
    settings.live_game_api_url = None;
    settings.worker_enabled = true;
    settings.worker_interval_seconds = 0.05;
    // Tests poll hard; the rate-limit tests turn the limits back on.
    settings.rate_limit_per_ip = 0;
    settings.rate_limit_per_user = 0;
    customize(&mut settings);
    let database_url = settings.database_url.clone();
    let auth = JwtAuth::from_settings(&settings).expect("keys");
    let app = Application::build_with_clock(settings, clock)
        .await
        .expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        client: crate::support::http_client(),
        auth,
        database_url,
        stop: Some(stop),
        server: Some(server),
        _data_dir: dir,
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub fn join_body(time_control: &str) -> Value {
    json!({ "time_control": time_control, "mode": "rated" })
}

impl TestApp {
    pub fn token_for(&self, tenant: &str, user: &str, roles: &[&str]) -> String {
        self.auth
            .mint(&TokenArgs {
                user: user.into(),
                tenant: Some(tenant.into()),
                username: Some(format!("{user} name")),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                ttl: 600,
            })
            .expect("mint")
    }

    /// A player of tenant `t1`.
    pub fn token(&self, user: &str) -> String {
        self.token_for("t1", user, &[])
    }

    /// The app's durable store (its PostgreSQL, or its SQLite file), opened
    /// beside it.
    pub async fn durable(&self) -> std::sync::Arc<dyn matchmaking_api::store::DurableStore> {
        use matchmaking_api::store::{postgres::PgStore, sqlite::SqliteStore};
        match &self.database_url {
            Some(url) if url.starts_with("postgres") => {
                std::sync::Arc::new(PgStore::connect(url).await.expect("PostgreSQL"))
            }
            _ => {
                let url = format!(
                    "sqlite://{}",
                    self._data_dir.path().join("matchmaking.db").display()
                );
                std::sync::Arc::new(SqliteStore::connect(&url).await.expect("open SQLite"))
            }
        }
    }

    pub fn admin_token(&self) -> String {
        self.token_for("t1", "ops", &["admin"])
    }

    pub async fn join(&self, token: &str, body: &Value) -> Response {
        self.client
            .post(format!("{}/v1/matchmaking/queue", self.address))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// Joins and answers the new entry id, asserting a 201.
    pub async fn join_ok(&self, token: &str, body: &Value) -> String {
        let r = self.join(token, body).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: Value = r.json().await.unwrap();
        v["queue_entry_id"].as_str().unwrap().to_owned()
    }

    pub async fn status(&self, token: &str, id: &str) -> Response {
        self.client
            .get(format!("{}/v1/matchmaking/queue/{id}", self.address))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub async fn status_json(&self, token: &str, id: &str) -> Value {
        let r = self.status(token, id).await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    pub async fn cancel(&self, token: &str, id: &str) -> Response {
        self.client
            .delete(format!("{}/v1/matchmaking/queue/{id}", self.address))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub async fn active(&self, token: &str) -> Value {
        let r = self
            .client
            .get(format!("{}/v1/matchmaking/active", self.address))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    pub async fn put_ratings(
        &self,
        token: &str,
        tenant: &str,
        user: &str,
        body: &Value,
    ) -> Response {
        self.client
            .put(format!("{}/internal/ratings/{tenant}/{user}", self.address))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get_ratings(&self, token: &str, tenant: &str, user: &str) -> Response {
        self.client
            .get(format!("{}/internal/ratings/{tenant}/{user}", self.address))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub async fn game_finished(&self, token: &str, game_id: &str) -> Response {
        self.client
            .post(format!(
                "{}/internal/games/{game_id}/finished",
                self.address
            ))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// A casual challenge with `token` to `opponent` in `time_control`.
    pub async fn challenge_as(&self, token: &str, opponent: &str, time_control: &str) -> Response {
        self.client
            .post(format!("{}/v1/matchmaking/challenges", self.address))
            .bearer_auth(token)
            .json(&json!({ "opponent_user_id": opponent, "time_control": time_control, "mode": "casual" }))
            .send()
            .await
            .expect("request")
    }

    /// `method` `path` with the admin's token, and `body` as JSON if any.
    pub async fn admin_send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Response {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(self.admin_token());
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("request")
    }

    /// GET `path` with `token`.
    pub async fn get_as(&self, token: &str, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.address))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request")
    }

    /// The games of every match record in the app's durable store.
    pub async fn recorded_games(&self) -> Vec<crate::support::procs::Game> {
        let url = self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                self._data_dir.path().join("matchmaking.db").display()
            )
        });
        crate::support::procs::recorded_games(&url).await
    }

    /// Polls the entry until its status is no longer SEARCHING. The
    /// deadline only bounds how long a failing test hangs: matches take
    /// milliseconds, and a loaded machine must not turn that into a flake.
    /// Two players join `time_control` and are matched: answers the first
    /// one's entry and their game.
    pub async fn matched_pair(&self, a: &str, b: &str, time_control: &str) -> (String, String) {
        let ia = self.join_ok(a, &join_body(time_control)).await;
        self.join_ok(b, &join_body(time_control)).await;
        let game = self.wait_for_result(a, &ia).await["game_id"]
            .as_str()
            .expect("matched")
            .to_owned();
        (ia, game)
    }

    pub async fn wait_for_result(&self, token: &str, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.status_json(token, id).await;
            if v["status"] != "SEARCHING" || tokio::time::Instant::now() > deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the server the way SIGTERM does, and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server");
        }
    }
}

/// The error body's code, asserting the SPEC's shape on the way.
pub async fn error_code(r: Response) -> String {
    error_of(r).await.0
}

/// The code and message of an error answer, its shape and request id
/// checked.
pub async fn error_of(r: Response) -> (String, String) {
    let has_request_id = r.headers().contains_key("x-request-id");
    let v: Value = r.json().await.expect("a JSON error body");
    let err = &v["error"];
    assert!(
        err["request_id"].as_str().is_some_and(|s| !s.is_empty()),
        "error shape: {v}"
    );
    assert!(has_request_id, "X-Request-Id header");
    (
        err["code"].as_str().expect("code").to_owned(),
        err["message"].as_str().expect("message").to_owned(),
    )
}

/// Where a test's app keeps its state.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    /// In-process memory and a SQLite file.
    Embedded,
    /// Redis and PostgreSQL (skipped without them, failing in CI).
    Production,
}

/// An app on a backend, holding the backend's test space while it lives.
pub struct OnBackend {
    app: TestApp,
    _backends: Option<crate::production::Backends>,
}

impl std::ops::Deref for OnBackend {
    type Target = TestApp;

    fn deref(&self) -> &TestApp {
        &self.app
    }
}

/// The app on `backend`, or `None` when that backend is not reachable here
/// (the test then skips; in CI it has already failed).
pub async fn spawn_on(
    backend: Backend,
    customize: impl FnOnce(&mut Settings),
) -> Option<OnBackend> {
    spawn_on_clock_of(backend, customize, Arc::new(SystemClock)).await
}

/// As [`spawn_on`], on a clock the test moves by hand.
pub async fn spawn_on_with_clock(
    backend: Backend,
    customize: impl FnOnce(&mut Settings),
) -> Option<(OnBackend, Arc<ManualClock>)> {
    let clock = ManualClock::at(now_millis());
    let app = spawn_on_clock_of(backend, customize, clock.clone()).await?;
    Some((app, clock))
}

async fn spawn_on_clock_of(
    backend: Backend,
    customize: impl FnOnce(&mut Settings),
    clock: Arc<dyn Clock>,
) -> Option<OnBackend> {
    match backend {
        Backend::Embedded => Some(OnBackend {
            app: spawn_app_on_clock(customize, clock).await,
            _backends: None,
        }),
        Backend::Production => {
            let backends = crate::production::Backends::create().await?;
            let app = spawn_app_on_clock(
                |s| {
                    backends.apply(s);
                    customize(s);
                },
                clock,
            )
            .await;
            Some(OnBackend {
                app,
                _backends: Some(backends),
            })
        }
    }
}

/// Runs each listed `async fn name(backend: Backend)` as a test on every
/// backend: `embedded::name` and `production::name`.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),+ $(,)?) => {
        mod embedded {
            $(#[tokio::test] async fn $name() { super::$name($crate::helpers::Backend::Embedded).await })+
        }
        mod production {
            $(#[tokio::test] async fn $name() { super::$name($crate::helpers::Backend::Production).await })+
        }
    };
}

/// A player who joined: user id, token, entry id.
pub struct Joined {
    pub user: String,
    pub token: String,
    pub id: String,
}

/// Players `<prefix>0..<prefix>n-1` join at once, player `i` with
/// `body(i)`.
pub async fn join_many(
    app: &TestApp,
    n: usize,
    prefix: &str,
    body: impl Fn(usize) -> Value,
) -> Vec<Joined> {
    let users: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let tokens: Vec<String> = users.iter().map(|u| app.token(u)).collect();
    let bodies: Vec<Value> = (0..n).map(body).collect();
    let ids =
        futures::future::join_all(tokens.iter().zip(&bodies).map(|(t, b)| app.join_ok(t, b))).await;
    users
        .into_iter()
        .zip(tokens)
        .zip(ids)
        .map(|((user, token), id)| Joined { user, token, id })
        .collect()
}

/// Waits for every player's result and asserts the invariant: each one
/// matched, never against themselves, into a game of exactly two players,
/// nobody in two games. Answers the number of games.
pub async fn assert_all_matched_in_pairs(app: &TestApp, joined: &[Joined]) -> usize {
    let mut games: std::collections::HashMap<String, Vec<&str>> = Default::default();
    for p in joined {
        let v = app.wait_for_result(&p.token, &p.id).await;
        assert_eq!(v["status"], "MATCHED", "{}: {v}", p.user);
        assert_ne!(
            v["opponent"]["user_id"],
            p.user.as_str(),
            "{} met themselves",
            p.user
        );
        let game = v["game_id"]
            .as_str()
            .expect("a matched entry has a game")
            .to_owned();
        games.entry(game).or_default().push(&p.user);
    }
    for (game, players) in &games {
        assert_eq!(players.len(), 2, "game {game} has players {players:?}");
    }
    // What was really recorded, not only what clients read: every game a
    // client saw has its record with those two players, and nobody (of
    // this scenario or any other player of this app) is in two records.
    let recorded = app.recorded_games().await;
    let seen: Vec<String> = games.keys().cloned().collect();
    let violations = crate::support::procs::violations(&recorded, &recorded, &seen);
    assert!(violations.is_empty(), "{violations:?}");
    for g in &recorded {
        if let Some(players) = games.get(&g.game_id) {
            let mut read: Vec<&str> = players.clone();
            let mut held: Vec<&str> = g.players.iter().map(String::as_str).collect();
            read.sort_unstable();
            held.sort_unstable();
            assert_eq!(read, held, "game {} recorded with other players", g.game_id);
        }
    }
    games.len()
}
