//! WebSockets over HTTP/2 (RFC 8441) bridged to HTTP/1.1 upstreams: hyper's
//! HTTP/2 client opens the extended CONNECT, tungstenite speaks WebSocket
//! on the stream, and the upstreams are tungstenite servers or raw sockets
//! that show what crossed the wire.

use crate::common::*;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// One TLS listener, an admin endpoint, `/ws/` to `server`, the rest to
/// `http` (or `server` too); `route_extra` goes on the `/ws/` route.
fn route_file(server: SocketAddr, http: Option<SocketAddr>, route_extra: &str) -> String {
    let http = http.unwrap_or(server);
    format!(
        "[server]\nadmin = \"127.0.0.1:0\"\nshutdown_timeout = \"1s\"\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"certs/server.crt\", key = \"certs/server.key\" }}\n\
         [upstream.ws]\nservers = [\"{server}\"]\n\
         [upstream.web]\nservers = [\"{http}\"]\n\
         [[route]]\npath = \"/ws/\"\nupstream = \"ws\"\n{route_extra}\n\
         [[route]]\npath = \"/\"\nupstream = \"web\"\n"
    )
}

async fn start(
    server: SocketAddr,
    http: Option<SocketAddr>,
    route_extra: &str,
) -> (TestDir, TestCa, TestProxy) {
    let dir = TestDir::new();
    let ca = TestCa::create(&dir);
    let proxy = TestProxy::start(&dir, &route_file(server, http, route_extra)).await;
    (dir, ca, proxy)
}

async fn tunnels_open(proxy: &TestProxy) -> f64 {
    let scrape = scrape(proxy.admin.unwrap()).await;
    metric(&scrape, "switchyard_tunnels_open", &[("route", "/ws/")]).unwrap_or(0.0)
}

/// Poll the tunnel gauge until it reads `n`.
async fn wait_for_tunnels(proxy: &TestProxy, n: f64) {
    within(async {
        while tunnels_open(proxy).await != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn echo_of_text_binary_and_1_mib_with_ping_and_close_codes_both_ways() {
    let backend = WsBackend::start().await;
    let (_dir, ca, proxy) = start(backend.addr, None, "").await;
    let client = H2Client::connect(proxy.https(), &ca).await;

    let (head, mut ws) = client.websocket("/ws/echo", &[]).await.expect("200");
    assert_eq!(head.status, StatusCode::OK);
    assert!(!head.headers.contains_key("sec-websocket-accept"));
    assert!(!head.headers.contains_key("upgrade"));
    assert_eq!(
        echo(&mut ws, Message::text("hello")).await,
        Message::text("hello")
    );
    let binary = Message::binary(vec![0u8, 1, 2, 254, 255]);
    assert_eq!(echo(&mut ws, binary.clone()).await, binary);
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let answer = echo(&mut ws, Message::binary(big.clone())).await;
    assert_eq!(answer.into_data().as_ref(), &big[..]);
    // A ping crosses and its pong comes back.
    within(ws.send(Message::Ping(Bytes::from_static(b"are you there"))))
        .await
        .unwrap();
    let pong = within(async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Pong(payload))) => return payload,
                Some(Ok(_)) => continue,
                other => panic!("expected a pong, got {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(pong.as_ref(), b"are you there");
    assert_eq!(
        backend.messages.load(std::sync::atomic::Ordering::SeqCst),
        3
    );

    // The client closes with a code; the upstream hears it and answers it.
    within(ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::from(4000),
        reason: "done".into(),
    }))))
    .await
    .unwrap();
    match next_data(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 4000),
        other => panic!("expected the close echoed, got {other:?}"),
    }
    within(async {
        while backend.closes.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(
        backend.closes.lock().unwrap()[0],
        (4000, "done".to_string())
    );
    wait_for_tunnels(&proxy, 0.0).await;

    // The upstream closes with a code; the client hears it.
    let (_, mut ws) = client.websocket("/ws/close/4001", &[]).await.expect("200");
    match next_data(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 4001);
            assert_eq!(frame.reason.as_str(), "bye");
        }
        other => panic!("expected a close, got {other:?}"),
    }
    // The upstream saw an HTTP/1.1 handshake with a key of the proxy's own.
    let handshakes = backend.handshakes.lock().unwrap().clone();
    assert_eq!(handshakes.len(), 2);
    for headers in &handshakes {
        assert_eq!(headers["upgrade"], "websocket");
        assert_eq!(headers["connection"], "Upgrade");
        assert_eq!(headers["sec-websocket-version"], "13");
        assert_eq!(headers["host"], client.authority.as_str());
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-real-ip"], "127.0.0.1");
    }
    assert_ne!(
        handshakes[0]["sec-websocket-key"], handshakes[1]["sec-websocket-key"],
        "every handshake gets a fresh key"
    );
    let scrape = scrape(proxy.admin.unwrap()).await;
    assert_eq!(
        metric(
            &scrape,
            "switchyard_requests_total",
            &[("route", "/ws/"), ("status", "2xx")]
        ),
        Some(2.0)
    );
    assert!(
        metric(
            &scrape,
            "switchyard_tunnel_bytes_total",
            &[("route", "/ws/"), ("direction", "client_to_upstream")]
        )
        .unwrap()
            > 1024.0 * 1024.0
    );
}

