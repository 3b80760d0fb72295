//! Why an entry waits (issue 24, the admin's explain): its window, which of
//! the pool's other entries it could be paired with, why each of the others
//! is kept from it, and what the pass made instead — all judged by the
//! matcher's own rules ([`matcher::judge`]) against one view of the pool:
//! the last pass this node made over it, or, when that pass did not see
//! the entry, the pool as a pass would read it now.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use super::matching::{Facts, Group, repeat_cost, seeker};
use crate::domain::{
    Deviation, Millis, PoolPolicy, PoolRef, QueueEntryId, Rating, RatingRange, UserId, rfc3339,
};
use crate::matcher;
use crate::store::{Relations, Waiting};

/// Candidates an explanation lists at most (the nearest by rating); the
/// counts cover them all.
pub const CANDIDATES_SHOWN: usize = 50;

/// Losses an explanation lists at most (the best pairs it missed first).
pub const LOSSES_SHOWN: usize = 20;

/// A pool as one pass saw it (or would see it now), with what it made.
pub struct PassView {
    pub at: Millis,
    pub policy: PoolPolicy,
    /// The entries the pass could pair (none past its time).
    pub live: Arc<Vec<Waiting>>,
    pub(super) groups: Arc<Vec<Group>>,
    pub(super) facts: Arc<Vec<Facts>>,
    /// Pairs made within the pool (indices into `live`).
    pub pairs: Vec<(usize, usize)>,
    /// Entries paired with a player of another region's pool, with that
    /// player's user id.
    pub crossing: Vec<(usize, UserId)>,
    /// False for a view read for the explain: no pass of this node has
    /// seen the entry yet.
    pub passed: bool,
}

impl PassView {
    pub fn position(&self, id: QueueEntryId) -> Option<usize> {
        self.live.iter().position(|w| w.id == id)
    }

    /// Whether the pass paired entry `t` (within the pool or across
    /// regions).
    pub fn paired(&self, t: usize) -> bool {
        self.pairs.iter().any(|&(a, b)| a == t || b == t) || crossing_partner(self, t).is_some()
    }

    /// What pairing entries `a` and `b` would score in the pass (its
    /// repeat cost taken off), or why it may not be made, blocks aside.
    fn verdict(&self, a: usize, b: usize) -> Result<i64, &'static str> {
        let (x, y) = (&self.live[a], &self.live[b]);
        let (gx, gy) = (self.groups[a], self.groups[b]);
        if x.user_id == y.user_id {
            return Err("same_player");
        }
        if gx.arm != gy.arm {
            return Err("experiment");
        }
        if gx.restricted != gy.restricted {
            return Err("restricted");
        }
        let score = matcher::judge(
            &seeker(x, self.facts[a].need),
            &seeker(y, self.facts[b].need),
            self.at,
            &self.policy,
        )
        .map_err(matcher::Bar::as_str)?;
        Ok(score
            - repeat_cost(
                &self.policy,
                (x, &self.facts[a]),
                (y, &self.facts[b]),
                self.at,
            ))
    }

    /// Each entry's partner in the pass, by index (within the pool).
    fn partners(&self) -> HashMap<usize, usize> {
        self.pairs
            .iter()
            .flat_map(|&(a, b)| [(a, b), (b, a)])
            .collect()
    }
}

