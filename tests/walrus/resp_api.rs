//! The RESP front end driven by the `redis` crate and by exact-reply checks:
//! every command family, pipelines, AUTH, and atomicity under concurrency.

use std::thread;
use std::time::Duration;

use redis::Commands;

use crate::resp_client::{RawResp, err};
use crate::server::{self, Server};

#[test]
fn resp_connection_and_server_commands() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    assert_eq!(raw.call(&["PING"]), "+PONG\r\n");
    assert_eq!(raw.call(&["ping", "hi"]), "$2\r\nhi\r\n");
    assert_eq!(raw.call(&["ECHO", "x"]), "$1\r\nx\r\n");
    assert_eq!(raw.call(&["SELECT", "0"]), "+OK\r\n");
    assert_eq!(raw.call(&["SELECT", "16"]), err("DB index is out of range"));
    assert_eq!(raw.call(&["SELECT", "-1"]), err("DB index is out of range"));
    assert_eq!(
        raw.call(&["SELECT", "x"]),
        err("value is not an integer or out of range")
    );
    assert_eq!(raw.call(&["CLIENT", "SETNAME", "me"]), "+OK\r\n");
    assert_eq!(raw.call(&["CLIENT", "GETNAME"]), "$2\r\nme\r\n");
    assert_eq!(raw.call(&["CLIENT", "SETINFO", "LIB-NAME", "x"]), "+OK\r\n");
    assert!(raw.call(&["CLIENT", "ID"]).starts_with(':'));
    assert!(raw.call(&["HELLO", "2"]).contains("proto\r\n:2\r\n"));
    assert_eq!(
        raw.call(&["HELLO", "4"]),
        "-NOPROTO unsupported protocol version\r\n"
    );
    assert!(raw.call(&["COMMAND", "COUNT"]).starts_with(':'));
    assert!(raw.call(&["COMMAND"]).starts_with('*'));
    // COMMAND DOCS: one entry per command (a flat name, map list in RESP2);
    // an unknown name is left out.
    let count = raw.integer(&["COMMAND", "COUNT"]) as usize;
    assert!(
        raw.call(&["COMMAND", "DOCS"])
            .starts_with(&format!("*{}\r\n", count * 2)),
        "every command documented"
    );
    assert_eq!(
        raw.call(&["COMMAND", "DOCS", "incr", "nosuch"]),
        "*2\r\n$4\r\nincr\r\n*8\r\n$7\r\nsummary\r\n$34\r\nAdds one to a key's integer value.\r\n\
         $5\r\nsince\r\n$5\r\n1.0.0\r\n$5\r\ngroup\r\n$6\r\nstring\r\n\
         $10\r\ncomplexity\r\n$4\r\nO(1)\r\n"
    );
    assert!(raw.call(&["CONFIG", "GET", "appendonly"]).contains("yes"));
    assert!(raw.call(&["INFO"]).contains("redis_version:"));
    assert!(raw.call(&["TIME"]).starts_with("*2\r\n"));
    // No snapshot yet: LASTSAVE is the start time, within this test's run.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let last_save = raw.integer(&["LASTSAVE"]);
    assert!(
        (now - 120..=now).contains(&last_save),
        "{last_save} vs {now}"
    );
    assert_eq!(raw.call(&["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(raw.call(&["DBSIZE"]), ":1\r\n");
    assert!(raw.call(&["INFO", "keyspace"]).contains("db0:keys=1"));
    assert_eq!(raw.call(&["FLUSHDB"]), "+OK\r\n");
    assert_eq!(raw.call(&["DBSIZE"]), ":0\r\n");
    assert_eq!(
        raw.call(&["LPUSH", "a", "b"]),
        err("unknown command 'LPUSH', with args beginning with: 'a' 'b' ")
    );
    // A client probing for Redis Cluster hears what a standalone Redis says.
    assert_eq!(
        raw.call(&["CLUSTER", "SLOTS"]),
        err("This instance has cluster support disabled")
    );
    // So does READONLY: a single node has no replica to read stale from.
    assert_eq!(
        raw.call(&["READONLY"]),
        err("This instance has cluster support disabled")
    );
    assert_eq!(
        raw.call(&["GET"]),
        err("wrong number of arguments for 'get' command")
    );
    assert_eq!(
        raw.call(&["PING"]),
        "+PONG\r\n",
        "still usable after errors"
    );
    assert_eq!(raw.call(&["QUIT"]), "+OK\r\n");
    assert!(raw.is_closed());
}

/// A server with RESP whose password (the token) is `password`; the
/// directories live as long as the returned guard.
fn start_with_password(password: &str) -> (Server, [tempfile::TempDir; 2]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{password}\n")).expect("token file");
    let token = token.to_string_lossy().into_owned();
    let (server, data) = Server::start_resp(&["--auth-token-file", &token]);
    (server, [dir, data])
}

#[test]
fn resp_auth_is_required_first() {
    let (server, _dirs) = start_with_password("s3cret");
    let mut raw = RawResp::connect(server.resp_address());
    assert_eq!(
        raw.call(&["GET", "k"]),
        "-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(
        raw.call(&["SET", "k", "v"]),
        "-NOAUTH Authentication required.\r\n"
    );
    // As in Redis 7, a request that names no command, or has the wrong
    // number of arguments, hears that before NOAUTH.
    assert_eq!(
        raw.call(&["FOO", "bar"]),
        err("unknown command 'FOO', with args beginning with: 'bar' ")
    );
    assert_eq!(
        raw.call(&["GET"]),
        err("wrong number of arguments for 'get' command")
    );
    assert_eq!(
        raw.call(&["CONFIG", "NOSUCH"]),
        err("unknown subcommand 'NOSUCH'. Try CONFIG HELP.")
    );
    assert_eq!(
        raw.call(&["AUTH", "wrong"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert!(raw.call(&["HELLO", "2"]).starts_with("-NOAUTH"));
    assert!(
        raw.call(&["HELLO", "2", "AUTH", "default", "s3cret"])
            .starts_with("*14")
    );
    assert_eq!(raw.call(&["SET", "k", "v"]), "+OK\r\n");
    let mut other = RawResp::connect(server.resp_address());
    assert_eq!(other.call(&["AUTH", "s3cret"]), "+OK\r\n");
    assert_eq!(other.call(&["GET", "k"]), "$1\r\nv\r\n");
    let url = format!("redis://:s3cret@{}/", server.resp_address());
    let mut connection = redis::Client::open(url).unwrap().get_connection().unwrap();
    let value: String = connection.get("k").unwrap();
    assert_eq!(value, "v");
    // RESET signs the connection out again; the password never reaches the
    // slow log.
    assert_eq!(
        raw.call(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]),
        "+OK\r\n"
    );
    assert_eq!(raw.call(&["AUTH", "default", "s3cret"]), "+OK\r\n");
    assert_eq!(raw.call(&["RESET"]), "+RESET\r\n");
    assert!(raw.call(&["GET", "k"]).starts_with("-NOAUTH"));
    assert_eq!(other.call(&["AUTH", "a", "b", "c"]), err("syntax error"));
    let logged = other.call(&["SLOWLOG", "GET", "-1"]);
    assert!(logged.contains("(redacted)"), "{logged}");
    assert!(!logged.contains("s3cret"), "{logged}");
    let mut stranger = RawResp::connect(server.resp_address());
    stranger.send_raw(b"*11\r\n");
    assert_eq!(
        stranger.reply().as_deref(),
        Some(err("Protocol error: invalid multibulk length").as_str()),
        "before AUTH, requests are capped tight"
    );
}

#[test]
fn acl_describes_the_one_user_and_refuses_to_change_it() {
    let (server, _dirs) = start_with_password("foobar");
    let mut raw = RawResp::connect(server.resp_address());
    assert!(raw.call(&["ACL", "WHOAMI"]).starts_with("-NOAUTH"));
    assert_eq!(raw.call(&["AUTH", "foobar"]), "+OK\r\n");
    assert_eq!(raw.call(&["ACL", "WHOAMI"]), "$7\r\ndefault\r\n");
    assert_eq!(raw.call(&["ACL", "USERS"]), "*1\r\n$7\r\ndefault\r\n");
    // The password shows as its SHA-256 only, as Redis shows it.
    let hash = "c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a3960714caef0c4f2";
    let list = raw.call(&["ACL", "LIST"]);
    assert!(
        list.contains(&format!("user default on #{hash} ~* &* +@all")),
        "{list}"
    );
    let user = raw.call(&["ACL", "GETUSER", "default"]);
    assert!(user.starts_with("*12\r\n$5\r\nflags\r\n"), "{user}");
    assert!(user.contains(hash) && !user.contains("nopass"), "{user}");
    assert_eq!(raw.call(&["ACL", "GETUSER", "bob"]), "*-1\r\n");
    // Changing users is refused, and the rules never reach the slow log.
    assert_eq!(
        raw.call(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]),
        "+OK\r\n"
    );
    let refused = raw.call(&["ACL", "SETUSER", "bob", "on", ">hunter2"]);
    assert!(
        refused.starts_with("-ERR walrus has a single user"),
        "{refused}"
    );
    assert!(
        raw.call(&["ACL", "LOG"])
            .starts_with("-ERR walrus has a single user")
    );
    assert!(
        raw.call(&["ACL", "NOPE"])
            .starts_with("-ERR unknown subcommand")
    );
    let logged = raw.call(&["SLOWLOG", "GET", "-1"]);
    assert!(!logged.contains("hunter2"), "{logged}");
    // In RESP3, GETUSER is a map.
    assert!(raw.call(&["HELLO", "3"]).starts_with('%'));
    assert!(
        raw.call(&["ACL", "GETUSER", "default"])
            .starts_with("%6\r\n")
    );
    drop(server);

    // Without a token the default user has no password: `nopass`.
    let (open, _data) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(open.resp_address());
    assert_eq!(
        raw.call(&["ACL", "LIST"]),
        "*1\r\n$34\r\nuser default on nopass ~* &* +@all\r\n"
    );
}

#[test]
fn resp_sigterm_stops_cleanly_with_clients_connected() {
    let (mut server, _dir) = Server::start_resp(&[]);
    let mut idle = RawResp::connect(server.resp_address());
    assert_eq!(idle.call(&["SET", "k", "v"]), "+OK\r\n");
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(idle.is_closed());
}

#[test]
fn resp_string_commands() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    let mut call = |args: &[&str]| raw.call(args);
    assert_eq!(call(&["GET", "s"]), "$-1\r\n");
    assert_eq!(call(&["SET", "s", "v1", "NX"]), "+OK\r\n");
    assert_eq!(call(&["SET", "s", "v2", "NX"]), "$-1\r\n");
    assert_eq!(call(&["SET", "s", "v2", "XX", "GET"]), "$2\r\nv1\r\n");
    assert_eq!(call(&["SET", "none", "v", "XX"]), "$-1\r\n");
    assert_eq!(call(&["SET", "s", "v", "NX", "XX"]), err("syntax error"));
    assert_eq!(
        call(&["SET", "s", "v", "EX", "0"]),
        err("invalid expire time in 'set' command")
    );
    assert_eq!(
        call(&["SET", "s", "v", "EX", "x"]),
        err("value is not an integer or out of range")
    );
    assert_eq!(
        call(&["SET", "s", "v", "EX", "100", "KEEPTTL"]),
        err("syntax error")
    );
    assert_eq!(call(&["SET", "s", "v3", "EX", "100"]), "+OK\r\n");
    assert_eq!(call(&["SET", "s", "v4", "KEEPTTL"]), "+OK\r\n");
    assert_eq!(call(&["TTL", "s"]), ":100\r\n");
    assert_eq!(call(&["SET", "s", "v5"]), "+OK\r\n");
    assert_eq!(call(&["TTL", "s"]), ":-1\r\n");
    assert_eq!(call(&["SETNX", "s", "x"]), ":0\r\n");
    assert_eq!(call(&["SETNX", "n", "x"]), ":1\r\n");
    assert_eq!(call(&["SETEX", "e", "100", "x"]), "+OK\r\n");
    assert_eq!(
        call(&["SETEX", "e", "-1", "x"]),
        err("invalid expire time in 'setex' command")
    );
    assert_eq!(call(&["PSETEX", "e", "100000", "y"]), "+OK\r\n");
    assert_eq!(call(&["GETSET", "e", "z"]), "$1\r\ny\r\n");
    assert_eq!(call(&["GETDEL", "e"]), "$1\r\nz\r\n");
    assert_eq!(call(&["GETDEL", "e"]), "$-1\r\n");
    assert_eq!(call(&["GETEX", "s", "PX", "50000"]), "$2\r\nv5\r\n");
    let pttl: i64 = call(&["PTTL", "s"])[1..].trim_end().parse().unwrap();
    assert!((49_000..=50_000).contains(&pttl), "{pttl}");
    assert_eq!(call(&["GETEX", "s", "PERSIST"]), "$2\r\nv5\r\n");
    assert_eq!(call(&["TTL", "s"]), ":-1\r\n");
    assert_eq!(call(&["MSET", "a", "1", "b", "2"]), "+OK\r\n");
    assert_eq!(
        call(&["MSET", "a", "1", "b"]),
        err("wrong number of arguments for 'mset' command")
    );
    assert_eq!(
        call(&["MGET", "a", "b", "zz"]),
        "*3\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n"
    );
    assert_eq!(call(&["MSETNX", "a", "9", "c", "3"]), ":0\r\n");
    assert_eq!(call(&["GET", "c"]), "$-1\r\n", "MSETNX is all or nothing");
    assert_eq!(call(&["MSETNX", "c", "3", "d", "4"]), ":1\r\n");
    assert_eq!(call(&["APPEND", "ap", "Hello"]), ":5\r\n");
    assert_eq!(call(&["APPEND", "ap", " World"]), ":11\r\n");
    assert_eq!(call(&["STRLEN", "ap"]), ":11\r\n");
    assert_eq!(call(&["GETRANGE", "ap", "0", "3"]), "$4\r\nHell\r\n");
    assert_eq!(call(&["GETRANGE", "ap", "-3", "-1"]), "$3\r\nrld\r\n");
    assert_eq!(call(&["GETRANGE", "ap", "10", "100"]), "$1\r\nd\r\n");
    assert_eq!(call(&["SUBSTR", "ap", "5", "1"]), "$0\r\n\r\n");
    assert_eq!(call(&["SETRANGE", "ap", "6", "Redis"]), ":11\r\n");
    assert_eq!(call(&["GET", "ap"]), "$11\r\nHello Redis\r\n");
    assert_eq!(call(&["SETRANGE", "pad", "3", "x"]), ":4\r\n");
    assert_eq!(call(&["GET", "pad"]), "$4\r\n\0\0\0x\r\n");
    assert_eq!(
        call(&["SETRANGE", "pad", "-1", "x"]),
        err("offset is out of range")
    );
    assert_eq!(call(&["INCR", "counter"]), ":1\r\n");
    assert_eq!(call(&["INCRBY", "counter", "10"]), ":11\r\n");
    assert_eq!(call(&["DECR", "counter"]), ":10\r\n");
    assert_eq!(call(&["DECRBY", "counter", "20"]), ":-10\r\n");
    assert_eq!(
        call(&["INCR", "ap"]),
        err("value is not an integer or out of range")
    );
    assert_eq!(
        call(&["INCRBY", "counter", "1.5"]),
        err("value is not an integer or out of range")
    );
    assert_eq!(call(&["SET", "big", "9223372036854775807"]), "+OK\r\n");
    assert_eq!(
        call(&["INCR", "big"]),
        err("increment or decrement would overflow")
    );
    assert_eq!(call(&["SET", "f", "10.5"]), "+OK\r\n");
    assert_eq!(call(&["INCRBYFLOAT", "f", "0.1"]), "$4\r\n10.6\r\n");
    assert_eq!(call(&["INCRBYFLOAT", "f", "-0.6"]), "$2\r\n10\r\n");
    assert_eq!(
        call(&["INCRBYFLOAT", "ap", "1"]),
        err("value is not a valid float")
    );
    assert_eq!(
        call(&["MSET", "l1", "ohmytext", "l2", "mynewtext"]),
        "+OK\r\n"
    );
    assert_eq!(call(&["LCS", "l1", "l2"]), "$6\r\nmytext\r\n");
    assert_eq!(call(&["LCS", "l1", "l2", "LEN"]), ":6\r\n");
    assert_eq!(
        call(&["LCS", "l1", "l2", "IDX", "MINMATCHLEN", "4", "WITHMATCHLEN"]),
        "*4\r\n$7\r\nmatches\r\n*1\r\n*3\r\n*2\r\n:4\r\n:7\r\n*2\r\n:5\r\n:8\r\n:4\r\n$3\r\nlen\r\n:6\r\n"
    );
}

#[test]
fn resp_key_commands() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    let mut call = |args: &[&str]| raw.call(args);
    assert_eq!(
        call(&["MSET", "k1", "a", "k2", "b", "other", "c"]),
        "+OK\r\n"
    );
    assert_eq!(call(&["EXISTS", "k1", "k2", "nope", "k1"]), ":3\r\n");
    assert_eq!(call(&["TOUCH", "k1", "nope"]), ":1\r\n");
    assert_eq!(call(&["TYPE", "k1"]), "+string\r\n");
    assert_eq!(call(&["TYPE", "nope"]), "+none\r\n");
    assert_eq!(call(&["KEYS", "k*"]), "*2\r\n$2\r\nk1\r\n$2\r\nk2\r\n");
    assert_eq!(call(&["KEYS", "?th[e]r"]), "*1\r\n$5\r\nother\r\n");
    assert_eq!(call(&["RENAME", "k1", "k3"]), "+OK\r\n");
    assert_eq!(call(&["RENAME", "k1", "k3"]), err("no such key"));
    assert_eq!(call(&["RENAMENX", "k3", "k2"]), ":0\r\n");
    assert_eq!(call(&["RENAMENX", "k3", "k1"]), ":1\r\n");
    assert_eq!(call(&["COPY", "k1", "k2"]), ":0\r\n");
    assert_eq!(call(&["COPY", "k1", "k2", "REPLACE"]), ":1\r\n");
    assert_eq!(call(&["GET", "k2"]), "$1\r\na\r\n");
    assert_eq!(
        call(&["COPY", "k1", "k9", "DB", "16"]),
        err("DB index is out of range")
    );
    assert!(call(&["RANDOMKEY"]).starts_with('$'));
    assert_eq!(call(&["EXPIRE", "k1", "100"]), ":1\r\n");
    assert_eq!(call(&["TTL", "k1"]), ":100\r\n");
    assert_eq!(call(&["EXPIRE", "k1", "50", "GT"]), ":0\r\n");
    assert_eq!(call(&["EXPIRE", "k1", "50", "LT"]), ":1\r\n");
    assert_eq!(call(&["EXPIRE", "k1", "60", "NX"]), ":0\r\n");
    assert_eq!(call(&["EXPIRE", "k2", "60", "XX"]), ":0\r\n");
    assert_eq!(
        call(&["EXPIRE", "k1", "60", "NX", "XX"]),
        err("NX and XX, GT or LT options at the same time are not compatible")
    );
    assert_eq!(
        call(&["EXPIRE", "k1", "60", "FOO"]),
        err("Unsupported option FOO")
    );
    assert_eq!(call(&["PEXPIRE", "k1", "123456"]), ":1\r\n");
    assert!(call(&["PTTL", "k1"]).starts_with(":12"));
    assert_eq!(call(&["EXPIREAT", "k1", "4102444800"]), ":1\r\n");
    assert_eq!(call(&["EXPIRETIME", "k1"]), ":4102444800\r\n");
    assert_eq!(call(&["PEXPIRETIME", "k1"]), ":4102444800000\r\n");
    assert_eq!(call(&["PEXPIREAT", "k1", "4102444800001"]), ":1\r\n");
    assert_eq!(call(&["PERSIST", "k1"]), ":1\r\n");
    assert_eq!(call(&["PERSIST", "k1"]), ":0\r\n");
    assert_eq!(call(&["EXPIRETIME", "k1"]), ":-1\r\n");
    assert_eq!(call(&["TTL", "nope"]), ":-2\r\n");
    assert_eq!(call(&["EXPIRE", "k1", "-1"]), ":1\r\n");
    assert_eq!(call(&["EXISTS", "k1"]), ":0\r\n", "a past expiry deletes");
    assert_eq!(call(&["DEL", "k2", "k3", "nope"]), ":1\r\n");
    assert_eq!(call(&["UNLINK", "other"]), ":1\r\n");
    assert_eq!(call(&["DBSIZE"]), ":0\r\n");

    // OBJECT names encodings as Redis does.
    let long = "x".repeat(45);
    for (value, encoding) in [
        ("12345", "int"),
        ("-7", "int"),
        ("012", "embstr"),
        ("99999999999999999999", "embstr"),
        ("hello", "embstr"),
        (long.as_str(), "raw"),
    ] {
        assert_eq!(call(&["SET", "o", value]), "+OK\r\n");
        assert_eq!(
            call(&["OBJECT", "ENCODING", "o"]),
            format!("${}\r\n{encoding}\r\n", encoding.len()),
            "{value}"
        );
    }
    // APPEND to a value that existed and any SETRANGE that writes make it
    // `raw`, until the next write; APPEND creating a key stores it as SET.
    for (commands, expected) in [
        (&[&["SET", "o", "1"][..], &["APPEND", "o", "2"]][..], "raw"),
        (
            &[&["SET", "o", "1"], &["APPEND", "o", "2"], &["INCR", "o"]],
            "int",
        ),
        (&[&["DEL", "o"], &["APPEND", "o", "12"]], "int"),
        (
            &[&["SET", "o", "1234"], &["SETRANGE", "o", "1", "3"]],
            "raw",
        ),
        (&[&["SET", "o", "1234"], &["SETRANGE", "o", "1", ""]], "int"),
        (&[&["DEL", "o"], &["SETRANGE", "o", "0", "7"]], "raw"),
        (
            &[
                &["SET", "o", "1"],
                &["APPEND", "o", "2"],
                &["SET", "o", "12"],
            ],
            "int",
        ),
    ] {
        for command in commands {
            call(command);
        }
        assert_eq!(
            call(&["OBJECT", "ENCODING", "o"]),
            format!("${}\r\n{expected}\r\n", expected.len()),
            "{commands:?}"
        );
    }
    assert_eq!(call(&["OBJECT", "REFCOUNT", "o"]), ":1\r\n");
    assert_eq!(call(&["OBJECT", "ENCODING", "nope"]), "$-1\r\n");
    assert!(
        call(&["OBJECT", "FREQ", "o"]).starts_with("-ERR An LFU maxmemory policy is not selected")
    );
    assert_eq!(call(&["OBJECT", "IDLETIME", "o"]), ":0\r\n");
    assert_eq!(call(&["OBJECT", "IDLETIME", "nope"]), "$-1\r\n");
    assert_eq!(
        call(&["OBJECT", "SHAPE", "o"]),
        err("unknown subcommand 'SHAPE'. Try OBJECT HELP.")
    );
    assert_eq!(
        call(&["OBJECT", "ENCODING"]),
        err("wrong number of arguments for 'object|encoding' command")
    );
    assert!(call(&["OBJECT", "HELP"]).starts_with("*"));
    assert_eq!(call(&["DEL", "o"]), ":1\r\n");
}

#[test]
fn object_idletime_counts_from_the_last_read_or_write_as_redis_does() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    let idle = |raw: &mut RawResp| raw.integer(&["OBJECT", "IDLETIME", "k"]);
    assert_eq!(raw.call(&["SET", "k", "v"]), "+OK\r\n");
    assert!(idle(&mut raw) <= 1, "just written");

    // TTL, TYPE, EXISTS and OBJECT itself are not accesses.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    for command in [&["TTL", "k"][..], &["TYPE", "k"], &["EXISTS", "k"]] {
        raw.call(command);
    }
    assert!(idle(&mut raw) >= 2, "TTL, TYPE or EXISTS touched the key");

    // In no-touch mode a GET leaves it; TOUCH moves it all the same.
    assert_eq!(raw.call(&["CLIENT", "NO-TOUCH", "ON"]), "+OK\r\n");
    assert!(raw.call(&["CLIENT", "INFO"]).contains("flags=T "));
    assert_eq!(raw.call(&["GET", "k"]), "$1\r\nv\r\n");
    assert!(
        idle(&mut raw) >= 2,
        "a GET in no-touch mode touched the key"
    );
    assert_eq!(raw.call(&["TOUCH", "k", "absent"]), ":1\r\n");
    assert!(idle(&mut raw) <= 1, "TOUCH left the access time");

    // Out of no-touch mode, a GET is an access.
    assert_eq!(raw.call(&["CLIENT", "NO-TOUCH", "OFF"]), "+OK\r\n");
    assert!(raw.call(&["CLIENT", "INFO"]).contains("flags=N "));
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert!(idle(&mut raw) >= 2);
    assert_eq!(raw.call(&["GET", "k"]), "$1\r\nv\r\n");
    assert!(idle(&mut raw) <= 1, "GET did not touch the key");
    assert_eq!(
        raw.call(&["CLIENT", "NO-TOUCH", "MAYBE"]),
        "-ERR syntax error\r\n"
    );

    // Inside a transaction the same rules hold: EXISTS and TTL look, a GET
    // touches, and a no-touch client's GET does not.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let exec = |raw: &mut RawResp, commands: &[&[&str]]| {
        assert_eq!(raw.call(&["MULTI"]), "+OK\r\n");
        for command in commands {
            assert_eq!(raw.call(command), "+QUEUED\r\n");
        }
        raw.call(&["EXEC"])
    };
    assert_eq!(
        exec(&mut raw, &[&["EXISTS", "k"], &["TTL", "k"]]),
        "*2\r\n:1\r\n:-1\r\n"
    );
    assert!(
        idle(&mut raw) >= 2,
        "EXISTS or TTL in MULTI touched the key"
    );
    assert_eq!(raw.call(&["CLIENT", "NO-TOUCH", "ON"]), "+OK\r\n");
    assert_eq!(exec(&mut raw, &[&["GET", "k"]]), "*1\r\n$1\r\nv\r\n");
    assert!(
        idle(&mut raw) >= 2,
        "a no-touch GET in MULTI touched the key"
    );
    assert_eq!(exec(&mut raw, &[&["TOUCH", "k"]]), "*1\r\n:1\r\n");
    assert!(idle(&mut raw) <= 1, "TOUCH in MULTI left the access time");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(raw.call(&["CLIENT", "NO-TOUCH", "OFF"]), "+OK\r\n");
    assert_eq!(
        exec(&mut raw, &[&["SELECT", "0"], &["GET", "k"]]),
        "*2\r\n+OK\r\n$1\r\nv\r\n"
    );
    assert!(idle(&mut raw) <= 1, "GET in MULTI did not touch the key");
}

