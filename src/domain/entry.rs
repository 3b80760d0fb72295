//! Queue entries, matches and the "active game" guard (SPEC §4).

use serde::{Deserialize, Serialize};

use super::{
    Deviation, GameId, MatchId, Millis, PoolKey, PoolRef, QueueEntryId, Rating, Region, TenantId,
    TimeControl, UNKNOWN_DEVIATION, UserId, Username,
};

/// Life of a queue entry. `Reserved` is the short internal "being matched"
/// state of the commit protocol; clients see it as `SEARCHING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EntryStatus {
    Searching,
    Reserved,
    Matched,
    Cancelled,
    TimedOut,
}

impl EntryStatus {
    /// The status a client sees.
    pub fn public(self) -> &'static str {
        match self {
            EntryStatus::Searching | EntryStatus::Reserved => "SEARCHING",
            EntryStatus::Matched => "MATCHED",
            EntryStatus::Cancelled => "CANCELLED",
            EntryStatus::TimedOut => "TIMED_OUT",
        }
    }

    /// Still in a pool (searching, or being matched right now).
    pub fn is_waiting(self) -> bool {
        matches!(self, EntryStatus::Searching | EntryStatus::Reserved)
    }
}

/// Why an entry ended without a match, as a client reads it (`reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EndReason {
    /// The player cancelled it (`DELETE`).
    Player,
    /// Its client was not heard from (no poll, stream or heartbeat) for
    /// `PRESENCE_TIMEOUT_SECONDS`.
    Absent,
    /// It searched for the pool's whole queue time.
    MaxQueueTime,
    /// Its player turned out to be in a game already.
    ActiveGame,
}

impl EndReason {
    pub const ALL: [EndReason; 4] = [
        EndReason::Player,
        EndReason::Absent,
        EndReason::MaxQueueTime,
        EndReason::ActiveGame,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Player => "PLAYER",
            EndReason::Absent => "ABSENT",
            EndReason::MaxQueueTime => "MAX_QUEUE_TIME",
            EndReason::ActiveGame => "ACTIVE_GAME",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A player's own rating range (`rating_range` on join): a partner's
/// rating must lie within `[rating + min_delta, rating + max_delta]`, on
/// top of the pool's window. It can only narrow what the pool allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RatingRange {
    pub min_delta: i32,
    pub max_delta: i32,
}

impl RatingRange {
    /// The widest a range may be set: wider says nothing a pool's window
    /// does not.
    pub const MAX_DELTA: i32 = 2_000;

    /// A range as a join gives it: `min_delta` in `-MAX_DELTA..=0`,
    /// `max_delta` in `0..=MAX_DELTA` (a player always accepts their own
    /// rating).
    pub fn new(min_delta: i64, max_delta: i64) -> Result<Self, super::ParseError> {
        let bound = i64::from(Self::MAX_DELTA);
        if !(-bound..=0).contains(&min_delta) {
            return Err(super::ParseError::new(
                "rating_range.min_delta",
                format!("must be an integer from -{bound} to 0"),
            ));
        }
        if !(0..=bound).contains(&max_delta) {
            return Err(super::ParseError::new(
                "rating_range.max_delta",
                format!("must be an integer from 0 to {bound}"),
            ));
        }
        Ok(Self {
            min_delta: min_delta as i32,
            max_delta: max_delta as i32,
        })
    }

    /// Whether a player rated `own` accepts a partner rated `other`.
    pub fn accepts(self, own: Rating, other: Rating) -> bool {
        let delta = i64::from(other) - i64::from(own);
        (i64::from(self.min_delta)..=i64::from(self.max_delta)).contains(&delta)
    }

    /// The farthest it reaches either way.
    pub fn reach(self) -> i32 {
        self.max_delta.max(-self.min_delta)
    }
}

/// The pools an entry of `tenant` living in `pool` waits in: `pool`, then
/// the same pool in each of the other time controls in `also`.
pub fn listed_pools<'a>(
    tenant: &'a TenantId,
    pool: PoolKey,
    also: &'a [TimeControl],
) -> impl Iterator<Item = PoolRef> + 'a {
    std::iter::once(pool)
        .chain(also.iter().map(move |&tc| pool.with_time_control(tc)))
        .map(|key| PoolRef {
            tenant_id: tenant.clone(),
            key,
        })
}

/// Whether a player rated `own` with `range` (none: any) accepts `other`.
pub fn in_range(range: Option<RatingRange>, own: Rating, other: Rating) -> bool {
    range.is_none_or(|r| r.accepts(own, other))
}

/// The other player of a match, as shown to a player.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opponent {
    pub user_id: UserId,
    pub username: Option<Username>,
    pub rating: Rating,
    /// The match's time control, when it is not the one of the pool the
    /// player's entry lives in (an entry waiting in several time controls,
    /// matched in another of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_control: Option<TimeControl>,
}

