//! The change feed: every change to database 0 (the HTTP API's), in revision
//! order, kept in a bounded history that watchers read from.
//!
//! The state publishes each applied command's changes at once, under one lock,
//! so a reader never sees part of a revision. Watchers hold only a position
//! (the last change they sent) and read forward from the shared history; a
//! writer never waits for a watcher and no watcher has a buffer of its own, so
//! a thousand idle watchers cost a thousand positions. Invariants:
//! - `history` is in (revision, order-within-revision) order, and holds every
//!   change with a revision above `floor`;
//! - `floor` only grows: it rises as old changes are evicted to keep the
//!   history within its byte and count bounds, and to the new revision when a
//!   snapshot replaces the state (the changes it stood for are unknown here).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;

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
    pub key: Bytes,
    /// The new value of a put; empty otherwise.
    pub value: Bytes,
    /// The put's expiry (Unix ms, 0 for none).
    pub expires_at_ms: u64,
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
        // The struct itself plus what its handles keep alive.
        std::mem::size_of::<Change>() + self.key.len() + self.value.len()
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
    /// The revision of the latest publish, for watchers to wait on.
    head: watch::Sender<u64>,
    /// Watch streams open now (a gauge for `/metrics`).
    watchers: AtomicUsize,
}

struct Inner {
    history: VecDeque<Arc<Change>>,
    bytes: usize,
    floor: u64,
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
            }),
            limits,
            head: watch::Sender::new(revision),
            watchers: AtomicUsize::new(0),
        })
    }

    /// Adds one command's changes, all at `revision`, and wakes the watchers.
    pub fn publish(&self, revision: u64, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let mut inner = self.inner.lock();
        for change in changes {
            inner.bytes += change.bytes();
            inner.history.push_back(Arc::new(change));
        }
        while inner.history.len() > self.limits.max_changes || inner.bytes > self.limits.max_bytes {
            let Some(evicted) = inner.history.pop_front() else {
                break;
            };
            inner.bytes -= evicted.bytes();
            // A revision is evicted whole or served whole: the floor covers
            // the evicted change's revision, so drop the rest of it too.
            inner.floor = inner.floor.max(evicted.revision);
            while inner
                .history
                .front()
                .is_some_and(|next| next.revision <= inner.floor)
            {
                if let Some(next) = inner.history.pop_front() {
                    inner.bytes -= next.bytes();
                }
            }
        }
        drop(inner);
        self.head.send_replace(revision);
    }

    /// The state was replaced by a snapshot at `revision`: what happened
    /// before it is unknown here, so the history restarts after it.
    pub fn restart_at(&self, revision: u64) {
        let mut inner = self.inner.lock();
        inner.history.clear();
        inner.bytes = 0;
        inner.floor = inner.floor.max(revision);
        drop(inner);
        self.head.send_replace(revision);
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

    pub fn watcher_started(&self) {
        self.watchers.fetch_add(1, Ordering::Relaxed);
    }

    pub fn watcher_ended(&self) {
        self.watchers.fetch_sub(1, Ordering::Relaxed);
    }

    /// Watch streams open now.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }

    /// A receiver that wakes when something is published.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(revision: u64, index: u32, count: u32, key: &str) -> Change {
        Change {
            revision,
            index,
            count,
            kind: ChangeKind::Put,
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"v"),
            expires_at_ms: 0,
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
        feed.publish(11, vec![change(11, 1, 1, "a")]);
        feed.publish(12, vec![change(12, 1, 2, "b"), change(12, 2, 2, "c")]);
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
        feed.publish(1, vec![change(1, 1, 1, "a")]);
        feed.publish(2, vec![change(2, 1, 2, "b"), change(2, 2, 2, "c")]);
        feed.publish(3, vec![change(3, 1, 2, "d"), change(3, 2, 2, "e")]);
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
}
