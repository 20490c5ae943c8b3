//! Serving one HTTP request: check it, route it, then forward it, upgrade it,
//! serve a file or redirect it; answer errors; finish the response head by
//! the route's rules (compression, `response_headers`); open and close its
//! access record.

pub mod checks;
pub mod connect;
pub mod headers;
pub mod redirect;
pub mod streams;
pub mod upgrade;

use crate::access::{Record, RequestInfo};
use crate::body::{self, RequestBody, ResponseBody};
use crate::compress::{self, Accepted};
use crate::config::{ProxyRoute, Scheme};
use crate::error::ProxyError;
use crate::state::{ActiveRoute, State, Target};
use crate::upstream::{Outgoing, Upstream};
use crate::ws::relay::Handover;
use headers::ClientSide;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, Version};
use hyper::body::{Body, Incoming};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use streams::OpenStreams;
use tracing::Instrument;

/// The largest request head (request line and headers) accepted; larger
/// ones are answered `431`.
pub const MAX_HEAD: usize = 64 * 1024;

/// `Retry-After` (seconds) of a `429` over `max_connections_per_ip`.
pub const OVER_CAP_RETRY_AFTER: &str = "1";

/// The client connection a request arrived on.
pub struct Peer {
    pub addr: SocketAddr,
    /// What the upstream is told about this client.
    pub client: ClientSide,
    /// The proxy's state, held per connection: requests reach it through
    /// their connection instead of each taking a reference of its own,
    /// which would write to a count every worker shares.
    pub state: Arc<State>,
    /// Where the tunnels of this connection run.
    tunnels: Tunnels,
    /// Set when this connection is over its listener's
    /// `max_connections_per_ip` (the cap): every request gets `429`.
    pub over_ip_cap: Option<usize>,
}

// The HTTP/1.1 slot is inline, as it was before HTTP/2: boxing it would
// cost an allocation per upgrade, and a `Peer` is made once per connection.
#[allow(clippy::large_enum_variant)]
enum Tunnels {
    /// HTTP/1.1: the tunnel this connection becomes once its `101` is
    /// written: the connection's own task runs it when hyper lets go of the
    /// connection.
    Connection(Mutex<Option<Handover>>),
    /// HTTP/2: every WebSocket stream's tunnel runs in a task of its own,
    /// tracked for the drain, and counts as an open stream meanwhile.
    Streams(Arc<OpenStreams>),
}

impl Peer {
    pub fn new(addr: SocketAddr, scheme: Scheme, state: Arc<State>) -> Peer {
        Peer {
            addr,
            client: ClientSide::new(addr.ip(), scheme),
            state,
            tunnels: Tunnels::Connection(Mutex::new(None)),
            over_ip_cap: None,
        }
    }

    /// An HTTP/2 connection: many streams, each WebSocket stream a tunnel
    /// of its own, counted in `streams`.
    pub fn with_streams(mut self, streams: Arc<OpenStreams>) -> Peer {
        self.tunnels = Tunnels::Streams(streams);
        self
    }

    /// Run `handover` once the response in flight is written: on HTTP/1.1
    /// the connection itself becomes the tunnel, on HTTP/2 the stream does,
    /// in a task of its own.
    pub fn become_tunnel(&self, handover: Handover) {
        match &self.tunnels {
            Tunnels::Connection(slot) => {
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(handover);
            }
            Tunnels::Streams(streams) => {
                let open = streams.open();
                let tunnel = async move {
                    handover.run().await;
                    drop(open);
                };
                self.state.tasks.spawn(tunnel.in_current_span());
            }
        }
    }

    /// The tunnel this connection was made, if an upgrade succeeded
    /// (HTTP/1.1; an HTTP/2 connection never becomes one).
    pub fn take_tunnel(&self) -> Option<Handover> {
        match &self.tunnels {
            Tunnels::Connection(slot) => slot.lock().unwrap_or_else(|p| p.into_inner()).take(),
            Tunnels::Streams(_) => None,
        }
    }
}

