//! Client-side caching (`CLIENT TRACKING`): which connections cache which
//! keys, and the invalidations sent when those keys change.
//!
//! In the default mode a connection is told about the keys it read: each
//! read registers its keys here, and the first change to such a key sends
//! it one `invalidate` and forgets the pair (it must read the key again to
//! hear of it again). In broadcast mode (`BCAST`) it is told of every change
//! to keys under its prefixes (or to any key), read or not. Changes come
//! from the state's key events ([`crate::store::key_events`]): every write
//! applied on this node, whoever made it (RESP, HTTP, the expiry sweeper, a
//! cluster leader's log), so a cache never outlives a change this node
//! applied. A flush, a swap of databases or a snapshot installed from the
//! leader invalidates everything (a null key list), as Redis's FLUSHALL
//! does.
//!
//! Invariants: a key is registered before the read that caches it runs, so
//! a change racing the read is always followed by an invalidation (at worst
//! one too many, never one too few). Keys are tracked by name across
//! databases, as in Redis. The table holds at most a million keys (Redis's
//! `tracking-table-max-keys` default): past it, keys are invalidated to make
//! room. A connection's entries go when it turns tracking off or closes.
//!
//! `NOLOOP` is accepted, but a connection still hears of its own writes:
//! the key events do not say which connection made a change. That costs a
//! refetch, never a stale cache.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;

use super::pubsub::PubSub;
use super::push::{INVALIDATE_CHANNEL, Outbox, Push};
use crate::store::key_events::{EventClass, KeyEvent, KeyEventHook};

/// Which reads register their keys (default mode only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caching {
    /// Every read.
    Always,
    /// Only a read right after `CLIENT CACHING YES`.
    OptIn,
    /// Every read but one right after `CLIENT CACHING NO`.
    OptOut,
}

/// One connection's tracking, as `CLIENT TRACKING ON …` set it.
#[derive(Debug, Clone)]
pub struct Mode {
    /// `Some(prefixes)` in broadcast mode (no prefixes: every key).
    pub broadcast: Option<Vec<Bytes>>,
    pub caching: Caching,
    /// The connection its invalidations go to instead (`REDIRECT id`).
    pub redirect: Option<u64>,
    pub no_loop: bool,
}

/// The most keys tracked for default-mode readers, as Redis's
/// `tracking-table-max-keys` default. Past it, keys are invalidated to make
/// room (their readers refetch), so the table's memory stays bounded.
const MAX_TRACKED_KEYS: usize = 1_000_000;

/// Every tracking connection and the keys they cache.
#[derive(Debug)]
pub struct Tracking {
    inner: Mutex<Inner>,
    /// Connections with tracking on: while zero, the state collects no
    /// key events for this.
    active: AtomicUsize,
    max_keys: usize,
}

impl Default for Tracking {
    fn default() -> Tracking {
        Tracking::with_max_keys(MAX_TRACKED_KEYS)
    }
}

#[derive(Debug, Default)]
struct Inner {
    clients: HashMap<u64, Tracker>,
    /// Key → the default-mode connections that read it since its last
    /// invalidation.
    readers: HashMap<Bytes, HashSet<u64>>,
    /// The broadcast-mode connections and their prefixes (empty: all keys).
    broadcasters: HashMap<u64, Vec<Bytes>>,
}

#[derive(Debug)]
struct Tracker {
    /// The connection's own outbox.
    outbox: Outbox,
    mode: Mode,
    /// The keys it registered, so turning tracking off forgets them.
    keys: HashSet<Bytes>,
}

impl Tracking {
    /// A registry that tracks at most `max_keys` keys for default-mode
    /// readers.
    pub fn with_max_keys(max_keys: usize) -> Tracking {
        Tracking {
            inner: Mutex::default(),
            active: AtomicUsize::new(0),
            max_keys: max_keys.max(1),
        }
    }

    /// Turns tracking on for connection `outbox.id` (or changes its mode);
    /// true if it was off.
    pub fn start(&self, outbox: Outbox, mode: Mode) -> bool {
        let mut inner = self.inner.lock();
        let id = outbox.id;
        match &mode.broadcast {
            Some(prefixes) => inner.broadcasters.insert(id, prefixes.clone()),
            None => inner.broadcasters.remove(&id),
        };
        match inner.clients.get_mut(&id) {
            Some(tracker) => {
                tracker.mode = mode;
                false
            }
            None => {
                inner.clients.insert(
                    id,
                    Tracker {
                        outbox,
                        mode,
                        keys: HashSet::new(),
                    },
                );
                self.active.fetch_add(1, Ordering::Relaxed);
                true
            }
        }
    }

