//! The demo's chat room behind the proxy, as in the seed tutorial: static
//! files from a folder, `/ws/` upgraded over wss://, the rest proxied.

use crate::common::*;
use bytes::Bytes;
use futures_util::SinkExt;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

/// Sign `name` in through the proxy and return the cookie it set.
async fn sign_in(proxy: &TestProxy, name: &str) -> String {
    let req = Request::post("/signin")
        .header("host", "localhost")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(format!("name={name}"))))
        .unwrap();
    let got = send(proxy.http(), req).await;
    assert_eq!(got.status, StatusCode::FOUND);
    let cookie = got.headers["set-cookie"].to_str().unwrap();
    cookie.split(';').next().unwrap().to_string()
}

async fn next_json<S>(ws: &mut Ws<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match next_data(ws).await {
        Message::Text(text) => serde_json::from_str(&text).unwrap(),
        other => panic!("expected JSON text, got {other:?}"),
    }
}

#[tokio::test]
async fn three_users_chat_through_the_proxy_over_wss() {
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(switchyard::demo::chat::serve(backend, stop.clone()));
    let dir = TestDir::new();
    let ca = TestCa::create(&dir);
    switchyard::demo::chat::write_static_assets(dir.path()).unwrap();
    let toml = format!(
        r#"
[[listener]]
bind = "127.0.0.1:0"
[[listener]]
bind = "127.0.0.1:0"
tls = {{ cert = "certs/server.crt", key = "certs/server.key" }}
[upstream.chat]
servers = ["{backend_addr}"]
[[route]]
path = "/static/"
root = "."
[[route]]
path = "/ws/"
upstream = "chat"
[[route]]
path = "/"
upstream = "chat"
"#
    );
    let proxy = TestProxy::start(&dir, &toml).await;

    // The page comes from the backend, its assets from the folder.
    let page = get(proxy.http(), "/signin", &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    let css = get(proxy.http(), "/static/chat.css", &[]).await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(
        css.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );

    let names = ["alice", "bob", "carol"];
    let mut clients = Vec::new();
    for name in names {
        let cookie = sign_in(&proxy, name).await;
        let stream = tls_connect(proxy.https(), ca.client_config())
            .await
            .unwrap();
        let mut request = format!("wss://localhost:{}/ws/chat", proxy.https().port())
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("cookie", cookie.parse().unwrap());
        let (mut ws, _) = within(tokio_tungstenite::client_async(request, stream))
            .await
            .unwrap();
        // Everyone already in sees the newcomer join.
        for (i, other) in clients.iter_mut().enumerate() {
            let join = next_json(other).await;
            assert_eq!(join["type"], "join", "client {i}");
            assert_eq!(join["user"]["name"], name);
        }
        let join = next_json(&mut ws).await;
        assert_eq!(join["type"], "join");
        assert_eq!(join["data"], format!("{name} joined."));
        let list = next_json(&mut ws).await;
        assert_eq!(list["type"], "list");
        let listed: Vec<&str> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["name"].as_str().unwrap())
            .collect();
        assert_eq!(listed.len(), clients.len() + 1, "{listed:?}");
        assert!(listed.contains(&name));
        clients.push(ws);
    }

    within(clients[1].send(Message::text("  hello from bob  ")))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for ws in &mut clients {
        let chat = next_json(ws).await;
        assert_eq!(chat["type"], "chat");
        assert_eq!(chat["user"]["name"], "bob");
        assert_eq!(chat["data"], "hello from bob");
        ids.push(chat["id"].as_u64().unwrap());
    }
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "one broadcast, one id: {ids:?}"
    );

    let mut carol = clients.pop().unwrap();
    within(carol.close(None)).await.unwrap();
    for ws in &mut clients {
        let left = next_json(ws).await;
        assert_eq!(left["type"], "left");
        assert_eq!(left["data"], "carol left.");
    }
    stop.cancel();
}
