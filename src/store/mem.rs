//! `MemStore`: the state behind a reader/writer lock, nothing on disk.

use std::ops::Bound;

use bytes::Bytes;
use parking_lot::RwLock;

use super::{Command, Entry, KvStore, State, Submission, now_ms};

#[derive(Default)]
pub struct MemStore {
    state: RwLock<State>,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }
}

impl KvStore for MemStore {
    fn get_entry(&self, key: &[u8]) -> Option<Entry> {
        self.state.read().get(key, now_ms()).cloned()
    }

    fn get_entries(&self, keys: &[Bytes]) -> Vec<Option<Entry>> {
        let now = now_ms();
        let state = self.state.read();
        keys.iter()
            .map(|key| state.get(key, now).cloned())
            .collect()
    }

    fn range(&self, start: Bound<&[u8]>, prefix: &[u8], limit: usize) -> Vec<(Bytes, Entry)> {
        self.state.read().range(start, prefix, limit, now_ms())
    }

    fn submit(&self, command: Command) -> Submission {
        let now = now_ms();
        let mut state = self.state.write();
        let seq = state.applied_seq() + 1;
        Submission::ready(Ok(state.apply(seq, now, command)))
    }

    fn live_len(&self) -> usize {
        self.state.read().live_len(now_ms())
    }

    fn expired_keys(&self, after: Option<&[u8]>, scan_limit: usize) -> (Vec<Bytes>, Option<Bytes>) {
        self.state.read().expired_keys(after, scan_limit, now_ms())
    }

    fn revision(&self) -> u64 {
        self.state.read().revision()
    }

    fn len(&self) -> usize {
        self.state.read().len()
    }

    fn data_bytes(&self) -> u64 {
        self.state.read().data_bytes()
    }
}
