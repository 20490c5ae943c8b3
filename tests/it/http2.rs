//! HTTP/2 from clients: ALPN, plain requests proxied to HTTP/1.1 upstreams
//! with the same header policy, the connection's settings and limits, idle
//! connections, drain and reload. Clients: hyper's HTTP/2 client and, where
//! frames matter (SETTINGS, RST_STREAM, GOAWAY), the `h2` crate.

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A route file with one TLS listener (plus `listener_extra`) and every
/// path to `server`.
fn tls_route(server: SocketAddr, listener_extra: &str, more: &str) -> String {
    format!(
        "[server]\nadmin = \"127.0.0.1:0\"\n{more}\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"certs/server.crt\", key = \"certs/server.key\" }}\n{listener_extra}\n\
         [upstream.a]\nservers = [\"{server}\"]\nread_timeout = \"500ms\"\n\
         [[route]]\npath = \"/\"\nupstream = \"a\"\n"
    )
}

async fn start(server: SocketAddr) -> (TestDir, TestCa, TestProxy) {
    start_with(server, "", "").await
}

async fn start_with(
    server: SocketAddr,
    listener_extra: &str,
    more: &str,
) -> (TestDir, TestCa, TestProxy) {
    let dir = TestDir::new();
    let ca = TestCa::create(&dir);
    let proxy = TestProxy::start(&dir, &tls_route(server, listener_extra, more)).await;
    (dir, ca, proxy)
}

