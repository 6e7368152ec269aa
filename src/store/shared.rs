//! `Shared`: what the store handle, the commit thread and snapshot threads
//! hold in common: the state, the log writer behind its mutex, the writes
//! waiting for it, and the store's failure.
//!
//! Invariant: once `failed` is set it stays set; the reason is recorded first,
//! so a reader that sees the flag finds the reason.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};

use super::log_writer::{CommitTarget, LogWriter};
use super::pending::PendingWrites;
use super::state::State;
use super::stats::StoreStats;
use crate::storage::FileSystem;

/// State shared by the store handle, the commit thread and snapshot threads.
pub(super) struct Shared {
    /// Shared with whoever serves reads (a node that may later become a
    /// cluster member keeps reading through the same lock).
    pub state: Arc<RwLock<State>>,
    /// The log; held by whoever is committing (see `log_writer.rs`).
    pub log: Mutex<LogWriter>,
    /// Writes waiting for the log, and who leads their commit.
    pub pending: PendingWrites,
    /// Records in the last batch committed, by any leader: how many writers
    /// are likely to be back soon (one: writers come one at a time).
    pub last_batch_len: AtomicUsize,
    /// A `CheckSnapshot` message is on its way to the commit thread.
    pub snapshot_check_pending: AtomicBool,
    pub fs: Arc<dyn FileSystem>,
    pub dir: PathBuf,
    pub stats: Arc<StoreStats>,
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
}

impl Shared {
    pub fn new(
        state: State,
        log: LogWriter,
        fs: Arc<dyn FileSystem>,
        dir: PathBuf,
        stats: StoreStats,
    ) -> Shared {
        Shared {
            state: Arc::new(RwLock::new(state)),
            log: Mutex::new(log),
            pending: PendingWrites::new(),
            last_batch_len: AtomicUsize::new(1),
            snapshot_check_pending: AtomicBool::new(false),
            fs,
            dir,
            stats: Arc::new(stats),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
        }
    }

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

impl CommitTarget for Shared {
    fn state(&self) -> &RwLock<State> {
        &self.state
    }

    fn stats(&self) -> &StoreStats {
        &self.stats
    }

    fn set_failed(&self, reason: String) {
        Shared::set_failed(self, reason);
    }
}
