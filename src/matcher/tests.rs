//! Properties of the matcher on random snapshots: never an incompatible pair,
//! never a user twice, always maximal, and optimal on small snapshots.

use std::collections::HashSet;

use proptest::prelude::*;

use super::*;

const NOW: Millis = 1_000_000;

fn policy() -> PoolPolicy {
    PoolPolicy {
        initial_window: 100,
        widening_interval_ms: 10_000,
        widening_amount: 25,
        max_gap: 500,
        max_queue_time_ms: 600_000,
    }
}

/// (user number, rating, seconds waited) → a snapshot.
fn snapshot(raw: &[(u8, i32, i64)], users: &[String]) -> Vec<Seeker<'static>> {
    raw.iter()
        .map(|&(u, rating, waited)| Seeker {
            user: leak(&users[u as usize]),
            rating,
            enqueued_at: NOW - waited * 1000,
        })
        .collect()
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

fn users() -> Vec<String> {
    (0..=255).map(|i| format!("u{i}")).collect()
}

fn check_valid_and_maximal(snap: &[Seeker<'_>], pairs: &[Pair]) -> Result<(), TestCaseError> {
    let p = policy();
    let mut used = HashSet::new();
    let mut users_used = HashSet::new();
    for pair in pairs {
        prop_assert!(
            used.insert(pair.a) && used.insert(pair.b),
            "entry twice: {pair:?}"
        );
        prop_assert!(users_used.insert(snap[pair.a].user), "user twice");
        prop_assert!(users_used.insert(snap[pair.b].user), "user twice");
    }
    prop_assert!(
        objective(snap, NOW, &p, pairs).is_some(),
        "an incompatible pair"
    );
    let (_, edges) = compatibility_graph(snap, NOW, &p);
    for (u, v, _) in edges {
        prop_assert!(
            used.contains(&u) || used.contains(&v),
            "not maximal: {u} and {v} are compatible and both unmatched"
        );
    }
    Ok(())
}

/// Distinct users (as the store guarantees), ratings and waits.
fn pool(
    sizes: std::ops::RangeInclusive<usize>,
    ratings: std::ops::Range<i32>,
    waits: i64,
) -> impl Strategy<Value = Vec<(u8, i32, i64)>> {
    proptest::collection::vec((ratings, 0i64..waits), sizes).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(u, (r, w))| (u as u8, r, w))
            .collect()
    })
}

fn small_pool() -> impl Strategy<Value = Vec<(u8, i32, i64)>> {
    pool(0..=10, 1200..1800, 120)
}

fn large_pool() -> impl Strategy<Value = Vec<(u8, i32, i64)>> {
    pool(20..=200, 800..2400, 200)
}

proptest! {
    #[test]
    fn small_snapshots_reach_the_exact_optimum(raw in small_pool()) {
        let users = users();
        let snap = snapshot(&raw, &users);
        let pairs = find_pairs(&snap, NOW, &policy());
        check_valid_and_maximal(&snap, &pairs)?;
        let (n, edges) = compatibility_graph(&snap, NOW, &policy());
        prop_assert_eq!(
            objective(&snap, NOW, &policy(), &pairs).unwrap(),
            solver::brute_force(n, &edges)
        );
    }

    #[test]
    fn large_snapshots_are_valid_and_maximal(raw in large_pool()) {
        let users = users();
        let snap = snapshot(&raw, &users);
        let pairs = find_pairs(&snap, NOW, &policy());
        check_valid_and_maximal(&snap, &pairs)?;
    }

    /// As many pairs as the exact optimum (blossom) on pools of 20 to 200
    /// players, whatever their segments: no pair is lost.
    #[test]
    fn large_snapshots_lose_no_pair_against_the_optimum(raw in large_pool()) {
        let users = users();
        let snap = snapshot(&raw, &users);
        let pairs = find_pairs(&snap, NOW, &policy());
        let (n, edges) = compatibility_graph(&snap, NOW, &policy());
        prop_assert_eq!(pairs.len(), solver::blossom(n, &edges).len());
    }

    #[test]
    fn a_user_with_two_entries_is_matched_at_most_once(
        raw in proptest::collection::vec((0u8..6, 1400i32..1600, 0i64..60), 0..=40),
    ) {
        let users = users();
        let snap = snapshot(&raw, &users);
        let pairs = find_pairs(&snap, NOW, &policy());
        let mut seen = HashSet::new();
        for p in &pairs {
            prop_assert!(seen.insert(snap[p.a].user) && seen.insert(snap[p.b].user));
        }
        prop_assert!(objective(&snap, NOW, &policy(), &pairs).is_some());
    }

    #[test]
    fn blocked_players_never_meet(raw in large_pool()) {
        let users = users();
        let snap = snapshot(&raw, &users);
        // Users with even numbers block users with odd numbers.
        let parity = |i: usize| snap[i].user[1..].parse::<u32>().unwrap() % 2;
        let pairs = find_pairs_with(&snap, NOW, &policy(), |a, b| parity(a) != parity(b));
        for p in pairs {
            prop_assert_eq!(parity(p.a), parity(p.b));
        }
    }
}

#[test]
fn a_gap_beyond_both_windows_waits_for_widening() {
    let users = users();
    // 1500 and 1700: a 200-point gap needs both windows at 200, i.e. 40 s.
    let at = |waited| snapshot(&[(0, 1500, waited), (1, 1700, waited)], &users);
    assert!(find_pairs(&at(39), NOW, &policy()).is_empty());
    assert_eq!(find_pairs(&at(40), NOW, &policy()).len(), 1);
    // One window wide enough is not enough: both must cover the gap.
    let lopsided = snapshot(&[(0, 1500, 600), (1, 1700, 0)], &users);
    assert!(find_pairs(&lopsided, NOW, &policy()).is_empty());
}

