//! The write-ahead log: a sequence of numbered, checksummed records in segment
//! files.
//!
//! The log is generic: a payload is opaque bytes, so key-value commands and (later)
//! Raft entries share it. [`Wal`] is single-threaded: a single store's commit
//! thread (`store/commit.rs`) and a replica's log writer (`raft/log_store.rs`)
//! each own one and batch many writers into one append and one sync.
//!
//! Invariants:
//! - sequence numbers are dense: the record after `n` is `n + 1`, across segments;
//! - everything before the active segment's `write_offset` is a valid record run,
//!   everything after it is zeros (preallocation) or absent;
//! - once a write or sync fails the log is failed for good ([`Error::Failed`]): a
//!   failed `fdatasync` may have dropped dirty pages, so retrying it could report
//!   success for data that is gone. The exceptions are a new segment that
//!   cannot be created for want of space (the partial file is removed) and a
//!   segment that cannot grow past its preallocation for a batch larger than
//!   it (it grows with zeros first): no record was written, and the append
//!   fails with [`Error::NoSpace`] alone.
//!
//! Segment sizes adapt to the disk. A new segment gets the configured size, or
//! less: the size the store asks for ([`Wal::set_segment_target`], so a small
//! store keeps a small log), and at most a quarter of the free space, so that a
//! store starts on a small volume and the log shrinks its steps as the disk
//! fills. [`SPACE_RESERVE_BYTES`] of free space are kept back from ordinary
//! appends for appends that free space ([`SpaceUse::Freeing`]: deletes), so
//! that a full store can still be emptied and compacted.
//!
//! The next segment is made ahead of need ([`SpareSegment`], `spare.rs`)
//! while the disk has room for it many times over; on a nearly full disk it is
//! made at rotation, sized to what is left.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::fs::{DIRECT_IO_ALIGNMENT, FileSystem, WritableFile};
use super::record::{encode_record, encoded_len};
use super::recovery::{self, RecoveryMode, RecoveryReport};
use super::segment::{SEGMENT_HEADER_BYTES, encode_segment_header};
use super::spare::{self, Preparing, Spare};
use crate::error::{Error, Result};

/// How the log is laid out on disk.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Segment size before rotating (default 64 MiB): large enough that rotation
    /// is rare, small enough that compaction frees space in useful steps.
    pub segment_bytes: u64,
    /// Fill new segments with zeros and sync them before use (default on), so that
    /// appends do not change the file size and `fdatasync` has no metadata to write.
    pub preallocate: bool,
    pub recovery_mode: RecoveryMode,
    /// Append with `O_DIRECT | O_DSYNC` writes of whole blocks, which are
    /// durable when they return: one system call per group commit instead of a
    /// `write` and an `fdatasync`, and measurably faster here (BENCHMARKS.md).
    /// Needs `preallocate`; falls back to buffered writes where the file system
    /// refuses direct I/O. The store turns it on only for `--fsync always`.
    pub direct_io: bool,
    /// Where the next preallocated segment is made.
    pub spare: SpareSegment,
}

/// Where the log makes its next segment (see `spare.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpareSegment {
    /// On a helper thread, as soon as the active segment is in use, so that
    /// rotation does not zero-fill megabytes while writers wait (default).
    Background,
    /// On the appending thread when rotation needs it: every disk operation
    /// in a fixed order, for the simulated disk's crash-point tests.
    OnDemand,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            preallocate: true,
            recovery_mode: RecoveryMode::TolerateTornTail,
            direct_io: true,
            spare: SpareSegment::Background,
        }
    }
}

/// A spare segment is made ahead of need only while the disk could hold this
/// many of it: a spare holds space that a snapshot (which frees the log) may
/// need on a filling disk.
const SPARE_ROOM_FACTOR: u64 = 16;

/// The smallest segment created when space is short (or the configured size,
/// if that is smaller).
pub const MIN_SEGMENT_BYTES: u64 = 64 << 10;

/// Free space ordinary appends leave for appends that free space.
pub const SPACE_RESERVE_BYTES: u64 = 1 << 20;

