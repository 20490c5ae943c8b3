//! Saying goodbye to one tunnel: the handle an owner keeps to ask a tunnel
//! to close (Close 1001 to both sides, at frame boundaries), and the
//! jittered moment of `max_lifetime`.
//!
//! A [`Goodbye`] is cheap: one shared flag and one waker slot. Whoever
//! opens a tunnel may keep a clone (an upstream fleet rebalancing its
//! servers, say) and [`Goodbye::fire`] it from any thread; the tunnel then
//! ends the way a drain ends it, with `closed_by="goodbye"`. A tunnel
//! opened without one pays nothing for it.

use futures_util::task::AtomicWaker;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Context;
use std::time::{Duration, Instant};

/// Asks one tunnel to close. Clones share the same tunnel.
#[derive(Clone, Default, Debug)]
pub struct Goodbye(Arc<Inner>);

#[derive(Default, Debug)]
struct Inner {
    fired: AtomicBool,
    waker: AtomicWaker,
}

impl Goodbye {
    pub fn new() -> Goodbye {
        Goodbye::default()
    }

    /// Ask the tunnel to close: Close 1001 to both of its sides.
    pub fn fire(&self) {
        self.0.fired.store(true, Ordering::Release);
        self.0.waker.wake();
    }

    /// Whether [`Goodbye::fire`] was called; registers the task to be
    /// woken when it is.
    pub fn poll_fired(&self, cx: &mut Context<'_>) -> bool {
        if self.0.fired.load(Ordering::Acquire) {
            return true;
        }
        self.0.waker.register(cx.waker());
        self.0.fired.load(Ordering::Acquire)
    }

    pub fn is_fired(&self) -> bool {
        self.0.fired.load(Ordering::Acquire)
    }
}

/// When a tunnel opened at `opened` reaches `max_lifetime`, give or take
/// 10 %: `unit` is a random number in `[0, 1)`, so that tunnels opened
/// together do not all close together.
pub fn lifetime_end(opened: Instant, max_lifetime: Duration, unit: f64) -> Instant {
    opened + max_lifetime.mul_f64(0.9 + 0.2 * unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Poll;

    #[test]
    fn lifetimes_are_jittered_by_a_tenth() {
        let t0 = Instant::now();
        let hour = Duration::from_secs(3600);
        assert_eq!(lifetime_end(t0, hour, 0.0), t0 + Duration::from_secs(3240));
        assert_eq!(lifetime_end(t0, hour, 0.5), t0 + hour);
        assert!(lifetime_end(t0, hour, 0.999_999) < t0 + Duration::from_secs(3960));
    }

    #[tokio::test]
    async fn a_fired_goodbye_wakes_its_tunnel() {
        let goodbye = Goodbye::new();
        let kept = goodbye.clone();
        let waiter = tokio::spawn(std::future::poll_fn(move |cx| {
            if goodbye.poll_fired(cx) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        kept.fire();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("not woken")
            .unwrap();
        assert!(kept.is_fired());
    }
}
