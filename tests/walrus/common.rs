//! Shared helpers for the storage tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use walrus::storage::{RecoveryMode, SpareSegment, WalOptions};
use walrus::store::{FsyncPolicy, SnapshotPolicy, StoreOptions};
use walrus::testing::SimFs;
use walrus::{DurableStore, KvStore};

pub fn data_dir() -> PathBuf {
    PathBuf::from("/data")
}

/// Tiny segments and eager snapshots, so a short test rotates and compacts.
/// Segments are made on demand, so every disk operation comes in a fixed
/// order (the crash-point tests count them).
pub fn small_options() -> StoreOptions {
    StoreOptions {
        fsync: FsyncPolicy::Always,
        wal: WalOptions {
            segment_bytes: 4096,
            preallocate: true,
            recovery_mode: RecoveryMode::TolerateTornTail,
            direct_io: true,
            spare: SpareSegment::OnDemand,
        },
        snapshots: SnapshotPolicy {
            automatic: true,
            min_log_bytes: 8192,
            live_data_ratio: 1,
        },
        max_batch: 0,
        commit_delay: std::time::Duration::from_micros(100),
        watch_history: Default::default(),
        latency: Default::default(),
    }
}

/// Options that never snapshot or rotate: the whole log stays in one segment.
pub fn single_segment_options(mode: RecoveryMode) -> StoreOptions {
    StoreOptions {
        fsync: FsyncPolicy::Always,
        wal: WalOptions {
            segment_bytes: 1 << 20,
            preallocate: false,
            recovery_mode: mode,
            direct_io: false,
            spare: SpareSegment::OnDemand,
        },
        snapshots: SnapshotPolicy {
            automatic: false,
            ..SnapshotPolicy::default()
        },
        max_batch: 0,
        commit_delay: std::time::Duration::from_micros(100),
        watch_history: Default::default(),
        latency: Default::default(),
    }
}

pub fn open(fs: &SimFs, options: StoreOptions) -> walrus::Result<DurableStore> {
    DurableStore::open_with_fs(Arc::new(fs.clone()), &data_dir(), options)
}

/// Every live key and value, in key order.
pub fn contents(store: &DurableStore) -> Vec<(Vec<u8>, Vec<u8>)> {
    store
        .range(0, std::ops::Bound::Unbounded, b"", usize::MAX)
        .into_iter()
        .map(|(key, entry)| (key.to_vec(), entry.value.to_vec()))
        .collect()
}

/// The only segment file in the data directory.
pub fn only_segment(fs: &SimFs) -> PathBuf {
    use walrus::storage::FileSystem;
    let names = fs.list(&data_dir()).expect("data dir exists");
    let segments: Vec<_> = names.iter().filter(|name| name.ends_with(".wal")).collect();
    assert_eq!(segments.len(), 1, "expected one segment, found {names:?}");
    data_dir().join(segments[0])
}

pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, written as
/// `cert.pem` and `key.pem` in `dir`; returns it with the two paths.
pub fn self_signed_certificate(dir: &Path) -> (rcgen::CertifiedKey, String, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("certificate");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("cert file");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("key file");
    let (cert, key) = (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    );
    (certified, cert, key)
}
