//! MULTI/EXEC/WATCH, read-modify-write commands as state-machine ops,
//! stateless SCAN and the bit commands, against the real binary.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::thread;

use redis::Commands;

use crate::resp_client::{RawResp, err};
use crate::server::Server;

#[test]
fn exec_runs_the_queue_in_order_and_reads_see_earlier_writes() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    assert_eq!(raw.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(raw.call(&["SET", "a", "1"]), "+QUEUED\r\n");
    assert_eq!(raw.call(&["INCRBY", "a", "41"]), "+QUEUED\r\n");
    assert_eq!(raw.call(&["GET", "a"]), "+QUEUED\r\n");
    assert_eq!(raw.call(&["PING"]), "+QUEUED\r\n");
    assert_eq!(raw.call(&["APPEND", "a", "!"]), "+QUEUED\r\n");
    assert_eq!(
        raw.call(&["EXEC"]),
        "*5\r\n+OK\r\n:42\r\n$2\r\n42\r\n+PONG\r\n:3\r\n"
    );
    assert_eq!(raw.call(&["GET", "a"]), "$3\r\n42!\r\n");
    // A runtime error is that command's reply; the others still apply.
    raw.call(&["MULTI"]);
    raw.call(&["INCR", "a"]);
    raw.call(&["SET", "b", "x"]);
    assert_eq!(
        raw.call(&["EXEC"]),
        format!(
            "*2\r\n{}+OK\r\n",
            err("value is not an integer or out of range")
        )
    );
    assert_eq!(raw.call(&["GET", "b"]), "$1\r\nx\r\n");
    assert_eq!(raw.call(&["EXEC"]), err("EXEC without MULTI"));
    assert_eq!(raw.call(&["DISCARD"]), err("DISCARD without MULTI"));
    // Queued commands count in commandstats when EXEC runs them, not when
    // they are queued: a discarded INCRBY never ran.
    raw.call(&["MULTI"]);
    raw.call(&["INCRBY", "a", "1"]);
    raw.call(&["DISCARD"]);
    let stats = raw.call(&["INFO", "commandstats"]);
    for expected in [
        "cmdstat_incrby:calls=1,",
        "cmdstat_incr:calls=1,",
        "cmdstat_set:calls=2,",
        "cmdstat_exec:calls=3,",
    ] {
        assert!(stats.contains(expected), "{expected} in {stats}");
    }
    let incr = stats
        .lines()
        .find(|line| line.starts_with("cmdstat_incr:"))
        .expect("INCR's line");
    assert!(
        incr.ends_with(",failed_calls=1"),
        "the INCR of a word failed: {incr}"
    );
}

#[test]
fn a_queuing_error_or_discard_leaves_no_trace() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    raw.call(&["MULTI"]);
    assert_eq!(raw.call(&["SET", "queued", "1"]), "+QUEUED\r\n");
    assert_eq!(
        raw.call(&["SET", "only-a-key"]),
        err("wrong number of arguments for 'set' command")
    );
    assert!(
        raw.call(&["NOSUCHCOMMAND"])
            .starts_with("-ERR unknown command")
    );
    assert_eq!(raw.call(&["MULTI"]), err("MULTI calls can not be nested"));
    assert_eq!(
        raw.call(&["WATCH", "x"]),
        err("WATCH inside MULTI is not allowed")
    );
    assert_eq!(
        raw.call(&["EXEC"]),
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    assert_eq!(raw.call(&["EXISTS", "queued"]), ":0\r\n");
    raw.call(&["MULTI"]);
    raw.call(&["SET", "discarded", "1"]);
    assert_eq!(raw.call(&["DISCARD"]), "+OK\r\n");
    assert_eq!(raw.call(&["EXISTS", "discarded"]), ":0\r\n");
    // A connection that drops mid-transaction applies nothing either.
    let mut dropped = RawResp::connect(server.resp_address());
    dropped.call(&["MULTI"]);
    dropped.call(&["SET", "dropped", "1"]);
    drop(dropped);
    assert_eq!(raw.call(&["EXISTS", "dropped"]), ":0\r\n");
}

