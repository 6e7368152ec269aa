//! Every crash point of a small workload, each reproducible from its number.
//!
//! The workload (puts, deletes, transactions, a Redis INCR op, segment
//! rotations and two snapshots, one writer, each write acknowledged before
//! the next) runs once to count its disk operations; then once per
//! operation N with a fault exactly there: the power cut (torn or not), an
//! `EIO`, or the process killed (the page cache survives). Each fsync
//! policy is held to what it promises:
//! - `always`, on both write paths (direct `O_DSYNC` writes, and buffered
//!   writes with `fdatasync`): after any fault the store holds exactly the
//!   writes acknowledged before it, plus at most the one in flight;
//! - `interval` and `never`: a killed process loses nothing, as with
//!   `always`; a power cut may lose acknowledged writes, but only a suffix
//!   of them (what recovery holds is the store as it was after some earlier
//!   acknowledged write), and never one a completed snapshot covered.
//!
//! A failure names its policy, path, fault and N: rerun it with
//! `cargo test --release --test walrus crash_points -- --nocapture` and
//! `WALRUS_CRASH_POINT=N` to run only that point.

use std::collections::BTreeMap;

use bytes::Bytes;
use walrus::storage::FileSystem;
use walrus::store::redis_op::{RedisCommand, RedisOp};
use walrus::store::{FsyncPolicy, Op, SnapshotPolicy, StoreOptions};
use walrus::testing::{PlannedFault, SimFs};
use walrus::{Command, DurableStore, KvStore};

use crate::common::{open, small_options};

type Model = BTreeMap<Bytes, Bytes>;

/// One step of the workload, with its effect on the model.
enum Step {
    Write(Command),
    Snapshot,
}

fn steps() -> Vec<Step> {
    let key = |index: u64| Bytes::from(format!("key-{index}"));
    let mut steps = Vec::new();
    for round in 0..36u64 {
        let value = Bytes::from(format!(
            "value-{round}-{}",
            "x".repeat((round % 7) as usize * 30)
        ));
        steps.push(Step::Write(match round % 6 {
            0..=2 => Command::put(key(round % 5), value),
            3 => Command::delete(key((round + 2) % 5)),
            4 => Command::Txn {
                guards: Vec::new(),
                ops: vec![
                    Op::Put {
                        key: key(round % 5),
                        value: value.clone(),
                        expires_at_ms: 0,
                    },
                    Op::Put {
                        key: key((round + 1) % 5),
                        value,
                        expires_at_ms: 0,
                    },
                ],
            },
            _ => Command::Redis(RedisCommand {
                db: 0,
                guards: Vec::new(),
                ops: vec![RedisOp::IncrBy {
                    key: Bytes::from_static(b"counter"),
                    delta: 1,
                }],
            }),
        }));
        // The second snapshot comes after the first segment is full, so
        // compaction deletes it and the snapshot alone holds its writes.
        if round == 15 || round == 34 {
            steps.push(Step::Snapshot);
        }
    }
    steps
}

/// The model after a write succeeds.
fn apply(model: &mut Model, command: &Command) {
    match command {
        Command::Put { key, value, .. } => {
            model.insert(key.clone(), value.clone());
        }
        Command::Delete { key, .. } => {
            model.remove(key);
        }
        Command::Txn { ops, .. } => {
            for op in ops {
                if let Op::Put { key, value, .. } = op {
                    model.insert(key.clone(), value.clone());
                }
            }
        }
        Command::Redis(_) => {
            let counter = Bytes::from_static(b"counter");
            let next = model.get(&counter).map_or(0, |value| {
                String::from_utf8_lossy(value).parse::<i64>().unwrap_or(0)
            }) + 1;
            model.insert(counter, Bytes::from(next.to_string()));
        }
    }
}

/// How the store under test syncs its log.
#[derive(Debug, Clone, Copy)]
struct Setup {
    direct_io: bool,
    fsync: FsyncPolicy,
}

impl Setup {
    fn label(&self) -> String {
        let path = if self.direct_io { "direct" } else { "buffered" };
        format!("--fsync {}, {path} path", self.fsync)
    }

    fn options(&self) -> StoreOptions {
        let mut options = small_options();
        options.fsync = self.fsync;
        options.wal.direct_io = self.direct_io;
        // Snapshots only where the workload asks: a background snapshot would
        // make the order of disk operations depend on thread timing.
        options.snapshots = SnapshotPolicy {
            automatic: false,
            ..options.snapshots
        };
        options
    }

