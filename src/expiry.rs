//! The expiry sweeper: removes expired keys through the normal write path.
//!
//! Reads hide an expired key at once; the sweeper only reclaims its memory and
//! makes the removal an ordinary, logged delete (so a replica replaying the
//! log sees plain deletes, never a clock). Each pass looks at a bounded number
//! of stored keys from a cursor that wraps around, so its cost per pass is
//! bounded however many keys there are. A delete is guarded by
//! [`Guard::Absent`] — "no live value" — so a key set again after it expired
//! survives its old entry's sweep.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::store::{Command, Guard, KvStore};

/// How often and how much the sweeper works.
#[derive(Debug, Clone, Copy)]
pub struct SweepConfig {
    /// Pause between passes (default 100 ms).
    pub interval: Duration,
    /// Stored keys looked at per pass (default 1000).
    pub keys_per_pass: usize,
}

impl Default for SweepConfig {
    fn default() -> Self {
        SweepConfig {
            interval: Duration::from_millis(100),
            keys_per_pass: 1000,
        }
    }
}

/// Sweeps until `shutdown` turns true.
pub async fn run(
    store: Arc<dyn KvStore>,
    config: SweepConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut cursor: Option<Bytes> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            _ = shutdown.wait_for(|&stop| stop) => return,
        }
        if store.failure().is_some() {
            continue;
        }
        cursor = sweep_once(store.as_ref(), cursor.as_deref(), config.keys_per_pass).await;
    }
}

/// One pass: deletes the expired keys among `keys_per_pass` stored keys after
/// `after`, all in one group commit; returns the cursor for the next pass.
pub async fn sweep_once(
    store: &dyn KvStore,
    after: Option<&[u8]>,
    keys_per_pass: usize,
) -> Option<Bytes> {
    let (expired, next) = store.expired_keys(after, keys_per_pass);
    if expired.is_empty() {
        return next;
    }
    // One batch: the pass costs one sync (one Raft append on a cluster's
    // leader), not one per key.
    let deletes = expired
        .into_iter()
        .map(|key| Command::Delete {
            key,
            guard: Guard::Absent,
        })
        .collect();
    let submissions = store.submit_all(deletes);
    for submission in submissions {
        if let Err(error) = submission.await {
            tracing::debug!(%error, "expiry sweep delete failed");
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemStore, now_ms};

    fn put(store: &MemStore, key: &str, expires_at_ms: u64) {
        store
            .execute(Command::Put {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::from_static(b"v"),
                expires_at_ms,
                guard: Guard::None,
            })
            .unwrap();
    }

    #[tokio::test]
    async fn sweeps_expired_keys_in_bounded_passes() {
        let store = MemStore::new();
        for index in 0..10 {
            put(&store, &format!("gone{index}"), 1);
        }
        put(&store, "kept", 0);
        put(&store, "later", now_ms() + 60_000);
        assert_eq!(store.len(), 12);
        assert_eq!(store.live_len(), 2);
        let mut cursor = sweep_once(&store, None, 4).await;
        assert!(cursor.is_some());
        assert_eq!(store.len(), 8);
        while cursor.is_some() {
            cursor = sweep_once(&store, cursor.as_deref(), 4).await;
        }
        assert_eq!(store.len(), 2);
        assert!(store.get(b"kept").is_some() && store.get(b"later").is_some());
    }

    #[tokio::test]
    async fn a_key_set_again_after_the_scan_survives_its_sweep() {
        let store = MemStore::new();
        put(&store, "k", 1);
        let (expired, _) = store.expired_keys(None, 10);
        assert_eq!(expired, vec![Bytes::from_static(b"k")]);
        put(&store, "k", 0);
        for key in expired {
            let outcome = store
                .submit(Command::Delete {
                    key,
                    guard: Guard::Absent,
                })
                .await
                .unwrap();
            assert!(!outcome.succeeded);
        }
        assert!(store.get(b"k").is_some());
    }
}
