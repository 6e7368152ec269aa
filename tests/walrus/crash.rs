//! Power loss under concurrent writes, on the simulated disk.
//!
//! Each seed runs writers that put and delete a few hot keys (so segments rotate
//! and snapshots compact the log while they write), cuts the power at a random
//! moment, optionally tearing the last unsynced writes, then reopens and checks:
//! - every acknowledged write is there, unless a later write to the same key
//!   (acknowledged or not) replaced it;
//! - every value read back was written by some writer (nothing invented);
//! - revisions keep growing after the restart.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use walrus::storage::SpareSegment;
use walrus::testing::SimFs;
use walrus::{Command, KvStore};

use crate::common::{open, small_options};

const WRITERS: u64 = 4;
const OPS_PER_WRITER: u64 = 150;
const KEYS: u64 = 12;

#[derive(Default)]
struct History {
    /// Values each key was ever sent, acknowledged or not.
    attempted_values: HashMap<Bytes, HashSet<Bytes>>,
    /// Deletes sent per key that were not acknowledged.
    unacked_deletes: HashMap<Bytes, u64>,
    /// Acknowledged writes: key -> (revision, value or None for a delete).
    acked: HashMap<Bytes, Vec<(u64, Option<Bytes>)>>,
    max_acked_revision: u64,
}

fn writer(store: &dyn KvStore, history: &Mutex<History>, acks: &AtomicU64, seed: u64, id: u64) {
    let mut rng = StdRng::seed_from_u64(seed * 1000 + id);
    for step in 0..OPS_PER_WRITER {
        let key = Bytes::from(format!("key-{}", rng.random_range(0..KEYS)));
        let delete = rng.random_ratio(1, 5);
        let value = Bytes::from(format!(
            "seed{seed}-writer{id}-step{step}-{}",
            "x".repeat(step as usize % 40)
        ));
        {
            let mut history = history.lock();
            if delete {
                *history.unacked_deletes.entry(key.clone()).or_default() += 1;
            } else {
                history
                    .attempted_values
                    .entry(key.clone())
                    .or_default()
                    .insert(value.clone());
            }
        }
        let command = if delete {
            Command::delete(key.clone())
        } else {
            Command::put(key.clone(), value.clone())
        };
        let Ok(outcome) = store.execute(command) else {
            return; // The power is out: this writer's process is gone.
        };
        let mut history = history.lock();
        history.max_acked_revision = history.max_acked_revision.max(outcome.revision);
        if delete {
            *history.unacked_deletes.entry(key.clone()).or_default() -= 1;
            if outcome.changed == 0 {
                continue; // Deleted nothing: no revision of its own.
            }
        }
        let written = if delete { None } else { Some(value) };
        history
            .acked
            .entry(key)
            .or_default()
            .push((outcome.revision, written));
        acks.fetch_add(1, Ordering::Relaxed);
    }
}

fn verify(store: &dyn KvStore, history: &History, seed: u64) {
    for index in 0..KEYS {
        let key = Bytes::from(format!("key-{index}"));
        let recovered = store.get_entry(&key);
        let last_acked = history
            .acked
            .get(&key)
            .and_then(|writes| writes.iter().max_by_key(|(revision, _)| *revision));
        let attempted = history.attempted_values.get(&key);
        match (&recovered, last_acked) {
            (Some(entry), _) => {
                assert!(
                    attempted.is_some_and(|values| values.contains(&entry.value)),
                    "seed {seed}: {key:?} = {:?}, a value nobody wrote",
                    entry.value
                );
                if let Some((revision, value)) = last_acked {
                    assert!(
                        entry.mod_revision >= *revision,
                        "seed {seed}: {key:?} lost acknowledged revision {revision}"
                    );
                    if entry.mod_revision == *revision {
                        assert_eq!(Some(&entry.value), value.as_ref(), "seed {seed}: {key:?}");
                    }
                }
                // An acknowledged write's value must come back at its revision.
                for (revision, value) in history.acked.get(&key).into_iter().flatten() {
                    if value.as_ref() == Some(&entry.value) {
                        assert_eq!(entry.mod_revision, *revision, "seed {seed}: {key:?}");
                    }
                }
            }
            (None, Some((revision, Some(_)))) => {
                let later_delete = history.unacked_deletes.get(&key).copied().unwrap_or(0) > 0
                    || history.acked[&key]
                        .iter()
                        .any(|(later, value)| later > revision && value.is_none());
                assert!(
                    later_delete,
                    "seed {seed}: {key:?} lost its acknowledged write at revision {revision}"
                );
            }
            (None, _) => {}
        }
    }
    assert!(
        store.revision() >= history.max_acked_revision,
        "seed {seed}: revision went back from {} to {}",
        history.max_acked_revision,
        store.revision()
    );
}

fn run_seed(seed: u64) {
    let fs = SimFs::new(seed);
    // The next segment is made on a helper thread here, as on a real disk, so
    // the crash also lands while a spare segment is half made or just claimed.
    let mut options = small_options();
    options.wal.spare = SpareSegment::Background;
    let store: Arc<walrus::DurableStore> = Arc::new(open(&fs, options.clone()).expect("open"));
    let history = Arc::new(Mutex::new(History::default()));
    let acks = Arc::new(AtomicU64::new(0));
    let mut rng = StdRng::seed_from_u64(seed);
    let crash_after = rng.random_range(0..WRITERS * OPS_PER_WRITER);
    let handles: Vec<_> = (0..WRITERS)
        .map(|id| {
            let (store, history, acks) = (store.clone(), history.clone(), acks.clone());
            std::thread::spawn(move || writer(&*store, &history, &acks, seed, id))
        })
        .collect();
    while acks.load(Ordering::Relaxed) < crash_after && !handles.iter().all(|h| h.is_finished()) {
        std::thread::yield_now();
    }
    fs.crash(seed.is_multiple_of(2));
    for handle in handles {
        handle.join().expect("writer thread");
    }
    drop(store);
    fs.restart();

    let store = open(&fs, options).expect("reopen after crash");
    let history = history.lock();
    verify(&store, &history, seed);
    let next = store
        .set(b"after-restart", b"v")
        .expect("write after restart");
    assert!(
        next > history.max_acked_revision,
        "seed {seed}: revision reused"
    );
}

