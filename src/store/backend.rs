//! Which stores the settings choose, decided once: the URLs are parsed into
//! [`Backends`] at start, and everything after asks the enums, never the
//! URL text again.

use std::sync::Arc;

use super::instrumented::{InstrumentedDurableStore, InstrumentedQueueStore};
use super::memory::MemoryQueueStore;
use super::postgres::PgStore;
use super::redis::{RedisDueChannel, RedisQueueStore, Subscription};
use super::sqlite::SqliteStore;
use super::{DurableStore, QueueStore, StoreError};
use crate::settings::Settings;

/// Where durable records live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurableBackend {
    /// A SQLite file of this process (`default_file`: the one in DATA_DIR,
    /// created if needed).
    Sqlite { url: String, default_file: bool },
    /// A PostgreSQL database other processes share.
    Postgres { url: String },
}

/// Where the hot queue state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueBackend {
    /// In this process.
    Memory,
    /// A Redis node, or the seed nodes of a Redis Cluster (comma-separated).
    Redis { url: String, cluster: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backends {
    pub durable: DurableBackend,
    pub queue: QueueBackend,
}

impl DurableBackend {
    /// The metrics label of the store.
    pub fn name(&self) -> &'static str {
        match self {
            DurableBackend::Sqlite { .. } => "sqlite",
            DurableBackend::Postgres { .. } => "postgres",
        }
    }

    /// No other process writes it, so its state may be mirrored in memory.
    pub fn is_local(&self) -> bool {
        matches!(self, DurableBackend::Sqlite { .. })
    }
}

impl QueueBackend {
    /// Lives in this process: its guards are rebuilt at start.
    pub fn is_local(&self) -> bool {
        matches!(self, QueueBackend::Memory)
    }
}

impl Backends {
    /// Reads `DATABASE_URL` (default: the SQLite file in DATA_DIR) and
    /// `REDIS_URL`.
    pub fn from_settings(settings: &Settings) -> Result<Self, String> {
        let durable = match &settings.database_url {
            None => DurableBackend::Sqlite {
                url: settings.effective_database_url(),
                default_file: true,
            },
            Some(url) if url.starts_with("sqlite:") => DurableBackend::Sqlite {
                url: url.clone(),
                default_file: false,
            },
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                DurableBackend::Postgres { url: url.clone() }
            }
            Some(_) => {
                return Err(
                    "DATABASE_URL must start with sqlite://, postgres:// or postgresql://".into(),
                );
            }
        };
        let queue = match &settings.redis_url {
            None => QueueBackend::Memory,
            Some(url) => QueueBackend::Redis {
                url: url.clone(),
                cluster: settings.redis_cluster,
            },
        };
        Ok(Self { durable, queue })
    }
}

/// The stores the settings choose.
pub struct Stores {
    pub queue: Arc<dyn QueueStore>,
    pub durable: Arc<dyn DurableStore>,
    pub backends: Backends,
    /// With Redis: the pub/sub channel joins announce due pools on, and
    /// the node's subscription (due pools, changed entries).
    pub due: Option<(RedisDueChannel, Subscription)>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("invalid settings: {0}")]
    Settings(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Opens (and migrates) the stores the settings name.
pub async fn open_stores(settings: &Settings) -> Result<Stores, OpenError> {
    let backends = Backends::from_settings(settings).map_err(OpenError::Settings)?;
    let durable: Arc<dyn DurableStore> = match &backends.durable {
        DurableBackend::Postgres { url } => {
            let pg = PgStore::connect(url).await?;
            pg.migrate().await?;
            Arc::new(pg)
        }
        DurableBackend::Sqlite { url, default_file } => {
            if *default_file {
                std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
                    OpenError::Settings(format!("DATA_DIR {}: {e}", settings.data_dir.display()))
                })?;
            }
            let sqlite = SqliteStore::connect(url).await?;
            sqlite.migrate().await?;
            Arc::new(sqlite)
        }
    };
    let (queue, due): (Arc<dyn QueueStore>, _) = match &backends.queue {
        QueueBackend::Redis { url, cluster } => {
            let store = RedisQueueStore::connect(
                url,
                *cluster,
                &settings.redis_key_prefix,
                settings.retention_ms().max(60_000),
            )
            .await?;
            let first_node = url.split(',').next().unwrap_or(url).trim();
            let redis = Some((store.due_channel(), store.subscription(first_node)));
            (Arc::new(store), redis)
        }
        QueueBackend::Memory => (Arc::new(MemoryQueueStore::new()), None),
    };
    // Store operations are timed where they cross a process boundary or
    // touch a disk; the in-memory queue store answers in microseconds.
    let (queue, durable) = if settings.metrics_enabled {
        let queue = match backends.queue {
            QueueBackend::Memory => queue,
            QueueBackend::Redis { .. } => InstrumentedQueueStore::wrap(queue, "redis"),
        };
        let name = backends.durable.name();
        (queue, InstrumentedDurableStore::wrap(durable, name))
    } else {
        (queue, durable)
    };
    Ok(Stores {
        queue,
        durable,
        backends,
        due,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(database_url: Option<&str>, redis_url: Option<&str>) -> Result<Backends, String> {
        use clap::Parser;
        let mut settings = crate::settings::Cli::parse_from(["mm"]).settings;
        settings.database_url = database_url.map(str::to_owned);
        settings.redis_url = redis_url.map(str::to_owned);
        Backends::from_settings(&settings)
    }

    #[test]
    fn the_urls_choose_the_backends_once() {
        let embedded = backends(None, None).unwrap();
        assert!(matches!(
            embedded.durable,
            DurableBackend::Sqlite {
                default_file: true,
                ..
            }
        ));
        assert!(embedded.durable.is_local() && embedded.queue.is_local());
        let prod = backends(Some("postgresql://u@h/db"), Some("redis://r:6379")).unwrap();
        assert_eq!(
            prod.durable,
            DurableBackend::Postgres {
                url: "postgresql://u@h/db".into()
            }
        );
        assert_eq!(prod.durable.name(), "postgres");
        assert!(!prod.durable.is_local() && !prod.queue.is_local());
        let file = backends(Some("sqlite:///tmp/x.db"), None).unwrap();
        assert_eq!(file.durable.name(), "sqlite");
        assert!(backends(Some("mysql://h/db"), None).is_err());
    }
}
