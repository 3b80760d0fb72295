//! Runs the store contract suites against the embedded backends.

mod contract;
mod support;

mod memory_queue_store {
    use matchmaking_api::store::memory::MemoryQueueStore;

    async fn make() -> Option<Box<MemoryQueueStore>> {
        Some(Box::new(MemoryQueueStore::new()))
    }

    crate::queue_cases!(crate::contract_groups!(crate::contract::queue, make(),));
}

mod redis_queue_store {
    use matchmaking_api::store::redis::RedisQueueStore;

    use crate::support::{Listening, RedisPrefix, listening, redis_url};

    /// A Redis store under a key prefix of its own, deleted with it, and
    /// its node's subscription (entries it ends are announced back).
    struct TempRedis {
        store: RedisQueueStore,
        _listening: Listening,
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
        let _listening = listening(&store, &redis_url(), &prefix.prefix).await;
        Some(TempRedis {
            store,
            _listening,
            _prefix: prefix,
        })
    }

    crate::queue_cases!(crate::contract_groups!(crate::contract::queue, make(),));
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

    crate::durable_cases!(crate::contract_tests!(crate::contract::durable, make(),));

    crate::challenge_cases!(crate::contract_tests!(crate::contract::challenges, make(),));
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
    crate::durable_cases!(crate::contract_tests!(crate::contract::durable, make(),));

    crate::challenge_cases!(crate::contract_tests!(crate::contract::challenges, make(),));
}

/// The queue-store contract on a 3-master Redis Cluster the test starts: a
/// script that touches keys of two slots fails here, not in production.
mod redis_cluster_queue_store {
    use matchmaking_api::store::redis::RedisQueueStore;

    use crate::contract::queue as suite;
    use crate::support::{OwnRedisCluster, listening};

    #[tokio::test]
    async fn the_queue_store_contract_holds_on_redis_cluster() {
        let Some(cluster) = tokio::task::spawn_blocking(OwnRedisCluster::start)
            .await
            .unwrap()
        else {
            return;
        };
        let url = cluster.url();
        let first_node = url.split(',').next().unwrap().to_owned();
        let store = || async {
            let prefix = format!("c{}", ulid::Ulid::new());
            let store = RedisQueueStore::connect(&url, true, &prefix, 3_600_000)
                .await
                .unwrap();
            // PUBLISH reaches every node of a Cluster: one is listened to.
            let listening = listening(&store, &first_node, &prefix).await;
            (Box::new(store), listening)
        };
        macro_rules! run_all {
            ($($group:ident [$($case:ident),+ $(,)?])+) => {
                $($(suite::$case(&*store().await.0).await;)+)+
            };
        }
        crate::queue_cases!(run_all!());
    }
}
