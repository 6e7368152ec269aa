//! The in-memory state: sixteen databases (Redis's `SELECT 0`–`15`), each
//! its keys in byte order with their values and revisions. HTTP and the plain
//! put/delete/txn records address database 0; a Redis command names its own.
//!
//! `State` is the state machine both stores and every Raft replica apply
//! commands to. Invariants:
//! - `revision` only grows; every entry's `mod_revision` is at most `revision`;
//! - `applied_seq` only grows: commands are applied in log order, once each;
//! - one revision counter for all databases: revisions are unique store-wide;
//! - in each database, `by_hash` holds exactly the keys of `entries`, each with [`scan_hash`]
//!   of it: the order SCAN walks, which no insert or delete changes for the
//!   keys already there;
//! - while frozen for a snapshot, `preimages` holds, for every (database, key) changed since
//!   the freeze, its entry as it was at the freeze (`None`: absent then), so the
//!   snapshot can be read in chunks while writes continue.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use bytes::Bytes;

use std::sync::Arc;

use super::changes::{Change, ChangeFeed, ChangeKind};
use super::command::{Command, Op};
pub use super::entry::{AccessTime, Entry, Guard};
use super::key::Key;
use super::key_events::{EventClass, KeyEvent};
use super::redis_op::{self, Answer, Keyspace, RedisCommand, RedisOp};
use parking_lot::RwLock;

use crate::storage::snapshot::{DATABASES, SnapshotRecord, SnapshotWriter};

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
    preimages: BTreeMap<(u8, Key), Option<Entry>>,
}

/// One database's line of INFO's keyspace section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCounts {
    pub db: u8,
    /// Live keys.
    pub keys: usize,
    /// Live keys with an expiry.
    pub expiring: usize,
    /// Their mean remaining time to live (Redis's `avg_ttl`), 0 without any.
    pub mean_ttl_ms: u64,
}

/// One database (`SELECT n`): its keys with the indexes kept beside them.
#[derive(Default)]
struct Database {
    entries: BTreeMap<Key, Entry>,
    /// Every key with its [`scan_hash`], in that order: SCAN's cursor is a
    /// position here, so it survives other keys coming and going, another
    /// connection and a restart.
    by_hash: BTreeSet<(u64, Key)>,
    /// The keys that have an expiry, by expiry time: counting the expired
    /// ones (not yet swept) is a short range, so DBSIZE needs no scan.
    by_expiry: BTreeSet<(u64, Key)>,
    /// Sum of key and value lengths of all entries.
    data_bytes: u64,
    /// The keys whose value APPEND or SETRANGE wrote in place, which Redis
    /// calls `raw` whatever their bytes (OBJECT ENCODING), until the next
    /// write of the key. Deterministic (every replica applies the same ops),
    /// but not in snapshots: a restart from one forgets it, as a Redis
    /// restart from an RDB file does.
    raw_strings: BTreeSet<Key>,
}

impl Database {
    fn from_sorted(entries: Vec<(Key, Entry)>) -> Database {
        let entries: BTreeMap<Key, Entry> = entries.into_iter().collect();
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
        Database {
            entries,
            by_hash,
            by_expiry,
            data_bytes,
            raw_strings: BTreeSet::new(),
        }
    }

    fn get(&self, key: &[u8], now_ms: u64) -> Option<&Entry> {
        // A short key searches as a `Key`, whose compare is the cheaper one.
        let found = if key.len() <= Key::INLINE_BYTES {
            self.entries.get(&Key::new(key))
        } else {
            self.entries.get(key)
        };
        found.filter(|entry| entry.is_live(now_ms))
    }

    fn live_len(&self, now_ms: u64) -> usize {
        let expired = self
            .by_expiry
            .range(..(now_ms.saturating_add(1), Key::new(b"")))
            .count();
        self.entries.len() - expired
    }

    /// Sets (`Some`) or removes (`None`) an entry and keeps the indexes and
    /// the byte count right. Returns the previous entry, expired or not.
    fn write(&mut self, key: Key, entry: Option<Entry>) -> Option<Entry> {
        if !self.raw_strings.is_empty() {
            self.raw_strings.remove(&key);
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
}

/// Slots of the removal log, per database.
const REMOVAL_SLOTS: usize = 256;

/// For each database, the revision of the latest removal of any key hashing
/// to each of [`REMOVAL_SLOTS`] slots. A WATCH of an absent key checks it at
/// EXEC: a removal of the key (or of another key in its slot) after the
/// WATCH means the key may have been created and removed again, and EXEC
/// aborts, as Redis's does, where a plain "still absent" check would miss
/// it. A slot shared with another key can only abort a transaction that
/// could have run (a retry), never let one run that should not.
///
/// It is replicated state: every replica notes the same removals at the same
/// revisions, and a replica's snapshot carries the log, so a replica started
/// from a snapshot judges every guard as the others do. A single node starts
/// with an empty log, which is exact there: no WATCH outlives a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovalLog {
    slots: Vec<u64>,
}

impl Default for RemovalLog {
    fn default() -> RemovalLog {
        RemovalLog {
            slots: vec![0; usize::from(DATABASES) * REMOVAL_SLOTS],
        }
    }
}

impl RemovalLog {
    fn slot(db: u8, key: &[u8]) -> usize {
        usize::from(db) * REMOVAL_SLOTS + crate::encoding::crc32c(key) as usize % REMOVAL_SLOTS
    }

    fn note(&mut self, db: u8, key: &[u8], revision: u64) {
        if let Some(slot) = self.slots.get_mut(RemovalLog::slot(db, key)) {
            *slot = (*slot).max(revision);
        }
    }

    fn note_all(&mut self, db: u8, revision: u64) {
        let start = usize::from(db) * REMOVAL_SLOTS;
        if let Some(slots) = self.slots.get_mut(start..start + REMOVAL_SLOTS) {
            for slot in slots {
                *slot = (*slot).max(revision);
            }
        }
    }

