//! Public queue endpoints (SPEC §3.1).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::error::ServiceError;
use super::extract::{ApiJson, Caller, object, optional_str, required_str};
use super::openapi;
use super::request_id;
use crate::auth::Identity;
use crate::domain::{
    ActiveGame, EntryStatus, Opponent, PoolKey, QueueEntry, QueueEntryId, rfc3339,
};
use crate::services::queue::{EntryView, Join};
use crate::store::{IdempotencyScope, StoredAnswer};

const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The opponent as shown to a player, with the rating snapshot of the pool.
fn opponent_json(opponent: &Opponent, pool: &PoolKey) -> Value {
    json!({
        "user_id": opponent.user_id,
        "username": opponent.username,
        "rating_snapshot": {
            "time_control": pool.time_control,
            "mode": pool.mode,
            "rating": opponent.rating,
        },
    })
}

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// POST /v1/matchmaking/queue
#[utoipa::path(
    post,
    path = "/v1/matchmaking/queue",
    tag = "queue",
    summary = "Join the queue",
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key answer the first answer (status and body), per user, for IDEMPOTENCY_TTL_SECONDS.")),
    request_body = openapi::JoinRequest,
    responses(
        (status = 201, description = "Searching (the same parameters again while searching answer the existing entry)", body = openapi::JoinResponse),
        (status = 400, description = "INVALID_REQUEST: names the bad field and the allowed values", body = openapi::ErrorBody),
        (status = 401, description = "UNAUTHORIZED: missing or invalid bearer token", body = openapi::ErrorBody),
        (status = 409, description = "ALREADY_IN_QUEUE (searching with other parameters) or ACTIVE_GAME_EXISTS", body = openapi::ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = openapi::ErrorBody),
        (status = 429, description = "RATE_LIMITED: see Retry-After", body = openapi::ErrorBody),
        (status = 503, description = "MATCHMAKING_UNAVAILABLE: a store is down, or game creation is down and matching paused (Retry-After)", body = openapi::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn join(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    body: Result<ApiJson<Value>, ServiceError>,
) -> Result<Response, ServiceError> {
    let Some(key) = headers.get(IDEMPOTENCY_HEADER) else {
        return join_once(&state, &who, body)
            .await
            .map(|(s, b)| json_response(s, b));
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()))
        .ok_or_else(|| {
            ServiceError::InvalidRequest(
                "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
            )
        })?;
    let scope = IdempotencyScope {
        tenant_id: who.tenant_id.clone(),
        user_id: who.user_id.clone(),
        key: key.to_owned(),
    };
    if let Some(first) = state.queue.idempotent_answer(&scope).await? {
        return Ok(replay(first));
    }
    let (status, body) = match join_once(&state, &who, body).await {
        Ok(answer) => answer,
        // A dependency outage is not an answer worth repeating.
        Err(e @ (ServiceError::Unavailable(_) | ServiceError::Internal(_))) => return Err(e),
        Err(e) => (e.status(), e.body()),
    };
    let kept = state
        .queue
        .keep_answer(
            &scope,
            StoredAnswer {
                status: status.as_u16(),
                body,
            },
        )
        .await?;
    Ok(replay(kept))
}

fn replay(answer: StoredAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, answer.body)
}

async fn join_once(
    state: &AppState,
    who: &Identity,
    body: Result<ApiJson<Value>, ServiceError>,
) -> Result<(StatusCode, String), ServiceError> {
    let ApiJson(body) = body?;
    let body = object(body)?;
    let pool = state.queue.tenant_config().pool_key(
        required_str(&body, "time_control")?,
        required_str(&body, "mode")?,
        optional_str(&body, "variant")?,
        optional_str(&body, "region")?,
    )?;
    let client_metadata = body
        .get("client_metadata")
        .filter(|v| !v.is_null())
        .cloned();
    let request_id = Some(request_id::current()).filter(|r| !r.is_empty());
    let joined = state
        .queue
        .join(
            who,
            Join {
                pool,
                client_metadata,
                request_id,
            },
        )
        .await?;
    let body = json!({
        "queue_entry_id": joined.entry.id,
        "status": joined.entry.status.public(),
        "estimated_wait_seconds": joined.estimated_wait_seconds,
    });
    Ok((StatusCode::CREATED, body.to_string()))
}

/// A path id that is not a queue entry id is simply not found.
fn entry_id(raw: &str) -> Result<QueueEntryId, ServiceError> {
    QueueEntryId::parse(raw).map_err(|_| ServiceError::NotFound(crate::services::queue::NO_ENTRY))
}

