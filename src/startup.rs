//! The one place that wires everything: settings → stores → services →
//! router and worker; and owns shutdown (the server drains, the worker
//! finishes its pass).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::auth::{DEV_SECRET_FILE, JwtAuth, KeyError};
use crate::domain::{Clock, Flags, SystemClock, TenantConfig};
use crate::http::rate_limit::RateLimits;
use crate::http::{self, AppState, Services};
use crate::observe;
use crate::runs_on::RunsOn;
use crate::services::backlog::Backlog;
use crate::services::breaker::CircuitBreaker;
use crate::services::challenges::{ChallengeLimits, ChallengeService};
use crate::services::events::{EventStreams, StreamLimits};
use crate::services::games::{GameCreator, GuardedGameCreator, LocalGameCreator};
use crate::services::guards::Guards;
use crate::services::live::{LiveConfig, LiveDefaults};
use crate::services::live_game::LiveGameClient;
use crate::services::matching::{MatchingLimits, MatchingService};
use crate::services::queue::{EstimateCache, QueueLimits, QueueService};
use crate::services::rating_api::{RatingApi, RatingApiConfig};
use crate::services::ratings::RatingService;
use crate::services::relations::RelationService;
use crate::services::signal::{DueAnnouncer, PoolSignal};
use crate::settings::Settings;
use crate::shutdown::{Shutdown, Stop};
use crate::store::StoreError;
use crate::store::backend::{self, OpenError, Stores};
use crate::store::redis::Subscription;
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

impl From<OpenError> for StartupError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Settings(m) => StartupError::Settings(m),
            OpenError::Store(e) => StartupError::Store(e),
        }
    }
}

/// Opens (and migrates) the stores the settings name (see
/// [`crate::store::backend`]).
pub async fn open_stores(settings: &Settings) -> Result<Stores, StartupError> {
    Ok(backend::open_stores(settings).await?)
}

/// The node's Redis subscription, and the worker's signal to mark due
/// pools in (when the process runs a worker).
type DueListener = (Subscription, Option<Arc<PoolSignal>>);

/// Starts the node's Redis subscription, if any, under `shutdown`.
fn spawn_due_listener(listener: Option<DueListener>, shutdown: &Shutdown) {
    if let Some((subscription, signal)) = listener {
        shutdown.spawn(|stop: Stop| subscription.run(signal, stop));
    }
}

/// A built application, listening, not yet serving.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    limits: http::server::ServerLimits,
    worker: Option<Worker>,
    due_listener: Option<DueListener>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    rate_limits: Arc<RateLimits>,
    ratings: RatingService,
    runs_on: Arc<RunsOn>,
    events: Arc<EventStreams>,
    live: Arc<LiveConfig>,
}

/// Everything `serve` and `worker` share: stores and services, wired.
struct Core {
    auth: Arc<JwtAuth>,
    stores: Stores,
    ratings: RatingService,
    breaker: Arc<CircuitBreaker>,
    signal: Arc<PoolSignal>,
    queue: Arc<QueueService>,
    /// The event streams of this node's clients.
    events: Arc<EventStreams>,
    /// Policies, tenant configuration and flags set at run time.
    live: Arc<LiveConfig>,
    challenges: Arc<ChallengeService>,
    matching: Arc<MatchingService>,
    guards: Arc<Guards>,
    clock: Arc<dyn Clock>,
    runs_on: Arc<RunsOn>,
}

