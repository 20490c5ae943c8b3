//! The errors the proxy answers for itself, and the one place that decides
//! their status code, body and log level.
//!
//! Every error is tagged with the side it comes from, as pingora does: a
//! [`Side::Client`] error is the client's fault (4xx, logged at `info`), an
//! [`Side::Upstream`] error is the backend's (502/504, logged at `warn`), an
//! [`Side::Internal`] error is ours (500, logged at `error`).

use http::StatusCode;
use std::time::Duration;
use tracing::Level;

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
    Internal,
}

/// A request the proxy could not complete, with its cause.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    // --- client side ---
    #[error("no route matches this request")]
    NoRoute,
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    #[error("request head is {size} bytes, over the {limit}-byte limit")]
    HeadTooLarge { size: usize, limit: usize },
    #[error("WebSocket from origin {origin:?} refused: not in allow_origins")]
    OriginForbidden { origin: String },

    // --- upstream side ---
    #[error("upstream {upstream}: cannot connect to {server}: {source}")]
    Connect {
        upstream: String,
        server: String,
        #[source]
        source: crate::upstream::pool::ConnectError,
    },
    #[error("upstream {upstream}: no connection to {server} within {timeout:?}")]
    ConnectTimeout {
        upstream: String,
        server: String,
        timeout: Duration,
    },
    #[error("upstream {upstream}: {server} sent no response head within {timeout:?}")]
    ResponseTimeout {
        upstream: String,
        server: String,
        timeout: Duration,
    },
    #[error("upstream {upstream}: {server} failed: {source}")]
    Broken {
        upstream: String,
        server: String,
        #[source]
        source: hyper::Error,
    },
    #[error("upstream {upstream}: {server} closed a fresh connection before the request was sent")]
    ConnectionLost { upstream: String, server: String },
    #[error("upstream {upstream}: no server is up")]
    NoServerUp { upstream: String },
    #[error(
        "upstream {upstream}: {server} had no room for another WebSocket handshake within {waited:?} (max_handshakes)"
    )]
    QueueTimeout {
        upstream: String,
        server: String,
        waited: Duration,
    },
    #[error("upstream {upstream}: {server} broke the WebSocket handshake: {reason}")]
    Exchange {
        upstream: String,
        server: String,
        reason: String,
    },
    #[error("upstream {upstream}: {server} answered the WebSocket upgrade wrongly: {reason}")]
    BadUpgrade {
        upstream: String,
        server: String,
        reason: &'static str,
    },

    // --- ours ---
    #[error("reading static file: {0}")]
    StaticFile(#[source] std::io::Error),
    #[error("route names upstream {0:?}, which this configuration lacks")]
    MissingUpstream(String),
}

impl ProxyError {
    pub fn side(&self) -> Side {
        use ProxyError::*;
        match self {
            NoRoute | BadRequest(_) | HeadTooLarge { .. } | OriginForbidden { .. } => Side::Client,
            Connect { .. }
            | ConnectTimeout { .. }
            | ResponseTimeout { .. }
            | Broken { .. }
            | ConnectionLost { .. }
            | NoServerUp { .. }
            | QueueTimeout { .. }
            | Exchange { .. }
            | BadUpgrade { .. } => Side::Upstream,
            StaticFile(_) | MissingUpstream(_) => Side::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        use ProxyError::*;
        match self {
            NoRoute => StatusCode::NOT_FOUND,
            BadRequest(_) => StatusCode::BAD_REQUEST,
            HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            OriginForbidden { .. } => StatusCode::FORBIDDEN,
            Connect { .. }
            | Broken { .. }
            | ConnectionLost { .. }
            | BadUpgrade { .. }
            | NoServerUp { .. }
            | Exchange { .. } => StatusCode::BAD_GATEWAY,
            QueueTimeout { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ConnectTimeout { .. } | ResponseTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            StaticFile(_) | MissingUpstream(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The short plain-text body the client sees. It names no internal
    /// address: the details go to the log.
    pub fn body(&self) -> &'static str {
        use ProxyError::*;
        match self {
            NoRoute => "404 not found: no route for this request\n",
            BadRequest(why) => match *why {
                MISSING_HOST => "400 bad request: missing Host header\n",
                BAD_WEBSOCKET_KEY => "400 bad request: bad Sec-WebSocket-Key\n",
                _ => "400 bad request\n",
            },
            HeadTooLarge { .. } => "431 request header fields too large\n",
            OriginForbidden { .. } => "403 forbidden: origin not allowed\n",
            Connect { .. } | Broken { .. } | ConnectionLost { .. } => {
                "502 bad gateway: upstream unreachable or broken\n"
            }
            BadUpgrade { .. } | Exchange { .. } => {
                "502 bad gateway: upstream refused the WebSocket handshake\n"
            }
            NoServerUp { .. } => "502 bad gateway: no upstream server is up\n",
            QueueTimeout { .. } => "503 service unavailable: upstream busy, try again shortly\n",
            ConnectTimeout { .. } | ResponseTimeout { .. } => {
                "504 gateway timeout: upstream too slow\n"
            }
            StaticFile(_) | MissingUpstream(_) => "500 internal server error\n",
        }
    }

    /// Seconds for `Retry-After`, for errors that are worth retrying.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            // Spread over a few seconds, so the clients of a storm that
            // were turned away do not all come back at the same moment.
            ProxyError::QueueTimeout { .. } => Some(fastrand::u64(1..=5)),
            _ => None,
        }
    }

    /// The level of the one log line this error produces.
    pub fn level(&self) -> Level {
        match self.side() {
            Side::Client => Level::INFO,
            Side::Upstream => Level::WARN,
            Side::Internal => Level::ERROR,
        }
    }
}

/// Reason given when an HTTP/1.1 request carries no `Host`.
pub const MISSING_HOST: &str = "missing Host header";
/// Reason given when a WebSocket upgrade has no usable `Sec-WebSocket-Key`.
pub const BAD_WEBSOCKET_KEY: &str = "WebSocket upgrade without a valid Sec-WebSocket-Key";

/// Errors while running a whole proxy (start-up, reload), as opposed to
/// serving one request.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigErrors),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("cannot start the worker threads: {0}")]
    Workers(#[source] std::io::Error),
}
