//! The expiry sweeper: removes expired keys through the normal write path.
//!
//! Reads hide an expired key at once; the sweeper only reclaims its memory and
//! makes the removal an ordinary, logged delete (so a replica replaying the
//! log sees plain deletes, never a clock). Each pass takes at most a bounded
//! number of expired keys, soonest expired first, from the state's index of
//! keys by expiry time, so it never looks at a live key and a key is swept
//! soon after it expires however many keys there are (a full pass goes on
//! from the database it stopped in). A
//! delete is guarded by [`Guard::Absent`] — "no live value" — so a key set
//! again after it expired survives its old entry's sweep. Database 0's deletes
//! are plain delete records; another database's are Redis commands naming it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::latency_monitor::{Event, LatencyMonitor};
use crate::pause::ClientPause;
use crate::store::redis_op::{RedisCommand, RedisOp};
use crate::store::{Command, DbKey, Guard, KvStore};

/// How often and how much the sweeper works.
#[derive(Debug, Clone, Copy)]
pub struct SweepConfig {
    /// Pause between passes at start (default 100 ms: Redis's `hz` 10;
    /// `CONFIG SET hz` changes it through [`SweepState`]).
    pub interval: Duration,
    /// Expired keys deleted per pass at most (default 1000).
    pub keys_per_pass: usize,
}

impl Default for SweepConfig {
    fn default() -> Self {
        SweepConfig {
            interval: Duration::from_millis(100),
            keys_per_pass: 1000,
        }
    }
}

/// The sweeper's settings and counts, shared with those who read or change
/// them: what it has done (INFO's `expired_keys`), how much a pass does, and
/// how often it runs, which `CONFIG SET hz` changes while it runs.
#[derive(Debug)]
pub struct SweepState {
    /// Keys the sweeper deleted because they had expired.
    pub expired_keys: AtomicU64,
    /// The pause between passes, in microseconds.
    interval_micros: AtomicU64,
    /// Expired keys deleted per pass at most.
    keys_per_pass: usize,
}

/// Redis's bounds on `hz`: a value outside them is taken as the nearest.
pub const MIN_HZ: u64 = 1;
pub const MAX_HZ: u64 = 500;

impl SweepState {
    pub fn new(config: SweepConfig) -> SweepState {
        SweepState {
            expired_keys: AtomicU64::new(0),
            interval_micros: AtomicU64::new(config.interval.as_micros().max(1) as u64),
            keys_per_pass: config.keys_per_pass,
        }
    }

    /// The pause between passes.
    pub fn interval(&self) -> Duration {
        Duration::from_micros(self.interval_micros.load(Ordering::Relaxed))
    }

    /// Passes a second, as Redis's `hz` counts its expiry cycles.
    pub fn hz(&self) -> u64 {
        (1_000_000 / self.interval_micros.load(Ordering::Relaxed).max(1)).clamp(MIN_HZ, MAX_HZ)
    }

    /// Runs `hz` passes a second from the next pause on, within
    /// [`MIN_HZ`]..=[`MAX_HZ`] as Redis clamps it.
    pub fn set_hz(&self, hz: u64) {
        let hz = hz.clamp(MIN_HZ, MAX_HZ);
        self.interval_micros
            .store(1_000_000 / hz, Ordering::Relaxed);
    }
}

/// Sweeps until `shutdown` turns true, counting in `state`, pausing between
/// passes and deleting per pass as much as it says; waits while `pause`
/// holds clients. A search for expired keys that takes long is recorded in
/// `latency` (`expire-cycle`): it holds the state's lock.
pub async fn run(
    store: Arc<dyn KvStore>,
    (pause, state, latency): (Arc<ClientPause>, Arc<SweepState>, Arc<LatencyMonitor>),
    mut shutdown: watch::Receiver<bool>,
) {
    let mut cursor: Option<DbKey> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(state.interval()) => {}
            _ = shutdown.wait_for(|&stop| stop) => return,
        }
        // While clients are paused (CLIENT PAUSE) nothing changes the
        // keyspace behind them; reads still see expired keys gone.
        if store.failure().is_some() || pause.in_force() {
            continue;
        }
        let after = cursor.as_ref().map(|(db, key)| (*db, &key[..]));
        let (next, expired) =
            sweep_once(store.as_ref(), after, state.keys_per_pass, &latency).await;
        cursor = next;
        state.expired_keys.fetch_add(expired, Ordering::Relaxed);
    }
}

