//! `http` mode: small HTTP/1.1 GET requests over keep-alive connections,
//! one request in flight per connection. Measures requests per second,
//! latency and the status codes seen. A stand-in for wrk where it is absent.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

use super::{Ctx, hard_stop, run_workers};
use crate::bench::error::{ErrorKind, Failure};
use crate::bench::stats::WorkerStats;

pub async fn run(ctx: Arc<Ctx>) -> (WorkerStats, Vec<String>) {
    let n = ctx.plan.connections;
    run_workers(&ctx, n, hard_stop(&ctx), worker).await
}

/// The parts of the request that never change, cloned for each request.
struct Template {
    uri: Uri,
    headers: HeaderMap,
}

impl Template {
    fn new(ctx: &Ctx) -> Template {
        let target = &ctx.connector.target;
        let uri = target
            .path_and_query
            .parse()
            .unwrap_or_else(|_| Uri::from_static("/"));
        // Same extra headers as the WebSocket request, minus the upgrade ones.
        let mut headers = HeaderMap::new();
        for (name, value) in ctx.connector.request().headers() {
            let upgrade_only = name == header::CONNECTION
                || name == header::UPGRADE
                || name.as_str().starts_with("sec-websocket-");
            if !upgrade_only {
                headers.append(name.clone(), value.clone());
            }
        }
        headers
            .entry(header::USER_AGENT)
            .or_insert(HeaderValue::from_static("switchyard-bench"));
        Template { uri, headers }
    }

    fn request(&self) -> Request<Empty<Bytes>> {
        let mut req = Request::new(Empty::new());
        *req.method_mut() = Method::GET;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// A client connection: the request sender and its driver task, which is
/// aborted when this is dropped.
struct Client {
    sender: SendRequest<Empty<Bytes>>,
    driver: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

async fn worker(ctx: Arc<Ctx>, _id: usize) -> WorkerStats {
    let mut stats = ctx.new_stats();
    let live = &*ctx.live;
    let template = Template::new(&ctx);

    'connection: while let Some(mut client) = connect(&ctx, &mut stats).await {
        let _open = live.open_guard();
        loop {
            let t0 = Instant::now();
            if t0 >= ctx.deadline {
                break 'connection;
            }
            if client.sender.is_closed() {
                // The server ended keep-alive (Connection: close): not an error.
                continue 'connection;
            }
            let exchange = exchange(&mut client.sender, template.request());
            match tokio::time::timeout(ctx.plan.timeout, exchange).await {
                Ok(Ok((status, body_bytes))) => {
                    let now = Instant::now();
                    stats.op(now - t0, now, live);
                    stats.bytes_received += body_bytes;
                    *stats.http_status.entry(status).or_default() += 1;
                }
                Ok(Err(f)) => {
                    stats.fail(f, live);
                    continue 'connection;
                }
                Err(_) => {
                    stats.fail(Failure::timeout("waiting for the response"), live);
                    continue 'connection;
                }
            }
        }
    }
    stats.stop_measuring(live);
    stats
}

/// Opens a keep-alive connection, retrying until the deadline.
async fn connect(ctx: &Ctx, stats: &mut WorkerStats) -> Option<Client> {
    loop {
        if Instant::now() >= ctx.deadline || !ctx.pace(ctx.deadline).await {
            return None;
        }
        let attempt = async {
            let conn = ctx.connector.transport().await?;
            http1::handshake(TokioIo::new(conn))
                .await
                .map_err(|e| classify(&e, "HTTP handshake"))
        };
        match tokio::time::timeout(ctx.plan.timeout, attempt).await {
            Ok(Ok((sender, connection))) => {
                stats.connections_opened += 1;
                let driver = tokio::spawn(async move {
                    // Errors surface through the sender; nothing to add here.
                    let _ = connection.await;
                });
                return Some(Client { sender, driver });
            }
            Ok(Err(f)) => stats.fail(f, &ctx.live),
            Err(_) => stats.fail(Failure::timeout("opening the connection"), &ctx.live),
        }
        ctx.backoff().await;
    }
}

/// One request and its whole response body. Returns (status, body bytes).
async fn exchange(
    sender: &mut SendRequest<Empty<Bytes>>,
    request: Request<Empty<Bytes>>,
) -> Result<(u16, u64), Failure> {
    sender
        .ready()
        .await
        .map_err(|e| classify(&e, "waiting for the connection"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| classify(&e, "request"))?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| classify(&e, "reading the body"))?;
        if let Some(data) = frame.data_ref() {
            bytes += data.len() as u64;
        }
    }
    Ok((status, bytes))
}

fn classify(err: &hyper::Error, what: &str) -> Failure {
    if let Some(io) = err
        .source()
        .and_then(|s| s.downcast_ref::<std::io::Error>())
    {
        return Failure::from_stream_io(io, what);
    }
    let kind = if err.is_closed() || err.is_incomplete_message() || err.is_canceled() {
        ErrorKind::ClosedEarly
    } else if err.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Other
    };
    Failure::new(kind, format!("{what}: {err}"))
}