/// A WebSocket upstream that reads one handshake, checks nothing, answers
/// `answer` (with `{accept}` the right accept for the request's key) and
/// then echoes raw bytes; `heads` are the heads it read, `closed` hears of
/// each connection's end.
struct RawWs {
    addr: SocketAddr,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
    closed: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl RawWs {
    async fn start(answer: &'static str) -> RawWs {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, closed) = tokio::sync::mpsc::unbounded_channel();
        let seen = heads.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (seen, tx) = (seen.clone(), tx.clone());
                tokio::spawn(async move {
                    let head = read_head(&mut stream).await;
                    let key = header_in(&head, "sec-websocket-key").unwrap_or_default();
                    seen.lock().unwrap().push(head);
                    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(
                        key.as_bytes(),
                    );
                    let _ = stream
                        .write_all(answer.replace("{accept}", &accept).as_bytes())
                        .await;
                    let mut buf = [0u8; 4096];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if stream.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = tx.send(());
                });
            }
        });
        RawWs {
            addr,
            heads,
            closed,
        }
    }
}

const SWITCH: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n";

const SWITCH_WITH_CHOICES: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\
    Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n";

#[tokio::test]
async fn subprotocol_and_extensions_cross_and_the_stream_is_spliced_raw() {
    let backend = RawWs::start(SWITCH_WITH_CHOICES).await;
    let (_dir, ca, proxy) = start(backend.addr, None, "").await;
    let client = H2Client::connect(proxy.https(), &ca).await;
    let mut sender = client.sender.clone();
    let req = client.websocket_request(
        "/ws/chat?room=1",
        &[
            ("sec-websocket-protocol", "chat, superchat"),
            (
                "sec-websocket-extensions",
                "permessage-deflate; client_max_window_bits",
            ),
            ("origin", "https://chat.example.com"),
        ],
    );
    let mut response = within(sender.send_request(req)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat");
    assert_eq!(
        response.headers()["sec-websocket-extensions"],
        "permessage-deflate"
    );
    let upgraded = within(hyper::upgrade::on(&mut response)).await.unwrap();
    let mut stream = hyper_util::rt::TokioIo::new(upgraded);
    // Whatever the client writes reaches the upstream untouched (here it
    // echoes): the proxy frames nothing.
    within(stream.write_all(b"\x81\x05hello-not-masked"))
        .await
        .unwrap();
    let mut back = vec![0u8; 18];
    within(stream.read_exact(&mut back)).await.unwrap();
    assert_eq!(&back, b"\x81\x05hello-not-masked");

    let head = backend.heads.lock().unwrap()[0].clone();
    let lower = head.to_ascii_lowercase();
    assert!(
        head.starts_with("GET /ws/chat?room=1 HTTP/1.1\r\n"),
        "{head}"
    );
    for line in [
        "upgrade: websocket\r\n",
        "connection: upgrade\r\n",
        "sec-websocket-version: 13\r\n",
        "sec-websocket-protocol: chat, superchat\r\n",
        "sec-websocket-extensions: permessage-deflate; client_max_window_bits\r\n",
        "origin: https://chat.example.com\r\n",
    ] {
        assert!(lower.contains(line), "{line:?} missing from\n{head}");
    }
    let key = header_in(&head, "sec-websocket-key").expect("a key");
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .expect("base64 key");
    assert_eq!(raw.len(), 16);
}

#[tokio::test]
async fn two_websocket_streams_and_a_get_share_one_connection() {
    let backend = WsBackend::start().await;
    let web = HttpBackend::start("web").await;
    let (_dir, ca, proxy) = start(backend.addr, Some(web.addr), "").await;
    let client = H2Client::connect(proxy.https(), &ca).await;
    let (_, mut first) = client.websocket("/ws/a", &[]).await.expect("200");
    let (_, mut second) = client.websocket("/ws/b", &[]).await.expect("200");
    assert_eq!(
        echo(&mut first, Message::text("one")).await,
        Message::text("one")
    );
    assert_eq!(
        echo(&mut second, Message::text("two")).await,
        Message::text("two")
    );
    let got = client.get("/page", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "backend web");
    // Interleaved, at once.
    within(first.send(Message::text("1a"))).await.unwrap();
    within(second.send(Message::text("2a"))).await.unwrap();
    let (a, b, page) = tokio::join!(
        next_data(&mut first),
        next_data(&mut second),
        client.get("/page2", &[])
    );
    assert_eq!((a, b), (Message::text("1a"), Message::text("2a")));
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(tunnels_open(&proxy).await, 2.0);
    assert_eq!(backend.handshakes.lock().unwrap().len(), 2);
    drop(first);
    drop(second);
    wait_for_tunnels(&proxy, 0.0).await;
    assert!(!client.connection.is_finished());
}

#[tokio::test]
async fn a_non_101_answer_comes_back_as_an_ordinary_response() {
    let backend = RawWs::start(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nnot here\n",
    )
    .await;
    let (_dir, ca, proxy) = start(backend.addr, None, "").await;
    let client = H2Client::connect(proxy.https(), &ca).await;
    let got = client.websocket("/ws/x", &[]).await.expect_err("not a 200");
    assert_eq!(got.status, StatusCode::FORBIDDEN);
    assert_eq!(got.text(), "not here\n");
    let scrape = scrape(proxy.admin.unwrap()).await;
    assert_eq!(
        metric(
            &scrape,
            "switchyard_upgrades_refused_total",
            &[("route", "/ws/"), ("reason", "not-101")]
        ),
        Some(1.0)
    );
    assert_eq!(tunnels_open(&proxy).await, 0.0);
}

#[tokio::test]
async fn a_2xx_answer_without_the_switch_is_a_502_not_an_open_websocket() {
    let backend = RawWs::start("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").await;
    let (_dir, ca, proxy) = start(backend.addr, None, "").await;
    let client = H2Client::connect(proxy.https(), &ca).await;
    let got = client.websocket("/ws/x", &[]).await.expect_err("not a 200");
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn a_101_to_a_request_that_asked_for_no_upgrade_is_a_502() {
    let backend = RawWs::start(SWITCH).await;
    let (_dir, ca, proxy) = start(backend.addr, None, "").await;
    let client = H2Client::connect(proxy.https(), &ca).await;
    let got = client.get("/page", &[]).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    let got = client.get("/page", &[]).await;
    assert_eq!(
        got.status,
        StatusCode::BAD_GATEWAY,
        "the connection lives on"
    );
}

#[tokio::test]
async fn a_wrong_accept_is_a_502() {
    let backend = RawWs::start(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    let (_dir, ca, proxy) = start(backend.addr, None, "").await;
    let client = H2Client::connect(proxy.https(), &ca).await;
    let got = client.websocket("/ws/x", &[]).await.expect_err("not a 200");
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    let scrape = scrape(proxy.admin.unwrap()).await;
    assert_eq!(
        metric(
            &scrape,
            "switchyard_upgrades_refused_total",
            &[("route", "/ws/"), ("reason", "bad-accept")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn other_connects_get_501_and_origins_are_checked() {
    let backend = WsBackend::start().await;
    let (_dir, ca, proxy) = start(
        backend.addr,
        None,
        "allow_origins = [\"https://chat.example.com\"]",
    )
    .await;
    let client = H2Client::connect(proxy.https(), &ca).await;
    // Another :protocol.
    let req = Request::connect(client.url("/ws/x"))
        .extension(hyper::ext::Protocol::from_static("connect-udp"))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(client.send(req).await.status, StatusCode::NOT_IMPLEMENTED);
    // A classic CONNECT host:port: not a target a reverse proxy serves.
    let req = Request::connect(client.authority.as_str())
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(client.send(req).await.status, StatusCode::BAD_REQUEST);
    // Origins.
    let got = client
        .websocket("/ws/x", &[("origin", "https://evil.example")])
        .await
        .expect_err("refused");
    assert_eq!(got.status, StatusCode::FORBIDDEN);
    let (_, mut ws) = client
        .websocket("/ws/x", &[("origin", "https://chat.example.com")])
        .await
        .expect("allowed");
    assert_eq!(
        echo(&mut ws, Message::text("hi")).await,
        Message::text("hi")
    );
    // No version: a 400, and the stream only.
    let mut sender = client.sender.clone();
    let req = Request::connect(client.url("/ws/x"))
        .extension(hyper::ext::Protocol::from_static("websocket"))
        .header("origin", "https://chat.example.com")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let response = within(sender.send_request(req)).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(backend.handshakes.lock().unwrap().len(), 1);
    assert_eq!(
        echo(&mut ws, Message::text("still")).await,
        Message::text("still")
    );
}

#[tokio::test]
async fn rst_stream_from_the_client_ends_the_tunnel_and_closes_the_upstream_socket() {
    let mut backend = RawWs::start(SWITCH).await;
    let web = HttpBackend::start("web").await;
    let (_dir, ca, proxy) = start(backend.addr, Some(web.addr), "").await;
    let addr = proxy.https();
    let tls = tls_connect(addr, client_config_alpn(&ca, &["h2"]))
        .await
        .unwrap();
    let (client, connection) = within(h2::client::handshake(tls)).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut client = within(client.ready()).await.unwrap();
    let mut req = Request::connect(format!("https://localhost:{}/ws/rst", addr.port()))
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
    req.extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    let (response, mut stream) = client.send_request(req, false).unwrap();
    let response = within(response).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    stream
        .send_data(Bytes::from_static(b"ping!"), false)
        .unwrap();
    let echoed = within(body.data()).await.unwrap().unwrap();
    assert_eq!(echoed.as_ref(), b"ping!");
    assert_eq!(tunnels_open(&proxy).await, 1.0);

    stream.send_reset(h2::Reason::CANCEL);
    // The upstream socket is closed.
    within(backend.closed.recv())
        .await
        .expect("upstream closed");
    wait_for_tunnels(&proxy, 0.0).await;
    // The connection lives on.
    let (response, _) = client
        .send_request(
            Request::get(format!("https://localhost:{}/", addr.port()))
                .body(())
                .unwrap(),
            true,
        )
        .unwrap();
    let response = within(response).await.expect("a response after the reset");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!driver.is_finished());
}

#[tokio::test]
async fn losing_the_connection_ends_every_tunnel_on_it() {
    let mut backend = RawWs::start(SWITCH).await;
    let (_dir, ca, proxy) = start(backend.addr, None, "").await;
    let client = H2Client::connect(proxy.https(), &ca).await;
    let (_, first) = client.websocket("/ws/a", &[]).await.expect("200");
    let (_, second) = client.websocket("/ws/b", &[]).await.expect("200");
    assert_eq!(tunnels_open(&proxy).await, 2.0);
    // The TCP connection goes away under both streams.
    client.connection.abort();
    drop((first, second, client));
    within(backend.closed.recv()).await.unwrap();
    within(backend.closed.recv()).await.unwrap();
    wait_for_tunnels(&proxy, 0.0).await;
}

#[tokio::test]
async fn a_reload_keeps_websocket_streams_and_the_drain_says_goodbye_to_them() {
    let backend = WsBackend::start().await;
    let (dir, ca, proxy) = start(backend.addr, None, "").await;
    let client = H2Client::connect(proxy.https(), &ca).await;
    let (_, mut ws) = client.websocket("/ws/keep", &[]).await.expect("200");
    assert_eq!(
        echo(&mut ws, Message::text("before")).await,
        Message::text("before")
    );

    // A reload that moves `/ws/` elsewhere leaves the open stream alone.
    let other = WsBackend::start().await;
    dir.route_file(&route_file(other.addr, None, ""));
    within(proxy.proxy.reload()).await.expect("reload");
    assert_eq!(
        echo(&mut ws, Message::text("after")).await,
        Message::text("after")
    );
    let (_, mut fresh) = client.websocket("/ws/new", &[]).await.expect("200");
    assert_eq!(
        echo(&mut fresh, Message::text("new")).await,
        Message::text("new")
    );
    assert_eq!(other.handshakes.lock().unwrap().len(), 1);
    assert_eq!(backend.handshakes.lock().unwrap().len(), 1);

    // Drain: GOAWAY; the open stream is still relayed, then gets the
    // drain's Close 1001 (shutdown_spread: half of shutdown_timeout), which
    // tungstenite answers, and the shutdown completes.
    let proxy = Arc::new(proxy);
    let stopping = {
        let proxy = proxy.clone();
        tokio::spawn(async move { proxy.proxy.shutdown().await })
    };
    assert_eq!(
        echo(&mut ws, Message::text("draining")).await,
        Message::text("draining")
    );
    let close = within(async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                other => panic!("expected the drain's Close, got {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(close, Some(1001));
    while let Some(Ok(_)) = within(ws.next()).await {}
    within(stopping).await.unwrap();
}

#[tokio::test]
async fn an_open_websocket_stream_keeps_its_connection_from_the_idle_goaway() {
    let backend = WsBackend::start().await;
    let web = HttpBackend::start("web").await;
    let dir = TestDir::new();
    let ca = TestCa::create(&dir);
    let toml = route_file(backend.addr, Some(web.addr), "").replace(
        "shutdown_timeout = \"1s\"",
        "shutdown_timeout = \"1s\"\nclient_header_timeout = \"300ms\"",
    );
    let proxy = TestProxy::start(&dir, &toml).await;
    let client = H2Client::connect(proxy.https(), &ca).await;
    let (_, mut ws) = client.websocket("/ws/quiet", &[]).await.expect("200");
    // Three idle timeouts with only the quiet WebSocket on the connection.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        echo(&mut ws, Message::text("still here")).await,
        Message::text("still here")
    );
    // No GOAWAY came: the connection takes new streams.
    let got = client.get("/page", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    // Once the WebSocket is gone, the connection is idle and is closed.
    drop(ws);
    within(client.connection)
        .await
        .expect("joined")
        .expect("a clean close");
}

#[tokio::test]
async fn rebalancing_says_goodbye_on_http2_streams_too() {
    use crate::fleet::{ChatBackend, fleet_file, reload, servers, until};
    let (a, b) = (ChatBackend::start("a").await, ChatBackend::start("b").await);
    let dir = TestDir::new();
    let ca = TestCa::create(&dir);
    let file = |list: &[&ChatBackend]| {
        fleet_file(&format!("{}\nrebalance_rate = 50", servers(list))).replace(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n",
            "[[listener]]\nbind = \"127.0.0.1:0\"\n\
             tls = { cert = \"certs/server.crt\", key = \"certs/server.key\" }\n",
        )
    };
    let proxy = TestProxy::start(&dir, &file(&[&a])).await;
    let client = H2Client::connect(proxy.https(), &ca).await;
    // Ten WebSockets on one HTTP/2 connection, all on a.
    let closes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut readers = Vec::new();
    for _ in 0..10 {
        let (_, mut ws) = client.websocket("/ws/chat", &[]).await.expect("200");
        assert_eq!(next_data(&mut ws).await, Message::text("a"));
        let closes = closes.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(message)) = ws.next().await {
                if let Message::Close(frame) = message {
                    closes
                        .lock()
                        .unwrap()
                        .push(frame.map_or(1005, |f| u16::from(f.code)));
                }
            }
        }));
    }
    assert_eq!(a.open(), 10);
    // b joins: a holds twice the mean, and some of its streams are asked to
    // go away with Close 1001, as HTTP/1.1 tunnels are.
    reload(&proxy.proxy, &dir, &file(&[&a, &b])).await;
    until("a few streams were moved", async || {
        !closes.lock().unwrap().is_empty() && a.open() <= 6
    })
    .await;
    let moved = closes.lock().unwrap().clone();
    assert!(moved.iter().all(|&code| code == 1001), "{moved:?}");
    // The connection itself stays: the others' streams and new requests.
    assert!(a.open() >= 4, "{} left", a.open());
    let got = client.get("/page", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    for reader in readers {
        reader.abort();
    }
}

#[tokio::test]
async fn header_rules_apply_to_the_handshake_and_nothing_reaches_the_stream() {
    let backend = RawWs::start(SWITCH).await;
    let dir = TestDir::new();
    let ca = TestCa::create(&dir);
    let toml = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"certs/server.crt\", key = \"certs/server.key\" }}\n\
         [upstream.ws]\nservers = [\"{}\"]\n\
         [[route]]\npath = \"/ws/\"\nupstream = \"ws\"\ncompress = true\n\
         response_headers = {{ \"X-Response-Rule\" = \"response-marker\" }}\n\
         request_headers = {{ \"X-Request-Rule\" = \"request-marker\" }}\n\
         [[route]]\npath = \"/moved/\"\nredirect = \"/ws/\"\n",
        backend.addr
    );
    let proxy = TestProxy::start(&dir, &toml).await;
    let client = H2Client::connect(proxy.https(), &ca).await;
    let mut sender = client.sender.clone();
    let req = client.websocket_request("/ws/chat", &[("accept-encoding", "gzip, br")]);
    let mut response = within(sender.send_request(req)).await.unwrap();
    // The 200 is a response of the route: it carries the rule, and is not
    // compressed.
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-response-rule"], "response-marker");
    assert!(!response.headers().contains_key("content-encoding"));
    let upgraded = within(hyper::upgrade::on(&mut response)).await.unwrap();
    let mut stream = hyper_util::rt::TokioIo::new(upgraded);
    // A masked client frame, "ping!", comes back from the echo as it went.
    let sent = [
        0x81,
        0x85,
        1,
        2,
        3,
        4,
        b'p' ^ 1,
        b'i' ^ 2,
        b'n' ^ 3,
        b'g' ^ 4,
        b'!' ^ 1,
    ];
    within(stream.write_all(&sent)).await.unwrap();
    let mut back = [0u8; 11];
    within(stream.read_exact(&mut back)).await.unwrap();
    assert_eq!(back, sent, "the bytes, untouched");
    let head = backend.heads.lock().unwrap()[0].to_ascii_lowercase();
    assert!(
        head.contains("\r\nx-request-rule: request-marker\r\n"),
        "{head}"
    );
    // The proxy's own key, whatever the rules: the accept matched.
    assert_eq!(head.matches("sec-websocket-key:").count(), 1, "{head}");

    // A WebSocket to a redirect route gets the redirect, as over HTTP/1.1.
    let got = client
        .websocket("/moved/x", &[])
        .await
        .expect_err("a redirect");
    assert_eq!(got.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(got.headers["location"], "/ws/");
    assert_eq!(backend.heads.lock().unwrap().len(), 1);
}