    /// Whether `fault` may cost acknowledged writes under this policy.
    fn may_lose_acknowledged_writes(&self, fault: PlannedFault) -> bool {
        let power_lost = fault != PlannedFault::ProcessDies;
        power_lost && self.fsync != FsyncPolicy::Always
    }
}

/// What one run of the workload acknowledged, up to the first failure.
struct Run {
    /// The store's contents after each acknowledged write: `after[0]` is
    /// empty, `after[n]` holds the first n acknowledged writes.
    after: Vec<Model>,
    /// The contents had the write that failed succeeded.
    in_flight: Option<Model>,
    /// How many acknowledged writes a completed snapshot covers.
    snapshotted: usize,
}

impl Run {
    fn acknowledged(&self) -> usize {
        self.after.len() - 1
    }
}

/// Runs the workload until a step fails.
fn run(store: &DurableStore) -> Run {
    let mut run = Run {
        after: vec![Model::new()],
        in_flight: None,
        snapshotted: 0,
    };
    for step in steps() {
        match step {
            Step::Snapshot => {
                if store.snapshot().is_err() {
                    return run;
                }
                run.snapshotted = run.acknowledged();
            }
            Step::Write(command) => {
                let mut next = run.after[run.acknowledged()].clone();
                apply(&mut next, &command);
                if store.execute(command).is_err() {
                    run.in_flight = Some(next);
                    return run;
                }
                run.after.push(next);
            }
        }
    }
    run
}

fn contents(store: &DurableStore) -> Model {
    store
        .range(0, std::ops::Bound::Unbounded, b"", usize::MAX)
        .into_iter()
        .map(|(key, entry)| (key, entry.value))
        .collect()
}

fn operations_of_whole_run(setup: Setup) -> u64 {
    let fs = SimFs::new(1);
    let store = open(&fs, setup.options()).expect("open");
    let before = fs.operation_count();
    let run = run(&store);
    assert!(
        run.in_flight.is_none(),
        "the workload finishes without faults"
    );
    assert_eq!(run.after[run.acknowledged()].len(), 6);
    drop(store);
    let operations = fs.operation_count() - before;
    let first_segment = crate::common::data_dir().join(format!("{:020}.wal", 1));
    assert!(
        fs.read(&first_segment).is_err(),
        "the workload must compact its first segment away"
    );
    operations
}

/// What recovery kept at one point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// Exactly the acknowledged writes (the one in flight, if any, is gone).
    Acknowledged,
    /// The acknowledged writes and the one in flight.
    InFlightToo,
    /// The first acknowledged writes only: the last `lost` are gone.
    Lost { lost: usize },
}

impl Kept {
    fn kind(&self) -> &'static str {
        match self {
            Kept::Acknowledged => "acknowledged",
            Kept::InFlightToo => "in flight too",
            Kept::Lost { .. } => "lost acknowledged writes",
        }
    }
}

fn check_point(setup: Setup, fault: PlannedFault, point: u64) -> Kept {
    let label = format!("{}, {fault:?} at operation {point}", setup.label());
    let fs = SimFs::new(point);
    let store = open(&fs, setup.options()).unwrap_or_else(|error| panic!("{label}: {error}"));
    fs.fault_at(point, fault);
    let run = run(&store);
    drop(store);
    if fault != PlannedFault::ProcessDies {
        // Whatever happened, the machine now loses power and comes back.
        fs.crash(false);
    }
    fs.restart();
    let store =
        open(&fs, setup.options()).unwrap_or_else(|error| panic!("{label}: reopen: {error}"));
    let recovered = contents(&store);
    let acknowledged = run.acknowledged();
    let kept = if recovered == run.after[acknowledged] {
        Kept::Acknowledged
    } else if run.in_flight.as_ref() == Some(&recovered) {
        Kept::InFlightToo
    } else {
        // The latest earlier state it matches: some writes leave the
        // contents as they were, so several may.
        let survivors = (0..acknowledged)
            .rev()
            .find(|&count| run.after[count] == recovered)
            .unwrap_or_else(|| {
                panic!(
                    "{label}: recovered {recovered:?}, which is not the store after any \
                     prefix of the {acknowledged} acknowledged writes (the last: {:?})",
                    run.after[acknowledged]
                )
            });
        assert!(
            setup.may_lose_acknowledged_writes(fault),
            "{label}: lost {} acknowledged writes",
            acknowledged - survivors
        );
        assert!(
            survivors >= run.snapshotted,
            "{label}: kept {survivors} acknowledged writes, but a completed snapshot \
             covered {}",
            run.snapshotted
        );
        Kept::Lost {
            lost: acknowledged - survivors,
        }
    };
    // The store takes writes again after recovery.
    store
        .execute(Command::put(
            Bytes::from_static(b"after"),
            Bytes::from_static(b"v"),
        ))
        .unwrap_or_else(|error| panic!("{label}: write after recovery: {error}"));
    kept
}

