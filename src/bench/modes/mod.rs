//! The six benchmark modes and what they share: the run context
//! ([`Ctx`]), the connection-rate pacer, spawning workers and collecting
//! their stats with a hard stop, and clean WebSocket closing.

pub mod bulk;
pub mod echo;
pub mod handshake;
pub mod hold;
pub mod http;
pub mod storm;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use super::connect::{Connector, Ws};
use super::error::Failure;
use super::plan::Plan;
use super::stats::{Live, WorkerStats};

/// Pause after a failed connection attempt before the next one, so a dead
/// target does not turn the tool into a busy loop.
pub const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// Up to this many workers, latency histograms keep 3 significant digits.
pub const PRECISE_UP_TO: usize = 500;

/// What every worker of a run shares (read-only, except for atomics).
pub struct Ctx {
    pub plan: Plan,
    pub connector: Connector,
    pub live: Arc<Live>,
    pub start: Instant,
    /// End of the measured period (for hold: end of the opening phase budget).
    pub deadline: Instant,
    pub pacer: Option<Pacer>,
}

impl Ctx {
    /// The largest latency worth keeping apart in histograms.
    pub fn latency_max(&self) -> Duration {
        (self.plan.timeout * 2).max(Duration::from_secs(10))
    }

    /// Fresh stats for one worker. Above [`PRECISE_UP_TO`] workers the
    /// histograms keep 2 significant digits instead of 3, to bound memory.
    pub fn new_stats(&self) -> WorkerStats {
        WorkerStats::new(self.latency_max(), self.plan.connections <= PRECISE_UP_TO)
    }

    /// Waits for a connection slot under `--rate`. False when the next slot
    /// falls after `until`.
    pub async fn pace(&self, until: Instant) -> bool {
        match &self.pacer {
            Some(p) => p.wait(until).await,
            None => true,
        }
    }

    /// Opens a WebSocket for a long-lived worker, retrying (with a short
    /// backoff, failures counted) until the deadline. `None` at the deadline.
    pub async fn connect_until_deadline(&self, stats: &mut WorkerStats) -> Option<Ws> {
        loop {
            if Instant::now() >= self.deadline || !self.pace(self.deadline).await {
                return None;
            }
            match self.connector.websocket().await {
                Ok(ws) => {
                    stats.connections_opened += 1;
                    return Some(ws);
                }
                Err(failure) => {
                    stats.fail(failure, &self.live);
                    self.backoff().await;
                }
            }
        }
    }

    /// Sleeps [`CONNECT_BACKOFF`], but never past the deadline.
    pub async fn backoff(&self) {
        let until = (Instant::now() + CONNECT_BACKOFF).min(self.deadline);
        tokio::time::sleep_until(until.into()).await;
    }
}

/// Spreads new connections evenly at a fixed rate over all workers, without
/// a lock: each caller claims the next slot with a compare-and-swap. A late
/// caller does not earn a burst to catch up.
pub struct Pacer {
    start: Instant,
    interval_ns: u64,
    next_ns: AtomicU64,
}

impl Pacer {
    pub fn new(rate_per_sec: f64, start: Instant) -> Pacer {
        let interval_ns = (1e9 / rate_per_sec).clamp(1.0, 3.6e12) as u64;
        Pacer {
            start,
            interval_ns,
            next_ns: AtomicU64::new(0),
        }
    }

    /// Claims the next slot (nanoseconds after start) given the current time.
    pub fn claim(&self, now_ns: u64) -> u64 {
        let mut current = self.next_ns.load(Ordering::Relaxed);
        loop {
            let slot = current.max(now_ns);
            match self.next_ns.compare_exchange_weak(
                current,
                slot + self.interval_ns,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return slot,
                Err(actual) => current = actual,
            }
        }
    }

    /// Waits for the next slot; false (without waiting) if it is after `until`.
    pub async fn wait(&self, until: Instant) -> bool {
        let now_ns = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let at = self.start + Duration::from_nanos(self.claim(now_ns));
        if at >= until {
            return false;
        }
        tokio::time::sleep_until(at.into()).await;
        true
    }
}

/// Runs `n` workers and merges their stats. Workers stop by themselves
/// (every wait they do is bounded); past `hard_stop` the stragglers are
/// aborted and a note says so.
pub async fn run_workers<F, Fut>(
    ctx: &Arc<Ctx>,
    n: usize,
    hard_stop: Instant,
    worker: F,
) -> (WorkerStats, Vec<String>)
where
    F: Fn(Arc<Ctx>, usize) -> Fut,
    Fut: Future<Output = WorkerStats> + Send + 'static,
{
    let mut set = JoinSet::new();
    for id in 0..n {
        set.spawn(worker(ctx.clone(), id));
    }
    let mut total = ctx.new_stats();
    let mut notes = Vec::new();
    loop {
        match tokio::time::timeout_at(hard_stop.into(), set.join_next()).await {
            Ok(Some(Ok(stats))) => total.merge(&stats),
            Ok(Some(Err(e))) if e.is_panic() => notes.push(format!("a worker crashed: {e}")),
            Ok(Some(Err(_))) => {}
            Ok(None) => break,
            Err(_) => {
                notes.push(format!(
                    "{} worker(s) did not stop in time and were aborted; their counts are missing",
                    set.len()
                ));
                set.abort_all();
                break;
            }
        }
    }
    (total, notes)
}

/// The usual hard stop: the deadline plus room for a last operation, the
/// close handshake and a drain.
pub fn hard_stop(ctx: &Ctx) -> Instant {
    ctx.deadline + ctx.plan.timeout * 3 + Duration::from_secs(1)
}

/// Closes a WebSocket cleanly: sends Close, then reads until the server's
/// Close arrives and the stream ends, all within `timeout`.
pub async fn close_ws(ws: &mut Ws, timeout: Duration) -> Result<(), Failure> {
    let closing = async {
        ws.close(None)
            .await
            .map_err(|e| Failure::from_ws(&e, "closing"))?;
        let mut server_closed = false;
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Close(_)) => server_closed = true,
                Ok(_) => {}
                // Once the server's Close frame is in, the WebSocket close is
                // complete; an abrupt end of the transport after it (e.g. no
                // TLS close_notify) is not worth an error.
                Err(_) if server_closed => break,
                Err(e) => return Err(Failure::from_ws(&e, "closing")),
            }
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, closing).await {
        Ok(result) => result,
        Err(_) => Err(Failure::timeout("closing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_spaces_slots_without_catch_up_bursts() {
        let p = Pacer::new(1000.0, Instant::now()); // 1 ms apart
        assert_eq!(p.claim(0), 0);
        assert_eq!(p.claim(0), 1_000_000);
        assert_eq!(p.claim(0), 2_000_000);
        // A caller arriving late gets "now", not a backlog of past slots.
        assert_eq!(p.claim(50_000_000), 50_000_000);
        assert_eq!(p.claim(50_000_000), 51_000_000);
    }
}
