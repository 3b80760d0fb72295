//! Public queue endpoints (SPEC §3.1).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::AppState;
use super::error::ServiceError;
use super::extract::{ApiJson, Caller, Ids, object, optional_str, required_str};
use super::openapi;
use super::request_id;
use crate::auth::Identity;
use crate::domain::{
    ActiveGame, EndReason, EntryStatus, MAX_POOLS_PER_JOIN, ParseError, PoolKey, QueueEntry,
    QueueEntryId, RatingRange, TimeControl, rfc3339,
};
use crate::services::queue::{EntryView, Join, KeyTaken};
use crate::store::{IdempotencyScope, StoredAnswer};

const IDEMPOTENCY_HEADER: &str = "idempotency-key";

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
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters. Retries with the same key and body answer the first answer (status and body, with `Idempotent-Replayed: true`), per user, for IDEMPOTENCY_TTL_SECONDS; only 201 and 409 answers are kept.")),
    request_body = openapi::JoinRequest,
    responses(
        (status = 201, description = "Searching (the same parameters again while searching answer the existing entry)", body = openapi::JoinResponse),
        (status = 400, description = "INVALID_REQUEST: names the bad field and the allowed values", body = openapi::ErrorBody),
        (status = 409, description = "ALREADY_IN_QUEUE (searching with other parameters), ACTIVE_GAME_EXISTS, COOLDOWN (the player did not show up for their last game: Retry-After says when they may join), or IDEMPOTENCY_IN_PROGRESS (the first request with this Idempotency-Key still runs)", body = openapi::ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = openapi::ErrorBody),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED: the Idempotency-Key came first with another body", body = openapi::ErrorBody),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn join(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    body: Result<ApiJson<Value>, ServiceError>,
) -> Result<Response, ServiceError> {
    let key = idempotency_key(&headers)?;
    // A request that cannot be read is refused before it touches its key.
    let ApiJson(body) = body?;
    let Some(key) = key else {
        return join_once(&state, &who, body)
            .await
            .map(|(s, b)| json_response(s, b));
    };
    let scope = IdempotencyScope {
        tenant_id: who.tenant_id.clone(),
        user_id: who.user_id.clone(),
        key: key.to_owned(),
    };
    let claim = match state
        .queue
        .take_key(scope, &fingerprint("POST /v1/matchmaking/queue", &body))
        .await?
    {
        KeyTaken::Answered(first) => return Ok(replay(first)),
        KeyTaken::Run(claim) => claim,
    };
    let (status, body) = match join_once(&state, &who, body).await {
        Ok(answer) => answer,
        // A refusal for the player's state is the answer; one for the
        // request (400) or for the moment (503) is not kept, and dropping
        // the claim frees the key for the retry.
        Err(e) if e.status() == StatusCode::CONFLICT => (e.status(), e.body()),
        Err(e) => return Err(e),
    };
    if let Err(e) = claim.keep(status.as_u16(), body.clone()).await {
        // The join happened: its answer is still the client's. A retry
        // finds the key in flight until its lease ends, then joins again,
        // which answers the same entry.
        tracing::warn!(error = %e, "an idempotent answer could not be kept");
    }
    Ok(json_response(status, body))
}

/// The request's `Idempotency-Key`, if it has one.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ServiceError> {
    let Some(key) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    key.to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()))
        .map(Some)
        .ok_or_else(|| {
            ServiceError::InvalidRequest(
                "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
            )
        })
}

