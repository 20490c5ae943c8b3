//! `[server] watch`: the route file reloaded when it changes on disk, by an
//! in-place write, an editor's rename-over and a ConfigMap's `..data`
//! symlink swap; an invalid edit refused with the old routes serving.

use crate::common::*;
use http::StatusCode;
use std::path::Path;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn routes(ws: std::net::SocketAddr, http: std::net::SocketAddr, extra: &[&str]) -> String {
    let mut text = format!(
        "[server]\nwatch = true\n[[listener]]\nbind = \"127.0.0.1:0\"\n\
         [upstream.chat]\nservers = [\"{ws}\"]\n[upstream.web]\nservers = [\"{http}\"]\n\
         [[route]]\npath = \"/ws/\"\nupstream = \"chat\"\n\
         [[route]]\npath = \"/web/\"\nupstream = \"web\"\n"
    );
    for path in extra {
        text += &format!("[[route]]\npath = \"{path}\"\nupstream = \"web\"\n");
    }
    text
}

/// Write `text` at `path` the way an editor saves: a temporary file in the
/// same folder, renamed over the old one.
fn rename_over(path: &Path, text: &str) {
    let temp = path.with_extension("toml.swp");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

#[tokio::test]
async fn edits_on_disk_are_served_within_two_seconds() {
    let (ws, web) = (WsBackend::start().await, HttpBackend::start("web").await);
    let dir = TestDir::new();
    let proxy = TestProxy::start(&dir, &routes(ws.addr, web.addr, &[])).await;
    let path = dir.path().join("switchyard.toml");
    let addr = proxy.http();
    let test = async {
        let mut tunnel = ws_connect(addr, "/ws/kept", &[]).await.unwrap();
        assert_eq!(get(addr, "/one", &[]).await.status, StatusCode::NOT_FOUND);

        // In place.
        std::fs::write(&path, routes(ws.addr, web.addr, &["/one"])).unwrap();
        let took = eventually(Duration::from_secs(2), "/one served", || async {
            get(addr, "/one", &[]).await.status == StatusCode::OK
        })
        .await;
        println!("in-place write served after {took:?}");

        // Rename-over.
        rename_over(&path, &routes(ws.addr, web.addr, &["/one", "/two"]));
        let took = eventually(Duration::from_secs(2), "/two served", || async {
            get(addr, "/two", &[]).await.status == StatusCode::OK
        })
        .await;
        println!("rename-over served after {took:?}");

        // An invalid edit: refused whole, the routes in force keep serving.
        std::fs::write(&path, "[[listener]]\nbind = \"nowhere\"\n").unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(get(addr, "/two", &[]).await.text(), "backend web");
        let scrape_ok = proxy.proxy.state().metrics.encode();
        assert!(
            scrape_ok.contains("switchyard_reloads_total{result=\"error\"} 1"),
            "{scrape_ok}"
        );
        // Fixed again: taken.
        rename_over(&path, &routes(ws.addr, web.addr, &["/three"]));
        eventually(Duration::from_secs(2), "/three served", || async {
            get(addr, "/three", &[]).await.status == StatusCode::OK
        })
        .await;
        assert_eq!(get(addr, "/two", &[]).await.status, StatusCode::NOT_FOUND);

        // The tunnel opened first never noticed.
        assert_eq!(
            echo(&mut tunnel, Message::text("kept")).await,
            Message::text("kept")
        );
        within(tunnel.close(None)).await.unwrap();
    };
    tokio::select! {
        () = proxy.proxy.watch_route_file() => unreachable!("the watch never ends"),
        () = test => {}
    }
    assert!(ws.closes.lock().unwrap().len() <= 1);
}

#[tokio::test]
async fn a_configmap_update_is_served_within_two_seconds() {
    let (ws, web) = (WsBackend::start().await, HttpBackend::start("web").await);
    let dir = TestDir::new();
    // What the kubelet builds: the file a symlink into `..data`, itself a
    // symlink to a timestamped folder, swapped atomically on update.
    let write_version = |version: &str, text: &str| {
        dir.write(&format!("config/{version}/switchyard.toml"), text);
    };
    write_version("..2026_12_01_v1", &routes(ws.addr, web.addr, &[]));
    let config = dir.path().join("config");
    std::os::unix::fs::symlink("..2026_12_01_v1", config.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/switchyard.toml", config.join("switchyard.toml")).unwrap();
    let proxy = TestProxy::start_file(&config.join("switchyard.toml")).await;
    let addr = proxy.http();
    let test = async {
        let mut tunnel = ws_connect(addr, "/ws/kept", &[]).await.unwrap();
        write_version("..2026_12_01_v2", &routes(ws.addr, web.addr, &["/api/"]));
        std::os::unix::fs::symlink("..2026_12_01_v2", config.join("..data_tmp")).unwrap();
        std::fs::rename(config.join("..data_tmp"), config.join("..data")).unwrap();
        std::fs::remove_dir_all(config.join("..2026_12_01_v1")).unwrap();
        let took = eventually(Duration::from_secs(2), "/api/ served", || async {
            get(addr, "/api/x", &[]).await.status == StatusCode::OK
        })
        .await;
        println!("ConfigMap swap served after {took:?}");
        assert_eq!(
            echo(&mut tunnel, Message::text("kept")).await,
            Message::text("kept")
        );
    };
    tokio::select! {
        () = proxy.proxy.watch_route_file() => unreachable!("the watch never ends"),
        () = test => {}
    }
}

#[tokio::test]
async fn without_watch_a_change_waits_for_a_signal() {
    let (ws, web) = (WsBackend::start().await, HttpBackend::start("web").await);
    let dir = TestDir::new();
    let text = routes(ws.addr, web.addr, &[]).replace("watch = true", "watch = false");
    let proxy = TestProxy::start(&dir, &text).await;
    let addr = proxy.http();
    let path = dir.path().join("switchyard.toml");
    let test = async {
        let text = routes(ws.addr, web.addr, &["/one"]).replace("watch = true", "");
        std::fs::write(&path, text).unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(get(addr, "/one", &[]).await.status, StatusCode::NOT_FOUND);
    };
    tokio::select! {
        () = proxy.proxy.watch_route_file() => unreachable!("the watch never ends"),
        () = test => {}
    }
}

#[tokio::test]
async fn run_watch_watches_a_file_that_does_not_ask_for_it() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let (ws, web) = (WsBackend::start().await, HttpBackend::start("web").await);
    let dir = TestDir::new();
    let unwatched = |extra: &[&str]| routes(ws.addr, web.addr, extra).replace("watch = true\n", "");
    let path = dir.route_file(&unwatched(&[]));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", "--watch", "-c"])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: std::net::SocketAddr = loop {
        let line = within(lines.next_line())
            .await
            .unwrap()
            .expect("switchyard exited");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    assert_eq!(get(addr, "/one", &[]).await.status, StatusCode::NOT_FOUND);
    rename_over(&path, &unwatched(&["/one"]));
    eventually(Duration::from_secs(2), "/one served", || async {
        get(addr, "/one", &[]).await.status == StatusCode::OK
    })
    .await;
    let reloaded = loop {
        let line = within(lines.next_line()).await.unwrap().unwrap();
        if line.contains("configuration reloaded") {
            break line;
        }
    };
    assert!(
        reloaded.contains("the route file changed on disk"),
        "{reloaded}"
    );
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    assert!(within(child.wait()).await.unwrap().success());
}
