//! Where access events go (`access_log`): with the other lines on stderr,
//! nowhere, or a file of their own.
//!
//! Access events are `tracing` events with the `access` target, wherever
//! they are made (a request's record, a closed tunnel). [`AccessLayer`]
//! sits in the subscriber: for `"off"` it tells `tracing` nobody wants them,
//! so they are not even formatted; for a file it formats each one into a
//! buffer of the worker thread that made it, and a writer thread of its own
//! moves the buffers to the file at least once a second, sooner when one
//! passes 64 KiB. A worker never waits on the disk: it holds its own
//! buffer's lock only to append a line, and if the writer falls behind by
//! more than 4 MiB per worker, lines are dropped and counted rather than
//! queued without bound. Lines of one worker keep their order; lines of
//! different workers meet in the file a buffer at a time.
//!
//! The file is opened for appending, created if missing; [`reopen`]
//! (SIGUSR1) closes and opens it again after logrotate moved it away;
//! [`finish`] writes what is buffered (at exit).
//!
//! The destination is process-wide, like the subscriber itself, and set by
//! [`configure`] at start and on each reload.

use crate::config::{AccessLog, LogFormat};
use arc_swap::ArcSwap;
use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// The target of access events.
pub const TARGET: &str = "access";
/// A worker's buffer is handed to the writer once it holds this much.
const FLUSH_AT: usize = 64 * 1024;
/// Beyond this much unwritten per worker, lines are dropped.
const DROP_AT: usize = 4 * 1024 * 1024;
/// The writer writes at least this often.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Where access events go now.
enum Destination {
    Stderr,
    Off,
    File(Arc<FileSink>),
}

static DESTINATION: LazyLock<ArcSwap<Destination>> =
    LazyLock::new(|| ArcSwap::from_pointee(Destination::Stderr));

/// Send access events where `setting` says, written as `format`. A file
/// that cannot be opened leaves them where they were, and says why.
pub fn configure(setting: &AccessLog, format: LogFormat) -> Result<(), String> {
    let current = DESTINATION.load();
    let next = match (setting, &**current) {
        (AccessLog::Stderr, Destination::Stderr) | (AccessLog::Off, Destination::Off) => {
            return Ok(());
        }
        (AccessLog::File(path), Destination::File(sink))
            if sink.path == *path && sink.format == format =>
        {
            return Ok(());
        }
        (AccessLog::Stderr, _) => Destination::Stderr,
        (AccessLog::Off, _) => Destination::Off,
        (AccessLog::File(path), _) => Destination::File(FileSink::open(path.clone(), format)?),
    };
    let previous = DESTINATION.swap(Arc::new(next));
    // Which callsites are wanted changed with the destination.
    tracing::callsite::rebuild_interest_cache();
    if let Destination::File(sink) = &*previous {
        sink.flush();
    }
    Ok(())
}

/// Close and open the access log file again (after logrotate moved it).
pub fn reopen() {
    if let Destination::File(sink) = &**DESTINATION.load() {
        sink.shared.reopen.store(true, Ordering::Release);
        sink.flush();
    }
}

/// Write everything buffered and wait for it (at exit).
pub fn finish() {
    if let Destination::File(sink) = &**DESTINATION.load() {
        sink.flush();
    }
}

/// One request's access line, as [`crate::access::Record`] closes it.
pub struct RequestLine<'a> {
    pub level: Level,
    pub message: &'a str,
    pub peer: std::net::SocketAddr,
    pub method: &'a str,
    /// The HTTP version the client spoke: `1.1`, `2`.
    pub http: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub bytes: u64,
    /// The request's duration, in microseconds.
    pub micros: u128,
    pub route: &'a str,
    pub upstream: &'a str,
    pub error: Option<&'a str>,
}

/// Write `line` to the access log file, if access events go to one: the
/// fields straight into this thread's buffer, with none of `tracing`'s
/// dispatch. `false`: no file, the caller emits the event.
pub fn write_request(line: &RequestLine<'_>) -> bool {
    let destination = DESTINATION.load();
    let Destination::File(sink) = &**destination else {
        return false;
    };
    sink.append(|out, format| format_request(out, line, format));
    true
}

