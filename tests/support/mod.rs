//! Real backend servers for tests: reach them, or say why not (fail in CI,
//! skip elsewhere), and give each test a space of its own.
// Shared by several test binaries; each uses part of it.
#![allow(dead_code)]

pub mod sse;

use std::time::Duration;

use sqlx::Connection;

/// Whether this run is CI, where a backend test that cannot reach its
/// server fails instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Says why a backend test cannot run: fails in CI, skips elsewhere.
pub fn unreachable(what: &str, detail: &str) {
    if in_ci() {
        panic!(
            "{what} is unreachable and CI is set, so this test fails instead of skipping: {detail}"
        );
    }
    // Straight to the stderr handle: the test harness captures eprintln!,
    // and a skip must be seen.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {what} is unreachable ({detail}); start it, or set CI=true to make this a failure"
    );
}

/// The PostgreSQL the backend tests use: `TEST_DATABASE_URL`, else the
/// machine's local server.
pub fn postgres_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A PostgreSQL schema of one test's own, dropped with it.
pub struct PgSchema {
    name: String,
}

impl PgSchema {
    /// Creates a fresh schema, or `None` (skip) when PostgreSQL is not there.
    pub async fn create() -> Option<Self> {
        let url = postgres_url();
        let mut admin =
            match tokio::time::timeout(Duration::from_secs(3), sqlx::PgConnection::connect(&url))
                .await
            {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    unreachable("PostgreSQL", &format!("{url}: {e}"));
                    return None;
                }
                Err(_) => {
                    unreachable("PostgreSQL", &format!("{url}: no answer in 3 s"));
                    return None;
                }
            };
        let name = format!("mm_test_{}", ulid::Ulid::new().to_string().to_lowercase());
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut admin)
            .await
            .expect("create schema");
        Some(Self { name })
    }

    /// A DATABASE_URL whose connections work in this schema.
    pub fn url(&self) -> String {
        let base = postgres_url();
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}options=-c%20search_path%3D{}", self.name)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        // Drop needs its own runtime: the test's may be shutting down.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                if let Ok(mut c) = sqlx::PgConnection::connect(&postgres_url()).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .execute(&mut c)
                        .await;
                }
            });
            Ok::<_, std::io::Error>(())
        })
        .join();
    }
}

/// An HTTP client for talking to the service as a well-behaved client
/// does: it lets go of an idle connection (5 s) before the server does
/// (`HTTP_HEADER_READ_TIMEOUT_SECONDS`, 10 s). A request sent on a
/// connection at the moment the server closes it for idleness is lost
/// (EOF or a reset); a client whose pool keeps idle connections longer
/// (reqwest's default is 90 s) meets that race now and then.
#[allow(dead_code)]
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client")
}

/// The Redis the backend tests use: `TEST_REDIS_URL`, else the machine's
/// local server.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A key prefix of one test's own on the test Redis; its keys are deleted
/// with it.
pub struct RedisPrefix {
    pub prefix: String,
}

impl RedisPrefix {
    /// A fresh prefix, or `None` (skip) when Redis is not there.
    pub async fn create() -> Option<Self> {
        let url = redis_url();
        let reachable = async {
            let client = redis::Client::open(url.as_str())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        match tokio::time::timeout(Duration::from_secs(3), reachable).await {
            Ok(Ok(_)) => Some(Self {
                prefix: format!("mmtest{}", ulid::Ulid::new()),
            }),
            Ok(Err(e)) => {
                unreachable("Redis", &format!("{url}: {e}"));
                None
            }
            Err(_) => {
                unreachable("Redis", &format!("{url}: no answer in 3 s"));
                None
            }
        }
    }
}

/// A node's Redis subscription for a test store (as `serve` runs one),
/// listening once this returns; it stops when dropped.
pub struct Listening(#[allow(dead_code)] tokio::sync::watch::Sender<bool>);

/// Starts `store`'s subscription through `url` and waits until Redis counts
/// a subscriber on its entry channel (`<prefix>:entries`).
#[allow(dead_code)]
pub async fn listening(
    store: &matchmaking_api::store::redis::RedisQueueStore,
    url: &str,
    prefix: &str,
) -> Listening {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(store.subscription(url).run(None, stopped));
    subscribers(url, &format!("{prefix}:entries"), 1).await;
    Listening(stop)
}

/// Waits (5 s at most) until the Redis at `url` counts `n` subscribers on
/// `channel`.
pub async fn subscribers(url: &str, channel: &str, n: i64) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for _ in 0..500 {
        let (_, count): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut conn)
            .await
            .unwrap();
        if count >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{channel} did not have {n} subscribers within 5 s");
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let pattern = format!("{}:*", self.prefix);
        let _ = std::thread::spawn(move || {
            let client = redis::Client::open(redis_url()).ok()?;
            let mut conn = client.get_connection().ok()?;
            let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut conn).ok()?;
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
            }
            Some(())
        })
        .join();
    }
}

