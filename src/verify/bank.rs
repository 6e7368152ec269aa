//! The bank workload: money moved between accounts by Redis transactions,
//! and the whole bank read at once, over RESP.
//!
//! The per-key checker cannot see a transaction torn in half, a read that
//! catches one midway, or a WATCH that fails to guard: each of those leaves
//! every single key's history linearizable. The bank can. Its accounts
//! (`verify-bank-…`) start with [`OPENING_BALANCE`] each, set by one MSET.
//! Then each client in turn
//! - moves money: `WATCH from`, `GET from`, and when the balance covers the
//!   amount, `MULTI`, `DECRBY from`, `INCRBY to`, `EXEC`; without the funds,
//!   `UNWATCH`;
//! - or reads every account, by one `MGET` or by a `MULTI` of `GET`s.
//!
//! What must hold, faults or not:
//! - every read sees every account, none negative, and the opening total:
//!   a transaction is all or nothing and a read sees it whole or not at all;
//! - a transfer EXEC applied debited exactly the balance its client read
//!   after WATCH: otherwise something changed the account between WATCH and
//!   EXEC and EXEC ran anyway;
//! - after the faults heal, every node reads the same balances, which add
//!   up to the opening total.
//!
//! Outcomes that are unknown (a timeout, a broken connection, an error
//! reply) cost nothing here: a transfer applied or not keeps the total.
//! Every step of a transfer runs on the connection that sent the WATCH;
//! if that connection fails, the transfer stops there.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;
use serde::Serialize;

use super::Check;
use super::workload::{
    Client, Recorder, WorkloadOptions, client_rng, final_reader, goes_on, resp_address,
};
use crate::client::resp::RespValue;

/// Each account's balance when the run starts.
pub const OPENING_BALANCE: i64 = 10;

/// The largest amount one transfer moves.
const LARGEST_TRANSFER: i64 = 5;

/// The name of account `index`.
pub fn account(index: u64) -> String {
    format!("verify-bank-{index}")
}

/// How a read of the whole bank was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ReadVia {
    Mget,
    MultiGets,
}

/// A read of every account that was answered.
#[derive(Debug, Clone, Serialize)]
pub struct BankRead {
    pub client: u64,
    pub endpoint: String,
    pub via: ReadVia,
    /// Per account: its balance, or `None` when absent or not an integer.
    pub balances: Vec<Option<i64>>,
    pub invoked_ns: u64,
    pub completed_ns: u64,
}

/// How a transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TransferOutcome {
    /// EXEC ran it; the debited account's balance after it.
    Applied { from_after: i64 },
    /// EXEC answered the null array: a WATCHed account changed.
    Aborted,
    /// The balance read after WATCH did not cover the amount; UNWATCH.
    Skipped,
    /// No answer, or an error: it may or may not have happened.
    Unknown,
}

/// One transfer that got as far as reading the balance after WATCH.
#[derive(Debug, Clone, Serialize)]
pub struct Transfer {
    pub client: u64,
    pub endpoint: String,
    pub from: u64,
    pub to: u64,
    pub amount: i64,
    /// What `GET from` answered after `WATCH from`.
    pub balance_read: i64,
    pub outcome: TransferOutcome,
}

/// Everything the bank's clients saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BankHistory {
    pub reads: Vec<BankRead>,
    pub transfers: Vec<Transfer>,
    /// Reads whose outcome was unknown (not checked: they saw nothing).
    pub unanswered_reads: u64,
}

impl BankHistory {
    pub fn operations(&self) -> usize {
        self.reads.len() + self.transfers.len() + self.unanswered_reads as usize
    }
}

/// Why the bank refuses a run without RESP endpoints.
pub const NEEDS_RESP: &str = "the bank workload moves money with MULTI/EXEC, a Redis-protocol \
                              feature: give it --resp endpoints (with --dev-cluster, \
                              --protocol resp or both)";

/// The workload's options with only its RESP endpoints: transactions are
/// a Redis-protocol feature. An error when there are none.
pub fn resp_only(options: &WorkloadOptions) -> Result<WorkloadOptions, String> {
    let endpoints: Vec<String> = options
        .endpoints
        .iter()
        .filter(|url| resp_address(url).is_some())
        .cloned()
        .collect();
    if endpoints.is_empty() {
        return Err(NEEDS_RESP.into());
    }
    Ok(WorkloadOptions {
        endpoints,
        ..options.clone()
    })
}

