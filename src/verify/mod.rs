//! `walrus verify`: drive a workload against a node or a cluster (or one it
//! starts and injects faults into), record every operation, and check the
//! history.
//!
//! - `workload`: HTTP and RESP clients doing get, put, delete,
//!   compare-and-swap and increment, each operation timed; unknown outcomes
//!   recorded as such.
//! - `bank`: RESP clients moving money between accounts with MULTI/EXEC
//!   under WATCH and reading the whole bank: transactions seen whole or not
//!   at all.
//! - `nemesis`: a local cluster of this binary and the faults (kill, pause,
//!   restart-all) injected into it.
//! - `checker`: per-key linearizability (Wing & Gong with memoization),
//!   bounded, with an explicit "undecided".
//! - `report`: the one-screen summary, JSON, and a timeline of the smallest
//!   failing key.
//!
//! The checks of the register workload: every key's history is
//! linearizable; after healing, every node returns the same value for every
//! key; a write acknowledged before another began has the smaller revision.
//! The bank's are in [`bank`].

pub mod bank;
pub mod checker;
pub mod nemesis;
pub mod report;
pub mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;

use checker::{Action, KeyVerdict, Operation};
use nemesis::{Fault, FaultEvent, LocalCluster};
use workload::{Recorder, WorkloadOptions};

/// Which protocol the clients of a `--dev-cluster` run speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Http,
    Resp,
    /// Half the clients over each.
    Both,
}

/// What the clients do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Gets, puts, deletes, compare-and-swaps and increments on single keys,
    /// checked for linearizability key by key.
    Registers,
    /// Transfers between accounts (MULTI/EXEC under WATCH) and reads of
    /// every account at once, checked for a conserved total (RESP only).
    Bank,
}

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub kind: Workload,
    pub workload: WorkloadOptions,
    /// Start a local cluster of this many nodes instead of using `endpoints`.
    pub dev_cluster: Option<u64>,
    pub protocol: Protocol,
    pub faults: Vec<Fault>,
    /// Time between the start of one fault and the next.
    pub fault_interval: Duration,
    /// How long a fault lasts before it is healed.
    pub fault_hold: Duration,
    /// Search steps per key before the verdict is "undecided".
    pub budget_per_key: u64,
    pub progress: bool,
    pub report_dir: Option<PathBuf>,
}

/// The outcome of one check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub seed: u64,
    pub endpoints: Vec<String>,
    pub operations: usize,
    pub unknown_outcomes: u64,
    pub keys: usize,
    pub faults: Vec<FaultEvent>,
    pub checks: Vec<Check>,
    pub failing_keys: Vec<String>,
    pub undecided_keys: Vec<String>,
    pub check_millis: u128,
    pub passed: bool,
    #[serde(skip)]
    pub history: Vec<Operation>,
    /// The bank workload's transfers and reads (`--report` writes them).
    #[serde(skip)]
    pub bank: Option<bank::BankHistory>,
}

