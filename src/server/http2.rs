//! HTTP/2 on one client connection (RFC 9113), chosen by ALPN: hyper's
//! HTTP/2 server with extended `CONNECT` (RFC 8441) for WebSockets, its
//! limits, the idle close, the drain (GOAWAY) and the hard stop.
//!
//! Every stream is a task of its own on the worker that accepted the
//! connection, tracked for the drain; its request goes through the same
//! [`proxy::handle`] as an HTTP/1.1 request. A WebSocket stream's tunnel runs
//! in a task of its own too (see [`Peer::become_tunnel`]).
//!
//! The settings, all explicit (see the README's HTTP/2 section):
//!
//! - [`MAX_CONCURRENT_STREAMS`] streams at once per connection. A browser
//!   puts all its WebSockets to a host on one connection and queues those
//!   beyond the limit, so the limit stays above Chromium's 255 WebSockets
//!   per host.
//! - Header lists up to [`MAX_HEADER_LIST_SIZE`]: one over
//!   [`proxy::MAX_HEAD`] (64 KiB) is answered `431` by the proxy, as over
//!   HTTP/1.1; past twice that, h2 itself answers `431` and resets the
//!   stream without decoding further.
//! - The rapid-reset defence (CVE-2023-44487): a client that resets more
//!   than [`MAX_PENDING_ACCEPT_RESET_STREAMS`] streams before the proxy
//!   took them, or makes the proxy reset [`MAX_LOCAL_ERROR_RESET_STREAMS`]
//!   streams for its protocol errors, gets GOAWAY `ENHANCE_YOUR_CALM` and
//!   the connection is closed.
//! - Flow-control windows of [`STREAM_WINDOW`] per stream and
//!   [`CONNECTION_WINDOW`] per connection: large enough that a bulk
//!   WebSocket stream is not held back by window updates, and the
//!   connection window a multiple of the stream window, so a few streams
//!   whose upstream reads slowly cannot stall the others.
//! - No stream open for `client_header_timeout`: GOAWAY, as an idle
//!   HTTP/1.1 keep-alive connection is closed after that time.
//!
//! A connection that ends after a GOAWAY is closed with a lingering close
//! ([`linger`]), so the GOAWAY reaches the client.

use crate::body::{BodyError, ResponseBody};
use crate::io::ClientStream;
use crate::proxy::streams::{OpenStreams, StreamGuard};
use crate::proxy::{self, MAX_HEAD, Peer};
use crate::state::StopSignal;
use crate::timer::{CoarseTimer, Timeout};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Streams open at once per connection (`SETTINGS_MAX_CONCURRENT_STREAMS`).
pub const MAX_CONCURRENT_STREAMS: u32 = 256;
/// The largest header list accepted (`SETTINGS_MAX_HEADER_LIST_SIZE`, in
/// RFC 9113's measure: names, values and 32 bytes per field).
pub const MAX_HEADER_LIST_SIZE: u32 = 2 * MAX_HEAD as u32;
/// Streams the client may reset before the proxy accepted them.
pub const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams the proxy may reset for the client's protocol errors.
pub const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 128;
/// Each stream's receive window.
pub const STREAM_WINDOW: u32 = 1024 * 1024;
/// The connection's receive window, all streams together.
pub const CONNECTION_WINDOW: u32 = 8 * STREAM_WINDOW;
/// The largest DATA frame the client may send (`SETTINGS_MAX_FRAME_SIZE`).
pub const MAX_FRAME_SIZE: u32 = 64 * 1024;
/// Response bytes buffered per stream before a writer waits.
pub const MAX_SEND_BUFFER: usize = 400 * 1024;

/// How long an idle connection sent a GOAWAY has to close before it is
/// dropped (at least; `client_header_timeout` when that is longer).
const GOAWAY_GRACE: Duration = Duration::from_secs(5);

