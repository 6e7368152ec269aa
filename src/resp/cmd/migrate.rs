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
//! Connections are kept for the next MIGRATE to the same target, ten
//! seconds at most, as Redis keeps them (`resp/migrate_cache.rs`). They
//! speak TLS while `tls-cluster` is on, as a node with a
//! certificate starts: the target's certificate checked against
//! `--peer-cacert`, and the node's own presented, which a Redis target asks
//! for by default (`tls-auth-clients yes`).

use std::time::Duration;

use bytes::Bytes;

use super::super::Shared;
use super::super::frame::Reply;
use super::super::migrate_cache::{Kept, Target};
use super::CommandResult;
use super::util::{integer_arg, is, syntax_error};
use crate::client::resp::{RespConnection, RespValue};
use crate::store::dump_payload;
use crate::store::redis_op::{RedisCommand, RedisOp};
use crate::store::{Command, Entry, Guard};

pub fn handles(name: &str) -> bool {
    name == "migrate"
}

/// Where MIGRATE's keys are, as Redis finds them (its keys are "movable"):
/// the words after `KEYS` when the key argument is empty, else the key
/// argument.
pub fn key_positions(args: &[Bytes]) -> Vec<usize> {
    if args.len() < 6 {
        return Vec::new();
    }
    let mut index = 6;
    while args[3].is_empty() && index < args.len() {
        let word = &args[index];
        if is(word, "keys") {
            return (index + 1..args.len()).collect();
        }
        index += if is(word, "auth") {
            2
        } else if is(word, "auth2") {
            3
        } else {
            1
        };
    }
    vec![3]
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
    let restores: Vec<(String, Vec<u8>)> = found
        .iter()
        .map(|(_, entry)| {
            // Relative, as Redis sends it; at least 1 ms for a key that expires.
            let ttl = match entry.expires_at_ms {
                0 => 0,
                at => at.saturating_sub(now).max(1),
            };
            (ttl.to_string(), dump_payload::encode(&entry.value))
        })
        .collect();
    let restores: Vec<Vec<&[u8]>> = found
        .iter()
        .zip(&restores)
        .map(|((key, _), (ttl, payload))| {
            let mut restore: Vec<&[u8]> = vec![b"RESTORE", key, ttl.as_bytes(), payload];
            if migration.replace {
                restore.push(b"REPLACE");
            }
            restore
        })
        .collect();
    let tls = shared
        .migrate_over_tls
        .load(std::sync::atomic::Ordering::Relaxed)
        .then(|| shared.config.migrate_tls.clone())
        .flatten()
        .map(tokio_rustls::TlsConnector::from);
    let (replies, setup) = exchange(shared, &migration, tls.as_ref(), &restores).await?;
    let (setup_replies, restore_replies) = replies.split_at(setup);
    let error_text = |reply: &RespValue| match reply {
        RespValue::Error(text) => Some(text.clone()),
        _ => None,
    };
    let setup_error = setup_replies.iter().find_map(error_text);
    let mut first_error = setup_error.clone();
    let mut migrated = Vec::new();
    for ((key, entry), reply) in found.iter().zip(restore_replies) {
        if let Some(error) = error_text(reply) {
            first_error.get_or_insert(error);
        } else if setup_error.is_none() {
            migrated.push((key, entry));
        }
    }
    if !migration.copy && !migrated.is_empty() {
        delete_unchanged(shared, db, &migrated).await?;
    }
    match first_error {
        Some(error) => Err(Reply::err(format!(
            "Target instance replied with error: {error}"
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

/// Sends the target `AUTH` (if given), `SELECT` (unless the connection
/// has that database selected already) and `restores`, and reads a reply to
/// each, all within the command's timeout; returns the replies and how many
/// of them answer the setup. Fails with Redis's IOERR texts; a TLS handshake
/// that fails says why after them.
///
/// The connection comes from the cache when one is kept for the target,
/// and goes back to it once every reply is read. A kept connection the
/// target has closed meanwhile (it restarted, or dropped idle clients)
/// fails before the first reply: then, as Redis does, the command is sent
/// once more on a new connection. Nothing was taken from that send, since
/// the target answers commands in order and did not answer the first.
async fn exchange(
    shared: &Shared,
    migration: &Migration,
    tls: Option<&tokio_rustls::TlsConnector>,
    restores: &[Vec<&[u8]>],
) -> Result<(Vec<RespValue>, usize), Reply> {
    let io_error =
        |doing: &str| Reply::Error(format!("IOERR error or timeout {doing} target instance"));
    let address = match migration.host.contains(':') {
        true => format!("[{}]:{}", migration.host, migration.port),
        false => format!("{}:{}", migration.host, migration.port),
    };
    let target = Target {
        address,
        tls: tls.is_some(),
        authenticates: migration.auth.is_some(),
    };
    let deadline = tokio::time::Instant::now() + migration.timeout;
    let target_db = migration.db.to_string();
    let mut may_retry = true;
    loop {
        let (kept, from_cache) = match shared.migrate_cache.take(&target) {
            Some(kept) => (kept, true),
            None => (connect(&target.address, tls, deadline).await?, false),
        };
        let Kept { mut connection, db } = kept;
        let mut commands: Vec<Vec<&[u8]>> = Vec::new();
        if let Some((user, password)) = &migration.auth {
            let mut auth: Vec<&[u8]> = vec![b"AUTH"];
            auth.extend(user.as_deref());
            auth.push(password);
            commands.push(auth);
        }
        let select = db != Some(migration.db);
        if select {
            commands.push(vec![b"SELECT", target_db.as_bytes()]);
        }
        let setup = commands.len();
        commands.extend(restores.iter().cloned());
        let commands: Vec<&[&[u8]]> = commands.iter().map(Vec::as_slice).collect();
        match tokio::time::timeout_at(deadline, connection.send(&commands)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) if from_cache && std::mem::take(&mut may_retry) => continue,
            _ => return Err(io_error("writing to")),
        }
        let mut replies = match tokio::time::timeout_at(deadline, connection.receive(1)).await {
            Ok(Ok(first)) => first,
            Ok(Err(_)) if from_cache && std::mem::take(&mut may_retry) => continue,
            // Redis's own wording.
            _ => return Err(io_error("reading to")),
        };
        match tokio::time::timeout_at(deadline, connection.receive(commands.len() - 1)).await {
            Ok(Ok(rest)) => replies.extend(rest),
            _ => return Err(io_error("reading to")),
        }
        let db = match select {
            // SELECT is the last of the setup.
            true if matches!(replies[setup - 1], RespValue::Error(_)) => None,
            true => Some(migration.db),
            false => db,
        };
        shared.migrate_cache.put(target, Kept { connection, db });
        return Ok((replies, setup));
    }
}

/// Opens a connection to `address` by `deadline`.
async fn connect(
    address: &str,
    tls: Option<&tokio_rustls::TlsConnector>,
    deadline: tokio::time::Instant,
) -> Result<Kept, Reply> {
    let connecting = RespConnection::connect(address, None, tls);
    match tokio::time::timeout_at(deadline, connecting).await {
        Ok(Ok(connection)) => Ok(Kept {
            connection,
            db: None,
        }),
        Ok(Err(error)) if tls.is_some() && is_tls_failure(&error) => Err(Reply::Error(format!(
            "IOERR error or timeout connecting to the client (TLS: {error}; \
                 tls-cluster is on: the target must speak TLS with a certificate \
                 --peer-cacert trusts)"
        ))),
        _ => Err(Reply::Error(
            "IOERR error or timeout connecting to the client".into(),
        )),
    }
}

/// Whether connecting failed in the TLS handshake rather than the TCP
/// connection: rustls's error, or the peer closing mid-handshake (a plain
/// server that read the hello as a bad request).
fn is_tls_failure(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        || matches!(
            error.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::resp::test_args as args;

    #[test]
    fn the_keys_are_found_where_redis_finds_them() {
        let words = |list: &[&str]| key_positions(&args(list));
        assert_eq!(words(&["MIGRATE", "h", "1", "k", "0", "5"]), vec![3]);
        assert_eq!(
            words(&[
                "MIGRATE", "h", "1", "", "0", "5", "AUTH", "keys", "KEYS", "a", "b"
            ]),
            vec![9, 10],
            "a password that reads KEYS is a password"
        );
        assert_eq!(
            words(&[
                "MIGRATE", "h", "1", "", "0", "5", "AUTH2", "u", "keys", "KEYS", "a"
            ]),
            vec![10]
        );
        assert_eq!(
            words(&["MIGRATE", "h", "1", "k", "0", "5", "KEYS", "a"]),
            vec![3],
            "KEYS counts only with an empty key argument"
        );
        assert!(words(&["MIGRATE", "h"]).is_empty());
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
