//! The replicated state machine: committed entries applied to the in-memory
//! [`State`], and snapshots of it in the data directory.
//!
//! Apply is deterministic: a proposal carries its issue time, so expiry guards
//! are judged at the same instant on every replica, and a change's revision is
//! its log index, so a write has the same revision (ETag) everywhere.
//!
//! Snapshots are the usual snapshot files (`storage::snapshot`), named by the
//! last log index they cover, with the Raft last log id and membership in the
//! extra block. A snapshot sent to a peer is the file's bytes; the receiver
//! checks every checksum, writes it durably, and only then replaces its state.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::{Applied, LogId, SnapshotMeta, StoredMembership, TypeConfig, io_error};
use crate::error::{Error, Result};
use crate::storage::FileSystem;
use crate::storage::snapshot::{
    SnapshotMeta as FileMeta, SnapshotWriter, TEMP_SUFFIX, decode_snapshot_with_extra,
    parse_snapshot_file_name, snapshot_file_name,
};
use crate::store::changes::{ChangeFeed, FeedLimits};
use crate::store::{State, decode_payload, write_frozen};

pub type SnapshotData = Cursor<Vec<u8>>;
type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;

/// Entries read per lock hold while a snapshot is written.
const SNAPSHOT_CHUNK: usize = 4096;

/// What the extra block of a replica's snapshot holds.
#[derive(Serialize, Deserialize)]
struct RaftSnapshotMeta {
    last_log_id: Option<LogId>,
    last_membership: StoredMembership,
}

struct Inner {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    state: Arc<RwLock<State>>,
    applied: Mutex<(Option<LogId>, StoredMembership)>,
    /// Serializes snapshot builds and installs.
    snapshot_lock: Mutex<()>,
}

/// The state machine handle openraft applies through; cheap to clone.
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Inner>,
}

impl StateMachine {
    /// Loads the newest valid snapshot in `dir`, or starts empty; watchers can
    /// resume from `watch_history` of changes.
    pub fn open(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        watch_history: FeedLimits,
    ) -> Result<StateMachine> {
        let (state, applied) = match newest_snapshot(&*fs, dir)? {
            Some((path, data)) => {
                let (state, meta) = decode_replica_snapshot(&data)
                    .map_err(|reason| Error::corrupt(&path, 0, reason))?;
                tracing::info!(
                    path = %path.display(),
                    keys = state.len(),
                    "loaded the newest snapshot"
                );
                (state, (meta.last_log_id, meta.last_membership))
            }
            None => (
                State::default().with_revision_is_seq(),
                (None, StoredMembership::default()),
            ),
        };
        let mut state = state;
        state.attach_feed(ChangeFeed::new(state.revision(), watch_history));
        Ok(StateMachine {
            inner: Arc::new(Inner {
                fs,
                dir: dir.to_path_buf(),
                state: Arc::new(RwLock::new(state)),
                applied: Mutex::new(applied),
                snapshot_lock: Mutex::new(()),
            }),
        })
    }

    /// The state reads are served from.
    /// The newest valid snapshot file in the data directory, if any.
    pub fn newest_snapshot_path(&self) -> Result<Option<PathBuf>> {
        Ok(newest_snapshot(&*self.inner.fs, &self.inner.dir)?.map(|(path, _)| path))
    }

    pub fn state(&self) -> &Arc<RwLock<State>> {
        &self.inner.state
    }

