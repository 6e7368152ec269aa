//! Commands the state machine runs: a request's arguments parsed into a
//! [`RedisOp`] (see `store::redis_op`).
//!
//! Parsing checks everything that does not depend on the keyspace (numbers,
//! options, limits), so a bad request is refused here without a log record;
//! what depends on the keyspace (a value that is not an integer, a missing
//! key for RENAME) is the op's answer. Times given relative to now become
//! absolute here, so every replica applies the same expiry.

use bytes::Bytes;

use super::super::frame::Reply;
use super::util::{TimeArg, integer_arg, is, syntax_error};
use super::wrong_arity;
use crate::storage::snapshot::DATABASES;
use crate::store::Guard;
use crate::store::bitfield::{BitFieldOp, FieldType, Overflow};
use crate::store::dump_payload;
use crate::store::long_double;
use crate::store::redis_op::{
    BitOperation, BitRange, ExpireFlags, GetExAction, RedisOp, SetExpiry, TOO_BIG, TtlKind,
};

/// The limits parsing checks against.
#[derive(Debug, Clone, Copy)]
pub struct OpLimits {
    /// Longest value a command may build (`--max-value-bytes`).
    pub max_value_bytes: u64,
}

/// The op for a command the state machine runs, `None` for one it does not
/// (connection and server commands, KEYS, SCAN, RANDOMKEY, LCS), or the
/// reply refusing bad arguments.
pub fn parse(
    name: &str,
    args: &[Bytes],
    db: u8,
    limits: OpLimits,
) -> Option<Result<RedisOp, Reply>> {
    let key = || args[1].clone();
    let keys = || args[1..].to_vec();
    let max_len = limits.max_value_bytes;
    Some(Ok(match name {
        "get" => RedisOp::Get { key: key() },
        "mget" => RedisOp::MGet { keys: keys() },
        "strlen" => RedisOp::Strlen { key: key() },
        "exists" | "touch" => RedisOp::Exists { keys: keys() },
        "type" => RedisOp::Type { key: key() },
        "ttl" | "pttl" | "expiretime" | "pexpiretime" => RedisOp::Ttl {
            key: key(),
            kind: match name {
                "ttl" => TtlKind::Seconds,
                "pttl" => TtlKind::Milliseconds,
                "expiretime" => TtlKind::ExpireTimeSeconds,
                _ => TtlKind::ExpireTimeMilliseconds,
            },
        },
        "getrange" | "substr" => return Some(get_range(args)),
        "dbsize" => RedisOp::DbSize,
        "set" => return Some(set(args)),
        // SETNX answers 1 or 0, as MSETNX does for one key.
        "setnx" => RedisOp::MSet {
            pairs: vec![(key(), args[2].clone())],
            only_if_none_exist: true,
        },
        "getset" => RedisOp::Set {
            key: key(),
            value: args[2].clone(),
            expiry: SetExpiry::Clear,
            condition: Guard::None,
            get: true,
        },
        "setex" | "psetex" => return Some(set_ex(name, args)),
        "mset" | "msetnx" => return Some(mset(name, args)),
        "del" | "unlink" => RedisOp::Del { keys: keys() },
        "getdel" => RedisOp::GetDel { key: key() },
        "getex" => return Some(get_ex(args)),
        "incr" | "decr" => RedisOp::IncrBy {
            key: key(),
            delta: if name == "incr" { 1 } else { -1 },
        },
        "incrby" | "decrby" => return Some(increment_by(name, args)),
        // Redis reads an infinite increment as a number, whose sum then
        // cannot be stored: the op answers that.
        "incrbyfloat" => match long_double::parse(&args[2]) {
            Some(delta) => RedisOp::IncrByLongDouble {
                key: key(),
                delta: delta.to_bytes(),
            },
            None => return Some(Err(Reply::err("value is not a valid float"))),
        },
        "append" => RedisOp::Append {
            key: key(),
            value: args[2].clone(),
            max_len,
        },
        "setrange" => return Some(set_range(args, max_len)),
        "expire" | "pexpire" | "expireat" | "pexpireat" => return Some(expire(name, args)),
        "persist" => RedisOp::Persist { key: key() },
        "rename" | "renamenx" => RedisOp::Rename {
            from: key(),
            to: args[2].clone(),
            only_if_absent: name == "renamenx",
        },
        "copy" => return Some(copy(args, db)),
        "dump" => RedisOp::Dump { key: key() },
        "restore" => return Some(restore(args, max_len)),
        "move" => return Some(move_to(args, db)),
        "swapdb" => return Some(swap_db(args)),
        "setbit" => return Some(set_bit(args, max_len)),
        "getbit" => match bit_offset(&args[2], max_len) {
            Ok(offset) => RedisOp::GetBit { key: key(), offset },
            Err(reply) => return Some(Err(reply)),
        },
        "bitcount" => return Some(bit_count(args)),
        "bitpos" => return Some(bit_pos(args)),
        "bitop" => return Some(bit_op(args)),
        "bitfield" | "bitfield_ro" => return Some(bit_field(args, max_len, name == "bitfield_ro")),
        "flushdb" | "flushall" => return Some(flush(name, args)),
        _ => return None,
    }))
}

