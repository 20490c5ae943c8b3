//! Talking to an upstream's servers: which server takes a request or a
//! tunnel, the connection to it, and the timeouts.
//!
//! - [`balance`]: least-tunnels, round-robin, consistent hashing (pure).
//! - [`server`]: one server's shared state (tunnel count, health, queue,
//!   pool), the same for every configuration generation that names it.
//! - [`health`]: passive backoff and active checks; [`queue`]: the
//!   handshake queue; [`resolve`]: host names to servers; [`tls`]: TLS to
//!   the servers; [`pool`]: keep-alive connections; [`handshake`]: the
//!   upstream leg of a WebSocket upgrade; [`rebalance`]: moving tunnels off
//!   the busiest servers.
//!
//! A plain request goes to a server picked by the upstream's `balance` among
//! those that take work (up by their checks, not skipped after a refused
//! connection). Its connection is secured before the request is handed
//! over, so when a server refuses, the request (body and all) moves on to
//! the next server. A pooled connection found closed hands the request back
//! unsent, and it goes out on a fresh connection. With no server taking
//! work the answer is a `502` at once.
//!
//! A WebSocket upgrade is counted on its server from the pick on (so a
//! storm of handshakes spreads before any of them is done), waits its turn
//! in the server's queue, then goes out on a connection of its own.
//!
//! `connect_timeout` bounds each connection attempt (TCP and TLS).
//! `read_timeout` bounds the wait for the response head; time spent
//! uploading a request body does not count against it.

pub mod balance;
pub mod handshake;
pub mod health;
pub mod pool;
pub mod queue;
pub mod rebalance;
pub mod resolve;
pub mod server;
pub mod tls;

pub use server::{Fleet, Goodbye, Server, TunnelLease};

use crate::body::{BodyTimedOut, ClientBodyError, Progress, RequestBody};
use crate::config::{Balance, HashKey, ServerAddr, UpstreamConfig};
use crate::error::ProxyError;
use crate::io::UpstreamStream;
use crate::metrics::UpstreamStats;
use crate::timer::Timeout;
use arc_swap::ArcSwap;
use balance::Ring;
use bytes::Bytes;
use handshake::Exchanged;
use http::header::{self, HeaderName};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response, Version};
use hyper::body::Incoming;
use pool::{ConnectError, Reuse, Sender};
use server::Link;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

/// The longest a resolution may take before it counts as failed.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// What `client-ip` hashing reads: the header policy always sets it to the
/// client's address (or the PROXY protocol's).
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// One `[upstream.NAME]` at run time.
pub struct Upstream {
    pub config: Arc<UpstreamConfig>,
    /// The servers now: what `servers` lists, host names resolved.
    view: ArcSwap<View>,
    /// Per entry of `servers`, its addresses: fixed for an IP, the last
    /// answer for a host name (`None` until one came).
    answers: Mutex<Vec<Option<Vec<SocketAddr>>>>,
    /// The round-robin cursor.
    next: AtomicUsize,
    fleet: Arc<Fleet>,
    stats: UpstreamStats,
    tls: Option<tls::ClientTls>,
}

/// The servers of an upstream at one moment.
struct View {
    servers: Vec<Arc<Server>>,
    ring: Option<Ring>,
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
    /// It switched protocols: its `101` head, the raw connection, the bytes
    /// it sent right behind the head, and the tunnel's place on its server.
    Switched {
        head: http::response::Parts,
        stream: UpstreamStream,
        early: Bytes,
        lease: TunnelLease,
    },
    /// Anything else, to pass on as an ordinary response.
    Refused(Answer),
}

/// An upstream's answer, the server that gave it, and the connection to
/// give back once the body is read.
pub struct Answer {
    pub response: Response<Incoming>,
    pub server: Arc<Server>,
    pub reuse: Option<Reuse>,
}

/// What a server is picked for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Work {
    Request,
    Tunnel,
}

