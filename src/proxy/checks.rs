//! Which request heads are served at all: a pure function of the head,
//! run before routing, so nothing it refuses reaches an upstream.
//!
//! hyper's HTTP/1.1 parser already refuses, with an empty `400`, a broken
//! request line, obsolete line folding, NUL, bare CR or DEL in a header, a
//! space before a header's colon, `Transfer-Encoding` on HTTP/1.0 or whose
//! last coding is not `chunked`, a `Content-Length` that is not one number
//! (`+2`, `2, 2`) and two `Content-Length`s that disagree. With both
//! `Transfer-Encoding: chunked` and `Content-Length` it drops the length,
//! reads the body as chunked and closes the connection after the response
//! (RFC 9112 §6.1). What it lets through and this module refuses, with `400`
//! and a body naming the cause (RFC 9112 §3.2, §3.2.2, §7; RFC 9110 §4.2.4):
//!
//! - a second `Host` header;
//! - an HTTP/1.1 request without `Host`, or with an empty one;
//! - a `Host` that is not `host[:port]` (spaces, `user@`, …);
//! - an absolute-form target whose authority disagrees with `Host`, or
//!   carries `user@`, or whose scheme is not `http`/`https`;
//! - a target that is not origin-form (`/…`), absolute-form or `*` with
//!   `OPTIONS` (`GET no-slash`, `GET host:80`, `GET *`);
//! - `chunked` more than once in `Transfer-Encoding`;
//! - a head over [`MAX_HEAD`] (`431`).
//!
//! HTTP/2 requests (whose target is always absolute) pass through the same
//! function; an RFC 8441 `CONNECT` carrying `:protocol` has a path and is
//! let through.

use super::MAX_HEAD;
use crate::error::{self, ProxyError};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Uri, Version};

/// What the checks learnt of a head that passed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The host the request is for: the absolute-form target's authority,
    /// else `Host`.
    pub host: Option<HeaderValue>,
    /// `OPTIONS *`: a question for the server as a whole, routed as `/`.
    pub asterisk: bool,
}

/// Check a request head; `Err` is the answer the client gets.
pub fn check<B>(req: &Request<B>) -> Result<Checked, ProxyError> {
    check_head(req.method(), req.uri(), req.version(), req.headers())
}

/// [`check`] on the head's parts.
pub fn check_head(
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
) -> Result<Checked, ProxyError> {
    let size = head_size(method, uri, headers);
    if size > MAX_HEAD {
        return Err(ProxyError::HeadTooLarge {
            size,
            limit: MAX_HEAD,
        });
    }
    let bad = |why: &'static str| Err(ProxyError::BadRequest(why));
    let mut hosts = headers.get_all(header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return bad(error::TWO_HOSTS);
    }
    if let Some(host) = host_header
        && !is_host(host.as_bytes())
    {
        return bad(error::BAD_HOST);
    }
    let asterisk = uri.scheme().is_none() && uri.authority().is_none() && uri.path() == "*";
    let host = match (uri.scheme(), uri.authority()) {
        // Absolute-form: the target's authority is the host (RFC 9112 §3.2.2).
        (Some(scheme), Some(authority)) => {
            let secure = match scheme.as_str() {
                s if s.eq_ignore_ascii_case("http") => false,
                s if s.eq_ignore_ascii_case("https") => true,
                _ => return bad(error::BAD_TARGET),
            };
            if authority.as_str().contains('@') || authority.host().is_empty() {
                return bad(error::BAD_TARGET);
            }
            if let Some(host) = host_header
                && !same_authority(authority.as_str(), host.as_bytes(), secure)
            {
                return bad(error::HOST_DISAGREES);
            }
            HeaderValue::from_str(authority.as_str()).ok()
        }
        // Authority-form (`host:port`) is only for CONNECT, which a reverse
        // proxy does not relay; HTTP/2 sends plain CONNECT the same way.
        (None, Some(_)) | (Some(_), None) => return bad(error::BAD_TARGET),
        (None, None) => {
            if asterisk {
                if method != Method::OPTIONS {
                    return bad(error::BAD_TARGET);
                }
            } else if !uri.path().starts_with('/') {
                return bad(error::BAD_TARGET);
            }
            host_header.cloned()
        }
    };
    match &host {
        None if version == Version::HTTP_11 => return bad(error::MISSING_HOST),
        Some(h) if h.is_empty() && version != Version::HTTP_10 => {
            return bad(error::MISSING_HOST);
        }
        _ => {}
    }
    if chunked_more_than_once(headers) {
        return bad(error::BAD_TRANSFER_ENCODING);
    }
    Ok(Checked { host, asterisk })
}

