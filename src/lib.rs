//! walrus: a durable key-value store.
//!
//! The crate is layered; each layer only calls the ones below it:
//!
//! - [`store`]: the [`KvStore`] trait and its two implementations, [`MemStore`]
//!   (no persistence) and [`DurableStore`] (WAL + snapshots). Both apply the same
//!   deterministic [`Command`]s to the same ordered in-memory [`store::State`].
//! - [`storage`]: the durability machinery: the generic segmented write-ahead log,
//!   snapshots, recovery and the one file-system trait all I/O goes through
//!   (group commit sits above it, in `store/pending.rs` and `store/commit.rs`).
//! - [`raft`]: replication with openraft: the Raft log in the WAL, the state
//!   machine, the peer transport, one replicated node.
//! - [`node`]: the one path HTTP, RESP and the sweeper take to the data, for a
//!   single store or a replica; reads at a consistency level.
//! - [`verify`]: `walrus verify`, the workload, fault injection and
//!   linearizability checker.
//! - [`encoding`]: little-endian integers, CRC32C and a bounds-checked reader.
//! - [`handoff`]: the queue that carries messages to the commit thread and
//!   batches of replies to the notifier.
//! - [`http`] and [`server`]: `walrus serve`, the HTTP API on top of a store.
//! - [`latency_monitor`]: when the node was slow and why (Redis's LATENCY), fed by
//!   the front end, the log writers and the sweeper.
//! - [`resp`]: the Redis protocol (RESP2) front end, `walrus serve --resp-listen`:
//!   frame codec, pipelined connections, one file per command family.
//! - [`expiry`]: the sweeper that removes expired keys with ordinary logged deletes.
//! - [`client`]: the HTTP client the CLI and `bench http` share.
//! - [`bench`]: `walrus bench`, including the original design reproduced as a
//!   baseline.
//! - [`dump`]: `walrus dump`, a read-only look at a data directory.
//! - [`allocator`]: what the program's allocator says of its memory, when the
//!   program registers it (the binary does, for jemalloc).
//! - [`testing`]: a simulated disk that forgets unsynced writes on a crash and can
//!   inject I/O errors; used by the crash tests.
//!
//! `docs/architecture.md` walks through the write path, group commit, snapshots and
//! recovery; `docs/format.md` gives the byte layout of every file.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod allocator;
pub mod backup;
pub mod bench;
pub mod client;
pub mod clock;
pub mod deterministic;
pub mod dev_cluster;
pub mod dump;
pub mod encoding;
pub mod error;
pub mod expiry;
pub mod handoff;
pub mod http;
pub mod latency_monitor;
pub mod metrics;
pub mod net;
pub mod node;
pub mod pause;
pub mod raft;
pub mod resp;
pub mod server;
pub mod storage;
pub mod store;
pub mod testing;
pub mod verify;

pub use error::{Error, Result};
pub use store::{
    Command, DurableStore, Entry, Guard, KvStore, MemStore, Op, Outcome, StoreOptions,
};
