//! An in-process Raft cluster on simulated disks over a simulated network,
//! with its faults drawn from one seed, and its history checked for
//! linearizability.
//!
//! Each node is a real [`ClusterNode`] (the same log store, state machine,
//! forwarding and read index as `walrus serve --node-id`) on its own
//! [`SimFs`], reached through the node layer ([`Node`]) as HTTP and RESP reach
//! it. Peer messages travel through [`SimNetwork`], which delays, reorders and
//! loses them and honours partitions, one-way ones included; they arrive at
//! [`ClusterNode::serve_peer_message`], the function the `/raft/` route calls.
//!
//! A run ([`run`]): clients issue gets, puts, deletes and compare-and-swaps,
//! and on counter keys of their own increments (Redis's INCR, one op of the
//! state machine) with gets and deletes, against random nodes while a nemesis partitions (a node or the leader cut
//! off, one-way cuts, two nodes cut apart with the third bridging them), heals, changes the loss
//! rate, power-cuts nodes (unsynced writes lost, the last one torn) and
//! restarts them, and changes the membership (removes a voter, the leader
//! too, and adds it back as a learner to promote). Then every link heals,
//! every node is a voter again, every node is power-cut at once and
//! restarted, and each node reads every key. The whole history, final reads
//! included, must be linearizable per key (so no acknowledged write was lost),
//! and every node must hold the same entries at the same revision.
//!
//! Beside the registers and counters, a small bank (accounts `b…`, opened by
//! one MSET) checks what a key's own history cannot: transactions. Clients
//! move money between accounts with the command an EXEC under WATCH logs (a
//! guard on the debited account's revision as a local read found it, then
//! two INCRBYs) and read every account at one revision after a read barrier.
//! Every read, the final ones on every node included, must find the opening
//! total with no account negative, and every transfer applied must have
//! debited exactly the balance its guard was read with.
//!
//! Reproducing: the seed fixes every random choice (the workload, the fault
//! schedule and its timing, each message's delay and loss, each torn write).
//! Run on a current-thread runtime with a paused clock, inside the
//! deterministic context ([`crate::deterministic`]: Raft's election timeouts
//! drawn from the seed, the Raft log and snapshot work inline instead of on
//! other threads, commands stamped from the virtual clock), as
//! `tests/walrus/sim_cluster.rs` runs it, a seed replays the identical
//! execution. On a multi-threaded runtime it still runs, with the same faults
//! at the same moments but its own interleaving.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::SimFs;
use crate::node::{Consistency, Node};
use crate::raft::network::{PeerError, PeerTransport};
use crate::raft::{ClusterNode, ClusterOptions, NodeId};
use crate::storage::{SpareSegment, WalOptions};
use crate::store::redis_op::{Answer, RedisCommand, RedisOp};
use crate::store::{Command, Entry, Guard};
use crate::verify::bank;
use crate::verify::checker::{Action, KeyVerdict, Operation, check_all};
use crate::verify::workload::OpKind;

/// How a run is shaped; everything random in it comes from `seed`.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub seed: u64,
    pub nodes: u64,
    pub clients: u64,
    pub keys: usize,
    /// How long clients and the nemesis run.
    pub duration: Duration,
    /// Most operations each client issues.
    pub max_ops_per_client: u64,
}

impl SimOptions {
    pub fn new(seed: u64) -> SimOptions {
        SimOptions {
            seed,
            nodes: 3,
            clients: 6,
            keys: 6,
            duration: Duration::from_secs(4),
            max_ops_per_client: 250,
        }
    }
}

/// What a run saw and what the checks found.
#[derive(Debug)]
pub struct SimReport {
    pub seed: u64,
    pub history: Vec<Operation>,
    pub verdicts: BTreeMap<String, KeyVerdict>,
    /// The faults injected, in order, with the time since the start.
    pub faults: Vec<String>,
    /// Writes the workload's clients saw take effect (puts, deletes and
    /// compare-and-swaps that succeeded).
    pub acknowledged_writes: usize,
    /// Reads the workload's clients saw answered (not the final reads).
    pub acknowledged_reads: usize,
    /// Writes refused as never proposed (`Error::Unavailable`). They are
    /// left out of the history: were one applied after all, a read would
    /// find a value (or a count) no recorded write made, and the check fails.
    pub refused_writes: usize,
    /// Messages the network delivered and lost.
    pub delivered: u64,
    pub lost: u64,
    /// Snapshots nodes received from a leader and installed.
    pub snapshots_installed: u64,
    /// Writes followers forwarded to the leader.
    pub forwarded_writes: u64,
    /// Membership changes (removals, re-adds and promotions) committed.
    pub membership_changes: u64,
    /// Why the nodes do not agree at the end, if they do not.
    pub divergence: Option<String>,
    /// Bank transfers the clients saw applied, and bank reads answered
    /// (the final ones included).
    pub bank_transfers_applied: usize,
    pub bank_reads: usize,
    /// Bank reads that did not add up, or transfers applied on a balance
    /// that had changed: each one a broken transaction.
    pub bank_faults: Vec<String>,
}

impl SimReport {
    /// Every key linearizable and every node in agreement.
    pub fn passed(&self) -> bool {
        self.divergence.is_none()
            && self.bank_faults.is_empty()
            && self
                .verdicts
                .values()
                .all(|verdict| *verdict == KeyVerdict::Linearizable)
    }

    /// The verdicts that are not `Linearizable`, and the divergence, for a
    /// failure message.
    pub fn problems(&self) -> String {
        let mut out = String::new();
        for (key, verdict) in &self.verdicts {
            if *verdict != KeyVerdict::Linearizable {
                out.push_str(&format!("key {key}: {verdict:?}\n"));
            }
        }
        if let Some(divergence) = &self.divergence {
            out.push_str(&format!("nodes disagree: {divergence}\n"));
        }
        for fault in &self.bank_faults {
            out.push_str(&format!("bank: {fault}\n"));
        }
        out
    }
}

/// Message loss and delay, changed by the nemesis during a run.
#[derive(Debug, Clone, Copy)]
struct LinkQuality {
    /// Chance a request, and separately its answer, is lost.
    loss: f64,
    max_delay_ms: u64,
}

/// The simulated network: which nodes are up, which directed links are cut,
/// and how lossy and slow the rest are.
struct Links {
    nodes: RwLock<HashMap<NodeId, Weak<ClusterNode>>>,
    /// Directed `(from, to)` pairs that deliver nothing.
    cut: RwLock<BTreeSet<(NodeId, NodeId)>>,
    quality: RwLock<LinkQuality>,
    rng: Mutex<StdRng>,
    delivered: std::sync::atomic::AtomicU64,
    lost: std::sync::atomic::AtomicU64,
}

