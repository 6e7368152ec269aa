//! What several command families share: Redis's number parsing and error
//! texts, and op answers as replies.

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
        Answer::BusyKey => Reply::Error("BUSYKEY Target key name already exists.".into()),
    }
}

/// The one place store errors become RESP errors. A cluster without a leader
/// or quorum answers `-CLUSTERDOWN`, as Redis Cluster does, and so does a write
/// the cluster took but could not confirm (its text says the outcome is
/// unknown); a full disk answers `-MISCONF`, as Redis does when it cannot
/// persist. The rest carry no Redis error code: the client cannot fix them.
pub fn store_error(error: &Error) -> Reply {
    match error {
        Error::Unavailable { reason } => Reply::Error(format!("CLUSTERDOWN {reason}")),
        Error::OutcomeUnknown { .. } => Reply::Error(format!(
            "CLUSTERDOWN {error}; it may have been applied, or may still be"
        )),
        // Redis answers MISCONF when it cannot persist a write.
        Error::NoSpace { .. } | Error::DiskLow { .. } => Reply::Error(format!("MISCONF {error}")),
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

/// A HELP reply: one status line per line of text.
pub fn help_reply(lines: &[&'static str]) -> Reply {
    Reply::Array(lines.iter().map(|&line| Reply::Simple(line)).collect())
}

/// Redis 7's reply to a subcommand of `command` it does not know.
pub fn unknown_subcommand(subcommand: &[u8], command: &str) -> Reply {
    Reply::err(format!(
        "unknown subcommand '{}'. Try {command} HELP.",
        String::from_utf8_lossy(subcommand)
    ))
}

/// Redis's reply when a subcommand's arguments do not fit it (the
/// dispatcher has already refused an unknown subcommand, and a fixed arity
/// not met: `subcommands::check_subcommand`).
pub fn unknown_subcommand_or_arity(subcommand: &[u8], command: &str) -> Reply {
    Reply::err(format!(
        "unknown subcommand or wrong number of arguments for '{}'. Try {command} HELP.",
        String::from_utf8_lossy(subcommand)
    ))
}
