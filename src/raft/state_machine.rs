//! The replicated state machine: committed entries applied to the in-memory
//! [`State`], and snapshots of it in the data directory.
//!
//! Apply is deterministic: a proposal carries its issue time, so expiry guards
//! are judged at the same instant on every replica, and a change's revision is
//! its log index, so a write has the same revision (ETag) everywhere.
//!
//! Snapshots are the usual snapshot files (`storage::snapshot`), named by the
//! last log index they cover, with the Raft last log id and membership in the
//! extra block. A snapshot travels as the file's bytes, never held whole:
//! [`SnapshotData`] reads an open file a piece at a time, so the sender streams
//! it from disk, and the receiver writes the pieces to a file of its own per
//! transfer (`incoming-N.snap.tmp`) as they arrive, checking them as they come. Installing reads the file once, checking every checksum
//! while it rebuilds the state, syncs it, renames it into place, and only
//! then replaces the state.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::{Applied, LogId, SnapshotMeta, StoredMembership, TypeConfig, io_error};
use crate::error::{Error, Result};
use crate::storage::fs::{WritableFile, read_in_pieces};
use crate::storage::snapshot::{
    SnapshotMeta as FileMeta, SnapshotRecord, SnapshotStreamCheck, SnapshotWriter, TEMP_SUFFIX,
    incoming_snapshot_name, parse_snapshot_file_name, read_snapshot_with_extra, snapshot_file_name,
};
use crate::storage::{FileSystem, snapshot};
use crate::store::changes::{ChangeFeed, FeedLimits};
use crate::store::{RemovalLog, State, decode_payload_from, write_frozen};

/// A snapshot file's bytes, read front to back from an open handle (so a
/// newer snapshot replacing the file does not cut a transfer short).
pub struct SnapshotData {
    reader: Box<dyn Read + Send>,
    /// Set when the bytes are a file received from the leader in this
    /// node's own directory, checked and synced: installing renames that
    /// file into place instead of copying it.
    received: Option<PathBuf>,
}

impl SnapshotData {
    /// The bytes of the file at `path`.
    pub fn open(fs: &dyn FileSystem, path: &Path) -> io::Result<SnapshotData> {
        Ok(SnapshotData {
            reader: fs.open_read(path)?,
            received: None,
        })
    }

    /// Bytes already in memory.
    #[cfg(test)]
    pub fn from_bytes(data: Vec<u8>) -> SnapshotData {
        SnapshotData {
            reader: Box::new(io::Cursor::new(data)),
            received: None,
        }
    }

    /// The next piece, up to `max` bytes; empty at the end.
    pub fn read_piece(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let mut piece = Vec::with_capacity(max.min(1 << 20));
        (&mut self.reader)
            .take(max as u64)
            .read_to_end(&mut piece)?;
        Ok(piece)
    }
}

type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;

/// Entries read per lock hold while a snapshot is written.
const SNAPSHOT_CHUNK: usize = 4096;

/// What the extra block of a replica's snapshot holds.
#[derive(Serialize, Deserialize)]
struct RaftSnapshotMeta {
    last_log_id: Option<LogId>,
    last_membership: StoredMembership,
    /// The state's removal log (`store::RemovalLog`), sparse: replicated
    /// state that WATCH guards are judged by.
    removals: Vec<(u8, u16, u64)>,
}

impl From<RaftSnapshotMeta> for SnapshotMeta {
    fn from(meta: RaftSnapshotMeta) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: meta.last_log_id,
            last_membership: meta.last_membership,
        }
    }
}

/// The extra block as snapshots written before the removal log had it.
#[derive(Deserialize)]
struct RaftSnapshotMetaV1 {
    last_log_id: Option<LogId>,
    last_membership: StoredMembership,
}

