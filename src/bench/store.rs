//! `walrus bench store`: the storage engine without a server.
//!
//! The original table (sequential writes, writes/s and latency percentiles for an
//! in-memory and a durable store), for 1, 8 and 64 concurrent writers, with the
//! original design measured in the same run as the baseline. Then the extended
//! measurements: replay rate, open time with a large snapshot, RAM per key, and
//! write latency while a snapshot is being written.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use serde::Serialize;

use super::baseline::{OriginalDurable, OriginalMemory};
use super::progress::count_bar;
use super::report::{Row, human_rate, new_histogram, table};
use crate::store::{DurableStore, FsyncPolicy, KvStore, MemStore, SnapshotPolicy, StoreOptions};

#[derive(Debug, Clone)]
pub struct StoreBenchConfig {
    /// Writes per run (the original post used 10,000).
    pub writes: u64,
    pub value_size: usize,
    pub writer_counts: Vec<usize>,
    /// Where durable stores write; a fresh subdirectory is made per run.
    pub dir: PathBuf,
    /// Records for the replay and snapshot measurements; 0 skips them.
    pub large_records: u64,
    pub fsync: FsyncPolicy,
    pub progress: bool,
    /// Skip the durable stores and the extended measurements.
    pub memory_only: bool,
    /// Run only the durable store: no baselines, no in-memory stores.
    pub durable_only: bool,
    /// Let the WAL append with direct, synchronous writes.
    pub direct_io: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExtendedFigures {
    pub replay_records: u64,
    pub replay_seconds: f64,
    pub replay_records_per_sec: f64,
    pub snapshot_keys: u64,
    pub snapshot_write_seconds: f64,
    pub open_with_snapshot_seconds: f64,
    pub memstore_bytes_per_key: f64,
    pub p99_without_snapshot_us: f64,
    pub p99_during_snapshot_us: f64,
    pub writes_during_snapshot: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoreBenchReport {
    pub rows: Vec<Row>,
    pub extended: Option<ExtendedFigures>,
}

impl StoreBenchReport {
    pub fn render(&self) -> String {
        let mut out = table(&self.rows, "writers");
        if let Some(figures) = &self.extended {
            out.push_str(&format!(
                "\n| measurement | result |\n|---|---:|\n\
                 | replay of {} records | {:.2} s ({}/s) |\n\
                 | write a snapshot of {} keys | {:.2} s |\n\
                 | open with a {}-key snapshot | {:.3} s |\n\
                 | MemStore RAM per key ({}-byte values) | {:.0} bytes |\n\
                 | p99 write, 8 writers, no snapshot | {:.0} µs |\n\
                 | p99 write, 8 writers, during a snapshot | {:.0} µs ({:.2}×, {} writes) |\n",
                figures.replay_records,
                figures.replay_seconds,
                human_rate(figures.replay_records_per_sec),
                figures.snapshot_keys,
                figures.snapshot_write_seconds,
                figures.snapshot_keys,
                figures.open_with_snapshot_seconds,
                100,
                figures.memstore_bytes_per_key,
                figures.p99_without_snapshot_us,
                figures.p99_during_snapshot_us,
                figures.p99_during_snapshot_us / figures.p99_without_snapshot_us.max(1e-9),
                figures.writes_during_snapshot,
            ));
        }
        out
    }
}

fn key(index: u64) -> String {
    format!("key-{index:010}")
}

/// Runs `total` calls of `write(index)` split over `writers` threads, timing each.
fn timed_writes(
    name: &str,
    writers: usize,
    total: u64,
    progress: bool,
    write: &(dyn Fn(u64) -> Result<()> + Sync),
) -> Result<Row> {
    let bar = count_bar(progress, total, &format!("{name} ×{writers}"));
    let per_writer = total / writers as u64;
    let started = Instant::now();
    let histograms = thread::scope(|scope| {
        let handles: Vec<_> = (0..writers as u64)
            .map(|writer| {
                let bar = bar.clone();
                scope.spawn(move || -> Result<_> {
                    let mut histogram = new_histogram();
                    for step in 0..per_writer {
                        let index = writer * per_writer + step;
                        let begin = Instant::now();
                        write(index)?;
                        histogram.saturating_record(begin.elapsed().as_nanos() as u64);
                        if step % 256 == 255 {
                            bar.inc(256);
                        }
                    }
                    Ok(histogram)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("writer panicked")))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let mut merged = new_histogram();
    for histogram in &histograms {
        merged.add(histogram).context("merging histograms")?;
    }
    Ok(Row::new(
        name,
        writers,
        per_writer * writers as u64,
        elapsed,
        &merged,
    ))
}

fn fresh_dir(base: &Path, name: &str) -> Result<PathBuf> {
    let path = base.join(name);
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(&path)
    } else if path.exists() {
        std::fs::remove_file(&path)
    } else {
        Ok(())
    };
    removed.with_context(|| format!("clearing {}", path.display()))?;
    Ok(path)
}

fn durable_options(config: &StoreBenchConfig) -> StoreOptions {
    let mut options = StoreOptions {
        fsync: config.fsync,
        ..StoreOptions::default()
    };
    options.wal.direct_io = config.direct_io;
    options
}

/// Runs every measurement in a fresh `store-bench.*` directory made inside
/// `config.dir`, removed afterwards with everything in it; `config.dir`
/// itself is removed only if this run created it (and it is then empty).
/// Nothing else in `config.dir` is touched.
pub fn run(config: &StoreBenchConfig) -> Result<StoreBenchReport> {
    let created = !config.dir.exists();
    std::fs::create_dir_all(&config.dir)
        .with_context(|| format!("creating {}", config.dir.display()))?;
    let work = tempfile::Builder::new()
        .prefix("store-bench.")
        .tempdir_in(&config.dir)
        .with_context(|| format!("creating a directory in {}", config.dir.display()))?;
    let report = run_in(&StoreBenchConfig {
        dir: work.path().to_path_buf(),
        ..config.clone()
    });
    drop(work);
    if created {
        let _ = std::fs::remove_dir(&config.dir);
    }
    report
}

fn run_in(config: &StoreBenchConfig) -> Result<StoreBenchReport> {
    let value = "v".repeat(config.value_size);
    let keys: Vec<String> = (0..config.writes).map(key).collect();
    let mut rows = Vec::new();
    for &writers in &config.writer_counts {
        if config.durable_only {
            let row = durable_run(config, writers, &keys, &value)?;
            rows.push(row);
            continue;
        }
        let original = OriginalMemory::default();
        let baseline = timed_writes(
            "original in-memory",
            writers,
            config.writes,
            config.progress,
            &|i| {
                original.set(&keys[i as usize], &value);
                Ok(())
            },
        )?;
        let memstore = MemStore::new();
        let ours = timed_writes("MemStore", writers, config.writes, config.progress, &|i| {
            memstore.set(keys[i as usize].as_bytes(), value.as_bytes())?;
            Ok(())
        })?;
        rows.push(baseline.clone());
        rows.push(ours.compared_to(&baseline));
        if config.memory_only {
            continue;
        }

        let log_path = fresh_dir(&config.dir, "original.jsonl")?;
        let original = OriginalDurable::open(&log_path)?;
        let baseline = timed_writes(
            "original durable",
            writers,
            config.writes,
            config.progress,
            &|i| {
                original.set(&keys[i as usize], &value)?;
                Ok(())
            },
        )?;
        let ours = durable_run(config, writers, &keys, &value)?;
        rows.push(baseline.clone());
        rows.push(ours.compared_to(&baseline));
        std::fs::remove_file(&log_path).ok();
    }
    let extended = if config.large_records > 0 && !config.memory_only && !config.durable_only {
        Some(extended(config, &value)?)
    } else {
        None
    };
    Ok(StoreBenchReport { rows, extended })
}

/// DurableStore taking `config.writes` writes from `writers` threads, with
/// how many writes each sync covered on average.
fn durable_run(
    config: &StoreBenchConfig,
    writers: usize,
    keys: &[String],
    value: &str,
) -> Result<Row> {
    let dir = fresh_dir(&config.dir, "durable")?;
    let store = DurableStore::open(&dir, durable_options(config))?;
    let mut row = timed_writes(
        "DurableStore",
        writers,
        config.writes,
        config.progress,
        &|i| {
            store.set(keys[i as usize].as_bytes(), value.as_bytes())?;
            Ok(())
        },
    )?;
    row.writes_per_sync = store.stats().map(|stats| {
        let batches = stats.batches.load(std::sync::atomic::Ordering::Relaxed);
        stats
            .batched_records
            .load(std::sync::atomic::Ordering::Relaxed) as f64
            / batches.max(1) as f64
    });
    store.close()?;
    Ok(row)
}

fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn extended(config: &StoreBenchConfig, value: &str) -> Result<ExtendedFigures> {
    let records = config.large_records;
    let value = Bytes::copy_from_slice(value.as_bytes());

    // RAM per key: resident memory growth while a MemStore takes the keys.
    let before = resident_bytes();
    let memstore = MemStore::new();
    for index in 0..records {
        memstore.set(key(index).as_bytes(), &value)?;
    }
    let memstore_bytes_per_key = resident_bytes().saturating_sub(before) as f64 / records as f64;
    drop(memstore);

    // A log of `records` writes with no snapshot, then replay it.
    let dir = fresh_dir(&config.dir, "large")?;
    let no_snapshots = StoreOptions {
        fsync: FsyncPolicy::Never,
        snapshots: SnapshotPolicy {
            automatic: false,
            ..SnapshotPolicy::default()
        },
        ..StoreOptions::default()
    };
    {
        let store = Arc::new(DurableStore::open(&dir, no_snapshots.clone())?);
        let bar = count_bar(config.progress, records, "filling the log");
        thread::scope(|scope| -> Result<()> {
            let writers = 8u64;
            let handles: Vec<_> = (0..writers)
                .map(|writer| {
                    let (store, value, bar) = (store.clone(), value.clone(), bar.clone());
                    scope.spawn(move || -> Result<()> {
                        for index in (writer..records).step_by(writers as usize) {
                            store.set(key(index).as_bytes(), &value)?;
                            // Writer 0 meets every multiple of 4096 and
                            // advances the bar for all eight, never past
                            // the total.
                            if index % 4096 == 0 {
                                bar.inc(4096.min(records - index));
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            for handle in handles {
                handle
                    .join()
                    .map_err(|_| anyhow::anyhow!("writer panicked"))??;
            }
            Ok(())
        })?;
        bar.finish_and_clear();
        Arc::try_unwrap(store)
            .map_err(|_| anyhow::anyhow!("store still shared"))?
            .close()?;
    }
    let started = Instant::now();
    let store = DurableStore::open(&dir, no_snapshots.clone())?;
    let replay_seconds = started.elapsed().as_secs_f64();
    let replayed = store.recovery_report().records_replayed;

    let started = Instant::now();
    let snapshot = store.snapshot()?;
    let snapshot_write_seconds = started.elapsed().as_secs_f64();
    store.close()?;

    let started = Instant::now();
    let store = DurableStore::open(&dir, durable_options(config))?;
    let open_with_snapshot_seconds = started.elapsed().as_secs_f64();

    // p99 of 8 writers over a fixed time, without and then during a snapshot.
    let window = Duration::from_secs(2);
    let quiet = timed_window(&store, &value, window, None)?;
    let during = timed_window(&store, &value, window, Some(&store))?;
    store.close()?;

    Ok(ExtendedFigures {
        replay_records: replayed,
        replay_seconds,
        replay_records_per_sec: replayed as f64 / replay_seconds.max(1e-9),
        snapshot_keys: snapshot.entries,
        snapshot_write_seconds,
        open_with_snapshot_seconds,
        memstore_bytes_per_key,
        p99_without_snapshot_us: quiet.latency.p99_us,
        p99_during_snapshot_us: during.latency.p99_us,
        writes_during_snapshot: during.operations,
    })
}

/// 8 writers write for `window` (or, with `snapshot_of`, for as long as a
/// snapshot of that store takes, at least `window`), returning their latencies.
fn timed_window(
    store: &DurableStore,
    value: &Bytes,
    window: Duration,
    snapshot_of: Option<&DurableStore>,
) -> Result<Row> {
    let writers = 8usize;
    let done = std::sync::atomic::AtomicBool::new(false);
    let started = Instant::now();
    let (histograms, snapshot_result) = thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|writer| {
                let done = &done;
                scope.spawn(move || -> Result<_> {
                    let mut histogram = new_histogram();
                    let mut index = writer as u64;
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        let begin = Instant::now();
                        store.set(key(index % 1_000_000).as_bytes(), value)?;
                        histogram.saturating_record(begin.elapsed().as_nanos() as u64);
                        index += writers as u64;
                    }
                    Ok(histogram)
                })
            })
            .collect();
        let snapshot_result = snapshot_of.map(|store| store.snapshot());
        while started.elapsed() < window {
            thread::sleep(Duration::from_millis(10));
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let histograms: Result<Vec<_>> = handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("writer panicked")))
            })
            .collect();
        (histograms, snapshot_result)
    });
    if let Some(result) = snapshot_result {
        result?;
    }
    let elapsed = started.elapsed();
    let mut merged = new_histogram();
    let mut count = 0;
    for histogram in histograms? {
        count += histogram.len();
        merged.add(&histogram).context("merging histograms")?;
    }
    let label = if snapshot_of.is_some() {
        "during snapshot"
    } else {
        "no snapshot"
    };
    Ok(Row::new(label, writers, count, elapsed, &merged))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(dir: &Path) -> StoreBenchConfig {
        StoreBenchConfig {
            writes: 64,
            value_size: 10,
            writer_counts: vec![2],
            dir: dir.to_path_buf(),
            large_records: 0,
            fsync: FsyncPolicy::Never,
            progress: false,
            memory_only: false,
            durable_only: true,
            direct_io: false,
        }
    }

    #[test]
    fn a_run_removes_only_what_it_created() {
        let temp = tempfile::tempdir().expect("dir");
        // A directory the user already had, with files of their own in it
        // (named as the run's own files are named, too).
        let theirs = temp.path().join("theirs");
        std::fs::create_dir_all(theirs.join("durable")).expect("dir");
        std::fs::write(theirs.join("keep.txt"), b"mine").expect("write");
        std::fs::write(theirs.join("durable").join("x"), b"mine").expect("write");
        let report = run(&small(&theirs)).expect("run");
        assert_eq!(report.rows.len(), 1);
        let mut left: Vec<String> = std::fs::read_dir(&theirs)
            .expect("list")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        left.sort();
        assert_eq!(left, ["durable", "keep.txt"]);
        assert!(theirs.join("durable").join("x").exists());
        // A directory the run made is gone afterwards.
        let made = temp.path().join("made");
        run(&small(&made)).expect("run");
        assert!(!made.exists());
    }
}
