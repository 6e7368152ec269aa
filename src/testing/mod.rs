//! Test support that ships with the library so integration tests, property tests
//! and the benchmark can all use it: a simulated disk for crash and fault tests,
//! and an in-process cluster of real Raft nodes on simulated disks over a
//! simulated network, driven by a seed.

pub mod sim_cluster;
mod sim_fs;

pub use sim_fs::{Faults, PlannedFault, SECTOR_BYTES, SimFs};
