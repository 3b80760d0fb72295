//! PostgreSQL [`DurableStore`] (through sqlx): durable records in
//! production, shared by every API node and worker.
//!
//! Connections are bounded in number and in the time to get one, so a
//! database that is down answers `StoreError::Unavailable` within about a
//! second (the API's 503) instead of hanging; the pool reconnects by itself
//! when the server returns.

mod challenges;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};

use super::rows::{
    self, AuditRow, MATCH_COLUMNS, MatchRow, PLAYER_RATINGS_COLUMNS, PlayerRatingsRow, RatingsRow,
};
use super::{
    AuditEvent, AuditStore, DurableStore, MatchStore, RatingChange, RatingStore, Ratings,
    StoreError, StoreResult,
};
use crate::domain::{GameId, MatchId, MatchRecord, Millis, QueueEntryId, TenantId, UserId};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// [`MatchStore::insert_matches`] in one statement, its rows as arrays.
/// Color balances move only for records inserted now, each player once per
/// statement and in key order (concurrent statements lock players in the
/// same order, so they cannot deadlock).
static INSERT_MATCHES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "
WITH m AS (
    INSERT INTO match_records ({MATCH_COLUMNS})
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[],
        $4::text[], $5::text[], $6::int4[], $7::text[],
        $8::text[], $9::text[], $10::int4[], $11::text[],
        $12::text[], $13::text[], $14::int8[], $15::int8[])
    ON CONFLICT (match_id) DO NOTHING
    RETURNING tenant_id, white_user_id, black_user_id
), moves AS (
    SELECT tenant_id, white_user_id AS user_id, 1 AS d FROM m
    UNION ALL
    SELECT tenant_id, black_user_id, -1 FROM m
), colors AS (
    INSERT INTO players (tenant_id, user_id, color_balance)
    SELECT tenant_id, user_id, SUM(d)::int4 FROM moves
    GROUP BY tenant_id, user_id ORDER BY tenant_id, user_id
    ON CONFLICT (tenant_id, user_id) DO UPDATE
    SET color_balance = players.color_balance + excluded.color_balance
), audit AS (
    INSERT INTO audit_events (at, tenant_id, kind, subject, detail)
    SELECT * FROM UNNEST($16::int8[], $17::text[], $18::text[], $19::text[], $20::text[])
)
SELECT 1"
    )
});

