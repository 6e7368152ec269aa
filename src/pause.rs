//! CLIENT PAUSE: holding Redis clients' commands for a while, as Redis does
//! for a failover or a consistent copy.
//!
//! A pause holds either every command or only writes, until its deadline or
//! until CLIENT UNPAUSE. Pauses combine as Redis combines them: the longer
//! deadline of each kind stands, so a short write pause never shortens a
//! long pause of everything. While any pause holds, the expiry sweeper
//! deletes nothing (a read still finds an expired key gone), so the keyspace
//! changes only by the writes let through.
//!
//! Invariant: a held command waits until no pause that covers it is in force;
//! every change of the pause wakes every waiter to look again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The pause in force, shared by the RESP connections and the sweeper.
#[derive(Default)]
pub struct ClientPause {
    deadlines: Mutex<Deadlines>,
    changed: Notify,
    /// Connections waiting now (INFO `blocked_clients`).
    waiting: AtomicU64,
    /// False while no pause can be in force: the check every command makes
    /// then takes no lock. Changed only under the `deadlines` lock.
    set: AtomicBool,
}

#[derive(Default)]
struct Deadlines {
    /// Every command waits until then.
    everything: Option<Instant>,
    /// Writes wait until then.
    writes: Option<Instant>,
}

/// What a pause holds: CLIENT PAUSE's `ALL` (the default) or `WRITE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseKind {
    Everything,
    Writes,
}

impl ClientPause {
    /// Pauses `kind` for `duration` from now, unless a pause of that kind
    /// already lasts longer.
    pub fn pause(&self, duration: Duration, kind: PauseKind) {
        let until = Instant::now() + duration;
        {
            let mut deadlines = self.deadlines.lock();
            let slot = match kind {
                PauseKind::Everything => &mut deadlines.everything,
                PauseKind::Writes => &mut deadlines.writes,
            };
            *slot = Some(slot.map_or(until, |current| current.max(until)));
            self.set.store(true, Ordering::Release);
        }
        self.changed.notify_waiters();
    }

    /// Ends every pause now.
    pub fn unpause(&self) {
        {
            let mut deadlines = self.deadlines.lock();
            *deadlines = Deadlines::default();
            self.set.store(false, Ordering::Release);
        }
        self.changed.notify_waiters();
    }

    /// Whether a pause may be in force: false means certainly none, at the
    /// cost of one atomic load.
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Whether a pause holds a command that is a `write` (or not) now.
    pub fn holds(&self, write: bool) -> bool {
        self.held_until(write).is_some()
    }

    /// When a command (a write or not) may run, if a pause holds it now.
    fn held_until(&self, write: bool) -> Option<Instant> {
        let mut deadlines = self.deadlines.lock();
        let now = Instant::now();
        deadlines.everything = deadlines.everything.filter(|&until| until > now);
        deadlines.writes = deadlines.writes.filter(|&until| until > now);
        if deadlines.everything.is_none() && deadlines.writes.is_none() {
            self.set.store(false, Ordering::Release);
        }
        deadlines.everything.max(deadlines.writes.filter(|_| write))
    }

    /// Whether any pause is in force (the sweeper then waits).
    pub fn in_force(&self) -> bool {
        self.held_until(true).is_some()
    }

    /// Connections waiting for a pause to end now.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Waits while a pause holds a command that is a `write` (or not).
    pub async fn wait(&self, write: bool) {
        if self.held_until(write).is_none() {
            return;
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        // Counted down however the wait ends, dropped mid-way included.
        struct Waiting<'a>(&'a AtomicU64);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let _waiting = Waiting(&self.waiting);
        loop {
            // Registered before looking, so a change between the look and
            // the wait is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let Some(until) = self.held_until(write) else {
                break;
            };
            tokio::select! {
                () = tokio::time::sleep_until(until) => {}
                () = &mut changed => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_pause_holds_writes_only_until_its_deadline() {
        let pause = ClientPause::default();
        assert!(!pause.is_set());
        pause.pause(Duration::from_millis(100), PauseKind::Writes);
        assert!(pause.is_set());
        assert!(!pause.holds(false), "reads run");
        let started = Instant::now();
        pause.wait(true).await;
        assert!(started.elapsed() >= Duration::from_millis(90));
        assert!(!pause.in_force());
        assert!(!pause.is_set(), "an expired pause costs nothing again");
    }

    #[tokio::test]
    async fn a_shorter_pause_never_shortens_a_longer_one_of_everything() {
        let pause = ClientPause::default();
        pause.pause(Duration::from_millis(200), PauseKind::Everything);
        pause.pause(Duration::from_millis(20), PauseKind::Writes);
        pause.pause(Duration::from_millis(10), PauseKind::Everything);
        let started = Instant::now();
        pause.wait(false).await;
        assert!(started.elapsed() >= Duration::from_millis(190));
    }

    #[tokio::test]
    async fn unpause_releases_every_waiter_at_once() {
        let pause = std::sync::Arc::new(ClientPause::default());
        pause.pause(Duration::from_secs(60), PauseKind::Everything);
        let waiters: Vec<_> = (0..3)
            .map(|index| {
                let pause = pause.clone();
                tokio::spawn(async move { pause.wait(index % 2 == 0).await })
            })
            .collect();
        for _ in 0..5000 {
            if pause.waiting() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(pause.waiting(), 3);
        let started = Instant::now();
        pause.unpause();
        for waiter in waiters {
            waiter.await.expect("waiter");
        }
        assert!(started.elapsed() < Duration::from_secs(30), "not the 60 s");
        assert_eq!(pause.waiting(), 0);
    }
}
