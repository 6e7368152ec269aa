//! `StoreStats`: the counters the commit thread, the log writer and snapshots
//! publish, read by `/metrics`. Every field is updated with relaxed atomics:
//! they are statistics, never used to decide anything.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::latency_monitor::LatencyMonitor;
use crate::metrics::{BATCH_BUCKETS, Histogram, LATENCY_BUCKETS};

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
    /// The revision the newest snapshot holds (the one loaded at start-up,
    /// then each one written); 0 with none.
    pub snapshot_revision: AtomicU64,
    /// Slow syncs go here too (LATENCY LATEST).
    pub latency: Arc<LatencyMonitor>,
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
            snapshot_revision: AtomicU64::new(0),
            latency: Arc::default(),
        }
    }
}
