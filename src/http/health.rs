//! Liveness and readiness (SPEC §3.4); no token needed.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ServiceError;
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
pub async fn healthz() -> Json<openapi::Health> {
    Json(openapi::Health { status: "ok" })
}

/// GET /health: the seed's liveness route, answered like `/healthz`.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    summary = "Liveness under the route of the Python service this one replaces: the same as /healthz",
    responses(
        (status = 200, description = "Alive", body = openapi::Health),
    ),
)]
pub async fn health() -> Json<openapi::Health> {
    healthz().await
}

/// GET /readyz: both stores answer, the durable store takes writes, and
/// the queue store's active-game guards are intact (not being rebuilt
/// after a loss); 503 naming each check that fails and why. The breaker's
/// state is shown, not judged: with game creation down the node still
/// answers joins (with a clear 503) better than a load balancer would.
/// `backends` names what the node runs on, each with its state.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "Readiness: both stores answer and the durable store takes writes; what the node runs on",
    responses(
        (status = 200, description = "Ready", body = openapi::Readiness),
        (status = 503, description = "MATCHMAKING_UNAVAILABLE: a check failed; `checks` says which and why", body = openapi::NotReady),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let (queue, durable, guards) = tokio::join!(
        state.queue_store.ping(),
        state.durable.ping(),
        state.queue_store.guards_intact()
    );
    let queue_store = match (queue, guards) {
        (Err(e), _) | (Ok(()), Err(e)) => Err(format!("unreachable: {e}")),
        (Ok(()), Ok(false)) => {
            Err("active-game guards are being rebuilt from the durable store".into())
        }
        (Ok(()), Ok(true)) => Ok(()),
    };
    let durable_store = match (durable, state.durable.write_failure()) {
        (Err(e), _) => Err(format!("unreachable: {e}")),
        (Ok(()), Some(f)) => Err(format!(
            "cannot write since {}: {}",
            crate::domain::rfc3339(f.since),
            f.reason
        )),
        (Ok(()), None) => Ok(()),
    };
    let game_creation = state.breaker.state(crate::domain::now_millis()).as_str();
    let show = |r: &Result<(), String>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.clone(),
    };
    let checks = openapi::ReadinessChecks {
        queue_store: show(&queue_store),
        durable_store: show(&durable_store),
        game_creation,
    };
    let store_state = |r: &Result<(), String>| if r.is_ok() { "ok" } else { "unavailable" };
    let on = &state.runs_on;
    let backends = openapi::ReadinessBackends {
        queue_store: openapi::BackendState {
            kind: on.queue_store.kind,
            state: store_state(&queue_store),
        },
        durable_store: openapi::BackendState {
            kind: on.durable_store.kind,
            state: store_state(&durable_store),
        },
        game_creator: openapi::BackendState {
            kind: on.game_creator.kind,
            state: game_creation,
        },
        ratings: openapi::BackendState {
            kind: on.ratings.kind,
            state: state.ratings.api().map_or("ok", |api| {
                api.breaker().state(crate::domain::now_millis()).as_str()
            }),
        },
    };
    let failed: Vec<String> = [
        ("queue store", &queue_store),
        ("durable store", &durable_store),
    ]
    .into_iter()
    .filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name}: {e}")))
    .collect();
    if failed.is_empty() {
        return Json(openapi::Readiness {
            status: "ready",
            checks,
            backends,
        })
        .into_response();
    }
    tracing::warn!(?checks, "not ready");
    let body = openapi::NotReady {
        error: openapi::ErrorDetail {
            code: "MATCHMAKING_UNAVAILABLE".into(),
            message: failed.join("; "),
            request_id: super::request_id::current(),
        },
        status: "unavailable",
        checks,
        backends,
    };
    (axum::http::StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
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
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ServiceError> {
    let handle = state.metrics.as_ref().ok_or(ServiceError::NotFound(
        "metrics are turned off (METRICS_ENABLED=false)",
    ))?;
    let now = crate::domain::now_millis();
    crate::observe::breaker("game_creation", state.breaker.state(now));
    if let Some(api) = state.ratings.api() {
        crate::observe::breaker("rating_api", api.breaker().state(now));
    }
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
