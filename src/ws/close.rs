//! Close codes (RFC 6455 §7.4), what a peer's close frame says, and the
//! frames the proxy writes itself: Close and Ping.
//!
//! The proxy's own frames are whole frames, written between the peers'
//! frames. Towards the upstream the proxy is the client, so its frames are
//! masked there (§5.3) with a fresh key each; towards the client they are
//! not. Its pings carry a payload that names them as the proxy's
//! ([`PingTag`]), so the pongs answering them can be told from the peers'
//! own and kept back.

use super::frame::{MAX_CONTROL_PAYLOAD, opcode, unmask};

/// Close codes the proxy sends or reports.
pub mod code {
    /// The peer is going away: shutdown, rebalance, lifetime, dead peer.
    pub const GOING_AWAY: u16 = 1001;
    /// Reported for a close frame without a code (§7.1.5); never sent.
    pub const NO_STATUS: u16 = 1005;
    /// Reported for a tunnel that ended without any close frame (§7.1.5);
    /// never sent.
    pub const ABNORMAL: u16 = 1006;
    /// A message too big to process (`max_message_size`).
    pub const TOO_BIG: u16 = 1009;
}

/// The code of a close frame's (unmasked) payload.
pub fn close_code(payload: &[u8]) -> u16 {
    match payload {
        [high, low, ..] => u16::from_be_bytes([*high, *low]),
        _ => code::NO_STATUS,
    }
}

/// The payload of the proxy's pings to one side of one tunnel: 16 bytes,
/// `sy-ping:` and eight hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PingTag([u8; PingTag::LEN]);

impl PingTag {
    pub const LEN: usize = 16;

    pub fn new(nonce: u32) -> PingTag {
        let mut tag = *b"sy-ping:00000000";
        for (i, digit) in tag[8..].iter_mut().enumerate() {
            let nibble = (nonce >> (28 - 4 * i)) & 0xF;
            *digit = b"0123456789abcdef"[nibble as usize];
        }
        PingTag(tag)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A whole frame of the proxy's own, ready to write.
#[derive(Clone, Copy)]
pub struct OwnFrame {
    bytes: [u8; 2 + 4 + MAX_CONTROL_PAYLOAD],
    len: u8,
}

impl OwnFrame {
    /// A Close with `code` and `reason` (cut to fit a control frame).
    pub fn close(code: u16, reason: &str, masked: bool) -> OwnFrame {
        let mut payload = [0; MAX_CONTROL_PAYLOAD];
        payload[..2].copy_from_slice(&code.to_be_bytes());
        let mut reason_len = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
        while !reason.is_char_boundary(reason_len) {
            reason_len -= 1;
        }
        payload[2..2 + reason_len].copy_from_slice(&reason.as_bytes()[..reason_len]);
        OwnFrame::control(opcode::CLOSE, &payload[..2 + reason_len], masked)
    }

    /// A Ping carrying `tag`.
    pub fn ping(tag: &PingTag, masked: bool) -> OwnFrame {
        OwnFrame::control(opcode::PING, tag.as_bytes(), masked)
    }

    fn control(opcode: u8, payload: &[u8], masked: bool) -> OwnFrame {
        let mut bytes = [0; 2 + 4 + MAX_CONTROL_PAYLOAD];
        let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
        bytes[0] = 0x80 | opcode;
        bytes[1] = payload.len() as u8;
        let mut at = 2;
        if masked {
            let key = fastrand::u32(..).to_ne_bytes();
            bytes[1] |= 0x80;
            bytes[2..6].copy_from_slice(&key);
            at = 6;
            bytes[at..at + payload.len()].copy_from_slice(payload);
            unmask(&mut bytes[at..at + payload.len()], key, 0);
        } else {
            bytes[at..at + payload.len()].copy_from_slice(payload);
        }
        OwnFrame {
            bytes,
            len: (at + payload.len()) as u8,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::{Reader, Stop};

    fn read_back(frame: &OwnFrame) -> (u8, Vec<u8>, bool) {
        let bytes = frame.as_bytes();
        let (header, _) = crate::ws::frame::Header::parse(bytes).unwrap();
        let mut reader = Reader::default();
        reader.watch_pongs(PingTag::LEN);
        match reader.scan(bytes, false).stop {
            Stop::Control { len, opcode } => {
                assert_eq!(len, bytes.len());
                let payload = crate::ws::frame::Payload::of(bytes);
                (opcode, payload.as_slice().to_vec(), header.mask.is_some())
            }
            // Pings are not read whole: unmask by hand.
            Stop::End => {
                let at = bytes.len() - header.len as usize;
                let mut payload = bytes[at..].to_vec();
                if let Some(key) = header.mask {
                    unmask(&mut payload, key, 0);
                }
                (header.opcode, payload, header.mask.is_some())
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn own_closes_masked_upstream_and_plain_to_clients() {
        for masked in [false, true] {
            let (op, payload, was_masked) =
                read_back(&OwnFrame::close(code::GOING_AWAY, "going away", masked));
            assert_eq!(op, opcode::CLOSE);
            assert_eq!(was_masked, masked);
            assert_eq!(close_code(&payload), 1001);
            assert_eq!(&payload[2..], b"going away");
        }
        // A long reason is cut on a character boundary to fit 125 bytes.
        let long = "é".repeat(100);
        let (_, payload, _) = read_back(&OwnFrame::close(1000, &long, true));
        assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }

    #[test]
    fn pings_carry_their_tag() {
        let tag = PingTag::new(0xdead_beef);
        assert_eq!(tag.as_bytes(), b"sy-ping:deadbeef");
        for masked in [false, true] {
            let (op, payload, was_masked) = read_back(&OwnFrame::ping(&tag, masked));
            assert_eq!(op, opcode::PING);
            assert_eq!(was_masked, masked);
            assert_eq!(payload, tag.as_bytes());
        }
    }

    #[test]
    fn close_codes_of_payloads() {
        assert_eq!(close_code(&[0x03, 0xE8]), 1000);
        assert_eq!(close_code(&[0x03, 0xE9, b'x']), 1001);
        assert_eq!(close_code(&[]), code::NO_STATUS);
    }
}
