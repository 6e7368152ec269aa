//! The commit thread: group commit, apply, and snapshot scheduling.
//!
//! Writers hand encoded commands to this one thread through a queue
//! ([`crate::handoff`]). It takes everything queued (up to `max_batch`),
//! appends it with one write, syncs once (fsync `always`), applies the batch
//! to the state under one write lock in log order, and only then replies to
//! each writer. While it syncs, the next batch
//! queues up, so the number of syncs per second stays flat as writers are added
//! and each sync covers more of them. A lone writer pays exactly one sync.
//!
//! The log itself sits behind a mutex (`LogWriter`): when no write is queued or
//! in flight, a writer may take it and commit its own write without waking
//! this thread, if blocking its own thread stalls nobody else
//! (`DurableStore::may_commit_inline`).
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
use super::shared::Shared;
use super::state::{SnapshotPoint, write_frozen};
use crate::error::{Error, Result};
use crate::storage::snapshot::{SnapshotMeta, SnapshotWriter, parse_snapshot_file_name};

pub(super) enum Message {
    Propose(Proposal),
    /// A writer committed on its own and the log may be due for a snapshot.
    CheckSnapshot,
    Snapshot(oneshot::Sender<Result<SnapshotInfo>>),
    SnapshotFinished(Result<SnapshotInfo>),
    Shutdown(oneshot::Sender<Result<()>>),
}

type SnapshotReply = oneshot::Sender<Result<SnapshotInfo>>;

/// A batch stops taking more records past this many payload bytes, so a burst
/// of large values cannot build one enormous write.
const MAX_BATCH_BYTES: usize = 8 << 20;

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
    batch: Vec<Proposal>,
    /// Payload bytes in `batch`.
    batch_bytes: usize,
    replies: Vec<Reply>,
    /// Hands large batches of replies to the notifier thread.
    notifier: Sender<Vec<Reply>>,
    /// Size of the last batch: how many writers are likely to be back soon.
    last_batch_len: usize,
    /// Longest wait for them before committing what is there.
    commit_delay: Duration,
}

/// Batches up to this many replies are sent by the commit thread itself; larger
/// ones go to the notifier thread, so that waking dozens of writers (a futex
/// wake each) overlaps the next batch's write and sync instead of delaying it.
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
        let max_batch = if options.max_batch == 0 {
            4096
        } else {
            options.max_batch
        };
        Committer {
            shared,
            receiver,
            sender,
            fsync: options.fsync,
            snapshot_policy: options.snapshots,
            max_batch,
            running_snapshot: None,
            next_snapshot_waiters: Vec::new(),
            batch: Vec::with_capacity(max_batch),
            batch_bytes: 0,
            replies: Vec::with_capacity(max_batch),
            notifier,
            last_batch_len: 0,
            commit_delay: options.commit_delay,
        }
    }

    pub fn run(mut self) {
        loop {
            let Some(first) = self.next_message() else {
                // Every sender is gone: nobody can wait for anything any more.
                let _ = self.shared.log.lock().sync(&*self.shared, Instant::now());
                return;
            };
            let mut shutdown = self.dispatch(first);
            let gather_until = Instant::now() + self.commit_delay;
            while shutdown.is_none()
                && self.batch.len() < self.max_batch
                && self.batch_bytes < MAX_BATCH_BYTES
            {
                // The writers of the last batch are being woken and will be
                // back within microseconds: waiting for them (asleep, so the
                // CPU stays with the writers) costs a little latency and saves
                // a whole sync each.
                let missing = match self.batch.is_empty() {
                    true => 0,
                    false => self.last_batch_len.saturating_sub(self.batch.len()),
                };
                let mut next = self.receiver.try_recv().ok();
                if next.is_none() && missing > 0 && Instant::now() < gather_until {
                    // One wake-up when they are all back (or the delay is
                    // up), not one per writer.
                    self.receiver.wait_for(missing, gather_until);
                    next = self.receiver.try_recv().ok();
                }
                match next {
                    Some(message) => shutdown = self.dispatch(message),
                    None => break,
                }
            }
            if !self.batch.is_empty() {
                self.last_batch_len = self.batch.len();
                self.commit_batch();
            }
            if self.should_snapshot() {
                self.start_snapshot(Vec::new());
            }
            if let Some(reply) = shutdown {
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

    /// Handles one message; returns the reply handle if it asks to shut down.
    fn dispatch(&mut self, message: Message) -> Option<oneshot::Sender<Result<()>>> {
        match message {
            Message::Propose(proposal) => match self.shared.failure() {
                Some(reason) => {
                    let _ = proposal.reply.send(Err(Error::Failed { reason }));
                    self.shared.writes_in_flight.fetch_sub(1, Ordering::AcqRel);
                }
                None => {
                    self.batch_bytes += proposal.payload.len();
                    self.batch.push(proposal);
                }
            },
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
            Message::SnapshotFinished(result) => self.finish_snapshot(result),
            Message::Shutdown(reply) => return Some(reply),
        }
        None
    }

    fn commit_batch(&mut self) {
        self.batch_bytes = 0;
        let committed = self.batch.len();
        self.shared
            .last_batch_len
            .store(committed, Ordering::Relaxed);
        self.shared
            .log
            .lock()
            .commit(&*self.shared, &mut self.batch, &mut self.replies);
        if self.replies.len() <= INLINE_REPLIES {
            deliver(self.replies.drain(..));
        } else {
            let replies = std::mem::replace(&mut self.replies, Vec::with_capacity(self.max_batch));
            if let Err(SendError(replies)) = self.notifier.send(replies) {
                deliver(replies);
            }
        }
        self.shared
            .writes_in_flight
            .fetch_sub(committed, Ordering::AcqRel);
    }

    fn should_snapshot(&self) -> bool {
        let policy = &self.snapshot_policy;
        if !policy.automatic || self.running_snapshot.is_some() || self.shared.failure().is_some() {
            return false;
        }
        let live = self.shared.state.read().data_bytes();
        self.shared.log.lock().log_bytes_since_snapshot >= policy.threshold(live)
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
                shared.state.write().thaw();
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
                self.shared.state.write().thaw();
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
        if let Some(running) = &self.running_snapshot {
            while !running.handle.is_finished() {
                std::thread::sleep(Duration::from_millis(1));
            }
            // Its report is queued behind whatever else is in the channel.
            while let Ok(message) = self.receiver.try_recv() {
                match message {
                    Message::SnapshotFinished(result) => self.finish_snapshot(result),
                    Message::Propose(proposal) => {
                        let _ = proposal.reply.send(Err(Error::Closed));
                    }
                    Message::Snapshot(reply) => {
                        let _ = reply.send(Err(Error::Closed));
                    }
                    Message::CheckSnapshot => {}
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
