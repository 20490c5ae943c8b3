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
//!
//! [`file`] owns the file, its buffers and the writer thread; [`format`]
//! writes a line, text or JSON, with no I/O.

mod file;
mod format;

use crate::config::{AccessLog, LogFormat};
use arc_swap::ArcSwap;
use file::FileSink;
use format::format_request;
use std::sync::{Arc, LazyLock};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// The target of access events.
pub const TARGET: &str = "access";

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
        sink.reopen();
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
