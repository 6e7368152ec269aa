//! A disk that fails: no acknowledgement for what was not made durable, no
//! further writes once the log has failed, and what is on disk still recovers.

use std::sync::Arc;

use walrus::storage::RecoveryMode;
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