    /// The revision of the latest removal that may have been of `key`.
    fn latest(&self, db: u8, key: &[u8]) -> u64 {
        self.slots
            .get(RemovalLog::slot(db, key))
            .copied()
            .unwrap_or(u64::MAX)
    }

    /// The slots that hold a removal, as `(database, slot, revision)`.
    pub fn to_sparse(&self) -> Vec<(u8, u16, u64)> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, revision)| **revision != 0)
            .map(|(index, revision)| {
                let db = (index / REMOVAL_SLOTS) as u8;
                (db, (index % REMOVAL_SLOTS) as u16, *revision)
            })
            .collect()
    }

    /// The log [`RemovalLog::to_sparse`] listed; entries out of range (only a
    /// damaged snapshot could hold them) are dropped.
    pub fn from_sparse(sparse: &[(u8, u16, u64)]) -> RemovalLog {
        let mut log = RemovalLog::default();
        for &(db, slot, revision) in sparse {
            if db < DATABASES && usize::from(slot) < REMOVAL_SLOTS {
                log.slots[usize::from(db) * REMOVAL_SLOTS + usize::from(slot)] = revision;
            }
        }
        log
    }
}

pub struct State {
    /// [`DATABASES`] of them; HTTP and the plain put/delete/txn records
    /// address database 0.
    dbs: Vec<Database>,
    /// When keys were last removed, for WATCHes of absent keys.
    removals: RemovalLog,
    revision: u64,
    applied_seq: u64,
    /// When set, a change's revision is the sequence number (the Raft log
    /// index) it was applied at, so every replica gives the same write the same
    /// revision; otherwise revisions count changes.
    revision_is_seq: bool,
    frozen: Option<Frozen>,
    /// Where database 0's changes are published for watchers, once attached.
    feed: Option<Arc<ChangeFeed>>,
    /// Keyspace notifications: whether the command being applied collects
    /// its events (someone listens), and those collected so far.
    collecting_events: bool,
    key_events: Vec<KeyEvent>,
    /// The changes of the command being applied, published when it is done.
    pending: Vec<Change>,
    /// The issue time of the command being applied.
    applying_at_ms: u64,
}

impl Default for State {
    fn default() -> State {
        State {
            dbs: (0..DATABASES).map(|_| Database::default()).collect(),
            removals: RemovalLog::default(),
            revision: 0,
            applied_seq: 0,
            revision_is_seq: false,
            frozen: None,
            feed: None,
            collecting_events: false,
            key_events: Vec::new(),
            pending: Vec::new(),
            applying_at_ms: 0,
        }
    }
}

/// A cursor over every database's keys in (database, key) order: the last
/// key looked at.
pub type DbKey = (u8, Bytes);

impl State {
    /// Rebuilds a state from a snapshot's records, which must be in
    /// (database, key) order (as the snapshot decoder checks).
    pub fn from_snapshot(
        seq: u64,
        revision: u64,
        records: impl IntoIterator<Item = SnapshotRecord>,
    ) -> State {
        let mut by_db: Vec<Vec<(Key, Entry)>> = (0..DATABASES).map(|_| Vec::new()).collect();
        let loaded_at_ms = crate::clock::now_ms();
        for record in records {
            let entry = Entry {
                value: record.value,
                mod_revision: record.mod_revision,
                expires_at_ms: record.expires_at_ms,
                accessed: AccessTime::at_ms(loaded_at_ms),
            };
            if let Some(db) = by_db.get_mut(usize::from(record.db)) {
                db.push((Key::new(&record.key), entry));
            }
        }
        State {
            dbs: by_db.into_iter().map(Database::from_sorted).collect(),
            revision,
            applied_seq: seq,
            ..State::default()
        }
    }

    /// Publishes database 0's changes to `feed` from now on.
    pub fn attach_feed(&mut self, feed: Arc<ChangeFeed>) {
        self.feed = Some(feed);
    }