/// Checks every crash point under `setup` with every fault; returns how
/// often each outcome was seen, by fault.
fn every_point(setup: Setup) -> BTreeMap<(String, &'static str), u32> {
    let total = operations_of_whole_run(setup);
    assert_eq!(
        total,
        operations_of_whole_run(setup),
        "the workload must do the same disk operations every time"
    );
    let only: Option<u64> = std::env::var("WALRUS_CRASH_POINT")
        .ok()
        .and_then(|text| text.parse().ok());
    let mut tally = BTreeMap::new();
    for point in 1..=total {
        if only.is_some_and(|only| only != point) {
            continue;
        }
        for fault in [
            PlannedFault::Crash { torn: false },
            PlannedFault::Crash { torn: true },
            PlannedFault::Fail,
            PlannedFault::ProcessDies,
        ] {
            let kept = check_point(setup, fault, point);
            let power = if fault == PlannedFault::ProcessDies {
                "process killed"
            } else {
                "power lost"
            };
            *tally.entry((power.to_string(), kept.kind())).or_insert(0) += 1;
        }
    }
    eprintln!(
        "{}: checked {total} crash points × 4 faults: {tally:?}",
        setup.label()
    );
    if only.is_some() {
        return BTreeMap::new();
    }
    tally
}

/// A power cut that lands between a write reaching the disk and its
/// acknowledgement keeps the write; one before loses it. Seeing both shows
/// the faults really hit inside the commit path. (A killed process keeps
/// the write in flight only on the buffered path, where the sync after the
/// write gives it a place to die.)
fn assert_both_sides_of_the_acknowledgement(tally: &BTreeMap<(String, &str), u32>, power: &str) {
    if tally.is_empty() {
        return; // one point was asked for
    }
    for kind in ["acknowledged", "in flight too"] {
        assert!(
            tally.contains_key(&(power.to_string(), kind)),
            "{power}: no point kept {kind}: {tally:?}"
        );
    }
}

fn every_point_keeps_exactly_the_acknowledged_writes(setup: Setup) {
    let tally = every_point(setup);
    assert_both_sides_of_the_acknowledgement(&tally, "power lost");
}

/// Under `interval` and `never` a power cut must cost acknowledged writes at
/// some points (or the test is not cutting where the policy is weak); a
/// killed process never does (`check_point` fails the run if it does).
fn every_point_loses_at_most_unsynced_writes(setup: Setup) {
    let tally = every_point(setup);
    if tally.is_empty() {
        return;
    }
    assert!(
        tally.contains_key(&("power lost".to_string(), "lost acknowledged writes")),
        "no power cut lost an unsynced write: {tally:?}"
    );
}

#[test]
fn every_crash_point_on_the_direct_write_path_keeps_exactly_the_acknowledged_writes() {
    every_point_keeps_exactly_the_acknowledged_writes(Setup {
        direct_io: true,
        fsync: FsyncPolicy::Always,
    });
}

#[test]
fn every_crash_point_on_the_buffered_write_path_keeps_exactly_the_acknowledged_writes() {
    every_point_keeps_exactly_the_acknowledged_writes(Setup {
        direct_io: false,
        fsync: FsyncPolicy::Always,
    });
}

#[test]
fn every_crash_point_under_fsync_interval_loses_only_unsynced_writes_and_only_to_a_power_cut() {
    // An interval longer than the run: no timed sync lands inside it, so the
    // disk operations are the same every run.
    every_point_loses_at_most_unsynced_writes(Setup {
        direct_io: false,
        fsync: FsyncPolicy::Interval(std::time::Duration::from_secs(3600)),
    });
}

#[test]
fn every_crash_point_under_fsync_never_loses_only_unsynced_writes_and_only_to_a_power_cut() {
    every_point_loses_at_most_unsynced_writes(Setup {
        direct_io: false,
        fsync: FsyncPolicy::Never,
    });
}
