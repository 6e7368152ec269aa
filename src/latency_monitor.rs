//! The latency monitor, as Redis keeps one: when the server was slow, and
//! why.
//!
//! Each cause ([`Event`]) that took at least `latency-monitor-threshold`
//! milliseconds is recorded: one sample per wall-clock second (the worst in
//! that second), the last [`SAMPLES_KEPT`] such seconds, and the worst ever.
//! LATENCY LATEST, HISTORY, GRAPH, DOCTOR and RESET read it.
//!
//! Invariants: a series exists only once a sample went into it (RESET removes
//! it again); its samples are in time order, one per second at most. The
//! monitor is off (threshold 0) by default, as in Redis, and then an
//! observation costs one relaxed atomic load; a sample takes a lock only when
//! something was slow.
//!
//! One monitor serves a whole node: the RESP front end records commands, the
//! log writers record their syncs, the sweeper its passes.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

/// Slow seconds kept per event (Redis keeps as many).
pub const SAMPLES_KEPT: usize = 160;

/// Columns of LATENCY GRAPH before its bars wrap into another block.
const GRAPH_COLUMNS: usize = 80;

/// Rows of a LATENCY GRAPH bar at its highest.
const GRAPH_ROWS: u64 = 4;

/// What was slow. The names are Redis's where walrus does the same thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Event {
    /// A command Redis does not mark `fast`, from its arrival to its reply
    /// (for a write, through the sync that makes it durable).
    Command,
    /// An O(1) command (GET, SET, INCR…), measured the same way.
    FastCommand,
    /// A group commit's write and sync under `--fsync always`.
    FsyncAlways,
    /// A log sync under `--fsync interval=MS`, which holds the writes queued
    /// behind it.
    FsyncInterval,
    /// The expiry sweeper's search for expired keys, which holds the state's
    /// lock.
    ExpireCycle,
}

impl Event {
    pub const ALL: [Event; 5] = [
        Event::Command,
        Event::FastCommand,
        Event::FsyncAlways,
        Event::FsyncInterval,
        Event::ExpireCycle,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Event::Command => "command",
            Event::FastCommand => "fast-command",
            Event::FsyncAlways => "aof-fsync-always",
            Event::FsyncInterval => "aof-fsync-interval",
            Event::ExpireCycle => "expire-cycle",
        }
    }

    /// The event named `name`, exactly as LATENCY LATEST prints it.
    pub fn named(name: &[u8]) -> Option<Event> {
        Event::ALL
            .into_iter()
            .find(|event| event.name().as_bytes() == name)
    }

    /// What LATENCY DOCTOR suggests when this event shows.
    fn advice(self) -> &'static str {
        match self {
            Event::Command => {
                "Commands that touch many keys (KEYS, SCAN with a large COUNT, MGET or DEL of \
                 many keys, FLUSHALL) or large values take time in proportion: SLOWLOG GET \
                 names them. A write also waits for its sync: if aof-fsync-always shows at the \
                 same times, the disk is the cause."
            }
            Event::FastCommand => {
                "O(1) commands were slow: the server waited for something else. For writes, \
                 that is usually the sync (compare aof-fsync-always); otherwise a busy CPU, \
                 swapping, or a snapshot or compaction competing for the disk. \
                 walrus_resp_command_duration_seconds in /metrics has the distribution."
            }
            Event::FsyncAlways => {
                "The disk took this long to make a write durable. Another process writing to \
                 the same disk, a disk without a write cache that is safe on power loss, or a \
                 virtual disk with burst credits spent all show this way. Put the data \
                 directory on a faster disk; or, if losing the last moments of writes on a \
                 power loss is acceptable, --fsync interval=10 (a crash of walrus alone \
                 still loses nothing)."
            }
            Event::FsyncInterval => {
                "A periodic sync was slow, and the writes that came meanwhile waited for it. \
                 The disk is the cause: see the advice for aof-fsync-always."
            }
            Event::ExpireCycle => {
                "Many keys expired at once, and finding them held the store's lock. Spread \
                 expiry times (add a random few seconds to each TTL)."
            }
        }
    }
}

/// One slow second: when, and how slow at worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Unix time, in seconds.
    pub unix_secs: u64,
    pub millis: u64,
}

