//! Debian's `pebble`, the ACME test server by Let's Encrypt, as a child
//! process on loopback ports with a CA of its own: what the ACME tests
//! order certificates from. Its HTTPS certificate comes from the test's
//! [`TestCa`] (`certs/ca.crt` is then the route file's `directory_ca`).

use crate::common::*;
use bytes::Bytes;
use http_body_util::Full;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How a pebble is started.
#[derive(Debug, Clone, Default)]
pub struct PebbleOptions {
    /// Treat every challenge as solved (`PEBBLE_VA_ALWAYS_VALID`).
    pub always_valid: bool,
    /// Validity of the certificates it issues, in seconds (its default
    /// is five years).
    pub validity_secs: Option<u64>,
    /// Where it checks TLS-ALPN-01 and HTTP-01 answers (the proxy's ports).
    pub tls_port: Option<u16>,
    pub http_port: Option<u16>,
}

pub struct Pebble {
    child: Child,
    pub directory: String,
    pub management: SocketAddr,
    /// The output lines it printed so far.
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

/// A loopback port free right now (for programs that cannot be told 0).
pub fn free_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("addr").port()
}

impl Pebble {
    /// Start pebble with its HTTPS certificate from `certs/server.*` of
    /// `dir` (see [`TestCa::create`]).
    pub async fn start(dir: &TestDir, options: PebbleOptions) -> Pebble {
        let (acme, management) = (free_port(), free_port());
        let mut settings = serde_json::json!({
            "listenAddress": format!("127.0.0.1:{acme}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.path().join("certs/server.crt"),
            "privateKey": dir.path().join("certs/server.key"),
            "httpPort": options.http_port.unwrap_or_else(free_port),
            "tlsPort": options.tls_port.unwrap_or_else(free_port),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        });
        if let Some(secs) = options.validity_secs {
            settings["certificateValidityPeriod"] = secs.into();
        }
        let config = dir.write(
            "pebble.json",
            serde_json::to_vec(&serde_json::json!({ "pebble": settings })).unwrap(),
        );
        let mut command = Command::new("pebble");
        command
            .arg("-config")
            .arg(&config)
            .arg("-strict=false")
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if options.always_valid {
            command.env("PEBBLE_VA_ALWAYS_VALID", "1");
        }
        let mut child = command
            .spawn()
            .expect("pebble runs (apt-get install pebble)");
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let log2 = log.clone();
        let listening = [
            format!("Listening on: 127.0.0.1:{acme}"),
            format!("Management interface listening on: 127.0.0.1:{management}"),
        ];
        let mut heard = [false, false];
        tokio::spawn(async move {
            let mut out = BufReader::new(stdout).lines();
            let mut err = BufReader::new(stderr).lines();
            loop {
                let line = tokio::select! {
                    Ok(Some(line)) = out.next_line() => line,
                    Ok(Some(line)) = err.next_line() => line,
                    else => break,
                };
                for (i, expected) in listening.iter().enumerate() {
                    heard[i] |= line.contains(expected.as_str());
                }
                if heard == [true, true]
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(());
                }
                log2.lock().unwrap().push(line);
            }
        });
        if within(ready_rx).await.is_err() {
            panic!("pebble did not start:\n{}", log.lock().unwrap().join("\n"));
        }
        Pebble {
            child,
            directory: format!("https://localhost:{acme}/dir"),
            management: format!("127.0.0.1:{management}").parse().unwrap(),
            log,
        }
    }

    /// Pebble's root certificate (it makes a new one at every start).
    pub async fn root(&self, ca: &TestCa) -> rustls::pki_types::CertificateDer<'static> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        // Pebble says its management port listens a moment before it does.
        let config = ca.client_config();
        eventually(STEP, "pebble's management port", || async {
            tls_connect(self.management, config.clone()).await.is_ok()
        })
        .await;
        let stream = tls_connect(self.management, config)
            .await
            .expect("pebble management TLS");
        let req = http::Request::get("/roots/0")
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let got = send_on(stream, req).await;
        assert_eq!(got.status, http::StatusCode::OK);
        CertificateDer::from_pem_slice(&got.body).expect("a PEM root")
    }

    /// Stop it now.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = within(self.child.wait()).await;
    }
}

/// A client trusting only `root`, offering `http/1.1`.
pub fn trusting(root: &rustls::pki_types::CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).expect("root");
    let mut config = rustls::ClientConfig::builder_with_provider(switchyard::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}
