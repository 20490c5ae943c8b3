//! `root` routes: nginx `root` semantics, content types, validators and
//! conditional requests, ranges, HEAD, and no way out of the root.

use crate::common::*;
use http::StatusCode;

fn static_proxy_config() -> &'static str {
    r#"
[[listener]]
bind = "127.0.0.1:0"
[[route]]
path = "/static/"
root = "site"
"#
}

async fn setup() -> (TestDir, TestProxy) {
    let dir = TestDir::new();
    dir.write("site/static/app.js", "console.log('hi');\n");
    dir.write("site/static/style.css", "body { color: red }\n");
    dir.write("site/static/index.html", "<h1>index</h1>\n");
    dir.write("site/static/data.bin", (0..=255u8).collect::<Vec<u8>>());
    dir.write("site/static/sub/index.html", "<p>sub</p>\n");
    dir.write("secret.txt", "outside the root\n");
    dir.write("site/private.txt", "inside root, outside the route\n");
    std::os::unix::fs::symlink(
        dir.path().join("secret.txt"),
        dir.path().join("site/static/leak.txt"),
    )
    .unwrap();
    std::os::unix::fs::symlink(dir.path(), dir.path().join("site/static/up")).unwrap();
    std::os::unix::fs::symlink(
        dir.path().join("site/static/app.js"),
        dir.path().join("site/static/alias.js"),
    )
    .unwrap();
    let proxy = TestProxy::start(&dir, static_proxy_config()).await;
    (dir, proxy)
}

#[tokio::test]
async fn files_are_root_plus_path_with_their_content_type() {
    let (_dir, proxy) = setup().await;
    let js = get(proxy.http(), "/static/app.js", &[]).await;
    assert_eq!(js.status, StatusCode::OK);
    assert_eq!(js.text(), "console.log('hi');\n");
    assert!(
        js.headers["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    let css = get(proxy.http(), "/static/style.css", &[]).await;
    assert!(
        css.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    let dir_index = get(proxy.http(), "/static/sub/", &[]).await;
    assert_eq!(dir_index.text(), "<p>sub</p>\n");
    let no_slash = get(proxy.http(), "/static/sub", &[]).await;
    assert_eq!(no_slash.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(no_slash.headers["location"], "/static/sub/");
    let missing = get(proxy.http(), "/static/nope.txt", &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let alias = get(proxy.http(), "/static/alias.js", &[]).await;
    assert_eq!(
        alias.status,
        StatusCode::OK,
        "a symlink inside the root is fine"
    );
}

#[tokio::test]
async fn validators_and_conditional_requests() {
    let (_dir, proxy) = setup().await;
    let first = get(proxy.http(), "/static/app.js", &[]).await;
    let etag = first.headers["etag"].to_str().unwrap().to_string();
    let modified = first.headers["last-modified"].to_str().unwrap().to_string();
    let again = get(proxy.http(), "/static/app.js", &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
    assert_eq!(again.headers["etag"], etag.as_str());
    let other = get(
        proxy.http(),
        "/static/app.js",
        &[("if-none-match", "\"other\"")],
    )
    .await;
    assert_eq!(other.status, StatusCode::OK);
    let since = get(
        proxy.http(),
        "/static/app.js",
        &[("if-modified-since", &modified)],
    )
    .await;
    assert_eq!(since.status, StatusCode::NOT_MODIFIED);
    // If-None-Match decides alone when both are sent (RFC 9110 §13.1.3).
    let both = get(
        proxy.http(),
        "/static/app.js",
        &[
            ("if-none-match", "\"other\""),
            ("if-modified-since", &modified),
        ],
    )
    .await;
    assert_eq!(both.status, StatusCode::OK);
}

#[tokio::test]
async fn ranges_and_head() {
    let (_dir, proxy) = setup().await;
    let part = get(
        proxy.http(),
        "/static/data.bin",
        &[("range", "bytes=10-19")],
    )
    .await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers["content-range"], "bytes 10-19/256");
    assert_eq!(&part.body[..], &(10..20u8).collect::<Vec<u8>>()[..]);
    let tail = get(proxy.http(), "/static/data.bin", &[("range", "bytes=-6")]).await;
    assert_eq!(&tail.body[..], &[250, 251, 252, 253, 254, 255]);
    let bad = get(proxy.http(), "/static/data.bin", &[("range", "bytes=900-")]).await;
    assert_eq!(bad.status, StatusCode::RANGE_NOT_SATISFIABLE);

    let head = send(
        proxy.http(),
        http::Request::head("/static/data.bin")
            .header("host", "localhost")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.headers["content-length"], "256");
    assert!(head.body.is_empty());

    let post = send(
        proxy.http(),
        http::Request::post("/static/data.bin")
            .header("host", "localhost")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn no_path_leaves_the_root() {
    let (_dir, proxy) = setup().await;
    // Raw requests: an HTTP client library would normalise these paths.
    for path in [
        "/static/../secret.txt",
        "/static/../../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/%2E%2E/%2e%2e/secret.txt",
        "/static/..%2fsecret.txt",
        "/static/..%2f..%2fsecret.txt",
        "/static/%2e%2e%2fprivate.txt",
        "/static/..\\secret.txt",
        "/static/leak.txt",
        "/static/up/secret.txt",
    ] {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(proxy.http(), request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{path}: {answer}");
        assert!(!answer.contains("outside the root"), "{path} leaked");
        assert!(!answer.contains("outside the route"), "{path} leaked");
    }
}
