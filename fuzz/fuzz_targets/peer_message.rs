//! Peer message bodies arrive from the network: every decoder the `/raft/`
//! routes use must refuse bad bytes without panicking or allocating wildly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use walrus::raft::broadcast::Published;
use walrus::raft::forward::ForwardAnswer;
use walrus::raft::network::SnapshotChunk;
use walrus::raft::{Proposal, TypeConfig};

fuzz_target!(|data: &[u8]| {
    let _ = postcard::from_bytes::<AppendEntriesRequest<TypeConfig>>(data);
    let _ = postcard::from_bytes::<VoteRequest<TypeConfig>>(data);
    let _ = postcard::from_bytes::<SnapshotChunk>(data);
    let _ = postcard::from_bytes::<Proposal>(data);
    let _ = postcard::from_bytes::<ForwardAnswer>(data);
    let _ = postcard::from_bytes::<Option<u64>>(data);
    let _ = postcard::from_bytes::<Vec<Published>>(data);
});
