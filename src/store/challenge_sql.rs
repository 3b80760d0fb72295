//! The challenge statements both SQL stores run, written once. The `$n`
//! placeholders are PostgreSQL's, and sqlx's SQLite driver binds `$n` by
//! number as well, so one text serves both dialects; the binds of the
//! longer statements are written once too ([`insert`], [`transition`]).
//!
//! What differs stays in each store, commented there: SQLite runs each
//! change on its one writer connection (so a create's pending count and
//! insert cannot interleave with another create), while PostgreSQL, with
//! many nodes writing, takes a per-challenger advisory lock around a create.

use std::sync::LazyLock;

use sqlx::query::Query;
use sqlx::{Database, Encode, Type};

use super::Transition;
use super::rows::CHALLENGE_COLUMNS;
use crate::domain::{Challenge, Millis};

/// A challenge, inserted only while its challenger has fewer than `$13`
/// pending or accepting challenges (pending ones counted until they
/// expire at `$12`, now).
static INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO challenges ({CHALLENGE_COLUMNS}, updated_at) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, NULL, $10 \
         WHERE (SELECT COUNT(*) FROM challenges \
                WHERE tenant_id = $2 AND challenger_id = $3 \
                  AND (status = 'ACCEPTING' OR (status = 'PENDING' AND expires_at > $12))) < $13"
    )
});

/// One challenge of a tenant: `$1` id, `$2` tenant.
pub static BY_ID: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE challenge_id = $1 AND tenant_id = $2")
});

/// `$1` tenant, `$2` the player, `$3` now; newest first.
fn pending(column: &str) -> String {
    format!(
        "SELECT {CHALLENGE_COLUMNS} FROM challenges \
         WHERE tenant_id = $1 AND {column} = $2 \
           AND (status = 'ACCEPTING' OR (status = 'PENDING' AND expires_at > $3)) \
         ORDER BY created_at DESC LIMIT 500"
    )
}

/// The pending challenges a player received.
pub static PENDING_INCOMING: LazyLock<String> = LazyLock::new(|| pending("opponent_id"));
/// The pending challenges a player sent.
pub static PENDING_OUTGOING: LazyLock<String> = LazyLock::new(|| pending("challenger_id"));

/// A transition applies only from its status (and a pending challenge
/// only before it expires): racing ones have exactly one winner.
const TRANSITION: &str = "UPDATE challenges SET status = $1, updated_at = $2, \
       match_id = COALESCE($3, match_id), game_id = COALESCE($4, game_id) \
     WHERE challenge_id = $5 AND tenant_id = $6 AND status = $7 \
       AND ($7 <> 'PENDING' OR expires_at > $2)";

/// `$1` now.
pub const EXPIRE: &str = "UPDATE challenges SET status = 'EXPIRED', updated_at = $1 \
     WHERE status = 'PENDING' AND expires_at <= $1";

/// `$1` the time accepting must have started before.
pub static STALE_ACCEPTING: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE status = 'ACCEPTING' AND updated_at < $1"
    )
});

/// A statement with its binds, for either SQL store.
pub type Statement<DB> = Query<'static, DB, <DB as Database>::Arguments<'static>>;

/// The insert of `c`, bound.
pub fn insert<DB>(c: &Challenge, max_pending: u32, now: Millis) -> Statement<DB>
where
    DB: Database,
    String: Encode<'static, DB> + Type<DB>,
    i64: Encode<'static, DB> + Type<DB>,
{
    sqlx::query::<DB>(&INSERT)
        .bind(c.id.to_string())
        .bind(c.tenant_id.to_string())
        .bind(c.challenger.to_string())
        .bind(c.opponent.to_string())
        .bind(c.time_control.to_string())
        .bind(c.mode.as_str().to_owned())
        .bind(c.variant.as_str().to_owned())
        .bind(c.preferred_color.as_str().to_owned())
        .bind(c.status.as_str().to_owned())
        .bind(c.created_at)
        .bind(c.expires_at)
        .bind(now)
        .bind(i64::from(max_pending))
}

/// The transition of a challenge (`id` of `tenant`), bound.
pub fn transition<DB>(tenant: &str, id: &str, change: &Transition<'_>, now: Millis) -> Statement<DB>
where
    DB: Database,
    String: Encode<'static, DB> + Type<DB>,
    Option<String>: Encode<'static, DB> + Type<DB>,
    i64: Encode<'static, DB> + Type<DB>,
{
    sqlx::query::<DB>(TRANSITION)
        .bind(change.to.as_str().to_owned())
        .bind(now)
        .bind(change.match_id.map(|m| m.to_string()))
        .bind(change.game_id.map(|g| g.as_str().to_owned()))
        .bind(id.to_owned())
        .bind(tenant.to_owned())
        .bind(change.from.as_str().to_owned())
}
