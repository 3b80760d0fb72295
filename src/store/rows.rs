//! Rows as both SQL backends (SQLite, PostgreSQL) return them, and their
//! checked conversion into domain values: one place for both. A row that
//! does not parse is `StoreError::Corrupt`, never a panic.

use super::{AuditEvent, RatingChange, Ratings, StoreError, StoreResult, StoredAnswer};
use crate::domain::{
    Challenge, ChallengeId, GameId, MatchId, MatchIntent, MatchRecord, MatchSide, MatchSource,
    QueueEntryId, TenantId, UserId, Username,
};

/// The columns a `match_intents` row shares with `match_records` (all but
/// the game), as a literal.
macro_rules! intent_columns {
    () => {
        "match_id, tenant_id, \
         white_user_id, white_username, white_rating, white_entry_id, \
         black_user_id, black_username, black_rating, black_entry_id, \
         pool_key, source, created_at, white_region, black_region, \
         white_time_control, black_time_control"
    };
}

/// Columns a `match_intents` row shares with `match_records`, in the order
/// the inserts bind them.
pub const INTENT_COLUMNS: &str = intent_columns!();

/// Columns of `match_records`, in the order the inserts bind them: the
/// intent's, then the game.
pub const MATCH_COLUMNS: &str = concat!(intent_columns!(), ", game_id, finished_at");

/// Columns of `challenges`, in [`ChallengeRow`] order.
pub const CHALLENGE_COLUMNS: &str = "challenge_id, tenant_id, challenger_id, opponent_id, \
    time_control, mode, variant, preferred_color, status, created_at, expires_at, match_id, game_id";

/// The records of `chunk` whose match id is among `inserted` (the ids an
/// `INSERT … RETURNING match_id` answered): one hash lookup per record.
pub fn newly_inserted<'r>(
    chunk: impl IntoIterator<Item = &'r MatchRecord>,
    inserted: Vec<String>,
) -> impl Iterator<Item = &'r MatchRecord> {
    let inserted: std::collections::HashSet<String> = inserted.into_iter().collect();
    chunk
        .into_iter()
        .filter(move |r| inserted.contains(&r.match_id.to_string()))
}

pub(super) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

/// A match as both tables hold it, before its game ([`INTENT_COLUMNS`]).
#[derive(sqlx::FromRow)]
pub struct IntentRow {
    match_id: String,
    tenant_id: String,
    white_user_id: String,
    white_username: Option<String>,
    white_rating: i32,
    white_entry_id: Option<String>,
    black_user_id: String,
    black_username: Option<String>,
    black_rating: i32,
    black_entry_id: Option<String>,
    pool_key: String,
    source: String,
    created_at: i64,
    white_region: Option<String>,
    black_region: Option<String>,
    white_time_control: Option<String>,
    black_time_control: Option<String>,
}

/// A row of `match_records` ([`MATCH_COLUMNS`]).
#[derive(sqlx::FromRow)]
pub struct MatchRow {
    #[sqlx(flatten)]
    intent: IntentRow,
    game_id: String,
    finished_at: Option<i64>,
}

/// A row of `match_records` with its no-show cooldown
/// ([`COOLDOWN_COLUMNS`]).
#[derive(sqlx::FromRow)]
pub struct CooldownRow {
    #[sqlx(flatten)]
    record: MatchRow,
    no_show_user_id: String,
    cooldown_until: i64,
}

/// Columns of a [`CooldownRow`].
pub const COOLDOWN_COLUMNS: &str = concat!(
    intent_columns!(),
    ", game_id, finished_at, no_show_user_id, cooldown_until"
);

impl TryFrom<CooldownRow> for super::Cooldown {
    type Error = StoreError;

    fn try_from(r: CooldownRow) -> StoreResult<Self> {
        Ok(super::Cooldown {
            record: r.record.try_into()?,
            user_id: UserId::parse(&r.no_show_user_id)
                .map_err(|_| corrupt("match_records.no_show_user_id"))?,
            until: r.cooldown_until,
        })
    }
}

fn side(
    user: &str,
    username: Option<&str>,
    rating: i32,
    entry: Option<&str>,
    (region, time_control): (Option<&str>, Option<&str>),
) -> StoreResult<MatchSide> {
    Ok(MatchSide {
        region: region
            .map(|r| r.parse().map_err(|_| corrupt("match_records.region")))
            .transpose()?,
        time_control: time_control
            .map(|t| t.parse().map_err(|_| corrupt("match_records.time_control")))
            .transpose()?,
        user_id: UserId::parse(user).map_err(|_| corrupt("match_records.user_id"))?,
        username: username.and_then(Username::sanitize),
        rating,
        entry_id: entry
            .map(|e| QueueEntryId::parse(e).map_err(|_| corrupt("match_records.entry_id")))
            .transpose()?,
    })
}

impl TryFrom<IntentRow> for MatchIntent {
    type Error = StoreError;

