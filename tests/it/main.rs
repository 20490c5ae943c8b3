//! Integration tests: real proxies, real backends, real clients, over
//! loopback sockets on port 0.

mod acme;
mod certs;
mod chat;
mod common;
mod forwarding;
mod metrics;
mod pebble;
mod reload;
mod static_files;
mod tls;
mod watch;
mod websocket;
mod ws_config;
mod ws_frames;
