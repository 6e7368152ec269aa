//! The in-process cluster under seeded faults (`testing::sim_cluster`): three
//! real Raft nodes on simulated disks over a lossy, partitionable network,
//! with power cuts; every run's history must be linearizable per key and the
//! nodes must agree at the end.
//!
//! `WALRUS_SIM_SEEDS=N` runs seeds 1..=N (CI runs a few); `WALRUS_SIM_SEED=S`
//! reruns one seed, e.g. the one a failure names; `WALRUS_SIM_VERBOSE=1`
//! prints each run's faults.

use walrus::testing::sim_cluster::{SimOptions, run};

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("WALRUS_SIM_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
    {
        return vec![seed];
    }
    let count = std::env::var("WALRUS_SIM_SEEDS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(4);
    (1..=count).collect()
}

#[test]
fn seeded_cluster_runs_under_partitions_loss_power_cuts_and_membership_changes_stay_linearizable() {
    // `RUST_LOG=...` shows what the nodes log, to debug one seed.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    let mut membership_changes = 0;
    let seeds = seeds();
    for &seed in &seeds {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let report = runtime
            .block_on(run(SimOptions::new(seed)))
            .unwrap_or_else(|error| panic!("seed {seed}: {error}"));
        runtime.shutdown_timeout(std::time::Duration::from_secs(5));
        eprintln!(
            "seed {seed}: {} operations ({} writes and {} reads acknowledged), \
             {} faults, {} messages delivered, {} lost, {} writes forwarded, {} snapshots installed, \
             {} membership changes",
            report.history.len(),
            report.acknowledged_writes,
            report.acknowledged_reads,
            report.faults.len(),
            report.delivered,
            report.lost,
            report.forwarded_writes,
            report.snapshots_installed,
            report.membership_changes
        );
        membership_changes += report.membership_changes;
        if std::env::var_os("WALRUS_SIM_VERBOSE").is_some() {
            eprintln!("{}", report.faults.join("\n"));
        }
        let histories = if report.passed() {
            String::new()
        } else {
            failing_histories(&report)
        };
        assert!(
            report.passed(),
            "seed {seed} (rerun with WALRUS_SIM_SEED={seed}):\n{}faults:\n{}\n{histories}",
            report.problems(),
            report.faults.join("\n")
        );
        // A run that acknowledged nothing would prove nothing.
        assert!(
            report.acknowledged_writes >= 25,
            "seed {seed}: too few writes acknowledged"
        );
        assert!(
            report.acknowledged_reads >= 25,
            "seed {seed}: too few reads acknowledged"
        );
        // The run's last phase leaves one node behind the leader's log.
        assert!(
            report.snapshots_installed >= 1,
            "seed {seed}: no snapshot was streamed and installed; faults:\n{}",
            report.faults.join("\n")
        );
        assert!(
            report.faults.len() >= 4,
            "seed {seed}: too few faults injected"
        );
    }
    // Each run's nemesis starts by removing a voter (retried until one
    // commits) and ends by making every node a voter again.
    assert!(
        membership_changes >= seeds.len() as u64,
        "only {membership_changes} membership changes committed in {} seeds",
        seeds.len()
    );
}

/// Writes the history of every key that failed its check to a file, one
/// operation per line, and says where: the history is what a failure is
/// debugged from, and it is too long for the panic message.
fn failing_histories(report: &walrus::testing::sim_cluster::SimReport) -> String {
    use walrus::verify::checker::KeyVerdict;
    let path = std::env::temp_dir().join(format!("walrus-sim-seed-{}.jsonl", report.seed));
    let mut lines = String::new();
    for (key, verdict) in &report.verdicts {
        if *verdict == KeyVerdict::Linearizable {
            continue;
        }
        for operation in report.history.iter().filter(|op| &op.key == key) {
            if let Ok(line) = serde_json::to_string(operation) {
                lines.push_str(&line);
                lines.push('\n');
            }
        }
    }
    match std::fs::write(&path, lines) {
        Ok(()) => format!("the failing keys' histories: {}", path.display()),
        Err(error) => format!(
            "the histories could not be written to {}: {error}",
            path.display()
        ),
    }
}
