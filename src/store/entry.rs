//! A stored entry (value, revision, expiry) and the conditions a write can
//! put on one (`Guard`): what the state, the commands and the Redis ops all
//! speak of, kept apart so none of them imports another for it.

use bytes::Bytes;

/// A stored value with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub value: Bytes,
    /// The store revision of the write that last set this key.
    pub mod_revision: u64,
    /// Unix time in milliseconds after which the key is gone; 0 for never.
    pub expires_at_ms: u64,
}

impl Entry {
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.expires_at_ms == 0 || now_ms < self.expires_at_ms
    }
}

/// A condition on one key that must hold for a command to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Guard {
    #[default]
    None,
    /// The key does not exist (or has expired).
    Absent,
    /// The key exists.
    Present,
    /// The key exists and was last modified at this revision.
    ModRevision(u64),
}

impl Guard {
    pub fn holds(self, current: Option<&Entry>) -> bool {
        match self {
            Guard::None => true,
            Guard::Absent => current.is_none(),
            Guard::Present => current.is_some(),
            Guard::ModRevision(revision) => {
                current.is_some_and(|entry| entry.mod_revision == revision)
            }
        }
    }
}
