//! What the program's memory allocator says of the memory it holds, for
//! `INFO memory`, `MEMORY STATS` and `MEMORY MALLOC-STATS`.
//!
//! The library does not choose an allocator: the program that links it does,
//! and tells the library how to ask it ([`register`]). The `walrus` binary
//! links jemalloc and registers it at start. Without a registration every
//! figure here is absent, and the front ends fall back to what the kernel
//! counts for the process (resident memory) rather than make one up.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The allocator's own counts, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorStats {
    /// Handed to the program and not yet freed: Redis's `used_memory`.
    pub allocated: u64,
    /// In the pages the allocator has in use: `allocated` plus the unused
    /// space inside those pages (its fragmentation).
    pub active: u64,
    /// Resident in memory on the allocator's behalf, its own metadata and
    /// freed pages not yet returned to the system included.
    pub resident: u64,
}

/// An allocator that can be asked about its memory.
pub trait AllocatorReport: Send + Sync {
    /// Its name and version as `INFO` shows it, e.g. `jemalloc-5.3.0`.
    fn name(&self) -> String;
    /// Its counts now; `None` if it cannot say.
    fn stats(&self) -> Option<AllocatorStats>;
    /// Its own human-readable report (`MEMORY MALLOC-STATS`).
    fn report(&self) -> Option<String>;
}

static REGISTERED: OnceLock<Box<dyn AllocatorReport>> = OnceLock::new();

/// Tells the library how to ask the program's allocator; the first
/// registration stands.
pub fn register(report: Box<dyn AllocatorReport>) {
    let _ = REGISTERED.set(report);
}

/// The registered allocator, if the program registered one.
pub fn registered() -> Option<&'static dyn AllocatorReport> {
    REGISTERED.get().map(|report| &**report)
}

/// The most allocated bytes [`stats`] has seen.
static PEAK_ALLOCATED: AtomicU64 = AtomicU64::new(0);

/// The registered allocator's counts now, if there is one and it can say;
/// each reading also moves [`peak_allocated`] on.
pub fn stats() -> Option<AllocatorStats> {
    let stats = registered()?.stats()?;
    PEAK_ALLOCATED.fetch_max(stats.allocated, Ordering::Relaxed);
    Some(stats)
}

/// The peak of the allocated bytes, as sampled by every [`stats`] reading
/// (each `INFO`, `MEMORY STATS` and `/metrics`), as Redis samples its own
/// peak; 0 before the first.
pub fn peak_allocated() -> u64 {
    PEAK_ALLOCATED.load(Ordering::Relaxed)
}

/// The ratios and differences Redis reports between the allocator's counts
/// and the process's resident memory, from the inside out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fragmentation {
    /// `active ÷ allocated`: space lost inside the allocator's pages.
    pub allocator_ratio: f64,
    pub allocator_bytes: i64,
    /// `resident ÷ active`: pages the allocator keeps that hold nothing.
    pub allocator_rss_ratio: f64,
    pub allocator_rss_bytes: i64,
    /// `process resident ÷ allocator resident`: memory outside the
    /// allocator (code, stacks, the kernel's page tables).
    pub rss_overhead_ratio: f64,
    pub rss_overhead_bytes: i64,
    /// `process resident ÷ allocated`: all of it, Redis's
    /// `mem_fragmentation_ratio`.
    pub total_ratio: f64,
    pub total_bytes: i64,
}

impl Fragmentation {
    /// The figures for `stats` in a process with `process_resident` bytes
    /// resident; a ratio with nothing under it is 0.
    pub fn of(stats: AllocatorStats, process_resident: u64) -> Fragmentation {
        let ratio = |over: u64, under: u64| match under {
            0 => 0.0,
            under => over as f64 / under as f64,
        };
        let difference = |over: u64, under: u64| {
            i64::try_from(over)
                .unwrap_or(i64::MAX)
                .saturating_sub(i64::try_from(under).unwrap_or(i64::MAX))
        };
        Fragmentation {
            allocator_ratio: ratio(stats.active, stats.allocated),
            allocator_bytes: difference(stats.active, stats.allocated),
            allocator_rss_ratio: ratio(stats.resident, stats.active),
            allocator_rss_bytes: difference(stats.resident, stats.active),
            rss_overhead_ratio: ratio(process_resident, stats.resident),
            rss_overhead_bytes: difference(process_resident, stats.resident),
            total_ratio: ratio(process_resident, stats.allocated),
            total_bytes: difference(process_resident, stats.allocated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragmentation_compares_each_layer_with_the_one_inside_it() {
        let stats = AllocatorStats {
            allocated: 100,
            active: 125,
            resident: 150,
        };
        let figures = Fragmentation::of(stats, 300);
        assert_eq!(figures.allocator_ratio, 1.25);
        assert_eq!(figures.allocator_bytes, 25);
        assert_eq!(figures.allocator_rss_ratio, 1.2);
        assert_eq!(figures.allocator_rss_bytes, 25);
        assert_eq!(figures.rss_overhead_ratio, 2.0);
        assert_eq!(figures.rss_overhead_bytes, 150);
        assert_eq!(figures.total_ratio, 3.0);
        assert_eq!(figures.total_bytes, 200);
        // Less resident than allocated (pages swapped out): negative bytes.
        assert_eq!(Fragmentation::of(stats, 50).total_bytes, -50);
        let empty = AllocatorStats {
            allocated: 0,
            active: 0,
            resident: 0,
        };
        assert_eq!(Fragmentation::of(empty, 10).total_ratio, 0.0);
    }
}
