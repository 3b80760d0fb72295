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
