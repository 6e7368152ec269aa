//! Writes a follower forwards to the leader, coalesced into batches.
//!
//! Each write a follower takes would otherwise be one HTTP request to the
//! leader, parsed and answered on its own. Instead a write joins a queue, and
//! at most [`MAX_SENDERS`] requests are in flight at a time, each carrying
//! every write that was waiting when it left (`/raft/forward-batch`): under
//! load, one round trip carries many writes, and the leader proposes them
//! together, so they share its append and sync.
//!
//! Invariants:
//! - a write is in at most one request, and its caller gets exactly one
//!   answer: the leader's, `Unreachable` (nothing was delivered: safe to
//!   retry) or `Failed` (it may have been applied: the outcome is unknown);
//! - a write goes to the leader its caller chose (a batch holds writes for
//!   one peer), within its caller's deadline;
//! - a write whose caller has given up (its deadline passed, and it told its
//!   client so) is never sent: a retry by that client cannot apply it twice;
//! - the senders run on their own tasks, so a caller that gives up strands
//!   no other write;
//! - a batch still unanswered [`LEADER_MOVED_GRACE`] after this node learns
//!   of another leader is abandoned as of unknown outcome: a leader cut off
//!   by a partition that drops packets never answers, and its senders would
//!   otherwise hold back, until their deadline, the writes for the new one.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::network::{Peer, PeerError};
use super::{NodeId, Proposal};
use crate::store::Outcome;

/// Most forward requests in flight from one node.
const MAX_SENDERS: usize = 4;
/// A batch stops taking writes past this many command bytes (a write larger
/// than that goes alone).
const MAX_BATCH_BYTES: usize = 8 << 20;
/// Most writes in one batch.
const MAX_BATCH_WRITES: usize = 1024;

/// How long a request to a node may still take once this node knows of
/// another leader. A node that lost its place but still answers says so
/// well within it (its definitive answer is worth the wait); one cut off by
/// a partition never does.
pub const LEADER_MOVED_GRACE: Duration = Duration::from_millis(250);

/// Resolves once this node knows a leader other than the node given.
pub type LeaderMoved = Arc<dyn Fn(NodeId) -> BoxFuture<'static, ()> + Send + Sync>;

/// Why writes sent to `leader` were given up when leadership left it.
pub fn leader_left(leader: NodeId) -> String {
    format!("leadership left node {leader} while the writes were on their way to it")
}

/// `request`'s answer, or `None` when `leader_moved` says leadership left
/// `leader` and `request` was still unanswered [`LEADER_MOVED_GRACE`] later.
pub async fn unless_leader_moved<T>(
    request: impl Future<Output = T>,
    leader: NodeId,
    leader_moved: Option<&LeaderMoved>,
) -> Option<T> {
    let Some(leader_moved) = leader_moved else {
        return Some(request.await);
    };
    tokio::pin!(request);
    tokio::select! {
        answer = &mut request => return Some(answer),
        () = leader_moved(leader) => {}
    }
    tokio::time::timeout(LEADER_MOVED_GRACE, request).await.ok()
}

/// What the leader answers for a forwarded write.
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardAnswer {
    Applied(Outcome),
    /// The receiver is not the leader (any more); nothing was proposed.
    NotLeader,
    /// The leader proposed it and could not finish: the outcome is unknown.
    Failed(String),
    /// The leader is short of disk space and did not propose it (the reason).
    DiskLow(String),
}

/// What became of a forwarded write.
#[derive(Debug)]
pub enum Forwarded {
    /// The receiver's answer.
    Answer(ForwardAnswer),
    /// The peer did not take it: nothing reached it, or it refused the
    /// message before acting on it.
    Unreachable,
    /// The exchange broke after the write may have arrived.
    Failed(String),
}

struct Waiting {
    proposal: Proposal,
    reply: oneshot::Sender<Forwarded>,
    peer: Arc<Peer>,
    deadline: Instant,
}

#[derive(Default)]
struct QueueState {
    waiting: Vec<Waiting>,
    senders: usize,
}

/// The queue of writes waiting to be forwarded.
#[derive(Default)]
pub struct ForwardQueue {
    state: Mutex<QueueState>,
    /// When set, a batch to a node that is no longer the leader is
    /// abandoned (see [`unless_leader_moved`]).
    leader_moved: Option<LeaderMoved>,
}

impl ForwardQueue {
    pub fn new(leader_moved: LeaderMoved) -> ForwardQueue {
        ForwardQueue {
            state: Mutex::default(),
            leader_moved: Some(leader_moved),
        }
    }

