//! One matching pass over a pool, and the commit protocol of SPEC §5, with
//! the durable store as the authority on who is in a game:
//!
//! 1. colors are decided, then both entries are reserved atomically, only
//!    if both are still searching (white first, so a recoverer knows the
//!    colors too);
//! 2. the match is written durably *before* its game exists, with a claim
//!    on both players that the store refuses when either already has an
//!    unfinished match ([`Claim::Busy`]: the pair is released and the busy
//!    player's entry cancelled). With a game service that mints its own ids
//!    this is an intent; with the built-in creator, whose ids are known in
//!    advance, it is the record itself (one write);
//! 3. the game is created (idempotent by match id), its record written
//!    (the intent becomes the record), then both entries become `MATCHED`;
//! 4. a refusal by the game service (4xx) drops the intent and puts both
//!    back searching with their original `enqueued_at`; a game service that
//!    does not answer may have created the game, so the pair stays held
//!    and its game is asked for again with the same match id until the
//!    service answers;
//! 5. whatever a dead worker left — a reservation past its deadline, an
//!    intent whose owner's time ran out — [`MatchingService::recover_stale`]
//!    finishes with the same match id or rolls back, never matching anyone
//!    twice and never creating a game no record holds. A rollback of a
//!    pair with nothing stored is itself written durably
//!    ([`Claim::Withdrawn`]), so a worker that was only slow, not dead,
//!    is refused if it tries to store that pair afterwards.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use futures::future::join_all;
use futures::stream::FuturesUnordered;
use rand::Rng;
use serde_json::json;
use tracing::Instrument;

use super::backlog::Backlog;
use super::breaker::{BreakerState, CircuitBreaker};
use super::explain::{self, PassView};
use super::games::{GameCreationError, GameCreator, NewGame};
use super::live::LiveConfig;
use crate::domain::{
    Arm, Clock, ColorHistory, DEFAULT_STRATEGY, EndReason, EntryStatus, Flags, GameId, MatchIntent,
    MatchRecord, MatchSide, MatchSource, Millis, PoolKey, PoolPolicy, PoolRef, QueueEntryId,
    Region, Strategy, SystemClock, TenantId, UserId, in_range,
};
use crate::matcher::{self, Flow, Hold, Seeker};
use crate::store::{
    AuditEvent, Claim, DurableStore, EntryStore, GuardStore, PairingStore, Reservation, StoreError,
    StoreResult, Waiting,
};

/// Commit rounds of one pass in flight at the same time.
const ROUNDS_IN_FLIGHT: usize = 4;

/// Intents one recovery pass takes over at most.
const INTENTS_PER_RECOVERY: u32 = 500;

/// Games of intents taken over asked for at once: a worker that died with
/// hundreds of games in flight leaves as many intents, and asking for them
/// one by one would hold the recovering worker's loop (and its matching)
/// for hundreds of game-service round trips.
const INTENTS_IN_FLIGHT: usize = 64;

/// Timings of the matching worker.
#[derive(Debug, Clone)]
pub struct MatchingLimits {
    pub pairs_per_batch: usize,
    pub reservation_ms: Millis,
    pub guard_ms: Millis,
    pub presence_ms: Option<Millis>,
}

/// What one pass over a pool did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    pub matched_pairs: usize,
    /// Pairs put back searching (the game service refused, or a player
    /// turned out to be in a game already).
    pub failed_pairs: usize,
    /// Entries that left without a match: timed out, or cancelled as absent.
    pub timed_out: usize,
}

pub struct MatchingService {
    /// The queue store's pairing protocol.
    store: Arc<dyn PairingStore>,
    /// Holds of a match left half-done are dropped when it is rolled back.
    guards: Arc<dyn GuardStore>,
    durable: Arc<dyn DurableStore>,
    games: Arc<dyn GameCreator>,
    breaker: Arc<CircuitBreaker>,
    /// Each pool's policy (changed at run time).
    live: Arc<LiveConfig>,
    limits: MatchingLimits,
    /// Where passes report how long they took (joins read it).
    backlog: Arc<Backlog>,
    clock: Arc<dyn Clock>,
    /// How long a player may be held for a closer partner.
    hold: Hold,
    /// What each pool's arrivals have looked like, learned from the
    /// entries its passes see for the first time.
    /// Per pool, and per side of a matcher experiment when one runs.
    flows: std::sync::Mutex<HashMap<(PoolRef, Group), PoolFlow>>,
    /// The wait figures the joins of this node tell players, to check the
    /// real waits against (none: not checked).
    estimates: Option<Arc<super::queue::EstimateCache>>,
    /// What each waiting entry's passes know of its player, per pool
    /// ([`Self::facts`]).
    facts: std::sync::Mutex<HashMap<PoolRef, HashMap<QueueEntryId, Facts>>>,
    /// The last pass of this node over each pool, for the explain.
    views: std::sync::Mutex<HashMap<PoolRef, Arc<PassView>>>,
}

/// A waiting entry's player, as the pass reads them once.
#[derive(Debug, Clone, Default)]
pub(super) struct Facts {
    /// Their colour need ([`ColorHistory::need`]).
    pub(super) need: i8,
    /// Their latest opponents, newest first, when the policy counts
    /// repeats (`None`: not read).
    opponents: Option<Arc<[(UserId, Millis)]>>,
}

/// How far back a player's latest games are read for repeat pairings
/// counted in games (the window in time counts too, if longer).
const OPPONENTS_LOOK_BACK_MS: Millis = 86_400_000;

/// When `a` and `b` last met, as the latest opponents each was read with
/// show it: (games back for the one who played fewer since, the latest
/// time); `None` when neither list names the other.
fn last_met((a, fa): (&Waiting, &Facts), (b, fb): (&Waiting, &Facts)) -> Option<(u32, Millis)> {
    let met = |f: &Facts, other: &UserId| {
        let games = f.opponents.as_deref()?;
        let k = games.iter().position(|(u, _)| u == other)?;
        Some((k as u32 + 1, games[k].1))
    };
    match (met(fa, &b.user_id), met(fb, &a.user_id)) {
        (None, None) => None,
        (Some(x), None) | (None, Some(x)) => Some(x),
        (Some(x), Some(y)) => Some((x.0.min(y.0), x.1.max(y.1))),
    }
}

/// Whether `a` and `b` met within the policy's repeat window (in time or
/// in games): a repeat pairing, penalised or not.
fn met_lately(
    policy: &PoolPolicy,
    a: (&Waiting, &Facts),
    b: (&Waiting, &Facts),
    now: Millis,
) -> bool {
    last_met(a, b).is_some_and(|(games_ago, at)| {
        games_ago <= policy.repeat_games || now - at < policy.repeat_window_ms
    })
}

/// What pairing `a` and `b` costs for having met recently
/// ([`PoolPolicy::repeat_cost`]).
pub(super) fn repeat_cost(
    policy: &PoolPolicy,
    a: (&Waiting, &Facts),
    b: (&Waiting, &Facts),
    now: Millis,
) -> i64 {
    if policy.repeat_penalty <= 0 {
        return 0;
    }
    let Some((games_ago, at)) = last_met(a, b) else {
        return 0;
    };
    let waited = (now - a.0.enqueued_at).min(now - b.0.enqueued_at);
    policy.repeat_cost(now - at, games_ago, waited)
}

/// Who an entry may be paired with: those on its side of a matcher
/// experiment (if one runs), restricted for fair play or not as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Group {
    pub(super) arm: Option<Arm>,
    pub(super) restricted: bool,
}

