//! Talking to upstreams: round-robin over an upstream's servers, pooled
//! keep-alive connections ([`super::pool`]), timeouts.
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

use super::headers::ClientSide;
use super::pool::{ConnectError, Reuse, Sender, ServerPool};
use crate::body::{Progress, RequestBody};
use crate::config::UpstreamConfig;
use crate::error::ProxyError;
use crate::metrics::Metrics;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Version};
use hyper::body::Incoming;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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
    /// The upstream request for a client's request head: headers rewritten
    /// by the header policy, origin-form target.
    pub fn from_client(
        parts: http::request::Parts,
        client: &ClientSide,
        host: Option<&HeaderValue>,
        websocket: bool,
        body: RequestBody,
    ) -> Outgoing {
        let mut headers = parts.headers;
        super::headers::to_upstream(&mut headers, client, host, websocket);
        Outgoing {
            method: parts.method,
            path_and_query: parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            headers,
            body,
        }
    }
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
        let Outgoing {
            method,
            path_and_query,
            headers,
            body,
        } = request;
        let progress = match &body {
            RequestBody::Streaming { progress, .. } => Some(progress.clone()),
            RequestBody::Empty => None,
        };
        let mut outgoing = Request::new(body);
        *outgoing.method_mut() = method;
        *outgoing.uri_mut() = path_and_query.into();
        *outgoing.version_mut() = Version::HTTP_11;
        *outgoing.headers_mut() = headers;

        let mut sender = sender;
        let mut fresh = !pooled;
        loop {
            match self
                .exchange(&mut sender, outgoing, progress.as_deref())
                .await
            {
                Exchange::Answered(response) => {
                    return Ok(Answer {
                        response,
                        server: server.clone(),
                        reuse: Reuse {
                            pool: server,
                            sender,
                        },
                    });
                }
                Exchange::TimedOut => {
                    return Err(ProxyError::ResponseTimeout {
                        upstream: self.config.name.clone(),
                        server: server.addr.to_string(),
                        timeout: self.config.read_timeout,
                    });
                }
                // A pooled connection closed before the request left: the
                // request comes back untouched; send it on a new connection.
                Exchange::Unsent(request) if !fresh => {
                    outgoing = request;
                    fresh = true;
                    sender = self.connect(&server).await?;
                }
                Exchange::Unsent(_) => {
                    return Err(ProxyError::ConnectionLost {
                        upstream: self.config.name.clone(),
                        server: server.addr.to_string(),
                    });
                }
                Exchange::Failed(source) => {
                    return Err(ProxyError::Broken {
                        upstream: self.config.name.clone(),
                        server: server.addr.to_string(),
                        source,
                    });
                }
            }
        }
    }

    /// A connection to the first server, in round-robin order, that has one
    /// idle or accepts a new one; `true` when it came from the pool.
    async fn connection(&self) -> Result<(Arc<ServerPool>, Sender, bool), ProxyError> {
        let n = self.servers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n.max(1);
        let now = self.now_ms();
        let is_up = |i: &usize| self.servers[*i].down_until.load(Ordering::Relaxed) <= now;
        // Round-robin from `start`; servers marked down go last, but are
        // still tried. The order is fixed before any attempt marks a server.
        let mut order: Vec<usize> = (0..n).map(|i| (start + i) % n).collect();
        order.sort_by_key(|i| !is_up(i));
        let mut last_error = None;
        for index in order {
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

    async fn connect(&self, pool: &ServerPool) -> Result<Sender, ProxyError> {
        pool.connect().await.map_err(|error| {
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
        })
    }

    /// Send one request on `sender`, waiting at most `read_timeout` (pushed
    /// back while the body uploads) for the response head.
    async fn exchange(
        &self,
        sender: &mut Sender,
        request: Request<RequestBody>,
        progress: Option<&Progress>,
    ) -> Exchange {
        let timeout = self.config.read_timeout;
        let response = sender.try_send_request(request);
        tokio::pin!(response);
        let sleep = tokio::time::sleep(timeout);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                result = &mut response => return match result {
                    Ok(response) => Exchange::Answered(response),
                    Err(mut error) => match error.take_message() {
                        Some(request) => Exchange::Unsent(request),
                        None => Exchange::Failed(error.into_error()),
                    },
                },
                () = &mut sleep => {
                    let deadline = progress.map(|p| p.last() + timeout);
                    match deadline {
                        Some(deadline) if deadline > Instant::now() => {
                            sleep.as_mut().reset(deadline.into());
                        }
                        _ => return Exchange::TimedOut,
                    }
                }
            }
        }
    }

    fn mark_down(&self, server: &Server) {
        let until = self.now_ms() + DOWN_FOR.as_millis() as u64;
        server.down_until.store(until, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }
}

/// How one attempt to send a request ended.
enum Exchange {
    Answered(Response<Incoming>),
    /// The connection was closed before the request left; here it is back.
    Unsent(Request<RequestBody>),
    Failed(hyper::Error),
    TimedOut,
}
