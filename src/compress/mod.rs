//! `compress = true`: which responses are compressed, with which encoding,
//! and how their headers change. The policy is pure and unit-tested here;
//! the streaming encoder is [`body`].
//!
//! A response is *eligible* when its type is compressible (`text/*` but
//! `text/event-stream`, JSON, JavaScript, XML, SVG, WebAssembly text
//! formats…), it is not already encoded, it is at least [`MIN_SIZE`] (when
//! its length is known; a streamed body of unknown length is eligible), it
//! has a body (not `204`, `206`, `304`) and it does not say
//! `Cache-Control: no-transform`. Every eligible response gets
//! `Vary: Accept-Encoding`, compressed or not, so caches keep the two
//! apart. It is compressed with the best encoding the client's
//! `Accept-Encoding` allows: `br`, then `gzip`, by q-value (RFC 9110
//! §12.5.3); a tie goes to `br`.

pub mod body;

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};

/// Responses smaller than this are not worth compressing: the encoding's
/// own framing eats most of the gain (nginx's `gzip_min_length` idea).
pub const MIN_SIZE: u64 = 1024;

/// A content coding the proxy can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Br,
    Gzip,
}

impl Coding {
    pub fn as_str(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }
}

/// What a request's `Accept-Encoding` allows of the codings the proxy has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accepted {
    /// The best of them, if any.
    pub best: Option<Coding>,
    pub br: bool,
    pub gzip: bool,
}

/// Read `Accept-Encoding` (every such header of the request).
pub fn negotiate(request: &HeaderMap) -> Accepted {
    let (mut br, mut gzip, mut any) = (None, None, None);
    for value in request.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let mut q = Some(1.0);
            for param in parts {
                let param = param.trim();
                if let Some(v) = param
                    .strip_prefix("q=")
                    .or_else(|| param.strip_prefix("Q="))
                {
                    q = parse_q(v);
                }
            }
            let Some(q) = q else { continue };
            let slot = if coding.eq_ignore_ascii_case("br") {
                &mut br
            } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                &mut gzip
            } else if coding == "*" {
                &mut any
            } else {
                continue;
            };
            *slot = Some(q);
        }
    }
    let (br, gzip) = (br.or(any).unwrap_or(0.0), gzip.or(any).unwrap_or(0.0));
    let best = if br <= 0.0 && gzip <= 0.0 {
        None
    } else if br >= gzip {
        Some(Coding::Br)
    } else {
        Some(Coding::Gzip)
    };
    Accepted {
        best,
        br: br > 0.0,
        gzip: gzip > 0.0,
    }
}

/// A q-value: `0` to `1`, at most three decimals; anything else is not one.
fn parse_q(text: &str) -> Option<f32> {
    let q: f32 = text.trim().parse().ok()?;
    (0.0..=1.0).contains(&q).then_some(q)
}

/// Whether a response may be compressed at all (see the module docs).
/// `HEAD` answers are judged like the `GET` they describe. `length`: the
/// body's length, when known (its `Content-Length`, or a body the proxy
/// made itself).
pub fn eligible(status: StatusCode, headers: &HeaderMap, length: Option<u64>) -> bool {
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status == StatusCode::SWITCHING_PROTOCOLS
    {
        return false;
    }
    if headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return false;
    }
    if headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
        })
    }) {
        return false;
    }
    if length.is_some_and(|n| n < MIN_SIZE) {
        return false;
    }
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(compressible_type)
}

/// Whether a `Content-Type` names a type that compresses well. Runs on
/// every response of a compressing route: no allocation.
pub fn compressible_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    let is = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let any = |list: &[&str]| list.iter().any(|t| is(sub, t));
    if is(kind, "text") {
        // Server-sent events are a stream of small messages: an encoder
        // would hold them back until its buffer fills.
        return !is(sub, "event-stream");
    }
    if is(kind, "application") {
        let suffix = |s: &str| {
            sub.len() > s.len()
                && sub.is_char_boundary(sub.len() - s.len())
                && is(&sub[sub.len() - s.len()..], s)
        };
        return any(&[
            "json",
            "javascript",
            "x-javascript",
            "ecmascript",
            "xml",
            "wasm",
            "x-ndjson",
        ]) || suffix("+json")
            || suffix("+xml");
    }
    if is(kind, "image") {
        return any(&["svg+xml", "x-icon", "vnd.microsoft.icon", "bmp"]);
    }
    if is(kind, "font") {
        return any(&["ttf", "otf"]);
    }
    false
}

