//! The commit thread: leads group commit where writers may not, schedules
//! snapshots, and syncs an idle log under the interval policy.
//!
//! Writers normally commit their own batches (`pending.rs`): the first to
//! find nobody committing leads, taking everything queued into one append
//! and one sync. A writer whose blocking would stall other work (the only
//! worker of a runtime) hands the leadership to this thread instead, which
//! then gathers: after a batch of several writers it waits (up to
//! `commit_delay`) for them to come back before committing again, since each
//! one that joins saves a whole sync.
//!
//! Snapshots are written by a separate thread from a frozen view of the state
//! (see `State::freeze`), so writes keep flowing; when one finishes, this thread
//! deletes the log segments it covers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::handoff::{Receiver, RecvError, SendError, Sender};
use tokio::sync::oneshot;

use super::log_writer::{Proposal, Reply, deliver};
use super::options::{FsyncPolicy, SnapshotInfo, SnapshotPolicy, StoreOptions};
use super::pending::PendingWrites;
use super::shared::Shared;
use super::state::{SnapshotPoint, write_frozen};
use crate::error::{Error, Result};
use crate::storage::snapshot::{SnapshotMeta, SnapshotWriter, parse_snapshot_file_name};

pub(super) enum Message {
    /// Writes are queued and their writer could not lead (`pending.rs`):
    /// this thread leads until the queue is empty.
    Lead,
    /// A writer committed on its own and the log may be due for a snapshot.
    CheckSnapshot,
    /// A writer's commit left the log unsynced (the interval policy): the
    /// idle sync is due one interval after it.
    Unsynced,
    Snapshot(oneshot::Sender<Result<SnapshotInfo>>),
    SnapshotFinished(Result<SnapshotInfo>),
    Shutdown(oneshot::Sender<Result<()>>),
}

type SnapshotReply = oneshot::Sender<Result<SnapshotInfo>>;

/// A batch stops taking more records past this many payload bytes, so a burst
/// of large values cannot build one enormous write.
pub(super) const MAX_BATCH_BYTES: usize = 8 << 20;

/// How long closing waits for a writer's commit under way to finish.
const LEADER_FINISH_TIMEOUT: Duration = Duration::from_secs(30);

/// The most records one batch takes unless the options say otherwise.
const DEFAULT_MAX_BATCH: usize = 4096;

pub(super) fn max_batch(options: &StoreOptions) -> usize {
    match options.max_batch {
        0 => DEFAULT_MAX_BATCH,
        max => max,
    }
}

/// What committing a batch left behind.
pub(super) struct Committed {
    /// Log bytes written since the last snapshot.
    pub bytes_since_snapshot: u64,
    /// A write was refused for want of space and none that adds data got in
    /// since.
    pub refused_for_space: bool,
    /// The log was synced before this batch and is not now (the interval
    /// policy): the commit thread, which syncs an idle log, must hear of it.
    pub left_unsynced: bool,
}

/// Commits a batch the leader took (`pending.rs`): one append, one sync, then
/// the apply, under the log lock. The replies are left in `replies` for the
/// caller to deliver.
pub(super) fn commit_taken(
    shared: &Shared,
    batch: &mut Vec<Proposal>,
    replies: &mut Vec<Reply>,
) -> Committed {
    // Counted done however this ends, a panic included, so that a snapshot
    // waiting for these writes is not left waiting.
    let _done = CountDone(&shared.pending, batch.len());
    if let Some(reason) = shared.failure() {
        for proposal in batch.drain(..) {
            proposal.reply.send(Err(Error::Failed {
                reason: reason.clone(),
            }));
        }
        return Committed {
            bytes_since_snapshot: 0,
            refused_for_space: false,
            left_unsynced: false,
        };
    }
    shared.last_batch_len.store(batch.len(), Ordering::Relaxed);
    let mut log = shared.log.lock();
    let was_unsynced = log.unsynced;
    log.commit(shared, batch, replies);
    Committed {
        bytes_since_snapshot: log.log_bytes_since_snapshot,
        refused_for_space: log.refused_for_space,
        left_unsynced: log.unsynced && !was_unsynced,
    }
}

/// Counts a taken batch done when dropped.
struct CountDone<'a>(&'a PendingWrites, usize);

impl Drop for CountDone<'_> {
    fn drop(&mut self) {
        self.0.done(self.1);
    }
}

struct RunningSnapshot {
    handle: JoinHandle<()>,
    waiters: Vec<SnapshotReply>,
}

