//! Both directions of a tunnel polled as one future: each direction runs
//! when its own waker was woken ([`super::wake`]) or when a frame of the
//! proxy's waits to go its way, and the future ends when a side is done,
//! when the close handshake completed, or on an error.

use super::flow::{Flow, FlowError};
use super::liveness::Side;
use super::wake::Wakers;
use super::watch::Watch;
use crate::io::End;
use crate::metrics::RouteStats;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// How the relay loop ended.
#[derive(Debug)]
pub enum Closed {
    Client,
    Upstream,
    ClientError(io::Error),
    UpstreamError(io::Error),
    IdleTimeout,
    /// The hard stop of a shutdown.
    Shutdown,
    /// The close handshake completed both ways.
    Handshake,
    /// The peers did not answer the proxy's Close in time.
    CloseTimeout,
}

impl Closed {
    pub(super) fn who(&self) -> &'static str {
        match self {
            Closed::Client => "client",
            Closed::Upstream => "upstream",
            Closed::ClientError(_) => "client-error",
            Closed::UpstreamError(_) => "upstream-error",
            Closed::IdleTimeout => "idle-timeout",
            Closed::Shutdown => "shutdown",
            Closed::Handshake | Closed::CloseTimeout => "proxy",
        }
    }

    /// The side that ended it, for a tunnel without any Close frame.
    pub(super) fn by(&self) -> &'static str {
        match self {
            Closed::Client | Closed::ClientError(_) => "client",
            Closed::Upstream | Closed::UpstreamError(_) => "upstream",
            _ => "proxy",
        }
    }
}

/// Both directions of a tunnel, polled as one future.
pub struct Splice<A, B> {
    pub(super) client: A,
    pub(super) upstream: B,
    /// Client → upstream.
    pub(super) up: Flow,
    /// Upstream → client.
    pub(super) down: Flow,
    pub(super) watch: Watch,
    pub(super) stats: Option<Arc<RouteStats>>,
    /// Each direction's own waker: a poll runs the directions woken.
    pub(super) wakers: Wakers,
    /// This direction's end was passed on while the proxy was closing the
    /// tunnel: it waits for the other side's answer, or its deadline.
    pub(super) ended: [bool; 2],
}

impl<A, B> Future for Splice<A, B>
where
    A: End,
    B: End,
{
    type Output = Closed;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Closed> {
        let this = &mut *self;
        let stats = this.stats.as_deref();
        let [mut run_up, mut run_down] = this.wakers.woken(cx);
        let task = cx.waker();
        let mut up = Poll::Pending;
        let mut down = Poll::Pending;
        for _ in 0..2 {
            let wanted = (
                this.watch.wants(Side::Client),
                this.watch.wants(Side::Upstream),
            );
            // A direction with a frame of the proxy's to write runs too.
            if (run_up || wanted.1) && !this.ended[0] {
                let mut cx = Context::from_waker(this.wakers.waker(0, task));
                up = this.up.poll(
                    &mut cx,
                    &mut this.client,
                    &mut this.upstream,
                    &mut this.watch,
                    stats,
                );
            }
            if (run_down || wanted.0) && !this.ended[1] {
                let mut cx = Context::from_waker(this.wakers.waker(1, task));
                down = this.down.poll(
                    &mut cx,
                    &mut this.upstream,
                    &mut this.client,
                    &mut this.watch,
                    stats,
                );
            }
            // A frame of the proxy's queued towards a direction polled
            // before it was: run that direction again, so it goes now.
            run_up = !wanted.1 && this.watch.wants(Side::Upstream);
            run_down = !wanted.0 && this.watch.wants(Side::Client);
            if !(run_up || run_down) || up.is_ready() || down.is_ready() {
                break;
            }
        }
        // While the proxy closes the tunnel, a side that closed its
        // connection is done, and the other still has its time to answer.
        if this.watch.ending.is_some() {
            for (i, result) in [(0, &mut up), (1, &mut down)] {
                if matches!(result, Poll::Ready(Ok(()))) {
                    this.ended[i] = true;
                    *result = Poll::Pending;
                }
            }
        }
        if this.ended == [true, true]
            || (this.watch.complete() && this.up.drained() && this.down.drained())
        {
            return Poll::Ready(Closed::Handshake);
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
