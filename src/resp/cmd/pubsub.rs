//! SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE, PUNSUBSCRIBE, PUBLISH, their shard
//! twins SSUBSCRIBE, SUNSUBSCRIBE and SPUBLISH, and PUBSUB, with Redis's
//! replies: one confirmation per channel or pattern (a push in RESP3, an
//! array in RESP2), each with the connection's subscription count (channels
//! and patterns together, shard channels apart, as Redis counts). The
//! registry itself is [`crate::resp::pubsub`].

use bytes::Bytes;

use super::super::Shared;
use super::super::frame::Reply;
use super::super::pubsub::Kind;
use super::{CommandResult, Session, wrong_arity};
use crate::raft::broadcast::Published;

pub fn handles(name: &str) -> bool {
    matches!(
        name,
        "subscribe"
            | "unsubscribe"
            | "psubscribe"
            | "punsubscribe"
            | "publish"
            | "ssubscribe"
            | "sunsubscribe"
            | "spublish"
            | "pubsub"
    )
}

/// The commands that answer with one confirmation per channel or pattern.
fn changes_subscriptions(name: &str) -> bool {
    matches!(
        name,
        "subscribe" | "unsubscribe" | "psubscribe" | "punsubscribe" | "ssubscribe" | "sunsubscribe"
    )
}

/// What a RESP2 connection may run while subscribed.
pub fn allowed_while_subscribed(name: &str) -> bool {
    changes_subscriptions(name) || matches!(name, "ping" | "quit" | "reset")
}

pub fn run(session: &mut Session, shared: &Shared, name: &str, args: &[Bytes]) -> CommandResult {
    match name {
        "subscribe" => Ok(subscribe(session, shared, Kind::Channel, &args[1..])),
        "psubscribe" => Ok(subscribe(session, shared, Kind::Pattern, &args[1..])),
        "unsubscribe" => Ok(unsubscribe(session, shared, Kind::Channel, &args[1..])),
        "punsubscribe" => Ok(unsubscribe(session, shared, Kind::Pattern, &args[1..])),
        "ssubscribe" => Ok(subscribe(session, shared, Kind::Shard, &args[1..])),
        "sunsubscribe" => Ok(unsubscribe(session, shared, Kind::Shard, &args[1..])),
        // The count is of this node's subscribers, as Redis Cluster counts.
        "publish" | "spublish" => {
            let message = Published {
                channel: args[1].clone(),
                payload: args[2].clone(),
                shard: name == "spublish",
            };
            let received = shared.pubsub.publish_message(&message);
            shared.node.broadcast_published(message);
            Ok(Reply::Integer(received as i64))
        }
        _ => introspect(shared, args),
    }
}

fn confirmation(kind: &'static str, name: Option<Bytes>, count: usize) -> Reply {
    Reply::Push(vec![
        Reply::bulk(Bytes::from_static(kind.as_bytes())),
        name.map_or(Reply::Null, Reply::Bulk),
        Reply::Integer(count as i64),
    ])
}

fn subscribe(session: &mut Session, shared: &Shared, kind: Kind, names: &[Bytes]) -> Reply {
    let outbox = session.outbox(shared);
    let verb = match kind {
        Kind::Channel => "subscribe",
        Kind::Pattern => "psubscribe",
        Kind::Shard => "ssubscribe",
    };
    let mut replies = Vec::with_capacity(names.len());
    for name in names {
        if session.subscriptions(kind).insert(name.clone()) {
            shared.pubsub.subscribe(kind, name.clone(), &outbox);
        }
        replies.push(confirmation(
            verb,
            Some(name.clone()),
            session.subscription_count(kind),
        ));
    }
    Reply::Sequence(replies)
}

