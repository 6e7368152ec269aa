//! One replicated node: its Raft instance, its state machine, and the calls the
//! node layer makes of it.
//!
//! - Writes go to the leader: on the leader straight into Raft's queue, each
//!   answered by its entry's `Replier` once applied (no task per write); on a
//!   follower forwarded over the peer port, coalesced with the other writes
//!   waiting into `/raft/forward-batch` requests (`forward.rs`). A forward that
//!   provably sent nothing (connection refused) is retried against the next
//!   leader; one that may have arrived is not, and reports an unknown outcome.
//! - Linearizable reads use the read index: the leader confirms its leadership
//!   with a quorum and names its commit index; this node waits until it has
//!   applied that far, then reads locally. No lease, so a paused old leader
//!   cannot serve a stale read when it wakes.
//! - Every wait is bounded by the request timeout, after which the caller gets
//!   [`Error::Unavailable`].
//! - A node stops short of a full disk (`space.rs`): a leader short of space
//!   hands leadership over or refuses writes that add data, a follower
//!   refuses such entries and falls behind, and housekeeping snapshots only
//!   with room for it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, LinearizableReadError, RaftError};
use openraft::raft::{AppendEntriesRequest, ClientWriteResult};
use openraft::{BasicNode, ChangeMembers, Config, ReadPolicy, ServerState};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::broadcast::{Broadcaster, Published};
use super::fault::FaultSwitch;
use super::formats::{MemberFormats, OLDEST_FORMAT};
use super::forward::{
    ForwardAnswer, ForwardQueue, Forwarded, LeaderMoved, leader_left, unless_leader_moved,
};
use super::joining::Joining;
use super::log_store::{HeldBytes, LogStore};
use super::network::{
    ChunkAnswer, ConfirmedLogs, Peer, PeerError, PeerIdentity, PeerNetworkFactory, PeerTls,
    PeerTransport, SnapshotChunk,
};
use super::reach::{self, ReachWatch};
use super::space::DiskSpace;
use super::state_machine::{SnapshotData, StateMachine, snapshot_position};
use super::{LogEntry, LogId, NodeId, Proposal, Raft, Replier, TypeConfig, Vote};
use crate::error::{Error, Result};
use crate::storage::data_dir::DataDir;
use crate::storage::fs::WritableFile;
use crate::storage::snapshot::SnapshotStreamCheck;
use crate::storage::{FileSystem, StdFs, WalOptions};
use crate::store::{FsyncPolicy, Outcome, State};

/// How a replicated node runs. Each field is a `walrus serve` flag.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub node_id: NodeId,
    /// The address peers and forwarded requests reach this node at (its HTTP
    /// `--listen` address).
    pub advertise: String,
    /// The initial members, `id → address`; empty for a node that waits to be
    /// added to an existing cluster.
    pub peers: BTreeMap<NodeId, String>,
    pub fsync: FsyncPolicy,
    pub wal: WalOptions,
    /// Bearer token peers send and check (the client token).
    pub token: Option<String>,
    /// How long a request waits for a leader and a quorum (default 5 s).
    pub request_timeout: Duration,
    /// Leader heartbeat (default 100 ms) and election timeout range (default
    /// 500–1000 ms): on loopback or a LAN, a dead leader is replaced within
    /// about a second.
    pub heartbeat_ms: u64,
    pub election_timeout_ms: (u64, u64),
    /// Entries applied between automatic snapshots (default 50,000).
    pub snapshot_every: u64,
    /// Also snapshot once the log's entries in memory have grown by this
    /// many bytes since the last snapshot (default 64 MiB), so large
    /// values cannot fill memory before `snapshot_every` entries.
    pub snapshot_log_bytes: u64,
    /// Whether the partition switch (`/fault/…`) exists: tests only.
    pub fault_injection: bool,
    /// Set when the node serves TLS: peers are reached over https, trusting
    /// this connector's CA.
    pub peer_tls: Option<PeerTls>,
    /// How much change history watchers can resume from.
    pub watch_history: crate::store::changes::FeedLimits,
    /// Free disk space kept beyond room for a snapshot (`space.rs`).
    pub min_free_space: u64,
    /// The newest command format this node says it reads and proposes
    /// (`formats.rs`): this build's [`crate::store::COMMAND_FORMAT`], lower
    /// only for tests that play an older member.
    pub command_format: u32,
    /// Where the Raft log's slow syncs are recorded (the node's LATENCY
    /// monitor).
    pub latency: Arc<crate::latency_monitor::LatencyMonitor>,
}

impl ClusterOptions {
    pub fn new(node_id: NodeId, advertise: String) -> ClusterOptions {
        ClusterOptions {
            node_id,
            advertise,
            peers: BTreeMap::new(),
            fsync: FsyncPolicy::Always,
            wal: WalOptions::default(),
            token: None,
            request_timeout: Duration::from_secs(5),
            heartbeat_ms: 100,
            election_timeout_ms: (500, 1000),
            snapshot_every: 50_000,
            snapshot_log_bytes: 64 << 20,
            fault_injection: false,
            peer_tls: None,
            watch_history: Default::default(),
            min_free_space: super::space::DEFAULT_MIN_FREE_BYTES,
            command_format: crate::store::COMMAND_FORMAT,
            latency: Arc::default(),
        }
    }
}

/// Parses `1=127.0.0.1:8081,2=127.0.0.1:8082`.
pub fn parse_peers(text: &str) -> std::result::Result<BTreeMap<NodeId, String>, String> {
    let mut peers = BTreeMap::new();
    for item in text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let (id, address) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?}: expected ID=HOST:PORT"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| format!("{item:?}: the node id must be a number"))?;
        if address.trim().is_empty() {
            return Err(format!("{item:?}: the address is empty"));
        }
        if peers.insert(id, address.trim().to_string()).is_some() {
            return Err(format!("node id {id} appears twice"));
        }
    }
    Ok(peers)
}

/// How long `add_learner` waits for the new learner to catch up (it may
/// receive a large snapshot first). `walrus cluster add-learner` waits
/// longer, so the server's answer reaches it.
pub const LEARNER_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a peer message was not served; the HTTP route maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum PeerRefusal {
    /// The sender is not a member of this cluster (403).
    #[error("peer messages are accepted only from members of this cluster")]
    NotMember,
    /// The fault-injection switch cuts this node off from the sender (503).
    #[error("cut off from the sender by fault injection")]
    Partitioned,
    /// The body does not decode as the message named (400).
    #[error("peer message does not decode: {0}")]
    BadBody(String),
    /// Raft cannot take the message now, e.g. it is shutting down (503).
    #[error("{0}")]
    Unavailable(String),
    /// A snapshot chunk out of order, or an install that failed (409).
    #[error("{0}")]
    SnapshotRejected(String),
    /// No such message (404).
    #[error("no such peer message")]
    UnknownMessage,
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> std::result::Result<T, PeerRefusal> {
    postcard::from_bytes(body).map_err(|error| PeerRefusal::BadBody(error.to_string()))
}

fn encode<T: Serialize>(value: &T) -> std::result::Result<Vec<u8>, PeerRefusal> {
    postcard::to_stdvec(value).map_err(|error| PeerRefusal::Unavailable(error.to_string()))
}

/// A node's view of the cluster, for `/cluster/status` and `/metrics`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node_id: NodeId,
    pub role: String,
    pub term: u64,
    pub leader_id: Option<NodeId>,
    pub leader_address: Option<String>,
    pub last_log_index: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    /// The log is purged up to here (entries before it exist only in the
    /// snapshot); a follower behind it catches up from a snapshot.
    #[serde(default)]
    pub purged_index: u64,
    /// Memory the log's unpurged entries take, about.
    #[serde(default)]
    pub log_bytes_in_memory: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub nodes: BTreeMap<NodeId, String>,
    /// On the leader: each follower's matched index.
    pub replication: BTreeMap<NodeId, u64>,
    /// Free bytes on the data directory's disk, as last estimated.
    #[serde(default)]
    pub disk_free_bytes: u64,
    /// What a leader keeps free before it refuses writes that add data:
    /// `--min-free-space` plus room for a snapshot (`space.rs`).
    #[serde(default)]
    pub disk_kept_free_bytes: u64,
    /// Whether this node refused its leader's last entries for want of space.
    #[serde(default)]
    pub refusing_entries: bool,
    /// The newest command format this node reads (`formats.rs`); a node
    /// older than the field reads format 1.
    #[serde(default = "oldest_format")]
    pub command_format: u32,
    /// The newest command format every member reads, as this node last
    /// heard (1 while a member has not said): newer commands wait for it.
    #[serde(default = "oldest_format")]
    pub cluster_command_format: u32,
}

fn oldest_format() -> u32 {
    OLDEST_FORMAT
}

/// Counters the node publishes in `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterCounters {
    pub forwarded_writes: std::sync::atomic::AtomicU64,
    pub forwarded_reads: std::sync::atomic::AtomicU64,
    pub snapshots_received: std::sync::atomic::AtomicU64,
    /// Times this node, leading, handed leadership over because its disk ran
    /// short of space.
    pub handovers_for_space: std::sync::atomic::AtomicU64,
    /// Times this node, leading, handed leadership over because too few
    /// voters could reach it (`reach.rs`).
    pub handovers_unreached: std::sync::atomic::AtomicU64,
}

/// Read barriers waiting for the next read-index request.
#[derive(Default)]
struct ReadBatch {
    running: bool,
    waiting: Vec<tokio::sync::oneshot::Sender<std::result::Result<u64, String>>>,
}

/// A snapshot being received: from which leader vote, up to which entry, the
/// file its bytes go to (absent only while a write is in flight) and how
/// many bytes have arrived.
struct IncomingSnapshot {
    vote: Vote,
    last_log_id: Option<LogId>,
    path: PathBuf,
    file: Option<Box<dyn WritableFile>>,
    received: u64,
    /// The bytes so far, checked as they arrive.
    check: SnapshotStreamCheck,
}

impl IncomingSnapshot {
    /// Whether the snapshot's own extra block names the position the leader
    /// said it covers.
    fn check_position(&self, meta: &super::SnapshotMeta) -> std::result::Result<(), String> {
        let Some((_, extra)) = self.check.head() else {
            return Err("the snapshot ended before its header".into());
        };
        let position = snapshot_position(extra)?;
        if position == meta.last_log_id {
            Ok(())
        } else {
            Err(format!(
                "the snapshot covers {position:?}, not {:?} as its metadata says",
                meta.last_log_id
            ))
        }
    }
}

/// Runs disk work off the async runtime; an error becomes its message.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::result::Result<T, String> {
    crate::deterministic::off_runtime(work)
        .await
        .map_err(|error| error.to_string())?
        .map_err(|error| format!("writing the incoming snapshot: {error}"))
}

