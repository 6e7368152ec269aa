//! RESP3 after `HELLO 3`, as today's clients open connections: raw frames,
//! the Rust `redis` crate asking for it, and redis-py (8 or newer) with its
//! default settings.

use std::process::Command;

use crate::resp_client::RawResp;
use crate::server::Server;

#[test]
fn hello_3_switches_the_connection_to_resp3_and_hello_2_back() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    // RESP2 by default.
    assert_eq!(raw.call(&["GET", "missing"]), "$-1\r\n");
    let hello = raw.call(&["HELLO", "3"]);
    assert!(hello.starts_with("%7\r\n"), "{hello:?}");
    assert!(hello.contains("$5\r\nproto\r\n:3\r\n"), "{hello:?}");
    assert_eq!(raw.call(&["GET", "missing"]), "_\r\n");
    assert_eq!(raw.call(&["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(raw.call(&["GET", "k"]), "$1\r\nv\r\n");
    assert_eq!(
        raw.call(&["CONFIG", "GET", "maxclients"]),
        "%1\r\n$10\r\nmaxclients\r\n$4\r\n4096\r\n"
    );
    assert!(raw.call(&["INFO", "server"]).starts_with('='));
    let hello = raw.call(&["HELLO", "2"]);
    assert!(hello.starts_with("*14\r\n"), "{hello:?}");
    assert_eq!(raw.call(&["GET", "missing"]), "$-1\r\n");
    assert_eq!(
        raw.call(&["HELLO", "4"]),
        "-NOPROTO unsupported protocol version\r\n"
    );
}

/// The Rust `redis` crate (its newest, 1.x) asked for RESP3: its `HELLO 3`
/// handshake, typed replies (null, double, map), a transaction as an atomic
/// pipeline, and a server error under its own kind.
#[test]
fn the_redis_crate_over_resp3_gets_typed_replies() {
    let (server, _dir) = Server::start_resp(&[]);
    let url = format!("redis://{}/?protocol=resp3", server.resp_address());
    let client = redis::Client::open(url).expect("client");
    let mut connection = client.get_connection().expect("connect with HELLO 3");
    let hello: redis::Value = redis::cmd("HELLO").query(&mut connection).expect("HELLO");
    let redis::Value::Map(fields) = hello else {
        panic!("HELLO answered {hello:?}, not a map");
    };
    assert!(
        fields.contains(&(
            redis::Value::BulkString(b"proto".to_vec()),
            redis::Value::Int(3)
        )),
        "{fields:?}"
    );
    let missing: redis::Value = redis::cmd("GET")
        .arg("missing")
        .query(&mut connection)
        .expect("GET");
    assert_eq!(missing, redis::Value::Nil);
    let float: redis::Value = redis::cmd("INCRBYFLOAT")
        .arg("f")
        .arg("1.5")
        .query(&mut connection)
        .expect("INCRBYFLOAT");
    assert_eq!(
        float,
        redis::Value::BulkString(b"1.5".to_vec()),
        "a bulk string, as in Redis"
    );
    let config: redis::Value = redis::cmd("CONFIG")
        .arg("GET")
        .arg("databases")
        .query(&mut connection)
        .expect("CONFIG GET");
    assert!(matches!(config, redis::Value::Map(_)), "{config:?}");
    let (counter, value): (i64, String) = redis::pipe()
        .atomic()
        .set("k", "v")
        .ignore()
        .incr("n", 2)
        .get("k")
        .query(&mut connection)
        .expect("MULTI/EXEC");
    assert_eq!((counter, value.as_str()), (2, "v"));
    let error = redis::cmd("INCR")
        .arg("k")
        .query::<i64>(&mut connection)
        .expect_err("not an integer");
    assert_eq!(
        error.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
        "{error}"
    );
}

/// The python with redis-py from `WALRUS_TEST_PYTHON` (a virtual environment
/// `.ci/run` makes); without it a test says it is skipped, and under CI it
/// fails instead.
fn redis_py() -> Option<String> {
    let Ok(python) = std::env::var("WALRUS_TEST_PYTHON") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide redis-py through WALRUS_TEST_PYTHON"
        );
        eprintln!("SKIPPED: set WALRUS_TEST_PYTHON to a python with redis-py 8 installed");
        return None;
    };
    Some(python)
}

