//! The peer transport: Raft messages as HTTP requests on the node's own port.
//!
//! `POST /raft/{append,vote,pre-vote,snapshot,forward,forward-batch,read-index,…}`
//! with a postcard body (the rest: `cluster.rs`'s `serve_peer_message`);
//! the answer is `200` with a postcard body, or an error status with a text
//! body. Every request carries the sender's node id (`X-Walrus-Node-Id`) and the
//! cluster's bearer token, on keep-alive connections pooled per peer (one per
//! request in flight, so forwarded writes to the leader run concurrently).
//!
//! A [`PeerTransport`] can stand in for HTTP: the simulated network of the
//! in-process cluster tests (`testing::sim_cluster`) delivers the same
//! postcard bodies to [`ClusterNode::serve_peer_message`], the function the
//! HTTP route calls, so both paths run the same code past the wire.
//!
//! [`ClusterNode::serve_peer_message`]: super::ClusterNode::serve_peer_message

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, RaftNetworkV2};
use serde::Serialize;
use serde::de::DeserializeOwned;

use tokio_rustls::TlsConnector;

use super::fault::FaultSwitch;
use super::state_machine::SnapshotData;
use super::{NodeId, TypeConfig, Vote};
use crate::client::ClientError;
use crate::client::connection::Connection;
use crate::client::endpoint::Endpoint;

/// The header that names the sending node.
pub const NODE_ID_HEADER: &str = "x-walrus-node-id";
pub const POSTCARD: &str = "application/x-walrus-postcard";
/// Largest peer message body a node reads: an append of up to
/// [`MAX_APPEND_PAYLOAD_BYTES`] plus one more entry of the largest command
/// fits, with room to spare.
pub const MAX_PEER_BODY_BYTES: usize = 256 << 20;
/// Most entries one append message carries.
pub const MAX_ENTRIES_PER_APPEND: u64 = 128;
/// Command bytes one append message carries at most (beyond its first
/// entry): openraft bounds an append by entries only, so with 16 MiB values
/// 128 entries could be 2 GiB. The rest goes in the next message, once the
/// follower has answered for these: a follower far behind catches up in
/// steps, each one recorded, rather than in one message that must arrive
/// whole.
pub const MAX_APPEND_PAYLOAD_BYTES: usize = 8 << 20;
/// The slowest a peer link and a follower's disk are assumed to take
/// entries: an append carrying entries may take this much longer than a
/// heartbeat's deadline for each byte it carries.
const SLOWEST_APPEND_BYTES_PER_SECOND: f64 = 32.0 * 1024.0 * 1024.0;
/// Bytes of snapshot per `/raft/snapshot` message.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// How long the last chunk of a snapshot may take: the follower checks,
/// syncs and installs the whole snapshot before it answers, which for a
/// large one takes far longer than a chunk. Giving up sooner would make the
/// leader start the transfer again while the follower is still installing.
pub const LAST_SNAPSHOT_CHUNK_TIMEOUT: Duration = Duration::from_secs(600);

/// One piece of a snapshot on its way to a follower. The pieces of one
/// snapshot go in order; the last one (`done`) makes the receiver check the
/// whole file's checksums and install it.
#[derive(Serialize, serde::Deserialize)]
pub struct SnapshotChunk {
    pub vote: Vote,
    pub meta: super::SnapshotMeta,
    pub offset: u64,
    /// One slice, not a call per byte (the same encoding; see `Proposal`).
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    pub done: bool,
}

/// What a follower answers to a chunk: the final answer after the last one.
#[derive(Serialize, serde::Deserialize)]
pub enum ChunkAnswer {
    Continue,
    Installed(SnapshotResponse<TypeConfig>),
}

type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;

/// Why a peer request failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Nothing reached the peer.
    #[error("cannot reach node at {address}: {reason}")]
    Unreachable { address: String, reason: String },
    /// The peer refused the message before acting on it (not a member, cut
    /// off by fault injection, its Raft stopped, a bad token or body).
    #[error("node at {address} refused it: {reason}")]
    Refused { address: String, reason: String },
    /// The peer does not know the message: an older walrus (404).
    #[error("node at {address} does not know this message (an older walrus?)")]
    NoSuchMessage { address: String },
    /// The exchange broke, or the peer failed while serving; the request may
    /// have arrived and been acted on.
    #[error("node at {address}: {reason}")]
    Failed { address: String, reason: String },
}

