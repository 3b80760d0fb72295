//! Load shedding: a bound on requests in flight per node
//! (`MAX_IN_FLIGHT_REQUESTS`). Past it a request answers 503
//! `MATCHMAKING_UNAVAILABLE` with `Retry-After` at once — it is not queued
//! — so the requests that were admitted keep their latency and the node's
//! memory stays bounded in an overload, while a load balancer or client
//! retries elsewhere or later. The operations routes (`/healthz`,
//! `/health`, `/readyz`, `/metrics`) are never shed: a node that is busy is
//! not a node that is down.

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ServiceError;

/// The node's requests in flight, against its bound (0 = no bound).
#[derive(Debug)]
pub struct InFlight {
    limit: usize,
    now: AtomicUsize,
}

/// One admitted request; leaving (or being dropped with a client that went
/// away) frees its place.
pub struct Admitted<'a>(&'a InFlight);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            now: AtomicUsize::new(0),
        }
    }

    /// A place for one more request, unless the node is at its bound.
    pub fn enter(&self) -> Option<Admitted<'_>> {
        let before = self.now.fetch_add(1, Ordering::AcqRel);
        let admitted = Admitted(self);
        (self.limit == 0 || before < self.limit).then_some(admitted)
    }

    /// Requests in flight now.
    pub fn current(&self) -> usize {
        self.now.load(Ordering::Acquire)
    }
}

/// Admits the request or sheds it (see the module docs).
pub async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if super::OPERATIONS_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let Some(_admitted) = state.in_flight.enter() else {
        crate::observe::shed();
        return ServiceError::Overloaded.into_response();
    };
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_and_freed_when_a_request_leaves() {
        let in_flight = InFlight::new(2);
        let a = in_flight.enter().expect("first");
        let b = in_flight.enter().expect("second");
        assert!(in_flight.enter().is_none(), "the third is shed");
        assert_eq!(in_flight.current(), 2, "a shed request holds no place");
        drop(a);
        let c = in_flight.enter().expect("a place was freed");
        drop((b, c));
        assert_eq!(in_flight.current(), 0);
    }

    #[test]
    fn a_bound_of_zero_sheds_nothing() {
        let in_flight = InFlight::new(0);
        let held: Vec<_> = (0..1_000).map(|_| in_flight.enter().unwrap()).collect();
        assert_eq!(in_flight.current(), 1_000);
        drop(held);
    }
}
