//! The pure matcher (SPEC §5): a snapshot of a pool's waiting entries, the
//! time and the pool's policy in; disjoint pairs out. No I/O, no clock.
//!
//! Two entries are *compatible* when they belong to different users, neither
//! blocks the other, their rating gap is within both of their windows, each
//! one's rating is within the other's own rating range, if they gave one,
//! and they do not both have to be given the same colour
//! (`ColorHistory::clash`).
//! Among compatible pairs the matcher picks disjoint pairs that match as many
//! players as possible, then serve the longest-waiting first, then keep gaps
//! small (the score in [`score`]).
//!
//! How: sorted by rating, the pool splits into *segments* that no compatible
//! pair crosses. Small segments (the usual case once a pool is running: an
//! arrival meets the few players near its rating) are solved exactly by
//! [`solver::exact`] (within a work budget per pass,
//! [`EXACT_WORK_PER_PASS`]). A large segment (a cold pool full of players) is paired
//! greedily: longest-waiting first, each with its nearest compatible partner;
//! then short augmenting paths add pairs the greedy order missed (an
//! unmatched player takes a neighbour whose partner has another unmatched
//! partner nearby). The result is always maximal (no two unmatched
//! compatible entries remain); the benchmarks measure how close it is to
//! the optimum.

pub mod flow;
pub mod score;
pub mod solver;

pub use flow::{Flow, Hold};

use crate::domain::{ColorHistory, Deviation, Millis, PoolPolicy, Rating, RatingRange};

/// Segments up to this size are solved exactly...
pub const EXACT_SEGMENT_LIMIT: usize = 12;

/// ...while the exact solver's work in the pass stays under this budget
/// ([`solver::Subsets::work`]; about 4 ns a unit): a pool of many small,
/// dense segments (a cold or recovering pool, 100k players in groups of
/// 12) would otherwise spend seconds solving them. Past the budget, the
/// remaining segments go the greedy way, as large ones do.
pub const EXACT_WORK_PER_PASS: u64 = 5_000_000;

/// Work ([`Matcher::complete`]: neighbours looked at, search trees reset)
/// the search for the pairs a greedy pass missed may do in one pass:
/// enough to prove a pool of a few thousand players complete, bounded for a
/// million.
pub const COMPLETION_WORK_PER_PASS: u64 = 3_000_000;

/// A waiting entry as the matcher sees it.
#[derive(Debug, Clone, Copy)]
pub struct Seeker<'a> {
    pub user: &'a str,
    pub rating: Rating,
    pub enqueued_at: Millis,
    /// The player's own rating range, if they gave one.
    pub range: Option<RatingRange>,
    /// Their rating's deviation ([`PoolPolicy::window_for`]).
    pub deviation: Deviation,
    /// How much their next game should be white (positive) or black
    /// (negative): `ColorHistory::need`; 0 when it does not matter.
    pub color: i8,
}

/// Indices into the snapshot of two entries to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    pub a: usize,
    pub b: usize,
}

/// An entry prepared for matching: its window and waiting steps at `now`,
/// and the partners' rating differences its own range accepts
/// (`lo..=hi`; every difference without a range). The window never
/// reaches past the range.
/// Packed into 32 bytes: a pass over a million entries reads them all
/// several times.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// Index into the snapshot (a pass holds far fewer than 2³² entries).
    index: u32,
    rating: Rating,
    window: i32,
    /// Widening steps waited (at most the queue time over the interval).
    steps: i32,
    enqueued_at: Millis,
    lo: i16,
    hi: i16,
    /// Colour need ([`Seeker::color`]).
    need: i8,
    /// Held for a closer partner: `window` is the hold gap, and a pair's
    /// cost counts as gap against it (a repeat waits for another partner
    /// while the hold lasts).
    held: bool,
}

impl Node {
    /// Entry `index` of a snapshot at `now`: its window (its deviation's,
    /// never past its own range), waiting steps and range bounds; held by
    /// nobody.
    fn of(index: usize, s: &Seeker<'_>, now: Millis, policy: &PoolPolicy) -> Self {
        let waited = now - s.enqueued_at;
        let window = policy.window_for(waited, s.deviation);
        let (lo, hi) = range_bounds(s.range);
        Node {
            index: index as u32,
            rating: s.rating,
            window: s.range.map_or(window, |r| window.min(r.reach())),
            steps: steps_of(policy.widening_steps(waited)),
            enqueued_at: s.enqueued_at,
            lo,
            hi,
            need: s.color,
            held: false,
        }
    }

