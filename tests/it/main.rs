//! Integration tests: real proxies, real backends, real clients, over
//! loopback sockets on port 0.

mod chat;
mod common;
mod forwarding;
mod metrics;
mod reload;
mod static_files;
mod tls;
mod websocket;
mod ws_config;
mod ws_frames;
