//! Accepting HTTP/1.1 connections for the chat backend, and stopping cleanly.
//!
//! Shutdown: when the token is cancelled the listener is dropped, every
//! HTTP connection is asked to finish its current request (and is cut after
//! [`HTTP_DRAIN`]), every WebSocket client is sent close 1001, and [`serve`]
//! returns once all tracked tasks are done.

use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, info, info_span, warn};

use super::room::Room;
use super::routes;

/// A client must send its request headers within this. hyper also counts an
/// idle keep-alive connection as "waiting for headers", so this is as well
/// how long a pooled upstream connection from the proxy may sit idle.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an HTTP connection may take to finish once shutdown starts.
const HTTP_DRAIN: Duration = Duration::from_millis(500);

/// Upper bound on the wait for all tasks at shutdown (each task bounds itself
/// well below this; this is the safety net).
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(1);

/// Pause after an accept error (such as running out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What every HTTP connection and WebSocket client of one backend shares.
pub(crate) struct Backend {
    pub(crate) room: Room,
    /// The last user id handed out at sign-in.
    pub(crate) last_user_id: AtomicU64,
    pub(crate) tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

/// Serve the chat backend on `listener` until `shutdown` is cancelled.
///
/// On cancellation it stops accepting, closes every WebSocket with code 1001,
/// lets HTTP connections finish their current request, and returns within
/// about a second.
///
/// # Errors
///
/// Only if the listener's local address cannot be read; accept errors are
/// logged and retried.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) -> io::Result<()> {
    let local = listener.local_addr()?;
    let backend = Arc::new(Backend {
        room: Room::default(),
        last_user_id: AtomicU64::new(0),
        tasks: TaskTracker::new(),
        shutdown,
    });
    info!(%local, "chat backend listening");

    loop {
        let accepted = tokio::select! {
            () = backend.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let span = info_span!("chat_connection", %peer);
                backend
                    .tasks
                    .spawn(serve_connection(Arc::clone(&backend), stream, peer).instrument(span));
            }
            Err(err) => {
                warn!(%err, "chat backend could not accept a connection");
                sleep(ACCEPT_BACKOFF).await;
            }
        }
    }

    drop(listener);
    backend.tasks.close();
    if timeout(SHUTDOWN_LIMIT, backend.tasks.wait()).await.is_err() {
        warn!(
            remaining = backend.tasks.len(),
            "chat backend tasks still running after shutdown"
        );
    }
    info!(%local, "chat backend stopped");
    Ok(())
}

/// Serves one HTTP/1.1 connection (with upgrades) until it ends or shutdown
/// has let it drain.
async fn serve_connection(backend: Arc<Backend>, stream: TcpStream, peer: SocketAddr) {
    // Chat frames are small and latency-sensitive: do not let Nagle's
    // algorithm hold them back.
    if let Err(err) = stream.set_nodelay(true) {
        debug!(%peer, %err, "could not set TCP_NODELAY");
    }
    let shutdown = backend.shutdown.clone();
    let service = service_fn(move |request| routes::handle(Arc::clone(&backend), request));
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut connection = pin!(connection);

    let finished = tokio::select! {
        finished = connection.as_mut() => finished,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            match timeout(HTTP_DRAIN, connection.as_mut()).await {
                Ok(finished) => finished,
                Err(_) => {
                    debug!(%peer, "HTTP connection cut at shutdown");
                    return;
                }
            }
        }
    };
    if let Err(err) = finished {
        debug!(%peer, %err, "HTTP connection ended with an error");
    }
}
