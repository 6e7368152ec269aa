//! Pub/Sub: PUBLISH delivers a message to every connection SUBSCRIBEd to its
//! channel and to every connection PSUBSCRIBEd to a pattern the channel
//! matches (once per matching pattern), as Redis does. Shard channels
//! (SSUBSCRIBE, SPUBLISH) are a namespace of their own with no patterns; a
//! walrus cluster is one shard (every node holds every key), so they reach
//! the same connections a Redis Cluster shard's would: all of them.
//!
//! Messages are not stored or logged: delivery is at most once, to the
//! connections subscribed when PUBLISH runs, through each one's bounded push
//! queue ([`super::push`]), so a slow subscriber is cut off rather than
//! slowing the publisher. In a cluster, PUBLISH also hands the message to
//! the node layer, which sends it to the other members
//! ([`crate::raft::broadcast`]); theirs arrive through the hook `serve_resp`
//! sets, so every node's subscribers hear every message.
//!
//! Invariant: a connection appears under a channel or pattern here exactly
//! while its session lists that subscription; the connection removes itself
//! from everything when it closes.

use std::collections::BTreeMap;

use bytes::Bytes;
use parking_lot::Mutex;

use super::glob::glob_match;
use super::push::{Outbox, Push};
use crate::raft::broadcast::Published;

/// Subscribers by channel, by pattern and by shard channel.
#[derive(Debug, Default)]
pub struct PubSub {
    registry: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    channels: BTreeMap<Bytes, BTreeMap<u64, Outbox>>,
    patterns: BTreeMap<Bytes, BTreeMap<u64, Outbox>>,
    shard_channels: BTreeMap<Bytes, BTreeMap<u64, Outbox>>,
}

/// Which of the three kinds of subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Channel,
    Pattern,
    Shard,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Channel, Kind::Pattern, Kind::Shard];
}

impl Registry {
    fn of(&self, kind: Kind) -> &BTreeMap<Bytes, BTreeMap<u64, Outbox>> {
        match kind {
            Kind::Channel => &self.channels,
            Kind::Pattern => &self.patterns,
            Kind::Shard => &self.shard_channels,
        }
    }

    fn of_mut(&mut self, kind: Kind) -> &mut BTreeMap<Bytes, BTreeMap<u64, Outbox>> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
            Kind::Shard => &mut self.shard_channels,
        }
    }
}

impl PubSub {
    pub fn subscribe(&self, kind: Kind, name: Bytes, outbox: &Outbox) {
        let mut registry = self.registry.lock();
        registry
            .of_mut(kind)
            .entry(name)
            .or_default()
            .insert(outbox.id, outbox.clone());
    }

    pub fn unsubscribe(&self, kind: Kind, name: &[u8], id: u64) {
        let mut registry = self.registry.lock();
        let subscribers = registry.of_mut(kind);
        if let Some(clients) = subscribers.get_mut(name) {
            clients.remove(&id);
            if clients.is_empty() {
                subscribers.remove(name);
            }
        }
    }

    /// Removes connection `id` from every channel and pattern. For a
    /// connection whose task ended without leaving (it panicked): it walks
    /// the whole registry, where leaving walks only the connection's own
    /// subscriptions.
    pub fn forget_client(&self, id: u64) {
        self.registry.lock().forget(&[id]);
    }

    /// Delivers a PUBLISHed or SPUBLISHed `message` (from this node's
    /// client or another member) to this node's subscribers; how many
    /// received it.
    pub fn publish_message(&self, message: &Published) -> usize {
        match message.shard {
            true => self.publish_shard(&message.channel, &message.payload),
            false => self.publish(&message.channel, &message.payload),
        }
    }

    /// Sends `payload` to the subscribers of `channel`; how many received it
    /// (a connection subscribed to the channel and to two matching patterns
    /// receives it three times, and counts three times, as in Redis).
    /// Subscribers that are gone or cut off are forgotten.
    pub fn publish(&self, channel: &Bytes, payload: &Bytes) -> usize {
        let mut registry = self.registry.lock();
        let mut delivery = Delivery::default();
        if let Some(clients) = registry.channels.get(channel) {
            delivery.offer(clients, || Push::Message {
                channel: channel.clone(),
                payload: payload.clone(),
            });
        }
        for (pattern, clients) in &registry.patterns {
            if glob_match(pattern, channel) {
                delivery.offer(clients, || Push::PatternMessage {
                    pattern: pattern.clone(),
                    channel: channel.clone(),
                    payload: payload.clone(),
                });
            }
        }
        registry.forget(&delivery.gone);
        delivery.received
    }

