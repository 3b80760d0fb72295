//! The run-time configuration statements both SQL stores run, written once
//! (`$n` binds by number on SQLite too), over a connection in a transaction
//! the store opened: SQLite's one writer, or a PostgreSQL transaction whose
//! first statement (moving the version counter) locks out concurrent
//! changes.
//!
//! Matching policies live in `pool_policies` (`pool_key` `''` for the
//! tenant's own), the tenant's configuration and flags in `tenant_settings`
//! (`kind` `config` or `flags`), players restricted for fair play in
//! `restricted_players`; each holds a JSON object of the fields set.

use serde_json::Value;
use sqlx::{Database, Executor, IntoArguments};

use super::rows::corrupt;
use super::{AuditEvent, ConfigRow, ConfigRows, ConfigScope, StoreResult};
use crate::domain::{TenantId, UserId};

/// The version the configuration is at (one counter for every kind: the
/// row keeps the name it had when it counted policies only).
pub const VERSION: &str = "SELECT version FROM config_versions WHERE name = 'policies'";

const BUMP: &str =
    "UPDATE config_versions SET version = version + 1 WHERE name = 'policies' RETURNING version";

/// Where a scope's row lives: its table, the column that tells it from
/// its tenant's other rows and that column's value, the body's column.
struct Place {
    table: &'static str,
    key_column: &'static str,
    key: String,
    body_column: &'static str,
}

impl Place {
    fn of(scope: ConfigScope) -> Self {
        let setting = |kind: &str| Place {
            table: "tenant_settings",
            key_column: "kind",
            key: kind.to_owned(),
            body_column: "body",
        };
        match scope {
            ConfigScope::Policy(pool) => Place {
                table: "pool_policies",
                key_column: "pool_key",
                key: pool.map(|p| p.to_string()).unwrap_or_default(),
                body_column: "policy",
            },
            ConfigScope::Tenant => setting("config"),
            ConfigScope::Flags => setting("flags"),
            ConfigScope::Restricted(user) => Place {
                table: "restricted_players",
                key_column: "user_id",
                key: user.to_string(),
                body_column: "body",
            },
        }
    }
}

fn body_of(text: &str, table: &'static str) -> StoreResult<Value> {
    serde_json::from_str::<Value>(text)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| corrupt(table))
}

/// Every row, and the version.
pub async fn rows<'c, DB>(conn: &'c mut DB::Connection) -> StoreResult<ConfigRows>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
    (String, String, String): for<'r> sqlx::FromRow<'r, DB::Row>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let (version,): (i64,) = sqlx::query_as(VERSION).fetch_one(&mut *conn).await?;
    let tenant_of = |raw: &str, table| TenantId::parse(raw).map_err(|_| corrupt(table));
    let mut rows = Vec::new();
    let policies: Vec<(String, String, String)> =
        sqlx::query_as("SELECT tenant_id, pool_key, policy FROM pool_policies")
            .fetch_all(&mut *conn)
            .await?;
    for (tenant, pool, body) in policies {
        let pool = (!pool.is_empty())
            .then(|| pool.parse().map_err(|_| corrupt("pool_policies.pool_key")))
            .transpose()?;
        rows.push(ConfigRow {
            tenant_id: tenant_of(&tenant, "pool_policies.tenant_id")?,
            scope: ConfigScope::Policy(pool),
            body: body_of(&body, "pool_policies.policy")?,
        });
    }
    let settings: Vec<(String, String, String)> =
        sqlx::query_as("SELECT tenant_id, kind, body FROM tenant_settings")
            .fetch_all(&mut *conn)
            .await?;
    for (tenant, kind, body) in settings {
        let scope = match kind.as_str() {
            "config" => ConfigScope::Tenant,
            "flags" => ConfigScope::Flags,
            _ => return Err(corrupt("tenant_settings.kind")),
        };
        rows.push(ConfigRow {
            tenant_id: tenant_of(&tenant, "tenant_settings.tenant_id")?,
            scope,
            body: body_of(&body, "tenant_settings.body")?,
        });
    }
    let restricted: Vec<(String, String, String)> =
        sqlx::query_as("SELECT tenant_id, user_id, body FROM restricted_players")
            .fetch_all(&mut *conn)
            .await?;
    for (tenant, user, body) in restricted {
        let user = UserId::parse(&user).map_err(|_| corrupt("restricted_players.user_id"))?;
        rows.push(ConfigRow {
            tenant_id: tenant_of(&tenant, "restricted_players.tenant_id")?,
            scope: ConfigScope::Restricted(user),
            body: body_of(&body, "restricted_players.body")?,
        });
    }
    Ok(ConfigRows { version, rows })
}

/// Sets or drops one row, moves the version, records `audit` with the row
/// there was before (in its detail, as `before`); answers it.
pub async fn change<'c, DB>(
    conn: &'c mut DB::Connection,
    (tenant, scope): (&TenantId, ConfigScope),
    body: Option<Value>,
    mut audit: AuditEvent,
) -> StoreResult<Option<Value>>
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
    sqlx::query_as::<_, (i64,)>(BUMP)
        .fetch_one(&mut *conn)
        .await?;
    let Place {
        table,
        key_column,
        key,
        body_column,
    } = Place::of(scope);
    let tenant = tenant.to_string();
    let before: Option<(String,)> = sqlx::query_as(&format!(
        "SELECT {body_column} FROM {table} WHERE tenant_id = $1 AND {key_column} = $2"
    ))
    .bind(tenant.clone())
    .bind(key.clone())
    .fetch_optional(&mut *conn)
    .await?;
    let before = before.map(|(b,)| body_of(&b, table)).transpose()?;
    match body {
        Some(body) => {
            sqlx::query(&format!(
                "INSERT INTO {table} (tenant_id, {key_column}, {body_column}, updated_at, updated_by) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (tenant_id, {key_column}) DO UPDATE SET \
                   {body_column} = excluded.{body_column}, updated_at = excluded.updated_at, \
                   updated_by = excluded.updated_by"
            ))
            .bind(tenant)
            .bind(key)
            .bind(body.to_string())
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
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE tenant_id = $1 AND {key_column} = $2"
            ))
            .bind(tenant)
            .bind(key)
            .execute(&mut *conn)
            .await?;
        }
    }
    audit.detail["before"] = before.clone().unwrap_or_default();
    record_audit::<DB>(conn, audit).await?;
    Ok(before)
}

/// Records one audit event in the transaction of the change it is about.
pub async fn record_audit<'c, DB>(
    conn: &'c mut DB::Connection,
    audit: AuditEvent,
) -> StoreResult<()>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
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
    Ok(())
}
