//! The OpenAPI document (`GET /openapi.json`), generated with `utoipa`
//! from the handlers' `#[utoipa::path]` annotations: the router is built
//! from the same annotated handlers (see [`super::router`]), so a route
//! cannot be served undocumented. The answer types below are what the
//! handlers return (each `Serialize + ToSchema`), so the document is the
//! code; the responses every route shares ([`Refusals`], [`AdminRefusals`],
//! [`ErrorBody`]) are declared once. The contract tests still read real
//! answers against the document.

use serde::Serialize;
use serde_json::Value;

use crate::domain::{
    self, ChallengeId, Color, GameId, Mode, PoolKey, PreferredColor, QueueEntryId, Region, Speed,
    TenantId, TimeControl, UserId, Username, Variant, rfc3339,
};
use crate::store;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

/// The name of the bearer security scheme in the document.
pub const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "matchmaking-api",
        description = "Queues players by tenant, variant, time control, mode and region, pairs them by rating with a window that widens while they wait, creates the game (through live-game-api when LIVE_GAME_API_URL is set, else with the built-in creator, which mints game ids itself) and hands both players the game id. Also direct challenges, admin introspection, metrics and health.",
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "queue", description = "Joining, leaving and following the matchmaking queue."),
        (name = "challenges", description = "Direct challenges between two players."),
        (name = "admin", description = "Admin and game-service endpoints: a token with the admin role (or, for a finished game, the game service's callback token)."),
        (name = "operations", description = "Health, readiness, metrics and this document; no token."),
    ),
)]
pub struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "`sub` = user id, `tenant_id` = tenant, `exp` required; `roles` containing `admin` for the admin endpoints.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every error: `{"error": {"code", "message", "request_id"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// INVALID_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, ALREADY_IN_QUEUE,
    /// ACTIVE_GAME_EXISTS, COOLDOWN, CANNOT_CANCEL, INVALID_STATE, CANNOT_ACCEPT,
    /// TOO_MANY_CHALLENGES, CHALLENGES_DISABLED, PAYLOAD_TOO_LARGE,
    /// METHOD_NOT_ALLOWED, IDEMPOTENCY_KEY_REUSED, IDEMPOTENCY_IN_PROGRESS,
    /// RATE_LIMITED, MATCHMAKING_UNAVAILABLE, INTERNAL_ERROR.
    #[schema(example = "ALREADY_IN_QUEUE")]
    pub code: String,
    pub message: String,
    /// The request's `X-Request-Id`.
    pub request_id: String,
}

/// What every route behind a bearer token may answer besides its own
/// answers, declared once (each route lists `Refusals` in its responses).
#[derive(IntoResponses)]
pub enum Refusals {
    #[response(
        status = 401,
        description = "UNAUTHORIZED: missing or invalid bearer token"
    )]
    Unauthorized(ErrorBody),
    #[response(status = 429, description = "RATE_LIMITED: see Retry-After")]
    RateLimited(ErrorBody),
    #[response(
        status = 503,
        description = "MATCHMAKING_UNAVAILABLE: a store is down, or game creation is down and matching paused (Retry-After)"
    )]
    Unavailable(ErrorBody),
}

/// What an admin route may answer besides [`Refusals`] and its own answers.
#[derive(IntoResponses)]
pub enum AdminRefusals {
    #[response(
        status = 403,
        description = "FORBIDDEN: the token lacks the admin role"
    )]
    Forbidden(ErrorBody),
}

/// POST /v1/matchmaking/queue
#[derive(Serialize, ToSchema)]
pub struct JoinRequest {
    /// `<minutes>+<increment seconds>`, one the tenant allows. Give this or
    /// `time_controls`.
    #[schema(example = "5+0")]
    pub time_control: Option<String>,
    /// Several time controls of one speed at once (1-4, e.g. `["3+0",
    /// "3+2"]`): the entry waits in each of these pools, and the first
    /// match made in any of them ends the search in all (the status shows
    /// the match's `time_control`). Give this or `time_control`.
    pub time_controls: Option<Vec<String>>,
    /// `rated` or `casual`.
    #[schema(example = "rated")]
    pub mode: String,
    /// Defaults to `standard`.
    #[schema(example = "standard")]
    pub variant: Option<String>,
    /// Defaults to the configured default region.
    #[schema(example = "EU")]
    pub region: Option<String>,
    /// A small free-form object (size and depth bounded).
    #[schema(value_type = Option<Object>)]
    pub client_metadata: Option<Value>,
    /// The player's own rating range: never paired outside it (it can
    /// only narrow the pool's window). A join again with another range is
    /// another search (409 `ALREADY_IN_QUEUE`).
    pub rating_range: Option<RatingRangeRequest>,
}