    fn try_from(r: IntentRow) -> StoreResult<Self> {
        Ok(MatchIntent {
            match_id: MatchId::parse(&r.match_id).map_err(|_| corrupt("match_records.match_id"))?,
            tenant_id: TenantId::parse(&r.tenant_id)
                .map_err(|_| corrupt("match_records.tenant_id"))?,
            white: side(
                &r.white_user_id,
                r.white_username.as_deref(),
                r.white_rating,
                r.white_entry_id.as_deref(),
                (r.white_region.as_deref(), r.white_time_control.as_deref()),
            )?,
            black: side(
                &r.black_user_id,
                r.black_username.as_deref(),
                r.black_rating,
                r.black_entry_id.as_deref(),
                (r.black_region.as_deref(), r.black_time_control.as_deref()),
            )?,
            pool: r
                .pool_key
                .parse()
                .map_err(|_| corrupt("match_records.pool_key"))?,
            created_at: r.created_at,
            source: match r.source.as_str() {
                "queue" => MatchSource::Queue,
                "challenge" => MatchSource::Challenge,
                _ => return Err(corrupt("match_records.source")),
            },
        })
    }
}

impl TryFrom<MatchRow> for MatchRecord {
    type Error = StoreError;

    fn try_from(r: MatchRow) -> StoreResult<Self> {
        let game_id = GameId::parse(&r.game_id).map_err(|_| corrupt("match_records.game_id"))?;
        Ok(MatchRecord {
            finished_at: r.finished_at,
            ..MatchIntent::try_from(r.intent)?.with_game(game_id)
        })
    }
}

/// Converts intent rows, stopping at the first corrupt one.
pub fn intents(rows: Vec<IntentRow>) -> StoreResult<Vec<MatchIntent>> {
    rows.into_iter().map(MatchIntent::try_from).collect()
}

/// A live claim as read back: tenant, user, its match, when it began.
#[derive(sqlx::FromRow)]
pub struct ClaimRow {
    pub tenant_id: String,
    pub user_id: String,
    pub match_id: String,
    pub since: i64,
}

/// The claims of `rows` that are live (`since` at or after `live_since`),
/// as [`super::claims::decide`] reads them; corrupt rows are skipped
/// (they can only make a claim look free to the one match that wrote it).
pub fn live_claims(
    rows: Vec<ClaimRow>,
    live_since: i64,
) -> std::collections::HashMap<(TenantId, UserId), MatchId> {
    rows.into_iter()
        .filter(|r| r.since >= live_since)
        .filter_map(|r| {
            Some((
                (
                    TenantId::parse(&r.tenant_id).ok()?,
                    UserId::parse(&r.user_id).ok()?,
                ),
                MatchId::parse(&r.match_id).ok()?,
            ))
        })
        .collect()
}

/// A kept idempotent answer.
#[derive(sqlx::FromRow)]
pub struct AnswerRow {
    status: i32,
    body: String,
    fingerprint: String,
}

impl TryFrom<AnswerRow> for StoredAnswer {
    type Error = StoreError;

    fn try_from(r: AnswerRow) -> StoreResult<Self> {
        Ok(StoredAnswer {
            status: u16::try_from(r.status).map_err(|_| corrupt("idempotent_answers.status"))?,
            body: r.body,
            fingerprint: r.fingerprint,
        })
    }
}

/// Converts rows, stopping at the first corrupt one.
pub fn records(rows: Vec<MatchRow>) -> StoreResult<Vec<MatchRecord>> {
    rows.into_iter().map(MatchRecord::try_from).collect()
}

#[derive(sqlx::FromRow)]
pub struct ChallengeRow {
    challenge_id: String,
    tenant_id: String,
    challenger_id: String,
    opponent_id: String,
    time_control: String,
    mode: String,
    variant: String,
    preferred_color: String,
    status: String,
    created_at: i64,
    expires_at: i64,
    match_id: Option<String>,
    game_id: Option<String>,
}

impl TryFrom<ChallengeRow> for Challenge {
    type Error = StoreError;

    fn try_from(r: ChallengeRow) -> StoreResult<Self> {
        let bad = |what: &str| corrupt(&format!("challenges.{what}"));
        Ok(Challenge {
            id: ChallengeId::parse(&r.challenge_id).map_err(|_| bad("challenge_id"))?,
            tenant_id: TenantId::parse(&r.tenant_id).map_err(|_| bad("tenant_id"))?,
            challenger: UserId::parse(&r.challenger_id).map_err(|_| bad("challenger_id"))?,
            opponent: UserId::parse(&r.opponent_id).map_err(|_| bad("opponent_id"))?,
            time_control: r.time_control.parse().map_err(|_| bad("time_control"))?,
            mode: r.mode.parse().map_err(|_| bad("mode"))?,
            variant: r.variant.parse().map_err(|_| bad("variant"))?,
            preferred_color: r
                .preferred_color
                .parse()
                .map_err(|_| bad("preferred_color"))?,
            status: r.status.parse().map_err(|_| bad("status"))?,
            created_at: r.created_at,
            expires_at: r.expires_at,
            match_id: r
                .match_id
                .map(|m| MatchId::parse(&m).map_err(|_| bad("match_id")))
                .transpose()?,
            game_id: r
                .game_id
                .map(|g| GameId::parse(&g).map_err(|_| bad("game_id")))
                .transpose()?,
        })
    }
}

