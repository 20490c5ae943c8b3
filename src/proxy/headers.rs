//! Header policy between client and upstream: pure functions, no I/O.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection and must not
//! cross the proxy: `Connection` and every header it names, `Keep-Alive`,
//! `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade` and every `Proxy-*`
//! header. A WebSocket upgrade is the exception: it is forwarded as
//! `Upgrade: websocket` + `Connection: Upgrade` (RFC 6455 §4.1).
//!
//! Towards the upstream the proxy adds what the nginx block of the seed
//! tutorial adds, and a little more: `X-Real-IP`, `X-Forwarded-For`
//! (appended), `X-Forwarded-Proto` and `X-Forwarded-Host`; the client's
//! `Host` is kept.

use crate::config::Scheme;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Version};
use std::net::IpAddr;

pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Hop-by-hop headers removed in both directions.
const HOP_BY_HOP: [&HeaderName; 5] = [
    &header::CONNECTION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
];

/// Whether `req` asks for a WebSocket upgrade: HTTP/1.1 `GET` with
/// `Connection: upgrade` (as one token of possibly several) and
/// `Upgrade: websocket`. Other upgrade protocols (h2c…) are not relayed: such
/// requests are forwarded as plain requests with the headers stripped.
pub fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.method() == Method::GET
        && has_token(req.headers(), &header::CONNECTION, "upgrade")
        && has_token(req.headers(), &header::UPGRADE, "websocket")
}

/// Whether any `name` header holds `token` in its comma-separated list.
pub fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        let value = value.as_bytes();
        // Most values are the one token alone.
        value.eq_ignore_ascii_case(token.as_bytes())
            || value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Remove hop-by-hop headers: the fixed list, `Proxy-*`, and every header
/// named in `Connection` (except `Host`, which the proxy needs to keep).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, Upgrade::Drop);
}

/// What becomes of `Connection` and `Upgrade` while stripping.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Upgrade {
    Drop,
    /// They are about to be overwritten (a WebSocket upgrade): leave them
    /// for the overwrite rather than remove them first.
    Overwrite,
}

impl Upgrade {
    fn for_websocket(websocket: bool) -> Upgrade {
        if websocket {
            Upgrade::Overwrite
        } else {
            Upgrade::Drop
        }
    }
}

fn strip(headers: &mut HeaderMap, upgrade: Upgrade) {
    let to_remove = |name: &HeaderName| {
        is_hop_by_hop(name)
            && !(upgrade == Upgrade::Overwrite
                && (name == header::CONNECTION || name == header::UPGRADE))
    };
    // Most messages carry none, or only `Connection: keep-alive|upgrade`:
    // look before touching the map.
    let (mut connection, mut removable) = (false, false);
    for name in headers.keys() {
        connection |= name == header::CONNECTION;
        removable |= to_remove(name);
    }
    let named_any = connection
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .any(|t| !is_connection_option(t.trim_ascii()));
    if !named_any && !removable {
        return;
    }
    if named_any {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !is_connection_option(t))
            .filter_map(|t| HeaderName::from_bytes(t).ok())
            .filter(|name| name != header::HOST)
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    // Only the names present (a removal costs a lookup), without a heap list.
    let mut present: [Option<HeaderName>; 8] = Default::default();
    loop {
        let mut found = 0;
        for name in headers.keys().filter(|n| to_remove(n)) {
            if found == present.len() {
                break;
            }
            present[found] = Some(name.clone());
            found += 1;
        }
        for name in present.iter_mut().take(found) {
            if let Some(name) = name.take() {
                headers.remove(name);
            }
        }
        if found < present.len() {
            return;
        }
    }
}

/// `Connection` tokens that are options, not header names.
fn is_connection_option(token: &[u8]) -> bool {
    [&b"close"[..], b"keep-alive", b"upgrade", b""]
        .iter()
        .any(|option| token.eq_ignore_ascii_case(option))
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name) || name == KEEP_ALIVE || is_proxy_header(name)
}

fn is_proxy_header(name: &HeaderName) -> bool {
    name.as_str().starts_with("proxy-")
}

/// What the proxy knows about the client side of a request, prepared once
/// per connection.
#[derive(Debug, Clone)]
pub struct ClientSide {
    /// The client's address, as `X-Real-IP` carries it.
    pub ip: HeaderValue,
    pub scheme: Scheme,
}

