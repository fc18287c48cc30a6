//! Structured logs: one JSON object per line, written by a small `tracing` layer.
//!
//! The gateway logs one line per request, so the cost of a log line is on the hot path. The
//! generic `tracing-subscriber` JSON formatter plus a blocking write per line cost about
//! 5 us per request (BENCHMARKS.md), ten times the whole filter. This layer formats the line
//! by hand into a reused per-thread buffer and hands it to a [`Sink`]:
//!
//! - [`Sink::Direct`] writes each line before the event returns. Lambda needs this: the
//!   sandbox may freeze the process as soon as the response is sent, so nothing may wait in a
//!   buffer.
//! - [`Sink::Background`] appends the line to a shared buffer (a lock and a copy, no system
//!   call); a writer thread writes the buffer out every [`FLUSH_INTERVAL`]. The buffer is
//!   bounded; when it is full the logging thread waits for the writer, so no line is dropped.
//!   [`LogGuard`] writes out what is buffered when dropped.
//!
//! Lines look like `{"timestamp":"2026-11-29T12:00:00.123456Z","level":"INFO",
//! "target":"nodefleet::rpc","decision":"forwarded",...}`; `message` is a field like the
//! others. `RUST_LOG` filters as usual.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// How often the background writer writes: often enough that a person tailing the log sees
/// lines at once, rarely enough that a busy gateway makes ~10 writes a second, not one per
/// request.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// The most the background buffer holds before loggers wait: at 100k requests/s about 0.1 s
/// of lines, enough to ride out one flush interval, bounded whatever the disk does.
const BACKGROUND_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// Where lines go.
pub enum Sink {
    /// Written before the event returns.
    Direct(Mutex<Box<dyn Write + Send>>),
    /// Appended to a buffer that a writer thread writes out.
    Background(Arc<Buffer>),
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sink::Direct(_) => "Sink::Direct",
            Sink::Background(_) => "Sink::Background",
        })
    }
}

impl Sink {
    fn write_line(&self, line: &[u8]) {
        match self {
            Sink::Direct(writer) => {
                let mut writer = writer.lock().unwrap_or_else(|e| e.into_inner());
                // A log line that cannot be written is not worth failing a request over.
                let _ = writer.write_all(line);
                let _ = writer.flush();
            }
            Sink::Background(buffer) => buffer.push(line),
        }
    }
}

/// Lines waiting for the writer thread.
#[derive(Debug, Default)]
pub struct Buffer {
    lines: Mutex<Vec<u8>>,
    drained: Condvar,
    stop: AtomicBool,
}

impl Buffer {
    fn push(&self, line: &[u8]) {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        while lines.len() + line.len() > BACKGROUND_BUFFER_BYTES && !lines.is_empty() {
            lines = self.drained.wait(lines).unwrap_or_else(|e| e.into_inner());
        }
        lines.extend_from_slice(line);
    }

    /// Writes out what is buffered.
    fn drain_into(&self, out: &mut dyn Write) {
        let batch = std::mem::take(&mut *self.lines.lock().unwrap_or_else(|e| e.into_inner()));
        self.drained.notify_all();
        if !batch.is_empty() {
            let _ = out.write_all(&batch);
            let _ = out.flush();
        }
    }
}

/// Writes out every buffered line when dropped (keep it alive in `main`).
#[derive(Debug)]
pub struct LogGuard {
    background: Vec<Writer>,
}

/// A background buffer and the thread that writes it out.
type Writer = (Arc<Buffer>, std::thread::JoinHandle<()>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        for (buffer, writer) in self.background.drain(..) {
            buffer.stop.store(true, Ordering::SeqCst);
            writer.thread().unpark();
            let _ = writer.join();
        }
    }
}

/// Installs JSON logging to stdout, written directly (Lambda). `RUST_LOG` overrides
/// `default`. Calling it twice is harmless: the first subscriber stays.
pub fn init_json(default: &str, to_stderr: bool) {
    let writer: Box<dyn Write + Send> = if to_stderr {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    install(default, Sink::Direct(Mutex::new(writer)));
}

/// Installs JSON logging through a background writer to stderr (CLI servers).
pub fn init_json_background(default: &str) -> LogGuard {
    background(default, Box::new(std::io::stderr()))
}

/// Installs JSON logging appended to two files through background writers: events whose
/// target `goes_first` accepts go to `first`, all others to `second` (the local fleet: request
/// lines in `gateway.log`, the self-healing loop's in `reactor.log`).
pub fn init_json_to_two_files(
    default: &str,
    first: &Path,
    second: &Path,
    goes_first: fn(&str) -> bool,
) -> std::io::Result<LogGuard> {
    let open = |path: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    };
    let (first_file, second_file) = (open(first)?, open(second)?);
    let (first_sink, first_writer) = background_sink(Box::new(first_file));
    let (second_sink, second_writer) = background_sink(Box::new(second_file));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = split(filter, first_sink, second_sink, goes_first).try_init();
    Ok(LogGuard {
        background: first_writer.into_iter().chain(second_writer).collect(),
    })
}