/// The ALPN protocol the proxy picks when offered `alpn`.
async fn negotiated(addr: SocketAddr, ca: &TestCa, alpn: &[&str]) -> Option<Vec<u8>> {
    let tls = tls_connect(addr, client_config_alpn(ca, alpn))
        .await
        .expect("tls");
    tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

#[tokio::test]
async fn alpn_offers_h2_then_http1_and_http2_false_turns_it_off() {
    let backend = HttpBackend::start("a").await;
    let dir = TestDir::new();
    let ca = TestCa::create(&dir);
    let toml = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"certs/server.crt\", key = \"certs/server.key\" }}\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nhttp2 = false\n\
         tls = {{ cert = \"certs/server.crt\", key = \"certs/server.key\" }}\n\
         [upstream.a]\nservers = [\"{}\"]\n[[route]]\npath = \"/\"\nupstream = \"a\"\n",
        backend.addr
    );
    let proxy = TestProxy::start(&dir, &toml).await;
    let listeners = proxy.proxy.listeners().await;
    let (on, off) = (listeners[0].0, listeners[1].0);

    let both = ["h2", "http/1.1"];
    assert_eq!(
        negotiated(on, &ca, &both).await.as_deref(),
        Some(&b"h2"[..])
    );
    assert_eq!(
        negotiated(on, &ca, &["http/1.1"]).await.as_deref(),
        Some(&b"http/1.1"[..])
    );
    assert_eq!(
        negotiated(off, &ca, &both).await.as_deref(),
        Some(&b"http/1.1"[..])
    );
    // Without ALPN the client gets HTTP/1.1, as before.
    let tls = tls_connect(off, ca.client_config()).await.expect("tls");
    let got = send_on(
        tls,
        Request::get("/")
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
}

#[tokio::test]
async fn get_and_post_over_h2_reach_the_upstream_as_http1_with_the_forwarding_headers() {
    let backend = HttpBackend::start("a").await;
    let (_dir, ca, proxy) = start(backend.addr).await;
    let client = H2Client::connect(proxy.https(), &ca).await;

    let got = client
        .get(
            "/hello?x=1",
            &[
                ("x-forwarded-for", "203.0.113.9"),
                ("cookie", "a=1"),
                ("cookie", "b=2"),
                ("te", "trailers"),
            ],
        )
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "backend a");
    let seen = backend.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path_and_query, "/hello?x=1");
    let header = |name: &str| {
        seen.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    // `:authority` became `Host`.
    assert_eq!(header("host").as_deref(), Some(client.authority.as_str()));
    assert_eq!(
        header("x-forwarded-host").as_deref(),
        Some(client.authority.as_str())
    );
    assert_eq!(header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(header("x-real-ip").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        header("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    // The cookie crumbs of HTTP/2 are one line for the HTTP/1.1 upstream.
    assert_eq!(seen.headers.get_all("cookie").iter().count(), 1);
    assert_eq!(header("cookie").as_deref(), Some("a=1; b=2"));
    assert_eq!(header("te"), None);

    // A body streamed up, and one streamed down, on the same connection.
    let body = Bytes::from(vec![b'p'; 300 * 1024]);
    let got = client
        .send(
            Request::post(client.url("/echo-body"))
                .header("content-type", "application/octet-stream")
                .body(Full::new(body))
                .unwrap(),
        )
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), format!("{} bytes", 300 * 1024));
    assert_eq!(backend.last().method, "POST");
    assert_eq!(backend.last().body_len, 300 * 1024);
    let got = client.get("/big/3000000", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body.len(), 3_000_000);
    // Hop-by-hop headers of the upstream's answer stay behind.
    let got = client.get("/hop", &[]).await;
    assert_eq!(got.headers.get("x-public").unwrap(), "yes");
    for gone in [
        "connection",
        "keep-alive",
        "x-internal",
        "proxy-authenticate",
    ] {
        assert!(!got.headers.contains_key(gone), "{gone} crossed");
    }
    // One connection carried all of it.
    assert_eq!(backend.count(), 4);
    let scrape = scrape(proxy.admin.unwrap()).await;
    assert_eq!(
        metric(
            &scrape,
            "switchyard_http_connections_total",
            &[("http", "2")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &scrape,
            "switchyard_http_connections_total",
            &[("http", "1.1")]
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &scrape,
            "switchyard_requests_total",
            &[("route", "/"), ("status", "2xx")]
        ),
        Some(4.0)
    );
}

#[tokio::test]
async fn errors_and_timeouts_over_h2_are_the_proxys_own_answers() {
    let backend = HttpBackend::start("a").await;
    let dir = TestDir::new();
    let ca = TestCa::create(&dir);
    dir.write("files/static/app.js", "console.log(1)\n");
    let dead = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    };
    let toml = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"certs/server.crt\", key = \"certs/server.key\" }}\n\
         [upstream.a]\nservers = [\"{}\"]\nread_timeout = \"300ms\"\n\
         [upstream.dead]\nservers = [\"{dead}\"]\n\
         [[route]]\nhost = \"localhost\"\npath = \"/\"\nupstream = \"a\"\n\
         [[route]]\nhost = \"localhost\"\npath = \"/down/\"\nupstream = \"dead\"\n\
         [[route]]\nhost = \"localhost\"\npath = \"/static/\"\nroot = \"files\"\n",
        backend.addr
    );
    let proxy = TestProxy::start(&dir, &toml).await;
    let client = H2Client::connect(proxy.https(), &ca).await;

    let got = client
        .send(
            Request::get("https://elsewhere.example/x")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert!(got.text().contains("no route"));
    let got = client.get("/down/x", &[]).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    let got = client.get("/slow/2000", &[]).await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT);
    let got = client.get("/static/app.js", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "console.log(1)\n");
    assert!(
        got.headers["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    let etag = got.headers["etag"].to_str().unwrap().to_string();
    let got = client
        .get("/static/app.js", &[("if-none-match", etag.as_str())])
        .await;
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    let got = client
        .get("/static/app.js", &[("range", "bytes=0-6")])
        .await;
    assert_eq!(got.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(got.text(), "console");
    let got = client.get("/static/%2e%2e/certs/server.key", &[]).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    // A file server has no WebSocket.
    let got = client
        .send(client.websocket_request("/static/app.js", &[]))
        .await;
    assert_eq!(got.status, StatusCode::METHOD_NOT_ALLOWED);
    // The connection survived every error.
    let got = client.get("/ok", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
}

#[tokio::test]
async fn header_lists_over_64_kib_get_431() {
    let backend = HttpBackend::start("a").await;
    let (_dir, ca, proxy) = start(backend.addr).await;
    let client = H2Client::connect(proxy.https(), &ca).await;
    let big = "v".repeat(70 * 1024);
    let got = client.get("/", &[("x-big", big.as_str())]).await;
    assert_eq!(got.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(got.text().contains("431"));
    assert_eq!(backend.count(), 0);
    // A stream error, not a connection error.
    let got = client.get("/", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
}

/// An `h2` crate connection to `addr`; its `Connection` must be polled.
async fn h2_raw(
    addr: SocketAddr,
    ca: &TestCa,
) -> (
    h2::client::SendRequest<Bytes>,
    h2::client::Connection<TlsStream<TcpStream>, Bytes>,
) {
    let tls = tls_connect(addr, client_config_alpn(ca, &["h2"]))
        .await
        .expect("tls");
    within(h2::client::handshake(tls))
        .await
        .expect("h2 handshake")
}

/// Await `future` while driving `connection`. (Once the connection has
/// ended, what it received can still be read.)
async fn driving<F: Future>(
    connection: &mut h2::client::Connection<TlsStream<TcpStream>, Bytes>,
    future: F,
) -> F::Output {
    tokio::pin!(future);
    within(async {
        tokio::select! {
            output = &mut future => output,
            result = &mut *connection => {
                assert!(result.is_ok(), "the connection failed: {result:?}");
                future.await
            }
        }
    })
    .await
}

fn get_request(authority: &str, path: &str) -> Request<()> {
    Request::get(format!("https://{authority}{path}"))
        .body(())
        .unwrap()
}

#[tokio::test]
async fn settings_enable_connect_protocol_and_state_the_limits() {
    let backend = HttpBackend::start("a").await;
    let (_dir, ca, proxy) = start(backend.addr).await;
    let addr = proxy.https();
    let (client, mut connection) = h2_raw(addr, &ca).await;
    let authority = format!("localhost:{}", addr.port());
    let mut client = driving(&mut connection, client.ready())
        .await
        .expect("ready");
    let (response, _) = client
        .send_request(get_request(&authority, "/"), true)
        .expect("send");
    let response = driving(&mut connection, response).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    // The server's SETTINGS came before its first response.
    assert!(
        client.is_extended_connect_protocol_enabled(),
        "SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 not received"
    );
    assert_eq!(connection.max_concurrent_send_streams(), 256);
}

#[tokio::test]
async fn a_rapid_reset_flood_gets_goaway_enhance_your_calm() {
    let backend = HttpBackend::start("a").await;
    let (_dir, ca, proxy) = start(backend.addr).await;
    let addr = proxy.https();
    let (client, mut connection) = h2_raw(addr, &ca).await;
    let authority = format!("localhost:{}", addr.port());
    let mut client = driving(&mut connection, client.ready())
        .await
        .expect("ready");
    // Open and cancel 200 streams at once: HEADERS then RST_STREAM each,
    // queued together and written in one go.
    for _ in 0..200 {
        let (response, _) = client
            .send_request(get_request(&authority, "/slow/1000"), true)
            .expect("send");
        drop(response);
    }
    let ended = within(&mut connection).await;
    let error = ended.expect_err("the connection outlived the flood");
    // The GOAWAY, or the socket the proxy closed right after it when the
    // client was still writing.
    assert!(
        error.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) || error.is_io(),
        "{error}"
    );
    // Counted once the proxy's side of the connection has ended too.
    within(async {
        loop {
            let scrape = scrape(proxy.admin.unwrap()).await;
            let goaways = metric(
                &scrape,
                "switchyard_http2_goaways_total",
                &[("reason", "enhance_your_calm")],
            );
            if goaways == Some(1.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        backend.count() < 50,
        "{} of 200 cancelled requests reached the upstream",
        backend.count()
    );
}

#[tokio::test]
async fn an_idle_h2_connection_gets_goaway_after_client_header_timeout() {
    let backend = HttpBackend::start("a").await;
    let (_dir, ca, proxy) = start_with(backend.addr, "", "client_header_timeout = \"400ms\"").await;
    let addr = proxy.https();
    let (client, mut connection) = h2_raw(addr, &ca).await;
    let authority = format!("localhost:{}", addr.port());
    let mut client = driving(&mut connection, client.ready())
        .await
        .expect("ready");
    let (response, _) = client
        .send_request(get_request(&authority, "/"), true)
        .expect("send");
    let mut body = driving(&mut connection, response)
        .await
        .expect("response")
        .into_body();
    while let Some(chunk) = driving(&mut connection, body.data()).await {
        chunk.expect("body");
    }
    // Then nothing: the proxy says goodbye and closes by itself.
    let started = std::time::Instant::now();
    let ended = within(&mut connection).await;
    assert!(ended.is_ok(), "not a graceful close: {ended:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_slow_response_keeps_its_connection_past_the_idle_timeout() {
    let backend = HttpBackend::start("a").await;
    let (_dir, ca, proxy) = start_with(backend.addr, "", "client_header_timeout = \"300ms\"").await;
    let client = H2Client::connect(proxy.https(), &ca).await;
    // The response takes longer than the idle timeout: the stream is open,
    // so the connection is not idle. (The route's read_timeout is 500 ms.)
    let got = client.get("/slow/450", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "backend a slow");
}

#[tokio::test]
async fn drain_sends_goaway_and_lets_the_request_in_flight_finish() {
    let backend = HttpBackend::start("a").await;
    let (_dir, ca, proxy) = start_with(backend.addr, "", "shutdown_timeout = \"5s\"").await;
    let addr = proxy.https();
    let (client, mut connection) = h2_raw(addr, &ca).await;
    let authority = format!("localhost:{}", addr.port());
    let mut client = driving(&mut connection, client.ready())
        .await
        .expect("ready");
    let (slow, _) = client
        .send_request(get_request(&authority, "/slow/400"), true)
        .expect("send");
    // Wait for the request to be at the upstream, then stop.
    driving(&mut connection, async {
        while backend.count() == 0 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let proxy = std::sync::Arc::new(proxy);
    let stopping = {
        let proxy = proxy.clone();
        tokio::spawn(async move { proxy.proxy.shutdown().await })
    };
    let response = driving(&mut connection, slow).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = driving(&mut connection, body.data()).await {
        text.extend_from_slice(&chunk.expect("body"));
    }
    assert_eq!(text, b"backend a slow");
    // GOAWAY: no new stream is taken, and the connection ends cleanly.
    let mut ended = None;
    let served = match client.send_request(get_request(&authority, "/"), true) {
        Err(_) => false,
        Ok((response, _)) => {
            within(async {
                tokio::select! {
                    response = response => response.is_ok(),
                    result = &mut connection => {
                        ended = Some(result);
                        false
                    }
                }
            })
            .await
        }
    };
    assert!(!served, "a new stream was served after the GOAWAY");
    let ended = match ended {
        Some(result) => result,
        None => within(&mut connection).await,
    };
    assert!(ended.is_ok(), "{ended:?}");
    within(stopping).await.expect("shutdown");
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn a_reload_keeps_the_h2_connection_and_new_requests_use_the_new_routes() {
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let (dir, ca, proxy) = start(a.addr).await;
    let client = H2Client::connect(proxy.https(), &ca).await;
    assert_eq!(client.get("/x", &[]).await.text(), "backend a");

    dir.route_file(&tls_route(b.addr, "", ""));
    let report = within(proxy.proxy.reload()).await.expect("reload");
    assert_eq!(report.generation, 2);
    // Same connection, new generation.
    assert_eq!(client.get("/x", &[]).await.text(), "backend b");
    assert!(!client.connection.is_finished());
}

#[tokio::test]
async fn http2_is_validated_with_its_position() {
    let dir = TestDir::new();
    TestCa::create(&dir);
    let path = dir.route_file(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nhttp2 = true\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nhttp2 = \"yes\"\n\
         tls = { cert = \"certs/server.crt\", key = \"certs/server.key\" }\n\
         [[route]]\npath = \"/\"\nroot = \".\"\n",
    );
    let errors = switchyard::config::Config::load(&path)
        .expect_err("invalid")
        .to_string();
    let file = path.display();
    assert!(
        errors.contains(&format!(
            "{file}:3:9: http2 = true needs `tls` on this listener"
        )),
        "{errors}"
    );
    assert!(
        errors.contains(&format!(
            "{file}:6:9: http2: expected true or false, found a string (\"yes\")"
        )),
        "{errors}"
    );
}

#[tokio::test]
async fn a_plain_listener_speaks_http1_only() {
    let backend = HttpBackend::start("a").await;
    let dir = TestDir::new();
    let proxy = TestProxy::start(&dir, &one_route(backend.addr)).await;
    // HTTP/2 with prior knowledge: the preface is not an HTTP/1.1 request.
    let stream = within(TcpStream::connect(proxy.http())).await.unwrap();
    let handshake = within(h2::client::handshake(stream)).await;
    if let Ok((client, connection)) = handshake {
        let client = client;
        let ended = within(async {
            tokio::select! {
                ready = client.ready() => {
                    let mut client = ready?;
                    let (response, _) = client.send_request(get_request("localhost", "/"), true)?;
                    response.await.map(|_| ())
                }
                ended = connection => ended,
            }
        })
        .await;
        assert!(ended.is_err(), "a plain listener answered HTTP/2");
    }
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn redirects_header_rules_and_compression_apply_over_h2_as_over_http1() {
    let document = format!(
        "{{\"messages\":[{}]}}",
        vec!["{\"from\":\"alice\",\"text\":\"hello over h2\"}"; 60].join(",")
    );
    let answer: &'static str = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nServer: backend/1.0\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{document}",
            document.len()
        )
        .into_boxed_str(),
    );
    let backend = RawBackend::start_closing(answer).await;
    let dir = TestDir::new();
    let ca = TestCa::create(&dir);
    let toml = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"certs/server.crt\", key = \"certs/server.key\" }}\n\
         [upstream.api]\nservers = [\"{}\"]\n\
         [[route]]\npath = \"/api/\"\nupstream = \"api\"\ncompress = true\n\
         response_headers = {{ \"X-Frame-Options\" = \"DENY\", \"Server\" = \"\" }}\n\
         request_headers = {{ \"X-Via-Rule\" = \"h2\" }}\n\
         [[route]]\npath = \"/old/\"\nredirect = \"https://{{host}}/new{{uri}}\"\n",
        backend.addr
    );
    let proxy = TestProxy::start(&dir, &toml).await;
    let client = H2Client::connect(proxy.https(), &ca).await;

    let got = client
        .get("/api/messages", &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.headers["content-encoding"], "gzip");
    assert!(
        got.headers["vary"]
            .to_str()
            .unwrap()
            .eq_ignore_ascii_case("accept-encoding")
    );
    assert_eq!(got.headers["x-frame-options"], "DENY");
    assert!(!got.headers.contains_key("server"), "{:?}", got.headers);
    assert!(!got.headers.contains_key("content-length"));
    let mut decoded = String::new();
    tokio::io::AsyncReadExt::read_to_string(
        &mut async_compression::tokio::bufread::GzipDecoder::new(&got.body[..]),
        &mut decoded,
    )
    .await
    .expect("gzip");
    assert_eq!(decoded, document);
    let head = backend.heads.lock().unwrap()[0].to_ascii_lowercase();
    assert!(head.contains("\r\nx-via-rule: h2\r\n"), "{head}");
    assert!(head.contains("\r\nhost: localhost:"), "{head}");

    let got = client.get("/old/page?x=1", &[]).await;
    assert_eq!(got.status, StatusCode::PERMANENT_REDIRECT);
    // `{host}` is the :authority without its port.
    assert_eq!(
        got.headers["location"],
        "https://localhost/new/old/page?x=1"
    );
}

#[tokio::test]
async fn the_http2_series_exist_at_zero_from_the_start() {
    let backend = HttpBackend::start("a").await;
    let (_dir, _ca, proxy) = start(backend.addr).await;
    let scrape = scrape(proxy.admin.unwrap()).await;
    let listener = proxy.https().to_string();
    for http in ["1.1", "2"] {
        assert_eq!(
            metric(
                &scrape,
                "switchyard_http_connections_total",
                &[("listener", &listener), ("http", http)]
            ),
            Some(0.0),
            "{http}"
        );
    }
    assert_eq!(
        metric(
            &scrape,
            "switchyard_http2_goaways_total",
            &[("reason", "enhance_your_calm")]
        ),
        Some(0.0)
    );
}
