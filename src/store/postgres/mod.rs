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
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::claims::{self, Ask};
use super::config_sql;
use super::idempotency_sql;
use super::rows::{
    self, AnswerRow, AuditRow, COOLDOWN_COLUMNS, ClaimRow, INTENT_COLUMNS, IntentRow,
    MATCH_COLUMNS, MatchRow, PLAYER_RATINGS_COLUMNS, PlayerRatingsRow, RATINGS_COLUMNS, RatingsRow,
};
use super::{
    AuditEvent, AuditQuery, AuditStore, Claim, Cooldown, DurableStore, IdempotencyScope,
    IdempotencyStore, MatchStore, RatingChange, RatingStore, Ratings, StoreError, StoreResult,
    StoredAnswer, WriteFailure, WriteHealth,
};
use super::{
    BlockChange, ConfigRows, ConfigScope, ConfigStore, RelationStore, Relations, relations_sql,
};
use crate::domain::{
    ColorHistory, GameId, MatchId, MatchIntent, MatchRecord, Millis, QueueEntryId, Speed, TenantId,
    UserId,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The match columns both tables share, as arrays (UNNEST of
/// [`INTENT_COLUMNS`]): $1-$15, then the sides' time controls, whose
/// numbers come after the statement's own (`last` + 1 and + 2: they are
/// bound last, [`bind_time_controls`]).
fn intent_arrays(last: usize) -> String {
    format!(
        "$1::text[], $2::text[], \
    $3::text[], $4::text[], $5::int4[], $6::text[], \
    $7::text[], $8::text[], $9::int4[], $10::text[], \
    $11::text[], $12::text[], $13::int8[], $14::text[], $15::text[], \
    ${}::text[], ${}::text[]",
        last + 1,
        last + 2
    )
}

/// Records of games that exist ($1-$15 shared columns, $16 game ids, $17
/// finished), the color balances and claims of their players (one row
/// write each: the claim lives in the `players` row) for the records
/// inserted now (never twice), the end of their intents ($18) and the
/// audit ($19-$23), in one statement. Players are written in key order
/// (concurrent statements lock rows in the same order, so they cannot
/// deadlock); a player is in one record of a call at most (the claims were
/// decided first).
static INSERT_RECORDS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "
WITH m AS (
    INSERT INTO match_records ({MATCH_COLUMNS})
    SELECT * FROM UNNEST({}, $16::text[], $17::int8[])
    ON CONFLICT (match_id) DO NOTHING
    RETURNING match_id, tenant_id, white_user_id, black_user_id, created_at
), moves AS (
    SELECT tenant_id, white_user_id AS user_id, 1 AS d, match_id, created_at FROM m
    UNION ALL
    SELECT tenant_id, black_user_id, -1, match_id, created_at FROM m
), players_now AS (
    INSERT INTO players (tenant_id, user_id, color_balance, color_streak, active_match_id, active_since)
    SELECT tenant_id, user_id, d, d, match_id, created_at FROM moves ORDER BY tenant_id, user_id
    ON CONFLICT (tenant_id, user_id) DO UPDATE
    SET color_balance = players.color_balance + excluded.color_balance,
        color_streak = CASE
          WHEN excluded.color_balance > 0 THEN GREATEST(players.color_streak, 0) + 1
          WHEN excluded.color_balance < 0 THEN LEAST(players.color_streak, 0) - 1
          ELSE players.color_streak END,
        active_match_id = excluded.active_match_id, active_since = excluded.active_since
), done AS (
    DELETE FROM match_intents WHERE match_id = ANY($18::text[])
), audit AS (
    INSERT INTO audit_events (at, tenant_id, kind, subject, detail)
    SELECT * FROM UNNEST($19::int8[], $20::text[], $21::text[], $22::text[], $23::text[])
)
SELECT 1",
        intent_arrays(23)
    )
});

