//! Upgraded connections: splicing two byte streams until one side is done.
//!
//! After a `101 Switching Protocols` the proxy no longer speaks HTTP on
//! either connection; it copies bytes both ways. A tunnel ends when either
//! side closes (its end-of-stream is passed on first), when both sides have
//! been silent for the route's `idle_timeout`, or at the hard stop of a
//! shutdown. It then writes one `access` event with the route, bytes each
//! way, duration and who closed. A tunnel that lives past a minute gets TCP
//! keep-alive probes on its upstream socket, so an upstream host that
//! vanished without a word is noticed well before `idle_timeout`.
//!
//! An idle tunnel holds no copy buffer. Bytes are read into the worker
//! thread's one scratch buffer and written straight to the other side; only
//! when that side cannot take them all does the rest move to a buffer of the
//! tunnel's own, until it drains. Thousands of quiet chat connections
//! therefore cost two sockets and one small task each.

use crate::io::{ClientStream, End, UpstreamStream};
use crate::metrics::RouteStats;
use crate::state::{Signal, StopSignal};
use crate::timer::Timeout;
use crate::upstream::TunnelLease;
use bytes::{Buf, Bytes};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, ReadBuf};
use tracing::Instrument;

/// Bytes read per call, into the worker's scratch buffer.
const CHUNK: usize = 64 * 1024;
/// Reads per direction per poll before yielding to other tasks.
const READS_PER_POLL: usize = 16;

/// A tunnel older than this has TCP keep-alive probes on its upstream
/// socket, so a vanished upstream host is noticed long before
/// `idle_timeout`. Short tunnels never pay for the two system calls.
const PROBES_AFTER: Duration = Duration::from_secs(60);

/// Whether the upstream socket has keep-alive probes yet.
#[derive(Clone, Copy)]
enum Probes {
    /// Not yet; from this instant on.
    From(Instant),
    Armed,
}

/// Everything a tunnel needs besides its two connections.
pub struct Tunnel {
    pub stats: Arc<RouteStats>,
    pub idle_timeout: Duration,
    pub upstream_server: Arc<str>,
    /// The client's address, for the close event.
    pub peer: std::net::SocketAddr,
    pub hard_stop: Signal,
    /// The tunnel's count on its upstream server, given back at its end.
    pub lease: TunnelLease,
}

/// Who ended a tunnel.
#[derive(Debug)]
pub enum Closed {
    Client,
    Upstream,
    ClientError(io::Error),
    UpstreamError(io::Error),
    IdleTimeout,
    Shutdown,
}

impl Closed {
    fn who(&self) -> &'static str {
        match self {
            Closed::Client => "client",
            Closed::Upstream => "upstream",
            Closed::ClientError(_) => "client-error",
            Closed::UpstreamError(_) => "upstream-error",
            Closed::IdleTimeout => "idle-timeout",
            Closed::Shutdown => "shutdown",
        }
    }
}

/// An upgrade the upstream accepted, waiting for the client connection to
/// be handed over: hyper gives it up once the `101` is written.
pub struct Handover {
    pub tunnel: Tunnel,
    /// The client's half, from `hyper::upgrade::on`.
    pub client: OnUpgrade,
    /// The upstream's raw connection.
    pub upstream: UpstreamStream,
    /// What the upstream sent right behind its `101`.
    pub early: Bytes,
}

impl Handover {
    /// Relay until done. Called by the client connection's task after
    /// hyper let go of the connection, so the client's half is already
    /// there (or the connection broke before the `101` went out).
    pub async fn run(self) {
        let Handover {
            tunnel,
            client,
            upstream,
            early,
        } = self;
        let span = tracing::debug_span!(
            "tunnel",
            route = %tunnel.stats.name,
            upstream = %tunnel.upstream_server
        );
        let client = match client.await {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade not completed");
                return;
            }
        };
        match client.downcast::<TokioIo<ClientStream>>() {
            Ok(client) => {
                let splice = Splice::new(client.io.into_inner(), client.read_buf, upstream, early);
                tunnel.relay(splice).instrument(span).await
            }
            // Not the stream type the server hands out: relay through
            // hyper's own wrapper.
            Err(client) => {
                let splice = Splice::new(TokioIo::new(client), Bytes::new(), upstream, early);
                tunnel.relay(splice).instrument(span).await
            }
        }
    }
}

