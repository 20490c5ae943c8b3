//! The built-in demo: the seed tutorial's chat room behind the proxy.

pub mod chat;
