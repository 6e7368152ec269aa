//! What RESP clients can rely on: acknowledged writes survive `kill -9`, keys
//! expire on time (and stay expired across a restart), HTTP sees the same
//! expiry, and stock `redis-cli` works.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use redis::Commands;

use crate::resp_client::RawResp;
use crate::server::{self, Server};

#[test]
fn resp_acknowledged_sets_survive_kill_9() {
    let (mut server, _dir) = Server::start_resp(&[]);
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let mut connection = server.redis_connection();
            let acknowledged = acknowledged.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut batch = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut pipe = redis::pipe();
                    for index in 0..32 {
                        pipe.set(format!("w{writer}:{batch}:{index}"), batch)
                            .ignore();
                    }
                    if pipe.query::<()>(&mut connection).is_err() {
                        return;
                    }
                    acknowledged.lock().unwrap().push((writer, batch));
                    batch += 1;
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(1500));
    server.kill();
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
    server.restart();
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 10,
        "only {} batches acknowledged",
        acknowledged.len()
    );
    let mut connection = server.redis_connection();
    for (writer, batch) in acknowledged {
        let keys: Vec<String> = (0..32)
            .map(|index| format!("w{writer}:{batch}:{index}"))
            .collect();
        let values: Vec<Option<u64>> = connection.mget(&keys).unwrap();
        assert!(
            values.iter().all(|value| *value == Some(batch)),
            "writer {writer} batch {batch} lost: {values:?}"
        );
    }
}

/// Time moves by the server's test clock (`/fault/clock`), not by sleeping,
/// so every expiry happens exactly when the test says.
#[test]
fn resp_keys_expire_on_time_and_stay_expired_after_restart() {
    let (mut server, _dir) = Server::start_resp(&["--enable-fault-injection"]);
    let mut connection = server.redis_connection();
    let () = connection.set_ex("short", "v", 1).unwrap();
    let () = redis::cmd("SET")
        .arg("tiny")
        .arg("v")
        .arg("PX")
        .arg(200)
        .query(&mut connection)
        .unwrap();
    let () = connection.set("long", "v").unwrap();
    let _: bool = connection.pexpire("long", 600_000).unwrap();
    let () = connection.set("reset", "old").unwrap();
    let _: bool = connection.pexpire("reset", 300).unwrap();
    let () = connection.set("reset", "new").unwrap();
    assert_eq!(connection.exists::<_, i64>("tiny").unwrap(), 1);
    server::advance_clock(server.address, 400);
    assert_eq!(connection.get::<_, Option<String>>("tiny").unwrap(), None);
    assert_eq!(
        connection
            .get::<_, Option<String>>("reset")
            .unwrap()
            .as_deref(),
        Some("new")
    );
    assert_eq!(connection.exists::<_, i64>("short").unwrap(), 1);
    server::advance_clock(server.address, 800);
    assert_eq!(connection.exists::<_, i64>("short").unwrap(), 0);
    let keys: Vec<String> = connection.keys("*").unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    // A key whose time runs out while the server is down is gone after the
    // restart. The restarted server's clock starts from the real one again,
    // 1.2 s behind the moved one, so it is moved on past the key's expiry.
    let () = connection.set_ex("while-down", "v", 1).unwrap();
    server.kill();
    server.restart();
    server::advance_clock(server.address, 2500);
    let mut connection = server.redis_connection();
    assert_eq!(
        connection.get::<_, Option<String>>("while-down").unwrap(),
        None
    );
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut connection).unwrap();
    assert_eq!(dbsize, 2);
    let ttl: i64 = connection.ttl("long").unwrap();
    assert!((590..=600).contains(&ttl), "{ttl}");
}

