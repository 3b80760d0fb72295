//! The real binary as processes: `serve` and `worker` with a clean
//! environment, players' tokens, and the invariant checks every process
//! test ends with — read from what was really created (the game service's
//! calls) and really recorded (the durable store), not only from the
//! statuses clients saw.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};

use matchmaking_api::auth::JwtAuth;
use matchmaking_api::settings::{Settings, TokenArgs};

pub const BIN: &str = env!("CARGO_BIN_EXE_matchmaking-api");
pub const SECRET: &str = "process-test-secret-process-test-secret";

/// Processes of the binary sharing one environment; all killed on drop.
pub struct Procs {
    pub env: Vec<(String, String)>,
    pub dir: tempfile::TempDir,
    pub children: Vec<Child>,
    /// Each child's log lines after its "listening" line (warnings and
    /// errors by default), for a failing test to show.
    pub logs: Vec<std::sync::Arc<std::sync::Mutex<Vec<String>>>>,
}

impl Procs {
    /// `env` on top of a clean environment with the test secret, JSON logs
    /// and a fast worker.
    pub fn new(env: &[(&str, String)]) -> Self {
        let mut all: Vec<(String, String)> = [
            ("JWT_SECRET", SECRET),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "warn,matchmaking_api::startup=info"),
            ("WORKER_INTERVAL_SECONDS", "0.05"),
            ("PRESENCE_TIMEOUT_SECONDS", "0"),
            // Every simulated player calls from loopback.
            ("RATE_LIMIT_PER_IP", "0"),
            ("RATE_LIMIT_PER_USER", "0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
        Self {
            env: all,
            dir: tempfile::tempdir().unwrap(),
            children: Vec::new(),
            logs: Vec::new(),
        }
    }

    fn command(&self, extra_env: &[(&str, String)]) -> Command {
        let mut c = Command::new(BIN);
        c.env_clear().current_dir(self.dir.path());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        for (k, v) in extra_env {
            c.env(k, v);
        }
        c.stdout(Stdio::piped()).stderr(Stdio::null());
        c
    }

    /// Starts `serve` (its worker as `WORKER_ENABLED` says); answers its
    /// index and base URL.
    pub fn serve(&mut self, extra_env: &[(&str, String)]) -> (usize, String) {
        let mut child = self
            .command(extra_env)
            .args(["serve", "--bind-addr", "127.0.0.1:0"])
            .spawn()
            .unwrap();
        let (url, logs) = super::listening_url_capturing(&mut child);
        self.children.push(child);
        self.logs.push(logs);
        (self.children.len() - 1, url)
    }

    /// Starts a `worker`; answers its index and the base URL of its
    /// operations endpoints.
    pub fn worker(&mut self, extra_env: &[(&str, String)]) -> (usize, String) {
        let mut child = self
            .command(extra_env)
            .args(["worker", "--bind-addr", "127.0.0.1:0"])
            .spawn()
            .unwrap();
        let (url, logs) = super::listening_url_capturing(&mut child);
        self.children.push(child);
        self.logs.push(logs);
        (self.children.len() - 1, url)
    }

    /// The last `n` log lines of child `index`.
    pub fn tail(&self, index: usize, n: usize) -> String {
        let logs = self.logs[index].lock().unwrap();
        logs[logs.len().saturating_sub(n)..].join("\n")
    }

    /// SIGKILL: no shutdown, no cleanup.
    pub fn sigkill(&mut self, index: usize) {
        let child = &mut self.children[index];
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `n` player tokens of tenant `t1`, users `<prefix>0…`.
pub fn tokens(n: usize, prefix: &str) -> Vec<String> {
    let mut settings = Settings::from_env();
    settings.jwt_secret = Some(SECRET.into());
    settings.jwt_issuer = None;
    settings.jwt_audience = None;
    let auth = JwtAuth::from_settings(&settings).unwrap();
    (0..n)
        .map(|i| {
            auth.mint(&TokenArgs {
                user: format!("{prefix}{i}"),
                tenant: Some("t1".into()),
                username: None,
                roles: vec![],
                ttl: 3600,
            })
            .unwrap()
        })
        .collect()
}

/// A game as the game service created it (or as the built-in creator
/// recorded it): its id and both players.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Game {
    pub game_id: String,
    pub players: [String; 2],
}

/// What the invariant checks found; every count is a violation.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Violations {
    /// Players in more than one game (none was reported finished).
    pub second_games: Vec<String>,
    /// Games created that no match record holds.
    pub games_without_record: Vec<String>,
    /// Games a client read as `MATCHED` that no match record holds.
    pub matched_without_record: Vec<String>,
}

impl Violations {
    pub fn is_empty(&self) -> bool {
        *self == Violations::default()
    }
}

/// Checks the invariant: nobody in two games, no game without a record,
/// no `MATCHED` without a record. `created` are the games that exist (the
/// game service's answers), `recorded` the games of the durable store's
/// match records, `seen` the game ids clients read as `MATCHED`.
pub fn violations(created: &[Game], recorded: &[Game], seen: &[String]) -> Violations {
    let mut games_of: HashMap<&str, HashSet<&str>> = HashMap::new();
    for g in created.iter().chain(recorded) {
        for p in &g.players {
            games_of.entry(p).or_default().insert(&g.game_id);
        }
    }
    let recorded_ids: HashSet<&str> = recorded.iter().map(|g| g.game_id.as_str()).collect();
    let mut second_games: Vec<String> = games_of
        .iter()
        .filter(|(_, games)| games.len() > 1)
        .map(|(p, _)| p.to_string())
        .collect();
    second_games.sort();
    let mut games_without_record: Vec<String> = created
        .iter()
        .filter(|g| !recorded_ids.contains(g.game_id.as_str()))
        .map(|g| g.game_id.clone())
        .collect();
    games_without_record.sort();
    games_without_record.dedup();
    let mut matched_without_record: Vec<String> = seen
        .iter()
        .filter(|g| !recorded_ids.contains(g.as_str()))
        .cloned()
        .collect();
    matched_without_record.sort();
    matched_without_record.dedup();
    Violations {
        second_games,
        games_without_record,
        matched_without_record,
    }
}

/// The games of every match record in a durable store, read as a client
/// of the store would (a PostgreSQL schema's URL, or a SQLite file).
pub async fn recorded_games(database_url: &str) -> Vec<Game> {
    use sqlx::Row;
    let rows: Vec<(String, String, String)> = if database_url.starts_with("postgres") {
        let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(database_url)
            .await
            .unwrap();
        sqlx::query("SELECT game_id, white_user_id, black_user_id FROM match_records")
            .fetch_all(&mut c)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    } else {
        let options: sqlx::sqlite::SqliteConnectOptions = database_url
            .parse::<sqlx::sqlite::SqliteConnectOptions>()
            .unwrap()
            .read_only(true);
        let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options)
            .await
            .unwrap();
        sqlx::query("SELECT game_id, white_user_id, black_user_id FROM match_records")
            .fetch_all(&mut c)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    };
    rows.into_iter()
        .map(|(game_id, w, b)| Game {
            game_id,
            players: [w, b],
        })
        .collect()
}

/// Intents still waiting for their game (0 once recovery settled them).
pub async fn open_intents(database_url: &str) -> i64 {
    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(database_url)
        .await
        .unwrap();
    sqlx::query_scalar("SELECT COUNT(*) FROM match_intents")
        .fetch_one(&mut c)
        .await
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn game(id: &str, a: &str, b: &str) -> Game {
        Game {
            game_id: id.into(),
            players: [a.into(), b.into()],
        }
    }

    #[test]
    fn the_checks_catch_each_violation() {
        let created = [game("g1", "a", "b"), game("g2", "a", "c")];
        let recorded = [game("g1", "a", "b")];
        let v = violations(&created, &recorded, &["g1".into(), "g3".into()]);
        assert_eq!(v.second_games, vec!["a".to_string()]);
        assert_eq!(v.games_without_record, vec!["g2".to_string()]);
        assert_eq!(v.matched_without_record, vec!["g3".to_string()]);
        assert!(violations(&recorded, &recorded, &["g1".into()]).is_empty());
    }
}
