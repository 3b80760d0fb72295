//! What a tenant allows (time controls, variants, regions) and the matching
//! policy of a pool.

use serde::{Deserialize, Serialize};

use super::{
    Deviation, MAX_DEVIATION, Millis, Mode, ParseError, PoolKey, Region, RegionSet, TimeControl,
    Variant,
};

/// The choices a tenant offers its players.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub time_controls: Vec<TimeControl>,
    pub variants: Vec<Variant>,
    pub regions: Vec<Region>,
    pub default_region: Region,
}

impl Default for TenantConfig {
    fn default() -> Self {
        let time_controls = [
            "1+0", "2+1", "3+0", "3+2", "5+0", "5+3", "10+0", "10+5", "15+10", "30+0", "30+20",
        ]
        .iter()
        .map(|s| s.parse().expect("built-in time controls are valid"))
        .collect();
        Self {
            time_controls,
            variants: Variant::ALL.to_vec(),
            regions: Region::ALL.to_vec(),
            default_region: Region::Global,
        }
    }
}

impl TenantConfig {
    /// Parses the pool a request asks for; each refusal names its field and
    /// what this tenant allows.
    pub fn pool_key(
        &self,
        time_control: &str,
        mode: &str,
        variant: Option<&str>,
        region: Option<&str>,
    ) -> Result<PoolKey, ParseError> {
        let tc: TimeControl = time_control.parse().map_err(|e: ParseError| {
            ParseError::new(
                "time_control",
                format!(
                    "{}; allowed values: {}",
                    e.reason,
                    join(&self.time_controls)
                ),
            )
        })?;
        if !self.time_controls.contains(&tc) {
            return Err(ParseError::not_one_of(
                "time_control",
                time_control,
                &self.time_controls,
            ));
        }
        let mode: Mode = mode.parse()?;
        let variant = match variant {
            None => Variant::Standard,
            Some(v) => v
                .parse()
                .ok()
                .filter(|v| self.variants.contains(v))
                .ok_or_else(|| ParseError::not_one_of("variant", v, &self.variants))?,
        };
        let region = match region {
            None | Some(super::DEFAULT_REGION_NAME) => self.default_region,
            Some(r) => r
                .parse()
                .ok()
                .filter(|r| self.regions.contains(r))
                .ok_or_else(|| ParseError::not_one_of("region", r, &self.regions))?,
        };
        Ok(PoolKey {
            variant,
            time_control: tc,
            mode,
            region,
        })
    }
}

/// A tenant's configuration set at run time: only the fields it sets; the
/// others come from the settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfigPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_controls: Option<Vec<TimeControl>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variants: Option<Vec<Variant>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<Region>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_region: Option<Region>,
}

/// The most time controls a tenant may list.
pub const MAX_TIME_CONTROLS: usize = 64;

impl TenantConfigPatch {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl TenantConfig {
    /// This configuration with the fields `patch` sets (lists without
    /// repeats, in the order given).
    pub fn with(&self, patch: &TenantConfigPatch) -> Self {
        fn distinct<T: PartialEq + Copy>(items: &[T]) -> Vec<T> {
            let mut out: Vec<T> = Vec::with_capacity(items.len());
            for &item in items {
                if !out.contains(&item) {
                    out.push(item);
                }
            }
            out
        }
        Self {
            time_controls: patch
                .time_controls
                .as_deref()
                .map_or_else(|| self.time_controls.clone(), distinct),
            variants: patch
                .variants
                .as_deref()
                .map_or_else(|| self.variants.clone(), distinct),
            regions: patch
                .regions
                .as_deref()
                .map_or_else(|| self.regions.clone(), distinct),
            default_region: patch.default_region.unwrap_or(self.default_region),
        }
    }

