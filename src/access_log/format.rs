//! One access line, text or JSON, written into a byte buffer: from a
//! `tracing` event, or from a request's record without `tracing` at all.
//! No I/O.

use super::RequestLine;
use crate::config::LogFormat;
use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::{Event, Level};

thread_local! {
    /// The last second formatted, and its text (`2026-12-01T10:59:29`).
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// One event as one line: `TIME LEVEL MESSAGE key=value …` (text) or a
/// JSON object.
pub(super) fn format_event(out: &mut Vec<u8>, event: &Event<'_>, format: LogFormat) {
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
pub(super) fn format_request(out: &mut Vec<u8>, line: &RequestLine<'_>, format: LogFormat) {
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
    use crate::access_log::file::lock;
    use std::sync::{Arc, Mutex};
    use tracing::Subscriber;
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

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
