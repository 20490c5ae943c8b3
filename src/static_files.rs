//! Static files for `root` routes, with nginx `root` semantics: the file
//! served is `root` + the whole request path.
//!
//! hyper-staticfile does the HTTP work (`Content-Type` by extension, `ETag`,
//! `Last-Modified`, `If-Modified-Since`, `Range`, `HEAD`); this module adds
//! `If-None-Match` and makes sure no request ever reads outside `root`: a
//! path with a `..` segment (plain or percent-encoded) is refused, and the
//! file finally chosen is resolved through symlinks and must still lie
//! inside `root`. Every refusal is a plain 404, so a probe learns nothing.
//!
//! `HEAD` is answered with the headers `GET` would get (hyper-staticfile
//! leaves out `Content-Type` and `Content-Encoding` for `HEAD`, so the file
//! is resolved as for `GET` and the body left out), and a single-range
//! `206` carries the file's `Content-Type` too. With `compress`, a file
//! with a precompressed `FILE.br` or `FILE.gz` beside it is served from
//! that file when the client accepts the encoding, and every answer of a
//! compressible type says `Vary: Accept-Encoding`.

use crate::body::ResponseBody;
use crate::compress::{self, Accepted, Coding};
use crate::error::ProxyError;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper_staticfile::{AcceptEncoding, ResolveResult, Resolver, ResponseBuilder};
use std::path::{Path, PathBuf};

/// One static route's folder.
pub struct StaticFiles {
    /// `root` with symlinks resolved.
    root: PathBuf,
    resolver: Resolver,
    /// Look for precompressed `FILE.br` / `FILE.gz` (the route compresses).
    precompressed: bool,
}

impl StaticFiles {
    pub fn new(root: &Path, precompressed: bool) -> StaticFiles {
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        StaticFiles {
            resolver: Resolver::new(root.clone()),
            root,
            precompressed,
        }
    }

    /// Answer `req`; `accepted`: the encodings the client takes.
    pub async fn serve<B>(
        &self,
        req: &Request<B>,
        accepted: Accepted,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(ProxyError::MethodNotAllowed);
        }
        let path = req.uri().path();
        if !is_safe(path) {
            return Err(ProxyError::FileNotFound);
        }
        let encodings = match accepted.best {
            _ if !self.precompressed => AcceptEncoding::none(),
            None => AcceptEncoding::none(),
            Some(Coding::Br) => AcceptEncoding {
                br: true,
                gzip: accepted.gzip,
            },
            Some(Coding::Gzip) => AcceptEncoding {
                br: false,
                gzip: true,
            },
        };
        let result = match self.resolver.resolve_path(path, encodings).await {
            Ok(result) => result,
            Err(e) => return Err(ProxyError::StaticFile(e)),
        };
        if let ResolveResult::Found(file) = &result
            && !self.contains(&file.path).await
        {
            return Err(ProxyError::FileNotFound);
        }
        let head = req.method() == Method::HEAD;
        // hyper-staticfile leaves it out of single-range answers.
        let content_type = match &result {
            ResolveResult::Found(file) => file.content_type.clone(),
            _ => None,
        };
        // RFC 9110 §13.1.3: If-None-Match, when present, decides alone.
        let if_none_match = req.headers().get(header::IF_NONE_MATCH).cloned();
        let mut headers = req.headers().clone();
        if if_none_match.is_some() {
            headers.remove(header::IF_MODIFIED_SINCE);
        }
        // Built as for GET, so HEAD gets every header GET gets.
        let built = ResponseBuilder::new()
            .request_parts(&Method::GET, req.uri(), &headers)
            .build(result);
        let response = match built {
            Ok(response) => response,
            Err(_) => return Err(ProxyError::FileNotFound),
        };
        let (mut parts, body) = response.into_parts();
        if parts.status == StatusCode::NOT_FOUND {
            return Err(ProxyError::FileNotFound);
        }
        if parts.status == StatusCode::PARTIAL_CONTENT
            && !parts.headers.contains_key(header::CONTENT_TYPE)
            && let Some(value) = content_type.and_then(|t| HeaderValue::from_str(&t).ok())
        {
            parts.headers.insert(header::CONTENT_TYPE, value);
        }
        if self.precompressed
            && (parts.headers.contains_key(header::CONTENT_ENCODING)
                || parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|t| t.to_str().ok())
                    .is_some_and(compress::compressible_type))
        {
            compress::add_vary(&mut parts.headers);
        }
        if parts.status == StatusCode::OK
            && etag_matches(if_none_match.as_ref(), parts.headers.get(header::ETAG))
        {
            parts.status = StatusCode::NOT_MODIFIED;
            keep_validators(&mut parts.headers);
            return Ok(Response::from_parts(parts, ResponseBody::empty()));
        }
        if head {
            return Ok(Response::from_parts(parts, ResponseBody::empty()));
        }
        Ok(Response::from_parts(parts, ResponseBody::static_file(body)))
    }

    /// Whether `relative` (as resolved under root) really lies inside root
    /// once symlinks are followed.
    async fn contains(&self, relative: &Path) -> bool {
        match tokio::fs::canonicalize(self.root.join(relative)).await {
            Ok(real) => real.starts_with(&self.root),
            Err(_) => false,
        }
    }
}

/// Refuse any path that, decoded, has a `..` segment, a backslash or a NUL.
pub fn is_safe(path: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    !decoded.contains(['\\', '\0']) && decoded.split('/').all(|segment| segment != "..")
}

/// `If-None-Match` against the file's `ETag` (weak comparison, `*` matches).
fn etag_matches(if_none_match: Option<&HeaderValue>, etag: Option<&HeaderValue>) -> bool {
    let (Some(wanted), Some(etag)) = (if_none_match, etag) else {
        return false;
    };
    let (Ok(wanted), Ok(etag)) = (wanted.to_str(), etag.to_str()) else {
        return false;
    };
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_string();
    let etag = opaque(etag);
    wanted
        .split(',')
        .any(|tag| tag.trim() == "*" || opaque(tag) == etag)
}

/// A 304 keeps the validators and drops the body's description.
fn keep_validators(headers: &mut HeaderMap) {
    for name in [
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
        header::CONTENT_RANGE,
        header::ACCEPT_RANGES,
        header::CONTENT_ENCODING,
    ] {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_dot_is_refused_in_any_spelling() {
        assert!(is_safe("/static/app.js"));
        assert!(is_safe("/static/a..b/c"));
        assert!(!is_safe("/static/../etc/passwd"));
        assert!(!is_safe("/static/%2e%2e/etc/passwd"));
        assert!(!is_safe("/static/%2E%2E/etc/passwd"));
        assert!(!is_safe("/static/..%2fetc/passwd"));
        assert!(!is_safe("/static/..%5cetc"));
        assert!(!is_safe("/static/a%00b"));
    }

    #[test]
    fn etags_compare_weakly() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        let etag = v("W/\"1-2.3\"");
        assert!(etag_matches(Some(&v("W/\"1-2.3\"")), Some(&etag)));
        assert!(etag_matches(Some(&v("\"1-2.3\"")), Some(&etag)));
        assert!(etag_matches(Some(&v("\"x\", W/\"1-2.3\"")), Some(&etag)));
        assert!(etag_matches(Some(&v("*")), Some(&etag)));
        assert!(!etag_matches(Some(&v("\"other\"")), Some(&etag)));
        assert!(!etag_matches(None, Some(&etag)));
    }
}
