//! The one place that wires everything: settings → stores → services →
//! router and worker; and owns shutdown (the server drains, the worker
//! finishes its pass).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{DEV_SECRET_FILE, JwtAuth, KeyError};
use crate::domain::TenantConfig;
use crate::http::rate_limit::RateLimits;
use crate::http::{self, AppState, Services};
use crate::observe;
use crate::services::backlog::Backlog;
use crate::services::breaker::CircuitBreaker;
use crate::services::challenges::{ChallengeLimits, ChallengeService};
use crate::services::games::{GameCreator, GuardedGameCreator, LocalGameCreator};
use crate::services::guards::Guards;
use crate::services::live_game::LiveGameClient;
use crate::services::matching::{MatchingLimits, MatchingService};
use crate::services::queue::{QueueLimits, QueueService};
use crate::services::ratings::RatingService;
use crate::services::signal::{DueAnnouncer, PoolSignal};
use crate::settings::Settings;
use crate::store::instrumented::{InstrumentedDurableStore, InstrumentedQueueStore};
use crate::store::memory::MemoryQueueStore;
use crate::store::postgres::PgStore;
use crate::store::redis::{RedisDueChannel, RedisQueueStore};
use crate::store::sqlite::SqliteStore;
use crate::store::{DurableStore, QueueStore, StoreError};
use crate::worker::{Worker, WorkerSettings};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("invalid settings: {0}")]
    Settings(String),
    #[error("{0}")]
    Keys(#[from] KeyError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
}

/// The stores the settings choose.
pub struct Stores {
    pub queue: Arc<dyn QueueStore>,
    pub durable: Arc<dyn DurableStore>,
    /// The durable store is this process's own SQLite file: no other
    /// process writes it, so its state may be mirrored in memory.
    pub durable_is_local: bool,
    /// The queue store lives in this process: its active-game guards are
    /// restored from the durable store at start.
    pub queue_is_local: bool,
    /// With Redis: the pub/sub channel of due pools, and a node to listen on.
    pub due: Option<(RedisDueChannel, String)>,
}

/// Opens (and migrates) the stores the settings name.
pub async fn open_stores(settings: &Settings) -> Result<Stores, StartupError> {
    let url = settings.effective_database_url();
    let durable: Arc<dyn DurableStore> =
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pg = PgStore::connect(&url).await?;
            pg.migrate().await?;
            Arc::new(pg)
        } else if url.starts_with("sqlite:") {
            if settings.database_url.is_none() {
                std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
                    StartupError::Settings(format!("DATA_DIR {}: {e}", settings.data_dir.display()))
                })?;
            }
            let sqlite = SqliteStore::connect(&url).await?;
            sqlite.migrate().await?;
            Arc::new(sqlite)
        } else {
            return Err(StartupError::Settings(
                "DATABASE_URL must start with sqlite://, postgres:// or postgresql://".into(),
            ));
        };
    let mut due = None;
    let (queue, queue_is_local): (Arc<dyn QueueStore>, bool) = match &settings.redis_url {
        Some(redis_url) => {
            let store = RedisQueueStore::connect(
                redis_url,
                settings.redis_cluster,
                &settings.redis_key_prefix,
                settings.retention_ms().max(60_000),
            )
            .await?;
            let first_node = redis_url
                .split(',')
                .next()
                .unwrap_or(redis_url)
                .trim()
                .to_owned();
            due = Some((store.due_channel(), first_node));
            (Arc::new(store), false)
        }
        None => (Arc::new(MemoryQueueStore::new()), true),
    };
    // Store operations are timed where they cross a process boundary or
    // touch a disk; the in-memory queue store answers in microseconds.
    let (queue, durable) = if settings.metrics_enabled {
        let durable_name = if url.starts_with("sqlite:") {
            "sqlite"
        } else {
            "postgres"
        };
        let queue = if queue_is_local {
            queue
        } else {
            InstrumentedQueueStore::wrap(queue, "redis")
        };
        (queue, InstrumentedDurableStore::wrap(durable, durable_name))
    } else {
        (queue, durable)
    };
    Ok(Stores {
        queue,
        durable,
        durable_is_local: url.starts_with("sqlite:"),
        queue_is_local,
        due,
    })
}

/// A pub/sub channel of due pools, a Redis node to listen on, and the
/// signal to mark them in.
type DueListener = (RedisDueChannel, String, Arc<PoolSignal>);

/// Starts the due-pool listener, stopping with `stop`.
fn spawn_due_listener(
    listener: Option<DueListener>,
    stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    listener.map(|(channel, url, signal)| tokio::spawn(channel.listen(url, signal, stop)))
}

/// A built application, listening, not yet serving.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    worker: Option<Worker>,
    due_listener: Option<DueListener>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    rate_limits: Arc<RateLimits>,
    ratings: RatingService,
}

/// Everything `serve` and `worker` share: stores and services, wired.
struct Core {
    auth: Arc<JwtAuth>,
    stores: Stores,
    ratings: RatingService,
    breaker: Arc<CircuitBreaker>,
    signal: Arc<PoolSignal>,
    queue: Arc<QueueService>,
    challenges: Arc<ChallengeService>,
    matching: Arc<MatchingService>,
    guards: Arc<Guards>,
}

