//! `echo` mode: each worker keeps one connection, sends an S-byte binary
//! message, waits for the echo, checks it, and repeats until the deadline.
//! Measures round trips per second and round-trip latency.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::{Ctx, close_ws, hard_stop, run_workers};
use crate::bench::connect::Ws;
use crate::bench::error::{ErrorKind, Failure};
use crate::bench::stats::WorkerStats;

pub async fn run(ctx: Arc<Ctx>) -> (WorkerStats, Vec<String>) {
    let n = ctx.plan.connections;
    run_workers(&ctx, n, hard_stop(&ctx), worker).await
}

/// A payload that differs per worker and per byte, so a mixed-up or
/// corrupted echo is caught by the comparison.
pub fn payload(size: usize, worker: usize) -> Bytes {
    (0..size)
        .map(|i| (i.wrapping_mul(31).wrapping_add(worker.wrapping_mul(7)) % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

async fn worker(ctx: Arc<Ctx>, id: usize) -> WorkerStats {
    let mut stats = ctx.new_stats();
    let payload = payload(ctx.plan.size, id);
    let size = payload.len() as u64;
    let live = &*ctx.live;

    'connection: while let Some(mut ws) = ctx.connect_until_deadline(&mut stats).await {
        let _open = live.open_guard();
        loop {
            let t0 = Instant::now();
            if t0 >= ctx.deadline {
                stats.stop_measuring(live);
                if let Err(f) = close_ws(&mut ws, ctx.plan.timeout).await {
                    stats.fail(f, live);
                }
                break 'connection;
            }
            match tokio::time::timeout(ctx.plan.timeout, round_trip(&mut ws, &payload)).await {
                Ok(Ok(())) => {
                    let now = Instant::now();
                    stats.op(now - t0, now, live);
                    stats.bytes_sent += size;
                    stats.bytes_received += size;
                }
                Ok(Err(f)) if f.kind == ErrorKind::Mismatch => {
                    // The connection still works; count the message as sent.
                    stats.bytes_sent += size;
                    stats.fail(f, live);
                }
                Ok(Err(f)) => {
                    stats.fail(f, live);
                    continue 'connection;
                }
                Err(_) => {
                    stats.fail(Failure::timeout("waiting for the echo"), live);
                    continue 'connection;
                }
            }
        }
    }
    if stats.active_until.is_none() {
        stats.stop_measuring(live);
    }
    stats
}

/// Sends one message and waits for its echo (control frames are skipped;
/// tungstenite answers pings by itself).
async fn round_trip(ws: &mut Ws, payload: &Bytes) -> Result<(), Failure> {
    ws.send(Message::Binary(payload.clone()))
        .await
        .map_err(|e| Failure::from_ws(&e, "sending"))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(data))) => {
                return if data == *payload {
                    Ok(())
                } else {
                    Err(Failure::new(
                        ErrorKind::Mismatch,
                        format!(
                            "echo differs from the message sent ({} bytes back, {} sent)",
                            data.len(),
                            payload.len()
                        ),
                    ))
                };
            }
            Some(Ok(Message::Text(_))) => {
                return Err(Failure::new(
                    ErrorKind::Mismatch,
                    "a text message came back for a binary one",
                ));
            }
            Some(Ok(Message::Close(_))) | None => {
                return Err(Failure::closed_early("waiting for the echo"));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(Failure::from_ws(&e, "waiting for the echo")),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn payloads_differ_between_workers() {
        let a = super::payload(64, 0);
        let b = super::payload(64, 1);
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(super::payload(0, 3).is_empty());
    }
}
