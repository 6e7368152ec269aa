//! The string family: GET/SET and their variants, MGET/MSET, counters,
//! APPEND, ranges and LCS.

use bytes::{Bytes, BytesMut};

use super::super::Shared;
use super::super::frame::Reply;
use super::util::{
    Change, TimeArg, format_f64, integer_arg, is, parse_f64, parse_i64, syntax_error, update,
};
use super::{CommandResult, Finish, Planned, wrong_arity};
use crate::store::{Command, Entry, Guard, Op};

const TOO_BIG: &str = "string exceeds maximum allowed size (proto-max-bulk-len)";

/// The store command for a string write that needs no read.
pub fn plan(name: &str, args: &[Bytes]) -> Option<Planned> {
    let put = |guard, expires_at_ms, finish| {
        Ok((
            Command::Put {
                key: args[1].clone(),
                value: args[2].clone(),
                expires_at_ms,
                guard,
            },
            finish,
        ))
    };
    Some(match name {
        "set" => return plan_set(args),
        "setnx" => put(Guard::Absent, 0, Finish::Applied),
        "getset" => put(Guard::None, 0, Finish::Previous),
        "setex" | "psetex" => plan_setex(name, args),
        "getdel" => Ok((
            Command::Delete {
                key: args[1].clone(),
                guard: Guard::None,
            },
            Finish::Previous,
        )),
        "mset" | "msetnx" => plan_mset(name, args),
        _ => return None,
    })
}

fn plan_setex(name: &str, args: &[Bytes]) -> Planned {
    let unit_ms = if name == "setex" { 1000 } else { 1 };
    let time = TimeArg {
        unit_ms,
        absolute: false,
    };
    let expires_at_ms = time.deadline_ms(&args[2], name)?;
    Ok((
        Command::Put {
            key: args[1].clone(),
            value: args[3].clone(),
            expires_at_ms,
            guard: Guard::None,
        },
        Finish::Ok,
    ))
}

fn plan_mset(name: &str, args: &[Bytes]) -> Planned {
    if args.len().is_multiple_of(2) {
        return Err(wrong_arity(name));
    }
    let pairs = args[1..].chunks_exact(2);
    let ops = pairs
        .clone()
        .map(|pair| Op::Put {
            key: pair[0].clone(),
            value: pair[1].clone(),
            expires_at_ms: 0,
        })
        .collect();
    if name == "mset" {
        return Ok((
            Command::Txn {
                guards: Vec::new(),
                ops,
            },
            Finish::Ok,
        ));
    }
    let guards = pairs.map(|pair| (pair[0].clone(), Guard::Absent)).collect();
    Ok((Command::Txn { guards, ops }, Finish::Applied))
}

/// SET's options, parsed.
#[derive(Debug, Default)]
struct SetOptions {
    guard: Guard,
    get: bool,
    keep_ttl: bool,
    expires_at_ms: u64,
}

fn parse_set_options(args: &[Bytes]) -> Result<SetOptions, Reply> {
    let mut options = SetOptions::default();
    let mut expiry: Option<(TimeArg, &Bytes)> = None;
    let mut index = 3;
    while index < args.len() {
        let word = &args[index];
        if is(word, "nx") && options.guard != Guard::Present {
            options.guard = Guard::Absent;
        } else if is(word, "xx") && options.guard != Guard::Absent {
            options.guard = Guard::Present;
        } else if is(word, "get") {
            options.get = true;
        } else if is(word, "keepttl") && expiry.is_none() {
            options.keep_ttl = true;
        } else if let Some(time) = TimeArg::from_option(word) {
            let value = args.get(index + 1);
            match value {
                Some(value) if expiry.is_none() && !options.keep_ttl => {
                    expiry = Some((time, value));
                }
                _ => return Err(syntax_error()),
            }
            index += 1;
        } else {
            return Err(syntax_error());
        }
        index += 1;
    }
    if let Some((time, value)) = expiry {
        options.expires_at_ms = time.deadline_ms(value, "set")?;
    }
    Ok(options)
}

fn plan_set(args: &[Bytes]) -> Option<Planned> {
    let options = match parse_set_options(args) {
        Ok(options) => options,
        Err(reply) => return Some(Err(reply)),
    };
    if options.keep_ttl {
        return None;
    }
    let finish = if options.get {
        Finish::Previous
    } else if options.guard == Guard::None {
        Finish::Ok
    } else {
        Finish::OkOrNull
    };
    Some(Ok((
        Command::Put {
            key: args[1].clone(),
            value: args[2].clone(),
            expires_at_ms: options.expires_at_ms,
            guard: options.guard,
        },
        finish,
    )))
}

