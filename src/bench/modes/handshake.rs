//! `handshake` mode: each worker opens a WebSocket (TCP, TLS for wss, HTTP
//! upgrade), closes it cleanly, and starts over until the deadline.
//! Measures handshakes per second and the latency of opening.
//!
//! Over wss://, TLS sessions are resumed when the server offers tickets, as
//! a returning browser would, so only the first handshakes are full ones.

use std::sync::Arc;
use std::time::Instant;

use super::{Ctx, close_ws, hard_stop, run_workers};
use crate::bench::stats::WorkerStats;

pub async fn run(ctx: Arc<Ctx>) -> (WorkerStats, Vec<String>) {
    let n = ctx.plan.connections;
    run_workers(&ctx, n, hard_stop(&ctx), worker).await
}

async fn worker(ctx: Arc<Ctx>, _id: usize) -> WorkerStats {
    let mut stats = ctx.new_stats();
    let live = &*ctx.live;
    while ctx.pace(ctx.deadline).await {
        let t0 = Instant::now();
        if t0 >= ctx.deadline {
            break;
        }
        match ctx.connector.websocket().await {
            Ok(mut ws) => {
                let now = Instant::now();
                stats.op(now - t0, now, live);
                stats.connections_opened += 1;
                let _open = live.open_guard();
                if let Err(f) = close_ws(&mut ws, ctx.plan.timeout).await {
                    stats.fail(f, live);
                }
            }
            Err(f) => {
                stats.fail(f, live);
                ctx.backoff().await;
            }
        }
    }
    stats.stop_measuring(live);
    stats
}