/// A player's request to be matched, and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub id: QueueEntryId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub username: Option<Username>,
    pub pool: PoolKey,
    /// Rating snapshot taken at enqueue, for the pool's speed.
    pub rating: Rating,
    pub status: EntryStatus,
    /// Priority: kept when a failed match puts the entry back.
    pub enqueued_at: Millis,
    pub updated_at: Millis,
    /// Last time the client was heard from (join, poll, stream).
    pub last_seen_at: Millis,
    /// Request id of the join, carried to the match it ends in.
    pub request_id: Option<String>,
    /// Small free-form object from the client, kept as compact JSON text.
    pub client_metadata: Option<String>,
    /// Set while reserved (the match being committed) and once matched.
    pub match_id: Option<MatchId>,
    /// Deadline of a reservation; past it, the next worker finishes or rolls back.
    pub reserved_until: Option<Millis>,
    pub game_id: Option<GameId>,
    pub opponent: Option<Opponent>,
    /// Why it ended, once `CANCELLED` or `TIMED_OUT`.
    #[serde(default)]
    pub reason: Option<EndReason>,
    /// The player's own rating range, if they gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating_range: Option<RatingRange>,
    /// The rating's deviation at enqueue (Glicko RD; 350 when unknown).
    #[serde(default = "unknown_deviation")]
    pub rating_deviation: Deviation,
    /// The other time controls this entry waits in at once (one join in
    /// several pools of one speed): the entry lives in `pool`, and is
    /// listed in each of these pools too. Sorted, never `pool`'s own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<TimeControl>,
}

fn unknown_deviation() -> Deviation {
    UNKNOWN_DEVIATION
}

impl QueueEntry {
    /// A new entry searching in `pool` of `tenant_id`, enqueued at `now`.
    pub fn searching(
        tenant_id: TenantId,
        user_id: UserId,
        pool: PoolKey,
        rating: Rating,
        now: Millis,
    ) -> Self {
        Self {
            id: QueueEntryId::generate(),
            tenant_id,
            user_id,
            username: None,
            pool,
            rating,
            status: EntryStatus::Searching,
            enqueued_at: now,
            updated_at: now,
            last_seen_at: now,
            request_id: None,
            client_metadata: None,
            match_id: None,
            reserved_until: None,
            game_id: None,
            opponent: None,
            reason: None,
            rating_range: None,
            rating_deviation: UNKNOWN_DEVIATION,
            also: Vec::new(),
        }
    }

    /// Every pool the entry waits in: its own, then the others it is
    /// listed in.
    pub fn pools(&self) -> impl Iterator<Item = PoolRef> + '_ {
        listed_pools(&self.tenant_id, self.pool, &self.also)
    }

    /// Whether `other` asks for the same search: a join answered with the
    /// entry already waiting rather than refused as another search.
    pub fn same_search(&self, other: &QueueEntry) -> bool {
        self.pool == other.pool
            && self.rating_range == other.rating_range
            && self.also == other.also
    }

    pub fn pool_ref(&self) -> PoolRef {
        PoolRef {
            tenant_id: self.tenant_id.clone(),
            key: self.pool,
        }
    }
}

/// The guard that keeps a matched player out of new matchmaking until their
/// game is reported finished or the guard time passes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveGame {
    /// `None` while the game is being created (a guard rebuilt from a
    /// durable [`MatchIntent`]): the player is held, but there is no game
    /// to show yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub game_id: Option<GameId>,
    pub match_id: MatchId,
    pub pool: PoolKey,
    /// The color this player has.
    pub color: Color,
    pub opponent: Opponent,
    pub until: Millis,
    /// Not a game: the cooldown of a player who did not show up for this
    /// match's game, which was aborted (joins answer `COOLDOWN`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cooldown: bool,
}

/// A side of the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    White,
    Black,
}

/// A player's colours so far: whites minus blacks, and the current run
/// (`+n`: the last n games white, `-n`: black). Kept with the player's
/// row, moved by every match recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ColorHistory {
    pub balance: i32,
    pub streak: i32,
}

impl ColorHistory {
    /// After a game with `color`.
    pub fn after(self, color: Color) -> Self {
        match color {
            Color::White => Self {
                balance: self.balance + 1,
                streak: self.streak.max(0) + 1,
            },
            Color::Black => Self {
                balance: self.balance - 1,
                streak: self.streak.min(0) - 1,
            },
        }
    }

    /// The most a player's whites and blacks may differ, and the longest
    /// run of one colour: a pass never pairs two players who both need the
    /// same colour to stay within them ([`Self::MUST`]).
    pub const MAX_BALANCE: i32 = 2;
    pub const MAX_RUN: i32 = 3;

