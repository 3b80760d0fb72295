//! What a browser and a reverse proxy meet first (SPEC §8): CORS for the
//! origins in `CORS_ALLOWED_ORIGINS`, and `ALLOWED_HOSTS`, which refuses a
//! request naming another `Host` with 400 `INVALID_REQUEST`.
//!
//! CORS wraps everything but the request id, so a preflight is answered
//! before authentication, rate limits or shedding (with its `X-Request-Id`
//! like any answer), and the errors those answer (401, 429, 503) still
//! carry the headers a browser needs to read them.
//! The operations routes are exempt from `ALLOWED_HOSTS`: probes and
//! scrapers address a node by its IP.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::error::ServiceError;
use crate::settings::Settings;

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The request headers a browser client may send (SPEC §8).
const ALLOWED_HEADERS: [HeaderName; 5] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    HeaderName::from_static("idempotency-key"),
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("last-event-id"),
];

/// The response headers a browser client may read (SPEC §8).
const EXPOSED_HEADERS: [HeaderName; 2] =
    [HeaderName::from_static("x-request-id"), header::RETRY_AFTER];

/// The longest request target (path and query) served; longer is 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// The most header bytes (names and values) one request may send besides
/// `Authorization`; more is 431. A bearer token has its own bound (8 KB,
/// past which it is 401 like any other bad token).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The edge's settings, checked once at start.
#[derive(Clone)]
pub struct Edge {
    pub max_body_bytes: usize,
    /// From head to answer (`HTTP_REQUEST_TIMEOUT_SECONDS`).
    pub request_timeout: Duration,
    /// `None`: no CORS headers at all.
    pub cors: Option<CorsLayer>,
    /// `None`: any `Host`.
    pub allowed_hosts: Option<AllowedHosts>,
}

impl Edge {
    /// From `CORS_ALLOWED_ORIGINS`, `ALLOWED_HOSTS` and `MAX_BODY_BYTES`;
    /// an unusable value is refused, naming the setting.
    pub fn from_settings(settings: &Settings) -> Result<Self, String> {
        Ok(Self {
            max_body_bytes: settings.max_body_bytes,
            request_timeout: Duration::from_secs_f64(settings.http_request_timeout_seconds),
            cors: settings
                .cors_allowed_origins
                .as_deref()
                .map(cors)
                .transpose()?,
            allowed_hosts: settings
                .allowed_hosts
                .as_deref()
                .map(AllowedHosts::parse)
                .transpose()?,
        })
    }
}

/// Refuses a request target or a header set over the bounds (414, 431,
/// in the error shape, well under the HTTP stack's own limits, which
/// answer with an empty body), and bounds the time from the request's head
/// to its answer, body included: past `limit`, 408 `REQUEST_TIMEOUT`, and
/// the connection closes.
pub async fn deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return ServiceError::UriTooLong.into_response();
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .filter(|(name, _)| *name != header::AUTHORIZATION)
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return ServiceError::HeadersTooLarge.into_response();
    }
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(answer) => answer,
        Err(_) => ServiceError::RequestTimeout.into_response(),
    }
}

/// The CORS layer for a comma-separated list of origins, or `*`.
pub fn cors(origins: &str) -> Result<CorsLayer, String> {
    let allow = if origins.trim() == "*" {
        AllowOrigin::any()
    } else {
        let list = split(origins)
            .map(|origin| {
                let authority = origin
                    .strip_prefix("https://")
                    .or_else(|| origin.strip_prefix("http://"));
                let valid = authority
                    .is_some_and(|a| !a.is_empty() && !a.contains(['/', '?', '#', '@', ' ']));
                valid
                    .then(|| HeaderValue::from_str(origin).ok())
                    .flatten()
                    .ok_or_else(|| {
                        format!(
                            "CORS_ALLOWED_ORIGINS: {origin:?} is not an origin (scheme://host[:port], no path), nor `*`"
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if list.is_empty() {
            return Err("CORS_ALLOWED_ORIGINS: no origin given (unset it for no CORS)".into());
        }
        AllowOrigin::list(list)
    };
    Ok(CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(ALLOWED_HEADERS)
        .expose_headers(EXPOSED_HEADERS)
        .max_age(PREFLIGHT_MAX_AGE))
}

/// Host names a request may be addressed to (lower case, no port).
#[derive(Clone, Debug)]
pub struct AllowedHosts(Arc<[String]>);

impl AllowedHosts {
    pub fn parse(hosts: &str) -> Result<Self, String> {
        let hosts: Vec<String> = split(hosts).map(str::to_ascii_lowercase).collect();
        if hosts.is_empty() {
            return Err("ALLOWED_HOSTS: no host given (unset it to allow any)".into());
        }
        if let Some(bad) = hosts
            .iter()
            .find(|h| h.contains(['/', ' ', '@']) || h.contains("://"))
        {
            return Err(format!(
                "ALLOWED_HOSTS: {bad:?} is not a host name (give names like api.example.com, no scheme or path)"
            ));
        }
        Ok(Self(hosts.into()))
    }

    /// True when `host` (a `Host` header value, perhaps with a port) is
    /// one of the list.
    pub fn allows(&self, host: &str) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        self.0.contains(&name)
    }
}

/// The name of a `Host` value, without its port (`[::1]:80` → `[::1]`).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

fn split(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Refuses a request addressed to a host not in `ALLOWED_HOSTS`.
pub async fn check_host(
    State(hosts): State<AllowedHosts>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host());
    if super::OPERATIONS_PATHS.contains(&request.uri().path())
        || host.is_some_and(|h| hosts.allows(h))
    {
        return next.run(request).await;
    }
    ServiceError::InvalidRequest("this service is not served under the requested host".into())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_matched_by_name_whatever_the_port_and_case() {
        let hosts = AllowedHosts::parse("api.example.com, localhost,[::1]").unwrap();
        for ok in [
            "api.example.com",
            "API.example.com:8443",
            "localhost:80",
            "[::1]:8080",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for no in [
            "evil.com",
            "api.example.com.evil.com",
            "example.com",
            "127.0.0.1",
        ] {
            assert!(!hosts.allows(no), "{no}");
        }
        assert!(AllowedHosts::parse(" , ").is_err());
        assert!(AllowedHosts::parse("https://api.example.com").is_err());
    }

    #[test]
    fn origins_must_be_origins() {
        assert!(cors("*").is_ok());
        assert!(cors("https://play.example.com, http://localhost:3000").is_ok());
        for bad in [
            "play.example.com",
            "https://play.example.com/",
            "https://play.example.com/app",
            "https://",
            "",
        ] {
            let err = cors(bad).unwrap_err();
            assert!(err.contains("CORS_ALLOWED_ORIGINS"), "{bad}: {err}");
        }
    }
}