impl Core {
    async fn build(settings: &Settings) -> Result<Self, StartupError> {
        settings.validate().map_err(StartupError::Settings)?;
        let auth = Arc::new(JwtAuth::from_settings(settings)?);
        if auth.dev_mode() {
            tracing::warn!(
                secret_file = %settings.data_dir.join(DEV_SECRET_FILE).display(),
                "DEV MODE: JWTs are signed with a generated secret kept in DATA_DIR. \
                 Set JWT_SECRET or JWT_PUBLIC_KEY_PEM in production."
            );
        }
        let stores = open_stores(settings).await?;
        let signal = Arc::new(PoolSignal::new());
        // The embedded SQLite file has no other writer: its ratings are kept
        // in memory. A shared database is mirrored (`serve` keeps it fresh).
        let ratings = if stores.durable_is_local {
            RatingService::preloaded(stores.durable.clone()).await?
        } else {
            RatingService::mirrored(stores.durable.clone())
        };
        let breaker = Arc::new(CircuitBreaker::new(
            settings.circuit_breaker_failures,
            (settings.circuit_breaker_cooldown_seconds * 1000.0) as i64,
        ));
        let creator: Arc<dyn GameCreator> = match &settings.live_game_api_url {
            Some(url) => {
                let client = LiveGameClient::new(
                    url,
                    Duration::from_secs_f64(settings.live_game_api_timeout_seconds),
                    settings.live_game_api_token.clone(),
                    settings.live_game_api_max_retries,
                    Duration::from_secs_f64(settings.live_game_api_retry_budget_seconds),
                )
                .map_err(StartupError::Settings)?;
                tracing::info!(url = %url, "games are created by live-game-api");
                Arc::new(client)
            }
            None => Arc::new(LocalGameCreator),
        };
        let games: Arc<dyn GameCreator> =
            Arc::new(GuardedGameCreator::new(creator, breaker.clone()));
        let guards = Guards::new(
            stores.queue.clone(),
            stores.durable.clone(),
            settings.guard_ms(),
        );
        // Each service is given the parts of the queue store it uses.
        let challenges = Arc::new(ChallengeService::new(
            stores.durable.clone(),
            (stores.queue.clone(), stores.queue.clone()),
            games.clone(),
            ratings.clone(),
            guards.clone(),
            ChallengeLimits {
                enabled: settings.challenges_enabled,
                ttl_ms: settings.challenge_ttl_ms(),
                max_pending_outgoing: settings.max_pending_challenges,
                guard_ms: settings.guard_ms(),
                accepting_timeout_ms: settings.reservation_ms(),
            },
        ));
        let backlog = Arc::new(Backlog::new(Duration::from_secs_f64(
            settings.pool_busy_pass_seconds.max(0.0),
        )));
        let matching = Arc::new(MatchingService::new(
            stores.queue.clone(),
            stores.queue.clone(),
            stores.durable.clone(),
            games,
            breaker.clone(),
            settings.pool_policy(),
            MatchingLimits {
                pairs_per_batch: settings.match_pairs_per_batch,
                reservation_ms: settings.reservation_ms(),
                guard_ms: settings.guard_ms(),
                presence_ms: settings.presence_ms(),
            },
            backlog.clone(),
        ));
        // A fresh in-memory queue store, or a Redis that lost its data,
        // admits nobody until its guards are rebuilt from the durable
        // store: do it now rather than on the first join. If the durable
        // store cannot be read yet, the first join (or worker tick) will.
        if let Err(e) = guards.ensure_intact(Duration::from_secs(60)).await {
            tracing::warn!(error = %e, "rebuilding the active-game guards failed; joins retry it");
        }
        let queue = Arc::new(QueueService {
            store: stores.queue.clone(),
            stats: stores.queue.clone(),
            durable: stores.durable.clone(),
            ratings: ratings.clone(),
            tenants: TenantConfig {
                default_region: settings.default_region,
                ..TenantConfig::default()
            },
            policy: settings.pool_policy(),
            signal: signal.clone(),
            breaker: breaker.clone(),
            announcer: stores
                .due
                .as_ref()
                .map(|(channel, _)| Arc::new(channel.clone()) as Arc<dyn DueAnnouncer>),
            guards: guards.clone(),
            backlog,
            estimates: Default::default(),
            limits: QueueLimits {
                guard_ms: settings.guard_ms(),
                idempotency_ms: settings.idempotency_ms(),
                metadata_max_bytes: settings.client_metadata_max_bytes,
            },
        });
        Ok(Self {
            auth,
            stores,
            ratings,
            breaker,
            signal,
            queue,
            challenges,
            matching,
            guards,
        })
    }