    fn at(&self) -> usize {
        self.index as usize
    }
}

/// Why the matcher does not pair two entries, in the order it is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bar {
    /// One is outside the other's own rating range.
    Range,
    /// Their gap is wider than one of their windows.
    Window,
    /// Both must have the same colour (`ColorHistory::clash`).
    Colour,
}

impl Bar {
    pub fn as_str(self) -> &'static str {
        match self {
            Bar::Range => "range",
            Bar::Window => "window",
            Bar::Colour => "colour",
        }
    }
}

/// An entry's window at `now` as a pass sees it (no hold): its
/// deviation's, never past its own range.
pub fn window_of(s: &Seeker<'_>, now: Millis, policy: &PoolPolicy) -> i32 {
    Node::of(0, s, now, policy).window
}

/// What the matcher makes of pairing `a` and `b` at `now`, neither held:
/// the pair's score before any cost, or why it may not be made. The
/// pass's own rules ([`Matcher::bar`], [`Matcher::score`]).
pub fn judge(a: &Seeker<'_>, b: &Seeker<'_>, now: Millis, policy: &PoolPolicy) -> Result<i64, Bar> {
    let (x, y) = (Node::of(0, a, now, policy), Node::of(1, b, now, policy));
    match Matcher::<fn(usize, usize) -> Option<i64>>::bar(&x, &y) {
        Some(bar) => Err(bar),
        None => Ok(Matcher::<fn(usize, usize) -> Option<i64>>::score(&x, &y)),
    }
}

const _: () = assert!(std::mem::size_of::<Node>() == 32);

/// Widening steps as a node keeps them.
fn steps_of(steps: i64) -> i32 {
    steps.clamp(0, i64::from(i32::MAX)) as i32
}

/// The differences `range` accepts, as a node keeps them.
fn range_bounds(range: Option<RatingRange>) -> (i16, i16) {
    match range {
        // Within ±`RatingRange::MAX_DELTA`, which fits.
        Some(r) => (r.min_delta as i16, r.max_delta as i16),
        None => (i16::MIN, i16::MAX),
    }
}

