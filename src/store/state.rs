//! The in-memory state: keys in byte order with their values and revisions.
//!
//! `State` is the state machine both stores (and later every Raft replica) apply
//! commands to. Invariants:
//! - `revision` only grows; every entry's `mod_revision` is at most `revision`;
//! - `applied_seq` only grows: commands are applied in log order, once each;
//! - while frozen for a snapshot, `preimages` holds, for every key changed since
//!   the freeze, its entry as it was at the freeze (`None`: absent then), so the
//!   snapshot can be read in chunks while writes continue.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

use super::command::{Command, Guard, Op};
use super::key::Key;
use crate::storage::snapshot::SnapshotRecord;

/// A stored value with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub value: Bytes,
    /// The store revision of the write that last set this key.
    pub mod_revision: u64,
    /// Unix time in milliseconds after which the key is gone; 0 for never.
    pub expires_at_ms: u64,
}

impl Entry {
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.expires_at_ms == 0 || now_ms < self.expires_at_ms
    }
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    /// The store revision after the command.
    pub revision: u64,
    /// False when a guard did not hold; then nothing changed.
    pub succeeded: bool,
    /// For `Put` and `Delete`: the key's live entry before the command.
    pub previous: Option<Entry>,
    /// Number of live keys written or removed.
    pub changed: u32,
}

/// The log position and revision a snapshot captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPoint {
    pub seq: u64,
    pub revision: u64,
    pub entry_count: u64,
}

struct Frozen {
    point: SnapshotPoint,
    preimages: BTreeMap<Key, Option<Entry>>,
}

#[derive(Default)]
pub struct State {
    entries: BTreeMap<Key, Entry>,
    revision: u64,
    applied_seq: u64,
    /// Sum of key and value lengths of all entries.
    data_bytes: u64,
    /// Entries with an expiry time; while zero, every entry is live.
    expiring: u64,
    /// When set, a change's revision is the sequence number (the Raft log
    /// index) it was applied at, so every replica gives the same write the same
    /// revision; otherwise revisions count changes.
    revision_is_seq: bool,
    frozen: Option<Frozen>,
}

impl State {
    /// Rebuilds a state from a snapshot's records, which must be in key order.
    pub fn from_snapshot(
        seq: u64,
        revision: u64,
        records: impl IntoIterator<Item = SnapshotRecord>,
    ) -> State {
        let entries: BTreeMap<Key, Entry> = records
            .into_iter()
            .map(|record| {
                let entry = Entry {
                    value: record.value,
                    mod_revision: record.mod_revision,
                    expires_at_ms: record.expires_at_ms,
                };
                (Key::new(&record.key), entry)
            })
            .collect();
        let data_bytes = entries
            .iter()
            .map(|(key, entry)| (key.len() + entry.value.len()) as u64)
            .sum();
        let expiring = entries
            .values()
            .filter(|entry| entry.expires_at_ms != 0)
            .count() as u64;
        State {
            entries,
            revision,
            applied_seq: seq,
            data_bytes,
            expiring,
            revision_is_seq: false,
            frozen: None,
        }
    }

    /// A state whose revisions are log indexes (a Raft replica's).
    pub fn with_revision_is_seq(mut self) -> State {
        self.revision_is_seq = true;
        self
    }

    /// The revision the next change gets; only grows, since `applied_seq` is
    /// always at least `revision`.
    fn next_revision(&self) -> u64 {
        if self.revision_is_seq {
            self.applied_seq.max(self.revision + 1)
        } else {
            self.revision + 1
        }
    }

