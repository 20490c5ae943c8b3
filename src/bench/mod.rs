//! `switchyard bench`: a WebSocket load tool in the spirit of
//! `redis-benchmark` and `h2load`, for any `ws://` or `wss://` URL.
//!
//! ```text
//! switchyard bench MODE URL [options]     # MODE: handshake | echo | bulk | hold | http | storm
//! ```
//!
//! Layout:
//! - [`args`]: command-line arguments and their parsers;
//! - [`plan`]: the validated [`Plan`] of a run and the parsed target URL;
//! - [`connect`] and [`tls`]: opening TCP, TLS and WebSocket connections;
//! - [`modes`]: one file per mode, plus what they share (pacing, workers);
//! - [`stats`]: per-worker counters and histograms, merged at the end;
//! - [`report`]: the [`Report`], its summary table and the progress line;
//! - [`limits`]: the open-file limit;
//! - [`error`]: [`BenchError`] (cannot start) and the per-operation error kinds.
//!
//! Library users call [`run`]; the CLI calls [`run_cli`].

pub mod args;
pub mod connect;
pub mod error;
pub mod limits;
pub mod modes;
pub mod plan;
pub mod report;
pub mod stats;
pub mod tls;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub use args::{BenchArgs, Header, Mode};
pub use error::{BenchError, ErrorKind};
pub use plan::Plan;
pub use report::{HoldSummary, Report};
pub use stats::{ErrorCounts, LatencySummary};

use connect::Connector;
use modes::{Ctx, Pacer};
use stats::Live;

/// Runs one benchmark and returns what it measured. Errors only when the
/// run cannot start (invalid plan, unresolvable host, unreadable CA...);
/// failures against the target are counted in the report instead.
pub async fn run(plan: Plan) -> Result<Report, BenchError> {
    run_with_live(plan, Arc::new(Live::default())).await
}

/// Like [`run`], publishing progress counters to `live` as it goes.
async fn run_with_live(plan: Plan, live: Arc<Live>) -> Result<Report, BenchError> {
    plan.validate()?;
    let mut notes = Vec::new();
    let file_limit = limits::raise_open_file_limit();
    if let Some(warning) = file_limit.and_then(|l| l.warning_for(plan.connections as u64)) {
        notes.push(warning);
    }
    if plan.insecure {
        notes.push("--insecure: TLS certificates were not verified".to_string());
    }
    let (connector, connect_notes) = Connector::new(&plan).await?;
    notes.extend(connect_notes);

    let start = Instant::now();
    let ctx = Arc::new(Ctx {
        pacer: plan.effective_rate().map(|rate| Pacer::new(rate, start)),
        deadline: start + plan.duration,
        start,
        connector,
        live: live.clone(),
        plan,
    });

    let mut hold = None;
    let mut storm = None;
    let (stats, mode_notes) = match ctx.plan.mode {
        Mode::Handshake => modes::handshake::run(ctx.clone()).await,
        Mode::Echo => modes::echo::run(ctx.clone()).await,
        Mode::Bulk => modes::bulk::run(ctx.clone()).await,
        Mode::Http => modes::http::run(ctx.clone()).await,
        Mode::Hold => {
            let (stats, notes, summary) = modes::hold::run(ctx.clone()).await;
            hold = Some(summary);
            (stats, notes)
        }
        Mode::Storm => {
            let (stats, notes, summary) = modes::storm::run(ctx.clone()).await;
            storm = Some(summary);
            (stats, notes)
        }
    };
    notes.extend(mode_notes);

    if stats.errors.too_many_open_files > 0 {
        let limit = file_limit.map_or("unknown".to_string(), |l| l.soft.to_string());
        notes.push(format!(
            "the open-file limit ({limit}) stopped new connections \
             ({} failed with 'too many open files'); raise it with `ulimit -n`",
            stats.errors.too_many_open_files
        ));
    }
    let measured = stats.active_until.map_or_else(
        || start.elapsed(),
        |end| end.saturating_duration_since(start),
    );
    let peak_open = live.peak_open.load(Ordering::Relaxed);
    let mut report = Report::build(
        &ctx.plan,
        stats,
        measured,
        peak_open,
        hold,
        file_limit.map(|l| l.soft),
        notes,
    );
    report.storm = storm;
    Ok(report)
}

/// Entry point for the CLI: runs, prints progress (stderr, when it is a
/// terminal) and the summary table (or `--json`) on stdout, and returns the
/// exit code: 0 when the run completed, 1 on bad arguments or when nothing
/// succeeded.
pub async fn run_cli(args: BenchArgs) -> ExitCode {
    let json = args.json;
    let plan = match Plan::try_from(args) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("switchyard bench: {e}");
            return ExitCode::from(1);
        }
    };
    if plan.insecure {
        eprintln!("warning: --insecure: TLS certificates will NOT be verified");
    }
    if let Some(warning) =
        limits::raise_open_file_limit().and_then(|l| l.warning_for(plan.connections as u64))
    {
        eprintln!("warning: {warning}");
    }

    let live = Arc::new(Live::default());
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| tokio::spawn(progress_loop(live.clone())));
    let result = run_with_live(plan, live).await;
    if let Some(task) = progress {
        task.abort();
        eprint!("\r\x1b[K");
    }

    match result {
        Err(e) => {
            eprintln!("switchyard bench: {e}");
            ExitCode::from(1)
        }
        Ok(report) => {
            let mut stdout = std::io::stdout().lock();
            // A closed stdout (e.g. piped into `head`) must not panic.
            let written = if json {
                serde_json::to_string_pretty(&report)
                    .map_err(std::io::Error::other)
                    .and_then(|text| writeln!(stdout, "{text}"))
            } else {
                write!(stdout, "{}", report.to_table())
            };
            let _ = written.and_then(|()| stdout.flush());
            if json {
                for note in &report.notes {
                    eprintln!("note: {note}");
                }
            }
            if report.succeeded() {
                ExitCode::SUCCESS
            } else {
                eprintln!("switchyard bench: no operation succeeded");
                ExitCode::from(1)
            }
        }
    }
}

/// Redraws the progress line on stderr once per second.
async fn progress_loop(live: Arc<Live>) {
    let start = Instant::now();
    let mut last_ops = 0u64;
    let mut last = start;
    let mut tick = tokio::time::interval_at(
        (start + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    loop {
        tick.tick().await;
        let now = Instant::now();
        let ops = live.ops.load(Ordering::Relaxed);
        let rate = ops.saturating_sub(last_ops) as f64 / (now - last).as_secs_f64().max(1e-9);
        let line = report::progress_line(
            now - start,
            ops,
            rate,
            live.errors.load(Ordering::Relaxed),
            live.open.load(Ordering::Relaxed),
        );
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line.as_bytes()).and_then(|()| err.flush());
        last_ops = ops;
        last = now;
    }
}
