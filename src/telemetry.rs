//! Tracing set-up: JSON lines when `LOG_FORMAT=json` (or when stdout is not
//! a terminal), human-readable otherwise. `RUST_LOG` filters as usual.
//!
//! A JSON line is one object: `timestamp` (RFC 3339, UTC), `level`,
//! `target`, `message`, the event's own fields, and `request_id` (the id of
//! the HTTP request being served, on every line written while serving it).
//! It is written by [`JsonLines`] straight into the output buffer: no
//! intermediate map, and no re-parsing of span fields per event.
//!
//! Lines are appended to one in-memory buffer; a background thread takes
//! the whole buffer every 50 ms (sooner once 256 KiB wait) and writes it to
//! stdout outside the lock. A request thread only copies its line: no
//! `write` call, no waiting on a slow stdout, no thread wake-up per line.
//! Should stdout stall, appending waits once 8 MiB are pending, so memory
//! stays bounded. [`LogFlush`] writes the rest at exit.

use std::cell::{Cell, RefCell};
use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard, Once};
use std::time::{Duration, SystemTime};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::http::request_id;
use crate::settings::LogFormat;

/// How long a line may wait in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Pending bytes that wake the writer thread before its time.
const WRITE_SOON: usize = 256 * 1024;
/// Pending bytes beyond which appending waits for the writer.
const MOST_PENDING: usize = 8 * 1024 * 1024;

/// Whether the writer thread runs (else appenders write a full backlog
/// themselves).
static WRITER_RUNNING: AtomicBool = AtomicBool::new(false);

/// Lines not yet written, and the signals between appenders and writer.
struct Pending {
    lines: Mutex<Vec<u8>>,
    /// Wakes the writer (enough pending) and appenders (drained).
    changed: Condvar,
    /// Held while a batch is taken and written, so batches keep their order.
    writing: Mutex<()>,
}

static PENDING: LazyLock<Pending> = LazyLock::new(|| Pending {
    lines: Mutex::new(Vec::with_capacity(WRITE_SOON)),
    changed: Condvar::new(),
    writing: Mutex::new(()),
});

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes what is pending and writes it to stdout. `spare` is an empty
/// buffer to leave in its place (the writer thread reuses two).
fn write_pending(spare: Vec<u8>, wait: Option<Duration>) -> Vec<u8> {
    if let Some(wait) = wait {
        // Waited for without `writing`: a writer thread that held it while
        // waiting, and took it again at once after, could keep the exit
        // flush from ever getting it (a mutex is not fair).
        let lines = lock(&PENDING.lines);
        if lines.len() < WRITE_SOON {
            drop(PENDING.changed.wait_timeout(lines, wait));
        }
    }
    let _order = lock(&PENDING.writing);
    let mut lines = lock(&PENDING.lines);
    let mut batch = std::mem::replace(&mut *lines, spare);
    drop(lines);
    PENDING.changed.notify_all();
    if !batch.is_empty() {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&batch).and_then(|()| out.flush());
    }
    batch.clear();
    batch
}

/// The fmt layer's writer: each line is appended to the pending buffer.
struct BufferedStdout;

impl<'a> MakeWriter<'a> for BufferedStdout {
    type Writer = Buffered;

    fn make_writer(&'a self) -> Self::Writer {
        let mut lines = lock(&PENDING.lines);
        while lines.len() >= MOST_PENDING {
            if !WRITER_RUNNING.load(Ordering::Relaxed) {
                // No writer thread to wait for: write the backlog here.
                drop(lines);
                write_pending(Vec::new(), None);
                lines = lock(&PENDING.lines);
                continue;
            }
            lines = PENDING
                .changed
                .wait(lines)
                .unwrap_or_else(|e| e.into_inner());
        }
        Buffered(lines)
    }
}

/// The pending buffer, locked for one line.
pub struct Buffered(MutexGuard<'static, Vec<u8>>);

impl std::io::Write for Buffered {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // The writer thread and the exit flush write; a line does not.
        Ok(())
    }
}

impl Drop for Buffered {
    fn drop(&mut self) {
        if self.0.len() >= WRITE_SOON {
            PENDING.changed.notify_all();
        }
    }
}

/// Writes what is pending when dropped, and sends the last spans: keep
/// it until exit.
pub struct LogFlush {
    traces: Option<SdkTracerProvider>,
}