    /// Turns tracking off for connection `id` and forgets its keys; true if
    /// it was on.
    pub fn stop(&self, id: u64) -> bool {
        let mut inner = self.inner.lock();
        let Some(tracker) = inner.clients.remove(&id) else {
            return false;
        };
        inner.broadcasters.remove(&id);
        for key in tracker.keys {
            if let Some(readers) = inner.readers.get_mut(&key) {
                readers.remove(&id);
                if readers.is_empty() {
                    inner.readers.remove(&key);
                }
            }
        }
        self.active.fetch_sub(1, Ordering::Relaxed);
        true
    }

    /// Has `hook` collect key events exactly while a connection tracks.
    /// Under the registry's lock, so two connections turning tracking on
    /// and off at once cannot leave it off while one tracks.
    pub fn set_hook(&self, hook: &KeyEventHook) {
        let inner = self.inner.lock();
        hook.enable_tracking(!inner.clients.is_empty());
    }

    /// Whether any connection tracks keys.
    pub fn is_active(&self) -> bool {
        self.client_count() > 0
    }

    /// Connection `id` (in default mode) is about to read `keys`.
    /// Past the table's bound, some keys are invalidated to make room.
    pub fn remember(&self, id: u64, keys: impl Iterator<Item = Bytes>, pubsub: &PubSub) {
        let mut inner = self.inner.lock();
        let Inner {
            clients, readers, ..
        } = &mut *inner;
        let Some(tracker) = clients.get_mut(&id) else {
            return;
        };
        for key in keys {
            readers.entry(key.clone()).or_default().insert(id);
            tracker.keys.insert(key);
        }
        if readers.len() <= self.max_keys {
            return;
        }
        // A hundredth more than needed, so a full table is not walked from
        // its start for every read.
        let excess = readers.len() - self.max_keys + self.max_keys / 100;
        let evicted: Vec<Bytes> = readers.keys().take(excess).cloned().collect();
        for key in evicted {
            let Some(ids) = readers.remove(&key) else {
                continue;
            };
            for id in ids {
                if let Some(tracker) = clients.get_mut(&id) {
                    tracker.keys.remove(&key);
                    send(tracker, Some(vec![key.clone()]), pubsub);
                }
            }
        }
    }

