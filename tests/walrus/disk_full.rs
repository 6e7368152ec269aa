//! A disk that fills, on a real small file system: a 16 MiB tmpfs mounted by
//! the test (root only; elsewhere the test says it is skipped and why).
//!
//! walrus must start on it (segments sized to the free space), answer a full
//! disk with an error that changes nothing and does not fail the store, still
//! take deletes, keep every acknowledged write across a restart, and accept
//! writes again once keys are deleted and the log compacted.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::server::{Server, delete, get, put};

/// A tmpfs mounted for one test, unmounted (lazily) when dropped.
pub struct SmallDisk {
    mount_point: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (mount's syntax, e.g. `16m`) at `dir`, or
    /// says why it cannot.
    fn mount(dir: &Path, size: &str) -> Result<SmallDisk, String> {
        std::fs::create_dir_all(dir).map_err(|err| err.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|err| format!("cannot run mount: {err}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
        }
        Ok(SmallDisk {
            mount_point: dir.to_path_buf(),
        })
    }
}

impl SmallDisk {
    /// [`SmallDisk::mount`], or `None` after saying the test is skipped and why.
    pub fn mount_or_skip(dir: &Path, size: &str) -> Option<SmallDisk> {
        match SmallDisk::mount(dir, size) {
            Ok(disk) => Some(disk),
            Err(reason) => {
                eprintln!(
                    "SKIPPED: cannot mount a {size} tmpfs here ({reason}); this test needs \
                     root (CAP_SYS_ADMIN)"
                );
                None
            }
        }
    }
}

impl SmallDisk {
    /// Makes the file system `size` (mount's syntax) without unmounting it:
    /// an operator adding space to a full disk.
    pub fn grow(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.mount_point)
            .status()
            .expect("run mount");
        assert!(status.success(), "remounting {:?} failed", self.mount_point);
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mount_point)
            .status();
    }
}

fn value(index: usize) -> Vec<u8> {
    let mut value = format!("value-{index}-").into_bytes();
    value.resize(32 << 10, b'a' + (index % 26) as u8);
    value
}

