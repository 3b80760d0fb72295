//! The HTTP layer (axum): routes, extractors, the error shape and the
//! request-id middleware. Handlers parse requests into domain values and
//! call the services; they hold no logic of their own.

mod challenges;
mod dashboard;
pub mod edge;
pub mod error;
mod events;
pub mod extract;
mod health;
mod internal;
pub mod openapi;
mod policies;
mod queue;
pub mod rate_limit;
mod relations;
pub mod request_id;
pub mod server;
pub mod shed;
mod tenants;
pub mod trace_context;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::{Extension, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::auth::JwtAuth;
use crate::services::breaker::CircuitBreaker;
use crate::services::challenges::ChallengeService;
use crate::services::queue::QueueService;
use crate::services::ratings::RatingService;
use crate::store::{DurableStore, QueueStore};
use error::ServiceError;

/// The operations routes load balancers, probes and scrapers call: never
/// shed, rate-limited or refused for their `Host`.
const OPERATIONS_PATHS: &[&str] = &["/healthz", "/health", "/readyz", "/metrics"];

/// What every handler can reach: one pointer, cheap to clone (every
/// extractor and middleware clones it per request).
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services and stores behind [`AppState`].
pub struct Services {
    pub queue: Arc<QueueService>,
    /// Event streams of queue entries (match-found push).
    pub events: Arc<crate::services::events::EventStreams>,
    /// Matching policies set at run time (the admin API changes them).
    pub live: Arc<crate::services::live::LiveConfig>,
    pub challenges: Arc<ChallengeService>,
    pub ratings: RatingService,
    /// Blocks and fair-play restrictions.
    pub relations: Arc<crate::services::relations::RelationService>,
    /// This node's matching service (the explain reads its last passes).
    pub matching: Arc<crate::services::matching::MatchingService>,
    pub auth: Arc<JwtAuth>,
    pub queue_store: Arc<dyn QueueStore>,
    pub durable: Arc<dyn DurableStore>,
    pub breaker: Arc<CircuitBreaker>,
    /// The token live-game-api presents on its "game finished" callback.
    pub callback_token: Option<Arc<str>>,
    /// The Prometheus recorder; `None` when metrics are off.
    pub metrics: Option<PrometheusHandle>,
    pub rate_limits: Arc<rate_limit::RateLimits>,
    /// Requests in flight on this node, against `MAX_IN_FLIGHT_REQUESTS`.
    pub in_flight: shed::InFlight,
    /// What this node runs on (`/readyz` names the kinds).
    pub runs_on: Arc<crate::runs_on::RunsOn>,
}

/// The whole API. Every route is registered from its documented handler,
/// so `/openapi.json` lists exactly what is served; `/docs` renders it with
/// Swagger UI, whose assets are inside the binary.
pub fn router(state: AppState, edge: edge::Edge) -> Router {
    let (router, api) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(queue::join))
        .routes(routes!(queue::status, queue::cancel))
        .routes(routes!(queue::active))
        .routes(routes!(events::events))
        .routes(routes!(events::heartbeat))
        .routes(routes!(challenges::create))
        .routes(routes!(challenges::incoming))
        .routes(routes!(challenges::outgoing))
        .routes(routes!(challenges::get, challenges::cancel))
        .routes(routes!(challenges::accept))
        .routes(routes!(challenges::decline))
        .routes(routes!(internal::queues_summary))
        .routes(routes!(internal::audit))
        .routes(routes!(
            policies::get_tenant,
            policies::put_tenant,
            policies::delete_tenant
        ))
        .routes(routes!(
            policies::get_pool,
            policies::put_pool,
            policies::delete_pool
        ))
        .routes(routes!(
            tenants::get_config,
            tenants::put_config,
            tenants::delete_config
        ))
        .routes(routes!(
            tenants::get_flags,
            tenants::put_flags,
            tenants::delete_flags
        ))
        .routes(routes!(internal::get_ratings, internal::put_ratings))
        .routes(routes!(internal::game_finished))
        .routes(routes!(internal::game_aborted))
        .routes(routes!(internal::explain))
        .routes(routes!(relations::put_block, relations::delete_block))
        .routes(routes!(relations::get_blocks))
        .routes(routes!(
            relations::get_restricted,
            relations::put_restricted,
            relations::delete_restricted
        ))
        .routes(routes!(health::healthz))
        .routes(routes!(health::health))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(health::openapi_json))
        .split_for_parts();
    let mut document = serde_json::to_value(&api).expect("the OpenAPI document serializes");
    openapi::strict(&mut document, state.live.default_tenant_config());
    let document: Arc<str> = serde_json::to_string_pretty(&document)
        .expect("the OpenAPI document serializes")
        .into();
    let router = router
        .merge(SwaggerUi::new("/docs").config(Config::new(["/openapi.json"])))
        .merge(dashboard::routes())
        .layer(Extension(health::OpenApiDocument(document)))
        .fallback(|| async { ServiceError::NotFound("no such route") })
        .method_not_allowed_fallback(|| async { ServiceError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(edge.max_body_bytes))
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                use axum::response::IntoResponse;
                ServiceError::Internal("handler panicked".into()).into_response()
            },
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            rate_limit::per_ip,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            shed::middleware,
        ));
    let router = match edge.allowed_hosts {
        Some(hosts) => router.layer(axum::middleware::from_fn_with_state(
            hosts,
            edge::check_host,
        )),
        None => router,
    };
    let router = router.layer(axum::middleware::from_fn_with_state(
        edge.request_timeout,
        edge::deadline,
    ));
    let router = match edge.cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    let router = router.layer(axum::middleware::from_fn(request_id::middleware));
    measured(router, state)
}

/// The operations endpoints alone (`/healthz`, `/health`, `/readyz`,
/// `/metrics`), for
/// the `worker` subcommand.
pub fn ops_router(state: AppState) -> Router {
    let router = Router::new()
        .route("/healthz", axum::routing::get(health::healthz))
        .route("/health", axum::routing::get(health::health))
        .route("/readyz", axum::routing::get(health::readyz))
        .route("/metrics", axum::routing::get(health::metrics))
        .fallback(|| async { ServiceError::NotFound("no such route") })
        .layer(axum::middleware::from_fn(request_id::middleware));
    measured(router, state)
}

/// The router with HTTP metrics around everything (when metrics are on),
/// given its state.
fn measured(router: Router<AppState>, state: AppState) -> Router {
    let router = if state.metrics.is_some() {
        router.layer(axum::middleware::from_fn(crate::observe::http_middleware))
    } else {
        router
    };
    router.with_state(state)
}