impl Drop for LogFlush {
    fn drop(&mut self) {
        if let Some(provider) = self.traces.take()
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "the last spans could not be exported");
        }
        write_pending(Vec::new(), None);
    }
}

/// Where spans go (`OTEL_EXPORTER_OTLP_ENDPOINT`) and how.
#[derive(Debug, Clone)]
pub struct OtlpTraces {
    /// The collector's base URL; spans are posted to `{endpoint}/v1/traces`.
    pub endpoint: String,
    /// `http/protobuf` or `http/json`.
    pub protocol: String,
}

/// Whether spans are exported: the spans below the request (matching
/// pass, commit, CreateGame, rating read) are only opened then, so with no
/// exporter they cost nothing.
static EXPORTING: AtomicBool = AtomicBool::new(false);

pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// An `info` span when spans are exported, else [`tracing::Span::none`].
#[macro_export]
macro_rules! traced_span {
    ($($args:tt)*) => {
        if $crate::telemetry::exporting() {
            ::tracing::info_span!($($args)*)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// The span exporter and tracer of `traces`; W3C trace context becomes the
/// global propagator.
fn tracer(
    traces: &OtlpTraces,
) -> Result<(SdkTracerProvider, opentelemetry_sdk::trace::Tracer), String> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let protocol = match traces.protocol.as_str() {
        "http/protobuf" => Protocol::HttpBinary,
        "http/json" => Protocol::HttpJson,
        other => {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported: use http/protobuf or http/json"
            ));
        }
    };
    let base = crate::settings::http_base(&traces.endpoint, "OTEL_EXPORTER_OTLP_ENDPOINT")?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .with_endpoint(format!("{base}/v1/traces"))
        .build()
        .map_err(|e| format!("cannot build the OTLP span exporter: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("matchmaking-api");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let tracer = provider.tracer("matchmaking-api");
    Ok((provider, tracer))
}

/// Installs the global subscriber once; later calls are no-ops (tests).
/// With `traces`, spans are exported over OTLP as well. Keep the answer
/// until exit: dropping it flushes the last lines and spans.
pub fn init(format: Option<LogFormat>, traces: Option<&OtlpTraces>) -> Result<LogFlush, String> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let json = match format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Pretty) => false,
        None => !std::io::stdout().is_terminal(),
    };
    let traces = traces.map(tracer).transpose()?;
    static WRITER: Once = Once::new();
    WRITER.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(|| {
                let mut spare = Vec::with_capacity(WRITE_SOON);
                loop {
                    spare = write_pending(spare, Some(FLUSH_EVERY));
                }
            });
        WRITER_RUNNING.store(spawned.is_ok(), Ordering::Relaxed);
    });
    // `RUST_LOG` filters the log lines only; the exporter takes this
    // service's spans whatever the log level.
    let lines = tracing_subscriber::fmt::layer().with_writer(BufferedStdout);
    let lines: Box<dyn Layer<Registry> + Send + Sync> = if json {
        lines
            .event_format(JsonLines)
            .fmt_fields(NoSpanFields)
            .with_filter(filter)
            .boxed()
    } else {
        lines
            .with_ansi(std::io::stdout().is_terminal())
            .with_filter(filter)
            .boxed()
    };
    let (provider, spans) = match traces {
        Some((provider, tracer)) => (
            Some(provider),
            Some(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(Targets::new().with_target("matchmaking_api", Level::INFO)),
            ),
        ),
        None => (None, None),
    };
    // Requests open a span when something reads it: the pretty format, or
    // the exporter (JSON lines carry the request id without one).
    request_id::set_request_spans(!json || spans.is_some());
    let installed = tracing_subscriber::registry()
        .with(lines)
        .with(spans)
        .try_init()
        .is_ok();
    EXPORTING.store(installed && provider.is_some(), Ordering::Relaxed);
    Ok(LogFlush { traces: provider })
}

/// The JSON line format (see the module docs).
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        thread_local! {
            static LINE: RefCell<JsonObject> = RefCell::new(JsonObject::default());
        }
        let meta = event.metadata();
        let mut write = |line: &mut JsonObject| {
            line.clear();
            line.key("timestamp");
            push_timestamp(&mut line.out);
            line.string("level", meta.level().as_str());
            line.string("target", meta.target());
            event.record(line);
            if !line.has_request_id {
                request_id::with_current(|id| line.string("request_id", id));
            }
            line.out.push_str("}\n");
            writer.write_str(&line.out)
        };
        // One buffer per thread, reused; a fresh one should a field's
        // formatting itself log.
        LINE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut line) => write(&mut line),
            Err(_) => write(&mut JsonObject::default()),
        })
    }
}

