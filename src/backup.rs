//! Backups: a snapshot of a running node saved to a file, and a new data
//! directory made from one.
//!
//! A backup is a snapshot file exactly as a data directory holds it (magic,
//! version, header and entry checksums; a cluster node's carries its Raft
//! position in the extra block, which a single node ignores). Saving checks
//! every checksum before the file is named, and restoring checks it again,
//! writes it into a new data directory as that directory's only snapshot,
//! and opens the store once to prove it recovers with every key.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::storage::snapshot::{decode_snapshot, snapshot_file_name};
use crate::store::{DurableStore, KvStore, StoreOptions};

/// What a backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BackupInfo {
    /// The log position the snapshot covers.
    pub last_seq: u64,
    pub revision: u64,
    pub keys: u64,
    pub bytes: u64,
}

/// Checks a backup's checksums and key order; what it holds.
pub fn check(data: &[u8], name: &Path) -> Result<BackupInfo> {
    let (meta, _) = decode_snapshot(data)
        .map_err(|error| Error::corrupt(name, error.offset(), error.to_string()))?;
    Ok(BackupInfo {
        last_seq: meta.last_seq,
        revision: meta.revision,
        keys: meta.entry_count,
        bytes: data.len() as u64,
    })
}

/// Writes `data` to `path` durably: a temporary file beside it, synced,
/// renamed, and the directory synced, so `path` is whole or absent.
fn write_durably(path: &Path, data: &[u8]) -> Result<()> {
    let io = |error| Error::io(path, error);
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let name = path.file_name().map_or_else(
        || "backup".to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    let temp = parent.join(format!(".{name}.partial"));
    let mut file = std::fs::File::create(&temp).map_err(io)?;
    file.write_all(data).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temp, path).map_err(io)?;
    std::fs::File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(io)?;
    Ok(())
}

/// Saves a snapshot fetched from a node to `path`, after checking it.
pub fn save(data: &[u8], path: &Path) -> Result<BackupInfo> {
    let info = check(data, Path::new("the snapshot received"))?;
    write_durably(path, data)?;
    Ok(info)
}

/// Makes `data_dir` (absent or empty) a data directory holding the backup at
/// `file`, then opens it once to check that every key comes back.
pub fn restore(file: &Path, data_dir: &Path) -> Result<BackupInfo> {
    let data = std::fs::read(file).map_err(|error| Error::io(file, error))?;
    let info = check(&data, file)?;
    let occupied = match std::fs::read_dir(data_dir) {
        Ok(mut entries) => entries.next().is_some(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
        Err(error) => return Err(Error::io(data_dir, error)),
    };
    if occupied {
        return Err(Error::InvalidArgument(format!(
            "{} is not empty: restore makes a new data directory and never overwrites one",
            data_dir.display()
        )));
    }
    std::fs::create_dir_all(data_dir).map_err(|error| Error::io(data_dir, error))?;
    write_durably(&data_dir.join(snapshot_file_name(info.last_seq)), &data)?;
    let store = DurableStore::open(data_dir, StoreOptions::default())?;
    let restored = store.len() as u64;
    store.close()?;
    if restored != info.keys {
        return Err(Error::InvalidArgument(format!(
            "the restored store has {restored} keys, the backup {}",
            info.keys
        )));
    }
    Ok(info)
}
