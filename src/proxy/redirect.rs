//! Answering a request on a `redirect` route: the target from the route's
//! template (see [`crate::redirect`]), as `Location`, with the route's
//! status and a one-line plain-text body naming the target.

use crate::body::ResponseBody;
use crate::config::RedirectRoute;
use crate::error::{BAD_HOST, MISSING_HOST, ProxyError};
use crate::redirect::{Refusal, Request};
use crate::router::strip_port;
use bytes::Bytes;
use http::Response;
use http::header::{self, HeaderValue};

/// The redirect for a request to `host` (as sent, port allowed) and `uri`.
pub fn answer(
    route: &RedirectRoute,
    host: Option<&HeaderValue>,
    uri: &http::Uri,
) -> Result<Response<ResponseBody>, ProxyError> {
    let host = match host.map(HeaderValue::to_str) {
        None => None,
        Some(Ok(host)) => Some(strip_port(host)),
        Some(Err(_)) => return Err(ProxyError::BadRequest(BAD_HOST)),
    };
    let target = route
        .to
        .render(Request {
            host,
            path: uri.path(),
            query: uri.query(),
        })
        .map_err(|refusal| {
            ProxyError::BadRequest(match refusal {
                Refusal::NoHost => MISSING_HOST,
                Refusal::BadHost => BAD_HOST,
            })
        })?;
    // The template is ASCII without controls, the path and query come
    // from a parsed request line: the target is a valid header value.
    let location = HeaderValue::from_str(&target).map_err(|_| ProxyError::BadRequest(BAD_HOST))?;
    let body = format!(
        "{} {}: {target}\n",
        route.status.as_u16(),
        route
            .status
            .canonical_reason()
            .unwrap_or("redirect")
            .to_ascii_lowercase()
    );
    let mut response = Response::new(ResponseBody::bytes(Bytes::from(body)));
    *response.status_mut() = route.status;
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}
