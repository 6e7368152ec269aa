//! `DurableStore`: the state, made durable by the WAL and snapshots.
//!
//! Opening recovers (newest valid snapshot, then the log after it) and starts the
//! commit thread (`commit.rs`). Writes are committed by whoever leads the
//! queue of waiting writes (`pending.rs`): a writer, or that thread. Reads
//! take the state's read lock and never touch the disk.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use tokio::sync::oneshot;

use super::changes::ChangeFeed;
use super::command::{MAX_COMMAND_FIELD_BYTES, decode_payload, encode_payload};
use super::commit::{Committer, MAX_BATCH_BYTES, Message, commit_taken};
use super::group_reply::{Group, ReplyTo};
use super::log_writer::{LogWriter, Proposal, Reply, deliver};
use super::options::{FsyncPolicy, SnapshotInfo, SnapshotPolicy, StoreOptions};
use super::pending::Role;
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
    /// Commits the queued writes when this handle's writer leads.
    leader: Arc<Leader>,
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
        let stats = StoreStats {
            latency: options.latency.clone(),
            ..StoreStats::default()
        };
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
            shared: shared.clone(),
            leader: Arc::new(Leader {
                shared,
                sender: sender.clone(),
                max_batch: super::commit::max_batch(&options),
                snapshot_policy: options.snapshots,
            }),
            sender,
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
    /// The snapshot holds every write submitted before the call (a writer
    /// leading their commit finishes it first).
    pub fn snapshot(&self) -> Result<SnapshotInfo> {
        if !self
            .shared
            .pending
            .wait_done(Instant::now() + QUEUED_WRITES_TIMEOUT)
        {
            return Err(Error::SnapshotFailed(
                "writes queued before it were not committed in time".into(),
            ));
        }
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
    /// Checks and encodes a command for the log. A refusal answers `reply`
    /// at once and gives no proposal. `wakes_thread`: its writer is a thread
    /// that will block on the reply (see [`writer_blocks`]).
    fn propose(
        &self,
        command: Command,
        issued_at_ms: u64,
        wakes_thread: bool,
        reply: ReplyTo,
    ) -> Option<Proposal> {
        match self.encode(&command, issued_at_ms) {
            Ok(payload) => Some(Proposal {
                payload,
                issued_at_ms,
                command,
                origin: super::origin::current(),
                wakes_thread,
                reply,
            }),
            Err(refusal) => {
                reply.send(Err(refusal));
                None
            }
        }
    }

    /// The command's log payload, or why the store refuses it.
    fn encode(&self, command: &Command, issued_at_ms: u64) -> Result<Vec<u8>> {
        if let Some(reason) = self.shared.failure() {
            return Err(Error::Failed { reason });
        }
        let size = command.data_bytes();
        if size > MAX_COMMAND_FIELD_BYTES {
            return Err(Error::InvalidArgument(format!(
                "command carries {size} bytes; the limit is {MAX_COMMAND_FIELD_BYTES}"
            )));
        }
        let mut payload = Vec::with_capacity(size + 48);
        encode_payload(&mut payload, issued_at_ms, command);
        if payload.len() > MAX_RECORD_PAYLOAD {
            return Err(Error::InvalidArgument(format!(
                "command encodes to {} bytes; a log record holds at most {MAX_RECORD_PAYLOAD}",
                payload.len()
            )));
        }
        Ok(payload)
    }

    /// Queues proposals for the log; if nobody is committing, this writer's
    /// thread leads the commit (see `pending.rs`).
    fn queue(&self, proposals: impl IntoIterator<Item = Proposal>) {
        match self.shared.pending.push(proposals) {
            Err(refused) => {
                for proposal in refused {
                    proposal.reply.send(Err(Error::Closed));
                }
            }
            Ok(Role::Follow) => {}
            Ok(Role::Lead) => self.leader.lead_from_here(),
        }
    }
}

/// Whether a writer on this thread waits for its reply by blocking the
/// thread (no async runtime here), so answering it wakes a thread.
fn writer_blocks() -> bool {
    tokio::runtime::Handle::try_current().is_err()
}

