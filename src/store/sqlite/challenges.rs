//! [`ChallengeStore`] on SQLite: each change is one conditional statement
//! (run by the writer), so racing changes have exactly one winner.

use async_trait::async_trait;

use super::SqliteStore;
use crate::domain::{Challenge, ChallengeId, Millis, TenantId, UserId};
use crate::store::rows::{self, CHALLENGE_COLUMNS, ChallengeRow};
use crate::store::{ChallengeStore, Direction, StoreResult, Transition};

#[async_trait]
impl ChallengeStore for SqliteStore {
    async fn create_challenge(
        &self,
        c: &Challenge,
        max_pending: u32,
        now: Millis,
    ) -> StoreResult<bool> {
        let c = c.clone();
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    let sql = format!(
                        "INSERT INTO challenges ({CHALLENGE_COLUMNS}, updated_at) \
                         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, NULL, NULL, ?10 \
                         WHERE (SELECT COUNT(*) FROM challenges \
                                WHERE tenant_id = ?2 AND challenger_id = ?3 \
                                  AND (status = 'ACCEPTING' OR (status = 'PENDING' AND expires_at > ?12))) < ?13"
                    );
                    let done = sqlx::query(&sql)
                        .bind(c.id.to_string())
                        .bind(c.tenant_id.as_str())
                        .bind(c.challenger.as_str())
                        .bind(c.opponent.as_str())
                        .bind(c.time_control.to_string())
                        .bind(c.mode.as_str())
                        .bind(c.variant.as_str())
                        .bind(c.preferred_color.as_str())
                        .bind(c.status.as_str())
                        .bind(c.created_at)
                        .bind(c.expires_at)
                        .bind(now)
                        .bind(i64::from(max_pending))
                        .execute(&mut *conn)
                        .await?;
                    Ok(done.rows_affected() == 1)
                })
            })
            .await
    }

    async fn challenge(
        &self,
        tenant: &TenantId,
        id: &ChallengeId,
    ) -> StoreResult<Option<Challenge>> {
        let sql = format!(
            "SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE challenge_id = ? AND tenant_id = ?"
        );
        let row = sqlx::query_as::<_, ChallengeRow>(&sql)
            .bind(id.to_string())
            .bind(tenant.as_str())
            .fetch_optional(&self.reads)
            .await?;
        row.map(Challenge::try_from).transpose()
    }

    async fn pending_challenges(
        &self,
        tenant: &TenantId,
        user: &UserId,
        direction: Direction,
        now: Millis,
    ) -> StoreResult<Vec<Challenge>> {
        let column = match direction {
            Direction::Incoming => "opponent_id",
            Direction::Outgoing => "challenger_id",
        };
        let sql = format!(
            "SELECT {CHALLENGE_COLUMNS} FROM challenges \
             WHERE tenant_id = ? AND {column} = ? \
               AND (status = 'ACCEPTING' OR (status = 'PENDING' AND expires_at > ?)) \
             ORDER BY created_at DESC LIMIT 500"
        );
        let rows = sqlx::query_as(&sql)
            .bind(tenant.as_str())
            .bind(user.as_str())
            .bind(now)
            .fetch_all(&self.reads)
            .await?;
        rows::challenges(rows)
    }

    async fn transition_challenge(
        &self,
        tenant: &TenantId,
        id: &ChallengeId,
        change: Transition<'_>,
        now: Millis,
    ) -> StoreResult<bool> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        let (to, from) = (change.to.as_str(), change.from.as_str());
        let match_id = change.match_id.map(|m| m.to_string());
        let game_id = change.game_id.map(|g| g.as_str().to_owned());
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE challenges SET status = ?1, updated_at = ?2, \
                           match_id = COALESCE(?3, match_id), game_id = COALESCE(?4, game_id) \
                         WHERE challenge_id = ?5 AND tenant_id = ?6 AND status = ?7 \
                           AND (?7 <> 'PENDING' OR expires_at > ?2)",
                    )
                    .bind(to)
                    .bind(now)
                    .bind(match_id)
                    .bind(game_id)
                    .bind(id)
                    .bind(tenant)
                    .bind(from)
                    .execute(&mut *conn)
                    .await?;
                    Ok(done.rows_affected() == 1)
                })
            })
            .await
    }

    async fn expire_challenges(&self, now: Millis) -> StoreResult<u64> {
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE challenges SET status = 'EXPIRED', updated_at = ?1 \
                         WHERE status = 'PENDING' AND expires_at <= ?1",
                    )
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                    Ok(done.rows_affected())
                })
            })
            .await
    }

    async fn stale_accepting(&self, before: Millis) -> StoreResult<Vec<Challenge>> {
        let sql = format!(
            "SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE status = 'ACCEPTING' AND updated_at < ?"
        );
        rows::challenges(
            sqlx::query_as(&sql)
                .bind(before)
                .fetch_all(&self.reads)
                .await?,
        )
    }
}