/// Matches a pool with no blocks between players.
pub fn find_pairs(snapshot: &[Seeker<'_>], now: Millis, policy: &PoolPolicy) -> Vec<Pair> {
    find_pairs_with(snapshot, now, policy, |_, _| false)
}

/// Matches a pool; `blocked(i, j)` says whether entries `i` and `j` of the
/// snapshot must never meet (fair-play or player blocks).
pub fn find_pairs_with(
    snapshot: &[Seeker<'_>],
    now: Millis,
    policy: &PoolPolicy,
    blocked: impl Fn(usize, usize) -> bool,
) -> Vec<Pair> {
    find_pairs_holding(snapshot, now, policy, None, blocked)
}

/// Matches a pool, holding players for a closer partner where its flow of
/// arrivals makes one likely ([`flow`]): a player's window narrows to their
/// hold gap while it lasts. `None` holds nobody.
pub fn find_pairs_holding(
    snapshot: &[Seeker<'_>],
    now: Millis,
    policy: &PoolPolicy,
    hold: Option<(&Hold, &Flow)>,
    blocked: impl Fn(usize, usize) -> bool,
) -> Vec<Pair> {
    find_pairs_costed(snapshot, now, policy, hold, |i, j| {
        (!blocked(i, j)).then_some(0)
    })
}

/// Matches a pool as [`find_pairs_holding`] does, with `cost(i, j)` for
/// each pair of entries: `None` when they must never meet, else what the
/// pair costs in the score, in rating points of gap (a repeat pairing's
/// penalty). A cost steers the optimum of small segments; the greedy
/// pairing of a large one goes by gap alone.
pub fn find_pairs_costed(
    snapshot: &[Seeker<'_>],
    now: Millis,
    policy: &PoolPolicy,
    hold: Option<(&Hold, &Flow)>,
    cost: impl Fn(usize, usize) -> Option<i64>,
) -> Vec<Pair> {
    // Sorted by (rating, index) through packed keys, carrying the arrival
    // time along: sorting 16-byte items beats sorting the nodes, and
    // building the nodes then reads memory in order.
    let mut keys: Vec<(u64, Millis)> = first_entry_per_user(snapshot)
        .map(|index| {
            let s = &snapshot[index];
            (
                (u64::from(rating_key(s.rating)) << 32) | index as u64,
                s.enqueued_at,
            )
        })
        .collect();
    keys.sort_unstable_by_key(|&(key, _)| key);
    let nodes: Vec<Node> = keys
        .into_iter()
        .map(|(key, enqueued_at)| {
            let index = (key & u64::from(u32::MAX)) as usize;
            let mut node = Node::of(index, &snapshot[index], now, policy);
            if let Some(gap) = hold
                .and_then(|(hold, flow)| hold.gap(flow, node.rating, now - enqueued_at))
                .filter(|&gap| gap < node.window)
            {
                node.window = gap;
                node.held = true;
            }
            node
        })
        .collect();

    let mut matcher = Matcher {
        cost: &cost,
        subsets: solver::Subsets::default(),
        edges: Vec::new(),
        completion_budget: std::cell::Cell::new(COMPLETION_WORK_PER_PASS),
    };
    let mut pairs = Vec::new();
    for segment in segments(&nodes) {
        match segment.len() {
            0 | 1 => {}
            n if n <= EXACT_SEGMENT_LIMIT && matcher.subsets.work() < EXACT_WORK_PER_PASS => {
                matcher.exact(segment, &mut pairs)
            }
            _ => matcher.greedy(segment, &mut pairs),
        }
    }
    pairs
}

/// A rating as an unsigned key that sorts like the rating.
fn rating_key(rating: Rating) -> u32 {
    (rating as u32) ^ (1 << 31)
}

/// Indices of the snapshot without later entries of a user already in it:
/// a user is matched at most once per pass, by their longest-waiting entry.
fn first_entry_per_user(snapshot: &[Seeker<'_>]) -> impl Iterator<Item = usize> {
    let mut first: std::collections::HashMap<&str, usize, foldhash::fast::RandomState> =
        std::collections::HashMap::with_capacity_and_hasher(snapshot.len(), Default::default());
    let mut keep = vec![true; snapshot.len()];
    for (i, s) in snapshot.iter().enumerate() {
        match first.entry(s.user) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(i);
            }
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let k = *o.get();
                if (s.enqueued_at, i) < (snapshot[k].enqueued_at, k) {
                    keep[k] = false;
                    o.insert(i);
                } else {
                    keep[i] = false;
                }
            }
        }
    }
    keep.into_iter()
        .enumerate()
        .filter_map(|(i, kept)| kept.then_some(i))
}

/// Splits rating-sorted nodes where no compatible pair can cross: a cut
/// before node `k` is safe when no earlier node's window reaches its rating
/// (every later node is further still).
fn segments(nodes: &[Node]) -> impl Iterator<Item = &[Node]> {
    let mut start = 0;
    let mut reach = i64::MIN;
    let mut cuts = Vec::new();
    for (k, n) in nodes.iter().enumerate() {
        if k > 0 && i64::from(n.rating) > reach {
            cuts.push((start, k));
            start = k;
        }
        reach = reach.max(i64::from(n.rating) + i64::from(n.window));
    }
    if !nodes.is_empty() {
        cuts.push((start, nodes.len()));
    }
    cuts.into_iter().map(move |(s, e)| &nodes[s..e])
}

struct Matcher<'s, F> {
    cost: &'s F,
    /// The exact solver's working memory, and the edges of the segment it
    /// solves, kept from one segment to the next.
    subsets: solver::Subsets,
    edges: Vec<(usize, usize, i64)>,
    /// Work left to [`Matcher::complete`] in this pass.
    completion_budget: std::cell::Cell<u64>,
}

impl<F: Fn(usize, usize) -> Option<i64>> Matcher<'_, F> {
    /// Within both windows and both ranges, and not both bound to the
    /// same colour.
    fn fits(a: &Node, b: &Node) -> bool {
        Self::bar(a, b).is_none()
    }

    /// What keeps `a` and `b` apart, if anything ([`Matcher::fits`]).
    fn bar(a: &Node, b: &Node) -> Option<Bar> {
        let gap = (a.rating - b.rating).abs();
        let up = b.rating - a.rating;
        if !((i32::from(a.lo)..=i32::from(a.hi)).contains(&up)
            && (i32::from(b.lo)..=i32::from(b.hi)).contains(&-up))
        {
            Some(Bar::Range)
        } else if gap > a.window || gap > b.window {
            Some(Bar::Window)
        } else if ColorHistory::clash(a.need.into(), b.need.into()) {
            Some(Bar::Colour)
        } else {
            None
        }
    }

    /// Fits and may meet. The nodes of a pass are of distinct users
    /// already ([`first_entry_per_user`]).
    fn compatible(&self, a: &Node, b: &Node) -> bool {
        self.edge(a, b).is_some()
    }

    /// The score of a compatible pair, its cost taken off. A held player
    /// takes a pair only if its gap and cost together are within the hold
    /// gap.
    fn edge(&self, a: &Node, b: &Node) -> Option<i64> {
        if !Self::fits(a, b) {
            return None;
        }
        let cost = (self.cost)(a.at(), b.at())?;
        if cost > 0 && (a.held || b.held) {
            let gap = i64::from((a.rating - b.rating).abs());
            if gap + cost > i64::from(a.window.min(b.window)) {
                return None;
            }
        }
        Some(Self::score(a, b) - cost)
    }

    fn score(a: &Node, b: &Node) -> i64 {
        score::pair_score(
            (a.rating, a.steps.into(), a.need),
            (b.rating, b.steps.into(), b.need),
        )
    }

    /// The optimum of a small segment.
    fn exact(&mut self, segment: &[Node], out: &mut Vec<Pair>) {
        self.edges.clear();
        for (i, a) in segment.iter().enumerate() {
            for (j, b) in segment.iter().enumerate().skip(i + 1) {
                if let Some(score) = self.edge(a, b) {
                    self.edges.push((i, j, score));
                }
            }
        }
        out.extend(
            self.subsets
                .solve(segment.len(), &self.edges)
                .into_iter()
                .map(|(i, j)| Pair {
                    a: segment[i].at(),
                    b: segment[j].at(),
                }),
        );
    }

    /// Longest-waiting first, each paired with its nearest compatible
    /// unmatched entry, then [augmenting paths](Self::augment) for the pairs
    /// that order missed. `O(n log n)` plus the entries skipped as
    /// incompatible and the augmenting budget (linear).
    fn greedy(&self, segment: &[Node], out: &mut Vec<Pair>) {
        let n = segment.len();
        // Longest-waiting first, ties by rating: packed keys sort fast.
        let mut keys: Vec<u128> = segment
            .iter()
            .enumerate()
            .map(|(p, s)| {
                ((s.enqueued_at as u64 ^ (1 << 63)) as u128) << 64
                    | u128::from(rating_key(s.rating)) << 32
                    | p as u128
            })
            .collect();
        keys.sort_unstable();
        let order = keys
            .into_iter()
            .map(|k| (k & u128::from(u32::MAX)) as usize);
        // Unmatched positions, found from either side in near-constant time.
        let mut free = Free::new(n);
        let mut mate = vec![NO_MATE; n];
        for p in order {
            if mate[p] != NO_MATE {
                continue;
            }
            let me = &segment[p];
            let mut r = free.right_of(p);
            let mut l = free.left_of(p);
            let partner = loop {
                let dist = |q: Option<usize>| q.map(|q| (segment[q].rating - me.rating).abs());
                let (q, from_right) = match (dist(l), dist(r)) {
                    (None, None) => break None,
                    (Some(dl), Some(dr)) if dl <= dr => (l, false),
                    (Some(_), None) => (l, false),
                    _ => (r, true),
                };
                let q = q.expect("chosen side has a candidate");
                if (segment[q].rating - me.rating).abs() > me.window {
                    // The nearer side is out of my window: so is everything further.
                    if from_right {
                        r = None
                    } else {
                        l = None
                    }
                    continue;
                }
                if self.compatible(me, &segment[q]) {
                    break Some(q);
                }
                if from_right {
                    r = free.right_of(q);
                } else {
                    l = free.left_of(q);
                }
            };
            if let Some(q) = partner {
                pair_up(&mut mate, &mut free, p, q);
            }
        }
        // Few are left unmatched: found in one sequential sweep, then put in
        // the same longest-waiting-first order.
        let mut unmatched: Vec<usize> = (0..n).filter(|&p| mate[p] == NO_MATE).collect();
        unmatched.sort_unstable_by_key(|&p| (segment[p].enqueued_at, segment[p].rating, p));
        self.augment(segment, &unmatched, &mut mate, &mut free);
        self.complete(segment, &mut mate);
        out.extend(
            (0..n)
                .filter(|&p| mate[p] != NO_MATE && p < mate[p] as usize)
                .map(|p| Pair {
                    a: segment[p].at(),
                    b: segment[mate[p] as usize].at(),
                }),
        );
    }

    /// Augmenting paths after the greedy pass: from an unmatched `u`, a
    /// compatible matched neighbour `a` whose partner `b` has a compatible
    /// unmatched neighbour `v` turns `(a, b)` into `(u, a)` and `(b, v)`,
    /// one pair more; failing that, `b` looks on in the same way, up to
    /// [`AUGMENT_DEPTH`] pairs deep. Unmatched players are tried
    /// longest-waiting first, each step looking at the nearest
    /// [`AUGMENT_NEIGHBOURS`] on either side, within a budget of
    /// [`AUGMENT_BUDGET_PER_NODE`] candidates per node of the segment: after
    /// a maximal greedy pairing few players are unmatched, and the pass
    /// stays linear beyond the greedy whatever the segment looks like. (No
    /// blossom contraction: a path through an odd cycle may be missed, never
    /// a wrong one taken.)
    fn augment(&self, segment: &[Node], unmatched: &[usize], mate: &mut [u32], free: &mut Free) {
        let mut search = Search {
            seen: vec![0; segment.len()],
            stamp: 0,
            origin: 0,
            budget: segment.len().saturating_mul(AUGMENT_BUDGET_PER_NODE),
            pairs: Vec::new(),
        };
        for &u in unmatched {
            if search.budget == 0 {
                break;
            }
            if mate[u] != NO_MATE {
                continue;
            }
            search.stamp += 1;
            search.seen[u] = search.stamp;
            search.origin = u;
            search.pairs.clear();
            if self.extend(segment, mate, free, &mut search, u, AUGMENT_DEPTH) {
                for &(x, y) in &search.pairs {
                    pair_up(mate, free, x, y);
                }
            }
        }
    }

    /// One step of an augmenting path whose free end is `end` (the path
    /// started at the unmatched `search.origin`). On success `search.pairs`
    /// holds the new pairs of the path.
    fn extend(
        &self,
        segment: &[Node],
        mate: &[u32],
        free: &mut Free,
        search: &mut Search,
        end: usize,
        depth: usize,
    ) -> bool {
        let n = segment.len();
        let me = &segment[end];
        for k in 0..AUGMENT_NEIGHBOURS {
            for a in [
                end.checked_sub(k + 1),
                (end + k + 1 < n).then_some(end + k + 1),
            ]
            .into_iter()
            .flatten()
            {
                if search.budget == 0 {
                    return false;
                }
                search.budget -= 1;
                if search.seen[a] == search.stamp
                    || mate[a] == NO_MATE
                    || (segment[a].rating - me.rating).abs() > me.window
                    || !self.compatible(me, &segment[a])
                {
                    continue;
                }
                let b = mate[a] as usize;
                search.seen[a] = search.stamp;
                search.seen[b] = search.stamp;
                if let Some(v) = self.unmatched_partner(segment, free, b, search.origin) {
                    search.pairs.extend([(end, a), (b, v)]);
                    return true;
                }
                if depth > 1 && self.extend(segment, mate, free, search, b, depth - 1) {
                    search.pairs.push((end, a));
                    return true;
                }
            }
        }
        false
    }

    /// A compatible unmatched neighbour of `b` other than `not`: the nearest
    /// few on each side.
    fn unmatched_partner(
        &self,
        segment: &[Node],
        free: &mut Free,
        b: usize,
        not: usize,
    ) -> Option<usize> {
        let me = &segment[b];
        for right in [true, false] {
            let mut q = if right {
                free.right_of(b)
            } else {
                free.left_of(b)
            };
            for _ in 0..AUGMENT_NEIGHBOURS {
                let Some(v) = q else { break };
                if (segment[v].rating - me.rating).abs() > me.window {
                    break;
                }
                if v != not && self.compatible(me, &segment[v]) {
                    return Some(v);
                }
                q = if right {
                    free.right_of(v)
                } else {
                    free.left_of(v)
                };
            }
        }
        None
    }
}

