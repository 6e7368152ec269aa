//! The snapshot decoder must reject or decode any bytes; what it accepts is in
//! strictly increasing key order and matches its header's count.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walrus::storage::snapshot::decode_snapshot;

fuzz_target!(|data: &[u8]| {
    if let Ok((meta, records)) = decode_snapshot(data) {
        assert_eq!(meta.entry_count, records.len() as u64);
        assert!(records.windows(2).all(|pair| pair[0].key < pair[1].key));
    }
});
