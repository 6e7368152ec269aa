//! Every decoder of on-disk bytes, fed random and mutated input: errors, never
//! panics. (The cargo-fuzz targets under `fuzz/` do the same, coverage-guided;
//! these run in CI on stable.)

use proptest::prelude::*;
use walrus::storage::record::{decode_record, encode_record};
use walrus::storage::segment::{decode_segment_header, encode_segment_header, scan_records};
use walrus::storage::snapshot::decode_snapshot;
use walrus::store::{Command, decode_payload, encode_payload};

fn valid_record() -> Vec<u8> {
    let mut payload = Vec::new();
    encode_payload(&mut payload, 5, &Command::put(&b"key"[..], &b"value"[..]));
    let mut record = Vec::new();
    encode_record(&mut record, 9, true, &payload);
    record
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_record(&data);
        let _ = decode_segment_header(&data);
        let _ = decode_snapshot(&data);
        let _ = decode_payload(&data);
        let mut segment = encode_segment_header(1);
        segment.extend_from_slice(&data);
        let _ = scan_records(&segment, 1, |_, _| {});
    }

    #[test]
    fn mutated_records_never_decode_wrongly(
        index in 0usize..64,
        mask in 1u8..=255,
    ) {
        let record = valid_record();
        let mut damaged = record.clone();
        let index = index % damaged.len();
        damaged[index] ^= mask;
        prop_assert!(decode_record(&damaged).is_err());
    }

    #[test]
    fn mutated_payloads_never_panic(
        index in 0usize..64,
        mask in 1u8..=255,
        cut in 0usize..64,
    ) {
        let mut payload = Vec::new();
        encode_payload(&mut payload, 5, &Command::Txn {
            guards: vec![(bytes::Bytes::from_static(b"a"), walrus::Guard::Absent)],
            ops: vec![walrus::Op::Delete { key: bytes::Bytes::from_static(b"b") }],
        });
        let index = index % payload.len();
        payload[index] ^= mask;
        payload.truncate(payload.len().saturating_sub(cut % 4));
        let _ = decode_payload(&payload);
    }
}