/// Whether access events go to a file of their own.
pub fn to_file() -> bool {
    matches!(**DESTINATION.load(), Destination::File(_))
}

/// Whether access events go nowhere (`access_log = "off"`).
fn is_off() -> bool {
    matches!(**DESTINATION.load(), Destination::Off)
}

/// Whether access events go to stderr with the other lines.
pub fn to_stderr() -> bool {
    matches!(**DESTINATION.load(), Destination::Stderr)
}

/// The `tracing` layer that takes access events to their destination.
pub struct AccessLayer;

impl<S: Subscriber> Layer<S> for AccessLayer {
    fn register_callsite(
        &self,
        metadata: &'static Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        // Cached per callsite until `configure` rebuilds the cache: an
        // access event nobody wants (`access_log = "off"`) costs nothing to
        // skip. This layer's interest is the whole subscriber's: for
        // `"stderr"` it must not veto the event the stderr layer writes.
        if metadata.target() != TARGET || !is_off() {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        metadata.target() != TARGET || !is_off()
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        if let Destination::File(sink) = &**DESTINATION.load() {
            sink.write(event);
        }
    }
}

/// An access log file, its writer thread and the workers' buffers.
pub struct FileSink {
    path: PathBuf,
    format: LogFormat,
    /// Tells this sink's buffers from an earlier one's, per thread.
    id: u64,
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// One thread's lines waiting for the writer.
type Buffer = Arc<Mutex<Vec<u8>>>;

/// What workers and the writer share.
struct Shared {
    buffers: Mutex<Vec<Buffer>>,
    reopen: AtomicBool,
    stop: AtomicBool,
    dropped: AtomicU64,
    /// Flushes asked for and flushes done, for [`FileSink::flush`].
    flushes: Mutex<(u64, u64)>,
    flushed: Condvar,
    writer: Mutex<Option<std::thread::Thread>>,
}

thread_local! {
    /// This thread's buffer for the sink with the id beside it.
    static BUFFER: RefCell<Option<(u64, Buffer)>> = const { RefCell::new(None) };
    /// The last second formatted, and its text (`2026-12-01T10:59:29`).
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

impl FileSink {
    fn open(path: PathBuf, format: LogFormat) -> Result<Arc<FileSink>, String> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let file = open_append(&path)?;
        let shared = Arc::new(Shared {
            buffers: Mutex::new(Vec::new()),
            reopen: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            flushes: Mutex::new((0, 0)),
            flushed: Condvar::new(),
            writer: Mutex::new(None),
        });
        let sink = Arc::new(FileSink {
            path: path.clone(),
            format,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shared: shared.clone(),
            writer: Mutex::new(None),
        });
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(path, file, &shared))
            .map_err(|e| format!("cannot start the access log writer: {e}"))?;
        *lock(&sink.shared.writer) = Some(writer.thread().clone());
        *lock(&sink.writer) = Some(writer);
        Ok(sink)
    }

    /// Format `event` into this thread's buffer.
    fn write(&self, event: &Event<'_>) {
        self.append(|out, format| format_event(out, event, format));
    }

