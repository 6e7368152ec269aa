//! Replication: walrus's state replicated with Raft (openraft 0.10).
//!
//! - `log_store`: the Raft log, the vote and the committed position, kept in
//!   walrus's own WAL (the same segments, records and checksums) by one writer
//!   thread that batches appends into one write and one sync.
//! - `state_machine`: applies committed entries to the in-memory [`State`]
//!   (revision = log index) and builds and installs snapshots in the usual
//!   snapshot files.
//! - `network`: the peer transport, HTTP on the node's own port under `/raft/`,
//!   bodies in postcard.
//! - `cluster`: one replicated node: starting it, writes (forwarded to the
//!   leader from a follower), linearizable reads (read index), membership and
//!   status.
//!
//! [`State`]: crate::store::State

pub mod adopt;
pub mod broadcast;
pub mod cluster;
pub mod fault;
pub mod formats;
pub mod forward;
pub mod joining;
pub mod log_store;
pub mod member;
pub mod network;
pub mod reach;
pub mod runtime;
pub mod space;
pub mod state_machine;
pub mod watch;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::store::Outcome;

pub use cluster::{ClusterNode, ClusterOptions, ClusterStatus, PeerRefusal, parse_peers};

/// A client write as the Raft log carries it: the command in walrus's log
/// encoding (issue time and command; see `store::command`), so the entry's body
/// is exactly what a single node's WAL record holds.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Written as one byte string: postcard encodes it exactly as it encodes
    /// a sequence of `u8` (a varint length, then the bytes), so logs and peer
    /// messages of earlier builds read unchanged, without a call per byte.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

impl fmt::Debug for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Proposal({} bytes)", self.payload.len())
    }
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What applying a proposal did, sent back to the writer (and across the peer
/// port to a follower that forwarded the write).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub outcome: Option<Outcome>,
}

/// walrus's Raft types: node ids are numbers, a node is known by its HTTP
/// address, entries carry [`Proposal`]s, and a client write is answered through
/// a [`Replier`]. Written out rather than by `declare_raft_types!`, which cannot
/// name a responder; the other types are openraft's defaults.
#[derive(Debug, Clone, Copy, Default, Eq, PartialEq, Ord, PartialOrd)]
pub struct TypeConfig {}

impl openraft::RaftTypeConfig for TypeConfig {
    type D = Proposal;
    type R = Applied;
    type NodeId = u64;
    type Node = openraft::BasicNode;
    type Term = u64;
    type LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, u64>;
    type Vote = openraft::impls::Vote<Self::LeaderId>;
    type Payload = openraft::EntryPayload<Proposal, u64, openraft::BasicNode>;
    type Entry =
        openraft::Entry<<Self::LeaderId as openraft::vote::RaftLeaderId>::Committed, Self::Payload>;
    type AsyncRuntime = runtime::RaftRuntime;
    type Responder<T>
        = Replier<T>
    where
        T: openraft::OptionalSend + 'static;
    type Batch<T>
        = openraft::impls::InlineBatch<T>
    where
        T: openraft::OptionalSend + 'static;
    type ErrorSource = openraft::impls::BoxedErrorSource;
}

/// Answers one client write from inside Raft: openraft calls it with the
/// write's result once the entry is applied (or the write is refused), so the
/// leader needs no task of its own waiting for each write. A replier dropped
/// unanswered (its entry was discarded) is called with `None`.
pub struct Replier<T: 'static>(Option<Box<dyn FnOnce(Option<T>) + Send>>);

impl<T: 'static> Replier<T> {
    pub fn new(answer: impl FnOnce(Option<T>) + Send + 'static) -> Replier<T> {
        Replier(Some(Box::new(answer)))
    }
}

impl<T: openraft::OptionalSend + 'static> openraft::raft::responder::Responder<TypeConfig, T>
    for Replier<T>
{
    fn on_complete(mut self, result: T) {
        if let Some(answer) = self.0.take() {
            answer(Some(result));
        }
    }
}

impl<T: 'static> Drop for Replier<T> {
    fn drop(&mut self) {
        if let Some(answer) = self.0.take() {
            answer(None);
        }
    }
}

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachine>;
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type LeaderIdOf = openraft::type_config::alias::LeaderIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type LogEntry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;

