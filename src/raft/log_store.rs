//! The Raft log in walrus's WAL.
//!
//! Every change to the Raft log's durable state is one WAL record, so the
//! vote, appends, truncations and purges reach the disk in exactly the order
//! openraft submitted them (its `io_ordering` rule) and recovery, which always
//! yields a prefix of the records, can never see a later change without the
//! earlier ones. Record payloads:
//!
//! ```text
//! kind u8 | body (postcard)
//! kind 1 entry:      the openraft entry: log id (term, leader, index) and payload
//!                    (blank, membership, or a Proposal: walrus's command encoding,
//!                    as a postcard byte string: varint length, then the bytes)
//! kind 2 vote:       the vote
//! kind 3 truncate:   Option<LogId>: every entry after it, appended before this
//!                    record, is gone
//! kind 4 purge:      LogId: every entry up to it is covered by a snapshot
//! kind 5 committed:  Option<LogId>: the last committed entry known (a hint for
//!                    a faster restart; never needs a sync of its own)
//! ```
//!
//! The WAL's own sequence numbers only order records; Raft indexes live in the
//! entries. Replaying the records in order rebuilds the log exactly.
//!
//! Invariants:
//! - an `IOFlushed` callback fires only after the sync that covers its entries
//!   (with `--fsync always`; the other policies promise what they say);
//! - `save_vote` returns only once the vote record is durable;
//! - entries are readable from memory as soon as `append` returns;
//! - a segment is deleted only when every entry in it is purged and a later,
//!   synced record holds the current vote, so deleting it loses nothing.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use parking_lot::RwLock;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{LogEntry, LogId, TypeConfig, Vote, io_error};
use crate::error::{Error, Result};
use crate::latency_monitor::{Event, LatencyMonitor};
use crate::storage::segment::parse_segment_file_name;
use crate::storage::{FileSystem, SpaceUse, Wal, WalOptions};
use crate::store::FsyncPolicy;

const KIND_ENTRY: u8 = 1;
const KIND_VOTE: u8 = 2;
const KIND_TRUNCATE: u8 = 3;
const KIND_PURGE: u8 = 4;
const KIND_COMMITTED: u8 = 5;

/// Most jobs one write takes from the queue.
const MAX_JOBS_PER_WRITE: usize = 4096;

/// The log as the last submitted change left it, shared by the store, its
/// readers and the writer thread.
#[derive(Default)]
struct LogState_ {
    /// Entries after `last_purged`, by index.
    entries: BTreeMap<u64, LogEntry>,
    /// What `entries` holds in memory, about (see [`held_bytes`]).
    entry_bytes: u64,
    vote: Option<Vote>,
    last_purged: Option<LogId>,
    committed: Option<LogId>,
}

/// The memory an entry takes in the log, about: its command and the entry.
fn held_bytes(entry: &LogEntry) -> u64 {
    let command = match &entry.payload {
        openraft::EntryPayload::Normal(proposal) => proposal.payload.len(),
        _ => 0,
    };
    (command + std::mem::size_of::<LogEntry>()) as u64
}

impl LogState_ {
    fn insert(&mut self, entry: LogEntry) {
        self.entry_bytes += held_bytes(&entry);
        if let Some(replaced) = self.entries.insert(entry.log_id.index, entry) {
            self.entry_bytes -= held_bytes(&replaced);
        }
    }

    /// Drops every entry from `first_gone` on (a truncation).
    fn remove_from(&mut self, first_gone: u64) {
        let gone = self.entries.split_off(&first_gone);
        self.entry_bytes -= gone.values().map(held_bytes).sum::<u64>();
    }

    /// Drops every entry up to `last_gone` (a purge).
    fn remove_upto(&mut self, last_gone: u64) {
        let kept = match last_gone.checked_add(1) {
            Some(first_kept) => self.entries.split_off(&first_kept),
            None => BTreeMap::new(),
        };
        let gone = std::mem::replace(&mut self.entries, kept);
        self.entry_bytes -= gone.values().map(held_bytes).sum::<u64>();
    }
}

/// Reads how much memory the log's entries take, for the size-based
/// snapshot trigger and `/metrics`.
#[derive(Clone)]
pub struct HeldBytes(Shared);

impl HeldBytes {
    pub fn get(&self) -> u64 {
        self.0.read().entry_bytes
    }

