//! `hold` mode: open N connections at a bounded rate, keep all of them
//! open for the duration (answering pings, watching for closes), then check
//! each one with a ping/pong and close it. Measures how many were held and
//! why the others failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use super::{Ctx, close_ws};
use crate::bench::connect::Ws;
use crate::bench::error::{ErrorKind, Failure};
use crate::bench::report::HoldSummary;
use crate::bench::stats::WorkerStats;

const PING_PAYLOAD: &[u8] = b"switchyard-bench-hold";

/// What happened to one held connection.
enum Outcome {
    OpenFailed(Failure),
    Dropped(Duration, Failure),
    CheckFailed(Duration, Failure),
    Held(Duration, Option<Failure>),
}

/// Shared between the coordinator and the connection tasks.
struct Phase {
    /// Connections done with their open attempt (success or failure).
    settled: AtomicUsize,
    settled_changed: Notify,
    /// When the hold ends; `None` while connections are still opening.
    hold_end: watch::Receiver<Option<Instant>>,
}

pub async fn run(ctx: Arc<Ctx>) -> (WorkerStats, Vec<String>, HoldSummary) {
    let n = ctx.plan.connections;
    let rate = ctx
        .plan
        .effective_rate()
        .unwrap_or(super::super::plan::DEFAULT_HOLD_RATE);
    let open_budget = ctx.start
        + Duration::from_secs_f64(n as f64 / rate)
        + ctx.plan.timeout
        + Duration::from_secs(1);
    let (hold_tx, hold_rx) = watch::channel(None);
    let phase = Arc::new(Phase {
        settled: AtomicUsize::new(0),
        settled_changed: Notify::new(),
        hold_end: hold_rx,
    });

    let mut set = JoinSet::new();
    for _ in 0..n {
        set.spawn(connection(ctx.clone(), phase.clone(), open_budget));
    }

    // Opening phase: wait until every connection has settled (each attempt
    // is bounded by --timeout, and the pacer's last slot is at N/rate).
    let mut notes = Vec::new();
    while phase.settled.load(Ordering::Acquire) < n {
        let wait = phase.settled_changed.notified();
        if tokio::time::timeout_at(open_budget.into(), wait)
            .await
            .is_err()
        {
            notes.push("the opening phase ran out of time; holding what is open".to_string());
            break;
        }
    }
    let opened_at = Instant::now();
    let hold_end = opened_at + ctx.plan.duration;
    // Receivers live in `phase`, so this cannot fail while tasks run.
    let _ = hold_tx.send(Some(hold_end));

    // One histogram for all connections, so it can afford full precision.
    let mut stats = WorkerStats::new(ctx.latency_max(), true);
    let mut summary = HoldSummary {
        requested: n as u64,
        open_secs: (opened_at - ctx.start).as_secs_f64(),
        hold_secs: ctx.plan.duration.as_secs_f64(),
        ..HoldSummary::default()
    };
    let hard_stop = hold_end + ctx.plan.timeout * 3 + Duration::from_secs(1);
    loop {
        match tokio::time::timeout_at(hard_stop.into(), set.join_next()).await {
            Ok(Some(Ok(outcome))) => tally(&mut stats, &mut summary, outcome),
            Ok(Some(Err(e))) if e.is_panic() => {
                notes.push(format!("a connection task crashed: {e}"))
            }
            Ok(Some(Err(_))) => {}
            Ok(None) => break,
            Err(_) => {
                notes.push(format!(
                    "{} connection(s) did not finish in time",
                    set.len()
                ));
                set.abort_all();
                break;
            }
        }
    }
    stats.active_until = Some(Instant::now());
    summary.peak_open = ctx.live.peak_open.load(Ordering::Relaxed);
    (stats, notes, summary)
}

