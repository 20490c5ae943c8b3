//! Measurement: per-worker counters and latency histograms (no sharing on
//! the hot path, merged once at the end), error counts by kind, and the few
//! atomics ([`Live`]) read by the once-a-second progress line.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::error::{ErrorKind, Failure};

/// How often a worker publishes its op count to [`Live`].
const LIVE_FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Failed operations counted by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ErrorCounts {
    pub refused: u64,
    pub tls: u64,
    /// HTTP status seen instead of `101 Switching Protocols` -> count.
    pub handshake_status: BTreeMap<u16, u64>,
    pub closed_early: u64,
    pub timeout: u64,
    pub too_many_open_files: u64,
    /// Echoed payload differed from the one sent.
    pub mismatch: u64,
    pub other: u64,
}

impl ErrorCounts {
    pub fn add(&mut self, kind: ErrorKind, n: u64) {
        match kind {
            ErrorKind::Refused => self.refused += n,
            ErrorKind::Tls => self.tls += n,
            ErrorKind::HandshakeStatus(code) => {
                *self.handshake_status.entry(code).or_default() += n;
            }
            ErrorKind::ClosedEarly => self.closed_early += n,
            ErrorKind::Timeout => self.timeout += n,
            ErrorKind::TooManyOpenFiles => self.too_many_open_files += n,
            ErrorKind::Mismatch => self.mismatch += n,
            ErrorKind::Other => self.other += n,
        }
    }

    /// Count for one kind (for `HandshakeStatus(code)`, that status only).
    pub fn get(&self, kind: ErrorKind) -> u64 {
        match kind {
            ErrorKind::Refused => self.refused,
            ErrorKind::Tls => self.tls,
            ErrorKind::HandshakeStatus(code) => {
                self.handshake_status.get(&code).copied().unwrap_or(0)
            }
            ErrorKind::ClosedEarly => self.closed_early,
            ErrorKind::Timeout => self.timeout,
            ErrorKind::TooManyOpenFiles => self.too_many_open_files,
            ErrorKind::Mismatch => self.mismatch,
            ErrorKind::Other => self.other,
        }
    }

    /// The non-zero counts, in a stable order.
    pub fn nonzero(&self) -> Vec<(ErrorKind, u64)> {
        let mut out = Vec::new();
        let simple = [
            ErrorKind::Refused,
            ErrorKind::Tls,
            ErrorKind::ClosedEarly,
            ErrorKind::Timeout,
            ErrorKind::TooManyOpenFiles,
            ErrorKind::Mismatch,
            ErrorKind::Other,
        ];
        for kind in simple {
            let n = self.get(kind);
            if n > 0 {
                out.push((kind, n));
            }
        }
        for (&code, &n) in &self.handshake_status {
            if n > 0 {
                out.push((ErrorKind::HandshakeStatus(code), n));
            }
        }
        out.sort_by_key(|(kind, _)| *kind);
        out
    }

    pub fn total(&self) -> u64 {
        self.nonzero().iter().map(|(_, n)| n).sum()
    }

    pub fn merge(&mut self, other: &ErrorCounts) {
        for (kind, n) in other.nonzero() {
            self.add(kind, n);
        }
    }
}

/// Counters shared by all workers for the progress line only. Workers
/// publish in batches (every 100 ms), so these are not on the hot path.
#[derive(Debug, Default)]
pub struct Live {
    pub ops: AtomicU64,
    pub errors: AtomicU64,
    pub open: AtomicU64,
    pub peak_open: AtomicU64,
}

impl Live {
    /// Marks a connection open until the returned guard is dropped.
    pub fn open_guard(&self) -> OpenGuard<'_> {
        let now = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_open.fetch_max(now, Ordering::Relaxed);
        OpenGuard(self)
    }
}

/// Keeps [`Live::open`] counted while a connection is open.
pub struct OpenGuard<'a>(&'a Live);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A latency histogram in nanoseconds.
#[derive(Debug, Clone)]
pub struct LatencyHistogram(Option<Histogram<u64>>);

impl LatencyHistogram {
    /// Values above `max` are recorded as `max`. `precise` keeps 3
    /// significant digits (about 150 KiB per histogram), otherwise 2 (about
    /// 20 KiB, for runs with thousands of workers).
    pub fn new(max: Duration, precise: bool) -> Self {
        let high = u64::try_from(max.as_nanos())
            .unwrap_or(u64::MAX / 2)
            .max(1_000_000);
        let sigfig = if precise { 3 } else { 2 };
        LatencyHistogram(Histogram::new_with_bounds(100, high, sigfig).ok())
    }

    #[inline]
    pub fn record(&mut self, d: Duration) {
        if let Some(h) = &mut self.0 {
            h.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        }
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        match (&mut self.0, &other.0) {
            (Some(mine), Some(theirs)) => {
                // Same bounds on both sides, so this cannot overflow the range.
                let _ = mine.add(theirs);
            }
            (None, Some(theirs)) => self.0 = Some(theirs.clone()),
            _ => {}
        }
    }

    pub fn count(&self) -> u64 {
        self.0.as_ref().map_or(0, |h| h.len())
    }

