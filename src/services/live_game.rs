//! The HTTP client of `live-game-api` (SPEC §6): `POST {url}/v1/games`
//! with `X-Request-Id`, `Idempotency-Key: <match_id>` and an optional
//! service bearer token. Retries only transport errors, 5xx and unreadable
//! answers (safe: the idempotency key makes a retry return the same game),
//! with jittered exponential backoff, bounded in count and total time. A
//! 4xx is a refusal: not retried, logged with the answer's body.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use rand::Rng;
use serde::Deserialize;
use serde_json::json;
use tracing::Instrument;

use super::games::{GameCreationError, GameCreator, NewGame};
use crate::domain::{GameId, MatchSource};

/// First backoff; each retry doubles it (with full jitter), up to the cap.
const BACKOFF_BASE: Duration = Duration::from_millis(50);
const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// How much of a refused answer's body goes to the log.
const BODY_LOGGED: usize = 512;

pub struct LiveGameClient {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
    timeout: Duration,
    max_retries: u32,
    budget: Duration,
}

#[derive(Deserialize)]
struct Created {
    game_id: String,
}

/// One attempt's failure: worth retrying or not.
enum Attempt {
    Retry(String),
    Refused(String),
}

impl LiveGameClient {
    pub fn new(
        base_url: &str,
        timeout: Duration,
        token: Option<String>,
        max_retries: u32,
        budget: Duration,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| format!("cannot build the live-game-api client: {e}"))?;
        let base = crate::settings::http_base(base_url, "LIVE_GAME_API_URL")?;
        Ok(Self {
            http,
            url: format!("{base}/v1/games"),
            token,
            timeout,
            max_retries,
            budget,
        })
    }

    async fn attempt(
        &self,
        game: &NewGame,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<GameId, Attempt> {
        let mut request = self
            .http
            .post(&self.url)
            .timeout(timeout)
            .header("Idempotency-Key", game.match_id.to_string())
            .json(body);
        if let Some(id) = &game.request_id {
            request = request.header("X-Request-Id", id);
        }
        request = crate::http::trace_context::propagate(request);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Attempt::Retry(format!("transport: {e}")))?;
        let status = response.status();
        if status.is_server_error() {
            return Err(Attempt::Retry(format!("answered {status}")));
        }
        if !(status == reqwest::StatusCode::OK || status == reqwest::StatusCode::CREATED) {
            let text = response.text().await.unwrap_or_default();
            let shown: String = text.chars().take(BODY_LOGGED).collect();
            return Err(Attempt::Refused(format!("answered {status}: {shown}")));
        }
        let created: Created = response
            .json()
            .await
            .map_err(|e| Attempt::Retry(format!("unreadable answer: {e}")))?;
        GameId::parse(&created.game_id)
            .map_err(|_| Attempt::Retry("answer has an invalid game_id".into()))
    }
}

#[async_trait]
impl GameCreator for LiveGameClient {
    async fn create_game(&self, game: &NewGame) -> Result<GameId, GameCreationError> {
        let span = crate::traced_span!("create_game", match_id = %game.match_id);
        self.create(game).instrument(span).await
    }
}

impl LiveGameClient {
    async fn create(&self, game: &NewGame) -> Result<GameId, GameCreationError> {
        let body = json!({
            "tenant_id": game.tenant_id,
            "white_user_id": game.white_user_id,
            "black_user_id": game.black_user_id,
            "time_control": game.time_control,
            "mode": game.mode,
            "variant": game.variant,
            "rating_snapshot": { "white": game.white_rating, "black": game.black_rating },
            "metadata": {
                "matchmaking_source": match game.source {
                    MatchSource::Queue => "auto",
                    MatchSource::Challenge => "challenge",
                },
                "region": game.region,
                "match_id": game.match_id,
            },
        });
        let deadline = Instant::now() + self.budget;
        let mut backoff = BACKOFF_BASE;
        let mut attempt = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let error = match self.attempt(game, &body, self.timeout.min(left)).await {
                Ok(game_id) => return Ok(game_id),
                Err(Attempt::Refused(why)) => {
                    tracing::warn!(
                        match_id = %game.match_id,
                        request_id = game.request_id.as_deref().unwrap_or(""),
                        answer = %why,
                        "live-game-api refused the game"
                    );
                    return Err(GameCreationError::Refused(why));
                }
                Err(Attempt::Retry(why)) => why,
            };
            attempt += 1;
            let pause =
                Duration::from_millis(rand::rng().random_range(0..=backoff.as_millis() as u64));
            if attempt > self.max_retries || Instant::now() + pause >= deadline {
                return Err(GameCreationError::Unavailable(format!(
                    "{error} (after {attempt} attempts)"
                )));
            }
            tracing::debug!(
                match_id = %game.match_id,
                request_id = game.request_id.as_deref().unwrap_or(""),
                attempt,
                error = %error,
                "retrying CreateGame"
            );
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(BACKOFF_CAP);
        }
    }
}
