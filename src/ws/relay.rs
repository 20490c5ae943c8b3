//! The tunnel: what a connection becomes after its `101`, two WebSocket
//! streams relayed frame-aware until one side is done.
//!
//! Bytes cross unchanged in both directions ([`super::flow`]); a frame
//! reader per direction knows where frames begin and end, so the proxy can
//! add frames of its own between the peers' ones. A tunnel ends when:
//!
//! - either side closes its connection (its end-of-stream is passed on);
//! - a close handshake completed (a Close went each way): at once;
//! - a side sent nothing within `ping_timeout` of the proxy's Ping
//!   (`ping_interval` of silence): Close 1001 to the other side;
//! - a client message went past `max_message_size`: Close 1009 to the
//!   client, 1001 to the upstream;
//! - `max_lifetime` (±10 %) passed, the owner fired its [`Goodbye`], or the
//!   drain reached this tunnel's moment of `shutdown_spread`: Close 1001 to
//!   both sides;
//! - the peers' own frames were silent both ways for `idle_timeout` (the
//!   proxy's pings and their pongs do not count);
//! - the hard stop of a shutdown.
//!
//! After its own Close the proxy waits for the answers: up to
//! `ping_timeout` (10 s when pings are off), or during a drain until the
//! hard stop. It then writes one `access` event with the route, bytes and
//! messages each way, close codes, duration and who closed.
//!
//! Cheap by construction: an idle tunnel holds no copy buffer (reads go to
//! the worker's scratch buffer), and every deadline it has (idle, each
//! side's ping and ping timeout, lifetime, goodbye moment, keep-alive
//! probes) shares one coarse [`Timeout`], re-armed lazily when it fires. No
//! tokio sleep, no extra task, no extra system call per message.
//!
//! # For the owners of tunnels
//!
//! - [`Handover::goodbye`]: an optional [`Goodbye`] handle; whoever keeps a
//!   clone may ask this one tunnel to close (Close 1001 to both sides, at
//!   frame boundaries), e.g. to rebalance a fleet.
//! - [`Tunnel::relay`] is generic over both [`End`]s: the client end may be
//!   a socket, a TLS stream or an HTTP/2 stream (`TokioIo<Upgraded>`).
//! - The end-of-tunnel hook is [`Tunnel::finish`]: every tunnel passes
//!   through it exactly once, whatever ended it. The per-server count
//!   ([`TunnelLease`]) is given back when the tunnel is dropped right
//!   after; a lease's goodbye (fleet rebalancing) ends the tunnel like
//!   [`Goodbye`], with `closed_by="rebalance"`.

use super::close::{PingTag, code};
use super::flow::Flow;
use super::goodbye::{Goodbye, lifetime_end};
use super::liveness::{Due, Pings, Side};
pub use super::splice::{Closed, Splice};
use super::wake::Wakers;
use super::watch::{Closer, Ending, Watch};
use crate::io::{ClientStream, End, UpstreamStream};
use crate::metrics::RouteStats;
use crate::state::{StopSignal, TunnelDrain};
use crate::timer::Timeout;
use crate::upstream::TunnelLease;
use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// A tunnel older than this has TCP keep-alive probes on its upstream
/// socket, so a vanished upstream host is noticed long before
/// `idle_timeout`. Short tunnels never pay for the two system calls.
const PROBES_AFTER: Duration = Duration::from_secs(60);
/// How long the peers have to answer the proxy's Close when pings are off.
const CLOSE_WAIT: Duration = Duration::from_secs(10);
/// How long the last writes may take once a tunnel is over.
const FINISH_WAIT: Duration = Duration::from_secs(2);

/// A route's WebSocket settings, as a tunnel uses them.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub idle_timeout: Duration,
    /// Zero: no pings.
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub max_message_size: u64,
    /// Zero: unlimited.
    pub max_lifetime: Duration,
}

