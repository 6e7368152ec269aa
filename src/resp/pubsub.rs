//! Pub/Sub: PUBLISH delivers a message to every connection SUBSCRIBEd to its
//! channel and to every connection PSUBSCRIBEd to a pattern the channel
//! matches (once per matching pattern), as Redis does.
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

/// Subscribers by channel, and by pattern.
#[derive(Debug, Default)]
pub struct PubSub {
    registry: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    channels: BTreeMap<Bytes, BTreeMap<u64, Outbox>>,
    patterns: BTreeMap<Bytes, BTreeMap<u64, Outbox>>,
}

/// Which of the two kinds of subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Channel,
    Pattern,
}

impl Registry {
    fn of(&mut self, kind: Kind) -> &mut BTreeMap<Bytes, BTreeMap<u64, Outbox>> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
        }
    }
}

impl PubSub {
    pub fn subscribe(&self, kind: Kind, name: Bytes, outbox: &Outbox) {
        let mut registry = self.registry.lock();
        registry
            .of(kind)
            .entry(name)
            .or_default()
            .insert(outbox.id, outbox.clone());
    }

    pub fn unsubscribe(&self, kind: Kind, name: &[u8], id: u64) {
        let mut registry = self.registry.lock();
        let subscribers = registry.of(kind);
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
        let mut registry = self.registry.lock();
        for kind in [Kind::Channel, Kind::Pattern] {
            registry.of(kind).retain(|_, clients| {
                clients.remove(&id);
                !clients.is_empty()
            });
        }
    }

    /// Sends `payload` to the subscribers of `channel`; how many received it
    /// (a connection subscribed to the channel and to two matching patterns
    /// receives it three times, and counts three times, as in Redis).
    /// Subscribers that are gone or cut off are forgotten.
    pub fn publish(&self, channel: &Bytes, payload: &Bytes) -> usize {
        let mut registry = self.registry.lock();
        let mut received = 0;
        let mut gone = Vec::new();
        if let Some(clients) = registry.channels.get(channel) {
            for outbox in clients.values() {
                let push = Push::Message {
                    channel: channel.clone(),
                    payload: payload.clone(),
                };
                match outbox.offer(push) {
                    true => received += 1,
                    false => gone.push(outbox.id),
                }
            }
        }
        for (pattern, clients) in &registry.patterns {
            if !glob_match(pattern, channel) {
                continue;
            }
            for outbox in clients.values() {
                let push = Push::PatternMessage {
                    pattern: pattern.clone(),
                    channel: channel.clone(),
                    payload: payload.clone(),
                };
                match outbox.offer(push) {
                    true => received += 1,
                    false => gone.push(outbox.id),
                }
            }
        }
        if !gone.is_empty() {
            let registry = &mut *registry;
            for subscribers in [&mut registry.channels, &mut registry.patterns] {
                subscribers.retain(|_, clients| {
                    clients.retain(|id, _| !gone.contains(id));
                    !clients.is_empty()
                });
            }
        }
        received
    }

    /// PUBSUB CHANNELS: the channels with a subscriber, those matching
    /// `pattern` if one is given.
    pub fn channels(&self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        let registry = self.registry.lock();
        registry
            .channels
            .keys()
            .filter(|channel| pattern.is_none_or(|pattern| glob_match(pattern, channel)))
            .cloned()
            .collect()
    }

    /// PUBSUB NUMSUB: the connections subscribed to `channel` (patterns not
    /// counted, as in Redis).
    pub fn subscriber_count(&self, channel: &[u8]) -> usize {
        self.registry
            .lock()
            .channels
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
            .flat_map(|clients| clients.keys().copied())
            .collect();
        clients.len()
    }

    /// The distinct channels subscribed to (INFO `pubsub_channels`).
    pub fn channel_count(&self) -> usize {
        self.registry.lock().channels.len()
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
        assert_eq!(pubsub.channels(None), vec![bytes("b")]);
        assert_eq!(pubsub.subscriber_count(b"b"), 1);
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

        assert_eq!(pubsub.channels(None), [bytes("news.it"), bytes("sport")]);
        assert_eq!(pubsub.channels(Some(b"s*")), [bytes("sport")]);
        assert_eq!(pubsub.subscriber_count(b"news.it"), 1);
        assert_eq!(pubsub.pattern_count(), 1);
        assert_eq!(pubsub.client_count(), 2);
        pubsub.unsubscribe(Kind::Channel, b"news.it", 1);
        pubsub.unsubscribe(Kind::Pattern, b"news.*", 1);
        assert_eq!(pubsub.publish(&bytes("news.it"), &bytes("hi")), 0);
        assert_eq!(pubsub.channels(None), [bytes("sport")]);
    }

    #[test]
    fn a_subscriber_that_is_gone_is_forgotten() {
        let pubsub = PubSub::default();
        let (outbox, inbox) = push::queue(7, 1 << 20);
        pubsub.subscribe(Kind::Channel, bytes("c"), &outbox);
        drop(inbox);
        assert_eq!(pubsub.publish(&bytes("c"), &bytes("x")), 0);
        assert_eq!(pubsub.channel_count(), 0);
    }
}
