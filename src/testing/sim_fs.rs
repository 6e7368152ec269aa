//! A simulated disk with a page cache that a "power loss" empties.
//!
//! Every file keeps two views: `data` (what reads see, like the page cache) and
//! `durable` (what the disk holds). `sync_data`/`sync_all` copy the pending writes
//! into `durable`; `sync_dir` does the same for a directory's entries. [`SimFs::crash`]
//! throws away everything unsynced, and can keep an in-order prefix of the
//! unsynced writes with the last one torn at a random byte, as a real disk may.
//!
//! Faults can be injected: failing writes, and failing syncs that (as on Linux
//! after an `fsync` error) also drop the dirty data they were meant to persist;
//! or, reproducibly, at exactly the Nth I/O operation ([`SimFs::fault_at`]):
//! that one operation fails with `EIO`, or the power goes while it runs. A
//! direct (`O_DIRECT|O_DSYNC`) write cut by the power is torn at sector
//! granularity: each 512-byte sector of it is either wholly on the disk or
//! not, in any combination, as a real device may leave it.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::storage::fs::{DirLock, FileSystem, WritableFile};

/// Which operations fail with `EIO` from now on, and how slow the device is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    pub fail_writes: bool,
    pub fail_syncs: bool,
    /// Real time every sync and every direct (`O_DSYNC`) write takes, as a
    /// slow disk's flush does (zero: none). Spent with the disk unlocked.
    pub sync_delay: std::time::Duration,
}

/// What happens at the planned operation ([`SimFs::fault_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlannedFault {
    /// That operation fails with `EIO` (and, for a sync, drops the dirty
    /// data, as Linux does); later ones work.
    Fail,
    /// The power goes during that operation: it does not complete (a direct
    /// write is torn by sector), unsynced data is lost (`torn`: an in-order
    /// prefix may survive, the last write cut), and the disk is gone until
    /// [`SimFs::restart`].
    Crash { torn: bool },
    /// The process dies during that operation (kill -9): the operation does
    /// not happen, but everything written before it stays, since the page
    /// cache outlives the process; every call fails until [`SimFs::restart`].
    ProcessDies,
}

/// The size of a device sector: the unit a direct write lands in whole.
pub const SECTOR_BYTES: usize = 512;

#[derive(Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last sync, in order: (offset, bytes).
    pending: Vec<(u64, Vec<u8>)>,
}

impl Inode {
    fn apply(target: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
        let end = offset as usize + bytes.len();
        if target.len() < end {
            target.resize(end, 0);
        }
        target[offset as usize..end].copy_from_slice(bytes);
    }

    fn sync(&mut self) {
        for (offset, bytes) in std::mem::take(&mut self.pending) {
            Inode::apply(&mut self.durable, offset, &bytes);
        }
    }
}

#[derive(Default)]
struct Directory {
    entries: BTreeMap<String, u64>,
    durable_entries: BTreeMap<String, u64>,
}

struct State {
    rng: StdRng,
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    dirs: BTreeMap<PathBuf, Directory>,
    locks: HashMap<PathBuf, u64>,
    generation: u64,
    faults: Faults,
    syncs: u64,
    /// Set by a crash: the process is gone, so every call fails until restart.
    dead: bool,
    /// Operations that change the disk (writes, syncs, creations, renames,
    /// removals), counted from 1.
    operations: u64,
    /// The operation number at which a planned fault strikes.
    planned: Option<(u64, PlannedFault)>,
}

/// See the module documentation. Cloning shares the same disk.
#[derive(Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
    /// Set on a handle given to one simulated process
    /// ([`SimFs::for_this_process`]): the disk's generation when it was made.
    /// After a crash every call through it fails, as the process is gone.
    pinned: Option<u64>,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

fn eio() -> io::Error {
    io::Error::other("injected I/O error")
}

fn dead_error() -> io::Error {
    io::Error::other("simulated crash: the disk is gone until restart")
}

fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let parent = path.parent().ok_or_else(|| not_found(path))?;
    let name = path.file_name().ok_or_else(|| not_found(path))?;
    Ok((parent.to_path_buf(), name.to_string_lossy().into_owned()))
}

