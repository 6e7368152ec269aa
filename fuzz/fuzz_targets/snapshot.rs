//! The snapshot decoder must reject or decode any bytes; what it accepts is in
//! strictly increasing (database, key) order and matches its header's count.
//! The streaming checker that `walrus backup` uses, and the collecting one
//! that start-up reads snapshot files with, must agree with it on every input
//! (verdict and entries), fed in two pieces split where the input's first
//! byte says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walrus::storage::snapshot::{SnapshotStreamCheck, decode_snapshot};

fuzz_target!(|data: &[u8]| {
    let decoded = decode_snapshot(data);
    if let Ok((meta, records)) = &decoded {
        assert_eq!(meta.entry_count, records.len() as u64);
        assert!(records
            .windows(2)
            .all(|pair| (pair[0].db, &pair[0].key) < (pair[1].db, &pair[1].key)));
    }
    let split = data.first().map_or(0, |&byte| usize::from(byte)).min(data.len());
    let mut check = SnapshotStreamCheck::new();
    let streamed = check
        .push(&data[..split])
        .and_then(|()| check.push(&data[split..]))
        .and_then(|()| check.finish());
    match (&decoded, &streamed) {
        (Ok((meta, _)), Ok((streamed_meta, bytes))) => {
            assert_eq!(meta, streamed_meta);
            assert_eq!(*bytes, data.len() as u64);
        }
        (Err(_), Err(_)) => {}
        _ => panic!("decoder {:?} vs stream check {:?}", decoded.map(|d| d.0), streamed),
    }
    let mut collecting = SnapshotStreamCheck::collecting();
    let collected = collecting
        .push(&data[..split])
        .and_then(|()| collecting.push(&data[split..]))
        .and_then(|()| collecting.finish_with_records());
    match (&decoded, &collected) {
        (Ok(decoded), Ok(collected)) => assert_eq!(decoded, collected),
        (Err(_), Err(_)) => {}
        _ => panic!("decoder and collecting stream disagree"),
    }
});