/// Answer one request. Never fails: errors become responses.
pub async fn handle(
    req: Request<Incoming>,
    peer: Arc<Peer>,
) -> Result<Response<ResponseBody>, Infallible> {
    let started = Instant::now();
    let state = &peer.state;
    let generation = state.current();
    let checked = checks::check(&req);
    let (host, path) = match &checked {
        Ok(checked) if checked.asterisk => (checked.host.clone(), "/"),
        Ok(checked) => (checked.host.clone(), req.uri().path()),
        Err(_) => (req.headers().get(header::HOST).cloned(), ""),
    };
    let host_str = host.as_ref().and_then(|h| h.to_str().ok());
    let route = match checked {
        Ok(_) => generation.route(peer.client.scheme, host_str, path),
        Err(_) => None,
    };
    let mut request = RequestInfo::new(
        peer.addr,
        req.method().clone(),
        req.uri().clone(),
        host.clone(),
    );
    request.version = req.version();
    let accepted = match route {
        Some(route) if route.config.compress => compress::negotiate(req.headers()),
        _ => Accepted::default(),
    };
    let stats = route.map_or(&generation.unrouted, |r| &r.stats).clone();
    let version = req.version();
    let served = match (checked, peer.over_ip_cap) {
        (_, Some(limit)) => Err(ProxyError::OverIpCap { limit }),
        (Ok(_), None) => {
            let body_timeout = generation.config.server.client_body_timeout;
            serve(
                req,
                &peer,
                host.as_ref(),
                route,
                accepted,
                state,
                body_timeout,
            )
            .await
        }
        (Err(refused), None) => Err(refused),
    };
    let mut response = match served {
        Ok((response, upstream)) => {
            request.upstream = upstream;
            response
        }
        Err(error) => {
            request.set_error(&error);
            error_response(&error, version)
        }
    };
    if let Some(route) = route
        && (route.config.compress || !route.config.response_headers.is_empty())
    {
        finish_head(route, &request.method, accepted, &mut response);
    }
    let length = body::wire_length(
        &request.method,
        response.status(),
        response.headers(),
        response.body(),
    );
    let record = Record::new(started, response.status(), stats, request);
    response.body_mut().set_record(record, length);
    Ok(response)
}

/// What a route does to every response head it answers with, whoever made
/// the response: compression (`compress`), then `response_headers`, which
/// have the last word.
fn finish_head(
    route: &ActiveRoute,
    method: &http::Method,
    accepted: Accepted,
    response: &mut Response<ResponseBody>,
) {
    let config = &route.config;
    // The 2xx of a CONNECT (a WebSocket over HTTP/2) opens a tunnel: it has
    // no body to compress (RFC 9110 §9.3.6).
    if config.compress && method != http::Method::CONNECT {
        let length = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .or_else(|| response.body().size_hint().exact());
        if compress::eligible(response.status(), response.headers(), length) {
            compress::add_vary(response.headers_mut());
            if let Some(coding) = accepted.best {
                compress::encode_head(response.headers_mut(), coding);
                if method != http::Method::HEAD {
                    let body = std::mem::replace(response.body_mut(), ResponseBody::empty());
                    *response.body_mut() = body.compressed(coding);
                }
            }
        }
    }
    config.response_headers.apply(response.headers_mut());
}

async fn serve(
    req: Request<Incoming>,
    peer: &Peer,
    host: Option<&HeaderValue>,
    route: Option<&ActiveRoute>,
    accepted: Accepted,
    state: &State,
    body_timeout: std::time::Duration,
) -> Result<(Response<ResponseBody>, Option<Arc<str>>), ProxyError> {
    if peer.client.scheme == Scheme::Http
        && let Some(answer) = acme_http01(&req, state)
    {
        return Ok((answer, None));
    }
    if req.method() == Method::CONNECT {
        // A reverse proxy opens no tunnels to where clients say; the one
        // CONNECT it takes is a WebSocket over HTTP/2 (RFC 8441).
        return Box::pin(connect::relay(req, peer, host, route, state)).await;
    }
    let route = route.ok_or(ProxyError::NoRoute)?;
    match &route.target {
        Target::Static(files) => Ok((files.serve(&req, accepted).await?, None)),
        Target::Redirect(to) => Ok((redirect::answer(to, host, req.uri())?, None)),
        Target::Proxy {
            upstream,
            route: proxy,
        } => {
            if headers::is_websocket_upgrade(&req) {
                // Boxed: the upgrade's state is large, and every request's
                // future (moved into place by hyper) would otherwise carry it.
                Box::pin(upgrade::relay(
                    req,
                    peer,
                    host,
                    proxy,
                    &route.stats,
                    upstream,
                    state,
                ))
                .await
            } else {
                forward(req, &peer.client, host, proxy, upstream, body_timeout).await
            }
        }
    }
}