    /// The need of a player who must have one colour next: at the most
    /// blacks (or whites) allowed, or at the longest run.
    pub const MUST: i32 = 3;

    /// How much the next game should be white (positive) or black
    /// (negative): ±[`Self::MUST`] when it must be, to stay within
    /// [`Self::MAX_BALANCE`] and [`Self::MAX_RUN`]; otherwise the balance
    /// owed and a run of two or more, one step each, within ±2.
    pub fn need(self) -> i32 {
        if self.balance <= -Self::MAX_BALANCE || self.streak <= -Self::MAX_RUN {
            return Self::MUST;
        }
        if self.balance >= Self::MAX_BALANCE || self.streak >= Self::MAX_RUN {
            return -Self::MUST;
        }
        let run = match self.streak {
            s if s >= 2 => -1,
            s if s <= -2 => 1,
            _ => 0,
        };
        (-self.balance + run).clamp(-2, 2)
    }

    /// Whether two players with these needs may not meet: both must have
    /// the same colour.
    pub fn clash(need_a: i32, need_b: i32) -> bool {
        need_a == need_b && need_a.abs() == Self::MUST
    }

    /// Whether the first of two players gets white: the one who needs it
    /// more; on equal need, the one with more blacks, then the one on the
    /// longer black run; on a tie, `coin`.
    pub fn first_gets_white(a: Self, b: Self, coin: bool) -> bool {
        let key = |h: Self| (h.need(), -h.balance, -h.streak);
        match key(a).cmp(&key(b)) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => coin,
        }
    }
}

/// Where a match came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchSource {
    Queue,
    Challenge,
}

impl MatchSource {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchSource::Queue => "queue",
            MatchSource::Challenge => "challenge",
        }
    }
}

/// One side of a match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchSide {
    pub user_id: UserId,
    pub username: Option<Username>,
    pub rating: Rating,
    pub entry_id: Option<QueueEntryId>,
    /// The region of the pool this side's entry waited in, when it is not
    /// the match's own (a region fallback match: the match's pool is the
    /// other player's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
    /// The time control of the pool this side's entry waited in, when it
    /// is not the match's own (an entry waiting in several time controls
    /// at once, matched in one of its others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_control: Option<TimeControl>,
}

/// The durable record of a match (SPEC §4 MatchRecord).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchRecord {
    pub match_id: MatchId,
    pub tenant_id: TenantId,
    pub game_id: GameId,
    pub white: MatchSide,
    pub black: MatchSide,
    pub pool: PoolKey,
    pub created_at: Millis,
    pub source: MatchSource,
    pub finished_at: Option<Millis>,
}

impl MatchSide {
    /// The pool this side's entry waited in, of a match made in `pool`.
    pub fn pool_in(&self, pool: PoolKey) -> PoolKey {
        let pool = self.region.map_or(pool, |r| pool.in_region(r));
        self.time_control
            .map_or(pool, |tc| pool.with_time_control(tc))
    }

    /// This side as the other player, `me`, sees it in a match of `pool`.
    pub fn as_opponent_of(&self, me: &MatchSide, pool: PoolKey) -> Opponent {
        Opponent {
            user_id: self.user_id.clone(),
            username: self.username.clone(),
            rating: self.rating,
            time_control: me.time_control.map(|_| pool.time_control),
        }
    }
}

/// A match decided, with both players claimed in the durable store, whose
/// game is being created: written *before* the game service is called, so
/// no game ever exists that no durable row accounts for. Once the game
/// exists it becomes a [`MatchRecord`]; if the game service refuses it, it
/// is dropped. A worker that dies in between leaves it for the next one,
/// which asks the game service again with the same match id (creation is
/// idempotent by match id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchIntent {
    pub match_id: MatchId,
    pub tenant_id: TenantId,
    pub white: MatchSide,
    pub black: MatchSide,
    pub pool: PoolKey,
    pub created_at: Millis,
    pub source: MatchSource,
}

impl MatchIntent {
    /// The record of this match once `game_id` exists.
    pub fn with_game(&self, game_id: GameId) -> MatchRecord {
        MatchRecord {
            match_id: self.match_id,
            tenant_id: self.tenant_id.clone(),
            game_id,
            white: self.white.clone(),
            black: self.black.clone(),
            pool: self.pool,
            created_at: self.created_at,
            source: self.source,
            finished_at: None,
        }
    }

    /// The guard of `user` while the game is being created.
    pub fn guard_for(&self, user: &UserId, until: Millis) -> Option<ActiveGame> {
        guard(
            self.match_id,
            None,
            self.pool,
            &self.white,
            &self.black,
            user,
            until,
        )
    }

