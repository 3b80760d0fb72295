//! Who may meet whom: a player's blocks and fair-play restrictions, set by
//! the platform's services (the `service` role) or an admin.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;

use super::AppState;
use super::error::ServiceError;
use super::extract::{Ids, Platform, optional_object, optional_str};
use super::openapi::{self, Block, Blocks, Restriction};
use crate::domain::{ParseError, TenantId, UserId};

/// The longest reason a restriction keeps.
const REASON_MAX_CHARS: usize = 200;

fn player(tenant: &str, user: &str) -> Result<(TenantId, UserId), ServiceError> {
    Ok((TenantId::parse(tenant)?, UserId::parse(user)?))
}

fn block_ids(
    (tenant, user, blocked): (String, String, String),
) -> Result<(TenantId, UserId, UserId), ServiceError> {
    let (tenant, user) = player(&tenant, &user)?;
    let blocked =
        UserId::parse(&blocked).map_err(|e| ParseError::new("blocked_user_id", e.reason))?;
    Ok((tenant, user, blocked))
}

async fn set_block(
    state: &AppState,
    who: &crate::auth::Identity,
    ids: (String, String, String),
    on: bool,
) -> Result<Json<Block>, ServiceError> {
    let (tenant, user, blocked) = block_ids(ids)?;
    let changed = state
        .relations
        .set_block(who.user_id.as_str(), &tenant, (&user, &blocked), on)
        .await?;
    Ok(Json(Block {
        tenant_id: tenant,
        user_id: user,
        blocked_user_id: blocked,
        blocked: on,
        changed,
    }))
}

