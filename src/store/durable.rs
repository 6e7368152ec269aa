//! `DurableStore`: the state, made durable by the WAL and snapshots.
//!
//! Opening recovers (newest valid snapshot, then the log after it) and starts the
//! commit thread (`commit.rs`), which owns the log from then on. Reads take the
//! state's read lock and never touch the disk.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use parking_lot::RwLock;
use tokio::sync::oneshot;

use super::changes::ChangeFeed;
use super::command::{MAX_COMMAND_FIELD_BYTES, decode_payload, encode_payload};
use super::commit::{Committer, Message};
use super::log_writer::{LogWriter, Proposal, deliver};
use super::options::{FsyncPolicy, SnapshotInfo, SnapshotPolicy, StoreOptions};
use super::shared::Shared;
use super::stats::StoreStats;
use super::{Command, KvStore, Outcome, State, Submission, now_ms};
use crate::error::{Error, Result};
use crate::handoff::Sender;
use crate::storage::data_dir::DataDir;
use crate::storage::record::MAX_RECORD_PAYLOAD;
use crate::storage::snapshot::{read_snapshot, snapshot_file_name};
use crate::storage::{FileSystem, RecoveryMode, RecoveryReport, StdFs, Wal};

pub struct DurableStore {
    shared: Arc<Shared>,
    sender: Sender<Message>,
    /// Whether an uncontended writer commits on its own thread.
    commit_inline: bool,
    /// When an inline commit should ask the commit thread for a snapshot.
    snapshot_policy: SnapshotPolicy,
    committer: Option<JoinHandle<()>>,
    report: RecoveryReport,
    /// Held until the commit thread has stopped (see `Drop`).
    data_dir: Option<DataDir>,
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
        if data_dir.is_cluster_member() {
            // Its log carries Raft entries: read as a single store's, it
            // would be misread or refused record by record.
            return Err(Error::InvalidArgument(format!(
                "{} holds a cluster node's data (see its MEMBER file): serve it \
                 as that node (`walrus serve` reads the node id from the file)",
                dir.display()
            )));
        }
        let mut options = options;
        // Direct synchronous appends only pay off when every write is synced.
        options.wal.direct_io &= options.fsync == FsyncPolicy::Always;
        let (state, mut report) = load_newest_snapshot(&*fs, &data_dir, &options)?;
        let snapshot_revision = state.revision();
        let (wal, wal_report, state) = replay(&fs, dir, &options, state)?;
        report.segments_read = wal_report.segments_read;
        report.records_replayed = wal_report.records_replayed;
        report.bytes_replayed = wal_report.bytes_replayed;
        report.repairs.extend(wal_report.repairs);
        report.lost.extend(wal_report.lost);
        report.broken_files.extend(wal_report.broken_files);
        report.notes.extend(wal_report.notes);
        super::describe::warn_about_repairs(&report, "log", super::describe::try_describe_payload);
        let stats = StoreStats::default();
        stats
            .segments
            .store(wal.segment_count() as u64, Ordering::Relaxed);
        stats
            .snapshot_revision
            .store(snapshot_revision, Ordering::Relaxed);
        let mut state = state;
        state.attach_feed(ChangeFeed::new(state.revision(), options.watch_history));
        let log = LogWriter::new(wal, options.fsync, report.bytes_replayed, options.snapshots);
        let shared = Arc::new(Shared::new(state, log, fs, dir.to_path_buf(), stats));
        let (sender, receiver) = crate::handoff::unbounded();
        let committer = Committer::new(shared.clone(), receiver, sender.clone(), &options);
        let handle = std::thread::Builder::new()
            .name("walrus-commit".into())
            .spawn(move || committer.run())
            .map_err(|err| Error::io(dir, err))?;
        Ok(DurableStore {
            shared,
            sender,
            commit_inline: options.fsync == FsyncPolicy::Always,
            snapshot_policy: options.snapshots,
            committer: Some(handle),
            report,
            data_dir: Some(data_dir),
        })
    }

    /// What recovery did when this store was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The lock reads are served from, to share with a cluster member that
    /// takes over this store's data (see `node`).
    pub fn shared_state(&self) -> Arc<RwLock<State>> {
        self.shared.state.clone()
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
    /// On a plain thread, closes the store and waits. On an async runtime
    /// thread it must not block: it asks the commit thread to stop, and a
    /// helper thread waits for it and only then releases the directory lock.
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_err() {
            if let Err(error) = self.shutdown() {
                tracing::warn!(%error, "closing the store");
            }
            return;
        }
        let Some(handle) = self.committer.take() else {
            return;
        };
        let (reply, receiver) = oneshot::channel();
        let _ = self.sender.send(Message::Shutdown(reply));
        let data_dir = self.data_dir.take();
        let spawned = std::thread::Builder::new()
            .name("walrus-close".into())
            .spawn(move || {
                if let Ok(Err(error)) = receiver.blocking_recv() {
                    tracing::warn!(%error, "closing the store");
                }
                let _ = handle.join();
                drop(data_dir);
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "closing the store in the background");
        }
    }
}

