//! Match-found push (SPEC §3.1): an entry's event stream, and the
//! heartbeat of a client that neither polls nor streams.

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::AppState;
use super::error::ServiceError;
use super::extract::{Caller, Ids};
use super::openapi;
use super::queue::{entry_id, status_answer};
use crate::services::events::{Opened, StreamEvent};

/// How long a client's `EventSource` waits before it reconnects (after a
/// node's shutdown ended its stream, or a network cut).
const RECONNECT_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// GET /v1/matchmaking/queue/{queue_entry_id}/events
#[utoipa::path(
    get,
    path = "/v1/matchmaking/queue/{queue_entry_id}/events",
    tag = "queue",
    summary = "An entry's status as Server-Sent Events (also the client's heartbeat)",
    description = "A first event with the current status, then one per change: `SEARCHING` with a fresh `estimated_wait_seconds` each time the rating window widens, then the final `MATCHED`, `TIMED_OUT` or `CANCELLED`, after which the stream ends. Each event's `data` is the status answer (JSON). Ids grow: a `SEARCHING` event's id is 1 + the window's widenings so far, the final event's is 1000000. Reconnecting with `Last-Event-ID` sends only later events (204 when the client has the final one). Comments keep an idle stream alive. While it is open, the client counts as present.",
    params(
        ("queue_entry_id" = String, Path, description = "The entry id (`q_…`)."),
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event the client has (on a reconnect)."),
    ),
    responses(
        (status = 200, description = "The event stream: each event's data is an EntryStatus object", content_type = "text/event-stream", body = openapi::QueueEvent),
        (status = 204, description = "The client has the final event already (Last-Event-ID): nothing more will come"),
        (status = 400, description = "INVALID_REQUEST: Last-Event-ID is not an event id", body = openapi::ErrorBody),
        (status = 404, description = "NOT_FOUND: unknown, malformed, or not yours", body = openapi::ErrorBody),
        (status = 429, description = "RATE_LIMITED: too many open streams (yours, or on this node); poll instead or retry after Retry-After", body = openapi::ErrorBody),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn events(
    State(state): State<AppState>,
    Caller(who): Caller,
    Ids(id): Ids<String>,
    headers: HeaderMap,
) -> Result<Response, ServiceError> {
    let last_event_id = last_event_id(&headers)?;
    let stream = match state
        .events
        .open(&who, entry_id(&id)?, last_event_id)
        .await?
    {
        Opened::Finished => return Ok(StatusCode::NO_CONTENT.into_response()),
        Opened::Stream(stream) => stream,
    };
    let mut first = true;
    let events = stream.map(move |event| {
        let sse = sse_event(&event);
        // The first event tells the client how soon to reconnect.
        let sse = if std::mem::take(&mut first) {
            sse.retry(RECONNECT_AFTER)
        } else {
            sse
        };
        Ok::<_, Infallible>(sse)
    });
    let keep_alive = KeepAlive::new().interval(state.events.limits().keep_alive);
    let mut response = Sse::new(events).keep_alive(keep_alive).into_response();
    // Proxies that buffer answers (nginx) pass this one through at once.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

fn sse_event(event: &StreamEvent) -> Event {
    let data = serde_json::to_string(&status_answer(&event.view)).unwrap_or_default();
    Event::default().id(event.id.to_string()).data(data)
}

/// The client's `Last-Event-ID`, if it sent one.
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ServiceError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("?");
    if text.is_empty() {
        return Ok(None); // an EventSource's "no id yet"
    }
    let digits = text.len() <= 19 && text.bytes().all(|b| b.is_ascii_digit());
    digits
        .then(|| text.parse().ok())
        .flatten()
        .map(Some)
        .ok_or_else(|| {
            ServiceError::InvalidRequest(
                "Last-Event-ID must be the id of an event of this stream (up to 19 digits)".into(),
            )
        })
}

/// POST /v1/matchmaking/queue/{queue_entry_id}/heartbeat
#[utoipa::path(
    post,
    path = "/v1/matchmaking/queue/{queue_entry_id}/heartbeat",
    tag = "queue",
    summary = "Mark the client present (without polling or streaming)",
    description = "An entry whose client has not been heard from (a status read, an open event stream, or this) for PRESENCE_TIMEOUT_SECONDS is cancelled with reason ABSENT before it can be matched. Answers the entry's status, like a status read.",
    params(("queue_entry_id" = String, Path, description = "The entry id (`q_…`).")),
    responses(
        (status = 200, description = "Heard from; the entry's status", body = openapi::EntryStatus),
        (status = 404, description = "NOT_FOUND: unknown, malformed, or not yours", body = openapi::ErrorBody),
        openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub async fn heartbeat(
    state: State<AppState>,
    caller: Caller,
    id: Ids<String>,
) -> Result<Json<openapi::EntryStatus>, ServiceError> {
    super::queue::status(state, caller, id).await
}