/// Carries one peer message (its postcard body) from `from` to `to` and
/// brings the answer's body back, instead of HTTP. The future stays
/// cancel-safe: dropping it abandons the answer, not the receiver's work.
pub trait PeerTransport: std::fmt::Debug + Send + Sync + 'static {
    fn deliver(
        &self,
        from: NodeId,
        to: NodeId,
        message: &'static str,
        body: Vec<u8>,
    ) -> futures::future::BoxFuture<'static, Result<Vec<u8>, PeerError>>;
}

/// Idle connections kept per peer.
const MAX_IDLE_CONNECTIONS: usize = 128;

/// Who this node is to its peers: its id and token, the TLS its peers speak
/// (when nodes serve https), and (only with `--enable-fault-injection`) the
/// partition switch its messages obey.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    pub own_id: NodeId,
    pub token: Option<String>,
    pub faults: Option<Arc<FaultSwitch>>,
    pub tls: Option<PeerTls>,
    /// Set in the in-process cluster tests: messages go through it, not HTTP.
    pub transport: Option<Arc<dyn PeerTransport>>,
    /// Shared by every connection this node opens to its peers.
    pub health: Arc<PeerHealth>,
}

/// Which peers this node's last message to failed. A peer that goes down is
/// logged once, when a message first fails, and once more when it answers
/// again, instead of at every heartbeat (openraft's heartbeat worker warns
/// ten times a second; the binary's default log filter quiets it).
///
/// A peer that refuses entries (its disk is short of space) still answers
/// heartbeats: its failure is over only when it takes entries again, so the
/// log does not flap between the two at every retry.
#[derive(Debug, Default)]
pub struct PeerHealth {
    /// The failing peers, each with whether it refused a message that
    /// carried work (entries, a vote, a forwarded write) while answering.
    failing: parking_lot::Mutex<BTreeMap<NodeId, bool>>,
    /// Whether `failing` is empty, read without the lock on every answer.
    any_failing: AtomicBool,
    /// The peers whose last answer refused this node as not a member of
    /// their cluster: it was removed, though its own log may not say so.
    refused_as_non_member: parking_lot::Mutex<BTreeSet<NodeId>>,
    /// Whether `refused_as_non_member` is empty, read without the lock.
    any_refused_as_non_member: AtomicBool,
}

impl PeerHealth {
    /// The peers whose last answer refused this node as a non-member.
    pub fn refused_as_non_member(&self) -> BTreeSet<NodeId> {
        if !self.any_refused_as_non_member.load(Ordering::Relaxed) {
            return BTreeSet::new();
        }
        self.refused_as_non_member.lock().clone()
    }

    /// Notes whether `target` took this node for a member this time.
    fn membership_answer(&self, target: NodeId, refused: bool) {
        if !refused && !self.any_refused_as_non_member.load(Ordering::Relaxed) {
            return;
        }
        let mut refusers = self.refused_as_non_member.lock();
        if refused {
            refusers.insert(target);
        } else {
            refusers.remove(&target);
        }
        self.any_refused_as_non_member
            .store(!refusers.is_empty(), Ordering::Relaxed);
    }

    fn answered(&self, target: NodeId, address: &str, carried_work: bool) {
        if !self.any_failing.load(Ordering::Relaxed) {
            return;
        }
        let mut failing = self.failing.lock();
        let over = failing
            .get(&target)
            .is_some_and(|&refused_work| carried_work || !refused_work);
        if over {
            failing.remove(&target);
            tracing::info!("node {target} at {address} answers again");
        }
        self.any_failing
            .store(!failing.is_empty(), Ordering::Relaxed);
    }

    fn failed(&self, target: NodeId, error: &PeerError, carried_work: bool) {
        let refused_work = carried_work && matches!(error, PeerError::Refused { .. });
        let mut failing = self.failing.lock();
        if failing.insert(target, refused_work).is_none() {
            tracing::warn!(
                "messages to node {target} fail: {error}; further failures are not logged \
                 until it answers again (`walrus cluster status` shows its lag)"
            );
        }
        self.any_failing.store(true, Ordering::Relaxed);
    }
}

/// The TLS connector for peers, trusting the CA that signed their
/// certificates.
#[derive(Clone)]
pub struct PeerTls(pub TlsConnector);

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("PeerTls")
    }
}

