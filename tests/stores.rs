//! Runs the store contract suites against the embedded backends.

mod contract;
mod support;

mod memory_queue_store {
    use matchmaking_api::store::memory::MemoryQueueStore;

    async fn make() -> Option<Box<MemoryQueueStore>> {
        Some(Box::new(MemoryQueueStore::new()))
    }

    crate::contract_tests!(
        crate::contract::queue,
        make(),
        [
            join_then_status_is_visible_to_its_owner_only,
            joining_again_answers_the_waiting_entry,
            cancel_is_for_the_owner_of_a_searching_entry,
            waiting_lists_searching_entries_oldest_first,
            a_reserved_pair_cannot_be_cancelled_reserved_or_timed_out,
            commit_matches_both_and_guards_them_until_the_game_finishes,
            the_guard_lapses_at_its_deadline,
            release_puts_both_back_with_their_priority,
            time_out_changes_only_searching_entries,
            stale_reservations_are_found_after_their_deadline,
            the_first_idempotent_answer_wins,
            purge_forgets_old_finished_entries_only,
            holding_players_is_all_or_nothing,
            a_pool_lease_has_one_holder_until_released_or_lapsed,
        ]
    );
}

mod redis_queue_store {
    use matchmaking_api::store::redis::RedisQueueStore;

    use crate::support::{RedisPrefix, redis_url};

    /// A Redis store under a key prefix of its own, deleted with it.
    struct TempRedis {
        store: RedisQueueStore,
        _prefix: RedisPrefix,
    }

    impl std::ops::Deref for TempRedis {
        type Target = RedisQueueStore;

        fn deref(&self) -> &RedisQueueStore {
            &self.store
        }
    }

    async fn make() -> Option<TempRedis> {
        let prefix = RedisPrefix::create().await?;
        let store = RedisQueueStore::connect(&redis_url(), false, &prefix.prefix, 3_600_000)
            .await
            .unwrap();
        Some(TempRedis {
            store,
            _prefix: prefix,
        })
    }

    crate::contract_tests!(
        crate::contract::queue,
        make(),
        [
            join_then_status_is_visible_to_its_owner_only,
            joining_again_answers_the_waiting_entry,
            cancel_is_for_the_owner_of_a_searching_entry,
            waiting_lists_searching_entries_oldest_first,
            a_reserved_pair_cannot_be_cancelled_reserved_or_timed_out,
            commit_matches_both_and_guards_them_until_the_game_finishes,
            the_guard_lapses_at_its_deadline,
            release_puts_both_back_with_their_priority,
            time_out_changes_only_searching_entries,
            stale_reservations_are_found_after_their_deadline,
            the_first_idempotent_answer_wins,
            purge_forgets_old_finished_entries_only,
            holding_players_is_all_or_nothing,
            a_pool_lease_has_one_holder_until_released_or_lapsed,
        ]
    );
}

mod sqlite_durable_store {
    use matchmaking_api::store::sqlite::SqliteStore;

    /// A SQLite store in a temp dir that lives as long as the store.
    struct TempSqlite {
        store: SqliteStore,
        _dir: tempfile::TempDir,
    }

    impl std::ops::Deref for TempSqlite {
        type Target = SqliteStore;

        fn deref(&self) -> &SqliteStore {
            &self.store
        }
    }

    async fn make() -> Option<TempSqlite> {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        let store = SqliteStore::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        Some(TempSqlite { store, _dir: dir })
    }

    crate::contract_tests!(
        crate::contract::durable,
        make(),
        [
            a_match_is_found_by_id_entry_and_user,
            inserting_a_match_twice_keeps_one_and_moves_colors_once,
            finishing_a_game_ends_its_match_once,
            ratings_default_to_1500_and_merge_by_speed,
            all_ratings_lists_exactly_the_players_with_a_rating,
            many_matches_insert_in_one_batch,
        ]
    );

