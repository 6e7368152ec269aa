//! A WAL record decoder must reject or decode any bytes, and whatever it decodes
//! must re-encode to exactly the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walrus::storage::record::{decode_record, encode_record};

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = decode_record(data) {
        let mut again = Vec::new();
        encode_record(&mut again, record.seq, record.synced_before, record.payload);
        assert_eq!(&again[..], &data[..record.encoded_len]);
    }
});