#[test]
fn a_full_disk_refuses_writes_keeps_every_acknowledged_one_and_recovers_after_deletes() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mount_point = temp.path().join("small");
    let Some(_disk) = SmallDisk::mount_or_skip(&mount_point, "16m") else {
        return;
    };
    let data = mount_point.join("data");

    // Default flags: 64 MiB segments would not fit; the log adapts.
    let mut server = Server::start_in_data(&data, &[]);
    let address = server.address;
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    for index in 0..1_000 {
        let reply = put(address, &format!("/kv/k{index:04}"), &value(index));
        match reply.status {
            200 => acknowledged.push(index),
            503 => {
                refusal = Some(reply.text());
                break;
            }
            other => panic!("PUT {index}: {other} {}", reply.text()),
        }
    }
    let refusal = refusal.expect("16 MiB filled up within 1,000 writes of 32 KiB");
    assert!(refusal.contains("no space left"), "{refusal}");
    assert!(
        acknowledged.len() >= 100,
        "only {} writes of 32 KiB fit on 16 MiB",
        acknowledged.len()
    );

    // Full, not failed: reads work, and a delete uses the space kept for it.
    let first = acknowledged[0];
    assert_eq!(get(address, &format!("/kv/k{first:04}")).status, 200);
    let reply = delete(address, &format!("/kv/k{first:04}"));
    assert_eq!(
        reply.status,
        200,
        "a delete on a full disk: {}",
        reply.text()
    );
    acknowledged.remove(0);

    // Every acknowledged write survives a restart on the full disk.
    server.terminate();
    let mut server = Server::start_in_data(&data, &[]);
    let address = server.address;
    for &index in &acknowledged {
        let reply = get(address, &format!("/kv/k{index:04}"));
        assert_eq!(reply.status, 200, "k{index:04} lost");
        assert_eq!(reply.body, value(index), "k{index:04} changed");
    }
    assert_eq!(get(address, &format!("/kv/k{first:04}")).status, 404);

    // Deleting the keys gives the space back by itself: a write refused
    // for want of space makes the next snapshot due as soon as compacting
    // the log behind it frees space, far under the usual 64 MiB of log
    // (and this run restarted since the refusals above, so one more is
    // refused first).
    for &index in &acknowledged {
        let reply = delete(address, &format!("/kv/k{index:04}"));
        assert_eq!(reply.status, 200, "delete k{index:04}: {}", reply.text());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let reply = put(address, "/kv/again", &value(0));
        if reply.status == 200 {
            break;
        }
        assert!(
            reply.status == 503 && std::time::Instant::now() < deadline,
            "no space back within 10 s of the deletes: {} {}",
            reply.status,
            reply.text()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let snapshots = get(address, "/metrics").text();
    assert!(
        snapshots
            .lines()
            .any(|line| line.starts_with("walrus_snapshots_total") && !line.ends_with(" 0")),
        "a snapshot ran by itself:\n{snapshots}"
    );
    for index in 0..100 {
        let reply = put(address, &format!("/kv/again{index}"), &value(index));
        assert_eq!(
            reply.status,
            200,
            "write {index} after compaction: {}",
            reply.text()
        );
    }
    server.terminate();
    let server = Server::start_in_data(&data, &[]);
    assert_eq!(get(server.address, "/kv/again99").body, value(99));
}

#[test]
fn start_up_on_a_disk_too_small_for_a_segment_names_the_flag_that_helps() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mount_point = temp.path().join("tiny");
    let Some(_disk) = SmallDisk::mount_or_skip(&mount_point, "1m") else {
        return;
    };
    let output = Command::new(env!("CARGO_BIN_EXE_walrus"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(mount_point.join("data"))
        .output()
        .expect("run walrus");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no space left"), "{stderr}");
    assert!(stderr.contains("--segment-bytes"), "{stderr}");
}

/// Many large writes at once are committed as one batch, which can be larger
/// than the small segment a nearly full disk gets: the batch must then be
/// refused like any write that does not fit, not fail the store.
#[test]
fn a_batch_of_large_concurrent_writes_on_a_full_disk_is_refused_without_failing_the_store() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mount_point = temp.path().join("small");
    let Some(_disk) = SmallDisk::mount_or_skip(&mount_point, "40m") else {
        return;
    };
    let data = mount_point.join("data");
    let server = Server::start_in_data(&data, &[]);
    let address = server.address;
    let big = |index: usize| vec![b'a' + (index % 26) as u8; 1_000_000];

    let mut acknowledged = Vec::new();
    let mut refusals = Vec::new();
    for round in 0..8 {
        let replies: Vec<(usize, u16, String)> = std::thread::scope(|scope| {
            let writers: Vec<_> = (0..32)
                .map(|writer| {
                    let index = round * 32 + writer;
                    scope.spawn(move || {
                        let reply = put(address, &format!("/kv/big{index}"), &big(index));
                        (index, reply.status, reply.text())
                    })
                })
                .collect();
            writers
                .into_iter()
                .map(|writer| writer.join().expect("writer thread"))
                .collect()
        });
        for (index, status, text) in replies {
            match status {
                200 => acknowledged.push(index),
                _ => refusals.push((index, status, text)),
            }
        }
        if !refusals.is_empty() {
            break;
        }
    }
    assert!(!refusals.is_empty(), "40 MiB took 256 values of 1 MB");
    for (index, status, text) in &refusals {
        assert_eq!(*status, 503, "big{index}: {text}");
        assert!(text.contains("no space left"), "big{index}: {text}");
    }

    // Full, not failed: a delete and a small write go through.
    let reply = delete(address, &format!("/kv/big{}", acknowledged[0]));
    assert_eq!(reply.status, 200, "delete: {}", reply.text());
    let reply = put(address, "/kv/small", b"s");
    assert_eq!(reply.status, 200, "small write: {}", reply.text());

    let mut server = server;
    server.terminate();
    let server = Server::start_in_data(&data, &[]);
    for &index in &acknowledged[1..] {
        let reply = get(server.address, &format!("/kv/big{index}"));
        assert_eq!(reply.status, 200, "big{index} lost");
        assert_eq!(reply.body, big(index), "big{index} changed");
    }
    for (index, _, _) in &refusals {
        let reply = get(server.address, &format!("/kv/big{index}"));
        assert_eq!(reply.status, 404, "refused big{index} was applied");
    }
    assert_eq!(get(server.address, "/kv/small").body, b"s");
}