/// Intents ($1-$15, owner $16, attempt ms $17) and the claims on their
/// players ($18 tenants, $19 players, $20 matches, $21 since; in key order).
static INSERT_INTENTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "
WITH i AS (
    INSERT INTO match_intents ({INTENT_COLUMNS}, owner, attempt_until)
    SELECT u.*, $16::text, {CHANGED_NOW} + $17::int8 FROM UNNEST({arrays}) AS u
    ON CONFLICT (match_id) DO NOTHING
), claims AS (
    INSERT INTO players (tenant_id, user_id, active_match_id, active_since)
    SELECT * FROM UNNEST($18::text[], $19::text[], $20::text[], $21::int8[]) ORDER BY 1, 2
    ON CONFLICT (tenant_id, user_id) DO UPDATE
    SET active_match_id = excluded.active_match_id, active_since = excluded.active_since
)
SELECT 1",
        arrays = intent_arrays(21)
    )
});

/// Now in epoch milliseconds on the database's clock.
const CHANGED_NOW: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// How often a store that cannot write tries a probe write.
const PROBE_EVERY: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    health: Arc<WriteHealth>,
}

/// The shared columns of matches, bound as arrays ($1-$13).
fn bind_matches<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ms: &[&MatchIntent],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let text = |f: &dyn Fn(&MatchIntent) -> String| ms.iter().map(|m| f(m)).collect::<Vec<_>>();
    let opt =
        |f: &dyn Fn(&MatchIntent) -> Option<String>| ms.iter().map(|m| f(m)).collect::<Vec<_>>();
    query
        .bind(text(&|m| m.match_id.to_string()))
        .bind(text(&|m| m.tenant_id.to_string()))
        .bind(text(&|m| m.white.user_id.to_string()))
        .bind(opt(&|m| m.white.username.as_ref().map(|u| u.to_string())))
        .bind(ms.iter().map(|m| m.white.rating).collect::<Vec<_>>())
        .bind(opt(&|m| m.white.entry_id.map(|e| e.to_string())))
        .bind(text(&|m| m.black.user_id.to_string()))
        .bind(opt(&|m| m.black.username.as_ref().map(|u| u.to_string())))
        .bind(ms.iter().map(|m| m.black.rating).collect::<Vec<_>>())
        .bind(opt(&|m| m.black.entry_id.map(|e| e.to_string())))
        .bind(text(&|m| m.pool.to_string()))
        .bind(text(&|m| m.source.as_str().to_owned()))
        .bind(ms.iter().map(|m| m.created_at).collect::<Vec<_>>())
        .bind(opt(&|m| m.white.region.map(|r| r.as_str().to_owned())))
        .bind(opt(&|m| m.black.region.map(|r| r.as_str().to_owned())))
}

/// The sides' time controls of matches ([`intent_arrays`]), bound after
/// every other parameter of the statement.
fn bind_time_controls<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ms: &[&MatchIntent],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let of = |side: &dyn Fn(&MatchIntent) -> Option<crate::domain::TimeControl>| {
        ms.iter()
            .map(|m| side(m).map(|t| t.to_string()))
            .collect::<Vec<_>>()
    };
    query
        .bind(of(&|m| m.white.time_control))
        .bind(of(&|m| m.black.time_control))
}

/// The claims of matches stored now, bound as arrays ($18-$21).
fn bind_claims<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ms: &[&MatchIntent],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let mut claims: Vec<(String, String, String, i64)> = ms
        .iter()
        .flat_map(|m| {
            m.players().map(|u| {
                (
                    m.tenant_id.to_string(),
                    u.to_string(),
                    m.match_id.to_string(),
                    m.created_at,
                )
            })
        })
        .collect();
    claims.sort();
    query
        .bind(claims.iter().map(|c| c.0.clone()).collect::<Vec<_>>())
        .bind(claims.iter().map(|c| c.1.clone()).collect::<Vec<_>>())
        .bind(claims.iter().map(|c| c.2.clone()).collect::<Vec<_>>())
        .bind(claims.iter().map(|c| c.3).collect::<Vec<_>>())
}

/// What a claiming transaction writes for the matches it stores.
enum Write<'a> {
    Intents {
        owner: &'a str,
        attempt_ms: Millis,
    },
    Records {
        records: &'a [MatchRecord],
        audit: &'a [AuditEvent],
    },
}

