//! The handshake queue of one server: at most `max_handshakes` WebSocket
//! handshakes in flight (connect, request, `101`); the others wait their
//! turn in arrival order, for up to `queue_timeout`.
//!
//! A reconnect storm then reaches the backend at the pace it answers, as
//! HAProxy's `maxconn` with its queue does. tokio's semaphore is fair (first
//! come, first served), so it is the queue. The limit may change on reload:
//! more room takes effect at once; less is taken back as handshakes finish.

use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};

/// One server's queue.
pub struct Queue {
    room: Semaphore,
    /// The limit in force; 0 = none.
    limit: AtomicUsize,
    /// Permits to take back as handshakes finish, after the limit shrank.
    debt: AtomicUsize,
    /// The upstream's queue length (all its servers).
    waiting: Gauge,
}

/// A handshake waited longer than `queue_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

/// A turn: the handshake may go on while this is held.
pub struct Turn<'a> {
    permit: Option<SemaphorePermit<'a>>,
    queue: &'a Queue,
}

impl Queue {
    pub fn new(waiting: Gauge) -> Queue {
        Queue {
            room: Semaphore::new(0),
            limit: AtomicUsize::new(0),
            debt: AtomicUsize::new(0),
            waiting,
        }
    }

    /// Put `limit` in force (0 = no limit).
    pub fn set_limit(&self, limit: usize) {
        let old = self.limit.swap(limit, Ordering::AcqRel);
        match (old, limit) {
            (old, new) if old == new => {}
            // From no limit: handshakes already in flight hold no permit.
            (0, new) => self.room.add_permits(new),
            // To no limit: turns still out are forgotten as they end.
            (_, 0) => {
                self.room.forget_permits(usize::MAX >> 4);
                self.debt.store(0, Ordering::Release);
            }
            (old, new) if new > old => {
                // Paying off debt first, then new room.
                let mut grow = new - old;
                let paid = self.pay_debt(grow);
                grow -= paid;
                self.room.add_permits(grow);
            }
            (old, new) => {
                let shrink = old - new;
                let taken = self.room.forget_permits(shrink);
                self.debt.fetch_add(shrink - taken, Ordering::AcqRel);
            }
        }
    }

    /// Forgive up to `n` of the debt; how much was forgiven.
    fn pay_debt(&self, n: usize) -> usize {
        let mut debt = self.debt.load(Ordering::Acquire);
        loop {
            let paid = debt.min(n);
            match self
                .debt
                .compare_exchange(debt, debt - paid, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return paid,
                Err(actual) => debt = actual,
            }
        }
    }

    /// Wait for a turn, at most `timeout`.
    pub async fn turn(&self, timeout: Duration) -> Result<Turn<'_>, TimedOut> {
        if self.limit.load(Ordering::Acquire) == 0 {
            return Ok(Turn {
                permit: None,
                queue: self,
            });
        }
        // Fair: fails while others wait, so nobody jumps the queue.
        if let Ok(permit) = self.room.try_acquire() {
            return Ok(Turn {
                permit: Some(permit),
                queue: self,
            });
        }
        self.waiting.inc();
        let _waiting = Waiting(&self.waiting);
        match tokio::time::timeout(timeout, self.room.acquire()).await {
            Ok(Ok(permit)) => Ok(Turn {
                permit: Some(permit),
                queue: self,
            }),
            // The semaphore is never closed; a timeout it is.
            Ok(Err(_)) | Err(_) => Err(TimedOut),
        }
    }

    /// Handshakes in flight with a turn, for tests and logs.
    pub fn in_flight(&self) -> usize {
        let limit = self.limit.load(Ordering::Acquire);
        limit.saturating_sub(self.room.available_permits() + self.debt.load(Ordering::Acquire))
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take()
            && (self.queue.limit.load(Ordering::Acquire) == 0 || self.queue.pay_debt(1) == 1)
        {
            // The limit shrank (or went) since this turn began: its room
            // goes away.
            permit.forget();
        }
    }
}

/// Counts one waiting handshake in the queue length while it waits.
struct Waiting<'a>(&'a Gauge);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn no_limit_never_waits() {
        let queue = Queue::new(Gauge::default());
        let turns: Vec<_> =
            futures_util::future::join_all((0..100).map(|_| queue.turn(Duration::from_millis(1))))
                .await;
        assert!(turns.iter().all(Result::is_ok));
    }

    #[tokio::test]
    async fn turns_are_given_in_arrival_order() {
        let gauge = Gauge::default();
        let queue = Arc::new(Queue::new(gauge.clone()));
        queue.set_limit(2);
        let a = queue.turn(Duration::from_secs(5)).await.unwrap();
        let b = queue.turn(Duration::from_secs(5)).await.unwrap();
        assert_eq!(queue.in_flight(), 2);
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for i in 0..5 {
            let (queue, order) = (queue.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let _turn = queue.turn(Duration::from_secs(5)).await.unwrap();
                order.lock().unwrap().push(i);
            }));
            // Each waiter queues before the next is spawned.
            tokio::task::yield_now().await;
        }
        assert_eq!(gauge.get(), 5);
        drop((a, b));
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4]);
        assert_eq!(gauge.get(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_times_out() {
        let gauge = Gauge::default();
        let queue = Queue::new(gauge.clone());
        queue.set_limit(1);
        let _held = queue.turn(Duration::from_secs(1)).await.unwrap();
        let waited = queue.turn(Duration::from_millis(20)).await;
        assert_eq!(waited.err(), Some(TimedOut));
        assert_eq!(gauge.get(), 0);
    }

    #[tokio::test]
    async fn the_limit_changes_on_reload() {
        let queue = Queue::new(Gauge::default());
        queue.set_limit(3);
        let turns: Vec<_> =
            futures_util::future::join_all((0..3).map(|_| queue.turn(Duration::from_secs(1))))
                .await;
        // Shrink to 1 with three in flight: two turns' room goes away.
        queue.set_limit(1);
        drop(turns);
        assert_eq!(queue.room.available_permits(), 1);
        assert_eq!(queue.debt.load(Ordering::Relaxed), 0);
        queue.set_limit(4);
        assert_eq!(queue.room.available_permits(), 4);
        queue.set_limit(0);
        assert!(queue.turn(Duration::from_millis(1)).await.is_ok());
    }
}