/// The bytes of a registered name or IPv4 address (RFC 3986 §3.2.2:
/// unreserved, sub-delims and `%`), as a table: this runs on every request.
const REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        b += 1;
    }
    table
};

/// Whether `value` is `host[:port]`: a registered name, an IPv4 address or
/// a bracketed IPv6 literal, then digits. Empty is allowed here (HTTP/1.0).
fn is_host(value: &[u8]) -> bool {
    let (host, port) = match value.first() {
        Some(b'[') => match value.iter().position(|&b| b == b']') {
            Some(end) => {
                let literal = &value[1..end];
                if literal.is_empty()
                    || !literal
                        .iter()
                        .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
                {
                    return false;
                }
                match &value[end + 1..] {
                    [] => (&value[..0], None),
                    [b':', port @ ..] => (&value[..0], Some(port)),
                    _ => return false,
                }
            }
            None => return false,
        },
        _ => match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
            None => (value, None),
        },
    };
    let name_ok = host.iter().all(|&b| REG_NAME[b as usize]);
    let port_ok = port.is_none_or(|p| p.len() <= 5 && p.iter().all(u8::is_ascii_digit));
    name_ok && port_ok
}

/// Whether an absolute-form authority and a `Host` name the same place:
/// case-insensitive, the scheme's default port written or not.
fn same_authority(authority: &str, host: &[u8], secure: bool) -> bool {
    let default = if secure { &b":443"[..] } else { b":80" };
    let strip = |v: &'_ [u8]| -> Vec<u8> {
        let v = v.strip_suffix(default).unwrap_or(v);
        v.to_ascii_lowercase()
    };
    strip(authority.as_bytes()) == strip(host)
}

/// Whether `chunked` appears more than once among the `Transfer-Encoding`
/// codings (RFC 9112 §7: a sender must not apply it twice). hyper has
/// already refused any list whose last coding is not `chunked`.
fn chunked_more_than_once(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::TRANSFER_ENCODING).iter();
    let Some(first) = values.next() else {
        return false;
    };
    // The usual case: one header holding `chunked` alone.
    if first.as_bytes().eq_ignore_ascii_case(b"chunked") && values.next().is_none() {
        return false;
    }
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        .count()
        > 1
}