/// The admin's answer: why one entry waits.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Explanation {
    #[schema(value_type = String)]
    pub tenant_id: crate::domain::TenantId,
    #[schema(value_type = String)]
    pub pool_key: crate::domain::PoolKey,
    #[schema(value_type = String)]
    pub queue_entry_id: QueueEntryId,
    #[schema(value_type = String)]
    pub user_id: UserId,
    /// `last_pass`: as this node's last pass over the pool saw it;
    /// `now`: no pass of this node has seen the entry yet (it joined
    /// since, or another node's worker runs the pool), so the pool as a
    /// pass would read it now.
    #[schema(example = "last_pass")]
    pub source: &'static str,
    /// When that view was taken (RFC 3339).
    pub at: String,
    pub rating: Rating,
    /// The rating's deviation (350 when unknown).
    pub rating_deviation: Deviation,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::http::openapi::RatingRangeRequest>)]
    pub rating_range: Option<RatingRange>,
    pub waited_seconds: f64,
    /// The entry's window then: its deviation's, never past its own range.
    pub window: i32,
    /// Held for a closer partner (a busy pool's arrivals make one likely
    /// soon): the widest gap it takes meanwhile, by the flow of arrivals
    /// this node has learned. Absent when not held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_gap: Option<i32>,
    /// Restricted for fair play: paired only with other restricted players.
    pub restricted: bool,
    /// The pool's other entries in the view.
    pub others: usize,
    /// Of them, those it could be paired with.
    pub compatible: usize,
    /// Of the others, how many are kept from it and why (each counted once,
    /// by the first of: `same_player`, `experiment` (the other side of a
    /// matcher experiment), `restricted`, `range` (outside either's own
    /// range), `window` (a gap wider than either's window), `colour` (both
    /// must have the same colour), `block` (either blocks the other, as
    /// the durable store says now)).
    pub excluded: BTreeMap<&'static str, usize>,
    /// The nearest others by rating (at most 50), with the verdict on each.
    pub candidates: Vec<Candidate>,
    /// `matched` (the pass paired it), `unmatched` (the pass left it
    /// waiting), or `not_passed` (no pass of this node has seen it).
    pub outcome: &'static str,
    /// Its partner, when the pass paired it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_with: Option<Partner>,
    /// When the pass left it waiting: the compatible candidates the pass
    /// paired with someone else, best pair missed first (at most 20).
    pub lost_to: Vec<Loss>,
}

/// Another entry of the pool, as it stands with the explained one.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Candidate {
    #[schema(value_type = String)]
    pub queue_entry_id: QueueEntryId,
    #[schema(value_type = String)]
    pub user_id: UserId,
    pub rating: Rating,
    pub gap: i32,
    /// `compatible`, or why not (see `excluded`).
    pub verdict: &'static str,
    /// The pair's score in the pass (higher is better: waiting counts
    /// first, then a small gap), when compatible.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<i64>,
    /// Whom the pass paired this candidate with, if anyone.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub paired_with: Option<UserId>,
}

/// The explained entry's partner in the pass.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Partner {
    #[schema(value_type = String)]
    pub user_id: UserId,
    /// The pair's score; absent for a partner of another region's pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<i64>,
}

/// A compatible candidate the pass paired with someone else.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Loss {
    #[schema(value_type = String)]
    pub user_id: UserId,
    #[schema(value_type = String)]
    pub queue_entry_id: QueueEntryId,
    #[schema(value_type = String)]
    pub paired_with: UserId,
    /// The score of the pair the pass made...
    pub their_score: i64,
    /// ...of the pair with the explained entry...
    pub score_with_you: i64,
    /// ...and how much better it was. The pass pairs as many players as
    /// it can first, so a negative figure means the better pair for the
    /// entry would have left someone else unpaired.
    pub by: i64,
}

/// What pairing entry `t` of `view` with each entry would score, or why
/// it may not be made, blocks aside (`t`'s own slot: `same_player`).
pub fn verdicts(view: &PassView, t: usize) -> Vec<Result<i64, &'static str>> {
    (0..view.live.len()).map(|j| view.verdict(t, j)).collect()
}

