//! Keeps a cluster member from filling its disk.
//!
//! openraft stops a member for good when a log write fails, and a log write
//! fails on a full disk. Members with equal disks fill at about the same
//! write, so a cluster left to fill would stop whole. A member stops short:
//! - a leader refuses to propose a write that adds data while its free
//!   space is under `min_free` plus room for one more snapshot of its data
//!   (what compacting the log needs). Deletes still go through, so keys can
//!   be deleted and the log compacted to give space back;
//! - any member refuses appended entries that add data when taking them
//!   would leave less than half of `min_free`: it falls behind, as if cut
//!   off, instead of stopping, and catches up once it has room. The gap
//!   between the two floors lets followers with disks like the leader's
//!   take everything the leader let through: a follower that refused those
//!   would hold back the deletes queued behind them too;
//! - a snapshot starts only when half of `min_free` stays free after it (so
//!   followers can still take entries), and a node short of space snapshots
//!   by itself only when that frees space (the log it covers is more than
//!   twice the snapshot: after deletes or overwrites).
//!
//! Invariant: free space is read with `statvfs`, and the snapshot room is
//! measured from the state, at each housekeeping tick. A write let through
//! between ticks is counted on both: it takes log space now (`free` falls)
//! and snapshot room later (`room` grows). A request the estimate would
//! refuse reads the disk again first, which corrects `free` only: `room`
//! keeps what was let through until the next measure, so a burst of writes
//! between ticks cannot take a leader past its floor.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::storage::FileSystem;

/// Free space a member keeps by default (`--min-free-space`).
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 << 20;

/// Reads the free bytes of the disk holding the data directory.
type ReadFree = Box<dyn Fn() -> io::Result<u64> + Send + Sync>;

pub struct DiskSpace {
    read_free: ReadFree,
    dir: PathBuf,
    min_free: u64,
    /// Free bytes at the last reading, less what was let through since.
    free: AtomicU64,
    /// About how large a snapshot of the state would be: as measured at the
    /// last tick, plus what was let through since.
    room: AtomicU64,
    /// Set when a write was refused, until [`DiskSpace::short`] reads it: a
    /// write is refused a little above the floor (it needs room for itself
    /// twice), and the node is short of space all the same.
    refused: AtomicBool,
}

impl DiskSpace {
    pub fn new(fs: Arc<dyn FileSystem>, dir: PathBuf, min_free: u64) -> DiskSpace {
        let at = dir.clone();
        DiskSpace::reading(Box::new(move || fs.available_space(&at)), dir, min_free)
    }

    fn reading(read_free: ReadFree, dir: PathBuf, min_free: u64) -> DiskSpace {
        let space = DiskSpace {
            read_free,
            dir,
            min_free,
            free: AtomicU64::new(u64::MAX),
            room: AtomicU64::new(0),
            refused: AtomicBool::new(false),
        };
        space.refresh();
        space
    }

    /// Reads the free space again and returns it; `None` (and the old
    /// estimate kept) when the file system does not say.
    pub fn refresh(&self) -> Option<u64> {
        match (self.read_free)() {
            Ok(free) => {
                self.free.store(free, Ordering::Relaxed);
                Some(free)
            }
            Err(error) => {
                tracing::debug!(%error, "reading the free space of {}", self.dir.display());
                None
            }
        }
    }

    /// Notes how large a snapshot of the state is now (see [`snapshot_bytes`]).
    pub fn set_snapshot_room(&self, bytes: u64) {
        self.room.store(bytes, Ordering::Relaxed);
    }

    /// The data directory whose disk this watches.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Free bytes, as last estimated.
    pub fn free(&self) -> u64 {
        self.free.load(Ordering::Relaxed)
    }

    /// About how large a snapshot of the state is, as last estimated.
    pub fn snapshot_room(&self) -> u64 {
        self.room.load(Ordering::Relaxed)
    }

    /// The free space a leader keeps before it refuses writes that add
    /// data: `min_free` plus room for a snapshot.
    pub fn propose_floor(&self) -> u64 {
        self.min_free.saturating_add(self.snapshot_room())
    }

    /// Whether this node, as leader, is short of space: under its floor, or
    /// it refused a write since the last call.
    pub fn short(&self) -> bool {
        let refused = self.refused.swap(false, Ordering::Relaxed);
        refused || self.free() < self.propose_floor()
    }

    /// The free space a member keeps before it refuses entries that add data.
    pub fn accept_floor(&self) -> u64 {
        self.min_free / 2
    }

    /// Whether this node, as leader, may propose a write adding `bytes`:
    /// if so they are counted as log space taken and snapshot room to come.
    pub fn take_to_propose(&self, bytes: u64) -> bool {
        let grows = |space: &DiskSpace| {
            space
                .free()
                .checked_sub(bytes)
                .is_some_and(|free| free >= space.propose_floor().saturating_add(bytes))
        };
        if !grows(self) && (self.refresh().is_none() || !grows(self)) {
            self.refused.store(true, Ordering::Relaxed);
            return false;
        }
        self.count(bytes);
        true
    }

    /// Whether this node may take `bytes` of entries from its leader: if so
    /// they are counted as log space taken.
    pub fn take_to_accept(&self, bytes: u64) -> bool {
        let fits = |free: u64| free >= self.accept_floor().saturating_add(bytes);
        if !fits(self.free()) && self.refresh().is_none_or(|free| !fits(free)) {
            return false;
        }
        self.take_free(bytes);
        true
    }

    fn count(&self, bytes: u64) {
        self.take_free(bytes);
        self.room.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts `bytes` of the free space as taken until the next reading.
    fn take_free(&self, bytes: u64) {
        let _ = self
            .free
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |free| {
                Some(free.saturating_sub(bytes))
            });
    }

