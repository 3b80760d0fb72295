//! Real backend servers for tests: reach them, or say why not (fail in CI,
//! skip elsewhere), and give each test a space of its own.

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
