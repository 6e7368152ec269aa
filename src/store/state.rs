//! The in-memory state: keys in byte order with their values and revisions.
//!
//! `State` is the state machine both stores (and later every Raft replica) apply
//! commands to. Invariants:
//! - `revision` only grows; every entry's `mod_revision` is at most `revision`;
//! - `applied_seq` only grows: commands are applied in log order, once each;
//! - `by_hash` holds exactly the keys of `entries`, each with [`scan_hash`]
//!   of it: the order SCAN walks, which no insert or delete changes for the
//!   keys already there;
//! - while frozen for a snapshot, `preimages` holds, for every key changed since
//!   the freeze, its entry as it was at the freeze (`None`: absent then), so the
//!   snapshot can be read in chunks while writes continue.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use bytes::Bytes;

use super::command::{Command, Guard, Op};
use super::key::Key;
use super::redis_op::{self, Answer, Keyspace, RedisCommand};
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
    /// For a Redis command: each op's answer, in order.
    #[serde(default)]
    pub answers: Vec<Answer>,
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
    /// Every key with its [`scan_hash`], in that order: SCAN's cursor is a
    /// position here, so it survives other keys coming and going, another
    /// connection and a restart.
    by_hash: BTreeSet<(u64, Key)>,
    revision: u64,
    applied_seq: u64,
    /// Sum of key and value lengths of all entries.
    data_bytes: u64,
    /// The keys that have an expiry, by expiry time: counting the expired
    /// ones (not yet swept) is a short range, so DBSIZE needs no scan.
    by_expiry: BTreeSet<(u64, Key)>,
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
        let by_expiry = entries
            .iter()
            .filter(|(_, entry)| entry.expires_at_ms != 0)
            .map(|(key, entry)| (entry.expires_at_ms, key.clone()))
            .collect();
        let by_hash = entries
            .keys()
            .map(|key| (scan_hash(key), key.clone()))
            .collect();
        State {
            entries,
            by_hash,
            revision,
            applied_seq: seq,
            data_bytes,
            by_expiry,
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

    /// Number of live entries at `now_ms`: the stored ones minus those expired
    /// and not yet swept (a count over those alone).
    pub fn live_len(&self, now_ms: u64) -> usize {
        let expired = self
            .by_expiry
            .range(..(now_ms.saturating_add(1), Key::new(b"")))
            .count();
        self.entries.len() - expired
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
        if self.by_expiry.is_empty() {
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

    /// One step of SCAN: from position `cursor` in hash order (0: the start),
    /// looks at about `count` keys and returns the live ones `wanted` accepts,
    /// with the cursor to continue from (0: the scan is complete). Keys with
    /// the same hash are never split across steps, so a key present for the
    /// whole scan is returned at least once.
    pub fn scan(
        &self,
        cursor: u64,
        count: usize,
        now_ms: u64,
        wanted: &dyn Fn(&[u8]) -> bool,
    ) -> (Vec<Bytes>, u64) {
        let mut keys = Vec::new();
        let mut last_hash = None;
        let start = (cursor, Key::new(b""));
        for (looked, (hash, key)) in self.by_hash.range(start..).enumerate() {
            if looked >= count && last_hash != Some(*hash) {
                return (keys, *hash);
            }
            last_hash = Some(*hash);
            let live = self.entries.get(key).is_some_and(|e| e.is_live(now_ms));
            if live && wanted(key) {
                keys.push(key.to_bytes());
            }
        }
        (keys, 0)
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
            Command::Redis(redis) => self.apply_redis(redis, issued_at_ms),
        }
    }

    fn refused(&self, current: Option<Entry>) -> Outcome {
        Outcome {
            revision: self.revision,
            succeeded: false,
            previous: current,
            changed: 0,
            answers: Vec::new(),
        }
    }

    /// The refusal for the first guard that does not hold, if any: a
    /// transaction applies only when all of them do.
    fn check_guards(&self, guards: &[(Bytes, Guard)], now_ms: u64) -> Option<Outcome> {
        let (key, _) = guards
            .iter()
            .find(|(key, guard)| !guard.holds(self.get(key, now_ms)))?;
        Some(self.refused(self.get(key, now_ms).cloned()))
    }

    /// Runs a Redis command's ops in order at one revision, if every WATCH
    /// guard holds; otherwise nothing runs and the outcome is refused.
    fn apply_redis(&mut self, redis: RedisCommand, now_ms: u64) -> Outcome {
        if let Some(refused) = self.check_guards(&redis.guards, now_ms) {
            return refused;
        }
        let revision = self.next_revision();
        let mut view = RedisView {
            state: self,
            revision,
            now_ms,
            touched: false,
            changed: 0,
        };
        let answers = redis
            .ops
            .into_iter()
            .map(|op| redis_op::run(&mut view, op, now_ms))
            .collect();
        let (touched, changed) = (view.touched, view.changed);
        if touched {
            self.revision = revision;
        }
        Outcome {
            revision: self.revision,
            succeeded: true,
            previous: None,
            changed,
            answers,
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
            answers: Vec::new(),
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
                answers: Vec::new(),
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
            answers: Vec::new(),
        }
    }

    fn apply_txn(&mut self, guards: Vec<(Bytes, Guard)>, ops: Vec<Op>, now_ms: u64) -> Outcome {
        if let Some(refused) = self.check_guards(&guards, now_ms) {
            return refused;
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
            answers: Vec::new(),
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
        let new_expiry = entry.as_ref().map_or(0, |entry| entry.expires_at_ms);
        if new_expiry != 0 {
            self.by_expiry.insert((new_expiry, key.clone()));
        }
        let previous = match entry {
            Some(entry) => {
                self.data_bytes += key_len + entry.value.len() as u64;
                let previous = self.entries.insert(key.clone(), entry);
                if previous.is_none() {
                    self.by_hash.insert((scan_hash(&key), key.clone()));
                }
                previous
            }
            None => {
                let previous = self.entries.remove(&key);
                if previous.is_some() {
                    self.by_hash.remove(&(scan_hash(&key), key.clone()));
                }
                previous
            }
        };
        if let Some(previous) = &previous {
            self.data_bytes -= key_len + previous.value.len() as u64;
            if previous.expires_at_ms != 0 && previous.expires_at_ms != new_expiry {
                self.by_expiry.remove(&(previous.expires_at_ms, key));
            }
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

/// Where a key sits in SCAN order: FNV-1a, fixed forever (a cursor must mean
/// the same after an upgrade), never 0 (cursor 0 means start and end).
pub fn scan_hash(key: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in key {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash.max(1)
}

/// The state as one Redis command's ops see it: reads at the command's time,
/// writes at its revision.
struct RedisView<'a> {
    state: &'a mut State,
    revision: u64,
    now_ms: u64,
    touched: bool,
    changed: u32,
}

impl Keyspace for RedisView<'_> {
    fn live(&self, key: &[u8]) -> Option<&Entry> {
        self.state.get(key, self.now_ms)
    }

    fn put(&mut self, key: &[u8], value: Bytes, expires_at_ms: u64) {
        let entry = Entry {
            value,
            mod_revision: self.revision,
            expires_at_ms,
        };
        self.state.write(Key::new(key), Some(entry));
        self.touched = true;
        self.changed += 1;
    }

    fn remove(&mut self, key: &[u8]) -> bool {
        if !self.state.entries.contains_key(key) {
            return false;
        }
        let previous = self.state.write(Key::new(key), None);
        self.touched = true;
        let live = previous.is_some_and(|entry| entry.is_live(self.now_ms));
        self.changed += u32::from(live);
        live
    }

    fn clear(&mut self) {
        let keys: Vec<Key> = self.state.entries.keys().cloned().collect();
        for key in keys {
            self.remove(&key);
        }
    }

    fn key_count(&self) -> usize {
        self.state.live_len(self.now_ms)
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
    fn scan_returns_every_key_that_stays_despite_churn() {
        let mut state = State::default();
        for index in 0..500 {
            put(&mut state, &format!("key:{index}"), "v");
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut cursor = 0;
        let mut steps = 0;
        loop {
            let (keys, next) = state.scan(cursor, 7, 0, &|_| true);
            seen.extend(keys);
            // Churn between steps: new keys come, some others go.
            put(&mut state, &format!("new:{steps}"), "v");
            let seq = state.applied_seq() + 1;
            state.apply(seq, 0, Command::delete(format!("key:{}", 499 - steps)));
            steps += 1;
            if next == 0 {
                break;
            }
            cursor = next;
        }
        for index in 0..(500 - steps) {
            let key = Bytes::from(format!("key:{index}"));
            assert!(seen.contains(&key), "{key:?} missed");
        }
        assert!(steps < 200, "COUNT bounds each step");
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
