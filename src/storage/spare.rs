//! The log's next segment, made before it is needed.
//!
//! A preallocated segment is zero-filled and synced when it is made (so that
//! appends never change its size and `fdatasync` has no metadata to write).
//! Done at rotation, that fill holds up every writer waiting on the commit:
//! megabytes of writes and a sync on the commit path, the largest part of the
//! tail latency under steady load (BENCHMARKS.md). So the log makes its next
//! segment as a *spare*: a file named [`SPARE_FILE_NAME`], filled and synced
//! by a helper thread while the active segment fills. Rotation then only
//! claims it: writes the header, syncs it, renames the spare to the segment's
//! name and syncs the directory, in that order.
//!
//! Invariants:
//! - a file with a segment's name always has a durable header: the header is
//!   synced before the rename, and the rename before any record is appended;
//! - a spare is never part of the log. One left by a crash (or a helper that
//!   was cut short) is removed when the directory is opened, whatever state it
//!   is in;
//! - at most one spare exists per log directory, and only its log touches it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use super::fs::{FileSystem, WritableFile};
use super::segment::{encode_segment_header, segment_path};
use crate::error::{Error, Result};

/// The spare's file name in the log directory. Its `.tmp` ending marks it as
/// something to remove at open, like an interrupted snapshot.
pub const SPARE_FILE_NAME: &str = "spare-segment.wal.tmp";

/// Bytes zero-filled per write while preparing a spare or growing a segment.
const FILL_CHUNK_BYTES: usize = 1 << 20;

/// A prepared spare: created, (when preallocating) zero-filled, and synced,
/// with no header yet.
pub struct Spare {
    pub file: Box<dyn WritableFile>,
    /// Bytes of records (header included) the segment takes before the log
    /// rotates again.
    pub capacity: u64,
    /// Bytes the file holds: `capacity` when preallocated, else none.
    pub allocated: u64,
}

/// Creates the spare file of `size` bytes in `dir`, zero-filled if
/// `preallocate`, and syncs it. Stops early (with an error) once `cancel` is
/// set. Out of space, it removes what it made and answers [`Error::NoSpace`].
pub fn prepare(
    fs: &dyn FileSystem,
    dir: &Path,
    size: u64,
    preallocate: bool,
    cancel: &AtomicBool,
) -> Result<Spare> {
    let path = spare_path(dir);
    match fill(fs, &path, size, preallocate, cancel) {
        Ok(spare) => Ok(spare),
        Err(error) => {
            // Nothing refers to the spare; leaving it would hold the space.
            let removed = remove_if_present(fs, &path);
            match error {
                Error::Io { source, .. } if crate::error::is_no_space(&source) => {
                    removed.map_err(|err| Error::io(&path, err))?;
                    Err(Error::NoSpace {
                        path: dir.to_path_buf(),
                    })
                }
                other => Err(other),
            }
        }
    }
}

fn fill(
    fs: &dyn FileSystem,
    path: &Path,
    size: u64,
    preallocate: bool,
    cancel: &AtomicBool,
) -> Result<Spare> {
    let io_error = |err| Error::io(path, err);
    remove_if_present(fs, path).map_err(io_error)?;
    let mut file = fs.create(path).map_err(io_error)?;
    if preallocate {
        write_zeros(&mut *file, 0, size, cancel).map_err(io_error)?;
    }
    file.sync_all().map_err(io_error)?;
    Ok(Spare {
        file,
        capacity: size,
        allocated: if preallocate { size } else { 0 },
    })
}

/// Writes zeros over `from..to` of `file`, a chunk at a time, stopping with
/// an `Interrupted` error once `cancel` is set. Zeros are what a reader of
/// the log takes for unused space, so stopping part way (cancelled, or out of
/// space) leaves nothing that reads as a record.
pub fn write_zeros(
    file: &mut dyn WritableFile,
    from: u64,
    to: u64,
    cancel: &AtomicBool,
) -> std::io::Result<()> {
    let zeros = vec![0u8; FILL_CHUNK_BYTES.min(to.saturating_sub(from) as usize)];
    let mut offset = from;
    while offset < to {
        if cancel.load(Ordering::Relaxed) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "spare no longer needed",
            ));
        }
        let len = FILL_CHUNK_BYTES.min((to - offset) as usize);
        file.write_all_at(offset, &zeros[..len])?;
        offset += len as u64;
    }
    Ok(())
}

