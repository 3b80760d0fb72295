//! The block statements both SQL stores run, written once (`$n` binds by
//! number on SQLite too), over a connection in a transaction the store
//! opened. Reading the blocks among many players differs (an array on
//! PostgreSQL, a list of binds on SQLite) and stays in each store; both
//! read rows by blocker and keep those among the players ([`among`]).

use sqlx::{Database, Executor, IntoArguments};

use super::config_sql::record_audit;
use super::rows::corrupt;
use super::{AuditEvent, BlockChange, MAX_BLOCKS_PER_USER, Relations, StoreResult};
use crate::domain::{TenantId, UserId};

/// A block, added only while its blocker has fewer than `$5`.
const INSERT: &str = "INSERT INTO player_blocks (tenant_id, user_id, blocked_user_id, created_at) \
     SELECT $1, $2, $3, $4 \
     WHERE (SELECT COUNT(*) FROM player_blocks WHERE tenant_id = $1 AND user_id = $2) < $5 \
     ON CONFLICT (tenant_id, user_id, blocked_user_id) DO NOTHING \
     RETURNING 1";

const EXISTS: &str = "SELECT 1 FROM player_blocks \
     WHERE tenant_id = $1 AND user_id = $2 AND blocked_user_id = $3";

const DELETE: &str = "DELETE FROM player_blocks \
     WHERE tenant_id = $1 AND user_id = $2 AND blocked_user_id = $3 RETURNING 1";

/// `$1` tenant, `$2` the blocker: whom they block, oldest first.
pub const BLOCKS_OF: &str = "SELECT blocked_user_id FROM player_blocks \
     WHERE tenant_id = $1 AND user_id = $2 ORDER BY created_at, blocked_user_id";

/// Adds or lifts one block; records `audit` when something changed.
pub async fn set_block<'c, DB>(
    conn: &'c mut DB::Connection,
    (tenant, user, blocked): (&TenantId, &UserId, &UserId),
    on: bool,
    audit: AuditEvent,
) -> StoreResult<BlockChange>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    (i32,): for<'r> sqlx::FromRow<'r, DB::Row>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let ids = [tenant.to_string(), user.to_string(), blocked.to_string()];
    let changed = if on {
        let added: Option<(i32,)> = sqlx::query_as(INSERT)
            .bind(ids[0].clone())
            .bind(ids[1].clone())
            .bind(ids[2].clone())
            .bind(audit.at)
            .bind(MAX_BLOCKS_PER_USER as i64)
            .fetch_optional(&mut *conn)
            .await?;
        if added.is_none() {
            let there: Option<(i32,)> = sqlx::query_as(EXISTS)
                .bind(ids[0].clone())
                .bind(ids[1].clone())
                .bind(ids[2].clone())
                .fetch_optional(&mut *conn)
                .await?;
            return Ok(if there.is_some() {
                BlockChange::Unchanged
            } else {
                BlockChange::Full
            });
        }
        true
    } else {
        let [t, u, b] = ids;
        let gone: Option<(i32,)> = sqlx::query_as(DELETE)
            .bind(t)
            .bind(u)
            .bind(b)
            .fetch_optional(&mut *conn)
            .await?;
        gone.is_some()
    };
    if !changed {
        return Ok(BlockChange::Unchanged);
    }
    record_audit::<DB>(conn, audit).await?;
    Ok(BlockChange::Changed)
}

/// The players a blocker's rows name, read back.
pub fn blocked_ids(rows: Vec<(String,)>) -> StoreResult<Vec<UserId>> {
    rows.into_iter()
        .map(|(u,)| UserId::parse(&u).map_err(|_| corrupt("player_blocks.blocked_user_id")))
        .collect()
}

/// Of the blocks of `users` (blocker, blocked) and those of them
/// restricted, the relations among `users`: a block counts when
/// its blocked player is one of them too.
pub fn among(
    users: &[UserId],
    blocks: Vec<(String, String)>,
    restricted: Vec<(String,)>,
) -> Relations {
    let asked: std::collections::HashSet<&str> = users.iter().map(UserId::as_str).collect();
    Relations {
        blocks: blocks
            .into_iter()
            .filter(|(_, b)| asked.contains(b.as_str()))
            .filter_map(|(a, b)| Some((UserId::parse(&a).ok()?, UserId::parse(&b).ok()?)))
            .collect(),
        restricted: restricted
            .into_iter()
            .filter_map(|(u,)| UserId::parse(&u).ok())
            .collect(),
    }
}

/// Rows of (player, opponent, created at), as both stores read a batch of
/// players' latest games, newest first per player, at most `per_user`.
pub fn newest_opponents(
    mut rows: Vec<(String, String, i64)>,
    per_user: u32,
) -> std::collections::HashMap<UserId, Vec<(UserId, crate::domain::Millis)>> {
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.2.cmp(&a.2)));
    let mut out: std::collections::HashMap<UserId, Vec<(UserId, crate::domain::Millis)>> =
        std::collections::HashMap::new();
    for (me, them, at) in rows {
        let (Ok(me), Ok(them)) = (UserId::parse(&me), UserId::parse(&them)) else {
            continue;
        };
        let mine = out.entry(me).or_default();
        if mine.len() < per_user as usize {
            mine.push((them, at));
        }
    }
    out
}
