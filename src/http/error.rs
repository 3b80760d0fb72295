//! The SPEC's error shape at the HTTP edge:
//! `{"error": {"code", "message", "request_id"}}`, rendered from the one
//! error type ([`ServiceError`], declared in `crate::error`). Internal causes
//! are logged with the request id, never sent to the client.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::openapi::{ErrorBody, ErrorDetail};
use super::request_id;
pub use crate::error::ServiceError;

impl ServiceError {
    /// The JSON body, with the current request's id.
    pub fn body(&self) -> String {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.to_string(),
                request_id: request_id::current(),
            },
        };
        serde_json::to_string(&body).unwrap_or_default()
    }
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        match &self {
            ServiceError::Unavailable(cause) => {
                tracing::error!(code = self.code(), cause = %cause, "request failed: dependency unavailable")
            }
            ServiceError::Internal(cause) => {
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
        if let ServiceError::Paused {
            retry_after_seconds,
        }
        | ServiceError::RateLimited {
            retry_after_seconds,
        }
        | ServiceError::TooManyStreams {
            retry_after_seconds,
        }
        | ServiceError::Busy {
            retry_after_seconds,
        }
        | ServiceError::Cooldown {
            retry_after_seconds,
        } = self
            && let Ok(value) = HeaderValue::from_str(&retry_after_seconds.max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if matches!(self, ServiceError::Overloaded) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // A shed request closes its connection: a client that does not
        // honour Retry-After pays a new connection for its next try instead
        // of keeping one of this node's busy slots (and a load balancer
        // gets the chance to send it elsewhere).
        if matches!(
            self,
            ServiceError::Overloaded | ServiceError::Busy { .. } | ServiceError::RequestTimeout
        ) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if matches!(self, ServiceError::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
