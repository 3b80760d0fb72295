//! Admin API of what a tenant offers and which features it runs, set at
//! run time (SPEC §3.3): `GET/PUT/DELETE /internal/tenants/{tenant_id}/config`
//! and `.../flags`. A PUT sets the fields it names (the others stay as the
//! settings give them); a DELETE drops everything set; every change is
//! audited and in force on every node within 2 s.

use axum::Json;
use axum::extract::State;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::AppState;
use super::error::ServiceError;
use super::extract::{Admin, ApiJson, Ids, object};
use super::openapi;
use super::policies::{actor, tenant_of};
use crate::domain::{Experiment, Flags, FlagsPatch, TenantConfig, TenantConfigPatch, TenantId};

const CONFIG_FIELDS: [&str; 4] = ["time_controls", "variants", "regions", "default_region"];
const FLAG_FIELDS: [&str; 2] = ["challenges", "matcher_experiment"];

/// `value` read as the field `name`'s type; a 400 names the field.
fn field<T: DeserializeOwned>(name: &str, value: &Value) -> Result<T, ServiceError> {
    serde_json::from_value(value.clone())
        .map_err(|e| ServiceError::InvalidRequest(format!("{name}: {e}")))
}

/// Refuses a body that names no field, or one not in `fields`.
fn known_fields(
    body: &Map<String, Value>,
    fields: &[&str],
    what: &str,
) -> Result<(), ServiceError> {
    if let Some(unknown) = body.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(ServiceError::InvalidRequest(format!(
            "{unknown} is not a {what} field; the fields are {}",
            fields.join(", ")
        )));
    }
    if body.is_empty() {
        return Err(ServiceError::InvalidRequest(format!(
            "set at least one of {} (DELETE drops what is set)",
            fields.join(", ")
        )));
    }
    Ok(())
}

fn config_patch(body: Value) -> Result<TenantConfigPatch, ServiceError> {
    let body = object(body)?;
    known_fields(&body, &CONFIG_FIELDS, "tenant configuration")?;
    if let Some((name, _)) = body.iter().find(|(_, v)| v.is_null()) {
        return Err(ServiceError::InvalidRequest(format!(
            "{name} must not be null (leave it out to keep the settings')"
        )));
    }
    let get = |name: &str| body.get(name);
    Ok(TenantConfigPatch {
        time_controls: get("time_controls")
            .map(|v| field("time_controls", v))
            .transpose()?,
        variants: get("variants").map(|v| field("variants", v)).transpose()?,
        regions: get("regions").map(|v| field("regions", v)).transpose()?,
        default_region: get("default_region")
            .map(|v| field("default_region", v))
            .transpose()?,
    })
}

fn flags_patch(body: Value) -> Result<FlagsPatch, ServiceError> {
    let body = object(body)?;
    known_fields(&body, &FLAG_FIELDS, "flags")?;
    let get = |name: &str| body.get(name).filter(|v| !v.is_null());
    Ok(FlagsPatch {
        challenges: get("challenges")
            .map(|v| field("challenges", v))
            .transpose()?,
        matcher_experiment: get("matcher_experiment")
            .map(|v| field::<Experiment>("matcher_experiment", v))
            .transpose()?,
    })
}

impl openapi::TenantConfigFields {
    fn set(p: &TenantConfigPatch) -> Self {
        Self {
            time_controls: p
                .time_controls
                .as_ref()
                .map(|v| v.iter().map(ToString::to_string).collect()),
            variants: p
                .variants
                .as_ref()
                .map(|v| v.iter().map(ToString::to_string).collect()),
            regions: p
                .regions
                .as_ref()
                .map(|v| v.iter().map(ToString::to_string).collect()),
            default_region: p.default_region.map(|r| r.to_string()),
        }
    }

    fn of(c: &TenantConfig) -> Self {
        Self::set(&TenantConfigPatch {
            time_controls: Some(c.time_controls.clone()),
            variants: Some(c.variants.clone()),
            regions: Some(c.regions.clone()),
            default_region: Some(c.default_region),
        })
    }
}

