//! WebSocket tunnels: what happens on a connection after its `101`.
//!
//! - [`relay`]: the tunnel itself, two byte streams spliced with an idle
//!   timeout, keep-alive probes and byte counters.
//! - [`frame`]: where frames begin (for a tunnel that may have to say
//!   goodbye); [`close`]: the proxy's own Close frames.

pub mod close;
pub mod frame;
pub mod relay;
