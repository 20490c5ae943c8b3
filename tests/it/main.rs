//! Integration tests: real proxies, real backends, real clients, over
//! loopback sockets on port 0.

mod acme;
mod balance;
mod certs;
mod chat;
mod common;
mod compression;
mod fleet;
mod forwarding;
mod header_rules;
mod health;
mod hostile;
mod http2;
mod limits;
mod metrics;
mod pebble;
mod proxy_protocol;
mod queue;
mod rebalance;
mod redirects;
mod reload;
mod resolve;
mod route_keys;
mod series;
mod slow;
mod static_answers;
mod static_files;
mod tls;
mod upstream_tls;
mod watch;
mod websocket;
mod websocket_h2;
mod websocket_h2_frames;
mod ws_config;
mod ws_frames;