/// Whether an append may use the space kept back for deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpaceUse {
    /// Leaves [`SPACE_RESERVE_BYTES`] free.
    Ordinary,
    /// Only removes data (deletes): may use the reserve, since it is what
    /// gives space back once compacted.
    Freeing,
}

/// A closed segment: immutable, fully synced.
#[derive(Debug, Clone)]
struct ClosedSegment {
    first_seq: u64,
    path: PathBuf,
}

struct ActiveSegment {
    file: Box<dyn WritableFile>,
    path: PathBuf,
    first_seq: u64,
    write_offset: u64,
    /// Bytes the file is known to hold; writing past it changes the file size.
    allocated: u64,
    /// Bytes of records (header included) before the log rotates to a new
    /// segment; chosen when the segment was created.
    capacity: u64,
    /// Set when appends go through direct, synchronous writes.
    direct: Option<DirectAppender>,
}

/// Appends whole aligned blocks with a file opened `O_DIRECT | O_DSYNC`.
///
/// A block is the unit of a direct write, so the block holding the end of the
/// log is rewritten with its earlier bytes (kept in `tail`) each time. Those
/// bytes are rewritten unchanged, so a torn block write can only damage the new
/// records, never synced ones.
struct DirectAppender {
    file: Box<dyn WritableFile>,
    /// Bytes of the current block before `write_offset`.
    tail: Vec<u8>,
    /// Scratch space, over-allocated so an aligned window fits inside it.
    scratch: Vec<u8>,
}

impl DirectAppender {
    fn write(&mut self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        let block = DIRECT_IO_ALIGNMENT;
        let block_start = offset - offset % block as u64;
        debug_assert_eq!(self.tail.len() as u64, offset - block_start);
        let filled = self.tail.len() + bytes.len();
        let padded = filled.div_ceil(block) * block;
        if self.scratch.len() < padded + block {
            self.scratch.resize(padded + block, 0);
        }
        let start = self.scratch.as_ptr().align_offset(block);
        let window = &mut self.scratch[start..start + padded];
        window[..self.tail.len()].copy_from_slice(&self.tail);
        window[self.tail.len()..filled].copy_from_slice(bytes);
        window[filled..].fill(0);
        self.file.write_all_at(block_start, window)?;
        let end = offset + bytes.len() as u64;
        let new_block_start = (end - end % block as u64 - block_start) as usize;
        self.tail.clear();
        self.tail
            .extend_from_slice(&window[new_block_start..(end - block_start) as usize]);
        Ok(())
    }
}

pub struct Wal {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    options: WalOptions,
    closed: Vec<ClosedSegment>,
    active: ActiveSegment,
    next_seq: u64,
    /// Whether bytes were written since the last sync, and whether any of them
    /// extended the file (then a full `fsync` is needed for the new size).
    dirty: bool,
    extended: bool,
    /// Whether everything written so far is synced and the next record has not
    /// been written yet: that record then carries the `synced_before` flag.
    synced_since_append: bool,
    failed: Option<String>,
    encode_buffer: Vec<u8>,
    /// The size the store asks new segments to have (see the module notes).
    segment_target: u64,
    /// The next segment, being made on a helper thread.
    preparing: Option<Preparing>,
}