impl Core {
    async fn build(settings: &Settings, clock: Arc<dyn Clock>) -> Result<Self, StartupError> {
        settings.validate().map_err(StartupError::Settings)?;
        ensure_data_dir(settings)?;
        let auth = Arc::new(JwtAuth::from_settings(settings)?);
        auth.load_keys().await?;
        if auth.dev_mode() {
            tracing::warn!(
                secret_file = %std::path::absolute(settings.data_dir.join(DEV_SECRET_FILE))
                    .unwrap_or_else(|_| settings.data_dir.join(DEV_SECRET_FILE))
                    .display(),
                "DEV MODE: JWTs are signed with a generated secret kept in DATA_DIR. \
                 Set JWT_SECRET or JWT_PUBLIC_KEY_PEM in production."
            );
        }
        let stores = open_stores(settings).await?;
        let runs_on = Arc::new(RunsOn::new(settings, &stores.backends));
        let signal = Arc::new(PoolSignal::new());
        // The embedded SQLite file has no other writer: its ratings are kept
        // in memory. A shared database is mirrored (`serve` keeps it fresh).
        let ratings = if stores.backends.durable.is_local() {
            RatingService::preloaded(stores.durable.clone()).await?
        } else {
            RatingService::mirrored(stores.durable.clone())
        };
        let ratings = match &settings.rating_api_url {
            Some(url) => {
                let api = RatingApi::new(RatingApiConfig {
                    url: url.clone(),
                    token: settings.rating_api_token.clone(),
                    timeout: Duration::from_secs_f64(settings.rating_api_timeout_seconds),
                    max_concurrency: settings.rating_api_max_concurrency as usize,
                    ttl_ms: settings.rating_cache_ttl_ms(),
                    max_entries: settings.rating_cache_max_entries,
                    breaker_failures: settings.circuit_breaker_failures,
                    breaker_cooldown_ms: settings.circuit_breaker_cooldown_ms(),
                })
                .map_err(StartupError::Settings)?
                .with_clock(clock.clone());
                ratings.with_api(Arc::new(api))
            }
            None => ratings,
        };
        let breaker = Arc::new(CircuitBreaker::new(
            settings.circuit_breaker_failures,
            settings.circuit_breaker_cooldown_ms(),
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
                Arc::new(client)
            }
            None => Arc::new(LocalGameCreator),
        };
        let games: Arc<dyn GameCreator> = Arc::new(GuardedGameCreator::new(
            creator,
            breaker.clone(),
            clock.clone(),
        ));
        let guards = Guards::new(
            stores.queue.clone(),
            stores.durable.clone(),
            settings.guard_ms(),
            clock.clone(),
        );
        // Policies, tenant configuration and flags set at run time, over
        // the settings' defaults; announced to (and by) the other
        // processes on Redis.
        let mut live = LiveConfig::new(
            LiveDefaults {
                policy: settings.pool_policy(),
                tenant: TenantConfig {
                    default_region: settings.default_region,
                    ..TenantConfig::default()
                },
                flags: Flags {
                    challenges: settings.challenges_enabled,
                    matcher_experiment: None,
                },
            },
            stores.durable.clone(),
        )
        .with_clock(clock.clone());
        if let Some((channel, subscription)) = &stores.due {
            live =
                live.with_announcements(Arc::new(channel.clone()), subscription.config_changed());
        }
        let live = Arc::new(live);
        if let Err(e) = live.load().await {
            tracing::warn!(error = %e, "reading the run-time configuration failed; the settings' apply until it can be read");
        }
        // Each service is given the parts of the queue store it uses.
        let challenges = Arc::new(
            ChallengeService::new(
                stores.durable.clone(),
                (stores.queue.clone(), stores.queue.clone()),
                games.clone(),
                ratings.clone(),
                (guards.clone(), live.clone()),
                ChallengeLimits {
                    ttl_ms: settings.challenge_ttl_ms(),
                    max_pending_outgoing: settings.max_pending_challenges,
                    guard_ms: settings.guard_ms(),
                    accepting_timeout_ms: settings.reservation_ms(),
                },
            )
            .with_clock(clock.clone()),
        );
        let backlog = Arc::new(Backlog::new(Duration::from_secs_f64(
            settings.pool_busy_pass_seconds.max(0.0),
        )));
        // What joins tell players they will wait, and what the worker
        // checks their real waits against.
        let estimates = Arc::new(EstimateCache::default());
        let matching = Arc::new(
            MatchingService::new(
                (stores.queue.clone(), stores.queue.clone()),
                stores.durable.clone(),
                games,
                breaker.clone(),
                live.clone(),
                MatchingLimits {
                    pairs_per_batch: settings.match_pairs_per_batch,
                    reservation_ms: settings.reservation_ms(),
                    guard_ms: settings.guard_ms(),
                    presence_ms: settings.presence_ms(),
                },
                backlog.clone(),
            )
            .with_clock(clock.clone())
            .with_hold(settings.hold())
            .with_estimates(estimates.clone()),
        );
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
            live: live.clone(),
            signal: signal.clone(),
            breaker: breaker.clone(),
            announcer: stores
                .due
                .as_ref()
                .map(|(channel, _)| Arc::new(channel.clone()) as Arc<dyn DueAnnouncer>),
            guards: guards.clone(),
            backlog,
            estimates,
            limits: QueueLimits {
                guard_ms: settings.guard_ms(),
                idempotency_ms: settings.idempotency_ms(),
                metadata_max_bytes: settings.client_metadata_max_bytes,
                no_show_cooldown_ms: settings.no_show_cooldown_ms(),
            },
            clock: clock.clone(),
        });
        let events = EventStreams::new(
            queue.clone(),
            stores.queue.clone(),
            live.clone(),
            StreamLimits {
                per_user: settings.event_streams_per_user,
                per_node: settings.event_streams_per_node,
                touch_every: StreamLimits::touch_every(settings.presence_ms()),
                recheck: Duration::from_secs(60),
                keep_alive: settings.event_stream_keep_alive(),
            },
            clock.clone(),
        );
        Ok(Self {
            auth,
            stores,
            ratings,
            breaker,
            signal,
            events,
            live,
            queue,
            challenges,
            matching,
            guards,
            clock,
            runs_on,
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
            events: self.events.clone(),
            live: self.live.clone(),
            challenges: self.challenges.clone(),
            ratings: self.ratings.clone(),
            relations: Arc::new(RelationService::new(
                self.stores.durable.clone(),
                self.live.clone(),
                self.clock.clone(),
            )),
            matching: self.matching.clone(),
            auth: self.auth.clone(),
            queue_store: self.stores.queue.clone(),
            durable: self.stores.durable.clone(),
            breaker: self.breaker.clone(),
            callback_token: settings
                .live_game_api_callback_token
                .as_deref()
                .map(Arc::from),
            runs_on: self.runs_on.clone(),
        })
    }

    /// The node's subscription: entries changed on any node wake this
    /// node's event streams, and with `worker`, pools announced by other
    /// processes are marked due.
    fn due_listener(&self, worker: bool) -> Option<DueListener> {
        self.stores
            .due
            .as_ref()
            .map(|(_, subscription)| (subscription.clone(), worker.then(|| self.signal.clone())))
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
                clock: self.clock.clone(),
            },
        )
    }
}

