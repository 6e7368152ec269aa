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

mod replicated;

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::Result;
use crate::raft::ClusterNode;
use crate::store::KvStore;

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

/// A single store or a cluster replica, behind the same calls.
#[derive(Clone)]
pub struct Node {
    store: Arc<dyn KvStore>,
    cluster: Option<Arc<ClusterNode>>,
}

impl Node {
    /// A node serving one local store.
    pub fn local(store: Arc<dyn KvStore>) -> Node {
        Node {
            store,
            cluster: None,
        }
    }

    /// A node serving its replica of a Raft cluster.
    pub fn replicated(cluster: Arc<ClusterNode>) -> Node {
        Node {
            store: Arc::new(ReplicatedStore::new(cluster.clone())),
            cluster: Some(cluster),
        }
    }

    /// Takes a snapshot of everything this node has applied, compacting the
    /// log behind it, and returns the snapshot file (which stays readable
    /// through an open handle even if a later snapshot replaces it).
    pub async fn snapshot_now(&self) -> Result<PathBuf> {
        if let Some(cluster) = &self.cluster {
            return cluster.snapshot_now().await;
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.snapshot_now())
            .await
            .map_err(|_| crate::Error::Closed)?
            .map(|info| info.path)
    }

    /// Writes and local reads.
    pub fn store(&self) -> &Arc<dyn KvStore> {
        &self.store
    }

    pub fn cluster(&self) -> Option<&Arc<ClusterNode>> {
        self.cluster.as_ref()
    }

    /// Returns once a read on [`Node::store`] may be served at `consistency`.
    pub async fn read_barrier(&self, consistency: Consistency) -> Result<()> {
        match (&self.cluster, consistency) {
            (Some(cluster), Consistency::Linearizable) => cluster.read_barrier().await,
            _ => Ok(()),
        }
    }

    /// Why the node cannot serve now, if it cannot (`/ready`).
    pub fn not_ready(&self) -> Option<String> {
        if let Some(reason) = self.store.failure() {
            return Some(format!("storage has failed: {reason}"));
        }
        self.cluster
            .as_ref()
            .and_then(|cluster| cluster.ready().err())
    }
}
