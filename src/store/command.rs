//! Commands: the deterministic state changes the log records.
//!
//! A command is applied to [`super::State`] in log order, on one node today and on
//! every Raft replica later, so applying must depend only on the state and the
//! command. That is why a command carries the time it was issued
//! (`issued_at_ms`): guards on keys that may have expired are judged at that time,
//! not at whatever time a replica happens to replay it.
//!
//! Payload layout (inside a WAL record):
//!
//! ```text
//! issued_at_ms u64 | tag u8 | fields
//! tag 1 Put:    key bytes | value bytes | expires_at_ms u64 | guard
//! tag 2 Delete: key bytes | guard
//! tag 3 Txn:    guard_count u32 | (key bytes | guard)* | op_count u32 | op*
//!     op:       1 | key bytes | value bytes | expires_at_ms u64   (put)
//!               2 | key bytes                                      (delete)
//! tag 4 Redis:  postcard(RedisCommand)   (format 2: Redis commands as state-machine ops)
//! guard:        0 none | 1 absent | 2 present | 3 mod_revision u64
//! bytes:        len u32 | raw
//! ```
//!
//! Tags 1–3 are the first format; a log written before tag 4 existed reads
//! unchanged. A binary that predates tag 4 refuses such a record by name
//! ("unknown command tag") rather than misreading it.

use bytes::Bytes;

pub use super::entry::Guard;
use super::redis_op::RedisCommand;
use crate::encoding::{DecodeError, Reader, put_bytes, put_u8, put_u32, put_u64};

/// Upper bound for a key or value inside a command; callers (HTTP, RESP) enforce
/// much smaller limits, this one only keeps a corrupt length from allocating.
pub const MAX_COMMAND_FIELD_BYTES: usize = 32 << 20;

/// One write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: Bytes,
        value: Bytes,
        expires_at_ms: u64,
    },
    Delete {
        key: Bytes,
    },
}

/// The newest command format this build reads and writes. A command added to
/// the log after walrus's first cluster release raises it, and says so in
/// [`Command::format`]: a member that cannot decode a log entry cannot apply
/// it and stops, so a cluster proposes a command only once every member reads
/// its format (`raft/formats.rs`). Formats:
/// 1. every command up to `RESTORE … IDLETIME`;
/// 2. `RESTORE … IDLETIME` ([`super::redis_op::RedisOp::RestoreIdle`]);
/// 3. a command that carries the client it came from ([`Origin`],
///    [`ORIGIN_FORMAT`]).
pub const COMMAND_FORMAT: u32 = 3;

/// The format in which a payload carries its [`Origin`]. A cluster writes it
/// only once every member reads it, and otherwise leaves the origin out
/// (then the writer is told of its own write: a refetch, never a stale cache).
pub const ORIGIN_FORMAT: u32 = 3;

/// Which client a write came from, as a cluster's log carries it for
/// `CLIENT TRACKING … NOLOOP` (`store/origin.rs`): a connection id is only
/// meaningful within the run of the node that gave it, so the origin names
/// that run (a random number drawn when the node starts), not the node.
/// Each node applies an entry with its client as the origin only if the run
/// is its own; an entry from before a restart, or from another node, has no
/// origin there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub node_run: u64,
    pub client: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Sets `key`; `expires_at_ms` is a Unix time in milliseconds, 0 for never.
    Put {
        key: Bytes,
        value: Bytes,
        expires_at_ms: u64,
        guard: Guard,
    },
    Delete {
        key: Bytes,
        guard: Guard,
    },
    /// All ops apply, at one revision, if every guard holds; otherwise none do.
    Txn {
        guards: Vec<(Bytes, Guard)>,
        ops: Vec<Op>,
    },
    /// Redis commands the state machine runs (read-modify-write, MULTI/EXEC).
    Redis(RedisCommand),
}

