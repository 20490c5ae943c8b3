//! WebSockets over HTTP/2 (RFC 8441), bridged to HTTP/1.1 upstreams.
//!
//! A browser that sees `SETTINGS_ENABLE_CONNECT_PROTOCOL` opens its
//! WebSocket as a stream of the page's HTTP/2 connection: an extended
//! `CONNECT` with `:protocol = websocket` (RFC 8441 §4), answered `200`,
//! after which the stream's DATA frames carry the WebSocket frames. The
//! upstreams speak HTTP/1.1, so the proxy turns the stream into the
//! RFC 6455 handshake they know: a `GET` with `Upgrade: websocket`, the
//! client's `Sec-WebSocket-Version`, `-Protocol` and `-Extensions`, and a
//! `Sec-WebSocket-Key` of the proxy's own (the client sent none). Only a
//! `101` whose `Upgrade` is `websocket` and whose `Sec-WebSocket-Accept`
//! is right for that key becomes a tunnel; the client then gets `200` with
//! the subprotocol and extensions the upstream chose, and the stream and
//! the upstream socket are spliced like any tunnel.
//!
//! An upstream answer other than `101` goes back on the stream as an
//! ordinary response (the smuggling defence of [`super::upgrade`]), except
//! a `2xx`: on a `CONNECT` that would tell the client its WebSocket is
//! open, so it is a `502`. Every other `CONNECT` is a `501`: a reverse
//! proxy opens no tunnels to where clients ask. A static route answers as
//! it answers any method it does not serve, a redirect route with its
//! redirect; the route's `request_headers` apply to the upgrade request,
//! as over HTTP/1.1.

use crate::body::{RequestBody, ResponseBody};
use crate::compress::Accepted;
use crate::error::{BAD_WEBSOCKET_VERSION, ProxyError};
use crate::metrics::Refusal;
use crate::proxy::upgrade::{check_origin, check_switch, limits, passed_on};
use crate::proxy::{Peer, headers, outgoing, redirect};
use crate::state::{ActiveRoute, State, Target};
use crate::upstream::UpgradeAnswer;
use crate::ws::relay::{Handover, Tunnel};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::ext::Protocol;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The `:protocol` this bridge serves.
const WEBSOCKET: &str = "websocket";

/// Answer a `CONNECT`: relay an RFC 8441 WebSocket to the route's upstream,
/// or refuse. Returns the response for the stream and the upstream server
/// that answered.
pub async fn relay(
    mut req: Request<Incoming>,
    peer: &Peer,
    host: Option<&HeaderValue>,
    route: Option<&ActiveRoute>,
    state: &State,
) -> Result<(Response<ResponseBody>, Option<Arc<str>>), ProxyError> {
    let protocol = req.extensions().get::<Protocol>().map(Protocol::as_str);
    if !protocol.is_some_and(|p| p.eq_ignore_ascii_case(WEBSOCKET)) {
        return Err(ProxyError::UnsupportedConnect {
            what: match protocol {
                Some(protocol) => format!("with :protocol {protocol:?}"),
                None => format!("to {}", req.uri()),
            },
        });
    }
    let route = route.ok_or(ProxyError::NoRoute)?;
    let (upstream, proxy) = match &route.target {
        Target::Proxy { upstream, route } => (upstream, route),
        // A file server has no WebSocket: its usual answer (405).
        Target::Static(files) => return Ok((files.serve(&req, Accepted::default()).await?, None)),
        // As an HTTP/1.1 upgrade to that route gets it.
        Target::Redirect(to) => return Ok((redirect::answer(to, host, req.uri())?, None)),
    };
    let stats = &route.stats;
    check_origin(req.headers(), proxy, stats)?;
    if !req.headers().contains_key(header::SEC_WEBSOCKET_VERSION) {
        return Err(ProxyError::BadRequest(BAD_WEBSOCKET_VERSION));
    }

    // Claim the stream before the request is consumed.
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, _empty_body) = req.into_parts();
    let key = generate_key();
    let expected_accept = derive_accept_key(key.as_bytes());
    parts.method = Method::GET;
    parts.extensions.clear();
    let mut request = outgoing(parts, &peer.client, host, true, RequestBody::Empty);
    if !proxy.request_headers.is_empty() {
        proxy.request_headers.apply(&mut request.headers);
    }
    // The key last: the accept check below depends on it.
    if let Ok(key) = HeaderValue::try_from(key) {
        request.headers.insert(header::SEC_WEBSOCKET_KEY, key);
    }
    let (mut head, stream, early, lease) = match upstream.send_upgrade(request).await? {
        UpgradeAnswer::Switched {
            head,
            stream,
            early,
            lease,
        } => (head, stream, early, lease),
        UpgradeAnswer::Refused(answer) => {
            stats.refused(Refusal::Not101);
            if answer.response.status().is_success() {
                return Err(ProxyError::BadUpgrade {
                    upstream: upstream.config.name.clone(),
                    server: answer.server.name.to_string(),
                    reason: "it answered the WebSocket upgrade with a 2xx, not 101",
                });
            }
            // Not a switch: an ordinary response on this stream.
            let (response, server) = passed_on(answer);
            return Ok((response, Some(server)));
        }
    };
    let server = lease.server().name.clone();
    check_switch(
        &head,
        &expected_accept,
        "its Sec-WebSocket-Accept does not match the proxy's key",
        upstream,
        &server,
        stats,
    )?;

    let tunnel = Tunnel {
        stats: stats.clone(),
        limits: limits(proxy),
        upstream_server: server.clone(),
        peer: peer.addr,
        http: Version::HTTP_2,
        drain: state.tunnels.clone(),
        lease,
    };
    peer.become_tunnel(Handover {
        tunnel,
        client: client_upgrade,
        upstream: stream,
        early,
        goodbye: None,
    });
    Ok((accepted(&mut head), Some(server)))
}

/// The `200` that opens the stream, from the upstream's `101`: its headers
/// (the chosen `Sec-WebSocket-Protocol` and `-Extensions`, cookies…) without
/// the hop-by-hop ones and the accept key, which belongs to the upstream's
/// leg.
fn accepted(upstream: &mut http::response::Parts) -> Response<ResponseBody> {
    let mut headers = std::mem::take(&mut upstream.headers);
    headers::to_client(&mut headers, false);
    headers.remove(header::SEC_WEBSOCKET_ACCEPT);
    headers.remove(header::CONTENT_LENGTH);
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = StatusCode::OK;
    *response.headers_mut() = headers;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_200_keeps_what_the_upstream_chose_and_drops_the_handshake() {
        let upgrade = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            .header("sec-websocket-protocol", "chat")
            .header("sec-websocket-extensions", "permessage-deflate")
            .header("set-cookie", "seen=1")
            .body(())
            .unwrap();
        let (mut parts, ()) = upgrade.into_parts();
        let response = accepted(&mut parts);
        assert_eq!(response.status(), StatusCode::OK);
        let mut names: Vec<&str> = response.headers().keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "sec-websocket-extensions",
                "sec-websocket-protocol",
                "set-cookie"
            ]
        );
    }
}
