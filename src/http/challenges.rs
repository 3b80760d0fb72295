//! Direct challenge endpoints (SPEC §3.2).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;

use super::AppState;
use super::error::ServiceError;
use super::extract::{ApiJson, Caller, Ids, object, optional_str, required_str};
use super::openapi;
use super::request_id;
use crate::auth::Identity;
use crate::domain::{ChallengeId, ChallengeStatus};
use crate::services::challenges::NewChallenge;
use crate::store::Direction;

/// A path id that is not a challenge id is simply not found.
fn challenge_id(raw: &str) -> Result<ChallengeId, ServiceError> {
    ChallengeId::parse(raw)
        .map_err(|_| ServiceError::NotFound(crate::services::challenges::NO_CHALLENGE))
}

/// POST /v1/matchmaking/challenges
#[utoipa::path(
    post,
    path = "/v1/matchmaking/challenges",
    tag = "challenges",
    summary = "Challenge a player of your tenant",
    request_body = openapi::ChallengeRequest,
    responses(
        (status = 201, description = "Pending until accepted, declined, cancelled or expired", body = openapi::Challenge),
        (status = 400, description = "INVALID_REQUEST: names the bad field and the allowed values", body = openapi::ErrorBody),
        (status = 404, description = "NOT_FOUND: challenges are turned off (CHALLENGES_DISABLED)", body = openapi::ErrorBody),
        (status = 409, description = "TOO_MANY_CHALLENGES: too many pending outgoing challenges", body = openapi::ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = openapi::ErrorBody),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    Caller(who): Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<openapi::Challenge>), ServiceError> {
    let body = object(body)?;
    let new = NewChallenge::parse(
        &state.queue.tenant_config(&who.tenant_id),
        required_str(&body, "opponent_user_id")?,
        required_str(&body, "time_control")?,
        required_str(&body, "mode")?,
        optional_str(&body, "variant")?,
        optional_str(&body, "preferred_color")?,
    )?;
    let challenge = state.challenges.create(&who, new).await?;
    Ok((
        StatusCode::CREATED,
        Json(openapi::Challenge::from(&challenge)),
    ))
}

/// GET /v1/matchmaking/challenges/{id}
#[utoipa::path(
    get,
    path = "/v1/matchmaking/challenges/{challenge_id}",
    tag = "challenges",
    summary = "One challenge, to either party",
    params(("challenge_id" = String, Path, description = "The challenge id (`c_…`).")),
    responses(
        (status = 200, description = "The challenge", body = openapi::Challenge),
        (status = 404, description = "NOT_FOUND: unknown, or the caller is neither party", body = openapi::ErrorBody),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    Caller(who): Caller,
    Ids(id): Ids<String>,
) -> Result<Json<openapi::Challenge>, ServiceError> {
    let c = state.challenges.get(&who, &challenge_id(&id)?).await?;
    Ok(Json(openapi::Challenge::from(&c)))
}

/// POST /v1/matchmaking/challenges/{id}/accept
#[utoipa::path(
    post,
    path = "/v1/matchmaking/challenges/{challenge_id}/accept",
    tag = "challenges",
    summary = "Accept (the opponent): the game is created",
    params(("challenge_id" = String, Path, description = "The challenge id (`c_…`).")),
    responses(
        (status = 200, description = "ACCEPTED, with the game id", body = openapi::Challenge),
        (status = 404, description = "NOT_FOUND: unknown, or the caller is neither party", body = openapi::ErrorBody),
        (status = 409, description = "INVALID_STATE (no longer pending) or CANNOT_ACCEPT (your own challenge, or a player is in a queue or a game)", body = openapi::ErrorBody),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn accept(
    State(state): State<AppState>,
    Caller(who): Caller,
    Ids(id): Ids<String>,
) -> Result<Json<openapi::Challenge>, ServiceError> {
    let request_id = Some(request_id::current()).filter(|r| !r.is_empty());
    let c = state
        .challenges
        .accept(&who, &challenge_id(&id)?, request_id)
        .await?;
    Ok(Json(openapi::Challenge::from(&c)))
}

/// Moves a pending challenge to `to` (declined by the opponent, cancelled
/// by the challenger).
async fn refuse(
    state: &AppState,
    who: &Identity,
    id: &str,
    to: ChallengeStatus,
) -> Result<Json<openapi::Challenge>, ServiceError> {
    let c = state.challenges.refuse(who, &challenge_id(id)?, to).await?;
    Ok(Json(openapi::Challenge::from(&c)))
}

/// POST /v1/matchmaking/challenges/{id}/decline
#[utoipa::path(
    post,
    path = "/v1/matchmaking/challenges/{challenge_id}/decline",
    tag = "challenges",
    summary = "Decline (the opponent)",
    params(("challenge_id" = String, Path, description = "The challenge id (`c_…`).")),
    responses(
        (status = 200, description = "DECLINED", body = openapi::Challenge),
        (status = 404, description = "NOT_FOUND: unknown, or the caller is neither party", body = openapi::ErrorBody),
        (status = 409, description = "INVALID_STATE: no longer pending, or not the opponent", body = openapi::ErrorBody),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn decline(
    State(state): State<AppState>,
    Caller(who): Caller,
    Ids(id): Ids<String>,
) -> Result<Json<openapi::Challenge>, ServiceError> {
    refuse(&state, &who, &id, ChallengeStatus::Declined).await
}

/// DELETE /v1/matchmaking/challenges/{id}
#[utoipa::path(
    delete,
    path = "/v1/matchmaking/challenges/{challenge_id}",
    tag = "challenges",
    summary = "Cancel (the challenger)",
    params(("challenge_id" = String, Path, description = "The challenge id (`c_…`).")),
    responses(
        (status = 200, description = "CANCELLED", body = openapi::Challenge),
        (status = 404, description = "NOT_FOUND: unknown, or the caller is neither party", body = openapi::ErrorBody),
        (status = 409, description = "INVALID_STATE: no longer pending, or not the challenger", body = openapi::ErrorBody),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn cancel(
    State(state): State<AppState>,
    Caller(who): Caller,
    Ids(id): Ids<String>,
) -> Result<Json<openapi::Challenge>, ServiceError> {
    refuse(&state, &who, &id, ChallengeStatus::Cancelled).await
}

async fn list(
    state: &AppState,
    who: &crate::auth::Identity,
    direction: Direction,
) -> Result<Json<openapi::ChallengeList>, ServiceError> {
    let pending = state.challenges.pending(who, direction).await?;
    Ok(Json(openapi::ChallengeList {
        challenges: pending.iter().map(openapi::Challenge::from).collect(),
    }))
}

/// GET /v1/matchmaking/challenges/incoming
#[utoipa::path(
    get,
    path = "/v1/matchmaking/challenges/incoming",
    tag = "challenges",
    summary = "Pending challenges the caller received",
    responses(
        (status = 200, description = "Newest first", body = openapi::ChallengeList),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn incoming(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> Result<Json<openapi::ChallengeList>, ServiceError> {
    list(&state, &who, Direction::Incoming).await
}

/// GET /v1/matchmaking/challenges/outgoing
#[utoipa::path(
    get,
    path = "/v1/matchmaking/challenges/outgoing",
    tag = "challenges",
    summary = "Pending challenges the caller sent",
    responses(
        (status = 200, description = "Newest first", body = openapi::ChallengeList),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn outgoing(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> Result<Json<openapi::ChallengeList>, ServiceError> {
    list(&state, &who, Direction::Outgoing).await
}
