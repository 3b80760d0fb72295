//! Settings: every variable of SPEC §2, read from the environment (and a
//! `.env` file, loaded by `main`) and overridable by CLI flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::domain::{Millis, PoolPolicy, Region, RegionSet};
use crate::matcher::Hold;

#[derive(Debug, Parser)]
#[command(
    name = "matchmaking-api",
    version,
    about = "Matchmaking service: queues, pairing, game creation"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

/// Exits on a command line or environment clap refuses. A bad value that
/// came from the environment (or `.env`) is named by its variable, which
/// is what the user set, not by the flag clap knows it as.
pub fn exit_on_parse_error(e: clap::Error) -> ! {
    use clap::CommandFactory;
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        e.exit()
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        e.exit()
    };
    let flag = arg.split_whitespace().next().unwrap_or_default();
    let on_command_line = std::env::args()
        .skip(1)
        .any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    let command = Cli::command();
    let env = command
        .get_arguments()
        .chain(command.get_subcommands().flat_map(|c| c.get_arguments()))
        .find(|a| a.get_long().is_some_and(|l| flag == format!("--{l}")))
        .and_then(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned());
    match env {
        Some(var) if !on_command_line && std::env::var_os(&var).is_some() => {
            let value = match e.get(ContextKind::InvalidValue) {
                Some(ContextValue::String(v)) => v.clone(),
                _ => std::env::var(&var).unwrap_or_default(),
            };
            let why = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            let allowed = match e.get(ContextKind::ValidValue) {
                Some(ContextValue::Strings(v)) => format!(" (allowed: {})", v.join(", ")),
                _ => String::new(),
            };
            eprintln!("error: {var}={value:?} is not valid{why}{allowed}");
            std::process::exit(2)
        }
        _ => e.exit(),
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API with the embedded matching worker (the default).
    Serve,
    /// Run the matching worker only.
    Worker,
    /// Apply database migrations and exit.
    Migrate,
    /// Print a JWT signed with the configured (or dev) HS256 secret.
    Token(TokenArgs),
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// User id (`sub` claim).
    #[arg(long)]
    pub user: String,
    /// Tenant (`tenant_id` claim); default DEFAULT_TENANT.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Display name (`preferred_username` claim).
    #[arg(long)]
    pub username: Option<String>,
    /// Role to grant (`roles` claim), e.g. `admin`; repeatable.
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// Lifetime of the token in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Every setting. Field docs are the `--help` text.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address the HTTP API listens on.
    #[arg(
        long,
        env = "BIND_ADDR",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub bind_addr: SocketAddr,
    /// Directory for the SQLite file and the dev JWT secret.
    #[arg(long, env = "DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; unset = SQLite file in DATA_DIR.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Redis URL for the hot queue state; unset = in-process memory.
    #[arg(long, env = "REDIS_URL", global = true)]
    pub redis_url: Option<String>,
    /// `true`: REDIS_URL lists Redis Cluster seed nodes, comma-separated.
    #[arg(long, env = "REDIS_CLUSTER", default_value_t = false, action = ArgAction::Set, global = true)]
    pub redis_cluster: bool,
    /// Prefix of every Redis key (several deployments can share a Redis).
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "mm", global = true)]
    pub redis_key_prefix: String,
    /// HS256 secret for JWTs (at least 32 bytes: `openssl rand -hex 32`).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,
    /// The seed's name for JWT_SECRET; both set and different is an error.
    #[arg(long, env = "JWT_SECRET_KEY", hide_env_values = true, global = true)]
    pub jwt_secret_key: Option<String>,
    /// Tenant of a token without a `tenant_id` claim (the seed's
    /// `t_default`).
    #[arg(
        long,
        env = "DEFAULT_TENANT",
        default_value = "t_default",
        global = true
    )]
    pub default_tenant: String,
    /// RS256/ES256 public key (PEM) for JWTs.
    #[arg(long, env = "JWT_PUBLIC_KEY_PEM", global = true)]
    pub jwt_public_key_pem: Option<String>,
    /// JWKS URL for JWT keys.
    #[arg(long, env = "JWT_JWKS_URL", global = true)]
    pub jwt_jwks_url: Option<String>,
    /// Seconds the keys read from JWT_JWKS_URL are used before they are
    /// read again (in the background; the old ones serve meanwhile).
    #[arg(
        long,
        env = "JWT_JWKS_TTL_SECONDS",
        default_value_t = 600.0,
        global = true
    )]
    pub jwt_jwks_ttl_seconds: f64,
    /// Least seconds between two reads of JWT_JWKS_URL: a token naming an
    /// unknown `kid` triggers a read at most this often (no fetch storm).
    #[arg(
        long,
        env = "JWT_JWKS_MIN_REFRESH_SECONDS",
        default_value_t = 30.0,
        global = true
    )]
    pub jwt_jwks_min_refresh_seconds: f64,
    /// Required `iss` claim; unset = not checked.
    #[arg(long, env = "JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim; unset = not checked.
    #[arg(long, env = "JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,
    /// Clock skew allowed on `exp`/`nbf`, seconds.
    #[arg(long, env = "JWT_LEEWAY_SECONDS", default_value_t = 30, global = true)]
    pub jwt_leeway_seconds: u64,
    /// Longest a token may live (`exp − iat`, or `exp − now` without
    /// `iat`), seconds; unset = as long as its `exp` says.
    #[arg(long, env = "JWT_MAX_LIFETIME_SECONDS", global = true)]
    pub jwt_max_lifetime_seconds: Option<u64>,
    /// live-game-api base URL; unset = built-in game creator.
    #[arg(long, env = "LIVE_GAME_API_URL", global = true)]
    pub live_game_api_url: Option<String>,
    /// Timeout of one CreateGame call, seconds.
    #[arg(
        long,
        env = "LIVE_GAME_API_TIMEOUT_SECONDS",
        default_value_t = 5.0,
        global = true
    )]
    pub live_game_api_timeout_seconds: f64,
    /// Bearer token sent to live-game-api with every CreateGame call.
    #[arg(
        long,
        env = "LIVE_GAME_API_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub live_game_api_token: Option<String>,
    /// Token live-game-api presents on POST /internal/games/{id}/finished
    /// (instead of an admin JWT).
    #[arg(
        long,
        env = "LIVE_GAME_API_CALLBACK_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub live_game_api_callback_token: Option<String>,
    /// The platform's rating service (SPEC §8); unset = the local ratings
    /// table only.
    #[arg(long, env = "RATING_API_URL", global = true)]
    pub rating_api_url: Option<String>,
    /// Bearer token sent to the rating service.
    #[arg(long, env = "RATING_API_TOKEN", hide_env_values = true, global = true)]
    pub rating_api_token: Option<String>,
    /// Longest a join waits for the rating service before it falls back
    /// (cached value, else the local table, else 1500), seconds.
    #[arg(
        long,
        env = "RATING_API_TIMEOUT_SECONDS",
        default_value_t = 0.5,
        global = true
    )]
    pub rating_api_timeout_seconds: f64,
    /// Calls to the rating service in flight at once on this node; a join
    /// past it falls back instead of waiting.
    #[arg(
        long,
        env = "RATING_API_MAX_CONCURRENCY",
        default_value_t = 64,
        global = true
    )]
    pub rating_api_max_concurrency: u32,
    /// How long a rating read from the rating service is used without
    /// asking again, seconds (older ones are still the fallback).
    #[arg(
        long,
        env = "RATING_CACHE_TTL_SECONDS",
        default_value_t = 300.0,
        global = true
    )]
    pub rating_cache_ttl_seconds: f64,
    /// Ratings kept in the cache at most (tenant, user, pool each).
    #[arg(
        long,
        env = "RATING_CACHE_MAX_ENTRIES",
        default_value_t = 1_000_000,
        global = true
    )]
    pub rating_cache_max_entries: usize,
    /// Retries of a CreateGame call after a transport error or a 5xx.
    #[arg(
        long,
        env = "LIVE_GAME_API_MAX_RETRIES",
        default_value_t = 3,
        global = true
    )]
    pub live_game_api_max_retries: u32,
    /// Most seconds one CreateGame may take, retries included.
    #[arg(
        long,
        env = "LIVE_GAME_API_RETRY_BUDGET_SECONDS",
        default_value_t = 10.0,
        global = true
    )]
    pub live_game_api_retry_budget_seconds: f64,
    /// Consecutive failed game creations that open the circuit breaker.
    #[arg(
        long,
        env = "CIRCUIT_BREAKER_FAILURES",
        default_value_t = 5,
        global = true
    )]
    pub circuit_breaker_failures: u32,
    /// Seconds the breaker stays open before letting a probe through.
    #[arg(
        long,
        env = "CIRCUIT_BREAKER_COOLDOWN_SECONDS",
        default_value_t = 10.0,
        global = true
    )]
    pub circuit_breaker_cooldown_seconds: f64,
    /// Rating window of a player who has just arrived.
    #[arg(
        long,
        env = "INITIAL_RATING_WINDOW",
        default_value_t = 100,
        global = true
    )]
    pub initial_rating_window: i32,
    /// Seconds of waiting per widening step.
    #[arg(
        long,
        env = "RATING_WINDOW_WIDENING_INTERVAL",
        default_value_t = 10.0,
        global = true
    )]
    pub rating_window_widening_interval: f64,
    /// Rating points added to the window per step.
    #[arg(
        long,
        env = "RATING_WINDOW_WIDENING_AMOUNT",
        default_value_t = 25,
        global = true
    )]
    pub rating_window_widening_amount: i32,
    /// Largest window (and so largest rating gap) of any pair.
    #[arg(long, env = "MAX_RATING_GAP", default_value_t = 500, global = true)]
    pub max_rating_gap: i32,
    /// Holding for a closer partner (issue 18): rating points one second of
    /// waiting is worth. When a pool's arrivals make a closer partner likely
    /// within a short wait, a pair wider than that is not made yet; 0 holds
    /// nobody (every compatible pair is made at once).
    #[arg(
        long,
        env = "MATCH_HOLD_COST_PER_SECOND",
        default_value_t = Hold::default().cost_per_second,
        global = true
    )]
    pub match_hold_cost_per_second: f64,
    /// How fast a held player's accepted gap widens, points per second.
    #[arg(
        long,
        env = "MATCH_HOLD_GROWTH_PER_SECOND",
        default_value_t = Hold::default().growth_per_second,
        global = true
    )]
    pub match_hold_growth_per_second: f64,
    /// Nobody is held longer than this many seconds.
    #[arg(
        long,
        env = "MATCH_HOLD_MAX_SECONDS",
        default_value_t = Hold::default().max_ms as f64 / 1000.0,
        global = true
    )]
    pub match_hold_max_seconds: f64,
    /// Seconds an entry may wait before it is TIMED_OUT.
    #[arg(
        long,
        env = "MAX_QUEUE_TIME_SECONDS",
        default_value_t = 600.0,
        global = true
    )]
    pub max_queue_time_seconds: f64,
    /// Seconds an entry waits before it may also meet players of
    /// REGION_FALLBACK_REGIONS (unset: never).
    #[arg(long, env = "REGION_FALLBACK_SECONDS", global = true)]
    pub region_fallback_seconds: Option<f64>,
    /// Regions a waiting entry falls back to, comma-separated (`GLOBAL,EU`);
    /// empty: none. Per pool or tenant: the policies' `region_fallback_regions`.
    #[arg(long, env = "REGION_FALLBACK_REGIONS", default_value = "", value_parser = parse_region_set, global = true)]
    pub region_fallback_regions: RegionSet,
    /// Rating points of gap a repeat pairing costs at most in a pass's
    /// score (0: off): two players who met within REPEAT_WINDOW_SECONDS or
    /// REPEAT_WINDOW_GAMES games.
    #[arg(long, env = "REPEAT_PENALTY", default_value_t = 25, global = true)]
    pub repeat_penalty: i32,
    #[arg(
        long,
        env = "REPEAT_WINDOW_SECONDS",
        default_value_t = 600.0,
        global = true
    )]
    pub repeat_window_seconds: f64,
    #[arg(long, env = "REPEAT_WINDOW_GAMES", default_value_t = 3, global = true)]
    pub repeat_window_games: u32,
    /// Once the shorter of two players' waits reaches this, a repeat costs
    /// them nothing.
    #[arg(
        long,
        env = "REPEAT_WAIVE_SECONDS",
        default_value_t = 60.0,
        global = true
    )]
    pub repeat_waive_seconds: f64,
    /// Rating-deviation-aware windows (0: off): a player's window is the
    /// plain one times their deviation over this, kept within
    /// DEVIATION_MIN_PERCENT and DEVIATION_MAX_PERCENT, never past
    /// MAX_RATING_GAP.
    #[arg(long, env = "DEVIATION_REFERENCE", default_value_t = 0, global = true)]
    pub deviation_reference: i32,
    #[arg(
        long,
        env = "DEVIATION_MIN_PERCENT",
        default_value_t = 50,
        global = true
    )]
    pub deviation_min_percent: i32,
    #[arg(
        long,
        env = "DEVIATION_MAX_PERCENT",
        default_value_t = 200,
        global = true
    )]
    pub deviation_max_percent: i32,
    /// Run the matching worker inside `serve`.
    #[arg(long, env = "WORKER_ENABLED", default_value_t = true, action = ArgAction::Set, global = true)]
    pub worker_enabled: bool,
    /// Seconds between periodic matching passes (widening, time-outs).
    #[arg(
        long,
        env = "WORKER_INTERVAL_SECONDS",
        default_value_t = 1.0,
        global = true
    )]
    pub worker_interval_seconds: f64,
    /// Seconds a worker's lease on a pool lasts without renewal; another
    /// worker takes the pool over after that (e.g. when one dies).
    #[arg(long, env = "POOL_LEASE_SECONDS", default_value_t = 5.0, global = true)]
    pub pool_lease_seconds: f64,
    /// Pools one worker processes at the same time.
    #[arg(long, env = "WORKER_BATCH_SIZE", default_value_t = 100, global = true)]
    pub worker_batch_size: usize,
    /// Pairs reserved, created and persisted together in one commit round.
    #[arg(
        long,
        env = "MATCH_PAIRS_PER_BATCH",
        default_value_t = 50,
        global = true
    )]
    pub match_pairs_per_batch: usize,
    /// `pretty` or `json`; unset = pretty on a terminal, else json.
    #[arg(long, env = "LOG_FORMAT", value_enum, global = true)]
    pub log_format: Option<LogFormat>,
    /// Largest request body; larger answers 413.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 65_536, global = true)]
    pub max_body_bytes: usize,
    /// How long an Idempotency-Key answer is kept, seconds.
    #[arg(
        long,
        env = "IDEMPOTENCY_TTL_SECONDS",
        default_value_t = 86_400,
        global = true
    )]
    pub idempotency_ttl_seconds: u64,
    /// An entry not polled for this long is dropped; 0 = off.
    #[arg(
        long,
        env = "PRESENCE_TIMEOUT_SECONDS",
        default_value_t = 30.0,
        global = true
    )]
    pub presence_timeout_seconds: f64,
    /// Prometheus metrics at `/metrics` (and the store and HTTP timing
    /// behind them) on or off.
    #[arg(long, env = "METRICS_ENABLED", default_value_t = true, action = ArgAction::Set, global = true)]
    pub metrics_enabled: bool,
    /// Requests per second one client address may make (burst: twice
    /// that); 0 turns the limit off.
    #[arg(long, env = "RATE_LIMIT_PER_IP", default_value_t = 1000, global = true)]
    pub rate_limit_per_ip: u32,
    /// Requests per second one authenticated user may make (burst: twice
    /// that); 0 turns the limit off.
    #[arg(long, env = "RATE_LIMIT_PER_USER", default_value_t = 20, global = true)]
    pub rate_limit_per_user: u32,
    /// Requests one node serves at the same time; past it a request
    /// answers 503 at once (health routes are never shed); 0 = no bound.
    #[arg(
        long,
        env = "MAX_IN_FLIGHT_REQUESTS",
        default_value_t = 256,
        global = true
    )]
    pub max_in_flight_requests: usize,
    /// Seconds a connection has to send a whole request head, counted from
    /// when it may send one (it opened, or its previous answer went out):
    /// a slow head is cut, and so is a keep-alive connection left idle.
    #[arg(
        long,
        env = "HTTP_HEADER_READ_TIMEOUT_SECONDS",
        default_value_t = 10.0,
        global = true
    )]
    pub http_header_read_timeout_seconds: f64,
    /// Seconds a request may take from its head to its answer, body
    /// included; past it: 408 `REQUEST_TIMEOUT` and the connection closes.
    #[arg(
        long,
        env = "HTTP_REQUEST_TIMEOUT_SECONDS",
        default_value_t = 30.0,
        global = true
    )]
    pub http_request_timeout_seconds: f64,
    /// Seconds a connection may go without a byte moving either way (a
    /// stalled body, a client that does not read its answers) before it
    /// is closed.
    #[arg(
        long,
        env = "HTTP_IDLE_TIMEOUT_SECONDS",
        default_value_t = 60.0,
        global = true
    )]
    pub http_idle_timeout_seconds: f64,
    /// Connections one node keeps open. At the bound a new connection
    /// takes the place of the longest idle one (no request in flight); when
    /// every one is busy it is answered 503 and closed at once.
    #[arg(
        long,
        env = "HTTP_MAX_CONNECTIONS",
        default_value_t = 10_000,
        global = true
    )]
    pub http_max_connections: usize,
    /// Event streams (`/queue/{id}/events`) one user may have open on one
    /// node; past it a new one answers 429 `RATE_LIMITED`.
    #[arg(
        long,
        env = "EVENT_STREAMS_PER_USER",
        default_value_t = 4,
        global = true
    )]
    pub event_streams_per_user: usize,
    /// Event streams one node keeps open; past it a new one answers 429
    /// `RATE_LIMITED` (the client polls instead, or retries). Each holds
    /// a connection, so keep it under HTTP_MAX_CONNECTIONS.
    #[arg(
        long,
        env = "EVENT_STREAMS_PER_NODE",
        default_value_t = 8_000,
        global = true
    )]
    pub event_streams_per_node: usize,
    /// Seconds between keep-alive comments on an idle event stream (under
    /// the idle timeouts of proxies in front; at most half of
    /// HTTP_IDLE_TIMEOUT_SECONDS is used, so the node never cuts a stream).
    #[arg(
        long,
        env = "EVENT_STREAM_KEEP_ALIVE_SECONDS",
        default_value_t = 15.0,
        global = true
    )]
    pub event_stream_keep_alive_seconds: f64,
    /// A pool whose last matching pass took longer than this (seconds)
    /// takes no new joins (503, Retry-After) until a pass is quicker again;
    /// 0 = off.
    #[arg(
        long,
        env = "POOL_BUSY_PASS_SECONDS",
        default_value_t = 1.0,
        global = true
    )]
    pub pool_busy_pass_seconds: f64,
    /// Direct challenges on or off.
    #[arg(long, env = "CHALLENGES_ENABLED", default_value_t = true, action = ArgAction::Set, global = true)]
    pub challenges_enabled: bool,
    /// Seconds before a pending challenge expires.
    #[arg(
        long,
        env = "CHALLENGE_TTL_SECONDS",
        default_value_t = 300.0,
        global = true
    )]
    pub challenge_ttl_seconds: f64,
    /// Most pending challenges one player may have sent.
    #[arg(
        long,
        env = "MAX_PENDING_CHALLENGES",
        default_value_t = 20,
        global = true
    )]
    pub max_pending_challenges: u32,
    /// Seconds a matched player stays blocked from matchmaking (409
    /// ACTIVE_GAME_EXISTS) when no "game finished" report arrives.
    #[arg(
        long,
        env = "ACTIVE_GAME_GUARD_SECONDS",
        default_value_t = 3_600.0,
        global = true
    )]
    pub active_game_guard_seconds: f64,
    /// Seconds a player who did not show up for a game (reported with
    /// POST /internal/games/{game_id}/aborted) may not join again (409
    /// COOLDOWN); 0: none.
    #[arg(
        long,
        env = "NO_SHOW_COOLDOWN_SECONDS",
        default_value_t = 120.0,
        global = true
    )]
    pub no_show_cooldown_seconds: f64,
    /// Seconds a worker may hold a pair while creating its game; past it
    /// the next worker finishes or rolls the match back.
    #[arg(
        long,
        env = "RESERVATION_TIMEOUT_SECONDS",
        default_value_t = 30.0,
        global = true
    )]
    pub reservation_timeout_seconds: f64,
    /// Seconds a finished entry (matched, cancelled, timed out) stays
    /// readable from the hot store; matched ones stay readable from the
    /// durable store after that.
    #[arg(
        long,
        env = "ENTRY_RETENTION_SECONDS",
        default_value_t = 3_600.0,
        global = true
    )]
    pub entry_retention_seconds: f64,
    /// Region of a join that names none, or names `DEFAULT` (the seed's
    /// value; as a setting, `DEFAULT` means GLOBAL).
    #[arg(long, env = "DEFAULT_REGION", default_value = "GLOBAL", value_parser = parse_region, global = true)]
    pub default_region: Region,
    /// Origins a browser may call from, comma-separated
    /// (`https://play.example.com`), or `*`; unset = no CORS headers.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", global = true)]
    pub cors_allowed_origins: Option<String>,
    /// Host names requests may be addressed to, comma-separated; another
    /// `Host` gets 400 (the operations routes answer any). Unset = any.
    #[arg(long, env = "ALLOWED_HOSTS", global = true)]
    pub allowed_hosts: Option<String>,
    /// OTLP/HTTP collector for traces (spans go to `{endpoint}/v1/traces`);
    /// unset = no spans exported, no cost.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otel_exporter_otlp_endpoint: Option<String>,
    /// `http/protobuf` or `http/json`.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        default_value = "http/protobuf",
        global = true
    )]
    pub otel_exporter_otlp_protocol: String,
    /// Largest `client_metadata`, in bytes of compact JSON.
    #[arg(
        long,
        env = "CLIENT_METADATA_MAX_BYTES",
        default_value_t = 1_024,
        global = true
    )]
    pub client_metadata_max_bytes: usize,
}

