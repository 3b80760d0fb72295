//! Tracing set-up: JSON lines when `LOG_FORMAT=json` (or when stdout is not
//! a terminal), human-readable otherwise. `RUST_LOG` filters as usual.
//!
//! A JSON line is one object: `timestamp` (RFC 3339, UTC), `level`,
//! `target`, `message`, the event's own fields, and `request_id` (the id of
//! the HTTP request being served, on every line written while serving it).
//! It is written by [`JsonLines`] straight into the output buffer: no
//! intermediate map, and no re-parsing of span fields per event.
//!
//! Lines go into one 64 KiB buffer that a background thread flushes every
//! 50 ms (and that flushes itself when full, and at exit through
//! [`LogFlush`]): no `write` call and no thread wake-up per line.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use std::io::{BufWriter, Stdout, Write as _};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::domain::{now_millis, rfc3339};
use crate::http::request_id;
use crate::settings::LogFormat;

/// How long a line may wait in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

static OUT: LazyLock<Mutex<BufWriter<Stdout>>> =
    LazyLock::new(|| Mutex::new(BufWriter::with_capacity(64 * 1024, std::io::stdout())));

fn out() -> MutexGuard<'static, BufWriter<Stdout>> {
    OUT.lock().unwrap_or_else(|e| e.into_inner())
}

/// The buffered stdout, as the fmt layer's writer.
struct BufferedStdout;

impl<'a> MakeWriter<'a> for BufferedStdout {
    type Writer = Buffered;

    fn make_writer(&'a self) -> Self::Writer {
        Buffered(out())
    }
}

/// The buffer, locked for one line.
pub struct Buffered(MutexGuard<'static, BufWriter<Stdout>>);

impl std::io::Write for Buffered {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // The flusher thread and exit flush; a line does not.
        Ok(())
    }
}

/// Flushes the log buffer when dropped: keep it until exit.
pub struct LogFlush;

impl Drop for LogFlush {
    fn drop(&mut self) {
        let _ = out().flush();
    }
}

/// Installs the global subscriber once; later calls are no-ops (tests).
/// Keep the answer until exit: dropping it flushes the last lines.
pub fn init(format: Option<LogFormat>) -> LogFlush {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let json = match format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Pretty) => false,
        None => !std::io::stdout().is_terminal(),
    };
    let _ = std::thread::Builder::new()
        .name("log-flush".into())
        .spawn(|| {
            loop {
                std::thread::sleep(FLUSH_EVERY);
                let _ = out().flush();
            }
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(BufferedStdout);
    request_id::set_request_spans(!json);
    let _ = if json {
        builder
            .event_format(JsonLines)
            .fmt_fields(NoSpanFields)
            .try_init()
    } else {
        builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init()
    };
    LogFlush
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
        let meta = event.metadata();
        let mut line = JsonObject::default();
        line.string("timestamp", &rfc3339(now_millis()));
        line.string("level", meta.level().as_str());
        line.string("target", meta.target());
        event.record(&mut line);
        if !line.has_request_id {
            let id = request_id::current();
            if !id.is_empty() {
                line.string("request_id", &id);
            }
        }
        line.out.push('}');
        writeln!(writer, "{}", line.out)
    }
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
    fn an_object_is_valid_json_with_its_fields_in_order() {
        let mut o = JsonObject::default();
        o.string("message", "hi");
        o.raw("n", 3);
        o.raw("ok", true);
        o.out.push('}');
        assert_eq!(o.out, r#"{"message":"hi","n":3,"ok":true}"#);
    }
}