fn tally(stats: &mut WorkerStats, summary: &mut HoldSummary, outcome: Outcome) {
    match outcome {
        Outcome::OpenFailed(f) => {
            summary.open_failed += 1;
            stats.record_failure(f);
        }
        Outcome::Dropped(open_latency, f) => {
            summary.opened += 1;
            summary.dropped_during_hold += 1;
            stats.latency.record(open_latency);
            stats.record_failure(f);
        }
        Outcome::CheckFailed(open_latency, f) => {
            summary.opened += 1;
            summary.check_failed += 1;
            stats.latency.record(open_latency);
            stats.record_failure(f);
        }
        Outcome::Held(open_latency, close_failure) => {
            summary.opened += 1;
            summary.held += 1;
            stats.ops += 1;
            stats.latency.record(open_latency);
            if let Some(f) = close_failure {
                stats.record_failure(f);
            }
        }
    }
    stats.connections_opened = summary.opened;
}

/// One held connection, from open to close.
async fn connection(ctx: Arc<Ctx>, phase: Arc<Phase>, open_budget: Instant) -> Outcome {
    let live = &*ctx.live;
    let settle = || {
        phase.settled.fetch_add(1, Ordering::AcqRel);
        phase.settled_changed.notify_one();
    };
    if !ctx.pace(open_budget).await {
        settle();
        let f = Failure::timeout("waiting for a connection slot");
        live.errors.fetch_add(1, Ordering::Relaxed);
        return Outcome::OpenFailed(f);
    }
    let t0 = Instant::now();
    let opened = ctx.connector.websocket().await;
    let open_latency = t0.elapsed();
    let mut ws = match opened {
        Ok(ws) => ws,
        Err(f) => {
            settle();
            live.errors.fetch_add(1, Ordering::Relaxed);
            return Outcome::OpenFailed(f);
        }
    };
    let _open = live.open_guard();
    live.ops.fetch_add(1, Ordering::Relaxed);
    settle();

    let hard_stop = open_budget + ctx.plan.duration + ctx.plan.timeout;
    if let Err(f) = hold(&mut ws, phase.hold_end.clone(), hard_stop).await {
        live.errors.fetch_add(1, Ordering::Relaxed);
        return Outcome::Dropped(open_latency, f);
    }
    if let Err(f) = check(&mut ws, ctx.plan.timeout).await {
        live.errors.fetch_add(1, Ordering::Relaxed);
        return Outcome::CheckFailed(open_latency, f);
    }
    let close_failure = close_ws(&mut ws, ctx.plan.timeout).await.err();
    if close_failure.is_some() {
        live.errors.fetch_add(1, Ordering::Relaxed);
    }
    Outcome::Held(open_latency, close_failure)
}

/// Keeps reading (so pings get answered and closes are seen) until the hold
/// ends. `hard_stop` bounds the wait should the end never be announced.
async fn hold(
    ws: &mut Ws,
    mut hold_end: watch::Receiver<Option<Instant>>,
    hard_stop: Instant,
) -> Result<(), Failure> {
    loop {
        let end = *hold_end.borrow_and_update();
        let until = end.unwrap_or(hard_stop);
        tokio::select! {
            changed = hold_end.changed(), if end.is_none() => {
                if changed.is_err() {
                    return Err(Failure::new(ErrorKind::Other, "hold coordinator stopped"));
                }
            }
            _ = tokio::time::sleep_until(until.into()) => {
                return match end {
                    Some(_) => Ok(()),
                    None => Err(Failure::timeout("waiting for the hold to start")),
                };
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Close(_))) | None => {
                    return Err(Failure::closed_early("the hold"));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(Failure::from_ws(&e, "the hold")),
            },
        }
    }
}

/// Liveness check: a ping must be answered by a pong within `timeout`.
async fn check(ws: &mut Ws, timeout: Duration) -> Result<(), Failure> {
    let probe = async {
        ws.send(Message::Ping(Bytes::from_static(PING_PAYLOAD)))
            .await
            .map_err(|e| Failure::from_ws(&e, "the liveness ping"))?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Pong(data))) if data == PING_PAYLOAD => return Ok(()),
                Some(Ok(Message::Close(_))) | None => {
                    return Err(Failure::closed_early("the liveness ping"));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(Failure::from_ws(&e, "the liveness ping")),
            }
        }
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(result) => result,
        Err(_) => Err(Failure::timeout("waiting for the pong")),
    }
}