impl<F: Fn(usize, usize) -> Option<i64>> Matcher<'_, F> {
    /// Edmonds' search for augmenting paths, with blossoms shrunk: from each
    /// player still unmatched, an alternating tree over every compatible
    /// neighbour either reaches another unmatched player (and the path
    /// between them turns into one pair more) or proves none can be added
    /// from there. With the budget, the pass ends with as many pairs as the
    /// segment allows: the short paths of [`Self::augment`] go first
    /// because they are cheap, this finds the rest. Past
    /// [`COMPLETION_WORK_PER_PASS`] it stops, leaving the pass maximal as
    /// before.
    fn complete(&self, segment: &[Node], mate: &mut [u32]) {
        let n = segment.len();
        let roots: Vec<usize> = (0..n).filter(|&v| mate[v] == NO_MATE).collect();
        if roots.len() < 2 {
            return;
        }
        let mut tree = Tree::new(n);
        for root in roots {
            if mate[root] != NO_MATE {
                continue;
            }
            if self.completion_budget.get() == 0 {
                return;
            }
            if let Some(end) = self.grow(segment, mate, &mut tree, root) {
                // Flip the path from `end` back to the root.
                let mut v = end as u32;
                while v != NO_MATE {
                    let pv = tree.parent[v as usize];
                    let next = mate[pv as usize];
                    mate[v as usize] = pv;
                    mate[pv as usize] = v;
                    v = next;
                }
            }
        }
    }

    /// Spends `units` of the pass's completion budget; false once spent.
    fn spend(&self, units: usize) -> bool {
        let left = self.completion_budget.get();
        self.completion_budget
            .set(left.saturating_sub(units as u64));
        left > units as u64
    }

    /// Grows the alternating tree from `root`; the unmatched player it
    /// reaches, if any.
    fn grow(&self, segment: &[Node], mate: &[u32], tree: &mut Tree, root: usize) -> Option<usize> {
        if !self.spend(tree.touched.len() + 1) {
            return None;
        }
        tree.reset();
        tree.enter(root);
        tree.used[root] = true;
        tree.queue.push_back(root as u32);
        let mut neighbours = Vec::new();
        while let Some(v) = tree.queue.pop_front() {
            let v = v as usize;
            self.neighbours(segment, v, &mut neighbours);
            if !self.spend(neighbours.len() + 1) {
                return None;
            }
            for &to in &neighbours {
                let to = to as usize;
                if tree.base[v] == tree.base[to] || mate[v] == to as u32 {
                    continue;
                }
                if to == root || (mate[to] != NO_MATE && tree.parent[mate[to] as usize] != NO_MATE)
                {
                    // An odd cycle: shrink it into its base.
                    let base = tree.common_base(mate, v, to);
                    tree.mark_path(mate, v, base, to);
                    tree.mark_path(mate, to, base, v);
                    if !self.spend(tree.touched.len()) {
                        return None;
                    }
                    for k in 0..tree.touched.len() {
                        let i = tree.touched[k] as usize;
                        if tree.blossom[tree.base[i] as usize] {
                            tree.base[i] = base as u32;
                            if !tree.used[i] {
                                tree.used[i] = true;
                                tree.queue.push_back(i as u32);
                            }
                        }
                    }
                    for k in 0..tree.touched.len() {
                        let i = tree.touched[k] as usize;
                        tree.blossom[i] = false;
                    }
                } else if tree.parent[to] == NO_MATE {
                    tree.enter(to);
                    tree.parent[to] = v as u32;
                    if mate[to] == NO_MATE {
                        return Some(to);
                    }
                    let m = mate[to] as usize;
                    tree.enter(m);
                    tree.used[m] = true;
                    tree.queue.push_back(m as u32);
                }
            }
        }
        None
    }

    /// Every compatible partner of position `v` in its segment: the
    /// positions within its window on either side, both windows allowing.
    fn neighbours(&self, segment: &[Node], v: usize, out: &mut Vec<u32>) {
        out.clear();
        let me = &segment[v];
        for q in (0..v).rev() {
            if me.rating - segment[q].rating > me.window {
                break;
            }
            if self.compatible(me, &segment[q]) {
                out.push(q as u32);
            }
        }
        for (q, other) in segment.iter().enumerate().skip(v + 1) {
            if other.rating - me.rating > me.window {
                break;
            }
            if self.compatible(me, other) {
                out.push(q as u32);
            }
        }
    }
}