/// Runs `script` and fails the test with its output unless it succeeds.
fn run_python(python: &str, script: &str) {
    let output = Command::new(python)
        .args(["-c", script])
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn redis_py_with_default_settings_speaks_resp3_to_walrus() {
    let Some(python) = redis_py() else { return };
    let (mut server, _dir) = Server::start_resp(&[]);
    let script = format!(
        r#"
import redis
assert int(redis.__version__.split('.')[0]) >= 8, redis.__version__
r = redis.Redis(host='127.0.0.1', port={port})
assert r.ping()
assert r.set('k', 'v')
assert r.get('k') == b'v'
assert r.get('missing') is None
assert r.config_get('maxclients') == {{'maxclients': '4096'}}
pipe = r.pipeline(transaction=False)
pipe.set('n', 1)
pipe.incr('n')
assert pipe.execute() == [True, 2]
# redis-py's default pipeline is a MULTI/EXEC transaction.
pipe = r.pipeline()
pipe.set('t', 1)
pipe.incr('t')
pipe.get('t')
assert pipe.execute() == [True, 2, b'2']
# A failed WATCH raises WatchError and applies nothing.
with r.pipeline() as pipe:
    pipe.watch('w')
    r.set('w', 'changed')
    pipe.multi()
    pipe.set('w', 'mine')
    try:
        pipe.execute()
        raise AssertionError('EXEC after a changed WATCH must fail')
    except redis.WatchError:
        pass
assert r.get('w') == b'changed'
# scan_iter across a pool of connections sees every key.
for i in range(250):
    r.set(f'scan:{{i}}', i)
assert len(set(r.scan_iter(match='scan:*', count=17))) == 250
# A database in the URL: redis-py SELECTs it on every pooled connection.
r9 = redis.Redis.from_url('redis://127.0.0.1:{port}/9')
assert r9.set('k', 'nine')
assert r9.get('k') == b'nine' and r.get('k') == b'v'
assert r9.dbsize() == 1
assert r.info('keyspace')['db9']['keys'] == 1
assert r9.flushdb()
assert r.get('k') == b'v'
r.select(0)
assert r.info('server')['redis_version']
assert r.connection_pool.get_connection().protocol in (3, '3'), 'redis-py should default to RESP3'
# The slow log, ROLE and WAIT as redis-py parses them.
assert r.config_set('slowlog-log-slower-than', 0)
assert r.get('k') == b'v'
newest = r.slowlog_get(1)[0]
assert newest['command'] == b'GET k', newest
assert newest['client_address'].startswith(b'127.0.0.1:'), newest
assert r.slowlog_len() >= 2
assert r.role() == [b'master', 0, []], r.role()
assert r.wait(0, 0) == 0
# Pub/Sub as redis-py drives it (RESP3 pushes), a channel and a pattern.
p = r.pubsub()
p.subscribe('news')
p.psubscribe('sport.*')
assert p.get_message(timeout=5)['type'] == 'subscribe'
assert p.get_message(timeout=5)['type'] == 'psubscribe'
assert r.publish('news', 'hello') == 1
assert r.publish('sport.ski', 'snow') == 1
m = p.get_message(timeout=5)
assert (m['type'], m['channel'], m['data']) == ('message', b'news', b'hello'), m
m = p.get_message(timeout=5)
assert (m['type'], m['pattern'], m['channel'], m['data']) == ('pmessage', b'sport.*', b'sport.ski', b'snow'), m
assert r.pubsub_numsub('news') == [(b'news', 1)]
p.close()
# Shard channels: their own namespace, read with get_sharded_message.
p = r.pubsub()
p.ssubscribe('orders')
m = p.get_sharded_message(timeout=5)
assert (m['type'], m['channel'], m['data']) == ('ssubscribe', b'orders', 1), m
assert r.spublish('orders', 'o1') == 1
assert r.publish('orders', 'plain') == 0
m = p.get_sharded_message(timeout=5)
assert (m['type'], m['channel'], m['data']) == ('smessage', b'orders', b'o1'), m
assert r.pubsub_shardnumsub('orders') == [(b'orders', 1)]
assert r.pubsub_shardchannels() == [b'orders']
p.sunsubscribe('orders')
m = p.get_sharded_message(timeout=5)
assert (m['type'], m['data']) == ('sunsubscribe', 0), m
p.close()
# MONITOR as redis-py reads it.
with r.monitor() as m:
    r.set('watched', 'x')
    seen = m.next_command()
    assert seen['command'] == 'SET watched x', seen
# SHUTDOWN closes the connection without a reply, which redis-py reads as
# success (a reply would make it raise).
r.shutdown(nosave=True)
print('ok')
"#,
        port = server.resp_address().port()
    );
    run_python(&python, &script);
    let status = server
        .wait_exit(std::time::Duration::from_secs(15))
        .expect("SHUTDOWN stopped the server");
    assert!(status.success(), "{status:?}");
}

/// redis-py's client-side cache (`cache_config`, RESP3 only) asks for Redis
/// 7.4 or newer in `HELLO`'s version: a cached read is served without the
/// server, and a write from another client, an expiry and a `FLUSHALL` each
/// drop the cached value before the next read.
#[test]
fn redis_py_client_side_cache_is_invalidated_by_writes_expiry_and_flush() {
    let Some(python) = redis_py() else { return };
    let (server, _dir) = Server::start_resp(&[]);
    let script = format!(
        r#"
import time
import redis
from redis.cache import CacheConfig
cached = redis.Redis(host='127.0.0.1', port={port}, protocol=3, cache_config=CacheConfig())
other = redis.Redis(host='127.0.0.1', port={port})

def eventually(read, want):
    deadline = time.monotonic() + 5
    while True:
        got = read()
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.01)

assert cached.set('k', 'v1')
assert cached.get('k') == b'v1'
assert cached.get_cache().size == 1, 'the read was cached'
assert cached.get('k') == b'v1'
assert other.set('k', 'v2')
assert eventually(lambda: cached.get('k'), b'v2') == b'v2', 'a write elsewhere invalidates'
assert other.set('short', 'lived', px=200)
assert cached.get('short') == b'lived'
assert eventually(lambda: cached.get('short'), None) is None, 'an expiry invalidates'
assert cached.mget('k', 'short') == [b'v2', None]
assert other.flushall()
assert eventually(lambda: cached.get('k'), None) is None, 'FLUSHALL invalidates'
print('ok')
"#,
        port = server.resp_address().port()
    );
    run_python(&python, &script);
}

