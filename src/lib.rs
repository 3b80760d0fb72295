//! # matchmaking-api
//!
//! Players ask to play; the service queues them per tenant and pool, pairs
//! them by rating with a window that widens while they wait, creates the game
//! and hands both players its id.
//!
//! ## Layout
//!
//! - [`domain`]: the values of SPEC §4, parsed at the edge.
//! - [`matcher`]: the pure pairing function (snapshot, now, policy → pairs)
//!   and the general matching solver under it.
//! - [`store`]: the queue store and durable store traits and their
//!   implementations.
//! - [`settings`]: every setting (environment, `.env`, CLI flags).
//! - [`auth`]: JWT verification and the dev-mode token minting.
pub mod auth;
pub mod domain;
pub mod error;
pub mod http;
pub mod matcher;
pub mod observe;
pub mod runs_on;
pub mod services;
pub mod settings;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod worker;
