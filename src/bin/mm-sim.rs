//! `mm-sim`: the matching simulator (issue 6). Replays synthetic arrival
//! traces — Poisson arrivals per pool, ratings from a normal distribution,
//! random cancels — on a virtual clock through the real pure matcher and
//! through two baselines, and reports what players feel: waits, rating
//! gaps, time-outs, matches per minute. Hours of traffic take seconds.
//!
//! Algorithms (same pool policy, same trace, same time-outs):
//! - `ours`: `matcher::find_pairs_holding` with the service's default
//!   hold (`--hold-*`) and the flow learned from the arrivals so far, run
//!   on every arrival (the service's event-driven pass) and every second
//!   (widening, holds lapsing, time-outs).
//! - `greedy`: nearest-rating pairing — each arrival takes the nearest
//!   waiting player within both windows at once; every second, waiting
//!   players in arrival order do the same with their widened windows.
//! - `lila`: lichess's pools as lila runs them today (see [`lila`] for
//!   each rule and the lila file it comes from): a wave every 12 s plus up
//!   to 1 s, or at once when 40 players wait; a pair's score is its gap less
//!   the smaller of the two players' miss bonuses (12 per wave missed, at
//!   most 400) less 30 (neither player sits on lost games), allowed when at
//!   most the lower-rated player's maximum score; the wave takes a
//!   maximum-cardinality matching of minimum total score (blossom). lila
//!   knows no maximum gap or window: its own rules alone bind it; the
//!   queue time-out binds every algorithm alike.
//!
//! Switches of the players' preferences (every algorithm honours them as
//! its system does; `barred` counts the matches that broke them):
//! `--restricted-share` (fair-play restricted players, paired only with
//! each other) and `--blocks-per-player` (each player blocks that many of
//! those who arrived just before them), `--range-share` with
//! `--range-min-delta`/`--range-max-delta` (players' own rating ranges;
//! `outside own range` counts players matched outside theirs).
//! `--established-share` gives that share of players an established
//! rating (deviation 45–80) and the others a provisional one (100–350);
//! `--deviation-reference` (with `--deviation-min-percent` and
//! `--deviation-max-percent`) turns on `ours`'s deviation-aware windows
//! (`PoolPolicy::window_for`), and the report gives the established
//! players' share of games with a gap over 300 and their median wait.
//! `--several-share` runs two pools of one speed instead, that share of
//! players joining both (one entry listed in each, gone from both once
//! paired in either), and reports each kind of player's waits.
//!
//! Usage: `mm-sim [--hours 2] [--rates 2,20,200] [--seed 1] [--out DIR]
//! [--tolerance 0.05]` writes `<out>/sim.csv` and `<out>/gap_vs_wait.svg`
//! (default `target/mm-sim`, outside the tracked files), and prints a
//! table and verdicts.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use clap::Parser;
use matchmaking_api::domain::{
    ColorHistory, Deviation, Millis, PoolPolicy, RatingRange, UNKNOWN_DEVIATION, in_range,
};
use matchmaking_api::matcher::{self, Flow, Hold, Seeker, solver};
use matchmaking_api::services::queue::PoolEstimate;
use matchmaking_api::services::summary::quantile;
use plotters::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Parser, Debug)]
#[command(
    name = "mm-sim",
    about = "Replay synthetic arrival traces through the matcher and baselines"
)]
struct Args {
    /// Virtual hours of traffic per trace.
    #[arg(long, default_value_t = 2.0)]
    hours: f64,
    /// Arrival rates to simulate, players per minute (one pool each).
    #[arg(long, value_delimiter = ',', default_value = "2,20,200")]
    rates: Vec<f64>,
    /// Rating distribution: mean and standard deviation.
    #[arg(long, default_value_t = 1500.0)]
    rating_mean: f64,
    #[arg(long, default_value_t = 300.0)]
    rating_sd: f64,
    /// Share of players who cancel, and the mean time before they do (s).
    #[arg(long, default_value_t = 0.1)]
    cancel_share: f64,
    #[arg(long, default_value_t = 60.0)]
    cancel_mean_seconds: f64,
    /// lila's wave period (s): 12 for its 1+0 and 3+0 pools, 14 for 5+0.
    #[arg(long, default_value_t = lila::WAVE_EVERY_MS as f64 / 1000.0)]
    wave_seconds: f64,
    /// Random snapshots of 8-20 players checked against the exact optimum (0 skips the check).
    #[arg(long, default_value_t = 2000)]
    snapshots: usize,
    /// Snapshots of each size of `--snapshot-sizes` checked against the
    /// exact optimum (blossom): pairs lost and gap excess. The exact solver
    /// takes seconds on the largest (0 skips the check).
    #[arg(long, default_value_t = 5)]
    large_snapshots: usize,
    #[arg(long, value_delimiter = ',', default_value = "10,100,500,1000,2000")]
    snapshot_sizes: Vec<usize>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Several seeds: each rate is simulated once per seed and the rows
    /// pool every run's players (wait and gap quantiles over all of them).
    /// Replaces `--seed` for the traces.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["trace", "trace_out"])]
    seeds: Vec<u64>,
    /// Holding for a closer partner (`ours`): rating points one second of
    /// waiting is worth; 0 holds nobody.
    #[arg(long, default_value_t = Hold::default().cost_per_second)]
    hold_cost: f64,
    /// How fast a held player's hold gap widens, points per second waited.
    #[arg(long, default_value_t = Hold::default().growth_per_second)]
    hold_growth: f64,
    /// Nobody is held longer than this (s).
    #[arg(long, default_value_t = Hold::default().max_ms as f64 / 1000.0)]
    hold_max_seconds: f64,
    /// The pool's window: initial, widening step (points every
    /// `--widening-seconds`) and maximum gap (SPEC §5).
    #[arg(long, default_value_t = PoolPolicy::default().initial_window)]
    initial_window: i32,
    #[arg(long, default_value_t = PoolPolicy::default().widening_amount)]
    widening_amount: i32,
    #[arg(long, default_value_t = PoolPolicy::default().widening_interval_ms as f64 / 1000.0)]
    widening_seconds: f64,
    #[arg(long, default_value_t = PoolPolicy::default().max_gap)]
    max_gap: i32,
    /// Where the CSV and the SVG chart go (the chart in the repository,
    /// bench/sim, is rewritten only when asked: `--out bench/sim`).
    #[arg(long, default_value = "target/mm-sim")]
    out: PathBuf,
    /// How much worse (a share) "ours" may be than a baseline and still be
    /// called no worse in the verdicts: differences of a few percent are
    /// within a run's noise.
    #[arg(long, default_value_t = 0.05)]
    tolerance: f64,
    /// Only draws the chart of a `sim.csv` an earlier run wrote, into
    /// `<out>/gap_vs_wait.svg` (nothing is simulated).
    #[arg(long, value_name = "CSV")]
    redraw: Option<PathBuf>,
    /// Writes each simulated trace as CSV (`rating,arrive_ms,cancel_at_ms`);
    /// with several rates, one file each, the rate before the extension
    /// (`FILE.20.csv`).
    #[arg(long, value_name = "FILE")]
    trace_out: Option<PathBuf>,
    /// Replays this CSV trace (header `rating,arrive_ms,cancel_at_ms`, one
    /// player a row, an empty `cancel_at_ms` for one who never cancels, one
    /// pool) through every algorithm instead of synthetic traces. The run
    /// lasts `--hours`, or longer if the trace does.
    #[arg(long, value_name = "FILE", conflicts_with = "trace_out")]
    trace: Option<PathBuf>,
    /// Share of players restricted for fair play (paired only with each
    /// other), drawn per trace from its seed.
    #[arg(long, default_value_t = 0.0)]
    restricted_share: f64,
    /// Blocks: each player blocks this many of the players who arrived
    /// just before them (`BLOCK_NEIGHBOURS`), so blocked pairs do meet in
    /// the queue. The report counts matches between barred players (must
    /// be 0 for `ours`).
    #[arg(long, default_value_t = 0)]
    blocks_per_player: usize,
    /// Share of players who give their own rating range
    /// (`--range-min-delta`..`--range-max-delta` around their rating). The
    /// report counts players matched outside their range (must be 0).
    #[arg(long, default_value_t = 0.0)]
    range_share: f64,
    #[arg(long, default_value_t = -100, allow_hyphen_values = true)]
    range_min_delta: i64,
    #[arg(long, default_value_t = 100)]
    range_max_delta: i64,
    /// A population run instead of traces: this many players who come
    /// back to the queue after each game (0: traces). Reports colour
    /// balance and runs, and repeat pairings, per algorithm.
    #[arg(long, default_value_t = 0)]
    population: usize,
    /// Games a population run plays.
    #[arg(long, default_value_t = 10_000)]
    games: usize,
    /// Mean length of a game, and of the pause before queueing again (s).
    #[arg(long, default_value_t = 300.0)]
    game_seconds: f64,
    #[arg(long, default_value_t = 10.0)]
    break_seconds: f64,
    /// Two players meeting again within this many minutes is a repeat.
    #[arg(long, default_value_t = 10.0)]
    repeat_minutes: f64,
    /// The repeat penalty of `ours` (the policy's `repeat_penalty`; 0:
    /// off), over `--repeat-minutes` and `--repeat-window-games`, waived
    /// after `--repeat-waive-seconds`.
    #[arg(long, default_value_t = PoolPolicy::default().repeat_penalty)]
    repeat_penalty: i32,
    #[arg(long, default_value_t = PoolPolicy::default().repeat_games)]
    repeat_window_games: u32,
    #[arg(long, default_value_t = PoolPolicy::default().repeat_waive_ms as f64 / 1000.0)]
    repeat_waive_seconds: f64,
    /// Population runs: the share of games aborted because one player
    /// (either, at random) never moved; the other is back in the queue at
    /// once with their place kept, the absent one after
    /// `--no-show-cooldown-seconds` and a pause.
    #[arg(long, default_value_t = 0.0)]
    no_show_share: f64,
    #[arg(long, default_value_t = 120.0)]
    no_show_cooldown_seconds: f64,
    /// `ours` without its colour rules (the need in the score, the limits,
    /// white by need): white by the lower balance, as before issue 24.
    #[arg(long)]
    plain_colors: bool,
    /// Share of players with an established rating (deviation 45–80); the
    /// others are provisional (100–350). 0: nobody has a deviation (350).
    #[arg(long, default_value_t = 0.0)]
    established_share: f64,
    /// `ours`'s deviation-aware windows (the policy's
    /// `deviation_reference`, 0: off, and its percent bounds).
    #[arg(long, default_value_t = PoolPolicy::default().deviation_reference)]
    deviation_reference: i32,
    #[arg(long, default_value_t = PoolPolicy::default().deviation_min_percent)]
    deviation_min_percent: i32,
    #[arg(long, default_value_t = PoolPolicy::default().deviation_max_percent)]
    deviation_max_percent: i32,
    /// Several time controls at once: two pools of one speed share each
    /// rate's arrivals; this share of players joins both (one entry listed
    /// in each), the others one of the two at random. Runs `ours` with and
    /// without it and reports the waits of each kind of player (0: off).
    #[arg(long, default_value_t = 0.0)]
    several_share: f64,
}

