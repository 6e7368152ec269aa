//! Once a second during a run: moves the progress bar and samples the server's
//! resident memory (`VmRSS` in `/proc/PID/status`), so the report can show whether
//! RSS stays flat under load.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::bench::report::human_rate;

/// The server's resident memory over the measured run.
#[derive(Debug, Clone, Serialize)]
pub struct RssReport {
    pub pid: u32,
    pub start_bytes: u64,
    pub end_bytes: u64,
    pub peak_bytes: u64,
}

impl RssReport {
    /// Growth from start to end as a fraction of the start.
    pub fn growth(&self) -> f64 {
        (self.end_bytes as f64 - self.start_bytes as f64) / (self.start_bytes as f64).max(1.0)
    }

    fn from_samples(pid: u32, samples: &[Option<u64>]) -> Option<RssReport> {
        let mut present = samples.iter().flatten().copied();
        let start_bytes = present.next()?;
        let (end_bytes, peak_bytes) = present
            .fold((start_bytes, start_bytes), |(_, peak), bytes| {
                (bytes, peak.max(bytes))
            });
        Some(RssReport {
            pid,
            start_bytes,
            end_bytes,
            peak_bytes,
        })
    }
}

/// The resident memory of process `pid`, or `None` if it cannot be read (no
/// such process, or not Linux).
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// When the phases of a run begin and end.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub started: Instant,
    pub measure_start: Instant,
    pub end: Instant,
}

pub struct Monitor {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Vec<Option<u64>>>,
    pid: Option<u32>,
    measure_start: Instant,
}

impl Monitor {
    /// Starts ticking; `completed` counts the requests done so far.
    pub fn spawn(
        schedule: Schedule,
        pid: Option<u32>,
        progress: bool,
        completed: Arc<AtomicU64>,
    ) -> Monitor {
        let (stop, stopped) = oneshot::channel();
        let bar = time_bar(progress, schedule.end - schedule.started);
        let task = tokio::spawn(tick(schedule, pid, bar, completed, stopped));
        Monitor {
            stop,
            task,
            pid,
            measure_start: schedule.measure_start,
        }
    }

    /// Stops ticking, takes a last sample and returns RSS per second of the
    /// measured run with its summary.
    pub async fn finish(self) -> (Vec<Option<u64>>, Option<RssReport>) {
        self.stop.send(()).ok();
        let mut samples = self.task.await.unwrap_or_default();
        let Some(pid) = self.pid else {
            return (samples, None);
        };
        let index = second_index(self.measure_start, Instant::now());
        set_sample(&mut samples, index, resident_bytes(pid));
        let report = RssReport::from_samples(pid, &samples);
        (samples, report)
    }
}

/// Moves the bar once a second from the start, and samples RSS once a second
/// from the start of measurement, until told to stop.
async fn tick(
    schedule: Schedule,
    pid: Option<u32>,
    bar: ProgressBar,
    completed: Arc<AtomicU64>,
    mut stopped: oneshot::Receiver<()>,
) -> Vec<Option<u64>> {
    let second = Duration::from_secs(1);
    let mut progress = tokio::time::interval_at(schedule.started, second);
    let mut memory = tokio::time::interval_at(schedule.measure_start, second);
    let mut samples = Vec::new();
    let mut last_count = 0;
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            now = progress.tick() => {
                let count = completed.load(Ordering::Relaxed);
                let rate = count.saturating_sub(last_count) as f64;
                bar.set_position(now.saturating_duration_since(schedule.started).as_secs());
                bar.set_message(format!("{} req/s", human_rate(rate)));
                last_count = count;
            }
            now = memory.tick(), if pid.is_some() => {
                let index = second_index(schedule.measure_start, now);
                set_sample(&mut samples, index, pid.and_then(resident_bytes));
            }
        }
    }
    bar.finish_and_clear();
    samples
}

fn second_index(measure_start: Instant, now: Instant) -> usize {
    now.saturating_duration_since(measure_start)
        .as_secs_f64()
        .round() as usize
}

fn set_sample(samples: &mut Vec<Option<u64>>, index: usize, bytes: Option<u64>) {
    if samples.len() <= index {
        samples.resize(index + 1, None);
    }
    samples[index] = bytes;
}

/// A bar over the run's seconds (warm-up included), hidden when not wanted.
fn time_bar(enabled: bool, total: Duration) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total.as_secs_f64().ceil() as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len}s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix("bench http");
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_rss() {
        let bytes = resident_bytes(std::process::id()).unwrap();
        assert!(bytes > 1 << 20, "{bytes}");
        assert_eq!(resident_bytes(u32::MAX), None);
    }

    #[test]
    fn summarises_samples() {
        let samples = [None, Some(100), Some(300), None, Some(200)];
        let report = RssReport::from_samples(9, &samples).unwrap();
        assert_eq!(
            (report.start_bytes, report.end_bytes, report.peak_bytes),
            (100, 200, 300)
        );
        assert_eq!(report.growth(), 1.0);
        assert!(RssReport::from_samples(9, &[None]).is_none());
    }
}