/// The [`PeerTransport`] every node of a simulated cluster shares.
#[derive(Clone)]
pub struct SimNetwork {
    links: Arc<Links>,
}

impl std::fmt::Debug for SimNetwork {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SimNetwork")
    }
}

/// The fate of one message, drawn when it is sent.
struct Fate {
    there: Duration,
    back: Duration,
    request_lost: bool,
    answer_lost: bool,
}

impl Links {
    fn fate(&self) -> Fate {
        let quality = *self.quality.read();
        let mut rng = self.rng.lock();
        let mut delay = || Duration::from_millis(rng.random_range(0..=quality.max_delay_ms));
        let (there, back) = (delay(), delay());
        Fate {
            there,
            back,
            request_lost: rng.random_bool(quality.loss),
            answer_lost: rng.random_bool(quality.loss),
        }
    }

    fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.read().contains(&(from, to))
    }

    fn node(&self, id: NodeId) -> Option<Arc<ClusterNode>> {
        self.nodes.read().get(&id).and_then(Weak::upgrade)
    }

    fn count(&self, lost: bool) {
        let counter = if lost { &self.lost } else { &self.delivered };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl SimNetwork {
    fn new(seed: u64) -> SimNetwork {
        SimNetwork {
            links: Arc::new(Links {
                nodes: RwLock::new(HashMap::new()),
                cut: RwLock::new(BTreeSet::new()),
                quality: RwLock::new(LinkQuality {
                    loss: 0.0,
                    max_delay_ms: 5,
                }),
                rng: Mutex::new(StdRng::seed_from_u64(seed)),
                delivered: Default::default(),
                lost: Default::default(),
            }),
        }
    }

    fn attach(&self, node: &Arc<ClusterNode>) {
        self.links
            .nodes
            .write()
            .insert(node.id(), Arc::downgrade(node));
    }

    fn detach(&self, id: NodeId) {
        self.links.nodes.write().remove(&id);
    }

    /// Cuts `from → to` only: `to` still reaches `from`.
    fn cut_one_way(&self, from: NodeId, to: NodeId) {
        self.links.cut.write().insert((from, to));
    }

    /// Cuts `node` off from every other node, both ways, in place of any
    /// earlier cuts (so partitions move rather than pile up).
    fn isolate(&self, node: NodeId, all: &[NodeId]) {
        let mut cut = self.links.cut.write();
        cut.clear();
        for &other in all.iter().filter(|&&other| other != node) {
            cut.insert((node, other));
            cut.insert((other, node));
        }
    }

    /// Cuts `a` and `b` apart, both ways, in place of any earlier cuts; every
    /// other link stays, so a third node still reaches both (Jepsen's
    /// "bridge": neither side of the cut is a minority on its own).
    fn cut_apart(&self, a: NodeId, b: NodeId) {
        let mut cut = self.links.cut.write();
        cut.clear();
        cut.insert((a, b));
        cut.insert((b, a));
    }

    fn heal(&self) {
        self.links.cut.write().clear();
    }

    fn set_quality(&self, quality: LinkQuality) {
        *self.links.quality.write() = quality;
    }
}

impl PeerTransport for SimNetwork {
    fn deliver(
        &self,
        from: NodeId,
        to: NodeId,
        message: &'static str,
        body: Vec<u8>,
    ) -> futures::future::BoxFuture<'static, Result<Vec<u8>, PeerError>> {
        let links = self.links.clone();
        Box::pin(async move {
            let address = format!("simulated node {to}");
            let lost = |reason: &str| PeerError::Failed {
                address: address.clone(),
                reason: reason.to_string(),
            };
            if links.is_cut(from, to) {
                links.count(true);
                return Err(PeerError::Unreachable {
                    address: address.clone(),
                    reason: "partitioned".into(),
                });
            }
            let fate = links.fate();
            tokio::time::sleep(fate.there).await;
            // A request lost on the way, or caught by a partition that began
            // while it travelled: the sender cannot tell it from a lost answer.
            if fate.request_lost || links.is_cut(from, to) {
                links.count(true);
                return Err(lost("the request was lost"));
            }
            let Some(node) = links.node(to) else {
                links.count(true);
                return Err(PeerError::Unreachable {
                    address: address.clone(),
                    reason: "the node is down".into(),
                });
            };
            // The receiver's work runs on its own, as an HTTP handler does:
            // the sender giving up does not cancel it.
            let handling =
                tokio::spawn(
                    async move { node.serve_peer_message(Some(from), message, &body).await },
                );
            let answer = handling
                .await
                .map_err(|_| lost("the receiver stopped while serving"))?;
            tokio::time::sleep(fate.back).await;
            if fate.answer_lost || links.is_cut(to, from) {
                links.count(true);
                return Err(lost("the answer was lost"));
            }
            links.count(false);
            answer.map_err(|refusal| PeerError::Refused {
                address: address.clone(),
                reason: refusal.to_string(),
            })
        })
    }
}

/// One node's disk and, while it runs, the node.
struct Slot {
    id: NodeId,
    fs: SimFs,
    dir: PathBuf,
    running: Option<(Arc<ClusterNode>, Node)>,
}

/// The nodes of a run, shared by the clients and the nemesis.
struct Cluster {
    slots: Mutex<Vec<Slot>>,
    network: SimNetwork,
    options: SimOptions,
    started: Instant,
    /// The last time [`Cluster::stamp`] gave.
    last_stamp: std::sync::atomic::AtomicU64,
    faults: Mutex<Vec<String>>,
    /// Counters of nodes that have stopped, summed.
    snapshots_installed: std::sync::atomic::AtomicU64,
    forwarded_writes: std::sync::atomic::AtomicU64,
    membership_changes: std::sync::atomic::AtomicU64,
    /// Reads and writes the clients have seen acknowledged so far (the
    /// report's counts).
    acknowledged_reads: std::sync::atomic::AtomicUsize,
    acknowledged_writes: std::sync::atomic::AtomicUsize,
    refused_writes: std::sync::atomic::AtomicUsize,
    bank: Mutex<BankTally>,
}

/// What the bank's transfers and reads found.
#[derive(Debug, Default)]
struct BankTally {
    transfers_applied: usize,
    reads: usize,
    faults: Vec<String>,
}

/// The bank's accounts, each opened with `bank::OPENING_BALANCE`.
const BANK_ACCOUNTS: u64 = 3;

fn bank_accounts() -> Vec<Bytes> {
    (0..BANK_ACCOUNTS)
        .map(|account| Bytes::from(format!("b{account}")))
        .collect()
}