/// Explains entry `t` of `view` from its `verdicts`; `blocks` are the
/// blocks among its player and the others compatible otherwise
/// ([`block_subjects`]); `hold_gap` the gap it would be held to for a
/// closer partner ([`matcher::Hold::gap`]), if any.
pub fn explain(
    pool: &PoolRef,
    view: &PassView,
    t: usize,
    verdicts: &[Result<i64, &'static str>],
    blocks: &Relations,
    hold_gap: Option<i32>,
) -> Explanation {
    let me = &view.live[t];
    let window = matcher::window_of(&seeker(me, view.facts[t].need), view.at, &view.policy);
    let partners = view.partners();
    let mut excluded: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut all: Vec<Candidate> = Vec::with_capacity(view.live.len().saturating_sub(1));
    for (j, other) in view.live.iter().enumerate().filter(|&(j, _)| j != t) {
        let verdict = match verdicts[j] {
            Ok(_) if blocks.blocked(&me.user_id, &other.user_id) => Err("block"),
            v => v,
        };
        if let Err(why) = verdict {
            *excluded.entry(why).or_default() += 1;
        }
        all.push(Candidate {
            queue_entry_id: other.id,
            user_id: other.user_id.clone(),
            rating: other.rating,
            gap: (other.rating - me.rating).abs(),
            verdict: verdict.err().unwrap_or("compatible"),
            score: verdict.ok(),
            paired_with: partners
                .get(&j)
                .map(|&p| view.live[p].user_id.clone())
                .or_else(|| crossing_partner(view, j)),
        });
    }
    let compatible = all.iter().filter(|c| c.score.is_some()).count();
    let (outcome, matched_with, lost_to) = if !view.passed {
        ("not_passed", None, Vec::new())
    } else if let Some(&p) = partners.get(&t) {
        let score = view.verdict(t, p).ok();
        let partner = Partner {
            user_id: view.live[p].user_id.clone(),
            score,
        };
        ("matched", Some(partner), Vec::new())
    } else if let Some(user_id) = crossing_partner(view, t) {
        let partner = Partner {
            user_id,
            score: None,
        };
        ("matched", Some(partner), Vec::new())
    } else {
        ("unmatched", None, losses(view, t, &all, &partners))
    };
    all.sort_by_key(|c| (c.gap, c.rating));
    all.truncate(CANDIDATES_SHOWN);
    let group = view.groups[t];
    Explanation {
        tenant_id: pool.tenant_id.clone(),
        pool_key: pool.key,
        queue_entry_id: me.id,
        user_id: me.user_id.clone(),
        source: if view.passed { "last_pass" } else { "now" },
        at: rfc3339(view.at),
        rating: me.rating,
        rating_deviation: me.rating_deviation,
        rating_range: me.rating_range,
        waited_seconds: (view.at - me.enqueued_at).max(0) as f64 / 1000.0,
        window,
        hold_gap: hold_gap.filter(|&gap| gap < window),
        restricted: group.restricted,
        others: view.live.len() - 1,
        compatible,
        excluded,
        candidates: all,
        outcome,
        matched_with,
        lost_to,
    }
}

/// The compatible candidates of entry `t` the pass paired elsewhere.
fn losses(
    view: &PassView,
    t: usize,
    candidates: &[Candidate],
    partners: &HashMap<usize, usize>,
) -> Vec<Loss> {
    let index: HashMap<QueueEntryId, usize> = view
        .live
        .iter()
        .enumerate()
        .map(|(i, w)| (w.id, i))
        .collect();
    let mut lost: Vec<Loss> = candidates
        .iter()
        .filter_map(|c| {
            let with_you = c.score?;
            let j = *index.get(&c.queue_entry_id)?;
            let p = *partners.get(&j)?;
            let theirs = view.verdict(j, p).ok()?;
            Some(Loss {
                user_id: c.user_id.clone(),
                queue_entry_id: c.queue_entry_id,
                paired_with: view.live[p].user_id.clone(),
                their_score: theirs,
                score_with_you: with_you,
                by: theirs - with_you,
            })
        })
        .collect();
    debug_assert!(lost.iter().all(|l| l.user_id != view.live[t].user_id));
    lost.sort_by_key(|l| std::cmp::Reverse(l.score_with_you));
    lost.truncate(LOSSES_SHOWN);
    lost
}

/// The player of another region's pool entry `j` was paired with.
fn crossing_partner(view: &PassView, j: usize) -> Option<UserId> {
    view.crossing
        .iter()
        .find(|(i, _)| *i == j)
        .map(|(_, u)| u.clone())
}

/// The players whose blocks with `t`'s player an explanation needs: `t`'s
/// and those of the others compatible with it otherwise, by `verdicts`.
pub fn block_subjects(
    view: &PassView,
    t: usize,
    verdicts: &[Result<i64, &'static str>],
) -> Vec<UserId> {
    std::iter::once(view.live[t].user_id.clone())
        .chain(
            verdicts
                .iter()
                .enumerate()
                .filter(|&(j, v)| j != t && v.is_ok())
                .map(|(j, _)| view.live[j].user_id.clone()),
        )
        .collect()
}