/// The answer to an ACME HTTP-01 validation request (RFC 8555 section
/// 8.3), if this is one for a challenge an order awaits. It comes before
/// routing, as the ACME server asks whatever the routes say.
fn acme_http01(req: &Request<Incoming>, state: &State) -> Option<Response<ResponseBody>> {
    use crate::certs::acme::challenge::HTTP01_PREFIX;
    let challenges = state.certs.challenges();
    if !req.uri().path().starts_with(HTTP01_PREFIX) || !challenges.any_http01() {
        return None;
    }
    let answer = challenges.http01(req.uri().path())?;
    tracing::debug!("ACME HTTP-01 validation request answered");
    let mut response = Response::new(ResponseBody::bytes(answer.into()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Some(response)
}

/// Forward an ordinary request and stream the answer back.
async fn forward(
    req: Request<Incoming>,
    client: &ClientSide,
    host: Option<&HeaderValue>,
    route: &ProxyRoute,
    upstream: &Upstream,
    body_timeout: std::time::Duration,
) -> Result<(Response<ResponseBody>, Option<Arc<str>>), ProxyError> {
    let (parts, body) = req.into_parts();
    let body = if body.is_end_stream() {
        RequestBody::Empty
    } else {
        RequestBody::streaming(body, body_timeout)
    };
    let mut request = outgoing(parts, client, host, false, body);
    if !route.request_headers.is_empty() {
        route.request_headers.apply(&mut request.headers);
    }
    let answer = upstream.send(request).await?;
    let server = answer.server.name.clone();
    if answer.response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        // Nobody asked to switch: there is no tunnel to relay it into, and
        // HTTP/2 has no 101 at all (RFC 9113 §8.6).
        return Err(ProxyError::BadUpgrade {
            upstream: upstream.config.name.clone(),
            server: server.to_string(),
            reason: "it switched protocols on a request that asked for no upgrade",
        });
    }
    let (mut parts, body) = answer.response.into_parts();
    headers::to_client(&mut parts.headers, false);
    Ok((
        Response::from_parts(
            parts,
            ResponseBody::upstream_within(body, answer.reuse, upstream.config.read_timeout),
        ),
        Some(server),
    ))
}

/// The upstream request for a client's request head: headers rewritten by
/// the header policy, origin-form target.
pub fn outgoing(
    parts: http::request::Parts,
    client: &ClientSide,
    host: Option<&HeaderValue>,
    websocket: bool,
    body: RequestBody,
) -> Outgoing {
    let mut headers = parts.headers;
    headers::to_upstream(&mut headers, client, host, websocket);
    Outgoing {
        method: parts.method,
        path_and_query: parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        headers,
        body,
    }
}

/// The plain-text response for an error the proxy answers itself.
fn error_response(error: &ProxyError, version: Version) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::text(error.body()));
    *response.status_mut() = error.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if matches!(error, ProxyError::MethodNotAllowed) {
        headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    if let Some(seconds) = error.retry_after() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if version < Version::HTTP_2
        && matches!(
            error,
            ProxyError::BadRequest(_)
                | ProxyError::HeadTooLarge { .. }
                | ProxyError::BodyTimeout { .. }
                | ProxyError::ClientBody(_)
        )
    {
        // After a malformed request the connection cannot be trusted. (An
        // HTTP/2 stream ends with its response; the connection is fine.)
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let ProxyError::OverIpCap { .. } = error {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(OVER_CAP_RETRY_AFTER),
        );
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
