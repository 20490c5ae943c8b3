//! Opening connections to the target: address resolution, local source
//! address rotation (`--source-addrs`), TCP, TLS and the WebSocket upgrade.
//! Every failure comes back as a classified [`Failure`].

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::{Request, generate_key};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::either::Either;

use super::args::Mode;
use super::error::{BenchError, Failure};
use super::plan::{Plan, Target};
use super::tls;

/// A WebSocket client connection as used by every mode.
pub type Ws = WebSocketStream<Conn>;

/// A plain (`Left`) or TLS (`Right`) connection.
pub type Conn = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// The local source address for the `seq`-th connection when connections
/// are spread over `127.0.0.1..=127.0.0.n` (round robin).
pub fn source_ip(n: u8, seq: u64) -> Ipv4Addr {
    let n = u64::from(n.max(1));
    // `seq % n` is below 255, so the cast cannot truncate.
    Ipv4Addr::new(127, 0, 0, 1 + (seq % n) as u8)
}

/// WebSocket buffer sizes suited to the mode: small buffers when many
/// connections are held, large ones for bulk streaming.
pub fn ws_config(mode: Mode, size: usize) -> WebSocketConfig {
    let limit = size.saturating_add(64 << 10).max(64 << 20);
    let base = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    match mode {
        Mode::Handshake | Mode::Hold | Mode::Http | Mode::Storm => {
            base.read_buffer_size(4 << 10).write_buffer_size(0)
        }
        Mode::Echo => base
            .read_buffer_size(size.saturating_add(64).clamp(4 << 10, 128 << 10))
            .write_buffer_size(0),
        Mode::Bulk => base,
    }
}

/// Opens connections to one target. Shared by all workers of a run.
pub struct Connector {
    pub target: Target,
    pub addr: SocketAddr,
    tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
    source_addrs: u8,
    next_source: AtomicU64,
    request: Request,
    ws_config: WebSocketConfig,
    timeout: Duration,
}

impl Connector {
    /// Resolves the target and prepares TLS and the upgrade request.
    /// Returns notes worth showing to the operator.
    pub async fn new(plan: &Plan) -> Result<(Connector, Vec<String>), BenchError> {
        let target = Target::parse(&plan.url, plan.mode)?;
        let mut notes = Vec::new();
        let addr = resolve(&target, plan.source_addrs > 1, plan.timeout).await?;

        let tls = if target.tls {
            let alpn: &[u8] = b"http/1.1";
            let (config, note) = tls::client_config(plan.ca.as_deref(), plan.insecure, alpn)?;
            notes.extend(note);
            Some((TlsConnector::from(config), tls::server_name(&target.host)?))
        } else {
            None
        };

        let mut request =
            target
                .ws_uri()
                .into_client_request()
                .map_err(|e| BenchError::InvalidUrl {
                    url: plan.url.clone(),
                    reason: e.to_string(),
                })?;
        for (name, value) in &plan.headers {
            let bad = || BenchError::InvalidHeader(format!("{name}: {value}"));
            let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
            let value = HeaderValue::from_str(value).map_err(|_| bad())?;
            let headers = request.headers_mut();
            if headers.contains_key(&name) {
                headers.insert(name, value);
            } else {
                headers.append(name, value);
            }
        }

        Ok((
            Connector {
                target,
                addr,
                tls,
                source_addrs: plan.source_addrs,
                next_source: AtomicU64::new(0),
                request,
                ws_config: ws_config(plan.mode, plan.size),
                timeout: plan.timeout,
            },
            notes,
        ))
    }

