//! jemalloc, the binary's allocator, as the library asks about it
//! (`walrus::allocator`): its counts for `INFO memory` and `MEMORY STATS`,
//! its own report for `MEMORY MALLOC-STATS`.

use tikv_jemalloc_ctl::{epoch, stats, stats_print, version};
use walrus::allocator::{AllocatorReport, AllocatorStats};

pub struct Jemalloc;

impl AllocatorReport for Jemalloc {
    fn name(&self) -> String {
        // "5.3.0-1-g<commit>" names the release first.
        let release = version::read()
            .ok()
            .and_then(|full| full.split('-').next())
            .unwrap_or("unknown");
        format!("jemalloc-{release}")
    }

    fn stats(&self) -> Option<AllocatorStats> {
        // jemalloc caches its counts until the epoch moves on.
        epoch::advance().ok()?;
        Some(AllocatorStats {
            allocated: stats::allocated::read().ok()? as u64,
            active: stats::active::read().ok()? as u64,
            resident: stats::resident::read().ok()? as u64,
        })
    }

    fn report(&self) -> Option<String> {
        epoch::advance().ok()?;
        let mut text = Vec::new();
        // Every size class of every arena runs to thousands of lines; the
        // merged figures are what a person reads.
        let mut options = stats_print::Options::default();
        options.skip_per_arena = true;
        options.skip_bin_size_classes = true;
        options.skip_large_size_classes = true;
        stats_print::stats_print(&mut text, options).ok()?;
        Some(String::from_utf8_lossy(&text).into_owned())
    }
}
