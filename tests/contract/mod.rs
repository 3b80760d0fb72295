//! Store contract suites: each trait's behaviour, written once, run against
//! every implementation by the macros below.

pub mod challenges;
pub mod durable;
pub mod queue;

use matchmaking_api::domain::{Millis, PoolKey, QueueEntry, TenantId, UserId};

pub const T0: Millis = 1_700_000_000_000;

pub fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

pub fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

pub fn pool(s: &str) -> PoolKey {
    s.parse().unwrap()
}

/// A fresh searching entry of `user` in `pool` of tenant `t`.
pub fn entry(t: &str, u: &str, pool_key: &str, rating: i32, at: Millis) -> QueueEntry {
    QueueEntry {
        request_id: Some("req-1".into()),
        ..QueueEntry::searching(tenant(t), user(u), pool(pool_key), rating, at)
    }
}

/// Generates one `#[tokio::test]` per contract case for a backend.
/// `$make` is an async expression yielding `Some(fixture)` (or `None` to
/// skip), where the fixture derefs to the store and keeps whatever the
/// store needs (a temp dir, a server) alive for the test.
#[macro_export]
macro_rules! contract_tests {
    ($suite:path, $make:expr, [$($case:ident),+ $(,)?]) => {
        $(
            #[tokio::test]
            async fn $case() {
                if let Some(store) = $make.await {
                    { use $suite as suite; suite::$case(&*store).await; }
                }
            }
        )+
    };
}
