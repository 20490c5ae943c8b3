//! ACME against Debian's `pebble` on loopback: a certificate at start, the
//! cache reused by a restart, renewal of a short certificate under an open
//! tunnel, a CA down at start, real TLS-ALPN-01 and HTTP-01 validation
//! against the proxy's own listeners, and the route file's ACME errors.

use crate::common::*;
use crate::pebble::*;
use rustls::pki_types::CertificateDer;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

/// A route file with one ACME listener on `bind` for `localhost`, and
/// `more` added to the `acme` table.
fn acme_file(pebble: &Pebble, ws: SocketAddr, bind: &str, more: &str) -> String {
    format!(
        "[server]\nadmin = \"127.0.0.1:0\"\nshutdown_timeout = \"1s\"\n\
         [[listener]]\nbind = \"{bind}\"\n\
         tls = {{ acme = {{ domains = [\"localhost\"], email = \"ops@example.com\", \
         directory = \"{}\", directory_ca = \"certs/ca.crt\", cache = \"acme\"{more} }} }}\n\
         [upstream.chat]\nservers = [\"{ws}\"]\n[[route]]\npath = \"/\"\nupstream = \"chat\"\n",
        pebble.directory
    )
}

/// Wait until `addr` serves a certificate for `localhost`; returns it and
/// how long that took.
async fn first_certificate(
    addr: SocketAddr,
    limit: Duration,
) -> (CertificateDer<'static>, Duration) {
    let took = eventually(limit, "a certificate from pebble", || async {
        served_certificate(addr, "localhost").await.is_some()
    })
    .await;
    (served_certificate(addr, "localhost").await.unwrap(), took)
}

fn issued(pebble: &Pebble) -> usize {
    pebble
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("Issued certificate serial"))
        .count()
}

