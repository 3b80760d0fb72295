//! SQLite [`DurableStore`] (through sqlx): the embedded default's durable
//! records, in a file in `DATA_DIR`, in WAL mode.
//!
//! Writes go through one connection owned by one task ([`writer`]): it
//! begins and ends every transaction itself, starts over on a fresh
//! connection after any failure, group-commits match writes, keeps the WAL
//! bounded, and tells the service when the disk stops taking writes. Reads
//! use a small pool of `query_only` connections (a write on one is an
//! error, never a second writer), which never wait for the writer.

mod challenges;
mod matches;
mod writer;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, SqlitePool};
use tokio::sync::oneshot;

use self::matches::{MatchJob, MatchWork};
use self::writer::{Job, WriterHandle};
use super::config_sql;
use super::rows::{
    self, AnswerRow, AuditRow, COOLDOWN_COLUMNS, INTENT_COLUMNS, IntentRow, MATCH_COLUMNS,
    MatchRow, PLAYER_RATINGS_COLUMNS, PlayerRatingsRow, RATINGS_COLUMNS, RatingsRow,
};
use super::{
    AuditEvent, AuditQuery, AuditStore, Claim, Cooldown, DurableStore, IdempotencyScope,
    IdempotencyStore, MatchStore, RatingChange, RatingStore, Ratings, StoreError, StoreResult,
    StoredAnswer, WriteFailure, WriteHealth, idempotency_sql,
};
use super::{
    BlockChange, ConfigRows, ConfigScope, ConfigStore, RelationStore, Relations, relations_sql,
};
use crate::domain::{
    ColorHistory, GameId, MatchId, MatchIntent, MatchRecord, Millis, QueueEntryId, Speed, TenantId,
    UserId,
};

pub use writer::WAL_RESTART_FRAMES;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Rows per multi-row INSERT (SQLite allows 32766 bound values).
const ROWS_PER_INSERT: usize = 500;

/// How long a statement waits for a lock another connection holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// The WAL file is cut back to this size whenever it is reset (bytes).
pub const JOURNAL_SIZE_LIMIT: u64 = 16 * 1024 * 1024;

/// Now in epoch milliseconds on the database's clock.
const CHANGED_NOW: &str = "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)";

