//! Liveness and readiness (SPEC §3.4); no token needed.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::error::ApiError;

/// GET /healthz: the process answers.
pub async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// GET /readyz: both stores answer; 503 naming the one that does not. The
/// breaker's state is shown, not judged: with game creation down the node
/// still answers joins (with a clear 503) better than a load balancer would.
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
