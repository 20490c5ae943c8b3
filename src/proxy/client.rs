//! Talking to upstreams: pooled HTTP/1.1 connections, round-robin over an
//! upstream's servers, timeouts.
//!
//! Each upstream owns one hyper-util client (one keep-alive pool per server).
//! A request goes to the next server in round-robin order, skipping servers
//! that recently refused connections. When a connection attempt fails and
//! the request has no body, it is retried on the next server; a request with
//! a body is not (its body may be half sent), and the server is marked down
//! for [`DOWN_FOR`] so the following requests avoid it.
//!
//! `connect_timeout` bounds each connection attempt. `read_timeout` bounds
//! the wait for the response head; time spent uploading a request body does
//! not count against it (the clock restarts whenever the body moves).

use crate::body::{Progress, RequestBody};
use crate::config::{ServerAddr, UpstreamConfig};
use crate::error::ProxyError;
use crate::metrics::Metrics;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a server that refused a connection is skipped.
pub const DOWN_FOR: Duration = Duration::from_secs(10);
/// How long an idle pooled connection to an upstream is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// One `[upstream.NAME]` at run time.
pub struct Upstream {
    pub config: Arc<UpstreamConfig>,
    client: Client<HttpConnector, RequestBody>,
    servers: Vec<Server>,
    next: AtomicUsize,
    clock: Instant,
    metrics: Arc<Metrics>,
}

struct Server {
    addr: ServerAddr,
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

/// An upstream's answer and the server that gave it.
pub struct Answer {
    pub response: Response<Incoming>,
    pub server: ServerAddr,
}

impl Upstream {
    pub fn new(config: Arc<UpstreamConfig>, metrics: Arc<Metrics>) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .set_host(false)
            .build(connector);
        let servers = config
            .servers
            .iter()
            .map(|addr| Server {
                addr: addr.clone(),
                down_until: AtomicU64::new(0),
            })
            .collect();
        Upstream {
            config,
            client,
            servers,
            next: AtomicUsize::new(0),
            clock: Instant::now(),
            metrics,
        }
    }

    /// Send `request` to one of the servers and wait for the response head.
    pub async fn send(&self, request: Outgoing) -> Result<Answer, ProxyError> {
        let order = self.order();
        let retryable = matches!(request.body, RequestBody::Empty) && order.len() > 1;
        let Outgoing {
            method,
            path_and_query,
            mut headers,
            mut body,
        } = request;
        let mut attempts = order.iter().peekable();
        while let Some(&index) = attempts.next() {
            let server = &self.servers[index];
            let last = attempts.peek().is_none() || !retryable;
            // Keep a copy of the head only while another attempt may need it.
            let (attempt_headers, attempt_body) = if last {
                (
                    std::mem::take(&mut headers),
                    std::mem::replace(&mut body, RequestBody::Empty),
                )
            } else {
                (headers.clone(), RequestBody::Empty)
            };
            let progress = match &attempt_body {
                RequestBody::Streaming { progress, .. } => Some(progress.clone()),
                RequestBody::Empty => None,
            };
            let uri = Uri::builder()
                .scheme(Scheme::HTTP)
                .authority(server.addr.authority.clone())
                .path_and_query(path_and_query.clone())
                .build();
            let Ok(uri) = uri else {
                return Err(ProxyError::BadRequest("request target cannot be forwarded"));
            };
            let mut outgoing = Request::new(attempt_body);
            *outgoing.method_mut() = method.clone();
            *outgoing.uri_mut() = uri;
            *outgoing.version_mut() = Version::HTTP_11;
            *outgoing.headers_mut() = attempt_headers;
            match self.exchange(outgoing, progress).await {
                Ok(Some(response)) => {
                    return Ok(Answer {
                        response,
                        server: server.addr.clone(),
                    });
                }
                Ok(None) => {
                    return Err(ProxyError::ResponseTimeout {
                        upstream: self.config.name.clone(),
                        server: server.addr.to_string(),
                        timeout: self.config.read_timeout,
                    });
                }
                Err(e) if e.is_connect() => {
                    self.mark_down(server);
                    tracing::warn!(
                        upstream = %self.config.name,
                        server = %server.addr,
                        error = %error_chain(&e),
                        "upstream server refused a connection; skipping it for {DOWN_FOR:?}"
                    );
                    if !last {
                        continue;
                    }
                    return Err(if is_timeout(&e) {
                        ProxyError::ConnectTimeout {
                            upstream: self.config.name.clone(),
                            server: server.addr.to_string(),
                            timeout: self.config.connect_timeout,
                        }
                    } else {
                        ProxyError::Connect {
                            upstream: self.config.name.clone(),
                            server: server.addr.to_string(),
                            source: e,
                        }
                    });
                }
                Err(e) => {
                    return Err(ProxyError::Broken {
                        upstream: self.config.name.clone(),
                        server: server.addr.to_string(),
                        source: e,
                    });
                }
            }
        }
        // `order` is never empty: a validated upstream has servers.
        Err(ProxyError::MissingUpstream(self.config.name.clone()))
    }

    /// Send one request; `Ok(None)` when `read_timeout` passed first.
    async fn exchange(
        &self,
        request: Request<RequestBody>,
        progress: Option<Arc<Progress>>,
    ) -> Result<Option<Response<Incoming>>, hyper_util::client::legacy::Error> {
        let timeout = self.config.read_timeout;
        let response = self.client.request(request);
        tokio::pin!(response);
        let sleep = tokio::time::sleep(timeout);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                result = &mut response => return result.map(Some),
                () = &mut sleep => {
                    // A body still uploading pushes the deadline back.
                    let deadline = progress.as_ref().map(|p| p.last() + timeout);
                    match deadline {
                        Some(deadline) if deadline > Instant::now() => {
                            sleep.as_mut().reset(deadline.into());
                        }
                        _ => return Ok(None),
                    }
                }
            }
        }
    }

    /// Servers in the order to try them: round-robin from the next one, the
    /// ones marked down last.
    fn order(&self) -> Vec<usize> {
        let n = self.servers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n.max(1);
        let now = self.now_ms();
        let (mut up, down): (Vec<usize>, Vec<usize>) = (0..n)
            .map(|i| (start + i) % n)
            .partition(|&i| self.servers[i].down_until.load(Ordering::Relaxed) <= now);
        up.extend(down);
        up
    }

    fn mark_down(&self, server: &Server) {
        self.metrics
            .connect_failure(&self.config.name, server.addr.authority.as_str());
        let until = self.now_ms() + DOWN_FOR.as_millis() as u64;
        server.down_until.store(until, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }
}

/// Whether an error chain contains a timed-out I/O error.
fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// `error: cause: cause` on one line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(e) = current {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        current = e.source();
    }
    text
}
