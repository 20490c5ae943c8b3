//! Rebalancing: a server added by reload to an uneven fleet gets its share
//! of the open tunnels, moved at `rebalance_rate` with Close 1001 so their
//! clients reconnect.

use crate::common::*;
use crate::fleet::*;
use futures_util::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// A chat client that reconnects when told to go away, recording the
/// close codes it was sent.
async fn client(addr: std::net::SocketAddr, closes: Arc<Mutex<Vec<u16>>>) {
    loop {
        let (mut ws, _) = tunnel(addr, &[]).await;
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => {
                    closes
                        .lock()
                        .unwrap()
                        .push(frame.map_or(1005, |f| u16::from(f.code)));
                }
                Some(Ok(_)) => {}
                // Closed: reconnect, as browsers' chat clients do.
                None | Some(Err(_)) => break,
            }
        }
    }
}

#[tokio::test]
async fn a_server_added_by_reload_gets_its_share_of_the_tunnels() {
    let (a, b) = (ChatBackend::start("a").await, ChatBackend::start("b").await);
    let dir = TestDir::new();
    let file =
        |list: &[&ChatBackend]| fleet_file(&format!("{}\nrebalance_rate = 20", servers(list)));
    let proxy = TestProxy::start(&dir, &file(&[&a, &b])).await;
    let addr = proxy.http();
    let closes = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..40)
        .map(|_| tokio::spawn(client(addr, closes.clone())))
        .collect();
    until("40 tunnels are open", async || a.open() + b.open() == 40).await;
    assert_eq!((a.open(), b.open()), (20, 20));
    // Even: nothing moves.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(closes.lock().unwrap().is_empty());

    let c = ChatBackend::start("c").await;
    reload(&proxy.proxy, &dir, &file(&[&a, &b, &c])).await;
    let started = Instant::now();
    until("c holds ten tunnels", async || c.open() >= 10).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "rebalancing took {took:?}");
    // It stops once even: a and b keep no more than 1.1 × the mean.
    until("rebalancing settles", async || {
        a.open() + b.open() + c.open() == 40 && a.open() <= 14 && b.open() <= 14
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let moved = closes.lock().unwrap().clone();
    assert_eq!(
        moved.len(),
        c.open(),
        "every moved client went to c: {moved:?}"
    );
    assert!(moved.iter().all(|&code| code == 1001), "{moved:?}");
    let scrape = scrape(proxy.admin.unwrap()).await;
    assert_eq!(
        metric(
            &scrape,
            "switchyard_upstream_rebalanced_tunnels_total",
            &[("upstream", "chat")]
        ),
        Some(moved.len() as f64)
    );
    for client in clients {
        client.abort();
    }
}
