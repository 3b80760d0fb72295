//! Game creation: the `GameCreator` trait (SPEC §6) and the built-in
//! creator of the embedded default.

use async_trait::async_trait;
use serde::Serialize;

use crate::domain::{
    GameId, MatchId, MatchSource, Mode, Rating, Region, TenantId, TimeControl, UserId, Variant,
};

/// Everything live-game-api needs to create a game.
#[derive(Debug, Clone, Serialize)]
pub struct NewGame {
    pub match_id: MatchId,
    pub tenant_id: TenantId,
    pub white_user_id: UserId,
    pub black_user_id: UserId,
    pub time_control: TimeControl,
    pub mode: Mode,
    pub variant: Variant,
    pub region: Region,
    pub white_rating: Rating,
    pub black_rating: Rating,
    pub source: MatchSource,
    /// Request id of the join that completed the pair, carried to the game
    /// service so one id tells the whole story.
    pub request_id: Option<String>,
}

/// Why a game could not be created.
#[derive(Debug, thiserror::Error)]
pub enum GameCreationError {
    #[error("game service unavailable: {0}")]
    Unavailable(String),
    #[error("game service refused the game: {0}")]
    Refused(String),
}

/// Creates games. Must be idempotent by `match_id`: creating the game of a
/// match twice yields the same game.
#[async_trait]
pub trait GameCreator: Send + Sync + 'static {
    async fn create_game(&self, game: &NewGame) -> Result<GameId, GameCreationError>;
}

/// The embedded default: mints the game id from the match id, so it is
/// idempotent without keeping any state.
#[derive(Debug, Default)]
pub struct LocalGameCreator;

#[async_trait]
impl GameCreator for LocalGameCreator {
    async fn create_game(&self, game: &NewGame) -> Result<GameId, GameCreationError> {
        Ok(GameId::for_match(&game.match_id))
    }
}

/// A game creator behind the circuit breaker: while the breaker is open it
/// answers at once without calling the game service; every real answer
/// tells the breaker how the service is doing. A refusal (4xx) means the
/// service is up, so it counts as healthy.
pub struct GuardedGameCreator {
    inner: std::sync::Arc<dyn GameCreator>,
    breaker: std::sync::Arc<super::breaker::CircuitBreaker>,
}

impl GuardedGameCreator {
    pub fn new(
        inner: std::sync::Arc<dyn GameCreator>,
        breaker: std::sync::Arc<super::breaker::CircuitBreaker>,
    ) -> Self {
        Self { inner, breaker }
    }
}

#[async_trait]
impl GameCreator for GuardedGameCreator {
    async fn create_game(&self, game: &NewGame) -> Result<GameId, GameCreationError> {
        let now = crate::domain::now_millis();
        if !self.breaker.try_acquire(now) {
            crate::observe::game_creation_failed("circuit_open");
            return Err(GameCreationError::Unavailable(
                "circuit breaker open".into(),
            ));
        }
        let started = std::time::Instant::now();
        let result = self.inner.create_game(game).await;
        let now = crate::domain::now_millis();
        match &result {
            Ok(_) => {
                crate::observe::game_created(started.elapsed());
                self.breaker.on_success(now);
            }
            Err(GameCreationError::Refused(_)) => {
                crate::observe::game_creation_failed("refused");
                self.breaker.on_success(now);
            }
            Err(GameCreationError::Unavailable(_)) => {
                crate::observe::game_creation_failed("unavailable");
                self.breaker.on_failure(now);
            }
        }
        result
    }
}