/// The largest deviation of an established player (the figure).
const ESTABLISHED_DEVIATION: Deviation = 80;

/// The gap a game counts as wide at in the established players' figure.
const WIDE_GAP: i32 = 300;

impl Args {
    /// `ours`'s hold for a closer partner (`--hold-*`).
    fn hold(&self) -> Hold {
        Hold {
            cost_per_second: self.hold_cost,
            growth_per_second: self.hold_growth,
            max_ms: (self.hold_max_seconds * 1000.0) as Millis,
        }
    }

    fn policy(&self) -> PoolPolicy {
        PoolPolicy {
            initial_window: self.initial_window,
            widening_amount: self.widening_amount,
            widening_interval_ms: (self.widening_seconds * 1000.0) as Millis,
            max_gap: self.max_gap,
            repeat_penalty: self.repeat_penalty,
            repeat_window_ms: (self.repeat_minutes * 60_000.0) as Millis,
            repeat_games: self.repeat_window_games,
            repeat_waive_ms: (self.repeat_waive_seconds * 1000.0) as Millis,
            deviation_reference: self.deviation_reference,
            deviation_min_percent: self.deviation_min_percent,
            deviation_max_percent: self.deviation_max_percent,
            ..PoolPolicy::default()
        }
    }
}

/// The header of a trace file.
const TRACE_HEADER: &str = "rating,arrive_ms,cancel_at_ms";

fn write_trace(path: &std::path::Path, players: &[Player]) -> std::io::Result<()> {
    let mut csv = format!("{TRACE_HEADER}\n");
    for p in players {
        let cancel = p.cancel_at.map(|c| c.to_string()).unwrap_or_default();
        csv.push_str(&format!("{},{},{cancel}\n", p.rating, p.arrive));
    }
    std::fs::write(path, csv)
}

/// Reads a trace; an error names the line and what is wrong with it.
fn read_trace(path: &std::path::Path) -> Result<Vec<Player>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.trim() == TRACE_HEADER => {}
        _ => {
            return Err(format!(
                "{}: the first line must be `{TRACE_HEADER}`",
                path.display()
            ));
        }
    }
    let mut players = Vec::new();
    for (n, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |what: &str| format!("{} line {}: {what}: {line:?}", path.display(), n + 1);
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [rating, arrive, cancel] = fields[..] else {
            return Err(bad("expected 3 fields"));
        };
        let rating: i32 = rating
            .parse()
            .map_err(|_| bad("rating is not a whole number"))?;
        let arrive: Millis = arrive
            .parse()
            .ok()
            .filter(|a| *a >= 0)
            .ok_or_else(|| bad("arrive_ms is not a whole number of ms, 0 or more"))?;
        let cancel_at = match cancel {
            "" => None,
            c => Some(
                c.parse::<Millis>()
                    .ok()
                    .filter(|c| *c >= arrive)
                    .ok_or_else(|| bad("cancel_at_ms is not a time at or after arrive_ms"))?,
            ),
        };
        players.push(Player {
            name: format!("p{}", players.len()),
            rating,
            arrive,
            cancel_at,
        });
    }
    players.sort_by_key(|p| p.arrive);
    Ok(players)
}

/// Where `--trace-out` writes the trace of `rate`.
fn trace_out_path(base: &std::path::Path, rate: f64, several: bool) -> PathBuf {
    if !several {
        return base.to_path_buf();
    }
    let stem = base.file_stem().unwrap_or_default().to_string_lossy();
    let ext = base
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    base.with_file_name(format!("{stem}.{rate}{ext}"))
}

/// One player of a trace.
#[derive(Debug, Clone)]
struct Player {
    name: String,
    rating: i32,
    arrive: Millis,
    /// When they give up, if they do.
    cancel_at: Option<Millis>,
}

