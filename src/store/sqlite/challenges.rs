//! [`ChallengeStore`] on SQLite, with the statements both SQL stores share
//! ([`crate::store::challenge_sql`]). Each change is one conditional
//! statement run by the writer — SQLite's one writer, so a create's count
//! and insert never interleave with another's (PostgreSQL needs a lock for
//! that) — and racing changes have exactly one winner.

use async_trait::async_trait;

use super::SqliteStore;
use crate::domain::{Challenge, ChallengeId, Millis, TenantId, UserId};
use crate::store::challenge_sql as sql;
use crate::store::rows::{self, ChallengeRow};
use crate::store::{ChallengeStore, Direction, StoreResult, Transition};

#[async_trait]
impl ChallengeStore for SqliteStore {
    async fn create_challenge(
        &self,
        c: &Challenge,
        max_pending: u32,
        now: Millis,
    ) -> StoreResult<bool> {
        let statement = sql::insert(c, max_pending, now);
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    let done = statement.execute(&mut *conn).await?;
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
        let row = sqlx::query_as::<_, ChallengeRow>(&sql::BY_ID)
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
        let statement = match direction {
            Direction::Incoming => &sql::PENDING_INCOMING,
            Direction::Outgoing => &sql::PENDING_OUTGOING,
        };
        let rows = sqlx::query_as(statement)
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
        let statement = sql::transition(tenant.as_str(), &id.to_string(), &change, now);
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    let done = statement.execute(&mut *conn).await?;
                    Ok(done.rows_affected() == 1)
                })
            })
            .await
    }

    async fn expire_challenges(&self, now: Millis) -> StoreResult<u64> {
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    let done = sqlx::query(sql::EXPIRE)
                        .bind(now)
                        .execute(&mut *conn)
                        .await?;
                    Ok(done.rows_affected())
                })
            })
            .await
    }

    async fn stale_accepting(&self, before: Millis) -> StoreResult<Vec<Challenge>> {
        rows::challenges(
            sqlx::query_as(&sql::STALE_ACCEPTING)
                .bind(before)
                .fetch_all(&self.reads)
                .await?,
        )
    }
}