/// What is wrong with one read of every account, if anything: the check of
/// `walrus verify`'s bank (`bank::read_fault`).
fn bank_read_fault(entries: &[Option<Entry>]) -> Option<String> {
    let balances: Vec<Option<i64>> = entries
        .iter()
        .map(|entry| {
            std::str::from_utf8(&entry.as_ref()?.value)
                .ok()?
                .parse()
                .ok()
        })
        .collect();
    bank::read_fault(&balances, BANK_ACCOUNTS).map(|fault| format!("{fault} in {balances:?}"))
}

/// The clients keep going past the run's duration, under the faults then in
/// place, until they have seen this many reads and this many writes
/// acknowledged (or the duration has passed twice over). A run on a loaded
/// machine with a lossy schedule can otherwise end having proved little.
const ACKNOWLEDGED_FLOOR: usize = 40;

impl Cluster {
    /// Whether the clients have seen enough acknowledged to stop.
    fn exercised_enough(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.acknowledged_reads.load(Relaxed) >= ACKNOWLEDGED_FLOOR
            && self.acknowledged_writes.load(Relaxed) >= ACKNOWLEDGED_FLOOR
    }
}

fn cluster_options(id: NodeId, peers: &BTreeMap<NodeId, String>) -> ClusterOptions {
    let mut options = ClusterOptions::new(id, peers[&id].clone());
    options.peers = peers.clone();
    options.heartbeat_ms = 50;
    options.election_timeout_ms = (150, 300);
    options.request_timeout = Duration::from_secs(1);
    // Snapshots and log purges happen often, so a node that was down or cut
    // off catches up by a snapshot install as well as by log entries.
    options.snapshot_every = 40;
    options.wal = WalOptions {
        segment_bytes: 32 << 10,
        // Every disk operation in a fixed order, so a seed replays the same run.
        spare: SpareSegment::OnDemand,
        ..WalOptions::default()
    };
    options
}

impl Cluster {
    fn ids(&self) -> Vec<NodeId> {
        (1..=self.options.nodes).collect()
    }

    /// Nanoseconds since the run began for an operation's call or return,
    /// strictly later than any stamp given before. On a paused clock many
    /// events share one instant; the checker reads a return and a call at
    /// the same time as ordered, so equal times would claim an order the run
    /// did not have. Stamps taken in the order events happen keep it.
    fn stamp(&self) -> u64 {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.started.elapsed().as_nanos() as u64;
        let next = |last: u64| now.max(last + 1);
        match self
            .last_stamp
            .fetch_update(SeqCst, SeqCst, |last| Some(next(last)))
        {
            Ok(last) | Err(last) => next(last),
        }
    }

    fn note(&self, fault: String) {
        let at = self.started.elapsed().as_millis();
        self.faults.lock().push(format!("{at:>6} ms  {fault}"));
    }

    fn peers(&self) -> BTreeMap<NodeId, String> {
        // Addresses are names only: the simulated network routes by id.
        self.ids()
            .into_iter()
            .map(|id| (id, format!("sim-node-{id}.invalid:7000")))
            .collect()
    }

    /// Starts node `id` on its disk (fresh or as a crash left it).
    async fn start(&self, id: NodeId) -> Result<(), String> {
        let (fs, dir) = {
            let slots = self.slots.lock();
            let slot = &slots[(id - 1) as usize];
            (slot.fs.clone(), slot.dir.clone())
        };
        fs.restart();
        let options = cluster_options(id, &self.peers());
        let transport: Arc<dyn PeerTransport> = Arc::new(self.network.clone());
        // The process's own handle: after a power cut, nothing it left
        // running can touch the disk the next process uses.
        let disk = Arc::new(fs.for_this_process());
        let node = ClusterNode::start_on(disk, &dir, options, Some(transport))
            .await
            .map_err(|error| format!("starting node {id}: {error}"))?;
        self.network.attach(&node);
        let front = Node::replicated(node.clone());
        self.slots.lock()[(id - 1) as usize].running = Some((node, front));
        Ok(())
    }

