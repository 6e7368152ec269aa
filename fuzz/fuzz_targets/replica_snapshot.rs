//! A snapshot a follower receives is checked whole (checksums, key order, the
//! Raft metadata block) before it is installed: any bytes are refused or
//! accepted, never a panic. The install reads it in pieces through the
//! streaming check, so both readings run here and must agree.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = walrus::raft::state_machine::check_snapshot_file(data);
    let piece = 1 + data.first().map_or(0, |&byte| byte as usize % 64);
    let streamed = walrus::raft::state_machine::check_snapshot_stream(data, piece);
    assert_eq!(
        whole.as_ref().ok(),
        streamed.as_ref().ok(),
        "whole: {whole:?}, streamed: {streamed:?}"
    );
});