    /// Whether a snapshot of the state fits with half of `min_free` still
    /// free after it, reading the disk again: a snapshot must not take the
    /// room followers keep for the entries the leader let through. If so,
    /// its bytes are counted as taken until the next reading.
    pub fn take_for_snapshot(&self) -> bool {
        if !self.has_room_for_snapshot(self.snapshot_room()) {
            return false;
        }
        self.take_free(self.snapshot_room());
        true
    }

    /// Whether a snapshot of about `room` bytes fits, leaving half of
    /// `min_free` free after it, reading the disk again.
    pub fn has_room_for_snapshot(&self, room: u64) -> bool {
        let free = self.refresh().unwrap_or_else(|| self.free());
        free >= room.saturating_add(self.accept_floor())
    }

    /// The message a refused request carries.
    pub fn shortage(&self, floor: u64) -> String {
        let kept = match floor > self.min_free {
            true => "--min-free-space plus room for a snapshot of the data",
            false => "half of --min-free-space",
        };
        format!(
            "{} free on the disk holding {}, under the {} kept free ({kept})",
            mebibytes(self.free()),
            self.dir.display(),
            mebibytes(floor),
        )
    }
}

/// `bytes` in MiB as refusals and `walrus cluster status` show them, alike:
/// to a tenth under 100 MiB, where the floors' differences lie, and whole
/// above.
pub fn mebibytes(bytes: u64) -> String {
    let tenths = (bytes as f64 / f64::from(1 << 20) * 10.0).round();
    match tenths < 1000.0 {
        true => format!("{:.1} MiB", tenths / 10.0),
        false => format!("{:.0} MiB", tenths / 10.0),
    }
}

/// About how many bytes a snapshot of `data_bytes` of keys and values in
/// `keys` keys takes: the data, a record header per key, the file's header.
pub fn snapshot_bytes(data_bytes: u64, keys: u64) -> u64 {
    data_bytes
        .saturating_add(keys.saturating_mul(64))
        .saturating_add(64 << 10)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn sizes_read_to_a_tenth_of_a_mib_under_100_mib() {
        assert_eq!(mebibytes(5 << 20), "5.0 MiB");
        assert_eq!(mebibytes((11 << 20) / 2), "5.5 MiB");
        assert_eq!(mebibytes(0), "0.0 MiB");
        assert_eq!(mebibytes(3 << 30), "3072 MiB");
        // Just under 100 MiB rounds up into the whole numbers.
        assert_eq!(mebibytes((100 << 20) - 1000), "100 MiB");
    }

    /// A disk whose free space the test sets, and how often it was read.
    fn space(free: u64) -> (DiskSpace, Arc<AtomicU64>, Arc<AtomicUsize>) {
        let (free, reads) = (
            Arc::new(AtomicU64::new(free)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (disk, counter) = (free.clone(), reads.clone());
        let read_free: ReadFree = Box::new(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(disk.load(Ordering::Relaxed))
        });
        let space = DiskSpace::reading(read_free, PathBuf::from("/d"), 8 << 20);
        (space, free, reads)
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn writes_count_as_log_now_and_snapshot_room_later_and_a_refusal_reads_again() {
        let (space, disk, reads) = space(20 * MIB);
        space.set_snapshot_room(2 * MIB);
        assert_eq!(space.propose_floor(), 10 * MIB);
        // 10 MiB above the floor: five 1 MiB writes pass without a reading,
        // each taking 1 MiB of log and adding 1 MiB of snapshot room.
        for _ in 0..5 {
            assert!(space.take_to_propose(MIB));
        }
        assert_eq!(reads.load(Ordering::Relaxed), 1);
        assert_eq!((space.free(), space.propose_floor()), (15 * MIB, 15 * MIB));
        // The disk still has 20 MiB (preallocated segments): the next write
        // reads again and passes, and the room it grew is kept.
        assert!(space.take_to_propose(MIB));
        assert_eq!(reads.load(Ordering::Relaxed), 2);
        assert_eq!((space.free(), space.propose_floor()), (19 * MIB, 16 * MIB));
        // A reading no longer forgets the room grown since the last measure:
        // at 18 MiB free the floor (16 MiB) leaves room for no 1 MiB write.
        disk.store(18 * MIB, Ordering::Relaxed);
        assert!(!space.short());
        assert!(space.take_to_propose(MIB) && !space.take_to_propose(MIB));
        assert_eq!(reads.load(Ordering::Relaxed), 3);
        // 18 MiB is over the 17 MiB floor, but a write was refused: short,
        // until the next look.
        assert!(space.short() && !space.short());
        assert_eq!((space.free(), space.propose_floor()), (18 * MIB, 17 * MIB));
    }

    #[test]
    fn followers_keep_half_the_minimum_and_a_snapshot_leaves_it_free() {
        let (space, disk, _) = space(6 * MIB);
        space.set_snapshot_room(MIB);
        assert_eq!(space.accept_floor(), 4 * MIB);
        // Entries count once: the leader already kept room for their share
        // of a snapshot.
        assert!(space.take_to_accept(2 * MIB));
        assert_eq!(space.free(), 4 * MIB);
        disk.store(4 * MIB, Ordering::Relaxed);
        assert!(!space.take_to_accept(MIB));
        assert_eq!(space.free(), 4 * MIB);
        // A 1 MiB snapshot needs 5 MiB free, and is then counted as taken.
        assert!(!space.take_for_snapshot());
        disk.store(5 * MIB, Ordering::Relaxed);
        assert!(space.take_for_snapshot());
        assert_eq!(space.free(), 4 * MIB);
    }
}
