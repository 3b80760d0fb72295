//! General matching solvers, knowing nothing of chess or ratings: vertices
//! are `0..n`, edges carry an integer weight.
//!
//! The objective is lexicographic: first as many matched vertices as
//! possible, then the largest total weight.
//!
//! Two exact solvers answer it, independently of each other: [`exact`], a
//! dynamic programme over vertex subsets for graphs of up to
//! [`EXACT_MAX_VERTICES`], and [`blossom`], Edmonds' weighted blossom
//! algorithm (`O(n³)`, any size) from the `integer-blossom` crate. The tests
//! hold each to the other and both to [`brute_force`].

/// Largest graph [`exact`] accepts: it keeps a table of `2^n` entries.
pub const EXACT_MAX_VERTICES: usize = 20;

/// A matching's value under the lexicographic objective.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Value {
    pub pairs: u32,
    pub weight: i64,
}

impl Value {
    fn plus_edge(self, weight: i64) -> Self {
        Self {
            pairs: self.pairs + 1,
            weight: self.weight + weight,
        }
    }
}

/// Optimal matching of a small graph by dynamic programming over vertex
/// subsets: `best(S)` either leaves the lowest vertex of `S` unmatched or
/// pairs it with one of its neighbours in `S`. Exact. Only the subsets
/// reachable from the whole graph that way are visited (memoised, from the
/// top): at most 377 of the 4,096 subsets of 12 vertices, 17,711 of the
/// million of 20, whatever the edges.
///
/// Edges are `(u, v, weight)` with `u != v`, both `< n`.
pub fn exact(n: usize, edges: &[(usize, usize, i64)]) -> Vec<(usize, usize)> {
    Subsets::default().solve(n, edges)
}

/// The working memory of [`exact`], kept between graphs: one pass over a
/// pool solves thousands of small segments without allocating for each.
#[derive(Default)]
pub struct Subsets {
    /// `seen[S] == round`: `best[S]` and `partner[S]` are this graph's.
    seen: Vec<u32>,
    round: u32,
    best: Vec<Value>,
    /// The vertex paired with the lowest vertex of `S`, or [`Self::NONE`].
    partner: Vec<u8>,
    /// `neighbours[u]`: a bit per neighbour of `u`.
    neighbours: [u32; EXACT_MAX_VERTICES],
    weight: [[i64; EXACT_MAX_VERTICES]; EXACT_MAX_VERTICES],
    /// Subsets solved and pairings weighed, over every graph solved on
    /// this memory: the work done, for callers on a budget.
    work: u64,
}

impl Subsets {
    const NONE: u8 = u8::MAX;

    /// Subsets solved and pairings weighed so far, over every graph solved
    /// on this memory (at most 377 · 12 for a graph of 12 vertices).
    pub fn work(&self) -> u64 {
        self.work
    }

    /// [`exact`], on this working memory.
    pub fn solve(&mut self, n: usize, edges: &[(usize, usize, i64)]) -> Vec<(usize, usize)> {
        assert!(
            n <= EXACT_MAX_VERTICES,
            "exact solver takes at most {EXACT_MAX_VERTICES} vertices"
        );
        if n < 2 || edges.is_empty() {
            return Vec::new();
        }
        self.neighbours[..n].fill(0);
        for &(u, v, w) in edges {
            debug_assert!(u != v && u < n && v < n);
            self.neighbours[u] |= 1 << v;
            self.neighbours[v] |= 1 << u;
            self.weight[u][v] = w;
            self.weight[v][u] = w;
        }
        let subsets = 1usize << n;
        if self.seen.len() < subsets {
            self.seen = vec![0; subsets];
            self.best = vec![Value::default(); subsets];
            self.partner = vec![Self::NONE; subsets];
            self.round = 0;
        }
        self.round = self.round.wrapping_add(1);
        if self.round == 0 {
            // After 2^32 graphs the marks come round again: clear them.
            self.seen.fill(0);
            self.round = 1;
        }
        // The empty set: nobody to pair.
        self.seen[0] = self.round;
        self.best[0] = Value::default();
        self.partner[0] = Self::NONE;
        let full = (subsets - 1) as u32;
        let total = self.best(full);
        let mut pairs = Vec::with_capacity(total.pairs as usize);
        let mut set = full;
        while set != 0 {
            let low = set.trailing_zeros();
            let p = self.partner[set as usize];
            set &= !(1 << low);
            if p != Self::NONE {
                pairs.push((low as usize, p as usize));
                set &= !(1 << p);
            }
        }
        pairs
    }