/// Appends the current time as a JSON string, RFC 3339 in UTC with
/// milliseconds (`"2026-11-26T02:21:09.077Z"`). The part up to the second
/// is formatted once per second and thread.
fn push_timestamp(out: &mut String) {
    thread_local! {
        static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (cached, mut prefix) = SECOND.get();
    if cached != secs {
        let t = i64::try_from(secs)
            .ok()
            .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let mut s = String::with_capacity(19);
        let _ = write!(
            s,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        if s.len() == 19 {
            prefix.copy_from_slice(s.as_bytes());
            SECOND.set((secs, prefix));
        }
    }
    out.push('"');
    out.push_str(std::str::from_utf8(&prefix).unwrap_or("1970-01-01T00:00:00"));
    let _ = write!(out, ".{:03}Z\"", now.subsec_millis());
}

/// JSON lines carry no span fields (the request id comes from the request
/// itself), so spans keep none: nothing is formatted when a span opens.
pub struct NoSpanFields;

impl<'w> FormatFields<'w> for NoSpanFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        _writer: Writer<'w>,
        _fields: R,
    ) -> fmt::Result {
        Ok(())
    }
}

/// A JSON object being written, one field at a time.
struct JsonObject {
    out: String,
    /// Where `Debug`/`Display` values are rendered before escaping.
    scratch: String,
    has_request_id: bool,
}

impl Default for JsonObject {
    fn default() -> Self {
        Self {
            out: String::with_capacity(512),
            scratch: String::with_capacity(64),
            has_request_id: false,
        }
    }
}

impl JsonObject {
    fn clear(&mut self) {
        self.out.clear();
        self.has_request_id = false;
    }

    fn key(&mut self, key: &str) {
        self.out.push(if self.out.is_empty() { '{' } else { ',' });
        push_json_string(&mut self.out, key);
        self.out.push(':');
    }

    fn string(&mut self, key: &str, value: &str) {
        self.key(key);
        push_json_string(&mut self.out, value);
    }

    fn raw(&mut self, key: &str, value: impl fmt::Display) {
        self.key(key);
        let _ = write!(self.out, "{value}");
    }
}

/// Appends `s` as a JSON string literal, copying runs that need no
/// escaping whole.
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    let mut plain_from = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        // `b` is ASCII, so `i` is a char boundary.
        out.push_str(&s[plain_from..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        plain_from = i + 1;
    }
    out.push_str(&s[plain_from..]);
    out.push('"');
}

impl Visit for JsonObject {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.has_request_id |= field.name() == "request_id";
        self.string(field.name(), value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.raw(field.name(), value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.raw(field.name(), value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.raw(field.name(), value);
        } else {
            self.string(field.name(), &value.to_string());
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field.name(), value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.has_request_id |= field.name() == "request_id";
        self.scratch.clear();
        let _ = write!(self.scratch, "{value:?}");
        self.key(field.name());
        push_json_string(&mut self.out, &self.scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_json() {
        let mut out = String::new();
        push_json_string(&mut out, "a \"b\"\\\n\u{1}é");
        assert_eq!(out, r#""a \"b\"\\\n\u0001é""#);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v, "a \"b\"\\\n\u{1}é");
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        for _ in 0..2 {
            let mut out = String::new();
            let before = time::OffsetDateTime::now_utc();
            push_timestamp(&mut out);
            let text: String = serde_json::from_str(&out).unwrap();
            assert_eq!(text.len(), 24, "{text}");
            assert!(text.ends_with('Z'), "{text}");
            let t =
                time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
                    .unwrap();
            let after = time::OffsetDateTime::now_utc();
            assert!(
                t >= before - time::Duration::milliseconds(1) && t <= after,
                "{text}"
            );
        }
    }

    #[test]
    fn an_object_is_valid_json_with_its_fields_in_order() {
        let mut o = JsonObject::default();
        o.string("message", "hi");
        o.raw("n", 3);
        o.raw("ok", true);
        o.out.push('}');
        assert_eq!(o.out, r#"{"message":"hi","n":3,"ok":true}"#);
    }
}