#[derive(Clone)]
pub struct SqliteStore {
    reads: SqlitePool,
    writer: WriterHandle,
    health: Arc<WriteHealth>,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                StoreError::Corrupt(e.to_string())
            }
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path`).
    pub async fn connect(url: &str) -> StoreResult<Self> {
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Err(StoreError::Unavailable(
                "an in-memory SQLite database cannot be shared by the writer and the readers; \
                 use a file"
                    .into(),
            ));
        }
        let base = SqliteConnectOptions::from_str(url)?
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            // 64 MiB of page cache; statement journals in memory.
            .pragma("cache_size", "-16384")
            .pragma("temp_store", "MEMORY")
            // Checkpoints run in the writer task, between transactions,
            // never inside whichever commit crosses a threshold.
            .pragma("wal_autocheckpoint", "0");
        let writes = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .pragma("journal_size_limit", JOURNAL_SIZE_LIMIT.to_string());
        let health = Arc::new(WriteHealth::default());
        let writer = WriterHandle::start(writes, health.clone()).await?;
        // Readers do point reads: a small page cache each (the writer's is
        // the large one).
        let reads = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(2))
            .connect_with(
                base.pragma("query_only", "true")
                    .pragma("cache_size", "-4096"),
            )
            .await?;
        Ok(Self {
            reads,
            writer,
            health,
        })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> StoreResult<()> {
        self.writer.migrate().await
    }

    async fn one_record(&self, sql: &str, binds: &[&str]) -> StoreResult<Option<MatchRecord>> {
        let mut query = sqlx::query_as::<_, MatchRow>(sql);
        for b in binds {
            query = query.bind(*b);
        }
        query
            .fetch_optional(&self.reads)
            .await?
            .map(MatchRecord::try_from)
            .transpose()
    }

    /// Hands a match write to the writer's group commit.
    async fn match_job(&self, work: MatchWork, live_since: Millis) -> StoreResult<Vec<Claim>> {
        let (done, answer) = oneshot::channel();
        self.writer.send(Job::Matches(MatchJob {
            work,
            live_since,
            done,
        }))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?
    }
}

#[async_trait]
impl MatchStore for SqliteStore {
    async fn claim_matches(
        &self,
        intents: &[MatchIntent],
        owner: &str,
        attempt_ms: Millis,
        live_since: Millis,
    ) -> StoreResult<Vec<Claim>> {
        if intents.is_empty() {
            return Ok(Vec::new());
        }
        let work = MatchWork::Claim {
            intents: intents.to_vec(),
            owner: owner.to_owned(),
            attempt_ms,
        };
        self.match_job(work, live_since).await
    }

    async fn insert_matches(
        &self,
        records: &[MatchRecord],
        audit: &[AuditEvent],
        live_since: Millis,
    ) -> StoreResult<Vec<Claim>> {
        if records.is_empty() && audit.is_empty() {
            return Ok(Vec::new());
        }
        let work = MatchWork::Insert {
            records: records.to_vec(),
            audit: audit.to_vec(),
        };
        self.match_job(work, live_since).await
    }

    async fn withdraw_match(&self, _tenant: &TenantId, match_id: &MatchId) -> StoreResult<bool> {
        // The single writer orders this against every claim and record.
        // (PostgreSQL writes and reads in one statement with a data-modifying
        // CTE under the claims lock; SQLite has no such CTE, so the same
        // insert and a read run here, one after the other on the writer.)
        let id = match_id.to_string();
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    sqlx::query(&format!(
                        "INSERT INTO withdrawn_matches (match_id, withdrawn_at) \
                         SELECT ?1, {CHANGED_NOW} \
                         WHERE NOT EXISTS (SELECT 1 FROM match_records WHERE match_id = ?1) \
                           AND NOT EXISTS (SELECT 1 FROM match_intents WHERE match_id = ?1) \
                         ON CONFLICT (match_id) DO NOTHING"
                    ))
                    .bind(&id)
                    .execute(&mut *conn)
                    .await?;
                    let withdrawn: bool = sqlx::query_scalar(
                        "SELECT EXISTS (SELECT 1 FROM withdrawn_matches WHERE match_id = ?)",
                    )
                    .bind(&id)
                    .fetch_one(&mut *conn)
                    .await?;
                    Ok(withdrawn)
                })
            })
            .await
    }

    async fn drop_intent(&self, match_id: &MatchId, owner: &str) -> StoreResult<bool> {
        let (id, owner) = (match_id.to_string(), owner.to_owned());
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    let players: Option<(String, String, String)> = sqlx::query_as(
                        "DELETE FROM match_intents WHERE match_id = ? AND owner = ? \
                         RETURNING tenant_id, white_user_id, black_user_id",
                    )
                    .bind(&id)
                    .bind(&owner)
                    .fetch_optional(&mut *conn)
                    .await?;
                    let Some((tenant, white, black)) = players else {
                        return Ok(false);
                    };
                    lift_claims(conn, &tenant, [&white, &black], &id).await?;
                    Ok(true)
                })
            })
            .await
    }

    async fn yield_intent(&self, match_id: &MatchId, owner: &str) -> StoreResult<()> {
        let (id, owner) = (match_id.to_string(), owner.to_owned());
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    sqlx::query(&format!(
                        "UPDATE match_intents SET attempt_until = {CHANGED_NOW} - 1 \
                         WHERE match_id = ? AND owner = ?"
                    ))
                    .bind(&id)
                    .bind(&owner)
                    .execute(&mut *conn)
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    async fn take_stale_intents(
        &self,
        owner: &str,
        attempt_ms: Millis,
        limit: u32,
    ) -> StoreResult<Vec<MatchIntent>> {
        let owner = owner.to_owned();
        let rows: Vec<IntentRow> = self
            .writer
            .write(move |conn| {
                Box::pin(async move {
                    let sql = format!(
                        "UPDATE match_intents SET owner = ?1, attempt_until = {CHANGED_NOW} + ?2 \
                         WHERE match_id IN (SELECT match_id FROM match_intents \
                                            WHERE attempt_until < {CHANGED_NOW} \
                                            ORDER BY attempt_until LIMIT ?3) \
                         RETURNING {INTENT_COLUMNS}"
                    );
                    Ok(sqlx::query_as::<_, IntentRow>(&sql)
                        .bind(&owner)
                        .bind(attempt_ms)
                        .bind(i64::from(limit))
                        .fetch_all(&mut *conn)
                        .await?)
                })
            })
            .await?;
        rows::intents(rows)
    }

    async fn intent(&self, match_id: &MatchId) -> StoreResult<Option<MatchIntent>> {
        let sql = format!("SELECT {INTENT_COLUMNS} FROM match_intents WHERE match_id = ?");
        sqlx::query_as::<_, IntentRow>(&sql)
            .bind(match_id.to_string())
            .fetch_optional(&self.reads)
            .await?
            .map(MatchIntent::try_from)
            .transpose()
    }

    async fn intents(&self) -> StoreResult<Vec<MatchIntent>> {
        let sql = format!("SELECT {INTENT_COLUMNS} FROM match_intents ORDER BY created_at");
        rows::intents(sqlx::query_as(&sql).fetch_all(&self.reads).await?)
    }

    async fn match_by_id(&self, id: &MatchId) -> StoreResult<Option<MatchRecord>> {
        let sql = format!("SELECT {MATCH_COLUMNS} FROM match_records WHERE match_id = ?");
        self.one_record(&sql, &[&id.to_string()]).await
    }

    async fn match_by_game(
        &self,
        tenant: &TenantId,
        game: &GameId,
    ) -> StoreResult<Option<MatchRecord>> {
        let sql = format!(
            "SELECT {MATCH_COLUMNS} FROM match_records WHERE tenant_id = ? AND game_id = ?"
        );
        self.one_record(&sql, &[tenant.as_str(), game.as_str()])
            .await
    }

    async fn match_by_entry(
        &self,
        tenant: &TenantId,
        entry: &QueueEntryId,
    ) -> StoreResult<Option<MatchRecord>> {
        // Differs from PostgreSQL on purpose: SQLite's planner does not use
        // two indexes for one OR, so each side is its own indexed lookup.
        let sql = format!(
            "SELECT {MATCH_COLUMNS} FROM match_records \
             WHERE match_id IN (SELECT match_id FROM match_records WHERE white_entry_id = ?1 \
                                UNION SELECT match_id FROM match_records WHERE black_entry_id = ?1) \
               AND tenant_id = ?2"
        );
        self.one_record(&sql, &[&entry.to_string(), tenant.as_str()])
            .await
    }

    async fn active_match(
        &self,
        tenant: &TenantId,
        user: &UserId,
        since: Millis,
    ) -> StoreResult<Option<MatchRecord>> {
        let sql = format!(
            "SELECT {MATCH_COLUMNS} FROM match_records \
             WHERE tenant_id = ?1 AND (white_user_id = ?2 OR black_user_id = ?2) \
               AND created_at >= ?3 AND finished_at IS NULL \
             ORDER BY created_at DESC LIMIT 1"
        );
        let row = sqlx::query_as::<_, MatchRow>(&sql)
            .bind(tenant.as_str())
            .bind(user.as_str())
            .bind(since)
            .fetch_optional(&self.reads)
            .await?;
        row.map(MatchRecord::try_from).transpose()
    }

    async fn unfinished_matches(&self, since: Millis) -> StoreResult<Vec<MatchRecord>> {
        let sql = format!(
            "SELECT {MATCH_COLUMNS} FROM match_records \
             WHERE finished_at IS NULL AND created_at >= ? ORDER BY created_at"
        );
        rows::records(
            sqlx::query_as(&sql)
                .bind(since)
                .fetch_all(&self.reads)
                .await?,
        )
    }

    async fn record_no_show(
        &self,
        tenant: &TenantId,
        game: &GameId,
        user: &UserId,
        until: Millis,
    ) -> StoreResult<bool> {
        let (tenant, game, user) = (tenant.to_string(), game.to_string(), user.to_string());
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE match_records SET no_show_user_id = ?1, cooldown_until = ?2 \
                         WHERE tenant_id = ?3 AND game_id = ?4 AND no_show_user_id IS NULL",
                    )
                    .bind(&user)
                    .bind(until)
                    .bind(&tenant)
                    .bind(&game)
                    .execute(&mut *conn)
                    .await?;
                    let known: Option<i64> = sqlx::query_scalar(
                        "SELECT 1 FROM match_records WHERE tenant_id = ?1 AND game_id = ?2",
                    )
                    .bind(&tenant)
                    .bind(&game)
                    .fetch_optional(&mut *conn)
                    .await?;
                    Ok(known.is_some())
                })
            })
            .await
    }

    async fn cooldowns(&self, now: Millis) -> StoreResult<Vec<Cooldown>> {
        let sql = format!(
            "SELECT {COOLDOWN_COLUMNS} FROM match_records WHERE cooldown_until > ? ORDER BY cooldown_until"
        );
        let rows: Vec<rows::CooldownRow> = sqlx::query_as(&sql)
            .bind(now)
            .fetch_all(&self.reads)
            .await?;
        rows.into_iter().map(Cooldown::try_from).collect()
    }

    async fn finish_match(
        &self,
        tenant: &TenantId,
        game: &GameId,
        at: Millis,
    ) -> StoreResult<Option<MatchRecord>> {
        let (tenant, game) = (tenant.to_string(), game.to_string());
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE match_records SET finished_at = ?1 \
                         WHERE tenant_id = ?2 AND game_id = ?3 AND finished_at IS NULL",
                    )
                    .bind(at)
                    .bind(&tenant)
                    .bind(&game)
                    .execute(&mut *conn)
                    .await?;
                    let sql = format!(
                        "SELECT {MATCH_COLUMNS} FROM match_records WHERE tenant_id = ? AND game_id = ?"
                    );
                    let row = sqlx::query_as::<_, MatchRow>(&sql)
                        .bind(&tenant)
                        .bind(&game)
                        .fetch_optional(&mut *conn)
                        .await?;
                    let record = row.map(MatchRecord::try_from).transpose()?;
                    if let Some(r) = &record {
                        let players = [r.white.user_id.as_str(), r.black.user_id.as_str()];
                        lift_claims(conn, &tenant, players, &r.match_id.to_string()).await?;
                    }
                    Ok(record)
                })
            })
            .await
    }

    async fn recent_opponents(
        &self,
        tenant: &TenantId,
        users: &[UserId],
        since: Millis,
        per_user: u32,
    ) -> StoreResult<HashMap<UserId, Vec<(UserId, Millis)>>> {
        let mut rows = Vec::new();
        for chunk in users.chunks(ROWS_PER_INSERT / 2) {
            let mut q = QueryBuilder::new("");
            for (n, (me, them)) in [
                ("white_user_id", "black_user_id"),
                ("black_user_id", "white_user_id"),
            ]
            .into_iter()
            .enumerate()
            {
                if n > 0 {
                    q.push(" UNION ALL ");
                }
                q.push(format!(
                    "SELECT {me}, {them}, created_at FROM match_records WHERE tenant_id = "
                ))
                .push_bind(tenant.as_str())
                .push(" AND created_at >= ")
                .push_bind(since)
                .push(format!(" AND {me} IN ("));
                let mut list = q.separated(", ");
                for u in chunk {
                    list.push_bind(u.as_str());
                }
                q.push(")");
            }
            rows.extend(
                q.build_query_as::<(String, String, i64)>()
                    .fetch_all(&self.reads)
                    .await?,
            );
        }
        Ok(relations_sql::newest_opponents(rows, per_user))
    }

    async fn color_histories(
        &self,
        tenant: &TenantId,
        users: &[UserId],
    ) -> StoreResult<HashMap<UserId, ColorHistory>> {
        let mut histories = HashMap::with_capacity(users.len());
        for chunk in users.chunks(ROWS_PER_INSERT) {
            let mut q = users_in(
                "SELECT user_id, color_balance, color_streak FROM players WHERE tenant_id = ",
                tenant,
                chunk,
            );
            for (user, balance, streak) in q
                .build_query_as::<(String, i64, i64)>()
                .fetch_all(&self.reads)
                .await?
            {
                if let Ok(user) = UserId::parse(&user) {
                    let narrow = |v: i64| v.clamp(i32::MIN.into(), i32::MAX.into()) as i32;
                    histories.insert(
                        user,
                        ColorHistory {
                            balance: narrow(balance),
                            streak: narrow(streak),
                        },
                    );
                }
            }
        }
        Ok(histories)
    }
}

#[async_trait]
impl RatingStore for SqliteStore {
    async fn ratings(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Ratings> {
        let row = sqlx::query_as::<_, RatingsRow>(&format!(
            "SELECT {RATINGS_COLUMNS} FROM players WHERE tenant_id = ? AND user_id = ?"
        ))
        .bind(tenant.as_str())
        .bind(user.as_str())
        .fetch_optional(&self.reads)
        .await?;
        row.map(Ratings::try_from)
            .transpose()
            .map(Option::unwrap_or_default)
    }

    async fn set_ratings(
        &self,
        tenant: &TenantId,
        user: &UserId,
        update: &Ratings,
    ) -> StoreResult<Ratings> {
        let (tenant, user, update) = (tenant.to_string(), user.to_string(), *update);
        let row: RatingsRow = self
            .writer
            .write(move |conn| {
                Box::pin(async move {
                    Ok(sqlx::query_as::<_, RatingsRow>(&format!(
                        "INSERT INTO players (tenant_id, user_id, bullet, blitz, rapid, classical, variant_ratings, rating_deviations, ratings_changed_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, {CHANGED_NOW}) \
                         ON CONFLICT (tenant_id, user_id) DO UPDATE SET \
                           ratings_changed_at = excluded.ratings_changed_at, \
                           bullet = COALESCE(excluded.bullet, bullet), \
                           blitz = COALESCE(excluded.blitz, blitz), \
                           rapid = COALESCE(excluded.rapid, rapid), \
                           classical = COALESCE(excluded.classical, classical), \
                           variant_ratings = CASE WHEN excluded.variant_ratings IS NULL THEN variant_ratings \
                             ELSE json_patch(COALESCE(variant_ratings, '{{}}'), excluded.variant_ratings) END, \
                           rating_deviations = CASE WHEN excluded.rating_deviations IS NULL THEN rating_deviations \
                             ELSE json_patch(COALESCE(rating_deviations, '{{}}'), excluded.rating_deviations) END \
                         RETURNING {RATINGS_COLUMNS}"
                    ))
                    .bind(&tenant)
                    .bind(&user)
                    .bind(update.standard(Speed::Bullet))
                    .bind(update.standard(Speed::Blitz))
                    .bind(update.standard(Speed::Rapid))
                    .bind(update.standard(Speed::Classical))
                    .bind(update.variants_json())
                    .bind(update.deviations_json())
                    .fetch_one(&mut *conn)
                    .await?)
                })
            })
            .await?;
        row.try_into()
    }

    async fn ratings_changed_since(&self, since: Option<Millis>) -> StoreResult<Vec<RatingChange>> {
        let rows = sqlx::query_as::<_, PlayerRatingsRow>(&format!(
            "SELECT {PLAYER_RATINGS_COLUMNS} FROM players \
             WHERE ratings_changed_at > ?"
        ))
        .bind(since.unwrap_or(Millis::MIN))
        .fetch_all(&self.reads)
        .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn record(&self, events: &[AuditEvent]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let events = events.to_vec();
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    let events: Vec<&AuditEvent> = events.iter().collect();
                    matches::insert_audit(conn, &events).await
                })
            })
            .await
    }

    async fn events_about(&self, subject: &str, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        let rows = sqlx::query_as::<_, AuditRow>(
            "SELECT at, tenant_id, kind, subject, detail FROM audit_events \
             WHERE subject = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(subject)
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await?;
        rows.into_iter().map(AuditEvent::try_from).collect()
    }

    async fn audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<(i64, AuditEvent)>> {
        rows::audit_events(&self.reads, query).await
    }
}

#[async_trait]
impl IdempotencyStore for SqliteStore {
    async fn idempotent_answer(
        &self,
        scope: &IdempotencyScope,
        now: Millis,
    ) -> StoreResult<Option<StoredAnswer>> {
        sqlx::query_as::<_, AnswerRow>(
            "SELECT status, body, fingerprint FROM idempotent_answers \
             WHERE tenant_id = ? AND user_id = ? AND key = ? AND expires_at > ?",
        )
        .bind(scope.tenant_id.as_str())
        .bind(scope.user_id.as_str())
        .bind(&scope.key)
        .bind(now)
        .fetch_optional(&self.reads)
        .await?
        .map(StoredAnswer::try_from)
        .transpose()
    }

    async fn save_idempotent_answer(
        &self,
        scope: &IdempotencyScope,
        answer: StoredAnswer,
        expires_at: Millis,
        now: Millis,
    ) -> StoreResult<StoredAnswer> {
        let scope = scope.clone();
        let row: AnswerRow = self
            .writer
            .write(move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO idempotent_answers (tenant_id, user_id, key, status, body, expires_at, fingerprint) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?8) \
                         ON CONFLICT (tenant_id, user_id, key) DO UPDATE \
                         SET status = excluded.status, body = excluded.body, expires_at = excluded.expires_at, \
                             fingerprint = excluded.fingerprint \
                         WHERE idempotent_answers.expires_at <= ?7",
                    )
                    .bind(scope.tenant_id.as_str())
                    .bind(scope.user_id.as_str())
                    .bind(&scope.key)
                    .bind(i32::from(answer.status))
                    .bind(&answer.body)
                    .bind(expires_at)
                    .bind(now)
                    .bind(&answer.fingerprint)
                    .execute(&mut *conn)
                    .await?;
                    Ok(sqlx::query_as::<_, AnswerRow>(
                        "SELECT status, body, fingerprint FROM idempotent_answers \
                         WHERE tenant_id = ? AND user_id = ? AND key = ?",
                    )
                    .bind(scope.tenant_id.as_str())
                    .bind(scope.user_id.as_str())
                    .bind(&scope.key)
                    .fetch_one(&mut *conn)
                    .await?)
                })
            })
            .await?;
        row.try_into()
    }

    async fn settle_idempotent_answer(
        &self,
        scope: &IdempotencyScope,
        claim: &str,
        answer: Option<StoredAnswer>,
        expires_at: Millis,
    ) -> StoreResult<()> {
        let statement = idempotency_sql::settle(scope, claim, answer.as_ref(), expires_at);
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    statement.execute(&mut *conn).await?;
                    Ok(())
                })
            })
            .await
    }
}

#[async_trait]
impl ConfigStore for SqliteStore {
    async fn config(&self) -> StoreResult<ConfigRows> {
        // One transaction: the rows are those of the version read.
        let mut tx = self.reads.begin().await?;
        let read = config_sql::rows::<sqlx::Sqlite>(&mut tx).await?;
        tx.commit().await?;
        Ok(read)
    }

    async fn config_version(&self) -> StoreResult<i64> {
        let (version,): (i64,) = sqlx::query_as(config_sql::VERSION)
            .fetch_one(&self.reads)
            .await?;
        Ok(version)
    }

    async fn change_config(
        &self,
        tenant: &TenantId,
        scope: ConfigScope,
        body: Option<serde_json::Value>,
        audit: AuditEvent,
    ) -> StoreResult<Option<serde_json::Value>> {
        let (tenant, audit) = (tenant.clone(), audit);
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    config_sql::change::<sqlx::Sqlite>(conn, (&tenant, scope), body, audit).await
                })
            })
            .await
    }
}

/// `head` (a select ending in `tenant_id = `) of `tenant`, for the rows
/// whose `user_id` is one of `users`.
fn users_in<'a>(
    head: &str,
    tenant: &'a TenantId,
    users: &'a [UserId],
) -> QueryBuilder<'a, sqlx::Sqlite> {
    let mut q = QueryBuilder::new(head);
    q.push_bind(tenant.as_str()).push(" AND user_id IN (");
    let mut list = q.separated(", ");
    for u in users {
        list.push_bind(u.as_str());
    }
    q.push(")");
    q
}

#[async_trait]
impl RelationStore for SqliteStore {
    async fn set_block(
        &self,
        tenant: &TenantId,
        (user, blocked): (&UserId, &UserId),
        on: bool,
        audit: AuditEvent,
    ) -> StoreResult<BlockChange> {
        let ids = (tenant.clone(), user.clone(), blocked.clone());
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    relations_sql::set_block::<sqlx::Sqlite>(
                        conn,
                        (&ids.0, &ids.1, &ids.2),
                        on,
                        audit,
                    )
                    .await
                })
            })
            .await
    }

    async fn blocks_of(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Vec<UserId>> {
        let rows: Vec<(String,)> = sqlx::query_as(relations_sql::BLOCKS_OF)
            .bind(tenant.as_str())
            .bind(user.as_str())
            .fetch_all(&self.reads)
            .await?;
        relations_sql::blocked_ids(rows)
    }

    async fn relations_among(&self, tenant: &TenantId, users: &[UserId]) -> StoreResult<Relations> {
        let (mut blocks, mut restricted) = (Vec::new(), Vec::new());
        for chunk in users.chunks(ROWS_PER_INSERT) {
            blocks.extend(
                users_in(
                    "SELECT user_id, blocked_user_id FROM player_blocks WHERE tenant_id = ",
                    tenant,
                    chunk,
                )
                .build_query_as::<(String, String)>()
                .fetch_all(&self.reads)
                .await?,
            );
            restricted.extend(
                users_in(
                    "SELECT user_id FROM restricted_players WHERE tenant_id = ",
                    tenant,
                    chunk,
                )
                .build_query_as::<(String,)>()
                .fetch_all(&self.reads)
                .await?,
            );
        }
        Ok(relations_sql::among(users, blocks, restricted))
    }
}

#[async_trait]
impl DurableStore for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reads).await?;
        Ok(())
    }

    fn write_failure(&self) -> Option<WriteFailure> {
        self.health.failure()
    }

    async fn purge_expired(&self, now: Millis, live_since: Millis) -> StoreResult<u64> {
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    let answers =
                        sqlx::query("DELETE FROM idempotent_answers WHERE expires_at <= ?")
                            .bind(now)
                            .execute(&mut *conn)
                            .await?
                            .rows_affected();
                    let claims = sqlx::query(
                        "UPDATE players SET active_match_id = NULL, active_since = NULL \
                         WHERE active_since < ?",
                    )
                    .bind(live_since)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    let withdrawn =
                        sqlx::query("DELETE FROM withdrawn_matches WHERE withdrawn_at < ?")
                            .bind(live_since)
                            .execute(&mut *conn)
                            .await?
                            .rows_affected();
                    Ok(answers + claims + withdrawn)
                })
            })
            .await
    }
}

/// Lifts the claims `match_id` holds on these players (a claim a player's
/// newer match took over stays): two primary-key lookups.
async fn lift_claims(
    conn: &mut sqlx::SqliteConnection,
    tenant: &str,
    players: [&str; 2],
    match_id: &str,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE players SET active_match_id = NULL, active_since = NULL \
         WHERE tenant_id = ?1 AND user_id IN (?2, ?3) AND active_match_id = ?4",
    )
    .bind(tenant)
    .bind(players[0])
    .bind(players[1])
    .bind(match_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