impl DurableStore {
    /// Checks and encodes a command for the log; a refusal is a finished
    /// submission.
    fn propose(
        &self,
        command: Command,
        issued_at_ms: u64,
    ) -> Result<(Proposal, oneshot::Receiver<Result<Outcome>>), Submission> {
        if let Some(reason) = self.shared.failure() {
            return Err(Submission::ready(Err(Error::Failed { reason })));
        }
        let size = command.data_bytes();
        if size > MAX_COMMAND_FIELD_BYTES {
            return Err(Submission::ready(Err(Error::InvalidArgument(format!(
                "command carries {size} bytes; the limit is {MAX_COMMAND_FIELD_BYTES}"
            )))));
        }
        let mut payload = Vec::with_capacity(size + 48);
        encode_payload(&mut payload, issued_at_ms, &command);
        if payload.len() > MAX_RECORD_PAYLOAD {
            return Err(Submission::ready(Err(Error::InvalidArgument(format!(
                "command encodes to {} bytes; a log record holds at most {MAX_RECORD_PAYLOAD}",
                payload.len()
            )))));
        }
        let (reply, receiver) = oneshot::channel();
        let proposal = Proposal {
            payload,
            issued_at_ms,
            command,
            reply,
        };
        Ok((proposal, receiver))
    }

    /// Hands a proposal to the commit thread.
    fn enqueue(
        &self,
        proposal: Proposal,
        receiver: oneshot::Receiver<Result<Outcome>>,
    ) -> Submission {
        self.shared.writes_in_flight.fetch_add(1, Ordering::AcqRel);
        match self.sender.send(Message::Propose(proposal)) {
            Ok(()) => Submission::pending(receiver),
            Err(_) => {
                self.shared.writes_in_flight.fetch_sub(1, Ordering::AcqRel);
                Submission::ready(Err(Error::Closed))
            }
        }
    }

    /// [`Self::try_commit_inline`] for a whole pipeline: commits `batch` with
    /// one sync on this thread if the store is otherwise idle, and returns
    /// what is left to enqueue (all of it, or nothing).
    fn try_commit_batch_inline(&self, mut batch: Vec<Proposal>) -> Vec<Proposal> {
        if batch.is_empty() || !self.may_commit_inline() {
            return batch;
        }
        let Some(mut log) = self.shared.log.try_lock() else {
            return batch;
        };
        if self.shared.writes_in_flight.load(Ordering::Acquire) != 0 {
            return batch;
        }
        let mut replies = Vec::with_capacity(batch.len());
        log.commit(&*self.shared, &mut batch, &mut replies);
        let bytes_since_snapshot = log.log_bytes_since_snapshot;
        drop(log);
        deliver(replies);
        self.after_inline_commit(bytes_since_snapshot);
        batch
    }

    /// Asks the commit thread to consider a snapshot once enough log has
    /// been written by inline commits (which it does not see).
    fn after_inline_commit(&self, bytes_since_snapshot: u64) {
        let threshold = self
            .snapshot_policy
            .threshold(self.shared.state.read().data_bytes());
        if bytes_since_snapshot >= threshold
            && !self
                .shared
                .snapshot_check_pending
                .swap(true, Ordering::AcqRel)
        {
            let _ = self.sender.send(Message::CheckSnapshot);
        }
    }