impl openapi::FlagsFields {
    fn set(p: &FlagsPatch) -> Self {
        Self {
            challenges: p.challenges,
            matcher_experiment: p
                .matcher_experiment
                .as_ref()
                .map(openapi::ExperimentFields::of),
        }
    }

    fn of(f: &Flags) -> Self {
        Self {
            challenges: Some(f.challenges),
            matcher_experiment: f
                .matcher_experiment
                .as_ref()
                .map(openapi::ExperimentFields::of),
        }
    }
}

impl openapi::ExperimentFields {
    fn of(e: &Experiment) -> Self {
        Self {
            name: e.name.clone(),
            control: e.control.to_string(),
            treatment: e.treatment.to_string(),
            treatment_percent: e.treatment_percent,
        }
    }
}

fn config_answer(
    state: &AppState,
    tenant: &TenantId,
    before: Option<Option<TenantConfigPatch>>,
) -> Json<openapi::TenantConfigScope> {
    Json(openapi::TenantConfigScope {
        tenant_id: tenant.to_string(),
        config: state
            .live
            .tenant_config_set(tenant)
            .as_ref()
            .map(openapi::TenantConfigFields::set),
        effective: openapi::TenantConfigFields::of(&state.live.tenant_config(tenant)),
        before: before.map(|b| b.as_ref().map(openapi::TenantConfigFields::set)),
    })
}

fn flags_answer(
    state: &AppState,
    tenant: &TenantId,
    before: Option<Option<FlagsPatch>>,
) -> Json<openapi::FlagsScope> {
    Json(openapi::FlagsScope {
        tenant_id: tenant.to_string(),
        flags: state
            .live
            .flags_set(tenant)
            .as_ref()
            .map(openapi::FlagsFields::set),
        effective: openapi::FlagsFields::of(&state.live.flags(tenant)),
        before: before.map(|b| b.as_ref().map(openapi::FlagsFields::set)),
    })
}