    /// What the entries after `index` take (those a snapshot at `index`
    /// does not cover yet).
    pub fn after(&self, index: u64) -> u64 {
        // Summed over the entries up to `index` (the few kept behind the last
        // snapshot) rather than the many after it: this runs every tick under
        // the lock that appends wait for.
        let state = self.0.read();
        let covered: u64 = state
            .entries
            .range(..=index)
            .map(|(_, entry)| held_bytes(entry))
            .sum();
        state.entry_bytes.saturating_sub(covered)
    }

    /// Where to purge so that the entries a snapshot at `snapshot_index`
    /// covers, still held for slow followers, take at most `keep` bytes: the
    /// index to purge up to, or `None` when they take no more than that.
    /// Counts back from the snapshot, so the entries kept are the newest.
    pub fn purge_point(&self, snapshot_index: u64, keep: u64) -> Option<u64> {
        let state = self.0.read();
        let mut kept = 0u64;
        for (index, entry) in state.entries.range(..=snapshot_index).rev() {
            kept = kept.saturating_add(held_bytes(entry));
            if kept > keep {
                return Some(*index);
            }
        }
        None
    }
}

type Shared = Arc<RwLock<LogState_>>;

/// Work for the writer thread.
enum Job {
    /// Records to append; `done` is told once they are durable.
    Write {
        records: Vec<Vec<u8>>,
        max_index: Option<u64>,
        done: Done,
    },
    /// Delete the segments that only hold entries up to this index.
    Compact {
        purged_index: u64,
    },
    Shutdown,
}

enum Done {
    Nothing,
    Flushed(IOFlushed<TypeConfig>),
    Reply(tokio::sync::oneshot::Sender<io::Result<()>>),
}

impl Done {
    fn complete(self, result: &io::Result<()>) {
        let copy = || match result {
            Ok(()) => Ok(()),
            Err(error) => Err(io::Error::new(error.kind(), error.to_string())),
        };
        match self {
            Done::Nothing => {}
            Done::Flushed(callback) => callback.io_completed(copy()),
            Done::Reply(sender) => {
                let _ = sender.send(copy());
            }
        }
    }
}

/// The Raft log storage: the handle openraft appends through.
pub struct LogStore {
    shared: Shared,
    writer: WriterHandle,
}

/// Where the log's jobs are written.
enum WriterHandle {
    /// A thread of its own, fed through a queue, so the appends, votes and
    /// truncations queued while it syncs share its next write and sync.
    Thread {
        jobs: Sender<Job>,
        handle: Option<JoinHandle<()>>,
    },
    /// In the deterministic context (a seeded simulation), each job is
    /// written on the task that submits it, so no other thread races the
    /// runtime. Under an `interval` policy it syncs only when closed.
    Inline(Box<parking_lot::Mutex<Writer>>),
}

/// Reads entries and the vote from memory.
#[derive(Clone)]
pub struct LogReader {
    shared: Shared,
}

