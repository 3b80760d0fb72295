//! Liveness and readiness (SPEC §3.4); no token needed.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::openapi;

/// GET /healthz: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Liveness: the process answers",
    responses(
        (status = 200, description = "Alive", body = openapi::Health),
    ),
)]
pub async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// GET /readyz: both stores answer; 503 naming the one that does not. The
/// breaker's state is shown, not judged: with game creation down the node
/// still answers joins (with a clear 503) better than a load balancer would.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "Readiness: both stores answer",
    responses(
        (status = 200, description = "Ready", body = openapi::Readiness),
        (status = 503, description = "MATCHMAKING_UNAVAILABLE: a store does not answer", body = openapi::ErrorBody),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (queue, durable) = tokio::join!(state.queue_store.ping(), state.durable.ping());
    if let Err(e) = queue {
        return Err(ApiError::Unavailable(format!("queue store: {e}")));
    }
    if let Err(e) = durable {
        return Err(ApiError::Unavailable(format!("durable store: {e}")));
    }
    let game_creation = state.breaker.state(crate::domain::now_millis()).as_str();
    Ok(axum::Json(json!({
        "status": "ready",
        "checks": { "queue_store": "ok", "durable_store": "ok", "game_creation": game_creation },
    }))
    .into_response())
}

/// GET /metrics: Prometheus text exposition; 404 when metrics are off.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain"),
        (status = 404, description = "NOT_FOUND: metrics are turned off (METRICS_ENABLED=false)", body = openapi::ErrorBody),
    ),
)]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let handle = state.metrics.as_ref().ok_or(ApiError::NotFound(
        "metrics are turned off (METRICS_ENABLED=false)",
    ))?;
    let now = crate::domain::now_millis();
    crate::observe::breaker("game_creation", state.breaker.state(now));
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response())
}

/// The OpenAPI document, rendered once when the router is built.
#[derive(Clone)]
pub struct OpenApiDocument(pub std::sync::Arc<str>);

/// GET /openapi.json: this API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    summary = "This document",
    responses(
        (status = 200, description = "OpenAPI 3.1", body = Object, content_type = "application/json"),
    ),
)]
pub async fn openapi_json(
    axum::Extension(OpenApiDocument(document)): axum::Extension<OpenApiDocument>,
) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        document.to_string(),
    )
        .into_response()
}
