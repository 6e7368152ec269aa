//! Redis commands as operations of the state machine.
//!
//! A read-modify-write command (INCR, APPEND, SETRANGE, EXPIRE, RENAME, the
//! bit commands…) is logged as what it is, not as the value a front end
//! computed from a read: the state machine reads, computes and writes in one
//! step when it applies the record. So a hot-key INCR costs one append and no
//! retry, many of them batch into one sync, and in a cluster it replicates as
//! one entry. A MULTI/EXEC transaction is one [`RedisCommand`]: its guards are
//! the WATCHed keys as they were, its ops run in order at one revision, and
//! reads among them see the writes before them.
//!
//! Invariant: running an op depends only on the keyspace, the op and the
//! command's issue time (`now_ms`). Anything else a result depends on (a size
//! limit, an absolute expiry computed from a relative one) is in the op, so
//! every replica computes the same answer.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::bitfield::BitFieldOp;
use super::entry::{Entry, Guard};
use super::key_events::EventClass;
use super::long_double::{self, LongDouble};
use super::number::{format_f64, parse_f64, parse_i64};
use crate::storage::snapshot::DATABASES;

pub const NOT_AN_INTEGER: &str = "value is not an integer or out of range";
pub const TOO_BIG: &str = "string exceeds maximum allowed size (proto-max-bulk-len)";

/// One logged Redis command: a single command, or a whole MULTI/EXEC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RedisCommand {
    /// The database (`SELECT`) the ops address.
    pub db: u8,
    /// WATCHed keys as they were when watched; if any changed, nothing runs.
    pub guards: Vec<(Bytes, Guard)>,
    pub ops: Vec<RedisOp>,
}

/// How SET treats the key's time to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetExpiry {
    /// No expiry (plain SET clears it).
    Clear,
    /// Expire at this Unix time in milliseconds.
    At(u64),
    /// KEEPTTL.
    Keep,
}

/// What GETEX does besides returning the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GetExAction {
    Keep,
    Persist,
    At(u64),
}

/// EXPIRE's NX/XX/GT/LT flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExpireFlags {
    pub nx: bool,
    pub xx: bool,
    pub gt: bool,
    pub lt: bool,
}

impl ExpireFlags {
    /// Whether the flags let an expiry at `new_ms` replace `current_ms` (0:
    /// none); a key without a TTL counts as an infinite one for GT and LT.
    fn allow(self, current_ms: u64, new_ms: i64) -> bool {
        let has_ttl = current_ms != 0;
        let current = current_ms as i64;
        !((self.nx && has_ttl)
            || (self.xx && !has_ttl)
            || (self.gt && (!has_ttl || new_ms <= current))
            || (self.lt && has_ttl && new_ms >= current))
    }
}

/// Which time TTL-family reads report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TtlKind {
    Seconds,
    Milliseconds,
    ExpireTimeSeconds,
    ExpireTimeMilliseconds,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BitOperation {
    And,
    Or,
    Xor,
    Not,
}

/// A range for BITCOUNT and BITPOS: Redis's inclusive indexes, negative from
/// the end, in bytes or (BIT) in bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BitRange {
    pub start: i64,
    pub end: Option<i64>,
    pub bits: bool,
}

/// One command's effect on the keyspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RedisOp {
    Set {
        key: Bytes,
        value: Bytes,
        expiry: SetExpiry,
        /// `Guard::Absent` for NX, `Guard::Present` for XX.
        condition: Guard,
        /// SET … GET: answer the old value.
        get: bool,
    },
    MSet {
        pairs: Vec<(Bytes, Bytes)>,
        /// MSETNX: set nothing if any key exists.
        only_if_none_exist: bool,
    },
    Del {
        keys: Vec<Bytes>,
    },
    IncrBy {
        key: Bytes,
        delta: i64,
    },
    IncrByFloat {
        key: Bytes,
        delta: f64,
    },
    Append {
        key: Bytes,
        value: Bytes,
        max_len: u64,
    },
    SetRange {
        key: Bytes,
        offset: u64,
        value: Bytes,
        max_len: u64,
    },
    GetDel {
        key: Bytes,
    },
    GetEx {
        key: Bytes,
        action: GetExAction,
    },
    /// EXPIRE and friends, at an absolute time (which may be in the past).
    Expire {
        key: Bytes,
        at_ms: i64,
        flags: ExpireFlags,
    },
    Persist {
        key: Bytes,
    },
    Rename {
        from: Bytes,
        to: Bytes,
        only_if_absent: bool,
    },
    Copy {
        from: Bytes,
        to: Bytes,
        replace: bool,
    },
    SetBit {
        key: Bytes,
        offset: u64,
        bit: bool,
    },
    BitOp {
        operation: BitOperation,
        destination: Bytes,
        keys: Vec<Bytes>,
    },
    /// FLUSHALL: every database. (Logs written before databases existed
    /// had only database 0, so this reads them right.)
    Flush,
    Get {
        key: Bytes,
    },
    MGet {
        keys: Vec<Bytes>,
    },
    Strlen {
        key: Bytes,
    },
    Exists {
        keys: Vec<Bytes>,
    },
    Type {
        key: Bytes,
    },
    Ttl {
        key: Bytes,
        kind: TtlKind,
    },
    GetRange {
        key: Bytes,
        start: i64,
        end: i64,
    },
    GetBit {
        key: Bytes,
        offset: u64,
    },
    BitCount {
        key: Bytes,
        range: Option<BitRange>,
    },
    BitPos {
        key: Bytes,
        bit: bool,
        range: Option<BitRange>,
    },
    DbSize,
    // New variants go last: the log stores an op by its variant's position.
    /// FLUSHDB: the command's database only.
    FlushDb,
    /// MOVE: the key into another database, unless it exists there.
    Move {
        key: Bytes,
        to_db: u8,
    },
    /// COPY … DB n.
    CopyToDb {
        from: Bytes,
        to: Bytes,
        to_db: u8,
        replace: bool,
    },
    SwapDb {
        a: u8,
        b: u8,
    },
    /// BITFIELD (and BITFIELD_RO, whose ops are all GETs).
    BitField {
        key: Bytes,
        ops: Vec<BitFieldOp>,
    },
    /// SELECT inside MULTI: the ops after it address database `db`. Only the
    /// command's apply loop acts on it (see [`run`]).
    Select {
        db: u8,
    },
    /// DUMP: the key's value as Redis serializes it ([`super::dump_payload`]).
    Dump {
        key: Bytes,
    },
    /// RESTORE, its payload already decoded into `value`.
    Restore {
        key: Bytes,
        value: Bytes,
        /// Absolute, possibly past (then nothing is created); 0 for none.
        expires_at_ms: u64,
        replace: bool,
    },
    /// RESTORE … IDLETIME: [`RedisOp::Restore`], the key then last accessed
    /// `idle_seconds` before the command's time (what `OBJECT IDLETIME`
    /// reports). An op of its own so that logs written before it still read.
    RestoreIdle {
        key: Bytes,
        value: Bytes,
        expires_at_ms: u64,
        replace: bool,
        idle_seconds: u64,
    },
    /// INCRBYFLOAT in Redis's arithmetic: the increment is an x87 80-bit
    /// value ([`LongDouble::to_bytes`]), added and printed as Redis does on
    /// x86_64. Logs written before it hold [`RedisOp::IncrByFloat`], which
    /// still replays in the `f64` arithmetic it was answered with.
    IncrByLongDouble {
        key: Bytes,
        delta: [u8; 10],
    },
}

