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
    #[error("no such file under the route's root")]
    FileNotFound,
    #[error("static files answer only GET and HEAD")]
    MethodNotAllowed,

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
            NoRoute
            | BadRequest(_)
            | HeadTooLarge { .. }
            | OriginForbidden { .. }
            | FileNotFound
            | MethodNotAllowed => Side::Client,
            Connect { .. }
            | ConnectTimeout { .. }
            | ResponseTimeout { .. }
            | Broken { .. }
            | ConnectionLost { .. }
            | BadUpgrade { .. } => Side::Upstream,
            StaticFile(_) | MissingUpstream(_) => Side::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        use ProxyError::*;
        match self {
            NoRoute | FileNotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            BadRequest(_) => StatusCode::BAD_REQUEST,
            HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            OriginForbidden { .. } => StatusCode::FORBIDDEN,
            Connect { .. } | Broken { .. } | ConnectionLost { .. } | BadUpgrade { .. } => {
                StatusCode::BAD_GATEWAY
            }
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
            FileNotFound => "404 not found\n",
            MethodNotAllowed => "405 method not allowed\n",
            BadRequest(why) => match *why {
                MISSING_HOST => "400 bad request: missing Host header\n",
                BAD_WEBSOCKET_KEY => "400 bad request: bad Sec-WebSocket-Key\n",
                BAD_HOST => "400 bad request: bad Host header\n",
                _ => "400 bad request\n",
            },
            HeadTooLarge { .. } => "431 request header fields too large\n",
            OriginForbidden { .. } => "403 forbidden: origin not allowed\n",
            Connect { .. } | Broken { .. } | ConnectionLost { .. } => {
                "502 bad gateway: upstream unreachable or broken\n"
            }
            BadUpgrade { .. } => "502 bad gateway: upstream refused the WebSocket handshake\n",
            ConnectTimeout { .. } | ResponseTimeout { .. } => {
                "504 gateway timeout: upstream too slow\n"
            }
            StaticFile(_) | MissingUpstream(_) => "500 internal server error\n",
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
/// Reason given when a redirect needs the request's host and `Host` is not
/// a host name or address.
pub const BAD_HOST: &str = "Host header is not a host name or address";
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
    /// Addresses that could not be bound, every one of them.
    #[error("{0}")]
    Listen(BindFailures),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("cannot start the worker threads: {0}")]
    Workers(#[source] std::io::Error),
}

/// Every address of a route file that could not be bound, each with the
/// place of its `bind` (or `admin`) in the file.
#[derive(Debug)]
pub struct BindFailures(pub Vec<BindFailure>);

/// One address that could not be bound.
#[derive(Debug)]
pub struct BindFailure {
    pub addr: std::net::SocketAddr,
    /// The route file and where the address is written in it.
    pub at: Option<(std::path::PathBuf, crate::config::Position)>,
    pub source: std::io::Error,
}

impl std::fmt::Display for BindFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some((file, at)) = &self.at {
            write!(f, "{}:{}:{}: ", file.display(), at.line, at.column)?;
        }
        write!(f, "cannot listen on {}: ", self.addr)?;
        if self.source.kind() == std::io::ErrorKind::AddrInUse {
            write!(f, "address already in use (another process holds the port)")
        } else {
            write!(f, "{}", self.source)
        }
    }
}

impl std::fmt::Display for BindFailures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, failure) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{failure}")?;
        }
        Ok(())
    }
}
