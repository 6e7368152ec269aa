//! `MemStore`: the state behind a reader/writer lock, nothing on disk.

use parking_lot::RwLock;

use super::changes::{ChangeFeed, FeedLimits};
use super::{Command, KvStore, State, Submission, now_ms};

pub struct MemStore {
    state: RwLock<State>,
}

impl Default for MemStore {
    fn default() -> MemStore {
        let mut state = State::default();
        state.attach_feed(ChangeFeed::new(0, FeedLimits::default()));
        MemStore {
            state: RwLock::new(state),
        }
    }
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }
}

impl KvStore for MemStore {
    fn state(&self) -> &RwLock<State> {
        &self.state
    }
    fn submit(&self, command: Command) -> Submission {
        let now = now_ms();
        let mut state = self.state.write();
        let seq = state.applied_seq() + 1;
        Submission::ready(Ok(state.apply(seq, now, command)))
    }
}
