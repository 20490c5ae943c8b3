//! `storm` mode: open N connections at the same moment, as clients do when
//! a backend restarts, keep every one open until all attempts are over,
//! then close them. Measures the time until all were up (a handshake queue
//! in a proxy trades failures for that time) and the failures by kind.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::Notify;

use super::{Ctx, close_ws, run_workers};
use crate::bench::report::StormSummary;
use crate::bench::stats::WorkerStats;

/// Shared by the connections of one storm.
struct Settled {
    count: AtomicUsize,
    changed: Notify,
}

pub async fn run(ctx: Arc<Ctx>) -> (WorkerStats, Vec<String>, StormSummary) {
    let n = ctx.plan.connections;
    let settled = Arc::new(Settled {
        count: AtomicUsize::new(0),
        changed: Notify::new(),
    });
    // Every attempt is bounded by --timeout; then the hold and the close.
    let hard_stop =
        ctx.start + ctx.plan.timeout * 3 + ctx.plan.duration + std::time::Duration::from_secs(5);
    let (stats, notes) = run_workers(&ctx, n, hard_stop, |ctx, _| {
        connection(ctx, settled.clone())
    })
    .await;
    // Latencies count from the storm's start: the largest is the moment
    // the last connection came up.
    let last_up = stats.latency.summary().map(|l| l.max_us / 1e6);
    let summary = StormSummary {
        requested: n as u64,
        connected: stats.connections_opened,
        failed: stats.errors.total(),
        last_up_secs: last_up,
        all_up_secs: last_up.filter(|_| stats.connections_opened == n as u64),
    };
    (stats, notes, summary)
}

async fn connection(ctx: Arc<Ctx>, settled: Arc<Settled>) -> WorkerStats {
    let mut stats = ctx.new_stats();
    let live = &*ctx.live;
    let n = ctx.plan.connections;
    let attempt = tokio::time::timeout(ctx.plan.timeout, ctx.connector.websocket()).await;
    let ws = match attempt {
        Ok(Ok(ws)) => {
            let now = Instant::now();
            stats.op(now - ctx.start, now, live);
            stats.connections_opened += 1;
            Some(ws)
        }
        Ok(Err(failure)) => {
            stats.fail(failure, live);
            None
        }
        Err(_) => {
            stats.fail(crate::bench::error::Failure::timeout("opening"), live);
            None
        }
    };
    let _open = ws.as_ref().map(|_| live.open_guard());
    // Everyone stays connected until the last attempt is over.
    if settled.count.fetch_add(1, Ordering::AcqRel) + 1 == n {
        settled.changed.notify_waiters();
    }
    loop {
        let changed = settled.changed.notified();
        if settled.count.load(Ordering::Acquire) >= n {
            break;
        }
        changed.await;
    }
    stats.stop_measuring(live);
    if let Some(mut ws) = ws {
        tokio::time::sleep(ctx.plan.duration).await;
        if let Err(f) = close_ws(&mut ws, ctx.plan.timeout).await {
            stats.fail(f, live);
        }
    }
    stats
}