/// A subscriber that writes events `goes_first` accepts (by target) to `first`, the others
/// to `second`.
fn split(
    filter: EnvFilter,
    first: Sink,
    second: Sink,
    goes_first: fn(&str) -> bool,
) -> impl Subscriber + Send + Sync {
    use tracing_subscriber::filter::filter_fn;
    tracing_subscriber::registry()
        .with(filter)
        .with(
            JsonLines { sink: first }.with_filter(filter_fn(move |meta| goes_first(meta.target()))),
        )
        .with(
            JsonLines { sink: second }
                .with_filter(filter_fn(move |meta| !goes_first(meta.target()))),
        )
}

fn background(default: &str, out: Box<dyn Write + Send>) -> LogGuard {
    let (sink, writer) = background_sink(out);
    install(default, sink);
    LogGuard {
        background: writer.into_iter().collect(),
    }
}

/// A background sink and its writer thread; without a thread to write with, a direct sink
/// to stderr rather than lost lines.
fn background_sink(mut out: Box<dyn Write + Send>) -> (Sink, Option<Writer>) {
    let buffer = Arc::new(Buffer::default());
    let shared = buffer.clone();
    let started = std::thread::Builder::new()
        .name("log-writer".to_owned())
        .spawn(move || {
            while !shared.stop.load(Ordering::SeqCst) {
                std::thread::park_timeout(FLUSH_INTERVAL);
                shared.drain_into(&mut out);
            }
            shared.drain_into(&mut out);
        });
    match started {
        Ok(writer) => (Sink::Background(buffer.clone()), Some((buffer, writer))),
        Err(_) => (Sink::Direct(Mutex::new(Box::new(std::io::stderr()))), None),
    }
}

fn install(default: &str, sink: Sink) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(JsonLines { sink })
        .try_init();
}

/// The layer: one JSON object per event.
#[derive(Debug)]
pub struct JsonLines {
    sink: Sink,
}

impl JsonLines {
    pub fn new(sink: Sink) -> JsonLines {
        JsonLines { sink }
    }
}

thread_local! {
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
}

impl<S: Subscriber> Layer<S> for JsonLines {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        LINE.with(|line| {
            let Ok(mut line) = line.try_borrow_mut() else {
                return;
            };
            line.clear();
            format_event(&mut line, event, SystemTime::now());
            self.sink.write_line(line.as_bytes());
        });
    }
}