/// What an `Idempotency-Key` is bound to: a digest of the operation and its
/// body as parsed, so spacing and key order do not make another request.
pub fn fingerprint(operation: &str, body: &Value) -> String {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    digest.update(operation.as_bytes());
    digest.update([0]);
    // serde_json's maps are ordered by key: one body, one text.
    digest.update(body.to_string().as_bytes());
    digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The first answer again, marked as a replay; an error's `request_id` is
/// this request's, like the `X-Request-Id` header.
fn replay(answer: StoredAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = answer.body;
    if let Ok(mut value) = serde_json::from_str::<Value>(&body)
        && let Some(id) = value.pointer_mut("/error/request_id")
    {
        *id = Value::String(request_id::current());
        body = value.to_string();
    }
    let mut response = json_response(status, body);
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

async fn join_once(
    state: &AppState,
    who: &Identity,
    body: Value,
) -> Result<(StatusCode, String), ServiceError> {
    let body = object(body)?;
    let tenant = state.queue.tenant_config(&who.tenant_id);
    let pool_of = |time_control: &str| {
        tenant.pool_key(
            time_control,
            required_str(&body, "mode")?,
            optional_str(&body, "variant")?,
            optional_str(&body, "region")?,
        )
    };
    let (pool, also) = match body.get("time_controls") {
        None => (pool_of(required_str(&body, "time_control")?)?, Vec::new()),
        Some(_) if body.contains_key("time_control") => {
            return Err(ParseError::new(
                "time_controls",
                "give time_control or time_controls, not both",
            )
            .into());
        }
        Some(list) => several_pools(list, pool_of)?,
    };
    let client_metadata = body
        .get("client_metadata")
        .filter(|v| !v.is_null())
        .cloned();
    let rating_range = rating_range(body.get("rating_range"))?;
    let request_id = Some(request_id::current()).filter(|r| !r.is_empty());
    let joined = state
        .queue
        .join(
            who,
            Join {
                pool,
                client_metadata,
                request_id,
                rating_range,
                also,
            },
        )
        .await?;
    let body = openapi::JoinResponse {
        queue_entry_id: joined.entry.id,
        status: joined.entry.status.public(),
        estimated_wait_seconds: joined.estimated_wait_seconds,
        estimated_wait_p80_seconds: joined.estimated_wait_p80_seconds,
    };
    let body = serde_json::to_string(&body)
        .map_err(|e| ServiceError::Internal(format!("serializing an answer: {e}")))?;
    Ok((StatusCode::CREATED, body))
}

/// The `time_controls` of a join: 1 to [`MAX_POOLS_PER_JOIN`] distinct
/// time controls of one speed, each one the tenant allows. Answers the
/// pool of the first (where the entry lives) and the others, sorted.
fn several_pools(
    list: &Value,
    pool_of: impl Fn(&str) -> Result<PoolKey, ParseError>,
) -> Result<(PoolKey, Vec<TimeControl>), ParseError> {
    let field = "time_controls";
    let items = list
        .as_array()
        .filter(|items| (1..=MAX_POOLS_PER_JOIN).contains(&items.len()))
        .ok_or_else(|| {
            ParseError::new(
                field,
                format!("must be a list of 1 to {MAX_POOLS_PER_JOIN} time controls"),
            )
        })?;
    let mut pools = Vec::with_capacity(items.len());
    for item in items {
        let tc = item
            .as_str()
            .ok_or_else(|| ParseError::new(field, "each must be a time control such as \"3+0\""))?;
        // A bad time control is named as this field; a bad mode, variant
        // or region as its own.
        let pool = pool_of(tc).map_err(|e| match e.field {
            "time_control" => ParseError::new(field, e.reason),
            _ => e,
        })?;
        pools.push(pool);
    }
    let home = pools[0];
    let speed = home.time_control.speed();
    if pools.iter().any(|p| p.time_control.speed() != speed) {
        return Err(ParseError::new(
            field,
            format!(
                "must all be of one speed ({} here: {speed})",
                home.time_control
            ),
        ));
    }
    let mut also: Vec<TimeControl> = pools[1..].iter().map(|p| p.time_control).collect();
    also.sort();
    let count = also.len();
    also.dedup();
    if also.len() != count || also.contains(&home.time_control) {
        return Err(ParseError::new(field, "must not repeat a time control"));
    }
    Ok((home, also))
}

/// The optional `rating_range` of a join: `{"min_delta", "max_delta"}`,
/// both integers, each refusal naming its field.
fn rating_range(value: Option<&Value>) -> Result<Option<RatingRange>, ParseError> {
    let object = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(object)) => object,
        Some(_) => {
            return Err(ParseError::new(
                "rating_range",
                "must be an object {\"min_delta\": <= 0, \"max_delta\": >= 0}",
            ));
        }
    };
    if let Some(field) = object
        .keys()
        .find(|k| !["min_delta", "max_delta"].contains(&k.as_str()))
    {
        return Err(ParseError::new(
            "rating_range",
            format!("has no field {field} (it has min_delta and max_delta)"),
        ));
    }
    let delta = |field: &'static str, name: &str| {
        object
            .get(name)
            .ok_or_else(|| ParseError::new(field, "is required"))?
            .as_i64()
            .ok_or_else(|| ParseError::new(field, "must be an integer"))
    };
    RatingRange::new(
        delta("rating_range.min_delta", "min_delta")?,
        delta("rating_range.max_delta", "max_delta")?,
    )
    .map(Some)
}