    /// The upgrade request template (extra headers included).
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// Opens a TCP connection, binding a rotating loopback source address
    /// when `--source-addrs` is above 1. Not time-limited by itself.
    pub async fn tcp(&self) -> Result<TcpStream, Failure> {
        let socket = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|e| Failure::from_connect_io(&e))?;
        if self.source_addrs > 1 {
            let seq = self.next_source.fetch_add(1, Ordering::Relaxed);
            let ip = source_ip(self.source_addrs, seq);
            bind_no_port(&socket);
            socket
                .bind(SocketAddr::new(IpAddr::V4(ip), 0))
                .map_err(|e| Failure::from_connect_io(&e))?;
        }
        let stream = socket
            .connect(self.addr)
            .await
            .map_err(|e| Failure::from_connect_io(&e))?;
        // Latency numbers are meaningless with Nagle's algorithm on.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// TCP plus TLS when the target is wss:// or https://. Not time-limited
    /// by itself.
    pub async fn transport(&self) -> Result<Conn, Failure> {
        let tcp = self.tcp().await?;
        match &self.tls {
            None => Ok(Either::Left(tcp)),
            Some((connector, name)) => connector
                .connect(name.clone(), tcp)
                .await
                .map(|s| Either::Right(Box::new(s)))
                .map_err(|e| Failure::from_tls_io(&e)),
        }
    }

    /// A complete WebSocket connection (TCP, TLS, upgrade), within `--timeout`.
    pub async fn websocket(&self) -> Result<Ws, Failure> {
        let attempt = async {
            let conn = self.transport().await?;
            let mut request = self.request.clone();
            if let Ok(key) = HeaderValue::from_str(&generate_key()) {
                request.headers_mut().insert("Sec-WebSocket-Key", key);
            }
            tokio_tungstenite::client_async_with_config(request, conn, Some(self.ws_config))
                .await
                .map(|(ws, _response)| ws)
                .map_err(|e| Failure::from_ws(&e, "WebSocket upgrade"))
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Failure::timeout("opening the connection")),
        }
    }
}

/// Resolves the target once, up front, so workers never wait on DNS.
async fn resolve(
    target: &Target,
    need_loopback_v4: bool,
    timeout: Duration,
) -> Result<SocketAddr, BenchError> {
    let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
    let addrs: Vec<SocketAddr> = match tokio::time::timeout(timeout, lookup).await {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(source)) => {
            return Err(BenchError::Resolve {
                host: target.host.clone(),
                source,
            });
        }
        Err(_) => {
            return Err(BenchError::Resolve {
                host: target.host.clone(),
                source: io::Error::new(io::ErrorKind::TimedOut, "lookup timed out"),
            });
        }
    };
    if need_loopback_v4 {
        return addrs
            .into_iter()
            .find(|a| matches!(a.ip(), IpAddr::V4(ip) if ip.is_loopback()))
            .ok_or_else(|| {
                BenchError::InvalidOption(format!(
                    "--source-addrs needs a target on IPv4 loopback (127.x.x.x); {} is not",
                    target.host
                ))
            });
    }
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| BenchError::NoAddress {
            host: target.host.clone(),
        })
}

/// Linux: let `connect` pick the source port, so ports are shared across
/// destinations instead of being reserved at `bind` time.
#[cfg(target_os = "linux")]
fn bind_no_port(socket: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: the fd is a valid socket owned by `socket` for this call, and
    // the option value is a c_int of the advertised size.
    let _ = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

#[cfg(not(target_os = "linux"))]
fn bind_no_port(_socket: &TcpSocket) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_rotate() {
        let ips: Vec<Ipv4Addr> = (0..5).map(|i| source_ip(3, i)).collect();
        assert_eq!(
            ips,
            vec![
                Ipv4Addr::new(127, 0, 0, 1),
                Ipv4Addr::new(127, 0, 0, 2),
                Ipv4Addr::new(127, 0, 0, 3),
                Ipv4Addr::new(127, 0, 0, 1),
                Ipv4Addr::new(127, 0, 0, 2),
            ]
        );
        assert_eq!(source_ip(1, 77), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source_ip(255, 254), Ipv4Addr::new(127, 0, 0, 255));
        assert_eq!(source_ip(0, 5), Ipv4Addr::new(127, 0, 0, 1));
    }

    #[test]
    fn buffers_follow_the_mode() {
        assert_eq!(ws_config(Mode::Hold, 64).read_buffer_size, 4 << 10);
        assert_eq!(ws_config(Mode::Echo, 64 << 10).write_buffer_size, 0);
        assert_eq!(
            ws_config(Mode::Bulk, 1 << 20).read_buffer_size,
            WebSocketConfig::default().read_buffer_size
        );
        assert_eq!(
            ws_config(Mode::Echo, 100 << 20).max_message_size,
            Some((100 << 20) + (64 << 10))
        );
    }
}