    /// Both players, white first.
    pub fn players(&self) -> [&UserId; 2] {
        [&self.white.user_id, &self.black.user_id]
    }
}

/// The guard of `user`, a player of a match between `white` and `black`.
fn guard(
    match_id: MatchId,
    game_id: Option<GameId>,
    pool: PoolKey,
    white: &MatchSide,
    black: &MatchSide,
    user: &UserId,
    until: Millis,
) -> Option<ActiveGame> {
    let (color, mine, theirs) = if &white.user_id == user {
        (Color::White, white, black)
    } else if &black.user_id == user {
        (Color::Black, black, white)
    } else {
        return None;
    };
    Some(ActiveGame {
        game_id,
        match_id,
        pool,
        color,
        opponent: theirs.as_opponent_of(mine, pool),
        until,
        cooldown: false,
    })
}

impl MatchRecord {
    /// The active-game guard of `user` for this match, lasting until `until`.
    pub fn guard_for(&self, user: &UserId, until: Millis) -> Option<ActiveGame> {
        guard(
            self.match_id,
            Some(self.game_id.clone()),
            self.pool,
            &self.white,
            &self.black,
            user,
            until,
        )
    }

    /// The cooldown of `user`, who did not show up for this match's game,
    /// until `until` (no game id: reports about the game leave it alone).
    pub fn cooldown_for(&self, user: &UserId, until: Millis) -> Option<ActiveGame> {
        guard(
            self.match_id,
            None,
            self.pool,
            &self.white,
            &self.black,
            user,
            until,
        )
        .map(|g| ActiveGame {
            cooldown: true,
            ..g
        })
    }

    /// The side of `user`, and the other side, if `user` played.
    pub fn sides_of(&self, user: &UserId) -> Option<(&MatchSide, &MatchSide)> {
        if &self.white.user_id == user {
            Some((&self.white, &self.black))
        } else if &self.black.user_id == user {
            Some((&self.black, &self.white))
        } else {
            None
        }
    }

    /// The intent this record fulfils (the same match, before its game).
    pub fn intent(&self) -> MatchIntent {
        MatchIntent {
            match_id: self.match_id,
            tenant_id: self.tenant_id.clone(),
            white: self.white.clone(),
            black: self.black.clone(),
            pool: self.pool,
            created_at: self.created_at,
            source: self.source,
        }
    }
}

#[cfg(test)]
mod color_tests {
    use super::*;

    fn played(moves: &str) -> ColorHistory {
        moves.chars().fold(ColorHistory::default(), |h, c| {
            h.after(if c == 'W' { Color::White } else { Color::Black })
        })
    }

    #[test]
    fn history_counts_balance_and_run() {
        assert_eq!(
            played("WWW"),
            ColorHistory {
                balance: 3,
                streak: 3
            }
        );
        assert_eq!(
            played("WWWB"),
            ColorHistory {
                balance: 2,
                streak: -1
            }
        );
        assert_eq!(
            played("BBBW"),
            ColorHistory {
                balance: -2,
                streak: 1
            }
        );
        assert_eq!(
            played("WWWBBB"),
            ColorHistory {
                balance: 0,
                streak: -3
            }
        );
    }

    #[test]
    fn white_goes_to_who_owes_it_then_to_the_longer_black_run() {
        // Owing beats not owing, whichever comes first.
        assert!(ColorHistory::first_gets_white(
            played("B"),
            played(""),
            false
        ));
        assert!(!ColorHistory::first_gets_white(
            played(""),
            played("B"),
            true
        ));
        // Level balances: the black run of two owes white.
        assert!(ColorHistory::first_gets_white(
            played("WBB"),
            played("BWW"),
            false
        ));
        assert!(played("WBB").need() > 0 && played("BWW").need() < 0);
        // At the limits: must.
        assert_eq!(played("BB").need(), ColorHistory::MUST);
        assert_eq!(played("WWBWWBWW").need(), -ColorHistory::MUST);
        assert_eq!(played("BWBWWW").need(), -ColorHistory::MUST);
        assert!(ColorHistory::clash(
            played("BB").need(),
            played("WBBB").need()
        ));
        assert!(!ColorHistory::clash(
            played("B").need(),
            played("BB").need()
        ));
        // Level, one just had black: white to them.
        assert!(ColorHistory::first_gets_white(
            played("WB"),
            played("BW"),
            false
        ));
        // Nothing between them: the coin.
        assert!(ColorHistory::first_gets_white(
            played("WB"),
            played("WB"),
            true
        ));
        assert!(!ColorHistory::first_gets_white(
            played("WB"),
            played("WB"),
            false
        ));
    }
}
