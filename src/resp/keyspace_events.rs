//! Keyspace notifications (`CONFIG SET notify-keyspace-events KEA`): the
//! state's key events ([`crate::store::key_events`]) published as Redis
//! publishes them, on `__keyspace@DB__:KEY` (the message is the event) and
//! `__keyevent@DB__:EVENT` (the message is the key), to this node's
//! subscribers.
//!
//! Off by default, as in Redis; while off the state collects nothing. Every
//! cluster member applies the same writes, so each publishes the events to
//! its own subscribers (they are not broadcast).
//!
//! Key misses (`m`, not part of `A`) are the reads' events: the node that
//! served a read op (GET, MGET, STRLEN, EXISTS, TTL, GETRANGE, the bit
//! reads) publishes `keymiss` for each key it found absent; TYPE does not,
//! as in Redis. The lookups the state runs (GETDEL, GETEX, SET … GET, the
//! reads inside EXEC) report theirs with the command's other events, so in
//! a cluster every member publishes those, as it does `set` or `del`.

use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;

use super::pubsub::PubSub;
use crate::store::key_events::{EventClass, KeyEvent, KeyEventHook};

const GENERIC: u32 = 1 << 2;
const STRING: u32 = 1 << 3;
const LIST: u32 = 1 << 4;
const SET: u32 = 1 << 5;
const HASH: u32 = 1 << 6;
const ZSET: u32 = 1 << 7;
const EXPIRED: u32 = 1 << 8;
const EVICTED: u32 = 1 << 9;
const STREAM: u32 = 1 << 10;
const KEY_MISS: u32 = 1 << 11;
const MODULE: u32 = 1 << 12;
const NEW: u32 = 1 << 13;
const KEYSPACE: u32 = 1 << 0;
const KEYEVENT: u32 = 1 << 1;
/// Redis's `A`: every class but key misses and new keys.
const ALL: u32 = GENERIC | STRING | LIST | SET | HASH | ZSET | EXPIRED | EVICTED | STREAM | MODULE;

/// The letters, in the order Redis writes them back.
const CLASS_LETTERS: [(u32, char); 11] = [
    (GENERIC, 'g'),
    (STRING, '$'),
    (LIST, 'l'),
    (SET, 's'),
    (HASH, 'h'),
    (ZSET, 'z'),
    (EXPIRED, 'x'),
    (EVICTED, 'e'),
    (STREAM, 't'),
    (MODULE, 'd'),
    (NEW, 'n'),
];

/// The `notify-keyspace-events` setting.
#[derive(Debug, Default)]
pub struct KeyspaceEvents {
    flags: AtomicU32,
}