/// The string commands that read before they write, and the reads.
pub async fn run(shared: &Shared, name: &str, args: &[Bytes]) -> CommandResult {
    let value = |key: &Bytes| shared.store.get(key);
    match name {
        "get" => Ok(value(&args[1]).map_or(Reply::Null, Reply::Bulk)),
        "mget" => Ok(Reply::Array(
            shared
                .store
                .get_entries(&args[1..])
                .into_iter()
                .map(|entry| entry.map_or(Reply::Null, |entry| Reply::Bulk(entry.value)))
                .collect(),
        )),
        "strlen" => Ok(Reply::Integer(
            value(&args[1]).map_or(0, |v| v.len() as i64),
        )),
        "getrange" | "substr" => getrange(value(&args[1]).unwrap_or_default(), args),
        "set" => set_keep_ttl(shared, args).await,
        "getex" => getex(shared, args).await,
        "append" => append(shared, args).await,
        "setrange" => setrange(shared, args).await,
        "incr" => increment(shared, &args[1], 1).await,
        "decr" => increment(shared, &args[1], -1).await,
        "incrby" => increment(shared, &args[1], integer_arg(&args[2])?).await,
        "decrby" => {
            let delta = integer_arg(&args[2])?;
            let negated = delta
                .checked_neg()
                .ok_or_else(|| Reply::err("decrement would overflow"))?;
            increment(shared, &args[1], negated).await
        }
        "incrbyfloat" => increment_float(shared, args).await,
        "lcs" => lcs(shared, args),
        _ => Err(Reply::err(format!("command '{name}' is not implemented"))),
    }
}

fn expiry_of(entry: Option<&Entry>) -> u64 {
    entry.map_or(0, |entry| entry.expires_at_ms)
}

/// SET … KEEPTTL: the only SET that must read the key first.
async fn set_keep_ttl(shared: &Shared, args: &[Bytes]) -> CommandResult {
    let options = parse_set_options(args)?;
    let value = args[2].clone();
    update(shared, &args[1], |current| {
        let previous = || current.map_or(Reply::Null, |entry| Reply::Bulk(entry.value.clone()));
        let refused = match options.guard {
            Guard::Absent => current.is_some(),
            Guard::Present => current.is_none(),
            _ => false,
        };
        let answer = match (options.get, refused) {
            (true, _) => previous(),
            (false, true) => Reply::Null,
            (false, false) => Reply::ok(),
        };
        Ok(if refused {
            Change::Keep(answer)
        } else {
            Change::Put(value.clone(), expiry_of(current), answer)
        })
    })
    .await
}

async fn getex(shared: &Shared, args: &[Bytes]) -> CommandResult {
    enum Action {
        Read,
        Persist,
        ExpireAt(u64),
    }
    let action = match &args[2..] {
        [] => Action::Read,
        [word] if is(word, "persist") => Action::Persist,
        [word, value] => match TimeArg::from_option(word) {
            Some(time) => Action::ExpireAt(time.deadline_ms(value, "getex")?),
            None => return Err(super::util::syntax_error()),
        },
        _ => return Err(super::util::syntax_error()),
    };
    update(shared, &args[1], |current| {
        let Some(entry) = current else {
            return Ok(Change::Keep(Reply::Null));
        };
        let reply = Reply::Bulk(entry.value.clone());
        Ok(match action {
            Action::Read => Change::Keep(reply),
            Action::Persist if entry.expires_at_ms == 0 => Change::Keep(reply),
            Action::Persist => Change::Put(entry.value.clone(), 0, reply),
            Action::ExpireAt(at) if at <= crate::store::now_ms() => Change::Delete(reply),
            Action::ExpireAt(at) => Change::Put(entry.value.clone(), at, reply),
        })
    })
    .await
}

async fn append(shared: &Shared, args: &[Bytes]) -> CommandResult {
    let limit = shared.config.limits.max_bulk_bytes;
    update(shared, &args[1], |current| {
        let old = current.map_or(&[][..], |entry| &entry.value[..]);
        let length = old.len() + args[2].len();
        if length > limit {
            return Err(Reply::err(TOO_BIG));
        }
        let mut value = BytesMut::with_capacity(length);
        value.extend_from_slice(old);
        value.extend_from_slice(&args[2]);
        let reply = Reply::Integer(length as i64);
        Ok(Change::Put(value.freeze(), expiry_of(current), reply))
    })
    .await
}

