//! The generic key commands: DEL, EXISTS, TYPE, RENAME, COPY, KEYS, SCAN and
//! the expiry commands. Every key is a string here, so TYPE says `string` or
//! `none`.

use std::ops::Bound;

use bytes::Bytes;

use super::super::Shared;
use super::super::frame::Reply;
use super::util::{Change, glob_match, integer_arg, is, syntax_error, update};
use super::{CommandResult, Finish, Session};
use crate::store::{Command, Entry, Guard, Op, now_ms};

/// Keys a single range read returns at most, while listing.
const PAGE: usize = 1000;
/// SCAN cursors remembered per connection.
const MAX_CURSORS: usize = 16;

pub fn handles(name: &str) -> bool {
    matches!(
        name,
        "exists"
            | "touch"
            | "type"
            | "rename"
            | "renamenx"
            | "copy"
            | "randomkey"
            | "keys"
            | "scan"
            | "expire"
            | "pexpire"
            | "expireat"
            | "pexpireat"
            | "ttl"
            | "pttl"
            | "expiretime"
            | "pexpiretime"
            | "persist"
    )
}

/// DEL and UNLINK: one delete, or one transaction for several keys.
pub fn plan_delete(args: &[Bytes]) -> (Command, Finish) {
    let command = match &args[1..] {
        [key] => Command::delete(key.clone()),
        keys => Command::Txn {
            guards: Vec::new(),
            ops: keys
                .iter()
                .map(|key| Op::Delete { key: key.clone() })
                .collect(),
        },
    };
    (command, Finish::Changed)
}

pub async fn run(
    session: &mut Session,
    shared: &Shared,
    name: &str,
    args: &[Bytes],
) -> CommandResult {
    let store = &shared.store;
    match name {
        "exists" | "touch" => Ok(Reply::Integer(
            args[1..]
                .iter()
                .filter(|key| store.get_entry(key).is_some())
                .count() as i64,
        )),
        "type" => Ok(Reply::Simple(match store.get_entry(&args[1]) {
            Some(_) => "string",
            None => "none",
        })),
        "rename" => rename(shared, args, false).await,
        "renamenx" => rename(shared, args, true).await,
        "copy" => copy(shared, args).await,
        "randomkey" => Ok(random_key(shared)),
        "keys" => Ok(Reply::Array(
            matching_keys(shared, &args[1], Bound::Unbounded, usize::MAX)
                .0
                .into_iter()
                .map(Reply::Bulk)
                .collect(),
        )),
        "scan" => scan(session, shared, args),
        "ttl" | "pttl" | "expiretime" | "pexpiretime" => {
            Ok(time_to_live(store.get_entry(&args[1]), name))
        }
        "persist" => persist(shared, &args[1]).await,
        "expire" | "pexpire" | "expireat" | "pexpireat" => expire(shared, name, args).await,
        _ => Err(Reply::err(format!("command '{name}' is not implemented"))),
    }
}

async fn rename(shared: &Shared, args: &[Bytes], only_if_absent: bool) -> CommandResult {
    let (source, target) = (&args[1], &args[2]);
    loop {
        let entry = shared
            .store
            .get_entry(source)
            .ok_or_else(|| Reply::err("no such key"))?;
        let existing = shared.store.get_entry(target);
        if source == target || (only_if_absent && existing.is_some()) {
            return Ok(match only_if_absent {
                true => Reply::Integer(0),
                false => Reply::ok(),
            });
        }
        let command = Command::Txn {
            guards: vec![
                (source.clone(), Guard::ModRevision(entry.mod_revision)),
                (target.clone(), guard_for(existing.as_ref())),
            ],
            ops: vec![
                Op::Delete {
                    key: source.clone(),
                },
                Op::Put {
                    key: target.clone(),
                    value: entry.value,
                    expires_at_ms: entry.expires_at_ms,
                },
            ],
        };
        if shared.store.submit(command).await?.succeeded {
            return Ok(match only_if_absent {
                true => Reply::Integer(1),
                false => Reply::ok(),
            });
        }
    }
}

