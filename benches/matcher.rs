//! Matcher benchmarks (issue 6): one matching pass over synthetic pools of
//! 1k to 1M waiting entries (ratings ~ N(1500, 300), waits uniform over the
//! last two minutes), and the event-driven path: one arrival into a pool of
//! 10k waiting players none of whom can meet another.
//!
//! Run: `cargo bench --bench matcher` (figures in BENCHMARKS.md).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use matchmaking_api::domain::PoolPolicy;
use matchmaking_api::matcher::{Seeker, find_pairs};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NOW: i64 = 1_700_000_000_000;

/// A rating from N(1500, 300), clamped to 600..=2800 (Box–Muller).
fn rating(rng: &mut StdRng) -> i32 {
    let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (1500.0 + 300.0 * z).round().clamp(600.0, 2800.0) as i32
}

fn users(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("player-{i}")).collect()
}

fn realistic_pool(users: &[String], seed: u64) -> Vec<Seeker<'_>> {
    let mut rng = StdRng::seed_from_u64(seed);
    users
        .iter()
        .map(|u| Seeker {
            user: u,
            rating: rating(&mut rng),
            enqueued_at: NOW - rng.random_range(0..120_000),
            range: None,
            deviation: matchmaking_api::domain::UNKNOWN_DEVIATION,
            color: 0,
        })
        .collect()
}

fn pass(c: &mut Criterion) {
    let policy = PoolPolicy::default();
    let mut group = c.benchmark_group("matching_pass");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for n in [1_000, 10_000, 100_000, 1_000_000] {
        let names = users(n);
        let pool = realistic_pool(&names, 7);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &pool, |b, pool| {
            b.iter(|| black_box(find_pairs(black_box(pool), NOW, &policy)))
        });
    }
    group.finish();
}

/// 100k players in groups of exactly 12 (ratings 5 points apart within a
/// group, groups 600 apart, beyond any window): every segment goes to the
/// exact solver, the cold or recovering pool's worst case for it.
fn segments_of_12(c: &mut Criterion) {
    let policy = PoolPolicy::default();
    let names = users(100_008);
    let mut rng = StdRng::seed_from_u64(7);
    let pool: Vec<Seeker<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, u)| Seeker {
            user: u,
            rating: (i / 12) as i32 * 600 + (i % 12) as i32 * 5,
            enqueued_at: NOW - rng.random_range(0..120_000),
            range: None,
            deviation: matchmaking_api::domain::UNKNOWN_DEVIATION,
            color: 0,
        })
        .collect();
    assert_eq!(find_pairs(&pool, NOW, &policy).len(), 100_008 / 2);
    let mut group = c.benchmark_group("matching_pass_segments_of_12");
    group.sample_size(10);
    group.throughput(Throughput::Elements(pool.len() as u64));
    group.bench_function("100k", |b| {
        b.iter(|| black_box(find_pairs(black_box(&pool), NOW, &policy)))
    });
    group.finish();
}

fn arrival(c: &mut Criterion) {
    let policy = PoolPolicy::default();
    let names = users(10_001);
    // 10k players who just arrived, 101 points apart: with the initial
    // window of 100 no two can meet. The arrival sits beside one of them.
    let mut pool: Vec<Seeker<'_>> = names[..10_000]
        .iter()
        .enumerate()
        .map(|(i, u)| Seeker {
            user: u,
            rating: i as i32 * 101,
            enqueued_at: NOW,
            range: None,
            deviation: matchmaking_api::domain::UNKNOWN_DEVIATION,
            color: 0,
        })
        .collect();
    pool.push(Seeker {
        user: &names[10_000],
        rating: 5_000 * 101 + 30,
        enqueued_at: NOW,
        range: None,
        deviation: matchmaking_api::domain::UNKNOWN_DEVIATION,
        color: 0,
    });
    assert_eq!(find_pairs(&pool, NOW, &policy).len(), 1);
    c.bench_function("one_arrival_into_10k_waiting", |b| {
        b.iter(|| black_box(find_pairs(black_box(&pool), NOW, &policy)))
    });
}

criterion_group!(benches, pass, segments_of_12, arrival);
criterion_main!(benches);