impl PgStore {
    /// Connects (lazily) to `url` (`postgres://…`; an `options` parameter
    /// such as `-c search_path=…` applies to every connection), and starts
    /// the probe that tells when a database that stopped taking writes
    /// takes them again.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(1))
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(options);
        let health = Arc::new(WriteHealth::default());
        tokio::spawn(probe(pool.clone(), Arc::downgrade(&health)));
        Ok(Self { pool, health })
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

    /// Notes a write's outcome in the store's health, and answers it.
    fn noted<T>(&self, result: StoreResult<T>) -> StoreResult<T> {
        self.health.note(&result);
        result
    }

    /// Decides the claims of `matches` and writes what was stored, in one
    /// transaction under the advisory lock of each tenant involved (taken
    /// in order): so the claims read are the claims written against, for
    /// any number of nodes. `stored` tells which tables already holding a
    /// match make it stored before.
    async fn claim_and_write(
        &self,
        matches: &[MatchIntent],
        write: Write<'_>,
        live_since: Millis,
    ) -> StoreResult<Vec<Claim>> {
        let mut tx = self.pool.begin().await?;
        let mut tenants: Vec<&str> = matches.iter().map(|m| m.tenant_id.as_str()).collect();
        tenants.sort_unstable();
        tenants.dedup();
        for tenant in tenants {
            lock_claims(&mut tx, tenant).await?;
        }
        let ids: Vec<String> = matches.iter().map(|m| m.match_id.to_string()).collect();
        let mut stored = existing(&mut tx, "match_records", &ids).await?;
        if matches!(write, Write::Intents { .. }) {
            stored.extend(existing(&mut tx, "match_intents", &ids).await?);
        }
        let withdrawn = existing(&mut tx, "withdrawn_matches", &ids).await?;
        let (tenant_ids, user_ids): (Vec<String>, Vec<String>) = matches
            .iter()
            .flat_map(|m| {
                m.players()
                    .map(|u| (m.tenant_id.to_string(), u.to_string()))
            })
            .unzip();
        let held = rows::live_claims(
            sqlx::query_as::<_, ClaimRow>(
                "SELECT tenant_id, user_id, active_match_id AS match_id, active_since AS since \
                 FROM players \
                 WHERE (tenant_id, user_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[])) \
                   AND active_match_id IS NOT NULL",
            )
            .bind(&tenant_ids)
            .bind(&user_ids)
            .fetch_all(&mut *tx)
            .await?,
            live_since,
        );
        let asks: Vec<Ask<'_>> = matches
            .iter()
            .zip(&ids)
            .map(|(m, id)| Ask {
                tenant: &m.tenant_id,
                match_id: &m.match_id,
                players: m.players(),
                stored_before: stored.contains(id),
                withdrawn: withdrawn.contains(id),
            })
            .collect();
        let decided = claims::decide(&asks, &held);
        let fresh: Vec<&MatchIntent> = matches
            .iter()
            .zip(&asks)
            .zip(&decided)
            .filter(|((_, a), c)| c.is_stored() && !a.stored_before)
            .map(|((m, _), _)| m)
            .collect();
        match write {
            Write::Intents { owner, attempt_ms } => {
                if !fresh.is_empty() {
                    let q = bind_matches(sqlx::query(&INSERT_INTENTS), &fresh)
                        .bind(owner)
                        .bind(attempt_ms);
                    bind_time_controls(bind_claims(q, &fresh), &fresh)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            Write::Records { records, audit } => {
                let refused: std::collections::HashSet<String> = records
                    .iter()
                    .zip(&decided)
                    .filter(|(_, c)| !c.is_stored())
                    .map(|(r, _)| r.match_id.to_string())
                    .collect();
                let new: Vec<&MatchRecord> = records
                    .iter()
                    .zip(&asks)
                    .zip(&decided)
                    .filter(|((_, a), c)| c.is_stored() && !a.stored_before)
                    .map(|((r, _), _)| r)
                    .collect();
                let audit: Vec<&AuditEvent> = audit
                    .iter()
                    .filter(|e| !refused.contains(&e.subject))
                    .collect();
                let q = bind_matches(sqlx::query(&INSERT_RECORDS), &fresh)
                    .bind(
                        new.iter()
                            .map(|r| r.game_id.to_string())
                            .collect::<Vec<_>>(),
                    )
                    .bind(new.iter().map(|r| r.finished_at).collect::<Vec<_>>())
                    .bind(
                        new.iter()
                            .map(|r| r.match_id.to_string())
                            .collect::<Vec<_>>(),
                    )
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
                    );
                bind_time_controls(q, &fresh).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(decided)
    }
}

/// Match ids of `ids` found in `table`.
async fn existing(
    tx: &mut sqlx::PgConnection,
    table: &str,
    ids: &[String],
) -> StoreResult<std::collections::HashSet<String>> {
    Ok(sqlx::query_scalar(&format!(
        "SELECT match_id FROM {table} WHERE match_id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(tx)
    .await?
    .into_iter()
    .collect())
}

/// Takes the transaction-scoped lock on `tenant`'s claims: every write
/// that decides whether a match of the tenant is stored holds it.
async fn lock_claims(tx: &mut sqlx::PgConnection, tenant: &str) -> StoreResult<()> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('claims|' || current_schema() || '|' || $1, 0))",
    )
    .bind(tenant)
    .execute(tx)
    .await?;
    Ok(())
}

/// While the store cannot write, a one-row write every [`PROBE_EVERY`];
/// the first that succeeds marks it healthy. Ends with the store.
async fn probe(pool: PgPool, health: std::sync::Weak<WriteHealth>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(health) = health.upgrade() else {
            return;
        };
        if !health.is_failing() {
            continue;
        }
        let result = sqlx::query(
            "INSERT INTO write_probe (id, at) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET at = excluded.at",
        )
        .bind(crate::domain::now_millis())
        .execute(&pool)
        .await
        .map_err(StoreError::from);
        health.note(&result);
    }
}

#[async_trait]
impl MatchStore for PgStore {
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
        let result = self
            .claim_and_write(intents, Write::Intents { owner, attempt_ms }, live_since)
            .await;
        self.noted(result)
    }

