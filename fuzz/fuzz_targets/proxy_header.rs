//! The PROXY protocol header parser on any bytes. Invariants: no panic; a
//! complete header is never longer than the input or the limit; an input
//! called incomplete stays a prefix of some header: cut shorter, it is
//! still incomplete (never suddenly valid or invalid), which is what lets
//! the reader consume incomplete bytes as header bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::server::accept::{MAX_PROXY_HEADER, ProxyHeader, parse_proxy_header};

fuzz_target!(|data: &[u8]| {
    match parse_proxy_header(data) {
        ProxyHeader::Done { len, source: _ } => {
            assert!(len <= data.len() && len <= MAX_PROXY_HEADER && len > 0);
            // The same header followed by anything parses the same.
            let mut longer = data[..len].to_vec();
            longer.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            assert!(matches!(
                parse_proxy_header(&longer),
                ProxyHeader::Done { len: l, .. } if l == len
            ));
        }
        ProxyHeader::Incomplete => {
            assert!(data.len() < MAX_PROXY_HEADER);
            for end in [0, data.len() / 2, data.len().saturating_sub(1)] {
                assert_eq!(parse_proxy_header(&data[..end]), ProxyHeader::Incomplete);
            }
        }
        ProxyHeader::Invalid(why) => assert!(!why.is_empty()),
    }
});
