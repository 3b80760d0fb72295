//! Prometheus metrics (SPEC §7.5) through the `metrics` facade and its
//! Prometheus exporter. Every metric the service records is named here, with
//! its help text and buckets, so `/metrics` documents itself.
//!
//! Labels are bounded sets: route templates (never raw paths), methods,
//! status codes, tenants and pool keys (both fixed by configuration), store
//! operations and error kinds. Never a user id.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics::{
    Counter, Gauge, Histogram, Label, SharedString, Unit, counter, describe_counter,
    describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::{PoolRef, TenantId};
use crate::services::breaker::BreakerState;

pub const HTTP_REQUESTS: &str = "http_requests_total";
pub const HTTP_DURATION: &str = "http_request_duration_seconds";
pub const QUEUE_WAITING: &str = "matchmaking_queue_waiting";
pub const JOINS: &str = "matchmaking_joins_total";
pub const CANCELS: &str = "matchmaking_cancels_total";
pub const MATCHES: &str = "matchmaking_matches_total";
pub const TIMEOUTS: &str = "matchmaking_timeouts_total";
pub const WAIT: &str = "matchmaking_wait_seconds";
pub const RATING_GAP: &str = "matchmaking_match_rating_gap";
pub const PASS_DURATION: &str = "matchmaking_pass_duration_seconds";
pub const GAME_CREATION_DURATION: &str = "matchmaking_game_creation_duration_seconds";
pub const GAME_CREATION_ERRORS: &str = "matchmaking_game_creation_errors_total";
pub const BREAKER_STATE: &str = "matchmaking_circuit_breaker_state";
pub const STORE_DURATION: &str = "matchmaking_store_operation_duration_seconds";
pub const STORE_ERRORS: &str = "matchmaking_store_errors_total";
pub const SHED: &str = "http_requests_shed_total";
pub const RATING_FALLBACKS: &str = "matchmaking_rating_fallbacks_total";
pub const EVENT_STREAMS: &str = "matchmaking_event_streams_open";
pub const EVENT_STREAMS_REFUSED: &str = "matchmaking_event_streams_refused_total";
pub const EVENT_PUSH: &str = "matchmaking_event_push_seconds";
pub const ARM_MATCHES: &str = "matchmaking_experiment_matches_total";
pub const ARM_WAIT: &str = "matchmaking_experiment_wait_seconds";
pub const ARM_GAP: &str = "matchmaking_experiment_rating_gap";
pub const ARM_TIMEOUTS: &str = "matchmaking_experiment_timeouts_total";
pub const ESTIMATE_CHECKS: &str = "matchmaking_wait_estimate_checks_total";
pub const REPEAT_PAIRINGS: &str = "matchmaking_repeat_pairings_total";
pub const PAIRINGS: &str = "matchmaking_pairings_total";
pub const REPEAT_PAIRING_RATE: &str = "repeat_pairing_rate";

/// Latency buckets (seconds): 100 µs to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Queue waits (seconds): 100 ms to 10 minutes.
const WAIT_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Rating gaps (rating points).
const GAP_BUCKETS: &[f64] = &[
    0.0, 10.0, 25.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 400.0, 600.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and answers its handle; later
/// calls (several apps in one test process) share it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(WAIT.into()), WAIT_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(RATING_GAP.into()), GAP_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(ARM_WAIT.into()), WAIT_BUCKETS)
                })
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(ARM_GAP.into()), GAP_BUCKETS))
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                })
                .expect("bucket lists are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_ok() {
                describe();
                ENABLED.store(true, Ordering::Relaxed);
            }
            handle
        })
        .clone()
}

/// Drains histogram buffers now and then, scraped or not.
pub async fn upkeep(handle: PrometheusHandle, mut stop: crate::shutdown::Stop) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => handle.run_upkeep(),
            _ = crate::shutdown::begun(&mut stop) => return,
        }
    }
}

fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route template, method and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request latency, by route template and method."
    );
    describe_gauge!(
        QUEUE_WAITING,
        "Entries searching in the pool at its last matching pass."
    );
    describe_counter!(JOINS, "Queue entries created.");
    describe_counter!(CANCELS, "Queue entries cancelled by their player.");
    describe_counter!(MATCHES, "Matches committed (pairs of players).");
    describe_counter!(
        TIMEOUTS,
        "Queue entries the service ended without a match, by reason: max_queue_time (TIMED_OUT), absent (CANCELLED with reason ABSENT)."
    );
    describe_gauge!(
        EVENT_STREAMS,
        "Event streams (GET /v1/matchmaking/queue/{id}/events) open on this node."
    );
    describe_histogram!(
        EVENT_PUSH,
        Unit::Seconds,
        "From the commit of an entry's change (on the clock of the process that committed it) to its event handed to the client's stream on this node."
    );
    describe_counter!(
        EVENT_STREAMS_REFUSED,
        "Event streams refused with 429: past the bound per user or per node."
    );
    describe_histogram!(
        WAIT,
        Unit::Seconds,
        "Time from joining to leaving the queue, by outcome (matched, timed_out, cancelled)."
    );
    describe_histogram!(
        RATING_GAP,
        "Rating difference of the two players of each committed match."
    );
    describe_histogram!(
        PASS_DURATION,
        Unit::Seconds,
        "Duration of one matching pass over one pool."
    );
    describe_histogram!(
        GAME_CREATION_DURATION,
        Unit::Seconds,
        "Game creation latency (successful calls)."
    );
    describe_counter!(
        GAME_CREATION_ERRORS,
        "Failed game creations, by kind (unavailable, refused)."
    );
    describe_gauge!(
        BREAKER_STATE,
        "Circuit breaker state: 0 closed, 1 half-open, 2 open."
    );
    describe_histogram!(
        STORE_DURATION,
        Unit::Seconds,
        "Store operation latency, by store and operation."
    );
    describe_counter!(
        STORE_ERRORS,
        "Failed store operations, by store and operation."
    );
    describe_counter!(
        RATING_FALLBACKS,
        "Joins whose rating did not come from the rating service, by why (breaker_open, busy, timeout, failed, invalid) and what was used instead (cache, local, default)."
    );
    describe_counter!(
        REPEAT_PAIRINGS,
        "Pairs a pass made of two players who met within the policy's repeat window (time or games), by tenant; counted while the repeat penalty is on."
    );
    describe_counter!(
        PAIRINGS,
        "Pairs passes made within a pool, by tenant (the denominator of repeat_pairing_rate)."
    );
    describe_gauge!(
        REPEAT_PAIRING_RATE,
        "Share of the pairs this node's passes made that were repeat pairings, by tenant, since the node started."
    );
    describe_counter!(
        ESTIMATE_CHECKS,
        "Matched players' real waits against the p80 wait a player like them is told, by tenant and outcome (within_p80, over_p80): within over all is the estimate's calibration, about 0.8 when it holds."
    );
    describe_counter!(
        ARM_MATCHES,
        "Matches committed under a matcher experiment, by tenant, experiment and arm (control, treatment)."
    );
    describe_histogram!(
        ARM_WAIT,
        Unit::Seconds,
        "Waits of players matched under a matcher experiment, by tenant, experiment and arm."
    );
    describe_histogram!(
        ARM_GAP,
        "Rating gaps of matches made under a matcher experiment, by tenant, experiment and arm."
    );
    describe_counter!(
        ARM_TIMEOUTS,
        "Entries ended without a match under a matcher experiment (TIMED_OUT, or CANCELLED as ABSENT), by tenant, experiment, arm and reason."
    );
    describe_counter!(
        SHED,
        "Requests answered 503 at once because the node was at MAX_IN_FLIGHT_REQUESTS."
    );
}

/// Whether a recorder is installed; until then (and with metrics off)
/// recording is skipped without building any label.
static ENABLED: AtomicBool = AtomicBool::new(false);

fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Records every request: count by route template, method and status, and
/// latency. Requests no route matched count under `unmatched`.
pub async fn http_middleware(request: Request, next: Next) -> Response {
    if !enabled() {
        return next.run(request).await;
    }
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    record_http(route, method, response.status().as_u16(), started.elapsed());
    response
}

/// The HTTP series of one route template and method.
struct MethodSeries {
    method: &'static str,
    duration: Histogram,
    by_status: Vec<(u16, Counter)>,
}

/// (store, operation): the labels of a store operation's series.
type StoreOperation = (&'static str, &'static str);

// Each thread keeps the handles it has used: a lookup touches no shared
// lock or reference count, and the registry (which builds and hashes a
// labelled key) is asked once per series and thread. Every key set is
// bounded: route templates, method labels, status codes, pools, store
// operations.
thread_local! {
    static HTTP: RefCell<HashMap<Box<str>, Vec<MethodSeries>>> = RefCell::default();
    static POOLS: RefCell<HashMap<PoolRef, Rc<PoolSeries>>> = RefCell::default();
    static STORE: RefCell<HashMap<StoreOperation, (Histogram, Counter)>> = RefCell::default();
}

