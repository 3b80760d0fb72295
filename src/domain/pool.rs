//! Pool dimensions (`Mode`, `Variant`, `Region`) and the `PoolKey` they form.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{ParseError, TenantId, TimeControl};

/// Declares a closed set of names that parses from and prints to its wire
/// spelling, and whose parse error lists the allowed spellings.
macro_rules! closed_enum {
    ($(#[$meta:meta])* $name:ident, $field:literal { $($variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }
        }

        impl FromStr for $name {
            type Err = ParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    _ => Err(ParseError::not_one_of($field, s, Self::ALL)),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub(super) use closed_enum;

closed_enum!(
    /// Whether the game changes ratings.
    Mode, "mode" { Rated = "rated", Casual = "casual" }
);

closed_enum!(
    /// Chess variant of the game.
    Variant, "variant" {
        Standard = "standard",
        Chess960 = "chess960",
        Crazyhouse = "crazyhouse",
        Antichess = "antichess",
        Atomic = "atomic",
        Horde = "horde",
        KingOfTheHill = "kingOfTheHill",
        RacingKings = "racingKings",
        ThreeCheck = "threeCheck",
    }
);

closed_enum!(
    /// Where the player wants to be matched.
    Region, "region" {
        Global = "GLOBAL",
        Na = "NA",
        Sa = "SA",
        Eu = "EU",
        Africa = "AFRICA",
        Asia = "ASIA",
        Oceania = "OCEANIA",
    }
);

impl Region {
    /// This region's bit in a [`RegionSet`].
    fn bit(self) -> u8 {
        1 << Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// A set of regions (a policy's fallback regions), written as a list of
/// their names in [`Region::ALL`] order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RegionSet(u8);

impl RegionSet {
    pub fn contains(self, region: Region) -> bool {
        self.0 & region.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Region> {
        Region::ALL
            .iter()
            .copied()
            .filter(move |r| self.contains(*r))
    }
}

impl FromIterator<Region> for RegionSet {
    fn from_iter<I: IntoIterator<Item = Region>>(regions: I) -> Self {
        Self(regions.into_iter().fold(0, |bits, r| bits | r.bit()))
    }
}

impl fmt::Display for RegionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Region::as_str).collect();
        f.write_str(&names.join(","))
    }
}

impl FromStr for RegionSet {
    type Err = ParseError;

    /// A comma-separated list of region names (empty: no region).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::parse)
            .collect()
    }
}

impl Serialize for RegionSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for RegionSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<Region>::deserialize(d)?.into_iter().collect())
    }
}

/// What a rating is kept for (SPEC §8): a speed and a variant, named
/// `{speed}_{variant}` (`blitz_standard`, `bullet_chess960`) as the rating
/// service names its pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RatingPool {
    pub speed: super::Speed,
    pub variant: Variant,
}

impl RatingPool {
    pub fn standard(speed: super::Speed) -> Self {
        Self {
            speed,
            variant: Variant::Standard,
        }
    }

    /// Every pool, by speed then variant.
    pub fn all() -> impl Iterator<Item = RatingPool> {
        super::Speed::ALL.into_iter().flat_map(|speed| {
            Variant::ALL
                .iter()
                .map(move |&variant| RatingPool { speed, variant })
        })
    }
}

impl fmt::Display for RatingPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.speed, self.variant)
    }
}

impl FromStr for RatingPool {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (speed, variant) = s.split_once('_').ok_or_else(|| {
            ParseError::new(
                "pool_id",
                "must look like {speed}_{variant}, e.g. blitz_standard",
            )
        })?;
        Ok(Self {
            speed: speed.parse()?,
            variant: variant.parse()?,
        })
    }
}

/// The region value the seed's clients send for "wherever this tenant
/// plays by default" (SPEC §8): accepted on a join, never stored.
pub const DEFAULT_REGION_NAME: &str = "DEFAULT";