/// Converts rows, stopping at the first corrupt one.
pub fn challenges(rows: Vec<ChallengeRow>) -> StoreResult<Vec<Challenge>> {
    rows.into_iter().map(Challenge::try_from).collect()
}

/// Columns of a [`RatingsRow`], from `players`.
pub const RATINGS_COLUMNS: &str =
    "bullet, blitz, rapid, classical, variant_ratings, rating_deviations";

#[derive(sqlx::FromRow)]
pub struct RatingsRow {
    bullet: Option<i32>,
    blitz: Option<i32>,
    rapid: Option<i32>,
    classical: Option<i32>,
    variant_ratings: Option<String>,
    rating_deviations: Option<String>,
}

impl TryFrom<RatingsRow> for Ratings {
    type Error = StoreError;

    fn try_from(r: RatingsRow) -> StoreResult<Self> {
        Ratings::from_columns(
            [r.bullet, r.blitz, r.rapid, r.classical],
            r.variant_ratings.as_deref(),
            r.rating_deviations.as_deref(),
        )
    }
}

/// Columns of a [`PlayerRatingsRow`], from `players`.
pub const PLAYER_RATINGS_COLUMNS: &str = "tenant_id, user_id, bullet, blitz, rapid, classical, variant_ratings, rating_deviations, ratings_changed_at";

#[derive(sqlx::FromRow)]
pub struct PlayerRatingsRow {
    tenant_id: String,
    user_id: String,
    #[sqlx(flatten)]
    ratings: RatingsRow,
    ratings_changed_at: i64,
}

impl TryFrom<PlayerRatingsRow> for RatingChange {
    type Error = StoreError;

    fn try_from(r: PlayerRatingsRow) -> StoreResult<Self> {
        Ok(RatingChange {
            tenant_id: TenantId::parse(&r.tenant_id).map_err(|_| corrupt("players.tenant_id"))?,
            user_id: UserId::parse(&r.user_id).map_err(|_| corrupt("players.user_id"))?,
            ratings: r.ratings.try_into()?,
            changed_at: r.ratings_changed_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct AuditRow {
    at: i64,
    tenant_id: String,
    kind: String,
    subject: String,
    detail: String,
}

impl TryFrom<AuditRow> for AuditEvent {
    type Error = StoreError;

    fn try_from(r: AuditRow) -> StoreResult<Self> {
        Ok(AuditEvent {
            at: r.at,
            tenant_id: TenantId::parse(&r.tenant_id)
                .map_err(|_| corrupt("audit_events.tenant_id"))?,
            kind: r.kind,
            subject: r.subject,
            detail: serde_json::from_str(&r.detail).map_err(|_| corrupt("audit_events.detail"))?,
        })
    }
}

/// An audit event with its id (the audit log read page by page).
#[derive(sqlx::FromRow)]
pub struct AuditIdRow {
    id: i64,
    #[sqlx(flatten)]
    event: AuditRow,
}

impl TryFrom<AuditIdRow> for (i64, AuditEvent) {
    type Error = StoreError;

    fn try_from(r: AuditIdRow) -> StoreResult<Self> {
        Ok((r.id, AuditEvent::try_from(r.event)?))
    }
}

/// The audit log of a tenant, newest first, filtered: one statement for
/// both SQL stores (`$n` binds by number on SQLite too). Binds: tenant,
/// kind, subject, before, limit (a NULL filter lets every row through).
pub const AUDIT_EVENTS: &str = "SELECT id, at, tenant_id, kind, subject, detail FROM audit_events \
     WHERE tenant_id = $1 \
       AND (CAST($2 AS TEXT) IS NULL OR kind = $2) \
       AND (CAST($3 AS TEXT) IS NULL OR subject = $3) \
       AND (CAST($4 AS BIGINT) IS NULL OR id < $4) \
     ORDER BY id DESC LIMIT $5";

/// Runs [`AUDIT_EVENTS`] for `query` on `executor`.
pub async fn audit_events<'e, DB, E>(
    executor: E,
    query: &super::AuditQuery,
) -> StoreResult<Vec<(i64, AuditEvent)>>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'e, Database = DB>,
    AuditIdRow: for<'r> sqlx::FromRow<'r, DB::Row>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<String>: sqlx::Encode<'q, DB>,
    for<'q> Option<i64>: sqlx::Encode<'q, DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
{
    let rows: Vec<AuditIdRow> = sqlx::query_as(AUDIT_EVENTS)
        .bind(query.tenant_id.to_string())
        .bind(query.kind.clone())
        .bind(query.subject.clone())
        .bind(query.before)
        .bind(i64::from(query.limit))
        .fetch_all(executor)
        .await?;
    rows.into_iter()
        .map(<(i64, AuditEvent)>::try_from)
        .collect()
}
