//! `LogWriter`: the log with everything appending to it needs — the fsync
//! policy, the sync clock, the bytes written since the last snapshot.
//!
//! It lives behind a mutex in the store's shared state, and whoever leads the
//! queue of waiting writes holds it to commit (`pending.rs`): a writer, or
//! the commit thread. Either way a commit is append, sync (per
//! policy), then apply in log order under the state's write lock, so a write is
//! visible exactly when it is durable.

use std::sync::atomic::Ordering;
use std::time::Instant;

use parking_lot::RwLock;

use super::Command;
use super::group_reply::ReplyTo;
use super::options::{FsyncPolicy, SnapshotPolicy};
use super::state::{Outcome, State};
use super::stats::StoreStats;
use crate::error::{Error, Result};
use crate::latency_monitor::Event;
use crate::storage::{SpaceUse, Wal};

/// What a commit writes into besides the log: the state it applies to, the
/// counters it updates, and where a failure of the log is recorded. The
/// store's shared state implements it; the log writer needs no more of it.
pub(super) trait CommitTarget {
    fn state(&self) -> &RwLock<State>;
    fn stats(&self) -> &StoreStats;
    /// Fails the store for good (a write or sync error).
    fn set_failed(&self, reason: String);
}

/// A command on its way into the log.
pub(super) struct Proposal {
    pub payload: Vec<u8>,
    pub issued_at_ms: u64,
    pub command: Command,
    /// The client it came from, for the key-event listeners ([`super::origin`]).
    pub origin: u64,
    /// Its writer is a thread that blocks on the reply, not an async task.
    pub wakes_thread: bool,
    pub reply: ReplyTo,
}

/// An applied command and the thread blocked waiting for it (async writers
/// are answered during the apply; see [`LogWriter::commit`]).
pub(super) struct Reply {
    pub sender: ReplyTo,
    pub outcome: Outcome,
}

pub(super) struct LogWriter {
    pub wal: Wal,
    fsync: FsyncPolicy,
    /// Appended records not yet synced (interval and never policies).
    pub unsynced: bool,
    pub last_sync: Instant,
    pub log_bytes_since_snapshot: u64,
    /// A write was refused for want of space, and none that adds data got
    /// in since: a snapshot is due whenever it gives space back
    /// ([`SnapshotPolicy::due`]), so deleting keys frees the disk by itself,
    /// however many snapshots the deletes take.
    pub refused_for_space: bool,
    /// Sizes new segments to the log a snapshot covers.
    snapshot_policy: SnapshotPolicy,
}

impl LogWriter {
    pub fn new(
        wal: Wal,
        fsync: FsyncPolicy,
        log_bytes_since_snapshot: u64,
        snapshot_policy: SnapshotPolicy,
    ) -> LogWriter {
        LogWriter {
            wal,
            fsync,
            unsynced: false,
            last_sync: Instant::now(),
            log_bytes_since_snapshot,
            refused_for_space: false,
            snapshot_policy,
        }
    }

