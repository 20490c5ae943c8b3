//! `--http2`: WebSockets as RFC 8441 streams of HTTP/2 connections, the way
//! browsers open them when the server offers it. Up to `--streams`
//! WebSockets share one connection (hyper's HTTP/2 client over TLS with
//! ALPN `h2`); the next one opens a new connection.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper::client::conn::http2::SendRequest;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Mutex;

use super::connect::Connector;
use super::error::{ErrorKind, Failure};
use super::plan::Target;

/// The HTTP/2 connections WebSockets are opened on.
pub struct H2Streams {
    per_connection: u32,
    /// The connection new streams go on, and how many it was given.
    current: Mutex<Option<(SendRequest<Empty<Bytes>>, u32)>>,
    /// `https://authority/path?query` of every extended CONNECT.
    uri: String,
}

impl H2Streams {
    pub fn new(target: &Target, per_connection: u32) -> H2Streams {
        H2Streams {
            per_connection: per_connection.max(1),
            current: Mutex::new(None),
            uri: format!("https://{}{}", target.authority, target.path_and_query),
        }
    }

    /// Open one WebSocket stream: an extended CONNECT answered `200`.
    /// Not time-limited by itself.
    pub async fn open(
        &self,
        connector: &Connector,
        headers: &http::HeaderMap,
    ) -> Result<TokioIo<Upgraded>, Failure> {
        let mut sender = {
            let mut current = self.current.lock().await;
            match current.as_mut() {
                Some((sender, opened)) if *opened < self.per_connection && !sender.is_closed() => {
                    *opened += 1;
                    sender.clone()
                }
                _ => {
                    let sender = connect(connector).await?;
                    *current = Some((sender.clone(), 1));
                    sender
                }
            }
        };
        sender
            .ready()
            .await
            .map_err(|e| Failure::new(ErrorKind::ClosedEarly, format!("HTTP/2 connection: {e}")))?;
        let mut request = Request::connect(self.uri.as_str())
            .extension(hyper::ext::Protocol::from_static("websocket"))
            .header("sec-websocket-version", "13")
            .body(Empty::new())
            .map_err(|e| Failure::new(ErrorKind::Other, format!("extended CONNECT: {e}")))?;
        for (name, value) in headers {
            // The HTTP/1.1 handshake's own headers have no place here.
            if !name.as_str().starts_with("sec-websocket-")
                && !matches!(name.as_str(), "host" | "connection" | "upgrade")
            {
                request.headers_mut().append(name, value.clone());
            }
        }
        let mut response = sender
            .send_request(request)
            .await
            .map_err(|e| Failure::new(ErrorKind::ClosedEarly, format!("extended CONNECT: {e}")))?;
        if response.status() != StatusCode::OK {
            return Err(Failure::new(
                ErrorKind::HandshakeStatus(response.status().as_u16()),
                format!(
                    "WebSocket over HTTP/2: server answered {} instead of 200",
                    response.status()
                ),
            ));
        }
        hyper::upgrade::on(&mut response)
            .await
            .map(TokioIo::new)
            .map_err(|e| Failure::new(ErrorKind::ClosedEarly, format!("WebSocket stream: {e}")))
    }
}

/// A new HTTP/2 connection, its driver running in a task of its own.
async fn connect(connector: &Connector) -> Result<SendRequest<Empty<Bytes>>, Failure> {
    let conn = connector.transport().await?;
    let h2 = match &conn {
        tokio_util::either::Either::Right(tls) => tls.get_ref().1.alpn_protocol() == Some(b"h2"),
        tokio_util::either::Either::Left(_) => false,
    };
    if !h2 {
        return Err(Failure::new(
            ErrorKind::Other,
            "the server did not choose HTTP/2 by ALPN (does it offer h2?)",
        ));
    }
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(conn))
        .await
        .map_err(|e| Failure::new(ErrorKind::Other, format!("HTTP/2 handshake: {e}")))?;
    tokio::spawn(connection);
    Ok(sender)
}
