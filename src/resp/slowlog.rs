//! The slow log: the latest commands that took longer than a threshold, as
//! `SLOWLOG GET` shows them.
//!
//! A command's time here is from when walrus read it off the connection to
//! when its reply was ready, so a write's time includes the sync that made
//! it durable and a pipelined command's the commands ahead of it in its
//! batch. (Redis counts only the time the command ran: its fsync happens
//! outside the command, walrus's before the reply.) A slow disk therefore
//! shows here, which is what an operator looking at `SLOWLOG` wants.
//!
//! Invariants: at most `max_len` entries, newest first; ids only grow and
//! are not reused after `SLOWLOG RESET`; arguments are trimmed as Redis
//! trims them (32 arguments, 128 bytes each), so one huge request cannot
//! make the log large.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;

/// Redis's defaults: log commands of 10 ms or more, keep 128.
pub const DEFAULT_SLOWER_THAN_MICROS: i64 = 10_000;
pub const DEFAULT_MAX_LEN: usize = 128;

/// Most arguments an entry keeps (the last kept says how many more there were).
const MAX_ARGS: usize = 32;
/// Longest argument an entry keeps.
const MAX_ARG_BYTES: usize = 128;

/// One slow command.
#[derive(Debug, Clone)]
pub struct SlowEntry {
    pub id: u64,
    /// Unix seconds when it was logged.
    pub logged_at: u64,
    pub micros: u64,
    pub args: Vec<Bytes>,
    pub client_addr: String,
    pub client_name: Bytes,
}

#[derive(Debug)]
pub struct SlowLog {
    /// Log a command that took at least this many microseconds; negative
    /// turns the log off, 0 logs every command (`slowlog-log-slower-than`).
    slower_than_micros: AtomicI64,
    /// Entries kept (`slowlog-max-len`).
    max_len: AtomicUsize,
    next_id: AtomicU64,
    entries: Mutex<VecDeque<SlowEntry>>,
}

impl Default for SlowLog {
    fn default() -> Self {
        SlowLog {
            slower_than_micros: AtomicI64::new(DEFAULT_SLOWER_THAN_MICROS),
            max_len: AtomicUsize::new(DEFAULT_MAX_LEN),
            next_id: AtomicU64::new(0),
            entries: Mutex::new(VecDeque::new()),
        }
    }
}

impl SlowLog {
    /// Whether a command that took `elapsed` belongs in the log: the one
    /// check every command pays, so no lock.
    pub fn is_slow(&self, elapsed: Duration) -> bool {
        let threshold = self.slower_than_micros.load(Ordering::Relaxed);
        threshold >= 0 && elapsed.as_micros() >= threshold as u128
    }

    /// Logs a command [`is_slow`](Self::is_slow) said is slow.
    pub fn push(&self, args: &[Bytes], elapsed: Duration, client_addr: &str, client_name: Bytes) {
        let max_len = self.max_len.load(Ordering::Relaxed);
        if max_len == 0 {
            return;
        }
        let entry = SlowEntry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            logged_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_secs()),
            micros: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            args: trimmed(args),
            client_addr: client_addr.to_string(),
            client_name,
        };
        let mut entries = self.entries.lock();
        entries.push_front(entry);
        entries.truncate(max_len);
    }

    /// The newest `count` entries (all for `None`), newest first.
    pub fn latest(&self, count: Option<usize>) -> Vec<SlowEntry> {
        let entries = self.entries.lock();
        let count = count.unwrap_or(entries.len());
        entries.iter().take(count).cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn reset(&self) {
        self.entries.lock().clear();
    }

    pub fn slower_than_micros(&self) -> i64 {
        self.slower_than_micros.load(Ordering::Relaxed)
    }

    pub fn set_slower_than_micros(&self, micros: i64) {
        self.slower_than_micros.store(micros, Ordering::Relaxed);
    }

    pub fn max_len(&self) -> usize {
        self.max_len.load(Ordering::Relaxed)
    }

    /// A shorter limit drops the oldest entries at once, as Redis does.
    pub fn set_max_len(&self, max_len: usize) {
        self.max_len.store(max_len, Ordering::Relaxed);
        self.entries.lock().truncate(max_len);
    }
}

/// Which arguments are passwords, never to be kept: all of AUTH's, the
/// two after HELLO's `AUTH`, and the rules of `ACL SETUSER` (as Redis
/// redacts them; walrus refuses SETUSER, but its rules may hold one).
fn is_secret(args: &[Bytes], position: usize) -> bool {
    let is = |arg: &Bytes, word: &str| arg.eq_ignore_ascii_case(word.as_bytes());
    match args.first() {
        Some(name) if is(name, "auth") => position > 0,
        Some(name) if is(name, "acl") => {
            position > 2 && args.get(1).is_some_and(|sub| is(sub, "setuser"))
        }
        Some(name) if is(name, "hello") => args
            .iter()
            .take(position)
            .skip(1)
            .rposition(|arg| is(arg, "auth"))
            .is_some_and(|auth| position - (auth + 1) <= 2),
        _ => false,
    }
}

