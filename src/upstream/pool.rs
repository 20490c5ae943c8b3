//! Keep-alive connections to one upstream server.
//!
//! A pool is a stack of idle HTTP/1.1 connections (the most recently used
//! first, so the fewest stay warm). A request takes one, or opens a new one
//! ([`handshake`]); when its response body has been read to the end the
//! connection goes back ([`Reuse`]); a response abandoned half-way takes
//! its connection with it. Each pooled connection's I/O runs in its own task
//! ([`spawn`]). Idle connections are dropped after [`IDLE_TIMEOUT`]; at most
//! [`MAX_IDLE`] are kept per worker. WebSocket upgrades never come here:
//! each opens a connection of its own (see `handshake`).
//!
//! This is what hyper-util's legacy client does, cut to what a reverse proxy
//! needs: one pool per server (no hashing of URIs per request), connecting
//! before the request is consumed (so a refused connection can be retried on
//! another server whatever the request's body), and a request returned
//! unsent when a pooled connection turns out to be closed.

use crate::body::RequestBody;
use crate::io::UpstreamStream;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an idle connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per server.
pub const MAX_IDLE: usize = 1024;

/// A sender on an HTTP/1.1 connection to the upstream.
pub type Sender = SendRequest<RequestBody>;

/// The idle connections to one server.
pub struct ServerPool {
    /// Idle connections, one stack per worker thread: a connection's I/O
    /// task runs on the worker that opened it, so only that worker uses it.
    idle: Vec<OwnLine<Mutex<Vec<Idle>>>>,
}

/// A value on cache lines of its own: one worker's lock, which the other
/// workers' locks next to it would otherwise pull away from it on every use.
#[repr(align(128))]
struct OwnLine<T>(T);

struct Idle {
    sender: Sender,
    since: Instant,
}

/// Why a new connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connection not established within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] io::Error),
    #[error("HTTP/1.1 handshake failed: {0}")]
    Handshake(#[source] hyper::Error),
}

impl ServerPool {
    pub fn new(workers: usize) -> ServerPool {
        ServerPool {
            idle: (0..workers.max(1))
                .map(|_| OwnLine(Mutex::new(Vec::new())))
                .collect(),
        }
    }

    /// The most recently used idle connection still open, if any.
    pub fn take_idle(&self) -> Option<Sender> {
        let mut idle = self.local().lock().unwrap_or_else(|p| p.into_inner());
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() < IDLE_TIMEOUT && !entry.sender.is_closed() {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Return a connection whose response was read to the end.
    pub fn put_back(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.local().lock().unwrap_or_else(|p| p.into_inner());
        if idle.first().is_some_and(|e| now - e.since >= IDLE_TIMEOUT) {
            idle.retain(|e| now - e.since < IDLE_TIMEOUT);
        }
        if idle.len() < MAX_IDLE {
            idle.push(Idle { sender, since: now });
        }
    }

    /// This worker's idle stack.
    fn local(&self) -> &Mutex<Vec<Idle>> {
        &self.idle[crate::workers::current() % self.idle.len()].0
    }
}

/// Make an HTTP/1.1 client of a connected stream and start its I/O task.
pub async fn handshake(stream: UpstreamStream) -> Result<Sender, ConnectError> {
    // Small heads and bodies: one flat buffer and one write beat a
    // vectored write of several pieces.
    let (sender, connection) = http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    spawn(connection);
    Ok(sender)
}

/// The I/O half of an upstream connection.
pub type Connection = http1::Connection<TokioIo<UpstreamStream>, RequestBody>;

/// Run a connection's I/O in a task of its own until it closes.
pub fn spawn(connection: Connection) {
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
}

/// A connection travelling with a response body, back to its pool when the
/// body is done.
pub struct Reuse {
    pub pool: Arc<ServerPool>,
    pub sender: Sender,
}

impl Reuse {
    pub fn give_back(self) {
        self.pool.put_back(self.sender);
    }
}
