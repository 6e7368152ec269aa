//! MIGRATE's open connections to its targets, kept for reuse as Redis keeps
//! them: a tool moving keys one MIGRATE at a time (`redis-cli --cluster
//! reshard`, an import script) pays for a TCP connect, and with TLS a
//! handshake, once per target rather than once per key.
//!
//! Invariants:
//! - a connection is in the cache only while no MIGRATE uses it: one is
//!   taken out for a command and put back only after every reply was read,
//!   so a connection that failed midway, or timed out with replies still
//!   owed, is dropped instead of reused;
//! - connections are told apart by address, TLS or not, and whether the
//!   command authenticates (as Redis 7 does), so a MIGRATE without `AUTH`
//!   never rides on a connection another MIGRATE authenticated;
//! - one is closed after [`IDLE_FOR`] unused, and at most [`AT_MOST`] are
//!   kept (Redis's two limits).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::client::resp::RespConnection;

/// How long an unused connection stays open.
pub const IDLE_FOR: Duration = Duration::from_secs(10);

/// Connections kept at most; putting one more back closes another.
pub const AT_MOST: usize = 64;

/// Which connections can stand in for each other.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// HOST:PORT, as connected to.
    pub address: String,
    pub tls: bool,
    /// Whether the MIGRATE sends `AUTH`.
    pub authenticates: bool,
}

/// A kept connection and the database its last `SELECT` chose.
pub struct Kept {
    pub connection: RespConnection,
    /// `None` when no `SELECT` went through on it yet.
    pub db: Option<i64>,
}

#[derive(Default)]
pub struct MigrateCache {
    kept: Arc<Mutex<HashMap<Target, (u64, Kept)>>>,
    /// Numbers each putting back, so an idle timer closes only the
    /// connection it was started for, not one put back after it.
    next_number: std::sync::atomic::AtomicU64,
}

impl MigrateCache {
    /// Takes the connection kept for `target`, if there is one.
    pub fn take(&self, target: &Target) -> Option<Kept> {
        self.kept.lock().remove(target).map(|(_, kept)| kept)
    }

    /// Keeps `kept` for the next MIGRATE to `target`, closing it after
    /// [`IDLE_FOR`] if none comes. Needs a Tokio runtime (for the timer).
    pub fn put(&self, target: Target, kept: Kept) {
        let number = self
            .next_number
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut cached = self.kept.lock();
            if cached.len() >= AT_MOST && !cached.contains_key(&target) {
                // The one that has waited longest goes.
                if let Some(oldest) = cached
                    .iter()
                    .min_by_key(|(_, (put_as, _))| *put_as)
                    .map(|(target, _)| target.clone())
                {
                    cached.remove(&oldest);
                }
            }
            // Another MIGRATE to the same target may have put one back
            // meanwhile: the newer stays, the older closes.
            cached.insert(target.clone(), (number, kept));
        }
        let kept = Arc::downgrade(&self.kept);
        tokio::spawn(async move {
            tokio::time::sleep(IDLE_FOR).await;
            let Some(kept) = kept.upgrade() else {
                return;
            };
            let mut cached = kept.lock();
            if cached
                .get(&target)
                .is_some_and(|(put_as, _)| *put_as == number)
            {
                cached.remove(&target);
            }
        });
    }

    /// Connections kept now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.kept.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn a_connection(listener: &tokio::net::TcpListener) -> RespConnection {
        let address = listener.local_addr().expect("address").to_string();
        let (connected, accepted) = tokio::join!(
            RespConnection::connect(&address, None, None),
            listener.accept()
        );
        accepted.expect("accept");
        connected.expect("connect")
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_kept_until_idle_for_ten_seconds_and_taken_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let cache = MigrateCache::default();
        let target = |authenticates| Target {
            address: "127.0.0.1:1".into(),
            tls: false,
            authenticates,
        };
        let connection = a_connection(&listener).await;
        cache.put(
            target(false),
            Kept {
                connection,
                db: Some(3),
            },
        );
        assert!(
            cache.take(&target(true)).is_none(),
            "an authenticating MIGRATE does not take it"
        );
        let kept = cache.take(&target(false)).expect("kept");
        assert_eq!(kept.db, Some(3));
        assert!(cache.take(&target(false)).is_none(), "taken once");

        // Put back, then idle: it is closed after ten seconds, not before.
        cache.put(target(false), kept);
        tokio::time::sleep(IDLE_FOR - Duration::from_secs(1)).await;
        assert_eq!(cache.len(), 1);
        // Taken and put back: the first timer no longer closes it.
        let kept = cache.take(&target(false)).expect("kept");
        cache.put(target(false), kept);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(cache.len(), 1, "the earlier timer spared it");
        tokio::time::sleep(IDLE_FOR).await;
        assert_eq!(cache.len(), 0, "closed after ten idle seconds");
    }

    #[tokio::test]
    async fn past_the_limit_the_longest_kept_goes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let cache = MigrateCache::default();
        let target = |port: usize| Target {
            address: format!("127.0.0.1:{port}"),
            tls: false,
            authenticates: false,
        };
        for port in 0..=AT_MOST {
            let connection = a_connection(&listener).await;
            cache.put(
                target(port),
                Kept {
                    connection,
                    db: None,
                },
            );
        }
        assert_eq!(cache.len(), AT_MOST);
        assert!(cache.take(&target(0)).is_none(), "the first one went");
        assert!(cache.take(&target(AT_MOST)).is_some());
    }
}
