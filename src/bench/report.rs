//! The result of a run: [`Report`] (serializable, the `--json` output), how
//! it is built from the merged worker stats, the human summary table, and
//! the one-line live progress display.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::args::Mode;
use super::plan::Plan;
use super::stats::{ErrorCounts, LatencySummary, WorkerStats};

/// What a run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub mode: Mode,
    pub url: String,
    /// Concurrent connections requested (for hold: connections to hold).
    pub connections: usize,
    /// Message size in bytes (echo, bulk).
    pub size: usize,
    /// Requested duration (for hold: the hold time).
    pub duration_secs: f64,
    /// Measured time the rates are based on: from start until the last
    /// worker stopped measuring (closing is not included). For hold: the
    /// whole run.
    pub elapsed_secs: f64,
    /// Successful operations: handshakes, echo round trips, bulk messages
    /// sent, held connections, or HTTP responses.
    pub ops: u64,
    /// `ops` per second (for hold: connections opened per second while
    /// opening).
    pub ops_per_sec: f64,
    /// Latency of the operation (handshake, round trip, request; for hold:
    /// opening a connection). `None` when nothing was measured.
    pub latency: Option<LatencySummary>,
    /// Payload bytes sent and received (message payloads; HTTP: body bytes).
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Payload throughput in MB/s (10^6 bytes per second).
    pub sent_mb_per_sec: f64,
    pub received_mb_per_sec: f64,
    /// Connections successfully opened over the run.
    pub connections_opened: u64,
    /// Most connections open at the same time.
    pub peak_open: u64,
    pub errors: ErrorCounts,
    /// The first error message seen for each error kind.
    pub error_samples: BTreeMap<String, String>,
    /// HTTP mode: responses per status code.
    pub http_status: BTreeMap<u16, u64>,
    /// Hold mode details.
    pub hold: Option<HoldSummary>,
    /// Storm mode details.
    #[serde(default)]
    pub storm: Option<StormSummary>,
    /// The open-file limit in force during the run.
    pub open_file_limit: Option<u64>,
    /// Warnings and explanations for the operator.
    pub notes: Vec<String>,
}

/// Hold mode: what happened to the N connections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HoldSummary {
    pub requested: u64,
    /// Opened successfully.
    pub opened: u64,
    /// Still alive at the end (answered the liveness ping).
    pub held: u64,
    pub open_failed: u64,
    /// Closed or broken while being held.
    pub dropped_during_hold: u64,
    /// Open until the end but did not answer the ping.
    pub check_failed: u64,
    pub peak_open: u64,
    /// Time spent opening the connections.
    pub open_secs: f64,
    pub hold_secs: f64,
}

/// Storm mode: N connections opened at the same moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StormSummary {
    pub requested: u64,
    pub connected: u64,
    pub failed: u64,
    /// Seconds from the start until the last connection was up.
    pub last_up_secs: Option<f64>,
    /// The same, when every connection came up.
    pub all_up_secs: Option<f64>,
}

impl Report {
    /// True when at least one operation succeeded (exit code 0).
    pub fn succeeded(&self) -> bool {
        self.ops > 0
    }

    pub(crate) fn build(
        plan: &Plan,
        stats: WorkerStats,
        measured: Duration,
        peak_open: u64,
        hold: Option<HoldSummary>,
        open_file_limit: Option<u64>,
        notes: Vec<String>,
    ) -> Report {
        let secs = measured.as_secs_f64().max(1e-9);
        let ops_per_sec = match &hold {
            Some(h) => h.opened as f64 / h.open_secs.max(1e-9),
            None => stats.ops as f64 / secs,
        };
        Report {
            mode: plan.mode,
            url: plan.url.clone(),
            connections: plan.connections,
            size: plan.size,
            duration_secs: plan.duration.as_secs_f64(),
            elapsed_secs: measured.as_secs_f64(),
            ops: stats.ops,
            ops_per_sec,
            latency: stats.latency.summary(),
            bytes_sent: stats.bytes_sent,
            bytes_received: stats.bytes_received,
            sent_mb_per_sec: stats.bytes_sent as f64 / secs / 1e6,
            received_mb_per_sec: stats.bytes_received as f64 / secs / 1e6,
            connections_opened: stats.connections_opened,
            peak_open,
            errors: stats.errors,
            error_samples: stats.samples,
            http_status: stats.http_status,
            hold,
            storm: None,
            open_file_limit,
            notes,
        }
    }

