//! Client-side caching (`CLIENT TRACKING`): which connections cache which
//! keys, and the invalidations sent when those keys change.
//!
//! In the default mode a connection is told about the keys it read: each
//! read registers its keys here, and the first change to such a key sends
//! it one `invalidate` naming that key alone and forgets the pair (it must
//! read the key again to hear of it again). In broadcast mode (`BCAST`) it
//! is told of every change to keys under its prefixes (the empty prefix: any
//! key), read or not, one `invalidate` per prefix naming the keys under it
//! in key order, as Redis sends them. Changes come
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
//! A redirect to a connection that has closed is "broken": the invalidations
//! are dropped and a RESP3 connection is told `tracking-redir-broken` instead,
//! as in Redis.
//!
//! With `NOLOOP` a connection is not told of its own writes, known by the
//! origin its writes carry to their apply ([`crate::store::origin`]). A
//! write whose origin is unknown here (recovered, expired, or from a cluster
//! whose members do not all read origins yet) is told to everyone: at worst
//! a refetch, never a stale cache.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::clients::Clients;

use bytes::Bytes;
use parking_lot::Mutex;

use super::push::{Outbox, Push};
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
    /// `Some(prefixes)` in broadcast mode, never empty (the empty prefix:
    /// every key); no prefix of the list starts another.
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
    /// `tracking-table-max-keys`; 0 for no bound.
    max_keys: AtomicUsize,
}

impl Default for Tracking {
    fn default() -> Tracking {
        Tracking::with_max_keys(MAX_TRACKED_KEYS)
    }
}

#[derive(Debug, Default)]
struct Inner {
    trackers: HashMap<u64, Tracker>,
    /// Key → the default-mode connections that read it since its last
    /// invalidation.
    readers: HashMap<Bytes, HashSet<u64>>,
    /// The broadcast-mode connections and their prefixes (the empty prefix:
    /// every key).
    broadcasters: HashMap<u64, Vec<Bytes>>,
}

impl Inner {
    /// Once more than `max_keys` keys are tracked (0: no bound), invalidates
    /// keys until `slack` fewer than that are, telling their readers.
    fn evict_past(&mut self, max_keys: usize, slack: usize, connections: &Clients) {
        if max_keys == 0 || self.readers.len() <= max_keys {
            return;
        }
        let excess = self.readers.len() - max_keys + slack.min(max_keys);
        let evicted: Vec<Bytes> = self.readers.keys().take(excess).cloned().collect();
        for key in evicted {
            let Some(ids) = self.readers.remove(&key) else {
                continue;
            };
            for id in ids {
                if let Some(tracker) = self.trackers.get_mut(&id) {
                    tracker.keys.remove(&key);
                    send(tracker, Some(vec![key.clone()]), connections);
                }
            }
        }
    }
}

#[derive(Debug)]
struct Tracker {
    /// The connection's own outbox.
    outbox: Outbox,
    mode: Mode,
    /// The keys it registered, so turning tracking off forgets them.
    keys: HashSet<Bytes>,
    /// Its redirect target has closed (CLIENT TRACKINGINFO's
    /// `broken_redirect`), until tracking is turned on again.
    broken_redirect: bool,
}

impl Tracking {
    /// A registry that tracks at most `max_keys` keys for default-mode
    /// readers.
    pub fn with_max_keys(max_keys: usize) -> Tracking {
        Tracking {
            inner: Mutex::default(),
            active: AtomicUsize::new(0),
            max_keys: AtomicUsize::new(max_keys),
        }
    }

    /// `CONFIG SET tracking-table-max-keys`: 0 for no bound. A table past a
    /// new, lower bound shrinks to it at once, its readers told.
    pub fn set_max_keys(&self, max_keys: usize, connections: &Clients) {
        let mut inner = self.inner.lock();
        self.max_keys.store(max_keys, Ordering::Relaxed);
        inner.evict_past(max_keys, 0, connections);
    }

    pub fn max_keys(&self) -> usize {
        self.max_keys.load(Ordering::Relaxed)
    }

