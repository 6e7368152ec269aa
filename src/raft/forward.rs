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
//! - the senders run on their own tasks, so a caller that gives up (its
//!   deadline passed) strands no other write.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::Proposal;
use super::cluster::ForwardAnswer;
use super::network::{Peer, PeerError};

/// Most forward requests in flight from one node.
const MAX_SENDERS: usize = 4;
/// A batch stops taking writes past this many command bytes (a write larger
/// than that goes alone).
const MAX_BATCH_BYTES: usize = 8 << 20;
/// Most writes in one batch.
const MAX_BATCH_WRITES: usize = 1024;

/// What became of a forwarded write.
#[derive(Debug)]
pub enum Forwarded {
    /// The receiver's answer.
    Answer(ForwardAnswer),
    /// Nothing reached the peer.
    Unreachable,
    /// The exchange broke after the write may have arrived.
    Failed(String),
}

struct Waiting {
    proposal: Proposal,
    reply: oneshot::Sender<Forwarded>,
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
}

impl ForwardQueue {
    /// Forwards `proposal` to `peer` (the leader as this caller knows it)
    /// in the next batch that leaves, and returns what became of it.
    pub async fn forward(
        self: &Arc<Self>,
        peer: Arc<Peer>,
        proposal: Proposal,
        timeout: Duration,
    ) -> Forwarded {
        let (reply, answer) = oneshot::channel();
        let start_sender = {
            let mut state = self.state.lock();
            state.waiting.push(Waiting { proposal, reply });
            let start = state.senders < MAX_SENDERS;
            if start {
                state.senders += 1;
            }
            start
        };
        if start_sender {
            let queue = self.clone();
            tokio::spawn(async move { queue.send_batches(peer, timeout).await });
        }
        answer
            .await
            .unwrap_or_else(|_| Forwarded::Failed("the forwarded write was dropped".into()))
    }

    /// Sends batches to `peer` until nothing waits.
    async fn send_batches(&self, peer: Arc<Peer>, timeout: Duration) {
        loop {
            let batch = {
                let mut state = self.state.lock();
                if state.waiting.is_empty() {
                    state.senders -= 1;
                    return;
                }
                take_batch(&mut state.waiting)
            };
            let (proposals, replies): (Vec<Proposal>, Vec<_>) = batch
                .into_iter()
                .map(|waiting| (waiting.proposal, waiting.reply))
                .unzip();
            let count = replies.len();
            let answers = peer
                .call::<_, Vec<ForwardAnswer>>("forward-batch", &proposals, timeout)
                .await;
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
                Err(PeerError::Unreachable { .. }) => {
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

/// The oldest waiting writes, up to the batch bounds (at least one).
fn take_batch(waiting: &mut Vec<Waiting>) -> Vec<Waiting> {
    let mut bytes = 0;
    let mut count = 0;
    for item in waiting.iter() {
        let size = item.proposal.payload.len();
        if count > 0 && (count == MAX_BATCH_WRITES || bytes + size > MAX_BATCH_BYTES) {
            break;
        }
        bytes += size;
        count += 1;
    }
    let rest = waiting.split_off(count);
    std::mem::replace(waiting, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(size: usize) -> (Waiting, oneshot::Receiver<Forwarded>) {
        let (reply, answer) = oneshot::channel();
        let proposal = Proposal {
            payload: vec![0; size],
        };
        (Waiting { proposal, reply }, answer)
    }

    #[test]
    fn a_batch_takes_the_oldest_writes_within_its_bounds_and_always_one() {
        let mut queue: Vec<Waiting> = (0..3).map(|_| waiting(3 << 20).0).collect();
        let batch = take_batch(&mut queue);
        assert_eq!(
            (batch.len(), queue.len()),
            (2, 1),
            "8 MiB holds two of 3 MiB"
        );
        let mut huge = vec![waiting(20 << 20).0, waiting(10).0];
        assert_eq!(take_batch(&mut huge).len(), 1, "a large write goes alone");
        let mut many: Vec<Waiting> = (0..MAX_BATCH_WRITES + 5).map(|_| waiting(1).0).collect();
        assert_eq!(take_batch(&mut many).len(), MAX_BATCH_WRITES);
        assert_eq!(many.len(), 5);
    }
}
