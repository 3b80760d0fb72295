//! What a process runs on — its two stores, its game creator and where
//! ratings come from — decided once from the settings, said in the
//! start-up line and by `/readyz` (kinds only: no address leaves the host
//! through an unauthenticated route).

use std::path::Path;

use crate::settings::Settings;
use crate::store::backend::{Backends, DurableBackend, QueueBackend};

/// One backend: what kind it is, and where (credentials removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// `memory`, `redis`, `redis-cluster`; `sqlite`, `postgres`;
    /// `built-in`, `live-game-api`; `local`, `rating-api`.
    pub kind: &'static str,
    /// A file, or a URL without its password; empty for `memory`,
    /// `built-in` and `local`.
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunsOn {
    pub queue_store: Backend,
    pub durable_store: Backend,
    pub game_creator: Backend,
    /// `local`: the durable store's table; `rating-api`: the rating
    /// service first (falling back to the table).
    pub ratings: Backend,
}

impl RunsOn {
    pub fn new(settings: &Settings, backends: &Backends) -> Self {
        let queue_store = match &backends.queue {
            QueueBackend::Memory => Backend {
                kind: "memory",
                at: String::new(),
            },
            QueueBackend::Redis { url, cluster } => Backend {
                kind: if *cluster { "redis-cluster" } else { "redis" },
                at: url.split(',').map(redact).collect::<Vec<_>>().join(","),
            },
        };
        let durable_store = match &backends.durable {
            DurableBackend::Sqlite { url, .. } => Backend {
                kind: "sqlite",
                at: sqlite_file(url),
            },
            DurableBackend::Postgres { url } => Backend {
                kind: "postgres",
                at: redact(url),
            },
        };
        let game_creator = match &settings.live_game_api_url {
            Some(url) => Backend {
                kind: "live-game-api",
                at: redact(url),
            },
            None => Backend {
                kind: "built-in",
                at: String::new(),
            },
        };
        let ratings = match &settings.rating_api_url {
            Some(url) => Backend {
                kind: "rating-api",
                at: redact(url),
            },
            None => Backend {
                kind: "local",
                at: String::new(),
            },
        };
        Self {
            queue_store,
            durable_store,
            game_creator,
            ratings,
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.at.is_empty() {
            f.write_str(self.kind)
        } else {
            write!(f, "{} {}", self.kind, self.at)
        }
    }
}

/// `url` without a password (`postgres://app:***@db/mm`); text that is not
/// a URL is shown as is.
fn redact(url: &str) -> String {
    let url = url.trim();
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// The file a `sqlite:` URL names, made absolute so a log reader knows
/// which one it is.
fn sqlite_file(url: &str) -> String {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or(path);
    std::path::absolute(Path::new(path))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show_and_files_are_absolute() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/mm?sslmode=require"),
            "postgres://app:***@db:5432/mm?sslmode=require"
        );
        assert_eq!(redact("redis://redis:6379"), "redis://redis:6379");
        assert_eq!(redact("redis://:pw@r:6379/0"), "redis://:***@r:6379/0");
        let file = sqlite_file("sqlite://data/matchmaking.db?mode=rwc");
        assert!(file.starts_with('/') && file.ends_with("/data/matchmaking.db"));
    }

    #[test]
    fn the_embedded_default_runs_on_no_server() {
        let mut settings = Settings::from_env();
        settings.database_url = None;
        settings.redis_url = None;
        settings.live_game_api_url = None;
        settings.rating_api_url = None;
        settings.data_dir = "/srv/mm".into();
        let backends = Backends::from_settings(&settings).unwrap();
        let on = RunsOn::new(&settings, &backends);
        assert_eq!(on.queue_store.to_string(), "memory");
        assert_eq!(
            on.durable_store.to_string(),
            "sqlite /srv/mm/matchmaking.db"
        );
        assert_eq!(on.game_creator.to_string(), "built-in");
        assert_eq!(on.ratings.kind, "local");
    }
}