/// Redis checks a command's arity before the command itself runs, so a
/// WATCH or MULTI of the wrong arity inside MULTI fails the transaction
/// (where a well-formed one is refused and leaves it standing), and an EXEC
/// refused before running ends the transaction with the reason.
#[test]
fn a_refusal_before_a_command_runs_fails_the_transaction_as_in_redis() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    for malformed in [&["WATCH"][..], &["MULTI", "x"]] {
        raw.call(&["MULTI"]);
        assert_eq!(raw.call(&["SET", "m", "1"]), "+QUEUED\r\n");
        let name = malformed[0].to_ascii_lowercase();
        assert_eq!(
            raw.call(malformed),
            err(&format!("wrong number of arguments for '{name}' command"))
        );
        assert_eq!(
            raw.call(&["EXEC"]),
            "-EXECABORT Transaction discarded because of previous errors.\r\n"
        );
        assert_eq!(raw.call(&["EXISTS", "m"]), ":0\r\n");
    }
    // EXEC with an argument: refused, and the transaction is gone.
    raw.call(&["MULTI"]);
    raw.call(&["SET", "m", "1"]);
    assert_eq!(
        raw.call(&["EXEC", "x"]),
        "-EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' \
         command\r\n"
    );
    assert_eq!(raw.call(&["EXEC"]), err("EXEC without MULTI"));
    assert_eq!(raw.call(&["EXISTS", "m"]), ":0\r\n");
    // Without MULTI too, and it forgets the WATCHed keys.
    raw.call(&["WATCH", "w"]);
    assert!(raw.call(&["EXEC", "x"]).starts_with("-EXECABORT "));
    let mut other = RawResp::connect(server.resp_address());
    other.call(&["SET", "w", "changed"]);
    raw.call(&["MULTI"]);
    raw.call(&["SET", "m", "2"]);
    assert_eq!(raw.call(&["EXEC"]), "*1\r\n+OK\r\n");
}

#[test]
fn watch_fails_exec_when_a_key_changed_expired_or_was_deleted() {
    let (server, _dir) = Server::start_resp(&["--enable-fault-injection"]);
    let mut raw = RawResp::connect(server.resp_address());
    let mut other = RawResp::connect(server.resp_address());
    for change in [
        &["SET", "w", "theirs"][..],
        &["DEL", "w"][..],
        &["PEXPIRE", "w", "1"][..],
    ] {
        raw.call(&["SET", "w", "start"]);
        assert_eq!(raw.call(&["WATCH", "w"]), "+OK\r\n");
        other.call(change);
        crate::server::advance_clock(server.address, 5);
        raw.call(&["MULTI"]);
        raw.call(&["SET", "w", "mine"]);
        assert_eq!(raw.call(&["EXEC"]), "*-1\r\n", "after {change:?}");
        assert_ne!(raw.call(&["GET", "w"]), "$4\r\nmine\r\n");
    }
    // Untouched, or unwatched, the transaction applies.
    raw.call(&["WATCH", "w"]);
    raw.call(&["MULTI"]);
    raw.call(&["SET", "w", "mine"]);
    assert_eq!(raw.call(&["EXEC"]), "*1\r\n+OK\r\n");
    raw.call(&["WATCH", "w"]);
    other.call(&["SET", "w", "theirs"]);
    assert_eq!(raw.call(&["UNWATCH"]), "+OK\r\n");
    raw.call(&["MULTI"]);
    raw.call(&["SET", "w", "mine again"]);
    assert_eq!(raw.call(&["EXEC"]), "*1\r\n+OK\r\n");
}

/// A key watched while absent that another client creates and deletes again
/// before EXEC has changed (Redis aborts such a transaction): EXEC answers a
/// null array. Left absent and untouched, or with only other keys deleted
/// meanwhile, the transaction runs.
#[test]
fn watch_of_an_absent_key_fails_exec_when_it_was_created_and_deleted_again() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    let mut other = RawResp::connect(server.resp_address());
    assert_eq!(raw.call(&["WATCH", "ghost"]), "+OK\r\n");
    assert_eq!(other.call(&["SET", "ghost", "briefly"]), "+OK\r\n");
    assert_eq!(other.call(&["DEL", "ghost"]), ":1\r\n");
    raw.call(&["MULTI"]);
    raw.call(&["SET", "ghost", "mine"]);
    assert_eq!(
        raw.call(&["EXEC"]),
        "*-1\r\n",
        "created and deleted meanwhile"
    );
    assert_eq!(raw.call(&["EXISTS", "ghost"]), ":0\r\n");

    // The same through SET then an expiry that the sweeper or a GETDEL ends.
    assert_eq!(raw.call(&["WATCH", "ghost"]), "+OK\r\n");
    other.call(&["SET", "ghost", "x"]);
    assert_eq!(other.call(&["GETDEL", "ghost"]), "$1\r\nx\r\n");
    raw.call(&["MULTI"]);
    raw.call(&["SET", "ghost", "mine"]);
    assert_eq!(
        raw.call(&["EXEC"]),
        "*-1\r\n",
        "created and removed by GETDEL"
    );

    // Untouched, the absent key's transaction runs.
    assert_eq!(raw.call(&["WATCH", "ghost"]), "+OK\r\n");
    raw.call(&["MULTI"]);
    raw.call(&["SET", "ghost", "mine"]);
    assert_eq!(raw.call(&["EXEC"]), "*1\r\n+OK\r\n");
    assert_eq!(raw.call(&["GET", "ghost"]), "$4\r\nmine\r\n");
}

