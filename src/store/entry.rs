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

/// RAM one key costs besides its key and value bytes: the entry, its place in
/// the ordered map and the allocator's share. Measured, not computed:
/// `walrus bench store` finds 248 bytes per key for 14-byte keys with
/// 100-byte values (BENCHMARKS.md), 134 of them neither key nor value.
pub const ENTRY_OVERHEAD_BYTES: u64 = 134;

impl Entry {
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.expires_at_ms == 0 || now_ms < self.expires_at_ms
    }

    /// An estimate of the RAM this entry takes under a key of `key_len`
    /// bytes (what `MEMORY USAGE` answers).
    pub fn memory_usage(&self, key_len: usize) -> u64 {
        (key_len + self.value.len()) as u64 + ENTRY_OVERHEAD_BYTES
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
    /// The key does not exist, and none of its removals came after this
    /// revision: so it was not created and removed again since (the WATCH of
    /// an absent key). The state judges the second half
    /// ([`crate::store::State`]'s removal log); [`Guard::holds`] only the first.
    AbsentSince(u64),
}

impl Guard {
    pub fn holds(self, current: Option<&Entry>) -> bool {
        match self {
            Guard::None => true,
            Guard::Absent | Guard::AbsentSince(_) => current.is_none(),
            Guard::Present => current.is_some(),
            Guard::ModRevision(revision) => {
                current.is_some_and(|entry| entry.mod_revision == revision)
            }
        }
    }
}
