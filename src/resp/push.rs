//! A connection's pushes: what reaches it outside its own requests and
//! replies (MONITOR lines, Pub/Sub messages). Other connections hold its
//! [`Outbox`]; the connection reads its [`Inbox`] between requests and sends
//! what is queued, encoded in the protocol it speaks then.
//!
//! Invariants: a connection's queue is bounded in bytes. A push that would
//! pass the bound cuts the connection off instead (Redis does the same with
//! its `client-output-buffer-limit` for pubsub clients), so a subscriber or
//! monitor that reads slowly never slows the connections that feed it and
//! never grows the server's memory without bound. Once cut off, an outbox
//! takes nothing more and its inbox ends, which closes the connection.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;

use super::frame::{Protocol, Reply};

/// The bytes a connection may have queued before it is cut off.
pub const PUSH_QUEUE_LIMIT: usize = 32 << 20;

/// One push.
#[derive(Debug, Clone)]
pub enum Push {
    /// A MONITOR line, ready to send (`+…\r\n` in either protocol).
    Line(Bytes),
    /// A message PUBLISHed on a channel the connection SUBSCRIBEd to.
    Message { channel: Bytes, payload: Bytes },
    /// A message whose channel matched a pattern the connection PSUBSCRIBEd.
    PatternMessage {
        pattern: Bytes,
        channel: Bytes,
        payload: Bytes,
    },
    /// A message SPUBLISHed on a shard channel the connection SSUBSCRIBEd to.
    ShardMessage { channel: Bytes, payload: Bytes },
    /// Client-side caching: these keys changed (`None`: every key may have,
    /// after a flush). RESP3 gets Redis's `invalidate` push; a RESP2
    /// connection gets it only as the connection another one's tracking
    /// redirects to, as a message on `__redis__:invalidate`, and only while
    /// it is in Pub/Sub mode (subscribed to any channel or pattern), as in
    /// Redis.
    Invalidate {
        keys: Option<Vec<Bytes>>,
        redirected: bool,
    },
    /// Client-side caching: the connection this one's invalidations were
    /// redirected to has closed (RESP3 only, as in Redis).
    RedirectBroken(u64),
}

/// The channel redirected invalidations arrive on, as in Redis.
pub const INVALIDATE_CHANNEL: &[u8] = b"__redis__:invalidate";

impl Push {
    /// What the push costs in the queue: about its encoded size.
    fn size(&self) -> usize {
        match self {
            Push::Line(line) => line.len(),
            Push::Message { channel, payload } | Push::ShardMessage { channel, payload } => {
                32 + channel.len() + payload.len()
            }
            Push::PatternMessage {
                pattern,
                channel,
                payload,
            } => 48 + pattern.len() + channel.len() + payload.len(),
            Push::Invalidate { keys, .. } => {
                32 + keys
                    .iter()
                    .flatten()
                    .map(|key| 8 + key.len())
                    .sum::<usize>()
            }
            Push::RedirectBroken(_) => 48,
        }
    }

    fn encode(&self, protocol: Protocol, out: &mut BytesMut) {
        let reply = match self {
            Push::Line(line) => return out.put_slice(line),
            Push::Message { channel, payload } => Reply::Push(vec![
                Reply::Bulk(Bytes::from_static(b"message")),
                Reply::Bulk(channel.clone()),
                Reply::Bulk(payload.clone()),
            ]),
            Push::PatternMessage {
                pattern,
                channel,
                payload,
            } => Reply::Push(vec![
                Reply::Bulk(Bytes::from_static(b"pmessage")),
                Reply::Bulk(pattern.clone()),
                Reply::Bulk(channel.clone()),
                Reply::Bulk(payload.clone()),
            ]),
            Push::ShardMessage { channel, payload } => Reply::Push(vec![
                Reply::Bulk(Bytes::from_static(b"smessage")),
                Reply::Bulk(channel.clone()),
                Reply::Bulk(payload.clone()),
            ]),
            Push::Invalidate { keys, .. } => {
                let keys = match keys {
                    Some(keys) => Reply::Array(keys.iter().cloned().map(Reply::Bulk).collect()),
                    None => Reply::Null,
                };
                match protocol {
                    Protocol::Resp3 => {
                        Reply::Push(vec![Reply::Bulk(Bytes::from_static(b"invalidate")), keys])
                    }
                    Protocol::Resp2 => Reply::Push(vec![
                        Reply::Bulk(Bytes::from_static(b"message")),
                        Reply::Bulk(Bytes::from_static(INVALIDATE_CHANNEL)),
                        keys,
                    ]),
                }
            }
            Push::RedirectBroken(target) => Reply::Push(vec![
                Reply::Bulk(Bytes::from_static(b"tracking-redir-broken")),
                Reply::Integer(*target as i64),
            ]),
        };
        reply.encode_as(protocol, out);
    }
}

