//! `DurableStore`: the state, made durable by the WAL and snapshots.
//!
//! Opening recovers (newest valid snapshot, then the log after it) and starts the
//! commit thread (`commit.rs`), which owns the log from then on. Reads take the
//! state's read lock and never touch the disk.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::Sender;
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use super::command::{MAX_COMMAND_FIELD_BYTES, decode_payload, encode_payload};
use super::commit::{Committer, Message, Proposal};
use super::{Command, Entry, KvStore, State, Submission, now_ms};
use crate::error::{Error, Result};
use crate::metrics::{BATCH_BUCKETS, Histogram, LATENCY_BUCKETS};
use crate::storage::data_dir::DataDir;
use crate::storage::record::MAX_RECORD_PAYLOAD;
use crate::storage::snapshot::{read_snapshot, snapshot_file_name};
use crate::storage::{FileSystem, RecoveryMode, RecoveryReport, StdFs, Wal, WalOptions};

/// When appended records are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Every write is acknowledged after the `fdatasync` that covers it.
    #[default]
    Always,
    /// Acknowledged after `write`; synced at least this often. A process crash
    /// loses nothing, a power loss at most the interval.
    Interval(Duration),
    /// Appends are not synced; the OS writes them back when it likes. (New
    /// segments, snapshots and shutdown are still synced.)
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => {
                let millis = text
                    .strip_prefix("interval=")
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .filter(|&ms| ms > 0)
                    .ok_or_else(|| {
                        format!("{text:?}: expected always, never or interval=MS (MS > 0)")
                    })?;
                Ok(FsyncPolicy::Interval(Duration::from_millis(millis)))
            }
        }
    }
}

/// When snapshots are taken automatically.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotPolicy {
    /// Take snapshots without being asked (default on).
    pub automatic: bool,
    /// Log bytes written since the last snapshot before one is considered
    /// (default 64 MiB): small logs replay fast anyway.
    pub min_log_bytes: u64,
    /// A snapshot starts once the log since the last one is this many times the
    /// live data (default 2): start-up then reads at most about three times the
    /// live data, however long the history.
    pub live_data_ratio: u64,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            automatic: true,
            min_log_bytes: 64 << 20,
            live_data_ratio: 2,
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub fsync: FsyncPolicy,
    pub wal: WalOptions,
    pub snapshots: SnapshotPolicy,
    /// Most records one group commit writes (default 4096 when 0).
    pub max_batch: usize,
    /// How long a group commit may wait for the writers of the previous batch
    /// to come back before it writes (default 100 µs). Only when the previous
    /// batch had more than one writer: a lone writer never waits.
    pub commit_delay: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            fsync: FsyncPolicy::default(),
            wal: WalOptions::default(),
            snapshots: SnapshotPolicy::default(),
            max_batch: 0,
            commit_delay: Duration::from_micros(100),
        }
    }
}

impl StoreOptions {
    pub fn with_recovery_mode(mut self, mode: RecoveryMode) -> Self {
        self.wal.recovery_mode = mode;
        self
    }
}

/// A finished snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    pub seq: u64,
    pub revision: u64,
    pub entries: u64,
    pub path: PathBuf,
    pub duration: Duration,
}

/// Counters the commit thread and snapshots publish, read by `/metrics`.
#[derive(Debug)]
pub struct StoreStats {
    /// Seconds per log sync.
    pub sync_latency: Histogram,
    /// Records per group commit.
    pub batch_size: Histogram,
    pub syncs: AtomicU64,
    pub sync_nanos: AtomicU64,
    pub batches: AtomicU64,
    pub batched_records: AtomicU64,
    pub log_bytes: AtomicU64,
    pub snapshots: AtomicU64,
    pub snapshot_nanos: AtomicU64,
    pub segments: AtomicU64,
}

impl Default for StoreStats {
    fn default() -> Self {
        StoreStats {
            sync_latency: Histogram::new(LATENCY_BUCKETS),
            batch_size: Histogram::new(BATCH_BUCKETS),
            syncs: AtomicU64::new(0),
            sync_nanos: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batched_records: AtomicU64::new(0),
            log_bytes: AtomicU64::new(0),
            snapshots: AtomicU64::new(0),
            snapshot_nanos: AtomicU64::new(0),
            segments: AtomicU64::new(0),
        }
    }
}