struct Inner {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    state: Arc<RwLock<State>>,
    applied: Mutex<(Option<LogId>, StoredMembership)>,
    /// Serializes snapshot builds and installs, and guards `current`: the
    /// snapshot file this machine loaded, built or installed last, with its
    /// Raft metadata (the one sent to followers). Only files checked whole
    /// get here, never merely the newest name in the directory.
    snapshot_lock: Mutex<Option<(PathBuf, SnapshotMeta)>>,
    /// Numbers the incoming snapshot files of this process.
    transfers: std::sync::atomic::AtomicU64,
    /// This run of the node, as the origins of its clients' writes name it
    /// in the log ([`crate::store::Origin`]): drawn at random when the machine opens.
    run: u64,
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
        StateMachine::open_into(fs, dir, watch_history, None)
    }

    /// [`StateMachine::open`] into the state lock `shared` when given: the
    /// lock a single-node store served reads from, so that reads go on
    /// through the same lock once the store has become a cluster member. Its
    /// change feed carries over (the log continues at the next revision), so
    /// watchers see no gap.
    pub fn open_into(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        watch_history: FeedLimits,
        shared: Option<Arc<RwLock<State>>>,
    ) -> Result<StateMachine> {
        let (state, applied, current) = match load_newest_snapshot(&*fs, dir)? {
            Some((path, state, meta)) => {
                tracing::info!(
                    path = %path.display(),
                    keys = state.len(),
                    "loaded the newest snapshot"
                );
                let applied = (meta.last_log_id, meta.last_membership.clone());
                (state, applied, Some((path, meta.into())))
            }
            None => (
                State::default().with_revision_is_seq(),
                (None, StoredMembership::default()),
                None,
            ),
        };
        let mut state = state;
        let state = match shared {
            Some(shared) => {
                let mut current_state = shared.write();
                // The snapshot holds exactly what the lock held (the store
                // was stopped with no write after it), so the history goes on.
                let feed = current_state
                    .feed()
                    .cloned()
                    .unwrap_or_else(|| ChangeFeed::new(state.revision(), watch_history));
                state.attach_feed(feed);
                *current_state = state;
                drop(current_state);
                shared
            }
            None => {
                state.attach_feed(ChangeFeed::new(state.revision(), watch_history));
                Arc::new(RwLock::new(state))
            }
        };
        Ok(StateMachine {
            inner: Arc::new(Inner {
                fs,
                dir: dir.to_path_buf(),
                state,
                applied: Mutex::new(applied),
                snapshot_lock: Mutex::new(current),
                transfers: Default::default(),
                run: rand::random(),
            }),
        })
    }

    /// This run of the node, for the [`crate::store::Origin`] of its clients' writes.
    pub fn run(&self) -> u64 {
        self.inner.run
    }

    /// The newest valid snapshot file in the data directory, if any.
    pub fn newest_snapshot_path(&self) -> Result<Option<PathBuf>> {
        Ok(self
            .inner
            .snapshot_lock
            .lock()
            .as_ref()
            .map(|(path, _)| path.clone()))
    }

    /// Starts receiving a snapshot: a new, empty file of its own.
    pub fn create_incoming(&self) -> io::Result<(PathBuf, Box<dyn WritableFile>)> {
        let number = self
            .inner
            .transfers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.inner.dir.join(incoming_snapshot_name(number));
        let file = self.inner.fs.create(&path)?;
        Ok((path, file))
    }

    /// Removes an incoming file whose transfer was abandoned.
    pub fn discard_incoming(&self, path: &Path) {
        let _ = self.inner.fs.remove(path);
    }

    /// A received snapshot, written and synced to `path` through
    /// [`StateMachine::create_incoming`]'s file, to install.
    pub fn received(&self, path: &Path) -> io::Result<SnapshotData> {
        let mut data = SnapshotData::open(&*self.inner.fs, path)?;
        data.received = Some(path.to_path_buf());
        Ok(data)
    }

    pub fn state(&self) -> &Arc<RwLock<State>> {
        &self.inner.state
    }

    fn build(&self) -> io::Result<Snapshot> {
        let mut current = self.inner.snapshot_lock.lock();
        // Frozen with `applied` read under the state lock, so the contents
        // match the log id.
        let (point, removals, last_log_id, last_membership) = {
            let mut state = self.inner.state.write();
            let (last_log_id, last_membership) = self.inner.applied.lock().clone();
            let removals = state.removals().clone();
            (state.freeze(), removals, last_log_id, last_membership)
        };
        let extra =
            replica_snapshot_extra(last_log_id, &last_membership, &removals).map_err(io_error)?;
        let index = last_log_id.map_or(0, |id| id.index);
        let written = self.write_frozen(index, point, &extra);
        State::thaw(&self.inner.state);
        let path = written.map_err(io_error)?;
        let data = SnapshotData::open(&*self.inner.fs, &path)?;
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
        };
        *current = Some((path, meta.clone()));
        self.remove_snapshots_before(index);
        tracing::info!(index, keys = point.entry_count, "built a snapshot");
        Ok(Snapshot {
            meta,
            snapshot: data,
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

    fn install(&self, meta: &SnapshotMeta, data: SnapshotData) -> io::Result<()> {
        let mut current = self.inner.snapshot_lock.lock();
        let index = meta.last_log_id.map_or(0, |id| id.index);
        let final_path = self.inner.dir.join(snapshot_file_name(index));
        let state = self.place(index, data, &final_path, meta.last_log_id)?;
        *current = Some((final_path, meta.clone()));
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

    /// Reads `data` once, checking every checksum while it rebuilds the
    /// state, and makes it the durable file at `final_path`: a received file
    /// (already synced) is renamed there; other bytes are copied to a temp
    /// file as they are read, synced, and renamed. Nothing is renamed unless
    /// every check passed, its Raft position included.
    fn place(
        &self,
        index: u64,
        mut data: SnapshotData,
        final_path: &Path,
        expected: Option<LogId>,
    ) -> io::Result<State> {
        let fs = &*self.inner.fs;
        let (source, mut copy) = match data.received.take() {
            Some(received) => (received, None),
            None => {
                let name = snapshot_file_name(index);
                let temp = self.inner.dir.join(format!("{name}{TEMP_SUFFIX}"));
                let _ = fs.remove(&temp);
                let file = fs.create(&temp)?;
                (temp, Some(file))
            }
        };
        let mut check = SnapshotStreamCheck::collecting();
        let mut written = 0u64;
        let read = read_in_pieces(
            &mut *data.reader,
            |error| error,
            |piece| {
                check.push(piece).map_err(io_error)?;
                if let Some(file) = &mut copy {
                    file.write_all_at(written, piece)?;
                    written += piece.len() as u64;
                }
                Ok(())
            },
        );
        let result = read
            .and_then(|()| check.finish_with_extra().map_err(io_error))
            .and_then(|(file_meta, extra, records)| {
                replica_state(file_meta, &extra, records).map_err(io_error)
            })
            .and_then(|decoded| {
                if decoded.1.last_log_id != expected {
                    return Err(io_error(
                        "the snapshot's contents do not match its metadata (last log id)",
                    ));
                }
                if let Some(file) = &mut copy {
                    file.sync_all()?;
                }
                Ok(decoded)
            });
        drop(copy);
        let decoded = match result {
            Ok(decoded) => decoded,
            Err(error) => {
                let _ = fs.remove(&source);
                return Err(error);
            }
        };
        fs.rename(&source, final_path)?;
        fs.sync_dir(&self.inner.dir)?;
        Ok(decoded.0)
    }

    /// The snapshot this machine loaded, built or installed last, opened
    /// under the snapshot lock, so no build or install removes the file
    /// before the handle holds it.
    fn current(&self) -> io::Result<Option<Snapshot>> {
        let current = self.inner.snapshot_lock.lock();
        let Some((path, meta)) = current.as_ref() else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            meta: meta.clone(),
            snapshot: SnapshotData::open(&*self.inner.fs, path)?,
        }))
    }

    fn apply_entry(&self, state: &mut State, entry: &super::LogEntry) -> io::Result<Applied> {
        let index = entry.log_id.index;
        let outcome = match &entry.payload {
            EntryPayload::Normal(proposal) => {
                let (issued_at_ms, from, command) = decode_payload_from(&proposal.payload)
                    .map_err(|error| {
                        io_error(format!(
                            "entry {index} does not decode: {error} (a command from a newer \
                             walrus? upgrade this node and start it again)"
                        ))
                    })?;
                // A client of this run of this node, told of the write
                // unless it asked for NOLOOP; anyone else's is unknown here.
                let origin = from
                    .filter(|origin| origin.node_run == self.inner.run)
                    .map_or(crate::store::origin::UNKNOWN, |origin| origin.client);
                Some(crate::store::origin::with(origin, || {
                    state.apply(index, issued_at_ms, command)
                }))
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

/// The snapshot files in `dir`, newest first.
fn snapshot_paths(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<PathBuf>> {
    let names = match fs.list(dir) {
        Ok(names) => names,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(Error::io(dir, err)),
    };
    let mut indexes: Vec<u64> = names
        .iter()
        .filter_map(|name| parse_snapshot_file_name(name))
        .collect();
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    Ok(indexes
        .into_iter()
        .map(|index| dir.join(snapshot_file_name(index)))
        .collect())
}

/// The newest snapshot in `dir` that reads whole and checks out, as a state,
/// read a piece at a time; damaged ones are skipped with a warning.
fn load_newest_snapshot(
    fs: &dyn FileSystem,
    dir: &Path,
) -> Result<Option<(PathBuf, State, RaftSnapshotMeta)>> {
    for path in snapshot_paths(fs, dir)? {
        let decoded = read_snapshot_with_extra(fs, &path)
            .map_err(|error| error.to_string())
            .and_then(|(meta, extra, records)| replica_state(meta, &extra, records));
        match decoded {
            Ok((state, meta)) => return Ok(Some((path, state, meta))),
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
    removals: &RemovalLog,
) -> Result<Vec<u8>> {
    postcard::to_stdvec(&RaftSnapshotMeta {
        last_log_id,
        last_membership: last_membership.clone(),
        removals: removals.to_sparse(),
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

/// [`check_snapshot_file`] the way an install reads a snapshot: through the
/// streaming check, `piece` bytes at a time; for fuzzing the two against
/// each other.
pub fn check_snapshot_stream(data: &[u8], piece: usize) -> std::result::Result<usize, String> {
    let mut check = SnapshotStreamCheck::collecting();
    for part in data.chunks(piece.max(1)) {
        check.push(part).map_err(|error| error.to_string())?;
    }
    let (meta, extra, records) = check
        .finish_with_extra()
        .map_err(|error| error.to_string())?;
    replica_state(meta, &extra, records).map(|(state, _)| state.len())
}

/// Decodes a snapshot file held in memory into a state and its Raft
/// metadata (the same checks as reading one in pieces).
fn decode_replica_snapshot(data: &[u8]) -> std::result::Result<(State, RaftSnapshotMeta), String> {
    let (meta, extra, records) =
        snapshot::decode_snapshot_with_extra(data).map_err(|error| error.to_string())?;
    replica_state(meta, &extra, records)
}

/// The Raft position a replica snapshot's extra block names, for checking a
/// snapshot as it arrives.
pub fn snapshot_position(extra: &[u8]) -> std::result::Result<Option<LogId>, String> {
    raft_meta(extra).map(|meta| meta.last_log_id)
}

/// Decodes the extra block; one written before it carried the removal log
/// reads with an empty one.
fn raft_meta(extra: &[u8]) -> std::result::Result<RaftSnapshotMeta, String> {
    if let Ok(meta) = postcard::from_bytes::<RaftSnapshotMeta>(extra) {
        return Ok(meta);
    }
    postcard::from_bytes::<RaftSnapshotMetaV1>(extra)
        .map(|old| RaftSnapshotMeta {
            last_log_id: old.last_log_id,
            last_membership: old.last_membership,
            removals: Vec::new(),
        })
        .map_err(|error| format!("not a replica's snapshot (no Raft metadata: {error})"))
}

/// The state a replica's snapshot holds, with its Raft metadata.
fn replica_state(
    meta: FileMeta,
    extra: &[u8],
    records: Vec<SnapshotRecord>,
) -> std::result::Result<(State, RaftSnapshotMeta), String> {
    let raft_meta = raft_meta(extra)?;
    let mut state =
        State::from_snapshot(meta.last_seq, meta.revision, records).with_revision_is_seq();
    state.set_removals(RemovalLog::from_sparse(&raft_meta.removals));
    Ok((state, raft_meta))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let machine = self.clone();
        crate::deterministic::off_runtime(move || machine.build()).await?
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
        crate::deterministic::off_runtime(move || machine.install(&meta, snapshot)).await?
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        let machine = self.clone();
        crate::deterministic::off_runtime(move || machine.current()).await?
    }
}

#[cfg(test)]
mod tests {
    //! Snapshots built, sent and installed a piece at a time, and refused
    //! whole when any piece is damaged.

    use openraft::{Entry, RaftSnapshotBuilder};

    use super::*;
    use crate::raft::Proposal;
    use crate::store::{Command, encode_payload};
    use crate::testing::SimFs;

    fn open(fs: &SimFs, dir: &str) -> StateMachine {
        let fs: Arc<dyn FileSystem> = Arc::new(fs.clone());
        fs.create_dir_all(Path::new(dir)).expect("dir");
        StateMachine::open(fs, Path::new(dir), Default::default()).expect("open")
    }

    /// Applies `commands` as the entries from index `first` on.
    async fn apply(machine: &mut StateMachine, first: u64, commands: Vec<Command>) {
        let entries: Vec<io::Result<EntryResponder<TypeConfig>>> = (first..)
            .zip(commands)
            .map(|(index, command)| {
                let mut payload = Vec::new();
                encode_payload(&mut payload, 0, &command);
                let entry = Entry {
                    log_id: openraft::testing::log_id::<TypeConfig>(1, 1, index),
                    payload: EntryPayload::Normal(Proposal { payload }),
                };
                Ok((entry, None))
            })
            .collect();
        machine
            .apply(futures::stream::iter(entries))
            .await
            .expect("apply");
    }

    /// A machine with `keys` keys of 3 KiB values applied, so its snapshot
    /// spans several read pieces.
    async fn filled(fs: &SimFs, keys: u64) -> StateMachine {
        let mut machine = open(fs, "/leader");
        let puts = (1..=keys)
            .map(|index| Command::put(format!("key-{index:05}"), vec![b'v'; 3000]))
            .collect();
        apply(&mut machine, 1, puts).await;
        machine
    }

    fn read_all(mut data: SnapshotData) -> Vec<u8> {
        let mut all = Vec::new();
        loop {
            let piece = data.read_piece(64 << 10).expect("read");
            if piece.is_empty() {
                return all;
            }
            all.extend_from_slice(&piece);
        }
    }

    fn names(fs: &SimFs, dir: &str) -> Vec<String> {
        let mut names = fs.list(Path::new(dir)).expect("list");
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_snapshot_streams_from_its_file_and_installs_on_another_node() {
        let fs = SimFs::new(3);
        let mut leader = filled(&fs, 800).await;
        let built = leader.build_snapshot().await.expect("build");
        let bytes = read_all(built.snapshot);
        assert!(
            bytes.len() > 2 << 20,
            "several pieces: {} bytes",
            bytes.len()
        );

        let mut follower = open(&fs, "/follower");
        follower
            .install_snapshot(&built.meta, SnapshotData::from_bytes(bytes.clone()))
            .await
            .expect("install");
        assert_eq!(follower.state().read().len(), 800);
        assert_eq!(
            follower.applied_state().await.expect("applied").0,
            built.meta.last_log_id
        );
        let current = follower.get_current_snapshot().await.expect("current");
        let current = current.expect("a snapshot");
        assert_eq!(current.meta, built.meta);
        assert_eq!(
            read_all(current.snapshot),
            bytes,
            "the same file, byte for byte"
        );
        assert_eq!(names(&fs, "/follower"), vec!["00000000000000000800.snap"]);
        // And a restart loads it.
        drop(follower);
        let reopened = open(&fs, "/follower");
        assert_eq!(reopened.state().read().len(), 800);
    }

    #[tokio::test]
    async fn a_damaged_or_mislabelled_snapshot_is_refused_and_changes_nothing() {
        let fs = SimFs::new(4);
        let mut leader = filled(&fs, 300).await;
        let built = leader.build_snapshot().await.expect("build");
        let bytes = read_all(built.snapshot);
        let mut follower = open(&fs, "/follower");

        // One flipped byte in the middle of the entries.
        let mut damaged = bytes.clone();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0x40;
        let refused = follower
            .install_snapshot(&built.meta, SnapshotData::from_bytes(damaged))
            .await;
        assert!(refused.is_err(), "a damaged snapshot is refused");

        // Intact bytes, but metadata naming another position.
        let mut mislabelled = built.meta.clone();
        mislabelled.last_log_id = Some(openraft::testing::log_id::<TypeConfig>(1, 1, 299));
        let refused = follower
            .install_snapshot(&mislabelled, SnapshotData::from_bytes(bytes.clone()))
            .await;
        assert!(
            refused.is_err(),
            "a snapshot whose contents disagree is refused"
        );

        assert!(follower.state().read().is_empty(), "the state is untouched");
        assert_eq!(follower.applied_state().await.expect("applied").0, None);
        assert!(
            follower
                .get_current_snapshot()
                .await
                .expect("current")
                .is_none()
        );
        assert!(names(&fs, "/follower").is_empty(), "no file left behind");

        // A received file (the incoming path) installs by rename. Each
        // transfer gets a file of its own, which a data directory accepts as
        // a leftover to remove at start-up.
        let (abandoned, _) = follower.create_incoming().expect("incoming");
        let (path, mut file) = follower.create_incoming().expect("incoming");
        assert_ne!(abandoned, path);
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(
            crate::storage::snapshot::is_incoming_snapshot_name(&name),
            "{name}"
        );
        follower.discard_incoming(&abandoned);
        file.write_all_at(0, &bytes).expect("write");
        file.sync_all().expect("sync");
        drop(file);
        let received = follower.received(&path).expect("received");
        follower
            .install_snapshot(&built.meta, received)
            .await
            .expect("install");
        assert_eq!(follower.state().read().len(), 300);
        assert_eq!(names(&fs, "/follower"), vec!["00000000000000000300.snap"]);
    }

    #[tokio::test]
    async fn the_removal_log_travels_in_the_snapshot_so_replicas_judge_watches_alike() {
        let fs = SimFs::new(5);
        let mut leader = filled(&fs, 20).await;
        let deletes = (1..=5)
            .map(|index| Command::delete(format!("key-{index:05}")))
            .collect();
        apply(&mut leader, 21, deletes).await;
        let removals = leader.state().read().removals().clone();
        assert!(!removals.to_sparse().is_empty());
        let built = leader.build_snapshot().await.expect("build");

        let mut follower = open(&fs, "/follower");
        follower
            .install_snapshot(&built.meta, built.snapshot)
            .await
            .expect("install");
        assert_eq!(follower.state().read().removals(), &removals);
        drop(follower);
        assert_eq!(
            open(&fs, "/follower").state().read().removals(),
            &removals,
            "after a restart too"
        );
    }
}