/// The alternating tree of [`Matcher::grow`], reset between roots by the
/// positions it touched only.
struct Tree {
    /// The position an odd (outer-matched) vertex was reached from.
    parent: Vec<u32>,
    /// The base of the shrunk blossom a position is in (itself if none).
    base: Vec<u32>,
    /// Even positions: in the queue or done.
    used: Vec<bool>,
    /// Bases of the blossom being shrunk.
    blossom: Vec<bool>,
    /// `mark[p] == stamp`: on the root path walked by [`Tree::common_base`].
    mark: Vec<u32>,
    stamp: u32,
    touched: Vec<u32>,
    queue: std::collections::VecDeque<u32>,
}

impl Tree {
    fn new(n: usize) -> Self {
        Self {
            parent: vec![NO_MATE; n],
            base: (0..n as u32).collect(),
            used: vec![false; n],
            blossom: vec![false; n],
            mark: vec![0; n],
            stamp: 0,
            touched: Vec::new(),
            queue: std::collections::VecDeque::new(),
        }
    }

    fn reset(&mut self) {
        for &p in &self.touched {
            let p = p as usize;
            self.parent[p] = NO_MATE;
            self.base[p] = p as u32;
            self.used[p] = false;
        }
        self.touched.clear();
        self.queue.clear();
    }

