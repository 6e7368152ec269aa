//! Frees, on a thread of its own, what the write path lets go of.
//!
//! An overwritten value and a change evicted from the watch history were
//! written long ago: dropping one reads its reference count, a cache miss
//! each, and may free its buffer. On the event loop (the value a SET
//! replaced, handed back in its outcome) and on the commit thread (the
//! evicted change) that work sits between a write's sync and the next
//! writes, and took about a tenth of a SET `-P 16` profile (BENCHMARKS.md).
//! Handed over in batches, it runs on a core those threads leave idle while
//! they wait for each other or for the disk.
//!
//! Invariants: items are only dropped, never read; a batch that cannot be
//! handed over (the thread could not start, or is a full queue behind) is
//! dropped where it is. Callers hand over only small items (their own bound,
//! 64 KiB), in batches of a few hundred, so the queue holds back little
//! memory.

use std::sync::OnceLock;

use crossbeam_channel::{Sender, TrySendError};

/// Batches waiting for the freeing thread, at most; past that the caller
/// frees its own.
const QUEUED_BATCHES: usize = 64;

type Batch = Box<dyn Send>;

fn freeing_thread() -> Option<&'static Sender<Batch>> {
    static SENDER: OnceLock<Option<Sender<Batch>>> = OnceLock::new();
    SENDER
        .get_or_init(|| {
            let (sender, receiver) = crossbeam_channel::bounded::<Batch>(QUEUED_BATCHES);
            std::thread::Builder::new()
                .name("walrus-free".into())
                .spawn(move || {
                    for batch in receiver {
                        drop(batch);
                    }
                })
                .ok()
                .map(|_| sender)
        })
        .as_ref()
}

/// Drops `items` on the freeing thread (or here, if it cannot take them).
pub fn drop_later<T: Send + 'static>(items: Vec<T>) {
    if items.is_empty() {
        return;
    }
    let Some(sender) = freeing_thread() else {
        return;
    };
    match sender.try_send(Box::new(items)) {
        Ok(()) => {}
        Err(TrySendError::Full(batch) | TrySendError::Disconnected(batch)) => drop(batch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn items_are_dropped_on_the_freeing_thread() {
        struct Noted(Arc<parking_lot::Mutex<Option<String>>>);
        impl Drop for Noted {
            fn drop(&mut self) {
                let name = std::thread::current().name().map(str::to_owned);
                *self.0.lock() = name;
            }
        }
        let seen = Arc::new(parking_lot::Mutex::new(None));
        drop_later(vec![Noted(seen.clone())]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.lock().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(seen.lock().as_deref(), Some("walrus-free"));
    }
}
