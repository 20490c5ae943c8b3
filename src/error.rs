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
    #[error("CONNECT {what} is not supported: only WebSockets over HTTP/2 (RFC 8441)")]
    UnsupportedConnect { what: String },
    #[error("no such file under the route's root")]
    FileNotFound,
    #[error("static files answer only GET and HEAD")]
    MethodNotAllowed,
    #[error("client over max_connections_per_ip ({limit})")]
    OverIpCap { limit: usize },
    #[error("the request body sent nothing for {timeout:?} (client_body_timeout)")]
    BodyTimeout { timeout: Duration },
    #[error("the request body broke off: {0}")]
    ClientBody(String),

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
            NoRoute
            | BadRequest(_)
            | HeadTooLarge { .. }
            | OriginForbidden { .. }
            | UnsupportedConnect { .. }
            | FileNotFound
            | MethodNotAllowed
            | OverIpCap { .. }
            | BodyTimeout { .. }
            | ClientBody(_) => Side::Client,
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
            NoRoute | FileNotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            BadRequest(_) => StatusCode::BAD_REQUEST,
            HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            OriginForbidden { .. } => StatusCode::FORBIDDEN,
            UnsupportedConnect { .. } => StatusCode::NOT_IMPLEMENTED,
            OverIpCap { .. } => StatusCode::TOO_MANY_REQUESTS,
            BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ClientBody(_) => StatusCode::BAD_REQUEST,
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
            FileNotFound => "404 not found\n",
            MethodNotAllowed => "405 method not allowed\n",
            BadRequest(why) => match *why {
                MISSING_HOST => "400 bad request: missing Host header\n",
                BAD_WEBSOCKET_KEY => "400 bad request: bad Sec-WebSocket-Key\n",
                BAD_WEBSOCKET_VERSION => "400 bad request: missing Sec-WebSocket-Version\n",
                TWO_HOSTS => "400 bad request: two Host headers\n",
                BAD_HOST => "400 bad request: Host is not host[:port]\n",
                HOST_DISAGREES => "400 bad request: Host disagrees with the request target\n",
                BAD_TARGET => {
                    "400 bad request: the request target is not /path, an absolute URL or * (OPTIONS)\n"
                }
                BAD_TRANSFER_ENCODING => {
                    "400 bad request: chunked more than once in Transfer-Encoding\n"
                }
                _ => "400 bad request\n",
            },
            HeadTooLarge { .. } => "431 request header fields too large\n",
            OriginForbidden { .. } => "403 forbidden: origin not allowed\n",
            UnsupportedConnect { .. } => {
                "501 not implemented: CONNECT is only for WebSockets over HTTP/2\n"
            }
            OverIpCap { .. } => "429 too many connections from your address\n",
            BodyTimeout { .. } => "408 request timeout: the request body stalled\n",
            ClientBody(_) => "400 bad request: the request body broke off or was malformed\n",
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

/// Reason given when an HTTP/1.1 request carries no `Host` (or an HTTP/2
/// request neither `:authority` nor `Host`).
pub const MISSING_HOST: &str = "missing Host header";
/// Reason given when a WebSocket over HTTP/2 carries no
/// `Sec-WebSocket-Version` (RFC 8441 §5).
pub const BAD_WEBSOCKET_VERSION: &str = "WebSocket over HTTP/2 without Sec-WebSocket-Version";
/// Reason given when a WebSocket upgrade has no usable `Sec-WebSocket-Key`.
pub const BAD_WEBSOCKET_KEY: &str = "WebSocket upgrade without a valid Sec-WebSocket-Key";

/// Reason given for a second `Host` header (RFC 9112 §3.2).
pub const TWO_HOSTS: &str = "two Host headers";
/// Reason given for a `Host` that is not `host[:port]` (also when a
/// redirect to `{host}` finds no usable host name in it).
pub const BAD_HOST: &str = "Host is not host[:port]";
/// Reason given when an absolute-form target names another host than `Host`.
pub const HOST_DISAGREES: &str = "Host disagrees with the request target";
/// Reason given for a target that is not origin-form, absolute-form or `*`.
pub const BAD_TARGET: &str = "the request target is not /path, an absolute URL or * (OPTIONS)";
/// Reason given for `Transfer-Encoding: chunked, chunked`.
pub const BAD_TRANSFER_ENCODING: &str = "chunked more than once in Transfer-Encoding";

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
    #[error("{0}")]
    AccessLog(String),
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