/// Serve one client connection as HTTP/2 until it closes, is idle for
/// `idle_timeout` or is drained.
pub(super) async fn serve(io: ClientStream, peer: Peer, idle_timeout: Duration) {
    let streams = OpenStreams::new();
    let peer = Arc::new(peer.with_streams(streams.clone()));
    let state = peer.state.clone();
    let over_ip_cap = peer.over_ip_cap.is_some();
    let (mut draining, mut hard_stop) = (
        StopSignal::new(&state.draining),
        StopSignal::new(&state.hard_stop),
    );
    let counted = streams.clone();
    let service = service_fn(move |req| {
        let open = counted.open();
        let answer = proxy::handle(req, peer.clone());
        async move {
            let Ok(response) = answer.await;
            Ok::<_, Infallible>(response.map(|body| Counted { body, _open: open }))
        }
    });
    let (lent, mut returned) = Lent::new(io);
    let connection =
        builder(StreamTasks(state.tasks.clone())).serve_connection(TokioIo::new(lent), service);
    let mut connection = Box::pin(connection);

    let mut idle = Timeout::after(idle_timeout);
    // When a GOAWAY sent for idleness must have closed the connection.
    let mut closing_by: Option<Instant> = None;
    let mut graceful = false;
    if over_ip_cap {
        // Over max_connections_per_ip: what the client sent before the
        // GOAWAY reaches it is answered 429, then the connection closes, as
        // `Connection: close` does over HTTP/1.1.
        graceful = true;
        connection.as_mut().graceful_shutdown();
    }
    let result = std::future::poll_fn(|cx| {
        if !graceful && draining.poll_stopped(cx) {
            // GOAWAY: streams in flight finish, no new ones are taken.
            graceful = true;
            connection.as_mut().graceful_shutdown();
        }
        if graceful && hard_stop.poll_stopped(cx) {
            return Poll::Ready(Ended::Cut);
        }
        // The idle clock before the connection, so a GOAWAY it decides on
        // is written by the poll right below.
        while Pin::new(&mut idle).poll(cx).is_ready() {
            let now = Instant::now();
            if let Some(by) = closing_by {
                if by <= now {
                    tracing::debug!("idle connection ignored its GOAWAY; closed");
                    return Poll::Ready(Ended::Cut);
                }
                idle.reset(by);
                continue;
            }
            match streams.idle_since().map(|since| since + idle_timeout) {
                Some(due) if due <= now => {
                    tracing::debug!("no stream for {idle_timeout:?}; GOAWAY");
                    if !graceful {
                        graceful = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    let by = now + idle_timeout.max(GOAWAY_GRACE);
                    closing_by = Some(by);
                    idle.reset(by);
                }
                Some(due) => idle.reset(due),
                None => idle.reset(now + idle_timeout),
            }
        }
        connection.as_mut().poll(cx).map(Ended::Done)
    })
    .await;
    // Dropping hyper's connection hands the byte stream back.
    drop(connection);
    match result {
        Ended::Done(Ok(())) => {
            if let Ok(io) = returned.try_recv() {
                linger(io, &mut hard_stop).await;
            }
        }
        Ended::Done(Err(e)) => report(&e, &state),
        Ended::Cut => {}
    }
}

/// How the connection's poll loop ended.
enum Ended {
    /// hyper's connection finished: the client went away, or after a
    /// GOAWAY every stream ended.
    Done(Result<(), hyper::Error>),
    /// The proxy closed it: the hard stop, or a GOAWAY left unanswered.
    Cut,
}

/// How long a connection that said GOAWAY waits for the client to close.
const LINGER: Duration = Duration::from_secs(1);

/// Close a connection whose last frame was a GOAWAY the way the client
/// expects: TLS `close_notify` and FIN, then read whatever the client still
/// sends until it closes too (within [`LINGER`]). Closing a socket with
/// unread bytes in it makes the kernel send a reset, which can destroy the
/// GOAWAY in the client's receive buffer before the client read it, and
/// the client would then take its requests in flight for failed (nginx's
/// `lingering_close`, for the same reason).
async fn linger(mut io: ClientStream, hard_stop: &mut StopSignal) {
    let close = async {
        if io.shutdown().await.is_err() {
            return;
        }
        let mut sink = [0u8; 4096];
        while let Ok(n) = io.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let close = tokio::time::timeout(LINGER, close);
    tokio::pin!(close);
    std::future::poll_fn(|cx| {
        if hard_stop.poll_stopped(cx) {
            return Poll::Ready(());
        }
        close.as_mut().poll(cx).map(|_| ())
    })
    .await;
}

/// The connection's byte stream, lent to hyper: when hyper drops it, it
/// comes back through a channel, so the connection can be closed properly
/// (see [`linger`]).
struct Lent {
    io: Option<ClientStream>,
    back: Option<oneshot::Sender<ClientStream>>,
}

impl Lent {
    fn new(io: ClientStream) -> (Lent, oneshot::Receiver<ClientStream>) {
        let (back, returned) = oneshot::channel();
        (
            Lent {
                io: Some(io),
                back: Some(back),
            },
            returned,
        )
    }

    fn io(&mut self) -> io::Result<Pin<&mut ClientStream>> {
        match &mut self.io {
            Some(io) => Ok(Pin::new(io)),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let (Some(io), Some(back)) = (self.io.take(), self.back.take()) {
            let _ = back.send(io);
        }
    }
}

impl AsyncRead for Lent {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.io()?.poll_read(cx, buf)
    }
}

impl AsyncWrite for Lent {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.io()?.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.io()?.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io()?.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io()?.poll_shutdown(cx)
    }
}

/// Log (and count) how a connection ended in error. A GOAWAY the proxy
/// sent for the client's errors is worth an operator's eye, the rapid-reset
/// defence above all; a client that went away is not.
fn report(error: &hyper::Error, state: &crate::state::State) {
    let h2 = std::error::Error::source(error).and_then(|e| e.downcast_ref::<h2::Error>());
    match h2 {
        Some(h2) if h2.is_go_away() && h2.is_library() => {
            let reason = h2.reason().unwrap_or(h2::Reason::PROTOCOL_ERROR);
            let code = format!("{reason:?}").to_ascii_lowercase();
            state.metrics.http2_goaway(&code);
            if reason == h2::Reason::ENHANCE_YOUR_CALM {
                tracing::warn!(
                    error = %h2,
                    "HTTP/2 client flooded the connection (too many streams reset, \
                     or too many errors); sent GOAWAY ENHANCE_YOUR_CALM and closed"
                );
            } else {
                tracing::info!(error = %h2, "HTTP/2 protocol error; sent GOAWAY {code} and closed");
            }
        }
        _ => tracing::debug!(error = %error, "HTTP/2 connection ended with an error"),
    }
}

/// hyper's HTTP/2 server with every setting of this module.
fn builder(tasks: StreamTasks) -> http2::Builder<StreamTasks> {
    let mut builder = http2::Builder::new(tasks);
    builder
        .timer(CoarseTimer)
        .enable_connect_protocol()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .adaptive_window(false)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_send_buf_size(MAX_SEND_BUFFER);
    builder
}

/// Runs a connection's stream tasks on the current worker, tracked for the
/// drain, in the connection's span.
#[derive(Clone)]
struct StreamTasks(TaskTracker);

impl<F> hyper::rt::Executor<F> for StreamTasks
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        self.0.spawn(future.in_current_span());
    }
}

/// A response body that keeps its stream counted open until it is done.
struct Counted {
    body: ResponseBody,
    _open: StreamGuard,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
