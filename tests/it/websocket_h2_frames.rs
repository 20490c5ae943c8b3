//! The frame-aware relay on WebSockets over HTTP/2 (RFC 8441): the proxy's
//! pings and dead peers, the message limit, `max_lifetime` and the drain's
//! spread-out Close 1001 with the connection's GOAWAY, as HTTP/1.1 tunnels
//! get them.
//!
//! hyper's HTTP/2 client opens the streams; over them tungstenite plays the
//! well-behaved client and a raw stream the silent one (RFC 8441 keeps
//! RFC 6455's framing: the client still masks, the proxy's frames to it are
//! unmasked). Upstreams are tungstenite echo servers, or the scripted
//! [`FrameBackend`] that sees every byte and answers nothing.

use crate::common::*;
use crate::ws_frames::{Frame, FrameBackend, frames};
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::Message;

/// One TLS listener, an admin endpoint, `/ws/` to `ws` with `route_keys`,
/// the rest to `web`; `server_keys` go in `[server]`.
fn route_file(ws: SocketAddr, web: SocketAddr, route_keys: &str, server_keys: &str) -> String {
    format!(
        "[server]\nadmin = \"127.0.0.1:0\"\n{server_keys}\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"certs/server.crt\", key = \"certs/server.key\" }}\n\
         [upstream.ws]\nservers = [\"{ws}\"]\n\
         [upstream.web]\nservers = [\"{web}\"]\n\
         [[route]]\npath = \"/ws/\"\nupstream = \"ws\"\n{route_keys}\n\
         [[route]]\npath = \"/\"\nupstream = \"web\"\n"
    )
}

struct Setup {
    _dir: TestDir,
    ca: TestCa,
    proxy: TestProxy,
    client: H2Client,
    web: HttpBackend,
}

async fn start(ws: SocketAddr, route_keys: &str, server_keys: &str) -> Setup {
    let web = HttpBackend::start("web").await;
    let dir = TestDir::new();
    let ca = TestCa::create(&dir);
    let proxy = TestProxy::start(&dir, &route_file(ws, web.addr, route_keys, server_keys)).await;
    let client = H2Client::connect(proxy.https(), &ca).await;
    Setup {
        _dir: dir,
        ca,
        proxy,
        client,
        web,
    }
}