pub(super) struct Committer {
    shared: Arc<Shared>,
    receiver: Receiver<Message>,
    /// For snapshot threads to report back on.
    sender: Sender<Message>,
    fsync: FsyncPolicy,
    snapshot_policy: SnapshotPolicy,
    max_batch: usize,
    running_snapshot: Option<RunningSnapshot>,
    /// Callers who asked for a snapshot while one was running: they get the next.
    next_snapshot_waiters: Vec<SnapshotReply>,
    /// A shutdown asked for while this thread was leading.
    shutdown: Option<oneshot::Sender<Result<()>>>,
    batch: Vec<Proposal>,
    replies: Vec<Reply>,
    /// Hands large batches of replies to the notifier thread.
    notifier: Sender<Vec<Reply>>,
    /// Longest wait for the writers of the last batch (`shared.last_batch_len`)
    /// before committing what is there.
    commit_delay: Duration,
}

/// Up to this many writers blocked in threads are woken by the commit thread
/// itself; more go to the notifier thread, so that waking dozens of threads
/// (a futex wake and a context switch each) overlaps the next batch's write
/// and sync instead of delaying it. Writers that are async tasks never get
/// here: the apply answers each as it goes (`LogWriter::commit`), since waking
/// a task costs its runtime little and the hop to the notifier cost more
/// (SET `-c 64 -P 16`: +8 %, BENCHMARKS.md).
const INLINE_REPLIES: usize = 4;

/// Wakes the writers of committed batches, in commit order.
fn run_notifier(batches: Receiver<Vec<Reply>>) {
    while let Ok(batch) = batches.recv() {
        deliver(batch);
    }
}

impl Committer {
    pub fn new(
        shared: Arc<Shared>,
        receiver: Receiver<Message>,
        sender: Sender<Message>,
        options: &StoreOptions,
    ) -> Committer {
        let (notifier, batches) = crate::handoff::unbounded();
        // If the thread cannot start, the send below fails and replies go inline.
        let _ = std::thread::Builder::new()
            .name("walrus-notify".into())
            .spawn(move || run_notifier(batches));
        let max_batch = max_batch(options);
        Committer {
            shared,
            receiver,
            sender,
            fsync: options.fsync,
            snapshot_policy: options.snapshots,
            max_batch,
            running_snapshot: None,
            next_snapshot_waiters: Vec::new(),
            shutdown: None,
            batch: Vec::with_capacity(max_batch),
            replies: Vec::with_capacity(max_batch),
            notifier,
            commit_delay: options.commit_delay,
        }
    }

    pub fn run(mut self) {
        loop {
            let Some(message) = self.next_message() else {
                // Every sender is gone: nobody can wait for anything any more.
                let _ = self.shared.log.lock().sync(&*self.shared, Instant::now());
                return;
            };
            self.dispatch(message);
            if self.should_snapshot() {
                self.start_snapshot(Vec::new());
            }
            if let Some(reply) = self.shutdown.take() {
                let result = self.shut_down();
                let _ = reply.send(result);
                return;
            }
        }
    }

    /// Waits for the next message; with an interval policy, syncs when the
    /// interval passes while idle.
    fn next_message(&mut self) -> Option<Message> {
        loop {
            let FsyncPolicy::Interval(interval) = self.fsync else {
                return self.receiver.recv().ok();
            };
            let (unsynced, last_sync) = {
                let log = self.shared.log.lock();
                (log.unsynced, log.last_sync)
            };
            if !unsynced {
                return self.receiver.recv().ok();
            }
            let wait = interval.saturating_sub(last_sync.elapsed());
            match self.receiver.recv_timeout(wait) {
                Ok(message) => return Some(message),
                Err(RecvError::Empty) => {
                    let _ = self.shared.log.lock().sync(&*self.shared, Instant::now());
                }
                Err(RecvError::Disconnected) => return None,
            }
        }
    }

    fn dispatch(&mut self, message: Message) {
        match message {
            Message::Lead => self.lead(),
            Message::Snapshot(reply) => {
                if self.running_snapshot.is_some() {
                    self.next_snapshot_waiters.push(reply);
                } else {
                    self.start_snapshot(vec![reply]);
                }
            }
            Message::CheckSnapshot => {
                self.shared
                    .snapshot_check_pending
                    .store(false, Ordering::Release);
            }
            // Only wakes this thread: `next_message` then waits for the
            // interval instead of for the next message.
            Message::Unsynced => {}
            Message::SnapshotFinished(result) => self.finish_snapshot(result),
            Message::Shutdown(reply) => {
                // Refuse new writes at once, so that leading (here or by a
                // writer) ends with the writes already queued.
                self.shared.pending.close();
                self.shutdown = Some(reply);
            }
        }
    }