/// Everything a tunnel needs besides its two connections.
pub struct Tunnel {
    pub stats: Arc<RouteStats>,
    pub limits: Limits,
    pub upstream_server: Arc<str>,
    /// The client's address, for the close event.
    pub peer: std::net::SocketAddr,
    /// The HTTP version the client's handshake came in (`2`: RFC 8441).
    pub http: http::Version,
    /// The drain's signals and goodbye moments, shared by all tunnels.
    pub drain: Arc<TunnelDrain>,
    /// The tunnel's count on its upstream server, given back when the
    /// tunnel (and so the lease) is dropped at its end.
    pub lease: TunnelLease,
}

/// An upgrade the upstream accepted, waiting for the client connection to
/// be handed over: hyper gives it up once the `101` is written.
pub struct Handover {
    pub tunnel: Tunnel,
    /// The client's half, from `hyper::upgrade::on`.
    pub client: OnUpgrade,
    /// The upstream's connection.
    pub upstream: UpstreamStream,
    /// What the upstream sent right behind its `101`.
    pub early: Bytes,
    /// Fired by the tunnel's owner to close it.
    pub goodbye: Option<Goodbye>,
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
            goodbye,
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
        // The relay budgets its own reads (and yields after a batch), so
        // tokio's per-operation budget would only be counted for nothing.
        match client.downcast::<TokioIo<ClientStream>>() {
            Ok(client) => {
                let (io, read_buf) = (client.io.into_inner(), client.read_buf);
                let relay = tunnel.relay(io, read_buf, upstream, early, goodbye);
                tokio::task::unconstrained(relay).instrument(span).await
            }
            // Not the stream type the server hands out: relay through
            // hyper's own wrapper.
            Err(client) => {
                let client = TokioIo::new(client);
                let relay = tunnel.relay(client, Bytes::new(), upstream, early, goodbye);
                tokio::task::unconstrained(relay).instrument(span).await
            }
        }
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

/// Whether the upstream socket has keep-alive probes yet.
#[derive(Clone, Copy)]
enum Probes {
    /// Not yet; from this instant on.
    From(Instant),
    Armed,
}

/// Which stop signal the tunnel waits for: the drain, then the hard stop.
enum Stopping {
    Drain(StopSignal),
    Hard(StopSignal),
}

/// The tunnel's deadlines besides the pings, all on one timer.
struct Deadlines {
    probes: Probes,
    lifetime: Option<Instant>,
    /// This tunnel's moment in the drain's spread.
    goodbye: Option<Instant>,
    /// The peers must have answered the proxy's Close by then.
    close_by: Option<Instant>,
}

impl Tunnel {
    /// Relay between `client` and `upstream`; `*_early` are bytes each
    /// side sent right behind the handshake, already read by the HTTP
    /// parser.
    pub async fn relay<A, B>(
        mut self,
        client: A,
        client_early: Bytes,
        upstream: B,
        upstream_early: Bytes,
        mut goodbye: Option<Goodbye>,
    ) where
        A: End,
        B: End,
    {
        let started = Instant::now();
        self.stats.tunnel_opened();
        self.drain.opened();
        // Counted on its server; rebalancing may ask it to leave.
        let mut rebalance = self.lease.opened();
        let limits = &self.limits;
        let mut splice = Splice {
            client,
            upstream,
            up: Flow::new(Side::Client, detach(client_early), limits.max_message_size),
            down: Flow::new(Side::Upstream, detach(upstream_early), u64::MAX),
            watch: Watch::new(fastrand::u32(..)),
            stats: Some(self.stats.clone()),
            wakers: Wakers::new(),
            ended: [false; 2],
        };
        let mut pings = Pings::new(limits.ping_interval, limits.ping_timeout, started);
        if pings.enabled() {
            splice.up.reader.watch_pongs(PingTag::LEN);
            splice.down.reader.watch_pongs(PingTag::LEN);
        }
        let close_wait = if pings.enabled() {
            limits.ping_timeout
        } else {
            CLOSE_WAIT
        };
        let mut deadlines = Deadlines {
            probes: Probes::From(started + PROBES_AFTER),
            lifetime: (!limits.max_lifetime.is_zero())
                .then(|| lifetime_end(started, limits.max_lifetime, fastrand::f64())),
            goodbye: None,
            close_by: None,
        };
        let mut last_activity = started;
        let mut armed = self.next_deadline(&deadlines, &pings, last_activity);
        let mut timer = Timeout::at(armed);
        let mut stopping = Stopping::Drain(StopSignal::new(&self.drain.draining));

        let closed = std::future::poll_fn(|cx| {
            // A few rounds at most: a round that queues frames of the
            // proxy's (a ping, a goodbye) polls the splice again to write
            // them.
            for _ in 0..3 {
                // The splice first: most wakes are bytes to move.
                if let Poll::Ready(closed) = Pin::new(&mut splice).poll(cx) {
                    return Poll::Ready(closed);
                }
                let (up, down) = (&mut splice.up, &mut splice.down);
                if up.heard || down.heard || up.moved || down.moved {
                    // A tick's precision is plenty for deadlines of seconds,
                    // and costs no clock read per message.
                    let now = crate::timer::coarse_now();
                    for flow in [up, down] {
                        if std::mem::take(&mut flow.heard) {
                            pings.heard(flow.from, now);
                        }
                        if std::mem::take(&mut flow.moved) {
                            last_activity = now;
                        }
                    }
                }
                if splice.watch.pongs != 0 {
                    self.stats
                        .tunnel_pongs(std::mem::take(&mut splice.watch.pongs));
                }
                let (wanted, ending) = (splice.watch.wants_any(), splice.watch.ending);
                let stopped = match &mut stopping {
                    Stopping::Drain(signal) | Stopping::Hard(signal) => signal.poll_stopped(cx),
                };
                if stopped {
                    if matches!(stopping, Stopping::Hard(_)) {
                        return Poll::Ready(Closed::Shutdown);
                    }
                    let moment = self.drain.goodbye_moment();
                    deadlines.goodbye = Some(moment);
                    if moment < armed {
                        armed = moment;
                        timer.reset(armed);
                    }
                    let mut hard = StopSignal::new(&self.drain.hard_stop);
                    if hard.poll_stopped(cx) {
                        return Poll::Ready(Closed::Shutdown);
                    }
                    stopping = Stopping::Hard(hard);
                }
                if let Some(handle) = &goodbye
                    && handle.poll_fired(cx)
                {
                    goodbye = None;
                    splice.watch.begin(Ending::Goodbye);
                }
                if let Some(handle) = &rebalance
                    && handle.poll_fired(cx)
                {
                    rebalance = None;
                    splice.watch.begin(Ending::Rebalance);
                }
                while timer.poll_in_task(cx).is_ready() {
                    let now = Instant::now();
                    if let Some(closed) =
                        self.on_timer(now, &mut splice, &mut pings, &mut deadlines, last_activity)
                    {
                        return Poll::Ready(closed);
                    }
                    armed = self.next_deadline(&deadlines, &pings, last_activity);
                    timer.reset(armed);
                }
                let began = splice.watch.ending != ending;
                if began && splice.watch.ending != Some(Ending::Shutdown) {
                    // The proxy began to close: the peers have `close_wait`
                    // to answer (a drain waits for the hard stop instead).
                    let by = Instant::now() + close_wait;
                    deadlines.close_by = Some(by);
                    if by < armed {
                        armed = by;
                        timer.reset(armed);
                    }
                }
                if !began && (wanted || !splice.watch.wants_any()) {
                    break;
                }
            }
            Poll::Pending
        })
        .await;
        // The last writes (a TLS close_notify, a Close still queued) get a
        // moment, on the same timer.
        let drained = splice.up.drained() && splice.down.drained();
        let tls = splice.client.shutdown_before_close() || splice.upstream.shutdown_before_close();
        if matches!(closed, Closed::Handshake | Closed::CloseTimeout) && (tls || !drained) {
            timer.reset(Instant::now() + FINISH_WAIT);
            let Splice {
                client,
                upstream,
                up,
                down,
                ..
            } = &mut splice;
            std::future::poll_fn(|cx| {
                let a = down.poll_finish(cx, client);
                let b = up.poll_finish(cx, upstream);
                if (a.is_ready() && b.is_ready()) || timer.poll_in_task(cx).is_ready() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
        }
        self.finish(&splice, closed, started);
    }

    /// The earliest instant the timer must look at the tunnel again.
    fn next_deadline(
        &self,
        deadlines: &Deadlines,
        pings: &Pings,
        last_activity: Instant,
    ) -> Instant {
        let mut next = last_activity + self.limits.idle_timeout;
        for at in [
            match deadlines.probes {
                Probes::From(at) => Some(at),
                Probes::Armed => None,
            },
            deadlines.lifetime,
            deadlines.goodbye,
            deadlines.close_by,
            pings.next(),
        ]
        .into_iter()
        .flatten()
        {
            next = next.min(at);
        }
        next
    }

    /// The timer fired: do what is due at `now`.
    fn on_timer<A: End, B: End>(
        &self,
        now: Instant,
        splice: &mut Splice<A, B>,
        pings: &mut Pings,
        deadlines: &mut Deadlines,
        last_activity: Instant,
    ) -> Option<Closed> {
        if let Probes::From(at) = deadlines.probes
            && at <= now
        {
            splice.upstream.send_keepalive_probes();
            deadlines.probes = Probes::Armed;
        }
        if last_activity + self.limits.idle_timeout <= now {
            return Some(Closed::IdleTimeout);
        }
        if deadlines.close_by.is_some_and(|at| at <= now) {
            return Some(Closed::CloseTimeout);
        }
        while let Some(due) = pings.due(now) {
            match due {
                Due::Ping(side) => splice.watch.queue_ping(side),
                Due::Dead(side) => {
                    self.stats.tunnel_ping_timeout();
                    splice.watch.begin(Ending::Dead(side));
                    // Once that side is declared dead, stop asking.
                    pings.heard(side, now);
                }
            }
        }
        if deadlines.lifetime.is_some_and(|at| at <= now) {
            deadlines.lifetime = None;
            splice.watch.begin(Ending::Lifetime);
        }
        if deadlines.goodbye.is_some_and(|at| at <= now) {
            deadlines.goodbye = None;
            splice.watch.begin(Ending::Shutdown);
        }
        None
    }

    /// The end-of-tunnel hook: every tunnel passes here once, whatever
    /// ended it. Final writes, metrics, the access event.
    fn finish<A: End, B: End>(&self, splice: &Splice<A, B>, closed: Closed, started: Instant) {
        let duration = started.elapsed();
        let watch = &splice.watch;
        self.stats.tunnel_pongs(watch.pongs);
        let proxy_close = watch
            .own_close(Side::Client)
            .or(watch.own_close(Side::Upstream));
        let (by, code) = match (watch.first(), watch.ending) {
            (Some(Closer::Peer(side)), _) => (
                side.name(),
                watch.close_from(side).unwrap_or(code::NO_STATUS),
            ),
            (Some(Closer::Proxy), _) | (None, Some(_)) => {
                ("proxy", proxy_close.unwrap_or(code::GOING_AWAY))
            }
            (None, None) => (closed.by(), code::ABNORMAL),
        };
        self.stats.tunnel_closed(duration, by, code);
        self.drain.closed();
        let closed_by = match (watch.first(), watch.ending) {
            (Some(Closer::Peer(side)), _) => side.name(),
            (_, Some(ending)) => ending.closed_by(),
            _ => closed.who(),
        };
        let error = match &closed {
            Closed::ClientError(e) | Closed::UpstreamError(e) => Some(e.to_string()),
            _ => None,
        };
        tracing::info!(
            target: "access",
            peer = %self.peer,
            http = %crate::access::http_version(self.http),
            route = %self.stats.name,
            upstream = %self.upstream_server,
            bytes_to_upstream = splice.up.bytes,
            bytes_to_client = splice.down.bytes,
            messages_to_upstream = splice.up.reader.messages,
            messages_to_client = splice.down.reader.messages,
            client_close = watch.close_from(Side::Client),
            upstream_close = watch.close_from(Side::Upstream),
            proxy_close,
            duration_ms = duration.as_millis() as u64,
            closed_by,
            error,
            "tunnel closed"
        );
    }
}