    async fn insert_matches(
        &self,
        records: &[MatchRecord],
        audit: &[AuditEvent],
        live_since: Millis,
    ) -> StoreResult<Vec<Claim>> {
        if records.is_empty() {
            self.record(audit).await?;
            return Ok(Vec::new());
        }
        let intents: Vec<MatchIntent> = records.iter().map(MatchRecord::intent).collect();
        let result = self
            .claim_and_write(&intents, Write::Records { records, audit }, live_since)
            .await;
        self.noted(result)
    }

    async fn withdraw_match(&self, tenant: &TenantId, match_id: &MatchId) -> StoreResult<bool> {
        let withdrawn = async {
            let mut tx = self.pool.begin().await?;
            lock_claims(&mut tx, tenant.as_str()).await?;
            // (SQLite runs the same insert and a read on its writer: it has
            // no data-modifying CTE.)
            let withdrawn: bool = sqlx::query_scalar(&format!(
                "WITH w AS (INSERT INTO withdrawn_matches (match_id, withdrawn_at) \
                            SELECT $1, {CHANGED_NOW} \
                            WHERE NOT EXISTS (SELECT 1 FROM match_records WHERE match_id = $1) \
                              AND NOT EXISTS (SELECT 1 FROM match_intents WHERE match_id = $1) \
                            ON CONFLICT (match_id) DO NOTHING RETURNING 1) \
                 SELECT EXISTS (SELECT 1 FROM w) \
                     OR EXISTS (SELECT 1 FROM withdrawn_matches WHERE match_id = $1)"
            ))
            .bind(match_id.to_string())
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(withdrawn)
        }
        .await;
        self.noted(withdrawn)
    }

