//! The embedded chat backend (placeholder until the chat module lands).

use std::path::Path;
use tokio_util::sync::CancellationToken;

pub async fn serve(
    _listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    shutdown.cancelled().await;
    Ok(())
}

pub fn write_static_assets(root: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(root.join("static"))
}
