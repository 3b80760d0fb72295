//! Bytes per waiting entry in the in-memory queue store (issue 6): counts
//! the heap bytes live before and after joining N players (a counting
//! global allocator, so the figure is exact, not an RSS estimate), and
//! shows the process RSS too. Each player has a username and a request id,
//! as a real join does; no client_metadata.
//!
//! Then it matches them all, pair by pair (reserve, commit with a record),
//! and counts again: a matched player holds a finished entry (kept
//! `ENTRY_RETENTION_SECONDS`) and an active-game guard (kept until the game
//! is reported finished, at most `ACTIVE_GAME_GUARD_SECONDS`).
//!
//! Usage: cargo run --release --example memory_per_entry -- [entries=1000000]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use matchmaking_api::domain::{
    GameId, MatchRecord, MatchSide, MatchSource, QueueEntry, TenantId, UserId, Username, now_millis,
};
use matchmaking_api::store::memory::MemoryQueueStore;
use matchmaking_api::store::{EntryStore, GuardStore, PairingStore, Reservation};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let tenant = TenantId::parse("bench").unwrap();
    let pools: Vec<_> = [
        "standard_5+0_rated_GLOBAL",
        "standard_3+2_rated_EU",
        "standard_10+0_casual_NA",
    ]
    .iter()
    .map(|k| k.parse().unwrap())
    .collect();
    // Counted from before the entries exist: their strings end up in the
    // store, and the vector that carries them in is gone by the end.
    let store = MemoryQueueStore::new();
    store.mark_guards_intact().await.unwrap();
    let (heap_before, rss_before) = (LIVE.load(Ordering::Relaxed), rss_kib());
    let now = now_millis();
    let entries: Vec<QueueEntry> = (0..n)
        .map(|i| {
            let mut e = QueueEntry::searching(
                tenant.clone(),
                UserId::parse(&format!("user-{i:08}")).unwrap(),
                pools[i % pools.len()],
                1000 + (i % 1500) as i32,
                now,
            );
            e.username = Username::sanitize(&format!("Player {i}"));
            e.request_id = Some(format!("{:032x}", i));
            e
        })
        .collect();
    for e in entries {
        store.join(e, now).await.unwrap();
    }
    let (heap_after, rss_after) = (LIVE.load(Ordering::Relaxed), rss_kib());
    let waiting: usize = {
        let mut total = 0;
        for p in store.pools().await.unwrap() {
            total += store.waiting(&p).await.unwrap().len();
        }
        total
    };
    assert_eq!(waiting, n, "every entry is waiting");
    println!("entries waiting: {n}");
    println!(
        "heap held by the store: {} bytes = {:.0} bytes per entry (entry, its strings, every index)",
        heap_after - heap_before,
        (heap_after - heap_before) as f64 / n as f64
    );
    println!(
        "RSS: {} KiB before, {} KiB after: {:.0} bytes per entry",
        rss_before,
        rss_after,
        (rss_after.saturating_sub(rss_before) * 1024) as f64 / n as f64
    );

    // Match everyone: each pool's entries two by two.
    let heap_waiting = LIVE.load(Ordering::Relaxed);
    let mut players = 0;
    for p in store.pools().await.unwrap() {
        let waiting = store.waiting(&p).await.unwrap();
        for pair in waiting.chunks_exact(2) {
            let r = Reservation::new(pair[0].id, pair[1].id);
            store
                .reserve(&p, std::slice::from_ref(&r), now + 30_000, now)
                .await
                .unwrap();
            let side = |w: &matchmaking_api::store::Waiting| MatchSide {
                user_id: w.user_id.clone(),
                username: w.username.clone(),
                rating: w.rating,
                entry_id: Some(w.id),
                region: None,
                time_control: None,
            };
            let record = MatchRecord {
                match_id: r.match_id,
                tenant_id: p.tenant_id.clone(),
                game_id: GameId::for_match(&r.match_id),
                white: side(&pair[0]),
                black: side(&pair[1]),
                pool: p.key,
                created_at: now,
                source: MatchSource::Queue,
                finished_at: None,
            };
            store.commit(&[record], now + 3_600_000, now).await.unwrap();
            players += 2;
        }
    }
    let heap_matched = LIVE.load(Ordering::Relaxed);
    println!(
        "matched players: {players}; heap held by the store: {} bytes = {:.0} bytes per matched player (its finished entry and its guard), {:+.0} bytes against waiting",
        heap_matched - heap_before,
        (heap_matched - heap_before) as f64 / players as f64,
        (heap_matched - heap_waiting) as f64 / players as f64
    );
}
