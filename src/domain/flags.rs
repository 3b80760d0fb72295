//! Feature flags a tenant's operators switch at run time: direct
//! challenges on or off, and an experiment that matches a share of the
//! players with another pairing strategy (an A/B test of the matcher).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::pool::closed_enum;
use super::{ParseError, TenantId, UserId};

closed_enum!(
    /// How a pool's pass pairs its players. `window`: SPEC §5 alone, a pair
    /// is made as soon as both windows allow it. `volume`: the same hard
    /// window, but an arrival is held for a likely closer partner while
    /// arrivals are plentiful (`MATCH_HOLD_*`; the default).
    Strategy, "strategy" { Window = "window", Volume = "volume" }
);

closed_enum!(
    /// The side of an experiment a player is on.
    Arm, "arm" { Control = "control", Treatment = "treatment" }
);

/// The strategy pools run when no experiment says otherwise.
pub const DEFAULT_STRATEGY: Strategy = Strategy::Volume;

/// An A/B test of the matcher: `treatment_percent` of the tenant's players
/// (chosen by a hash of the experiment's name and the user, so the same
/// player is always on the same side) are matched with `treatment`, among
/// themselves; the others with `control`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Names the experiment; a new name deals the players afresh.
    pub name: String,
    pub control: Strategy,
    pub treatment: Strategy,
    /// 0 to 100.
    pub treatment_percent: u8,
}

impl Experiment {
    /// The side `user` of `tenant` is on: the same on every node, in every
    /// version, for as long as the experiment keeps its name.
    pub fn arm(&self, tenant: &TenantId, user: &UserId) -> Arm {
        let digest = Sha256::new()
            .chain_update(self.name.as_bytes())
            .chain_update([0])
            .chain_update(tenant.as_str().as_bytes())
            .chain_update([0])
            .chain_update(user.as_str().as_bytes())
            .finalize();
        let mut head = [0u8; 8];
        head.copy_from_slice(&digest[..8]);
        if u64::from_be_bytes(head) % 100 < u64::from(self.treatment_percent) {
            Arm::Treatment
        } else {
            Arm::Control
        }
    }

    /// The strategy of `arm`.
    pub fn strategy(&self, arm: Arm) -> Strategy {
        match arm {
            Arm::Control => self.control,
            Arm::Treatment => self.treatment,
        }
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        let name_ok = (1..=64).contains(&self.name.len())
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            return Err((
                "matcher_experiment.name",
                "must be 1 to 64 letters, digits, '-', '_' or '.'".into(),
            ));
        }
        if self.treatment_percent > 100 {
            return Err((
                "matcher_experiment.treatment_percent",
                "must be 0 to 100".into(),
            ));
        }
        Ok(())
    }
}

/// A tenant's flags in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flags {
    /// Direct challenges answer (off: every challenge route answers 404
    /// `CHALLENGES_DISABLED`).
    pub challenges: bool,
    pub matcher_experiment: Option<Experiment>,
}

impl Flags {
    /// What a pool runs for `user` of `tenant`: the side they are on (none
    /// without an experiment) and its strategy.
    pub fn assign(&self, tenant: &TenantId, user: &UserId) -> (Option<Arm>, Strategy) {
        match &self.matcher_experiment {
            Some(e) => {
                let arm = e.arm(tenant, user);
                (Some(arm), e.strategy(arm))
            }
            None => (None, DEFAULT_STRATEGY),
        }
    }
}

/// Flags set at run time for a tenant: only those it sets; the others come
/// from the settings (`CHALLENGES_ENABLED`; no experiment).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagsPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenges: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matcher_experiment: Option<Experiment>,
}

impl FlagsPatch {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether these flags can run; else the field and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        self.matcher_experiment
            .as_ref()
            .map_or(Ok(()), Experiment::check)
    }

    /// `defaults` with the flags this sets.
    pub fn over(&self, defaults: &Flags) -> Flags {
        Flags {
            challenges: self.challenges.unwrap_or(defaults.challenges),
            matcher_experiment: self
                .matcher_experiment
                .clone()
                .or_else(|| defaults.matcher_experiment.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experiment(percent: u8) -> Experiment {
        Experiment {
            name: "hold-vs-window".into(),
            control: Strategy::Volume,
            treatment: Strategy::Window,
            treatment_percent: percent,
        }
    }

    #[test]
    fn an_arm_is_stable_and_shares_follow_the_percent() {
        let tenant = TenantId::parse("t1").unwrap();
        let e = experiment(30);
        let users: Vec<UserId> = (0..10_000)
            .map(|i| UserId::parse(&format!("u{i}")).unwrap())
            .collect();
        let treated = users
            .iter()
            .filter(|u| e.arm(&tenant, u) == Arm::Treatment)
            .count();
        assert!((2_700..3_300).contains(&treated), "{treated}");
        for u in &users[..100] {
            assert_eq!(e.arm(&tenant, u), e.arm(&tenant, u));
        }
        // Pinned (SHA-256 of name, tenant and user, first 8 bytes mod 100:
        // alice 25, bob 49): a change of the hash would move players
        // between arms mid-experiment.
        let user = |u: &str| UserId::parse(u).unwrap();
        assert_eq!(e.arm(&tenant, &user("alice")), Arm::Treatment);
        assert_eq!(e.arm(&tenant, &user("bob")), Arm::Control);
        assert!(
            users
                .iter()
                .all(|u| experiment(0).arm(&tenant, u) == Arm::Control)
        );
        assert!(
            users
                .iter()
                .all(|u| experiment(100).arm(&tenant, u) == Arm::Treatment)
        );
        // Another name deals afresh.
        let renamed = Experiment {
            name: "second".into(),
            ..e.clone()
        };
        let moved = users
            .iter()
            .filter(|u| renamed.arm(&tenant, u) != e.arm(&tenant, u))
            .count();
        assert!(moved > 1_000, "{moved}");
    }

    #[test]
    fn flags_set_override_the_defaults_and_bad_ones_name_their_field() {
        let defaults = Flags {
            challenges: true,
            matcher_experiment: None,
        };
        let patch = FlagsPatch {
            challenges: Some(false),
            ..FlagsPatch::default()
        };
        assert!(!patch.over(&defaults).challenges);
        assert!(FlagsPatch::default().over(&defaults).challenges);
        let bad = FlagsPatch {
            matcher_experiment: Some(Experiment {
                name: "no spaces".into(),
                ..experiment(10)
            }),
            ..FlagsPatch::default()
        };
        assert_eq!(bad.check().unwrap_err().0, "matcher_experiment.name");
        let bad = FlagsPatch {
            matcher_experiment: Some(experiment(101)),
            ..FlagsPatch::default()
        };
        assert_eq!(
            bad.check().unwrap_err().0,
            "matcher_experiment.treatment_percent"
        );
    }
}