    fn build(&self) -> io::Result<Snapshot> {
        let _building = self.inner.snapshot_lock.lock();
        // Frozen with `applied` read under the state lock, so the contents
        // match the log id.
        let (point, last_log_id, last_membership) = {
            let mut state = self.inner.state.write();
            let (last_log_id, last_membership) = self.inner.applied.lock().clone();
            (state.freeze(), last_log_id, last_membership)
        };
        let extra = replica_snapshot_extra(last_log_id, &last_membership).map_err(io_error)?;
        let index = last_log_id.map_or(0, |id| id.index);
        let written = self.write_frozen(index, point, &extra);
        self.inner.state.write().thaw();
        let path = written.map_err(io_error)?;
        self.remove_snapshots_before(index);
        let data = self.inner.fs.read(&path).map_err(io_error)?;
        tracing::info!(index, keys = point.entry_count, "built a snapshot");
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_log_id,
                last_membership,
            },
            snapshot: Cursor::new(data),
        })
    }

    fn write_frozen(
        &self,
        index: u64,
        point: crate::store::SnapshotPoint,
        extra: &[u8],
    ) -> Result<PathBuf> {
        let meta = FileMeta {
            last_seq: index,
            revision: point.revision,
            entry_count: point.entry_count,
        };
        let fs = &*self.inner.fs;
        let mut writer = SnapshotWriter::create_with_extra(fs, &self.inner.dir, meta, extra)?;
        if let Err(error) = write_frozen(&self.inner.state, &mut writer, SNAPSHOT_CHUNK) {
            writer.abandon();
            return Err(error);
        }
        writer.finish()
    }

    fn remove_snapshots_before(&self, index: u64) {
        let Ok(names) = self.inner.fs.list(&self.inner.dir) else {
            return;
        };
        for name in names {
            if parse_snapshot_file_name(&name).is_some_and(|seq| seq < index) {
                let _ = self.inner.fs.remove(&self.inner.dir.join(name));
            }
        }
        let _ = self.inner.fs.sync_dir(&self.inner.dir);
    }

    fn install(&self, meta: &SnapshotMeta, data: Vec<u8>) -> io::Result<()> {
        let _installing = self.inner.snapshot_lock.lock();
        let (state, file_meta) = decode_replica_snapshot(&data).map_err(io_error)?;
        if file_meta.last_log_id != meta.last_log_id {
            return Err(io_error(
                "the snapshot's contents do not match its metadata (last log id)",
            ));
        }
        let index = meta.last_log_id.map_or(0, |id| id.index);
        self.write_file(index, &data).map_err(io_error)?;
        let mut state = state;
        let mut current = self.inner.state.write();
        // Watchers stay attached; what the snapshot skipped over is unknown to
        // them, so the feed's history restarts at its revision.
        if let Some(feed) = current.feed() {
            feed.restart_at(state.revision());
            state.attach_feed(feed.clone());
        }
        *current = state;
        drop(current);
        *self.inner.applied.lock() = (meta.last_log_id, meta.last_membership.clone());
        self.remove_snapshots_before(index);
        tracing::info!(index, "installed a snapshot from the leader");
        Ok(())
    }

    /// Writes a received snapshot: temp file, sync, rename, sync the directory.
    fn write_file(&self, index: u64, data: &[u8]) -> Result<()> {
        let fs = &*self.inner.fs;
        let name = snapshot_file_name(index);
        let final_path = self.inner.dir.join(&name);
        let temp_path = self.inner.dir.join(format!("{name}{TEMP_SUFFIX}"));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |err| Error::io(path, err)
        };
        let mut file = fs.create(&temp_path).map_err(io(&temp_path))?;
        file.write_all_at(0, data).map_err(io(&temp_path))?;
        file.sync_all().map_err(io(&temp_path))?;
        fs.rename(&temp_path, &final_path)
            .map_err(io(&final_path))?;
        fs.sync_dir(&self.inner.dir).map_err(io(&self.inner.dir))
    }

    fn current(&self) -> io::Result<Option<Snapshot>> {
        let Some((path, data)) =
            newest_snapshot(&*self.inner.fs, &self.inner.dir).map_err(io_error)?
        else {
            return Ok(None);
        };
        let (_, meta) = decode_replica_snapshot(&data)
            .map_err(|reason| io_error(format!("{}: {reason}", path.display())))?;
        Ok(Some(Snapshot {
            meta: SnapshotMeta {
                last_log_id: meta.last_log_id,
                last_membership: meta.last_membership,
            },
            snapshot: Cursor::new(data),
        }))
    }

    fn apply_entry(&self, state: &mut State, entry: &super::LogEntry) -> io::Result<Applied> {
        let index = entry.log_id.index;
        let outcome = match &entry.payload {
            EntryPayload::Normal(proposal) => {
                let (issued_at_ms, command) = decode_payload(&proposal.payload)
                    .map_err(|error| io_error(format!("entry {index} does not decode: {error}")))?;
                Some(state.apply(index, issued_at_ms, command))
            }
            // The first membership entry sits at index 0, which the state's
            // applied position (0 when empty) already covers.
            EntryPayload::Blank => {
                if index > state.applied_seq() {
                    state.skip(index);
                }
                None
            }
            EntryPayload::Membership(membership) => {
                if index > state.applied_seq() {
                    state.skip(index);
                }
                self.inner.applied.lock().1 =
                    StoredMembership::new(Some(entry.log_id), membership.clone());
                None
            }
        };
        self.inner.applied.lock().0 = Some(entry.log_id);
        Ok(Applied { outcome })
    }
}

