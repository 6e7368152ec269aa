//! The RESP request decoder must parse, ask for more, or refuse any bytes —
//! never panic — and every parsed request must consume bytes, point inside
//! them, and stay within the caps it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walrus::resp::{Limits, Parsed, parse_request};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_bulk_bytes: 512,
        max_array_len: 64,
        max_inline_bytes: 256,
    };
    let mut rest = data;
    while !rest.is_empty() {
        match parse_request(rest, &limits) {
            Ok(Parsed::Request { args, consumed }) => {
                assert!(consumed > 0 && consumed <= rest.len());
                assert!(args.iter().all(|arg| arg.start <= arg.end && arg.end <= consumed));
                assert!(args.iter().all(|arg| arg.len() <= 512.max(256)));
                rest = &rest[consumed..];
            }
            Ok(Parsed::Inline { args, consumed }) => {
                assert!(consumed > 0 && consumed <= rest.len());
                assert!(args.iter().all(|arg| arg.len() < consumed));
                rest = &rest[consumed..];
            }
            Ok(Parsed::Incomplete) | Err(_) => break,
        }
    }
});
