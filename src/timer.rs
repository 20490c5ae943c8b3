//! Coarse timeouts: cheap to arm and to disarm, accurate to one tick.
//!
//! Every proxied request arms timeouts that almost never fire: hyper's
//! `client_header_timeout` while it waits for the next request head, and
//! `read_timeout` while the upstream prepares its answer. In tokio's timer
//! wheel each one is a lock, an insertion and a removal, and hyper's is a
//! fresh allocation per request as well. Here each worker keeps its pending
//! timeouts in a slab of its own (no lock: only that thread touches it), and
//! its [`tick`] marks and wakes the ones that are due every [`TICK`]. A
//! timeout therefore fires up to one tick late, which for timeouts counted
//! in seconds is noise; in exchange, polling one (which a busy connection
//! does on every wake-up) only looks at that mark and never reads the clock.
//!
//! Off a worker thread (no ticker runs there) a [`Timeout`] is an ordinary
//! tokio sleep.

use slab::Slab;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How often a worker wakes its due timeouts.
pub const TICK: Duration = Duration::from_millis(250);

thread_local! {
    /// The pending timeouts of this worker; `None` off worker threads.
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
    /// Ticks so far on this worker, and the instant of the last one.
    static TICKS: Cell<u64> = const { Cell::new(0) };
    static LAST_TICK: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The instant of this worker's last tick: at most one [`TICK`] old, and
/// read without the clock. Off a worker thread, the clock.
pub fn coarse_now() -> Instant {
    LAST_TICK.get().unwrap_or_else(Instant::now)
}

struct Pending {
    /// Tells this thread's slab from any other's.
    id: u64,
    entries: Slab<Entry>,
}

struct Entry {
    deadline: Instant,
    /// Set by the tick that found the deadline passed; the owner then sees
    /// it without reading the clock, and removes the entry.
    fired: bool,
    waker: Option<Waker>,
}

/// Give the calling thread a slab of timeouts; its runtime must call
/// [`tick`] every [`TICK`].
pub fn install() {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    PENDING.with(|p| {
        *p.borrow_mut() = Some(Pending {
            id,
            entries: Slab::new(),
        });
    });
}

/// Wake this worker's timeouts that are due.
pub fn tick() {
    let now = Instant::now();
    TICKS.set(TICKS.get().wrapping_add(1));
    LAST_TICK.set(Some(now));
    let mut due = Vec::new();
    PENDING.with(|p| {
        if let Some(pending) = p.borrow_mut().as_mut() {
            for (_, entry) in pending.entries.iter_mut() {
                if !entry.fired && entry.deadline <= now {
                    entry.fired = true;
                    due.extend(entry.waker.take());
                }
            }
        }
    });
    // Woken outside the borrow, in case a waker reaches back into the slab.
    for waker in due {
        waker.wake();
    }
}

/// A future ready at its deadline (or up to one [`TICK`] after it).
pub struct Timeout {
    deadline: Instant,
    kind: Kind,
    /// The tick count when [`Timeout::poll_in_task`] last found it pending.
    seen: u64,
}

enum Kind {
    /// On a worker: an entry in its slab once polled.
    Coarse { slot: Option<(u64, usize)> },
    /// Elsewhere: tokio's timer.
    Tokio(Pin<Box<tokio::time::Sleep>>),
}

impl Timeout {
    pub fn after(duration: Duration) -> Timeout {
        Timeout::at(Instant::now() + duration)
    }

    pub fn at(deadline: Instant) -> Timeout {
        let on_worker = PENDING.with(|p| p.borrow().is_some());
        let kind = if on_worker {
            Kind::Coarse { slot: None }
        } else {
            Kind::Tokio(Box::pin(tokio::time::sleep_until(deadline.into())))
        };
        Timeout {
            deadline,
            kind,
            seen: u64::MAX,
        }
    }

    /// Poll from the one task that owns this timeout (its waker never
    /// changes): between two ticks nothing can make a registered timeout
    /// ready, so a poll then costs one thread-local read. Resetting the
    /// deadline is seen on the next tick, as with [`Timeout::poll`].
    #[inline]
    pub fn poll_in_task(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let registered = matches!(self.kind, Kind::Coarse { slot: Some(_) });
        let ticks = TICKS.get();
        if registered && ticks == self.seen {
            return Poll::Pending;
        }
        let poll = Pin::new(&mut *self).poll(cx);
        if poll.is_pending() {
            self.seen = ticks;
        }
        poll
    }

    /// Move the deadline.
    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        match &mut self.kind {
            Kind::Coarse { slot } => {
                if let Some((id, key)) = *slot {
                    with_entry(id, key, |entry| {
                        entry.deadline = deadline;
                        entry.fired = false;
                    });
                }
            }
            Kind::Tokio(sleep) => sleep.as_mut().reset(deadline.into()),
        }
    }

    fn forget_slot(slot: &mut Option<(u64, usize)>) {
        if let Some((id, key)) = slot.take() {
            PENDING.with(|p| {
                if let Some(pending) = p.borrow_mut().as_mut()
                    && pending.id == id
                {
                    pending.entries.try_remove(key);
                }
            });
        }
    }
}

