//! `compress = true`, checked with curl (`--compressed` decodes gzip and
//! br): what is compressed and with what, `Vary`, what is left alone
//! (small, binary, already encoded, a route without `compress`), streamed
//! bodies, `HEAD`, and precompressed static files.

use crate::common::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::process::Command;

/// A JSON document of about `size` bytes.
fn json(size: usize) -> String {
    let mut text = String::from("[");
    let mut i = 0;
    while text.len() < size {
        text.push_str(&format!(
            "{{\"id\":{i},\"user\":\"user-{i}\",\"text\":\"hello room {}\"}},",
            i % 7
        ));
        i += 1;
    }
    text.push_str("{}]");
    text
}

fn binary(size: usize) -> Vec<u8> {
    // Not compressible, and marked as such by its type.
    (0..size).map(|i| (i * 7919 % 251) as u8).collect()
}

/// An upstream with a fixed answer per path.
async fn resources() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let path = req.uri().path().to_string();
                    let typed = |body: Vec<u8>, kind: &str| {
                        let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
                        r.headers_mut()
                            .insert("content-type", kind.parse().unwrap());
                        r
                    };
                    let response = match path.as_str() {
                        "/data.json" => typed(json(20 * 1024).into_bytes(), "application/json"),
                        "/small.json" => typed(json(300).into_bytes(), "application/json"),
                        "/image.png" => typed(binary(8192), "image/png"),
                        "/encoded.json" => {
                            let mut r =
                                typed(b"already gzip, trust me".repeat(100), "application/json");
                            r.headers_mut()
                                .insert("content-encoding", "gzip".parse().unwrap());
                            r
                        }
                        "/stream.json" => {
                            let chunks = (0..64).map(|i| {
                                Ok::<_, Infallible>(Frame::data(Bytes::from(format!(
                                    "{{\"chunk\":{i},\"pad\":\"{}\"}}\n",
                                    "x".repeat(200)
                                ))))
                            });
                            let mut r = Response::new(
                                StreamBody::new(futures_util::stream::iter(chunks)).boxed(),
                            );
                            r.headers_mut()
                                .insert("content-type", "application/x-ndjson".parse().unwrap());
                            r
                        }
                        _ => typed(b"not here".to_vec(), "text/plain"),
                    };
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn stream_body() -> String {
    (0..64)
        .map(|i| format!("{{\"chunk\":{i},\"pad\":\"{}\"}}\n", "x".repeat(200)))
        .collect()
}

