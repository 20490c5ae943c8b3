//! Errors of the bench tool, in two families:
//!
//! - [`BenchError`]: the run could not start (bad arguments, unreadable CA
//!   file, unresolvable host...). Returned by [`crate::bench::run`].
//! - [`ErrorKind`] + [`Failure`]: one operation against the target failed
//!   (refused, TLS, timeout...). These are counted per kind in the report and
//!   never stop the run.

use std::fmt;
use std::io;
use std::path::PathBuf;

use tokio_tungstenite::tungstenite;

/// Why a benchmark could not be started.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(
        "invalid duration {0:?}: write it like 10s, 500ms, 2m, 1h or \"1m 30s\" (a bare number is seconds)"
    )]
    InvalidDuration(String),
    #[error("invalid size {0:?}: expected bytes, like 64, 4KiB, 1MiB or 1MB")]
    InvalidSize(String),
    #[error("invalid header {0:?}: expected NAME:VALUE, like 'Origin: https://example.com'")]
    InvalidHeader(String),
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid option: {0}")]
    InvalidOption(String),
    #[error("could not resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("{host} resolved to no usable address")]
    NoAddress { host: String },
    #[error("cannot read CA file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("TLS setup failed: {0}")]
    TlsSetup(String),
}

/// The kind of a failed operation, as counted in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The TCP connection was refused (nothing listening).
    Refused,
    /// The TLS handshake failed (certificate, protocol, ...).
    Tls,
    /// The server answered the WebSocket upgrade with this HTTP status
    /// instead of 101.
    HandshakeStatus(u16),
    /// The server closed or reset the connection before we were done.
    ClosedEarly,
    /// An operation did not complete within `--timeout`.
    Timeout,
    /// The process ran out of file descriptors (EMFILE/ENFILE).
    TooManyOpenFiles,
    /// An echoed message differed from what was sent.
    Mismatch,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// The label used in the summary and in the JSON report.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::Tls => "tls",
            ErrorKind::HandshakeStatus(_) => "handshake-status",
            ErrorKind::ClosedEarly => "closed-early",
            ErrorKind::Timeout => "timeout",
            ErrorKind::TooManyOpenFiles => "too-many-open-files",
            ErrorKind::Mismatch => "mismatch",
            ErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::HandshakeStatus(code) => write!(f, "handshake-status {code}"),
            other => f.write_str(other.label()),
        }
    }
}

/// One failed operation: its kind plus a human-readable detail (the first
/// detail of each kind is kept in the report as a sample).
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: ErrorKind,
    pub detail: String,
}

impl Failure {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Failure {
            kind,
            detail: detail.into(),
        }
    }

    pub fn timeout(what: &str) -> Self {
        Failure::new(ErrorKind::Timeout, format!("{what} timed out"))
    }

    pub fn closed_early(what: &str) -> Self {
        Failure::new(
            ErrorKind::ClosedEarly,
            format!("server closed the connection during {what}"),
        )
    }

    /// Classifies an I/O error seen while opening a TCP connection.
    pub fn from_connect_io(err: &io::Error) -> Self {
        let kind = if is_fd_exhaustion(err) {
            ErrorKind::TooManyOpenFiles
        } else {
            match err.kind() {
                io::ErrorKind::ConnectionRefused => ErrorKind::Refused,
                io::ErrorKind::TimedOut => ErrorKind::Timeout,
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::UnexpectedEof => ErrorKind::ClosedEarly,
                _ => ErrorKind::Other,
            }
        };
        Failure::new(kind, format!("connect: {err}"))
    }

    /// Classifies an I/O error seen during the TLS handshake.
    pub fn from_tls_io(err: &io::Error) -> Self {
        let kind = if is_fd_exhaustion(err) {
            ErrorKind::TooManyOpenFiles
        } else if err.kind() == io::ErrorKind::TimedOut {
            ErrorKind::Timeout
        } else {
            ErrorKind::Tls
        };
        Failure::new(kind, format!("TLS handshake: {err}"))
    }

    /// Classifies an I/O error on an established connection.
    pub fn from_stream_io(err: &io::Error, what: &str) -> Self {
        let kind = if is_fd_exhaustion(err) {
            ErrorKind::TooManyOpenFiles
        } else {
            match err.kind() {
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => ErrorKind::ClosedEarly,
                io::ErrorKind::TimedOut => ErrorKind::Timeout,
                _ => ErrorKind::Other,
            }
        };
        Failure::new(kind, format!("{what}: {err}"))
    }

    /// Classifies a WebSocket error; `what` names the operation.
    pub fn from_ws(err: &tungstenite::Error, what: &str) -> Self {
        use tungstenite::Error as E;
        match err {
            E::Http(resp) => {
                let code = resp.status().as_u16();
                Failure::new(
                    ErrorKind::HandshakeStatus(code),
                    format!(
                        "{what}: server answered HTTP {} instead of 101",
                        resp.status()
                    ),
                )
            }
            E::Io(io) => Failure::from_stream_io(io, what),
            E::ConnectionClosed | E::AlreadyClosed => Failure::closed_early(what),
            E::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
                Failure::closed_early(what)
            }
            E::Protocol(tungstenite::error::ProtocolError::HandshakeIncomplete) => {
                Failure::closed_early(what)
            }
            other => Failure::new(ErrorKind::Other, format!("{what}: {other}")),
        }
    }
}

/// True for "too many open files" (per process or system-wide).
pub fn is_fd_exhaustion(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_connect_errors() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(Failure::from_connect_io(&refused).kind, ErrorKind::Refused);
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(
            Failure::from_connect_io(&emfile).kind,
            ErrorKind::TooManyOpenFiles
        );
        let enfile = io::Error::from_raw_os_error(libc::ENFILE);
        assert_eq!(
            Failure::from_tls_io(&enfile).kind,
            ErrorKind::TooManyOpenFiles
        );
    }

    #[test]
    fn labels_are_stable() {
        assert_eq!(ErrorKind::HandshakeStatus(403).label(), "handshake-status");
        assert_eq!(
            ErrorKind::HandshakeStatus(403).to_string(),
            "handshake-status 403"
        );
        assert_eq!(ErrorKind::TooManyOpenFiles.label(), "too-many-open-files");
    }
}
