//! WebSocket upgrades: the handshake relay that decides whether a connection
//! becomes a tunnel (RFC 6455 §4).
//!
//! The client's upgrade request is checked (`Origin` against the route's
//! `allow_origins`, a well-formed `Sec-WebSocket-Key`) and forwarded with its
//! `Sec-WebSocket-*` headers. Only a `101` whose `Upgrade` is `websocket` and
//! whose `Sec-WebSocket-Accept` is right for the client's key turns both
//! connections into a [`Tunnel`]. Any other answer goes back to the client
//! as an ordinary response and the client connection stays HTTP: the next
//! bytes on it are parsed and routed by the proxy, never handed raw to the
//! upstream (the defence against WebSocket request smuggling).

use crate::body::{RequestBody, ResponseBody};
use crate::config::ProxyRoute;
use crate::error::{BAD_WEBSOCKET_KEY, ProxyError};
use crate::metrics::{Refusal, RouteStats};
use crate::proxy::{Peer, headers, outgoing};
use crate::state::State;
use crate::upstream::{Answer, UpgradeAnswer, Upstream};
use crate::ws::relay::{Handover, Limits, Tunnel};
use base64::Engine;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Relay a WebSocket upgrade request. Returns the response for the client
/// and the upstream server that answered.
pub async fn relay(
    mut req: Request<Incoming>,
    peer: &Peer,
    host: Option<&HeaderValue>,
    route: &ProxyRoute,
    stats: &Arc<RouteStats>,
    upstream: &Upstream,
    state: &State,
) -> Result<(Response<ResponseBody>, Option<Arc<str>>), ProxyError> {
    check_origin(req.headers(), route, stats)?;
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|key| is_valid_key(key))
        .ok_or(ProxyError::BadRequest(BAD_WEBSOCKET_KEY))?;
    let expected_accept = derive_accept_key(key.as_bytes());

    // Claim the client's side of the upgrade before the request is consumed.
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _empty_body) = req.into_parts();
    let mut request = outgoing(parts, &peer.client, host, true, RequestBody::Empty);
    if !route.request_headers.is_empty() {
        route.request_headers.apply(&mut request.headers);
    }
    let answer = upstream.send_upgrade(request).await?;
    let (mut head, stream, early, lease) = match answer {
        UpgradeAnswer::Switched {
            head,
            stream,
            early,
            lease,
        } => (head, stream, early, lease),
        UpgradeAnswer::Refused(answer) => {
            // Not a switch: an ordinary response, and the connection stays HTTP.
            stats.refused(Refusal::Not101);
            let (response, server) = passed_on(answer);
            return Ok((response, Some(server)));
        }
    };
    let server = lease.server().name.clone();
    check_switch(
        &head,
        &expected_accept,
        "its Sec-WebSocket-Accept does not match the client's key",
        upstream,
        &server,
        stats,
    )?;

    let tunnel = Tunnel {
        stats: stats.clone(),
        limits: limits(route),
        upstream_server: server.clone(),
        peer: peer.addr,
        http: http::Version::HTTP_11,
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

    headers::to_client(&mut head.headers, true);
    Ok((
        Response::from_parts(head, ResponseBody::empty()),
        Some(server),
    ))
}

/// An upstream's answer other than `101`, passed on to the client as an
/// ordinary response; with the server that gave it.
pub(super) fn passed_on(answer: Answer) -> (Response<ResponseBody>, Arc<str>) {
    let server = answer.server.name.clone();
    let (mut parts, body) = answer.response.into_parts();
    headers::to_client(&mut parts.headers, false);
    let response = Response::from_parts(parts, ResponseBody::upstream(body, answer.reuse));
    (response, server)
}

/// Check an upstream's `101`: `Upgrade: websocket`, and the
/// `Sec-WebSocket-Accept` for the key sent (`accept_mismatch` says whose).
pub(super) fn check_switch(
    head: &http::response::Parts,
    expected_accept: &str,
    accept_mismatch: &'static str,
    upstream: &Upstream,
    server: &str,
    stats: &RouteStats,
) -> Result<(), ProxyError> {
    let bad_upgrade = |reason| {
        stats.refused(Refusal::BadAccept);
        Err(ProxyError::BadUpgrade {
            upstream: upstream.config.name.clone(),
            server: server.to_string(),
            reason,
        })
    };
    if !headers::has_token(&head.headers, &header::UPGRADE, "websocket") {
        return bad_upgrade("its 101 does not say `Upgrade: websocket`");
    }
    let accept = head.headers.get(header::SEC_WEBSOCKET_ACCEPT);
    if accept.map(HeaderValue::as_bytes) != Some(expected_accept.as_bytes()) {
        return bad_upgrade(accept_mismatch);
    }
    Ok(())
}

/// What a tunnel of `route` may do: timeouts, pings, message size,
/// lifetime (over HTTP/1.1 and HTTP/2 alike).
pub(super) fn limits(route: &ProxyRoute) -> Limits {
    Limits {
        idle_timeout: route.idle_timeout,
        ping_interval: route.ping_interval,
        ping_timeout: route.ping_timeout,
        max_message_size: route.max_message_size,
        max_lifetime: route.max_lifetime,
    }
}

/// A WebSocket handshake's `Origin` against the route's `allow_origins`
/// (over HTTP/1.1 and HTTP/2 alike).
pub(super) fn check_origin(
    headers: &http::HeaderMap,
    route: &ProxyRoute,
    stats: &RouteStats,
) -> Result<(), ProxyError> {
    let origin = headers.get(header::ORIGIN);
    if route
        .allow_origins
        .allows(origin.and_then(|o| o.to_str().ok()))
    {
        return Ok(());
    }
    stats.refused(Refusal::Origin);
    Err(ProxyError::OriginForbidden {
        origin: origin.map_or_else(String::new, |o| {
            String::from_utf8_lossy(o.as_bytes()).into_owned()
        }),
    })
}

/// RFC 6455 §4.1: the key is 16 random bytes, base64-encoded.
fn is_valid_key(key: &HeaderValue) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(key.as_bytes())
        .is_ok_and(|bytes| bytes.len() == 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_16_bytes_of_base64() {
        assert!(is_valid_key(&HeaderValue::from_static(
            "dGhlIHNhbXBsZSBub25jZQ=="
        )));
        assert!(!is_valid_key(&HeaderValue::from_static("short")));
        assert!(!is_valid_key(&HeaderValue::from_static(
            "not base64 at all!!"
        )));
    }

    #[test]
    fn accept_key_follows_rfc_6455() {
        // The example of RFC 6455 §1.3.
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
