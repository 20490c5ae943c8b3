//! Integration tests: real proxies, real backends, real clients, over
//! loopback sockets on port 0.

mod common;
mod forwarding;
mod websocket;
