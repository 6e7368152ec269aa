//! The key-value store: the [`KvStore`] trait and its two implementations.
//!
//! Both stores apply [`Command`]s to the same [`State`]. [`MemStore`] applies them
//! directly; [`DurableStore`] first logs them through group commit and applies
//! each only after the sync that covers it, so a write is visible exactly when it
//! is durable and acknowledged.

pub mod bitfield;
pub mod changes;
mod command;
mod commit;
mod deferred_drop;
pub mod describe;
pub mod dump_payload;
mod durable;
mod entry;
mod group_reply;
mod key;
pub mod key_events;
mod log_writer;
pub mod long_double;
mod mem;
pub mod number;
mod options;
pub mod origin;
mod pending;
pub mod redis_op;
mod shared;
mod state;
mod stats;

use std::future::Future;
use std::ops::Bound;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::oneshot;

pub use command::{
    COMMAND_FORMAT, Command, Guard, MAX_COMMAND_FIELD_BYTES, ORIGIN_FORMAT, Op, Origin,
    decode_payload, decode_payload_from, encode_payload, encode_payload_from,
};
pub use deferred_drop::DropLater;
pub use durable::{DurableStore, enter_event_loop};
pub use mem::MemStore;
pub use options::{FsyncPolicy, SnapshotInfo, SnapshotPolicy, StoreOptions};
pub use state::{
    AccessTime, DbKey, Entry, KeyCounts, Outcome, RemovalLog, SnapshotPoint, State, scan_hash,
    write_frozen,
};
pub use stats::StoreStats;

use crate::error::{Error, Result};

/// The store interface both front ends use. Every method is blocking-safe from
/// plain threads; async callers use [`KvStore::submit`] and await the result.
/// Reads take the state's read lock for one call each; writes go through
/// [`KvStore::submit`], which each store implements its own way.
pub trait KvStore: Send + Sync {
    /// The applied state reads look at.
    fn state(&self) -> &RwLock<State>;