impl State {
    fn lookup(&self, path: &Path) -> io::Result<u64> {
        let (dir, name) = split(path)?;
        self.dirs
            .get(&dir)
            .and_then(|directory| directory.entries.get(&name))
            .copied()
            .ok_or_else(|| not_found(path))
    }

    fn dir_mut(&mut self, dir: &Path) -> io::Result<&mut Directory> {
        self.dirs.get_mut(dir).ok_or_else(|| not_found(dir))
    }

    /// Counts a disk-changing operation and applies the planned fault if it
    /// is this one: `Ok(())` to go on, or the error the caller returns. A
    /// crash here happens before the operation takes effect; the caller of
    /// a direct write tears it first ([`State::begin_direct_write`]).
    fn begin(&mut self) -> io::Result<()> {
        if self.dead {
            return Err(dead_error());
        }
        self.operations += 1;
        match self.planned {
            Some((at, fault)) if at == self.operations => {
                self.planned = None;
                match fault {
                    PlannedFault::Fail => Err(eio()),
                    PlannedFault::Crash { torn } => {
                        self.crash(torn);
                        Err(dead_error())
                    }
                    PlannedFault::ProcessDies => {
                        self.process_dies();
                        Err(dead_error())
                    }
                }
            }
            _ => Ok(()),
        }
    }

    /// Like [`State::begin`] for a direct write of `data` at `offset` to
    /// `inode`: if the power goes during it, a random subset of its sectors
    /// reaches the disk.
    fn begin_direct_write(&mut self, inode: u64, offset: u64, data: &[u8]) -> io::Result<()> {
        let crashes_now = !self.dead
            && matches!(self.planned, Some((at, PlannedFault::Crash { .. })) if at == self.operations + 1);
        if crashes_now && let Some(file) = self.inodes.get_mut(&inode) {
            for (index, sector) in data.chunks(SECTOR_BYTES).enumerate() {
                if self.rng.random_bool(0.5) {
                    let at = offset + (index * SECTOR_BYTES) as u64;
                    Inode::apply(&mut file.durable, at, sector);
                }
            }
        }
        self.begin()
    }

    /// See [`SimFs::crash`].
    fn crash(&mut self, torn: bool) {
        for directory in self.dirs.values_mut() {
            directory.entries = directory.durable_entries.clone();
        }
        let live: std::collections::HashSet<u64> = self
            .dirs
            .values()
            .flat_map(|directory| directory.entries.values().copied())
            .collect();
        self.inodes.retain(|id, _| live.contains(id));
        for inode in self.inodes.values_mut() {
            let pending = std::mem::take(&mut inode.pending);
            if torn && !pending.is_empty() {
                let kept = self.rng.random_range(0..=pending.len());
                for (index, (offset, bytes)) in pending.iter().enumerate().take(kept + 1) {
                    if index < kept {
                        Inode::apply(&mut inode.durable, *offset, bytes);
                    } else if index < pending.len() {
                        let cut = self.rng.random_range(0..=bytes.len());
                        Inode::apply(&mut inode.durable, *offset, &bytes[..cut]);
                    }
                }
            }
            inode.data = inode.durable.clone();
        }
        self.process_dies();
    }

    /// The process using the disk is gone: its locks are released and its
    /// open files fail from now on; the disk's contents are untouched.
    fn process_dies(&mut self) {
        self.locks.clear();
        self.generation += 1;
        self.faults = Faults::default();
        self.dead = true;
    }
}

impl SimFs {
    pub fn new(seed: u64) -> Self {
        SimFs {
            pinned: None,
            state: Arc::new(Mutex::new(State {
                rng: StdRng::seed_from_u64(seed),
                inodes: HashMap::new(),
                next_inode: 1,
                dirs: BTreeMap::new(),
                locks: HashMap::new(),
                generation: 0,
                faults: Faults::default(),
                syncs: 0,
                dead: false,
                operations: 0,
                planned: None,
            })),
        }
    }

    /// A handle for one process started now: once the power is cut, every
    /// call through it fails, even after [`SimFs::restart`] lets a new
    /// process in; so a task the dead process left running cannot touch what
    /// the new one sees.
    pub fn for_this_process(&self) -> SimFs {
        SimFs {
            state: self.state.clone(),
            pinned: Some(self.state.lock().generation),
        }
    }