#[test]
fn resp_scan_walks_every_key_once() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut connection = server.redis_connection();
    let mut pipe = redis::pipe();
    for index in 0..250 {
        pipe.set(format!("user:{index:03}"), index).ignore();
    }
    pipe.set("other", 1).ignore();
    pipe.query::<()>(&mut connection).unwrap();
    let mut seen: Vec<String> = connection
        .scan_match("user:*")
        .unwrap()
        .collect::<Result<_, _>>()
        .expect("every key scanned");
    seen.sort();
    assert_eq!(seen.len(), 250);
    seen.dedup();
    assert_eq!(seen.len(), 250);
    let (cursor, page): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(100)
        .query(&mut connection)
        .unwrap();
    assert_ne!(cursor, 0);
    assert_eq!(page.len(), 100);
    let (_, none): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("TYPE")
        .arg("hash")
        .query(&mut connection)
        .unwrap();
    assert!(none.is_empty());
}

#[test]
fn resp_pipelines_keep_order_and_see_their_own_writes() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut connection = server.redis_connection();
    let (a, b, c, d): (String, i64, i64, Option<String>) = redis::pipe()
        .set("p", "1")
        .ignore()
        .get("p")
        .incr("p", 5)
        .incr("p", 1)
        .del("p")
        .ignore()
        .get("p")
        .query(&mut connection)
        .unwrap();
    assert_eq!((a.as_str(), b, c, d), ("1", 6, 7, None));
    let mut pipe = redis::pipe();
    for index in 0..1000 {
        pipe.set(format!("k{index}"), index).ignore();
    }
    pipe.query::<()>(&mut connection).unwrap();
    let keys: Vec<String> = (0..1000).map(|index| format!("k{index}")).collect();
    let values: Vec<i64> = connection.mget(&keys).unwrap();
    assert_eq!(values, (0..1000).collect::<Vec<i64>>());
}

/// The log's sync count, from `/metrics`.
pub(crate) fn syncs(server: &Server) -> u64 {
    crate::server::get(server.address, "/metrics")
        .text()
        .lines()
        .find_map(|line| line.strip_prefix("walrus_wal_fsync_duration_seconds_count "))
        .and_then(|count| count.trim().parse().ok())
        .expect("fsync count in /metrics")
}

#[test]
fn resp_a_pipeline_of_writes_shares_one_sync() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    assert_eq!(raw.call(&["PING"]), "+PONG\r\n");
    let before = syncs(&server);
    let mut pipeline = Vec::new();
    for index in 0..100 {
        let key = format!("p{index}");
        pipeline.extend_from_slice(&crate::resp_client::encode(&[b"SET", key.as_bytes(), b"v"]));
    }
    raw.send_raw(&pipeline);
    for _ in 0..100 {
        assert_eq!(raw.reply().as_deref(), Some("+OK\r\n"));
    }
    let used = syncs(&server) - before;
    assert!(used <= 5, "100 pipelined SETs took {used} syncs");
}