impl Upstream {
    /// The run-time upstream for `config`. Host names answered for
    /// `previous` (the same upstream in the generation before) keep their
    /// answer; the others are resolved by [`Upstream::resolve_pending`] and
    /// then every `resolve_interval`.
    pub fn new(
        config: Arc<UpstreamConfig>,
        fleet: &Arc<Fleet>,
        previous: Option<&Upstream>,
    ) -> Arc<Upstream> {
        let earlier = previous.map(|p| {
            let answers = p.answers.lock().unwrap_or_else(|e| e.into_inner());
            p.config
                .servers
                .iter()
                .cloned()
                .zip(answers.iter().cloned())
                .collect::<Vec<_>>()
        });
        let answers = config
            .servers
            .iter()
            .map(|entry| match entry.literal() {
                Some(addr) => Some(vec![addr]),
                None => earlier
                    .as_ref()
                    .and_then(|e| e.iter().find(|(old, _)| old == entry))
                    .and_then(|(_, answer)| answer.clone()),
            })
            .collect();
        let upstream = Arc::new(Upstream {
            stats: fleet.metrics.upstream(&config.name),
            tls: config.tls.as_ref().map(tls::client_config),
            view: ArcSwap::from_pointee(View {
                servers: Vec::new(),
                ring: None,
            }),
            answers: Mutex::new(answers),
            next: AtomicUsize::new(0),
            fleet: fleet.clone(),
            config,
        });
        upstream.rebuild();
        if let Some(Err(error)) = &upstream.tls {
            tracing::error!(upstream = %upstream.config.name, "{error}");
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            if upstream.has_names() {
                runtime.spawn(resolve_loop(
                    Arc::downgrade(&upstream),
                    upstream.config.resolve_interval,
                ));
            }
            if upstream.config.rebalance_rate > 0 {
                runtime.spawn(rebalance::run(
                    Arc::downgrade(&upstream),
                    upstream.config.rebalance_rate,
                ));
            }
        }
        upstream
    }

    fn has_names(&self) -> bool {
        self.config.servers.iter().any(|s| s.literal().is_none())
    }

    /// The servers taking part now, in `servers` order.
    pub fn servers(&self) -> Vec<Arc<Server>> {
        self.view.load().servers.clone()
    }

    /// Make the view of the servers from the answers.
    fn rebuild(&self) {
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let mut servers: Vec<Arc<Server>> = Vec::new();
        for (entry, answer) in self.config.servers.iter().zip(answers.iter()) {
            for addr in answer.iter().flatten() {
                if !servers.iter().any(|s| s.addr == *addr) {
                    servers.push(self.fleet.server(
                        &self.config,
                        self.tls.as_ref(),
                        *addr,
                        entry.host(),
                    ));
                }
            }
        }
        drop(answers);
        let ring = matches!(self.config.balance, Balance::Hash(_))
            .then(|| Ring::new(servers.iter().map(|s| &*s.name)));
        self.view.store(Arc::new(View { servers, ring }));
    }

    /// Resolve the host names that have no answer yet.
    pub async fn resolve_pending(&self) {
        self.resolve(true).await;
    }

    /// Resolve host names (all, or only those without an answer), log what
    /// changed, and put the new servers in force.
    async fn resolve(&self, only_pending: bool) {
        let pending: Vec<(usize, ServerAddr)> = {
            let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
            self.config
                .servers
                .iter()
                .enumerate()
                .filter(|(i, entry)| {
                    entry.literal().is_none() && (!only_pending || answers[*i].is_none())
                })
                .map(|(i, entry)| (i, entry.clone()))
                .collect()
        };
        let mut changed = false;
        for (i, entry) in pending {
            let lookup = self.fleet.resolver.resolve(entry.host(), entry.port());
            let found = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                Ok(Ok(found)) if !found.is_empty() => Ok(resolve::normalize(found)),
                Ok(Ok(_)) => Err("no address".to_string()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {RESOLVE_TIMEOUT:?}")),
            };
            let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
            let name = &self.config.name;
            match (found, answers[i].as_ref()) {
                (Ok(found), Some(last)) if *last == found => {}
                (Ok(found), last) => {
                    match last {
                        None => tracing::info!(
                            "upstream {name}: {entry} resolves to {}",
                            resolve::list(&found)
                        ),
                        Some(last) => {
                            let (added, removed) = resolve::diff(last, &found);
                            tracing::info!(
                                "upstream {name}: {entry} now resolves to {} (new: {}; gone, \
                                 no new work but their tunnels stay: {})",
                                resolve::list(&found),
                                or_none(&added),
                                or_none(&removed)
                            );
                        }
                    }
                    answers[i] = Some(found);
                    changed = true;
                }
                (Err(error), Some(last)) => tracing::warn!(
                    "upstream {name}: cannot resolve {entry}: {error}; keeping the last answer ({})",
                    resolve::list(last)
                ),
                (Err(error), None) => tracing::warn!(
                    "upstream {name}: cannot resolve {entry}: {error}; it has no server until it \
                     resolves (tried again every {:?})",
                    self.config.resolve_interval
                ),
            }
        }
        if changed {
            self.rebuild();
        }
    }

