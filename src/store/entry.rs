//! A stored entry (value, revision, expiry) and the conditions a write can
//! put on one (`Guard`): what the state, the commands and the Redis ops all
//! speak of, kept apart so none of them imports another for it.

use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;

/// A stored value with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub value: Bytes,
    /// The store revision of the write that last set this key.
    pub mod_revision: u64,
    /// Unix time in milliseconds after which the key is gone; 0 for never.
    pub expires_at_ms: u64,
    /// When the key was last read or written on this node.
    #[serde(skip)]
    pub accessed: AccessTime,
}

/// When a key was last read or written, in whole seconds of the Unix clock:
/// what `OBJECT IDLETIME` reports, as Redis's LRU clock does.
///
/// Local bookkeeping, not part of the stored state: a write sets it to the
/// write's own time (so replaying the log gives the same answer), a read
/// moves it on under the state's read lock (hence the atomic), and it is not
/// logged, snapshotted or replicated; a key loaded from a snapshot was last
/// accessed when it was loaded. Equality ignores it: two entries that differ
/// only in when they were read are the same entry.
#[derive(Debug, Default)]
pub struct AccessTime(AtomicU32);

impl AccessTime {
    /// Accessed at `now_ms` (Unix milliseconds).
    pub fn at_ms(now_ms: u64) -> AccessTime {
        AccessTime(AtomicU32::new(seconds(now_ms)))
    }

    /// Records an access at `now_ms`. Only a change of second is stored, so
    /// readers of one hot key do not all write its cache line.
    pub fn touch(&self, now_ms: u64) {
        let now = seconds(now_ms);
        if self.0.load(Ordering::Relaxed) != now {
            self.0.store(now, Ordering::Relaxed);
        }
    }

    /// Records the last access as `idle_seconds` before `now_ms` (RESTORE …
    /// IDLETIME), at the earliest the clock's first second.
    pub fn set_idle(&self, now_ms: u64, idle_seconds: u64) {
        let at = u64::from(seconds(now_ms))
            .saturating_sub(idle_seconds)
            .max(1);
        self.0.store(at as u32, Ordering::Relaxed);
    }

    /// Whole seconds since the last access, as of `now_ms`; 0 if it was
    /// never recorded (an entry that came over the network).
    pub fn idle_seconds(&self, now_ms: u64) -> u64 {
        match self.0.load(Ordering::Relaxed) {
            0 => 0,
            at => u64::from(seconds(now_ms).saturating_sub(at)),
        }
    }
}

/// Unix seconds in 32 bits: enough until 2106.
fn seconds(ms: u64) -> u32 {
    u32::try_from(ms / 1000).unwrap_or(u32::MAX)
}

impl Clone for AccessTime {
    fn clone(&self) -> AccessTime {
        AccessTime(AtomicU32::new(self.0.load(Ordering::Relaxed)))
    }
}

impl PartialEq for AccessTime {
    fn eq(&self, _: &AccessTime) -> bool {
        true
    }
}

impl Eq for AccessTime {}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_time_counts_whole_seconds_from_the_last_touch() {
        let accessed = AccessTime::at_ms(10_999);
        assert_eq!(accessed.idle_seconds(10_999), 0);
        assert_eq!(accessed.idle_seconds(11_000), 1);
        assert_eq!(accessed.idle_seconds(14_500), 4);
        accessed.touch(14_500);
        assert_eq!(accessed.idle_seconds(14_900), 0);
        // A clock that went back reads as no idle time, not a huge one.
        assert_eq!(accessed.idle_seconds(1_000), 0);
    }

    #[test]
    fn an_unrecorded_access_reads_as_idle_for_no_time() {
        assert_eq!(AccessTime::default().idle_seconds(1_000_000), 0);
    }

    #[test]
    fn entries_that_differ_only_in_access_time_are_equal_and_clones_keep_it() {
        let entry = |accessed_ms| Entry {
            value: Bytes::from_static(b"v"),
            mod_revision: 3,
            expires_at_ms: 0,
            accessed: AccessTime::at_ms(accessed_ms),
        };
        assert_eq!(entry(1_000), entry(9_000));
        let original = entry(5_000);
        assert_eq!(original.clone().accessed.idle_seconds(7_000), 2);
    }
}