pub struct ClusterNode {
    id: NodeId,
    /// Pub/Sub messages on their way to the other members.
    broadcaster: Broadcaster,
    raft: Raft,
    machine: StateMachine,
    options: ClusterOptions,
    peers: Mutex<HashMap<NodeId, Arc<Peer>>>,
    /// One membership change at a time.
    membership_lock: tokio::sync::Mutex<()>,
    pub counters: ClusterCounters,
    /// The highest commit index this node has heard of, for `/ready`.
    heard_commit: RwLock<u64>,
    /// The highest commit index a leader has sent this node, with its appends
    /// and heartbeats.
    leader_commit: AtomicU64,
    /// A commit index this node was found behind of by the housekeeping task,
    /// and since when; cleared once it has applied that far. A node that
    /// stays behind past [`CATCH_UP_GRACE`] (it cannot take the leader's
    /// entries or snapshot) is not ready.
    behind: Mutex<Option<Behind>>,
    /// A snapshot arriving in chunks: which one (vote, last log index) and
    /// the bytes so far.
    incoming_snapshot: tokio::sync::Mutex<Option<IncomingSnapshot>>,
    read_batch: Mutex<ReadBatch>,
    /// Writes waiting to be forwarded to the leader, sent in batches.
    forwarding: Arc<ForwardQueue>,
    /// Resolves once another node than the one given is known to lead: a
    /// request to the old leader still unanswered then is given up.
    leader_moved: LeaderMoved,
    /// How this node identifies itself to peers, with the partition switch.
    identity: PeerIdentity,
    /// Memory the log's entries take (the size-based snapshot trigger).
    log_bytes: HeldBytes,
    /// Why Raft stopped for good on this node (a storage failure), once the
    /// housekeeping task has seen it; `None` while it runs or after a clean
    /// shutdown.
    fatal: Mutex<Option<String>>,
    /// Free space on the data directory's disk, the room a snapshot would
    /// take, and the floors they are held to.
    space: DiskSpace,
    /// Whether this node was refusing its leader's entries for want of space
    /// at the last append, so the change is logged once.
    refusing_entries: AtomicBool,
    /// When this node last handed leadership over for want of space.
    handed_over: Mutex<Option<Instant>>,
    /// On the leader, the asks of whether voters reach it (`reach.rs`).
    reach: ReachWatch,
    /// Set by the housekeeping task from when it asks for a snapshot to
    /// give disk space back until the log behind it is purged (or that
    /// failed): writes refused for want of space meanwhile wait for it.
    compacting_for_space: AtomicBool,
    /// What the other voters said of their disks when this node, near its
    /// floor, last asked: a handover goes only to one with room to lead.
    peer_disks: Mutex<Option<PeerDisks>>,
    /// Which command formats the other members read (`formats.rs`).
    formats: MemberFormats,
    /// Whether this node still joins with a log short of its cluster's
    /// (`joining.rs`): it votes for no one until it has caught up.
    joining: Arc<Joining>,
    /// What each peer confirmed holding to this node as leader (the peer
    /// network's record, `network::ConfirmedLogs`).
    confirmed: ConfirmedLogs,
    _data_dir: DataDir,
}

/// Why a leader does not propose a write (see `ClusterNode::admit`).
enum Refusal {
    /// Leadership is going to another member: wait for it.
    HandingOver,
    /// The disk is short of space and no other member takes over (a
    /// compaction may be about to give space back: `admit_waiting` waits
    /// for it).
    DiskLow(String),
}

/// How long a write refused for want of space waits at most for a
/// compaction the housekeeping task is expected to start at its next tick
/// (less near the request's deadline; one already started is waited for
/// until then).
const COMPACTION_WAIT_AT_MOST: Duration = Duration::from_secs(2);

/// How often a write waiting for a compaction asks again.
const COMPACTION_WAIT_STEP: Duration = Duration::from_millis(20);

/// Until when a write refused for want of space, first refused at
/// `asked_at`, waits for a compaction: for one `under_way`, as long as the
/// request may wait (compacting a large log can take longer than any fixed
/// bound); for one only expected, [`COMPACTION_WAIT_AT_MOST`]. Both end a
/// few steps before `deadline`, so the refusal is still answered in time.
fn wait_for_compaction_until(under_way: bool, asked_at: Instant, deadline: Instant) -> Instant {
    let last_chance = deadline
        .checked_sub(COMPACTION_WAIT_STEP * 5)
        .unwrap_or(deadline);
    match under_way {
        true => last_chance,
        false => last_chance.min(asked_at + COMPACTION_WAIT_AT_MOST),
    }
}

/// How long writes wait for a handover of leadership before they are
/// refused, and how often a leader short of space hands over at most.
const HANDOVER_TAKES: Duration = Duration::from_secs(1);
const HANDOVER_AT_MOST_EVERY: Duration = Duration::from_secs(60);

/// A member's disk as it answers the `disk-room` peer message.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct DiskRoom {
    pub free_bytes: u64,
    /// What it would keep free as leader (`DiskSpace::propose_floor`).
    pub kept_free_bytes: u64,
}

impl DiskRoom {
    /// Whether leadership is worth handing to this member: it has a quarter
    /// more free than it would keep as leader. Under a steady load every
    /// disk nears its floor together, and a follower only just above its own
    /// (it lags the leader by a few writes) would be short again at once.
    fn could_lead(&self) -> bool {
        self.free_bytes
            >= self
                .kept_free_bytes
                .saturating_add(self.kept_free_bytes / 4)
    }
}

/// The other voters' disks as a node near its floor last heard of them.
struct PeerDisks {
    asked: Instant,
    /// Each voter that answered; one that did not is left out, and counts
    /// as having room (it may be an older walrus, or slow to answer).
    rooms: BTreeMap<NodeId, DiskRoom>,
}

/// How long what the other voters said of their disks stands.
const PEER_DISKS_STAND_FOR: Duration = Duration::from_secs(2);

/// A node asks the other voters about their disks once its free space is
/// under this multiple of its floor, so it knows before it has to hand over.
const ASK_PEER_DISKS_UNDER_FLOOR_TIMES: u64 = 2;

/// How long a node may stay behind a commit index its leader sent before
/// `/ready` says it is catching up. Under load a follower is always a few
/// entries behind for a moment; one that cannot take the leader's entries
/// stays behind.
const CATCH_UP_GRACE: Duration = Duration::from_secs(2);

/// A commit index this node was found behind of (see `ClusterNode::behind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Behind {
    target: u64,
    /// When the node fell behind: when `target` was noted, or, while it
    /// catches up from further back one target after another, when the
    /// first of them was.
    since: Instant,
    /// Housekeeping ticks since `target` was noted that found the node still
    /// short of it.
    ticks_short: u32,
}

/// A node that took at least this many ticks to reach a target is catching
/// up from further back, not keeping up under load: its next target counts
/// from when it first fell behind. One that keeps up reaches each target by
/// the next tick.
const SLOW_TO_REACH_TICKS: u32 = 2;

/// What `ClusterNode::behind` becomes once this node has applied up to
/// `applied` and heard of `heard` committed: the target it was behind of is
/// kept until `applied` reaches it, so a node that keeps up under load, a
/// few entries behind each moment, is never behind for long; a node that
/// reaches its targets only slowly stays behind since it first fell behind,
/// so it is not ready again until it has caught up.
fn still_behind(behind: Option<Behind>, applied: u64, heard: u64, now: Instant) -> Option<Behind> {
    let fresh = |since| Behind {
        target: heard,
        since,
        ticks_short: 0,
    };
    match behind {
        Some(reached) if applied >= reached.target => (applied < heard).then(|| {
            fresh(match reached.ticks_short >= SLOW_TO_REACH_TICKS {
                true => reached.since,
                false => now,
            })
        }),
        Some(short) => Some(Behind {
            ticks_short: short.ticks_short.saturating_add(1),
            ..short
        }),
        None => (applied < heard).then(|| fresh(now)),
    }
}

/// Raft has stopped for good (a storage failure): nothing more is served.
fn failed(fatal: impl std::fmt::Display) -> Error {
    Error::Failed {
        reason: fatal.to_string(),
    }
}

/// What a write that waited the whole request `timeout` without ever being
/// proposed gets (no leader was found, or none would take it).
fn no_quorum_within(timeout: Duration) -> Error {
    unavailable(format!(
        "no leader with a quorum answered within {} ms",
        timeout.as_millis()
    ))
}

/// What a write that was proposed and then waited the whole request
/// `timeout` gets: the leader may still commit it.
pub fn unconfirmed_within(timeout: Duration) -> Error {
    unconfirmed(format!(
        "no quorum confirmed it within {} ms",
        timeout.as_millis()
    ))
}

fn unavailable(reason: impl Into<String>) -> Error {
    Error::Unavailable {
        reason: reason.into(),
    }
}

/// A write that was proposed, or may have been, and was not confirmed.
fn unconfirmed(reason: impl Into<String>) -> Error {
    Error::OutcomeUnknown {
        reason: reason.into(),
    }
}

impl ClusterNode {
    /// Opens the data directory, recovers the log and the state machine, starts
    /// Raft, and bootstraps the cluster from `peers` if it has never run.
    pub async fn start(dir: &Path, options: ClusterOptions) -> Result<Arc<ClusterNode>> {
        ClusterNode::start_serving_into(dir, options, None).await
    }

    /// [`ClusterNode::start`], applying into `shared`, the state lock a
    /// single-node store served reads from until it became this member
    /// (see [`StateMachine::open_into`]).
    pub async fn start_serving_into(
        dir: &Path,
        options: ClusterOptions,
        shared: Option<Arc<RwLock<State>>>,
    ) -> Result<Arc<ClusterNode>> {
        let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
        let data_dir = DataDir::open(&*fs, dir)?;
        // Under the directory's lock: an adoption cut short is finished first.
        super::adopt::finish_interrupted(dir)?;
        ClusterNode::start_in(fs, data_dir, dir, options, None, shared).await
    }

    /// [`ClusterNode::start`] on any file system, with peer messages carried
    /// by `transport` instead of HTTP when it is given: the in-process cluster
    /// tests run nodes on simulated disks over a simulated network this way.
    pub async fn start_on(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        options: ClusterOptions,
        transport: Option<Arc<dyn PeerTransport>>,
    ) -> Result<Arc<ClusterNode>> {
        let data_dir = DataDir::open(&*fs, dir)?;
        ClusterNode::start_in(fs, data_dir, dir, options, transport, None).await
    }