#[tokio::test]
async fn a_listener_gets_its_certificate_at_start_and_a_restart_reuses_it() {
    let backend = WsBackend::start().await;
    let dir = TestDir::new();
    let ca = TestCa::create(&dir);
    let pebble = Pebble::start(
        &dir,
        PebbleOptions {
            always_valid: true,
            ..Default::default()
        },
    )
    .await;
    let root = pebble.root(&ca).await;
    let text = acme_file(&pebble, backend.addr, "127.0.0.1:0", "");
    let started = Instant::now();
    let proxy = TestProxy::start(&dir, &text).await;
    let (cert, _) = first_certificate(proxy.https(), Duration::from_secs(20)).await;
    println!(
        "first issuance: certificate served {:?} after start",
        started.elapsed()
    );
    assert_eq!(names_of(&cert), ["localhost"]);

    // A client trusting only pebble's root gets through, over wss://.
    let mut ws = wss_connect_named(proxy.https(), "localhost", "/ws/acme", trusting(&root)).await;
    assert_eq!(
        echo(&mut ws, Message::text("issued")).await,
        Message::text("issued")
    );
    within(ws.close(None)).await.unwrap();
    let scraped = scrape(proxy.admin.unwrap()).await;
    assert_eq!(
        metric(
            &scraped,
            "switchyard_acme_renewals_total",
            &[("result", "ok")]
        ),
        Some(1.0)
    );
    let left = metric(
        &scraped,
        "switchyard_certificate_expiry_seconds",
        &[("name", "localhost")],
    )
    .expect("expiry series");
    assert!(left > 30.0 * 86400.0, "{left}");

    // Account and certificate are cached, private to the user.
    let folder = std::fs::read_dir(dir.path().join("acme"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for file in ["account.json", "localhost.crt", "localhost.key"] {
        let mode = std::fs::metadata(folder.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    assert_eq!(issued(&pebble), 1);
    within(proxy.proxy.shutdown()).await;

    // A restart serves the cached certificate from the first handshake and
    // orders nothing.
    let proxy = TestProxy::start(&dir, &text).await;
    assert_eq!(
        served_certificate(proxy.https(), "localhost").await,
        Some(cert)
    );
    let mut ws = wss_connect_named(proxy.https(), "localhost", "/ws/again", trusting(&root)).await;
    assert_eq!(
        echo(&mut ws, Message::text("cached")).await,
        Message::text("cached")
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(issued(&pebble), 1, "no new order");
    let scrape = scrape(proxy.admin.unwrap()).await;
    assert_eq!(
        metric(
            &scrape,
            "switchyard_acme_renewals_total",
            &[("result", "ok")]
        ),
        // The series exists from the start; nothing was ordered.
        Some(0.0)
    );

    // A reload that adds a domain orders a new certificate; until it is
    // issued the old one goes on serving, never nothing.
    let path = dir.route_file(&text.replace(
        "domains = [\"localhost\"]",
        "domains = [\"localhost\", \"chat.localhost\"]",
    ));
    within(
        proxy
            .proxy
            .reload_with(switchyard::config::Config::load(&path)),
    )
    .await
    .unwrap();
    eventually(
        Duration::from_secs(20),
        "the certificate for both names",
        || async {
            let served = served_certificate(proxy.https(), "localhost").await;
            assert!(served.is_some(), "a certificate is served throughout");
            served.is_some_and(|c| names_of(&c) == ["localhost", "chat.localhost"])
        },
    )
    .await;
    pebble.stop().await;
}

#[tokio::test]
async fn a_short_certificate_is_renewed_and_an_open_tunnel_pays_nothing() {
    let backend = WsBackend::start().await;
    let dir = TestDir::new();
    let ca = TestCa::create(&dir);
    let pebble = Pebble::start(
        &dir,
        PebbleOptions {
            always_valid: true,
            validity_secs: Some(20),
            ..Default::default()
        },
    )
    .await;
    let root = pebble.root(&ca).await;
    // Due 4 s after issuance.
    let text = acme_file(
        &pebble,
        backend.addr,
        "127.0.0.1:0",
        ", renew_before = \"16s\"",
    );
    let proxy = TestProxy::start(&dir, &text).await;
    let https = proxy.https();
    let (first, _) = first_certificate(https, Duration::from_secs(20)).await;
    let facts = switchyard::certs::material::describe(&first).unwrap();
    let due = facts.not_after - Duration::from_secs(16);

    // A tunnel echoes without pause while the certificate is renewed.
    let mut tunnel = wss_connect_named(https, "localhost", "/ws/tunnel", trusting(&root)).await;
    let mut echoed = 0;
    let renewed_at = loop {
        let text = format!("message {echoed}");
        assert_eq!(
            echo(&mut tunnel, Message::text(text.clone())).await,
            Message::text(text)
        );
        echoed += 1;
        let served = served_certificate(https, "localhost").await;
        if served.is_some() && served.as_ref() != Some(&first) {
            break SystemTime::now();
        }
        assert!(echoed < 2000, "no renewal within 2000 echoes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let after_due = renewed_at.duration_since(due).unwrap_or_default();
    println!(
        "renewal: new certificate served {after_due:?} after it was due; {echoed} echoes meanwhile"
    );
    // The renewed certificate is trusted like the first, and the tunnel
    // opened under the old one goes on.
    let mut fresh = wss_connect_named(https, "localhost", "/ws/fresh", trusting(&root)).await;
    assert_eq!(
        echo(&mut fresh, Message::text("renewed")).await,
        Message::text("renewed")
    );
    for i in 0..20 {
        let text = format!("after {i}");
        assert_eq!(
            echo(&mut tunnel, Message::text(text.clone())).await,
            Message::text(text)
        );
    }
    assert!(
        backend.closes.lock().unwrap().is_empty(),
        "no tunnel closed"
    );
    let scrape = scrape(proxy.admin.unwrap()).await;
    assert_eq!(
        metric(&scrape, "switchyard_tunnels_open", &[("route", "/")]),
        Some(2.0)
    );
    let ok = metric(
        &scrape,
        "switchyard_acme_renewals_total",
        &[("result", "ok")],
    );
    assert!(ok >= Some(2.0), "{ok:?}");
    within(tunnel.close(None)).await.unwrap();
    pebble.stop().await;
}

#[tokio::test]
async fn with_the_ca_down_at_start_the_cached_certificate_serves_and_the_failure_is_logged() {
    let backend = WsBackend::start().await;
    let dir = TestDir::new();
    let _ca = TestCa::create(&dir);
    let pebble = Pebble::start(
        &dir,
        PebbleOptions {
            always_valid: true,
            validity_secs: Some(60),
            ..Default::default()
        },
    )
    .await;
    // Due 2 s after issuance: the restart below finds it due.
    let text = acme_file(
        &pebble,
        backend.addr,
        "127.0.0.1:0",
        ", renew_before = \"58s\"",
    );
    let proxy = TestProxy::start(&dir, &text).await;
    let (cached, _) = first_certificate(proxy.https(), Duration::from_secs(20)).await;
    within(proxy.proxy.shutdown()).await;
    drop(proxy);
    pebble.stop().await;

    let path = dir.path().join("switchyard.toml");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("run")
        .arg("-c")
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut next_line = async || {
        let line = within(lines.next_line())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("switchyard exited:\n{}", seen.join("\n")));
        seen.push(line.clone());
        line
    };
    let https: SocketAddr = loop {
        let line = next_line().await;
        if let Some(rest) = line.split("listening on ").nth(1)
            && rest.contains("(https)")
        {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    assert_eq!(
        served_certificate(https, "localhost").await,
        Some(cached.clone())
    );
    let admin: SocketAddr = loop {
        let line = next_line().await;
        if let Some(rest) = line.split("admin listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let failure = loop {
        let line = next_line().await;
        if line.contains("ACME order for localhost failed") {
            break line;
        }
    };
    println!("logged: {failure}");
    assert!(
        failure.contains("the certificate in service stays in service"),
        "{failure}"
    );
    assert_eq!(served_certificate(https, "localhost").await, Some(cached));
    let scraped = scrape(admin).await;
    let errors = metric(
        &scraped,
        "switchyard_acme_renewals_total",
        &[("result", "error")],
    );
    assert!(errors >= Some(1.0), "{errors:?}");
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    let status = within(child.wait()).await.unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn tls_alpn_01_is_answered_on_the_listener_itself() {
    let backend = WsBackend::start().await;
    let dir = TestDir::new();
    let ca = TestCa::create(&dir);
    let port = free_port();
    let pebble = Pebble::start(
        &dir,
        PebbleOptions {
            tls_port: Some(port),
            ..Default::default()
        },
    )
    .await;
    let root = pebble.root(&ca).await;
    let bind = format!("127.0.0.1:{port}");
    let proxy = TestProxy::start(&dir, &acme_file(&pebble, backend.addr, &bind, "")).await;
    let (cert, took) = first_certificate(proxy.https(), Duration::from_secs(30)).await;
    println!("TLS-ALPN-01 validated issuance: {took:?}");
    assert_eq!(names_of(&cert), ["localhost"]);
    let mut ws = wss_connect_named(proxy.https(), "localhost", "/ws/alpn", trusting(&root)).await;
    assert_eq!(
        echo(&mut ws, Message::text("alpn")).await,
        Message::text("alpn")
    );
    pebble.stop().await;
}

#[tokio::test]
async fn http_01_is_answered_on_the_plain_listener() {
    let backend = WsBackend::start().await;
    let dir = TestDir::new();
    let ca = TestCa::create(&dir);
    let port = free_port();
    let pebble = Pebble::start(
        &dir,
        PebbleOptions {
            http_port: Some(port),
            ..Default::default()
        },
    )
    .await;
    let root = pebble.root(&ca).await;
    let text = acme_file(
        &pebble,
        backend.addr,
        "127.0.0.1:0",
        ", challenge = \"http-01\"",
    )
    .replace(
        "[upstream.chat]",
        &format!("[[listener]]\nbind = \"127.0.0.1:{port}\"\n[upstream.chat]"),
    );
    let proxy = TestProxy::start(&dir, &text).await;
    let (cert, took) = first_certificate(proxy.https(), Duration::from_secs(30)).await;
    println!("HTTP-01 validated issuance: {took:?}");
    assert_eq!(names_of(&cert), ["localhost"]);
    let mut ws = wss_connect_named(proxy.https(), "localhost", "/ws/h", trusting(&root)).await;
    assert_eq!(
        echo(&mut ws, Message::text("http")).await,
        Message::text("http")
    );
    // Outside an order the path is an ordinary request.
    let got = get(proxy.http(), "/.well-known/acme-challenge/none", &[]).await;
    assert_ne!(got.text(), "");
    pebble.stop().await;
}

#[tokio::test]
async fn acme_mistakes_are_reported_with_their_positions() {
    let dir = TestDir::new();
    dir.write("not-a-folder", "x");
    let text = r#"[[listener]]
bind = "127.0.0.1:0"
acme = { domains = ["a.example"] }
[[listener]]
bind = "127.0.0.1:0"
tls = { acme = { domains = [], cache = "acme" } }
[[listener]]
bind = "127.0.0.1:0"
tls = { acme = { domains = ["*.example.com", "ok.example"], cache = "not-a-folder/acme", directory = "http://ca.example/dir", challenge = "dns-01" } }
[[listener]]
bind = "127.0.0.1:0"
tls = { acme = { domains = ["b.example"], email = "nobody", cache = "acme", directory_ca = "missing.pem" }, cert = "x.crt" }
[upstream.a]
servers = ["127.0.0.1:1"]
[[route]]
path = "/"
upstream = "a"
"#;
    let path = dir.route_file(text);
    let error = switchyard::config::Config::load(&path)
        .unwrap_err()
        .to_string();
    for expected in [
        "switchyard.toml:3:1: acme belongs inside tls",
        "switchyard.toml:6:28: domains is empty",
        "switchyard.toml:9:29: *.example.com: a wildcard certificate needs the DNS-01 challenge",
        "switchyard.toml:9:69: cache ",
        "not-a-folder is not a folder",
        "switchyard.toml:9:102: directory \"http://ca.example/dir\" is not an https:// URL",
        "switchyard.toml:9:139: challenge \"dns-01\" is not",
        "switchyard.toml:12:7: a tls entry has either `cert` and `key` or `acme`, not both",
        "switchyard.toml:12:51: \"nobody\" is not an e-mail address",
        "switchyard.toml:12:92: directory_ca file ",
    ] {
        assert!(
            error.contains(expected),
            "missing {expected:?} in:\n{error}"
        );
    }
    // http-01 without a plain listener.
    let text = "[[listener]]\nbind = \"127.0.0.1:0\"\n\
                tls = { acme = { domains = [\"a.example\"], cache = \"acme\", challenge = \"http-01\" } }\n\
                [upstream.a]\nservers = [\"127.0.0.1:1\"]\n[[route]]\npath = \"/\"\nupstream = \"a\"\n";
    let path = dir.route_file(text);
    let error = switchyard::config::Config::load(&path)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(
            "switchyard.toml:3:71: the http-01 challenge is answered on a plain listener"
        ),
        "{error}"
    );
}
