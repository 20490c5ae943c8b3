//! `redirect` routes and `scheme`: the http→https redirect beside the
//! ordinary `/` route, every placeholder and status, and requests a
//! redirect cannot be made for.

use crate::common::*;
use http::{Request, StatusCode};

async fn setup() -> (TestDir, TestProxy, HttpBackend, TestCa) {
    let backend = HttpBackend::start("web").await;
    let dir = TestDir::new();
    let ca = TestCa::create(&dir);
    let toml = format!(
        r#"
[[listener]]
bind = "127.0.0.1:0"
[[listener]]
bind = "127.0.0.1:0"
tls = {{ cert = "certs/server.crt", key = "certs/server.key" }}
[upstream.web]
servers = ["{}"]

[[route]]
scheme = "http"
path = "/"
redirect = "https://{{host}}{{uri}}"

[[route]]
path = "/"
upstream = "web"

[[route]]
path = "/moved"
redirect = "https://new.example{{path}}?was={{query}}"
status = 301

[[route]]
path = "/found"
redirect = "/elsewhere"
status = 302

[[route]]
path = "/see"
redirect = "/other"
status = 303

[[route]]
path = "/again"
redirect = "https://{{host}}/again-here{{uri}}"
status = 307
"#,
        backend.addr
    );
    let proxy = TestProxy::start(&dir, &toml).await;
    (dir, proxy, backend, ca)
}

fn req(path: &str, host: &str) -> Request<http_body_util::Full<bytes::Bytes>> {
    Request::get(path)
        .header("host", host)
        .body(Default::default())
        .unwrap()
}

#[tokio::test]
async fn plain_http_is_sent_to_https_and_https_is_served() {
    let (_dir, proxy, backend, ca) = setup().await;
    let redirected = send(
        proxy.http(),
        req("/chat/room?id=7&x=%20", "Chat.Example.com:8080"),
    )
    .await;
    assert_eq!(redirected.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        redirected.headers["location"],
        "https://Chat.Example.com/chat/room?id=7&x=%20"
    );
    assert_eq!(
        redirected.headers["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(
        redirected.text(),
        "308 permanent redirect: https://Chat.Example.com/chat/room?id=7&x=%20\n"
    );
    let no_query = send(proxy.http(), req("/", "localhost")).await;
    assert_eq!(no_query.headers["location"], "https://localhost/");
    assert_eq!(backend.count(), 0, "nothing reached the backend over http");

    // Over TLS the same request is proxied: the redirect is for http only.
    let tls = tls_connect(proxy.https(), ca.client_config())
        .await
        .expect("tls");
    let served = send_on(tls, req("/chat/room?id=7", "localhost")).await;
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.text(), "backend web");
    assert_eq!(backend.last().path_and_query, "/chat/room?id=7");
}

#[tokio::test]
async fn every_placeholder_and_status() {
    let (_dir, proxy, _backend, _ca) = setup().await;
    let cases = [
        (
            "/moved/a/b?x=1&y=2",
            301,
            "https://new.example/moved/a/b?was=x=1&y=2",
        ),
        ("/moved", 301, "https://new.example/moved?was="),
        ("/found/x", 302, "/elsewhere"),
        ("/see", 303, "/other"),
        ("/again/p?q", 307, "https://localhost/again-here/again/p?q"),
    ];
    for (path, status, location) in cases {
        let got = send(proxy.http(), req(path, "localhost:1234")).await;
        assert_eq!(got.status.as_u16(), status, "{path}");
        assert_eq!(got.headers["location"], location, "{path}");
    }
    // A POST to a 307 keeps its method for the client to repeat: the proxy
    // answers it the same way.
    let post = send(
        proxy.http(),
        Request::post("/again/form")
            .header("host", "localhost")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"a=1")))
            .unwrap(),
    )
    .await;
    assert_eq!(post.status, StatusCode::TEMPORARY_REDIRECT);
}

#[tokio::test]
async fn a_redirect_needs_a_real_host() {
    let (_dir, proxy, _backend, _ca) = setup().await;
    // HTTP/1.0 may leave Host out; {host} then has nothing to say.
    let answer = raw_exchange(proxy.http(), b"GET /page HTTP/1.0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.0 400"), "{answer}");
    assert!(answer.contains("missing Host header"), "{answer}");
    // A Host that is not a host name never reaches the Location.
    let answer = raw_exchange(
        proxy.http(),
        b"GET /page HTTP/1.1\r\nHost: evil.example/x?\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("location"),
        "{answer}"
    );
}
