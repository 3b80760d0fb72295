//! Admin endpoints (SPEC §3.3): the queue summary, ratings and the
//! game-finished report.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::AppState;
use super::error::ServiceError;
use super::extract::{
    Admin, ApiJson, Ids, Reporter, object, optional_object, optional_str, required_str,
};
use super::openapi;
use crate::domain::{GameId, ParseError, TenantId, UserId};
use crate::services::ratings::parse_update;
use crate::services::summary;
use crate::store::AuditQuery;

fn path_ids(tenant: &str, user: &str) -> Result<(TenantId, UserId), ServiceError> {
    Ok((TenantId::parse(tenant)?, UserId::parse(user)?))
}

/// GET /internal/pools/{tenant_id}/{pool_key}/entries/{queue_entry_id}/explain
#[utoipa::path(
    get,
    path = "/internal/pools/{tenant_id}/{pool_key}/entries/{queue_entry_id}/explain",
    tag = "admin",
    summary = "Why a searching entry waits: its window, who it could meet, who is kept from it and why, whom the last pass paired instead",
    params(
        ("tenant_id" = String, Path, description = "The tenant."),
        ("pool_key" = String, Path, description = "The pool (`standard_5+0_rated_GLOBAL`)."),
        ("queue_entry_id" = String, Path, description = "The searching entry."),
    ),
    responses(
        (status = 200, description = "As this node's last pass over the pool saw the entry (`source: last_pass`), or as a pass would read the pool now (`source: now`)", body = crate::services::explain::Explanation),
        (status = 400, description = "INVALID_REQUEST: names the bad parameter", body = openapi::ErrorBody),
        (status = 404, description = "NOT_FOUND: no such entry searching in the pool", body = openapi::ErrorBody),
        openapi::AdminRefusals,
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn explain(
    State(state): State<AppState>,
    Admin(_): Admin,
    Ids((tenant, pool, id)): Ids<(String, String, String)>,
) -> Result<Json<crate::services::explain::Explanation>, ServiceError> {
    let pool = crate::domain::PoolRef {
        tenant_id: TenantId::parse(&tenant)?,
        key: super::policies::pool_of(&pool)?,
    };
    let id = super::queue::entry_id(&id)?;
    state
        .matching
        .explain(&*state.queue_store, &pool, id)
        .await?
        .map(Json)
        .ok_or(ServiceError::NotFound(
            "no such entry searching in this pool",
        ))
}

/// GET /internal/ratings/{tenant_id}/{user_id}
#[utoipa::path(
    get,
    path = "/internal/ratings/{tenant_id}/{user_id}",
    tag = "admin",
    summary = "A player's ratings (1500 where never set)",
    params(("tenant_id" = String, Path, description = "The player's tenant."), ("user_id" = String, Path, description = "The player.")),
    responses(
        (status = 200, description = "Every speed", body = openapi::Ratings),
        (status = 400, description = "INVALID_REQUEST: names the bad field and the allowed values", body = openapi::ErrorBody),
        openapi::AdminRefusals,
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn get_ratings(
    State(state): State<AppState>,
    Admin(_): Admin,
    Ids((tenant, user)): Ids<(String, String)>,
) -> Result<Json<openapi::Ratings>, ServiceError> {
    let (tenant, user) = path_ids(&tenant, &user)?;
    let ratings = state.ratings.ratings(&tenant, &user).await?;
    Ok(Json(openapi::Ratings::of(&tenant, &user, ratings)))
}

/// PUT /internal/ratings/{tenant_id}/{user_id} with any subset of speeds.
#[utoipa::path(
    put,
    path = "/internal/ratings/{tenant_id}/{user_id}",
    tag = "admin",
    summary = "Set any subset of a player's ratings",
    params(("tenant_id" = String, Path, description = "The player's tenant."), ("user_id" = String, Path, description = "The player.")),
    request_body = openapi::RatingsUpdate,
    responses(
        (status = 200, description = "Every speed after the change", body = openapi::Ratings),
        (status = 400, description = "INVALID_REQUEST: names the bad field and the allowed values", body = openapi::ErrorBody),
        openapi::AdminRefusals,
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = openapi::ErrorBody),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn put_ratings(
    State(state): State<AppState>,
    Admin(who): Admin,
    Ids((tenant, user)): Ids<(String, String)>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<openapi::Ratings>, ServiceError> {
    let (tenant, user) = path_ids(&tenant, &user)?;
    let update = parse_update(&object(body)?)?;
    let ratings = state.ratings.set(&tenant, &user, &update).await?;
    tracing::info!(event = "ratings_set", tenant_id = %tenant, user_id = %user, by = %who.user_id, "ratings set");
    Ok(Json(openapi::Ratings::of(&tenant, &user, ratings)))
}

/// POST /internal/games/{game_id}/finished — releases both players.
/// The game is looked up in the body's `tenant_id`, else the admin's tenant
/// (the game service's token must name the tenant).
#[utoipa::path(
    post,
    path = "/internal/games/{game_id}/finished",
    tag = "admin",
    summary = "The game service (or an admin) reports a game over: both players are released",
    params(("game_id" = String, Path, description = "The game's id, as the players were given it (live-game-api's, or the built-in creator's).")),
    request_body = Option<openapi::GameFinishedRequest>,
    responses(
        (status = 200, description = "Finished (again: the same answer)", body = openapi::GameFinished),
        (status = 400, description = "INVALID_REQUEST: names the bad field and the allowed values", body = openapi::ErrorBody),
        openapi::AdminRefusals,
        (status = 404, description = "NOT_FOUND: no such game in that tenant", body = openapi::ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = openapi::ErrorBody),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn game_finished(
    State(state): State<AppState>,
    reporter: Reporter,
    Ids(game): Ids<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ServiceError> {
    let game = GameId::parse(&game).map_err(|_| ServiceError::NotFound("no such game"))?;
    // The body is optional: empty (or `null`) means "the caller's tenant".
    let body = optional_object(body)?;
    let tenant = reported_tenant(&body, &reporter)?;
    let released = state.queue.finish_game(&tenant, &game).await?;
    Ok(Json(openapi::GameFinished {
        game_id: game,
        status: "FINISHED",
        released_user_ids: released,
    })
    .into_response())
}

/// POST /internal/games/{game_id}/aborted — a game that never started: the
/// player who did not show up is named; the other goes back searching.
#[utoipa::path(
    post,
    path = "/internal/games/{game_id}/aborted",
    tag = "admin",
    summary = "The game service (or an admin) reports a game aborted because a player never moved: the other goes back to searching with their place kept, the absent one cools down",
    params(("game_id" = String, Path, description = "The game's id, as the players were given it.")),
    request_body = openapi::GameAbortedRequest,
    responses(
        (status = 200, description = "Aborted (again: the same answer)", body = openapi::GameAborted),
        (status = 400, description = "INVALID_REQUEST: names the bad field (a no_show_user_id not of this game)", body = openapi::ErrorBody),
        openapi::AdminRefusals,
        (status = 404, description = "NOT_FOUND: no such game in that tenant", body = openapi::ErrorBody),
        (status = 409, description = "INVALID_STATE: the game was reported finished, or aborted for the other player", body = openapi::ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = openapi::ErrorBody),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn game_aborted(
    State(state): State<AppState>,
    reporter: Reporter,
    Ids(game): Ids<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<openapi::GameAborted>, ServiceError> {
    let game = GameId::parse(&game).map_err(|_| ServiceError::NotFound("no such game"))?;
    let body = optional_object(body)?;
    let tenant = reported_tenant(&body, &reporter)?;
    let no_show = UserId::parse(required_str(&body, "no_show_user_id")?)
        .map_err(|e| ParseError::new("no_show_user_id", e.reason))?;
    let aborted = state.queue.abort_game(&tenant, &game, &no_show).await?;
    Ok(Json(openapi::GameAborted::of(aborted)))
}

/// The tenant a game report names: the body's `tenant_id`, else the
/// admin's own (the game service's token must name it).
fn reported_tenant(
    body: &Map<String, Value>,
    reporter: &Reporter,
) -> Result<TenantId, ServiceError> {
    match (optional_str(body, "tenant_id")?, reporter) {
        (Some(t), _) => Ok(TenantId::parse(t)?),
        (None, Reporter::Admin(who)) => Ok(who.tenant_id.clone()),
        (None, Reporter::GameService) => {
            Err(ParseError::new("tenant_id", "is required with the game service's token").into())
        }
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct SummaryQuery {
    /// Only this tenant's pools.
    tenant_id: Option<String>,
}

/// GET /internal/queues/summary[?tenant_id=…]
#[utoipa::path(
    get,
    path = "/internal/queues/summary",
    tag = "admin",
    summary = "Every pool at a glance",
    params(("tenant_id" = Option<String>, Query, description = "Only this tenant's pools.")),
    responses(
        (status = 200, description = "Per tenant and pool", body = openapi::QueueSummary),
        (status = 400, description = "INVALID_REQUEST: names the bad field and the allowed values", body = openapi::ErrorBody),
        openapi::AdminRefusals,
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn queues_summary(
    State(state): State<AppState>,
    Admin(_): Admin,
    query: Result<Query<SummaryQuery>, QueryRejection>,
) -> Result<Json<openapi::QueueSummary>, ServiceError> {
    let Query(query) = query.map_err(|e| ServiceError::InvalidRequest(e.body_text()))?;
    let tenant = query
        .tenant_id
        .as_deref()
        .map(TenantId::parse)
        .transpose()?;
    let now = crate::domain::now_millis();
    let queues = summary::summary(&*state.queue_store, tenant.as_ref(), now).await?;
    let mut tenants: Vec<TenantId> = queues
        .iter()
        .filter_map(|q| TenantId::parse(&q.tenant_id).ok())
        .chain(tenant)
        .collect();
    tenants.sort();
    tenants.dedup();
    let mut experiments = Vec::new();
    for t in &tenants {
        if let Some(experiment) = &state.live.flags(t).matcher_experiment {
            experiments.extend(summary::arms(&*state.durable, t, experiment, now).await?);
        }
    }
    Ok(Json(openapi::QueueSummary {
        timestamp: crate::domain::rfc3339(now),
        queues,
        experiments,
    }))
}

/// Longest `kind` or `subject` filter of the audit read.
const AUDIT_FILTER_MAX: usize = 128;

#[derive(Debug, serde::Deserialize)]
pub struct AuditParams {
    tenant_id: Option<String>,
    kind: Option<String>,
    subject: Option<String>,
    before: Option<i64>,
    limit: Option<u32>,
}

/// GET /internal/audit
#[utoipa::path(
    get,
    path = "/internal/audit",
    tag = "admin",
    summary = "The audit log: decisions and changes, newest first",
    params(
        ("tenant_id" = Option<String>, Query, description = "Whose log (default: the caller's tenant)."),
        ("kind" = Option<String>, Query, min_length = 1, max_length = 128, description = "Only events of this kind (`match`, `timeout`, `game_finished`, `policy_changed`, …)."),
        ("subject" = Option<String>, Query, min_length = 1, max_length = 128, description = "Only events about this (a match id, an entry id, …)."),
        ("before" = Option<i64>, Query, description = "Only events older than this id: the previous page's `next_before`."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "At most this many events, 1 to 500 (default 100)."),
    ),
    responses(
        (status = 200, description = "The events, newest first", body = openapi::AuditLog),
        (status = 400, description = "INVALID_REQUEST: names the bad parameter", body = openapi::ErrorBody),
        openapi::AdminRefusals,
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn audit(
    State(state): State<AppState>,
    Admin(who): Admin,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<openapi::AuditLog>, ServiceError> {
    let Query(params) = params.map_err(|e| ServiceError::InvalidRequest(e.body_text()))?;
    let tenant_id = match params.tenant_id.as_deref() {
        Some(t) => TenantId::parse(t)?,
        None => who.tenant_id,
    };
    let limit = params.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ServiceError::InvalidRequest(
            "limit must be between 1 and 500".into(),
        ));
    }
    for (name, value) in [("kind", &params.kind), ("subject", &params.subject)] {
        if value
            .as_ref()
            .is_some_and(|v| v.is_empty() || v.len() > AUDIT_FILTER_MAX)
        {
            return Err(ServiceError::InvalidRequest(format!(
                "{name} must be 1 to {AUDIT_FILTER_MAX} characters"
            )));
        }
    }
    let events = state
        .durable
        .audit_events(&AuditQuery {
            tenant_id,
            kind: params.kind,
            subject: params.subject,
            before: params.before,
            limit,
        })
        .await?;
    let full = events.len() == limit as usize;
    let next_before = events.last().map(|(id, _)| *id).filter(|_| full);
    Ok(Json(openapi::AuditLog {
        events: events
            .into_iter()
            .map(|(id, e)| openapi::AuditEntry {
                id,
                at: crate::domain::rfc3339(e.at),
                tenant_id: e.tenant_id.to_string(),
                kind: e.kind,
                subject: e.subject,
                detail: e.detail,
            })
            .collect(),
        next_before,
    }))
}