/// An event's newest sample and its worst ever (a row of LATENCY LATEST).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latest {
    pub event: Event,
    pub newest: Sample,
    pub max_millis: u64,
}

#[derive(Debug, Default)]
struct Series {
    samples: VecDeque<Sample>,
    max_millis: u64,
}

/// The node's latency monitor. See the module documentation.
#[derive(Debug, Default)]
pub struct LatencyMonitor {
    /// `latency-monitor-threshold`, in milliseconds; 0 is off.
    threshold_millis: AtomicU64,
    series: Mutex<BTreeMap<Event, Series>>,
}

impl LatencyMonitor {
    pub fn threshold_millis(&self) -> u64 {
        self.threshold_millis.load(Ordering::Relaxed)
    }

    /// `CONFIG SET latency-monitor-threshold`: what is recorded from now on.
    pub fn set_threshold_millis(&self, millis: u64) {
        self.threshold_millis.store(millis, Ordering::Relaxed);
    }

    /// Whether something that took `elapsed` would be recorded: the
    /// monitor is on and it reached the threshold. (A caller can ask this
    /// before working out which event it was.)
    pub fn reaches_threshold(&self, elapsed: Duration) -> bool {
        match self.threshold_millis() {
            0 => false,
            threshold => elapsed.as_millis() >= u128::from(threshold),
        }
    }

    /// Records that `event` took `elapsed`, if that reaches the threshold.
    pub fn observe(&self, event: Event, elapsed: Duration) {
        if self.reaches_threshold(elapsed) {
            let millis = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
            self.add_sample(event, millis, unix_secs_now());
        }
    }

    /// Adds one sample at `unix_secs`, keeping the worst of one second.
    fn add_sample(&self, event: Event, millis: u64, unix_secs: u64) {
        let mut series = self.series.lock();
        let series = series.entry(event).or_default();
        series.max_millis = series.max_millis.max(millis);
        match series.samples.back_mut() {
            Some(last) if last.unix_secs == unix_secs => last.millis = last.millis.max(millis),
            _ => {
                if series.samples.len() == SAMPLES_KEPT {
                    series.samples.pop_front();
                }
                series.samples.push_back(Sample { unix_secs, millis });
            }
        }
    }

    /// LATENCY LATEST: every event with samples, in name order.
    pub fn latest(&self) -> Vec<Latest> {
        self.series
            .lock()
            .iter()
            .filter_map(|(&event, series)| {
                Some(Latest {
                    event,
                    newest: *series.samples.back()?,
                    max_millis: series.max_millis,
                })
            })
            .collect()
    }

    /// LATENCY HISTORY: `event`'s samples, oldest first (none for an event
    /// with no samples or no such event).
    pub fn history(&self, event: Event) -> Vec<Sample> {
        self.series
            .lock()
            .get(&event)
            .map(|series| series.samples.iter().copied().collect())
            .unwrap_or_default()
    }

    /// LATENCY RESET: forgets the events given, or all with `None`; returns
    /// how many had samples.
    pub fn reset(&self, events: Option<&[Event]>) -> usize {
        let mut series = self.series.lock();
        match events {
            None => {
                let count = series.len();
                series.clear();
                count
            }
            Some(events) => events
                .iter()
                .filter(|event| series.remove(event).is_some())
                .count(),
        }
    }

    /// LATENCY GRAPH: `event`'s samples as bars, or `None` without samples.
    pub fn graph(&self, event: Event) -> Option<String> {
        let (samples, max_ever) = {
            let series = self.series.lock();
            let series = series.get(&event)?;
            (
                series.samples.iter().copied().collect::<Vec<_>>(),
                series.max_millis,
            )
        };
        Some(render_graph(event, &samples, max_ever, unix_secs_now()))
    }

