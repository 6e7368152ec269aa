//! A durable single store that becomes the first member of a cluster while
//! it runs: `walrus cluster add-learner` sent to a node started without
//! `--node-id`.
//!
//! The front ends hold one [`GrowableStore`] for the node's whole life. Its
//! reads go through one state lock, which the single store fills first and
//! the cluster member's state machine afterwards; its writes go to whichever
//! store serves at the moment. Growing:
//! 1. writes are turned away with `Unavailable` (HTTP `503`, RESP
//!    `-CLUSTERDOWN`: clients retry as during an election), and the calls
//!    already inside the single store finish;
//! 2. the single store's data is written as the cluster's first snapshot
//!    (`raft::adopt::stage`); should that fail, the single store serves again,
//!    unchanged;
//! 3. the store is closed and the adoption committed (`raft::adopt::commit`):
//!    from here the directory is the cluster member's, and a restart of the
//!    same command line serves it as that member (the `MEMBER` file);
//! 4. Raft starts on the directory, applying into the same state lock (the
//!    change feed carries over, so watchers see no gap), the node elects
//!    itself, and writes go through Raft.
//!
//! Reads never stop: nothing changes the data between 1 and 4.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::RwLock;

use super::ReplicatedStore;
use crate::error::{Error, Result};
use crate::raft::{ClusterNode, ClusterOptions, NodeId, adopt};
use crate::store::{
    Command, DbKey, DurableStore, KvStore, SnapshotInfo, State, StoreStats, Submission,
};

/// How long growing waits for the calls already inside the single store.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Which store takes writes now.
enum Backend {
    Single(Arc<DurableStore>),
    Member(ReplicatedStore),
    /// Growing (`failed: false`), or stopped after a failure that only a
    /// restart resolves (`failed: true`).
    Unavailable {
        reason: String,
        failed: bool,
    },
}

impl Backend {
    fn store(&self) -> Option<&dyn KvStore> {
        match self {
            Backend::Single(store) => Some(&**store),
            Backend::Member(store) => Some(store),
            Backend::Unavailable { .. } => None,
        }
    }

    /// The answer to a write while no store takes writes.
    fn refusal(&self) -> Error {
        match self {
            Backend::Unavailable {
                reason,
                failed: true,
            } => Error::Failed {
                reason: reason.clone(),
            },
            Backend::Unavailable { reason, .. } => Error::Unavailable {
                reason: reason.clone(),
            },
            Backend::Single(_) | Backend::Member(_) => Error::Closed,
        }
    }
}

/// The [`KvStore`] the front ends of a growable node hold.
pub(super) struct GrowableStore {
    state: Arc<RwLock<State>>,
    backend: ArcSwap<Backend>,
    /// Counts backend changes; writes that arrive while the node grows wait
    /// for the next one (up to `wait_limit`) instead of being turned away.
    generation: tokio::sync::watch::Sender<u64>,
    wait_limit: Duration,
    runtime: tokio::runtime::Handle,
    me: std::sync::Weak<GrowableStore>,
}

impl GrowableStore {
    fn current(&self) -> Arc<Backend> {
        self.backend.load_full()
    }

    fn serve(&self, backend: Backend) {
        self.backend.store(Arc::new(backend));
        self.generation.send_modify(|generation| *generation += 1);
    }

    /// Runs `submit` on the store that serves once this growth is over (or
    /// answers with the refusal if it takes longer than `wait_limit`).
    fn after_growth(
        &self,
        backend: &Backend,
        count: usize,
        submit: impl FnOnce(&GrowableStore) -> Vec<Submission> + Send + 'static,
    ) -> Vec<Submission> {
        let mut changes = self.generation.subscribe();
        // The growth may have ended between the caller's look and this.
        if !matches!(&*self.current(), Backend::Unavailable { failed: false, .. }) {
            changes.mark_changed();
        }
        let (replies, submissions): (Vec<_>, Vec<_>) = (0..count)
            .map(|_| {
                let (reply, receiver) = tokio::sync::oneshot::channel();
                (reply, Submission::pending(receiver))
            })
            .unzip();
        let me = self.me.clone();
        let limit = self.wait_limit;
        let refusal = backend.refusal();
        self.runtime.spawn(async move {
            let grown = tokio::time::timeout(limit, changes.changed()).await;
            let Some(store) = me.upgrade().filter(|_| matches!(grown, Ok(Ok(())))) else {
                let mut refusal = Some(refusal);
                for reply in replies {
                    let error = refusal.take().unwrap_or(Error::Unavailable {
                        reason: "this node is becoming a cluster member; retry".into(),
                    });
                    let _ = reply.send(Err(error));
                }
                return;
            };
            let results = futures::future::join_all(submit(&store)).await;
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        });
        submissions
    }
}

