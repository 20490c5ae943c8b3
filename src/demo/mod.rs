//! `switchyard demo`: the seed tutorial's chat room, behind the proxy, with
//! nothing to install or configure.
//!
//! It starts the embedded chat backend ([`chat`]) on a loopback port, makes
//! a self-signed certificate for `localhost`, writes the page assets and a
//! route file into a temporary folder, and runs the proxy on that file:
//! `/static/` from the folder, `/ws/` upgraded to the backend, everything
//! else proxied. The route file is an ordinary one: the demo prints its
//! path, and `switchyard run -c` accepts it as is.
//!
//! SIGUSR1 restarts the proxy side on the same ports (the backend stays):
//! the drain says goodbye to every tunnel with Close 1001, and the page
//! shows how a client reconnects.

pub mod chat;

use crate::config::{Config, Scheme};
use crate::error::RunError;
use crate::lifecycle::{Asked, Proxy, Signals};
use std::path::Path;
use tokio::signal::unix::SignalKind;
use tokio_util::sync::CancellationToken;

/// What can stop the demo from starting.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot prepare the demo files: {0}")]
    Files(#[from] std::io::Error),
    #[error("cannot make the demo certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("the generated route file is invalid (a bug):\n{0}")]
    Config(#[from] crate::config::ConfigErrors),
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Run the demo until SIGTERM/SIGINT. Port 0 picks a free port.
pub async fn run(port: u16, tls_port: u16) -> Result<(), DemoError> {
    let folder = tempfile::Builder::new()
        .prefix("switchyard-demo-")
        .tempdir()?;
    let dir = folder.path();
    chat::write_static_assets(dir)?;
    write_certificate(dir)?;

    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let backend_addr = backend.local_addr()?;
    let stop_backend = CancellationToken::new();
    let chat = tokio::spawn(chat::serve(backend, stop_backend.clone()));

    let route_file = dir.join("switchyard.toml");
    std::fs::write(
        &route_file,
        route_file_text(port, tls_port, &backend_addr.to_string()),
    )?;
    let mut signals = Signals::install()?;
    let mut restart =
        tokio::signal::unix::signal(SignalKind::user_defined1()).map_err(RunError::Signals)?;
    let mut proxy = Proxy::start(Config::load(&route_file)?).await?;
    // Restarts bind the ports the first start picked.
    let port_of = |wanted: Scheme, listeners: &[(std::net::SocketAddr, Scheme)]| {
        listeners
            .iter()
            .find(|(_, scheme)| *scheme == wanted)
            .map_or(0, |(addr, _)| addr.port())
    };
    let listeners = proxy.listeners().await;
    std::fs::write(
        &route_file,
        route_file_text(
            port_of(Scheme::Http, &listeners),
            port_of(Scheme::Https, &listeners),
            &backend_addr.to_string(),
        ),
    )?;

    println!();
    println!("  Switchyard demo: the chat room of the WebSocket tutorial, behind the proxy.");
    println!();
    for (addr, scheme) in listeners {
        let url = format!("{scheme}://localhost:{}/", addr.port());
        match scheme {
            Scheme::Http => println!("    open  {url}    (WebSocket over ws://)"),
            Scheme::Https => println!(
                "    open  {url}    (HTTP/2, WebSocket over wss:// on the same connection; self-signed certificate: accept the browser's warning)"
            ),
        }
    }
    println!();
    println!("  Sign in with two names in two browsers (or one private window) and chat.");
    println!(
        "  Chat backend: http://{backend_addr}   Route file: {}",
        route_file.display()
    );
    println!(
        "  `kill -USR1 {}` restarts the proxy side: the rooms get Close 1001 and reconnect.",
        std::process::id()
    );
    println!("  Press Ctrl-C to stop.");
    println!();

    let result = loop {
        tokio::select! {
            asked = signals.next() => match asked {
                Asked::Reload => proxy.reload_logged().await,
                // The demo logs to stderr; SIGUSR1 restarts its proxy side.
                Asked::ReopenLog => {}
                Asked::Stop => {
                    tracing::info!("stop signal received");
                    break Ok(());
                }
            },
            _ = restart.recv() => {
                tracing::info!("restarting the proxy side");
                proxy.shutdown().await;
                drop(proxy);
                proxy = match Proxy::start(Config::load(&route_file)?).await {
                    Ok(proxy) => proxy,
                    Err(e) => {
                        stop_backend.cancel();
                        let _ = chat.await;
                        return Err(e.into());
                    }
                };
                tracing::info!("proxy side restarted");
            }
        }
    };
    proxy.shutdown().await;
    stop_backend.cancel();
    let _ = chat.await;
    result
}

/// The route file the demo runs on: the seed tutorial's nginx block, as
/// Switchyard routes.
fn route_file_text(port: u16, tls_port: u16, backend: &str) -> String {
    format!(
        r#"# Generated by `switchyard demo`.
[server]
shutdown_timeout = "2s"

[[listener]]
bind = "127.0.0.1:{port}"

[[listener]]
bind = "127.0.0.1:{tls_port}"
tls = {{ cert = "certs/demo.crt", key = "certs/demo.key" }}

[upstream.chat]
servers = ["{backend}"]

[[route]]
path = "/static/"
root = "."

[[route]]
path = "/ws/"
upstream = "chat"
idle_timeout = "1h"

[[route]]
path = "/"
upstream = "chat"
"#
    )
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, made now.
fn write_certificate(dir: &Path) -> Result<(), DemoError> {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let certified = rcgen::generate_simple_self_signed(names)?;
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs)?;
    std::fs::write(certs.join("demo.crt"), certified.cert.pem())?;
    std::fs::write(
        certs.join("demo.key"),
        certified.signing_key.serialize_pem(),
    )?;
    Ok(())
}
