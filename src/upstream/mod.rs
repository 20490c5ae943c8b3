//! Talking to upstreams: round-robin over an upstream's servers, pooled
//! keep-alive connections ([`pool`]), timeouts.
//!
//! A request goes to the next server in round-robin order, skipping servers
//! that recently refused connections. A connection is secured before the
//! request is handed over, so when a server refuses, the request (body and
//! all) simply moves on to the next server; the refusing server is marked
//! down for [`DOWN_FOR`]. A pooled connection found closed hands the request
//! back unsent, and it goes out on a fresh connection.
//!
//! `connect_timeout` bounds each connection attempt. `read_timeout` bounds
//! the wait for the response head; time spent uploading a request body does
//! not count against it (the clock restarts whenever the body moves).

pub mod pool;

use crate::body::{BodyTimedOut, ClientBodyError, Progress, RequestBody};
use crate::config::UpstreamConfig;
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::timer::Timeout;
use bytes::Bytes;
use either::Either;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use pool::{ConnectError, Connection, Fresh, Reuse, Sender, ServerPool};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// How long a server that refused a connection is skipped.
pub const DOWN_FOR: Duration = Duration::from_secs(10);

/// One `[upstream.NAME]` at run time.
pub struct Upstream {
    pub config: Arc<UpstreamConfig>,
    servers: Vec<Server>,
    next: AtomicUsize,
    clock: Instant,
    metrics: Arc<Metrics>,
}

struct Server {
    pool: Arc<ServerPool>,
    /// Milliseconds since `Upstream::clock` until which the server is skipped.
    down_until: AtomicU64,
}

/// A request head, ready to be sent to whichever server is picked.
pub struct Outgoing {
    pub method: Method,
    pub path_and_query: PathAndQuery,
    pub headers: HeaderMap,
    pub body: RequestBody,
}

impl Outgoing {
    /// The request to write, and the upload progress of its body if any.
    fn into_request(self) -> (Request<RequestBody>, Option<Arc<Progress>>) {
        let progress = match &self.body {
            RequestBody::Streaming { progress, .. } => Some(progress.clone()),
            RequestBody::Empty => None,
        };
        let mut request = Request::new(self.body);
        *request.method_mut() = self.method;
        *request.uri_mut() = self.path_and_query.into();
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = self.headers;
        (request, progress)
    }
}

/// What an upstream answered a WebSocket upgrade.
pub enum UpgradeAnswer {
    /// It switched protocols: its `101` head, the raw connection, and any
    /// bytes it sent right behind the head.
    Switched {
        response: Response<Incoming>,
        stream: TcpStream,
        early: Bytes,
        server: Arc<ServerPool>,
    },
    /// Anything else, to pass on as an ordinary response.
    Refused(Answer),
}

/// An upstream's answer, the server that gave it, and the connection to
/// give back once the body is read.
pub struct Answer {
    pub response: Response<Incoming>,
    pub server: Arc<ServerPool>,
    pub reuse: Reuse,
}

impl Upstream {
    pub fn new(config: Arc<UpstreamConfig>, metrics: Arc<Metrics>, workers: usize) -> Upstream {
        let servers = config
            .servers
            .iter()
            .map(|addr| Server {
                pool: Arc::new(ServerPool::new(
                    addr.clone(),
                    config.connect_timeout,
                    workers,
                )),
                down_until: AtomicU64::new(0),
            })
            .collect();
        Upstream {
            config,
            servers,
            next: AtomicUsize::new(0),
            clock: Instant::now(),
            metrics,
        }
    }

    /// Send `request` to one of the servers and wait for the response head.
    pub async fn send(&self, request: Outgoing) -> Result<Answer, ProxyError> {
        let (server, sender, pooled) = self.connection().await?;
        let (mut outgoing, progress) = request.into_request();
        let mut sender = sender;
        let mut fresh = !pooled;
        loop {
            match self
                .exchange(&mut sender, outgoing, progress.as_deref(), None)
                .await
            {
                Ok(response) => {
                    return Ok(Answer {
                        response,
                        server: server.clone(),
                        reuse: Reuse {
                            pool: server,
                            sender,
                        },
                    });
                }
                // A pooled connection closed before the request left: the
                // request comes back untouched; send it on a new connection.
                Err(NoAnswer::Unsent(request)) if !fresh => {
                    outgoing = *request;
                    fresh = true;
                    sender = self.connect(&server).await?;
                }
                Err(failed) => return Err(self.failure(&server, failed)),
            }
        }
    }