#[test]
fn resp_incr_loses_no_increment_under_concurrency() {
    let (server, _dir) = Server::start_resp(&[]);
    let threads = 8;
    let per_thread = 200;
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let mut connection = server.redis_connection();
            thread::spawn(move || {
                for _ in 0..per_thread {
                    let _: i64 = connection.incr("counter", 1).unwrap();
                    let _: i64 = connection.append("log", "x").unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let mut connection = server.redis_connection();
    let total: i64 = connection.get("counter").unwrap();
    assert_eq!(total, threads * per_thread);
    let length: i64 = connection.strlen("log").unwrap();
    assert_eq!(length, threads * per_thread);
}

#[test]
fn resp_mset_is_never_half_applied() {
    let (server, _dir) = Server::start_resp(&[]);
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let mut connection = server.redis_connection();
            thread::spawn(move || {
                for round in 0..200 {
                    let value = format!("{writer}-{round}");
                    let pairs: Vec<(String, String)> = (0..5)
                        .map(|key| (format!("m{key}"), value.clone()))
                        .collect();
                    let () = connection.mset(&pairs).unwrap();
                }
            })
        })
        .collect();
    let mut reader = server.redis_connection();
    let keys: Vec<String> = (0..5).map(|key| format!("m{key}")).collect();
    while !writers.iter().all(|writer| writer.is_finished()) {
        let values: Vec<Option<String>> = reader.mget(&keys).unwrap();
        if values[0].is_some() {
            assert!(values.iter().all(|value| value == &values[0]), "{values:?}");
        }
    }
    for writer in writers {
        writer.join().unwrap();
    }
}

/// Commands whose counts the stats tests check: SET twice, INCR once each
/// succeeded, failed (not an integer) and rejected (arity), two `ERR` replies.
fn run_counted_commands(raw: &mut RawResp) {
    raw.call(&["SET", "counter", "1"]);
    raw.call(&["INCR", "counter"]);
    raw.call(&["INCR"]);
    raw.call(&["SET", "text", "x"]);
    raw.call(&["INCR", "text"]);
}

/// MEMORY STATS gives the process's real figures under Redis's names, the
/// kernel's and jemalloc's, in both protocols; INFO's memory section agrees
/// with it.
#[test]
fn memory_stats_and_info_memory_report_the_process_as_the_kernel_and_the_allocator_count_it() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    for key in ["a", "b", "c"] {
        assert_eq!(raw.call(&["SET", key, "12345"]), "+OK\r\n");
    }
    assert_eq!(raw.call(&["SELECT", "4"]), "+OK\r\n");
    assert_eq!(raw.call(&["SET", "d", "1"]), "+OK\r\n");
    let stats = raw.call(&["MEMORY", "STATS"]);
    let lines: Vec<&str> = stats.split("\r\n").collect();
    // The line after a field's name: an integer, or a double's length
    // (RESP2 sends doubles as bulk strings), then its text.
    let value_of = |name: &str| {
        let at = lines
            .iter()
            .position(|line| *line == name)
            .unwrap_or_else(|| panic!("{name} missing: {stats}"));
        let value = if lines[at + 1].starts_with('$') {
            at + 2
        } else {
            at + 1
        };
        lines[value].to_string()
    };
    assert!(stats.starts_with("*42\r\n"), "21 fields: {stats}");
    assert_eq!(value_of("keys.count"), ":4", "every database's keys");
    assert_eq!(value_of("dataset.bytes"), ":20", "3 x (1 + 5) + (1 + 1)");
    let number = |name: &str| -> u64 { value_of(name)[1..].parse().unwrap_or(0) };
    let (allocated, peak) = (number("total.allocated"), number("peak.allocated"));
    assert!(allocated > 64 << 10 && peak >= allocated, "{stats}");
    // jemalloc's counts, each layer holding the one inside it.
    assert_eq!(number("allocator.allocated"), allocated, "{stats}");
    let (active, resident) = (number("allocator.active"), number("allocator.resident"));
    assert!(allocated <= active && active <= resident, "{stats}");
    let percentage: f64 = value_of("peak.percentage").parse().unwrap_or(-1.0);
    assert!(percentage > 0.0 && percentage <= 100.0, "a double: {stats}");
    let fragmentation: f64 = value_of("allocator-fragmentation.ratio")
        .parse()
        .unwrap_or(0.0);
    assert!(fragmentation >= 1.0, "active over allocated: {stats}");
    let total: f64 = value_of("fragmentation").parse().unwrap_or(0.0);
    assert!(total > 0.0, "resident over allocated: {stats}");

    assert!(raw.call(&["HELLO", "3"]).starts_with('%'));
    let stats = raw.call(&["MEMORY", "STATS"]);
    assert!(stats.starts_with("%21\r\n"), "{stats}");
    assert!(
        stats.contains("$15\r\npeak.percentage\r\n,"),
        "a RESP3 double: {stats}"
    );
    assert!(raw.call(&["MEMORY", "DOCTOR"]).contains("Resident: "));
    let report = raw.call(&["MEMORY", "MALLOC-STATS"]);
    assert!(
        report.starts_with('='),
        "a verbatim string in RESP3: {report}"
    );
    assert!(
        report.contains("jemalloc statistics") && report.contains("Allocated:"),
        "jemalloc's own report: {report}"
    );
    assert_eq!(raw.call(&["MEMORY", "PURGE"]), "+OK\r\n");
    assert_eq!(
        raw.call(&["MEMORY", "STATS", "now"]),
        err("wrong number of arguments for 'memory|stats' command")
    );
    let info = raw.call(&["INFO", "memory"]);
    for field in [
        "used_memory_peak:",
        "used_memory_peak_perc:",
        "total_system_memory:",
        "allocator_allocated:",
        "allocator_active:",
        "allocator_resident:",
        "allocator_frag_ratio:",
        "rss_overhead_ratio:",
        "mem_fragmentation_ratio:",
        "mem_fragmentation_bytes:",
        "mem_allocator:jemalloc-5.",
    ] {
        assert!(info.contains(field), "{field} missing: {info}");
    }
}

#[test]
fn info_and_config_report_what_the_server_really_has() {
    let (server, _dir) = Server::start_resp(&["--fsync", "interval=5"]);
    let mut raw = RawResp::connect(server.resp_address());
    run_counted_commands(&mut raw);
    let info = raw.call(&["INFO"]);
    for section in [
        "# Server",
        "# Clients",
        "# Memory",
        "# Persistence",
        "# Stats",
        "# Replication",
        "# CPU",
        "# Errorstats",
        "# Cluster",
        "# Keyspace",
    ] {
        assert!(info.contains(section), "INFO lacks {section}: {info}");
    }
    // redis-py's own test set-up reads it, and tools pick cluster clients by it.
    assert!(info.contains("\r\ncluster_enabled:0\r\n"), "{info}");
    assert!(!info.contains("# Commandstats"), "only INFO all has it");
    // One blank line between sections and none after the last, as Redis
    // writes them.
    let two = raw.call(&["INFO", "server", "clients"]);
    assert!(two.contains("\r\n\r\n# Clients\r\n"), "{two:?}");
    assert!(!two.ends_with("\r\n\r\n\r\n"), "{two:?}");
    assert!(info.contains("walrus_fsync:interval=5"), "{info}");
    assert!(info.contains("role:master"), "{info}");
    assert!(info.contains("errorstat_ERR:count=2"), "{info}");
    assert!(info.contains("db0:keys=2,expires=0"), "{info}");
    let used = info
        .lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|value| value.trim().parse::<u64>().ok())
        .expect("used_memory");
    assert!(used > 64 << 10, "allocated memory is real: {used}");
    let commands = raw.call(&["INFO", "commandstats"]);
    assert!(
        commands.contains("cmdstat_incr:calls=2,")
            && commands.contains("rejected_calls=1,failed_calls=1"),
        "{commands}"
    );
    assert!(commands.contains("cmdstat_set:calls=2,"), "{commands}");
    let processed = info_number(&mut raw, "stats", "total_commands_processed");
    assert!(processed >= 6, "{processed}");
    assert!(info_number(&mut raw, "stats", "total_connections_received") >= 1);
    assert_eq!(raw.call(&["CONFIG", "RESETSTAT"]), "+OK\r\n");
    let commands = raw.call(&["INFO", "commandstats"]);
    assert!(!commands.contains("cmdstat_set"), "{commands}");
    // As in Redis, INFO's counts start again too (redis-py's own suite
    // checks that the commands processed go down).
    let processed_since = info_number(&mut raw, "stats", "total_commands_processed");
    assert!(processed_since <= 2, "{processed_since} after a reset");
    assert_eq!(
        info_number(&mut raw, "stats", "total_connections_received"),
        0
    );
    assert_eq!(info_number(&mut raw, "stats", "total_error_replies"), 0);

    // hz paces the expiry sweeper, live, within Redis's 1 to 500.
    assert_eq!(raw.call(&["CONFIG", "SET", "hz", "100"]), "+OK\r\n");
    assert_eq!(
        raw.call(&["CONFIG", "GET", "hz"]),
        "*2\r\n$2\r\nhz\r\n$3\r\n100\r\n"
    );
    assert_eq!(raw.call(&["CONFIG", "SET", "hz", "1000"]), "+OK\r\n");
    assert!(
        raw.call(&["INFO", "server"])
            .contains("\r\nhz:500\r\nconfigured_hz:500\r\n")
    );
    assert!(
        raw.call(&["CONFIG", "SET", "hz", "-1"])
            .contains("argument must be between 0 and")
    );
    assert_eq!(raw.call(&["CONFIG", "SET", "hz", "10"]), "+OK\r\n");
    let config = raw.call(&["CONFIG", "GET", "*"]);
    for (name, value) in [
        ("databases", "16"),
        ("appendfsync", "everysec"),
        ("appendonly", "yes"),
    ] {
        assert!(
            config.contains(&format!(
                "${}\r\n{name}\r\n${}\r\n{value}\r\n",
                name.len(),
                value.len()
            )),
            "{name}={value} in {config}"
        );
    }
    assert!(raw
        .call(&["CONFIG", "SET", "proto-max-bulk-len", "10"])
        .starts_with("-ERR CONFIG SET failed (possibly related to argument 'proto-max-bulk-len') - can't set immutable config"));
    assert!(
        raw.call(&["CONFIG", "SET", "no-such-thing", "1"])
            .starts_with(
                "-ERR Unknown option or number of arguments for CONFIG SET - 'no-such-thing'"
            )
    );
    // A setting named twice is refused before anything is checked, as in Redis.
    assert_eq!(
        raw.call(&[
            "CONFIG",
            "SET",
            "databases",
            "5",
            "TIMEOUT",
            "6",
            "timeout",
            "7"
        ]),
        "-ERR CONFIG SET failed (possibly related to argument 'timeout') - duplicate parameter\r\n"
    );
    assert_eq!(
        raw.call(&["CONFIG", "GET", "timeout"]),
        "*2\r\n$7\r\ntimeout\r\n$1\r\n0\r\n"
    );
    // CLIENT NO-EVICT and NO-TOUCH take ON or OFF only.
    assert_eq!(raw.call(&["CLIENT", "NO-EVICT", "on"]), "+OK\r\n");
    assert_eq!(
        raw.call(&["CLIENT", "NO-TOUCH", "maybe"]),
        "-ERR syntax error\r\n"
    );
    // Under an interval policy nothing says when a write reaches the disk.
    assert!(raw.call(&["WAITAOF", "1", "0", "0"]).starts_with(
        "-ERR WAITAOF cannot be used when numlocal is set but appendfsync is everysec"
    ));
    assert_eq!(raw.call(&["WAITAOF", "0", "0", "0"]), "*2\r\n:0\r\n:0\r\n");
}

/// `CONFIG SET timeout N` changes the idle timeout while the server runs: an
/// idle client is disconnected, a busy one is not; bad values and settings
/// fixed at start are refused and change nothing, even beside a good pair.
#[test]
fn config_set_timeout_disconnects_idle_clients_live() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut admin = RawResp::connect(server.resp_address());
    let mut idle = RawResp::connect(server.resp_address());
    assert_eq!(idle.call(&["PING"]), "+PONG\r\n");
    // Subscribers and monitors wait for pushes: never idle, as in Redis.
    let mut subscriber = RawResp::connect(server.resp_address());
    assert!(subscriber.call(&["SUBSCRIBE", "c"]).contains("subscribe"));
    let mut monitor = RawResp::connect(server.resp_address());
    assert_eq!(monitor.call(&["MONITOR"]), "+OK\r\n");
    assert_eq!(
        admin.call(&["CONFIG", "GET", "timeout"]),
        "*2\r\n$7\r\ntimeout\r\n$1\r\n0\r\n"
    );
    for (value, why) in [
        ("soon", "argument couldn't be parsed into an integer"),
        ("-1", "argument must be between 0 and 2147483647 inclusive"),
    ] {
        assert_eq!(
            admin.call(&["CONFIG", "SET", "timeout", value]),
            format!("-ERR CONFIG SET failed (possibly related to argument 'timeout') - {why}\r\n")
        );
    }
    assert!(
        admin
            .call(&["CONFIG", "SET", "timeout", "1", "databases", "32"])
            .starts_with("-ERR CONFIG SET failed (possibly related to argument 'databases')")
    );
    assert_eq!(
        admin.call(&["CONFIG", "GET", "timeout"]),
        "*2\r\n$7\r\ntimeout\r\n$1\r\n0\r\n",
        "a refused CONFIG SET changes nothing"
    );

    assert_eq!(admin.call(&["CONFIG", "SET", "timeout", "1"]), "+OK\r\n");
    assert_eq!(
        admin.call(&["CONFIG", "GET", "timeout"]),
        "*2\r\n$7\r\ntimeout\r\n$1\r\n1\r\n"
    );
    // The admin stays busy (a command every 200 ms) while the other idles
    // past the timeout; the sweep runs once a second.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(3_500) {
        assert_eq!(admin.call(&["PING"]), "+PONG\r\n", "a busy client stays");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(idle.is_closed(), "the idle client was disconnected");
    assert_eq!(subscriber.call(&["PING"]), "*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    assert!(
        monitor
            .reply()
            .is_some_and(|line| line.contains("\"PING\"")),
        "the monitor stays, seeing the admin's PINGs"
    );
    assert_eq!(admin.call(&["CONFIG", "SET", "timeout", "0"]), "+OK\r\n");
    let mut later = RawResp::connect(server.resp_address());
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(later.call(&["PING"]), "+PONG\r\n", "0 turns it off again");
}

/// The snapshot files in a data directory, by name.
fn snapshot_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("data dir")
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".snap"))
        .collect();
    names.sort();
    names
}

/// SAVE writes a snapshot before it answers; BGSAVE and BGREWRITEAOF start
/// one and answer at once, as Redis words it, and the snapshot appears.
#[test]
fn save_and_bgsave_write_a_snapshot() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    assert_eq!(raw.call(&["SET", "k", "1"]), "+OK\r\n");
    assert_eq!(raw.call(&["SAVE"]), "+OK\r\n");
    let after_save = snapshot_files(&server.dir);
    assert_eq!(after_save.len(), 1, "{after_save:?}");
    for (command, answer) in [
        (vec!["BGSAVE"], "+Background saving started\r\n"),
        (vec!["BGSAVE", "SCHEDULE"], "+Background saving started\r\n"),
        (
            vec!["BGREWRITEAOF"],
            "+Background append only file rewriting started\r\n",
        ),
    ] {
        let before = snapshot_files(&server.dir);
        assert_eq!(raw.call(&["INCR", "k"]).chars().next(), Some(':'));
        assert_eq!(raw.call(&command), answer, "{command:?}");
        let started = std::time::Instant::now();
        while snapshot_files(&server.dir) == before {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{command:?} wrote no snapshot"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
    assert!(
        raw.call(&["BGSAVE", "NOW"])
            .starts_with("-ERR syntax error")
    );
    assert_eq!(raw.call(&["GET", "k"]), "$1\r\n4\r\n");
}

/// `/metrics` carries the RESP server's counters: commands by name and
/// outcome, their latency, error codes, connections and protocol errors.
#[test]
fn resp_counters_are_on_the_metrics_page() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    run_counted_commands(&mut raw);
    // A request that is not RESP closes its connection.
    let mut broken = std::net::TcpStream::connect(server.resp_address()).expect("connect");
    std::io::Write::write_all(&mut broken, b"*1\r\n$x\r\n").expect("send");
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut broken, &mut rest);

    // The broken connection's task may still be finishing: wait (bounded)
    // until the gauge has seen it go.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let page = loop {
        let page = crate::server::get(server.address, "/metrics").text();
        if page.contains("walrus_resp_connections 1\n") || std::time::Instant::now() > deadline {
            break page;
        }
        thread::sleep(std::time::Duration::from_millis(20));
    };
    for line in [
        "walrus_resp_commands_total{command=\"set\",outcome=\"ok\"} 2",
        "walrus_resp_commands_total{command=\"incr\",outcome=\"ok\"} 1",
        "walrus_resp_commands_total{command=\"incr\",outcome=\"failed\"} 1",
        "walrus_resp_commands_total{command=\"incr\",outcome=\"rejected\"} 1",
        "walrus_resp_command_duration_seconds_count{command=\"set\"} 2",
        "walrus_resp_errors_total{code=\"ERR\"} 2",
        "walrus_resp_connections 1",
        "walrus_resp_connections_total 2",
        "walrus_resp_protocol_errors_total 1",
        "# TYPE walrus_resp_command_duration_seconds histogram",
    ] {
        assert!(page.contains(line), "{line:?} missing from:\n{page}");
    }
}