impl KeyspaceEvents {
    /// Parses a setting as Redis does: one letter per class or target.
    pub fn parse(text: &[u8]) -> Result<u32, &'static str> {
        let mut flags = 0;
        for &letter in text {
            flags |= match letter {
                b'A' => ALL,
                b'g' => GENERIC,
                b'$' => STRING,
                b'l' => LIST,
                b's' => SET,
                b'h' => HASH,
                b'z' => ZSET,
                b'x' => EXPIRED,
                b'e' => EVICTED,
                b'K' => KEYSPACE,
                b'E' => KEYEVENT,
                b't' => STREAM,
                b'd' => MODULE,
                b'n' => NEW,
                b'm' => KEY_MISS,
                _ => return Err("Invalid event class character. Use 'Ag$lshzxeKEtmdn'."),
            };
        }
        Ok(flags)
    }

    /// The setting as CONFIG GET shows it (Redis's canonical form).
    pub fn describe(&self) -> String {
        let flags = self.flags.load(Ordering::Relaxed);
        let mut text = String::new();
        if flags & ALL == ALL {
            text.push('A');
        } else {
            for (bit, letter) in CLASS_LETTERS {
                if flags & bit != 0 {
                    text.push(letter);
                }
            }
        }
        for (bit, letter) in [(KEYSPACE, 'K'), (KEYEVENT, 'E'), (KEY_MISS, 'm')] {
            if flags & bit != 0 {
                text.push(letter);
            }
        }
        text
    }

    /// Applies a parsed setting; the state collects events only while some
    /// class is on for some target (misses too: GETDEL and the reads inside
    /// EXEC look keys up in the state).
    pub fn set(&self, flags: u32, hook: Option<&KeyEventHook>) {
        self.flags.store(flags, Ordering::Relaxed);
        let write_classes = flags & !(KEYSPACE | KEYEVENT);
        let publishing = flags & (KEYSPACE | KEYEVENT) != 0 && write_classes != 0;
        if let Some(hook) = hook {
            hook.enable(publishing);
        }
    }

    /// Whether read misses are to be published (`m` with `K` or `E`).
    pub fn wants_key_misses(&self) -> bool {
        let flags = self.flags.load(Ordering::Relaxed);
        flags & KEY_MISS != 0 && flags & (KEYSPACE | KEYEVENT) != 0
    }

    /// Publishes that a read found `key` absent in database `db`.
    pub fn publish_key_miss(&self, pubsub: &PubSub, db: u8, key: &Bytes) {
        let event = KeyEvent {
            class: EventClass::KeyMiss,
            name: "keymiss",
            db,
            key: key.clone(),
        };
        self.publish(pubsub, std::slice::from_ref(&event));
    }

    /// Publishes one applied command's events, those the setting selects.
    pub fn publish(&self, pubsub: &PubSub, events: &[KeyEvent]) {
        let flags = self.flags.load(Ordering::Relaxed);
        for event in events {
            let class = match event.class {
                EventClass::Generic => GENERIC,
                EventClass::String => STRING,
                EventClass::Expired => EXPIRED,
                EventClass::New => NEW,
                EventClass::KeyMiss => KEY_MISS,
                // Redis publishes no keyspace event for a flush or a swap.
                EventClass::Flush => continue,
            };
            if flags & class == 0 {
                continue;
            }
            if flags & KEYSPACE != 0 {
                let mut channel = format!("__keyspace@{}__:", event.db).into_bytes();
                channel.extend_from_slice(&event.key);
                pubsub.publish(
                    &Bytes::from(channel),
                    &Bytes::from_static(event.name.as_bytes()),
                );
            }
            if flags & KEYEVENT != 0 {
                let channel = format!("__keyevent@{}__:{}", event.db, event.name);
                pubsub.publish(&Bytes::from(channel), &event.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_reads_and_writes_back_as_in_redis() {
        let events = KeyspaceEvents::default();
        for (given, shown) in [("KEA", "AKE"), ("Kg$", "g$K"), ("Exn", "xnE"), ("", "")] {
            let flags = KeyspaceEvents::parse(given.as_bytes()).expect("valid");
            events.set(flags, None);
            assert_eq!(events.describe(), shown, "{given}");
        }
        assert!(KeyspaceEvents::parse(b"KEq").is_err());
        events.set(KeyspaceEvents::parse(b"KEAm").expect("valid"), None);
        assert_eq!(events.describe(), "AKEm");
        assert!(events.wants_key_misses());
        events.set(KeyspaceEvents::parse(b"Km").expect("valid"), None);
        assert!(events.wants_key_misses());
        events.set(KeyspaceEvents::parse(b"m").expect("valid"), None);
        assert!(!events.wants_key_misses(), "no channel kind chosen");
        events.set(KeyspaceEvents::parse(b"KEA").expect("valid"), None);
        assert!(!events.wants_key_misses(), "A leaves misses out");
    }

    #[test]
    fn only_selected_classes_reach_the_channels_selected() {
        let events = KeyspaceEvents::default();
        let hook = KeyEventHook::default();
        events.set(KeyspaceEvents::parse(b"E$").expect("valid"), Some(&hook));
        assert!(hook.is_enabled());
        let pubsub = PubSub::default();
        let (outbox, mut inbox) = crate::resp::push::queue(1, 1 << 20);
        pubsub.subscribe(
            super::super::pubsub::Kind::Pattern,
            Bytes::from_static(b"*"),
            &outbox,
        );
        let event = |class, name| KeyEvent {
            class,
            name,
            db: 2,
            key: Bytes::from_static(b"k"),
        };
        let applied = [
            event(EventClass::String, "set"),
            event(EventClass::Generic, "del"),
        ];
        events.publish(&pubsub, &applied);
        let mut out = bytes::BytesMut::new();
        let names = [Bytes::from_static(b"*")].into_iter().collect();
        let wanted = crate::resp::push::Wanted::all_of(&names, crate::resp::Protocol::Resp2);
        assert!(inbox.drain(wanted, &mut out, usize::MAX));
        let text = String::from_utf8_lossy(&out);
        assert_eq!(
            text,
            "*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$18\r\n__keyevent@2__:set\r\n$1\r\nk\r\n"
        );
        events.set(KeyspaceEvents::parse(b"KEm").expect("valid"), Some(&hook));
        assert!(
            hook.is_enabled(),
            "misses need the state too: it runs GETDEL and the reads inside EXEC"
        );
        events.set(KeyspaceEvents::parse(b"m").expect("valid"), Some(&hook));
        assert!(!hook.is_enabled(), "no channel kind chosen");
        events.set(0, Some(&hook));
        assert!(!hook.is_enabled());
    }
}
