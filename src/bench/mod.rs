//! `switchyard bench`: a WebSocket load tool.
