//! Certificates from files: several per listener chosen by SNI, and files
//! rotated on disk picked up without a signal while tunnels keep running.

use crate::common::*;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn tls_route_file(ws: std::net::SocketAddr, tls: &str, extra: &str) -> String {
    format!(
        "[server]\nadmin = \"127.0.0.1:0\"\n{extra}\n[[listener]]\nbind = \"127.0.0.1:0\"\ntls = {tls}\n\
         [upstream.chat]\nservers = [\"{ws}\"]\n[[route]]\npath = \"/\"\nupstream = \"chat\"\n"
    )
}

#[tokio::test]
async fn sni_picks_the_certificate_by_name_and_the_first_is_the_default() {
    let backend = WsBackend::start().await;
    let dir = TestDir::new();
    let ca = CertMaker::new();
    for (file, names) in [
        ("default", &["localhost"][..]),
        ("chat", &["chat.example.test"][..]),
        ("wild", &["*.example.test"][..]),
    ] {
        let (cert, key) = ca.pair(names);
        dir.write(&format!("certs/{file}.crt"), cert);
        dir.write(&format!("certs/{file}.key"), key);
    }
    let tls = "[\n  { cert = \"certs/default.crt\", key = \"certs/default.key\" },\n  \
               { cert = \"certs/wild.crt\", key = \"certs/wild.key\" },\n  \
               { cert = \"certs/chat.crt\", key = \"certs/chat.key\" },\n]";
    let proxy = TestProxy::start(&dir, &tls_route_file(backend.addr, tls, "")).await;
    let https = proxy.https();

    let cases = [
        ("chat.example.test", "chat.example.test"), // exact beats the wildcard listed before it
        ("api.example.test", "*.example.test"),
        ("localhost", "localhost"),
        ("unknown.test", "localhost"),     // no match: the default
        ("a.b.example.test", "localhost"), // a wildcard covers one label
    ];
    for (sni, expected) in cases {
        let served = served_certificate(https, sni).await.expect("a handshake");
        assert_eq!(names_of(&served), [expected], "for SNI {sni}");
    }
    // A verifying client asking for each name gets through and echoes.
    for name in ["chat.example.test", "api.example.test", "localhost"] {
        let mut ws = wss_connect_named(https, name, "/ws/sni", ca.client_config()).await;
        assert_eq!(
            echo(&mut ws, Message::text(name)).await,
            Message::text(name)
        );
    }
    let scrape = scrape(proxy.admin.unwrap()).await;
    let listener = "127.0.0.1:0";
    for name in ["localhost", "chat.example.test", "*.example.test"] {
        let left = metric(
            &scrape,
            "switchyard_certificate_expiry_seconds",
            &[("listener", listener), ("name", name)],
        )
        .unwrap_or_else(|| panic!("expiry of {name}"));
        assert!(left > 86400.0, "{name}: {left}");
    }
}

