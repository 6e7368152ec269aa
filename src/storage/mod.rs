//! Durability: the write-ahead log, snapshots and recovery.
//!
//! The contract this layer keeps for the store above it:
//! - a record is durable once [`Wal::sync`] returns after its append; with group
//!   commit (in `store::durable`) one sync covers a whole batch of writers;
//! - a created, renamed or deleted file is durable once its directory is synced,
//!   and every such change here is followed by that sync;
//! - after a crash, recovery yields exactly a prefix of the appended records that
//!   includes every synced one; damage to synced data is reported, never skipped
//!   silently ([`RecoveryMode`]);
//! - a failed write or sync is permanent for the open log ([`crate::Error::Failed`]).
//!
//! All I/O goes through [`fs::FileSystem`], so `testing::SimFs` can stand in for
//! the disk.

pub mod data_dir;
pub mod fs;
pub mod record;
pub mod recovery;
pub mod segment;
pub mod snapshot;
pub mod spare;
pub mod wal;

pub use fs::{FileSystem, StdFs};
pub use recovery::{LostRecord, RecoveryMode, RecoveryReport};
pub use wal::{SpaceUse, SpareSegment, Wal, WalOptions};
