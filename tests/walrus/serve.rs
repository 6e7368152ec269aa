//! `walrus serve` as an operator runs it: what it logs at start, in words,
//! `--repair` end to end (the refusal, the report naming every lost record,
//! and the cut bytes kept beside the segment), the worker count, and
//! stopping when a supervisor's pipe on stdin closes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::server::{Server, get, put};

#[test]
fn serve_logs_its_settings_and_what_it_recovered_in_words() {
    let (mut server, _dir) = Server::start(&[]);
    let data = server.dir.display().to_string();
    let version = env!("CARGO_PKG_VERSION");
    let starting = format!("walrus {version} starting: data in {data}, fsync always, ");
    assert!(
        server
            .startup_log
            .iter()
            .any(|line| line.contains(&starting)
                && line.contains(" worker thread")
                && line.contains(", auth off, TLS off")),
        "{:#?}",
        server.startup_log
    );
    assert!(
        server
            .startup_log
            .iter()
            .any(|line| line.contains(&format!("recovered {data} in "))
                && line.contains("no snapshot, then 0 records from")
                && line.contains("0 keys at revision 0")),
        "{:#?}",
        server.startup_log
    );
    for index in 0..3 {
        assert_eq!(
            put(server.address, &format!("/kv/k{index}"), b"v").status,
            200
        );
    }
    server.restart();
    assert!(
        server
            .startup_log
            .iter()
            .any(|line| line.contains("then 3 records from 1 log segment;")
                && line.contains("3 keys at revision 3")),
        "{:#?}",
        server.startup_log
    );
    // Options print as words, never as Rust's debug form.
    for line in &server.startup_log {
        assert!(!line.contains("Some(") && !line.contains("None"), "{line}");
    }
}

/// Runs `walrus serve` on `data` expecting it to fail at start; returns its
/// log.
fn serve_fails(data: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_walrus"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(args)
        .output()
        .expect("run walrus serve");
    assert!(!output.status.success(), "serve started on a damaged log");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The log's segment files (not `.broken` copies) in `data`.
fn segments(data: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![data.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read data dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "wal") {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn serve_with_repair_reports_each_lost_record_and_keeps_the_cut_bytes() {
    let (mut server, _dir) = Server::start(&[]);
    let values: Vec<String> = (1..=5)
        .map(|index| format!("value-{index}-{}", "x".repeat(40)))
        .collect();
    for (index, value) in values.iter().enumerate() {
        let key = format!("/kv/key-{}", index + 1);
        assert_eq!(put(server.address, &key, value.as_bytes()).status, 200);
    }
    server.kill();
    let data = server.dir.clone();
    let found = segments(&data);
    assert_eq!(found.len(), 1, "{found:?}");
    let segment = &found[0];
    // Damage the second record: flip a byte of its value.
    let mut bytes = std::fs::read(segment).expect("read segment");
    let at = bytes
        .windows(values[1].len())
        .position(|window| window == values[1].as_bytes())
        .expect("the second value is in the log")
        + 10;
    bytes[at] = !bytes[at];
    std::fs::write(segment, &bytes).expect("write segment");

    // Without --repair, the store refuses to start and says where and how.
    let refusal = serve_fails(&data, &[]);
    let name = segment
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(refusal.contains(&name), "{refusal}");
    assert!(refusal.contains("--repair"), "{refusal}");

    let repaired = Server::start_in_data(&data, &["--repair"]);
    let log = repaired.startup_log.join("\n");
    // Four records lost (the damaged one and the three after it), each named
    // with its sequence number and key.
    for (seq, key) in [(3, "key-3"), (4, "key-4"), (5, "key-5")] {
        assert!(
            log.lines()
                .any(|line| line.contains(&format!("record {seq} at "))
                    && line.contains(key)
                    && line.contains(&name)),
            "record {seq} ({key}) named in:\n{log}"
        );
    }
    assert!(
        log.lines()
            .any(|line| line.contains("record 2 at ") && line.contains("damaged")),
        "the damaged record named in:\n{log}"
    );
    assert!(log.contains(".broken"), "{log}");
    assert!(
        log.contains("then 1 record from 1 log segment; 1 key at revision 1"),
        "{log}"
    );
    // The cut bytes are beside the segment, starting with the damaged record.
    let broken = segment.with_file_name(format!("{name}.broken"));
    let kept = std::fs::read(&broken).expect("the .broken file");
    assert!(
        kept.windows(values[4].len())
            .any(|window| window == values[4].as_bytes()),
        "the last record's bytes are kept"
    );
    // What came before the damage is served; what came after is gone.
    assert_eq!(get(repaired.address, "/kv/key-1").text(), values[0]);
    for index in 2..=5 {
        assert_eq!(
            get(repaired.address, &format!("/kv/key-{index}")).status,
            404
        );
    }
    assert_eq!(put(repaired.address, "/kv/after", b"ok").status, 200);
}

#[test]
fn serve_threads_sets_how_many_workers_the_server_runs() {
    let says = |server: &Server, workers: &str| {
        server
            .startup_log
            .iter()
            .any(|line| line.contains(&format!(", fsync always, {workers}, auth off")))
    };
    let (server, _dir) = Server::start(&["--threads", "1"]);
    assert!(
        says(&server, "1 worker thread"),
        "{:#?}",
        server.startup_log
    );
    assert_eq!(put(server.address, "/kv/one", b"v").status, 200);
    assert_eq!(get(server.address, "/kv/one").text(), "v");
    drop(server);

    let (server, _dir) = Server::start(&["--threads", "3"]);
    assert!(
        says(&server, "3 worker threads"),
        "{:#?}",
        server.startup_log
    );
    drop(server);

    let dir = tempfile::tempdir().expect("temp dir");
    let refusal = serve_fails(dir.path(), &["--threads", "0"]);
    assert!(refusal.contains("--threads"), "{refusal}");
}

#[test]
fn serve_stop_when_stdin_closes_shuts_down_cleanly_when_its_supervisor_goes() {
    let (mut server, _dir) = Server::start_with_stdin_pipe(&["--stop-when-stdin-closes"]);
    assert_eq!(put(server.address, "/kv/kept", b"v").status, 200);
    // Input that is not the end changes nothing.
    let mut stdin = server.stdin.take().expect("a pipe to the server");
    stdin
        .write_all(b"anything\n")
        .expect("write to the server's stdin");
    stdin.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(server.address, "/kv/kept").text(), "v");
    // What a supervisor's death does to the pipe, SIGKILL included.
    drop(stdin);
    let exit = server
        .wait_exit(Duration::from_secs(20))
        .expect("the server did not stop when its stdin closed");
    assert!(exit.success(), "{exit}");
    let log = server.log_until_exit(Duration::from_secs(5));
    for said in ["standard input closed", "stopped cleanly"] {
        assert!(
            log.iter().any(|line| line.contains(said)),
            "{said}: {log:#?}"
        );
    }
    // A clean stop: the data is there on the next start.
    server.restart();
    assert_eq!(get(server.address, "/kv/kept").text(), "v");
}

#[test]
fn serve_without_stop_when_stdin_closes_ignores_the_end_of_its_input() {
    // `walrus serve < /dev/null`, or under a supervisor that gives no stdin:
    // the input ends at once, and the server must go on serving.
    let (mut server, _dir) = Server::start_with_stdin_pipe(&[]);
    drop(server.stdin.take());
    assert!(
        server.wait_exit(Duration::from_secs(2)).is_none(),
        "the server stopped"
    );
    assert_eq!(put(server.address, "/kv/still", b"here").status, 200);
}