impl Setup {
    /// Wait for `name{labels}` to read `value`: a tunnel's series are
    /// written as it ends, a moment after its streams did.
    async fn wait_for_metric(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        let admin = self.proxy.admin.unwrap();
        let mut last = None;
        let reached = tokio::time::timeout(STEP, async {
            loop {
                last = metric(&scrape(admin).await, name, labels);
                if last == Some(value) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(reached.is_ok(), "{name}{labels:?} is {last:?}, not {value}");
    }

    /// The connection carries on: a plain request on a new stream.
    async fn connection_serves_requests(&self) {
        let before = self.web.count();
        let got = self.client.get("/page", &[]).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.text(), "backend web");
        assert_eq!(self.web.count(), before + 1);
        assert!(!self.client.connection.is_finished());
    }
}

fn is_own_ping(frame: &Frame) -> bool {
    frame.opcode == 0x9 && frame.payload.starts_with(b"sy-ping:")
}

/// Wait until `backend` heard `n` Close frames; their codes.
async fn closes_heard(backend: &WsBackend, n: usize) -> Vec<u16> {
    within(async {
        loop {
            let closes = backend.closes.lock().unwrap().clone();
            if closes.len() >= n {
                return closes.iter().map(|(code, _)| *code).collect();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Read `ws` to its end; the Close frame it got on the way, and when.
async fn read_to_close<S>(ws: &mut Ws<S>) -> Option<(Option<u16>, Instant)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut close = None;
    while let Some(Ok(message)) = within(ws.next()).await {
        if let Message::Close(frame) = message {
            close = Some((frame.map(|f| u16::from(f.code)), Instant::now()));
        }
    }
    close
}

#[tokio::test]
async fn a_silent_client_over_h2_is_pinged_then_given_up_and_the_upstream_gets_1001() {
    let backend = WsBackend::start().await;
    let setup = start(
        backend.addr,
        "ping_interval = \"300ms\"\nping_timeout = \"300ms\"",
        "",
    )
    .await;
    // A raw stream: it reads what comes (the proxy's Ping) and never
    // answers.
    let mut sender = setup.client.sender.clone();
    let req = setup.client.websocket_request("/ws/quiet", &[]);
    let mut response = within(sender.send_request(req)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let upgraded = within(hyper::upgrade::on(&mut response)).await.unwrap();
    let mut stream = hyper_util::rt::TokioIo::new(upgraded);
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = vec![0u8; 4096];
    within(async {
        // The stream ends (END_STREAM or a reset) once the proxy gave up.
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            received.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let gone = started.elapsed();
    let got = frames(&received);
    let ping = got.iter().find(|f| is_own_ping(f)).expect("a Ping");
    assert!(!ping.masked, "pings to clients are not masked, over h2 too");
    assert!(
        got.iter().all(|f| f.opcode != 0x8),
        "a dead client is sent no Close: {got:?}"
    );
    // 300 ms + 300 ms, each up to a tick (250 ms) late.
    assert!(gone >= Duration::from_millis(550), "{gone:?}");
    assert!(gone < Duration::from_millis(600 + 4 * 250), "{gone:?}");
    assert_eq!(closes_heard(&backend, 1).await, [1001]);
    setup
        .wait_for_metric(
            "switchyard_tunnel_pings_total",
            &[("route", "/ws/"), ("result", "timeout")],
            1.0,
        )
        .await;
    setup
        .wait_for_metric(
            "switchyard_tunnel_closes_total",
            &[("route", "/ws/"), ("by", "proxy"), ("code", "1001")],
            1.0,
        )
        .await;
    // One stream was given up, not the connection.
    setup.connection_serves_requests().await;
}

#[tokio::test]
async fn a_silent_upstream_behind_an_h2_stream_is_given_up_and_the_client_gets_1001() {
    let backend = FrameBackend::start().await;
    let setup = start(
        backend.addr,
        "ping_interval = \"300ms\"\nping_timeout = \"300ms\"",
        "",
    )
    .await;
    let (_, mut ws) = setup.client.websocket("/ws/", &[]).await.expect("200");
    let started = Instant::now();
    // tungstenite answers the proxy's pings to the client; the backend
    // never answers its own.
    let (code, at) = read_to_close(&mut ws).await.expect("a Close");
    assert_eq!(code, Some(1001));
    let took = at - started;
    assert!(took < Duration::from_millis(600 + 4 * 250), "{took:?}");
    // The backend got the proxy's Ping, masked (the proxy is the client
    // there), then its connection was closed.
    backend.until(|_, ended| ended).await;
    let got = backend.frames();
    assert!(got.iter().any(|f| is_own_ping(f) && f.masked), "{got:?}");
    setup
        .wait_for_metric(
            "switchyard_tunnel_pings_total",
            &[("route", "/ws/"), ("result", "timeout")],
            1.0,
        )
        .await;
    setup.connection_serves_requests().await;
}

#[tokio::test]
async fn a_message_over_the_limit_on_an_h2_stream_gets_1009_and_the_upstream_1001() {
    let backend = WsBackend::start().await;
    let setup = start(backend.addr, "max_message_size = \"64KiB\"", "").await;
    let (_, mut ws) = setup.client.websocket("/ws/", &[]).await.expect("200");
    // Exactly 64 KiB passes, in one frame.
    let limit = Message::binary(vec![7u8; 64 << 10]);
    assert_eq!(echo(&mut ws, limit.clone()).await, limit);
    // One byte more does not.
    within(ws.send(Message::binary(vec![7u8; (64 << 10) + 1])))
        .await
        .unwrap();
    let (code, _) = read_to_close(&mut ws).await.expect("a Close");
    assert_eq!(code, Some(1009));
    assert_eq!(closes_heard(&backend, 1).await, [1001]);
    // Only the message within the limit reached the backend.
    assert_eq!(
        backend.messages.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    setup
        .wait_for_metric(
            "switchyard_tunnel_closes_total",
            &[("route", "/ws/"), ("by", "proxy"), ("code", "1009")],
            1.0,
        )
        .await;
    setup.connection_serves_requests().await;
}

#[tokio::test]
async fn an_h2_stream_past_its_lifetime_is_closed_on_both_sides() {
    let backend = WsBackend::start().await;
    let setup = start(backend.addr, "max_lifetime = \"600ms\"", "").await;
    let started = Instant::now();
    let (_, mut ws) = setup.client.websocket("/ws/", &[]).await.expect("200");
    assert_eq!(
        echo(&mut ws, Message::text("hi")).await,
        Message::text("hi")
    );
    let (code, at) = read_to_close(&mut ws).await.expect("a Close");
    assert_eq!(code, Some(1001));
    let took = at - started;
    // 600 ms ± 10 %, up to a tick or two late.
    assert!(took >= Duration::from_millis(540), "{took:?}");
    assert!(took < Duration::from_millis(660 + 2 * 250), "{took:?}");
    assert_eq!(closes_heard(&backend, 1).await, [1001]);
    setup.connection_serves_requests().await;
}

#[tokio::test]
async fn the_drain_sends_goaway_then_close_1001_spread_to_both_sides_of_every_stream() {
    const STREAMS: usize = 3;
    let backend = WsBackend::start().await;
    let setup = start(
        backend.addr,
        "",
        "shutdown_spread = \"1s\"\nshutdown_timeout = \"5s\"",
    )
    .await;
    // A connection of its own, to see when its socket goes.
    let addr = setup.proxy.https();
    let tls = tls_connect(addr, client_config_alpn(&setup.ca, &["h2"]))
        .await
        .unwrap();
    let (tls, mut socket_closed) = Watched::new(tls);
    let client = H2Client::handshake(tls, addr).await;
    let mut streams = Vec::new();
    for i in 0..STREAMS {
        let (_, mut ws) = client.websocket("/ws/", &[]).await.expect("200");
        let text = Message::text(format!("hello {i}"));
        assert_eq!(echo(&mut ws, text.clone()).await, text);
        streams.push(ws);
    }
    let Setup { proxy, .. } = setup;
    let stopped = Instant::now();
    let stop = tokio::spawn(async move { proxy.proxy.shutdown().await });
    // Each stream reads to its end; its Close must come before.
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { read_to_close(&mut ws).await }))
        .collect();

    // The GOAWAY comes at once: the connection takes no new stream (a
    // request sent before it arrived may still be served), yet stays up
    // under its WebSocket streams.
    let mut sender = client.sender.clone();
    let goaway = within(async {
        loop {
            let req = http::Request::get(client.url("/before-the-goaway"))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            if sender.send_request(req).await.is_err() {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // That was the GOAWAY, not the end of the connection.
    within(client.connection)
        .await
        .expect("joined")
        .expect("a GOAWAY without error");
    assert!(
        still_open(&mut socket_closed),
        "the socket closed under open streams"
    );
    let mut moments = Vec::new();
    for reader in readers {
        let (code, at) = reader.await.unwrap().expect("a Close before the end");
        assert_eq!(code, Some(1001));
        moments.push(at);
    }
    moments.sort();
    let (first, last) = (moments[0], moments[STREAMS - 1]);
    // The goodbyes are spread over shutdown_spread (the first at once, the
    // last at its end).
    let spread = last - first;
    assert!(spread >= Duration::from_millis(600), "{spread:?}");
    assert!(spread < Duration::from_millis(1000 + 3 * 250), "{spread:?}");
    assert!(goaway < last, "the GOAWAY came after the last goodbye");
    // Every upstream connection got its Close 1001 too.
    let closes = closes_heard(&backend, STREAMS).await;
    assert!(closes.iter().all(|&code| code == 1001), "{closes:?}");
    assert_eq!(closes.len(), STREAMS);
    // The connection closes once its last stream ended, and the proxy
    // stops well before shutdown_timeout would cut anything.
    let closed = within(socket_closed).await.expect("the socket's end");
    assert!(closed >= last, "the connection closed under an open stream");
    within(stop).await.unwrap();
    assert!(stopped.elapsed() < Duration::from_secs(4), "cut, not ended");
}

/// Whether the watched socket is still open.
fn still_open(closed: &mut tokio::sync::oneshot::Receiver<Instant>) -> bool {
    matches!(
        closed.try_recv(),
        Err(tokio::sync::oneshot::error::TryRecvError::Empty)
    )
}

/// A byte stream that reports the moment it is dropped: hyper drops the
/// connection's stream when the HTTP/2 connection is over.
struct Watched<T> {
    io: T,
    dropped: Option<tokio::sync::oneshot::Sender<Instant>>,
}

impl<T> Watched<T> {
    fn new(io: T) -> (Watched<T>, tokio::sync::oneshot::Receiver<Instant>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let watched = Watched {
            io,
            dropped: Some(tx),
        };
        (watched, rx)
    }
}

impl<T> Drop for Watched<T> {
    fn drop(&mut self) {
        if let Some(tx) = self.dropped.take() {
            let _ = tx.send(Instant::now());
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