#[test]
fn resp_sweeper_removes_expired_keys_through_the_log() {
    let (mut server, _dir) = Server::start_resp(&["--enable-fault-injection"]);
    let mut connection = server.redis_connection();
    let mut pipe = redis::pipe();
    for index in 0..500 {
        pipe.cmd("SET")
            .arg(format!("e{index}"))
            .arg("v")
            .arg("PX")
            .arg(100)
            .ignore();
    }
    pipe.set("kept", "v").ignore();
    pipe.query::<()>(&mut connection).unwrap();
    server::advance_clock(server.address, 200);
    // The sweeper runs on its own schedule: wait (bounded) until it has
    // deleted the expired keys, which `walrus_keys` (every stored key, live
    // or not) shows.
    let keys_line = |server: &Server| {
        server::get(server.address, "/metrics")
            .text()
            .lines()
            .find(|line| line.starts_with("walrus_keys "))
            .expect("walrus_keys in /metrics")
            .to_string()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while keys_line(&server) != "walrus_keys 1" {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            keys_line(&server)
        );
        thread::sleep(Duration::from_millis(20));
    }
    // The sweep deleted them durably: after a restart the log replays the
    // deletes (the restarted server's clock is the real one again, so keys
    // not deleted would still be there).
    server.restart();
    assert_eq!(keys_line(&server), "walrus_keys 1");
}

#[test]
fn resp_and_http_share_expiry() {
    let (server, _dir) = Server::start_resp(&["--enable-fault-injection"]);
    let put = server::put(server.address, "/kv/h?ttl=30s", b"v");
    assert_eq!(put.status, 200);
    let got = server::get(server.address, "/kv/h");
    let remaining: u64 = got.header("x-walrus-ttl-ms").unwrap().parse().unwrap();
    assert!((29_000..=30_000).contains(&remaining), "{remaining}");
    assert_eq!(
        server::put(server.address, "/kv/h?ttl=30", b"v").status,
        400
    );
    assert_eq!(
        server::put(server.address, "/kv/h2?ttl=150ms", b"v").status,
        200
    );
    let mut raw = RawResp::connect(server.resp_address());
    assert_eq!(raw.call(&["TTL", "h"]), ":30\r\n");
    server::advance_clock(server.address, 300);
    assert_eq!(server::get(server.address, "/kv/h2").status, 404);
    assert_eq!(raw.call(&["EXISTS", "h2"]), ":0\r\n");
    assert_eq!(raw.call(&["SET", "r", "v", "EX", "5"]), "+OK\r\n");
    assert!(
        server::get(server.address, "/kv/r")
            .header("x-walrus-ttl-ms")
            .is_some()
    );
    assert!(
        server::get(server.address, "/kv/plain")
            .header("x-walrus-ttl-ms")
            .is_none()
    );
}

#[test]
fn resp_redis_cli_end_to_end() {
    let available = Command::new("redis-cli").arg("--version").output().is_ok();
    if !available {
        eprintln!("skipped: redis-cli is not installed (Debian package redis-tools)");
        return;
    }
    let (server, _dir) = Server::start_resp(&[]);
    let port = server.resp_address().port().to_string();
    let cli = |args: &[&str]| {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_string()
    };
    assert_eq!(cli(&["PING"]), "PONG");
    assert_eq!(cli(&["SET", "cli", "hello"]), "OK");
    assert_eq!(cli(&["GET", "cli"]), "hello");
    assert_eq!(cli(&["INCRBY", "n", "5"]), "5");
    assert_eq!(cli(&["DBSIZE"]), "2");
    assert_eq!(cli(&["TYPE", "cli"]), "string");
    assert!(cli(&["HSET", "h", "f", "v"]).starts_with("ERR unknown command 'HSET'"));
    let mut piped = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port, "--pipe"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("redis-cli --pipe");
    {
        use std::io::Write;
        let mut stdin = piped.stdin.take().unwrap();
        for index in 0..1000 {
            stdin
                .write_all(&crate::resp_client::encode(&[
                    b"SET",
                    format!("bulk{index}").as_bytes(),
                    b"v",
                ]))
                .unwrap();
        }
    }
    let output = piped.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(report.contains("errors: 0, replies: 1000"), "{report}");
    assert_eq!(cli(&["DBSIZE"]), "1002");
    let scanned = cli(&["--scan", "--pattern", "bulk*"]);
    assert_eq!(scanned.lines().count(), 1000);
}
