//! Keyspace notifications' raw material: which keys each applied command
//! touched and how, named as Redis names the events (`set`, `del`,
//! `expire`, `expired`, `incrby`, `rename_from`…).
//!
//! The state collects a command's events only while a listener has asked
//! for them ([`KeyEventHook::enable`]), so writes pay one relaxed load
//! otherwise; once the command is applied it hands them over in order. The
//! hook lives in the [`super::changes::ChangeFeed`], which outlives a state
//! replaced by a snapshot install. Every replica applies the same commands,
//! so every node produces the same events for its own listeners.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

/// Redis's classes of keyspace events (the letters of
/// `notify-keyspace-events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventClass {
    /// `g`: DEL, EXPIRE, RENAME… on any type.
    Generic,
    /// `$`: string commands.
    String,
    /// `x`: a key removed because its time to live ran out.
    Expired,
    /// `n`: a key created.
    New,
    /// `m`: a read found the key absent. Raised by the front end that served
    /// the read, never by the state.
    KeyMiss,
    /// Every key of database `db` may have changed at once (FLUSHDB,
    /// FLUSHALL, SWAPDB, a snapshot installed from the leader); the key is
    /// empty. Never published as a keyspace notification (Redis publishes
    /// none for these); client-side caching trackers drop everything.
    Flush,
}

/// One event: `name` happened to `key` in database `db`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEvent {
    pub class: EventClass,
    pub name: &'static str,
    pub db: u8,
    pub key: Bytes,
}

type Listener = Box<dyn Fn(&[KeyEvent]) + Send + Sync>;

/// Where applied commands' events go, when anyone listens: keyspace
/// notifications, client-side caching's invalidations, or both.
#[derive(Default)]
pub struct KeyEventHook {
    for_notifications: AtomicBool,
    for_tracking: AtomicBool,
    listener: OnceLock<Listener>,
}

impl std::fmt::Debug for KeyEventHook {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KeyEventHook")
            .field("enabled", &self.is_enabled())
            .finish_non_exhaustive()
    }
}

impl KeyEventHook {
    /// Sets the listener (once); it is called only while enabled.
    pub fn listen(&self, listener: impl Fn(&[KeyEvent]) + Send + Sync + 'static) {
        let _ = self.listener.set(Box::new(listener));
    }

    /// Whether commands applied from now on report their events, for
    /// keyspace notifications.
    pub fn enable(&self, enabled: bool) {
        self.for_notifications.store(enabled, Ordering::Relaxed);
    }

    /// The same, for client-side caching (clients with CLIENT TRACKING on).
    pub fn enable_tracking(&self, enabled: bool) {
        self.for_tracking.store(enabled, Ordering::Relaxed);
    }

    pub fn is_enabled(&self) -> bool {
        self.for_notifications.load(Ordering::Relaxed) || self.for_tracking.load(Ordering::Relaxed)
    }

    pub fn deliver(&self, events: &[KeyEvent]) {
        if let Some(listener) = self.listener.get() {
            listener(events);
        }
    }
}