    async fn drop_intent(&self, match_id: &MatchId, owner: &str) -> StoreResult<bool> {
        // The claims go by primary key: (tenant, player) of the intent, if
        // still this match's.
        let dropped: StoreResult<i64> = sqlx::query_scalar(
            "WITH d AS (DELETE FROM match_intents WHERE match_id = $1 AND owner = $2 \
                        RETURNING match_id, tenant_id, white_user_id, black_user_id), \
                  c AS (UPDATE players p SET active_match_id = NULL, active_since = NULL \
                        FROM d \
                        WHERE p.tenant_id = d.tenant_id \
                          AND p.user_id IN (d.white_user_id, d.black_user_id) \
                          AND p.active_match_id = d.match_id) \
             SELECT COUNT(*) FROM d",
        )
        .bind(match_id.to_string())
        .bind(owner)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::from);
        Ok(self.noted(dropped)? == 1)
    }

    async fn yield_intent(&self, match_id: &MatchId, owner: &str) -> StoreResult<()> {
        let yielded = sqlx::query(&format!(
            "UPDATE match_intents SET attempt_until = {CHANGED_NOW} - 1 \
             WHERE match_id = $1 AND owner = $2"
        ))
        .bind(match_id.to_string())
        .bind(owner)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(StoreError::from);
        self.noted(yielded)
    }

    async fn take_stale_intents(
        &self,
        owner: &str,
        attempt_ms: Millis,
        limit: u32,
    ) -> StoreResult<Vec<MatchIntent>> {
        let sql = format!(
            "UPDATE match_intents SET owner = $1, attempt_until = {CHANGED_NOW} + $2 \
             WHERE match_id IN (SELECT match_id FROM match_intents \
                                WHERE attempt_until < {CHANGED_NOW} \
                                ORDER BY attempt_until LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING {INTENT_COLUMNS}"
        );
        let rows = sqlx::query_as::<_, IntentRow>(&sql)
            .bind(owner)
            .bind(attempt_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from);
        rows::intents(self.noted(rows)?)
    }

    async fn intent(&self, match_id: &MatchId) -> StoreResult<Option<MatchIntent>> {
        let sql = format!("SELECT {INTENT_COLUMNS} FROM match_intents WHERE match_id = $1");
        sqlx::query_as::<_, IntentRow>(&sql)
            .bind(match_id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(MatchIntent::try_from)
            .transpose()
    }

    async fn intents(&self) -> StoreResult<Vec<MatchIntent>> {
        let sql = format!("SELECT {INTENT_COLUMNS} FROM match_intents ORDER BY created_at");
        rows::intents(sqlx::query_as(&sql).fetch_all(&self.pool).await?)
    }

    async fn match_by_id(&self, id: &MatchId) -> StoreResult<Option<MatchRecord>> {
        let sql = format!("SELECT {MATCH_COLUMNS} FROM match_records WHERE match_id = $1");
        self.one_record(&sql, &[&id.to_string()]).await
    }

    async fn match_by_game(
        &self,
        tenant: &TenantId,
        game: &GameId,
    ) -> StoreResult<Option<MatchRecord>> {
        let sql = format!(
            "SELECT {MATCH_COLUMNS} FROM match_records WHERE tenant_id = $1 AND game_id = $2"
        );
        self.one_record(&sql, &[tenant.as_str(), game.as_str()])
            .await
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

    async fn record_no_show(
        &self,
        tenant: &TenantId,
        game: &GameId,
        user: &UserId,
        until: Millis,
    ) -> StoreResult<bool> {
        let recorded = async {
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "UPDATE match_records SET no_show_user_id = $1, cooldown_until = $2 \
                 WHERE tenant_id = $3 AND game_id = $4 AND no_show_user_id IS NULL",
            )
            .bind(user.as_str())
            .bind(until)
            .bind(tenant.as_str())
            .bind(game.as_str())
            .execute(&mut *tx)
            .await?;
            let known: Option<i32> = sqlx::query_scalar(
                "SELECT 1 FROM match_records WHERE tenant_id = $1 AND game_id = $2",
            )
            .bind(tenant.as_str())
            .bind(game.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<_, StoreError>(known.is_some())
        }
        .await;
        self.noted(recorded)
    }

    async fn cooldowns(&self, now: Millis) -> StoreResult<Vec<Cooldown>> {
        let sql = format!(
            "SELECT {COOLDOWN_COLUMNS} FROM match_records WHERE cooldown_until > $1 ORDER BY cooldown_until"
        );
        let rows: Vec<rows::CooldownRow> =
            sqlx::query_as(&sql).bind(now).fetch_all(&self.pool).await?;
        rows.into_iter().map(Cooldown::try_from).collect()
    }

    async fn finish_match(
        &self,
        tenant: &TenantId,
        game: &GameId,
        at: Millis,
    ) -> StoreResult<Option<MatchRecord>> {
        let finished = async {
            let mut tx = self.pool.begin().await?;
            // The claims go by primary key: (tenant, player) of the match,
            // if still this match's.
            sqlx::query(
                "WITH f AS (UPDATE match_records SET finished_at = $1 \
                            WHERE tenant_id = $2 AND game_id = $3 AND finished_at IS NULL), \
                      m AS (SELECT match_id, tenant_id, white_user_id, black_user_id \
                            FROM match_records WHERE tenant_id = $2 AND game_id = $3) \
                 UPDATE players p SET active_match_id = NULL, active_since = NULL FROM m \
                 WHERE p.tenant_id = m.tenant_id \
                   AND p.user_id IN (m.white_user_id, m.black_user_id) \
                   AND p.active_match_id = m.match_id",
            )
            .bind(at)
            .bind(tenant.as_str())
            .bind(game.as_str())
            .execute(&mut *tx)
            .await?;
            let sql = format!(
                "SELECT {MATCH_COLUMNS} FROM match_records WHERE tenant_id = $1 AND game_id = $2"
            );
            let row = sqlx::query_as::<_, MatchRow>(&sql)
                .bind(tenant.as_str())
                .bind(game.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, StoreError>(row)
        }
        .await;
        self.noted(finished)?.map(MatchRecord::try_from).transpose()
    }

    async fn recent_opponents(
        &self,
        tenant: &TenantId,
        users: &[UserId],
        since: Millis,
        per_user: u32,
    ) -> StoreResult<HashMap<UserId, Vec<(UserId, Millis)>>> {
        let names: Vec<&str> = users.iter().map(UserId::as_str).collect();
        // Two index scans per player (by white, by black), newest first.
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT u.user_id, r.them, r.created_at FROM unnest($2::text[]) AS u(user_id) \
             CROSS JOIN LATERAL ( \
               (SELECT black_user_id AS them, created_at FROM match_records \
                WHERE tenant_id = $1 AND white_user_id = u.user_id AND created_at >= $3 \
                ORDER BY created_at DESC LIMIT $4) \
               UNION ALL \
               (SELECT white_user_id, created_at FROM match_records \
                WHERE tenant_id = $1 AND black_user_id = u.user_id AND created_at >= $3 \
                ORDER BY created_at DESC LIMIT $4)) AS r",
        )
        .bind(tenant.as_str())
        .bind(&names)
        .bind(since)
        .bind(i64::from(per_user))
        .fetch_all(&self.pool)
        .await?;
        Ok(relations_sql::newest_opponents(rows, per_user))
    }

    async fn color_histories(
        &self,
        tenant: &TenantId,
        users: &[UserId],
    ) -> StoreResult<HashMap<UserId, ColorHistory>> {
        let names: Vec<&str> = users.iter().map(UserId::as_str).collect();
        // One primary-key lookup per user, whatever the statistics: with
        // `user_id = ANY($2)` a plan cached while the table was nearly empty
        // reads every row of the tenant and filters (measured: most of the
        // database's CPU under load on a fresh schema).
        let rows: Vec<(String, i32, i32)> = sqlx::query_as(
            "SELECT u.user_id, p.color_balance, p.color_streak FROM unnest($2::text[]) AS u(user_id) \
             CROSS JOIN LATERAL (SELECT color_balance, color_streak FROM players \
               WHERE tenant_id = $1 AND user_id = u.user_id LIMIT 1) AS p",
        )
        .bind(tenant.as_str())
        .bind(&names)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(user, balance, streak)| {
                Some((UserId::parse(&user).ok()?, ColorHistory { balance, streak }))
            })
            .collect())
    }
}

