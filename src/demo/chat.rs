//! The embedded chat backend.