    /// The state, if this handle's process is still alive.
    fn live(&self) -> io::Result<parking_lot::MutexGuard<'_, State>> {
        let state = self.state.lock();
        match self.pinned {
            Some(generation) if generation != state.generation => Err(dead_error()),
            _ => Ok(state),
        }
    }

    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().faults = faults;
    }

    /// Plans `fault` for the `operation`th disk-changing operation from now
    /// (1 is the next one). A test runs a workload once to count its
    /// operations ([`SimFs::operation_count`]), then once per N with a fault
    /// at N: every crash point of the workload, each reproducible.
    pub fn fault_at(&self, operation: u64, fault: PlannedFault) {
        let mut state = self.state.lock();
        state.planned = Some((state.operations + operation, fault));
    }

    /// Disk-changing operations so far.
    pub fn operation_count(&self) -> u64 {
        self.state.lock().operations
    }

    /// Number of successful file syncs so far.
    pub fn sync_count(&self) -> u64 {
        self.state.lock().syncs
    }

    /// Simulates a power loss: every unsynced byte and directory entry is lost,
    /// except, when `torn` is set, an in-order prefix of each file's unsynced
    /// writes whose last write may be cut at a random byte. Locks are released,
    /// and every call fails until [`SimFs::restart`], as the process that was
    /// using the disk is gone.
    pub fn crash(&self, torn: bool) {
        self.state.lock().crash(torn);
    }

    /// Lets calls through again after a crash: a new process may use the disk.
    pub fn restart(&self) {
        self.state.lock().dead = false;
    }

    /// Overwrites bytes of a file in both views, as on-disk corruption would.
    pub fn corrupt(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock();
        let id = state.lookup(path)?;
        let inode = state.inodes.get_mut(&id).ok_or_else(|| not_found(path))?;
        Inode::apply(&mut inode.data, offset, bytes);
        Inode::apply(&mut inode.durable, offset, bytes);
        Ok(())
    }

    /// Cuts a file to `len` bytes in both views.
    pub fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        let id = state.lookup(path)?;
        let inode = state.inodes.get_mut(&id).ok_or_else(|| not_found(path))?;
        inode.data.truncate(len as usize);
        inode.durable.truncate(len as usize);
        Ok(())
    }

    fn open_existing(
        &self,
        path: &Path,
        durable_writes: bool,
    ) -> io::Result<Box<dyn WritableFile>> {
        let state = self.live()?;
        if state.dead {
            return Err(dead_error());
        }
        let inode = state.lookup(path)?;
        Ok(Box::new(SimFile {
            state: self.state.clone(),
            inode,
            generation: state.generation,
            durable_writes,
        }))
    }

    /// Writes a whole file and makes it durable, as a tool outside walrus might.
    pub fn put_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut file = self.create(path)?;
        file.write_all_at(0, data)?;
        file.sync_all()?;
        self.sync_dir(path.parent().ok_or_else(|| not_found(path))?)
    }
}

struct SimFile {
    state: Arc<Mutex<State>>,
    inode: u64,
    /// The disk's generation when the file was opened: a handle held across
    /// a crash belongs to the process that died, and fails from then on.
    generation: u64,
    /// Opened `O_DSYNC`: every write is durable when it returns.
    durable_writes: bool,
}

impl SimFile {
    fn still_open(&self, state: &State) -> io::Result<()> {
        if state.generation == self.generation {
            Ok(())
        } else {
            Err(dead_error())
        }
    }
}

