//! Admin API of the matching policies set at run time (SPEC §3.3):
//! `GET/PUT/DELETE /internal/policies/{tenant_id}[/{pool_key}]`.

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value};

use super::AppState;
use super::error::ServiceError;
use super::extract::{Admin, ApiJson, Ids, object};
use super::openapi::{self, PolicyFields};
use crate::domain::{PolicyPatch, PoolKey, PoolPolicy, PoolRef, Region, RegionSet, TenantId};

const INTEGER_FIELDS: [&str; 8] = [
    "initial_rating_window",
    "rating_window_widening_amount",
    "max_rating_gap",
    "repeat_penalty",
    "repeat_window_games",
    "deviation_reference",
    "deviation_min_percent",
    "deviation_max_percent",
];
const SECONDS_FIELDS: [&str; 5] = [
    "rating_window_widening_interval",
    "max_queue_time_seconds",
    "region_fallback_seconds",
    "repeat_window_seconds",
    "repeat_waive_seconds",
];
const REGIONS_FIELD: &str = "region_fallback_regions";

impl PolicyFields {
    /// A policy in force, every field given.
    fn of(p: PoolPolicy) -> Self {
        Self {
            initial_rating_window: Some(p.initial_window),
            rating_window_widening_interval: Some(p.widening_interval_ms as f64 / 1000.0),
            rating_window_widening_amount: Some(p.widening_amount),
            max_rating_gap: Some(p.max_gap),
            max_queue_time_seconds: Some(p.max_queue_time_ms as f64 / 1000.0),
            region_fallback_seconds: p.fallback_after_ms.map(|ms| ms as f64 / 1000.0),
            region_fallback_regions: Some(names(p.fallback_regions)),
            repeat_penalty: Some(p.repeat_penalty),
            repeat_window_seconds: Some(p.repeat_window_ms as f64 / 1000.0),
            repeat_window_games: Some(p.repeat_games),
            repeat_waive_seconds: Some(p.repeat_waive_ms as f64 / 1000.0),
            deviation_reference: Some(p.deviation_reference),
            deviation_min_percent: Some(p.deviation_min_percent),
            deviation_max_percent: Some(p.deviation_max_percent),
        }
    }

    /// The fields a policy set sets.
    fn set(p: &PolicyPatch) -> Self {
        Self {
            initial_rating_window: p.initial_rating_window,
            rating_window_widening_interval: p.rating_window_widening_interval,
            rating_window_widening_amount: p.rating_window_widening_amount,
            max_rating_gap: p.max_rating_gap,
            max_queue_time_seconds: p.max_queue_time_seconds,
            region_fallback_seconds: p.region_fallback_seconds,
            region_fallback_regions: p.region_fallback_regions.map(names),
            repeat_penalty: p.repeat_penalty,
            repeat_window_seconds: p.repeat_window_seconds,
            repeat_window_games: p.repeat_window_games,
            repeat_waive_seconds: p.repeat_waive_seconds,
            deviation_reference: p.deviation_reference,
            deviation_min_percent: p.deviation_min_percent,
            deviation_max_percent: p.deviation_max_percent,
        }
    }
}

fn names(regions: RegionSet) -> Vec<String> {
    regions.iter().map(|r| r.as_str().to_owned()).collect()
}

/// A PUT body: the fields to set, each checked by name.
fn parse_patch(body: &Map<String, Value>) -> Result<PolicyPatch, ServiceError> {
    let allowed = || {
        [
            INTEGER_FIELDS.as_slice(),
            SECONDS_FIELDS.as_slice(),
            &[REGIONS_FIELD],
        ]
        .concat()
        .join(", ")
    };
    let mut patch = PolicyPatch::default();
    for (field, value) in body {
        if INTEGER_FIELDS.contains(&field.as_str()) {
            let n = value
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| {
                    ServiceError::InvalidRequest(format!("{field} must be a whole number"))
                })?;
            match field.as_str() {
                "initial_rating_window" => patch.initial_rating_window = Some(n),
                "rating_window_widening_amount" => patch.rating_window_widening_amount = Some(n),
                "repeat_penalty" => patch.repeat_penalty = Some(n),
                "deviation_reference" => patch.deviation_reference = Some(n),
                "deviation_min_percent" => patch.deviation_min_percent = Some(n),
                "deviation_max_percent" => patch.deviation_max_percent = Some(n),
                "repeat_window_games" => {
                    patch.repeat_window_games = Some(u32::try_from(n).map_err(|_| {
                        ServiceError::InvalidRequest(format!(
                            "{field} must be 0 to {}",
                            crate::domain::MAX_REPEAT_GAMES
                        ))
                    })?)
                }
                _ => patch.max_rating_gap = Some(n),
            }
        } else if SECONDS_FIELDS.contains(&field.as_str()) {
            let seconds = value.as_f64().filter(|s| s.is_finite()).ok_or_else(|| {
                ServiceError::InvalidRequest(format!("{field} must be a number of seconds"))
            })?;
            match field.as_str() {
                "rating_window_widening_interval" => {
                    patch.rating_window_widening_interval = Some(seconds)
                }
                "max_queue_time_seconds" => patch.max_queue_time_seconds = Some(seconds),
                "repeat_window_seconds" => patch.repeat_window_seconds = Some(seconds),
                "repeat_waive_seconds" => patch.repeat_waive_seconds = Some(seconds),
                _ => patch.region_fallback_seconds = Some(seconds),
            }
        } else if field == REGIONS_FIELD {
            let regions = value
                .as_array()
                .ok_or_else(|| {
                    ServiceError::InvalidRequest(format!(
                        "{field} must be a list of regions ([] for none)"
                    ))
                })?
                .iter()
                .map(|r| {
                    r.as_str()
                        .ok_or_else(|| "a region is a string".to_owned())
                        .and_then(|r| r.parse::<Region>().map_err(|e| e.reason))
                })
                .collect::<Result<RegionSet, String>>()
                .map_err(|reason| ServiceError::InvalidRequest(format!("{field}: {reason}")))?;
            patch.region_fallback_regions = Some(regions);
        } else {
            return Err(ServiceError::InvalidRequest(format!(
                "{field} is not a policy field; the fields are {}",
                allowed()
            )));
        }
    }
    if patch.is_empty() {
        return Err(ServiceError::InvalidRequest(format!(
            "set at least one of {} (DELETE drops the policy)",
            allowed()
        )));
    }
    Ok(patch)
}

