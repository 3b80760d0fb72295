//! Matching-commit throughput without HTTP: fills a pool of the in-memory
//! store with N searching players (close ratings), then times one pass of
//! the real MatchingService (matcher, reserve, built-in game creation,
//! SQLite persistence, commit).
//!
//! Usage: cargo run --release --example commit_throughput -- [players=20000] [pairs-per-round=50]

use std::sync::Arc;
use std::time::Instant;

use matchmaking_api::domain::{PoolPolicy, PoolRef, QueueEntry, TenantId, UserId, now_millis};
use matchmaking_api::services::breaker::CircuitBreaker;
use matchmaking_api::services::games::LocalGameCreator;
use matchmaking_api::services::live::{LiveConfig, LiveDefaults};
use matchmaking_api::services::matching::{MatchingLimits, MatchingService};
use matchmaking_api::store::memory::MemoryQueueStore;
use matchmaking_api::store::sqlite::SqliteStore;
use matchmaking_api::store::{DurableStore, EntryStore, GuardStore};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let players: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let per_round: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::connect(&format!("sqlite://{}", dir.path().join("b.db").display()))
        .await
        .unwrap();
    sqlite.migrate().await.unwrap();
    let queue = Arc::new(MemoryQueueStore::new());
    // A fresh store with nobody in a game: its guards are intact.
    queue.mark_guards_intact().await.unwrap();
    let pool = PoolRef {
        tenant_id: TenantId::parse("bench").unwrap(),
        key: "standard_5+0_rated_GLOBAL".parse().unwrap(),
    };
    let now = now_millis();
    for i in 0..players {
        let user = UserId::parse(&format!("player-{i}")).unwrap();
        let entry = QueueEntry::searching(
            pool.tenant_id.clone(),
            user,
            pool.key,
            1400 + (i % 200) as i32,
            now,
        );
        queue.join(entry, now).await.unwrap();
    }
    let durable: Arc<dyn DurableStore> = Arc::new(sqlite);
    let policies = Arc::new(LiveConfig::new(
        LiveDefaults::of_policy(PoolPolicy::default()),
        durable.clone(),
    ));
    let matching = MatchingService::new(
        (queue.clone(), queue),
        durable,
        Arc::new(LocalGameCreator),
        Arc::new(CircuitBreaker::new(5, 10_000)),
        policies,
        MatchingLimits {
            pairs_per_batch: per_round,
            reservation_ms: 30_000,
            guard_ms: 3_600_000,
            presence_ms: None,
        },
        Arc::new(matchmaking_api::services::backlog::Backlog::new(
            std::time::Duration::ZERO,
        )),
    );
    let started = Instant::now();
    let report = matching.run_pool(&pool).await.unwrap();
    let took = started.elapsed();
    println!(
        "{} players, {} pairs per round: {} pairs committed in {:.1} ms = {:.0} pairs/s ({:.1} µs per pair)",
        players,
        per_round,
        report.matched_pairs,
        took.as_secs_f64() * 1000.0,
        report.matched_pairs as f64 / took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / report.matched_pairs.max(1) as f64
    );
}
