//! The data directory: what may live in it, and the lock that keeps it to one
//! process.
//!
//! A data directory holds only `LOCK`, segments (`*.wal`), snapshots (`*.snap`),
//! leftovers of interrupted snapshots and transfers (`*.snap.tmp`), what a repair cut
//! (`*.wal.broken`, kept for the operator), the `MEMBER` file of a cluster
//! node's directory, and the directories of a
//! single-node store adopted into a cluster (`adopt/`, `pre-cluster/`). Anything else means the
//! directory is not ours (a typo in `--data-dir` pointing at a home directory,
//! say), and opening refuses before writing a byte.

use std::io;
use std::path::{Path, PathBuf};

use super::fs::{DirLock, FileSystem, LOCK_FILE};
use super::segment::parse_segment_file_name;
use super::snapshot::{TEMP_SUFFIX, is_incoming_snapshot_name, parse_snapshot_file_name};
use super::spare::SPARE_FILE_NAME;
use crate::error::{Error, Result};

/// Where a single-node store being adopted into a cluster stages the
/// cluster's first snapshot (see `raft::adopt`).
pub const ADOPT_STAGING_DIR: &str = "adopt";
/// Where an adopted single-node store's own files are kept.
pub const PRE_CLUSTER_DIR: &str = "pre-cluster";
/// Names the cluster node whose data the directory holds (see `raft::member`).
pub const MEMBER_FILE: &str = "MEMBER";

/// An open, locked data directory. Dropping it releases the lock.
pub struct DataDir {
    path: PathBuf,
    /// Sequence numbers of the complete snapshots found, newest first.
    snapshots: Vec<u64>,
    /// Whether the directory holds a cluster node's data (`MEMBER` exists).
    cluster_member: bool,
    _lock: Box<dyn DirLock>,
}

enum FileKind {
    Lock,
    Segment,
    Snapshot(u64),
    Temporary,
    Ignored,
    Foreign,
}

fn classify(name: &str) -> FileKind {
    if name == LOCK_FILE {
        FileKind::Lock
    } else if parse_segment_file_name(name).is_some() {
        FileKind::Segment
    } else if let Some(seq) = parse_snapshot_file_name(name) {
        FileKind::Snapshot(seq)
    } else if is_incoming_snapshot_name(name)
        || name == SPARE_FILE_NAME
        || name == format!("{MEMBER_FILE}.tmp")
        || name
            .strip_suffix(TEMP_SUFFIX)
            .and_then(parse_snapshot_file_name)
            .is_some()
    {
        FileKind::Temporary
    } else if name == "lost+found"
        || super::recovery::is_broken_file_name(name)
        || name == ADOPT_STAGING_DIR
        || name == PRE_CLUSTER_DIR
        || name == MEMBER_FILE
    {
        FileKind::Ignored
    } else {
        FileKind::Foreign
    }
}

impl DataDir {
    /// Creates the directory if needed, checks that it is ours, locks it, and
    /// removes leftovers of interrupted snapshots.
    pub fn open(fs: &dyn FileSystem, path: &Path) -> Result<DataDir> {
        let created = match fs.list(path) {
            Ok(names) => {
                check_ours(path, &names)?;
                false
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                fs.create_dir_all(path)
                    .map_err(|err| Error::io(path, err))?;
                true
            }
            Err(err) => return Err(Error::io(path, err)),
        };
        if created && let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // The new directory's own entry must survive a crash too.
            fs.sync_dir(parent).map_err(|err| Error::io(parent, err))?;
        }
        let lock = fs.lock_dir(path).map_err(|err| match err.kind() {
            io::ErrorKind::WouldBlock => Error::Locked {
                path: path.to_path_buf(),
            },
            _ => Error::io(path.join(LOCK_FILE), err),
        })?;
        // Listed again under the lock: only now can nobody else be changing it.
        let names = fs.list(path).map_err(|err| Error::io(path, err))?;
        check_ours(path, &names)?;
        let mut snapshots = Vec::new();
        let mut temporaries = Vec::new();
        for name in &names {
            match classify(name) {
                FileKind::Snapshot(seq) => snapshots.push(seq),
                FileKind::Temporary => temporaries.push(path.join(name)),
                _ => {}
            }
        }
        for temporary in &temporaries {
            fs.remove(temporary)
                .map_err(|err| Error::io(temporary, err))?;
        }
        if !temporaries.is_empty() {
            fs.sync_dir(path).map_err(|err| Error::io(path, err))?;
        }
        snapshots.sort_unstable_by(|a, b| b.cmp(a));
        Ok(DataDir {
            path: path.to_path_buf(),
            snapshots,
            cluster_member: names.iter().any(|name| name == MEMBER_FILE),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the directory holds a cluster node's data rather than a
    /// single-node store's.
    pub fn is_cluster_member(&self) -> bool {
        self.cluster_member
    }

    /// Complete snapshots at open time, newest first.
    pub fn snapshots(&self) -> &[u64] {
        &self.snapshots
    }
}

/// Refuses a directory that holds anything walrus did not write.
fn check_ours(path: &Path, names: &[String]) -> Result<()> {
    match names
        .iter()
        .find(|name| matches!(classify(name), FileKind::Foreign))
    {
        Some(name) => Err(Error::ForeignDirectory {
            path: path.to_path_buf(),
            reason: format!("it contains {name:?}, which walrus did not write"),
        }),
        None => Ok(()),
    }
}