    crate::contract_tests!(
        crate::contract::challenges,
        make(),
        [
            a_challenge_round_trips_within_its_tenant,
            pending_outgoing_challenges_are_bounded,
            transitions_apply_once_and_only_from_their_status,
            an_expired_challenge_cannot_leave_pending_and_is_swept,
            pending_lists_split_incoming_from_outgoing,
            stale_accepts_are_found_by_age,
        ]
    );
}

mod postgres_durable_store {
    use matchmaking_api::store::postgres::PgStore;

    use crate::support::PgSchema;

    /// A PostgreSQL store in a schema of its own, dropped with it.
    struct TempPg {
        store: PgStore,
        _schema: PgSchema,
    }

    impl std::ops::Deref for TempPg {
        type Target = PgStore;

        fn deref(&self) -> &PgStore {
            &self.store
        }
    }

    async fn make() -> Option<TempPg> {
        let schema = PgSchema::create().await?;
        let store = PgStore::connect(&schema.url()).await.unwrap();
        store.migrate().await.unwrap();
        Some(TempPg {
            store,
            _schema: schema,
        })
    }
    crate::contract_tests!(
        crate::contract::durable,
        make(),
        [
            a_match_is_found_by_id_entry_and_user,
            inserting_a_match_twice_keeps_one_and_moves_colors_once,
            finishing_a_game_ends_its_match_once,
            ratings_default_to_1500_and_merge_by_speed,
            all_ratings_lists_exactly_the_players_with_a_rating,
            many_matches_insert_in_one_batch,
        ]
    );

    crate::contract_tests!(
        crate::contract::challenges,
        make(),
        [
            a_challenge_round_trips_within_its_tenant,
            pending_outgoing_challenges_are_bounded,
            transitions_apply_once_and_only_from_their_status,
            an_expired_challenge_cannot_leave_pending_and_is_swept,
            pending_lists_split_incoming_from_outgoing,
            stale_accepts_are_found_by_age,
        ]
    );
}

/// The queue-store contract on a 3-master Redis Cluster the test starts: a
/// script that touches keys of two slots fails here, not in production.
mod redis_cluster_queue_store {
    use matchmaking_api::store::redis::RedisQueueStore;

    use crate::contract::queue as suite;
    use crate::support::OwnRedisCluster;

    #[tokio::test]
    async fn the_queue_store_contract_holds_on_redis_cluster() {
        let Some(cluster) = tokio::task::spawn_blocking(OwnRedisCluster::start)
            .await
            .unwrap()
        else {
            return;
        };
        let url = cluster.url();
        let store = || async {
            let prefix = format!("c{}", ulid::Ulid::new());
            Box::new(
                RedisQueueStore::connect(&url, true, &prefix, 3_600_000)
                    .await
                    .unwrap(),
            )
        };
        suite::join_then_status_is_visible_to_its_owner_only(&*store().await).await;
        suite::joining_again_answers_the_waiting_entry(&*store().await).await;
        suite::cancel_is_for_the_owner_of_a_searching_entry(&*store().await).await;
        suite::waiting_lists_searching_entries_oldest_first(&*store().await).await;
        suite::a_reserved_pair_cannot_be_cancelled_reserved_or_timed_out(&*store().await).await;
        suite::commit_matches_both_and_guards_them_until_the_game_finishes(&*store().await).await;
        suite::the_guard_lapses_at_its_deadline(&*store().await).await;
        suite::release_puts_both_back_with_their_priority(&*store().await).await;
        suite::time_out_changes_only_searching_entries(&*store().await).await;
        suite::stale_reservations_are_found_after_their_deadline(&*store().await).await;
        suite::the_first_idempotent_answer_wins(&*store().await).await;
        suite::purge_forgets_old_finished_entries_only(&*store().await).await;
        suite::holding_players_is_all_or_nothing(&*store().await).await;
        suite::a_pool_lease_has_one_holder_until_released_or_lapsed(&*store().await).await;
    }
}
