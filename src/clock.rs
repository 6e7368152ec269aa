//! The wall clock expiry is judged by: Unix time in milliseconds, plus an
//! offset that fault testing can move forward.
//!
//! Tests of TTLs then advance time instead of sleeping through it, so a key
//! set with `PX 200` is expired exactly when the test says, however slow the
//! machine. The offset is moved only through `POST /fault/clock` on a server
//! started with `--enable-fault-injection` (never in production) or by unit
//! tests; it starts at zero and only grows, so time never runs backwards.
//! It is this process's alone: a restarted server starts on the real clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static OFFSET_MS: AtomicU64 = AtomicU64::new(0);

/// Milliseconds since the Unix epoch, as expiry sees them.
pub fn now_ms() -> u64 {
    // A seeded simulation runs on a virtual clock, so commands carry the
    // same times in every run of one seed.
    let real = crate::deterministic::now_ms().unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64)
    });
    real.saturating_add(OFFSET_MS.load(Ordering::Relaxed))
}

/// Moves the clock forward by `ms`; returns the total offset now.
pub fn advance(ms: u64) -> u64 {
    OFFSET_MS
        .fetch_add(ms, Ordering::Relaxed)
        .saturating_add(ms)
}

/// How far the clock has been moved forward in total.
pub fn offset_ms() -> u64 {
    OFFSET_MS.load(Ordering::Relaxed)
}