    /// SPUBLISH: sends `payload` to the subscribers of shard channel
    /// `channel`; how many received it.
    fn publish_shard(&self, channel: &Bytes, payload: &Bytes) -> usize {
        let mut registry = self.registry.lock();
        let mut delivery = Delivery::default();
        if let Some(clients) = registry.shard_channels.get(channel) {
            delivery.offer(clients, || Push::ShardMessage {
                channel: channel.clone(),
                payload: payload.clone(),
            });
        }
        registry.forget(&delivery.gone);
        delivery.received
    }

    /// PUBSUB CHANNELS and SHARDCHANNELS: the channels of `kind` with a
    /// subscriber, those matching `pattern` if one is given.
    pub fn channels(&self, kind: Kind, pattern: Option<&[u8]>) -> Vec<Bytes> {
        let registry = self.registry.lock();
        registry
            .of(kind)
            .keys()
            .filter(|channel| pattern.is_none_or(|pattern| glob_match(pattern, channel)))
            .cloned()
            .collect()
    }

    /// PUBSUB NUMSUB and SHARDNUMSUB: the connections subscribed to
    /// `channel` of `kind` (patterns not counted, as in Redis).
    pub fn subscriber_count(&self, kind: Kind, channel: &[u8]) -> usize {
        self.registry
            .lock()
            .of(kind)
            .get(channel)
            .map_or(0, BTreeMap::len)
    }

    /// PUBSUB NUMPAT: the distinct patterns subscribed to.
    pub fn pattern_count(&self) -> usize {
        self.registry.lock().patterns.len()
    }

    /// The connections subscribed to any channel or pattern (INFO
    /// `pubsub_clients`).
    pub fn client_count(&self) -> usize {
        let registry = self.registry.lock();
        let clients: std::collections::BTreeSet<u64> = registry
            .channels
            .values()
            .chain(registry.patterns.values())
            .chain(registry.shard_channels.values())
            .flat_map(|clients| clients.keys().copied())
            .collect();
        clients.len()
    }

    /// The distinct channels of `kind` subscribed to (INFO
    /// `pubsub_channels`, `pubsubshard_channels`).
    pub fn channel_count(&self, kind: Kind) -> usize {
        self.registry.lock().of(kind).len()
    }
}

/// One message's way to its subscribers: how many took it, and which were
/// gone or cut off (to be forgotten once the registry is free to change).
#[derive(Default)]
struct Delivery {
    received: usize,
    gone: Vec<u64>,
}

impl Delivery {
    /// Offers each of `clients` the push `make` builds.
    fn offer(&mut self, clients: &BTreeMap<u64, Outbox>, make: impl Fn() -> Push) {
        for outbox in clients.values() {
            match outbox.offer(make()) {
                true => self.received += 1,
                false => self.gone.push(outbox.id),
            }
        }
    }
}