    /// `p` joins the tree (it is reset with it).
    fn enter(&mut self, p: usize) {
        if self.parent[p] == NO_MATE && !self.used[p] {
            self.touched.push(p as u32);
        }
    }

    /// The base of the blossom closing where the tree paths of `a` and `b`
    /// meet.
    fn common_base(&mut self, mate: &[u32], a: usize, b: usize) -> usize {
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.mark.fill(0);
            self.stamp = 1;
        }
        let mut a = a;
        loop {
            a = self.base[a] as usize;
            self.mark[a] = self.stamp;
            if mate[a] == NO_MATE {
                break;
            }
            a = self.parent[mate[a] as usize] as usize;
        }
        let mut b = b;
        loop {
            b = self.base[b] as usize;
            if self.mark[b] == self.stamp {
                return b;
            }
            b = self.parent[mate[b] as usize] as usize;
        }
    }

    /// Marks the blossom's bases from `v` up to `base`, pointing the odd
    /// vertices on the way back across the cycle (`child` first).
    fn mark_path(&mut self, mate: &[u32], mut v: usize, base: usize, mut child: usize) {
        while self.base[v] as usize != base {
            let m = mate[v] as usize;
            self.blossom[self.base[v] as usize] = true;
            self.blossom[self.base[m] as usize] = true;
            self.parent[v] = child as u32;
            child = m;
            v = self.parent[m] as usize;
        }
    }
}

