//! SQLite [`DurableStore`] (through sqlx): the embedded default's durable
//! records, in a file in `DATA_DIR`. WAL mode, so reads never wait for the
//! single writer.
//!
//! Match inserts go through one writer task that group-commits: it takes
//! every insert waiting when it starts a transaction and writes them all in
//! it. A transaction rewrites each page it touches into the WAL, so at low
//! load each insert is its own small transaction (no added latency), and
//! under load many share one (several times the throughput).

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::rows::{
    self, AuditRow, MATCH_COLUMNS, MatchRow, PLAYER_RATINGS_COLUMNS, PlayerRatingsRow, RatingsRow,
};
use super::{
    AuditEvent, AuditStore, DurableStore, MatchStore, RatingChange, RatingStore, Ratings,
    StoreError, StoreResult, color_moves,
};
use crate::domain::{GameId, MatchId, MatchRecord, Millis, QueueEntryId, TenantId, UserId};

mod challenges;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Rows per multi-row INSERT (SQLite allows 32766 bound values).
const ROWS_PER_INSERT: usize = 500;

/// How often the WAL is checkpointed.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Most match records one group commit takes.
const GROUP_COMMIT_MAX_RECORDS: usize = 2_000;

/// Now in epoch milliseconds on the database's clock: when ratings changed.
const CHANGED_NOW: &str = "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)";

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    writer: mpsc::UnboundedSender<WriteJob>,
}

/// One caller's insert, waiting for the writer.
struct WriteJob {
    records: Vec<MatchRecord>,
    audit: Vec<AuditEvent>,
    done: oneshot::Sender<Result<(), String>>,
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
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            // 64 MiB of page cache; statement journals in memory.
            .pragma("cache_size", "-65536")
            .pragma("temp_store", "MEMORY")
            // Checkpoints run in the background task below, not inside
            // whichever commit happens to cross the WAL threshold.
            .pragma("wal_autocheckpoint", "0");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(2))
            .connect_with(options)
            .await?;
        let (writer, jobs) = mpsc::unbounded_channel();
        tokio::spawn(group_commit(pool.clone(), jobs));
        Ok(Self { pool, writer })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))
    }

    async fn one_record(&self, sql: &str, binds: &[&str]) -> StoreResult<Option<MatchRecord>> {
        let mut query = sqlx::query_as::<_, MatchRow>(sql);
        for b in binds {
            query = query.bind(*b);
        }
        query
            .fetch_optional(&self.pool)
            .await?
            .map(MatchRecord::try_from)
            .transpose()
    }
}

#[async_trait]
impl MatchStore for SqliteStore {
    async fn insert_matches(
        &self,
        records: &[MatchRecord],
        audit: &[AuditEvent],
    ) -> StoreResult<()> {
        if records.is_empty() && audit.is_empty() {
            return Ok(());
        }
        let (done, result) = oneshot::channel();
        let job = WriteJob {
            records: records.to_vec(),
            audit: audit.to_vec(),
            done,
        };
        self.writer
            .send(job)
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?;
        result
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?
            .map_err(StoreError::Unavailable)
    }

    async fn match_by_id(&self, id: &MatchId) -> StoreResult<Option<MatchRecord>> {
        let sql = format!("SELECT {MATCH_COLUMNS} FROM match_records WHERE match_id = ?");
        self.one_record(&sql, &[&id.to_string()]).await
    }