/// State shared by the store handle, the commit thread and snapshot threads.
pub(super) struct Shared {
    pub state: RwLock<State>,
    pub fs: Arc<dyn FileSystem>,
    pub dir: PathBuf,
    pub stats: StoreStats,
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
}

impl Shared {
    pub fn failure(&self) -> Option<String> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        self.failure.lock().clone()
    }

    pub fn set_failed(&self, reason: String) {
        let mut failure = self.failure.lock();
        if failure.is_none() {
            tracing::error!(%reason, "storage failed; refusing writes until restart");
            *failure = Some(reason);
        }
        self.failed.store(true, Ordering::Release);
    }
}

pub struct DurableStore {
    shared: Arc<Shared>,
    sender: Sender<Message>,
    committer: Option<JoinHandle<()>>,
    report: RecoveryReport,
    _data_dir: DataDir,
}

impl DurableStore {
    /// Opens the store in `dir` on the real file system, creating it if needed.
    pub fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<DurableStore> {
        DurableStore::open_with_fs(Arc::new(StdFs), dir.as_ref(), options)
    }

    /// Opens the store with all I/O going through `fs`.
    pub fn open_with_fs(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        options: StoreOptions,
    ) -> Result<DurableStore> {
        let data_dir = DataDir::open(&*fs, dir)?;
        let mut options = options;
        // Direct synchronous appends only pay off when every write is synced.
        options.wal.direct_io &= options.fsync == FsyncPolicy::Always;
        let (mut state, mut report) = load_newest_snapshot(&*fs, &data_dir, &options)?;
        let (wal, wal_report) = Wal::open(
            fs.clone(),
            dir,
            options.wal.clone(),
            state.applied_seq() + 1,
            |seq, payload| {
                let (issued_at_ms, command) =
                    decode_payload(payload).map_err(|err| err.to_string())?;
                state.apply(seq, issued_at_ms, command);
                Ok(())
            },
        )?;
        report.segments_read = wal_report.segments_read;
        report.records_replayed = wal_report.records_replayed;
        report.bytes_replayed = wal_report.bytes_replayed;
        report.repairs.extend(wal_report.repairs);
        report.notes.extend(wal_report.notes);
        for repair in &report.repairs {
            tracing::warn!(repair = %repair, "recovery repaired the log");
        }
        let stats = StoreStats::default();
        stats
            .segments
            .store(wal.segment_count() as u64, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            state: RwLock::new(state),
            fs,
            dir: dir.to_path_buf(),
            stats,
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
        });
        let (sender, receiver) = crossbeam_channel::unbounded();
        let committer = Committer::new(
            shared.clone(),
            wal,
            receiver,
            sender.clone(),
            &options,
            report.bytes_replayed,
        );
        let handle = std::thread::Builder::new()
            .name("walrus-commit".into())
            .spawn(move || committer.run())
            .map_err(|err| Error::io(dir, err))?;
        Ok(DurableStore {
            shared,
            sender,
            committer: Some(handle),
            report,
            _data_dir: data_dir,
        })
    }

    /// What recovery did when this store was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Takes a snapshot now and compacts the log behind it; blocks until done.
    pub fn snapshot(&self) -> Result<SnapshotInfo> {
        let (reply, receiver) = oneshot::channel();
        self.sender
            .send(Message::Snapshot(reply))
            .map_err(|_| Error::Closed)?;
        receiver.blocking_recv().unwrap_or(Err(Error::Closed))
    }

    /// Syncs what is unsynced, stops the commit thread and releases the directory.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        let Some(handle) = self.committer.take() else {
            return Ok(());
        };
        let (reply, receiver) = oneshot::channel();
        let result = match self.sender.send(Message::Shutdown(reply)) {
            Ok(()) => receiver.blocking_recv().unwrap_or(Err(Error::Closed)),
            Err(_) => Err(Error::Closed),
        };
        let _ = handle.join();
        result
    }
}