impl Command {
    pub fn put(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Command {
        Command::Put {
            key: key.into(),
            value: value.into(),
            expires_at_ms: 0,
            guard: Guard::None,
        }
    }

    pub fn delete(key: impl Into<Bytes>) -> Command {
        Command::Delete {
            key: key.into(),
            guard: Guard::None,
        }
    }

    /// Whether the command only removes data (deletes, flushes): such a
    /// command may use the log space kept back for freeing a full disk.
    pub fn frees_space(&self) -> bool {
        use super::redis_op::RedisOp;
        match self {
            Command::Delete { .. } => true,
            Command::Put { .. } => false,
            Command::Txn { ops, .. } => ops.iter().all(|op| matches!(op, Op::Delete { .. })),
            Command::Redis(redis) => redis.ops.iter().all(|op| {
                matches!(
                    op,
                    RedisOp::Del { .. }
                        | RedisOp::GetDel { .. }
                        | RedisOp::Flush
                        | RedisOp::FlushDb
                        // Changes only which database the deletes after it name.
                        | RedisOp::Select { .. }
                )
            }),
        }
    }

    /// The oldest [`COMMAND_FORMAT`] that decodes this command: what every
    /// member of a cluster must read before it is proposed there.
    pub fn format(&self) -> u32 {
        match self {
            Command::Put { .. } | Command::Delete { .. } | Command::Txn { .. } => 1,
            Command::Redis(redis) => redis.ops.iter().map(|op| op.format()).max().unwrap_or(1),
        }
    }

    /// Bytes of keys and values carried, to check against record limits.
    pub fn data_bytes(&self) -> usize {
        let op_bytes = |op: &Op| match op {
            Op::Put { key, value, .. } => key.len() + value.len(),
            Op::Delete { key } => key.len(),
        };
        match self {
            Command::Put { key, value, .. } => key.len() + value.len(),
            Command::Delete { key, .. } => key.len(),
            Command::Txn { guards, ops } => {
                guards.iter().map(|(key, _)| key.len()).sum::<usize>()
                    + ops.iter().map(op_bytes).sum::<usize>()
            }
            Command::Redis(redis) => {
                redis.guards.iter().map(|(key, _)| key.len()).sum::<usize>()
                    + redis.ops.iter().map(|op| op.data_bytes()).sum::<usize>()
            }
        }
    }
}

const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_TXN: u8 = 3;
const TAG_REDIS: u8 = 4;
/// Before a command's own tag: its [`Origin`] (format 3).
const TAG_FROM: u8 = 5;

fn encode_guard(buf: &mut Vec<u8>, guard: Guard) {
    match guard {
        Guard::None => put_u8(buf, 0),
        Guard::Absent => put_u8(buf, 1),
        Guard::Present => put_u8(buf, 2),
        Guard::ModRevision(revision) => {
            put_u8(buf, 3);
            put_u64(buf, revision);
        }
        Guard::AbsentSince(revision) => {
            put_u8(buf, 4);
            put_u64(buf, revision);
        }
    }
}

fn decode_guard(reader: &mut Reader<'_>) -> Result<Guard, DecodeError> {
    match reader.u8()? {
        0 => Ok(Guard::None),
        1 => Ok(Guard::Absent),
        2 => Ok(Guard::Present),
        3 => Ok(Guard::ModRevision(reader.u64()?)),
        4 => Ok(Guard::AbsentSince(reader.u64()?)),
        _ => Err(reader.invalid("unknown guard kind")),
    }
}

/// Encodes a command with the time it was issued into a log payload.
pub fn encode_payload(buf: &mut Vec<u8>, issued_at_ms: u64, command: &Command) {
    encode_payload_from(buf, issued_at_ms, None, command);
}

/// [`encode_payload`], with the client the command came from, if given
/// (format [`ORIGIN_FORMAT`]).
pub fn encode_payload_from(
    buf: &mut Vec<u8>,
    issued_at_ms: u64,
    from: Option<Origin>,
    command: &Command,
) {
    put_u64(buf, issued_at_ms);
    if let Some(origin) = from {
        put_u8(buf, TAG_FROM);
        put_u64(buf, origin.node_run);
        put_u64(buf, origin.client);
    }
    match command {
        Command::Put {
            key,
            value,
            expires_at_ms,
            guard,
        } => {
            put_u8(buf, TAG_PUT);
            put_bytes(buf, key);
            put_bytes(buf, value);
            put_u64(buf, *expires_at_ms);
            encode_guard(buf, *guard);
        }
        Command::Delete { key, guard } => {
            put_u8(buf, TAG_DELETE);
            put_bytes(buf, key);
            encode_guard(buf, *guard);
        }
        Command::Txn { guards, ops } => {
            put_u8(buf, TAG_TXN);
            put_u32(buf, guards.len() as u32);
            for (key, guard) in guards {
                put_bytes(buf, key);
                encode_guard(buf, *guard);
            }
            put_u32(buf, ops.len() as u32);
            for op in ops {
                match op {
                    Op::Put {
                        key,
                        value,
                        expires_at_ms,
                    } => {
                        put_u8(buf, TAG_PUT);
                        put_bytes(buf, key);
                        put_bytes(buf, value);
                        put_u64(buf, *expires_at_ms);
                    }
                    Op::Delete { key } => {
                        put_u8(buf, TAG_DELETE);
                        put_bytes(buf, key);
                    }
                }
            }
        }
        Command::Redis(redis) => {
            put_u8(buf, TAG_REDIS);
            // Serialising plain data into a Vec cannot fail.
            if let Ok(encoded) = postcard::to_extend(redis, std::mem::take(buf)) {
                *buf = encoded;
            }
        }
    }
}

/// Decodes a log payload into its issue time and command. Trailing bytes are an
/// error: a payload is exactly one command.
pub fn decode_payload(payload: &[u8]) -> Result<(u64, Command), DecodeError> {
    decode_payload_from(payload).map(|(issued_at_ms, _, command)| (issued_at_ms, command))
}

/// [`decode_payload`], with the client the command came from if the
/// payload names it.
pub fn decode_payload_from(payload: &[u8]) -> Result<(u64, Option<Origin>, Command), DecodeError> {
    let mut reader = Reader::new(payload);
    let issued_at_ms = reader.u64()?;
    let limit = MAX_COMMAND_FIELD_BYTES;
    let mut tag = reader.u8()?;
    let mut from = None;
    if tag == TAG_FROM {
        from = Some(Origin {
            node_run: reader.u64()?,
            client: reader.u64()?,
        });
        tag = reader.u8()?;
    }
    let command = match tag {
        TAG_PUT => Command::Put {
            key: reader.owned_bytes(limit)?,
            value: reader.owned_bytes(limit)?,
            expires_at_ms: reader.u64()?,
            guard: decode_guard(&mut reader)?,
        },
        TAG_DELETE => Command::Delete {
            key: reader.owned_bytes(limit)?,
            guard: decode_guard(&mut reader)?,
        },
        TAG_TXN => {
            let guard_count = reader.u32()? as usize;
            // Each guard takes at least 5 bytes, each op at least 5: this bounds
            // the allocations by the payload size.
            if guard_count > reader.remaining() / 5 {
                return Err(reader.invalid("guard count exceeds payload"));
            }
            let mut guards = Vec::with_capacity(guard_count);
            for _ in 0..guard_count {
                let key = reader.owned_bytes(limit)?;
                guards.push((key, decode_guard(&mut reader)?));
            }
            let op_count = reader.u32()? as usize;
            if op_count > reader.remaining() / 5 {
                return Err(reader.invalid("op count exceeds payload"));
            }
            let mut ops = Vec::with_capacity(op_count);
            for _ in 0..op_count {
                ops.push(match reader.u8()? {
                    TAG_PUT => Op::Put {
                        key: reader.owned_bytes(limit)?,
                        value: reader.owned_bytes(limit)?,
                        expires_at_ms: reader.u64()?,
                    },
                    TAG_DELETE => Op::Delete {
                        key: reader.owned_bytes(limit)?,
                    },
                    _ => return Err(reader.invalid("unknown op")),
                });
            }
            Command::Txn { guards, ops }
        }
        TAG_REDIS => {
            let rest = reader.take(reader.remaining())?;
            match postcard::take_from_bytes::<RedisCommand>(rest) {
                // postcard also reads some encodings it never writes (a
                // varint with redundant bytes); a log record has exactly one
                // form, so the bytes must be what encoding gives back.
                Ok((redis, []))
                    if postcard::to_stdvec(&redis).is_ok_and(|canonical| canonical == rest) =>
                {
                    Command::Redis(redis)
                }
                Ok((_, [])) => return Err(reader.invalid("non-canonical Redis command")),
                Ok(_) => return Err(reader.invalid("trailing bytes after command")),
                Err(_) => return Err(reader.invalid("undecodable Redis command")),
            }
        }
        _ => return Err(reader.invalid("unknown command tag")),
    };
    if !reader.is_empty() {
        return Err(reader.invalid("trailing bytes after command"));
    }
    Ok((issued_at_ms, from, command))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(command: Command) {
        let mut buf = Vec::new();
        encode_payload(&mut buf, 1234, &command);
        assert_eq!(decode_payload(&buf).unwrap(), (1234, command));
        for cut in 0..buf.len() {
            assert!(decode_payload(&buf[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_payload_carries_its_origin_only_when_given() {
        let command = Command::put(&b"k"[..], &b"v"[..]);
        let origin = Origin {
            node_run: 0xfeed,
            client: 7,
        };
        let mut with = Vec::new();
        encode_payload_from(&mut with, 99, Some(origin), &command);
        assert_eq!(
            decode_payload_from(&with).unwrap(),
            (99, Some(origin), command.clone())
        );
        assert_eq!(decode_payload(&with).unwrap(), (99, command.clone()));
        for cut in 0..with.len() {
            assert!(decode_payload_from(&with[..cut]).is_err(), "cut at {cut}");
        }
        let mut without = Vec::new();
        encode_payload(&mut without, 99, &command);
        assert_eq!(with.len(), without.len() + 17);
        assert_eq!(
            decode_payload_from(&without).unwrap(),
            (99, None, command.clone())
        );
        // One origin per command: a second is no command's tag.
        let mut twice = with[..8].to_vec();
        twice.extend_from_slice(&with[8..25]);
        twice.extend_from_slice(&with[8..]);
        assert!(decode_payload_from(&twice).is_err());
    }

    #[test]
    fn every_command_round_trips() {
        round_trip(Command::put(&b"k"[..], &b"v"[..]));
        round_trip(Command::Put {
            key: Bytes::from_static(b"key"),
            value: Bytes::new(),
            expires_at_ms: 99,
            guard: Guard::ModRevision(7),
        });
        round_trip(Command::Delete {
            key: Bytes::from_static(b"\0\xff"),
            guard: Guard::Present,
        });
        round_trip(Command::Txn {
            guards: vec![(Bytes::from_static(b"a"), Guard::Absent)],
            ops: vec![
                Op::Put {
                    key: Bytes::from_static(b"a"),
                    value: Bytes::from_static(b"1"),
                    expires_at_ms: 0,
                },
                Op::Delete {
                    key: Bytes::from_static(b"b"),
                },
            ],
        });
    }

    /// Found by the `command` fuzz target: a varint with a redundant byte
    /// decoded, and re-encoded shorter. Every decoded payload has one form.
    #[test]
    fn a_non_canonical_redis_command_is_refused() {
        let payload = [
            0x5d, 0xe6, 0, 0, 0xfe, 1, 0, 2, 4, 0x7c, 2, 4, 0x7c, 2, 0x0b, 0x83, 0x83, 0, 0, 0, 0,
            0,
        ];
        if let Ok((issued_at_ms, command)) = decode_payload(&payload) {
            let mut again = Vec::new();
            encode_payload(&mut again, issued_at_ms, &command);
            assert_eq!(again, payload);
        }
    }

    #[test]
    fn redis_commands_round_trip() {
        use crate::store::redis_op::{RedisOp, SetExpiry};
        let command = Command::Redis(RedisCommand {
            db: 0,
            guards: vec![
                (Bytes::from_static(b"w"), Guard::ModRevision(9)),
                (Bytes::from_static(b"z"), Guard::AbsentSince(11)),
            ],
            ops: vec![
                RedisOp::IncrBy {
                    key: Bytes::from_static(b"n"),
                    delta: -3,
                },
                RedisOp::Set {
                    key: Bytes::from_static(b"k"),
                    value: Bytes::from_static(b"v"),
                    expiry: SetExpiry::Keep,
                    condition: Guard::Present,
                    get: true,
                },
            ],
        });
        let mut buf = Vec::new();
        encode_payload(&mut buf, 77, &command);
        assert_eq!(decode_payload(&buf).unwrap(), (77, command));
        // A cut record never decodes as a shorter command.
        for cut in 9..buf.len() {
            assert!(decode_payload(&buf[..cut]).is_err(), "cut at {cut}");
        }
    }
}
