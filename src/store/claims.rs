//! The claim rule both SQL stores apply: a player is in one unfinished
//! match at most. Pure, so it is written (and tested) once; each store
//! reads the claims a batch touches, decides here, and writes the claims
//! and rows of the matches that were stored, in the same transaction.

use std::collections::HashMap;

use super::Claim;
use crate::domain::{MatchId, TenantId, UserId};

/// A match asking for its players.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub tenant: &'a TenantId,
    pub match_id: &'a MatchId,
    pub players: [&'a UserId; 2],
    /// Already stored: answered `Stored` and left as it is (its claims were
    /// settled when it was stored; it may have finished since).
    pub stored_before: bool,
    /// Rolled back by recovery: answered `Withdrawn`.
    pub withdrawn: bool,
}

/// Decides, in order, which asks may store their match. `held` maps each
/// (tenant, user) the batch names to the match of its live claim, if any.
/// A match decided `Stored` here claims both players for the asks after
/// it, so two matches of one player in one batch are never both stored.
pub fn decide(asks: &[Ask<'_>], held: &HashMap<(TenantId, UserId), MatchId>) -> Vec<Claim> {
    let mut taken: HashMap<(&TenantId, &UserId), MatchId> = HashMap::new();
    asks.iter()
        .map(|ask| {
            let Ask {
                tenant,
                match_id,
                players,
                stored_before,
                withdrawn,
            } = *ask;
            if stored_before {
                return Claim::Stored;
            }
            if withdrawn {
                return Claim::Withdrawn;
            }
            let busy: Vec<UserId> = players
                .iter()
                .filter(|&&user| {
                    let other = taken
                        .get(&(tenant, user))
                        .or_else(|| held.get(&(tenant.clone(), user.clone())));
                    other.is_some_and(|m| m != match_id)
                })
                .map(|&u| u.clone())
                .collect();
            if !busy.is_empty() || players[0] == players[1] {
                return Claim::Busy(if busy.is_empty() {
                    vec![players[0].clone()]
                } else {
                    busy
                });
            }
            for user in players {
                taken.insert((tenant, user), *match_id);
            }
            Claim::Stored
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> TenantId {
        TenantId::parse("t").unwrap()
    }

    fn u(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn ask<'a>(tenant: &'a TenantId, m: &'a MatchId, players: [&'a UserId; 2]) -> Ask<'a> {
        Ask {
            tenant,
            match_id: m,
            players,
            stored_before: false,
            withdrawn: false,
        }
    }

    #[test]
    fn a_player_with_a_live_claim_of_another_match_is_busy() {
        let (tenant, m1, m2) = (t(), MatchId::generate(), MatchId::generate());
        let (a, b, c) = (u("a"), u("b"), u("c"));
        let held = HashMap::from([((t(), u("a")), m1)]);
        let claims = decide(&[ask(&tenant, &m2, [&a, &c])], &held);
        assert_eq!(claims, vec![Claim::Busy(vec![u("a")])]);
        // Its own match's claim is no conflict (a retry after the intent).
        let claims = decide(&[ask(&tenant, &m1, [&a, &b])], &held);
        assert_eq!(claims, vec![Claim::Stored]);
    }

    #[test]
    fn two_matches_of_one_player_in_a_batch_store_only_the_first() {
        let (tenant, m1, m2, m3) = (
            t(),
            MatchId::generate(),
            MatchId::generate(),
            MatchId::generate(),
        );
        let (a, b, c, d) = (u("a"), u("b"), u("c"), u("d"));
        let claims = decide(
            &[
                ask(&tenant, &m1, [&a, &b]),
                ask(&tenant, &m2, [&c, &b]),
                ask(&tenant, &m3, [&c, &d]),
            ],
            &HashMap::new(),
        );
        assert_eq!(
            claims,
            vec![Claim::Stored, Claim::Busy(vec![u("b")]), Claim::Stored]
        );
    }

    #[test]
    fn a_match_stored_before_is_stored_whatever_the_claims_say() {
        let (tenant, m1, m2) = (t(), MatchId::generate(), MatchId::generate());
        let (a, b) = (u("a"), u("b"));
        // Finished since (its claims were lifted) or replayed: left as it is.
        let held = HashMap::from([((t(), u("a")), m2)]);
        let again = Ask {
            stored_before: true,
            ..ask(&tenant, &m1, [&a, &b])
        };
        let claims = decide(&[again], &held);
        assert_eq!(claims, vec![Claim::Stored]);
    }

    #[test]
    fn a_withdrawn_match_claims_nobody() {
        let (tenant, m1, m2) = (t(), MatchId::generate(), MatchId::generate());
        let (a, b, c) = (u("a"), u("b"), u("c"));
        let withdrawn = Ask {
            withdrawn: true,
            ..ask(&tenant, &m1, [&a, &b])
        };
        // Refused, and its players stay free for the next match of the batch.
        let claims = decide(&[withdrawn, ask(&tenant, &m2, [&a, &c])], &HashMap::new());
        assert_eq!(claims, vec![Claim::Withdrawn, Claim::Stored]);
    }

    #[test]
    fn a_player_cannot_play_themself_and_tenants_are_apart() {
        let (t1, t2, m1, m2) = (
            t(),
            TenantId::parse("other").unwrap(),
            MatchId::generate(),
            MatchId::generate(),
        );
        let a = u("a");
        let b = u("b");
        assert_eq!(
            decide(&[ask(&t1, &m1, [&a, &a])], &HashMap::new()),
            vec![Claim::Busy(vec![u("a")])]
        );
        let held = HashMap::from([((t(), u("a")), m1)]);
        assert_eq!(
            decide(&[ask(&t2, &m2, [&a, &b])], &held),
            vec![Claim::Stored]
        );
    }
}