    /// Turns tracking on for connection `outbox.id` (or changes its mode,
    /// which clears a broken redirect); true if it was off.
    pub fn start(&self, outbox: Outbox, mode: Mode) -> bool {
        let mut inner = self.inner.lock();
        let id = outbox.id;
        match &mode.broadcast {
            Some(prefixes) => inner.broadcasters.insert(id, prefixes.clone()),
            None => inner.broadcasters.remove(&id),
        };
        match inner.trackers.get_mut(&id) {
            Some(tracker) => {
                tracker.mode = mode;
                tracker.broken_redirect = false;
                false
            }
            None => {
                inner.trackers.insert(
                    id,
                    Tracker {
                        outbox,
                        mode,
                        keys: HashSet::new(),
                        broken_redirect: false,
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
        let Some(tracker) = inner.trackers.remove(&id) else {
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
        hook.enable_tracking(!inner.trackers.is_empty());
    }

    /// Whether connection `id`'s redirect target has closed.
    pub fn is_redirect_broken(&self, id: u64) -> bool {
        self.inner
            .lock()
            .trackers
            .get(&id)
            .is_some_and(|tracker| tracker.broken_redirect)
    }

    /// Whether any connection tracks keys.
    pub fn is_active(&self) -> bool {
        self.client_count() > 0
    }

    /// Connection `id` (in default mode) is about to read `keys`.
    /// Past the table's bound, some keys are invalidated to make room.
    pub fn remember(&self, id: u64, keys: impl Iterator<Item = Bytes>, connections: &Clients) {
        let mut inner = self.inner.lock();
        let Inner {
            trackers, readers, ..
        } = &mut *inner;
        let Some(tracker) = trackers.get_mut(&id) else {
            return;
        };
        for key in keys {
            readers.entry(key.clone()).or_default().insert(id);
            tracker.keys.insert(key);
        }
        // A hundredth more than needed, so a full table is not walked from
        // its start for every read.
        let max_keys = self.max_keys();
        inner.evict_past(max_keys, max_keys / 100, connections);
    }

    /// Connections with tracking on (INFO's `tracking_clients`).
    pub fn client_count(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// INFO's `tracking_total_keys`, `tracking_total_items` (pairs of a key
    /// and a connection that reads it) and `tracking_total_prefixes`
    /// (distinct broadcast prefixes).
    pub fn totals(&self) -> (usize, usize, usize) {
        let inner = self.inner.lock();
        let items = inner.readers.values().map(HashSet::len).sum();
        let prefixes: HashSet<&Bytes> = inner.broadcasters.values().flatten().collect();
        (inner.readers.len(), items, prefixes.len())
    }

    /// Sends the invalidations one applied command's `events` call for:
    /// each default-mode reader one message per key, each broadcaster one
    /// per prefix with changed keys, everyone a null after a flush. The
    /// command came from connection `origin`, which is not told if it asked
    /// for `NOLOOP`.
    pub fn invalidate(&self, events: &[KeyEvent], connections: &Clients, origin: u64) {
        if !self.is_active() {
            return;
        }
        let mut inner = self.inner.lock();
        let Inner {
            trackers,
            readers,
            broadcasters,
        } = &mut *inner;
        // In order: (connection, the keys to tell it of, or `None` for
        // everything).
        let mut outgoing: Vec<(u64, Option<Vec<Bytes>>)> = Vec::new();
        // Broadcasters' changed keys by (connection, prefix), in key order.
        let mut broadcast: BTreeMap<(u64, Bytes), BTreeSet<Bytes>> = BTreeMap::new();
        for event in events {
            match event.class {
                EventClass::Flush => {
                    readers.clear();
                    broadcast.clear();
                    outgoing.clear();
                    for (&id, tracker) in trackers.iter_mut() {
                        tracker.keys.clear();
                        outgoing.push((id, None));
                    }
                    continue;
                }
                EventClass::KeyMiss => continue,
                _ => {}
            }
            if let Some(ids) = readers.remove(&event.key) {
                for id in ids {
                    if let Some(tracker) = trackers.get_mut(&id) {
                        tracker.keys.remove(&event.key);
                        outgoing.push((id, Some(vec![event.key.clone()])));
                    }
                }
            }
            for (&id, prefixes) in broadcasters.iter() {
                for prefix in prefixes
                    .iter()
                    .filter(|prefix| event.key.starts_with(prefix))
                {
                    broadcast
                        .entry((id, prefix.clone()))
                        .or_default()
                        .insert(event.key.clone());
                }
            }
        }
        let broadcast = broadcast
            .into_iter()
            .map(|((id, _), keys)| (id, Some(keys.into_iter().collect())));
        let mut told_everything = HashSet::new();
        for (id, keys) in outgoing.into_iter().chain(broadcast) {
            // As in Redis, a flush is told even to the connection that made it.
            let own_change = id == origin && keys.is_some();
            if own_change
                && trackers
                    .get(&id)
                    .is_some_and(|tracker| tracker.mode.no_loop)
            {
                continue;
            }
            // After a flush, one null per connection says it all.
            if told_everything.contains(&id) {
                continue;
            }
            if keys.is_none() {
                told_everything.insert(id);
            }
            if let Some(tracker) = trackers.get_mut(&id) {
                send(tracker, keys, connections);
            }
        }
    }
}

/// Sends one invalidation to `tracker`'s connection, or to the one it
/// redirects to: a RESP3 connection, or a RESP2 one in Pub/Sub mode. A
/// target that has closed breaks the redirect: a RESP3 connection is told so
/// instead, each time it would have been sent an invalidation.
fn send(tracker: &mut Tracker, keys: Option<Vec<Bytes>>, connections: &Clients) {
    let Some(target) = tracker.mode.redirect else {
        tracker.outbox.offer(Push::Invalidate {
            keys,
            redirected: false,
        });
        return;
    };
    match connections.outbox(target) {
        // The target's protocol and subscriptions decide whether it is sent.
        Some(Some(outbox)) => {
            outbox.offer(Push::Invalidate {
                keys,
                redirected: true,
            });
        }
        Some(None) => {}
        None => {
            tracker.broken_redirect = true;
            tracker.outbox.offer(Push::RedirectBroken(target));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::frame::Protocol;
    use crate::resp::push::{Inbox, Wanted, queue};
    use std::collections::BTreeSet;
    use std::sync::Arc;

    const NO_ORIGIN: u64 = crate::store::origin::UNKNOWN;

    fn event(key: &str) -> KeyEvent {
        KeyEvent {
            class: EventClass::String,
            name: "set",
            db: 0,
            key: Bytes::copy_from_slice(key.as_bytes()),
        }
    }

    fn flush() -> KeyEvent {
        KeyEvent {
            class: EventClass::Flush,
            name: "flushall",
            db: 0,
            key: Bytes::new(),
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

    fn broadcast(prefixes: &[&'static str]) -> Mode {
        Mode {
            broadcast: Some(
                prefixes
                    .iter()
                    .map(|p| Bytes::from_static(p.as_bytes()))
                    .collect(),
            ),
            ..default_mode()
        }
    }

    fn received(inbox: &mut Inbox) -> String {
        let mut out = bytes::BytesMut::new();
        let none = BTreeSet::new();
        let wanted = Wanted::all_of(&none, Protocol::Resp3);
        assert!(inbox.drain(wanted, &mut out, usize::MAX));
        String::from_utf8_lossy(&out).into_owned()
    }

    fn keys(names: &[&str]) -> impl Iterator<Item = Bytes> {
        names
            .iter()
            .map(|name| Bytes::copy_from_slice(name.as_bytes()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn a_read_key_is_invalidated_once_then_forgotten() {
        let tracking = Tracking::default();
        let connections = Clients::default();
        let (outbox, mut inbox) = queue(7, 1 << 20);
        assert!(tracking.start(outbox, default_mode()));
        tracking.remember(7, keys(&["k"]), &connections);
        tracking.invalidate(&[event("other")], &connections, NO_ORIGIN);
        assert_eq!(received(&mut inbox), "");
        tracking.invalidate(&[event("k"), event("k")], &connections, NO_ORIGIN);
        assert_eq!(
            received(&mut inbox),
            ">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"
        );
        // Not read again: the next change is not its business.
        tracking.invalidate(&[event("k")], &connections, NO_ORIGIN);
        assert_eq!(received(&mut inbox), "");
        assert_eq!(tracking.totals(), (0, 0, 0));
    }

    #[test]
    fn each_changed_key_is_its_own_message_as_in_redis() {
        let tracking = Tracking::default();
        let connections = Clients::default();
        let (outbox, mut inbox) = queue(7, 1 << 20);
        tracking.start(outbox, default_mode());
        tracking.remember(7, keys(&["a", "b"]), &connections);
        assert_eq!(tracking.totals(), (2, 2, 0));
        tracking.invalidate(&[event("a"), event("b")], &connections, NO_ORIGIN);
        assert_eq!(
            received(&mut inbox),
            ">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\na\r\n\
             >2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nb\r\n"
        );
    }

    #[test]
    fn past_its_bound_the_table_invalidates_keys_to_make_room() {
        let tracking = Tracking::with_max_keys(100);
        let connections = Clients::default();
        let (outbox, mut inbox) = queue(3, 1 << 20);
        tracking.start(outbox, default_mode());
        let many: Vec<String> = (0..100).map(|index| format!("k{index}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        tracking.remember(3, keys(&many), &connections);
        assert_eq!(received(&mut inbox), "");
        tracking.remember(3, keys(&["one-more"]), &connections);
        // One over the bound, and a hundredth more: two keys told, two gone.
        let pushed = received(&mut inbox);
        assert_eq!(pushed.matches("invalidate").count(), 2, "{pushed}");
        assert_eq!(tracking.totals().0, 99);
        // A lower bound set live takes the table down to it exactly, at once.
        tracking.set_max_keys(10, &connections);
        let pushed = received(&mut inbox);
        assert_eq!(pushed.matches("invalidate").count(), 89, "{pushed}");
        assert_eq!(tracking.totals().0, 10);
        // No bound: ten and two hundred more.
        tracking.set_max_keys(0, &connections);
        let more: Vec<String> = (0..200).map(|index| format!("n{index}")).collect();
        let more: Vec<&str> = more.iter().map(String::as_str).collect();
        tracking.remember(3, keys(&more), &connections);
        assert_eq!(tracking.totals().0, 210);
        assert_eq!(received(&mut inbox), "");
    }

    #[test]
    fn broadcast_sends_one_message_per_prefix_and_a_flush_of_everything() {
        let tracking = Tracking::default();
        let connections = Clients::default();
        let (outbox, mut inbox) = queue(1, 1 << 20);
        tracking.start(outbox, broadcast(&["user:", "post:"]));
        assert_eq!(tracking.totals(), (0, 0, 2));
        let changes = [
            event("user:2"),
            event("post:1"),
            event("user:1"),
            event("x"),
        ];
        tracking.invalidate(&changes, &connections, NO_ORIGIN);
        // Each prefix's keys in key order, as Redis sends them.
        assert_eq!(
            received(&mut inbox),
            ">2\r\n$10\r\ninvalidate\r\n*1\r\n$6\r\npost:1\r\n\
             >2\r\n$10\r\ninvalidate\r\n*2\r\n$6\r\nuser:1\r\n$6\r\nuser:2\r\n"
        );
        tracking.invalidate(&[flush()], &connections, NO_ORIGIN);
        assert_eq!(received(&mut inbox), ">2\r\n$10\r\ninvalidate\r\n_\r\n");
        assert!(tracking.stop(1));
        assert!(!tracking.is_active());
    }

    #[test]
    fn noloop_leaves_out_the_connections_own_changes_but_not_a_flush() {
        let tracking = Tracking::default();
        let connections = Clients::default();
        let (reader, mut reader_inbox) = queue(4, 1 << 20);
        let (watcher, mut watcher_inbox) = queue(5, 1 << 20);
        tracking.start(
            reader,
            Mode {
                no_loop: true,
                ..default_mode()
            },
        );
        tracking.start(
            watcher,
            Mode {
                no_loop: true,
                ..broadcast(&[""])
            },
        );
        tracking.remember(4, keys(&["k"]), &connections);
        // Connection 4's own write: it is not told, and it forgets the key.
        tracking.invalidate(&[event("k")], &connections, 4);
        assert_eq!(received(&mut reader_inbox), "");
        assert_eq!(tracking.totals().0, 0);
        // Connection 5 is told of 4's write, not of its own.
        assert!(received(&mut watcher_inbox).contains("$1\r\nk\r\n"));
        tracking.invalidate(&[event("w")], &connections, 5);
        assert_eq!(received(&mut watcher_inbox), "");
        // A flush reaches everyone, the connection that made it too.
        tracking.invalidate(&[flush()], &connections, 4);
        assert!(received(&mut reader_inbox).ends_with("_\r\n"));
        assert!(received(&mut watcher_inbox).ends_with("_\r\n"));
    }

    #[test]
    fn a_redirect_to_a_closed_connection_is_reported_broken() {
        let tracking = Tracking::default();
        let connections = Arc::new(Clients::default());
        let target = connections.register(9, ("127.0.0.1:1".into(), "127.0.0.1:2".into(), -1));
        let (target_outbox, mut target_inbox) = queue(9, 1 << 20);
        connections.set_outbox(9, target_outbox);
        let (outbox, mut inbox) = queue(8, 1 << 20);
        tracking.start(
            outbox,
            Mode {
                redirect: Some(9),
                ..default_mode()
            },
        );
        tracking.remember(8, keys(&["k"]), &connections);
        tracking.invalidate(&[event("k")], &connections, NO_ORIGIN);
        assert!(received(&mut target_inbox).contains("$1\r\nk\r\n"));
        assert_eq!(received(&mut inbox), "");
        assert!(!tracking.is_redirect_broken(8));
        drop(target);
        tracking.remember(8, keys(&["k"]), &connections);
        tracking.invalidate(&[event("k")], &connections, NO_ORIGIN);
        assert_eq!(
            received(&mut inbox),
            ">2\r\n$21\r\ntracking-redir-broken\r\n:9\r\n"
        );
        assert!(tracking.is_redirect_broken(8));
    }
}