impl KvStore for GrowableStore {
    fn state(&self) -> &RwLock<State> {
        &self.state
    }

    fn submit(&self, command: Command) -> Submission {
        let backend = self.current();
        match &*backend {
            Backend::Unavailable { failed: false, .. } => self
                .after_growth(&backend, 1, move |store| vec![store.submit(command)])
                .pop()
                .unwrap_or_else(|| Submission::ready(Err(Error::Closed))),
            backend => match backend.store() {
                Some(store) => store.submit(command),
                None => Submission::ready(Err(backend.refusal())),
            },
        }
    }

    fn submit_all(&self, commands: Vec<Command>) -> Vec<Submission> {
        let backend = self.current();
        match &*backend {
            Backend::Unavailable { failed: false, .. } => {
                let count = commands.len();
                self.after_growth(&backend, count, move |store| store.submit_all(commands))
            }
            backend => match backend.store() {
                Some(store) => store.submit_all(commands),
                None => commands
                    .iter()
                    .map(|_| Submission::ready(Err(backend.refusal())))
                    .collect(),
            },
        }
    }

    fn expired_keys(
        &self,
        after: Option<(u8, &[u8])>,
        max_keys: usize,
    ) -> (Vec<DbKey>, Option<DbKey>) {
        match self.current().store() {
            Some(store) => store.expired_keys(after, max_keys),
            None => (Vec::new(), None),
        }
    }

    fn failure(&self) -> Option<String> {
        match &*self.current() {
            Backend::Unavailable {
                reason,
                failed: true,
            } => Some(reason.clone()),
            backend => backend.store().and_then(|store| store.failure()),
        }
    }

    fn stats(&self) -> Option<Arc<StoreStats>> {
        self.current().store().and_then(|store| store.stats())
    }

    fn snapshot_now(&self) -> Result<SnapshotInfo> {
        let backend = self.current();
        match backend.store() {
            Some(store) => store.snapshot_now(),
            None => Err(backend.refusal()),
        }
    }
}

/// What a growable node keeps to become a cluster member.
pub(super) struct Growth {
    store: Arc<GrowableStore>,
    /// The member it becomes: `node_id`, `advertise`, and the settings of
    /// `walrus serve` (no `--peers`: it starts as the only voter).
    plan: ClusterOptions,
    /// One growth (or close) at a time.
    lock: tokio::sync::Mutex<()>,
}

impl Growth {
    pub(super) fn new(store: DurableStore, plan: ClusterOptions) -> (Growth, Arc<dyn KvStore>) {
        let growable = Arc::new_cyclic(|me| GrowableStore {
            state: store.shared_state(),
            backend: ArcSwap::from_pointee(Backend::Single(Arc::new(store))),
            generation: tokio::sync::watch::channel(0).0,
            wait_limit: plan.request_timeout,
            runtime: tokio::runtime::Handle::current(),
            me: me.clone(),
        });
        let growth = Growth {
            store: growable.clone(),
            plan,
            lock: tokio::sync::Mutex::new(()),
        };
        (growth, growable)
    }

    /// Makes the single store the only voter of a new cluster (see the
    /// module's steps) and returns the member, which elects itself next
    /// (see [`wait_until_leader`]); once grown, returns that member. `learner`
    /// is the node about to be added, which must not take this node's id.
    /// Runs to its end on a task of its own (see `Node::add_learner`).
    pub(super) async fn become_member(&self, learner: NodeId) -> Result<Arc<ClusterNode>> {
        let _one_at_a_time = self.lock.lock().await;
        let own = self.plan.node_id;
        if learner == own {
            return Err(Error::InvalidArgument(format!(
                "this node becomes node {own} of the new cluster; give the learner another id"
            )));
        }
        check_reachable(&self.plan.advertise)?;
        let single = match &*self.store.current() {
            Backend::Single(store) => store.clone(),
            Backend::Member(member) => return Ok(member.cluster().clone()),
            Backend::Unavailable { reason, .. } => {
                return Err(Error::Unavailable {
                    reason: reason.clone(),
                });
            }
        };
        let dir = single.dir().to_path_buf();
        drop(single);
        let paused_at = Instant::now();
        let store = self.pause().await?;
        let advertise = self.plan.advertise.clone();
        let staged = tokio::task::spawn_blocking(move || {
            // Writes queued before the pause are
            // committed and applied before this snapshot returns, and with
            // it done and no write coming, the store starts no snapshot of
            // its own while the adoption freezes the state.
            let staged = store
                .snapshot()
                .and_then(|_| adopt::stage(&store, own, &advertise));
            (store, staged)
        })
        .await
        .map_err(|_| Error::Closed)?;
        let (store, staged) = match staged {
            (store, Ok(staged)) => (store, staged),
            (store, Err(error)) => {
                tracing::warn!(%error, "could not stage the cluster's first snapshot; the single store serves on");
                self.serve(Backend::Single(Arc::new(store)));
                return Err(error);
            }
        };
        let committed = tokio::task::spawn_blocking(move || adopt::commit(store, staged))
            .await
            .map_err(|_| Error::Closed)
            .and_then(|committed| committed);
        let adopted = match committed {
            Ok(adopted) => adopted,
            Err(error) => return Err(self.fail(error)),
        };
        tracing::info!(
            node_id = adopted.node_id,
            index = adopted.index,
            keys = adopted.keys,
            dir = %dir.display(),
            "the single store is now node {own} of a new cluster; a restart serves it as that node"
        );
        let cluster = match ClusterNode::start_serving_into(
            &dir,
            self.plan.clone(),
            Some(self.store.state.clone()),
        )
        .await
        {
            Ok(cluster) => cluster,
            Err(error) => return Err(self.fail(error)),
        };
        self.serve(Backend::Member(ReplicatedStore::new(cluster.clone())));
        tracing::info!(
            "node {own} serves the new cluster; writes waited {} ms for the change",
            paused_at.elapsed().as_millis()
        );
        Ok(cluster)
    }