/// CLIENT LIST shows every open connection with its name and database;
/// CLIENT KILL closes the ones its filters name and spares the sender.
#[test]
fn client_list_and_kill_see_every_connection() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut admin = RawResp::connect(server.resp_address());
    let mut other = RawResp::connect(server.resp_address());
    assert_eq!(admin.call(&["CLIENT", "SETNAME", "admin"]), "+OK\r\n");
    assert_eq!(other.call(&["SELECT", "3"]), "+OK\r\n");
    assert_eq!(other.call(&["PING"]), "+PONG\r\n");
    // What redis-py and node-redis send on connecting.
    assert_eq!(
        other.call(&["CLIENT", "SETINFO", "LIB-NAME", "redis-py"]),
        "+OK\r\n"
    );
    assert_eq!(
        other.call(&["CLIENT", "SETINFO", "lib-ver", "8.0.1"]),
        "+OK\r\n"
    );
    assert_eq!(
        other.call(&["CLIENT", "SETINFO", "LIB-VER", "8 beta"]),
        "-ERR lib-ver cannot contain spaces, newlines or special characters.\r\n"
    );
    assert_eq!(
        other.call(&["CLIENT", "SETINFO", "LIB-COLOUR", "red"]),
        "-ERR Unrecognized option 'LIB-COLOUR'\r\n"
    );
    let info = other.call(&["CLIENT", "INFO"]);
    for field in [
        " db=3 ",
        " cmd=client|info ",
        " lib-name=redis-py ",
        " lib-ver=8.0.1",
    ] {
        assert!(info.contains(field), "{field:?} in CLIENT INFO: {info}");
    }
    assert!(
        info.contains(" addr=127.0.0.1:"),
        "the CLIENT LIST line: {info}"
    );
    let other_id = other.client_id();

    // The session's transaction, watches and buffers are real figures: the
    // admin's line as another client sees it mid-transaction, and its own.
    assert_eq!(admin.call(&["WATCH", "w1", "w2"]), "+OK\r\n");
    assert_eq!(admin.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(admin.call(&["SET", "queued", "1"]), "+QUEUED\r\n");
    let seen = other.call(&["CLIENT", "LIST"]);
    let admin_line = seen
        .lines()
        .find(|line| line.contains(" name=admin "))
        .expect("the admin's line");
    assert!(admin_line.contains(" multi=1 watch=2 "), "{admin_line}");
    assert_eq!(admin.call(&["DISCARD"]), "+OK\r\n");
    let info = admin.call(&["CLIENT", "INFO"]);
    // As in Redis, the request being served still counts in its own qbuf:
    // `*2\r\n$6\r\nCLIENT\r\n$4\r\nINFO\r\n` is 26 bytes.
    for field in [" multi=-1 ", " watch=0 ", " qbuf=26 "] {
        assert!(info.contains(field), "{field} in {info}");
    }
    let number = |name: &str| -> u64 {
        let start = info.find(&format!(" {name}=")).expect(name) + name.len() + 2;
        let digits: String = info[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().expect(name)
    };
    assert!(number("rbs") > 0, "{info}");
    assert_eq!(
        number("qbuf-free") + 26,
        number("rbs"),
        "nothing unread but the request: {info}"
    );
    assert!(
        number("tot-mem") > number("rbs"),
        "read and reply buffers: {info}"
    );
    let list = admin.call(&["CLIENT", "LIST"]);
    let lines: Vec<&str> = list
        .lines()
        .filter(|line| line.starts_with("id="))
        .collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(
        lines
            .iter()
            .any(|line| line.contains(" name=admin ") && line.contains(" cmd=client|list ")),
        "{list}"
    );
    let other_line = lines
        .iter()
        .find(|line| line.starts_with(&format!("id={other_id} ")))
        .expect("the other connection is listed");
    assert!(
        other_line.contains(" db=3 ")
            && other_line.contains(" cmd=client ")
            && other_line.contains(" lib-name=redis-py lib-ver=8.0.1"),
        "{other_line}"
    );
    let addr = other_line
        .split(' ')
        .find_map(|field| field.strip_prefix("addr="))
        .expect("addr field")
        .to_string();
    let only = admin.call(&["CLIENT", "LIST", "ID", &other_id]);
    assert_eq!(
        only.lines().filter(|line| line.starts_with("id=")).count(),
        1
    );

    assert_eq!(
        admin.call(&["CLIENT", "KILL", "127.0.0.1:1"]),
        "-ERR No such client\r\n"
    );
    assert_eq!(
        admin.call(&["CLIENT", "KILL", "ADDR", "127.0.0.1:1"]),
        ":0\r\n"
    );
    // SKIPME yes (the default) spares the sender, even when the filter names it.
    let admin_addr = format!("127.0.0.1:{}", server.resp_address().port());
    assert_eq!(
        admin.call(&["CLIENT", "KILL", "LADDR", &admin_addr, "ID", &other_id]),
        ":1\r\n"
    );
    assert!(other.is_closed(), "the killed connection is closed");
    assert_eq!(admin.call(&["PING"]), "+PONG\r\n");
    let list = admin.call(&["CLIENT", "LIST"]);
    assert!(!list.contains(&format!("addr={addr} ")), "{list}");
    assert_eq!(
        admin.call(&["CLIENT", "KILL", "ID", "0"]),
        "-ERR client-id should be greater than 0\r\n"
    );
}

#[test]
fn slowlog_keeps_the_commands_over_its_threshold_newest_first() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    assert_eq!(raw.call(&["SLOWLOG", "LEN"]), ":0\r\n", "10 ms by default");
    // The default threshold is 10 ms. Whether a write stays under it depends
    // on this disk's sync time, so the threshold is read, not raced.
    assert_eq!(raw.call(&["SET", "fast", "1"]), "+OK\r\n");
    assert_eq!(
        raw.call(&["CONFIG", "GET", "slowlog-log-slower-than"]),
        "*2\r\n$23\r\nslowlog-log-slower-than\r\n$5\r\n10000\r\n"
    );
    assert_eq!(
        raw.call(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]),
        "+OK\r\n"
    );
    assert_eq!(raw.call(&["CLIENT", "SETNAME", "logger"]), "+OK\r\n");
    assert_eq!(raw.call(&["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(raw.call(&["GET", "k"]), "$1\r\nv\r\n");
    // The newest two: GET, then SET, each with its arguments, the client's
    // address and name.
    let latest = raw.call(&["SLOWLOG", "GET", "2"]);
    let get_at = latest.find("$3\r\nGET\r\n$1\r\nk\r\n").expect(&latest);
    let set_at = latest
        .find("$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n")
        .expect(&latest);
    assert!(
        latest.starts_with("*2\r\n*6\r\n:") && get_at < set_at,
        "{latest}"
    );
    assert_eq!(latest.matches("$6\r\nlogger\r\n").count(), 2, "{latest}");
    let long_key = "x".repeat(200);
    raw.call(&["GET", &long_key]);
    let trimmed = raw.call(&["SLOWLOG", "GET", "1"]);
    assert!(trimmed.contains("... (72 more bytes)"), "{trimmed}");

    assert_eq!(
        raw.call(&["CONFIG", "SET", "slowlog-max-len", "2"]),
        "+OK\r\n"
    );
    assert_eq!(
        raw.call(&["SLOWLOG", "LEN"]),
        ":2\r\n",
        "a shorter log drops the oldest"
    );
    assert_eq!(
        raw.call(&["CONFIG", "SET", "slowlog-log-slower-than", "-1"]),
        "+OK\r\n"
    );
    assert_eq!(raw.call(&["SLOWLOG", "RESET"]), "+OK\r\n");
    raw.call(&["GET", "k"]);
    assert_eq!(raw.call(&["SLOWLOG", "LEN"]), ":0\r\n", "-1 turns it off");
    assert_eq!(
        raw.call(&["SLOWLOG", "GET", "-2"]),
        err("count should be greater than or equal to -1")
    );
    assert_eq!(
        raw.call(&["CONFIG", "GET", "slowlog-*"]),
        "*4\r\n$23\r\nslowlog-log-slower-than\r\n$2\r\n-1\r\n$15\r\nslowlog-max-len\r\n$1\r\n2\r\n"
    );
}

#[test]
fn reset_role_wait_and_latency_answer_as_redis_does_on_a_single_node() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    // RESET: out of the transaction (nothing applied), database 0, RESP2.
    assert_eq!(raw.call(&["SELECT", "3"]), "+OK\r\n");
    assert!(raw.call(&["HELLO", "3"]).starts_with('%'));
    assert_eq!(raw.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(raw.call(&["SET", "queued", "1"]), "+QUEUED\r\n");
    assert_eq!(raw.call(&["RESET"]), "+RESET\r\n");
    assert_eq!(raw.call(&["EXEC"]), err("EXEC without MULTI"));
    assert_eq!(
        raw.call(&["GET", "queued"]),
        "$-1\r\n",
        "RESP2 again, nothing applied"
    );
    let info = raw.call(&["CLIENT", "INFO"]);
    assert!(
        info.contains(" db=0 ") && info.contains(" resp=2 "),
        "{info}"
    );
    // The connection's real socket descriptor, as Redis shows it (-1 is
    // for clients with no socket).
    let fd: i32 = info
        .split(' ')
        .find_map(|field| field.strip_prefix("fd="))
        .and_then(|fd| fd.parse().ok())
        .expect(&info);
    assert!(fd > 2, "{info}");

    assert_eq!(raw.call(&["ROLE"]), "*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n");
    // A master already: REPLICAOF NO ONE changes nothing, as in Redis (test
    // harnesses send it to reset a server). Following a Redis master is not
    // how walrus replicates, and it says what is.
    assert_eq!(raw.call(&["REPLICAOF", "NO", "ONE"]), "+OK\r\n");
    assert_eq!(raw.call(&["SLAVEOF", "no", "one"]), "+OK\r\n");
    let refused = raw.call(&["REPLICAOF", "127.0.0.1", "6379"]);
    assert!(
        refused.starts_with("-ERR walrus does not replicate from a Redis master")
            && refused.contains("walrus cluster add-learner"),
        "{refused}"
    );
    assert_eq!(
        raw.call(&["REPLICAOF", "NO ONE"]),
        "-ERR wrong number of arguments for 'replicaof' command\r\n"
    );
    assert_eq!(raw.call(&["ROLE"]), "*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n");
    assert_eq!(raw.call(&["WAIT", "0", "0"]), ":0\r\n");
    let started = std::time::Instant::now();
    assert_eq!(raw.call(&["WAIT", "1", "150"]), ":0\r\n", "no replica ever");
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(raw.call(&["WAIT", "1", "-1"]), err("timeout is negative"));
    // WAITAOF: every answered write is synced already (fsync always), and
    // no replica ever holds one.
    assert_eq!(raw.call(&["WAITAOF", "1", "0", "0"]), "*2\r\n:1\r\n:0\r\n");
    let started = std::time::Instant::now();
    assert_eq!(
        raw.call(&["WAITAOF", "0", "1", "100"]),
        "*2\r\n:1\r\n:0\r\n"
    );
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(
        raw.call(&["WAITAOF", "2", "0", "0"]),
        err("value is out of range, value must between 0 and 1")
    );
    assert_eq!(
        raw.call(&["WAITAOF", "1", "-1", "0"]),
        err("value is out of range, must be positive")
    );
    assert_eq!(
        raw.call(&["WAITAOF", "1", "0", "-1"]),
        err("timeout is negative")
    );
    assert!(
        raw.call(&["WAITAOF", "1", "0"])
            .starts_with("-ERR wrong number of arguments")
    );

    raw.call(&["SET", "k", "v"]);
    raw.call(&["GET", "k"]);
    let histogram = raw.call(&["LATENCY", "HISTOGRAM", "set", "nosuch"]);
    assert!(
        histogram
            .starts_with("*2\r\n$3\r\nset\r\n*4\r\n+calls\r\n:1\r\n+histogram_usec\r\n*2\r\n:"),
        "{histogram}"
    );
    assert!(
        histogram.ends_with(":1\r\n"),
        "the last bucket holds the call: {histogram}"
    );
    assert_eq!(raw.call(&["LATENCY", "LATEST"]), "*0\r\n");
    assert_eq!(raw.call(&["LATENCY", "RESET"]), ":0\r\n");
    assert!(
        raw.call(&["LATENCY", "DOCTOR"])
            .contains("The latency monitor is off")
    );
}

/// The latency monitor records a command past its threshold (a MIGRATE
/// that waits out its timeout on a target that never answers), and LATENCY
/// reads it back as Redis shapes it.
#[test]
fn the_latency_monitor_records_what_took_longer_than_its_threshold() {
    // No syncs: a sync slower than the threshold on a busy machine would
    // add an `aof-fsync-always` event beside the one this test causes.
    let (server, _dir) = Server::start_resp(&["--fsync", "never"]);
    let mut raw = RawResp::connect(server.resp_address());
    assert_eq!(
        raw.call(&["CONFIG", "GET", "latency-monitor-threshold"]),
        "*2\r\n$25\r\nlatency-monitor-threshold\r\n$1\r\n0\r\n",
        "off by default, as in Redis"
    );
    assert_eq!(
        raw.call(&["CONFIG", "SET", "latency-monitor-threshold", "-1"]),
        err(
            "CONFIG SET failed (possibly related to argument 'latency-monitor-threshold') - \
             argument must be between 0 and 9223372036854775807 inclusive"
        )
    );
    assert_eq!(
        raw.call(&["CONFIG", "SET", "latency-monitor-threshold", "100"]),
        "+OK\r\n"
    );
    // A target that accepts the connection and never replies.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("address").port().to_string();
    assert_eq!(raw.call(&["SET", "k", "v"]), "+OK\r\n");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let migrated = raw.call(&["MIGRATE", "127.0.0.1", &silent_port, "k", "0", "300"]);
    assert!(migrated.starts_with("-IOERR"), "{migrated}");
    drop(silent);

    let latest = raw.call(&["LATENCY", "LATEST"]);
    let fields: Vec<&str> = latest.split("\r\n").collect();
    assert_eq!(&fields[..4], ["*1", "*4", "$7", "command"], "{latest}");
    let at: u64 = fields[4][1..].parse().expect("a time");
    assert!(at >= before && at <= before + 5, "{latest}");
    let took: u64 = fields[5][1..].parse().expect("milliseconds");
    assert!((300..5_000).contains(&took), "{latest}");
    assert_eq!(fields[6], format!(":{took}"), "the worst ever: {latest}");
    assert_eq!(
        raw.call(&["LATENCY", "HISTORY", "command"]),
        format!("*1\r\n*2\r\n:{at}\r\n:{took}\r\n")
    );
    assert_eq!(raw.call(&["LATENCY", "HISTORY", "nosuch"]), "*0\r\n");
    let graph = raw.call(&["LATENCY", "GRAPH", "command"]);
    assert!(
        graph.contains(&format!("command - high {took} ms, low {took} ms")),
        "{graph}"
    );
    assert_eq!(
        raw.call(&["LATENCY", "GRAPH", "fast-command"]),
        err("No samples available for event 'fast-command'")
    );
    let doctor = raw.call(&["LATENCY", "DOCTOR"]);
    assert!(
        doctor.contains("1. command: 1 slow second kept"),
        "{doctor}"
    );
    assert!(doctor.contains("SLOWLOG GET"), "{doctor}");
    assert_eq!(raw.call(&["LATENCY", "RESET", "nosuch"]), ":0\r\n");
    assert_eq!(raw.call(&["LATENCY", "RESET", "command"]), ":1\r\n");
    assert_eq!(raw.call(&["LATENCY", "LATEST"]), "*0\r\n");
    assert_eq!(
        raw.call(&["LATENCY", "HELP", "extra"]),
        err("wrong number of arguments for 'latency|help' command")
    );
    assert_eq!(
        raw.call(&["LATENCY", "NOSUCH"]),
        err("unknown subcommand 'NOSUCH'. Try LATENCY HELP.")
    );
    // Redis's `fast` flag: GET has it, SET (which can take GET) does not.
    let info = raw.call(&["COMMAND", "INFO", "get", "set"]);
    assert!(info.contains("+readonly\r\n+fast\r\n"), "{info}");
    assert!(
        info.contains("$3\r\nset\r\n:-3\r\n*1\r\n+write\r\n"),
        "{info}"
    );
    // CONFIG RESETSTAT starts the histograms again, as in Redis.
    assert_eq!(raw.call(&["CONFIG", "RESETSTAT"]), "+OK\r\n");
    assert_eq!(raw.call(&["LATENCY", "HISTOGRAM", "set", "get"]), "*0\r\n");
    // Subcommands are counted apart, as Redis 7 counts them.
    let histogram = raw.call(&["LATENCY", "HISTOGRAM"]);
    assert!(
        histogram.starts_with("*4\r\n$16\r\nconfig|resetstat\r\n*4\r\n+calls\r\n:1\r\n")
            && histogram.contains("$17\r\nlatency|histogram\r\n*4\r\n+calls\r\n:1\r\n"),
        "only the RESETSTAT and the LATENCY HISTOGRAM since: {histogram}"
    );
    raw.call(&["CLIENT", "ID"]);
    raw.call(&["CLIENT", "LIST"]);
    let clients = raw.call(&["LATENCY", "HISTOGRAM", "client"]);
    assert!(
        clients.starts_with("*4\r\n$9\r\nclient|id\r\n")
            && clients.contains("$11\r\nclient|list\r\n"),
        "a container stands for its subcommands: {clients}"
    );
    let one = raw.call(&["LATENCY", "HISTOGRAM", "client|id"]);
    assert!(one.starts_with("*2\r\n$9\r\nclient|id\r\n"), "{one}");
    let stats = raw.call(&["INFO", "commandstats"]);
    assert!(stats.contains("cmdstat_client|id:calls=1,"), "{stats}");
    assert!(!stats.contains("cmdstat_client:"), "{stats}");

    // INFO latencystats: off by default here (it costs each command), with
    // Redis's lines once on, and not among the default sections.
    assert_eq!(
        raw.call(&["INFO", "latencystats"]),
        "$16\r\n# Latencystats\r\n\r\n"
    );
    assert_eq!(
        raw.call(&["CONFIG", "SET", "latency-tracking", "yes"]),
        "+OK\r\n"
    );
    assert_eq!(
        raw.call(&[
            "CONFIG",
            "SET",
            "latency-tracking-info-percentiles",
            "50 99.9 101"
        ]),
        err(
            "CONFIG SET failed (possibly related to argument 'latency-tracking-info-percentiles') - \
             latency-tracking-info-percentiles parameters should sit between [0.0,100.0]"
        )
    );
    assert_eq!(
        raw.call(&[
            "CONFIG",
            "SET",
            "latency-tracking-info-percentiles",
            "50 99.9"
        ]),
        "+OK\r\n"
    );
    raw.call(&["SET", "k", "v"]);
    let latencystats = raw.call(&["INFO", "latencystats"]);
    assert!(
        latencystats.contains("\r\nlatency_percentiles_usec_set:p50=")
            && latencystats.contains(",p99.9="),
        "{latencystats}"
    );
    assert!(!raw.call(&["INFO"]).contains("Latencystats"));
    assert!(
        raw.call(&["INFO", "all"])
            .contains("latency_percentiles_usec_set:")
    );
    assert_eq!(
        raw.call(&["CONFIG", "GET", "latency-tracking*"]),
        "*4\r\n$16\r\nlatency-tracking\r\n$3\r\nyes\r\n\
         $33\r\nlatency-tracking-info-percentiles\r\n$7\r\n50 99.9\r\n"
    );
}

#[test]
fn command_getkeys_and_list_filters_follow_the_command_table() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    assert_eq!(
        raw.call(&["COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2"]),
        "*2\r\n$1\r\na\r\n$1\r\nb\r\n"
    );
    assert_eq!(
        raw.call(&["COMMAND", "GETKEYS", "PING"]),
        err("The command has no key arguments")
    );
    assert_eq!(
        raw.call(&["COMMAND", "GETKEYS", "GET"]),
        err("Invalid number of arguments specified for command")
    );
    assert_eq!(
        raw.call(&["COMMAND", "GETKEYS", "LPUSH", "l", "x"]),
        err("Invalid command specified")
    );
    assert_eq!(
        raw.call(&["COMMAND", "LIST", "FILTERBY", "PATTERN", "incrby*"]),
        "*2\r\n$6\r\nincrby\r\n$11\r\nincrbyfloat\r\n"
    );
    assert_eq!(
        raw.call(&["COMMAND", "LIST", "FILTERBY", "PATTERN", "config|*"]),
        "*5\r\n$10\r\nconfig|get\r\n$11\r\nconfig|help\r\n$16\r\nconfig|resetstat\r\n\
         $14\r\nconfig|rewrite\r\n$10\r\nconfig|set\r\n",
        "subcommands under their full names, as Redis 7 lists them"
    );
    let all = raw.call(&["COMMAND", "LIST"]);
    assert!(
        all.contains("$3\r\nset\r\n") && all.contains("$11\r\nclient|list\r\n"),
        "{all}"
    );
    assert_eq!(
        raw.call(&["COMMAND", "LIST", "FILTERBY", "MODULE", "json"]),
        "*0\r\n"
    );
    let writes = raw.call(&["COMMAND", "LIST", "FILTERBY", "ACLCAT", "write"]);
    assert!(writes.contains("$3\r\nset\r\n") && !writes.contains("$3\r\nget\r\n"));
    assert_eq!(
        raw.call(&["COMMAND", "LIST", "bad_arg"]),
        err("syntax error")
    );
    assert!(raw.call(&["COMMAND", "HELP"]).contains("GETKEYS"));
    // Every "Try X HELP." the errors suggest answers, as Redis's do.
    for (command, line) in [
        ("CLIENT", "+CLIENT <subcommand>"),
        ("CONFIG", "+CONFIG <subcommand>"),
        ("FUNCTION", "+FUNCTION <subcommand>"),
        ("MODULE", "+MODULE <subcommand>"),
    ] {
        let help = raw.call(&[command, "HELP"]);
        assert!(help.starts_with('*'), "{command} HELP: {help}");
        assert!(help.contains(line), "{command} HELP: {help}");
    }
    assert!(raw.call(&["CLIENT", "HELP"]).contains("TRACKINGINFO"));
    // No modules are loaded, and none can be.
    assert_eq!(raw.call(&["MODULE", "LIST"]), "*0\r\n");
    assert_eq!(
        raw.call(&["MODULE", "LOAD", "/tmp/search.so"]),
        "-ERR walrus does not load modules\r\n"
    );
}

#[test]
fn argument_errors_come_in_redis_order() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    raw.call(&["SET", "s", "xxxx"]);
    assert_eq!(raw.call(&["BITCOUNT", "s", "-6", "-7"]), ":0\r\n");
    assert_eq!(raw.call(&["BITCOUNT", "s", "-7", "-6"]), ":4\r\n");
    assert_eq!(
        raw.call(&["BITPOS", "s", "0", "1", "hello", "hello2"]),
        err("syntax error")
    );
    assert_eq!(
        raw.call(&["BITPOS", "s", "a"]),
        err("value is not an integer or out of range")
    );
    assert_eq!(
        raw.call(&["BITPOS", "s", "2"]),
        err("The bit argument must be 1 or 0.")
    );
    assert_eq!(
        raw.call(&["SWAPDB", "44", "a"]),
        err("invalid second DB index")
    );
    assert_eq!(
        raw.call(&["SWAPDB", "44", "0"]),
        err("DB index is out of range")
    );
    raw.call(&["SET", "f", "0"]);
    assert_eq!(
        raw.call(&["INCRBYFLOAT", "f", "+inf"]),
        err("increment would produce NaN or Infinity")
    );
    assert_eq!(
        raw.call(&["INCRBYFLOAT", "f", "nan"]),
        err("value is not a valid float")
    );
    // No password set: the default user takes any, the one-word form is told.
    assert_eq!(raw.call(&["AUTH", "default", "anything"]), "+OK\r\n");
    assert_eq!(
        raw.call(&["AUTH", "someone", "anything"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    // SAVE may not be queued; the transaction is then refused whole.
    raw.call(&["MULTI"]);
    raw.call(&["SET", "foo", "bar"]);
    assert_eq!(
        raw.call(&["SAVE"]),
        err("Command not allowed inside a transaction")
    );
    assert!(raw.call(&["EXEC"]).starts_with("-EXECABORT"));
    assert_eq!(raw.call(&["GET", "foo"]), "$-1\r\n");
    // Several INFO sections at once; a fixed setting "set" to its value.
    let info = raw.call(&["INFO", "cpu", "replication"]);
    assert!(info.contains("# CPU") && info.contains("# Replication") && !info.contains("# Server"));
    assert!(raw.call(&["INFO", "cpu", "all"]).contains("# Server"));
    assert_eq!(raw.call(&["CONFIG", "SET", "maxmemory", "0"]), "+OK\r\n");
    assert!(
        raw.call(&["CONFIG", "SET", "maxmemory", "1"])
            .contains("immutable")
    );
    // walrus never evicts, and says so under Redis's name for it.
    assert_eq!(
        raw.call(&["CONFIG", "GET", "maxmemory-policy"]),
        "*2\r\n$16\r\nmaxmemory-policy\r\n$10\r\nnoeviction\r\n"
    );
    assert_eq!(
        raw.call(&["CONFIG", "SET", "maxmemory-policy", "NoEviction"]),
        "+OK\r\n",
        "a setting's own value, in any case"
    );
    // The policy can be set, as Redis's own tests do before RESTORE …
    // IDLETIME; with no memory limit nothing is evicted under any of them.
    assert_eq!(
        raw.call(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]),
        "+OK\r\n"
    );
    assert!(
        raw.call(&["INFO", "memory"])
            .contains("\r\nmaxmemory_policy:allkeys-lru\r\n")
    );
    assert!(
        raw.call(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lfu"])
            .contains("no LFU policy")
    );
    assert!(
        raw.call(&["CONFIG", "SET", "maxmemory-policy", "sometimes"])
            .contains("must be one of the following")
    );
    assert_eq!(
        raw.call(&["CONFIG", "GET", "maxmemory-policy"]),
        "*2\r\n$16\r\nmaxmemory-policy\r\n$11\r\nallkeys-lru\r\n"
    );
}

#[test]
fn randomkey_returns_every_key_in_turn() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    assert_eq!(raw.call(&["RANDOMKEY"]), "$-1\r\n", "an empty database");
    raw.call(&["SET", "foo", "x"]);
    raw.call(&["SET", "bar", "y"]);
    // Redis's own test: both keys within 100 draws. With fewer keys than
    // RANDOMKEY's window each is drawn half the time, so missing one in 200
    // draws is a 1-in-10^60 event, not chance.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        seen.insert(raw.call(&["RANDOMKEY"]));
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["$3\r\nbar\r\n", "$3\r\nfoo\r\n"]
    );
    raw.call(&["SET", "brief", "z", "PX", "1"]);
    raw.call(&["DEL", "foo", "bar"]);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        raw.call(&["RANDOMKEY"]),
        "$-1\r\n",
        "expired keys are never drawn"
    );
}