/// Turns the spare into the segment that starts at `first_seq`: header,
/// sync, rename, directory sync. Returns the segment's path.
pub fn claim(
    fs: &dyn FileSystem,
    dir: &Path,
    spare: &mut Spare,
    first_seq: u64,
) -> Result<PathBuf> {
    let from = spare_path(dir);
    let header = encode_segment_header(first_seq);
    let io_error = |err| Error::io(&from, err);
    spare.file.write_all_at(0, &header).map_err(io_error)?;
    // Without preallocation the header extends the file: its size must be
    // durable too.
    if (header.len() as u64) > spare.allocated {
        spare.file.sync_all().map_err(io_error)?;
    } else {
        spare.file.sync_data().map_err(io_error)?;
    }
    let to = segment_path(dir, first_seq);
    fs.rename(&from, &to).map_err(io_error)?;
    fs.sync_dir(dir).map_err(|err| Error::io(dir, err))?;
    Ok(to)
}

/// Removes a spare left in `dir` (by a crash, or a log closed while its
/// helper worked); true if there was one.
pub fn remove_leftover(fs: &dyn FileSystem, dir: &Path) -> Result<bool> {
    let path = spare_path(dir);
    let removed = fs.remove(&path);
    match removed {
        Ok(()) => {
            fs.sync_dir(dir).map_err(|err| Error::io(dir, err))?;
            Ok(true)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(Error::io(&path, err)),
    }
}

fn remove_if_present(fs: &dyn FileSystem, path: &Path) -> std::io::Result<()> {
    match fs.remove(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

pub fn spare_path(dir: &Path) -> PathBuf {
    dir.join(SPARE_FILE_NAME)
}

/// A spare being prepared on a helper thread.
pub struct Preparing {
    cancel: Arc<AtomicBool>,
    handle: JoinHandle<Result<Spare>>,
}

impl Preparing {
    /// Starts preparing a spare of `size` bytes on a new thread.
    pub fn start(
        fs: Arc<dyn FileSystem>,
        dir: PathBuf,
        size: u64,
        preallocate: bool,
    ) -> std::io::Result<Preparing> {
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancel);
        let handle = std::thread::Builder::new()
            .name("walrus-spare-segment".into())
            .spawn(move || prepare(&*fs, &dir, size, preallocate, &flag))?;
        Ok(Preparing { cancel, handle })
    }

    /// Waits for the spare (rotation needs it now; a fill under way is
    /// closer to done than a new one would be).
    pub fn finish(self) -> Result<Spare> {
        self.handle.join().unwrap_or_else(|_| {
            Err(Error::Failed {
                reason: "the thread preparing the next log segment panicked".into(),
            })
        })
    }

    /// Stops the helper at its next chunk and waits for it, so nothing
    /// writes in the directory once the log is gone. The spare is removed.
    pub fn abandon(self, fs: &dyn FileSystem, dir: &Path) {
        self.cancel.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
        let _ = remove_if_present(fs, &spare_path(dir));
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::storage::fs::{DirLock, StdFs};
    use crate::storage::segment::decode_segment_header;
    use crate::storage::wal::{MIN_SEGMENT_BYTES, SpareSegment, Wal, WalOptions};

    fn options(spare: SpareSegment) -> WalOptions {
        WalOptions {
            segment_bytes: MIN_SEGMENT_BYTES,
            spare,
            ..WalOptions::default()
        }
    }

    fn open(fs: Arc<dyn FileSystem>, dir: &Path, spare: SpareSegment) -> Wal {
        let (wal, _report) =
            Wal::open(fs, dir, options(spare), u64::MAX, 1, |_, _| Ok(())).expect("open the log");
        wal
    }

    /// Appends 1 KiB records until the log has `segments` segments.
    fn append_until(wal: &mut Wal, segments: usize) {
        let payload = vec![7u8; 1024];
        for _ in 0..10_000 {
            if wal.segment_count() >= segments {
                return;
            }
            wal.append([&payload[..]]).expect("append");
            wal.sync().expect("sync");
        }
        panic!("the log never reached {segments} segments");
    }

    fn wait_for_spare(dir: &Path) -> std::fs::Metadata {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(metadata) = std::fs::metadata(spare_path(dir)) {
                return metadata;
            }
            assert!(Instant::now() < deadline, "no spare segment appeared");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn rotation_claims_the_spare_made_in_the_background() {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut wal = open(Arc::new(StdFs), temp.path(), SpareSegment::Background);
        let spare_inode = wait_for_spare(temp.path()).ino();

        append_until(&mut wal, 2);
        let second = wal.segment_first_seqs()[1];
        let segment = segment_path(temp.path(), second);
        let metadata = std::fs::metadata(&segment).expect("the second segment");
        assert_eq!(metadata.ino(), spare_inode, "the spare became the segment");
        assert_eq!(metadata.len(), MIN_SEGMENT_BYTES, "zero-filled to its size");
        let data = std::fs::read(&segment).expect("read");
        assert_eq!(decode_segment_header(&data).expect("a header"), second);

        // The next spare is on its way, and closing the log takes it away.
        wait_for_spare(temp.path());
        drop(wal);
        assert!(
            !spare_path(temp.path()).exists(),
            "the spare outlived its log"
        );
    }

    #[test]
    fn a_spare_left_behind_is_removed_at_open_and_reported() {
        let temp = tempfile::tempdir().expect("temp dir");
        std::fs::write(spare_path(temp.path()), b"half made").expect("a leftover");
        let (mut wal, report) = Wal::open(
            Arc::new(StdFs),
            temp.path(),
            options(SpareSegment::OnDemand),
            u64::MAX,
            1,
            |_, _| Ok(()),
        )
        .expect("open");
        assert!(!spare_path(temp.path()).exists());
        assert!(
            report
                .notes
                .iter()
                .any(|note| note.contains("unused spare")),
            "{:?}",
            report.notes
        );
        // Made on demand: rotation works and leaves no spare.
        append_until(&mut wal, 3);
        assert!(!spare_path(temp.path()).exists());
    }

    /// The real disk, reporting `free` bytes available.
    struct NearlyFull {
        free: u64,
    }

    impl FileSystem for NearlyFull {
        fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
            StdFs.create_dir_all(dir)
        }
        fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
            StdFs.list(dir)
        }
        fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
            StdFs.read(path)
        }
        fn create(&self, path: &Path) -> std::io::Result<Box<dyn WritableFile>> {
            StdFs.create(path)
        }
        fn open_write(&self, path: &Path) -> std::io::Result<Box<dyn WritableFile>> {
            StdFs.open_write(path)
        }
        fn open_direct_sync(&self, path: &Path) -> std::io::Result<Box<dyn WritableFile>> {
            StdFs.open_direct_sync(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
            StdFs.rename(from, to)
        }
        fn remove(&self, path: &Path) -> std::io::Result<()> {
            StdFs.remove(path)
        }
        fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
            StdFs.sync_dir(dir)
        }
        fn available_space(&self, _dir: &Path) -> std::io::Result<u64> {
            Ok(self.free)
        }
        fn lock_dir(&self, dir: &Path) -> std::io::Result<Box<dyn DirLock>> {
            StdFs.lock_dir(dir)
        }
    }

    #[test]
    fn no_spare_is_made_without_room_for_many_segments() {
        let temp = tempfile::tempdir().expect("temp dir");
        // Room for eight segments after the reserve: too few to hold one back.
        let free = crate::storage::wal::SPACE_RESERVE_BYTES + 8 * MIN_SEGMENT_BYTES;
        let fs: Arc<dyn FileSystem> = Arc::new(NearlyFull { free });
        let mut wal = open(fs, temp.path(), SpareSegment::Background);
        append_until(&mut wal, 3);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !spare_path(temp.path()).exists(),
            "a spare on a nearly full disk"
        );
    }
}
