//! `TimeControl` (`<minutes>+<increment_seconds>`) and the `Speed` it falls in.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ParseError;

/// A clock setting: base minutes plus increment seconds per move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeControl {
    minutes: u16,
    increment: u16,
}

impl TimeControl {
    /// Largest base time and increment accepted (3 hours, 3 minutes).
    const MAX_MINUTES: u16 = 180;
    const MAX_INCREMENT: u16 = 180;

    pub fn new(minutes: u16, increment: u16) -> Result<Self, ParseError> {
        if minutes == 0 && increment == 0 {
            return Err(ParseError::new("time_control", "0+0 is not a time control"));
        }
        if minutes > Self::MAX_MINUTES || increment > Self::MAX_INCREMENT {
            return Err(ParseError::new("time_control", "time control out of range"));
        }
        Ok(Self { minutes, increment })
    }

    pub fn minutes(self) -> u16 {
        self.minutes
    }

    pub fn increment(self) -> u16 {
        self.increment
    }

    /// Estimated game duration in seconds (SPEC §4): minutes·60 + 40·increment.
    pub fn estimated_seconds(self) -> u32 {
        u32::from(self.minutes) * 60 + 40 * u32::from(self.increment)
    }

    pub fn speed(self) -> Speed {
        match self.estimated_seconds() {
            s if s < 180 => Speed::Bullet,
            s if s < 480 => Speed::Blitz,
            s if s < 1500 => Speed::Rapid,
            _ => Speed::Classical,
        }
    }
}

impl FromStr for TimeControl {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            ParseError::new(
                "time_control",
                "must look like <minutes>+<increment_seconds>, e.g. 5+0",
            )
        };
        let (m, i) = s.split_once('+').ok_or_else(bad)?;
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(m) || !digits(i) {
            return Err(bad());
        }
        Self::new(m.parse().map_err(|_| bad())?, i.parse().map_err(|_| bad())?)
    }
}

impl fmt::Display for TimeControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{}", self.minutes, self.increment)
    }
}

impl Serialize for TimeControl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeControl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Rating category of a time control; ratings are kept per speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speed {
    Bullet,
    Blitz,
    Rapid,
    Classical,
}

impl Speed {
    pub const ALL: [Speed; 4] = [Speed::Bullet, Speed::Blitz, Speed::Rapid, Speed::Classical];

    pub fn as_str(self) -> &'static str {
        match self {
            Speed::Bullet => "bullet",
            Speed::Blitz => "blitz",
            Speed::Rapid => "rapid",
            Speed::Classical => "classical",
        }
    }
}

impl fmt::Display for Speed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Speed {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Speed::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| ParseError::not_one_of("speed", s, Speed::ALL))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_usual_controls() {
        for s in ["1+0", "2+1", "3+0", "3+2", "5+0", "10+5", "15+10", "30+20"] {
            let tc: TimeControl = s.parse().unwrap();
            assert_eq!(tc.to_string(), s);
        }
    }

    #[test]
    fn refuses_malformed_controls() {
        for s in [
            "", "5", "5+", "+0", "a+b", "5+0+1", "-1+0", " 5+0", "0+0", "9999+0", "5.5+0",
        ] {
            let err = s.parse::<TimeControl>().unwrap_err();
            assert_eq!(err.field, "time_control", "{s}");
        }
    }

    #[test]
    fn speed_follows_the_estimated_duration() {
        let speed = |s: &str| s.parse::<TimeControl>().unwrap().speed();
        assert_eq!(speed("1+0"), Speed::Bullet); // 60
        assert_eq!(speed("2+1"), Speed::Bullet); // 160
        assert_eq!(speed("3+0"), Speed::Blitz); // 180
        assert_eq!(speed("5+3"), Speed::Blitz); // 420
        assert_eq!(speed("8+0"), Speed::Rapid); // 480
        assert_eq!(speed("15+10"), Speed::Rapid); // 1300
        assert_eq!(speed("25+0"), Speed::Classical); // 1500
        assert_eq!(speed("30+20"), Speed::Classical);
    }
}