impl RedisOp {
    /// The oldest command format that decodes this op (see
    /// [`super::command::COMMAND_FORMAT`]).
    pub fn format(&self) -> u32 {
        match self {
            RedisOp::RestoreIdle { .. } => 2,
            _ => 1,
        }
    }

    /// The op's name, for logs and dumps.
    pub fn name(&self) -> &'static str {
        match self {
            RedisOp::Set { .. } => "SET",
            RedisOp::MSet { .. } => "MSET",
            RedisOp::Del { .. } => "DEL",
            RedisOp::IncrBy { .. } => "INCRBY",
            RedisOp::IncrByFloat { .. } | RedisOp::IncrByLongDouble { .. } => "INCRBYFLOAT",
            RedisOp::Append { .. } => "APPEND",
            RedisOp::SetRange { .. } => "SETRANGE",
            RedisOp::GetDel { .. } => "GETDEL",
            RedisOp::GetEx { .. } => "GETEX",
            RedisOp::Expire { .. } => "EXPIRE",
            RedisOp::Persist { .. } => "PERSIST",
            RedisOp::Rename { .. } => "RENAME",
            RedisOp::Copy { .. } => "COPY",
            RedisOp::SetBit { .. } => "SETBIT",
            RedisOp::BitOp { .. } => "BITOP",
            RedisOp::Flush => "FLUSH",
            RedisOp::Get { .. } => "GET",
            RedisOp::MGet { .. } => "MGET",
            RedisOp::Strlen { .. } => "STRLEN",
            RedisOp::Exists { .. } => "EXISTS",
            RedisOp::Type { .. } => "TYPE",
            RedisOp::Ttl { .. } => "TTL",
            RedisOp::GetRange { .. } => "GETRANGE",
            RedisOp::GetBit { .. } => "GETBIT",
            RedisOp::BitCount { .. } => "BITCOUNT",
            RedisOp::BitPos { .. } => "BITPOS",
            RedisOp::DbSize => "DBSIZE",
            RedisOp::Select { .. } => "SELECT",
            RedisOp::FlushDb => "FLUSHDB",
            RedisOp::Move { .. } => "MOVE",
            RedisOp::CopyToDb { .. } => "COPY",
            RedisOp::SwapDb { .. } => "SWAPDB",
            RedisOp::BitField { .. } => "BITFIELD",
            RedisOp::Dump { .. } => "DUMP",
            RedisOp::Restore { .. } | RedisOp::RestoreIdle { .. } => "RESTORE",
        }
    }

    /// Bytes of keys and values carried, for record limits.
    pub fn data_bytes(&self) -> usize {
        let values = match self {
            RedisOp::Set { value, .. }
            | RedisOp::Restore { value, .. }
            | RedisOp::RestoreIdle { value, .. }
            | RedisOp::Append { value, .. }
            | RedisOp::SetRange { value, .. } => value.len(),
            RedisOp::MSet { pairs, .. } => pairs.iter().map(|(_, value)| value.len()).sum(),
            _ => 0,
        };
        let mut bytes = values;
        self.for_each_key(|key| bytes += key.len());
        bytes
    }

    /// The keys the op reads or writes.
    pub fn keys(&self) -> Vec<&Bytes> {
        let mut keys = Vec::new();
        self.for_each_key(|key| keys.push(key));
        keys
    }

    /// Calls `visit` with each key the op reads or writes, in order, without
    /// collecting them (every write is measured this way).
    pub fn for_each_key<'a>(&'a self, mut visit: impl FnMut(&'a Bytes)) {
        match self {
            RedisOp::MSet { pairs, .. } => pairs.iter().for_each(|(key, _)| visit(key)),
            RedisOp::Del { keys } | RedisOp::MGet { keys } | RedisOp::Exists { keys } => {
                keys.iter().for_each(visit)
            }
            RedisOp::Rename { from, to, .. }
            | RedisOp::Copy { from, to, .. }
            | RedisOp::CopyToDb { from, to, .. } => {
                visit(from);
                visit(to);
            }
            RedisOp::BitOp {
                destination, keys, ..
            } => {
                visit(destination);
                keys.iter().for_each(visit);
            }
            RedisOp::Flush
            | RedisOp::FlushDb
            | RedisOp::SwapDb { .. }
            | RedisOp::DbSize
            | RedisOp::Select { .. } => {}
            RedisOp::Set { key, .. }
            | RedisOp::Append { key, .. }
            | RedisOp::SetRange { key, .. }
            | RedisOp::IncrBy { key, .. }
            | RedisOp::IncrByFloat { key, .. }
            | RedisOp::IncrByLongDouble { key, .. }
            | RedisOp::GetDel { key }
            | RedisOp::GetEx { key, .. }
            | RedisOp::Expire { key, .. }
            | RedisOp::Persist { key }
            | RedisOp::Move { key, .. }
            | RedisOp::SetBit { key, .. }
            | RedisOp::BitField { key, .. }
            | RedisOp::Get { key }
            | RedisOp::Strlen { key }
            | RedisOp::Type { key }
            | RedisOp::Ttl { key, .. }
            | RedisOp::GetRange { key, .. }
            | RedisOp::GetBit { key, .. }
            | RedisOp::BitCount { key, .. }
            | RedisOp::BitPos { key, .. }
            | RedisOp::Dump { key }
            | RedisOp::Restore { key, .. }
            | RedisOp::RestoreIdle { key, .. } => visit(key),
        }
    }

    /// The keys the op looks up as a read, which Redis reports as a
    /// `keymiss` when absent: those of the read ops but TYPE, and of the
    /// writes that return the old value (GETDEL, GETEX, SET … GET).
    pub fn looked_up_keys(&self) -> Vec<&Bytes> {
        match self {
            RedisOp::Type { .. } | RedisOp::Set { get: false, .. } => Vec::new(),
            RedisOp::Set { key, .. } | RedisOp::GetDel { key } | RedisOp::GetEx { key, .. } => {
                vec![key]
            }
            op if !op.writes() => op.keys(),
            _ => Vec::new(),
        }
    }

    /// Whether every database the op names is below `databases`.
    pub fn databases_below(&self, databases: u8) -> bool {
        match self {
            RedisOp::Move { to_db, .. } | RedisOp::CopyToDb { to_db, .. } => *to_db < databases,
            RedisOp::SwapDb { a, b } => *a < databases && *b < databases,
            RedisOp::Select { db } => *db < databases,
            _ => true,
        }
    }

    /// Whether reading the op's keys counts as an access to them, which
    /// `OBJECT IDLETIME` reports: as in Redis, EXISTS, TYPE and TTL look
    /// without touching.
    pub fn counts_as_access(&self) -> bool {
        !matches!(
            self,
            RedisOp::Exists { .. } | RedisOp::Type { .. } | RedisOp::Ttl { .. }
        )
    }

    /// Whether the op can change the keyspace (a transaction of reads only
    /// still goes through the log, to be ordered with writes).
    pub fn writes(&self) -> bool {
        if let RedisOp::BitField { ops, .. } = self {
            return ops.iter().any(|op| op.write_end_byte().is_some());
        }
        !matches!(
            self,
            RedisOp::Get { .. }
                | RedisOp::MGet { .. }
                | RedisOp::Strlen { .. }
                | RedisOp::Exists { .. }
                | RedisOp::Type { .. }
                | RedisOp::Ttl { .. }
                | RedisOp::GetRange { .. }
                | RedisOp::GetBit { .. }
                | RedisOp::BitCount { .. }
                | RedisOp::BitPos { .. }
                | RedisOp::DbSize
                | RedisOp::Select { .. }
                | RedisOp::Dump { .. }
        )
    }
}