    /// Commits what writers queue until the queue is empty, then resigns.
    fn lead(&mut self) {
        loop {
            // The writers of the last batch are being woken and will be
            // back within microseconds: waiting for them (asleep, so the
            // CPU stays with the writers) costs a little latency and saves
            // a whole sync each. One wake-up when they are all back (or the
            // delay is up), not one per writer.
            let last_batch_len = self.shared.last_batch_len.load(Ordering::Relaxed);
            if last_batch_len > 1 && self.shared.pending.len() < last_batch_len {
                self.shared
                    .pending
                    .wait_for(last_batch_len, Instant::now() + self.commit_delay);
            }
            if !self
                .shared
                .pending
                .take_or_resign(&mut self.batch, self.max_batch, MAX_BATCH_BYTES)
            {
                return;
            }
            commit_taken(&self.shared, &mut self.batch, &mut self.replies);
            // What is left to answer are writers blocked in threads.
            if self.replies.len() <= INLINE_REPLIES {
                deliver(self.replies.drain(..));
            } else {
                let threads: Vec<Reply> = self.replies.drain(..).collect();
                if let Err(SendError(threads)) = self.notifier.send(threads) {
                    deliver(threads);
                }
            }
            if self.should_snapshot() {
                self.start_snapshot(Vec::new());
            }
            // Leading can last as long as the load does: the other messages
            // (a finished snapshot, a shutdown) are served between batches.
            while let Ok(message) = self.receiver.try_recv() {
                self.dispatch(message);
            }
        }
    }

    fn should_snapshot(&self) -> bool {
        let policy = &self.snapshot_policy;
        if !policy.automatic || self.running_snapshot.is_some() || self.shared.failure().is_some() {
            return false;
        }
        let live = self.shared.state.read().data_bytes();
        let log = self.shared.log.lock();
        policy.due(log.log_bytes_since_snapshot, live, log.refused_for_space)
    }

