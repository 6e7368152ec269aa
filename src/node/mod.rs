//! The node layer: the one path from the front ends (HTTP, RESP, the expiry
//! sweeper, metrics) to the data, for a single store and for a Raft replica.
//!
//! A [`Node`] offers the [`KvStore`] calls (writes, single and batched, and
//! local reads) and a [`Node::read_barrier`] that a front end awaits before a
//! read at the consistency the client asked for. On a single node the barrier
//! is free; on a replica a linearizable read first obtains a read index from
//! the leader and waits until this node has applied that far. Failures to
//! reach a leader or a quorum are one error, [`crate::Error::Unavailable`],
//! which HTTP maps to `503` and RESP to `-CLUSTERDOWN`.

mod grow;
mod replicated;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;

use crate::error::{Error, Result};
use crate::raft::broadcast::Published;
use crate::raft::{ClusterNode, ClusterOptions, NodeId, PeerRefusal};
use crate::store::{DurableStore, KvStore};

use grow::Growth;
pub use replicated::ReplicatedStore;

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read began (the default).
    #[default]
    Linearizable,
    /// Whatever this node has applied; may lag the leader.
    Stale,
}

/// A node's place in replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// Not a cluster member: nothing replicates.
    Single,
    /// The cluster's leader: its commit index and each other member's
    /// matched index.
    Leader {
        committed: u64,
        /// The last log index known to be on this node's own disk: a
        /// majority of followers can commit an entry before the leader's
        /// own sync of it ends.
        own_matched: u64,
        followers: Vec<Follower>,
    },
    /// Another member: the leader's peer address (if one is known) and how
    /// far this node has applied.
    Follower {
        leader_address: Option<String>,
        applied: u64,
    },
}

/// Who holds a node's committed writes ([`Node::wait_until_held`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// This node's own log.
    pub locally: bool,
    /// How many other members.
    pub replicas: usize,
}

/// A member the leader replicates to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follower {
    /// Its peer (HTTP) address.
    pub address: String,
    /// The last log index known to be on its disk.
    pub matched: u64,
}

/// How long `/ready` lets a replica apply what it already knew to be
/// committed before judging it behind: a few milliseconds of applying under
/// load, not a catch-up.
pub const READY_SETTLES_WITHIN: Duration = Duration::from_millis(100);

/// A single store or a cluster replica, behind the same calls.
///
/// A durable single store may become the first member of a cluster while it
/// runs (see [`Node::add_learner`]); the front ends keep the same `Node` and
/// the same [`Node::store`] across the change.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn KvStore>,
    /// Set from the start on a replica, or once a single store has grown.
    cluster: ArcSwapOption<ClusterNode>,
    /// How a durable single store becomes a cluster member, when it may.
    growth: Option<Growth>,
    /// Hands a Pub/Sub message to this node's subscribers (set by the RESP
    /// front end); messages broadcast by other members come through it.
    subscribers: OnceLock<Deliver>,
}

/// Hands one Pub/Sub message to this node's subscribers.
type Deliver = Box<dyn Fn(&Published) + Send + Sync>;

impl Node {
    /// A node serving one local store that stays a single node (in memory).
    pub fn local(store: Arc<dyn KvStore>) -> Node {
        Node::with(store, None, None)
    }

    /// A node serving a durable single store that becomes node
    /// `plan.node_id` of a new cluster when asked to add a learner.
    pub fn growable(store: DurableStore, plan: ClusterOptions) -> Node {
        let (growth, store) = Growth::new(store, plan);
        Node::with(store, None, Some(growth))
    }

    /// A node serving its replica of a Raft cluster.
    pub fn replicated(cluster: Arc<ClusterNode>) -> Node {
        Node::with(
            Arc::new(ReplicatedStore::new(cluster.clone())),
            Some(cluster),
            None,
        )
    }

    fn with(
        store: Arc<dyn KvStore>,
        cluster: Option<Arc<ClusterNode>>,
        growth: Option<Growth>,
    ) -> Node {
        Node {
            inner: Arc::new(Inner {
                store,
                cluster: ArcSwapOption::new(cluster),
                growth,
                subscribers: OnceLock::new(),
            }),
        }
    }

