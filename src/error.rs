//! The one error type of the service: every refusal and failure a request
//! can meet, each declared once here with its SPEC error code, HTTP status
//! and client message. Services return it; the HTTP edge renders it
//! (`http/error.rs`) without converting it.

use axum::http::StatusCode;

use crate::domain::ParseError;
use crate::store::StoreError;

/// Why a request was refused or failed. The message (`Display`) is what the
/// client reads; the `String` of `Unavailable` and `Internal` is the cause,
/// logged only.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
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
    /// The request did not complete within HTTP_REQUEST_TIMEOUT_SECONDS.
    #[error(
        "the request did not complete in time (a body sent too slowly, or the service too slow); retry"
    )]
    RequestTimeout,
    #[error("the request target is longer than the limit")]
    UriTooLong,
    #[error("the request's headers are larger than the limit")]
    HeadersTooLarge,
    /// The Idempotency-Key came first with another request body.
    #[error(
        "this Idempotency-Key was first used with another request body; use a new key for a new request"
    )]
    IdempotencyKeyReused,
    /// The first request with this Idempotency-Key is still running.
    #[error("the first request with this Idempotency-Key is still running; retry shortly")]
    IdempotencyInProgress,
    /// The player did not show up for a game that was then aborted: no
    /// join until the cooldown ends, this many seconds from now.
    #[error(
        "you did not show up for your last game; you may join again after the time in Retry-After"
    )]
    Cooldown { retry_after_seconds: u64 },
    /// Game creation is down and matching paused; retry after this many seconds.
    #[error("matchmaking is paused while the game service is unavailable; retry shortly")]
    Paused { retry_after_seconds: u64 },
    /// Over a rate limit (per address or per user); retry after this many
    /// seconds.
    #[error("too many requests; slow down and retry after the time in Retry-After")]
    RateLimited { retry_after_seconds: u64 },
    /// Past the bound of open event streams (per user or per node).
    #[error(
        "too many open event streams (yours, or on this node); close one, poll, or retry after the time in Retry-After"
    )]
    TooManyStreams { retry_after_seconds: u64 },
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

impl ServiceError {
    /// Every code [`Self::code`] answers (the OpenAPI document's enum).
    pub const CODES: &'static [&'static str] = &[
        "INVALID_REQUEST",
        "UNAUTHORIZED",
        "FORBIDDEN",
        "NOT_FOUND",
        "ALREADY_IN_QUEUE",
        "ACTIVE_GAME_EXISTS",
        "COOLDOWN",
        "CANNOT_CANCEL",
        "INVALID_STATE",
        "CANNOT_ACCEPT",
        "TOO_MANY_CHALLENGES",
        "CHALLENGES_DISABLED",
        "PAYLOAD_TOO_LARGE",
        "METHOD_NOT_ALLOWED",
        "IDEMPOTENCY_KEY_REUSED",
        "IDEMPOTENCY_IN_PROGRESS",
        "REQUEST_TIMEOUT",
        "URI_TOO_LONG",
        "HEADERS_TOO_LARGE",
        "RATE_LIMITED",
        "MATCHMAKING_UNAVAILABLE",
        "INTERNAL_ERROR",
    ];

    pub fn status(&self) -> StatusCode {
        match self {
            ServiceError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ServiceError::Unauthorized => StatusCode::UNAUTHORIZED,
            ServiceError::Forbidden => StatusCode::FORBIDDEN,
            ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
            ServiceError::AlreadyInQueue
            | ServiceError::ActiveGameExists
            | ServiceError::CannotCancel
            | ServiceError::InvalidState(_)
            | ServiceError::CannotAccept(_)
            | ServiceError::TooManyChallenges
            | ServiceError::Cooldown { .. }
            | ServiceError::IdempotencyInProgress => StatusCode::CONFLICT,
            ServiceError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ServiceError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ServiceError::UriTooLong => StatusCode::URI_TOO_LONG,
            ServiceError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ServiceError::ChallengesDisabled => StatusCode::NOT_FOUND,
            ServiceError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ServiceError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ServiceError::RateLimited { .. } | ServiceError::TooManyStreams { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ServiceError::Unavailable(_)
            | ServiceError::Paused { .. }
            | ServiceError::Overloaded
            | ServiceError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::InvalidRequest(_) => "INVALID_REQUEST",
            ServiceError::Unauthorized => "UNAUTHORIZED",
            ServiceError::Forbidden => "FORBIDDEN",
            ServiceError::NotFound(_) => "NOT_FOUND",
            ServiceError::AlreadyInQueue => "ALREADY_IN_QUEUE",
            ServiceError::ActiveGameExists => "ACTIVE_GAME_EXISTS",
            ServiceError::Cooldown { .. } => "COOLDOWN",
            ServiceError::CannotCancel => "CANNOT_CANCEL",
            ServiceError::InvalidState(_) => "INVALID_STATE",
            ServiceError::CannotAccept(_) => "CANNOT_ACCEPT",
            ServiceError::TooManyChallenges => "TOO_MANY_CHALLENGES",
            ServiceError::ChallengesDisabled => "CHALLENGES_DISABLED",
            ServiceError::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ServiceError::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ServiceError::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            ServiceError::RequestTimeout => "REQUEST_TIMEOUT",
            ServiceError::UriTooLong => "URI_TOO_LONG",
            ServiceError::HeadersTooLarge => "HEADERS_TOO_LARGE",
            ServiceError::IdempotencyInProgress => "IDEMPOTENCY_IN_PROGRESS",
            ServiceError::RateLimited { .. } | ServiceError::TooManyStreams { .. } => {
                "RATE_LIMITED"
            }
            ServiceError::Unavailable(_)
            | ServiceError::Paused { .. }
            | ServiceError::Overloaded
            | ServiceError::Busy { .. } => "MATCHMAKING_UNAVAILABLE",
            ServiceError::Internal(_) => "INTERNAL_ERROR",
        }
    }
}

