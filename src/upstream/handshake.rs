//! The upstream leg of a WebSocket handshake, without an HTTP client in
//! the way: the request head is written straight into one buffer and sent
//! in one write, the answer's head is read with `httparse`, and on a `101`
//! the socket goes to the tunnel with whatever the server sent right behind
//! its head.
//!
//! Any other answer must reach the client as an ordinary response, body
//! and all, however the server delimits it (length, chunks, close). For
//! that rare case the connection, with the bytes already read put back in
//! front, is handed to hyper's client, which parses the answer again as the
//! response to a request it believes it is sending (its writes go nowhere:
//! the real request went out already). So hyper's full message handling
//! costs nothing on the path of every handshake, and the odd `426` is still
//! read by the parser every other response goes through.

use super::Outgoing;
use crate::body::RequestBody;
use crate::io::UpstreamStream;
use crate::timer::Timeout;
use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The largest response head read (the same bound hyper's client keeps).
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header lines in a response head.
const MAX_HEADERS: usize = 100;
/// The first read's buffer: a `101` head is a few hundred bytes.
const FIRST_READ: usize = 2048;

/// What the server answered.
pub enum Exchanged {
    /// `101 Switching Protocols`: the head, the connection, and the bytes
    /// the server sent behind the head.
    Switched {
        head: http::response::Parts,
        stream: UpstreamStream,
        early: Bytes,
    },
    /// Anything else, as a response whose body is still to be read.
    Other(Response<Incoming>),
}

/// Why there is no answer.
#[derive(Debug)]
pub enum Failure {
    Io(io::Error),
    /// No complete head within `read_timeout`.
    TimedOut,
    /// Something that is not an HTTP/1.1 response head.
    Malformed(String),
    /// hyper could not read the non-`101` answer again.
    Replay(hyper::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Io(e) => write!(f, "{e}"),
            Failure::TimedOut => f.write_str("no response head in time"),
            Failure::Malformed(why) => write!(f, "bad response head: {why}"),
            Failure::Replay(e) => write!(f, "{e}"),
        }
    }
}

/// Send `request` (a head without body) and read the answer's head,
/// waiting at most `read_timeout` for it.
pub async fn exchange(
    mut stream: UpstreamStream,
    request: &Outgoing,
    read_timeout: Duration,
) -> Result<Exchanged, Failure> {
    let head = write_head(request);
    stream.write_all(&head).await.map_err(Failure::Io)?;
    let mut buf = BytesMut::with_capacity(FIRST_READ);
    let mut timeout = Timeout::after(read_timeout);
    loop {
        if read_more(&mut stream, &mut buf, &mut timeout).await? == 0 {
            return Err(Failure::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a response head",
            )));
        }
        // Interim answers (100 Continue, 103 Early Hints) are skipped.
        loop {
            match parse(&buf)? {
                None => break,
                Some(Parsed::Interim(len)) => {
                    let _ = buf.split_to(len);
                }
                Some(Parsed::Switched(head, len)) => {
                    let early = buf.split_off(len).freeze();
                    return Ok(Exchanged::Switched {
                        head,
                        stream,
                        early,
                    });
                }
                Some(Parsed::Other) => {
                    // Boxed: hyper's client is large, and every handshake's
                    // future would carry it otherwise.
                    return Box::pin(replay(stream, buf.freeze(), request)).await;
                }
            }
        }
        if buf.len() > MAX_HEAD {
            return Err(Failure::Malformed(format!(
                "response head over {} KiB",
                MAX_HEAD / 1024
            )));
        }
    }
}

/// Read what the server sent next into `buf`, within `timeout`.
async fn read_more(
    stream: &mut UpstreamStream,
    buf: &mut BytesMut,
    timeout: &mut Timeout,
) -> Result<usize, Failure> {
    if buf.capacity() - buf.len() < 512 {
        buf.reserve(FIRST_READ);
    }
    std::future::poll_fn(|cx| {
        let read = tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, buf);
        if let Poll::Ready(result) = read {
            return Poll::Ready(result.map_err(Failure::Io));
        }
        match Pin::new(&mut *timeout).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Failure::TimedOut)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// The request head as HTTP/1.1 bytes, in one buffer.
fn write_head(request: &Outgoing) -> Vec<u8> {
    let path = request.path_and_query.as_str();
    let size = request.headers.iter().fold(
        request.method.as_str().len() + path.len() + 16,
        |n, (k, v)| n + k.as_str().len() + v.len() + 4,
    );
    let mut head = Vec::with_capacity(size);
    head.extend_from_slice(request.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(path.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &request.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// A complete head at the start of a buffer.
enum Parsed {
    /// A 1xx other than 101, this many bytes long.
    Interim(usize),
    /// A 101 and the length of its head.
    Switched(http::response::Parts, usize),
    /// A final answer.
    Other,
}

/// The head at the start of `buf`, if it is all there.
fn parse(buf: &[u8]) -> Result<Option<Parsed>, Failure> {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut headers,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Failure::Malformed(e.to_string())),
    };
    if response.version != Some(1) {
        return Err(Failure::Malformed("not HTTP/1.1".into()));
    }
    let code = response.code.unwrap_or(0);
    match code {
        101 => {}
        100..=199 => return Ok(Some(Parsed::Interim(len))),
        _ => return Ok(Some(Parsed::Other)),
    }
    let mut map = HeaderMap::with_capacity(response.headers.len());
    for header in response.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| Failure::Malformed(format!("bad header name {:?}", header.name)))?;
        let value = HeaderValue::from_bytes(header.value)
            .map_err(|_| Failure::Malformed(format!("bad value of header {}", header.name)))?;
        map.append(name, value);
    }
    let mut head = Response::new(());
    *head.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *head.version_mut() = Version::HTTP_11;
    *head.headers_mut() = map;
    Ok(Some(Parsed::Switched(head.into_parts().0, len)))
}

