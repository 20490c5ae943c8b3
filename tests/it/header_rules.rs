//! `response_headers` and `request_headers`: set (replacing every value)
//! and remove, on upstream answers, static files, redirects and the
//! proxy's own errors; request headers after the forwarding headers; and
//! nothing of either in the bytes of a tunnel.

use crate::common::*;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An upstream that names itself in `Server` and sets `X-Tag` twice.
async fn branded_backend() -> RawBackend {
    RawBackend::start_closing(
        "HTTP/1.1 200 OK\r\nServer: backend/1.0\r\nX-Tag: a\r\nX-Tag: b\r\nX-Keep: yes\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\nok",
    )
    .await
}

const HSTS: &str = "max-age=63072000; includeSubDomains";

#[tokio::test]
async fn response_headers_apply_to_every_response_of_the_route() {
    let backend = branded_backend().await;
    let recorder = HttpBackend::start("rec").await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = TestDir::new();
    dir.write("site/static/app.js", "console.log(1);\n");
    let rules = format!(
        "response_headers = {{ \"Strict-Transport-Security\" = \"{HSTS}\", \"Server\" = \"\", \"X-Tag\" = \"one\" }}"
    );
    let toml = format!(
        r#"
[[listener]]
bind = "127.0.0.1:0"
[upstream.branded]
servers = ["{}"]
[upstream.rec]
servers = ["{}"]
[upstream.dead]
servers = ["{dead}"]
[[route]]
path = "/"
upstream = "branded"
{rules}
[[route]]
path = "/static/"
root = "site"
{rules}
[[route]]
path = "/old"
redirect = "/new"
{rules}
[[route]]
path = "/dead"
upstream = "dead"
{rules}
[[route]]
path = "/plain"
upstream = "rec"
[[route]]
path = "/tagged"
upstream = "rec"
request_headers = {{ "X-Env" = "prod", "X-Forwarded-Proto" = "https", "Accept-Language" = "", "Host" = "backend.internal" }}
"#,
        backend.addr, recorder.addr
    );
    let proxy = TestProxy::start(&dir, &toml).await;
    let check = |got: &Got, what: &str| {
        assert_eq!(
            got.headers
                .get_all("strict-transport-security")
                .iter()
                .collect::<Vec<_>>(),
            [HSTS],
            "{what}"
        );
        assert!(
            !got.headers.contains_key("server"),
            "{what}: Server removed"
        );
        assert_eq!(
            got.headers.get_all("x-tag").iter().collect::<Vec<_>>(),
            ["one"],
            "{what}: set replaces"
        );
    };
    let upstream = get(proxy.http(), "/page", &[]).await;
    assert_eq!(upstream.status, StatusCode::OK);
    check(&upstream, "upstream answer");
    assert_eq!(upstream.headers["x-keep"], "yes", "other headers pass");
    let file = get(proxy.http(), "/static/app.js", &[]).await;
    assert_eq!(file.status, StatusCode::OK);
    check(&file, "static file");
    let missing = get(proxy.http(), "/static/missing.js", &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    check(&missing, "static 404");
    let redirect = get(proxy.http(), "/old", &[]).await;
    assert_eq!(redirect.status, StatusCode::PERMANENT_REDIRECT);
    check(&redirect, "redirect");
    let error = get(proxy.http(), "/dead", &[]).await;
    assert_eq!(error.status, StatusCode::BAD_GATEWAY);
    check(&error, "the proxy's own 502");
    let other = get(proxy.http(), "/plain", &[]).await;
    assert!(
        !other.headers.contains_key("strict-transport-security"),
        "other routes untouched"
    );

    // Request headers: after the forwarding headers, which stay.
    let tagged = get(
        proxy.http(),
        "/tagged",
        &[
            ("x-env", "dev"),
            ("x-env", "test"),
            ("accept-language", "fr"),
        ],
    )
    .await;
    assert_eq!(tagged.status, StatusCode::OK);
    let seen = recorder.last();
    assert_eq!(
        seen.headers.get_all("x-env").iter().collect::<Vec<_>>(),
        ["prod"]
    );
    assert!(!seen.headers.contains_key("accept-language"));
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["host"], "backend.internal");
    assert_eq!(
        seen.headers["x-forwarded-host"], "localhost",
        "the client's host, still"
    );
    assert_eq!(seen.headers["x-real-ip"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test]
async fn no_rule_reaches_the_bytes_of_a_tunnel() {
    // The upstream accepts, then sends a frame of its own right away (the
    // first fragment of a text message: its first byte must be ASCII here).
    let backend = RawBackend::start(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n\x01\x05hello",
    )
    .await;
    let dir = TestDir::new();
    let toml = format!(
        r#"
[[listener]]
bind = "127.0.0.1:0"
[upstream.ws]
servers = ["{}"]
[[route]]
path = "/ws/"
upstream = "ws"
response_headers = {{ "X-Response-Rule" = "response-marker" }}
request_headers = {{ "X-Request-Rule" = "request-marker" }}
"#,
        backend.addr
    );
    let proxy = TestProxy::start(&dir, &toml).await;
    let mut stream = within(TcpStream::connect(proxy.http())).await.unwrap();
    stream
        .write_all(
            b"GET /ws/chat HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n\
              Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    let head = within(read_head(&mut stream)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // The 101 is a response of the route: it carries the rule.
    assert!(head.contains("response-marker"), "{head}");
    let mut frame = [0u8; 7];
    within(stream.read_exact(&mut frame)).await.unwrap();
    assert_eq!(&frame, b"\x01\x05hello", "the upstream's bytes, untouched");
    // A masked client frame, "ping!".
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
    stream.write_all(&sent).await.unwrap();
    within(async {
        while backend.after_head.lock().unwrap().len() < sent.len() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(
        &backend.after_head.lock().unwrap()[..],
        &sent,
        "the client's bytes, untouched"
    );
    let upgrade_head = backend.heads.lock().unwrap()[0].clone();
    assert!(upgrade_head.contains("request-marker"), "{upgrade_head}");
    // Nothing more arrives on either side.
    let mut more = [0u8; 1];
    let read = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        stream.read(&mut more),
    )
    .await;
    assert!(
        read.is_err(),
        "no bytes after the upstream's frame: {read:?}"
    );
}