/// Opens the bank: one MSET of every account at [`OPENING_BALANCE`],
/// repeated until acknowledged (it is idempotent, and even a late copy of it
/// keeps the total).
pub async fn open_accounts(options: &WorkloadOptions) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut client = Client::new(u64::MAX, options)?;
    let names: Vec<String> = (0..options.keys).map(account).collect();
    let opening = OPENING_BALANCE.to_string();
    let mut mset: Vec<&[u8]> = vec![b"MSET"];
    for name in &names {
        mset.push(name.as_bytes());
        mset.push(opening.as_bytes());
    }
    loop {
        if let Some(replies) = client.resp_pipeline(&[&mset]).await
            && matches!(replies.as_slice(), [RespValue::Simple(_)])
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err("no endpoint acknowledged the MSET that opens the bank within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads every account through `client`, by MGET or by a MULTI of GETs;
/// `None` when the outcome is unknown.
async fn read_all(client: &mut Client, accounts: u64, via: ReadVia) -> Option<Vec<Option<i64>>> {
    let names: Vec<String> = (0..accounts).map(account).collect();
    match via {
        ReadVia::Mget => {
            let mut mget: Vec<&[u8]> = vec![b"MGET"];
            mget.extend(names.iter().map(|name| name.as_bytes()));
            let replies = client.resp_pipeline(&[&mget]).await?;
            match replies.as_slice() {
                [RespValue::Array(Some(values))] if values.len() == names.len() => {
                    Some(values.iter().map(balance).collect())
                }
                _ => None,
            }
        }
        ReadVia::MultiGets => {
            let gets: Vec<[&[u8]; 2]> = names
                .iter()
                .map(|name| [b"GET".as_slice(), name.as_bytes()])
                .collect();
            let mut commands: Vec<&[&[u8]]> = vec![&[b"MULTI"]];
            commands.extend(gets.iter().map(|get| get.as_slice()));
            commands.push(&[b"EXEC"]);
            let replies = client.resp_pipeline(&commands).await?;
            match replies.last() {
                Some(RespValue::Array(Some(values))) if values.len() == names.len() => {
                    Some(values.iter().map(balance).collect())
                }
                _ => None,
            }
        }
    }
}

/// A balance as GET or MGET answers it; `None` when absent or not a number.
fn balance(value: &RespValue) -> Option<i64> {
    match value {
        RespValue::Bulk(Some(bytes)) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        _ => None,
    }
}

/// Moves a random amount between two random accounts under WATCH; `None`
/// when it stopped before reading the balance (nothing can have changed).
async fn transfer(client: &mut Client, accounts: u64, rng: &mut StdRng) -> Option<Transfer> {
    let from = rng.random_range(0..accounts);
    let to = (from + rng.random_range(1..accounts)) % accounts;
    let amount = rng.random_range(1..=LARGEST_TRANSFER);
    let (from_name, to_name) = (account(from), account(to));
    let watched = client
        .resp_pipeline(&[
            &[b"WATCH", from_name.as_bytes()],
            &[b"GET", from_name.as_bytes()],
        ])
        .await?;
    let balance_read = match watched.as_slice() {
        [RespValue::Simple(_), value] => balance(value)?,
        _ => return None,
    };
    let endpoint = client.endpoint();
    let outcome = if balance_read < amount {
        // UNWATCH's answer does not matter: a connection that failed is
        // dropped, and with it the WATCH.
        let _ = client.resp_pipeline(&[&[b"UNWATCH"]]).await;
        TransferOutcome::Skipped
    } else {
        let amount_text = amount.to_string();
        let replies = client
            .resp_pipeline(&[
                &[b"MULTI"],
                &[b"DECRBY", from_name.as_bytes(), amount_text.as_bytes()],
                &[b"INCRBY", to_name.as_bytes(), amount_text.as_bytes()],
                &[b"EXEC"],
            ])
            .await;
        match replies.as_deref() {
            Some([_, _, _, RespValue::Array(Some(results))]) => match results.as_slice() {
                [RespValue::Integer(from_after), RespValue::Integer(_)] => {
                    TransferOutcome::Applied {
                        from_after: *from_after,
                    }
                }
                _ => TransferOutcome::Unknown,
            },
            Some([_, _, _, RespValue::Array(None)]) => TransferOutcome::Aborted,
            _ => TransferOutcome::Unknown,
        }
    };
    Some(Transfer {
        client: client.id(),
        endpoint,
        from,
        to,
        amount,
        balance_read,
        outcome,
    })
}

/// Runs the bank's clients until the duration or the operation bound.
pub async fn run(
    options: &WorkloadOptions,
    recorder: Arc<Recorder>,
) -> Result<BankHistory, String> {
    if options.keys < 2 {
        return Err("the bank needs at least two accounts (--keys 2)".into());
    }
    let deadline = Instant::now() + options.duration;
    let mut tasks = Vec::new();
    for id in 0..options.clients {
        let mut client = Client::new(id, options)?;
        let recorder = recorder.clone();
        let options = options.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = client_rng(options.seed, id);
            let mut history = BankHistory::default();
            while goes_on(deadline, &recorder, &options) {
                recorder.done.fetch_add(1, Ordering::Relaxed);
                // Three transfers to each read.
                if rng.random_range(0..4) < 3 {
                    if let Some(done) = transfer(&mut client, options.keys, &mut rng).await {
                        if done.outcome == TransferOutcome::Unknown {
                            recorder.unknown.fetch_add(1, Ordering::Relaxed);
                        }
                        history.transfers.push(done);
                    }
                    continue;
                }
                let via = if rng.random_bool(0.5) {
                    ReadVia::Mget
                } else {
                    ReadVia::MultiGets
                };
                let invoked_ns = recorder.now_ns();
                match read_all(&mut client, options.keys, via).await {
                    Some(balances) => history.reads.push(BankRead {
                        client: id,
                        endpoint: client.endpoint(),
                        via,
                        balances,
                        invoked_ns,
                        completed_ns: recorder.now_ns(),
                    }),
                    None => {
                        recorder.unknown.fetch_add(1, Ordering::Relaxed);
                        history.unanswered_reads += 1;
                    }
                }
            }
            history
        }));
    }
    let mut history = BankHistory::default();
    for task in tasks {
        let part = task.await.map_err(|error| error.to_string())?;
        history.reads.extend(part.reads);
        history.transfers.extend(part.transfers);
        history.unanswered_reads += part.unanswered_reads;
    }
    Ok(history)
}