#[test]
fn shutdown_stops_the_server_cleanly_and_keeps_every_write() {
    let (mut server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    assert_eq!(raw.call(&["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(
        raw.call(&["SHUTDOWN", "NOSAVE", "SAVE"]),
        err("syntax error")
    );
    assert_eq!(raw.call(&["SHUTDOWN", "LATER"]), err("syntax error"));
    assert_eq!(
        raw.call(&["SHUTDOWN", "ABORT"]),
        err("No shutdown in progress.")
    );
    raw.call(&["MULTI"]);
    assert_eq!(
        raw.call(&["SHUTDOWN"]),
        err("Command not allowed inside a transaction")
    );
    assert!(raw.call(&["EXEC"]).starts_with("-EXECABORT"));
    assert!(snapshot_files(&server.dir).is_empty(), "no snapshot yet");

    // As from Redis: no reply, the connection closes, the process exits 0.
    raw.send_raw(b"*2\r\n$8\r\nSHUTDOWN\r\n$4\r\nSAVE\r\n");
    assert_eq!(raw.reply(), None, "closed without a reply");
    let status = server
        .wait_exit(Duration::from_secs(15))
        .expect("the server stops by itself");
    assert!(status.success(), "{status:?}");
    // A clean stop takes none of its own: this one is SAVE's.
    assert_eq!(
        snapshot_files(&server.dir).len(),
        1,
        "SAVE took a snapshot first"
    );
    server.restart();
    let mut again = RawResp::connect(server.resp_address());
    assert_eq!(again.call(&["GET", "k"]), "$1\r\nv\r\n");
}

#[test]
fn clients_past_maxclients_are_refused_and_config_set_changes_it_live() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut admin = RawResp::connect(server.resp_address());
    let mut second = RawResp::connect(server.resp_address());
    assert_eq!(second.call(&["PING"]), "+PONG\r\n");
    assert_eq!(
        admin.call(&["CONFIG", "SET", "maxclients", "0"]),
        err(
            "CONFIG SET failed (possibly related to argument 'maxclients') - argument must be between 1 and 65536 inclusive"
        )
    );
    assert_eq!(admin.call(&["CONFIG", "SET", "maxclients", "2"]), "+OK\r\n");
    assert_eq!(
        admin.call(&["CONFIG", "GET", "maxclients"]),
        "*2\r\n$10\r\nmaxclients\r\n$1\r\n2\r\n"
    );
    // A third client is told, as Redis tells it, and closed; the two
    // connected ones keep working.
    let mut third = RawResp::connect(server.resp_address());
    assert_eq!(
        third.reply().as_deref(),
        Some(err("max number of clients reached").as_str())
    );
    assert!(third.is_closed());
    assert_eq!(second.call(&["PING"]), "+PONG\r\n");
    let stats = admin.call(&["INFO", "stats"]);
    assert!(stats.contains("rejected_connections:1\r\n"), "{stats}");
    assert!(
        admin
            .call(&["INFO", "clients"])
            .contains("maxclients:2\r\n")
    );
    // Room again: a new client is served.
    assert_eq!(admin.call(&["CONFIG", "SET", "maxclients", "3"]), "+OK\r\n");
    let mut fourth = RawResp::connect(server.resp_address());
    assert_eq!(fourth.call(&["PING"]), "+PONG\r\n");
}

/// A number INFO reports as `field:N` in `section`.
fn info_number(raw: &mut RawResp, section: &str, field: &str) -> u64 {
    let info = raw.call(&["INFO", section]);
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in INFO {section}: {info}"))
}

/// Polls `done` every `pause`, at most `attempts` times; whether it held.
fn eventually(attempts: u32, pause: Duration, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..attempts {
        if done() {
            return true;
        }
        thread::sleep(pause);
    }
    false
}

/// INFO's `blocked_clients`, read by another connection.
fn blocked_clients(raw: &mut RawResp) -> u64 {
    info_number(raw, "clients", "blocked_clients")
}

/// CLIENT UNBLOCK ends a WAIT or WAITAOF as its timeout would, or with
/// Redis's `-UNBLOCKED` error. The waiting connection shows as blocked
/// meanwhile (INFO, CLIENT LIST), and one that is not waiting is left alone.
#[test]
fn client_unblock_ends_a_wait_as_its_timeout_would_or_with_an_error() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut admin = RawResp::connect(server.resp_address());
    let mut waiter = RawResp::connect(server.resp_address());
    let id = waiter.call(&["CLIENT", "ID"]);
    let id = id.trim().trim_start_matches(':');
    assert_eq!(
        admin.call(&["CLIENT", "UNBLOCK", id]),
        ":0\r\n",
        "not waiting"
    );
    let wait_until_blocked = |admin: &mut RawResp| {
        assert!(
            eventually(200, Duration::from_millis(10), || {
                blocked_clients(admin) == 1
            }),
            "the waiter never showed as blocked"
        );
    };

    // A single node has no replica, so WAIT 1 with no timeout waits for ever.
    waiter.send(&[b"WAIT", b"1", b"0"]);
    wait_until_blocked(&mut admin);
    let line = admin.call(&["CLIENT", "LIST", "ID", id]);
    assert!(
        line.contains(" flags=b ") && line.contains(" cmd=wait "),
        "{line}"
    );
    assert_eq!(admin.call(&["CLIENT", "UNBLOCK", id]), ":1\r\n");
    assert_eq!(
        waiter.reply().as_deref(),
        Some(":0\r\n"),
        "answered as at its timeout: no replica holds the writes"
    );
    assert_eq!(blocked_clients(&mut admin), 0);
    assert_eq!(admin.call(&["CLIENT", "UNBLOCK", id, "timeout"]), ":0\r\n");

    waiter.send(&[b"WAITAOF", b"0", b"1", b"0"]);
    wait_until_blocked(&mut admin);
    assert_eq!(admin.call(&["CLIENT", "UNBLOCK", id, "ERROR"]), ":1\r\n");
    assert_eq!(
        waiter.reply().as_deref(),
        Some("-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n")
    );
    assert_eq!(
        waiter.call(&["PING"]),
        "+PONG\r\n",
        "the connection serves on"
    );
    assert_eq!(blocked_clients(&mut admin), 0);

    assert_eq!(
        admin.call(&["CLIENT", "UNBLOCK", id, "later"]),
        err("CLIENT UNBLOCK reason should be TIMEOUT or ERROR")
    );
    assert_eq!(
        admin.call(&["CLIENT", "UNBLOCK", "me"]),
        err("value is not an integer or out of range")
    );
    assert_eq!(
        admin.call(&["CLIENT", "UNBLOCK"]),
        err("wrong number of arguments for 'client|unblock' command")
    );
}

/// A connection waits for its kill twice over while CLIENT PAUSE holds one
/// of its writes: in its read loop and in the pause. CLIENT KILL must end
/// the wait, and an idle connection's, at once.
#[test]
fn client_kill_closes_a_connection_held_by_client_pause_and_an_idle_one() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut admin = RawResp::connect(server.resp_address());
    let mut held = RawResp::connect(server.resp_address());
    let mut idle = RawResp::connect(server.resp_address());
    let (held_id, idle_id) = (held.client_id(), idle.client_id());
    assert_eq!(
        admin.call(&["CLIENT", "PAUSE", "60000", "WRITE"]),
        "+OK\r\n"
    );
    held.send(&[b"SET", b"k", b"v"]);
    assert!(
        eventually(200, Duration::from_millis(10), || {
            blocked_clients(&mut admin) == 1
        }),
        "the SET waits"
    );
    for id in [&held_id, &idle_id] {
        assert_eq!(admin.call(&["CLIENT", "KILL", "ID", id]), ":1\r\n");
    }
    // Closed, not timed out: the pause would hold it for a minute.
    assert!(held.is_closed(), "the held connection is closed");
    assert!(idle.is_closed(), "the idle connection is closed");
    assert_eq!(admin.call(&["CLIENT", "UNPAUSE"]), "+OK\r\n");
    assert_eq!(
        admin.call(&["GET", "k"]),
        "$-1\r\n",
        "the held SET never ran"
    );
}

