//! WebSocket-aware tunnels over real sockets: the proxy's pings and dead
//! peers, the peers' own pings and pongs passing untouched, the message
//! limit, `max_lifetime`, and who closed the tunnel.
//!
//! Raw clients and a scripted backend see every byte that crosses, framed
//! by a small decoder of the test's own; tungstenite plays the well-behaved
//! peer.

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The key of RFC 6455 §1.3, for raw clients.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

pub fn ws_route(upstream: std::net::SocketAddr, keys: &str) -> String {
    format!(
        r#"
[server]
admin = "127.0.0.1:0"

[[listener]]
bind = "127.0.0.1:0"

[upstream.chat]
servers = ["{upstream}"]

[[route]]
path = "/ws/"
upstream = "chat"
{keys}
"#
    )
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
    /// The frame's bytes as they crossed.
    pub raw: Vec<u8>,
}

/// Decode the frame at the start of `bytes`, if it is all there.
pub fn decode(bytes: &[u8]) -> Option<Frame> {
    if bytes.len() < 2 {
        return None;
    }
    let masked = bytes[1] & 0x80 != 0;
    let (len, mut at) = match bytes[1] & 0x7F {
        126 => (
            u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let key = if masked {
        let key: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(key)
    } else {
        None
    };
    let mut payload = bytes.get(at..at + len)?.to_vec();
    if let Some(key) = key {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    Some(Frame {
        fin: bytes[0] & 0x80 != 0,
        opcode: bytes[0] & 0x0F,
        masked,
        payload,
        raw: bytes[..at + len].to_vec(),
    })
}

/// Every whole frame in `bytes`.
pub fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(frame) = decode(&bytes[at..]) {
        at += frame.raw.len();
        out.push(frame);
    }
    out
}

/// A frame as a peer writes it; `mask` for a client's frames.
pub fn encode(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let bit = if mask.is_some() { 0x80 } else { 0 };
    if payload.len() < 126 {
        out.push(bit | payload.len() as u8);
    } else if payload.len() <= 0xFFFF {
        out.push(bit | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    } else {
        out.push(bit | 127);
        out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A WebSocket backend that answers the handshake, then only does what
/// the test says: it records every byte it receives (and when the
/// connection ended) and writes what it is given.
pub struct FrameBackend {
    pub addr: std::net::SocketAddr,
    pub received: Arc<Mutex<Vec<u8>>>,
    /// Set when the proxy closed the connection.
    pub ended: Arc<Mutex<Option<Instant>>>,
    changed: Arc<Notify>,
    send: mpsc::UnboundedSender<Vec<u8>>,
}

impl FrameBackend {
    /// One connection at a time.
    pub async fn start() -> FrameBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(Mutex::new(None));
        let changed = Arc::new(Notify::new());
        let (send, mut to_send) = mpsc::unbounded_channel::<Vec<u8>>();
        let (r, e, c) = (received.clone(), ended.clone(), changed.clone());
        tokio::spawn(async move {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let head = read_head(&mut stream).await;
            let key = header_in(&head, "sec-websocket-key").unwrap_or_default();
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            );
            stream.write_all(answer.as_bytes()).await.unwrap();
            let mut buf = vec![0u8; 65536];
            loop {
                tokio::select! {
                    read = stream.read(&mut buf) => match read {
                        Ok(0) | Err(_) => {
                            *e.lock().unwrap() = Some(Instant::now());
                            c.notify_waiters();
                            return;
                        }
                        Ok(n) => {
                            r.lock().unwrap().extend_from_slice(&buf[..n]);
                            c.notify_waiters();
                        }
                    },
                    Some(bytes) = to_send.recv() => {
                        if stream.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        FrameBackend {
            addr,
            received,
            ended,
            changed,
            send,
        }
    }

    pub fn send(&self, bytes: Vec<u8>) {
        self.send.send(bytes).unwrap();
    }

    pub fn frames(&self) -> Vec<Frame> {
        frames(&self.received.lock().unwrap())
    }

    /// Wait until `done` holds for what was received.
    pub async fn until(&self, done: impl Fn(&[Frame], bool) -> bool) {
        within(async {
            loop {
                let notified = self.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if done(&self.frames(), self.ended.lock().unwrap().is_some()) {
                    return;
                }
                notified.await;
            }
        })
        .await
    }
}

/// A raw client that completed its handshake through the proxy.
pub struct RawClient {
    pub stream: TcpStream,
    pub received: Vec<u8>,
}

impl RawClient {
    pub async fn connect(proxy: std::net::SocketAddr) -> RawClient {
        let mut stream = within(TcpStream::connect(proxy)).await.unwrap();
        let request = format!(
            "GET /ws/ HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
        );
        within(stream.write_all(request.as_bytes())).await.unwrap();
        let head = within(read_head(&mut stream)).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        RawClient {
            stream,
            received: Vec::new(),
        }
    }

    /// Read until `done` holds for the frames received, or the connection
    /// ends (then `false`).
    pub async fn read_until(&mut self, done: impl Fn(&[Frame]) -> bool) -> bool {
        let mut buf = vec![0u8; 65536];
        within(async {
            loop {
                if done(&frames(&self.received)) {
                    return true;
                }
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => self.received.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
    }

    /// Read to the end of the connection.
    pub async fn read_to_end(&mut self) {
        let _ = within(self.stream.read_to_end(&mut self.received)).await;
    }
}

fn is_own_ping(frame: &Frame) -> bool {
    frame.opcode == 0x9 && frame.payload.starts_with(b"sy-ping:")
}

#[tokio::test]
async fn a_client_that_never_answers_is_gone_and_the_upstream_told() {
    let backend = WsBackend::start().await;
    let dir = TestDir::new();
    let proxy = TestProxy::start(
        &dir,
        &ws_route(
            backend.addr,
            "ping_interval = \"300ms\"\nping_timeout = \"300ms\"",
        ),
    )
    .await;
    let started = Instant::now();
    let mut client = RawClient::connect(proxy.http()).await;
    // It reads (and so sees the proxy's Ping), but never answers.
    client.read_to_end().await;
    let gone = started.elapsed();
    let got = frames(&client.received);
    let ping = got.iter().find(|f| is_own_ping(f)).expect("a Ping");
    assert!(!ping.masked, "pings to clients are not masked");
    // 300 ms + 300 ms, each up to a tick (250 ms) late.
    assert!(gone >= Duration::from_millis(600), "{gone:?}");
    assert!(gone < Duration::from_millis(600 + 4 * 250), "{gone:?}");
    within(async {
        while backend.closes.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(backend.closes.lock().unwrap()[0].0, 1001);
    let scrape = scrape(proxy.admin.unwrap()).await;
    let labels = [("route", "/ws/"), ("result", "timeout")];
    assert_eq!(
        metric(&scrape, "switchyard_tunnel_pings_total", &labels),
        Some(1.0)
    );
    let by = [("route", "/ws/"), ("by", "proxy"), ("code", "1001")];
    assert_eq!(
        metric(&scrape, "switchyard_tunnel_closes_total", &by),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_silent_upstream_is_given_up_and_the_client_told() {
    let backend = FrameBackend::start().await;
    let dir = TestDir::new();
    let proxy = TestProxy::start(
        &dir,
        &ws_route(
            backend.addr,
            "ping_interval = \"300ms\"\nping_timeout = \"300ms\"",
        ),
    )
    .await;
    let (mut ws, _) = within(tokio_tungstenite::connect_async(format!(
        "ws://{}/ws/",
        proxy.http()
    )))
    .await
    .unwrap();
    let started = Instant::now();
    // tungstenite answers the proxy's pings; the backend never does.
    let close = loop {
        match within(ws.next()).await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a Close, got {other:?}"),
        }
    };
    let took = started.elapsed();
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1001));
    assert!(took < Duration::from_millis(600 + 4 * 250), "{took:?}");
    // The backend got the proxy's Ping, masked, and then its connection
    // was closed.
    backend.until(|_, ended| ended).await;
    let got = backend.frames();
    assert!(got.iter().any(|f| is_own_ping(f) && f.masked), "{got:?}");
}

#[tokio::test]
async fn the_peers_pings_and_pongs_cross_byte_for_byte_and_the_proxys_pong_stays() {
    let backend = FrameBackend::start().await;
    let dir = TestDir::new();
    // The proxy pings the client early; the backend may stay silent
    // longer than the test lasts.
    let proxy = TestProxy::start(
        &dir,
        &ws_route(
            backend.addr,
            "ping_interval = \"200ms\"\nping_timeout = \"10s\"",
        ),
    )
    .await;
    let mut client = RawClient::connect(proxy.http()).await;
    // The client's own Ping, with a payload.
    let ping = encode(0x9, "are you there ✓".as_bytes(), Some([1, 2, 3, 4]));
    within(client.stream.write_all(&ping)).await.unwrap();
    backend
        .until(|frames, _| frames.iter().any(|f| f.opcode == 0x9 && !is_own_ping(f)))
        .await;
    let at_backend: Vec<Frame> = backend
        .frames()
        .into_iter()
        .filter(|f| !is_own_ping(f))
        .collect();
    assert_eq!(at_backend[0].raw, ping, "the client's Ping, byte for byte");
    // The backend's own Pong reaches the client byte for byte.
    let pong = encode(0xA, "yes ✓".as_bytes(), None);
    backend.send(pong.clone());
    assert!(
        client
            .read_until(|f| f.iter().any(|f| f.opcode == 0xA))
            .await
    );
    let at_client = frames(&client.received);
    let got = at_client.iter().find(|f| f.opcode == 0xA).unwrap();
    assert_eq!(got.raw, pong);
    // The proxy's Ping to the client is answered; that Pong is the
    // proxy's and never reaches the backend.
    assert!(client.read_until(|f| f.iter().any(is_own_ping)).await);
    let own = frames(&client.received)
        .into_iter()
        .find(is_own_ping)
        .unwrap();
    let answer = encode(0xA, &own.payload, Some([9, 9, 9, 9]));
    let after = encode(0x1, b"after", Some([5, 6, 7, 8]));
    within(client.stream.write_all(&[answer, after.clone()].concat()))
        .await
        .unwrap();
    backend
        .until(|frames, _| frames.iter().any(|f| f.payload == b"after"))
        .await;
    let at_backend = backend.frames();
    assert!(
        at_backend.iter().all(|f| f.opcode != 0xA),
        "a Pong reached the backend: {at_backend:?}"
    );
    assert_eq!(at_backend.last().unwrap().raw, after);
    let admin = proxy.admin.unwrap();
    within(async {
        let labels = [("route", "/ws/"), ("result", "pong")];
        while metric(
            &scrape(admin).await,
            "switchyard_tunnel_pings_total",
            &labels,
        ) != Some(1.0)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_message_over_the_limit_gets_1009_and_the_upstream_1001() {
    let backend = WsBackend::start().await;
    let dir = TestDir::new();
    let proxy =
        TestProxy::start(&dir, &ws_route(backend.addr, "max_message_size = \"1MiB\"")).await;
    let mut ws = ws_connect(proxy.http(), "/ws/", &[]).await.unwrap();
    // Exactly 1 MiB passes, in one frame or in fragments.
    let mib = Message::binary(vec![7u8; 1 << 20]);
    assert_eq!(echo(&mut ws, mib.clone()).await, mib);
    // One byte more does not.
    within(ws.send(Message::binary(vec![7u8; (1 << 20) + 1])))
        .await
        .unwrap();
    match next_data(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1009),
        other => panic!("expected Close 1009, got {other:?}"),
    }
    // The connection then ends.
    while let Some(Ok(_)) = within(ws.next()).await {}
    within(async {
        while backend.closes.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(backend.closes.lock().unwrap()[0].0, 1001);
    // Only the message within the limit reached the backend.
    assert_eq!(
        backend.messages.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let scrape = scrape(proxy.admin.unwrap()).await;
    let by = [("route", "/ws/"), ("by", "proxy"), ("code", "1009")];
    assert_eq!(
        metric(&scrape, "switchyard_tunnel_closes_total", &by),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_tunnel_past_its_lifetime_is_closed_on_both_sides() {
    let backend = WsBackend::start().await;
    let dir = TestDir::new();
    let proxy = TestProxy::start(&dir, &ws_route(backend.addr, "max_lifetime = \"1s\"")).await;
    let started = Instant::now();
    let mut ws = ws_connect(proxy.http(), "/ws/", &[]).await.unwrap();
    assert_eq!(
        echo(&mut ws, Message::text("hi")).await,
        Message::text("hi")
    );
    match next_data(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected Close 1001, got {other:?}"),
    }
    let took = started.elapsed();
    // 1 s ± 10 %, up to a tick late.
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_millis(1100 + 2 * 250), "{took:?}");
    while let Some(Ok(_)) = within(ws.next()).await {}
    within(async {
        while backend.closes.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(backend.closes.lock().unwrap()[0].0, 1001);
}

#[tokio::test]
async fn the_side_whose_close_came_first_closed_the_tunnel() {
    let backend = WsBackend::start().await;
    let dir = TestDir::new();
    let proxy = TestProxy::start(&dir, &ws_route(backend.addr, "")).await;
    let admin = proxy.admin.unwrap();
    // The client closes: the backend answers and drops its connection.
    let mut ws = ws_connect(proxy.http(), "/ws/", &[]).await.unwrap();
    for text in ["one", "two", "three"] {
        assert_eq!(
            echo(&mut ws, Message::text(text)).await,
            Message::text(text)
        );
    }
    let frame = CloseFrame {
        code: CloseCode::Library(4321),
        reason: "done".into(),
    };
    within(ws.close(Some(frame))).await.unwrap();
    while let Some(Ok(_)) = within(ws.next()).await {}
    // The backend closes first.
    let mut ws = ws_connect(proxy.http(), "/ws/close/4000", &[])
        .await
        .unwrap();
    while let Some(Ok(_)) = within(ws.next()).await {}
    let done = |scrape: &prometheus_parse::Scrape| {
        metric(scrape, "switchyard_tunnels_open", &[("route", "/ws/")]) == Some(0.0)
    };
    let scrape = within(async {
        loop {
            let scrape = scrape(admin).await;
            if done(&scrape) {
                return scrape;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let closes = |by: &str, code: &str| {
        metric(
            &scrape,
            "switchyard_tunnel_closes_total",
            &[("route", "/ws/"), ("by", by), ("code", code)],
        )
    };
    // Application codes (4000–4999) are one label value.
    assert_eq!(closes("client", "4xxx"), Some(1.0));
    assert_eq!(closes("upstream", "4xxx"), Some(1.0));
    let messages = |direction: &str| {
        metric(
            &scrape,
            "switchyard_tunnel_messages_total",
            &[("route", "/ws/"), ("direction", direction)],
        )
    };
    assert_eq!(messages("client_to_upstream"), Some(3.0));
    assert_eq!(messages("upstream_to_client"), Some(3.0));
}

#[tokio::test]
async fn a_drain_says_goodbye_to_every_tunnel_spread_over_shutdown_spread() {
    const TUNNELS: usize = 50;
    let backend = WsBackend::start().await;
    let dir = TestDir::new();
    let route = ws_route(backend.addr, "").replace(
        "[server]\n",
        "[server]\nshutdown_spread = \"2s\"\nshutdown_timeout = \"6s\"\n",
    );
    let proxy = TestProxy::start(&dir, &route).await;
    let mut clients = Vec::new();
    for i in 0..TUNNELS {
        let mut ws = ws_connect(proxy.http(), "/ws/", &[]).await.unwrap();
        let text = Message::text(format!("hello {i}"));
        assert_eq!(echo(&mut ws, text.clone()).await, text);
        clients.push(ws);
    }
    let stop = tokio::spawn(async move { proxy.proxy.shutdown().await });
    // Each client gets Close 1001 before its connection ends.
    let mut readers = Vec::new();
    for mut ws in clients {
        readers.push(tokio::spawn(async move {
            let mut close = None;
            while let Some(Ok(message)) = within(ws.next()).await {
                if let Message::Close(frame) = message {
                    close = Some((frame.map(|f| u16::from(f.code)), Instant::now()));
                }
            }
            close
        }));
    }
    let mut moments = Vec::new();
    for reader in readers {
        let (code, at) = reader.await.unwrap().expect("a Close before the end");
        assert_eq!(code, Some(1001));
        moments.push(at);
    }
    within(stop).await.unwrap();
    moments.sort();
    let spread = moments[TUNNELS - 1] - moments[0];
    assert!(spread >= Duration::from_millis(1200), "{spread:?}");
    assert!(spread < Duration::from_secs(3), "{spread:?}");
    // Every upstream connection got its Close 1001 too.
    let closes = backend.closes.lock().unwrap().clone();
    assert_eq!(closes.len(), TUNNELS, "{closes:?}");
    assert!(closes.iter().all(|(code, _)| *code == 1001), "{closes:?}");
}