thread_local! {
    /// This thread is an event loop's (see [`enter_event_loop`]).
    static EVENT_LOOP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as an event loop: the only thread of a
/// single-threaded runtime that serves many connections and only ever
/// awaits its writes, never blocks on one. A write submitted there leads its
/// commit on that thread, once the loop's other ready connections have
/// queued theirs, so one sync answers a whole turn of the loop. (On any
/// other single-threaded runtime the commit thread commits, since a caller
/// there may block on its submission.)
pub fn enter_event_loop() {
    EVENT_LOOP.set(true);
}

/// What a writer needs to lead the commit of the queued writes.
struct Leader {
    shared: Arc<Shared>,
    /// To the commit thread: for handing over the leadership, and asking
    /// for snapshots.
    sender: Sender<Message>,
    /// The most records one batch takes.
    max_batch: usize,
    /// When a writer's commit should ask the commit thread for a snapshot.
    snapshot_policy: SnapshotPolicy,
}

impl Leader {
    /// Leads the commit (the caller holds the leadership) the way this
    /// thread allows.
    ///
    /// - A plain thread commits at once.
    /// - So does a worker of a multi-threaded runtime while writes come one
    ///   at a time (the last batch had one): a lone writer pays its sync and
    ///   nothing else.
    /// - Otherwise such a worker defers the commit to a task of
    ///   its own that first yields: the other connections the worker has
    ///   ready (and those the I/O driver finds readable) submit their writes
    ///   first and join the batch, as Redis's event loop answers every ready
    ///   client before its one sync. The task then blocks its worker for
    ///   the commit while the other workers serve on.
    /// - A queue of [`HAND_OVER_BATCH`] or more goes to the commit thread.
    /// - An event loop's thread ([`enter_event_loop`]) leads as such a task
    ///   too, whatever the last batch: every ready connection queues its
    ///   write first, then one sync on the loop's thread answers them all,
    ///   as Redis's loop does.
    /// - Any other runtime with one worker (a one-CPU container, a
    ///   current-thread runtime) may block on a submission, or serve nothing
    ///   else during the sync. There the commit thread leads.
    fn lead_from_here(self: &Arc<Leader>) {
        // Held until resigned or handed over on purpose: if this thread
        // panics while committing, or the task below is dropped unrun (the
        // runtime shutting down), dropping it hands the leadership to the
        // commit thread, so queued writes never wait for a leader that will
        // not come.
        let mut leadership = Leadership(Some(self.clone()));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.lead(&mut leadership);
            return;
        };
        if self.shared.pending.len() >= HAND_OVER_BATCH {
            leadership.hand_over();
            return;
        }
        if EVENT_LOOP.get() {
            runtime.spawn(Leader::lead_between_tasks(leadership));
            return;
        }
        if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread
            || runtime.metrics().num_workers() < 2
        {
            leadership.hand_over();
            return;
        }
        if self.shared.last_batch_len.load(Ordering::Relaxed) <= 1 {
            let (mut batch, mut replies) = (Vec::new(), Vec::new());
            if !self.commit_next(&mut batch, &mut replies) || self.shared.pending.resign_if_empty()
            {
                leadership.release();
                return;
            }
        }
        runtime.spawn(Leader::lead_between_tasks(leadership));
    }

    /// Leads as a task of its own that yields before each batch: the tasks
    /// its worker has ready (the writers the last batch woke, connections
    /// with new requests) run first, send their replies together and queue
    /// their next writes for the batch. Then the batch commits, blocking
    /// this worker while the others serve on.
    async fn lead_between_tasks(mut leadership: Leadership) {
        let (mut batch, mut replies) = (Vec::new(), Vec::new());
        loop {
            tokio::task::yield_now().await;
            let Some(leader) = leadership.0.clone() else {
                return;
            };
            if leader.shared.pending.len() >= HAND_OVER_BATCH {
                leadership.hand_over();
                return;
            }
            if !leader.commit_next(&mut batch, &mut replies) {
                leadership.release();
                return;
            }
        }
    }

    /// Commits batches of queued writes on this thread until none is left
    /// (then resigns) or [`LEAD_BUDGET`] has passed (then the commit thread
    /// takes over).
    fn lead(&self, leadership: &mut Leadership) {
        let started = Instant::now();
        let (mut batch, mut replies) = (Vec::new(), Vec::new());
        while self.commit_next(&mut batch, &mut replies) {
            if started.elapsed() >= LEAD_BUDGET {
                leadership.hand_over();
                return;
            }
        }
        leadership.release();
    }

    /// Commits the next batch of queued writes and answers its writers.
    /// With nothing queued, resigns the leadership and returns false.
    fn commit_next(&self, batch: &mut Vec<Proposal>, replies: &mut Vec<Reply>) -> bool {
        if !self
            .shared
            .pending
            .take_or_resign(batch, self.max_batch, MAX_BATCH_BYTES)
        {
            return false;
        }
        let committed = commit_taken(&self.shared, batch, replies);
        deliver(replies.drain(..));
        if committed.left_unsynced {
            let _ = self.sender.send(Message::Unsynced);
        }
        self.after_commit(committed.bytes_since_snapshot, committed.refused_for_space);
        true
    }

    /// Passes the leadership (held by the caller) to the commit thread; if it
    /// is gone, the queued writes are answered as refused.
    fn hand_over(&self) {
        if self.sender.send(Message::Lead).is_err() {
            self.shared.pending.abandon();
        }
    }

    /// Asks the commit thread to consider a snapshot once enough log has
    /// been written by writers' own commits (which it does not see).
    fn after_commit(&self, bytes_since_snapshot: u64, refused_for_space: bool) {
        let live = self.shared.state.read().data_bytes();
        if self
            .snapshot_policy
            .due(bytes_since_snapshot, live, refused_for_space)
            && !self
                .shared
                .snapshot_check_pending
                .swap(true, Ordering::AcqRel)
        {
            let _ = self.sender.send(Message::CheckSnapshot);
        }
    }
}

