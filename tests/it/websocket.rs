//! WebSocket relaying over ws:// and wss://: echo of every message shape,
//! close codes both ways, origins, and the smuggling defence.

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

fn ws_routes(ws: &WsBackend, extra_route: &str) -> String {
    format!(
        r#"
[[listener]]
bind = "127.0.0.1:0"

[[listener]]
bind = "127.0.0.1:0"
tls = {{ cert = "certs/server.crt", key = "certs/server.key" }}

[upstream.chat]
servers = ["{}"]

[[route]]
path = "/ws/"
upstream = "chat"
{extra_route}
"#,
        ws.addr
    )
}

async fn exercise<S>(ws: &mut Ws<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    assert_eq!(
        echo(ws, Message::text("hello")).await,
        Message::text("hello")
    );
    let binary = Message::binary(vec![0u8, 1, 2, 255]);
    assert_eq!(echo(ws, binary.clone()).await, binary);
    let mib: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let big = Message::binary(mib);
    assert_eq!(echo(ws, big.clone()).await, big);
    // A fragmented message: three frames, one message.
    for (i, part) in ["frag", "men", "ted"].iter().enumerate() {
        let frame = tungstenite::protocol::frame::Frame::message(
            part.as_bytes().to_vec(),
            if i == 0 {
                tungstenite::protocol::frame::coding::OpCode::Data(
                    tungstenite::protocol::frame::coding::Data::Text,
                )
            } else {
                tungstenite::protocol::frame::coding::OpCode::Data(
                    tungstenite::protocol::frame::coding::Data::Continue,
                )
            },
            i == 2,
        );
        within(ws.send(Message::Frame(frame))).await.unwrap();
    }
    assert_eq!(next_data(ws).await, Message::text("fragmented"));
    // Ping: the backend's pong comes back through the tunnel.
    within(ws.send(Message::Ping(b"are you there".to_vec().into())))
        .await
        .unwrap();
    match within(ws.next()).await {
        Some(Ok(Message::Pong(payload))) => assert_eq!(&payload[..], b"are you there"),
        Some(Ok(other)) => panic!("expected a pong, got {other:?}"),
        other => panic!("tunnel failed: {other:?}"),
    }
}

async fn close_with_reason<S>(mut ws: Ws<S>, backend: &WsBackend)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::Library(4321),
        reason: "client leaving".into(),
    };
    within(ws.close(Some(frame))).await.unwrap();
    // The backend echoes the close; the client sees it come back.
    let mut echoed = None;
    while let Some(message) = within(ws.next()).await {
        if let Ok(Message::Close(frame)) = message {
            echoed = frame;
        }
    }
    let echoed = echoed.expect("close frame from the backend");
    assert_eq!(u16::from(echoed.code), 4321);
    assert_eq!(echoed.reason, "client leaving");
    let closes = backend.closes.lock().unwrap().clone();
    assert!(
        closes.contains(&(4321, "client leaving".to_string())),
        "{closes:?}"
    );
}

#[tokio::test]
async fn ws_echo_of_every_message_shape() {
    let backend = WsBackend::start().await;
    let dir = TestDir::new();
    TestCa::create(&dir);
    let proxy = TestProxy::start(&dir, &ws_routes(&backend, "")).await;
    let mut ws = ws_connect(proxy.http(), "/ws/echo", &[]).await.unwrap();
    exercise(&mut ws).await;
    close_with_reason(ws, &backend).await;
    let seen = backend.handshakes.lock().unwrap()[0].clone();
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-real-ip"], "127.0.0.1");
    assert!(seen.get("sec-websocket-key").is_some());
    assert_eq!(seen["sec-websocket-version"], "13");
}