fn get_range(args: &[Bytes]) -> Result<RedisOp, Reply> {
    Ok(RedisOp::GetRange {
        key: args[1].clone(),
        start: integer_arg(&args[2])?,
        end: integer_arg(&args[3])?,
    })
}

fn set(args: &[Bytes]) -> Result<RedisOp, Reply> {
    let options = string_options(&args[3..], StringCommand::Set)?;
    let expiry = match options.time {
        Some((time, value)) => SetExpiry::At(time.deadline_ms(value, "set")?),
        None if options.keep_ttl => SetExpiry::Keep,
        None => SetExpiry::Clear,
    };
    Ok(RedisOp::Set {
        key: args[1].clone(),
        value: args[2].clone(),
        expiry,
        condition: options.condition,
        get: options.get,
    })
}

/// Which command's options [`string_options`] reads.
#[derive(Clone, Copy, PartialEq)]
enum StringCommand {
    Set,
    GetEx,
}

/// SET's and GETEX's options, read as Redis's
/// `parseExtendedStringArgumentsOrReply` reads them.
#[derive(Default)]
struct StringOptions<'a> {
    condition: Guard,
    get: bool,
    keep_ttl: bool,
    persist: bool,
    /// The expiry option given last, with its unread number.
    time: Option<(TimeArg, &'a Bytes)>,
}

/// Reads SET's or GETEX's options as Redis does: an option may be repeated
/// (the last time given wins), two that contradict each other (NX and XX,
/// KEEPTTL or PERSIST and a time, two kinds of time) are a syntax error,
/// and the time's number is read only once the whole syntax is known good,
/// so `SET k v EX abc FOO` is a syntax error, not a bad integer.
fn string_options(words: &[Bytes], command: StringCommand) -> Result<StringOptions<'_>, Reply> {
    let set = command == StringCommand::Set;
    let mut options = StringOptions::default();
    let mut index = 0;
    while index < words.len() {
        let word = &words[index];
        let timed = options.time.is_some();
        if set && is(word, "nx") && options.condition != Guard::Present {
            options.condition = Guard::Absent;
        } else if set && is(word, "xx") && options.condition != Guard::Absent {
            options.condition = Guard::Present;
        } else if set && is(word, "get") {
            options.get = true;
        } else if set && is(word, "keepttl") && !timed {
            options.keep_ttl = true;
        } else if !set && is(word, "persist") && !timed {
            options.persist = true;
        } else if let (Some(time), Some(value)) = (TimeArg::from_option(word), words.get(index + 1))
        {
            let other_kind = options.time.is_some_and(|(given, _)| given != time);
            if options.keep_ttl || options.persist || other_kind {
                return Err(syntax_error());
            }
            options.time = Some((time, value));
            index += 1;
        } else {
            return Err(syntax_error());
        }
        index += 1;
    }
    Ok(options)
}