    /// Append one line, made by `line`, to this thread's buffer.
    fn append(&self, line: impl FnOnce(&mut Vec<u8>, LogFormat)) {
        let buffer = BUFFER.with(|b| {
            let mut b = b.borrow_mut();
            match &*b {
                Some((id, buffer)) if *id == self.id => buffer.clone(),
                _ => {
                    let buffer = Arc::new(Mutex::new(Vec::with_capacity(FLUSH_AT)));
                    lock(&self.shared.buffers).push(buffer.clone());
                    *b = Some((self.id, buffer.clone()));
                    buffer
                }
            }
        });
        let mut out = lock(&buffer);
        if out.len() >= DROP_AT {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        line(&mut out, self.format);
        if out.len() >= FLUSH_AT {
            drop(out);
            self.shared.wake();
        }
    }

    /// Have the writer write everything buffered now, and wait (at most a
    /// few seconds) until it has.
    fn flush(&self) {
        let ticket = {
            let mut flushes = lock(&self.shared.flushes);
            flushes.0 += 1;
            flushes.0
        };
        self.shared.wake();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut flushes = lock(&self.shared.flushes);
        while flushes.1 < ticket {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            flushes = self
                .shared
                .flushed
                .wait_timeout(flushes, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake();
        if let Some(writer) = lock(&self.writer).take() {
            let _ = writer.join();
        }
    }
}

impl Shared {
    fn wake(&self) {
        if let Some(writer) = &*lock(&self.writer) {
            writer.unpark();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn open_append(path: &std::path::Path) -> Result<File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open access_log {}: {e}", path.display()))
}

/// The writer thread: every second, or when woken, move each worker's
/// buffer to the file.
fn write_loop(path: PathBuf, file: File, shared: &Shared) {
    let mut file = Some(file);
    let mut spare = Vec::with_capacity(FLUSH_AT);
    let mut last_drop_warning = None::<Instant>;
    loop {
        std::thread::park_timeout(FLUSH_EVERY);
        let asked = lock(&shared.flushes).0;
        if shared.reopen.swap(false, Ordering::AcqRel) {
            // Write what was meant for the old file first.
            drain(shared, &mut file, &mut spare);
            file = match open_append(&path) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::error!("{e}; access lines are dropped until the next SIGUSR1");
                    None
                }
            };
        }
        drain(shared, &mut file, &mut spare);
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 && last_drop_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            last_drop_warning = Some(Instant::now());
            tracing::warn!(
                dropped,
                "access log writer fell behind: {dropped} access lines dropped"
            );
        }
        {
            let mut flushes = lock(&shared.flushes);
            flushes.1 = flushes.1.max(asked);
            shared.flushed.notify_all();
        }
        if shared.stop.load(Ordering::Acquire) {
            drain(shared, &mut file, &mut spare);
            return;
        }
    }
}

/// Swap out every worker's buffer and write it.
fn drain(shared: &Shared, file: &mut Option<File>, spare: &mut Vec<u8>) {
    let buffers: Vec<_> = lock(&shared.buffers).clone();
    for buffer in buffers {
        {
            let mut held = lock(&buffer);
            if held.is_empty() {
                continue;
            }
            std::mem::swap(&mut *held, spare);
        }
        if let Some(f) = file.as_mut()
            && let Err(e) = f.write_all(spare)
        {
            tracing::error!(error = %e, "cannot write the access log");
        }
        spare.clear();
        if spare.capacity() > 4 * FLUSH_AT {
            spare.shrink_to(FLUSH_AT);
        }
    }
}

/// One event as one line: `TIME LEVEL MESSAGE key=value …` (text) or a
/// JSON object.
fn format_event(out: &mut Vec<u8>, event: &Event<'_>, format: LogFormat) {
    let level = *event.metadata().level();
    match format {
        LogFormat::Text => {
            write_time(out);
            out.push(b' ');
            out.extend_from_slice(level_name(level).as_bytes());
            let mut visitor = TextVisitor { out, message: true };
            event.record(&mut visitor);
            out.push(b'\n');
        }
        LogFormat::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            write_time(out);
            out.extend_from_slice(b"\",\"level\":\"");
            out.extend_from_slice(level_name(level).as_bytes());
            out.push(b'"');
            let mut visitor = JsonVisitor { out };
            event.record(&mut visitor);
            out.extend_from_slice(b"}\n");
        }
    }
}

/// A request's line: the same fields, in the same order, as the `access`
/// event `tracing` would carry.
fn format_request(out: &mut Vec<u8>, line: &RequestLine<'_>, format: LogFormat) {
    let millis = |out: &mut Vec<u8>| {
        write_u64(out, (line.micros / 1000) as u64);
        let frac = (line.micros % 1000) as u16;
        out.extend_from_slice(&[
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ]);
    };
    match format {
        LogFormat::Text => {
            write_time(out);
            out.push(b' ');
            out.extend_from_slice(level_name(line.level).as_bytes());
            out.push(b' ');
            write_text_value(out, line.message);
            out.extend_from_slice(b" peer=");
            write_addr(out, line.peer);
            for (key, value) in [
                (&b" method="[..], line.method),
                (b" http=", line.http),
                (b" host=", line.host),
                (b" path=", line.path),
            ] {
                out.extend_from_slice(key);
                write_text_value(out, value);
            }
            out.extend_from_slice(b" status=");
            write_u64(out, u64::from(line.status));
            out.extend_from_slice(b" bytes=");
            write_u64(out, line.bytes);
            out.extend_from_slice(b" duration_ms=");
            millis(out);
            out.extend_from_slice(b" route=");
            write_text_value(out, line.route);
            out.extend_from_slice(b" upstream=");
            write_text_value(out, line.upstream);
            if let Some(error) = line.error {
                out.extend_from_slice(b" error=");
                write_text_value(out, error);
            }
            out.push(b'\n');
        }
        LogFormat::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            write_time(out);
            out.extend_from_slice(b"\",\"level\":\"");
            out.extend_from_slice(level_name(line.level).as_bytes());
            out.extend_from_slice(b"\",\"message\":");
            let _ = serde_json::to_writer(&mut *out, line.message);
            out.extend_from_slice(b",\"peer\":\"");
            write_addr(out, line.peer);
            out.push(b'"');
            for (key, value) in [
                (&b",\"method\":"[..], line.method),
                (b",\"http\":", line.http),
                (b",\"host\":", line.host),
                (b",\"path\":", line.path),
            ] {
                out.extend_from_slice(key);
                let _ = serde_json::to_writer(&mut *out, value);
            }
            out.extend_from_slice(b",\"status\":");
            write_u64(out, u64::from(line.status));
            out.extend_from_slice(b",\"bytes\":");
            write_u64(out, line.bytes);
            out.extend_from_slice(b",\"duration_ms\":");
            millis(out);
            for (key, value) in [
                (&b",\"route\":"[..], Some(line.route)),
                (b",\"upstream\":", Some(line.upstream)),
                (b",\"error\":", line.error),
            ] {
                if let Some(value) = value {
                    out.extend_from_slice(key);
                    let _ = serde_json::to_writer(&mut *out, value);
                }
            }
            out.extend_from_slice(b"}\n");
        }
    }
}

/// A number in decimal, without `fmt`.
fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `1.2.3.4:5678` without `fmt` (IPv6 through `Display`, `[::1]:5678`).
fn write_addr(out: &mut Vec<u8>, addr: std::net::SocketAddr) {
    match addr {
        std::net::SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                write_u64(out, u64::from(octet));
            }
            out.push(b':');
            write_u64(out, u64::from(v4.port()));
        }
        v6 => {
            let _ = write!(ByteWriter(out), "{v6}");
        }
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// `2026-12-01T10:59:29.123Z`, the second's text cached per thread.
fn write_time(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let second = since.as_secs();
    SECOND.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != second {
            let whole = UNIX_EPOCH + Duration::from_secs(second);
            let text = humantime::format_rfc3339_seconds(whole).to_string();
            cache.1 = text.trim_end_matches('Z').to_string();
            cache.0 = second;
        }
        out.extend_from_slice(cache.1.as_bytes());
    });
    let millis = since.subsec_millis();
    out.extend_from_slice(&[
        b'.',
        b'0' + (millis / 100) as u8,
        b'0' + (millis / 10 % 10) as u8,
        b'0' + (millis % 10) as u8,
        b'Z',
    ]);
}