/// One peer: its address and idle connections reused between requests.
pub struct Peer {
    own_id: NodeId,
    target: NodeId,
    endpoint: Arc<Endpoint>,
    idle: parking_lot::Mutex<Vec<Connection>>,
    headers: HeaderMap,
    faults: Option<Arc<FaultSwitch>>,
    tls: Option<PeerTls>,
    transport: Option<Arc<dyn PeerTransport>>,
    health: Arc<PeerHealth>,
}

impl Peer {
    pub fn new(address: &str, target: NodeId, identity: &PeerIdentity) -> Result<Peer, PeerError> {
        let (own_id, token) = (identity.own_id, identity.token.as_deref());
        let unreachable = |reason: String| PeerError::Unreachable {
            address: address.to_string(),
            reason,
        };
        let scheme = if identity.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let endpoint = Endpoint::parse(&format!("{scheme}://{address}"))
            .map_err(|error| unreachable(error.to_string()))?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(POSTCARD));
        headers.insert(NODE_ID_HEADER, HeaderValue::from(own_id));
        if let Some(token) = token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|error| unreachable(error.to_string()))?;
            headers.insert(AUTHORIZATION, value);
        }
        Ok(Peer {
            own_id,
            target,
            endpoint: Arc::new(endpoint),
            idle: parking_lot::Mutex::new(Vec::new()),
            headers,
            faults: identity.faults.clone(),
            tls: identity.tls.clone(),
            transport: identity.transport.clone(),
            health: identity.health.clone(),
        })
    }

    pub fn address(&self) -> &str {
        self.endpoint.url()
    }

    /// The node this peer is.
    pub fn target(&self) -> NodeId {
        self.target
    }

    /// Sends `request` to `/raft/{path}` and decodes the answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &'static str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        self.call_noting(path, request, timeout, true).await
    }

    /// [`Peer::call`], saying whether the message carries work or is only
    /// a heartbeat (for the peer's health record).
    pub async fn call_noting<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &'static str,
        request: &Req,
        timeout: Duration,
        carries_work: bool,
    ) -> Result<Resp, PeerError> {
        let result = self.call_once(path, request, timeout).await;
        match &result {
            Ok(_) => self
                .health
                .answered(self.target, self.address(), carries_work),
            Err(error) => self.health.failed(self.target, error, carries_work),
        }
        result
    }

    /// [`Peer::call`] for a question whose answer or failure says nothing of
    /// the peer's health: left out of its record.
    pub async fn call_unnoted<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &'static str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        self.call_once(path, request, timeout).await
    }

    async fn call_once<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &'static str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        if self
            .faults
            .as_ref()
            .is_some_and(|faults| faults.blocks_to(self.target))
        {
            return Err(PeerError::Unreachable {
                address: self.address().to_string(),
                reason: "cut off by fault injection".into(),
            });
        }
        // Sized once: an append of many entries would otherwise grow by doubling.
        let body = postcard::experimental::serialized_size(request)
            .and_then(|size| postcard::to_extend(request, Vec::with_capacity(size)))
            .map_err(|error| self.failed(error))?;
        if let Some(transport) = &self.transport {
            let delivery = transport.deliver(self.own_id, self.target, path, body);
            let answer = match tokio::time::timeout(timeout, delivery).await {
                Ok(answer) => answer?,
                Err(_) => {
                    return Err(self.failed(format!("no answer within {} ms", timeout.as_millis())));
                }
            };
            return postcard::from_bytes(&answer).map_err(|error| self.failed(error));
        }
        let exchange = self.exchange(path, Bytes::from(body));
        let (status, body) = match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result?,
            Err(_) => {
                // The connection (dropped with the exchange) may have had a
                // late answer in it: it is never reused.
                return Err(self.failed(format!("no answer within {} ms", timeout.as_millis())));
            }
        };
        if status == StatusCode::NOT_FOUND {
            return Err(PeerError::NoSuchMessage {
                address: self.address().to_string(),
            });
        }
        self.health
            .membership_answer(self.target, status == StatusCode::FORBIDDEN);
        if status != StatusCode::OK {
            let reason = format!("answered {status}: {}", String::from_utf8_lossy(&body));
            // A peer's refusals are 4xx and 503, all given before it acts
            // on the message; any other status may come after.
            if status.is_client_error() || status == StatusCode::SERVICE_UNAVAILABLE {
                return Err(PeerError::Refused {
                    address: self.address().to_string(),
                    reason,
                });
            }
            return Err(self.failed(reason));
        }
        postcard::from_bytes(&body).map_err(|error| self.failed(error))
    }

    async fn exchange(&self, path: &str, body: Bytes) -> Result<(StatusCode, Bytes), PeerError> {
        let reused = {
            let mut idle = self.idle.lock();
            std::iter::from_fn(|| idle.pop()).find(Connection::is_open)
        };
        let mut connection = match reused {
            Some(connection) => connection,
            None => Connection::open(self.endpoint.clone(), self.tls.as_ref().map(|tls| &tls.0))
                .await
                .map_err(|error| PeerError::Unreachable {
                    address: self.address().to_string(),
                    reason: connect_failure(error),
                })?,
        };
        let target = self.endpoint.target(&format!("/raft/{path}"));
        match connection
            .send(Method::POST, &target, &self.headers, body)
            .await
        {
            Ok(response) => {
                let mut idle = self.idle.lock();
                if idle.len() < MAX_IDLE_CONNECTIONS {
                    idle.push(connection);
                }
                Ok((response.status, response.body))
            }
            Err(error @ ClientError::Connect { .. }) => Err(PeerError::Unreachable {
                address: self.address().to_string(),
                reason: connect_failure(error),
            }),
            Err(error) => Err(self.failed(error)),
        }
    }

    fn failed(&self, reason: impl std::fmt::Display) -> PeerError {
        PeerError::Failed {
            address: self.address().to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Why a connection to a peer could not be made, without the hint for CLI
/// users that [`ClientError::Connect`] carries (it names `--endpoints`).
fn connect_failure(error: ClientError) -> String {
    match error {
        ClientError::Connect { cause, .. } => crate::client::describe_io(&cause),
        other => other.to_string(),
    }
}

impl PeerError {
    fn into_rpc(self) -> RPCError<TypeConfig> {
        match self {
            PeerError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&self)),
            PeerError::Refused { .. }
            | PeerError::NoSuchMessage { .. }
            | PeerError::Failed { .. } => RPCError::Network(NetworkError::new(&self)),
        }
    }
}

