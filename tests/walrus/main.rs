//! walrus's integration tests, in one test binary (it links faster than many).
//!
//! Storage tests run the real store on `testing::SimFs`, a disk that forgets
//! unsynced writes on a simulated power loss.

mod common;
mod crash;
mod decoders;
mod faults;
mod model;
mod recovery;
