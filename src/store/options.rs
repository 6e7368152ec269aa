//! How a durable store is configured: the fsync policy, when snapshots are
//! taken, the log's layout and the watch history; and what a finished snapshot
//! reports. Plain data, shared by the store handle, the commit thread and the
//! log writer.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::changes::FeedLimits;
use crate::latency_monitor::LatencyMonitor;
use crate::storage::{RecoveryMode, WalOptions};

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

impl std::fmt::Display for FsyncPolicy {
    /// As the flag spells it: `always`, `interval=MS`, `never`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Interval(interval) => write!(f, "interval={}", interval.as_millis()),
            FsyncPolicy::Never => f.write_str("never"),
        }
    }
}

impl FsyncPolicy {
    /// Redis's nearest `appendfsync` setting.
    pub fn redis_name(&self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Interval(_) => "everysec",
            FsyncPolicy::Never => "no",
        }
    }
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
    /// (default 64 MiB, Redis's `auto-aof-rewrite-min-size`): a floor so that
    /// a small store under heavy writes does not snapshot several times a
    /// second. (At 4 MiB, a million 100-byte SETs over 100,000 keys took seven
    /// snapshots, and SET `-P 16` ran 16 % slower than at 64 MiB: BENCHMARKS.md.)
    pub min_log_bytes: u64,
    /// A snapshot starts once the log since the last one is this many times the
    /// live data (default 2): start-up then reads at most about three times the
    /// live data, however long the history.
    pub live_data_ratio: u64,
}

impl SnapshotPolicy {
    /// Log bytes since the last snapshot that call for the next one, given the
    /// bytes of live data.
    pub fn threshold(&self, live_bytes: u64) -> u64 {
        if !self.automatic {
            return u64::MAX;
        }
        self.min_log_bytes
            .max(live_bytes.saturating_mul(self.live_data_ratio))
    }

    /// Whether a snapshot is due, given the log bytes since the last one,
    /// the live data, and whether a write was refused for want of space
    /// since: then as soon as the log is more than `live_data_ratio` times
    /// the data (without the `min_log_bytes` floor), since compacting it
    /// gives space back, where waiting for the floor might never come.
    pub fn due(&self, log_bytes: u64, live_bytes: u64, refused_for_space: bool) -> bool {
        log_bytes >= self.threshold(live_bytes)
            || (self.automatic
                && refused_for_space
                && log_bytes > live_bytes.saturating_mul(self.live_data_ratio))
    }

    /// The size new log segments are asked to be: no more than the log a
    /// snapshot covers (so its segments can be deleted soon after it), and no
    /// more than the live data calls for, down to [`SMALL_SEGMENT_BYTES`]. So
    /// a store of 1 MiB of data makes 4 MiB segments, not 64 MiB ones, and
    /// zero-fills no more than that ahead of its writes.
    pub fn segment_target(&self, live_bytes: u64) -> u64 {
        let for_the_data = SMALL_SEGMENT_BYTES.max(live_bytes.saturating_mul(self.live_data_ratio));
        self.threshold(live_bytes).min(for_the_data)
    }
}

/// The smallest segment [`SnapshotPolicy::segment_target`] asks for, unless
/// the snapshot threshold is smaller still.
pub const SMALL_SEGMENT_BYTES: u64 = 4 << 20;

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
    /// How much change history watchers can resume from.
    pub watch_history: FeedLimits,
    /// Where slow syncs are recorded (the node's LATENCY monitor).
    pub latency: Arc<LatencyMonitor>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            fsync: FsyncPolicy::default(),
            wal: WalOptions::default(),
            snapshots: SnapshotPolicy::default(),
            max_batch: 0,
            commit_delay: Duration::from_micros(100),
            watch_history: FeedLimits::default(),
            latency: Arc::default(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_for_space_makes_a_snapshot_due_once_compacting_frees_space() {
        let policy = SnapshotPolicy::default();
        let mib = 1 << 20;
        // 10 MiB of log over 1 MiB of data: under the 64 MiB floor.
        assert!(!policy.due(10 * mib, mib, false));
        assert!(policy.due(10 * mib, mib, true), "short of space: due");
        // Live data only (no more than twice the data in the log): a
        // snapshot would give nothing back.
        assert!(!policy.due(2 * mib, mib, true));
        // Every key deleted: any log is worth compacting, an empty one not.
        assert!(policy.due(1, 0, true));
        assert!(!policy.due(0, 0, true));
        assert!(policy.due(64 * mib, mib, false), "the usual threshold");
        let manual = SnapshotPolicy {
            automatic: false,
            ..SnapshotPolicy::default()
        };
        assert!(!manual.due(10 * mib, mib, true), "only when asked");
    }
}