    /// Send a WebSocket upgrade on a new connection, driving its I/O here:
    /// on a `101` the socket comes back raw, without a task or channel
    /// between the tunnel and the upstream.
    pub async fn send_upgrade(&self, request: Outgoing) -> Result<UpgradeAnswer, ProxyError> {
        let (
            server,
            Fresh {
                mut sender,
                mut connection,
            },
        ) = self.fresh().await?;
        let (outgoing, _) = request.into_request();
        let exchange = self
            .exchange(&mut sender, outgoing, None, Some(&mut connection))
            .await;
        let response = exchange.map_err(|failed| self.failure(&server, failed))?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            pool::spawn(connection);
            return Ok(UpgradeAnswer::Refused(Answer {
                response,
                server: server.clone(),
                reuse: Reuse {
                    pool: server,
                    sender,
                },
            }));
        }
        // Let the connection reach the switch, then take its socket back.
        let switched = std::future::poll_fn(|cx| connection.poll_without_shutdown(cx));
        match tokio::time::timeout(self.config.read_timeout, switched).await {
            Ok(Ok(())) => {}
            Ok(Err(source)) => return Err(self.failure(&server, NoAnswer::Failed(source))),
            Err(_) => return Err(self.failure(&server, NoAnswer::TimedOut)),
        }
        let parts = connection.into_parts();
        Ok(UpgradeAnswer::Switched {
            response,
            stream: parts.io.into_inner(),
            early: parts.read_buf,
            server,
        })
    }

    /// The error for an exchange that did not get an answer.
    fn failure(&self, server: &ServerPool, failed: NoAnswer) -> ProxyError {
        let upstream = self.config.name.clone();
        let server = server.addr.to_string();
        match failed {
            NoAnswer::TimedOut => ProxyError::ResponseTimeout {
                upstream,
                server,
                timeout: self.config.read_timeout,
            },
            NoAnswer::Unsent(_) => ProxyError::ConnectionLost { upstream, server },
            NoAnswer::Failed(source) => match client_body_failure(&source) {
                Some(failure) => failure,
                None => ProxyError::Broken {
                    upstream,
                    server,
                    source,
                },
            },
        }
    }

    /// A connection to the first server, in round-robin order, that has one
    /// idle or accepts a new one; `true` when it came from the pool.
    async fn connection(&self) -> Result<(Arc<ServerPool>, Sender, bool), ProxyError> {
        let mut last_error = None;
        for index in self.order() {
            let server = &self.servers[index];
            if let Some(sender) = server.pool.take_idle() {
                return Ok((server.pool.clone(), sender, true));
            }
            match self.connect(&server.pool).await {
                Ok(sender) => return Ok((server.pool.clone(), sender, false)),
                Err(error) => {
                    self.mark_down(server);
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| ProxyError::MissingUpstream(self.config.name.clone())))
    }

    /// A new connection, not yet given a task, to the first server in
    /// round-robin order that accepts one.
    async fn fresh(&self) -> Result<(Arc<ServerPool>, Fresh), ProxyError> {
        let mut last_error = None;
        for index in self.order() {
            let server = &self.servers[index];
            match server.pool.open().await {
                Ok(fresh) => return Ok((server.pool.clone(), fresh)),
                Err(error) => {
                    last_error = Some(self.connect_failed(&server.pool, error));
                    self.mark_down(server);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| ProxyError::MissingUpstream(self.config.name.clone())))
    }

    /// Servers in the order to try them: round-robin from the next one; the
    /// ones marked down go last, but are still tried. The order is fixed
    /// before any attempt marks a server.
    fn order(&self) -> impl Iterator<Item = usize> + use<> {
        let n = self.servers.len();
        if n == 1 {
            // Nothing to rotate, nothing to sort: no shared counter touched.
            return Either::Left(std::iter::once(0));
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n.max(1);
        let now = self.now_ms();
        let is_up = |i: &usize| self.servers[*i].down_until.load(Ordering::Relaxed) <= now;
        let mut order: Vec<usize> = (0..n).map(|i| (start + i) % n).collect();
        order.sort_by_key(|i| !is_up(i));
        Either::Right(order.into_iter())
    }

    async fn connect(&self, pool: &ServerPool) -> Result<Sender, ProxyError> {
        pool.connect()
            .await
            .map_err(|error| self.connect_failed(pool, error))
    }

    /// Log and count a failed connection attempt, and say it as an error.
    fn connect_failed(&self, pool: &ServerPool, error: ConnectError) -> ProxyError {
        tracing::warn!(
            upstream = %self.config.name,
            server = %pool.addr,
            error = %error,
            "cannot connect to an upstream server; skipping it for {DOWN_FOR:?}"
        );
        self.metrics
            .connect_failure(&self.config.name, pool.addr.authority.as_str());
        match error {
            ConnectError::Timeout(timeout) => ProxyError::ConnectTimeout {
                upstream: self.config.name.clone(),
                server: pool.addr.to_string(),
                timeout,
            },
            source => ProxyError::Connect {
                upstream: self.config.name.clone(),
                server: pool.addr.to_string(),
                source,
            },
        }
    }

    /// Send one request on `sender`, waiting at most `read_timeout` (pushed
    /// back while the body uploads) for the response head. `drive` is the
    /// connection's I/O when no task runs it.
    async fn exchange(
        &self,
        sender: &mut Sender,
        request: Request<RequestBody>,
        progress: Option<&Progress>,
        mut drive: Option<&mut Connection>,
    ) -> Result<Response<Incoming>, NoAnswer> {
        let timeout = self.config.read_timeout;
        let response = sender.try_send_request(request);
        tokio::pin!(response);
        let mut sleep = Timeout::after(timeout);
        std::future::poll_fn(|cx| {
            // Move the connection's I/O first, so the answer is there to take.
            if let Some(connection) = drive.as_deref_mut()
                && connection.poll_without_shutdown(cx).is_ready()
            {
                drive = None;
            }
            if let Poll::Ready(result) = response.as_mut().poll(cx) {
                return Poll::Ready(match result {
                    Ok(response) => Ok(response),
                    Err(mut error) => Err(match error.take_message() {
                        Some(request) => NoAnswer::Unsent(Box::new(request)),
                        None => NoAnswer::Failed(error.into_error()),
                    }),
                });
            }
            while Pin::new(&mut sleep).poll(cx).is_ready() {
                // A body still uploading pushes the deadline back.
                match progress.map(|p| p.last() + timeout) {
                    Some(deadline) if deadline > Instant::now() => sleep.reset(deadline),
                    _ => return Poll::Ready(Err(NoAnswer::TimedOut)),
                }
            }
            Poll::Pending
        })
        .await
    }

    fn mark_down(&self, server: &Server) {
        let until = self.now_ms() + DOWN_FOR.as_millis() as u64;
        server.down_until.store(until, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }
}

/// The client's side of a failed exchange: its request body stalled or
/// broke while it was being sent on. Then the client is at fault, not the
/// upstream.
fn client_body_failure(error: &hyper::Error) -> Option<ProxyError> {
    let mut cause = std::error::Error::source(error);
    while let Some(e) = cause {
        if let Some(body) = e.downcast_ref::<ClientBodyError>() {
            return Some(match body.0.downcast_ref::<BodyTimedOut>() {
                Some(BodyTimedOut(timeout)) => ProxyError::BodyTimeout { timeout: *timeout },
                None => ProxyError::ClientBody(body.0.to_string()),
            });
        }
        cause = e.source();
    }
    None
}

/// Why one attempt to send a request got no answer.
enum NoAnswer {
    /// The connection was closed before the request left; here it is back.
    Unsent(Box<Request<RequestBody>>),
    Failed(hyper::Error),
    TimedOut,
}