impl WritableFile for SimFile {
    fn write_all_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock();
        self.still_open(&state)?;
        if self.durable_writes {
            state.begin_direct_write(self.inode, offset, data)?;
        } else {
            state.begin()?;
        }
        if state.faults.fail_writes {
            return Err(eio());
        }
        let alignment = crate::storage::fs::DIRECT_IO_ALIGNMENT;
        if self.durable_writes
            && (!(offset as usize).is_multiple_of(alignment)
                || !data.len().is_multiple_of(alignment))
        {
            // What O_DIRECT answers to an unaligned write.
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let inode = state.inodes.entry(self.inode).or_default();
        Inode::apply(&mut inode.data, offset, data);
        if self.durable_writes {
            Inode::apply(&mut inode.durable, offset, data);
            let delay = state.faults.sync_delay;
            drop(state);
            std::thread::sleep(delay);
        } else {
            inode.pending.push((offset, data.to_vec()));
        }
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut state = self.state.lock();
        self.still_open(&state)?;
        let planned = state.begin();
        if planned.is_err() && !state.dead {
            // A planned failure: like Linux, the dirty pages are gone too.
            state.inodes.entry(self.inode).or_default().pending.clear();
        }
        planned?;
        let fail = state.faults.fail_syncs;
        let inode = state.inodes.entry(self.inode).or_default();
        if fail {
            // Like Linux after a failed fsync: the dirty pages are gone for good.
            inode.pending.clear();
            return Err(eio());
        }
        inode.sync();
        state.syncs += 1;
        let delay = state.faults.sync_delay;
        drop(state);
        std::thread::sleep(delay);
        Ok(())
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        let state = self.state.lock();
        Ok(state
            .inodes
            .get(&self.inode)
            .map_or(0, |inode| inode.data.len() as u64))
    }
}

struct SimLock {
    state: Arc<Mutex<State>>,
    dir: PathBuf,
    generation: u64,
}

impl DirLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut state = self.state.lock();
        if state.locks.get(&self.dir) == Some(&self.generation) {
            state.locks.remove(&self.dir);
        }
    }
}

