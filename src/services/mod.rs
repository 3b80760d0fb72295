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
//! - [`relations`]: players' blocks and fair-play restrictions.

pub mod backlog;
pub mod breaker;
pub mod challenges;
pub mod events;
pub mod explain;
pub mod games;
pub mod guards;
pub mod live;
pub mod live_game;
pub mod matching;
pub mod queue;
pub mod rating_api;
pub mod ratings;
pub mod relations;
pub mod signal;
pub mod summary;

pub use crate::error::ServiceError;