/// Wraps an error as the `io::Error` openraft's storage traits return.
pub(crate) fn io_error(error: impl fmt::Display) -> std::io::Error {
    std::io::Error::other(error.to_string())
}

#[cfg(test)]
mod tests {
    //! openraft's own storage conformance suite against walrus's log store and
    //! state machine, on a real directory and on the simulated disk.

    use std::path::Path;
    use std::sync::Arc;

    use openraft::StorageError;
    use openraft::testing::log::{StoreBuilder, Suite};

    use super::TypeConfig;
    use super::log_store::LogStore;
    use super::state_machine::StateMachine;
    use crate::storage::{FileSystem, StdFs, WalOptions};
    use crate::store::FsyncPolicy;
    use crate::testing::SimFs;

    fn small_wal() -> WalOptions {
        WalOptions {
            segment_bytes: 64 << 10,
            ..WalOptions::default()
        }
    }

    struct RealDir;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RealDir {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
            let temp = tempfile::tempdir().expect("temp dir");
            let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
            let log = LogStore::open(
                fs.clone(),
                temp.path(),
                small_wal(),
                FsyncPolicy::Always,
                Arc::default(),
            )
            .expect("open the log");
            let machine = StateMachine::open(fs, temp.path(), Default::default())
                .expect("open the state machine");
            Ok((temp, log, machine))
        }
    }

    struct SimDisk;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, ()> for SimDisk {
        async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError<TypeConfig>> {
            let fs = Arc::new(SimFs::new(7));
            let dir = Path::new("/replica");
            fs.create_dir_all(dir).expect("dir");
            let fs: Arc<dyn FileSystem> = fs;
            let log = LogStore::open(
                fs.clone(),
                dir,
                small_wal(),
                FsyncPolicy::Always,
                Arc::default(),
            )
            .expect("open the log");
            let machine =
                StateMachine::open(fs, dir, Default::default()).expect("open the state machine");
            Ok(((), log, machine))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openraft_storage_suite_on_a_real_directory() {
        Suite::test_all(RealDir).await.expect("suite");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openraft_storage_suite_on_the_simulated_disk() {
        Suite::test_all(SimDisk).await.expect("suite");
    }
}

#[cfg(test)]
mod replier_tests {
    use std::sync::Arc;

    use openraft::raft::responder::Responder;
    use parking_lot::Mutex;

    use super::{Replier, TypeConfig};

    type Answers = Arc<Mutex<Vec<Option<u32>>>>;

    fn recording() -> (Replier<u32>, Answers) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&calls);
        (Replier::new(move |answer| seen.lock().push(answer)), calls)
    }

    #[test]
    fn a_completed_replier_answers_once_with_the_result() {
        let (replier, calls) = recording();
        Responder::<TypeConfig, u32>::on_complete(replier, 42);
        assert_eq!(*calls.lock(), vec![Some(42)]);
    }

    #[test]
    fn a_replier_dropped_unanswered_answers_none() {
        let (replier, calls) = recording();
        drop(replier);
        assert_eq!(*calls.lock(), vec![None]);
    }
}

#[cfg(test)]
mod proposal_tests {
    use super::Proposal;

    /// How a build before `serde_bytes` wrote a proposal: a plain `Vec<u8>`,
    /// which serde hands to postcard one `u8` at a time.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct ProposalAsSequence {
        payload: Vec<u8>,
    }

    #[test]
    fn a_proposal_is_encoded_byte_for_byte_as_earlier_builds_wrote_it() {
        for len in [0usize, 1, 127, 128, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let earlier = postcard::to_stdvec(&ProposalAsSequence {
                payload: payload.clone(),
            })
            .expect("encode");
            let now = postcard::to_stdvec(&Proposal {
                payload: payload.clone(),
            })
            .expect("encode");
            assert_eq!(now, earlier, "{len}-byte payload");
            let read: Proposal = postcard::from_bytes(&earlier).expect("decode");
            assert_eq!(read.payload, payload);
        }
    }
}