impl FileSystem for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.live()?;
        if state.dead {
            return Err(dead_error());
        }
        for ancestor in dir.ancestors() {
            state.dirs.entry(ancestor.to_path_buf()).or_default();
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.live()?;
        if state.dead {
            return Err(dead_error());
        }
        let directory = state.dirs.get(dir).ok_or_else(|| not_found(dir))?;
        Ok(directory.entries.keys().cloned().collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.live()?;
        if state.dead {
            return Err(dead_error());
        }
        let id = state.lookup(path)?;
        Ok(state
            .inodes
            .get(&id)
            .map(|inode| inode.data.clone())
            .unwrap_or_default())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let mut state = self.live()?;
        state.begin()?;
        if state.faults.fail_writes {
            return Err(eio());
        }
        let (dir, name) = split(path)?;
        let id = state.next_inode;
        let directory = state.dir_mut(&dir)?;
        if directory.entries.contains_key(&name) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        directory.entries.insert(name, id);
        state.next_inode += 1;
        state.inodes.insert(id, Inode::default());
        Ok(Box::new(SimFile {
            state: self.state.clone(),
            inode: id,
            generation: state.generation,
            durable_writes: false,
        }))
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        self.open_existing(path, false)
    }

    fn open_direct_sync(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        self.open_existing(path, true)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.live()?;
        state.begin()?;
        let id = state.lookup(from)?;
        let (from_dir, from_name) = split(from)?;
        let (to_dir, to_name) = split(to)?;
        state.dir_mut(&from_dir)?.entries.remove(&from_name);
        state.dir_mut(&to_dir)?.entries.insert(to_name, id);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.live()?;
        state.begin()?;
        let (dir, name) = split(path)?;
        state
            .dir_mut(&dir)?
            .entries
            .remove(&name)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.live()?;
        state.begin()?;
        if state.faults.fail_syncs {
            return Err(eio());
        }
        let directory = state.dir_mut(dir)?;
        directory.durable_entries = directory.entries.clone();
        Ok(())
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        let mut state = self.live()?;
        if state.dead {
            return Err(dead_error());
        }
        if state.locks.contains_key(dir) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let generation = state.generation;
        state.locks.insert(dir.to_path_buf(), generation);
        Ok(Box::new(SimLock {
            state: self.state.clone(),
            dir: dir.to_path_buf(),
            generation,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_only_synced_data_and_entries() {
        let fs = SimFs::new(7);
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let mut synced = fs.create(&dir.join("a")).unwrap();
        synced.write_all_at(0, b"kept").unwrap();
        synced.sync_data().unwrap();
        fs.sync_dir(dir).unwrap();
        synced.write_all_at(4, b" lost").unwrap();
        let mut unnamed = fs.create(&dir.join("b")).unwrap();
        unnamed.write_all_at(0, b"data").unwrap();
        unnamed.sync_data().unwrap();
        fs.crash(false);
        assert!(
            fs.read(&dir.join("a")).is_err(),
            "the disk is gone until restart"
        );
        fs.restart();
        assert_eq!(fs.read(&dir.join("a")).unwrap(), b"kept");
        assert!(fs.read(&dir.join("b")).is_err(), "entry never synced");
    }

    #[test]
    fn a_crash_during_a_direct_write_tears_it_by_whole_sectors() {
        let dir = Path::new("/d");
        let mut seen_partial = false;
        for seed in 0..20 {
            let fs = SimFs::new(seed);
            fs.create_dir_all(dir).unwrap();
            fs.create(&dir.join("a")).unwrap();
            fs.sync_dir(dir).unwrap();
            let mut file = fs.open_direct_sync(&dir.join("a")).unwrap();
            let data = vec![0xAB; 8 * SECTOR_BYTES];
            file.write_all_at(0, &data[..4096]).unwrap();
            fs.fault_at(1, PlannedFault::Crash { torn: false });
            let second = vec![0xCD; 4096];
            assert!(file.write_all_at(4096, &second).is_err());
            fs.restart();
            let on_disk = fs.read(&dir.join("a")).unwrap();
            assert_eq!(&on_disk[..4096], &data[..4096], "the finished write stays");
            let landed: Vec<bool> = (0..8)
                .map(|sector| {
                    let start = 4096 + sector * SECTOR_BYTES;
                    let bytes = on_disk.get(start..start + SECTOR_BYTES);
                    match bytes {
                        Some(bytes) if bytes.iter().all(|&b| b == 0xCD) => true,
                        Some(bytes) => {
                            assert!(bytes.iter().all(|&b| b == 0), "a sector is whole or absent");
                            false
                        }
                        None => false,
                    }
                })
                .collect();
            seen_partial |= landed.iter().any(|&l| l) && !landed.iter().all(|&l| l);
        }
        assert!(seen_partial, "some seed lands part of the write");
    }

    #[test]
    fn a_process_that_dies_leaves_its_unsynced_writes_in_the_page_cache() {
        let fs = SimFs::new(3);
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let mut file = fs.create(&dir.join("a")).unwrap();
        fs.sync_dir(dir).unwrap();
        file.write_all_at(0, b"written").unwrap();
        fs.fault_at(1, PlannedFault::ProcessDies);
        assert!(file.write_all_at(7, b" never").is_err(), "the killed write");
        assert!(
            file.write_all_at(7, b" later").is_err(),
            "the dead process's file stays closed"
        );
        assert!(
            fs.read(&dir.join("a")).is_err(),
            "nothing runs until restart"
        );
        fs.restart();
        assert_eq!(fs.read(&dir.join("a")).unwrap(), b"written");
        // Nothing was synced, so a power cut now would still lose it.
        fs.crash(false);
        fs.restart();
        assert_eq!(fs.read(&dir.join("a")).unwrap(), b"");
    }

    #[test]
    fn a_planned_failure_hits_exactly_the_nth_operation() {
        let fs = SimFs::new(1);
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let mut file = fs.create(&dir.join("a")).unwrap();
        fs.fault_at(2, PlannedFault::Fail);
        file.write_all_at(0, b"one").unwrap();
        assert!(file.write_all_at(3, b"two").is_err());
        file.write_all_at(3, b"three").unwrap();
        assert_eq!(fs.operation_count(), 4);
    }

    #[test]
    fn failed_sync_drops_dirty_data() {
        let fs = SimFs::new(7);
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let mut file = fs.create(&dir.join("a")).unwrap();
        fs.sync_dir(dir).unwrap();
        file.write_all_at(0, b"x").unwrap();
        fs.set_faults(Faults {
            fail_syncs: true,
            ..Faults::default()
        });
        assert!(file.sync_data().is_err());
        fs.set_faults(Faults::default());
        file.sync_data().unwrap();
        fs.crash(false);
        fs.restart();
        assert_eq!(fs.read(&dir.join("a")).unwrap(), b"");
    }
}