#[derive(Debug)]
struct QueueState {
    queued: AtomicUsize,
    cut_off: AtomicBool,
    limit: usize,
}

/// The sending end of one connection's pushes; cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// The connection's client id.
    pub id: u64,
    sender: mpsc::UnboundedSender<Push>,
    state: Arc<QueueState>,
}

impl Outbox {
    /// Queues `push`; false if the connection is gone or has been cut off
    /// (now or before), so the caller should forget this outbox.
    pub fn offer(&self, push: Push) -> bool {
        if self.state.cut_off.load(Ordering::Relaxed) {
            return false;
        }
        let size = push.size();
        if self.state.queued.fetch_add(size, Ordering::Relaxed) + size > self.state.limit {
            tracing::warn!(
                client = self.id,
                limit = self.state.limit,
                "a RESP client fell too far behind its MONITOR or Pub/Sub pushes; closing it"
            );
            self.state.cut_off.store(true, Ordering::Relaxed);
            // Wakes the inbox, which sees the cut and ends.
            let _ = self.sender.send(Push::Line(Bytes::new()));
            return false;
        }
        self.sender.send(push).is_ok()
    }
}

/// The receiving end, owned by the connection.
#[derive(Debug)]
pub struct Inbox {
    receiver: mpsc::UnboundedReceiver<Push>,
    state: Arc<QueueState>,
}

/// A connection's outbox and inbox, its queue bounded by `limit` bytes.
pub fn queue(id: u64, limit: usize) -> (Outbox, Inbox) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let state = Arc::new(QueueState {
        queued: AtomicUsize::new(0),
        cut_off: AtomicBool::new(false),
        limit,
    });
    (
        Outbox {
            id,
            sender,
            state: state.clone(),
        },
        Inbox { receiver, state },
    )
}

/// What a connection still wants pushed when a push is sent: a message
/// queued for a channel or pattern it has since left, or a MONITOR line
/// after it left MONITOR mode, is dropped rather than sent after the reply
/// that ended the subscription.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    pub channels: &'a BTreeSet<Bytes>,
    pub patterns: &'a BTreeSet<Bytes>,
    pub shard_channels: &'a BTreeSet<Bytes>,
    pub monitoring: bool,
    pub protocol: Protocol,
}

impl<'a> Wanted<'a> {
    /// For tests: the channels and patterns in `names`, and MONITOR lines.
    #[cfg(test)]
    pub(crate) fn all_of(names: &'a BTreeSet<Bytes>, protocol: Protocol) -> Wanted<'a> {
        Wanted {
            channels: names,
            patterns: names,
            shard_channels: names,
            monitoring: true,
            protocol,
        }
    }

    /// Subscribed to anything: Redis's Pub/Sub mode, in which a RESP2
    /// connection can take redirected invalidations.
    fn is_subscribed(&self) -> bool {
        !(self.channels.is_empty() && self.patterns.is_empty() && self.shard_channels.is_empty())
    }

    fn wants(&self, push: &Push) -> bool {
        match push {
            Push::Line(_) => self.monitoring,
            Push::Message { channel, .. } => self.channels.contains(channel),
            Push::PatternMessage { pattern, .. } => self.patterns.contains(pattern),
            Push::ShardMessage { channel, .. } => self.shard_channels.contains(channel),
            Push::Invalidate { redirected, .. } => {
                self.protocol == Protocol::Resp3 || (*redirected && self.is_subscribed())
            }
            Push::RedirectBroken(_) => self.protocol == Protocol::Resp3,
        }
    }
}

/// Pushes sent between requests are encoded up to about this many bytes at
/// a time.
const PUSH_BATCH_BYTES: usize = 1 << 20;

impl Inbox {
    /// Waits for a push, then encodes it and the others queued (up to about
    /// [`PUSH_BATCH_BYTES`]) into `out`; false once the connection was cut off.
    pub async fn next(&mut self, wanted: Wanted<'_>, out: &mut BytesMut) -> bool {
        let Some(first) = self.receiver.recv().await else {
            return false;
        };
        if !self.take(first, wanted, out) {
            return false;
        }
        // Let the tasks that are ready run first: a burst of publishers
        // then queues more, and one write carries them all.
        tokio::task::yield_now().await;
        self.drain(wanted, out, PUSH_BATCH_BYTES)
    }