impl Wal {
    /// Opens (or creates) the log in `dir`, replaying every record numbered
    /// `replay_from` or later through `visit` in order.
    ///
    /// `replay_from` is one past the sequence number a snapshot covers (1 without
    /// a snapshot); records before it are skipped, and the log must reach back to
    /// it unless it is wholly older than the snapshot.
    ///
    /// `segment_target` is the size the caller wants for segments made from
    /// now on, this one included if the log needs a new one (see
    /// [`Wal::set_segment_target`]); `u64::MAX` asks for
    /// `options.segment_bytes`.
    pub fn open(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        options: WalOptions,
        segment_target: u64,
        replay_from: u64,
        visit: impl FnMut(u64, &[u8]) -> std::result::Result<(), String>,
    ) -> Result<(Wal, RecoveryReport)> {
        let leftover_spare = spare::remove_leftover(&*fs, dir)?;
        let recovered =
            recovery::recover_log(&*fs, dir, options.recovery_mode, replay_from, visit)?;
        let mut report = recovered.report;
        if leftover_spare {
            report.notes.push(format!(
                "{}: removed an unused spare segment",
                spare::spare_path(dir).display()
            ));
        }
        let closed: Vec<ClosedSegment> = recovered
            .segments
            .iter()
            .map(|segment| ClosedSegment {
                first_seq: segment.first_seq,
                path: segment.path.clone(),
            })
            .collect();
        let mut wal = match recovered.tail {
            Some(tail) if tail.next_seq >= replay_from => {
                let file = fs
                    .open_write(&tail.path)
                    .map_err(|err| Error::io(&tail.path, err))?;
                let allocated = file.len().map_err(|err| Error::io(&tail.path, err))?;
                // A preallocated segment's size is the capacity chosen when it
                // was created.
                let capacity = if options.preallocate {
                    allocated.max(SEGMENT_HEADER_BYTES as u64)
                } else {
                    options.segment_bytes
                };
                let mut closed = closed;
                closed.pop();
                Wal::assemble(
                    fs,
                    dir,
                    options,
                    segment_target,
                    closed,
                    ActiveSegment {
                        file,
                        path: tail.path,
                        first_seq: tail.first_seq,
                        write_offset: tail.write_offset,
                        allocated,
                        capacity,
                        direct: None,
                    },
                    tail.next_seq,
                )
            }
            _ => {
                // No log, or a log wholly older than the snapshot (possible with
                // `--fsync never`): the snapshot covers every old segment, which
                // go, and a fresh segment starts after the snapshot.
                for segment in &closed {
                    fs.remove(&segment.path)
                        .map_err(|err| Error::io(&segment.path, err))?;
                    report.notes.push(format!(
                        "{}: removed, the snapshot covers all of it",
                        segment.path.display()
                    ));
                }
                let active = create_segment(
                    &*fs,
                    dir,
                    replay_from,
                    &options,
                    segment_target,
                    SpaceUse::Ordinary,
                )?;
                Wal::assemble(
                    fs,
                    dir,
                    options,
                    segment_target,
                    Vec::new(),
                    active,
                    replay_from,
                )
            }
        };
        wal.closed.sort_by_key(|segment| segment.first_seq);
        // Records read back may have been only in the page cache (the last
        // process crashed before syncing them): make them durable before any
        // new record claims that everything before it was synced.
        if let Err(err) = wal.active.file.sync_all() {
            return Err(Error::io(&wal.active.path, err));
        }
        if wal.options.direct_io && wal.options.preallocate {
            let data = wal
                .fs
                .read(&wal.active.path)
                .map_err(|err| Error::io(&wal.active.path, err))?;
            let end = (wal.active.write_offset as usize).min(data.len());
            wal.attach_direct(data[end - end % DIRECT_IO_ALIGNMENT..end].to_vec());
        }
        wal.start_spare();
        Ok((wal, report))
    }

    fn assemble(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        options: WalOptions,
        segment_target: u64,
        closed: Vec<ClosedSegment>,
        active: ActiveSegment,
        next_seq: u64,
    ) -> Wal {
        Wal {
            fs,
            dir: dir.to_path_buf(),
            options,
            closed,
            active,
            next_seq,
            segment_target,
            dirty: false,
            extended: false,
            synced_since_append: true,
            failed: None,
            encode_buffer: Vec::new(),
            preparing: None,
        }
    }

    /// The sequence number the next appended record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The oldest sequence number still on disk.
    pub fn first_seq(&self) -> u64 {
        self.closed
            .first()
            .map_or(self.active.first_seq, |segment| segment.first_seq)
    }

    /// The first sequence number of every segment, oldest first; the last is
    /// the active segment, the one the next append goes to.
    pub fn segment_first_seqs(&self) -> Vec<u64> {
        self.closed
            .iter()
            .map(|segment| segment.first_seq)
            .chain(std::iter::once(self.active.first_seq))
            .collect()
    }

    /// The first sequence number of the active segment.
    pub fn active_first_seq(&self) -> u64 {
        self.active.first_seq
    }