/// Now in epoch milliseconds on the database's clock: when ratings changed.
const CHANGED_NOW: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects (lazily) to `url` (`postgres://…`; an `options` parameter
    /// such as `-c search_path=…` applies to every connection).
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(1))
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(options);
        Ok(Self { pool })
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
impl MatchStore for PgStore {
    async fn insert_matches(
        &self,
        records: &[MatchRecord],
        audit: &[AuditEvent],
    ) -> StoreResult<()> {
        if records.is_empty() && audit.is_empty() {
            return Ok(());
        }
        // One statement (so one round trip and one implicit transaction,
        // the same text for any number of rows): the records, the color
        // balances of the records inserted now (never twice), the audit.
        let text = |f: fn(&MatchRecord) -> String| records.iter().map(f).collect::<Vec<_>>();
        let opt = |f: fn(&MatchRecord) -> Option<String>| records.iter().map(f).collect::<Vec<_>>();
        sqlx::query(&INSERT_MATCHES)
            .bind(text(|r| r.match_id.to_string()))
            .bind(text(|r| r.tenant_id.to_string()))
            .bind(text(|r| r.game_id.to_string()))
            .bind(text(|r| r.white.user_id.to_string()))
            .bind(opt(|r| r.white.username.as_ref().map(|u| u.to_string())))
            .bind(records.iter().map(|r| r.white.rating).collect::<Vec<_>>())
            .bind(opt(|r| r.white.entry_id.map(|e| e.to_string())))
            .bind(text(|r| r.black.user_id.to_string()))
            .bind(opt(|r| r.black.username.as_ref().map(|u| u.to_string())))
            .bind(records.iter().map(|r| r.black.rating).collect::<Vec<_>>())
            .bind(opt(|r| r.black.entry_id.map(|e| e.to_string())))
            .bind(text(|r| r.pool.to_string()))
            .bind(text(|r| r.source.as_str().to_owned()))
            .bind(records.iter().map(|r| r.created_at).collect::<Vec<_>>())
            .bind(records.iter().map(|r| r.finished_at).collect::<Vec<_>>())
            .bind(audit.iter().map(|e| e.at).collect::<Vec<_>>())
            .bind(
                audit
                    .iter()
                    .map(|e| e.tenant_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(audit.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
            .bind(audit.iter().map(|e| e.subject.as_str()).collect::<Vec<_>>())
            .bind(
                audit
                    .iter()
                    .map(|e| e.detail.to_string())
                    .collect::<Vec<_>>(),
            )
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn match_by_id(&self, id: &MatchId) -> StoreResult<Option<MatchRecord>> {
        let sql = format!("SELECT {MATCH_COLUMNS} FROM match_records WHERE match_id = $1");
        self.one_record(&sql, &[&id.to_string()]).await
    }

    async fn match_by_entry(
        &self,
        tenant: &TenantId,
        entry: &QueueEntryId,
    ) -> StoreResult<Option<MatchRecord>> {
        let sql = format!(
            "SELECT {MATCH_COLUMNS} FROM match_records \
             WHERE (white_entry_id = $1 OR black_entry_id = $1) AND tenant_id = $2"
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
             WHERE tenant_id = $1 AND (white_user_id = $2 OR black_user_id = $2) \
               AND created_at >= $3 AND finished_at IS NULL \
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
             WHERE finished_at IS NULL AND created_at >= $1 ORDER BY created_at"
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
            "UPDATE match_records SET finished_at = $1 \
             WHERE tenant_id = $2 AND game_id = $3 AND finished_at IS NULL",
        )
        .bind(at)
        .bind(tenant.as_str())
        .bind(game.as_str())
        .execute(&self.pool)
        .await?;
        let sql = format!(
            "SELECT {MATCH_COLUMNS} FROM match_records WHERE tenant_id = $1 AND game_id = $2"
        );
        self.one_record(&sql, &[tenant.as_str(), game.as_str()])
            .await
    }

    async fn color_balances(
        &self,
        tenant: &TenantId,
        users: &[UserId],
    ) -> StoreResult<HashMap<UserId, i32>> {
        let names: Vec<&str> = users.iter().map(UserId::as_str).collect();
        // One primary-key lookup per user, whatever the statistics: with
        // `user_id = ANY($2)` a plan cached while the table was nearly empty
        // reads every row of the tenant and filters (measured: most of the
        // database's CPU under load on a fresh schema).
        let rows = sqlx::query(
            "SELECT u.user_id, p.color_balance FROM unnest($2::text[]) AS u(user_id) \
             CROSS JOIN LATERAL (SELECT color_balance FROM players \
               WHERE tenant_id = $1 AND user_id = u.user_id LIMIT 1) AS p",
        )
        .bind(tenant.as_str())
        .bind(&names)
        .fetch_all(&self.pool)
        .await?;
        let mut balances = HashMap::with_capacity(rows.len());
        for row in rows {
            let user: String = row.try_get(0)?;
            if let Ok(user) = UserId::parse(&user) {
                balances.insert(user, row.try_get::<i32, _>(1)?);
            }
        }
        Ok(balances)
    }
}

#[async_trait]
impl RatingStore for PgStore {
    async fn ratings(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Ratings> {
        let row = sqlx::query_as::<_, RatingsRow>(
            "SELECT bullet, blitz, rapid, classical FROM players WHERE tenant_id = $1 AND user_id = $2",
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
             VALUES ($1, $2, $3, $4, $5, $6, {CHANGED_NOW}) \
             ON CONFLICT (tenant_id, user_id) DO UPDATE SET \
               ratings_changed_at = excluded.ratings_changed_at, \
               bullet = COALESCE(excluded.bullet, players.bullet), \
               blitz = COALESCE(excluded.blitz, players.blitz), \
               rapid = COALESCE(excluded.rapid, players.rapid), \
               classical = COALESCE(excluded.classical, players.classical) \
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
             WHERE ratings_changed_at > $1"
        ))
        .bind(since.unwrap_or(Millis::MIN))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }
}

#[async_trait]
impl AuditStore for PgStore {
    async fn record(&self, events: &[AuditEvent]) -> StoreResult<()> {
        self.insert_matches(&[], events).await
    }

    async fn events_about(&self, subject: &str, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        let rows = sqlx::query_as::<_, AuditRow>(
            "SELECT at, tenant_id, kind, subject, detail FROM audit_events \
             WHERE subject = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(subject)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(AuditEvent::try_from).collect()
    }
}

#[async_trait]
impl DurableStore for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