fn parse_region(s: &str) -> Result<Region, String> {
    if s == crate::domain::DEFAULT_REGION_NAME {
        return Ok(Region::Global);
    }
    s.parse().map_err(|e: crate::domain::ParseError| e.reason)
}

fn parse_region_set(s: &str) -> Result<RegionSet, String> {
    s.parse().map_err(|e: crate::domain::ParseError| e.reason)
}

fn millis(seconds: f64) -> Millis {
    (seconds * 1000.0).round() as Millis
}

/// The base URL a URL setting names, without a trailing `/`; refused,
/// naming `setting`, unless it is http(s).
pub fn http_base<'a>(url: &'a str, setting: &str) -> Result<&'a str, String> {
    let base = url.trim_end_matches('/');
    if base.starts_with("http://") || base.starts_with("https://") {
        Ok(base)
    } else {
        Err(format!("{setting} must start with http:// or https://"))
    }
}

impl Settings {
    /// Defaults, with the environment applied (as the binary sees them).
    pub fn from_env() -> Self {
        Cli::parse_from(["matchmaking-api"]).settings
    }

    /// The HS256 secret, under either of its names, with the name it was
    /// given under.
    pub fn hs256_secret(&self) -> Option<(&'static str, &str)> {
        match (&self.jwt_secret, &self.jwt_secret_key) {
            (Some(s), _) => Some(("JWT_SECRET", s)),
            (None, Some(s)) => Some(("JWT_SECRET_KEY", s)),
            (None, None) => None,
        }
    }

