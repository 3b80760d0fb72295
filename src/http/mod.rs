//! The HTTP layer (axum): routes, extractors, the error shape and the
//! request-id middleware. Handlers parse requests into domain values and
//! call the services; they hold no logic of their own.

mod challenges;
pub mod error;
pub mod extract;
mod health;
mod internal;
mod queue;
pub mod rate_limit;
pub mod request_id;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::catch_panic::CatchPanicLayer;

use crate::auth::JwtAuth;
use crate::services::breaker::CircuitBreaker;
use crate::services::challenges::ChallengeService;
use crate::services::queue::QueueService;
use crate::services::ratings::RatingService;
use crate::store::{DurableStore, QueueStore};
use error::ApiError;

/// What every handler can reach: cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub queue: Arc<QueueService>,
    pub challenges: Arc<ChallengeService>,
    pub ratings: RatingService,
    pub auth: Arc<JwtAuth>,
    pub queue_store: Arc<dyn QueueStore>,
    pub durable: Arc<dyn DurableStore>,
    pub breaker: Arc<CircuitBreaker>,
    /// The token live-game-api presents on its "game finished" callback.
    pub callback_token: Option<Arc<str>>,
    /// The Prometheus recorder; `None` when metrics are off.
    pub metrics: Option<PrometheusHandle>,
    pub rate_limits: Arc<rate_limit::RateLimits>,
}

/// The whole API.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let measured = state.metrics.is_some();
    let router = Router::new()
        .route("/v1/matchmaking/queue", post(queue::join))
        .route(
            "/v1/matchmaking/queue/{queue_entry_id}",
            get(queue::status).delete(queue::cancel),
        )
        .route("/v1/matchmaking/active", get(queue::active))
        .route("/v1/matchmaking/challenges", post(challenges::create))
        .route(
            "/v1/matchmaking/challenges/incoming",
            get(challenges::incoming),
        )
        .route(
            "/v1/matchmaking/challenges/outgoing",
            get(challenges::outgoing),
        )
        .route(
            "/v1/matchmaking/challenges/{challenge_id}",
            get(challenges::get).merge(delete(challenges::cancel)),
        )
        .route(
            "/v1/matchmaking/challenges/{challenge_id}/accept",
            post(challenges::accept),
        )
        .route(
            "/v1/matchmaking/challenges/{challenge_id}/decline",
            post(challenges::decline),
        )
        .route("/internal/queues/summary", get(internal::queues_summary))
        .route(
            "/internal/ratings/{tenant_id}/{user_id}",
            put(internal::put_ratings).get(internal::get_ratings),
        )
        .route(
            "/internal/games/{game_id}/finished",
            post(internal::game_finished),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(|| async { ApiError::NotFound("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                use axum::response::IntoResponse;
                ApiError::Internal("handler panicked".into()).into_response()
            },
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            rate_limit::per_ip,
        ))
        .layer(axum::middleware::from_fn(request_id::middleware));
    let router = if measured {
        router.layer(axum::middleware::from_fn(crate::observe::http_middleware))
    } else {
        router
    };
    router.with_state(state)
}