fn set_ex(name: &str, args: &[Bytes]) -> Result<RedisOp, Reply> {
    let time = TimeArg {
        unit_ms: if name == "setex" { 1000 } else { 1 },
        absolute: false,
    };
    Ok(RedisOp::Set {
        key: args[1].clone(),
        value: args[3].clone(),
        expiry: SetExpiry::At(time.deadline_ms(&args[2], name)?),
        condition: Guard::None,
        get: false,
    })
}

fn mset(name: &str, args: &[Bytes]) -> Result<RedisOp, Reply> {
    if args.len().is_multiple_of(2) {
        return Err(wrong_arity(name));
    }
    let pairs = args[1..]
        .chunks_exact(2)
        .map(|pair| (pair[0].clone(), pair[1].clone()))
        .collect();
    Ok(RedisOp::MSet {
        pairs,
        only_if_none_exist: name == "msetnx",
    })
}

fn get_ex(args: &[Bytes]) -> Result<RedisOp, Reply> {
    let options = string_options(&args[2..], StringCommand::GetEx)?;
    let action = match options.time {
        Some((time, value)) => GetExAction::At(time.deadline_ms(value, "getex")?),
        None if options.persist => GetExAction::Persist,
        None => GetExAction::Keep,
    };
    Ok(RedisOp::GetEx {
        key: args[1].clone(),
        action,
    })
}

fn increment_by(name: &str, args: &[Bytes]) -> Result<RedisOp, Reply> {
    let delta = integer_arg(&args[2])?;
    let delta = if name == "decrby" {
        delta
            .checked_neg()
            .ok_or_else(|| Reply::err("decrement would overflow"))?
    } else {
        delta
    };
    Ok(RedisOp::IncrBy {
        key: args[1].clone(),
        delta,
    })
}

fn set_range(args: &[Bytes], max_len: u64) -> Result<RedisOp, Reply> {
    let offset = integer_arg(&args[2])?;
    if offset < 0 {
        return Err(Reply::err("offset is out of range"));
    }
    Ok(RedisOp::SetRange {
        key: args[1].clone(),
        offset: offset as u64,
        value: args[3].clone(),
        max_len,
    })
}

