//! Keep-alive connections to one upstream server.
//!
//! A pool is a stack of idle HTTP/1.1 connections (the most recently used
//! first, so the fewest stay warm). A request takes one, or opens a new one;
//! when its response body has been read to the end the connection goes back
//! ([`Reuse`]); a response abandoned half-way takes its connection with it.
//! Each pooled connection's I/O runs in its own task ([`spawn`]). A
//! WebSocket upgrade instead takes a [`Fresh`] connection and drives it
//! itself, so a `101` hands the raw socket straight to the tunnel. Idle
//! connections are dropped after [`IDLE_TIMEOUT`]; at most [`MAX_IDLE`] are
//! kept per worker.
//!
//! This is what hyper-util's legacy client does, cut to what a reverse proxy
//! needs: one pool per server (no hashing of URIs per request), connecting
//! before the request is consumed (so a refused connection can be retried on
//! another server whatever the request's body), and a request returned
//! unsent when a pooled connection turns out to be closed.

use crate::body::RequestBody;
use crate::config::ServerAddr;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// How long an idle connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per server.
pub const MAX_IDLE: usize = 1024;

/// A sender on an HTTP/1.1 connection to the upstream.
pub type Sender = SendRequest<RequestBody>;

/// The idle connections to one server.
pub struct ServerPool {
    pub addr: ServerAddr,
    /// `addr` as text, for access events and tunnels (made once, shared).
    pub name: Arc<str>,
    /// The address to dial when the server is an IP literal.
    literal: Option<SocketAddr>,
    connect_timeout: Duration,
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
    #[error("HTTP/1.1 handshake failed: {0}")]
    Handshake(#[source] hyper::Error),
}

impl ServerPool {
    pub fn new(addr: ServerAddr, connect_timeout: Duration, workers: usize) -> ServerPool {
        let literal = addr
            .authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok()
            .zip(addr.authority.port_u16())
            .map(|(ip, port)| SocketAddr::new(ip, port));
        ServerPool {
            name: addr.to_string().into(),
            addr,
            literal,
            connect_timeout,
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

    /// Open a new connection and start its I/O task.
    pub async fn connect(&self) -> Result<Sender, ConnectError> {
        let Fresh { sender, connection } = self.open().await?;
        spawn(connection);
        Ok(sender)
    }

    /// Open a new connection whose I/O the caller drives (see [`Fresh`]).
    pub async fn open(&self) -> Result<Fresh, ConnectError> {
        let stream = tokio::time::timeout(self.connect_timeout, self.dial())
            .await
            .map_err(|_| ConnectError::Timeout(self.connect_timeout))??;
        let _ = stream.set_nodelay(true);
        // Small heads and bodies: one flat buffer and one write beat a
        // vectored write of several pieces.
        let (sender, connection) = http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ConnectError::Handshake)?;
        Ok(Fresh { sender, connection })
    }

    async fn dial(&self) -> io::Result<TcpStream> {
        if let Some(addr) = self.literal {
            return TcpStream::connect(addr).await;
        }
        let mut last = io::Error::new(io::ErrorKind::NotFound, "name resolved to no address");
        for addr in tokio::net::lookup_host(self.addr.authority.as_str()).await? {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// The I/O half of an upstream connection.
pub type Connection = http1::Connection<TokioIo<TcpStream>, RequestBody>;

/// A new connection not yet given a task: a WebSocket handshake drives it
/// itself, then takes the socket back when the upstream switches protocols.
pub struct Fresh {
    pub sender: Sender,
    pub connection: Connection,
}

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