/// The size of a request head as it crossed the wire, near enough.
fn head_size(method: &Method, uri: &Uri, headers: &HeaderMap) -> usize {
    let target = uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len() + 3)
        + uri.scheme_str().map_or(0, str::len);
    let line = method.as_str().len() + target + 12;
    headers.iter().fold(line, |n, (name, value)| {
        n + name.as_str().len() + value.len() + 4
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, target: &str, version: Version, headers: &[(&str, &str)]) -> String {
        let mut req = Request::builder()
            .method(method)
            .uri(target)
            .version(version);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(()).unwrap();
        match check(&req) {
            Ok(Checked { host, asterisk }) => format!(
                "ok host={} asterisk={asterisk}",
                host.map_or("-".to_string(), |h| h.to_str().unwrap().to_string())
            ),
            Err(e) => e.to_string(),
        }
    }

    fn h11(method: &str, target: &str, headers: &[(&str, &str)]) -> String {
        head(method, target, Version::HTTP_11, headers)
    }

    #[test]
    fn ordinary_requests_pass() {
        assert_eq!(
            h11("GET", "/chat?x=1", &[("host", "chat.example.com")]),
            "ok host=chat.example.com asterisk=false"
        );
        assert_eq!(
            h11("GET", "/", &[("host", "[::1]:8080")]),
            "ok host=[::1]:8080 asterisk=false"
        );
        assert_eq!(
            h11("GET", "/", &[("host", "127.0.0.1:80")]),
            "ok host=127.0.0.1:80 asterisk=false"
        );
        assert_eq!(
            head("GET", "/", Version::HTTP_10, &[]),
            "ok host=- asterisk=false"
        );
        assert_eq!(
            h11("OPTIONS", "*", &[("host", "a")]),
            "ok host=a asterisk=true"
        );
        assert_eq!(
            h11(
                "POST",
                "/",
                &[("host", "a"), ("transfer-encoding", "chunked")]
            ),
            "ok host=a asterisk=false"
        );
    }

    #[test]
    fn two_hosts_are_refused() {
        assert_eq!(
            h11("GET", "/", &[("host", "a"), ("host", "b")]),
            "malformed request: two Host headers"
        );
        assert_eq!(
            h11("GET", "/", &[("host", "a"), ("host", "a")]),
            "malformed request: two Host headers"
        );
    }

    #[test]
    fn hosts_must_be_host_and_port() {
        for bad in [
            "a b", "a@b", "a:b", "a:123456", "[::1", "[zz]", "[::1]x", "a/b",
        ] {
            assert_eq!(
                h11("GET", "/", &[("host", bad)]),
                "malformed request: Host is not host[:port]",
                "{bad}"
            );
        }
        assert_eq!(
            h11("GET", "/", &[("host", "")]),
            "malformed request: missing Host header"
        );
        assert_eq!(
            h11("GET", "/", &[]),
            "malformed request: missing Host header"
        );
    }

    #[test]
    fn absolute_form_must_agree_with_host() {
        assert_eq!(
            h11("GET", "http://b/x", &[("host", "a")]),
            "malformed request: Host disagrees with the request target"
        );
        assert_eq!(
            h11("GET", "http://A:80/x", &[("host", "a")]),
            "ok host=A:80 asterisk=false"
        );
        assert_eq!(
            h11("GET", "https://a/x", &[("host", "a:443")]),
            "ok host=a asterisk=false"
        );
        assert_eq!(h11("GET", "http://a/x", &[]), "ok host=a asterisk=false");
        assert_eq!(
            h11("GET", "http://u@a/x", &[("host", "a")]),
            "malformed request: the request target is not /path, an absolute URL or * (OPTIONS)"
        );
        assert_eq!(
            h11("GET", "ftp://a/x", &[("host", "a")]),
            "malformed request: the request target is not /path, an absolute URL or * (OPTIONS)"
        );
    }

    #[test]
    fn other_target_forms_are_refused() {
        let target_error =
            "malformed request: the request target is not /path, an absolute URL or * (OPTIONS)";
        for (method, target) in [
            ("GET", "no-slash"),
            ("GET", "a:80"),
            ("CONNECT", "a:443"),
            ("GET", "*"),
        ] {
            assert_eq!(
                h11(method, target, &[("host", "a")]),
                target_error,
                "{method} {target}"
            );
        }
    }

    #[test]
    fn http2_extended_connect_passes() {
        assert_eq!(
            head("CONNECT", "https://a/ws", Version::HTTP_2, &[]),
            "ok host=a asterisk=false"
        );
        assert_eq!(
            head("GET", "https://a/", Version::HTTP_2, &[("host", "b")]),
            "malformed request: Host disagrees with the request target"
        );
    }

    #[test]
    fn chunked_twice_is_refused() {
        for te in [&["chunked", "chunked"][..], &["chunked, chunked"][..]] {
            let mut headers = vec![("host", "a")];
            headers.extend(te.iter().map(|v| ("transfer-encoding", *v)));
            assert_eq!(
                h11("POST", "/", &headers),
                "malformed request: chunked more than once in Transfer-Encoding"
            );
        }
    }

    proptest::proptest! {
        /// Any target and `Host` headers: an answer, never a panic; what
        /// passes has at most one `Host`, a host on HTTP/1.1, and a target
        /// that is a path, a URL or `OPTIONS *`.
        #[test]
        fn any_head_gets_an_answer(
            target in "[ -~]{0,40}",
            hosts in proptest::collection::vec("[ -~]{0,20}", 0..3),
            options in proptest::bool::ANY,
        ) {
            let Ok(uri) = target.parse::<Uri>() else { return Ok(()) };
            let mut headers = HeaderMap::new();
            for host in &hosts {
                if let Ok(value) = HeaderValue::from_str(host) {
                    headers.append(header::HOST, value);
                }
            }
            let method = if options { Method::OPTIONS } else { Method::GET };
            if let Ok(checked) = check_head(&method, &uri, Version::HTTP_11, &headers) {
                proptest::prop_assert!(headers.get_all(header::HOST).iter().count() <= 1);
                proptest::prop_assert!(checked.host.as_ref().is_some_and(|h| !h.is_empty()));
                proptest::prop_assert!(
                    uri.path().starts_with('/') || uri.scheme().is_some() || (options && checked.asterisk)
                );
            }
        }
    }

    #[test]
    fn huge_heads_are_431() {
        let big = "x".repeat(MAX_HEAD);
        assert!(h11("GET", "/", &[("host", "a"), ("x-big", &big)]).contains("over the"));
    }
}
