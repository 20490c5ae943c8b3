//! WebSocket tunnels: what happens on a connection after its `101`.
//!
//! - [`relay`]: the tunnel itself, two byte streams spliced with an idle
//!   timeout, keep-alive probes and byte counters.

pub mod relay;
