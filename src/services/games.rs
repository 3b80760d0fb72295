//! Game creation: the `GameCreator` trait (SPEC §6) and the built-in
//! creator of the embedded default.

use async_trait::async_trait;
use serde::Serialize;

use crate::domain::{
    GameId, MatchId, MatchIntent, MatchSource, Mode, Rating, Region, TenantId, TimeControl, UserId,
    Variant,
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

impl NewGame {
    /// The game of a match intent (colors and ratings as decided).
    pub fn of(intent: &MatchIntent, request_id: Option<String>) -> Self {
        NewGame {
            match_id: intent.match_id,
            tenant_id: intent.tenant_id.clone(),
            white_user_id: intent.white.user_id.clone(),
            black_user_id: intent.black.user_id.clone(),
            time_control: intent.pool.time_control,
            mode: intent.pool.mode,
            variant: intent.pool.variant,
            region: intent.pool.region,
            white_rating: intent.white.rating,
            black_rating: intent.black.rating,
            source: intent.source,
            request_id,
        }
    }
}

/// Creates games. Must be idempotent by `match_id`: creating the game of a
/// match twice yields the same game.
#[async_trait]
pub trait GameCreator: Send + Sync + 'static {
    async fn create_game(&self, game: &NewGame) -> Result<GameId, GameCreationError>;

    /// The id `create_game` will answer, when it is known without asking
    /// anyone (the creator has no side effect and cannot fail): then a
    /// match is recorded with its game in one write, with no intent first.
    fn known_game_id(&self, _game: &NewGame) -> Option<GameId> {
        None
    }
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

    fn known_game_id(&self, game: &NewGame) -> Option<GameId> {
        Some(GameId::for_match(&game.match_id))
    }
}

/// A game creator behind the circuit breaker: while the breaker is open it
/// answers at once without calling the game service; every real answer
/// tells the breaker how the service is doing. A refusal (4xx) means the
/// service is up, so it counts as healthy.
pub struct GuardedGameCreator {
    inner: std::sync::Arc<dyn GameCreator>,
    breaker: std::sync::Arc<super::breaker::CircuitBreaker>,
    clock: std::sync::Arc<dyn crate::domain::Clock>,
}

impl GuardedGameCreator {
    pub fn new(
        inner: std::sync::Arc<dyn GameCreator>,
        breaker: std::sync::Arc<super::breaker::CircuitBreaker>,
        clock: std::sync::Arc<dyn crate::domain::Clock>,
    ) -> Self {
        Self {
            inner,
            breaker,
            clock,
        }
    }
}

#[async_trait]
impl GameCreator for GuardedGameCreator {
    fn known_game_id(&self, game: &NewGame) -> Option<GameId> {
        self.inner.known_game_id(game)
    }

    async fn create_game(&self, game: &NewGame) -> Result<GameId, GameCreationError> {
        let now = self.clock.now();
        if !self.breaker.try_acquire(now) {
            crate::observe::game_creation_failed("circuit_open");
            return Err(GameCreationError::Unavailable(
                "circuit breaker open".into(),
            ));
        }
        let started = std::time::Instant::now();
        let result = self.inner.create_game(game).await;
        let now = self.clock.now();
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