async fn setrange(shared: &Shared, args: &[Bytes]) -> CommandResult {
    let offset = integer_arg(&args[2])?;
    if offset < 0 {
        return Err(Reply::err("offset is out of range"));
    }
    let offset = offset as u64;
    let patch = &args[3];
    let limit = shared.config.limits.max_bulk_bytes as u64;
    update(shared, &args[1], |current| {
        let old = current.map_or(&[][..], |entry| &entry.value[..]);
        if patch.is_empty() {
            return Ok(Change::Keep(Reply::Integer(old.len() as i64)));
        }
        let end = offset + patch.len() as u64;
        if end > limit {
            return Err(Reply::err(TOO_BIG));
        }
        let (offset, end) = (offset as usize, end as usize);
        let mut value = old.to_vec();
        if value.len() < end {
            value.resize(end, 0);
        }
        value[offset..end].copy_from_slice(patch);
        let reply = Reply::Integer(value.len() as i64);
        Ok(Change::Put(value.into(), expiry_of(current), reply))
    })
    .await
}

async fn increment(shared: &Shared, key: &Bytes, delta: i64) -> CommandResult {
    update(shared, key, |current| {
        let old = match current {
            None => 0,
            Some(entry) => parse_i64(&entry.value).ok_or_else(super::util::not_an_integer)?,
        };
        let new = old
            .checked_add(delta)
            .ok_or_else(|| Reply::err("increment or decrement would overflow"))?;
        let value = Bytes::from(new.to_string());
        Ok(Change::Put(value, expiry_of(current), Reply::Integer(new)))
    })
    .await
}

async fn increment_float(shared: &Shared, args: &[Bytes]) -> CommandResult {
    let not_float = || Reply::err("value is not a valid float");
    let delta = parse_f64(&args[2]).ok_or_else(not_float)?;
    update(shared, &args[1], |current| {
        let old = match current {
            None => 0.0,
            Some(entry) => parse_f64(&entry.value).ok_or_else(not_float)?,
        };
        let new = old + delta;
        if !new.is_finite() {
            return Err(Reply::err("increment would produce NaN or Infinity"));
        }
        let text = Bytes::from(format_f64(new));
        Ok(Change::Put(
            text.clone(),
            expiry_of(current),
            Reply::Bulk(text),
        ))
    })
    .await
}

/// GETRANGE's index arithmetic, exactly as Redis 7 does it.
fn getrange(value: Bytes, args: &[Bytes]) -> CommandResult {
    let (mut start, mut end) = (integer_arg(&args[2])?, integer_arg(&args[3])?);
    let length = value.len() as i64;
    if (start < 0 && end < 0 && start > end) || length == 0 {
        return Ok(Reply::bulk(Bytes::new()));
    }
    if start < 0 {
        start += length;
    }
    if end < 0 {
        end += length;
        // An end before the first byte selects nothing (Redis 7.2 on).
        if end < 0 {
            return Ok(Reply::bulk(Bytes::new()));
        }
    }
    start = start.max(0);
    end = end.min(length - 1);
    if start > end {
        return Ok(Reply::bulk(Bytes::new()));
    }
    Ok(Reply::Bulk(value.slice(start as usize..=end as usize)))
}

/// LCS's options.
#[derive(Default)]
struct LcsOptions {
    length_only: bool,
    indexes: bool,
    min_match_length: i64,
    with_match_length: bool,
}

fn parse_lcs_options(args: &[Bytes]) -> Result<LcsOptions, Reply> {
    let mut options = LcsOptions::default();
    let mut index = 3;
    while index < args.len() {
        let word = &args[index];
        if is(word, "len") {
            options.length_only = true;
        } else if is(word, "idx") {
            options.indexes = true;
        } else if is(word, "withmatchlen") {
            options.with_match_length = true;
        } else if is(word, "minmatchlen") && index + 1 < args.len() {
            options.min_match_length = integer_arg(&args[index + 1])?.max(0);
            index += 1;
        } else {
            return Err(syntax_error());
        }
        index += 1;
    }
    if options.length_only && options.indexes {
        return Err(Reply::err(
            "If you want both the length and indexes, please just use IDX.",
        ));
    }
    Ok(options)
}

