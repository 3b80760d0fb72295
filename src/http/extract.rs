//! Extractors that refuse in the SPEC's error shape: the caller from the
//! bearer token, the admin role, and JSON bodies.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::AppState;
use super::error::ServiceError;
use crate::auth::Identity;
use crate::domain::ParseError;

/// The caller, from a valid bearer token.
pub struct Caller(pub Identity);

/// The bearer token of a request, if it has one.
fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ServiceError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ServiceError> {
        let token = bearer(parts).ok_or(ServiceError::Unauthorized)?;
        let who = state.auth.authenticate(token).await.map_err(|e| {
            tracing::debug!(reason = %e, "token refused");
            ServiceError::Unauthorized
        })?;
        state.rate_limits.check_user(&who.tenant_id, &who.user_id)?;
        Ok(Caller(who))
    }
}

/// A caller whose token has the `admin` role.
pub struct Admin(pub Identity);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ServiceError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ServiceError> {
        let Caller(who) = Caller::from_request_parts(parts, state).await?;
        if who.is_admin() {
            Ok(Admin(who))
        } else {
            Err(ServiceError::Forbidden)
        }
    }
}

/// A caller whose token has the `admin` or the `service` role: the
/// platform's own services (its account service reporting blocks, its
/// fair-play team's tools), which are not admins of the matchmaker.
pub struct Platform(pub Identity);

impl FromRequestParts<AppState> for Platform {
    type Rejection = ServiceError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ServiceError> {
        let Caller(who) = Caller::from_request_parts(parts, state).await?;
        if who.is_admin() || who.is_service() {
            Ok(Platform(who))
        } else {
            Err(ServiceError::Forbidden)
        }
    }
}

/// Path parameters (ids). One that cannot even be read (percent-encoded
/// bytes that are not UTF-8) is 404 `NOT_FOUND` in our error shape, like
/// any other malformed id, not axum's plain-text 400.
pub struct Ids<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Ids<T> {
    type Rejection = ServiceError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ServiceError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(ids)| Ids(ids))
            .map_err(|rejection| {
                tracing::debug!(reason = %rejection.body_text(), "unreadable path parameter");
                ServiceError::NotFound("no such resource")
            })
    }
}

/// `axum::Json`, with every rejection in our error shape.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ServiceError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ServiceError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(match rejection {
                JsonRejection::MissingJsonContentType(_) => ServiceError::InvalidRequest(
                    "expected a body with Content-Type: application/json".into(),
                ),
                JsonRejection::JsonSyntaxError(_) => {
                    ServiceError::InvalidRequest("body is not valid JSON".into())
                }
                JsonRejection::JsonDataError(e) => {
                    ServiceError::InvalidRequest(format!("body: {}", e.body_text()))
                }
                other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    ServiceError::PayloadTooLarge
                }
                other => ServiceError::InvalidRequest(format!(
                    "body could not be read: {}",
                    other.body_text()
                )),
            }),
        }
    }
}

/// A JSON object body, for handlers that read fields one by one so each
/// refusal names its field.
pub fn object(value: Value) -> Result<Map<String, Value>, ServiceError> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ServiceError::InvalidRequest(
            "body must be a JSON object".into(),
        )),
    }
}

/// An optional JSON object body: empty, blank or `null` is an empty object.
pub fn optional_object(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Map<String, Value>, ServiceError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ServiceError::PayloadTooLarge,
        _ => ServiceError::InvalidRequest("body could not be read".into()),
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(&body)
        .map_err(|_| ServiceError::InvalidRequest("body is not valid JSON".into()))?
    {
        Value::Null => Ok(Map::new()),
        value => object(value),
    }
}

/// A string field: `Ok(None)` when absent or null, an error naming the field
/// when it is of another type.
pub fn optional_str<'a>(
    body: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, ParseError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ParseError::new(field, "must be a string")),
    }
}

/// A required string field.
pub fn required_str<'a>(
    body: &'a Map<String, Value>,
    field: &'static str,
) -> Result<&'a str, ParseError> {
    optional_str(body, field)?.ok_or_else(|| ParseError::new(field, "is required"))
}

/// Who reports a game finished: an admin, or live-game-api presenting
/// `LIVE_GAME_API_CALLBACK_TOKEN` (compared in constant time).
pub enum Reporter {
    Admin(Identity),
    GameService,
}

impl FromRequestParts<AppState> for Reporter {
    type Rejection = ServiceError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ServiceError> {
        if let (Some(expected), Some(token)) = (&state.callback_token, bearer(parts))
            && bool::from(subtle::ConstantTimeEq::ct_eq(
                token.as_bytes(),
                expected.as_bytes(),
            ))
        {
            return Ok(Reporter::GameService);
        }
        let Admin(who) = Admin::from_request_parts(parts, state).await?;
        Ok(Reporter::Admin(who))
    }
}
