//! The open streams of one HTTP/2 connection, counted so the connection
//! knows when it is idle.
//!
//! A stream counts as open from the moment its request arrives until its
//! response body is done, or, for a WebSocket stream, until its tunnel
//! ends. An HTTP/2 connection with no open stream for
//! `client_header_timeout` is closed with a GOAWAY, as an idle HTTP/1.1
//! keep-alive connection is closed after the same time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How many streams of one connection are open, and since when none is.
#[derive(Debug)]
pub struct OpenStreams {
    origin: Instant,
    open: AtomicUsize,
    /// Milliseconds since `origin` at which the last open stream ended.
    idle_since_ms: AtomicU64,
}

impl OpenStreams {
    pub fn new() -> Arc<OpenStreams> {
        Arc::new(OpenStreams {
            origin: Instant::now(),
            open: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    /// Count one stream open until the returned guard is dropped.
    pub fn open(self: &Arc<Self>) -> StreamGuard {
        self.open.fetch_add(1, Ordering::Relaxed);
        StreamGuard(self.clone())
    }

    /// Streams open now.
    pub fn count(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Since when no stream is open; `None` while one is.
    pub fn idle_since(&self) -> Option<Instant> {
        if self.count() > 0 {
            return None;
        }
        let ms = self.idle_since_ms.load(Ordering::Relaxed);
        Some(self.origin + Duration::from_millis(ms))
    }
}

/// One open stream; dropping it closes the stream's count.
#[derive(Debug)]
pub struct StreamGuard(Arc<OpenStreams>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let streams = &self.0;
        // The instant first: the connection reads the count, then the instant.
        let ms = streams.origin.elapsed().as_millis() as u64;
        streams.idle_since_ms.store(ms, Ordering::Relaxed);
        streams.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_only_once_every_stream_ended() {
        let streams = OpenStreams::new();
        assert_eq!(streams.idle_since(), Some(streams.origin));
        let first = streams.open();
        let second = streams.open();
        assert_eq!(streams.count(), 2);
        assert_eq!(streams.idle_since(), None);
        drop(first);
        assert_eq!(streams.idle_since(), None);
        std::thread::sleep(Duration::from_millis(5));
        drop(second);
        let since = streams.idle_since().expect("idle");
        assert!(since >= streams.origin + Duration::from_millis(5));
        assert!(since <= Instant::now());
    }
}
