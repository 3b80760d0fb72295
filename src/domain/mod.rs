//! Domain types of SPEC §4: the values a request is parsed into at the edge.
//!
//! Every type here can only hold a valid value; its parse error names the
//! field and, where the set is closed, the allowed values, so the HTTP layer
//! can turn it into the 400 `INVALID_REQUEST` a client sees.

mod challenge;
mod entry;
mod flags;
mod ids;
mod pool;
mod tenant;
mod time_control;

pub use challenge::{Challenge, ChallengeStatus, PreferredColor};
pub use entry::{
    ActiveGame, Color, ColorHistory, EndReason, EntryStatus, MatchIntent, MatchRecord, MatchSide,
    MatchSource, Opponent, QueueEntry, RatingRange, in_range, listed_pools,
};
pub use flags::{Arm, DEFAULT_STRATEGY, Experiment, Flags, FlagsPatch, Strategy};
pub use ids::{ChallengeId, GameId, MatchId, QueueEntryId, TenantId, UserId, Username};
pub use pool::{
    DEFAULT_REGION_NAME, Mode, PoolKey, PoolRef, RatingPool, Region, RegionSet, Variant,
};
pub use tenant::{
    MAX_DEVIATION_PERCENT, MAX_POOLS_PER_JOIN, MAX_RATING_WINDOW, MAX_REPEAT_GAMES,
    MAX_TIME_CONTROLS, PolicyPatch, PoolPolicy, TenantConfig, TenantConfigPatch,
};
pub use time_control::{Speed, TimeControl};

/// Milliseconds since the Unix epoch: the one clock unit of the domain.
pub type Millis = i64;

/// A player's rating (Glicko/Elo scale).
pub type Rating = i32;

/// The rating of a player the rating source has never seen.
pub const DEFAULT_RATING: Rating = 1500;

/// Deviation of a player with no deviation on record (Glicko's start: SPEC
/// §8 reads unrated as 1500, deviation 350).
pub const UNKNOWN_DEVIATION: Deviation = 350;

/// The largest rating deviation kept (Glicko starts at 350; some rating
/// services allow up to 500).
pub const MAX_DEVIATION: Deviation = 1_000;

/// A rating deviation, in rating points (0–[`MAX_DEVIATION`]).
pub type Deviation = u16;

/// A rating with its deviation (Glicko style), as a rating service keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatingSnapshot {
    pub rating: Rating,
    pub deviation: Deviation,
}

impl RatingSnapshot {
    /// A player with no rating on record (SPEC §8: 1500, deviation 350).
    pub const UNRATED: RatingSnapshot = RatingSnapshot {
        rating: DEFAULT_RATING,
        deviation: UNKNOWN_DEVIATION,
    };
}

/// Ratings outside this range are refused at the edge.
pub const RATING_RANGE: std::ops::RangeInclusive<Rating> = 0..=4000;

/// Why a value from a request was refused: the field it came from and what
/// was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ParseError {
    pub field: &'static str,
    pub reason: String,
}

impl ParseError {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }

    /// A value outside a closed set: names the allowed values.
    pub fn not_one_of<T: std::fmt::Display>(
        field: &'static str,
        got: &str,
        allowed: impl IntoIterator<Item = T>,
    ) -> Self {
        let allowed: Vec<String> = allowed.into_iter().map(|v| v.to_string()).collect();
        Self::new(
            field,
            format!(
                "'{}' is not allowed; allowed values: {}",
                truncate(got, 40),
                allowed.join(", ")
            ),
        )
    }
}

/// Shortens client input before echoing it in an error message.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// Current wall-clock time in milliseconds.
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// Where services read the time: the system clock in production, a
/// [`ManualClock`] in tests, so the rules that depend on time (the rating
/// window, time-outs, presence, guards, expiries) can be tested without
/// waiting for it.
pub trait Clock: std::fmt::Debug + Send + Sync + 'static {
    /// Epoch milliseconds.
    fn now(&self) -> Millis;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        now_millis()
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn at(ms: Millis) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self(std::sync::atomic::AtomicI64::new(ms)))
    }

    pub fn advance(&self, ms: Millis) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Formats epoch milliseconds as RFC 3339 (UTC), as the API shows times.
pub fn rfc3339(ms: Millis) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
