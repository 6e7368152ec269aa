//! A snapshot a follower receives is checked whole (checksums, key order, the
//! Raft metadata block) before it is installed: any bytes are refused or
//! accepted, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = walrus::raft::state_machine::check_snapshot_file(data);
});