/// Makes a [`PeerNetwork`] for each peer openraft replicates to.
pub struct PeerNetworkFactory {
    pub identity: PeerIdentity,
    /// What each peer has confirmed holding, shared by every client openraft
    /// makes for it (replication, heartbeats, snapshots).
    pub confirmed: ConfirmedLogs,
}

/// The highest log index each peer has confirmed holding, in answers to
/// appends from the leader whose vote is kept beside it. Under one leader a
/// peer's log never loses an entry it confirmed; one that does had its data
/// wiped or replaced. Confirmations under an earlier leader do not count:
/// a new leader may legitimately truncate entries that never committed.
#[derive(Clone, Default)]
pub struct ConfirmedLogs(Arc<parking_lot::Mutex<HashMap<NodeId, (super::Vote, u64)>>>);

impl ConfirmedLogs {
    /// What `target` has confirmed to `leader`.
    fn get(&self, target: NodeId, leader: &super::Vote) -> Option<u64> {
        match self.0.lock().get(&target) {
            Some((vote, index)) if vote == leader => Some(*index),
            _ => None,
        }
    }

    /// Forgets what `target` confirmed: it is being added anew, possibly
    /// with an empty log under the id of a node that was removed.
    pub fn forget(&self, target: NodeId) {
        self.0.lock().remove(&target);
    }