/// Runs the whole verification; errors are setup failures, not verdicts.
pub async fn run(options: VerifyOptions) -> Result<VerifyReport, String> {
    let mut options = options;
    if options.kind == Workload::Bank
        && options.dev_cluster.is_some()
        && options.protocol == Protocol::Http
    {
        return Err(bank::NEEDS_RESP.into());
    }
    let mut cluster = match options.dev_cluster {
        Some(count) => {
            if let Some(fault) = options
                .faults
                .iter()
                .find(|fault| fault.fewest_nodes() > count)
            {
                return Err(format!(
                    "a {} fault needs at least {} nodes: --dev-cluster 3",
                    fault.name(),
                    fault.fewest_nodes()
                ));
            }
            let partitions = options.faults.iter().any(|fault| fault.cuts_links());
            let cluster =
                LocalCluster::start(count, None, partitions).map_err(|error| error.to_string())?;
            options.workload.endpoints = match options.protocol {
                Protocol::Http => cluster.endpoints(),
                Protocol::Resp => cluster.resp_endpoints(),
                Protocol::Both => {
                    let mut endpoints = cluster.endpoints();
                    endpoints.extend(cluster.resp_endpoints());
                    endpoints
                }
            };
            wait_until_writable(&options.workload).await?;
            Some(cluster)
        }
        None => None,
    };
    if !options.faults.is_empty() && cluster.is_none() {
        return Err("faults need --dev-cluster N (a cluster walrus verify starts itself)".into());
    }
    if options.kind == Workload::Bank {
        options.workload = bank::resp_only(&options.workload)?;
        bank::open_accounts(&options.workload).await?;
    } else {
        clear_keys(&options.workload).await?;
    }
    let recorder = Arc::new(Recorder::new());
    let workload = tokio::spawn({
        let workload = options.workload.clone();
        let recorder = recorder.clone();
        let kind = options.kind;
        async move {
            match kind {
                Workload::Registers => workload::run(&workload, recorder).await.map(Ran::Registers),
                Workload::Bank => bank::run(&workload, recorder).await.map(Ran::Bank),
            }
        }
    });
    let progress = options
        .progress
        .then(|| report::progress_bar(options.workload.duration));
    let mut faults = Vec::new();
    let mut rng = StdRng::seed_from_u64(options.workload.seed ^ 0x5eed);
    let started = Instant::now();
    let mut next_fault = started + options.fault_interval;
    while !workload.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(bar) = &progress {
            report::update_progress(bar, started, &recorder);
        }
        if let Some(cluster) = cluster.as_mut()
            && !options.faults.is_empty()
            && Instant::now() >= next_fault
            && started.elapsed() + options.fault_hold < options.workload.duration
        {
            let fault = options.faults[faults.len() % options.faults.len()];
            let at_ms = started.elapsed().as_millis() as u64;
            let node = cluster
                .inject(fault, &mut rng, options.fault_hold)
                .await
                .map_err(|error| error.to_string())?;
            faults.push(FaultEvent {
                fault,
                node,
                at_ms,
                healed_at_ms: started.elapsed().as_millis() as u64,
            });
            next_fault = Instant::now() + options.fault_interval;
        }
    }
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let ran = workload.await.map_err(|error| error.to_string())??;
    if let Some(cluster) = cluster.as_mut() {
        cluster.heal().await.map_err(|error| error.to_string())?;
        wait_until_writable(&options.workload).await?;
    }
    let report = match ran {
        Ran::Registers(history) => check_registers(&options, history, &recorder, faults).await?,
        Ran::Bank(history) => check_bank(&options, history, &recorder, faults).await?,
    };
    if let Some(dir) = &options.report_dir {
        report::write_report_dir(&report, dir).map_err(|error| error.to_string())?;
    }
    Ok(report)
}

/// What a workload's clients brought back.
enum Ran {
    Registers(Vec<Operation>),
    Bank(bank::BankHistory),
}

/// The register workload's final reads and checks.
async fn check_registers(
    options: &VerifyOptions,
    mut history: Vec<Operation>,
    recorder: &Recorder,
    faults: Vec<FaultEvent>,
) -> Result<VerifyReport, String> {
    let finals = workload::final_reads(&options.workload, recorder).await?;
    history.extend(finals.iter().cloned());
    let checked = Instant::now();
    let verdicts = checker::check_all(&history, options.budget_per_key);
    let failing_keys: Vec<String> = verdicts
        .iter()
        .filter(|(_, verdict)| **verdict == KeyVerdict::NotLinearizable)
        .map(|(key, _)| key.clone())
        .collect();
    let undecided_keys: Vec<String> = verdicts
        .iter()
        .filter(|(_, verdict)| **verdict == KeyVerdict::Undecided)
        .map(|(key, _)| key.clone())
        .collect();
    let check_millis = checked.elapsed().as_millis();
    let checks = vec![
        Check {
            name: "linearizable",
            passed: failing_keys.is_empty() && undecided_keys.is_empty(),
            detail: format!(
                "{} keys linearizable, {} not, {} undecided",
                verdicts.len() - failing_keys.len() - undecided_keys.len(),
                failing_keys.len(),
                undecided_keys.len()
            ),
        },
        agreement(&finals, options.workload.endpoints.len()),
        revisions_grow(&history),
    ];
    let passed = checks.iter().all(|check| check.passed);
    Ok(VerifyReport {
        seed: options.workload.seed,
        endpoints: options.workload.endpoints.clone(),
        operations: history.len(),
        unknown_outcomes: recorder.unknown.load(Ordering::Relaxed),
        keys: verdicts.len(),
        faults,
        checks,
        failing_keys,
        undecided_keys,
        check_millis,
        passed,
        history,
        bank: None,
    })
}

/// The bank workload's final reads and checks.
async fn check_bank(
    options: &VerifyOptions,
    history: bank::BankHistory,
    recorder: &Recorder,
    faults: Vec<FaultEvent>,
) -> Result<VerifyReport, String> {
    let finals = bank::final_reads(&options.workload, recorder).await?;
    let checked = Instant::now();
    let checks = bank::checks(&history, &finals, options.workload.keys);
    let check_millis = checked.elapsed().as_millis();
    let passed = checks.iter().all(|check| check.passed);
    Ok(VerifyReport {
        seed: options.workload.seed,
        endpoints: options.workload.endpoints.clone(),
        operations: history.operations() + finals.len(),
        unknown_outcomes: recorder.unknown.load(Ordering::Relaxed),
        keys: options.workload.keys as usize,
        faults,
        checks,
        failing_keys: Vec::new(),
        undecided_keys: Vec::new(),
        check_millis,
        passed,
        history: Vec::new(),
        bank: Some(history),
    })
}

