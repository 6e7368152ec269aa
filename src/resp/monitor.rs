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
//! Invariants: while no one monitors, feeding costs one relaxed load. Lines
//! go through each monitor's push queue ([`super::push`]), bounded in bytes:
//! a monitor that falls behind is cut off, never slowing the commands.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;

use super::push::{Outbox, Push};

/// The connections in MONITOR mode.
#[derive(Debug, Default)]
pub struct Monitors {
    /// `monitors.len()`, read without the lock.
    watching: AtomicUsize,
    monitors: Mutex<Vec<Outbox>>,
}

/// What a command's feed needs to know of the connection that ran it.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub db: u8,
    /// `ip:port`.
    pub addr: &'a str,
}

impl Monitors {
    /// Sends every command fed from now on to `outbox`.
    pub fn subscribe(&self, outbox: Outbox) {
        let mut monitors = self.monitors.lock();
        monitors.retain(|monitor| monitor.id != outbox.id);
        monitors.push(outbox);
        self.watching.store(monitors.len(), Ordering::Relaxed);
    }

    /// Stops feeding client `id` (RESET, or its connection closed).
    pub fn unsubscribe(&self, id: u64) {
        let mut monitors = self.monitors.lock();
        monitors.retain(|monitor| monitor.id != id);
        self.watching.store(monitors.len(), Ordering::Relaxed);
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
        let mut monitors = self.monitors.lock();
        monitors.retain(|monitor| monitor.offer(Push::Line(line.clone())));
        self.watching.store(monitors.len(), Ordering::Relaxed);
    }
}

/// Commands with Redis's `admin` flag (whole, or the subcommand): never shown.
fn is_admin(args: &[Bytes]) -> bool {
    let name = args[0].to_ascii_lowercase();
    let sub = || args.get(1).map(|sub| sub.to_ascii_lowercase());
    match name.as_slice() {
        b"config" | b"slowlog" | b"latency" | b"monitor" | b"save" | b"bgsave"
        | b"bgrewriteaof" | b"shutdown" | b"debug" | b"acl" => true,
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
    use crate::resp::frame::Protocol;
    use crate::resp::push;

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
        let (first, mut first_inbox) = push::queue(1, 1 << 20);
        let (second, mut second_inbox) = push::queue(2, 1 << 20);
        monitors.subscribe(first);
        monitors.subscribe(second);
        monitors.feed(ORIGIN, &args(&[b"config", b"get", b"*"]));
        monitors.feed(ORIGIN, &args(&[b"CLIENT", b"LIST"]));
        monitors.feed(ORIGIN, &args(&[b"client", b"setname", b"x"]));
        monitors.feed(ORIGIN, &args(&[b"get", b"k"]));
        for inbox in [&mut first_inbox, &mut second_inbox] {
            let mut lines = BytesMut::new();
            let none = std::collections::BTreeSet::new();
            let wanted = push::Wanted::all_of(&none, Protocol::Resp3);
            assert!(inbox.next(wanted, &mut lines).await);
            let text = String::from_utf8_lossy(&lines).into_owned();
            assert_eq!(text.lines().count(), 2, "{text}");
            assert!(text.contains("\"client\" \"setname\" \"x\"\r\n"), "{text}");
            assert!(text.ends_with("\"get\" \"k\"\r\n"), "{text}");
        }
        monitors.unsubscribe(1);
        assert!(monitors.is_watched());
        drop(second_inbox);
        monitors.feed(ORIGIN, &args(&[b"ping"]));
        assert!(!monitors.is_watched(), "a closed connection is dropped");
    }
}
