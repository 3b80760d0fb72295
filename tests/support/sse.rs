//! A small Server-Sent Events client for the tests: opens an entry's event
//! stream and reads its events one by one, as a browser's `EventSource`
//! would (comments skipped, `id`/`data`/`retry` fields read).

use std::time::Duration;

use serde_json::Value;

/// One event as the client reads it.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub data: Value,
    pub retry: Option<u64>,
}

impl SseEvent {
    pub fn id(&self) -> u64 {
        self.id
            .as_deref()
            .and_then(|i| i.parse().ok())
            .expect("a numeric event id")
    }

    pub fn status(&self) -> &str {
        self.data["status"].as_str().unwrap_or_default()
    }
}

/// An open event stream.
pub struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

/// Opens `{base}/v1/matchmaking/queue/{id}/events` (with `Last-Event-ID`
/// when given); answers the response as it came (the caller checks 200).
pub async fn open(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    id: &str,
    last_event_id: Option<&str>,
) -> reqwest::Response {
    let mut request = client
        .get(format!("{base}/v1/matchmaking/queue/{id}/events"))
        .bearer_auth(token);
    if let Some(last) = last_event_id {
        request = request.header("last-event-id", last);
    }
    request.send().await.expect("request")
}

impl EventStream {
    /// Reads events of a 200 answer.
    pub fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "an event stream"
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event, `None` once the server ended the stream; panics if
    /// none comes `within`.
    pub async fn next(&mut self, within: Duration) -> Option<SseEvent> {
        tokio::time::timeout(within, self.read())
            .await
            .unwrap_or_else(|_| panic!("no event within {within:?}"))
    }

    /// The next event if one comes `within` (`Some(None)`: the stream
    /// ended), `None` if none does.
    pub async fn poll(&mut self, within: Duration) -> Option<Option<SseEvent>> {
        tokio::time::timeout(within, self.read()).await.ok()
    }

    async fn read(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse(&block) {
                    return Some(event);
                }
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

/// An event block; `None` for a block of comments only (keep-alives).
fn parse(block: &str) -> Option<SseEvent> {
    let (mut id, mut data, mut retry) = (None, None::<String>, None);
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.to_owned()),
            "data" => {
                data = Some(match data {
                    Some(d) => format!("{d}\n{value}"),
                    None => value.to_owned(),
                })
            }
            "retry" => retry = value.parse().ok(),
            _ => {} // a comment (empty field name), or a field we do not use
        }
    }
    let data = data?;
    Some(SseEvent {
        id,
        data: serde_json::from_str(&data).expect("event data is JSON"),
        retry,
    })
}