/// The leadership of the queue, held by a writer's thread or task while it
/// leads. Dropped while still held (a panic while committing, a leader task
/// dropped unrun), it passes to the commit thread.
struct Leadership(Option<Arc<Leader>>);

impl Leadership {
    /// Resigned (nothing was queued): nothing to pass on.
    fn release(&mut self) {
        self.0 = None;
    }

    /// Passes the leadership to the commit thread now.
    fn hand_over(&mut self) {
        if let Some(leader) = self.0.take() {
            leader.hand_over();
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.hand_over();
    }
}

/// How long a snapshot asked for waits for the writes queued before it.
const QUEUED_WRITES_TIMEOUT: Duration = Duration::from_secs(30);

/// A batch this large comes from pipelining clients, whose requests keep the
/// runtime's workers busy: a worker blocked in the sync would cost more of
/// their CPU than the two wake-ups of handing the batch to the commit
/// thread, which syncs while both workers serve on. (`SET` at `-c 64 -P 16`,
/// about 500 writes a batch: 8 % fewer writes per second led by a worker.)
/// Unpipelined clients make batches of at most one write per connection.
const HAND_OVER_BATCH: usize = 128;

/// The longest a writer leads before the commit thread takes over, so a
/// connection whose write started a busy stretch is not held for all of it.
const LEAD_BUDGET: Duration = Duration::from_millis(10);

/// A submission for a proposal that was queued: already answered if its
/// writer led the commit.
fn submission(mut receiver: oneshot::Receiver<Result<Outcome>>) -> Submission {
    match receiver.try_recv() {
        Ok(result) => Submission::ready(result),
        Err(oneshot::error::TryRecvError::Empty) => Submission::pending(receiver),
        Err(oneshot::error::TryRecvError::Closed) => Submission::ready(Err(Error::Closed)),
    }
}

impl KvStore for DurableStore {
    fn state(&self) -> &RwLock<State> {
        &self.shared.state
    }
    fn submit(&self, command: Command) -> Submission {
        let (reply, receiver) = oneshot::channel();
        let proposal = self.propose(command, now_ms(), writer_blocks(), ReplyTo::Own(reply));
        if let Some(proposal) = proposal {
            self.queue([proposal]);
        }
        submission(receiver)
    }