    /// The optimum of `set` (memoised; `set` 0 is always known).
    fn best(&mut self, set: u32) -> Value {
        let s = set as usize;
        if self.seen[s] == self.round {
            return self.best[s];
        }
        let low = set.trailing_zeros() as usize;
        let rest = set & !(1 << low);
        let mut value = self.best(rest);
        let mut choice = Self::NONE;
        // Neighbours in increasing order; a later one wins only if better.
        let mut candidates = self.neighbours[low] & rest;
        self.work += 1 + u64::from(candidates.count_ones());
        while candidates != 0 {
            let v = candidates.trailing_zeros() as usize;
            candidates &= candidates - 1;
            let candidate = self.best(rest & !(1 << v)).plus_edge(self.weight[low][v]);
            if candidate > value {
                value = candidate;
                choice = v as u8;
            }
        }
        self.seen[s] = self.round;
        self.best[s] = value;
        self.partner[s] = choice;
        value
    }
}

/// Optimal matching of any graph by Edmonds' blossom algorithm: a maximum
/// *weight* matching in which every edge carries, besides its own weight, a
/// bonus larger than any difference the weights can make, so that the
/// heaviest matching is also one of the largest. `O(n³)` time, `O(n²)`
/// memory (the crate works on a dense matrix).
///
/// Edges are `(u, v, weight)` with `u != v`, both `< n`, at most one per pair.
pub fn blossom(n: usize, edges: &[(usize, usize, i64)]) -> Vec<(usize, usize)> {
    if n < 2 || edges.is_empty() {
        return Vec::new();
    }
    let lightest = edges.iter().map(|e| e.2).min().unwrap_or(0);
    let heaviest = edges.iter().map(|e| e.2).max().unwrap_or(0);
    // Shifted weights lie in 1..=spread (the crate reads 0 as "no edge");
    // one pair more outweighs any reshuffle of at most n/2 pairs.
    let spread = i128::from(heaviest) - i128::from(lightest) + 1;
    let per_pair = (n as i128 / 2 + 1) * spread;
    let weight = |w: i64| per_pair + i128::from(w) - i128::from(lightest) + 1;
    // The crate's arithmetic stays below a quarter of the type's range;
    // 64-bit weights halve its matrix when they leave room for that.
    if per_pair.saturating_mul(8) < i128::from(i64::MAX / 4) {
        solve(n, edges, |w| weight(w) as i64)
    } else {
        solve(n, edges, weight)
    }
}

fn solve<W: integer_blossom::Weight + Default>(
    n: usize,
    edges: &[(usize, usize, i64)],
    weight: impl Fn(i64) -> W,
) -> Vec<(usize, usize)> {
    let mut weights = vec![W::default(); n * n];
    for &(u, v, w) in edges {
        debug_assert!(u != v && u < n && v < n);
        weights[u.min(v) * n + u.max(v)] = weight(w);
    }
    integer_blossom::max_weight_matching(&weights, n)
        .into_iter()
        .enumerate()
        .filter_map(|(u, mate)| mate.filter(|&v| u < v).map(|v| (u, v)))
        .collect()
}

/// The value of a matching given as vertex pairs, with weights looked up in
/// `edges`; `None` when a pair is not an edge or a vertex is used twice.
pub fn value_of(
    n: usize,
    edges: &[(usize, usize, i64)],
    pairs: &[(usize, usize)],
) -> Option<Value> {
    let mut used = vec![false; n];
    let mut value = Value::default();
    for &(u, v) in pairs {
        if u >= n || v >= n || u == v || used[u] || used[v] {
            return None;
        }
        used[u] = true;
        used[v] = true;
        let w = edges
            .iter()
            .find(|&&(a, b, _)| (a, b) == (u, v) || (a, b) == (v, u))?
            .2;
        value = value.plus_edge(w);
    }
    Some(value)
}