#[test]
fn the_longest_waiting_are_served_first() {
    let users = users();
    // Three compatible players, one pair possible: the two who waited longest.
    let snap = snapshot(&[(0, 1500, 5), (1, 1510, 25), (2, 1540, 30)], &users);
    let pairs = find_pairs(&snap, NOW, &policy());
    assert_eq!(pairs.len(), 1);
    let mut got = [pairs[0].a, pairs[0].b];
    got.sort();
    assert_eq!(got, [1, 2]);
}

#[test]
fn among_equal_waits_the_closest_ratings_meet() {
    let users = users();
    let snap = snapshot(&[(0, 1500, 1), (1, 1590, 1), (2, 1510, 1)], &users);
    let pairs = find_pairs(&snap, NOW, &policy());
    let mut got = [pairs[0].a, pairs[0].b];
    got.sort();
    assert_eq!(got, [0, 2]);
}

#[test]
fn one_user_is_never_paired_with_itself() {
    let users = users();
    let snap = snapshot(&[(7, 1500, 1), (7, 1500, 1)], &users);
    assert!(find_pairs(&snap, NOW, &policy()).is_empty());
}

#[test]
fn a_large_dense_pool_matches_nearly_everyone() {
    let users: Vec<String> = (0..10_000).map(|i| format!("p{i}")).collect();
    let snap: Vec<Seeker<'_>> = users
        .iter()
        .enumerate()
        .map(|(i, u)| Seeker {
            user: u,
            rating: 1000 + ((i * 7919) % 1000) as i32,
            enqueued_at: NOW - (i as i64 % 60) * 1000,
        })
        .collect();
    let pairs = find_pairs(&snap, NOW, &policy());
    assert_eq!(pairs.len(), 5_000);
}

#[test]
fn augmenting_paths_add_the_pairs_a_greedy_order_misses() {
    let users = users();
    // A chain of 14 players 90 points apart (only neighbours are within
    // the 100-point windows): one segment, above the exact limit. The
    // longest-waiting is third in the chain; taking its nearest partner
    // (the second) strands the first, and the greedy alone ends one pair
    // short of the 7 the chain allows. An augmenting path along the chain
    // re-pairs it.
    let raw: Vec<(u8, i32, i64)> = (0..14u8)
        .map(|i| (i, 1000 + 90 * i32::from(i), if i == 2 { 9 } else { 1 }))
        .collect();
    assert!(raw.len() > EXACT_SEGMENT_LIMIT);
    let snap = snapshot(&raw, &users);
    let pairs = find_pairs(&snap, NOW, &policy());
    assert!(objective(&snap, NOW, &policy(), &pairs).is_some());
    assert_eq!(pairs.len(), 7, "{pairs:?}");
}

#[test]
fn exact_solving_stops_at_the_work_budget_and_the_rest_goes_greedy() {
    // Three players where the greedy and the optimum differ: a (waited
    // 30 s) takes its nearest, b, under the greedy; the optimum pairs a
    // with c, who waited 20 s (more waiting served, for 50 more points).
    let tricky = |base: i32| [(base, 30), (base + 50, 0), (base + 100, 20)];
    let names: Vec<String> = (0..40_000).map(|i| format!("p{i}")).collect();
    let seekers = |groups: usize| -> Vec<Seeker<'_>> {
        // `groups` groups of 12 players within 55 points (every pair
        // compatible), 600 apart, then the three at the top.
        let mut raw: Vec<(i32, i64)> = (0..groups * 12)
            .map(|i| ((i / 12) as i32 * 600 + (i % 12) as i32 * 5, 0))
            .collect();
        raw.extend(tricky(groups as i32 * 600 + 1_000));
        raw.iter()
            .zip(&names)
            .map(|(&(rating, waited), user)| Seeker {
                user,
                rating,
                enqueued_at: NOW - waited * 1000,
            })
            .collect()
    };
    let tricky_pair = |snap: &[Seeker<'_>], pairs: &[Pair]| -> (i32, i32) {
        let top = snap.len() - 3;
        let p = pairs
            .iter()
            .find(|p| p.a >= top)
            .expect("the three make a pair");
        let (x, y) = (snap[p.a].rating, snap[p.b].rating);
        (x.min(y) - snap[top].rating, x.max(y) - snap[top].rating)
    };
    // Alone, the three are solved exactly.
    let alone = seekers(0);
    assert_eq!(
        tricky_pair(&alone, &find_pairs(&alone, NOW, &policy())),
        (0, 100)
    );
    // Behind enough dense groups to spend the budget (2,052 units each),
    // they are paired greedily; every group is still paired in full.
    let groups = (EXACT_WORK_PER_PASS / 2_052 + 1) as usize;
    assert!(groups * 12 + 3 <= names.len());
    let busy = seekers(groups);
    let pairs = find_pairs(&busy, NOW, &policy());
    assert_eq!(tricky_pair(&busy, &pairs), (0, 50));
    assert_eq!(pairs.len(), groups * 6 + 1);
    let mut used = HashSet::new();
    assert!(pairs.iter().all(|p| used.insert(p.a) && used.insert(p.b)));
}
