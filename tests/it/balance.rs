//! Choosing servers: least-tunnels spreads tunnels and steers new ones to
//! the emptiest server, counts survive a reload, plain requests go
//! round-robin, and hashing on a cookie is consistent within a process,
//! across a server's removal and between two processes.

use crate::common::*;
use crate::fleet::*;
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use std::collections::BTreeMap;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

async fn close<S>(mut ws: Ws<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    within(ws.close(None)).await.expect("close");
    while let Some(Ok(_)) = within(ws.next()).await {}
}

#[tokio::test]
async fn least_tunnels_spreads_steers_and_keeps_counts_across_a_reload() {
    let (a, b, c) = (
        ChatBackend::start("a").await,
        ChatBackend::start("b").await,
        ChatBackend::start("c").await,
    );
    let dir = TestDir::new();
    let proxy = TestProxy::start(&dir, &fleet_file(&servers(&[&a, &b, &c]))).await;
    let mut tunnels = Vec::new();
    for _ in 0..30 {
        tunnels.push(tunnel(proxy.http(), &[]).await);
    }
    let names: Vec<String> = tunnels.iter().map(|(_, n)| n.clone()).collect();
    assert_eq!(
        (count(&names, "a"), count(&names, "b"), count(&names, "c")),
        (10, 10, 10)
    );
    let admin = proxy.admin.unwrap();
    for backend in [&a, &b, &c] {
        assert_eq!(
            server_metric(admin, "switchyard_upstream_tunnels_open", backend).await,
            Some(10.0)
        );
    }

    // Six tunnels on a close: the next six go to a.
    let mut kept = Vec::new();
    let mut closed = 0;
    for (ws, name) in tunnels {
        if name == "a" && closed < 6 {
            close(ws).await;
            closed += 1;
        } else {
            kept.push((ws, name));
        }
    }
    until("a's closed tunnels are counted off", async || {
        server_metric(admin, "switchyard_upstream_tunnels_open", &a).await == Some(4.0)
    })
    .await;
    for _ in 0..6 {
        let (ws, name) = tunnel(proxy.http(), &[]).await;
        assert_eq!(name, "a");
        kept.push((ws, name));
    }

    // A reload adding d keeps the counts: d gets the next ten.
    let d = ChatBackend::start("d").await;
    reload(&proxy.proxy, &dir, &fleet_file(&servers(&[&a, &b, &c, &d]))).await;
    for _ in 0..10 {
        let (ws, name) = tunnel(proxy.http(), &[]).await;
        assert_eq!(name, "d", "a reload must not reset the counts");
        kept.push((ws, name));
    }
    // Tunnels opened before the reload still work.
    let (ws, _) = &mut kept[0];
    assert_eq!(
        echo(ws, Message::text("still here")).await,
        Message::text("still here")
    );
    assert_eq!(
        server_metric(admin, "switchyard_upstream_tunnels_open", &d).await,
        Some(10.0)
    );
}

#[tokio::test]
async fn round_robin_spreads_requests_and_tunnels_alike() {
    let (a, b, c) = (
        ChatBackend::start("a").await,
        ChatBackend::start("b").await,
        ChatBackend::start("c").await,
    );
    let dir = TestDir::new();
    let file = fleet_file(&format!(
        "{}\nbalance = \"round-robin\"",
        servers(&[&a, &b, &c])
    ));
    let proxy = TestProxy::start(&dir, &file).await;
    // Plain requests, on one keep-alive connection: one server after another.
    let mut client = Client::connect(proxy.http()).await;
    for _ in 0..30 {
        let (status, _) = client.get("/", &[]).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!((a.requests(), b.requests(), c.requests()), (10, 10, 10));
    // Tunnels too, whatever each server holds: emptying a does not steer.
    let mut tunnels = Vec::new();
    for _ in 0..6 {
        tunnels.push(tunnel(proxy.http(), &[]).await);
    }
    let mut kept = Vec::new();
    for (ws, name) in tunnels {
        if name == "a" {
            close(ws).await;
        } else {
            kept.push(ws);
        }
    }
    until("a's tunnels are closed", async || a.open() == 0).await;
    let mut names = Vec::new();
    for _ in 0..3 {
        let (ws, name) = tunnel(proxy.http(), &[]).await;
        names.push(name);
        kept.push(ws);
    }
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);
}