/// The guard that holds while the key is as `entry` saw it.
fn guard_for(entry: Option<&Entry>) -> Guard {
    entry.map_or(Guard::Absent, |entry| {
        Guard::ModRevision(entry.mod_revision)
    })
}

async fn copy(shared: &Shared, args: &[Bytes]) -> CommandResult {
    let (source, target) = (&args[1], &args[2]);
    let mut replace = false;
    let mut index = 3;
    while index < args.len() {
        if is(&args[index], "replace") {
            replace = true;
        } else if is(&args[index], "db") && index + 1 < args.len() {
            if integer_arg(&args[index + 1])? != 0 {
                return Err(Reply::err("DB index is out of range"));
            }
            index += 1;
        } else {
            return Err(syntax_error());
        }
        index += 1;
    }
    if source == target {
        return Err(Reply::err("source and destination objects are the same"));
    }
    loop {
        let Some(entry) = shared.store.get_entry(source) else {
            return Ok(Reply::Integer(0));
        };
        let existing = shared.store.get_entry(target);
        if existing.is_some() && !replace {
            return Ok(Reply::Integer(0));
        }
        let command = Command::Txn {
            guards: vec![
                (source.clone(), Guard::ModRevision(entry.mod_revision)),
                (target.clone(), guard_for(existing.as_ref())),
            ],
            ops: vec![Op::Put {
                key: target.clone(),
                value: entry.value,
                expires_at_ms: entry.expires_at_ms,
            }],
        };
        if shared.store.submit(command).await?.succeeded {
            return Ok(Reply::Integer(1));
        }
    }
}

fn random_key(shared: &Shared) -> Reply {
    let start: [u8; 8] = rand::random();
    let after = shared
        .store
        .range(Bound::Included(&start[..]), b"", 1)
        .into_iter()
        .next();
    let found = after.or_else(|| shared.store.range(Bound::Unbounded, b"", 1).pop());
    found.map_or(Reply::Null, |(key, _)| Reply::Bulk(key))
}

/// The literal start of a glob pattern: every matching key begins with it.
fn literal_prefix(pattern: &[u8]) -> &[u8] {
    let end = pattern
        .iter()
        .position(|byte| matches!(byte, b'*' | b'?' | b'[' | b'\\'))
        .unwrap_or(pattern.len());
    &pattern[..end]
}

/// Live keys matching `pattern` from `start`, looking at no more than
/// `budget` keys; also the last key looked at, if the budget ran out first.
fn matching_keys(
    shared: &Shared,
    pattern: &[u8],
    start: Bound<&[u8]>,
    budget: usize,
) -> (Vec<Bytes>, Option<Bytes>) {
    let prefix = literal_prefix(pattern);
    let mut found = Vec::new();
    let mut after: Option<Bytes> = None;
    let mut looked = 0;
    loop {
        let lower = after.as_deref().map_or(start, Bound::Excluded);
        let page_size = PAGE.min(budget - looked);
        let page = shared.store.range(lower, prefix, page_size);
        let done = page.len() < page_size;
        looked += page.len();
        for (key, _) in page {
            if glob_match(pattern, &key) {
                found.push(key.clone());
            }
            after = Some(key);
        }
        if done {
            return (found, None);
        }
        if looked >= budget {
            return (found, after);
        }
    }
}

