//! [`ChallengeStore`] on PostgreSQL, with the statements both SQL stores
//! share ([`crate::store::challenge_sql`]). A transition is one conditional
//! UPDATE (the row lock makes racing ones have one winner). Unlike SQLite
//! (one writer), many nodes create challenges at once here: a create takes
//! a per-challenger advisory lock so the pending count cannot be overrun.

use async_trait::async_trait;

use super::PgStore;
use crate::domain::{Challenge, ChallengeId, Millis, TenantId, UserId};
use crate::store::challenge_sql as sql;
use crate::store::rows::{self, ChallengeRow};
use crate::store::{ChallengeStore, Direction, StoreResult, Transition};

#[async_trait]
impl ChallengeStore for PgStore {
    async fn create_challenge(
        &self,
        c: &Challenge,
        max_pending: u32,
        now: Millis,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        // PostgreSQL only: the count and the insert of one challenger's
        // creates on several nodes are serialized by this lock.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 0))")
            .bind(c.tenant_id.as_str())
            .bind(c.challenger.as_str())
            .execute(&mut *tx)
            .await?;
        let done = sql::insert(c, max_pending, now).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn challenge(
        &self,
        tenant: &TenantId,
        id: &ChallengeId,
    ) -> StoreResult<Option<Challenge>> {
        let row = sqlx::query_as::<_, ChallengeRow>(&sql::BY_ID)
            .bind(id.to_string())
            .bind(tenant.as_str())
            .fetch_optional(&self.pool)
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
        let statement = match direction {
            Direction::Incoming => &sql::PENDING_INCOMING,
            Direction::Outgoing => &sql::PENDING_OUTGOING,
        };
        let rows = sqlx::query_as(statement)
            .bind(tenant.as_str())
            .bind(user.as_str())
            .bind(now)
            .fetch_all(&self.pool)
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
        let done = sql::transition(tenant.as_str(), &id.to_string(), &change, now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn expire_challenges(&self, now: Millis) -> StoreResult<u64> {
        let done = sqlx::query(sql::EXPIRE)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn stale_accepting(&self, before: Millis) -> StoreResult<Vec<Challenge>> {
        rows::challenges(
            sqlx::query_as(&sql::STALE_ACCEPTING)
                .bind(before)
                .fetch_all(&self.pool)
                .await?,
        )
    }
}
