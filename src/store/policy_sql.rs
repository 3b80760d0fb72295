//! The policy statements both SQL stores run, written once (`$n` binds by
//! number on SQLite too), over a connection in a transaction the store
//! opened: SQLite's one writer, or a PostgreSQL transaction whose first
//! statement (moving the version counter) locks out concurrent changes.

use sqlx::{Database, Executor, IntoArguments};

use super::rows::corrupt;
use super::{AuditEvent, PolicyRow, StoreResult};
use crate::domain::{PolicyPatch, PoolKey, TenantId};

/// The version the policies are at.
pub const VERSION: &str = "SELECT version FROM config_versions WHERE name = 'policies'";

/// A pool key column: `''` for the tenant's own policy.
fn pool_column(pool: Option<PoolKey>) -> String {
    pool.map(|p| p.to_string()).unwrap_or_default()
}

fn patch_of(text: &str) -> StoreResult<PolicyPatch> {
    serde_json::from_str(text).map_err(|_| corrupt("pool_policies.policy"))
}

/// Every policy row, and the version.
pub async fn policies<'c, DB>(conn: &'c mut DB::Connection) -> StoreResult<(i64, Vec<PolicyRow>)>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
    (String, String, String): for<'r> sqlx::FromRow<'r, DB::Row>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let (version,): (i64,) = sqlx::query_as(VERSION).fetch_one(&mut *conn).await?;
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT tenant_id, pool_key, policy FROM pool_policies")
            .fetch_all(&mut *conn)
            .await?;
    let rows = rows
        .into_iter()
        .map(|(tenant, pool, policy)| {
            Ok(PolicyRow {
                tenant_id: TenantId::parse(&tenant)
                    .map_err(|_| corrupt("pool_policies.tenant_id"))?,
                pool: (!pool.is_empty())
                    .then(|| pool.parse().map_err(|_| corrupt("pool_policies.pool_key")))
                    .transpose()?,
                patch: patch_of(&policy)?,
            })
        })
        .collect::<StoreResult<_>>()?;
    Ok((version, rows))
}

/// Sets or drops one policy, moves the version, records `audit` with the
/// policy there was before (in its detail, as `before`); answers it.
pub async fn change<'c, DB>(
    conn: &'c mut DB::Connection,
    (tenant, pool): (&TenantId, Option<PoolKey>),
    patch: Option<PolicyPatch>,
    mut audit: AuditEvent,
) -> StoreResult<Option<PolicyPatch>>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
    (String,): for<'r> sqlx::FromRow<'r, DB::Row>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    // First: on PostgreSQL this row lock orders concurrent changes.
    sqlx::query_as::<_, (i64,)>(
        "UPDATE config_versions SET version = version + 1 WHERE name = 'policies' RETURNING version",
    )
    .fetch_one(&mut *conn)
    .await?;
    let (tenant, pool) = (tenant.to_string(), pool_column(pool));
    let before: Option<(String,)> =
        sqlx::query_as("SELECT policy FROM pool_policies WHERE tenant_id = $1 AND pool_key = $2")
            .bind(tenant.clone())
            .bind(pool.clone())
            .fetch_optional(&mut *conn)
            .await?;
    let before = before.map(|(p,)| patch_of(&p)).transpose()?;
    match patch {
        Some(patch) => {
            let text = serde_json::to_string(&patch).unwrap_or_default();
            sqlx::query(
                "INSERT INTO pool_policies (tenant_id, pool_key, policy, updated_at, updated_by) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (tenant_id, pool_key) DO UPDATE SET \
                   policy = excluded.policy, updated_at = excluded.updated_at, \
                   updated_by = excluded.updated_by",
            )
            .bind(tenant)
            .bind(pool)
            .bind(text)
            .bind(audit.at)
            .bind(
                audit.detail["actor"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
            .execute(&mut *conn)
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM pool_policies WHERE tenant_id = $1 AND pool_key = $2")
                .bind(tenant)
                .bind(pool)
                .execute(&mut *conn)
                .await?;
        }
    }
    audit.detail["before"] = serde_json::to_value(before).unwrap_or_default();
    sqlx::query(
        "INSERT INTO audit_events (at, tenant_id, kind, subject, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(audit.at)
    .bind(audit.tenant_id.to_string())
    .bind(audit.kind)
    .bind(audit.subject)
    .bind(audit.detail.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(before)
}