/// After healing, reads the whole bank by MGET through each endpoint in
/// turn (retrying a few times, as a node may still be catching up on its
/// leader); `None` for an endpoint that never answered.
pub async fn final_reads(
    options: &WorkloadOptions,
    recorder: &Recorder,
) -> Result<Vec<(String, Option<Vec<Option<i64>>>)>, String> {
    let mut finals = Vec::new();
    for (index, url) in options.endpoints.iter().enumerate() {
        let mut client = final_reader(options, index, url)?;
        let mut answer = None;
        for _ in 0..5 {
            recorder.done.fetch_add(1, Ordering::Relaxed);
            answer = read_all(&mut client, options.keys, ReadVia::Mget).await;
            if answer.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        finals.push((url.clone(), answer));
    }
    Ok(finals)
}

/// The opening total of a bank of `accounts`.
fn opening_total(accounts: u64) -> i64 {
    OPENING_BALANCE * accounts as i64
}

/// What is wrong with one read of a bank of `accounts` (each opened with
/// [`OPENING_BALANCE`]), if anything: an account missing, one negative, or
/// a total other than the opening one.
pub fn read_fault(balances: &[Option<i64>], accounts: u64) -> Option<String> {
    if balances.len() as u64 != accounts {
        return Some(format!("{} accounts instead of {accounts}", balances.len()));
    }
    if let Some(missing) = balances.iter().position(Option::is_none) {
        return Some(format!(
            "{} absent or not a number",
            account(missing as u64)
        ));
    }
    let values: Vec<i64> = balances.iter().flatten().copied().collect();
    if let Some(negative) = values.iter().position(|value| *value < 0) {
        return Some(format!(
            "{} at {}",
            account(negative as u64),
            values[negative]
        ));
    }
    let total: i64 = values.iter().sum();
    (total != opening_total(accounts)).then(|| {
        format!(
            "a total of {total}, not {} ({values:?})",
            opening_total(accounts)
        )
    })
}

/// The bank's checks over a run's history and its final reads.
pub fn checks(
    history: &BankHistory,
    finals: &[(String, Option<Vec<Option<i64>>>)],
    accounts: u64,
) -> Vec<Check> {
    vec![
        conserved(history, accounts),
        watch_guards(history),
        agreement(finals, accounts),
        work_done(history),
    ]
}

fn conserved(history: &BankHistory, accounts: u64) -> Check {
    let faulty: Vec<(&BankRead, String)> = history
        .reads
        .iter()
        .filter_map(|read| read_fault(&read.balances, accounts).map(|fault| (read, fault)))
        .collect();
    let by_mget = history
        .reads
        .iter()
        .filter(|read| read.via == ReadVia::Mget)
        .count();
    let mut detail = format!(
        "{} reads ({by_mget} by MGET, {} by MULTI/EXEC), {} unanswered; {} saw a torn or \
         changed bank",
        history.reads.len(),
        history.reads.len() - by_mget,
        history.unanswered_reads,
        faulty.len()
    );
    if let Some((read, fault)) = faulty.first() {
        let _ = write!(
            detail,
            " (first: client {} through {} by {:?} at {} ms: {fault})",
            read.client,
            read.endpoint,
            read.via,
            read.invoked_ns / 1_000_000
        );
    }
    Check {
        name: "bank total conserved",
        passed: faulty.is_empty(),
        detail,
    }
}

fn watch_guards(history: &BankHistory) -> Check {
    let stale: Vec<(&Transfer, i64)> = history
        .transfers
        .iter()
        .filter_map(|transfer| match transfer.outcome {
            TransferOutcome::Applied { from_after }
                if from_after != transfer.balance_read - transfer.amount =>
            {
                Some((transfer, from_after))
            }
            _ => None,
        })
        .collect();
    let count = |outcome: fn(&TransferOutcome) -> bool| {
        history
            .transfers
            .iter()
            .filter(|transfer| outcome(&transfer.outcome))
            .count()
    };
    let mut detail = format!(
        "{} applied, {} aborted by WATCH, {} skipped for want of funds, {} of unknown outcome",
        count(|outcome| matches!(outcome, TransferOutcome::Applied { .. })),
        count(|outcome| *outcome == TransferOutcome::Aborted),
        count(|outcome| *outcome == TransferOutcome::Skipped),
        count(|outcome| *outcome == TransferOutcome::Unknown),
    );
    let _ = write!(
        detail,
        "; {} applied on a balance that had changed since WATCH",
        stale.len()
    );
    if let Some((transfer, from_after)) = stale.first() {
        let _ = write!(
            detail,
            " (first: client {} moved {} from {} holding {}, which then held {from_after})",
            transfer.client,
            transfer.amount,
            account(transfer.from),
            transfer.balance_read
        );
    }
    Check {
        name: "WATCH guards transfers",
        passed: stale.is_empty(),
        detail,
    }
}

fn agreement(finals: &[(String, Option<Vec<Option<i64>>>)], accounts: u64) -> Check {
    let answered: Vec<&Vec<Option<i64>>> = finals
        .iter()
        .filter_map(|(_, read)| read.as_ref())
        .collect();
    let unanswered: Vec<&str> = finals
        .iter()
        .filter(|(_, read)| read.is_none())
        .map(|(url, _)| url.as_str())
        .collect();
    let disagree = answered.windows(2).any(|pair| pair[0] != pair[1]);
    let fault = answered
        .iter()
        .find_map(|balances| read_fault(balances, accounts));
    let mut detail = format!(
        "{} of {} endpoints read the whole bank",
        answered.len(),
        finals.len()
    );
    if disagree {
        detail.push_str("; they disagree");
    }
    if let Some(fault) = &fault {
        let _ = write!(detail, "; {fault}");
    }
    if let Some(first) = unanswered.first() {
        let _ = write!(detail, "; {first} never answered");
    }
    Check {
        name: "nodes agree after healing",
        passed: !disagree && fault.is_none() && unanswered.is_empty(),
        detail,
    }
}

/// A run in which no transfer was applied or no read answered proves
/// nothing, and fails.
fn work_done(history: &BankHistory) -> Check {
    let applied = history
        .transfers
        .iter()
        .filter(|transfer| matches!(transfer.outcome, TransferOutcome::Applied { .. }))
        .count();
    Check {
        name: "bank made progress",
        passed: applied > 0 && !history.reads.is_empty(),
        detail: format!(
            "{applied} transfers applied, {} reads answered",
            history.reads.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(balances: &[i64]) -> BankRead {
        BankRead {
            client: 1,
            endpoint: "redis://127.0.0.1:1".into(),
            via: ReadVia::Mget,
            balances: balances.iter().map(|value| Some(*value)).collect(),
            invoked_ns: 0,
            completed_ns: 1,
        }
    }

    fn transfer(balance_read: i64, amount: i64, outcome: TransferOutcome) -> Transfer {
        Transfer {
            client: 2,
            endpoint: "redis://127.0.0.1:1".into(),
            from: 0,
            to: 1,
            amount,
            balance_read,
            outcome,
        }
    }

    fn passed(checks: &[Check], name: &str) -> bool {
        checks
            .iter()
            .find(|check| check.name == name)
            .map(|check| check.passed)
            .expect("a check of that name")
    }

    fn healthy() -> BankHistory {
        BankHistory {
            reads: vec![read(&[10, 10, 10]), read(&[7, 13, 10])],
            transfers: vec![
                transfer(10, 3, TransferOutcome::Applied { from_after: 7 }),
                transfer(7, 5, TransferOutcome::Aborted),
                transfer(2, 5, TransferOutcome::Skipped),
                transfer(7, 1, TransferOutcome::Unknown),
            ],
            unanswered_reads: 1,
        }
    }

    fn finals(reads: &[&[i64]]) -> Vec<(String, Option<Vec<Option<i64>>>)> {
        reads
            .iter()
            .enumerate()
            .map(|(index, balances)| {
                (
                    format!("redis://127.0.0.1:{index}"),
                    Some(balances.iter().map(|value| Some(*value)).collect()),
                )
            })
            .collect()
    }

    #[test]
    fn a_healthy_history_passes_every_check() {
        let checks = checks(&healthy(), &finals(&[&[7, 13, 10], &[7, 13, 10]]), 3);
        assert!(checks.iter().all(|check| check.passed), "{checks:?}");
    }

    #[test]
    fn a_read_that_sees_half_a_transfer_fails_conservation() {
        let mut history = healthy();
        // The debit without its credit.
        history.reads.push(read(&[7, 10, 10]));
        let checks = checks(&history, &finals(&[&[7, 13, 10]]), 3);
        assert!(!passed(&checks, "bank total conserved"), "{checks:?}");
        assert!(
            checks[0].detail.contains("a total of 27, not 30"),
            "{checks:?}"
        );
    }

    #[test]
    fn a_negative_or_missing_account_fails_conservation_even_when_the_total_holds() {
        let mut history = healthy();
        history.reads.push(read(&[-1, 21, 10]));
        assert!(!passed(&checks(&history, &[], 3), "bank total conserved"));
        let mut history = healthy();
        history.reads.push(BankRead {
            balances: vec![Some(20), None, Some(10)],
            ..read(&[])
        });
        assert!(!passed(&checks(&history, &[], 3), "bank total conserved"));
    }

    #[test]
    fn a_transfer_applied_on_a_changed_balance_fails_the_watch_check() {
        let mut history = healthy();
        // It read 10 after WATCH, yet its DECRBY left 4: another transfer
        // took 3 in between and EXEC ran anyway.
        history
            .transfers
            .push(transfer(10, 3, TransferOutcome::Applied { from_after: 4 }));
        let checks = checks(&history, &finals(&[&[7, 13, 10]]), 3);
        assert!(!passed(&checks, "WATCH guards transfers"), "{checks:?}");
        assert!(passed(&checks, "bank total conserved"));
    }

    #[test]
    fn nodes_that_disagree_or_do_not_answer_fail_agreement() {
        let history = healthy();
        let split = finals(&[&[7, 13, 10], &[10, 10, 10]]);
        assert!(!passed(
            &checks(&history, &split, 3),
            "nodes agree after healing"
        ));
        let mut silent = finals(&[&[7, 13, 10]]);
        silent.push(("redis://127.0.0.1:9".into(), None));
        assert!(!passed(
            &checks(&history, &silent, 3),
            "nodes agree after healing"
        ));
        let short = finals(&[&[7, 13, 9], &[7, 13, 9]]);
        assert!(!passed(
            &checks(&history, &short, 3),
            "nodes agree after healing"
        ));
    }

    #[test]
    fn a_run_with_nothing_applied_proves_nothing_and_fails() {
        let history = BankHistory {
            reads: vec![read(&[10, 10, 10])],
            transfers: vec![transfer(10, 3, TransferOutcome::Unknown)],
            unanswered_reads: 0,
        };
        assert!(!passed(
            &checks(&history, &finals(&[&[10, 10, 10]]), 3),
            "bank made progress"
        ));
    }
}
