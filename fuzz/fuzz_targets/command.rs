//! The command payload decoder must reject or decode any bytes, and a decoded
//! command must re-encode to the same payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walrus::store::{decode_payload, encode_payload};

fuzz_target!(|data: &[u8]| {
    if let Ok((issued_at_ms, command)) = decode_payload(data) {
        let mut again = Vec::new();
        encode_payload(&mut again, issued_at_ms, &command);
        assert_eq!(&again[..], data);
    }
});