    /// Several commands in order, queued together: a pipeline's writes share
    /// one batch (one sync) unless the batch limits split them. An async
    /// writer's commands are answered as one group (`group_reply.rs`); a
    /// thread's each get a channel it can block on.
    fn submit_all(&self, commands: Vec<Command>) -> Vec<Submission> {
        // One batch, one issue time: the commands arrived together.
        let (issued_at_ms, wakes_thread) = (now_ms(), writer_blocks());
        if wakes_thread || commands.len() < 2 {
            let mut submissions = Vec::with_capacity(commands.len());
            let batch: Vec<Proposal> = commands
                .into_iter()
                .filter_map(|command| {
                    let (reply, receiver) = oneshot::channel();
                    let proposal =
                        self.propose(command, issued_at_ms, wakes_thread, ReplyTo::Own(reply));
                    // A command refused at once is answered already; one
                    // proposed cannot be until it is queued below.
                    submissions.push(submission(receiver));
                    proposal
                })
                .collect();
            if !batch.is_empty() {
                self.queue(batch);
            }
            return submissions;
        }
        let count = commands.len();
        let (group, slots) = Group::new(count);
        let batch: Vec<Proposal> = commands
            .into_iter()
            .zip(slots)
            .filter_map(|(command, slot)| {
                self.propose(command, issued_at_ms, false, ReplyTo::Group(slot))
            })
            .collect();
        if !batch.is_empty() {
            self.queue(batch);
        }
        (0..count)
            .map(|index| Submission::in_group(group.clone(), index))
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
    // A log made new here (a fresh store, or one whose snapshot covers all
    // of its log) gets segments sized to the snapshot policy, as later
    // segments are: a small store keeps a small log from its start.
    let segment_target = options.snapshots.segment_target(state.data_bytes());
    let (sender, receiver) = std::sync::mpsc::sync_channel::<ReplayBatch>(4);
    std::thread::scope(|scope| {
        let applier = scope.spawn(move || {
            for batch in receiver {
                for (seq, issued_at_ms, command) in batch {
                    super::origin::with(super::origin::UNKNOWN, || {
                        state.apply(seq, issued_at_ms, command)
                    });
                }
            }
            state
        });
        let mut batch = Vec::with_capacity(BATCH);
        let opened = Wal::open(
            fs.clone(),
            dir,
            options.wal.clone(),
            segment_target,
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

    /// Closes a store the test's tasks shared, off the runtime's workers.
    async fn close_shared(store: Arc<DurableStore>) {
        let store = Arc::into_inner(store).expect("the only handle");
        tokio::task::spawn_blocking(move || store.close())
            .await
            .expect("join")
            .expect("close");
    }

    /// Opens a store and has `writers` tasks write `writes_each` keys each,
    /// one at a time, on the caller's runtime; returns the store (with its
    /// directory) and the syncs the writes took.
    async fn write_from_many_tasks(
        writers: usize,
        writes_each: usize,
    ) -> (tempfile::TempDir, Arc<DurableStore>, u64) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store =
            Arc::new(DurableStore::open(dir.path(), StoreOptions::default()).expect("open"));
        let tasks: Vec<_> = (0..writers)
            .map(|writer| {
                let store = store.clone();
                tokio::spawn(async move {
                    for write in 0..writes_each {
                        let key = format!("w{writer}-{write}").into_bytes();
                        store
                            .submit(Command::put(key, b"v".to_vec()))
                            .await
                            .expect("write");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("writer");
        }
        let syncs = store.shared.stats.syncs.load(Ordering::Relaxed);
        (dir, store, syncs)
    }

    /// Concurrent writers must share syncs on any runtime. On one with a
    /// single worker (a one-CPU machine) a write committed on the worker
    /// itself would stall every other task through its sync, so each next
    /// write would find no other queued and commit alone too: one write per
    /// sync.
    async fn concurrent_writers_share_syncs() {
        const WRITERS: usize = 32;
        const WRITES_EACH: usize = 10;
        let (_dir, store, syncs) = write_from_many_tasks(WRITERS, WRITES_EACH).await;
        let writes = (WRITERS * WRITES_EACH) as u64;
        assert!(
            syncs * 2 <= writes,
            "{writes} writes took {syncs} syncs: the writers did not share them"
        );
        close_shared(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_on_a_two_worker_runtime_share_syncs() {
        concurrent_writers_share_syncs().await;
    }

    /// Pipelines from many tasks at once, some large enough to be handed to
    /// the commit thread and some led by a worker: every write of a
    /// pipeline lands in its order (each key ends at its pipeline's last
    /// value after every round), and none is lost or left waiting.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelines_from_many_tasks_keep_their_order_whoever_leads() {
        const TASKS: usize = 16;
        const ROUNDS: usize = 30;
        let dir = tempfile::tempdir().expect("temp dir");
        let store =
            Arc::new(DurableStore::open(dir.path(), StoreOptions::default()).expect("open"));
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let store = store.clone();
                tokio::spawn(async move {
                    // Some tasks pipeline more than a worker leads alone.
                    let depth = if task % 4 == 0 {
                        HAND_OVER_BATCH + 8
                    } else {
                        3
                    };
                    let key = format!("task{task}").into_bytes();
                    for round in 0..ROUNDS {
                        let commands = (0..depth)
                            .map(|step| {
                                Command::put(key.clone(), format!("{round}:{step}").into_bytes())
                            })
                            .collect();
                        for submission in store.submit_all(commands) {
                            submission.await.expect("write");
                        }
                        let expected = format!("{round}:{}", depth - 1);
                        assert_eq!(
                            store.get(&key).as_deref(),
                            Some(expected.as_bytes()),
                            "task {task} round {round}"
                        );
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
        close_shared(store).await;
    }

    /// A pipeline answered as one group: a command refused on the way in
    /// (too large) gets its own error without holding up or failing the
    /// others, a group longer than a batch (here two records) is answered
    /// across several commits, and each command's answer is its own, in
    /// whatever order they are awaited.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pipelined_group_answers_each_command_its_own_outcome() {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = StoreOptions {
            max_batch: 2,
            ..StoreOptions::default()
        };
        let store = Arc::new(DurableStore::open(dir.path(), options).expect("open"));
        let oversized = vec![b'x'; MAX_COMMAND_FIELD_BYTES + 1];
        let commands = vec![
            Command::put(b"a".to_vec(), b"1".to_vec()),
            Command::put(b"b".to_vec(), b"2".to_vec()),
            Command::put(b"big".to_vec(), oversized),
            Command::put(b"c".to_vec(), b"3".to_vec()),
            Command::delete(b"a".to_vec()),
        ];
        let mut submissions = store.submit_all(commands);
        assert_eq!(submissions.len(), 5);
        let last = submissions.pop().expect("five submissions");
        let deleted = last.await.expect("delete");
        assert_eq!(deleted.changed, 1, "the delete saw the put before it");
        let mut revisions = Vec::new();
        for (index, submission) in submissions.into_iter().enumerate() {
            match (index, submission.await) {
                (2, Err(Error::InvalidArgument(_))) => {}
                (2, other) => panic!("the oversized put was answered {other:?}"),
                (_, Ok(outcome)) => revisions.push(outcome.revision),
                (_, Err(error)) => panic!("command {index} failed: {error}"),
            }
        }
        assert!(
            revisions.is_sorted(),
            "revisions {revisions:?} out of log order"
        );
        assert!(revisions.last() < Some(&deleted.revision));
        assert_eq!(store.get(b"a"), None);
        assert_eq!(store.get(b"c").as_deref(), Some(&b"3"[..]));
        assert_eq!(store.get(b"big"), None);
        close_shared(store).await;
    }

    /// A leader task that its runtime drops before it ever runs (spawned
    /// while the runtime shuts down) must pass the leadership on: the write
    /// is committed by the commit thread instead of waiting forever.
    #[test]
    fn a_leader_task_dropped_unrun_hands_the_commit_to_the_commit_thread() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = DurableStore::open(dir.path(), StoreOptions::default()).expect("open");
        // As after a batch of several writers: the next leader defers to a task.
        store.shared.last_batch_len.store(2, Ordering::Relaxed);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("runtime");
        let handle = runtime.handle().clone();
        runtime.shutdown_background();
        let submission = {
            let _inside = handle.enter();
            store.submit(Command::put(b"k".to_vec(), b"v".to_vec()))
        };
        submission.wait().expect("committed by the commit thread");
        assert_eq!(store.get(b"k").as_deref(), Some(&b"v"[..]));
        store.close().expect("close");
    }

    /// The log's segment files in `dir` with their sizes, preallocation
    /// included.
    fn log_files(dir: &Path) -> Vec<(String, u64)> {
        std::fs::read_dir(dir)
            .expect("list the data directory")
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let len = entry.metadata().ok()?.len();
                name.ends_with(".wal").then_some((name, len))
            })
            .collect()
    }

    fn log_file_bytes(dir: &Path) -> u64 {
        log_files(dir).iter().map(|(_, len)| len).sum()
    }

    /// A store of 1 MiB of live data, rewritten 96 times, keeps its log within
    /// the snapshot threshold (64 MiB by default) and a segment or two, through
    /// automatic snapshots alone; its segments follow the live data (4 MiB),
    /// not the threshold.
    #[test]
    fn a_small_store_keeps_a_bounded_log_of_small_segments() {
        const KEYS: usize = 1024;
        const ROUNDS: usize = 96;
        const LOG_LIMIT: u64 = (64 << 20) + 2 * super::super::options::SMALL_SEGMENT_BYTES;
        let dir = tempfile::tempdir().expect("temp dir");
        // No sync per write, to keep the test quick: the policy under test
        // counts log bytes, whatever the fsync policy.
        let options = StoreOptions {
            fsync: FsyncPolicy::Never,
            ..StoreOptions::default()
        };
        let store = DurableStore::open(dir.path(), options).expect("open");
        let value = vec![b'v'; 1024];
        for _ in 0..ROUNDS {
            for key in 0..KEYS {
                store
                    .set(format!("key-{key:04}").as_bytes(), &value)
                    .expect("set");
            }
        }
        // Snapshots and the compaction behind them run beside the writes.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut log_bytes = log_file_bytes(dir.path());
        while log_bytes > LOG_LIMIT && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            log_bytes = log_file_bytes(dir.path());
        }
        let written = store.shared.stats.log_bytes.load(Ordering::Relaxed);
        assert!(written > 96 << 20, "wrote {written} bytes of log");
        for (name, len) in log_files(dir.path()) {
            assert!(
                len <= super::super::options::SMALL_SEGMENT_BYTES,
                "{name} is {len} bytes: segments follow the live data"
            );
        }
        assert!(
            log_bytes <= LOG_LIMIT,
            "{log_bytes} bytes of log files kept for 1 MiB of data: {:?}, snapshots {}",
            log_files(dir.path()),
            store.shared.stats.snapshots.load(Ordering::Relaxed)
        );
        assert!(store.shared.stats.snapshots.load(Ordering::Relaxed) > 0);
        store.close().expect("close");
    }

    /// Plain threads lead their own commits; many at once still share syncs
    /// and every write is answered.
    #[test]
    fn writers_on_plain_threads_lead_and_share_syncs() {
        const THREADS: usize = 16;
        const WRITES_EACH: usize = 40;
        let dir = tempfile::tempdir().expect("temp dir");
        let store =
            Arc::new(DurableStore::open(dir.path(), StoreOptions::default()).expect("open"));
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let store = &store;
                scope.spawn(move || {
                    for write in 0..WRITES_EACH {
                        let key = format!("t{thread}-{write}").into_bytes();
                        store
                            .submit(Command::put(key, b"v".to_vec()))
                            .wait()
                            .expect("write");
                    }
                });
            }
        });
        let writes = (THREADS * WRITES_EACH) as u64;
        let syncs = store.shared.stats.syncs.load(Ordering::Relaxed);
        assert!(syncs < writes, "{writes} writes took {syncs} syncs");
        assert_eq!(store.state().read().len(), THREADS * WRITES_EACH);
        let store = Arc::into_inner(store).expect("the only handle");
        store.close().expect("close");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn concurrent_writers_on_a_one_worker_runtime_share_syncs() {
        concurrent_writers_share_syncs().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_writers_on_a_current_thread_runtime_share_syncs() {
        concurrent_writers_share_syncs().await;
    }

    /// On an event loop's thread the loop itself leads: each turn, every
    /// writer it has ready queues its write, then one sync answers them all,
    /// so 32 writers writing in lock step take about one sync per round.
    #[tokio::test(flavor = "current_thread")]
    async fn writers_on_an_event_loop_share_one_sync_per_turn() {
        const WRITERS: usize = 32;
        const ROUNDS: usize = 10;
        enter_event_loop();
        let (_dir, store, syncs) = write_from_many_tasks(WRITERS, ROUNDS).await;
        // Exactly one a round here; the commit thread, leading the same
        // writers on a plain current-thread runtime, took a few more.
        assert!(
            syncs <= ROUNDS as u64,
            "{WRITERS} writers took {syncs} syncs for {ROUNDS} rounds"
        );
        assert_eq!(store.state().read().len(), WRITERS * ROUNDS);
        close_shared(store).await;
    }
}
