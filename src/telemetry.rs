//! Logging set-up: `tracing` events as text or JSON on stderr, access
//! events where `access_log` says ([`crate::access_log`]).
//!
//! The level comes from `RUST_LOG` (default `info`); `log_format` in the
//! route file picks text or JSON. Access events use the `access` target, so
//! `RUST_LOG=info,access=off` silences them.

use crate::access_log::{self, AccessLayer};
use crate::config::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, filter};

/// Install the global subscriber. Later calls (tests) are ignored.
pub fn init(format: LogFormat) {
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Access events reach stderr only while `access_log = "stderr"`.
    let stderr_wants =
        filter::filter_fn(|meta| meta.target() != access_log::TARGET || access_log::to_stderr());
    let ansi = std::io::stderr().is_terminal();
    let registry = tracing_subscriber::registry().with(env).with(AccessLayer);
    let _ = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr)
                    .with_filter(stderr_wants),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_ansi(false)
                    .with_writer(std::io::stderr)
                    .with_filter(stderr_wants),
            )
            .try_init(),
    };
}
