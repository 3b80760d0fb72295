//! The statement settling an idempotency key in flight, written once for
//! both SQL stores (`$n` placeholders serve both, as in
//! [`super::challenge_sql`]).

use sqlx::{Database, Encode, Type};

use super::challenge_sql::Statement;
use super::{IdempotencyScope, StoredAnswer};
use crate::domain::Millis;

/// The in-flight mark `$4` under a key becomes the answer.
const KEEP: &str = "UPDATE idempotent_answers SET status = $5, body = $6, expires_at = $7 \
     WHERE tenant_id = $1 AND user_id = $2 AND key = $3 AND status = 0 AND body = $4";

/// The in-flight mark `$4` under a key goes.
const DROP: &str = "DELETE FROM idempotent_answers \
     WHERE tenant_id = $1 AND user_id = $2 AND key = $3 AND status = 0 AND body = $4";

/// Replaces the mark `claim` left under `scope` with `answer` (kept until
/// `expires_at`), or drops it when `answer` is `None`; bound.
pub fn settle<DB>(
    scope: &IdempotencyScope,
    claim: &str,
    answer: Option<&StoredAnswer>,
    expires_at: Millis,
) -> Statement<DB>
where
    DB: Database,
    String: Encode<'static, DB> + Type<DB>,
    i32: Encode<'static, DB> + Type<DB>,
    i64: Encode<'static, DB> + Type<DB>,
{
    let query = sqlx::query::<DB>(if answer.is_some() { KEEP } else { DROP })
        .bind(scope.tenant_id.as_str().to_owned())
        .bind(scope.user_id.as_str().to_owned())
        .bind(scope.key.clone())
        .bind(claim.to_owned());
    match answer {
        Some(answer) => query
            .bind(i32::from(answer.status))
            .bind(answer.body.clone())
            .bind(expires_at),
        None => query,
    }
}