/// One queue of a tenant: `{variant}_{time_control}_{mode}_{region}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    pub variant: Variant,
    pub time_control: TimeControl,
    pub mode: Mode,
    pub region: Region,
}

impl fmt::Display for PoolKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}_{}_{}_{}",
            self.variant, self.time_control, self.mode, self.region
        )
    }
}

impl PoolKey {
    /// The same pool (variant, time control, mode) in `region`.
    pub fn in_region(self, region: Region) -> Self {
        Self { region, ..self }
    }

    /// The same pool in another time control.
    pub fn with_time_control(self, time_control: TimeControl) -> Self {
        Self {
            time_control,
            ..self
        }
    }

    /// The rating this pool pairs players by.
    pub fn rating_pool(&self) -> RatingPool {
        RatingPool {
            speed: self.time_control.speed(),
            variant: self.variant,
        }
    }
}

impl FromStr for PoolKey {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split('_');
        let (Some(v), Some(tc), Some(m), Some(r), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(ParseError::new(
                "pool_key",
                "must look like {variant}_{time_control}_{mode}_{region}",
            ));
        };
        Ok(PoolKey {
            variant: v.parse()?,
            time_control: tc.parse()?,
            mode: m.parse()?,
            region: r.parse()?,
        })
    }
}

impl Serialize for PoolKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PoolKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A pool of one tenant: pools never mix tenants.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolRef {
    pub tenant_id: TenantId,
    pub key: PoolKey,
}

impl fmt::Display for PoolRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.tenant_id, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_key_prints_as_the_spec_says_and_parses_back() {
        let key = PoolKey {
            variant: Variant::Standard,
            time_control: "5+0".parse().unwrap(),
            mode: Mode::Rated,
            region: Region::Asia,
        };
        assert_eq!(key.to_string(), "standard_5+0_rated_ASIA");
        assert_eq!(key.to_string().parse::<PoolKey>().unwrap(), key);
    }

    #[test]
    fn a_bad_variant_names_the_field_and_the_allowed_values() {
        let err = "chess961".parse::<Variant>().unwrap_err();
        assert_eq!(err.field, "variant");
        assert!(err.reason.contains("kingOfTheHill"), "{}", err.reason);
        assert!(err.reason.contains("chess960"));
    }

    #[test]
    fn a_region_set_reads_and_writes_a_list_of_names() {
        let set: RegionSet = "EU, NA,,GLOBAL".parse().unwrap();
        assert!(set.contains(Region::Eu) && set.contains(Region::Global));
        assert!(!set.contains(Region::Asia));
        assert_eq!(set.to_string(), "GLOBAL,NA,EU");
        assert_eq!(
            serde_json::to_value(set).unwrap(),
            serde_json::json!(["GLOBAL", "NA", "EU"])
        );
        let back: RegionSet = serde_json::from_str(r#"["EU"]"#).unwrap();
        assert_eq!(back.iter().collect::<Vec<_>>(), [Region::Eu]);
        assert!("".parse::<RegionSet>().unwrap().is_empty());
        assert_eq!("EU,MARS".parse::<RegionSet>().unwrap_err().field, "region");
    }

    #[test]
    fn names_are_case_sensitive_as_on_the_wire() {
        assert!("asia".parse::<Region>().is_err());
        let pool: RatingPool = "blitz_chess960".parse().unwrap();
        assert_eq!(pool.variant, Variant::Chess960);
        assert_eq!(pool.to_string(), "blitz_chess960");
        assert_eq!(
            "standard_5+0_rated_EU"
                .parse::<PoolKey>()
                .unwrap()
                .rating_pool(),
            RatingPool::standard(crate::domain::Speed::Blitz)
        );
        for bad in ["blitz", "blitz_", "correspondence_standard", "blitz_chess"] {
            assert!(bad.parse::<RatingPool>().is_err(), "{bad}");
        }
        assert!("RATED".parse::<Mode>().is_err());
        assert_eq!(
            "threeCheck".parse::<Variant>().unwrap(),
            Variant::ThreeCheck
        );
    }
}
