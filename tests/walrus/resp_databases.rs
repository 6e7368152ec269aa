//! SELECT 0–15: sixteen separate keyspaces over RESP, MOVE, SWAPDB, COPY … DB,
//! FLUSHDB against FLUSHALL, transactions in a database, and every database
//! surviving a snapshot and a restart. HTTP serves database 0.

use crate::resp_client::{RawResp, err};
use crate::server::{Server, get, request};

fn selected(server: &Server, db: u8) -> RawResp {
    let mut raw = RawResp::connect(server.resp_address());
    assert_eq!(raw.call(&["SELECT", &db.to_string()]), "+OK\r\n");
    raw
}

fn bulk(value: &str) -> String {
    format!("${}\r\n{value}\r\n", value.len())
}

/// The commands the front end runs itself (LCS, MEMORY USAGE) read the
/// connection's database too, not database 0.
#[test]
fn lcs_and_memory_usage_read_the_selected_database() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut zero = selected(&server, 0);
    let mut five = selected(&server, 5);
    zero.call(&["MSET", "a", "zzzz", "b", "yyyy"]);
    five.call(&["MSET", "a", "ohmytext", "b", "mynewtext"]);
    assert_eq!(five.call(&["LCS", "a", "b"]), bulk("mytext"));
    assert_eq!(five.call(&["LCS", "a", "b", "LEN"]), ":6\r\n");
    assert_eq!(zero.call(&["LCS", "a", "b"]), bulk(""));
    // An estimate: the key and value bytes plus a fixed per-entry overhead.
    let usage = |raw: &mut RawResp, key: &str| -> i64 {
        raw.call(&["MEMORY", "USAGE", key])[1..]
            .trim()
            .parse()
            .expect("an integer")
    };
    let (in_five, in_zero) = (usage(&mut five, "b"), usage(&mut zero, "b"));
    assert_eq!(in_five - in_zero, 5, "9 value bytes against 4");
    assert!(in_zero > 5);
    assert_eq!(five.call(&["MEMORY", "USAGE", "missing"]), "$-1\r\n");
    assert!(
        five.call(&["MEMORY", "USAGE", "a", "SAMPLES", "5"])
            .starts_with(':')
    );
    assert_eq!(
        five.call(&["MEMORY", "USAGE", "a", "SAMPLES"]),
        err("syntax error")
    );
    assert!(five.call(&["MEMORY", "HELP"]).starts_with('*'));
}

#[test]
fn each_database_is_its_own_keyspace() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut zero = selected(&server, 0);
    let mut three = selected(&server, 3);
    assert_eq!(zero.call(&["SET", "k", "zero"]), "+OK\r\n");
    assert_eq!(three.call(&["SET", "k", "three"]), "+OK\r\n");
    assert_eq!(
        three.call(&["SET", "only3", "x", "PX", "600000"]),
        "+OK\r\n"
    );
    assert_eq!(zero.call(&["GET", "k"]), bulk("zero"));
    assert_eq!(three.call(&["GET", "k"]), bulk("three"));
    assert_eq!(zero.call(&["EXISTS", "only3"]), ":0\r\n");
    assert_eq!(zero.call(&["DBSIZE"]), ":1\r\n");
    assert_eq!(three.call(&["DBSIZE"]), ":2\r\n");
    assert_eq!(three.call(&["INCR", "n"]), ":1\r\n");
    assert_eq!(zero.call(&["GET", "n"]), "$-1\r\n");
    let keys = three.call(&["KEYS", "*"]);
    assert!(
        keys.starts_with("*3\r\n") && keys.contains("only3"),
        "{keys}"
    );
    let scanned = three.call(&["SCAN", "0", "COUNT", "100"]);
    assert!(scanned.contains("only3") && !zero.call(&["SCAN", "0"]).contains("only3"));
    assert!(three.call(&["RANDOMKEY"]).starts_with('$'));
    let info = zero.call(&["INFO", "keyspace"]);
    assert!(
        info.contains("db0:keys=1,expires=0,avg_ttl=0\r\n"),
        "{info}"
    );
    assert!(info.contains("db3:keys=3,expires=1,avg_ttl="), "{info}");
    // avg_ttl is the expiring keys' mean time to live in ms: only3's 600 s,
    // less the moments this test has taken since.
    let avg_ttl: u64 = info
        .split("db3:keys=3,expires=1,avg_ttl=")
        .nth(1)
        .and_then(|rest| rest.split("\r\n").next())
        .and_then(|value| value.parse().ok())
        .expect("db3's avg_ttl");
    assert!((540_000..=600_000).contains(&avg_ttl), "{info}");
    assert!(three.call(&["CLIENT", "INFO"]).contains("db=3"));
    // The HTTP API is database 0.
    assert_eq!(get(server.address, "/kv/k").text(), "zero");
    assert_eq!(get(server.address, "/kv/only3").status, 404);
}

