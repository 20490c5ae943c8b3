//! `bulk` mode: each worker streams S-byte binary messages as fast as the
//! connection takes them while reading the echoes concurrently, then waits
//! for the echoes still in flight. Measures bytes per second each way.
//! The target must echo: against a server that only reads, the wait for
//! the last echoes ends with a `timeout` error after `--timeout`.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use super::{Ctx, close_ws, hard_stop, run_workers};
use crate::bench::connect::Ws;
use crate::bench::error::Failure;
use crate::bench::stats::{Live, WorkerStats};

pub async fn run(ctx: Arc<Ctx>) -> (WorkerStats, Vec<String>) {
    let n = ctx.plan.connections;
    run_workers(&ctx, n, hard_stop(&ctx), worker).await
}

async fn worker(ctx: Arc<Ctx>, id: usize) -> WorkerStats {
    let mut stats = ctx.new_stats();
    let payload = super::echo::payload(ctx.plan.size, id);
    let live = &*ctx.live;

    while let Some(ws) = ctx.connect_until_deadline(&mut stats).await {
        let _open = live.open_guard();
        let (sink, stream) = ws.split();
        let (total_tx, total_rx) = oneshot::channel();
        // Both halves run in this task, so the split's internal lock is never
        // contended.
        let (sent, received) = tokio::join!(
            send_loop(&ctx, sink, &payload, total_tx),
            receive_loop(&ctx, stream, total_rx)
        );
        let (sink, sent_bytes, sent_msgs, send_err) = sent;
        let (stream, received_bytes, receive_err) = received;
        stats.bytes_sent += sent_bytes;
        stats.bytes_received += received_bytes;
        // The sender already published these to the progress counters.
        stats.ops += sent_msgs;
        let failed = send_err.is_some() || receive_err.is_some();
        for f in send_err.into_iter().chain(receive_err) {
            stats.fail(f, live);
        }
        if !failed && let Ok(mut ws) = sink.reunite(stream) {
            stats.stop_measuring(live);
            if let Err(f) = close_ws(&mut ws, ctx.plan.timeout).await {
                stats.fail(f, live);
            }
            break;
        }
        if Instant::now() >= ctx.deadline {
            break;
        }
        ctx.backoff().await;
    }
    if stats.active_until.is_none() {
        stats.stop_measuring(live);
    }
    stats
}

/// How often the sender publishes its message count for the progress line.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

type Sink = SplitSink<Ws, Message>;
type Stream = SplitStream<Ws>;

/// Feeds messages until the deadline, then flushes and reports the total
/// byte count to the receiver. Returns (sink, bytes, messages, error).
async fn send_loop(
    ctx: &Ctx,
    mut sink: Sink,
    payload: &Bytes,
    total_tx: oneshot::Sender<u64>,
) -> (Sink, u64, u64, Option<Failure>) {
    let size = payload.len() as u64;
    let (mut bytes, mut msgs) = (0u64, 0u64);
    let mut error = None;
    let live: &Live = &ctx.live;
    let mut last_publish = Instant::now();
    let mut published = 0u64;
    let mut publish = |msgs: u64| {
        live.ops.fetch_add(msgs - published, Ordering::Relaxed);
        published = msgs;
    };
    while Instant::now() < ctx.deadline {
        let feed = sink.feed(Message::Binary(payload.clone()));
        match tokio::time::timeout(ctx.plan.timeout, feed).await {
            Ok(Ok(())) => {
                bytes += size;
                msgs += 1;
            }
            Ok(Err(e)) => {
                error = Some(Failure::from_ws(&e, "sending"));
                break;
            }
            Err(_) => {
                error = Some(Failure::timeout("sending (the server stopped reading)"));
                break;
            }
        }
        // Keep the progress line moving (checked every 64 messages).
        if msgs % 64 == 0 && last_publish.elapsed() >= PUBLISH_EVERY {
            publish(msgs);
            last_publish = Instant::now();
        }
    }
    publish(msgs);
    if error.is_none() {
        match tokio::time::timeout(ctx.plan.timeout, sink.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error = Some(Failure::from_ws(&e, "sending")),
            Err(_) => error = Some(Failure::timeout("flushing the last messages")),
        }
    }
    // On error the receiver still drains what may come back.
    let _ = total_tx.send(bytes);
    (sink, bytes, msgs, error)
}

/// Counts echoed bytes; once the sender is done, waits (at most `--timeout`)
/// until everything sent has come back. Returns (stream, bytes, error).
async fn receive_loop(
    ctx: &Ctx,
    mut stream: Stream,
    mut total_rx: oneshot::Receiver<u64>,
) -> (Stream, u64, Option<Failure>) {
    let mut received = 0u64;
    let mut expected: Option<u64> = None;
    let mut drain = pin!(tokio::time::sleep_until(ctx.deadline.into()));
    let error = loop {
        if expected.is_some_and(|total| received >= total) {
            break None;
        }
        tokio::select! {
            biased;
            total = &mut total_rx, if expected.is_none() => {
                expected = Some(total.unwrap_or(0));
                drain.as_mut().reset((Instant::now() + ctx.plan.timeout).into());
            }
            _ = &mut drain, if expected.is_some() => {
                break Some(Failure::timeout("waiting for the last echoes"));
            }
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(data))) => received += data.len() as u64,
                Some(Ok(Message::Text(text))) => received += text.len() as u64,
                Some(Ok(Message::Close(_))) | None => {
                    break Some(Failure::closed_early("streaming"));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break Some(Failure::from_ws(&e, "receiving")),
            },
        }
    };
    (stream, received, error)
}