#[async_trait]
impl RatingStore for PgStore {
    async fn ratings(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Ratings> {
        let row = sqlx::query_as::<_, RatingsRow>(&format!(
            "SELECT {RATINGS_COLUMNS} FROM players WHERE tenant_id = $1 AND user_id = $2"
        ))
        .bind(tenant.as_str())
        .bind(user.as_str())
        .fetch_optional(&self.pool)
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
        let row = sqlx::query_as::<_, RatingsRow>(&format!(
            "INSERT INTO players (tenant_id, user_id, bullet, blitz, rapid, classical, variant_ratings, rating_deviations, ratings_changed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, {CHANGED_NOW}) \
             ON CONFLICT (tenant_id, user_id) DO UPDATE SET \
               ratings_changed_at = excluded.ratings_changed_at, \
               bullet = COALESCE(excluded.bullet, players.bullet), \
               blitz = COALESCE(excluded.blitz, players.blitz), \
               rapid = COALESCE(excluded.rapid, players.rapid), \
               classical = COALESCE(excluded.classical, players.classical), \
               variant_ratings = CASE WHEN excluded.variant_ratings IS NULL THEN players.variant_ratings \
                 ELSE (COALESCE(players.variant_ratings, '{{}}')::jsonb || excluded.variant_ratings::jsonb)::text END, \
               rating_deviations = CASE WHEN excluded.rating_deviations IS NULL THEN players.rating_deviations \
                 ELSE (COALESCE(players.rating_deviations, '{{}}')::jsonb || excluded.rating_deviations::jsonb)::text END \
             RETURNING {RATINGS_COLUMNS}"
        ))
        .bind(tenant.as_str())
        .bind(user.as_str())
        .bind(update.standard(Speed::Bullet))
        .bind(update.standard(Speed::Blitz))
        .bind(update.standard(Speed::Rapid))
        .bind(update.standard(Speed::Classical))
        .bind(update.variants_json())
        .bind(update.deviations_json())
        .fetch_one(&self.pool)
        .await?;
        row.try_into()
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
        if events.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO audit_events (at, tenant_id, kind, subject, detail) \
             SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[])",
        )
        .bind(events.iter().map(|e| e.at).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.tenant_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.subject.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| e.detail.to_string())
                .collect::<Vec<_>>(),
        )
        .execute(&self.pool)
        .await?;
        Ok(())
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

    async fn audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<(i64, AuditEvent)>> {
        rows::audit_events(&self.pool, query).await
    }
}