/// CLIENT PAUSE WRITE holds writes (and a transaction that writes) from every
/// client until CLIENT UNPAUSE, while reads and requests refused anyway are
/// answered at once; CLIENT PAUSE ALL holds everything until its timeout.
#[test]
fn client_pause_holds_writes_or_everything_until_unpause_or_timeout() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut admin = RawResp::connect(server.resp_address());
    let mut writer = RawResp::connect(server.resp_address());
    let mut transaction = RawResp::connect(server.resp_address());
    assert_eq!(writer.call(&["SET", "k", "before"]), "+OK\r\n");
    assert_eq!(transaction.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(transaction.call(&["INCR", "n"]), "+QUEUED\r\n");

    assert_eq!(
        admin.call(&["CLIENT", "PAUSE", "60000", "WRITE"]),
        "+OK\r\n"
    );
    assert_eq!(writer.call(&["GET", "k"]), "$6\r\nbefore\r\n", "reads run");
    assert_eq!(
        writer.call(&["SET", "k"]),
        err("wrong number of arguments for 'set' command"),
        "a refused request is answered at once"
    );
    writer.send(&[b"SET", b"k", b"after"]);
    transaction.send(&[b"EXEC"]);
    assert!(
        eventually(200, Duration::from_millis(10), || {
            blocked_clients(&mut admin) == 2
        }),
        "the SET and the EXEC wait"
    );
    assert_eq!(admin.call(&["GET", "k"]), "$6\r\nbefore\r\n");
    assert_eq!(admin.call(&["CLIENT", "UNPAUSE"]), "+OK\r\n");
    assert_eq!(writer.reply().as_deref(), Some("+OK\r\n"));
    assert_eq!(transaction.reply().as_deref(), Some("*1\r\n:1\r\n"));
    assert_eq!(admin.call(&["GET", "k"]), "$5\r\nafter\r\n");
    assert_eq!(blocked_clients(&mut admin), 0);

    // ALL holds reads too, until the timeout.
    assert_eq!(admin.call(&["CLIENT", "PAUSE", "300"]), "+OK\r\n");
    let asked = std::time::Instant::now();
    assert_eq!(writer.call(&["PING"]), "+PONG\r\n");
    assert!(
        asked.elapsed() >= Duration::from_millis(200),
        "PING waited only {:?}",
        asked.elapsed()
    );

    assert_eq!(
        admin.call(&["CLIENT", "PAUSE", "abc"]),
        err("timeout is not an integer or out of range")
    );
    assert_eq!(
        admin.call(&["CLIENT", "PAUSE", "-1"]),
        err("timeout is negative")
    );
    assert_eq!(
        admin.call(&["CLIENT", "PAUSE", "10", "SOMETIMES"]),
        err("syntax error")
    );

    // While paused, the sweeper deletes nothing (a read still finds the key
    // gone); after, it does, and INFO counts it.
    let expired_keys = |raw: &mut RawResp| info_number(raw, "stats", "expired_keys");
    assert_eq!(admin.call(&["SET", "brief", "x", "PX", "20"]), "+OK\r\n");
    assert_eq!(
        admin.call(&["CLIENT", "PAUSE", "60000", "WRITE"]),
        "+OK\r\n"
    );
    thread::sleep(Duration::from_millis(400));
    assert_eq!(admin.call(&["GET", "brief"]), "$-1\r\n");
    assert_eq!(expired_keys(&mut admin), 0, "the sweeper waits");
    assert_eq!(admin.call(&["CLIENT", "UNPAUSE"]), "+OK\r\n");
    assert!(
        eventually(100, Duration::from_millis(50), || {
            expired_keys(&mut admin) == 1
        }),
        "swept once unpaused"
    );
}

/// INFO's `rdb_changes_since_last_save` counts the writes since the newest
/// snapshot, and SAVE brings it back to 0.
#[test]
fn info_counts_changes_since_the_last_snapshot() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    let changes =
        |raw: &mut RawResp| info_number(raw, "persistence", "rdb_changes_since_last_save");
    assert_eq!(changes(&mut raw), 0);
    raw.call(&["SET", "a", "1"]);
    raw.call(&["SET", "b", "2"]);
    raw.call(&["DEL", "a"]);
    assert_eq!(changes(&mut raw), 3);
    assert_eq!(raw.call(&["SAVE"]), "+OK\r\n");
    assert_eq!(changes(&mut raw), 0);
    raw.call(&["INCR", "n"]);
    assert_eq!(changes(&mut raw), 1);
}

/// The quoted arguments of a MONITOR line: what follows `[db addr] `.
fn monitored(line: &str) -> &str {
    assert!(line.starts_with('+') && line.ends_with("\r\n"), "{line:?}");
    let (_, command) = line.split_once("] ").expect("a MONITOR line has [db addr]");
    command.trim_end()
}

#[test]
fn monitor_streams_each_command_that_ran_with_passwords_redacted() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut monitor = RawResp::connect(server.resp_address());
    let mut client = RawResp::connect(server.resp_address());
    let info = client.call(&["CLIENT", "INFO"]);
    let addr = info
        .split(' ')
        .find_map(|field| field.strip_prefix("addr="))
        .expect("CLIENT INFO has addr=");
    let origin = format!("[0 {addr}] ");
    assert_eq!(monitor.call(&["MONITOR"]), "+OK\r\n");
    assert_eq!(client.call(&["SET", "k", "a \"b\"\n"]), "+OK\r\n");
    assert!(client.call(&["CONFIG", "GET", "timeout"]).starts_with('*'));
    assert_eq!(client.call(&["SELECT", "2"]), "+OK\r\n");
    assert_eq!(client.call(&["GET", "k"]), "$-1\r\n");
    assert!(client.call(&["NOSUCH"]).starts_with("-ERR"));
    assert_eq!(client.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(client.call(&["INCR", "n"]), "+QUEUED\r\n");
    assert_eq!(client.call(&["EXEC"]), "*1\r\n:1\r\n");
    assert!(client.call(&["AUTH", "user", "secret"]).starts_with('-'));

    let line = monitor.reply().expect("a line");
    assert!(line.contains(&origin), "{line:?} names {origin}");
    let seconds: f64 = line[1..line.find(' ').expect("a time")]
        .parse()
        .expect("a time");
    assert!(seconds > 1.7e9, "{line:?} starts with the Unix time");
    let mut lines = vec![monitored(&line).to_string()];
    for _ in 0..6 {
        lines.push(monitored(&monitor.reply().expect("a line")).to_string());
    }
    assert_eq!(
        lines,
        [
            r#""SET" "k" "a \"b\"\n""#,
            r#""SELECT" "2""#,
            r#""GET" "k""#,
            r#""MULTI""#,
            r#""INCR" "n""#,
            r#""EXEC""#,
            r#""AUTH" "(redacted)" "(redacted)""#,
        ],
        "CONFIG and the unknown command are not shown"
    );

    // A monitor may not touch keys, is never idle, and RESET ends it.
    let list = client.call(&["CLIENT", "LIST"]);
    assert!(list.contains("flags=O"), "{list}");
    assert!(
        monitor
            .call(&["GET", "k"])
            .contains("Replica can't interact with the keyspace")
    );
    assert_eq!(monitor.call(&["RESET"]), "+RESET\r\n");
    assert_eq!(monitor.call(&["GET", "k"]), "$6\r\na \"b\"\n\r\n");
}