    /// Percentiles in microseconds, or `None` when nothing was recorded.
    pub fn summary(&self) -> Option<LatencySummary> {
        let h = self.0.as_ref().filter(|h| !h.is_empty())?;
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(LatencySummary {
            samples: h.len(),
            min_us: us(h.min()),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        })
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub samples: u64,
    pub min_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// Everything one worker measured. Owned by the worker, merged at the end.
#[derive(Debug)]
pub struct WorkerStats {
    pub ops: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub latency: LatencyHistogram,
    pub errors: ErrorCounts,
    /// First detail seen per error label, e.g. "tls" -> "invalid peer certificate".
    pub samples: BTreeMap<String, String>,
    pub connections_opened: u64,
    pub http_status: BTreeMap<u16, u64>,
    /// When the worker stopped measuring (before closing connections).
    pub active_until: Option<Instant>,
    pending_ops: u64,
    last_flush: Instant,
}

impl WorkerStats {
    /// See [`LatencyHistogram::new`] for `latency_max` and `precise`.
    pub fn new(latency_max: Duration, precise: bool) -> Self {
        WorkerStats {
            ops: 0,
            bytes_sent: 0,
            bytes_received: 0,
            latency: LatencyHistogram::new(latency_max, precise),
            errors: ErrorCounts::default(),
            samples: BTreeMap::new(),
            connections_opened: 0,
            http_status: BTreeMap::new(),
            active_until: None,
            pending_ops: 0,
            last_flush: Instant::now(),
        }
    }

    /// One successful operation that took `latency`, finished at `now`.
    #[inline]
    pub fn op(&mut self, latency: Duration, now: Instant, live: &Live) {
        self.latency.record(latency);
        self.op_untimed(now, live);
    }

    /// One successful operation without a latency sample.
    #[inline]
    pub fn op_untimed(&mut self, now: Instant, live: &Live) {
        self.ops += 1;
        self.pending_ops += 1;
        if now.duration_since(self.last_flush) >= LIVE_FLUSH_EVERY {
            self.flush(live);
            self.last_flush = now;
        }
    }

    /// Publishes the not-yet-published op count to the progress counters.
    pub fn flush(&mut self, live: &Live) {
        if self.pending_ops > 0 {
            live.ops.fetch_add(self.pending_ops, Ordering::Relaxed);
            self.pending_ops = 0;
        }
    }

    /// Counts a failure and publishes it to the progress counters.
    pub fn fail(&mut self, failure: Failure, live: &Live) {
        self.record_failure(failure);
        live.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failure that was already published to the progress counters.
    pub fn record_failure(&mut self, failure: Failure) {
        self.errors.add(failure.kind, 1);
        self.samples
            .entry(failure.kind.label().to_string())
            .or_insert(failure.detail);
    }

    /// Marks the end of the measured part of this worker's run.
    pub fn stop_measuring(&mut self, live: &Live) {
        self.flush(live);
        self.active_until = Some(Instant::now());
    }

    pub fn merge(&mut self, other: &WorkerStats) {
        self.ops += other.ops;
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        self.latency.merge(&other.latency);
        self.errors.merge(&other.errors);
        for (label, detail) in &other.samples {
            self.samples
                .entry(label.clone())
                .or_insert_with(|| detail.clone());
        }
        self.connections_opened += other.connections_opened;
        for (&code, &n) in &other.http_status {
            *self.http_status.entry(code).or_default() += n;
        }
        self.active_until = self.active_until.max(other.active_until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_survive_merge() {
        let live = Live::default();
        let now = Instant::now();
        let mut a = WorkerStats::new(Duration::from_secs(10), true);
        let mut b = WorkerStats::new(Duration::from_secs(10), true);
        // a: 1..=900 µs, b: 901..=1000 µs -> merged: 1..=1000 µs.
        for us in 1..=900 {
            a.op(Duration::from_micros(us), now, &live);
        }
        for us in 901..=1000 {
            b.op(Duration::from_micros(us), now, &live);
        }
        a.merge(&b);
        assert_eq!(a.ops, 1000);
        let s = a.latency.summary().unwrap();
        assert_eq!(s.samples, 1000);
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.002 + 0.1;
        assert!(close(s.p50_us, 500.0), "p50 {}", s.p50_us);
        assert!(close(s.p90_us, 900.0), "p90 {}", s.p90_us);
        assert!(close(s.p99_us, 990.0), "p99 {}", s.p99_us);
        assert!(close(s.max_us, 1000.0), "max {}", s.max_us);
        assert!(close(s.min_us, 1.0), "min {}", s.min_us);
    }

    #[test]
    fn saturates_instead_of_failing() {
        let mut h = LatencyHistogram::new(Duration::from_secs(1), true);
        h.record(Duration::from_secs(3600));
        h.record(Duration::ZERO);
        assert_eq!(h.count(), 2);
    }

    #[test]
    fn errors_count_and_merge() {
        let live = Live::default();
        let mut a = WorkerStats::new(Duration::from_secs(1), false);
        a.fail(
            Failure::new(ErrorKind::HandshakeStatus(403), "first"),
            &live,
        );
        a.fail(
            Failure::new(ErrorKind::HandshakeStatus(403), "second"),
            &live,
        );
        a.fail(Failure::new(ErrorKind::Refused, "r"), &live);
        let mut b = WorkerStats::new(Duration::from_secs(1), false);
        b.fail(
            Failure::new(ErrorKind::HandshakeStatus(502), "bad gw"),
            &live,
        );
        a.merge(&b);
        assert_eq!(a.errors.get(ErrorKind::HandshakeStatus(403)), 2);
        assert_eq!(a.errors.get(ErrorKind::HandshakeStatus(502)), 1);
        assert_eq!(a.errors.total(), 4);
        assert_eq!(
            a.samples.get("handshake-status").map(String::as_str),
            Some("first")
        );
        assert_eq!(live.errors.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn open_guard_tracks_peak() {
        let live = Live::default();
        {
            let _a = live.open_guard();
            let _b = live.open_guard();
        }
        let _c = live.open_guard();
        assert_eq!(live.open.load(Ordering::Relaxed), 1);
        assert_eq!(live.peak_open.load(Ordering::Relaxed), 2);
    }
}