/// Which backend answers each of 300 users, by cookie.
async fn owners(addr: std::net::SocketAddr) -> BTreeMap<String, String> {
    let mut client = Client::connect(addr).await;
    let mut owners = BTreeMap::new();
    for k in 0..300 {
        let user = format!("user-{k}");
        let cookie = format!("theme=dark; user={user}; lang=en");
        let (status, body) = client.get("/", &[("cookie", &cookie)]).await;
        assert_eq!(status, StatusCode::OK);
        owners.insert(user, body.trim_start_matches("backend ").to_string());
    }
    owners
}

/// The same route file served by the `switchyard` binary, another process.
struct Child {
    child: tokio::process::Child,
    http: std::net::SocketAddr,
}

impl Child {
    async fn start(file: &std::path::Path) -> Child {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("run")
            .arg("-c")
            .arg(file)
            .env("RUST_LOG", "info,access=off")
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start switchyard");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let http = within(async {
            while let Some(line) = lines.next_line().await.expect("stderr line") {
                if let Some(rest) = line.split("listening on ").nth(1)
                    && !line.contains("admin")
                    && let Some(addr) = rest.split_whitespace().next()
                {
                    return addr.parse().expect("listener address");
                }
            }
            panic!("switchyard exited before listening");
        })
        .await;
        // Keep reading its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Child { child, http }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: signalling the child this test started, by its PID.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

#[tokio::test]
async fn hashing_on_a_cookie_is_stable_consistent_and_shared_by_processes() {
    let (a, b, c) = (
        ChatBackend::start("a").await,
        ChatBackend::start("b").await,
        ChatBackend::start("c").await,
    );
    let dir = TestDir::new();
    let hashed = |list: &[&ChatBackend]| {
        fleet_file(&format!(
            "{}\nbalance = \"hash\"\nhash_key = \"cookie:user\"",
            servers(list)
        ))
    };
    let proxy = TestProxy::start(&dir, &hashed(&[&a, &b, &c])).await;
    let first = owners(proxy.http()).await;
    let per: Vec<usize> = ["a", "b", "c"]
        .iter()
        .map(|n| first.values().filter(|o| o == n).count())
        .collect();
    assert!(per.iter().all(|&n| n > 50), "keys spread badly: {per:?}");
    assert_eq!(owners(proxy.http()).await, first, "a key changed servers");

    // Another process with the same servers agrees on every key.
    let other = Child::start(&dir.path().join("switchyard.toml")).await;
    assert_eq!(owners(other.http).await, first, "two processes disagree");
    drop(other);

    // A tunnel with the cookie lands on its key's server.
    for user in ["user-1", "user-2", "user-3"] {
        let cookie = format!("user={user}");
        let (_ws, name) = tunnel(proxy.http(), &[("cookie", &cookie)]).await;
        assert_eq!(name, first[user]);
    }

    // Removing b moves b's keys only.
    reload(&proxy.proxy, &dir, &hashed(&[&a, &c])).await;
    let after = owners(proxy.http()).await;
    for (user, owner) in &first {
        if owner == "b" {
            assert_ne!(after[user], "b");
        } else {
            assert_eq!(&after[user], owner, "{user} moved off a server that stayed");
        }
    }
    // Without the cookie, requests are still served.
    let (status, _) = Client::connect(proxy.http()).await.get("/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let mut ws = tunnel(proxy.http(), &[]).await.0;
    within(ws.send(Message::text("x"))).await.unwrap();
}