/// Formats one event as a JSON line (with the trailing newline).
pub fn format_event(out: &mut String, event: &Event<'_>, now: SystemTime) {
    let meta = event.metadata();
    out.push_str(r#"{"timestamp":""#);
    push_timestamp(out, now);
    out.push_str(r#"","level":""#);
    out.push_str(meta.level().as_str());
    out.push_str(r#"","target":"#);
    push_json_str(out, meta.target());
    event.record(&mut FieldWriter { out });
    out.push_str("}\n");
}

struct FieldWriter<'a> {
    out: &'a mut String,
}

impl FieldWriter<'_> {
    fn key(&mut self, field: &Field) {
        self.out.push(',');
        push_json_str(self.out, field.name());
        self.out.push(':');
    }
}

impl Visit for FieldWriter<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_json_str(self.out, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        push_u64(self.out, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        if value < 0 {
            self.out.push('-');
        }
        push_u64(self.out, value.unsigned_abs());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.out.push_str(if value { "true" } else { "false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            let _ = write!(self.out, "{value}");
        } else {
            self.out.push_str("null");
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.key(field);
        push_json_str(self.out, &format!("{value:?}"));
    }
}

/// Appends `s` as a JSON string literal.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, byte) in s.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Appends a number in decimal without the formatting machinery (it is on the hot path).
fn push_u64(out: &mut String, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
}

thread_local! {
    /// The formatted date and time of the last second seen by this thread: formatting a
    /// date is the dearest part of a line, and a busy thread logs many lines per second.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Appends `now` as RFC 3339 UTC with microseconds, e.g. `2026-11-29T12:00:00.123456Z`.
fn push_timestamp(out: &mut String, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|second| {
        let mut second = second.borrow_mut();
        if second.0 != secs {
            let (days, rem) = (secs / 86_400, secs % 86_400);
            let (year, month, day) = civil_from_days(days as i64);
            second.1.clear();
            let _ = write!(
                second.1,
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60
            );
            second.0 = secs;
        }
        out.push_str(&second.1);
    });
    let micros = since.subsec_micros();
    out.push('.');
    let mut divisor = 100_000;
    while divisor > 0 {
        out.push(char::from(b'0' + (micros / divisor % 10) as u8));
        divisor /= 10;
    }
    out.push('Z');
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let mut out = String::new();
        push_timestamp(
            &mut out,
            UNIX_EPOCH + Duration::from_micros(1_795_953_600_123_456),
        );
        assert_eq!(out, "2026-11-29T12:00:00.123456Z");
        out.clear();
        push_timestamp(&mut out, UNIX_EPOCH + Duration::from_secs(951_782_400)); // leap day
        assert_eq!(out, "2000-02-29T00:00:00.000000Z");
        out.clear();
        push_timestamp(&mut out, UNIX_EPOCH);
        assert_eq!(out, "1970-01-01T00:00:00.000000Z");
        out.clear();
        push_timestamp(&mut out, UNIX_EPOCH + Duration::from_micros(5));
        assert_eq!(
            out, "1970-01-01T00:00:00.000005Z",
            "the cached second, new micros"
        );
    }

    #[test]
    fn numbers_are_decimal() {
        for value in [0, 7, 10, 1_234_567_890, u64::MAX] {
            let mut out = String::new();
            push_u64(&mut out, value);
            assert_eq!(out, value.to_string());
        }
    }

    #[test]
    fn strings_are_escaped() {
        let mut out = String::new();
        push_json_str(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, "a\"b\\c\nd\u{1}é");
    }

    /// Collects lines in memory.
    #[derive(Clone, Default)]
    struct Memory(Arc<Mutex<Vec<u8>>>);

    impl Write for Memory {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_background_buffer_keeps_every_line_in_order() {
        let buffer = Buffer::default();
        let mut out = Vec::new();
        buffer.push(b"one\n");
        buffer.push(b"two\n");
        buffer.drain_into(&mut out);
        buffer.drain_into(&mut out); // nothing new: nothing written
        buffer.push(b"three\n");
        buffer.drain_into(&mut out);
        assert_eq!(out, b"one\ntwo\nthree\n");
    }

    #[test]
    fn a_split_subscriber_sends_each_event_to_one_file_by_its_target() {
        let (first, second) = (Memory::default(), Memory::default());
        let subscriber = split(
            EnvFilter::new("info"),
            Sink::Direct(Mutex::new(Box::new(first.clone()))),
            Sink::Direct(Mutex::new(Box::new(second.clone()))),
            |target| target.starts_with("nodefleet::rpc"),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "nodefleet::rpc", decision = "forwarded");
            tracing::info!(target: "nodefleet::fleet", event = "reconcile");
            tracing::warn!(target: "nodefleet_reactor::reconcile", message = "bookkeeping");
            tracing::debug!(target: "nodefleet::fleet", event = "filtered out");
        });
        let lines = |memory: &Memory| -> Vec<serde_json::Value> {
            String::from_utf8(memory.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let (first, second) = (lines(&first), lines(&second));
        assert_eq!(first.len(), 1, "{first:?}");
        assert_eq!(first[0]["decision"], "forwarded");
        let targets: Vec<&str> = second
            .iter()
            .map(|l| l["target"].as_str().unwrap())
            .collect();
        assert_eq!(
            targets,
            ["nodefleet::fleet", "nodefleet_reactor::reconcile"]
        );
    }

    #[test]
    fn events_become_one_json_object_per_line() {
        let memory = Memory::default();
        let sink = Sink::Direct(Mutex::new(Box::new(memory.clone())));
        let subscriber = tracing_subscriber::registry().with(JsonLines::new(sink));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                target: "nodefleet::rpc",
                decision = "forwarded",
                methods = "eth_call,\"odd\"",
                items = 3u64,
                latency_us = 42u64,
                ok = true,
                upstream_status = None::<u16>,
                "request"
            );
            tracing::warn!(error = %"boom", "second");
        });
        let text = String::from_utf8(memory.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["target"], "nodefleet::rpc");
        assert_eq!(lines[0]["decision"], "forwarded");
        assert_eq!(lines[0]["methods"], "eth_call,\"odd\"");
        assert_eq!(lines[0]["items"], 3);
        assert_eq!(lines[0]["ok"], true);
        assert_eq!(lines[0]["message"], "request");
        assert!(
            lines[0].get("upstream_status").is_none(),
            "None fields are left out"
        );
        assert_eq!(lines[1]["error"], "boom");
        assert!(lines[1]["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