/// One pass: deletes up to `keys_per_pass` expired keys from `after`'s
/// database on, all in one group commit; returns where the next pass goes on
/// and how many keys it deleted.
pub async fn sweep_once(
    store: &dyn KvStore,
    after: Option<(u8, &[u8])>,
    keys_per_pass: usize,
    latency: &LatencyMonitor,
) -> (Option<DbKey>, u64) {
    let started = Instant::now();
    let (expired, next) = store.expired_keys(after, keys_per_pass);
    latency.observe(Event::ExpireCycle, started.elapsed());
    if expired.is_empty() {
        return (next, 0);
    }
    // One batch: the pass costs one sync (one Raft append on a cluster's
    // leader), not one per key.
    let deletes = expired.into_iter().map(expiry_delete).collect();
    let submissions = store.submit_all(deletes);
    let mut deleted = 0;
    for submission in submissions {
        match submission.await {
            // A key written again since is kept by the guard: not counted.
            // (One deleted by a client between the scan and this delete is:
            // its guard holds too.)
            Ok(outcome) if outcome.succeeded => deleted += 1,
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "expiry sweep delete failed"),
        }
    }
    (next, deleted)
}

/// The logged delete of one expired key, guarded so that a key written again
/// since survives.
fn expiry_delete((db, key): DbKey) -> Command {
    if db == 0 {
        return Command::Delete {
            key,
            guard: Guard::Absent,
        };
    }
    Command::Redis(RedisCommand {
        db,
        guards: vec![(key.clone(), Guard::Absent)],
        ops: vec![RedisOp::Del { keys: vec![key] }],
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::store::{MemStore, now_ms};

    #[test]
    fn hz_sets_the_pause_between_passes_within_redis_bounds() {
        let state = SweepState::new(SweepConfig::default());
        assert_eq!(state.hz(), 10);
        assert_eq!(state.interval(), Duration::from_millis(100));
        state.set_hz(100);
        assert_eq!(
            (state.hz(), state.interval()),
            (100, Duration::from_millis(10))
        );
        // As Redis clamps it: 0 runs once a second, 1000 at 500.
        state.set_hz(0);
        assert_eq!((state.hz(), state.interval()), (1, Duration::from_secs(1)));
        state.set_hz(1000);
        assert_eq!(
            (state.hz(), state.interval()),
            (500, Duration::from_millis(2))
        );
    }

    fn put(store: &MemStore, key: &str, expires_at_ms: u64) {
        store
            .execute(Command::Put {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::from_static(b"v"),
                expires_at_ms,
                guard: Guard::None,
            })
            .unwrap();
    }

    #[tokio::test]
    async fn sweeps_expired_keys_in_bounded_passes() {
        let store = MemStore::new();
        for index in 0..10 {
            put(&store, &format!("gone{index}"), 1);
        }
        put(&store, "kept", 0);
        put(&store, "later", now_ms() + 60_000);
        assert_eq!(store.len(), 12);
        assert_eq!(store.live_len(0), 2);
        let (mut cursor, mut deleted) =
            sweep_once(&store, None, 4, &LatencyMonitor::default()).await;
        assert!(cursor.is_some());
        assert_eq!(store.len(), 8);
        assert_eq!(deleted, 4);
        while let Some((db, key)) = &cursor {
            let (next, more) =
                sweep_once(&store, Some((*db, &key[..])), 4, &LatencyMonitor::default()).await;
            (cursor, deleted) = (next, deleted + more);
        }
        assert_eq!(store.len(), 2);
        assert_eq!(deleted, 10, "each expired key counted once");
        assert!(store.get(b"kept").is_some() && store.get(b"later").is_some());
    }

    #[tokio::test]
    async fn a_key_set_again_after_the_scan_survives_its_sweep() {
        let store = MemStore::new();
        put(&store, "k", 1);
        let (expired, _) = store.expired_keys(None, 10);
        assert_eq!(expired, vec![(0, Bytes::from_static(b"k"))]);
        put(&store, "k", 0);
        for key in expired {
            let outcome = store.submit(expiry_delete(key)).await.unwrap();
            assert!(!outcome.succeeded);
        }
        assert!(store.get(b"k").is_some());
    }

    #[tokio::test]
    async fn every_database_is_swept_with_deletes_naming_it() {
        let store = MemStore::new();
        for db in [0u8, 3, 15] {
            let set = |key: &str, expires_at_ms| RedisOp::Set {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::from_static(b"v"),
                expiry: crate::store::redis_op::SetExpiry::At(expires_at_ms),
                condition: Guard::None,
                get: false,
            };
            let command = Command::Redis(RedisCommand {
                db,
                guards: Vec::new(),
                ops: vec![set("gone", 1), set("kept", now_ms() + 60_000)],
            });
            store.execute(command).unwrap();
        }
        assert_eq!(store.len(), 6);
        let (mut cursor, _) = sweep_once(&store, None, 2, &LatencyMonitor::default()).await;
        while let Some((db, key)) = &cursor {
            cursor = sweep_once(&store, Some((*db, &key[..])), 2, &LatencyMonitor::default())
                .await
                .0;
        }
        assert_eq!(store.len(), 3, "one expired key swept from each database");
        for db in [0u8, 3, 15] {
            assert_eq!(store.live_len(db), 1);
            let kept = store.get_entries(db, &[Bytes::from_static(b"kept")]);
            assert!(kept[0].is_some(), "database {db} kept its live key");
        }
    }
}