    /// Send `request` to one of the servers and wait for the response head.
    pub async fn send(&self, request: Outgoing) -> Result<Answer, ProxyError> {
        let (server, link, sender, pooled) = self.connection(&request).await?;
        let (mut outgoing, progress) = request.into_request();
        let mut sender = sender;
        let mut fresh = !pooled;
        loop {
            match self
                .exchange(&mut sender, outgoing, progress.as_deref())
                .await
            {
                Ok(response) => {
                    return Ok(Answer {
                        response,
                        server,
                        reuse: Some(Reuse {
                            pool: link.pool.clone(),
                            sender,
                        }),
                    });
                }
                // A pooled connection closed before the request left: the
                // request comes back untouched; send it on a new connection.
                Err(NoAnswer::Unsent(request)) if !fresh => {
                    outgoing = *request;
                    fresh = true;
                    sender = self.connect(&server, &link).await?;
                }
                Err(failed) => return Err(self.failure(&server, failed)),
            }
        }
    }

    /// Send a WebSocket upgrade on a connection of its own. On a `101` the
    /// socket comes back raw, with nothing between the tunnel and the
    /// upstream; any other answer comes back as an ordinary response.
    pub async fn send_upgrade(&self, request: Outgoing) -> Result<UpgradeAnswer, ProxyError> {
        let mut tried = Vec::new();
        let mut last_error = None;
        loop {
            let key = self.hash_key(&request.headers);
            let Some(server) = self.choose(Work::Tunnel, key, &tried) else {
                return Err(last_error.unwrap_or_else(|| self.none_up()));
            };
            let lease = server.lease(self.config.rebalance_rate > 0);
            let waited = Instant::now();
            let Ok(turn) = server.queue.turn(self.config.queue_timeout).await else {
                self.stats.queue_timeouts.inc();
                return Err(ProxyError::QueueTimeout {
                    upstream: self.config.name.clone(),
                    server: server.name.to_string(),
                    waited: waited.elapsed(),
                });
            };
            let link = server.link();
            let stream = match server.dial(&link).await {
                Ok(stream) => stream,
                Err(error) => {
                    last_error = Some(self.connect_error(&server, error));
                    tried.push(server.addr);
                    continue;
                }
            };
            let exchanged = handshake::exchange(stream, &request, self.config.read_timeout).await;
            drop(turn);
            return match exchanged {
                Ok(Exchanged::Switched {
                    head,
                    stream,
                    early,
                }) => Ok(UpgradeAnswer::Switched {
                    head,
                    stream,
                    early,
                    lease,
                }),
                Ok(Exchanged::Other(response)) => Ok(UpgradeAnswer::Refused(Answer {
                    response,
                    server,
                    reuse: None,
                })),
                Err(failure) => Err(self.handshake_failure(&server, failure)),
            };
        }
    }

