//! The server side of the WebSocket opening handshake (RFC 6455 §4.2):
//! checking the client's upgrade request and building the `101` answer.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The only protocol version RFC 6455 defines.
const SUPPORTED_VERSION: &str = "13";

/// Why an upgrade request was refused (answered with `400`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum HandshakeError {
    #[error("a WebSocket handshake must be a GET request")]
    NotGet,
    #[error("a WebSocket handshake needs HTTP/1.1")]
    OldHttp,
    #[error("expected `Upgrade: websocket`")]
    NoUpgradeHeader,
    #[error("expected `Connection: Upgrade`")]
    NoConnectionUpgrade,
    #[error("unsupported Sec-WebSocket-Version (only 13 is supported)")]
    BadVersion,
    #[error("missing Sec-WebSocket-Key")]
    MissingKey,
    #[error("Sec-WebSocket-Key is not 16 bytes in base64")]
    BadKey,
}

/// Checks an upgrade request and returns the `Sec-WebSocket-Accept` value to answer with.
pub(crate) fn accept_key<B>(request: &Request<B>) -> Result<String, HandshakeError> {
    if request.method() != Method::GET {
        return Err(HandshakeError::NotGet);
    }
    if request.version() < Version::HTTP_11 {
        return Err(HandshakeError::OldHttp);
    }
    let headers = request.headers();
    if !has_token(headers, UPGRADE, "websocket") {
        return Err(HandshakeError::NoUpgradeHeader);
    }
    if !has_token(headers, CONNECTION, "upgrade") {
        return Err(HandshakeError::NoConnectionUpgrade);
    }
    let version = headers
        .get(SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes);
    if version.map(<[u8]>::trim_ascii) != Some(SUPPORTED_VERSION.as_bytes()) {
        return Err(HandshakeError::BadVersion);
    }
    let key = headers
        .get(SEC_WEBSOCKET_KEY)
        .ok_or(HandshakeError::MissingKey)?
        .as_bytes()
        .trim_ascii();
    match STANDARD.decode(key) {
        Ok(nonce) if nonce.len() == 16 => Ok(derive_accept_key(key)),
        _ => Err(HandshakeError::BadKey),
    }
}

/// The `101 Switching Protocols` answer completing the handshake.
pub(crate) fn switching_protocols<B: Default>(accept: &str) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(value) = HeaderValue::from_str(accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

/// Whether a comma-separated header (possibly repeated) lists `token`, ignoring case.
fn has_token(headers: &HeaderMap, name: http::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example handshake of RFC 6455 §1.3.
    fn valid() -> http::request::Builder {
        Request::get("/ws/chat")
            .header("Host", "localhost")
            .header("Upgrade", "websocket")
            .header("Connection", "keep-alive, Upgrade")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Sec-WebSocket-Version", "13")
    }

    #[test]
    fn accepts_the_rfc_example() {
        let request = valid().body(()).unwrap();
        assert_eq!(
            accept_key(&request).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn tokens_are_case_insensitive_and_may_repeat() {
        let request = Request::get("/ws/chat")
            .header("Upgrade", "WebSocket")
            .header("Connection", "keep-alive")
            .header("Connection", "UPGRADE")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Sec-WebSocket-Version", "13")
            .body(())
            .unwrap();
        assert!(accept_key(&request).is_ok());
    }

    /// The valid request with one header replaced (`Some`) or removed (`None`).
    fn valid_with(name: http::HeaderName, value: Option<&'static str>) -> Request<()> {
        let mut request = valid().body(()).unwrap();
        match value {
            Some(value) => request
                .headers_mut()
                .insert(name, HeaderValue::from_static(value)),
            None => request.headers_mut().remove(name),
        };
        request
    }

    #[test]
    fn refuses_bad_requests() {
        let cases = [
            (
                valid().method("POST").body(()).unwrap(),
                HandshakeError::NotGet,
            ),
            (
                valid().version(Version::HTTP_10).body(()).unwrap(),
                HandshakeError::OldHttp,
            ),
            (valid_with(UPGRADE, None), HandshakeError::NoUpgradeHeader),
            (
                valid_with(UPGRADE, Some("h2c")),
                HandshakeError::NoUpgradeHeader,
            ),
            (
                valid_with(CONNECTION, None),
                HandshakeError::NoConnectionUpgrade,
            ),
            (
                valid_with(SEC_WEBSOCKET_VERSION, Some("8")),
                HandshakeError::BadVersion,
            ),
            (
                valid_with(SEC_WEBSOCKET_VERSION, None),
                HandshakeError::BadVersion,
            ),
            (
                valid_with(SEC_WEBSOCKET_KEY, None),
                HandshakeError::MissingKey,
            ),
            (
                valid_with(SEC_WEBSOCKET_KEY, Some("c2hvcnQ=")),
                HandshakeError::BadKey,
            ),
            (
                valid_with(SEC_WEBSOCKET_KEY, Some("!!!")),
                HandshakeError::BadKey,
            ),
        ];
        for (request, expected) in cases {
            assert_eq!(accept_key(&request), Err(expected));
        }
    }

    #[test]
    fn builds_the_101() {
        let response: Response<()> = switching_protocols("abc=");
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(response.headers()[UPGRADE], "websocket");
        assert_eq!(response.headers()[CONNECTION], "Upgrade");
        assert_eq!(response.headers()[SEC_WEBSOCKET_ACCEPT], "abc=");
    }
}
