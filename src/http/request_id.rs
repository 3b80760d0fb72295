//! `X-Request-Id`: taken from the request when it is a sane token, else
//! generated; echoed on every response, set on the request's tracing span,
//! and readable anywhere inside the request through [`current`].

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::Instrument;

pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Whether requests open a tracing span carrying their id (the pretty
/// format shows spans; JSON lines read the id from the request itself, so
/// they need none and save the span's cost).
static SPANS: AtomicBool = AtomicBool::new(true);

/// Turns the per-request span off (JSON logs) or on.
pub fn set_request_spans(on: bool) {
    SPANS.store(on, Ordering::Relaxed);
}

/// The id of the request being served, or `""` outside a request.
pub fn current() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// Calls `f` with the id of the request being served, without copying
/// it; outside a request, answers `None` without calling it.
pub fn with_current<R>(f: impl FnOnce(&str) -> R) -> Option<R> {
    REQUEST_ID.try_with(|id| f(id)).ok()
}

/// A client-sent id is kept only if it is 1–128 characters of
/// `[A-Za-z0-9._:-]`, so it can never forge a log line.
fn acceptable(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

pub async fn middleware(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(str::to_owned)
        .unwrap_or_else(|| ulid::Ulid::new().to_string());
    let span = if SPANS.load(Ordering::Relaxed) {
        tracing::info_span!(
            "request",
            request_id = %id,
            method = %request.method(),
            path = %request.uri().path(),
        )
    } else {
        tracing::Span::none()
    };
    let trace = super::trace_context::Incoming::from_headers(request.headers());
    if trace.is_some() {
        super::trace_context::continue_trace(&span, request.headers());
    }
    let header = HeaderValue::from_str(&id);
    let mut response = REQUEST_ID
        .scope(
            id,
            super::trace_context::scope(trace, next.run(request).instrument(span)),
        )
        .await;
    if let Ok(value) = header {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_sane_ids_are_kept() {
        assert!(super::acceptable("abc-123_x.y:z"));
        assert!(!super::acceptable(""));
        assert!(!super::acceptable("a b"));
        assert!(!super::acceptable("a\nb"));
        assert!(!super::acceptable(&"a".repeat(129)));
    }
}