    /// The key `balance = "hash"` hashes, if the request has one.
    fn hash_key<'h>(&self, headers: &'h HeaderMap) -> Option<&'h [u8]> {
        let Balance::Hash(key) = &self.config.balance else {
            return None;
        };
        let value = match key {
            HashKey::Cookie(name) => balance::cookie(
                headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes()),
                name,
            ),
            HashKey::Header(name) => headers.get(name).map(|v| v.as_bytes()),
            HashKey::ClientIp => headers.get(&X_REAL_IP).map(|v| v.as_bytes()),
        };
        value.filter(|v| !v.is_empty())
    }

    /// The server for one request or tunnel, among those taking work and
    /// not `tried` already.
    fn choose(&self, work: Work, key: Option<&[u8]>, tried: &[SocketAddr]) -> Option<Arc<Server>> {
        let view = self.view.load();
        let servers = &view.servers;
        let n = servers.len();
        let ok = |i: usize| {
            let server = &servers[i];
            server.available() && !tried.contains(&server.addr)
        };
        let index = match (key, &view.ring) {
            (Some(key), Some(ring)) => ring.order(key).find(|&i| ok(i)),
            _ => {
                // One server: nothing to rotate, no shared counter touched.
                let start = if n > 1 {
                    self.next.fetch_add(1, Ordering::Relaxed)
                } else {
                    0
                };
                match (work, &self.config.balance) {
                    (Work::Tunnel, Balance::LeastTunnels | Balance::Hash(_)) => {
                        balance::least_loaded(n, start, |i| ok(i).then(|| servers[i].load()))
                    }
                    _ => balance::round_robin(n, start, ok),
                }
            }
        };
        index.map(|i| servers[i].clone())
    }

    /// A connection to a server taking work: an idle one, or a new one
    /// from the first server that accepts; `true` when it came from a pool.
    async fn connection(
        &self,
        request: &Outgoing,
    ) -> Result<(Arc<Server>, Arc<Link>, Sender, bool), ProxyError> {
        let mut tried = Vec::new();
        let mut last_error = None;
        loop {
            let key = self.hash_key(&request.headers);
            let Some(server) = self.choose(Work::Request, key, &tried) else {
                return Err(last_error.unwrap_or_else(|| self.none_up()));
            };
            let link = server.link();
            if let Some(sender) = link.pool.take_idle() {
                return Ok((server, link, sender, true));
            }
            match self.connect(&server, &link).await {
                Ok(sender) => return Ok((server, link, sender, false)),
                Err(error) => {
                    tried.push(server.addr);
                    last_error = Some(error);
                }
            }
        }
    }

    /// A new pooled connection to `server`.
    async fn connect(&self, server: &Server, link: &Link) -> Result<Sender, ProxyError> {
        let stream = server
            .dial(link)
            .await
            .map_err(|error| self.connect_error(server, error))?;
        pool::handshake(stream)
            .await
            .map_err(|error| self.connect_error(server, error))
    }

    fn none_up(&self) -> ProxyError {
        ProxyError::NoServerUp {
            upstream: self.config.name.clone(),
        }
    }

    /// A failed connection attempt, said as an error.
    fn connect_error(&self, server: &Server, error: ConnectError) -> ProxyError {
        let upstream = self.config.name.clone();
        let server = server.name.to_string();
        match error {
            ConnectError::Timeout(timeout) => ProxyError::ConnectTimeout {
                upstream,
                server,
                timeout,
            },
            source => ProxyError::Connect {
                upstream,
                server,
                source,
            },
        }
    }

    /// The error for an exchange that did not get an answer.
    fn failure(&self, server: &Server, failed: NoAnswer) -> ProxyError {
        let upstream = self.config.name.clone();
        let server = server.name.to_string();
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

    /// The error for a WebSocket handshake that got no usable answer.
    fn handshake_failure(&self, server: &Server, failure: handshake::Failure) -> ProxyError {
        let upstream = self.config.name.clone();
        let server = server.name.to_string();
        match failure {
            handshake::Failure::TimedOut => ProxyError::ResponseTimeout {
                upstream,
                server,
                timeout: self.config.read_timeout,
            },
            handshake::Failure::Replay(source) => ProxyError::Broken {
                upstream,
                server,
                source,
            },
            other => ProxyError::Exchange {
                upstream,
                server,
                reason: other.to_string(),
            },
        }
    }

    /// Send one request on `sender`, waiting at most `read_timeout` (pushed
    /// back while the body uploads) for the response head.
    async fn exchange(
        &self,
        sender: &mut Sender,
        request: Request<RequestBody>,
        progress: Option<&Progress>,
    ) -> Result<Response<Incoming>, NoAnswer> {
        let timeout = self.config.read_timeout;
        let response = sender.try_send_request(request);
        tokio::pin!(response);
        let mut sleep = Timeout::after(timeout);
        std::future::poll_fn(|cx| {
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
}

/// `a, b` or `none`.
fn or_none(addrs: &[SocketAddr]) -> String {
    if addrs.is_empty() {
        "none".to_string()
    } else {
        resolve::list(addrs)
    }
}

/// Resolve an upstream's host names every `interval` while it is in use.
async fn resolve_loop(upstream: Weak<Upstream>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(upstream) = upstream.upgrade() else {
            return;
        };
        upstream.resolve(false).await;
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
