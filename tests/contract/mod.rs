//! Store contract suites: each trait's behaviour, written once, run against
//! every implementation by the macros below.

pub mod challenges;
pub mod durable;
pub mod queue;

use matchmaking_api::domain::{Millis, PoolKey, QueueEntry, TenantId, UserId};

pub const T0: Millis = 1_700_000_000_000;

pub fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

pub fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

pub fn pool(s: &str) -> PoolKey {
    s.parse().unwrap()
}

/// A fresh searching entry of `user` in `pool` of tenant `t`.
pub fn entry(t: &str, u: &str, pool_key: &str, rating: i32, at: Millis) -> QueueEntry {
    QueueEntry {
        request_id: Some("req-1".into()),
        ..QueueEntry::searching(tenant(t), user(u), pool(pool_key), rating, at)
    }
}

/// Generates one `#[tokio::test]` per contract case for a backend.
/// `$make` is an async expression yielding `Some(fixture)` (or `None` to
/// skip), where the fixture derefs to the store and keeps whatever the
/// store needs (a temp dir, a server) alive for the test.
#[macro_export]
macro_rules! contract_tests {
    ($suite:path, $make:expr, [$($case:ident),+ $(,)?]) => {
        $(
            #[tokio::test]
            async fn $case() {
                if let Some(store) = $make.await {
                    { use $suite as suite; suite::$case(&*store).await; }
                }
            }
        )+
    };
}

/// Generates, for each group of cases, a module of that name holding one
/// `#[tokio::test]` per case (see [`contract_tests!`]): the queue-store
/// contract reads per trait in the test names (`…::pairing::release_…`).
#[macro_export]
macro_rules! contract_groups {
    ($suite:path, $make:expr, $($group:ident [$($case:ident),+ $(,)?])+) => {
        $(
            mod $group {
                #[allow(unused_imports)]
                use super::*;
                $crate::contract_tests!($suite, $make, [$($case),+]);
            }
        )+
    };
}

/// Calls `$callback!` with every case of the QueueStore contract, grouped
/// by the part of the store each one is about: the one list, so no backend
/// can miss a case. (Most cases set up through other parts — a pairing case
/// joins first — so each takes the store whole, except where one part is
/// enough.)
#[macro_export]
macro_rules! queue_cases {
    ($($callback:ident)::+!($($args:tt)*)) => {
        $($callback)::+! { $($args)*
            entries [
                join_then_status_is_visible_to_its_owner_only,
                joining_again_answers_the_waiting_entry,
                an_entry_keeps_its_own_rating_range,
                an_entry_keeps_its_rating_deviation,
                an_entry_of_several_time_controls_is_listed_in_each_while_it_searches,
                an_aborted_games_entry_goes_back_to_searching_with_its_place,
                cancel_is_for_the_owner_of_a_searching_entry,
                touch_moves_up_the_last_seen_time_of_waiting_entries_only,
                every_way_an_entry_ends_is_announced_with_its_reason,
            ]
            pairing [
                waiting_lists_searching_entries_oldest_first,
                a_reserved_pair_cannot_be_cancelled_reserved_or_timed_out,
                commit_matches_both_and_guards_them_until_the_game_finishes,
                a_commit_of_many_matches_changes_each_entry_once,
                release_puts_both_back_with_their_priority,
                time_out_changes_only_searching_entries,
                cancel_entries_ends_only_searching_entries,
                stale_reservations_are_found_after_their_deadline,
                a_match_across_two_pools_is_reserved_committed_and_released_in_each,
            ]
            guards [
                the_guard_lapses_at_its_deadline,
                holding_players_is_all_or_nothing,
                nobody_is_admitted_until_the_guards_are_intact,
            ]
            stats [
                pool_stats_count_waiting_matches_and_time_outs,
            ]
            leases [
                a_pool_lease_has_one_holder_until_released_or_lapsed,
            ]
            upkeep [
                purge_forgets_old_finished_entries_only,
            ]
        }
    };
}

/// Calls `$callback!` with every case of the durable-store contracts.
#[macro_export]
macro_rules! durable_cases {
    ($($callback:ident)::+!($($args:tt)*)) => {
        $($callback)::+! { $($args)* [
            a_match_is_found_by_id_entry_and_user,
            inserting_a_match_twice_keeps_one_and_moves_colors_once,
            finishing_a_game_ends_its_match_once,
            ratings_default_to_1500_and_merge_by_speed,
            ratings_are_kept_per_variant_and_merge_by_pool,
            ratings_keep_their_deviations_and_a_bare_rating_keeps_one,
            ratings_changed_since_lists_exactly_the_players_with_a_rating,
            ratings_changed_since_lists_only_later_changes,
            many_matches_insert_in_one_batch,
            a_player_in_an_unfinished_match_is_not_claimed_again,
            a_claim_lapses_after_the_guard_time,
            an_intent_claims_its_players_until_its_record_replaces_it,
            an_intent_is_dropped_by_its_owner_only_and_taken_over_when_stale,
            a_withdrawn_match_is_never_stored_and_a_stored_one_never_withdrawn,
            the_first_idempotent_answer_wins,
            a_key_in_flight_belongs_to_one_request_until_settled,
            purge_expired_drops_expired_answers_and_lapsed_claims,
            the_audit_log_is_read_per_tenant_newest_first_filtered_and_paged,
            configuration_changes_with_its_version_and_audit,
            blocks_and_restrictions_are_kept_and_read_among_players,
            recent_opponents_are_read_newest_first_within_bounds,
            a_no_show_cooldown_is_kept_with_its_match_while_it_runs,
        ] }
    };
}

/// Calls `$callback!` with every case of the ChallengeStore contract.
#[macro_export]
macro_rules! challenge_cases {
    ($($callback:ident)::+!($($args:tt)*)) => {
        $($callback)::+! { $($args)* [
            a_challenge_round_trips_within_its_tenant,
            pending_outgoing_challenges_are_bounded,
            transitions_apply_once_and_only_from_their_status,
            an_expired_challenge_cannot_leave_pending_and_is_swept,
            pending_lists_split_incoming_from_outgoing,
            stale_accepts_are_found_by_age,
        ] }
    };
}