#[test]
fn move_copy_and_swapdb_work_across_databases() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut one = selected(&server, 1);
    let mut two = selected(&server, 2);
    one.call(&["SET", "m", "moving", "PX", "600000"]);
    assert_eq!(one.call(&["MOVE", "m", "2"]), ":1\r\n");
    assert_eq!(one.call(&["GET", "m"]), "$-1\r\n");
    assert_eq!(two.call(&["GET", "m"]), bulk("moving"));
    let ttl = two.call(&["PTTL", "m"]);
    assert!(
        ttl.starts_with(':') && ttl != ":-1\r\n",
        "MOVE keeps the TTL: {ttl}"
    );
    // Absent here, or present there: nothing moves.
    assert_eq!(one.call(&["MOVE", "m", "2"]), ":0\r\n");
    one.call(&["SET", "m", "again"]);
    assert_eq!(one.call(&["MOVE", "m", "2"]), ":0\r\n");
    assert_eq!(two.call(&["GET", "m"]), bulk("moving"));
    assert_eq!(
        one.call(&["MOVE", "m", "1"]),
        err("source and destination objects are the same")
    );
    assert_eq!(
        one.call(&["MOVE", "m", "16"]),
        err("DB index is out of range")
    );

    assert_eq!(one.call(&["COPY", "m", "m", "DB", "5"]), ":1\r\n");
    assert_eq!(one.call(&["COPY", "m", "m", "DB", "5"]), ":0\r\n");
    assert_eq!(
        one.call(&["COPY", "m", "m", "DB", "5", "REPLACE"]),
        ":1\r\n"
    );
    assert_eq!(selected(&server, 5).call(&["GET", "m"]), bulk("again"));

    assert_eq!(one.call(&["SWAPDB", "1", "2"]), "+OK\r\n");
    assert_eq!(one.call(&["GET", "m"]), bulk("moving"));
    assert_eq!(two.call(&["GET", "m"]), bulk("again"));
    assert_eq!(
        one.call(&["SWAPDB", "1", "x"]),
        err("invalid second DB index")
    );
    assert_eq!(
        one.call(&["SWAPDB", "1", "99"]),
        err("DB index is out of range")
    );
}

#[test]
fn flushdb_empties_one_database_and_flushall_every_one() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut zero = selected(&server, 0);
    let mut nine = selected(&server, 9);
    zero.call(&["SET", "a", "1"]);
    nine.call(&["SET", "b", "2"]);
    assert_eq!(nine.call(&["FLUSHDB"]), "+OK\r\n");
    assert_eq!(nine.call(&["DBSIZE"]), ":0\r\n");
    assert_eq!(zero.call(&["DBSIZE"]), ":1\r\n");
    nine.call(&["SET", "b", "2"]);
    assert_eq!(nine.call(&["FLUSHALL", "ASYNC"]), "+OK\r\n");
    assert_eq!(zero.call(&["DBSIZE"]), ":0\r\n");
    assert_eq!(nine.call(&["DBSIZE"]), ":0\r\n");
}

