//! The change feed: every change to database 0 (the HTTP API's), in revision
//! order, kept in a bounded history that watchers read from.
//!
//! The state publishes each applied command's changes at once, under one lock,
//! so a reader never sees part of a revision. Watchers hold only a position
//! (the last change they sent) and read forward from the shared history; a
//! writer never waits for a watcher and no watcher has a buffer of its own.
//! A publish wakes only the watchers whose key or prefix a change matches,
//! found by looking up the changed key's prefixes of the lengths watched, so
//! its cost does not grow with the number of watchers: a thousand idle
//! watchers cost a thousand registrations. Invariants:
//! - `history` is in (revision, order-within-revision) order, and holds every
//!   change with a revision above `floor`;
//! - `floor` only grows: it rises as old changes are evicted to keep the
//!   history within its byte and count bounds, and to the new revision when a
//!   snapshot replaces the state (the changes it stood for are unknown here).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::deferred_drop::DropLater;
use super::key::Key;

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Put,
    Delete,
    /// Removed because its time to live ran out.
    Expire,
}

impl ChangeKind {
    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Put => "put",
            ChangeKind::Delete => "delete",
            ChangeKind::Expire => "expire",
        }
    }
}

/// One key's change at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub revision: u64,
    /// 1-based position among the changes of its revision (a transaction
    /// changes several keys at one revision).
    pub index: u32,
    /// How many changes its revision made.
    pub count: u32,
    pub kind: ChangeKind,
    /// Stored inline when short, as in the state's map: noting a change then
    /// costs no allocation for the key.
    pub key: Key,
    /// The new value of a put; empty otherwise.
    pub value: Bytes,
    /// The put's expiry (Unix ms, 0 for none).
    pub expires_at_ms: u64,
    /// The change as the HTTP layer sends it, made by the first watcher that
    /// sends it and shared by the rest.
    pub rendered: OnceLock<Bytes>,
}

impl Change {
    /// Where a reader stands after this change.
    pub fn position(&self) -> Position {
        Position {
            revision: self.revision,
            index: self.index,
        }
    }

    fn bytes(&self) -> usize {
        // The struct, what its handles keep alive, and room for the rendered
        // event (key and value again, plus framing), counted up front since
        // it is made later.
        std::mem::size_of::<Change>() + 2 * (self.key.len() + self.value.len()) + 96
    }
}

/// A reader's place in the feed: after change `index` of `revision`; an
/// `index` of `u32::MAX` (see [`Position::after_revision`]) is after all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub revision: u64,
    pub index: u32,
}

impl Position {
    pub fn after_revision(revision: u64) -> Position {
        Position {
            revision,
            index: u32::MAX,
        }
    }
}

/// How much history a feed keeps.
#[derive(Debug, Clone, Copy)]
pub struct FeedLimits {
    pub max_changes: usize,
    pub max_bytes: usize,
}

impl Default for FeedLimits {
    fn default() -> Self {
        FeedLimits {
            max_changes: 100_000,
            max_bytes: 64 << 20,
        }
    }
}

/// What a reader finds when it reads from a position.
#[derive(Debug)]
pub enum Read {
    /// The changes after the position (possibly none yet).
    Changes(Vec<Arc<Change>>),
    /// The history no longer reaches back to the position: changes after
    /// `floor` are all that can be served.
    Compacted { floor: u64 },
}

pub struct ChangeFeed {
    inner: Mutex<Inner>,
    limits: FeedLimits,
    registry: Mutex<Registry>,
    /// Watch streams open now (a gauge for `/metrics`). Raised under the
    /// registry lock before a watcher first reads, so a publish that sees zero
    /// (and skips the registry) comes before that read, which then finds it.
    watchers: AtomicUsize,
    /// Keyspace notifications' listener (every database, not only 0).
    pub key_events: super::key_events::KeyEventHook,
}

/// What a watcher follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchFilter {
    Key(Bytes),
    Prefix(Bytes),
}

impl WatchFilter {
    pub fn accepts(&self, key: &[u8]) -> bool {
        match self {
            WatchFilter::Key(wanted) => key == wanted.as_ref(),
            WatchFilter::Prefix(prefix) => key.starts_with(prefix),
        }
    }
}

