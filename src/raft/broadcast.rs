//! Pub/Sub messages sent to the other members, so that a message PUBLISHed
//! on any node reaches the subscribers of every node, as Redis Cluster
//! broadcasts it.
//!
//! Delivery is at most once, like Pub/Sub itself: nothing is logged or
//! retried. Each peer has one queue and one task sending it batches in
//! order, so the messages one node publishes arrive at another in the order
//! they were published. A queue is bounded: while a peer is unreachable or
//! slow, messages past the bound are dropped (and counted) instead of
//! piling up.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::NodeId;
use super::network::Peer;

/// One PUBLISHed message, as it travels between nodes (`/raft/publish`
/// carries a batch of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub channel: Bytes,
    pub payload: Bytes,
}

/// Messages a peer's queue holds before new ones are dropped.
const QUEUE_MESSAGES: usize = 4096;
/// Messages sent to a peer in one request, at most.
const BATCH_MESSAGES: usize = 256;
/// How long one request to a peer may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// The queues to the other members.
#[derive(Debug, Default)]
pub struct Broadcaster {
    queues: Mutex<HashMap<NodeId, mpsc::Sender<Published>>>,
    /// Messages dropped: a full queue, or a request that failed.
    pub dropped: Arc<AtomicU64>,
}

impl Broadcaster {
    /// Queues `message` for `peer` (node `id`), starting its sending task on
    /// first use; a message that finds the queue full is dropped.
    pub fn send(&self, id: NodeId, peer: impl FnOnce() -> Option<Arc<Peer>>, message: Published) {
        let mut queues = self.queues.lock();
        let queue = match queues.get(&id) {
            Some(queue) if !queue.is_closed() => queue.clone(),
            _ => {
                let Some(peer) = peer() else {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let (queue, receiver) = mpsc::channel(QUEUE_MESSAGES);
                tokio::spawn(send_in_order(peer, receiver, self.dropped.clone()));
                queues.insert(id, queue.clone());
                queue
            }
        };
        drop(queues);
        if queue.try_send(message).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sends a peer's queue in batches, in order, until the queue is dropped.
async fn send_in_order(
    peer: Arc<Peer>,
    mut receiver: mpsc::Receiver<Published>,
    dropped: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(BATCH_MESSAGES);
    while receiver.recv_many(&mut batch, BATCH_MESSAGES).await > 0 {
        let sent = batch.len() as u64;
        if let Err(error) = peer.call::<_, ()>("publish", &batch, SEND_TIMEOUT).await {
            tracing::debug!(%error, messages = sent, "a Pub/Sub broadcast to a peer failed");
            dropped.fetch_add(sent, Ordering::Relaxed);
        }
        batch.clear();
    }
}
