//! General matching solvers, knowing nothing of chess or ratings: vertices
//! are `0..n`, edges carry an integer weight.
//!
//! The objective is lexicographic: first as many matched vertices as
//! possible, then the largest total weight.

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
/// pairs it with one of its neighbours in `S`. Exact, `O(2^n · degree)`.
///
/// Edges are `(u, v, weight)` with `u != v`, both `< n`.
pub fn exact(n: usize, edges: &[(usize, usize, i64)]) -> Vec<(usize, usize)> {
    assert!(
        n <= EXACT_MAX_VERTICES,
        "exact solver takes at most {EXACT_MAX_VERTICES} vertices"
    );
    if n < 2 || edges.is_empty() {
        return Vec::new();
    }
    // adjacency[u] lists (v, weight) for every edge, both directions.
    let mut adjacency: Vec<Vec<(usize, i64)>> = vec![Vec::new(); n];
    for &(u, v, w) in edges {
        debug_assert!(u != v && u < n && v < n);
        adjacency[u].push((v, w));
        adjacency[v].push((u, w));
    }
    let full = (1usize << n) - 1;
    let mut best = vec![Value::default(); full + 1];
    // partner[S] = the vertex paired with the lowest vertex of S, or NONE.
    const NONE: u8 = u8::MAX;
    let mut partner = vec![NONE; full + 1];
    // Every subset is computed after all its subsets (they are smaller numbers).
    for set in 1..=full {
        let low = set.trailing_zeros() as usize;
        let rest = set & !(1 << low);
        let mut value = best[rest];
        let mut choice = NONE;
        for &(v, w) in &adjacency[low] {
            if rest & (1 << v) != 0 {
                let candidate = best[rest & !(1 << v)].plus_edge(w);
                if candidate > value {
                    value = candidate;
                    choice = v as u8;
                }
            }
        }
        best[set] = value;
        partner[set] = choice;
    }
    let mut pairs = Vec::with_capacity(best[full].pairs as usize);
    let mut set = full;
    while set != 0 {
        let low = set.trailing_zeros() as usize;
        set &= !(1 << low);
        let p = partner[set | (1 << low)];
        if p != NONE {
            pairs.push((low, p as usize));
            set &= !(1 << p);
        }
    }
    pairs
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
        }
    }
}
