//! W3C trace context (`traceparent`, `tracestate`) across service
//! boundaries (SPEC §8: "API → matcher → live-game-api").
//!
//! A request's `traceparent` is accepted when it is well-formed. With spans
//! exported (`OTEL_EXPORTER_OTLP_ENDPOINT`), the request's span continues
//! that trace, and calls to live-game-api and the rating service carry the
//! calling span's context (their parent is our span). Without, nothing is
//! traced here, and the request's own `traceparent`/`tracestate` are
//! passed on unchanged to the calls made while serving it, so the platform's
//! trace still joins up across this service. The request id is untouched
//! either way.

use std::collections::HashMap;

use axum::http::{HeaderMap, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// The trace context a request came with.
#[derive(Debug, Clone)]
pub struct Incoming {
    traceparent: HeaderValue,
    tracestate: Option<HeaderValue>,
}

tokio::task_local! {
    static INCOMING: Option<Incoming>;
}

/// `version-traceid-parentid-flags`, lower-case hex, neither id all zeros,
/// version `ff` forbidden (W3C Trace Context §3.2).
pub fn well_formed(traceparent: &str) -> bool {
    let parts: Vec<&str> = traceparent.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    match parts.as_slice() {
        [version, trace, parent, flags, rest @ ..] => {
            hex(version, 2)
                && *version != "ff"
                && (rest.is_empty() || *version != "00")
                && hex(trace, 32)
                && nonzero(trace)
                && hex(parent, 16)
                && nonzero(parent)
                && hex(flags, 2)
        }
        _ => false,
    }
}

impl Incoming {
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let traceparent = headers.get(TRACEPARENT)?;
        if !well_formed(traceparent.to_str().ok()?) {
            return None;
        }
        let tracestate = headers
            .get(TRACESTATE)
            .filter(|v| v.len() <= 512 && v.to_str().is_ok())
            .cloned();
        Some(Self {
            traceparent: traceparent.clone(),
            tracestate,
        })
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct Outgoing(HashMap<String, String>);

impl Injector for Outgoing {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// Makes `span` continue the trace of `headers`, whose `traceparent`
/// [`Incoming::from_headers`] accepted (when spans are exported).
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    if !crate::telemetry::exporting() {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
    let _ = span.set_parent(parent);
}

/// Runs `f` with the request's trace context readable by [`outgoing`].
pub async fn scope<F: std::future::Future>(incoming: Option<Incoming>, f: F) -> F::Output {
    INCOMING.scope(incoming, f).await
}

/// The trace headers for a call made now: the current span's context when
/// spans are exported, else the request's own, else none.
pub fn outgoing() -> Vec<(&'static str, String)> {
    if crate::telemetry::exporting() {
        let context = tracing::Span::current().context();
        let mut headers = Outgoing(HashMap::new());
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&context, &mut headers)
        });
        return [TRACEPARENT, TRACESTATE]
            .into_iter()
            .filter_map(|name| headers.0.remove(name).map(|v| (name, v)))
            .collect();
    }
    INCOMING
        .try_with(|incoming| {
            incoming.as_ref().map(|i| {
                let mut headers = Vec::with_capacity(2);
                if let Ok(v) = i.traceparent.to_str() {
                    headers.push((TRACEPARENT, v.to_owned()));
                }
                if let Some(v) = i.tracestate.as_ref().and_then(|v| v.to_str().ok()) {
                    headers.push((TRACESTATE, v.to_owned()));
                }
                headers
            })
        })
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Adds [`outgoing`]'s headers to a call.
pub fn propagate(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    outgoing()
        .into_iter()
        .fold(request, |request, (name, value)| {
            request.header(name, value)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_traceparents_are_accepted() {
        assert!(well_formed(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(well_formed(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(!well_formed(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn without_an_exporter_the_requests_context_is_passed_on_unchanged() {
        let mut headers = HeaderMap::new();
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.insert(TRACEPARENT, HeaderValue::from_static(parent));
        headers.insert(TRACESTATE, HeaderValue::from_static("vendor=x"));
        let incoming = Incoming::from_headers(&headers);
        let seen = scope(incoming, async { outgoing() }).await;
        assert_eq!(
            seen,
            vec![
                (TRACEPARENT, parent.to_owned()),
                (TRACESTATE, "vendor=x".to_owned())
            ]
        );
        assert!(outgoing().is_empty(), "outside a request: nothing");
    }
}