    async fn start_in(
        fs: Arc<dyn FileSystem>,
        data_dir: DataDir,
        dir: &Path,
        options: ClusterOptions,
        transport: Option<Arc<dyn PeerTransport>>,
        shared: Option<Arc<RwLock<State>>>,
    ) -> Result<Arc<ClusterNode>> {
        // Recovery reads the whole log and snapshot: off the runtime's
        // workers, which a node growing from a single store at run time
        // shares with the requests it serves meanwhile.
        let space = DiskSpace::new(fs.clone(), dir.to_path_buf(), options.min_free_space);
        let member_fs = fs.clone();
        let (log, machine, member) = {
            let dir = dir.to_path_buf();
            let (node_id, advertise) = (options.node_id, options.advertise.clone());
            let (wal, fsync, watch_history, latency) = (
                options.wal.clone(),
                options.fsync,
                options.watch_history,
                options.latency.clone(),
            );
            crate::deterministic::off_runtime(move || {
                let member = super::member::claim(&*fs, &dir, node_id, &advertise)?;
                let log = LogStore::open(fs.clone(), &dir, wal, fsync, latency)?;
                let machine = StateMachine::open_into(fs, &dir, watch_history, shared)?;
                Ok::<_, Error>((log, machine, member))
            })
            .await
            .map_err(|_| Error::Closed)??
        };
        let log_bytes = log.held_bytes();
        let config = Config {
            cluster_name: "walrus".into(),
            heartbeat_interval: options.heartbeat_ms,
            election_timeout_min: options.election_timeout_ms.0,
            election_timeout_max: options.election_timeout_ms.1,
            // Housekeeping decides when to snapshot (by entries and by
            // bytes), after checking the disk has room for one: a snapshot
            // that fails to write stops the node.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_payload_entries: super::network::MAX_ENTRIES_PER_APPEND,
            // Each snapshot chunk (1 MiB, written without a sync) must arrive
            // within this; the last one, which includes the install, gets
            // `network::LAST_SNAPSHOT_CHUNK_TIMEOUT`.
            install_snapshot_timeout: 2_000,
            // Replicate entries as soon as they are handed to the log writer:
            // the followers' syncs then overlap the leader's.
            broadcast_submitted_on_append: Some(true),
            // Entries kept behind a snapshot for followers that are only a
            // little behind; further back they get the snapshot.
            max_in_snapshot_log_to_keep: options.snapshot_every.min(1000),
            // A node that was cut off asks a quorum whether it could win before
            // it raises its term, so rejoining does not depose a healthy leader.
            enable_pre_vote: Some(true),
            // A leader that restarts stands for election again instead of
            // resuming its term. Resumed, it has no entry of the term left to
            // commit, and its read index is its commit index on disk: a hint
            // written with the next batch of records, so it lags the writes
            // acknowledged last, and a linearizable read could miss them. An
            // election commits a new blank entry first, which settles that.
            enable_leader_restore: Some(false),
            ..Default::default()
        }
        .validate()
        .map_err(|error| Error::InvalidArgument(format!("Raft settings: {error}")))?;
        let identity = PeerIdentity {
            own_id: options.node_id,
            token: options.token.clone(),
            faults: options
                .fault_injection
                .then(|| Arc::new(FaultSwitch::default())),
            tls: options.peer_tls.clone(),
            transport,
            health: Arc::default(),
        };
        let confirmed = ConfirmedLogs::default();
        let network = PeerNetworkFactory {
            identity: identity.clone(),
            confirmed: confirmed.clone(),
        };
        let raft = Raft::new(
            options.node_id,
            Arc::new(config),
            network,
            log,
            machine.clone(),
        )
        .await
        .map_err(|error| unavailable(format!("starting Raft: {error}")))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|error| unavailable(error.to_string()))?;
        let joining = {
            let (dir, has_peers) = (dir.to_path_buf(), !options.peers.is_empty());
            crate::deterministic::off_runtime(move || {
                Joining::open(member_fs, dir, member, initialized, has_peers).map(Arc::new)
            })
            .await
            .map_err(|_| Error::Closed)??
        };
        let formats = MemberFormats::new(options.command_format);
        let leader_moved = leader_moved_watch(&raft);
        let node = Arc::new(ClusterNode {
            id: options.node_id,
            raft,
            machine,
            options,
            peers: Mutex::new(HashMap::new()),
            membership_lock: tokio::sync::Mutex::new(()),
            counters: ClusterCounters::default(),
            heard_commit: RwLock::new(0),
            leader_commit: AtomicU64::new(0),
            behind: Mutex::new(None),
            incoming_snapshot: tokio::sync::Mutex::new(None),
            read_batch: Mutex::new(ReadBatch::default()),
            forwarding: Arc::new(ForwardQueue::new(leader_moved.clone())),
            leader_moved,
            broadcaster: Broadcaster::default(),
            identity,
            log_bytes,
            fatal: Mutex::new(None),
            space,
            refusing_entries: AtomicBool::new(false),
            handed_over: Mutex::new(None),
            reach: ReachWatch::default(),
            compacting_for_space: AtomicBool::new(false),
            peer_disks: Mutex::new(None),
            formats,
            joining,
            confirmed,
            _data_dir: data_dir,
        });
        node.measure_snapshot_room();
        node.bootstrap(initialized).await?;
        tokio::spawn(housekeeping(Arc::downgrade(&node)));
        Ok(node)
    }

    /// Initializes a fresh cluster with the `--peers` members. Every node
    /// started with the same `--peers` does this; openraft accepts the same
    /// initial membership from each, and a node that has state already
    /// (`initialized`, as Raft found it at start) skips.
    async fn bootstrap(&self, initialized: bool) -> Result<()> {
        if self.options.peers.is_empty() {
            return Ok(());
        }
        if !self.options.peers.contains_key(&self.id) {
            return Err(Error::InvalidArgument(format!(
                "--peers does not name this node (--node-id {})",
                self.id
            )));
        }
        if initialized {
            return Ok(());
        }
        self.refuse_a_lost_log().await?;
        let members: BTreeMap<NodeId, BasicNode> = self
            .options
            .peers
            .iter()
            .map(|(&id, address)| (id, BasicNode::new(address)))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => {
                tracing::info!(members = ?self.options.peers, "initialized a new cluster");
                Ok(())
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(error) => Err(unavailable(format!("initializing the cluster: {error}"))),
        }
    }

    /// Refuses to start a node with an empty log under an id whose log the
    /// cluster's leader knows held entries: its data directory was wiped or
    /// replaced. Such a node must not take part under that id: it has
    /// forgotten its vote (it could vote twice in one term) and the entries
    /// the leader counts it as holding toward a quorum, so the leader would
    /// stop replicating to it and the cluster would lose its quorum as soon
    /// as one more node failed. Peers that cannot be reached, or that
    /// predate this question, say nothing, so a cluster's first start (all
    /// nodes empty) goes ahead.
    async fn refuse_a_lost_log(&self) -> Result<()> {
        let others = self.options.peers.iter().filter(|(id, _)| **id != self.id);
        let questions = others.map(|(&id, address)| async move {
            let peer = Peer::new(address, id, &self.identity).ok()?;
            let matched = peer.call::<_, Option<u64>>("matched", &(), LOST_LOG_PROBE_TIMEOUT);
            matched.await.ok().flatten().map(|index| (id, index))
        });
        let answers = futures::future::join_all(questions).await;
        match answers.into_iter().flatten().find(|&(_, index)| index > 0) {
            None => Ok(()),
            Some((leader, index)) => Err(Error::InvalidArgument(format!(
                "this node's data directory holds no Raft log, but the cluster's leader \
                 (node {leader}) has node {id}'s log as holding entries up to {index}: its \
                 data was lost or replaced. {}",
                rejoin_steps(self.id),
                id = self.id
            ))),
        }
    }

    /// Ends this node's joining once it has applied up to `target`, an
    /// index its leader committed in its own term ([`Joining::note_target`]).
    /// A later append checks again while it has not; concurrent checks
    /// both finishing write the file once (`Joining::finish`).
    async fn finish_joining_at(&self, target: u64) {
        let applied = self.metrics().last_applied.map_or(0, |id| id.index);
        if applied < target {
            return;
        }
        let (node, joining) = (self.id, self.joining.clone());
        let finished = crate::deterministic::off_runtime(move || joining.finish()).await;
        match finished.unwrap_or(Err(Error::Closed)) {
            Ok(false) => {}
            Ok(true) => tracing::info!(node, applied, "joined: caught up with the cluster, votes"),
            Err(error) => tracing::warn!(node, %error, "could not record having joined"),
        }
    }

    /// Stops this node for good: its leader `sender` found it lacking the
    /// entry at `missing`, which it had confirmed holding, so its data was
    /// lost or replaced (most often a wiped data directory restarted under
    /// its old id without `--peers`). Such a node must not vote or count
    /// toward a quorum; it rejoins under a new id.
    async fn stop_for_a_lost_log(&self, sender: Option<NodeId>, missing: u64) {
        let reason = format!(
            "node {id}'s leader (node {leader}) had confirmed this node's log as holding \
             entry {missing}, and it no longer does: its data directory was lost or \
             replaced, or its disk dropped writes (under --fsync interval or never, a \
             power cut drops the last ones). It takes no more part in the cluster. {}",
            rejoin_steps(self.id),
            id = self.id,
            leader = sender.map_or_else(|| "?".to_string(), |id| id.to_string()),
        );
        {
            let mut fatal = self.fatal.lock();
            if fatal.is_some() {
                return;
            }
            tracing::error!("{reason}");
            *fatal = Some(reason);
        }
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "stopping Raft after a lost log");
        }
    }

    /// What this node, leading, last confirmed `sender`'s log to hold (its
    /// match index); `None` when this node does not lead or has not matched
    /// it.
    fn matched_for(&self, sender: Option<NodeId>) -> Option<u64> {
        let metrics = self.metrics();
        let matched = metrics.replication.as_ref()?.get(&sender?)?;
        matched.map(|id| id.index)
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Snapshots this node's state machine now (covering everything it has
    /// applied) and returns the snapshot file; openraft then purges the log
    /// behind it. Waits at most a minute.
    pub async fn snapshot_now(&self) -> Result<PathBuf> {
        self.measure_snapshot_room();
        if !self.space.take_for_snapshot() {
            return Err(Error::NoSpace {
                path: self.space.dir().to_path_buf(),
            });
        }
        let target = self.metrics().last_applied.map_or(0, |id| id.index);
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|error| unavailable(format!("starting a snapshot: {error}")))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let snapshot = self.metrics().snapshot.map_or(0, |id| id.index);
            if snapshot >= target {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(unavailable("the snapshot did not finish within 60 s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.machine
            .newest_snapshot_path()?
            .ok_or_else(|| unavailable("no snapshot file after the snapshot finished"))
    }

    /// Lets a write this leader is about to propose through, unless the
    /// disk is short of space and the write adds data. Then leadership goes
    /// to another member if it can, and the write waits for it.
    fn admit(&self, proposal: &Proposal) -> std::result::Result<(), Refusal> {
        let bytes = proposal.payload.len() as u64;
        if self.space.take_to_propose(bytes) || frees_space(proposal) {
            return Ok(());
        }
        if self.hand_over_for_space() {
            return Err(Refusal::HandingOver);
        }
        Err(Refusal::DiskLow(format!(
            "node {} leads and has {}",
            self.id,
            self.space.shortage(self.space.propose_floor())
        )))
    }

    /// [`ClusterNode::admit`], waiting while a compaction gives the disk
    /// space back. One under way (the housekeeping task asked for it) is
    /// waited for as long as the request may wait, however long it takes;
    /// one only expected at the next tick, up to [`COMPACTION_WAIT_AT_MOST`].
    /// Never past `deadline` less a few steps, so that the refusal, if it
    /// comes, says why rather than that the request timed out.
    async fn admit_waiting(
        &self,
        proposal: &Proposal,
        deadline: Instant,
    ) -> std::result::Result<(), Refusal> {
        let asked_at = Instant::now();
        // Once seen under way, a compaction counts as under way for the rest
        // of this wait: the housekeeping task clears its flag for a moment
        // when it asks again for a snapshot that is slow to come.
        let mut under_way = false;
        loop {
            let why = match self.admit(proposal) {
                Err(Refusal::DiskLow(why)) => why,
                admitted => return admitted,
            };
            under_way |= self.compacting_for_space.load(Ordering::Relaxed);
            let give_up = wait_for_compaction_until(under_way, asked_at, deadline);
            if Instant::now() + COMPACTION_WAIT_STEP >= give_up || !self.compaction_coming() {
                return Err(Refusal::DiskLow(why));
            }
            tokio::time::sleep(COMPACTION_WAIT_STEP).await;
        }
    }

    /// Whether compacting the log is about to give this disk space back:
    /// the housekeeping task has asked for that snapshot, or it will at its
    /// next tick because the log past the last snapshot is more than twice
    /// what a snapshot of the data would take and the disk has room for one
    /// (the test it applies, with the data measured now: deletes just
    /// applied count before the tick measures them).
    fn compaction_coming(&self) -> bool {
        if self.compacting_for_space.load(Ordering::Relaxed) {
            return true;
        }
        let room = self.snapshot_room_now();
        let snapshot_index = {
            use openraft::async_runtime::watch::WatchReceiver;
            let metrics = self.raft.metrics();
            let snapshot = metrics.borrow_watched().snapshot;
            snapshot.map_or(0, |id| id.index)
        };
        let since = SinceSnapshot {
            bytes: self.log_bytes.after(snapshot_index),
            entries: 0,
        };
        since.frees_space(true, room) && self.space.has_room_for_snapshot(room)
    }

    /// Starts handing leadership to the most caught-up other voter, so a
    /// leader whose disk is smaller than the others' does not hold every
    /// write back; whether a handover is under way. At most one a minute:
    /// when every disk is short, leadership comes back here and stays, and
    /// the cluster refuses writes that add data.
    fn hand_over_for_space(&self) -> bool {
        let mut handed_over = self.handed_over.lock();
        if let Some(when) = *handed_over {
            let age = when.elapsed();
            if age < HANDOVER_TAKES {
                return true;
            }
            if age < HANDOVER_AT_MOST_EVERY {
                return false;
            }
        }
        let metrics = self.metrics();
        let voters: BTreeSet<NodeId> = metrics.membership_config.voter_ids().collect();
        let short_of_room = self.peers_short_of_room();
        let best = matched_indexes(&metrics)
            .into_iter()
            .filter(|(id, _)| *id != self.id && voters.contains(id))
            .filter(|(id, _)| !short_of_room.contains(id))
            .max_by_key(|(_, matched)| *matched)
            .map(|(id, _)| id);
        let Some(to) = best else {
            if !short_of_room.is_empty() {
                // Noted as a handover at this moment, so the next one is a
                // minute away and this is logged once.
                let now = Instant::now();
                *handed_over = Some(now.checked_sub(HANDOVER_TAKES).unwrap_or(now));
                tracing::warn!(
                    "the disk is short of space, and so are the other voters' \
                     ({short_of_room:?}): not handing leadership over"
                );
            }
            return false;
        };
        *handed_over = Some(Instant::now());
        tracing::warn!("the disk is short of space: handing leadership to node {to}");
        self.counters
            .handovers_for_space
            .fetch_add(1, Ordering::Relaxed);
        let raft = self.raft.clone();
        tokio::spawn(async move {
            if let Err(error) = raft.trigger().transfer_leader(to).await {
                tracing::warn!(%error, "handing leadership over");
            }
        });
        true
    }

    /// The voters that said, within [`PEER_DISKS_STAND_FOR`], that they are
    /// short of space themselves.
    fn peers_short_of_room(&self) -> BTreeSet<NodeId> {
        match &*self.peer_disks.lock() {
            Some(disks) if disks.asked.elapsed() < PEER_DISKS_STAND_FOR => disks
                .rooms
                .iter()
                .filter(|(_, room)| !room.could_lead())
                .map(|(id, _)| *id)
                .collect(),
            _ => BTreeSet::new(),
        }
    }

    /// On the leader: asks the other voters whether they reach it, and hands
    /// leadership to one of them when too few do (`reach.rs`).
    async fn hand_over_if_unreached(&self) {
        let metrics = self.metrics();
        let voters: BTreeSet<NodeId> = metrics.membership_config.voter_ids().collect();
        if voters.len() < 3 || !self.is_leader() || !self.reach.start_ask() {
            return;
        }
        let others = voters.iter().copied().filter(|id| *id != self.id).collect();
        let lost: BTreeSet<NodeId> = self
            .ask_each::<bool>(others, "reach", reach::ASK_TIMEOUT)
            .await
            .into_iter()
            .filter_map(|(id, answer)| answer.is_ok_and(|reaches| !reaches).then_some(id))
            .collect();
        let matched = matched_indexes(&self.metrics());
        let barred = self.peers_short_of_room();
        let target = reach::handover_target(self.id, &voters, &lost, &matched, &barred)
            .filter(|_| self.is_leader());
        let Some(to) = self.reach.finish_ask(target) else {
            return;
        };
        self.counters
            .handovers_unreached
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            "voters {lost:?} cannot reach this leader, too few others do to make a \
             quorum, and their clients' requests cannot be forwarded to it: handing \
             leadership to node {to}"
        );
        if let Err(error) = self.raft.trigger().transfer_leader(to).await {
            tracing::warn!(%error, "handing leadership over");
        }
    }

    /// Whether this node reaches `leader`, which asks (`reach.rs`): a `ping`
    /// of its own to it is answered in time. A peer that refuses the ping
    /// is no more reachable than one that never answers: neither would take
    /// a forwarded write.
    async fn reaches(&self, leader: NodeId) -> bool {
        let Some(peer) = self.peer(leader) else {
            return false;
        };
        peer.call_unnoted::<_, ()>("ping", &(), reach::PROBE_TIMEOUT)
            .await
            .is_ok()
    }

    /// This node's disk, as the `disk-room` peer message answers.
    fn disk_room(&self) -> DiskRoom {
        DiskRoom {
            free_bytes: self.space.free(),
            kept_free_bytes: self.space.propose_floor(),
        }
    }

    /// On a node near its floor or `short` of space (a large write can be
    /// refused further from it), asks the other voters about their disks
    /// (for [`Self::hand_over_for_space`]); each has a housekeeping tick to
    /// answer. Followers ask too, so that one elected while every disk runs
    /// short knows it at once, instead of handing leadership on unasked.
    async fn ask_peer_disks(&self, short: bool) {
        let near = self
            .space
            .propose_floor()
            .saturating_mul(ASK_PEER_DISKS_UNDER_FLOOR_TIMES);
        if self.space.free() >= near && !short {
            return;
        }
        let voters: Vec<NodeId> = self
            .metrics()
            .membership_config
            .voter_ids()
            .filter(|id| *id != self.id)
            .collect();
        let rooms = self
            .ask_each::<DiskRoom>(voters, "disk-room", HOUSEKEEPING_TICK)
            .await
            .into_iter()
            .filter_map(|(id, answer)| Some((id, answer.ok()?)))
            .collect();
        *self.peer_disks.lock() = Some(PeerDisks {
            asked: Instant::now(),
            rooms,
        });
    }

    /// Asks each of `members` the bodiless question `message`, all at once,
    /// each given `timeout` to answer. Out of the peers' health
    /// records: an answer says nothing of whether a peer takes entries, and
    /// a peer older than the question refuses it while it does.
    async fn ask_each<Resp: serde::de::DeserializeOwned>(
        &self,
        members: Vec<NodeId>,
        message: &'static str,
        timeout: Duration,
    ) -> Vec<(NodeId, std::result::Result<Resp, PeerError>)> {
        let asks = members.into_iter().filter_map(|id| {
            let peer = self.peer(id)?;
            Some(async move {
                let answer = peer.call_unnoted::<_, Resp>(message, &(), timeout).await;
                (id, answer)
            })
        });
        futures::future::join_all(asks).await
    }

    /// The members other than this node: voters and learners, which apply
    /// every entry alike. Read from the metrics in place, without copying
    /// them: every RESP write in a cluster asks (`members_read`).
    fn other_members(&self) -> Vec<NodeId> {
        use openraft::async_runtime::watch::WatchReceiver;
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        metrics
            .membership_config
            .nodes()
            .map(|(id, _)| *id)
            .filter(|id| *id != self.id)
            .collect()
    }

    /// The other members, if they are due to be asked for their command
    /// formats (`formats.rs`).
    fn command_formats_due(&self) -> Option<Vec<NodeId>> {
        let others = self.other_members();
        self.formats.due(&others).then_some(others)
    }

    /// Asks `others` which command format they read. A member that does
    /// not know the question is an older walrus; one that does not answer
    /// keeps what it said before.
    async fn ask_command_formats(&self, others: Vec<NodeId>) {
        for (id, answer) in self
            .ask_each::<u32>(others, "command-format", HOUSEKEEPING_TICK)
            .await
        {
            match answer {
                Ok(format) => self.formats.heard(id, format),
                Err(PeerError::NoSuchMessage { .. }) => self.formats.heard(id, OLDEST_FORMAT),
                Err(_) => {}
            }
        }
    }

    /// Whether every member is known to read `format` (`formats.rs`).
    pub fn members_read(&self, format: u32) -> bool {
        format <= OLDEST_FORMAT || self.formats.cluster_format(self.other_members()) >= format
    }

    /// This run of this node, as the origins of its clients' writes name it
    /// in the log ([`crate::store::Origin`]).
    pub fn run(&self) -> u64 {
        self.machine.run()
    }

    /// Refuses a command of `format` while a member may not read it: a
    /// member that cannot decode an entry stops (`formats.rs`).
    pub fn check_command_format(&self, format: u32) -> Result<()> {
        if format <= OLDEST_FORMAT {
            // Every walrus reads it; no need to look at the membership.
            return Ok(());
        }
        self.formats
            .admit(format, self.other_members())
            .map_err(|reason| Error::MembersTooOld { reason })
    }

    /// Whether this node takes `entries` (an append of `bytes`) from its
    /// leader: refused while the disk is short of space, unless they only
    /// delete (see `space.rs`).
    fn accept_entries(
        &self,
        entries: &[LogEntry],
        bytes: usize,
    ) -> std::result::Result<(), String> {
        if entries.is_empty() {
            return Ok(());
        }
        let only_deletes = || {
            entries.iter().all(|entry| match &entry.payload {
                openraft::EntryPayload::Normal(proposal) => frees_space(proposal),
                _ => true,
            })
        };
        if self.space.take_to_accept(bytes as u64) || only_deletes() {
            if self.refusing_entries.swap(false, Ordering::Relaxed) {
                tracing::info!("the disk has room again: taking the leader's entries");
            }
            return Ok(());
        }
        let reason = format!(
            "node {} has {}",
            self.id,
            self.space.shortage(self.space.accept_floor())
        );
        if !self.refusing_entries.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "refusing the leader's entries: {reason}. This node falls behind until it \
                 has room; free space on that disk (or delete keys) and it catches up"
            );
        }
        Err(reason)
    }

    /// Notes how large a snapshot of the state would be now.
    fn measure_snapshot_room(&self) {
        self.space.set_snapshot_room(self.snapshot_room_now());
    }

    /// About how large a snapshot of the state would be now.
    fn snapshot_room_now(&self) -> u64 {
        let state = self.machine.state().read();
        super::space::snapshot_bytes(state.data_bytes(), state.len() as u64)
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The replicated state reads are served from.
    pub fn state(&self) -> &Arc<RwLock<State>> {
        self.machine.state()
    }

    pub fn request_timeout(&self) -> Duration {
        self.options.request_timeout
    }

    /// The voters, once the membership in effect here is a single
    /// configuration (no change half made) that this node has applied;
    /// `None` while a change is under way.
    pub fn settled_voters(&self) -> Option<Vec<NodeId>> {
        let metrics = self.metrics();
        let membership = &metrics.membership_config;
        let applied = metrics.last_applied.map_or(0, |id| id.index);
        let uniform = membership.get_joint_config().len() == 1;
        let applied_here = membership.log_id().is_none_or(|id| id.index <= applied);
        (uniform && applied_here).then(|| membership.voter_ids().collect())
    }

    /// A copy of openraft's current metrics.
    fn metrics(&self) -> openraft::RaftMetrics<TypeConfig> {
        use openraft::async_runtime::watch::WatchReceiver;
        self.raft.metrics().borrow_watched().clone()
    }

    pub fn is_leader(&self) -> bool {
        self.raft.is_leader()
    }

    /// Whether Raft has stopped on this node (a fatal error or shutdown).
    fn raft_has_stopped(&self) -> bool {
        use openraft::async_runtime::watch::WatchReceiver;
        self.raft.metrics().borrow_watched().state == ServerState::Shutdown
    }

    /// Why Raft stopped for good on this node, once it has: a storage
    /// failure (a full disk or an I/O error on the log). The node then takes
    /// no part in the cluster and serves nothing; the others go on without it.
    pub fn fatal_error(&self) -> Option<String> {
        self.fatal.lock().clone()
    }

    /// Records, once, why Raft stopped, and says so in the log. Returns
    /// whether it has stopped.
    async fn note_if_stopped(&self) -> bool {
        if !self.raft_has_stopped() {
            return false;
        }
        // The call fails at once with the error Raft stopped on.
        if let Err(fatal) = self.raft.is_initialized().await
            && !matches!(fatal, openraft::error::Fatal::Stopped)
            && self.fatal.lock().is_none()
        {
            tracing::error!(
                "Raft has stopped on this node: {fatal}. It serves no more requests and \
                 takes no part in the cluster, which goes on without it; fix the cause, \
                 then restart walrus"
            );
            *self.fatal.lock() = Some(format!("Raft has stopped on this node: {fatal}"));
        }
        true
    }

    /// Why this node serves nothing: it was removed from the cluster. Either
    /// the membership it holds no longer names it, or most of the other
    /// voters it knows refused its last message to them as coming from a
    /// non-member (a node removed may never receive the entry that removes
    /// it: the leader stops replicating to it once that entry commits).
    /// `None` while it is a member, and before it holds any membership (a
    /// node waiting to be added). Its Raft state still names the last leader
    /// it heard from, so without this check its requests would wait for that
    /// leader until they time out.
    pub fn removed_from_cluster(&self) -> Option<String> {
        use openraft::async_runtime::watch::WatchReceiver;
        // Empty, without a lock, unless a peer has refused this node.
        let refusers = self.identity.health.refused_as_non_member();
        let (named, voters) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow_watched();
            let config = &metrics.membership_config;
            // No membership yet: a node waiting to be added.
            config.nodes().next()?;
            let named = config.get_node(&self.id).is_some();
            // This runs before every write and read: a member no peer
            // refuses costs no allocation.
            if named && refusers.is_empty() {
                return None;
            }
            let voters: BTreeSet<NodeId> = config.voter_ids().collect();
            (named, voters)
        };
        let others: BTreeSet<NodeId> = voters.iter().copied().filter(|&id| id != self.id).collect();
        let refused_by_most =
            !others.is_empty() && 2 * others.intersection(&refusers).count() > others.len();
        if named && !refused_by_most {
            return None;
        }
        let members: Vec<String> = others.iter().map(|id| id.to_string()).collect();
        Some(format!(
            "node {} was removed from the cluster (the voters it knows of: {}); send requests \
             to a member",
            self.id,
            members.join(", ")
        ))
    }

    /// Whether peer messages from `sender` are accepted: from members, or from
    /// anyone while this node has no membership yet (before it is added).
    pub fn accepts_peer(&self, sender: Option<NodeId>) -> bool {
        use openraft::async_runtime::watch::WatchReceiver;
        let Some(id) = sender else {
            return false;
        };
        // Borrowed, not cloned: this runs for every append and heartbeat.
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let config = &metrics.membership_config;
        config.nodes().next().is_none() || config.get_node(&id).is_some()
    }

    /// The partition switch, on a node started with fault injection.
    pub fn faults(&self) -> Option<&FaultSwitch> {
        self.identity.faults.as_deref()
    }

    /// Whether a message from `sender` is dropped by the partition switch.
    pub fn partitioned_from(&self, sender: Option<NodeId>) -> bool {
        match (self.faults(), sender) {
            (Some(faults), Some(sender)) => faults.blocks_from(sender),
            _ => false,
        }
    }

    /// Pub/Sub messages for other members dropped so far (a full queue, a
    /// peer that could not be reached).
    pub fn broadcast_dropped(&self) -> u64 {
        self.broadcaster
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends a message PUBLISHed here to every other member (voters and
    /// learners), at most once and in order per member.
    pub fn broadcast(&self, message: Published) {
        let others: Vec<NodeId> = {
            use openraft::async_runtime::watch::WatchReceiver;
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow_watched();
            let membership = metrics.membership_config.membership();
            membership
                .nodes()
                .map(|(&id, _)| id)
                .filter(|&id| id != self.id)
                .collect()
        };
        for id in others {
            self.broadcaster.send(id, || self.peer(id), message.clone());
        }
    }

    fn peer(&self, id: NodeId) -> Option<Arc<Peer>> {
        if let Some(peer) = self.peers.lock().get(&id) {
            return Some(peer.clone());
        }
        let address = {
            let metrics = self.metrics();
            metrics.membership_config.get_node(&id)?.addr.clone()
        };
        let peer = Arc::new(Peer::new(&address, id, &self.identity).ok()?);
        self.peers.lock().insert(id, peer.clone());
        Some(peer)
    }

    /// The connection to `leader`; with no leader known (an election is
    /// running), pauses briefly and returns `None` so the caller retries.
    async fn leader_peer_or_pause(&self, leader: Option<NodeId>) -> Option<Arc<Peer>> {
        let peer = leader.and_then(|leader| self.peer(leader));
        if peer.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peer
    }

    /// Proposes `proposal` and returns what applying it did, once it is
    /// committed by a majority and applied here or on the leader.
    pub async fn write(&self, proposal: Proposal) -> Result<Outcome> {
        self.write_by(proposal, Instant::now() + self.options.request_timeout)
            .await
    }

    /// [`ClusterNode::write`], giving up at `deadline`. A write that timed
    /// out while proposed, or while it may have been, has an unknown outcome;
    /// one that never found a leader to take it was not applied.
    async fn write_by(&self, proposal: Proposal, deadline: Instant) -> Result<Outcome> {
        if let Some(reason) = self.removed_from_cluster() {
            return Err(unavailable(reason));
        }
        let mut in_flight = false;
        let attempt = self.write_until(proposal, deadline, &mut in_flight);
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(result) => result,
            Err(_) if in_flight => Err(unconfirmed_within(self.options.request_timeout)),
            Err(_) => Err(no_quorum_within(self.options.request_timeout)),
        }
    }

    /// Proposes `proposal` on this node when it leads, with no task waiting
    /// for it: the entry's [`Replier`] sends the result to `reply` once the
    /// entry is applied, so a leader's write costs no task hand-off of its
    /// own. A write refused because leadership moved in the meantime takes the
    /// ordinary path ([`ClusterNode::write`], which forwards it) on `runtime`.
    /// Gives `proposal` and `reply` back when this node does not lead; the
    /// caller bounds the wait for `reply` by the request timeout.
    pub fn propose_leading(
        self: &Arc<Self>,
        proposal: Proposal,
        reply: oneshot::Sender<Result<Outcome>>,
        runtime: &Handle,
    ) -> std::result::Result<(), (Proposal, oneshot::Sender<Result<Outcome>>)> {
        if !self.raft.is_leader() {
            return Err((proposal, reply));
        }
        match self.admit(&proposal) {
            Ok(()) => {}
            // The ordinary path waits for the next leader, or for the
            // compaction.
            Err(Refusal::HandingOver) => return Err((proposal, reply)),
            Err(Refusal::DiskLow(_)) if self.compaction_coming() => {
                return Err((proposal, reply));
            }
            Err(Refusal::DiskLow(reason)) => {
                let _ = reply.send(Err(Error::DiskLow { reason }));
                return Ok(());
            }
        }
        let retry = proposal.clone();
        let cluster = Arc::clone(self);
        let runtime = runtime.clone();
        // A retry ends when the caller stops waiting, so a write the caller
        // was told timed out is never applied after that.
        let deadline = Instant::now() + self.options.request_timeout;
        let replier = Replier::new(move |result: Option<ClientWriteResult<TypeConfig>>| {
            let answer = match result {
                Some(Ok(response)) => response
                    .data
                    .outcome
                    .ok_or_else(|| unavailable("the entry applied without an outcome")),
                Some(Err(ClientWriteError::ForwardToLeader(_))) => {
                    runtime.spawn(async move {
                        let mut reply = reply;
                        let retried = tokio::select! {
                            biased;
                            result = cluster.write_by(retry, deadline) => result,
                            () = reply.closed() => return,
                        };
                        let _ = reply.send(retried);
                    });
                    return;
                }
                Some(Err(ClientWriteError::LogEntryDiscarded(_))) => Err(unconfirmed(
                    "leadership changed while the write was in flight",
                )),
                Some(Err(error)) => Err(unavailable(error.to_string())),
                None => Err(unconfirmed(
                    "leadership changed or Raft stopped before the write was confirmed",
                )),
            };
            let _ = reply.send(answer);
        });
        // Queues the entry for Raft's core without waiting: the queue holds
        // 65,536 messages, so it has room unless the core is hopelessly
        // behind, and then the dropped replier answers "unknown" at once.
        // `unconstrained` keeps tokio's cooperative budget from making a
        // send with room pending.
        let queued = tokio::task::unconstrained(self.raft.client_write_ff(proposal, Some(replier)));
        let _ = futures::FutureExt::now_or_never(queued);
        Ok(())
    }

    /// Proposes `proposal` here or forwards it to the leader, until it is
    /// applied or the outcome is known to be unknown. `in_flight` says, at any
    /// await, whether the current attempt may have been proposed (so that a
    /// caller that stops waiting can tell its client what it knows).
    async fn write_until(
        &self,
        proposal: Proposal,
        deadline: Instant,
        in_flight: &mut bool,
    ) -> Result<Outcome> {
        loop {
            if self.raft.is_leader() {
                *in_flight = false;
                match self.admit_waiting(&proposal, deadline).await {
                    Ok(()) => {}
                    Err(Refusal::HandingOver) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    Err(Refusal::DiskLow(reason)) => return Err(Error::DiskLow { reason }),
                }
            }
            *in_flight = true;
            let forward = match self.raft.client_write(proposal.clone()).await {
                Ok(response) => {
                    return response
                        .data
                        .outcome
                        .ok_or_else(|| unavailable("the entry applied without an outcome"));
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => forward,
                Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => {
                    return Err(unconfirmed(
                        "leadership changed while the write was in flight",
                    ));
                }
                Err(RaftError::APIError(error)) => return Err(unavailable(error.to_string())),
                Err(RaftError::Fatal(fatal)) => return Err(failed(fatal)),
            };
            *in_flight = false;
            let Some(peer) = self.leader_peer_or_pause(forward.leader_id).await else {
                continue;
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            self.counters
                .forwarded_writes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            *in_flight = true;
            match self
                .forwarding
                .forward(peer, proposal.clone(), remaining)
                .await
            {
                Forwarded::Answer(ForwardAnswer::Applied(outcome)) => return Ok(outcome),
                Forwarded::Answer(ForwardAnswer::NotLeader) | Forwarded::Unreachable => {
                    *in_flight = false;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Forwarded::Answer(ForwardAnswer::Failed(reason)) => {
                    return Err(unconfirmed(format!("the leader answered: {reason}")));
                }
                Forwarded::Answer(ForwardAnswer::DiskLow(reason)) => {
                    return Err(Error::DiskLow { reason });
                }
                Forwarded::Failed(reason) => {
                    return Err(unconfirmed(format!(
                        "forwarding to the leader failed: {reason}"
                    )));
                }
            }
        }
    }

    /// Proposes several writes at once (a pipelined client's): on the leader
    /// concurrently, so openraft batches them into one append; on a follower
    /// forwarded to the leader in one request. Results come back in order.
    pub async fn write_batch(&self, proposals: Vec<Proposal>) -> Vec<Result<Outcome>> {
        if let Some(reason) = self.removed_from_cluster() {
            return proposals
                .iter()
                .map(|_| Err(unavailable(reason.clone())))
                .collect();
        }
        let deadline = Instant::now() + self.options.request_timeout;
        let mut results: Vec<Option<Result<Outcome>>> = proposals.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..proposals.len()).collect();
        while !pending.is_empty() {
            if Instant::now() >= deadline {
                break;
            }
            if self.raft.is_leader() {
                let writes = pending
                    .iter()
                    .map(|&index| self.write(proposals[index].clone()));
                for (index, result) in pending.iter().zip(futures::future::join_all(writes).await) {
                    results[*index] = Some(result);
                }
                break;
            }
            let leader = self.raft.current_leader().await;
            let Some(peer) = self.leader_peer_or_pause(leader).await else {
                continue;
            };
            let batch: Vec<&Proposal> = pending.iter().map(|&index| &proposals[index]).collect();
            let remaining = deadline.saturating_duration_since(Instant::now());
            self.counters
                .forwarded_writes
                .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let call = peer.call::<_, Vec<ForwardAnswer>>("forward-batch", &batch, remaining);
            let Some(answers) =
                unless_leader_moved(call, peer.target(), Some(&self.leader_moved)).await
            else {
                let reason = leader_left(peer.target());
                for index in pending.drain(..) {
                    results[index] = Some(Err(unconfirmed(reason.clone())));
                }
                break;
            };
            match answers {
                Ok(answers) if answers.len() == pending.len() => {
                    let mut retry = Vec::new();
                    for (index, answer) in pending.iter().zip(answers) {
                        match answer {
                            ForwardAnswer::Applied(outcome) => results[*index] = Some(Ok(outcome)),
                            ForwardAnswer::NotLeader => retry.push(*index),
                            ForwardAnswer::Failed(reason) => {
                                results[*index] =
                                    Some(Err(unconfirmed(format!("the leader answered: {reason}"))))
                            }
                            ForwardAnswer::DiskLow(reason) => {
                                results[*index] = Some(Err(Error::DiskLow { reason }))
                            }
                        }
                    }
                    pending = retry;
                    if !pending.is_empty() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                Err(
                    PeerError::Unreachable { .. }
                    | PeerError::Refused { .. }
                    | PeerError::NoSuchMessage { .. },
                ) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(_) | Err(PeerError::Failed { .. }) => {
                    let reason = "forwarding to the leader failed";
                    for index in pending.drain(..) {
                        results[index] = Some(Err(unconfirmed(reason)));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|result| {
                // Still pending: never sent, or refused by a non-leader.
                result.unwrap_or_else(|| Err(no_quorum_within(self.options.request_timeout)))
            })
            .collect()
    }

    /// Serves one peer message, `/raft/{message}` with its postcard `body`
    /// from node `sender`, and returns the answer's postcard body. Messages
    /// from outside the membership, or cut off by fault injection, are
    /// refused before the body is read.
    pub async fn serve_peer_message(
        &self,
        sender: Option<NodeId>,
        message: &str,
        body: &[u8],
    ) -> std::result::Result<Vec<u8>, PeerRefusal> {
        if !self.accepts_peer(sender) {
            return Err(PeerRefusal::NotMember);
        }
        if self.partitioned_from(sender) {
            return Err(PeerRefusal::Partitioned);
        }
        // Refused before anything is read: a forwarded write that meets a
        // stopped leader here cannot have been proposed, and the sender takes
        // it to the next leader.
        if self.raft_has_stopped() {
            return Err(PeerRefusal::Unavailable(
                "Raft has stopped on this node".into(),
            ));
        }
        let unavailable =
            |error: &dyn std::fmt::Display| PeerRefusal::Unavailable(error.to_string());
        if self.joining.is_active() && matches!(message, "vote" | "pre-vote" | "transfer-leader") {
            return Err(PeerRefusal::Unavailable(format!(
                "node {} is joining: it votes once it holds what its cluster had committed \
                 when it joined",
                self.id
            )));
        }
        match message {
            "append" => {
                let request: AppendEntriesRequest<TypeConfig> = decode(body)?;
                if let Some(commit) = &request.leader_commit {
                    self.leader_commit
                        .fetch_max(commit.index, Ordering::Relaxed);
                }
                if let Err(reason) = self.accept_entries(&request.entries, body.len()) {
                    return Err(PeerRefusal::Unavailable(reason));
                }
                let joined_at = self
                    .joining
                    .is_active()
                    .then(|| self.joining.note_target(&request))
                    .flatten();
                let answer = match self.raft.append_entries(request).await {
                    Ok(answer) => encode(&answer),
                    Err(error) => Err(unavailable(&error)),
                };
                if let Some(target) = joined_at {
                    self.finish_joining_at(target).await;
                }
                answer
            }
            "vote" => match self.raft.vote(decode(body)?).await {
                Ok(answer) => encode(&answer),
                Err(error) => Err(unavailable(&error)),
            },
            "pre-vote" => match self.raft.pre_vote(decode(body)?).await {
                Ok(answer) => encode(&answer),
                Err(error) => Err(unavailable(&error)),
            },
            "snapshot" => match self.receive_snapshot_chunk(decode(body)?).await {
                Ok(answer) => encode(&answer),
                Err(reason) => {
                    tracing::warn!("refused a snapshot from node {sender:?}: {reason}");
                    Err(PeerRefusal::SnapshotRejected(reason))
                }
            },
            "forward" => encode(&self.serve_forward(decode(body)?).await),
            "forward-batch" => encode(&self.serve_forward_batch(decode(body)?).await),
            "read-index" => encode(&self.serve_read_index().await),
            "disk-room" => encode(&self.disk_room()),
            "reach" => match sender {
                Some(leader) => encode(&self.reaches(leader).await),
                None => Err(PeerRefusal::NotMember),
            },
            "ping" => encode(&()),
            "matched" => encode(&self.matched_for(sender)),
            "lost-log" => {
                self.stop_for_a_lost_log(sender, decode(body)?).await;
                encode(&())
            }
            "command-format" => encode(&self.options.command_format),
            "transfer-leader" => match self.raft.handle_transfer_leader(decode(body)?).await {
                Ok(answer) => encode(&answer),
                Err(error) => Err(unavailable(&error)),
            },
            _ => Err(PeerRefusal::UnknownMessage),
        }
    }

    /// Serves a batch of writes forwarded by a follower, concurrently.
    pub async fn serve_forward_batch(&self, proposals: Vec<Proposal>) -> Vec<ForwardAnswer> {
        futures::future::join_all(proposals.into_iter().map(|p| self.serve_forward(p))).await
    }

    /// Serves a write forwarded by a follower: proposes it here if this node
    /// leads, and never forwards it again.
    pub async fn serve_forward(&self, proposal: Proposal) -> ForwardAnswer {
        let timeout = self.options.request_timeout;
        if self.raft.is_leader() {
            match self
                .admit_waiting(&proposal, Instant::now() + timeout)
                .await
            {
                Ok(()) => {}
                Err(Refusal::HandingOver) => return ForwardAnswer::NotLeader,
                Err(Refusal::DiskLow(reason)) => return ForwardAnswer::DiskLow(reason),
            }
        }
        match tokio::time::timeout(timeout, self.raft.client_write(proposal)).await {
            Ok(Ok(response)) => match response.data.outcome {
                Some(outcome) => ForwardAnswer::Applied(outcome),
                None => ForwardAnswer::Failed("the entry applied without an outcome".into()),
            },
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                ForwardAnswer::NotLeader
            }
            Ok(Err(RaftError::Fatal(fatal))) => ForwardAnswer::Failed(format!(
                "its Raft stopped while the write was in flight ({fatal})"
            )),
            Ok(Err(error)) => ForwardAnswer::Failed(error.to_string()),
            Err(_) => ForwardAnswer::Failed(format!(
                "the leader could not commit within {} ms",
                timeout.as_millis()
            )),
        }
    }

    /// The read index, if this node is the leader and a quorum confirms it.
    pub async fn serve_read_index(&self) -> Option<u64> {
        let timeout = self.options.request_timeout;
        let read = self.raft.get_read_log_id(ReadPolicy::ReadIndex);
        match tokio::time::timeout(timeout, read).await {
            Ok(Ok((read_log_id, _))) => Some(read_log_id.index()),
            _ => None,
        }
    }

    /// Takes one chunk of a snapshot the leader streams: checks it (framing,
    /// key order, checksums, as far as the bytes so far allow) and writes it
    /// to this transfer's own file. When the last one arrives and the whole
    /// checks out (its Raft position included), syncs the file and installs
    /// it. A damaged snapshot is refused here, before openraft sees it, so it
    /// costs a retry, not the node. Each transfer writes its own file, so a
    /// transfer that replaces an abandoned one never touches a file still
    /// being installed.
    pub async fn receive_snapshot_chunk(
        &self,
        chunk: SnapshotChunk,
    ) -> std::result::Result<ChunkAnswer, String> {
        let mut incoming = self.incoming_snapshot.lock().await;
        let key = (chunk.vote, chunk.meta.last_log_id);
        if chunk.offset == 0 {
            if let Some(abandoned) = incoming.take() {
                self.machine.discard_incoming(&abandoned.path);
            }
            let machine = self.machine.clone();
            let (path, file) = blocking(move || machine.create_incoming()).await?;
            *incoming = Some(IncomingSnapshot {
                vote: key.0,
                last_log_id: key.1,
                path,
                file: Some(file),
                received: 0,
                check: SnapshotStreamCheck::new(),
            });
        }
        let Some(transfer) = incoming.as_mut() else {
            return Err("no snapshot transfer in progress; start again from offset 0".into());
        };
        let refusal =
            if (transfer.vote, transfer.last_log_id) != key || transfer.received != chunk.offset {
                Some("snapshot chunk out of order; start again from offset 0".to_string())
            } else {
                transfer
                    .check
                    .push(&chunk.data)
                    .err()
                    .map(|error| format!("the snapshot is damaged: {error}"))
            };
        let file = match (refusal, transfer.file.take()) {
            (None, Some(file)) => file,
            (refusal, _) => {
                if let Some(abandoned) = incoming.take() {
                    self.machine.discard_incoming(&abandoned.path);
                }
                return Err(refusal.unwrap_or_else(|| {
                    "the snapshot transfer failed earlier; start again from offset 0".into()
                }));
            }
        };
        let (offset, data, done) = (chunk.offset, chunk.data, chunk.done);
        let length = data.len() as u64;
        let mut file = file;
        let written = blocking(move || {
            file.write_all_at(offset, &data)?;
            Ok(file)
        })
        .await;
        match written {
            Ok(file) => {
                transfer.file = Some(file);
                transfer.received += length;
            }
            Err(error) => {
                if let Some(abandoned) = incoming.take() {
                    self.machine.discard_incoming(&abandoned.path);
                }
                return Err(error);
            }
        }
        if !done {
            return Ok(ChunkAnswer::Continue);
        }
        let Some(mut transfer) = incoming.take() else {
            return Err("no snapshot transfer in progress".into());
        };
        // The position first: finishing the check consumes it.
        let finished = transfer.check_position(&chunk.meta).and_then(|()| {
            std::mem::take(&mut transfer.check)
                .finish()
                .map(|_| ())
                .map_err(|error| format!("the snapshot is damaged: {error}"))
        });
        let synced = match (finished, transfer.file.take()) {
            (Ok(()), Some(mut file)) => blocking(move || file.sync_all()).await,
            (Ok(()), None) => Err("the snapshot transfer lost its file".to_string()),
            (Err(error), _) => Err(error),
        };
        if let Err(error) = synced {
            self.machine.discard_incoming(&transfer.path);
            return Err(error);
        }
        let data = self
            .machine
            .received(&transfer.path)
            .map_err(|error| format!("reading the received snapshot: {error}"))?;
        let snapshot = openraft::type_config::alias::SnapshotOf::<TypeConfig, SnapshotData> {
            meta: chunk.meta,
            snapshot: data,
        };
        let installed = self
            .raft
            .install_full_snapshot(transfer.vote, snapshot)
            .await
            .map(ChunkAnswer::Installed)
            .map_err(|error| error.to_string());
        if installed.is_ok() {
            self.counters
                .snapshots_received
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        drop(incoming);
        installed
    }

    /// Returns once every write acknowledged before the call is applied on
    /// this node, so a local read that follows is linearizable.
    ///
    /// Concurrent callers share read-index requests: a caller joins the next
    /// request that starts after it arrived (never one already in flight,
    /// which might predate a write it must see), so under load one round
    /// trip to the leader serves a whole batch of reads.
    pub async fn read_barrier(self: &Arc<Self>) -> Result<()> {
        if let Some(reason) = self.removed_from_cluster() {
            return Err(unavailable(reason));
        }
        let deadline = Instant::now() + self.options.request_timeout;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let start = {
            let mut batch = self.read_batch.lock();
            batch.waiting.push(sender);
            !std::mem::replace(&mut batch.running, true)
        };
        if start {
            let node = self.clone();
            tokio::spawn(async move { node.run_read_batches().await });
        }
        let index = match tokio::time::timeout_at(deadline, receiver).await {
            Ok(Ok(Ok(index))) => index,
            Ok(Ok(Err(reason))) => return Err(unavailable(reason)),
            Ok(Err(_)) => return Err(unavailable("the read index request was dropped")),
            Err(_) => {
                return Err(unavailable(format!(
                    "no leader confirmed a read index within {} ms",
                    self.options.request_timeout.as_millis()
                )));
            }
        };
        self.wait_applied(index, deadline).await
    }

    /// Fetches read indexes for whoever is waiting, one request per batch,
    /// until nobody is.
    async fn run_read_batches(&self) {
        loop {
            let waiting = {
                let mut batch = self.read_batch.lock();
                if batch.waiting.is_empty() {
                    batch.running = false;
                    return;
                }
                std::mem::take(&mut batch.waiting)
            };
            let deadline = Instant::now() + self.options.request_timeout;
            let result =
                match tokio::time::timeout_at(deadline, self.read_index_until(deadline)).await {
                    Ok(Ok(index)) => Ok(index),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err(format!(
                        "no leader confirmed a read index within {} ms",
                        self.options.request_timeout.as_millis()
                    )),
                };
            for waiter in waiting {
                let _ = waiter.send(result.clone());
            }
        }
    }

    async fn read_index_until(&self, deadline: Instant) -> Result<u64> {
        loop {
            let forward = match self.raft.get_read_log_id(ReadPolicy::ReadIndex).await {
                Ok((read_log_id, _)) => return Ok(read_log_id.index()),
                Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward))) => {
                    forward
                }
                Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Err(RaftError::Fatal(fatal)) => return Err(failed(fatal)),
            };
            let Some(peer) = self.leader_peer_or_pause(forward.leader_id).await else {
                continue;
            };
            self.counters
                .forwarded_reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let remaining = deadline.saturating_duration_since(Instant::now());
            // Asking for a read index changes nothing: safe to retry, and to
            // ask the new leader at once when this one lost its place.
            let call = peer.call::<_, Option<u64>>("read-index", &(), remaining);
            match unless_leader_moved(call, peer.target(), Some(&self.leader_moved)).await {
                Some(Ok(Some(index))) => return Ok(index),
                None => {}
                Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<()> {
        {
            let mut heard = self.heard_commit.write();
            *heard = (*heard).max(index);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(remaining))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map(|_| ())
            .map_err(|error| {
                unavailable(format!(
                    "this node did not apply up to the read index {index} in time: {error}"
                ))
            })
    }

    /// Whether the node can serve (`/ready`): a leader is known and this
    /// node has applied everything it knew to be committed when asked, given
    /// up to `within` to finish applying that. Under load a node is always a
    /// few entries from applying what it has just committed; that is not
    /// being behind, and `/ready` should not flap with it. A node further
    /// behind does not get there in time.
    pub async fn ready_settled(&self, within: Duration) -> std::result::Result<(), String> {
        let metrics = self.metrics();
        let applied = metrics.last_applied.map_or(0, |id| id.index);
        // The highest commit index this node knows: its own, or one a read
        // index named.
        let committed = metrics
            .local_committed
            .map_or(0, |id| id.index)
            .max(*self.heard_commit.read());
        if applied < committed {
            // Timing out is no error here: the judgement below says why.
            let _ = self
                .raft
                .wait(Some(within))
                .applied_index_at_least(Some(committed), "ready")
                .await;
        }
        self.judge_ready(committed)
    }

    /// [`Self::ready_settled`]'s judgement, against the commit index it
    /// waited for (commit indexes only grow, so later ones are not counted).
    fn judge_ready(&self, committed: u64) -> std::result::Result<(), String> {
        if let Some(reason) = self.fatal_error() {
            return Err(reason);
        }
        let metrics = self.metrics();
        if metrics.state == ServerState::Shutdown {
            return Err("Raft has stopped on this node".into());
        }
        if let Some(removed) = self.removed_from_cluster() {
            return Err(removed);
        }
        if metrics.current_leader.is_none() {
            return Err("no leader is known".into());
        }
        if let Some(silence) = self.unanswered_leadership(&metrics) {
            return Err(format!(
                "this node leads, but no quorum of voters has answered it for {} ms: \
                 it cannot commit, and another may lead by now",
                silence.as_millis()
            ));
        }
        let applied = metrics.last_applied.map_or(0, |id| id.index);
        if applied < committed {
            return Err(format!(
                "applied up to {applied}, committed is {committed}: catching up"
            ));
        }
        // As of now, not as of the last tick: a node catching up reaches each
        // target between ticks, and must not look caught up until the next.
        let heard = self.leader_commit.load(Ordering::Relaxed);
        let behind = still_behind(*self.behind.lock(), applied, heard, Instant::now());
        if let Some(behind) = behind
            && applied < behind.target
            && behind.since.elapsed() >= CATCH_UP_GRACE
        {
            return Err(format!(
                "applied up to {applied}, behind its leader's commit index ({}) for {} s: \
                 catching up",
                behind.target,
                behind.since.elapsed().as_secs()
            ));
        }
        Ok(())
    }

    /// On a leader of several voters, how long since a quorum last answered
    /// it, once that is longer than the longest election timeout: by then
    /// the followers may have elected another (a leader that cannot hear
    /// their answers, or one handing over, learns of it only when it hears
    /// them again).
    fn unanswered_leadership(
        &self,
        metrics: &openraft::RaftMetrics<TypeConfig>,
    ) -> Option<Duration> {
        if metrics.state != ServerState::Leader
            || metrics.membership_config.voter_ids().nth(1).is_none()
        {
            return None;
        }
        use openraft::Instant as _;
        let silence = metrics.last_quorum_acked.as_ref()?.elapsed();
        (silence > Duration::from_millis(self.options.election_timeout_ms.1)).then_some(silence)
    }

    /// Notes whether this node is behind what its leader has told it is
    /// committed (see `behind`), for `/ready`.
    fn track_catching_up(&self) {
        let applied = self.metrics().last_applied.map_or(0, |id| id.index);
        let heard = self.leader_commit.load(Ordering::Relaxed);
        let mut behind = self.behind.lock();
        *behind = still_behind(*behind, applied, heard, Instant::now());
    }

    pub fn status(&self) -> ClusterStatus {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let nodes: BTreeMap<NodeId, String> = membership
            .nodes()
            .map(|(&id, node)| (id, node.addr.clone()))
            .collect();
        let role = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        ClusterStatus {
            node_id: self.id,
            role: role.into(),
            term: metrics.current_term,
            leader_id: metrics.current_leader,
            leader_address: metrics
                .current_leader
                .and_then(|id| nodes.get(&id).cloned()),
            last_log_index: metrics.last_log_index.unwrap_or(0),
            commit_index: metrics.local_committed.map_or(0, |id| id.index),
            applied_index: metrics.last_applied.map_or(0, |id| id.index),
            snapshot_index: metrics.snapshot.map_or(0, |id| id.index),
            purged_index: metrics.purged.map_or(0, |id| id.index),
            log_bytes_in_memory: self.log_bytes.get(),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            nodes,
            replication: matched_indexes(&metrics),
            disk_free_bytes: self.space.free(),
            disk_kept_free_bytes: self.space.propose_floor(),
            refusing_entries: self.refusing_entries.load(Ordering::Relaxed),
            command_format: self.options.command_format,
            cluster_command_format: self.formats.cluster_format(self.other_members()),
        }
    }

    /// Adds a node that receives the log but does not vote; returns once it
    /// has caught up.
    pub async fn add_learner(self: &Arc<Self>, id: NodeId, address: String) -> Result<()> {
        // Adding a learner again at the same address is a retry, and waits
        // for it as the first call did; anything else would silently do
        // nothing, or move a member.
        match self.member(id) {
            Some(Member { voter: true, .. }) => {
                return Err(Error::InvalidArgument(format!(
                    "node {id} is already a voter of this cluster"
                )));
            }
            Some(Member { address: known, .. }) if known != address => {
                return Err(Error::InvalidArgument(format!(
                    "node {id} is already a learner, at {known}; remove it first to move it"
                )));
            }
            Some(_) => {}
            // Added anew (perhaps removed before, and back with an empty
            // log): what it confirmed under its id before does not hold.
            None => self.confirmed.forget(id),
        }
        // Not waiting for the catch-up under the membership lock: a learner
        // that cannot be reached must not stop its own removal.
        self.change_membership_fully(move |raft, _| async move {
            raft.add_learner(id, BasicNode::new(address), false)
                .await
                .map(|_| ())
        })
        .await?;
        self.wait_caught_up(id).await
    }

    /// Member `id` as this node's membership has it; `None` if it is not one.
    fn member(&self, id: NodeId) -> Option<Member> {
        use openraft::async_runtime::watch::WatchReceiver;
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let config = &metrics.membership_config;
        let address = config.get_node(&id)?.addr.clone();
        let voter = config.voter_ids().any(|voter| voter == id);
        Some(Member { voter, address })
    }

    /// Returns once learner `id` has every entry the leader had when asked.
    async fn wait_caught_up(&self, id: NodeId) -> Result<()> {
        let target = self.status().last_log_index;
        let deadline = Instant::now() + LEARNER_CATCH_UP_TIMEOUT;
        loop {
            let status = self.status();
            if status
                .replication
                .get(&id)
                .is_some_and(|&matched| matched >= target)
            {
                return Ok(());
            }
            if !self.is_leader() {
                return Err(unavailable(format!(
                    "node {id} was added as a learner; leadership moved before it caught up"
                )));
            }
            if Instant::now() >= deadline {
                return Err(unavailable(format!(
                    "node {id} was added as a learner but has not caught up within {} s \
                     (is it running at the address given?); remove it if it should not be",
                    LEARNER_CATCH_UP_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Makes a learner a voter.
    pub async fn promote(self: &Arc<Self>, id: NodeId) -> Result<()> {
        self.change_membership_fully(move |raft, _| async move {
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map(|_| ())
        })
        .await
    }

    /// Hands leadership to voter `to` (etcd's `move-leader`), for taking the
    /// leader down for maintenance without an election timeout's wait:
    /// this leader stops taking writes, and `to` starts an election at once
    /// once it has every entry. Returns once `to` leads.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<()> {
        let status = self.status();
        if !status.voters.contains(&to) {
            return Err(Error::InvalidArgument(format!(
                "node {to} is not a voter of this cluster"
            )));
        }
        if !self.is_leader() {
            return Err(unavailable(format!(
                "this node is not the leader; send the transfer to {}",
                status
                    .leader_address
                    .unwrap_or_else(|| "the leader (none known yet)".to_string())
            )));
        }
        if to == self.id {
            return Ok(());
        }
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(failed)?;
        let timeout = self.options.request_timeout;
        match self
            .raft
            .wait(Some(timeout))
            .metrics(
                |metrics| metrics.current_leader == Some(to),
                "the new leader takes over",
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(_) => Err(unavailable(format!(
                "node {to} did not take over within {} ms (is it up and caught up?)",
                timeout.as_millis()
            ))),
        }
    }

    /// Removes a node (voter or learner) from the cluster.
    pub async fn remove(self: &Arc<Self>, id: NodeId) -> Result<()> {
        if self.member(id).is_none() {
            let status = self.status();
            return Err(Error::InvalidArgument(format!(
                "node {id} is not a member of this cluster (voters {:?}, learners {:?})",
                status.voters, status.learners
            )));
        }
        self.change_membership_fully(move |raft, node| async move {
            let change = if node.status().voters.contains(&id) {
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            };
            raft.change_membership(change, false).await.map(|_| ())
        })
        .await
    }

    /// Runs one membership change to its end on a task of its own, one at a
    /// time. A change of voters takes two entries (the joint configuration,
    /// then the new one), and openraft proposes the second from the call
    /// that proposed the first: a caller that gave up half way (a client
    /// that disconnected, a timeout) must not leave the cluster in the joint
    /// configuration.
    async fn change_membership_fully<F, Fut>(self: &Arc<Self>, change: F) -> Result<()>
    where
        F: FnOnce(Raft, Arc<ClusterNode>) -> Fut + Send + 'static,
        Fut: std::future::Future<
                Output = std::result::Result<
                    (),
                    RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
                >,
            > + Send,
    {
        let node = self.clone();
        tokio::spawn(async move {
            let _one_at_a_time = node.membership_lock.lock().await;
            change(node.raft.clone(), node.clone())
                .await
                .map_err(membership_error)
        })
        .await
        .map_err(|_| unavailable("the membership change stopped before it finished"))?
    }

    /// On the leader, completes a joint configuration nobody is completing
    /// (its leader stopped between the two entries of a change): the
    /// configuration the change was heading for takes effect.
    async fn finish_half_made_membership_change(self: &Arc<Self>) {
        if !self.is_leader() || self.metrics().membership_config.get_joint_config().len() < 2 {
            return;
        }
        let Ok(_one_at_a_time) = self.membership_lock.try_lock() else {
            return;
        };
        if self.metrics().membership_config.get_joint_config().len() < 2 {
            return;
        }
        tracing::info!("completing a membership change its leader left half made");
        // No new voter: from a joint configuration this commits its target.
        let finish = self
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::new()), false);
        if let Err(error) = finish.await {
            tracing::warn!(%error, "completing a half-made membership change");
        }
    }

    /// Says in the log that the disk went short of space, or has room again.
    fn log_space_change(&self, short: bool) {
        if short {
            tracing::warn!(
                "disk short of space: {}. While it leads, this node refuses writes that add \
                 data (deletes go through); delete keys or free space on that disk",
                self.space.shortage(self.space.propose_floor())
            );
        } else {
            tracing::info!(
                "the disk has room again: {} free",
                super::space::mebibytes(self.space.free())
            );
        }
    }

    /// Stops Raft; the log writer syncs what it holds and stops.
    pub async fn shutdown(&self) {
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "stopping Raft");
        }
    }
}

/// On a leader, the highest entry each member is known to hold (0 for none
/// yet); empty on other nodes.
fn matched_indexes(metrics: &openraft::RaftMetrics<TypeConfig>) -> BTreeMap<NodeId, u64> {
    metrics
        .replication
        .iter()
        .flat_map(|replication| replication.iter())
        .map(|(id, matched)| (*id, matched.map_or(0, |id| id.index)))
        .collect()
}

/// A member of the cluster: whether it votes, and the address it was added
/// with.
struct Member {
    voter: bool,
    address: String,
}

/// What a node that lost its data does to take part again: it rejoins under
/// a new id, since under `id` the cluster counts entries it no longer has.
fn rejoin_steps(id: NodeId) -> String {
    format!(
        "A node that lost its data rejoins under a new id: `walrus cluster remove {id}`, \
         then start it with an empty data directory, a new --node-id and no --peers, and \
         `walrus cluster add-learner NEW_ID=ADDRESS` and `promote` (README, \"A 3-node \
         cluster\")"
    )
}

/// How long a starting node waits for each peer's answer to whether its
/// log was known to hold entries ([`ClusterNode::refuse_a_lost_log`]).
const LOST_LOG_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the housekeeping task runs.
const HOUSEKEEPING_TICK: Duration = Duration::from_millis(200);
/// The housekeeping ticks between a leader's questions to its voters about
/// whether they reach it ([`reach::ASK_EVERY`]).
const ASK_REACH_EVERY_TICKS: u64 =
    reach::ASK_EVERY.as_millis() as u64 / HOUSEKEEPING_TICK.as_millis() as u64;

/// The entries a snapshot covers that stay in the log for slow followers
/// take at most this fraction of `snapshot_log_bytes`; a follower further
/// behind gets the snapshot.
const KEPT_BEHIND_SNAPSHOT_FRACTION: u64 = 4;

/// The node's periodic chores, until it stops:
/// - triggers a snapshot whenever `snapshot_every` entries were applied
///   since the last one or the entries after it take `snapshot_log_bytes` of
///   memory, if the disk has room for it (openraft's own trigger is off: it
///   cannot know the disk), and purges the entries a snapshot covers
///   beyond a quarter of that, so the log in memory stays within about 1.25×
///   `snapshot_log_bytes` (80 MiB by default) whatever the value size;
/// - on the leader, completes a membership change a previous leader left in
///   its joint configuration;
/// - on the leader, every [`reach::ASK_EVERY`], asks the voters whether they
///   reach it, and hands leadership over when too few do (`reach.rs`).
async fn housekeeping(node: std::sync::Weak<ClusterNode>) {
    let mut ticks = tokio::time::interval(HOUSEKEEPING_TICK);
    // A tick held up (a slow purge, a busy runtime) is not made up for with
    // a burst: `/ready` counts ticks a node stays behind.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The snapshot index when this task last asked, and when: it asks again
    // once that snapshot is done, or after a while if it never came.
    let mut asked: Option<(u64, Instant)> = None;
    // The highest index this task asked openraft to purge up to.
    let mut purge_asked = 0;
    // The snapshot index when this task asked for a snapshot to give disk
    // space back, while writes wait for it (`compacting_for_space`).
    let mut compacting_from: Option<u64> = None;
    // Whether the disk was short of space at the last tick, and whether a
    // snapshot was put off for want of room.
    let mut was_short = false;
    let mut warned_no_room = false;
    let mut ticks_run: u64 = 0;
    loop {
        ticks.tick().await;
        let Some(node) = node.upgrade() else {
            return;
        };
        if node.note_if_stopped().await {
            return;
        }
        node.track_catching_up();
        node.finish_half_made_membership_change().await;
        node.space.refresh();
        node.measure_snapshot_room();
        let short = node.space.short();
        if short != was_short {
            node.log_space_change(short);
            was_short = short;
        }
        node.ask_peer_disks(short).await;
        if let Some(others) = node.command_formats_due() {
            // On its own task: a member slow to answer holds up nothing here.
            let asking = node.clone();
            tokio::spawn(async move { asking.ask_command_formats(others).await });
        }
        if short && node.is_leader() {
            node.hand_over_for_space();
        }
        ticks_run += 1;
        if node.is_leader() && ticks_run.is_multiple_of(ASK_REACH_EVERY_TICKS) {
            // On its own task, like the format question above.
            let asking = node.clone();
            tokio::spawn(async move { asking.hand_over_if_unreached().await });
        }
        let metrics = node.metrics();
        let snapshot_index = metrics.snapshot.map_or(0, |id| id.index);
        let applied_index = metrics.last_applied.map_or(0, |id| id.index);
        if let Some(from) = compacting_from {
            // Over once the space is back, once the log behind the new
            // snapshot was purged at an earlier tick (this tick's reading
            // of the disk saw what that gave) or holds nothing to purge, or
            // once the snapshot is overdue: then writes are refused at once
            // again.
            let purged = snapshot_index > from
                && (purge_asked >= snapshot_index
                    || node.log_bytes.purge_point(snapshot_index, 0).is_none());
            let overdue = asked.is_none_or(|(_, when)| when.elapsed() >= Duration::from_secs(5));
            if !short || purged || overdue {
                compacting_from = None;
                node.compacting_for_space.store(false, Ordering::Relaxed);
            }
        }
        // Short of space, the entries a snapshot covers are not kept for
        // slow followers: removing them is what gives the space back.
        let keep = match short {
            true => 0,
            false => node.options.snapshot_log_bytes / KEPT_BEHIND_SNAPSHOT_FRACTION,
        };
        if let Some(upto) = node.log_bytes.purge_point(snapshot_index, keep) {
            // openraft keeps up to 1,000 entries behind a snapshot whatever
            // their size; of large values that would be gigabytes. A purge
            // waits while a follower is being sent those entries: ask once.
            if upto > purge_asked {
                if node.raft.trigger().purge_log(upto).await.is_err() {
                    continue; // Raft has stopped: the next tick says why.
                }
                purge_asked = upto;
            }
        }
        if asked.is_some_and(|(index, when)| {
            index == snapshot_index && when.elapsed() < Duration::from_secs(5)
        }) {
            continue;
        }
        let since = SinceSnapshot {
            bytes: node.log_bytes.after(snapshot_index),
            entries: applied_index.saturating_sub(snapshot_index),
        };
        let room = node.space.snapshot_room();
        if !since.wants_snapshot(&node.options, short, room) {
            continue;
        }
        if !node.space.take_for_snapshot() {
            // openraft stops a node whose snapshot fails; better to wait.
            if !std::mem::replace(&mut warned_no_room, true) {
                tracing::warn!(
                    "no room on the disk for a snapshot of about {}: not snapshotting \
                     until there is (free space on {})",
                    super::space::mebibytes(room),
                    node.space.dir().display()
                );
            }
            continue;
        }
        warned_no_room = false;
        let why = match short {
            true => "snapshotting to give disk space back",
            false => "snapshotting",
        };
        tracing::info!(
            "the Raft log holds {} entries ({} MiB) past the last snapshot: {why}",
            since.entries,
            since.bytes >> 20
        );
        if node.raft.trigger().snapshot().await.is_err() {
            continue;
        }
        asked = Some((snapshot_index, Instant::now()));
        if since.frees_space(short, room) {
            compacting_from = Some(snapshot_index);
            node.compacting_for_space.store(true, Ordering::Relaxed);
        }
    }
}

/// The log past the last snapshot.
struct SinceSnapshot {
    /// Memory its entries take.
    bytes: u64,
    /// Entries applied.
    entries: u64,
}

impl SinceSnapshot {
    /// Whether to snapshot, given whether the node is `short` of space and
    /// the `room` a snapshot would take: once the log holds `snapshot_every`
    /// entries or `snapshot_log_bytes` of memory, or, short of space, when
    /// the snapshot would be much smaller than the log it covers (after
    /// deletes or overwrites), which frees space.
    fn wants_snapshot(&self, options: &ClusterOptions, short: bool, room: u64) -> bool {
        self.bytes >= options.snapshot_log_bytes
            || self.entries >= options.snapshot_every
            || self.frees_space(short, room)
    }

    /// Whether, short of space, a snapshot of about `room` bytes gives
    /// space back: the log it lets go is more than twice its size.
    fn frees_space(&self, short: bool, room: u64) -> bool {
        short && self.bytes > room.saturating_mul(2)
    }
}

/// Whether `proposal` only deletes, so it may use the space kept free.
fn frees_space(proposal: &Proposal) -> bool {
    crate::store::decode_payload(&proposal.payload).is_ok_and(|(_, command)| command.frees_space())
}

fn membership_error(error: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Error {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => unavailable(format!(
            "this node is not the leader; send membership changes to {}",
            forward.leader_node.map_or_else(
                || "the leader (none known yet)".to_string(),
                |node| node.addr
            )
        )),
        RaftError::APIError(error) => Error::InvalidArgument(error.to_string()),
        RaftError::Fatal(fatal) => failed(fatal),
    }
}

/// A [`LeaderMoved`] reading `raft`'s server metrics: it resolves once the
/// node knows of a leader other than the one given (never, if Raft stops).
/// Those metrics change with the vote, role, leader or membership, not with
/// every entry applied, so a forward in flight is not woken per write.
fn leader_moved_watch(raft: &Raft) -> LeaderMoved {
    let metrics = raft.server_metrics();
    Arc::new(move |leader: NodeId| {
        let mut metrics = metrics.clone();
        Box::pin(async move {
            use openraft::async_runtime::watch::WatchReceiver;
            loop {
                let current = metrics.borrow_watched().current_leader;
                if current.is_some_and(|current| current != leader) {
                    return;
                }
                if metrics.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_behind_one_target_until_it_applies_that_far() {
        let start = Instant::now();
        let later = start + Duration::from_secs(3);
        let at = |target, since, ticks_short| {
            Some(Behind {
                target,
                since,
                ticks_short,
            })
        };
        // Caught up: nothing to wait for.
        assert_eq!(still_behind(None, 10, 10, start), None);
        // Behind: the target and the time are noted, and kept while the
        // node stays short of that target, however far the commit moves.
        let behind = still_behind(None, 10, 12, start);
        assert_eq!(behind, at(12, start, 0));
        assert_eq!(still_behind(behind, 11, 20, later), at(12, start, 1));
        // Reached by the next tick: a new target, timed from now, if still
        // behind.
        assert_eq!(still_behind(behind, 12, 20, later), at(20, later, 0));
        assert_eq!(still_behind(behind, 20, 20, later), None);
    }

    #[test]
    fn a_write_waits_for_a_compaction_under_way_until_its_deadline_and_for_an_expected_one_briefly()
    {
        let now = Instant::now();
        let margin = COMPACTION_WAIT_STEP * 5;
        let deadline = now + Duration::from_secs(30);
        // Under way: however long it takes, up to the request's own time.
        assert_eq!(
            wait_for_compaction_until(true, now, deadline),
            deadline - margin
        );
        // Only expected: a short while.
        assert_eq!(
            wait_for_compaction_until(false, now, deadline),
            now + COMPACTION_WAIT_AT_MOST
        );
        // Near the deadline, both end before it, with room to answer.
        let soon = now + Duration::from_millis(500);
        assert_eq!(wait_for_compaction_until(true, now, soon), soon - margin);
        assert_eq!(wait_for_compaction_until(false, now, soon), soon - margin);
    }

    #[test]
    fn housekeeping_snapshots_by_entries_or_bytes_and_when_short_also_if_that_frees_space() {
        let mut options = ClusterOptions::new(1, "127.0.0.1:1".into());
        options.snapshot_every = 100;
        options.snapshot_log_bytes = 1 << 20;
        let since = |entries, bytes| SinceSnapshot { bytes, entries };
        let room = 256 << 10;
        assert!(!since(99, 1000).wants_snapshot(&options, false, room));
        assert!(since(100, 1000).wants_snapshot(&options, false, room));
        assert!(since(1, 1 << 20).wants_snapshot(&options, false, room));
        // Short of space: only a log more than twice the snapshot's size is
        // worth replacing by one.
        assert!(!since(10, 2 * room).wants_snapshot(&options, true, room));
        assert!(since(10, 2 * room + 1).wants_snapshot(&options, true, room));
        assert!(!since(10, 2 * room + 1).wants_snapshot(&options, false, room));
        // The count and the size still decide when short.
        assert!(since(100, 1000).wants_snapshot(&options, true, room));
    }

    #[test]
    fn a_node_that_reaches_its_targets_slowly_stays_behind_since_it_first_fell_behind() {
        let start = Instant::now();
        let tick = Duration::from_millis(200);
        // Far behind: each target takes several ticks to reach, and a newer
        // one is behind by then. The run is timed from its first target.
        let mut behind = still_behind(None, 0, 100, start);
        let mut now = start;
        for (applied, heard) in [(20, 110), (50, 120), (90, 130), (100, 140), (130, 150)] {
            now += tick;
            behind = still_behind(behind, applied, heard, now);
        }
        assert_eq!(behind.map(|b| b.since), Some(start));
        assert_eq!(behind.map(|b| b.target), Some(140));
        // Caught up at last: nothing more to wait for.
        assert_eq!(still_behind(behind, 150, 150, now + tick), None);
    }
}
