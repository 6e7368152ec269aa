//! MONITOR: one line for every command the server runs, sent to each
//! connection that asked, in Redis's format:
//! `+1700000000.123456 [0 127.0.0.1:50000] "set" "k" "v"`.
//!
//! A command is fed once it has run (a write once it is durable), as Redis
//! feeds after the call: a refused one (unknown, wrong arity, not signed in,
//! queued after MULTI) is not; EXEC feeds its commands, then itself.
//! Administrative commands (CONFIG, SLOWLOG, CLIENT LIST…, Redis's `admin`
//! flag) are never shown, and passwords (AUTH, HELLO … AUTH) are replaced by
//! `(redacted)`.
//!
//! Invariants: while no one monitors, feeding costs one relaxed load. Each
//! monitor's queue is bounded in bytes: a monitor that reads slower than the
//! server runs commands is cut off (its feed ends and its connection
//! closes) rather than slowing the commands or growing without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::mpsc;

/// Lines a monitor may have queued, in bytes, before it is cut off.
pub const MONITOR_QUEUE_LIMIT: usize = 32 << 20;

/// The connections in MONITOR mode.
#[derive(Debug, Default)]
pub struct Monitors {
    /// `sinks.len()`, read without the lock.
    watching: AtomicUsize,
    sinks: Mutex<Vec<Sink>>,
    queue_limit: Option<usize>,
}

#[derive(Debug)]
struct Sink {
    lines: mpsc::UnboundedSender<Bytes>,
    queued: Arc<AtomicUsize>,
}

/// One monitor's end: the lines fed since it subscribed, in order.
#[derive(Debug)]
pub struct MonitorFeed {
    lines: mpsc::UnboundedReceiver<Bytes>,
    queued: Arc<AtomicUsize>,
}

impl MonitorFeed {
    /// Waits for the next lines and takes every one queued, as one buffer;
    /// `None` once the feed was cut off.
    pub async fn next_lines(&mut self) -> Option<BytesMut> {
        let first = self.lines.recv().await?;
        let mut batch = BytesMut::from(&first[..]);
        let mut taken = first.len();
        while batch.len() < 1 << 20 {
            let Ok(line) = self.lines.try_recv() else {
                break;
            };
            taken += line.len();
            batch.extend_from_slice(&line);
        }
        self.queued.fetch_sub(taken, Ordering::Relaxed);
        Some(batch)
    }
}

/// What a command's feed needs to know of the connection that ran it.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub db: u8,
    /// `ip:port`.
    pub addr: &'a str,
}

impl Monitors {
    /// Monitors whose queues hold at most `limit` bytes (tests use a small one).
    pub fn with_queue_limit(limit: usize) -> Monitors {
        Monitors {
            queue_limit: Some(limit),
            ..Monitors::default()
        }
    }

    /// Starts a feed: every command fed from now on.
    pub fn subscribe(&self) -> MonitorFeed {
        let (sender, lines) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let mut sinks = self.sinks.lock();
        sinks.push(Sink {
            lines: sender,
            queued: queued.clone(),
        });
        self.watching.store(sinks.len(), Ordering::Relaxed);
        MonitorFeed { lines, queued }
    }

    pub fn is_watched(&self) -> bool {
        self.watching.load(Ordering::Relaxed) > 0
    }

    /// Shows a command that ran (`args`, its name first) to every monitor,
    /// unless it is one Redis never shows.
    pub fn feed(&self, origin: Origin<'_>, args: &[Bytes]) {
        if !self.is_watched() || args.is_empty() || is_admin(args) {
            return;
        }
        let line = format_line(SystemTime::now(), origin, args);
        let limit = self.queue_limit.unwrap_or(MONITOR_QUEUE_LIMIT);
        let mut sinks = self.sinks.lock();
        sinks.retain(|sink| {
            if sink.queued.load(Ordering::Relaxed) + line.len() > limit {
                tracing::warn!(
                    limit,
                    "a MONITOR client fell too far behind; closing its connection"
                );
                return false;
            }
            sink.queued.fetch_add(line.len(), Ordering::Relaxed);
            sink.lines.send(line.clone()).is_ok()
        });
        self.watching.store(sinks.len(), Ordering::Relaxed);
    }
}

/// Commands with Redis's `admin` flag (whole, or the subcommand): never shown.
fn is_admin(args: &[Bytes]) -> bool {
    let name = args[0].to_ascii_lowercase();
    let sub = || args.get(1).map(|sub| sub.to_ascii_lowercase());
    match name.as_slice() {
        b"config" | b"slowlog" | b"latency" | b"monitor" | b"save" | b"bgsave"
        | b"bgrewriteaof" | b"shutdown" | b"debug" => true,
        b"client" => sub().is_some_and(|sub| {
            matches!(
                sub.as_slice(),
                b"kill" | b"list" | b"no-evict" | b"pause" | b"unblock" | b"unpause"
            )
        }),
        _ => false,
    }
}

/// Whether argument `index` is a password, shown as `(redacted)`: every
/// argument of AUTH, and the two after HELLO's AUTH.
fn redacted(args: &[Bytes]) -> Vec<bool> {
    let mut hidden = vec![false; args.len()];
    if args[0].eq_ignore_ascii_case(b"auth") {
        hidden.iter_mut().skip(1).for_each(|hide| *hide = true);
    } else if args[0].eq_ignore_ascii_case(b"hello") {
        let mut index = 2;
        while index < args.len() {
            if args[index].eq_ignore_ascii_case(b"auth") && index + 2 < args.len() {
                hidden[index + 1] = true;
                hidden[index + 2] = true;
                index += 3;
            } else {
                index += 1;
            }
        }
    }
    hidden
}