#[test]
fn transactions_run_in_the_selected_database() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut four = selected(&server, 4);
    four.call(&["MULTI"]);
    four.call(&["SET", "a", "1"]);
    four.call(&["INCR", "a"]);
    assert_eq!(four.call(&["EXEC"]), "*2\r\n+OK\r\n:2\r\n");
    assert_eq!(selected(&server, 0).call(&["GET", "a"]), "$-1\r\n");
    // WATCH guards the key in its own database.
    assert_eq!(four.call(&["WATCH", "a"]), "+OK\r\n");
    selected(&server, 0).call(&["SET", "a", "other database"]);
    four.call(&["MULTI"]);
    four.call(&["SET", "a", "mine"]);
    assert_eq!(four.call(&["EXEC"]), "*1\r\n+OK\r\n");
    assert_eq!(four.call(&["WATCH", "a"]), "+OK\r\n");
    selected(&server, 4).call(&["SET", "a", "changed"]);
    four.call(&["MULTI"]);
    four.call(&["SET", "a", "mine"]);
    assert_eq!(four.call(&["EXEC"]), "*-1\r\n");
    assert_eq!(four.call(&["GET", "a"]), bulk("changed"));
    // SELECT inside MULTI, as in Redis: the commands after it address the
    // database it names, a bad index is an error in EXEC's reply that
    // changes nothing, and the connection stays in the last one SELECTed.
    four.call(&["MULTI"]);
    assert_eq!(four.call(&["SET", "x", "in four"]), "+QUEUED\r\n");
    assert_eq!(four.call(&["SELECT", "6"]), "+QUEUED\r\n");
    four.call(&["SET", "x", "in six"]);
    assert_eq!(four.call(&["SELECT", "99"]), "+QUEUED\r\n");
    four.call(&["INCR", "n"]);
    four.call(&["DBSIZE"]);
    assert_eq!(
        four.call(&["EXEC"]),
        "*6\r\n+OK\r\n+OK\r\n+OK\r\n-ERR DB index is out of range\r\n:1\r\n:2\r\n"
    );
    assert_eq!(
        four.call(&["GET", "x"]),
        bulk("in six"),
        "stays in database 6"
    );
    assert_eq!(four.call(&["GET", "n"]), bulk("1"));
    assert_eq!(selected(&server, 4).call(&["GET", "x"]), bulk("in four"));
    assert_eq!(selected(&server, 4).call(&["EXISTS", "n"]), ":0\r\n");
    // SELECTs alone log nothing; the connection still follows them.
    let syncs_before = crate::resp_api::syncs(&server);
    four.call(&["MULTI"]);
    four.call(&["SELECT", "2"]);
    four.call(&["PING"]);
    four.call(&["SELECT", "4"]);
    assert_eq!(four.call(&["EXEC"]), "*3\r\n+OK\r\n+PONG\r\n+OK\r\n");
    assert_eq!(crate::resp_api::syncs(&server), syncs_before);
    assert_eq!(four.call(&["GET", "x"]), bulk("in four"));
    // WATCH in one database and EXEC in another is refused, not guessed.
    four.call(&["WATCH", "a"]);
    four.call(&["SELECT", "5"]);
    four.call(&["MULTI"]);
    four.call(&["SET", "a", "1"]);
    assert!(four.call(&["EXEC"]).starts_with("-ERR"));
    assert_eq!(four.call(&["EXISTS", "a"]), ":0\r\n");
}

#[test]
fn every_database_survives_a_snapshot_and_a_restart() {
    let (mut server, _dir) = Server::start_resp(&[]);
    selected(&server, 0).call(&["SET", "k", "zero"]);
    selected(&server, 7).call(&["SET", "k", "seven"]);
    selected(&server, 15).call(&["SET", "z", "fifteen"]);
    // Into a snapshot (the log it covers is removed) ...
    let compacted = request(server.address, "POST", "/admin/compact", &[], b"");
    assert_eq!(compacted.status, 200, "{}", compacted.text());
    // ... then more in the log after it.
    selected(&server, 7).call(&["SET", "after", "snapshot"]);
    selected(&server, 0).call(&["SWAPDB", "0", "15"]);
    server.restart();
    assert_eq!(selected(&server, 0).call(&["GET", "z"]), bulk("fifteen"));
    assert_eq!(selected(&server, 15).call(&["GET", "k"]), bulk("zero"));
    assert_eq!(selected(&server, 7).call(&["GET", "k"]), bulk("seven"));
    assert_eq!(
        selected(&server, 7).call(&["GET", "after"]),
        bulk("snapshot")
    );
    assert_eq!(selected(&server, 7).call(&["DBSIZE"]), ":2\r\n");
    assert_eq!(get(server.address, "/kv/z").text(), "fifteen");
}
