//! The byte streams both sides of the proxy use: a client connection, plain
//! or TLS, under its `send_timeout` ([`ClientStream`]), a connection to an
//! upstream server, plain or TLS ([`UpstreamStream`]), and [`End`], what a
//! tunnel needs to know of either end of it.

use crate::timer::Timeout;
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::either::Either;

/// A client connection: plain (`Left`) or TLS (`Right`), under
/// [`SendTimeout`].
pub type ClientStream = SendTimeout<PlainOrTls>;

/// A client socket, plain or after the TLS handshake.
pub type PlainOrTls = Either<TcpStream, Box<tokio_rustls::server::TlsStream<TcpStream>>>;

/// A stream whose writes may not stay blocked longer than a limit: a client
/// that reads nothing while data waits for it (a slow-read attack, or a
/// peer gone without a word) gets an error after `limit` instead of holding
/// its buffers for ever. Reads pass through untouched. The timer is armed
/// only once a write is blocked, so a client that keeps up costs nothing.
pub struct SendTimeout<S> {
    inner: S,
    limit: Duration,
    blocked: Option<Timeout>,
}

impl<S> SendTimeout<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        SendTimeout {
            inner,
            limit,
            blocked: None,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A write made progress (`Ready`), or is blocked: then the error once
    /// it has been blocked for `limit`.
    fn watch<T>(&mut self, poll: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.blocked = None;
            return poll;
        }
        let limit = self.limit;
        let timer = self.blocked.get_or_insert_with(|| Timeout::after(limit));
        if std::future::Future::poll(Pin::new(timer), cx).is_ready() {
            self.blocked = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {limit:?} (send_timeout)"),
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(poll, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(poll, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(poll, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(poll, cx)
    }
}

/// A connection to an upstream server, plain (`Left`) or TLS (`Right`).
pub type UpstreamStream = Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>;

/// Idle time before the kernel's first keep-alive probe.
pub const PROBE_IDLE: Duration = Duration::from_secs(60);

/// One end of a tunnel: a byte stream that knows how it is best closed.
pub trait End: AsyncRead + AsyncWrite + Unpin {
    /// Whether passing on an end-of-stream takes a shutdown of its own. A
    /// plain TCP socket needs none: the tunnel ends right after and closing
    /// the socket sends its FIN, so the `shutdown` call would be one system
    /// call per tunnel for nothing. TLS first sends its `close_notify`.
    fn shutdown_before_close(&self) -> bool {
        true
    }

    /// Have the kernel probe a silent peer (TCP keep-alive), where the
    /// stream is a socket.
    fn send_keepalive_probes(&self) {}
}

impl End for TcpStream {
    fn shutdown_before_close(&self) -> bool {
        false
    }

    fn send_keepalive_probes(&self) {
        let keepalive = socket2::TcpKeepalive::new().with_time(PROBE_IDLE);
        let _ = socket2::SockRef::from(self).set_tcp_keepalive(&keepalive);
    }
}

impl End for ClientStream {
    fn shutdown_before_close(&self) -> bool {
        matches!(self.inner, Either::Right(_))
    }
}

impl End for UpstreamStream {
    fn shutdown_before_close(&self) -> bool {
        matches!(self, Either::Right(_))
    }

    fn send_keepalive_probes(&self) {
        match self {
            Either::Left(tcp) => tcp.send_keepalive_probes(),
            Either::Right(tls) => tls.get_ref().0.send_keepalive_probes(),
        }
    }
}

impl End for TokioIo<hyper::upgrade::Upgraded> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn upstream_sockets_get_keepalive_probes_on_request_only() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stream, _accepted) =
            tokio::join!(TcpStream::connect(addr), async { listener.accept().await });
        let stream = stream.unwrap();
        let socket = socket2::SockRef::from(&stream);
        assert!(!socket.keepalive().unwrap(), "probes from the start");
        stream.send_keepalive_probes();
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), PROBE_IDLE);
    }
}