/// `key=value`, values quoted and escaped unless they are plain: a client
/// chooses many of them (host, path), so none can break a line or forge a
/// field.
struct TextVisitor<'a> {
    out: &'a mut Vec<u8>,
    /// The next `message` field is the line's message, written bare.
    message: bool,
}

impl TextVisitor<'_> {
    fn value(&mut self, field: &Field, text: &str) {
        self.out.push(b' ');
        if field.name() == "message" && self.message {
            self.message = false;
            write_text_value(self.out, text);
            return;
        }
        self.out.extend_from_slice(field.name().as_bytes());
        self.out.push(b'=');
        write_text_value(self.out, text);
    }
}

/// The bytes a text value may hold without quotes: printable ASCII but `"`,
/// `\\` and `=`.
const PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0x21;
    while b < 0x7f {
        table[b] = !matches!(b as u8, b'"' | b'\\' | b'=');
        b += 1;
    }
    table
};

fn write_text_value(out: &mut Vec<u8>, text: &str) {
    let plain = !text.is_empty() && text.bytes().all(|b| PLAIN[b as usize]);
    if plain {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    out.push(b'"');
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if c.is_control() => {
                let _ = write!(ByteWriter(out), "\\u{{{:x}}}", c as u32);
            }
            c => {
                let mut utf8 = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
    out.push(b'"');
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.value(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.out.push(b' ');
        self.out.extend_from_slice(field.name().as_bytes());
        self.out.push(b'=');
        let _ = write!(ByteWriter(self.out), "{value}");
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.out.push(b' ');
        self.out.extend_from_slice(field.name().as_bytes());
        self.out.push(b'=');
        let _ = write!(ByteWriter(self.out), "{value}");
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.value(field, &text);
    }
}

struct JsonVisitor<'a> {
    out: &'a mut Vec<u8>,
}

impl JsonVisitor<'_> {
    fn key(&mut self, field: &Field) {
        self.out.extend_from_slice(b",\"");
        self.out.extend_from_slice(field.name().as_bytes());
        self.out.extend_from_slice(b"\":");
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        let _ = serde_json::to_writer(&mut *self.out, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(ByteWriter(self.out), "{value}");
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(ByteWriter(self.out), "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        // Numbers formatted as text (`duration_ms`) stay numbers; the HTTP
        // version (`1.1`, `2`) is a name, and stays text.
        self.key(field);
        let textual = matches!(field.name(), "message" | "http");
        if !textual && text.parse::<f64>().is_ok_and(f64::is_finite) {
            self.out.extend_from_slice(text.as_bytes());
        } else {
            let _ = serde_json::to_writer(&mut *self.out, &text);
        }
    }
}

/// `fmt::Write` into a byte buffer.
struct ByteWriter<'a>(&'a mut Vec<u8>);

impl fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// Format the events `f` makes, through a subscriber of their own.
    fn lines(format: LogFormat, f: impl FnOnce()) -> String {
        struct Capture(Arc<Mutex<Vec<u8>>>, LogFormat);
        impl<S: Subscriber> Layer<S> for Capture {
            fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
                format_event(&mut lock(&self.0), event, self.1);
            }
        }
        let out = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(out.clone(), format));
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(lock(&out).clone()).unwrap()
    }

    #[test]
    fn text_lines_quote_what_a_client_could_break_them_with() {
        let text = lines(LogFormat::Text, || {
            tracing::info!(
                target: "access",
                peer = %"127.0.0.1:5000",
                method = %"GET",
                host = "evil\" status=200",
                path = "/a b\nX",
                status = 404u16,
                bytes = 13u64,
                duration_ms = format_args!("{:.3}", 0.25),
                "request"
            )
        });
        let line = text.strip_suffix('\n').unwrap();
        assert!(!line.contains('\n'));
        let (time, rest) = line.split_once(' ').unwrap();
        assert_eq!(time.len(), "2026-12-01T10:59:29.123Z".len(), "{time}");
        assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T');
        assert_eq!(
            rest,
            "INFO request peer=127.0.0.1:5000 method=GET host=\"evil\\\" status\\=200\" \
             path=\"/a b\\nX\" status=404 bytes=13 duration_ms=0.250"
                .replace("\\=", "=")
        );
    }

    #[test]
    fn json_lines_are_json() {
        let text = lines(LogFormat::Json, || {
            tracing::warn!(
                target: "access",
                peer = %"[::1]:5000",
                http = %"1.1",
                host = "a\"b",
                status = 502u16,
                duration_ms = format_args!("{:.3}", 1.5),
                error = "upstream \"a\" failed",
                "request failed"
            )
        });
        let value: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(value["level"], "WARN");
        assert_eq!(value["message"], "request failed");
        assert_eq!(value["peer"], "[::1]:5000");
        assert_eq!(value["http"], "1.1");
        assert_eq!(value["host"], "a\"b");
        assert_eq!(value["status"], 502);
        assert_eq!(value["duration_ms"], 1.5);
        assert_eq!(value["error"], "upstream \"a\" failed");
        assert!(value["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