fn lcs(shared: &Shared, args: &[Bytes]) -> CommandResult {
    let options = parse_lcs_options(args)?;
    let a = shared.store.get(&args[1]).unwrap_or_default();
    let b = shared.store.get(&args[2]).unwrap_or_default();
    let cells = (a.len() as u64 + 1) * (b.len() as u64 + 1);
    if cells > (shared.config.limits.max_bulk_bytes as u64 / 4).max(1 << 20) {
        return Err(Reply::err(
            "Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len",
        ));
    }
    let table = LcsTable::new(&a, &b);
    let length = table.length(a.len(), b.len()) as i64;
    if options.length_only {
        return Ok(Reply::Integer(length));
    }
    if !options.indexes {
        return Ok(Reply::bulk(table.sequence(&a, &b)));
    }
    let matches = table.matches(&a, &b, &options);
    Ok(Reply::Array(vec![
        Reply::text("matches"),
        Reply::Array(matches),
        Reply::text("len"),
        Reply::Integer(length),
    ]))
}

/// The dynamic-programming table of LCS lengths of every pair of prefixes.
struct LcsTable {
    width: usize,
    cells: Vec<u32>,
}

impl LcsTable {
    fn new(a: &[u8], b: &[u8]) -> LcsTable {
        let width = b.len() + 1;
        let mut cells = vec![0u32; (a.len() + 1) * width];
        for i in 1..=a.len() {
            for j in 1..=b.len() {
                cells[i * width + j] = if a[i - 1] == b[j - 1] {
                    cells[(i - 1) * width + j - 1] + 1
                } else {
                    cells[(i - 1) * width + j].max(cells[i * width + j - 1])
                };
            }
        }
        LcsTable { width, cells }
    }

    fn length(&self, i: usize, j: usize) -> u32 {
        self.cells[i * self.width + j]
    }

    /// Walks back from the end, as Redis does: the common subsequence.
    fn sequence(&self, a: &[u8], b: &[u8]) -> Vec<u8> {
        let (mut i, mut j) = (a.len(), b.len());
        let mut out = Vec::with_capacity(self.length(i, j) as usize);
        while i > 0 && j > 0 {
            if a[i - 1] == b[j - 1] {
                out.push(a[i - 1]);
                i -= 1;
                j -= 1;
            } else if self.length(i - 1, j) > self.length(i, j - 1) {
                i -= 1;
            } else {
                j -= 1;
            }
        }
        out.reverse();
        out
    }

    /// The matching ranges, last first, as `LCS … IDX` reports them.
    fn matches(&self, a: &[u8], b: &[u8], options: &LcsOptions) -> Vec<Reply> {
        let (mut i, mut j) = (a.len(), b.len());
        let mut matches = Vec::new();
        let mut range: Option<(usize, usize, usize, usize)> = None;
        while i > 0 && j > 0 {
            let mut emit = false;
            if a[i - 1] == b[j - 1] {
                range = match range {
                    None => Some((i - 1, i - 1, j - 1, j - 1)),
                    Some((a_start, a_end, b_start, b_end)) if a_start == i && b_start == j => {
                        Some((a_start - 1, a_end, b_start - 1, b_end))
                    }
                    other => {
                        emit = true;
                        other
                    }
                };
                emit |= range.is_some_and(|(a_start, _, b_start, _)| a_start == 0 || b_start == 0);
                i -= 1;
                j -= 1;
            } else {
                if self.length(i - 1, j) > self.length(i, j - 1) {
                    i -= 1;
                } else {
                    j -= 1;
                }
                emit = range.is_some();
            }
            if emit && let Some((a_start, a_end, b_start, b_end)) = range.take() {
                let length = (a_end - a_start + 1) as i64;
                if length >= options.min_match_length {
                    matches.push(match_reply(
                        (a_start, a_end),
                        (b_start, b_end),
                        options.with_match_length.then_some(length),
                    ));
                }
            }
        }
        matches
    }
}

fn match_reply(a: (usize, usize), b: (usize, usize), length: Option<i64>) -> Reply {
    let pair = |(start, end): (usize, usize)| {
        Reply::Array(vec![
            Reply::Integer(start as i64),
            Reply::Integer(end as i64),
        ])
    };
    let mut items = vec![pair(a), pair(b)];
    items.extend(length.map(Reply::Integer));
    Reply::Array(items)
}