    /// Cuts node `id`'s power: what it had not synced is lost, its last
    /// unsynced write may be torn, and nothing it still holds reaches the
    /// disk again.
    async fn power_cut(&self, id: NodeId, rng: &mut StdRng) -> Result<(), String> {
        let (fs, running) = {
            let mut slots = self.slots.lock();
            let slot = &mut slots[(id - 1) as usize];
            (slot.fs.clone(), slot.running.take())
        };
        let Some((node, front)) = running else {
            return Ok(());
        };
        fs.crash(rng.random_bool(0.5));
        self.network.detach(id);
        // The dead process's Raft stops on its failing disk; shut it down so
        // its tasks end before a new process starts on the same disk.
        let _ = tokio::time::timeout(Duration::from_secs(5), node.shutdown()).await;
        self.keep_counters(&node);
        drop(front);
        let weak = Arc::downgrade(&node);
        drop(node);
        let deadline = Instant::now() + Duration::from_secs(5);
        while weak.strong_count() > 0 {
            if Instant::now() >= deadline {
                return Err(format!("node {id} still ran 5 s after its power cut"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Adds a stopping node's counters to the run's.
    fn keep_counters(&self, node: &ClusterNode) {
        use std::sync::atomic::Ordering::Relaxed;
        let counters = &node.counters;
        self.snapshots_installed
            .fetch_add(counters.snapshots_received.load(Relaxed), Relaxed);
        self.forwarded_writes
            .fetch_add(counters.forwarded_writes.load(Relaxed), Relaxed);
    }

    fn running(&self) -> Vec<(NodeId, Arc<ClusterNode>, Node)> {
        self.slots
            .lock()
            .iter()
            .filter_map(|slot| {
                let (node, front) = slot.running.as_ref()?;
                Some((slot.id, node.clone(), front.clone()))
            })
            .collect()
    }

    fn down(&self) -> Vec<NodeId> {
        self.slots
            .lock()
            .iter()
            .filter(|slot| slot.running.is_none())
            .map(|slot| slot.id)
            .collect()
    }

    fn leader(&self) -> Option<NodeId> {
        self.leader_node().map(|(id, _)| id)
    }

    /// The leader of the highest term: a leader that removed itself keeps
    /// believing it leads (the members refuse its messages), so more than
    /// one node may say so.
    fn leader_node(&self) -> Option<(NodeId, Arc<ClusterNode>)> {
        self.running()
            .into_iter()
            .filter(|(_, node, _)| node.is_leader())
            .max_by_key(|(_, node, _)| node.status().term)
            .map(|(id, node, _)| (id, node))
    }

    /// The leader, once its leadership is confirmed: a majority of the nodes
    /// name it leader in its term, and no running node is in a later term.
    /// A leader that was cut off and removed meanwhile still says it leads,
    /// and its view of the membership is stale: it must not be taken for
    /// the cluster's.
    fn confirmed_leader(&self) -> Option<(NodeId, Arc<ClusterNode>)> {
        let (id, leader) = self.leader_node()?;
        let term = leader.status().term;
        let statuses: Vec<_> = self
            .running()
            .iter()
            .map(|(_, node, _)| node.status())
            .collect();
        let agreeing = statuses
            .iter()
            .filter(|status| status.term == term && status.leader_id == Some(id))
            .count();
        let later = statuses.iter().any(|status| status.term > term);
        (agreeing * 2 > self.ids().len() && !later).then_some((id, leader))
    }

    /// One membership change through the leader, one at a time: a node
    /// that is not a voter is added back as a learner and promoted;
    /// otherwise, while every node runs, a voter (the leader too) is
    /// removed. A change that does not commit within 3 s (a partition) is
    /// left to the next attempt.
    async fn change_membership(&self, rng: &mut StdRng) -> Option<String> {
        let (_, leader) = self.leader_node()?;
        let voters = leader.status().voters;
        let address = |id: NodeId| self.peers()[&id].clone();
        let limit = Duration::from_secs(3);
        if let Some(&missing) = self.ids().iter().find(|id| !voters.contains(id)) {
            let added = tokio::time::timeout(limit, async {
                leader.add_learner(missing, address(missing)).await?;
                leader.promote(missing).await
            })
            .await;
            let outcome = self.count_change(added);
            return Some(format!("add node {missing} back and promote it: {outcome}"));
        }
        if !self.down().is_empty() || voters.len() < 3 {
            return None;
        }
        let victim = voters[rng.random_range(0..voters.len())];
        let removed = tokio::time::timeout(limit, leader.remove(victim)).await;
        let outcome = self.count_change(removed);
        Some(format!("remove node {victim} from the voters: {outcome}"))
    }

    fn count_change(
        &self,
        result: Result<crate::error::Result<()>, tokio::time::error::Elapsed>,
    ) -> String {
        match result {
            Ok(Ok(())) => {
                self.membership_changes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                "committed".into()
            }
            Ok(Err(error)) => format!("refused ({error})"),
            Err(_) => "not committed within 3 s".into(),
        }
    }

    /// Makes every node a voter again (after the nemesis removed one), so
    /// the end of the run can compare all of them; returns once the leader
    /// has applied a membership of every node, with no change under way (a
    /// removal proposed during a partition may commit late).
    async fn restore_membership(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((_, leader)) = self.confirmed_leader()
                && let Some(voters) = leader.settled_voters()
            {
                let Some(&missing) = self.ids().iter().find(|id| !voters.contains(id)) else {
                    return Ok(());
                };
                let address = self.peers()[&missing].clone();
                let added = tokio::time::timeout(Duration::from_secs(5), async {
                    leader.add_learner(missing, address).await?;
                    leader.promote(missing).await
                })
                .await;
                self.note(format!(
                    "restore node {missing} as a voter: {}",
                    self.count_change(added)
                ));
            }
            if Instant::now() >= deadline {
                let views: Vec<String> = self
                    .running()
                    .iter()
                    .map(|(id, node, _)| {
                        let status = node.status();
                        format!(
                            "node {id}: {} term {} voters {:?} learners {:?} settled {:?} \
                             applied {} last {}",
                            status.role,
                            status.term,
                            status.voters,
                            status.learners,
                            node.settled_voters(),
                            status.applied_index,
                            status.last_log_index
                        )
                    })
                    .collect();
                return Err(format!(
                    "the cluster's membership did not settle on every node within 30 s: {}\nfaults:\n{}",
                    views.join("; "),
                    self.faults.lock().join("\n")
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One client: picks a node and an operation at random, records what it saw.
async fn client(
    cluster: Arc<Cluster>,
    client_id: u64,
    seed: u64,
    deadline: Instant,
) -> Vec<Operation> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut history = Vec::new();
    let keys = cluster.options.keys;
    let hard_deadline = deadline + cluster.options.duration;
    for sequence in 0..cluster.options.max_ops_per_client {
        let now = Instant::now();
        if now >= hard_deadline || (now >= deadline && cluster.exercised_enough()) {
            break;
        }
        let running = cluster.running();
        if running.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let (node_id, _, front) = running[rng.random_range(0..running.len())].clone();
        let value = format!("c{client_id}-{sequence}");
        let invoked_ns = cluster.stamp();
        // One operation in six is on a counter: an increment, a read or a
        // delete (which starts the count again). Counters are never put or
        // swapped, since a swap guarded by a revision is one on a value only
        // while values are unique, and a counter's repeat.
        let (kind, on_counter) = match rng.random_range(0..136) {
            120..130 => {
                let fault = bank_transfer(&cluster, &front, &mut rng).await;
                cluster.bank.lock().faults.extend(fault);
                continue;
            }
            130..136 => {
                bank_read(&cluster, &front, node_id).await;
                continue;
            }
            0..40 => (OpKind::Get, false),
            40..70 => (OpKind::Put, false),
            70..80 => (OpKind::Delete, false),
            80..100 => (OpKind::Cas, false),
            100..110 => (OpKind::Incr, true),
            110..116 => (OpKind::Get, true),
            _ => (OpKind::Delete, true),
        };
        let key = if on_counter {
            format!("n{}", rng.random_range(0..counter_keys(keys)))
        } else {
            format!("k{}", rng.random_range(0..keys))
        };
        // A write refused as never proposed is not recorded (see
        // `SimReport::refused_writes`); the client goes on to its next one.
        macro_rules! submitted {
            ($command:expr) => {
                match submit(&cluster, &front, $command).await {
                    Ok(result) => result,
                    Err(NotApplied) => continue,
                }
            };
        }
        let (action, result) = if kind == OpKind::Incr {
            let command = Command::Redis(RedisCommand {
                db: 0,
                guards: Vec::new(),
                ops: vec![RedisOp::IncrBy {
                    key: Bytes::from(key.clone().into_bytes()),
                    delta: 1,
                }],
            });
            let result = submitted!(command);
            let value = match result.as_ref().and_then(|outcome| outcome.as_ref()) {
                Some(outcome) => match outcome.answers.first() {
                    Some(Answer::Integer(value)) => Some(*value),
                    _ => None,
                },
                None => None,
            };
            (
                Action::Incr { value },
                result.map(|outcome| outcome.map(|o| o.revision)),
            )
        } else if kind == OpKind::Get {
            let read = tokio::time::timeout(Duration::from_secs(3), async {
                front.read_barrier(Consistency::Linearizable).await?;
                Ok::<_, crate::Error>(front.store().get_entry(key.as_bytes()))
            })
            .await;
            match read {
                Ok(Ok(entry)) => {
                    let value = entry.map(|entry| text(&entry.value));
                    (Action::Get { value }, Some(None))
                }
                _ => (Action::Get { value: None }, None),
            }
        } else if kind == OpKind::Put {
            let command = Command::put(key.clone().into_bytes(), value.clone().into_bytes());
            let result = submitted!(command);
            (
                Action::Put { value },
                result.map(|outcome| outcome.map(|o| o.revision)),
            )
        } else if kind == OpKind::Delete {
            let result = submitted!(Command::delete(key.clone().into_bytes()));
            (
                Action::Delete,
                result.map(|outcome| outcome.map(|o| o.revision)),
            )
        } else {
            // Compare-and-swap on the revision of what a local (possibly
            // stale) read found: the guard holds exactly when the key still
            // holds that value, values being unique per write.
            let seen: Option<Entry> = front.store().get_entry(key.as_bytes());
            let guard = seen.as_ref().map_or(Guard::Absent, |entry| {
                Guard::ModRevision(entry.mod_revision)
            });
            let command = Command::Put {
                key: Bytes::from(key.clone().into_bytes()),
                value: Bytes::from(value.clone().into_bytes()),
                expires_at_ms: 0,
                guard,
            };
            let result = submitted!(command);
            let expected = seen.map(|entry| text(&entry.value));
            match result {
                Some(Some(outcome)) => (
                    Action::Cas {
                        expected,
                        value,
                        succeeded: outcome.succeeded,
                    },
                    Some(Some(outcome.revision)),
                ),
                _ => (
                    Action::Cas {
                        expected,
                        value,
                        succeeded: false,
                    },
                    None,
                ),
            }
        };
        let completed_ns = result.map(|_| cluster.stamp());
        // What the report counts as acknowledged: answered reads, and writes
        // that took effect (a compare-and-swap that failed wrote nothing).
        let acknowledged = match &action {
            _ if completed_ns.is_none() => None,
            Action::Get { .. } => Some(&cluster.acknowledged_reads),
            Action::Put { .. } | Action::Delete => Some(&cluster.acknowledged_writes),
            Action::Cas { succeeded, .. } => succeeded.then_some(&cluster.acknowledged_writes),
            Action::Incr { value } => value.is_some().then_some(&cluster.acknowledged_writes),
        };
        if let Some(counter) = acknowledged {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        history.push(Operation {
            client: client_id,
            key,
            action,
            invoked_ns,
            completed_ns,
            revision: result.flatten(),
            endpoint: format!("node {node_id}"),
        });
    }
    history
}

/// Moves 1–5 from one account to another with the command an EXEC under
/// WATCH logs: guarded on the debited account's revision as this node's
/// (possibly stale) state has it. A fault when it was applied although the
/// balance had changed since.
async fn bank_transfer(cluster: &Cluster, front: &Node, rng: &mut StdRng) -> Option<String> {
    let accounts = bank_accounts();
    let from = rng.random_range(0..BANK_ACCOUNTS) as usize;
    let to = (from + rng.random_range(1..BANK_ACCOUNTS) as usize) % accounts.len();
    let amount = rng.random_range(1..=5i64);
    let seen = front.store().get_entry(&accounts[from])?;
    let balance: i64 = std::str::from_utf8(&seen.value).ok()?.parse().ok()?;
    if balance < amount {
        return None;
    }
    let command = Command::Redis(RedisCommand {
        db: 0,
        guards: vec![(
            accounts[from].clone(),
            Guard::ModRevision(seen.mod_revision),
        )],
        ops: vec![
            RedisOp::IncrBy {
                key: accounts[from].clone(),
                delta: -amount,
            },
            RedisOp::IncrBy {
                key: accounts[to].clone(),
                delta: amount,
            },
        ],
    });
    let outcome = match submit(cluster, front, command).await {
        Ok(Some(Some(outcome))) if outcome.succeeded => outcome,
        _ => return None,
    };
    cluster.bank.lock().transfers_applied += 1;
    match outcome.answers.as_slice() {
        [Answer::Integer(after), Answer::Integer(_)] if *after == balance - amount => None,
        answers => Some(format!(
            "moving {amount} from b{from} (read as {balance} at revision {}) answered {answers:?}",
            seen.mod_revision
        )),
    }
}

/// Reads every account at one revision after a linearizable read barrier,
/// and notes a read that does not add up.
async fn bank_read(cluster: &Cluster, front: &Node, node_id: NodeId) {
    let read = tokio::time::timeout(Duration::from_secs(3), async {
        front.read_barrier(Consistency::Linearizable).await?;
        Ok::<_, crate::Error>(front.store().get_entries_at_revision(0, &bank_accounts()))
    })
    .await;
    if let Ok(Ok((revision, entries))) = read {
        let mut bank = cluster.bank.lock();
        bank.reads += 1;
        if let Some(fault) = bank_read_fault(&entries) {
            bank.faults
                .push(format!("{fault} on node {node_id} at revision {revision}"));
        }
    }
}

/// Opens the bank with one MSET through whichever node takes it.
async fn open_bank(cluster: &Cluster) -> Result<(), String> {
    let opening = Bytes::from(bank::OPENING_BALANCE.to_string());
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for (_, _, front) in cluster.running() {
            let command = Command::Redis(RedisCommand {
                db: 0,
                guards: Vec::new(),
                ops: vec![RedisOp::MSet {
                    pairs: bank_accounts()
                        .into_iter()
                        .map(|account| (account, opening.clone()))
                        .collect(),
                    only_if_none_exist: false,
                }],
            });
            if let Ok(Some(Some(_))) = submit(cluster, &front, command).await {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("no node took the MSET that opens the bank within 30 s".into())
}

/// How many counter keys (`n…`) go with `keys` registers (`k…`).
fn counter_keys(keys: usize) -> usize {
    keys.div_ceil(2).max(1)
}

/// Every key the clients use: the registers, then the counters.
fn all_keys(keys: usize) -> Vec<String> {
    (0..keys)
        .map(|key| format!("k{key}"))
        .chain((0..counter_keys(keys)).map(|key| format!("n{key}")))
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A write the cluster said it never proposed (see `SimReport::refused_writes`).
struct NotApplied;

/// Submits a write: `Some(Some(outcome))` when acknowledged, `None` when its
/// outcome is unknown (an error or a timeout: it may still apply). A refusal
/// as never proposed is counted in `cluster` and is not to be recorded.
async fn submit(
    cluster: &Cluster,
    front: &Node,
    command: Command,
) -> Result<Option<Option<crate::store::Outcome>>, NotApplied> {
    match tokio::time::timeout(Duration::from_secs(3), front.store().submit(command)).await {
        Ok(Ok(outcome)) => Ok(Some(Some(outcome))),
        Ok(Err(crate::Error::Unavailable { .. })) => {
            cluster
                .refused_writes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(NotApplied)
        }
        _ => Ok(None),
    }
}

/// Injects faults until `deadline`: partitions (a node isolated, the leader
/// isolated, a one-way cut, two nodes cut apart with a third bridging them),
/// heals, loss and delay changes, power cuts and
/// restarts. At most one node is down at a time, so a majority can make
/// progress between partitions.
async fn nemesis(cluster: Arc<Cluster>, seed: u64, deadline: Instant) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let ids = cluster.ids();
    loop {
        let pause = Duration::from_millis(rng.random_range(150..600));
        if Instant::now() + pause >= deadline {
            break;
        }
        tokio::time::sleep(pause).await;
        // The first steps change the membership until a change commits, so
        // every run has one whatever its timing; later ones at random.
        let changed = cluster
            .membership_changes
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0;
        let step = if changed { rng.random_range(0..11) } else { 8 };
        match step {
            0 => {
                let node = ids[rng.random_range(0..ids.len())];
                cluster.network.isolate(node, &ids);
                cluster.note(format!("isolate node {node}"));
            }
            1 => {
                if let Some(leader) = cluster.leader() {
                    cluster.network.isolate(leader, &ids);
                    cluster.note(format!("isolate the leader, node {leader}"));
                }
            }
            2 => {
                let from = ids[rng.random_range(0..ids.len())];
                let to = ids[rng.random_range(0..ids.len())];
                if from != to {
                    cluster.network.cut_one_way(from, to);
                    cluster.note(format!("cut node {from} -> node {to} (one way)"));
                }
            }
            10 => {
                // Half the time the leader is one side of the cut, so it
                // keeps a quorum only through the bridging node.
                let first = match cluster.leader() {
                    Some(leader) if rng.random_bool(0.5) => leader,
                    _ => ids[rng.random_range(0..ids.len())],
                };
                let others: Vec<NodeId> = ids.iter().copied().filter(|&id| id != first).collect();
                let second = others[rng.random_range(0..others.len())];
                cluster.network.cut_apart(first, second);
                cluster.note(format!(
                    "cut node {first} and node {second} apart (the others bridge them)"
                ));
            }
            3 | 4 => {
                cluster.network.heal();
                cluster.note("heal every link".into());
            }
            5 => {
                let quality = LinkQuality {
                    loss: [0.0, 0.02, 0.1][rng.random_range(0..3)],
                    max_delay_ms: [2, 10, 40][rng.random_range(0..3)],
                };
                cluster.network.set_quality(quality);
                cluster.note(format!(
                    "loss {:.0}%, delay up to {} ms",
                    quality.loss * 100.0,
                    quality.max_delay_ms
                ));
            }
            8 | 9 => {
                if let Some(change) = cluster.change_membership(&mut rng).await {
                    cluster.note(change);
                }
            }
            _ => {
                if let Some(&down) = cluster.down().first() {
                    cluster.start(down).await?;
                    cluster.note(format!("restart node {down}"));
                } else {
                    let node = ids[rng.random_range(0..ids.len())];
                    cluster.power_cut(node, &mut rng).await?;
                    cluster.note(format!("power-cut node {node}"));
                }
            }
        }
    }
    // The fault window is over. Clients that have not seen enough
    // acknowledged yet go on against a healed cluster: a schedule can leave
    // it without a quorum (one of two voters cut off or down) for the rest of
    // the window, which proves nothing more by lasting.
    if !cluster.exercised_enough() {
        cluster.network.heal();
        let mut healed = String::from("heal every link");
        for down in cluster.down() {
            cluster.start(down).await?;
            healed.push_str(&format!(", restart node {down}"));
        }
        cluster.note(format!("{healed} (the fault window is over)"));
    }
    Ok(())
}

/// Cuts one follower off and writes until every other node has purged its
/// log past where that follower stopped (at least 150 writes, at most 1,000),
/// then heals: the follower must catch up from a snapshot streamed to it, so
/// every run sends and installs one. The writes are in the history like any
/// client's.
async fn lag_one_node_past_the_log(
    cluster: &Cluster,
    client_id: u64,
) -> Result<Vec<Operation>, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        if let Some(leader) = cluster.leader() {
            break leader;
        }
        if Instant::now() >= deadline {
            return Err("no leader after the faults healed".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let running = cluster.running();
    let node = |wanted: NodeId| {
        running
            .iter()
            .find(|(id, _, _)| *id == wanted)
            .map(|(_, node, front)| (node.clone(), front.clone()))
    };
    let Some(lagging) = running
        .iter()
        .map(|(id, _, _)| *id)
        .find(|&id| id != leader)
    else {
        return Ok(Vec::new());
    };
    let (lagging_node, _) = node(lagging).ok_or("the follower stopped")?;
    cluster.network.isolate(lagging, &cluster.ids());
    let stopped_at = lagging_node.status().last_log_index;
    let mut history = Vec::new();
    // Any other node may lead after the restarts that follow, so each must
    // have purged past the lagging one.
    let others: Vec<Arc<ClusterNode>> = running
        .iter()
        .filter(|(id, _, _)| *id != lagging)
        .map(|(_, node, _)| node.clone())
        .collect();
    for sequence in 0..1_000 {
        let purged = others
            .iter()
            .map(|node| node.status().purged_index)
            .min()
            .unwrap_or(0);
        if (sequence >= 150 && purged > stopped_at) || Instant::now() >= deadline {
            break;
        }
        // Leadership can move among the others while this runs (a loaded
        // machine misses heartbeats): each write goes to whoever leads now.
        let Some((leader, front)) = cluster
            .leader_node()
            .filter(|(id, _)| *id != lagging)
            .and_then(|(id, _)| node(id).map(|(_, front)| (id, front)))
        else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let key = format!("k{}", sequence % cluster.options.keys);
        let value = format!("lag-{sequence}");
        let invoked_ns = cluster.stamp();
        let command = Command::put(key.clone().into_bytes(), value.clone().into_bytes());
        let Ok(result) = submit(cluster, &front, command).await else {
            continue;
        };
        history.push(Operation {
            client: client_id,
            key,
            action: Action::Put { value },
            invoked_ns,
            completed_ns: result.as_ref().map(|_| cluster.stamp()),
            revision: result.flatten().map(|outcome| outcome.revision),
            endpoint: format!("node {leader}"),
        });
    }
    let purged = others
        .iter()
        .map(|node| node.status().purged_index)
        .min()
        .unwrap_or(0);
    cluster.note(format!(
        "isolated node {lagging} (at index {stopped_at}) while {} writes went in; the others purged their logs to {purged} at least",
        history.len(),
    ));
    cluster.network.heal();
    cluster.note("heal every link".into());
    Ok(history)
}

/// Waits until a leader is known and every node has applied all the
/// leader's log; then reads every key through every node.
async fn settle_and_read(cluster: &Cluster, client_base: u64) -> Result<Vec<Operation>, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running = cluster.running();
        let leader_last = running
            .iter()
            .find(|(_, node, _)| node.is_leader())
            .map(|(_, node, _)| node.status().last_log_index);
        if let Some(last) = leader_last
            && running
                .iter()
                .all(|(_, node, _)| node.status().applied_index >= last)
        {
            break;
        }
        if Instant::now() >= deadline {
            let states: Vec<String> = running
                .iter()
                .map(|(id, node, _)| {
                    let status = node.status();
                    format!(
                        "node {id}: {} term {} applied {} last {}, voters {:?} learners {:?}",
                        status.role,
                        status.term,
                        status.applied_index,
                        status.last_log_index,
                        status.voters,
                        status.learners
                    )
                })
                .collect();
            let faults = cluster.faults.lock();
            let recent = &faults[faults.len().saturating_sub(12)..];
            return Err(format!(
                "the cluster did not settle within 30 s: {}; the last faults:\n{}",
                states.join("; "),
                recent.join("\n")
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut reads = Vec::new();
    for (id, _, front) in cluster.running() {
        bank_read(cluster, &front, id).await;
        for key in all_keys(cluster.options.keys) {
            let invoked_ns = cluster.stamp();
            front
                .read_barrier(Consistency::Linearizable)
                .await
                .map_err(|error| format!("final read on node {id}: {error}"))?;
            let value = front
                .store()
                .get_entry(key.as_bytes())
                .map(|entry| text(&entry.value));
            reads.push(Operation {
                client: client_base + id,
                key,
                action: Action::Get { value },
                invoked_ns,
                completed_ns: Some(cluster.stamp()),
                revision: None,
                endpoint: format!("node {id} (final read)"),
            });
        }
    }
    Ok(reads)
}

/// One node's view at the end: its id, applied index and each key's entry
/// (value and revision).
type NodeView = (NodeId, u64, Vec<Option<(String, u64)>>);

/// Every node's entries and applied revision must be the same.
fn divergence(cluster: &Cluster) -> Option<String> {
    let mut keys = all_keys(cluster.options.keys);
    keys.extend(bank_accounts().iter().map(|account| text(account)));
    let views: Vec<NodeView> = cluster
        .running()
        .into_iter()
        .map(|(id, node, front)| {
            let entries = keys
                .iter()
                .map(|key| {
                    front
                        .store()
                        .get_entry(key.as_bytes())
                        .map(|entry| (text(&entry.value), entry.mod_revision))
                })
                .collect();
            (id, node.status().applied_index, entries)
        })
        .collect();
    let (first_id, first_applied, first_entries) = views.first()?;
    for (id, applied, entries) in &views[1..] {
        if applied != first_applied || entries != first_entries {
            return Some(format!(
                "node {first_id} (applied {first_applied}): {first_entries:?}; node {id} (applied {applied}): {entries:?}"
            ));
        }
    }
    None
}

/// Every node of `options` started on a fresh simulated disk.
async fn start_cluster(options: &SimOptions) -> Result<Arc<Cluster>, String> {
    let seed = options.seed;
    let network = SimNetwork::new(seed ^ 0x006e_6574_776f_726b);
    let slots = (1..=options.nodes)
        .map(|id| Slot {
            id,
            fs: SimFs::new(seed.wrapping_mul(31).wrapping_add(id)),
            dir: PathBuf::from(format!("/sim/node-{id}")),
            running: None,
        })
        .collect::<Vec<_>>();
    for slot in &slots {
        crate::storage::FileSystem::create_dir_all(&slot.fs, &slot.dir)
            .map_err(|error| format!("simulated disk: {error}"))?;
    }
    let cluster = Arc::new(Cluster {
        slots: Mutex::new(slots),
        network: network.clone(),
        options: options.clone(),
        started: Instant::now(),
        last_stamp: Default::default(),
        faults: Mutex::new(Vec::new()),
        snapshots_installed: Default::default(),
        forwarded_writes: Default::default(),
        membership_changes: Default::default(),
        acknowledged_reads: Default::default(),
        acknowledged_writes: Default::default(),
        refused_writes: Default::default(),
        bank: Mutex::new(BankTally::default()),
    });
    for id in cluster.ids() {
        cluster.start(id).await?;
    }
    Ok(cluster)
}

/// Runs one seeded simulation; see the module documentation.
pub async fn run(options: SimOptions) -> Result<SimReport, String> {
    let seed = options.seed;
    let cluster = start_cluster(&options).await?;
    open_bank(&cluster).await?;
    let network = cluster.network.clone();
    let deadline = Instant::now() + options.duration;
    let clients: Vec<_> = (0..options.clients)
        .map(|client_id| {
            let seed = seed.wrapping_mul(1_000_003).wrapping_add(client_id);
            tokio::spawn(client(cluster.clone(), client_id, seed, deadline))
        })
        .collect();
    let nemesis_result = nemesis(cluster.clone(), seed.rotate_left(17), deadline).await;
    let mut history = Vec::new();
    for handle in clients {
        history.extend(
            handle
                .await
                .map_err(|error| format!("a client panicked: {error}"))?,
        );
    }
    nemesis_result?;

    // The end: every link heals, then every node loses power at once.
    network.heal();
    network.set_quality(LinkQuality {
        loss: 0.0,
        max_delay_ms: 2,
    });
    for down in cluster.down() {
        cluster.start(down).await?;
        cluster.note(format!("restart node {down}"));
    }
    cluster.restore_membership().await?;
    history.extend(lag_one_node_past_the_log(&cluster, options.clients + 2_000).await?);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x0070_6f77_6572);
    for id in cluster.ids() {
        cluster.power_cut(id, &mut rng).await?;
    }
    cluster.note("power-cut every node at once".into());
    for id in cluster.ids() {
        cluster.start(id).await?;
    }
    cluster.note("restart every node".into());
    let final_reads = settle_and_read(&cluster, options.clients + 1_000).await?;
    history.extend(final_reads);
    let divergence = divergence(&cluster);
    for id in cluster.ids() {
        let running = cluster.slots.lock()[(id - 1) as usize].running.take();
        if let Some((node, _)) = running {
            cluster.network.detach(id);
            node.shutdown().await;
            cluster.keep_counters(&node);
        }
    }
    let verdicts = check_all(&history, 2_000_000);
    let faults = std::mem::take(&mut *cluster.faults.lock());
    let bank = std::mem::take(&mut *cluster.bank.lock());
    Ok(SimReport {
        seed,
        history,
        verdicts,
        faults,
        acknowledged_writes: cluster
            .acknowledged_writes
            .load(std::sync::atomic::Ordering::Relaxed),
        acknowledged_reads: cluster
            .acknowledged_reads
            .load(std::sync::atomic::Ordering::Relaxed),
        refused_writes: cluster
            .refused_writes
            .load(std::sync::atomic::Ordering::Relaxed),
        delivered: network
            .links
            .delivered
            .load(std::sync::atomic::Ordering::Relaxed),
        lost: network
            .links
            .lost
            .load(std::sync::atomic::Ordering::Relaxed),
        snapshots_installed: cluster
            .snapshots_installed
            .load(std::sync::atomic::Ordering::Relaxed),
        forwarded_writes: cluster
            .forwarded_writes
            .load(std::sync::atomic::Ordering::Relaxed),
        membership_changes: cluster
            .membership_changes
            .load(std::sync::atomic::Ordering::Relaxed),
        divergence,
        bank_transfers_applied: bank.transfers_applied,
        bank_reads: bank.reads,
        bank_faults: bank.faults,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::ChangeMembers;

    fn balances(values: &[Option<&str>]) -> Vec<Option<Entry>> {
        values
            .iter()
            .map(|value| {
                value.map(|value| Entry {
                    value: Bytes::from(value.to_string()),
                    mod_revision: 1,
                    expires_at_ms: 0,
                    accessed: Default::default(),
                })
            })
            .collect()
    }

    #[test]
    fn a_bank_read_must_be_whole_and_add_up() {
        assert_eq!(
            bank_read_fault(&balances(&[Some("10"), Some("10"), Some("10")])),
            None
        );
        assert_eq!(
            bank_read_fault(&balances(&[Some("3"), Some("17"), Some("10")])),
            None
        );
        // Half a transfer: the debit without its credit.
        assert!(bank_read_fault(&balances(&[Some("7"), Some("10"), Some("10")])).is_some());
        assert!(bank_read_fault(&balances(&[Some("-1"), Some("21"), Some("10")])).is_some());
        assert!(bank_read_fault(&balances(&[None, Some("20"), Some("10")])).is_some());
        assert!(bank_read_fault(&balances(&[Some("x"), Some("20"), Some("10")])).is_some());
    }

    /// A leader restarted with its vote intact must not answer a
    /// linearizable read from its commit index on disk: that is only a hint,
    /// written with the next batch of records, so it lags the last write
    /// acknowledged before the restart. openraft's default restores such a
    /// node as leader of the same term, with no new entry of its own to
    /// commit; its read index was then the stale hint.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_restarted_in_place_reads_the_last_write_it_acknowledged() {
        let cluster = start_cluster(&SimOptions::new(11)).await.expect("cluster");
        let mut rng = StdRng::seed_from_u64(11);
        for round in 0..5 {
            let (leader, front) = leader_front(&cluster).await;
            let value = format!("v{round}");
            let command = Command::put(b"k".to_vec(), value.clone().into_bytes());
            submit(&cluster, &front, command)
                .await
                .ok()
                .flatten()
                .flatten()
                .expect("the write is acknowledged");
            drop(front);
            cluster
                .power_cut(leader, &mut rng)
                .await
                .expect("power cut");
            cluster.start(leader).await.expect("restart");
            let (_, front) = leader_front(&cluster).await;
            front
                .read_barrier(Consistency::Linearizable)
                .await
                .expect("read barrier");
            let read = front
                .store()
                .get_entry(b"k")
                .map(|entry| text(&entry.value));
            assert_eq!(read.as_deref(), Some(value.as_str()), "round {round}");
        }
        for id in cluster.ids() {
            let running = cluster.slots.lock()[(id - 1) as usize].running.take();
            if let Some((node, _)) = running {
                node.shutdown().await;
            }
        }
    }

    /// The front of the node that leads, once one does.
    async fn leader_front(cluster: &Cluster) -> (NodeId, Node) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let leader = cluster
                .running()
                .into_iter()
                .find(|(_, node, _)| node.is_leader());
            if let Some((id, _, front)) = leader {
                return (id, front);
            }
            assert!(Instant::now() < deadline, "no leader within 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A membership change whose caller vanished after the joint
    /// configuration was proposed (as when a leader stops between the two
    /// entries) is completed by the leader on its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_membership_change_left_half_made_is_completed_by_the_leader() {
        let cluster = start_cluster(&SimOptions::new(99)).await.expect("cluster");
        // An attempt needs the same leader from start to end; on a loaded
        // machine an election may intervene, and the attempt is made again.
        let mut attempt = 0;
        let (leader, victim) = loop {
            attempt += 1;
            assert!(attempt <= 10, "no attempt kept one leader throughout");
            cluster.network.heal();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let Some((leader_id, leader)) = cluster.leader_node() else {
                continue;
            };
            if leader.settled_voters().map(|voters| voters.len()) != Some(3) {
                continue;
            }
            let victim = cluster
                .ids()
                .into_iter()
                .find(|id| *id != leader_id)
                .expect("a follower");
            // The followers' answers to the leader are cut: they receive the
            // joint configuration, and the leader has it in effect, but
            // cannot commit it, so the call proposing it is still waiting
            // when it is aborted (as if its leader had stopped between the
            // two entries).
            for id in cluster.ids().into_iter().filter(|id| *id != leader_id) {
                cluster.network.cut_one_way(id, leader_id);
            }
            // openraft's own call, which proposes the second entry only if it
            // is still running when the first commits.
            let raft = leader.raft().clone();
            let change = tokio::spawn(async move {
                raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([victim])), false)
                    .await
            });
            let deadline = Instant::now() + Duration::from_secs(3);
            while leader.settled_voters().is_some()
                && !change.is_finished()
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let joint = leader.settled_voters().is_none() && leader.is_leader();
            change.abort();
            let _ = change.await;
            cluster.network.heal();
            if joint {
                break (leader, victim);
            }
        };
        // The aborted caller never proposes the final configuration; the
        // leader's housekeeping does.
        let deadline = Instant::now() + Duration::from_secs(10);
        let voters = loop {
            if let Some(voters) = leader.settled_voters() {
                break voters;
            }
            assert!(
                Instant::now() < deadline,
                "the leader left the joint configuration in place"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            !voters.contains(&victim),
            "the change went where it was heading: {voters:?}"
        );
        assert_eq!(voters.len(), 2);
        for id in cluster.ids() {
            let running = cluster.slots.lock()[(id - 1) as usize].running.take();
            if let Some((node, _)) = running {
                node.shutdown().await;
            }
        }
    }
}