    /// Whether players could be served by this configuration; else the
    /// field and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.time_controls.is_empty() || self.time_controls.len() > MAX_TIME_CONTROLS {
            return Err((
                "time_controls",
                format!("must list 1 to {MAX_TIME_CONTROLS} time controls"),
            ));
        }
        if self.variants.is_empty() {
            return Err(("variants", "must list at least one variant".into()));
        }
        if self.regions.is_empty() {
            return Err(("regions", "must list at least one region".into()));
        }
        if !self.regions.contains(&self.default_region) {
            return Err((
                "default_region",
                format!(
                    "must be one of the tenant's regions ({})",
                    join(&self.regions)
                ),
            ));
        }
        Ok(())
    }
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a pool matches: the rating window and how long anyone may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolPolicy {
    /// Window of a player who has just arrived.
    pub initial_window: i32,
    /// Every this many milliseconds of waiting, the window grows...
    pub widening_interval_ms: Millis,
    /// ...by this many rating points...
    pub widening_amount: i32,
    /// ...up to this gap.
    pub max_gap: i32,
    /// Entries waiting longer than this are timed out.
    pub max_queue_time_ms: Millis,
    /// After waiting this long (`None`: never), an entry may also meet
    /// entries of `fallback_regions` in the same variant, time control and
    /// mode, after every partner of its own region (region fallback).
    pub fallback_after_ms: Option<Millis>,
    pub fallback_regions: RegionSet,
    /// Repeat pairings: two players who met within `repeat_window_ms`, or
    /// within the last `repeat_games` games of either, cost up to
    /// `repeat_penalty` rating points of gap in the pass's score, decaying
    /// with the time and the games since; nothing once the shorter of
    /// their two waits reaches `repeat_waive_ms` (0 penalty: off).
    pub repeat_penalty: i32,
    pub repeat_window_ms: Millis,
    pub repeat_games: u32,
    pub repeat_waive_ms: Millis,
    /// Rating-deviation-aware windows (0: off): a player's window is the
    /// plain one ([`PoolPolicy::window`]) times their deviation over
    /// `deviation_reference`, kept within `deviation_min_percent` and
    /// `deviation_max_percent` of it, and never past `max_gap`
    /// ([`PoolPolicy::window_for`]).
    pub deviation_reference: i32,
    pub deviation_min_percent: i32,
    pub deviation_max_percent: i32,
}

impl Default for PoolPolicy {
    fn default() -> Self {
        Self {
            initial_window: 100,
            widening_interval_ms: 10_000,
            widening_amount: 25,
            max_gap: 500,
            max_queue_time_ms: 600_000,
            fallback_after_ms: None,
            fallback_regions: RegionSet::default(),
            repeat_penalty: 25,
            repeat_window_ms: 600_000,
            repeat_games: 3,
            repeat_waive_ms: 60_000,
            deviation_reference: 0,
            deviation_min_percent: 50,
            deviation_max_percent: 200,
        }
    }
}

impl PoolPolicy {
    /// Number of whole widening intervals in `waited_ms`.
    pub fn widening_steps(&self, waited_ms: Millis) -> i64 {
        if waited_ms <= 0 {
            0
        } else {
            waited_ms / self.widening_interval_ms.max(1)
        }
    }

    /// SPEC §5: `min(initial + floor(wait / interval) · amount, max_gap)`.
    pub fn window(&self, waited_ms: Millis) -> i32 {
        let widened = i64::from(self.initial_window)
            + self.widening_steps(waited_ms) * i64::from(self.widening_amount);
        widened.min(i64::from(self.max_gap)) as i32
    }

    /// The window of a player of rating deviation `deviation` who has
    /// waited `waited_ms`: `min(window(wait) · scale, max_gap)`, where
    /// `scale = clamp(deviation / deviation_reference, min%, max%)`. A
    /// provisional player (deviation above the reference) starts wider; an
    /// established one (below) stays tighter all along, their widest window
    /// being `max_gap · scale`. With `deviation_reference` 0, the plain
    /// window.
    pub fn window_for(&self, waited_ms: Millis, deviation: Deviation) -> i32 {
        let window = self.window(waited_ms);
        if self.deviation_reference <= 0 {
            return window;
        }
        let window = i64::from(window);
        let scaled = (window * i64::from(deviation) / i64::from(self.deviation_reference)).clamp(
            window * i64::from(self.deviation_min_percent) / 100,
            window * i64::from(self.deviation_max_percent) / 100,
        );
        scaled.min(i64::from(self.max_gap)) as i32
    }