impl Drop for DurableStore {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::warn!(%error, "closing the store");
        }
    }
}

impl KvStore for DurableStore {
    fn get_entry(&self, key: &[u8]) -> Option<Entry> {
        self.shared.state.read().get(key, now_ms()).cloned()
    }

    fn range(&self, start: Bound<&[u8]>, prefix: &[u8], limit: usize) -> Vec<(Bytes, Entry)> {
        self.shared
            .state
            .read()
            .range(start, prefix, limit, now_ms())
    }

    fn submit(&self, command: Command) -> Submission {
        if let Some(reason) = self.shared.failure() {
            return Submission::ready(Err(Error::Failed { reason }));
        }
        let size = command.data_bytes();
        if size > MAX_COMMAND_FIELD_BYTES {
            return Submission::ready(Err(Error::InvalidArgument(format!(
                "command carries {size} bytes; the limit is {MAX_COMMAND_FIELD_BYTES}"
            ))));
        }
        let issued_at_ms = now_ms();
        let mut payload = Vec::with_capacity(size + 48);
        encode_payload(&mut payload, issued_at_ms, &command);
        if payload.len() > MAX_RECORD_PAYLOAD {
            return Submission::ready(Err(Error::InvalidArgument(format!(
                "command encodes to {} bytes; a log record holds at most {MAX_RECORD_PAYLOAD}",
                payload.len()
            ))));
        }
        let (reply, receiver) = oneshot::channel();
        let proposal = Proposal {
            payload,
            issued_at_ms,
            command,
            reply,
        };
        match self.sender.send(Message::Propose(proposal)) {
            Ok(()) => Submission::pending(receiver),
            Err(_) => Submission::ready(Err(Error::Closed)),
        }
    }

    fn revision(&self) -> u64 {
        self.shared.state.read().revision()
    }

    fn len(&self) -> usize {
        self.shared.state.read().len()
    }

    fn data_bytes(&self) -> u64 {
        self.shared.state.read().data_bytes()
    }

    fn failure(&self) -> Option<String> {
        self.shared.failure()
    }

    fn stats(&self) -> Option<&StoreStats> {
        Some(&self.shared.stats)
    }
}

/// Loads the newest snapshot that decodes; damaged ones are skipped with a note
/// (the log must then reach back far enough, which recovery checks).
fn load_newest_snapshot(
    fs: &dyn FileSystem,
    data_dir: &DataDir,
    options: &StoreOptions,
) -> Result<(State, RecoveryReport)> {
    let mut report = RecoveryReport::default();
    for &seq in data_dir.snapshots() {
        let path = data_dir.path().join(snapshot_file_name(seq));
        match read_snapshot(fs, &path) {
            Ok((meta, records)) if meta.last_seq == seq => {
                report.snapshot_seq = Some(seq);
                report.snapshot_keys = Some(meta.entry_count);
                let entries = records.into_iter().map(|record| {
                    (
                        record.key,
                        Entry {
                            value: record.value,
                            mod_revision: record.mod_revision,
                            expires_at_ms: record.expires_at_ms,
                        },
                    )
                });
                return Ok((State::from_snapshot(seq, meta.revision, entries), report));
            }
            Ok((meta, _)) => {
                let error = Error::corrupt(
                    &path,
                    16,
                    format!(
                        "header says sequence {}, file name says {seq}",
                        meta.last_seq
                    ),
                );
                skip_snapshot(error, options, &mut report)?;
            }
            Err(error @ Error::UnsupportedVersion { .. }) => return Err(error),
            Err(error) => skip_snapshot(error, options, &mut report)?,
        }
    }
    Ok((State::default(), report))
}

fn skip_snapshot(error: Error, options: &StoreOptions, report: &mut RecoveryReport) -> Result<()> {
    if options.wal.recovery_mode == RecoveryMode::Strict {
        return Err(error);
    }
    tracing::warn!(%error, "skipping a damaged snapshot");
    report
        .repairs
        .push(format!("skipped damaged snapshot: {error}"));
    Ok(())
}
