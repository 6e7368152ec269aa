//! Watches (`?watch=true`) against the real binary: resume after a dropped
//! connection with no gap and no repeat, `410 Gone` for a revision older than
//! the history, a watcher that never reads cut off while writes go on, and
//! `walrus watch` in the CLI.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::resp_client::RawResp;
use crate::server::{Server, delete, put, request};

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: String,
    pub id: String,
    pub data: serde_json::Value,
}

/// A raw watch connection: the request, the response head, then the chunked
/// body decoded and split into events as it is read.
pub struct WatchStream {
    reader: BufReader<TcpStream>,
    pending: String,
    /// The response's headers, names lowercased.
    pub headers: Vec<(String, String)>,
}

impl WatchStream {
    pub fn open(address: SocketAddr, target: &str, last_event_id: Option<&str>) -> WatchStream {
        let stream = TcpStream::connect(address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut request = format!("GET {target} HTTP/1.1\r\nHost: {address}\r\n");
        if let Some(id) = last_event_id {
            request.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        request.push_str("\r\n");
        (&stream).write_all(request.as_bytes()).expect("send");
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).expect("status line");
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("header");
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.trim_end().split_once(':') {
                headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        WatchStream {
            reader,
            pending: String::new(),
            headers,
        }
    }

    /// The next chunk of the body, or `None` at its end.
    fn chunk(&mut self) -> Option<String> {
        let mut size = String::new();
        if self.reader.read_line(&mut size).ok()? == 0 {
            return None;
        }
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            return None;
        }
        let mut data = vec![0; size + 2];
        self.reader.read_exact(&mut data).ok()?;
        data.truncate(size);
        Some(String::from_utf8(data).expect("utf-8 events"))
    }

    /// The next event (comments skipped), or `None` when the stream ended
    /// or none came within 30 s (keepalive comments alone would otherwise
    /// keep a test waiting for ever).
    fn next(&mut self) -> Option<Event> {
        let started = std::time::Instant::now();
        loop {
            if started.elapsed() > Duration::from_secs(30) {
                return None;
            }
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let mut event = Event {
                    kind: String::new(),
                    id: String::new(),
                    data: serde_json::Value::Null,
                };
                for line in block.lines() {
                    if let Some(kind) = line.strip_prefix("event: ") {
                        event.kind = kind.to_string();
                    } else if let Some(id) = line.strip_prefix("id: ") {
                        event.id = id.to_string();
                    } else if let Some(data) = line.strip_prefix("data: ") {
                        event.data = serde_json::from_str(data).expect("json data");
                    }
                }
                if !event.kind.is_empty() {
                    return Some(event);
                }
                continue;
            }
            let chunk = self.chunk()?;
            self.pending.push_str(&chunk);
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(found, _)| found == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn take(&mut self, count: usize) -> Vec<Event> {
        (0..count)
            .map(|_| self.next().expect("an event before the stream ended"))
            .collect()
    }
}

/// Whether the server's `/metrics` counts `count` open watches within 5 s.
fn watchers_reach(server: &Server, count: usize) -> bool {
    let wanted = format!("walrus_watchers {count}\n");
    (0..100).any(|_| {
        let metrics = request(server.address, "GET", "/metrics", &[], b"").text();
        let reached = metrics.contains(&wanted);
        if !reached {
            std::thread::sleep(Duration::from_millis(50));
        }
        reached
    })
}

fn key_of(event: &Event) -> &str {
    event.data["key"].as_str().unwrap_or("")
}

#[test]
fn a_watch_resumes_after_a_dropped_connection_with_no_gap_and_no_repeat() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut first = WatchStream::open(server.address, "/kv/?watch=true&prefix=w/&since=0", None);
    // One revision with three changes (ids 1-1, 1-2, 1), then single ones.
    let mut raw = RawResp::connect(server.resp_address());
    assert_eq!(
        raw.call(&["MSET", "w/a", "1", "w/b", "2", "w/c", "3"]),
        "+OK\r\n"
    );
    let got = first.take(1);
    assert_eq!((got[0].id.as_str(), key_of(&got[0])), ("1-1", "w/a"));
    // The connection drops inside revision 1; more changes happen meanwhile.
    drop(first);
    assert_eq!(put(server.address, "/kv/w/d", b"4").status, 200);
    assert_eq!(put(server.address, "/kv/elsewhere", b"x").status, 200);
    assert_eq!(delete(server.address, "/kv/w/a").status, 200);
    let mut resumed = WatchStream::open(server.address, "/kv/?watch=true&prefix=w/", Some("1-1"));
    let rest = resumed.take(4);
    let seen: Vec<(String, String, String)> = got
        .iter()
        .chain(&rest)
        .map(|event| {
            (
                event.id.clone(),
                event.kind.clone(),
                key_of(event).to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("1-1", "put", "w/a"),
        ("1-2", "put", "w/b"),
        ("1", "put", "w/c"),
        ("2", "put", "w/d"),
        ("4", "delete", "w/a"),
    ]
    .into_iter()
    .map(|(id, kind, key)| (id.to_string(), kind.to_string(), key.to_string()))
    .collect();
    assert_eq!(seen, expected);
    assert_eq!(rest[2].data["value"], "4");
    // A single key's watch sees only that key, and expiry as its own kind.
    let mut one = WatchStream::open(server.address, "/kv/w/t?watch=true", None);
    assert_eq!(put(server.address, "/kv/w/other", b"x").status, 200);
    assert_eq!(
        put(server.address, "/kv/w/t?ttl=100ms", b"short").status,
        200
    );
    let events = one.take(2);
    assert_eq!(
        (events[0].kind.as_str(), key_of(&events[0])),
        ("put", "w/t")
    );
    assert!(events[0].data["expires_at_ms"].as_u64().is_some());
    assert_eq!(
        (events[1].kind.as_str(), key_of(&events[1])),
        ("expire", "w/t")
    );
}

#[test]
fn a_watch_is_an_event_stream_and_keys_only_leaves_values_out() {
    let (server, _dir) = Server::start(&[]);
    assert_eq!(put(server.address, "/kv/w/a", b"one").status, 200);
    assert_eq!(delete(server.address, "/kv/w/a").status, 200);
    let mut full = WatchStream::open(server.address, "/kv/?watch=true&prefix=w/&since=0", None);
    assert_eq!(full.header("content-type"), Some("text/event-stream"));
    assert_eq!(full.header("cache-control"), Some("no-cache"));
    let events = full.take(2);
    assert_eq!(events[0].data["value"], "one");
    assert_eq!(events[0].data["revision"], 1);
    assert_eq!(
        (events[1].kind.as_str(), events[1].id.as_str()),
        ("delete", "2")
    );
    let mut keys_only = WatchStream::open(
        server.address,
        "/kv/?watch=true&prefix=w/&since=0&keys_only=true",
        None,
    );
    let events = keys_only.take(2);
    assert_eq!(
        (
            events[0].kind.as_str(),
            key_of(&events[0]),
            events[0].id.as_str()
        ),
        ("put", "w/a", "1")
    );
    let fields = events[0].data.as_object().expect("a JSON object");
    assert!(
        !fields.contains_key("value") && !fields.contains_key("value_base64"),
        "{fields:?}"
    );
    assert_eq!(events[0].data["revision"], 1);
    assert_eq!(events[1].kind, "delete");
    // A single key's watch takes keys_only too.
    let mut one = WatchStream::open(
        server.address,
        "/kv/w/a?watch=true&since=0&keys_only=true",
        None,
    );
    let event = one.take(1).remove(0);
    assert!(event.data.get("value").is_none(), "{event:?}");
}

#[test]
fn a_revision_older_than_the_history_is_410_gone() {
    let (mut server, _dir) = Server::start(&[]);
    for index in 0..5 {
        assert_eq!(
            put(server.address, &format!("/kv/k{index}"), b"v").status,
            200
        );
    }
    // After a restart the history starts at the recovered revision.
    server.restart();
    let gone = request(server.address, "GET", "/kv/?watch=true&since=2", &[], b"");
    assert_eq!(gone.status, 410, "{}", gone.text());
    let body: serde_json::Value = serde_json::from_slice(&gone.body).expect("json");
    assert_eq!(body["oldest_revision"], 5);
    assert_eq!(gone.header("x-walrus-oldest-revision"), Some("5"));
    // From the oldest revision on, the watch is served.
    let mut watch = WatchStream::open(server.address, "/kv/?watch=true&since=5", None);
    assert_eq!(put(server.address, "/kv/k9", b"v").status, 200);
    assert_eq!(watch.take(1)[0].id, "6");
    let bad = request(server.address, "GET", "/kv/?watch=true&since=x", &[], b"");
    assert_eq!(bad.status, 400);
}

#[test]
fn the_watch_history_is_as_long_as_the_flag_says() {
    let (server, _dir) = Server::start(&["--watch-history-changes", "10"]);
    for index in 0..30 {
        assert_eq!(
            put(server.address, &format!("/kv/k{index}"), b"v").status,
            200
        );
    }
    // Ten changes kept: revisions 21..=30, so a reader can start after 20.
    let gone = request(server.address, "GET", "/kv/?watch=true&since=19", &[], b"");
    assert_eq!(gone.status, 410, "{}", gone.text());
    assert_eq!(gone.header("x-walrus-oldest-revision"), Some("20"));
    let mut watch = WatchStream::open(server.address, "/kv/?watch=true&since=20", None);
    let events = watch.take(10);
    assert_eq!(events[0].id, "21");
    assert_eq!(events[9].id, "30");
}

#[test]
fn a_watcher_that_never_reads_is_cut_off_and_writes_go_on() {
    let (server, _dir) = Server::start_resp(&[]);
    // Opened, then not read while 30,000 changes of 1 KiB happen: far more
    // than the socket buffers hold, so the watcher falls behind.
    let mut slow = WatchStream::open(server.address, "/kv/?watch=true", None);
    let value = "v".repeat(1024);
    let mut raw = RawResp::connect(server.resp_address());
    for batch in 0..30 {
        let mut pipeline = Vec::new();
        for index in 0..1000 {
            let key = format!("k{batch}-{index}");
            pipeline.extend(crate::resp_client::encode(&[
                b"SET",
                key.as_bytes(),
                value.as_bytes(),
            ]));
        }
        raw.send_raw(&pipeline);
        for _ in 0..1000 {
            assert_eq!(raw.reply().as_deref(), Some("+OK\r\n"));
        }
    }
    let mut received = 0;
    let last = loop {
        let event = slow.next().expect("a final event before the end");
        if event.kind != "put" {
            break event;
        }
        received += 1;
    };
    assert_eq!(last.kind, "lagged", "{last:?}");
    assert!(received < 30_000, "cut off before the end");
    let resume = last.data["resume_after"].as_str().expect("where to resume");
    assert!(
        slow.next().is_none(),
        "the stream ends after its final event"
    );
    // The server let go of it: no watcher is left holding a place.
    assert!(
        watchers_reach(&server, 0),
        "the cut-off watcher is gone from the server"
    );
    // Resuming from where it was cut delivers the rest.
    let mut resumed = WatchStream::open(server.address, "/kv/?watch=true", Some(resume));
    let first = resumed.next().expect("the next change");
    assert_eq!(first.data["revision"].as_u64(), Some(received as u64 + 1));
}

#[test]
fn walrus_watch_prints_one_line_per_change() {
    let (server, _dir) = Server::start(&[]);
    let endpoint = format!("http://{}", server.address);
    let mut child = Command::new(env!("CARGO_BIN_EXE_walrus"))
        .args(["watch", "app/", "--endpoints", &endpoint])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start walrus watch");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    // The watch starts from now: wait until it is connected.
    assert!(watchers_reach(&server, 1), "walrus watch connected");
    assert_eq!(put(server.address, "/kv/app/a", b"one").status, 200);
    assert_eq!(put(server.address, "/kv/other", b"x").status, 200);
    assert_eq!(put(server.address, "/kv/app/b", b"tw\no").status, 200);
    assert_eq!(delete(server.address, "/kv/app/a").status, 200);
    let printed: Vec<String> = (0..3)
        .map(|_| lines.next().expect("a line").expect("utf-8"))
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        printed,
        [
            "1\tput\tapp/a\tone",
            "3\tput\tapp/b\ttw\\no",
            "4\tdelete\tapp/a"
        ]
    );
}

/// Runs `walrus watch ARGS` until it has printed `count` lines.
fn walrus_watch_lines(server: &Server, args: &[&str], count: usize) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_walrus"))
        .arg("watch")
        .args(args)
        .args(["--endpoints", &format!("http://{}", server.address)])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start walrus watch");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let printed = (0..count)
        .map(|_| lines.next().expect("a line").expect("utf-8"))
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    printed
}

#[test]
fn walrus_watch_replays_since_a_revision_follows_one_key_and_prints_json() {
    let (mut server, _dir) = Server::start(&[]);
    assert_eq!(put(server.address, "/kv/app/a", b"one").status, 200);
    assert_eq!(put(server.address, "/kv/app/b", b"two").status, 200);
    assert_eq!(put(server.address, "/kv/app/ab", b"three").status, 200);
    assert_eq!(delete(server.address, "/kv/app/a").status, 200);
    // --since replays what came after that revision.
    assert_eq!(
        walrus_watch_lines(&server, &["app/", "--since", "2"], 2),
        ["3\tput\tapp/ab\tthree", "4\tdelete\tapp/a"]
    );
    // --key follows exactly one key: app/ab, a key under it, is not it.
    assert_eq!(
        walrus_watch_lines(&server, &["--key", "app/a", "--since", "0"], 2),
        ["1\tput\tapp/a\tone", "4\tdelete\tapp/a"]
    );
    // --json: one object per line, the event's fields with its type and id.
    let json: Vec<serde_json::Value> =
        walrus_watch_lines(&server, &["app/", "--since", "1", "--json"], 3)
            .iter()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect();
    assert_eq!(json[0]["type"], "put");
    assert_eq!(json[0]["id"], "2");
    assert_eq!(json[0]["key"], "app/b");
    assert_eq!(json[0]["value"], "two");
    assert_eq!(json[0]["revision"], 2);
    assert_eq!(
        (&json[2]["type"], &json[2]["key"]),
        (&"delete".into(), &"app/a".into())
    );
    // After a restart the history starts at revision 4: an older start is
    // an error that names the oldest one it can serve.
    server.restart();
    let output = Command::new(env!("CARGO_BIN_EXE_walrus"))
        .args(["watch", "--since", "1", "--endpoints"])
        .arg(format!("http://{}", server.address))
        .output()
        .expect("run walrus watch");
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("410") && said.contains('4'), "{said}");
}