    /// The feed this state publishes to, if any.
    pub fn feed(&self) -> Option<&Arc<ChangeFeed>> {
        self.feed.as_ref()
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

    fn db(&self, db: u8) -> &Database {
        &self.dbs[usize::from(db)]
    }

    /// Number of stored entries in every database, expired ones not yet
    /// removed included.
    pub fn len(&self) -> usize {
        self.dbs.iter().map(|db| db.entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.dbs.iter().all(|db| db.entries.is_empty())
    }

    /// Bytes of keys and values in every database.
    pub fn data_bytes(&self) -> u64 {
        self.dbs.iter().map(|db| db.data_bytes).sum()
    }

    /// Number of live entries of database `db` at `now_ms`: the stored ones
    /// minus those expired and not yet swept (a count over those alone).
    pub fn live_len(&self, db: u8, now_ms: u64) -> usize {
        self.db(db).live_len(now_ms)
    }

    /// Live and expiring key counts per database that has keys, with the
    /// expiring keys' mean time to live (INFO's keyspace section).
    pub fn key_counts(&self, now_ms: u64) -> Vec<KeyCounts> {
        (0..DATABASES)
            .zip(&self.dbs)
            .filter(|(_, db)| !db.entries.is_empty())
            .map(|(index, db)| {
                let (mut expiring, mut ttl_sum_ms) = (0usize, 0u128);
                for (expires_at_ms, _) in db
                    .by_expiry
                    .range((now_ms.saturating_add(1), Key::new(b""))..)
                {
                    expiring += 1;
                    ttl_sum_ms += u128::from(expires_at_ms - now_ms);
                }
                KeyCounts {
                    db: index,
                    keys: db.live_len(now_ms),
                    expiring,
                    mean_ttl_ms: match expiring {
                        0 => 0,
                        count => (ttl_sum_ms / count as u128) as u64,
                    },
                }
            })
            .filter(|counts| counts.keys > 0)
            .collect()
    }

    /// Up to `max_keys` keys expired at `now_ms`, soonest expired first,
    /// database by database from `after`'s database (from database 0 for
    /// `None`), found through the expiry index without looking at any live
    /// key; and where the next call should go on (`None` once every
    /// database's expired keys were listed). The key of the returned cursor
    /// is empty: a database's expired keys are always taken from the front
    /// of its index, where the ones already deleted are no longer found.
    pub fn expired_keys(
        &self,
        after: Option<(u8, &[u8])>,
        max_keys: usize,
        now_ms: u64,
    ) -> (Vec<DbKey>, Option<DbKey>) {
        let mut expired = Vec::new();
        let first_db = after.map_or(0, |(db, _)| db);
        let expired_by_now = ..(now_ms.saturating_add(1), Key::new(b""));
        for index in first_db..DATABASES {
            for (_, key) in self.db(index).by_expiry.range(expired_by_now.clone()) {
                if expired.len() == max_keys {
                    return (expired, Some((index, Bytes::new())));
                }
                expired.push((index, key.to_bytes()));
            }
        }
        (expired, None)
    }

    /// One step of SCAN in database `db`: from position `cursor` in hash order
    /// (0: the start), looks at about `count` keys and returns the live ones
    /// `wanted` accepts, with the cursor to continue from (0: the scan is
    /// complete). Keys with the same hash are never split across steps, so a
    /// key present for the whole scan is returned at least once.
    pub fn scan(
        &self,
        db: u8,
        cursor: u64,
        count: usize,
        now_ms: u64,
        wanted: &dyn Fn(&[u8]) -> bool,
    ) -> (Vec<Bytes>, u64) {
        let db = self.db(db);
        let mut keys = Vec::new();
        let mut last_hash = None;
        let start = (cursor, Key::new(b""));
        for (looked, (hash, key)) in db.by_hash.range(start..).enumerate() {
            if looked >= count && last_hash != Some(*hash) {
                return (keys, *hash);
            }
            last_hash = Some(*hash);
            let live = db.entries.get(key).is_some_and(|e| e.is_live(now_ms));
            if live && wanted(key) {
                keys.push(key.to_bytes());
            }
        }
        (keys, 0)
    }

    /// The live entry for `key` in database `db` at `now_ms`.
    pub fn get(&self, db: u8, key: &[u8], now_ms: u64) -> Option<&Entry> {
        self.db(db).get(key, now_ms)
    }

    /// Whether APPEND or SETRANGE last wrote `key`'s value (Redis's `raw`).
    pub fn is_raw_string(&self, db: u8, key: &[u8]) -> bool {
        self.db(db).raw_strings.contains(key)
    }

    /// Up to `limit` live entries of database `db` with keys starting with
    /// `prefix`, beginning at `start`, in key order.
    pub fn range(
        &self,
        db: u8,
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
        self.db(db)
            .entries
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
        self.applying_at_ms = issued_at_ms;
        self.collecting_events = self
            .feed
            .as_ref()
            .is_some_and(|feed| feed.key_events.is_enabled());
        let outcome = match command {
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
        };
        self.publish_changes();
        if !self.key_events.is_empty() {
            if let Some(feed) = &self.feed {
                feed.key_events.deliver(&self.key_events);
            }
            self.key_events.clear();
        }
        outcome
    }

    /// Notes a keyspace event of the command being applied, if collecting.
    fn note_event(&mut self, class: EventClass, name: &'static str, db: u8, key: &[u8]) {
        if self.collecting_events {
            self.key_events.push(KeyEvent {
                class,
                name,
                db,
                key: Bytes::copy_from_slice(key),
            });
        }
    }

    /// The events of a plain put: `set`, and `expire` when it has a TTL.
    fn note_put_events(&mut self, key: &[u8], expires_at_ms: u64) {
        if self.get(0, key, self.applying_at_ms).is_none() {
            self.note_event(EventClass::New, "new", 0, key);
        }
        self.note_event(EventClass::String, "set", 0, key);
        if expires_at_ms != 0 {
            self.note_event(EventClass::Generic, "expire", 0, key);
        }
    }

    /// The event of a removal: `del` of a live key, `expired` of one whose
    /// time had run out (the sweeper's deletes, or a delete that found it so).
    fn note_removal_event(&mut self, db: u8, key: &[u8], previous: Option<&Entry>) {
        match previous {
            Some(entry) if entry.is_live(self.applying_at_ms) => {
                self.note_event(EventClass::Generic, "del", db, key);
            }
            Some(_) => self.note_event(EventClass::Expired, "expired", db, key),
            None => {}
        }
    }

    /// Hands the applied command's changes to the feed, numbered within
    /// their revision.
    fn publish_changes(&mut self) {
        let Some(feed) = &self.feed else {
            return;
        };
        if self.pending.is_empty() {
            return;
        }
        let count = u32::try_from(self.pending.len()).unwrap_or(u32::MAX);
        for (index, change) in (1..).zip(self.pending.iter_mut()) {
            change.revision = self.revision;
            change.index = index;
            change.count = count;
        }
        feed.publish(&mut self.pending);
    }

    /// Notes a change of database 0 for the feed (the revision and numbering
    /// are filled in when the command is done).
    fn note_change(&mut self, key: &Key, entry: Option<&Entry>, previous: Option<&Entry>) {
        let kind = match (entry, previous) {
            (Some(_), _) => ChangeKind::Put,
            (None, Some(previous)) if previous.is_live(self.applying_at_ms) => ChangeKind::Delete,
            (None, Some(_)) => ChangeKind::Expire,
            (None, None) => return,
        };
        self.pending.push(Change {
            revision: 0,
            index: 0,
            count: 0,
            kind,
            key: key.clone(),
            value: entry.map(|entry| entry.value.clone()).unwrap_or_default(),
            expires_at_ms: entry.map_or(0, |entry| entry.expires_at_ms),
            rendered: std::sync::OnceLock::new(),
        });
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

    /// The refusal for the first guard in database `db` that does not hold,
    /// if any: a transaction applies only when all of them do.
    fn check_guards(&self, db: u8, guards: &[(Bytes, Guard)], now_ms: u64) -> Option<Outcome> {
        let (key, _) = guards
            .iter()
            .find(|(key, guard)| !self.guard_holds(db, key, *guard, now_ms))?;
        Some(self.refused(self.get(db, key, now_ms).cloned()))
    }

    /// Runs a Redis command's ops in order at one revision, if every WATCH
    /// guard holds; otherwise nothing runs and the outcome is refused. A
    /// command naming a database that does not exist (only a damaged or
    /// foreign record can) changes nothing.
    fn apply_redis(&mut self, redis: RedisCommand, now_ms: u64) -> Outcome {
        if redis.db >= DATABASES || !redis.ops.iter().all(|op| op.databases_below(DATABASES)) {
            return self.refused(None);
        }
        if let Some(refused) = self.check_guards(redis.db, &redis.guards, now_ms) {
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
        let mut db = redis.db;
        // Pushed into a vector of its own: collected from the ops' vector,
        // the answers would reuse its allocation and shrink it with a
        // realloc, which costs more than a fresh allocation.
        let mut answers = Vec::with_capacity(redis.ops.len());
        for op in redis.ops {
            if let RedisOp::Select { db: selected } = op {
                db = selected;
            }
            answers.push(redis_op::run(&mut view, db, op, now_ms));
        }
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
        if guard != Guard::None && !self.guard_holds(0, &key, guard, now_ms) {
            return self.refused(self.get(0, &key, now_ms).cloned());
        }
        self.revision = self.next_revision();
        let entry = Entry {
            value,
            mod_revision: self.revision,
            expires_at_ms,
            accessed: AccessTime::at_ms(now_ms),
        };
        if self.collecting_events {
            self.note_put_events(&key, expires_at_ms);
        }
        let previous = self
            .write(0, key, Some(entry), self.revision)
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
        if !self.guard_holds(0, &key, guard, now_ms) {
            return self.refused(self.get(0, &key, now_ms).cloned());
        }
        if !self.db(0).entries.contains_key(&key) {
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
        if self.collecting_events {
            let removed = self.db(0).entries.get(&key).cloned();
            self.note_removal_event(0, &key, removed.as_ref());
        }
        let previous = self
            .write(0, key, None, self.revision)
            .filter(|entry| entry.is_live(now_ms));
        Outcome {
            revision: self.revision,
            succeeded: true,
            changed: u32::from(previous.is_some()),
            previous,
            answers: Vec::new(),
        }
    }

    fn apply_txn(&mut self, guards: Vec<(Bytes, Guard)>, ops: Vec<Op>, now_ms: u64) -> Outcome {
        if let Some(refused) = self.check_guards(0, &guards, now_ms) {
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
                        accessed: AccessTime::at_ms(now_ms),
                    }),
                ),
                Op::Delete { key } => {
                    if !self.db(0).entries.contains_key(key.as_ref()) {
                        continue;
                    }
                    (Key::new(&key), None)
                }
            };
            let is_put = entry.is_some();
            if self.collecting_events {
                match &entry {
                    Some(entry) => self.note_put_events(&key, entry.expires_at_ms),
                    None => {
                        let previous = self.db(0).entries.get(&key).cloned();
                        self.note_removal_event(0, &key, previous.as_ref());
                    }
                }
            }
            let previous = self.write(0, key, entry, revision);
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

    /// Sets (`Some`) or removes (`None`) an entry of database `db`, keeping
    /// the snapshot preimages right. Returns the previous entry, expired or
    /// not.
    /// A removal is noted in the removal log at `revision`, the revision of
    /// the command doing it.
    fn write(&mut self, db: u8, key: Key, entry: Option<Entry>, revision: u64) -> Option<Entry> {
        if entry.is_none() {
            self.removals.note(db, &key, revision);
        }
        // While frozen, the entry this write replaces is the key's preimage
        // if this is its first change: taken from the write's own result
        // rather than from a second walk of the map before it.
        let frozen_key = self.frozen.is_some().then(|| key.clone());
        let previous = if db == 0 && self.feed.is_some() {
            let change = (key.clone(), entry.clone());
            let previous = self.dbs[0].write(key, entry);
            self.note_change(&change.0, change.1.as_ref(), previous.as_ref());
            previous
        } else {
            self.dbs[usize::from(db)].write(key, entry)
        };
        if let (Some(frozen), Some(key)) = (&mut self.frozen, frozen_key)
            && let std::collections::btree_map::Entry::Vacant(slot) =
                frozen.preimages.entry((db, key))
        {
            slot.insert(previous.clone());
        }
        previous
    }

    /// Whether `guard` holds for `key` of database `db` now; see
    /// [`Guard::AbsentSince`] for the one guard that needs more than the entry.
    fn guard_holds(&self, db: u8, key: &[u8], guard: Guard, now_ms: u64) -> bool {
        let current = self.get(db, key, now_ms);
        match guard {
            // Absent now, not removed since, and not written since either: a
            // key set after the WATCH with a TTL that has run out (not yet
            // swept) reads as absent but was touched.
            Guard::AbsentSince(revision) => {
                current.is_none()
                    && self.removals.latest(db, key) <= revision
                    && self
                        .db(db)
                        .entries
                        .get(key)
                        .is_none_or(|entry| entry.mod_revision <= revision)
            }
            other => other.holds(current),
        }
    }

    /// The removal log, to carry in a replica's snapshot.
    pub fn removals(&self) -> &RemovalLog {
        &self.removals
    }

    /// Restores the removal log a replica's snapshot carried.
    pub fn set_removals(&mut self, removals: RemovalLog) {
        self.removals = removals;
    }

    /// While frozen, remembers the entry `key` had at the freeze, the first
    /// time it changes.
    fn keep_preimage(&mut self, db: u8, key: &Key) {
        let Some(frozen) = &mut self.frozen else {
            return;
        };
        if let std::collections::btree_map::Entry::Vacant(slot) =
            frozen.preimages.entry((db, key.clone()))
        {
            slot.insert(self.dbs[usize::from(db)].entries.get(key).cloned());
        }
    }

    /// Exchanges two databases' contents (SWAPDB). Every entry in both takes
    /// `revision`, so a key's revision never goes backwards for a reader of
    /// either database. Returns how many entries moved.
    fn swap(&mut self, a: u8, b: u8, revision: u64) -> u32 {
        if a == b {
            return 0;
        }
        if self.frozen.is_some() {
            let keys: BTreeSet<Key> = [a, b]
                .iter()
                .flat_map(|&db| self.db(db).entries.keys().cloned())
                .collect();
            for key in &keys {
                self.keep_preimage(a, key);
                self.keep_preimage(b, key);
            }
        }
        let empty = self.db(a).entries.is_empty() && self.db(b).entries.is_empty();
        self.dbs.swap(usize::from(a), usize::from(b));
        // Any key of either database may have come and gone; swapping two
        // empty ones changes nothing (and does not advance the revision).
        if !empty {
            self.removals.note_all(a, revision);
            self.removals.note_all(b, revision);
        }
        if self.feed.is_some() && (a == 0 || b == 0) {
            self.note_swap_of_database_0(if a == 0 { b } else { a }, revision);
        }
        let mut moved = 0u32;
        for db in [a, b] {
            for entry in self.dbs[usize::from(db)].entries.values_mut() {
                entry.mod_revision = revision;
                moved = moved.saturating_add(1);
            }
        }
        moved
    }

    /// For the feed: database 0 was swapped with `other`, so every key that
    /// left is deleted and every key now there is put (at `revision`).
    fn note_swap_of_database_0(&mut self, other: u8, revision: u64) {
        let gone: Vec<(Key, Entry)> = self
            .db(other)
            .entries
            .iter()
            .filter(|(key, _)| !self.dbs[0].entries.contains_key(*key))
            .map(|(key, entry)| (key.clone(), entry.clone()))
            .collect();
        for (key, entry) in gone {
            self.note_change(&key, None, Some(&entry));
        }
        let present: Vec<(Key, Entry)> = self.dbs[0]
            .entries
            .iter()
            .map(|(key, entry)| {
                let entry = Entry {
                    mod_revision: revision,
                    ..entry.clone()
                };
                (key.clone(), entry)
            })
            .collect();
        for (key, entry) in present {
            self.note_change(&key, Some(&entry), None);
        }
    }

    /// Fixes the current contents as the content of a snapshot, which is then read
    /// with [`State::frozen_chunk`] while writes go on. Only one at a time.
    pub fn freeze(&mut self) -> SnapshotPoint {
        assert!(self.frozen.is_none(), "one snapshot at a time");
        let point = SnapshotPoint {
            seq: self.applied_seq,
            revision: self.revision,
            entry_count: self.len() as u64,
        };
        self.frozen = Some(Frozen {
            point,
            preimages: BTreeMap::new(),
        });
        point
    }

    /// Ends the snapshot started by [`State::freeze`] on the state behind
    /// `lock`. The preimages hold every entry replaced while the snapshot was
    /// written (tens of thousands under load, each perhaps the last owner of
    /// its value's memory), so they are freed after the lock is released, on
    /// the caller's thread: under the lock, freeing them held up every write.
    pub fn thaw(lock: &RwLock<State>) {
        let frozen = lock.write().end_freeze();
        drop(frozen);
    }

    fn end_freeze(&mut self) -> Option<Frozen> {
        self.frozen.take()
    }

    /// Up to `max` entries of the frozen contents after `after`, in
    /// (database, key) order. An empty result means the snapshot has been
    /// read whole.
    pub fn frozen_chunk(&self, after: Option<(u8, &[u8])>, max: usize) -> Vec<FrozenEntry> {
        let Some(frozen) = &self.frozen else {
            panic!("frozen_chunk called without freeze");
        };
        let mut chunk = Vec::with_capacity(max);
        let first_db = after.map_or(0, |(db, _)| db);
        for index in first_db..DATABASES {
            let lower = match after {
                Some((after_db, key)) if after_db == index => Bound::Excluded(key),
                _ => Bound::Unbounded,
            };
            let preimage_lower = match lower {
                Bound::Excluded(key) => Bound::Excluded((index, Key::new(key))),
                _ => Bound::Included((index, Key::new(b""))),
            };
            let preimage_upper = match index.checked_add(1) {
                Some(next) if next < DATABASES => Bound::Excluded((next, Key::new(b""))),
                _ => Bound::Unbounded,
            };
            // Both sides are in key order: a merge walk takes each key once,
            // its preimage where it changed since the freeze (and nothing
            // where it was absent then), its entry where it did not.
            let mut current = self
                .db(index)
                .entries
                .range::<[u8], _>((lower, Bound::Unbounded))
                .peekable();
            let mut older = frozen
                .preimages
                .range((preimage_lower, preimage_upper))
                .map(|((_, key), entry)| (key, entry.as_ref()))
                .peekable();
            while chunk.len() < max {
                let next = match (current.peek(), older.peek()) {
                    (None, None) => break,
                    (Some(_), None) => current.next().map(|(key, entry)| (key, Some(entry))),
                    (None, Some(_)) => older.next(),
                    (Some((now, _)), Some((then, _))) => match (*now).cmp(*then) {
                        std::cmp::Ordering::Less => {
                            current.next().map(|(key, entry)| (key, Some(entry)))
                        }
                        std::cmp::Ordering::Greater => older.next(),
                        std::cmp::Ordering::Equal => {
                            current.next();
                            older.next()
                        }
                    },
                };
                if let Some((key, Some(entry))) = next {
                    chunk.push((index, key.to_bytes(), entry.clone()));
                }
            }
            if chunk.len() == max {
                break;
            }
        }
        chunk
    }

    /// The point the current freeze captured, if a snapshot is in progress.
    pub fn frozen_point(&self) -> Option<SnapshotPoint> {
        self.frozen.as_ref().map(|frozen| frozen.point)
    }
}

/// One entry of a frozen snapshot: database, key, entry.
pub type FrozenEntry = (u8, Bytes, Entry);

/// Streams the frozen contents of `state` into `writer`, `chunk` entries per
/// read lock so writers are never held up for long.
pub fn write_frozen(
    state: &RwLock<State>,
    writer: &mut SnapshotWriter<'_>,
    chunk: usize,
) -> crate::error::Result<()> {
    let mut after: Option<(u8, Bytes)> = None;
    loop {
        let entries = state
            .read()
            .frozen_chunk(after.as_ref().map(|(db, key)| (*db, &key[..])), chunk);
        let Some((db, key, _)) = entries.last() else {
            return Ok(());
        };
        after = Some((*db, key.clone()));
        for (db, key, entry) in &entries {
            writer.push(
                *db,
                key,
                &entry.value,
                entry.mod_revision,
                entry.expires_at_ms,
            )?;
        }
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
    fn live(&self, db: u8, key: &[u8]) -> Option<&Entry> {
        self.state.get(db, key, self.now_ms)
    }

    fn put(&mut self, db: u8, key: &[u8], value: Bytes, expires_at_ms: u64) {
        let entry = Entry {
            value,
            mod_revision: self.revision,
            expires_at_ms,
            accessed: AccessTime::at_ms(self.now_ms),
        };
        if self.state.collecting_events && self.state.get(db, key, self.now_ms).is_none() {
            self.state.note_event(EventClass::New, "new", db, key);
        }
        self.state
            .write(db, Key::new(key), Some(entry), self.revision);
        self.touched = true;
        self.changed += 1;
    }

    fn remove(&mut self, db: u8, key: &[u8]) -> bool {
        if !self.state.db(db).entries.contains_key(key) {
            return false;
        }
        let previous = self.state.write(db, Key::new(key), None, self.revision);
        self.touched = true;
        let live = previous.is_some_and(|entry| entry.is_live(self.now_ms));
        // The op names a live key's removal itself (`del`, `rename_from`…).
        if !live {
            self.state
                .note_event(EventClass::Expired, "expired", db, key);
        }
        self.changed += u32::from(live);
        live
    }

    fn clear(&mut self, db: u8) {
        let keys: Vec<Key> = self.state.db(db).entries.keys().cloned().collect();
        // FLUSHDB and FLUSHALL raise no key events, as in Redis (not even
        // `expired` for the keys whose time had run out).
        let collecting = std::mem::take(&mut self.state.collecting_events);
        for key in keys {
            self.remove(db, &key);
        }
        self.state.collecting_events = collecting;
    }

    fn key_count(&self, db: u8) -> usize {
        self.state.live_len(db, self.now_ms)
    }

    fn notify(&mut self, class: EventClass, name: &'static str, db: u8, key: &[u8]) {
        self.state.note_event(class, name, db, key);
    }

    fn reports_key_misses(&self) -> bool {
        self.state.collecting_events
    }

    fn mark_raw_string(&mut self, db: u8, key: &[u8]) {
        if let Some((key, _)) = self.state.dbs[usize::from(db)].entries.get_key_value(key) {
            let key = key.clone();
            self.state.dbs[usize::from(db)].raw_strings.insert(key);
        }
    }

    fn swap(&mut self, a: u8, b: u8) {
        let moved = self.state.swap(a, b, self.revision);
        self.touched |= moved > 0;
        self.changed = self.changed.saturating_add(moved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redis_op::{RedisCommand, RedisOp, SetExpiry};

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
        assert!(state.get(0, b"t", 99).is_some());
        assert!(state.get(0, b"t", 100).is_none());
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
    fn expired_keys_come_from_the_expiry_index_and_live_len_follows_the_clock() {
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
        assert_eq!(state.live_len(0, 1500), 4);
        assert_eq!(state.live_len(0, 2000), 2);
        assert_eq!(state.live_len(0, 3000), 1);
        // From the expiry index, soonest first; "b" (no expiry) and "c"
        // (later) are never looked at.
        let (expired, cursor) = state.expired_keys(None, 1, 2500);
        assert_eq!(expired, vec![(0, Bytes::from_static(b"a"))]);
        assert_eq!(cursor, Some((0, Bytes::new())));
        let (expired, cursor) = state.expired_keys(None, 2, 2500);
        let both = [b"a", b"d"].map(|key| (0, Bytes::from_static(key)));
        assert_eq!(expired, both);
        assert!(cursor.is_none(), "every expired key was listed");
        assert_eq!(state.expired_keys(None, 10, 3000).0.len(), 3);
        // Overwriting with no expiry stops the count of expiring keys.
        put_until(&mut state, "a", 0);
        put_until(&mut state, "c", 0);
        put_until(&mut state, "d", 0);
        assert_eq!(state.expired_keys(None, 10, 9999), (Vec::new(), None));
        assert_eq!(state.live_len(0, 9999), 4);
        // Live keys before an expired one in key order cost nothing: the
        // first pass of one key finds it.
        for index in 0..100 {
            put_until(&mut state, &format!("0-live-{index:03}"), 0);
        }
        put_until(&mut state, "zz-gone", 1500);
        let (expired, _) = state.expired_keys(None, 1, 2000);
        assert_eq!(expired, vec![(0, Bytes::from_static(b"zz-gone"))]);
    }

    /// One write for the property test below: set, delete or flush, in
    /// one of three databases, over a few keys so writes collide.
    fn frozen_test_op(db: u8, key: u8, kind: u8) -> (u8, RedisOp) {
        let key = Bytes::from(vec![b'k', key]);
        let op = match kind {
            0..=5 => RedisOp::Set {
                key,
                value: Bytes::from(vec![b'v', kind]),
                expiry: SetExpiry::Clear,
                condition: Guard::None,
                get: false,
            },
            6..=8 => RedisOp::Del { keys: vec![key] },
            _ => RedisOp::FlushDb,
        };
        (db, op)
    }

    /// Everything a snapshot read in chunks of `chunk` returns.
    fn read_frozen(state: &State, chunk: usize) -> Vec<(u8, Bytes, Bytes)> {
        let mut read = Vec::new();
        let mut after: Option<(u8, Bytes)> = None;
        loop {
            let entries = state.frozen_chunk(after.as_ref().map(|(db, k)| (*db, &k[..])), chunk);
            let Some((db, key, _)) = entries.last() else {
                return read;
            };
            after = Some((*db, key.clone()));
            read.extend(
                entries
                    .into_iter()
                    .map(|(db, key, entry)| (db, key, entry.value)),
            );
        }
    }

    proptest::proptest! {
        /// Whatever is written after the freeze, and however the snapshot is
        /// chunked, it reads exactly what the state held at the freeze.
        #[test]
        fn a_frozen_snapshot_reads_the_state_at_the_freeze(
            before in proptest::collection::vec((0u8..3, 0u8..12, 0u8..9), 0..40),
            during in proptest::collection::vec((0u8..3, 0u8..12, 0u8..10), 0..60),
            chunk in 1usize..6,
        ) {
            let mut state = State::default();
            for (db, key, kind) in before {
                let (db, op) = frozen_test_op(db, key, kind);
                redis(&mut state, db, vec![op]);
            }
            let mut at_freeze = Vec::new();
            for db in 0..3u8 {
                for (key, entry) in &state.db(db).entries {
                    at_freeze.push((db, key.to_bytes(), entry.value.clone()));
                }
            }
            state.freeze();
            for (db, key, kind) in during {
                let (db, op) = frozen_test_op(db, key, kind);
                redis(&mut state, db, vec![op]);
                proptest::prop_assert_eq!(&read_frozen(&state, chunk), &at_freeze);
            }
            proptest::prop_assert_eq!(read_frozen(&state, chunk), at_freeze);
        }
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
        let rest = state.frozen_chunk(Some((0, &first[2].1)), 3);
        let keys: Vec<_> = first
            .iter()
            .chain(&rest)
            .map(|(_, k, _)| k.clone())
            .collect();
        assert_eq!(keys, ["a", "b", "c", "d"]);
        assert!(first.iter().chain(&rest).all(|(_, _, e)| e.value == "old"));
        state.end_freeze();
        assert_eq!(state.get(0, b"b", 0).unwrap().value, "new");
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
            let (keys, next) = state.scan(0, cursor, 7, 0, &|_| true);
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
        let page = state.range(0, Bound::Unbounded, b"a/", 2, 0);
        assert_eq!(page.len(), 2);
        let next = state.range(0, Bound::Excluded(&page[1].0), b"a/", 2, 0);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].0, "a/3");
    }

    fn redis(state: &mut State, db: u8, ops: Vec<RedisOp>) -> Outcome {
        let seq = state.applied_seq() + 1;
        let command = RedisCommand {
            db,
            guards: Vec::new(),
            ops,
        };
        state.apply(seq, 0, Command::Redis(command))
    }

    fn set(key: &str, value: &str) -> RedisOp {
        RedisOp::Set {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            expiry: redis_op::SetExpiry::Clear,
            condition: Guard::None,
            get: false,
        }
    }

    fn value(state: &State, db: u8, key: &str) -> Option<Bytes> {
        state.get(db, key.as_bytes(), 0).map(|e| e.value.clone())
    }

    #[test]
    fn databases_are_separate_keyspaces_and_flushdb_empties_only_its_own() {
        let mut state = State::default();
        put(&mut state, "k", "zero");
        redis(&mut state, 7, vec![set("k", "seven"), set("only7", "x")]);
        assert_eq!(value(&state, 0, "k").as_deref(), Some(&b"zero"[..]));
        assert_eq!(value(&state, 7, "k").as_deref(), Some(&b"seven"[..]));
        assert_eq!(value(&state, 0, "only7"), None);
        assert_eq!(
            (state.live_len(0, 0), state.live_len(7, 0), state.len()),
            (1, 2, 3)
        );
        let counts = |db, keys| KeyCounts {
            db,
            keys,
            expiring: 0,
            mean_ttl_ms: 0,
        };
        assert_eq!(state.key_counts(0), vec![counts(0, 1), counts(7, 2)]);
        redis(&mut state, 7, vec![RedisOp::FlushDb]);
        assert_eq!((state.live_len(0, 0), state.live_len(7, 0)), (1, 0));
        redis(&mut state, 3, vec![set("a", "1")]);
        redis(&mut state, 3, vec![RedisOp::Flush]);
        assert!(state.is_empty(), "FLUSHALL empties every database");
        assert_eq!(state.data_bytes(), 0);
    }

    #[test]
    fn a_command_naming_a_database_past_the_last_changes_nothing() {
        let mut state = State::default();
        assert!(!redis(&mut state, DATABASES, vec![set("k", "v")]).succeeded);
        let moved = RedisOp::Move {
            key: Bytes::from_static(b"k"),
            to_db: DATABASES,
        };
        put(&mut state, "k", "v");
        assert!(!redis(&mut state, 0, vec![moved]).succeeded);
        assert_eq!(value(&state, 0, "k").as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn move_and_swapdb_carry_values_and_never_lower_a_revision() {
        let mut state = State::default();
        put(&mut state, "m", "moving");
        put(&mut state, "s", "stays");
        let move_op = |to_db| RedisOp::Move {
            key: Bytes::from_static(b"m"),
            to_db,
        };
        assert_eq!(
            redis(&mut state, 0, vec![move_op(2)]).answers,
            [Answer::Integer(1)]
        );
        assert_eq!(value(&state, 0, "m"), None);
        assert_eq!(value(&state, 2, "m").as_deref(), Some(&b"moving"[..]));
        // The key is gone from database 0, so a second MOVE moves nothing.
        assert_eq!(
            redis(&mut state, 0, vec![move_op(2)]).answers,
            [Answer::Integer(0)]
        );
        let before = state.revision();
        let swapped = redis(&mut state, 0, vec![RedisOp::SwapDb { a: 0, b: 2 }]);
        assert_eq!(swapped.revision, before + 1);
        assert_eq!(value(&state, 0, "m").as_deref(), Some(&b"moving"[..]));
        assert_eq!(value(&state, 2, "s").as_deref(), Some(&b"stays"[..]));
        for (db, key) in [(0, "m"), (2, "s")] {
            let entry = state.get(db, key.as_bytes(), 0).unwrap();
            assert_eq!(entry.mod_revision, swapped.revision);
        }
    }

    #[test]
    fn a_frozen_snapshot_spans_databases_and_ignores_a_later_swap() {
        let mut state = State::default();
        put(&mut state, "a", "db0");
        redis(&mut state, 1, vec![set("a", "db1"), set("b", "db1")]);
        redis(&mut state, 15, vec![set("z", "db15")]);
        let point = state.freeze();
        assert_eq!(point.entry_count, 4);
        redis(&mut state, 0, vec![RedisOp::SwapDb { a: 0, b: 1 }]);
        redis(&mut state, 15, vec![RedisOp::FlushDb]);
        redis(&mut state, 4, vec![set("new", "later")]);
        let mut read = Vec::new();
        let mut after: Option<(u8, Bytes)> = None;
        loop {
            let chunk = state.frozen_chunk(after.as_ref().map(|(db, k)| (*db, &k[..])), 1);
            let Some((db, key, _)) = chunk.last() else {
                break;
            };
            after = Some((*db, key.clone()));
            read.extend(
                chunk
                    .into_iter()
                    .map(|(db, key, entry)| (db, key, entry.value)),
            );
        }
        let expected: Vec<(u8, Bytes, Bytes)> = [
            (0, "a", "db0"),
            (1, "a", "db1"),
            (1, "b", "db1"),
            (15, "z", "db15"),
        ]
        .into_iter()
        .map(|(db, key, value)| (db, Bytes::from(key), Bytes::from(value)))
        .collect();
        assert_eq!(read, expected);
    }

    /// Two keys of database 0 whose removals land in different slots.
    fn keys_in_different_slots() -> (&'static [u8], &'static [u8]) {
        let candidates: [&'static [u8]; 4] = [b"ghost", b"other", b"third", b"fourth"];
        let first = candidates[0];
        let second = candidates[1..]
            .iter()
            .find(|key| RemovalLog::slot(0, key) != RemovalLog::slot(0, first))
            .expect("some key in another slot");
        (first, second)
    }

    fn watched_set(state: &mut State, seq: u64, key: &[u8], guard: Guard) -> bool {
        let command = Command::Redis(RedisCommand {
            db: 0,
            guards: vec![(Bytes::copy_from_slice(key), guard)],
            ops: vec![RedisOp::Set {
                key: Bytes::copy_from_slice(key),
                value: Bytes::from_static(b"mine"),
                expiry: SetExpiry::Keep,
                condition: Guard::None,
                get: false,
            }],
        });
        state.apply(seq, 0, command).succeeded
    }

    #[test]
    fn a_watched_absent_key_created_and_removed_again_fails_its_guard() {
        let (ghost, other) = keys_in_different_slots();
        let mut state = State::default();
        let watched_at = state.revision();
        state.apply(1, 0, Command::put(Bytes::from_static(ghost), "briefly"));
        state.apply(2, 0, Command::delete(Bytes::from_static(ghost)));
        assert!(!watched_set(
            &mut state,
            3,
            ghost,
            Guard::AbsentSince(watched_at)
        ));
        assert!(state.get(0, ghost, 0).is_none(), "nothing ran");

        // Watched after that, with only another key removed meanwhile: it runs.
        let watched_at = state.revision();
        state.apply(4, 0, Command::put(Bytes::from_static(other), "x"));
        state.apply(5, 0, Command::delete(Bytes::from_static(other)));
        assert!(watched_set(
            &mut state,
            6,
            ghost,
            Guard::AbsentSince(watched_at)
        ));
    }

    #[test]
    fn swapdb_counts_as_a_removal_of_every_key_in_both_databases() {
        let mut state = State::default();
        put(&mut state, "in-zero", "x");
        let watched_at = state.revision();
        let swap = |a, b| {
            Command::Redis(RedisCommand {
                db: 0,
                guards: Vec::new(),
                ops: vec![RedisOp::SwapDb { a, b }],
            })
        };
        state.apply(2, 0, swap(0, 3));
        let anything = Guard::AbsentSince(watched_at);
        assert!(!watched_set(&mut state, 3, b"anything", anything));

        // Two empty databases swapped: nothing came or went.
        let mut empty = State::default();
        let watched_at = empty.revision();
        empty.apply(1, 0, swap(1, 2));
        let anything = Guard::AbsentSince(watched_at);
        assert!(watched_set(&mut empty, 2, b"anything", anything));
    }

    #[test]
    fn a_watched_absent_key_set_with_a_ttl_that_ran_out_fails_its_guard() {
        let mut state = State::default();
        let watched_at = state.revision();
        let with_ttl = Command::Put {
            key: Bytes::from_static(b"ghost"),
            value: Bytes::from_static(b"briefly"),
            expires_at_ms: 50,
            guard: Guard::None,
        };
        state.apply(1, 0, with_ttl);
        // At 100 ms the entry has expired but is not swept: absent to reads.
        assert!(state.get(0, b"ghost", 100).is_none());
        let command = Command::Redis(RedisCommand {
            db: 0,
            guards: vec![(Bytes::from_static(b"ghost"), Guard::AbsentSince(watched_at))],
            ops: Vec::new(),
        });
        assert!(!state.apply(2, 100, command).succeeded);
    }

    #[test]
    fn the_removal_log_round_trips_through_its_sparse_form() {
        let mut state = State::default();
        state.apply(1, 0, Command::put(Bytes::from_static(b"a"), "1"));
        state.apply(2, 0, Command::delete(Bytes::from_static(b"a")));
        let sparse = state.removals().to_sparse();
        assert_eq!(sparse.len(), 1);
        assert_eq!(&RemovalLog::from_sparse(&sparse), state.removals());
        // Out-of-range slots from a damaged snapshot are dropped, not a panic.
        let log = RemovalLog::from_sparse(&[(200, 0, 9), (0, 9999, 9)]);
        assert!(log.to_sparse().is_empty());
    }
}
