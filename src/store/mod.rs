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
pub mod describe;
mod durable;
mod entry;
mod key;
mod log_writer;
mod mem;
pub mod number;
mod options;
pub mod redis_op;
mod shared;
mod state;
mod stats;

use std::future::Future;
use std::ops::Bound;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::oneshot;

pub use command::{Command, Guard, MAX_COMMAND_FIELD_BYTES, Op, decode_payload, encode_payload};
pub use durable::DurableStore;
pub use mem::MemStore;
pub use options::{FsyncPolicy, SnapshotInfo, SnapshotPolicy, StoreOptions};
pub use state::{DbKey, Entry, Outcome, RemovalLog, SnapshotPoint, State, scan_hash, write_frozen};
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
    fn get_entry(&self, key: &[u8]) -> Option<Entry> {
        self.state().read().get(0, key, now_ms()).cloned()
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

    /// Per database with live keys: its number, live keys, and how many of
    /// those have an expiry (INFO's keyspace section).
    fn key_counts(&self) -> Vec<(u8, usize, usize)> {
        self.state().read().key_counts(now_ms())
    }

    /// Keys expired now among up to `scan_limit` stored keys after `after`, and
    /// the cursor for the next call (`None` once the scan reached the end); see
    /// [`State::expired_keys`]. The expiry sweeper's view.
    fn expired_keys(
        &self,
        after: Option<(u8, &[u8])>,
        scan_limit: usize,
    ) -> (Vec<DbKey>, Option<DbKey>) {
        self.state()
            .read()
            .expired_keys(after, scan_limit, now_ms())
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

/// A command in flight: already finished, or waiting for the commit thread.
pub struct Submission(SubmissionInner);

enum SubmissionInner {
    Ready(Option<Result<Outcome>>),
    Pending(oneshot::Receiver<Result<Outcome>>),
}

impl Submission {
    pub fn ready(result: Result<Outcome>) -> Submission {
        Submission(SubmissionInner::Ready(Some(result)))
    }

    pub(crate) fn pending(receiver: oneshot::Receiver<Result<Outcome>>) -> Submission {
        Submission(SubmissionInner::Pending(receiver))
    }

    /// Blocks the calling thread until the command finishes. Not for use on an
    /// async runtime thread: await the submission there.
    pub fn wait(self) -> Result<Outcome> {
        match self.0 {
            SubmissionInner::Ready(result) => result.unwrap_or(Err(Error::Closed)),
            SubmissionInner::Pending(receiver) => {
                receiver.blocking_recv().unwrap_or(Err(Error::Closed))
            }
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
        }
    }
}

/// Milliseconds since the Unix epoch, the clock expiry times use (see
/// [`crate::clock`]).
pub fn now_ms() -> u64 {
    crate::clock::now_ms()
}
