//! openraft's watch channels for walrus: a value, a version that grows with
//! every change, and one [`Notify`] its receivers wait on.
//!
//! Why not tokio's watch: each of its waiting receivers registers on one of
//! eight notifiers picked at random, so a change wakes Raft's tasks (its core,
//! replication streams, waiting readers) in a different order each run, and a
//! seeded simulation could not replay. Here they wake in the order they
//! began waiting.
//!
//! Semantics follow tokio's: `send` stores and wakes only while a receiver
//! exists; `send_if_modified` stores always; a receiver's `changed` returns
//! once the version differs from the last it saw (a new receiver has seen
//! the current one), and fails only when no sender is left and nothing new
//! is there.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use openraft::OptionalSend;
use openraft::OptionalSync;
use openraft::rt::watch::{RecvError, SendError, Watch, WatchReceiver, WatchSender};
use parking_lot::{RwLock, RwLockReadGuard};
use tokio::sync::Notify;

/// The watch channel type openraft's runtime names.
pub struct RaftWatch;

struct Shared<T> {
    value: RwLock<T>,
    /// Bumped under the value's write lock with every change.
    version: AtomicU64,
    senders: AtomicUsize,
    receivers: AtomicUsize,
    changed: Notify,
}

pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
    /// The version this receiver has seen.
    seen: u64,
}

impl Watch for RaftWatch {
    type Sender<T: OptionalSend + OptionalSync> = Sender<T>;
    type Receiver<T: OptionalSend + OptionalSync> = Receiver<T>;
    type Ref<'a, T: OptionalSend + 'a> = RwLockReadGuard<'a, T>;

    fn channel<T: OptionalSend + OptionalSync>(init: T) -> (Sender<T>, Receiver<T>) {
        let shared = Arc::new(Shared {
            value: RwLock::new(init),
            version: AtomicU64::new(0),
            senders: AtomicUsize::new(1),
            receivers: AtomicUsize::new(1),
            changed: Notify::new(),
        });
        let receiver = Receiver {
            shared: shared.clone(),
            seen: 0,
        };
        (Sender { shared }, receiver)
    }
}

impl<T> Shared<T> {
    /// Applies `modify` to the value; a change bumps the version and wakes
    /// every waiting receiver.
    fn modify(&self, modify: impl FnOnce(&mut T) -> bool) -> bool {
        let modified = {
            let mut value = self.value.write();
            let modified = modify(&mut value);
            if modified {
                self.version.fetch_add(1, Ordering::AcqRel);
            }
            modified
        };
        if modified {
            self.changed.notify_waiters();
        }
        modified
    }
}

impl<T: OptionalSend + OptionalSync> WatchSender<RaftWatch, T> for Sender<T> {
    fn send(&self, value: T) -> Result<(), SendError<T>> {
        if self.shared.receivers.load(Ordering::Acquire) == 0 {
            return Err(SendError(value));
        }
        self.shared.modify(move |current| {
            *current = value;
            true
        });
        Ok(())
    }

    fn send_if_modified<F>(&self, modify: F) -> bool
    where
        F: FnOnce(&mut T) -> bool,
    {
        self.shared.modify(modify)
    }

    fn borrow_watched(&self) -> RwLockReadGuard<'_, T> {
        self.shared.value.read_recursive()
    }

    fn subscribe(&self) -> Receiver<T> {
        self.shared.receivers.fetch_add(1, Ordering::AcqRel);
        Receiver {
            shared: self.shared.clone(),
            seen: self.shared.version.load(Ordering::Acquire),
        }
    }
}

impl<T: OptionalSend + OptionalSync> WatchReceiver<RaftWatch, T> for Receiver<T> {
    async fn changed(&mut self) -> Result<(), RecvError> {
        loop {
            // Registered before the checks, so a change made between them
            // and the wait still wakes this receiver.
            let notified = self.shared.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let version = self.shared.version.load(Ordering::Acquire);
            if version != self.seen {
                self.seen = version;
                return Ok(());
            }
            if self.shared.senders.load(Ordering::Acquire) == 0 {
                return Err(RecvError(()));
            }
            notified.await;
        }
    }

    fn borrow_watched(&self) -> RwLockReadGuard<'_, T> {
        self.shared.value.read_recursive()
    }

    fn borrow_and_update(&mut self) -> RwLockReadGuard<'_, T> {
        let value = self.shared.value.read_recursive();
        // Read under the lock: a change waits for it, so the version is the
        // value's.
        self.seen = self.shared.version.load(Ordering::Acquire);
        value
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Sender<T> {
        self.shared.senders.fetch_add(1, Ordering::AcqRel);
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.changed.notify_waiters();
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Receiver<T> {
        self.shared.receivers.fetch_add(1, Ordering::AcqRel);
        Receiver {
            shared: self.shared.clone(),
            seen: self.seen,
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.shared.receivers.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_receiver_sees_each_change_once_and_the_end_of_its_senders() {
        let (sender, mut receiver) = RaftWatch::channel(1u64);
        assert_eq!(*receiver.borrow_watched(), 1);
        let waiting = tokio::time::timeout(Duration::from_millis(20), receiver.changed()).await;
        assert!(waiting.is_err(), "nothing changed yet");

        sender.send(2).expect("a receiver exists");
        receiver.changed().await.expect("changed");
        assert_eq!(*receiver.borrow_and_update(), 2);

        assert!(!sender.send_if_modified(|_| false));
        assert!(sender.send_if_greater(5));
        assert!(!sender.send_if_greater(4));
        let mut late = sender.subscribe();
        receiver.changed().await.expect("changed");
        assert_eq!(*receiver.borrow_watched(), 5);

        let woken = tokio::spawn(async move { late.changed().await });
        tokio::task::yield_now().await;
        sender.send(6).expect("receivers exist");
        assert!(woken.await.expect("task").is_ok());

        drop(sender);
        assert!(receiver.changed().await.is_ok(), "6 is news");
        assert!(receiver.changed().await.is_err(), "no sender is left");
    }

    #[test]
    fn send_without_a_receiver_gives_the_value_back_and_keeps_the_old_one() {
        let (sender, receiver) = RaftWatch::channel("old");
        drop(receiver);
        assert!(matches!(sender.send("new"), Err(SendError("new"))));
        assert_eq!(*sender.borrow_watched(), "old");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn waiters_wake_in_the_order_they_began_waiting() {
        let (sender, receiver) = RaftWatch::channel(0u32);
        let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for id in 0..16 {
            let mut receiver = receiver.clone();
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                receiver.changed().await.expect("changed");
                order.lock().push(id);
            }));
            tokio::task::yield_now().await;
        }
        sender.send(1).expect("receivers exist");
        for task in tasks {
            task.await.expect("task");
        }
        assert_eq!(*order.lock(), (0..16).collect::<Vec<_>>());
    }
}