/// Hand a connection whose answer was not a `101` to hyper's client, the
/// bytes read so far first.
async fn replay(
    stream: UpstreamStream,
    read: Bytes,
    request: &Outgoing,
) -> Result<Exchanged, Failure> {
    let io = Replay {
        stream,
        read,
        sent: false,
        reader: None,
    };
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, RequestBody>(TokioIo::new(io))
        .await
        .map_err(Failure::Replay)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    // What hyper believes it sends: the same method and target, so it reads
    // the answer as the server meant it. Its bytes are dropped.
    let mut believed = Request::new(RequestBody::Empty);
    *believed.method_mut() = request.method.clone();
    *believed.uri_mut() = request.path_and_query.clone().into();
    if let Some(host) = request.headers.get(http::header::HOST) {
        believed
            .headers_mut()
            .insert(http::header::HOST, host.clone());
    }
    sender
        .send_request(believed)
        .await
        .map(Exchanged::Other)
        .map_err(Failure::Replay)
}

/// A connection whose first bytes were read already: reads give those
/// back first; writes are dropped (the request they would be went out
/// before). Nothing is read before hyper has "sent" its request: an answer
/// to no request would be an error to it.
struct Replay {
    stream: UpstreamStream,
    read: Bytes,
    sent: bool,
    reader: Option<std::task::Waker>,
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.sent {
            self.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.sent = true;
        if let Some(reader) = self.reader.take() {
            reader.wake();
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn upgrade_request() -> Outgoing {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("chat.example.com"));
        headers.insert("upgrade", HeaderValue::from_static("websocket"));
        headers.insert("connection", HeaderValue::from_static("Upgrade"));
        headers.insert(
            "sec-websocket-key",
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        Outgoing {
            method: Method::GET,
            path_and_query: "/ws/chat?room=1".parse().unwrap(),
            headers,
            body: RequestBody::Empty,
        }
    }

    #[test]
    fn the_head_is_http_1_1() {
        let head = String::from_utf8(write_head(&upgrade_request())).unwrap();
        assert_eq!(
            head,
            "GET /ws/chat?room=1 HTTP/1.1\r\nhost: chat.example.com\r\nupgrade: websocket\r\n\
             connection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        // The buffer was sized right: one allocation, no growing.
        let head = write_head(&upgrade_request());
        assert!(head.capacity() - head.len() <= 2, "{}", head.capacity());
    }

    #[test]
    fn heads_are_recognised() {
        let switched = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                         Sec-WebSocket-Accept: abc\r\n\r\n\x81\x02hi";
        match parse(switched) {
            Ok(Some(Parsed::Switched(head, len))) => {
                assert_eq!(head.status, 101);
                assert_eq!(head.headers["upgrade"], "websocket");
                assert_eq!(head.headers["sec-websocket-accept"], "abc");
                assert_eq!(&switched[len..], b"\x81\x02hi");
            }
            _ => panic!("not a switch"),
        }
        assert!(matches!(parse(b"HTTP/1.1 101 Switching"), Ok(None)));
        assert!(matches!(
            parse(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n"),
            Ok(Some(Parsed::Interim(40)))
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 426 Upgrade Required\r\n\r\n"),
            Ok(Some(Parsed::Other))
        ));
        assert!(matches!(
            parse(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(Failure::Malformed(_))
        ));
        assert!(matches!(
            parse(b"HTTP/1.0 101 Old\r\n\r\n"),
            Err(Failure::Malformed(_))
        ));
    }

    async fn answered(answer: &'static [u8]) -> (Result<Exchanged, Failure>, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                socket.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            // In pieces, to cross read boundaries.
            for piece in answer.chunks(7) {
                socket.write_all(piece).await.unwrap();
                socket.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            String::from_utf8(head).unwrap()
        });
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let result = exchange(
            tokio_util::either::Either::Left(stream),
            &upgrade_request(),
            Duration::from_secs(5),
        )
        .await;
        (result, server.await.unwrap())
    }

    #[tokio::test]
    async fn a_switch_keeps_the_bytes_behind_its_head() {
        let (result, seen) = answered(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n\x81\x05hello",
        )
        .await;
        assert!(seen.starts_with("GET /ws/chat?room=1 HTTP/1.1\r\n"));
        match result {
            Ok(Exchanged::Switched { head, early, .. }) => {
                assert_eq!(head.status, 101);
                // The server may not have sent all of it before the head
                // was complete; what came is the start of the frame.
                assert!(b"\x81\x05hello".starts_with(&early), "{early:?}");
            }
            _ => panic!("expected a switch"),
        }
    }

    #[tokio::test]
    async fn any_other_answer_is_an_ordinary_response() {
        use http_body_util::BodyExt;
        for answer in [
            &b"HTTP/1.1 426 Upgrade Required\r\ncontent-length: 4\r\n\r\nnope"[..],
            b"HTTP/1.1 403 Forbidden\r\ntransfer-encoding: chunked\r\n\r\n2\r\nno\r\n2\r\npe\r\n0\r\n\r\n",
        ] {
            let (result, _) = answered(answer).await;
            let response = match result {
                Ok(Exchanged::Other(response)) => response,
                Ok(Exchanged::Switched { .. }) => panic!("a switch"),
                Err(e) => panic!("expected an ordinary response: {e}"),
            };
            assert!(response.status().is_client_error());
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"nope");
        }
    }
}
