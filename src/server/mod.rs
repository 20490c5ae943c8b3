//! Listening sockets and client connections: bind, accept, then each
//! connection in its own task and span: the TLS handshake (under
//! `client_header_timeout`), then HTTP in the version ALPN chose: HTTP/2
//! ([`http2`]) when the client and the listener agreed on `h2`, else
//! HTTP/1.1 ([`http1`]). An HTTP/1.1 connection that upgrades goes on in
//! that task as a tunnel; an HTTP/2 connection's WebSocket streams each
//! become a tunnel in a task of their own.
//!
//! The accept loop never dies on a resource error. When the process runs
//! out of file descriptors it stops accepting for a moment (new connections
//! wait in the kernel's backlog), says so at most once a second, and resumes
//! by itself once descriptors are free; open connections and tunnels are
//! unaffected.

pub mod accept;
mod http1;
mod http2;

use crate::config::ListenerKey;
use crate::io::{ClientStream, PlainOrTls};
use crate::proxy::Peer;
use crate::state::State;
use crate::workers::Workers;
use accept::{PerIp, Slot};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Pause before accepting again after running out of file descriptors.
const OUT_OF_FILES_PAUSE: Duration = Duration::from_millis(100);
/// Pending connections the kernel may queue per listener.
const BACKLOG: i32 = 4096;

/// Bind a listening socket (`SO_REUSEADDR`, deep backlog, non-blocking).
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// A running accept loop.
pub struct Listener {
    /// Which listener of the route file this is (the key across reloads).
    pub key: ListenerKey,
    /// The address actually bound (differs when the port was 0).
    pub local: SocketAddr,
    stop: CancellationToken,
}

impl Listener {
    /// Start accepting on `socket`, on every worker.
    pub fn spawn(
        socket: std::net::TcpListener,
        key: ListenerKey,
        state: Arc<State>,
        workers: &Workers,
    ) -> io::Result<Self> {
        let local = socket.local_addr()?;
        let stop = CancellationToken::new();
        let per_ip = Arc::new(PerIp::default());
        // Created here, not in the accept loops, so that a scrape right
        // after the listener is up already shows them at 0; one handle for
        // every connection to clone.
        let stats = Arc::new(ConnectionStats::new(&state, local));
        for worker in workers.handles() {
            let copy = socket.try_clone()?;
            let tracker = state.tasks.clone();
            let (state, stop, per_ip, stats) =
                (state.clone(), stop.clone(), per_ip.clone(), stats.clone());
            // Tracked, so a drain ends only once every copy of the socket
            // is closed.
            let accept = tracker.track_future(async move {
                match TcpListener::from_std(copy) {
                    Ok(socket) => {
                        let span = tracing::info_span!("listener", addr = %local);
                        accept_loop(socket, key, local, state, stop, per_ip, stats)
                            .instrument(span)
                            .await;
                    }
                    Err(e) => tracing::error!(error = %e, "cannot accept on {local}"),
                }
            });
            worker.spawn(accept);
        }
        Ok(Listener { key, local, stop })
    }

    /// Stop accepting and close the socket; open connections carry on.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    socket: TcpListener,
    key: ListenerKey,
    local: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
    per_ip: Arc<PerIp>,
    stats: Arc<ConnectionStats>,
) {
    loop {
        // A slot first: at max_connections, new connections wait in the
        // backlog until one closes.
        let stopped = async {
            tokio::select! {
                () = stop.cancelled() => {}
                () = state.draining.given() => {}
            }
        };
        let cap = || state.current().config.server.max_connections;
        let Some(slot) = Slot::take(&state, cap, stopped).await else {
            break;
        };
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            () = state.draining.given() => break,
            accepted = socket.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // A debug span: formatting its fields for every connection
                // would cost a tenth of a WebSocket handshake. Access events
                // carry the peer themselves.
                let span = tracing::debug_span!(parent: None, "conn", %peer, listener = %local);
                let connection = serve(
                    stream,
                    peer,
                    Accepted {
                        key,
                        local,
                        slot: slot.accepted(),
                        per_ip: per_ip.clone(),
                    },
                    state.clone(),
                    stats.clone(),
                );
                state.tasks.spawn(connection.instrument(span));
            }
            Err(e) if is_out_of_files(&e) => {
                state.metrics.accept_error(true);
                if out_of_files_warning_due() {
                    tracing::warn!(
                        error = %e,
                        open_files_limit = open_files_limit().map_or(0, |l| l.rlim_cur),
                        "out of file descriptors: new connections wait in the backlog \
                         until some close; open connections are unaffected"
                    );
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(OUT_OF_FILES_PAUSE) => {}
                }
            }
            Err(e) => {
                // A connection that died in the backlog; nothing to do.
                state.metrics.accept_error(false);
                tracing::debug!(error = %e, "accept failed");
            }
        }
    }
    tracing::debug!("stopped accepting");
}

/// Whether a second has passed since the last out-of-files warning, across
/// every listener and worker of the process.
fn out_of_files_warning_due() -> bool {
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    accept::warning_due(&LAST)
}