    /// Advances the applied position past an entry that changes no key (a Raft
    /// blank or membership entry).
    pub fn skip(&mut self, seq: u64) {
        assert!(
            seq > self.applied_seq,
            "entries apply in log order: {seq} after {}",
            self.applied_seq
        );
        self.applied_seq = seq;
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn applied_seq(&self) -> u64 {
        self.applied_seq
    }

    /// Number of stored entries, expired ones not yet removed included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Number of live entries at `now_ms`; counts only when some keys expire.
    pub fn live_len(&self, now_ms: u64) -> usize {
        if self.expiring == 0 {
            return self.entries.len();
        }
        self.entries
            .values()
            .filter(|entry| entry.is_live(now_ms))
            .count()
    }

    /// Looks at up to `scan_limit` stored entries after `after` (from the start
    /// for `None`) and returns the keys of those expired at `now_ms`, with the
    /// last key looked at, the cursor for the next call (`None` at the end).
    pub fn expired_keys(
        &self,
        after: Option<&[u8]>,
        scan_limit: usize,
        now_ms: u64,
    ) -> (Vec<Bytes>, Option<Bytes>) {
        if self.expiring == 0 {
            return (Vec::new(), None);
        }
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut expired = Vec::new();
        let mut last = None;
        let entries = self.entries.range::<[u8], _>((lower, Bound::Unbounded));
        for (scanned, (key, entry)) in entries.enumerate() {
            if scanned == scan_limit {
                return (expired, last);
            }
            if !entry.is_live(now_ms) {
                expired.push(key.to_bytes());
            }
            last = Some(key.to_bytes());
        }
        (expired, None)
    }

    /// The live entry for `key` at `now_ms`.
    pub fn get(&self, key: &[u8], now_ms: u64) -> Option<&Entry> {
        self.entries.get(key).filter(|entry| entry.is_live(now_ms))
    }

    /// Up to `limit` live entries with keys starting with `prefix`, beginning at
    /// `start`, in key order.
    pub fn range(
        &self,
        start: Bound<&[u8]>,
        prefix: &[u8],
        limit: usize,
        now_ms: u64,
    ) -> Vec<(Bytes, Entry)> {
        let lower = match start {
            Bound::Included(key) | Bound::Excluded(key) if key < prefix => Bound::Included(prefix),
            Bound::Unbounded => Bound::Included(prefix),
            other => other,
        };
        self.entries
            .range::<[u8], _>((lower, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .filter(|(_, entry)| entry.is_live(now_ms))
            .take(limit)
            .map(|(key, entry)| (key.to_bytes(), entry.clone()))
            .collect()
    }

    /// Applies the command logged at `seq`, issued at `issued_at_ms`.
    pub fn apply(&mut self, seq: u64, issued_at_ms: u64, command: Command) -> Outcome {
        assert!(
            seq > self.applied_seq,
            "commands apply in log order: {seq} after {}",
            self.applied_seq
        );
        self.applied_seq = seq;
        match command {
            Command::Put {
                key,
                value,
                expires_at_ms,
                guard,
            } => self.apply_put(Key::new(&key), value, expires_at_ms, guard, issued_at_ms),
            Command::Delete { key, guard } => {
                self.apply_delete(Key::new(&key), guard, issued_at_ms)
            }
            Command::Txn { guards, ops } => self.apply_txn(guards, ops, issued_at_ms),
        }
    }

    fn refused(&self, current: Option<Entry>) -> Outcome {
        Outcome {
            revision: self.revision,
            succeeded: false,
            previous: current,
            changed: 0,
        }
    }

    fn apply_put(
        &mut self,
        key: Key,
        value: Bytes,
        expires_at_ms: u64,
        guard: Guard,
        now_ms: u64,
    ) -> Outcome {
        // Unguarded puts (the common case) skip the lookup: the insert below
        // returns the previous entry anyway.
        if guard != Guard::None {
            let current = self.get(&key, now_ms);
            if !guard.holds(current) {
                return self.refused(current.cloned());
            }
        }
        self.revision = self.next_revision();
        let previous = self
            .write(
                key,
                Some(Entry {
                    value,
                    mod_revision: self.revision,
                    expires_at_ms,
                }),
            )
            .filter(|entry| entry.is_live(now_ms));
        Outcome {
            revision: self.revision,
            succeeded: true,
            previous,
            changed: 1,
        }
    }

    fn apply_delete(&mut self, key: Key, guard: Guard, now_ms: u64) -> Outcome {
        let current = self.get(&key, now_ms);
        if !guard.holds(current) {
            return self.refused(current.cloned());
        }
        if !self.entries.contains_key(&key) {
            return Outcome {
                revision: self.revision,
                succeeded: true,
                previous: None,
                changed: 0,
            };
        }
        // Removing an expired entry is still a change of the stored state.
        self.revision = self.next_revision();
        let previous = self.write(key, None).filter(|entry| entry.is_live(now_ms));
        Outcome {
            revision: self.revision,
            succeeded: true,
            changed: u32::from(previous.is_some()),
            previous,
        }
    }

    fn apply_txn(&mut self, guards: Vec<(Bytes, Guard)>, ops: Vec<Op>, now_ms: u64) -> Outcome {
        if let Some((key, _)) = guards
            .iter()
            .find(|(key, guard)| !guard.holds(self.get(key, now_ms)))
        {
            return self.refused(self.get(key, now_ms).cloned());
        }
        let revision = self.next_revision();
        let mut changed = 0;
        let mut touched = false;
        for op in ops {
            let (key, entry) = match op {
                Op::Put {
                    key,
                    value,
                    expires_at_ms,
                } => (
                    Key::new(&key),
                    Some(Entry {
                        value,
                        mod_revision: revision,
                        expires_at_ms,
                    }),
                ),
                Op::Delete { key } => {
                    if !self.entries.contains_key(key.as_ref()) {
                        continue;
                    }
                    (Key::new(&key), None)
                }
            };
            let is_put = entry.is_some();
            let previous = self.write(key, entry);
            touched = true;
            if is_put || previous.is_some_and(|entry| entry.is_live(now_ms)) {
                changed += 1;
            }
        }
        if touched {
            self.revision = revision;
        }
        Outcome {
            revision: self.revision,
            succeeded: true,
            previous: None,
            changed,
        }
    }

    /// Sets (`Some`) or removes (`None`) an entry, keeping the byte count and the
    /// snapshot preimages right. Returns the previous entry, expired or not.
    fn write(&mut self, key: Key, entry: Option<Entry>) -> Option<Entry> {
        if let Some(frozen) = &mut self.frozen
            && !frozen.preimages.contains_key(&key)
        {
            let before = self.entries.get(&key).cloned();
            frozen.preimages.insert(key.clone(), before);
        }
        let key_len = key.len() as u64;
        let expiring = entry.as_ref().is_some_and(|entry| entry.expires_at_ms != 0);
        self.expiring += u64::from(expiring);
        let previous = match entry {
            Some(entry) => {
                self.data_bytes += key_len + entry.value.len() as u64;
                self.entries.insert(key, entry)
            }
            None => self.entries.remove(&key),
        };
        if let Some(previous) = &previous {
            self.data_bytes -= key_len + previous.value.len() as u64;
            self.expiring -= u64::from(previous.expires_at_ms != 0);
        }
        previous
    }

    /// Fixes the current contents as the content of a snapshot, which is then read
    /// with [`State::frozen_chunk`] while writes go on. Only one at a time.
    pub fn freeze(&mut self) -> SnapshotPoint {
        assert!(self.frozen.is_none(), "one snapshot at a time");
        let point = SnapshotPoint {
            seq: self.applied_seq,
            revision: self.revision,
            entry_count: self.entries.len() as u64,
        };
        self.frozen = Some(Frozen {
            point,
            preimages: BTreeMap::new(),
        });
        point
    }

    /// Ends the snapshot started by [`State::freeze`].
    pub fn thaw(&mut self) {
        self.frozen = None;
    }

    /// Up to `max` entries of the frozen contents with keys after `after`, in key
    /// order. An empty result means the snapshot has been read whole.
    pub fn frozen_chunk(&self, after: Option<&[u8]>, max: usize) -> Vec<(Bytes, Entry)> {
        let Some(frozen) = &self.frozen else {
            panic!("frozen_chunk called without freeze");
        };
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let preimages = &frozen.preimages;
        let mut current = self
            .entries
            .range::<[u8], _>((lower, Bound::Unbounded))
            .filter(|(key, _)| !preimages.contains_key(*key))
            .peekable();
        let mut older = preimages
            .range::<[u8], _>((lower, Bound::Unbounded))
            .filter_map(|(key, entry)| entry.as_ref().map(|entry| (key, entry)))
            .peekable();
        let mut chunk = Vec::with_capacity(max);
        while chunk.len() < max {
            let take_current = match (current.peek(), older.peek()) {
                (Some((a, _)), Some((b, _))) => a < b,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if take_current {
                current.next()
            } else {
                older.next()
            };
            if let Some((key, entry)) = next {
                chunk.push((key.to_bytes(), entry.clone()));
            }
        }
        chunk
    }

    /// The point the current freeze captured, if a snapshot is in progress.
    pub fn frozen_point(&self) -> Option<SnapshotPoint> {
        self.frozen.as_ref().map(|frozen| frozen.point)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(state: &mut State, key: &str, value: &str) -> Outcome {
        let seq = state.applied_seq() + 1;
        state.apply(seq, 0, Command::put(key.to_string(), value.to_string()))
    }

    #[test]
    fn revisions_grow_and_guards_decide() {
        let mut state = State::default();
        assert_eq!(put(&mut state, "a", "1").revision, 1);
        assert_eq!(put(&mut state, "a", "2").previous.unwrap().value, "1");
        let refused = state.apply(
            3,
            0,
            Command::Put {
                key: Bytes::from_static(b"a"),
                value: Bytes::from_static(b"3"),
                expires_at_ms: 0,
                guard: Guard::ModRevision(1),
            },
        );
        assert!(!refused.succeeded);
        assert_eq!(refused.previous.unwrap().mod_revision, 2);
        assert_eq!(state.revision(), 2);
        let deleted = state.apply(4, 0, Command::delete(&b"a"[..]));
        assert_eq!((deleted.changed, deleted.revision), (1, 3));
        let missing = state.apply(5, 0, Command::delete(&b"a"[..]));
        assert_eq!((missing.changed, missing.revision), (0, 3));
        assert_eq!(state.data_bytes(), 0);
    }

    #[test]
    fn expired_keys_are_absent_for_reads_and_guards() {
        let mut state = State::default();
        state.apply(
            1,
            0,
            Command::Put {
                key: Bytes::from_static(b"t"),
                value: Bytes::from_static(b"v"),
                expires_at_ms: 100,
                guard: Guard::None,
            },
        );
        assert!(state.get(b"t", 99).is_some());
        assert!(state.get(b"t", 100).is_none());
        let create = state.apply(
            2,
            150,
            Command::Put {
                key: Bytes::from_static(b"t"),
                value: Bytes::from_static(b"new"),
                expires_at_ms: 0,
                guard: Guard::Absent,
            },
        );
        assert!(create.succeeded);
        assert_eq!(create.previous, None);
    }

    #[test]
    fn expired_keys_scan_is_bounded_and_live_len_follows_the_clock() {
        let mut state = State::default();
        let mut seq = 0;
        let mut put_until = |state: &mut State, key: &str, expires_at_ms: u64| {
            seq += 1;
            let command = Command::Put {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::from_static(b"v"),
                expires_at_ms,
                guard: Guard::None,
            };
            state.apply(seq, 1000, command);
        };
        put_until(&mut state, "a", 2000);
        put_until(&mut state, "b", 0);
        put_until(&mut state, "c", 3000);
        put_until(&mut state, "d", 2000);
        assert_eq!(state.live_len(1500), 4);
        assert_eq!(state.live_len(2000), 2);
        assert_eq!(state.live_len(3000), 1);
        let (expired, cursor) = state.expired_keys(None, 2, 2500);
        assert_eq!(expired, vec![Bytes::from_static(b"a")]);
        assert_eq!(cursor.as_deref(), Some(&b"b"[..]));
        let (expired, cursor) = state.expired_keys(cursor.as_deref(), 2, 2500);
        assert_eq!(expired, vec![Bytes::from_static(b"d")]);
        assert!(cursor.is_none(), "the scan reached the end");
        // Overwriting with no expiry stops the count of expiring keys.
        put_until(&mut state, "a", 0);
        put_until(&mut state, "c", 0);
        put_until(&mut state, "d", 0);
        assert_eq!(state.expired_keys(None, 10, 9999), (Vec::new(), None));
        assert_eq!(state.live_len(9999), 4);
    }

    #[test]
    fn frozen_view_ignores_later_writes() {
        let mut state = State::default();
        for key in ["a", "b", "c", "d"] {
            put(&mut state, key, "old");
        }
        let point = state.freeze();
        assert_eq!(point.entry_count, 4);
        put(&mut state, "b", "new");
        put(&mut state, "bb", "inserted");
        let seq = state.applied_seq() + 1;
        state.apply(seq, 0, Command::delete(&b"c"[..]));
        let first = state.frozen_chunk(None, 3);
        let rest = state.frozen_chunk(Some(&first[2].0), 3);
        let keys: Vec<_> = first.iter().chain(&rest).map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, ["a", "b", "c", "d"]);
        assert!(first.iter().chain(&rest).all(|(_, e)| e.value == "old"));
        state.thaw();
        assert_eq!(state.get(b"b", 0).unwrap().value, "new");
    }

    #[test]
    fn range_respects_prefix_start_and_limit() {
        let mut state = State::default();
        for key in ["a/1", "a/2", "a/3", "b/1"] {
            put(&mut state, key, "v");
        }
        let page = state.range(Bound::Unbounded, b"a/", 2, 0);
        assert_eq!(page.len(), 2);
        let next = state.range(Bound::Excluded(&page[1].0), b"a/", 2, 0);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].0, "a/3");
    }
}