/// The arguments as an entry keeps them: at most [`MAX_ARGS`] (the last
/// replaced by "... (N more arguments)"), each at most [`MAX_ARG_BYTES`]
/// (longer ones end "... (N more bytes)"), passwords as "(redacted)".
/// Copied, so an entry never holds on to a connection's read buffer.
fn trimmed(args: &[Bytes]) -> Vec<Bytes> {
    let kept = if args.len() > MAX_ARGS {
        MAX_ARGS - 1
    } else {
        args.len()
    };
    let mut out: Vec<Bytes> = args[..kept]
        .iter()
        .enumerate()
        .map(|(position, arg)| match arg.len() {
            _ if is_secret(args, position) => Bytes::from_static(b"(redacted)"),
            length if length > MAX_ARG_BYTES => {
                let mut text = arg[..MAX_ARG_BYTES].to_vec();
                text.extend_from_slice(
                    format!("... ({} more bytes)", length - MAX_ARG_BYTES).as_bytes(),
                );
                Bytes::from(text)
            }
            _ => Bytes::copy_from_slice(arg),
        })
        .collect();
    if args.len() > kept {
        out.push(Bytes::from(format!(
            "... ({} more arguments)",
            args.len() - kept
        )));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::resp::test_args as args;

    #[test]
    fn keeps_the_newest_entries_newest_first_with_growing_ids() {
        let log = SlowLog::default();
        log.set_max_len(2);
        for key in ["a", "b", "c"] {
            log.push(
                &args(&["get", key]),
                Duration::from_millis(20),
                "1.2.3.4:5",
                Bytes::new(),
            );
        }
        let latest = log.latest(None);
        let keys: Vec<&[u8]> = latest.iter().map(|entry| &entry.args[1][..]).collect();
        assert_eq!(keys, [&b"c"[..], b"b"]);
        assert_eq!(latest[0].id, 2);
        assert_eq!(latest[1].id, 1);
        assert_eq!(latest[0].micros, 20_000);
        assert_eq!(log.latest(Some(1)).len(), 1);
        log.reset();
        assert!(log.is_empty());
        log.push(&args(&["get", "d"]), Duration::ZERO, "", Bytes::new());
        assert_eq!(
            log.latest(None)[0].id,
            3,
            "ids are not reused after a reset"
        );
    }

    #[test]
    fn the_threshold_decides_what_is_slow() {
        let log = SlowLog::default();
        assert!(!log.is_slow(Duration::from_micros(9_999)));
        assert!(log.is_slow(Duration::from_micros(10_000)));
        log.set_slower_than_micros(0);
        assert!(log.is_slow(Duration::ZERO));
        log.set_slower_than_micros(-1);
        assert!(!log.is_slow(Duration::from_secs(60)));
    }

    #[test]
    fn passwords_are_never_kept() {
        assert_eq!(
            trimmed(&args(&["AUTH", "default", "secret"])),
            args(&["AUTH", "(redacted)", "(redacted)"])
        );
        assert_eq!(
            trimmed(&args(&[
                "hello", "3", "auth", "default", "secret", "setname", "x"
            ])),
            args(&[
                "hello",
                "3",
                "auth",
                "(redacted)",
                "(redacted)",
                "setname",
                "x"
            ])
        );
        assert_eq!(trimmed(&args(&["get", "auth"])), args(&["get", "auth"]));
        assert_eq!(
            trimmed(&args(&["acl", "setuser", "bob", "on", ">secret"])),
            args(&["acl", "setuser", "bob", "(redacted)", "(redacted)"])
        );
        assert_eq!(
            trimmed(&args(&["acl", "getuser", "bob"])),
            args(&["acl", "getuser", "bob"])
        );
    }

    #[test]
    fn long_requests_are_trimmed_as_redis_trims_them() {
        let many: Vec<Bytes> = (0..40).map(|n| Bytes::from(n.to_string())).collect();
        let kept = trimmed(&many);
        assert_eq!(kept.len(), 32);
        assert_eq!(&kept[31][..], b"... (9 more arguments)");
        let long = vec![Bytes::from(vec![b'x'; 200])];
        let kept = trimmed(&long);
        assert_eq!(kept[0].len(), 128 + "... (72 more bytes)".len());
        assert!(kept[0].ends_with(b"... (72 more bytes)"));
    }
}
