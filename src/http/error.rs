//! The one error type of the HTTP edge and the SPEC's error shape:
//! `{"error": {"code", "message", "request_id"}}`. Internal causes are
//! logged with the request id, never sent to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::request_id;
use crate::domain::ParseError;
use crate::services::ServiceError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("this needs the admin role")]
    Forbidden,
    #[error("{0}")]
    NotFound(&'static str),
    #[error("already searching with other parameters; cancel that entry first")]
    AlreadyInQueue,
    #[error("a game of yours has not finished yet")]
    ActiveGameExists,
    #[error("the entry is already matched or its game is being created")]
    CannotCancel,
    #[error("{0}")]
    InvalidState(&'static str),
    #[error("{0}")]
    CannotAccept(&'static str),
    #[error("you have too many pending challenges; cancel some first")]
    TooManyChallenges,
    #[error("direct challenges are turned off on this service")]
    ChallengesDisabled,
    #[error("request body is larger than the limit")]
    PayloadTooLarge,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// Game creation is down and matching paused; retry after this many seconds.
    #[error("matchmaking is paused while the game service is unavailable; retry shortly")]
    Paused { retry_after_seconds: u64 },
    /// Over a rate limit (per address or per user); retry after this many
    /// seconds.
    #[error("too many requests; slow down and retry after the time in Retry-After")]
    RateLimited { retry_after_seconds: u64 },
    /// The node is at its bound of requests in flight; retry shortly.
    #[error("this node is busy; retry shortly")]
    Overloaded,
    /// Matching is behind on the pool asked for; retry after this many
    /// seconds.
    #[error("matching is behind on this pool; retry shortly")]
    Busy { retry_after_seconds: u64 },
    /// A store or dependency is down. The cause is logged only.
    #[error("matchmaking is unavailable right now; retry shortly")]
    Unavailable(String),
    /// A bug. The cause is logged only.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::AlreadyInQueue
            | ApiError::ActiveGameExists
            | ApiError::CannotCancel
            | ApiError::InvalidState(_)
            | ApiError::CannotAccept(_)
            | ApiError::TooManyChallenges => StatusCode::CONFLICT,
            ApiError::ChallengesDisabled => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_)
            | ApiError::Paused { .. }
            | ApiError::Overloaded
            | ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "INVALID_REQUEST",
            ApiError::Unauthorized => "UNAUTHORIZED",
            ApiError::Forbidden => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::AlreadyInQueue => "ALREADY_IN_QUEUE",
            ApiError::ActiveGameExists => "ACTIVE_GAME_EXISTS",
            ApiError::CannotCancel => "CANNOT_CANCEL",
            ApiError::InvalidState(_) => "INVALID_STATE",
            ApiError::CannotAccept(_) => "CANNOT_ACCEPT",
            ApiError::TooManyChallenges => "TOO_MANY_CHALLENGES",
            ApiError::ChallengesDisabled => "CHALLENGES_DISABLED",
            ApiError::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ApiError::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ApiError::RateLimited { .. } => "RATE_LIMITED",
            ApiError::Unavailable(_)
            | ApiError::Paused { .. }
            | ApiError::Overloaded
            | ApiError::Busy { .. } => "MATCHMAKING_UNAVAILABLE",
            ApiError::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// The JSON body, with the current request's id.
    pub fn body(&self) -> String {
        json!({
            "error": {
                "code": self.code(),
                "message": self.to_string(),
                "request_id": request_id::current(),
            }
        })
        .to_string()
    }
}

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        ApiError::InvalidRequest(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::InvalidRequest(p) => p.into(),
            ServiceError::NotFound => ApiError::NotFound("not found"),
            ServiceError::AlreadyInQueue => ApiError::AlreadyInQueue,
            ServiceError::ActiveGameExists => ApiError::ActiveGameExists,
            ServiceError::CannotCancel => ApiError::CannotCancel,
            ServiceError::Unavailable(s) => s.into(),
            ServiceError::InvalidState(m) => ApiError::InvalidState(m),
            ServiceError::CannotAccept(m) => ApiError::CannotAccept(m),
            ServiceError::TooManyChallenges => ApiError::TooManyChallenges,
            ServiceError::ChallengesDisabled => ApiError::ChallengesDisabled,
            ServiceError::GameCreation(cause) => ApiError::Unavailable(cause),
            ServiceError::Paused {
                retry_after_seconds,
            } => ApiError::Paused {
                retry_after_seconds,
            },
            ServiceError::PoolBusy {
                retry_after_seconds,
            } => ApiError::Busy {
                retry_after_seconds,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Unavailable(cause) => {
                tracing::error!(code = self.code(), cause = %cause, "request failed: dependency unavailable")
            }
            ApiError::Internal(cause) => {
                tracing::error!(code = self.code(), cause = %cause, "request failed: internal error")
            }
            _ => tracing::debug!(code = self.code(), message = %self, "request refused"),
        }
        let mut response = (
            self.status(),
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.body(),
        )
            .into_response();
        if let ApiError::Paused {
            retry_after_seconds,
        }
        | ApiError::RateLimited {
            retry_after_seconds,
        }
        | ApiError::Busy {
            retry_after_seconds,
        } = self
            && let Ok(value) = HeaderValue::from_str(&retry_after_seconds.max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if matches!(self, ApiError::Overloaded) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // A shed request closes its connection: a client that does not
        // honour Retry-After pays a new connection for its next try instead
        // of keeping one of this node's busy slots (and a load balancer
        // gets the chance to send it elsewhere).
        if matches!(self, ApiError::Overloaded | ApiError::Busy { .. }) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if matches!(self, ApiError::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
