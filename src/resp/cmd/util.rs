//! What several command families share: Redis's number parsing and error
//! texts, op answers as replies, and glob patterns.

use super::super::frame::Reply;
use crate::error::Error;
use crate::store::number::parse_i64;
use crate::store::redis_op::{Answer, NOT_AN_INTEGER};

pub const SYNTAX_ERROR: &str = "syntax error";

/// An op's answer as the reply Redis gives.
pub fn answer_reply(answer: Answer) -> Reply {
    match answer {
        Answer::Ok => Reply::ok(),
        Answer::Null => Reply::Null,
        Answer::Integer(number) => Reply::Integer(number),
        Answer::Bulk(bytes) => Reply::Bulk(bytes),
        Answer::Type { exists: true } => Reply::Simple("string"),
        Answer::Type { exists: false } => Reply::Simple("none"),
        Answer::Array(items) => Reply::Array(items.into_iter().map(answer_reply).collect()),
        Answer::Error(text) => Reply::err(text),
    }
}

/// A store failure as a reply. The client cannot fix these, so they carry no
/// Redis error code of their own.
/// The one place store errors become RESP errors: a cluster without a leader
/// or quorum answers `-CLUSTERDOWN`, as Redis Cluster does.
pub fn store_error(error: &Error) -> Reply {
    match error {
        Error::Unavailable { reason } => Reply::Error(format!("CLUSTERDOWN {reason}")),
        // Redis answers MISCONF when it cannot persist a write.
        Error::NoSpace { .. } => Reply::Error(format!("MISCONF {error}")),
        other => Reply::err(other),
    }
}

pub fn not_an_integer() -> Reply {
    Reply::err(NOT_AN_INTEGER)
}

pub fn syntax_error() -> Reply {
    Reply::err(SYNTAX_ERROR)
}

/// An integer argument, or Redis's reply for one that is not.
pub fn integer_arg(bytes: &[u8]) -> Result<i64, Reply> {
    parse_i64(bytes).ok_or_else(not_an_integer)
}

/// How an expiry argument is given: seconds or milliseconds, relative to now
/// or as a Unix time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeArg {
    pub unit_ms: u64,
    pub absolute: bool,
}

impl TimeArg {
    /// `EX`, `PX`, `EXAT`, `PXAT` (any case); `None` for another word.
    pub fn from_option(word: &[u8]) -> Option<TimeArg> {
        let (unit_ms, absolute) = match word.to_ascii_lowercase().as_slice() {
            b"ex" => (1000, false),
            b"px" => (1, false),
            b"exat" => (1000, true),
            b"pxat" => (1, true),
            _ => return None,
        };
        Some(TimeArg { unit_ms, absolute })
    }

    /// The Unix time in milliseconds `value` names, for SET/GETEX/SETEX, which
    /// refuse zero and negative times.
    pub fn deadline_ms(self, value: &[u8], command: &str) -> Result<u64, Reply> {
        let value = integer_arg(value)?;
        let invalid = || Reply::err(format!("invalid expire time in '{command}' command"));
        if value <= 0 {
            return Err(invalid());
        }
        let base = if self.absolute {
            0
        } else {
            crate::store::now_ms()
        };
        (value as u64)
            .checked_mul(self.unit_ms)
            .and_then(|ms| ms.checked_add(base))
            .filter(|&ms| ms <= i64::MAX as u64)
            .ok_or_else(invalid)
    }
}

/// Whether `text` equals `word`, ignoring ASCII case.
pub fn is(text: &[u8], word: &str) -> bool {
    text.eq_ignore_ascii_case(word.as_bytes())
}

/// Redis's glob match (`stringmatchlen`): `*`, `?`, `[abc]`, `[^a-z]`, `\x`.
/// Backtracks only to the last `*`, so the time is at most pattern × text
/// (a recursive matcher is exponential on patterns like `*a*a*a*b`).
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if pattern.get(p) == Some(&b'*') {
            star = Some((p + 1, t));
            p += 1;
            continue;
        }
        if let Some(next) = match_one(pattern, p, text[t]) {
            p = next;
            t += 1;
            continue;
        }
        match star {
            Some((after_star, start)) => {
                p = after_star;
                t = start + 1;
                star = Some((after_star, start + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&byte| byte == b'*')
}

/// Matches the pattern token at `p` (not a `*`) against one byte; the index of
/// the next token if it matches.
fn match_one(pattern: &[u8], p: usize, byte: u8) -> Option<usize> {
    match pattern.get(p)? {
        b'?' => Some(p + 1),
        b'[' => {
            let class = &pattern[p + 1..];
            let (matched, after) = class_match(class, byte)?;
            matched.then_some(pattern.len() - after.len())
        }
        b'\\' if p + 1 < pattern.len() => (pattern[p + 1] == byte).then_some(p + 2),
        &literal => (literal == byte).then_some(p + 1),
    }
}

/// Matches `byte` against a `[...]` class whose body starts `class`; returns
/// whether it matched and the pattern after the closing `]`.
fn class_match(class: &[u8], byte: u8) -> Option<(bool, &[u8])> {
    let (negate, mut rest) = match class.split_first() {
        Some((b'^', rest)) => (true, rest),
        _ => (false, class),
    };
    let mut matched = false;
    loop {
        match rest {
            [] => return Some((matched != negate, rest)),
            [b']', after @ ..] => return Some((matched != negate, after)),
            [b'\\', escaped, after @ ..] => {
                matched |= *escaped == byte;
                rest = after;
            }
            [low, b'-', high, after @ ..] if *high != b']' => {
                let (low, high) = if low <= high {
                    (*low, *high)
                } else {
                    (*high, *low)
                };
                matched |= (low..=high).contains(&byte);
                rest = after;
            }
            [single, after @ ..] => {
                matched |= *single == byte;
                rest = after;
            }
        }
    }
}

/// A HELP reply: one status line per line of text.
pub fn help_reply(lines: &[&'static str]) -> Reply {
    Reply::Array(lines.iter().map(|&line| Reply::Simple(line)).collect())
}

/// Redis's reply to a subcommand it does not know, or one given the wrong
/// number of arguments.
pub fn unknown_subcommand_or_arity(subcommand: &[u8], command: &str) -> Reply {
    Reply::err(format!(
        "unknown subcommand or wrong number of arguments for '{}'. Try {command} HELP.",
        String::from_utf8_lossy(subcommand)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_redis() {
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"h?llo", b"hello"));
        assert!(glob_match(b"h*llo", b"heeeello"));
        assert!(glob_match(b"h[ae]llo", b"hallo"));
        assert!(!glob_match(b"h[^e]llo", b"hello"));
        assert!(glob_match(b"h[a-b]llo", b"hbllo"));
        assert!(glob_match(b"h\\*llo", b"h*llo"));
        assert!(!glob_match(b"h\\*llo", b"hello"));
        assert!(glob_match(b"user:*:name", b"user:42:name"));
        assert!(!glob_match(b"a*b", b"ac"));
        assert!(glob_match(b"a*b*c", b"axxbyyc"));
        let long = vec![b'a'; 4000];
        assert!(!glob_match(b"*a*a*a*a*a*a*a*a*b", &long));
    }
}