    /// LATENCY DOCTOR: a report in words of what was slow, and what to do.
    pub fn doctor(&self) -> String {
        let threshold = self.threshold_millis();
        let series = self.series.lock();
        let mut report = String::new();
        if series.is_empty() {
            if threshold == 0 {
                report.push_str(
                    "The latency monitor is off, so there is nothing to report. Turn it on \
                     with CONFIG SET latency-monitor-threshold <milliseconds>: every command, \
                     sync and expiry pass that takes at least that long is then recorded.\n",
                );
            } else {
                let _ = writeln!(
                    report,
                    "Nothing took {threshold} ms or more since the monitor was turned on or \
                     last reset (latency-monitor-threshold is {threshold})."
                );
            }
            return report;
        }
        let now = unix_secs_now();
        let _ = writeln!(
            report,
            "Events that took at least the threshold ({}):\n",
            match threshold {
                0 => "now 0: the monitor is off; these are older".to_string(),
                millis => format!("{millis} ms"),
            }
        );
        for (number, (event, series)) in series.iter().enumerate() {
            let count = series.samples.len();
            let total: u64 = series.samples.iter().map(|sample| sample.millis).sum();
            let average = total / (count.max(1) as u64);
            let newest_age = series
                .samples
                .back()
                .map_or(0, |sample| now.saturating_sub(sample.unix_secs));
            let _ = writeln!(
                report,
                "{}. {}: {} slow second{} kept, the last {} ago; {} ms on average, {} ms at \
                 worst ever.",
                number + 1,
                event.name(),
                count,
                if count == 1 { "" } else { "s" },
                age_label(newest_age),
                average,
                series.max_millis,
            );
        }
        report.push_str("\nWhat to look at:\n\n");
        for event in series.keys() {
            let _ = writeln!(report, "- {}: {}", event.name(), event.advice());
        }
        report
    }
}

/// Bars of one to [`GRAPH_ROWS`] rows, scaled between the lowest and the
/// highest sample, each with its age written downward beneath it.
fn render_graph(event: Event, samples: &[Sample], max_ever: u64, now: u64) -> String {
    let high = samples
        .iter()
        .map(|sample| sample.millis)
        .max()
        .unwrap_or(0);
    let low = samples
        .iter()
        .map(|sample| sample.millis)
        .min()
        .unwrap_or(0);
    let mut graph = format!(
        "{} - high {high} ms, low {low} ms (all time high {max_ever} ms)\n{}\n",
        event.name(),
        "-".repeat(GRAPH_COLUMNS)
    );
    for block in samples.chunks(GRAPH_COLUMNS) {
        let heights: Vec<u64> = block
            .iter()
            .map(|sample| match high - low {
                0 => GRAPH_ROWS,
                span => 1 + (sample.millis - low) * (GRAPH_ROWS - 1) / span,
            })
            .collect();
        for row in (1..=GRAPH_ROWS).rev() {
            let line: String = heights
                .iter()
                .map(|&height| if height >= row { '#' } else { ' ' })
                .collect();
            graph.push_str(line.trim_end());
            graph.push('\n');
        }
        let labels: Vec<Vec<char>> = block
            .iter()
            .map(|sample| {
                age_label(now.saturating_sub(sample.unix_secs))
                    .chars()
                    .collect()
            })
            .collect();
        let depth = labels.iter().map(Vec::len).max().unwrap_or(0);
        for row in 0..depth {
            let line: String = labels
                .iter()
                .map(|label| label.get(row).copied().unwrap_or(' '))
                .collect();
            graph.push_str(line.trim_end());
            graph.push('\n');
        }
    }
    graph
}

/// How long ago, in the largest whole unit: `42s`, `5m`, `3h`, `2d`.
fn age_label(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3_600 => format!("{}m", seconds / 60),
        3_600..86_400 => format!("{}h", seconds / 3_600),
        _ => format!("{}d", seconds / 86_400),
    }
}