/// Run `f` on this thread's entry `key` if the slab is the one it was
/// registered in.
fn with_entry(id: u64, key: usize, f: impl FnOnce(&mut Entry)) -> bool {
    PENDING.with(|p| match p.borrow_mut().as_mut() {
        Some(pending) if pending.id == id => pending.entries.get_mut(key).map(f).is_some(),
        _ => false,
    })
}

impl Future for Timeout {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let slot = match &mut this.kind {
            Kind::Tokio(sleep) => return sleep.as_mut().poll(cx),
            Kind::Coarse { slot } => slot,
        };
        // Registered: the tick says whether the deadline passed, so the
        // many polls of a busy connection or tunnel never read the clock.
        if let Some((id, key)) = *slot {
            let mut fired = false;
            let known = with_entry(id, key, |entry| {
                if entry.fired {
                    fired = true;
                } else if !entry
                    .waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    entry.waker = Some(cx.waker().clone());
                }
            });
            if fired {
                Timeout::forget_slot(slot);
                return Poll::Ready(());
            }
            if known {
                return Poll::Pending;
            }
            // Its slab is another thread's: register here instead.
            *slot = None;
        }
        if Instant::now() >= this.deadline {
            return Poll::Ready(());
        }
        let deadline = this.deadline;
        *slot = PENDING.with(|p| {
            p.borrow_mut().as_mut().map(|pending| {
                let key = pending.entries.insert(Entry {
                    deadline,
                    fired: false,
                    waker: Some(cx.waker().clone()),
                });
                (pending.id, key)
            })
        });
        if slot.is_none() {
            // Moved off its worker: fall back to tokio's timer.
            let mut sleep = Box::pin(tokio::time::sleep_until(deadline.into()));
            let poll = sleep.as_mut().poll(cx);
            this.kind = Kind::Tokio(sleep);
            return poll;
        }
        Poll::Pending
    }
}

impl Drop for Timeout {
    fn drop(&mut self) {
        if let Kind::Coarse { slot } = &mut self.kind {
            Timeout::forget_slot(slot);
        }
    }
}

/// hyper's timer (for `header_read_timeout`), made of [`Timeout`]s.
#[derive(Clone, Copy, Debug, Default)]
pub struct CoarseTimer;

impl hyper::rt::Sleep for Timeout {}

impl hyper::rt::Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Timeout::after(duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Timeout::at(deadline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn poll_once(timeout: &mut Timeout) -> Poll<()> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *timeout).poll(cx))).await
    }

    fn worker_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn coarse_timeouts_fire_on_the_tick_after_their_deadline() {
        worker_runtime().block_on(async {
            install();
            let ticker = tokio::spawn(async {
                let mut tick_every = tokio::time::interval(TICK);
                loop {
                    tick_every.tick().await;
                    tick();
                }
            });
            let started = Instant::now();
            Timeout::after(Duration::from_millis(100)).await;
            let took = started.elapsed();
            assert!(took >= Duration::from_millis(100), "fired early: {took:?}");
            assert!(
                took < Duration::from_millis(100) + 4 * TICK,
                "fired late: {took:?}"
            );

            // A moved deadline is the one kept.
            let started = Instant::now();
            let mut timeout = Timeout::after(Duration::from_secs(3600));
            let pending = poll_once(&mut timeout).await;
            assert!(pending.is_pending());
            timeout.reset(Instant::now() + Duration::from_millis(50));
            timeout.await;
            assert!(started.elapsed() < Duration::from_millis(50) + 4 * TICK);

            // One that fired waits again once given a new deadline, as a
            // tunnel's timer does.
            let mut timeout = Timeout::after(Duration::from_millis(10));
            (&mut timeout).await;
            let reset_at = Instant::now();
            timeout.reset(reset_at + Duration::from_millis(50));
            assert!(poll_once(&mut timeout).await.is_pending());
            (&mut timeout).await;
            let took = reset_at.elapsed();
            assert!(took >= Duration::from_millis(50), "fired early: {took:?}");

            // Dropped timeouts leave nothing behind.
            for _ in 0..100 {
                let mut t = Timeout::after(Duration::from_secs(60));
                assert!(poll_once(&mut t).await.is_pending());
            }
            let left = PENDING.with(|p| p.borrow().as_ref().map(|p| p.entries.len()));
            assert_eq!(left, Some(0));
            ticker.abort();
        });
    }

    #[test]
    fn off_a_worker_a_timeout_is_a_tokio_sleep() {
        worker_runtime().block_on(async {
            let started = Instant::now();
            Timeout::after(Duration::from_millis(30)).await;
            let took = started.elapsed();
            assert!(took >= Duration::from_millis(30) && took < Duration::from_secs(1));
        });
    }
}