/// A path id that is not a queue entry id is simply not found.
pub(super) fn entry_id(raw: &str) -> Result<QueueEntryId, ServiceError> {
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
        (status = 404, description = "NOT_FOUND: unknown, not yours, or already timed out or cancelled", body = openapi::ErrorBody),
        (status = 409, description = "CANNOT_CANCEL: matched, or its game is being created", body = openapi::ErrorBody),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn cancel(
    State(state): State<AppState>,
    Caller(who): Caller,
    Ids(id): Ids<String>,
) -> Result<Json<openapi::Cancelled>, ServiceError> {
    let entry = state.queue.cancel(&who, &entry_id(&id)?).await?;
    Ok(Json(openapi::Cancelled {
        queue_entry_id: entry.id,
        status: entry.status.public(),
    }))
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
        (status = 404, description = "NOT_FOUND: unknown, malformed, or not yours", body = openapi::ErrorBody),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn status(
    State(state): State<AppState>,
    Caller(who): Caller,
    Ids(id): Ids<String>,
) -> Result<Json<openapi::EntryStatus>, ServiceError> {
    let view = state.queue.status(&who, &entry_id(&id)?).await?;
    Ok(Json(status_answer(&view)))
}

/// The status answer (also the data of each event of the event stream).
pub(super) fn status_answer(view: &EntryView) -> openapi::EntryStatus {
    let matched = view.status == EntryStatus::Matched;
    openapi::EntryStatus {
        matched_at: matched.then(|| rfc3339(view.updated_at)),
        reason: view.reason.map(EndReason::as_str),
        queue_entry_id: view.id,
        status: view.status.public(),
        estimated_wait_seconds: view.estimated_wait_seconds,
        estimated_wait_p80_seconds: view.estimated_wait_p80_seconds,
        game_id: view.game_id.clone().filter(|_| matched),
        opponent: view
            .opponent
            .as_ref()
            .filter(|_| matched)
            .map(|o| openapi::Opponent::shown(o, &view.pool)),
        rating_range: view.rating_range,
        time_control: matched.then(|| {
            view.opponent
                .as_ref()
                .and_then(|o| o.time_control)
                .unwrap_or(view.pool.time_control)
        }),
    }
}

/// GET /v1/matchmaking/active
#[utoipa::path(
    get,
    path = "/v1/matchmaking/active",
    tag = "queue",
    summary = "The caller's searching entry and unfinished match",
    responses(
        (status = 200, description = "Both null when the caller has nothing active", body = openapi::Active),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn active(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> Result<Json<openapi::Active>, ServiceError> {
    let active = state.queue.active(&who).await?;
    Ok(Json(openapi::Active {
        queue_entry: active.entry.as_ref().map(entry_answer),
        game: active.game.as_ref().map(game_answer),
    }))
}

fn entry_answer(e: &QueueEntry) -> openapi::ActiveEntry {
    openapi::ActiveEntry {
        queue_entry_id: e.id,
        status: e.status.public(),
        time_control: e.pool.time_control,
        mode: e.pool.mode,
        variant: e.pool.variant,
        region: e.pool.region,
        enqueued_at: rfc3339(e.enqueued_at),
    }
}

fn game_answer(g: &ActiveGame) -> openapi::ActiveMatch {
    openapi::ActiveMatch {
        game_id: g.game_id.clone(),
        time_control: g.pool.time_control,
        mode: g.pool.mode,
        variant: g.pool.variant,
        color: g.color,
        opponent: openapi::Opponent::shown(&g.opponent, &g.pool),
    }
}