    /// Forwards `proposal` to `peer` (the leader as this caller knows it)
    /// in the next batch that leaves, and returns what became of it.
    pub async fn forward(
        self: &Arc<Self>,
        peer: Arc<Peer>,
        proposal: Proposal,
        timeout: Duration,
    ) -> Forwarded {
        let (reply, answer) = oneshot::channel();
        let deadline = Instant::now() + timeout;
        let start_sender = {
            let mut state = self.state.lock();
            state.waiting.push(Waiting {
                proposal,
                reply,
                peer,
                deadline,
            });
            let start = state.senders < MAX_SENDERS;
            if start {
                state.senders += 1;
            }
            start
        };
        if start_sender {
            let queue = self.clone();
            tokio::spawn(async move { queue.send_batches().await });
        }
        answer
            .await
            .unwrap_or_else(|_| Forwarded::Failed("the forwarded write was dropped".into()))
    }

    /// Sends batches until nothing waits.
    async fn send_batches(&self) {
        loop {
            let batch = {
                let mut state = self.state.lock();
                // Callers that gave up are told nothing more, and their
                // writes are not sent.
                state.waiting.retain(|waiting| !waiting.reply.is_closed());
                if state.waiting.is_empty() {
                    state.senders -= 1;
                    return;
                }
                take_batch(&mut state.waiting)
            };
            let Some(first) = batch.first() else {
                continue;
            };
            let peer = first.peer.clone();
            let deadline = batch.iter().map(|waiting| waiting.deadline).max();
            let timeout = deadline
                .unwrap_or_else(Instant::now)
                .saturating_duration_since(Instant::now());
            let (proposals, replies): (Vec<Proposal>, Vec<_>) = batch
                .into_iter()
                .map(|waiting| (waiting.proposal, waiting.reply))
                .unzip();
            let count = replies.len();
            let call = peer.call::<_, Vec<ForwardAnswer>>("forward-batch", &proposals, timeout);
            let Some(answers) =
                unless_leader_moved(call, peer.target(), self.leader_moved.as_ref()).await
            else {
                let reason = leader_left(peer.target());
                for reply in replies {
                    let _ = reply.send(Forwarded::Failed(reason.clone()));
                }
                continue;
            };
            match answers {
                Ok(answers) if answers.len() == count => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(Forwarded::Answer(answer));
                    }
                }
                Ok(answers) => {
                    let reason = format!(
                        "the leader answered {} of {count} forwarded writes",
                        answers.len()
                    );
                    for reply in replies {
                        let _ = reply.send(Forwarded::Failed(reason.clone()));
                    }
                }
                Err(
                    PeerError::Unreachable { .. }
                    | PeerError::Refused { .. }
                    | PeerError::NoSuchMessage { .. },
                ) => {
                    for reply in replies {
                        let _ = reply.send(Forwarded::Unreachable);
                    }
                }
                Err(error @ PeerError::Failed { .. }) => {
                    let reason = error.to_string();
                    for reply in replies {
                        let _ = reply.send(Forwarded::Failed(reason.clone()));
                    }
                }
            }
        }
    }
}