/// DELETE /v1/matchmaking/queue/{queue_entry_id}
#[utoipa::path(
    delete,
    path = "/v1/matchmaking/queue/{queue_entry_id}",
    tag = "queue",
    summary = "Leave the queue",
    params(("queue_entry_id" = String, Path, description = "The entry id (`q_…`).")),
    responses(
        (status = 200, description = "Cancelled", body = openapi::Cancelled),
        (status = 401, description = "UNAUTHORIZED: missing or invalid bearer token", body = openapi::ErrorBody),
        (status = 404, description = "NOT_FOUND: unknown, not yours, or already timed out or cancelled", body = openapi::ErrorBody),
        (status = 409, description = "CANNOT_CANCEL: matched, or its game is being created", body = openapi::ErrorBody),
        (status = 429, description = "RATE_LIMITED: see Retry-After", body = openapi::ErrorBody),
        (status = 503, description = "MATCHMAKING_UNAVAILABLE: a store is down, or game creation is down and matching paused (Retry-After)", body = openapi::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn cancel(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Response, ServiceError> {
    let entry = state.queue.cancel(&who, &entry_id(&id)?).await?;
    Ok(
        axum::Json(json!({ "queue_entry_id": entry.id, "status": entry.status.public() }))
            .into_response(),
    )
}

/// GET /v1/matchmaking/queue/{queue_entry_id}
#[utoipa::path(
    get,
    path = "/v1/matchmaking/queue/{queue_entry_id}",
    tag = "queue",
    summary = "An entry's status (also the client's heartbeat)",
    params(("queue_entry_id" = String, Path, description = "The entry id (`q_…`).")),
    responses(
        (status = 200, description = "The entry: SEARCHING (with an estimate), MATCHED (with the game and opponent), TIMED_OUT or CANCELLED", body = openapi::EntryStatus),
        (status = 401, description = "UNAUTHORIZED: missing or invalid bearer token", body = openapi::ErrorBody),
        (status = 404, description = "NOT_FOUND: unknown, malformed, or not yours", body = openapi::ErrorBody),
        (status = 429, description = "RATE_LIMITED: see Retry-After", body = openapi::ErrorBody),
        (status = 503, description = "MATCHMAKING_UNAVAILABLE: a store is down, or game creation is down and matching paused (Retry-After)", body = openapi::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn status(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Response, ServiceError> {
    let view = state.queue.status(&who, &entry_id(&id)?).await?;
    Ok(axum::Json(status_json(&view)).into_response())
}

fn status_json(view: &EntryView) -> Value {
    let mut body = json!({
        "queue_entry_id": view.id,
        "status": view.status.public(),
    });
    if let Some(wait) = view.estimated_wait_seconds {
        body["estimated_wait_seconds"] = json!(wait);
    }
    if view.status == EntryStatus::Matched {
        body["game_id"] = json!(view.game_id);
        if let Some(o) = &view.opponent {
            body["opponent"] = opponent_json(o, &view.pool);
        }
    }
    body
}

/// GET /v1/matchmaking/active
#[utoipa::path(
    get,
    path = "/v1/matchmaking/active",
    tag = "queue",
    summary = "The caller's searching entry and unfinished match",
    responses(
        (status = 200, description = "Both null when the caller has nothing active", body = openapi::Active),
        (status = 401, description = "UNAUTHORIZED: missing or invalid bearer token", body = openapi::ErrorBody),
        (status = 429, description = "RATE_LIMITED: see Retry-After", body = openapi::ErrorBody),
        (status = 503, description = "MATCHMAKING_UNAVAILABLE: a store is down, or game creation is down and matching paused (Retry-After)", body = openapi::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn active(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> Result<Response, ServiceError> {
    let active = state.queue.active(&who).await?;
    Ok(axum::Json(json!({
        "queue_entry": active.entry.as_ref().map(entry_json),
        "match": active.game.as_ref().map(game_json),
    }))
    .into_response())
}

fn entry_json(e: &QueueEntry) -> Value {
    json!({
        "queue_entry_id": e.id,
        "status": e.status.public(),
        "time_control": e.pool.time_control,
        "mode": e.pool.mode,
        "variant": e.pool.variant,
        "region": e.pool.region,
        "enqueued_at": rfc3339(e.enqueued_at),
    })
}

fn game_json(g: &ActiveGame) -> Value {
    json!({
        "game_id": g.game_id,
        "time_control": g.pool.time_control,
        "mode": g.pool.mode,
        "variant": g.pool.variant,
        "color": g.color,
        "opponent": opponent_json(&g.opponent, &g.pool),
    })
}
