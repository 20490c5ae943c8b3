//! Where frames begin in a stream of WebSocket bytes (RFC 6455 §5.2),
//! without buffering a payload: [`Boundaries`] reads each frame's header
//! (2 to 14 bytes, split anywhere across reads) and skips its payload, so
//! the proxy knows when a whole frame of its own may go in between the
//! peers' frames. Pure.

/// The frame position of one direction of a tunnel.
#[derive(Debug, Default, Clone)]
pub struct Boundaries {
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// The bytes of a header read so far (a header split across reads).
    header: [u8; 14],
    header_len: usize,
}

impl Boundaries {
    /// Whether the next byte starts a frame.
    pub fn at_boundary(&self) -> bool {
        self.payload_left == 0 && self.header_len == 0
    }

    /// Follow `data`. Returns the offset in `data` of the first frame
    /// boundary at or after `from`, if one is in it (`data.len()` when
    /// `data` ends exactly on one).
    pub fn advance(&mut self, data: &[u8], from: usize) -> Option<usize> {
        let mut at = 0;
        let mut first = None;
        loop {
            if at >= from && self.at_boundary() && first.is_none() {
                first = Some(at);
            }
            if at == data.len() {
                return first;
            }
            if self.payload_left > 0 {
                let skip = (data.len() - at).min(self.payload_left.min(usize::MAX as u64) as usize);
                at += skip;
                self.payload_left -= skip as u64;
                continue;
            }
            // A header byte.
            self.header[self.header_len] = data[at];
            self.header_len += 1;
            at += 1;
            if let Some(payload) = header_done(&self.header[..self.header_len]) {
                self.header_len = 0;
                self.payload_left = payload;
            }
        }
    }
}

/// The payload length once `header` is a whole frame header.
fn header_done(header: &[u8]) -> Option<u64> {
    if header.len() < 2 {
        return None;
    }
    let masked = header[1] & 0x80 != 0;
    let mask = if masked { 4 } else { 0 };
    let (extended, length) = match header[1] & 0x7f {
        126 => (2, None),
        127 => (8, None),
        n => (0, Some(u64::from(n))),
    };
    if header.len() < 2 + extended + mask {
        return None;
    }
    Some(length.unwrap_or_else(|| {
        header[2..2 + extended]
            .iter()
            .fold(0u64, |n, &b| (n << 8) | u64::from(b))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame with `len` payload bytes, masked or not.
    fn frame(len: usize, masked: bool) -> Vec<u8> {
        let mut out = vec![0x82];
        let bit = if masked { 0x80 } else { 0 };
        match len {
            0..=125 => out.push(bit | len as u8),
            126..=65535 => {
                out.push(bit | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(bit | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if masked {
            out.extend_from_slice(&[1, 2, 3, 4]);
        }
        out.extend(std::iter::repeat_n(0xaa, len));
        out
    }

    #[test]
    fn boundaries_are_found_however_the_bytes_are_split() {
        let frames = [
            frame(5, false),
            frame(300, true),
            frame(70_000, false),
            frame(0, true),
        ];
        let stream: Vec<u8> = frames.concat();
        let mut ends = vec![0];
        for f in &frames {
            ends.push(ends.last().unwrap() + f.len());
        }
        for piece in [1, 2, 3, 7, 13, 100, 4096, stream.len()] {
            let mut b = Boundaries::default();
            let mut offset = 0;
            for chunk in stream.chunks(piece) {
                let first = b.clone().advance(chunk, 0).map(|at| offset + at);
                let expected = ends
                    .iter()
                    .copied()
                    .find(|&e| e >= offset && e <= offset + chunk.len());
                assert_eq!(first, expected, "pieces of {piece} at {offset}");
                b.advance(chunk, 0);
                offset += chunk.len();
                assert_eq!(
                    b.at_boundary(),
                    ends.contains(&offset),
                    "pieces of {piece} at {offset}"
                );
            }
        }
        // From a later offset: the next boundary after it.
        let mut b = Boundaries::default();
        assert_eq!(b.advance(&stream, 1), Some(ends[1]));
    }

    #[test]
    fn a_split_header_is_not_a_boundary() {
        let f = frame(70_000, true);
        let mut b = Boundaries::default();
        assert!(b.at_boundary());
        assert_eq!(b.advance(&f[..3], 0), Some(0));
        assert!(!b.at_boundary());
        assert_eq!(b.advance(&f[3..20], 0), None);
        assert_eq!(b.advance(&f[20..], 0), Some(f.len() - 20));
        assert!(b.at_boundary());
    }
}
