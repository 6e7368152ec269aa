//! walrus's integration tests, in one test binary (it links faster than many).
//!
//! HTTP and RESP tests start the real binary on a free loopback port (`server.rs`).
//! Storage tests run the real store on `testing::SimFs`, a disk that forgets
//! unsynced writes on a simulated power loss.

mod backup;
mod cli;
mod cluster;
mod cluster_netns;
mod common;
mod crash;
mod crash_points;
mod decoders;
mod disk_full;
mod faults;
mod http_api;
mod http_bad_input;
mod http_crash;
mod http_security;
mod model;
mod recovery;
mod resp3;
mod resp_api;
mod resp_client;
mod resp_databases;
mod resp_durability;
mod resp_raw;
mod resp_tracking;
mod resp_txn;
mod serve;
mod server;
mod sim_cluster;
mod submit_all;
mod verify;
mod watch;
