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
use crate::ws::close;
use crate::ws::frame::Boundaries;
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
    /// Sent Close 1001 both ways to even out the upstream's servers.
    Rebalanced,
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
            Closed::Rebalanced => "rebalance",
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
        let goodbye = self.lease.opened();
        if goodbye.is_some() {
            // Rebalancing may ask it to leave: follow the frames, so the
            // goodbye goes in between them.
            splice.up.frames = Some(Boundaries::default());
            splice.down.frames = Some(Boundaries::default());
        }
        let mut leaving: Option<Timeout> = None;
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
            if let Some(goodbye) = &goodbye
                && leaving.is_none()
                && goodbye.poll_fired(cx)
            {
                splice.up.goodbye = Goodbye::Wanted(close_to_upstream());
                splice.down.goodbye = Goodbye::Wanted(close_to_client());
                leaving = Some(Timeout::after(GOODBYE_GRACE));
                // Go round again: the frames may go out right away.
                cx.waker().wake_by_ref();
            }
            if let Some(grace) = &mut leaving
                && Pin::new(grace).poll(cx).is_ready()
            {
                return Poll::Ready(Closed::Rebalanced);
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
        // A tunnel that said goodbye ends by the goodbye, whoever hung up.
        let closed = match closed {
            Closed::Client | Closed::Upstream if leaving.is_some() => Closed::Rebalanced,
            other => other,
        };
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

/// How long a tunnel that said goodbye waits for its client to answer.
const GOODBYE_GRACE: Duration = Duration::from_secs(2);
/// What the proxy's Close frames say.
const GOODBYE_REASON: &str = "rebalancing";

fn close_to_client() -> Bytes {
    Bytes::from(close::frame(close::GOING_AWAY, GOODBYE_REASON, None))
}

fn close_to_upstream() -> Bytes {
    let mask = fastrand::u32(..).to_be_bytes();
    Bytes::from(close::frame(close::GOING_AWAY, GOODBYE_REASON, Some(mask)))
}

/// A direction's part in a goodbye.
#[derive(Default)]
enum Goodbye {
    #[default]
    None,
    /// This Close frame goes out at the next frame boundary.
    Wanted(Bytes),
    /// It went out (or is in `pending`): nothing more is relayed.
    Sent,
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
    /// Frame boundaries, followed when the tunnel may have to say goodbye.
    frames: Option<Boundaries>,
    goodbye: Goodbye,
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
        if let Goodbye::Wanted(frame) = &flow.goodbye
            && flow.frames.as_ref().is_none_or(Boundaries::at_boundary)
        {
            flow.pending = frame.clone();
            flow.goodbye = Goodbye::Sent;
            continue;
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
        if matches!(flow.goodbye, Goodbye::Sent) {
            // After the goodbye nothing is relayed: an answer from the
            // client (its Close) ends the tunnel.
            flow.eof = true;
            continue;
        }
        if let Some(frames) = &mut flow.frames {
            let boundary = frames.advance(data, 0);
            if let (Goodbye::Wanted(frame), Some(at)) = (&flow.goodbye, boundary) {
                // The rest of the current frame, then the goodbye.
                let mut out = Vec::with_capacity(at + frame.len());
                out.extend_from_slice(&data[..at]);
                out.extend_from_slice(frame);
                flow.bytes += at as u64;
                count(at as u64);
                flow.pending = Bytes::from(out);
                flow.goodbye = Goodbye::Sent;
                continue;
            }
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