impl ClientSide {
    pub fn new(ip: IpAddr, scheme: Scheme) -> ClientSide {
        ClientSide {
            ip: ip_header(ip),
            scheme,
        }
    }
}

/// An address as a header value. IPv4, the common case, is written digit by
/// digit: this runs once per client connection.
fn ip_header(ip: IpAddr) -> HeaderValue {
    let text = match ip {
        IpAddr::V4(v4) => {
            let mut text = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                if octet >= 100 {
                    text.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    text.push(char::from(b'0' + octet / 10 % 10));
                }
                text.push(char::from(b'0' + octet % 10));
            }
            text
        }
        IpAddr::V6(_) => ip.to_string(),
    };
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Rewrite client request headers into upstream request headers.
///
/// `host` is the request's effective host (the `Host` header, or the
/// authority of an absolute-form request target), and is written back as
/// `Host` so the upstream sees what the client asked for.
pub fn to_upstream(
    headers: &mut HeaderMap,
    client: &ClientSide,
    host: Option<&HeaderValue>,
    websocket: bool,
) {
    let forwarded_for = forwarded_for(headers, &client.ip);
    strip(headers, Upgrade::for_websocket(websocket));
    join_cookies(headers);
    headers.reserve(6);
    headers.insert(X_REAL_IP.clone(), client.ip.clone());
    headers.insert(X_FORWARDED_FOR.clone(), forwarded_for);
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(client.scheme.as_str()),
    );
    match host {
        Some(host) => {
            // Usually the effective host is the `Host` header itself.
            if headers.get(header::HOST) != Some(host) {
                headers.insert(header::HOST, host.clone());
            }
            headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
    if websocket {
        set_websocket_upgrade(headers);
    }
}

/// Several `Cookie` fields as the one an HTTP/1.1 upstream expects, joined
/// with `; `. HTTP/2 clients split the cookie into one field per crumb so
/// that each compresses on its own (RFC 9113 §8.2.3); HTTP/1.1 allows one
/// `Cookie` line only (RFC 6265 §5.4), and many backends read the first.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    if values.next().is_none() || values.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(joined) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, joined);
    }
}

/// Rewrite upstream response headers for the client.
pub fn to_client(headers: &mut HeaderMap, websocket: bool) {
    strip(headers, Upgrade::for_websocket(websocket));
    if websocket {
        set_websocket_upgrade(headers);
    }
}

