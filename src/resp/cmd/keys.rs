//! The key commands that are not ops of the state machine: KEYS, SCAN and
//! RANDOMKEY, which walk the keyspace at the front end, MEMORY USAGE and
//! OBJECT.

use std::ops::Bound;

use bytes::Bytes;

use super::super::Shared;
use super::super::frame::Reply;
use super::super::glob::glob_match;
use super::CommandResult;
use super::util::{help_reply, integer_arg, is, syntax_error, unknown_subcommand_or_arity};

/// Keys a single range read returns at most, while listing.
const PAGE: usize = 1000;

pub fn handles(name: &str) -> bool {
    matches!(name, "randomkey" | "keys" | "scan" | "memory" | "object")
}

pub async fn run(shared: &Shared, db: u8, name: &str, args: &[Bytes]) -> CommandResult {
    match name {
        "randomkey" => Ok(random_key(shared, db)),
        "keys" => Ok(Reply::Array(
            matching_keys(shared, db, &args[1], Bound::Unbounded, usize::MAX)
                .0
                .into_iter()
                .map(Reply::Bulk)
                .collect(),
        )),
        "scan" => scan(shared, db, args),
        "memory" => memory(shared, db, args),
        "object" => object(shared, db, args),
        _ => Err(Reply::err(format!("command '{name}' is not implemented"))),
    }
}

/// MEMORY USAGE key [SAMPLES n]: an estimate of the key's RAM in bytes
/// (null for a missing key); SAMPLES is accepted and has nothing to sample.
/// MEMORY STATS, DOCTOR and MALLOC-STATS answer from what the kernel counts
/// for the process and what its allocator counts
/// ([`super::server::process_memory`]); without a registered allocator
/// (`crate::allocator`) the figures Redis takes from it (allocated against
/// resident, fragmentation) are left out rather than made up. PURGE is
/// accepted: jemalloc returns freed pages to the system by itself.
fn memory(shared: &Shared, db: u8, args: &[Bytes]) -> CommandResult {
    let sub = &args[1];
    match args.len() {
        2 if is(sub, "help") => {
            return Ok(help_reply(&[
                "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "DOCTOR",
                "    Return memory problems reports.",
                "MALLOC-STATS",
                "    Return the allocator's own statistics report.",
                "PURGE",
                "    Accepted; the allocator hands freed memory back to the system by itself.",
                "STATS",
                "    Return information about the memory usage of the server.",
                "USAGE <key> [SAMPLES <count>]",
                "    Return memory in bytes used by <key> and its value (an estimate).",
                "HELP",
                "    Print this help.",
            ]));
        }
        2 if is(sub, "stats") => return Ok(memory_stats(shared)),
        2 if is(sub, "doctor") => return Ok(Reply::Verbatim(memory_doctor(shared))),
        2 if is(sub, "malloc-stats") => {
            let report = crate::allocator::registered().and_then(|allocator| allocator.report());
            return Ok(Reply::Verbatim(report.unwrap_or_else(|| {
                "Stats not supported for the current allocator".to_string()
            })));
        }
        2 if is(sub, "purge") => return Ok(Reply::ok()),
        _ if is(sub, "usage") => {}
        _ => return Err(unknown_subcommand_or_arity(sub, "MEMORY")),
    }
    let Some(key) = args.get(2) else {
        return Err(super::wrong_arity("memory|usage"));
    };
    match &args[3..] {
        [] => {}
        [word, count] if is(word, "samples") => {
            if integer_arg(count)? < 0 {
                return Err(syntax_error());
            }
        }
        _ => return Err(syntax_error()),
    }
    let entry = shared
        .store
        .get_entries(db, std::slice::from_ref(key))
        .pop()
        .flatten();
    Ok(entry.map_or(Reply::Null, |entry| {
        Reply::Integer(entry.memory_usage(key.len()) as i64)
    }))
}

