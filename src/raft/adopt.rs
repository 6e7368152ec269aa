//! Growing a single-node store into the first member of a new cluster, in
//! place: `walrus cluster adopt`.
//!
//! The store's data becomes the cluster's first snapshot. Its Raft position
//! is the store's revision R, with the membership {this node}, so the log
//! continues at R + 1: revisions keep growing and every key keeps its ETag.
//! openraft starts from such a snapshot as it does after installing one
//! (the log is empty up to it), so the node elects itself and serves; more
//! nodes join with `cluster add-learner` and `cluster promote`.
//!
//! Crash safety. The single-node files are never rewritten, only moved:
//! 1. the replica snapshot is written into `adopt/` and synced;
//! 2. `adopt/COMMIT` is written and synced: from here the change is made;
//! 3. the single-node segments and snapshots move into `pre-cluster/` (kept
//!    for the operator), then the replica snapshot moves into the directory;
//! 4. `adopt/` is removed.
//!
//! An interruption before 2 leaves the single-node store as it was (the
//! staging directory is discarded on the next attempt); after 2, every later
//! open finishes steps 3 and 4 ([`finish_interrupted`]) before reading the
//! directory, so the store is either the single node or the cluster member,
//! never a mix.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::BasicNode;
use openraft::vote::RaftLeaderId;

use super::member::Member;
use super::state_machine::replica_snapshot_extra;
use super::{LogId, NodeId, StoredMembership};
use crate::error::{Error, Result};
use crate::storage::data_dir::{
    ADOPT_STAGING_DIR as STAGING_DIR, DataDir, PRE_CLUSTER_DIR as BACKUP_DIR,
};
use crate::storage::snapshot::{SnapshotMeta, SnapshotWriter, parse_snapshot_file_name};
use crate::storage::{FileSystem, StdFs};
use crate::store::{DurableStore, KvStore, StoreOptions, write_frozen};

const COMMIT_MARKER: &str = "COMMIT";

/// What an adoption made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Adopted {
    pub node_id: NodeId,
    pub advertise: String,
    /// The Raft index the cluster's log continues after (the store's revision).
    pub index: u64,
    pub keys: u64,
    /// Where the single-node files now are.
    pub kept_in: PathBuf,
}

/// Makes the single-node store in `dir` (not running) the first member of a
/// new cluster: node `node_id`, reached by its peers at `advertise`.
pub fn adopt(dir: &Path, node_id: NodeId, advertise: &str) -> Result<Adopted> {
    {
        let _locked = DataDir::open(&StdFs, dir)?;
        finish_interrupted(dir)?;
        if dir.join(BACKUP_DIR).exists() {
            return Err(Error::InvalidArgument(format!(
                "{} was already adopted into a cluster (its single-node files are in {BACKUP_DIR}/)",
                dir.display()
            )));
        }
    }
    let store = DurableStore::open(dir, StoreOptions::default()).map_err(|error| {
        Error::InvalidArgument(format!(
            "{} does not hold a single-node store walrus can open ({error})",
            dir.display()
        ))
    })?;
    let staged = stage(&store, node_id, advertise)?;
    commit(store, staged)
}

/// An adoption whose replica snapshot is written and synced in `adopt/`,
/// not yet committed: until [`commit`], the single-node store is untouched
/// and may go on serving.
pub struct Staged {
    adopted: Adopted,
}