    fn confirm(&self, target: NodeId, leader: super::Vote, index: u64) {
        let mut confirmed = self.0.lock();
        let entry = confirmed.entry(target).or_insert((leader, index));
        if entry.0 != leader || entry.1 < index {
            *entry = (leader, index);
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerNetwork {
        let peer = Peer::new(&node.addr, target, &self.identity);
        if let Err(error) = &peer {
            tracing::warn!(target, %error, "bad peer address");
        }
        PeerNetwork {
            peer: peer.ok(),
            target,
            confirmed: self.confirmed.clone(),
            lost_log_reported: false,
        }
    }
}

/// openraft's view of one peer, for one leader's replication to it.
pub struct PeerNetwork {
    peer: Option<Peer>,
    target: NodeId,
    confirmed: ConfirmedLogs,
    /// Whether this client already reported a lost log, so each of the
    /// peer's clients (replication, heartbeats) logs it once.
    lost_log_reported: bool,
}

impl PeerNetwork {
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &'static str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        self.call_noting(path, request, timeout, true).await
    }

    async fn call_noting<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &'static str,
        request: &Req,
        timeout: Duration,
        carries_work: bool,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let Some(peer) = &self.peer else {
            let error = PeerError::Unreachable {
                address: "?".into(),
                reason: "the peer's address does not parse".into(),
            };
            return Err(error.into_rpc());
        };
        peer.call_noting(path, request, timeout, carries_work)
            .await
            .map_err(PeerError::into_rpc)
    }
}

impl PeerNetwork {
    /// The peer lacks entry `missing`, which it confirmed holding to this
    /// stream: its data was lost (a wiped directory restarted under its old
    /// id without `--peers`, or a disk that dropped synced writes). Tells
    /// it to stop (`joining.rs`), says so once, and answers openraft with an
    /// error rather than the conflict: openraft does not let a follower's
    /// log go backwards, and the node must rejoin under a new id anyway.
    async fn stop_a_lost_log(&mut self, missing: u64) -> RPCError<TypeConfig> {
        let target = self.target;
        let reason = format!(
            "node {target} no longer holds log entry {missing}, which it had confirmed: its \
             data was lost or replaced, or its disk dropped writes; it is told to stop and \
             must rejoin under a new id (`walrus cluster remove {target}`, then add it back \
             with a new --node-id)"
        );
        if !self.lost_log_reported {
            self.lost_log_reported = true;
            tracing::error!("{reason}");
        }
        if let Err(error) = self
            .call::<_, ()>("lost-log", &missing, LOST_LOG_NOTICE_TIMEOUT)
            .await
        {
            tracing::debug!(target, %error, "telling a node it lost its log");
        }
        PeerError::Failed {
            address: self.peer.as_ref().map_or("?", Peer::address).to_string(),
            reason,
        }
        .into_rpc()
    }
}

/// How long a leader waits for a node to take note that it lost its log.
const LOST_LOG_NOTICE_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads the next chunk of a snapshot file off the async runtime. `data` is
/// moved to the blocking thread and back; it is `None` only if that thread
/// died, which ends the transfer.
async fn next_piece(data: &mut Option<SnapshotData>) -> Result<Vec<u8>, RPCError<TypeConfig>> {
    let failed = |reason: String| {
        PeerError::Failed {
            address: "?".into(),
            reason: format!("reading the snapshot to send: {reason}"),
        }
        .into_rpc()
    };
    let mut taken = data
        .take()
        .ok_or_else(|| failed("the reader was lost".into()))?;
    let (taken, piece) = crate::deterministic::off_runtime(move || {
        let piece = taken.read_piece(SNAPSHOT_CHUNK_BYTES);
        (taken, piece)
    })
    .await
    .map_err(|error| failed(error.to_string()))?;
    *data = Some(taken);
    piece.map_err(|error| failed(error.to_string()))
}

/// How long an append carrying `bytes` of commands may take. openraft's
/// deadline is a heartbeat's (three quarters of the heartbeat interval), which
/// a large append cannot meet: a follower that fell megabytes behind (its
/// disk was full, say) would then be sent the same append again and again,
/// each given up before it arrives, and never catch up while the leader is
/// idle.
fn append_deadline(heartbeat: Duration, bytes: usize) -> Duration {
    heartbeat + Duration::from_secs_f64(bytes as f64 / SLOWEST_APPEND_BYTES_PER_SECOND)
}

/// The command bytes an entry carries (membership entries and blanks: none).
fn command_bytes(entry: &super::LogEntry) -> usize {
    match &entry.payload {
        openraft::EntryPayload::Normal(proposal) => proposal.payload.len(),
        _ => 0,
    }
}

/// How many of `entries`, from the first, fit in `budget` command bytes;
/// always at least one, so a single large entry still travels.
fn entries_within(entries: &[super::LogEntry], budget: usize) -> usize {
    let mut total = 0;
    for (index, entry) in entries.iter().enumerate() {
        total += command_bytes(entry);
        if total > budget && index > 0 {
            return index;
        }
    }
    entries.len()
}