/// The registered watchers, by exact key and by prefix.
#[derive(Default)]
struct Registry {
    next_id: u64,
    keys: HashMap<Bytes, Vec<(u64, Arc<Notify>)>>,
    prefixes: HashMap<Bytes, Vec<(u64, Arc<Notify>)>>,
    /// How many registered prefixes have each length: a changed key is looked
    /// up only at these lengths.
    prefix_lengths: BTreeMap<usize, usize>,
}

impl Registry {
    fn wake_matching(&self, key: &[u8]) {
        let wake = |slots: Option<&Vec<(u64, Arc<Notify>)>>| {
            for (_, notify) in slots.into_iter().flatten() {
                notify.notify_one();
            }
        };
        wake(self.keys.get(key));
        for &length in self.prefix_lengths.keys() {
            if length > key.len() {
                break;
            }
            wake(self.prefixes.get(&key[..length]));
        }
    }

    fn wake_all(&self) {
        for slots in self.keys.values().chain(self.prefixes.values()) {
            for (_, notify) in slots {
                notify.notify_one();
            }
        }
    }
}

/// A watcher's registration: wakes on a matching change; removed on drop.
pub struct Subscription {
    feed: Arc<ChangeFeed>,
    filter: WatchFilter,
    id: u64,
    notify: Arc<Notify>,
}

impl Subscription {
    /// Returns once a matching change (or a restart of the history) was
    /// published since the last call; a publish before the call counts.
    pub async fn changed(&self) {
        self.notify.notified().await;
    }

    pub fn filter(&self) -> &WatchFilter {
        &self.filter
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.feed.watchers.fetch_sub(1, Ordering::Relaxed);
        let mut registry = self.feed.registry.lock();
        let registry = &mut *registry;
        let (map, key) = match &self.filter {
            WatchFilter::Key(key) => (&mut registry.keys, key),
            WatchFilter::Prefix(prefix) => (&mut registry.prefixes, prefix),
        };
        if let Some(slots) = map.get_mut(key) {
            slots.retain(|(id, _)| *id != self.id);
            if slots.is_empty() {
                map.remove(key);
            }
        }
        if let WatchFilter::Prefix(prefix) = &self.filter
            && let Some(count) = registry.prefix_lengths.get_mut(&prefix.len())
        {
            *count -= 1;
            if *count == 0 {
                registry.prefix_lengths.remove(&prefix.len());
            }
        }
    }
}

struct Inner {
    history: VecDeque<Arc<Change>>,
    bytes: usize,
    floor: u64,
    /// Evicted changes waiting to be freed off the commit path.
    retired: DropLater<Arc<Change>>,
}

impl Inner {
    /// Takes the oldest change out of the history, to be freed off this
    /// thread, and gives its revision.
    fn evict_oldest(&mut self) -> Option<u64> {
        let evicted = self.history.pop_front()?;
        let (revision, bytes) = (evicted.revision, evicted.bytes());
        self.bytes -= bytes;
        self.retired.push(evicted, bytes);
        Some(revision)
    }
}

impl ChangeFeed {
    /// A feed whose history starts after `revision` (the state's revision
    /// when the feed is attached).
    pub fn new(revision: u64, limits: FeedLimits) -> Arc<ChangeFeed> {
        Arc::new(ChangeFeed {
            inner: Mutex::new(Inner {
                history: VecDeque::new(),
                bytes: 0,
                floor: revision,
                retired: DropLater::default(),
            }),
            limits,
            registry: Mutex::new(Registry::default()),
            watchers: AtomicUsize::new(0),
            key_events: super::key_events::KeyEventHook::default(),
        })
    }

    /// Adds one command's changes (all at one revision), taking them out of
    /// `changes` (whose allocation the caller keeps for the next command), and
    /// wakes the watchers they match.
    pub fn publish(&self, changes: &mut Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let mut inner = self.inner.lock();
        // With nobody watching, the registry (and its lock) is skipped.
        if self.watchers.load(Ordering::SeqCst) > 0 {
            let registry = self.registry.lock();
            for change in changes.iter() {
                registry.wake_matching(&change.key);
            }
        }
        for change in changes.drain(..) {
            inner.bytes += change.bytes();
            inner.history.push_back(Arc::new(change));
        }
        while inner.history.len() > self.limits.max_changes || inner.bytes > self.limits.max_bytes {
            let Some(revision) = inner.evict_oldest() else {
                break;
            };
            // A revision is evicted whole or served whole: the floor covers
            // the evicted change's revision, so drop the rest of it too.
            inner.floor = inner.floor.max(revision);
            while inner
                .history
                .front()
                .is_some_and(|next| next.revision <= inner.floor)
            {
                inner.evict_oldest();
            }
        }
    }

