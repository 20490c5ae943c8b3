//! Switchyard: a WebSocket-aware reverse proxy.
//!
//! It terminates TLS, routes requests by a TOML route file, relays WebSocket
//! upgrades and then their frames (headers read both ways, bytes never
//! changed), serves static files, and reloads its routes on SIGHUP (or when
//! the file changes) without dropping a connection; certificates come from
//! files it watches or from ACME.
//!
//! # Layout
//!
//! Read top-down, a request meets the modules in this order:
//!
//! - [`config`]: the route file, parsed ([`config`]`::raw`) then checked
//!   ([`config`]`::validate`) into a [`config::Config`] with `FILE:LINE:COL`
//!   errors.
//! - [`lifecycle`]: start, SIGHUP reload, SIGTERM drain; owns the sockets.
//! - [`state`]: what connections share; the swappable configuration
//!   [`state::Generation`].
//! - [`server`]: accept loops, then each connection in its own task: the
//!   connection cap, the PROXY header and per-address caps
//!   ([`server::accept`]), the TLS handshake ([`tls`]), then HTTP/1.1
//!   (`server::http1`) or, when ALPN chose `h2`, HTTP/2 (`server::http2`).
//! - [`certs`]: which certificate a handshake gets (SNI), and keeping them
//!   current: rotated files, ACME ([`certs::acme`]); [`watch`]: files that
//!   change on disk (certificates, the route file).
//! - [`io`]: the byte streams both sides use (client connections plain or
//!   TLS, what a tunnel needs of each end).
//! - [`router`]: scheme, host and longest-prefix matching, pure.
//! - [`proxy`]: one request: the head checks ([`proxy::checks`]),
//!   forwarding, the header policy ([`proxy::headers`]), the WebSocket
//!   handshake relay ([`proxy::upgrade`]) and its HTTP/2 form, RFC 8441
//!   ([`proxy::connect`]), redirect answers ([`proxy::redirect`]), then the
//!   route's rules on the response head.
//! - [`redirect`] (redirect targets) and [`header_rules`]
//!   (`response_headers`, `request_headers`): pure, checked when the route
//!   file is read.
//! - [`compress`]: which responses are compressed and how, and the
//!   streaming encoder ([`compress::body`]).
//! - [`upstream`]: talking to an upstream's servers: balancing
//!   ([`upstream::balance`]), each server's shared state, health and
//!   handshake queue, TLS and DNS to the servers, the upgrade's upstream leg
//!   ([`upstream::handshake`]), keep-alive connections ([`upstream::pool`]).
//! - [`ws`]: WebSocket tunnels after the `101`: the frame reader
//!   ([`ws::frame`]), the proxy's own frames ([`ws::close`]), pings
//!   ([`ws::liveness`]), the close handshake ([`ws::watch`]), the goodbye
//!   handle ([`ws::goodbye`]), one direction ([`ws::flow`]) and the tunnel
//!   ([`ws::relay`]).
//! - [`static_files`]: `root` routes.
//! - [`body`], [`access`], [`error`]: bodies, the access record, error
//!   responses; [`access_log`]: where access events go.
//! - [`metrics`] and [`admin`]: Prometheus series and the admin listener.
//! - [`workers`]: one single-threaded runtime per core; [`timer`]: each
//!   worker's coarse timeouts.
//! - [`telemetry`]: log set-up.
//! - [`demo`]: the built-in chat room demo; [`mod@bench`]: the load tool.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod access;
pub mod access_log;
pub mod admin;
pub mod bench;
pub mod body;
pub mod certs;
pub mod compress;
pub mod config;
pub mod demo;
pub mod error;
pub mod header_rules;
pub mod io;
pub mod lifecycle;
pub mod metrics;
pub mod proxy;
pub mod redirect;
pub mod router;
pub mod server;
pub mod state;
pub mod static_files;
pub mod telemetry;
pub mod timer;
pub mod tls;
pub mod upstream;
pub mod watch;
pub mod workers;
pub mod ws;
