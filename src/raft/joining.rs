//! A node that joins a cluster with an empty log votes for no one until it
//! holds everything the cluster had committed when it joined.
//!
//! Raft counts on a voter never forgetting an entry it acknowledged: a
//! committed entry is on a quorum, and any candidate that can win must have
//! it. A voter whose data directory was wiped and that is restarted under its
//! old id without `--peers` looks exactly like a new node waiting to be added,
//! and openraft would grant it vote requests by its now-empty log. With one
//! other voter short of the newest entries (a 3-node cluster whose most
//! up-to-date other member is down), that voter could then be elected and
//! overwrite entries the cluster had acknowledged to clients.
//!
//! So a node starting uninitialized without `--peers` is *joining*: it
//! refuses vote, pre-vote and leadership-transfer requests, while appends and
//! snapshots from the leader fill its log as usual. It has *joined* once a
//! leader has told it a commit index from the leader's own term (so, by the
//! leader's completeness, every entry committed before is at or below it)
//! and it has applied up to that index. A new node is a learner while it
//! catches up and is never asked for a vote then, so the rule costs it
//! nothing. The state is kept in the `MEMBER` file ([`Member::joining`]),
//! so a restart before the node has caught up does not forget it.
//!
//! A wiped voter whose leader had confirmed its log is told so by the leader
//! ([`super::network`]'s `lost-log` message) and stops instead.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use openraft::vote::RaftLeaderId;

use super::TypeConfig;
use super::member::{self, Member};
use crate::error::Result;
use crate::storage::FileSystem;

/// Whether this node is still joining, and the `MEMBER` file that records it.
pub struct Joining {
    active: AtomicBool,
    /// The first target a leader gave ([`Joining::target_of`]). Kept, not
    /// replaced by later ones: under steady writes each append's commit
    /// index runs ahead of what this node has applied when it checks, and
    /// the first already covers everything committed before it joined.
    target: parking_lot::Mutex<Option<u64>>,
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    member: parking_lot::Mutex<Member>,
}