#[async_trait]
impl IdempotencyStore for PgStore {
    async fn idempotent_answer(
        &self,
        scope: &IdempotencyScope,
        now: Millis,
    ) -> StoreResult<Option<StoredAnswer>> {
        sqlx::query_as::<_, AnswerRow>(
            "SELECT status, body, fingerprint FROM idempotent_answers \
             WHERE tenant_id = $1 AND user_id = $2 AND key = $3 AND expires_at > $4",
        )
        .bind(scope.tenant_id.as_str())
        .bind(scope.user_id.as_str())
        .bind(&scope.key)
        .bind(now)
        .fetch_optional(&self.pool)
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
        // Stored (or replacing an expired one) answers itself; otherwise the
        // kept one is read by a statement of its own, which sees a racing
        // insert committed while this one waited on it.
        let saved = sqlx::query_as::<_, AnswerRow>(
            "INSERT INTO idempotent_answers (tenant_id, user_id, key, status, body, expires_at, fingerprint) \
             VALUES ($1, $2, $3, $4, $5, $6, $8) \
             ON CONFLICT (tenant_id, user_id, key) DO UPDATE \
             SET status = excluded.status, body = excluded.body, expires_at = excluded.expires_at, \
                 fingerprint = excluded.fingerprint \
             WHERE idempotent_answers.expires_at <= $7 \
             RETURNING status, body, fingerprint",
        )
        .bind(scope.tenant_id.as_str())
        .bind(scope.user_id.as_str())
        .bind(&scope.key)
        .bind(i32::from(answer.status))
        .bind(&answer.body)
        .bind(expires_at)
        .bind(now)
        .bind(&answer.fingerprint)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from);
        if let Some(row) = self.noted(saved)? {
            return row.try_into();
        }
        sqlx::query_as::<_, AnswerRow>(
            "SELECT status, body, fingerprint FROM idempotent_answers \
             WHERE tenant_id = $1 AND user_id = $2 AND key = $3",
        )
        .bind(scope.tenant_id.as_str())
        .bind(scope.user_id.as_str())
        .bind(&scope.key)
        .fetch_one(&self.pool)
        .await?
        .try_into()
    }

    async fn settle_idempotent_answer(
        &self,
        scope: &IdempotencyScope,
        claim: &str,
        answer: Option<StoredAnswer>,
        expires_at: Millis,
    ) -> StoreResult<()> {
        let query = idempotency_sql::settle(scope, claim, answer.as_ref(), expires_at);
        let done = query.execute(&self.pool).await.map_err(StoreError::from);
        self.noted(done)?;
        Ok(())
    }
}