#[test]
fn open_watch_streams_end_when_the_server_stops() {
    // With a minute of grace, shutdown would wait on a stream that never
    // ends; watch streams end at once instead.
    let (mut server, _dir) = Server::start(&["--shutdown-grace-ms", "60000"]);
    let mut watch = WatchStream::open(server.address, "/kv/?watch=true", None);
    let started = std::time::Instant::now();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "shutdown waited for the watch stream: {:?}",
        started.elapsed()
    );
    assert!(watch.next().is_none(), "the stream ended");
}

/// `walrus watch` rides out a restart of the server it follows: it keeps
/// reconnecting (here for longer than a second, the whole budget it once
/// had) and resumes after the last change it printed, with no gap and no
/// repeat.
#[test]
fn walrus_watch_reconnects_across_a_server_restart() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data = temp.path().join("data");
    let address: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let serve = || {
        let child = Command::new(env!("CARGO_BIN_EXE_walrus"))
            .args(["serve", "--listen", &address.to_string(), "--data-dir"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start walrus serve");
        let started = std::time::Instant::now();
        while TcpStream::connect(address).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "serve started");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    };
    let mut server = serve();
    assert_eq!(put(address, "/kv/app/0", b"zero").status, 200);
    assert_eq!(put(address, "/kv/app/1", b"one").status, 200);
    let mut watch = Command::new(env!("CARGO_BIN_EXE_walrus"))
        .args(["watch", "app/", "--since", "1", "--endpoints"])
        .arg(format!("http://{address}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start walrus watch");
    let mut lines = BufReader::new(watch.stdout.take().expect("stdout")).lines();
    let mut next_line = move || lines.next().expect("a line").expect("utf-8");
    assert_eq!(next_line(), "2\tput\tapp/1\tone");
    server.kill().expect("kill serve");
    server.wait().expect("serve ended");
    std::thread::sleep(Duration::from_millis(1500));
    let mut server = serve();
    assert_eq!(put(address, "/kv/app/2", b"two").status, 200);
    assert_eq!(next_line(), "3\tput\tapp/2\ttwo");
    assert!(
        watch.try_wait().expect("watch status").is_none(),
        "the watch is still running"
    );
    let _ = watch.kill();
    let _ = watch.wait();
    let _ = server.kill();
    let _ = server.wait();
}