    /// Commits `batch` (which it empties): appends it with one write, syncs as
    /// the policy says and applies it. Each async writer is answered as its
    /// command is applied; the outcomes of writers blocked in threads are
    /// pushed onto `replies`, for the caller to wake them after the batch. On
    /// failure the log is failed for good and every writer of the batch gets
    /// the error.
    ///
    /// Out of space ([`Error::NoSpace`]) nothing is failed: the writers that
    /// would add data get that error, and the deletes among them are appended
    /// again into the space kept back for them.
    pub fn commit(
        &mut self,
        shared: &impl CommitTarget,
        batch: &mut Vec<Proposal>,
        replies: &mut Vec<Reply>,
    ) {
        let started = Instant::now();
        let appended = match self
            .wal
            .append(batch.iter().map(|proposal| proposal.payload.as_slice()))
        {
            Err(Error::NoSpace { path }) => {
                let (freeing, adding): (Vec<Proposal>, Vec<Proposal>) = batch
                    .drain(..)
                    .partition(|proposal| proposal.command.frees_space());
                self.refused_for_space |= !adding.is_empty();
                for proposal in adding {
                    proposal
                        .reply
                        .send(Err(Error::NoSpace { path: path.clone() }));
                }
                *batch = freeing;
                if batch.is_empty() {
                    return;
                }
                self.wal.append_as(
                    SpaceUse::Freeing,
                    batch.iter().map(|proposal| proposal.payload.as_slice()),
                )
            }
            other => other,
        };
        let record_bytes: usize = batch
            .iter()
            .map(|proposal| Wal::record_bytes(proposal.payload.len()))
            .sum();
        let result = appended.and_then(|first_seq| {
            self.unsynced = true;
            let due = match self.fsync {
                FsyncPolicy::Always => true,
                FsyncPolicy::Interval(interval) => self.last_sync.elapsed() >= interval,
                FsyncPolicy::Never => false,
            };
            if due {
                self.sync(shared, started)?;
            }
            Ok(first_seq)
        });
        let first_seq = match result {
            Ok(first_seq) => first_seq,
            Err(Error::NoSpace { path }) => {
                self.refused_for_space = true;
                for proposal in batch.drain(..) {
                    proposal
                        .reply
                        .send(Err(Error::NoSpace { path: path.clone() }));
                }
                return;
            }
            Err(error) => {
                let reason = error.to_string();
                shared.set_failed(reason.clone());
                for proposal in batch.drain(..) {
                    proposal.reply.send(Err(Error::Failed {
                        reason: reason.clone(),
                    }));
                }
                return;
            }
        };
        let stats = shared.stats();
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.batch_size.observe(batch.len() as f64);
        stats
            .batched_records
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats
            .log_bytes
            .fetch_add(record_bytes as u64, Ordering::Relaxed);
        stats
            .segments
            .store(self.wal.segment_count() as u64, Ordering::Relaxed);
        self.log_bytes_since_snapshot += record_bytes as u64;
        if self.refused_for_space && batch.iter().any(|proposal| !proposal.command.frees_space()) {
            // A write that adds data got in: the space is back.
            self.refused_for_space = false;
        }
        let mut state = shared.state().write();
        for (offset, proposal) in batch.drain(..).enumerate() {
            let seq = first_seq + offset as u64;
            let (issued_at_ms, command) = (proposal.issued_at_ms, proposal.command);
            let outcome =
                super::origin::with(proposal.origin, || state.apply(seq, issued_at_ms, command));
            // An async writer is answered as soon as its command is applied:
            // waking its task costs no thread switch here, and its event loop
            // can send the reply and read the next requests while the rest
            // of the batch applies. A blocked thread is woken after the
            // batch, by the caller (maybe on the notifier thread).
            if proposal.wakes_thread {
                replies.push(Reply {
                    sender: proposal.reply,
                    outcome,
                });
            } else {
                proposal.reply.send(Ok(outcome));
            }
        }
        let target = self.snapshot_policy.segment_target(state.data_bytes());
        self.wal.set_segment_target(target);
    }

    /// Syncs what was appended since the last sync. A failure fails the store.
    /// The time recorded runs from `started`: for a commit, from before its
    /// write, since with direct I/O the write itself is the sync.
    pub fn sync(&mut self, shared: &impl CommitTarget, started: Instant) -> Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        let result = self.wal.sync();
        let elapsed = started.elapsed();
        let stats = shared.stats();
        stats.syncs.fetch_add(1, Ordering::Relaxed);
        stats
            .sync_nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        stats.sync_latency.observe(elapsed.as_secs_f64());
        let event = match self.fsync {
            FsyncPolicy::Always => Event::FsyncAlways,
            _ => Event::FsyncInterval,
        };
        stats.latency.observe(event, elapsed);
        self.last_sync = Instant::now();
        match result {
            Ok(()) => {
                self.unsynced = false;
                Ok(())
            }
            Err(error) => {
                shared.set_failed(error.to_string());
                Err(error)
            }
        }
    }
}

/// Sends each writer its outcome.
pub(super) fn deliver(replies: impl IntoIterator<Item = Reply>) {
    for reply in replies {
        reply.sender.send(Ok(reply.outcome));
    }
}
