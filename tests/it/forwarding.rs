//! HTTP forwarding: routing, the header policy as the upstream sees it,
//! streaming bodies, round-robin, and the errors the proxy answers itself.

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;

fn two_routes(a: &HttpBackend, b: &HttpBackend) -> String {
    format!(
        r#"
[[listener]]
bind = "127.0.0.1:0"

[upstream.a]
servers = ["{}"]

[upstream.b]
servers = ["{}"]

[[route]]
path = "/"
upstream = "a"

[[route]]
path = "/api"
upstream = "b"

[[route]]
host = "chat.example.com"
path = "/"
upstream = "b"

[[route]]
host = "*.example.org"
path = "/"
upstream = "b"
"#,
        a.addr, b.addr
    )
}

#[tokio::test]
async fn routes_by_host_then_longest_segment_prefix() {
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let dir = TestDir::new();
    let proxy = TestProxy::start(&dir, &two_routes(&a, &b)).await;
    let at = |host: &'static str, path: &'static str| {
        let addr = proxy.http();
        async move {
            let req = Request::get(path)
                .header("host", host)
                .body(Full::new(Bytes::new()))
                .unwrap();
            send(addr, req).await.text()
        }
    };
    assert_eq!(at("localhost", "/").await, "backend a");
    assert_eq!(at("localhost", "/api").await, "backend b");
    assert_eq!(at("localhost", "/api/users").await, "backend b");
    assert_eq!(
        at("localhost", "/apix").await,
        "backend a",
        "/api must not match /apix"
    );
    assert_eq!(at("chat.example.com", "/anything").await, "backend b");
    assert_eq!(at("CHAT.example.com:8080", "/").await, "backend b");
    assert_eq!(at("x.example.org", "/").await, "backend b");
    assert_eq!(
        at("example.org", "/").await,
        "backend a",
        "a wildcard needs a subdomain"
    );
}

#[tokio::test]
async fn no_route_is_404_from_the_proxy() {
    let a = HttpBackend::start("a").await;
    let dir = TestDir::new();
    let toml = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[upstream.a]\nservers = [\"{}\"]\n\
         [[route]]\npath = \"/api\"\nupstream = \"a\"\n",
        a.addr
    );
    let proxy = TestProxy::start(&dir, &toml).await;
    let got = get(proxy.http(), "/apix", &[]).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert_eq!(got.text(), "404 not found: no route for this request\n");
    assert_eq!(got.headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(a.count(), 0);
}

#[tokio::test]
async fn upstream_sees_forwarding_headers_and_no_hop_by_hop() {
    let a = HttpBackend::start("a").await;
    let dir = TestDir::new();
    let toml = one_route(a.addr);
    let proxy = TestProxy::start(&dir, &toml).await;
    let got = get(
        proxy.http(),
        "/path?q=1",
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-proto", "gopher"),
            ("connection", "keep-alive, x-drop-me"),
            ("x-drop-me", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("x-keep-me", "2"),
        ],
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    let seen = a.last();
    assert_eq!(seen.path_and_query, "/path?q=1");
    let h = &seen.headers;
    assert_eq!(h["host"], "localhost", "the client's Host is kept");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "localhost");
    assert_eq!(h["x-keep-me"], "2");
    for gone in [
        "x-drop-me",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
    ] {
        assert!(h.get(gone).is_none(), "{gone} must not reach the upstream");
    }
    // `Connection` is hop-by-hop: whatever the upstream sees is hyper's own.
    assert_ne!(
        h.get("connection").map(|v| v.to_str().unwrap()),
        Some("keep-alive, x-drop-me")
    );
}

#[tokio::test]
async fn client_sees_no_hop_by_hop_response_headers() {
    let a = HttpBackend::start("a").await;
    let dir = TestDir::new();
    let toml = one_route(a.addr);
    let proxy = TestProxy::start(&dir, &toml).await;
    let got = get(proxy.http(), "/hop", &[]).await;
    assert_eq!(got.text(), "hop");
    assert_eq!(got.headers["x-public"], "yes");
    for gone in ["x-internal", "keep-alive", "proxy-authenticate"] {
        assert!(
            got.headers.get(gone).is_none(),
            "{gone} must not reach the client"
        );
    }
}

#[tokio::test]
async fn bodies_stream_both_ways() {
    let a = HttpBackend::start("a").await;
    let dir = TestDir::new();
    let toml = one_route(a.addr);
    let proxy = TestProxy::start(&dir, &toml).await;
    let upload = vec![7u8; 8 << 20];
    let req = Request::post("/echo-body")
        .header("host", "localhost")
        .body(Full::new(Bytes::from(upload)))
        .unwrap();
    let got = send(proxy.http(), req).await;
    assert_eq!(got.text(), format!("{} bytes", 8 << 20));
    assert_eq!(a.last().body_len, 8 << 20);

    let got = get(proxy.http(), &format!("/big/{}", 16 << 20), &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body.len(), 16 << 20);
}

#[tokio::test]
async fn servers_take_turns_and_a_refusing_one_is_skipped() {
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dir = TestDir::new();
    let toml = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[upstream.a]\nservers = [\"{}\", \"{}\", \"{}\"]\n\
         [[route]]\npath = \"/\"\nupstream = \"a\"\n",
        a.addr, dead, b.addr
    );
    let proxy = TestProxy::start(&dir, &toml).await;
    let mut answers = Vec::new();
    for _ in 0..12 {
        let got = get(proxy.http(), "/", &[]).await;
        assert_eq!(
            got.status,
            StatusCode::OK,
            "a refusing server must be skipped"
        );
        answers.push(got.text());
    }
    let from_a = answers.iter().filter(|t| *t == "backend a").count();
    let from_b = answers.iter().filter(|t| *t == "backend b").count();
    assert_eq!(from_a + from_b, 12);
    assert!(
        from_a >= 4 && from_b >= 4,
        "round-robin: a={from_a} b={from_b}"
    );
}

#[tokio::test]
async fn unreachable_upstream_is_502_and_slow_one_504() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let slow = HttpBackend::start("slow").await;
    let dir = TestDir::new();
    let toml = format!(
        r#"
[[listener]]
bind = "127.0.0.1:0"
[upstream.dead]
servers = ["{dead}"]
[upstream.slow]
servers = ["{}"]
read_timeout = "300ms"
[[route]]
path = "/dead"
upstream = "dead"
[[route]]
path = "/"
upstream = "slow"
"#,
        slow.addr
    );
    let proxy = TestProxy::start(&dir, &toml).await;
    let got = get(proxy.http(), "/dead", &[]).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        got.text(),
        "502 bad gateway: upstream unreachable or broken\n"
    );

    let started = std::time::Instant::now();
    let got = get(proxy.http(), "/slow/3000", &[]).await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(got.text(), "504 gateway timeout: upstream too slow\n");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));

    let got = get(proxy.http(), "/slow/10", &[]).await;
    assert_eq!(got.status, StatusCode::OK, "a fast answer is not a timeout");
}

