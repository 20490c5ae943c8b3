//! Switchyard: a WebSocket-aware reverse proxy.

pub mod bench;
pub mod demo;
