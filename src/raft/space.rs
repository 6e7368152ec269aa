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
//!   would hold back the deletes queued behind them too.
//! - a snapshot starts only when `min_free` stays free after it, and a node
//!   short of space snapshots by itself only when that frees space (the log
//!   it covers is more than twice the snapshot, after deletes).
//!
//! Invariant: the free space is read with `statvfs` at each housekeeping
//! tick, and twice what was let through since is subtracted from that
//! reading (each byte takes log space now and snapshot room later); a
//! request the estimate would refuse reads again before it is refused. So a
//! burst of writes between ticks is counted, and a disk that others freed is
//! seen at once.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
    estimate: AtomicU64,
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
            estimate: AtomicU64::new(u64::MAX),
        };
        space.refresh();
        space
    }

    /// Reads the free space again and returns it; `None` (and the old
    /// estimate kept) when the file system does not say.
    pub fn refresh(&self) -> Option<u64> {
        match (self.read_free)() {
            Ok(free) => {
                self.estimate.store(free, Ordering::Relaxed);
                Some(free)
            }
            Err(error) => {
                tracing::debug!(%error, "reading the free space of {}", self.dir.display());
                None
            }
        }
    }

    /// The data directory whose disk this watches.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Free bytes, as last estimated.
    pub fn free(&self) -> u64 {
        self.estimate.load(Ordering::Relaxed)
    }

    /// The free space a leader keeps before it refuses writes that add
    /// data, given that a snapshot of the data would take `snapshot_bytes`.
    pub fn propose_floor(&self, snapshot_bytes: u64) -> u64 {
        self.min_free.saturating_add(snapshot_bytes)
    }

    /// The free space a member keeps before it refuses entries that add data.
    pub fn accept_floor(&self) -> u64 {
        self.min_free / 2
    }

    /// Whether `bytes` more may be written keeping `floor` bytes free; if
    /// so they are counted against the estimate, twice (see the module doc).
    pub fn take(&self, bytes: u64, floor: u64) -> bool {
        let cost = bytes.saturating_mul(2);
        let needed = floor.saturating_add(cost);
        if self.free() < needed && self.refresh().is_none_or(|free| free < needed) {
            return false;
        }
        let _ = self
            .estimate
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |free| {
                Some(free.saturating_sub(cost))
            });
        true
    }

    /// Whether a snapshot of `snapshot_bytes` fits with `min_free` still
    /// free after it (reading the disk again): a snapshot must not take the
    /// room followers keep for the entries the leader let through.
    pub fn fits_snapshot(&self, snapshot_bytes: u64) -> bool {
        let free = self.refresh().unwrap_or_else(|| self.free());
        free >= self.propose_floor(snapshot_bytes)
    }

    /// The message a refused request carries.
    pub fn shortage(&self, floor: u64) -> String {
        let kept = match floor > self.min_free {
            true => "--min-free-space plus room for a snapshot of the data",
            false => "half of --min-free-space",
        };
        format!(
            "{} MiB free on the disk holding {}, under the {} MiB kept free ({kept})",
            self.free() >> 20,
            self.dir.display(),
            floor.div_ceil(1 << 20),
        )
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

    #[test]
    fn writes_are_counted_between_readings_and_a_refusal_reads_again() {
        let (space, free, reads) = space(20 << 20);
        let floor = space.propose_floor(2 << 20);
        assert_eq!(floor, 10 << 20);
        assert_eq!(reads.load(Ordering::Relaxed), 1);
        // 10 MiB above the floor: five 1 MiB writes pass without a reading,
        // each counted twice (its log record and its share of a snapshot).
        for _ in 0..5 {
            assert!(space.take(1 << 20, floor));
        }
        assert_eq!(reads.load(Ordering::Relaxed), 1);
        assert_eq!(space.free(), 10 << 20);
        // The disk still has 20 MiB (preallocated segments): the next write
        // reads again and passes.
        assert!(space.take(1 << 20, floor));
        assert_eq!(reads.load(Ordering::Relaxed), 2);
        // The disk fills meanwhile; the estimate (18 MiB) does not know yet.
        free.store(10 << 20, Ordering::Relaxed);
        assert!(space.take(4 << 20, floor));
        assert_eq!(reads.load(Ordering::Relaxed), 2);
        // At the floor: read again, and refused, with nothing counted.
        assert!(!space.take(1, floor));
        assert_eq!(reads.load(Ordering::Relaxed), 3);
        assert_eq!(space.free(), 10 << 20);
        // Followers keep half of the minimum, with no snapshot room: the
        // leader's floor leaves them room for what it let through.
        let accept = space.accept_floor();
        assert_eq!(accept, 4 << 20);
        free.store(5 << 20, Ordering::Relaxed);
        space.refresh();
        assert!(!space.take(1 << 20, accept));
        assert!(space.take(512 << 10, accept));
    }
}
