//! The access log and per-request metrics: one event per finished request.
//!
//! A [`Record`] is opened when a request arrives and closed when its response
//! body is done (see [`crate::body::ResponseBody`]). Closing it counts the
//! request in the route's metrics and writes one `access` event with the
//! client's address, method, HTTP version, host, path, status, bytes, duration, route and
//! upstream server. A response
//! the proxy made itself (404, 502, …) writes that same single line at the
//! error's level, with its cause. Silence routine lines with
//! `RUST_LOG=info,access=off`: error lines then still appear, under the
//! `switchyard::proxy` target.

use crate::error::ProxyError;
use crate::metrics::RouteStats;
use http::{HeaderValue, Method, StatusCode, Uri, Version};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tracing::Level;

/// An open request, waiting for its response to finish.
pub struct Record {
    started: Instant,
    status: StatusCode,
    stats: Arc<RouteStats>,
    request: Box<RequestInfo>,
}

/// What the access event says besides status, bytes and duration. Every
/// field is a cheap reference-counted copy of the request's own.
pub struct RequestInfo {
    pub peer: SocketAddr,
    pub method: Method,
    pub uri: Uri,
    pub host: Option<HeaderValue>,
    /// The HTTP version the client spoke.
    pub version: Version,
    pub upstream: Option<Arc<str>>,
    /// The error behind a response the proxy made itself.
    pub error: Option<(Level, String)>,
    /// What cut the response body short, if anything did.
    pub body_error: Option<String>,
}

impl RequestInfo {
    pub fn new(
        peer: SocketAddr,
        method: Method,
        uri: Uri,
        host: Option<HeaderValue>,
    ) -> Box<RequestInfo> {
        Box::new(RequestInfo {
            peer,
            method,
            uri,
            host,
            version: Version::HTTP_11,
            upstream: None,
            error: None,
            body_error: None,
        })
    }

    pub fn set_error(&mut self, error: &ProxyError) {
        self.error = Some((error.level(), error.to_string()));
    }
}

/// An HTTP version as the access events write it: `1.0`, `1.1`, `2`.
pub fn http_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

impl Record {
    pub fn new(
        started: Instant,
        status: StatusCode,
        stats: Arc<RouteStats>,
        request: Box<RequestInfo>,
    ) -> Record {
        Record {
            started,
            status,
            stats,
            request,
        }
    }

    pub fn body_error(&mut self, error: String) {
        self.request.body_error = Some(error);
    }

    /// Close the record after `bytes` of body were sent (`complete`: all of
    /// it).
    pub fn finish(self, bytes: u64, complete: bool) {
        let elapsed = self.started.elapsed();
        self.stats.request_done(self.status, elapsed);
        // With a file of their own, access lines are written whatever
        // `RUST_LOG` says; `access_log = "off"` is how to stop them.
        let to_file = crate::access_log::to_file();
        let mut access_on = to_file || tracing::enabled!(target: "access", Level::INFO);
        let request = &*self.request;
        let (level, message, error) = match (&request.error, &request.body_error) {
            (Some((level, error)), _) => (*level, "request failed", Some(error.as_str())),
            (None, Some(error)) => (Level::WARN, "response cut short", Some(error.as_str())),
            (None, None) if !complete => (
                Level::INFO,
                "response cut short",
                Some("client went away before the response was complete"),
            ),
            (None, None) => (Level::INFO, "request", None),
        };
        if !access_on && error.is_none() {
            return;
        }
        let host = request
            .host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .unwrap_or("-");
        let path = request.uri.path();
        let status = self.status.as_u16();
        let route = &*self.stats.name;
        let upstream = request.upstream.as_deref().unwrap_or("-");
        let micros = elapsed.as_micros();
        // Milliseconds to the microsecond, as a number (JSON logs carry it
        // as one).
        let duration_ms = micros as f64 / 1000.0;
        let http = http_version(request.version);
        if to_file {
            let line = crate::access_log::RequestLine {
                level,
                message,
                peer: request.peer,
                method: request.method.as_str(),
                http,
                host,
                path,
                status,
                bytes,
                micros,
                route,
                upstream,
                error,
            };
            // A file of its own: formatted straight into the worker's buffer,
            // without going through `tracing`. Warnings and errors are also
            // said on stderr, with the process's other problems.
            if crate::access_log::write_request(&line) {
                if level > Level::WARN {
                    return;
                }
                access_on = false;
            }
        }
        macro_rules! emit {
            ($target:literal, $level:expr) => {
                tracing::event!(
                    target: $target,
                    $level,
                    peer = %request.peer,
                    method = %request.method,
                    http = %http,
                    host,
                    path,
                    status,
                    bytes,
                    duration_ms,
                    route,
                    upstream,
                    error,
                    "{message}"
                )
            };
        }
        macro_rules! at_level {
            ($target:literal) => {
                match level {
                    Level::ERROR => emit!($target, Level::ERROR),
                    Level::WARN => emit!($target, Level::WARN),
                    _ => emit!($target, Level::INFO),
                }
            };
        }
        if access_on {
            at_level!("access");
        } else {
            at_level!("switchyard::proxy");
        }
    }
}
