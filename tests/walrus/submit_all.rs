//! `KvStore::submit_all`, the batch path pipelined RESP writes take: every
//! command gets its own outcome, in order; a lone writer's batch costs one
//! sync; and the batch survives a power loss once acknowledged.

use bytes::Bytes;
use walrus::testing::SimFs;
use walrus::{Command, Guard, KvStore};

use crate::common::{contents, open, small_options};

fn put(key: &str, value: &str, guard: Guard) -> Command {
    Command::Put {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        expires_at_ms: 0,
        guard,
    }
}

#[test]
fn submit_all_answers_each_command_with_one_sync() {
    let fs = SimFs::new(7);
    let store = open(&fs, small_options()).unwrap();
    store.set(b"taken", b"0").unwrap();
    let syncs_before = store
        .stats()
        .map(|stats| stats.syncs.load(std::sync::atomic::Ordering::Relaxed));
    let mut commands: Vec<Command> = (0..10)
        .map(|i| put(&format!("k{i}"), "v", Guard::None))
        .collect();
    commands.push(put("taken", "1", Guard::Absent));
    commands.push(Command::delete(Bytes::from_static(b"k0")));
    let outcomes: Vec<_> = store
        .submit_all(commands)
        .into_iter()
        .map(|submission| submission.wait().unwrap())
        .collect();
    assert_eq!(outcomes.len(), 12);
    assert!(outcomes[..10].iter().all(|outcome| outcome.succeeded));
    assert!(!outcomes[10].succeeded, "the guard refused the write");
    assert_eq!(outcomes[11].changed, 1, "the delete saw the put before it");
    let revisions: Vec<u64> = outcomes[..10]
        .iter()
        .map(|outcome| outcome.revision)
        .collect();
    assert!(
        revisions.windows(2).all(|pair| pair[0] < pair[1]),
        "applied in order"
    );
    let syncs_after = store
        .stats()
        .map(|stats| stats.syncs.load(std::sync::atomic::Ordering::Relaxed));
    if let (Some(before), Some(after)) = (syncs_before, syncs_after) {
        assert_eq!(after - before, 1, "one sync for the whole batch");
    }
    fs.crash(true);
    drop(store);
    fs.restart();
    let store = open(&fs, small_options()).unwrap();
    assert_eq!(contents(&store).len(), 10, "k1..k9 and taken");
}