#[tokio::test]
async fn wss_echo_of_every_message_shape() {
    let backend = WsBackend::start().await;
    let dir = TestDir::new();
    let ca = TestCa::create(&dir);
    let proxy = TestProxy::start(&dir, &ws_routes(&backend, "")).await;
    let mut ws = wss_connect(proxy.https(), "/ws/echo", ca.client_config()).await;
    exercise(&mut ws).await;
    close_with_reason(ws, &backend).await;
    let seen = backend.handshakes.lock().unwrap()[0].clone();
    assert_eq!(seen["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn upstream_close_code_and_reason_reach_the_client() {
    let backend = WsBackend::start().await;
    let dir = TestDir::new();
    TestCa::create(&dir);
    let proxy = TestProxy::start(&dir, &ws_routes(&backend, "")).await;
    let mut ws = ws_connect(proxy.http(), "/ws/close/4001", &[])
        .await
        .unwrap();
    match next_data(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 4001);
            assert_eq!(frame.reason, "bye");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn frames_sent_right_behind_the_101_are_not_lost() {
    let backend = WsBackend::start().await;
    let dir = TestDir::new();
    TestCa::create(&dir);
    let proxy = TestProxy::start(&dir, &ws_routes(&backend, "")).await;
    let mut ws = ws_connect(proxy.http(), "/ws/greet", &[]).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("hello"));
}

#[tokio::test]
async fn origin_outside_allow_origins_is_403() {
    let backend = WsBackend::start().await;
    let dir = TestDir::new();
    TestCa::create(&dir);
    let route = "allow_origins = [\"https://chat.example.com\"]";
    let proxy = TestProxy::start(&dir, &ws_routes(&backend, route)).await;
    let refused = ws_connect(proxy.http(), "/ws/x", &[("origin", "https://evil.example")]).await;
    match refused {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
            let body = response.body().clone().unwrap_or_default();
            assert_eq!(
                String::from_utf8_lossy(&body),
                "403 forbidden: origin not allowed\n"
            );
        }
        other => panic!("expected 403, got {other:?}"),
    }
    assert!(
        backend.handshakes.lock().unwrap().is_empty(),
        "refused before the upstream"
    );
    let mut ws = ws_connect(
        proxy.http(),
        "/ws/x",
        &[("origin", "https://chat.example.com")],
    )
    .await
    .unwrap();
    assert_eq!(
        echo(&mut ws, Message::text("ok")).await,
        Message::text("ok")
    );
    // No Origin at all: a non-browser client, allowed.
    let mut ws = ws_connect(proxy.http(), "/ws/x", &[]).await.unwrap();
    assert_eq!(
        echo(&mut ws, Message::text("ok")).await,
        Message::text("ok")
    );
}

/// An upstream refusing the upgrade (426, or 200 as if it were a plain
/// request): the client gets that answer, and the bytes it sends next are
/// parsed by the proxy as HTTP, never relayed raw to the upstream.
async fn smuggling_probe(answer: &'static str, status: &str) {
    let raw = RawBackend::start(answer).await;
    let dir = TestDir::new();
    dir.write("static/secret.txt", "static file");
    let toml = format!(
        r#"
[[listener]]
bind = "127.0.0.1:0"
[upstream.raw]
servers = ["{}"]
[[route]]
path = "/ws/"
upstream = "raw"
[[route]]
path = "/static/"
root = "."
"#,
        raw.addr
    );
    let proxy = TestProxy::start(&dir, &toml).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(proxy.http()).await.unwrap();
    stream
        .write_all(
            b"GET /ws/chat HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n\
              Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    let head = within(read_head(&mut stream)).await;
    assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |n| n.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    within(stream.read_exact(&mut body)).await.unwrap();
    // The smuggled request: a proxy that made a tunnel would pass it raw.
    stream
        .write_all(b"GET /static/secret.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let head = within(read_head(&mut stream)).await;
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "the proxy answered the next request: {head}"
    );
    let mut body = [0u8; 11];
    within(stream.read_exact(&mut body)).await.unwrap();
    assert_eq!(&body, b"static file");
    assert!(
        raw.after_head.lock().unwrap().is_empty(),
        "nothing may reach the upstream raw"
    );
}

#[tokio::test]
async fn smuggling_probe_426() {
    smuggling_probe(
        "HTTP/1.1 426 Upgrade Required\r\nContent-Length: 4\r\n\r\nnope",
        "426",
    )
    .await;
}

#[tokio::test]
async fn smuggling_probe_200() {
    smuggling_probe("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "200").await;
}

#[tokio::test]
async fn a_101_with_a_wrong_accept_key_is_502() {
    let raw = RawBackend::start(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: d3JvbmcgYWNjZXB0IGtleQ==\r\n\r\n",
    )
    .await;
    let good = RawBackend::start(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n",
    )
    .await;
    let dir = TestDir::new();
    let toml = format!(
        r#"
[[listener]]
bind = "127.0.0.1:0"
[upstream.bad]
servers = ["{}"]
[upstream.good]
servers = ["{}"]
[[route]]
path = "/bad/"
upstream = "bad"
[[route]]
path = "/good/"
upstream = "good"
"#,
        raw.addr, good.addr
    );
    let proxy = TestProxy::start(&dir, &toml).await;
    match ws_connect(proxy.http(), "/bad/x", &[]).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::BAD_GATEWAY)
        }
        other => panic!("expected 502, got {other:?}"),
    }
    let ws = ws_connect(proxy.http(), "/good/x", &[]).await;
    assert!(ws.is_ok(), "a correct 101 makes a tunnel: {:?}", ws.err());
}

#[tokio::test]
async fn idle_tunnel_is_closed_after_idle_timeout() {
    let backend = WsBackend::start().await;
    let dir = TestDir::new();
    TestCa::create(&dir);
    let proxy = TestProxy::start(&dir, &ws_routes(&backend, "idle_timeout = \"400ms\"")).await;
    let mut ws = ws_connect(proxy.http(), "/ws/x", &[]).await.unwrap();
    // Activity keeps it open past the timeout.
    for _ in 0..4 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(
            echo(&mut ws, Message::text("tick")).await,
            Message::text("tick")
        );
    }
    let started = std::time::Instant::now();
    // Silence closes it.
    loop {
        match within(ws.next()).await {
            None | Some(Err(_)) => break,
            Some(Ok(Message::Close(_))) => continue,
            Some(Ok(other)) => panic!("unexpected {other:?}"),
        }
    }
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(300),
        "{waited:?}"
    );
    assert!(waited < std::time::Duration::from_secs(3), "{waited:?}");
}