fn unix_secs_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(threshold: u64) -> LatencyMonitor {
        let monitor = LatencyMonitor::default();
        monitor.set_threshold_millis(threshold);
        monitor
    }

    #[test]
    fn off_by_default_and_below_the_threshold_nothing_is_kept() {
        let monitor = LatencyMonitor::default();
        monitor.observe(Event::Command, Duration::from_secs(5));
        assert!(monitor.latest().is_empty());
        monitor.set_threshold_millis(100);
        monitor.observe(Event::Command, Duration::from_millis(99));
        assert!(monitor.latest().is_empty());
        monitor.observe(Event::Command, Duration::from_millis(100));
        assert_eq!(monitor.history(Event::Command).len(), 1);
    }

    #[test]
    fn one_sample_per_second_keeps_the_worst_and_the_all_time_high() {
        let monitor = on(1);
        monitor.add_sample(Event::FsyncAlways, 30, 1_000);
        monitor.add_sample(Event::FsyncAlways, 50, 1_000);
        monitor.add_sample(Event::FsyncAlways, 20, 1_000);
        monitor.add_sample(Event::FsyncAlways, 10, 1_001);
        assert_eq!(
            monitor.history(Event::FsyncAlways),
            vec![
                Sample {
                    unix_secs: 1_000,
                    millis: 50
                },
                Sample {
                    unix_secs: 1_001,
                    millis: 10
                },
            ]
        );
        assert_eq!(
            monitor.latest(),
            vec![Latest {
                event: Event::FsyncAlways,
                newest: Sample {
                    unix_secs: 1_001,
                    millis: 10
                },
                max_millis: 50,
            }]
        );
    }

    #[test]
    fn the_oldest_second_goes_once_the_series_is_full() {
        let monitor = on(1);
        for second in 0..(SAMPLES_KEPT as u64 + 5) {
            monitor.add_sample(Event::Command, 1 + second, second);
        }
        let history = monitor.history(Event::Command);
        assert_eq!(history.len(), SAMPLES_KEPT);
        assert_eq!(history[0].unix_secs, 5);
        assert_eq!(monitor.latest()[0].max_millis, SAMPLES_KEPT as u64 + 5);
    }

    #[test]
    fn reset_forgets_the_events_named_and_counts_those_it_had() {
        let monitor = on(1);
        monitor.add_sample(Event::Command, 5, 1);
        monitor.add_sample(Event::ExpireCycle, 5, 1);
        assert_eq!(monitor.reset(Some(&[Event::FsyncAlways])), 0);
        assert_eq!(monitor.reset(Some(&[Event::Command, Event::Command])), 1);
        assert_eq!(monitor.latest().len(), 1);
        assert_eq!(monitor.reset(None), 1);
        assert!(monitor.latest().is_empty());
        assert!(monitor.graph(Event::ExpireCycle).is_none());
    }

    #[test]
    fn the_graph_scales_bars_between_low_and_high_with_ages_beneath() {
        let samples = [
            Sample {
                unix_secs: 100,
                millis: 300,
            },
            Sample {
                unix_secs: 110,
                millis: 400,
            },
            Sample {
                unix_secs: 125,
                millis: 600,
            },
        ];
        let graph = render_graph(Event::Command, &samples, 700, 130);
        let lines: Vec<&str> = graph.lines().collect();
        assert_eq!(
            lines[0],
            "command - high 600 ms, low 300 ms (all time high 700 ms)"
        );
        assert_eq!(lines[1], "-".repeat(GRAPH_COLUMNS));
        assert_eq!(&lines[2..6], ["  #", "  #", " ##", "###"]);
        // Ages 30 s, 20 s and 5 s, written downward.
        assert_eq!(&lines[6..], ["325", "00s", "ss"]);
    }

    #[test]
    fn ages_use_the_largest_whole_unit() {
        assert_eq!(age_label(59), "59s");
        assert_eq!(age_label(60), "1m");
        assert_eq!(age_label(7_200), "2h");
        assert_eq!(age_label(200_000), "2d");
    }

    #[test]
    fn the_doctor_says_whether_the_monitor_is_off_and_advises_per_event() {
        let monitor = LatencyMonitor::default();
        assert!(
            monitor
                .doctor()
                .contains("CONFIG SET latency-monitor-threshold")
        );
        monitor.set_threshold_millis(10);
        assert!(monitor.doctor().contains("Nothing took 10 ms or more"));
        monitor.observe(Event::FsyncAlways, Duration::from_millis(40));
        let report = monitor.doctor();
        assert!(
            report.contains("aof-fsync-always: 1 slow second kept"),
            "{report}"
        );
        assert!(report.contains("40 ms at worst ever"), "{report}");
        assert!(report.contains("--fsync interval"), "{report}");
    }
}