/// Add `Accept-Encoding` to the response's `Vary` unless it is there
/// already (or `Vary: *`).
pub fn add_vary(headers: &mut HeaderMap) {
    let present = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|t| {
                let t = t.trim();
                t == "*" || t.eq_ignore_ascii_case("accept-encoding")
            })
        })
    });
    if !present {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// Rewrite the head of a response about to be compressed with `coding`:
/// the length is no longer known, ranges no longer apply, and a strong
/// `ETag` becomes weak (the bytes differ, the meaning does not), as nginx
/// does.
pub fn encode_head(headers: &mut HeaderMap, coding: Coding) {
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.as_str()),
    );
    if let Some(etag) = headers.get(header::ETAG)
        && !etag.as_bytes().starts_with(b"W/")
    {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(etag.as_bytes());
        if let Ok(weak) = HeaderValue::from_bytes(&weak) {
            headers.insert(header::ETAG, weak);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(values: &[&str]) -> Option<Coding> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        negotiate(&headers).best
    }

    #[test]
    fn br_then_gzip_by_q_value() {
        assert_eq!(accept(&["gzip, deflate, br"]), Some(Coding::Br));
        assert_eq!(accept(&["gzip"]), Some(Coding::Gzip));
        assert_eq!(accept(&["x-gzip"]), Some(Coding::Gzip));
        assert_eq!(accept(&["br;q=0.5, gzip;q=0.8"]), Some(Coding::Gzip));
        assert_eq!(accept(&["br;q=0.8, gzip;q=0.8"]), Some(Coding::Br));
        assert_eq!(accept(&["br;q=0, gzip"]), Some(Coding::Gzip));
        assert_eq!(accept(&["gzip;q=0, br;q=0"]), None);
        assert_eq!(accept(&["deflate"]), None);
        assert_eq!(accept(&["identity"]), None);
        assert_eq!(accept(&[]), None);
        assert_eq!(accept(&["*"]), Some(Coding::Br));
        assert_eq!(accept(&["*;q=0.5, br;q=0"]), Some(Coding::Gzip));
        assert_eq!(accept(&["gzip", "br"]), Some(Coding::Br));
        assert_eq!(accept(&["GZIP ; Q=0.9"]), Some(Coding::Gzip));
        // A q-value that is not one does not count as acceptance.
        assert_eq!(accept(&["br;q=2, gzip"]), Some(Coding::Gzip));
    }

    fn response(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn only_big_enough_compressible_unencoded_bodies() {
        let get = |status: u16, pairs: &[(&str, &str)]| {
            let headers = response(pairs);
            let length = headers
                .get("content-length")
                .map(|v| v.to_str().unwrap().parse().unwrap());
            eligible(StatusCode::from_u16(status).unwrap(), &headers, length)
        };
        let json = ("content-type", "application/json");
        assert!(get(200, &[json, ("content-length", "20480")]));
        assert!(get(200, &[json]), "unknown length: streamed, eligible");
        assert!(get(
            404,
            &[
                ("content-type", "text/html; charset=utf-8"),
                ("content-length", "4096")
            ]
        ));
        assert!(!get(200, &[json, ("content-length", "1023")]));
        assert!(get(200, &[json, ("content-length", "1024")]));
        assert!(!get(200, &[("content-type", "image/png")]));
        assert!(!get(200, &[("content-type", "application/octet-stream")]));
        assert!(!get(200, &[]), "no type: not compressed");
        assert!(!get(200, &[json, ("content-encoding", "gzip")]));
        assert!(get(200, &[json, ("content-encoding", "identity")]));
        assert!(!get(
            200,
            &[json, ("cache-control", "public, no-transform")]
        ));
        assert!(!get(206, &[json]));
        assert!(!get(304, &[json]));
        assert!(!get(204, &[json]));
        assert!(!get(200, &[("content-type", "text/event-stream")]));
    }

    #[test]
    fn compressible_types() {
        for t in [
            "text/html",
            "text/css",
            "text/plain; charset=utf-8",
            "application/javascript",
            "text/javascript; charset=utf-8",
            "application/json",
            "application/problem+json",
            "application/xml",
            "application/atom+xml",
            "image/svg+xml",
            "Application/JSON",
        ] {
            assert!(compressible_type(t), "{t}");
        }
        for t in [
            "image/png",
            "image/jpeg",
            "video/mp4",
            "application/zip",
            "font/woff2",
            "bogus",
        ] {
            assert!(!compressible_type(t), "{t}");
        }
    }

    #[test]
    fn heads_are_rewritten() {
        let mut headers = response(&[
            ("content-length", "5000"),
            ("accept-ranges", "bytes"),
            ("etag", "\"abc\""),
            ("vary", "Origin"),
        ]);
        encode_head(&mut headers, Coding::Br);
        add_vary(&mut headers);
        assert!(!headers.contains_key("content-length"));
        assert!(!headers.contains_key("accept-ranges"));
        assert_eq!(headers["content-encoding"], "br");
        assert_eq!(headers["etag"], "W/\"abc\"");
        let vary: Vec<_> = headers.get_all("vary").iter().collect();
        assert_eq!(vary, ["Origin", "Accept-Encoding"]);
        add_vary(&mut headers);
        assert_eq!(headers.get_all("vary").iter().count(), 2, "not added twice");

        let mut weak = response(&[("etag", "W/\"x\""), ("vary", "accept-encoding, origin")]);
        encode_head(&mut weak, Coding::Gzip);
        add_vary(&mut weak);
        assert_eq!(weak["etag"], "W/\"x\"");
        assert_eq!(weak.get_all("vary").iter().count(), 1);
    }
}
