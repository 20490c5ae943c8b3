//! The embedded chat backend of `switchyard demo`: the chat room of the seed
//! tutorial (koa + the Node `ws` package), as a plain HTTP/1.1 server.
//!
//! Users sign in by name and get a `name` cookie; the room page opens a
//! WebSocket to `/ws/chat`, and the server broadcasts `join`, `list`, `chat`
//! and `left` JSON messages. The proxy in front serves `/static/` from the
//! files written by [`write_static_assets`], relays `/ws/` upgrades and
//! forwards everything else here.
//!
//! Layout:
//! - `server`: accept loop, connection tasks, shutdown ([`serve`]).
//! - `routes`: HTTP routing, sign-in and sign-out, the pages.
//! - `handshake`: checking a WebSocket upgrade request, the `101` answer.
//! - `client`: one WebSocket client, from handshake to close frame.
//! - `room`: membership, message ids, non-blocking broadcast.
//! - `message`: the JSON wire format.
//! - `user`: the user and its cookie.
//! - `form`: URL-encoded form parsing.
//! - `assets`: the embedded page files ([`write_static_assets`]).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod assets;
mod client;
mod form;
mod handshake;
mod message;
mod room;
mod routes;
mod server;
mod user;

pub use assets::write_static_assets;
pub use server::serve;