impl Tunnel {
    async fn relay<A, B>(mut self, mut splice: Splice<A, B>)
    where
        A: End,
        B: End,
    {
        let started = Instant::now();
        self.stats.tunnel_opened();
        self.lease.opened();
        splice.stats = Some(self.stats.clone());
        // One timer for both the idle timeout and the keep-alive probes.
        let mut probes = Probes::From(started + PROBES_AFTER);
        let mut timer = Timeout::at(started + self.idle_timeout.min(PROBES_AFTER));
        let mut hard_stop = StopSignal::new(&self.hard_stop);
        // The splice first: most wakes are bytes to move.
        let closed = std::future::poll_fn(|cx| {
            if let Poll::Ready(closed) = Pin::new(&mut splice).poll(cx) {
                return Poll::Ready(closed);
            }
            if hard_stop.poll_stopped(cx) {
                return Poll::Ready(Closed::Shutdown);
            }
            while Pin::new(&mut timer).poll(cx).is_ready() {
                let now = Instant::now();
                if let Probes::From(at) = probes
                    && at <= now
                {
                    splice.upstream.send_keepalive_probes();
                    probes = Probes::Armed;
                }
                let idle_at = splice.last_activity + self.idle_timeout;
                if idle_at <= now {
                    return Poll::Ready(Closed::IdleTimeout);
                }
                timer.reset(match probes {
                    Probes::From(at) => at.min(idle_at),
                    Probes::Armed => idle_at,
                });
            }
            Poll::Pending
        })
        .await;
        let duration = started.elapsed();
        self.stats.tunnel_closed(duration);
        let error = match &closed {
            Closed::ClientError(e) | Closed::UpstreamError(e) => Some(e.to_string()),
            _ => None,
        };
        tracing::info!(
            target: "access",
            peer = %self.peer,
            route = %self.stats.name,
            upstream = %self.upstream_server,
            bytes_to_upstream = splice.up.bytes,
            bytes_to_client = splice.down.bytes,
            duration_ms = duration.as_millis() as u64,
            closed_by = closed.who(),
            error,
            "tunnel closed"
        );
    }
}

/// Early bytes come as a view into the HTTP parser's read buffer (8 KiB or
/// more); copy the few that matter so that buffer is freed.
fn detach(early: Bytes) -> Bytes {
    if early.is_empty() {
        Bytes::new()
    } else {
        Bytes::copy_from_slice(&early)
    }
}

/// Both directions of a tunnel, polled as one future.
pub struct Splice<A, B> {
    client: A,
    upstream: B,
    /// Client → upstream.
    up: Flow,
    /// Upstream → client.
    down: Flow,
    last_activity: Instant,
    stats: Option<Arc<RouteStats>>,
}

/// One direction of a tunnel.
#[derive(Default)]
struct Flow {
    /// Bytes read but not yet written: empty unless the writer pushed back.
    pending: Bytes,
    /// The reader reached end-of-stream.
    eof: bool,
    /// Bytes were written since the last flush.
    unflushed: bool,
    /// Total bytes read from this direction's reader.
    bytes: u64,
}

enum FlowError {
    Read(io::Error),
    Write(io::Error),
}

impl<A, B> Splice<A, B>
where
    A: End,
    B: End,
{
    /// Splice `client` and `upstream`; `*_early` are bytes each side sent
    /// right behind the handshake, already read by the HTTP parser.
    pub fn new(client: A, client_early: Bytes, upstream: B, upstream_early: Bytes) -> Self {
        Splice {
            client,
            upstream,
            up: Flow {
                pending: detach(client_early),
                ..Flow::default()
            },
            down: Flow {
                pending: detach(upstream_early),
                ..Flow::default()
            },
            last_activity: Instant::now(),
            stats: None,
        }
    }
}