    /// The state was replaced by a snapshot at `revision`: what happened
    /// before it is unknown here, so the history restarts after it, and any
    /// key may have changed (a flush, to the key events' listener).
    pub fn restart_at(&self, revision: u64) {
        let mut inner = self.inner.lock();
        inner.history.clear();
        inner.bytes = 0;
        inner.floor = inner.floor.max(revision);
        drop(inner);
        self.registry.lock().wake_all();
        if self.key_events.is_enabled() {
            self.key_events.deliver(&[super::key_events::KeyEvent {
                class: super::key_events::EventClass::Flush,
                name: "snapshot",
                db: 0,
                key: Bytes::new(),
            }]);
        }
    }

    /// Up to `max` changes after `from`; or that the history has moved past it.
    pub fn read(&self, from: Position, max: usize) -> Read {
        let inner = self.inner.lock();
        if from.revision < inner.floor {
            return Read::Compacted { floor: inner.floor };
        }
        let start = inner
            .history
            .partition_point(|change| change.position() <= from);
        Read::Changes(inner.history.range(start..).take(max).cloned().collect())
    }

    /// The oldest revision a reader can start after, and the newest change.
    pub fn bounds(&self) -> (u64, u64) {
        let inner = self.inner.lock();
        let newest = inner.history.back().map_or(inner.floor, |c| c.revision);
        (inner.floor, newest)
    }

    /// Changes after `from` still waiting to be read, counted up to `limit`:
    /// how far behind a reader is.
    pub fn behind(&self, from: Position, limit: usize) -> usize {
        let inner = self.inner.lock();
        let start = inner
            .history
            .partition_point(|change| change.position() <= from);
        (inner.history.len() - start).min(limit)
    }

    /// Registers a watcher of `filter`.
    pub fn subscribe(self: &Arc<Self>, filter: WatchFilter) -> Subscription {
        let notify = Arc::new(Notify::new());
        let mut registry = self.registry.lock();
        registry.next_id += 1;
        let id = registry.next_id;
        let slot = (id, notify.clone());
        match &filter {
            WatchFilter::Key(key) => registry.keys.entry(key.clone()).or_default().push(slot),
            WatchFilter::Prefix(prefix) => {
                registry
                    .prefixes
                    .entry(prefix.clone())
                    .or_default()
                    .push(slot);
                *registry.prefix_lengths.entry(prefix.len()).or_default() += 1;
            }
        }
        self.watchers.fetch_add(1, Ordering::SeqCst);
        drop(registry);
        Subscription {
            feed: self.clone(),
            filter,
            id,
            notify,
        }
    }

    /// Watch streams open now.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::deferred_drop::{BATCH_BYTES, BATCH_ITEMS};

    fn change(revision: u64, index: u32, count: u32, key: &str) -> Change {
        Change {
            revision,
            index,
            count,
            kind: ChangeKind::Put,
            key: Key::new(key.as_bytes()),
            value: Bytes::from_static(b"v"),
            expires_at_ms: 0,
            rendered: OnceLock::new(),
        }
    }

    fn keys(read: Read) -> Vec<String> {
        match read {
            Read::Changes(changes) => changes
                .iter()
                .map(|c| String::from_utf8_lossy(&c.key).into_owned())
                .collect(),
            Read::Compacted { floor } => panic!("compacted at {floor}"),
        }
    }

    #[test]
    fn readers_resume_exactly_inside_a_revision() {
        let feed = ChangeFeed::new(10, FeedLimits::default());
        feed.publish(&mut vec![change(11, 1, 1, "a")]);
        feed.publish(&mut vec![change(12, 1, 2, "b"), change(12, 2, 2, "c")]);
        let all = keys(feed.read(Position::after_revision(10), 100));
        assert_eq!(all, ["a", "b", "c"]);
        let mid = Position {
            revision: 12,
            index: 1,
        };
        assert_eq!(keys(feed.read(mid, 100)), ["c"]);
        assert!(keys(feed.read(Position::after_revision(12), 100)).is_empty());
        assert!(matches!(
            feed.read(Position::after_revision(9), 100),
            Read::Compacted { floor: 10 }
        ));
    }