/// Matchings of a pass at most: after each, the durable store is asked
/// what stands between the players paired (a block, a restriction set
/// since this node last read them), and the barred pairs are made again
/// without those pairings. Pairs still barred after the last wait for the
/// next pass.
const MATCHINGS_PER_PASS: usize = 3;

/// The flow of one pool's arrivals, and the newest arrival already in it.
#[derive(Default)]
struct PoolFlow {
    flow: Flow,
    newest: Option<Millis>,
}

/// The labels of the experiment side `user` is on, if the tenant runs one.
fn arm_labels<'a>(
    pool: &'a PoolRef,
    flags: &'a Flags,
    user: &UserId,
) -> Option<crate::observe::ArmLabels<'a>> {
    let experiment = flags.matcher_experiment.as_ref()?;
    Some(crate::observe::ArmLabels {
        tenant: pool.tenant_id.as_str(),
        experiment: &experiment.name,
        arm: arm_of(flags, &pool.tenant_id, user)?.as_str(),
    })
}

/// An entry to match: the entry, and the pool it lives in when that is
/// not the pass's pool (a region fallback partner, or an entry waiting in
/// several time controls, listed in the pass's pool too).
type Side<'a> = (&'a Waiting, Option<PoolKey>);

/// A reserved pair on its way to a game.
struct Pending<'a> {
    white: &'a Waiting,
    black: &'a Waiting,
    intent: MatchIntent,
}

/// Where a match's entries are reserved: both in its pool, or, for a match
/// across regions, each alone in the pool it waits in.
fn held(intent: &MatchIntent) -> Vec<(PoolRef, Reservation)> {
    let (Some(a), Some(b)) = (intent.white.entry_id, intent.black.entry_id) else {
        return Vec::new();
    };
    let pool_of = |side: &MatchSide| PoolRef {
        tenant_id: intent.tenant_id.clone(),
        key: side.pool_in(intent.pool),
    };
    let (pa, pb) = (pool_of(&intent.white), pool_of(&intent.black));
    let match_id = intent.match_id;
    if pa == pb {
        vec![(pa, Reservation { match_id, a, b })]
    } else {
        vec![
            (pa, Reservation { match_id, a, b: a }),
            (pb, Reservation { match_id, a: b, b }),
        ]
    }
}

/// What became of the pairs of a round.
#[derive(Default)]
struct Outcome {
    records: Vec<MatchRecord>,
    put_back: usize,
}

impl MatchingService {
    pub fn new(
        (store, guards): (Arc<dyn PairingStore>, Arc<dyn GuardStore>),
        durable: Arc<dyn DurableStore>,
        games: Arc<dyn GameCreator>,
        breaker: Arc<CircuitBreaker>,
        live: Arc<LiveConfig>,
        limits: MatchingLimits,
        backlog: Arc<Backlog>,
    ) -> Self {
        Self {
            store,
            guards,
            durable,
            games,
            breaker,
            live,
            limits,
            backlog,
            clock: Arc::new(SystemClock),
            hold: Hold::default(),
            flows: Default::default(),
            facts: Default::default(),
            views: Default::default(),
            estimates: None,
        }
    }

    /// Holds players for a closer partner by `hold` (a zero cost holds
    /// nobody: every compatible pair is made at once).
    pub fn with_hold(mut self, hold: Hold) -> Self {
        self.hold = hold;
        self
    }

    /// The pool's flow, with the entries of `live` it has not seen yet
    /// (those that arrived after the newest it has) taken in, oldest first.
    /// A node that takes a pool over learns its flow afresh, holding nobody
    /// until it has seen enough arrivals.
    fn flow(&self, pool: &PoolRef, group: Group, live: &[&Waiting]) -> Flow {
        let mut flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        let known = flows.entry((pool.clone(), group)).or_default();
        let mut fresh: Vec<(Millis, i32)> = live
            .iter()
            .filter(|w| known.newest.is_none_or(|n| w.enqueued_at > n))
            .map(|w| (w.enqueued_at, w.rating))
            .collect();
        fresh.sort_unstable();
        for &(at, rating) in &fresh {
            known.flow.observe(at, rating);
        }
        if let Some(&(at, _)) = fresh.last() {
            known.newest = Some(at);
        }
        known.flow
    }

    /// What the pass needs to know of each entry of `live` beyond the
    /// entry: its player's colour need ([`ColorHistory::need`]) and, when
    /// the policy counts repeat pairings, their latest opponents. Read from
    /// the durable store once per entry, the first pass that needs it: a
    /// waiting player plays no game, so neither changes while they wait.
    /// Entries no longer waiting are forgotten.
    async fn facts(
        &self,
        pool: &PoolRef,
        live: &[Waiting],
        policy: &PoolPolicy,
        now: Millis,
    ) -> StoreResult<Vec<Facts>> {
        let repeats = policy.repeat_penalty > 0;
        let (no_colors, no_opponents): (Vec<UserId>, Vec<UserId>) = {
            let known = self.facts.lock().unwrap_or_else(|e| e.into_inner());
            let known = known.get(pool);
            let fact = |w: &Waiting| known.and_then(|k| k.get(&w.id));
            (
                live.iter()
                    .filter(|w| fact(w).is_none())
                    .map(|w| w.user_id.clone())
                    .collect(),
                live.iter()
                    .filter(|w| repeats && fact(w).is_none_or(|f| f.opponents.is_none()))
                    .map(|w| w.user_id.clone())
                    .collect(),
            )
        };
        // Both reads at once (each on a reader connection of its own).
        let colors = async {
            if no_colors.is_empty() {
                Ok(HashMap::new())
            } else {
                self.durable
                    .color_histories(&pool.tenant_id, &no_colors)
                    .await
            }
        };
        let opponents = async {
            if no_opponents.is_empty() {
                Ok(HashMap::new())
            } else {
                self.durable
                    .recent_opponents(
                        &pool.tenant_id,
                        &no_opponents,
                        now - policy.repeat_window_ms.max(OPPONENTS_LOOK_BACK_MS),
                        crate::domain::MAX_REPEAT_GAMES,
                    )
                    .await
            }
        };
        let (colors, opponents) = futures::try_join!(colors, opponents)?;
        let mut all = self.facts.lock().unwrap_or_else(|e| e.into_inner());
        let known = all.entry(pool.clone()).or_default();
        let facts: Vec<Facts> = live
            .iter()
            .map(|w| {
                let mut fact = known.get(&w.id).cloned().unwrap_or_else(|| Facts {
                    need: colors
                        .get(&w.user_id)
                        .copied()
                        .unwrap_or_default()
                        .need()
                        .clamp(-3, 3) as i8,
                    opponents: None,
                });
                if repeats && fact.opponents.is_none() {
                    fact.opponents = Some(
                        opponents
                            .get(&w.user_id)
                            .map(|o| o.as_slice().into())
                            .unwrap_or_else(|| Arc::from([])),
                    );
                }
                fact
            })
            .collect();
        *known = live
            .iter()
            .map(|w| w.id)
            .zip(facts.iter().cloned())
            .collect();
        Ok(facts)
    }

    /// Checks matched players' real waits against what `estimates` tells
    /// players like them.
    pub fn with_estimates(mut self, estimates: Arc<super::queue::EstimateCache>) -> Self {
        self.estimates = Some(estimates);
        self
    }