fn set_websocket_upgrade(headers: &mut HeaderMap) {
    for (name, value) in [
        (header::UPGRADE, "websocket"),
        (header::CONNECTION, "Upgrade"),
    ] {
        // Browsers send exactly this already: a look is cheaper than a write.
        let mut values = headers.get_all(&name).iter();
        if values.next().is_some_and(|v| v == value) && values.next().is_none() {
            continue;
        }
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// The client's `X-Forwarded-For` values with `ip` appended, as nginx's
/// `$proxy_add_x_forwarded_for` does.
fn forwarded_for(headers: &HeaderMap, ip: &HeaderValue) -> HeaderValue {
    if !headers.contains_key(&X_FORWARDED_FOR) {
        return ip.clone();
    }
    let mut value = Vec::new();
    for existing in headers.get_all(&X_FORWARDED_FOR) {
        let existing = existing.as_bytes().trim_ascii();
        if !existing.is_empty() {
            value.extend_from_slice(existing);
            value.extend_from_slice(b", ");
        }
    }
    value.extend_from_slice(ip.as_bytes());
    HeaderValue::from_bytes(&value).unwrap_or_else(|_| ip.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn client() -> ClientSide {
        ClientSide::new(
            IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3)),
            Scheme::Https,
        )
    }

    #[test]
    fn addresses_become_header_values() {
        for ip in [
            "0.0.0.0",
            "10.1.2.3",
            "127.0.0.1",
            "192.168.100.255",
            "::1",
            "2001:db8::7",
        ] {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_header(parsed), ip);
        }
    }

    #[test]
    fn cookie_crumbs_become_one_cookie_line() {
        let mut map = headers(&[
            ("cookie", "a=1"),
            ("accept", "*/*"),
            ("cookie", "b=2"),
            ("cookie", "c=3"),
        ]);
        to_upstream(&mut map, &client(), None, false);
        let cookies: Vec<&[u8]> = map
            .get_all("cookie")
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        assert_eq!(cookies, [&b"a=1; b=2; c=3"[..]]);
        let mut one = headers(&[("cookie", "a=1; b=2")]);
        join_cookies(&mut one);
        assert_eq!(one.get("cookie").unwrap(), "a=1; b=2");
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut map = headers(&[
            ("connection", "keep-alive, X-Secret, host,"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "X-Checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic abc"),
            ("proxy-connection", "keep-alive"),
            ("x-secret", "1"),
            ("host", "chat.example.com"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut map);
        let left: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["host", "accept"]);
    }

    #[test]
    fn many_hop_by_hop_headers_all_go() {
        let names: Vec<String> = (0..20).map(|i| format!("proxy-x{i}")).collect();
        let mut pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
        pairs.push(("te", "trailers"));
        pairs.push(("accept", "*/*"));
        let mut map = headers(&pairs);
        strip_hop_by_hop(&mut map);
        let left: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }

    #[test]
    fn upstream_headers_carry_the_client() {
        let mut map = headers(&[
            ("host", "chat.example.com"),
            ("x-forwarded-for", "192.0.2.1"),
            ("x-forwarded-for", "192.0.2.2"),
            ("x-real-ip", "spoofed"),
            ("x-forwarded-proto", "spoofed"),
        ]);
        let host = map.get("host").cloned();
        to_upstream(&mut map, &client(), host.as_ref(), false);
        assert_eq!(map["x-real-ip"], "10.1.2.3");
        assert_eq!(map["x-forwarded-for"], "192.0.2.1, 192.0.2.2, 10.1.2.3");
        assert_eq!(map["x-forwarded-proto"], "https");
        assert_eq!(map["x-forwarded-host"], "chat.example.com");
        assert_eq!(map["host"], "chat.example.com");
        assert!(map.get("connection").is_none());
    }

    #[test]
    fn websocket_upgrade_headers_survive_as_canonical_pair() {
        let mut map = headers(&[
            ("host", "h"),
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
        ]);
        let host = map.get("host").cloned();
        to_upstream(&mut map, &client(), host.as_ref(), true);
        assert_eq!(map["upgrade"], "websocket");
        assert_eq!(map["connection"], "Upgrade");
        assert_eq!(map["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(map["sec-websocket-version"], "13");
    }

    #[test]
    fn websocket_upgrade_still_drops_what_connection_names() {
        let mut map = headers(&[
            ("host", "h"),
            ("connection", "Upgrade, X-Secret"),
            ("connection", "keep-alive"),
            ("upgrade", "websocket"),
            ("upgrade", "h2c"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic eDp5"),
        ]);
        let host = map.get("host").cloned();
        to_upstream(&mut map, &client(), host.as_ref(), true);
        let all = |name: &str| -> Vec<_> { map.get_all(name).iter().cloned().collect() };
        assert_eq!(all("connection"), ["Upgrade"]);
        assert_eq!(all("upgrade"), ["websocket"]);
        for gone in ["x-secret", "keep-alive", "proxy-authorization"] {
            assert!(!map.contains_key(gone), "{gone} crossed the proxy");
        }

        let mut response = headers(&[
            ("connection", "upgrade, x-backend-only"),
            ("upgrade", "websocket"),
            ("x-backend-only", "1"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ]);
        to_client(&mut response, true);
        assert_eq!(response["connection"], "Upgrade");
        assert_eq!(response["upgrade"], "websocket");
        assert!(!response.contains_key("x-backend-only"));
        assert!(response.contains_key("sec-websocket-accept"));
    }

    #[test]
    fn websocket_upgrade_detection() {
        let req = |version, conn: &str, upgrade: &str| {
            Request::builder()
                .version(version)
                .header("connection", conn)
                .header("upgrade", upgrade)
                .body(())
                .unwrap()
        };
        assert!(is_websocket_upgrade(&req(
            Version::HTTP_11,
            "Upgrade",
            "websocket"
        )));
        assert!(is_websocket_upgrade(&req(
            Version::HTTP_11,
            "keep-alive, upgrade",
            "WebSocket"
        )));
        assert!(!is_websocket_upgrade(&req(
            Version::HTTP_11,
            "keep-alive",
            "websocket"
        )));
        assert!(!is_websocket_upgrade(&req(
            Version::HTTP_11,
            "upgrade",
            "h2c"
        )));
        assert!(!is_websocket_upgrade(&req(
            Version::HTTP_10,
            "upgrade",
            "websocket"
        )));
    }
}
