//! Services: what the API and the worker do, over the stores.
//!
//! - [`queue`]: join, cancel, status, active (SPEC §3.1).
//! - [`matching`]: one matching pass over a pool and the commit protocol
//!   of SPEC §5 (reserve, create the game, persist, mark matched).
//! - [`challenges`]: direct challenges (SPEC §3.2).
//! - [`games`]: the `GameCreator` trait, the built-in creator, and the
//!   breaker-guarded wrapper; [`live_game`]: the live-game-api client;
//!   [`breaker`]: the circuit breaker.
//! - [`ratings`]: ratings per speed from the rating store.
//! - [`signal`]: how a join makes its pool due for the worker at once.
//! - [`summary`]: the per-pool queue summary of the admin API.

pub mod backlog;
pub mod breaker;
pub mod challenges;
pub mod games;
pub mod guards;
pub mod live_game;
pub mod matching;
pub mod queue;
pub mod ratings;
pub mod signal;
pub mod summary;

use crate::domain::ParseError;
use crate::store::StoreError;

/// Why a service refused or failed a request; the HTTP layer maps each
/// variant to the SPEC's error code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    InvalidRequest(#[from] ParseError),
    #[error("not found")]
    NotFound,
    #[error("already searching with other parameters")]
    AlreadyInQueue,
    #[error("a game of this player has not finished")]
    ActiveGameExists,
    #[error("already matched or being matched")]
    CannotCancel,
    #[error("{0}")]
    InvalidState(&'static str),
    #[error("{0}")]
    CannotAccept(&'static str),
    #[error("too many pending challenges")]
    TooManyChallenges,
    #[error("challenges are turned off")]
    ChallengesDisabled,
    #[error("the game could not be created: {0}")]
    GameCreation(String),
    #[error("game creation is down; matching is paused")]
    Paused { retry_after_seconds: u64 },
    /// Matching is behind on the pool: new joins to it wait outside.
    #[error("matching is behind on this pool; retry shortly")]
    PoolBusy { retry_after_seconds: u64 },
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}