/// A free local TCP port (and, for Redis Cluster, its bus port + 10000).
pub fn free_port() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// A `redis-server` of a test's own on a free port (never the machine's
/// shared one), stopped when dropped.
pub struct OwnRedis {
    pub port: u16,
    child: std::process::Child,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl OwnRedis {
    /// Starts a server, or `None` (skip; a failure in CI) without `redis-server`.
    pub fn start(extra: &[&str]) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let port = free_port();
        let child = Self::spawn(port, dir.path(), &extra);
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                unreachable("redis-server", &format!("cannot start it: {e}"));
                return None;
            }
        };
        let server = Self {
            port,
            child,
            dir,
            extra,
        };
        server.wait_up();
        Some(server)
    }

    fn spawn(
        port: u16,
        dir: &std::path::Path,
        extra: &[String],
    ) -> std::io::Result<std::process::Child> {
        std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
    }

    fn wait_up(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server on {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same port (empty: it keeps nothing).
    pub fn restart(&mut self) {
        self.kill();
        self.child =
            Self::spawn(self.port, self.dir.path(), &self.extra).expect("redis-server restarts");
        self.wait_up();
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server the hard way (an outage).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A 3-master Redis Cluster of a test's own, on free ports.
pub struct OwnRedisCluster {
    pub nodes: Vec<OwnRedis>,
}

impl OwnRedisCluster {
    pub fn start() -> Option<Self> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(OwnRedis::start(&[
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "2000",
            ])?);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            created.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        // Wait until every node agrees the cluster is up.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        for n in &nodes {
            loop {
                let info = std::process::Command::new("redis-cli")
                    .args(["-p", &n.port.to_string(), "cluster", "info"])
                    .output()
                    .expect("redis-cli runs");
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "cluster never became ok"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Some(Self { nodes })
    }

    /// `REDIS_URL` for `REDIS_CLUSTER=true`: the seed nodes, comma-separated.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(OwnRedis::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A TCP proxy to a server, for outage tests against a shared server that
/// must not be stopped: `cut` drops every connection and refuses new ones,
/// `restore` accepts again.
pub struct Proxy {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> =
            Default::default();
        let (flag, conns) = (up.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the "server" is down
                }
                conns.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Self {
            port,
            up,
            connections,
        }
    }

    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Reads a spawned server's JSON log lines until its "listening" line and
/// answers the base URL; the rest of its output is drained in the
/// background so the server never blocks on a full pipe.
pub fn listening_url(child: &mut std::process::Child) -> String {
    listening_url_keeping_logs(child, None)
}

/// As [`listening_url`], keeping every later log line in `kept`.
#[allow(dead_code)]
pub fn listening_url_capturing(
    child: &mut std::process::Child,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let kept = std::sync::Arc::default();
    let url = listening_url_keeping_logs(child, Some(std::sync::Arc::clone(&kept)));
    (url, kept)
}

fn listening_url_keeping_logs(
    child: &mut std::process::Child,
    kept: Option<std::sync::Arc<std::sync::Mutex<Vec<String>>>>,
) -> String {
    use std::io::{BufRead, BufReader};
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let addr = loop {
        let line = lines.next().expect("the server logs").expect("utf-8");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or(serde_json::Value::Null);
        if v["message"] == "listening" {
            break v["addr"].as_str().expect("addr").to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not start"
        );
    };
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Some(kept) = &kept {
                kept.lock().unwrap().push(line);
            }
        }
    });
    format!("http://{addr}")
}

/// Polls an entry (as its player, through `base`) until it is no longer
/// searching, or `deadline`; answers its last status.
pub async fn settle(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    id: &str,
    deadline: std::time::Instant,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    loop {
        let r = client
            .get(format!("{base}/v1/matchmaking/queue/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        // A 503 (a store slow to answer on a loaded machine) is what a
        // client polls through; anything else is the entry's state.
        if r.status() != 503 {
            assert_eq!(r.status(), 200, "status of {id}");
            last = r.json().await.unwrap();
            if last["status"] != "SEARCHING" {
                return last;
            }
        }
        if std::time::Instant::now() > deadline {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends what `request` builds until the answer is not a 503, as a client
/// does (after `Retry-After` when given, else 50 ms), for at most 30 s:
/// under a test's load a store may answer slower than its timeout, and
/// the node then answers 503 — an answer a client retries, not a verdict.
pub async fn send_through_503(request: impl Fn() -> reqwest::RequestBuilder) -> reqwest::Response {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = request().send().await.unwrap();
        if r.status() != 503 || std::time::Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(retry_after(&r, Duration::from_millis(50))).await;
    }
}

/// The wait an answer's `Retry-After` asks for, else `otherwise`.
pub fn retry_after(r: &reqwest::Response, otherwise: Duration) -> Duration {
    r.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .map_or(otherwise, Duration::from_secs)
}

/// The sum of every sample of `name` whose labels include all of `labels`
/// (`key="value"` pairs), from a Prometheus text exposition.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

pub mod procs;