/// The newest snapshot file in `dir` that decodes, with its bytes.
fn newest_snapshot(fs: &dyn FileSystem, dir: &Path) -> Result<Option<(PathBuf, Vec<u8>)>> {
    let names = match fs.list(dir) {
        Ok(names) => names,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(Error::io(dir, err)),
    };
    let mut indexes: Vec<u64> = names
        .iter()
        .filter_map(|name| parse_snapshot_file_name(name))
        .collect();
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    for index in indexes {
        let path = dir.join(snapshot_file_name(index));
        let data = fs.read(&path).map_err(|err| Error::io(&path, err))?;
        match decode_replica_snapshot(&data) {
            Ok(_) => return Ok(Some((path, data))),
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "skipping a damaged snapshot")
            }
        }
    }
    Ok(None)
}

/// The extra block of a replica's snapshot: its Raft position and membership.
pub(super) fn replica_snapshot_extra(
    last_log_id: Option<LogId>,
    last_membership: &StoredMembership,
) -> Result<Vec<u8>> {
    postcard::to_stdvec(&RaftSnapshotMeta {
        last_log_id,
        last_membership: last_membership.clone(),
    })
    .map_err(|error| {
        Error::InvalidArgument(format!("encoding the snapshot's Raft metadata: {error}"))
    })
}

/// Checks a replica's snapshot file as a follower does before installing it;
/// for fuzzing.
pub fn check_snapshot_file(data: &[u8]) -> std::result::Result<usize, String> {
    decode_replica_snapshot(data).map(|(state, _)| state.len())
}

/// Decodes a snapshot file into a state and its Raft metadata.
fn decode_replica_snapshot(data: &[u8]) -> std::result::Result<(State, RaftSnapshotMeta), String> {
    let (meta, extra, records) =
        decode_snapshot_with_extra(data).map_err(|error| error.to_string())?;
    let raft_meta: RaftSnapshotMeta = postcard::from_bytes(&extra)
        .map_err(|error| format!("not a replica's snapshot (no Raft metadata: {error})"))?;
    let state = State::from_snapshot(meta.last_seq, meta.revision, records).with_revision_is_seq();
    Ok((state, raft_meta))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let machine = self.clone();
        tokio::task::spawn_blocking(move || machine.build())
            .await
            .map_err(io_error)?
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        Ok(self.inner.applied.lock().clone())
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let applied = {
                let mut state = self.inner.state.write();
                self.apply_entry(&mut state, &entry)?
            };
            if let Some(responder) = responder {
                responder.send(applied);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> io::Result<()> {
        let machine = self.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || machine.install(&meta, snapshot.into_inner()))
            .await
            .map_err(io_error)?
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        let machine = self.clone();
        tokio::task::spawn_blocking(move || machine.current())
            .await
            .map_err(io_error)?
    }
}