/// GET /internal/tenants/{tenant_id}/config
#[utoipa::path(
    get,
    path = "/internal/tenants/{tenant_id}/config",
    tag = "admin",
    summary = "What a tenant offers its players: what it sets, and what is in force",
    params(("tenant_id" = String, Path, description = "The tenant.")),
    responses(
        (status = 200, description = "What is set and what is in force", body = openapi::TenantConfigScope),
        (status = 400, description = "INVALID_REQUEST: names the bad parameter", body = openapi::ErrorBody),
        openapi::AdminRefusals,
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn get_config(
    State(state): State<AppState>,
    Admin(_): Admin,
    Ids(tenant): Ids<String>,
) -> Result<Json<openapi::TenantConfigScope>, ServiceError> {
    Ok(config_answer(&state, &tenant_of(&tenant)?, None))
}

/// PUT /internal/tenants/{tenant_id}/config
#[utoipa::path(
    put,
    path = "/internal/tenants/{tenant_id}/config",
    tag = "admin",
    summary = "Set what a tenant offers (the fields given; the rest from the settings)",
    params(("tenant_id" = String, Path, description = "The tenant.")),
    request_body = openapi::TenantConfigFields,
    responses(
        (status = 200, description = "Set: in force on every node within 2 s", body = openapi::TenantConfigScope),
        (status = 400, description = "INVALID_REQUEST: names the bad field", body = openapi::ErrorBody),
        openapi::AdminRefusals,
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = openapi::ErrorBody),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn put_config(
    State(state): State<AppState>,
    Admin(who): Admin,
    Ids(tenant): Ids<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<openapi::TenantConfigScope>, ServiceError> {
    let tenant = tenant_of(&tenant)?;
    let patch = config_patch(body)?;
    let before = state
        .live
        .change_tenant_config(&actor(&who), &tenant, Some(patch))
        .await?;
    Ok(config_answer(&state, &tenant, Some(before)))
}

/// DELETE /internal/tenants/{tenant_id}/config
#[utoipa::path(
    delete,
    path = "/internal/tenants/{tenant_id}/config",
    tag = "admin",
    summary = "Drop what a tenant sets (it then offers what the settings give)",
    params(("tenant_id" = String, Path, description = "The tenant.")),
    responses(
        (status = 200, description = "Dropped", body = openapi::TenantConfigScope),
        (status = 400, description = "INVALID_REQUEST: names the bad parameter", body = openapi::ErrorBody),
        (status = 404, description = "NOT_FOUND: the tenant sets no configuration", body = openapi::ErrorBody),
        openapi::AdminRefusals,
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn delete_config(
    State(state): State<AppState>,
    Admin(who): Admin,
    Ids(tenant): Ids<String>,
) -> Result<Json<openapi::TenantConfigScope>, ServiceError> {
    let tenant = tenant_of(&tenant)?;
    if state.live.tenant_config_set(&tenant).is_none() {
        return Err(ServiceError::NotFound("the tenant sets no configuration"));
    }
    let before = state
        .live
        .change_tenant_config(&actor(&who), &tenant, None)
        .await?;
    Ok(config_answer(&state, &tenant, Some(before)))
}

/// GET /internal/tenants/{tenant_id}/flags
#[utoipa::path(
    get,
    path = "/internal/tenants/{tenant_id}/flags",
    tag = "admin",
    summary = "A tenant's feature flags: what it sets, and what is in force",
    params(("tenant_id" = String, Path, description = "The tenant.")),
    responses(
        (status = 200, description = "What is set and what is in force", body = openapi::FlagsScope),
        (status = 400, description = "INVALID_REQUEST: names the bad parameter", body = openapi::ErrorBody),
        openapi::AdminRefusals,
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn get_flags(
    State(state): State<AppState>,
    Admin(_): Admin,
    Ids(tenant): Ids<String>,
) -> Result<Json<openapi::FlagsScope>, ServiceError> {
    Ok(flags_answer(&state, &tenant_of(&tenant)?, None))
}

/// PUT /internal/tenants/{tenant_id}/flags
#[utoipa::path(
    put,
    path = "/internal/tenants/{tenant_id}/flags",
    tag = "admin",
    summary = "Set a tenant's feature flags (the flags given; the rest from the settings)",
    params(("tenant_id" = String, Path, description = "The tenant.")),
    request_body = openapi::FlagsFields,
    responses(
        (status = 200, description = "Set: in force on every node within 2 s", body = openapi::FlagsScope),
        (status = 400, description = "INVALID_REQUEST: names the bad field", body = openapi::ErrorBody),
        openapi::AdminRefusals,
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = openapi::ErrorBody),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn put_flags(
    State(state): State<AppState>,
    Admin(who): Admin,
    Ids(tenant): Ids<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<openapi::FlagsScope>, ServiceError> {
    let tenant = tenant_of(&tenant)?;
    let patch = flags_patch(body)?;
    let before = state
        .live
        .change_flags(&actor(&who), &tenant, Some(patch))
        .await?;
    Ok(flags_answer(&state, &tenant, Some(before)))
}

/// DELETE /internal/tenants/{tenant_id}/flags
#[utoipa::path(
    delete,
    path = "/internal/tenants/{tenant_id}/flags",
    tag = "admin",
    summary = "Drop a tenant's flags (the settings' apply: CHALLENGES_ENABLED, no experiment)",
    params(("tenant_id" = String, Path, description = "The tenant.")),
    responses(
        (status = 200, description = "Dropped", body = openapi::FlagsScope),
        (status = 400, description = "INVALID_REQUEST: names the bad parameter", body = openapi::ErrorBody),
        (status = 404, description = "NOT_FOUND: the tenant sets no flags", body = openapi::ErrorBody),
        openapi::AdminRefusals,
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn delete_flags(
    State(state): State<AppState>,
    Admin(who): Admin,
    Ids(tenant): Ids<String>,
) -> Result<Json<openapi::FlagsScope>, ServiceError> {
    let tenant = tenant_of(&tenant)?;
    if state.live.flags_set(&tenant).is_none() {
        return Err(ServiceError::NotFound("the tenant sets no flags"));
    }
    let before = state.live.change_flags(&actor(&who), &tenant, None).await?;
    Ok(flags_answer(&state, &tenant, Some(before)))
}