impl Joining {
    /// The joining state of a node whose directory records `member`: joining
    /// when the file says so, or when the node holds no Raft state and was
    /// not given `--peers` (it waits to be added). Records a newly joining
    /// node in the file, durably, before it answers any peer.
    pub fn open(
        fs: Arc<dyn FileSystem>,
        dir: PathBuf,
        member: Member,
        initialized: bool,
        has_peers: bool,
    ) -> Result<Joining> {
        let joining = member.joining || (!initialized && !has_peers);
        let joining_state = Joining {
            active: AtomicBool::new(joining),
            target: parking_lot::Mutex::new(None),
            fs,
            dir,
            member: parking_lot::Mutex::new(member),
        };
        if joining {
            joining_state.record(true)?;
        }
        Ok(joining_state)
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// The index a joining node must apply before it has joined, as one
    /// append from its leader tells it: the leader's commit index, if that
    /// commit is of the leader's own term. An earlier term's commit index
    /// may lag entries the cluster committed before this leader (a leader
    /// commits them only with the first entry of its own term).
    fn target_of(request: &openraft::raft::AppendEntriesRequest<TypeConfig>) -> Option<u64> {
        let commit = request.leader_commit.as_ref()?;
        let leader = request.vote.leader_id();
        let own_term = request.vote.is_committed() && commit.leader_id.term() == leader.term();
        own_term.then_some(commit.index)
    }

    /// Notes what `request` from a leader gives as the target, if it gives
    /// one and none was noted; returns the target noted so far.
    pub fn note_target(
        &self,
        request: &openraft::raft::AppendEntriesRequest<TypeConfig>,
    ) -> Option<u64> {
        let mut target = self.target.lock();
        if target.is_none() {
            *target = Joining::target_of(request);
        }
        *target
    }

    /// Ends joining, durably: the node has applied up to a target from
    /// [`Joining::note_target`]. Blocks on one small synced write. Returns
    /// whether this call ended it (of concurrent calls, one does).
    pub fn finish(&self) -> Result<bool> {
        if !self.is_active() {
            return Ok(false);
        }
        let ended = self.record(false)?;
        self.active.store(false, Ordering::Release);
        Ok(ended)
    }

    /// Records `joining` in the `MEMBER` file; whether that changed it.
    fn record(&self, joining: bool) -> Result<bool> {
        let mut member = self.member.lock();
        if member.joining == joining {
            return Ok(false);
        }
        let updated = Member {
            joining,
            ..member.clone()
        };
        member::write(&*self.fs, &self.dir, &updated)?;
        *member = updated;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StdFs;

    fn member(joining: bool) -> Member {
        Member {
            node_id: 4,
            advertise: "127.0.0.1:9".into(),
            joining,
        }
    }

    #[test]
    fn an_empty_node_without_peers_joins_and_a_restart_remembers_it_until_it_finishes() {
        let temp = tempfile::tempdir().expect("dir");
        let dir = temp.path().to_path_buf();
        let open = |member: Member, initialized, has_peers| {
            Joining::open(Arc::new(StdFs), dir.clone(), member, initialized, has_peers)
                .expect("open")
        };
        // Bootstrapping with --peers, or a node that holds Raft state: not joining.
        assert!(!open(member(false), false, true).is_active());
        assert!(!open(member(false), true, false).is_active());
        // Waiting to be added: joining, and written down.
        let joining = open(member(false), false, false);
        assert!(joining.is_active());
        let recorded = member::read(&StdFs, &dir).expect("read").expect("member");
        assert!(recorded.joining);
        // Restarted with some state but not caught up: still joining.
        assert!(open(recorded.clone(), true, false).is_active());
        assert!(joining.finish().expect("finish"), "this call ended it");
        assert!(!joining.finish().expect("finish again"), "already ended");
        assert!(!joining.is_active());
        let recorded = member::read(&StdFs, &dir).expect("read").expect("member");
        assert!(!recorded.joining);
        assert!(!open(recorded, true, false).is_active());
    }

    #[test]
    fn the_first_target_is_kept() {
        let temp = tempfile::tempdir().expect("dir");
        let joining = Joining::open(
            Arc::new(StdFs),
            temp.path().into(),
            member(false),
            false,
            false,
        )
        .expect("open");
        assert_eq!(
            joining.note_target(&request(Some(log_id(4, 10)), true)),
            None
        );
        assert_eq!(
            joining.note_target(&request(Some(log_id(5, 40)), true)),
            Some(40)
        );
        assert_eq!(
            joining.note_target(&request(Some(log_id(5, 90)), true)),
            Some(40)
        );
    }

    fn log_id(term: u64, index: u64) -> super::super::LogId {
        super::super::LogId {
            leader_id: openraft::impls::leader_id_adv::LeaderId { term, node_id: 1 },
            index,
        }
    }

    /// An append from the leader of term 5, committed or not.
    fn request(
        commit: Option<super::super::LogId>,
        committed: bool,
    ) -> openraft::raft::AppendEntriesRequest<TypeConfig> {
        let vote = if committed {
            super::super::Vote::new_committed(5, 1)
        } else {
            super::super::Vote::new(5, 1)
        };
        openraft::raft::AppendEntriesRequest {
            vote,
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: commit,
        }
    }

    #[test]
    fn only_a_commit_of_the_leaders_own_term_is_a_target() {
        assert_eq!(
            Joining::target_of(&request(Some(log_id(5, 40)), true)),
            Some(40)
        );
        assert_eq!(
            Joining::target_of(&request(Some(log_id(4, 40)), true)),
            None
        );
        assert_eq!(
            Joining::target_of(&request(Some(log_id(5, 40)), false)),
            None
        );
        assert_eq!(Joining::target_of(&request(None, true)), None);
    }
}
