//! HTTP/1.1 on one client connection: hyper's HTTP/1.1 server with
//! upgrades, the drain (finish the request in flight, then close) and the
//! hard stop.

use crate::io::ClientStream;
use crate::proxy::{self, MAX_HEAD, Peer};
use crate::state::StopSignal;
use crate::timer::CoarseTimer;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

/// Serve one client connection as HTTP/1.1 until it closes, upgrades or
/// is drained.
pub(super) async fn serve(io: ClientStream, peer: Arc<Peer>, header_timeout: Duration) {
    let (mut draining, mut hard_stop) = (
        StopSignal::new(&peer.state.draining),
        StopSignal::new(&peer.state.hard_stop),
    );
    let service = service_fn(move |req| proxy::handle(req, peer.clone()));
    let connection = http1::Builder::new()
        .timer(CoarseTimer)
        .header_read_timeout(header_timeout)
        .max_header_size(2 * MAX_HEAD)
        .writev(false)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let mut graceful = false;
    let result = std::future::poll_fn(|cx| {
        if !graceful && draining.poll_stopped(cx) {
            // Finish the request in flight, then close.
            graceful = true;
            connection.as_mut().graceful_shutdown();
        }
        if graceful && hard_stop.poll_stopped(cx) {
            return Poll::Ready(Ok(()));
        }
        connection.as_mut().poll(cx)
    })
    .await;
    if let Err(e) = result {
        if e.is_parse_too_large() {
            tracing::info!(status = 431, error = %e, "request head too large; answered 431");
        } else if e.is_parse() {
            tracing::info!(status = 400, error = %e, "malformed request; answered 400");
        } else if e.is_timeout() {
            tracing::debug!("no complete request head within {header_timeout:?}; closed");
        } else {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}
