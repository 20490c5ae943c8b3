//! The streaming WebSocket frame reader (RFC 6455 §5.2): where frames
//! begin and end in a byte stream, read without holding payloads.
//!
//! A tunnel runs one [`Reader`] per direction over the bytes it relays. The
//! reader parses each frame header (FIN, RSV1-3, opcode, mask bit, 7/16/64-
//! bit length, masking key) and then counts the payload through without
//! looking at it: payloads are neither held nor unmasked. Control frames
//! between the fragments of a data message (§5.4) are just frames like the
//! others. Only two kinds of frame are read whole, because the proxy must
//! know what they say: close frames (code and reason, §5.5.1) and pongs of
//! the length of the proxy's own ping payload (to tell its own answers from
//! the peers'). Both are at most 139 bytes (131 when the length is
//! encoded in the fewest bytes, as §5.2 demands).
//!
//! The reader works on what the relay has just read and tells it, with a
//! [`Scan`], how far the bytes may pass on unchanged and why it stopped.
//! Where a header, or one of the frames read whole, is cut by the end of
//! the input, it stops in front of it ([`Stop::Partial`]); the relay keeps
//! those few bytes and puts them in front of its next read, so the reader
//! itself keeps no bytes and a split at any point costs nothing more.
//!
//! The reader never fails. Bytes that break the protocol (a reserved
//! opcode, an unmasked client frame, an over-long control frame, a 64-bit
//! length with its top bit set) are framed as well as they can be and pass
//! on: the proxy stays transparent, and rejecting a violation is the
//! receiving peer's business.

/// Frame opcodes (RFC 6455 §5.2).
pub mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// The longest a control frame's payload may be (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The most bytes a [`Stop::Partial`] ever leaves, and the longest frame a
/// [`Stop::Control`] reads whole: a control frame of 125 payload bytes
/// whose length a peer encoded in 64 bits (10 header bytes, against §5.2's
/// fewest-bytes rule, but framed all the same) and a 4-byte mask. A cut
/// header alone is at most 13.
pub const MAX_PARTIAL: usize = 10 + 4 + MAX_CONTROL_PAYLOAD;

/// One frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    /// RSV1, RSV2, RSV3 as the top three bits of a nibble (`0b0100` = RSV1).
    pub rsv: u8,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub len: u64,
}

impl Header {
    /// The header at the start of `bytes` and its length in bytes, or
    /// `None` when `bytes` ends inside it.
    #[inline]
    pub fn parse(bytes: &[u8]) -> Option<(Header, usize)> {
        let (&b0, rest) = bytes.split_first()?;
        let &b1 = rest.first()?;
        let masked = b1 & 0x80 != 0;
        let (len, mut at) = match b1 & 0x7F {
            126 => (u64::from(u16::from_be_bytes(array(bytes, 2)?)), 4),
            127 => (u64::from_be_bytes(array(bytes, 2)?), 10),
            short => (u64::from(short), 2),
        };
        let mask = if masked {
            let key = array(bytes, at)?;
            at += 4;
            Some(key)
        } else {
            None
        };
        let header = Header {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x7,
            opcode: b0 & 0x0F,
            mask,
            len,
        };
        Some((header, at))
    }

    /// Close, ping, pong and the reserved control opcodes (§5.5).
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }

    /// Text, binary and continuation frames: the parts of messages.
    pub fn is_data(&self) -> bool {
        self.opcode <= opcode::BINARY
    }
}

#[inline]
fn array<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at + N)?.try_into().ok()
}

/// Unmask `payload` in place with `key`, the mask starting at `offset`
/// bytes into the payload (§5.3).
pub fn unmask(payload: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= key[(offset + i) % 4];
    }
}

/// The payload of a control frame read whole, unmasked.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    bytes: [u8; MAX_CONTROL_PAYLOAD],
    len: u8,
}

impl Payload {
    /// The unmasked payload of `frame`, a whole control frame.
    pub fn of(frame: &[u8]) -> Payload {
        match Header::parse(frame) {
            Some((header, at)) => {
                let end = frame
                    .len()
                    .min(at + header.len.min(MAX_CONTROL_PAYLOAD as u64) as usize);
                Payload::unmasked(&frame[at..end], header.mask)
            }
            None => Payload::unmasked(&[], None),
        }
    }

