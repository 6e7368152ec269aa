//! Property test: the durable store against a `BTreeMap` model, through random
//! sets, deletes, compare-and-swaps, snapshots, clean reopens and power losses,
//! under each fsync policy: with `always` nothing acknowledged is lost; with
//! `interval` and `never` a power loss may lose acknowledged writes, but only
//! a suffix of them, never one before the last snapshot or clean close, and
//! what comes back is exactly the store as it was at some acknowledged step.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use walrus::store::{FsyncPolicy, StoreOptions};
use walrus::testing::SimFs;
use walrus::{Command, DurableStore, Guard, KvStore};

use crate::common::{contents, open, small_options};

#[derive(Debug, Clone)]
enum Step {
    Set(u8, u16),
    Delete(u8),
    /// Put only if the key is at the revision the model expects (or, with
    /// `stale`, at a wrong one).
    CompareAndSet {
        key: u8,
        value: u16,
        stale: bool,
    },
    Snapshot,
    Reopen,
    Crash {
        torn: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => (0u8..24, any::<u16>()).prop_map(|(k, v)| Step::Set(k, v)),
        4 => (0u8..24).prop_map(Step::Delete),
        3 => (0u8..24, any::<u16>(), any::<bool>())
            .prop_map(|(key, value, stale)| Step::CompareAndSet { key, value, stale }),
        1 => Just(Step::Snapshot),
        1 => Just(Step::Reopen),
        1 => any::<bool>().prop_map(|torn| Step::Crash { torn }),
    ]
}

fn key(index: u8) -> Bytes {
    Bytes::from(format!("key/{index:02}"))
}

fn value(index: u16) -> Bytes {
    Bytes::from(format!(
        "value-{index}-{}",
        "z".repeat(usize::from(index % 300))
    ))
}

#[derive(Default, Clone)]
struct Model {
    entries: BTreeMap<Bytes, (Bytes, u64)>,
    revision: u64,
}

fn check(store: &DurableStore, model: &Model) -> Result<(), TestCaseError> {
    let expected: Vec<(Vec<u8>, Vec<u8>)> = model
        .entries
        .iter()
        .map(|(key, (value, _))| (key.to_vec(), value.to_vec()))
        .collect();
    prop_assert_eq!(contents(store), expected);
    prop_assert_eq!(store.revision(), model.revision);
    for (key, (_, revision)) in &model.entries {
        prop_assert_eq!(
            store.get_entry(key).map(|entry| entry.mod_revision),
            Some(*revision)
        );
    }
    Ok(())
}

/// Runs `steps` against a store on the simulated disk and the model. With
/// `relaxed` (fsync `interval` or `never`) a power loss may go back to any
/// model state since the last durable point; the run then goes on from the
/// one the store came back as.
fn run_model(steps: Vec<Step>, options: StoreOptions, relaxed: bool) -> Result<(), TestCaseError> {
    let fs = SimFs::new(42);
    let mut store = open(&fs, options.clone()).expect("open");
    let mut model = Model::default();
    // Every state since the last durable point (a snapshot, a clean close, a
    // recovery): what a power loss may return to.
    let mut since_durable = vec![model.clone()];
    for step in steps {
        match step {
            Step::Set(k, v) => {
                let revision = store.set(&key(k), &value(v)).expect("set");
                model.revision += 1;
                prop_assert_eq!(revision, model.revision);
                model.entries.insert(key(k), (value(v), revision));
            }
            Step::Delete(k) => {
                let existed = store.delete(&key(k)).expect("delete");
                prop_assert_eq!(existed, model.entries.remove(&key(k)).is_some());
                if existed {
                    model.revision += 1;
                }
            }
            Step::CompareAndSet {
                key: k,
                value: v,
                stale,
            } => {
                let current = model.entries.get(&key(k)).map(|(_, revision)| *revision);
                let guard = match (current, stale) {
                    (Some(revision), false) => Guard::ModRevision(revision),
                    (Some(revision), true) => Guard::ModRevision(revision + 1),
                    (None, false) => Guard::Absent,
                    (None, true) => Guard::Present,
                };
                let outcome = store
                    .execute(Command::Put {
                        key: key(k),
                        value: value(v),
                        expires_at_ms: 0,
                        guard,
                    })
                    .expect("compare-and-set");
                prop_assert_eq!(outcome.succeeded, !stale);
                if !stale {
                    model.revision += 1;
                    model.entries.insert(key(k), (value(v), model.revision));
                }
                prop_assert_eq!(outcome.revision, model.revision);
            }
            Step::Snapshot => {
                store.snapshot().expect("snapshot");
                since_durable = vec![model.clone()];
            }
            Step::Reopen => {
                store.close().expect("close");
                store = open(&fs, options.clone()).expect("reopen");
                check(&store, &model)?;
                since_durable = vec![model.clone()];
            }
            Step::Crash { torn } => {
                fs.crash(torn);
                drop(store);
                fs.restart();
                store = open(&fs, options.clone()).expect("reopen after crash");
                if relaxed {
                    let recovered = since_durable
                        .iter()
                        .rev()
                        .find(|candidate| check(&store, candidate).is_ok())
                        .cloned();
                    prop_assert!(
                        recovered.is_some(),
                        "recovered at revision {}, which is no acknowledged state since the \
                         last durable point (revisions {:?})",
                        store.revision(),
                        since_durable
                            .iter()
                            .map(|state| state.revision)
                            .collect::<Vec<_>>()
                    );
                    model = recovered.unwrap_or_default();
                    since_durable = vec![model.clone()];
                } else {
                    check(&store, &model)?;
                }
            }
        }
        if relaxed
            && since_durable
                .last()
                .is_none_or(|last| last.revision != model.revision)
        {
            since_durable.push(model.clone());
        }
    }
    check(&store, &model)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn durable_store_matches_a_btreemap(steps in proptest::collection::vec(step(), 1..160)) {
        run_model(steps, small_options(), false)?;
    }

    #[test]
    fn with_fsync_never_a_power_loss_returns_an_acknowledged_state(
        steps in proptest::collection::vec(step(), 1..160)
    ) {
        let options = StoreOptions { fsync: FsyncPolicy::Never, ..small_options() };
        run_model(steps, options, true)?;
    }

    #[test]
    fn with_fsync_interval_a_power_loss_returns_an_acknowledged_state(
        steps in proptest::collection::vec(step(), 1..160)
    ) {
        let options = StoreOptions {
            fsync: FsyncPolicy::Interval(std::time::Duration::from_millis(2)),
            ..small_options()
        };
        run_model(steps, options, true)?;
    }
}