pub(super) fn tenant_of(raw: &str) -> Result<TenantId, ServiceError> {
    Ok(TenantId::parse(raw)?)
}

/// Who made a change, as the audit log names them.
pub(super) fn actor(who: &crate::auth::Identity) -> String {
    format!("{}/{}", who.tenant_id, who.user_id)
}

pub(super) fn pool_of(raw: &str) -> Result<PoolKey, ServiceError> {
    raw.parse().map_err(|e: crate::domain::ParseError| {
        ServiceError::InvalidRequest(format!("pool_key: {e}"))
    })
}

/// The answer about one scope: what it sets and what is in force there.
fn scope_answer(
    state: &AppState,
    tenant: &TenantId,
    pool: Option<PoolKey>,
    before: Option<Option<PolicyPatch>>,
) -> openapi::PolicyScope {
    let policies = &state.live;
    let (policy, effective) = match pool {
        Some(key) => (
            policies.of_pool(tenant, key),
            policies.policy(&PoolRef {
                tenant_id: tenant.clone(),
                key,
            }),
        ),
        None => (
            policies.of_tenant(tenant).tenant,
            policies.tenant_policy(tenant),
        ),
    };
    openapi::PolicyScope {
        tenant_id: tenant.to_string(),
        pool_key: pool.map(|p| p.to_string()),
        policy: policy.as_ref().map(PolicyFields::set),
        effective: PolicyFields::of(effective),
        before: before.map(|b| b.as_ref().map(PolicyFields::set)),
    }
}