#[test]
fn redis_replies_for_getrange_expire_scripting_and_http_lines() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    assert_eq!(raw.call(&["SET", "short", "abc"]), "+OK\r\n");
    assert_eq!(raw.call(&["GETRANGE", "short", "0", "-100"]), "$0\r\n\r\n");
    assert_eq!(raw.call(&["GETRANGE", "short", "0", "-1"]), "$3\r\nabc\r\n");
    assert_eq!(
        raw.call(&["EXPIRE", "short", "-9223372036854776"]),
        "-ERR invalid expire time in 'expire' command\r\n"
    );
    assert_eq!(raw.call(&["TTL", "short"]), ":-1\r\n", "nothing changed");
    assert!(
        raw.call(&["DEBUG", "SLEEP", "0"])
            .starts_with("-ERR DEBUG command not allowed. If the enable-debug-command option"),
        "refused as by a Redis 7 with its default settings"
    );
    assert_eq!(raw.call(&["FUNCTION", "FLUSH"]), "+OK\r\n");
    assert_eq!(raw.call(&["FUNCTION", "LIST"]), "*0\r\n");
    assert!(
        raw.call(&["EVALSHA", "abc", "0"])
            .starts_with("-ERR scripting is not supported")
    );
    assert!(
        raw.call(&["FUNCTION", "LOAD", "x"])
            .starts_with("-ERR scripting is not supported")
    );
    // SCRIPT answers as a Redis with an empty script cache, so a harness
    // that flushes it first goes on; loading one is refused.
    assert_eq!(raw.call(&["SCRIPT", "FLUSH"]), "+OK\r\n");
    assert_eq!(raw.call(&["SCRIPT", "FLUSH", "async"]), "+OK\r\n");
    assert_eq!(
        raw.call(&["SCRIPT", "FLUSH", "later"]),
        "-ERR SCRIPT FLUSH only support SYNC|ASYNC option\r\n"
    );
    assert_eq!(
        raw.call(&[
            "SCRIPT",
            "EXISTS",
            "a42059b356c875f0717db19a51f6aaca9ae659ea",
            "x"
        ]),
        "*2\r\n:0\r\n:0\r\n"
    );
    assert!(
        raw.call(&["SCRIPT", "LOAD", "return 1"])
            .starts_with("-ERR scripting is not supported")
    );
    assert!(raw.call(&["SCRIPT", "HELP"]).contains("EXISTS"));
    // A browser's cross-protocol request: the connection closes, nothing runs.
    let mut attacker = RawResp::connect(server.resp_address());
    attacker.send_raw(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nSET pwned 1\r\n");
    assert!(attacker.is_closed());
    assert_eq!(raw.call(&["EXISTS", "pwned"]), ":0\r\n");
}
