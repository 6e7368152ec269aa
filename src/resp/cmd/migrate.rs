//! MIGRATE: moves keys to another server that speaks RESP (a Redis, or
//! another walrus) the way Redis does: each key's value as a DUMP payload in
//! a RESTORE sent to the target, then the key deleted here unless COPY.
//! `redis-cli --cluster import` and other tools move data with it.
//!
//! Redis runs MIGRATE on its one thread, so nothing changes a key between
//! its dump and its deletion. Here the keys are read at one instant and,
//! once the target has taken them, each is deleted only if it is still the
//! entry that was sent (a guard on its revision): a key written meanwhile
//! keeps its new value here, and the target holds the value it was sent.
//! The connection is plain TCP, opened for the one command (Redis caches
//! it for ten seconds).

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::super::Shared;
use super::super::frame::Reply;
use super::CommandResult;
use super::util::{integer_arg, is, syntax_error};
use crate::store::dump_payload;
use crate::store::redis_op::{RedisCommand, RedisOp};
use crate::store::{Command, Entry, Guard};

pub fn handles(name: &str) -> bool {
    name == "migrate"
}

/// `MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw | AUTH2
/// user pw] [KEYS key …]`, parsed.
#[derive(Debug, PartialEq)]
struct Migration {
    host: String,
    port: u16,
    db: i64,
    timeout: Duration,
    copy: bool,
    replace: bool,
    /// The target's user (AUTH2) and password.
    auth: Option<(Option<Bytes>, Bytes)>,
    keys: Vec<Bytes>,
}

fn parse(args: &[Bytes]) -> Result<Migration, Reply> {
    let mut migration = Migration {
        host: String::from_utf8_lossy(&args[1]).into_owned(),
        port: 0,
        db: 0,
        timeout: Duration::ZERO,
        copy: false,
        replace: false,
        auth: None,
        keys: vec![args[3].clone()],
    };
    let mut index = 6;
    while index < args.len() {
        let word = &args[index];
        let more = args.len() - 1 - index;
        if is(word, "copy") {
            migration.copy = true;
        } else if is(word, "replace") {
            migration.replace = true;
        } else if is(word, "auth") && more >= 1 {
            migration.auth = Some((None, args[index + 1].clone()));
            index += 1;
        } else if is(word, "auth2") && more >= 2 {
            migration.auth = Some((Some(args[index + 1].clone()), args[index + 2].clone()));
            index += 2;
        } else if is(word, "keys") {
            if !args[3].is_empty() {
                return Err(Reply::err(
                    "When using MIGRATE KEYS option, the key argument must be set to the empty string",
                ));
            }
            migration.keys = args[index + 1..].to_vec();
            break;
        } else {
            return Err(syntax_error());
        }
        index += 1;
    }
    let timeout_ms = integer_arg(&args[5])?;
    migration.db = integer_arg(&args[4])?;
    // As in Redis: no timeout means a second.
    migration.timeout = Duration::from_millis(match timeout_ms {
        ms if ms <= 0 => 1000,
        ms => ms as u64,
    });
    migration.port = std::str::from_utf8(&args[2])
        .ok()
        .and_then(|port| port.parse().ok())
        .ok_or_else(|| Reply::err("Invalid TCP port specified"))?;
    Ok(migration)
}

pub async fn run(shared: &Shared, db: u8, args: &[Bytes]) -> CommandResult {
    let migration = parse(args)?;
    let now = crate::store::now_ms();
    let entries = shared.store.get_entries(db, &migration.keys);
    let found: Vec<(Bytes, Entry)> = migration
        .keys
        .iter()
        .zip(entries)
        .filter_map(|(key, entry)| Some((key.clone(), entry?)))
        .collect();
    if found.is_empty() {
        return Ok(Reply::Simple("NOKEY"));
    }
    let mut requests = Vec::new();
    let mut expected = 0;
    if let Some((user, password)) = &migration.auth {
        let mut auth: Vec<&[u8]> = vec![b"AUTH"];
        auth.extend(user.as_deref());
        auth.push(password);
        encode(&mut requests, &auth);
        expected += 1;
    }
    let target_db = migration.db.to_string();
    encode(&mut requests, &[b"SELECT", target_db.as_bytes()]);
    expected += 1;
    let setup = expected;
    for (key, entry) in &found {
        // Relative, as Redis sends it; at least 1 ms for a key that expires.
        let ttl = match entry.expires_at_ms {
            0 => 0,
            at => at.saturating_sub(now).max(1),
        };
        let (ttl, payload) = (ttl.to_string(), dump_payload::encode(&entry.value));
        let mut restore: Vec<&[u8]> = vec![b"RESTORE", key, ttl.as_bytes(), &payload];
        if migration.replace {
            restore.push(b"REPLACE");
        }
        encode(&mut requests, &restore);
        expected += 1;
    }
    let replies = exchange(&migration, &requests, expected).await?;
    let (setup_replies, restore_replies) = replies.split_at(setup);
    let setup_error = setup_replies.iter().find(|line| line.starts_with('-'));
    let mut first_error = setup_error.cloned();
    let mut migrated = Vec::new();
    for ((key, entry), reply) in found.iter().zip(restore_replies) {
        if reply.starts_with('-') {
            first_error.get_or_insert_with(|| reply.clone());
        } else if setup_error.is_none() {
            migrated.push((key, entry));
        }
    }
    if !migration.copy && !migrated.is_empty() {
        delete_unchanged(shared, db, &migrated).await?;
    }
    match first_error {
        Some(error) => Err(Reply::err(format!(
            "Target instance replied with error: {}",
            &error[1..]
        ))),
        None => Ok(Reply::ok()),
    }
}