/// One monitor line, `\r\n` included.
fn format_line(now: SystemTime, origin: Origin<'_>, args: &[Bytes]) -> Bytes {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let size: usize = args.iter().map(|arg| arg.len() + 3).sum();
    let mut line = BytesMut::with_capacity(48 + origin.addr.len() + size);
    line.put_slice(
        format!(
            "+{}.{:06} [{} {}] ",
            since_epoch.as_secs(),
            since_epoch.subsec_micros(),
            origin.db,
            origin.addr
        )
        .as_bytes(),
    );
    for (index, (arg, hide)) in args.iter().zip(redacted(args)).enumerate() {
        if index > 0 {
            line.put_u8(b' ');
        }
        match hide {
            true => line.put_slice(b"\"(redacted)\""),
            false => quote(arg, &mut line),
        }
    }
    line.put_slice(b"\r\n");
    line.freeze()
}

/// `bytes` quoted as Redis's `sdscatrepr` quotes them: printable ASCII as
/// is, `"` and `\` escaped, the usual control escapes, `\xHH` for the rest.
fn quote(bytes: &[u8], out: &mut BytesMut) {
    out.put_u8(b'"');
    for &byte in bytes {
        match byte {
            b'\\' | b'"' => out.put_slice(&[b'\\', byte]),
            b'\n' => out.put_slice(b"\\n"),
            b'\r' => out.put_slice(b"\\r"),
            b'\t' => out.put_slice(b"\\t"),
            0x07 => out.put_slice(b"\\a"),
            0x08 => out.put_slice(b"\\b"),
            0x20..=0x7e => out.put_u8(byte),
            _ => out.put_slice(format!("\\x{byte:02x}").as_bytes()),
        }
    }
    out.put_u8(b'"');
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn args(words: &[&[u8]]) -> Vec<Bytes> {
        words
            .iter()
            .map(|word| Bytes::copy_from_slice(word))
            .collect()
    }

    const ORIGIN: Origin<'static> = Origin {
        db: 3,
        addr: "127.0.0.1:5000",
    };

    #[test]
    fn a_line_has_the_time_the_database_the_client_and_the_quoted_arguments() {
        let at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_042);
        let line = format_line(at, ORIGIN, &args(&[b"SET", b"k \"q\"\\", b"a\r\n\x01\xff"]));
        assert_eq!(
            &line[..],
            &b"+1700000000.000042 [3 127.0.0.1:5000] \"SET\" \"k \\\"q\\\"\\\\\" \
               \"a\\r\\n\\x01\\xff\"\r\n"[..]
        );
    }

    #[test]
    fn passwords_are_redacted() {
        let line = format_line(UNIX_EPOCH, ORIGIN, &args(&[b"auth", b"user", b"secret"]));
        assert!(line.ends_with(b"\"auth\" \"(redacted)\" \"(redacted)\"\r\n"));
        let hello = args(&[b"HELLO", b"3", b"SETNAME", b"n", b"AUTH", b"u", b"p"]);
        let line = format_line(UNIX_EPOCH, ORIGIN, &hello);
        assert!(line.ends_with(
            b"\"HELLO\" \"3\" \"SETNAME\" \"n\" \"AUTH\" \"(redacted)\" \"(redacted)\"\r\n"
        ));
    }

    #[tokio::test]
    async fn feeds_every_monitor_but_never_admin_commands() {
        let monitors = Monitors::default();
        assert!(!monitors.is_watched());
        let mut first = monitors.subscribe();
        let mut second = monitors.subscribe();
        monitors.feed(ORIGIN, &args(&[b"config", b"get", b"*"]));
        monitors.feed(ORIGIN, &args(&[b"CLIENT", b"LIST"]));
        monitors.feed(ORIGIN, &args(&[b"client", b"setname", b"x"]));
        monitors.feed(ORIGIN, &args(&[b"get", b"k"]));
        for feed in [&mut first, &mut second] {
            let lines = feed.next_lines().await.expect("lines");
            let text = String::from_utf8_lossy(&lines).into_owned();
            assert_eq!(text.lines().count(), 2, "{text}");
            assert!(text.contains("\"client\" \"setname\" \"x\"\r\n"), "{text}");
            assert!(text.ends_with("\"get\" \"k\"\r\n"), "{text}");
            assert_eq!(feed.queued.load(Ordering::Relaxed), 0);
        }
        drop(first);
        monitors.feed(ORIGIN, &args(&[b"ping"]));
        assert!(monitors.is_watched());
        drop(second);
        monitors.feed(ORIGIN, &args(&[b"ping"]));
        assert!(!monitors.is_watched(), "a closed feed is dropped");
    }

    #[tokio::test]
    async fn a_monitor_that_falls_behind_is_cut_off_after_what_it_was_sent() {
        let monitors = Monitors::with_queue_limit(200);
        let mut slow = monitors.subscribe();
        for _ in 0..10 {
            monitors.feed(ORIGIN, &args(&[b"set", b"key", b"value"]));
        }
        assert!(!monitors.is_watched());
        let lines = slow.next_lines().await.expect("the lines before the cut");
        assert!(lines.len() <= 200 && !lines.is_empty());
        assert!(slow.next_lines().await.is_none(), "then the feed ends");
    }
}
