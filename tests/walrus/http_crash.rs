//! kill -9 under concurrent PUT and DELETE load: after every restart, each
//! acknowledged write is there with its exact value (unless a later write to
//! the key replaced it), nothing unacknowledged is invented, and revisions keep
//! growing.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::server::{Server, get, request};

const KEYS: usize = 24;

/// A value sent, with its acknowledged revision once the 200 arrived.
type SentValue = (Vec<u8>, Option<u64>);

#[derive(Default)]
struct Ledger {
    /// key -> every value ever sent, with the acknowledged revision if any.
    puts: HashMap<String, Vec<SentValue>>,
    /// key -> acknowledged revision of each delete (None: never answered).
    deletes: HashMap<String, Vec<Option<u64>>>,
    max_acked: u64,
}

fn revision_of(reply: &crate::server::Reply) -> Option<u64> {
    reply.header("etag")?.trim_matches('"').parse().ok()
}

fn client(address: std::net::SocketAddr, ledger: &Mutex<Ledger>, stop: &AtomicBool, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut step = 0u64;
    while !stop.load(Ordering::Relaxed) {
        step += 1;
        let key = format!("key-{}", rng.random_range(0..KEYS));
        let path = format!("/kv/{key}");
        if rng.random_ratio(1, 5) {
            let index = {
                let mut ledger = ledger.lock();
                let list = ledger.deletes.entry(key.clone()).or_default();
                list.push(None);
                list.len() - 1
            };
            let Some(reply) = try_request(address, "DELETE", &path, b"") else {
                return;
            };
            let mut ledger = ledger.lock();
            if let Some(revision) = revision_of(&reply).filter(|_| reply.status == 200) {
                ledger.deletes.get_mut(&key).expect("entry")[index] = Some(revision);
                ledger.max_acked = ledger.max_acked.max(revision);
            }
        } else {
            let value =
                format!("client{seed}-step{step}-{}", "p".repeat(step as usize % 64)).into_bytes();
            let index = {
                let mut ledger = ledger.lock();
                let list = ledger.puts.entry(key.clone()).or_default();
                list.push((value.clone(), None));
                list.len() - 1
            };
            let Some(reply) = try_request(address, "PUT", &path, &value) else {
                return;
            };
            let mut ledger = ledger.lock();
            if let Some(revision) = revision_of(&reply).filter(|_| reply.status == 200) {
                ledger.puts.get_mut(&key).expect("entry")[index].1 = Some(revision);
                ledger.max_acked = ledger.max_acked.max(revision);
            }
        }
    }
}

/// Like `request`, but a dead server is `None` instead of a panic.
fn try_request(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> Option<crate::server::Reply> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    crate::server::raw(address, &bytes)
}

fn verify(server: &Server, ledger: &Ledger, round: usize) {
    for index in 0..KEYS {
        let key = format!("key-{index}");
        let reply = get(server.address, &format!("/kv/{key}"));
        let puts = ledger.puts.get(&key).map(Vec::as_slice).unwrap_or_default();
        let deletes = ledger
            .deletes
            .get(&key)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let last_acked_put = puts
            .iter()
            .filter_map(|(value, revision)| revision.map(|r| (r, value)))
            .max();
        if reply.status == 200 {
            let revision = revision_of(&reply).expect("etag");
            let sent = puts.iter().find(|(value, _)| *value == reply.body);
            let (_, acked) =
                sent.unwrap_or_else(|| panic!("round {round}: {key} holds a value nobody sent"));
            if let Some(acked) = acked {
                assert_eq!(
                    *acked, revision,
                    "round {round}: {key} came back at another revision"
                );
            }
            if let Some((acked_revision, _)) = last_acked_put {
                assert!(
                    revision >= acked_revision,
                    "round {round}: {key} lost revision {acked_revision}"
                );
            }
        } else {
            assert_eq!(reply.status, 404);
            if let Some((acked_revision, _)) = last_acked_put {
                let later_delete = deletes
                    .iter()
                    .any(|revision| revision.is_none_or(|revision| revision >= acked_revision));
                assert!(
                    later_delete,
                    "round {round}: {key} lost its write at revision {acked_revision}"
                );
            }
        }
    }
}

#[test]
fn kill_minus_nine_under_load_loses_no_acknowledged_write() {
    let (mut server, _dir) = Server::start(&[]);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut rng = StdRng::seed_from_u64(7);
    for round in 0..4 {
        let stop = Arc::new(AtomicBool::new(false));
        let address = server.address;
        let clients: Vec<_> = (0..8)
            .map(|id| {
                let (ledger, stop) = (ledger.clone(), stop.clone());
                let seed = (round * 100 + id) as u64;
                std::thread::spawn(move || client(address, &ledger, &stop, seed))
            })
            .collect();
        let started = Instant::now();
        let kill_at = Duration::from_millis(rng.random_range(300..1500));
        while started.elapsed() < kill_at {
            std::thread::sleep(Duration::from_millis(5));
        }
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.join().expect("client");
        }
        server.restart();
        let ledger = ledger.lock();
        let acked = ledger
            .puts
            .values()
            .flatten()
            .filter(|(_, r)| r.is_some())
            .count();
        assert!(acked > 0, "round {round}: the load did nothing");
        verify(&server, &ledger, round);
        let next = request(server.address, "PUT", "/kv/probe", &[], b"x");
        assert!(
            revision_of(&next).expect("etag") > ledger.max_acked,
            "round {round}: revision went back"
        );
    }
}