impl<A, B> Future for Splice<A, B>
where
    A: End,
    B: End,
{
    type Output = Closed;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Closed> {
        let this = &mut *self;
        let before = this.up.bytes + this.down.bytes;
        let stats = this.stats.as_deref();
        let count = |to_upstream| {
            move |n| {
                if let Some(stats) = stats {
                    stats.tunnel_bytes(to_upstream, n);
                }
            }
        };
        let up = poll_flow(
            cx,
            &mut this.client,
            &mut this.upstream,
            &mut this.up,
            count(true),
        );
        let down = poll_flow(
            cx,
            &mut this.upstream,
            &mut this.client,
            &mut this.down,
            count(false),
        );
        if this.up.bytes + this.down.bytes > before {
            this.last_activity = Instant::now();
        }
        match (up, down) {
            (Poll::Ready(Ok(())), _) => Poll::Ready(Closed::Client),
            (Poll::Ready(Err(FlowError::Read(e))), _) => Poll::Ready(Closed::ClientError(e)),
            (Poll::Ready(Err(FlowError::Write(e))), _) => Poll::Ready(Closed::UpstreamError(e)),
            (_, Poll::Ready(Ok(()))) => Poll::Ready(Closed::Upstream),
            (_, Poll::Ready(Err(FlowError::Read(e)))) => Poll::Ready(Closed::UpstreamError(e)),
            (_, Poll::Ready(Err(FlowError::Write(e)))) => Poll::Ready(Closed::ClientError(e)),
            (Poll::Pending, Poll::Pending) => Poll::Pending,
        }
    }
}

/// Move bytes from `from` to `to` until `from` has nothing more for now.
/// Ready(Ok) once `from` ended and the end was passed on to `to`. `count`
/// hears of every read before its bytes are written on, so the metrics
/// never lag behind what the other side has received.
fn poll_flow<R, W>(
    cx: &mut Context<'_>,
    from: &mut R,
    to: &mut W,
    flow: &mut Flow,
    count: impl Fn(u64),
) -> Poll<Result<(), FlowError>>
where
    R: AsyncRead + Unpin,
    W: End,
{
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        relay(cx, from, to, flow, &mut scratch[..], count)
    })
}

thread_local! {
    /// Each worker's read buffer, shared by all its tunnels: a poll uses it
    /// and leaves nothing in it, so idle tunnels hold no buffer at all.
    static SCRATCH: RefCell<Box<[MaybeUninit<u8>]>> =
        RefCell::new(vec![MaybeUninit::uninit(); CHUNK].into_boxed_slice());
}

fn relay<R, W>(
    cx: &mut Context<'_>,
    from: &mut R,
    to: &mut W,
    flow: &mut Flow,
    chunk: &mut [MaybeUninit<u8>],
    count: impl Fn(u64),
) -> Poll<Result<(), FlowError>>
where
    R: AsyncRead + Unpin,
    W: End,
{
    for _ in 0..READS_PER_POLL {
        // Whatever the writer refused last time goes first.
        while flow.pending.has_remaining() {
            match Pin::new(&mut *to).poll_write(cx, &flow.pending) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(FlowError::Write(io::ErrorKind::WriteZero.into())));
                }
                Poll::Ready(Ok(n)) => {
                    flow.pending.advance(n);
                    flow.unflushed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(FlowError::Write(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
        if flow.eof {
            ready!(Pin::new(&mut *to).poll_flush(cx)).map_err(FlowError::Write)?;
            if to.shutdown_before_close() {
                ready!(Pin::new(&mut *to).poll_shutdown(cx)).map_err(FlowError::Write)?;
            }
            return Poll::Ready(Ok(()));
        }
        let mut buf = ReadBuf::uninit(chunk);
        match Pin::new(&mut *from).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(FlowError::Read(e))),
            Poll::Pending => {
                if flow.unflushed {
                    match Pin::new(&mut *to).poll_flush(cx) {
                        Poll::Ready(Ok(())) => flow.unflushed = false,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(FlowError::Write(e))),
                        Poll::Pending => {}
                    }
                }
                return Poll::Pending;
            }
        }
        let data = buf.filled();
        if data.is_empty() {
            flow.eof = true;
            continue;
        }
        flow.bytes += data.len() as u64;
        count(data.len() as u64);
        let mut written = 0;
        while written < data.len() {
            match Pin::new(&mut *to).poll_write(cx, &data[written..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(FlowError::Write(io::ErrorKind::WriteZero.into())));
                }
                Poll::Ready(Ok(n)) => {
                    written += n;
                    flow.unflushed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(FlowError::Write(e))),
                Poll::Pending => {
                    // The writer is full: keep the rest until it drains.
                    flow.pending = Bytes::copy_from_slice(&data[written..]);
                    return Poll::Pending;
                }
            }
        }
    }
    // Budget used up: let other tasks run, then continue.
    if flow.unflushed && Pin::new(&mut *to).poll_flush(cx).is_ready() {
        flow.unflushed = false;
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}