impl Application {
    /// Builds everything and binds the listener (port 0 picks a free port).
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// As [`Self::build`], every service reading the time from `clock`.
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartupError> {
        let edge = http::edge::Edge::from_settings(&settings).map_err(StartupError::Settings)?;
        let core = Core::build(&settings, clock).await?;
        let worker = settings.worker_enabled.then(|| core.worker(&settings));
        let due_listener = core.due_listener(settings.worker_enabled);
        let state = core.app_state(&settings);
        let (metrics, rate_limits) = (state.metrics.clone(), state.rate_limits.clone());
        let ratings = core.ratings.clone();
        let runs_on = core.runs_on.clone();
        let events = core.events.clone();
        let live = core.live.clone();
        let router = http::router(state, edge);
        let listener = bind(&settings).await?;
        let limits =
            http::server::ServerLimits::from_settings(&settings, http::server::raise_fd_limit());
        Ok(Self {
            listener,
            router,
            limits,
            worker,
            due_listener,
            metrics,
            rate_limits,
            ratings,
            runs_on,
            events,
            live,
        })
    }

    /// The application's router, for driving it without a socket (the
    /// fuzz targets).
    pub fn router(&self) -> axum::Router {
        self.router.clone()
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
        let addr = self.local_addr();
        say_listening(
            addr,
            &self.runs_on,
            &format!("http://{}/docs", reachable(addr)),
            if self.worker.is_some() {
                "embedded"
            } else {
                "off"
            },
        );
        let tasks = Shutdown::new();
        spawn_due_listener(self.due_listener, &tasks);
        tasks.spawn(|stop| self.ratings.keep_fresh(stop));
        if let Some(worker) = self.worker {
            tasks.spawn(|stop| worker.run(stop));
        }
        if let Some(handle) = self.metrics {
            tasks.spawn(|stop| observe::upkeep(handle, stop));
        }
        tasks.spawn(|stop| self.rate_limits.housekeeping(stop));
        tasks.spawn(|stop| self.events.clone().keep_present(stop));
        tasks.spawn(|stop| self.live.clone().keep_fresh(stop));
        let begin = tasks.trigger();
        let events = self.events;
        let served = http::server::serve(self.listener, self.router, self.limits, async move {
            shutdown.await;
            tracing::info!("shutting down: draining requests, ending event streams");
            events.close_all();
            begin();
        })
        .await;
        tasks.finish().await;
        tracing::info!("stopped");
        served
    }
}

