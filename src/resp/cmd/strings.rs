//! The string command that is not an op of the state machine: LCS, which
//! reads two values and computes at the front end.

use bytes::Bytes;

use super::super::Shared;
use super::super::frame::Reply;
use super::CommandResult;
use super::util::{integer_arg, is, syntax_error};

/// The string commands the front end runs itself.
pub async fn run(shared: &Shared, db: u8, name: &str, args: &[Bytes]) -> CommandResult {
    match name {
        "lcs" => lcs(shared, db, args),
        _ => Err(Reply::err(format!("command '{name}' is not implemented"))),
    }
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

fn lcs(shared: &Shared, db: u8, args: &[Bytes]) -> CommandResult {
    let options = parse_lcs_options(args)?;
    // Both read at one revision, in the connection's database.
    let mut values = shared
        .store
        .get_entries(db, &args[1..3])
        .into_iter()
        .map(|entry| entry.map(|entry| entry.value).unwrap_or_default());
    let a = values.next().unwrap_or_default();
    let b = values.next().unwrap_or_default();
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
    // A map, as Redis replies it: a flat array in RESP2, `%` in RESP3.
    Ok(Reply::Map(vec![
        (Reply::text("matches"), Reply::Array(matches)),
        (Reply::text("len"), Reply::Integer(length)),
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