/// MEMORY STATS: Redis's fields that walrus can fill with real values,
/// under Redis's names, in Redis's order.
fn memory_stats(shared: &Shared) -> Reply {
    let memory = super::server::process_memory();
    let (used, peak) = (memory.used(), memory.used_peak());
    let keys: usize = (0..crate::storage::snapshot::DATABASES)
        .map(|db| shared.store.live_len(db))
        .sum();
    let dataset = shared.store.data_bytes();
    let field = |name: &'static str, value: Reply| (Reply::text(name), value);
    let bytes = |count: u64| Reply::Integer(i64::try_from(count).unwrap_or(i64::MAX));
    let mut fields = vec![
        field("peak.allocated", bytes(peak)),
        field("total.allocated", bytes(used)),
        // A cluster member keeps its recent log entries in memory for
        // followers to catch up from, as Redis keeps its backlog.
        field(
            "replication.backlog",
            bytes(
                shared
                    .node
                    .cluster()
                    .map_or(0, |cluster| cluster.status().log_bytes_in_memory),
            ),
        ),
        field("clients.normal", bytes(shared.clients.buffer_bytes())),
        field("lua.caches", Reply::Integer(0)),
        field("functions.caches", Reply::Integer(0)),
        field("keys.count", bytes(keys as u64)),
        field("dataset.bytes", bytes(dataset)),
        field(
            "dataset.percentage",
            Reply::Double(super::server::percent(dataset, used)),
        ),
        field(
            "peak.percentage",
            Reply::Double(super::server::percent(used, peak)),
        ),
    ];
    if let (Some(stats), Some(figures)) = (memory.allocator, memory.fragmentation()) {
        let signed = Reply::Integer;
        fields.extend([
            field("allocator.allocated", bytes(stats.allocated)),
            field("allocator.active", bytes(stats.active)),
            field("allocator.resident", bytes(stats.resident)),
            field(
                "allocator-fragmentation.ratio",
                Reply::Double(figures.allocator_ratio),
            ),
            field(
                "allocator-fragmentation.bytes",
                signed(figures.allocator_bytes),
            ),
            field(
                "allocator.rss-ratio",
                Reply::Double(figures.allocator_rss_ratio),
            ),
            field("allocator.rss-bytes", signed(figures.allocator_rss_bytes)),
            field(
                "rss-overhead.ratio",
                Reply::Double(figures.rss_overhead_ratio),
            ),
            field("rss-overhead.bytes", signed(figures.rss_overhead_bytes)),
            field("fragmentation", Reply::Double(figures.total_ratio)),
            field("fragmentation.bytes", signed(figures.total_bytes)),
        ]);
    }
    Reply::Map(fields)
}

/// MEMORY DOCTOR: what the process's memory figures show, in a few lines.
fn memory_doctor(shared: &Shared) -> String {
    use super::server::human_bytes;
    let memory = super::server::process_memory();
    if memory.resident == 0 {
        return "No memory report: this system does not show the process's memory.\n".into();
    }
    let dataset = shared.store.data_bytes();
    let mut report = format!(
        "Resident: {}, peak {}; keys and values: {}.\n",
        human_bytes(memory.resident),
        human_bytes(memory.peak),
        human_bytes(dataset)
    );
    let mut problems = false;
    if memory.peak > memory.resident.saturating_mul(3) / 2 {
        problems = true;
        report.push_str(
            "The peak is over 1.5 times the memory in use now: memory freed since (deleted \
             keys, a finished snapshot, closed clients) stays with the allocator for reuse.\n",
        );
    }
    // Redis's own thresholds: a few MiB of gaps are normal at any size.
    if let (Some(stats), Some(figures)) = (memory.allocator, memory.fragmentation())
        && figures.allocator_ratio > 1.1
        && figures.allocator_bytes > 10 << 20
    {
        problems = true;
        report.push_str(&format!(
            "The allocator's pages hold {} in gaps between {} allocated (ratio {:.2}): \
             values of mixed sizes, many of them freed.\n",
            human_bytes(stats.active.saturating_sub(stats.allocated)),
            human_bytes(stats.allocated),
            figures.allocator_ratio
        ));
    }
    if !problems {
        report.push_str("No memory problem found.\n");
    }
    report
}

