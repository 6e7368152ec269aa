//! RESTORE's payload decoder must refuse or decode any bytes, never past the
//! value limit it is given; a decoded value must dump and decode back to
//! itself. Each input is tried as it is and sealed with a correct version
//! and checksum, so the fuzzer reaches the string decoder behind the
//! checksum.
#![no_main]

use crc::{CRC_64_REDIS, Crc};
use libfuzzer_sys::fuzz_target;
use walrus::store::dump_payload::{decode, encode};

/// Small, so the limit is reached often.
const LIMIT: u64 = 4096;

fn check(payload: &[u8]) {
    if let Ok(value) = decode(payload, LIMIT) {
        assert!(value.len() as u64 <= LIMIT);
        assert_eq!(decode(&encode(&value), LIMIT), Ok(value));
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut sealed = data.to_vec();
    sealed.extend_from_slice(&10u16.to_le_bytes());
    let checksum = Crc::<u64>::new(&CRC_64_REDIS).checksum(&sealed);
    sealed.extend_from_slice(&checksum.to_le_bytes());
    check(&sealed);
});
