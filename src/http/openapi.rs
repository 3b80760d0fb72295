//! The OpenAPI document (`GET /openapi.json`), generated with `utoipa`
//! from the handlers' `#[utoipa::path]` annotations: the router is built
//! from the same annotated handlers (see [`super::router`]), so a route
//! cannot be served undocumented. The shapes below are the JSON the
//! handlers write; the contract tests read real answers against them.

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The name of the bearer security scheme in the document.
pub const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "matchmaking-api",
        description = "Queues players by tenant, variant, time control, mode and region, pairs them by rating with a window that widens while they wait, creates the game in live-game-api and hands both players the game id. Also direct challenges, admin introspection, metrics and health.",
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "queue", description = "Joining, leaving and following the matchmaking queue (SPEC §3.1)."),
        (name = "challenges", description = "Direct challenges between two players (SPEC §3.2)."),
        (name = "admin", description = "Admin and game-service endpoints (SPEC §3.3); a token with the admin role."),
        (name = "operations", description = "Health, readiness, metrics and this document (SPEC §3.4); no token."),
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
    /// ACTIVE_GAME_EXISTS, CANNOT_CANCEL, INVALID_STATE, CANNOT_ACCEPT,
    /// TOO_MANY_CHALLENGES, CHALLENGES_DISABLED, PAYLOAD_TOO_LARGE,
    /// METHOD_NOT_ALLOWED, RATE_LIMITED, MATCHMAKING_UNAVAILABLE, INTERNAL_ERROR.
    #[schema(example = "ALREADY_IN_QUEUE")]
    pub code: String,
    pub message: String,
    /// The request's `X-Request-Id`.
    pub request_id: String,
}

/// POST /v1/matchmaking/queue
#[derive(Serialize, ToSchema)]
pub struct JoinRequest {
    /// `<minutes>+<increment seconds>`, one the tenant allows.
    #[schema(example = "5+0")]
    pub time_control: String,
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
}

#[derive(Serialize, ToSchema)]
pub struct JoinResponse {
    #[schema(example = "q_01JD1YV6T3J9XK3W5Q0H2M8N4P")]
    pub queue_entry_id: String,
    /// `SEARCHING`.
    pub status: String,
    /// From the pool's recent real waits.
    pub estimated_wait_seconds: u64,
}

#[derive(Serialize, ToSchema)]
pub struct RatingSnapshot {
    pub time_control: String,
    pub mode: String,
    pub rating: i32,
}

#[derive(Serialize, ToSchema)]
pub struct Opponent {
    pub user_id: String,
    pub username: Option<String>,
    pub rating_snapshot: RatingSnapshot,
}

/// GET /v1/matchmaking/queue/{queue_entry_id}
#[derive(Serialize, ToSchema)]
pub struct EntryStatus {
    pub queue_entry_id: String,
    /// `SEARCHING`, `MATCHED`, `TIMED_OUT` or `CANCELLED`.
    pub status: String,
    /// While `SEARCHING`.
    pub estimated_wait_seconds: Option<u64>,
    /// When `MATCHED`.
    pub game_id: Option<String>,
    /// When `MATCHED`.
    pub opponent: Option<Opponent>,
}

/// DELETE /v1/matchmaking/queue/{queue_entry_id}
#[derive(Serialize, ToSchema)]
pub struct Cancelled {
    pub queue_entry_id: String,
    /// `CANCELLED`.
    pub status: String,
}

#[derive(Serialize, ToSchema)]
pub struct ActiveEntry {
    pub queue_entry_id: String,
    pub status: String,
    pub time_control: String,
    pub mode: String,
    pub variant: String,
    pub region: String,
    /// RFC 3339.
    pub enqueued_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct ActiveMatch {
    pub game_id: String,
    pub time_control: String,
    pub mode: String,
    pub variant: String,
    /// `white` or `black`: the caller's color.
    pub color: String,
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
    #[schema(example = "c_01JD1YV6T3J9XK3W5Q0H2M8N4P")]
    pub challenge_id: String,
    /// `PENDING`, `ACCEPTED`, `DECLINED`, `CANCELLED` or `EXPIRED`.
    pub status: String,
    pub challenger_user_id: String,
    pub opponent_user_id: String,
    pub time_control: String,
    pub mode: String,
    pub variant: String,
    pub preferred_color: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub expires_at: String,
    /// Once `ACCEPTED`.
    pub game_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ChallengeList {
    pub challenges: Vec<Challenge>,
}

/// PUT /internal/ratings/{tenant_id}/{user_id}: any subset of speeds.
#[derive(Serialize, ToSchema)]
pub struct RatingsUpdate {
    pub bullet: Option<i32>,
    pub blitz: Option<i32>,
    pub rapid: Option<i32>,
    pub classical: Option<i32>,
}

#[derive(Serialize, ToSchema)]
pub struct Ratings {
    pub tenant_id: String,
    pub user_id: String,
    pub bullet: i32,
    pub blitz: i32,
    pub rapid: i32,
    pub classical: i32,
}

/// POST /internal/games/{game_id}/finished: optional body.
#[derive(Serialize, ToSchema)]
pub struct GameFinishedRequest {
    /// The game's tenant; required with the game service's token, else the
    /// admin's own tenant.
    pub tenant_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct GameFinished {
    pub game_id: String,
    /// `FINISHED`.
    pub status: String,
    pub released_user_ids: Vec<String>,
}

/// GET /internal/queues/summary
#[derive(Serialize, ToSchema)]
pub struct QueueSummary {
    /// RFC 3339.
    pub timestamp: String,
    pub queues: Vec<crate::services::summary::PoolSummary>,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`.
    pub status: String,
    pub checks: ReadinessChecks,
}

/// A failed readiness check: the error shape, plus which check failed.
#[derive(Serialize, ToSchema)]
pub struct NotReady {
    pub error: ErrorDetail,
    /// `unavailable`.
    pub status: String,
    pub checks: ReadinessChecks,
}

#[derive(Serialize, ToSchema)]
pub struct ReadinessChecks {
    /// `ok`, or why not (unreachable; guards being rebuilt after a loss).
    pub queue_store: String,
    /// `ok`, or why not (unreachable; cannot write since when, and why).
    pub durable_store: String,
    /// The game-creation circuit breaker: `closed`, `open` or `half_open`.
    pub game_creation: String,
}