    /// Connections with tracking on (INFO's `tracking_clients`).
    pub fn client_count(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// How many keys are tracked for default-mode readers (INFO's
    /// `tracking_total_keys`).
    pub fn tracked_keys(&self) -> usize {
        self.inner.lock().readers.len()
    }

    /// Sends the invalidations one applied command's `events` call for.
    pub fn invalidate(&self, events: &[KeyEvent], pubsub: &PubSub) {
        if !self.is_active() {
            return;
        }
        let mut inner = self.inner.lock();
        let Inner {
            clients,
            readers,
            broadcasters,
        } = &mut *inner;
        // Per connection: the keys to tell it of, or `None` for everything.
        let mut outgoing: HashMap<u64, Option<Vec<Bytes>>> = HashMap::new();
        for event in events {
            if event.class == EventClass::Flush {
                readers.clear();
                for (&id, tracker) in clients.iter_mut() {
                    tracker.keys.clear();
                    outgoing.insert(id, None);
                }
                continue;
            }
            if event.class == EventClass::KeyMiss {
                continue;
            }
            let mut tell = |id: u64, key: &Bytes| {
                if let Some(keys) = outgoing.entry(id).or_insert_with(|| Some(Vec::new())) {
                    keys.push(key.clone());
                }
            };
            if let Some(ids) = readers.remove(&event.key) {
                for id in ids {
                    if let Some(tracker) = clients.get_mut(&id) {
                        tracker.keys.remove(&event.key);
                        tell(id, &event.key);
                    }
                }
            }
            for (&id, prefixes) in broadcasters.iter() {
                if prefixes.is_empty()
                    || prefixes.iter().any(|prefix| event.key.starts_with(prefix))
                {
                    tell(id, &event.key);
                }
            }
        }
        for (id, mut keys) in outgoing {
            let Some(tracker) = clients.get(&id) else {
                continue;
            };
            // A key a command changed twice is named once.
            if let Some(keys) = &mut keys {
                let mut seen = HashSet::with_capacity(keys.len());
                keys.retain(|key| seen.insert(key.clone()));
            }
            send(tracker, keys, pubsub);
        }
    }
}

/// Sends one invalidation to `tracker`'s connection, or to the one it
/// redirects to while that one is subscribed to `__redis__:invalidate`.
fn send(tracker: &Tracker, keys: Option<Vec<Bytes>>, pubsub: &PubSub) {
    let (outbox, redirected) = match tracker.mode.redirect {
        Some(target) => match pubsub.subscriber(INVALIDATE_CHANNEL, target) {
            Some(outbox) => (outbox, true),
            None => return,
        },
        None => (tracker.outbox.clone(), false),
    };
    outbox.offer(Push::Invalidate { keys, redirected });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::frame::Protocol;
    use crate::resp::push::{Wanted, queue};
    use std::collections::BTreeSet;

    fn event(key: &str) -> KeyEvent {
        KeyEvent {
            class: EventClass::String,
            name: "set",
            db: 0,
            key: Bytes::copy_from_slice(key.as_bytes()),
        }
    }

    fn default_mode() -> Mode {
        Mode {
            broadcast: None,
            caching: Caching::Always,
            redirect: None,
            no_loop: false,
        }
    }

    fn received(inbox: &mut crate::resp::push::Inbox) -> String {
        let mut out = bytes::BytesMut::new();
        let none = BTreeSet::new();
        let wanted = Wanted::all_of(&none, Protocol::Resp3);
        assert!(inbox.drain(wanted, &mut out, usize::MAX));
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn a_read_key_is_invalidated_once_then_forgotten() {
        let tracking = Tracking::default();
        let pubsub = PubSub::default();
        let (outbox, mut inbox) = queue(7, 1 << 20);
        assert!(tracking.start(outbox, default_mode()));
        tracking.remember(7, [Bytes::from_static(b"k")].into_iter(), &pubsub);
        tracking.invalidate(&[event("other")], &pubsub);
        assert_eq!(received(&mut inbox), "");
        tracking.invalidate(&[event("k"), event("k")], &pubsub);
        assert_eq!(
            received(&mut inbox),
            ">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"
        );
        // Not read again: the next change is not its business.
        tracking.invalidate(&[event("k")], &pubsub);
        assert_eq!(received(&mut inbox), "");
        assert_eq!(tracking.tracked_keys(), 0);
    }

    #[test]
    fn past_its_bound_the_table_invalidates_keys_to_make_room() {
        let tracking = Tracking::with_max_keys(100);
        let pubsub = PubSub::default();
        let (outbox, mut inbox) = queue(3, 1 << 20);
        tracking.start(outbox, default_mode());
        let keys = (0..100).map(|index| Bytes::from(format!("k{index}")));
        tracking.remember(3, keys, &pubsub);
        assert_eq!(received(&mut inbox), "");
        tracking.remember(3, [Bytes::from_static(b"one-more")].into_iter(), &pubsub);
        // One over the bound, and a hundredth more: two keys told, two gone.
        let pushed = received(&mut inbox);
        assert_eq!(pushed.matches("invalidate").count(), 2, "{pushed}");
        assert_eq!(tracking.tracked_keys(), 99);
    }

    #[test]
    fn broadcast_tells_of_prefixes_and_a_flush_of_everything() {
        let tracking = Tracking::default();
        let pubsub = PubSub::default();
        let (outbox, mut inbox) = queue(1, 1 << 20);
        let mode = Mode {
            broadcast: Some(vec![Bytes::from_static(b"user:")]),
            ..default_mode()
        };
        tracking.start(outbox, mode);
        tracking.invalidate(&[event("user:1"), event("post:1")], &pubsub);
        assert_eq!(
            received(&mut inbox),
            ">2\r\n$10\r\ninvalidate\r\n*1\r\n$6\r\nuser:1\r\n"
        );
        let flush = KeyEvent {
            class: EventClass::Flush,
            name: "flushall",
            db: 0,
            key: Bytes::new(),
        };
        tracking.invalidate(&[flush], &pubsub);
        assert_eq!(received(&mut inbox), ">2\r\n$10\r\ninvalidate\r\n_\r\n");
        assert!(tracking.stop(1));
        assert!(!tracking.is_active());
    }
}