/// Deletes each migrated key that still holds the entry sent, all in one
/// batch of writes (one sync).
async fn delete_unchanged(
    shared: &Shared,
    db: u8,
    migrated: &[(&Bytes, &Entry)],
) -> Result<(), Reply> {
    let commands = migrated
        .iter()
        .map(|(key, entry)| {
            Command::Redis(RedisCommand {
                db,
                guards: vec![((*key).clone(), Guard::ModRevision(entry.mod_revision))],
                ops: vec![RedisOp::Del {
                    keys: vec![(*key).clone()],
                }],
            })
        })
        .collect();
    for submission in shared.store.submit_all(commands) {
        submission.await?;
    }
    Ok(())
}

/// Sends `requests` to the target and reads `expected` one-line replies,
/// all within the command's timeout, failing with Redis's IOERR texts.
async fn exchange(
    migration: &Migration,
    requests: &[u8],
    expected: usize,
) -> Result<Vec<String>, Reply> {
    let io_error =
        |doing: &str| Reply::Error(format!("IOERR error or timeout {doing} target instance"));
    let address = (migration.host.as_str(), migration.port);
    let stream = match tokio::time::timeout(migration.timeout, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => stream,
        _ => {
            return Err(Reply::Error(
                "IOERR error or timeout connecting to the client".into(),
            ));
        }
    };
    let _ = stream.set_nodelay(true);
    let mut stream = BufReader::new(stream);
    let deadline = tokio::time::Instant::now() + migration.timeout;
    match tokio::time::timeout_at(deadline, stream.get_mut().write_all(requests)).await {
        Ok(Ok(())) => {}
        _ => return Err(io_error("writing to")),
    }
    let mut replies = Vec::with_capacity(expected);
    let mut line = Vec::new();
    while replies.len() < expected {
        line.clear();
        match tokio::time::timeout_at(deadline, read_reply_line(&mut stream, &mut line)).await {
            Ok(Ok(true)) => {}
            // Redis's own wording.
            _ => return Err(io_error("reading to")),
        }
        replies.push(String::from_utf8_lossy(&line).trim_end().to_string());
    }
    Ok(replies)
}

/// Longest reply line taken from the target: AUTH, SELECT and RESTORE
/// answer a status or an error, which are short.
const MAX_REPLY_LINE: u64 = 64 << 10;

/// Reads one reply line into `line`; false at the end of the stream.
async fn read_reply_line(
    stream: &mut BufReader<TcpStream>,
    line: &mut Vec<u8>,
) -> std::io::Result<bool> {
    use tokio::io::AsyncReadExt;
    let read = (&mut *stream)
        .take(MAX_REPLY_LINE)
        .read_until(b'\n', line)
        .await?;
    Ok(read > 0 && line.ends_with(b"\n"))
}

/// A request as a RESP array of bulk strings.
fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|word| Bytes::copy_from_slice(word.as_bytes()))
            .collect()
    }

    #[test]
    fn the_options_parse_as_redis_reads_them() {
        let parsed = parse(&args(&[
            "MIGRATE",
            "127.0.0.1",
            "6380",
            "",
            "3",
            "0",
            "COPY",
            "REPLACE",
            "AUTH2",
            "u",
            "p",
            "KEYS",
            "a",
            "b",
        ]))
        .expect("parses");
        assert_eq!(parsed.port, 6380);
        assert_eq!(parsed.db, 3);
        assert_eq!(parsed.timeout, Duration::from_secs(1), "0 means a second");
        assert!(parsed.copy && parsed.replace);
        assert_eq!(
            parsed.auth,
            Some((Some(Bytes::from("u")), Bytes::from("p")))
        );
        assert_eq!(parsed.keys, args(&["a", "b"]));
        let single = parse(&args(&["MIGRATE", "h", "1", "k", "0", "500"])).expect("parses");
        assert_eq!(single.keys, args(&["k"]));
        assert_eq!(single.timeout, Duration::from_millis(500));
    }

    #[test]
    fn bad_options_are_refused_with_redis_errors() {
        let refusal = |words: &[&str]| parse(&args(words)).expect_err("refused");
        assert_eq!(
            refusal(&["MIGRATE", "h", "1", "k", "0", "5", "KEYS", "a"]),
            Reply::err(
                "When using MIGRATE KEYS option, the key argument must be set to the empty string"
            )
        );
        assert_eq!(
            refusal(&["MIGRATE", "h", "1", "k", "0", "5", "AUTH"]),
            syntax_error()
        );
        assert_eq!(
            refusal(&["MIGRATE", "h", "1", "k", "0", "5", "NOPE"]),
            syntax_error()
        );
        assert_eq!(
            refusal(&["MIGRATE", "h", "1", "k", "x", "5"]),
            Reply::err("value is not an integer or out of range")
        );
        assert_eq!(
            refusal(&["MIGRATE", "h", "99999", "k", "0", "5"]),
            Reply::err("Invalid TCP port specified")
        );
    }
}