fn scan(session: &mut Session, shared: &Shared, args: &[Bytes]) -> CommandResult {
    let cursor = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or_else(|| Reply::err("invalid cursor"))?;
    let mut pattern: &[u8] = b"*";
    let mut count = 10usize;
    let mut strings_only = true;
    let mut index = 2;
    while index + 1 < args.len() {
        let value = &args[index + 1];
        if is(&args[index], "match") {
            pattern = value;
        } else if is(&args[index], "count") {
            let parsed = integer_arg(value)?;
            if parsed < 1 {
                return Err(syntax_error());
            }
            count = parsed.min(1 << 20) as usize;
        } else if is(&args[index], "type") {
            strings_only = is(value, "string");
        } else {
            return Err(syntax_error());
        }
        index += 2;
    }
    if index != args.len() {
        return Err(syntax_error());
    }
    let start = match cursor {
        0 => None,
        cursor => match session.scan_cursors.iter().find(|(id, _)| *id == cursor) {
            Some((_, key)) => Some(key.clone()),
            None => return Ok(scan_reply(0, Vec::new())),
        },
    };
    let lower = start.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
    let (mut keys, next) = matching_keys(shared, pattern, lower, count);
    if !strings_only {
        keys.clear();
    }
    let next_cursor = next.map_or(0, |last| remember_cursor(session, last));
    Ok(scan_reply(next_cursor, keys))
}

fn remember_cursor(session: &mut Session, last: Bytes) -> u64 {
    let id = session.next_cursor;
    session.next_cursor += 1;
    if session.scan_cursors.len() >= MAX_CURSORS {
        session.scan_cursors.remove(0);
    }
    session.scan_cursors.push((id, last));
    id
}

fn scan_reply(cursor: u64, keys: Vec<Bytes>) -> Reply {
    Reply::Array(vec![
        Reply::text(cursor.to_string()),
        Reply::Array(keys.into_iter().map(Reply::Bulk).collect()),
    ])
}

fn time_to_live(entry: Option<Entry>, name: &str) -> Reply {
    let Some(entry) = entry else {
        return Reply::Integer(-2);
    };
    if entry.expires_at_ms == 0 {
        return Reply::Integer(-1);
    }
    let at = entry.expires_at_ms as i64;
    let remaining = (at - now_ms() as i64).max(0);
    Reply::Integer(match name {
        "ttl" => (remaining + 500) / 1000,
        "pttl" => remaining,
        "expiretime" => at / 1000,
        _ => at,
    })
}

async fn persist(shared: &Shared, key: &Bytes) -> CommandResult {
    update(shared, key, |current| {
        Ok(match current {
            Some(entry) if entry.expires_at_ms != 0 => {
                Change::Put(entry.value.clone(), 0, Reply::Integer(1))
            }
            _ => Change::Keep(Reply::Integer(0)),
        })
    })
    .await
}

/// EXPIRE's condition flags.
#[derive(Debug, Default, Clone, Copy)]
struct ExpireFlags {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
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

/// Whether the flags let an expiry at `new_ms` replace the entry's.
fn expire_allowed(flags: ExpireFlags, current_ms: u64, new_ms: i64) -> bool {
    let has_ttl = current_ms != 0;
    let current = current_ms as i64;
    !((flags.nx && has_ttl)
        || (flags.xx && !has_ttl)
        || (flags.gt && (!has_ttl || new_ms <= current))
        || (flags.lt && has_ttl && new_ms >= current))
}

async fn expire(shared: &Shared, name: &str, args: &[Bytes]) -> CommandResult {
    let value = integer_arg(&args[2])?;
    let flags = parse_expire_flags(&args[3..])?;
    let unit_ms: i64 = if name.starts_with('p') { 1 } else { 1000 };
    let base: i64 = if name.ends_with("at") {
        0
    } else {
        now_ms() as i64
    };
    // As Redis: the time in milliseconds, and then the absolute time, must
    // each fit in 64 bits.
    let at = value
        .checked_mul(unit_ms)
        .and_then(|ms| ms.checked_add(base))
        .ok_or_else(|| Reply::err(format!("invalid expire time in '{name}' command")))?;
    update(shared, &args[1], |current| {
        let Some(entry) = current else {
            return Ok(Change::Keep(Reply::Integer(0)));
        };
        if !expire_allowed(flags, entry.expires_at_ms, at) {
            return Ok(Change::Keep(Reply::Integer(0)));
        }
        Ok(if at <= now_ms() as i64 {
            Change::Delete(Reply::Integer(1))
        } else {
            Change::Put(entry.value.clone(), at as u64, Reply::Integer(1))
        })
    })
    .await
}