    async fn match_by_entry(
        &self,
        tenant: &TenantId,
        entry: &QueueEntryId,
    ) -> StoreResult<Option<MatchRecord>> {
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
            .fetch_optional(&self.pool)
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
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn finish_match(
        &self,
        tenant: &TenantId,
        game: &GameId,
        at: Millis,
    ) -> StoreResult<Option<MatchRecord>> {
        sqlx::query(
            "UPDATE match_records SET finished_at = ?1 \
             WHERE tenant_id = ?2 AND game_id = ?3 AND finished_at IS NULL",
        )
        .bind(at)
        .bind(tenant.as_str())
        .bind(game.as_str())
        .execute(&self.pool)
        .await?;
        let sql = format!(
            "SELECT {MATCH_COLUMNS} FROM match_records WHERE tenant_id = ? AND game_id = ?"
        );
        self.one_record(&sql, &[tenant.as_str(), game.as_str()])
            .await
    }

    async fn color_balances(
        &self,
        tenant: &TenantId,
        users: &[UserId],
    ) -> StoreResult<HashMap<UserId, i32>> {
        let mut balances = HashMap::with_capacity(users.len());
        for chunk in users.chunks(ROWS_PER_INSERT) {
            let mut q =
                QueryBuilder::new("SELECT user_id, color_balance FROM players WHERE tenant_id = ");
            q.push_bind(tenant.as_str()).push(" AND user_id IN (");
            let mut list = q.separated(", ");
            for u in chunk {
                list.push_bind(u.as_str());
            }
            q.push(")");
            for row in q.build().fetch_all(&self.pool).await? {
                let user: String = row.try_get(0)?;
                let balance: i64 = row.try_get(1)?;
                if let Ok(user) = UserId::parse(&user) {
                    balances.insert(user, balance.clamp(i32::MIN.into(), i32::MAX.into()) as i32);
                }
            }
        }
        Ok(balances)
    }
}

/// Writes match records (and their color-balance moves) and audit events
/// in one transaction.
async fn write_matches(
    pool: &SqlitePool,
    records: &[&MatchRecord],
    audit: &[&AuditEvent],
) -> StoreResult<()> {
    let mut tx = pool.begin().await?;
    let mut fresh: Vec<&MatchRecord> = Vec::with_capacity(records.len());
    for chunk in records.chunks(ROWS_PER_INSERT) {
        let mut q = QueryBuilder::new(format!("INSERT INTO match_records ({MATCH_COLUMNS}) "));
        q.push_values(chunk, |mut b, r| {
            b.push_bind(r.match_id.to_string())
                .push_bind(r.tenant_id.as_str())
                .push_bind(r.game_id.as_str());
            for side in [&r.white, &r.black] {
                b.push_bind(side.user_id.as_str())
                    .push_bind(side.username.as_ref().map(|u| u.as_str()))
                    .push_bind(side.rating)
                    .push_bind(side.entry_id.map(|e| e.to_string()));
            }
            b.push_bind(r.pool.to_string())
                .push_bind(r.source.as_str())
                .push_bind(r.created_at)
                .push_bind(r.finished_at);
        });
        q.push(" ON CONFLICT (match_id) DO NOTHING RETURNING match_id");
        let inserted: Vec<String> = q
            .build()
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        fresh.extend(rows::newly_inserted(chunk.iter().copied(), inserted));
    }
    // Color balances move only for matches inserted now, never twice.
    for chunk in color_moves(&fresh).chunks(ROWS_PER_INSERT) {
        let mut q = QueryBuilder::new("INSERT INTO players (tenant_id, user_id, color_balance) ");
        q.push_values(chunk, |mut b, (t, u, d)| {
            b.push_bind(t.as_str()).push_bind(u.as_str()).push_bind(*d);
        });
        q.push(
            " ON CONFLICT (tenant_id, user_id) DO UPDATE \
                  SET color_balance = color_balance + excluded.color_balance",
        );
        q.build().execute(&mut *tx).await?;
    }
    insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

/// The writer task: one transaction for every insert waiting when it
/// starts; and every second, between transactions, a PASSIVE checkpoint
/// (copies the WAL back into the database without waiting for readers), so
/// the WAL stays small without a commit paying for it. Ends when the last
/// handle of the store is dropped.
async fn group_commit(pool: SqlitePool, mut jobs: mpsc::UnboundedReceiver<WriteJob>) {
    let mut checkpoint = tokio::time::interval(CHECKPOINT_EVERY);
    checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            job = jobs.recv() => match job {
                Some(job) => job,
                None => break,
            },
            _ = checkpoint.tick() => {
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
                    tracing::warn!(error = %e, "SQLite checkpoint failed");
                }
                continue;
            }
        };
        let mut batch = vec![first];
        let mut size = batch[0].records.len();
        while size < GROUP_COMMIT_MAX_RECORDS {
            match jobs.try_recv() {
                Ok(job) => {
                    size += job.records.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let records: Vec<&MatchRecord> = batch.iter().flat_map(|j| &j.records).collect();
        let audit: Vec<&AuditEvent> = batch.iter().flat_map(|j| &j.audit).collect();
        let result = write_matches(&pool, &records, &audit)
            .await
            .map_err(|e| e.to_string());
        for job in batch {
            let _ = job.done.send(result.clone());
        }
    }
}

async fn insert_audit(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    events: &[&AuditEvent],
) -> StoreResult<()> {
    for chunk in events.chunks(ROWS_PER_INSERT) {
        let mut q =
            QueryBuilder::new("INSERT INTO audit_events (at, tenant_id, kind, subject, detail) ");
        q.push_values(chunk, |mut b, e| {
            b.push_bind(e.at)
                .push_bind(e.tenant_id.as_str())
                .push_bind(e.kind.as_str())
                .push_bind(e.subject.as_str())
                .push_bind(e.detail.to_string());
        });
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

#[async_trait]
impl RatingStore for SqliteStore {
    async fn ratings(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Ratings> {
        let row = sqlx::query_as::<_, RatingsRow>(
            "SELECT bullet, blitz, rapid, classical FROM players WHERE tenant_id = ? AND user_id = ?",
        )
        .bind(tenant.as_str())
        .bind(user.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Ratings::from).unwrap_or_default())
    }

    async fn set_ratings(
        &self,
        tenant: &TenantId,
        user: &UserId,
        update: &Ratings,
    ) -> StoreResult<Ratings> {
        let row = sqlx::query_as::<_, RatingsRow>(&format!(
            "INSERT INTO players (tenant_id, user_id, bullet, blitz, rapid, classical, ratings_changed_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, {CHANGED_NOW}) \
             ON CONFLICT (tenant_id, user_id) DO UPDATE SET \
               ratings_changed_at = excluded.ratings_changed_at, \
               bullet = COALESCE(excluded.bullet, bullet), \
               blitz = COALESCE(excluded.blitz, blitz), \
               rapid = COALESCE(excluded.rapid, rapid), \
               classical = COALESCE(excluded.classical, classical) \
             RETURNING bullet, blitz, rapid, classical"
        ))
        .bind(tenant.as_str())
        .bind(user.as_str())
        .bind(update.bullet)
        .bind(update.blitz)
        .bind(update.rapid)
        .bind(update.classical)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.into())
    }

    async fn ratings_changed_since(&self, since: Option<Millis>) -> StoreResult<Vec<RatingChange>> {
        let rows = sqlx::query_as::<_, PlayerRatingsRow>(&format!(
            "SELECT {PLAYER_RATINGS_COLUMNS} FROM players \
             WHERE ratings_changed_at > ?"
        ))
        .bind(since.unwrap_or(Millis::MIN))
        .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let events: Vec<&AuditEvent> = events.iter().collect();
        insert_audit(&mut tx, &events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn events_about(&self, subject: &str, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        let rows = sqlx::query_as::<_, AuditRow>(
            "SELECT at, tenant_id, kind, subject, detail FROM audit_events \
             WHERE subject = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(subject)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(AuditEvent::try_from).collect()
    }
}

#[async_trait]
impl DurableStore for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
