//! The client commands of the binary: exit codes, conditional writes, JSON,
//! escaping, the environment, error messages and a closed pipe.

use std::io::Read;
use std::process::{Command, Stdio};

use crate::server::{Server, put};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn walrus(endpoint: &str, args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_walrus"))
        .args(args)
        .env("WALRUS_ENDPOINTS", endpoint)
        .output()
        .expect("run walrus");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn conditional_writes_json_and_exit_codes() {
    let (server, _dir) = Server::start(&[]);
    let endpoint = format!("http://{}", server.address);
    let put = walrus(&endpoint, &["put", "k", "v1", "--json"]);
    assert_eq!(put.code, 0, "{}", put.stderr);
    let revision =
        serde_json::from_str::<serde_json::Value>(&put.stdout).expect("JSON")["revision"]
            .as_u64()
            .expect("revision");
    // Compare-and-swap: the right revision writes, a stale one exits 3.
    let swapped = walrus(
        &endpoint,
        &["put", "k", "v2", "--if-revision", &revision.to_string()],
    );
    assert_eq!(swapped.code, 0, "{}", swapped.stderr);
    let stale = walrus(
        &endpoint,
        &["put", "k", "v3", "--if-revision", &revision.to_string()],
    );
    assert_eq!(stale.code, 3);
    assert!(stale.stderr.contains("not at revision"), "{}", stale.stderr);
    let got = walrus(&endpoint, &["get", "k", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&got.stdout).expect("JSON");
    assert_eq!(json["value"], "v2");
    // etcdctl's spelling gives the same JSON.
    assert_eq!(
        walrus(&endpoint, &["get", "k", "-w", "json"]).stdout,
        got.stdout
    );
    assert_eq!(
        walrus(&endpoint, &["get", "k", "--write-out", "simple"]).stdout,
        "v2"
    );
    // Piped, the value comes back raw: no newline added.
    assert_eq!(walrus(&endpoint, &["get", "k"]).stdout, "v2");
    assert_eq!(walrus(&endpoint, &["get", "missing"]).code, 1);
    // Deleting a missing key succeeds unless it must exist.
    assert_eq!(walrus(&endpoint, &["delete", "missing"]).code, 0);
    assert_eq!(
        walrus(&endpoint, &["delete", "missing", "--require-existing"]).code,
        1
    );
    // A conditional delete: a stale revision exits 3 and keeps the key.
    let stale = walrus(
        &endpoint,
        &["delete", "k", "--if-revision", &revision.to_string()],
    );
    assert_eq!(stale.code, 3, "{}", stale.stderr);
    let current = serde_json::from_str::<serde_json::Value>(
        &walrus(&endpoint, &["get", "k", "--json"]).stdout,
    )
    .expect("JSON")["revision"]
        .as_u64()
        .expect("revision");
    let deleted = walrus(
        &endpoint,
        &[
            "delete",
            "k",
            "--if-revision",
            &current.to_string(),
            "--require-existing",
        ],
    );
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    assert_eq!(walrus(&endpoint, &["get", "k"]).code, 1);
    // A TTL is sent along, and `get --json` tells the time left (null for
    // a key that does not expire).
    let expiring = walrus(&endpoint, &["put", "t", "v", "--ttl", "1h"]);
    assert_eq!(expiring.code, 0, "{}", expiring.stderr);
    let got = walrus(&endpoint, &["get", "t", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&got.stdout).expect("JSON");
    let ttl_ms = json["ttl_ms"].as_u64().expect("ttl_ms");
    assert!((3_500_000..=3_600_000).contains(&ttl_ms), "{ttl_ms}");
    assert_eq!(walrus(&endpoint, &["put", "p", "v"]).code, 0);
    let got = walrus(&endpoint, &["get", "p", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&got.stdout).expect("JSON");
    assert!(json["ttl_ms"].is_null(), "{json}");
}

#[test]
fn list_escapes_keys_and_values_and_a_closed_pipe_ends_quietly() {
    let (server, _dir) = Server::start(&[]);
    let endpoint = format!("http://{}", server.address);
    assert_eq!(walrus(&endpoint, &["put", "tab\there", "v"]).code, 0);
    assert_eq!(walrus(&endpoint, &["put", "line\nbreak", "v"]).code, 0);
    let listed = walrus(&endpoint, &["list", "--keys-only"]);
    assert_eq!(listed.stdout, "line\\nbreak\ntab\\there\n");
    // A value is escaped the same way, so each key stays one line; --limit 0
    // is no limit, as etcdctl reads it.
    assert_eq!(walrus(&endpoint, &["put", "v", "two\nlines\t\\"]).code, 0);
    let listed = walrus(&endpoint, &["list", "--limit", "0"]);
    assert_eq!(
        listed.stdout,
        "line\\nbreak\tv\ntab\\there\tv\nv\ttwo\\nlines\\t\\\\\n"
    );
    assert_eq!(
        walrus(&endpoint, &["list", "--limit", "1"])
            .stdout
            .lines()
            .count(),
        1
    );
    assert_eq!(walrus(&endpoint, &["delete", "v"]).code, 0);
    // As JSON: one object per key, with its revision, and the value unless
    // --keys-only; the key as it is, since JSON escapes it.
    let listed = walrus(&endpoint, &["list", "-w", "json"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let objects: Vec<serde_json::Value> = listed
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(objects.len(), 2, "{}", listed.stdout);
    assert_eq!(objects[0]["key"], "line\nbreak");
    assert_eq!(objects[1]["key"], "tab\there");
    assert_eq!(objects[1]["value"], "v");
    assert!(
        objects[0]["revision"]
            .as_u64()
            .is_some_and(|revision| revision > 0)
    );
    let keys_only = walrus(&endpoint, &["list", "--keys-only", "--json"]);
    let first: serde_json::Value =
        serde_json::from_str(keys_only.stdout.lines().next().expect("a line")).expect("JSON");
    assert!(first.get("value").is_none(), "{first}");
    // A delete reports the revision it made.
    let deleted = walrus(&endpoint, &["delete", "tab\there", "--json"]);
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    let deleted: serde_json::Value = serde_json::from_str(&deleted.stdout).expect("JSON");
    assert_eq!(deleted["key"], "tab\there");
    assert!(
        deleted["revision"].as_u64().expect("revision")
            > objects[1]["revision"].as_u64().expect("revision")
    );
    // Far more than a pipe buffers (64 KiB), so the writes after the reader
    // leaves meet a closed pipe.
    let value = vec![b'x'; 200];
    for index in 0..3000 {
        crate::server::put(server.address, &format!("/kv/many-{index:05}"), &value);
    }
    // The reader takes one line and leaves; walrus must not complain.
    let mut child = Command::new(env!("CARGO_BIN_EXE_walrus"))
        .args(["list", "many-"])
        .env("WALRUS_ENDPOINTS", &endpoint)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run walrus");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).expect("a line");
    drop(stdout);
    let status = child.wait().expect("exit");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert!(status.success(), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

/// A report printed to a reader that has left (`walrus bench … | head -1`)
/// ends the command quietly instead of panicking.
#[test]
fn a_report_to_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_walrus"))
        .args(["bench", "store", "--memory-only", "--writes", "100"])
        .args(["--writers", "1", "--large-records", "0", "--json", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run walrus");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("exit");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A full disk under a redirected stdout (`/dev/full` answers every write
/// with ENOSPC) fails the command as a failed write of its output, without
/// the hint meant for a full data directory.
#[test]
fn output_to_a_full_disk_is_an_output_error_not_a_full_data_directory() {
    let (server, _dir) = Server::start(&[]);
    assert_eq!(put(server.address, "/kv/k", b"v").status, 200);
    let data = server.dir.clone();
    drop(server);
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let output = Command::new(env!("CARGO_BIN_EXE_walrus"))
        .arg("dump")
        .arg(&data)
        .stdout(full)
        .output()
        .expect("run walrus dump");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("writing the output"), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(!stderr.contains("hint:"), "{stderr}");
}

/// A data directory that cannot be made (here under a regular file) is
/// named with the operating system's reason, once: the library's error says
/// it, and the binary does not repeat it from the error's source.
#[test]
fn a_data_directory_that_cannot_be_made_is_reported_with_its_cause_once() {
    let temp = tempfile::tempdir().expect("temp dir");
    let file = temp.path().join("file");
    std::fs::write(&file, b"not a directory").expect("write file");
    let output = Command::new(env!("CARGO_BIN_EXE_walrus"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(file.join("data"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run walrus serve");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("error: I/O error on"), "{stderr}");
    assert_eq!(
        stderr.matches("Not a directory (os error 20)").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn an_unreachable_endpoint_is_named_once_with_what_to_do() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("address")
        .port();
    let run = walrus(&format!("http://127.0.0.1:{port}"), &["get", "k"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("connection refused"), "{}", run.stderr);
    assert!(run.stderr.contains("pass --endpoints"), "{}", run.stderr);
    assert!(!run.stderr.contains("os error"), "{}", run.stderr);
}

#[test]
fn get_ends_with_a_newline_on_a_terminal() {
    // `script` (util-linux) runs the command on a pseudo-terminal.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: `script` (util-linux) is not installed, so no terminal to print to");
        return;
    }
    let (server, _dir) = Server::start(&[]);
    let endpoint = format!("http://{}", server.address);
    assert_eq!(walrus(&endpoint, &["put", "k", "v1"]).code, 0);
    let on_terminal = |args: &str| {
        let command = format!("'{}' {args}", env!("CARGO_BIN_EXE_walrus"));
        let output = Command::new("script")
            .args(["--quiet", "--return", "--command", &command, "/dev/null"])
            .env("WALRUS_ENDPOINTS", &endpoint)
            .stdin(Stdio::null())
            .output()
            .expect("run script");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    // The terminal turns "\n" into "\r\n".
    assert_eq!(on_terminal("get k"), "v1\r\n");
    // A value that already ends its line gets no second newline. (Piped,
    // the bytes are as stored: tested above.)
    assert_eq!(walrus(&endpoint, &["put", "nl", "v2\n"]).code, 0);
    assert_eq!(on_terminal("get nl"), "v2\r\n");
}

/// A server that refuses a value and closes the connection while the value
/// is still being sent is a failed write: exit 2, not the quiet success of
/// a closed standard output. And a `404` that is not walrus's "not found"
/// (an endpoint with a wrong path) is an error, not an absent key.
#[test]
fn a_refused_upload_and_a_wrong_route_are_errors() {
    let (server, _dir) = Server::start(&["--max-value-bytes", "1000"]);
    let endpoint = format!("http://{}", server.address);
    let mut child = Command::new(env!("CARGO_BIN_EXE_walrus"))
        .args(["put", "big", "-"])
        .env("WALRUS_ENDPOINTS", &endpoint)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run walrus put");
    let mut stdin = child.stdin.take().expect("stdin");
    // Larger than the socket buffers, so the server closes mid-upload.
    let _ = std::io::Write::write_all(&mut stdin, &vec![b'x'; 8 << 20]);
    drop(stdin);
    let output = child.wait_with_output().expect("walrus put ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    let missing = walrus(&endpoint, &["get", "big"]);
    assert_eq!(missing.code, 1, "{}", missing.stderr);
    let wrong_route = walrus(&format!("{endpoint}/prefix"), &["get", "big"]);
    assert_eq!(wrong_route.code, 2, "{}", wrong_route.stderr);
    assert!(wrong_route.stderr.contains("404"), "{}", wrong_route.stderr);
}

/// `walrus dump` exits 0 on a sound directory and 1 when a file is damaged,
/// so a script can tell them apart; it changes nothing either way.
#[test]
fn dump_exits_one_when_a_file_is_damaged() {
    let (server, _dir) = Server::start(&[]);
    for index in 0..20 {
        assert_eq!(
            put(server.address, &format!("/kv/k{index}"), b"value").status,
            200
        );
    }
    let data = server.dir.clone();
    drop(server);
    let dump = || {
        Command::new(env!("CARGO_BIN_EXE_walrus"))
            .arg("dump")
            .arg(&data)
            .output()
            .expect("run walrus dump")
    };
    let sound = dump();
    let listing = String::from_utf8_lossy(&sound.stdout).into_owned();
    assert_eq!(sound.status.code(), Some(0), "{listing}");
    assert!(!listing.contains("damaged"), "{listing}");
    let segment = std::fs::read_dir(&data)
        .expect("list")
        .map(|entry| entry.expect("entry").path())
        .find(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .expect("a segment");
    let mut bytes = std::fs::read(&segment).expect("read");
    bytes[40] ^= 0xff;
    std::fs::write(&segment, &bytes).expect("damage");
    let damaged = dump();
    let listing = String::from_utf8_lossy(&damaged.stdout).into_owned();
    assert_eq!(damaged.status.code(), Some(1), "{listing}");
    assert!(listing.contains("DAMAGE at offset"), "{listing}");
    assert!(listing.contains("1 damaged file(s)"), "{listing}");
    assert_eq!(
        std::fs::read(&segment).expect("read"),
        bytes,
        "dump wrote nothing"
    );
}

/// `walrus cluster status` tells a node that answered with an error (here a
/// single store, which has no cluster) from one that cannot be reached, and
/// fails when no endpoint gives a status.
#[test]
fn cluster_status_tells_a_refusal_from_an_unreachable_node_and_fails_when_none_answers() {
    let (server, _dir) = Server::start(&[]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("address");
    let endpoints = format!("http://{},http://{closed}", server.address);
    let run = walrus(&endpoints, &["cluster", "status"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("failed: answered 404"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("unreachable"), "{}", run.stdout);
}