    /// Takes a snapshot of everything this node has applied, compacting the
    /// log behind it, and returns the snapshot file (which stays readable
    /// through an open handle even if a later snapshot replaces it).
    pub async fn snapshot_now(&self) -> Result<PathBuf> {
        if let Some(cluster) = self.cluster() {
            return cluster.snapshot_now().await;
        }
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || store.snapshot_now())
            .await
            .map_err(|_| Error::Closed)?
            .map(|info| info.path)
    }

    /// Sets where Pub/Sub messages from other members are delivered (once).
    pub fn on_published(&self, deliver: impl Fn(&Published) + Send + Sync + 'static) {
        let _ = self.inner.subscribers.set(Box::new(deliver));
    }

    /// Sends a message PUBLISHed on this node to the other members, if this
    /// node has any (its own subscribers are the caller's to serve).
    pub fn broadcast_published(&self, message: Published) {
        if let Some(cluster) = self.cluster() {
            cluster.broadcast(message);
        }
    }

    /// Serves `/raft/publish` (`shard` false) or `/raft/spublish` (true)
    /// from member `sender`: the batch of messages it broadcast, delivered
    /// to this node's subscribers in order.
    pub fn serve_published(
        &self,
        sender: Option<NodeId>,
        shard: bool,
        body: &[u8],
    ) -> std::result::Result<Vec<u8>, PeerRefusal> {
        let Some(cluster) = self.cluster() else {
            return Err(PeerRefusal::UnknownMessage);
        };
        if !cluster.accepts_peer(sender) {
            return Err(PeerRefusal::NotMember);
        }
        if cluster.partitioned_from(sender) {
            return Err(PeerRefusal::Partitioned);
        }
        let mut messages: Vec<Published> =
            postcard::from_bytes(body).map_err(|error| PeerRefusal::BadBody(error.to_string()))?;
        messages
            .iter_mut()
            .for_each(|message| message.shard = shard);
        if let Some(deliver) = self.inner.subscribers.get() {
            messages.iter().for_each(deliver);
        }
        postcard::to_stdvec(&()).map_err(|error| PeerRefusal::Unavailable(error.to_string()))
    }

    /// Writes and local reads.
    pub fn store(&self) -> &Arc<dyn KvStore> {
        &self.inner.store
    }

    /// The Raft replica, on a cluster member.
    pub fn cluster(&self) -> Option<Arc<ClusterNode>> {
        self.inner.cluster.load_full()
    }

    /// Whether this node is a cluster member (reads then take a barrier).
    pub fn is_replicated(&self) -> bool {
        self.inner.cluster.load().is_some()
    }

    /// Returns once a read on [`Node::store`] may be served at `consistency`.
    pub async fn read_barrier(&self, consistency: Consistency) -> Result<()> {
        if consistency == Consistency::Stale {
            return Ok(());
        }
        match self.cluster() {
            Some(cluster) => cluster.read_barrier().await,
            None => Ok(()),
        }
    }

    /// Adds node `id` at `address` as a learner. A durable single store
    /// first becomes the only voter of a new cluster, in place and with
    /// every key, revision and TTL kept; writes get `Unavailable` (retry)
    /// for the moment that takes.
    pub async fn add_learner(&self, id: NodeId, address: String) -> Result<()> {
        let cluster = match (self.cluster(), &self.inner.growth) {
            (Some(cluster), _) => cluster,
            (None, Some(_)) => {
                // On a task of its own: a client that disconnects half way
                // must not leave the node paused or half grown.
                let node = self.clone();
                tokio::spawn(async move { node.grow(id).await })
                    .await
                    .map_err(|_| Error::Closed)??
            }
            (None, None) => {
                return Err(Error::InvalidArgument(
                    "this node keeps nothing on disk (--in-memory) and cannot join a cluster"
                        .into(),
                ));
            }
        };
        cluster.add_learner(id, address).await
    }

    /// Grows the single store into a cluster's only voter and waits until it
    /// leads; the node layer serves the member from the moment it exists.
    async fn grow(&self, learner: NodeId) -> Result<Arc<ClusterNode>> {
        let Some(growth) = &self.inner.growth else {
            return Err(Error::InvalidArgument("this node cannot grow".into()));
        };
        let cluster = growth.become_member(learner).await?;
        self.inner.cluster.store(Some(cluster.clone()));
        grow::wait_until_leader(&cluster).await?;
        Ok(cluster)
    }

    /// Stops serving: a replica stops Raft (its log writer syncs and stops);
    /// a single store syncs its log and releases the data directory once
    /// the last request holding it is done.
    pub async fn stop(&self) -> Result<()> {
        if let Some(cluster) = self.cluster() {
            cluster.shutdown().await;
            return Ok(());
        }
        match &self.inner.growth {
            Some(growth) => growth.close().await,
            None => Ok(()),
        }
    }

    /// Writes applied here since the newest snapshot (Redis's
    /// `rdb_changes_since_last_save`): revisions past the snapshot's; on a
    /// store that keeps nothing on disk, every write since it started.
    pub fn changes_since_snapshot(&self) -> u64 {
        if let Some(cluster) = self.cluster() {
            let status = cluster.status();
            return status.applied_index.saturating_sub(status.snapshot_index);
        }
        let store = self.store();
        let saved = store.stats().map_or(0, |stats| {
            stats
                .snapshot_revision
                .load(std::sync::atomic::Ordering::Relaxed)
        });
        store.revision().saturating_sub(saved)
    }

    /// Who this node replicates with, as Redis's `ROLE` and `WAIT` see it.
    pub fn replication(&self) -> Replication {
        let Some(cluster) = self.cluster() else {
            return Replication::Single;
        };
        let status = cluster.status();
        if status.leader_id == Some(status.node_id) {
            let followers = status
                .replication
                .iter()
                .filter(|&(&id, _)| id != status.node_id)
                .map(|(&id, &matched)| Follower {
                    address: status.nodes.get(&id).cloned().unwrap_or_default(),
                    matched,
                })
                .collect();
            Replication::Leader {
                committed: status.commit_index,
                own_matched: status
                    .replication
                    .get(&status.node_id)
                    .copied()
                    .unwrap_or(0),
                followers,
            }
        } else {
            Replication::Follower {
                leader_address: status.leader_address,
                applied: status.applied_index,
            }
        }
    }

    /// Redis's `WAIT` and `WAITAOF`: waits until at least `replicas` other
    /// nodes hold every write this node has committed, and with `locally`
    /// this node's own log too, or until `timeout` passes (`None`: no
    /// limit); returns who holds them then. Only a leader knows; elsewhere
    /// `None`. "Holds" is what the log writer reported flushed: durable
    /// under `--fsync always`.
    pub async fn wait_until_held(
        &self,
        locally: bool,
        replicas: usize,
        timeout: Option<Duration>,
    ) -> Option<Held> {
        const POLL: Duration = Duration::from_millis(5);
        let deadline = timeout.map(|timeout| tokio::time::Instant::now() + timeout);
        let target = match self.replication() {
            Replication::Leader { committed, .. } => committed,
            Replication::Follower { .. } => return None,
            // A single store answers a write only once its log holds it. No
            // other node will ever hold anything: wait out the timeout, as
            // Redis does with no replicas.
            Replication::Single => {
                if replicas > 0 {
                    match deadline {
                        Some(deadline) => tokio::time::sleep_until(deadline).await,
                        None => std::future::pending().await,
                    }
                }
                return Some(Held {
                    locally: true,
                    replicas: 0,
                });
            }
        };
        loop {
            let Replication::Leader {
                followers,
                own_matched,
                ..
            } = self.replication()
            else {
                return None;
            };
            let held = Held {
                locally: own_matched >= target,
                replicas: followers
                    .iter()
                    .filter(|follower| follower.matched >= target)
                    .count(),
            };
            let now = tokio::time::Instant::now();
            let enough = held.replicas >= replicas && (held.locally || !locally);
            if enough || deadline.is_some_and(|deadline| now >= deadline) {
                return Some(held);
            }
            let pause = deadline.map_or(POLL, |deadline| POLL.min(deadline - now));
            tokio::time::sleep(pause).await;
        }
    }

    /// Why the node cannot serve now, if it cannot (`/ready`). A replica
    /// first has up to [`READY_SETTLES_WITHIN`] to apply what it knew to be
    /// committed when asked (`ClusterNode::ready_settled`).
    pub async fn not_ready(&self) -> Option<String> {
        if let Some(reason) = self.inner.store.failure() {
            return Some(format!("storage has failed: {reason}"));
        }
        let cluster = self.cluster()?;
        cluster.ready_settled(READY_SETTLES_WITHIN).await.err()
    }
}
