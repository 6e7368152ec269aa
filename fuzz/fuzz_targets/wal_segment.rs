//! Scanning a segment (header and records) must never panic, whatever its bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walrus::storage::segment::{decode_segment_header, scan_records};

fuzz_target!(|data: &[u8]| {
    if let Ok(first_seq) = decode_segment_header(data) {
        let mut previous = None;
        scan_records(data, first_seq, |record, _| {
            if let Some(previous) = previous {
                assert_eq!(record.seq, previous + 1);
            }
            previous = Some(record.seq);
        });
    }
});