    /// What the HTTP handlers reach.
    fn app_state(&self, settings: &Settings) -> AppState {
        AppState::new(Services {
            metrics: settings.metrics_enabled.then(observe::install),
            rate_limits: Arc::new(RateLimits::new(
                settings.rate_limit_per_ip,
                settings.rate_limit_per_user,
            )),
            in_flight: crate::http::shed::InFlight::new(settings.max_in_flight_requests),
            queue: self.queue.clone(),
            challenges: self.challenges.clone(),
            ratings: self.ratings.clone(),
            auth: self.auth.clone(),
            queue_store: self.stores.queue.clone(),
            durable: self.stores.durable.clone(),
            breaker: self.breaker.clone(),
            callback_token: settings
                .live_game_api_callback_token
                .as_deref()
                .map(Arc::from),
        })
    }

    /// The listener that marks pools announced by other processes due.
    fn due_listener(&self) -> Option<DueListener> {
        self.stores
            .due
            .as_ref()
            .map(|(channel, url)| (channel.clone(), url.clone(), self.signal.clone()))
    }

    fn worker(&self, settings: &Settings) -> Worker {
        Worker::new(
            (self.stores.queue.clone(), self.stores.durable.clone()),
            self.matching.clone(),
            self.challenges.clone(),
            self.guards.clone(),
            self.signal.clone(),
            WorkerSettings {
                interval: settings.worker_interval(),
                concurrency: settings.worker_batch_size,
                lease_ttl: Duration::from_secs_f64(settings.pool_lease_seconds),
                retention_ms: settings.retention_ms(),
                guard_ms: settings.guard_ms(),
            },
        )
    }
}

impl Application {
    /// Builds everything and binds the listener (port 0 picks a free port).
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let core = Core::build(&settings).await?;
        let worker = settings.worker_enabled.then(|| core.worker(&settings));
        let due_listener = if settings.worker_enabled {
            core.due_listener()
        } else {
            None
        };
        let state = core.app_state(&settings);
        let (metrics, rate_limits) = (state.metrics.clone(), state.rate_limits.clone());
        let ratings = core.ratings.clone();
        let router = http::router(state, settings.max_body_bytes);
        let listener = bind(&settings).await?;
        Ok(Self {
            listener,
            router,
            worker,
            due_listener,
            metrics,
            rate_limits,
            ratings,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// Serves until `shutdown` completes; then stops accepting, finishes
    /// in-flight requests and the worker's current pass.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        tracing::info!(addr = %self.local_addr(), "listening");
        let due = spawn_due_listener(self.due_listener, stop_rx.clone());
        let mirror = tokio::spawn(self.ratings.keep_fresh(stop_rx.clone()));
        let worker = self.worker.map(|w| tokio::spawn(w.run(stop_rx)));
        let upkeep = self.metrics.map(observe::spawn_upkeep);
        let housekeeping = self.rate_limits.spawn_housekeeping();
        let stop = stop_tx.clone();
        let served = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: draining requests");
            let _ = stop.send(true);
        })
        .await;
        let _ = stop_tx.send(true);
        if let Some(worker) = worker {
            let _ = worker.await;
        }
        if let Some(due) = due {
            let _ = due.await;
        }
        if let Some(upkeep) = upkeep {
            upkeep.abort();
        }
        housekeeping.abort();
        let _ = mirror.await;
        tracing::info!("stopped");
        served
    }
}

async fn bind(settings: &Settings) -> Result<TcpListener, StartupError> {
    TcpListener::bind(settings.bind_addr)
        .await
        .map_err(|source| StartupError::Bind {
            addr: settings.bind_addr,
            source,
        })
}

/// Runs the matching worker alone (the `worker` subcommand) until
/// `shutdown`, then finishes its passes. It needs a shared queue store. It
/// serves the operations endpoints (`/healthz`, `/readyz`, `/metrics`) on
/// BIND_ADDR, so its matching series can be scraped.
pub async fn run_worker(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    if settings.redis_url.is_none() {
        return Err(StartupError::Settings(
            "the worker subcommand needs REDIS_URL: with the in-memory queue store the worker runs inside `serve`".into(),
        ));
    }
    let core = Core::build(&settings).await?;
    let state = core.app_state(&settings);
    let upkeep = state.metrics.clone().map(observe::spawn_upkeep);
    let listener = bind(&settings).await?;
    tracing::info!(addr = %listener.local_addr().map_err(|source| StartupError::Bind { addr: settings.bind_addr, source })?, "listening");
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut ops_stop = stop_rx.clone();
    let ops = tokio::spawn(
        axum::serve(listener, http::ops_router(state))
            .with_graceful_shutdown(async move {
                let _ = ops_stop.wait_for(|stop| *stop).await;
            })
            .into_future(),
    );
    let due = spawn_due_listener(core.due_listener(), stop_rx.clone());
    let worker = tokio::spawn(core.worker(&settings).run(stop_rx));
    shutdown.await;
    tracing::info!("shutting down: finishing the current passes");
    let _ = stop_tx.send(true);
    let _ = worker.await;
    let _ = ops.await;
    if let Some(upkeep) = upkeep {
        upkeep.abort();
    }
    if let Some(due) = due {
        let _ = due.await;
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