#[tokio::test]
async fn oversized_head_is_431_and_malformed_request_400() {
    let a = HttpBackend::start("a").await;
    let dir = TestDir::new();
    let toml = one_route(a.addr);
    let proxy = TestProxy::start(&dir, &toml).await;
    // Just over 64 KiB of headers.
    let big = "x".repeat(8 * 1024);
    let headers: Vec<(String, String)> = (0..9)
        .map(|i| (format!("x-big-{i}"), big.clone()))
        .collect();
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let got = get(proxy.http(), "/", &pairs).await;
    assert_eq!(got.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(got.text(), "431 request header fields too large\n");
    // Far over: refused by the parser itself, still 431.
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nX-Huge: {}\r\n\r\n",
        "y".repeat(200 * 1024)
    );
    let answer = raw_exchange(proxy.http(), huge.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    let answer = raw_exchange(
        proxy.http(),
        b"GET / HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let answer = raw_exchange(proxy.http(), b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "missing Host: {answer}");
    assert!(
        answer.ends_with("400 bad request: missing Host header\n"),
        "{answer}"
    );
    assert_eq!(a.count(), 0, "nothing malformed reaches the upstream");
}

#[tokio::test]
async fn slowloris_is_closed_by_client_header_timeout() {
    let a = HttpBackend::start("a").await;
    let dir = TestDir::new();
    let toml = format!(
        "[server]\nclient_header_timeout = \"300ms\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n\
         [upstream.a]\nservers = [\"{}\"]\n[[route]]\npath = \"/\"\nupstream = \"a\"\n",
        a.addr
    );
    let proxy = TestProxy::start(&dir, &toml).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(proxy.http()).await.unwrap();
    let started = std::time::Instant::now();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: local")
        .await
        .unwrap();
    let mut rest = Vec::new();
    // Keep dribbling; the proxy must close within the timeout anyway.
    let dribble = async {
        for _ in 0..50 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            if stream.write_all(b"h").await.is_err() {
                break;
            }
        }
    };
    let _ = within(dribble).await;
    let _ = within(stream.read_to_end(&mut rest)).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(a.count(), 0);
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_stale_ones_skipped() {
    let a = HttpBackend::start("a").await;
    let dir = TestDir::new();
    // One worker: connections are pooled per worker thread.
    let toml = format!(
        "[server]\nworkers = 1\n[[listener]]\nbind = \"127.0.0.1:0\"\n\
         [upstream.a]\nservers = [\"{}\"]\n[[route]]\npath = \"/\"\nupstream = \"a\"\n",
        a.addr
    );
    let proxy = TestProxy::start(&dir, &toml).await;
    for _ in 0..20 {
        assert_eq!(get(proxy.http(), "/", &[]).await.status, StatusCode::OK);
    }
    assert_eq!(
        a.connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "twenty requests, one pooled upstream connection"
    );

    // An upstream that closes each connection shortly after answering.
    let closing = RawBackend::start_closing("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let toml = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[upstream.c]\nservers = [\"{}\"]\n\
         [[route]]\npath = \"/\"\nupstream = \"c\"\n",
        closing.addr
    );
    let dir = TestDir::new();
    let proxy = TestProxy::start(&dir, &toml).await;
    for _ in 0..3 {
        let got = get(proxy.http(), "/", &[]).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.text(), "ok");
        // Let the upstream's close arrive before the next request.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(closing.heads.lock().unwrap().len(), 3);
}