    /// Refuses settings that cannot work, naming the variable.
    pub fn validate(&self) -> Result<(), String> {
        if let (Some(a), Some(b)) = (&self.jwt_secret, &self.jwt_secret_key)
            && a != b
        {
            return Err(
                "JWT_SECRET and JWT_SECRET_KEY (its alias) are both set and differ; set one".into(),
            );
        }
        crate::domain::TenantId::parse(&self.default_tenant)
            .map_err(|e| format!("DEFAULT_TENANT: {}", e.reason))?;
        let positive = [
            (
                "RATING_WINDOW_WIDENING_INTERVAL",
                self.rating_window_widening_interval,
            ),
            ("MAX_QUEUE_TIME_SECONDS", self.max_queue_time_seconds),
            ("WORKER_INTERVAL_SECONDS", self.worker_interval_seconds),
            (
                "LIVE_GAME_API_TIMEOUT_SECONDS",
                self.live_game_api_timeout_seconds,
            ),
            ("ACTIVE_GAME_GUARD_SECONDS", self.active_game_guard_seconds),
            (
                "RESERVATION_TIMEOUT_SECONDS",
                self.reservation_timeout_seconds,
            ),
            ("CHALLENGE_TTL_SECONDS", self.challenge_ttl_seconds),
            (
                "LIVE_GAME_API_RETRY_BUDGET_SECONDS",
                self.live_game_api_retry_budget_seconds,
            ),
            (
                "CIRCUIT_BREAKER_COOLDOWN_SECONDS",
                self.circuit_breaker_cooldown_seconds,
            ),
            ("POOL_LEASE_SECONDS", self.pool_lease_seconds),
            (
                "RATING_API_TIMEOUT_SECONDS",
                self.rating_api_timeout_seconds,
            ),
            ("RATING_CACHE_TTL_SECONDS", self.rating_cache_ttl_seconds),
        ];
        for (name, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                return Err(format!("{name} must be a positive number of seconds"));
            }
        }
        if self
            .region_fallback_seconds
            .is_some_and(|s| !(s.is_finite() && (0.0..=86_400.0).contains(&s)))
        {
            return Err("REGION_FALLBACK_SECONDS must be 0 to 86400 seconds".into());
        }
        let non_negative = [
            ("PRESENCE_TIMEOUT_SECONDS", self.presence_timeout_seconds),
            ("ENTRY_RETENTION_SECONDS", self.entry_retention_seconds),
            ("MATCH_HOLD_MAX_SECONDS", self.match_hold_max_seconds),
            ("NO_SHOW_COOLDOWN_SECONDS", self.no_show_cooldown_seconds),
            ("REPEAT_WINDOW_SECONDS", self.repeat_window_seconds),
            ("REPEAT_WAIVE_SECONDS", self.repeat_waive_seconds),
        ];
        for (name, value) in non_negative {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!(
                    "{name} must be zero or a positive number of seconds"
                ));
            }
        }
        for (name, value) in [
            (
                "MATCH_HOLD_COST_PER_SECOND",
                self.match_hold_cost_per_second,
            ),
            (
                "MATCH_HOLD_GROWTH_PER_SECOND",
                self.match_hold_growth_per_second,
            ),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("{name} must be zero or a positive number"));
            }
        }
        if self.initial_rating_window < 0 || self.rating_window_widening_amount < 0 {
            return Err(
                "INITIAL_RATING_WINDOW and RATING_WINDOW_WIDENING_AMOUNT must not be negative"
                    .into(),
            );
        }
        // The repeat and deviation fields are named as the policies name them.
        if let Err((field, why)) = self.pool_policy().check()
            && (field.starts_with("repeat_") || field.starts_with("deviation_"))
        {
            return Err(format!("{} {why}", field.to_uppercase()));
        }
        if self.max_rating_gap < self.initial_rating_window {
            return Err("MAX_RATING_GAP must be at least INITIAL_RATING_WINDOW".into());
        }
        if self.worker_batch_size == 0 || self.match_pairs_per_batch == 0 {
            return Err("WORKER_BATCH_SIZE and MATCH_PAIRS_PER_BATCH must be at least 1".into());
        }
        if self.rating_api_max_concurrency == 0 || self.rating_cache_max_entries == 0 {
            return Err(
                "RATING_API_MAX_CONCURRENCY and RATING_CACHE_MAX_ENTRIES must be at least 1".into(),
            );
        }
        if self.circuit_breaker_failures == 0 {
            return Err("CIRCUIT_BREAKER_FAILURES must be at least 1".into());
        }
        if self
            .live_game_api_callback_token
            .as_ref()
            .is_some_and(|t| t.len() < 16)
        {
            return Err("LIVE_GAME_API_CALLBACK_TOKEN must be at least 16 characters".into());
        }
        if self.max_body_bytes < 256 {
            return Err("MAX_BODY_BYTES must be at least 256".into());
        }
        for (name, seconds) in [
            (
                "HTTP_HEADER_READ_TIMEOUT_SECONDS",
                self.http_header_read_timeout_seconds,
            ),
            (
                "HTTP_REQUEST_TIMEOUT_SECONDS",
                self.http_request_timeout_seconds,
            ),
            ("HTTP_IDLE_TIMEOUT_SECONDS", self.http_idle_timeout_seconds),
        ] {
            if !(0.05..=3600.0).contains(&seconds) {
                return Err(format!(
                    "{name} must be between 0.05 and 3600 seconds (a connection is never left unbounded)"
                ));
            }
        }
        if self.http_max_connections == 0 {
            return Err("HTTP_MAX_CONNECTIONS must be at least 1".into());
        }
        if !(self.event_stream_keep_alive_seconds.is_finite()
            && self.event_stream_keep_alive_seconds >= 0.05)
        {
            return Err("EVENT_STREAM_KEEP_ALIVE_SECONDS must be at least 0.05".into());
        }
        Ok(())
    }

    /// How often an idle event stream sends a keep-alive comment: the
    /// setting, within half the idle timeout.
    pub fn event_stream_keep_alive(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(
            self.event_stream_keep_alive_seconds
                .min(self.http_idle_timeout_seconds / 2.0),
        )
    }

    /// The matching policy every pool uses until per-pool policies exist.
    pub fn pool_policy(&self) -> PoolPolicy {
        PoolPolicy {
            initial_window: self.initial_rating_window,
            widening_interval_ms: millis(self.rating_window_widening_interval).max(1),
            widening_amount: self.rating_window_widening_amount,
            max_gap: self.max_rating_gap,
            max_queue_time_ms: millis(self.max_queue_time_seconds),
            fallback_after_ms: self.region_fallback_seconds.map(millis),
            fallback_regions: self.region_fallback_regions,
            repeat_penalty: self.repeat_penalty,
            repeat_window_ms: millis(self.repeat_window_seconds),
            repeat_games: self.repeat_window_games,
            repeat_waive_ms: millis(self.repeat_waive_seconds),
            deviation_reference: self.deviation_reference,
            deviation_min_percent: self.deviation_min_percent,
            deviation_max_percent: self.deviation_max_percent,
        }
    }

    /// How long players may be held for a closer partner.
    pub fn hold(&self) -> Hold {
        Hold {
            cost_per_second: self.match_hold_cost_per_second,
            growth_per_second: self.match_hold_growth_per_second,
            max_ms: millis(self.match_hold_max_seconds),
        }
    }

    pub fn worker_interval(&self) -> Duration {
        Duration::from_secs_f64(self.worker_interval_seconds)
    }

    /// Where spans are exported, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
    pub fn otlp_traces(&self) -> Option<crate::telemetry::OtlpTraces> {
        self.otel_exporter_otlp_endpoint
            .as_ref()
            .map(|endpoint| crate::telemetry::OtlpTraces {
                endpoint: endpoint.clone(),
                protocol: self.otel_exporter_otlp_protocol.clone(),
            })
    }

    pub fn circuit_breaker_cooldown_ms(&self) -> Millis {
        millis(self.circuit_breaker_cooldown_seconds)
    }

    pub fn rating_cache_ttl_ms(&self) -> Millis {
        millis(self.rating_cache_ttl_seconds)
    }

    pub fn guard_ms(&self) -> Millis {
        millis(self.active_game_guard_seconds)
    }

    pub fn no_show_cooldown_ms(&self) -> Millis {
        millis(self.no_show_cooldown_seconds.min(86_400.0))
    }

    pub fn reservation_ms(&self) -> Millis {
        millis(self.reservation_timeout_seconds)
    }

    pub fn presence_ms(&self) -> Option<Millis> {
        (self.presence_timeout_seconds > 0.0).then(|| millis(self.presence_timeout_seconds))
    }

    pub fn challenge_ttl_ms(&self) -> Millis {
        millis(self.challenge_ttl_seconds)
    }

    pub fn retention_ms(&self) -> Millis {
        millis(self.entry_retention_seconds)
    }

    pub fn idempotency_ms(&self) -> Millis {
        self.idempotency_ttl_seconds.saturating_mul(1000) as Millis
    }

    /// The database URL in force: DATABASE_URL, or the SQLite file in DATA_DIR.
    pub fn effective_database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                self.data_dir.join("matchmaking.db").display()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_specs() {
        let s = Cli::parse_from(["mm"]).settings;
        assert_eq!(s.bind_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.pool_policy(), PoolPolicy::default());
        assert_eq!(s.max_body_bytes, 65_536);
        assert!(s.worker_enabled && s.challenges_enabled && !s.redis_cluster);
        assert!(s.metrics_enabled);
        assert_eq!((s.rate_limit_per_ip, s.rate_limit_per_user), (1000, 20));
        assert!(s.validate().is_ok());
    }

    #[test]
    fn flags_override_after_the_subcommand() {
        let cli = Cli::parse_from([
            "mm",
            "serve",
            "--bind-addr",
            "127.0.0.1:0",
            "--worker-enabled",
            "false",
        ]);
        assert!(matches!(cli.command, Some(Command::Serve)));
        assert_eq!(cli.settings.bind_addr.port(), 0);
        assert!(!cli.settings.worker_enabled);
    }

    #[test]
    fn every_duration_must_be_positive() {
        type Field = fn(&mut Settings) -> &mut f64;
        let fields: [(&str, Field); 12] = [
            ("RATING_WINDOW_WIDENING_INTERVAL", |s| {
                &mut s.rating_window_widening_interval
            }),
            ("MAX_QUEUE_TIME_SECONDS", |s| &mut s.max_queue_time_seconds),
            ("WORKER_INTERVAL_SECONDS", |s| {
                &mut s.worker_interval_seconds
            }),
            ("LIVE_GAME_API_TIMEOUT_SECONDS", |s| {
                &mut s.live_game_api_timeout_seconds
            }),
            ("ACTIVE_GAME_GUARD_SECONDS", |s| {
                &mut s.active_game_guard_seconds
            }),
            ("RESERVATION_TIMEOUT_SECONDS", |s| {
                &mut s.reservation_timeout_seconds
            }),
            ("CHALLENGE_TTL_SECONDS", |s| &mut s.challenge_ttl_seconds),
            ("LIVE_GAME_API_RETRY_BUDGET_SECONDS", |s| {
                &mut s.live_game_api_retry_budget_seconds
            }),
            ("CIRCUIT_BREAKER_COOLDOWN_SECONDS", |s| {
                &mut s.circuit_breaker_cooldown_seconds
            }),
            ("POOL_LEASE_SECONDS", |s| &mut s.pool_lease_seconds),
            ("RATING_API_TIMEOUT_SECONDS", |s| {
                &mut s.rating_api_timeout_seconds
            }),
            ("RATING_CACHE_TTL_SECONDS", |s| {
                &mut s.rating_cache_ttl_seconds
            }),
        ];
        for (name, field) in fields {
            for bad in [0.0, -1.0, f64::NAN] {
                let mut s = Cli::parse_from(["mm"]).settings;
                *field(&mut s) = bad;
                let err = s.validate().unwrap_err();
                assert!(err.contains(name), "{name}={bad}: {err}");
            }
        }
    }

    #[test]
    fn impossible_settings_are_refused_by_name() {
        let mut s = Cli::parse_from(["mm"]).settings;
        s.rating_window_widening_interval = 0.0;
        assert!(
            s.validate()
                .unwrap_err()
                .contains("RATING_WINDOW_WIDENING_INTERVAL")
        );
    }

    #[test]
    fn the_seeds_names_and_values_are_accepted() {
        let s = Cli::parse_from(["mm"]).settings;
        assert_eq!(s.default_tenant, "t_default");
        let s = Cli::parse_from(["mm", "--default-region", "DEFAULT"]).settings;
        assert_eq!(s.default_region, Region::Global);
        let s = Cli::parse_from(["mm", "--default-region", "EU"]).settings;
        assert_eq!(s.default_region, Region::Eu);
        assert!(Cli::try_parse_from(["mm", "--default-region", "MARS"]).is_err());
        let mut s = Cli::parse_from(["mm"]).settings;
        s.default_tenant = "has space".into();
        assert!(s.validate().unwrap_err().contains("DEFAULT_TENANT"));
    }

    #[test]
    fn region_fallback_is_off_unless_set_and_read_as_the_policy_default() {
        let s = Cli::parse_from(["mm"]).settings;
        let policy = s.pool_policy();
        assert_eq!(policy.fallback_after_ms, None);
        assert!(policy.fallback_regions.is_empty());
        let s = Cli::parse_from([
            "mm",
            "--region-fallback-seconds",
            "15",
            "--region-fallback-regions",
            "GLOBAL,EU",
        ])
        .settings;
        let policy = s.pool_policy();
        assert_eq!(policy.fallback_after_ms, Some(15_000));
        assert!(policy.falls_back_to(Region::Eu, 15_000));
        assert!(!policy.falls_back_to(Region::Eu, 14_999));
        assert!(!policy.falls_back_to(Region::Na, 60_000));
        assert!(Cli::try_parse_from(["mm", "--region-fallback-regions", "EU,MARS"]).is_err());
        let mut s = s;
        s.region_fallback_seconds = Some(-1.0);
        assert!(
            s.validate()
                .unwrap_err()
                .contains("REGION_FALLBACK_SECONDS")
        );
    }
}