/// How many neighbours on each side an augmenting step looks at.
const AUGMENT_NEIGHBOURS: usize = 8;
/// How many matched pairs an augmenting path may pass through.
const AUGMENT_DEPTH: usize = 8;
/// Candidates looked at by all augmenting searches of a segment, per node.
const AUGMENT_BUDGET_PER_NODE: usize = 16;

/// The state of the augmenting searches of one segment.
struct Search {
    /// `seen[p] == stamp`: position `p` is on the current search's tree.
    seen: Vec<u32>,
    stamp: u32,
    /// The unmatched player the current search started from.
    origin: usize,
    budget: usize,
    /// The new pairs of the path found.
    pairs: Vec<(usize, usize)>,
}

/// `mate[p]` of an unmatched position.
const NO_MATE: u32 = u32::MAX;

fn pair_up(mate: &mut [u32], free: &mut Free, p: usize, q: usize) {
    mate[p] = q as u32;
    mate[q] = p as u32;
    free.remove(p);
    free.remove(q);
}

/// The unmatched positions of a segment, nearest first from either side.
struct Free {
    right: Skip,
    /// Mirrored: position `p` is `n - 1 - p` here.
    left: Skip,
    n: usize,
}

impl Free {
    fn new(n: usize) -> Self {
        Self {
            right: Skip::new(n),
            left: Skip::new(n),
            n,
        }
    }