    /// Whether a write may skip the commit thread and commit here: only a
    /// lone writer, on a thread whose blocking in the sync stalls no one.
    ///
    /// A runtime with one worker (a one-CPU container, a current-thread
    /// runtime) would serve nothing else during the sync, and, seeing no
    /// other write in flight (none could be submitted meanwhile), every
    /// next write would commit alone too: one write per sync, every
    /// connection stalled behind it. With more workers the others serve on,
    /// submit their writes to the commit thread, and the batches that follow
    /// turn the shortcut off.
    fn may_commit_inline(&self) -> bool {
        let concurrent = self.shared.last_batch_len.load(Ordering::Relaxed) > 1
            || self.shared.writes_in_flight.load(Ordering::Acquire) != 0;
        if !self.commit_inline || concurrent {
            return false;
        }
        match tokio::runtime::Handle::try_current() {
            Err(_) => true,
            Ok(runtime) => {
                runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
                    && runtime.metrics().num_workers() > 1
            }
        }
    }

    /// Commits `proposal` on the calling thread when no other write is queued
    /// or being committed and the last batches were single writes: a lone
    /// writer then pays its sync and nothing else, instead of two thread
    /// hand-offs (each a futex wake that costs tens of microseconds on a
    /// virtual machine). Otherwise, or where blocking would stall other work
    /// ([`Self::may_commit_inline`]), the proposal is handed back, to be
    /// batched by the commit thread.
    fn try_commit_inline(&self, proposal: Proposal) -> Option<Proposal> {
        if !self.may_commit_inline() {
            return Some(proposal);
        }
        let Some(mut log) = self.shared.log.try_lock() else {
            return Some(proposal);
        };
        // Checked again under the lock: a queued write must be committed first.
        if self.shared.writes_in_flight.load(Ordering::Acquire) != 0 {
            return Some(proposal);
        }
        let mut batch = vec![proposal];
        let mut replies = Vec::with_capacity(1);
        log.commit(&*self.shared, &mut batch, &mut replies);
        let bytes_since_snapshot = log.log_bytes_since_snapshot;
        drop(log);
        deliver(replies);
        self.after_inline_commit(bytes_since_snapshot);
        None
    }
}

impl KvStore for DurableStore {
    fn state(&self) -> &RwLock<State> {
        &self.shared.state
    }
    fn submit(&self, command: Command) -> Submission {
        let (proposal, mut receiver) = match self.propose(command, now_ms()) {
            Ok(proposed) => proposed,
            Err(refused) => return refused,
        };
        let Some(proposal) = self.try_commit_inline(proposal) else {
            return Submission::ready(receiver.try_recv().unwrap_or(Err(Error::Closed)));
        };
        self.enqueue(proposal, receiver)
    }

    /// Several commands in order: a lone writer's pipeline commits them in one
    /// batch (one sync) on the calling thread; otherwise the commit thread gets
    /// them together and batches them.
    fn submit_all(&self, commands: Vec<Command>) -> Vec<Submission> {
        if commands.len() == 1 {
            return commands
                .into_iter()
                .map(|command| self.submit(command))
                .collect();
        }
        let mut submissions = Vec::with_capacity(commands.len());
        let mut batch = Vec::with_capacity(commands.len());
        let mut receivers = Vec::with_capacity(commands.len());
        // One batch, one issue time: the commands arrived together.
        let issued_at_ms = now_ms();
        for command in commands {
            match self.propose(command, issued_at_ms) {
                Ok((proposal, receiver)) => {
                    batch.push(proposal);
                    receivers.push(Some(receiver));
                    submissions.push(None);
                }
                Err(refused) => submissions.push(Some(refused)),
            }
        }
        let mut batch = self.try_commit_batch_inline(batch);
        let mut receivers = receivers.into_iter();
        let mut queued = batch.drain(..);
        submissions
            .into_iter()
            .map(|submission| match submission {
                Some(refused) => refused,
                None => {
                    let receiver = receivers.next().flatten();
                    match (receiver, queued.next()) {
                        (Some(receiver), Some(proposal)) => self.enqueue(proposal, receiver),
                        (Some(receiver), None) => Submission::pending(receiver),
                        (None, _) => Submission::ready(Err(Error::Closed)),
                    }
                }
            })
            .collect()
    }

    fn failure(&self) -> Option<String> {
        self.shared.failure()
    }