/// Many clients increment one counter with WATCH/GET/MULTI/SET/EXEC: a
/// round's readers all saw the same value, so exactly one of them may win,
/// and the final count is exactly the number of successful EXECs.
#[test]
fn a_watch_race_has_one_winner_per_round() {
    let (server, _dir) = Server::start_resp(&[]);
    let clients = 12;
    let rounds = 15;
    let barrier = Arc::new(Barrier::new(clients));
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let mut connection = server.redis_connection();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut wins = Vec::new();
                for round in 0..rounds {
                    barrier.wait();
                    let () = redis::cmd("WATCH")
                        .arg("race")
                        .query(&mut connection)
                        .unwrap();
                    let seen: Option<i64> = connection.get("race").unwrap();
                    let seen = seen.unwrap_or(0);
                    barrier.wait();
                    let result: Option<(String,)> = redis::pipe()
                        .atomic()
                        .set("race", seen + 1)
                        .query(&mut connection)
                        .unwrap();
                    if result.is_some() {
                        wins.push(round);
                    }
                }
                wins
            })
        })
        .collect();
    let mut winners_per_round = vec![0; rounds];
    for worker in workers {
        for round in worker.join().unwrap() {
            winners_per_round[round] += 1;
        }
    }
    assert!(
        winners_per_round.iter().all(|&winners| winners == 1),
        "{winners_per_round:?}"
    );
    let mut connection = server.redis_connection();
    let total: i64 = connection.get("race").unwrap();
    assert_eq!(total, rounds as i64);
}