/// The oldest waiting writes for the peer of the oldest one, up to the
/// batch bounds (at least one).
fn take_batch(waiting: &mut Vec<Waiting>) -> Vec<Waiting> {
    let Some(first) = waiting.first() else {
        return Vec::new();
    };
    let peer = first.peer.clone();
    let mut bytes = 0;
    let mut batch = Vec::new();
    let mut rest = Vec::with_capacity(waiting.len());
    for item in waiting.drain(..) {
        let size = item.proposal.payload.len();
        let fits =
            batch.is_empty() || (batch.len() < MAX_BATCH_WRITES && bytes + size <= MAX_BATCH_BYTES);
        if Arc::ptr_eq(&item.peer, &peer) && fits {
            bytes += size;
            batch.push(item);
        } else {
            rest.push(item);
        }
    }
    *waiting = rest;
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::network::PeerIdentity;

    fn peer(target: u64) -> Arc<Peer> {
        peer_over(target, None)
    }

    fn peer_over(
        target: u64,
        transport: Option<Arc<dyn crate::raft::network::PeerTransport>>,
    ) -> Arc<Peer> {
        let identity = PeerIdentity {
            own_id: 1,
            token: None,
            faults: None,
            tls: None,
            transport,
            health: Default::default(),
        };
        Arc::new(Peer::new("127.0.0.1:9", target, &identity).expect("peer"))
    }

    /// A network whose messages vanish: no answer, no error, ever.
    #[derive(Debug)]
    struct Silent;

    impl crate::raft::network::PeerTransport for Silent {
        fn deliver(
            &self,
            _from: u64,
            _to: u64,
            _message: &'static str,
            _body: Vec<u8>,
        ) -> BoxFuture<'static, Result<Vec<u8>, PeerError>> {
            Box::pin(std::future::pending())
        }
    }

    /// The leader as a test sets it, and a [`LeaderMoved`] that watches it.
    fn leader_watch(leader: u64) -> (tokio::sync::watch::Sender<u64>, LeaderMoved) {
        let (set_leader, leader_now) = tokio::sync::watch::channel(leader);
        let leader_moved: LeaderMoved = Arc::new(move |from| {
            let mut leader_now = leader_now.clone();
            Box::pin(async move {
                let _ = leader_now.wait_for(|&leader| leader != from).await;
            })
        });
        (set_leader, leader_moved)
    }

    #[tokio::test(start_paused = true)]
    async fn writes_to_a_leader_that_went_silent_are_given_up_once_another_leads() {
        let silent = peer_over(2, Some(Arc::new(Silent)));
        let (moved, leader_moved) = leader_watch(2);
        let queue = Arc::new(ForwardQueue::new(leader_moved));
        let proposal = || Proposal { payload: vec![1] };
        // More writes than senders, so some wait behind the hung ones.
        let started = Instant::now();
        let writes: Vec<_> = (0..MAX_SENDERS + 2)
            .map(|_| {
                let queue = queue.clone();
                let silent = silent.clone();
                tokio::spawn(async move {
                    queue
                        .forward(silent, proposal(), Duration::from_secs(5))
                        .await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(writes.iter().all(|write| !write.is_finished()));
        moved.send(3).expect("the writes are watching");
        for write in writes {
            match write.await.expect("the write's task") {
                Forwarded::Failed(reason) => assert!(reason.contains("leadership left node 2")),
                other => panic!("expected an unknown outcome, got {other:?}"),
            }
        }
        // Given up within the grace after the move, not at the 5 s deadline.
        assert!(started.elapsed() <= Duration::from_secs(1) + 2 * LEADER_MOVED_GRACE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_answered_within_the_grace_keeps_its_answer() {
        let (moved, leader_moved) = leader_watch(2);
        moved.send(3).expect("watched");
        let late = async {
            tokio::time::sleep(LEADER_MOVED_GRACE / 2).await;
            "answer"
        };
        assert_eq!(
            unless_leader_moved(late, 2, Some(&leader_moved)).await,
            Some("answer")
        );
        let never = std::future::pending::<&str>();
        assert_eq!(
            unless_leader_moved(never, 2, Some(&leader_moved)).await,
            None
        );
        let unwatched = async { "answer" };
        assert_eq!(
            unless_leader_moved(unwatched, 2, None).await,
            Some("answer")
        );
    }

    fn waiting(size: usize, to: &Arc<Peer>) -> Waiting {
        let (reply, _answer) = oneshot::channel();
        let proposal = Proposal {
            payload: vec![0; size],
        };
        Waiting {
            proposal,
            reply,
            peer: to.clone(),
            deadline: Instant::now(),
        }
    }

    #[test]
    fn a_batch_takes_the_oldest_writes_for_one_peer_within_its_bounds_and_always_one() {
        let leader = peer(2);
        let mut queue: Vec<Waiting> = (0..3).map(|_| waiting(3 << 20, &leader)).collect();
        let batch = take_batch(&mut queue);
        assert_eq!(
            (batch.len(), queue.len()),
            (2, 1),
            "8 MiB holds two of 3 MiB"
        );
        let mut huge = vec![waiting(20 << 20, &leader), waiting(10, &leader)];
        assert_eq!(take_batch(&mut huge).len(), 1, "a large write goes alone");
        let mut many: Vec<Waiting> = (0..MAX_BATCH_WRITES + 5)
            .map(|_| waiting(1, &leader))
            .collect();
        assert_eq!(take_batch(&mut many).len(), MAX_BATCH_WRITES);
        assert_eq!(many.len(), 5);
        // Writes whose callers chose another leader wait for their own batch.
        let other = peer(3);
        let mut mixed = vec![waiting(1, &leader), waiting(1, &other), waiting(1, &leader)];
        let batch = take_batch(&mut mixed);
        assert_eq!(batch.len(), 2);
        assert!(batch.iter().all(|item| Arc::ptr_eq(&item.peer, &leader)));
        assert_eq!(mixed.len(), 1);
        assert!(Arc::ptr_eq(&mixed[0].peer, &other));
    }
}
