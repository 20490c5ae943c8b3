//! The backend every target forwards to: this same bench binary re-executed
//! as `proxies --backend ADDR`. A deliberately small server on a two-thread
//! tokio runtime:
//!
//! - `GET /__stats` answers `open N total M` (WebSocket connections open now
//!   and ever accepted), so the harness can see tunnels arrive and leave;
//! - a WebSocket upgrade becomes an echo connection (tokio-tungstenite);
//! - `GET /json` gets a fixed 20 KiB JSON document (`application/json`),
//!   never compressed: the compression workloads have the proxies do that;
//! - any other request gets a fixed 13-byte body over keep-alive.
//!
//! With `--handshake-rate N` it answers at most N WebSocket handshakes per
//! second, as a backend busy setting up each session does: handshakes wait
//! for their slot, and one whose slot is more than [`SHED_AFTER`] away is
//! refused with a `503` at once (the backend sheds what it cannot queue).
//! That is the storm workload's backend.
//!
//! Requests are parsed by hand (GET without a body only), which keeps the
//! backend's CPU per request well below a proxy's: the `direct` rows show
//! its ceiling.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

const BODY: &str = "Hello, world\n";
/// Size of the `/json` document.
pub const JSON_SIZE: usize = 20 * 1024;

/// The `/json` answer, head and body: a chat history as an API returns it,
/// varied enough that it compresses like real JSON (about 5:1 with gzip).
fn json_response() -> &'static [u8] {
    static RESPONSE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    RESPONSE.get_or_init(|| {
        let names = ["alice", "bob", "路人甲", "carol", "dave", "erin", "frank"];
        let words = ["hello", "room", "anyone", "here?", "good", "morning", "ship", "it", "today", "lgtm"];
        let mut body = String::from("{\"room\":\"lobby\",\"messages\":[");
        let mut i: usize = 0;
        while body.len() < JSON_SIZE - 200 {
            let text: Vec<&str> = (0..(3 + i % 5)).map(|k| words[(i * 7 + k * 3) % words.len()]).collect();
            body.push_str(&format!(
                "{{\"id\":{},\"type\":\"chat\",\"user\":{{\"id\":{},\"name\":\"{}\",\"image\":{}}},\"data\":\"{}\",\"at\":{}}},",
                1000 + i,
                i % 13,
                names[i % names.len()],
                i % 9,
                text.join(" "),
                1_764_590_000_000u64 + (i as u64) * 7919
            ));
            i += 1;
        }
        body.push_str("{}]}");
        while body.len() < JSON_SIZE {
            body.insert(body.len() - 2, ' ');
        }
        let mut response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        response.extend_from_slice(body.as_bytes());
        response
    })
}

/// A handshake that would wait longer than this for its slot is refused.
pub const SHED_AFTER: Duration = Duration::from_secs(1);

/// Slots for handshakes, `interval` apart (the storm backend only).
struct Pacer {
    start: std::time::Instant,
    interval_ns: u64,
    next_ns: AtomicU64,
}

static PACER: std::sync::OnceLock<Pacer> = std::sync::OnceLock::new();

impl Pacer {
    /// How long this handshake waits for its slot; `None`: refuse it.
    fn claim(&self) -> Option<Duration> {
        let now = self.start.elapsed().as_nanos() as u64;
        let mut next = self.next_ns.load(Ordering::Relaxed);
        loop {
            let slot = next.max(now);
            if slot - now > SHED_AFTER.as_nanos() as u64 {
                return None;
            }
            match self.next_ns.compare_exchange_weak(
                next,
                slot + self.interval_ns,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Duration::from_nanos(slot - now)),
                Err(actual) => next = actual,
            }
        }
    }
}
const MAX_HEAD: usize = 16 << 10;

#[derive(Default)]
struct Counters {
    open: AtomicU64,
    total: AtomicU64,
    connections: AtomicU64,
}