fn record_http(route: &str, method: &'static str, status: u16, took: Duration) {
    HTTP.with_borrow_mut(|known| {
        if !known.contains_key(route) {
            known.insert(route.into(), Vec::new());
        }
        let Some(methods) = known.get_mut(route) else {
            return;
        };
        let at = match methods.iter().position(|m| m.method == method) {
            Some(at) => at,
            None => {
                methods.push(MethodSeries {
                    method,
                    duration: histogram!(HTTP_DURATION, "route" => route.to_owned(), "method" => method),
                    by_status: Vec::new(),
                });
                methods.len() - 1
            }
        };
        let series = &mut methods[at];
        series.duration.record(took.as_secs_f64());
        match series.by_status.iter().find(|(s, _)| *s == status) {
            Some((_, counter)) => counter.increment(1),
            None => {
                let counter = counter!(HTTP_REQUESTS, "route" => route.to_owned(), "method" => method, "status" => status.to_string());
                counter.increment(1);
                series.by_status.push((status, counter));
            }
        }
    });
}

/// One pool's series, registered once.
struct PoolSeries {
    joins: Counter,
    cancels: Counter,
    matches: Counter,
    gap: Histogram,
    waiting: Gauge,
    timeouts_max_queue_time: Counter,
    timeouts_absent: Counter,
    wait_matched: Histogram,
    wait_timed_out: Histogram,
    wait_cancelled: Histogram,
}

impl PoolSeries {
    fn register(pool: &PoolRef) -> Self {
        let tenant = SharedString::from(pool.tenant_id.to_string());
        let key = SharedString::from(pool.key.to_string());
        let labels = |extra: Option<(&'static str, &'static str)>| {
            let mut l = vec![
                Label::new("tenant", tenant.clone()),
                Label::new("pool", key.clone()),
            ];
            if let Some((k, v)) = extra {
                l.push(Label::new(k, v));
            }
            l
        };
        Self {
            joins: counter!(JOINS, labels(None)),
            cancels: counter!(CANCELS, labels(None)),
            matches: counter!(MATCHES, labels(None)),
            gap: histogram!(RATING_GAP, labels(None)),
            waiting: gauge!(QUEUE_WAITING, labels(None)),
            timeouts_max_queue_time: counter!(TIMEOUTS, labels(Some(("reason", "max_queue_time")))),
            timeouts_absent: counter!(TIMEOUTS, labels(Some(("reason", "absent")))),
            wait_matched: histogram!(WAIT, labels(Some(("outcome", "matched")))),
            wait_timed_out: histogram!(WAIT, labels(Some(("outcome", "timed_out")))),
            wait_cancelled: histogram!(WAIT, labels(Some(("outcome", "cancelled")))),
        }
    }
}

/// The pool's series, or `None` when metrics are off.
fn pool_series(pool: &PoolRef) -> Option<Rc<PoolSeries>> {
    if !enabled() {
        return None;
    }
    Some(POOLS.with_borrow_mut(|pools| {
        if let Some(found) = pools.get(pool) {
            return Rc::clone(found);
        }
        let series = Rc::new(PoolSeries::register(pool));
        pools.insert(pool.clone(), Rc::clone(&series));
        series
    }))
}

fn seconds(ms: i64) -> f64 {
    ms.max(0) as f64 / 1000.0
}

pub fn joined(pool: &PoolRef) {
    if let Some(s) = pool_series(pool) {
        s.joins.increment(1);
    }
}

pub fn cancelled(pool: &PoolRef, waited_ms: i64) {
    if let Some(s) = pool_series(pool) {
        s.cancels.increment(1);
        s.wait_cancelled.record(seconds(waited_ms));
    }
}

pub fn timed_out(pool: &PoolRef, reason: &'static str, waited_ms: i64) {
    if let Some(s) = pool_series(pool) {
        match reason {
            "absent" => s.timeouts_absent.increment(1),
            _ => s.timeouts_max_queue_time.increment(1),
        }
        s.wait_timed_out.record(seconds(waited_ms));
    }
}

pub fn matched(pool: &PoolRef, gap: i32, waits_ms: [i64; 2]) {
    if let Some(s) = pool_series(pool) {
        s.matches.increment(1);
        s.gap.record(f64::from(gap.unsigned_abs()));
        for w in waits_ms {
            s.wait_matched.record(seconds(w));
        }
    }
}

/// The side of a matcher experiment a match or a time-out fell on.
pub struct ArmLabels<'a> {
    pub tenant: &'a str,
    pub experiment: &'a str,
    pub arm: &'static str,
}