/// Ends the subscriptions named, or all of `kind` when none is named; a
/// confirmation for each (one with a null name when there were none).
fn unsubscribe(session: &mut Session, shared: &Shared, kind: Kind, names: &[Bytes]) -> Reply {
    let verb = match kind {
        Kind::Channel => "unsubscribe",
        Kind::Pattern => "punsubscribe",
        Kind::Shard => "sunsubscribe",
    };
    let names: Vec<Bytes> = match names {
        [] => session.subscriptions(kind).iter().cloned().collect(),
        names => names.to_vec(),
    };
    if names.is_empty() {
        let count = session.subscription_count(kind);
        return Reply::Sequence(vec![confirmation(verb, None, count)]);
    }
    let mut replies = Vec::with_capacity(names.len());
    for name in names {
        if session.subscriptions(kind).remove(&name) {
            shared.pubsub.unsubscribe(kind, &name, session.id);
        }
        replies.push(confirmation(
            verb,
            Some(name),
            session.subscription_count(kind),
        ));
    }
    Reply::Sequence(replies)
}

/// PUBSUB CHANNELS [pattern] | NUMSUB [channel …] | NUMPAT |
/// SHARDCHANNELS [pattern] | SHARDNUMSUB [channel …] | HELP.
fn introspect(shared: &Shared, args: &[Bytes]) -> CommandResult {
    let sub = args[1].to_ascii_lowercase();
    match (sub.as_slice(), &args[2..]) {
        (b"channels", []) => Ok(channel_list(shared, Kind::Channel, None)),
        (b"channels", [pattern]) => Ok(channel_list(shared, Kind::Channel, Some(pattern))),
        (b"shardchannels", []) => Ok(channel_list(shared, Kind::Shard, None)),
        (b"shardchannels", [pattern]) => Ok(channel_list(shared, Kind::Shard, Some(pattern))),
        (b"numsub", channels) => Ok(subscriber_counts(shared, Kind::Channel, channels)),
        (b"shardnumsub", channels) => Ok(subscriber_counts(shared, Kind::Shard, channels)),
        (b"numpat", []) => Ok(Reply::Integer(shared.pubsub.pattern_count() as i64)),
        (b"help", []) => Ok(Reply::Array(
            [
                "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "CHANNELS [<pattern>]",
                "    Return the currently active channels matching a <pattern> (default: '*').",
                "NUMPAT",
                "    Return number of subscriptions to patterns.",
                "NUMSUB [<channel> ...]",
                "    Return the number of subscribers for the specified channels, excluding",
                "    pattern subscriptions(default: no channels).",
                "SHARDCHANNELS [<pattern>]",
                "    Return the currently active shard level channels matching a <pattern> (default: '*').",
                "SHARDNUMSUB [<shardchannel> ...]",
                "    Return the number of subscribers for the specified shard level channel(s)",
                "HELP",
                "    Print this help.",
            ]
            .into_iter()
            .map(Reply::Simple)
            .collect(),
        )),
        (b"channels" | b"numpat" | b"shardchannels" | b"help", _) => Err(wrong_arity(&format!(
            "pubsub|{}",
            String::from_utf8_lossy(&sub)
        ))),
        _ => Err(Reply::err(format!(
            "unknown subcommand '{}'. Try PUBSUB HELP.",
            String::from_utf8_lossy(&args[1])
        ))),
    }
}

fn subscriber_counts(shared: &Shared, kind: Kind, channels: &[Bytes]) -> Reply {
    Reply::Array(
        channels
            .iter()
            .flat_map(|channel| {
                let count = shared.pubsub.subscriber_count(kind, channel);
                [Reply::Bulk(channel.clone()), Reply::Integer(count as i64)]
            })
            .collect(),
    )
}

fn channel_list(shared: &Shared, kind: Kind, pattern: Option<&Bytes>) -> Reply {
    let pattern = pattern.map(|pattern| &pattern[..]);
    Reply::Array(
        shared
            .pubsub
            .channels(kind, pattern)
            .into_iter()
            .map(Reply::Bulk)
            .collect(),
    )
}