    /// Whether an entry of this policy's pool that has waited `waited_ms`
    /// may meet entries of `region` (another region of its pool's kind).
    pub fn falls_back_to(&self, region: Region, waited_ms: Millis) -> bool {
        self.fallback_regions.contains(region)
            && self
                .fallback_after_ms
                .is_some_and(|after| waited_ms >= after)
    }

    /// What pairing two players costs in the score (rating points of gap)
    /// when they last met `ago` ms ago, that game being `games_ago` games
    /// back for the one of them who played it more recently (1: their last
    /// game), and the shorter of their waits is `waited`: the penalty times
    /// the larger of `1 − ago / window` and `(games + 1 − games_ago) /
    /// games`, each 0 once outside; 0 once `waited` reaches the waiver.
    pub fn repeat_cost(&self, ago: Millis, games_ago: u32, waited: Millis) -> i64 {
        if self.repeat_penalty <= 0 || waited >= self.repeat_waive_ms {
            return 0;
        }
        let by_time = if ago < self.repeat_window_ms {
            1.0 - ago.max(0) as f64 / self.repeat_window_ms as f64
        } else {
            0.0
        };
        let by_games = if (1..=self.repeat_games).contains(&games_ago) {
            f64::from(self.repeat_games + 1 - games_ago) / f64::from(self.repeat_games)
        } else {
            0.0
        };
        (f64::from(self.repeat_penalty) * by_time.max(by_games)).round() as i64
    }

    /// Milliseconds a new arrival waits until its window reaches `gap`, or
    /// `None` when it never does.
    pub fn wait_until_window(&self, gap: i32) -> Option<Millis> {
        if gap <= self.initial_window {
            return Some(0);
        }
        if gap > self.max_gap || self.widening_amount <= 0 {
            return None;
        }
        let amount = i64::from(self.widening_amount);
        let steps = (i64::from(gap - self.initial_window) + amount - 1) / amount;
        Some(steps * self.widening_interval_ms)
    }
}

/// The most a deviation may scale a window by, in percent.
pub const MAX_DEVIATION_PERCENT: i32 = 1_000;

/// The time controls one join may wait in at once.
pub const MAX_POOLS_PER_JOIN: usize = 4;

/// The most recent games of a player a repeat may be counted in.
pub const MAX_REPEAT_GAMES: u32 = 20;

/// The widest rating window or gap a policy may name: the whole rating range.
pub const MAX_RATING_WINDOW: i32 = 4000;

/// A policy set at run time for a tenant or a pool: only the fields it
/// sets; the others come from the level above (the tenant's, then the
/// settings). Serialized with the settings' names, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_rating_window: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating_window_widening_interval: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating_window_widening_amount: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rating_gap: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_time_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_fallback_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_fallback_regions: Option<RegionSet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_penalty: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_window_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_window_games: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_waive_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deviation_reference: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deviation_min_percent: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deviation_max_percent: Option<i32>,
}

impl PolicyPatch {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl PoolPolicy {
    /// This policy with the fields `patch` sets.
    pub fn with(self, patch: &PolicyPatch) -> Self {
        let ms = |seconds: f64| (seconds * 1000.0).round() as Millis;
        Self {
            initial_window: patch.initial_rating_window.unwrap_or(self.initial_window),
            widening_interval_ms: patch
                .rating_window_widening_interval
                .map_or(self.widening_interval_ms, ms),
            widening_amount: patch
                .rating_window_widening_amount
                .unwrap_or(self.widening_amount),
            max_gap: patch.max_rating_gap.unwrap_or(self.max_gap),
            max_queue_time_ms: patch
                .max_queue_time_seconds
                .map_or(self.max_queue_time_ms, ms),
            fallback_after_ms: patch
                .region_fallback_seconds
                .map_or(self.fallback_after_ms, |s| Some(ms(s))),
            fallback_regions: patch
                .region_fallback_regions
                .unwrap_or(self.fallback_regions),
            repeat_penalty: patch.repeat_penalty.unwrap_or(self.repeat_penalty),
            repeat_window_ms: patch
                .repeat_window_seconds
                .map_or(self.repeat_window_ms, ms),
            repeat_games: patch.repeat_window_games.unwrap_or(self.repeat_games),
            repeat_waive_ms: patch.repeat_waive_seconds.map_or(self.repeat_waive_ms, ms),
            deviation_reference: patch
                .deviation_reference
                .unwrap_or(self.deviation_reference),
            deviation_min_percent: patch
                .deviation_min_percent
                .unwrap_or(self.deviation_min_percent),
            deviation_max_percent: patch
                .deviation_max_percent
                .unwrap_or(self.deviation_max_percent),
        }
    }