    /// Encodes the pushes queued now into `out` until it holds `max_bytes`,
    /// without waiting; false once the connection was cut off.
    pub fn drain(&mut self, wanted: Wanted<'_>, out: &mut BytesMut, max_bytes: usize) -> bool {
        while out.len() < max_bytes {
            let Ok(push) = self.receiver.try_recv() else {
                break;
            };
            if !self.take(push, wanted, out) {
                return false;
            }
        }
        !self.state.cut_off.load(Ordering::Relaxed)
    }

    fn take(&mut self, push: Push, wanted: Wanted<'_>, out: &mut BytesMut) -> bool {
        if self.state.cut_off.load(Ordering::Relaxed) {
            return false;
        }
        self.state.queued.fetch_sub(push.size(), Ordering::Relaxed);
        if wanted.wants(&push) {
            push.encode(wanted.protocol, out);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: &'static [u8]) -> Push {
        Push::Message {
            channel: Bytes::from_static(b"news"),
            payload: Bytes::from_static(payload),
        }
    }

    fn subscribed(protocol: Protocol, channels: &[&'static str]) -> (BTreeSet<Bytes>, Protocol) {
        let set = channels
            .iter()
            .map(|name| Bytes::from_static(name.as_bytes()))
            .collect();
        (set, protocol)
    }

    #[tokio::test]
    async fn pushes_are_encoded_in_the_protocol_of_the_reader() {
        let (outbox, mut inbox) = queue(1, 1 << 10);
        assert!(outbox.offer(message(b"hi")));
        assert!(outbox.offer(Push::PatternMessage {
            pattern: Bytes::from_static(b"n*"),
            channel: Bytes::from_static(b"news"),
            payload: Bytes::from_static(b"yo"),
        }));
        let (channels, _) = subscribed(Protocol::Resp2, &["news"]);
        let (patterns, _) = subscribed(Protocol::Resp2, &["n*"]);
        let mut wanted = Wanted {
            channels: &channels,
            patterns: &patterns,
            shard_channels: &patterns,
            monitoring: false,
            protocol: Protocol::Resp2,
        };
        let mut out = BytesMut::new();
        assert!(inbox.next(wanted, &mut out).await);
        assert_eq!(
            &out[..],
            &b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n\
               *4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$2\r\nyo\r\n"[..]
        );
        assert!(outbox.offer(message(b"hi")));
        out.clear();
        wanted.protocol = Protocol::Resp3;
        assert!(inbox.drain(wanted, &mut out, usize::MAX));
        assert_eq!(
            &out[..],
            &b">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n"[..]
        );
        assert_eq!(inbox.state.queued.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn what_was_queued_for_a_subscription_since_left_is_dropped() {
        let (outbox, mut inbox) = queue(1, 1 << 10);
        assert!(outbox.offer(message(b"late")));
        assert!(outbox.offer(Push::Line(Bytes::from_static(b"+1 [0 x] \"get\"\r\n"))));
        let none = BTreeSet::new();
        let wanted = Wanted {
            channels: &none,
            patterns: &none,
            shard_channels: &none,
            monitoring: false,
            protocol: Protocol::Resp2,
        };
        let mut out = BytesMut::new();
        assert!(inbox.drain(wanted, &mut out, usize::MAX));
        assert!(out.is_empty());
        assert_eq!(inbox.state.queued.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_is_cut_off() {
        let (outbox, mut inbox) = queue(1, 100);
        assert!(outbox.offer(message(b"0123456789")));
        let big = Push::Message {
            channel: Bytes::from_static(b"news"),
            payload: Bytes::from(vec![b'x'; 80]),
        };
        assert!(!outbox.offer(big), "past the bound: refused");
        assert!(!outbox.offer(message(b"later")), "and nothing after");
        let (channels, protocol) = subscribed(Protocol::Resp2, &["news"]);
        let wanted = Wanted {
            channels: &channels,
            patterns: &channels,
            shard_channels: &channels,
            monitoring: true,
            protocol,
        };
        let mut out = BytesMut::new();
        assert!(!inbox.next(wanted, &mut out).await, "the reader ends");
    }

    #[tokio::test]
    async fn an_outbox_whose_connection_closed_refuses() {
        let (outbox, inbox) = queue(1, 100);
        drop(inbox);
        assert!(!outbox.offer(message(b"x")));
    }
}