#[async_trait]
impl ConfigStore for PgStore {
    async fn config(&self) -> StoreResult<ConfigRows> {
        // One transaction: the rows are those of the version read.
        let mut tx = self.pool.begin().await?;
        let read = config_sql::rows::<sqlx::Postgres>(&mut tx).await?;
        tx.commit().await?;
        Ok(read)
    }

    async fn config_version(&self) -> StoreResult<i64> {
        let (version,): (i64,) = sqlx::query_as(config_sql::VERSION)
            .fetch_one(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let before =
            config_sql::change::<sqlx::Postgres>(&mut tx, (tenant, scope), body, audit).await?;
        tx.commit().await?;
        Ok(before)
    }
}

#[async_trait]
impl RelationStore for PgStore {
    async fn set_block(
        &self,
        tenant: &TenantId,
        (user, blocked): (&UserId, &UserId),
        on: bool,
        audit: AuditEvent,
    ) -> StoreResult<BlockChange> {
        let mut tx = self.pool.begin().await?;
        let change =
            relations_sql::set_block::<sqlx::Postgres>(&mut tx, (tenant, user, blocked), on, audit)
                .await?;
        tx.commit().await?;
        Ok(change)
    }

    async fn blocks_of(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Vec<UserId>> {
        let rows: Vec<(String,)> = sqlx::query_as(relations_sql::BLOCKS_OF)
            .bind(tenant.as_str())
            .bind(user.as_str())
            .fetch_all(&self.pool)
            .await?;
        relations_sql::blocked_ids(rows)
    }

    async fn relations_among(&self, tenant: &TenantId, users: &[UserId]) -> StoreResult<Relations> {
        let names: Vec<&str> = users.iter().map(UserId::as_str).collect();
        // Primary-key lookups per player, as in `color_histories`.
        let blocks: Vec<(String, String)> = sqlx::query_as(
            "SELECT b.user_id, b.blocked_user_id FROM unnest($2::text[]) AS u(user_id) \
             CROSS JOIN LATERAL (SELECT user_id, blocked_user_id FROM player_blocks \
               WHERE tenant_id = $1 AND user_id = u.user_id) AS b",
        )
        .bind(tenant.as_str())
        .bind(&names)
        .fetch_all(&self.pool)
        .await?;
        let restricted: Vec<(String,)> = sqlx::query_as(
            "SELECT r.user_id FROM unnest($2::text[]) AS u(user_id) \
             CROSS JOIN LATERAL (SELECT user_id FROM restricted_players \
               WHERE tenant_id = $1 AND user_id = u.user_id) AS r",
        )
        .bind(tenant.as_str())
        .bind(&names)
        .fetch_all(&self.pool)
        .await?;
        Ok(relations_sql::among(users, blocks, restricted))
    }
}

#[async_trait]
impl DurableStore for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn write_failure(&self) -> Option<WriteFailure> {
        self.health.failure()
    }

    async fn purge_expired(&self, now: Millis, live_since: Millis) -> StoreResult<u64> {
        let purged = sqlx::query_scalar::<_, i64>(
            "WITH a AS (DELETE FROM idempotent_answers WHERE expires_at <= $1 RETURNING 1), \
                  c AS (UPDATE players SET active_match_id = NULL, active_since = NULL \
                        WHERE active_since < $2 RETURNING 1), \
                  w AS (DELETE FROM withdrawn_matches WHERE withdrawn_at < $2 RETURNING 1) \
             SELECT (SELECT COUNT(*) FROM a) + (SELECT COUNT(*) FROM c) + (SELECT COUNT(*) FROM w)",
        )
        .bind(now)
        .bind(live_since)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::from);
        Ok(self.noted(purged)? as u64)
    }
}