/// PUT /internal/blocks/{tenant_id}/{user_id}/{blocked_user_id}
#[utoipa::path(
    put,
    path = "/internal/blocks/{tenant_id}/{user_id}/{blocked_user_id}",
    tag = "admin",
    summary = "A player blocks another: the two are never paired, whoever blocked whom",
    params(
        ("tenant_id" = String, Path, description = "The players' tenant."),
        ("user_id" = String, Path, description = "The player who blocks."),
        ("blocked_user_id" = String, Path, description = "The player blocked."),
    ),
    responses(
        (status = 200, description = "Blocked (`changed`: it was not before)", body = Block),
        (status = 400, description = "INVALID_REQUEST: a bad id, or a player blocking themself", body = openapi::ErrorBody),
        (status = 403, description = "FORBIDDEN: the token has neither the admin nor the service role", body = openapi::ErrorBody),
        (status = 409, description = "INVALID_STATE: the player blocks 1000 players already", body = openapi::ErrorBody),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn put_block(
    State(state): State<AppState>,
    Platform(who): Platform,
    Ids(ids): Ids<(String, String, String)>,
) -> Result<Json<Block>, ServiceError> {
    set_block(&state, &who, ids, true).await
}

/// DELETE /internal/blocks/{tenant_id}/{user_id}/{blocked_user_id}
#[utoipa::path(
    delete,
    path = "/internal/blocks/{tenant_id}/{user_id}/{blocked_user_id}",
    tag = "admin",
    summary = "Lift a block (a block the other player holds still stands)",
    params(
        ("tenant_id" = String, Path, description = "The players' tenant."),
        ("user_id" = String, Path, description = "The player who blocked."),
        ("blocked_user_id" = String, Path, description = "The player blocked."),
    ),
    responses(
        (status = 200, description = "Not blocked (`changed`: it was before)", body = Block),
        (status = 400, description = "INVALID_REQUEST: a bad id", body = openapi::ErrorBody),
        (status = 403, description = "FORBIDDEN: the token has neither the admin nor the service role", body = openapi::ErrorBody),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn delete_block(
    State(state): State<AppState>,
    Platform(who): Platform,
    Ids(ids): Ids<(String, String, String)>,
) -> Result<Json<Block>, ServiceError> {
    set_block(&state, &who, ids, false).await
}

/// GET /internal/blocks/{tenant_id}/{user_id}
#[utoipa::path(
    get,
    path = "/internal/blocks/{tenant_id}/{user_id}",
    tag = "admin",
    summary = "The players a player blocks",
    params(
        ("tenant_id" = String, Path, description = "The player's tenant."),
        ("user_id" = String, Path, description = "The player."),
    ),
    responses(
        (status = 200, description = "Oldest block first", body = Blocks),
        (status = 400, description = "INVALID_REQUEST: a bad id", body = openapi::ErrorBody),
        (status = 403, description = "FORBIDDEN: the token has neither the admin nor the service role", body = openapi::ErrorBody),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn get_blocks(
    State(state): State<AppState>,
    Platform(_): Platform,
    Ids((tenant, user)): Ids<(String, String)>,
) -> Result<Json<Blocks>, ServiceError> {
    let (tenant, user) = player(&tenant, &user)?;
    let blocked_user_ids = state.relations.blocks(&tenant, &user).await?;
    Ok(Json(Blocks {
        tenant_id: tenant,
        user_id: user,
        blocked_user_ids,
    }))
}

/// PUT /internal/restricted/{tenant_id}/{user_id}
#[utoipa::path(
    put,
    path = "/internal/restricted/{tenant_id}/{user_id}",
    tag = "admin",
    summary = "Restrict a player for fair play: from the next pass on every node (within seconds), they are paired only with other restricted players",
    params(
        ("tenant_id" = String, Path, description = "The player's tenant."),
        ("user_id" = String, Path, description = "The player."),
    ),
    request_body = Option<openapi::RestrictionRequest>,
    responses(
        (status = 200, description = "Restricted (`changed`: they were not before)", body = Restriction),
        (status = 400, description = "INVALID_REQUEST: a bad id or reason", body = openapi::ErrorBody),
        (status = 403, description = "FORBIDDEN: the token has neither the admin nor the service role", body = openapi::ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = openapi::ErrorBody),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn put_restricted(
    State(state): State<AppState>,
    Platform(who): Platform,
    Ids((tenant, user)): Ids<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Restriction>, ServiceError> {
    let (tenant, user) = player(&tenant, &user)?;
    let body = optional_object(body)?;
    if let Some(field) = body.keys().find(|k| *k != "reason") {
        return Err(ServiceError::InvalidRequest(format!(
            "{field} is not a field of a restriction (allowed: reason)"
        )));
    }
    let reason = optional_str(&body, "reason")?;
    if reason.is_some_and(|r| r.chars().count() > REASON_MAX_CHARS) {
        return Err(ParseError::new("reason", "must be at most 200 characters").into());
    }
    let was = state
        .relations
        .set_restricted(
            who.user_id.as_str(),
            &tenant,
            &user,
            Some(reason.map(str::to_owned)),
        )
        .await?;
    Ok(Json(Restriction {
        tenant_id: tenant,
        user_id: user,
        restricted: true,
        changed: !was,
    }))
}

/// DELETE /internal/restricted/{tenant_id}/{user_id}
#[utoipa::path(
    delete,
    path = "/internal/restricted/{tenant_id}/{user_id}",
    tag = "admin",
    summary = "Lift a player's fair-play restriction",
    params(
        ("tenant_id" = String, Path, description = "The player's tenant."),
        ("user_id" = String, Path, description = "The player."),
    ),
    responses(
        (status = 200, description = "Not restricted (`changed`: they were before)", body = Restriction),
        (status = 400, description = "INVALID_REQUEST: a bad id", body = openapi::ErrorBody),
        (status = 403, description = "FORBIDDEN: the token has neither the admin nor the service role", body = openapi::ErrorBody),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn delete_restricted(
    State(state): State<AppState>,
    Platform(who): Platform,
    Ids((tenant, user)): Ids<(String, String)>,
) -> Result<Json<Restriction>, ServiceError> {
    let (tenant, user) = player(&tenant, &user)?;
    let was = state
        .relations
        .set_restricted(who.user_id.as_str(), &tenant, &user, None)
        .await?;
    Ok(Json(Restriction {
        tenant_id: tenant,
        user_id: user,
        restricted: false,
        changed: was,
    }))
}

/// GET /internal/restricted/{tenant_id}/{user_id}
#[utoipa::path(
    get,
    path = "/internal/restricted/{tenant_id}/{user_id}",
    tag = "admin",
    summary = "Whether a player is restricted for fair play",
    params(
        ("tenant_id" = String, Path, description = "The player's tenant."),
        ("user_id" = String, Path, description = "The player."),
    ),
    responses(
        (status = 200, description = "As this node holds it", body = Restriction),
        (status = 400, description = "INVALID_REQUEST: a bad id", body = openapi::ErrorBody),
        (status = 403, description = "FORBIDDEN: the token has neither the admin nor the service role", body = openapi::ErrorBody),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn get_restricted(
    State(state): State<AppState>,
    Platform(_): Platform,
    Ids((tenant, user)): Ids<(String, String)>,
) -> Result<Json<Restriction>, ServiceError> {
    let (tenant, user) = player(&tenant, &user)?;
    let restricted = state.relations.is_restricted(&tenant, &user);
    Ok(Json(Restriction {
        tenant_id: tenant,
        user_id: user,
        restricted,
        changed: false,
    }))
}