    /// Reads the time from `clock` (tests move it by hand).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Times out entries past their time, then matches the rest. Nothing
    /// happens while the durable store cannot write (no match could be
    /// recorded) or game creation is down.
    pub async fn run_pool(&self, pool: &PoolRef) -> StoreResult<PassReport> {
        if let Some(failure) = self.durable.write_failure() {
            return Err(StoreError::Unavailable(format!(
                "matching paused: the durable store cannot write: {}",
                failure.reason
            )));
        }
        let started = std::time::Instant::now();
        self.backlog.started(pool);
        let span =
            crate::traced_span!("matching_pass", tenant_id = %pool.tenant_id, pool = %pool.key);
        let pass = self.pass(pool, started).instrument(span).await;
        self.backlog.passed(pool, started.elapsed());
        pass
    }

    async fn pass(&self, pool: &PoolRef, started: std::time::Instant) -> StoreResult<PassReport> {
        let now = self.clock.now();
        let policy = self.live.policy(pool);
        let waiting = self.store.waiting(pool).await?;
        let searching = waiting.len();
        let mut expired = Vec::new();
        let mut live = Vec::with_capacity(waiting.len());
        for w in waiting {
            match self.expired(&policy, &w, now) {
                Some(reason) => expired.push((w, reason)),
                None => live.push(w),
            }
        }
        // Shared with the explain's view of the pass.
        let live = Arc::new(live);
        let mut report = PassReport::default();
        if !expired.is_empty() {
            report.timed_out = self.end_expired(pool, &expired, now).await?;
        }
        // Game creation is down: everyone keeps waiting (and the outage
        // does not count toward their queue time) until a probe may go.
        if self.breaker.state(now) == BreakerState::Open {
            return Ok(report);
        }
        // One read of the flags, the restricted players and one group per
        // entry for the whole pass: pairing, fallback and its partners all
        // use them.
        let flags = self.live.flags(&pool.tenant_id);
        let group_of = self.grouper(pool, &flags);
        let groups: Arc<Vec<Group>> = Arc::new(live.iter().map(&group_of).collect());
        let facts = Arc::new(self.facts(pool, &live, &policy, now).await?);
        let mut bars = std::collections::HashSet::new();
        let mut visitors: Option<Vec<Visitors>> = None;
        let mut matchings = 0;
        let (pairs, crossing) = loop {
            matchings += 1;
            let mut pairs = self.pair(pool, (&live, &groups, &facts), &flags, &policy, now, &bars);
            let lonely = lonely(pool, &live, &groups, &pairs, &policy, now);
            if !lonely.is_empty() && visitors.is_none() {
                visitors = Some(self.visitors(pool, &policy, &group_of, now).await?);
            }
            let there = visitors.as_deref().unwrap_or_default();
            let mut crossing = cross_pairs(&live, &groups, &lonely, &policy, there, now);
            let users: Vec<UserId> = pairs
                .iter()
                .flat_map(|&(a, b)| [&live[a], &live[b]])
                .chain(crossing.iter().map(|&(a, _)| &live[a]))
                .chain(crossing.iter().map(|&(_, (v, j))| &there[v].entries[j]))
                .map(|w| w.user_id.clone())
                .collect();
            if users.is_empty() {
                break (pairs, crossing);
            }
            let relations = self
                .durable
                .relations_among(&pool.tenant_id, &users)
                .await?;
            let barred = |a: &Waiting, b: &Waiting| relations.bars(&a.user_id, &b.user_id);
            crossing.retain(|&(a, (v, j))| !barred(&live[a], &there[v].entries[j]));
            let fresh: Vec<(usize, usize)> = pairs
                .iter()
                .copied()
                .filter(|&(a, b)| barred(&live[a], &live[b]))
                .collect();
            if fresh.is_empty() || matchings == MATCHINGS_PER_PASS {
                pairs.retain(|&(a, b)| !barred(&live[a], &live[b]));
                break (pairs, crossing);
            }
            bars.extend(fresh.into_iter().map(|(a, b)| (a.min(b), a.max(b))));
        };
        let visitors = visitors.unwrap_or_default();
        self.remember(
            pool,
            PassView {
                at: now,
                policy,
                live: live.clone(),
                groups: groups.clone(),
                facts: facts.clone(),
                pairs: pairs.clone(),
                crossing: crossing
                    .iter()
                    .map(|&(a, (v, j))| (a, visitors[v].entries[j].user_id.clone()))
                    .collect(),
                passed: true,
            },
        );
        if policy.repeat_penalty > 0 && !pairs.is_empty() {
            let repeats = pairs
                .iter()
                .filter(|&&(a, b)| {
                    met_lately(&policy, (&live[a], &facts[a]), (&live[b], &facts[b]), now)
                })
                .count();
            crate::observe::repeat_pairings(&pool.tenant_id, repeats, pairs.len());
        }
        let mut all: Vec<(Side<'_>, Side<'_>)> = pairs
            .iter()
            .map(|&(a, b)| ((&live[a], live[a].home), (&live[b], live[b].home)))
            .collect();
        all.extend(crossing.iter().map(|&(a, (v, i))| {
            let there = &visitors[v];
            (
                (&live[a], live[a].home),
                (&there.entries[i], Some(pool.key.in_region(there.region))),
            )
        }));
        // A few rounds in flight at once: their persistence can share one
        // group commit, and one slow game creation does not hold up the rest.
        let rounds: Vec<Vec<(Side<'_>, Side<'_>)>> = all
            .chunks(self.limits.pairs_per_batch)
            .map(<[_]>::to_vec)
            .collect();
        let mut pending = rounds.iter();
        let mut in_flight: FuturesUnordered<_> = pending
            .by_ref()
            .take(ROUNDS_IN_FLIGHT)
            .map(|round| self.commit_round(pool, round, now))
            .collect();
        let mut first_error = None;
        while let Some(result) = in_flight.next().await {
            if let Some(round) = pending.next() {
                in_flight.push(self.commit_round(pool, round, now));
            }
            match result {
                Ok((ok, failed)) => {
                    report.matched_pairs += ok;
                    report.failed_pairs += failed;
                }
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        crate::observe::pass(pool, searching, started.elapsed());
        if let Some(e) = first_error {
            return Err(e);
        }
        Ok(report)
    }

    /// Who each entry of `pool` may be paired with, by `flags` and the
    /// players restricted now.
    fn grouper<'a>(&self, pool: &'a PoolRef, flags: &'a Flags) -> impl Fn(&Waiting) -> Group + 'a {
        let restricted = self.live.restricted(&pool.tenant_id);
        move |w: &Waiting| Group {
            arm: arm_of(flags, &pool.tenant_id, &w.user_id),
            restricted: restricted.contains(&w.user_id),
        }
    }

    /// Keeps a pass's view of `pool` for the explain (a pool nobody waits
    /// in is forgotten).
    fn remember(&self, pool: &PoolRef, view: PassView) {
        let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        if view.live.is_empty() {
            views.remove(pool);
        } else {
            views.insert(pool.clone(), Arc::new(view));
        }
    }

    /// Why entry `id` of `pool` waits ([`explain`]): as this node's last
    /// pass over the pool saw it — while it still waits, or when that pass
    /// paired it — else as a pass would read the pool now. `None` when the
    /// entry neither waits in the pool nor was paired by that pass.
    /// `entries` says whether it still waits (without counting as its
    /// client being heard from).
    pub async fn explain(
        &self,
        entries: &dyn EntryStore,
        pool: &PoolRef,
        id: QueueEntryId,
    ) -> StoreResult<Option<explain::Explanation>> {
        let remembered = self
            .views
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(pool)
            .cloned();
        let mut view = None;
        if let Some(last) = remembered {
            if let Some(t) = last.position(id) {
                let waiting = entries
                    .user_entry(&pool.tenant_id, &last.live[t].user_id)
                    .await?
                    .filter(|e| e.id == id && e.status == EntryStatus::Searching);
                match (last.paired(t), waiting) {
                    // As the pass left it.
                    (false, Some(_)) | (true, None) => view = Some(last),
                    // Put back since the pass paired it: as it is now.
                    (true, Some(_)) => {}
                    // Gone since.
                    (false, None) => return Ok(None),
                }
            }
        }
        let view = match view {
            Some(view) => view,
            None => Arc::new(self.view_now(pool).await?),
        };
        let Some(t) = view.position(id) else {
            return Ok(None);
        };
        let verdicts = explain::verdicts(&view, t);
        let blocks = self
            .durable
            .relations_among(
                &pool.tenant_id,
                &explain::block_subjects(&view, t, &verdicts),
            )
            .await?;
        // The hold for a closer partner, by the flow this node has learned.
        let (me, group) = (&view.live[t], view.groups[t]);
        let flags = self.live.flags(&pool.tenant_id);
        let flow = match strategy_of(&flags, group) {
            Strategy::Volume => self
                .flows
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&(pool.clone(), group))
                .map(|f| f.flow),
            Strategy::Window => None,
        };
        let hold_gap = flow.and_then(|f| self.hold.gap(&f, me.rating, view.at - me.enqueued_at));
        Ok(Some(explain::explain(
            pool, &view, t, &verdicts, &blocks, hold_gap,
        )))
    }

    /// The pool as a pass would read it now, with nothing paired.
    async fn view_now(&self, pool: &PoolRef) -> StoreResult<PassView> {
        let now = self.clock.now();
        let policy = self.live.policy(pool);
        let live: Vec<Waiting> = self
            .store
            .waiting(pool)
            .await?
            .into_iter()
            .filter(|w| self.expired(&policy, w, now).is_none())
            .collect();
        let flags = self.live.flags(&pool.tenant_id);
        let groups = live.iter().map(self.grouper(pool, &flags)).collect();
        let facts = self.facts(pool, &live, &policy, now).await?;
        Ok(PassView {
            at: now,
            policy,
            live: Arc::new(live),
            groups: Arc::new(groups),
            facts: Arc::new(facts),
            pairs: Vec::new(),
            crossing: Vec::new(),
            passed: false,
        })
    }

    /// The pairs (indices into `live`) the pool's strategy makes, none of
    /// them in `bars`. Each group is paired among itself only: a side of a
    /// matcher experiment by its own strategy (learning its own flow of
    /// arrivals), restricted players among themselves.
    fn pair(
        &self,
        pool: &PoolRef,
        (live, groups, facts): (&[Waiting], &[Group], &[Facts]),
        flags: &Flags,
        policy: &PoolPolicy,
        now: Millis,
        bars: &std::collections::HashSet<(usize, usize)>,
    ) -> Vec<(usize, usize)> {
        let mut sides: Vec<(Group, Vec<usize>)> = Vec::new();
        for (i, group) in groups.iter().enumerate() {
            match sides.iter_mut().find(|s| s.0 == *group) {
                Some(side) => side.1.push(i),
                None => sides.push((*group, vec![i])),
            }
        }
        let mut pairs = Vec::new();
        for (group, members) in sides {
            let strategy = strategy_of(flags, group);
            let waiting: Vec<&Waiting> = members.iter().map(|&i| &live[i]).collect();
            let seekers: Vec<Seeker<'_>> = members
                .iter()
                .map(|&i| seeker(&live[i], facts[i].need))
                .collect();
            let flow = self.flow(pool, group, &waiting);
            let hold = match strategy {
                Strategy::Volume => Some((&self.hold, &flow)),
                Strategy::Window => None,
            };
            let cost = |i: usize, j: usize| {
                let (a, b) = (members[i], members[j]);
                if bars.contains(&(a.min(b), a.max(b))) {
                    return None;
                }
                Some(repeat_cost(
                    policy,
                    (&live[a], &facts[a]),
                    (&live[b], &facts[b]),
                    now,
                ))
            };
            let found = matcher::find_pairs_costed(&seekers, now, policy, hold, cost);
            pairs.extend(found.into_iter().map(|p| (members[p.a], members[p.b])));
        }
        pairs
    }

    /// Region fallback, second step: per region the policy falls back to,
    /// its pool's policy and the entries there that would take a partner
    /// of this pool's region — not expired, with no partner in their own
    /// pool (by its window), and accepting this region: a `GLOBAL` entry
    /// accepts every region, any other only by its own pool's fallback.
    async fn visitors(
        &self,
        pool: &PoolRef,
        policy: &PoolPolicy,
        group_of: &impl Fn(&Waiting) -> Group,
        now: Millis,
    ) -> StoreResult<Vec<Visitors>> {
        let mut found = Vec::new();
        for region in policy.fallback_regions.iter() {
            if region == pool.key.region {
                continue;
            }
            let there = PoolRef {
                tenant_id: pool.tenant_id.clone(),
                key: pool.key.in_region(region),
            };
            let theirs = self.live.policy(&there);
            let waiting: Vec<Waiting> = self
                .store
                .waiting(&there)
                .await?
                .into_iter()
                // Entries of that region's own pool only: one listed there
                // from another time control falls back from its own.
                .filter(|w| w.home.is_none() && self.expired(&theirs, w, now).is_none())
                .collect();
            let seekers: Vec<Seeker<'_>> = waiting.iter().map(|w| seeker(w, 0)).collect();
            let paired = paired_flags(
                waiting.len(),
                matcher::find_pairs(&seekers, now, &theirs)
                    .into_iter()
                    .map(|p| (p.a, p.b)),
            );
            let entries: Vec<Waiting> = waiting
                .into_iter()
                .zip(paired)
                .filter(|(w, paired)| {
                    !paired
                        && (region == Region::Global
                            || theirs.falls_back_to(pool.key.region, now - w.enqueued_at))
                })
                .map(|(w, _)| w)
                .collect();
            if !entries.is_empty() {
                let groups = entries.iter().map(group_of).collect();
                found.push(Visitors {
                    region,
                    policy: theirs,
                    entries,
                    groups,
                });
            }
        }
        Ok(found)
    }

    /// Why `w` must leave the pool before pairing, if it must: past the
    /// pool's queue time (it times out), or unheard of for the presence
    /// timeout (it is cancelled as absent); time spent in a game-creation
    /// outage counts for neither. An entry listed from another pool
    /// (another time control it waits in) leaves by its own pool's rules,
    /// never by this one's.
    fn expired(&self, policy: &PoolPolicy, w: &Waiting, now: Millis) -> Option<EndReason> {
        if w.home.is_some() {
            return None;
        }
        let waited = now - w.enqueued_at - self.breaker.outage_overlap(w.enqueued_at, now);
        let unseen = now - w.last_seen_at - self.breaker.outage_overlap(w.last_seen_at, now);
        if waited >= policy.max_queue_time_ms {
            Some(EndReason::MaxQueueTime)
        } else if self.limits.presence_ms.is_some_and(|p| unseen >= p) {
            Some(EndReason::Absent)
        } else {
            None
        }
    }

    /// Ends the entries that must leave the pool: answers how many ended.
    async fn end_expired(
        &self,
        pool: &PoolRef,
        expired: &[(Waiting, EndReason)],
        now: Millis,
    ) -> StoreResult<usize> {
        let ids = |reason: EndReason| -> Vec<_> {
            expired
                .iter()
                .filter(|(_, r)| *r == reason)
                .map(|(w, _)| w.id)
                .collect()
        };
        let timed_out = ids(EndReason::MaxQueueTime);
        let absent = ids(EndReason::Absent);
        let mut ended = Vec::with_capacity(expired.len());
        if !timed_out.is_empty() {
            ended.extend(
                self.store
                    .time_out(pool, &timed_out, now)
                    .await?
                    .into_iter()
                    .map(|e| (e, EndReason::MaxQueueTime)),
            );
        }
        if !absent.is_empty() {
            ended.extend(
                self.store
                    .cancel_entries(pool, &absent, EndReason::Absent, now)
                    .await?
                    .into_iter()
                    .map(|e| (e, EndReason::Absent)),
            );
        }
        let flags = self.live.flags(&pool.tenant_id);
        let mut events = Vec::with_capacity(ended.len());
        for (e, reason) in &ended {
            let waited_ms = now - e.enqueued_at;
            let unseen_ms = now - e.last_seen_at;
            // The metric's reason label (and the audit's) keep the
            // lower-case names they always had.
            let label = match reason {
                EndReason::Absent => "absent",
                _ => "max_queue_time",
            };
            crate::observe::timed_out(pool, label, waited_ms);
            if let Some(arm) = arm_labels(pool, &flags, &e.user_id) {
                crate::observe::arm_timed_out(&arm, label);
            }
            tracing::info!(
                event = "timeout",
                queue_entry_id = %e.id,
                tenant_id = %e.tenant_id,
                user_id = %e.user_id,
                pool = %e.pool,
                status = e.status.public(),
                waited_ms,
                unseen_ms,
                reason = label,
                request_id = e.request_id.as_deref().unwrap_or(""),
                "entry ended without a match"
            );
            events.push(AuditEvent {
                at: now,
                tenant_id: e.tenant_id.clone(),
                kind: "timeout".into(),
                subject: e.id.to_string(),
                detail: json!({ "pool": e.pool, "user": e.user_id, "waited_ms": waited_ms, "reason": label }),
            });
        }
        self.durable.record(&events).await?;
        Ok(ended.len())
    }

    /// Colors, reserves, records durably, creates, and commits one batch of
    /// pairs (see the module docs). Answers (pairs matched, pairs put back).
    async fn commit_round(
        &self,
        pool: &PoolRef,
        pairs: &[(Side<'_>, Side<'_>)],
        now: Millis,
    ) -> StoreResult<(usize, usize)> {
        let span = crate::traced_span!("commit", pool = %pool.key, pairs = pairs.len());
        self.commit_pairs(pool, pairs, now).instrument(span).await
    }

    async fn commit_pairs(
        &self,
        pool: &PoolRef,
        pairs: &[(Side<'_>, Side<'_>)],
        now: Millis,
    ) -> StoreResult<(usize, usize)> {
        let colored = self.assign_colors(pool, pairs).await?;
        let intents: Vec<MatchIntent> = colored
            .iter()
            .map(|&(white, black)| self.intent(pool, white, black, now))
            .collect();
        let granted = self.reserve(pool, &intents, now).await?;
        let pending: Vec<Pending<'_>> = intents
            .into_iter()
            .zip(colored)
            .zip(granted)
            .filter(|(_, ok)| *ok)
            .map(|((intent, ((white, _), (black, _))), _)| Pending {
                intent,
                white,
                black,
            })
            .collect();
        if pending.is_empty() {
            return Ok((0, 0));
        }
        let outcome = match self.known_games(&pending) {
            Some(games) => self.record_known(pool, &pending, games, now).await?,
            None => self.claim_and_create(pool, &pending, now).await?,
        };
        if !outcome.records.is_empty() {
            let committed_at = self.clock.now();
            self.store
                .commit(
                    &outcome.records,
                    committed_at + self.limits.guard_ms,
                    committed_at,
                )
                .await?;
        }
        let flags = self.live.flags(&pool.tenant_id);
        for r in &outcome.records {
            if let Some(p) = pending.iter().find(|p| p.intent.match_id == r.match_id) {
                let (gap, waits) = (
                    p.white.rating - p.black.rating,
                    [now - p.white.enqueued_at, now - p.black.enqueued_at],
                );
                crate::observe::matched(pool, gap, waits);
                // Both players of a pair are on one side (a side is paired
                // among itself).
                if let Some(arm) = arm_labels(pool, &flags, &p.white.user_id) {
                    crate::observe::arm_matched(&arm, gap, waits);
                }
            }
        }
        Ok((outcome.records.len(), outcome.put_back))
    }

    /// Reserves the entries of each match (white first, so a recoverer
    /// knows the colors too); answers one flag per match. The matches of
    /// the pool go in one call. A match across regions reserves its two
    /// entries one pool after the other, and lets go of the first when
    /// the second is gone (a worker that dies in between
    /// leaves a reservation past its deadline, which recovery releases).
    async fn reserve(
        &self,
        pool: &PoolRef,
        intents: &[MatchIntent],
        now: Millis,
    ) -> StoreResult<Vec<bool>> {
        let until = now + self.limits.reservation_ms;
        let holds: Vec<Vec<(PoolRef, Reservation)>> = intents.iter().map(held).collect();
        let local: Vec<Reservation> = holds
            .iter()
            .filter(|h| h.len() == 1)
            .map(|h| h[0].1.clone())
            .collect();
        let mut local_granted = if local.is_empty() {
            Vec::new()
        } else {
            self.store.reserve(pool, &local, until, now).await?
        }
        .into_iter();
        let mut granted = Vec::with_capacity(intents.len());
        for (intent, hold) in intents.iter().zip(&holds) {
            if hold.len() == 1 {
                granted.push(local_granted.next().unwrap_or(false));
                continue;
            }
            // In one order for every worker (by pool): two passes racing
            // for one pair both ask for the same entry first, and one of
            // them gets the pair.
            let mut hold = hold.clone();
            hold.sort_by_key(|(pool, _)| pool.key);
            let mut ok = true;
            for (i, (side_pool, r)) in hold.iter().enumerate() {
                let got = self
                    .store
                    .reserve(side_pool, std::slice::from_ref(r), until, now)
                    .await?
                    .first()
                    .copied()
                    .unwrap_or(false);
                if !got {
                    for (first_pool, first) in &hold[..i] {
                        self.store
                            .release(first_pool, std::slice::from_ref(first), now)
                            .await?;
                    }
                    ok = false;
                    break;
                }
            }
            if ok {
                tracing::info!(match_id = %intent.match_id, "reserved a pair across regions");
            }
            granted.push(ok);
        }
        Ok(granted)
    }

    /// Puts a match's reserved entries back to searching, each in its pool.
    async fn release(&self, intent: &MatchIntent, now: Millis) -> StoreResult<()> {
        for (pool, r) in held(intent) {
            self.store
                .release(&pool, std::slice::from_ref(&r), now)
                .await?;
        }
        Ok(())
    }

    /// The games of every pair, if the creator knows their ids in advance.
    fn known_games(&self, pending: &[Pending<'_>]) -> Option<Vec<GameId>> {
        pending
            .iter()
            .map(|p| self.games.known_game_id(&NewGame::of(&p.intent, None)))
            .collect()
    }

    /// The built-in creator: the records, with their claims, in one write.
    async fn record_known(
        &self,
        pool: &PoolRef,
        pending: &[Pending<'_>],
        games: Vec<GameId>,
        now: Millis,
    ) -> StoreResult<Outcome> {
        let records: Vec<MatchRecord> = pending
            .iter()
            .zip(games)
            .map(|(p, game)| p.intent.with_game(game))
            .collect();
        let audit: Vec<AuditEvent> = pending
            .iter()
            .zip(&records)
            .map(|(p, r)| self.decision(p, r, now))
            .collect();
        let claims = match self
            .durable
            .insert_matches(&records, &audit, now - self.limits.guard_ms)
            .await
        {
            Ok(claims) => claims,
            Err(e) => {
                self.after_failed_write(pool, pending, &e).await;
                return Err(e);
            }
        };
        let mut outcome = Outcome::default();
        let mut stored = Vec::new();
        for ((p, record), claim) in pending.iter().zip(records).zip(claims) {
            match claim {
                Claim::Stored => {
                    log_created(
                        pool,
                        &NewGame::of(&p.intent, request_id(p)),
                        &record.game_id,
                        0.0,
                    );
                    stored.push((p, record.clone()));
                    outcome.records.push(record);
                }
                Claim::Busy(users) => {
                    self.refuse(pool, p, &users).await?;
                    outcome.put_back += 1;
                }
                Claim::Withdrawn => withdrawn(p),
            }
        }
        self.check_estimates(pool, &stored);
        Ok(outcome)
    }

    /// A game service: intents with their claims first, then the games,
    /// then the records of the games that exist.
    async fn claim_and_create(
        &self,
        pool: &PoolRef,
        pending: &[Pending<'_>],
        now: Millis,
    ) -> StoreResult<Outcome> {
        let owner = ulid::Ulid::new().to_string();
        let intents: Vec<MatchIntent> = pending.iter().map(|p| p.intent.clone()).collect();
        let claims = match self
            .durable
            .claim_matches(
                &intents,
                &owner,
                self.limits.reservation_ms,
                now - self.limits.guard_ms,
            )
            .await
        {
            Ok(claims) => claims,
            Err(e) => {
                self.after_failed_write(pool, pending, &e).await;
                return Err(e);
            }
        };
        let mut outcome = Outcome::default();
        let mut claimed = Vec::with_capacity(pending.len());
        for (p, claim) in pending.iter().zip(claims) {
            match claim {
                Claim::Stored => claimed.push(p),
                Claim::Busy(users) => {
                    self.refuse(pool, p, &users).await?;
                    outcome.put_back += 1;
                }
                Claim::Withdrawn => withdrawn(p),
            }
        }
        let created = join_all(claimed.iter().map(|p| self.create(pool, p))).await;
        let mut made = Vec::new();
        for (p, result) in claimed.iter().zip(created) {
            match result {
                Ok(game_id) => made.push((*p, p.intent.with_game(game_id))),
                Err(GameCreationError::Refused(_)) => {
                    // The service says no game exists: both go back.
                    if self.durable.drop_intent(&p.intent.match_id, &owner).await? {
                        self.release(&p.intent, self.clock.now()).await?;
                        outcome.put_back += 1;
                    }
                }
                // No answer: the game may exist. The pair stays held, and
                // the intent is handed to recovery at once, which asks
                // again with the same match id (see `recover_stale`).
                Err(GameCreationError::Unavailable(_)) => {
                    self.durable
                        .yield_intent(&p.intent.match_id, &owner)
                        .await?;
                }
            }
        }
        if made.is_empty() {
            return Ok(outcome);
        }
        let records: Vec<MatchRecord> = made.iter().map(|(_, r)| r.clone()).collect();
        let audit: Vec<AuditEvent> = made.iter().map(|(p, r)| self.decision(p, r, now)).collect();
        // The claims are this match's own: a record is never refused here.
        // If this write fails, the intents stay and recovery records the
        // same games later; the pairs stay held until then.
        self.durable
            .insert_matches(&records, &audit, now - self.limits.guard_ms)
            .await?;
        self.check_estimates(pool, &made);
        outcome.records.extend(records);
        Ok(outcome)
    }

    /// Each matched player's real wait against the p80 wait this node
    /// would tell a player like them (`matchmaking_wait_estimate_checks_total`:
    /// about four in five should be within it). No figures read yet for
    /// the pool: nothing is checked.
    fn check_estimates(&self, pool: &PoolRef, made: &[(&Pending<'_>, MatchRecord)]) {
        let Some(cache) = &self.estimates else {
            return;
        };
        for (p, record) in made {
            for (w, side) in [(p.white, &record.white), (p.black, &record.black)] {
                let side_pool = PoolRef {
                    tenant_id: pool.tenant_id.clone(),
                    key: side.pool_in(pool.key),
                };
                if let Some(known) = cache.last(&side_pool) {
                    let told = known.for_player(w.rating, w.rating_range).p80;
                    let waited = record.created_at - w.enqueued_at;
                    crate::observe::wait_estimate_checked(
                        &pool.tenant_id,
                        waited <= told as Millis * 1000,
                    );
                }
            }
        }
    }

    /// A pair whose player is in a game already: both entries back to
    /// searching, then the busy players' entries cancelled (they cannot be
    /// matched while their game runs).
    async fn refuse(&self, pool: &PoolRef, p: &Pending<'_>, busy: &[UserId]) -> StoreResult<()> {
        let now = self.clock.now();
        self.release(&p.intent, now).await?;
        let mut cancelled = Vec::new();
        for side in [&p.intent.white, &p.intent.black] {
            let Some(id) = side.entry_id.filter(|_| busy.contains(&side.user_id)) else {
                continue;
            };
            let side_pool = PoolRef {
                tenant_id: pool.tenant_id.clone(),
                key: side.pool_in(pool.key),
            };
            cancelled.extend(
                self.store
                    .cancel_entries(&side_pool, &[id], EndReason::ActiveGame, now)
                    .await?,
            );
        }
        for e in &cancelled {
            tracing::warn!(
                event = "entry_cancelled",
                reason = "active_game",
                queue_entry_id = %e.id,
                tenant_id = %e.tenant_id,
                user_id = %e.user_id,
                match_id = %p.intent.match_id,
                "a player in an unfinished game was about to be matched again; their entry is cancelled"
            );
        }
        Ok(())
    }

    /// After a durable write failed: a write that may or may not have been
    /// committed (a connection lost at COMMIT) is settled by reading the
    /// store. Pairs with no trace are put back at once; the others, and all
    /// of them if the store cannot be read, stay reserved for recovery.
    async fn after_failed_write(&self, pool: &PoolRef, pending: &[Pending<'_>], e: &StoreError) {
        tracing::error!(error = %e, pool = %pool, pairs = pending.len(), "recording matches failed");
        for p in pending {
            let id = &p.intent.match_id;
            let traces = tokio::try_join!(self.durable.match_by_id(id), self.durable.intent(id));
            match traces {
                Ok((None, None)) => {
                    if let Err(e) = self.release(&p.intent, self.clock.now()).await {
                        tracing::warn!(error = %e, match_id = %id, "putting a pair back failed; recovery will");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, match_id = %id, "cannot tell whether a match was recorded; recovery will");
                }
            }
        }
    }

    /// White goes to the player who needs it ([`ColorHistory::first_gets_white`]:
    /// the one owed white by their balance, then the one on a black run of
    /// two or more; on a tie, a coin toss), read from the durable store at
    /// the time of the pass. Decided before reserving, so the reservation
    /// itself says who is white.
    async fn assign_colors<'a>(
        &self,
        pool: &PoolRef,
        pairs: &[(Side<'a>, Side<'a>)],
    ) -> StoreResult<Vec<(Side<'a>, Side<'a>)>> {
        let users: Vec<UserId> = pairs
            .iter()
            .flat_map(|(a, b)| [a.0.user_id.clone(), b.0.user_id.clone()])
            .collect();
        let histories = self
            .durable
            .color_histories(&pool.tenant_id, &users)
            .await?;
        let mut rng = rand::rng();
        Ok(pairs
            .iter()
            .map(|&(a, b)| {
                let of = |w: &Waiting| histories.get(&w.user_id).copied().unwrap_or_default();
                let a_white =
                    ColorHistory::first_gets_white(of(a.0), of(b.0), rng.random_bool(0.5));
                if a_white { (a, b) } else { (b, a) }
            })
            .collect())
    }

    /// The match of a pair, before its game (a new match id).
    fn intent(&self, pool: &PoolRef, white: Side<'_>, black: Side<'_>, now: Millis) -> MatchIntent {
        let side = |(w, home): Side<'_>| MatchSide {
            user_id: w.user_id.clone(),
            username: w.username.clone(),
            rating: w.rating,
            entry_id: Some(w.id),
            region: home.map(|h| h.region).filter(|&r| r != pool.key.region),
            time_control: home
                .map(|h| h.time_control)
                .filter(|&tc| tc != pool.key.time_control),
        };
        MatchIntent {
            match_id: crate::domain::MatchId::generate(),
            tenant_id: pool.tenant_id.clone(),
            white: side(white),
            black: side(black),
            pool: pool.key,
            created_at: now,
            source: MatchSource::Queue,
        }
    }

    /// Creates the game of a pending pair (failures are logged).
    async fn create(&self, pool: &PoolRef, p: &Pending<'_>) -> Result<GameId, GameCreationError> {
        let game = NewGame::of(&p.intent, request_id(p));
        let started = std::time::Instant::now();
        let result = self.games.create_game(&game).await;
        match &result {
            Ok(game_id) => log_created(
                pool,
                &game,
                game_id,
                started.elapsed().as_secs_f64() * 1000.0,
            ),
            Err(e) => tracing::warn!(
                event = "game_creation_failed",
                match_id = %game.match_id,
                error = %e,
                request_id = game.request_id.as_deref().unwrap_or(""),
                "game creation failed; a refusal puts both players back, no answer keeps them held for a retry"
            ),
        }
        result
    }

    /// The audit event (and log line) of a match decision.
    fn decision(&self, p: &Pending<'_>, r: &MatchRecord, now: Millis) -> AuditEvent {
        let policy = self.live.policy(&PoolRef {
            tenant_id: r.tenant_id.clone(),
            key: r.pool,
        });
        let view = |w: &Waiting| {
            json!({
                "entry": w.id,
                "user": w.user_id,
                "rating": w.rating,
                "window": w.window(&policy, now),
                "waited_ms": now - w.enqueued_at,
            })
        };
        let gap = (p.white.rating - p.black.rating).abs();
        tracing::info!(
            event = "match",
            match_id = %r.match_id,
            game_id = %r.game_id,
            pool = %r.pool,
            tenant_id = %r.tenant_id,
            white_entry = %p.white.id,
            black_entry = %p.black.id,
            white_rating = p.white.rating,
            black_rating = p.black.rating,
            gap,
            white_window = p.white.window(&policy, now),
            black_window = p.black.window(&policy, now),
            white_waited_ms = now - p.white.enqueued_at,
            black_waited_ms = now - p.black.enqueued_at,
            white_request_id = p.white.request_id.as_deref().unwrap_or(""),
            black_request_id = p.black.request_id.as_deref().unwrap_or(""),
            "players matched"
        );
        AuditEvent {
            at: now,
            tenant_id: r.tenant_id.clone(),
            kind: "match".into(),
            subject: r.match_id.to_string(),
            detail: json!({ "pool": r.pool, "game_id": r.game_id, "gap": gap, "white": view(p.white), "black": view(p.black) }),
        }
    }

    /// Finishes or rolls back what dead or stalled workers left:
    ///
    /// - a reservation past its deadline: committed if its match is
    ///   recorded, left to the intent below if its game is being created,
    ///   released if neither (its game was never asked for);
    /// - an intent whose owner's time ran out: taken over, and its game
    ///   asked for again with the same match id — recorded and committed if
    ///   the service answers, dropped and released if it refuses, retried
    ///   later if it does not answer.
    ///
    /// Answers how many it settled.
    pub async fn recover_stale(&self) -> StoreResult<usize> {
        let now = self.clock.now();
        let stale = self.store.stale_reservations(now).await?;
        let mut settled = 0;
        for s in &stale {
            let match_id = &s.reservation.match_id;
            if let Some(record) = self.durable.match_by_id(match_id).await? {
                tracing::warn!(match_id = %match_id, "finishing a match left half-committed");
                self.store
                    .commit(&[record], now + self.limits.guard_ms, now)
                    .await?;
                settled += 1;
            } else if self
                .durable
                .withdraw_match(&s.pool.tenant_id, match_id)
                .await?
            {
                // Nothing of the match is stored, and now never will be: a
                // worker still working on it is refused when it tries.
                tracing::warn!(match_id = %match_id, "rolling back a stale reservation (no game was asked for)");
                self.store
                    .release(&s.pool, std::slice::from_ref(&s.reservation), now)
                    .await?;
                settled += 1;
            }
        }
        if self.breaker.state(now) == BreakerState::Open {
            return Ok(settled);
        }
        let owner = ulid::Ulid::new().to_string();
        let intents = self
            .durable
            .take_stale_intents(&owner, self.limits.reservation_ms, INTENTS_PER_RECOVERY)
            .await?;
        // The futures are made first: a stream mapping a borrowing closure
        // trips the compiler's `Send` check of the worker's task.
        let finishes: Vec<_> = intents
            .iter()
            .map(|intent| self.finish_intent(intent, &owner))
            .collect();
        let mut finishing = futures::stream::iter(finishes).buffer_unordered(INTENTS_IN_FLIGHT);
        let mut failed = None;
        while let Some(finished) = finishing.next().await {
            match finished {
                Ok(done) => settled += usize::from(done),
                // The others go on; an intent not finished stays with this
                // owner until its time runs out, then is taken over again.
                Err(e) => failed = Some(e),
            }
        }
        failed.map_or(Ok(settled), Err)
    }

    /// Asks for the game of an intent this process took over, with its
    /// match id; answers whether the intent is settled.
    pub async fn finish_intent(&self, intent: &MatchIntent, owner: &str) -> StoreResult<bool> {
        let game = NewGame::of(intent, None);
        match self.games.create_game(&game).await {
            Ok(game_id) => {
                tracing::warn!(match_id = %intent.match_id, game_id = %game_id, "finishing a match whose game was being created");
                let record = intent.with_game(game_id);
                let now = self.clock.now();
                self.durable
                    .insert_matches(
                        std::slice::from_ref(&record),
                        &[],
                        now - self.limits.guard_ms,
                    )
                    .await?;
                self.store
                    .commit(&[record], now + self.limits.guard_ms, now)
                    .await?;
                Ok(true)
            }
            Err(GameCreationError::Refused(reason)) => {
                tracing::warn!(match_id = %intent.match_id, reason, "the game service refused a match left half-done; both players go back");
                if self.durable.drop_intent(&intent.match_id, owner).await? {
                    self.release(intent, self.clock.now()).await?;
                    self.guards.drop_hold(intent).await?;
                }
                Ok(true)
            }
            Err(GameCreationError::Unavailable(reason)) => {
                tracing::warn!(match_id = %intent.match_id, reason, "the game service still does not answer; retrying");
                self.durable.yield_intent(&intent.match_id, owner).await?;
                Ok(false)
            }
        }
    }
}

/// Region fallback, first step: the entries of `live` left unpaired that
/// may look in other regions — past the policy's fallback wait, and with no
/// partner of their own pool among the unpaired (one the pool's strategy
/// only held back). Indices into `live`.
fn lonely(
    pool: &PoolRef,
    live: &[Waiting],
    groups: &[Group],
    pairs: &[(usize, usize)],
    policy: &PoolPolicy,
    now: Millis,
) -> Vec<usize> {
    let Some(after) = policy.fallback_after_ms else {
        return Vec::new();
    };
    if policy.fallback_regions.iter().all(|r| r == pool.key.region) {
        return Vec::new();
    }
    let paired = paired_flags(live.len(), pairs.iter().copied());
    let mut left: Vec<usize> = (0..live.len()).filter(|&i| !paired[i]).collect();
    left.sort_by_key(|&i| live[i].rating);
    let window = |i: usize| live[i].window(policy, now);
    let meets = |i: usize, j: usize| {
        live[i].user_id != live[j].user_id
            && groups[i] == groups[j]
            && ranges_meet(&live[i], &live[j])
            && (live[i].rating - live[j].rating).abs() <= window(i).min(window(j))
    };
    (0..left.len())
        .filter(|&k| now - live[left[k]].enqueued_at >= after)
        .filter(|&k| {
            let (i, reach) = (left[k], window(left[k]));
            let near = |&&j: &&usize| (live[j].rating - live[i].rating).abs() <= reach;
            let below = left[..k].iter().rev().take_while(near);
            let above = left[k + 1..].iter().take_while(near);
            !below.chain(above).any(|&j| meets(i, j))
        })
        .map(|k| left[k])
        .collect()
}

/// Which of `n` entries `pairs` (indices) pairs.
fn paired_flags(n: usize, pairs: impl IntoIterator<Item = (usize, usize)>) -> Vec<bool> {
    let mut paired = vec![false; n];
    for (a, b) in pairs {
        paired[a] = true;
        paired[b] = true;
    }
    paired
}

/// Region fallback, last step: the longest-waiting lonely entry first, each
/// with the closest willing entry of another region within both windows
/// (and on the same side of a matcher experiment). Answers (index into
/// `live`, (index into `visitors`, index into its entries)).
fn cross_pairs(
    live: &[Waiting],
    groups: &[Group],
    lonely: &[usize],
    policy: &PoolPolicy,
    visitors: &[Visitors],
    now: Millis,
) -> Vec<(usize, (usize, usize))> {
    let mut order = lonely.to_vec();
    order.sort_by_key(|&i| (live[i].enqueued_at, live[i].id));
    // Every willing entry of every region, by rating: each lonely entry
    // looks only at those within its window.
    let mut by_rating: Vec<(i32, usize, usize)> = visitors
        .iter()
        .enumerate()
        .flat_map(|(v, there)| {
            there
                .entries
                .iter()
                .enumerate()
                .map(move |(j, w)| (w.rating, v, j))
        })
        .collect();
    by_rating.sort_unstable();
    let mut taken = vec![false; by_rating.len()];
    let mut pairs = Vec::new();
    for i in order {
        let u = &live[i];
        let reach = u.window(policy, now);
        let from = by_rating.partition_point(|&(r, _, _)| r < u.rating - reach);
        let best = by_rating[from..]
            .iter()
            .enumerate()
            .take_while(|(_, (r, _, _))| *r <= u.rating + reach)
            .map(|(k, &(_, v, j))| (from + k, v, j, &visitors[v]))
            .filter(|&(k, _, j, there)| {
                let w = &there.entries[j];
                !taken[k]
                    && w.user_id != u.user_id
                    && there.groups[j] == groups[i]
                    && ranges_meet(u, w)
                    && (u.rating - w.rating).abs() <= w.window(&there.policy, now)
            })
            .min_by_key(|&(_, _, j, there)| {
                let w = &there.entries[j];
                ((u.rating - w.rating).abs(), w.enqueued_at)
            });
        if let Some((k, v, j, _)) = best {
            taken[k] = true;
            pairs.push((i, (v, j)));
        }
    }
    pairs
}

/// How a group of a pass is paired: its side's strategy when the tenant
/// runs a matcher experiment, else the default.
fn strategy_of(flags: &Flags, group: Group) -> Strategy {
    match (&flags.matcher_experiment, group.arm) {
        (Some(experiment), Some(arm)) => experiment.strategy(arm),
        _ => DEFAULT_STRATEGY,
    }
}

/// The side of the tenant's matcher experiment `user` is on (`None` for
/// everyone when none runs).
fn arm_of(flags: &Flags, tenant: &TenantId, user: &UserId) -> Option<Arm> {
    flags
        .matcher_experiment
        .as_ref()
        .map(|e| e.arm(tenant, user))
}

/// The entries of one fallback region that would take a partner of the
/// pass's region, with their pool's policy and their experiment sides.
struct Visitors {
    region: Region,
    policy: PoolPolicy,
    entries: Vec<Waiting>,
    groups: Vec<Group>,
}

/// An entry as the matcher sees it.
pub(super) fn seeker(w: &Waiting, color: i8) -> Seeker<'_> {
    Seeker {
        user: w.user_id.as_str(),
        rating: w.rating,
        enqueued_at: w.enqueued_at,
        range: w.rating_range,
        deviation: w.rating_deviation,
        color,
    }
}

/// Whether each of `a` and `b` is within the other's own rating range.
fn ranges_meet(a: &Waiting, b: &Waiting) -> bool {
    in_range(a.rating_range, a.rating, b.rating) && in_range(b.rating_range, b.rating, a.rating)
}

/// The request id a pair's game carries: the join that completed the pair.
fn request_id(p: &Pending<'_>) -> Option<String> {
    [p.white, p.black]
        .into_iter()
        .max_by_key(|w| w.enqueued_at)
        .and_then(|w| w.request_id.clone())
}

/// A pair recovery rolled back while this pass was still on it (its
/// reservation went stale first): its entries are back in the queue, maybe
/// in another pair already, so the pass leaves them alone.
fn withdrawn(p: &Pending<'_>) {
    tracing::warn!(
        match_id = %p.intent.match_id,
        "recovery rolled this pair back before it was stored; leaving it"
    );
}

fn log_created(pool: &PoolRef, game: &NewGame, game_id: &GameId, latency_ms: f64) {
    tracing::info!(
        event = "game_created",
        match_id = %game.match_id,
        game_id = %game_id,
        pool = %pool,
        latency_ms,
        request_id = game.request_id.as_deref().unwrap_or(""),
        "game created"
    );
}