impl From<ParseError> for ServiceError {
    fn from(e: ParseError) -> Self {
        ServiceError::InvalidRequest(e.to_string())
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        ServiceError::Unavailable(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of each variant. The match below has no wildcard, so a new
    /// variant does not compile until it is added here too.
    fn one_of_each() -> Vec<ServiceError> {
        let all = vec![
            ServiceError::InvalidRequest(String::new()),
            ServiceError::Unauthorized,
            ServiceError::Forbidden,
            ServiceError::NotFound(""),
            ServiceError::AlreadyInQueue,
            ServiceError::ActiveGameExists,
            ServiceError::CannotCancel,
            ServiceError::InvalidState(""),
            ServiceError::CannotAccept(""),
            ServiceError::TooManyChallenges,
            ServiceError::ChallengesDisabled,
            ServiceError::PayloadTooLarge,
            ServiceError::MethodNotAllowed,
            ServiceError::RequestTimeout,
            ServiceError::UriTooLong,
            ServiceError::HeadersTooLarge,
            ServiceError::IdempotencyKeyReused,
            ServiceError::IdempotencyInProgress,
            ServiceError::Cooldown {
                retry_after_seconds: 1,
            },
            ServiceError::Paused {
                retry_after_seconds: 1,
            },
            ServiceError::RateLimited {
                retry_after_seconds: 1,
            },
            ServiceError::TooManyStreams {
                retry_after_seconds: 1,
            },
            ServiceError::Overloaded,
            ServiceError::Busy {
                retry_after_seconds: 1,
            },
            ServiceError::Unavailable(String::new()),
            ServiceError::Internal(String::new()),
        ];
        for e in &all {
            match e {
                ServiceError::InvalidRequest(_)
                | ServiceError::Unauthorized
                | ServiceError::Forbidden
                | ServiceError::NotFound(_)
                | ServiceError::AlreadyInQueue
                | ServiceError::ActiveGameExists
                | ServiceError::CannotCancel
                | ServiceError::InvalidState(_)
                | ServiceError::CannotAccept(_)
                | ServiceError::TooManyChallenges
                | ServiceError::ChallengesDisabled
                | ServiceError::PayloadTooLarge
                | ServiceError::MethodNotAllowed
                | ServiceError::RequestTimeout
                | ServiceError::UriTooLong
                | ServiceError::HeadersTooLarge
                | ServiceError::IdempotencyKeyReused
                | ServiceError::IdempotencyInProgress
                | ServiceError::Cooldown { .. }
                | ServiceError::Paused { .. }
                | ServiceError::RateLimited { .. }
                | ServiceError::TooManyStreams { .. }
                | ServiceError::Overloaded
                | ServiceError::Busy { .. }
                | ServiceError::Unavailable(_)
                | ServiceError::Internal(_) => {}
            }
        }
        all
    }

    #[test]
    fn codes_lists_exactly_the_codes_answered() {
        let mut answered: Vec<&str> = one_of_each().iter().map(ServiceError::code).collect();
        answered.sort_unstable();
        answered.dedup();
        let mut listed = ServiceError::CODES.to_vec();
        listed.sort_unstable();
        assert_eq!(answered, listed);
    }
}
