//! A Raft log record (entry, vote, truncate, purge, committed) must decode or
//! be refused, never panic: recovery feeds it whatever the disk holds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = walrus::raft::log_store::decode_record(data);
});