    /// The nearest unmatched position after `p`.
    fn right_of(&mut self, p: usize) -> Option<usize> {
        self.right.next(p + 1)
    }

    /// The nearest unmatched position before `p`.
    fn left_of(&mut self, p: usize) -> Option<usize> {
        if p == 0 {
            return None;
        }
        self.left.next(self.n - p).map(|m| self.n - 1 - m)
    }

    fn remove(&mut self, p: usize) {
        self.right.remove(p);
        self.left.remove(self.n - 1 - p);
    }
}

/// "Next position at or after `i` still present", with removal, by a
/// union-find with path compression.
struct Skip {
    parent: Vec<u32>,
}

impl Skip {
    fn new(n: usize) -> Self {
        // Position n is the sentinel "none left".
        Self {
            parent: (0..=n as u32).collect(),
        }
    }

    fn next(&mut self, i: usize) -> Option<usize> {
        let n = self.parent.len() - 1;
        if i >= n {
            return None;
        }
        let mut root = i;
        while self.parent[root] as usize != root {
            root = self.parent[root] as usize;
        }
        let mut x = i;
        while self.parent[x] as usize != root {
            let up = self.parent[x] as usize;
            self.parent[x] = root as u32;
            x = up;
        }
        (root < n).then_some(root)
    }

    fn remove(&mut self, i: usize) {
        self.parent[i] = i as u32 + 1;
    }
}

/// The value of a set of pairs under the matcher's objective, or `None` when
/// the pairs are not a valid matching of compatible entries.
pub fn objective(
    snapshot: &[Seeker<'_>],
    now: Millis,
    policy: &PoolPolicy,
    pairs: &[Pair],
) -> Option<solver::Value> {
    let (n, edges) = compatibility_graph(snapshot, now, policy);
    let pairs: Vec<_> = pairs.iter().map(|p| (p.a, p.b)).collect();
    solver::value_of(n, &edges, &pairs)
}

/// Every compatible pair with its score: the whole graph the matcher works
/// on, built naively (`O(n²)`), for tests, benchmarks and the simulator.
pub fn compatibility_graph(
    snapshot: &[Seeker<'_>],
    now: Millis,
    policy: &PoolPolicy,
) -> (usize, Vec<(usize, usize, i64)>) {
    let nodes: Vec<Node> = snapshot
        .iter()
        .enumerate()
        .map(|(index, s)| Node::of(index, s, now, policy))
        .collect();
    let matcher = Matcher {
        cost: &|_: usize, _: usize| Some(0),
        subsets: solver::Subsets::default(),
        edges: Vec::new(),
        completion_budget: std::cell::Cell::new(0),
    };
    let mut edges = Vec::new();
    for (i, a) in nodes.iter().enumerate() {
        for b in &nodes[i + 1..] {
            if matcher.compatible(a, b) && snapshot[a.at()].user != snapshot[b.at()].user {
                edges.push((
                    a.at(),
                    b.at(),
                    Matcher::<fn(usize, usize) -> Option<i64>>::score(a, b),
                ));
            }
        }
    }
    (snapshot.len(), edges)
}

#[cfg(test)]
mod tests;