/// GET /internal/policies/{tenant_id}
#[utoipa::path(
    get,
    path = "/internal/policies/{tenant_id}",
    tag = "admin",
    summary = "A tenant's matching policies: its own, its pools', and the settings' under them",
    params(("tenant_id" = String, Path, description = "The tenant.")),
    responses(
        (status = 200, description = "What is set and what is in force", body = openapi::TenantPolicies),
        (status = 400, description = "INVALID_REQUEST: names the bad parameter", body = openapi::ErrorBody),
        openapi::AdminRefusals,
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn get_tenant(
    State(state): State<AppState>,
    Admin(_): Admin,
    Ids(tenant): Ids<String>,
) -> Result<Json<openapi::TenantPolicies>, ServiceError> {
    let tenant = tenant_of(&tenant)?;
    let set = state.live.of_tenant(&tenant);
    Ok(Json(openapi::TenantPolicies {
        defaults: PolicyFields::of(set.defaults),
        tenant: scope_answer(&state, &tenant, None, None),
        pools: set
            .pools
            .iter()
            .map(|(pool, _)| scope_answer(&state, &tenant, Some(*pool), None))
            .collect(),
    }))
}

/// PUT /internal/policies/{tenant_id}
#[utoipa::path(
    put,
    path = "/internal/policies/{tenant_id}",
    tag = "admin",
    summary = "Set a tenant's matching policy (the fields given; its pools build on it)",
    params(("tenant_id" = String, Path, description = "The tenant.")),
    request_body = openapi::PolicyFields,
    responses(
        (status = 200, description = "Set: in force on every node within 2 s", body = openapi::PolicyScope),
        (status = 400, description = "INVALID_REQUEST: names the bad field (and the pool a change would break)", body = openapi::ErrorBody),
        openapi::AdminRefusals,
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = openapi::ErrorBody),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn put_tenant(
    State(state): State<AppState>,
    Admin(who): Admin,
    Ids(tenant): Ids<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<openapi::PolicyScope>, ServiceError> {
    change(&state, &who, (&tenant, None), Some(body)).await
}

/// DELETE /internal/policies/{tenant_id}
#[utoipa::path(
    delete,
    path = "/internal/policies/{tenant_id}",
    tag = "admin",
    summary = "Drop a tenant's matching policy (its pools then build on the settings')",
    params(("tenant_id" = String, Path, description = "The tenant.")),
    responses(
        (status = 200, description = "Dropped", body = openapi::PolicyScope),
        (status = 400, description = "INVALID_REQUEST: names the bad parameter, or the pool the change would break", body = openapi::ErrorBody),
        (status = 404, description = "NOT_FOUND: the tenant has no policy of its own", body = openapi::ErrorBody),
        openapi::AdminRefusals,
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn delete_tenant(
    State(state): State<AppState>,
    Admin(who): Admin,
    Ids(tenant): Ids<String>,
) -> Result<Json<openapi::PolicyScope>, ServiceError> {
    change(&state, &who, (&tenant, None), None).await
}

/// GET /internal/policies/{tenant_id}/{pool_key}
#[utoipa::path(
    get,
    path = "/internal/policies/{tenant_id}/{pool_key}",
    tag = "admin",
    summary = "A pool's matching policy: its own, and what is in force",
    params(("tenant_id" = String, Path, description = "The tenant."), ("pool_key" = String, Path, description = "The pool (`standard_5+0_rated_GLOBAL`).")),
    responses(
        (status = 200, description = "What is set and what is in force", body = openapi::PolicyScope),
        (status = 400, description = "INVALID_REQUEST: names the bad parameter", body = openapi::ErrorBody),
        openapi::AdminRefusals,
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn get_pool(
    State(state): State<AppState>,
    Admin(_): Admin,
    Ids((tenant, pool)): Ids<(String, String)>,
) -> Result<Json<openapi::PolicyScope>, ServiceError> {
    let tenant = tenant_of(&tenant)?;
    let pool = pool_of(&pool)?;
    Ok(Json(scope_answer(&state, &tenant, Some(pool), None)))
}

/// PUT /internal/policies/{tenant_id}/{pool_key}
#[utoipa::path(
    put,
    path = "/internal/policies/{tenant_id}/{pool_key}",
    tag = "admin",
    summary = "Set a pool's matching policy (the fields given; the rest from its tenant's)",
    params(("tenant_id" = String, Path, description = "The tenant."), ("pool_key" = String, Path, description = "The pool (`standard_5+0_rated_GLOBAL`).")),
    request_body = openapi::PolicyFields,
    responses(
        (status = 200, description = "Set: in force on every node within 2 s", body = openapi::PolicyScope),
        (status = 400, description = "INVALID_REQUEST: names the bad field", body = openapi::ErrorBody),
        openapi::AdminRefusals,
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = openapi::ErrorBody),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn put_pool(
    State(state): State<AppState>,
    Admin(who): Admin,
    Ids((tenant, pool)): Ids<(String, String)>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<openapi::PolicyScope>, ServiceError> {
    change(&state, &who, (&tenant, Some(&pool)), Some(body)).await
}

/// DELETE /internal/policies/{tenant_id}/{pool_key}
#[utoipa::path(
    delete,
    path = "/internal/policies/{tenant_id}/{pool_key}",
    tag = "admin",
    summary = "Drop a pool's matching policy (it then follows its tenant's)",
    params(("tenant_id" = String, Path, description = "The tenant."), ("pool_key" = String, Path, description = "The pool (`standard_5+0_rated_GLOBAL`).")),
    responses(
        (status = 200, description = "Dropped", body = openapi::PolicyScope),
        (status = 400, description = "INVALID_REQUEST: names the bad parameter", body = openapi::ErrorBody),
        (status = 404, description = "NOT_FOUND: the pool has no policy of its own", body = openapi::ErrorBody),
        openapi::AdminRefusals,
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn delete_pool(
    State(state): State<AppState>,
    Admin(who): Admin,
    Ids((tenant, pool)): Ids<(String, String)>,
) -> Result<Json<openapi::PolicyScope>, ServiceError> {
    change(&state, &who, (&tenant, Some(&pool)), None).await
}

/// Sets (`body`) or drops the policy of a tenant or pool.
async fn change(
    state: &AppState,
    who: &crate::auth::Identity,
    (tenant, pool): (&str, Option<&str>),
    body: Option<Value>,
) -> Result<Json<openapi::PolicyScope>, ServiceError> {
    let tenant = tenant_of(tenant)?;
    let pool = pool.map(pool_of).transpose()?;
    let patch = body.map(|b| parse_patch(&object(b)?)).transpose()?;
    if patch.is_none() {
        let set = match pool {
            Some(key) => state.live.of_pool(&tenant, key),
            None => state.live.of_tenant(&tenant).tenant,
        };
        if set.is_none() {
            return Err(ServiceError::NotFound("no policy is set there"));
        }
    }
    let before = state.live.change(&actor(who), &tenant, pool, patch).await?;
    Ok(Json(scope_answer(state, &tenant, pool, Some(before))))
}
