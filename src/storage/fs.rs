//! The one trait all file I/O goes through.
//!
//! [`FileSystem`] is deliberately small: exactly the calls whose durability the
//! storage layer reasons about. [`StdFs`] maps them onto the operating system;
//! `testing::SimFs` keeps only what was synced across a simulated power loss, which
//! is how the crash tests check that every acknowledged write was really made
//! durable.
//!
//! Durability rules the callers follow:
//! - file contents are durable after [`WritableFile::sync_data`] (or `sync_all`);
//! - a created, renamed or removed directory entry is durable after
//!   [`FileSystem::sync_dir`] on its directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A file open for positional writes.
pub trait WritableFile: Send {
    /// Writes all of `data` at `offset`, extending the file if needed.
    fn write_all_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes the file's data durable (`fdatasync`): enough when its size and
    /// allocation did not change since the last `sync_all`.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Makes data and metadata durable (`fsync`).
    fn sync_all(&mut self) -> io::Result<()>;
    /// Current length of the file.
    fn len(&self) -> io::Result<u64>;
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// A held directory lock; dropping it releases the lock.
pub trait DirLock: Send + Sync {}

/// Bytes handed to [`read_in_pieces`]'s consumer at a time, at most.
pub const READ_PIECE_BYTES: usize = 1 << 20;

/// Reads `reader` to its end, handing each piece (up to [`READ_PIECE_BYTES`])
/// to `take`; stops at `take`'s first error. A read error becomes `on_io`'s.
/// For files too large to hold whole: a snapshot, a backup.
pub fn read_in_pieces<E>(
    reader: &mut dyn io::Read,
    on_io: impl Fn(io::Error) -> E,
    mut take: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let mut piece = vec![0; READ_PIECE_BYTES];
    loop {
        match reader.read(&mut piece) {
            Ok(0) => return Ok(()),
            Ok(read) => take(&piece[..read])?,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(on_io(error)),
        }
    }
}

pub trait FileSystem: Send + Sync + 'static {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries in `dir`, in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// The whole content of a file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Opens a file to read it front to back in pieces (a large snapshot,
    /// without holding all of it). By default the whole file, read at once.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn io::Read + Send>> {
        Ok(Box::new(io::Cursor::new(self.read(path)?)))
    }
    /// Creates a new, empty file; fails if it exists.
    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>>;
    /// Opens an existing file for writing without truncating it.
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn WritableFile>>;
    /// Opens an existing file for writes that are durable when they return
    /// (`O_DIRECT | O_DSYNC`): no page cache, no separate sync. Offsets, lengths
    /// and buffer addresses must be multiples of [`DIRECT_IO_ALIGNMENT`]. Fails
    /// where the file system cannot do direct I/O; callers then fall back.
    fn open_direct_sync(&self, path: &Path) -> io::Result<Box<dyn WritableFile>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Bytes free for new data on the file system holding `dir` (what an
    /// unprivileged process may use). `u64::MAX` where that is not known, which
    /// is also the simulated disk's answer: it never fills.
    fn available_space(&self, _dir: &Path) -> io::Result<u64> {
        Ok(u64::MAX)
    }
    /// Takes an exclusive, advisory lock on `dir`, failing at once with
    /// `io::ErrorKind::WouldBlock` if someone else holds it.
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>>;
}

/// Alignment of offsets, lengths and buffers for direct I/O: the page size,
/// which covers every logical block size in use.
pub const DIRECT_IO_ALIGNMENT: usize = 4096;

/// Bytes free for new data from `statvfs`'s counts. A file system that
/// reports no size at all (zero blocks, as many FUSE file systems do, LazyFS
/// among them) has not run out of space: its free space is not known.
fn free_bytes(blocks: u64, available_blocks: u64, fragment_bytes: u64) -> u64 {
    match blocks {
        0 => u64::MAX,
        _ => available_blocks.saturating_mul(fragment_bytes),
    }
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

struct StdFile(File);

impl WritableFile for StdFile {
    fn write_all_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_all_at(data, offset)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn sync_all(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

/// The lock file stays open for as long as the lock is held; closing it releases
/// the `flock`.
struct StdDirLock {
    _file: File,
}

impl DirLock for StdDirLock {}

/// Name of the lock file inside a data directory.
pub const LOCK_FILE: &str = "LOCK";

impl FileSystem for StdFs {
    fn available_space(&self, dir: &Path) -> io::Result<u64> {
        let stats = rustix::fs::statvfs(dir).map_err(io::Error::from)?;
        Ok(free_bytes(stats.f_blocks, stats.f_bavail, stats.f_frsize))
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn io::Read + Send>> {
        Ok(Box::new(File::open(path)?))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut file = File::open(path)?;
        let mut data = Vec::with_capacity(file.metadata()?.len() as usize);
        file.read_to_end(&mut data)?;
        Ok(data)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(StdFile(file)))
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(StdFile(file)))
    }

    fn open_direct_sync(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(path)?;
        Ok(Box::new(StdFile(file)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        let path: PathBuf = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(StdDirLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            Err(fs::TryLockError::Error(err)) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_counted_in_fragments_and_unknown_where_no_size_is_reported() {
        assert_eq!(free_bytes(1_000, 250, 4096), 250 * 4096);
        assert_eq!(free_bytes(1_000, 0, 4096), 0, "a full disk has no room");
        assert_eq!(free_bytes(0, 0, 512), u64::MAX, "no size reported");
    }
}
