//! Integration tests: real proxies, real backends, real clients, over
//! loopback sockets on port 0.

mod acme;
mod certs;
mod chat;
mod common;
mod compression;
mod forwarding;
mod header_rules;
mod metrics;
mod pebble;
mod redirects;
mod reload;
mod route_keys;
mod series;
mod static_answers;
mod static_files;
mod tls;
mod watch;
mod websocket;
