//! Static files for `root` routes, with nginx `root` semantics: the file
//! served is `root` + the whole request path.
//!
//! hyper-staticfile does the HTTP work (`Content-Type` by extension, `ETag`,
//! `Last-Modified`, `If-Modified-Since`, `Range`, `HEAD`); this module adds
//! `If-None-Match` and makes sure no request ever reads outside `root`: a
//! path with a `..` segment (plain or percent-encoded) is refused, and the
//! file finally chosen is resolved through symlinks and must still lie
//! inside `root`. Every refusal is a plain 404, so a probe learns nothing.

use crate::body::ResponseBody;
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
}

impl StaticFiles {
    pub fn new(root: &Path) -> StaticFiles {
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        StaticFiles {
            resolver: Resolver::new(root.clone()),
            root,
        }
    }

    pub async fn serve<B>(&self, req: &Request<B>) -> Result<Response<ResponseBody>, ProxyError> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut response = Response::new(ResponseBody::text("405 method not allowed\n"));
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Ok(response);
        }
        let path = req.uri().path();
        if !is_safe(path) {
            return Ok(not_found());
        }
        let result = match self
            .resolver
            .resolve_path(path, AcceptEncoding::none())
            .await
        {
            Ok(result) => result,
            Err(e) => return Err(ProxyError::StaticFile(e)),
        };
        if let ResolveResult::Found(file) = &result
            && !self.contains(&file.path).await
        {
            return Ok(not_found());
        }
        // RFC 9110 §13.1.3: If-None-Match, when present, decides alone.
        let if_none_match = req.headers().get(header::IF_NONE_MATCH).cloned();
        let mut headers = req.headers().clone();
        if if_none_match.is_some() {
            headers.remove(header::IF_MODIFIED_SINCE);
        }
        let built = ResponseBuilder::new()
            .request_parts(req.method(), req.uri(), &headers)
            .build(result);
        let response = match built {
            Ok(response) => response,
            Err(_) => return Ok(not_found()),
        };
        let (mut parts, body) = response.into_parts();
        if parts.status == StatusCode::NOT_FOUND {
            return Ok(not_found());
        }
        if parts.status == StatusCode::OK
            && etag_matches(if_none_match.as_ref(), parts.headers.get(header::ETAG))
        {
            parts.status = StatusCode::NOT_MODIFIED;
            keep_validators(&mut parts.headers);
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

fn not_found() -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::text("404 not found\n"));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
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
