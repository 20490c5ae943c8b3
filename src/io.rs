//! The byte streams both sides of the proxy use: a client connection, plain
//! or TLS ([`ClientStream`]), a connection to an upstream server, plain or
//! TLS ([`UpstreamStream`]), and [`End`], what a tunnel needs to know of
//! either end of it.

use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::either::Either;

/// A client connection, plain (`Left`) or TLS (`Right`).
pub type ClientStream = Either<TcpStream, Box<tokio_rustls::server::TlsStream<TcpStream>>>;

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
        matches!(self, Either::Right(_))
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
