//! Backup while writes continue, restore into a new data directory, and
//! compaction on demand, against the real binary.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::server::{Server, get, put};

fn walrus(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_walrus"))
        .args(args)
        .output()
        .expect("run walrus");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn a_backup_taken_during_writes_restores_every_key_at_its_revision() {
    let (server, _dir) = Server::start(&[]);
    let address = server.address;
    for index in 0..300 {
        let reply = put(
            address,
            &format!("/kv/before-{index}"),
            format!("v{index}").as_bytes(),
        );
        assert_eq!(reply.status, 200);
    }
    let before: Vec<(String, String)> = (0..300)
        .map(|index| {
            let reply = get(address, &format!("/kv/before-{index}"));
            (
                reply.text(),
                reply.header("etag").expect("etag").to_string(),
            )
        })
        .collect();
    // A writer keeps going while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = std::thread::spawn({
        let (stop, written) = (stop.clone(), written.clone());
        move || {
            // Each write's ETag (its revision), in the order written.
            let mut etags = Vec::new();
            while !stop.load(Ordering::Relaxed) && written.load(Ordering::Relaxed) < 20_000 {
                let index = written.fetch_add(1, Ordering::Relaxed);
                let reply = put(
                    address,
                    &format!("/kv/during-{index}"),
                    format!("d{index}").as_bytes(),
                );
                assert_eq!(reply.status, 200);
                etags.push(reply.header("etag").expect("etag").to_string());
            }
            etags
        }
    });
    while written.load(Ordering::Relaxed) < 50 {
        std::thread::yield_now();
    }
    let scratch = tempfile::tempdir().expect("temp dir");
    let file = scratch.path().join("walrus.backup");
    let endpoint = format!("http://{address}");
    let (saved, text) = walrus(&["backup", file.to_str().unwrap(), "--endpoints", &endpoint]);
    stop.store(true, Ordering::Relaxed);
    let during_etags = writer.join().expect("writer");
    assert!(saved, "{text}");
    assert!(text.contains("saved"), "{text}");

    // A fresh volume's root, holding only the file system's `lost+found`,
    // counts as empty.
    let restored_dir = scratch.path().join("restored");
    std::fs::create_dir_all(restored_dir.join("lost+found")).expect("lost+found");
    let (ok, text) = walrus(&[
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        restored_dir.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    // Restoring again over it is refused: restore never overwrites.
    let (again, text) = walrus(&[
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        restored_dir.to_str().unwrap(),
    ]);
    assert!(!again && text.contains("not empty"), "{text}");

    let restored = Server::start_in_data(&restored_dir, &[]);
    for (index, (value, etag)) in before.iter().enumerate() {
        let reply = get(restored.address, &format!("/kv/before-{index}"));
        assert_eq!(&reply.text(), value);
        assert_eq!(reply.header("etag"), Some(etag.as_str()), "same revision");
    }
    // The writes racing the backup: a prefix of them, each with its value.
    let total = during_etags.len();
    let present: Vec<bool> = (0..total)
        .map(|index| {
            let reply = get(restored.address, &format!("/kv/during-{index}"));
            if reply.status != 200 {
                return false;
            }
            // A write the backup holds has its value and its revision.
            assert_eq!(reply.text(), format!("d{index}"));
            assert_eq!(
                reply.header("etag"),
                Some(during_etags[index].as_str()),
                "during-{index} at its revision"
            );
            true
        })
        .collect();
    let kept = present.iter().take_while(|&&here| here).count();
    assert!(
        kept >= 40,
        "writes acknowledged before the backup began are in it"
    );
    assert!(
        present[kept..].iter().all(|&here| !here),
        "a consistent cut: no later write without the earlier ones"
    );
}

#[test]
fn a_damaged_backup_is_refused_and_compact_answers_where_it_went() {
    let (server, _dir) = Server::start(&[]);
    put(server.address, "/kv/a", b"1");
    let endpoint = format!("http://{}", server.address);
    let (compacted, text) = walrus(&["compact", "--endpoints", &endpoint]);
    assert!(compacted, "{text}");
    assert!(text.contains("\"snapshot\""), "{text}");

    let scratch = tempfile::tempdir().expect("temp dir");
    let file = scratch.path().join("b");
    let (saved, text) = walrus(&["backup", file.to_str().unwrap(), "--endpoints", &endpoint]);
    assert!(saved, "{text}");
    let mut data = std::fs::read(&file).expect("backup");
    let middle = data.len() / 2;
    data[middle] ^= 0xff;
    std::fs::write(&file, &data).expect("damage");
    let target = scratch.path().join("restored");
    let (ok, text) = walrus(&[
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        target.to_str().unwrap(),
    ]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("checksum") || text.contains("corrupt"),
        "{text}"
    );
    assert!(!target.exists(), "nothing created from a damaged backup");
}