/// The optimum by enumerating every matching: the reference the tests hold
/// [`exact`] and the matcher to. Exponential; for tiny graphs only.
pub fn brute_force(n: usize, edges: &[(usize, usize, i64)]) -> Value {
    fn go(free: &mut [bool], edges: &[(usize, usize, i64)], from: usize) -> Value {
        let mut best = Value::default();
        for (k, &(u, v, w)) in edges.iter().enumerate().skip(from) {
            if free[u] && free[v] {
                free[u] = false;
                free[v] = false;
                best = best.max(go(free, edges, k + 1).plus_edge(w));
                free[u] = true;
                free[v] = true;
            }
        }
        best
    }
    go(&mut vec![true; n], edges, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prefers_more_pairs_over_more_weight() {
        // A path 0-1-2-3: the middle edge is heavy, but two pairs beat one.
        let edges = [(0, 1, 1), (1, 2, 100), (2, 3, 1)];
        let pairs = exact(4, &edges);
        assert_eq!(
            value_of(4, &edges, &pairs).unwrap(),
            Value {
                pairs: 2,
                weight: 2
            }
        );
    }

    #[test]
    fn visits_only_the_subsets_reachable_from_the_whole_graph() {
        // A complete graph of 12: 377 subsets are reached, each weighing
        // its lowest vertex's pairings (the budget's unit).
        let edges: Vec<_> = (0..12)
            .flat_map(|u| (u + 1..12).map(move |v| (u, v, 1)))
            .collect();
        let mut subsets = Subsets::default();
        assert_eq!(subsets.solve(12, &edges).len(), 6);
        assert_eq!(subsets.work(), 2_052);
        // The memory is reused: a second graph adds its own work only.
        assert_eq!(subsets.solve(12, &edges).len(), 6);
        assert_eq!(subsets.work(), 2 * 2_052);
    }

    #[test]
    fn prefers_more_weight_among_equal_sizes() {
        let edges = [(0, 1, 5), (0, 2, 9), (1, 2, 1)];
        assert_eq!(exact(3, &edges), vec![(0, 2)]);
    }

    #[test]
    fn odd_cycles_are_solved() {
        // A 5-cycle plus a pendant: the blossom case for augmenting paths.
        let edges = [
            (0, 1, 3),
            (1, 2, 3),
            (2, 3, 3),
            (3, 4, 3),
            (4, 0, 3),
            (4, 5, 1),
        ];
        let pairs = exact(6, &edges);
        assert_eq!(value_of(6, &edges, &pairs).unwrap().pairs, 3);
    }

    /// A case proptest once shrank a failure to, kept for good.
    #[test]
    fn an_edge_listed_both_ways_counts_once() {
        let edges = [(2, 3, 0)];
        let pairs = exact(4, &edges);
        assert_eq!(value_of(4, &edges, &pairs), Some(brute_force(4, &edges)));
    }

    proptest! {
        #[test]
        fn exact_equals_brute_force(
            n in 2usize..9,
            raw in proptest::collection::vec((0usize..9, 0usize..9, -50i64..100), 0..20),
        ) {
            let mut seen = std::collections::HashSet::new();
            let edges: Vec<_> = raw.into_iter()
                .filter(|&(u, v, _)| u < n && v < n && u != v)
                .filter(|&(u, v, _)| seen.insert((u.min(v), u.max(v))))
                .collect();
            let pairs = exact(n, &edges);
            let got = value_of(n, &edges, &pairs).expect("a valid matching");
            prop_assert_eq!(got, brute_force(n, &edges));
            let pairs = blossom(n, &edges);
            let got = value_of(n, &edges, &pairs).expect("a valid matching");
            prop_assert_eq!(got, brute_force(n, &edges));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3_000))]

        /// The blossom solver against the subset programme, two independent
        /// exact solvers, on graphs too large to enumerate: dense and sparse,
        /// weights of either sign and of very different sizes.
        #[test]
        fn blossom_equals_the_subset_programme(
            n in 2usize..=14,
            density in 0.05f64..1.0,
            scale in prop_oneof![Just(3i64), Just(100), Just(1_000_000)],
            seed in any::<u64>(),
        ) {
            let edges = random_graph(n, density, scale, seed);
            let by_blossom = value_of(n, &edges, &blossom(n, &edges)).expect("a valid matching");
            let by_subsets = value_of(n, &edges, &exact(n, &edges)).expect("a valid matching");
            prop_assert_eq!(by_blossom, by_subsets);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// The same up to the subset programme's largest graphs (slow in a
        /// debug build: fewer cases).
        #[test]
        fn blossom_equals_the_subset_programme_on_its_largest_graphs(
            n in 15usize..=EXACT_MAX_VERTICES,
            density in 0.05f64..1.0,
            seed in any::<u64>(),
        ) {
            let edges = random_graph(n, density, 10_000, seed);
            let by_blossom = value_of(n, &edges, &blossom(n, &edges)).expect("a valid matching");
            let by_subsets = value_of(n, &edges, &exact(n, &edges)).expect("a valid matching");
            prop_assert_eq!(by_blossom, by_subsets);
        }
    }

    /// A random graph: each pair an edge with probability `density`, weights
    /// in `-scale..=scale`.
    fn random_graph(n: usize, density: f64, scale: i64, seed: u64) -> Vec<(usize, usize, i64)> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut edges = Vec::new();
        for u in 0..n {
            for v in u + 1..n {
                if rng.random_bool(density) {
                    edges.push((u, v, rng.random_range(-scale..=scale)));
                }
            }
        }
        edges
    }

    #[test]
    fn blossom_solves_graphs_beyond_the_subset_programme() {
        // Two odd cycles joined by a path, 41 vertices: a perfect matching
        // but one vertex exists, and only blossom shrinking finds it.
        let mut edges = Vec::new();
        for (start, len) in [(0usize, 21usize), (21, 19)] {
            for k in 0..len {
                edges.push((start + k, start + (k + 1) % len, 5));
            }
        }
        edges.push((20, 21, 1));
        edges.push((39, 40, 2));
        let pairs = blossom(41, &edges);
        assert_eq!(value_of(41, &edges, &pairs).unwrap().pairs, 20);
    }
}
