//! Reloading without dropping a tunnel: 200 open tunnels through 20 route
//! and upstream changes, an invalid file, listeners added and removed.

use crate::common::*;
use http::StatusCode;
use std::time::Duration;
use switchyard::config::Config;
use tokio_tungstenite::tungstenite::Message;

fn config_text(ws_server: &str, extra_route: Option<usize>, listeners: &[&str]) -> String {
    let mut text = String::new();
    for bind in listeners {
        text += &format!("[[listener]]\nbind = \"{bind}\"\n\n");
    }
    text += &format!("[upstream.chat]\nservers = [\"{ws_server}\"]\n\n");
    text += "[[route]]\npath = \"/ws/\"\nupstream = \"chat\"\n\n";
    if let Some(n) = extra_route {
        text += &format!("[[route]]\npath = \"/extra{n}/\"\nupstream = \"chat\"\n\n");
    }
    text
}

#[tokio::test]
async fn two_hundred_tunnels_survive_twenty_reloads() {
    let (a, b) = (WsBackend::start().await, WsBackend::start().await);
    let dir = TestDir::new();
    let first = config_text(&a.addr.to_string(), None, &["127.0.0.1:0"]);
    let proxy = TestProxy::start(&dir, &first).await;
    let mut tunnels = Vec::new();
    for _ in 0..200 {
        tunnels.push(ws_connect(proxy.http(), "/ws/chat", &[]).await.unwrap());
    }
    let mut slowest = Duration::ZERO;
    for round in 1..=20 {
        // Odd rounds change the routes, even rounds the upstream's server.
        let server = if (round / 2) % 2 == 0 { a.addr } else { b.addr };
        let extra = (round % 2 == 1).then_some(round);
        let text = config_text(&server.to_string(), extra, &["127.0.0.1:0"]);
        let path = dir.route_file(&text);
        let report = within(proxy.proxy.reload_with(Config::load(&path)))
            .await
            .unwrap();
        assert_eq!(report.generation, round as u64 + 1);
        slowest = slowest.max(report.took);
        // New connections use the new upstream at once.
        let mut fresh = ws_connect(proxy.http(), "/ws/new", &[]).await.unwrap();
        assert_eq!(
            echo(&mut fresh, Message::text("new")).await,
            Message::text("new")
        );
        drop(fresh);
    }
    println!("slowest reload with 200 tunnels open: {slowest:?}");
    for (i, ws) in tunnels.iter_mut().enumerate() {
        let text = format!("still here {i}");
        assert_eq!(
            echo(ws, Message::text(text.clone())).await,
            Message::text(text)
        );
    }
    assert_eq!(a.closes.lock().unwrap().len(), 0, "no tunnel was closed");
    for ws in &mut tunnels {
        within(ws.close(None)).await.unwrap();
    }
}

#[tokio::test]
async fn an_invalid_file_keeps_the_old_configuration() {
    let a = HttpBackend::start("a").await;
    let dir = TestDir::new();
    let toml = format!(
        "[server]\nadmin = \"127.0.0.1:0\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n\
         [upstream.a]\nservers = [\"{}\"]\n[[route]]\npath = \"/\"\nupstream = \"a\"\n",
        a.addr
    );
    let proxy = TestProxy::start(&dir, &toml).await;
    let path = dir.route_file(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[[route]]\npath = \"/\"\nupstream = \"gone\"\n",
    );
    let error = within(proxy.proxy.reload_with(Config::load(&path)))
        .await
        .expect_err("an invalid file is refused");
    assert!(
        error
            .to_string()
            .contains("switchyard.toml:5:12: no upstream named \"gone\""),
        "{error}"
    );
    let got = get(proxy.http(), "/", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "backend a");
    let scrape = scrape(proxy.admin.unwrap()).await;
    assert_eq!(
        metric(&scrape, "switchyard_reloads_total", &[("result", "error")]),
        Some(1.0)
    );
    assert_eq!(
        metric(&scrape, "switchyard_config_generation", &[]),
        Some(1.0)
    );
}

#[tokio::test]
async fn listeners_are_added_and_removed_by_reload() {
    let backend = WsBackend::start().await;
    let dir = TestDir::new();
    let server = backend.addr.to_string();
    let proxy = TestProxy::start(&dir, &config_text(&server, None, &["127.0.0.1:0"])).await;
    let old = proxy.http();
    let mut kept_tunnel = ws_connect(old, "/ws/a", &[]).await.unwrap();

    // Add a listener on another loopback address.
    let path = dir.route_file(&config_text(&server, None, &["127.0.0.1:0", "127.0.0.2:0"]));
    let report = within(proxy.proxy.reload_with(Config::load(&path)))
        .await
        .unwrap();
    assert_eq!(report.listeners.added, vec!["127.0.0.2:0".to_string()]);
    let listeners = proxy.proxy.listeners().await;
    assert_eq!(listeners.len(), 2);
    assert!(
        listeners.iter().any(|(addr, _)| *addr == old),
        "the old socket is kept"
    );
    let new = listeners
        .iter()
        .map(|(a, _)| *a)
        .find(|a| *a != old)
        .unwrap();
    let mut ws = ws_connect(new, "/ws/b", &[]).await.unwrap();
    assert_eq!(echo(&mut ws, Message::text("b")).await, Message::text("b"));

    // Remove the first one.
    let path = dir.route_file(&config_text(&server, None, &["127.0.0.2:0"]));
    let report = within(proxy.proxy.reload_with(Config::load(&path)))
        .await
        .unwrap();
    assert_eq!(report.listeners.removed, vec!["127.0.0.1:0".to_string()]);
    let refused = within(async {
        // The accept loop stops right after the swap; give it a moment.
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(old).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    })
    .await;
    assert!(refused, "a removed listener stops accepting");
    // A tunnel opened through the removed listener lives on.
    assert_eq!(
        echo(&mut kept_tunnel, Message::text("kept")).await,
        Message::text("kept")
    );
    assert_eq!(
        echo(&mut ws, Message::text("b2")).await,
        Message::text("b2")
    );
    within(kept_tunnel.close(None)).await.unwrap();
    within(ws.close(None)).await.unwrap();
}

#[tokio::test]
async fn a_tunnel_outlives_its_route() {
    let backend = WsBackend::start().await;
    let other = HttpBackend::start("other").await;
    let dir = TestDir::new();
    let proxy = TestProxy::start(
        &dir,
        &config_text(&backend.addr.to_string(), None, &["127.0.0.1:0"]),
    )
    .await;
    let mut ws = ws_connect(proxy.http(), "/ws/x", &[]).await.unwrap();
    let without_ws = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[upstream.other]\nservers = [\"{}\"]\n\
         [[route]]\npath = \"/\"\nupstream = \"other\"\n",
        other.addr
    );
    let path = dir.route_file(&without_ws);
    let report = within(proxy.proxy.reload_with(Config::load(&path)))
        .await
        .unwrap();
    assert_eq!(report.routes.removed, vec!["/ws/".to_string()]);
    assert_eq!(
        echo(&mut ws, Message::text("orphan")).await,
        Message::text("orphan")
    );
    assert_eq!(
        get(proxy.http(), "/ws/x", &[]).await.text(),
        "backend other"
    );
}