/// A partner's rating must lie within `[rating + min_delta, rating +
/// max_delta]`.
#[derive(Serialize, ToSchema)]
pub struct RatingRangeRequest {
    /// -2000 to 0.
    #[schema(example = -200, minimum = -2000, maximum = 0)]
    pub min_delta: i32,
    /// 0 to 2000.
    #[schema(example = 150, minimum = 0, maximum = 2000)]
    pub max_delta: i32,
}

/// POST /v1/matchmaking/queue: 201.
#[derive(Serialize, ToSchema)]
pub struct JoinResponse {
    #[schema(value_type = String, example = "q_01JD1YV6T3J9XK3W5Q0H2M8N4P")]
    pub queue_entry_id: QueueEntryId,
    /// `SEARCHING`.
    pub status: &'static str,
    /// From the recent real waits of players rated near this one (of the
    /// pool when too few): the median.
    pub estimated_wait_seconds: u64,
    /// ...and the wait four in five of them did not exceed.
    pub estimated_wait_p80_seconds: u64,
}

#[derive(Serialize, ToSchema)]
pub struct RatingSnapshot {
    #[schema(value_type = String, example = "5+0")]
    pub time_control: TimeControl,
    #[schema(value_type = String, example = "rated")]
    pub mode: Mode,
    pub rating: i32,
}

#[derive(Serialize, ToSchema)]
pub struct Opponent {
    #[schema(value_type = String)]
    pub user_id: UserId,
    #[schema(value_type = Option<String>)]
    pub username: Option<Username>,
    pub rating_snapshot: RatingSnapshot,
}

impl Opponent {
    /// The opponent as shown to a player, with the rating snapshot of the pool.
    pub fn shown(opponent: &domain::Opponent, pool: &PoolKey) -> Self {
        Self {
            user_id: opponent.user_id.clone(),
            username: opponent.username.clone(),
            rating_snapshot: RatingSnapshot {
                time_control: opponent.time_control.unwrap_or(pool.time_control),
                mode: pool.mode,
                rating: opponent.rating,
            },
        }
    }
}

/// GET /v1/matchmaking/queue/{queue_entry_id}
#[derive(Serialize, ToSchema)]
pub struct EntryStatus {
    #[schema(value_type = String)]
    pub queue_entry_id: QueueEntryId,
    /// `SEARCHING`, `MATCHED`, `TIMED_OUT` or `CANCELLED`.
    pub status: &'static str,
    /// While `SEARCHING`: the median wait of players rated near this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_wait_seconds: Option<u64>,
    /// While `SEARCHING`: the wait four in five of them did not exceed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_wait_p80_seconds: Option<u64>,
    /// When `MATCHED`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub game_id: Option<GameId>,
    /// When `MATCHED`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opponent: Option<Opponent>,
    /// When `MATCHED`: the match's time control (for an entry that waited
    /// in several, the one it was matched in).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "3+2")]
    pub time_control: Option<TimeControl>,
    /// When `MATCHED`: when the match was made (RFC 3339, milliseconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_at: Option<String>,
    /// When `CANCELLED` or `TIMED_OUT`, why: `PLAYER` (cancelled by its
    /// player), `ABSENT` (its client was not heard from for
    /// PRESENCE_TIMEOUT_SECONDS), `ACTIVE_GAME` (its player was in a game
    /// already) or `MAX_QUEUE_TIME` (timed out).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub reason: Option<&'static str>,
    /// The player's own rating range, when the join gave one (not on a
    /// `MATCHED` answer read from the match record).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<RatingRangeRequest>)]
    pub rating_range: Option<domain::RatingRange>,
}

/// One event of `GET /v1/matchmaking/queue/{queue_entry_id}/events`, as a
/// Server-Sent Events client reads it.
#[derive(Serialize, ToSchema)]
pub struct QueueEvent {
    /// Grows with the search: 1 + the rating window's widenings so far for
    /// `SEARCHING`, `1000000` for the final event.
    pub id: String,
    /// The entry's status answer (an `EntryStatus` object), as JSON text.
    #[schema(content_media_type = "application/json")]
    pub data: String,
    /// `message` (the default event type).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// On the first event: milliseconds a client waits before it reconnects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<u64>,
}