    fn stats(&self) -> Option<Arc<StoreStats>> {
        Some(self.shared.stats.clone())
    }

    fn snapshot_now(&self) -> Result<SnapshotInfo> {
        self.snapshot()
    }
}

/// Decoded commands handed from the log reader to the applier, in log order.
type ReplayBatch = Vec<(u64, u64, Command)>;

/// Opens the log and replays it onto `state` with two threads: this one reads,
/// checks and decodes records while another applies them, so recovery runs at
/// the speed of the slower half rather than of both together.
fn replay(
    fs: &Arc<dyn FileSystem>,
    dir: &Path,
    options: &StoreOptions,
    mut state: State,
) -> Result<(Wal, RecoveryReport, State)> {
    const BATCH: usize = 4096;
    let replay_from = state.applied_seq() + 1;
    let (sender, receiver) = std::sync::mpsc::sync_channel::<ReplayBatch>(4);
    std::thread::scope(|scope| {
        let applier = scope.spawn(move || {
            for batch in receiver {
                for (seq, issued_at_ms, command) in batch {
                    state.apply(seq, issued_at_ms, command);
                }
            }
            state
        });
        let mut batch = Vec::with_capacity(BATCH);
        let opened = Wal::open(
            fs.clone(),
            dir,
            options.wal.clone(),
            replay_from,
            |seq, payload| {
                let (issued_at_ms, command) =
                    decode_payload(payload).map_err(|err| err.to_string())?;
                batch.push((seq, issued_at_ms, command));
                if batch.len() == BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    sender
                        .send(full)
                        .map_err(|_| "the replay applier stopped".to_string())?;
                }
                Ok(())
            },
        );
        let last = std::mem::take(&mut batch);
        let _ = sender.send(last);
        drop(sender);
        let state = applier
            .join()
            .map_err(|_| Error::corrupt(dir, 0, "applying the log panicked"))?;
        let (wal, report) = opened?;
        Ok((wal, report, state))
    })
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
                return Ok((State::from_snapshot(seq, meta.revision, records), report));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_on_an_async_runtime_does_not_block_it_and_releases_the_lock() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = DurableStore::open(dir.path(), StoreOptions::default()).expect("open");
        store.set(b"k", b"v").expect("write");
        // Dropped on a runtime thread: must neither panic nor block.
        drop(store);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let reopened = loop {
            match DurableStore::open(dir.path(), StoreOptions::default()) {
                Ok(store) => break store,
                Err(Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(error) => panic!("reopen: {error}"),
            }
        };
        assert_eq!(reopened.get(b"k").as_deref(), Some(&b"v"[..]));
        // Closed from a plain thread, the usual way.
        tokio::task::spawn_blocking(move || reopened.close())
            .await
            .expect("join")
            .expect("close");
    }

    /// Concurrent writers on a runtime with one worker (a one-CPU machine)
    /// must share syncs. A write committed on the worker itself would stall
    /// every other task through its sync, so each next write would find no
    /// other in flight and commit alone too: one write per sync.
    async fn concurrent_writers_share_syncs() {
        const WRITERS: usize = 32;
        const WRITES_EACH: usize = 10;
        let dir = tempfile::tempdir().expect("temp dir");
        let store =
            Arc::new(DurableStore::open(dir.path(), StoreOptions::default()).expect("open"));
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let store = store.clone();
                tokio::spawn(async move {
                    for write in 0..WRITES_EACH {
                        let key = format!("w{writer}-{write}").into_bytes();
                        store
                            .submit(Command::put(key, b"v".to_vec()))
                            .await
                            .expect("write");
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.expect("writer");
        }
        let writes = (WRITERS * WRITES_EACH) as u64;
        let syncs = store.shared.stats.syncs.load(Ordering::Relaxed);
        assert!(
            syncs * 2 <= writes,
            "{writes} writes took {syncs} syncs: the writers did not share them"
        );
        let store = Arc::into_inner(store).expect("the only handle");
        tokio::task::spawn_blocking(move || store.close())
            .await
            .expect("join")
            .expect("close");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn concurrent_writers_on_a_one_worker_runtime_share_syncs() {
        concurrent_writers_share_syncs().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_writers_on_a_current_thread_runtime_share_syncs() {
        concurrent_writers_share_syncs().await;
    }
}
