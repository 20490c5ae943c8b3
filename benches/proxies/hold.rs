//! The hold workload: on a freshly started proxy, sample its memory, open
//! 1,000 idle tunnels (one `switchyard bench hold` process), measure echo
//! p99, open the rest up to 9,500 (a second hold process), sample memory
//! and measure echo p99 again, then let the tunnels go and sample once more.
//! `hold-h2` does the same with the WebSockets as RFC 8441 streams over
//! wss://, 100 per HTTP/2 connection (the echo runs stay HTTP/1.1 ws://).
//!
//! Tunnels are counted where they end, at the backend, so a number here is
//! a tunnel that went all the way through the proxy.

use std::time::{Duration, Instant};

use super::backend;
use super::process::{self, Guard};
use super::settings::Workload;
use super::targets::Target;
use super::workloads::{HoldSample, Runner, Sample};

/// Tunnels held during the first echo run.
const FIRST: u64 = 1_000;
/// New tunnels per second while opening (each hold client).
const OPEN_RATE: &str = "2500";

/// WebSockets per HTTP/2 connection in `hold-h2`.
const STREAMS_PER_CONNECTION: &str = "100";

pub fn measure(
    runner: &Runner,
    round: usize,
    workload: Workload,
    target: &mut Target,
) -> Result<Sample, String> {
    let mut sample = Sample::new(round, workload, target.kind);
    let http2 = workload == Workload::HoldH2;
    let url = if http2 {
        target
            .wss_url()
            .ok_or_else(|| format!("{} has no wss:// port", target.kind))?
    } else {
        target.ws_url()
    };
    let ca = runner.ca.display().to_string();
    let total = runner.hold_tunnels;
    let first = FIRST.min(total);
    let mut hold = HoldSample {
        tunnels_wanted: total,
        ..HoldSample::default()
    };

    // Leftovers of an earlier workload would blur the counts.
    wait_open(runner, 0, Duration::from_secs(60), &mut [])
        .map_err(|e| format!("before the hold: {e}"))?;
    // A fresh process, so memory numbers start from a clean heap.
    target.start()?;
    runner.tool(
        "hold-warmup",
        &["handshake", &target.ws_url(), "-c", "2", "-d", "1s"].map(String::from),
    )?;
    process::pause(Duration::from_millis(500))?;
    hold.before = target.memory();

    let hold_args = |n: u64| -> Vec<String> {
        let mut args: Vec<String> = [
            "hold",
            &url,
            "-c",
            &n.to_string(),
            "--rate",
            OPEN_RATE,
            // Longer than the measurement: the harness ends the clients.
            "-d",
            "3600s",
            "--source-addrs",
            "8",
            "--timeout",
            "10s",
        ]
        .map(String::from)
        .to_vec();
        if http2 {
            args.extend(
                ["--http2", "--streams", STREAMS_PER_CONNECTION, "--ca", &ca].map(String::from),
            );
        }
        args
    };
    let mut clients: Vec<Guard> = Vec::new();
    let (guard, _) = runner.spawn_tool("hold-1k", &hold_args(first))?;
    clients.push(guard);
    let open = wait_open(runner, first, open_budget(first), &mut clients)?;
    if open < first {
        sample
            .notes
            .push(format!("only {open} of {first} tunnels opened"));
    }
    process::pause(Duration::from_millis(500))?;
    hold.at_1k = target.memory();
    let echo = runner.echo(&target.ws_url())?;
    hold.p99_1k_us = echo.latency.as_ref().map(|l| l.p99_us);
    sample.errors += echo.errors.total();

    if total > first {
        let (guard, _) = runner.spawn_tool("hold-rest", &hold_args(total - first))?;
        clients.push(guard);
    }
    hold.tunnels_held = wait_open(runner, total, open_budget(total - first), &mut clients)?;
    if hold.tunnels_held < total {
        sample.notes.push(format!(
            "only {} of {total} tunnels opened",
            hold.tunnels_held
        ));
    }
    process::pause(Duration::from_secs(1))?;
    hold.at_full = target.memory();
    // Every tunnel held and idle: what does the proxy spend on them (its
    // pings, for Switchyard, every `ping_interval`)?
    let idle = Duration::from_secs(runner.idle_seconds);
    let cpu_before = target.cpu_time();
    process::pause(idle)?;
    hold.idle_cpu = match (cpu_before, target.cpu_time()) {
        (Some(before), Some(after)) => {
            Some(after.saturating_sub(before).as_secs_f64() / idle.as_secs_f64())
        }
        _ => None,
    };
    let echo = runner.echo(&target.ws_url())?;
    hold.p99_full_us = echo.latency.as_ref().map(|l| l.p99_us);
    sample.errors += echo.errors.total();
    sample.notes.extend(echo.error_samples.values().cloned());
    // The echo connections have closed by now; what is open is held tunnels.
    process::pause(Duration::from_millis(300))?;
    hold.tunnels_survived = backend::counts(runner.backend)?.open;
    target.ensure_running()?;

    // End the clients; their sockets close, the proxy closes the tunnels.
    for mut client in clients.drain(..) {
        client.stop();
    }
    wait_open(runner, 0, Duration::from_secs(60), &mut [])
        .map_err(|e| format!("after the hold: {e}"))?;
    process::pause(Duration::from_secs(1))?;
    hold.released = target.memory();

    let lost = hold.tunnels_held.saturating_sub(hold.tunnels_survived);
    if lost > 0 {
        sample
            .notes
            .push(format!("{lost} held tunnels closed during the hold"));
    }
    sample.errors += (total - hold.tunnels_held.min(total)) + lost;
    sample.p99_us = hold.p99_full_us;
    sample.hold = Some(hold);
    Ok(sample)
}

/// Time allowed to open `n` tunnels at [`OPEN_RATE`], with a margin.
fn open_budget(n: u64) -> Duration {
    Duration::from_secs(n / 2_500 + 30)
}

/// Waits until the backend has `want` WebSocket connections open (or, for
/// `want == 0`, none). Gives up early when the count stops moving for 10 s
/// or a client process exits, and returns the count reached.
fn wait_open(
    runner: &Runner,
    want: u64,
    limit: Duration,
    clients: &mut [Guard],
) -> Result<u64, String> {
    let start = Instant::now();
    let mut last = u64::MAX;
    let mut last_change = start;
    loop {
        let open = backend::counts(runner.backend)?.open;
        let done = if want == 0 { open == 0 } else { open >= want };
        if done {
            return Ok(open);
        }
        if open != last {
            last = open;
            last_change = Instant::now();
        }
        for client in clients.iter_mut() {
            if let Some(status) = client.exited() {
                return Err(format!(
                    "{} exited early ({status}) with {open} tunnels open; its log ends with:\n    {}",
                    client.name,
                    client.log_tail()
                ));
            }
        }
        let stalled = last_change.elapsed() > Duration::from_secs(10);
        if start.elapsed() > limit || stalled {
            return if want == 0 {
                Err(format!(
                    "{open} WebSocket connections still open at the backend"
                ))
            } else {
                Ok(open)
            };
        }
        process::pause(Duration::from_millis(200))?;
    }
}