fn parse_expire_flags(words: &[Bytes]) -> Result<ExpireFlags, Reply> {
    let mut flags = ExpireFlags::default();
    for word in words {
        match word.to_ascii_lowercase().as_slice() {
            b"nx" => flags.nx = true,
            b"xx" => flags.xx = true,
            b"gt" => flags.gt = true,
            b"lt" => flags.lt = true,
            _ => {
                return Err(Reply::err(format!(
                    "Unsupported option {}",
                    String::from_utf8_lossy(word)
                )));
            }
        }
    }
    if flags.nx && (flags.xx || flags.gt || flags.lt) {
        return Err(Reply::err(
            "NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if flags.gt && flags.lt {
        return Err(Reply::err(
            "GT and LT options at the same time are not compatible",
        ));
    }
    Ok(flags)
}

fn expire(name: &str, args: &[Bytes]) -> Result<RedisOp, Reply> {
    // Redis reads the flags before the time: `EXPIRE k abc FOO` is about FOO.
    let flags = parse_expire_flags(&args[3..])?;
    let value = integer_arg(&args[2])?;
    let unit_ms: i64 = if name.starts_with('p') { 1 } else { 1000 };
    let base: i64 = if name.ends_with("at") {
        0
    } else {
        crate::store::now_ms() as i64
    };
    // As Redis: the time in milliseconds, and then the absolute time, must
    // each fit in 64 bits.
    let at_ms = value
        .checked_mul(unit_ms)
        .and_then(|ms| ms.checked_add(base))
        .ok_or_else(|| Reply::err(format!("invalid expire time in '{name}' command")))?;
    Ok(RedisOp::Expire {
        key: args[1].clone(),
        at_ms,
        flags,
    })
}

/// `RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME s] [FREQ f]`, its
/// payload decoded here so the log holds the value itself.
fn restore(args: &[Bytes], max_len: u64) -> Result<RedisOp, Reply> {
    let options = restore_options(args)?;
    let ttl = integer_arg(&args[2])?;
    if ttl < 0 {
        return Err(Reply::err("Invalid TTL value, must be >= 0"));
    }
    let expires_at_ms = match (ttl, options.absolute) {
        (0, _) => 0,
        (at, true) => at as u64,
        (ttl, false) => (ttl as u64)
            .checked_add(crate::store::now_ms())
            .filter(|&at| at <= i64::MAX as u64)
            .ok_or_else(|| Reply::err("invalid expire time in 'restore' command"))?,
    };
    let value = dump_payload::decode(&args[3], max_len).map_err(Reply::err)?;
    let (key, value, replace) = (args[1].clone(), value.into(), options.replace);
    Ok(match options.idle_seconds {
        None => RedisOp::Restore {
            key,
            value,
            expires_at_ms,
            replace,
        },
        Some(idle_seconds) => RedisOp::RestoreIdle {
            key,
            value,
            expires_at_ms,
            replace,
            idle_seconds,
        },
    })
}

/// RESTORE's options after its payload.
pub struct RestoreOptions {
    pub replace: bool,
    absolute: bool,
    /// IDLETIME: the key counts as last accessed this long ago.
    idle_seconds: Option<u64>,
}

/// RESTORE's options, checked as Redis checks them, before anything else.
/// FREQ is checked and then has no effect, as in Redis without an LFU
/// eviction policy (walrus has none: `OBJECT FREQ` says so).
pub fn restore_options(args: &[Bytes]) -> Result<RestoreOptions, Reply> {
    let mut options = RestoreOptions {
        replace: false,
        absolute: false,
        idle_seconds: None,
    };
    let (mut idle_given, mut freq_given) = (false, false);
    let mut index = 4;
    while index < args.len() {
        let word = &args[index];
        let has_value = index + 1 < args.len();
        if is(word, "replace") {
            options.replace = true;
        } else if is(word, "absttl") {
            options.absolute = true;
        } else if is(word, "idletime") && has_value && !freq_given {
            let idle = integer_arg(&args[index + 1])?;
            if idle < 0 {
                return Err(Reply::err("Invalid IDLETIME value, must be >= 0"));
            }
            options.idle_seconds = Some(idle as u64);
            idle_given = true;
            index += 1;
        } else if is(word, "freq") && has_value && !idle_given {
            if !(0..=255).contains(&integer_arg(&args[index + 1])?) {
                return Err(Reply::err("Invalid FREQ value, must be >= 0 and <= 255"));
            }
            freq_given = true;
            index += 1;
        } else {
            return Err(syntax_error());
        }
        index += 1;
    }
    Ok(options)
}

fn copy(args: &[Bytes], db: u8) -> Result<RedisOp, Reply> {
    let mut replace = false;
    let mut to_db = db;
    let mut index = 3;
    while index < args.len() {
        if is(&args[index], "replace") {
            replace = true;
        } else if is(&args[index], "db") && index + 1 < args.len() {
            to_db = database_arg(&args[index + 1])?;
            index += 1;
        } else {
            return Err(syntax_error());
        }
        index += 1;
    }
    if args[1] == args[2] && to_db == db {
        return Err(Reply::err(SAME_OBJECT));
    }
    // Within one database COPY keeps its original op, which logs written
    // before databases existed hold.
    if to_db == db {
        return Ok(RedisOp::Copy {
            from: args[1].clone(),
            to: args[2].clone(),
            replace,
        });
    }
    Ok(RedisOp::CopyToDb {
        from: args[1].clone(),
        to: args[2].clone(),
        to_db,
        replace,
    })
}

const SAME_OBJECT: &str = "source and destination objects are the same";

/// A database number as SELECT, MOVE and COPY … DB take it: 0 to 15.
pub fn database_arg(arg: &[u8]) -> Result<u8, Reply> {
    let index = integer_arg(arg)?;
    u8::try_from(index)
        .ok()
        .filter(|&db| db < DATABASES)
        .ok_or_else(|| Reply::err("DB index is out of range"))
}

fn move_to(args: &[Bytes], db: u8) -> Result<RedisOp, Reply> {
    let to_db = database_arg(&args[2])?;
    if to_db == db {
        return Err(Reply::err(SAME_OBJECT));
    }
    Ok(RedisOp::Move {
        key: args[1].clone(),
        to_db,
    })
}

/// SWAPDB a b: both indexes must be integers (checked first, as Redis
/// does), then in range.
fn swap_db(args: &[Bytes]) -> Result<RedisOp, Reply> {
    let integer = |arg: &[u8], which: &str| {
        crate::store::number::parse_i64(arg)
            .ok_or_else(|| Reply::err(format!("invalid {which} DB index")))
    };
    integer(&args[1], "first")?;
    integer(&args[2], "second")?;
    Ok(RedisOp::SwapDb {
        a: database_arg(&args[1])?,
        b: database_arg(&args[2])?,
    })
}

/// A bit offset as SETBIT and GETBIT take it: below 2^32, and inside the
/// longest value allowed.
fn bit_offset(arg: &[u8], max_len: u64) -> Result<u64, Reply> {
    let invalid = || Reply::err("bit offset is not an integer or out of range");
    let offset = integer_arg(arg).map_err(|_| invalid())?;
    if offset < 0 || (offset as u64) >> 3 >= max_len || offset as u64 >= 1 << 32 {
        return Err(invalid());
    }
    Ok(offset as u64)
}

fn set_bit(args: &[Bytes], max_len: u64) -> Result<RedisOp, Reply> {
    let offset = bit_offset(&args[2], max_len)?;
    let bit = match args[3].as_ref() {
        b"0" => false,
        b"1" => true,
        _ => return Err(Reply::err("bit is not an integer or out of range")),
    };
    Ok(RedisOp::SetBit {
        key: args[1].clone(),
        offset,
        bit,
    })
}

/// `[start [end [BYTE|BIT]]]` from `words`; `end_required` for BITCOUNT,
/// where a start alone is a syntax error. The checks run in Redis's order,
/// so a request wrong in two ways gets Redis's error: BITCOUNT reads both
/// numbers before the unit, BITPOS the unit before the end.
fn bit_range(words: &[Bytes], end_required: bool) -> Result<Option<BitRange>, Reply> {
    let unit = |word: &Bytes| {
        if is(word, "bit") {
            Ok(true)
        } else if is(word, "byte") {
            Ok(false)
        } else {
            Err(syntax_error())
        }
    };
    Ok(match words {
        [] => None,
        [_] if end_required => return Err(syntax_error()),
        [start] => Some(BitRange {
            start: integer_arg(start)?,
            end: None,
            bits: false,
        }),
        [start, end] => Some(BitRange {
            start: integer_arg(start)?,
            end: Some(integer_arg(end)?),
            bits: false,
        }),
        [start, end, kind] => {
            let start = integer_arg(start)?;
            let (end, bits) = if end_required {
                let end = integer_arg(end)?;
                (end, unit(kind)?)
            } else {
                let bits = unit(kind)?;
                (integer_arg(end)?, bits)
            };
            Some(BitRange {
                start,
                end: Some(end),
                bits,
            })
        }
        _ => return Err(syntax_error()),
    })
}

fn bit_count(args: &[Bytes]) -> Result<RedisOp, Reply> {
    Ok(RedisOp::BitCount {
        key: args[1].clone(),
        range: bit_range(&args[2..], true)?,
    })
}

fn bit_pos(args: &[Bytes]) -> Result<RedisOp, Reply> {
    let bit = match integer_arg(&args[2])? {
        0 => false,
        1 => true,
        _ => return Err(Reply::err("The bit argument must be 1 or 0.")),
    };
    Ok(RedisOp::BitPos {
        key: args[1].clone(),
        bit,
        range: bit_range(&args[3..], false)?,
    })
}

fn bit_op(args: &[Bytes]) -> Result<RedisOp, Reply> {
    let operation = match args[1].to_ascii_lowercase().as_slice() {
        b"and" => BitOperation::And,
        b"or" => BitOperation::Or,
        b"xor" => BitOperation::Xor,
        b"not" => BitOperation::Not,
        _ => return Err(syntax_error()),
    };
    let keys = args[3..].to_vec();
    if operation == BitOperation::Not && keys.len() != 1 {
        return Err(Reply::err(
            "BITOP NOT must be called with a single source key.",
        ));
    }
    Ok(RedisOp::BitOp {
        operation,
        destination: args[2].clone(),
        keys,
    })
}

/// BITFIELD's subcommands, checked as Redis checks them: in order, every
/// argument before anything runs; BITFIELD_RO refuses a write after that.
fn bit_field(args: &[Bytes], max_len: u64, read_only: bool) -> Result<RedisOp, Reply> {
    let mut ops = Vec::new();
    let mut overflow = Overflow::default();
    let mut index = 2;
    while index < args.len() {
        let word = &args[index];
        let remaining = args.len() - index - 1;
        if is(word, "overflow") && remaining >= 1 {
            let mode = &args[index + 1];
            overflow = if is(mode, "wrap") {
                Overflow::Wrap
            } else if is(mode, "sat") {
                Overflow::Saturate
            } else if is(mode, "fail") {
                Overflow::Fail
            } else {
                return Err(Reply::err("Invalid OVERFLOW type specified"));
            };
            index += 2;
            continue;
        }
        let writes = (is(word, "set") || is(word, "incrby")) && remaining >= 3;
        let reads = is(word, "get") && remaining >= 2;
        if !(writes || reads) {
            return Err(syntax_error());
        }
        let field = field_type(&args[index + 1])?;
        let offset = field_offset(&args[index + 2], field, max_len)?;
        if !writes {
            ops.push(BitFieldOp::Get { field, offset });
            index += 3;
            continue;
        }
        let number = integer_arg(&args[index + 3])?;
        ops.push(if is(word, "set") {
            BitFieldOp::Set {
                field,
                offset,
                value: number,
                overflow,
            }
        } else {
            BitFieldOp::IncrBy {
                field,
                offset,
                increment: number,
                overflow,
            }
        });
        index += 4;
    }
    let end = ops.iter().filter_map(BitFieldOp::write_end_byte).max();
    if read_only && end.is_some() {
        return Err(Reply::err("BITFIELD_RO only supports the GET subcommand"));
    }
    if end.is_some_and(|end| end > max_len) {
        return Err(Reply::err(TOO_BIG));
    }
    Ok(RedisOp::BitField {
        key: args[1].clone(),
        ops,
    })
}

/// `i1`…`i64` or `u1`…`u63` (lower case, as Redis takes them).
fn field_type(arg: &[u8]) -> Result<FieldType, Reply> {
    let invalid = || {
        Reply::err(
            "Invalid bitfield type. Use something like i16 u8. \
             Note that u64 is not supported but i64 is.",
        )
    };
    let (signed, widest) = match arg.first() {
        Some(b'i') => (true, 64),
        Some(b'u') => (false, 63),
        _ => return Err(invalid()),
    };
    match crate::store::number::parse_i64(&arg[1..]) {
        Some(bits) if (1..=widest).contains(&bits) => Ok(FieldType {
            signed,
            bits: bits as u8,
        }),
        _ => Err(invalid()),
    }
}

/// A field's bit offset: a number, or `#N` for the Nth field of its width;
/// inside the longest value allowed.
fn field_offset(arg: &[u8], field: FieldType, max_len: u64) -> Result<u64, Reply> {
    let invalid = || Reply::err("bit offset is not an integer or out of range");
    let (digits, scale) = match arg.strip_prefix(b"#") {
        Some(rest) => (rest, i64::from(field.bits)),
        None => (arg, 1),
    };
    let offset = crate::store::number::parse_i64(digits)
        .and_then(|number| number.checked_mul(scale))
        .ok_or_else(invalid)?;
    if offset < 0 || (offset as u64) >> 3 >= max_len {
        return Err(invalid());
    }
    Ok(offset as u64)
}

fn flush(name: &str, args: &[Bytes]) -> Result<RedisOp, Reply> {
    let op = match name {
        "flushall" => RedisOp::Flush,
        _ => RedisOp::FlushDb,
    };
    match &args[1..] {
        [] => Ok(op),
        [mode] if is(mode, "async") || is(mode, "sync") => Ok(op),
        // Redis 7's `getFlushCommandFlags`: any other word, or more than one.
        _ => Err(syntax_error()),
    }
}
