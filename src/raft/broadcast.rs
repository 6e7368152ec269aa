//! Pub/Sub messages sent to the other members, so that a message PUBLISHed
//! on any node reaches the subscribers of every node, as Redis Cluster
//! broadcasts it.
//!
//! Delivery is at most once, like Pub/Sub itself: nothing is logged or
//! retried. Each peer has one queue and one task sending it batches in
//! order, so the messages one node publishes arrive at another in the order
//! they were published. A queue is bounded in bytes: while a peer is
//! unreachable or slow, messages past the bound are dropped (and counted)
//! instead of piling up.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::NodeId;
use super::network::Peer;

/// One PUBLISHed (or SPUBLISHed) message, as it travels between nodes:
/// `/raft/publish` carries a batch of messages, `/raft/spublish` a batch of
/// shard messages. The kind travels in the path, not the body, so the body
/// stays what nodes that predate shard channels read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub channel: Bytes,
    pub payload: Bytes,
    /// SPUBLISHed on a shard channel.
    #[serde(skip)]
    pub shard: bool,
}

/// Bytes of messages a peer's queue holds before new ones are dropped.
const QUEUE_BYTES: usize = 32 << 20;
/// Bytes of messages sent to a peer in one request, at most (well under the
/// peer's body bound; a larger message goes alone).
const BATCH_BYTES: usize = 8 << 20;
/// How long one request to a peer may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

impl Published {
    fn size(&self) -> usize {
        16 + self.channel.len() + self.payload.len()
    }
}

/// One peer's queue: the messages, and their bytes.
#[derive(Debug, Clone)]
struct Queue {
    messages: mpsc::UnboundedSender<Published>,
    bytes: Arc<AtomicUsize>,
}

/// The queues to the other members.
#[derive(Debug, Default)]
pub struct Broadcaster {
    queues: Mutex<HashMap<NodeId, Queue>>,
    /// Messages dropped: a full queue, or a request that failed.
    pub dropped: Arc<AtomicU64>,
}

impl Broadcaster {
    /// Queues `message` for `peer` (node `id`), starting its sending task on
    /// first use; a message that would pass the queue's bound is dropped.
    pub fn send(&self, id: NodeId, peer: impl FnOnce() -> Option<Arc<Peer>>, message: Published) {
        let mut queues = self.queues.lock();
        let queue = match queues.get(&id) {
            Some(queue) if !queue.messages.is_closed() => queue.clone(),
            _ => {
                let Some(peer) = peer() else {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let (messages, receiver) = mpsc::unbounded_channel();
                let queue = Queue {
                    messages,
                    bytes: Arc::default(),
                };
                tokio::spawn(send_in_order(
                    peer,
                    receiver,
                    queue.bytes.clone(),
                    self.dropped.clone(),
                ));
                queues.insert(id, queue.clone());
                queue
            }
        };
        drop(queues);
        let size = message.size();
        if queue.bytes.fetch_add(size, Ordering::Relaxed) + size > QUEUE_BYTES {
            queue.bytes.fetch_sub(size, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if queue.messages.send(message).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sends a peer's queue in batches, in order, until the queue is dropped.
async fn send_in_order(
    peer: Arc<Peer>,
    mut receiver: mpsc::UnboundedReceiver<Published>,
    queued: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
) {
    // A batch is of one kind; a message of the other kind starts the next.
    let mut next = None;
    loop {
        let first = match next.take() {
            Some(message) => message,
            None => match receiver.recv().await {
                Some(message) => message,
                None => return,
            },
        };
        let shard = first.shard;
        let mut bytes = first.size();
        let mut batch = vec![first];
        while bytes < BATCH_BYTES {
            let Ok(message) = receiver.try_recv() else {
                break;
            };
            if message.shard != shard {
                next = Some(message);
                break;
            }
            bytes += message.size();
            batch.push(message);
        }
        queued.fetch_sub(bytes, Ordering::Relaxed);
        let sent = batch.len() as u64;
        let path = if shard { "spublish" } else { "publish" };
        if let Err(error) = peer.call::<_, ()>(path, &batch, SEND_TIMEOUT).await {
            tracing::debug!(%error, messages = sent, "a Pub/Sub broadcast to a peer failed");
            dropped.fetch_add(sent, Ordering::Relaxed);
        }
    }
}
