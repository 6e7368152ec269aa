//! Backups: a snapshot of a running node saved to a file, and a new data
//! directory made from one.
//!
//! A backup is a snapshot file exactly as a data directory holds it (magic,
//! version, header and entry checksums; a cluster node's carries its Raft
//! position in the extra block, which a single node ignores). Saving streams
//! the download to disk and checks every checksum, entry and the key order as
//! the bytes pass, in constant memory, before the file is named. Restoring
//! copies the file the same way into a new data directory as that
//! directory's only snapshot, then opens the store once to prove it recovers
//! with every key.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::storage::fs::read_in_pieces;
use crate::storage::snapshot::{
    SnapshotError, SnapshotStreamCheck, decode_snapshot, snapshot_file_name,
};
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

/// Checks a backup held in memory (checksums and key order); what it holds.
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

/// `.NAME.partial` beside `path`: where a file is written before it is named.
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map_or_else(
        || "backup".to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    parent_dir(path).join(format!(".{name}.partial"))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Makes `path`'s directory entry durable.
fn sync_parent(path: &Path) -> Result<()> {
    std::fs::File::open(parent_dir(path))
        .and_then(|dir| dir.sync_all())
        .map_err(|error| Error::io(path, error))
}

/// A backup being written as it is downloaded: the bytes go to a temporary
/// file beside `path` and through a [`SnapshotStreamCheck`], so a snapshot of
/// any size is saved in constant memory. [`BackupFile::finish`] names the file
/// only once every check passed and the data is synced; dropped unfinished,
/// the temporary file is removed.
pub struct BackupFile {
    path: PathBuf,
    temp: PathBuf,
    file: std::fs::File,
    check: SnapshotStreamCheck,
    /// What damage is reported against: the download, or the file read.
    source: PathBuf,
    finished: bool,
}

impl BackupFile {
    pub fn create(path: &Path) -> Result<BackupFile> {
        let temp = temp_path(path);
        let file = std::fs::File::create(&temp).map_err(|error| Error::io(&temp, error))?;
        Ok(BackupFile {
            path: path.to_path_buf(),
            temp,
            file,
            check: SnapshotStreamCheck::new(),
            source: PathBuf::from("the snapshot received"),
            finished: false,
        })
    }

    /// The next bytes of the snapshot.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.check.push(data).map_err(|error| self.corrupt(error))?;
        self.file
            .write_all(data)
            .map_err(|error| Error::io(&self.temp, error))
    }

    /// Damage found by the check, reported against what was read.
    fn corrupt(&self, error: SnapshotError) -> Error {
        Error::corrupt(&self.source, error.offset(), error.to_string())
    }

    /// Checks the end of the snapshot, syncs the file and gives it its name.
    pub fn finish(self) -> Result<BackupInfo> {
        self.finish_named(|path, _| path.to_path_buf())
    }

    /// [`Self::finish`], naming the file `name(path given, what it holds)`:
    /// a path in the same directory, so the rename is atomic.
    fn finish_named(
        mut self,
        name: impl FnOnce(&Path, &BackupInfo) -> PathBuf,
    ) -> Result<BackupInfo> {
        let check = std::mem::take(&mut self.check);
        let (meta, bytes) = check.finish().map_err(|error| self.corrupt(error))?;
        let info = BackupInfo {
            last_seq: meta.last_seq,
            revision: meta.revision,
            keys: meta.entry_count,
            bytes,
        };
        let path = name(&self.path, &info);
        let io = |error| Error::io(&path, error);
        self.file.sync_all().map_err(io)?;
        std::fs::rename(&self.temp, &path).map_err(io)?;
        sync_parent(&path)?;
        self.finished = true;
        Ok(info)
    }
}

impl Drop for BackupFile {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Makes `data_dir` (absent or empty) a data directory holding the backup at
/// `file`, then opens it once to check that every key comes back.
pub fn restore(file: &Path, data_dir: &Path) -> Result<BackupInfo> {
    let mut source = std::fs::File::open(file).map_err(|error| Error::io(file, error))?;
    // `lost+found` is the file system's, at the root of a fresh volume
    // mounted as the data directory; the store ignores it too.
    let occupied = match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            entries.any(|entry| entry.map_or(true, |entry| entry.file_name() != "lost+found"))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
        Err(error) => return Err(Error::io(data_dir, error)),
    };
    if occupied {
        return Err(Error::InvalidArgument(format!(
            "{} is not empty: restore makes a new data directory and never overwrites one",
            data_dir.display()
        )));
    }
    let created = !data_dir.exists();
    std::fs::create_dir_all(data_dir).map_err(|error| Error::io(data_dir, error))?;
    let copied = copy_checked(&mut source, file, data_dir);
    let info = match copied {
        Ok(info) => info,
        Err(error) => {
            if created {
                // Nothing was named in it: leave no empty directory behind.
                let _ = std::fs::remove_dir(data_dir);
            }
            return Err(error);
        }
    };
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

/// Copies the backup `source` (read from `file`) into `data_dir` as its
/// snapshot, a piece at a time, checking every checksum on the way; named
/// only once whole and synced.
fn copy_checked(source: &mut std::fs::File, file: &Path, data_dir: &Path) -> Result<BackupInfo> {
    let mut target = BackupFile::create(&data_dir.join("restore.snap"))?;
    target.source = file.to_path_buf();
    read_in_pieces(
        source,
        |error| Error::io(file, error),
        |piece| target.write(piece),
    )?;
    target.finish_named(|_, info| data_dir.join(snapshot_file_name(info.last_seq)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{KvStore, StoreOptions};

    /// A real snapshot file's bytes, from a store with a few keys.
    fn snapshot_bytes(dir: &Path) -> Vec<u8> {
        let store = DurableStore::open(dir, StoreOptions::default()).expect("open");
        for index in 0..50 {
            store
                .set(format!("key-{index}").as_bytes(), b"value")
                .expect("set");
        }
        let info = store.snapshot().expect("snapshot");
        store.close().expect("close");
        std::fs::read(info.path).expect("read snapshot")
    }

    #[test]
    fn a_streamed_backup_is_named_only_when_whole_and_checked() {
        let dir = tempfile::tempdir().expect("dir");
        let data = snapshot_bytes(&dir.path().join("store"));
        let target = dir.path().join("backup.snap");

        let mut backup = BackupFile::create(&target).expect("create");
        for chunk in data.chunks(100) {
            backup.write(chunk).expect("write");
        }
        let info = backup.finish().expect("finish");
        assert_eq!((info.keys, info.bytes), (50, data.len() as u64));
        assert_eq!(std::fs::read(&target).expect("saved"), data);

        // A transfer cut short, and one with a flipped byte: no file, no leftovers.
        let cut_target = dir.path().join("cut.snap");
        let mut cut = BackupFile::create(&cut_target).expect("create");
        cut.write(&data[..data.len() - 3]).expect("write");
        assert!(cut.finish().is_err());
        let mut damaged = data.clone();
        damaged[data.len() / 2] ^= 0x10;
        let mut flipped = BackupFile::create(&cut_target).expect("create");
        let outcome = match flipped.write(&damaged) {
            Ok(()) => flipped.finish().map(|_| ()),
            Err(error) => Err(error),
        };
        assert!(outcome.is_err());
        assert!(!cut_target.exists());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert!(
            !names.iter().any(|name| name.ends_with(".partial")),
            "{names:?}"
        );
    }
}