    /// Whether this policy can run; else the field (by its settings name)
    /// and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(0..=MAX_RATING_WINDOW).contains(&self.initial_window) {
            return Err((
                "initial_rating_window",
                format!("must be 0 to {}", MAX_RATING_WINDOW),
            ));
        }
        if !(1..=86_400_000).contains(&self.widening_interval_ms) {
            return Err((
                "rating_window_widening_interval",
                "must be more than 0 and at most 86400 seconds".into(),
            ));
        }
        if !(0..=MAX_RATING_WINDOW).contains(&self.widening_amount) {
            return Err((
                "rating_window_widening_amount",
                format!("must be 0 to {}", MAX_RATING_WINDOW),
            ));
        }
        if self.max_gap < self.initial_window || self.max_gap > MAX_RATING_WINDOW {
            return Err((
                "max_rating_gap",
                format!(
                    "must be at least initial_rating_window ({}) and at most {}",
                    self.initial_window, MAX_RATING_WINDOW
                ),
            ));
        }
        if !(1_000..=86_400_000).contains(&self.max_queue_time_ms) {
            return Err((
                "max_queue_time_seconds",
                "must be 1 to 86400 seconds".into(),
            ));
        }
        if self
            .fallback_after_ms
            .is_some_and(|ms| !(0..=86_400_000).contains(&ms))
        {
            return Err((
                "region_fallback_seconds",
                "must be 0 to 86400 seconds".into(),
            ));
        }
        if !(0..=MAX_RATING_WINDOW).contains(&self.repeat_penalty) {
            return Err((
                "repeat_penalty",
                format!("must be 0 to {MAX_RATING_WINDOW}"),
            ));
        }
        if !(0..=86_400_000).contains(&self.repeat_window_ms) {
            return Err(("repeat_window_seconds", "must be 0 to 86400 seconds".into()));
        }
        if self.repeat_games > MAX_REPEAT_GAMES {
            return Err((
                "repeat_window_games",
                format!("must be 0 to {MAX_REPEAT_GAMES}"),
            ));
        }
        if !(0..=86_400_000).contains(&self.repeat_waive_ms) {
            return Err(("repeat_waive_seconds", "must be 0 to 86400 seconds".into()));
        }
        if !(0..=i32::from(MAX_DEVIATION)).contains(&self.deviation_reference) {
            return Err((
                "deviation_reference",
                format!("must be 0 (off) to {MAX_DEVIATION}"),
            ));
        }
        if !(1..=100).contains(&self.deviation_min_percent) {
            return Err(("deviation_min_percent", "must be 1 to 100".into()));
        }
        if !(100..=MAX_DEVIATION_PERCENT).contains(&self.deviation_max_percent) {
            return Err((
                "deviation_max_percent",
                format!("must be 100 to {MAX_DEVIATION_PERCENT}"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_costs_less_as_time_and_games_pass_and_nothing_after_the_waiver() {
        let p = PoolPolicy {
            repeat_penalty: 300,
            ..PoolPolicy::default()
        };
        // Their last game, just now: the whole penalty.
        assert_eq!(p.repeat_cost(0, 1, 0), 300);
        // Half the window ago, three games back (of three): the larger.
        assert_eq!(p.repeat_cost(300_000, 3, 0), 150);
        assert_eq!(p.repeat_cost(540_000, 2, 0), 200);
        // Outside both: nothing.
        assert_eq!(p.repeat_cost(600_000, 4, 0), 0);
        // Waited a minute (the shorter wait): waived.
        assert_eq!(p.repeat_cost(0, 1, 60_000), 0);
        // Off at 0.
        let off = PoolPolicy {
            repeat_penalty: 0,
            ..PoolPolicy::default()
        };
        assert_eq!(off.repeat_cost(0, 1, 0), 0);
    }

    #[test]
    fn window_widens_in_steps_up_to_the_max_gap() {
        let p = PoolPolicy::default();
        assert_eq!(p.window(0), 100);
        assert_eq!(p.window(9_999), 100);
        assert_eq!(p.window(10_000), 125);
        assert_eq!(p.window(45_000), 200);
        assert_eq!(p.window(10_000_000), 500);
        assert_eq!(p.window(-5), 100);
    }

    #[test]
    fn a_deviation_widens_a_provisional_window_and_narrows_an_established_one() {
        let off = PoolPolicy::default();
        assert_eq!(off.window_for(0, 350), 100);
        assert_eq!(off.window_for(0, 40), 100);
        let p = PoolPolicy {
            deviation_reference: 150,
            deviation_min_percent: 50,
            deviation_max_percent: 200,
            ..PoolPolicy::default()
        };
        // At the reference: the plain window.
        assert_eq!(p.window_for(45_000, 150), 200);
        // Provisional: twice as wide, never past the max gap.
        assert_eq!(p.window_for(0, 350), 200);
        assert_eq!(p.window_for(45_000, 350), 400);
        assert_eq!(p.window_for(10_000_000, 350), 500);
        // Established: 80/150 of it, at most 266 however long they wait.
        assert_eq!(p.window_for(0, 80), 53);
        assert_eq!(p.window_for(10_000_000, 80), 266);
        // Below the floor: the floor.
        assert_eq!(p.window_for(0, 30), 50);
        assert!(p.check().is_ok());
        for bad in [
            PoolPolicy {
                deviation_reference: 1_001,
                ..p
            },
            PoolPolicy {
                deviation_min_percent: 0,
                ..p
            },
            PoolPolicy {
                deviation_max_percent: 99,
                ..p
            },
        ] {
            assert!(bad.check().unwrap_err().0.starts_with("deviation_"));
        }
    }

    #[test]
    fn wait_until_window_inverts_the_formula() {
        let p = PoolPolicy::default();
        assert_eq!(p.wait_until_window(90), Some(0));
        assert_eq!(p.wait_until_window(200), Some(40_000));
        assert_eq!(p.window(40_000), 200);
        assert_eq!(p.wait_until_window(501), None);
    }

    #[test]
    fn default_tenant_allows_the_usual_pools() {
        let t = TenantConfig::default();
        let key = t.pool_key("5+0", "rated", None, None).unwrap();
        assert_eq!(key.to_string(), "standard_5+0_rated_GLOBAL");
        let err = t.pool_key("4+0", "rated", None, None).unwrap_err();
        assert_eq!(err.field, "time_control");
        assert!(err.reason.contains("30+20"), "{}", err.reason);
        let err = t.pool_key("nonsense", "rated", None, None).unwrap_err();
        assert!(err.reason.contains("allowed values"), "{}", err.reason);
        assert_eq!(
            t.pool_key("5+0", "ranked", None, None).unwrap_err().field,
            "mode"
        );
        assert_eq!(
            t.pool_key("5+0", "rated", None, Some("MARS"))
                .unwrap_err()
                .field,
            "region"
        );
    }

    #[test]
    fn the_seeds_default_region_means_the_tenants_default() {
        let t = TenantConfig {
            default_region: Region::Eu,
            ..TenantConfig::default()
        };
        for region in [None, Some("DEFAULT")] {
            let key = t.pool_key("5+0", "rated", None, region).unwrap();
            assert_eq!(key.region, Region::Eu);
        }
        assert_eq!(
            t.pool_key("5+0", "rated", None, Some("default"))
                .unwrap_err()
                .field,
            "region"
        );
    }
}