/// Writes the replica snapshot of everything `store` holds into `adopt/`.
/// The caller makes sure no write reaches `store` from here until
/// [`commit`] (the snapshot must hold all of it).
pub fn stage(store: &DurableStore, node_id: NodeId, advertise: &str) -> Result<Staged> {
    let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
    let dir = store.dir().to_path_buf();
    let staging = dir.join(STAGING_DIR);
    if staging.exists() {
        remove_staging(&dir)?;
    }
    fs.create_dir_all(&staging)
        .map_err(|error| Error::io(&staging, error))?;
    let point = store.state().write().freeze();
    let index = point.revision;
    let log_id = LogId::new(
        <super::LeaderIdOf as RaftLeaderId>::new(0, node_id).to_committed(),
        index,
    );
    let nodes = BTreeMap::from([(node_id, BasicNode::new(advertise))]);
    let written = openraft::Membership::new(vec![BTreeSet::from([node_id])], nodes)
        .map_err(|error| Error::InvalidArgument(error.to_string()))
        .and_then(|membership| {
            replica_snapshot_extra(
                Some(log_id),
                &StoredMembership::new(Some(log_id), membership),
                // No WATCH outlives the adoption (the store stops taking
                // commands, so every EXEC after it is judged by the cluster).
                &crate::store::RemovalLog::default(),
            )
        })
        .and_then(|extra| {
            let meta = SnapshotMeta {
                last_seq: index,
                revision: index,
                entry_count: point.entry_count,
            };
            let mut writer = SnapshotWriter::create_with_extra(&*fs, &staging, meta, &extra)?;
            match write_frozen(store.state(), &mut writer, 4096) {
                Ok(()) => writer.finish(),
                Err(error) => {
                    writer.abandon();
                    Err(error)
                }
            }
        });
    crate::store::State::thaw(store.state());
    if let Err(error) = written {
        let _ = remove_staging(&dir);
        return Err(error);
    }
    Ok(Staged {
        adopted: Adopted {
            node_id,
            advertise: advertise.to_string(),
            index,
            keys: point.entry_count,
            kept_in: dir.join(BACKUP_DIR),
        },
    })
}

/// Closes `store` and makes the staged adoption: from the commit marker on,
/// the directory is the cluster member's, whatever happens next.
pub fn commit(store: DurableStore, staged: Staged) -> Result<Adopted> {
    let dir = store.dir().to_path_buf();
    store.close()?;
    let _locked = DataDir::open(&StdFs, &dir)?;
    let staging = dir.join(STAGING_DIR);
    let marker = staging.join(COMMIT_MARKER);
    let member = Member {
        node_id: staged.adopted.node_id,
        advertise: staged.adopted.advertise.clone(),
        joining: false,
    };
    // The marker names the member, so an interrupted finish still writes
    // the directory's MEMBER file.
    let json =
        serde_json::to_vec(&member).map_err(|error| Error::InvalidArgument(error.to_string()))?;
    std::fs::File::create(&marker)
        .and_then(|mut file| {
            std::io::Write::write_all(&mut file, &json)?;
            file.sync_all()
        })
        .map_err(|error| Error::io(&marker, error))?;
    sync_dir(&staging)?;
    finish_interrupted(&dir)?;
    Ok(staged.adopted)
}

/// [`finish_interrupted`] under the directory's lock, for a caller about to
/// decide what the directory is (its `MEMBER` file is written last); does
/// nothing when no adoption was staged.
pub fn finish_pending(dir: &Path) -> Result<()> {
    if !dir.join(STAGING_DIR).exists() {
        return Ok(());
    }
    let _locked = DataDir::open(&StdFs, dir)?;
    finish_interrupted(dir)
}

/// Finishes an adoption that was committed but interrupted, and discards
/// one that was not committed. Called with the directory locked, before
/// anything reads it.
pub fn finish_interrupted(dir: &Path) -> Result<()> {
    let staging = dir.join(STAGING_DIR);
    if !staging.exists() {
        return Ok(());
    }
    if !staging.join(COMMIT_MARKER).exists() {
        return remove_staging(dir);
    }
    let staged: Vec<String> = list(&staging)?
        .into_iter()
        .filter(|name| parse_snapshot_file_name(name).is_some())
        .collect();
    // The replica snapshot still staged means the single-node files may not
    // all have moved yet; once it has moved, they all had.
    if let Some(snapshot) = staged.first() {
        let backup = dir.join(BACKUP_DIR);
        std::fs::create_dir_all(&backup).map_err(|error| Error::io(&backup, error))?;
        for name in list(dir)? {
            if is_single_node_file(&name) {
                rename(&dir.join(&name), &backup.join(&name))?;
            }
        }
        sync_dir(&backup)?;
        sync_dir(dir)?;
        rename(&staging.join(snapshot), &dir.join(snapshot))?;
        sync_dir(dir)?;
        tracing::info!(
            dir = %dir.display(),
            "adopted the single-node store as a cluster member; its files are kept in {BACKUP_DIR}/"
        );
    }
    let marker = std::fs::read(staging.join(COMMIT_MARKER))
        .map_err(|error| Error::io(staging.join(COMMIT_MARKER), error))?;
    if let Ok(member) = serde_json::from_slice::<Member>(&marker) {
        super::member::write(&StdFs, dir, &member)?;
    }
    remove_staging(dir)
}

