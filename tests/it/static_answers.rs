//! What a `root` route answers besides the file itself: `HEAD` with the
//! headers of `GET`, and 404/405 as ordinary plain-text errors.

use crate::common::*;
use http::{Request, StatusCode};

async fn setup() -> (TestDir, TestProxy) {
    let dir = TestDir::new();
    dir.write("site/static/chat.css", "body { color: red }\n".repeat(40));
    dir.write("site/static/app.js", "console.log('hi');\n");
    let proxy = TestProxy::start(
        &dir,
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[[route]]\npath = \"/static/\"\nroot = \"site\"\n",
    )
    .await;
    (dir, proxy)
}

fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Request<http_body_util::Full<bytes::Bytes>> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Default::default()).unwrap()
}

#[tokio::test]
async fn head_sends_the_headers_of_get() {
    let (_dir, proxy) = setup().await;
    for (path, headers) in [
        ("/static/chat.css", &[][..]),
        ("/static/app.js", &[][..]),
        ("/static/chat.css", &[("range", "bytes=0-9")][..]),
    ] {
        let get = send(proxy.http(), request("GET", path, headers)).await;
        let head = send(proxy.http(), request("HEAD", path, headers)).await;
        assert_eq!(get.status, head.status, "{path}");
        assert!(head.body.is_empty());
        let mut names: Vec<&str> = get.headers.keys().map(|k| k.as_str()).collect();
        names.retain(|n| *n != "date");
        assert!(names.contains(&"content-type"), "{path}: {names:?}");
        for name in names {
            assert_eq!(
                get.headers.get_all(name).iter().collect::<Vec<_>>(),
                head.headers.get_all(name).iter().collect::<Vec<_>>(),
                "{path}: {name}"
            );
        }
        assert_eq!(get.headers.len(), head.headers.len(), "{path}");
    }
}

#[tokio::test]
async fn missing_files_and_other_methods_are_plain_text_errors() {
    let (_dir, proxy) = setup().await;
    let missing = get(proxy.http(), "/static/nope.css", &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(missing.text(), "404 not found\n");
    let escape = get(proxy.http(), "/static/%2e%2e/switchyard.toml", &[]).await;
    assert_eq!(escape.status, StatusCode::NOT_FOUND);
    assert_eq!(escape.text(), "404 not found\n");

    let post = send(proxy.http(), request("POST", "/static/app.js", &[])).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.headers["allow"], "GET, HEAD");
    assert_eq!(post.headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(post.text(), "405 method not allowed\n");
}
