//! Integration tests: real proxies, real backends, real clients, over
//! loopback sockets on port 0.

mod acme;
mod certs;
mod chat;
mod common;
mod forwarding;
mod hostile;
mod limits;
mod metrics;
mod pebble;
mod proxy_protocol;
mod reload;
mod slow;
mod static_files;
mod tls;
mod watch;
mod websocket;
