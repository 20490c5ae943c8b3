//! One direction of a tunnel: read into the worker's scratch buffer, frame
//! what was read ([`Reader`]), write it on, and put the proxy's own frames
//! in at frame boundaries.
//!
//! The common case costs what a byte splice costs: one read, a header
//! parse per frame, one write of the very bytes read. Bytes stay in the
//! scratch buffer; only when the writer cannot take them all does the rest
//! move to a buffer of the flow's own until it drains. A header or a frame
//! read whole that the end of a read cuts (at most
//! [`MAX_PARTIAL`](super::frame::MAX_PARTIAL) bytes) is kept back and put
//! in front of the next read, so it crosses in the same write as what
//! follows it.

use super::frame::{Payload, Reader, Stop};
use super::liveness::Side;
use super::watch::{Ending, Watch};
use crate::io::End;
use crate::metrics::RouteStats;
use bytes::Bytes;
use std::cell::RefCell;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, ReadBuf};

/// Bytes read per call, into the worker's scratch buffer.
const CHUNK: usize = 64 * 1024;
/// Reads per direction per poll before yielding to other tasks.
const READS_PER_POLL: usize = 16;

thread_local! {
    /// Each worker's read buffer, shared by all its tunnels: a poll uses it
    /// and leaves nothing in it, so idle tunnels hold no buffer at all.
    static SCRATCH: RefCell<Box<[MaybeUninit<u8>]>> =
        RefCell::new(vec![MaybeUninit::uninit(); CHUNK].into_boxed_slice());
}

pub enum FlowError {
    Read(io::Error),
    Write(io::Error),
}

/// One direction of a tunnel.
pub struct Flow {
    /// The side this direction reads from.
    pub from: Side,
    pub reader: Reader,
    /// Bytes to write before anything else: `pending[..framed]` were
    /// framed already, the rest not yet.
    pending: Bytes,
    framed: usize,
    /// The start of a unit the reader needs whole, cut by a read's end.
    carry: Vec<u8>,
    /// The reader reached end-of-stream.
    pub eof: bool,
    /// Bytes were written since the last flush.
    unflushed: bool,
    /// The proxy wrote its own Close this way: nothing else goes.
    pub shut: bool,
    /// Total bytes read from this direction's reader.
    pub bytes: u64,
    /// Messages already counted in the metrics.
    counted: u64,
    /// Since last asked: bytes were read, and bytes of the peer's written.
    pub heard: bool,
    pub moved: bool,
}

impl Flow {
    /// The direction from `from`, starting with `early`, bytes the HTTP
    /// parser read behind the handshake; `limit`: the largest message.
    pub fn new(from: Side, early: Bytes, limit: u64) -> Flow {
        Flow {
            from,
            reader: Reader::new(limit),
            pending: early,
            framed: 0,
            carry: Vec::new(),
            eof: false,
            unflushed: false,
            shut: false,
            bytes: 0,
            counted: 0,
            heard: false,
            moved: false,
        }
    }

    /// Whether everything this direction took on was written.
    pub fn drained(&self) -> bool {
        self.pending.is_empty()
    }