    #[test]
    fn eviction_keeps_whole_revisions_and_raises_the_floor() {
        let limits = FeedLimits {
            max_changes: 3,
            max_bytes: usize::MAX,
        };
        let feed = ChangeFeed::new(0, limits);
        feed.publish(&mut vec![change(1, 1, 1, "a")]);
        feed.publish(&mut vec![change(2, 1, 2, "b"), change(2, 2, 2, "c")]);
        feed.publish(&mut vec![change(3, 1, 2, "d"), change(3, 2, 2, "e")]);
        // Revision 1 and then all of revision 2 went, not half of it.
        assert_eq!(feed.bounds(), (2, 3));
        assert!(matches!(
            feed.read(Position::after_revision(1), 10),
            Read::Compacted { floor: 2 }
        ));
        assert_eq!(keys(feed.read(Position::after_revision(2), 10)), ["d", "e"]);
        feed.restart_at(50);
        assert_eq!(feed.bounds(), (50, 50));
    }

    /// Evicted changes are set aside to be freed elsewhere, but never more
    /// than a batch of them: the history's bounds still bound its memory.
    #[test]
    fn evicted_changes_are_handed_on_in_bounded_batches() {
        let limits = FeedLimits {
            max_changes: 4,
            max_bytes: usize::MAX,
        };
        let feed = ChangeFeed::new(0, limits);
        let mut handed_on = 0;
        for revision in 1..=2_000u64 {
            feed.publish(&mut vec![change(revision, 1, 1, "k")]);
            let inner = feed.inner.lock();
            let (held, held_bytes) = inner.retired.held();
            assert!(held < BATCH_ITEMS);
            assert!(held_bytes < BATCH_BYTES);
            if held == 0 {
                handed_on += 1;
            }
        }
        assert_eq!(feed.bounds(), (1_996, 2_000));
        assert!(
            handed_on >= 7,
            "2,000 evictions went out in {handed_on} batches"
        );
    }

    #[test]
    fn a_snapshot_install_tells_the_key_event_listener_everything_changed() {
        use super::super::key_events::{EventClass, KeyEvent};
        use std::sync::{Arc, Mutex};
        let feed = ChangeFeed::new(0, FeedLimits::default());
        let heard: Arc<Mutex<Vec<KeyEvent>>> = Arc::default();
        let sink = heard.clone();
        feed.key_events
            .listen(move |events| sink.lock().unwrap().extend_from_slice(events));
        // Nobody listening yet: nothing is delivered.
        feed.restart_at(10);
        assert!(heard.lock().unwrap().is_empty());
        // Client-side caching on: a flush, for every database's keys.
        feed.key_events.enable_tracking(true);
        feed.restart_at(20);
        let heard = heard.lock().unwrap();
        assert_eq!(heard.len(), 1);
        assert_eq!(heard[0].class, EventClass::Flush);
        assert!(heard[0].key.is_empty());
    }

    #[test]
    fn a_publish_wakes_only_the_watchers_it_matches() {
        use futures::FutureExt;
        let feed = ChangeFeed::new(0, FeedLimits::default());
        let prefix = feed.subscribe(WatchFilter::Prefix(Bytes::from_static(b"a/")));
        let key = feed.subscribe(WatchFilter::Key(Bytes::from_static(b"b")));
        assert_eq!(feed.watchers(), 2);
        feed.publish(&mut vec![change(1, 1, 1, "c")]);
        assert!(prefix.changed().now_or_never().is_none());
        assert!(key.changed().now_or_never().is_none());
        feed.publish(&mut vec![change(2, 1, 2, "a/x"), change(2, 2, 2, "b")]);
        assert!(prefix.changed().now_or_never().is_some());
        assert!(key.changed().now_or_never().is_some());
        drop(prefix);
        assert_eq!(feed.watchers(), 1);
        feed.publish(&mut vec![change(3, 1, 1, "a/y")]);
        assert!(key.changed().now_or_never().is_none());
    }
}