impl Registry {
    /// Drops the connections in `gone` (cut off or closed) from everything.
    fn forget(&mut self, gone: &[u64]) {
        if gone.is_empty() {
            return;
        }
        for kind in Kind::ALL {
            self.of_mut(kind).retain(|_, clients| {
                clients.retain(|id, _| !gone.contains(id));
                !clients.is_empty()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::resp::frame::Protocol;
    use crate::resp::push;

    fn bytes(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    #[test]
    fn a_forgotten_client_leaves_every_channel_and_pattern_and_no_one_else() {
        let pubsub = PubSub::default();
        let (gone, _gone_inbox) = push::queue(1, 1 << 20);
        let (staying, _staying_inbox) = push::queue(2, 1 << 20);
        pubsub.subscribe(Kind::Channel, bytes("a"), &gone);
        pubsub.subscribe(Kind::Channel, bytes("b"), &gone);
        pubsub.subscribe(Kind::Pattern, bytes("*"), &gone);
        pubsub.subscribe(Kind::Channel, bytes("b"), &staying);
        pubsub.forget_client(1);
        assert_eq!(pubsub.channels(Kind::Channel, None), vec![bytes("b")]);
        assert_eq!(pubsub.subscriber_count(Kind::Channel, b"b"), 1);
        assert_eq!(pubsub.pattern_count(), 0);
        assert_eq!(pubsub.client_count(), 1);
    }

    #[tokio::test]
    async fn a_message_reaches_channel_and_pattern_subscribers_once_per_subscription() {
        let pubsub = PubSub::default();
        let (both, mut both_inbox) = push::queue(1, 1 << 20);
        let (other, mut other_inbox) = push::queue(2, 1 << 20);
        pubsub.subscribe(Kind::Channel, bytes("news.it"), &both);
        pubsub.subscribe(Kind::Pattern, bytes("news.*"), &both);
        pubsub.subscribe(Kind::Channel, bytes("sport"), &other);
        assert_eq!(pubsub.publish(&bytes("news.it"), &bytes("hi")), 2);
        assert_eq!(pubsub.publish(&bytes("weather"), &bytes("rain")), 0);
        let names = [bytes("news.it"), bytes("news.*"), bytes("sport")]
            .into_iter()
            .collect();
        let wanted = push::Wanted::all_of(&names, Protocol::Resp2);
        let mut out = BytesMut::new();
        assert!(both_inbox.next(wanted, &mut out).await);
        assert_eq!(
            &out[..],
            &b"*3\r\n$7\r\nmessage\r\n$7\r\nnews.it\r\n$2\r\nhi\r\n\
               *4\r\n$8\r\npmessage\r\n$6\r\nnews.*\r\n$7\r\nnews.it\r\n$2\r\nhi\r\n"[..]
        );
        out.clear();
        assert!(other_inbox.drain(wanted, &mut out, usize::MAX));
        assert!(out.is_empty());

        assert_eq!(
            pubsub.channels(Kind::Channel, None),
            [bytes("news.it"), bytes("sport")]
        );
        assert_eq!(
            pubsub.channels(Kind::Channel, Some(b"s*")),
            [bytes("sport")]
        );
        assert_eq!(pubsub.subscriber_count(Kind::Channel, b"news.it"), 1);
        assert_eq!(pubsub.pattern_count(), 1);
        assert_eq!(pubsub.client_count(), 2);
        pubsub.unsubscribe(Kind::Channel, b"news.it", 1);
        pubsub.unsubscribe(Kind::Pattern, b"news.*", 1);
        assert_eq!(pubsub.publish(&bytes("news.it"), &bytes("hi")), 0);
        assert_eq!(pubsub.channels(Kind::Channel, None), [bytes("sport")]);
    }

    #[tokio::test]
    async fn shard_channels_are_a_namespace_of_their_own() {
        let pubsub = PubSub::default();
        let (sharded, mut sharded_inbox) = push::queue(1, 1 << 20);
        let (plain, mut plain_inbox) = push::queue(2, 1 << 20);
        pubsub.subscribe(Kind::Shard, bytes("orders"), &sharded);
        pubsub.subscribe(Kind::Channel, bytes("orders"), &plain);
        pubsub.subscribe(Kind::Pattern, bytes("ord*"), &plain);
        assert_eq!(pubsub.publish_shard(&bytes("orders"), &bytes("a")), 1);
        assert_eq!(pubsub.publish(&bytes("orders"), &bytes("b")), 2);
        let names = [bytes("orders"), bytes("ord*")].into_iter().collect();
        let wanted = push::Wanted::all_of(&names, Protocol::Resp3);
        let mut out = BytesMut::new();
        assert!(sharded_inbox.drain(wanted, &mut out, usize::MAX));
        assert_eq!(
            &out[..],
            &b">3\r\n$8\r\nsmessage\r\n$6\r\norders\r\n$1\r\na\r\n"[..]
        );
        out.clear();
        assert!(plain_inbox.drain(wanted, &mut out, usize::MAX));
        assert!(!out.windows(8).any(|window| window == b"smessage"));
        assert_eq!(pubsub.channels(Kind::Shard, None), [bytes("orders")]);
        assert_eq!(pubsub.subscriber_count(Kind::Shard, b"orders"), 1);
        assert_eq!(pubsub.channel_count(Kind::Shard), 1);
        assert_eq!(pubsub.client_count(), 2);
        pubsub.forget_client(1);
        assert_eq!(pubsub.publish_shard(&bytes("orders"), &bytes("c")), 0);
        assert_eq!(pubsub.channel_count(Kind::Shard), 0);
    }

    #[test]
    fn a_subscriber_that_is_gone_is_forgotten() {
        let pubsub = PubSub::default();
        let (outbox, inbox) = push::queue(7, 1 << 20);
        pubsub.subscribe(Kind::Channel, bytes("c"), &outbox);
        drop(inbox);
        assert_eq!(pubsub.publish(&bytes("c"), &bytes("x")), 0);
        assert_eq!(pubsub.channel_count(Kind::Channel), 0);
    }
}
