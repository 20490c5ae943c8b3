//! The WebSocket frame reader on any bytes, cut into any chunks, driven the
//! way the relay drives it (a `Partial` stop keeps the rest and puts it in
//! front of the next read; a `TooBig` stop lifts the limit and goes on).
//! Invariants: no panic; what a `Partial` leaves is never longer than
//! `MAX_PARTIAL`; every byte is passed on or read whole exactly once; the
//! control frames read whole, the limit stops and the message count are
//! the same whatever the chunking, and the same as for the whole stream in
//! one read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::ws::frame::{MAX_PARTIAL, Payload, Reader, Stop};

#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// A control frame read whole: stream offset, length, opcode, payload.
    Control(usize, usize, u8, Vec<u8>),
    /// A data frame over the limit starts at this stream offset.
    TooBig(usize),
}

/// Scan `stream` delivered in pieces of the sizes in `cuts` (then the rest).
fn drive(stream: &[u8], cuts: &[usize], limit: u64, pong_len: usize) -> (Vec<Event>, u64) {
    let mut reader = Reader::new(limit);
    reader.watch_pongs(pong_len);
    let mut events = Vec::new();
    let mut kept: Vec<u8> = Vec::new();
    // Stream offset of the first byte of `kept`.
    let mut offset = 0;
    let mut at = 0;
    let mut pieces: Vec<&[u8]> = Vec::new();
    for &cut in cuts {
        let end = (at + cut).min(stream.len());
        pieces.push(&stream[at..end]);
        at = end;
    }
    pieces.push(&stream[at..]);
    for piece in pieces {
        let mut input = std::mem::take(&mut kept);
        input.extend_from_slice(piece);
        let mut pos = 0;
        loop {
            let scan = reader.scan(&input[pos..], false);
            pos += scan.pass;
            match scan.stop {
                Stop::End => {
                    assert_eq!(pos, input.len());
                    break;
                }
                Stop::Partial => {
                    assert!(input.len() - pos <= MAX_PARTIAL, "kept {}", input.len() - pos);
                    kept = input[pos..].to_vec();
                    break;
                }
                Stop::Control { len, opcode } => {
                    assert!(len <= MAX_PARTIAL && pos + len <= input.len());
                    let payload = Payload::of(&input[pos..pos + len]);
                    events.push(Event::Control(
                        offset + pos,
                        len,
                        opcode,
                        payload.as_slice().to_vec(),
                    ));
                    pos += len;
                }
                Stop::TooBig => {
                    events.push(Event::TooBig(offset + pos));
                    reader.unlimit();
                }
                Stop::Boundary => unreachable!("not asked to stop at boundaries"),
            }
        }
        offset += pos;
    }
    assert_eq!(offset + kept.len(), stream.len());
    (events, reader.messages)
}

fuzz_target!(|data: &[u8]| {
    let [limit, pong, n, rest @ ..] = data else {
        return;
    };
    let limit = match limit % 4 {
        0 => u64::MAX,
        1 => 0,
        2 => u64::from(*limit),
        _ => 1 << 16,
    };
    let pong_len = usize::from(*pong % 16);
    let n = usize::from(*n % 16).min(rest.len());
    let (cuts, stream) = rest.split_at(n);
    let cuts: Vec<usize> = cuts.iter().map(|&c| usize::from(c)).collect();
    let whole = drive(stream, &[], limit, pong_len);
    let chunked = drive(stream, &cuts, limit, pong_len);
    assert_eq!(whole, chunked);
    let bytewise: Vec<usize> = vec![1; stream.len().min(512)];
    assert_eq!(whole, drive(stream, &bytewise, limit, pong_len));
});