    fn unmasked(masked: &[u8], key: Option<[u8; 4]>) -> Payload {
        let mut bytes = [0; MAX_CONTROL_PAYLOAD];
        let len = masked.len().min(MAX_CONTROL_PAYLOAD);
        bytes[..len].copy_from_slice(&masked[..len]);
        if let Some(key) = key {
            unmask(&mut bytes[..len], key, 0);
        }
        Payload {
            bytes,
            len: len as u8,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({:?})", String::from_utf8_lossy(self.as_slice()))
    }
}

/// What a [`Reader::scan`] found: `input[..pass]` passes on unchanged,
/// then `stop` says why the scan ended there.
#[derive(Debug, PartialEq, Eq)]
pub struct Scan {
    pub pass: usize,
    pub stop: Stop,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// Everything was scanned (`pass` is the input's length).
    End,
    /// `input[pass..]` begins a header or a frame the reader needs whole:
    /// scan it again with the bytes that follow it.
    Partial,
    /// A frame boundary, where the caller asked to stop at one.
    Boundary,
    /// `input[pass..pass + len]` is a close frame or a candidate pong, read
    /// whole ([`Payload::of`] unmasks it); the caller decides whether it
    /// passes, then scans on after it.
    Control { len: usize, opcode: u8 },
    /// The data frame starting at `pass` would take its message past the
    /// limit. Nothing from it on was scanned.
    TooBig,
}

/// One direction's framing state. Small and copy-free: an idle tunnel
/// holds two of these.
#[derive(Debug, Clone)]
pub struct Reader {
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// Payload bytes so far of the data message in progress.
    message: u64,
    /// The largest message this direction may carry.
    limit: u64,
    /// Pongs of this payload length are read whole (0: none are).
    pong_len: u8,
    /// Data messages whose final frame has begun.
    pub messages: u64,
}

impl Default for Reader {
    fn default() -> Self {
        Reader::new(u64::MAX)
    }
}

impl Reader {
    /// A reader at the start of a stream, for messages up to `limit` bytes.
    pub fn new(limit: u64) -> Reader {
        Reader {
            remaining: 0,
            message: 0,
            limit,
            pong_len: 0,
            messages: 0,
        }
    }

    /// Read pongs whose payload is `len` bytes long whole (the length of
    /// the proxy's own ping payload).
    pub fn watch_pongs(&mut self, len: usize) {
        self.pong_len = len.min(MAX_CONTROL_PAYLOAD) as u8;
    }

    /// Lift the message limit (after it was hit, the rest is only framed).
    pub fn unlimit(&mut self) {
        self.limit = u64::MAX;
    }