/// What curl saw: the response headers (lower-cased names) and the
/// decoded body.
struct Curled {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Curled {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// `curl --compressed URL` with extra arguments.
async fn curl(url: &str, args: &[&str]) -> Curled {
    let dir = tempfile::tempdir().unwrap();
    let (head, body) = (dir.path().join("head"), dir.path().join("body"));
    let output = within(
        Command::new("curl")
            .args([
                "--silent",
                "--show-error",
                "--compressed",
                "--max-time",
                "10",
                "--dump-header",
            ])
            .arg(&head)
            .arg("--output")
            .arg(&body)
            .args(args)
            .arg(url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("curl runs (apt-get install curl)");
    assert!(
        output.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let head = std::fs::read_to_string(head).unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Curled {
        status,
        headers,
        body: std::fs::read(body).unwrap_or_default(),
    }
}

async fn setup() -> (TestDir, TestProxy) {
    let upstream = resources().await;
    let dir = TestDir::new();
    let toml = format!(
        r#"
[[listener]]
bind = "127.0.0.1:0"
[upstream.app]
servers = ["{upstream}"]
[[route]]
path = "/"
upstream = "app"
compress = true
[[route]]
path = "/raw/"
upstream = "app"
"#
    );
    let proxy = TestProxy::start(&dir, &toml).await;
    (dir, proxy)
}

#[tokio::test]
async fn compressible_answers_are_compressed_with_the_best_accepted_encoding() {
    let (_dir, proxy) = setup().await;
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", proxy.http().port());
    let original = json(20 * 1024).into_bytes();

    let br = curl(&url("/data.json"), &[]).await;
    assert_eq!(br.status, 200);
    assert_eq!(
        br.header("content-encoding"),
        Some("br"),
        "curl offers br and gzip: br wins"
    );
    assert_eq!(br.all("vary"), ["Accept-Encoding"]);
    assert_eq!(br.header("content-length"), None);
    assert_eq!(br.body, original, "decoded, the same bytes");

    for (accept, expected) in [
        ("gzip", "gzip"),
        ("br;q=0.2, gzip;q=0.9", "gzip"),
        ("gzip;q=0.5, br", "br"),
        ("*", "br"),
    ] {
        let got = curl(
            &url("/data.json"),
            &["--header", &format!("Accept-Encoding: {accept}")],
        )
        .await;
        assert_eq!(got.header("content-encoding"), Some(expected), "{accept}");
        assert_eq!(got.body, original, "{accept}");
    }

    // A streamed body of unknown length is compressed as it streams.
    let streamed = curl(&url("/stream.json"), &[]).await;
    assert_eq!(streamed.header("content-encoding"), Some("br"));
    assert_eq!(String::from_utf8(streamed.body).unwrap(), stream_body());

    // A client that accepts nothing gets the bytes as they are, and the
    // Vary that tells caches why.
    let plain = get(proxy.http(), "/data.json", &[]).await;
    assert_eq!(plain.status, StatusCode::OK);
    assert!(!plain.headers.contains_key("content-encoding"));
    assert_eq!(plain.headers["vary"], "Accept-Encoding");
    assert_eq!(
        plain.headers["content-length"],
        original.len().to_string().as_str()
    );
    assert_eq!(&plain.body[..], &original[..]);

    // HEAD announces what GET would send.
    let head = send(
        proxy.http(),
        Request::head("/data.json")
            .header("host", "localhost")
            .header("accept-encoding", "gzip")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(head.headers["content-encoding"], "gzip");
    assert!(!head.headers.contains_key("content-length"));
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn small_binary_encoded_and_uncompressed_routes_are_left_alone() {
    let (_dir, proxy) = setup().await;
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", proxy.http().port());
    let small = curl(&url("/small.json"), &[]).await;
    assert_eq!(small.header("content-encoding"), None);
    assert_eq!(small.body, json(300).into_bytes());
    let image = curl(&url("/image.png"), &[]).await;
    assert_eq!(image.header("content-encoding"), None);
    assert_eq!(image.header("vary"), None);
    assert_eq!(image.body, binary(8192));
    // Already encoded by the upstream: passed on as it is (curl would fail
    // to decode this fake gzip, so ask without --compressed).
    let encoded = get(proxy.http(), "/encoded.json", &[("accept-encoding", "br")]).await;
    assert_eq!(encoded.headers["content-encoding"], "gzip");
    assert_eq!(
        &encoded.body[..],
        &b"already gzip, trust me".repeat(100)[..]
    );
    // The route without `compress`.
    let raw = curl(&url("/raw/data.json"), &[]).await;
    assert_eq!(raw.status, 200);
    assert_eq!(raw.header("content-encoding"), None);
    assert_eq!(raw.header("vary"), None);
    // The proxy's own small errors are not worth it either.
    let dead = curl(&url("/nothing"), &[]).await;
    assert_eq!(dead.header("content-encoding"), None);
}

#[tokio::test]
async fn static_files_come_precompressed_or_compressed_on_the_fly() {
    use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder};
    use tokio::io::AsyncReadExt;
    let dir = TestDir::new();
    let app = "function hello() { return 'hello from the original file'; }\n".repeat(100);
    let css = "body { margin: 0; color: #222; }\n".repeat(100);
    dir.write("site/static/app.js", &app);
    dir.write("site/static/style.css", &css);
    dir.write("site/static/logo.png", binary(4096));
    // Precompressed siblings say which file was read: they differ from
    // the original (a build step would write the same text).
    let marker_br = "/* from app.js.br */\n".repeat(60);
    let marker_gz = "/* from app.js.gz */\n".repeat(60);
    let mut br = Vec::new();
    BrotliEncoder::new(marker_br.as_bytes())
        .read_to_end(&mut br)
        .await
        .unwrap();
    let mut gz = Vec::new();
    GzipEncoder::new(marker_gz.as_bytes())
        .read_to_end(&mut gz)
        .await
        .unwrap();
    dir.write("site/static/app.js.br", br);
    dir.write("site/static/app.js.gz", gz);
    let proxy = TestProxy::start(
        &dir,
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[[route]]\npath = \"/static/\"\nroot = \"site\"\ncompress = true\n",
    )
    .await;
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", proxy.http().port());

    let from_br = curl(&url("/static/app.js"), &[]).await;
    assert_eq!(from_br.header("content-encoding"), Some("br"));
    assert!(
        from_br
            .header("content-type")
            .unwrap()
            .contains("javascript")
    );
    assert_eq!(from_br.all("vary"), ["Accept-Encoding"]);
    assert_eq!(String::from_utf8(from_br.body).unwrap(), marker_br);
    let from_gz = curl(
        &url("/static/app.js"),
        &["--header", "Accept-Encoding: gzip"],
    )
    .await;
    assert_eq!(from_gz.header("content-encoding"), Some("gzip"));
    assert_eq!(String::from_utf8(from_gz.body).unwrap(), marker_gz);
    let original = get(proxy.http(), "/static/app.js", &[]).await;
    assert!(!original.headers.contains_key("content-encoding"));
    assert_eq!(original.headers["vary"], "Accept-Encoding");
    assert_eq!(original.text(), app);

    let on_the_fly = curl(
        &url("/static/style.css"),
        &["--header", "Accept-Encoding: gzip"],
    )
    .await;
    assert_eq!(on_the_fly.header("content-encoding"), Some("gzip"));
    assert_eq!(String::from_utf8(on_the_fly.body).unwrap(), css);
    let logo = curl(&url("/static/logo.png"), &[]).await;
    assert_eq!(logo.header("content-encoding"), None);
    assert_eq!(logo.body, binary(4096));
}