impl ArmLabels<'_> {
    fn labels(&self) -> [Label; 3] {
        [
            Label::new("tenant", self.tenant.to_owned()),
            Label::new("experiment", self.experiment.to_owned()),
            Label::new("arm", self.arm),
        ]
    }
}

pub fn arm_matched(arm: &ArmLabels<'_>, gap: i32, waits_ms: [i64; 2]) {
    if enabled() {
        counter!(ARM_MATCHES, arm.labels().to_vec()).increment(1);
        histogram!(ARM_GAP, arm.labels().to_vec()).record(f64::from(gap.unsigned_abs()));
        let wait = histogram!(ARM_WAIT, arm.labels().to_vec());
        for w in waits_ms {
            wait.record(seconds(w));
        }
    }
}

pub fn arm_timed_out(arm: &ArmLabels<'_>, reason: &'static str) {
    if enabled() {
        let mut labels = arm.labels().to_vec();
        labels.push(Label::new("reason", reason));
        counter!(ARM_TIMEOUTS, labels).increment(1);
    }
}

pub fn pass(pool: &PoolRef, waiting: usize, took: Duration) {
    if let Some(s) = pool_series(pool) {
        s.waiting.set(waiting as f64);
        histogram!(PASS_DURATION).record(took.as_secs_f64());
    }
}

pub fn event_streams(open: usize) {
    if enabled() {
        gauge!(EVENT_STREAMS).set(open as f64);
    }
}

pub fn event_pushed(delay_ms: i64) {
    if enabled() {
        histogram!(EVENT_PUSH).record(seconds(delay_ms.max(0)));
    }
}

pub fn event_stream_refused() {
    if enabled() {
        counter!(EVENT_STREAMS_REFUSED).increment(1);
    }
}

pub fn shed() {
    if enabled() {
        counter!(SHED).increment(1);
    }
}

pub fn rating_fallback(why: &'static str, used: &'static str) {
    if enabled() {
        counter!(RATING_FALLBACKS, "why" => why, "used" => used).increment(1);
    }
}

pub fn game_created(took: Duration) {
    if enabled() {
        histogram!(GAME_CREATION_DURATION).record(took.as_secs_f64());
    }
}

pub fn game_creation_failed(kind: &'static str) {
    if enabled() {
        counter!(GAME_CREATION_ERRORS, "kind" => kind).increment(1);
    }
}

pub fn breaker(name: &'static str, state: BreakerState) {
    let value = match state {
        BreakerState::Closed => 0.0,
        BreakerState::HalfOpen => 1.0,
        BreakerState::Open => 2.0,
    };
    if enabled() {
        gauge!(BREAKER_STATE, "breaker" => name).set(value);
    }
}

pub fn store_operation(store: &'static str, operation: &'static str, took: Duration, failed: bool) {
    if !enabled() {
        return;
    }
    STORE.with_borrow_mut(|known| {
        let (duration, errors) = known.entry((store, operation)).or_insert_with(|| {
            (
                histogram!(STORE_DURATION, "store" => store, "operation" => operation),
                counter!(STORE_ERRORS, "store" => store, "operation" => operation),
            )
        });
        duration.record(took.as_secs_f64());
        if failed {
            errors.increment(1);
        }
    });
}

/// A matched player's real wait was within (or over) the p80 estimate.
pub fn wait_estimate_checked(tenant: &TenantId, within: bool) {
    if enabled() {
        let outcome = if within { "within_p80" } else { "over_p80" };
        counter!(ESTIMATE_CHECKS, "tenant" => tenant.to_string(), "outcome" => outcome)
            .increment(1);
    }
}

/// A pass made `pairs` pairs within a pool, `repeats` of them of players
/// who met lately.
pub fn repeat_pairings(tenant: &TenantId, repeats: usize, pairs: usize) {
    if !enabled() {
        return;
    }
    let labels = [("tenant", tenant.to_string())];
    counter!(REPEAT_PAIRINGS, &labels).increment(repeats as u64);
    counter!(PAIRINGS, &labels).increment(pairs as u64);
    let (made, repeated) = {
        let mut totals = REPEAT_TOTALS.lock().unwrap_or_else(|e| e.into_inner());
        let t = totals.entry(tenant.clone()).or_default();
        t.0 += pairs as u64;
        t.1 += repeats as u64;
        *t
    };
    gauge!(REPEAT_PAIRING_RATE, &labels).set(repeated as f64 / made.max(1) as f64);
}

/// Pairs made and repeat pairs per tenant, since the process started.
static REPEAT_TOTALS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<TenantId, (u64, u64)>>,
> = std::sync::LazyLock::new(Default::default);