    pub fn segment_count(&self) -> usize {
        self.closed.len() + 1
    }

    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    fn check_failed(&self) -> Result<()> {
        match &self.failed {
            Some(reason) => Err(Error::Failed {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Records `error` as the log's permanent failure and returns it.
    fn fail(&mut self, path: &Path, error: std::io::Error) -> Error {
        let error = Error::io(path, error);
        self.failed = Some(error.to_string());
        error
    }

    /// Appends the payloads as consecutive records with one write, returning the
    /// sequence number of the first. Nothing is durable until [`Wal::sync`].
    pub fn append<'a>(&mut self, payloads: impl IntoIterator<Item = &'a [u8]>) -> Result<u64> {
        self.append_as(SpaceUse::Ordinary, payloads)
    }

    /// [`Wal::append`], saying whether the records only free space.
    pub fn append_as<'a>(
        &mut self,
        space: SpaceUse,
        payloads: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<u64> {
        self.check_failed()?;
        let mut buffer = std::mem::take(&mut self.encode_buffer);
        buffer.clear();
        let first_seq = self.next_seq;
        let mut seq = first_seq;
        for payload in payloads {
            let synced_before = seq == first_seq && self.synced_since_append;
            encode_record(&mut buffer, seq, synced_before, payload);
            seq += 1;
        }
        let result = self.write_batch(&buffer, first_seq, seq, space);
        self.encode_buffer = buffer;
        result.map(|()| first_seq)
    }

    /// Asks for new segments of about `bytes` (never more than the configured
    /// size): the store passes the log size at which it snapshots, so the
    /// segments a snapshot covers can go soon after it.
    pub fn set_segment_target(&mut self, bytes: u64) {
        self.segment_target = bytes;
    }

    fn write_batch(
        &mut self,
        buffer: &[u8],
        first_seq: u64,
        end_seq: u64,
        space: SpaceUse,
    ) -> Result<()> {
        if buffer.is_empty() {
            return Ok(());
        }
        let fits = self.active.write_offset + buffer.len() as u64 <= self.active.capacity;
        if !fits && self.active.write_offset > SEGMENT_HEADER_BYTES as u64 {
            self.rotate(first_seq, space)?;
        }
        let offset = self.active.write_offset;
        // Direct writes cover whole blocks, the last one padded.
        let end = (offset + buffer.len() as u64).next_multiple_of(DIRECT_IO_ALIGNMENT as u64);
        if self.options.preallocate && end > self.active.allocated {
            self.grow_active(end, space)?;
        }
        let written = match &mut self.active.direct {
            Some(direct) => direct.write(offset, buffer),
            None => self.active.file.write_all_at(offset, buffer),
        };
        if let Err(err) = written {
            let path = self.active.path.clone();
            return Err(self.fail(&path, err));
        }
        self.active.write_offset += buffer.len() as u64;
        self.next_seq = end_seq;
        if self.active.direct.is_some() {
            // Durable already: O_DSYNC covers the data and any size change.
            self.synced_since_append = true;
            return Ok(());
        }
        if self.active.write_offset > self.active.allocated {
            self.active.allocated = self.active.write_offset;
            self.extended = true;
        }
        self.dirty = true;
        self.synced_since_append = false;
        Ok(())
    }

    /// Grows the active segment with zeros to `end` bytes and makes its new
    /// size durable, before records are written past its preallocation: a
    /// batch larger than a segment sized to a nearly full disk.
    ///
    /// A record write that extended the file itself could run out of space
    /// part way through a batch, leaving whole records of a refused batch on
    /// disk, and would have to fail the log for good. Zeros are what
    /// preallocation leaves, so running out of space here leaves nothing a
    /// recovery reads as a record, and the append fails with
    /// [`Error::NoSpace`] alone (the next attempt writes the same zeros again).
    fn grow_active(&mut self, end: u64, space: SpaceUse) -> Result<()> {
        let from = self.active.allocated;
        let no_space = Error::NoSpace {
            path: self.dir.clone(),
        };
        if usable_space(&*self.fs, &self.dir, space) < end - from {
            return Err(no_space);
        }
        let path = self.active.path.clone();
        let never_cancelled = std::sync::atomic::AtomicBool::new(false);
        match spare::write_zeros(&mut *self.active.file, from, end, &never_cancelled) {
            Ok(()) => {}
            Err(err) if crate::error::is_no_space(&err) => return Err(no_space),
            Err(err) => return Err(self.fail(&path, err)),
        }
        if let Err(err) = self.active.file.sync_all() {
            return Err(self.fail(&path, err));
        }
        self.active.allocated = end;
        Ok(())
    }

    /// Makes every appended record durable.
    pub fn sync(&mut self) -> Result<()> {
        self.check_failed()?;
        if !self.dirty {
            return Ok(());
        }
        let result = if self.extended {
            self.active.file.sync_all()
        } else {
            self.active.file.sync_data()
        };
        if let Err(err) = result {
            let path = self.active.path.clone();
            return Err(self.fail(&path, err));
        }
        self.dirty = false;
        self.extended = false;
        self.synced_since_append = true;
        Ok(())
    }

    /// Closes the active segment (synced) and starts a new one at `first_seq`.
    ///
    /// Without the space for a new segment the log stays as it was and the
    /// append fails with [`Error::NoSpace`]; nothing is failed for good, since
    /// no record was written.
    fn rotate(&mut self, first_seq: u64, space: SpaceUse) -> Result<()> {
        self.sync()?;
        let next = match self.next_segment(first_seq, space) {
            Ok(segment) => segment,
            Err(error @ Error::NoSpace { .. }) => return Err(error),
            Err(error) => {
                self.failed = Some(error.to_string());
                return Err(error);
            }
        };
        let old = std::mem::replace(&mut self.active, next);
        self.closed.push(ClosedSegment {
            first_seq: old.first_seq,
            path: old.path,
        });
        self.attach_direct(encode_segment_header(first_seq));
        self.start_spare();
        Ok(())
    }

    /// The segment starting at `first_seq`: the spare if one was made (or is
    /// being made), else one made now.
    fn next_segment(&mut self, first_seq: u64, space: SpaceUse) -> Result<ActiveSegment> {
        if let Some(preparing) = self.preparing.take() {
            match preparing.finish() {
                Ok(spare) => return activate(&*self.fs, &self.dir, spare, first_seq),
                Err(error) => tracing::warn!(
                    %error,
                    dir = %self.dir.display(),
                    "the next log segment could not be made ahead; making it now"
                ),
            }
        }
        let target = self.segment_target;
        create_segment(
            &*self.fs,
            &self.dir,
            first_seq,
            &self.options,
            target,
            space,
        )
    }

    /// Starts making the next segment on a helper thread, if the options ask
    /// for it and the disk has ample room (see [`SPARE_ROOM_FACTOR`]).
    fn start_spare(&mut self) {
        if self.options.spare != SpareSegment::Background
            || !self.options.preallocate
            || self.preparing.is_some()
        {
            return;
        }
        let usable = usable_space(&*self.fs, &self.dir, SpaceUse::Ordinary);
        let Ok(size) = segment_size(&self.dir, &self.options, self.segment_target, usable) else {
            return;
        };
        if size.saturating_mul(SPARE_ROOM_FACTOR) > usable {
            return;
        }
        match Preparing::start(Arc::clone(&self.fs), self.dir.clone(), size, true) {
            Ok(preparing) => self.preparing = Some(preparing),
            Err(error) => tracing::warn!(
                %error,
                "cannot start a thread to make the next log segment; it will be made at rotation"
            ),
        }
    }

    /// Switches the active segment to direct, synchronous appends if the options
    /// ask for it; `tail` holds the bytes of the block the log currently ends in.
    fn attach_direct(&mut self, tail: Vec<u8>) {
        if !self.options.direct_io || !self.options.preallocate {
            return;
        }
        match self.fs.open_direct_sync(&self.active.path) {
            Ok(file) => {
                self.active.direct = Some(DirectAppender {
                    file,
                    tail,
                    scratch: Vec::new(),
                });
            }
            Err(error) => {
                tracing::warn!(
                    %error,
                    path = %self.active.path.display(),
                    "direct I/O is not available here; appending with write + fdatasync"
                );
                self.options.direct_io = false;
            }
        }
    }

    /// Deletes closed segments whose records are all at or below `seq` (a
    /// snapshot covers them), then syncs the directory. Returns how many went.
    pub fn remove_through(&mut self, seq: u64) -> Result<usize> {
        let mut removable = 0;
        for (index, segment) in self.closed.iter().enumerate() {
            let next_first = self
                .closed
                .get(index + 1)
                .map_or(self.active.first_seq, |next| next.first_seq);
            if next_first > seq + 1 {
                break;
            }
            debug_assert!(segment.first_seq < next_first);
            removable = index + 1;
        }
        if removable == 0 {
            return Ok(0);
        }
        for _ in 0..removable {
            let path = self.closed[0].path.clone();
            self.fs.remove(&path).map_err(|err| Error::io(&path, err))?;
            self.closed.remove(0);
        }
        self.fs
            .sync_dir(&self.dir)
            .map_err(|err| Error::io(&self.dir, err))?;
        Ok(removable)
    }

    /// Bytes a record with this payload adds to the log.
    pub fn record_bytes(payload_len: usize) -> usize {
        encoded_len(payload_len)
    }
}

/// The size of the next segment in `dir`: `target` within the configured
/// size, at most a quarter of the `usable` free space, at least
/// [`MIN_SEGMENT_BYTES`]; [`Error::NoSpace`] when even that does not fit.
fn segment_size(dir: &Path, options: &WalOptions, target: u64, usable: u64) -> Result<u64> {
    let floor = MIN_SEGMENT_BYTES.min(options.segment_bytes);
    let wanted = target.clamp(floor, options.segment_bytes.max(floor));
    if usable < floor {
        return Err(Error::NoSpace {
            path: dir.to_path_buf(),
        });
    }
    let size = wanted.min(usable / 4).max(floor);
    // Whole pages, for direct I/O; the floor is a whole number of pages unless
    // the configured size is smaller, and then it is used as it is.
    let aligned = size - size % DIRECT_IO_ALIGNMENT as u64;
    Ok(if aligned >= floor { aligned } else { size })
}

/// Free space in `dir` that an append of kind `space` may use.
fn usable_space(fs: &dyn FileSystem, dir: &Path, space: SpaceUse) -> u64 {
    // Unknown free space (an error asking) is no reason to refuse a write.
    let free = fs.available_space(dir).unwrap_or(u64::MAX);
    match space {
        SpaceUse::Ordinary => free.saturating_sub(SPACE_RESERVE_BYTES),
        SpaceUse::Freeing => free,
    }
}

/// Makes the segment starting at `first_seq` now, on this thread, sized by
/// [`segment_size`] to the space an append of kind `space` may use: the same
/// two steps as a spare made ahead (`spare.rs`), without waiting between them.
fn create_segment(
    fs: &dyn FileSystem,
    dir: &Path,
    first_seq: u64,
    options: &WalOptions,
    target: u64,
    space: SpaceUse,
) -> Result<ActiveSegment> {
    let size = segment_size(dir, options, target, usable_space(fs, dir, space))?;
    let never_cancelled = std::sync::atomic::AtomicBool::new(false);
    let spare = spare::prepare(fs, dir, size, options.preallocate, &never_cancelled)?;
    activate(fs, dir, spare, first_seq)
}

/// Makes `spare` the active segment starting at `first_seq`.
fn activate(
    fs: &dyn FileSystem,
    dir: &Path,
    mut spare: Spare,
    first_seq: u64,
) -> Result<ActiveSegment> {
    let path = spare::claim(fs, dir, &mut spare, first_seq)?;
    Ok(ActiveSegment {
        file: spare.file,
        path,
        first_seq,
        write_offset: SEGMENT_HEADER_BYTES as u64,
        allocated: spare.allocated.max(SEGMENT_HEADER_BYTES as u64),
        capacity: spare.capacity,
        direct: None,
    })
}

impl Drop for Wal {
    fn drop(&mut self) {
        if let Some(preparing) = self.preparing.take() {
            preparing.abandon(&*self.fs, &self.dir);
        }
    }
}