/// The one start-up line: where the process listens and what it runs on.
fn say_listening(addr: SocketAddr, on: &RunsOn, docs: &str, worker: &str) {
    tracing::info!(
        %addr,
        docs,
        queue_store = %on.queue_store,
        durable_store = %on.durable_store,
        game_creator = %on.game_creator,
        ratings = %on.ratings,
        worker,
        "listening"
    );
}

/// An address a browser on this host reaches: the loopback when the
/// server listens on every interface.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

/// Creates DATA_DIR when something lives there (the SQLite file, the dev
/// secret) and it does not exist yet, saying so: a mistyped directory is
/// then seen at once (with a new dev secret, older tokens stop working).
fn ensure_data_dir(settings: &Settings) -> Result<(), StartupError> {
    let used = settings.database_url.is_none() || JwtAuth::uses_dev_secret(settings);
    let dir = &settings.data_dir;
    if !used || dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| StartupError::Settings(format!("DATA_DIR {}: {e}", dir.display())))?;
    tracing::warn!(
        data_dir = %std::path::absolute(dir).unwrap_or_else(|_| dir.clone()).display(),
        "DATA_DIR did not exist: created it (a new SQLite file, and in dev mode a new dev secret)"
    );
    Ok(())
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
    let core = Core::build(&settings, Arc::new(SystemClock)).await?;
    let state = core.app_state(&settings);
    let listener = bind(&settings).await?;
    let addr = listener.local_addr().map_err(|source| StartupError::Bind {
        addr: settings.bind_addr,
        source,
    })?;
    say_listening(
        addr,
        &core.runs_on,
        "none: /healthz, /readyz and /metrics only",
        "this process",
    );
    let tasks = Shutdown::new();
    if let Some(handle) = state.metrics.clone() {
        tasks.spawn(|stop| observe::upkeep(handle, stop));
    }
    let limits =
        http::server::ServerLimits::from_settings(&settings, http::server::raise_fd_limit());
    tasks.spawn(|mut stop| async move {
        let served = http::server::serve(listener, http::ops_router(state), limits, async move {
            crate::shutdown::begun(&mut stop).await
        })
        .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the operations endpoints stopped");
        }
    });
    spawn_due_listener(core.due_listener(true), &tasks);
    tasks.spawn(|stop| core.live.clone().keep_fresh(stop));
    let worker = core.worker(&settings);
    tasks.spawn(|stop| worker.run(stop));
    shutdown.await;
    tracing::info!("shutting down: finishing the current passes");
    tasks.finish().await;
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
