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
//! [`DropLater`] is how both hand items over: it sets small ones aside and
//! passes them on in bounded batches, and frees a large one at once (its
//! miss is nothing beside its size, and the queue should not hold it back).
//!
//! Invariants: items are only dropped, never read; a batch that cannot be
//! handed over (the thread could not start, or is a full queue behind) is
//! dropped where it is; a batch holds at most [`BATCH_ITEMS`] items of at
//! most [`MAX_ITEM_BYTES`] each and about [`BATCH_BYTES`] in all, so the
//! queue of [`QUEUED_BATCHES`] holds back little memory.

use std::sync::OnceLock;

use crossbeam_channel::Sender;

/// Batches waiting for the freeing thread, at most; past that the caller
/// frees its own.
const QUEUED_BATCHES: usize = 64;

/// An item larger than this is freed where it is let go of.
pub const MAX_ITEM_BYTES: usize = 64 << 10;

/// Items handed over together, at most.
pub const BATCH_ITEMS: usize = 256;

/// Bytes handed over together: a batch goes once it holds this many.
pub const BATCH_BYTES: usize = 1 << 20;

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
fn hand_over<T: Send + 'static>(items: Vec<T>) {
    if items.is_empty() {
        return;
    }
    let Some(sender) = freeing_thread() else {
        return;
    };
    // Refused (a full queue, or the thread is gone), the batch comes back
    // inside the error and is dropped here with it.
    let _ = sender.try_send(Box::new(items));
}

/// Items set aside to be freed on the freeing thread, a batch at a time.
pub struct DropLater<T: Send + 'static> {
    items: Vec<T>,
    bytes: usize,
}

impl<T: Send + 'static> Default for DropLater<T> {
    fn default() -> DropLater<T> {
        DropLater {
            items: Vec::new(),
            bytes: 0,
        }
    }
}

impl<T: Send + 'static> DropLater<T> {
    /// Sets `item` (holding `bytes`) aside, or frees it now if it is large;
    /// hands the batch over once it is full.
    pub fn push(&mut self, item: T, bytes: usize) {
        if bytes > MAX_ITEM_BYTES {
            return;
        }
        self.items.push(item);
        self.bytes += bytes;
        if self.items.len() >= BATCH_ITEMS || self.bytes >= BATCH_BYTES {
            self.bytes = 0;
            hand_over(std::mem::take(&mut self.items));
        }
    }

    /// Hands over what is set aside if it is at least `min_items`; fewer are
    /// freed here, where handing them over would cost more (a wake-up of the
    /// freeing thread) than the misses it saves.
    pub fn finish(self, min_items: usize) {
        if self.items.len() >= min_items {
            hand_over(self.items);
        }
    }

    /// Items set aside and not yet handed over, and their bytes.
    pub fn held(&self) -> (usize, usize) {
        (self.items.len(), self.bytes)
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
        let mut later = DropLater::default();
        later.push(Noted(seen.clone()), 0);
        later.finish(1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.lock().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(seen.lock().as_deref(), Some("walrus-free"));
    }
}