/// Waits until some endpoint acknowledges a write (a cluster has a leader).
async fn wait_until_writable(options: &WorkloadOptions) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let probe = WorkloadOptions {
        request_timeout: Duration::from_secs(2),
        ..options.clone()
    };
    let mut client = workload::Client::new(u64::MAX, &probe)?;
    let put = (workload::OpKind::Put, "verify-probe");
    if until_acknowledged(&mut client, put, deadline).await {
        Ok(())
    } else {
        Err("no endpoint acknowledged a write within 30 s".into())
    }
}

/// Repeats `kind` on `key` through `client` until an endpoint acknowledges
/// it (true), or until `deadline` (false).
async fn until_acknowledged(
    client: &mut workload::Client,
    (kind, key): (workload::OpKind, &str),
    deadline: Instant,
) -> bool {
    let recorder = Recorder::new();
    loop {
        let done = client.run_one(&recorder, kind, key).await;
        if !done.is_empty() && done.iter().all(|op| op.completed_ns.is_some()) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes every key the workload uses, each until a delete of it is
/// acknowledged, so that the checker's model (every key absent at the start)
/// holds on a store that kept them from an earlier run.
async fn clear_keys(options: &WorkloadOptions) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut client = workload::Client::new(u64::MAX, options)?;
    for key in workload::KeySpace::new(options.keys, options.mix).all() {
        let delete = (workload::OpKind::Delete, key.as_str());
        if !until_acknowledged(&mut client, delete, deadline).await {
            return Err(format!(
                "could not delete {key} (left from an earlier run?) within 30 s"
            ));
        }
    }
    Ok(())
}

/// After healing, every endpoint must have returned the same value per key.
fn agreement(finals: &[Operation], endpoints: usize) -> Check {
    let mut by_key: BTreeMap<&str, Vec<Option<&Option<String>>>> = BTreeMap::new();
    for op in finals {
        let value = match (&op.action, op.completed_ns) {
            (Action::Get { value }, Some(_)) => Some(value),
            _ => None,
        };
        by_key.entry(op.key.as_str()).or_default().push(value);
    }
    let unanswered = finals.iter().filter(|op| op.completed_ns.is_none()).count();
    let disagreeing: Vec<&str> = by_key
        .iter()
        .filter(|(_, values)| {
            let answered: Vec<_> = values.iter().flatten().collect();
            answered.windows(2).any(|pair| pair[0] != pair[1])
        })
        .map(|(key, _)| *key)
        .collect();
    Check {
        name: "nodes agree after healing",
        passed: disagreeing.is_empty() && unanswered == 0,
        detail: format!(
            "{} keys read from {endpoints} endpoint(s); {} disagree{}; {unanswered} final reads unanswered",
            by_key.len(),
            disagreeing.len(),
            disagreeing
                .first()
                .map_or(String::new(), |key| format!(" (first: {key})"))
        ),
    }
}

/// A write acknowledged before another write to the same key began must have
/// the smaller revision.
fn revisions_grow(history: &[Operation]) -> Check {
    let mut writes: BTreeMap<&str, Vec<(u64, u64, u64)>> = BTreeMap::new();
    for op in history {
        let is_write = match &op.action {
            Action::Put { .. } => true,
            Action::Cas { succeeded, .. } => *succeeded,
            _ => false,
        };
        if let (true, Some(completed), Some(revision)) = (is_write, op.completed_ns, op.revision) {
            writes
                .entry(op.key.as_str())
                .or_default()
                .push((op.invoked_ns, completed, revision));
        }
    }
    let mut backwards = 0;
    for list in writes.values_mut() {
        list.sort_unstable();
        // Highest revision among writes completed before each invocation.
        let mut completed: Vec<(u64, u64)> = list.iter().map(|w| (w.1, w.2)).collect();
        completed.sort_unstable();
        let mut best = 0;
        let mut cursor = 0;
        for &(invoked, _, revision) in list.iter() {
            while cursor < completed.len() && completed[cursor].0 < invoked {
                best = best.max(completed[cursor].1);
                cursor += 1;
            }
            if revision <= best {
                backwards += 1;
            }
        }
    }
    Check {
        name: "revisions only grow",
        passed: backwards == 0,
        detail: format!("{backwards} acknowledged writes got a revision not above an earlier one"),
    }
}
