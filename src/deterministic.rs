//! The deterministic context: one thread runs a whole simulated cluster on a
//! current-thread, paused-clock runtime, and everything that would otherwise
//! differ between two runs of one seed follows from the seed instead.
//!
//! Three things vary between runs of the same program outside it, and each
//! asks this module which way to go:
//! - Raft's randomness (election timeouts, tick jitter): the Raft runtime's
//!   `thread_rng` (`crate::raft::runtime`) draws from [`next_u64`] instead of
//!   the OS's generator, and its watch channels wake their waiters in a fixed
//!   order (tokio's pick a random shard per waiter);
//! - disk work handed to other threads (snapshot builds and installs, the
//!   Raft log writer): [`off_runtime`] runs it inline, and the log store
//!   writes on the calling task, so no other thread races the runtime;
//! - the wall clock that commands carry and expiry judges: [`now_ms`] is a
//!   fixed epoch plus the runtime's (paused, virtual) elapsed time.
//!
//! Invariants: the context belongs to one thread and is entered only by the
//! simulation harness (never by `walrus serve`), from inside the runtime it
//! drives; outside it every function here behaves as production needs.

use std::cell::RefCell;
use std::io;

/// The Unix time, in milliseconds, at which a deterministic run's clock
/// starts (2026-01-01 00:00:00 UTC): far from any wrap, and the same each run.
const EPOCH_MS: u64 = 1_767_225_600_000;

struct Context {
    /// SplitMix64's state: each draw advances it.
    state: u64,
    started: tokio::time::Instant,
}

thread_local! {
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// While alive, this thread is in the deterministic context.
#[must_use = "the context ends when this is dropped"]
pub struct Entered(());

impl Drop for Entered {
    fn drop(&mut self) {
        CONTEXT.with(|context| context.borrow_mut().take());
    }
}

/// Enters the deterministic context on this thread, seeded with `seed`.
/// Call it inside the (current-thread, paused-clock) runtime the run uses, so
/// the clock starts at the runtime's time.
pub fn enter(seed: u64) -> Entered {
    CONTEXT.with(|context| {
        *context.borrow_mut() = Some(Context {
            state: seed,
            started: tokio::time::Instant::now(),
        })
    });
    Entered(())
}

/// Whether this thread is in the deterministic context.
pub fn is_active() -> bool {
    CONTEXT.with(|context| context.borrow().is_some())
}

/// The next draw from the context's generator, if this thread is in it.
pub fn next_u64() -> Option<u64> {
    CONTEXT.with(|context| {
        let mut context = context.borrow_mut();
        let context = context.as_mut()?;
        context.state = context.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = context.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Some(z ^ (z >> 31))
    })
}

/// Unix milliseconds on the context's clock, if this thread is in it.
pub fn now_ms() -> Option<u64> {
    CONTEXT.with(|context| {
        let context = context.borrow();
        let context = context.as_ref()?;
        let elapsed = tokio::time::Instant::now().saturating_duration_since(context.started);
        Some(EPOCH_MS + elapsed.as_millis() as u64)
    })
}

/// Work that must not hold a runtime worker (a snapshot build, a file read)
/// failed to finish: its thread panicked or the runtime shut down.
#[derive(Debug, thiserror::Error)]
#[error("blocking work did not finish: {0}")]
pub struct Unfinished(String);

impl From<Unfinished> for io::Error {
    fn from(error: Unfinished) -> io::Error {
        io::Error::other(error)
    }
}

/// Runs blocking `work` off the async runtime (on tokio's blocking pool), or
/// inline in the deterministic context, where another thread would race the
/// runtime and the simulated disk answers at once anyway.
pub async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Unfinished> {
    if is_active() {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| Unfinished(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_seed_gives_the_same_draws_and_the_clock_follows_the_runtime() {
        let draws = |seed| {
            let _entered = enter(seed);
            (0..4).map(|_| next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        assert_eq!(next_u64(), None);

        let entered = enter(1);
        assert_eq!(now_ms(), Some(EPOCH_MS));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(now_ms(), Some(EPOCH_MS + 1500));
        drop(entered);
        assert_eq!(now_ms(), None);
        assert!(!is_active());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn blocking_work_runs_inline_only_in_the_context() {
        let caller = std::thread::current().id();
        let elsewhere = off_runtime(move || std::thread::current().id())
            .await
            .expect("finished");
        assert_ne!(elsewhere, caller);
        let _entered = enter(3);
        let inline = off_runtime(move || std::thread::current().id())
            .await
            .expect("finished");
        assert_eq!(inline, caller);
    }
}