#[test]
fn pubsub_delivers_to_channels_and_patterns_in_resp2_and_resp3() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut subscriber = RawResp::connect(server.resp_address());
    let mut publisher = RawResp::connect(server.resp_address());

    // RESP2: one confirmation per channel, then only the subscription
    // commands, PING, QUIT and RESET.
    subscriber.send(&[b"SUBSCRIBE", b"a", b"b"]);
    assert_eq!(
        subscriber.reply().as_deref(),
        Some("*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n")
    );
    assert_eq!(
        subscriber.reply().as_deref(),
        Some("*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n")
    );
    assert!(
        subscriber
            .call(&["GET", "k"])
            .starts_with("-ERR Can't execute 'get'")
    );
    assert_eq!(subscriber.call(&["PING"]), "*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    assert_eq!(
        subscriber.call(&["PSUBSCRIBE", "a*"]),
        "*3\r\n$10\r\npsubscribe\r\n$2\r\na*\r\n:3\r\n"
    );
    assert_eq!(publisher.call(&["PUBLISH", "a", "hi"]), ":2\r\n");
    assert_eq!(publisher.call(&["PUBLISH", "nobody", "hi"]), ":0\r\n");
    assert_eq!(
        subscriber.reply().as_deref(),
        Some("*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n")
    );
    assert_eq!(
        subscriber.reply().as_deref(),
        Some("*4\r\n$8\r\npmessage\r\n$2\r\na*\r\n$1\r\na\r\n$2\r\nhi\r\n")
    );
    assert_eq!(
        publisher.call(&["PUBSUB", "CHANNELS"]),
        "*2\r\n$1\r\na\r\n$1\r\nb\r\n"
    );
    assert_eq!(
        publisher.call(&["PUBSUB", "NUMSUB", "a", "z"]),
        "*4\r\n$1\r\na\r\n:1\r\n$1\r\nz\r\n:0\r\n"
    );
    assert_eq!(publisher.call(&["PUBSUB", "NUMPAT"]), ":1\r\n");
    let list = publisher.call(&["CLIENT", "LIST"]);
    assert!(list.contains("flags=P db=0 sub=2 psub=1"), "{list}");
    let pubsub_clients = publisher.call(&["CLIENT", "LIST", "TYPE", "pubsub"]);
    assert_eq!(pubsub_clients.matches("id=").count(), 1, "{pubsub_clients}");
    let normal_clients = publisher.call(&["CLIENT", "LIST", "TYPE", "normal"]);
    assert_eq!(
        normal_clients.matches("flags=P").count(),
        0,
        "{normal_clients}"
    );
    let info = publisher.call(&["INFO", "stats"]);
    assert!(
        info.contains("pubsub_channels:2\r\npubsub_patterns:1"),
        "{info}"
    );
    let info = publisher.call(&["INFO", "clients"]);
    assert!(info.contains("pubsub_clients:1\r\n"), "{info}");

    // UNSUBSCRIBE without channels ends them all; with none left, any command.
    subscriber.send(&[b"UNSUBSCRIBE"]);
    assert_eq!(
        subscriber.reply().as_deref(),
        Some("*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:2\r\n")
    );
    assert_eq!(
        subscriber.reply().as_deref(),
        Some("*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:1\r\n")
    );
    assert_eq!(
        subscriber.call(&["PUNSUBSCRIBE"]),
        "*3\r\n$12\r\npunsubscribe\r\n$2\r\na*\r\n:0\r\n"
    );
    assert_eq!(
        subscriber.call(&["UNSUBSCRIBE"]),
        "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"
    );
    assert_eq!(subscriber.call(&["GET", "k"]), "$-1\r\n");
    assert_eq!(publisher.call(&["PUBLISH", "a", "hi"]), ":0\r\n");

    // RESP3: pushes, any command meanwhile, and a message to oneself comes
    // after PUBLISH's reply (as in Redis 7); inside MULTI, each confirmation
    // is an item of EXEC's array.
    assert!(subscriber.call(&["HELLO", "3"]).starts_with('%'));
    assert_eq!(
        subscriber.call(&["SUBSCRIBE", "c"]),
        ">3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n"
    );
    assert_eq!(subscriber.call(&["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(subscriber.call(&["PUBLISH", "c", "me"]), ":1\r\n");
    assert_eq!(
        subscriber.reply().as_deref(),
        Some(">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nme\r\n")
    );
    assert_eq!(subscriber.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(subscriber.call(&["SUBSCRIBE", "d"]), "+QUEUED\r\n");
    assert_eq!(subscriber.call(&["PING", "x"]), "+QUEUED\r\n");
    assert_eq!(
        subscriber.call(&["EXEC"]),
        "*2\r\n>3\r\n$9\r\nsubscribe\r\n$1\r\nd\r\n:2\r\n$1\r\nx\r\n"
    );

    // RESET ends every subscription (and a message queued meanwhile is not
    // sent after it).
    assert_eq!(
        subscriber.call(&["PSUBSCRIBE", "r*"]),
        ">3\r\n$10\r\npsubscribe\r\n$2\r\nr*\r\n:3\r\n"
    );
    assert_eq!(subscriber.call(&["RESET"]), "+RESET\r\n");
    assert_eq!(publisher.call(&["PUBLISH", "red", "x"]), ":0\r\n");
    assert_eq!(subscriber.call(&["PING"]), "+PONG\r\n");
    assert!(subscriber.call(&["SUBSCRIBE", "c"]).contains("subscribe"));

    // A closed connection's subscriptions go with it.
    drop(subscriber);
    assert!(
        eventually(200, Duration::from_millis(10), || {
            publisher.call(&["PUBSUB", "NUMSUB", "c"]) == "*2\r\n$1\r\nc\r\n:0\r\n"
        }),
        "the closed subscriber is forgotten"
    );
}

#[test]
fn shard_channels_are_their_own_namespace_with_their_own_count() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut sharded = RawResp::connect(server.resp_address());
    let mut plain = RawResp::connect(server.resp_address());
    let mut publisher = RawResp::connect(server.resp_address());

    // A confirmation counts shard channels apart from channels and patterns.
    sharded.send(&[b"SSUBSCRIBE", b"orders", b"orders", b"stock"]);
    for (channel, count) in [("orders", 1), ("orders", 1), ("stock", 2)] {
        assert_eq!(
            sharded.reply(),
            Some(format!(
                "*3\r\n$10\r\nssubscribe\r\n${}\r\n{channel}\r\n:{count}\r\n",
                channel.len()
            ))
        );
    }
    assert_eq!(
        sharded.call(&["SUBSCRIBE", "orders"]),
        "*3\r\n$9\r\nsubscribe\r\n$6\r\norders\r\n:1\r\n"
    );
    assert!(
        sharded
            .call(&["GET", "k"])
            .starts_with("-ERR Can't execute 'get'")
    );
    assert_eq!(
        plain.call(&["SUBSCRIBE", "orders"]),
        "*3\r\n$9\r\nsubscribe\r\n$6\r\norders\r\n:1\r\n"
    );

    // SPUBLISH reaches shard subscribers only, PUBLISH the others only.
    assert_eq!(publisher.call(&["SPUBLISH", "orders", "o1"]), ":1\r\n");
    assert_eq!(publisher.call(&["PUBLISH", "orders", "p1"]), ":2\r\n");
    assert_eq!(publisher.call(&["SPUBLISH", "nobody", "x"]), ":0\r\n");
    assert_eq!(
        sharded.reply().as_deref(),
        Some("*3\r\n$8\r\nsmessage\r\n$6\r\norders\r\n$2\r\no1\r\n")
    );
    assert_eq!(
        sharded.reply().as_deref(),
        Some("*3\r\n$7\r\nmessage\r\n$6\r\norders\r\n$2\r\np1\r\n")
    );
    assert_eq!(
        plain.reply().as_deref(),
        Some("*3\r\n$7\r\nmessage\r\n$6\r\norders\r\n$2\r\np1\r\n")
    );

    assert_eq!(
        publisher.call(&["PUBSUB", "SHARDCHANNELS"]),
        "*2\r\n$6\r\norders\r\n$5\r\nstock\r\n"
    );
    assert_eq!(
        publisher.call(&["PUBSUB", "SHARDCHANNELS", "st*"]),
        "*1\r\n$5\r\nstock\r\n"
    );
    assert_eq!(
        publisher.call(&["PUBSUB", "SHARDNUMSUB", "orders", "none"]),
        "*4\r\n$6\r\norders\r\n:1\r\n$4\r\nnone\r\n:0\r\n"
    );
    assert_eq!(
        publisher.call(&["PUBSUB", "NUMSUB", "orders"]),
        "*2\r\n$6\r\norders\r\n:2\r\n"
    );
    let list = publisher.call(&["CLIENT", "LIST"]);
    assert!(list.contains("flags=P db=0 sub=1 psub=0 ssub=2"), "{list}");
    let info = publisher.call(&["INFO", "stats"]);
    assert!(info.contains("pubsubshard_channels:2\r\n"), "{info}");

    // SUNSUBSCRIBE without names ends the shard channels only; the
    // connection stays subscribed while its plain channel is left.
    sharded.send(&[b"SUNSUBSCRIBE"]);
    assert_eq!(
        sharded.reply().as_deref(),
        Some("*3\r\n$12\r\nsunsubscribe\r\n$6\r\norders\r\n:1\r\n")
    );
    assert_eq!(
        sharded.reply().as_deref(),
        Some("*3\r\n$12\r\nsunsubscribe\r\n$5\r\nstock\r\n:0\r\n")
    );
    assert_eq!(
        sharded.call(&["SUNSUBSCRIBE", "never"]),
        "*3\r\n$12\r\nsunsubscribe\r\n$5\r\nnever\r\n:0\r\n"
    );
    assert_eq!(publisher.call(&["SPUBLISH", "orders", "o2"]), ":0\r\n");
    assert!(
        sharded
            .call(&["GET", "k"])
            .starts_with("-ERR Can't execute")
    );
    assert!(sharded.call(&["UNSUBSCRIBE"]).contains("unsubscribe"));
    assert_eq!(sharded.call(&["GET", "k"]), "$-1\r\n");

    // RESP3: a push; SSUBSCRIBE may not run inside a transaction.
    assert!(sharded.call(&["HELLO", "3"]).starts_with('%'));
    assert_eq!(
        sharded.call(&["SSUBSCRIBE", "s"]),
        ">3\r\n$10\r\nssubscribe\r\n$1\r\ns\r\n:1\r\n"
    );
    assert_eq!(sharded.call(&["SPUBLISH", "s", "me"]), ":1\r\n");
    assert_eq!(
        sharded.reply().as_deref(),
        Some(">3\r\n$8\r\nsmessage\r\n$1\r\ns\r\n$2\r\nme\r\n")
    );
    assert_eq!(sharded.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(sharded.call(&["SSUBSCRIBE", "t"]), "+QUEUED\r\n");
    assert_eq!(
        sharded.call(&["EXEC"]),
        "*1\r\n-ERR SSUBSCRIBE isn't allowed for a DENY BLOCKING client\r\n"
    );
    assert_eq!(
        publisher.call(&["PUBSUB", "SHARDNUMSUB", "t"]),
        "*2\r\n$1\r\nt\r\n:0\r\n"
    );

    // A closed connection leaves its shard channels too.
    drop(sharded);
    assert!(
        eventually(200, Duration::from_millis(10), || {
            publisher.call(&["PUBSUB", "SHARDCHANNELS"]) == "*0\r\n"
        }),
        "the closed subscriber is forgotten"
    );
}

/// The next Pub/Sub message's channel and payload, from a RESP2 subscriber
/// to a pattern.
fn pattern_message(subscriber: &mut RawResp) -> (String, String) {
    let reply = subscriber.reply().expect("a message");
    let parts: Vec<&str> = reply.split("\r\n").collect();
    assert_eq!(parts[..3], ["*4", "$8", "pmessage"], "{reply:?}");
    (parts[6].to_string(), parts[8].to_string())
}

#[test]
fn keyspace_notifications_name_each_write_as_redis_does() {
    let (server, _dir) = Server::start_resp(&["--enable-fault-injection"]);
    let mut client = RawResp::connect(server.resp_address());
    let mut subscriber = RawResp::connect(server.resp_address());
    assert_eq!(
        client.call(&["CONFIG", "GET", "notify-keyspace-events"]),
        "*2\r\n$22\r\nnotify-keyspace-events\r\n$0\r\n\r\n",
        "off by default"
    );
    assert!(
        client
            .call(&["CONFIG", "SET", "notify-keyspace-events", "KEq"])
            .starts_with("-ERR CONFIG SET failed")
    );
    assert_eq!(
        client.call(&["CONFIG", "SET", "notify-keyspace-events", "Eg$xn"]),
        "+OK\r\n"
    );
    assert!(
        subscriber
            .call(&["PSUBSCRIBE", "__key*__:*"])
            .contains("psubscribe")
    );

    client.call(&["SET", "a", "1"]);
    client.call(&["INCR", "a"]);
    client.call(&["SET", "b", "x", "PX", "100"]);
    client.call(&["RENAME", "a", "c"]);
    client.call(&["DEL", "c", "nope"]);
    client.call(&["SELECT", "3"]);
    client.call(&["APPEND", "q", "x"]);
    // A plain HTTP write is a `set` too.
    let put = server::put(server.address, "/kv/h", b"v");
    assert!(put.status < 300, "{}", put.text());
    // The sweeper removes `b` once its time has run out.
    server::advance_clock(server.address, 200);
    let mut events = Vec::new();
    for _ in 0..15 {
        events.push(pattern_message(&mut subscriber));
    }
    let expected = [
        ("__keyevent@0__:new", "a"),
        ("__keyevent@0__:set", "a"),
        ("__keyevent@0__:incrby", "a"),
        ("__keyevent@0__:new", "b"),
        ("__keyevent@0__:set", "b"),
        ("__keyevent@0__:expire", "b"),
        ("__keyevent@0__:new", "c"),
        ("__keyevent@0__:rename_from", "a"),
        ("__keyevent@0__:rename_to", "c"),
        ("__keyevent@0__:del", "c"),
        ("__keyevent@3__:new", "q"),
        ("__keyevent@3__:append", "q"),
        ("__keyevent@0__:new", "h"),
        ("__keyevent@0__:set", "h"),
        ("__keyevent@0__:expired", "b"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(channel, key)| (channel.to_string(), key.to_string()))
        .collect();
    assert_eq!(events, expected);

    // K alone: the key's channel, with the event as the message.
    assert_eq!(
        client.call(&["CONFIG", "SET", "notify-keyspace-events", "K$"]),
        "+OK\r\n"
    );
    assert_eq!(
        client.call(&["CONFIG", "GET", "notify-keyspace-events"]),
        "*2\r\n$22\r\nnotify-keyspace-events\r\n$2\r\n$K\r\n"
    );
    client.call(&["SET", "k", "v"]);
    client.call(&["DEL", "k"]);
    client.call(&["SET", "last", "v"]);
    assert_eq!(
        pattern_message(&mut subscriber),
        ("__keyspace@3__:k".to_string(), "set".to_string())
    );
    assert_eq!(
        pattern_message(&mut subscriber),
        ("__keyspace@3__:last".to_string(), "set".to_string()),
        "del is generic (g), not selected"
    );

    // m: a read that finds a key absent, per key looked up; TYPE does not
    // count, and a hit is no event.
    assert_eq!(
        client.call(&["CONFIG", "SET", "notify-keyspace-events", "Em"]),
        "+OK\r\n"
    );
    assert_eq!(
        client.call(&["CONFIG", "GET", "notify-keyspace-events"]),
        "*2\r\n$22\r\nnotify-keyspace-events\r\n$2\r\nEm\r\n"
    );
    client.call(&["GET", "last"]);
    client.call(&["TYPE", "gone"]);
    client.call(&["GET", "gone"]);
    client.call(&["MGET", "last", "gone2", "gone3"]);
    client.call(&["EXISTS", "gone4"]);
    // The lookups the state runs report misses too, as Redis's do: GETDEL,
    // GETEX, SET … GET (not a plain SET), and reads inside EXEC.
    client.call(&["GETDEL", "gone5"]);
    client.call(&["GETEX", "gone6", "PERSIST"]);
    client.call(&["SET", "fresh", "v"]);
    client.call(&["SET", "gone7", "v", "GET"]);
    assert_eq!(client.call(&["MULTI"]), "+OK\r\n");
    client.call(&["GET", "last"]);
    client.call(&["GET", "gone8"]);
    client.call(&["SET", "gone9", "v"]);
    assert_eq!(client.call(&["EXEC"]), "*3\r\n$1\r\nv\r\n$-1\r\n+OK\r\n");
    client.call(&["GETDEL", "gone7"]);
    let misses: Vec<(String, String)> = (0..8).map(|_| pattern_message(&mut subscriber)).collect();
    let expected: Vec<(String, String)> = [
        "gone", "gone2", "gone3", "gone4", "gone5", "gone6", "gone7", "gone8",
    ]
    .iter()
    .map(|key| ("__keyevent@3__:keymiss".to_string(), key.to_string()))
    .collect();
    assert_eq!(misses, expected);
    // gone7 was there for the last GETDEL: no miss. Nothing else was
    // published, so the next message is the del below.
    client.call(&["CONFIG", "SET", "notify-keyspace-events", "Eg"]);
    client.call(&["DEL", "gone9"]);
    assert_eq!(
        pattern_message(&mut subscriber),
        ("__keyevent@3__:del".to_string(), "gone9".to_string()),
        "nothing was published between the last miss and this del"
    );
}

/// One event loop by default. With `--resp-threads 3` connections are spread
/// over three event loops, which serve one store: writes from every loop are
/// seen from every other, a message published on one loop reaches a
/// subscriber on another, CLIENT KILL ends a connection another loop serves,
/// concurrent increments from all of them lose nothing, and SIGTERM stops all
/// the loops.
#[test]
fn several_event_loops_serve_one_store() {
    // A thread takes its name a moment after it starts.
    let event_loops = |server: &Server, expected: &[&str]| {
        let started = std::time::Instant::now();
        loop {
            let mut loops: Vec<String> = server
                .thread_names()
                .into_iter()
                .filter(|name| name.starts_with("walrus-resp"))
                .collect();
            loops.sort();
            if loops == expected || started.elapsed() > Duration::from_secs(10) {
                return loops;
            }
            thread::sleep(Duration::from_millis(10));
        }
    };
    let (default, _default_dir) = Server::start_resp(&[]);
    assert_eq!(
        event_loops(&default, &["walrus-resp"]),
        ["walrus-resp"],
        "a single store's port has one event loop by default"
    );
    drop(default);
    let (mut server, _dir) = Server::start_resp(&["--resp-threads", "3"]);
    let address = server.resp_address();
    let expected = ["walrus-resp", "walrus-resp-1", "walrus-resp-2"];
    assert_eq!(event_loops(&server, &expected), expected);
    // Handed out in turn: six connections, two on each loop.
    let mut clients: Vec<RawResp> = (0..6).map(|_| RawResp::connect(address)).collect();
    for (number, client) in clients.iter_mut().enumerate() {
        assert_eq!(
            client.call(&["SET", &format!("key:{number}"), &format!("from {number}")]),
            "+OK\r\n"
        );
    }
    for client in clients.iter_mut() {
        for number in 0..6 {
            let value = format!("from {number}");
            assert_eq!(
                client.call(&["GET", &format!("key:{number}")]),
                format!("${}\r\n{value}\r\n", value.len())
            );
        }
    }

    let mut subscriber = RawResp::connect(address);
    assert!(
        subscriber
            .call(&["SUBSCRIBE", "news"])
            .contains("subscribe")
    );
    for client in clients.iter_mut() {
        assert_eq!(client.call(&["PUBLISH", "news", "hello"]), ":1\r\n");
    }
    for _ in 0..clients.len() {
        let message = subscriber.reply().expect("a message");
        assert!(
            message.ends_with("$4\r\nnews\r\n$5\r\nhello\r\n"),
            "{message}"
        );
    }

    let mut victim = RawResp::connect(address);
    let victim_id = victim.client_id();
    assert_eq!(
        clients[0].call(&["CLIENT", "KILL", "ID", &victim_id]),
        ":1\r\n"
    );
    assert!(victim.is_closed());

    let writers: Vec<_> = (0..6)
        .map(|_| {
            thread::spawn(move || {
                let mut client = RawResp::connect(address);
                for _ in 0..200 {
                    assert!(client.call(&["INCR", "counter"]).starts_with(':'));
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer");
    }
    assert_eq!(clients[1].call(&["GET", "counter"]), "$4\r\n1200\r\n");

    let status = server.terminate();
    assert!(status.success(), "{status}");
}

/// Bytes from their hex digits.
pub fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn dump_and_restore_carry_string_values_between_keys_restarts_and_redis() {
    let (mut server, _dir) = Server::start_resp(&[]);
    let mut con = server.redis_connection();
    let dump = |con: &mut redis::Connection, key: &str| -> Option<Vec<u8>> {
        redis::cmd("DUMP").arg(key).query(con).expect("DUMP")
    };
    let values: Vec<Vec<u8>> = vec![
        b"hello".to_vec(),
        b"-12345".to_vec(),
        b"007".to_vec(),
        Vec::new(),
        (0..=255u8).cycle().take(300_000).collect(),
    ];
    for (index, value) in values.iter().enumerate() {
        let key = format!("source:{index}");
        let _: () = con.set(&key, value).expect("SET");
        let payload = dump(&mut con, &key).expect("a payload for a key that exists");
        let copy = format!("copy:{index}");
        let _: () = redis::cmd("RESTORE")
            .arg(&copy)
            .arg(0)
            .arg(&payload)
            .query(&mut con)
            .expect("RESTORE");
        let restored: Vec<u8> = con.get(&copy).expect("GET");
        assert_eq!(&restored, value, "value {index} came back whole");
        let ttl: i64 = con.pttl(&copy).expect("PTTL");
        assert_eq!(ttl, -1, "a TTL of 0 restores a key that does not expire");
    }
    assert_eq!(dump(&mut con, "nope"), None, "DUMP of a missing key is nil");

    // What Redis 7.0 returned for `DUMP` of "hello" and of 100 × "x" (LZF).
    for (payload, value) in [
        ("000568656c6c6f0a006372df766534200a", b"hello".to_vec()),
        (
            "00c3094064017878e057000178780a005db7f663bb08625f",
            vec![b'x'; 100],
        ),
    ] {
        let _: () = redis::cmd("RESTORE")
            .arg("from-redis")
            .arg(0)
            .arg(unhex(payload))
            .arg("REPLACE")
            .query(&mut con)
            .expect("RESTORE of Redis's payload");
        let restored: Vec<u8> = con.get("from-redis").expect("GET");
        assert_eq!(restored, value);
    }

    let payload = dump(&mut con, "source:0").expect("payload");
    let restore =
        |con: &mut redis::Connection, key: &str, ttl: u64, payload: &[u8], options: &[&str]| {
            redis::cmd("RESTORE")
                .arg(key)
                .arg(ttl)
                .arg(payload)
                .arg(options)
                .query::<()>(con)
        };
    let busy = restore(&mut con, "copy:1", 0, &payload, &[]).expect_err("the key exists");
    assert_eq!(busy.code(), Some("BUSYKEY"));
    let copy1: Vec<u8> = con.get("copy:1").expect("GET");
    assert_eq!(copy1, b"-12345", "a refused RESTORE changes nothing");
    restore(&mut con, "copy:1", 60_000, &payload, &["REPLACE"]).expect("REPLACE");
    let ttl: i64 = con.pttl("copy:1").expect("PTTL");
    assert!((59_000..=60_000).contains(&ttl), "a relative TTL: {ttl}");
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
        + 3_600_000;
    restore(&mut con, "abs", at, &payload, &["ABSTTL"]).expect("ABSTTL");
    let expire_at: i64 = redis::cmd("PEXPIRETIME")
        .arg("abs")
        .query(&mut con)
        .expect("PEXPIRETIME");
    assert_eq!(expire_at, at as i64);
    // A TTL already past replaces the key with nothing, as in Redis.
    restore(&mut con, "abs", 1, &payload, &["ABSTTL", "REPLACE"]).expect("past");
    let exists: bool = con.exists("abs").expect("EXISTS");
    assert!(!exists);
    // IDLETIME sets the key's last access back, as Redis does without an
    // LFU policy; FREQ is taken and has no effect, as there.
    let idle = |con: &mut redis::Connection, key: &str| -> i64 {
        redis::cmd("OBJECT")
            .arg("IDLETIME")
            .arg(key)
            .query(con)
            .expect("OBJECT IDLETIME")
    };
    restore(&mut con, "idle", 0, &payload, &["IDLETIME", "1000"]).expect("IDLETIME");
    let restored_idle = idle(&mut con, "idle");
    assert!(
        (1000..=1010).contains(&restored_idle),
        "idle {restored_idle}"
    );
    let value: Vec<u8> = con.get("idle").expect("GET");
    assert_eq!(value, b"hello");
    assert!(idle(&mut con, "idle") <= 1, "a GET is an access");
    restore(&mut con, "freq", 0, &payload, &["FREQ", "100"]).expect("FREQ");
    assert!(idle(&mut con, "freq") <= 1);

    let mut damaged = payload.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xFF;
    let refused = restore(&mut con, "bad", 0, &damaged, &[]).expect_err("bad checksum");
    assert!(
        refused
            .to_string()
            .contains("DUMP payload version or checksum are wrong")
    );
    // Redis 7.0's DUMP of a list.
    let list = unhex("1201020d0d0000000200816102816202ff0a0068eb0a891341bbb1");
    let refused = restore(&mut con, "bad", 0, &list, &[]).expect_err("a list");
    assert!(refused.to_string().contains("holds a list"), "{refused}");
    for (args, message) in [
        (vec!["-1"], "Invalid TTL value, must be >= 0"),
        (
            vec!["0", "FREQ", "256"],
            "Invalid FREQ value, must be >= 0 and <= 255",
        ),
        (
            vec!["0", "IDLETIME", "-1"],
            "Invalid IDLETIME value, must be >= 0",
        ),
        (vec!["0", "IDLETIME", "1", "FREQ", "1"], "syntax error"),
        (vec!["0", "SOMETHING"], "syntax error"),
    ] {
        let mut command = redis::cmd("RESTORE");
        command
            .arg("bad")
            .arg(args[0])
            .arg(&payload)
            .arg(&args[1..]);
        let refused = command.query::<()>(&mut con).expect_err(message);
        assert!(refused.to_string().contains(message), "{refused}");
    }
    let exists: bool = con.exists("bad").expect("EXISTS");
    assert!(!exists, "no refused RESTORE created its key");
    // As in Redis, a busy key is refused before the payload is looked at,
    // and a bad option before the key.
    let mut raw = RawResp::connect(server.resp_address());
    assert_eq!(
        raw.call(&["RESTORE", "copy:1", "0", "..."]),
        "-BUSYKEY Target key name already exists.\r\n"
    );
    assert_eq!(
        raw.call(&["RESTORE", "copy:1", "0", "...", "REPLACE"]),
        err("DUMP payload version or checksum are wrong")
    );
    assert_eq!(
        raw.call(&["RESTORE", "copy:1", "0", "...", "invalid-option"]),
        err("syntax error")
    );

    // In a transaction, a busy key is that command's error; the rest apply.
    assert_eq!(raw.call(&["MULTI"]), "+OK\r\n");
    for key in ["copy:2", "in-multi"] {
        raw.send(&[b"RESTORE", key.as_bytes(), b"0", &payload]);
        assert_eq!(raw.reply().as_deref(), Some("+QUEUED\r\n"));
    }
    assert_eq!(
        raw.call(&["EXEC"]),
        "*2\r\n-BUSYKEY Target key name already exists.\r\n+OK\r\n"
    );

    // Logged: the restored keys survive a restart.
    server.restart();
    let mut con = server.redis_connection();
    let restored: Vec<u8> = con.get("copy:4").expect("GET after restart");
    assert_eq!(restored, values[4]);
    let restored: Vec<u8> = con.get("in-multi").expect("GET after restart");
    assert_eq!(restored, b"hello");
}

#[test]
fn migrate_moves_keys_to_another_server_and_deletes_only_what_the_target_took() {
    let (source, _source_dir) = Server::start_resp(&[]);
    let (target, _target_dir) = Server::start_resp(&[]);
    let mut here = RawResp::connect(source.resp_address());
    let mut there = RawResp::connect(target.resp_address());
    let (host, port) = (
        target.resp_address().ip().to_string(),
        target.resp_address().port().to_string(),
    );
    let migrate = |raw: &mut RawResp, rest: &[&str]| {
        let mut args = vec!["MIGRATE", host.as_str(), port.as_str()];
        args.extend_from_slice(rest);
        raw.call(&args)
    };
    assert_eq!(
        here.call(&["MSET", "a", "1", "b", "two", "c", "three"]),
        "+OK\r\n"
    );
    assert_eq!(here.call(&["PEXPIRE", "a", "600000"]), ":1\r\n");

    // One key, the classic form: moved, its TTL with it.
    assert_eq!(migrate(&mut here, &["a", "0", "5000"]), "+OK\r\n");
    assert_eq!(here.call(&["EXISTS", "a"]), ":0\r\n");
    assert_eq!(there.call(&["GET", "a"]), "$1\r\n1\r\n");
    let ttl = there.integer(&["PTTL", "a"]);
    assert!(
        (590_000..=600_000).contains(&ttl),
        "the TTL went along: {ttl}"
    );

    // Several keys into database 3, one of them missing; COPY keeps them here.
    assert_eq!(
        migrate(
            &mut here,
            &["", "3", "5000", "COPY", "KEYS", "b", "nope", "c"]
        ),
        "+OK\r\n"
    );
    assert_eq!(here.call(&["EXISTS", "b", "c"]), ":2\r\n");
    assert_eq!(there.call(&["SELECT", "3"]), "+OK\r\n");
    assert_eq!(
        there.call(&["MGET", "b", "c"]),
        "*2\r\n$3\r\ntwo\r\n$5\r\nthree\r\n"
    );

    // The target refuses a key it has (no REPLACE): that key stays here,
    // the other is moved, and the target's error is the reply.
    assert_eq!(there.call(&["DEL", "b"]), ":1\r\n");
    assert_eq!(
        migrate(&mut here, &["", "3", "5000", "KEYS", "b", "c"]),
        err("Target instance replied with error: BUSYKEY Target key name already exists.")
    );
    assert_eq!(here.call(&["EXISTS", "b", "c"]), ":1\r\n");
    assert_eq!(here.call(&["GET", "c"]), "$5\r\nthree\r\n", "refused: kept");
    assert_eq!(there.call(&["GET", "b"]), "$3\r\ntwo\r\n");
    // REPLACE overwrites it there.
    assert_eq!(here.call(&["SET", "c", "new"]), "+OK\r\n");
    assert_eq!(
        migrate(&mut here, &["c", "3", "5000", "REPLACE"]),
        "+OK\r\n"
    );
    assert_eq!(there.call(&["GET", "c"]), "$3\r\nnew\r\n");
    assert_eq!(here.call(&["DBSIZE"]), ":0\r\n");

    // The MIGRATEs above shared one connection, kept between commands as
    // Redis keeps it (the other connection counted is `there`).
    let connections_received = |raw: &mut RawResp| {
        let info = raw.call(&["INFO", "stats"]);
        info.lines()
            .find_map(|line| line.strip_prefix("total_connections_received:"))
            .and_then(|count| count.trim().parse::<u64>().ok())
            .expect("total_connections_received in INFO stats")
    };
    assert_eq!(connections_received(&mut there), 2);
    // A kept connection the target closed is replaced, and the key moved.
    let own_id = there.client_id();
    let clients = there.call(&["CLIENT", "LIST"]);
    let kept_id = clients
        .lines()
        .filter_map(|line| line.split(' ').find_map(|field| field.strip_prefix("id=")))
        .find(|id| *id != own_id)
        .expect("the kept MIGRATE connection")
        .to_string();
    assert_eq!(there.call(&["CLIENT", "KILL", "ID", &kept_id]), ":1\r\n");
    assert_eq!(here.call(&["SET", "e", "after a close"]), "+OK\r\n");
    assert_eq!(migrate(&mut here, &["e", "3", "5000"]), "+OK\r\n");
    assert_eq!(there.call(&["GET", "e"]), "$13\r\nafter a close\r\n");
    assert_eq!(connections_received(&mut there), 3);
    // The new connection selected database 3 again: database 0 is asked
    // for with a SELECT of its own.
    assert_eq!(here.call(&["SET", "f", "in 0"]), "+OK\r\n");
    assert_eq!(migrate(&mut here, &["f", "0", "5000"]), "+OK\r\n");
    assert_eq!(there.call(&["EXISTS", "f"]), ":0\r\n", "there is in 3");
    assert_eq!(there.call(&["SELECT", "0"]), "+OK\r\n");
    assert_eq!(there.call(&["GET", "f"]), "$4\r\nin 0\r\n");

    assert_eq!(migrate(&mut here, &["gone", "0", "5000"]), "+NOKEY\r\n");
    // Nobody listens on this port any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_port = closed.local_addr().expect("address").port().to_string();
    drop(closed);
    assert_eq!(here.call(&["SET", "d", "x"]), "+OK\r\n");
    assert_eq!(
        here.call(&["MIGRATE", "127.0.0.1", &closed_port, "d", "0", "1000"]),
        "-IOERR error or timeout connecting to the client\r\n"
    );
    assert_eq!(
        here.call(&["GET", "d"]),
        "$1\r\nx\r\n",
        "nothing sent: kept"
    );

    // A target with a password: refused without it, taken with AUTH or AUTH2.
    let (guarded, _dirs) = start_with_password("s3cret");
    let guarded_port = guarded.resp_address().port().to_string();
    let to_guarded = |raw: &mut RawResp, rest: &[&str]| {
        let mut args = vec![
            "MIGRATE",
            "127.0.0.1",
            guarded_port.as_str(),
            "d",
            "0",
            "5000",
        ];
        args.extend_from_slice(rest);
        raw.call(&args)
    };
    let refused = to_guarded(&mut here, &[]);
    assert!(
        refused.starts_with("-ERR Target instance replied with error: NOAUTH"),
        "{refused}"
    );
    assert_eq!(here.call(&["GET", "d"]), "$1\r\nx\r\n", "refused: kept");
    assert_eq!(
        to_guarded(&mut here, &["COPY", "AUTH", "s3cret"]),
        "+OK\r\n"
    );
    assert_eq!(
        to_guarded(&mut here, &["REPLACE", "AUTH2", "default", "s3cret"]),
        "+OK\r\n"
    );
    assert_eq!(here.call(&["EXISTS", "d"]), ":0\r\n");
    let mut guarded_raw = RawResp::connect(guarded.resp_address());
    assert_eq!(guarded_raw.call(&["AUTH", "s3cret"]), "+OK\r\n");
    assert_eq!(guarded_raw.call(&["GET", "d"]), "$1\r\nx\r\n");
}

/// The kernel's timer on the server's end of the connection from local port
/// `client_port` to `server`: (`tr`, `tm->when` in clock ticks) as
/// /proc/net/tcp shows them; `tr` 2 is the keepalive timer, 0 none.
fn server_socket_timer(server: std::net::SocketAddr, client_port: u16) -> Option<(u32, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let server_port = format!(":{:04X}", server.port());
    let client_port = format!(":{client_port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, timer) = (fields.get(1)?, fields.get(2)?, fields.get(5)?);
        if !(local.ends_with(&server_port) && remote.ends_with(&client_port)) {
            return None;
        }
        let (kind, when) = timer.split_once(':')?;
        Some((
            u32::from_str_radix(kind, 16).ok()?,
            u64::from_str_radix(when, 16).ok()?,
        ))
    })
}

/// A new connection that has been answered once (so the server has set it
/// up), and the server's keepalive timer on it.
fn answered_connection_timer(server: std::net::SocketAddr) -> (std::net::TcpStream, (u32, u64)) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(server).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    stream.write_all(b"PING\r\n").expect("send PING");
    let mut pong = [0u8; 7];
    stream.read_exact(&mut pong).expect("read PONG");
    assert_eq!(&pong, b"+PONG\r\n");
    let port = stream.local_addr().expect("local address").port();
    let timer = server_socket_timer(server, port).expect("the server's socket in /proc/net/tcp");
    (stream, timer)
}

#[test]
fn client_connections_are_probed_with_tcp_keepalives_as_redis_does() {
    // A client whose host vanishes (a power cut, a partition) sends nothing
    // more, not even a reset: without probes its connection, and its slot
    // under maxclients, would be held for ever.
    let (server, _data) = Server::start_resp(&[]);
    let address = server.resp_address();
    let mut raw = RawResp::connect(address);
    assert_eq!(
        raw.call(&["CONFIG", "GET", "tcp-keepalive"]),
        "*2\r\n$13\r\ntcp-keepalive\r\n$3\r\n300\r\n"
    );
    let (_first, (kind, default_wait)) = answered_connection_timer(address);
    assert_eq!(kind, 2, "the keepalive timer runs on a new connection");
    assert_eq!(
        raw.call(&["CONFIG", "SET", "tcp-keepalive", "3"]),
        "+OK\r\n"
    );
    let (_second, (kind, short_wait)) = answered_connection_timer(address);
    assert_eq!(kind, 2);
    assert!(
        short_wait > 0 && short_wait * 50 < default_wait,
        "probes after 3 s ({short_wait} ticks) come 100 times sooner than after 300 s \
         ({default_wait} ticks)"
    );
    assert_eq!(
        raw.call(&["CONFIG", "SET", "tcp-keepalive", "0"]),
        "+OK\r\n"
    );
    let (_third, (kind, _)) = answered_connection_timer(address);
    assert_eq!(kind, 0, "tcp-keepalive 0 sends no probes");
    assert!(
        raw.call(&["CONFIG", "SET", "tcp-keepalive", "-1"])
            .starts_with("-ERR CONFIG SET failed")
    );
    assert_eq!(
        raw.call(&["CONFIG", "GET", "tcp-keepalive"]),
        "*2\r\n$13\r\ntcp-keepalive\r\n$1\r\n0\r\n"
    );
}