    /// The human summary printed at the end of a CLI run.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let mode = self.mode.name();
        let _ = writeln!(out, "switchyard bench {mode} {}", self.url);
        let what = match self.mode {
            Mode::Handshake => "handshakes",
            Mode::Echo => "round trips",
            Mode::Bulk => "messages sent",
            Mode::Hold => "held",
            Mode::Http => "requests",
            Mode::Storm => "connected",
        };
        let mut row = |label: &str, value: String| {
            let _ = writeln!(out, "  {label:<14}{value}");
        };
        match self.mode {
            Mode::Hold => {
                row("connections", format!("{} requested", self.connections));
            }
            Mode::Echo | Mode::Bulk => row(
                "setup",
                format!(
                    "{} connections, {} messages, {:.1}s",
                    self.connections,
                    human_bytes(self.size as f64),
                    self.elapsed_secs
                ),
            ),
            _ => row(
                "setup",
                format!(
                    "{} connections, {:.1}s",
                    self.connections, self.elapsed_secs
                ),
            ),
        }
        if let Some(st) = &self.storm {
            row(
                "connected",
                match st.all_up_secs {
                    Some(secs) => format!("all {} up after {secs:.2}s", st.requested),
                    None => format!(
                        "{} of {} (last up after {}), {} failed",
                        st.connected,
                        st.requested,
                        st.last_up_secs
                            .map_or("—".to_string(), |s| format!("{s:.2}s")),
                        st.failed
                    ),
                },
            );
        } else if let Some(h) = &self.hold {
            row(
                "held",
                format!(
                    "{} of {} ({} opened in {:.1}s = {:.0}/s, held {:.1}s)",
                    h.held, h.requested, h.opened, h.open_secs, self.ops_per_sec, h.hold_secs
                ),
            );
            row(
                "lost",
                format!(
                    "{} failed to open, {} dropped while held, {} failed the ping",
                    h.open_failed, h.dropped_during_hold, h.check_failed
                ),
            );
        } else {
            row(what, format!("{} ({:.1}/s)", self.ops, self.ops_per_sec));
        }
        if let Some(l) = &self.latency {
            let label = match self.mode {
                Mode::Hold => "open latency",
                Mode::Handshake => "handshake",
                Mode::Storm => "up after",
                _ => "latency",
            };
            row(
                label,
                format!(
                    "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                    human_us(l.p50_us),
                    human_us(l.p90_us),
                    human_us(l.p99_us),
                    human_us(l.p999_us),
                    human_us(l.max_us)
                ),
            );
            row(
                "",
                format!(
                    "min {}  mean {}  ({} samples)",
                    human_us(l.min_us),
                    human_us(l.mean_us),
                    l.samples
                ),
            );
        }
        if self.mode == Mode::Http {
            // Only responses come back: what they carried is the figure.
            row(
                "received",
                format!(
                    "{:.2} MB of response bodies ({:.2} MB/s)",
                    self.bytes_received as f64 / 1e6,
                    self.received_mb_per_sec
                ),
            );
        } else if self.bytes_sent > 0 || self.bytes_received > 0 {
            row(
                "throughput",
                format!(
                    "sent {:.2} MB ({:.2} MB/s)  received {:.2} MB ({:.2} MB/s)",
                    self.bytes_sent as f64 / 1e6,
                    self.sent_mb_per_sec,
                    self.bytes_received as f64 / 1e6,
                    self.received_mb_per_sec
                ),
            );
        }
        if !self.http_status.is_empty() {
            let codes: Vec<String> = self
                .http_status
                .iter()
                .map(|(code, n)| format!("{code}: {n}"))
                .collect();
            row("status codes", codes.join(", "));
        }
        row(
            "connections",
            format!(
                "{} opened, peak {} open",
                self.connections_opened, self.peak_open
            ),
        );
        let errors = self.errors.nonzero();
        if errors.is_empty() {
            row("errors", "none".to_string());
        } else {
            let list: Vec<String> = errors.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            row(
                "errors",
                format!("{} ({})", self.errors.total(), list.join(", ")),
            );
            for (label, detail) in &self.error_samples {
                row("", format!("e.g. {label}: {detail}"));
            }
        }
        if let Some(limit) = self.open_file_limit {
            row("open files", format!("limit {limit}"));
        }
        for note in &self.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        out
    }
}

/// The `\r`-updated progress line: elapsed, ops, ops/s, errors, open.
pub fn progress_line(
    elapsed: Duration,
    ops: u64,
    ops_per_sec: f64,
    errors: u64,
    open: u64,
) -> String {
    format!(
        "\r{:>6.1}s  ops {ops:>10}  {ops_per_sec:>10.0}/s  errors {errors:>6}  open {open:>6}\x1b[K",
        elapsed.as_secs_f64()
    )
}

/// `1.23 KiB`-style sizes (message sizes; totals are shown in MB = 10^6).
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// Microseconds as `37µs`, `1.25ms` or `2.10s`.
pub fn human_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_units() {
        assert_eq!(human_bytes(64.0), "64 B");
        assert_eq!(human_bytes(64.0 * 1024.0), "64.00 KiB");
        assert_eq!(human_us(37.4), "37µs");
        assert_eq!(human_us(1250.0), "1.25ms");
        assert_eq!(human_us(2_100_000.0), "2.10s");
    }

    #[test]
    fn progress_line_is_carriage_returned() {
        let line = progress_line(Duration::from_millis(1500), 42, 28.0, 1, 3);
        assert!(line.starts_with('\r'));
        assert!(line.contains("1.5s") && line.contains("42") && line.contains("open"));
    }
}