    /// The live value of `key` in database 0.
    fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.get_entry(key).map(|entry| entry.value)
    }

    /// The live entry of `key` in database 0, with its revision and expiry.
    /// A read of the key: it moves the key's last access on.
    fn get_entry(&self, key: &[u8]) -> Option<Entry> {
        let now = now_ms();
        let state = self.state().read();
        let entry = state.get(0, key, now)?;
        entry.accessed.touch(now);
        Some(entry.clone())
    }

    /// The live entries of several keys of database `db`, all read at one
    /// instant (one revision), so a reader never sees half of a transaction.
    fn get_entries(&self, db: u8, keys: &[Bytes]) -> Vec<Option<Entry>> {
        self.get_entries_at_revision(db, keys).1
    }

    /// [`KvStore::get_entries`], with the revision they were read at.
    fn get_entries_at_revision(&self, db: u8, keys: &[Bytes]) -> (u64, Vec<Option<Entry>>) {
        let now = now_ms();
        let state = self.state().read();
        let entries = keys
            .iter()
            .map(|key| state.get(db, key, now).cloned())
            .collect();
        (state.revision(), entries)
    }

    /// Up to `limit` live entries of database `db` whose keys start with
    /// `prefix`, from `start`.
    fn range(
        &self,
        db: u8,
        start: Bound<&[u8]>,
        prefix: &[u8],
        limit: usize,
    ) -> Vec<(Bytes, Entry)> {
        self.state()
            .read()
            .range(db, start, prefix, limit, now_ms())
    }

    /// One step of a stateless scan of database `db` in hash order; see
    /// [`State::scan`].
    fn scan(
        &self,
        db: u8,
        cursor: u64,
        count: usize,
        wanted: &dyn Fn(&[u8]) -> bool,
    ) -> (Vec<Bytes>, u64) {
        self.state()
            .read()
            .scan(db, cursor, count, now_ms(), wanted)
    }

    /// Starts a command; the [`Submission`] resolves once it is durable (for a
    /// durable store) and applied.
    fn submit(&self, command: Command) -> Submission;

    /// Starts several commands, in order, as one batch where the store can:
    /// a pipelined client's writes then share one sync.
    fn submit_all(&self, commands: Vec<Command>) -> Vec<Submission> {
        commands
            .into_iter()
            .map(|command| self.submit(command))
            .collect()
    }

    /// Runs a command to completion.
    fn execute(&self, command: Command) -> Result<Outcome> {
        self.submit(command).wait()
    }

    /// Sets `key` to `value`; durable when it returns. Returns the new revision.
    fn set(&self, key: &[u8], value: &[u8]) -> Result<u64> {
        let outcome = self.execute(Command::put(
            Bytes::copy_from_slice(key),
            Bytes::copy_from_slice(value),
        ))?;
        Ok(outcome.revision)
    }

    /// Removes `key`; returns whether it existed.
    fn delete(&self, key: &[u8]) -> Result<bool> {
        let outcome = self.execute(Command::delete(Bytes::copy_from_slice(key)))?;
        Ok(outcome.changed > 0)
    }

    /// The store-wide revision counter.
    fn revision(&self) -> u64 {
        self.state().read().revision()
    }

    /// Number of stored keys.
    fn len(&self) -> usize {
        self.state().read().len()
    }

    /// Number of live keys in database `db` (stored keys minus those expired
    /// but not yet swept).
    fn live_len(&self, db: u8) -> usize {
        self.state().read().live_len(db, now_ms())
    }

    /// Database 0's change feed, for watchers.
    fn changes(&self) -> Option<Arc<changes::ChangeFeed>> {
        self.state().read().feed().cloned()
    }

    /// Per database with live keys: its number, live keys, how many of
    /// those have an expiry and their mean time to live (INFO's keyspace
    /// section).
    fn key_counts(&self) -> Vec<KeyCounts> {
        self.state().read().key_counts(now_ms())
    }

    /// Up to `max_keys` keys expired now, from `after`'s database on, and
    /// where the next call goes on (`None` once all were listed); see
    /// [`State::expired_keys`]. The expiry sweeper's view.
    fn expired_keys(
        &self,
        after: Option<(u8, &[u8])>,
        max_keys: usize,
    ) -> (Vec<DbKey>, Option<DbKey>) {
        self.state().read().expired_keys(after, max_keys, now_ms())
    }

    /// Bytes of keys and values stored.
    fn data_bytes(&self) -> u64 {
        self.state().read().data_bytes()
    }

    /// Why writes are refused, once the log has failed; `None` while healthy.
    fn failure(&self) -> Option<String> {
        None
    }

    /// Log and snapshot counters, for a store that has a log.
    fn stats(&self) -> Option<Arc<StoreStats>> {
        None
    }

    /// Takes a snapshot now and removes the log it covers (blocking: call it
    /// off the async runtime). Only a store with a log has one.
    fn snapshot_now(&self) -> Result<SnapshotInfo> {
        Err(Error::InvalidArgument(
            "this store keeps nothing on disk (--in-memory): there is nothing to snapshot".into(),
        ))
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A command in flight: already finished, or waiting for the commit thread or
/// for a replica's answer.
pub struct Submission(SubmissionInner);

enum SubmissionInner {
    Ready(Option<Result<Outcome>>),
    Pending(oneshot::Receiver<Result<Outcome>>),
    /// Slot `index` of a group answered together (`group_reply.rs`).
    InGroup {
        group: Arc<group_reply::Group>,
        index: usize,
    },
    /// Answered by something that may never answer (a Raft leader that lost
    /// its quorum): after `timeout` the submission gives `on_timeout(timeout)`.
    Bounded {
        receiver: oneshot::Receiver<Result<Outcome>>,
        deadline: tokio::time::Instant,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
        timeout: Duration,
        on_timeout: fn(Duration) -> Error,
    },
}

impl Submission {
    pub fn ready(result: Result<Outcome>) -> Submission {
        Submission(SubmissionInner::Ready(Some(result)))
    }

    pub(crate) fn pending(receiver: oneshot::Receiver<Result<Outcome>>) -> Submission {
        Submission(SubmissionInner::Pending(receiver))
    }

    pub(crate) fn in_group(group: Arc<group_reply::Group>, index: usize) -> Submission {
        Submission(SubmissionInner::InGroup { group, index })
    }

    /// Waits for `receiver` for up to `timeout`, then gives
    /// `on_timeout(timeout)` (a function, so that the error costs nothing
    /// unless it happens).
    pub(crate) fn pending_until(
        receiver: oneshot::Receiver<Result<Outcome>>,
        timeout: Duration,
        on_timeout: fn(Duration) -> Error,
    ) -> Submission {
        Submission(SubmissionInner::Bounded {
            receiver,
            deadline: tokio::time::Instant::now() + timeout,
            timer: None,
            timeout,
            on_timeout,
        })
    }

    /// Blocks the calling thread until the command finishes. Not for use on an
    /// async runtime thread: await the submission there.
    pub fn wait(self) -> Result<Outcome> {
        match self.0 {
            SubmissionInner::Ready(result) => result.unwrap_or(Err(Error::Closed)),
            SubmissionInner::Pending(receiver) => {
                receiver.blocking_recv().unwrap_or(Err(Error::Closed))
            }
            grouped @ SubmissionInner::InGroup { .. } => {
                futures::executor::block_on(Submission(grouped))
            }
            SubmissionInner::Bounded {
                mut receiver,
                deadline,
                timeout,
                on_timeout,
                ..
            } => loop {
                match receiver.try_recv() {
                    Ok(result) => return result,
                    Err(oneshot::error::TryRecvError::Closed) => return Err(Error::Closed),
                    Err(oneshot::error::TryRecvError::Empty) => {}
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(on_timeout(timeout));
                }
                std::thread::sleep(Duration::from_millis(1));
            },
        }
    }
}

impl Future for Submission {
    type Output = Result<Outcome>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            SubmissionInner::Ready(result) => {
                Poll::Ready(result.take().unwrap_or(Err(Error::Closed)))
            }
            SubmissionInner::Pending(receiver) => Pin::new(receiver)
                .poll(cx)
                .map(|received| received.unwrap_or(Err(Error::Closed))),
            SubmissionInner::InGroup { group, index } => group.poll_answer(*index, cx),
            SubmissionInner::Bounded {
                receiver,
                deadline,
                timer,
                timeout,
                on_timeout,
            } => {
                if let Poll::Ready(received) = Pin::new(receiver).poll(cx) {
                    return Poll::Ready(received.unwrap_or(Err(Error::Closed)));
                }
                let timer =
                    timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(*deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(on_timeout(*timeout))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

/// Milliseconds since the Unix epoch, the clock expiry times use (see
/// [`crate::clock`]).
pub fn now_ms() -> u64 {
    crate::clock::now_ms()
}

#[cfg(test)]
mod submission_tests {
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::{Outcome, Submission};
    use crate::error::Error;

    fn gave_up(after: Duration) -> Error {
        Error::Unavailable {
            reason: format!("gave up after {} ms", after.as_millis()),
        }
    }

    #[tokio::test]
    async fn a_bounded_submission_gives_the_answer_that_comes_in_time() {
        let (reply, receiver) = oneshot::channel();
        let submission = Submission::pending_until(receiver, Duration::from_secs(5), gave_up);
        let outcome = Outcome {
            revision: 7,
            succeeded: true,
            previous: None,
            changed: 1,
            answers: Vec::new(),
        };
        reply
            .send(Ok(outcome.clone()))
            .expect("receiver is waiting");
        assert_eq!(submission.await.expect("answered"), outcome);
    }

    #[tokio::test]
    async fn a_bounded_submission_never_answered_times_out_with_its_error() {
        let (_reply, receiver) = oneshot::channel();
        let submission = Submission::pending_until(receiver, Duration::from_millis(20), gave_up);
        match submission.await {
            Err(Error::Unavailable { reason }) => assert_eq!(reason, "gave up after 20 ms"),
            other => panic!("expected the timeout's error, got {other:?}"),
        }
    }

    #[test]
    fn waiting_on_a_bounded_submission_off_the_runtime_times_out_too() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let (_reply, receiver) = oneshot::channel::<crate::error::Result<Outcome>>();
        // The deadline is read from the runtime's clock, so it is made inside it.
        let _inside = runtime.enter();
        let submission = Submission::pending_until(receiver, Duration::from_millis(20), gave_up);
        assert!(matches!(submission.wait(), Err(Error::Unavailable { .. })));
    }
}