/// A record: its kind byte, then the value in postcard, in a buffer sized
/// once (an entry grown by doubling costs a copy per doubling).
fn encode<T: Serialize>(kind: u8, value: &T) -> io::Result<Vec<u8>> {
    let size = postcard::experimental::serialized_size(value).map_err(io_error)?;
    let mut record = Vec::with_capacity(1 + size);
    record.push(kind);
    postcard::to_extend(value, record).map_err(io_error)
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> std::result::Result<T, String> {
    postcard::from_bytes(body).map_err(|error| error.to_string())
}

impl LogStore {
    /// Opens the log in `dir` (creating it when empty) and replays it.
    pub fn open(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        options: WalOptions,
        fsync: FsyncPolicy,
        latency: Arc<LatencyMonitor>,
    ) -> Result<LogStore> {
        let first_seq = first_segment_seq(&*fs, dir)?;
        let mut state = LogState_::default();
        let mut entry_positions: Vec<(u64, u64)> = Vec::new();
        let mut options = options;
        options.direct_io &= fsync == FsyncPolicy::Always;
        // The Raft log's segments keep their configured size: its compaction
        // follows openraft's snapshots, not the store's snapshot policy.
        let (wal, report) = Wal::open(fs, dir, options, u64::MAX, first_seq, |seq, payload| {
            replay_record(&mut state, &mut entry_positions, seq, payload)
        })?;
        crate::store::describe::warn_about_repairs(&report, "Raft log", describe_record);
        tracing::info!(
            entries = state.entries.len(),
            last_purged = ?state.last_purged.as_ref().map(|id| id.index),
            vote = ?state.vote.as_ref().map(ToString::to_string),
            "recovered the Raft log"
        );
        let segment_max_index = segment_max_indexes(&wal, &entry_positions);
        let shared: Shared = Arc::new(RwLock::new(state));
        let writer = Writer {
            wal,
            fsync,
            latency,
            shared: shared.clone(),
            segment_max_index,
            written_committed: None,
        };
        if crate::deterministic::is_active() {
            return Ok(LogStore {
                shared,
                writer: WriterHandle::Inline(Box::new(parking_lot::Mutex::new(writer))),
            });
        }
        let (jobs, receiver) = crossbeam_channel::unbounded();
        let handle = std::thread::Builder::new()
            .name("walrus-raft-log".into())
            .spawn(move || writer.run(receiver))
            .map_err(|err| Error::io(dir, err))?;
        Ok(LogStore {
            shared,
            writer: WriterHandle::Thread {
                jobs,
                handle: Some(handle),
            },
        })
    }

    /// A reader of the memory the entries take, kept after openraft owns
    /// the store.
    pub fn held_bytes(&self) -> HeldBytes {
        HeldBytes(self.shared.clone())
    }

    fn send(&self, job: Job) -> io::Result<()> {
        match &self.writer {
            WriterHandle::Thread { jobs, .. } => jobs
                .send(job)
                .map_err(|_| io_error("the Raft log writer has stopped")),
            WriterHandle::Inline(writer) => {
                writer.lock().write(vec![job]);
                Ok(())
            }
        }
    }

    /// Stops the writer after it has written everything queued.
    pub fn close(&mut self) {
        match &mut self.writer {
            WriterHandle::Thread { jobs, handle } => {
                let _ = jobs.send(Job::Shutdown);
                if let Some(handle) = handle.take() {
                    let _ = handle.join();
                }
            }
            WriterHandle::Inline(writer) => {
                let _ = writer.lock().wal.sync();
            }
        }
    }
}

impl Drop for LogStore {
    fn drop(&mut self) {
        match &self.writer {
            // The writer drains what is queued and stops; joining here would
            // block an async runtime thread, so it is left to finish on its own.
            WriterHandle::Thread { jobs, .. } => {
                let _ = jobs.send(Job::Shutdown);
            }
            WriterHandle::Inline(writer) => {
                let _ = writer.lock().wal.sync();
            }
        }
    }
}

/// The first sequence number on disk, so replay starts where the log does
/// (older segments were deleted after a purge).
fn first_segment_seq(fs: &dyn FileSystem, dir: &Path) -> Result<u64> {
    let names = match fs.list(dir) {
        Ok(names) => names,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(1),
        Err(err) => return Err(Error::io(dir, err)),
    };
    Ok(names
        .iter()
        .filter_map(|name| parse_segment_file_name(name))
        .min()
        .unwrap_or(1))
}

/// Decodes one Raft log record on its own (what recovery does with each),
/// for fuzzing: any bytes are either a record or an error, never a panic.
pub fn decode_record(payload: &[u8]) -> std::result::Result<(), String> {
    let mut state = LogState_::default();
    replay_record(&mut state, &mut Vec::new(), 1, payload)
}

fn replay_record(
    state: &mut LogState_,
    positions: &mut Vec<(u64, u64)>,
    seq: u64,
    payload: &[u8],
) -> std::result::Result<(), String> {
    let Some((&kind, body)) = payload.split_first() else {
        return Err("empty Raft log record".into());
    };
    match kind {
        KIND_ENTRY => {
            let entry: LogEntry = decode(body)?;
            let index = entry.log_id.index;
            positions.push((seq, index));
            state.insert(entry);
        }
        KIND_VOTE => state.vote = Some(decode(body)?),
        KIND_TRUNCATE => {
            let after: Option<LogId> = decode(body)?;
            let first_gone = match after {
                None => 0,
                Some(id) => next_index(id)?,
            };
            state.remove_from(first_gone);
        }
        KIND_PURGE => {
            let upto: LogId = decode(body)?;
            next_index(upto)?;
            state.remove_upto(upto.index);
            state.last_purged = Some(upto);
        }
        KIND_COMMITTED => state.committed = decode(body)?,
        other => {
            return Err(format!(
                "unknown Raft log record kind {other}: is this the data directory of a \
                 single-node walrus (started without --node-id)? To make it a cluster's \
                 first node, serve it without --node-id and send it `walrus cluster \
                 add-learner`, or stop it and run `walrus cluster adopt --data-dir DIR \
                 --node-id ID --advertise HOST:PORT`"
            ));
        }
    }
    Ok(())
}

/// A Raft log record in words, for the report of what a repair dropped;
/// `None` when it does not decode.
fn describe_record(payload: &[u8]) -> Option<String> {
    let (&kind, body) = payload.split_first()?;
    Some(match kind {
        KIND_ENTRY => {
            let entry: LogEntry = decode(body).ok()?;
            match &entry.payload {
                openraft::EntryPayload::Normal(proposal) => format!(
                    "entry {}: {}",
                    entry.log_id,
                    crate::store::describe::describe_payload(&proposal.payload)
                ),
                openraft::EntryPayload::Blank => format!("entry {}: blank", entry.log_id),
                openraft::EntryPayload::Membership(membership) => {
                    format!("entry {}: membership {membership}", entry.log_id)
                }
            }
        }
        KIND_VOTE => "vote".into(),
        KIND_TRUNCATE => "truncation".into(),
        KIND_PURGE => "purge".into(),
        KIND_COMMITTED => "commit index".into(),
        _ => return None,
    })
}

/// The index after `id`; a record naming the last possible index is damage,
/// not a log any node could have written.
fn next_index(id: LogId) -> std::result::Result<u64, String> {
    id.index.checked_add(1).ok_or_else(|| {
        format!(
            "Raft log record names index {}, past any real log",
            id.index
        )
    })
}

/// The highest entry index each segment holds, from the replayed positions.
fn segment_max_indexes(wal: &Wal, positions: &[(u64, u64)]) -> BTreeMap<u64, u64> {
    let firsts = wal.segment_first_seqs();
    let mut max_index = BTreeMap::new();
    for &(seq, index) in positions {
        let segment = firsts
            .iter()
            .rev()
            .find(|&&first| first <= seq)
            .copied()
            .unwrap_or(0);
        let slot = max_index.entry(segment).or_insert(0);
        *slot = (*slot).max(index);
    }
    max_index
}

/// The thread that owns the WAL: takes every queued job, writes their records
/// with one append and one sync, then completes them in order.
struct Writer {
    wal: Wal,
    fsync: FsyncPolicy,
    /// Where slow syncs are recorded (the node's LATENCY monitor).
    latency: Arc<LatencyMonitor>,
    shared: Shared,
    /// Per segment (by first sequence number), the highest entry index in it.
    segment_max_index: BTreeMap<u64, u64>,
    written_committed: Option<LogId>,
}

impl Writer {
    fn run(mut self, receiver: Receiver<Job>) {
        let interval = match self.fsync {
            FsyncPolicy::Interval(interval) => Some(interval),
            _ => None,
        };
        loop {
            let first = match interval {
                Some(interval) => match receiver.recv_timeout(interval) {
                    Ok(job) => job,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                        let started = Instant::now();
                        let _ = self.wal.sync();
                        self.latency
                            .observe(Event::FsyncInterval, started.elapsed());
                        continue;
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                },
                None => match receiver.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                },
            };
            let mut jobs = vec![first];
            while jobs.len() < MAX_JOBS_PER_WRITE {
                match receiver.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            if !self.write(jobs) {
                break;
            }
        }
        let _ = self.wal.sync();
    }

    /// Writes one batch of jobs; false once a shutdown was among them.
    fn write(&mut self, jobs: Vec<Job>) -> bool {
        let mut records: Vec<Vec<u8>> = Vec::new();
        let mut dones = Vec::with_capacity(jobs.len());
        let mut max_index: Option<u64> = None;
        let mut compact = None;
        let mut keep_running = true;
        for job in jobs {
            match job {
                Job::Write {
                    records: job_records,
                    max_index: job_max,
                    done,
                } => {
                    records.extend(job_records);
                    max_index = max_index.max(job_max);
                    dones.push(done);
                }
                Job::Compact { purged_index } => {
                    compact = Some(purged_index);
                    // The current vote again, so deleting older segments
                    // cannot lose it.
                    let vote = self.shared.read().vote;
                    if let Some(vote) = vote
                        && let Ok(record) = encode(KIND_VOTE, &vote)
                    {
                        records.push(record);
                    }
                }
                Job::Shutdown => keep_running = false,
            }
        }
        let committed = self.shared.read().committed;
        if !records.is_empty()
            && committed != self.written_committed
            && let Ok(record) = encode(KIND_COMMITTED, &committed)
        {
            records.push(record);
            self.written_committed = committed;
        }
        let result = self.append(&records, max_index);
        for done in dones {
            done.complete(&result);
        }
        if let (Some(purged_index), Ok(())) = (compact, &result) {
            self.remove_purged_segments(purged_index);
        }
        keep_running
    }

    fn append(&mut self, records: &[Vec<u8>], max_index: Option<u64>) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        // The log may use the space the WAL keeps back for deletes: what a
        // member lets into its log is decided before, with room to spare
        // (`space.rs`), and a log write that fails stops the member.
        self.wal
            .append_as(SpaceUse::Freeing, records.iter().map(Vec::as_slice))
            .map_err(io_error)?;
        if self.fsync == FsyncPolicy::Always {
            self.wal.sync().map_err(io_error)?;
            // With direct I/O the write itself was the sync.
            self.latency.observe(Event::FsyncAlways, started.elapsed());
        }
        if let Some(index) = max_index {
            let active = self.wal.active_first_seq();
            let slot = self.segment_max_index.entry(active).or_insert(0);
            *slot = (*slot).max(index);
        }
        Ok(())
    }

    /// Deletes the oldest closed segments whose entries are all purged.
    fn remove_purged_segments(&mut self, purged_index: u64) {
        if self.fsync != FsyncPolicy::Always && self.wal.sync().is_err() {
            return;
        }
        let firsts = self.wal.segment_first_seqs();
        let mut remove_through = None;
        for pair in firsts.windows(2) {
            let max_index = self.segment_max_index.get(&pair[0]).copied().unwrap_or(0);
            if max_index > purged_index {
                break;
            }
            remove_through = Some(pair[1] - 1);
        }
        let Some(through) = remove_through else {
            return;
        };
        match self.wal.remove_through(through) {
            Ok(removed) => {
                self.segment_max_index = self.segment_max_index.split_off(&(through + 1));
                tracing::debug!(removed, "removed Raft log segments a snapshot covers");
            }
            Err(error) => tracing::warn!(%error, "removing purged Raft log segments"),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<LogEntry>> {
        let state = self.shared.read();
        Ok(state
            .entries
            .range(range)
            .map(|(_, entry)| entry.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        Ok(self.shared.read().vote)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<LogEntry>> {
        self.get_log_reader().await.try_get_log_entries(range).await
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        Ok(self.shared.read().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let state = self.shared.read();
        let last_purged_log_id = state.last_purged;
        let last_log_id = state
            .entries
            .last_key_value()
            .map(|(_, entry)| entry.log_id)
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            shared: self.shared.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let record = encode(KIND_VOTE, vote)?;
        self.shared.write().vote = Some(*vote);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.send(Job::Write {
            records: vec![record],
            max_index: None,
            done: Done::Reply(sender),
        })?;
        receiver
            .await
            .map_err(|_| io_error("the Raft log writer has stopped"))?
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        // Written with the next batch of records: a lost hint only means
        // replaying a little less at start-up.
        self.shared.write().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(self.shared.read().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = LogEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut records = Vec::new();
        let mut max_index = None;
        {
            let mut state = self.shared.write();
            for entry in entries {
                records.push(encode(KIND_ENTRY, &entry)?);
                max_index = Some(entry.log_id.index);
                state.insert(entry);
            }
        }
        self.send(Job::Write {
            records,
            max_index,
            done: Done::Flushed(callback),
        })
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let record = encode(KIND_TRUNCATE, &last_log_id)?;
        {
            let mut state = self.shared.write();
            let first_gone = last_log_id.map_or(0, |id| id.index + 1);
            state.remove_from(first_gone);
        }
        // Ordered before every later append by the queue, and the WAL only
        // ever recovers a prefix: the truncated entries cannot come back once
        // a later record is durable.
        self.send(Job::Write {
            records: vec![record],
            max_index: None,
            done: Done::Nothing,
        })
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        let record = encode(KIND_PURGE, &log_id)?;
        {
            let mut state = self.shared.write();
            state.remove_upto(log_id.index);
            state.last_purged = Some(log_id);
        }
        self.send(Job::Write {
            records: vec![record],
            max_index: None,
            done: Done::Nothing,
        })?;
        self.send(Job::Compact {
            purged_index: log_id.index,
        })
    }
}

#[cfg(test)]
mod tests {
    //! Crashes of the simulated disk between appends and their `IOFlushed`
    //! callbacks, on both write paths.

    use std::collections::BTreeSet;
    use std::path::Path;

    use openraft::type_config::TypeConfigExt;
    use openraft::{Entry, EntryPayload};

    use super::*;
    use crate::raft::Proposal;
    use crate::storage::SpareSegment;
    use crate::testing::SimFs;

    fn log_id(term: u64, index: u64) -> LogId {
        openraft::testing::log_id::<TypeConfig>(term, 1, index)
    }

    fn entry(term: u64, index: u64) -> LogEntry {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Normal(Proposal {
                payload: format!("t{term}i{index}").into_bytes(),
            }),
        }
    }

    fn open(fs: &Arc<SimFs>, direct_io: bool) -> LogStore {
        let options = WalOptions {
            segment_bytes: 4096,
            direct_io,
            spare: SpareSegment::OnDemand,
            ..WalOptions::default()
        };
        let fs: Arc<dyn FileSystem> = fs.clone();
        LogStore::open(
            fs,
            Path::new("/log"),
            options,
            FsyncPolicy::Always,
            Arc::default(),
        )
        .expect("open")
    }

    /// Appends `entries` and returns the receiver of their flush callback.
    async fn append(
        log: &mut LogStore,
        entries: Vec<LogEntry>,
    ) -> openraft::type_config::alias::OneshotReceiverOf<TypeConfig, io::Result<()>> {
        let (sender, receiver) = TypeConfig::oneshot();
        log.append(entries, IOFlushed::signal(sender))
            .await
            .expect("append");
        receiver
    }

    #[test]
    fn held_bytes_after_an_index_counts_exactly_the_entries_past_it() {
        let mut state = LogState_::default();
        for index in 1..=50 {
            state.insert(entry(1, index));
        }
        state.remove_upto(10);
        state.remove_from(46);
        let shared = HeldBytes(Arc::new(RwLock::new(state)));
        for index in [0, 5, 10, 11, 30, 45, 46, 100, u64::MAX] {
            let expected: u64 = shared
                .0
                .read()
                .entries
                .range(index.saturating_add(1)..)
                .map(|(_, entry)| held_bytes(entry))
                .sum();
            let expected = if index == u64::MAX { 0 } else { expected };
            assert_eq!(shared.after(index), expected, "after index {index}");
        }
    }

    #[test]
    fn the_purge_point_keeps_the_newest_covered_entries_within_the_budget() {
        let mut state = LogState_::default();
        for index in 1..=50 {
            state.insert(entry(1, index));
        }
        state.remove_upto(10);
        let each = held_bytes(&entry(1, 11));
        let shared = HeldBytes(Arc::new(RwLock::new(state)));
        // Entries 11..=40 are covered by a snapshot at 40: 30 of them.
        assert_eq!(shared.purge_point(40, 30 * each), None, "all fit");
        assert_eq!(shared.purge_point(40, 29 * each), Some(11), "one too many");
        assert_eq!(shared.purge_point(40, 5 * each), Some(35), "keeps 36..=40");
        assert_eq!(shared.purge_point(40, 0), Some(40), "keeps nothing");
        assert_eq!(shared.purge_point(5, 0), None, "nothing covered is held");
    }

    #[test]
    fn a_record_naming_the_last_possible_index_is_refused_not_a_panic() {
        // Found by the raft_log_record fuzz target: index + 1 overflowed.
        for kind in [KIND_PURGE, KIND_TRUNCATE] {
            let record = match kind {
                KIND_PURGE => encode(kind, &log_id(1, u64::MAX)),
                _ => encode(kind, &Some(log_id(1, u64::MAX))),
            }
            .expect("encode");
            let refusal = decode_record(&record).expect_err("refused");
            assert!(refusal.contains("past any real log"), "{refusal}");
        }
    }

    async fn crash_run(seed: u64, direct_io: bool) {
        let fs = Arc::new(SimFs::new(seed));
        fs.create_dir_all(Path::new("/log")).expect("dir");
        let mut log = open(&fs, direct_io);
        log.save_vote(&Vote::new(1, 1)).await.expect("vote");
        // Term 1 writes 1..=20, then a new leader's entries replace 11..
        let flushed = append(&mut log, (1..=20).map(|i| entry(1, i)).collect()).await;
        flushed.await.expect("callback").expect("flushed");
        log.save_vote(&Vote::new(2, 1)).await.expect("vote");
        log.truncate_after(Some(log_id(1, 10)))
            .await
            .expect("truncate");
        let flushed = append(&mut log, (11..=15).map(|i| entry(2, i)).collect()).await;
        flushed.await.expect("callback").expect("flushed");
        // More batches in flight when the power goes.
        let mut pending = Vec::new();
        for first in (16..=60).step_by(5) {
            let batch = (first..first + 5).map(|i| entry(2, i)).collect();
            pending.push((first + 4, append(&mut log, batch).await));
            if first == 16 + 5 * (seed % 8) {
                fs.crash(true);
            }
        }
        let mut acknowledged = 15;
        for (last, receiver) in pending {
            if let Ok(Ok(())) = receiver.await {
                acknowledged = last;
            }
        }
        drop(log);
        fs.restart();
        let mut log = open(&fs, direct_io);
        assert_eq!(
            log.read_vote().await.expect("vote"),
            Some(Vote::new(2, 1)),
            "seed {seed}"
        );
        let entries = log.try_get_log_entries(1..).await.expect("read");
        let ids: Vec<(u64, u64)> = entries
            .iter()
            .map(|entry| (entry.log_id.leader_id.term, entry.log_id.index))
            .collect();
        assert!(
            entries.len() as u64 >= acknowledged,
            "seed {seed}: lost flushed entries"
        );
        for (position, entry) in entries.iter().enumerate() {
            let index = position as u64 + 1;
            let term = if index <= 10 { 1 } else { 2 };
            assert_eq!(
                (entry.log_id.leader_id.term, entry.log_id.index),
                (term, index),
                "seed {seed}: a truncated entry came back or the log has a gap: {ids:?}"
            );
            let EntryPayload::Normal(proposal) = &entry.payload else {
                panic!("seed {seed}: payload changed");
            };
            assert_eq!(proposal.payload, format!("t{term}i{index}").into_bytes());
        }
        let distinct: BTreeSet<u64> = entries.iter().map(|entry| entry.log_id.index).collect();
        assert_eq!(distinct.len(), entries.len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flushed_entries_and_the_vote_survive_a_crash_and_truncated_entries_never_return() {
        for seed in 0..24 {
            crash_run(seed, false).await;
            crash_run(seed, true).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn purged_segments_go_and_the_vote_and_the_rest_survive_reopening() {
        let fs = Arc::new(SimFs::new(3));
        fs.create_dir_all(Path::new("/log")).expect("dir");
        let mut log = open(&fs, false);
        log.save_vote(&Vote::new(5, 1)).await.expect("vote");
        for first in (1..=400).step_by(20) {
            let flushed =
                append(&mut log, (first..first + 20).map(|i| entry(5, i)).collect()).await;
            flushed.await.expect("callback").expect("flushed");
        }
        let segments_before = fs.list(Path::new("/log")).expect("list").len();
        log.purge(log_id(5, 300)).await.expect("purge");
        // A flushed append after the purge orders it before reopening.
        let flushed = append(&mut log, vec![entry(5, 401)]).await;
        flushed.await.expect("callback").expect("flushed");
        // Closing waits for the writer, which removes segments after a purge.
        log.close();
        drop(log);
        let segments_after = fs.list(Path::new("/log")).expect("list").len();
        assert!(
            segments_after < segments_before,
            "{segments_before} -> {segments_after}"
        );
        let mut log = open(&fs, false);
        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(log_id(5, 300)));
        assert_eq!(state.last_log_id, Some(log_id(5, 401)));
        assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(5, 1)));
        let entries = log.try_get_log_entries(301..=401).await.expect("read");
        assert_eq!(entries.len(), 101);
    }
}
