//! Black-box tests: the real application over HTTP, as a client sees it.

mod helpers;

mod auth;
mod challenges;
mod dashboard;
mod edge;
mod errors;
mod events;
mod fake_live_game;
mod hostile;
mod internal;
mod jwks;
mod live_game;
mod matching;
mod observability;
mod openapi;
mod outages;
mod overload;
mod policies;
mod postgres;
mod production;
mod queue;
mod rating_service;
mod relations;
mod seed_clients;
mod tenants;

#[path = "../support/mod.rs"]
mod support;