fn is_out_of_files(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The process's limits on open files, soft and hard, if they can be read.
pub fn open_files_limit() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    ok.then_some(limit)
}

/// A listener's connection series.
struct ConnectionStats {
    /// Connections open and speaking HTTP.
    open: Gauge,
    http1: Counter,
    http2: Counter,
}

impl ConnectionStats {
    fn new(state: &State, local: SocketAddr) -> ConnectionStats {
        let listener = local.to_string();
        ConnectionStats {
            open: state.metrics.client_connections(&listener),
            http1: state.metrics.http_connections(&listener, "1.1"),
            http2: state.metrics.http_connections(&listener, "2"),
        }
    }
}

/// What the accept loop hands a new connection besides its socket.
struct Accepted {
    key: ListenerKey,
    local: SocketAddr,
    /// Its place under `max_connections`, held until it closes.
    slot: Slot,
    per_ip: Arc<PerIp>,
}

/// Serve one client connection until it closes, upgrades or is drained.
async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    accepted: Accepted,
    state: Arc<State>,
    stats: Arc<ConnectionStats>,
) {
    let Accepted {
        key,
        local,
        slot: _slot,
        per_ip,
    } = accepted;
    let generation = state.current();
    let Some(listener) = generation.config.listener(key) else {
        // The listener was removed by a reload an instant ago.
        return;
    };
    let scheme = listener.scheme();
    let tls = generation.tls(key);
    let (proxy_protocol, ip_cap) = (listener.proxy_protocol, listener.max_connections_per_ip);
    let header_timeout = generation.config.server.client_header_timeout;
    let send_timeout = generation.config.server.send_timeout;
    drop(generation);

    let _ = stream.set_nodelay(true);
    let peer = if proxy_protocol {
        match accept::read_proxy_header(&mut stream, header_timeout).await {
            Ok(source) => source.unwrap_or(peer),
            Err(why) => {
                state.metrics.proxy_header_error(&local.to_string());
                tracing::debug!(%peer, "closed: {why}");
                return;
            }
        }
    } else {
        peer
    };
    let counted = (ip_cap > 0).then(|| per_ip.count(peer.ip(), ip_cap));
    let over_cap = counted.as_ref().is_some_and(|c| c.over);
    if over_cap {
        state.metrics.over_ip_cap(&local.to_string());
        accept::over_ip_cap(peer.ip(), ip_cap, local);
    }
    let Some(io) = secure(stream, tls, header_timeout).await else {
        return;
    };
    let h2 = negotiated_h2(&io);
    let io = ClientStream::new(io, send_timeout);
    stats.open.inc();
    state.http_connections.fetch_add(1, Ordering::Relaxed);
    let mut client = Peer::new(peer, scheme, state);
    if over_cap {
        client.over_ip_cap = Some(ip_cap);
    }
    if h2 {
        stats.http2.inc();
        let state = client.state.clone();
        // Boxed: an HTTP/2 connection's state (its lingering close reads
        // into a 4 KiB buffer) would otherwise be part of every connection
        // task, and so of every HTTP/1.1 tunnel, which lives in that task.
        Box::pin(http2::serve(io, client, header_timeout)).await;
        state.http_connections.fetch_sub(1, Ordering::Relaxed);
        stats.open.dec();
        return;
    }
    stats.http1.inc();
    let peer = Arc::new(client);
    http1::serve(io, peer.clone(), header_timeout).await;
    peer.state.http_connections.fetch_sub(1, Ordering::Relaxed);
    stats.open.dec();
    // An upgraded connection carries on as a tunnel, in this same task.
    if let Some(tunnel) = peer.take_tunnel() {
        tunnel.run().await;
    }
}

/// Whether the TLS handshake chose HTTP/2 by ALPN. A listener offers `h2`
/// only with `http2` on (see [`crate::tls::alpn_protocols`]).
fn negotiated_h2(io: &PlainOrTls) -> bool {
    match io {
        Either::Left(_) => false,
        Either::Right(tls) => tls.get_ref().1.alpn_protocol() == Some(crate::tls::ALPN_H2),
    }
}

/// The connection as the HTTP server reads it: plain, or after a TLS
/// handshake that must finish within `header_timeout`. `None`: the
/// handshake failed or took too long, and the connection is dropped.
async fn secure(
    stream: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    header_timeout: Duration,
) -> Option<PlainOrTls> {
    let Some(config) = tls else {
        return Some(Either::Left(stream));
    };
    let handshake = TlsAcceptor::from(config).accept(stream);
    match tokio::time::timeout(header_timeout, handshake).await {
        Ok(Ok(tls)) if tls.get_ref().1.alpn_protocol() == Some(crate::tls::ACME_TLS_ALPN) => {
            // An ACME server checked the TLS-ALPN-01 certificate: the
            // handshake was all it wanted (RFC 8737 section 3).
            tracing::debug!("ACME TLS-ALPN-01 validation handshake answered");
            let mut tls = tls;
            let _ = tokio::time::timeout(header_timeout, tls.shutdown()).await;
            None
        }
        Ok(Ok(tls)) => Some(Either::Right(Box::new(tls))),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake not done within {header_timeout:?}");
            None
        }
    }
}