/// Decrements the open count when an echo connection ends.
struct OpenGuard(Arc<Counters>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Entry point of `--backend ADDR`.
pub fn main(addr: &str, handshake_rate: Option<f64>) -> ExitCode {
    if let Some(rate) = handshake_rate.filter(|r| *r > 0.0) {
        let _ = PACER.set(Pacer {
            start: std::time::Instant::now(),
            interval_ns: (1e9 / rate) as u64,
            next_ns: AtomicU64::new(0),
        });
    }
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("backend: bad address {addr:?}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("backend: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(addr)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backend: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(4096)?;
    let counters = Arc::new(Counters::default());
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                counters.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(connection(stream, counters.clone()));
            }
            // Out of files or similar: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// What the backend needs from one request head.
struct Head {
    upgrade: bool,
    key: Option<String>,
    close: bool,
    has_body: bool,
    stats: bool,
    json: bool,
}

fn parse_head(head: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let _method = request_line.next()?;
    let path = request_line.next()?;
    let mut parsed = Head {
        upgrade: false,
        key: None,
        close: false,
        has_body: false,
        stats: path == "/__stats",
        json: path == "/json",
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("upgrade") {
            parsed.upgrade = value.eq_ignore_ascii_case("websocket");
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            parsed.key = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("connection") {
            parsed.close |= value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"));
        } else if name.eq_ignore_ascii_case("content-length") {
            parsed.has_body |= value != "0";
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            parsed.has_body = true;
        }
    }
    Some(parsed)
}

async fn connection(mut stream: TcpStream, counters: Arc<Counters>) {
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(2048);
    let mut out = Vec::with_capacity(256);
    loop {
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // Answer every complete request in the buffer with one write.
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head_bytes = buf.split_to(end + 4);
            let Some(head) = parse_head(&head_bytes) else {
                let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                return;
            };
            if head.has_body {
                let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                return;
            }
            if let (true, Some(key)) = (head.upgrade, &head.key) {
                if !out.is_empty() && stream.write_all(&out).await.is_err() {
                    return;
                }
                if let Some(pacer) = PACER.get() {
                    match pacer.claim() {
                        Some(wait) => tokio::time::sleep(wait).await,
                        None => {
                            let _ = stream
                                .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                                .await;
                            return;
                        }
                    }
                }
                let response = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
                     connection: Upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
                    derive_accept_key(key.as_bytes())
                );
                if stream.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
                echo(stream, buf.to_vec(), counters).await;
                return;
            }
            if head.stats {
                let body = format!(
                    "open {} total {} connections {}\n",
                    counters.open.load(Ordering::Relaxed),
                    counters.total.load(Ordering::Relaxed),
                    counters.connections.load(Ordering::Relaxed)
                );
                out.extend_from_slice(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            } else if head.json {
                out.extend_from_slice(json_response());
            } else {
                out.extend_from_slice(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 13\r\n\r\n",
                );
                out.extend_from_slice(BODY.as_bytes());
            }
            if head.close {
                let _ = stream.write_all(&out).await;
                return;
            }
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if buf.len() > MAX_HEAD {
            return;
        }
    }
}

/// Echoes text and binary messages until the client closes.
async fn echo(stream: TcpStream, already_read: Vec<u8>, counters: Arc<Counters>) {
    counters.open.fetch_add(1, Ordering::Relaxed);
    counters.total.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(counters);
    let config = WebSocketConfig::default()
        .read_buffer_size(16 << 10)
        .write_buffer_size(0)
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20));
    let mut ws =
        WebSocketStream::from_partially_read(stream, already_read, Role::Server, Some(config))
            .await;
    while let Some(message) = ws.next().await {
        match message {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(m).await.is_err() {
                    return;
                }
            }
            // Pings are answered and Close is echoed by tungstenite itself
            // on the next read; keep reading until the stream ends.
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// The backend's counters as seen by the harness.
#[derive(Clone, Copy, Debug)]
pub struct Counts {
    /// WebSocket connections open now.
    pub open: u64,
    /// TCP connections ever accepted (HTTP and WebSocket).
    pub connections: u64,
}

/// Asks the backend at `addr` for its counters with a plain blocking GET
/// (harness side).
pub fn counts(addr: SocketAddr) -> Result<Counts, String> {
    let fail = |e: std::io::Error| format!("asking the backend at {addr} for its counts: {e}");
    let mut stream = StdTcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(fail)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(fail)?;
    stream
        .write_all(b"GET /__stats HTTP/1.1\r\nhost: backend\r\nconnection: close\r\n\r\n")
        .map_err(fail)?;
    let mut text = String::new();
    stream.read_to_string(&mut text).map_err(fail)?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let words: Vec<&str> = body.split_whitespace().collect();
    match words.as_slice() {
        ["open", open, "total", _, "connections", conns] => match (open.parse(), conns.parse()) {
            (Ok(open), Ok(connections)) => Ok(Counts { open, connections }),
            _ => Err(format!("the backend's counts are unreadable: {body:?}")),
        },
        _ => Err(format!("the backend's counts are unreadable: {body:?}")),
    }
}