    /// Turns writes away and waits until no call is inside the single store,
    /// then takes it out; on a timeout the single store serves again.
    async fn pause(&self) -> Result<DurableStore> {
        let mut previous = self.store.backend.swap(Arc::new(Backend::Unavailable {
            reason: "this node is becoming a cluster member; retry in a moment".into(),
            failed: false,
        }));
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            match Arc::try_unwrap(previous) {
                Ok(Backend::Single(store)) => match Arc::try_unwrap(store) {
                    Ok(store) => return Ok(store),
                    Err(store) => previous = Arc::new(Backend::Single(store)),
                },
                Ok(other) => {
                    self.serve(other);
                    return Err(Error::InvalidArgument(
                        "this node is not a single store".into(),
                    ));
                }
                Err(shared) => previous = shared,
            }
            if Instant::now() >= deadline {
                self.store.backend.store(previous);
                self.store
                    .generation
                    .send_modify(|generation| *generation += 1);
                return Err(Error::Unavailable {
                    reason: "requests in flight did not finish; try again".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn serve(&self, backend: Backend) {
        self.store.serve(backend);
    }

    /// After the commit only a restart can go on: writes are refused with
    /// the reason, reads serve the unchanged data.
    fn fail(&self, error: Error) -> Error {
        let reason = format!(
            "becoming a cluster member failed after the data directory changed ({error}); \
             restart walrus serve, which serves the directory as node {}",
            self.plan.node_id
        );
        tracing::error!("{reason}");
        self.serve(Backend::Unavailable {
            reason: reason.clone(),
            failed: true,
        });
        Error::Failed { reason }
    }

    /// Closes the single store, if it still serves, once the last call
    /// holding it is done (or leaves that to the last holder).
    pub(super) async fn close(&self) -> Result<()> {
        let _one_at_a_time = self.lock.lock().await;
        if !matches!(&*self.store.current(), Backend::Single(_)) {
            return Ok(());
        }
        let store = match self.pause().await {
            Ok(store) => store,
            // Still held after the wait: dropping the last handle closes it.
            Err(_) => return Ok(()),
        };
        self.serve(Backend::Unavailable {
            reason: "the server is shutting down".into(),
            failed: false,
        });
        tokio::task::spawn_blocking(move || store.close())
            .await
            .map_err(|_| Error::Closed)?
    }
}

/// Peers must be able to reach the address this node advertises.
fn check_reachable(advertise: &str) -> Result<()> {
    let unspecified = advertise
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|address| address.ip().is_unspecified() || address.port() == 0);
    if unspecified {
        return Err(Error::InvalidArgument(format!(
            "this node would tell its peers to reach it at {advertise}; \
             restart it with --advertise HOST:PORT (an address they can reach)"
        )));
    }
    Ok(())
}

/// A one-voter cluster elects itself within an election timeout or two.
pub(super) async fn wait_until_leader(cluster: &ClusterNode) -> Result<()> {
    let deadline = Instant::now() + cluster.request_timeout().max(Duration::from_secs(5));
    while !cluster.is_leader() {
        if Instant::now() >= deadline {
            return Err(Error::Unavailable {
                reason: "the new cluster has not elected this node yet; retry".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