impl RaftNetworkV2<TypeConfig> for PeerNetwork {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut request = request;
        let entries = !request.entries.is_empty();
        let sent = entries_within(&request.entries, MAX_APPEND_PAYLOAD_BYTES);
        let deadline = append_deadline(
            option.soft_ttl(),
            request.entries[..sent].iter().map(command_bytes).sum(),
        );
        let partial = sent < request.entries.len();
        request.entries.truncate(sent);
        let previous = request.prev_log_id.map(|id| id.index);
        let leader = request.vote;
        let confirmed = self.confirmed.get(self.target, &leader);
        let last_sent = request.entries.last().map(|entry| entry.log_id);
        let response = self
            .call_noting("append", &request, deadline, entries)
            .await?;
        let matched = match &response {
            AppendEntriesResponse::Success => last_sent.map(|id| id.index).or(previous),
            AppendEntriesResponse::PartialSuccess(id) => id.map(|id| id.index),
            AppendEntriesResponse::Conflict => {
                if let Some(missing) = previous
                    && confirmed.is_some_and(|confirmed| missing <= confirmed)
                {
                    return Err(self.stop_a_lost_log(missing).await);
                }
                None
            }
            AppendEntriesResponse::HigherVote(_) => None,
        };
        if let Some(matched) = matched {
            self.confirmed.confirm(self.target, leader, matched);
        }
        Ok(match response {
            // A prefix went through: tell openraft how far, and it sends the rest.
            AppendEntriesResponse::Success if partial => {
                AppendEntriesResponse::PartialSuccess(last_sent)
            }
            other => other,
        })
    }

    async fn vote(
        &mut self,
        request: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("vote", &request, option.soft_ttl()).await
    }

    /// Asks whether the peer would grant a vote at the next term, changing
    /// nothing there. A peer that cannot be reached (or predates pre-vote and
    /// answers 404) does not count as a grant: such a node holds elections
    /// without pre-vote, so the cluster still elects a leader.
    async fn pre_vote(
        &mut self,
        request: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("pre-vote", &request, option.soft_ttl()).await
    }

    /// Tells the peer the leader is handing leadership to it (`walrus
    /// cluster transfer-leader`): the peer then starts an election at once.
    async fn transfer_leader(
        &mut self,
        request: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("transfer-leader", &request, option.soft_ttl())
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let meta = snapshot.meta;
        let mut data = Some(snapshot.snapshot);
        let send = async {
            let mut offset = 0u64;
            let mut current = next_piece(&mut data).await?;
            loop {
                // One piece read ahead: the chunk before an empty one is the last.
                let next = next_piece(&mut data).await?;
                let chunk = SnapshotChunk {
                    vote,
                    meta: meta.clone(),
                    offset,
                    done: next.is_empty(),
                    data: current,
                };
                let sent = chunk.data.len() as u64;
                let timeout = if chunk.done {
                    LAST_SNAPSHOT_CHUNK_TIMEOUT.max(option.soft_ttl())
                } else {
                    option.soft_ttl()
                };
                match self.call("snapshot", &chunk, timeout).await? {
                    ChunkAnswer::Installed(response) => return Ok(response),
                    ChunkAnswer::Continue if !chunk.done => {
                        offset += sent;
                        current = next;
                    }
                    ChunkAnswer::Continue => {
                        let error = PeerError::Failed {
                            address: "?".into(),
                            reason: "the follower did not install the last chunk".into(),
                        };
                        return Err(error.into_rpc());
                    }
                }
            }
        };
        // Biased, as every `select!` on the Raft path: a seeded simulation
        // must pick the same branch each run when both are ready.
        tokio::select! {
            biased;
            closed = cancel => Err(StreamingError::Closed(closed)),
            answer = send => Ok(answer?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_gets_longer_than_a_heartbeat_by_the_bytes_it_carries() {
        let heartbeat = Duration::from_millis(75);
        assert_eq!(append_deadline(heartbeat, 0), heartbeat);
        // The largest append (8 MiB) gets a quarter of a second more.
        assert_eq!(
            append_deadline(heartbeat, MAX_APPEND_PAYLOAD_BYTES),
            heartbeat + Duration::from_millis(250)
        );
    }
}
