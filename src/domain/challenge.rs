//! Direct challenges (SPEC §3.2, §4 Challenge): A challenges B with given
//! settings; B accepts or declines, A may cancel, and an unanswered
//! challenge expires.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{GameId, MatchId, Millis, Mode, ParseError, TenantId, TimeControl, UserId, Variant};

/// The color the challenger asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PreferredColor {
    White,
    Black,
    Random,
}

impl PreferredColor {
    pub const ALL: [PreferredColor; 3] = [Self::White, Self::Black, Self::Random];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::White => "white",
            Self::Black => "black",
            Self::Random => "random",
        }
    }
}

impl fmt::Display for PreferredColor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PreferredColor {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ParseError::not_one_of("preferred_color", s, Self::ALL))
    }
}

/// Life of a challenge. `Accepting` is the short internal state while the
/// game of an accepted challenge is created; clients see it as `PENDING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChallengeStatus {
    Pending,
    Accepting,
    Accepted,
    Declined,
    Expired,
    Cancelled,
}

impl ChallengeStatus {
    pub const ALL: [ChallengeStatus; 6] = [
        Self::Pending,
        Self::Accepting,
        Self::Accepted,
        Self::Declined,
        Self::Expired,
        Self::Cancelled,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Accepting => "ACCEPTING",
            Self::Accepted => "ACCEPTED",
            Self::Declined => "DECLINED",
            Self::Expired => "EXPIRED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// The status a client sees.
    pub fn public(self) -> &'static str {
        match self {
            Self::Accepting => "PENDING",
            other => other.as_str(),
        }
    }
}

impl FromStr for ChallengeStatus {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ParseError::new("status", "unknown challenge status"))
    }
}

/// A challenge between two players of one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Challenge {
    pub id: super::ChallengeId,
    pub tenant_id: TenantId,
    pub challenger: UserId,
    pub opponent: UserId,
    pub time_control: TimeControl,
    pub mode: Mode,
    pub variant: Variant,
    pub preferred_color: PreferredColor,
    pub status: ChallengeStatus,
    pub created_at: Millis,
    pub expires_at: Millis,
    /// Set when accepting starts (the match being created) and kept.
    pub match_id: Option<MatchId>,
    pub game_id: Option<GameId>,
}

impl Challenge {
    /// The status at `now`: a pending challenge past its time reads as
    /// expired even before the worker has swept it.
    pub fn status_at(&self, now: Millis) -> ChallengeStatus {
        match self.status {
            ChallengeStatus::Pending if now >= self.expires_at => ChallengeStatus::Expired,
            status => status,
        }
    }

    /// Whether `user` is one of the two players.
    pub fn involves(&self, user: &UserId) -> bool {
        &self.challenger == user || &self.opponent == user
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_challenge_reads_expired_after_its_time() {
        let c = Challenge {
            id: super::super::ChallengeId::generate(),
            tenant_id: TenantId::parse("t").unwrap(),
            challenger: UserId::parse("a").unwrap(),
            opponent: UserId::parse("b").unwrap(),
            time_control: "5+0".parse().unwrap(),
            mode: Mode::Rated,
            variant: Variant::Standard,
            preferred_color: PreferredColor::Random,
            status: ChallengeStatus::Pending,
            created_at: 0,
            expires_at: 1_000,
            match_id: None,
            game_id: None,
        };
        assert_eq!(c.status_at(999), ChallengeStatus::Pending);
        assert_eq!(c.status_at(1_000), ChallengeStatus::Expired);
        let declined = Challenge {
            status: ChallengeStatus::Declined,
            ..c
        };
        assert_eq!(declined.status_at(5_000), ChallengeStatus::Declined);
    }

    #[test]
    fn colors_parse_and_name_the_allowed_values() {
        assert_eq!(
            "black".parse::<PreferredColor>().unwrap(),
            PreferredColor::Black
        );
        let err = "purple".parse::<PreferredColor>().unwrap_err();
        assert_eq!(err.field, "preferred_color");
        assert!(err.reason.contains("random"));
    }
}