    fn start_snapshot(&mut self, waiters: Vec<SnapshotReply>) {
        let point = {
            // The log lock keeps commits out, so the freeze and the byte count
            // reset happen at the same log position.
            let mut log = self.shared.log.lock();
            log.log_bytes_since_snapshot = 0;
            self.shared.state.write().freeze()
        };
        let shared = self.shared.clone();
        let sender = self.sender.clone();
        let spawned = std::thread::Builder::new()
            .name("walrus-snapshot".into())
            .spawn(move || {
                let started = Instant::now();
                // A panic must still thaw the state and report back, or the
                // preimages would grow forever and callers wait for nothing.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    write_snapshot(&shared, point)
                }))
                .unwrap_or_else(|_| Err(Error::SnapshotFailed("snapshot writer panicked".into())));
                super::State::thaw(&shared.state);
                let info = result.map(|path| SnapshotInfo {
                    seq: point.seq,
                    revision: point.revision,
                    entries: point.entry_count,
                    path,
                    duration: started.elapsed(),
                });
                let _ = sender.send(Message::SnapshotFinished(info));
            });
        match spawned {
            Ok(handle) => self.running_snapshot = Some(RunningSnapshot { handle, waiters }),
            Err(error) => {
                super::State::thaw(&self.shared.state);
                for waiter in waiters {
                    let _ = waiter.send(Err(Error::SnapshotFailed(error.to_string())));
                }
            }
        }
    }

    fn finish_snapshot(&mut self, result: Result<SnapshotInfo>) {
        let Some(running) = self.running_snapshot.take() else {
            return;
        };
        let _ = running.handle.join();
        let result = result.and_then(|info| {
            self.compact(&info)?;
            Ok(info)
        });
        match &result {
            Ok(info) => {
                let stats = &self.shared.stats;
                stats.snapshots.fetch_add(1, Ordering::Relaxed);
                stats
                    .snapshot_revision
                    .store(info.revision, Ordering::Relaxed);
                stats
                    .snapshot_nanos
                    .fetch_add(info.duration.as_nanos() as u64, Ordering::Relaxed);
                tracing::info!(
                    seq = info.seq,
                    keys = info.entries,
                    millis = info.duration.as_millis() as u64,
                    "snapshot written"
                );
            }
            Err(error) => tracing::warn!(%error, "snapshot failed; the log is intact"),
        }
        for waiter in running.waiters {
            let reply = match &result {
                Ok(info) => Ok(info.clone()),
                Err(error) => Err(Error::SnapshotFailed(error.to_string())),
            };
            let _ = waiter.send(reply);
        }
        if !self.next_snapshot_waiters.is_empty() {
            let waiters = std::mem::take(&mut self.next_snapshot_waiters);
            self.start_snapshot(waiters);
        }
    }

    /// Deletes what a finished snapshot makes redundant: log segments it covers
    /// and older snapshots.
    fn compact(&mut self, info: &SnapshotInfo) -> Result<()> {
        {
            let mut log = self.shared.log.lock();
            log.wal.remove_through(info.seq)?;
            self.shared
                .stats
                .segments
                .store(log.wal.segment_count() as u64, Ordering::Relaxed);
        }
        let fs = &*self.shared.fs;
        let dir = &self.shared.dir;
        let names = fs.list(dir).map_err(|err| Error::io(dir, err))?;
        let mut removed = false;
        for name in names {
            if parse_snapshot_file_name(&name).is_some_and(|seq| seq < info.seq) {
                let path = dir.join(&name);
                fs.remove(&path).map_err(|err| Error::io(&path, err))?;
                removed = true;
            }
        }
        if removed {
            fs.sync_dir(dir).map_err(|err| Error::io(dir, err))?;
        }
        Ok(())
    }

    fn shut_down(&mut self) -> Result<()> {
        // No more writes are queued from here; a writer leading now commits
        // what is queued and resigns. Its handing over to this thread (a
        // `Lead` message) is served below.
        if self.shared.pending.close() {
            let deadline = Instant::now() + LEADER_FINISH_TIMEOUT;
            while self
                .shared
                .pending
                .is_led_after(Instant::now() + Duration::from_millis(1))
            {
                if let Ok(message) = self.receiver.try_recv() {
                    self.dispatch(message);
                }
                if Instant::now() >= deadline {
                    tracing::warn!(
                        "a writer leading a commit did not finish; refusing what is queued"
                    );
                    self.shared.pending.abandon();
                    break;
                }
            }
        }
        let mut left = self.shared.pending.take_all_for_close();
        if !left.is_empty() {
            commit_taken(&self.shared, &mut left, &mut self.replies);
            deliver(self.replies.drain(..));
        }
        if let Some(running) = &self.running_snapshot {
            while !running.handle.is_finished() {
                std::thread::sleep(Duration::from_millis(1));
            }
            // Its report is queued behind whatever else is in the channel.
            while let Ok(message) = self.receiver.try_recv() {
                match message {
                    Message::SnapshotFinished(result) => self.finish_snapshot(result),
                    Message::Snapshot(reply) => {
                        let _ = reply.send(Err(Error::Closed));
                    }
                    Message::Lead | Message::CheckSnapshot | Message::Unsynced => {}
                    Message::Shutdown(reply) => {
                        let _ = reply.send(Ok(()));
                    }
                }
            }
        }
        for waiter in self.next_snapshot_waiters.drain(..) {
            let _ = waiter.send(Err(Error::Closed));
        }
        if let Some(running) = self.running_snapshot.take() {
            let _ = running.handle.join();
        }
        if let Some(reason) = self.shared.failure() {
            return Err(Error::Failed { reason });
        }
        self.shared.log.lock().sync(&*self.shared, Instant::now())
    }
}

impl Drop for Committer {
    /// However this thread ends (a panic included), writers must not queue
    /// for a leader that is gone: what is queued, and everything later, is
    /// refused.
    fn drop(&mut self) {
        self.shared.pending.abandon();
    }
}

/// Streams the frozen state into a snapshot file, a chunk per read lock so
/// writers are never held up for long.
fn write_snapshot(shared: &Shared, point: SnapshotPoint) -> Result<std::path::PathBuf> {
    // Small chunks keep each read-lock hold (and so the wait of a commit's
    // apply behind it) to tens of microseconds.
    const CHUNK_ENTRIES: usize = 256;
    let meta = SnapshotMeta {
        last_seq: point.seq,
        revision: point.revision,
        entry_count: point.entry_count,
    };
    let mut writer = SnapshotWriter::create(&*shared.fs, &shared.dir, meta)?;
    if let Err(error) = write_frozen(&shared.state, &mut writer, CHUNK_ENTRIES) {
        writer.abandon();
        return Err(error);
    }
    writer.finish()
}