fn normal(rng: &mut StdRng, mean: f64, sd: f64) -> f64 {
    let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
    mean + sd * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn exponential(rng: &mut StdRng, mean: f64) -> f64 {
    -mean * rng.random_range(f64::EPSILON..1.0).ln()
}

/// A Poisson arrival trace of `per_minute` players for `hours`.
fn trace(args: &Args, per_minute: f64, rng: &mut StdRng) -> Vec<Player> {
    let end = (args.hours * 3_600_000.0) as Millis;
    let mean_gap_ms = 60_000.0 / per_minute;
    let mut t = 0.0;
    let mut players = Vec::new();
    loop {
        t += exponential(rng, mean_gap_ms);
        if t as Millis >= end {
            return players;
        }
        let arrive = t as Millis;
        let cancel_at = rng
            .random_bool(args.cancel_share)
            .then(|| arrive + (exponential(rng, args.cancel_mean_seconds) * 1000.0) as Millis);
        players.push(Player {
            name: format!("p{}", players.len()),
            rating: normal(rng, args.rating_mean, args.rating_sd)
                .round()
                .clamp(600.0, 2800.0) as i32,
            arrive,
            cancel_at,
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Algo {
    Ours,
    Greedy,
    Lila,
}

impl Algo {
    const ALL: [Algo; 3] = [Algo::Ours, Algo::Greedy, Algo::Lila];

    fn name(self) -> &'static str {
        match self {
            Algo::Ours => "ours",
            Algo::Greedy => "greedy",
            Algo::Lila => "lila",
        }
    }
}

/// How far back among the arrivals a player's blocks reach.
const BLOCK_NEIGHBOURS: usize = 40;

/// Who may not meet whom in one trace (`--restricted-share`,
/// `--blocks-per-player`).
#[derive(Debug, Default)]
struct Relations {
    restricted: Vec<bool>,
    /// (lower, higher) player indices, either one blocking the other.
    blocks: std::collections::HashSet<(usize, usize)>,
    /// Each player's own rating range (`--range-share`).
    ranges: Vec<Option<RatingRange>>,
    /// Each player's rating deviation (`--established-share`).
    deviations: Vec<Deviation>,
}

impl Relations {
    /// Drawn from a generator of their own, so the trace (and a replayed
    /// one) stays the same whatever the switches.
    fn draw(players: &[Player], seed: u64, args: &Args) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x7e1a_7105);
        let restricted = players
            .iter()
            .map(|_| args.restricted_share > 0.0 && rng.random_bool(args.restricted_share))
            .collect();
        let mut blocks = std::collections::HashSet::new();
        for i in 1..players.len() {
            for _ in 0..args.blocks_per_player {
                let back = rng.random_range(1..=BLOCK_NEIGHBOURS.min(i));
                blocks.insert((i - back, i));
            }
        }
        let range = RatingRange::new(args.range_min_delta, args.range_max_delta)
            .expect("--range-min-delta ≤ 0 ≤ --range-max-delta");
        let ranges = players
            .iter()
            .map(|_| (args.range_share > 0.0 && rng.random_bool(args.range_share)).then_some(range))
            .collect();
        let deviations = players
            .iter()
            .map(|_| match args.established_share {
                0.0 => UNKNOWN_DEVIATION,
                share if rng.random_bool(share) => rng.random_range(45..=ESTABLISHED_DEVIATION),
                _ => rng.random_range(100..=UNKNOWN_DEVIATION),
            })
            .collect();
        Self {
            restricted,
            blocks,
            ranges,
            deviations,
        }
    }

    /// Whether each of players `a` and `b` is within the other's range.
    fn ranges_meet(&self, players: &[Player], a: usize, b: usize) -> bool {
        in_range(self.ranges[a], players[a].rating, players[b].rating)
            && in_range(self.ranges[b], players[b].rating, players[a].rating)
    }

    fn blocked(&self, a: usize, b: usize) -> bool {
        self.blocks.contains(&(a.min(b), a.max(b)))
    }

    /// Whether players `a` and `b` may not meet.
    fn bars(&self, a: usize, b: usize) -> bool {
        self.restricted[a] != self.restricted[b] || self.blocked(a, b)
    }
}

/// A waiting player: index into the trace, and waves missed (lila).
#[derive(Debug, Clone, Copy)]
struct Waiting {
    player: usize,
    misses: i64,
}

/// What one run produced.
#[derive(Debug, Default)]
struct Outcome {
    waits_ms: Vec<Millis>,
    gaps: Vec<i32>,
    matches: usize,
    timeouts: usize,
    cancels: usize,
    arrivals: usize,
    /// Matches between players who may not meet (blocked, or one of them
    /// restricted and the other not).
    barred: usize,
    /// Matched players whose partner is outside their own range.
    outside_range: usize,
    /// Waits of the players not restricted, and of the restricted ones
    /// (both also in `waits_ms`).
    waits_by_side_ms: [Vec<Millis>; 2],
    /// Matched players told a p80 wait on arrival, and those of them who
    /// waited at most that long.
    told: usize,
    within_p80: usize,
    /// Games of established players (one per established player in a
    /// match), those with a gap over [`WIDE_GAP`], and their waits.
    established_games: usize,
    established_wide: usize,
    established_waits_ms: Vec<Millis>,
}

struct Sim {
    /// One per queue entry (in a population run, a player's entries are
    /// several, under one name).
    players: Vec<Player>,
    relations: Relations,
    /// Each entry's colour need as the service reads it (`ColorHistory::need`;
    /// 0 in trace runs, whose players play once).
    needs: Vec<i8>,
    /// The pairs made (entry indices), for a population run to play.
    made: Vec<(usize, usize)>,
    /// The entries timed out, for a population run to bring back.
    timed_out: Vec<usize>,
    /// The latest matched waits with their players' ratings (the service
    /// keeps `RECENT_WAITS`), and the p80 wait each arrival was told from
    /// them (the service's estimate, `PoolEstimate::for_player`).
    recent: std::collections::VecDeque<(Millis, Option<i32>)>,
    told_p80: HashMap<usize, u64>,
    /// A population run's people: each entry's person, and each person's
    /// latest opponents (person, when), newest first.
    person: Vec<usize>,
    met: HashMap<usize, std::collections::VecDeque<(usize, Millis)>>,
    policy: PoolPolicy,
    hold: Hold,
    /// The arrivals seen so far, as the service would learn them: of
    /// players not restricted, and of restricted ones (paired apart).
    flows: [Flow; 2],
    waiting: Vec<Waiting>,
    out: Outcome,
}

impl Sim {
    fn pair(&mut self, pairs: &[(usize, usize)], now: Millis) {
        let mut gone = vec![false; self.waiting.len()];
        for &(a, b) in pairs {
            let (pa, pb) = (
                &self.players[self.waiting[a].player],
                &self.players[self.waiting[b].player],
            );
            self.out.waits_ms.push(now - pa.arrive);
            self.out.waits_ms.push(now - pb.arrive);
            self.out.gaps.push((pa.rating - pb.rating).abs());
            self.out.matches += 1;
            let (ia, ib) = (self.waiting[a].player, self.waiting[b].player);
            self.out.barred += usize::from(self.relations.bars(ia, ib));
            for (me, them) in [(ia, ib), (ib, ia)] {
                let (own, other) = (self.players[me].rating, self.players[them].rating);
                self.out.outside_range +=
                    usize::from(!in_range(self.relations.ranges[me], own, other));
            }
            for (i, p) in [(ia, pa), (ib, pb)] {
                let side = usize::from(self.relations.restricted[i]);
                self.out.waits_by_side_ms[side].push(now - p.arrive);
                if self.relations.deviations[i] <= ESTABLISHED_DEVIATION {
                    self.out.established_games += 1;
                    self.out.established_wide +=
                        usize::from((pa.rating - pb.rating).abs() > WIDE_GAP);
                    self.out.established_waits_ms.push(now - p.arrive);
                }
            }
            self.made.push((ia, ib));
            for (i, p) in [(ia, pa), (ib, pb)] {
                let waited = now - p.arrive;
                if let Some(told) = self.told_p80.remove(&i) {
                    self.out.told += 1;
                    self.out.within_p80 += usize::from(waited <= told as Millis * 1000);
                }
                self.recent.push_front((waited, Some(p.rating)));
            }
            self.recent.truncate(matchmaking_api::store::RECENT_WAITS);
            gone[a] = true;
            gone[b] = true;
        }
        let mut i = 0;
        self.waiting.retain(|_| {
            i += 1;
            !gone[i - 1]
        });
    }

    fn window(&self, w: &Waiting, now: Millis) -> i32 {
        self.policy.window(now - self.players[w.player].arrive)
    }

    /// The service's pass: restricted players and the others paired
    /// apart, each by their own flow, never a blocked pair.
    fn ours(&mut self, now: Millis) {
        let mut pairs: Vec<(usize, usize)> = Vec::new();
        for (side, flow) in self.flows.iter().enumerate() {
            let members: Vec<usize> = (0..self.waiting.len())
                .filter(|&k| usize::from(self.relations.restricted[self.waiting[k].player]) == side)
                .collect();
            let seekers: Vec<Seeker<'_>> = members
                .iter()
                .map(|&k| {
                    let p = &self.players[self.waiting[k].player];
                    Seeker {
                        user: &p.name,
                        rating: p.rating,
                        enqueued_at: p.arrive,
                        range: self.relations.ranges[self.waiting[k].player],
                        deviation: self.relations.deviations[self.waiting[k].player],
                        color: self.needs[self.waiting[k].player],
                    }
                })
                .collect();
            let player = |i: usize| self.waiting[members[i]].player;
            let found = matcher::find_pairs_costed(
                &seekers,
                now,
                &self.policy,
                Some((&self.hold, flow)),
                |i, j| {
                    let (a, b) = (player(i), player(j));
                    (!self.relations.blocked(a, b)).then(|| self.repeat_cost(a, b, now))
                },
            );
            pairs.extend(found.into_iter().map(|p| (members[p.a], members[p.b])));
        }
        self.pair(&pairs, now);
    }

    /// What pairing entries `a` and `b` costs for their people having met
    /// lately (the service's rule, `PoolPolicy::repeat_cost`).
    fn repeat_cost(&self, a: usize, b: usize, now: Millis) -> i64 {
        let (pa, pb) = (self.person[a], self.person[b]);
        let met = |p: usize, other: usize| {
            let games = self.met.get(&p)?;
            let k = games.iter().position(|&(q, _)| q == other)?;
            Some((k as u32 + 1, games[k].1))
        };
        let (games_ago, at) = match (met(pa, pb), met(pb, pa)) {
            (None, None) => return 0,
            (Some(x), None) | (None, Some(x)) => x,
            (Some(x), Some(y)) => (x.0.min(y.0), x.1.max(y.1)),
        };
        let waited = (now - self.players[a].arrive).min(now - self.players[b].arrive);
        self.policy.repeat_cost(now - at, games_ago, waited)
    }

    /// Nearest compatible partner of waiting index `i`, among the unused.
    fn nearest(&self, i: usize, used: &[bool], now: Millis) -> Option<usize> {
        let me = &self.waiting[i];
        let rating = self.players[me.player].rating;
        let window = self.window(me, now);
        (0..self.waiting.len())
            .filter(|&j| j != i && !used[j])
            .filter(|&j| !self.relations.bars(me.player, self.waiting[j].player))
            .filter(|&j| {
                self.relations
                    .ranges_meet(&self.players, me.player, self.waiting[j].player)
            })
            .filter(|&j| {
                let gap = (self.players[self.waiting[j].player].rating - rating).abs();
                gap <= window && gap <= self.window(&self.waiting[j], now)
            })
            .min_by_key(|&j| (self.players[self.waiting[j].player].rating - rating).abs())
    }

    /// Greedy nearest-rating: `only` pairs just that waiting index (an
    /// arrival); otherwise everyone in arrival order.
    fn greedy(&mut self, now: Millis, only: Option<usize>) {
        let mut used = vec![false; self.waiting.len()];
        let mut pairs = Vec::new();
        let order: Vec<usize> = match only {
            Some(i) => vec![i],
            None => (0..self.waiting.len()).collect(),
        };
        for i in order {
            if used[i] {
                continue;
            }
            if let Some(j) = self.nearest(i, &used, now) {
                used[i] = true;
                used[j] = true;
                pairs.push((i, j));
            }
        }
        self.pair(&pairs, now);
    }

    /// One lila wave: every waiting pair lila allows, scored as lila scores
    /// it, then a maximum-cardinality matching of least total score.
    fn wave(&mut self, now: Millis) {
        // `MatchMaking.scala`, `apply`: restricted ("lame") players apart,
        // paired by rating in twos whatever their gap (`naive`).
        let mut lames: Vec<usize> = (0..self.waiting.len())
            .filter(|&k| self.relations.restricted[self.waiting[k].player])
            .collect();
        lames.sort_by_key(|&k| std::cmp::Reverse(self.players[self.waiting[k].player].rating));
        let mut pairs: Vec<(usize, usize)> = lames.chunks_exact(2).map(|c| (c[0], c[1])).collect();
        let fairs: Vec<usize> = (0..self.waiting.len())
            .filter(|&k| !self.relations.restricted[self.waiting[k].player])
            .collect();
        let mut edges = Vec::new();
        for (x, &i) in fairs.iter().enumerate() {
            for (y, &j) in fairs.iter().enumerate().skip(x + 1) {
                let (a, b) = (&self.waiting[i], &self.waiting[j]);
                // `blockMalus` and `rangeMalus`: 9000 each, past every
                // maximum score.
                let ranges_meet = self
                    .relations
                    .ranges_meet(&self.players, a.player, b.player);
                if self.relations.blocked(a.player, b.player) || !ranges_meet {
                    continue;
                }
                let both_ranged = self.relations.ranges[a.player].is_some()
                    && self.relations.ranges[b.player].is_some();
                let (ra, rb) = (self.players[a.player].rating, self.players[b.player].rating);
                if let Some(score) = lila::pair_score(ra, a.misses, rb, b.misses, both_ranged) {
                    // The solver maximises weight among the largest matchings.
                    edges.push((x, y, -score));
                }
            }
        }
        pairs.extend(
            solver::blossom(fairs.len(), &edges)
                .into_iter()
                .map(|(x, y)| (fairs[x], fairs[y])),
        );
        self.pair(&pairs, now);
        for w in &mut self.waiting {
            w.misses += 1;
        }
    }

    /// Drops the players past the queue time.
    fn time_out(&mut self, now: Millis) {
        let max = self.policy.max_queue_time_ms;
        let before = self.waiting.len();
        let players = &self.players;
        let gone = &mut self.timed_out;
        self.waiting.retain(|w| {
            let stays = now - players[w.player].arrive < max;
            if !stays {
                gone.push(w.player);
            }
            stays
        });
        self.out.timeouts += before - self.waiting.len();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    // Order within one millisecond: cancels, then arrivals, then ticks.
    Cancel(usize),
    Arrival(usize),
    Tick,
}

/// The traces of one rate, each with the seed that drew it.
type Runs = Vec<(u64, Vec<Player>)>;

/// Runs `algo` over the traces of one rate (one per seed), pooling what
/// they produced.
fn run_all(algo: Algo, traces: &[(u64, Vec<Player>)], args: &Args) -> Outcome {
    let mut all = Outcome::default();
    for (seed, players) in traces {
        let o = run(algo, players, *seed, args);
        all.waits_ms.extend(o.waits_ms);
        all.gaps.extend(o.gaps);
        all.matches += o.matches;
        all.timeouts += o.timeouts;
        all.cancels += o.cancels;
        all.arrivals += o.arrivals;
        all.barred += o.barred;
        all.outside_range += o.outside_range;
        all.told += o.told;
        all.within_p80 += o.within_p80;
        all.established_games += o.established_games;
        all.established_wide += o.established_wide;
        all.established_waits_ms.extend(o.established_waits_ms);
        for (side, waits) in o.waits_by_side_ms.into_iter().enumerate() {
            all.waits_by_side_ms[side].extend(waits);
        }
    }
    all
}

/// When each algorithm pairs: the service's pass on every arrival and
/// every second; greedy for an arrival at once and everyone every second;
/// lila in waves (every `--wave-seconds` plus up to a second, or at once
/// when 40 wait).
struct Schedule {
    algo: Algo,
    wave_ms: Millis,
    /// lila's waves' own generator, so every algorithm sees the same trace.
    wave_rng: StdRng,
    next_wave: Millis,
}

impl Schedule {
    fn new(algo: Algo, seed: u64, args: &Args) -> Self {
        let mut schedule = Self {
            algo,
            wave_ms: (args.wave_seconds * 1000.0) as Millis,
            wave_rng: StdRng::seed_from_u64(seed),
            next_wave: 0,
        };
        schedule.next_wave = schedule.wave_after(0);
        schedule
    }

    fn wave_after(&mut self, at: Millis) -> Millis {
        at + self.wave_ms + self.wave_rng.random_range(0..lila::WAVE_JITTER_MS)
    }

    /// lila's waves due by `now`.
    fn catch_up(&mut self, sim: &mut Sim, now: Millis) {
        if self.algo == Algo::Lila {
            while self.next_wave <= now {
                sim.time_out(self.next_wave);
                sim.wave(self.next_wave);
                self.next_wave = self.wave_after(self.next_wave);
            }
        }
    }

    /// Entry `i` arrives (its `arrive` is `now`): it is told its p80 wait,
    /// as the service would tell it, from the latest real waits.
    fn arrival(&mut self, sim: &mut Sim, i: usize, now: Millis) {
        let fallback = sim
            .policy
            .wait_until_window(sim.policy.max_gap)
            .unwrap_or(0) as u64
            / 1000;
        let known = PoolEstimate::new(fallback, sim.recent.iter().copied().collect(), Vec::new());
        let told = known.for_player(sim.players[i].rating, sim.relations.ranges[i]);
        sim.told_p80.insert(i, told.p80);
        let side = usize::from(sim.relations.restricted[i]);
        sim.flows[side].observe(now, sim.players[i].rating);
        sim.waiting.push(Waiting {
            player: i,
            misses: 0,
        });
        match self.algo {
            Algo::Ours => sim.ours(now),
            Algo::Greedy => {
                let me = sim.waiting.len() - 1;
                sim.greedy(now, Some(me));
            }
            Algo::Lila if sim.waiting.len() >= lila::WAVE_PLAYERS => {
                // A full wave runs at once and the next is scheduled from it.
                sim.wave(now);
                self.next_wave = self.wave_after(now);
            }
            Algo::Lila => {}
        }
    }

    /// The second's tick.
    fn tick(&mut self, sim: &mut Sim, now: Millis) {
        sim.time_out(now);
        match self.algo {
            Algo::Ours => sim.ours(now),
            Algo::Greedy => sim.greedy(now, None),
            Algo::Lila => {}
        }
    }
}

impl Sim {
    /// Adds an entry of person `who` (a population run) whose colour need
    /// is `need`, no restriction and no range of its own; answers its index.
    fn add_entry(&mut self, player: Player, who: usize, need: i32) -> usize {
        self.players.push(player);
        self.person.push(who);
        self.relations.restricted.push(false);
        self.relations.ranges.push(None);
        self.relations.deviations.push(UNKNOWN_DEVIATION);
        self.needs.push(need.clamp(-3, 3) as i8);
        self.players.len() - 1
    }

    fn new(players: Vec<Player>, relations: Relations, args: &Args) -> Self {
        let entries = players.len();
        Self {
            needs: vec![0; players.len()],
            out: Outcome {
                arrivals: players.len(),
                ..Outcome::default()
            },
            players,
            relations,
            made: Vec::new(),
            timed_out: Vec::new(),
            recent: std::collections::VecDeque::new(),
            told_p80: HashMap::new(),
            person: (0..entries).collect(),
            met: HashMap::new(),
            policy: args.policy(),
            hold: args.hold(),
            flows: Default::default(),
            waiting: Vec::new(),
        }
    }
}

/// A trace's arrivals and cancels, and a tick every second of `--hours`,
/// in order.
fn trace_events(players: &[Player], args: &Args) -> Vec<(Millis, Event)> {
    let mut events: Vec<(Millis, Event)> = Vec::with_capacity(players.len() * 2);
    for (i, p) in players.iter().enumerate() {
        events.push((p.arrive, Event::Arrival(i)));
        if let Some(at) = p.cancel_at {
            events.push((at, Event::Cancel(i)));
        }
    }
    let end = (args.hours * 3_600_000.0) as Millis;
    events.extend((0..=end / 1000).map(|s| (s * 1000, Event::Tick)));
    events.sort_unstable();
    events
}

fn run(algo: Algo, players: &[Player], seed: u64, args: &Args) -> Outcome {
    let events = trace_events(players, args);
    let relations = Relations::draw(players, seed, args);
    let mut sim = Sim::new(players.to_vec(), relations, args);
    let mut schedule = Schedule::new(algo, seed, args);
    for (now, event) in events {
        schedule.catch_up(&mut sim, now);
        match event {
            Event::Cancel(i) => {
                if let Some(k) = sim.waiting.iter().position(|w| w.player == i) {
                    sim.waiting.remove(k);
                    sim.out.cancels += 1;
                }
            }
            Event::Arrival(i) => schedule.arrival(&mut sim, i, now),
            Event::Tick => schedule.tick(&mut sim, now),
        }
    }
    sim.out
}

/// What a run of two pools of one speed measured (`--several-share`).
#[derive(Debug, Default)]
struct Several {
    /// Waits of the matched players who joined both pools, and of those
    /// who joined one.
    waits_ms: [Vec<Millis>; 2],
    timeouts: usize,
    /// Players who stayed (did not cancel).
    stayed: usize,
    /// Matches made in each pool.
    matches: [usize; 2],
    /// Players matched more than once (must be 0: one entry, one status).
    twice: usize,
}

/// Two pools of one speed, each pass the service's (`find_pairs_holding`
/// with each pool's own flow) over the entries listed there: its own and
/// those that joined both. An entry paired in one pool leaves both at once,
/// as the service's one entry does. Passes run on each arrival (in the
/// pools it joined) and every second in both.
fn run_several(players: &[Player], seed: u64, share: f64, args: &Args) -> Several {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x05e7_e2a1);
    // Bit k: listed in pool k.
    let listed: Vec<u8> = players
        .iter()
        .map(|_| {
            if share > 0.0 && rng.random_bool(share) {
                0b11
            } else if rng.random_bool(0.5) {
                0b01
            } else {
                0b10
            }
        })
        .collect();
    let policy = args.policy();
    let hold = args.hold();
    let events = trace_events(players, args);
    let mut flows: [Flow; 2] = Default::default();
    let mut waiting: Vec<usize> = Vec::new();
    let mut matched = vec![0u8; players.len()];
    let mut out = Several::default();
    let pass = |pool: usize,
                now: Millis,
                waiting: &mut Vec<usize>,
                matched: &mut Vec<u8>,
                flows: &[Flow; 2],
                out: &mut Several| {
        let members: Vec<usize> = waiting
            .iter()
            .copied()
            .filter(|&i| listed[i] & (1 << pool) != 0)
            .collect();
        let seekers: Vec<Seeker<'_>> = members
            .iter()
            .map(|&i| Seeker {
                user: &players[i].name,
                rating: players[i].rating,
                enqueued_at: players[i].arrive,
                range: None,
                deviation: UNKNOWN_DEVIATION,
                color: 0,
            })
            .collect();
        let pairs = matcher::find_pairs_holding(
            &seekers,
            now,
            &policy,
            Some((&hold, &flows[pool])),
            |_, _| false,
        );
        for p in pairs {
            for i in [members[p.a], members[p.b]] {
                matched[i] += 1;
                out.twice += usize::from(matched[i] > 1);
                let both = usize::from(listed[i] != 0b11);
                out.waits_ms[both].push(now - players[i].arrive);
            }
            out.matches[pool] += 1;
        }
        waiting.retain(|&i| matched[i] == 0);
    };
    for (now, event) in events {
        match event {
            Event::Cancel(i) => {
                if let Some(k) = waiting.iter().position(|&w| w == i) {
                    waiting.remove(k);
                }
            }
            Event::Arrival(i) => {
                out.stayed += usize::from(players[i].cancel_at.is_none());
                waiting.push(i);
                for pool in 0..2 {
                    if listed[i] & (1 << pool) != 0 {
                        flows[pool].observe(now, players[i].rating);
                        pass(pool, now, &mut waiting, &mut matched, &flows, &mut out);
                    }
                }
            }
            Event::Tick => {
                let before = waiting.len();
                waiting.retain(|&i| now - players[i].arrive < policy.max_queue_time_ms);
                out.timeouts += before - waiting.len();
                for pool in 0..2 {
                    pass(pool, now, &mut waiting, &mut matched, &flows, &mut out);
                }
            }
        }
    }
    out
}

/// `--several-share`: per rate, `ours` over two pools of one speed with
/// nobody in both, then with that share of players in both.
fn several_report(args: &Args) {
    let seeds = if args.seeds.is_empty() {
        vec![args.seed]
    } else {
        args.seeds.clone()
    };
    println!(
        "mm-sim: two pools of one speed sharing each rate, {} h per trace, seeds {seeds:?}",
        args.hours
    );
    println!();
    println!(
        "| players/min (both pools) | in both pools | wait p50, all (s) | wait p50, in both (s) | p95 | wait p50, in one (s) | p95 | time-outs | matched twice |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &rate in &args.rates {
        for share in [0.0, args.several_share] {
            let mut all = Several::default();
            for &seed in &seeds {
                let mut rng = StdRng::seed_from_u64(seed);
                let players = trace(args, rate, &mut rng);
                let o = run_several(&players, seed, share, args);
                for (k, w) in o.waits_ms.into_iter().enumerate() {
                    all.waits_ms[k].extend(w);
                }
                all.timeouts += o.timeouts;
                all.stayed += o.stayed;
                all.twice += o.twice;
            }
            let s = |w: &mut Vec<Millis>, q| quantile(w, q).unwrap_or(0) as f64 / 1000.0;
            let mut everyone: Vec<Millis> = all.waits_ms.concat();
            let [both, one] = &mut all.waits_ms;
            println!(
                "| {rate} | {:.0}% | {:.1} | {} | {} | {:.1} | {:.1} | {:.2}% | {} |",
                share * 100.0,
                s(&mut everyone, 0.5),
                if both.is_empty() {
                    "-".into()
                } else {
                    format!("{:.1}", s(both, 0.5))
                },
                if both.is_empty() {
                    "-".into()
                } else {
                    format!("{:.1}", s(both, 0.95))
                },
                s(one, 0.5),
                s(one, 0.95),
                100.0 * all.timeouts as f64 / all.stayed.max(1) as f64,
                all.twice
            );
        }
    }
}

/// What a population run measured (`--population`).
#[derive(Debug, Default)]
struct Population {
    games: usize,
    waits_ms: Vec<Millis>,
    gaps: Vec<i32>,
    timeouts: usize,
    /// The largest |whites − blacks| any player reached, and the longest
    /// run of one colour.
    worst_balance: i32,
    worst_streak: i32,
    /// Games whose two players had met within `--repeat-minutes` before.
    repeats: usize,
    /// Players waiting, summed over the seconds (their mean: the pool's
    /// size), and the seconds.
    waiting_sum: usize,
    seconds: usize,
    /// Games aborted for a no-show, and how long each player put back
    /// waited from then to their next match.
    aborted: usize,
    requeue_waits_ms: Vec<Millis>,
}

/// A population run: `--population` players of ratings N(mean, sd), each
/// back in the queue `--break-seconds` (mean, exponential) after each game
/// of `--game-seconds` (mean, exponential) or time-out, until `--games`
/// games are played. Colours go as each system gives them: `ours` by
/// `ColorHistory::first_gets_white`, with the colour need in the pass's
/// score; greedy and lila by lila's `firstGetsWhite` (the lower balance
/// gets white, a tie is random: `modules/user/src/main/UserRepo.scala`).
fn run_population(algo: Algo, seed: u64, args: &Args) -> Population {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut rng = StdRng::seed_from_u64(seed);
    let people = args.population;
    let ratings: Vec<i32> = (0..people)
        .map(|_| {
            normal(&mut rng, args.rating_mean, args.rating_sd)
                .round()
                .clamp(600.0, 2800.0) as i32
        })
        .collect();
    let mut colors = vec![ColorHistory::default(); people];
    // When each two players last started a game together.
    let mut last_met: HashMap<(usize, usize), Millis> = HashMap::new();
    let mut out = Population::default();
    let mut sim = Sim::new(Vec::new(), Relations::default(), args);
    let mut schedule = Schedule::new(algo, seed, args);
    let mut arrivals: BinaryHeap<Reverse<(Millis, usize)>> = (0..people)
        .map(|p| Reverse(((rng.random::<f64>() * 60_000.0) as Millis, p)))
        .collect();
    let repeat_ms = (args.repeat_minutes * 60_000.0) as Millis;
    // Entries put back after a no-show, and when.
    let mut requeue: Vec<usize> = Vec::new();
    let mut requeued_at: HashMap<usize, Millis> = HashMap::new();
    let pause = |rng: &mut StdRng| (exponential(rng, args.break_seconds) * 1000.0) as Millis;
    // A player's colour need as the service reads it (none with the colour
    // rules off).
    let need_of = |colors: &[ColorHistory], who: usize| {
        if args.plain_colors {
            0
        } else {
            colors[who].need()
        }
    };
    let mut now: Millis = 0;
    while out.games < args.games {
        now += 1000;
        while let Some(&Reverse((at, who))) = arrivals.peek() {
            if at > now {
                break;
            }
            arrivals.pop();
            schedule.catch_up(&mut sim, at);
            let player = Player {
                name: format!("p{who}"),
                rating: ratings[who],
                arrive: at,
                cancel_at: None,
            };
            let entry = sim.add_entry(player, who, need_of(&colors, who));
            schedule.arrival(&mut sim, entry, at);
        }
        schedule.catch_up(&mut sim, now);
        schedule.tick(&mut sim, now);
        out.waiting_sum += sim.waiting.len();
        out.seconds += 1;
        // Whoever timed out comes back after a pause.
        for e in std::mem::take(&mut sim.timed_out) {
            arrivals.push(Reverse((now + pause(&mut rng), sim.person[e])));
        }
        // Every pair made: colours given, the game played, both back.
        for (a, b) in std::mem::take(&mut sim.made) {
            let (pa, pb) = (sim.person[a], sim.person[b]);
            for e in [a, b] {
                if let Some(at) = requeued_at.remove(&e) {
                    out.requeue_waits_ms.push(now - at);
                }
            }
            let coin = rng.random_bool(0.5);
            let a_white = match algo {
                Algo::Ours if !args.plain_colors => {
                    ColorHistory::first_gets_white(colors[pa], colors[pb], coin)
                }
                _ => match colors[pa].balance.cmp(&colors[pb].balance) {
                    std::cmp::Ordering::Less => true,
                    std::cmp::Ordering::Greater => false,
                    std::cmp::Ordering::Equal => coin,
                },
            };
            let (white, black) = if a_white { (pa, pb) } else { (pb, pa) };
            colors[white] = colors[white].after(matchmaking_api::domain::Color::White);
            colors[black] = colors[black].after(matchmaking_api::domain::Color::Black);
            for p in [white, black] {
                out.worst_balance = out.worst_balance.max(colors[p].balance.abs());
                out.worst_streak = out.worst_streak.max(colors[p].streak.abs());
            }
            let key = (pa.min(pb), pa.max(pb));
            if last_met
                .insert(key, now)
                .is_some_and(|t| now - t <= repeat_ms)
            {
                out.repeats += 1;
            }
            for (p, q) in [(pa, pb), (pb, pa)] {
                let games = sim.met.entry(p).or_default();
                games.push_front((q, now));
                games.truncate(matchmaking_api::domain::MAX_REPEAT_GAMES as usize);
            }
            if args.no_show_share > 0.0 && rng.random_bool(args.no_show_share) {
                // Aborted: the one who showed up searches again at once with
                // their entry's place; the absent one after the cooldown.
                out.aborted += 1;
                let (present, absent) = if rng.random_bool(0.5) {
                    (a, pb)
                } else {
                    (b, pa)
                };
                let cooldown = (args.no_show_cooldown_seconds * 1000.0) as Millis;
                arrivals.push(Reverse((now + cooldown + pause(&mut rng), absent)));
                requeue.push(present);
                continue;
            }
            out.games += 1;
            let game = (exponential(&mut rng, args.game_seconds) * 1000.0) as Millis;
            for p in [pa, pb] {
                arrivals.push(Reverse((now + game + pause(&mut rng), p)));
            }
        }
        for e in std::mem::take(&mut requeue) {
            // The same entry again, its arrival (its place) kept.
            let who = sim.person[e];
            let entry = sim.add_entry(sim.players[e].clone(), who, need_of(&colors, who));
            requeued_at.insert(entry, now);
            schedule.arrival(&mut sim, entry, now);
        }
    }
    out.waits_ms = std::mem::take(&mut sim.out.waits_ms);
    out.gaps = std::mem::take(&mut sim.out.gaps);
    out.timeouts = sim.out.timeouts;
    out
}

/// lichess's pool rules as lila runs them (lichess-org/lila, `modules/pool`,
/// read at commit d99cb8d for `MatchMaking.scala`, f490d62 for
/// `PoolList.scala`), for players with no rating range, no block list, not
/// provisional and in good standing (rage-sit counter 0).
mod lila {
    use matchmaking_api::domain::Millis;

    /// `PoolList.scala`: `Wave(12.seconds, 40.players)` for 1+0 and 3+0
    /// (`Wave(14.seconds, 40.players)` for 5+0).
    pub const WAVE_EVERY_MS: Millis = 12_000;
    /// `PoolList.scala`: a wave runs at once when this many players wait.
    pub const WAVE_PLAYERS: usize = 40;
    /// `PoolActor.scala`: the next wave is scheduled `every +
    /// Random.nextInt(1000).millis` after the last.
    pub const WAVE_JITTER_MS: Millis = 1_000;
    /// `MatchMaking.scala`, `missBonus`: 12 per wave missed.
    pub const MISS_BONUS_PER_WAVE: i64 = 12;
    /// `MatchMaking.scala`, `missBonus`: at most `460 +
    /// rageSitCounter.atMost(-3) · 20`, which is 400 for a player in good
    /// standing (counter 0: `0.atMost(-3)` is -3).
    pub const MISS_BONUS_MAX: i64 = 460 - 3 * 20;
    /// `MatchMaking.scala`, `ragesitBonus`: both players' counters ≥ -2.
    pub const RAGESIT_BONUS_GOOD: i64 = 30;

    /// `MatchMaking.scala`, `missBonus`.
    pub fn miss_bonus(misses: i64) -> i64 {
        (misses * MISS_BONUS_PER_WAVE).clamp(0, MISS_BONUS_MAX)
    }

    /// `MatchMaking.scala`, `ratingToMaxScore`: above it, no pairing.
    pub fn max_score(rating: i32) -> i64 {
        if rating < 1000 {
            130
        } else if rating < 1500 {
            100
        } else {
            i64::from(rating / 15)
        }
    }

    /// `MatchMaking.scala`, `rangeBonus`: 200 off the score when both
    /// players gave a rating range and each is within the other's.
    pub const RANGE_BONUS: i64 = 200;

    /// `MatchMaking.scala`, `pairScore`: lower is better; `None` when lila
    /// would not pair the two. The smaller of the two miss bonuses counts;
    /// `rangeBonus` when `both_ranges_meet`. (A range that excludes the
    /// other player is `rangeMalus`, 9000: never paired.)
    pub fn pair_score(
        rating_a: i32,
        misses_a: i64,
        rating_b: i32,
        misses_b: i64,
        both_ranges_meet: bool,
    ) -> Option<i64> {
        let score = i64::from((rating_a - rating_b).abs())
            - miss_bonus(misses_a).min(miss_bonus(misses_b))
            - RAGESIT_BONUS_GOOD
            - if both_ranges_meet { RANGE_BONUS } else { 0 };
        (score <= max_score(rating_a.min(rating_b))).then_some(score)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn pairs_as_lila_allows() {
            // Two fresh players at 1500: max score 100, bonus 0, so a gap
            // of 130 is the most lila allows.
            assert_eq!(pair_score(1500, 0, 1630, 0, false), Some(100));
            assert_eq!(pair_score(1500, 0, 1631, 0, false), None);
            // Below 1000 the lower rating allows 130, so 160 of gap.
            assert_eq!(pair_score(900, 0, 1060, 0, false), Some(130));
            // The smaller bonus counts: one who missed 10 waves with a
            // newcomer gets nothing from it.
            assert_eq!(pair_score(1500, 10, 1631, 0, false), None);
            assert_eq!(pair_score(1500, 10, 1631, 1, false), Some(89));
            // The bonus stops at 400.
            assert_eq!(miss_bonus(33), 396);
            assert_eq!(miss_bonus(34), 400);
            assert_eq!(miss_bonus(1_000), 400);
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
struct Row {
    algo: Algo,
    rate: f64,
    wait_p50: f64,
    wait_p95: f64,
    wait_p99: f64,
    gap_mean: f64,
    gap_p95: f64,
    timeout_rate: f64,
    matches_per_minute: f64,
    barred: usize,
    /// Matched players whose partner was outside their own range.
    outside_range: usize,
    /// Share of matched players who waited at most the p80 wait they were
    /// told on arrival (the estimate's calibration: 0.8 when it holds).
    within_p80: f64,
    /// Median wait (s) of the players not restricted, and of the
    /// restricted ones.
    wait_p50_by_side: [f64; 2],
    /// Established players' games, the share of them with a gap over
    /// [`WIDE_GAP`], and their median wait (s).
    established_games: usize,
    established_wide: f64,
    established_wait_p50: f64,
}

fn row(algo: Algo, rate: f64, mut o: Outcome, hours: f64) -> Row {
    let s = |ms: Option<Millis>| ms.unwrap_or(0) as f64 / 1000.0;
    let stayed = (o.arrivals - o.cancels).max(1) as f64;
    Row {
        algo,
        rate,
        wait_p50: s(quantile(&mut o.waits_ms, 0.5)),
        wait_p95: s(quantile(&mut o.waits_ms, 0.95)),
        wait_p99: s(quantile(&mut o.waits_ms, 0.99)),
        gap_mean: o.gaps.iter().map(|&g| f64::from(g)).sum::<f64>() / o.gaps.len().max(1) as f64,
        gap_p95: f64::from(quantile(&mut o.gaps, 0.95).unwrap_or(0)),
        timeout_rate: o.timeouts as f64 / stayed,
        matches_per_minute: o.matches as f64 / (hours * 60.0),
        barred: o.barred,
        outside_range: o.outside_range,
        within_p80: o.within_p80 as f64 / o.told.max(1) as f64,
        wait_p50_by_side: o.waits_by_side_ms.each_mut().map(|w| s(quantile(w, 0.5))),
        established_games: o.established_games,
        established_wide: o.established_wide as f64 / o.established_games.max(1) as f64,
        established_wait_p50: s(quantile(&mut o.established_waits_ms, 0.5)),
    }
}

/// Random snapshots of 8–20 players: how close a pass comes to the exact
/// optimum of its own objective (pairs first, then score).
fn optimality(args: &Args, rng: &mut StdRng) -> (usize, f64, f64) {
    let policy = PoolPolicy::default();
    let now: Millis = 1_000_000_000;
    let (mut same_pairs, mut ratio_sum, mut worst) = (0, 0.0, f64::MAX);
    for _ in 0..args.snapshots {
        let n = rng.random_range(8..=20);
        let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
        let seekers: Vec<Seeker<'_>> = names
            .iter()
            .map(|name| Seeker {
                user: name,
                rating: normal(rng, 1500.0, 150.0).round() as i32,
                enqueued_at: now - rng.random_range(0..90_000),
                range: None,
                deviation: UNKNOWN_DEVIATION,
                color: 0,
            })
            .collect();
        let (_, edges) = matcher::compatibility_graph(&seekers, now, &policy);
        let best = solver::value_of(n, &edges, &solver::exact(n, &edges))
            .expect("the exact solver answers a valid matching");
        let ours = matcher::objective(
            &seekers,
            now,
            &policy,
            &matcher::find_pairs(&seekers, now, &policy),
        )
        .expect("the matcher answers a valid matching");
        if ours.pairs == best.pairs {
            same_pairs += 1;
        }
        let ratio = if best.weight == 0 {
            1.0
        } else {
            ours.weight as f64 / best.weight as f64
        };
        ratio_sum += ratio;
        worst = worst.min(ratio);
    }
    (same_pairs, ratio_sum / args.snapshots as f64, worst)
}

/// How one snapshot size compares with the exact optimum.
struct Against {
    size: usize,
    snapshots: usize,
    /// Pairs the optimum makes and the matcher does not, in all and at most
    /// in one snapshot.
    pairs_lost: u32,
    worst_lost: u32,
    /// Total gap of the matcher's pairs over the optimum's, in all.
    gap_excess: f64,
    worst_gap_excess: f64,
}

/// Snapshots of the benchmark's shape (ratings N(1500, 300), waits 0–120 s)
/// of each size, the matcher's pass against the exact optimum of the same
/// objective by the blossom solver.
fn against_optimum(args: &Args, rng: &mut StdRng) -> Vec<Against> {
    let policy = args.policy();
    let now: Millis = 1_000_000_000;
    args.snapshot_sizes
        .iter()
        .map(|&size| {
            let mut row = Against {
                size,
                snapshots: args.large_snapshots,
                pairs_lost: 0,
                worst_lost: 0,
                gap_excess: 0.0,
                worst_gap_excess: 0.0,
            };
            let (mut ours_total, mut best_total) = (0i64, 0i64);
            for _ in 0..args.large_snapshots {
                let names: Vec<String> = (0..size).map(|i| format!("s{i}")).collect();
                let seekers: Vec<Seeker<'_>> = names
                    .iter()
                    .map(|name| Seeker {
                        user: name,
                        rating: normal(rng, 1500.0, 300.0).round().clamp(600.0, 2800.0) as i32,
                        enqueued_at: now - rng.random_range(0..120_000),
                        range: None,
                        deviation: UNKNOWN_DEVIATION,
                        color: 0,
                    })
                    .collect();
                let (n, edges) = matcher::compatibility_graph(&seekers, now, &policy);
                let best = solver::blossom(n, &edges);
                let ours: Vec<(usize, usize)> = matcher::find_pairs(&seekers, now, &policy)
                    .into_iter()
                    .map(|p| (p.a, p.b))
                    .collect();
                let gap = |pairs: &[(usize, usize)]| -> i64 {
                    pairs
                        .iter()
                        .map(|&(a, b)| i64::from((seekers[a].rating - seekers[b].rating).abs()))
                        .sum()
                };
                let lost = best.len().saturating_sub(ours.len()) as u32;
                row.pairs_lost += lost;
                row.worst_lost = row.worst_lost.max(lost);
                let (g_ours, g_best) = (gap(&ours), gap(&best));
                ours_total += g_ours;
                best_total += g_best;
                if g_best > 0 {
                    row.worst_gap_excess = row
                        .worst_gap_excess
                        .max(g_ours as f64 / g_best as f64 - 1.0);
                }
            }
            row.gap_excess = ours_total as f64 / best_total.max(1) as f64 - 1.0;
            row
        })
        .collect()
}

/// Mean gap against median wait: a panel per arrival rate (their waits
/// differ by orders of magnitude), in each a hollow marker of its own shape
/// and color per algorithm, so two that land on one spot both show; the
/// legend names them, no label sits beside a point.
fn chart(rows: &[Row], path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut rates: Vec<f64> = rows.iter().map(|r| r.rate).collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    let root = SVGBackend::new(path, (420 * rates.len().max(1) as u32, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, panels) = root.split_vertically(40);
    title.titled(
        "Mean rating gap against median wait (lower left is better)",
        ("sans-serif", 20),
    )?;
    for (panel, rate) in panels
        .split_evenly((1, rates.len().max(1)))
        .iter()
        .zip(&rates)
    {
        let here: Vec<&Row> = rows.iter().filter(|r| r.rate == *rate).collect();
        let max_wait = here.iter().map(|r| r.wait_p50).fold(0.1, f64::max) * 1.25;
        // Room above the highest point for the legend.
        let max_gap = here.iter().map(|r| r.gap_mean).fold(1.0, f64::max) * 1.7;
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{rate} players/min"), ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..max_wait, 0.0..max_gap)?;
        chart
            .configure_mesh()
            .x_desc("median wait (s)")
            .y_desc("mean rating gap")
            .draw()?;
        for r in &here {
            let at = (r.wait_p50, r.gap_mean);
            let series = match r.algo {
                Algo::Ours => {
                    let style = RED.stroke_width(3);
                    chart
                        .draw_series(std::iter::once(Circle::new(at, 9, style)))?
                        .legend(move |(x, y)| Circle::new((x + 10, y), 6, style))
                }
                Algo::Greedy => {
                    let style = BLUE.stroke_width(2);
                    chart
                        .draw_series(std::iter::once(TriangleMarker::new(at, 9, style)))?
                        .legend(move |(x, y)| TriangleMarker::new((x + 10, y), 7, style))
                }
                Algo::Lila => {
                    let style = GREEN.stroke_width(2);
                    chart
                        .draw_series(std::iter::once(Cross::new(at, 7, style)))?
                        .legend(move |(x, y)| Cross::new((x + 10, y), 6, style))
                }
            };
            series.label(r.algo.name());
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Whether `ours` is no worse than `base` on median wait, time-outs and
/// mean gap, within `tolerance` (a share: 0.05 lets ours be up to 5 %
/// worse; time-outs, often near zero, also within 0.1 percentage point).
fn no_worse(ours: &Row, base: &Row, tolerance: f64) -> bool {
    let within = |a: f64, b: f64, slack: f64| a <= b * (1.0 + tolerance) + slack;
    within(ours.wait_p50, base.wait_p50, 1e-9)
        && within(ours.timeout_rate, base.timeout_rate, 0.001)
        && within(ours.gap_mean, base.gap_mean, 1e-9)
}

/// `ours` against `base` in percent (negative: ours is lower).
fn change(ours: f64, base: f64) -> f64 {
    100.0 * (ours - base) / base.max(1e-9)
}

/// The rows of a `sim.csv` this tool wrote.
fn read_rows(path: &std::path::Path) -> Result<Vec<Row>, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .skip(1)
        .enumerate()
        .map(|(i, line)| {
            let f: Vec<&str> = line.split(',').collect();
            let bad = || format!("{} line {}: not a row of sim.csv", path.display(), i + 2);
            let num = |k: usize| -> Result<f64, String> {
                f.get(k).and_then(|v| v.parse().ok()).ok_or_else(bad)
            };
            let algo = Algo::ALL
                .into_iter()
                .find(|a| f.get(1) == Some(&a.name()))
                .ok_or_else(bad)?;
            Ok(Row {
                algo,
                rate: num(0)?,
                wait_p50: num(2)?,
                wait_p95: num(3)?,
                wait_p99: num(4)?,
                gap_mean: num(5)?,
                gap_p95: num(6)?,
                timeout_rate: num(7)?,
                matches_per_minute: num(8)?,
                // Written since the relation switches came; 0 before.
                barred: num(9).unwrap_or(0.0) as usize,
                outside_range: num(10).unwrap_or(0.0) as usize,
                within_p80: num(11).unwrap_or(0.0),
                wait_p50_by_side: [num(2)?, 0.0],
                established_games: 0,
                established_wide: 0.0,
                established_wait_p50: 0.0,
            })
        })
        .collect::<Result<_, String>>()
        .map_err(Into::into)
}

/// `--population`: one run per algorithm (and per seed), pooled.
fn population_report(args: &Args) {
    let seeds = if args.seeds.is_empty() {
        vec![args.seed]
    } else {
        args.seeds.clone()
    };
    println!(
        "mm-sim: a population of {} players, N({}, {}), {} games per seed (games {} s, pauses {} s on average), seeds {:?}",
        args.population,
        args.rating_mean,
        args.rating_sd,
        args.games,
        args.game_seconds,
        args.break_seconds,
        seeds
    );
    println!();
    println!(
        "| algorithm | games | players waiting (mean) | wait p50 (s) | wait p95 | gap mean | time-outs | worst |whites − blacks| | longest run of one colour | repeats within {} min |",
        args.repeat_minutes
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for algo in Algo::ALL {
        let mut all = Population::default();
        for &seed in &seeds {
            let o = run_population(algo, seed, args);
            all.games += o.games;
            all.waits_ms.extend(o.waits_ms);
            all.gaps.extend(o.gaps);
            all.timeouts += o.timeouts;
            all.worst_balance = all.worst_balance.max(o.worst_balance);
            all.worst_streak = all.worst_streak.max(o.worst_streak);
            all.repeats += o.repeats;
            all.waiting_sum += o.waiting_sum;
            all.seconds += o.seconds;
            all.aborted += o.aborted;
            all.requeue_waits_ms.extend(o.requeue_waits_ms);
        }
        let s = |ms: Option<Millis>| ms.unwrap_or(0) as f64 / 1000.0;
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {:.1}% |",
            algo.name(),
            all.games,
            all.waiting_sum as f64 / all.seconds.max(1) as f64,
            s(quantile(&mut all.waits_ms, 0.5)),
            s(quantile(&mut all.waits_ms, 0.95)),
            all.gaps.iter().map(|&g| f64::from(g)).sum::<f64>() / all.gaps.len().max(1) as f64,
            all.timeouts,
            all.worst_balance,
            all.worst_streak,
            100.0 * all.repeats as f64 / all.games.max(1) as f64
        );
        if all.aborted > 0 {
            println!(
                "  {}: {} games aborted for a no-show; the player put back waited {:.1} s (p50), {:.1} s (p95) to their next match",
                algo.name(),
                all.aborted,
                s(quantile(&mut all.requeue_waits_ms, 0.5)),
                s(quantile(&mut all.requeue_waits_ms, 0.95))
            );
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    if let Some(csv) = &args.redraw {
        let path = args.out.join("gap_vs_wait.svg");
        chart(&read_rows(csv)?, &path)?;
        println!("drew {} from {}", path.display(), csv.display());
        return Ok(());
    }
    if args.population > 0 {
        population_report(&args);
        return Ok(());
    }
    if args.several_share > 0.0 {
        several_report(&args);
        return Ok(());
    }
    let mut rng = StdRng::seed_from_u64(args.seed);
    let seeds = if args.seeds.is_empty() {
        vec![args.seed]
    } else {
        args.seeds.clone()
    };
    // Per rate, one trace per seed (each seed draws its rates in order, so
    // one seed alone gives the traces `--seed` gives).
    let traces: Vec<(f64, Runs)> = match &args.trace {
        Some(path) => {
            let players = read_trace(path)?;
            // Ticks run to the last arrival at least (a trace this tool
            // wrote ends before `--hours`, so it replays exactly).
            let last = players.iter().map(|p| p.arrive).max().unwrap_or(0);
            args.hours = args.hours.max(last as f64 / 3_600_000.0);
            let rate = players.len() as f64 / (args.hours * 60.0);
            vec![((rate * 100.0).round() / 100.0, vec![(args.seed, players)])]
        }
        None => {
            let mut per_rate: Vec<(f64, Runs)> =
                args.rates.iter().map(|&rate| (rate, Vec::new())).collect();
            for &seed in &seeds {
                let mut rng = StdRng::seed_from_u64(seed);
                for (rate, runs) in &mut per_rate {
                    runs.push((seed, trace(&args, *rate, &mut rng)));
                }
            }
            per_rate
        }
    };
    if let Some(base) = &args.trace_out {
        for (rate, runs) in &traces {
            let path = trace_out_path(base, *rate, traces.len() > 1);
            write_trace(&path, &runs[0].1)?;
            println!("wrote the trace of {rate}/min to {}", path.display());
        }
    }
    let mut rows = Vec::new();
    let mut by_rate: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for (rate, runs) in &traces {
        for algo in Algo::ALL {
            let hours = args.hours * runs.len() as f64;
            let r = row(algo, *rate, run_all(algo, runs, &args), hours);
            by_rate
                .entry(format!("{rate:>6}"))
                .or_default()
                .push(r.clone());
            rows.push(r);
        }
    }
    match &args.trace {
        Some(path) => println!(
            "mm-sim: replaying {} ({} players over {:.2} h)",
            path.display(),
            traces[0].1[0].1.len(),
            args.hours
        ),
        None => println!(
            "mm-sim: {} h per trace, ratings N({}, {}), {}% cancel (mean {} s), seeds {:?}",
            args.hours,
            args.rating_mean,
            args.rating_sd,
            args.cancel_share * 100.0,
            args.cancel_mean_seconds,
            seeds
        ),
    }
    println!();
    println!(
        "| players/min | algorithm | wait p50 (s) | wait p95 | wait p99 | gap mean | gap p95 | time-outs | matches/min | barred | outside own range | within p80 estimate |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut csv = String::from(
        "rate_per_minute,algorithm,wait_p50_s,wait_p95_s,wait_p99_s,gap_mean,gap_p95,timeout_rate,matches_per_minute,barred_matches,outside_own_range,within_p80_share\n",
    );
    for r in &rows {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.2}% | {:.2} | {} | {} | {:.1}% |",
            r.rate,
            r.algo.name(),
            r.wait_p50,
            r.wait_p95,
            r.wait_p99,
            r.gap_mean,
            r.gap_p95,
            r.timeout_rate * 100.0,
            r.matches_per_minute,
            r.barred,
            r.outside_range,
            100.0 * r.within_p80
        );
        csv.push_str(&format!(
            "{},{},{:.3},{:.3},{:.3},{:.3},{:.0},{:.5},{:.3},{},{},{:.4}\n",
            r.rate,
            r.algo.name(),
            r.wait_p50,
            r.wait_p95,
            r.wait_p99,
            r.gap_mean,
            r.gap_p95,
            r.timeout_rate,
            r.matches_per_minute,
            r.barred,
            r.outside_range,
            r.within_p80
        ));
    }
    std::fs::write(args.out.join("sim.csv"), csv)?;
    chart(&rows, &args.out.join("gap_vs_wait.svg"))?;
    println!();
    for (rate, rs) in &by_rate {
        let ours = rs.iter().find(|r| r.algo == Algo::Ours).expect("ours ran");
        for base in rs.iter().filter(|r| r.algo != Algo::Ours) {
            println!(
                "rate {rate}/min vs {}: no worse (within {:.0}%) on median wait, time-outs and mean gap: {}; median wait {:+.1}%, time-outs {:+.2} points, mean gap {:+.1}%, p95 wait {:+.1}%",
                base.algo.name(),
                args.tolerance * 100.0,
                if no_worse(ours, base, args.tolerance) {
                    "yes"
                } else {
                    "NO"
                },
                change(ours.wait_p50, base.wait_p50),
                100.0 * (ours.timeout_rate - base.timeout_rate),
                change(ours.gap_mean, base.gap_mean),
                change(ours.wait_p95, base.wait_p95),
            );
        }
    }
    if args.restricted_share > 0.0 {
        for r in rows.iter().filter(|r| r.algo != Algo::Greedy) {
            println!(
                "rate {}/min, {}: median wait of players not restricted {:.1} s, of restricted players {:.1} s",
                r.rate,
                r.algo.name(),
                r.wait_p50_by_side[0],
                r.wait_p50_by_side[1]
            );
        }
    }
    if args.established_share > 0.0 {
        for r in &rows {
            println!(
                "rate {}/min, {}: established players (deviation <= {ESTABLISHED_DEVIATION}): {} games, {:.2}% with a gap over {WIDE_GAP}; their median wait {:.1} s",
                r.rate,
                r.algo.name(),
                r.established_games,
                100.0 * r.established_wide,
                r.established_wait_p50
            );
        }
    }
    if args.snapshots > 0 {
        let (same, mean_ratio, worst) = optimality(&args, &mut rng);
        println!(
            "optimality on {} random snapshots of 8-20 players: same number of pairs as the exact optimum in {} ({:.2}%); score {:.4} of the optimum on average, {:.4} at worst",
            args.snapshots,
            same,
            100.0 * same as f64 / args.snapshots as f64,
            mean_ratio,
            worst
        );
    }
    if args.large_snapshots > 0 {
        println!();
        println!(
            "| snapshot size | snapshots | pairs lost (all) | pairs lost (worst) | total gap over the optimum | worst |"
        );
        println!("|---|---|---|---|---|---|");
        for a in against_optimum(&args, &mut rng) {
            println!(
                "| {} | {} | {} | {} | {:+.1}% | {:+.1}% |",
                a.size,
                a.snapshots,
                a.pairs_lost,
                a.worst_lost,
                100.0 * a.gap_excess,
                100.0 * a.worst_gap_excess
            );
        }
    }
    println!(
        "wrote {} and {}",
        args.out.join("sim.csv").display(),
        args.out.join("gap_vs_wait.svg").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trace with many restricted players and blocks between neighbours:
    /// the service's matcher and greedy never pair two who may not meet,
    /// and the switches do come into play (lila's naive pairing of
    /// restricted players ignores blocks, as lila does).
    #[test]
    fn ours_never_pairs_players_who_may_not_meet() {
        let args = Args::parse_from([
            "mm-sim",
            "--hours",
            "0.5",
            "--restricted-share",
            "0.2",
            "--blocks-per-player",
            "8",
        ]);
        let mut rng = StdRng::seed_from_u64(3);
        let players = trace(&args, 200.0, &mut rng);
        let relations = Relations::draw(&players, 3, &args);
        assert!(relations.restricted.iter().filter(|&&r| r).count() > players.len() / 10);
        assert!(relations.blocks.len() > players.len() * 7);
        for algo in [Algo::Ours, Algo::Greedy] {
            let o = run(algo, &players, 3, &args);
            assert!(o.matches > players.len() / 3, "{algo:?}: {}", o.matches);
            assert_eq!(o.barred, 0, "{algo:?}");
        }
        assert!(run(Algo::Lila, &players, 3, &args).barred > 0);
    }

    /// Half the players with narrow ranges of their own (-30..+60, where
    /// the mean gap is about 55): nobody is matched outside theirs, by any
    /// algorithm.
    #[test]
    fn nobody_is_matched_outside_their_own_range() {
        let args = Args::parse_from([
            "mm-sim",
            "--hours",
            "0.5",
            "--range-share",
            "0.5",
            "--range-min-delta",
            "-30",
            "--range-max-delta",
            "60",
        ]);
        let mut rng = StdRng::seed_from_u64(5);
        let players = trace(&args, 20.0, &mut rng);
        for algo in Algo::ALL {
            let o = run(algo, &players, 5, &args);
            assert!(o.matches > players.len() / 4, "{algo:?}: {}", o.matches);
            assert_eq!(o.outside_range, 0, "{algo:?}");
        }
        let relations = Relations::draw(&players, 5, &args);
        assert!(relations.ranges.iter().filter(|r| r.is_some()).count() > players.len() / 3);
    }

    /// Established players' windows stay tighter with deviation-aware
    /// windows: at a 60 % floor their window never passes 300, so none of
    /// their games is wider, where plain windows give them some.
    #[test]
    fn deviation_aware_windows_keep_established_players_games_close() {
        let with = |reference: &str| {
            Args::parse_from([
                "mm-sim",
                "--hours",
                "4",
                "--established-share",
                "0.5",
                "--deviation-reference",
                reference,
                "--deviation-min-percent",
                "60",
            ])
        };
        let mut rng = StdRng::seed_from_u64(7);
        let players = trace(&with("0"), 2.0, &mut rng);
        let plain = run(Algo::Ours, &players, 7, &with("0"));
        let aware = run(Algo::Ours, &players, 7, &with("150"));
        assert!(plain.established_wide > 0, "{plain:?}");
        assert!(aware.established_games > players.len() / 5, "{aware:?}");
        assert_eq!(aware.established_wide, 0);
    }

    /// Players in two pools of one speed are matched sooner than those in
    /// one, and nobody is matched twice.
    #[test]
    fn players_in_two_pools_wait_less_and_are_matched_once() {
        let args = Args::parse_from(["mm-sim", "--hours", "1", "--several-share", "0.3"]);
        let mut rng = StdRng::seed_from_u64(9);
        let players = trace(&args, 4.0, &mut rng);
        let mut o = run_several(&players, 9, 0.3, &args);
        assert_eq!(o.twice, 0);
        assert!(
            o.waits_ms[0].len() > 20 && o.waits_ms[1].len() > 40,
            "{o:?}"
        );
        let both = quantile(&mut o.waits_ms[0], 0.5).unwrap();
        let one = quantile(&mut o.waits_ms[1], 0.5).unwrap();
        assert!(both < one, "in both {both} ms, in one {one} ms");
    }

    /// A population of 20 playing 10,000 games (three seeds): the
    /// service's colours stay within the limits (|whites − blacks| ≤ 2,
    /// runs ≤ 3) for every player, where lila's rule (the lower balance
    /// gets white) does not.
    #[test]
    fn colours_stay_within_their_limits_over_ten_thousand_games() {
        let args = Args::parse_from(["mm-sim", "--population", "20", "--games", "10000"]);
        let mut lila_broke = false;
        for seed in 1..=3 {
            let ours = run_population(Algo::Ours, seed, &args);
            assert!(ours.games >= 10_000);
            assert!(
                ours.worst_balance <= ColorHistory::MAX_BALANCE,
                "{}",
                ours.worst_balance
            );
            assert!(
                ours.worst_streak <= ColorHistory::MAX_RUN,
                "{}",
                ours.worst_streak
            );
            let lila = run_population(Algo::Lila, seed, &args);
            lila_broke |= lila.worst_balance > ColorHistory::MAX_BALANCE
                || lila.worst_streak > ColorHistory::MAX_RUN;
        }
        assert!(
            lila_broke,
            "the limits bind: lila's rule alone goes past them"
        );
    }

    /// A busy population (1,000 players, some ten waiting at a time): the
    /// repeat penalty at least halves the repeat pairings within 10
    /// minutes; with it off, they are many.
    #[test]
    fn the_repeat_penalty_cuts_repeat_pairings_in_a_busy_pool() {
        let with = |penalty: &str| {
            Args::parse_from([
                "mm-sim",
                "--population",
                "1000",
                "--games",
                "5000",
                "--repeat-penalty",
                penalty,
            ])
        };
        let off = run_population(Algo::Ours, 1, &with("0"));
        let on = run_population(Algo::Ours, 1, &with("25"));
        assert!(
            off.repeats * 10 > off.games,
            "{} of {}",
            off.repeats,
            off.games
        );
        assert!(
            on.repeats * 2 < off.repeats,
            "{} against {}",
            on.repeats,
            off.repeats
        );
    }

    /// The p80 wait players are told on arrival (the service's estimate,
    /// from the latest real waits of players rated near them) holds for
    /// about four in five of them.
    #[test]
    fn the_p80_estimate_holds_for_about_four_in_five() {
        let args = Args::parse_from(["mm-sim", "--hours", "1"]);
        let mut rng = StdRng::seed_from_u64(7);
        let players = trace(&args, 20.0, &mut rng);
        let o = run(Algo::Ours, &players, 7, &args);
        assert!(o.told > 500, "{}", o.told);
        let share = o.within_p80 as f64 / o.told as f64;
        assert!((0.72..=0.88).contains(&share), "{share}");
    }
}
