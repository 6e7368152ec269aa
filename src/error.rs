//! The library's error type.
//!
//! Each variant says what went wrong and whether retrying can help
//! ([`Error::is_retriable`]). I/O and corruption errors always name the file, and
//! corruption also the byte offset, so an operator can look at the damage with
//! `walrus dump`.

use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How an HTTP `503` for [`Error::Unavailable`] ends: the request was never
/// proposed, so sending it again, anywhere, is safe. The client and
/// `walrus verify` take it at its word (and verify checks it).
pub const NOTHING_APPLIED: &str = "nothing was applied, retry shortly";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O call failed on `path`.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Bytes on disk do not decode or fail their checksum.
    #[error("corrupt data in {} at offset {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// An earlier write or fsync failed. The log's durable state is unknown, so the
    /// store acknowledges nothing more until it is reopened (and recovered).
    #[error("storage has failed and accepts no writes until restarted: {reason}")]
    Failed { reason: String },

    /// Another process (or another open store in this one) holds the directory.
    #[error("data directory {} is locked by another walrus process", path.display())]
    Locked { path: PathBuf },

    /// The directory holds files walrus did not write.
    #[error("{} is not a walrus data directory: {reason}", path.display())]
    ForeignDirectory { path: PathBuf, reason: String },

    /// A file was written by a newer walrus.
    #[error("{} has format version {found}; this build reads version {supported}", path.display())]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    /// The caller asked for something the store cannot do (e.g. an oversized key).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The store was closed while the request was in flight.
    #[error("the store is closed")]
    Closed,

    /// The cluster cannot serve the request now: no leader is known, no quorum
    /// answered in time, or the leader could not be reached. The request was
    /// never proposed, so nothing of it was applied; retrying after an
    /// election is the remedy.
    #[error("the cluster is unavailable: {reason}")]
    Unavailable { reason: String },

    /// The cluster took the write but could not confirm it: leadership moved,
    /// the leader failed, or no quorum answered in time after it was proposed.
    /// It may have been applied, or may still be (a leader that regains its
    /// quorum commits it). Retrying is safe only for a write that is
    /// idempotent; otherwise read first.
    #[error("the write's outcome is unknown: {reason}")]
    OutcomeUnknown { reason: String },

    /// The file system holding the log is full. Nothing of the request was
    /// written, and the store is not failed: writes succeed again once space is
    /// freed. Deletes may still use a reserve kept back for them, so keys can be
    /// deleted and the log compacted to give space back.
    #[error(
        "no space left on the device holding {}: nothing was written; free space \
         (delete keys and compact, or remove other files) and retry",
        path.display()
    )]
    NoSpace { path: PathBuf },

    /// A cluster's leader is short of disk space: it refuses writes that
    /// add data (nothing of this one was proposed) until space is freed.
    /// Deletes still go through, and compacting after them gives space back.
    #[error(
        "the cluster refuses writes that add data: {reason}; nothing was written. \
         Delete keys (deletes still go through, and the log is compacted to give \
         the space back) or free space on that disk, and retry"
    )]
    DiskLow { reason: String },

    /// A cluster member may not read the command's log format (it runs an
    /// older walrus, or has not said yet): proposed, the command would stop
    /// that member. Nothing was written; upgrading every member is the remedy.
    #[error(
        "the cluster cannot take this command yet: {reason}; nothing was written. \
         Upgrade every member to this walrus, then retry"
    )]
    MembersTooOld { reason: String },

    /// Writing a snapshot failed; the log is intact and nothing was lost.
    #[error("snapshot failed: {0}")]
    SnapshotFailed(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn corrupt(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// Whether the same request can succeed later without operator action.
    ///
    /// A closed store (a restart in progress) and an unavailable cluster (an
    /// election in progress) qualify; a failed log needs a
    /// restart, corruption needs an operator, and bad arguments stay bad. A
    /// write of unknown outcome does not: repeating it may apply it twice.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Error::Closed | Error::Unavailable { .. })
    }
}

/// Whether an I/O error says the device (or the user's quota) is full.
pub fn is_no_space(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}
