//! WebSocket tunnels: what happens on a connection after its `101`.
//!
//! - [`frame`]: the streaming frame reader (RFC 6455 §5.2), pure.
//! - [`close`]: close codes and the frames the proxy writes itself.
//! - [`liveness`]: the proxy's pings as a pure state machine.
//! - [`watch`]: what the proxy says and hears in a tunnel (its frames, the
//!   close handshake), pure.
//! - [`goodbye`]: the handle that asks one tunnel to close; lifetimes.
//! - [`flow`]: one direction of a tunnel: read, frame, write on.
//! - [`wake`]: a waker per direction, so a wake-up runs the direction it
//!   is for.
//! - [`splice`]: both directions polled as one future.
//! - [`relay`]: the tunnel itself: the splice, one timer, the access event.

pub mod close;
pub mod flow;
pub mod frame;
pub mod goodbye;
pub mod liveness;
pub mod relay;
pub mod splice;
pub mod wake;
pub mod watch;