    /// Whether the stream is between two frames.
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// Scan `input`, the next bytes of the stream (after whatever a
    /// previous [`Stop::Partial`] left, put back in front). With
    /// `to_boundary`, stop at the first frame boundary (where the proxy may
    /// write a frame of its own), even at the very start.
    #[inline(always)]
    pub fn scan(&mut self, input: &[u8], to_boundary: bool) -> Scan {
        let len = input.len();
        let mut pos = 0;
        if self.remaining > 0 {
            if (len as u64) < self.remaining {
                self.remaining -= len as u64;
                return Scan {
                    pass: len,
                    stop: Stop::End,
                };
            }
            pos = self.remaining as usize;
            self.remaining = 0;
        }
        loop {
            if pos == len {
                return Scan {
                    pass: len,
                    stop: Stop::End,
                };
            }
            if to_boundary {
                return Scan {
                    pass: pos,
                    stop: Stop::Boundary,
                };
            }
            let Some((b0, payload, header)) = head(&input[pos..]) else {
                return Scan {
                    pass: pos,
                    stop: Stop::Partial,
                };
            };
            let opcode = b0 & 0x0F;
            if opcode <= opcode::BINARY {
                let size = if opcode == opcode::CONTINUATION {
                    self.message.saturating_add(payload)
                } else {
                    payload
                };
                if size > self.limit {
                    return Scan {
                        pass: pos,
                        stop: Stop::TooBig,
                    };
                }
                if b0 & 0x80 != 0 {
                    self.message = 0;
                    self.messages += 1;
                } else {
                    self.message = size;
                }
            } else if payload <= MAX_CONTROL_PAYLOAD as u64
                && (opcode == opcode::CLOSE
                    || (opcode == opcode::PONG
                        && self.pong_len != 0
                        && payload == u64::from(self.pong_len)))
            {
                let whole = header + payload as usize;
                if len - pos < whole {
                    return Scan {
                        pass: pos,
                        stop: Stop::Partial,
                    };
                }
                return Scan {
                    pass: pos,
                    stop: Stop::Control { len: whole, opcode },
                };
            }
            let left = (len - pos - header) as u64;
            if left < payload {
                self.remaining = payload - left;
                return Scan {
                    pass: len,
                    stop: Stop::End,
                };
            }
            pos += header + payload as usize;
        }
    }
}

/// The first byte, payload length and header length of the frame at the
/// start of `bytes`, if its header is all there: [`Header::parse`] without
/// the parts the hot path does not need.
#[inline(always)]
fn head(bytes: &[u8]) -> Option<(u8, u64, usize)> {
    let (&b0, rest) = bytes.split_first()?;
    let &b1 = rest.first()?;
    let mask = usize::from(b1 >> 7) * 4;
    let (payload, header) = match b1 & 0x7F {
        126 => (u64::from(u16::from_be_bytes(array(bytes, 2)?)), 4 + mask),
        127 => (u64::from_be_bytes(array(bytes, 2)?), 10 + mask),
        short => (u64::from(short), 2 + mask),
    };
    (bytes.len() >= header).then_some((b0, payload, header))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A frame as a test writes it.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct TestFrame {
        fin: bool,
        rsv: u8,
        opcode: u8,
        mask: Option<[u8; 4]>,
        payload: Vec<u8>,
    }

    impl TestFrame {
        fn new(opcode: u8, fin: bool, payload: Vec<u8>, mask: Option<[u8; 4]>) -> TestFrame {
            TestFrame {
                fin,
                rsv: 0,
                opcode,
                mask,
                payload,
            }
        }

        fn encode(&self) -> Vec<u8> {
            let mut out = vec![(u8::from(self.fin) << 7) | (self.rsv << 4) | self.opcode];
            let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
            let len = self.payload.len();
            if len < 126 {
                out.push(mask_bit | len as u8);
            } else if len <= 0xFFFF {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            } else {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
            let mut payload = self.payload.clone();
            if let Some(key) = self.mask {
                out.extend_from_slice(&key);
                unmask(&mut payload, key, 0);
            }
            out.extend_from_slice(&payload);
            out
        }
    }

    /// Frames read whole: opcode and unmasked payload.
    type Controls = Vec<(u8, Vec<u8>)>;

    /// What the relay does with a reader: feed chunks, pass bytes on, keep
    /// partial units for the next chunk. Returns the bytes passed on, the
    /// frames read whole and where each of those ended.
    fn relay_like(reader: &mut Reader, chunks: &[&[u8]]) -> (Vec<u8>, Controls, Vec<usize>) {
        let mut passed = Vec::new();
        let mut controls = Vec::new();
        let mut boundaries = Vec::new();
        let mut carry: Vec<u8> = Vec::new();
        for chunk in chunks {
            let mut input = std::mem::take(&mut carry);
            input.extend_from_slice(chunk);
            let mut pos = 0;
            loop {
                // Ask for a boundary now and then, as pings do.
                let scan = reader.scan(&input[pos..], false);
                passed.extend_from_slice(&input[pos..pos + scan.pass]);
                pos += scan.pass;
                match scan.stop {
                    Stop::End => break,
                    Stop::Partial => {
                        assert!(input.len() - pos <= MAX_PARTIAL);
                        carry = input[pos..].to_vec();
                        break;
                    }
                    Stop::Boundary => unreachable!(),
                    Stop::Control { len, opcode } => {
                        let frame = &input[pos..pos + len];
                        passed.extend_from_slice(frame);
                        controls.push((opcode, Payload::of(frame).as_slice().to_vec()));
                        pos += len;
                        boundaries.push(passed.len());
                    }
                    Stop::TooBig => panic!("no limit here"),
                }
            }
        }
        passed.extend_from_slice(&carry);
        (passed, controls, boundaries)
    }

    fn corpus() -> Vec<TestFrame> {
        let key = Some([0x37, 0xfa, 0x21, 0x3d]);
        let bytes = |n: usize| (0..n).map(|i| (i * 7 % 256) as u8).collect::<Vec<u8>>();
        let mut close = 1000u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"bye now");
        let mut frames = Vec::new();
        for mask in [None, key] {
            for n in [0, 1, 125, 126, 65535, 65536] {
                frames.push(TestFrame::new(opcode::BINARY, true, bytes(n), mask));
            }
            frames.push(TestFrame::new(opcode::TEXT, false, b"frag".to_vec(), mask));
            frames.push(TestFrame::new(opcode::PING, true, b"ping!".to_vec(), mask));
            frames.push(TestFrame::new(
                opcode::CONTINUATION,
                false,
                b"men".to_vec(),
                mask,
            ));
            frames.push(TestFrame::new(opcode::PONG, true, b"0123".to_vec(), mask));
            frames.push(TestFrame::new(
                opcode::CONTINUATION,
                true,
                b"ted".to_vec(),
                mask,
            ));
            frames.push(TestFrame::new(opcode::CLOSE, true, Vec::new(), mask));
            frames.push(TestFrame::new(opcode::CLOSE, true, close.clone(), mask));
            let mut deflated = TestFrame::new(opcode::TEXT, true, bytes(40), mask);
            deflated.rsv = 0b100;
            frames.push(deflated);
        }
        frames
    }

    #[test]
    fn headers_of_every_length_form() {
        for (frame, header_len) in [
            (TestFrame::new(opcode::TEXT, true, vec![1; 125], None), 2),
            (TestFrame::new(opcode::TEXT, true, vec![1; 126], None), 4),
            (TestFrame::new(opcode::TEXT, true, vec![1; 65535], None), 4),
            (TestFrame::new(opcode::TEXT, true, vec![1; 65536], None), 10),
            (
                TestFrame::new(opcode::BINARY, false, vec![1; 3], Some([1, 2, 3, 4])),
                6,
            ),
        ] {
            let bytes = frame.encode();
            let (header, len) = Header::parse(&bytes).unwrap();
            assert_eq!(len, header_len);
            assert_eq!(header.len as usize, frame.payload.len());
            assert_eq!(header.fin, frame.fin);
            assert_eq!(header.opcode, frame.opcode);
            assert_eq!(header.mask, frame.mask);
            // Every cut inside the header is incomplete.
            for cut in 0..header_len {
                assert_eq!(Header::parse(&bytes[..cut]), None, "cut at {cut}");
            }
        }
        let mut rsv = TestFrame::new(opcode::TEXT, true, vec![], None);
        rsv.rsv = 0b101;
        assert_eq!(Header::parse(&rsv.encode()).unwrap().0.rsv, 0b101);
    }

    #[test]
    fn every_frame_of_the_corpus_split_at_every_point() {
        for frame in corpus() {
            let bytes = frame.encode();
            for cut in 0..=bytes.len() {
                let mut reader = Reader::default();
                reader.watch_pongs(4);
                let (passed, controls, _) =
                    relay_like(&mut reader, &[&bytes[..cut], &bytes[cut..]]);
                assert_eq!(passed, bytes, "{frame:?} cut at {cut}");
                let read_whole = frame.opcode == opcode::CLOSE || frame.opcode == opcode::PONG;
                if read_whole {
                    assert_eq!(controls, vec![(frame.opcode, frame.payload.clone())]);
                } else {
                    assert!(controls.is_empty());
                }
                assert!(reader.at_boundary());
                let data_end = frame.fin && frame.opcode <= opcode::BINARY;
                assert_eq!(reader.messages, u64::from(data_end));
            }
        }
    }

    /// Found by the `ws_frames` fuzzer: a close frame whose length a peer
    /// wrote in 64 bits is still read whole, and is longer than a minimal
    /// one; `MAX_PARTIAL` must cover it.
    #[test]
    fn a_close_with_a_long_length_form_is_read_whole_at_every_split() {
        let key = [9, 8, 7, 6];
        let mut payload = 1001u16.to_be_bytes().to_vec();
        payload.extend_from_slice(&[b'x'; MAX_CONTROL_PAYLOAD - 2]);
        let mut bytes = vec![0x80 | opcode::CLOSE, 0x80 | 127];
        bytes.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        bytes.extend_from_slice(&key);
        let mut masked = payload.clone();
        unmask(&mut masked, key, 0);
        bytes.extend_from_slice(&masked);
        assert_eq!(bytes.len(), MAX_PARTIAL);
        for cut in 0..=bytes.len() {
            let mut reader = Reader::default();
            let (passed, controls, _) = relay_like(&mut reader, &[&bytes[..cut], &bytes[cut..]]);
            assert_eq!(passed, bytes, "cut at {cut}");
            assert_eq!(
                controls,
                vec![(opcode::CLOSE, payload.clone())],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn the_whole_corpus_split_at_every_point_in_one_stream() {
        let frames = corpus();
        let stream: Vec<u8> = frames.iter().flat_map(TestFrame::encode).collect();
        // Every split point near each frame's edges (all of them would be
        // quadratic in 300 KiB).
        let mut edges = vec![0];
        for frame in &frames {
            edges.push(edges.last().unwrap() + frame.encode().len());
        }
        for &edge in &edges {
            for cut in edge.saturating_sub(14)..(edge + 14).min(stream.len()) {
                let mut reader = Reader::default();
                reader.watch_pongs(4);
                let (passed, controls, _) =
                    relay_like(&mut reader, &[&stream[..cut], &stream[cut..]]);
                assert_eq!(passed, stream);
                assert_eq!(controls.len(), 6);
                // 6 whole binary messages, 1 fragmented, 1 deflated, twice.
                assert_eq!(reader.messages, 16);
            }
        }
    }

    #[test]
    fn close_frames_are_read_with_code_and_reason() {
        let mut payload = 4321u16.to_be_bytes().to_vec();
        payload.extend_from_slice("going away ✓".as_bytes());
        let frame = TestFrame::new(opcode::CLOSE, true, payload.clone(), Some([9, 8, 7, 6]));
        let bytes = frame.encode();
        let mut reader = Reader::default();
        let scan = reader.scan(&bytes, false);
        assert_eq!(scan.pass, 0);
        match scan.stop {
            Stop::Control {
                len,
                opcode: opcode::CLOSE,
            } => {
                assert_eq!(len, bytes.len());
                assert_eq!(Payload::of(&bytes).as_slice(), &payload[..]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pongs_of_another_length_and_pings_pass_unread() {
        let mut reader = Reader::default();
        reader.watch_pongs(16);
        for frame in [
            TestFrame::new(opcode::PONG, true, vec![1; 15], None),
            TestFrame::new(opcode::PING, true, vec![1; 16], None),
        ] {
            let bytes = frame.encode();
            assert_eq!(
                reader.scan(&bytes, false),
                Scan {
                    pass: bytes.len(),
                    stop: Stop::End
                }
            );
        }
        // Nothing is read whole when no ping of the proxy's is out.
        let pong = TestFrame::new(opcode::PONG, true, vec![1; 16], None).encode();
        assert_eq!(Reader::default().scan(&pong, false).stop, Stop::End);
    }

    #[test]
    fn messages_over_the_limit_stop_at_the_frame_that_crosses_it() {
        let first = TestFrame::new(opcode::TEXT, false, vec![b'a'; 600], None).encode();
        let ping = TestFrame::new(opcode::PING, true, vec![], None).encode();
        let second = TestFrame::new(opcode::CONTINUATION, true, vec![b'b'; 425], None).encode();
        let mut stream = first.clone();
        stream.extend_from_slice(&ping);
        stream.extend_from_slice(&second);
        // 600 + 425 = 1025 > 1024: the second frame is the one refused.
        let mut reader = Reader::new(1024);
        let scan = reader.scan(&stream, false);
        assert_eq!(scan.pass, first.len() + ping.len());
        assert_eq!(scan.stop, Stop::TooBig);
        // Exactly at the limit passes.
        let mut reader = Reader::new(1025);
        assert_eq!(reader.scan(&stream, false).stop, Stop::End);
        assert_eq!(reader.messages, 1);
        // A new message starts from zero.
        let mut reader = Reader::new(600);
        let whole = TestFrame::new(opcode::BINARY, true, vec![0; 600], None).encode();
        let twice = [whole.clone(), whole].concat();
        assert_eq!(reader.scan(&twice, false).stop, Stop::End);
        assert_eq!(reader.messages, 2);
    }

    #[test]
    fn boundaries_are_found_on_request() {
        let a = TestFrame::new(opcode::TEXT, true, vec![b'a'; 10], None).encode();
        let b = TestFrame::new(opcode::TEXT, true, vec![b'b'; 10], None).encode();
        let stream = [a.clone(), b].concat();
        let mut reader = Reader::default();
        // At the very start.
        assert_eq!(reader.scan(&stream, true).stop, Stop::Boundary);
        // Mid-frame: the boundary after the frame.
        let mut reader = Reader::default();
        assert_eq!(reader.scan(&stream[..5], false).stop, Stop::End);
        let scan = reader.scan(&stream[5..], true);
        assert_eq!(scan.pass, a.len() - 5);
        assert_eq!(scan.stop, Stop::Boundary);
    }

    #[test]
    fn protocol_violations_pass_through() {
        // A 200-byte "control" frame, reserved opcodes, a 64-bit length
        // with the top bit set: framed, passed, never an error.
        let big_close = TestFrame::new(opcode::CLOSE, true, vec![3; 200], None).encode();
        let reserved = TestFrame::new(0x3, true, vec![1, 2], None).encode();
        let reserved_control = TestFrame::new(0xB, false, vec![1, 2], None).encode();
        let stream = [big_close, reserved, reserved_control].concat();
        let mut reader = Reader::default();
        assert_eq!(
            reader.scan(&stream, false),
            Scan {
                pass: stream.len(),
                stop: Stop::End
            }
        );
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        huge.extend_from_slice(&[0; 100]);
        let mut reader = Reader::default();
        assert_eq!(reader.scan(&huge, false).stop, Stop::End);
        assert!(!reader.at_boundary());
    }

    fn arb_frame() -> impl Strategy<Value = TestFrame> {
        (
            any::<bool>(),
            0u8..8,
            prop_oneof![
                Just(opcode::CONTINUATION),
                Just(opcode::TEXT),
                Just(opcode::BINARY),
                Just(opcode::CLOSE),
                Just(opcode::PING),
                Just(opcode::PONG),
            ],
            proptest::option::of(any::<[u8; 4]>()),
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..130),
                proptest::collection::vec(any::<u8>(), 120..70_000),
            ],
        )
            .prop_map(|(fin, rsv, opcode, mask, mut payload)| {
                if opcode & 8 != 0 {
                    payload.truncate(MAX_CONTROL_PAYLOAD);
                }
                TestFrame {
                    fin,
                    rsv,
                    opcode,
                    mask,
                    payload,
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn random_frames_in_random_chunks_reassemble(
            frames in proptest::collection::vec(arb_frame(), 1..12),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..20),
        ) {
            let stream: Vec<u8> = frames.iter().flat_map(TestFrame::encode).collect();
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&stream[last..p]);
                last = p;
            }
            chunks.push(&stream[last..]);
            let mut reader = Reader::default();
            reader.watch_pongs(8);
            let (passed, controls, boundaries) = relay_like(&mut reader, &chunks);
            prop_assert_eq!(&passed, &stream);
            let expected: Vec<(u8, Vec<u8>)> = frames
                .iter()
                .filter(|f| f.opcode == opcode::CLOSE || (f.opcode == opcode::PONG && f.payload.len() == 8))
                .map(|f| (f.opcode, f.payload.clone()))
                .collect();
            prop_assert_eq!(controls, expected);
            // Each control frame read whole ends at a frame boundary.
            let mut ends = Vec::new();
            let mut at = 0;
            for f in &frames {
                at += f.encode().len();
                ends.push(at);
            }
            for b in boundaries {
                prop_assert!(ends.contains(&b));
            }
            let messages = frames.iter().filter(|f| f.fin && f.opcode <= opcode::BINARY).count();
            prop_assert_eq!(reader.messages, messages as u64);
            prop_assert!(reader.at_boundary());
        }
    }
}