/// OBJECT ENCODING|REFCOUNT|IDLETIME|FREQ key, and HELP. Every walrus value
/// is a string, encoded as Redis would name it; nothing is shared, so the
/// count is 1; IDLETIME is the seconds since the key was last read or
/// written on this node ([`crate::store::AccessTime`]); FREQ answers with
/// Redis's own words, as a server without an LFU policy does. OBJECT itself
/// leaves the access time alone.
fn object(shared: &Shared, db: u8, args: &[Bytes]) -> CommandResult {
    if is(&args[1], "help") && args.len() == 2 {
        return Ok(help_reply(&[
            "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "ENCODING <key>",
            "    Return the kind of internal representation used in order to store the value",
            "    associated with a <key>.",
            "REFCOUNT <key>",
            "    Return the number of references of the value associated with the specified",
            "    <key> (always 1 in walrus).",
            "IDLETIME <key>",
            "    Return the idle time of the key, that is the approximated number of",
            "    seconds elapsed since the last access to the key.",
            "FREQ <key>",
            "    Return the access frequency index of the key <key>.",
            "HELP",
            "    Print this help.",
        ]));
    }
    let subcommand = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    let known = ["encoding", "refcount", "idletime", "freq"].contains(&subcommand.as_str());
    let (true, [_, _, key]) = (known, args) else {
        return Err(unknown_subcommand_or_arity(&args[1], "OBJECT"));
    };
    let Some(entry) = shared
        .store
        .get_entries(db, std::slice::from_ref(key))
        .pop()
        .flatten()
    else {
        return Ok(Reply::Null);
    };
    match subcommand.as_str() {
        "encoding" if shared.store.state().read().is_raw_string(db, key) => Ok(Reply::text("raw")),
        "encoding" => Ok(Reply::text(string_encoding(&entry.value))),
        "refcount" => Ok(Reply::Integer(1)),
        "idletime" => Ok(Reply::Integer(
            entry.accessed.idle_seconds(crate::store::now_ms()) as i64,
        )),
        _ => Err(Reply::err(
            "An LFU maxmemory policy is not selected, access frequency not tracked. Please \
             note that when switching between policies at runtime LRU and LFU data will take \
             some time to adjust.",
        )),
    }
}

/// What Redis calls a string with these bytes when SET stored it: `int` for
/// the canonical text of a 64-bit integer, `embstr` up to 44 bytes, `raw`
/// beyond (APPEND and SETRANGE make any value `raw`: the state notes those).
fn string_encoding(value: &[u8]) -> &'static str {
    let canonical_integer = value.len() <= 20
        && std::str::from_utf8(value)
            .ok()
            .and_then(|text| text.parse::<i64>().ok())
            .is_some_and(|number| number.to_string().as_bytes() == value);
    if canonical_integer {
        "int"
    } else if value.len() <= 44 {
        "embstr"
    } else {
        "raw"
    }
}

/// RANDOMKEY: one of the first [`RANDOM_WINDOW`] live keys at or after a
/// random point of the hash order SCAN walks (wrapping around once), chosen
/// uniformly. A key's chance from the random point alone is the width of the
/// gap before its hash, which varies a lot (of `bar` and `foo`, `foo` 87 % of
/// the time; keys that differ only in their last bytes, `k1`…`k99`, bunch
/// together, since SCAN's FNV-1a mixes its top bits little); choosing among
/// a window of keys evens that out, and makes the choice exactly uniform
/// when a database has no more keys than the window.
fn random_key(shared: &Shared, db: u8) -> Reply {
    let start: u64 = rand::random();
    let mut window: Vec<Bytes> = Vec::with_capacity(RANDOM_WINDOW);
    let mut cursor = start;
    let mut wrapped = false;
    while window.len() < RANDOM_WINDOW {
        let room = RANDOM_WINDOW - window.len();
        let (keys, next) = shared.store.scan(db, cursor, room, &|_| true);
        for key in keys {
            // After wrapping, stop at the keys already taken.
            if wrapped && crate::store::scan_hash(&key) >= start {
                return pick(window);
            }
            window.push(key);
        }
        match (next, wrapped) {
            (0, true) => break,
            (0, false) if start == 0 => break,
            (0, false) => {
                wrapped = true;
                cursor = 0;
            }
            (next, _) => cursor = next,
        }
    }
    pick(window)
}

/// How many keys RANDOMKEY chooses among.
const RANDOM_WINDOW: usize = 128;

fn pick(mut keys: Vec<Bytes>) -> Reply {
    if keys.is_empty() {
        return Reply::Null;
    }
    let chosen = rand::random_range(0..keys.len());
    Reply::Bulk(keys.swap_remove(chosen))
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
    db: u8,
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
        let page = shared.store.range(db, lower, prefix, page_size);
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

/// SCAN: the cursor is a position in the store's hash order (see
/// `State::scan`), so it needs no memory here and works on any connection
/// and after a restart.
fn scan(shared: &Shared, db: u8, args: &[Bytes]) -> CommandResult {
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
    let (keys, next) = shared.store.scan(db, cursor, count, &|key| {
        strings_only && glob_match(pattern, key)
    });
    Ok(scan_reply(next, keys))
}

fn scan_reply(cursor: u64, keys: Vec<Bytes>) -> Reply {
    Reply::Array(vec![
        Reply::text(cursor.to_string()),
        Reply::Array(keys.into_iter().map(Reply::Bulk).collect()),
    ])
}