    /// Move bytes until `from` has nothing more for now. Ready(Ok) once
    /// `from` ended and the end was passed on to `to`. The metrics hear of
    /// every read before its bytes are written on, so they never lag
    /// behind what the other side has received.
    pub fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        watch: &mut Watch,
        stats: Option<&RouteStats>,
    ) -> Poll<Result<(), FlowError>>
    where
        R: AsyncRead + Unpin,
        W: End,
    {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            self.run(cx, from, to, watch, stats, &mut scratch[..])
        })
    }

    fn run<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        watch: &mut Watch,
        stats: Option<&RouteStats>,
        chunk: &mut [MaybeUninit<u8>],
    ) -> Poll<Result<(), FlowError>>
    where
        R: AsyncRead + Unpin,
        W: End,
    {
        let towards = self.from.other();
        for _ in 0..READS_PER_POLL {
            // Whatever the writer refused last time goes first.
            if !self.pending.is_empty() {
                let pending = std::mem::take(&mut self.pending);
                let framed = std::mem::take(&mut self.framed);
                ready!(self.write(cx, to, &pending[..framed], &pending[framed..]))?;
                ready!(self.pass_on(cx, to, &pending[framed..], watch, stats))?;
            }
            if watch.wants(towards) && self.reader.at_boundary() {
                ready!(self.own_frame(cx, to, watch, &[]))?;
            }
            if self.eof {
                ready!(Pin::new(&mut *to).poll_flush(cx)).map_err(FlowError::Write)?;
                if to.shutdown_before_close() {
                    ready!(Pin::new(&mut *to).poll_shutdown(cx)).map_err(FlowError::Write)?;
                }
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::uninit(chunk);
            let carried = self.carry.len();
            if carried > 0 {
                buf.put_slice(&self.carry);
            }
            match Pin::new(&mut *from).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(FlowError::Read(e))),
                Poll::Pending => {
                    if self.unflushed {
                        match Pin::new(&mut *to).poll_flush(cx) {
                            Poll::Ready(Ok(())) => self.unflushed = false,
                            Poll::Ready(Err(e)) => return Poll::Ready(Err(FlowError::Write(e))),
                            Poll::Pending => {}
                        }
                    }
                    return Poll::Pending;
                }
            }
            self.carry.clear();
            let data = buf.filled();
            let read = (data.len() - carried) as u64;
            if read == 0 {
                // End of stream: a cut unit passes on as it is.
                self.eof = true;
                watch.eof(self.from);
                if carried > 0 && !self.shut {
                    ready!(self.write(cx, to, data, &[]))?;
                }
                continue;
            }
            self.bytes += read;
            self.heard = true;
            if let Some(stats) = stats {
                stats.tunnel_bytes(self.from == Side::Client, read);
            }
            ready!(self.pass_on(cx, to, data, watch, stats))?;
        }
        // Budget used up: let other tasks run, then continue.
        if self.unflushed && Pin::new(&mut *to).poll_flush(cx).is_ready() {
            self.unflushed = false;
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Frame `input` and write it on, the proxy's frames at the boundaries
    /// where they are wanted. Ready once all of it was written, dropped or
    /// kept back as a cut unit.
    #[inline(always)]
    fn pass_on<W: End>(
        &mut self,
        cx: &mut Context<'_>,
        to: &mut W,
        input: &[u8],
        watch: &mut Watch,
        stats: Option<&RouteStats>,
    ) -> Poll<Result<(), FlowError>> {
        let towards = self.from.other();
        let mut pos = 0;
        loop {
            let scan = self.reader.scan(&input[pos..], watch.wants(towards));
            let end = pos + scan.pass;
            if self.reader.messages != self.counted {
                if let Some(stats) = stats {
                    let new = self.reader.messages - self.counted;
                    stats.tunnel_messages(self.from == Side::Client, new);
                }
                self.counted = self.reader.messages;
            }
            if end > pos && !self.shut {
                self.moved = true;
                ready!(self.write(cx, to, &input[pos..end], &input[end..]))?;
            }
            pos = end;
            match scan.stop {
                Stop::End => return Poll::Ready(Ok(())),
                Stop::Partial => {
                    self.carry.extend_from_slice(&input[pos..]);
                    return Poll::Ready(Ok(()));
                }
                Stop::Boundary => ready!(self.own_frame(cx, to, watch, &input[pos..]))?,
                Stop::Control { len, opcode } => {
                    let frame = &input[pos..pos + len];
                    pos += len;
                    let payload = Payload::of(frame);
                    if watch.control(self.from, opcode, &payload, self.shut) {
                        self.moved = true;
                        ready!(self.write(cx, to, frame, &input[pos..]))?;
                    }
                }
                Stop::TooBig => {
                    // Nothing of this frame has passed: the Close goes
                    // right here, at its start.
                    watch.begin(Ending::TooBig);
                    self.reader.unlimit();
                }
            }
        }
    }

    /// Write the proxy's frame due this way; `rest` is what follows it,
    /// not framed yet.
    fn own_frame<W: End>(
        &mut self,
        cx: &mut Context<'_>,
        to: &mut W,
        watch: &mut Watch,
        rest: &[u8],
    ) -> Poll<Result<(), FlowError>> {
        let Some((frame, is_close)) = watch.take(self.from.other()) else {
            return Poll::Ready(Ok(()));
        };
        if self.shut {
            return Poll::Ready(Ok(()));
        }
        self.shut = is_close;
        self.write(cx, to, frame.as_bytes(), rest)
    }

    /// Write `bytes` whole. When the writer pushes back, the unwritten
    /// part and `rest` (not framed yet) wait in `pending`.
    #[inline(always)]
    fn write<W: End>(
        &mut self,
        cx: &mut Context<'_>,
        to: &mut W,
        bytes: &[u8],
        rest: &[u8],
    ) -> Poll<Result<(), FlowError>> {
        let mut written = 0;
        while written < bytes.len() {
            match Pin::new(&mut *to).poll_write(cx, &bytes[written..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(FlowError::Write(io::ErrorKind::WriteZero.into())));
                }
                Poll::Ready(Ok(n)) => {
                    written += n;
                    self.unflushed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(FlowError::Write(e))),
                Poll::Pending => {
                    let mut kept = Vec::with_capacity(bytes.len() - written + rest.len());
                    kept.extend_from_slice(&bytes[written..]);
                    kept.extend_from_slice(rest);
                    self.framed = bytes.len() - written;
                    self.pending = Bytes::from(kept);
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Flush what was written (and close a TLS stream's write side) at the
    /// end of the tunnel.
    pub fn poll_finish<W: End>(&mut self, cx: &mut Context<'_>, to: &mut W) -> Poll<()> {
        if ready!(Pin::new(&mut *to).poll_flush(cx)).is_ok() && to.shutdown_before_close() {
            let _ = ready!(Pin::new(&mut *to).poll_shutdown(cx));
        }
        Poll::Ready(())
    }
}