#[test]
fn incr_from_64_clients_on_one_key_loses_nothing() {
    let (server, _dir) = Server::start_resp(&[]);
    let clients = 64;
    let each = 40;
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let mut connection = server.redis_connection();
            thread::spawn(move || {
                for _ in 0..each {
                    let _: i64 = connection.incr("hot", 1).unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let mut connection = server.redis_connection();
    let total: i64 = connection.get("hot").unwrap();
    assert_eq!(total, clients * each);
}

#[test]
fn scan_cursors_work_across_connections_and_a_restart() {
    let (mut server, _dir) = Server::start_resp(&[]);
    let mut connection = server.redis_connection();
    let expected: BTreeSet<String> = (0..300).map(|index| format!("key:{index}")).collect();
    for key in &expected {
        let () = connection.set(key, "v").unwrap();
    }
    let () = connection.set("other", "v").unwrap();
    let mut seen = BTreeSet::new();
    let mut cursor: u64 = 0;
    let mut steps = 0;
    loop {
        // A new connection for every step, and a restart half way.
        if steps == 5 {
            server.restart();
        }
        let mut connection = server.redis_connection();
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("key:*")
            .arg("COUNT")
            .arg(25)
            .query(&mut connection)
            .unwrap();
        seen.extend(keys);
        steps += 1;
        if next == 0 {
            break;
        }
        cursor = next;
        assert!(steps < 100, "the scan must end");
    }
    assert!(steps > 5, "the restart happened mid-scan");
    assert_eq!(seen, expected);
    let mut raw = RawResp::connect(server.resp_address());
    assert_eq!(
        raw.call(&["SCAN", "0", "TYPE", "hash", "COUNT", "1000"]),
        "*2\r\n$1\r\n0\r\n*0\r\n"
    );
}

#[test]
fn bit_commands_answer_as_redis() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    assert_eq!(raw.call(&["SETBIT", "b", "7", "1"]), ":0\r\n");
    assert_eq!(raw.call(&["SETBIT", "b", "7", "1"]), ":1\r\n");
    assert_eq!(raw.call(&["GETBIT", "b", "7"]), ":1\r\n");
    assert_eq!(raw.call(&["GETBIT", "b", "100"]), ":0\r\n");
    assert_eq!(raw.call(&["SET", "s", "foobar"]), "+OK\r\n");
    assert_eq!(raw.call(&["BITCOUNT", "s"]), ":26\r\n");
    assert_eq!(raw.call(&["BITCOUNT", "s", "0", "0"]), ":4\r\n");
    assert_eq!(raw.call(&["BITCOUNT", "s", "1", "1"]), ":6\r\n");
    assert_eq!(raw.call(&["BITCOUNT", "s", "5", "30", "BIT"]), ":17\r\n");
    assert_eq!(raw.call(&["BITCOUNT", "s", "1"]), err("syntax error"));
    raw.call(&["SETBIT", "pos", "12", "1"]);
    assert_eq!(raw.call(&["BITPOS", "pos", "1"]), ":12\r\n");
    assert_eq!(raw.call(&["BITPOS", "pos", "0"]), ":0\r\n");
    assert_eq!(raw.call(&["BITPOS", "missing", "1"]), ":-1\r\n");
    assert_eq!(raw.call(&["BITPOS", "missing", "0"]), ":0\r\n");
    assert_eq!(
        raw.call(&["BITPOS", "pos", "2"]),
        err("The bit argument must be 1 or 0.")
    );
    raw.call(&["SET", "x", "abc"]);
    raw.call(&["SET", "y", "ab"]);
    assert_eq!(raw.call(&["BITOP", "AND", "dest", "x", "y"]), ":3\r\n");
    assert_eq!(raw.call(&["GET", "dest"]), "$3\r\nab\u{0}\r\n");
    assert_eq!(
        raw.call(&["BITOP", "NOT", "dest", "x", "y"]),
        err("BITOP NOT must be called with a single source key.")
    );
    assert_eq!(
        raw.call(&["SETBIT", "b", "-1", "1"]),
        err("bit offset is not an integer or out of range")
    );
    assert_eq!(
        raw.call(&["SETBIT", "b", "1", "2"]),
        err("bit is not an integer or out of range")
    );
}

/// Every expected reply here is what Redis 7.0 answered to the same command.
#[test]
fn bitfield_answers_as_redis() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    let call = |raw: &mut RawResp, line: &str| raw.call(&line.split(' ').collect::<Vec<_>>());
    assert_eq!(
        call(&mut raw, "BITFIELD bf SET i8 0 100 GET u4 0 GET i8 #0"),
        "*3\r\n:0\r\n:6\r\n:100\r\n"
    );
    assert_eq!(
        call(&mut raw, "BITFIELD_RO bf GET u8 0 GET i4 #1"),
        "*2\r\n:100\r\n:4\r\n"
    );
    assert_eq!(
        call(
            &mut raw,
            "BITFIELD c INCRBY u2 0 1 INCRBY u2 0 1 INCRBY u2 0 1 INCRBY u2 0 1"
        ),
        "*4\r\n:1\r\n:2\r\n:3\r\n:0\r\n"
    );
    // A write that fails on overflow answers null, yet the key is made.
    assert_eq!(
        call(&mut raw, "BITFIELD f OVERFLOW FAIL INCRBY i8 0 200"),
        "*1\r\n$-1\r\n"
    );
    assert_eq!(call(&mut raw, "GET f"), "$1\r\n\u{0}\r\n");
    assert_eq!(
        call(
            &mut raw,
            "BITFIELD u SET u8 0 -1 OVERFLOW SAT SET u8 8 -1 OVERFLOW FAIL SET u8 16 -1 GET u8 0 GET u8 8"
        ),
        "*5\r\n:0\r\n:0\r\n$-1\r\n:255\r\n:255\r\n"
    );
    assert_eq!(
        call(
            &mut raw,
            "BITFIELD big SET i64 0 9223372036854775807 INCRBY i64 0 1 OVERFLOW SAT INCRBY i64 0 -1"
        ),
        "*3\r\n:0\r\n:-9223372036854775808\r\n:-9223372036854775808\r\n"
    );
    assert_eq!(
        call(
            &mut raw,
            "BITFIELD s SET i5 6 -3 GET i5 6 GET u5 6 GET i64 100"
        ),
        "*4\r\n:0\r\n:-3\r\n:29\r\n:0\r\n"
    );
    // Only GETs on a missing key: zeros, and no key.
    assert_eq!(call(&mut raw, "BITFIELD none GET u8 0"), "*1\r\n:0\r\n");
    assert_eq!(call(&mut raw, "BITFIELD none"), "*0\r\n");
    assert_eq!(call(&mut raw, "EXISTS none"), ":0\r\n");
    // A write keeps the key's time to live.
    call(&mut raw, "SET t abc EX 100");
    assert_eq!(call(&mut raw, "BITFIELD t SET u8 0 65"), "*1\r\n:97\r\n");
    assert_eq!(call(&mut raw, "GET t"), "$3\r\nAbc\r\n");
    assert_eq!(call(&mut raw, "TTL t"), ":100\r\n");
    let bad_type = "Invalid bitfield type. Use something like i16 u8. \
                    Note that u64 is not supported but i64 is.";
    for line in [
        "BITFIELD e GET u64 0",
        "BITFIELD e GET i65 0",
        "BITFIELD e GET I8 0",
    ] {
        assert_eq!(call(&mut raw, line), err(bad_type), "{line}");
    }
    let bad_offset = err("bit offset is not an integer or out of range");
    assert_eq!(call(&mut raw, "BITFIELD e GET u8 -1"), bad_offset);
    assert_eq!(call(&mut raw, "BITFIELD e GET u8 #-1"), bad_offset);
    assert_eq!(call(&mut raw, "BITFIELD e SET u8 4294967296 1"), bad_offset);
    assert_eq!(call(&mut raw, "BITFIELD e SET u8 0"), err("syntax error"));
    assert_eq!(call(&mut raw, "BITFIELD e OVERFLOW"), err("syntax error"));
    assert_eq!(
        call(&mut raw, "BITFIELD e SET u8 0 x"),
        err("value is not an integer or out of range")
    );
    assert_eq!(
        call(&mut raw, "BITFIELD e OVERFLOW BOGUS GET u8 0"),
        err("Invalid OVERFLOW type specified")
    );
    assert_eq!(
        call(&mut raw, "BITFIELD_RO bf INCRBY u8 0 1"),
        err("BITFIELD_RO only supports the GET subcommand")
    );
    // Past the value limit (walrus's proto-max-bulk-len, 16 MiB by default).
    assert_eq!(call(&mut raw, "BITFIELD e SET u8 #16777216 1"), bad_offset);
    assert_eq!(call(&mut raw, "EXISTS e"), ":0\r\n");
}

#[test]
fn flushall_is_atomic_and_dbsize_counts_live_keys() {
    let (server, _dir) = Server::start_resp(&["--enable-fault-injection"]);
    let mut raw = RawResp::connect(server.resp_address());
    for index in 0..50 {
        raw.call(&["SET", &format!("k{index}"), "v"]);
    }
    raw.call(&["SET", "short", "v", "PX", "1"]);
    crate::server::advance_clock(server.address, 5);
    assert_eq!(raw.call(&["DBSIZE"]), ":50\r\n");
    assert_eq!(raw.call(&["FLUSHALL", "ASYNC"]), "+OK\r\n");
    assert_eq!(raw.call(&["DBSIZE"]), ":0\r\n");
    assert_eq!(raw.call(&["FLUSHDB", "NOW"]), err("syntax error"));
}

/// As in Redis 7, SETBIT or BITFIELD SET that leaves the value as it was is
/// not a change: a WATCH of the key still holds and the HTTP API sees the
/// same revision. A bit that does change fails the WATCH.
#[test]
fn a_bit_write_that_changes_nothing_leaves_a_watch_intact() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    let mut other = RawResp::connect(server.resp_address());
    assert_eq!(raw.call(&["SETBIT", "flags", "3", "1"]), ":0\r\n");
    let revision = |server: &Server| {
        crate::server::get(server.address, "/kv/flags")
            .header("etag")
            .expect("etag")
            .to_string()
    };
    let before = revision(&server);
    assert_eq!(raw.call(&["WATCH", "flags"]), "+OK\r\n");
    assert_eq!(other.call(&["SETBIT", "flags", "3", "1"]), ":1\r\n");
    assert_eq!(other.call(&["SETBIT", "flags", "4", "0"]), ":0\r\n");
    assert_eq!(
        other.call(&["BITFIELD", "flags", "SET", "u1", "3", "1"]),
        "*1\r\n:1\r\n"
    );
    assert_eq!(revision(&server), before, "nothing changed");
    raw.call(&["MULTI"]);
    raw.call(&["SET", "done", "1"]);
    assert_eq!(raw.call(&["EXEC"]), "*1\r\n+OK\r\n");

    assert_eq!(raw.call(&["WATCH", "flags"]), "+OK\r\n");
    assert_eq!(other.call(&["SETBIT", "flags", "3", "0"]), ":1\r\n");
    raw.call(&["MULTI"]);
    raw.call(&["SET", "done", "2"]);
    assert_eq!(
        raw.call(&["EXEC"]),
        "*-1\r\n",
        "a changed bit fails the WATCH"
    );
    // A bit past the end grows the value: a change, even when it is 0.
    let grown = revision(&server);
    assert_eq!(other.call(&["SETBIT", "flags", "100", "0"]), ":0\r\n");
    assert_ne!(revision(&server), grown);
}