/// A file of the single-node store that adoption keeps aside: its log
/// segments, snapshots and what a repair cut.
fn is_single_node_file(name: &str) -> bool {
    crate::storage::segment::parse_segment_file_name(name).is_some()
        || parse_snapshot_file_name(name).is_some()
        || crate::storage::recovery::is_broken_file_name(name)
}

fn remove_staging(dir: &Path) -> Result<()> {
    let staging = dir.join(STAGING_DIR);
    if !staging.exists() {
        return Ok(());
    }
    std::fs::remove_dir_all(&staging).map_err(|error| Error::io(&staging, error))?;
    sync_dir(dir)
}

fn list(dir: &Path) -> Result<Vec<String>> {
    StdFs.list(dir).map_err(|error| Error::io(dir, error))
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|error| Error::io(from, error))
}

fn sync_dir(dir: &Path) -> Result<()> {
    StdFs.sync_dir(dir).map_err(|error| Error::io(dir, error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::state_machine::StateMachine;

    const KEYS: usize = 200;

    /// A stopped single-node store of `KEYS` keys over several segments.
    fn single_node_store(dir: &Path) {
        let mut options = StoreOptions::default();
        options.wal.segment_bytes = 64 << 10;
        let store = DurableStore::open(dir, options).expect("open");
        for index in 0..KEYS {
            store
                .set(format!("key-{index:03}").as_bytes(), &[b'v'; 1000])
                .expect("set");
        }
        store.close().expect("close");
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names = list(dir).expect("list");
        names.sort();
        names
    }

    /// What a cluster node would load from `dir`: its keys and Raft index.
    fn replica(dir: &Path) -> (usize, u64) {
        let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
        let machine = StateMachine::open(fs, dir, Default::default()).expect("replica");
        let keys = machine.state().read().len();
        let index = machine.state().read().revision();
        (keys, index)
    }

    #[test]
    fn an_adoption_interrupted_after_its_commit_is_finished_by_the_next_open() {
        let temp = tempfile::tempdir().expect("dir");
        let dir = temp.path().join("data");
        single_node_store(&dir);
        let single_files = names(&dir);
        assert!(single_files.len() > 3, "several segments: {single_files:?}");
        let adopted = adopt(&dir, 1, "127.0.0.1:9").expect("adopt");
        assert_eq!((adopted.keys, adopted.index), (KEYS as u64, KEYS as u64));
        assert_eq!(replica(&dir), (KEYS, KEYS as u64));
        let finished = names(&dir);
        let snapshot = finished
            .iter()
            .find(|name| parse_snapshot_file_name(name).is_some())
            .expect("the replica snapshot")
            .clone();

        // Rewind to just after the commit, with half the files moved aside.
        let staging = dir.join(STAGING_DIR);
        let backup = dir.join(BACKUP_DIR);
        std::fs::create_dir(&staging).expect("staging");
        rename(&dir.join(&snapshot), &staging.join(&snapshot)).expect("stage");
        std::fs::File::create(staging.join(COMMIT_MARKER)).expect("marker");
        for name in names(&backup).iter().skip(2) {
            rename(&backup.join(name), &dir.join(name)).expect("rewind");
        }
        finish_interrupted(&dir).expect("finish");
        assert_eq!(names(&dir), finished);
        let mut kept = names(&backup);
        kept.push("LOCK".into());
        kept.sort();
        assert_eq!(kept, single_files, "every single-node file kept, none lost");
        assert_eq!(replica(&dir), (KEYS, KEYS as u64));
    }

    #[test]
    fn an_adoption_interrupted_before_its_commit_leaves_the_single_node_store() {
        let temp = tempfile::tempdir().expect("dir");
        let dir = temp.path().join("data");
        single_node_store(&dir);
        let single_files = names(&dir);
        // A staged snapshot without the commit marker: as if the process died
        // while writing it.
        let staging = dir.join(STAGING_DIR);
        std::fs::create_dir(&staging).expect("staging");
        std::fs::write(staging.join("00000000000000000200.snap"), b"half").expect("write");
        finish_interrupted(&dir).expect("discard");
        assert_eq!(names(&dir), single_files);
        let store = DurableStore::open(&dir, StoreOptions::default()).expect("open");
        assert_eq!(store.len(), KEYS);
        store.close().expect("close");
        // And the adoption can then be made.
        adopt(&dir, 3, "127.0.0.1:9").expect("adopt");
        assert_eq!(replica(&dir), (KEYS, KEYS as u64));
    }
}
