//! A disk that fails: no acknowledgement for what was not made durable, no
//! further writes once the log has failed, and what is on disk still recovers.

use std::sync::Arc;

use std::time::Duration;

use walrus::latency_monitor::{Event, LatencyMonitor};
use walrus::storage::RecoveryMode;
use walrus::store::FsyncPolicy;
use walrus::testing::{Faults, SimFs};
use walrus::{Error, KvStore};

use crate::common::{contents, open, single_segment_options, small_options};

fn options() -> walrus::StoreOptions {
    single_segment_options(RecoveryMode::TolerateTornTail)
}

fn fails_once_then_refuses(faults: Faults) {
    let fs = SimFs::new(10);
    let store = open(&fs, options()).expect("open");
    store.set(b"kept", b"1").expect("healthy write");
    fs.set_faults(faults);
    let failed = store
        .set(b"lost", b"2")
        .expect_err("write on a failing disk");
    assert!(matches!(failed, Error::Failed { .. }), "{failed}");
    fs.set_faults(Faults::default());
    let refused = store
        .set(b"later", b"3")
        .expect_err("no write after a failure");
    assert!(matches!(refused, Error::Failed { .. }), "{refused}");
    assert!(store.failure().is_some());
    assert_eq!(
        store.get(b"kept").as_deref(),
        Some(&b"1"[..]),
        "reads keep working"
    );
    assert_eq!(store.get(b"lost"), None, "a failed write is never applied");
    drop(store);
    fs.crash(false);
    fs.restart();
    let store = open(&fs, options()).expect("recovers after the failure");
    assert_eq!(contents(&store), vec![(b"kept".to_vec(), b"1".to_vec())]);
    store
        .set(b"again", b"4")
        .expect("a reopened store writes again");
}

#[test]
fn a_failed_fsync_is_fatal_for_the_log() {
    fails_once_then_refuses(Faults {
        fail_syncs: true,
        ..Faults::default()
    });
}

#[test]
fn a_failed_write_is_fatal_for_the_log() {
    fails_once_then_refuses(Faults {
        fail_writes: true,
        ..Faults::default()
    });
}

#[test]
fn concurrent_writers_see_the_failure_and_acknowledged_writes_survive() {
    let fs = SimFs::new(11);
    let store = Arc::new(open(&fs, small_options()).expect("open"));
    let handles: Vec<_> = (0..8)
        .map(|writer| {
            let (store, fs) = (store.clone(), fs.clone());
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                for step in 0..200 {
                    if writer == 0 && step == 50 {
                        fs.set_faults(Faults {
                            fail_syncs: true,
                            ..Faults::default()
                        });
                    }
                    let key = format!("w{writer}-{step}");
                    match store.set(key.as_bytes(), b"value") {
                        Ok(_) => acknowledged.push(key),
                        Err(error) => {
                            assert!(matches!(error, Error::Failed { .. }), "{error}");
                        }
                    }
                }
                acknowledged
            })
        })
        .collect();
    let acknowledged: Vec<String> = handles
        .into_iter()
        .flat_map(|handle| handle.join().expect("writer"))
        .collect();
    assert!(store.failure().is_some());
    drop(store);
    fs.crash(true);
    fs.restart();
    let store = open(&fs, small_options()).expect("recovers");
    for key in &acknowledged {
        assert!(
            store.get(key.as_bytes()).is_some(),
            "{key} was acknowledged"
        );
    }
}

#[test]
fn a_failed_snapshot_leaves_the_log_intact() {
    let fs = SimFs::new(12);
    let store = open(&fs, options()).expect("open");
    for index in 0..50 {
        store
            .set(format!("k{index}").as_bytes(), b"v")
            .expect("set");
    }
    fs.set_faults(Faults {
        fail_writes: true,
        ..Faults::default()
    });
    let error = store.snapshot().expect_err("snapshot on a failing disk");
    assert!(matches!(error, Error::SnapshotFailed(_)), "{error}");
    fs.set_faults(Faults::default());
    assert!(
        store.failure().is_none(),
        "a snapshot failure does not fail the log"
    );
    store
        .set(b"after", b"snapshot failure")
        .expect("writes continue");
    drop(store);
    fs.crash(false);
    fs.restart();
    let store = open(&fs, options()).expect("reopen");
    assert_eq!(store.len(), 51);
}

/// A disk whose syncs take 30 ms: with the latency monitor at 10 ms, each
/// log policy's syncs show under their event, as slow as the disk, and a
/// fast one (the monitor at 1 s) records nothing.
#[test]
fn a_slow_disk_shows_in_the_latency_monitor_under_its_policy() {
    let delay = Duration::from_millis(30);
    let cases = [
        (
            "direct writes",
            FsyncPolicy::Always,
            true,
            Event::FsyncAlways,
        ),
        (
            "write and fdatasync",
            FsyncPolicy::Always,
            false,
            Event::FsyncAlways,
        ),
        (
            "an interval",
            FsyncPolicy::Interval(Duration::from_millis(1)),
            false,
            Event::FsyncInterval,
        ),
    ];
    for (case, fsync, direct_io, event) in cases {
        let fs = SimFs::new(13);
        let monitor = Arc::new(LatencyMonitor::default());
        let mut options = small_options();
        options.fsync = fsync;
        options.wal.direct_io = direct_io;
        options.latency = monitor.clone();
        let store = open(&fs, options).expect("open");
        monitor.set_threshold_millis(1_000);
        fs.set_faults(Faults {
            sync_delay: delay,
            ..Faults::default()
        });
        store.set(b"unseen", b"1").expect("write");
        assert!(monitor.latest().is_empty(), "{case}: under the threshold");
        monitor.set_threshold_millis(10);
        // An interval policy syncs once the interval has passed since the
        // last sync: the second write finds it due.
        store.set(b"a", b"1").expect("write");
        std::thread::sleep(Duration::from_millis(2));
        store.set(b"b", b"2").expect("write");
        // An interval policy's sync may come from the idle commit thread
        // just after the write returned.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while monitor.latest().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let latest = monitor.latest();
        assert_eq!(latest.len(), 1, "{case}: {latest:?}");
        assert_eq!(latest[0].event, event, "{case}");
        assert!(latest[0].max_millis >= 30, "{case}: {latest:?}");
    }
}