#[test]
fn acknowledged_writes_survive_power_loss() {
    for seed in 0..48 {
        run_seed(seed);
    }
}

#[test]
fn repeated_crashes_keep_every_acknowledged_write() {
    // Crash, recover, write more, crash again: recovery's own repairs must leave
    // a log that the next recovery accepts.
    let fs = SimFs::new(99);
    let mut expected: HashMap<String, String> = HashMap::new();
    for round in 0..12 {
        let store = open(&fs, small_options()).expect("open");
        for (key, value) in &expected {
            assert_eq!(
                store.get(key.as_bytes()).as_deref(),
                Some(value.as_bytes()),
                "round {round}: {key}"
            );
        }
        for index in 0..40 {
            let key = format!("key-{}", index % 15);
            let value = format!("round{round}-{index}");
            store.set(key.as_bytes(), value.as_bytes()).expect("set");
            expected.insert(key, value);
        }
        fs.crash(round % 2 == 1);
        drop(store);
        fs.restart();
    }
}

/// Under `--fsync interval=MS` and `--fsync never` a power loss may take back
/// acknowledged writes, but only a suffix of them: what comes back is exactly
/// the first K writes for some K (no hole, nothing reordered, nothing torn),
/// and K covers every write before the last completed snapshot, which is
/// synced whatever the policy. One writer, so the log's order is the writes'.
#[test]
fn relaxed_fsync_policies_lose_only_a_suffix_and_nothing_before_a_snapshot() {
    use std::collections::BTreeMap;
    use std::time::Duration;
    use walrus::store::FsyncPolicy;

    const WRITES: usize = 300;
    let policies = [
        FsyncPolicy::Never,
        FsyncPolicy::Interval(Duration::from_millis(2)),
    ];
    for policy in policies {
        for seed in 0..12u64 {
            let fs = SimFs::new(seed);
            let mut options = small_options();
            options.fsync = policy;
            let store = open(&fs, options.clone()).expect("open");
            let mut rng = StdRng::seed_from_u64(seed);
            let snapshot_at = rng.random_range(0..WRITES / 2);
            let crash_at = rng.random_range(snapshot_at + 1..WRITES);
            let write = |index: usize| {
                (
                    format!("key-{}", index % 12).into_bytes(),
                    format!("value-{index}-{}", "x".repeat(index % 50)).into_bytes(),
                )
            };
            let mut durable_through = 0;
            for index in 0..crash_at {
                let (key, value) = write(index);
                store.set(&key, &value).expect("write before the crash");
                if index == snapshot_at {
                    store.snapshot().expect("snapshot");
                    durable_through = index + 1;
                }
            }
            fs.crash(seed.is_multiple_of(2));
            drop(store);
            fs.restart();

            let store = open(&fs, options).expect("reopen after crash");
            let recovered: Vec<(Vec<u8>, Vec<u8>)> = crate::common::contents(&store);
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let mut matches = Vec::new();
            for count in 0..=crash_at {
                if model.clone().into_iter().collect::<Vec<_>>() == recovered {
                    matches.push(count);
                }
                if count < crash_at {
                    let (key, value) = write(count);
                    model.insert(key, value);
                }
            }
            let context = format!(
                "{policy} seed {seed}: snapshot after {durable_through}, crash after {crash_at}"
            );
            let Some(&kept) = matches
                .iter()
                .find(|&&count| store.revision() == count as u64)
            else {
                panic!(
                    "{context}: the recovered state is no prefix of the writes (matches {matches:?}, revision {})",
                    store.revision()
                );
            };
            assert!(
                kept >= durable_through,
                "{context}: only {kept} writes came back"
            );
        }
    }
}

/// `--fsync interval=N` promises a write is durable within about N even if no
/// other write follows it: the idle commit thread syncs when the interval
/// passes. Each write here is the last before a long pause; a power loss
/// after the pause must keep it. The pause is 15 intervals, so only a commit
/// thread starved for that long could fail this.
#[test]
fn an_interval_policy_syncs_an_idle_store_within_its_interval() {
    use std::time::{Duration, Instant};
    use walrus::store::FsyncPolicy;

    let interval = Duration::from_millis(20);
    for seed in 0..4u64 {
        let fs = SimFs::new(seed);
        let mut options = small_options();
        options.fsync = FsyncPolicy::Interval(interval);
        let store = open(&fs, options.clone()).expect("open");
        // A sync for the open's own records first, then the write under test.
        std::thread::sleep(interval * 2);
        // The first write finds the interval passed and syncs at once; the
        // second, right after it, is left for the idle sync to cover.
        store.set(b"first", b"written").expect("write");
        let written = Instant::now();
        store.set(b"last", b"written").expect("write");
        std::thread::sleep(interval * 15);
        fs.crash(seed.is_multiple_of(2));
        drop(store);
        fs.restart();
        let store = open(&fs, options).expect("reopen after crash");
        assert_eq!(
            store.get(b"last").as_deref(),
            Some(&b"written"[..]),
            "seed {seed}: a write {:?} old, idle since, was lost",
            written.elapsed()
        );
    }
}
