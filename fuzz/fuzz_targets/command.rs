//! The command payload decoder must reject or decode any bytes, and a decoded
//! command must re-encode to the same payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walrus::store::{decode_payload_from, encode_payload_from};

fuzz_target!(|data: &[u8]| {
    if let Ok((issued_at_ms, from, command)) = decode_payload_from(data) {
        let mut again = Vec::new();
        encode_payload_from(&mut again, issued_at_ms, from, &command);
        assert_eq!(&again[..], data);
    }
});