#[tokio::test]
async fn validate_reports_names_claimed_twice() {
    let dir = TestDir::new();
    let ca = CertMaker::new();
    for file in ["a", "b"] {
        let (cert, key) = ca.pair(&["chat.example.test"]);
        dir.write(&format!("certs/{file}.crt"), cert);
        dir.write(&format!("certs/{file}.key"), key);
    }
    let text = "[[listener]]\nbind = \"127.0.0.1:0\"\ntls = [\n  { cert = \"certs/a.crt\", key = \"certs/a.key\" },\n  \
                { cert = \"certs/b.crt\", key = \"certs/b.key\" },\n]\n\
                [upstream.a]\nservers = [\"127.0.0.1:1\"]\n[[route]]\npath = \"/\"\nupstream = \"a\"\n";
    let path = dir.route_file(text);
    let error = switchyard::config::Config::load(&path)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(
            "switchyard.toml:5:3: chat.example.test is also named by the certificate at 4:3"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn rotated_files_are_served_within_two_seconds_and_tunnels_keep_echoing() {
    let backend = WsBackend::start().await;
    let dir = TestDir::new();
    let ca = CertMaker::new();
    let (cert_a, key_a) = ca.pair(&["localhost"]);
    dir.write("certs/tls.crt", &cert_a);
    dir.write("certs/tls.key", &key_a);
    let tls = "{ cert = \"certs/tls.crt\", key = \"certs/tls.key\" }";
    let proxy = TestProxy::start(&dir, &tls_route_file(backend.addr, tls, "")).await;
    let https = proxy.https();
    let first = served_certificate(https, "localhost").await.unwrap();
    let mut tunnel = wss_connect_named(https, "localhost", "/ws/kept", ca.client_config()).await;
    assert_eq!(
        echo(&mut tunnel, Message::text("before")).await,
        Message::text("before")
    );

    // Overwrite both files in place, as `cp` or certbot's deploy hook does.
    let (cert_b, key_b) = ca.pair(&["localhost"]);
    dir.write("certs/tls.crt", &cert_b);
    dir.write("certs/tls.key", &key_b);
    let took = eventually(
        Duration::from_secs(2),
        "the new certificate served",
        || async { served_certificate(https, "localhost").await.as_ref() != Some(&first) },
    )
    .await;
    println!("rotated certificate served after {took:?}");
    let second = served_certificate(https, "localhost").await.unwrap();
    assert_eq!(
        echo(&mut tunnel, Message::text("after")).await,
        Message::text("after")
    );

    // A broken pair (a key of another certificate) is refused: the pair in
    // service stays, handshakes go on.
    let (_, key_other) = ca.pair(&["localhost"]);
    dir.write("certs/tls.key", &key_other);
    // Three polls settle a change; wait past them.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        served_certificate(https, "localhost").await,
        Some(second.clone())
    );
    let mut fresh = wss_connect_named(https, "localhost", "/ws/new", ca.client_config()).await;
    assert_eq!(
        echo(&mut fresh, Message::text("fresh")).await,
        Message::text("fresh")
    );

    // The Kubernetes Secret layout: the files are symlinks through `..data`,
    // and an update swaps `..data` to a new folder.
    let secret = dir.path().join("secret");
    let (cert_c, key_c) = ca.pair(&["localhost"]);
    for (version, (cert, key)) in [("..v1", (&cert_b, &key_b)), ("..v2", (&cert_c, &key_c))] {
        dir.write(&format!("secret/{version}/tls.crt"), cert);
        dir.write(&format!("secret/{version}/tls.key"), key);
    }
    std::os::unix::fs::symlink("..v1", secret.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{file}"), secret.join(file)).unwrap();
    }
    let tls = "{ cert = \"secret/tls.crt\", key = \"secret/tls.key\" }";
    let path = dir.route_file(&tls_route_file(backend.addr, tls, ""));
    within(
        proxy
            .proxy
            .reload_with(switchyard::config::Config::load(&path)),
    )
    .await
    .unwrap();
    assert_eq!(served_certificate(https, "localhost").await, Some(second));
    std::os::unix::fs::symlink("..v2", secret.join("..data_tmp")).unwrap();
    std::fs::rename(secret.join("..data_tmp"), secret.join("..data")).unwrap();
    let c_der: rustls::pki_types::CertificateDer<'static> =
        rustls::pki_types::pem::PemObject::from_pem_slice(cert_c.as_bytes()).unwrap();
    eventually(
        Duration::from_secs(2),
        "the swapped Secret served",
        || async { served_certificate(https, "localhost").await.as_ref() == Some(&c_der) },
    )
    .await;

    // Through all of it the first tunnel never noticed.
    assert_eq!(
        echo(&mut tunnel, Message::text("still")).await,
        Message::text("still")
    );
    assert!(backend.closes.lock().unwrap().is_empty());
    within(tunnel.close(None)).await.unwrap();
}