/// An op's result, as the front end turns it into a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    Ok,
    Null,
    Integer(i64),
    Bulk(Bytes),
    /// TYPE's answer: `string` when the key exists, `none` otherwise.
    Type {
        exists: bool,
    },
    Array(Vec<Answer>),
    /// A runtime error (the text after `ERR `); the op changed nothing.
    Error(String),
    /// RESTORE onto a key that exists, without REPLACE: Redis's `BUSYKEY`.
    BusyKey,
}

/// The keyspace as an op sees it: live entries at the command's time, and
/// writes that take the command's revision.
/// Every method names the database (below [`DATABASES`]) it addresses.
pub trait Keyspace {
    fn live(&self, db: u8, key: &[u8]) -> Option<&Entry>;
    /// Sets `key`; its revision is the command's.
    fn put(&mut self, db: u8, key: &[u8], value: Bytes, expires_at_ms: u64);
    /// Removes `key` (live or expired); true if it was live.
    fn remove(&mut self, db: u8, key: &[u8]) -> bool;
    /// Removes every key of one database.
    fn clear(&mut self, db: u8);
    /// Live keys (DBSIZE).
    fn key_count(&self, db: u8) -> usize;
    /// Exchanges the contents of two databases (SWAPDB).
    fn swap(&mut self, a: u8, b: u8);
    /// Notes that `key`'s value was just changed in place (APPEND or
    /// SETRANGE on a value that existed), which Redis reports as the `raw`
    /// encoding; a keyspace that does not answer OBJECT ENCODING ignores it.
    fn mark_raw_string(&mut self, _db: u8, _key: &[u8]) {}
    /// Reports a keyspace event (Redis's name for what the op did to
    /// `key`); a keyspace that no one listens to ignores it.
    fn notify(&mut self, _class: EventClass, _name: &'static str, _db: u8, _key: &[u8]) {}
    /// Whether [`Self::notify`] wants `keymiss` events: the state's view does
    /// while anyone listens; a front end's read view reports misses itself.
    fn reports_key_misses(&self) -> bool {
        false
    }
}

fn expiry_of(entry: Option<&Entry>) -> u64 {
    entry.map_or(0, |entry| entry.expires_at_ms)
}

fn value_of(keyspace: &dyn Keyspace, db: u8, key: &[u8]) -> Bytes {
    keyspace
        .live(db, key)
        .map(|entry| entry.value.clone())
        .unwrap_or_default()
}

fn bulk_or_null(entry: Option<&Entry>) -> Answer {
    entry.map_or(Answer::Null, |entry| Answer::Bulk(entry.value.clone()))
}

fn error(text: &str) -> Answer {
    Answer::Error(text.to_string())
}

/// Runs one op against the keyspace at time `now_ms`.
pub fn run(keyspace: &mut dyn Keyspace, db: u8, op: RedisOp, now_ms: u64) -> Answer {
    if keyspace.reports_key_misses() {
        for key in op.looked_up_keys() {
            if keyspace.live(db, key).is_none() {
                keyspace.notify(EventClass::KeyMiss, "keymiss", db, key);
            }
        }
    }
    match op {
        RedisOp::Set {
            key,
            value,
            expiry,
            condition,
            get,
        } => {
            // A plain SET needs nothing of the key it replaces: no lookup
            // (a second walk of the keyspace before the insert) and no copy
            // of the old value.
            let looks = get || condition != Guard::None || matches!(expiry, SetExpiry::Keep);
            let current = if looks { keyspace.live(db, &key) } else { None };
            let old = if get {
                bulk_or_null(current)
            } else {
                Answer::Null
            };
            let expires_at_ms = match expiry {
                SetExpiry::Clear => 0,
                SetExpiry::At(at) => at,
                SetExpiry::Keep => expiry_of(current),
            };
            let applies = condition.holds(current);
            if applies {
                keyspace.put(db, &key, value, expires_at_ms);
                keyspace.notify(EventClass::String, "set", db, &key);
                if matches!(expiry, SetExpiry::At(_)) {
                    keyspace.notify(EventClass::Generic, "expire", db, &key);
                }
            }
            match (get, applies) {
                (true, _) => old,
                (false, true) => Answer::Ok,
                (false, false) => Answer::Null,
            }
        }
        RedisOp::MSet {
            pairs,
            only_if_none_exist,
        } => {
            if only_if_none_exist
                && pairs
                    .iter()
                    .any(|(key, _)| keyspace.live(db, key).is_some())
            {
                return Answer::Integer(0);
            }
            for (key, value) in pairs {
                keyspace.put(db, &key, value, 0);
                keyspace.notify(EventClass::String, "set", db, &key);
            }
            match only_if_none_exist {
                true => Answer::Integer(1),
                false => Answer::Ok,
            }
        }
        RedisOp::Del { keys } => {
            let mut removed = 0;
            for key in &keys {
                if keyspace.remove(db, key) {
                    keyspace.notify(EventClass::Generic, "del", db, key);
                    removed += 1;
                }
            }
            Answer::Integer(removed)
        }
        RedisOp::IncrBy { key, delta } => {
            let current = keyspace.live(db, &key);
            let old = match current {
                None => 0,
                Some(entry) => match parse_i64(&entry.value) {
                    Some(number) => number,
                    None => return error(NOT_AN_INTEGER),
                },
            };
            let Some(new) = old.checked_add(delta) else {
                return error("increment or decrement would overflow");
            };
            let expires_at_ms = expiry_of(current);
            let text = itoa::Buffer::new().format(new).as_bytes().to_vec();
            keyspace.put(db, &key, Bytes::from(text), expires_at_ms);
            keyspace.notify(EventClass::String, "incrby", db, &key);
            Answer::Integer(new)
        }
        RedisOp::IncrByFloat { key, delta } => {
            let current = keyspace.live(db, &key);
            let old = match current {
                None => 0.0,
                Some(entry) => match parse_f64(&entry.value) {
                    Some(number) => number,
                    None => return error("value is not a valid float"),
                },
            };
            let new = old + delta;
            if !new.is_finite() {
                return error("increment would produce NaN or Infinity");
            }
            let text = Bytes::from(format_f64(new));
            let expires_at_ms = expiry_of(current);
            keyspace.put(db, &key, text.clone(), expires_at_ms);
            keyspace.notify(EventClass::String, "incrbyfloat", db, &key);
            Answer::Bulk(text)
        }
        RedisOp::IncrByLongDouble { key, delta } => {
            let not_a_float = || error("value is not a valid float");
            let Some(delta) = LongDouble::from_bytes(delta) else {
                return not_a_float();
            };
            let current = keyspace.live(db, &key);
            let old = match current {
                None => LongDouble::ZERO,
                Some(entry) => match long_double::parse(&entry.value) {
                    Some(number) => number,
                    None => return not_a_float(),
                },
            };
            let Some(text) = old.checked_add(delta).and_then(LongDouble::format_human) else {
                return error("increment would produce NaN or Infinity");
            };
            let text = Bytes::from(text);
            let expires_at_ms = expiry_of(current);
            keyspace.put(db, &key, text.clone(), expires_at_ms);
            keyspace.notify(EventClass::String, "incrbyfloat", db, &key);
            Answer::Bulk(text)
        }
        RedisOp::Append {
            key,
            value,
            max_len,
        } => {
            let current = keyspace.live(db, &key);
            let old = current.map_or(&[][..], |entry| &entry.value[..]);
            let length = old.len() + value.len();
            if length as u64 > max_len {
                return error(TOO_BIG);
            }
            let mut joined = BytesMut::with_capacity(length);
            joined.extend_from_slice(old);
            joined.extend_from_slice(&value);
            let expires_at_ms = expiry_of(current);
            // A new key is stored as SET would store it, as Redis does.
            let existed = current.is_some();
            keyspace.put(db, &key, joined.freeze(), expires_at_ms);
            if existed {
                keyspace.mark_raw_string(db, &key);
            }
            keyspace.notify(EventClass::String, "append", db, &key);
            Answer::Integer(length as i64)
        }
        RedisOp::SetRange {
            key,
            offset,
            value,
            max_len,
        } => {
            let current = keyspace.live(db, &key);
            let old = current.map_or(&[][..], |entry| &entry.value[..]);
            if value.is_empty() {
                return Answer::Integer(old.len() as i64);
            }
            let end = offset.saturating_add(value.len() as u64);
            if end > max_len {
                return error(TOO_BIG);
            }
            let (offset, end) = (offset as usize, end as usize);
            let mut patched = old.to_vec();
            if patched.len() < end {
                patched.resize(end, 0);
            }
            patched[offset..end].copy_from_slice(&value);
            let length = patched.len() as i64;
            let expires_at_ms = expiry_of(current);
            keyspace.put(db, &key, patched.into(), expires_at_ms);
            keyspace.mark_raw_string(db, &key);
            keyspace.notify(EventClass::String, "setrange", db, &key);
            Answer::Integer(length)
        }
        RedisOp::GetDel { key } => {
            let old = bulk_or_null(keyspace.live(db, &key));
            if keyspace.remove(db, &key) {
                keyspace.notify(EventClass::Generic, "del", db, &key);
            }
            old
        }
        RedisOp::GetEx { key, action } => {
            let Some(entry) = keyspace.live(db, &key).cloned() else {
                return Answer::Null;
            };
            match action {
                GetExAction::Keep => {}
                GetExAction::Persist if entry.expires_at_ms == 0 => {}
                GetExAction::Persist => {
                    keyspace.put(db, &key, entry.value.clone(), 0);
                    keyspace.notify(EventClass::Generic, "persist", db, &key);
                }
                GetExAction::At(at) if at <= now_ms => {
                    keyspace.remove(db, &key);
                    keyspace.notify(EventClass::Generic, "del", db, &key);
                }
                GetExAction::At(at) => {
                    keyspace.put(db, &key, entry.value.clone(), at);
                    keyspace.notify(EventClass::Generic, "expire", db, &key);
                }
            }
            Answer::Bulk(entry.value)
        }
        RedisOp::Expire { key, at_ms, flags } => {
            let Some(entry) = keyspace.live(db, &key).cloned() else {
                return Answer::Integer(0);
            };
            if !flags.allow(entry.expires_at_ms, at_ms) {
                return Answer::Integer(0);
            }
            if at_ms <= now_ms as i64 {
                keyspace.remove(db, &key);
                keyspace.notify(EventClass::Generic, "del", db, &key);
            } else {
                keyspace.put(db, &key, entry.value, at_ms as u64);
                keyspace.notify(EventClass::Generic, "expire", db, &key);
            }
            Answer::Integer(1)
        }
        RedisOp::Persist { key } => match keyspace.live(db, &key).cloned() {
            Some(entry) if entry.expires_at_ms != 0 => {
                keyspace.put(db, &key, entry.value, 0);
                keyspace.notify(EventClass::Generic, "persist", db, &key);
                Answer::Integer(1)
            }
            _ => Answer::Integer(0),
        },
        RedisOp::Rename {
            from,
            to,
            only_if_absent,
        } => {
            let Some(entry) = keyspace.live(db, &from).cloned() else {
                return error("no such key");
            };
            let done = |applied: bool| match only_if_absent {
                true => Answer::Integer(i64::from(applied)),
                false => Answer::Ok,
            };
            if from == to || (only_if_absent && keyspace.live(db, &to).is_some()) {
                return done(false);
            }
            // The new key first, so its `new` event comes before
            // `rename_from`, as in Redis (the state after is the same).
            keyspace.put(db, &to, entry.value, entry.expires_at_ms);
            keyspace.remove(db, &from);
            keyspace.notify(EventClass::Generic, "rename_from", db, &from);
            keyspace.notify(EventClass::Generic, "rename_to", db, &to);
            done(true)
        }
        RedisOp::Dump { key } => match keyspace.live(db, &key) {
            Some(entry) => Answer::Bulk(super::dump_payload::encode(&entry.value).into()),
            None => Answer::Null,
        },
        RedisOp::Restore {
            key,
            value,
            expires_at_ms,
            replace,
        } => restore(keyspace, db, &key, value, expires_at_ms, replace, now_ms),
        RedisOp::RestoreIdle {
            key,
            value,
            expires_at_ms,
            replace,
            idle_seconds,
        } => {
            let answer = restore(keyspace, db, &key, value, expires_at_ms, replace, now_ms);
            if let Some(entry) = keyspace.live(db, &key)
                && answer == Answer::Ok
            {
                entry.accessed.set_idle(now_ms, idle_seconds);
            }
            answer
        }
        RedisOp::Copy { from, to, replace } => {
            let Some(entry) = keyspace.live(db, &from).cloned() else {
                return Answer::Integer(0);
            };
            if keyspace.live(db, &to).is_some() && !replace {
                return Answer::Integer(0);
            }
            keyspace.put(db, &to, entry.value, entry.expires_at_ms);
            keyspace.notify(EventClass::Generic, "copy_to", db, &to);
            Answer::Integer(1)
        }
        RedisOp::SetBit { key, offset, bit } => {
            let current = keyspace.live(db, &key);
            let mut value = current.map_or_else(Vec::new, |entry| entry.value.to_vec());
            let expires_at_ms = expiry_of(current);
            let byte = (offset / 8) as usize;
            let mask = 0x80u8 >> (offset % 8);
            if value.len() <= byte {
                value.resize(byte + 1, 0);
            }
            let old = value[byte] & mask != 0;
            if bit {
                value[byte] |= mask;
            } else {
                value[byte] &= !mask;
            }
            // As in Redis 7, setting a bit to what it is changes nothing: no
            // new revision for the key, so a WATCH of it still holds.
            if !is_unchanged(current, &value) {
                keyspace.put(db, &key, value.into(), expires_at_ms);
                keyspace.notify(EventClass::String, "setbit", db, &key);
            }
            Answer::Integer(i64::from(old))
        }
        RedisOp::BitOp {
            operation,
            destination,
            keys,
        } => {
            let sources: Vec<Bytes> = keys.iter().map(|key| value_of(keyspace, db, key)).collect();
            let result = bit_op(operation, &sources);
            let length = result.len() as i64;
            if result.is_empty() {
                if keyspace.remove(db, &destination) {
                    keyspace.notify(EventClass::Generic, "del", db, &destination);
                }
            } else {
                keyspace.put(db, &destination, result.into(), 0);
                keyspace.notify(EventClass::String, "set", db, &destination);
            }
            Answer::Integer(length)
        }
        RedisOp::Flush => {
            for db in 0..DATABASES {
                keyspace.clear(db);
                keyspace.notify(EventClass::Flush, "flushall", db, b"");
            }
            Answer::Ok
        }
        RedisOp::FlushDb => {
            keyspace.clear(db);
            keyspace.notify(EventClass::Flush, "flushdb", db, b"");
            Answer::Ok
        }
        RedisOp::Move { key, to_db } => {
            let Some(entry) = keyspace.live(db, &key).cloned() else {
                return Answer::Integer(0);
            };
            if to_db == db || keyspace.live(to_db, &key).is_some() {
                return Answer::Integer(0);
            }
            keyspace.put(to_db, &key, entry.value, entry.expires_at_ms);
            keyspace.remove(db, &key);
            keyspace.notify(EventClass::Generic, "move_from", db, &key);
            keyspace.notify(EventClass::Generic, "move_to", to_db, &key);
            Answer::Integer(1)
        }
        RedisOp::CopyToDb {
            from,
            to,
            to_db,
            replace,
        } => {
            let Some(entry) = keyspace.live(db, &from).cloned() else {
                return Answer::Integer(0);
            };
            if (to_db == db && from == to) || (keyspace.live(to_db, &to).is_some() && !replace) {
                return Answer::Integer(0);
            }
            keyspace.put(to_db, &to, entry.value, entry.expires_at_ms);
            keyspace.notify(EventClass::Generic, "copy_to", to_db, &to);
            Answer::Integer(1)
        }
        RedisOp::SwapDb { a, b } => {
            keyspace.swap(a, b);
            keyspace.notify(EventClass::Flush, "swapdb", a, b"");
            keyspace.notify(EventClass::Flush, "swapdb", b, b"");
            Answer::Ok
        }
        RedisOp::BitField { key, ops } => {
            let current = keyspace.live(db, &key);
            let Some(end) = ops.iter().filter_map(BitFieldOp::write_end_byte).max() else {
                // Only GETs: read in place, create nothing.
                let value = current.map_or(&[][..], |entry| &entry.value[..]);
                let answers = ops.iter().map(|op| op.get(value));
                return Answer::Array(answers.map(Answer::Integer).collect());
            };
            let expires_at_ms = expiry_of(current);
            let mut value = current.map_or_else(Vec::new, |entry| entry.value.to_vec());
            // As Redis does, a write grows the value to its farthest field
            // first, so the key exists even if every write then fails.
            value.resize(value.len().max(end as usize), 0);
            let answers = ops
                .iter()
                .map(|op| op.run(&mut value).map_or(Answer::Null, Answer::Integer))
                .collect();
            if !is_unchanged(current, &value) {
                keyspace.put(db, &key, value.into(), expires_at_ms);
                keyspace.notify(EventClass::String, "setbit", db, &key);
            }
            Answer::Array(answers)
        }
        RedisOp::Get { key } => bulk_or_null(keyspace.live(db, &key)),
        RedisOp::MGet { keys } => Answer::Array(
            keys.iter()
                .map(|key| bulk_or_null(keyspace.live(db, key)))
                .collect(),
        ),
        RedisOp::Strlen { key } => Answer::Integer(
            keyspace
                .live(db, &key)
                .map_or(0, |entry| entry.value.len() as i64),
        ),
        RedisOp::Exists { keys } => Answer::Integer(
            keys.iter()
                .filter(|key| keyspace.live(db, key).is_some())
                .count() as i64,
        ),
        RedisOp::Type { key } => Answer::Type {
            exists: keyspace.live(db, &key).is_some(),
        },
        RedisOp::Ttl { key, kind } => {
            Answer::Integer(time_to_live(keyspace.live(db, &key), kind, now_ms))
        }
        RedisOp::GetRange { key, start, end } => {
            Answer::Bulk(get_range(value_of(keyspace, db, &key), start, end))
        }
        RedisOp::GetBit { key, offset } => {
            let value = value_of(keyspace, db, &key);
            let bit = value
                .get((offset / 8) as usize)
                .is_some_and(|byte| byte & (0x80 >> (offset % 8)) != 0);
            Answer::Integer(i64::from(bit))
        }
        RedisOp::BitCount { key, range } => {
            Answer::Integer(bit_count(&value_of(keyspace, db, &key), range))
        }
        RedisOp::BitPos { key, bit, range } => {
            Answer::Integer(bit_position(&value_of(keyspace, db, &key), bit, range))
        }
        RedisOp::DbSize => Answer::Integer(keyspace.key_count(db) as i64),
        // The caller's apply loop switches the database for the ops after
        // it; the op itself only answers.
        RedisOp::Select { .. } => Answer::Ok,
    }
}

/// RESTORE: `value` under `key` unless it exists and `replace` is not
/// given; an expiry already past replaces the key with nothing, as in Redis.
fn restore(
    keyspace: &mut dyn Keyspace,
    db: u8,
    key: &[u8],
    value: Bytes,
    expires_at_ms: u64,
    replace: bool,
    now_ms: u64,
) -> Answer {
    if !replace && keyspace.live(db, key).is_some() {
        return Answer::BusyKey;
    }
    if expires_at_ms != 0 && expires_at_ms <= now_ms {
        if keyspace.remove(db, key) {
            keyspace.notify(EventClass::Generic, "del", db, key);
        }
        return Answer::Ok;
    }
    keyspace.put(db, key, value, expires_at_ms);
    keyspace.notify(EventClass::Generic, "restore", db, key);
    Answer::Ok
}

/// TTL, PTTL, EXPIRETIME, PEXPIRETIME: -2 for a missing key, -1 for one
/// without an expiry.
pub fn time_to_live(entry: Option<&Entry>, kind: TtlKind, now_ms: u64) -> i64 {
    let Some(entry) = entry else {
        return -2;
    };
    if entry.expires_at_ms == 0 {
        return -1;
    }
    let at = entry.expires_at_ms as i64;
    let remaining = (at - now_ms as i64).max(0);
    match kind {
        TtlKind::Seconds => (remaining + 500) / 1000,
        TtlKind::Milliseconds => remaining,
        // Rounded to the nearest second, as TTL is: Redis's `(ms + 500) / 1000`.
        TtlKind::ExpireTimeSeconds => (at + 500) / 1000,
        TtlKind::ExpireTimeMilliseconds => at,
    }
}

/// GETRANGE's index arithmetic, exactly as Redis 7 does it.
pub fn get_range(value: Bytes, mut start: i64, mut end: i64) -> Bytes {
    let length = value.len() as i64;
    if (start < 0 && end < 0 && start > end) || length == 0 {
        return Bytes::new();
    }
    if start < 0 {
        start += length;
    }
    if end < 0 {
        end += length;
        // An end before the first byte selects nothing (Redis 7.2 on).
        if end < 0 {
            return Bytes::new();
        }
    }
    start = start.max(0);
    end = end.min(length - 1);
    if start > end {
        return Bytes::new();
    }
    value.slice(start as usize..=end as usize)
}

fn bit_op(operation: BitOperation, sources: &[Bytes]) -> Vec<u8> {
    let length = sources.iter().map(Bytes::len).max().unwrap_or(0);
    let byte = |source: &Bytes, index: usize| source.get(index).copied().unwrap_or(0);
    (0..length)
        .map(|index| {
            let mut bytes = sources.iter().map(|source| byte(source, index));
            let first = bytes.next().unwrap_or(0);
            match operation {
                BitOperation::Not => !first,
                BitOperation::And => bytes.fold(first, |acc, b| acc & b),
                BitOperation::Or => bytes.fold(first, |acc, b| acc | b),
                BitOperation::Xor => bytes.fold(first, |acc, b| acc ^ b),
            }
        })
        .collect()
}

/// Whether `value` is what the key already holds (a key that did not exist
/// always changes: writing it creates it).
fn is_unchanged(current: Option<&Entry>, value: &[u8]) -> bool {
    current.is_some_and(|entry| entry.value[..] == *value)
}

/// Redis's index normalisation for BITCOUNT/BITPOS over `total` units (bytes
/// or bits): the inclusive range, or `None` when it selects nothing.
fn normalise(start: i64, end: i64, total: i64) -> Option<(i64, i64)> {
    let fix = |index: i64| {
        if index < 0 {
            (index + total).max(0)
        } else {
            index
        }
    };
    let (start, end) = (fix(start), fix(end).min(total - 1));
    (total > 0 && start <= end).then_some((start, end))
}

/// The inclusive bit range a [`BitRange`] selects in a value of `length` bytes.
fn bit_span(range: Option<BitRange>, length: usize) -> Option<(u64, u64)> {
    let length = length as i64;
    let Some(range) = range else {
        return (length > 0).then(|| (0, (length * 8 - 1) as u64));
    };
    if range.bits {
        let end = range.end.unwrap_or(-1);
        normalise(range.start, end, length * 8).map(|(s, e)| (s as u64, e as u64))
    } else {
        let end = range.end.unwrap_or(-1);
        normalise(range.start, end, length).map(|(s, e)| (s as u64 * 8, e as u64 * 8 + 7))
    }
}

fn bit_at(value: &[u8], index: u64) -> bool {
    value[(index / 8) as usize] & (0x80 >> (index % 8)) != 0
}

fn bit_count(value: &[u8], range: Option<BitRange>) -> i64 {
    // Both from the end, the start after the end: nothing (Redis 7's rule,
    // which the clamping below would otherwise turn into the first unit).
    if let Some(BitRange {
        start,
        end: Some(end),
        ..
    }) = range
        && start < 0
        && end < 0
        && start > end
    {
        return 0;
    }
    let Some((first, last)) = bit_span(range, value.len()) else {
        return 0;
    };
    let mut count = 0u64;
    let mut index = first;
    while index <= last {
        if index % 8 == 0 && index + 7 <= last {
            count += u64::from(value[(index / 8) as usize].count_ones());
            index += 8;
        } else {
            count += u64::from(bit_at(value, index));
            index += 1;
        }
    }
    count as i64
}

fn bit_position(value: &[u8], bit: bool, range: Option<BitRange>) -> i64 {
    if value.is_empty() {
        return if bit { -1 } else { 0 };
    }
    let Some((first, last)) = bit_span(range, value.len()) else {
        return -1;
    };
    let skip = if bit { 0x00 } else { 0xff };
    let mut index = first;
    while index <= last {
        if index % 8 == 0 && index + 7 <= last && value[(index / 8) as usize] == skip {
            index += 8;
            continue;
        }
        if bit_at(value, index) == bit {
            return index as i64;
        }
        index += 1;
    }
    // Looking for a clear bit with no end given: the bits past the value are
    // clear, so the answer is the first one after it (Redis's rule).
    let end_given = range.is_some_and(|range| range.end.is_some());
    if !bit && !end_given {
        return value.len() as i64 * 8;
    }
    -1
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A plain map keyspace: what every op must do, without the state's
    /// revisions and snapshots.
    #[derive(Default)]
    struct MapKeyspace(BTreeMap<(u8, Bytes), Entry>);

    impl Keyspace for MapKeyspace {
        fn live(&self, db: u8, key: &[u8]) -> Option<&Entry> {
            let key = (db, Bytes::copy_from_slice(key));
            self.0.get(&key).filter(|entry| entry.is_live(100))
        }
        fn put(&mut self, db: u8, key: &[u8], value: Bytes, expires_at_ms: u64) {
            let entry = Entry {
                value,
                mod_revision: 1,
                expires_at_ms,
                accessed: Default::default(),
            };
            self.0.insert((db, Bytes::copy_from_slice(key)), entry);
        }
        fn remove(&mut self, db: u8, key: &[u8]) -> bool {
            let key = (db, Bytes::copy_from_slice(key));
            self.0.remove(&key).is_some_and(|entry| entry.is_live(100))
        }
        fn clear(&mut self, db: u8) {
            self.0.retain(|(in_db, _), _| *in_db != db);
        }
        fn key_count(&self, db: u8) -> usize {
            self.0.keys().filter(|(in_db, _)| *in_db == db).count()
        }
        fn swap(&mut self, a: u8, b: u8) {
            let swap = |db: u8| match db {
                db if db == a => b,
                db if db == b => a,
                db => db,
            };
            let entries = std::mem::take(&mut self.0);
            self.0 = entries
                .into_iter()
                .map(|((db, key), entry)| ((swap(db), key), entry))
                .collect();
        }
    }

    fn key(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    fn run_at(keyspace: &mut MapKeyspace, op: RedisOp) -> Answer {
        run(keyspace, 0, op, 100)
    }

    #[test]
    fn counters_keep_the_ttl_and_refuse_what_is_not_a_number() {
        let mut keyspace = MapKeyspace::default();
        keyspace.put(0, b"n", key("41"), 500);
        let op = RedisOp::IncrBy {
            key: key("n"),
            delta: 1,
        };
        assert_eq!(run_at(&mut keyspace, op.clone()), Answer::Integer(42));
        assert_eq!(keyspace.live(0, b"n").unwrap().expires_at_ms, 500);
        keyspace.put(0, b"n", key("x"), 0);
        assert_eq!(
            run_at(&mut keyspace, op),
            Answer::Error(NOT_AN_INTEGER.into())
        );
        keyspace.put(0, b"n", Bytes::from(i64::MAX.to_string()), 0);
        let overflow = RedisOp::IncrBy {
            key: key("n"),
            delta: 1,
        };
        assert!(matches!(run_at(&mut keyspace, overflow), Answer::Error(_)));
        let float = RedisOp::IncrByFloat {
            key: key("f"),
            delta: 10.5,
        };
        assert_eq!(run_at(&mut keyspace, float), Answer::Bulk(key("10.5")));
        // Redis's 80-bit arithmetic and `%.17Lf`: 0.1 + 0.2 is 0.3 there,
        // where f64 gives 0.30000000000000004.
        let add = |text: &str| RedisOp::IncrByLongDouble {
            key: key("g"),
            delta: long_double::parse(text.as_bytes()).unwrap().to_bytes(),
        };
        assert_eq!(run_at(&mut keyspace, add("0.1")), Answer::Bulk(key("0.1")));
        assert_eq!(run_at(&mut keyspace, add("0.2")), Answer::Bulk(key("0.3")));
        assert_eq!(
            run_at(&mut keyspace, add("1e17")),
            Answer::Bulk(key("100000000000000000.296875"))
        );
        assert_eq!(
            run_at(&mut keyspace, add("inf")),
            Answer::Error("increment would produce NaN or Infinity".into())
        );
        keyspace.put(0, b"g", key("abc"), 0);
        assert_eq!(
            run_at(&mut keyspace, add("1")),
            Answer::Error("value is not a valid float".into())
        );
    }

    #[test]
    fn expired_keys_are_absent_to_every_op() {
        let mut keyspace = MapKeyspace::default();
        keyspace.put(0, b"old", key("v"), 50);
        let set_nx = RedisOp::Set {
            key: key("old"),
            value: key("new"),
            expiry: SetExpiry::Keep,
            condition: Guard::Absent,
            get: true,
        };
        assert_eq!(run_at(&mut keyspace, set_nx), Answer::Null);
        assert_eq!(keyspace.live(0, b"old").unwrap().expires_at_ms, 0);
        let rename = RedisOp::Rename {
            from: key("gone"),
            to: key("x"),
            only_if_absent: false,
        };
        assert_eq!(
            run_at(&mut keyspace, rename),
            Answer::Error("no such key".into())
        );
    }

    #[test]
    fn bit_commands_match_redis() {
        let mut keyspace = MapKeyspace::default();
        let set = |offset| RedisOp::SetBit {
            key: key("b"),
            offset,
            bit: true,
        };
        assert_eq!(run_at(&mut keyspace, set(7)), Answer::Integer(0));
        assert_eq!(run_at(&mut keyspace, set(7)), Answer::Integer(1));
        run_at(&mut keyspace, set(17));
        assert_eq!(
            keyspace.live(0, b"b").unwrap().value,
            &[0x01, 0x00, 0x40][..]
        );
        let count = |range| RedisOp::BitCount {
            key: key("b"),
            range,
        };
        assert_eq!(run_at(&mut keyspace, count(None)), Answer::Integer(2));
        let bytes = BitRange {
            start: 1,
            end: Some(-1),
            bits: false,
        };
        assert_eq!(
            run_at(&mut keyspace, count(Some(bytes))),
            Answer::Integer(1)
        );
        let bits = BitRange {
            start: 0,
            end: Some(7),
            bits: true,
        };
        assert_eq!(run_at(&mut keyspace, count(Some(bits))), Answer::Integer(1));
        let position = |bit, range| RedisOp::BitPos {
            key: key("b"),
            bit,
            range,
        };
        assert_eq!(
            run_at(&mut keyspace, position(true, None)),
            Answer::Integer(7)
        );
        assert_eq!(
            run_at(&mut keyspace, position(false, None)),
            Answer::Integer(0)
        );
        keyspace.put(0, b"ones", Bytes::from_static(&[0xff, 0xff]), 0);
        let all_ones = RedisOp::BitPos {
            key: key("ones"),
            bit: false,
            range: None,
        };
        assert_eq!(run_at(&mut keyspace, all_ones), Answer::Integer(16));
        let op = RedisOp::BitOp {
            operation: BitOperation::And,
            destination: key("d"),
            keys: vec![key("b"), key("ones")],
        };
        assert_eq!(run_at(&mut keyspace, op), Answer::Integer(3));
        assert_eq!(
            keyspace.live(0, b"d").unwrap().value,
            &[0x01, 0x00, 0x00][..]
        );
    }

    #[test]
    fn getrange_follows_redis_7() {
        let value = key("hello");
        assert_eq!(get_range(value.clone(), 0, -100), "");
        assert_eq!(get_range(value.clone(), -3, -1), "llo");
        assert_eq!(get_range(value.clone(), 1, 100), "ello");
        assert_eq!(get_range(value, -1, -3), "");
    }
}