/// DELETE /v1/matchmaking/queue/{queue_entry_id}
#[derive(Serialize, ToSchema)]
pub struct Cancelled {
    #[schema(value_type = String)]
    pub queue_entry_id: QueueEntryId,
    /// `CANCELLED`.
    pub status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct ActiveEntry {
    #[schema(value_type = String)]
    pub queue_entry_id: QueueEntryId,
    pub status: &'static str,
    #[schema(value_type = String)]
    pub time_control: TimeControl,
    #[schema(value_type = String)]
    pub mode: Mode,
    #[schema(value_type = String)]
    pub variant: Variant,
    #[schema(value_type = String)]
    pub region: Region,
    /// RFC 3339.
    pub enqueued_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct ActiveMatch {
    /// `null` while the game is being created.
    #[schema(value_type = Option<String>)]
    pub game_id: Option<GameId>,
    #[schema(value_type = String)]
    pub time_control: TimeControl,
    #[schema(value_type = String)]
    pub mode: Mode,
    #[schema(value_type = String)]
    pub variant: Variant,
    /// `white` or `black`: the caller's color.
    #[schema(value_type = String)]
    pub color: Color,
    pub opponent: Opponent,
}

/// GET /v1/matchmaking/active
#[derive(Serialize, ToSchema)]
pub struct Active {
    pub queue_entry: Option<ActiveEntry>,
    #[serde(rename = "match")]
    pub game: Option<ActiveMatch>,
}

/// POST /v1/matchmaking/challenges
#[derive(Serialize, ToSchema)]
pub struct ChallengeRequest {
    pub opponent_user_id: String,
    #[schema(example = "5+0")]
    pub time_control: String,
    #[schema(example = "casual")]
    pub mode: String,
    /// Defaults to `standard`.
    pub variant: Option<String>,
    /// `white`, `black` or `random` (the default).
    pub preferred_color: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Challenge {
    #[schema(value_type = String, example = "c_01JD1YV6T3J9XK3W5Q0H2M8N4P")]
    pub challenge_id: ChallengeId,
    /// `PENDING`, `ACCEPTED`, `DECLINED`, `CANCELLED` or `EXPIRED`.
    pub status: &'static str,
    #[schema(value_type = String)]
    pub challenger_user_id: UserId,
    #[schema(value_type = String)]
    pub opponent_user_id: UserId,
    #[schema(value_type = String)]
    pub time_control: TimeControl,
    #[schema(value_type = String)]
    pub mode: Mode,
    #[schema(value_type = String)]
    pub variant: Variant,
    #[schema(value_type = String)]
    pub preferred_color: PreferredColor,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub expires_at: String,
    /// Once `ACCEPTED`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub game_id: Option<GameId>,
}

impl From<&domain::Challenge> for Challenge {
    fn from(c: &domain::Challenge) -> Self {
        Self {
            challenge_id: c.id,
            status: c.status.public(),
            challenger_user_id: c.challenger.clone(),
            opponent_user_id: c.opponent.clone(),
            time_control: c.time_control,
            mode: c.mode,
            variant: c.variant,
            preferred_color: c.preferred_color,
            created_at: rfc3339(c.created_at),
            expires_at: rfc3339(c.expires_at),
            game_id: c.game_id.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ChallengeList {
    pub challenges: Vec<Challenge>,
}

/// PUT /internal/ratings/{tenant_id}/{user_id}: any subset of speeds (the
/// standard variant's) and of pools `{speed}_{variant}`, e.g.
/// `{"blitz": 1620, "blitz_chess960": 2100}`; a rating may come with its
/// deviation (Glicko RD, 0–1000): `{"blitz": {"rating": 1620, "rd": 80}}`.
/// A bare rating keeps the stored deviation (350 when none was given).
#[derive(Serialize, ToSchema)]
pub struct RatingsUpdate {
    pub bullet: Option<i32>,
    pub blitz: Option<i32>,
    pub rapid: Option<i32>,
    pub classical: Option<i32>,
    /// Other variants: `{speed}_{variant}` → rating.
    #[serde(flatten)]
    pub variants: std::collections::BTreeMap<String, i32>,
}

/// A player's ratings: every speed of the standard variant (1500 where
/// never set), and each other variant's pool that is set
/// (`"blitz_chess960": 2100`).
#[derive(Serialize, ToSchema)]
pub struct Ratings {
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    #[schema(value_type = String)]
    pub user_id: UserId,
    pub bullet: i32,
    pub blitz: i32,
    pub rapid: i32,
    pub classical: i32,
    /// The deviations given (Glicko RD), by the same keys: a speed for the
    /// standard variant, `{speed}_{variant}` for another. A rating without
    /// one is read as 350 (provisional). Absent when none was given.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub rating_deviations: std::collections::BTreeMap<String, u16>,
    /// Other variants set: `{speed}_{variant}` → rating.
    #[serde(flatten)]
    pub variants: std::collections::BTreeMap<String, i32>,
}

impl Ratings {
    pub fn of(tenant: &TenantId, user: &UserId, ratings: store::Ratings) -> Self {
        let standard = |speed| ratings.get(domain::RatingPool::standard(speed));
        Self {
            tenant_id: tenant.clone(),
            user_id: user.clone(),
            bullet: standard(Speed::Bullet),
            blitz: standard(Speed::Blitz),
            rapid: standard(Speed::Rapid),
            classical: standard(Speed::Classical),
            rating_deviations: ratings
                .deviations()
                .map(|(pool, d)| {
                    let key = if pool.variant == domain::Variant::Standard {
                        pool.speed.as_str().to_owned()
                    } else {
                        pool.to_string()
                    };
                    (key, d)
                })
                .collect(),
            variants: ratings
                .variants()
                .map(|(pool, r)| (pool.to_string(), r))
                .collect(),
        }
    }
}

/// POST /internal/games/{game_id}/finished: optional body.
#[derive(Serialize, ToSchema)]
pub struct GameFinishedRequest {
    /// The game's tenant; required with the game service's token, else the
    /// admin's own tenant.
    pub tenant_id: Option<String>,
}

/// POST /internal/games/{game_id}/aborted
#[derive(Serialize, ToSchema)]
pub struct GameAbortedRequest {
    /// The game's tenant (optional for an admin: the admin's own).
    pub tenant_id: Option<String>,
    /// The player who did not show up (never moved).
    pub no_show_user_id: String,
}

/// An aborted game.
#[derive(Serialize, ToSchema)]
pub struct GameAborted {
    #[schema(value_type = String)]
    pub game_id: GameId,
    /// `ABORTED`.
    pub status: &'static str,
    #[schema(value_type = String)]
    pub no_show_user_id: UserId,
    /// The player who showed up, searching again with their place kept
    /// (absent when they came from a challenge or already wait again).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub requeued_user_id: Option<UserId>,
    /// Their entry, `SEARCHING` again.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub requeued_queue_entry_id: Option<QueueEntryId>,
    /// Until when the player who did not show up may not join (RFC 3339).
    pub cooldown_until: String,
}

impl GameAborted {
    pub fn of(a: crate::services::queue::Aborted) -> Self {
        let (user, entry) = a.requeued.unzip();
        Self {
            game_id: a.game_id,
            status: "ABORTED",
            no_show_user_id: a.no_show_user_id,
            requeued_user_id: user,
            requeued_queue_entry_id: entry,
            cooldown_until: rfc3339(a.cooldown_until),
        }
    }
}

/// A block, after a PUT or DELETE.
#[derive(Serialize, ToSchema)]
pub struct Block {
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    #[schema(value_type = String)]
    pub user_id: UserId,
    #[schema(value_type = String)]
    pub blocked_user_id: UserId,
    /// Whether `user_id` blocks `blocked_user_id` now.
    pub blocked: bool,
    /// Whether this request changed it.
    pub changed: bool,
}

/// GET /internal/blocks/{tenant_id}/{user_id}
#[derive(Serialize, ToSchema)]
pub struct Blocks {
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    #[schema(value_type = String)]
    pub user_id: UserId,
    /// Oldest block first; at most 1000.
    #[schema(value_type = Vec<String>)]
    pub blocked_user_ids: Vec<UserId>,
}

/// PUT /internal/restricted/{tenant_id}/{user_id} (the body is optional).
#[derive(Serialize, ToSchema)]
pub struct RestrictionRequest {
    /// Why, for the audit log; at most 200 characters.
    pub reason: Option<String>,
}

/// A player's fair-play restriction.
#[derive(Serialize, ToSchema)]
pub struct Restriction {
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    #[schema(value_type = String)]
    pub user_id: UserId,
    /// Restricted players are paired only with each other.
    pub restricted: bool,
    /// Whether this request changed it (always `false` on GET).
    pub changed: bool,
}

#[derive(Serialize, ToSchema)]
pub struct GameFinished {
    #[schema(value_type = String)]
    pub game_id: GameId,
    /// `FINISHED`.
    pub status: &'static str,
    #[schema(value_type = Vec<String>)]
    pub released_user_ids: Vec<UserId>,
}

/// GET /internal/queues/summary
#[derive(Serialize, ToSchema)]
pub struct QueueSummary {
    /// RFC 3339.
    pub timestamp: String,
    pub queues: Vec<crate::services::summary::PoolSummary>,
    /// Per side of each tenant's matcher experiment (tenants running one,
    /// of the pools listed): figures of the last 5 minutes, from the audit
    /// log of decisions.
    pub experiments: Vec<crate::services::summary::ArmSummary>,
}

/// A matching policy's fields (the settings' names; times in seconds). In
/// a PUT, the fields to set (at least one; `max_rating_gap` in force must
/// stay at least `initial_rating_window`); in an answer's `policy`, the
/// fields set there; in `effective`, every field as in force.
#[derive(Serialize, ToSchema)]
pub struct PolicyFields {
    /// Rating window of a player who has just arrived (0–4000).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 4000)]
    pub initial_rating_window: Option<i32>,
    /// Seconds between two widenings of the window (at least 0.001, at most 86400).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.001, maximum = 86400)]
    pub rating_window_widening_interval: Option<f64>,
    /// Rating points the window widens by each time (0–4000).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 4000)]
    pub rating_window_widening_amount: Option<i32>,
    /// The widest the window gets (at least the initial window, at most 4000).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 4000)]
    pub max_rating_gap: Option<i32>,
    /// Seconds an entry searches before it times out (1–86400).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86400)]
    pub max_queue_time_seconds: Option<f64>,
    /// Seconds an entry waits before it may also meet players of
    /// `region_fallback_regions` (0–86400); absent in `effective`: never.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86400)]
    pub region_fallback_seconds: Option<f64>,
    /// Regions a waiting entry falls back to, behind every partner of its
    /// own region; `[]` turns fallback off. Both players must accept each
    /// other's region (a `GLOBAL` entry accepts every region).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region_fallback_regions: Option<Vec<String>>,
    /// Rating points of gap a repeat pairing costs at most in a pass's
    /// score (0–4000; 0: off): two players who met within
    /// `repeat_window_seconds` or `repeat_window_games` games of either.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 4000)]
    pub repeat_penalty: Option<i32>,
    /// Seconds a meeting counts as recent (0–86400).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86400)]
    pub repeat_window_seconds: Option<f64>,
    /// A player's latest games a meeting counts in (0–20).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 20)]
    pub repeat_window_games: Option<u32>,
    /// Once the shorter of two players' waits reaches this many seconds, a
    /// repeat costs them nothing (0–86400).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86400)]
    pub repeat_waive_seconds: Option<f64>,
    /// Rating-deviation-aware windows (0–1000; 0: off): a player's window
    /// is the plain one times `deviation / deviation_reference`, kept
    /// within `deviation_min_percent`–`deviation_max_percent` percent of
    /// it and never past `max_rating_gap`. Provisional players (high
    /// deviation) start wider; established ones stay tighter.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1000)]
    pub deviation_reference: Option<i32>,
    /// The least a deviation scales a window to, in percent (1–100).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub deviation_min_percent: Option<i32>,
    /// The most a deviation scales a window to, in percent (100–1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 100, maximum = 1000)]
    pub deviation_max_percent: Option<i32>,
}

/// A tenant's or a pool's policy.
#[derive(Serialize, ToSchema)]
pub struct PolicyScope {
    pub tenant_id: String,
    /// Absent for the tenant's own policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_key: Option<String>,
    /// The fields set here; `null` when nothing is.
    pub policy: Option<PolicyFields>,
    /// What is in force here: these fields, then the tenant's, then the settings'.
    pub effective: PolicyFields,
    /// After a PUT or DELETE: what was set here before (`null`: nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Option<PolicyFields>>,
}

/// GET /internal/policies/{tenant_id}
#[derive(Serialize, ToSchema)]
pub struct TenantPolicies {
    /// The settings' policy, under everything set.
    pub defaults: PolicyFields,
    pub tenant: PolicyScope,
    /// The pools with a policy of their own.
    pub pools: Vec<PolicyScope>,
}

/// What a tenant offers its players. In a PUT, the fields to set (at least
/// one; `default_region` in force must be one of the regions in force); in
/// an answer's `config`, the fields set; in `effective`, every field as in
/// force.
#[derive(Serialize, ToSchema)]
pub struct TenantConfigFields {
    /// Time controls a join or challenge may ask for (`<minutes>+<increment>`; 1–64).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1, max_items = 64)]
    pub time_controls: Option<Vec<String>>,
    /// Variants offered (at least one).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1)]
    pub variants: Option<Vec<String>>,
    /// Regions offered (at least one).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1)]
    pub regions: Option<Vec<String>>,
    /// Where a join without a region (or with `DEFAULT`) goes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_region: Option<String>,
}

/// A tenant's configuration.
#[derive(Serialize, ToSchema)]
pub struct TenantConfigScope {
    pub tenant_id: String,
    /// The fields set; `null` when nothing is.
    pub config: Option<TenantConfigFields>,
    /// What is in force: these fields, then the settings'.
    pub effective: TenantConfigFields,
    /// After a PUT or DELETE: what was set before (`null`: nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Option<TenantConfigFields>>,
}

/// An A/B test of the matcher: `treatment_percent` of the tenant's players
/// (by a hash of `name` and the user: always the same side) are matched
/// among themselves with `treatment`, the others with `control`.
#[derive(Serialize, ToSchema)]
pub struct ExperimentFields {
    /// 1–64 letters, digits, `-`, `_` or `.`; a new name deals the players afresh.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
    /// `window` (the rating window alone) or `volume` (holds for a closer partner while arrivals are plentiful; the default).
    pub control: String,
    pub treatment: String,
    /// 0–100.
    #[schema(minimum = 0, maximum = 100)]
    pub treatment_percent: u8,
}

/// A tenant's feature flags. In a PUT, the flags to set (at least one); in
/// an answer's `flags`, the flags set; in `effective`, every flag in force.
#[derive(Serialize, ToSchema)]
pub struct FlagsFields {
    /// Direct challenges on (off: every challenge route answers 404 `CHALLENGES_DISABLED`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenges: Option<bool>,
    /// The matcher experiment; `null` or absent: none.
    pub matcher_experiment: Option<ExperimentFields>,
}

/// A tenant's flags.
#[derive(Serialize, ToSchema)]
pub struct FlagsScope {
    pub tenant_id: String,
    /// The flags set; `null` when none is.
    pub flags: Option<FlagsFields>,
    /// What is in force: these flags, then the settings'.
    pub effective: FlagsFields,
    /// After a PUT or DELETE: what was set before (`null`: nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Option<FlagsFields>>,
}

/// GET /internal/audit
#[derive(Serialize, ToSchema)]
pub struct AuditLog {
    /// Newest first.
    pub events: Vec<AuditEntry>,
    /// Pass as `before` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// One recorded decision or change.
#[derive(Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    /// RFC 3339.
    pub at: String,
    pub tenant_id: String,
    /// `match`, `timeout`, `game_finished`, …
    pub kind: String,
    /// What it is about: a match id, an entry id, …
    pub subject: String,
    /// The decision's figures (an object).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`.
    pub status: &'static str,
    pub checks: ReadinessChecks,
    pub backends: ReadinessBackends,
}

/// A failed readiness check: the error shape, plus which check failed.
#[derive(Serialize, ToSchema)]
pub struct NotReady {
    pub error: ErrorDetail,
    /// `unavailable`.
    pub status: &'static str,
    pub checks: ReadinessChecks,
    pub backends: ReadinessBackends,
}

/// What this node runs on: each backend's kind and state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessBackends {
    pub queue_store: BackendState,
    pub durable_store: BackendState,
    pub game_creator: BackendState,
    pub ratings: BackendState,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BackendState {
    /// Queue store: `memory`, `redis`, `redis-cluster`; durable store:
    /// `sqlite`, `postgres`; game creator: `built-in`, `live-game-api`;
    /// ratings: `local` (the durable store's table), `rating-api` (the
    /// rating service, falling back to the table).
    pub kind: &'static str,
    /// A store: `ok` or `unavailable`. A service: its circuit breaker,
    /// `closed`, `open` or `half_open` (the local table: `ok`).
    pub state: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessChecks {
    /// `ok`, or why not (unreachable; guards being rebuilt after a loss).
    pub queue_store: String,
    /// `ok`, or why not (unreachable; cannot write since when, and why).
    pub durable_store: String,
    /// The game-creation circuit breaker: `closed`, `open` or `half_open`.
    pub game_creation: &'static str,
}

/// Pattern of tenant, user and game ids: printable ASCII without space,
/// `/`, `"` or `\` (the rule [`TenantId::parse`] and its kin apply).
const OPAQUE_ID_PATTERN: &str = r#"^[!#-.0-\[\]-~]+$"#;

/// Pattern of the ids this service mints: a prefix and a ULID in upper-case
/// Crockford base32.
fn minted_id_pattern(prefix: &str) -> String {
    format!("^{prefix}[0-7][0-9A-HJKMNP-TV-Z]{{25}}$")
}

/// Makes the generated document as strict as the server: the allowed values
/// (the default tenant's time controls, variants and regions; modes,
/// colors, statuses and error codes) as enums, the id rules as patterns and
/// lengths, nullability as the parsers have it. Every value comes from the
/// code that enforces it; `tests/api/openapi.rs` and schemathesis hold the
/// server to the result.
pub fn strict(doc: &mut Value, tenant: &domain::TenantConfig) {
    use serde_json::json;
    let strings = |values: Vec<String>| json!(values);
    let time_controls = strings(tenant.time_controls.iter().map(|t| t.to_string()).collect());
    let modes = strings(Mode::ALL.iter().map(|m| m.as_str().to_owned()).collect());
    let variants = strings(
        tenant
            .variants
            .iter()
            .map(|v| v.as_str().to_owned())
            .collect(),
    );
    let mut region_names: Vec<String> = tenant
        .regions
        .iter()
        .map(|r| r.as_str().to_owned())
        .collect();
    region_names.push(domain::DEFAULT_REGION_NAME.to_owned());
    let regions = json!(region_names);
    let stored_regions = strings(Region::ALL.iter().map(|r| r.as_str().to_owned()).collect());
    let colors = json!(["white", "black"]);
    let preferred = strings(
        PreferredColor::ALL
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect(),
    );
    let entry_statuses = json!(["SEARCHING", "MATCHED", "CANCELLED", "TIMED_OUT"]);
    let mut challenge_statuses: Vec<&str> = domain::ChallengeStatus::ALL
        .iter()
        .map(|s| s.public())
        .collect();
    challenge_statuses.dedup();
    let opaque = |max: usize| json!({ "type": "string", "minLength": 1, "maxLength": max, "pattern": OPAQUE_ID_PATTERN });
    let nullable = |mut schema: Value| {
        schema["type"] = json!([schema["type"].clone(), "null"]);
        if let Some(values) = schema.get_mut("enum").and_then(Value::as_array_mut) {
            values.push(Value::Null);
        }
        schema
    };
    let enumerated = |values: &Value| json!({ "type": "string", "enum": values });
    // A pool key as stored: `{variant}_{time_control}_{mode}_{region}`.
    let alternatives = |values: &Value| {
        let names: Vec<String> = values
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|v| v.replace('+', "\\+"))
            .collect();
        format!("({})", names.join("|"))
    };
    let pool_key_pattern = format!(
        "^{}_{}_{}_{}$",
        alternatives(&strings(
            Variant::ALL.iter().map(|v| v.as_str().to_owned()).collect()
        )),
        alternatives(&time_controls),
        alternatives(&modes),
        alternatives(&stored_regions)
    );

    let schemas = &mut doc["components"]["schemas"];
    // A policy sets at least one field (utoipa's `min_properties` writes
    // `maxProperties`).
    schemas["PolicyFields"]["minProperties"] = json!(1);
    put(
        schemas,
        "PolicyFields",
        "region_fallback_regions",
        json!({ "type": "array", "items": enumerated(&stored_regions) }),
    );
    // Tenant configuration and flags: at least one field, each from its set.
    schemas["TenantConfigFields"]["minProperties"] = json!(1);
    schemas["FlagsFields"]["minProperties"] = json!(1);
    let time_control_item = json!({ "type": "string", "pattern": "^[0-9]{1,3}\\+[0-9]{1,3}$" });
    put(
        schemas,
        "TenantConfigFields",
        "time_controls",
        json!({ "type": "array", "items": time_control_item, "minItems": 1, "maxItems": crate::domain::MAX_TIME_CONTROLS }),
    );
    let all_variants = strings(Variant::ALL.iter().map(|v| v.as_str().to_owned()).collect());
    put(
        schemas,
        "TenantConfigFields",
        "variants",
        json!({ "type": "array", "items": enumerated(&all_variants), "minItems": 1 }),
    );
    put(
        schemas,
        "TenantConfigFields",
        "regions",
        json!({ "type": "array", "items": enumerated(&stored_regions), "minItems": 1 }),
    );
    put(
        schemas,
        "TenantConfigFields",
        "default_region",
        enumerated(&stored_regions),
    );
    let strategies = strings(
        crate::domain::Strategy::ALL
            .iter()
            .map(|v| v.as_str().to_owned())
            .collect(),
    );
    put(
        schemas,
        "ExperimentFields",
        "control",
        enumerated(&strategies),
    );
    put(
        schemas,
        "ExperimentFields",
        "treatment",
        enumerated(&strategies),
    );
    // Requests: the pool fields a join and a challenge share.
    for request in ["JoinRequest", "ChallengeRequest"] {
        put(schemas, request, "time_control", enumerated(&time_controls));
        put(schemas, request, "mode", enumerated(&modes));
        put(schemas, request, "variant", nullable(enumerated(&variants)));
    }
    put(
        schemas,
        "JoinRequest",
        "region",
        nullable(enumerated(&regions)),
    );
    // One time control, or several of one speed: exactly one of the two.
    let of_one_speed: Vec<Value> = Speed::ALL
        .iter()
        .map(|&speed| {
            strings(
                tenant
                    .time_controls
                    .iter()
                    .filter(|t| t.speed() == speed)
                    .map(|t| t.to_string())
                    .collect(),
            )
        })
        .filter(|list| list.as_array().is_some_and(|l| !l.is_empty()))
        .map(|list| json!({ "items": enumerated(&list) }))
        .collect();
    schemas["JoinRequest"]["properties"]["time_controls"] = json!({
        "type": "array",
        "minItems": 1,
        "maxItems": crate::domain::MAX_POOLS_PER_JOIN,
        "uniqueItems": true,
        "oneOf": of_one_speed,
    });
    schemas["JoinRequest"]["required"] = json!(["mode"]);
    schemas["JoinRequest"]["oneOf"] = json!([
        { "required": ["time_control"] },
        { "required": ["time_controls"] },
    ]);
    put(
        schemas,
        "ChallengeRequest",
        "preferred_color",
        nullable(enumerated(&preferred)),
    );
    put(schemas, "ChallengeRequest", "opponent_user_id", opaque(128));
    put(
        schemas,
        "GameFinishedRequest",
        "tenant_id",
        nullable(opaque(64)),
    );
    put(
        schemas,
        "GameAbortedRequest",
        "tenant_id",
        nullable(opaque(64)),
    );
    put(
        schemas,
        "GameAbortedRequest",
        "no_show_user_id",
        opaque(128),
    );
    put(
        schemas,
        "RestrictionRequest",
        "reason",
        nullable(json!({ "type": "string", "maxLength": 200 })),
    );
    // Ratings: a speed (the standard variant) or `{speed}_{variant}`, each
    // an integer in range; at least one; nothing else.
    let range = crate::domain::RATING_RANGE;
    let bare = json!({ "type": "integer", "format": "int32", "minimum": range.start(), "maximum": range.end() });
    let rating = json!({ "oneOf": [bare, {
        "type": "object",
        "properties": {
            "rating": bare,
            "rd": { "type": "number", "minimum": 0, "maximum": crate::domain::MAX_DEVIATION },
        },
        "required": ["rating"],
        "additionalProperties": false,
    }] });
    let mut pools = serde_json::Map::new();
    for speed in Speed::ALL {
        pools.insert(speed.as_str().to_owned(), rating.clone());
        for variant in Variant::ALL {
            pools.insert(
                format!("{}_{}", speed.as_str(), variant.as_str()),
                rating.clone(),
            );
        }
    }
    let update = &mut schemas["RatingsUpdate"];
    update["properties"] = Value::Object(pools);
    update["minProperties"] = json!(1);
    update["additionalProperties"] = json!(false);
    // Answers.
    put(
        schemas,
        "JoinResponse",
        "status",
        json!({ "enum": ["SEARCHING"] }),
    );
    put(
        schemas,
        "EntryStatus",
        "status",
        json!({ "enum": entry_statuses }),
    );
    put(
        schemas,
        "Cancelled",
        "status",
        json!({ "enum": ["CANCELLED"] }),
    );
    put(
        schemas,
        "ActiveEntry",
        "status",
        json!({ "enum": ["SEARCHING"] }),
    );
    for schema in ["ActiveEntry", "EntryStatus", "Challenge", "ActiveMatch"] {
        for (property, values) in [
            ("time_control", &time_controls),
            ("mode", &modes),
            ("variant", &variants),
        ] {
            if schemas[schema]["properties"].get(property).is_some() {
                put(schemas, schema, property, json!({ "enum": values }));
            }
        }
    }
    put(
        schemas,
        "ActiveEntry",
        "region",
        json!({ "enum": stored_regions }),
    );
    put(schemas, "ActiveMatch", "color", json!({ "enum": colors }));
    put(
        schemas,
        "Challenge",
        "status",
        json!({ "enum": challenge_statuses }),
    );
    put(
        schemas,
        "Challenge",
        "preferred_color",
        json!({ "enum": preferred }),
    );
    put(
        schemas,
        "ErrorDetail",
        "code",
        json!({ "enum": crate::error::ServiceError::CODES }),
    );
    // Parameters.
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for operations in paths.values_mut() {
        let Some(operations) = operations.as_object_mut() else {
            continue;
        };
        for operation in operations.values_mut() {
            let Some(parameters) = operation
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            for parameter in parameters {
                let schema = match parameter["name"].as_str().unwrap_or_default() {
                    "tenant_id" => opaque(64),
                    "user_id" | "blocked_user_id" | "game_id" => opaque(128),
                    "queue_entry_id" => {
                        json!({ "type": "string", "pattern": minted_id_pattern("q_") })
                    }
                    "challenge_id" => {
                        json!({ "type": "string", "pattern": minted_id_pattern("c_") })
                    }
                    "Idempotency-Key" => json!({
                        "type": "string", "minLength": 1, "maxLength": 255,
                        "pattern": "^[!-~]([\t -~]*[!-~])?$",
                    }),
                    "Last-Event-ID" => json!({ "type": "string", "pattern": "^[0-9]{0,19}$" }),
                    "pool_key" => json!({ "type": "string", "pattern": pool_key_pattern }),
                    _ => continue,
                };
                parameter["schema"] = schema;
            }
        }
    }
}

/// Tightens one property of one schema with `value`'s keys.
fn put(schemas: &mut Value, schema: &str, property: &str, value: Value) {
    let slot = &mut schemas[schema]["properties"][property];
    *slot = merge(slot, value);
}

/// `extra`'s keys over `base`'s (or `extra` alone when `base` is none).
fn merge(base: &Value, extra: Value) -> Value {
    match (base, extra) {
        (Value::Object(base), Value::Object(extra)) => {
            let mut merged = base.clone();
            merged.extend(extra);
            Value::Object(merged)
        }
        (_, extra) => extra,
    }
}
