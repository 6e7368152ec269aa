//! Property test: the durable store against a `BTreeMap` model, through random
//! sets, deletes, compare-and-swaps, snapshots, clean reopens and power losses.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
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

#[derive(Default)]
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn durable_store_matches_a_btreemap(steps in proptest::collection::vec(step(), 1..160)) {
        let fs = SimFs::new(42);
        let mut store = open(&fs, small_options()).expect("open");
        let mut model = Model::default();
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
                Step::CompareAndSet { key: k, value: v, stale } => {
                    let current = model.entries.get(&key(k)).map(|(_, revision)| *revision);
                    let guard = match (current, stale) {
                        (Some(revision), false) => Guard::ModRevision(revision),
                        (Some(revision), true) => Guard::ModRevision(revision + 1),
                        (None, false) => Guard::Absent,
                        (None, true) => Guard::Present,
                    };
                    let outcome = store
                        .execute(Command::Put { key: key(k), value: value(v), expires_at_ms: 0, guard })
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
                }
                Step::Reopen => {
                    store.close().expect("close");
                    store = open(&fs, small_options()).expect("reopen");
                    check(&store, &model)?;
                }
                Step::Crash { torn } => {
                    fs.crash(torn);
                    drop(store);
                    fs.restart();
                    store = open(&fs, small_options()).expect("reopen after crash");
                    check(&store, &model)?;
                }
            }
        }
        check(&store, &model)?;
    }
}
